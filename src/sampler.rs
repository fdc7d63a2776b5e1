//! The tick: read the fast sources, collect what the slow ones' reader threads measured,
//! and turn every reading into energy over an interval of the sampler's clock.
//!
//! The clock is monotonic (`Instant`); times are seconds since [`Sampler::start`].
//!
//! * A [`Cadence::Tick`] source is read on every tick, in the sampling loop. Its domains'
//!   intervals are the ticks.
//! * A [`Cadence::Every`] source is read on a reader thread of its own at its own period
//!   ([`reader`]). Each read is stamped with the clock before and after it; the tick takes
//!   whatever batches have arrived without ever waiting, and its domains' intervals run
//!   from one of their samples to the next. A read that blocks delays that source only.
//! * At the end, [`Sampler::final_tick`] stops the readers (each takes one last sample, so
//!   its intervals reach the end of the run), waits a bounded time for them, then ticks.

pub mod reader;

use std::time::{Duration, Instant};

use crate::counter::{Accumulator, Delta};
use crate::procs::{MachineCpu, MachineCpuSample, TreeCpu, TreeTracker};
use crate::sources::{
    Cadence, CommandPids, Domain, DomainKind, IntervalUsage, ReadError, Reading, Source,
};

/// What went wrong with one domain during the run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DomainHealth {
    /// Reads in which the domain could not be read.
    pub failed_reads: u64,
    /// The first failure: seconds since start and the message.
    pub first_error: Option<(f64, String)>,
    /// The device said it is gone for good, at this time: no later reading.
    pub gone_at: Option<f64>,
    /// Its reader thread did not stop in time at the end: the last part is missing.
    pub unfinished: bool,
}

/// The energy of one domain over one interval of the sampler's clock.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    /// Index in [`Sampler::domains`].
    pub domain: usize,
    pub start_s: f64,
    pub end_s: f64,
    pub energy_j: f64,
    /// The command's use of the domain's device over this interval, from its source
    /// (NVML); `None`: attribution models the share.
    pub usage: Option<IntervalUsage>,
}

impl Interval {
    pub fn power_w(&self) -> f64 {
        let dt = self.end_s - self.start_s;
        if dt > 0.0 { self.energy_j / dt } else { 0.0 }
    }
}

struct Fast {
    source: Box<dyn Source>,
    /// For domain j of the source: the index in `domains`, or None when filtered out.
    map: Vec<Option<usize>>,
}

struct Slow {
    /// Until `start`: the source; then its reader.
    source: Option<Box<dyn Source>>,
    reader: Option<reader::Reader>,
    period: Duration,
    map: Vec<Option<usize>>,
}

pub struct Sampler {
    fast: Vec<Fast>,
    slow: Vec<Slow>,
    domains: Vec<Domain>,
    /// Whether domain i comes from a slow source.
    is_slow: Vec<bool>,
    accs: Vec<Accumulator>,
    health: Vec<DomainHealth>,
    /// Time of each domain's last reading that can start an interval.
    last_sample_s: Vec<Option<f64>>,
    /// Time covered by each domain's intervals, s.
    measured_s: Vec<f64>,
    buf: Vec<Result<Reading, ReadError>>,
    batches: Vec<reader::Batch>,
    start: Option<Instant>,
    last_t: f64,
    /// Energy of each fast domain during the last tick, J (0 for slow domains: see
    /// `intervals`).
    pub delta_j: Vec<f64>,
    /// Average power of each fast domain during the last tick, W.
    pub power_w: Vec<f64>,
    /// `delta_j`, or `None` where this tick's energy is unknown (a failed read, the
    /// first reading after one, an implausible reading: a glitch) or comes in intervals
    /// of its own (a slow domain).
    pub energy: Vec<Option<f64>>,
    /// Every interval that ended since the previous tick, fast and slow domains alike.
    pub intervals: Vec<Interval>,
    ticks: u64,
    /// The last tick has been taken ([`Sampler::final_tick`]).
    finished: bool,
    /// The machine's CPU time, read first in every tick (before the sources, so the
    /// estimate uses this same reading).
    machine: Option<MachineCpu>,
    /// The machine CPU reading of this tick and of the one before.
    pub machine_now: MachineCpuSample,
    pub machine_before: MachineCpuSample,
    /// The command's process tree, read just before the machine (so CPU time used
    /// between the two reads counts as busy, never as the command's beyond it).
    tree: Option<TreeTracker>,
    pub tree_now: TreeCpu,
    pub tree_before: TreeCpu,
    /// When the machine CPU was last read, and whether this tick read it.
    machine_t: f64,
    machine_fresh: bool,
    /// The usage probes' period now: [`USAGE_PROBE_MIN_S`], or longer while reading the
    /// command's tree costs more than `probe_budget` of a core at that period (issue 14;
    /// default [`TREE_PROBE_BUDGET`]); and the tree read's cost, s (a moving average).
    probe_period_s: f64,
    probe_budget: f64,
    tree_cost_s: Option<f64>,
    /// When the machine CPU was last read for the estimate alone, and that reading: while
    /// a costly tree stretches the probes' period, the machine's CPU time is still read
    /// every [`USAGE_PROBE_MIN_S`] for the estimate, whose power would otherwise arrive
    /// in lumps once per probe window.
    machine_pub_t: f64,
    machine_pub: MachineCpuSample,
    /// GPUs (issue 9): the command's PIDs, published on each usage probe for sources
    /// that filter per-process data; and each domain's highest interval power, W.
    pids_out: Option<(std::sync::Arc<CommandPids>, Vec<i32>)>,
    pids_t: Option<f64>,
    peak_w: Vec<f64>,
}

/// The shortest time between two readings of the CPU usage probes (the machine's
/// `/proc/stat`, the command's tree): the kernel counts CPU time in clock ticks of 10 ms
/// (USER_HZ = 100), so reading more often adds cost and no information. With a shorter
/// sampling interval, usage is read every few ticks and attribution spans those ticks
/// (docs/attribution.md, "Probe windows").
pub const USAGE_PROBE_MIN_S: f64 = 0.010;

/// The CPU the command's tree may cost joulerun, as a fraction of one core: when a read
/// of the tree costs more than this at the sampling interval (a `/proc` tree of
/// thousands of processes), the usage probes are read less often, every
/// `cost / TREE_PROBE_BUDGET` seconds, at most [`USAGE_PROBE_MAX_S`] apart. Attribution
/// runs over the probes' windows, so totals stay exact; only the timeline of the
/// command's share gets coarser (docs/attribution.md, "Probe windows").
pub const TREE_PROBE_BUDGET: f64 = 0.005;

/// The longest time between two readings of the usage probes, whatever the tree costs.
pub const USAGE_PROBE_MAX_S: f64 = 1.0;

/// The usage probes' period for a tree read that costs `cost_s` of CPU, under `budget`
/// (a fraction of one core).
pub fn probe_period_s(cost_s: f64, budget: f64) -> f64 {
    let p = cost_s / budget;
    if p.is_finite() {
        p.clamp(USAGE_PROBE_MIN_S, USAGE_PROBE_MAX_S)
    } else {
        USAGE_PROBE_MIN_S
    }
}

/// The shortest time between two publications of the command's PIDs to reader threads
/// (half NVML's read period): more often costs a tree listing per probe and tells a
/// reader nothing new. The set a reader sees is at most this plus one probe window old.
pub const PIDS_MIN_S: f64 = 0.05;

/// How long the end of a run waits for a reader thread's last sample.
pub const READER_STOP_WAIT: Duration = Duration::from_secs(2);

impl Sampler {
    /// `only`: keep only these domain kinds (empty: all). Estimates are always kept.
    pub fn new(sources: Vec<Box<dyn Source>>, only: &[DomainKind]) -> Sampler {
        let mut domains = Vec::new();
        let mut is_slow = Vec::new();
        let mut accs = Vec::new();
        let mut fast = Vec::new();
        let mut slow = Vec::new();
        for source in sources {
            let cadence = source.cadence();
            let max_gap = match cadence {
                Cadence::Tick => crate::integrate::DEFAULT_MAX_GAP_S,
                Cadence::Every(p) => crate::integrate::max_gap_for_period(p.as_secs_f64()),
            };
            let mut map = Vec::new();
            for d in source.domains() {
                let keep =
                    only.is_empty() || only.contains(&d.kind) || d.kind == DomainKind::Estimate;
                if keep {
                    map.push(Some(domains.len()));
                    accs.push(Accumulator::for_domain(d).with_max_gap(max_gap));
                    domains.push(d.clone());
                    is_slow.push(matches!(cadence, Cadence::Every(_)));
                } else {
                    map.push(None);
                }
            }
            match cadence {
                Cadence::Tick => fast.push(Fast { source, map }),
                Cadence::Every(period) => slow.push(Slow {
                    source: Some(source),
                    reader: None,
                    period,
                    map,
                }),
            }
        }
        let n = domains.len();
        Sampler {
            fast,
            slow,
            domains,
            is_slow,
            accs,
            health: vec![DomainHealth::default(); n],
            last_sample_s: vec![None; n],
            measured_s: vec![0.0; n],
            buf: Vec::with_capacity(16),
            batches: Vec::new(),
            start: None,
            last_t: 0.0,
            delta_j: vec![0.0; n],
            power_w: vec![0.0; n],
            energy: vec![None; n],
            intervals: Vec::with_capacity(n),
            ticks: 0,
            finished: false,
            machine: None,
            machine_now: MachineCpuSample::default(),
            machine_before: MachineCpuSample::default(),
            machine_t: 0.0,
            machine_fresh: false,
            probe_period_s: USAGE_PROBE_MIN_S,
            probe_budget: TREE_PROBE_BUDGET,
            tree_cost_s: None,
            machine_pub_t: 0.0,
            machine_pub: MachineCpuSample::default(),
            tree: None,
            tree_now: TreeCpu::default(),
            tree_before: TreeCpu::default(),
            pids_out: None,
            pids_t: None,
            peak_w: vec![0.0; n],
        }
    }

    /// Publish the command's processes into `pids` on the usage probes (after the tree
    /// is read), at most every [`PIDS_MIN_S`], for reader threads that filter by them
    /// (NVML).
    pub fn share_pids(&mut self, pids: std::sync::Arc<CommandPids>) {
        self.pids_out = Some((pids, Vec::new()));
    }

    /// Each domain's highest power over one of its intervals, W.
    pub fn peak_w(&self) -> &[f64] {
        &self.peak_w
    }

    /// Follow the command's tree from now on (call it once the command has started); it
    /// is read with the machine CPU, first.
    pub fn set_tree(&mut self, mut t: TreeTracker) {
        t.sample(&mut self.tree_before);
        self.tree_now = self.tree_before.clone();
        // Readers that filter by the command's PIDs see its root at once.
        if let Some((shared, buf)) = self.pids_out.as_mut() {
            t.pids(buf);
            shared.set(buf);
        }
        self.tree = Some(t);
    }

    pub fn tree(&self) -> Option<&TreeTracker> {
        self.tree.as_ref()
    }

    /// The tracker, for its clean-up at the end.
    pub fn take_tree(&mut self) -> Option<TreeTracker> {
        self.tree.take()
    }

    /// Whether this tick read the CPU usage (always, with ticks of 10 ms or more; every
    /// few ticks with shorter ones: [`USAGE_PROBE_MIN_S`]). Usage-based work (attribution)
    /// runs on these ticks, over the time since the previous one.
    pub fn usage_fresh(&self) -> bool {
        self.machine_fresh
    }

    /// Read the machine's CPU time at the start of every tick, before the sources (the
    /// estimate shares this reading: see `OpenContext::machine_busy`).
    pub fn with_machine_cpu(mut self, mut m: MachineCpu) -> Sampler {
        m.sample(&mut self.machine_now);
        self.machine_before = self.machine_now.clone();
        self.machine = Some(m);
        self
    }

    /// The usage probes' period now (see [`TREE_PROBE_BUDGET`]).
    pub fn probe_period_s(&self) -> f64 {
        self.probe_period_s
    }

    /// The CPU the command's tree may cost, a fraction of one core (`--probe-budget`;
    /// default [`TREE_PROBE_BUDGET`]).
    pub fn set_probe_budget(&mut self, budget: f64) {
        if budget.is_finite() && budget > 0.0 {
            self.probe_budget = budget;
        }
    }

    fn sample_machine(&mut self, t: f64) {
        self.machine_fresh = true;
        self.machine_t = t;
        if let Some(tr) = self.tree.as_mut() {
            std::mem::swap(&mut self.tree_now, &mut self.tree_before);
            let c0 = crate::procs::thread_cpu_s();
            tr.sample(&mut self.tree_now);
            let cost = (crate::procs::thread_cpu_s() - c0).max(0.0);
            let avg = self.tree_cost_s.map_or(cost, |a| 0.7 * a + 0.3 * cost);
            self.tree_cost_s = Some(avg);
            self.probe_period_s = probe_period_s(avg, self.probe_budget);
            if let Some((shared, buf)) = self.pids_out.as_mut()
                && self.pids_t.is_none_or(|p| t - p >= PIDS_MIN_S - 0.0005)
            {
                self.pids_t = Some(t);
                tr.pids(buf);
                shared.set(buf);
            }
        }
        if let Some(m) = self.machine.as_mut() {
            std::mem::swap(&mut self.machine_now, &mut self.machine_before);
            m.sample(&mut self.machine_now);
        }
    }

    pub fn domains(&self) -> &[Domain] {
        &self.domains
    }

    /// Whether domain `i` is read on a reader thread (its energy comes in `intervals`).
    pub fn is_slow(&self, i: usize) -> bool {
        self.is_slow.get(i).copied().unwrap_or(false)
    }

    pub fn accumulators(&self) -> &[Accumulator] {
        &self.accs
    }

    pub fn health(&self) -> &[DomainHealth] {
        &self.health
    }

    /// Time covered by each domain's intervals, s.
    pub fn measured_s(&self) -> &[f64] {
        &self.measured_s
    }

    /// Whether the last tick has been taken (the values are the run's last).
    pub fn is_final(&self) -> bool {
        self.finished
    }

    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    /// Seconds since `start` (0 before it).
    pub fn now_s(&self) -> f64 {
        self.start.map_or(0.0, |s| s.elapsed().as_secs_f64())
    }

    /// Seconds from the first reading to the last: the time the run's energy covers.
    pub fn elapsed_s(&self) -> f64 {
        self.last_t
    }

    /// The first reading: the zero point of every counter and of the clock. Reader
    /// threads start here and take their first sample at once.
    pub fn start(&mut self) {
        let epoch = Instant::now();
        self.start = Some(epoch);
        self.last_t = 0.0;
        self.sample_machine(0.0);
        self.read_fast(0.0);
        for s in &mut self.slow {
            if let Some(source) = s.source.take() {
                s.reader = Some(reader::Reader::spawn(source, s.period, epoch));
            }
        }
        self.delta_j.iter_mut().for_each(|d| *d = 0.0);
        self.power_w.iter_mut().for_each(|p| *p = 0.0);
        self.intervals.clear();
    }

    /// Read the fast sources now and collect the slow ones' samples. Returns the tick's
    /// duration in seconds; `delta_j`, `power_w`, `energy` and `intervals` then hold the
    /// tick's values.
    pub fn tick(&mut self) -> f64 {
        let dt = self.tick_fast(false);
        self.collect_slow();
        dt
    }

    /// Read the fast sources: the tick's time, its energies and powers. The usage probe
    /// is read first when its period has passed, or `forced` (the last tick).
    fn tick_fast(&mut self, forced: bool) -> f64 {
        self.intervals.clear();
        let t = self.now_s();
        // Half a millisecond of slack: a 10 ms tick that fires a little early still reads.
        if forced || t - self.machine_t >= self.probe_period_s - 0.0005 {
            self.sample_machine(t);
            self.machine_pub_t = t;
        } else {
            self.machine_fresh = false;
            if let Some(m) = self.machine.as_mut()
                && m.publishes()
                && t - self.machine_pub_t >= USAGE_PROBE_MIN_S - 0.0005
            {
                self.machine_pub_t = t;
                m.sample(&mut self.machine_pub);
            }
        }
        self.read_fast(t);
        let dt = (t - self.last_t).max(0.0);
        self.last_t = t;
        self.ticks += 1;
        for (p, d) in self.power_w.iter_mut().zip(&self.delta_j) {
            *p = if dt > 0.0 { d / dt } else { 0.0 };
        }
        dt
    }

    /// The last tick of a run: the fast sources are read at once (the run ends now), then
    /// the reader threads are stopped (each takes, or finishes, a last sample) and their
    /// samples collected. A reader stuck in a read is given [`READER_STOP_WAIT`], then
    /// left behind and its domains marked unfinished.
    pub fn final_tick(&mut self) -> f64 {
        self.finished = true;
        for s in &mut self.slow {
            if let Some(r) = s.reader.as_mut() {
                r.request_stop();
            }
        }
        let dt = self.tick_fast(true);
        let deadline = Instant::now() + READER_STOP_WAIT;
        for s in &mut self.slow {
            if let Some(r) = s.reader.as_mut()
                && !r.wait_stopped(deadline)
            {
                for &k in s.map.iter().flatten() {
                    self.health[k].unfinished = true;
                }
            }
        }
        self.collect_slow();
        dt
    }

    fn read_fast(&mut self, t: f64) {
        let Sampler {
            fast,
            accs,
            health,
            buf,
            delta_j,
            energy,
            start,
            last_sample_s,
            measured_s,
            intervals,
            peak_w,
            ..
        } = self;
        for f in fast.iter_mut() {
            f.source.read(buf);
            let t_end = start.map_or(t, |s| s.elapsed().as_secs_f64());
            for (j, slot) in f.map.iter().enumerate() {
                let Some(k) = *slot else { continue };
                let outcome = apply(
                    &mut accs[k],
                    &mut health[k],
                    &mut last_sample_s[k],
                    buf.get(j),
                    t,
                    t_end,
                );
                (delta_j[k], energy[k]) = match outcome {
                    Some((t0, j)) => {
                        measured_s[k] += t - t0;
                        let iv = Interval {
                            domain: k,
                            start_s: t0,
                            end_s: t,
                            energy_j: j,
                            usage: None,
                        };
                        peak_w[k] = peak_w[k].max(iv.power_w());
                        intervals.push(iv);
                        (j, Some(j))
                    }
                    None => (0.0, None),
                };
            }
        }
    }

    fn collect_slow(&mut self) {
        let Sampler {
            slow,
            accs,
            health,
            last_sample_s,
            measured_s,
            intervals,
            batches,
            peak_w,
            ..
        } = self;
        for s in slow.iter_mut() {
            let Some(r) = s.reader.as_mut() else { continue };
            r.drain_into(batches);
            for b in batches.drain(..) {
                for (j, slot) in s.map.iter().enumerate() {
                    let Some(k) = *slot else { continue };
                    if health[k].gone_at.is_some() {
                        continue;
                    }
                    if let Some((t0, e)) = apply(
                        &mut accs[k],
                        &mut health[k],
                        &mut last_sample_s[k],
                        b.readings.get(j),
                        b.t_s,
                        b.t_end_s,
                    ) {
                        measured_s[k] += b.t_s - t0;
                        let iv = Interval {
                            domain: k,
                            start_s: t0,
                            end_s: b.t_s,
                            energy_j: e,
                            usage: b.usage.get(j).copied().flatten(),
                        };
                        peak_w[k] = peak_w[k].max(iv.power_w());
                        intervals.push(iv);
                    }
                }
            }
        }
    }
}

/// Feed one reading (or its failure) to a domain's accumulator. Returns the interval
/// that ended, as (start time, joules), when one did.
fn apply(
    acc: &mut Accumulator,
    health: &mut DomainHealth,
    last_sample: &mut Option<f64>,
    reading: Option<&Result<Reading, ReadError>>,
    t: f64,
    t_end: f64,
) -> Option<(f64, f64)> {
    match reading {
        Some(Ok(r)) => match acc.step(t, t_end, *r) {
            Delta::Joules(j) => {
                let t0 = last_sample.replace(t);
                t0.map(|t0| (t0, j))
            }
            Delta::Start | Delta::Glitch => {
                *last_sample = Some(t);
                None
            }
            Delta::Unchanged => None,
        },
        failed => {
            acc.forget();
            *last_sample = None;
            health.failed_reads += 1;
            let (msg, gone) = match failed {
                Some(Err(e)) => (e.message.clone(), e.gone),
                _ => ("the source returned no reading".to_string(), false),
            };
            if gone && health.gone_at.is_none() {
                health.gone_at = Some(t);
            }
            if health.first_error.is_none() {
                health.first_error = Some((t, msg));
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::{SourceKind, Wrap};

    /// A source replaying a script of readings.
    struct Script {
        domains: Vec<Domain>,
        steps: Vec<Vec<Result<Reading, ReadError>>>,
        i: usize,
    }

    impl Source for Script {
        fn kind(&self) -> SourceKind {
            SourceKind::Powercap
        }
        fn domains(&self) -> &[Domain] {
            &self.domains
        }
        fn read(&mut self, out: &mut Vec<Result<Reading, ReadError>>) {
            out.clear();
            out.extend(self.steps[self.i.min(self.steps.len() - 1)].iter().cloned());
            self.i += 1;
        }
    }

    fn c(v: u64) -> Result<Reading, ReadError> {
        Ok(Reading::Counter {
            value: v,
            wrap: Wrap::At(1000),
            joules_per_unit: 1.0,
        })
    }

    #[test]
    fn filters_and_survives_failures() {
        let domains = vec![
            Domain::new(DomainKind::Package, Some(0), SourceKind::Powercap),
            Domain::new(DomainKind::Dram, Some(0), SourceKind::Powercap),
        ];
        let script = Script {
            domains,
            steps: vec![
                vec![c(10), c(0)],
                vec![c(20), c(5)],
                vec![Err(ReadError::new("gone")), c(9)],
                vec![c(995), c(12)],
                vec![c(5), c(13)],
            ],
            i: 0,
        };
        let mut s = Sampler::new(vec![Box::new(script)], &[DomainKind::Package]);
        assert_eq!(s.domains().len(), 1);
        s.start();
        s.tick();
        assert_eq!(s.delta_j[0], 10.0);
        assert_eq!(s.energy[0], Some(10.0));
        s.tick();
        assert_eq!(s.delta_j[0], 0.0);
        assert_eq!(s.energy[0], None);
        s.tick(); // restarts after the failure: no energy across the gap
        assert_eq!(s.delta_j[0], 0.0);
        assert_eq!(s.energy[0], None);
        s.tick(); // wraps at 1000
        assert_eq!(s.delta_j[0], 10.0);
        assert_eq!(s.accumulators()[0].total_j, 20.0);
        assert_eq!(s.health()[0].failed_reads, 1);
        assert_eq!(s.health()[0].first_error.as_ref().unwrap().1, "gone");
    }

    #[test]
    fn a_glitch_is_unknown_energy_like_a_failed_read_and_the_next_tick_is_measured() {
        let uj = |v: u64| -> Result<Reading, ReadError> {
            Ok(Reading::Counter {
                value: v,
                wrap: Wrap::At(262_143_328_850),
                joules_per_unit: 1e-6,
            })
        };
        let script = Script {
            domains: vec![Domain::new(
                DomainKind::Package,
                Some(0),
                SourceKind::Powercap,
            )],
            steps: vec![
                vec![uj(1_000_000)],
                vec![uj(1_500_000)],
                vec![uj(1_499_000)], // down 1 mJ: a wrap would be 262 kJ
                vec![uj(1_800_000)],
            ],
            i: 0,
        };
        let mut s = Sampler::new(vec![Box::new(script)], &[]);
        s.start();
        s.tick();
        assert_eq!(s.energy[0], Some(0.5));
        s.tick();
        assert_eq!(s.energy[0], None);
        assert_eq!(s.delta_j[0], 0.0);
        s.tick();
        let e = s.energy[0].unwrap();
        assert!((e - 0.301).abs() < 1e-9, "{e}");
        let a = &s.accumulators()[0];
        assert_eq!((a.glitches, a.wraps), (1, 0));
        assert!((a.total_j - 0.801).abs() < 1e-9, "{}", a.total_j);
        // Not a failed read.
        assert_eq!(s.health()[0].failed_reads, 0);
        assert!(s.elapsed_s() > 0.0 && s.elapsed_s() <= s.now_s());
    }

    /// A slow source that says what the command used of its device.
    struct WithUsage {
        domains: Vec<Domain>,
        n: u64,
    }

    impl Source for WithUsage {
        fn kind(&self) -> SourceKind {
            SourceKind::Nvml
        }
        fn domains(&self) -> &[Domain] {
            &self.domains
        }
        fn cadence(&self) -> Cadence {
            Cadence::Every(std::time::Duration::from_millis(5))
        }
        fn read(&mut self, out: &mut Vec<Result<Reading, ReadError>>) {
            self.n += 1;
            out.clear();
            out.push(Ok(Reading::Counter {
                value: self.n * 10,
                wrap: Wrap::Full64,
                joules_per_unit: 1e-3,
            }));
        }
        fn usage(&self, out: &mut Vec<Option<IntervalUsage>>) {
            out.clear();
            out.push(Some(IntervalUsage {
                command: self.n as f64,
                total: 100.0,
                method: crate::sources::UsageMethod::SmUtilisation,
            }));
        }
    }

    #[test]
    fn the_usage_probe_slows_down_for_a_costly_tree_within_bounds() {
        let b = TREE_PROBE_BUDGET;
        assert_eq!(probe_period_s(0.0, b), USAGE_PROBE_MIN_S);
        assert_eq!(probe_period_s(20e-6, b), USAGE_PROBE_MIN_S);
        assert!((probe_period_s(1e-3, b) - 0.2).abs() < 1e-12);
        assert_eq!(probe_period_s(0.05, b), USAGE_PROBE_MAX_S);
        assert_eq!(probe_period_s(f64::NAN, b), USAGE_PROBE_MIN_S);
        assert_eq!(probe_period_s(-1.0, b), USAGE_PROBE_MIN_S);
        // A budget of a whole core reads a 1 ms tree every 10 ms.
        assert_eq!(probe_period_s(1e-3, 1.0), USAGE_PROBE_MIN_S);
    }

    /// While a costly tree stretches the probes' period, the machine's CPU time the
    /// estimate reads is still published every tick (at most every 10 ms): its power
    /// follows the machine tick by tick, not in lumps per probe window.
    #[test]
    fn the_estimates_machine_reading_keeps_its_cadence_when_the_probe_slows_down() {
        use crate::procs::{MachineBusy, MachineCpu};
        let topo = crate::topology::Topology::read(&crate::sysroot::SysRoot::default());
        let busy = std::sync::Arc::new(MachineBusy::default());
        let m = MachineCpu::new(&topo).unwrap().publishing(busy.clone());
        let mut s = Sampler::new(Vec::new(), &[]).with_machine_cpu(m);
        s.start();
        s.probe_period_s = USAGE_PROBE_MAX_S;
        // Burn 60 ms of CPU (15 clock ticks at HZ=250, 6 at 100): /proc/stat's busy
        // time grows; the tick after that is not a probe tick.
        for _ in 0..2 {
            let before = busy.get().0;
            let t0 = crate::procs::thread_cpu_s();
            while crate::procs::thread_cpu_s() - t0 < 0.06 {
                std::hint::black_box(0u64);
            }
            s.tick();
            assert!(!s.usage_fresh(), "not a probe tick");
            assert!(busy.get().0 > before, "published: {:?}", busy.get());
        }
    }

    #[test]
    fn a_slow_sources_usage_arrives_with_its_interval_and_peaks_are_kept() {
        let d = Domain::new(DomainKind::Gpu, None, SourceKind::Nvml);
        let mut s = Sampler::new(
            vec![Box::new(WithUsage {
                domains: vec![d],
                n: 0,
            })],
            &[],
        );
        s.start();
        std::thread::sleep(std::time::Duration::from_millis(40));
        s.tick();
        assert!(!s.intervals.is_empty());
        for iv in &s.intervals {
            let u = iv.usage.expect("the usage of the read that ended it");
            assert_eq!(u.total, 100.0);
            assert!(u.command >= 2.0, "{u:?}");
        }
        assert!(s.peak_w()[0] > 0.0);
    }
}
