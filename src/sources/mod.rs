//! Energy sources: one module per hardware interface, all behind [`Source`].
//!
//! A source only reads. It returns, for each of its domains, a raw cumulative counter
//! (with its wrap behaviour and unit), an instantaneous power, or the estimate's model
//! inputs (cumulative busy CPU time and coefficients). It never does time arithmetic:
//! [`crate::counter`] turns readings into joules on the sampler's clock, and rejects the
//! implausible ones against each domain's [`Domain::max_power_w`].
//!
//! Every source is opened from a [`SysRoot`], so tests point it at a fake tree that
//! behaves like sysfs and the production code path is the one under test.

pub mod battery;
pub mod device_use;
pub mod estimate;
pub mod hwmon;
pub mod ipmi;
pub mod msr;
pub mod nvml;
pub mod perf;
pub mod powercap;

// GPUs (issue 9): usage from a source, the command's PIDs, how a domain was measured.
pub use device_use::{CommandPids, IntervalUsage, MeasureDetail, UsageMethod};

use std::fmt;

use serde::Serialize;

use crate::sysroot::SysRoot;
use crate::topology::Topology;

/// Which interface a domain is read through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Perf,
    Powercap,
    Msr,
    Estimate,
    /// `/sys/class/hwmon`: power meters, GPU and PSU sensors (`sources/hwmon.rs`).
    Hwmon,
    /// `/sys/class/power_supply/BAT*` (`sources/battery.rs`).
    Battery,
    /// NVIDIA GPUs through NVML, `libnvidia-ml.so` loaded at run time (`sources/nvml.rs`).
    Nvml,
    // Chassis through IPMI (issue 10): `sources/ipmi/`.
    /// The BMC in-band: `/dev/ipmi0` and the OpenIPMI ioctls, DCMI Get Power Reading.
    Dcmi,
    /// A remote BMC (`--bmc HOST`): IPMI 2.0 lanplus through `ipmitool -E`.
    #[serde(rename = "bmc")]
    IpmiLan,
    /// `ipmitool` or freeipmi's `ipmi-dcmi`, their output parsed.
    #[serde(rename = "tools")]
    IpmiTool,
}

impl SourceKind {
    /// The CPU interfaces, in the order `auto` tries them.
    pub const AUTO_ORDER: [SourceKind; 4] = [
        SourceKind::Perf,
        SourceKind::Powercap,
        SourceKind::Msr,
        SourceKind::Estimate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Perf => "perf",
            SourceKind::Powercap => "powercap",
            SourceKind::Msr => "msr",
            SourceKind::Estimate => "estimate",
            SourceKind::Hwmon => "hwmon",
            SourceKind::Battery => "battery",
            SourceKind::Nvml => "nvml",
            SourceKind::Dcmi => "dcmi",
            SourceKind::IpmiLan => "bmc",
            SourceKind::IpmiTool => "tools",
        }
    }
}

/// The families of devices a run measures, each through at most one interface
/// (`joulerun list` shows them all). `--source` chooses the CPU's; each other category has
/// its own switch (`--gpu`, `--chassis`, `--battery`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    /// CPU packages, their cores, uncore and DRAM; psys; the estimate.
    Cpu,
    /// Graphics cards.
    Gpu,
    /// The whole machine at the wall: a BMC, a power meter, the power supplies.
    Chassis,
    /// A laptop's battery while it discharges: the whole machine, too.
    Battery,
    /// Other power sensors (hwmon chips that are neither a GPU nor a PSU): shown, never
    /// added, because what they measure is unknown.
    Meter,
}

impl Category {
    pub const ALL: [Category; 5] = [
        Category::Cpu,
        Category::Gpu,
        Category::Chassis,
        Category::Battery,
        Category::Meter,
    ];

    /// How a heading names it.
    pub fn title(self) -> &'static str {
        match self {
            Category::Cpu => "CPU",
            Category::Gpu => "GPU",
            Category::Chassis => "Chassis",
            Category::Battery => "Battery",
            Category::Meter => "Other power meters",
        }
    }

    /// The command-line switch that picks its interface.
    pub fn switch(self) -> &'static str {
        match self {
            Category::Cpu => "source",
            Category::Gpu => "gpu",
            Category::Chassis => "chassis",
            Category::Battery => "battery",
            Category::Meter => "meters",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Category::Cpu => "cpu",
            Category::Gpu => "gpu",
            Category::Chassis => "chassis",
            Category::Battery => "battery",
            Category::Meter => "meter",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The physical thing a domain measures. Attribution splits a device's energy by the
/// usage that drives it (CPU time for a socket, GPU utilisation for a GPU); a device
/// without a usage signal of its own (the chassis, a battery, a meter) gets a modelled
/// share (docs/attribution.md).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Device {
    /// A CPU package (socket), with its cores, uncore and memory.
    Socket { index: u32 },
    /// The CPUs of the machine as a whole (the estimate, psys, a socket-less domain).
    Machine,
    /// A graphics card: its index in the run, and its identity when known.
    Gpu {
        index: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uuid: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// The whole machine at the wall (BMC, power meter, PSUs).
    Chassis,
    /// A battery (`BAT0`).
    Battery { name: String },
    /// Another power sensor, named by its driver (and label).
    Meter { name: String },
}

impl Device {
    pub fn category(&self) -> Category {
        match self {
            Device::Socket { .. } | Device::Machine => Category::Cpu,
            Device::Gpu { .. } => Category::Gpu,
            Device::Chassis => Category::Chassis,
            Device::Battery { .. } => Category::Battery,
            Device::Meter { .. } => Category::Meter,
        }
    }

    /// A compact identifier without spaces or commas, for CSV and metrics:
    /// `socket:0`, `machine`, `gpu:0`, `chassis`, `battery:BAT0`, `meter:ina226`.
    pub fn id(&self) -> String {
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        };
        match self {
            Device::Socket { index } => format!("socket:{index}"),
            Device::Machine => "machine".to_string(),
            Device::Gpu { index, .. } => format!("gpu:{index}"),
            Device::Chassis => "chassis".to_string(),
            Device::Battery { name } => format!("battery:{}", clean(name)),
            Device::Meter { name } => format!("meter:{}", clean(name)),
        }
    }

    /// How reports name it: `socket 0`, `machine`, `GPU 0 (Radeon RX 7900, 1a2b3c4d)`,
    /// `chassis`, `battery BAT0`, `meter ina3221`.
    pub fn label(&self) -> String {
        match self {
            Device::Socket { index } => format!("socket {index}"),
            Device::Machine => "machine".to_string(),
            Device::Gpu { index, uuid, name } => {
                let mut extra: Vec<String> = Vec::new();
                if let Some(n) = name {
                    extra.push(n.clone());
                }
                if let Some(u) = uuid {
                    extra.push(short_uuid(u));
                }
                if extra.is_empty() {
                    format!("GPU {index}")
                } else {
                    format!("GPU {index} ({})", extra.join(", "))
                }
            }
            Device::Chassis => "chassis".to_string(),
            Device::Battery { name } => format!("battery {name}"),
            Device::Meter { name } => format!("meter {name}"),
        }
    }
}

/// The first 8 hex digits of a GPU uuid (`GPU-1a2b3c4d-...` gives `1a2b3c4d`), enough to
/// tell cards apart in a table.
pub fn short_uuid(u: &str) -> String {
    let hex: String = u
        .trim_start_matches("GPU-")
        .trim_start_matches("MIG-")
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(8)
        .collect();
    if hex.is_empty() { u.to_string() } else { hex }
}

/// Where a domain sits in the machine: what the total is made of, and what is counted
/// inside something else. One function ([`crate::report::totals`]) turns this into the
/// total and "rest of system"; nothing else decides what adds up.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "place", content = "parent", rename_all = "snake_case")]
pub enum Place {
    /// The whole machine (the chassis at the wall, a battery that powers everything):
    /// when measured, it is the total, and every `Part` is inside it.
    Whole,
    /// A top-level part of the machine (a package, its DRAM, a GPU, the estimate): the
    /// total is the sum of the parts when no `Whole` is measured.
    Part,
    /// Inside another domain (core and uncore inside their package; an integrated GPU's
    /// meter inside the uncore): shown, never added. Holds the parent's name.
    Inside(String),
    /// Overlaps several parts (psys covers the whole SoC and more; an APU's GPU meter
    /// covers the CPU package too; an unknown meter): shown, never added.
    Overlaps,
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a domain measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum DomainKind {
    /// A whole CPU package (socket), or one die of it (`package-0-die-1`).
    Package,
    /// The cores of a package (RAPL PP0). Part of the package.
    Core,
    /// The uncore / integrated GPU of a package (RAPL PP1). Part of the package.
    Uncore,
    /// Memory attached to a package. Not part of the package counter.
    Dram,
    /// The whole platform (SoC + more) on client parts. Overlaps everything else.
    Psys,
    /// A modelled value, not a measurement.
    Estimate,
    /// A graphics card (its board, or its GPU chip when that is all the driver gives).
    Gpu,
    /// The whole machine at the wall, or one power supply's input.
    Chassis,
    /// A battery's discharge.
    Battery,
    /// Another power sensor.
    Meter,
}

impl DomainKind {
    /// Short name used in `-e/--domains` and in domain names (`core-0`).
    pub fn name(self) -> &'static str {
        match self {
            DomainKind::Package => "package",
            DomainKind::Core => "core",
            DomainKind::Uncore => "uncore",
            DomainKind::Dram => "dram",
            DomainKind::Psys => "psys",
            DomainKind::Estimate => "estimate",
            DomainKind::Gpu => "gpu",
            DomainKind::Chassis => "chassis",
            DomainKind::Battery => "battery",
            DomainKind::Meter => "meter",
        }
    }

    pub fn parse(s: &str) -> Option<DomainKind> {
        Some(match s {
            "package" | "pkg" => DomainKind::Package,
            "core" | "cores" => DomainKind::Core,
            "uncore" => DomainKind::Uncore,
            "dram" | "ram" => DomainKind::Dram,
            "psys" => DomainKind::Psys,
            "estimate" => DomainKind::Estimate,
            "gpu" => DomainKind::Gpu,
            "chassis" => DomainKind::Chassis,
            "battery" => DomainKind::Battery,
            "meter" => DomainKind::Meter,
            _ => return None,
        })
    }

    /// Where a domain of this kind sits when its source says nothing more: package,
    /// dram, the estimate and GPUs are parts; core and uncore are inside their package
    /// (`socket`); psys and meters overlap; the chassis and a battery are the whole.
    pub fn default_place(self, socket: Option<u32>) -> Place {
        match self {
            DomainKind::Package | DomainKind::Dram | DomainKind::Estimate | DomainKind::Gpu => {
                Place::Part
            }
            DomainKind::Core | DomainKind::Uncore => {
                Place::Inside(domain_name(DomainKind::Package, socket))
            }
            DomainKind::Psys | DomainKind::Meter => Place::Overlaps,
            DomainKind::Chassis | DomainKind::Battery => Place::Whole,
        }
    }

    /// Whether energy of this kind is a part added into the sum of parts (see [`Place`]).
    /// Core and uncore are already inside the package counter, psys overlaps everything.
    pub fn in_total(self) -> bool {
        self.default_place(None) == Place::Part
    }

    /// The plausible maximum power of one domain of this kind, watts: above it a reading
    /// is a glitch, not energy (docs/sources.md, "Glitches and plausibility"). Per socket
    /// (or die) for package, core, uncore and dram; the whole platform for psys. About
    /// twice the largest real value: today's largest server sockets are ~500 W TDP.
    /// The estimate's own ceiling comes from its model ([`Domain::with_max_power`]); this
    /// is only its fallback, 1.5 times the largest `--cpu-watts` accepted.
    pub fn plausible_max_w(self) -> f64 {
        match self {
            DomainKind::Package | DomainKind::Core => 1000.0,
            DomainKind::Uncore | DomainKind::Dram => 500.0,
            DomainKind::Psys => 2000.0,
            DomainKind::Estimate => 1.5 * estimate::MAX_CPU_WATTS,
            // The largest accelerator boards draw about 1 kW (1.2 kW for the newest).
            DomainKind::Gpu => 2000.0,
            // A full rack-scale chassis at the wall stays below this; one PSU far below.
            DomainKind::Chassis => 20_000.0,
            DomainKind::Battery | DomainKind::Meter => 2000.0,
        }
    }
}

/// One measured thing, as the report names it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Domain {
    /// Display name, the same whichever interface fed it: `package-0`, `core-0`,
    /// `uncore-0`, `dram-1`, `psys`, `package-0-die-1`, `cpu (estimated)`.
    pub name: String,
    pub kind: DomainKind,
    /// Package (socket) index, when the domain belongs to one.
    pub socket: Option<u32>,
    pub source: SourceKind,
    /// True for modelled values. Reports say "estimated" wherever this is set.
    pub estimated: bool,
    /// The plausible maximum power, watts: a reading implying more is a glitch
    /// ([`crate::counter`]). [`DomainKind::plausible_max_w`] unless the source knows
    /// better (the estimate: its model's maximum times 1.5).
    #[serde(skip)]
    pub max_power_w: f64,
    /// The device it measures (a socket, a GPU, the chassis, ...).
    pub device: Device,
    /// Where it sits: the whole machine, a part of it, inside another domain, or
    /// overlapping several.
    #[serde(flatten)]
    pub place: Place,
    /// How it is measured, when its source says (NVML: energy counter or power, and the
    /// readings' resolution).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<MeasureDetail>,
}

impl Domain {
    /// A CPU-category domain: its device is its socket (or the machine), its place the
    /// kind's default.
    pub fn new(kind: DomainKind, socket: Option<u32>, source: SourceKind) -> Domain {
        Domain {
            name: domain_name(kind, socket),
            kind,
            socket,
            source,
            estimated: kind == DomainKind::Estimate,
            max_power_w: kind.plausible_max_w(),
            device: match socket {
                Some(index) => Device::Socket { index },
                None => Device::Machine,
            },
            place: kind.default_place(socket),
            detail: None,
        }
    }

    /// A domain of any device, named by its source.
    pub fn on_device(
        name: impl Into<String>,
        kind: DomainKind,
        device: Device,
        source: SourceKind,
    ) -> Domain {
        let socket = match device {
            Device::Socket { index } => Some(index),
            _ => None,
        };
        Domain {
            name: name.into(),
            kind,
            socket,
            source,
            estimated: false,
            max_power_w: kind.plausible_max_w(),
            place: kind.default_place(socket),
            device,
            detail: None,
        }
    }

    /// The same domain with how it is measured.
    pub fn with_detail(mut self, detail: MeasureDetail) -> Domain {
        self.detail = Some(detail);
        self
    }

    /// The same domain in another place.
    pub fn placed(mut self, place: Place) -> Domain {
        self.place = place;
        self
    }

    pub fn category(&self) -> Category {
        self.device.category()
    }

    /// The same domain with another plausible maximum power (watts).
    pub fn with_max_power(mut self, watts: f64) -> Domain {
        self.max_power_w = watts;
        self
    }

    /// Whether it is one of the parts whose sum is the total when no whole-machine
    /// domain is measured.
    pub fn in_total(&self) -> bool {
        self.place == Place::Part
    }
}

/// The canonical domain name for a kind on a socket: `package-0`, `core-1`, `dram-0`,
/// `psys`. All sources use this so reports look alike whichever interface fed them.
pub fn domain_name(kind: DomainKind, socket: Option<u32>) -> String {
    match (kind, socket) {
        (DomainKind::Estimate, _) => "cpu (estimated)".to_string(),
        (k, Some(s)) => format!("{}-{}", k.name(), s),
        (k, None) => k.name().to_string(),
    }
}

/// How a cumulative counter wraps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wrap {
    /// Values run from 0 up to (not including, within one unit) this modulus, then
    /// restart at 0. Powercap's `max_energy_range_uj` (which `energy_uj` can equal: both
    /// are 2^32 - 1 units), MSR's 2^32. A value above it is a glitch.
    At(u64),
    /// A full 64-bit counter (perf widens RAPL to 64 bits): wrapping subtraction, which
    /// in practice is never plausible, so a decrease is a glitch.
    Full64,
    /// The range could not be read (some kernels hide `max_energy_range_uj`) or cannot be
    /// trusted. A decrease is then counted as a reset from zero, a lower bound, and
    /// reported as a warning, when that count is itself plausible.
    Unknown,
}

/// One reading of one domain.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reading {
    /// A cumulative counter in raw units.
    Counter {
        value: u64,
        wrap: Wrap,
        joules_per_unit: f64,
    },
    /// A power in watts, instantaneous or averaged by the hardware; integrated over time.
    Power { watts: f64 },
    /// The estimate's model inputs: the machine's cumulative busy CPU time (seconds,
    /// summed over its `cpus` logical CPUs) and the model's whole-machine idle and
    /// full-load watts. [`crate::counter`] turns two of them into joules over the
    /// sampler's clock with [`estimate::model_energy_j`], in f64: the estimate keeps no
    /// clock of its own and no energy in an integer.
    Model {
        busy_cpu_s: f64,
        cpus: u32,
        idle_w: f64,
        max_w: f64,
    },
    /// Nothing new since the last reading: the hardware has not produced another value
    /// yet (a BMC that updates once a second, a counter that steps every 100 ms). Not an
    /// error and not a sample: the accumulator keeps its last value and no time passes
    /// for it.
    Unchanged,
}

/// A domain that could not be read this time.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ReadError {
    pub message: String,
    /// The device is gone for good (unplugged, lost by its driver): the reader stops
    /// asking. Otherwise the next read is tried as usual.
    pub gone: bool,
}

impl ReadError {
    /// A failure worth retrying next time.
    pub fn new(message: impl Into<String>) -> ReadError {
        ReadError {
            message: message.into(),
            gone: false,
        }
    }

    /// The device is gone: no later read will succeed.
    pub fn gone(message: impl Into<String>) -> ReadError {
        ReadError {
            message: message.into(),
            gone: true,
        }
    }
}

/// How often a source is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cadence {
    /// On every tick of the sampling loop, in the loop's own thread. For reads that
    /// take microseconds (a `pread` of an open sysfs file, a perf counter).
    Tick,
    /// Every so often, on a reader thread of its own, whose timestamped samples the tick
    /// collects without ever waiting for them. For reads that can take milliseconds or
    /// block (hwmon drivers that talk to a controller, a BMC, NVML's process queries).
    Every(std::time::Duration),
}

/// The contract every energy interface implements.
pub trait Source: Send {
    fn kind(&self) -> SourceKind;

    /// The domains this source reads, in the order `read` fills them.
    fn domains(&self) -> &[Domain];

    /// Read every domain now. `out` is cleared and then holds exactly one entry per
    /// domain, in `domains()` order. A `Tick` source is read on every tick: no
    /// allocation on success.
    fn read(&mut self, out: &mut Vec<Result<Reading, ReadError>>);

    /// How often to read it (the default: every tick, in the sampling loop).
    fn cadence(&self) -> Cadence {
        Cadence::Tick
    }

    /// Caveats found when opening, for the report (e.g. a counter whose wrap range is
    /// hidden, so wraps cannot be corrected).
    fn warnings(&self) -> &[String] {
        &[]
    }

    /// The command's use of each domain's device over the interval that ended at the
    /// last `read` (one entry per domain, `None` where unknown), for devices with a usage
    /// signal of their own (NVML). Called right after `read`; the default: nothing, and
    /// attribution models the share (docs/attribution.md). An interval spans reads that
    /// returned [`Reading::Unchanged`]: the source sums their usage into the next one.
    fn usage(&self, out: &mut Vec<Option<IntervalUsage>>) {
        out.clear();
    }
}

/// Why an interface cannot be used here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnavailableKind {
    /// The hardware, kernel driver or VM does not expose it.
    NotPresent,
    /// It exists but this user may not read it.
    Permission,
    /// A kernel module must be loaded first.
    ModuleMissing,
    /// It exists but what it holds makes no sense.
    Invalid,
    /// It exists but has nothing to measure now (a battery while on AC power).
    Inactive,
}

/// An interface that cannot be used, with the exact reason and the fix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{source_kind}: {reason}")]
pub struct Unavailable {
    pub source_kind: SourceKind,
    pub kind: UnavailableKind,
    /// What failed, naming the path or call: "open /sys/.../energy_uj: permission denied".
    pub reason: String,
    /// How to make it work, when something can be done.
    pub fix: Option<String>,
}

impl Unavailable {
    pub fn new(
        source_kind: SourceKind,
        kind: UnavailableKind,
        reason: impl Into<String>,
        fix: Option<String>,
    ) -> Unavailable {
        Unavailable {
            source_kind,
            kind,
            reason: reason.into(),
            fix,
        }
    }

    /// Why an interface is unavailable after opening `path` failed with `err`: EACCES and
    /// EPERM are [`UnavailableKind::Permission`] with `permission_fix`; anything else is
    /// [`UnavailableKind::Invalid`], naming the path and the OS error.
    pub fn from_open_error(
        source_kind: SourceKind,
        path: &std::path::Path,
        err: &std::io::Error,
        permission_fix: impl FnOnce() -> String,
    ) -> Unavailable {
        match err.raw_os_error() {
            Some(libc::EACCES) | Some(libc::EPERM) => Unavailable::new(
                source_kind,
                UnavailableKind::Permission,
                format!("cannot read {}: permission denied", path.display()),
                Some(permission_fix()),
            ),
            _ => Unavailable::new(
                source_kind,
                UnavailableKind::Invalid,
                format!("cannot read {}: {err}", path.display()),
                None,
            ),
        }
    }

    /// The reason and the fix on one or two lines, for messages.
    pub fn explain(&self) -> String {
        match &self.fix {
            Some(fix) => format!("{}: {}\n  fix: {}", self.source_kind, self.reason, fix),
            None => format!("{}: {}", self.source_kind, self.reason),
        }
    }
}

/// Everything a source needs to open itself.
#[derive(Clone, Debug)]
pub struct OpenContext {
    pub root: SysRoot,
    pub topology: Topology,
    /// Estimate model coefficients.
    pub cpu_watts: estimate::CpuWatts,
    /// The machine's busy CPU time as the sampler reads it every tick: the estimate uses
    /// it instead of reading `/proc/stat` itself. `None`: the estimate reads its own.
    pub machine_busy: Option<std::sync::Arc<crate::procs::MachineBusy>>,
    /// GPUs (issue 9): which NVML library, which GPUs, and the command's processes as
    /// the sampling loop publishes them (`None`: no command is followed).
    pub nvml: nvml::NvmlOptions,
    pub command_pids: Option<std::sync::Arc<CommandPids>>,
    /// Chassis through IPMI (issue 10): a remote BMC and where tools are looked up.
    pub ipmi: ipmi::IpmiOptions,
}

impl OpenContext {
    /// The context for a hardware root: its topology read from it, the estimate's default
    /// coefficients.
    pub fn for_root(root: SysRoot) -> OpenContext {
        OpenContext {
            topology: Topology::read(&root),
            root,
            cpu_watts: estimate::CpuWatts::default(),
            machine_busy: None,
            nvml: nvml::NvmlOptions::default(),
            command_pids: None,
            ipmi: ipmi::IpmiOptions::default(),
        }
    }
}

/// The chassis interfaces, in the order `auto` tries them: the BMC in-band, a remote BMC
/// (only when `--bmc` names one), the tools, then hwmon (an ACPI power meter, the PSUs).
pub const CHASSIS_ORDER: [SourceKind; 4] = [
    SourceKind::Dcmi,
    SourceKind::IpmiLan,
    SourceKind::IpmiTool,
    SourceKind::Hwmon,
];

/// The interfaces of a category, in the order `auto` tries them.
pub fn interfaces(cat: Category) -> &'static [SourceKind] {
    match cat {
        Category::Cpu => &SourceKind::AUTO_ORDER,
        Category::Gpu => &[SourceKind::Nvml, SourceKind::Hwmon],
        Category::Chassis => &CHASSIS_ORDER,
        Category::Meter => &[SourceKind::Hwmon],
        Category::Battery => &[SourceKind::Battery],
    }
}

/// Open interface `kind` for category `cat`: only that category's domains.
pub fn open_for(
    cat: Category,
    kind: SourceKind,
    ctx: &OpenContext,
) -> Result<Box<dyn Source>, Unavailable> {
    Ok(match (cat, kind) {
        (Category::Cpu, k) if SourceKind::AUTO_ORDER.contains(&k) => return open(k, ctx),
        (Category::Gpu, SourceKind::Nvml) => Box::new(nvml::NvmlSource::open(ctx)?),
        (Category::Gpu, SourceKind::Hwmon) => Box::new(hwmon::HwmonSource::open_gpu(ctx)?),
        (Category::Chassis, SourceKind::Hwmon) => Box::new(hwmon::HwmonSource::open_chassis(ctx)?),
        (Category::Meter, SourceKind::Hwmon) => Box::new(hwmon::HwmonSource::open_meters(ctx)?),
        (Category::Battery, SourceKind::Battery) => Box::new(battery::BatterySource::open(ctx)?),
        (Category::Chassis, SourceKind::Dcmi) => Box::new(ipmi::open_dcmi(ctx)?),
        (Category::Chassis, SourceKind::IpmiLan) => Box::new(ipmi::lan::open_lan(ctx)?),
        (Category::Chassis, SourceKind::IpmiTool) => Box::new(ipmi::tools::open_tools(ctx)?),
        (c, k) => {
            return Err(Unavailable::new(
                k,
                UnavailableKind::Invalid,
                format!("{k} does not measure the {c} category"),
                None,
            ));
        }
    })
}

/// Open one interface.
pub fn open(kind: SourceKind, ctx: &OpenContext) -> Result<Box<dyn Source>, Unavailable> {
    Ok(match kind {
        SourceKind::Powercap => Box::new(powercap::PowercapSource::open(ctx)?),
        SourceKind::Perf => Box::new(perf::PerfSource::open(ctx)?),
        SourceKind::Msr => Box::new(msr::MsrSource::open(ctx)?),
        SourceKind::Estimate => Box::new(estimate::EstimateSource::open(ctx)?),
        SourceKind::Hwmon => Box::new(hwmon::HwmonSource::open_all(ctx)?),
        SourceKind::Battery => Box::new(battery::BatterySource::open(ctx)?),
        SourceKind::Nvml => Box::new(nvml::NvmlSource::open(ctx)?),
        SourceKind::Dcmi => Box::new(ipmi::open_dcmi(ctx)?),
        SourceKind::IpmiLan => Box::new(ipmi::lan::open_lan(ctx)?),
        SourceKind::IpmiTool => Box::new(ipmi::tools::open_tools(ctx)?),
    })
}
