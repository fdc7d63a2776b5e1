//! CPU time accounting from `/proc` and cgroup v2: the command's process tree, the
//! whole machine per socket, and joulerun itself.
//!
//! PLACEHOLDER SIGNATURES: the implementation fills these in.

use std::io;

use serde::Serialize;

use crate::topology::Topology;

/// How the command's tree is followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackMethod {
    /// The command runs in its own cgroup v2; `cpu.stat` sees every descendant exactly.
    Cgroup,
    /// `/proc` is polled every tick and reaped children's times are added.
    Proc,
}

/// What the user asked for (`--track auto|cgroup|proc`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TrackRequest {
    #[default]
    Auto,
    Cgroup,
    Proc,
}

/// Prepared before the command is spawned.
pub struct TreeSetup {
    method: TrackMethod,
    /// Why cgroup tracking was not used, when `Auto` fell back to `/proc`.
    pub fallback_reason: Option<String>,
}

impl TreeSetup {
    /// `Auto`: a fresh cgroup under joulerun's own when cgroup v2 is writable, else `/proc`.
    /// `Cgroup`: an error saying why when it cannot be done. `Proc`: always works.
    pub fn prepare(req: TrackRequest) -> Result<TreeSetup, String> {
        let _ = req;
        Ok(TreeSetup {
            method: TrackMethod::Proc,
            fallback_reason: None,
        })
    }

    pub fn method(&self) -> TrackMethod {
        self.method
    }

    /// Runs in the child between fork and exec (async-signal-safe: no allocation):
    /// moves the child into the cgroup. A no-op for `/proc` tracking.
    pub fn child_hook(&self) -> impl FnMut() -> io::Result<()> + Send + Sync + 'static {
        || Ok(())
    }

    /// Start tracking the spawned child `pid`. `reaper`: joulerun is a child subreaper and
    /// reaps orphans, so their times arrive in its `RUSAGE_CHILDREN`.
    pub fn into_tracker(self, pid: i32, reaper: bool, topology: &Topology) -> TreeTracker {
        let _ = (pid, reaper, topology);
        TreeTracker {
            method: self.method,
        }
    }
}

/// Cumulative CPU time of the tree since tracking began.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TreeCpu {
    pub total_s: f64,
    /// Split by package, index = position in `Topology::packages()`; sums to `total_s`.
    pub per_socket_s: Vec<f64>,
}

pub struct TreeTracker {
    method: TrackMethod,
}

impl TreeTracker {
    /// `-p PID`: follow an existing process and its descendants through `/proc`.
    pub fn attach(pid: i32, topology: &Topology) -> Result<TreeTracker, String> {
        let _ = (pid, topology);
        Err("not implemented".into())
    }

    pub fn method(&self) -> TrackMethod {
        self.method
    }

    /// Read the tree now; cumulative since tracking began. Called every tick.
    pub fn sample(&mut self, out: &mut TreeCpu) {
        let _ = out;
    }

    /// Stop tracking; for a cgroup, move any survivors back to the parent and remove it.
    pub fn finish(self) {}
}

/// The machine's busy CPU time per package from `/proc/stat`.
pub struct MachineCpu {}

/// Cumulative busy seconds per package since `MachineCpu::new`, and the CPU count of each.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MachineCpuSample {
    pub busy_s_per_socket: Vec<f64>,
    pub idle_s_per_socket: Vec<f64>,
    pub cpus_per_socket: Vec<usize>,
}

impl MachineCpu {
    pub fn new(topology: &Topology) -> Result<MachineCpu, String> {
        let _ = topology;
        Ok(MachineCpu {})
    }

    pub fn sample(&mut self, out: &mut MachineCpuSample) {
        let _ = out;
    }
}

/// joulerun's own CPU time so far (all its threads), seconds.
pub fn self_cpu_s() -> f64 {
    0.0
}
