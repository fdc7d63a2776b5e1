//! From readings to joules: wrap-aware deltas of cumulative counters, trapezoidal
//! integration of power readings, the estimate's model over the sampler's clock, and the
//! plausibility check every delta goes through. Pure arithmetic, no I/O.
//!
//! Plausibility (docs/sources.md, "Glitches and plausibility"): every domain carries a
//! plausible maximum power ([`crate::sources::Domain::max_power_w`]). Energy above
//! [`plausible_max_j`] for the time between two readings is a *glitch*, not energy: a
//! counter that jumps forward, one that goes down where no plausible wrap explains it
//! (a reset, a step back, any decrease of a 64-bit counter), a value above its declared
//! range, a power that is not a number, negative or above the ceiling. A glitch's
//! interval is unknown ([`Delta::Glitch`]: nothing is added), it is counted with the
//! first one kept, and the next interval is measured normally from the new value.

use std::fmt;

use crate::sources::{Domain, DomainKind, Reading, Wrap, estimate};

/// What happened between two counter values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The counter rose (or stayed).
    Plain,
    /// The counter went down and was corrected for one wrap.
    Wrapped,
    /// The counter went down and its range is unknown: counted from zero (a lower bound).
    Reset,
}

/// Raw units between `prev` and `cur`, assuming at most one wrap (the sampling interval
/// is chosen so that a second wrap cannot happen; see docs/sources.md). Arithmetic only:
/// whether the result is plausible is [`Accumulator::step`]'s question.
pub fn counter_delta(prev: u64, cur: u64, wrap: Wrap) -> (u64, Step) {
    if cur >= prev {
        return (cur - prev, Step::Plain);
    }
    match wrap {
        // `prev == range` is a counter at its last value (powercap's `energy_uj` can
        // equal `max_energy_range_uj`); `cur <= range` here, so this cannot overflow
        // unless the range is above 2^63.
        Wrap::At(range) if range >= prev => (cur.saturating_add(range - prev), Step::Wrapped),
        // A previous value beyond the declared range: the range is wrong; count from 0.
        Wrap::At(_) => (cur, Step::Reset),
        Wrap::Full64 => (cur.wrapping_sub(prev), Step::Wrapped),
        Wrap::Unknown => (cur, Step::Reset),
    }
}

/// How far behind the time joulerun gives it a counter's value may be: RAPL updates
/// about every 1 ms, and the counter may have been updated late, or read just before an
/// update; fake counters in tests are rewritten by a thread that can be descheduled.
/// At a domain's ceiling this is the slack of [`plausible_max_j`] (25 J for a package),
/// tiny against the glitches it is there to catch (65 kJ and more: a wrap range).
pub const COUNTER_LAG_S: f64 = 0.025;

/// The most energy a domain whose plausible maximum is `max_w` watts can gain in
/// `window_s` seconds: `max_w * (window_s + COUNTER_LAG_S)`. `window_s` should bound
/// the time between the two reads from above (the sampler gives it from the previous
/// reading's start to the end of this one), so late reads never look like glitches.
pub fn plausible_max_j(max_w: f64, window_s: f64) -> f64 {
    max_w * (window_s.max(0.0) + COUNTER_LAG_S)
}

/// A domain's counter is taken as stuck when it has not changed at all over at least
/// this long...
pub const STUCK_MIN_S: f64 = 1.0;
/// ...and over at least this many readings.
pub const STUCK_MIN_READINGS: u64 = 3;

/// What made a reading implausible.
#[derive(Clone, Debug, PartialEq)]
pub enum GlitchKind {
    /// A counter went down by `by_j` and one wrap (`cur + range - prev`, or a 64-bit
    /// wrap) would mean `wrap_w` watts.
    Down { by_j: f64, wrap_w: f64 },
    /// A counter with an unknown range went down by `by_j`, and counting from zero would
    /// mean `from_zero_w` watts.
    DownFromZero { by_j: f64, from_zero_w: f64 },
    /// A counter rose by `by_j` in `window_s`: `implied_w` watts.
    Jump {
        by_j: f64,
        window_s: f64,
        implied_w: f64,
    },
    /// A counter value above its declared wrap range (raw units).
    AboveRange { value: u64, range: u64 },
    /// A power reading that is not a number, negative, or above `max_w`.
    Power { watts: f64, max_w: f64 },
    /// Estimate inputs that are not finite, negative, or with no CPU.
    Model,
}

/// One implausible reading.
#[derive(Clone, Debug, PartialEq)]
pub struct Glitch {
    /// When, in the sampler's seconds.
    pub t_s: f64,
    pub kind: GlitchKind,
}

impl GlitchKind {
    /// The power the reading would have meant, when it is a number.
    pub fn implied_w(&self) -> Option<f64> {
        match *self {
            GlitchKind::Down { wrap_w: w, .. }
            | GlitchKind::DownFromZero { from_zero_w: w, .. }
            | GlitchKind::Jump { implied_w: w, .. } => Some(w),
            GlitchKind::Power { watts, .. } if watts.is_finite() => Some(watts),
            _ => None,
        }
    }
}

/// `v` rounded to 3 significant digits, with no exponent: 50.0, 1.00, 0.00000100.
fn sig3(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let round = |x: f64| {
        let scale = 10f64.powi(2 - x.abs().log10().floor() as i32);
        (x * scale).round() / scale
    };
    let r = round(v);
    let decimals = (2 - r.abs().log10().floor() as i32).max(0) as usize;
    format!("{r:.decimals$}")
}

/// Joules for a message, 3 significant digits: 100 J, 50.0 kJ, 1.00 MJ.
fn fmt_j(j: f64) -> String {
    if !j.is_finite() || j.abs() >= 1e12 {
        return format!("{j:.2e} J");
    }
    let a: f64 = sig3(j.abs()).parse().unwrap_or(j.abs());
    let (scale, unit) = if a >= 1e9 {
        (1e9, "GJ")
    } else if a >= 1e6 {
        (1e6, "MJ")
    } else if a >= 1e3 {
        (1e3, "kJ")
    } else {
        (1.0, "J")
    };
    format!("{} {unit}", sig3(j / scale))
}

/// Watts for a message: whole watts with thousands separators (261,619 W), small
/// values with 3 significant digits, astronomical ones in scientific notation.
pub fn fmt_w(w: f64) -> String {
    if !w.is_finite() {
        return format!("{w} W");
    }
    if w.abs() < 1000.0 {
        return format!("{} W", crate::report::sig(w, 3));
    }
    if w.abs() >= 1e15 {
        return format!("{w:.2e} W");
    }
    let digits = format!("{:.0}", w.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{}{out} W", if w < 0.0 { "-" } else { "" })
}

impl fmt::Display for GlitchKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GlitchKind::Down { by_j, wrap_w } => write!(
                f,
                "the counter went down by {} without a plausible wrap, which would mean {}",
                fmt_j(*by_j),
                fmt_w(*wrap_w)
            ),
            GlitchKind::DownFromZero { by_j, from_zero_w } => write!(
                f,
                "the counter went down by {}, and with its range unknown counting from zero \
                 would mean {}",
                fmt_j(*by_j),
                fmt_w(*from_zero_w)
            ),
            GlitchKind::Jump {
                by_j,
                window_s,
                implied_w,
            } => write!(
                f,
                "the counter jumped by {} in {} s, which would mean {}",
                fmt_j(*by_j),
                crate::report::sig(*window_s, 2),
                fmt_w(*implied_w)
            ),
            GlitchKind::AboveRange { value, range } => write!(
                f,
                "the counter read {value}, above its wrap range {range} (raw units)"
            ),
            GlitchKind::Power { watts, max_w } => {
                if watts.is_nan() {
                    write!(f, "a power reading that is not a number")
                } else if *watts < 0.0 {
                    write!(f, "a negative power reading, {}", fmt_w(*watts))
                } else {
                    write!(
                        f,
                        "a power reading of {}, above the plausible {}",
                        fmt_w(*watts),
                        fmt_w(*max_w)
                    )
                }
            }
            GlitchKind::Model => write!(f, "the estimate's inputs are not usable numbers"),
        }
    }
}

/// What one reading contributed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Delta {
    /// No previous reading to measure from (the first one, or the first after a failed
    /// read or an unusable value): this interval's energy is unknown.
    Start,
    /// Joules since the previous reading.
    Joules(f64),
    /// An implausible reading: this interval's energy is unknown, nothing was added.
    Glitch,
    /// Nothing new since the previous reading ([`Reading::Unchanged`]): no interval ends.
    Unchanged,
}

/// Whether a counter has moved since its first reading (for stuck counters).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Stillness {
    first: Option<(f64, u64)>,
    last_t: f64,
    readings: u64,
    moved: bool,
}

/// Per-domain state turning successive readings into energy.
#[derive(Clone, Debug)]
pub struct Accumulator {
    last: Option<(f64, Reading)>,
    /// The plausible maximum power, W.
    max_w: f64,
    /// Joules since the first reading.
    pub total_j: f64,
    pub wraps: u64,
    pub resets: u64,
    /// Implausible readings ignored.
    pub glitches: u64,
    /// The first of them.
    pub first_glitch: Option<Glitch>,
    still: Stillness,
    /// Power readings go through the one integrator.
    power: crate::integrate::Integrator,
}

impl Default for Accumulator {
    fn default() -> Accumulator {
        Accumulator::new()
    }
}

impl Accumulator {
    /// An accumulator with the most permissive per-kind ceiling (psys). Runs use
    /// [`Accumulator::for_domain`].
    pub fn new() -> Accumulator {
        Accumulator::with_max_power(DomainKind::Psys.plausible_max_w())
    }

    /// An accumulator checking readings against the domain's plausible maximum power.
    pub fn for_domain(d: &Domain) -> Accumulator {
        Accumulator::with_max_power(d.max_power_w)
    }

    /// An accumulator checking readings against `max_w` watts.
    pub fn with_max_power(max_w: f64) -> Accumulator {
        Accumulator {
            last: None,
            max_w,
            total_j: 0.0,
            wraps: 0,
            resets: 0,
            glitches: 0,
            first_glitch: None,
            still: Stillness::default(),
            power: crate::integrate::Integrator::new(crate::integrate::DEFAULT_MAX_GAP_S),
        }
    }

    /// The same accumulator, integrating power readings with this gap threshold
    /// ([`crate::integrate::max_gap_for_period`] of the source's period).
    pub fn with_max_gap(mut self, max_gap_s: f64) -> Accumulator {
        self.power = crate::integrate::Integrator::new(max_gap_s);
        self
    }

    /// Seconds over which a power reading was held because samples came too far apart,
    /// and how many such gaps.
    pub fn held(&self) -> (f64, u64) {
        (self.power.held_s, self.power.gaps)
    }

    /// The plausible maximum power readings are checked against, W.
    pub fn max_power_w(&self) -> f64 {
        self.max_w
    }

    /// Feed a reading taken at `t_s` (monotonic seconds). Returns the joules since the
    /// previous reading (0 for the first one, and for an implausible one).
    pub fn update(&mut self, t_s: f64, r: Reading) -> f64 {
        match self.step(t_s, t_s, r) {
            Delta::Joules(j) => j,
            Delta::Start | Delta::Glitch | Delta::Unchanged => 0.0,
        }
    }

    /// Feed a reading given at `t_s` (the clock read just before the reading was taken)
    /// and known to be taken by `t_end_s` (the clock read just after). Energy is
    /// integrated between the `t_s` of successive readings; plausibility is judged over
    /// the longest the interval can have been, from the previous `t_s` to `t_end_s`.
    pub fn step(&mut self, t_s: f64, t_end_s: f64, r: Reading) -> Delta {
        if let Reading::Counter { value, .. } = r {
            self.watch(t_s, value);
        }
        let prev = self.last;
        let window = prev.map_or(0.0, |(t0, _)| (t_end_s.max(t_s) - t0).max(0.0));
        let allowed = plausible_max_j(self.max_w, window);
        let per_s = |j: f64| j / window.max(1e-3);
        // A rise of `j` joules that is plausible, or a glitch saying what it would mean.
        let checked = |j: f64| {
            if j <= allowed {
                Ok(j)
            } else {
                Err((
                    GlitchKind::Jump {
                        by_j: j,
                        window_s: window,
                        implied_w: per_s(j),
                    },
                    true,
                ))
            }
        };
        let outcome = match (prev, r) {
            (
                _,
                Reading::Counter {
                    value,
                    wrap: Wrap::At(range),
                    ..
                },
            ) if value > range => Err((GlitchKind::AboveRange { value, range }, false)),
            (
                Some((_, Reading::Counter { value: p, .. })),
                Reading::Counter {
                    value: c,
                    wrap,
                    joules_per_unit: jpu,
                },
            ) => {
                let joules = |units: u128| units as f64 * jpu;
                if c >= p {
                    checked(joules(u128::from(c - p)))
                } else {
                    let by_j = joules(u128::from(p - c));
                    let wrapped = match wrap {
                        Wrap::At(range) if range >= p => {
                            Some(joules(u128::from(c) + u128::from(range - p)))
                        }
                        Wrap::Full64 => Some(joules(u128::from(c.wrapping_sub(p)))),
                        Wrap::At(_) | Wrap::Unknown => None,
                    };
                    match wrapped {
                        Some(j) if j <= allowed => {
                            self.wraps += 1;
                            Ok(j)
                        }
                        Some(j) => Err((
                            GlitchKind::Down {
                                by_j,
                                wrap_w: per_s(j),
                            },
                            true,
                        )),
                        None => {
                            let j = joules(u128::from(c));
                            if j <= allowed {
                                self.resets += 1;
                                Ok(j)
                            } else {
                                Err((
                                    GlitchKind::DownFromZero {
                                        by_j,
                                        from_zero_w: per_s(j),
                                    },
                                    true,
                                ))
                            }
                        }
                    }
                }
            }
            (_, Reading::Power { watts }) if !(0.0..=self.max_w).contains(&watts) => Err((
                GlitchKind::Power {
                    watts,
                    max_w: self.max_w,
                },
                false,
            )),
            (Some((_, Reading::Power { .. })), Reading::Power { watts }) => {
                match self.power.sample(t_s, watts) {
                    Some(j) => Ok(j),
                    None => {
                        self.last = Some((t_s, r));
                        return Delta::Start;
                    }
                }
            }
            (_, Reading::Power { watts }) => {
                // The first power sample (or the first after a gap): the zero point.
                self.power.forget();
                self.power.sample(t_s, watts);
                self.last = Some((t_s, r));
                return Delta::Start;
            }
            // Nothing new: no sample, no time passes for this domain.
            (_, Reading::Unchanged) => return Delta::Unchanged,
            (
                _,
                Reading::Model {
                    busy_cpu_s,
                    cpus,
                    idle_w,
                    max_w,
                },
            ) if !(busy_cpu_s.is_finite()
                && busy_cpu_s >= 0.0
                && cpus > 0
                && idle_w.is_finite()
                && max_w.is_finite()
                && 0.0 <= idle_w
                && idle_w <= max_w) =>
            {
                Err((GlitchKind::Model, false))
            }
            (
                Some((t0, Reading::Model { busy_cpu_s: b0, .. })),
                Reading::Model {
                    busy_cpu_s: b1,
                    cpus,
                    idle_w,
                    max_w,
                },
            ) => {
                let dt = (t_s - t0).max(0.0);
                checked(estimate::model_energy_j(idle_w, max_w, dt, b1 - b0, cpus))
            }
            // First reading, or a source that changed its kind of reading: no energy yet.
            _ => {
                self.last = Some((t_s, r));
                return Delta::Start;
            }
        };
        match outcome {
            Ok(j) => {
                self.last = Some((t_s, r));
                self.total_j += j;
                Delta::Joules(j)
            }
            Err((kind, rebase)) => {
                // A usable value becomes the new base; an unusable one (above the range,
                // a bad power) leaves none, so the next reading starts afresh.
                self.last = rebase.then_some((t_s, r));
                if !rebase {
                    self.power.forget();
                }
                self.glitches += 1;
                if self.first_glitch.is_none() {
                    self.first_glitch = Some(Glitch { t_s, kind });
                }
                Delta::Glitch
            }
        }
    }

    fn watch(&mut self, t_s: f64, value: u64) {
        let s = &mut self.still;
        match s.first {
            None => s.first = Some((t_s, value)),
            Some((_, v0)) => s.moved |= value != v0,
        }
        s.last_t = t_s;
        s.readings += 1;
    }

    /// For a counter that has not changed at all since its first reading, over at least
    /// [`STUCK_MIN_S`] and [`STUCK_MIN_READINGS`] readings: how long it stayed still.
    pub fn unchanged_for_s(&self) -> Option<f64> {
        let s = &self.still;
        let (t0, _) = s.first?;
        let span = s.last_t - t0;
        (!s.moved && s.readings >= STUCK_MIN_READINGS && span >= STUCK_MIN_S).then_some(span)
    }

    /// Whether a previous reading exists, i.e. whether the next `update` yields a delta.
    pub fn has_last(&self) -> bool {
        self.last.is_some()
    }

    /// Forget the last reading (after a failed read) so the next one starts afresh
    /// instead of spanning an unknown gap.
    pub fn forget(&mut self) {
        self.last = None;
        self.power.forget();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctr(value: u64, range: u64) -> Reading {
        Reading::Counter {
            value,
            wrap: Wrap::At(range),
            joules_per_unit: 1e-6,
        }
    }

    #[test]
    fn plain_and_wrapped_deltas() {
        assert_eq!(counter_delta(10, 25, Wrap::At(100)), (15, Step::Plain));
        assert_eq!(counter_delta(90, 5, Wrap::At(100)), (15, Step::Wrapped));
        assert_eq!(counter_delta(7, 7, Wrap::At(100)), (0, Step::Plain));
        assert_eq!(
            counter_delta(u64::MAX - 1, 3, Wrap::Full64),
            (5, Step::Wrapped)
        );
        assert_eq!(counter_delta(50, 20, Wrap::Unknown), (20, Step::Reset));
        // Previous value beyond the declared range: not a wrap we can trust.
        assert_eq!(counter_delta(500, 20, Wrap::At(100)), (20, Step::Reset));
        // Intel ESU=14 range.
        let r = 262_143_328_850;
        assert_eq!(
            counter_delta(r - 1_000, 2_000, Wrap::At(r)),
            (3_000, Step::Wrapped)
        );
    }

    #[test]
    fn wrap_between_first_two_ticks() {
        let mut a = Accumulator::new();
        assert_eq!(a.update(0.0, ctr(99_000_000, 100_000_000)), 0.0);
        let d = a.update(0.1, ctr(500_000, 100_000_000));
        assert!((d - 1.5).abs() < 1e-12);
        assert_eq!(a.wraps, 1);
    }

    #[test]
    fn several_wraps_over_a_run() {
        // 10 W for 100 s, range 65 J: wraps every 6.5 s, sampled every 0.1 s.
        let range: u64 = 65_000_000;
        let mut a = Accumulator::new();
        let mut truth_uj: u64 = 12_345_678;
        a.update(0.0, ctr(truth_uj % range, range));
        for i in 1..=1000 {
            truth_uj += 1_000_000; // 1 J per 0.1 s
            a.update(i as f64 * 0.1, ctr(truth_uj % range, range));
        }
        assert!((a.total_j - 1000.0).abs() < 1e-6, "{}", a.total_j);
        assert_eq!(a.wraps, (12_345_678 + 1_000_000_000) / range);
        assert!(a.wraps >= 15);
    }

    #[test]
    fn power_is_integrated_by_trapezoid() {
        let mut a = Accumulator::new();
        a.update(0.0, Reading::Power { watts: 10.0 });
        a.update(1.0, Reading::Power { watts: 20.0 });
        a.update(3.0, Reading::Power { watts: 20.0 });
        assert!((a.total_j - (15.0 + 40.0)).abs() < 1e-12);
    }

    #[test]
    fn forget_restarts_cleanly() {
        let mut a = Accumulator::new();
        a.update(0.0, ctr(10, 100));
        a.forget();
        assert_eq!(a.update(1.0, ctr(5, 100)), 0.0);
        assert_eq!(a.wraps, 0);
    }

    // ---- plausibility ------------------------------------------------------------

    const INTEL_RANGE: u64 = 262_143_328_850;

    fn package() -> Accumulator {
        Accumulator::for_domain(&Domain::new(
            DomainKind::Package,
            Some(0),
            crate::sources::SourceKind::Powercap,
        ))
    }

    fn msr(value: u64, jpu: f64) -> Reading {
        Reading::Counter {
            value,
            wrap: Wrap::At(1 << 32),
            joules_per_unit: jpu,
        }
    }

    fn raw(value: u64, wrap: Wrap) -> Reading {
        Reading::Counter {
            value,
            wrap,
            joules_per_unit: 1e-6,
        }
    }

    fn first_glitch(a: &Accumulator) -> &Glitch {
        a.first_glitch.as_ref().expect("a glitch was recorded")
    }

    #[test]
    fn ceilings_per_kind_and_for_a_window() {
        assert_eq!(package().max_power_w(), 1000.0);
        assert_eq!(Accumulator::new().max_power_w(), 2000.0);
        // 1000 W for 100 ms plus 25 ms of counter lag.
        assert!((plausible_max_j(1000.0, 0.1) - 125.0).abs() < 1e-9);
        // A window can only be late, never negative.
        assert_eq!(plausible_max_j(1000.0, -1.0), 25.0);
    }

    #[test]
    fn a_counter_stepping_down_without_a_wrap_is_a_glitch_not_262_kj() {
        let mut a = package();
        let p = 100_000_000_000; // 100 kJ into the Intel range
        assert_eq!(a.step(0.0, 0.0, ctr(p, INTEL_RANGE)), Delta::Start);
        assert_eq!(
            a.step(0.1, 0.1, ctr(p + 2_000_000, INTEL_RANGE)),
            Delta::Joules(2.0)
        );
        // Down by 1 kJ at 1.2 s: a wrap would be 261 kJ in the 1.1 s since the last
        // reading.
        let down = p + 2_000_000 - 1_000_000_000;
        let d = a.step(1.2, 1.2, ctr(down, INTEL_RANGE));
        assert_eq!(d, Delta::Glitch);
        assert_eq!(a.total_j, 2.0);
        assert_eq!((a.wraps, a.resets, a.glitches), (0, 0, 1));
        let g = first_glitch(&a);
        assert_eq!(g.t_s, 1.2);
        match g.kind {
            GlitchKind::Down { by_j, wrap_w } => {
                assert!((by_j - 1000.0).abs() < 1e-9, "{by_j}");
                assert!((wrap_w - 261_143.328_85 / 1.1).abs() < 0.01, "{wrap_w}");
            }
            ref k => panic!("{k:?}"),
        }
        assert_eq!(
            g.kind.to_string(),
            "the counter went down by 1.00 kJ without a plausible wrap, which would mean 237,403 W"
        );
        // Re-based on the new value: the next interval is measured normally.
        assert_eq!(
            a.step(1.3, 1.3, ctr(down + 3_000_000, INTEL_RANGE)),
            Delta::Joules(3.0)
        );
        assert_eq!(a.total_j, 5.0);
        assert_eq!(a.glitches, 1);
        // A second glitch is counted; the first one is kept.
        assert_eq!(a.step(1.4, 1.4, ctr(5, INTEL_RANGE)), Delta::Glitch);
        assert_eq!(a.glitches, 2);
        assert_eq!(first_glitch(&a).t_s, 1.2);
    }

    #[test]
    fn an_msr_reset_to_zero_is_a_glitch_not_653_kw() {
        // ESU 16: 2^32 units are 65.5 kJ; a wrap from 1000 units to 0 would be 65.5 kJ
        // in 100 ms.
        let jpu = 1.0 / 65536.0;
        let mut a = package();
        a.step(0.0, 0.0, msr(1000, jpu));
        assert_eq!(a.step(0.1, 0.1, msr(0, jpu)), Delta::Glitch);
        assert_eq!(a.total_j, 0.0);
        assert_eq!(a.wraps, 0);
        let w = first_glitch(&a).kind.implied_w().unwrap();
        assert!((w - 655_359.8).abs() < 1.0, "{w}");
        // From the reset value on, counting resumes.
        let d = a.step(0.2, 0.2, msr(65536, jpu));
        assert_eq!(d, Delta::Joules(1.0));
    }

    #[test]
    fn a_forward_jump_of_1e12_microjoules_is_a_glitch_not_1_mw() {
        for wrap in [Wrap::Unknown, Wrap::Full64, Wrap::At(u64::MAX)] {
            let mut a = package();
            a.step(0.0, 0.0, raw(5_000_000, wrap));
            assert_eq!(
                a.step(1.0, 1.0, raw(1_000_005_000_000, wrap)),
                Delta::Glitch
            );
            assert_eq!(a.total_j, 0.0, "{wrap:?}");
            match first_glitch(&a).kind {
                GlitchKind::Jump {
                    by_j,
                    window_s,
                    implied_w,
                } => {
                    assert_eq!((by_j, window_s), (1e6, 1.0));
                    assert_eq!(implied_w, 1e6);
                }
                ref k => panic!("{k:?}"),
            }
            assert_eq!(
                first_glitch(&a).kind.to_string(),
                "the counter jumped by 1.00 MJ in 1.00 s, which would mean 1,000,000 W"
            );
            // 10 W afterwards is measured.
            assert_eq!(
                a.step(2.0, 2.0, raw(1_000_015_000_000, wrap)),
                Delta::Joules(10.0)
            );
        }
    }

    #[test]
    fn genuine_wraps_at_100_ms_and_at_10_s_are_counted_exactly() {
        // 100 ms at 35 W across the Intel range.
        let mut a = package();
        a.step(0.0, 0.0, ctr(INTEL_RANGE - 1_000_000, INTEL_RANGE));
        assert_eq!(
            a.step(0.1, 0.1, ctr(2_500_000, INTEL_RANGE)),
            Delta::Joules(3.5)
        );
        // 10 s at 900 W (the -i maximum, near the ceiling) across the same range.
        let mut b = package();
        b.step(0.0, 0.0, ctr(INTEL_RANGE - 4_000_000_000, INTEL_RANGE));
        assert_eq!(
            b.step(10.0, 10.0, ctr(5_000_000_000, INTEL_RANGE)),
            Delta::Joules(9000.0)
        );
        // A 32-bit MSR at ESU 16 over 10 s at 500 W.
        let jpu = 1.0 / 65536.0;
        let mut c = package();
        c.step(0.0, 0.0, msr((1 << 32) - 65536 * 1000, jpu));
        assert_eq!(
            c.step(10.0, 10.0, msr(65536 * 4000, jpu)),
            Delta::Joules(5000.0)
        );
        for x in [&a, &b, &c] {
            assert_eq!((x.wraps, x.glitches), (1, 0));
        }
        // A counter at its last value (powercap's energy_uj can equal the range).
        let mut b = package();
        b.step(0.0, 0.0, ctr(INTEL_RANGE, INTEL_RANGE));
        assert_eq!(
            b.step(0.1, 0.1, ctr(1_000_000, INTEL_RANGE)),
            Delta::Joules(1.0)
        );
        assert_eq!((b.wraps, b.glitches), (1, 0));
    }

    #[test]
    fn unknown_wraps_count_from_zero_only_when_that_is_plausible() {
        let mut a = package();
        a.step(0.0, 0.0, raw(50_000_000, Wrap::Unknown));
        // Down to 3 J: counted from zero, a lower bound.
        assert_eq!(
            a.step(0.1, 0.1, raw(3_000_000, Wrap::Unknown)),
            Delta::Joules(3.0)
        );
        assert_eq!((a.resets, a.glitches), (1, 0));
        // Down from 900 J to 800 J: counting 800 J from zero in 100 ms is 8 kW.
        let mut b = package();
        b.step(0.0, 0.0, raw(900_000_000, Wrap::Unknown));
        assert_eq!(
            b.step(0.1, 0.1, raw(800_000_000, Wrap::Unknown)),
            Delta::Glitch
        );
        assert_eq!((b.resets, b.glitches, b.total_j), (0, 1, 0.0));
        let text = first_glitch(&b).kind.to_string();
        assert!(
            text.starts_with("the counter went down by 100 J, and with its range unknown counting from zero would mean 8,000 W"),
            "{text}"
        );
    }

    #[test]
    fn a_64_bit_counter_going_down_is_a_glitch() {
        let mut a = package();
        // perf's scale: 2^-32 J per count.
        let perf = |value| Reading::Counter {
            value,
            wrap: Wrap::Full64,
            joules_per_unit: 2.328_306_436_538_696_3e-10,
        };
        a.step(0.0, 0.0, perf(1 << 40));
        assert_eq!(a.step(0.1, 0.1, perf(1 << 39)), Delta::Glitch);
        assert_eq!((a.wraps, a.total_j), (0, 0.0));
        assert!(matches!(first_glitch(&a).kind, GlitchKind::Down { .. }));
        // 10 W afterwards.
        assert_eq!(
            a.step(0.2, 0.2, perf((1 << 39) + (1 << 32))),
            Delta::Joules(1.0)
        );
    }

    #[test]
    fn a_value_above_its_range_is_a_glitch_and_no_base() {
        let mut a = package();
        a.step(0.0, 0.0, ctr(100, 1000));
        assert_eq!(a.step(0.1, 0.1, ctr(5000, 1000)), Delta::Glitch);
        assert_eq!(
            first_glitch(&a).kind,
            GlitchKind::AboveRange {
                value: 5000,
                range: 1000
            }
        );
        assert!(!a.has_last());
        // Back in range: starts afresh, then measures.
        assert_eq!(a.step(0.2, 0.2, ctr(200, 1000)), Delta::Start);
        match a.step(0.3, 0.3, ctr(300, 1000)) {
            Delta::Joules(j) => assert!((j - 1e-4).abs() < 1e-15, "{j}"),
            d => panic!("{d:?}"),
        }
        assert_eq!(a.glitches, 1);
    }

    #[test]
    fn nan_negative_and_absurd_power_add_nothing() {
        let mut a = package();
        a.step(0.0, 0.0, Reading::Power { watts: 10.0 });
        assert_eq!(
            a.step(1.0, 1.0, Reading::Power { watts: 10.0 }),
            Delta::Joules(10.0)
        );
        for (i, bad) in [f64::NAN, -5.0, 1e9, f64::INFINITY].into_iter().enumerate() {
            let t = 2.0 + 2.0 * i as f64;
            assert_eq!(a.step(t, t, Reading::Power { watts: bad }), Delta::Glitch);
            // No base is left: the next interval starts afresh, nothing is bridged.
            assert_eq!(
                a.step(t + 1.0, t + 1.0, Reading::Power { watts: 10.0 }),
                Delta::Start
            );
        }
        assert_eq!(a.total_j, 10.0);
        assert_eq!(a.glitches, 4);
        assert_eq!(
            first_glitch(&a).kind.to_string(),
            "a power reading that is not a number"
        );
        let neg = GlitchKind::Power {
            watts: -5.0,
            max_w: 1000.0,
        };
        assert_eq!(neg.to_string(), "a negative power reading, -5.00 W");
        let big = GlitchKind::Power {
            watts: 1e9,
            max_w: 1000.0,
        };
        assert_eq!(
            big.to_string(),
            "a power reading of 1,000,000,000 W, above the plausible 1,000 W"
        );
        // The ceiling itself is plausible.
        a.step(20.0, 20.0, Reading::Power { watts: 1000.0 });
        assert_eq!(
            a.step(21.0, 21.0, Reading::Power { watts: 1000.0 }),
            Delta::Joules(1000.0)
        );
    }

    #[test]
    fn a_late_read_is_judged_over_the_longest_interval_it_can_have_spanned() {
        // 1 ms ticks, but this read finished 100 ms after the tick's time (the thread was
        // descheduled): 50 J at 500 W is plausible over 101 ms, not over 1 ms.
        let mut a = package();
        a.step(0.000, 0.000, ctr(0, INTEL_RANGE));
        assert_eq!(
            a.step(0.001, 0.101, ctr(50_000_000, INTEL_RANGE)),
            Delta::Joules(50.0)
        );
        let mut b = package();
        b.step(0.000, 0.000, ctr(0, INTEL_RANGE));
        assert_eq!(
            b.step(0.001, 0.001, ctr(50_000_000, INTEL_RANGE)),
            Delta::Glitch
        );
        // One tick of counter lag at the ceiling is always allowed: 25 J in 1 ms.
        let mut c = package();
        c.step(0.000, 0.000, ctr(0, INTEL_RANGE));
        assert_eq!(
            c.step(0.001, 0.001, ctr(25_000_000, INTEL_RANGE)),
            Delta::Joules(25.0)
        );
    }

    #[test]
    fn the_model_is_integrated_over_the_callers_clock() {
        let model = |busy_cpu_s| Reading::Model {
            busy_cpu_s,
            cpus: 2,
            idle_w: 10.0,
            max_w: 10.0,
        };
        let mut a = Accumulator::with_max_power(15.0);
        a.step(0.0, 0.0, model(100.0));
        a.step(0.0013, 0.0013, model(100.0));
        a.step(0.0021, 0.0021, model(100.01));
        // A constant 10 W model is exactly 10 W over the times it was given.
        assert!((a.total_j / 0.0021 - 10.0).abs() < 1e-9, "{}", a.total_j);
        // Not finite, or no CPU: a glitch.
        let bad = Reading::Model {
            busy_cpu_s: f64::NAN,
            cpus: 2,
            idle_w: 10.0,
            max_w: 10.0,
        };
        assert_eq!(a.step(0.003, 0.003, bad), Delta::Glitch);
        assert_eq!(a.glitches, 1);
    }

    #[test]
    fn a_counter_that_never_moves_is_stuck_after_a_second() {
        let mut a = package();
        for i in 0..=10 {
            a.update(i as f64 * 0.1, ctr(777, INTEL_RANGE));
        }
        assert_eq!(a.unchanged_for_s(), Some(1.0));
        // Too short, or too few readings: not yet.
        let mut b = package();
        for i in 0..5 {
            b.update(i as f64 * 0.1, ctr(777, INTEL_RANGE));
        }
        assert_eq!(b.unchanged_for_s(), None);
        let mut c = package();
        c.update(0.0, ctr(777, INTEL_RANGE));
        c.update(5.0, ctr(777, INTEL_RANGE));
        assert_eq!(c.unchanged_for_s(), None);
        // One change anywhere, and it is not stuck.
        a.update(1.1, ctr(778, INTEL_RANGE));
        a.update(1.2, ctr(778, INTEL_RANGE));
        assert_eq!(a.unchanged_for_s(), None);
    }

    #[test]
    fn joules_in_messages() {
        assert_eq!(fmt_j(999_997.0), "1.00 MJ");
        assert_eq!(fmt_j(50_010.0), "50.0 kJ");
        assert_eq!(fmt_j(100.0), "100 J");
        assert_eq!(fmt_j(1e-6), "0.00000100 J");
        assert_eq!(fmt_j(4.3e18), "4.30e18 J");
    }

    #[test]
    fn watts_in_messages() {
        assert_eq!(fmt_w(261_619.4), "261,619 W");
        assert_eq!(fmt_w(1e6), "1,000,000 W");
        assert_eq!(fmt_w(999.4), "999.40 W");
        assert_eq!(fmt_w(12.345), "12.35 W");
        assert_eq!(fmt_w(-2500.0), "-2,500 W");
        assert_eq!(fmt_w(4.3e18), "4.30e18 W");
        assert_eq!(fmt_w(f64::INFINITY), "inf W");
    }
}
