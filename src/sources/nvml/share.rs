//! The command's share of one GPU over one read window: pure rules, no NVML.
//!
//! Inputs: the per-process SM utilisation samples of the window (highest sample per PID,
//! as Kepler takes it), the processes holding a compute context, and the command's PIDs
//! (host PIDs, already mapped). Rules, in order (docs/attribution.md, "GPUs"):
//!
//! 1. Nobody on the GPU (no sample, no compute process): the command gets nothing.
//! 2. Only the command's processes on it: all of it.
//! 3. Utilisation samples whose SM sum is positive: the command's summed SM utilisation
//!    over every process's. Processes with a compute context but no sample are present
//!    with 0 (they keep rule 2 from applying, and take no share).
//! 4. Otherwise (no samples: MIG, not supported, none in the window, or all at 0): an
//!    equal split among the processes present.

use crate::sources::UsageMethod;

/// One process's SM utilisation in the window, percent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub pid: u32,
    pub sm: u32,
}

/// The command's share of the window and the rule that gave it.
pub fn window_share(samples: &[Sample], compute: &[u32], command: &[u32]) -> (f64, UsageMethod) {
    let is_cmd = |p: &u32| command.contains(p);
    let mut present: Vec<u32> = samples
        .iter()
        .map(|s| s.pid)
        .chain(compute.iter().copied())
        .collect();
    present.sort_unstable();
    present.dedup();
    if present.is_empty() {
        return (0.0, UsageMethod::Nobody);
    }
    if present.iter().all(is_cmd) {
        return (1.0, UsageMethod::Alone);
    }
    let mut best: Vec<(u32, u32)> = Vec::with_capacity(samples.len());
    for s in samples {
        match best.iter_mut().find(|b| b.0 == s.pid) {
            Some(b) => b.1 = b.1.max(s.sm),
            None => best.push((s.pid, s.sm)),
        }
    }
    let total: u64 = best.iter().map(|b| b.1 as u64).sum();
    if total > 0 {
        let mine: u64 = best
            .iter()
            .filter(|b| is_cmd(&b.0))
            .map(|b| b.1 as u64)
            .sum();
        return (mine as f64 / total as f64, UsageMethod::SmUtilisation);
    }
    let mine = present.iter().filter(|p| is_cmd(p)).count();
    (mine as f64 / present.len() as f64, UsageMethod::EqualSplit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(pid: u32, sm: u32) -> Sample {
        Sample { pid, sm }
    }

    #[test]
    fn sm_utilisation_splits_a_shared_gpu() {
        // The command (10, 11) against 20: 30 + 10 of 80 in all.
        let (share, m) = window_share(&[s(10, 30), s(11, 10), s(20, 40)], &[10, 20], &[10, 11]);
        assert_eq!(m, UsageMethod::SmUtilisation);
        assert!((share - 0.5).abs() < 1e-12, "{share}");
        // The highest sample per PID counts.
        let (share, _) = window_share(&[s(10, 10), s(10, 60), s(20, 20)], &[], &[10]);
        assert!((share - 0.75).abs() < 1e-12, "{share}");
        // A compute process without a sample is present, with nothing.
        let (share, m) = window_share(&[s(10, 50)], &[10, 99], &[10]);
        assert_eq!((share, m), (1.0, UsageMethod::SmUtilisation));
    }

    #[test]
    fn fallbacks_are_named() {
        // No samples: equal split among compute processes.
        let (share, m) = window_share(&[], &[10, 20, 30], &[10]);
        assert_eq!(m, UsageMethod::EqualSplit);
        assert!((share - 1.0 / 3.0).abs() < 1e-12);
        // Samples all at 0: equal split too.
        let (share, m) = window_share(&[s(10, 0), s(20, 0)], &[], &[10]);
        assert_eq!((share, m), (0.5, UsageMethod::EqualSplit));
        // Alone: all of it, whatever the samples say.
        assert_eq!(
            window_share(&[s(10, 3)], &[10, 11], &[10, 11]),
            (1.0, UsageMethod::Alone)
        );
        assert_eq!(window_share(&[], &[10], &[10]), (1.0, UsageMethod::Alone));
        // Nobody: nothing.
        assert_eq!(window_share(&[], &[], &[10]), (0.0, UsageMethod::Nobody));
        // Others only: nothing, by utilisation or by count.
        assert_eq!(
            window_share(&[s(20, 50)], &[20], &[10]),
            (0.0, UsageMethod::SmUtilisation)
        );
        assert_eq!(
            window_share(&[], &[20], &[10]),
            (0.0, UsageMethod::EqualSplit)
        );
    }
}
