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

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::sources::{Domain, DomainKind, SourceKind};

/// The version of the file format this joulerun reads and writes.
pub const SCHEMA_VERSION: u32 = 1;
/// Environment variable naming the baseline file (the CLI's `--baseline FILE` wins).
pub const ENV_VAR: &str = "JOULERUN_BASELINE";
/// Default calibration length.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// Mean CPU utilisation (fraction of all CPUs) above which calibration is refused.
pub const BUSY_THRESHOLD: f64 = 0.10;
/// Mean CPU utilisation above which calibration is kept with a warning.
pub const WARN_THRESHOLD: f64 = 0.05;
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

/// What identifies the machine a baseline belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MachineIdentity {
    pub hostname: String,
    pub kernel: String,
    pub cpu_model: String,
}

impl MachineIdentity {
    /// This machine: `gethostname`, `uname` release, `/proc/cpuinfo`. Anything unreadable is
    /// "unknown".
    pub fn current() -> MachineIdentity {
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown".to_string());
        let cpu_model = crate::fsx::read_regular(std::path::Path::new("/proc/cpuinfo"), 16 << 20)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map(|s| parse_cpu_model(&s))
            .unwrap_or_else(|_| "unknown".to_string());
        MachineIdentity {
            hostname,
            kernel: kernel_release(),
            cpu_model,
        }
    }
}

fn kernel_release() -> String {
    // SAFETY: `uname` fills a plain C struct we own; the fields are NUL-terminated arrays.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown".to_string();
    }
    let bytes: Vec<u8> = u
        .release
        .iter()
        // Scanned within its bounds: not every libc promises a terminating NUL.
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    let s = String::from_utf8_lossy(&bytes).trim().to_string();
    if s.is_empty() {
        "unknown".to_string()
    } else {
        s
    }
}

/// The CPU model from the text of `/proc/cpuinfo`: the first `model name` (x86), else
/// `Processor`/`cpu model`/`Hardware` (other architectures), else "unknown".
pub fn parse_cpu_model(cpuinfo: &str) -> String {
    for key in ["model name", "processor", "cpu model", "cpu", "hardware"] {
        for line in cpuinfo.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            // x86 "processor : 0" is a CPU number, not a model.
            if k.trim().eq_ignore_ascii_case(key)
                && !v.is_empty()
                && !v.chars().all(|c| c.is_ascii_digit())
            {
                return v.split_whitespace().collect::<Vec<_>>().join(" ");
            }
        }
    }
    "unknown".to_string()
}

/// Where the baseline lives by default: `$JOULERUN_BASELINE` if set, else
/// `$XDG_STATE_HOME/joulerun/baseline.json` (an absolute `XDG_STATE_HOME` only, as the XDG
/// spec says), else `$HOME/.local/state/joulerun/baseline.json`; `None` with none of them.
pub fn default_path() -> Option<PathBuf> {
    path_from_env(|k| std::env::var_os(k))
}

/// [`default_path`] with the environment given as a function (for tests).
pub fn path_from_env(var: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let get = |k: &str| var(k).filter(|v| !v.is_empty());
    if let Some(p) = get(ENV_VAR) {
        return Some(PathBuf::from(p));
    }
    if let Some(state) = get("XDG_STATE_HOME").map(PathBuf::from)
        && state.is_absolute()
    {
        return Some(state.join("joulerun").join("baseline.json"));
    }
    get("HOME").map(|h| {
        PathBuf::from(h)
            .join(".local")
            .join("state")
            .join("joulerun")
            .join("baseline.json")
    })
}

/// Whether a baseline can be used for this run.
#[derive(Clone, Debug, PartialEq)]
pub enum Fit {
    /// It fits. `watts[i]` is the idle power of the run's domain `i` (always `Some` today;
    /// an `Option` so that callers can pass it straight to `Attributor::new`). `notes`:
    /// things worth a warning that do not invalidate it (a different kernel).
    Matches {
        watts: Vec<Option<f64>>,
        notes: Vec<String>,
    },
    /// It does not fit, and why, in one sentence; the run goes on without it.
    Mismatch(String),
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

    /// Whether this baseline fits a run on `machine` through `interface` with `domains`.
    pub fn check(
        &self,
        machine: &MachineIdentity,
        interface: SourceKind,
        domains: &[Domain],
    ) -> Fit {
        if self.hostname != machine.hostname || self.cpu_model != machine.cpu_model {
            return Fit::Mismatch(format!(
                "the baseline was taken on host {} (CPU {}), this is host {} (CPU {})",
                self.hostname, self.cpu_model, machine.hostname, machine.cpu_model
            ));
        }
        if self.interface != interface.name() {
            return Fit::Mismatch(format!(
                "the baseline was measured through {}, this run reads {}",
                self.interface,
                interface.name()
            ));
        }
        let mut watts = Vec::with_capacity(domains.len());
        let mut missing = Vec::new();
        for d in domains {
            match self
                .domains
                .iter()
                .find(|b| b.name == d.name && b.kind == d.kind.name() && b.socket == d.socket)
            {
                Some(b) => watts.push(Some(b.mean_w)),
                None => missing.push(d.name.as_str()),
            }
        }
        if !missing.is_empty() {
            let have: Vec<&str> = self.domains.iter().map(|b| b.name.as_str()).collect();
            return Fit::Mismatch(format!(
                "the baseline has no {} (it has {}), recalibrate with `joulerun --basepower`",
                missing.join(", "),
                if have.is_empty() {
                    "no domain".to_string()
                } else {
                    have.join(", ")
                }
            ));
        }
        let mut notes = Vec::new();
        if self.kernel != machine.kernel {
            notes.push(format!(
                "the baseline was taken under kernel {}, this is {}: idle power may differ; \
                 recalibrate with `joulerun --basepower` if in doubt",
                self.kernel, machine.kernel
            ));
        }
        Fit::Matches { watts, notes }
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

/// Idle power statistics of one domain.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PowerStats {
    /// `Σ E / Σ dt`, W.
    pub mean_w: f64,
    /// Time-weighted standard deviation of the per-tick power, W.
    pub stddev_w: f64,
    pub min_w: f64,
    pub max_w: f64,
    pub samples: u64,
}

/// Streaming [`PowerStats`]: feed `(dt, energy)` per tick (West's weighted algorithm, stable).
#[derive(Clone, Debug, Default)]
pub struct PowerStatsAcc {
    time_s: f64,
    mean_w: f64,
    m2: f64,
    min_w: f64,
    max_w: f64,
    samples: u64,
}

impl PowerStatsAcc {
    pub fn new() -> PowerStatsAcc {
        PowerStatsAcc::default()
    }

    /// Add one tick. Ignored when `dt_s <= 0`, or either value is not finite, or the energy
    /// is negative.
    pub fn push(&mut self, dt_s: f64, energy_j: f64) {
        if !(dt_s.is_finite() && dt_s > 0.0 && energy_j.is_finite() && energy_j >= 0.0) {
            return;
        }
        let p = energy_j / dt_s;
        if !p.is_finite() {
            return;
        }
        if self.samples == 0 {
            self.min_w = p;
            self.max_w = p;
        } else {
            self.min_w = self.min_w.min(p);
            self.max_w = self.max_w.max(p);
        }
        self.samples += 1;
        self.time_s += dt_s;
        let old = self.mean_w;
        self.mean_w += dt_s / self.time_s * (p - old);
        self.m2 += dt_s * (p - old) * (p - self.mean_w);
    }

    /// The statistics, `None` without a valid tick.
    pub fn finish(&self) -> Option<PowerStats> {
        (self.samples > 0 && self.time_s > 0.0).then(|| PowerStats {
            mean_w: self.mean_w,
            stddev_w: (self.m2 / self.time_s).max(0.0).sqrt(),
            min_w: self.min_w,
            max_w: self.max_w,
            samples: self.samples,
        })
    }
}

/// [`PowerStats`] of `(dt_s, energy_j)` ticks.
pub fn power_stats(ticks: &[(f64, f64)]) -> Option<PowerStats> {
    let mut acc = PowerStatsAcc::new();
    for (dt, e) in ticks {
        acc.push(*dt, *e);
    }
    acc.finish()
}

/// What to do with a calibration, given the machine's CPU utilisation during it.
#[derive(Clone, Debug, PartialEq)]
pub enum BusyVerdict {
    /// Idle enough.
    Ok,
    /// Keep it, but say this.
    Warn(String),
    /// Do not store it; say this (suggests `--force`).
    Refuse(String),
}

/// The rule: `> BUSY_THRESHOLD` refuses unless `force` (then warns); above
/// `WARN_THRESHOLD` warns; unknown utilisation warns.
pub fn busy_verdict(mean_utilisation: Option<f64>, force: bool) -> BusyVerdict {
    let Some(u) = mean_utilisation.filter(|u| u.is_finite()) else {
        return BusyVerdict::Warn(
            "CPU utilisation during calibration is unknown: make sure the machine was idle"
                .to_string(),
        );
    };
    let pct = |x: f64| x * 100.0;
    if u > BUSY_THRESHOLD {
        let msg = format!(
            "the machine was busy during calibration: {:.1} % mean CPU utilisation, above the \
             {:.0} % limit; the baseline would include that load",
            pct(u),
            pct(BUSY_THRESHOLD)
        );
        if force {
            BusyVerdict::Warn(format!("{msg} (kept because of --force)"))
        } else {
            BusyVerdict::Refuse(format!(
                "{msg}. Stop other work and run `joulerun --basepower` again, or add --force to \
                 keep it anyway"
            ))
        }
    } else if u > WARN_THRESHOLD {
        BusyVerdict::Warn(format!(
            "the machine was not fully idle during calibration: {:.1} % mean CPU utilisation; \
             the baseline may be a little high",
            pct(u)
        ))
    } else {
        BusyVerdict::Ok
    }
}

/// Accumulates a calibration run: per-domain power statistics and CPU utilisation.
#[derive(Clone, Debug)]
pub struct Calibration {
    stats: Vec<PowerStatsAcc>,
    busy_s: f64,
    all_s: f64,
    max_util: Option<f64>,
    duration_s: f64,
}

impl Calibration {
    pub fn new(n_domains: usize) -> Calibration {
        Calibration {
            stats: vec![PowerStatsAcc::new(); n_domains],
            busy_s: 0.0,
            all_s: 0.0,
            max_util: None,
            duration_s: 0.0,
        }
    }

    /// One tick: `energy_j[i]` of domain `i` (`None` when unknown), and the machine's busy
    /// and idle CPU seconds this tick (all CPUs), `None` when not known.
    pub fn tick(&mut self, dt_s: f64, energy_j: &[Option<f64>], cpu: Option<(f64, f64)>) {
        if !(dt_s.is_finite() && dt_s > 0.0) {
            return;
        }
        self.duration_s += dt_s;
        for (acc, e) in self.stats.iter_mut().zip(energy_j) {
            if let Some(e) = e {
                acc.push(dt_s, *e);
            }
        }
        if let Some((busy, idle)) = cpu
            && busy.is_finite()
            && idle.is_finite()
            && busy >= 0.0
            && idle >= 0.0
            && busy + idle > 0.0
        {
            self.busy_s += busy;
            self.all_s += busy + idle;
            let u = busy / (busy + idle);
            self.max_util = Some(self.max_util.map_or(u, |m: f64| m.max(u)));
        }
    }

    /// Mean utilisation so far, `Σ busy / Σ (busy + idle)`.
    pub fn utilisation(&self) -> Option<f64> {
        (self.all_s > 0.0).then(|| self.busy_s / self.all_s)
    }

    /// Time covered by the ticks, s.
    pub fn duration_s(&self) -> f64 {
        self.duration_s
    }

    pub fn stats(&self) -> Vec<Option<PowerStats>> {
        self.stats.iter().map(|a| a.finish()).collect()
    }

    /// The baseline, or `Err` naming the domains when none of them had a valid tick.
    /// Domains without a valid tick are left out and named in the returned warnings.
    pub fn finish(
        &self,
        machine: &MachineIdentity,
        interface: SourceKind,
        domains: &[Domain],
        interval_ms: u64,
        taken_at: SystemTime,
    ) -> Result<(Baseline, Vec<String>), String> {
        let stats = self.stats();
        let missing: Vec<&str> = domains
            .iter()
            .zip(stats.iter().chain(std::iter::repeat(&None)))
            .filter(|(_, s)| s.is_none())
            .map(|(d, _)| d.name.as_str())
            .collect();
        if missing.len() == domains.len() {
            return Err(format!(
                "no energy could be measured during calibration (domains: {})",
                missing.join(", ")
            ));
        }
        let warnings = if missing.is_empty() {
            Vec::new()
        } else {
            vec![format!(
                "no idle power for {}: not read during calibration, left out of the baseline",
                missing.join(", ")
            )]
        };
        let util = self.utilisation().map(|u| (u, self.max_util.unwrap_or(u)));
        let b = Baseline::new(
            machine,
            interface,
            domains,
            &stats,
            self.duration_s,
            interval_ms,
            util,
            taken_at,
        );
        Ok((b, warnings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::sync::atomic::Ordering;

    fn machine() -> MachineIdentity {
        MachineIdentity {
            hostname: "box".to_string(),
            kernel: "6.8.0".to_string(),
            cpu_model: "Intel(R) Xeon(R) Gold 6130".to_string(),
        }
    }

    fn domains() -> Vec<Domain> {
        vec![
            Domain::new(DomainKind::Package, Some(0), SourceKind::Powercap),
            Domain::new(DomainKind::Dram, Some(0), SourceKind::Powercap),
            Domain::new(DomainKind::Package, Some(1), SourceKind::Powercap),
        ]
    }

    fn sample() -> Baseline {
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

    fn files_in(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn stats_on_known_data() {
        // 1 s at 10 W and 3 s at 20 W: mean 17.5 W (time-weighted), variance
        // (1·7.5² + 3·2.5²)/4 = 18.75.
        let s = power_stats(&[(1.0, 10.0), (0.5, 10.0), (2.5, 50.0)]).unwrap();
        assert!((s.mean_w - 17.5).abs() < 1e-12, "{}", s.mean_w);
        assert!((s.stddev_w - 18.75f64.sqrt()).abs() < 1e-12);
        assert_eq!((s.min_w, s.max_w, s.samples), (10.0, 20.0, 3));
        // Constant power: no spread.
        let s = power_stats(&[(0.1, 1.0), (0.1, 1.0), (0.2, 2.0)]).unwrap();
        assert!((s.mean_w - 10.0).abs() < 1e-12);
        assert!(s.stddev_w < 1e-9);
        // Invalid ticks are ignored; nothing valid: None.
        let s = power_stats(&[
            (0.0, 5.0),
            (1.0, f64::NAN),
            (-1.0, 1.0),
            (1.0, -2.0),
            (2.0, 4.0),
        ]);
        assert_eq!(s.unwrap().samples, 1);
        assert_eq!(power_stats(&[]), None);
        assert_eq!(power_stats(&[(0.0, 1.0)]), None);
    }

    #[test]
    fn busy_machine_rule() {
        assert_eq!(busy_verdict(Some(0.01), false), BusyVerdict::Ok);
        assert_eq!(busy_verdict(Some(WARN_THRESHOLD), false), BusyVerdict::Ok);
        assert!(matches!(
            busy_verdict(Some(0.07), false),
            BusyVerdict::Warn(_)
        ));
        assert!(matches!(
            busy_verdict(Some(BUSY_THRESHOLD), false),
            BusyVerdict::Warn(_)
        ));
        match busy_verdict(Some(0.35), false) {
            BusyVerdict::Refuse(m) => {
                assert!(
                    m.contains("35.0 %") && m.contains("10 %") && m.contains("--force"),
                    "{m}"
                )
            }
            v => panic!("{v:?}"),
        }
        match busy_verdict(Some(0.35), true) {
            BusyVerdict::Warn(m) => assert!(m.contains("--force"), "{m}"),
            v => panic!("{v:?}"),
        }
        assert!(matches!(busy_verdict(None, false), BusyVerdict::Warn(_)));
        assert!(matches!(
            busy_verdict(Some(f64::NAN), false),
            BusyVerdict::Warn(_)
        ));
    }

    #[test]
    fn calibration_accumulates() {
        let d = domains();
        let mut c = Calibration::new(d.len());
        // dram never read; 10 % then 30 % busy over equal CPU time: 20 % mean.
        c.tick(1.0, &[Some(20.0), None, Some(10.0)], Some((0.4, 3.6)));
        c.tick(1.0, &[Some(22.0), None, Some(10.0)], Some((1.2, 2.8)));
        c.tick(0.0, &[Some(999.0), None, Some(999.0)], Some((4.0, 0.0)));
        assert!((c.utilisation().unwrap() - 0.2).abs() < 1e-12);
        assert!(matches!(
            busy_verdict(c.utilisation(), false),
            BusyVerdict::Refuse(_)
        ));
        let (b, warnings) = c
            .finish(&machine(), SourceKind::Powercap, &d, 100, UNIX_EPOCH)
            .unwrap();
        assert_eq!(b.domains.len(), 2);
        assert_eq!(b.domains[0].mean_w, 21.0);
        assert_eq!(b.domains[1].name, "package-1");
        assert_eq!(b.duration_s, 2.0);
        assert!((b.cpu_utilisation_max.unwrap() - 0.3).abs() < 1e-12);
        assert_eq!(b.taken_at, "1970-01-01T00:00:00Z");
        assert!(warnings[0].contains("dram-0"), "{warnings:?}");
        // Nothing measured at all: an error.
        let c = Calibration::new(d.len());
        assert!(
            c.finish(&machine(), SourceKind::Powercap, &d, 100, UNIX_EPOCH)
                .is_err()
        );
    }

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

    #[test]
    fn matching_machine() {
        let b = sample();
        let d = domains();
        match b.check(&machine(), SourceKind::Powercap, &d) {
            Fit::Matches { watts, notes } => {
                assert_eq!(watts, vec![Some(21.0), Some(3.0), Some(18.0)]);
                assert!(notes.is_empty());
            }
            f => panic!("{f:?}"),
        }
        // A subset, in another order (`-e package`): still matches, aligned to the run.
        let sub = [d[2].clone(), d[0].clone()];
        assert_eq!(
            b.check(&machine(), SourceKind::Powercap, &sub),
            Fit::Matches {
                watts: vec![Some(18.0), Some(21.0)],
                notes: vec![]
            }
        );
        // Another kernel: matches with a note.
        let mut m = machine();
        m.kernel = "6.9.1".to_string();
        match b.check(&m, SourceKind::Powercap, &d) {
            Fit::Matches { notes, .. } => {
                assert_eq!(notes.len(), 1);
                assert!(notes[0].contains("6.8.0") && notes[0].contains("6.9.1"));
            }
            f => panic!("{f:?}"),
        }
    }

    #[test]
    fn mismatched_machine() {
        let b = sample();
        let mut m = machine();
        m.hostname = "laptop".to_string();
        m.cpu_model = "AMD Ryzen 7 5800U".to_string();
        match b.check(&m, SourceKind::Powercap, &domains()) {
            Fit::Mismatch(r) => assert_eq!(
                r,
                "the baseline was taken on host box (CPU Intel(R) Xeon(R) Gold 6130), this is \
                 host laptop (CPU AMD Ryzen 7 5800U)"
            ),
            f => panic!("{f:?}"),
        }
        // Same host, new CPU.
        let mut m = machine();
        m.cpu_model = "other".to_string();
        assert!(matches!(
            b.check(&m, SourceKind::Powercap, &domains()),
            Fit::Mismatch(_)
        ));
        // Another interface.
        match b.check(&machine(), SourceKind::Perf, &domains()) {
            Fit::Mismatch(r) => assert!(r.contains("powercap") && r.contains("perf"), "{r}"),
            f => panic!("{f:?}"),
        }
    }

    #[test]
    fn mismatched_domains() {
        let b = sample();
        let mut d = domains();
        d.push(Domain::new(DomainKind::Dram, Some(1), SourceKind::Powercap));
        d.push(Domain::new(DomainKind::Psys, None, SourceKind::Powercap));
        match b.check(&machine(), SourceKind::Powercap, &d) {
            Fit::Mismatch(r) => {
                assert!(r.contains("no dram-1, psys"), "{r}");
                assert!(r.contains("package-0, dram-0, package-1"), "{r}");
            }
            f => panic!("{f:?}"),
        }
    }

    #[test]
    fn default_path_rules() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        assert_eq!(
            path_from_env(env(&[
                ("JOULERUN_BASELINE", "/tmp/b.json"),
                ("XDG_STATE_HOME", "/s"),
                ("HOME", "/h")
            ])),
            Some(PathBuf::from("/tmp/b.json"))
        );
        assert_eq!(
            path_from_env(env(&[
                ("JOULERUN_BASELINE", ""),
                ("XDG_STATE_HOME", "/s"),
                ("HOME", "/h")
            ])),
            Some(PathBuf::from("/s/joulerun/baseline.json"))
        );
        assert_eq!(
            path_from_env(env(&[("XDG_STATE_HOME", "relative"), ("HOME", "/h")])),
            Some(PathBuf::from("/h/.local/state/joulerun/baseline.json"))
        );
        assert_eq!(path_from_env(env(&[])), None);
    }

    #[test]
    fn cpu_model_parsing() {
        let x86 =
            "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R)  Core(TM) i7\n";
        assert_eq!(parse_cpu_model(x86), "Intel(R) Core(TM) i7");
        let arm = "processor\t: 0\nBogoMIPS\t: 48.00\nHardware\t: BCM2835\n";
        assert_eq!(parse_cpu_model(arm), "BCM2835");
        assert_eq!(parse_cpu_model(""), "unknown");
        assert_eq!(parse_cpu_model("garbage\n:::\n"), "unknown");
    }

    #[test]
    fn current_machine_does_not_panic() {
        let m = MachineIdentity::current();
        assert!(!m.hostname.is_empty() && !m.kernel.is_empty() && !m.cpu_model.is_empty());
    }
}
