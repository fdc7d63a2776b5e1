//! The one integrator every power source goes through: power samples (watts, at
//! monotonic times) into joules by the trapezoidal rule.
//!
//! Policy (docs/sources.md, "Power sources and gaps"):
//!
//! * Between two valid samples at most `max_gap_s` apart: the trapezoid,
//!   `(p0 + p1) / 2 * dt`.
//! * Further apart (the source answered late, or skipped a beat without failing): the
//!   last value is **held** over the gap, `p0 * dt`, and the held time is counted, so a
//!   report can say how much of the energy rests on a stale reading. A linear ramp
//!   across a long gap would invent a shape nobody measured.
//! * A failed read (the device did not answer, or is gone): the integrator **forgets**
//!   its last sample ([`Integrator::forget`]); the energy until the next valid sample is
//!   unknown, never interpolated across the missing device.
//! * A sample that is not a number, negative, or above the domain's plausible maximum is
//!   not a sample: it contributes nothing and is counted (as a glitch, by the caller),
//!   and, as after a failed read, the energy from the last valid sample to the next one is
//!   unknown ([`Integrator::forget`]): what the device drew around a garbage reading was
//!   not measured.

/// Trapezoidal integration of power samples, with the gap policy above.
#[derive(Clone, Debug, PartialEq)]
pub struct Integrator {
    last: Option<(f64, f64)>,
    max_gap_s: f64,
    /// Seconds over which a last value was held because samples were too far apart.
    pub held_s: f64,
    /// How many such gaps.
    pub gaps: u64,
}

impl Integrator {
    /// `max_gap_s`: the longest time between two samples still integrated by the
    /// trapezoid (the source's period times a margin: see [`max_gap_for_period`]).
    pub fn new(max_gap_s: f64) -> Integrator {
        Integrator {
            last: None,
            max_gap_s: if max_gap_s.is_finite() && max_gap_s > 0.0 {
                max_gap_s
            } else {
                DEFAULT_MAX_GAP_S
            },
            held_s: 0.0,
            gaps: 0,
        }
    }

    /// A valid sample: `watts` (finite, not negative) at `t_s`. The joules since the
    /// previous valid sample, or `None` for the first one (after a start or a
    /// [`Integrator::forget`]).
    pub fn sample(&mut self, t_s: f64, watts: f64) -> Option<f64> {
        let j = self.last.map(|(t0, p0)| {
            let dt = (t_s - t0).max(0.0);
            if dt <= self.max_gap_s {
                0.5 * (p0 + watts) * dt
            } else {
                self.held_s += dt;
                self.gaps += 1;
                p0 * dt
            }
        });
        self.last = Some((t_s, watts));
        j
    }

    /// Whether a previous valid sample exists.
    pub fn has_last(&self) -> bool {
        self.last.is_some()
    }

    /// A failed read: forget the last sample, so nothing is integrated across the gap.
    pub fn forget(&mut self) {
        self.last = None;
    }
}

/// Used when no period is known: a sampling loop at the default 100 ms, with room.
pub const DEFAULT_MAX_GAP_S: f64 = 1.0;

/// The longest gap integrated by the trapezoid for a source read every `period_s`:
/// three periods, and never less than a second (a loaded machine delays a reader).
pub fn max_gap_for_period(period_s: f64) -> f64 {
    (3.0 * period_s).max(DEFAULT_MAX_GAP_S)
}

/// Integrate `(t_s, watts)` samples with the policy above (a sample that is not a valid
/// power makes the span around it unknown). For tests and recorded series.
pub fn integrate(samples: &[(f64, f64)], max_gap_s: f64) -> f64 {
    let mut i = Integrator::new(max_gap_s);
    let mut total = 0.0;
    for &(t, w) in samples {
        if w.is_finite() && w >= 0.0 {
            total += i.sample(t, w).unwrap_or(0.0);
        } else {
            i.forget();
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_300_w_for_600_s_is_exactly_0_05_kwh() {
        for step in [0.1, 1.0, 0.25] {
            let n = (600.0 / step) as usize;
            let samples: Vec<(f64, f64)> = (0..=n).map(|k| (k as f64 * step, 300.0)).collect();
            let j = integrate(&samples, max_gap_for_period(step));
            assert!((j - 180_000.0).abs() < 1e-6, "{step}: {j}");
            assert!((j / 3.6e6 - 0.05).abs() < 1e-12);
        }
    }

    #[test]
    fn a_sine_wave_matches_its_analytic_integral_within_0_1_percent() {
        // P(t) = 200 + 150 sin(2 pi t / 7), sampled every 0.1 s for 60 s.
        let w = 2.0 * std::f64::consts::PI / 7.0;
        let p = |t: f64| 200.0 + 150.0 * (w * t).sin();
        let exact = |t: f64| 200.0 * t - 150.0 / w * (w * t).cos();
        let samples: Vec<(f64, f64)> = (0..=600)
            .map(|k| (k as f64 * 0.1, p(k as f64 * 0.1)))
            .collect();
        let j = integrate(&samples, 1.0);
        let truth = exact(60.0) - exact(0.0);
        assert!(((j - truth) / truth).abs() < 1e-3, "{j} vs {truth}");
        // Irregular sample times (a loaded reader) still integrate well.
        let mut t = 0.0;
        let mut irregular = Vec::new();
        let mut k = 0u32;
        while t < 60.0 {
            irregular.push((t, p(t)));
            k += 1;
            t += if k.is_multiple_of(3) { 0.17 } else { 0.06 };
        }
        let end = irregular.last().unwrap().0;
        let truth = exact(end) - exact(0.0);
        let j = integrate(&irregular, 1.0);
        assert!(((j - truth) / truth).abs() < 1e-3, "{j} vs {truth}");
    }

    #[test]
    fn a_gap_beyond_the_threshold_holds_the_last_value() {
        let mut i = Integrator::new(1.0);
        assert_eq!(i.sample(0.0, 100.0), None);
        assert_eq!(i.sample(1.0, 200.0), Some(150.0)); // trapezoid
        // 5 s without a sample: 200 W held, not a ramp to 10 W.
        assert_eq!(i.sample(6.0, 10.0), Some(1000.0));
        assert_eq!((i.held_s, i.gaps), (5.0, 1));
    }

    #[test]
    fn a_failed_read_is_never_interpolated_across() {
        let mut i = Integrator::new(1.0);
        i.sample(0.0, 100.0);
        i.sample(0.5, 100.0);
        i.forget(); // the device did not answer
        assert_eq!(i.sample(1.0, 300.0), None);
        assert_eq!(i.sample(1.5, 300.0), Some(150.0));
    }

    #[test]
    fn invalid_samples_contribute_nothing_and_are_not_bridged() {
        // NaN, then a negative value: the spans around them are unknown; integration
        // resumes from the next two valid samples.
        let j = integrate(
            &[
                (0.0, 100.0),
                (0.3, f64::NAN),
                (0.6, -50.0),
                (0.9, 100.0),
                (1.2, 100.0),
            ],
            1.0,
        );
        assert!((j - 30.0).abs() < 1e-9, "{j}");
        let j = integrate(&[(0.0, f64::INFINITY), (1.0, 10.0), (2.0, 10.0)], 1.0);
        assert!((j - 10.0).abs() < 1e-9, "{j}");
    }
}
