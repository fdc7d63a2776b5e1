//! A laptop's battery while it discharges (`/sys/class/power_supply/*`): the whole
//! machine's power, since the battery then powers all of it.
//!
//! Discovery: every entry of `<root>/sys/class/power_supply` whose `type` is `Battery`
//! and whose `scope` is not `Device` (a peripheral's battery: a mouse, a keyboard, a
//! pen). A supply without `scope` is the system's (the power_supply class says so).
//! Domain `BAT0` etc., [`DomainKind::Battery`], [`Device::Battery`], [`Place::Whole`].
//!
//! Reading, while `status` is `Discharging`, by the first the battery has of:
//! 1. `power_now` (µW) as a power; firmwares disagree on its sign, so its magnitude;
//! 2. `current_now` (µA, negative while discharging by the ABI, positive on many ACPI
//!    batteries: its magnitude) times `voltage_now` (µV), as a power;
//! 3. the drop of `energy_now` (µWh) since the start, as a cumulative counter of the
//!    energy consumed ([`ENERGY_UNIT_J`] per unit);
//! 4. the drop of `charge_now` (µAh) times `voltage_now`, the same way
//!    ([`CHARGE_UNIT_J`] per µAh·µV, the mean voltage of the two readings).
//!
//! Firmwares update these values every few seconds; between updates a counter reading is
//! [`Reading::Unchanged`] (no sample, no time passes for it), and a power reading repeats.
//!
//! Not discharging (`Charging`, `Full`, `Not charging`, `Unknown`): at open the battery is
//! not a reading ([`BatterySource::open`] says "on AC power (status: ...)"); mid-run a read
//! is a [`ReadError`]: the energy of that time is missing, never 0 W. A zero power or
//! current while discharging (firmwares answer 0 until they know the rate) is an error
//! too, for the same reason. A value that rises while discharging (a recalibration) makes
//! that interval unknown.
//!
//! Cadence: [`PERIOD`] on a reader thread of its own: every read goes through the
//! firmware (ACPI `_BST` for ACPI batteries, an embedded controller transaction).

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::{
    Cadence, Device, Domain, DomainKind, OpenContext, Place, ReadError, Reading, Source,
    SourceKind, Unavailable, UnavailableKind, Wrap,
};
use crate::{fsx, kfs};

/// Where power supplies are listed, as an absolute system path (joined under the root).
pub const POWER_SUPPLY_CLASS_DIR: &str = "/sys/class/power_supply";

/// How often batteries are read: half the ACPI battery driver's 1 s cache of `_BST`
/// (`battery.cache_time`), so a new value is seen within half a second of the driver
/// fetching it, and each read at most one firmware call.
pub const PERIOD: Duration = Duration::from_millis(500);

/// Joules per unit of the `energy_now` counter: 1 µWh = 3.6 mJ.
pub const ENERGY_UNIT_J: f64 = 3.6e-3;

/// Joules per unit of the `charge_now` x `voltage_now` counter: 1 µAh x 1 µV = 3.6 nJ.
pub const CHARGE_UNIT_J: f64 = 3.6e-9;

/// The buffer a value is read into.
const READ_BUF: usize = 32;

/// How a battery's discharge is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BatteryMethod {
    /// `power_now`.
    PowerNow,
    /// `current_now` x `voltage_now`.
    CurrentVoltage,
    /// The drop of `energy_now`.
    EnergyDrop,
    /// The drop of `charge_now` x `voltage_now`.
    ChargeDrop,
}

impl BatteryMethod {
    /// The files it reads, besides `status`.
    pub fn files(self) -> &'static [&'static str] {
        match self {
            BatteryMethod::PowerNow => &["power_now"],
            BatteryMethod::CurrentVoltage => &["current_now", "voltage_now"],
            BatteryMethod::EnergyDrop => &["energy_now"],
            BatteryMethod::ChargeDrop => &["charge_now", "voltage_now"],
        }
    }

    const ALL: [BatteryMethod; 4] = [
        BatteryMethod::PowerNow,
        BatteryMethod::CurrentVoltage,
        BatteryMethod::EnergyDrop,
        BatteryMethod::ChargeDrop,
    ];
}

/// One power supply of type `Battery`, as [`survey`] sees it: for `joulerun list`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BatteryInfo {
    /// `BAT0`.
    pub name: String,
    pub path: PathBuf,
    /// `scope` (`System`, `Device`, `Unknown`), when the driver gives one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// `status`: `Discharging`, `Charging`, `Full`, `Not charging`, `Unknown`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// How it would be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<BatteryMethod>,
    /// Why it is not a reading now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

fn read_trimmed(path: &Path) -> io::Result<String> {
    fsx::read_attr_string(path).map(|s| s.trim().to_string())
}

/// The first method whose files all exist.
fn method_of(dir: &Path) -> Option<BatteryMethod> {
    BatteryMethod::ALL
        .into_iter()
        .find(|m| m.files().iter().all(|f| fs::metadata(dir.join(f)).is_ok()))
}

struct Found {
    info: BatteryInfo,
    /// Any error reading `status`, for the open's verdict.
    status_error: Option<(PathBuf, io::Error)>,
}

fn find(class_dir: &Path) -> io::Result<Vec<Found>> {
    let mut names: Vec<String> = fs::read_dir(class_dir)?
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    let mut found = Vec::new();
    for name in names {
        let path = class_dir.join(&name);
        // Only batteries; a type that cannot be read is not one we can use either.
        if read_trimmed(&path.join("type")).ok().as_deref() != Some("Battery") {
            continue;
        }
        let scope = read_trimmed(&path.join("scope")).ok();
        let status_path = path.join("status");
        let (status, status_error) = match read_trimmed(&status_path) {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some((status_path, e))),
        };
        let method = method_of(&path);
        let skipped = if scope.as_deref() == Some("Device") {
            Some(
                "a peripheral's battery (scope: Device): it powers a device, not this machine"
                    .to_string(),
            )
        } else if let Some((p, e)) = &status_error {
            Some(format!("cannot read {}: {e}", p.display()))
        } else if status.as_deref() != Some("Discharging") {
            Some(format!(
                "on AC power (status: {}): no battery reading",
                status.as_deref().unwrap_or("")
            ))
        } else if method.is_none() {
            Some(
                "none of power_now, current_now and voltage_now, energy_now, charge_now and \
                 voltage_now"
                    .to_string(),
            )
        } else {
            None
        };
        found.push(Found {
            info: BatteryInfo {
                name,
                path,
                scope,
                status,
                method,
                skipped,
            },
            status_error,
        });
    }
    Ok(found)
}

/// Every battery under the root, how it would be read, or why it is not a reading now:
/// for `joulerun list`. Empty when there is none.
pub fn survey(ctx: &OpenContext) -> Vec<BatteryInfo> {
    find(&ctx.root.path(POWER_SUPPLY_CLASS_DIR))
        .map(|f| f.into_iter().map(|f| f.info).collect())
        .unwrap_or_default()
}

/// The fix printed when a battery file is readable by root only.
pub fn permission_fix(path: &Path) -> String {
    format!(
        "run joulerun as root, or let your user read it: `sudo chmod o+r {}` (until reboot)",
        path.display()
    )
}

fn open_error(path: &Path, err: &io::Error) -> Unavailable {
    Unavailable::from_open_error(SourceKind::Battery, path, err, || permission_fix(path))
}

/// A kept-open file of a battery.
#[derive(Debug)]
struct Attr {
    path: PathBuf,
    file: File,
}

impl Attr {
    fn open(dir: &Path, name: &str) -> Result<Attr, Unavailable> {
        let path = dir.join(name);
        let file = fsx::open_regular(&path).map_err(|e| open_error(&path, &e))?;
        Ok(Attr { path, file })
    }

    /// The value, trimmed, into `buf`; allocates only on failure.
    fn read<'b>(&self, buf: &'b mut [u8; READ_BUF], gone: &Path) -> Result<&'b [u8], ReadError> {
        match kfs::pread_value(&self.file, buf) {
            Ok(0) => Err(self.failure("no data".to_string(), gone)),
            Ok(n) => Ok(buf[..n].trim_ascii()),
            Err(e) => Err(self.failure(e.to_string(), gone)),
        }
    }

    fn failure(&self, what: String, dir: &Path) -> ReadError {
        match fs::metadata(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => ReadError::gone(format!(
                "read {}: {what} (the battery {} has disappeared)",
                self.path.display(),
                dir.display()
            )),
            _ => ReadError::new(format!("read {}: {what}", self.path.display())),
        }
    }

    /// A signed decimal (`power_now`, `current_now` can be negative).
    fn int(&self, dir: &Path, unit: &str) -> Result<i64, ReadError> {
        let mut buf = [0u8; READ_BUF];
        let v = self.read(&mut buf, dir)?;
        kfs::parse_decimal_i64(v).ok_or_else(|| {
            ReadError::new(format!(
                "read {}: expected a decimal number of {unit}, got {:?}",
                self.path.display(),
                String::from_utf8_lossy(v)
            ))
        })
    }

    /// A value that cannot be negative (`energy_now`, `charge_now`, `voltage_now`).
    fn uint(&self, dir: &Path, unit: &str) -> Result<u64, ReadError> {
        let v = self.int(dir, unit)?;
        u64::try_from(v).map_err(|_| {
            ReadError::new(format!(
                "read {}: {v} {unit}, a negative value",
                self.path.display()
            ))
        })
    }
}

#[derive(Debug)]
enum Files {
    PowerNow(Attr),
    CurrentVoltage { current: Attr, voltage: Attr },
    EnergyDrop(Attr),
    ChargeDrop { charge: Attr, voltage: Attr },
}

/// The state of a counter built from the drop of `energy_now` or `charge_now`.
#[derive(Clone, Copy, Debug, Default)]
struct Drained {
    /// The last raw value (µWh or µAh) and voltage (µV), when there is a base.
    last: Option<(u64, u64)>,
    /// Energy consumed since the start, in the counter's unit.
    consumed: u64,
    /// The next good reading must be a counter value (a base), not `Unchanged`: after a
    /// failure the accumulator has forgotten its base.
    need_base: bool,
}

impl Drained {
    /// `raw` now (and `volts_uv` for a charge counter; 1 for an energy counter), as the
    /// energy consumed since the first reading, `joules_per_unit` per unit.
    fn step(
        &mut self,
        raw: u64,
        volts_uv: u64,
        joules_per_unit: f64,
        path: &Path,
        unit: &str,
    ) -> Result<Reading, ReadError> {
        // Consumed energy only grows: a 64-bit counter that never wraps.
        let value = |consumed| Reading::Counter {
            value: consumed,
            wrap: Wrap::Full64,
            joules_per_unit,
        };
        let out = match self.last {
            None => value(self.consumed),
            Some((last, _)) if raw == last => {
                if !self.need_base {
                    return Ok(Reading::Unchanged);
                }
                value(self.consumed)
            }
            Some((last, last_v)) if raw < last => {
                let mean_v = (u128::from(last_v) + u128::from(volts_uv)) / 2;
                let units = u128::from(last - raw) * mean_v.max(1);
                let units = u64::try_from(units).unwrap_or(u64::MAX);
                self.consumed = self.consumed.saturating_add(units);
                value(self.consumed)
            }
            Some((last, _)) => {
                self.last = Some((raw, volts_uv));
                self.need_base = true;
                return Err(ReadError::new(format!(
                    "read {}: rose from {last} to {raw} {unit} while discharging (the firmware \
                     recalibrated): the energy of this interval is unknown",
                    path.display()
                )));
            }
        };
        self.last = Some((raw, volts_uv));
        self.need_base = false;
        Ok(out)
    }

    /// After a failure: the next good reading is a new base.
    fn forget(&mut self) {
        self.last = None;
        self.need_base = true;
    }
}

/// One opened battery.
#[derive(Debug)]
struct Battery {
    name: String,
    dir: PathBuf,
    status: Attr,
    files: Files,
    drained: Drained,
}

impl Battery {
    fn open(dir: &Path, name: &str, method: BatteryMethod) -> Result<Battery, Unavailable> {
        let status = Attr::open(dir, "status")?;
        let files = match method {
            BatteryMethod::PowerNow => Files::PowerNow(Attr::open(dir, "power_now")?),
            BatteryMethod::CurrentVoltage => Files::CurrentVoltage {
                current: Attr::open(dir, "current_now")?,
                voltage: Attr::open(dir, "voltage_now")?,
            },
            BatteryMethod::EnergyDrop => Files::EnergyDrop(Attr::open(dir, "energy_now")?),
            BatteryMethod::ChargeDrop => Files::ChargeDrop {
                charge: Attr::open(dir, "charge_now")?,
                voltage: Attr::open(dir, "voltage_now")?,
            },
        };
        Ok(Battery {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            status,
            files,
            drained: Drained::default(),
        })
    }

    fn method(&self) -> BatteryMethod {
        match self.files {
            Files::PowerNow(_) => BatteryMethod::PowerNow,
            Files::CurrentVoltage { .. } => BatteryMethod::CurrentVoltage,
            Files::EnergyDrop(_) => BatteryMethod::EnergyDrop,
            Files::ChargeDrop { .. } => BatteryMethod::ChargeDrop,
        }
    }

    fn read(&mut self) -> Result<Reading, ReadError> {
        let r = self.read_discharging();
        if r.is_err() {
            self.drained.forget();
        }
        r
    }

    fn read_discharging(&mut self) -> Result<Reading, ReadError> {
        let dir = self.dir.as_path();
        let mut buf = [0u8; READ_BUF];
        let status = self.status.read(&mut buf, dir)?;
        if status != b"Discharging" {
            return Err(ReadError::new(format!(
                "{}: on AC power since the previous reading (status: {}): no battery reading \
                 while it charges or rests; that energy is missing, not 0 W",
                self.name,
                String::from_utf8_lossy(status)
            )));
        }
        let zero = |what: &str| {
            ReadError::new(format!(
                "{}: {what} reads 0 while discharging (the firmware does not know the rate \
                 yet): that energy is missing, not 0 W",
                self.name
            ))
        };
        match &self.files {
            Files::PowerNow(p) => match p.int(dir, "microwatts")?.unsigned_abs() {
                0 => Err(zero("power_now")),
                uw => Ok(Reading::Power {
                    watts: uw as f64 * 1e-6,
                }),
            },
            Files::CurrentVoltage { current, voltage } => {
                let ua = current.int(dir, "microamps")?.unsigned_abs();
                let uv = voltage.uint(dir, "microvolts")?;
                if ua == 0 {
                    return Err(zero("current_now"));
                }
                Ok(Reading::Power {
                    watts: ua as f64 * 1e-6 * (uv as f64 * 1e-6),
                })
            }
            Files::EnergyDrop(e) => {
                let raw = e.uint(dir, "microwatt-hours")?;
                self.drained.step(raw, 1, ENERGY_UNIT_J, &e.path, "µWh")
            }
            Files::ChargeDrop { charge, voltage } => {
                let raw = charge.uint(dir, "microamp-hours")?;
                let uv = voltage.uint(dir, "microvolts")?;
                self.drained
                    .step(raw, uv, CHARGE_UNIT_J, &charge.path, "µAh")
            }
        }
    }
}

/// The system's batteries while they discharge.
#[derive(Debug)]
pub struct BatterySource {
    domains: Vec<Domain>,
    batteries: Vec<Battery>,
    warnings: Vec<String>,
}

impl BatterySource {
    /// Every system battery that is discharging now.
    ///
    /// Errors, all naming what was found: no battery at all, only peripheral batteries,
    /// on AC power ([`UnavailableKind::Inactive`], "on AC power (status: Charging): no
    /// battery reading"); a file readable by root only ([`UnavailableKind::Permission`]
    /// naming it); files that cannot be read ([`UnavailableKind::Invalid`]). A battery
    /// that is not discharging while another is, or that cannot be read while another
    /// can, is left out with a warning.
    pub fn open(ctx: &OpenContext) -> Result<BatterySource, Unavailable> {
        let class_dir = ctx.root.path(POWER_SUPPLY_CLASS_DIR);
        let no_battery = |why: String| {
            Unavailable::new(SourceKind::Battery, UnavailableKind::NotPresent, why, None)
        };
        let found = match find(&class_dir) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(no_battery(format!(
                    "no battery: {} does not exist",
                    class_dir.display()
                )));
            }
            Err(e) => {
                return Err(Unavailable::new(
                    SourceKind::Battery,
                    UnavailableKind::Invalid,
                    format!("cannot list {}: {e}", class_dir.display()),
                    None,
                ));
            }
        };
        let system: Vec<&Found> = found
            .iter()
            .filter(|f| f.info.scope.as_deref() != Some("Device"))
            .collect();
        if found.is_empty() {
            return Err(no_battery(format!(
                "no battery: no power supply of type Battery under {}",
                class_dir.display()
            )));
        }
        if system.is_empty() {
            return Err(no_battery(format!(
                "no battery of this machine, only peripheral ones ({}: scope Device): they \
                 power a mouse, a keyboard or a pen, not this machine",
                found
                    .iter()
                    .map(|f| f.info.name.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        // Status first: a permission problem says so, and on AC power nothing is read.
        if system.iter().all(|f| f.status_error.is_some()) {
            let (p, e) = system[0].status_error.as_ref().expect("all have an error");
            return Err(open_error(p, e));
        }
        let discharging: Vec<&&Found> = system
            .iter()
            .filter(|f| f.info.status.as_deref() == Some("Discharging"))
            .collect();
        if discharging.is_empty() {
            let statuses: Vec<String> = system
                .iter()
                .filter_map(|f| {
                    let s = f.info.status.as_deref()?;
                    Some(if system.len() > 1 {
                        format!("{} {s}", f.info.name)
                    } else {
                        s.to_string()
                    })
                })
                .collect();
            return Err(Unavailable::new(
                SourceKind::Battery,
                UnavailableKind::Inactive,
                format!(
                    "on AC power (status: {}): no battery reading",
                    statuses.join(", ")
                ),
                Some(
                    "unplug the charger to measure on battery: the battery then powers the \
                     whole machine and its discharge is the total"
                        .to_string(),
                ),
            ));
        }
        let mut warnings = Vec::new();
        for f in &system {
            if let Some(why) = &f.info.skipped
                && f.info.status.as_deref() != Some("Discharging")
            {
                warnings.push(format!("{} left out: {why}", f.info.name));
            }
        }
        let mut domains = Vec::new();
        let mut batteries = Vec::new();
        let mut permission = None;
        let mut other = None;
        for f in discharging {
            let Some(method) = f.info.method else {
                let u = Unavailable::new(
                    SourceKind::Battery,
                    UnavailableKind::Invalid,
                    format!(
                        "{} has {}",
                        f.info.path.display(),
                        f.info.skipped.as_deref().unwrap_or("no discharge reading")
                    ),
                    None,
                );
                warnings.push(format!("{} left out: {}", f.info.name, u.reason));
                other.get_or_insert(u);
                continue;
            };
            let opened = Battery::open(&f.info.path, &f.info.name, method).and_then(|mut b| {
                // A first read proves the files hold what they should.
                match b.read() {
                    Ok(_) => Ok(b),
                    Err(e) => Err(Unavailable::new(
                        SourceKind::Battery,
                        UnavailableKind::Invalid,
                        e.message,
                        None,
                    )),
                }
            });
            match opened {
                Ok(mut b) => {
                    // The first read above was only a check: the run's first reading is
                    // the base of the counter.
                    b.drained = Drained::default();
                    domains.push(
                        Domain::on_device(
                            b.name.clone(),
                            DomainKind::Battery,
                            Device::Battery {
                                name: b.name.clone(),
                            },
                            SourceKind::Battery,
                        )
                        .placed(Place::Whole),
                    );
                    batteries.push(b);
                }
                Err(u) => {
                    warnings.push(format!("{} left out: {}", f.info.name, u.reason));
                    if u.kind == UnavailableKind::Permission {
                        permission.get_or_insert(u);
                    } else {
                        other.get_or_insert(u);
                    }
                }
            }
        }
        if batteries.is_empty() {
            return Err(permission.or(other).unwrap_or_else(|| {
                Unavailable::new(
                    SourceKind::Battery,
                    UnavailableKind::Invalid,
                    format!("no battery under {} could be read", class_dir.display()),
                    None,
                )
            }));
        }
        Ok(BatterySource {
            domains,
            batteries,
            warnings,
        })
    }

    /// How each battery is read, in `domains()` order.
    pub fn methods(&self) -> Vec<BatteryMethod> {
        self.batteries.iter().map(Battery::method).collect()
    }
}

impl Source for BatterySource {
    fn kind(&self) -> SourceKind {
        SourceKind::Battery
    }

    fn domains(&self) -> &[Domain] {
        &self.domains
    }

    fn read(&mut self, out: &mut Vec<Result<Reading, ReadError>>) {
        out.clear();
        for b in &mut self.batteries {
            out.push(b.read());
        }
    }

    fn cadence(&self) -> Cadence {
        Cadence::Every(PERIOD)
    }

    fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(r: Result<Reading, ReadError>) -> u64 {
        match r {
            Ok(Reading::Counter { value, .. }) => value,
            other => panic!("not a counter: {other:?}"),
        }
    }

    #[test]
    fn drops_count_up_and_wait_for_the_firmware() {
        let p = Path::new("/x/energy_now");
        let mut d = Drained::default();
        assert_eq!(counter(d.step(40_000_000, 1, 1.0, p, "µWh")), 0);
        assert_eq!(d.step(40_000_000, 1, 1.0, p, "µWh"), Ok(Reading::Unchanged));
        assert_eq!(counter(d.step(39_990_000, 1, 1.0, p, "µWh")), 10_000);
        assert_eq!(d.step(39_990_000, 1, 1.0, p, "µWh"), Ok(Reading::Unchanged));
        // A rise: unknown, and the next reading is a base again.
        let e = d.step(39_995_000, 1, 1.0, p, "µWh").unwrap_err();
        assert!(
            e.message.contains("rose from 39990000 to 39995000 µWh"),
            "{}",
            e.message
        );
        assert_eq!(counter(d.step(39_995_000, 1, 1.0, p, "µWh")), 10_000);
        assert_eq!(counter(d.step(39_985_000, 1, 1.0, p, "µWh")), 20_000);
        // After a failure, a base first, even if the value did not change.
        d.forget();
        assert_eq!(counter(d.step(39_985_000, 1, 1.0, p, "µWh")), 20_000);
        assert_eq!(d.step(39_985_000, 1, 1.0, p, "µWh"), Ok(Reading::Unchanged));
        // Charge: µAh x the mean of the two voltages.
        let mut c = Drained::default();
        assert_eq!(counter(c.step(3_000_000, 12_000_000, 1.0, p, "µAh")), 0);
        assert_eq!(
            counter(c.step(2_999_000, 11_000_000, 1.0, p, "µAh")),
            1000 * 11_500_000
        );
    }

    #[test]
    fn units() {
        // 1 Wh = 3600 J: 10^6 µWh.
        assert!((1e6 * ENERGY_UNIT_J - 3600.0).abs() < 1e-9);
        // 1 Ah at 1 V = 3600 J: 10^6 µAh x 10^6 µV.
        assert!((1e12 * CHARGE_UNIT_J - 3600.0).abs() < 1e-6);
    }
}
