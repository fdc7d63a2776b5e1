//! From readings to joules: wrap-aware deltas of cumulative counters and trapezoidal
//! integration of power readings. Pure arithmetic, no I/O.

use crate::sources::{Reading, Wrap};

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
/// is chosen so that a second wrap cannot happen; see docs/sources.md).
pub fn counter_delta(prev: u64, cur: u64, wrap: Wrap) -> (u64, Step) {
    if cur >= prev {
        return (cur - prev, Step::Plain);
    }
    match wrap {
        Wrap::At(range) if range > prev => (cur + (range - prev), Step::Wrapped),
        // A previous value beyond the declared range: the range is wrong; count from 0.
        Wrap::At(_) => (cur, Step::Reset),
        Wrap::Full64 => (cur.wrapping_sub(prev), Step::Wrapped),
        Wrap::Unknown => (cur, Step::Reset),
    }
}

/// Per-domain state turning successive readings into energy.
#[derive(Clone, Debug, Default)]
pub struct Accumulator {
    last: Option<(f64, Reading)>,
    /// Joules since the first reading.
    pub total_j: f64,
    pub wraps: u64,
    pub resets: u64,
}

impl Accumulator {
    pub fn new() -> Accumulator {
        Accumulator::default()
    }

    /// Feed a reading taken at `t_s` (monotonic seconds). Returns the joules since the
    /// previous reading (0 for the first one).
    pub fn update(&mut self, t_s: f64, r: Reading) -> f64 {
        let delta = match (self.last, r) {
            (
                Some((_, Reading::Counter { value: prev, .. })),
                Reading::Counter {
                    value,
                    wrap,
                    joules_per_unit,
                },
            ) => {
                let (units, step) = counter_delta(prev, value, wrap);
                match step {
                    Step::Plain => {}
                    Step::Wrapped => self.wraps += 1,
                    Step::Reset => self.resets += 1,
                }
                units as f64 * joules_per_unit
            }
            (Some((t0, Reading::Power { watts: p0 })), Reading::Power { watts: p1 }) => {
                let dt = (t_s - t0).max(0.0);
                0.5 * (p0 + p1) * dt
            }
            // First reading, or a source that changed its kind of reading: no energy yet.
            _ => 0.0,
        };
        self.last = Some((t_s, r));
        self.total_j += delta;
        delta
    }

    /// Forget the last reading (after a failed read) so the next one starts afresh
    /// instead of spanning an unknown gap.
    pub fn forget(&mut self) {
        self.last = None;
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
}
