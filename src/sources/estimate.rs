//! The estimate: a CPU-utilisation power model for machines with no energy counters
//! (VMs, most clouds, containers without access). Never a measurement, and labelled as
//! such everywhere it appears.
//!
//! Model (linear in utilisation, as in the Cloud Carbon Footprint methodology):
//!
//! ```text
//! P(t) = P_idle + (P_max - P_idle) * u(t)        u = busy CPU time / (n_cpus * wall time)
//! E    = P_idle * wall_s + (P_max - P_idle) * busy_cpu_s / n_cpus
//! ```
//!
//! Default coefficients per logical CPU: 0.74 W idle and 3.5 W at full load, the
//! averages Cloud Carbon Footprint derives from SPECpower results for AWS instances.
//! `--cpu-watts IDLE,MAX` (or `JOULERUN_CPU_WATTS`) replaces them with whole-machine watts,
//! each at most [`MAX_CPU_WATTS`].
//! The busy CPU time is the whole machine's, from `/proc/stat`.
//!
//! The source keeps no clock: each reading is the machine's cumulative busy CPU time with
//! the coefficients ([`Reading::Model`]), and [`crate::counter`] applies
//! [`model_energy_j`] to each interval of the sampler's clock, in f64. So the energy and
//! the run's elapsed time come from the same clock (a constant model gives exactly its
//! power), and no wattage can overflow an integer.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use serde::Serialize;

use super::{
    Domain, DomainKind, OpenContext, ReadError, Reading, Source, SourceKind, Unavailable,
    UnavailableKind,
};

/// Default idle power per logical CPU, watts (Cloud Carbon Footprint, AWS average).
pub const DEFAULT_IDLE_W_PER_CPU: f64 = 0.74;
/// Default full-load power per logical CPU, watts (Cloud Carbon Footprint, AWS average).
pub const DEFAULT_MAX_W_PER_CPU: f64 = 3.5;

/// The largest `--cpu-watts` value accepted, watts: 1 MW, far above any one machine's
/// CPUs (a rack is tens of kW), so anything above it is a typo or a unit mistake.
pub const MAX_CPU_WATTS: f64 = 1e6;

/// The estimate's plausible maximum power, as a multiple of its model's full-load power.
pub const CEILING_OVER_MODEL_MAX: f64 = 1.5;

/// The model's energy over `dt_s` seconds during which the machine's `cpus` logical CPUs
/// were busy for `busy_cpu_s` CPU seconds in all:
/// `idle_w * dt_s + (max_w - idle_w) * busy_per_cpu`, the busy time per CPU clamped to
/// `[0, dt_s]` (utilisation stays within 0..100%; `/proc/stat` counts in clock ticks).
pub fn model_energy_j(idle_w: f64, max_w: f64, dt_s: f64, busy_cpu_s: f64, cpus: u32) -> f64 {
    let dt = dt_s.max(0.0);
    let busy_per_cpu = (busy_cpu_s / f64::from(cpus.max(1))).clamp(0.0, dt);
    idle_w * dt + (max_w - idle_w) * busy_per_cpu
}

/// The estimate's coefficients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct CpuWatts {
    /// Whole-machine power when idle, W. `None`: the per-CPU default times the CPU count.
    pub idle_w: Option<f64>,
    /// Whole-machine power at full load, W.
    pub max_w: Option<f64>,
}

impl CpuWatts {
    /// Parse `IDLE,MAX` in watts for the whole machine.
    pub fn parse(s: &str) -> Result<CpuWatts, String> {
        let (a, b) = s
            .split_once(',')
            .ok_or_else(|| format!("expected IDLE,MAX in watts (e.g. 10,65), got '{s}'"))?;
        let p = |x: &str| -> Result<f64, String> {
            let v: f64 = x
                .trim()
                .parse()
                .map_err(|_| format!("'{}' is not a number of watts", x.trim()))?;
            if !v.is_finite() || v < 0.0 {
                return Err(format!(
                    "'{}' must be a finite, non-negative wattage",
                    x.trim()
                ));
            }
            if v > MAX_CPU_WATTS {
                return Err(format!(
                    "'{}' W is more than {} W (1 MW), not a machine's CPU power: give whole-machine watts, e.g. 10,65",
                    x.trim(),
                    MAX_CPU_WATTS
                ));
            }
            Ok(v)
        };
        let (idle, max) = (p(a)?, p(b)?);
        if max < idle {
            return Err(format!(
                "the full-load power ({max} W) must not be below the idle power ({idle} W)"
            ));
        }
        Ok(CpuWatts {
            idle_w: Some(idle),
            max_w: Some(max),
        })
    }

    /// The coefficients for a machine of `n_cpus` logical CPUs.
    pub fn resolve(&self, n_cpus: usize) -> (f64, f64) {
        let n = n_cpus.max(1) as f64;
        (
            self.idle_w.unwrap_or(DEFAULT_IDLE_W_PER_CPU * n),
            self.max_w.unwrap_or(DEFAULT_MAX_W_PER_CPU * n),
        )
    }

    pub fn is_default(&self) -> bool {
        self.idle_w.is_none() && self.max_w.is_none()
    }
}

/// Busy and CPU count from the text of `/proc/stat`.
/// Busy = user + nice + system + irq + softirq (guest time is already inside user and
/// nice; steal is time the hypervisor ran someone else, so it is not ours).
pub fn parse_proc_stat_busy(text: &str) -> Option<(u64, usize)> {
    let mut busy = None;
    let mut n = 0usize;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("cpu ") {
            let f: Vec<u64> = rest
                .split_ascii_whitespace()
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            if f.len() < 7 {
                return None;
            }
            busy = Some(f[0] + f[1] + f[2] + f[5] + f[6]);
        } else if line.starts_with("cpu") {
            n += 1;
        } else if busy.is_some() {
            break;
        }
    }
    busy.map(|b| (b, n.max(1)))
}

/// Where the estimate gets the machine's busy time.
enum Busy {
    /// Its own `/proc/stat` (when nothing else reads it: `joulerun list`, tests).
    Own { stat: File, buf: String },
    /// The sampler's machine CPU reading of this tick (a run, a calibration).
    Shared(std::sync::Arc<crate::procs::MachineBusy>),
}

pub struct EstimateSource {
    domains: Vec<Domain>,
    busy: Busy,
    n_cpus: usize,
    idle_w: f64,
    max_w: f64,
    ticks_per_s: f64,
}

impl EstimateSource {
    pub fn open(ctx: &OpenContext) -> Result<EstimateSource, Unavailable> {
        let unavailable = |why: String| {
            Unavailable::new(
                SourceKind::Estimate,
                UnavailableKind::NotPresent,
                why,
                Some("joulerun needs a readable /proc (mount procfs)".to_string()),
            )
        };
        let mut stat =
            File::open("/proc/stat").map_err(|e| unavailable(format!("open /proc/stat: {e}")))?;
        let mut buf = String::with_capacity(8192);
        stat.read_to_string(&mut buf)
            .map_err(|e| unavailable(format!("read /proc/stat: {e}")))?;
        let (_, n_cpus) = parse_proc_stat_busy(&buf)
            .ok_or_else(|| unavailable("/proc/stat has no 'cpu' line".to_string()))?;
        let busy = match &ctx.machine_busy {
            Some(shared) => Busy::Shared(shared.clone()),
            None => Busy::Own { stat, buf },
        };
        let (idle_w, max_w) = ctx.cpu_watts.resolve(n_cpus);
        // SAFETY: sysconf has no memory-safety preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Ok(EstimateSource {
            domains: vec![
                Domain::new(DomainKind::Estimate, None, SourceKind::Estimate)
                    .with_max_power(CEILING_OVER_MODEL_MAX * max_w),
            ],
            busy,
            n_cpus,
            idle_w,
            max_w,
            ticks_per_s: if hz > 0 { hz as f64 } else { 100.0 },
        })
    }

    /// Whole-machine idle and full-load watts in use.
    pub fn coefficients(&self) -> (f64, f64) {
        (self.idle_w, self.max_w)
    }

    /// The machine's cumulative busy CPU time, seconds (summed over its CPUs).
    fn read_busy_s(&mut self) -> Result<f64, ReadError> {
        match &mut self.busy {
            Busy::Shared(shared) => Ok(shared.get().0),
            Busy::Own { stat, buf } => {
                buf.clear();
                stat.seek(SeekFrom::Start(0))
                    .and_then(|_| stat.read_to_string(buf))
                    .map_err(|e| ReadError::new(format!("read /proc/stat: {e}")))?;
                let (busy, _) = parse_proc_stat_busy(buf)
                    .ok_or_else(|| ReadError::new("/proc/stat has no 'cpu' line"))?;
                Ok(busy as f64 / self.ticks_per_s)
            }
        }
    }
}

impl Source for EstimateSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Estimate
    }

    fn domains(&self) -> &[Domain] {
        &self.domains
    }

    fn read(&mut self, out: &mut Vec<Result<Reading, ReadError>>) {
        out.clear();
        let (idle_w, max_w) = (self.idle_w, self.max_w);
        let cpus = u32::try_from(self.n_cpus).unwrap_or(u32::MAX);
        out.push(self.read_busy_s().map(|busy_cpu_s| Reading::Model {
            busy_cpu_s,
            cpus,
            idle_w,
            max_w,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat() {
        let text = "cpu  100 5 50 1000 7 3 2 11 0 0\ncpu0 50 2 25 500 3 1 1 5 0 0\ncpu1 50 3 25 500 4 2 1 6 0 0\nintr 1 2 3\n";
        assert_eq!(parse_proc_stat_busy(text), Some((100 + 5 + 50 + 3 + 2, 2)));
        assert_eq!(parse_proc_stat_busy("intr 1\n"), None);
        assert_eq!(parse_proc_stat_busy("cpu 1 2\n"), None);
    }

    #[test]
    fn cpu_watts_parse_and_resolve() {
        let w = CpuWatts::parse("10, 65").unwrap();
        assert_eq!(w.resolve(8), (10.0, 65.0));
        let d = CpuWatts::default();
        let (i, m) = d.resolve(2);
        assert!((i - 1.48).abs() < 1e-9 && (m - 7.0).abs() < 1e-9);
        assert!(CpuWatts::parse("10").is_err());
        assert!(CpuWatts::parse("a,3").is_err());
        assert!(CpuWatts::parse("50,10").is_err());
        assert!(CpuWatts::parse("-1,10").is_err());
        assert!(CpuWatts::parse("NaN,10").is_err());
    }

    #[test]
    fn estimate_advances_at_least_at_idle_power() {
        let ctx = OpenContext {
            root: crate::sysroot::SysRoot::default(),
            topology: crate::topology::Topology::default(),
            cpu_watts: CpuWatts::parse("10,20").unwrap(),
            machine_busy: None,
            nvml: Default::default(),
            command_pids: None,
            ipmi: Default::default(),
        };
        let mut s = EstimateSource::open(&ctx).unwrap();
        // The source keeps no clock: the accumulator integrates its readings over the
        // caller's (here the test's, as in a run the sampler's).
        let mut acc = crate::counter::Accumulator::for_domain(&s.domains()[0]);
        let mut out = Vec::new();
        let t0 = std::time::Instant::now();
        s.read(&mut out);
        acc.update(0.0, out[0].clone().unwrap());
        std::thread::sleep(std::time::Duration::from_millis(50));
        s.read(&mut out);
        let j = acc.update(t0.elapsed().as_secs_f64(), out[0].clone().unwrap());
        // 50 ms at between 10 and 20 W: between 0.5 and 1.0 J (plus scheduling slack).
        assert!((0.45..=1.5).contains(&j), "{j}");
    }

    #[test]
    fn cpu_watts_above_a_megawatt_are_refused() {
        assert!(CpuWatts::parse("1000000,1000000").is_ok());
        for bad in ["1e308,1e308", "1e10,1e10", "10,1e7", "1e6,1000001"] {
            let e = CpuWatts::parse(bad).unwrap_err();
            assert!(e.contains("1 MW"), "{bad}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn model_energy_is_f64_and_clamped() {
        // A constant model is its power times the interval, whatever the load.
        assert_eq!(model_energy_j(10.0, 10.0, 0.25, 3.0, 2), 2.5);
        // Half the CPUs busy for the whole interval: halfway between idle and max.
        assert_eq!(model_energy_j(10.0, 30.0, 1.0, 1.0, 2), 20.0);
        // Busy time above 100% (clock-tick granularity) is clamped, negative is 0.
        assert_eq!(model_energy_j(10.0, 30.0, 1.0, 5.0, 2), 30.0);
        assert_eq!(model_energy_j(10.0, 30.0, 1.0, -1.0, 2), 10.0);
        // The largest coefficients accepted over a day stay exact and finite.
        let j = model_energy_j(MAX_CPU_WATTS, MAX_CPU_WATTS, 86_400.0, 0.0, 1);
        assert_eq!(j, 8.64e10);
    }

    #[test]
    fn the_ceiling_is_the_models_maximum_times_one_and_a_half() {
        let ctx = OpenContext {
            root: crate::sysroot::SysRoot::default(),
            topology: crate::topology::Topology::default(),
            cpu_watts: CpuWatts::parse("10,40").unwrap(),
            machine_busy: None,
            nvml: Default::default(),
            command_pids: None,
            ipmi: Default::default(),
        };
        let s = EstimateSource::open(&ctx).unwrap();
        assert_eq!(s.domains()[0].max_power_w, 60.0);
    }
}
