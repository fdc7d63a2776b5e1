//! RAPL through the powercap sysfs interface (`/sys/class/powercap/intel-rapl:*`).
//!
//! Discovery: every entry of `<root>/sys/class/powercap` named `<control type>:<i>[:<j>...]`
//! whose control type is `intel-rapl` or `intel-rapl-<something>` (`intel-rapl-mmio`) is a
//! zone. Indexes are hexadecimal (`intel-rapl:a` is the eleventh top-level zone) and say
//! nothing about what a zone measures: its `name` file does (`package-N`,
//! `package-N-die-M`, `core`, `uncore`, `dram`, `psys`). The bare `intel-rapl` control-type
//! directory has no counter and is ignored.
//!
//! Mapping to [`Domain`]s:
//! - `package-N` is [`DomainKind::Package`] on socket N; `package-N-die-M` keeps its name
//!   and is on socket N.
//! - `core`, `uncore` and `dram` subzones take the socket of their parent package zone
//!   (`core-0`, `dram-1`; under a die zone, `dram-0-die-1`).
//! - A top-level `dram` zone has no parent to take a socket from: it is `dram`, socket
//!   `None`. A top-level `psys` is [`DomainKind::Psys`], socket `None`.
//! - Zones of another `intel-rapl-*` control type (`intel-rapl-mmio:0` repeats package-0
//!   through MMIO) are used only for a domain that no readable `intel-rapl` zone provides,
//!   so a package is never counted twice, and a machine whose only provider is MMIO (or
//!   whose `intel-rapl` package zone cannot be read) still works, with a warning.
//! - Two `intel-rapl` zones that map to one domain name (`package-0` twice) are one
//!   domain: the first readable one in zone order (numeric index) is kept, the other is
//!   left out with a warning naming both paths.
//! - `enabled` is not consulted: it switches the zone's power *limit*, the energy counter
//!   runs either way, so disabled zones are reported like the others.
//!
//! Reading: `energy_uj` is decimal µJ, wrapping at `max_energy_range_uj`. Each `energy_uj`
//! is kept open and re-read with `pread` at offset 0 into a stack buffer on every tick
//! ([`crate::kfs::pread_value`]; the kernel re-reads the MSR on each read). A hidden or unreadable `max_energy_range_uj`
//! gives [`Wrap::Unknown`] and a warning (see [`PowercapSource::warnings`]), and so does an
//! `energy_uj` above `max_energy_range_uj` at open: that range cannot be right.
//!
//! Permission: since Linux 5.10 (CVE-2020-8694) `energy_uj` is mode 0400; a non-root
//! `open()` fails with EACCES and [`PowercapSource::open`] returns
//! [`UnavailableKind::Permission`] with the fix (see [`permission_fix`]).

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use super::{
    Domain, DomainKind, OpenContext, Place, ReadError, Reading, Source, SourceKind, Unavailable,
    UnavailableKind, Wrap, domain_name,
};
use crate::kfs;

/// Where powercap zones are listed, as an absolute system path (joined under the root).
pub const POWERCAP_CLASS_DIR: &str = "/sys/class/powercap";

/// The control type whose zones are preferred. Other `intel-rapl-*` types (MMIO) only
/// fill in domains this one lacks.
pub const PRIMARY_CONTROL_TYPE: &str = "intel-rapl";

/// The buffer `energy_uj` is read into: 20 digits of u64 plus whitespace fit.
const READ_BUF: usize = 32;

/// The fix printed when `energy_uj` is readable by root only.
pub fn permission_fix() -> String {
    "run joulerun as root, or let your user read the counters: \
     `sudo chmod o+r /sys/class/powercap/intel-rapl:*/energy_uj /sys/class/powercap/intel-rapl:*:*/energy_uj` \
     (until reboot), or for every boot a udev rule in /etc/udev/rules.d/99-joulerun-powercap.rules: \
     `ACTION==\"add\", SUBSYSTEM==\"powercap\", KERNEL==\"intel-rapl:*\", RUN+=\"/bin/chmod o+r /sys%p/energy_uj\"` \
     then `sudo udevadm trigger --subsystem-match=powercap --action=add`. \
     Either way every local user can then read the counters again (the PLATYPUS side channel, \
     CVE-2020-8694, that the 0400 mode closes)"
        .to_string()
}

/// The fix printed when there are no RAPL zones at all.
pub fn not_present_fix() -> String {
    "on bare-metal Intel or AMD (Zen, kernel 5.11+) load the driver: \
     `sudo modprobe intel_rapl_msr` (it pulls in intel_rapl_common); \
     VMs and most cloud instances do not expose RAPL at all, and there only joulerun's \
     labelled estimate is available"
        .to_string()
}

/// Turn the error of opening (or first reading) an `energy_uj` file into the reason the
/// source is unavailable. EACCES and EPERM are [`UnavailableKind::Permission`] with the
/// fix; anything else is [`UnavailableKind::Invalid`] naming the path and the OS error.
pub fn classify_open_error(path: &Path, err: &io::Error) -> Unavailable {
    match err.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => Unavailable::new(
            SourceKind::Powercap,
            UnavailableKind::Permission,
            format!(
                "cannot read {}: permission denied (energy_uj is readable by root only since \
                 Linux 5.10, CVE-2020-8694)",
                path.display()
            ),
            Some(permission_fix()),
        ),
        _ => Unavailable::new(
            SourceKind::Powercap,
            UnavailableKind::Invalid,
            format!("cannot read {}: {}", path.display(), err),
            None,
        ),
    }
}

/// A zone directory name split into control type and (hex) index path:
/// `intel-rapl:0:a` is `("intel-rapl", [0, 10])`. `None` for names that are not RAPL zones
/// (the bare `intel-rapl` control type, `dtpm`, ...).
pub fn parse_zone_dir_name(name: &str) -> Option<(&str, Vec<u32>)> {
    let mut parts = name.split(':');
    let control = parts.next()?;
    if control != PRIMARY_CONTROL_TYPE && !control.starts_with("intel-rapl-") {
        return None;
    }
    let mut index = Vec::new();
    for p in parts {
        index.push(u32::try_from(kfs::parse_hex_u64(p.as_bytes())?).ok()?);
    }
    if index.is_empty() {
        return None;
    }
    Some((control, index))
}

/// `package-N` → `(N, None)`, `package-N-die-M` → `(N, Some(M))`.
pub fn parse_package_name(name: &str) -> Option<(u32, Option<u32>)> {
    let rest = name.strip_prefix("package-")?;
    let num = |s: &str| -> Option<u32> { u32::try_from(kfs::parse_u64(s.as_bytes())?).ok() };
    match rest.split_once("-die-") {
        Some((p, d)) => Some((num(p)?, Some(num(d)?))),
        None => Some((num(rest)?, None)),
    }
}

/// One zone found in the class directory, before it is opened.
#[derive(Clone, Debug)]
struct FoundZone {
    control: String,
    index: Vec<u32>,
    /// `<root>/sys/class/powercap/<dir_name>`.
    path: PathBuf,
    /// Content of `name`, trimmed; `None` if unreadable.
    name: Option<String>,
}

/// What a zone measures, once its name (and its parent's) is known.
#[derive(Clone, Debug, PartialEq)]
struct Mapped {
    name: String,
    kind: DomainKind,
    socket: Option<u32>,
    die: Option<u32>,
}

fn map_zone(zone: &FoundZone, zones: &[FoundZone]) -> Result<Mapped, String> {
    let Some(name) = zone.name.as_deref() else {
        return Err(format!(
            "ignoring {}: cannot read {}",
            zone.path.display(),
            zone.path.join("name").display()
        ));
    };
    if let Some((socket, die)) = parse_package_name(name) {
        return Ok(Mapped {
            name: name.to_string(),
            kind: DomainKind::Package,
            socket: Some(socket),
            die,
        });
    }
    let kind = match name {
        "core" => DomainKind::Core,
        "uncore" => DomainKind::Uncore,
        "dram" => DomainKind::Dram,
        "psys" => DomainKind::Psys,
        _ => {
            return Err(format!(
                "ignoring {}: unknown zone name '{}'",
                zone.path.display(),
                name.escape_debug()
            ));
        }
    };
    if kind == DomainKind::Psys {
        return Ok(Mapped {
            name: domain_name(kind, None),
            kind,
            socket: None,
            die: None,
        });
    }
    // Socket (and die) from the nearest ancestor package zone of the same control type.
    let mut socket_die = None;
    let mut depth = zone.index.len();
    while depth > 1 && socket_die.is_none() {
        depth -= 1;
        let prefix = &zone.index[..depth];
        socket_die = zones
            .iter()
            .find(|z| z.control == zone.control && z.index == prefix)
            .and_then(|z| z.name.as_deref())
            .and_then(parse_package_name);
    }
    Ok(match socket_die {
        Some((socket, Some(die))) => Mapped {
            name: format!("{}-{}-die-{}", kind.name(), socket, die),
            kind,
            socket: Some(socket),
            die: Some(die),
        },
        Some((socket, None)) => Mapped {
            name: domain_name(kind, Some(socket)),
            kind,
            socket: Some(socket),
            die: None,
        },
        None => Mapped {
            name: domain_name(kind, None),
            kind,
            socket: None,
            die: None,
        },
    })
}

fn find_zones(class_dir: &Path) -> io::Result<Vec<FoundZone>> {
    let mut zones = Vec::new();
    for entry in fs::read_dir(class_dir)? {
        let Ok(entry) = entry else { continue };
        let file_name = entry.file_name();
        let Some(dir_name) = file_name.to_str() else {
            continue;
        };
        let Some((control, index)) = parse_zone_dir_name(dir_name) else {
            continue;
        };
        let path = class_dir.join(dir_name);
        let name = crate::fsx::read_attr_string(&path.join("name"))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        zones.push(FoundZone {
            control: control.to_string(),
            index,
            path,
            name,
        });
    }
    // Primary control type first, then by numeric index: deterministic and parents first.
    zones.sort_by(|a, b| {
        (a.control != PRIMARY_CONTROL_TYPE, &a.control, &a.index).cmp(&(
            b.control != PRIMARY_CONTROL_TYPE,
            &b.control,
            &b.index,
        ))
    });
    Ok(zones)
}

/// Read and parse one `energy_uj`. Allocates only on failure.
fn read_energy(file: &File, path: &Path) -> Result<u64, ReadError> {
    let mut buf = [0u8; READ_BUF];
    let n = kfs::pread_value(file, &mut buf)
        .map_err(|e| ReadError::new(format!("read {}: {}", path.display(), e)))?;
    if n == 0 {
        // sysfs never returns an empty counter; the file went away under us (a removed
        // kernfs node answers ENODEV; a fake tree's unlinked file reads empty).
        return Err(ReadError::new(match fs::metadata(path) {
            Err(e) => format!("read {}: {} (the zone has disappeared)", path.display(), e),
            Ok(m) if !m.is_file() => format!(
                "read {}: no data, and the path is no longer a regular file",
                path.display()
            ),
            Ok(_) => format!(
                "read {}: empty, expected a decimal number of microjoules",
                path.display()
            ),
        }));
    }
    kfs::parse_decimal_u64(&buf[..n]).ok_or_else(|| {
        ReadError::new(format!(
            "read {}: expected a decimal number of microjoules, got {:?}",
            path.display(),
            String::from_utf8_lossy(&buf[..n])
        ))
    })
}

/// One opened zone.
#[derive(Debug)]
struct Counter {
    /// `<zone>/energy_uj`.
    energy_path: PathBuf,
    file: File,
    wrap: Wrap,
}

/// Open a zone's `energy_uj`, check that it reads as a counter, and find its wrap.
fn open_zone(
    mapped: &Mapped,
    zone: &FoundZone,
    warnings: &mut Vec<String>,
) -> Result<Counter, Unavailable> {
    let energy_path = zone.path.join("energy_uj");
    let file = crate::fsx::open_regular(&energy_path)
        .and_then(|f| {
            let mut buf = [0u8; READ_BUF];
            kfs::pread_value(&f, &mut buf).map(|_| f)
        })
        .map_err(|e| classify_open_error(&energy_path, &e))?;
    let first = read_energy(&file, &energy_path).map_err(|e| {
        Unavailable::new(
            SourceKind::Powercap,
            UnavailableKind::Invalid,
            e.message,
            None,
        )
    })?;
    let range_path = zone.path.join("max_energy_range_uj");
    let unknown = |why: String| {
        format!(
            "{}: {why}; wraps cannot be corrected for {} (a decrease is counted from zero, \
             a lower bound)",
            mapped.name, mapped.name
        )
    };
    let wrap = match crate::fsx::read_regular(&range_path, crate::fsx::ATTR_LIMIT) {
        Ok(bytes) => match kfs::parse_decimal_u64(&bytes) {
            Some(r) if r > 0 => Wrap::At(r),
            _ => {
                warnings.push(unknown(format!(
                    "{} holds {:?}, not a range",
                    range_path.display(),
                    String::from_utf8_lossy(&bytes).trim()
                )));
                Wrap::Unknown
            }
        },
        Err(e) => {
            warnings.push(unknown(format!(
                "cannot read {}: {}",
                range_path.display(),
                e
            )));
            Wrap::Unknown
        }
    };
    // `energy_uj` runs up to `max_energy_range_uj` (both are 2^32 - 1 units): a value
    // above it means the range is wrong, so its wraps cannot be trusted either.
    let wrap = match wrap {
        Wrap::At(range) if first > range => {
            warnings.push(unknown(format!(
                "{} reads {first} µJ, above its max_energy_range_uj {range} µJ in {}",
                energy_path.display(),
                range_path.display()
            )));
            Wrap::Unknown
        }
        w => w,
    };
    Ok(Counter {
        energy_path,
        file,
        wrap,
    })
}

/// RAPL energy counters read through powercap sysfs.
#[derive(Debug)]
pub struct PowercapSource {
    domains: Vec<Domain>,
    zone_paths: Vec<PathBuf>,
    counters: Vec<Counter>,
    warnings: Vec<String>,
}

impl PowercapSource {
    /// Discover and open every RAPL zone under `<root>/sys/class/powercap`.
    ///
    /// Errors: no zones → [`UnavailableKind::NotPresent`]; no zone readable and at least
    /// one refused with EACCES/EPERM → [`UnavailableKind::Permission`]; no zone readable
    /// for other reasons → [`UnavailableKind::Invalid`] naming the first path and error.
    /// Zones that fail while others work are left out, each with a warning.
    pub fn open(ctx: &OpenContext) -> Result<PowercapSource, Unavailable> {
        let class_dir = ctx.root.path(POWERCAP_CLASS_DIR);
        let not_present = |why: String| {
            Unavailable::new(
                SourceKind::Powercap,
                UnavailableKind::NotPresent,
                why,
                Some(not_present_fix()),
            )
        };
        let zones = match find_zones(&class_dir) {
            Ok(z) => z,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(not_present(format!(
                    "no RAPL zones: {} does not exist (no powercap support in this kernel, \
                     or no RAPL driver loaded)",
                    class_dir.display()
                )));
            }
            Err(e) => {
                return Err(Unavailable::new(
                    SourceKind::Powercap,
                    UnavailableKind::Invalid,
                    format!("cannot list {}: {}", class_dir.display(), e),
                    None,
                ));
            }
        };
        if zones.is_empty() {
            return Err(not_present(format!(
                "no RAPL zones under {} (no Intel/AMD RAPL driver loaded, or a VM that does \
                 not expose RAPL)",
                class_dir.display()
            )));
        }

        let mut warnings = Vec::new();
        // Opened zones: (what it measures, zone directory, counter). Zones come primary
        // control type first, so a secondary (MMIO) zone only gets a name no readable
        // primary zone has.
        let mut opened: Vec<(Mapped, PathBuf, Counter)> = Vec::new();
        let mut failed_names: Vec<String> = Vec::new();
        let mut first_failure: Option<Unavailable> = None;
        let mut permission_failure: Option<Unavailable> = None;
        for zone in &zones {
            let mapped = match map_zone(zone, &zones) {
                Ok(m) => m,
                Err(w) => {
                    warnings.push(w);
                    continue;
                }
            };
            let primary = zone.control == PRIMARY_CONTROL_TYPE;
            if let Some((_, other, _)) = opened.iter().find(|(m, _, _)| m.name == mapped.name) {
                if primary {
                    // Two primary zones with one name (`package-0` twice, two top-level
                    // `dram` zones): one domain, counted once, from the first readable
                    // zone in the deterministic zone order.
                    warnings.push(format!(
                        "{} and {} are both named '{}': {} is counted once, from the first; \
                         the second is left out",
                        other.display(),
                        zone.path.display(),
                        mapped.name,
                        mapped.name
                    ));
                }
                // intel-rapl-mmio repeating a package already read: not twice either.
                continue;
            }
            match open_zone(&mapped, zone, &mut warnings) {
                Ok(counter) => {
                    if !primary && failed_names.contains(&mapped.name) {
                        warnings.push(format!(
                            "{} is read through {} instead",
                            mapped.name,
                            zone.path.display()
                        ));
                    }
                    opened.push((mapped, zone.path.clone(), counter));
                }
                Err(u) => {
                    warnings.push(format!("{} left out: {}", mapped.name, u.reason));
                    failed_names.push(mapped.name);
                    if u.kind == UnavailableKind::Permission {
                        permission_failure.get_or_insert(u);
                    } else {
                        first_failure.get_or_insert(u);
                    }
                }
            }
        }
        opened.sort_by(|(a, _, _), (b, _, _)| {
            (a.socket.is_none(), a.socket, a.die, a.kind, &a.name).cmp(&(
                b.socket.is_none(),
                b.socket,
                b.die,
                b.kind,
                &b.name,
            ))
        });
        let mut domains = Vec::with_capacity(opened.len());
        let mut zone_paths = Vec::with_capacity(opened.len());
        let mut counters = Vec::with_capacity(opened.len());
        for (mapped, path, counter) in opened {
            // Core and uncore sit inside their package zone (or die zone).
            let place = match (mapped.kind, mapped.socket, mapped.die) {
                (DomainKind::Core | DomainKind::Uncore, Some(s), Some(d)) => {
                    Place::Inside(format!("package-{s}-die-{d}"))
                }
                (k, s, _) => k.default_place(s),
            };
            let mut d = Domain::new(mapped.kind, mapped.socket, SourceKind::Powercap);
            d.name = mapped.name;
            domains.push(d.placed(place));
            zone_paths.push(path);
            counters.push(counter);
        }

        if domains.is_empty() {
            if let Some(u) = permission_failure.or(first_failure) {
                return Err(u);
            }
            return Err(not_present(format!(
                "no usable RAPL zones under {}: {}",
                class_dir.display(),
                warnings.join("; ")
            )));
        }
        Ok(PowercapSource {
            domains,
            zone_paths,
            counters,
            warnings,
        })
    }

    /// The zone directory of each domain (`<root>/sys/class/powercap/intel-rapl:0`), in
    /// `domains()` order.
    pub fn zone_paths(&self) -> &[PathBuf] {
        &self.zone_paths
    }

    /// The `energy_uj` file of the domain at `index`, for messages.
    pub fn energy_path(&self, index: usize) -> Option<&Path> {
        self.counters.get(index).map(|c| c.energy_path.as_path())
    }
}

impl Source for PowercapSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Powercap
    }

    fn warnings(&self) -> &[String] {
        &self.warnings
    }

    fn domains(&self) -> &[Domain] {
        &self.domains
    }

    fn read(&mut self, out: &mut Vec<Result<Reading, ReadError>>) {
        out.clear();
        for c in &self.counters {
            out.push(
                read_energy(&c.file, &c.energy_path).map(|value| Reading::Counter {
                    value,
                    wrap: c.wrap,
                    joules_per_unit: 1e-6,
                }),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_zone_dir_names() {
        assert_eq!(
            parse_zone_dir_name("intel-rapl:0"),
            Some(("intel-rapl", vec![0]))
        );
        assert_eq!(
            parse_zone_dir_name("intel-rapl:a:1f"),
            Some(("intel-rapl", vec![10, 31]))
        );
        assert_eq!(
            parse_zone_dir_name("intel-rapl-mmio:0"),
            Some(("intel-rapl-mmio", vec![0]))
        );
        assert_eq!(parse_zone_dir_name("intel-rapl"), None);
        assert_eq!(parse_zone_dir_name("intel-rapl:"), None);
        assert_eq!(parse_zone_dir_name("intel-rapl:g"), None);
        assert_eq!(parse_zone_dir_name("dtpm:0"), None);
        assert_eq!(parse_zone_dir_name("intel-raplx:0"), None);
    }

    #[test]
    fn parses_package_names() {
        assert_eq!(parse_package_name("package-0"), Some((0, None)));
        assert_eq!(parse_package_name("package-12"), Some((12, None)));
        assert_eq!(parse_package_name("package-0-die-1"), Some((0, Some(1))));
        assert_eq!(parse_package_name("package-"), None);
        assert_eq!(parse_package_name("package-x"), None);
        assert_eq!(parse_package_name("package-0-die-"), None);
        assert_eq!(parse_package_name("core"), None);
    }

    #[test]
    fn eacces_and_eperm_are_permission() {
        let p = Path::new("/sys/class/powercap/intel-rapl:0/energy_uj");
        for errno in [libc::EACCES, libc::EPERM] {
            let u = classify_open_error(p, &io::Error::from_raw_os_error(errno));
            assert_eq!(u.kind, UnavailableKind::Permission);
            assert_eq!(
                u.reason,
                "cannot read /sys/class/powercap/intel-rapl:0/energy_uj: permission denied \
                 (energy_uj is readable by root only since Linux 5.10, CVE-2020-8694)"
            );
            let fix = u.fix.unwrap();
            assert!(fix.contains("sudo chmod o+r /sys/class/powercap/intel-rapl:*/energy_uj"));
            assert!(fix.contains("RUN+=\"/bin/chmod o+r /sys%p/energy_uj\""));
        }
        let u = classify_open_error(p, &io::Error::from_raw_os_error(libc::EIO));
        assert_eq!(u.kind, UnavailableKind::Invalid);
        assert!(u.reason.contains("intel-rapl:0/energy_uj"), "{}", u.reason);
    }
}
