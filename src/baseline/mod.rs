//! The static baseline calibrated by `joulerun --basepower`: its file, its location and
//! whether it fits this machine.
//!
//! # Calibration
//!
//! Each domain's idle power is the mean over the calibration window, weighted by time:
//! `mean = Σ E_i / Σ dt_i`. The spread is the time-weighted standard deviation of the
//! per-tick powers `p_i = E_i / dt_i`; min and max are those of `p_i`. Ticks with an
//! unknown energy, a non-finite value or `dt <= 0` are left out.
//!
//! The machine's CPU utilisation during calibration is `Σ busy / Σ (busy + idle)` over all
//! CPUs (from `/proc/stat`). [`busy_verdict`] decides:
//!
//! * `u <= WARN_THRESHOLD` (5 %): fine.
//! * `WARN_THRESHOLD < u <= BUSY_THRESHOLD` (10 %): kept, with a warning.
//! * `u > BUSY_THRESHOLD`: refused, unless forced (`--force`), then kept with a warning.
//! * utilisation unknown: kept, with a warning.
//!
//! # File
//!
//! JSON, `schema_version: 1`, at [`default_path`] (`$JOULERUN_BASELINE`, else
//! `$XDG_STATE_HOME/joulerun/baseline.json`, else `~/.local/state/joulerun/baseline.json`),
//! written atomically through [`Destination`] (a temporary file in the same directory,
//! fsync, rename, fsync of the directory), only over a regular file or a new one.
//! Loading refuses anything but a regular file and validates every value.
//!
//! # Fit
//!
//! [`Baseline::check`] accepts a baseline when hostname, CPU model and interface are the
//! same and every domain of the run is in it (a run may select fewer domains with `-e`).
//! A different kernel alone is accepted with a note.

mod calibration;
mod fit;
mod location;

pub use calibration::{
    BUSY_THRESHOLD, BusyVerdict, Calibration, PowerStats, PowerStatsAcc, WARN_THRESHOLD,
    busy_verdict, power_stats,
};
pub use fit::{DomainFit, Fit, MachineIdentity, parse_cpu_model};
pub use location::{ENV_VAR, default_path, path_from_env};

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::sources::{Domain, DomainKind, SourceKind};

/// The version of the file format this joulerun reads and writes.
pub const SCHEMA_VERSION: u32 = 1;
/// Default calibration length.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// Larger files are not baselines.
const MAX_FILE_BYTES: u64 = 16 << 20;
/// Largest idle power accepted for one domain, W: far above any CPU socket, GPU or
/// chassis, far below the absurd.
pub const MAX_IDLE_W: f64 = 100_000.0;
/// Longest calibration a file may claim, s (a day).
pub const MAX_DURATION_S: f64 = 86_400.0;

const FIX: &str = "delete it or recalibrate with `joulerun --basepower`";

#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("cannot read baseline file {}: {source}; {FIX}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("baseline file {} is corrupt: {detail}; {FIX}", .path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "baseline file {} has schema version {found}, this joulerun reads version {SCHEMA_VERSION}; {FIX}",
        .path.display()
    )]
    Schema { path: PathBuf, found: String },
    #[error("cannot write baseline file {}: {source}", .path.display())]
    Write { path: PathBuf, source: io::Error },
}

/// The idle power of one domain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BaselineDomain {
    /// Domain name as reports show it (`package-0`).
    pub name: String,
    /// Domain kind name (`package`, `dram`, ...).
    pub kind: String,
    pub socket: Option<u32>,
    pub mean_w: f64,
    pub stddev_w: f64,
    pub min_w: f64,
    pub max_w: f64,
    /// Ticks that went into the statistics.
    pub samples: u64,
    /// The interface it was read through (`powercap`, `hwmon`, ...). Files from before
    /// per-domain baselines lack it: the file's `interface` is meant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// The device (a GPU's index and uuid, a battery's name), when the file has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<crate::sources::Device>,
}

/// A calibrated baseline and the conditions it was taken under.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub schema_version: u32,
    /// RFC 3339, UTC, seconds.
    pub taken_at: String,
    pub taken_at_unix_s: u64,
    pub hostname: String,
    /// `uname -r`.
    pub kernel: String,
    /// `/proc/cpuinfo` `model name`, or "unknown".
    pub cpu_model: String,
    /// The interface the energy was read through (`powercap`, `perf`, `msr`, `estimate`).
    pub interface: String,
    pub duration_s: f64,
    pub interval_ms: u64,
    /// Mean CPU utilisation during calibration (fraction of all CPUs), when known.
    pub cpu_utilisation: Option<f64>,
    /// Highest utilisation of a single tick, when known.
    pub cpu_utilisation_max: Option<f64>,
    pub domains: Vec<BaselineDomain>,
}

impl Baseline {
    /// A baseline from calibration results. `stats[i]` belongs to `domains[i]`; domains
    /// without statistics (no valid tick) are left out of the baseline. `cpu_utilisation`:
    /// (mean, max) when known.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        machine: &MachineIdentity,
        interface: SourceKind,
        domains: &[Domain],
        stats: &[Option<PowerStats>],
        duration_s: f64,
        interval_ms: u64,
        cpu_utilisation: Option<(f64, f64)>,
        taken_at: SystemTime,
    ) -> Baseline {
        let domains = domains
            .iter()
            .zip(stats)
            .filter_map(|(d, s)| {
                s.map(|s| BaselineDomain {
                    name: d.name.clone(),
                    kind: d.kind.name().to_string(),
                    socket: d.socket,
                    mean_w: s.mean_w,
                    stddev_w: s.stddev_w,
                    min_w: s.min_w,
                    max_w: s.max_w,
                    samples: s.samples,
                    interface: Some(d.source.name().to_string()),
                    device: Some(d.device.clone()),
                })
            })
            .collect();
        Baseline {
            schema_version: SCHEMA_VERSION,
            taken_at: humantime::format_rfc3339_seconds(taken_at).to_string(),
            taken_at_unix_s: taken_at
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            hostname: machine.hostname.clone(),
            kernel: machine.kernel.clone(),
            cpu_model: machine.cpu_model.clone(),
            interface: interface.name().to_string(),
            duration_s,
            interval_ms,
            cpu_utilisation: cpu_utilisation.map(|u| u.0),
            cpu_utilisation_max: cpu_utilisation.map(|u| u.1),
            domains,
        }
    }

    /// Write the file atomically (see [`Destination`]), creating its directory.
    pub fn save(&self, path: &Path) -> Result<(), BaselineError> {
        Destination::prepare(path)
            .map_err(|why| BaselineError::Write {
                path: path.to_path_buf(),
                source: io::Error::other(why),
            })?
            .commit(self)
    }

    /// Read a baseline. A missing file is `Ok(None)`; an unreadable, corrupt or
    /// other-version file is an error naming the file and the fix.
    pub fn load(path: &Path) -> Result<Option<Baseline>, BaselineError> {
        let rerr = |source: io::Error| BaselineError::Read {
            path: path.to_path_buf(),
            source,
        };
        let corrupt = |detail: String| BaselineError::Corrupt {
            path: path.to_path_buf(),
            detail,
        };
        // Never opened if it is a FIFO or a device: refused without blocking.
        let bytes = match crate::fsx::read_regular(path, MAX_FILE_BYTES) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(corrupt(format!("larger than {MAX_FILE_BYTES} bytes")));
            }
            Err(e) => return Err(rerr(e)),
        };
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(corrupt("the file is empty".to_string()));
        }
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("not valid JSON ({e})")))?;
        match value.get("schema_version") {
            Some(v) if v.as_u64() == Some(SCHEMA_VERSION as u64) => {}
            Some(v) => {
                return Err(BaselineError::Schema {
                    path: path.to_path_buf(),
                    found: v.to_string(),
                });
            }
            None if value.is_object() => {
                return Err(corrupt("no schema_version field".to_string()));
            }
            None => return Err(corrupt("not a JSON object".to_string())),
        }
        let b: Baseline = serde_json::from_value(value)
            .map_err(|e| corrupt(format!("unexpected content ({e})")))?;
        b.validate().map_err(corrupt)?;
        Ok(Some(b))
    }

    /// Values that parse but make no sense: every number finite and in its range, the
    /// statistics consistent, no domain twice, no control character in any text (it would
    /// be echoed to a terminal), a timestamp that is one.
    fn validate(&self) -> Result<(), String> {
        let text = |what: &str, v: &str| -> Result<(), String> {
            if v.chars().any(|c| c.is_control()) {
                return Err(format!(
                    "{what} holds control characters ({})",
                    crate::text::escape_line(v)
                ));
            }
            Ok(())
        };
        for (what, v) in [
            ("taken_at", &self.taken_at),
            ("hostname", &self.hostname),
            ("kernel", &self.kernel),
            ("cpu_model", &self.cpu_model),
            ("interface", &self.interface),
        ] {
            text(what, v)?;
        }
        if humantime::parse_rfc3339(&self.taken_at).is_err() {
            return Err(format!(
                "taken_at {:?} is not an RFC 3339 time",
                self.taken_at
            ));
        }
        if !(self.duration_s.is_finite()
            && self.duration_s > 0.0
            && self.duration_s <= MAX_DURATION_S)
        {
            return Err(format!(
                "duration_s = {} (expected more than 0 and at most {MAX_DURATION_S} s)",
                self.duration_s
            ));
        }
        if !(1..=crate::config::MAX_INTERVAL_MS).contains(&self.interval_ms) {
            return Err(format!(
                "interval_ms = {} is out of range",
                self.interval_ms
            ));
        }
        for (what, u) in [
            ("cpu_utilisation", self.cpu_utilisation),
            ("cpu_utilisation_max", self.cpu_utilisation_max),
        ] {
            if let Some(u) = u
                && !(u.is_finite() && (0.0..=1.0).contains(&u))
            {
                return Err(format!(
                    "{what} = {u} (a fraction between 0 and 1 expected)"
                ));
            }
        }
        if self.domains.is_empty() {
            return Err("it lists no domain".to_string());
        }
        for (i, d) in self.domains.iter().enumerate() {
            text("a domain name", &d.name)?;
            if d.name.is_empty() {
                return Err("a domain has an empty name".to_string());
            }
            if DomainKind::parse(&d.kind).is_none() {
                return Err(format!("domain {} has unknown kind {:?}", d.name, d.kind));
            }
            if self.domains[..i].iter().any(|o| o.name == d.name) {
                return Err(format!("domain {} is listed twice", d.name));
            }
            for (what, v) in [
                ("mean_w", d.mean_w),
                ("stddev_w", d.stddev_w),
                ("min_w", d.min_w),
                ("max_w", d.max_w),
            ] {
                if !(v.is_finite() && (0.0..=MAX_IDLE_W).contains(&v)) {
                    return Err(format!(
                        "domain {} has {what} = {v} (expected between 0 and {MAX_IDLE_W} W)",
                        d.name
                    ));
                }
            }
            // Allow for rounding in files written by hand or by older versions.
            let slack = 1e-9 * d.max_w.max(1.0);
            if d.min_w > d.max_w + slack || d.mean_w < d.min_w - slack || d.mean_w > d.max_w + slack
            {
                return Err(format!(
                    "domain {} has min {} W, mean {} W, max {} W: the mean must lie between min and max",
                    d.name, d.min_w, d.mean_w, d.max_w
                ));
            }
            if d.samples == 0 {
                return Err(format!("domain {} has no samples", d.name));
            }
        }
        Ok(())
    }
}

/// Where a baseline is about to be written: its directory created and its temporary file
/// open, so that a destination that cannot be written is known before calibrating. The
/// rule is [`crate::fsx::resolve_destination`]'s: a symbolic link is followed (the link is
/// kept, the file it points at replaced); the destination must be a regular file or a new
/// one. A device, a FIFO or a directory is never replaced.
pub struct Destination {
    path: PathBuf,
    file: crate::fsx::AtomicFile,
}

impl Destination {
    pub fn prepare(path: &Path) -> Result<Destination, String> {
        let cannot =
            |why: String| format!("cannot write the baseline to '{}': {why}", path.display());
        // A new location (the default state directory, say) gets its directories.
        if fs::symlink_metadata(path).is_err() {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            fs::create_dir_all(&dir).map_err(|e| {
                cannot(format!(
                    "cannot create the directory '{}': {e}",
                    dir.display()
                ))
            })?;
        }
        let file = crate::fsx::AtomicFile::create(path).map_err(cannot)?;
        Ok(Destination {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Write `b` and put it in place.
    pub fn commit(self, b: &Baseline) -> Result<(), BaselineError> {
        let werr = |source: io::Error| BaselineError::Write {
            path: self.path.clone(),
            source,
        };
        let mut json = serde_json::to_vec_pretty(b)
            .map_err(|e| werr(io::Error::new(io::ErrorKind::InvalidData, e)))?;
        json.push(b'\n');
        self.file.write_all_and_commit(&json).map_err(werr)
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub(crate) fn machine() -> MachineIdentity {
        MachineIdentity {
            hostname: "box".to_string(),
            kernel: "6.8.0".to_string(),
            cpu_model: "Intel(R) Xeon(R) Gold 6130".to_string(),
        }
    }

    pub(crate) fn domains() -> Vec<Domain> {
        vec![
            Domain::new(DomainKind::Package, Some(0), SourceKind::Powercap),
            Domain::new(DomainKind::Dram, Some(0), SourceKind::Powercap),
            Domain::new(DomainKind::Package, Some(1), SourceKind::Powercap),
        ]
    }

    pub(crate) fn sample() -> Baseline {
        let stats = [
            power_stats(&[(1.0, 20.0), (1.0, 22.0)]),
            power_stats(&[(1.0, 3.0)]),
            power_stats(&[(0.5, 9.0)]),
        ];
        Baseline::new(
            &machine(),
            SourceKind::Powercap,
            &domains(),
            &stats,
            10.0,
            100,
            Some((0.02, 0.04)),
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        )
    }

    pub(crate) fn files_in(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use std::fs::File;
    use std::sync::atomic::Ordering;

    #[test]
    fn round_trip() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("state/joulerun/baseline.json");
        let b = sample();
        assert_eq!(b.taken_at, "2023-11-14T22:13:20Z");
        assert_eq!(b.domains[0].mean_w, 21.0);
        assert_eq!(b.domains[2].mean_w, 18.0);
        b.save(&path).unwrap();
        assert_eq!(Baseline::load(&path).unwrap(), Some(b.clone()));
        let v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["schema_version"], 1);
        assert_eq!(v["interface"], "powercap");
        assert_eq!(v["domains"][1]["kind"], "dram");
        // Overwrite with new content.
        let mut b2 = b.clone();
        b2.hostname = "other".to_string();
        b2.save(&path).unwrap();
        assert_eq!(Baseline::load(&path).unwrap(), Some(b2));
        assert_eq!(files_in(path.parent().unwrap()), vec!["baseline.json"]);
    }

    #[test]
    fn missing_file_is_none() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(Baseline::load(&t.path().join("nope.json")).unwrap(), None);
    }

    #[test]
    fn atomic_write_keeps_old_file_on_failure() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("baseline.json");
        let old = sample();
        old.save(&path).unwrap();
        let before = fs::read(&path).unwrap();
        let mut new = sample();
        new.hostname = "new".to_string();
        // Prepared but never committed (a failure or a signal before the rename).
        let dest = Destination::prepare(&path).unwrap();
        drop(dest);
        assert_eq!(fs::read(&path).unwrap(), before);
        assert_eq!(files_in(t.path()), vec!["baseline.json"]);
        // A directory in the way of the target: rename fails, nothing left behind.
        let blocked = t.path().join("blocked");
        fs::create_dir_all(blocked.join("child")).unwrap();
        let e = new.save(&blocked).unwrap_err();
        assert!(e.to_string().contains("blocked"), "{e}");
        assert_eq!(files_in(t.path()), vec!["baseline.json", "blocked"]);
        // A parent that is a file: cannot create the directory.
        assert!(new.save(&path.join("x.json")).is_err());
        assert_eq!(fs::read(&path).unwrap(), before);
    }

    #[test]
    fn atomic_write_read_only_dir() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("ro");
        fs::create_dir(&dir).unwrap();
        let path = dir.join("baseline.json");
        sample().save(&path).unwrap();
        let before = fs::read(&path).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o555)).unwrap();
        // Root ignores permissions: then this case cannot be produced here.
        let privileged = File::create(dir.join("probe")).is_ok();
        if !privileged {
            let mut new = sample();
            new.hostname = "new".to_string();
            let e = new.save(&path).unwrap_err();
            assert!(matches!(e, BaselineError::Write { .. }));
            assert!(e.to_string().contains("baseline.json"), "{e}");
            assert_eq!(fs::read(&path).unwrap(), before);
            assert_eq!(files_in(&dir), vec!["baseline.json"]);
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn concurrent_readers_see_old_or_new() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("baseline.json");
        let a = sample();
        let mut b = sample();
        b.hostname = "b".repeat(5000); // a larger file, written in more than one block
        a.save(&path).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (path, a, b, stop) = (path.clone(), a.clone(), b.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let got = Baseline::load(&path).unwrap().unwrap();
                    assert!(got == a || got == b);
                    reads += 1;
                }
                reads
            })
        };
        for i in 0..200 {
            if i % 2 == 0 {
                b.save(&path)
            } else {
                a.save(&path)
            }
            .unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
        assert_eq!(files_in(t.path()), vec!["baseline.json"]);
    }

    #[test]
    fn corrupt_files_are_clear_errors() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("baseline.json");
        let good = serde_json::to_string_pretty(&sample()).unwrap();
        let wrong_version = good.replace("\"schema_version\": 1", "\"schema_version\": 2");
        assert_ne!(wrong_version, good);
        let bad_kind = good.replace("\"dram\"", "\"banana\"");
        let nan_power = good.replacen("\"mean_w\": 21.0", "\"mean_w\": -1.0", 1);
        assert_ne!(nan_power, good);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("garbage", b"\x00\xffnot json at all".to_vec()),
            ("truncated", good.as_bytes()[..good.len() / 2].to_vec()),
            ("array", b"[1, 2]".to_vec()),
            ("no version", b"{\"hostname\": \"x\"}".to_vec()),
            ("wrong version", wrong_version.into_bytes()),
            ("string version", b"{\"schema_version\": \"1\"}".to_vec()),
            ("missing fields", b"{\"schema_version\": 1}".to_vec()),
            ("bad kind", bad_kind.into_bytes()),
            ("negative power", nan_power.into_bytes()),
        ];
        for (what, bytes) in cases {
            fs::write(&path, &bytes).unwrap();
            let e = Baseline::load(&path).expect_err(what);
            let msg = e.to_string();
            assert!(msg.contains(&path.display().to_string()), "{what}: {msg}");
            assert!(msg.contains("joulerun --basepower"), "{what}: {msg}");
            if what.ends_with("version") && what != "no version" {
                assert!(matches!(e, BaselineError::Schema { .. }), "{what}: {e:?}");
            }
        }
        // A directory where the file should be: a read error naming it, no panic.
        let d = t.path().join("dir.json");
        fs::create_dir(&d).unwrap();
        let e = Baseline::load(&d).unwrap_err();
        assert!(e.to_string().contains("dir.json"), "{e}");
    }
}
