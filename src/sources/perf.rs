//! RAPL through the perf "power" PMU (`/sys/bus/event_source/devices/power/`).
//!
//! Two halves:
//!
//! * [`discover`] parses sysfs under the [`SysRoot`] into a [`PmuPlan`]: one
//!   [`PlannedDomain`] per domain, each a `(type, config, scale, cpus)` tuple. Pure file
//!   parsing, so `joulerun list` can show the domains even when opening them fails, and
//!   tests run it on fake trees.
//! * [`PerfSource::from_plan`] opens one perf fd per CPU of every planned domain with
//!   [`open_counter`] and reads them through [`PerfCounter`]. Nothing in that half is
//!   specific to RAPL: a plan pointing at the software PMU goes through exactly the same
//!   code, which is how the syscall path is tested on machines without RAPL.
//!
//! Domain mapping (names match powercap's):
//!
//! | event (PMU)                 | domain      | fds                                    |
//! |-----------------------------|-------------|----------------------------------------|
//! | `energy-pkg` (power)        | `package-N` | each CPU of `cpumask` in package N     |
//! | `energy-cores` (power)      | `core-N`    | idem                                   |
//! | `energy-gpu` (power)        | `uncore-N`  | idem                                   |
//! | `energy-ram` (power)        | `dram-N`    | idem                                   |
//! | `energy-psys` (power)       | `psys`      | the first CPU of `cpumask` only        |
//! | `energy-core` (power_core)  | `core-N`    | every core's CPU of package N, summed  |
//!
//! A domain backed by several fds (per-core `power_core` counters, or one `cpumask` CPU
//! per die on multi-die packages) reads as the wrapping (mod 2^64) sum of the counts. All
//! fds of a domain share one event and so one scale, and the kernel widens every count to
//! 64 bits, so the delta of the sum is the sum of the deltas (as long as a tick's total is
//! below 2^64 units): [`Wrap::Full64`] stays exact.
//!
//! Events whose `.unit` is not `Joules` are skipped with a note (the kernel only ever
//! writes `Joules` for RAPL). A missing `.unit` file is accepted, a missing or
//! malformed `.scale`, or one that is not in (0, 1] J per count ([`MAX_SCALE`]), is
//! [`UnavailableKind::Invalid`].

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use perf_event_open_sys as sys;

use super::{
    Domain, DomainKind, OpenContext, ReadError, Reading, Source, SourceKind, Unavailable,
    UnavailableKind, Wrap,
};
use crate::kfs;
use crate::sysroot::SysRoot;
use crate::topology::Topology;

/// The RAPL PMU directory, relative to the [`SysRoot`].
pub const POWER_PMU_DIR: &str = "/sys/bus/event_source/devices/power";
/// The per-core energy PMU of newer kernels (AMD), relative to the [`SysRoot`].
pub const POWER_CORE_PMU_DIR: &str = "/sys/bus/event_source/devices/power_core";
/// The paranoid sysctl, relative to the [`SysRoot`] when a fake one exists there.
pub const PARANOID_PATH: &str = "/proc/sys/kernel/perf_event_paranoid";

/// Largest `.scale` accepted, joules per count. RAPL's is 2^-32 J (the kernel converts
/// every unit to it); a joule or more per count is not an energy counter.
pub const MAX_SCALE: f64 = 1.0;

const PERMISSION_FIX: &str = "sudo sysctl kernel.perf_event_paranoid=0, or grant the capability: \
     sudo setcap cap_perfmon=ep $(command -v joulerun) (CAP_SYS_ADMIN on kernels before 5.8), \
     or run as root";

// ---------------------------------------------------------------------------------------
// The plan
// ---------------------------------------------------------------------------------------

/// One domain to open: an event on a PMU, and the CPUs whose counts are summed.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedDomain {
    pub domain: Domain,
    /// PMU name, `power` or `power_core`.
    pub pmu: String,
    /// Event name, `energy-pkg`.
    pub event: String,
    /// `perf_event_attr.type`: the PMU's dynamic type number.
    pub type_: u32,
    /// `perf_event_attr.config`.
    pub config: u64,
    /// Joules per count, from the event's `.scale` file.
    pub scale: f64,
    /// One fd is opened on each; the domain's reading is the sum of their counts.
    pub cpus: Vec<usize>,
}

impl PlannedDomain {
    /// The event as `perf` spells it: `power/energy-pkg/`.
    pub fn label(&self) -> String {
        format!("{}/{}/", self.pmu, self.event)
    }
}

/// What [`discover`] found: the domains to open, and notes on what was skipped.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PmuPlan {
    pub domains: Vec<PlannedDomain>,
    /// Human-readable notes (skipped events, guessed packages). Not errors.
    pub notes: Vec<String>,
}

impl PmuPlan {
    /// The domains, in the order a [`PerfSource`] opened from this plan reads them.
    pub fn domains(&self) -> Vec<Domain> {
        self.domains.iter().map(|d| d.domain.clone()).collect()
    }
}

fn invalid(reason: String) -> Unavailable {
    Unavailable::new(SourceKind::Perf, UnavailableKind::Invalid, reason, None)
}

/// Read a sysfs file, or `Invalid` naming it.
fn read_file(path: &Path) -> Result<String, Unavailable> {
    crate::fsx::read_attr_string(path).map_err(|e| invalid(format!("read {}: {e}", path.display())))
}

fn bad_content(path: &Path, content: &str, what: &str) -> Unavailable {
    invalid(format!(
        "{} holds {:?}, not {what}",
        path.display(),
        content.trim_end()
    ))
}

/// Parse a PMU `format/<term>` file such as `config:0-7` or `config:12` into the bit
/// range `(lo, hi)` of `attr.config` it occupies. Other attr fields (`config1`...) and
/// split ranges are not supported: `None`.
fn parse_format(s: &str) -> Option<(u32, u32)> {
    let bits = s.trim().strip_prefix("config:")?;
    let (lo, hi) = match bits.split_once('-') {
        Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
        None => {
            let b: u32 = bits.trim().parse().ok()?;
            (b, b)
        }
    };
    (lo <= hi && hi < 64).then_some((lo, hi))
}

/// Turn an event file's terms (`event=0x02`, `event=0x02,umask=0x0`, `event=2,edge`) into
/// `attr.config`. `event` is required. Each term is placed at the bits its
/// `<pmu>/format/<term>` file names; `event` without a format file goes at bit 0 (RAPL's
/// `config:0-7`); another non-zero term without a usable format file is an error.
fn parse_event_config(
    pmu_dir: &Path,
    event_path: &Path,
    content: &str,
) -> Result<u64, Unavailable> {
    let bad = |what: &str| bad_content(event_path, content, what);
    let mut config: u64 = 0;
    let mut saw_event = false;
    for term in content.trim().split(',') {
        let term = term.trim();
        if term.is_empty() {
            continue;
        }
        let (name, value) = match term.split_once('=') {
            Some((n, v)) => (
                n.trim(),
                kfs::parse_hex_or_decimal_u64(v.as_bytes())
                    .ok_or_else(|| bad("terms like event=0x02"))?,
            ),
            // A bare term is a flag set to 1.
            None => (term, 1),
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(bad("terms like event=0x02"));
        }
        if name == "event" {
            saw_event = true;
        }
        let fmt_path = pmu_dir.join("format").join(name);
        let field =
            match crate::fsx::read_attr_string(&fmt_path) {
                Ok(f) => Some(parse_format(&f).ok_or_else(|| {
                    bad_content(&fmt_path, &f, "a config bit range like config:0-7")
                })?),
                Err(_) => None,
            };
        let (lo, hi) = match field {
            Some(r) => r,
            None if name == "event" => (0, 63),
            None if value == 0 => continue,
            None => {
                return Err(invalid(format!(
                    "{} sets term '{name}' but {} does not say where it goes",
                    event_path.display(),
                    fmt_path.display()
                )));
            }
        };
        let width = hi - lo + 1;
        if width < 64 && value >> width != 0 {
            return Err(bad("values that fit their format fields"));
        }
        config |= value << lo;
    }
    if !saw_event {
        return Err(bad("an event=<number> term"));
    }
    Ok(config)
}

/// One event as sysfs describes it.
struct EventDesc {
    name: String,
    config: u64,
    scale: f64,
}

/// Events of one PMU and what they need.
struct PmuDesc {
    name: String,
    type_: u32,
    cpus: Vec<usize>,
    events: Vec<EventDesc>,
}

/// Parse one PMU directory. `Ok(None)` when the directory does not exist.
fn parse_pmu(
    dir: &Path,
    name: &str,
    notes: &mut Vec<String>,
) -> Result<Option<PmuDesc>, Unavailable> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let type_path = dir.join("type");
    let text = read_file(&type_path)?;
    let type_ = kfs::parse_decimal_u64(text.as_bytes())
        .and_then(|t| u32::try_from(t).ok())
        .ok_or_else(|| bad_content(&type_path, &text, "a PMU type number"))?;

    let mask_path = dir.join("cpumask");
    let text = read_file(&mask_path)?;
    let cpus = kfs::parse_cpu_list(&text)
        .map_err(|e| bad_content(&mask_path, &text, &format!("a CPU list ({e})")))?;

    let events_dir = dir.join("events");
    let entries = fs::read_dir(&events_dir)
        .map_err(|e| invalid(format!("read {}: {e}", events_dir.display())))?;
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| n.starts_with("energy-") && !n.contains('.'))
        .collect();
    names.sort();

    let mut events = Vec::new();
    for ev in names {
        let ev_path = events_dir.join(&ev);
        let text = read_file(&ev_path)?;
        let config = parse_event_config(dir, &ev_path, &text)?;

        let unit_path = events_dir.join(format!("{ev}.unit"));
        if let Ok(unit) = crate::fsx::read_attr_string(&unit_path)
            && unit.trim() != "Joules"
        {
            notes.push(format!(
                "{name}/{ev}/ skipped: {} says {:?}, not Joules",
                unit_path.display(),
                unit.trim()
            ));
            continue;
        }

        let scale_path = events_dir.join(format!("{ev}.scale"));
        let text = read_file(&scale_path)?;
        let scale = match text.trim().parse::<f64>() {
            Ok(s) if s.is_finite() && s > 0.0 && s <= MAX_SCALE => s,
            _ => {
                return Err(bad_content(
                    &scale_path,
                    &text,
                    "a number of joules per count in (0, 1]",
                ));
            }
        };
        events.push(EventDesc {
            name: ev,
            config,
            scale,
        });
    }
    Ok(Some(PmuDesc {
        name: name.to_string(),
        type_,
        cpus,
        events,
    }))
}

/// The domain kind of a `power` PMU event, or `None` for an event joulerun does not know.
fn power_event_kind(event: &str) -> Option<DomainKind> {
    Some(match event {
        "energy-pkg" => DomainKind::Package,
        "energy-cores" => DomainKind::Core,
        "energy-gpu" => DomainKind::Uncore,
        "energy-ram" => DomainKind::Dram,
        "energy-psys" => DomainKind::Psys,
        _ => return None,
    })
}

fn add_cpu(
    domains: &mut Vec<PlannedDomain>,
    pmu: &PmuDesc,
    ev: &EventDesc,
    kind: DomainKind,
    socket: Option<u32>,
    cpu: usize,
) {
    if let Some(d) = domains
        .iter_mut()
        .find(|d| d.domain.kind == kind && d.domain.socket == socket && d.event == ev.name)
    {
        d.cpus.push(cpu);
        return;
    }
    domains.push(PlannedDomain {
        domain: Domain::new(kind, socket, SourceKind::Perf),
        pmu: pmu.name.clone(),
        event: ev.name.clone(),
        type_: pmu.type_,
        config: ev.config,
        scale: ev.scale,
        cpus: vec![cpu],
    });
}

/// Parse the `power` (and, when present, `power_core`) PMU under `root` into a plan.
///
/// No `power` directory: [`UnavailableKind::NotPresent`]. An unreadable or malformed
/// `type`, `cpumask`, event or `.scale` file of `power`: [`UnavailableKind::Invalid`]
/// naming the file and its content. `power_core` is optional: a malformed one, or one
/// whose `core-N` domains `power` already provides (`energy-cores`), is skipped with a
/// note, so the package counters stay usable.
pub fn discover(root: &SysRoot, topology: &Topology) -> Result<PmuPlan, Unavailable> {
    let mut notes = Vec::new();
    let power_dir = root.path(POWER_PMU_DIR);
    let Some(power) = parse_pmu(&power_dir, "power", &mut notes)? else {
        return Err(Unavailable::new(
            SourceKind::Perf,
            UnavailableKind::NotPresent,
            format!(
                "no perf power PMU at {} (the CPU, kernel or hypervisor does not expose RAPL \
                 through perf)",
                power_dir.display()
            ),
            Some(
                "on bare metal, load the RAPL perf driver (sudo modprobe rapl, intel_rapl_perf on \
                 older kernels) or use --source powercap or msr; in a VM use --source estimate"
                    .to_string(),
            ),
        ));
    };

    // Package of each cpumask CPU. The cpumask has one CPU per package (or per die): a
    // CPU the topology does not know is assumed to be the package at its position.
    let mut cpu_pkg: Vec<(usize, u32)> = Vec::with_capacity(power.cpus.len());
    for (i, &cpu) in power.cpus.iter().enumerate() {
        let pkg = match topology.package_of(cpu) {
            Some(p) => p,
            None => {
                let p = i as u32;
                notes.push(format!(
                    "power/: CPU {cpu} of the cpumask has no package in the CPU topology; \
                     assuming package {p}"
                ));
                p
            }
        };
        cpu_pkg.push((cpu, pkg));
    }

    let mut domains: Vec<PlannedDomain> = Vec::new();
    for ev in &power.events {
        let Some(kind) = power_event_kind(&ev.name) else {
            notes.push(format!("power/{}/ skipped: unknown event", ev.name));
            continue;
        };
        if kind == DomainKind::Psys {
            // Machine-wide: one fd, on the first CPU of the cpumask.
            if let Some(&(cpu, _)) = cpu_pkg.first() {
                add_cpu(&mut domains, &power, ev, kind, None, cpu);
            }
            continue;
        }
        for &(cpu, pkg) in &cpu_pkg {
            add_cpu(&mut domains, &power, ev, kind, Some(pkg), cpu);
        }
    }

    let core_dir = root.path(POWER_CORE_PMU_DIR);
    match parse_pmu(&core_dir, "power_core", &mut notes) {
        Ok(None) => {}
        Err(e) => notes.push(format!("power_core/ skipped: {}", e.reason)),
        Ok(Some(pc)) => {
            for ev in &pc.events {
                if ev.name != "energy-core" {
                    notes.push(format!("power_core/{}/ skipped: unknown event", ev.name));
                    continue;
                }
                if domains.iter().any(|d| d.domain.kind == DomainKind::Core) {
                    notes.push(
                        "power_core/energy-core/ skipped: power/energy-cores/ already provides \
                         the core domains"
                            .to_string(),
                    );
                    continue;
                }
                let single = topology.packages().len() <= 1;
                for &cpu in &pc.cpus {
                    let pkg = match topology.package_of(cpu) {
                        Some(p) => p,
                        None if single => 0,
                        None => {
                            notes.push(format!(
                                "power_core/: CPU {cpu} of the cpumask has no package in the \
                                 CPU topology; its core energy is left out"
                            ));
                            continue;
                        }
                    };
                    add_cpu(&mut domains, &pc, ev, DomainKind::Core, Some(pkg), cpu);
                }
            }
        }
    }

    for d in &mut domains {
        d.cpus.sort_unstable();
        d.cpus.dedup();
    }
    // package-0, core-0, uncore-0, dram-0, package-1, ..., psys last.
    domains.sort_by_key(|d| (d.domain.socket.is_none(), d.domain.socket, d.domain.kind));
    Ok(PmuPlan { domains, notes })
}

// ---------------------------------------------------------------------------------------
// The syscall, generic over (type, config, cpu)
// ---------------------------------------------------------------------------------------

/// `perf_event_open(attr, pid = -1, cpu, group_fd = -1, PERF_FLAG_FD_CLOEXEC)` for a
/// counting (not sampling) event of `type_`/`config`, counting everything on `cpu`.
pub fn open_counter(type_: u32, config: u64, cpu: i32) -> io::Result<OwnedFd> {
    let mut attr = sys::bindings::perf_event_attr {
        type_,
        size: std::mem::size_of::<sys::bindings::perf_event_attr>() as u32,
        config,
        ..Default::default()
    };
    // SAFETY: `attr` is a valid, fully initialised perf_event_attr whose `size` matches
    // its layout, and it outlives the call; the other arguments are plain integers.
    let fd = unsafe {
        sys::perf_event_open(
            &mut attr,
            -1,
            cpu,
            -1,
            sys::bindings::PERF_FLAG_FD_CLOEXEC as libc::c_ulong,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned `fd` as a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One open perf counter on one CPU.
#[derive(Debug)]
pub struct PerfCounter {
    file: File,
    cpu: i32,
    buf: [u8; 8],
}

impl PerfCounter {
    pub fn open(type_: u32, config: u64, cpu: i32) -> io::Result<PerfCounter> {
        Ok(PerfCounter {
            file: File::from(open_counter(type_, config, cpu)?),
            cpu,
            buf: [0; 8],
        })
    }

    pub fn cpu(&self) -> i32 {
        self.cpu
    }

    /// The current 64-bit count. No allocation.
    pub fn read(&mut self) -> io::Result<u64> {
        // A perf fd without read_format flags returns exactly one u64 per read.
        (&self.file).read_exact(&mut self.buf)?;
        Ok(u64::from_ne_bytes(self.buf))
    }
}

/// The current `kernel.perf_event_paranoid`: from a fake
/// `<root>/proc/sys/kernel/perf_event_paranoid` when one exists, else the real one.
pub fn read_paranoid(root: &SysRoot) -> Option<String> {
    let fake = root.path(PARANOID_PATH);
    let path = if !root.is_default() && fake.exists() {
        fake
    } else {
        PathBuf::from(PARANOID_PATH)
    };
    crate::fsx::read_attr_string(&path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Turn a failed `perf_event_open` of `label` (`power/energy-pkg/`) on `cpu` into the
/// reason and fix shown to the user. `paranoid` is the current sysctl value, if known.
pub fn classify_open_error(
    err: &io::Error,
    label: &str,
    cpu: i32,
    paranoid: Option<&str>,
) -> Unavailable {
    let what = format!("perf_event_open({label}, cpu {cpu})");
    let errno = err.raw_os_error().unwrap_or(0);
    match errno {
        libc::EACCES | libc::EPERM => Unavailable::new(
            SourceKind::Perf,
            UnavailableKind::Permission,
            format!(
                "{what}: permission denied (kernel.perf_event_paranoid = {}; system-wide events \
                 need CAP_PERFMON or a paranoid level of 0 or lower)",
                paranoid.unwrap_or("unknown")
            ),
            Some(PERMISSION_FIX.to_string()),
        ),
        libc::ENOENT | libc::ENODEV | libc::EOPNOTSUPP => Unavailable::new(
            SourceKind::Perf,
            UnavailableKind::NotPresent,
            format!(
                "{what}: {err} (the kernel lists the event but this CPU or kernel does not support it)"
            ),
            Some("use --source powercap or msr".to_string()),
        ),
        libc::EINVAL => Unavailable::new(
            SourceKind::Perf,
            UnavailableKind::Invalid,
            format!("{what}: {err} (the kernel rejected the type/config read from sysfs)"),
            Some("use --source powercap or msr".to_string()),
        ),
        libc::EMFILE | libc::ENFILE => Unavailable::new(
            SourceKind::Perf,
            UnavailableKind::Invalid,
            format!("{what}: {err}"),
            Some("raise the open file limit (ulimit -n)".to_string()),
        ),
        _ => Unavailable::new(
            SourceKind::Perf,
            UnavailableKind::Invalid,
            format!("{what}: {err}"),
            None,
        ),
    }
}

// ---------------------------------------------------------------------------------------
// The source
// ---------------------------------------------------------------------------------------

struct OpenDomain {
    label: String,
    scale: f64,
    counters: Vec<PerfCounter>,
}

pub struct PerfSource {
    domains: Vec<Domain>,
    open: Vec<OpenDomain>,
    notes: Vec<String>,
}

impl PerfSource {
    /// [`discover`] under `ctx.root`, then open every planned domain.
    pub fn open(ctx: &OpenContext) -> Result<PerfSource, Unavailable> {
        let plan = discover(&ctx.root, &ctx.topology)?;
        PerfSource::from_plan(&plan, &ctx.root)
    }

    /// Open the fds of a plan (`root` only locates a fake paranoid sysctl for messages).
    ///
    /// A permission error fails the whole source at once. Any other open error drops that
    /// domain with a note, so a single unsupported event does not hide the others; when
    /// no domain opens at all, the first error is returned.
    pub fn from_plan(plan: &PmuPlan, root: &SysRoot) -> Result<PerfSource, Unavailable> {
        let mut notes = plan.notes.clone();
        let mut domains = Vec::new();
        let mut open = Vec::new();
        let mut first_err: Option<Unavailable> = None;
        'domains: for pd in &plan.domains {
            let label = pd.label();
            let mut counters = Vec::with_capacity(pd.cpus.len());
            for &cpu in &pd.cpus {
                let cpu = i32::try_from(cpu).unwrap_or(i32::MAX);
                match PerfCounter::open(pd.type_, pd.config, cpu) {
                    Ok(c) => counters.push(c),
                    Err(e) => {
                        let paranoid = read_paranoid(root);
                        let u = classify_open_error(&e, &label, cpu, paranoid.as_deref());
                        if u.kind == UnavailableKind::Permission {
                            return Err(u);
                        }
                        notes.push(format!("{} skipped: {}", pd.domain.name, u.reason));
                        first_err.get_or_insert(u);
                        continue 'domains;
                    }
                }
            }
            if counters.is_empty() {
                continue;
            }
            domains.push(pd.domain.clone());
            open.push(OpenDomain {
                label: format!("{label} ({})", pd.domain.name),
                scale: pd.scale,
                counters,
            });
        }
        if open.is_empty() {
            return Err(first_err.unwrap_or_else(|| {
                Unavailable::new(
                    SourceKind::Perf,
                    UnavailableKind::NotPresent,
                    "the perf power PMU lists no energy event joulerun can read",
                    Some("use --source powercap or msr".to_string()),
                )
            }));
        }
        Ok(PerfSource {
            domains,
            open,
            notes,
        })
    }
}

impl Source for PerfSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Perf
    }

    fn warnings(&self) -> &[String] {
        &self.notes
    }

    fn domains(&self) -> &[Domain] {
        &self.domains
    }

    fn read(&mut self, out: &mut Vec<Result<Reading, ReadError>>) {
        out.clear();
        for d in &mut self.open {
            let mut sum: u64 = 0;
            let mut err = None;
            for c in &mut d.counters {
                match c.read() {
                    Ok(v) => sum = sum.wrapping_add(v),
                    Err(e) => {
                        err = Some(ReadError::new(format!(
                            "read perf {} on cpu {}: {e}",
                            d.label,
                            c.cpu()
                        )));
                        break;
                    }
                }
            }
            out.push(match err {
                Some(e) => Err(e),
                None => Ok(Reading::Counter {
                    value: sum,
                    wrap: Wrap::Full64,
                    joules_per_unit: d.scale,
                }),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCALE: &str = "2.3283064365386962890625e-10\n";
    const SCALE_F: f64 = 2.328_306_436_538_696_3e-10;

    /// Write a fake PMU: `events` are (name, event file, scale file, unit file).
    fn pmu(
        root: &Path,
        name: &str,
        type_: &str,
        cpumask: &str,
        events: &[(&str, &str, &str, &str)],
    ) {
        let dir = root.join("sys/bus/event_source/devices").join(name);
        fs::create_dir_all(dir.join("events")).unwrap();
        fs::create_dir_all(dir.join("format")).unwrap();
        fs::write(dir.join("type"), type_).unwrap();
        fs::write(dir.join("cpumask"), cpumask).unwrap();
        fs::write(dir.join("format/event"), "config:0-7\n").unwrap();
        for (ev, content, scale, unit) in events {
            fs::write(dir.join("events").join(ev), content).unwrap();
            fs::write(dir.join("events").join(format!("{ev}.scale")), scale).unwrap();
            fs::write(dir.join("events").join(format!("{ev}.unit")), unit).unwrap();
        }
    }

    fn summary(plan: &PmuPlan) -> Vec<(String, u32, u64, f64, Vec<usize>)> {
        plan.domains
            .iter()
            .map(|d| {
                (
                    d.domain.name.clone(),
                    d.type_,
                    d.config,
                    d.scale,
                    d.cpus.clone(),
                )
            })
            .collect()
    }

    fn one_package() -> Topology {
        Topology::from_packages(vec![Some(0); 8])
    }

    fn expect_invalid(root: &Path, topo: &Topology, file: &str) -> Unavailable {
        let e = discover(&SysRoot::new(root), topo).unwrap_err();
        assert_eq!(e.kind, UnavailableKind::Invalid, "{e:?}");
        assert!(e.reason.contains(file), "{} does not name {file}", e.reason);
        e
    }

    #[test]
    fn intel_client() {
        let t = tempfile::tempdir().unwrap();
        pmu(
            t.path(),
            "power",
            "19\n",
            "0\n",
            &[
                ("energy-cores", "event=0x01\n", SCALE, "Joules\n"),
                ("energy-pkg", "event=0x02\n", SCALE, "Joules\n"),
                ("energy-gpu", "event=0x04\n", SCALE, "Joules\n"),
                ("energy-psys", "event=0x05\n", SCALE, "Joules\n"),
            ],
        );
        let plan = discover(&SysRoot::new(t.path()), &one_package()).unwrap();
        assert_eq!(
            summary(&plan),
            vec![
                ("package-0".into(), 19, 2, SCALE_F, vec![0]),
                ("core-0".into(), 19, 1, SCALE_F, vec![0]),
                ("uncore-0".into(), 19, 4, SCALE_F, vec![0]),
                ("psys".into(), 19, 5, SCALE_F, vec![0]),
            ]
        );
        let psys = &plan.domains[3];
        assert_eq!(psys.domain.kind, DomainKind::Psys);
        assert_eq!(psys.domain.socket, None);
        assert_eq!(psys.label(), "power/energy-psys/");
        assert!(
            plan.domains
                .iter()
                .all(|d| d.domain.source == SourceKind::Perf)
        );
        assert_eq!(plan.domains()[2].kind, DomainKind::Uncore);
        assert!(plan.notes.is_empty(), "{:?}", plan.notes);
    }

    #[test]
    fn intel_server_two_sockets() {
        let t = tempfile::tempdir().unwrap();
        pmu(
            t.path(),
            "power",
            "23",
            "0,36\n",
            &[
                ("energy-cores", "event=0x01", SCALE, "Joules"),
                ("energy-pkg", "event=0x02", SCALE, "Joules"),
                ("energy-ram", "event=0x03", "1.52587890625e-05\n", "Joules"),
            ],
        );
        // Both sockets have psys-less servers; CPUs 0-35 in package 0, 36-71 in 1.
        let topo = Topology::from_packages((0..72).map(|c| Some(c / 36)).collect());
        let plan = discover(&SysRoot::new(t.path()), &topo).unwrap();
        let ram = 1.52587890625e-05;
        assert_eq!(
            summary(&plan),
            vec![
                ("package-0".into(), 23, 2, SCALE_F, vec![0]),
                ("core-0".into(), 23, 1, SCALE_F, vec![0]),
                ("dram-0".into(), 23, 3, ram, vec![0]),
                ("package-1".into(), 23, 2, SCALE_F, vec![36]),
                ("core-1".into(), 23, 1, SCALE_F, vec![36]),
                ("dram-1".into(), 23, 3, ram, vec![36]),
            ]
        );
        assert_eq!(plan.domains[5].domain.socket, Some(1));
        assert_eq!(plan.domains[5].domain.kind, DomainKind::Dram);
    }

    #[test]
    fn amd_with_power_core() {
        let t = tempfile::tempdir().unwrap();
        pmu(
            t.path(),
            "power",
            "11",
            "0,8\n",
            &[("energy-pkg", "event=0x02,umask=0x0\n", SCALE, "Joules\n")],
        );
        // One CPU per core: cores 0-3 of package 0 (CPUs 0,2,4,6), of package 1 (8-11).
        pmu(
            t.path(),
            "power_core",
            "12",
            "0,2,4,6,8-11\n",
            &[("energy-core", "event=0x01", "1.52587890625e-05", "Joules")],
        );
        let topo = Topology::from_packages((0..16).map(|c| Some(c / 8)).collect());
        let plan = discover(&SysRoot::new(t.path()), &topo).unwrap();
        let core = 1.52587890625e-05;
        assert_eq!(
            summary(&plan),
            vec![
                ("package-0".into(), 11, 2, SCALE_F, vec![0]),
                ("core-0".into(), 12, 1, core, vec![0, 2, 4, 6]),
                ("package-1".into(), 11, 2, SCALE_F, vec![8]),
                ("core-1".into(), 12, 1, core, vec![8, 9, 10, 11]),
            ]
        );
        assert_eq!(plan.domains[1].label(), "power_core/energy-core/");
        assert_eq!(plan.domains[3].domain.kind, DomainKind::Core);
    }

    #[test]
    fn power_core_does_not_duplicate_energy_cores() {
        let t = tempfile::tempdir().unwrap();
        pmu(
            t.path(),
            "power",
            "11",
            "0",
            &[
                ("energy-cores", "event=0x01", SCALE, "Joules"),
                ("energy-pkg", "event=0x02", SCALE, "Joules"),
            ],
        );
        pmu(
            t.path(),
            "power_core",
            "12",
            "0-3",
            &[("energy-core", "event=0x01", SCALE, "Joules")],
        );
        let plan = discover(&SysRoot::new(t.path()), &one_package()).unwrap();
        let names: Vec<_> = plan.domains.iter().map(|d| d.label()).collect();
        assert_eq!(names, vec!["power/energy-pkg/", "power/energy-cores/"]);
        assert!(
            plan.notes
                .iter()
                .any(|n| n.contains("power_core/energy-core/ skipped"))
        );
    }

    #[test]
    fn malformed_power_core_is_only_a_note() {
        let t = tempfile::tempdir().unwrap();
        pmu(
            t.path(),
            "power",
            "11",
            "0",
            &[("energy-pkg", "event=0x02", SCALE, "Joules")],
        );
        pmu(
            t.path(),
            "power_core",
            "banana",
            "0-3",
            &[("energy-core", "event=0x01", SCALE, "Joules")],
        );
        let plan = discover(&SysRoot::new(t.path()), &one_package()).unwrap();
        assert_eq!(plan.domains.len(), 1);
        assert!(
            plan.notes.iter().any(|n| n.contains("power_core/type")),
            "{:?}",
            plan.notes
        );
    }

    #[test]
    fn missing_pmu_is_not_present() {
        let t = tempfile::tempdir().unwrap();
        // Other PMUs exist (as in a VM): still no RAPL.
        fs::create_dir_all(t.path().join("sys/bus/event_source/devices/software")).unwrap();
        let e = discover(&SysRoot::new(t.path()), &one_package()).unwrap_err();
        assert_eq!(e.kind, UnavailableKind::NotPresent);
        assert_eq!(e.source_kind, SourceKind::Perf);
        let path = t.path().join("sys/bus/event_source/devices/power");
        assert_eq!(
            e.reason,
            format!(
                "no perf power PMU at {} (the CPU, kernel or hypervisor does not expose RAPL \
                 through perf)",
                path.display()
            )
        );
        assert!(e.fix.is_some());
        // open() gives the same answer.
        let ctx = OpenContext {
            root: SysRoot::new(t.path()),
            topology: one_package(),
            cpu_watts: Default::default(),
            machine_busy: None,
            nvml: Default::default(),
            command_pids: None,
            ipmi: Default::default(),
        };
        assert_eq!(PerfSource::open(&ctx).err(), Some(e));
    }

    #[test]
    fn scales_outside_zero_to_one_joule_per_count_are_invalid() {
        let topo = one_package();
        for bad_scale in ["1.5", "1e300", "1.0000001", "-0"] {
            let t = tempfile::tempdir().unwrap();
            pmu(
                t.path(),
                "power",
                "19",
                "0",
                &[("energy-pkg", "event=0x02", bad_scale, "Joules")],
            );
            let e = expect_invalid(t.path(), &topo, "events/energy-pkg.scale");
            assert!(e.reason.contains("(0, 1]"), "{}", e.reason);
        }
        // 1 J per count is the bound itself; tiny scales are fine.
        for good in ["1", "1e-300"] {
            let t = tempfile::tempdir().unwrap();
            pmu(
                t.path(),
                "power",
                "19",
                "0",
                &[("energy-pkg", "event=0x02", good, "Joules")],
            );
            let plan = discover(&SysRoot::new(t.path()), &topo).unwrap();
            assert_eq!(plan.domains[0].scale, good.parse::<f64>().unwrap());
        }
    }

    #[test]
    fn malformed_files_are_invalid_and_named() {
        let ok = [("energy-pkg", "event=0x02", SCALE, "Joules")];
        let topo = one_package();

        let t = tempfile::tempdir().unwrap();
        pmu(t.path(), "power", "nineteen\n", "0", &ok);
        let e = expect_invalid(t.path(), &topo, "power/type");
        assert!(e.reason.contains("\"nineteen\""), "{}", e.reason);

        let t = tempfile::tempdir().unwrap();
        pmu(t.path(), "power", "-3", "0", &ok);
        expect_invalid(t.path(), &topo, "power/type");

        let t = tempfile::tempdir().unwrap();
        pmu(t.path(), "power", "19", "zero\n", &ok);
        let e = expect_invalid(t.path(), &topo, "power/cpumask");
        assert!(e.reason.contains("\"zero\""), "{}", e.reason);

        let t = tempfile::tempdir().unwrap();
        pmu(t.path(), "power", "19", "", &ok);
        expect_invalid(t.path(), &topo, "power/cpumask");

        for bad_event in [
            "event=banana",
            "config=0x2",
            "",
            "event=",
            "event=0x",
            "ev ent=1",
            "event=0x1ff",
        ] {
            let t = tempfile::tempdir().unwrap();
            pmu(
                t.path(),
                "power",
                "19",
                "0",
                &[("energy-pkg", bad_event, SCALE, "Joules")],
            );
            expect_invalid(t.path(), &topo, "events/energy-pkg");
        }

        for bad_scale in ["", "lots", "NaN", "inf", "-2.3e-10", "0"] {
            let t = tempfile::tempdir().unwrap();
            pmu(
                t.path(),
                "power",
                "19",
                "0",
                &[("energy-pkg", "event=0x02", bad_scale, "Joules")],
            );
            expect_invalid(t.path(), &topo, "events/energy-pkg.scale");
        }

        // Missing scale file.
        let t = tempfile::tempdir().unwrap();
        pmu(t.path(), "power", "19", "0", &ok);
        fs::remove_file(
            t.path()
                .join("sys/bus/event_source/devices/power/events/energy-pkg.scale"),
        )
        .unwrap();
        expect_invalid(t.path(), &topo, "events/energy-pkg.scale");

        // Missing type file.
        let t = tempfile::tempdir().unwrap();
        pmu(t.path(), "power", "19", "0", &ok);
        fs::remove_file(t.path().join("sys/bus/event_source/devices/power/type")).unwrap();
        expect_invalid(t.path(), &topo, "power/type");

        // A non-zero term with no format file to place it.
        let t = tempfile::tempdir().unwrap();
        pmu(
            t.path(),
            "power",
            "19",
            "0",
            &[("energy-pkg", "event=0x02,umask=0x3", SCALE, "Joules")],
        );
        expect_invalid(t.path(), &topo, "format/umask");

        // A garbage format file.
        let t = tempfile::tempdir().unwrap();
        pmu(t.path(), "power", "19", "0", &ok);
        fs::write(
            t.path()
                .join("sys/bus/event_source/devices/power/format/event"),
            "what",
        )
        .unwrap();
        expect_invalid(t.path(), &topo, "format/event");
    }

    #[test]
    fn event_terms() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        fs::create_dir_all(dir.join("format")).unwrap();
        let p = dir.join("ev");
        // No format file: event goes at bit 0.
        assert_eq!(parse_event_config(dir, &p, "event=0x02\n").unwrap(), 2);
        assert_eq!(parse_event_config(dir, &p, "event=2").unwrap(), 2);
        assert_eq!(
            parse_event_config(dir, &p, "event=0X1f , umask=0x0").unwrap(),
            0x1f
        );
        fs::write(dir.join("format/event"), "config:0-7\n").unwrap();
        fs::write(dir.join("format/umask"), "config:8-15\n").unwrap();
        fs::write(dir.join("format/edge"), "config:18\n").unwrap();
        assert_eq!(
            parse_event_config(dir, &p, "event=0x02,umask=0x3").unwrap(),
            0x302
        );
        assert_eq!(
            parse_event_config(dir, &p, "event=0x02,edge").unwrap(),
            0x40002
        );
        assert!(parse_event_config(dir, &p, "umask=0x3").is_err());
        assert!(parse_event_config(dir, &p, "event=0x100").is_err());
        assert_eq!(parse_format("config:0-63"), Some((0, 63)));
        assert_eq!(parse_format("config1:0-7"), None);
        assert_eq!(parse_format("config:9-3"), None);
        assert_eq!(parse_format("config:64"), None);
    }

    #[test]
    fn non_joules_unit_is_skipped_with_a_note() {
        let t = tempfile::tempdir().unwrap();
        pmu(
            t.path(),
            "power",
            "19",
            "0",
            &[
                ("energy-pkg", "event=0x02", SCALE, "Joules\n"),
                ("energy-ram", "event=0x03", SCALE, "Watts\n"),
                ("energy-wobble", "event=0x09", SCALE, "Joules\n"),
            ],
        );
        let plan = discover(&SysRoot::new(t.path()), &one_package()).unwrap();
        assert_eq!(plan.domains.len(), 1);
        assert_eq!(plan.domains[0].domain.name, "package-0");
        assert!(
            plan.notes
                .iter()
                .any(|n| n.contains("energy-ram") && n.contains("Watts"))
        );
        assert!(
            plan.notes
                .iter()
                .any(|n| n.contains("energy-wobble") && n.contains("unknown"))
        );
    }

    #[test]
    fn cpumask_cpu_unknown_to_topology_takes_its_position() {
        let t = tempfile::tempdir().unwrap();
        pmu(
            t.path(),
            "power",
            "19",
            "0,36",
            &[("energy-pkg", "event=0x02", SCALE, "Joules")],
        );
        // A topology that knows CPU 0 only (no topology files for 36).
        let plan = discover(
            &SysRoot::new(t.path()),
            &Topology::from_packages(vec![Some(0)]),
        )
        .unwrap();
        let names: Vec<_> = plan
            .domains
            .iter()
            .map(|d| d.domain.name.as_str())
            .collect();
        assert_eq!(names, vec!["package-0", "package-1"]);
        assert_eq!(plan.notes.len(), 1, "{:?}", plan.notes);
    }

    #[test]
    fn multi_die_cpumask_sums_into_the_package() {
        let t = tempfile::tempdir().unwrap();
        // One CPU per die, two dies per package.
        pmu(
            t.path(),
            "power",
            "19",
            "0,24,48,72",
            &[("energy-pkg", "event=0x02", SCALE, "Joules")],
        );
        let topo = Topology::from_packages((0..96).map(|c| Some(c / 48)).collect());
        let plan = discover(&SysRoot::new(t.path()), &topo).unwrap();
        let s = summary(&plan);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].0, "package-0");
        assert_eq!(s[0].4, vec![0, 24]);
        assert_eq!(s[1].4, vec![48, 72]);
    }

    #[test]
    fn eacces_is_permission_with_paranoid_and_fix() {
        for errno in [libc::EACCES, libc::EPERM] {
            let e = classify_open_error(
                &io::Error::from_raw_os_error(errno),
                "power/energy-pkg/",
                0,
                Some("2"),
            );
            assert_eq!(e.kind, UnavailableKind::Permission);
            assert_eq!(
                e.reason,
                "perf_event_open(power/energy-pkg/, cpu 0): permission denied \
                 (kernel.perf_event_paranoid = 2; system-wide events need CAP_PERFMON or a \
                 paranoid level of 0 or lower)"
            );
            assert_eq!(e.fix.as_deref(), Some(PERMISSION_FIX));
            assert!(e.fix.as_deref().unwrap().contains("perf_event_paranoid=0"));
            assert!(e.fix.as_deref().unwrap().contains("cap_perfmon"));
        }
        let e = classify_open_error(
            &io::Error::from_raw_os_error(libc::EACCES),
            "power/energy-pkg/",
            36,
            None,
        );
        assert!(
            e.reason.contains("cpu 36") && e.reason.contains("= unknown"),
            "{}",
            e.reason
        );
    }

    #[test]
    fn other_errnos_are_classified() {
        let cls = |errno| {
            classify_open_error(
                &io::Error::from_raw_os_error(errno),
                "power/energy-ram/",
                1,
                Some("2"),
            )
        };
        for errno in [libc::ENOENT, libc::ENODEV, libc::EOPNOTSUPP] {
            let e = cls(errno);
            assert_eq!(e.kind, UnavailableKind::NotPresent, "{errno}");
            assert!(
                e.reason
                    .starts_with("perf_event_open(power/energy-ram/, cpu 1): ")
            );
            let text = io::Error::from_raw_os_error(errno).to_string();
            assert!(e.reason.contains(&text), "{} lacks {text}", e.reason);
        }
        assert_eq!(cls(libc::EINVAL).kind, UnavailableKind::Invalid);
        assert!(cls(libc::EINVAL).reason.contains("Invalid argument"));
        assert_eq!(cls(libc::EMFILE).kind, UnavailableKind::Invalid);
    }

    #[test]
    fn paranoid_from_fake_root_or_real() {
        let t = tempfile::tempdir().unwrap();
        let root = SysRoot::new(t.path());
        // No fake file: the real one (when this system has it).
        let real = fs::read_to_string(PARANOID_PATH)
            .ok()
            .map(|s| s.trim().to_string());
        assert_eq!(read_paranoid(&root), real);
        fs::create_dir_all(t.path().join("proc/sys/kernel")).unwrap();
        fs::write(t.path().join("proc/sys/kernel/perf_event_paranoid"), "3\n").unwrap();
        assert_eq!(read_paranoid(&root).as_deref(), Some("3"));
    }

    // --- The real syscall, through the software PMU ---------------------------------

    const SW_TYPE: u32 = sys::bindings::PERF_TYPE_SOFTWARE;
    const SW_CPU_CLOCK: u64 = sys::bindings::PERF_COUNT_SW_CPU_CLOCK as u64;

    fn spin(ms: u64) {
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(ms) {
            std::hint::spin_loop();
        }
    }

    #[test]
    #[cfg_attr(
        not(probe_perf_events),
        ignore = "needs perf_event_open of a system-wide software counter (probe_perf_events): root, CAP_PERFMON or sysctl kernel.perf_event_paranoid=0, and no seccomp filter against perf"
    )]
    fn software_counter_advances() {
        let mut c = match PerfCounter::open(SW_TYPE, SW_CPU_CLOCK, 0) {
            Ok(c) => c,
            Err(e) => panic!("perf_event_open(cpu-clock, cpu 0): {e}"),
        };
        assert_eq!(c.cpu(), 0);
        let a = c.read().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = c.read().unwrap();
        // cpu-clock counts nanoseconds the event is active on CPU 0: about wall time.
        assert!(b > a, "{a} -> {b}");
        assert!(b - a >= 5_000_000, "only {} ns in 20 ms", b - a);
    }

    fn sw_plan(cpus: Vec<usize>) -> PmuPlan {
        PmuPlan {
            domains: vec![
                PlannedDomain {
                    domain: Domain::new(DomainKind::Package, Some(0), SourceKind::Perf),
                    pmu: "software".into(),
                    event: "cpu-clock".into(),
                    type_: SW_TYPE,
                    config: SW_CPU_CLOCK,
                    scale: 1e-9,
                    cpus: cpus.clone(),
                },
                PlannedDomain {
                    domain: Domain::new(DomainKind::Psys, None, SourceKind::Perf),
                    pmu: "software".into(),
                    event: "cpu-clock".into(),
                    type_: SW_TYPE,
                    config: SW_CPU_CLOCK,
                    scale: 1e-9,
                    cpus: vec![0],
                },
            ],
            notes: vec![],
        }
    }

    fn counter(r: &Result<Reading, ReadError>) -> (u64, f64) {
        match r {
            Ok(Reading::Counter {
                value,
                wrap: Wrap::Full64,
                joules_per_unit,
            }) => (*value, *joules_per_unit),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    #[cfg_attr(
        not(probe_perf_events),
        ignore = "needs perf_event_open of a system-wide software counter (probe_perf_events): root, CAP_PERFMON or sysctl kernel.perf_event_paranoid=0, and no seccomp filter against perf"
    )]
    fn source_reads_a_software_plan() {
        let n_cpus = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(4);
        let cpus: Vec<usize> = (0..n_cpus).collect();
        let mut src = match PerfSource::from_plan(&sw_plan(cpus.clone()), &SysRoot::default()) {
            Ok(s) => s,
            Err(u) => panic!("{}", u.explain()),
        };
        assert_eq!(src.kind(), SourceKind::Perf);
        let names: Vec<_> = src.domains().iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, vec!["package-0", "psys"]);
        let mut out = Vec::with_capacity(2);
        src.read(&mut out);
        assert_eq!(out.len(), 2);
        let (a_sum, scale) = counter(&out[0]);
        let (a_one, _) = counter(&out[1]);
        assert_eq!(scale, 1e-9);
        spin(30);
        std::thread::sleep(std::time::Duration::from_millis(30));
        let cap = out.capacity();
        src.read(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out.capacity(), cap);
        let (b_sum, _) = counter(&out[0]);
        let (b_one, _) = counter(&out[1]);
        let (d_sum, d_one) = (b_sum.wrapping_sub(a_sum), b_one.wrapping_sub(a_one));
        assert!(
            d_one >= 30_000_000,
            "cpu 0 advanced only {d_one} ns in 60 ms"
        );
        // The summed domain counts every listed CPU's clock: about n_cpus times one.
        let ratio = d_sum as f64 / d_one as f64;
        assert!(
            ratio > n_cpus as f64 * 0.7 && ratio < n_cpus as f64 * 1.3,
            "sum over {n_cpus} CPUs is {ratio} times one CPU"
        );
        eprintln!("software plan: {n_cpus} CPUs, {d_sum} ns summed, {d_one} ns on cpu 0");
    }

    #[test]
    #[cfg_attr(
        not(probe_perf_events),
        ignore = "needs perf_event_open of a system-wide software counter (probe_perf_events): root, CAP_PERFMON or sysctl kernel.perf_event_paranoid=0, and no seccomp filter against perf"
    )]
    fn open_errors_drop_the_domain_or_fail() {
        // A type no PMU has: the kernel answers ENOENT. With a good domain beside it, the
        // bad one is dropped with a note; alone, its error is returned.
        let mut plan = sw_plan(vec![0]);
        plan.domains[1].type_ = 0x7fff_fff0;
        plan.domains[1].pmu = "power".into();
        plan.domains[1].event = "energy-psys".into();
        match PerfSource::from_plan(&plan, &SysRoot::default()) {
            Ok(src) => {
                assert_eq!(src.domains().len(), 1);
                assert!(
                    src.warnings()
                        .iter()
                        .any(|n| n
                            .contains("psys skipped: perf_event_open(power/energy-psys/, cpu 0)")),
                    "{:?}",
                    src.warnings()
                );
            }
            Err(u) => panic!("{}", u.explain()),
        }
        plan.domains.remove(0);
        let e = PerfSource::from_plan(&plan, &SysRoot::default())
            .err()
            .unwrap();
        assert_ne!(e.kind, UnavailableKind::Permission);
        assert!(
            e.reason
                .starts_with("perf_event_open(power/energy-psys/, cpu 0): "),
            "{}",
            e.reason
        );
    }

    #[test]
    fn real_machine_open_never_panics() {
        let ctx = OpenContext {
            root: SysRoot::default(),
            topology: Topology::read(&SysRoot::default()),
            cpu_watts: Default::default(),
            machine_busy: None,
            nvml: Default::default(),
            command_pids: None,
            ipmi: Default::default(),
        };
        match PerfSource::open(&ctx) {
            Ok(mut s) => {
                let mut out = Vec::new();
                s.read(&mut out);
                assert_eq!(out.len(), s.domains().len());
                eprintln!("perf power PMU here: {:?}", s.domains());
            }
            Err(u) => eprintln!("perf power PMU here: {}", u.explain()),
        }
    }
}
