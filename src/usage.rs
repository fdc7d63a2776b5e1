//! Usage over time: what drove each device, kept as cumulative series so that the
//! energy of any interval (a 1 s chassis sample, a GPU sample) is split by the usage of
//! that same interval, not of the last tick.
//!
//! At every tick the attributor records one point: the tick's time and, cumulative since
//! the start, the command's and the machine's busy CPU time per socket, joulerun's own
//! CPU time, and the dynamic energy of the measured parts with the command's share of it
//! (for the CPU parts alone and for all parts). [`UsageHistory::between`] returns the
//! increase of each over `[a, b]`, interpolating linearly between the recorded points.
//! Points older than [`KEEP_S`] are dropped, so memory stays bounded on long runs.

use std::collections::VecDeque;

/// How far back interval queries are answered exactly, seconds: far more than the period
/// of any slow source (a BMC at 1 s, NVML at 100 ms).
pub const KEEP_S: f64 = 120.0;

/// Usage over one interval, per socket index and machine-wide.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UsageDelta {
    pub dt_s: f64,
    pub tree_cpu_s: Vec<f64>,
    pub busy_cpu_s: Vec<f64>,
    pub self_cpu_s: f64,
    /// Dynamic energy of the CPU parts, and the command's part of it, J.
    pub cpu_parts_dynamic_j: f64,
    pub cpu_parts_command_j: f64,
    /// The same over every part (CPU and GPU), J.
    pub parts_dynamic_j: f64,
    pub parts_command_j: f64,
    /// The energy measured by every part, J (what a whole-machine sample is compared
    /// with: the rest of the system).
    pub parts_energy_j: f64,
    /// The interval began before the oldest point kept: its start was taken there.
    pub truncated: bool,
}

impl UsageDelta {
    pub fn tree_all(&self) -> f64 {
        self.tree_cpu_s.iter().sum()
    }
    pub fn busy_all(&self) -> f64 {
        self.busy_cpu_s.iter().sum()
    }
}

/// Cumulative values recorded at one tick (the fields of [`UsageDelta`], summed since the
/// start).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UsagePoint {
    pub t_s: f64,
    pub tree_cpu_s: Vec<f64>,
    pub busy_cpu_s: Vec<f64>,
    pub self_cpu_s: f64,
    pub cpu_parts_dynamic_j: f64,
    pub cpu_parts_command_j: f64,
    pub parts_dynamic_j: f64,
    pub parts_command_j: f64,
    pub parts_energy_j: f64,
}

const FIXED: usize = 6;

/// The series, stored flat (one row of `stride` numbers per point) so that recording a
/// point allocates nothing once the buffer has grown.
#[derive(Clone, Debug)]
pub struct UsageHistory {
    sockets: usize,
    stride: usize,
    rows: VecDeque<f64>,
}

impl UsageHistory {
    /// An empty history for `sockets` socket indexes, with a zero point at time 0.
    pub fn new(sockets: usize) -> UsageHistory {
        let sockets = sockets.max(1);
        let mut h = UsageHistory {
            sockets,
            stride: 1 + FIXED + 2 * sockets,
            rows: VecDeque::new(),
        };
        h.push_row(0.0, &vec![0.0; FIXED + 2 * sockets]);
        h
    }

    fn push_row(&mut self, t: f64, values: &[f64]) {
        self.rows.push_back(t);
        self.rows.extend(values.iter().copied());
    }

    fn len(&self) -> usize {
        self.rows.len() / self.stride
    }

    fn t(&self, i: usize) -> f64 {
        self.rows[i * self.stride]
    }

    fn v(&self, i: usize, j: usize) -> f64 {
        self.rows[i * self.stride + 1 + j]
    }

    /// Record the cumulative values at a tick. Times must not go backwards (a point at an
    /// earlier time than the last is ignored).
    pub fn record(&mut self, p: &UsagePoint) {
        if self.len() > 0 && p.t_s < self.t(self.len() - 1) {
            return;
        }
        let s = self.sockets;
        self.rows.push_back(p.t_s);
        for v in [
            p.self_cpu_s,
            p.cpu_parts_dynamic_j,
            p.cpu_parts_command_j,
            p.parts_dynamic_j,
            p.parts_command_j,
            p.parts_energy_j,
        ] {
            self.rows.push_back(v);
        }
        for i in 0..s {
            self.rows
                .push_back(p.tree_cpu_s.get(i).copied().unwrap_or(0.0));
        }
        for i in 0..s {
            self.rows
                .push_back(p.busy_cpu_s.get(i).copied().unwrap_or(0.0));
        }
        // Drop what is older than KEEP_S, keeping at least two points.
        while self.len() > 2 && self.t(1) < p.t_s - KEEP_S {
            self.rows.drain(..self.stride);
        }
    }

    /// The cumulative value `j` at time `t`, interpolated; `t` before the first point
    /// gives the first point (and `true`), after the last gives the last.
    fn at(&self, t: f64, j: usize) -> (f64, bool) {
        let n = self.len();
        if t <= self.t(0) {
            return (self.v(0, j), t < self.t(0));
        }
        if t >= self.t(n - 1) {
            return (self.v(n - 1, j), false);
        }
        // Binary search for the last point at or before t.
        let (mut lo, mut hi) = (0, n - 1);
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if self.t(mid) <= t {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let (t0, t1) = (self.t(lo), self.t(hi));
        let (v0, v1) = (self.v(lo, j), self.v(hi, j));
        let f = if t1 > t0 { (t - t0) / (t1 - t0) } else { 1.0 };
        (v0 + f * (v1 - v0), false)
    }

    /// The increase of everything over `[a, b]`.
    pub fn between(&self, a: f64, b: f64, out: &mut UsageDelta) {
        let (a, b) = (a.min(b), b.max(a));
        let d = |j: usize| {
            let (va, trunc) = self.at(a, j);
            let (vb, _) = self.at(b, j);
            ((vb - va).max(0.0), trunc)
        };
        let (self_cpu, truncated) = d(0);
        out.dt_s = b - a;
        out.truncated = truncated;
        out.self_cpu_s = self_cpu;
        out.cpu_parts_dynamic_j = d(1).0;
        out.cpu_parts_command_j = d(2).0;
        out.parts_dynamic_j = d(3).0;
        out.parts_command_j = d(4).0;
        out.parts_energy_j = d(5).0;
        out.tree_cpu_s.clear();
        out.busy_cpu_s.clear();
        for i in 0..self.sockets {
            out.tree_cpu_s.push(d(FIXED + i).0);
        }
        for i in 0..self.sockets {
            out.busy_cpu_s.push(d(FIXED + self.sockets + i).0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(t: f64, tree: f64, busy: f64) -> UsagePoint {
        UsagePoint {
            t_s: t,
            tree_cpu_s: vec![tree, 2.0 * tree],
            busy_cpu_s: vec![busy, busy],
            self_cpu_s: t / 100.0,
            parts_dynamic_j: 10.0 * t,
            parts_command_j: 5.0 * t,
            cpu_parts_dynamic_j: 8.0 * t,
            cpu_parts_command_j: 2.0 * t,
            parts_energy_j: 20.0 * t,
        }
    }

    #[test]
    fn intervals_between_ticks_are_interpolated() {
        let mut h = UsageHistory::new(2);
        // Ticks every 0.1 s; the command used 0.05 s CPU per tick on socket 0.
        for k in 1..=20 {
            let t = k as f64 * 0.1;
            h.record(&point(t, 0.05 * k as f64, 0.08 * k as f64));
        }
        let mut d = UsageDelta::default();
        // A 1 s sample from 0.55 to 1.55 s: half-way between ticks at both ends.
        h.between(0.55, 1.55, &mut d);
        assert!((d.dt_s - 1.0).abs() < 1e-12);
        assert!((d.tree_cpu_s[0] - 0.5).abs() < 1e-9, "{d:?}");
        assert!((d.tree_cpu_s[1] - 1.0).abs() < 1e-9);
        assert!((d.busy_cpu_s[0] - 0.8).abs() < 1e-9);
        assert!((d.parts_dynamic_j - 10.0).abs() < 1e-9);
        assert!((d.parts_command_j - 5.0).abs() < 1e-9);
        assert!((d.cpu_parts_command_j - 2.0).abs() < 1e-9);
        assert!((d.parts_energy_j - 20.0).abs() < 1e-9);
        assert!(!d.truncated);
        // Beyond the last point: the last point holds.
        h.between(1.5, 9.0, &mut d);
        assert!((d.tree_cpu_s[0] - 0.25).abs() < 1e-9, "{d:?}");
    }

    #[test]
    fn memory_stays_bounded_on_long_runs() {
        let mut h = UsageHistory::new(1);
        for k in 1..=100_000 {
            h.record(&point(k as f64 * 0.01, 0.0, 0.0));
        }
        // 1000 s at 10 ms: only the last KEEP_S seconds are kept.
        assert!(h.len() <= (KEEP_S / 0.01) as usize + 3, "{}", h.len());
        let mut d = UsageDelta::default();
        h.between(10.0, 11.0, &mut d);
        assert!(d.truncated);
        h.between(990.0, 991.0, &mut d);
        assert!(!d.truncated);
        assert!((d.parts_dynamic_j - 10.0).abs() < 1e-6);
    }

    #[test]
    fn points_going_back_in_time_are_ignored() {
        let mut h = UsageHistory::new(1);
        h.record(&point(1.0, 1.0, 1.0));
        h.record(&point(0.5, 9.0, 9.0));
        let mut d = UsageDelta::default();
        h.between(0.0, 1.0, &mut d);
        assert!((d.tree_cpu_s[0] - 1.0).abs() < 1e-12);
    }
}
