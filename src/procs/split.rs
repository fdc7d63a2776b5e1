//! Splitting the tree's CPU time by package on multi-package machines: each thread's
//! utime + stime delta goes to the package of the CPU it last ran on (`stat` field 39),
//! and that distribution is scaled to the tree's exact total for the read.

use std::collections::HashMap;

use super::parse::PidStat;

#[derive(Clone, Copy)]
struct ThreadSeen {
    /// The process it belongs to.
    tgid: i32,
    start: u64,
    own: u64,
    seen: u64,
}

pub struct SocketSplit {
    pkg_of_cpu: Vec<usize>,
    threads: HashMap<i32, ThreadSeen>,
    generation: u64,
    /// Attach: threads that started before this tick existed before tracking began.
    preexisting_before: Option<u64>,
    baseline_next: bool,
    /// Thread ticks seen in this read, per package index.
    tick: Vec<f64>,
    /// Thread ticks seen since tracking began, per package index.
    cum: Vec<f64>,
}

impl SocketSplit {
    /// `pkg_of_cpu[cpu]`: package index of each CPU (unknown CPUs go to index 0).
    pub fn new(pkg_of_cpu: Vec<usize>, npkg: usize, preexisting_before: Option<u64>) -> Self {
        SocketSplit {
            pkg_of_cpu,
            threads: HashMap::new(),
            generation: 0,
            preexisting_before,
            baseline_next: preexisting_before.is_some(),
            tick: vec![0.0; npkg.max(1)],
            cum: vec![0.0; npkg.max(1)],
        }
    }

    pub fn begin(&mut self) {
        self.generation += 1;
        self.tick.iter_mut().for_each(|v| *v = 0.0);
    }

    /// One thread's `stat` (from `/proc/<tgid>/task/<tid>/stat`).
    pub fn thread(&mut self, s: &PidStat, tgid: i32) {
        let own = s.own();
        let cur = self.generation;
        let prev = match self.threads.get_mut(&s.pid) {
            Some(t) if t.start == s.starttime => {
                let p = t.own;
                t.own = own.max(p);
                t.seen = cur;
                p
            }
            _ => {
                let pre =
                    self.baseline_next || self.preexisting_before.is_some_and(|b| s.starttime < b);
                self.threads.insert(
                    s.pid,
                    ThreadSeen {
                        tgid,
                        start: s.starttime,
                        own,
                        seen: cur,
                    },
                );
                if pre { own } else { 0 }
            }
        };
        let d = own.saturating_sub(prev);
        if d == 0 {
            return;
        }
        let pkg = s
            .processor
            .and_then(|c| self.pkg_of_cpu.get(c as usize).copied())
            .unwrap_or(0)
            .min(self.tick.len() - 1);
        self.tick[pkg] += d as f64;
    }

    /// Close the read: add `delta_s` (the tree's exact increase this read) to `out`.
    /// Threads not read in this read are forgotten, unless `kept(tgid)`: their process
    /// was not read because it has not run since the last read (`/proc` tracking).
    pub fn end(&mut self, delta_s: f64, out: &mut [f64], kept: impl Fn(i32) -> bool) {
        let cur = self.generation;
        self.threads.retain(|_, t| t.seen == cur || kept(t.tgid));
        self.baseline_next = false;
        distribute(delta_s, &self.tick, &self.cum, out);
        for (c, t) in self.cum.iter_mut().zip(&self.tick) {
            *c += t;
        }
    }
}

/// Add `delta` to `out` in proportion to `tick` (the threads' time by package this
/// read); when the threads showed nothing (the time came from processes that lived
/// and died between two reads, or from reaped children), in proportion to `cum` (all
/// thread time seen so far); when nothing was ever seen, to package index 0.
pub fn distribute(delta: f64, tick: &[f64], cum: &[f64], out: &mut [f64]) {
    if delta <= 0.0 || out.is_empty() {
        return;
    }
    let weights = if tick.iter().sum::<f64>() > 0.0 {
        tick
    } else if cum.iter().sum::<f64>() > 0.0 {
        cum
    } else {
        out[0] += delta;
        return;
    };
    let sum: f64 = weights.iter().sum();
    for (o, w) in out.iter_mut().zip(weights) {
        *o += delta * w / sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn th(tid: i32, start: u64, own: u64, cpu: u32) -> PidStat {
        PidStat {
            pid: tid,
            starttime: start,
            utime: own,
            processor: Some(cpu),
            ..PidStat::default()
        }
    }

    #[test]
    fn threads_by_package_scaled_to_total() {
        // CPUs 0,2 on package index 0; 1,3 on index 1.
        let mut s = SocketSplit::new(vec![0, 1, 0, 1], 2, None);
        let mut out = vec![0.0; 2];
        s.begin();
        s.thread(&th(1, 5, 30, 0), 1);
        s.thread(&th(2, 5, 10, 3), 1);
        s.end(0.8, &mut out, |_| false);
        assert!((out[0] - 0.6).abs() < 1e-12 && (out[1] - 0.2).abs() < 1e-12);
        // Next read: thread 1 moved to CPU 1 and used 10 ticks; thread 2 idle.
        s.begin();
        s.thread(&th(1, 5, 40, 1), 1);
        s.thread(&th(2, 5, 10, 3), 1);
        s.end(0.1, &mut out, |_| false);
        assert!((out[1] - 0.3).abs() < 1e-12);
        // Nothing seen (short-lived processes): by the cumulative distribution 30:20.
        s.begin();
        s.end(0.3, &mut out, |_| false);
        assert!((out[0] - 0.78).abs() < 1e-12 && (out[1] - 0.42).abs() < 1e-12);
        // A reused tid (new start time) counts from zero.
        s.begin();
        s.thread(&th(1, 99, 4, 0), 1);
        s.end(0.04, &mut out, |_| false);
        assert!((out[0] - 0.82).abs() < 1e-12);
    }

    #[test]
    fn threads_of_processes_not_read_are_kept() {
        let mut s = SocketSplit::new(vec![0, 1], 2, None);
        let mut out = vec![0.0; 2];
        s.begin();
        s.thread(&th(1, 5, 100, 0), 1);
        s.thread(&th(2, 5, 10, 1), 2);
        s.end(0.0, &mut out, |_| false);
        // Process 2 did not run, so it was not read: its thread is kept.
        s.begin();
        s.thread(&th(1, 5, 110, 0), 1);
        s.end(0.1, &mut out, |p| p == 2);
        assert_eq!(out, vec![0.1, 0.0]);
        // Both ran 10 ticks: half each (a forgotten thread would count all its 20).
        s.begin();
        s.thread(&th(1, 5, 120, 0), 1);
        s.thread(&th(2, 5, 20, 1), 2);
        s.end(0.2, &mut out, |_| false);
        assert!(
            (out[0] - 0.2).abs() < 1e-12 && (out[1] - 0.1).abs() < 1e-12,
            "{out:?}"
        );
    }

    #[test]
    fn fallbacks() {
        let mut out = vec![0.0; 2];
        distribute(1.0, &[0.0, 0.0], &[0.0, 0.0], &mut out);
        assert_eq!(out, vec![1.0, 0.0]);
        distribute(-1.0, &[1.0, 0.0], &[0.0, 0.0], &mut out);
        assert_eq!(out, vec![1.0, 0.0]);
        // Unknown CPU (not in the topology): package index 0.
        let mut s = SocketSplit::new(vec![0, 1], 2, None);
        let mut out = vec![0.0; 2];
        s.begin();
        s.thread(&th(7, 1, 5, 64), 1);
        s.end(0.05, &mut out, |_| false);
        assert_eq!(out, vec![0.05, 0.0]);
    }

    #[test]
    fn attach_baseline() {
        let mut s = SocketSplit::new(vec![0, 1], 2, Some(100));
        let mut out = vec![0.0; 2];
        s.begin();
        s.thread(&th(1, 50, 1000, 1), 1);
        s.end(0.0, &mut out, |_| false);
        s.begin();
        s.thread(&th(1, 50, 1010, 1), 1);
        s.thread(&th(2, 40, 500, 0), 1); // existed before attaching: baseline
        s.thread(&th(3, 150, 10, 0), 1); // new: in full
        s.end(0.2, &mut out, |_| false);
        assert!((out[0] - 0.1).abs() < 1e-12 && (out[1] - 0.1).abs() < 1e-12);
    }
}
