//! What a source can say beside its energy (issue 9): the usage of a device by the
//! command over the interval that ended at a read ([`IntervalUsage`]), the command's
//! processes it filters by ([`CommandPids`]), and how a domain was measured
//! ([`MeasureDetail`]).
//!
//! A source with a usage signal of its own (NVML's per-process GPU use) fills
//! [`super::Source::usage`] after each read; the reader thread carries it with the batch,
//! the sampler with the domain's [`crate::sampler::Interval`], and
//! [`crate::attribution::Attributor::interval_with_usage`] splits that interval's dynamic
//! energy by it instead of the modelled share.

use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// How the command's share of a device was found over an interval. The order is the
/// order of preference a report lists them in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageMethod {
    /// The command's processes' summed SM utilisation over every process's
    /// (`nvmlDeviceGetProcessUtilization`).
    SmUtilisation,
    /// No utilisation samples (MIG, not supported, none in the interval): an equal split
    /// among the processes holding a compute context (`nvmlDeviceGetComputeRunningProcesses`).
    EqualSplit,
    /// Only the command's processes were on the device: all of it.
    Alone,
    /// No process was on the device: the command gets nothing of it.
    Nobody,
}

impl UsageMethod {
    /// How a report names it.
    pub fn describe(self) -> &'static str {
        match self {
            UsageMethod::SmUtilisation => "SM utilisation",
            UsageMethod::EqualSplit => {
                "equal split among compute processes (no utilisation samples)"
            }
            UsageMethod::Alone => "the command alone on the GPU",
            UsageMethod::Nobody => "no process on the GPU",
        }
    }
}

/// The command's use of a device over one interval of a domain: `command / total` is its
/// share of the interval's dynamic energy. Both are sums over the reads that the interval
/// spans, each read contributing its share (`command`) and 1 (`total`): reads are evenly
/// spaced by the reader thread, so this is the share averaged over the interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct IntervalUsage {
    pub command: f64,
    pub total: f64,
    /// The rule of most of the interval's reads.
    pub method: UsageMethod,
}

impl IntervalUsage {
    /// `command / total`, clamped to [0, 1]; 0 when `total` is not positive.
    pub fn share(&self) -> f64 {
        if self.total.is_finite() && self.total > 0.0 && self.command.is_finite() {
            (self.command / self.total).clamp(0.0, 1.0)
        } else {
            0.0
        }
    }
}

/// The command's processes, as the sampling loop last saw them, for reader threads that
/// filter per-process data (NVML). The loop refreshes it on its usage probe ticks, at
/// most every [`crate::sampler::PIDS_MIN_S`] (50 ms;
/// [`crate::sampler::Sampler::share_pids`]), so it is at most that plus one probe window
/// (10 ms, or the sampling interval when longer) old; a process that starts and ends
/// inside that time is never seen.
#[derive(Debug, Default)]
pub struct CommandPids {
    pids: RwLock<Vec<i32>>,
    /// Bumped on every update, so a reader can skip unchanged sets.
    generation: AtomicU64,
    /// Whether a command is followed at all (not with `-a`, or calibration).
    followed: std::sync::atomic::AtomicBool,
}

impl CommandPids {
    /// Replace the set (sorted PIDs, as the tracker gives them).
    pub fn set(&self, pids: &[i32]) {
        let mut g = self.pids.write().unwrap_or_else(|p| p.into_inner());
        if g.as_slice() != pids {
            g.clear();
            g.extend_from_slice(pids);
            self.generation.fetch_add(1, Ordering::Release);
        }
        self.followed.store(true, Ordering::Release);
    }

    /// Copy the set into `out` (cleared first).
    pub fn get(&self, out: &mut Vec<i32>) {
        out.clear();
        out.extend_from_slice(&self.pids.read().unwrap_or_else(|p| p.into_inner()));
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether the loop has published a command's processes yet.
    pub fn followed(&self) -> bool {
        self.followed.load(Ordering::Acquire)
    }
}

/// How a domain's energy is measured, when its source has more to say than its kind: the
/// method and the effective time resolution of its readings. Reports show both.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MeasureDetail {
    /// `energy counter` or `power (integrated)`.
    pub method: &'static str,
    /// The shortest time over which the readings resolve energy, s: the counter's update
    /// period, or the window the hardware averages power over. A run shorter than twice
    /// this is not resolved (reports say so).
    pub resolution_s: f64,
    /// What the resolution is, for messages ("energy counter's update period").
    pub resolution_of: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_the_pid_set() {
        let u = IntervalUsage {
            command: 1.5,
            total: 2.0,
            method: UsageMethod::SmUtilisation,
        };
        assert_eq!(u.share(), 0.75);
        let z = IntervalUsage { total: 0.0, ..u };
        assert_eq!(z.share(), 0.0);
        let p = CommandPids::default();
        assert!(!p.followed());
        let g0 = p.generation();
        p.set(&[3, 7]);
        p.set(&[3, 7]);
        assert_eq!(p.generation(), g0 + 1);
        let mut v = vec![99];
        p.get(&mut v);
        assert_eq!(v, [3, 7]);
        assert!(p.followed());
    }
}
