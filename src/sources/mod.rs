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

pub mod estimate;
pub mod msr;
pub mod perf;
pub mod powercap;

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
}

impl SourceKind {
    /// All kinds, in the order `auto` tries them.
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
        }
    }
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
        }
    }

    pub fn parse(s: &str) -> Option<DomainKind> {
        Some(match s {
            "package" | "pkg" => DomainKind::Package,
            "core" | "cores" => DomainKind::Core,
            "uncore" | "gpu" => DomainKind::Uncore,
            "dram" | "ram" => DomainKind::Dram,
            "psys" => DomainKind::Psys,
            "estimate" => DomainKind::Estimate,
            _ => return None,
        })
    }

    /// Whether energy of this kind is added into the run's total. Core and uncore are
    /// already inside the package counter, psys overlaps everything: both stay out.
    pub fn in_total(self) -> bool {
        matches!(
            self,
            DomainKind::Package | DomainKind::Dram | DomainKind::Estimate
        )
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
}

impl Domain {
    pub fn new(kind: DomainKind, socket: Option<u32>, source: SourceKind) -> Domain {
        Domain {
            name: domain_name(kind, socket),
            kind,
            socket,
            source,
            estimated: kind == DomainKind::Estimate,
            max_power_w: kind.plausible_max_w(),
        }
    }

    /// The same domain with another plausible maximum power (watts).
    pub fn with_max_power(mut self, watts: f64) -> Domain {
        self.max_power_w = watts;
        self
    }

    pub fn in_total(&self) -> bool {
        self.kind.in_total()
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
}

/// A domain that could not be read on one tick.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ReadError {
    pub message: String,
}

impl ReadError {
    pub fn new(message: impl Into<String>) -> ReadError {
        ReadError {
            message: message.into(),
        }
    }
}

/// The contract every energy interface implements.
pub trait Source: Send {
    fn kind(&self) -> SourceKind;

    /// The domains this source reads, in the order `read` fills them.
    fn domains(&self) -> &[Domain];

    /// Read every domain now. `out` is cleared and then holds exactly one entry per
    /// domain, in `domains()` order. Called on every tick: no allocation on success.
    fn read(&mut self, out: &mut Vec<Result<Reading, ReadError>>);

    /// Caveats found when opening, for the report (e.g. a counter whose wrap range is
    /// hidden, so wraps cannot be corrected).
    fn warnings(&self) -> &[String] {
        &[]
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
}

impl OpenContext {
    /// The context for a hardware root: its topology read from it, the estimate's default
    /// coefficients.
    pub fn for_root(root: SysRoot) -> OpenContext {
        OpenContext {
            topology: Topology::read(&root),
            root,
            cpu_watts: estimate::CpuWatts::default(),
        }
    }
}

/// Open one interface.
pub fn open(kind: SourceKind, ctx: &OpenContext) -> Result<Box<dyn Source>, Unavailable> {
    Ok(match kind {
        SourceKind::Powercap => Box::new(powercap::PowercapSource::open(ctx)?),
        SourceKind::Perf => Box::new(perf::PerfSource::open(ctx)?),
        SourceKind::Msr => Box::new(msr::MsrSource::open(ctx)?),
        SourceKind::Estimate => Box::new(estimate::EstimateSource::open(ctx)?),
    })
}
