//! The tick: read every source, turn readings into per-domain energy since the last tick.
//! The clock is monotonic (`Instant`); times are seconds since `start`.

use std::time::Instant;

use crate::counter::{Accumulator, Delta};
use crate::sources::{Domain, DomainKind, ReadError, Reading, Source};

/// What went wrong with one domain during the run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DomainHealth {
    /// Ticks on which the domain could not be read.
    pub failed_reads: u64,
    /// The first failure: seconds since start and the message.
    pub first_error: Option<(f64, String)>,
}

pub struct Sampler {
    sources: Vec<Box<dyn Source>>,
    /// For source i and its domain j: the index in `domains`, or None when filtered out.
    map: Vec<Vec<Option<usize>>>,
    domains: Vec<Domain>,
    accs: Vec<Accumulator>,
    health: Vec<DomainHealth>,
    buf: Vec<Result<Reading, ReadError>>,
    start: Option<Instant>,
    last_t: f64,
    /// Energy of each domain during the last tick, J.
    pub delta_j: Vec<f64>,
    /// Average power of each domain during the last tick, W.
    pub power_w: Vec<f64>,
    /// `delta_j`, or `None` where this tick's energy is unknown (a failed read, the
    /// first reading after one, or an implausible reading: a glitch).
    pub energy: Vec<Option<f64>>,
    ticks: u64,
}

impl Sampler {
    /// `only`: keep only these domain kinds (empty: all). Estimates are always kept.
    pub fn new(sources: Vec<Box<dyn Source>>, only: &[DomainKind]) -> Sampler {
        let mut domains = Vec::new();
        let mut map = Vec::new();
        for s in &sources {
            let mut m = Vec::new();
            for d in s.domains() {
                let keep =
                    only.is_empty() || only.contains(&d.kind) || d.kind == DomainKind::Estimate;
                if keep {
                    m.push(Some(domains.len()));
                    domains.push(d.clone());
                } else {
                    m.push(None);
                }
            }
            map.push(m);
        }
        let n = domains.len();
        let accs = domains.iter().map(Accumulator::for_domain).collect();
        Sampler {
            sources,
            map,
            domains,
            accs,
            health: vec![DomainHealth::default(); n],
            buf: Vec::with_capacity(16),
            start: None,
            last_t: 0.0,
            delta_j: vec![0.0; n],
            power_w: vec![0.0; n],
            energy: vec![None; n],
            ticks: 0,
        }
    }

    pub fn domains(&self) -> &[Domain] {
        &self.domains
    }

    pub fn accumulators(&self) -> &[Accumulator] {
        &self.accs
    }

    pub fn health(&self) -> &[DomainHealth] {
        &self.health
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

    /// The first reading: the zero point of every counter and of the clock.
    pub fn start(&mut self) {
        self.start = Some(Instant::now());
        self.last_t = 0.0;
        self.read_all(0.0);
        self.delta_j.iter_mut().for_each(|d| *d = 0.0);
        self.power_w.iter_mut().for_each(|p| *p = 0.0);
    }

    /// Read all sources now. Returns the tick's duration in seconds; `delta_j` and
    /// `power_w` then hold the tick's values.
    pub fn tick(&mut self) -> f64 {
        let t = self.now_s();
        self.read_all(t);
        let dt = (t - self.last_t).max(0.0);
        self.last_t = t;
        self.ticks += 1;
        for (p, d) in self.power_w.iter_mut().zip(&self.delta_j) {
            *p = if dt > 0.0 { d / dt } else { 0.0 };
        }
        dt
    }

    /// Read every source. `t` is the tick's time, taken before the reads; the time after
    /// each source's read bounds the interval for the plausibility check.
    fn read_all(&mut self, t: f64) {
        let Sampler {
            sources,
            map,
            accs,
            health,
            buf,
            delta_j,
            energy,
            start,
            ..
        } = self;
        for (si, source) in sources.iter_mut().enumerate() {
            source.read(buf);
            let t_end = start.map_or(t, |s| s.elapsed().as_secs_f64());
            for (j, slot) in map[si].iter().enumerate() {
                let Some(k) = *slot else { continue };
                match buf.get(j) {
                    Some(Ok(r)) => {
                        (delta_j[k], energy[k]) = match accs[k].step(t, t_end, *r) {
                            Delta::Joules(j) => (j, Some(j)),
                            Delta::Start | Delta::Glitch => (0.0, None),
                        };
                    }
                    failed => {
                        delta_j[k] = 0.0;
                        energy[k] = None;
                        accs[k].forget();
                        let h = &mut health[k];
                        h.failed_reads += 1;
                        if h.first_error.is_none() {
                            let msg = match failed {
                                Some(Err(e)) => e.message.clone(),
                                _ => "the source returned no reading".to_string(),
                            };
                            h.first_error = Some((t, msg));
                        }
                    }
                }
            }
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
}
