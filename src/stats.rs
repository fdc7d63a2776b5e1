//! Statistics of repeated runs: descriptive figures with a t-based confidence interval,
//! and Welch's t-test between two series. The t distribution comes from `statrs`; the
//! rest is written out here so each formula can be read and tested against published
//! values.
//!
//! * mean `m = Σx / n`, sample standard deviation `s = sqrt(Σ(x - m)² / (n - 1))`;
//! * the 95% confidence interval of the mean, `m ± t(0.975, n-1) · s / sqrt(n)`, and its
//!   half-width relative to the mean (what `perf stat -r` prints as "+- x%");
//! * Welch's test of `m_b - m_a`: `se = sqrt(s_a²/n_a + s_b²/n_b)`, `t = (m_b - m_a) / se`,
//!   degrees of freedom by Welch–Satterthwaite,
//!   `df = se⁴ / ((s_a²/n_a)² / (n_a - 1) + (s_b²/n_b)² / (n_b - 1))`, the two-sided
//!   p-value `2 · (1 - F_t(|t|; df))`, and the `(1 - α)` interval of the difference
//!   `(m_b - m_a) ± t(1 - α/2, df) · se`.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

/// Descriptive statistics of one quantity over the runs of a series.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (0 with one run).
    pub sd: f64,
    pub min: f64,
    pub max: f64,
    /// The 95% confidence interval of the mean (`mean` itself with one run).
    pub ci95_low: f64,
    pub ci95_high: f64,
    /// The interval's half-width as a percentage of the mean (0 when the mean is 0).
    pub ci95_pct: f64,
}

/// The `p` quantile of Student's t distribution with `df` degrees of freedom.
pub fn t_quantile(p: f64, df: f64) -> f64 {
    match StudentsT::new(0.0, 1.0, df) {
        Ok(t) => t.inverse_cdf(p),
        Err(_) => f64::NAN,
    }
}

/// The cumulative probability of `x` under Student's t with `df` degrees of freedom.
pub fn t_cdf(x: f64, df: f64) -> f64 {
    match StudentsT::new(0.0, 1.0, df) {
        Ok(t) => t.cdf(x),
        Err(_) => f64::NAN,
    }
}

/// Mean and sample standard deviation.
fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let sd = if xs.len() > 1 {
        (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (mean, sd)
}

/// The statistics of `xs`; `None` when it is empty or holds a value that is not finite.
pub fn describe(xs: &[f64]) -> Option<Stats> {
    if xs.is_empty() || xs.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let (mean, sd) = mean_sd(xs);
    let n = xs.len();
    let half = if n > 1 {
        t_quantile(0.975, (n - 1) as f64) * sd / (n as f64).sqrt()
    } else {
        0.0
    };
    Some(Stats {
        n,
        mean,
        sd,
        min: xs.iter().cloned().fold(f64::INFINITY, f64::min),
        max: xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
        ci95_low: mean - half,
        ci95_high: mean + half,
        ci95_pct: if mean != 0.0 {
            100.0 * half / mean.abs()
        } else {
            0.0
        },
    })
}

/// One side of a comparison: a mean and the variance of that mean, with the degrees of
/// freedom it was estimated with (`None`: known, infinite degrees of freedom).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub mean: f64,
    /// The variance of the mean: `s² / n` for a series.
    pub var: f64,
    pub df: Option<f64>,
}

impl Sample {
    /// A series of at least two finite values: `s² / n` with `n - 1` degrees of freedom.
    pub fn of_runs(xs: &[f64]) -> Option<Sample> {
        if xs.len() < 2 || xs.iter().any(|x| !x.is_finite()) {
            return None;
        }
        let (mean, sd) = mean_sd(xs);
        let n = xs.len() as f64;
        Some(Sample {
            mean,
            var: sd * sd / n,
            df: Some(n - 1.0),
        })
    }

    /// One measurement `x` with a stated standard uncertainty `u` (a "type B" uncertainty
    /// in the GUM's terms: known, so infinite degrees of freedom).
    pub fn measured_once(x: f64, u: f64) -> Option<Sample> {
        (x.is_finite() && u.is_finite() && u >= 0.0).then_some(Sample {
            mean: x,
            var: u * u,
            df: None,
        })
    }
}

/// Welch's t-test of `b` against `a` (the change from `a` to `b`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Welch {
    /// `mean(b) - mean(a)`.
    pub diff: f64,
    pub se: f64,
    pub t: f64,
    /// Welch–Satterthwaite degrees of freedom (`None`: infinite, the normal distribution).
    pub df: Option<f64>,
    /// Two-sided p-value.
    pub p: f64,
    /// The `(1 - alpha)` confidence interval of `diff`.
    pub ci_low: f64,
    pub ci_high: f64,
}

/// Welch–Satterthwaite: `(v_a + v_b)² / (v_a² / df_a + v_b² / df_b)`, where a side of
/// infinite degrees of freedom adds nothing to the denominator. `None`: infinite.
pub fn welch_satterthwaite(a: &Sample, b: &Sample) -> Option<f64> {
    let term = |s: &Sample| s.df.map_or(0.0, |df| s.var * s.var / df);
    let den = term(a) + term(b);
    (den > 0.0).then(|| (a.var + b.var).powi(2) / den)
}

/// The two-sided quantile `1 - alpha / 2` and the cdf, of Student's t with `df` degrees of
/// freedom, or of the standard normal for infinite `df`.
fn quantile(p: f64, df: Option<f64>) -> f64 {
    match df {
        Some(df) => t_quantile(p, df),
        None => statrs::distribution::Normal::standard().inverse_cdf(p),
    }
}

fn cdf(x: f64, df: Option<f64>) -> f64 {
    match df {
        Some(df) => t_cdf(x, df),
        None => statrs::distribution::Normal::standard().cdf(x),
    }
}

/// Welch's test of sample `b` against sample `a`. With no uncertainty on either side
/// (`se = 0`), a difference is certain (p = 0) and no difference is none (p = 1).
pub fn welch_samples(a: &Sample, b: &Sample, alpha: f64) -> Welch {
    let se = (a.var + b.var).sqrt();
    let diff = b.mean - a.mean;
    let df = welch_satterthwaite(a, b);
    if se == 0.0 || !se.is_finite() {
        return Welch {
            diff,
            se,
            t: if diff == 0.0 {
                0.0
            } else {
                diff.signum() * f64::INFINITY
            },
            df,
            p: if diff == 0.0 { 1.0 } else { 0.0 },
            ci_low: diff,
            ci_high: diff,
        };
    }
    let t = diff / se;
    let p = (2.0 * (1.0 - cdf(t.abs(), df))).clamp(0.0, 1.0);
    let half = quantile(1.0 - alpha / 2.0, df) * se;
    Welch {
        diff,
        se,
        t,
        df,
        p,
        ci_low: diff - half,
        ci_high: diff + half,
    }
}

/// Welch's test between two series; `None` unless both have at least two finite values.
pub fn welch(a: &[f64], b: &[f64], alpha: f64) -> Option<Welch> {
    Some(welch_samples(
        &Sample::of_runs(a)?,
        &Sample::of_runs(b)?,
        alpha,
    ))
}

/// Holm's step-down adjustment of p-values: with them, rejecting every hypothesis whose
/// adjusted p is below `alpha` keeps the chance of any false rejection among all of them
/// at most `alpha`, whatever their dependence.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&i, &j| p[i].total_cmp(&p[j]));
    let mut out = vec![1.0; m];
    let mut running: f64 = 0.0;
    for (rank, &i) in order.iter().enumerate() {
        let adj = ((m - rank) as f64 * p[i]).min(1.0);
        running = running.max(adj);
        out[i] = running;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn t_quantiles_match_the_tables() {
        for (df, want) in [
            (1.0, 12.706205),
            (4.0, 2.776445),
            (9.0, 2.262157),
            (30.0, 2.042272),
            (1000.0, 1.962339),
        ] {
            let got = t_quantile(0.975, df);
            assert!(close(got, want, 1e-5), "df {df}: {got} vs {want}");
        }
        assert!(close(t_quantile(0.95, 10.0), 1.812461, 1e-5));
    }

    #[test]
    fn descriptive_statistics() {
        let s = describe(&[10.0, 12.0, 11.0, 13.0, 9.0]).unwrap();
        assert_eq!((s.n, s.mean, s.min, s.max), (5, 11.0, 9.0, 13.0));
        assert!(close(s.sd, 2.5f64.sqrt(), 1e-12));
        // 11 ± 2.776445 · 1.5811 / 2.2361 = 11 ± 1.9632
        assert!(close(s.ci95_high - 11.0, 1.963243, 1e-5), "{s:?}");
        assert!(close(s.ci95_pct, 100.0 * 1.963243 / 11.0, 1e-4));
        let one = describe(&[4.0]).unwrap();
        assert_eq!(
            (one.sd, one.ci95_low, one.ci95_high, one.ci95_pct),
            (0.0, 4.0, 4.0, 0.0)
        );
        assert_eq!(describe(&[]), None);
        assert_eq!(describe(&[1.0, f64::NAN]), None);
    }

    /// The three examples of Welch's test on Wikipedia's "Welch's t-test" page (values
    /// there are rounded to the digits compared here).
    #[test]
    fn welch_matches_published_examples() {
        let a1 = [
            27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7,
            21.4,
        ];
        let a2 = [
            27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5,
            24.4,
        ];
        let w = welch(&a2, &a1, 0.05).unwrap(); // t of a1 - a2, as published
        assert!(close(w.t, -2.46, 0.01), "{w:?}");
        assert!(close(w.df.unwrap(), 24.9, 0.1), "{w:?}");
        assert!(close(w.p, 0.021, 0.001), "{w:?}");

        let b1 = [17.2, 20.9, 22.6, 18.1, 21.7, 21.4, 23.5, 24.2, 14.7, 21.8];
        let b2 = [
            21.5, 22.8, 21.0, 23.0, 21.6, 23.6, 22.5, 20.7, 23.4, 21.8, 20.7, 21.7, 21.5, 22.5,
            23.6, 21.5, 22.5, 23.5, 21.5, 21.8,
        ];
        let w = welch(&b2, &b1, 0.05).unwrap();
        assert!(close(w.t, -1.57, 0.01), "{w:?}");
        assert!(close(w.df.unwrap(), 9.9, 0.1), "{w:?}");
        assert!(close(w.p, 0.149, 0.001), "{w:?}");

        let c1 = [19.8, 20.4, 19.6, 17.8, 18.5, 18.9, 18.3, 18.9, 19.5, 22.0];
        let c2 = [
            28.2, 26.6, 20.1, 23.3, 25.2, 22.1, 17.7, 27.6, 20.6, 13.7, 23.2, 17.5, 20.6, 18.0,
            23.9, 21.6, 24.3, 20.4, 23.9, 13.3,
        ];
        let w = welch(&c2, &c1, 0.05).unwrap();
        assert!(close(w.t, -2.22, 0.01), "{w:?}");
        assert!(close(w.df.unwrap(), 24.5, 0.1), "{w:?}");
        assert!(close(w.p, 0.036, 0.001), "{w:?}");
        // The interval of the difference excludes 0 exactly when p < alpha.
        assert!(w.ci_high < 0.0);
    }

    #[test]
    fn welch_edge_cases() {
        assert_eq!(welch(&[1.0], &[1.0, 2.0], 0.05), None);
        let same = welch(&[5.0, 5.0], &[5.0, 5.0], 0.05).unwrap();
        assert_eq!((same.p, same.diff), (1.0, 0.0));
        let shift = welch(&[5.0, 5.0], &[6.0, 6.0], 0.05).unwrap();
        assert_eq!(shift.p, 0.0);
    }

    /// Welch–Satterthwaite written out against a worked value: s_a² = 4, n_a = 5,
    /// s_b² = 9, n_b = 10: v = 0.8 + 0.9 = 1.7, df = 1.7² / (0.8²/4 + 0.9²/9) = 2.89 /
    /// 0.25 = 11.56.
    #[test]
    fn satterthwaite_worked_example() {
        let a = Sample {
            mean: 0.0,
            var: 0.8,
            df: Some(4.0),
        };
        let b = Sample {
            mean: 0.0,
            var: 0.9,
            df: Some(9.0),
        };
        assert!(close(welch_satterthwaite(&a, &b).unwrap(), 11.56, 1e-12));
        // A side known exactly (a single run's stated uncertainty) adds no term.
        let once = Sample::measured_once(10.0, 0.5).unwrap();
        assert!(close(
            welch_satterthwaite(&a, &once).unwrap(),
            (0.8f64 + 0.25).powi(2) / 0.16,
            1e-12
        ));
        assert_eq!(welch_satterthwaite(&once, &once), None);
    }

    /// Two single runs against their stated uncertainty: a z-test. 100 J ± 2.5 J (one
    /// standard uncertainty each) against 110 J: z = 10 / sqrt(12.5) = 2.828, p = 0.00468.
    #[test]
    fn single_runs_use_the_normal_distribution() {
        let a = Sample::measured_once(100.0, 2.5).unwrap();
        let b = Sample::measured_once(110.0, 2.5).unwrap();
        let w = welch_samples(&a, &b, 0.05);
        assert_eq!(w.df, None);
        assert!(close(w.t, 2.828427, 1e-6), "{w:?}");
        assert!(close(w.p, 0.004678, 1e-5), "{w:?}");
        assert!(close(w.ci_low, 10.0 - 1.959964 * 12.5f64.sqrt(), 1e-5));
    }

    /// Holm on the textbook example: p = 0.01, 0.04, 0.03, 0.005 (m = 4) adjust to
    /// 0.03, 0.06, 0.06, 0.02.
    #[test]
    fn holm_adjustment() {
        let adj = holm(&[0.01, 0.04, 0.03, 0.005]);
        for (got, want) in adj.iter().zip([0.03, 0.06, 0.06, 0.02]) {
            assert!(close(*got, want, 1e-12), "{adj:?}");
        }
        assert_eq!(holm(&[]), Vec::<f64>::new());
        assert_eq!(holm(&[0.9, 0.8]), vec![1.0, 1.0]);
    }
}
