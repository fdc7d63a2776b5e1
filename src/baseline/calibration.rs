//! Calibration: per-domain idle power statistics and the busy-machine rule.

use std::time::SystemTime;

use serde::Serialize;

use super::{Baseline, MachineIdentity};
use crate::sources::{Domain, SourceKind};

/// Mean CPU utilisation (fraction of all CPUs) above which calibration is refused.
pub const BUSY_THRESHOLD: f64 = 0.10;
/// Mean CPU utilisation above which calibration is kept with a warning.
pub const WARN_THRESHOLD: f64 = 0.05;

/// Idle power statistics of one domain.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PowerStats {
    /// `Σ E / Σ dt`, W.
    pub mean_w: f64,
    /// Time-weighted standard deviation of the per-tick power, W.
    pub stddev_w: f64,
    pub min_w: f64,
    pub max_w: f64,
    pub samples: u64,
}

/// Streaming [`PowerStats`]: feed `(dt, energy)` per tick (West's weighted algorithm, stable).
#[derive(Clone, Debug, Default)]
pub struct PowerStatsAcc {
    time_s: f64,
    mean_w: f64,
    m2: f64,
    min_w: f64,
    max_w: f64,
    samples: u64,
}

impl PowerStatsAcc {
    pub fn new() -> PowerStatsAcc {
        PowerStatsAcc::default()
    }

    /// Add one tick. Ignored when `dt_s <= 0`, or either value is not finite, or the energy
    /// is negative.
    pub fn push(&mut self, dt_s: f64, energy_j: f64) {
        if !(dt_s.is_finite() && dt_s > 0.0 && energy_j.is_finite() && energy_j >= 0.0) {
            return;
        }
        let p = energy_j / dt_s;
        if !p.is_finite() {
            return;
        }
        if self.samples == 0 {
            self.min_w = p;
            self.max_w = p;
        } else {
            self.min_w = self.min_w.min(p);
            self.max_w = self.max_w.max(p);
        }
        self.samples += 1;
        self.time_s += dt_s;
        let old = self.mean_w;
        self.mean_w += dt_s / self.time_s * (p - old);
        self.m2 += dt_s * (p - old) * (p - self.mean_w);
    }

    /// The statistics, `None` without a valid tick.
    pub fn finish(&self) -> Option<PowerStats> {
        (self.samples > 0 && self.time_s > 0.0).then(|| PowerStats {
            mean_w: self.mean_w,
            stddev_w: (self.m2 / self.time_s).max(0.0).sqrt(),
            min_w: self.min_w,
            max_w: self.max_w,
            samples: self.samples,
        })
    }
}

/// [`PowerStats`] of `(dt_s, energy_j)` ticks.
pub fn power_stats(ticks: &[(f64, f64)]) -> Option<PowerStats> {
    let mut acc = PowerStatsAcc::new();
    for (dt, e) in ticks {
        acc.push(*dt, *e);
    }
    acc.finish()
}

/// What to do with a calibration, given the machine's CPU utilisation during it.
#[derive(Clone, Debug, PartialEq)]
pub enum BusyVerdict {
    /// Idle enough.
    Ok,
    /// Keep it, but say this.
    Warn(String),
    /// Do not store it; say this (suggests `--force`).
    Refuse(String),
}

/// The rule: `> BUSY_THRESHOLD` refuses unless `force` (then warns); above
/// `WARN_THRESHOLD` warns; unknown utilisation warns.
pub fn busy_verdict(mean_utilisation: Option<f64>, force: bool) -> BusyVerdict {
    let Some(u) = mean_utilisation.filter(|u| u.is_finite()) else {
        return BusyVerdict::Warn(
            "CPU utilisation during calibration is unknown: make sure the machine was idle"
                .to_string(),
        );
    };
    let pct = |x: f64| x * 100.0;
    if u > BUSY_THRESHOLD {
        let msg = format!(
            "the machine was busy during calibration: {:.1} % mean CPU utilisation, above the \
             {:.0} % limit; the baseline would include that load",
            pct(u),
            pct(BUSY_THRESHOLD)
        );
        if force {
            BusyVerdict::Warn(format!("{msg} (kept because of --force)"))
        } else {
            BusyVerdict::Refuse(format!(
                "{msg}. Stop other work and run `joulerun --basepower` again, or add --force to \
                 keep it anyway"
            ))
        }
    } else if u > WARN_THRESHOLD {
        BusyVerdict::Warn(format!(
            "the machine was not fully idle during calibration: {:.1} % mean CPU utilisation; \
             the baseline may be a little high",
            pct(u)
        ))
    } else {
        BusyVerdict::Ok
    }
}

/// Accumulates a calibration run: per-domain power statistics and CPU utilisation.
#[derive(Clone, Debug)]
pub struct Calibration {
    stats: Vec<PowerStatsAcc>,
    busy_s: f64,
    all_s: f64,
    max_util: Option<f64>,
    duration_s: f64,
}

impl Calibration {
    pub fn new(n_domains: usize) -> Calibration {
        Calibration {
            stats: vec![PowerStatsAcc::new(); n_domains],
            busy_s: 0.0,
            all_s: 0.0,
            max_util: None,
            duration_s: 0.0,
        }
    }

    /// One tick: `energy_j[i]` of domain `i` (`None` when unknown), and the machine's busy
    /// and idle CPU seconds this tick (all CPUs), `None` when not known.
    pub fn tick(&mut self, dt_s: f64, energy_j: &[Option<f64>], cpu: Option<(f64, f64)>) {
        if !(dt_s.is_finite() && dt_s > 0.0) {
            return;
        }
        self.duration_s += dt_s;
        for (acc, e) in self.stats.iter_mut().zip(energy_j) {
            if let Some(e) = e {
                acc.push(dt_s, *e);
            }
        }
        if let Some((busy, idle)) = cpu
            && busy.is_finite()
            && idle.is_finite()
            && busy >= 0.0
            && idle >= 0.0
            && busy + idle > 0.0
        {
            self.busy_s += busy;
            self.all_s += busy + idle;
            let u = busy / (busy + idle);
            self.max_util = Some(self.max_util.map_or(u, |m: f64| m.max(u)));
        }
    }

    /// A sample of a domain read at its own cadence: `energy_j` over `dt_s`.
    pub fn interval(&mut self, domain: usize, dt_s: f64, energy_j: f64) {
        if let Some(acc) = self.stats.get_mut(domain) {
            acc.push(dt_s, energy_j);
        }
    }

    /// Mean utilisation so far, `Σ busy / Σ (busy + idle)`.
    pub fn utilisation(&self) -> Option<f64> {
        (self.all_s > 0.0).then(|| self.busy_s / self.all_s)
    }

    /// Time covered by the ticks, s.
    pub fn duration_s(&self) -> f64 {
        self.duration_s
    }

    pub fn stats(&self) -> Vec<Option<PowerStats>> {
        self.stats.iter().map(|a| a.finish()).collect()
    }

    /// The baseline, or `Err` naming the domains when none of them had a valid tick.
    /// Domains without a valid tick are left out and named in the returned warnings.
    pub fn finish(
        &self,
        machine: &MachineIdentity,
        interface: SourceKind,
        domains: &[Domain],
        interval_ms: u64,
        taken_at: SystemTime,
    ) -> Result<(Baseline, Vec<String>), String> {
        let stats = self.stats();
        let missing: Vec<&str> = domains
            .iter()
            .zip(stats.iter().chain(std::iter::repeat(&None)))
            .filter(|(_, s)| s.is_none())
            .map(|(d, _)| d.name.as_str())
            .collect();
        if missing.len() == domains.len() {
            return Err(format!(
                "no energy could be measured during calibration (domains: {})",
                missing.join(", ")
            ));
        }
        let warnings = if missing.is_empty() {
            Vec::new()
        } else {
            vec![format!(
                "no idle power for {}: not read during calibration, left out of the baseline",
                missing.join(", ")
            )]
        };
        let util = self.utilisation().map(|u| (u, self.max_util.unwrap_or(u)));
        let b = Baseline::new(
            machine,
            interface,
            domains,
            &stats,
            self.duration_s,
            interval_ms,
            util,
            taken_at,
        );
        Ok((b, warnings))
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn stats_on_known_data() {
        // 1 s at 10 W and 3 s at 20 W: mean 17.5 W (time-weighted), variance
        // (1·7.5² + 3·2.5²)/4 = 18.75.
        let s = power_stats(&[(1.0, 10.0), (0.5, 10.0), (2.5, 50.0)]).unwrap();
        assert!((s.mean_w - 17.5).abs() < 1e-12, "{}", s.mean_w);
        assert!((s.stddev_w - 18.75f64.sqrt()).abs() < 1e-12);
        assert_eq!((s.min_w, s.max_w, s.samples), (10.0, 20.0, 3));
        // Constant power: no spread.
        let s = power_stats(&[(0.1, 1.0), (0.1, 1.0), (0.2, 2.0)]).unwrap();
        assert!((s.mean_w - 10.0).abs() < 1e-12);
        assert!(s.stddev_w < 1e-9);
        // Invalid ticks are ignored; nothing valid: None.
        let s = power_stats(&[
            (0.0, 5.0),
            (1.0, f64::NAN),
            (-1.0, 1.0),
            (1.0, -2.0),
            (2.0, 4.0),
        ]);
        assert_eq!(s.unwrap().samples, 1);
        assert_eq!(power_stats(&[]), None);
        assert_eq!(power_stats(&[(0.0, 1.0)]), None);
    }

    #[test]
    fn busy_machine_rule() {
        assert_eq!(busy_verdict(Some(0.01), false), BusyVerdict::Ok);
        assert_eq!(busy_verdict(Some(WARN_THRESHOLD), false), BusyVerdict::Ok);
        assert!(matches!(
            busy_verdict(Some(0.07), false),
            BusyVerdict::Warn(_)
        ));
        assert!(matches!(
            busy_verdict(Some(BUSY_THRESHOLD), false),
            BusyVerdict::Warn(_)
        ));
        match busy_verdict(Some(0.35), false) {
            BusyVerdict::Refuse(m) => {
                assert!(
                    m.contains("35.0 %") && m.contains("10 %") && m.contains("--force"),
                    "{m}"
                )
            }
            v => panic!("{v:?}"),
        }
        match busy_verdict(Some(0.35), true) {
            BusyVerdict::Warn(m) => assert!(m.contains("--force"), "{m}"),
            v => panic!("{v:?}"),
        }
        assert!(matches!(busy_verdict(None, false), BusyVerdict::Warn(_)));
        assert!(matches!(
            busy_verdict(Some(f64::NAN), false),
            BusyVerdict::Warn(_)
        ));
    }

    #[test]
    fn calibration_accumulates() {
        let d = domains();
        let mut c = Calibration::new(d.len());
        // dram never read; 10 % then 30 % busy over equal CPU time: 20 % mean.
        c.tick(1.0, &[Some(20.0), None, Some(10.0)], Some((0.4, 3.6)));
        c.tick(1.0, &[Some(22.0), None, Some(10.0)], Some((1.2, 2.8)));
        c.tick(0.0, &[Some(999.0), None, Some(999.0)], Some((4.0, 0.0)));
        assert!((c.utilisation().unwrap() - 0.2).abs() < 1e-12);
        assert!(matches!(
            busy_verdict(c.utilisation(), false),
            BusyVerdict::Refuse(_)
        ));
        let (b, warnings) = c
            .finish(&machine(), SourceKind::Powercap, &d, 100, UNIX_EPOCH)
            .unwrap();
        assert_eq!(b.domains.len(), 2);
        assert_eq!(b.domains[0].mean_w, 21.0);
        assert_eq!(b.domains[1].name, "package-1");
        assert_eq!(b.duration_s, 2.0);
        assert!((b.cpu_utilisation_max.unwrap() - 0.3).abs() < 1e-12);
        assert_eq!(b.taken_at, "1970-01-01T00:00:00Z");
        assert!(warnings[0].contains("dram-0"), "{warnings:?}");
        // Nothing measured at all: an error.
        let c = Calibration::new(d.len());
        assert!(
            c.finish(&machine(), SourceKind::Powercap, &d, 100, UNIX_EPOCH)
                .is_err()
        );
    }
}
