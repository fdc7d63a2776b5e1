//! Attribution: static/dynamic split against a baseline and the command's share, per
//! socket, by CPU time. Pure functions and an accumulator; no I/O.
//!
//! # Rules (applied per tick, per domain)
//!
//! With `E` the energy the domain measured this tick, `B` its calibrated idle power
//! (the baseline), `dt` the tick length:
//!
//! ```text
//! static   = min(B·dt, E)                 (no baseline: static = 0)
//! dynamic  = E − static = max(E − B·dt, 0) (no baseline: dynamic = E)
//! ```
//!
//! `static + dynamic = E` holds on every tick. A tick with `E < B·dt` is *below
//! baseline*: its `dt` is added to `below_baseline_s` and `B·dt − E` to
//! `below_baseline_deficit_j`; it has no dynamic energy.
//!
//! The domain's package (socket) decides whose CPU time counts: a domain with
//! `socket: Some(s)` uses the CPU times of package `s`; a machine-wide domain (`psys`,
//! the estimate, or any domain whose socket is `None` or unknown to the topology) uses the
//! sums over all packages.
//!
//! ```text
//! share            = clamp(tree_cpu / busy_cpu, 0, 1)      (busy_cpu = 0: share = 0)
//! command_dynamic  = dynamic × share
//! occupancy        = clamp(tree_cpu / (cpus × dt), 0, 1)   (cpus = 0: occupancy = 0)
//! command_static   = static × occupancy
//! command_total    = command_dynamic + command_static
//! overhead         = dynamic × min(clamp(self_cpu / busy_machine, 0, 1), 1 − share)
//! unattributed     = dynamic of ticks with busy_cpu = 0
//! others_dynamic   = dynamic − command_dynamic − overhead − unattributed
//! ```
//!
//! * The dynamic share divides by *busy* CPU time (idle excluded), like PowerJoular and
//!   EnergAt; the idle part of the power is the static energy, removed beforehand.
//! * The static share is the fraction of the socket's capacity the command occupied
//!   (time-share × resource-share, as in the Green Software Foundation's SCI): a command
//!   keeping 2 of 8 CPUs busy for the whole tick is charged 25 % of the idle power.
//! * joulerun's own CPU time is never in the tree, but it is in `busy`, so it takes its
//!   part of the dynamic energy away from the command; that part is reported as
//!   `overhead`. Its CPU time is only known machine-wide, so the fraction
//!   `self_cpu / busy` of the whole machine is applied to every domain (and capped so that
//!   command + overhead never exceed the dynamic energy).
//! * Clamping: `/proc/stat` counts busy time in 10 ms clock ticks per CPU, while the tree's
//!   CPU time may come from cgroup `cpu.stat` in µs, so a tick can see `tree > busy`. The
//!   share is then clamped to 1, and the excess CPU time is not carried into later ticks; it
//!   is reported per socket as `clamped_cpu_s` so a report can say how much was cut. The
//!   tree's time in a tick with `busy = 0` is cut the same way and counted there too.
//!   Because both counters are cumulative, their quantisation errors do not grow with run
//!   length: the loss is at most one clock tick per busy CPU per clamped tick.
//! * A tick with `busy = 0` (nothing ran, at the resolution of `/proc/stat`) gives share 0;
//!   its dynamic energy is counted as `unattributed`.

use serde::Serialize;

use crate::procs::TrackMethod;
use crate::sources::{Category, Device, Domain, DomainKind, IntervalUsage, Place, UsageMethod};
use crate::usage::{UsageDelta, UsageHistory, UsagePoint};

/// Everything one tick contributes, for every domain of the run. All values are deltas
/// over this tick, not cumulative values.
#[derive(Clone, Copy, Debug)]
pub struct TickInput<'a> {
    /// Length of the tick, s. A tick with `dt_s <= 0` or a non-finite `dt_s` is ignored.
    pub dt_s: f64,
    /// Energy of each domain this tick, J, in the order of the domains given to
    /// [`Attributor::new`]. `None` when the domain's energy for this tick is unknown (a
    /// failed read, or the first reading after a gap): the domain skips this tick. A
    /// non-finite value is treated as `None`, a negative one as 0.
    pub energy_j: &'a [Option<f64>],
    /// CPU seconds of the command's tree this tick, per package index (position in the
    /// package list given to [`Attributor::new`]). Missing entries count as 0.
    pub tree_cpu_s: &'a [f64],
    /// Busy CPU seconds of the whole machine (every process, joulerun included) this tick,
    /// per package index. Missing entries count as 0.
    pub busy_cpu_s: &'a [f64],
    /// joulerun's own CPU seconds this tick (all threads), machine-wide.
    pub self_cpu_s: f64,
}

/// The result of splitting one tick's energy against a baseline.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Split {
    pub static_j: f64,
    pub dynamic_j: f64,
    /// The tick measured less than the baseline (`energy < baseline·dt`).
    pub below_baseline: bool,
    /// `baseline·dt − energy` when below baseline, else 0.
    pub deficit_j: f64,
}

/// Split one tick's energy into static and dynamic parts.
///
/// `static = min(baseline_w·dt, energy)`, `dynamic = energy − static`; without a baseline
/// everything is dynamic. Negative or non-finite inputs are taken as 0 (no panics, no NaN).
pub fn split_energy(energy_j: f64, baseline_w: Option<f64>, dt_s: f64) -> Split {
    let e = finite_nonneg(energy_j);
    let dt = finite_nonneg(dt_s);
    match baseline_w {
        Some(b) if b.is_finite() => {
            let idle = b.max(0.0) * dt;
            if e < idle {
                Split {
                    static_j: e,
                    dynamic_j: 0.0,
                    below_baseline: true,
                    deficit_j: idle - e,
                }
            } else {
                Split {
                    static_j: idle,
                    dynamic_j: e - idle,
                    below_baseline: false,
                    deficit_j: 0.0,
                }
            }
        }
        _ => Split {
            static_j: 0.0,
            dynamic_j: e,
            below_baseline: false,
            deficit_j: 0.0,
        },
    }
}

/// The command's share of a socket's dynamic energy: `clamp(tree / busy, 0, 1)`, and 0 when
/// `busy` is 0 (or not a positive finite number).
pub fn dynamic_share(tree_cpu_s: f64, busy_cpu_s: f64) -> f64 {
    ratio(tree_cpu_s, busy_cpu_s)
}

/// The command's share of a socket's static (idle) energy: the fraction of the socket's
/// capacity it occupied, `clamp(tree / (cpus × dt), 0, 1)`; 0 when `cpus` or `dt` is 0.
pub fn static_share(tree_cpu_s: f64, cpus: usize, dt_s: f64) -> f64 {
    ratio(tree_cpu_s, cpus as f64 * finite_nonneg(dt_s))
}

fn finite_nonneg(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 { x } else { 0.0 }
}

/// `clamp(num / den, 0, 1)`, 0 when `den` is not a positive finite number.
fn ratio(num: f64, den: f64) -> f64 {
    let num = finite_nonneg(num);
    if den.is_finite() && den > 0.0 {
        (num / den).clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// Energy figures, for one domain, one socket or the run's total.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct EnergySplit {
    /// Energy measured, J.
    pub energy_j: f64,
    /// Idle part, J (0 without a baseline).
    pub static_j: f64,
    /// Part above idle, J.
    pub dynamic_j: f64,
    /// The command's part of the dynamic energy, J.
    pub command_dynamic_j: f64,
    /// The command's part of the static energy (capacity rule), J.
    pub command_static_j: f64,
    /// `command_dynamic_j + command_static_j`.
    pub command_total_j: f64,
    /// `command_dynamic_j / dynamic_j` (0 when there is no dynamic energy).
    pub share: f64,
    /// The dynamic energy joulerun's own CPU time caused, J.
    pub overhead_j: f64,
    /// Dynamic energy of ticks with no busy CPU time at all, J.
    pub unattributed_j: f64,
    /// Dynamic energy left to the other processes of the machine, J.
    pub others_dynamic_j: f64,
    /// Time during which the measured energy was below the baseline, s. For a socket or
    /// the total: time during which at least one of its domains was.
    pub below_baseline_s: f64,
    /// How much energy was missing to reach the baseline on those ticks, J.
    pub below_baseline_deficit_j: f64,
    /// Time covered by this figure's ticks, s.
    pub measured_s: f64,
}

impl EnergySplit {
    fn add_tick(&mut self, t: &DomainTick) {
        self.energy_j += t.split.static_j + t.split.dynamic_j;
        self.static_j += t.split.static_j;
        self.dynamic_j += t.split.dynamic_j;
        self.command_dynamic_j += t.command_dynamic_j;
        self.command_static_j += t.command_static_j;
        self.overhead_j += t.overhead_j;
        self.unattributed_j += t.unattributed_j;
        self.below_baseline_deficit_j += t.split.deficit_j;
    }

    fn finish(&mut self) {
        self.command_total_j = self.command_dynamic_j + self.command_static_j;
        self.share = if self.dynamic_j > 0.0 {
            (self.command_dynamic_j / self.dynamic_j).clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.others_dynamic_j =
            (self.dynamic_j - self.command_dynamic_j - self.overhead_j - self.unattributed_j)
                .max(0.0);
    }
}

/// One tick of one domain, before accumulation.
struct DomainTick {
    split: Split,
    command_dynamic_j: f64,
    command_static_j: f64,
    overhead_j: f64,
    unattributed_j: f64,
}

/// Per-domain result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DomainAttribution {
    pub name: String,
    pub kind: DomainKind,
    /// The domain's socket, `None` for machine-wide domains.
    pub socket: Option<u32>,
    /// Whether this domain is added into the run's total.
    pub in_total: bool,
    /// True when the domain's CPU times were the whole machine's (no socket, or a socket
    /// the topology does not know).
    pub machine_wide: bool,
    /// The idle power subtracted, W; `None` when no baseline was used for this domain.
    pub baseline_w: Option<f64>,
    /// The command's share of this domain is modelled, not measured: the device has no
    /// usage signal of its own (the chassis, a battery, a GPU seen only through hwmon, a
    /// meter); docs/attribution.md says how it is split.
    pub modelled: bool,
    /// GPUs (issue 9): how the command's share of this domain was found, interval by
    /// interval: by each usage method of its source, or modelled (`method: None`).
    /// Empty for the CPU's domains.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub usage: Vec<UsageShare>,
    #[serde(flatten)]
    pub energy: EnergySplit,
}

/// The part of a domain's attribution that one usage method decided.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UsageShare {
    /// The source's method, or `None`: modelled (no usage from the source).
    pub method: Option<UsageMethod>,
    /// Time its intervals covered, s.
    pub measured_s: f64,
    pub dynamic_j: f64,
    pub command_dynamic_j: f64,
}

/// CPU time and energy of one package.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SocketAttribution {
    pub socket: u32,
    pub cpus: usize,
    /// The command's CPU time on this socket, s.
    pub tree_cpu_s: f64,
    /// All busy CPU time on this socket, s.
    pub busy_cpu_s: f64,
    /// Tree CPU time beyond busy CPU time on clamped ticks (not used in shares), s:
    /// ticks with no busy time included.
    pub clamped_cpu_s: f64,
    /// Ticks on which the tree's CPU time exceeded the busy CPU time (0 included).
    pub clamped_ticks: u64,
    /// Ticks with no busy CPU time on this socket.
    pub zero_busy_ticks: u64,
    /// Sums over this socket's domains that are in the total (package, dram).
    #[serde(flatten)]
    pub energy: EnergySplit,
}

/// The rest of the system: what a whole-machine measurement (the chassis at the wall,
/// a battery) saw beyond the parts measured inside it (packages, DRAM, GPUs), interval
/// by interval of the whole's own samples: fans, disks, NICs, power-supply losses.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RestOfSystem {
    /// Whole minus parts over the whole's intervals, never negative, J.
    pub energy_j: f64,
    /// Time the whole's intervals covered, s.
    pub measured_s: f64,
    /// Intervals in which the parts measured more than the whole (which cannot be:
    /// a meter's error, or samples out of step), and by how much in all, J.
    pub negative_intervals: u64,
    pub negative_j: f64,
    /// The command's share of it, J: modelled, the same fraction of the rest as the
    /// command's share (dynamic and static) of the whole machine in each interval.
    pub command_j: f64,
    /// Always true: no usage signal exists for fans, disks or power-supply losses.
    pub modelled: bool,
}

/// How much of the run had a baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BaselineCoverage {
    /// No domain had a baseline: static = 0 everywhere, dynamic = measured energy.
    None,
    /// Some domains had one, others not.
    Partial,
    /// Every domain had one.
    Full,
}

/// The run's attribution, serialisable for `--json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AttributionSummary {
    /// At least one domain had a baseline subtracted.
    pub baseline_used: bool,
    pub baseline_coverage: BaselineCoverage,
    /// The run's total: the whole-machine domains when one was measured (`total_of`:
    /// `"whole"`), else the sum of the parts (package, dram, GPUs, the estimate:
    /// `"parts"`).
    pub total: EnergySplit,
    /// What `total` is made of: `"whole"` or `"parts"`.
    pub total_of: &'static str,
    /// Whole minus parts, when a whole-machine domain was measured.
    pub rest_of_system: Option<RestOfSystem>,
    /// The sum of the parts (equal to `total` when `total_of` is `"parts"`).
    pub parts: EnergySplit,
    pub per_socket: Vec<SocketAttribution>,
    pub per_domain: Vec<DomainAttribution>,
    /// `total.command_dynamic_j / total.dynamic_j`.
    pub share: f64,
    /// `total.command_total_j`: the command's dynamic energy plus its static share.
    pub command_total_j: f64,
    /// `total.overhead_j`.
    pub overhead_j: f64,
    /// joulerun's own CPU time, s.
    pub overhead_cpu_s: f64,
    /// Time during which at least one domain in the total was below its baseline, s.
    pub below_baseline_s: f64,
    /// The command's CPU time, all sockets, s.
    pub tree_cpu_s: f64,
    /// All busy CPU time, all sockets, s.
    pub busy_cpu_s: f64,
    /// Time covered by the ticks, s.
    pub duration_s: f64,
    pub ticks: u64,
}

#[derive(Clone, Debug, Default)]
struct SocketState {
    tree_cpu_s: f64,
    busy_cpu_s: f64,
    clamped_cpu_s: f64,
    clamped_ticks: u64,
    zero_busy_ticks: u64,
    energy: EnergySplit,
}

/// Accumulates the attribution of a run, tick by tick.
#[derive(Clone, Debug)]
pub struct Attributor {
    domains: Vec<DomainAttribution>,
    /// Package index of each domain, `None`: machine-wide.
    package_index: Vec<Option<usize>>,
    /// Device, category and place of each domain.
    devices: Vec<Device>,
    places: Vec<Place>,
    /// Domains attributed per tick (fast CPU domains); the others come through
    /// [`Attributor::interval`].
    by_tick: Vec<bool>,
    packages: Vec<u32>,
    cpus_per_socket: Vec<usize>,
    sockets: Vec<SocketState>,
    /// The sum of the parts.
    total: EnergySplit,
    /// The CPU parts alone (the reference for a GPU without a usage signal).
    cpu_parts: EnergySplit,
    /// The whole-machine domains of one category (the chassis when the run has it, else a
    /// battery: both would count the machine twice; see `report::totals`).
    whole: EnergySplit,
    whole_category: Category,
    rest: RestOfSystem,
    below_baseline_s: f64,
    overhead_cpu_s: f64,
    duration_s: f64,
    ticks: u64,
    /// The clock, s: the sum of the ticks' lengths (the sampler's time of the last tick).
    clock_s: f64,
    history: UsageHistory,
    /// Scratch, reused every tick (no allocation per tick).
    socket_below: Vec<bool>,
    point: UsagePoint,
    delta: UsageDelta,
}

impl Attributor {
    /// * `domains`: the run's domains, in the order of [`TickInput::energy_j`].
    /// * `packages`: the distinct packages, ascending (`Topology::packages()`); a
    ///   domain's package index is the position of its socket in this list.
    /// * `cpus_per_socket[i]`: the number of CPUs of package index `i`.
    /// * `baseline_w[i]`: the calibrated idle power of domain `i`, if any (what
    ///   `Baseline::check` returns); missing entries mean no baseline.
    pub fn new(
        domains: &[Domain],
        packages: &[u32],
        cpus_per_socket: &[usize],
        baseline_w: &[Option<f64>],
    ) -> Attributor {
        let mut package_index = Vec::with_capacity(domains.len());
        let per_domain = domains
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let idx = d.socket.and_then(|s| packages.iter().position(|p| *p == s));
                package_index.push(idx);
                DomainAttribution {
                    name: d.name.clone(),
                    kind: d.kind,
                    socket: d.socket,
                    in_total: d.in_total(),
                    machine_wide: idx.is_none(),
                    baseline_w: baseline_w
                        .get(i)
                        .copied()
                        .flatten()
                        .filter(|w| w.is_finite() && *w >= 0.0),
                    modelled: d.category() != Category::Cpu,
                    usage: Vec::new(),
                    energy: EnergySplit::default(),
                }
            })
            .collect();
        let cpus: Vec<usize> = (0..packages.len())
            .map(|i| cpus_per_socket.get(i).copied().unwrap_or(0))
            .collect();
        Attributor {
            domains: per_domain,
            package_index,
            devices: domains.iter().map(|d| d.device.clone()).collect(),
            places: domains.iter().map(|d| d.place.clone()).collect(),
            by_tick: domains
                .iter()
                .map(|d| d.category() == Category::Cpu)
                .collect(),
            packages: packages.to_vec(),
            cpus_per_socket: cpus,
            sockets: vec![SocketState::default(); packages.len()],
            total: EnergySplit::default(),
            cpu_parts: EnergySplit::default(),
            whole: EnergySplit::default(),
            whole_category: if domains
                .iter()
                .any(|d| d.place == Place::Whole && d.category() == Category::Chassis)
            {
                Category::Chassis
            } else {
                Category::Battery
            },
            rest: RestOfSystem::default(),
            below_baseline_s: 0.0,
            overhead_cpu_s: 0.0,
            duration_s: 0.0,
            ticks: 0,
            clock_s: 0.0,
            history: UsageHistory::new(packages.len()),
            socket_below: vec![false; packages.len()],
            point: UsagePoint::default(),
            delta: UsageDelta::default(),
        }
    }

    /// Domains whose energy comes in intervals of their own (read on a reader thread):
    /// `slow[i]` for domain `i`. Their energy is given to [`Attributor::interval`], not in
    /// [`TickInput::energy_j`].
    pub fn with_interval_domains(mut self, slow: &[bool]) -> Attributor {
        for (i, b) in self.by_tick.iter_mut().enumerate() {
            if slow.get(i).copied().unwrap_or(false) {
                *b = false;
            }
        }
        self
    }

    /// Whether domain `d` is attributed through [`Attributor::interval`] (so the caller
    /// gives it every interval of that domain).
    pub fn wants_interval(&self, d: usize) -> bool {
        !self.by_tick.get(d).copied().unwrap_or(true)
    }

    /// Record the usage history point of the tick that just ended.
    fn record_point(&mut self) {
        let p = &mut self.point;
        p.t_s = self.clock_s;
        p.tree_cpu_s.clear();
        p.busy_cpu_s.clear();
        for s in &self.sockets {
            p.tree_cpu_s.push(s.tree_cpu_s);
            p.busy_cpu_s.push(s.busy_cpu_s);
        }
        p.self_cpu_s = self.overhead_cpu_s;
        p.cpu_parts_dynamic_j = self.cpu_parts.dynamic_j;
        p.cpu_parts_command_j = self.cpu_parts.command_dynamic_j;
        p.parts_dynamic_j = self.total.dynamic_j;
        p.parts_command_j = self.total.command_dynamic_j;
        p.parts_energy_j = self.total.energy_j;
        self.history.record(&self.point);
    }

    /// Add the energy of domain `d` over `[start_s, end_s]` of the sampler's clock (a
    /// sample of a slow source, or any domain of a device without a CPU usage signal).
    /// It is split by the usage of that same interval: CPU time for a CPU device; for a
    /// device without a usage signal of its own, the command's share of the dynamic
    /// energy of the parts whose usage is known (the CPU parts for a GPU, every part for
    /// the whole machine), or of busy CPU time when those had none ("modelled").
    /// Call it after the tick that covers `end_s`.
    pub fn interval(&mut self, d: usize, start_s: f64, end_s: f64, energy_j: f64) {
        self.interval_with_usage(d, start_s, end_s, energy_j, None);
    }

    /// [`Attributor::interval`], with the command's use of the device over that interval
    /// as its source measured it (NVML's per-process GPU use). With `Some`, a GPU's
    /// dynamic energy (and its static part) is split by `usage.share()` instead of the
    /// modelled share, and the domain's `usage` records the method.
    pub fn interval_with_usage(
        &mut self,
        d: usize,
        start_s: f64,
        end_s: f64,
        energy_j: f64,
        usage: Option<IntervalUsage>,
    ) {
        if !self.wants_interval(d) || d >= self.domains.len() {
            return;
        }
        let dt = end_s - start_s;
        if !(dt.is_finite() && dt > 0.0 && energy_j.is_finite()) {
            return;
        }
        self.history.between(start_s, end_s, &mut self.delta);
        let u = &self.delta;
        let n = self.packages.len();
        let at = |v: &[f64], i: usize| finite_nonneg(v.get(i).copied().unwrap_or(0.0));
        let tree_all = u.tree_all();
        let busy_all = u.busy_all();
        let cpus_all: usize = self.cpus_per_socket.iter().sum();
        let cpu_share = |tree: f64, busy: f64| dynamic_share(tree, busy);
        let machine_share = cpu_share(tree_all, busy_all);
        let parts_share = |cmd: f64, dynj: f64| {
            if dynj > 0.0 {
                ratio(cmd, dynj)
            } else {
                machine_share
            }
        };
        let idx = self.package_index[d];
        let (share, occupancy, has_usage) = match &self.devices[d] {
            Device::Socket { .. } | Device::Machine => match idx {
                Some(i) if i < n => (
                    cpu_share(at(&u.tree_cpu_s, i), at(&u.busy_cpu_s, i)),
                    static_share(at(&u.tree_cpu_s, i), self.cpus_per_socket[i], dt),
                    at(&u.busy_cpu_s, i) > 0.0,
                ),
                _ => (
                    machine_share,
                    static_share(tree_all, cpus_all, dt),
                    busy_all > 0.0,
                ),
            },
            Device::Gpu { .. } => (
                parts_share(u.cpu_parts_command_j, u.cpu_parts_dynamic_j),
                static_share(tree_all, cpus_all, dt),
                true,
            ),
            Device::Chassis | Device::Battery { .. } => (
                parts_share(u.parts_command_j, u.parts_dynamic_j),
                static_share(tree_all, cpus_all, dt),
                true,
            ),
            Device::Meter { .. } => (
                machine_share,
                static_share(tree_all, cpus_all, dt),
                busy_all > 0.0,
            ),
        };
        // A measured usage of the device itself wins over the model (GPUs through NVML).
        let usage = usage.filter(|_| matches!(self.devices[d], Device::Gpu { .. }));
        let (share, occupancy) = match usage {
            Some(m) => (m.share(), m.share()),
            None => (share, occupancy),
        };
        // joulerun's own CPU time takes no part of a GPU whose use was measured.
        let self_frac = if usage.is_some() {
            0.0
        } else {
            ratio(u.self_cpu_s, busy_all)
        };
        let dom = &mut self.domains[d];
        let split = split_energy(energy_j, dom.baseline_w, dt);
        let overhead_frac = self_frac.min(1.0 - share).max(0.0);
        let tick = DomainTick {
            split,
            command_dynamic_j: split.dynamic_j * share,
            command_static_j: split.static_j * occupancy,
            overhead_j: split.dynamic_j * overhead_frac,
            unattributed_j: if has_usage { 0.0 } else { split.dynamic_j },
        };
        dom.energy.add_tick(&tick);
        dom.energy.measured_s += dt;
        if split.below_baseline {
            dom.energy.below_baseline_s += dt;
        }
        if matches!(self.devices[d], Device::Gpu { .. }) {
            let method = usage.map(|m| m.method);
            let row = match dom.usage.iter().position(|r| r.method == method) {
                Some(k) => &mut dom.usage[k],
                None => {
                    dom.usage.push(UsageShare {
                        method,
                        measured_s: 0.0,
                        dynamic_j: 0.0,
                        command_dynamic_j: 0.0,
                    });
                    dom.usage
                        .sort_by_key(|r| r.method.map_or(u8::MAX, |m| m as u8));
                    let k = dom
                        .usage
                        .iter()
                        .position(|r| r.method == method)
                        .unwrap_or(0);
                    &mut dom.usage[k]
                }
            };
            row.measured_s += dt;
            row.dynamic_j += tick.split.dynamic_j;
            row.command_dynamic_j += tick.command_dynamic_j;
            // Modelled only while some of its energy was split by the model.
            dom.modelled = dom.usage.iter().any(|r| r.method.is_none());
        }
        match self.places[d] {
            Place::Part => {
                self.total.add_tick(&tick);
                if self.devices[d].category() == Category::Cpu {
                    self.cpu_parts.add_tick(&tick);
                    if let Some(i) = idx
                        && i < n
                    {
                        self.sockets[i].energy.add_tick(&tick);
                    }
                }
            }
            Place::Whole if self.devices[d].category() == self.whole_category => {
                self.whole.add_tick(&tick);
                self.whole.measured_s += dt;
                if split.below_baseline {
                    self.whole.below_baseline_s += dt;
                }
                // The rest of the system over this same interval: the whole minus what
                // the parts measured in it, never negative.
                let parts = self.delta.parts_energy_j;
                let r = &mut self.rest;
                r.measured_s += dt;
                if energy_j >= parts {
                    r.energy_j += energy_j - parts;
                    if energy_j > 0.0 {
                        let cmd = tick.command_dynamic_j + tick.command_static_j;
                        r.command_j += (energy_j - parts) * (cmd / energy_j).clamp(0.0, 1.0);
                    }
                } else {
                    r.negative_intervals += 1;
                    r.negative_j += parts - energy_j;
                }
            }
            Place::Whole | Place::Inside(_) | Place::Overlaps => {}
        }
    }

    /// Per domain, the command's attributed energy so far, J (for streaming sinks).
    pub fn command_j_into(&self, out: &mut Vec<f64>) {
        out.clear();
        out.extend(
            self.domains
                .iter()
                .map(|d| d.energy.command_dynamic_j + d.energy.command_static_j),
        );
    }

    /// Add one tick.
    pub fn tick(&mut self, t: &TickInput<'_>) {
        if !(t.dt_s.is_finite() && t.dt_s > 0.0) {
            return;
        }
        let dt = t.dt_s;
        let n = self.packages.len();
        let at = |v: &[f64], i: usize| finite_nonneg(v.get(i).copied().unwrap_or(0.0));
        let tree_all: f64 = (0..n).map(|i| at(t.tree_cpu_s, i)).sum();
        let busy_all: f64 = (0..n).map(|i| at(t.busy_cpu_s, i)).sum();
        let cpus_all: usize = self.cpus_per_socket.iter().sum();
        let self_cpu = finite_nonneg(t.self_cpu_s);
        let self_frac = ratio(self_cpu, busy_all);

        self.ticks += 1;
        self.duration_s += dt;
        self.overhead_cpu_s += self_cpu;
        for (i, s) in self.sockets.iter_mut().enumerate() {
            let tree = at(t.tree_cpu_s, i);
            let busy = at(t.busy_cpu_s, i);
            s.tree_cpu_s += tree;
            s.busy_cpu_s += busy;
            if busy <= 0.0 {
                s.zero_busy_ticks += 1;
            }
            // A tick with no busy time gives the tree's time in it no energy either.
            if tree > busy {
                s.clamped_ticks += 1;
                s.clamped_cpu_s += tree - busy;
            }
            s.energy.measured_s += dt;
        }
        self.socket_below.iter_mut().for_each(|b| *b = false);
        let mut total_below = false;
        let mut total_measured = false;

        for (d, dom) in self.domains.iter_mut().enumerate() {
            if !self.by_tick[d] {
                continue;
            }
            let Some(e) = t.energy_j.get(d).copied().flatten() else {
                continue;
            };
            if !e.is_finite() {
                continue;
            }
            let idx = self.package_index[d];
            let (tree, busy, cpus) = match idx {
                Some(i) => (
                    at(t.tree_cpu_s, i),
                    at(t.busy_cpu_s, i),
                    self.cpus_per_socket[i],
                ),
                None => (tree_all, busy_all, cpus_all),
            };
            let split = split_energy(e, dom.baseline_w, dt);
            let share = dynamic_share(tree, busy);
            let overhead_frac = self_frac.min(1.0 - share).max(0.0);
            let tick = DomainTick {
                split,
                command_dynamic_j: split.dynamic_j * share,
                command_static_j: split.static_j * static_share(tree, cpus, dt),
                overhead_j: split.dynamic_j * overhead_frac,
                unattributed_j: if busy > 0.0 { 0.0 } else { split.dynamic_j },
            };
            dom.energy.add_tick(&tick);
            dom.energy.measured_s += dt;
            if split.below_baseline {
                dom.energy.below_baseline_s += dt;
            }
            if dom.in_total {
                self.total.add_tick(&tick);
                self.cpu_parts.add_tick(&tick);
                total_measured = true;
                total_below |= split.below_baseline;
                if let Some(i) = idx {
                    self.sockets[i].energy.add_tick(&tick);
                    self.socket_below[i] |= split.below_baseline;
                }
            }
        }
        for (s, below) in self.sockets.iter_mut().zip(&self.socket_below) {
            if *below {
                s.energy.below_baseline_s += dt;
            }
        }
        if total_measured {
            self.total.measured_s += dt;
        }
        if total_below {
            self.total.below_baseline_s += dt;
            self.below_baseline_s += dt;
        }
        self.clock_s += dt;
        self.record_point();
    }

    /// The command's energy so far over the run's total (the whole machine when measured,
    /// else the parts): what `summary().command_total_j` would say, without building a
    /// summary (streaming sinks read it every tick).
    pub fn command_j(&self) -> f64 {
        let (d, s) = self.command_split_j();
        d + s
    }

    /// [`Attributor::command_j`] in its dynamic and static parts (issue 13: a node's
    /// leader shares each window's among the ranks).
    pub fn command_split_j(&self) -> (f64, f64) {
        let t = if self.whole.measured_s > 0.0 {
            &self.whole
        } else {
            &self.total
        };
        (t.command_dynamic_j, t.command_static_j)
    }

    /// The attribution so far.
    pub fn summary(&self) -> AttributionSummary {
        let per_domain: Vec<DomainAttribution> = self
            .domains
            .iter()
            .map(|d| {
                let mut d = d.clone();
                d.energy.finish();
                d
            })
            .collect();
        let per_socket = self
            .sockets
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut energy = s.energy.clone();
                energy.finish();
                SocketAttribution {
                    socket: self.packages[i],
                    cpus: self.cpus_per_socket[i],
                    tree_cpu_s: s.tree_cpu_s,
                    busy_cpu_s: s.busy_cpu_s,
                    clamped_cpu_s: s.clamped_cpu_s,
                    clamped_ticks: s.clamped_ticks,
                    zero_busy_ticks: s.zero_busy_ticks,
                    energy,
                }
            })
            .collect();
        let mut parts = self.total.clone();
        parts.finish();
        let mut whole = self.whole.clone();
        whole.finish();
        let (total, total_of) = if self.whole.measured_s > 0.0 {
            (whole, "whole")
        } else {
            (parts.clone(), "parts")
        };
        let with_baseline = self
            .domains
            .iter()
            .filter(|d| d.baseline_w.is_some())
            .count();
        let baseline_coverage = if with_baseline == 0 {
            BaselineCoverage::None
        } else if with_baseline == self.domains.len() {
            BaselineCoverage::Full
        } else {
            BaselineCoverage::Partial
        };
        AttributionSummary {
            baseline_used: with_baseline > 0,
            baseline_coverage,
            share: total.share,
            command_total_j: total.command_total_j,
            overhead_j: total.overhead_j,
            overhead_cpu_s: self.overhead_cpu_s,
            below_baseline_s: self.below_baseline_s,
            tree_cpu_s: self.sockets.iter().map(|s| s.tree_cpu_s).sum(),
            busy_cpu_s: self.sockets.iter().map(|s| s.busy_cpu_s).sum(),
            duration_s: self.duration_s,
            ticks: self.ticks,
            total,
            total_of,
            rest_of_system: (self.rest.measured_s > 0.0).then(|| RestOfSystem {
                modelled: true,
                ..self.rest.clone()
            }),
            parts,
            per_socket,
            per_domain,
        }
    }
}

impl AttributionSummary {
    /// Make the sum of the parts the total: the whole machine was measured but did not
    /// cover the run (`report::totals` decides; the summary follows it).
    pub fn use_parts_as_total(&mut self) {
        self.total = self.parts.clone();
        self.total_of = "parts";
        self.share = self.total.share;
        self.command_total_j = self.total.command_total_j;
        self.overhead_j = self.total.overhead_j;
    }
}

/// The command's CPU time cut by clamping is reported once it is more than this
/// fraction of the command's CPU time...
pub const CLAMPED_WARN_FRACTION: f64 = 0.05;
/// ...and more than this many seconds (two clock ticks of `/proc/stat`: less is its
/// resolution, not a fault).
pub const CLAMPED_WARN_MIN_S: f64 = 0.02;

/// A warning when a material part of the command's CPU time came in ticks where it
/// exceeded the busy CPU time (`clamped_cpu_s`): that part was given no energy, so the
/// command's share is too low by up to that much. It says how much and what to do,
/// which depends on how the tree was followed (`method`).
pub fn clamped_warning(s: &AttributionSummary, method: Option<TrackMethod>) -> Option<String> {
    let clamped: f64 = s.per_socket.iter().map(|p| p.clamped_cpu_s).sum();
    let tree = s.tree_cpu_s;
    if !(clamped > CLAMPED_WARN_MIN_S && tree > 0.0 && clamped > CLAMPED_WARN_FRACTION * tree) {
        return None;
    }
    let why = match method {
        Some(TrackMethod::Proc) => {
            "the /proc method found that time only in a later tick (children it could not \
             read before they were reaped, or a slow read of many processes); track with a \
             cgroup (`--track cgroup`, which needs a writable cgroup v2, e.g. as root) to \
             count it when it is used"
        }
        _ => {
            "/proc/stat counts the machine's busy time in whole clock ticks, which short \
             ticks round down; a longer interval (-i) makes this smaller"
        }
    };
    Some(format!(
        "{clamped:.2} s of the command's {tree:.2} s CPU time ({:.0}%) came in ticks where \
         it exceeded the machine's busy CPU time and was given no energy, so the command's \
         share is too low by up to that part: {why}",
        100.0 * clamped / tree
    ))
}

/// The line a report prints when no baseline was used.
pub const NO_BASELINE_NOTE: &str = "no baseline was calibrated: all energy is counted as dynamic \
     and the command's share includes idle power; run `joulerun --basepower` on an idle machine \
     to calibrate one";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::SourceKind;

    const EPS: f64 = 1e-9;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= EPS * (1.0 + a.abs().max(b.abs()))
    }

    macro_rules! assert_close {
        ($a:expr, $b:expr) => {{
            let (a, b) = ($a, $b);
            assert!(close(a, b), "{} = {a}, expected {b}", stringify!($a));
        }};
    }

    fn dom(kind: DomainKind, socket: Option<u32>) -> Domain {
        Domain::new(kind, socket, SourceKind::Powercap)
    }

    fn tick<'a>(
        dt: f64,
        energy: &'a [Option<f64>],
        tree: &'a [f64],
        busy: &'a [f64],
        self_cpu: f64,
    ) -> TickInput<'a> {
        TickInput {
            dt_s: dt,
            energy_j: energy,
            tree_cpu_s: tree,
            busy_cpu_s: busy,
            self_cpu_s: self_cpu,
        }
    }

    #[test]
    fn split_static_dynamic() {
        // 10 W baseline, 0.5 s tick: 5 J idle; 12 J measured.
        let s = split_energy(12.0, Some(10.0), 0.5);
        assert_close!(s.static_j, 5.0);
        assert_close!(s.dynamic_j, 7.0);
        assert!(!s.below_baseline);
        assert_eq!(s.deficit_j, 0.0);
        // Exactly at the baseline: not below.
        let s = split_energy(5.0, Some(10.0), 0.5);
        assert_eq!(
            (s.static_j, s.dynamic_j, s.below_baseline),
            (5.0, 0.0, false)
        );
        // Below: static = measured, dynamic 0, deficit counted.
        let s = split_energy(3.0, Some(10.0), 0.5);
        assert_eq!(
            (s.static_j, s.dynamic_j, s.below_baseline),
            (3.0, 0.0, true)
        );
        assert_close!(s.deficit_j, 2.0);
        // No baseline: all dynamic.
        let s = split_energy(3.0, None, 0.5);
        assert_eq!(
            (s.static_j, s.dynamic_j, s.below_baseline),
            (0.0, 3.0, false)
        );
        // Garbage in: zeros out, never NaN.
        let s = split_energy(f64::NAN, Some(f64::INFINITY), -1.0);
        assert_eq!((s.static_j, s.dynamic_j), (0.0, 0.0));
        let s = split_energy(-4.0, Some(-2.0), 1.0);
        assert_eq!(
            (s.static_j, s.dynamic_j, s.below_baseline),
            (0.0, 0.0, false)
        );
    }

    #[test]
    fn shares_and_clamps() {
        assert_close!(dynamic_share(0.25, 1.0), 0.25);
        assert_eq!(dynamic_share(2.0, 1.0), 1.0); // tree > busy: clamped
        assert_eq!(dynamic_share(0.5, 0.0), 0.0); // zero-CPU tick
        assert_eq!(dynamic_share(f64::NAN, 1.0), 0.0);
        // 2 of 8 CPUs for a whole 0.5 s tick: 1 CPU-s of 4 → 25 %.
        assert_close!(static_share(1.0, 8, 0.5), 0.25);
        assert_eq!(static_share(9.0, 8, 1.0), 1.0);
        assert_eq!(static_share(1.0, 0, 1.0), 0.0);
        assert_eq!(static_share(1.0, 4, 0.0), 0.0);
    }

    #[test]
    fn single_socket_with_baseline() {
        let domains = [dom(DomainKind::Package, Some(0))];
        let mut a = Attributor::new(&domains, &[0], &[4], &[Some(10.0)]);
        // 1 s, 30 J: 10 static + 20 dynamic. Tree 1 CPU-s of 2 busy: share 0.5.
        // Static share: 1 / (4 × 1) = 0.25. joulerun 0.1 of 2 busy: overhead 5 %.
        a.tick(&tick(1.0, &[Some(30.0)], &[1.0], &[2.0], 0.1));
        let s = a.summary();
        let t = &s.total;
        assert_close!(t.energy_j, 30.0);
        assert_close!(t.static_j, 10.0);
        assert_close!(t.dynamic_j, 20.0);
        assert_close!(t.command_dynamic_j, 10.0);
        assert_close!(t.command_static_j, 2.5);
        assert_close!(t.command_total_j, 12.5);
        assert_close!(s.command_total_j, 12.5);
        assert_close!(t.overhead_j, 1.0);
        assert_close!(s.overhead_j, 1.0);
        assert_close!(s.overhead_cpu_s, 0.1);
        assert_close!(t.others_dynamic_j, 9.0);
        assert_close!(s.share, 0.5);
        assert!(s.baseline_used);
        assert_eq!(s.baseline_coverage, BaselineCoverage::Full);
        assert_eq!(s.below_baseline_s, 0.0);
        assert_eq!(s.per_socket[0].energy, *t);
        assert_eq!(s.per_domain[0].energy, *t);
    }

    #[test]
    fn without_baseline_everything_is_dynamic() {
        let domains = [dom(DomainKind::Package, Some(0))];
        let mut a = Attributor::new(&domains, &[0], &[4], &[]);
        a.tick(&tick(1.0, &[Some(30.0)], &[1.0], &[2.0], 0.0));
        let s = a.summary();
        assert!(!s.baseline_used);
        assert_eq!(s.baseline_coverage, BaselineCoverage::None);
        assert_eq!(s.per_domain[0].baseline_w, None);
        assert_close!(s.total.static_j, 0.0);
        assert_close!(s.total.dynamic_j, 30.0);
        assert_close!(s.total.command_dynamic_j, 15.0);
        assert_close!(s.total.command_static_j, 0.0);
        assert_close!(s.command_total_j, 15.0);
    }

    #[test]
    fn below_baseline_ticks() {
        let domains = [
            dom(DomainKind::Package, Some(0)),
            dom(DomainKind::Dram, Some(0)),
        ];
        let mut a = Attributor::new(&domains, &[0], &[2], &[Some(10.0), Some(2.0)]);
        // Tick 1 (0.5 s): package 4 J < 5 J idle (below, deficit 1), dram 1.5 J > 1 J.
        a.tick(&tick(0.5, &[Some(4.0), Some(1.5)], &[0.5], &[1.0], 0.0));
        // Tick 2 (0.5 s): both below.
        a.tick(&tick(0.5, &[Some(4.5), Some(0.5)], &[0.5], &[1.0], 0.0));
        // Tick 3 (1 s): none below. package 16 = 10 + 6, dram 2 = 2 + 0.
        a.tick(&tick(1.0, &[Some(16.0), Some(2.0)], &[0.5], &[1.0], 0.0));
        let s = a.summary();
        let pkg = &s.per_domain[0].energy;
        assert_close!(pkg.below_baseline_s, 1.0);
        assert_close!(pkg.below_baseline_deficit_j, 1.0 + 0.5);
        assert_close!(pkg.energy_j, 24.5);
        assert_close!(pkg.static_j, 4.0 + 4.5 + 10.0);
        assert_close!(pkg.dynamic_j, 6.0);
        assert_close!(pkg.static_j + pkg.dynamic_j, pkg.energy_j);
        let dram = &s.per_domain[1].energy;
        assert_close!(dram.below_baseline_s, 0.5);
        assert_close!(dram.below_baseline_deficit_j, 0.5);
        assert_close!(dram.static_j, 1.0 + 0.5 + 2.0);
        assert_close!(dram.dynamic_j, 0.5);
        // The run was below baseline whenever any domain in the total was: ticks 1 and 2.
        assert_close!(s.below_baseline_s, 1.0);
        assert_close!(s.per_socket[0].energy.below_baseline_s, 1.0);
        assert_close!(s.total.dynamic_j, 6.5);
        // Share 0.5 of busy on every tick.
        assert_close!(s.total.command_dynamic_j, 3.25);
        assert_close!(s.share, 0.5);
        // Static share: tree 0.5 / (2 CPUs × dt): 0.5 for 0.5 s ticks, 0.25 for the 1 s tick.
        let expected_static = 0.5 * (4.0 + 1.0) + 0.5 * (4.5 + 0.5) + 0.25 * (10.0 + 2.0);
        assert_close!(s.total.command_static_j, expected_static);
    }

    #[test]
    fn zero_cpu_ticks_are_unattributed() {
        let domains = [dom(DomainKind::Package, Some(0))];
        let mut a = Attributor::new(&domains, &[0], &[4], &[Some(5.0)]);
        // Nothing busy: share 0, the 3 J of dynamic energy are unattributed.
        a.tick(&tick(1.0, &[Some(8.0)], &[0.0], &[0.0], 0.0));
        // The tree has CPU time but /proc/stat saw none (clock-tick granularity): still 0,
        // for the dynamic part; the static share follows the tree's own CPU time.
        a.tick(&tick(1.0, &[Some(9.0)], &[0.02], &[0.0], 0.0));
        let s = a.summary();
        assert_close!(s.total.dynamic_j, 7.0);
        assert_close!(s.total.command_dynamic_j, 0.0);
        assert_close!(s.total.unattributed_j, 7.0);
        assert_close!(s.total.others_dynamic_j, 0.0);
        assert_close!(s.total.command_static_j, 5.0 * 0.02 / 4.0);
        assert_eq!(s.share, 0.0);
        assert_eq!(s.per_socket[0].zero_busy_ticks, 2);
        // The tree's 0.02 s was given no energy: clamped, like time beyond busy time.
        assert_eq!(s.per_socket[0].clamped_ticks, 1);
        assert_close!(s.per_socket[0].clamped_cpu_s, 0.02);
    }

    /// A run whose tree time arrived in its short last window, where the machine's busy
    /// time was 0 (the `/proc` method found 1.2 s of reaped children a window late): that
    /// time was given no energy, the share fell to a quarter of tree / busy, and the
    /// report said nothing was clamped. It is clamped time, and warned about.
    #[test]
    fn tree_time_in_a_window_with_no_busy_time_is_clamped_and_warned_about() {
        let domains = [dom(DomainKind::Estimate, None)];
        let mut a = Attributor::new(&domains, &[0], &[2], &[None]);
        a.tick(&tick(0.115, &[Some(0.8)], &[0.221], &[0.31], 0.0));
        a.tick(&tick(0.985, &[Some(6.6)], &[0.395], &[1.93], 0.0));
        a.tick(&tick(0.022, &[Some(0.03)], &[1.227], &[0.0], 0.0));
        let s = a.summary();
        assert!(s.share < 0.3, "{}", s.share);
        assert_close!(s.per_socket[0].clamped_cpu_s, 1.227);
        assert_eq!(s.per_socket[0].clamped_ticks, 1);
        let w = clamped_warning(&s, Some(TrackMethod::Proc)).expect("a warning");
        assert!(
            w.starts_with("1.23 s of the command's 1.84 s CPU time (67%)"),
            "{w}"
        );
    }

    #[test]
    fn two_sockets_different_loads() {
        let domains = [
            dom(DomainKind::Package, Some(0)),
            dom(DomainKind::Package, Some(1)),
            dom(DomainKind::Dram, Some(0)),
            dom(DomainKind::Dram, Some(1)),
            dom(DomainKind::Core, Some(0)),
        ];
        let baseline = [Some(20.0), Some(20.0), Some(4.0), Some(4.0), Some(8.0)];
        let mut a = Attributor::new(&domains, &[0, 1], &[8, 8], &baseline);
        // One 2 s tick. Socket 0: tree 4 of 8 busy CPU-s (50 %); socket 1: 1 of 10 (10 %).
        let e = [Some(100.0), Some(70.0), Some(12.0), Some(9.0), Some(50.0)];
        a.tick(&tick(2.0, &e, &[4.0, 1.0], &[8.0, 10.0], 0.0));
        let s = a.summary();
        // package-0: static 40, dynamic 60, command 30; static share 4/(8×2) = 0.25 → 10.
        let p0 = &s.per_domain[0].energy;
        assert_close!(p0.static_j, 40.0);
        assert_close!(p0.dynamic_j, 60.0);
        assert_close!(p0.command_dynamic_j, 30.0);
        assert_close!(p0.command_static_j, 10.0);
        // package-1: static 40, dynamic 30, command 3; static share 1/16 → 2.5.
        let p1 = &s.per_domain[1].energy;
        assert_close!(p1.dynamic_j, 30.0);
        assert_close!(p1.command_dynamic_j, 3.0);
        assert_close!(p1.command_static_j, 2.5);
        assert_close!(p1.share, 0.1);
        // dram-0: static 8, dynamic 4, command 2, static 2. dram-1: 8, 1, 0.1, 0.5.
        assert_close!(s.per_domain[2].energy.command_dynamic_j, 2.0);
        assert_close!(s.per_domain[2].energy.command_static_j, 2.0);
        assert_close!(s.per_domain[3].energy.command_dynamic_j, 0.1);
        assert_close!(s.per_domain[3].energy.command_static_j, 0.5);
        // core-0 is attributed (16 static, 34 dynamic, 17 command) but not in the total.
        let c0 = &s.per_domain[4];
        assert!(!c0.in_total);
        assert_close!(c0.energy.command_dynamic_j, 17.0);
        // Per socket: package + dram only.
        assert_close!(s.per_socket[0].energy.energy_j, 112.0);
        assert_close!(s.per_socket[0].energy.dynamic_j, 64.0);
        assert_close!(s.per_socket[0].energy.command_dynamic_j, 32.0);
        assert_close!(s.per_socket[0].energy.share, 0.5);
        assert_close!(s.per_socket[1].energy.energy_j, 79.0);
        assert_close!(s.per_socket[1].energy.command_dynamic_j, 3.1);
        assert_close!(s.per_socket[1].energy.share, 0.1);
        assert_close!(s.per_socket[0].tree_cpu_s, 4.0);
        assert_close!(s.per_socket[1].busy_cpu_s, 10.0);
        // Totals over package + dram of both sockets.
        assert_close!(s.total.energy_j, 191.0);
        assert_close!(s.total.static_j, 96.0);
        assert_close!(s.total.dynamic_j, 95.0);
        assert_close!(s.total.command_dynamic_j, 35.1);
        assert_close!(s.total.command_static_j, 15.0);
        assert_close!(s.command_total_j, 50.1);
        assert_close!(s.share, 35.1 / 95.0);
        assert_close!(s.tree_cpu_s, 5.0);
        assert_close!(s.busy_cpu_s, 18.0);
    }

    #[test]
    fn machine_wide_domains_use_machine_totals() {
        let domains = [
            dom(DomainKind::Psys, None),
            Domain::new(DomainKind::Estimate, None, SourceKind::Estimate),
            // A socket the topology does not know: machine-wide too.
            dom(DomainKind::Package, Some(7)),
        ];
        let mut a = Attributor::new(&domains, &[0, 1], &[4, 4], &[Some(10.0), None, None]);
        // Tree 3 of 12 busy CPU-s over both sockets: 25 %. Capacity 8 CPUs × 1 s.
        a.tick(&tick(
            1.0,
            &[Some(50.0), Some(20.0), Some(8.0)],
            &[2.0, 1.0],
            &[4.0, 8.0],
            0.0,
        ));
        let s = a.summary();
        let psys = &s.per_domain[0];
        assert!(psys.machine_wide && !psys.in_total);
        assert_close!(psys.energy.dynamic_j, 40.0);
        assert_close!(psys.energy.command_dynamic_j, 10.0);
        assert_close!(psys.energy.command_static_j, 10.0 * 3.0 / 8.0);
        let est = &s.per_domain[1];
        assert!(est.machine_wide && est.in_total);
        assert_close!(est.energy.command_dynamic_j, 5.0);
        assert!(s.per_domain[2].machine_wide);
        assert_close!(s.per_domain[2].energy.command_dynamic_j, 2.0);
        // Totals: estimate + the unknown package (both in the total); psys is not.
        assert_close!(s.total.energy_j, 28.0);
        assert_close!(s.total.command_dynamic_j, 7.0);
        // Machine-wide domains are in no socket's sums.
        assert_eq!(s.per_socket[0].energy.energy_j, 0.0);
        assert_eq!(s.baseline_coverage, BaselineCoverage::Partial);
    }

    #[test]
    fn tree_above_busy_is_clamped() {
        let domains = [dom(DomainKind::Package, Some(0))];
        let mut a = Attributor::new(&domains, &[0], &[2], &[Some(4.0)]);
        // 1.05 CPU-s of tree against 1.00 busy (10 ms ticks vs µs): share clamped to 1.
        a.tick(&tick(1.0, &[Some(10.0)], &[1.05], &[1.0], 0.0));
        // Tree 3 CPU-s on a 2-CPU, 1 s tick: static share clamped to 1 too.
        a.tick(&tick(1.0, &[Some(10.0)], &[3.0], &[2.0], 0.0));
        let s = a.summary();
        assert_close!(s.total.command_dynamic_j, 12.0);
        assert_close!(s.total.command_static_j, 4.0 * 1.05 / 2.0 + 4.0);
        assert_eq!(s.share, 1.0);
        assert_eq!(s.per_socket[0].clamped_ticks, 2);
        assert_close!(s.per_socket[0].clamped_cpu_s, 1.05);
    }

    #[test]
    fn material_clamping_is_reported_with_its_size() {
        let domains = [dom(DomainKind::Package, Some(0))];
        let mut a = Attributor::new(&domains, &[0], &[2], &[None]);
        // 2 CPU-s of tree; the last tick brings 0.5 s more than the busy time.
        a.tick(&tick(1.0, &[Some(10.0)], &[1.0], &[1.0], 0.0));
        a.tick(&tick(1.0, &[Some(10.0)], &[1.0], &[0.5], 0.0));
        let s = a.summary();
        let w = clamped_warning(&s, Some(TrackMethod::Proc)).unwrap();
        assert!(
            w.contains("0.50 s of the command's 2.00 s CPU time (25%)"),
            "{w}"
        );
        assert!(w.contains("--track cgroup"), "{w}");
        let w = clamped_warning(&s, Some(TrackMethod::Cgroup)).unwrap();
        assert!(w.contains("(25%)") && w.contains("-i"), "{w}");
        assert!(!w.contains("--track cgroup"), "{w}");
        // 5% or less of the tree's time, or two clock ticks or less: nothing to say.
        let mut a = Attributor::new(&domains, &[0], &[2], &[None]);
        a.tick(&tick(1.0, &[Some(10.0)], &[2.0], &[1.92], 0.0));
        assert_eq!(clamped_warning(&a.summary(), Some(TrackMethod::Proc)), None);
        let mut a = Attributor::new(&domains, &[0], &[2], &[None]);
        a.tick(&tick(1.0, &[Some(10.0)], &[0.1], &[0.085], 0.0));
        assert_eq!(clamped_warning(&a.summary(), Some(TrackMethod::Proc)), None);
        let empty = Attributor::new(&domains, &[0], &[2], &[None]);
        assert_eq!(clamped_warning(&empty.summary(), None), None);
    }

    #[test]
    fn overhead_is_not_charged_to_the_command() {
        let domains = [dom(DomainKind::Package, Some(0))];
        let mut a = Attributor::new(&domains, &[0], &[4], &[None]);
        // Busy 1.0: tree 0.9, joulerun 0.1. The command gets 90 %, joulerun 10 %.
        a.tick(&tick(1.0, &[Some(20.0)], &[0.9], &[1.0], 0.1));
        // Inconsistent inputs (tree + self > busy): overhead capped at 1 − share.
        a.tick(&tick(1.0, &[Some(20.0)], &[1.0], &[1.0], 0.2));
        let s = a.summary();
        assert_close!(s.total.command_dynamic_j, 18.0 + 20.0);
        assert_close!(s.overhead_j, 2.0);
        assert_close!(s.overhead_cpu_s, 0.3);
        assert_close!(s.total.others_dynamic_j, 0.0);
    }

    #[test]
    fn missing_and_garbage_ticks_are_skipped() {
        let domains = [
            dom(DomainKind::Package, Some(0)),
            dom(DomainKind::Dram, Some(0)),
        ];
        let mut a = Attributor::new(&domains, &[0], &[1], &[Some(1.0), Some(1.0)]);
        // dram unknown this tick: it is not counted as below baseline.
        a.tick(&tick(1.0, &[Some(3.0), None], &[0.5], &[1.0], 0.0));
        a.tick(&tick(1.0, &[Some(f64::NAN), Some(2.0)], &[], &[], f64::NAN));
        a.tick(&tick(0.0, &[Some(100.0), Some(100.0)], &[1.0], &[1.0], 0.0));
        a.tick(&tick(f64::NAN, &[Some(100.0)], &[1.0], &[1.0], 0.0));
        let s = a.summary();
        assert_eq!(s.ticks, 2);
        assert_close!(s.duration_s, 2.0);
        assert_close!(s.per_domain[0].energy.energy_j, 3.0);
        assert_close!(s.per_domain[0].energy.measured_s, 1.0);
        assert_close!(s.per_domain[1].energy.energy_j, 2.0);
        assert_eq!(s.below_baseline_s, 0.0);
        assert_close!(s.total.command_dynamic_j, 1.0);
        assert_close!(s.total.unattributed_j, 1.0);
        // Short per-socket slices and an empty package list never panic.
        let mut b = Attributor::new(&domains, &[], &[], &[]);
        b.tick(&tick(1.0, &[Some(1.0)], &[], &[], 0.0));
        assert_close!(b.summary().total.unattributed_j, 1.0);
        assert!(serde_json::to_string(&b.summary()).is_ok());
    }

    #[test]
    fn summary_serialises_flat() {
        let domains = [dom(DomainKind::Package, Some(0))];
        let mut a = Attributor::new(&domains, &[0], &[1], &[Some(1.0)]);
        a.tick(&tick(1.0, &[Some(3.0)], &[0.5], &[1.0], 0.0));
        let v = serde_json::to_value(a.summary()).unwrap();
        assert_eq!(v["per_domain"][0]["name"], "package-0");
        assert_eq!(v["per_domain"][0]["kind"], "package");
        assert_eq!(v["per_domain"][0]["dynamic_j"], 2.0);
        assert_eq!(v["per_socket"][0]["socket"], 0);
        assert_eq!(v["total"]["command_dynamic_j"], 1.0);
        assert_eq!(v["baseline_coverage"], "full");
    }

    #[test]
    fn a_one_second_sample_is_split_by_the_usage_of_its_own_second() {
        use crate::sources::{Device, Place, SourceKind};
        // package-0 ticks every 0.1 s; a chassis is sampled once a second.
        let chassis = Domain::on_device(
            "chassis",
            DomainKind::Chassis,
            Device::Chassis,
            SourceKind::Hwmon,
        )
        .placed(Place::Whole);
        let d = vec![dom(DomainKind::Package, Some(0)), chassis];
        let mut a = Attributor::new(&d, &[0], &[4], &[]).with_interval_domains(&[false, true]);
        assert!(a.wants_interval(1) && !a.wants_interval(0));
        // Second 1: the command burns (0.1 s CPU of 0.1 s busy per tick), the package
        // draws 100 W. Seconds 2 and 3: only others run, the package draws 20 W.
        for k in 0..30 {
            let busy_cmd = k < 10;
            let e = if busy_cmd { 10.0 } else { 2.0 };
            a.tick(&tick(
                0.1,
                &[Some(e), None],
                &[if busy_cmd { 0.1 } else { 0.0 }],
                &[0.1],
                0.0,
            ));
            // The chassis sample of [t-1, t] arrives a tick after it was taken (late,
            // from its reader thread), when the usage of the current tick is idle.
            if k == 10 {
                a.interval(1, 0.0, 1.0, 150.0);
            }
            if k == 20 {
                a.interval(1, 1.0, 2.0, 60.0);
            }
            if k == 29 {
                a.interval(1, 2.0, 3.0, 60.0);
            }
        }
        let s = a.summary();
        let c = &s.per_domain[1];
        assert!(c.modelled);
        // All of the first second's chassis energy is the command's (its share of the
        // parts then was 1), none of the next two.
        assert_close!(c.energy.command_dynamic_j, 150.0);
        assert_close!(c.energy.energy_j, 270.0);
        // The total is the whole machine; the rest of system is chassis minus package
        // over the chassis' own intervals: (150 - 100) + (60 - 20) + (60 - 20).
        assert_eq!(s.total_of, "whole");
        assert_close!(s.total.energy_j, 270.0);
        assert_close!(s.parts.energy_j, 100.0 + 40.0);
        let r = s.rest_of_system.unwrap();
        assert_close!(r.energy_j, 130.0);
        assert_eq!(r.negative_intervals, 0);
        // Parts measuring more than the whole: counted, never negative.
        a.tick(&tick(0.1, &[Some(50.0), None], &[0.0], &[0.1], 0.0));
        a.interval(1, 3.0, 3.1, 10.0);
        let r = a.summary().rest_of_system.unwrap();
        assert_close!(r.energy_j, 130.0);
        assert_eq!(r.negative_intervals, 1);
        assert_close!(r.negative_j, 40.0);
    }

    #[test]
    fn a_gpu_with_measured_use_is_split_by_it_and_records_the_method() {
        use crate::sources::{Device, IntervalUsage, SourceKind, UsageMethod};
        let gpu = Domain::on_device(
            "gpu-0",
            DomainKind::Gpu,
            Device::Gpu {
                index: 0,
                uuid: None,
                name: None,
            },
            SourceKind::Nvml,
        );
        let d = vec![dom(DomainKind::Package, Some(0)), gpu];
        // A 50 W idle baseline for the GPU.
        let mut a = Attributor::new(&d, &[0], &[4], &[None, Some(50.0)])
            .with_interval_domains(&[false, true]);
        for _ in 0..10 {
            a.tick(&tick(0.1, &[Some(1.0), None], &[0.0], &[0.1], 0.05));
        }
        let sm = |c: f64| IntervalUsage {
            command: c,
            total: 1.0,
            method: UsageMethod::SmUtilisation,
        };
        // 0.5 s at 250 W: 25 J idle + 100 J dynamic, 75 % the command's.
        a.interval_with_usage(1, 0.0, 0.5, 125.0, Some(sm(0.75)));
        // 0.5 s without usage from the source: modelled (the CPU parts' share, 0 here).
        a.interval_with_usage(1, 0.5, 1.0, 125.0, None);
        let s = a.summary();
        let g = &s.per_domain[1];
        assert!(g.modelled, "part of it was modelled");
        assert_close!(g.energy.dynamic_j, 200.0);
        assert_close!(g.energy.command_dynamic_j, 75.0);
        assert_close!(g.energy.command_static_j, 25.0 * 0.75);
        // joulerun's CPU time takes nothing of the measured part.
        assert_close!(g.energy.overhead_j, 100.0 * 0.5);
        assert_eq!(g.usage.len(), 2);
        assert_eq!(g.usage[0].method, Some(UsageMethod::SmUtilisation));
        assert_close!(g.usage[0].command_dynamic_j, 75.0);
        assert_close!(g.usage[0].measured_s, 0.5);
        assert_eq!(g.usage[1].method, None);
        // Only measured usage: not modelled.
        let mut a = Attributor::new(&d, &[0], &[4], &[]).with_interval_domains(&[false, true]);
        a.tick(&tick(1.0, &[Some(1.0), None], &[0.0], &[1.0], 0.0));
        a.interval_with_usage(1, 0.0, 1.0, 10.0, Some(sm(1.0)));
        let g = &a.summary().per_domain[1];
        assert!(!g.modelled);
        assert_close!(g.energy.command_dynamic_j, 10.0);
        // The CPU's domains carry no usage rows.
        assert!(a.summary().per_domain[0].usage.is_empty());
    }

    #[test]
    fn the_chassis_share_is_the_parts_dynamic_shares_weighted_by_their_dynamic_energy() {
        use crate::sources::ipmi::chassis_domain;
        // Two sockets ticking every 0.1 s (1 CPU each); the chassis from a BMC, sampled
        // once a second. Socket 0: the command's alone (share 1), 10 W dynamic; socket 1:
        // others' alone (share 0), 30 W dynamic. Baselines: 10 W per package, 100 W for
        // the chassis.
        let d = vec![
            dom(DomainKind::Package, Some(0)),
            dom(DomainKind::Package, Some(1)),
            chassis_domain(SourceKind::Dcmi),
        ];
        let mut a = Attributor::new(&d, &[0, 1], &[1, 1], &[Some(10.0), Some(10.0), Some(100.0)])
            .with_interval_domains(&[false, false, true]);
        for k in 0..12 {
            a.tick(&tick(
                0.1,
                &[Some(2.0), Some(4.0), None],
                &[0.1, 0.0],
                &[0.1, 0.1],
                0.0,
            ));
            if k == 10 {
                // 300 J over [0, 1]: 100 J static, 200 J dynamic.
                a.interval(2, 0.0, 1.0, 300.0);
            }
        }
        let s = a.summary();
        let c = &s.per_domain[2];
        assert!(c.modelled);
        assert_close!(c.energy.static_j, 100.0);
        assert_close!(c.energy.dynamic_j, 200.0);
        // The command's dynamic share of the chassis: (1 x 10 J + 0 x 30 J) / 40 J of
        // dynamic parts energy in that second = 0.25 (not its 0.5 of the machine's busy
        // CPU time), applied to the chassis' dynamic energy above its baseline.
        assert_close!(c.energy.command_dynamic_j, 0.25 * 200.0);
        // Its static share by the CPU capacity it used: 1 CPU of 2 for the second.
        assert_close!(c.energy.command_static_j, 0.5 * 100.0);
        // The rest of the system in that second: 300 J minus the packages' 60 J; the
        // command's modelled share of it is its share of the whole, 100 J of 300 J.
        let r = s.rest_of_system.clone().unwrap();
        assert_close!(r.energy_j, 240.0);
        assert_close!(r.command_j, 240.0 * 100.0 / 300.0);
        assert!(r.modelled);
        assert_eq!(s.total_of, "whole");
        // Should the whole not cover the run, the summary takes the parts as the total.
        let mut s = s;
        s.use_parts_as_total();
        assert_eq!(s.total_of, "parts");
        assert_close!(s.total.energy_j, s.parts.energy_j);
        assert_close!(s.command_total_j, s.parts.command_total_j);
    }
}
