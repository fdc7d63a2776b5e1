//! CPU time accounting from `/proc` and cgroup v2: the command's process tree, the
//! whole machine per socket, and joulerun itself.
//!
//! # The command's tree
//!
//! * **cgroup** (preferred, `--track auto` when cgroup v2 is writable): the command is
//!   moved, between fork and exec, into a fresh cgroup `joulerun-<pid>-<n>` below
//!   joulerun's own. Its `cpu.stat` `usage_usec` counts every descendant exactly:
//!   threads, short-lived children, daemons that outlive their parent. joulerun itself
//!   stays outside, so its own time is never charged. At the end survivors are moved
//!   back to joulerun's cgroup and the directory is removed.
//! * **proc**: every tick the tree is followed from the root through
//!   `/proc/<pid>/task/<tid>/children` when the kernel has them (CONFIG_PROC_CHILDREN),
//!   parents before children, else through the `ppid` of new entries of `/proc`. The
//!   tree's time is the sum of:
//!   1. over tracked processes, live or zombie: own time (the process CPU clock, exact
//!      and still readable for a zombie; `stat`'s tick-truncated utime + stime without
//!      it) + cutime + cstime, plus the time of children that vanished into them and
//!      has not shown up in their cutime + cstime yet (see `tree.rs`);
//!   2. joulerun's `RUSAGE_CHILDREN` since tracking began (the root, and every orphan
//!      when joulerun is a child subreaper, are reaped by joulerun);
//!   3. the last-seen time of vanished processes whose time went nowhere we can see.
//!
//!   An exited child is counted when a read first sees it, not when its parent reaps
//!   it; once reaped it moves into that parent's cutime/cstime and is not counted
//!   twice. (pid, starttime) identifies a process, so a reused pid is a new process.
//!   The result never decreases.
//!
//! # Per socket
//!
//! On a multi-package machine, each tracked thread's utime + stime delta goes to the
//! package of the CPU it last ran on (`stat` field 39); that distribution is scaled to
//! the tree's exact increase. A read whose increase came from threads no longer visible
//! uses the distribution seen so far (package index 0 if none). A single-package
//! machine puts everything on index 0 and reads no threads.

mod cgroup;
mod parse;
mod split;
mod sys;
mod tree;

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use serde::Serialize;

use crate::topology::Topology;

pub use cgroup::{clean_stale as clean_stale_cgroups, own_cgroup_dir};
pub use parse::{PidStat, for_each_cpu_line, parse_pid_stat};
// Launchers (issue 13): a node's leader reads its followers' cgroups.
pub use parse::parse_cpu_stat_usage;
pub use tree::{ReadCounts, children_files_available};

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
    cgroup: Option<cgroup::Cgroup>,
    hook: Option<Arc<cgroup::Hook>>,
    /// joulerun's `RUSAGE_CHILDREN` before the command was spawned, µs.
    rusage_base_us: u64,
}

impl TreeSetup {
    /// `Auto`: a fresh cgroup under joulerun's own when cgroup v2 is writable, else `/proc`.
    /// `Cgroup`: an error saying why when it cannot be done. `Proc`: always works.
    ///
    /// Call it before spawning anything whose time should not count: the children time
    /// joulerun reaps from now on is the command's.
    pub fn prepare(req: TrackRequest) -> Result<TreeSetup, String> {
        let (method, fallback_reason, cgroup, hook) = match req {
            TrackRequest::Proc => (TrackMethod::Proc, None, None, None),
            TrackRequest::Auto | TrackRequest::Cgroup => match cgroup::Cgroup::create() {
                Ok((cg, hook)) => (TrackMethod::Cgroup, None, Some(cg), Some(Arc::new(hook))),
                Err(u) if req == TrackRequest::Cgroup => {
                    return Err(format!(
                        "cannot track the command with a cgroup: {}; to fix: {}",
                        u.why, u.fix
                    ));
                }
                Err(u) => (
                    TrackMethod::Proc,
                    Some(fallback_message(&u, cgroup::delegation_hint())),
                    None,
                    None,
                ),
            },
        };
        Ok(TreeSetup {
            method,
            fallback_reason,
            cgroup,
            hook,
            rusage_base_us: sys::rusage_us(libc::RUSAGE_CHILDREN),
        })
    }

    pub fn method(&self) -> TrackMethod {
        self.method
    }

    /// The cgroup directory the command will run in (cgroup method).
    pub fn cgroup_dir(&self) -> Option<&std::path::Path> {
        self.cgroup.as_ref().map(|c| c.dir.as_path())
    }

    /// Runs in the child between fork and exec (async-signal-safe: no allocation):
    /// moves the child into the cgroup. A no-op for `/proc` tracking. It never fails
    /// the spawn: a failed move is recorded and [`TreeSetup::into_tracker`] falls back
    /// to `/proc` tracking (with [`TreeTracker::fallback_reason`] saying why).
    pub fn child_hook(&self) -> impl FnMut() -> io::Result<()> + Send + Sync + 'static {
        let hook = self.hook.clone();
        move || {
            if let Some(h) = &hook {
                h.run();
            }
            Ok(())
        }
    }

    /// Start tracking the spawned child `pid`. `reaper`: joulerun is a child subreaper and
    /// reaps orphans, so their times arrive in its `RUSAGE_CHILDREN`.
    ///
    /// In both modes the caller reaps the command itself (its final time then arrives
    /// in `RUSAGE_CHILDREN`); any child joulerun reaps while tracking is charged to the
    /// command, so joulerun must not run other children meanwhile.
    pub fn into_tracker(mut self, pid: i32, reaper: bool, topology: &Topology) -> TreeTracker {
        let (pkg_of_cpu, npkg) = package_map(topology);
        let mut fallback_reason = self.fallback_reason.take();
        let proc_fd =
            sys::open_at(libc::AT_FDCWD, c"/proc", libc::O_RDONLY | libc::O_DIRECTORY).ok();
        let split = (npkg > 1).then(|| split::SocketSplit::new(pkg_of_cpu, npkg, None));
        let mut cg = self.cgroup.take();
        if let (Some(c), Some(h)) = (&cg, &self.hook)
            && let Some(errno) = h.failure()
        {
            fallback_reason = Some(format!(
                "could not move the command into {}: {}: tracking through /proc",
                c.dir.display(),
                io::Error::from_raw_os_error(errno)
            ));
            cg = None; // Dropping removes the (empty) directory.
        }
        let root_start = proc_fd
            .as_ref()
            .and_then(|fd| tree::read_stat_at(fd.as_raw_fd(), pid, None))
            .map(|s| s.starttime);
        let inner = match cg {
            Some(cg) => Inner::Cgroup(cg),
            None => {
                let self_pid = std::process::id() as i32;
                let mut tree = tree::ProcTree::spawned(self_pid, reaper);
                let disc = tree::Discovery::new(self_pid, reaper).ok().map(Box::new);
                match disc.as_ref().and_then(|d| d.read_stat(pid)) {
                    Some(s) => tree.seed(&s),
                    None => tree.expect_root(pid),
                }
                Inner::Proc {
                    tree: Box::new(tree),
                    disc,
                    rusage_base_us: Some(self.rusage_base_us),
                }
            }
        };
        let mut t = TreeTracker::new(inner, split, npkg, pid, root_start, proc_fd);
        t.fallback_reason = fallback_reason;
        t
    }
}

/// The warning of `--track auto` falling back to `/proc`: why, and (issue 14) how to get
/// the cgroup method where `hint` says it can be had.
fn fallback_message(u: &cgroup::CgroupUnavailable, hint: Option<&str>) -> String {
    match hint {
        Some(h) if u.not_delegated => format!("{}: tracking through /proc; {h}", u.why),
        _ => format!("{}: tracking through /proc", u.why),
    }
}

/// Package index of each CPU (position in `topology.packages()`; CPUs outside the
/// topology go to index 0) and the number of package indexes.
fn package_map(topology: &Topology) -> (Vec<usize>, usize) {
    let packages = topology.packages();
    let map = topology
        .cpu_package
        .iter()
        .map(|p| {
            p.and_then(|p| packages.iter().position(|&q| q == p))
                .unwrap_or(0)
        })
        .collect();
    (map, packages.len().max(1))
}

/// Cumulative CPU time of the tree since tracking began.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TreeCpu {
    pub total_s: f64,
    /// Split by package, index = position in `Topology::packages()`; sums to `total_s`.
    pub per_socket_s: Vec<f64>,
}

enum Inner {
    Cgroup(cgroup::Cgroup),
    Proc {
        tree: Box<tree::ProcTree>,
        /// `None` when `/proc` could not be opened: only `RUSAGE_CHILDREN` is left.
        disc: Option<Box<tree::Discovery>>,
        /// `RUSAGE_CHILDREN` when tracking began; `None` in attach mode.
        rusage_base_us: Option<u64>,
    },
}

pub struct TreeTracker {
    fallback_reason: Option<String>,
    inner: Inner,
    split: Option<split::SocketSplit>,
    npkg: usize,
    root: i32,
    root_start: Option<u64>,
    total_s: f64,
    per_socket: Vec<f64>,
    proc_fd: Option<OwnedFd>,
    dent_buf: Vec<u8>,
    text_buf: Vec<u8>,
    tids: Vec<i32>,
    pids: Vec<i32>,
    /// The per-thread reads of the socket split (`/proc` tracking).
    split_counts: ReadCounts,
}

/// Clock ticks since boot now, on the clock `starttime` in `/proc/<pid>/stat` uses.
fn boot_ticks_now(hz: u64) -> u64 {
    // SAFETY: an all-zero timespec is valid; clock_gettime only writes into it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is a valid, writable timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return 0;
    }
    let ns = ts.tv_sec.max(0) as u128 * 1_000_000_000 + ts.tv_nsec.max(0) as u128;
    (ns * hz as u128 / 1_000_000_000) as u64
}

impl TreeTracker {
    fn new(
        inner: Inner,
        split: Option<split::SocketSplit>,
        npkg: usize,
        root: i32,
        root_start: Option<u64>,
        proc_fd: Option<OwnedFd>,
    ) -> TreeTracker {
        TreeTracker {
            fallback_reason: None,
            inner,
            split,
            npkg,
            root,
            root_start,
            total_s: 0.0,
            per_socket: vec![0.0; npkg],
            proc_fd,
            dent_buf: Vec::new(),
            text_buf: Vec::new(),
            tids: Vec::new(),
            pids: Vec::new(),
            split_counts: ReadCounts::default(),
        }
    }

    /// `-p PID`: follow an existing process and its descendants through `/proc`.
    /// Only CPU time used from now on counts (for the process and for descendants
    /// that already exist).
    pub fn attach(pid: i32, topology: &Topology) -> Result<TreeTracker, String> {
        let self_pid = std::process::id() as i32;
        if pid <= 0 {
            return Err(format!("invalid pid {pid}"));
        }
        if pid == self_pid {
            return Err("cannot attach to joulerun itself".to_string());
        }
        let disc =
            tree::Discovery::new(self_pid, false).map_err(|e| format!("cannot open /proc: {e}"))?;
        let st = disc.read_stat(pid).ok_or_else(|| {
            match std::fs::read(format!("/proc/{pid}/stat")) {
                Err(e) => format!("no process {pid} (/proc/{pid}/stat: {e})"),
                Ok(_) => format!("cannot parse /proc/{pid}/stat"),
            }
        })?;
        if matches!(st.state, b'Z' | b'X') {
            return Err(format!("process {pid} has already exited (zombie)"));
        }
        let hz = sys::clock_ticks_per_s();
        let now = boot_ticks_now(hz);
        let mut tree = tree::ProcTree::attached(self_pid, now);
        tree.seed(&st);
        let (pkg_of_cpu, npkg) = package_map(topology);
        let split = (npkg > 1).then(|| split::SocketSplit::new(pkg_of_cpu, npkg, Some(now)));
        let proc_fd =
            sys::open_at(libc::AT_FDCWD, c"/proc", libc::O_RDONLY | libc::O_DIRECTORY).ok();
        let inner = Inner::Proc {
            tree: Box::new(tree),
            disc: Some(Box::new(disc)),
            rusage_base_us: None,
        };
        let mut t = TreeTracker::new(inner, split, npkg, pid, Some(st.starttime), proc_fd);
        // The first read takes the baseline: everything that exists now.
        let mut scratch = TreeCpu::default();
        t.sample(&mut scratch);
        Ok(t)
    }

    pub fn method(&self) -> TrackMethod {
        match self.inner {
            Inner::Cgroup(_) => TrackMethod::Cgroup,
            Inner::Proc { .. } => TrackMethod::Proc,
        }
    }

    /// Why the cgroup method was not used, if it was wanted (set by `prepare`, or
    /// by `into_tracker` when the child could not be moved).
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback_reason.as_deref()
    }

    /// Is the root process (the command, or the `-p` process) still running? A zombie
    /// has exited. Reads `/proc/<pid>/stat` now.
    pub fn root_alive(&self) -> bool {
        let Some(fd) = &self.proc_fd else {
            return false;
        };
        match tree::read_stat_at(fd.as_raw_fd(), self.root, None) {
            Some(s) => {
                !matches!(s.state, b'Z' | b'X') && self.root_start.is_none_or(|t| t == s.starttime)
            }
            None => false,
        }
    }

    /// Read the tree now; cumulative since tracking began. Called every tick.
    pub fn sample(&mut self, out: &mut TreeCpu) {
        let now = match &mut self.inner {
            Inner::Cgroup(cg) => cg.used_usec().map(|u| u as f64 / 1e6),
            Inner::Proc {
                tree,
                disc,
                rusage_base_us,
            } => {
                // RUSAGE_CHILDREN first, /proc second: a process reaped in between is
                // missed for one read (the total holds) rather than counted twice.
                let ru = rusage_base_us
                    .map(|b| sys::rusage_us(libc::RUSAGE_CHILDREN).saturating_sub(b))
                    .unwrap_or(0);
                if let Some(d) = disc {
                    d.read(tree);
                }
                let ns = tree.proc_ns() as f64 - tree.rusage_base_ns() as f64;
                Some(ns / 1e9 + ru as f64 / 1e6)
            }
        };
        let total = now.map_or(self.total_s, |n| n.max(self.total_s));
        let delta = total - self.total_s;
        self.total_s = total;
        match &mut self.split {
            None => self.per_socket[0] += delta,
            Some(split) => {
                split.begin();
                if let Some(fd) = &self.proc_fd {
                    let dir = fd.as_raw_fd();
                    match &self.inner {
                        Inner::Cgroup(cg) => {
                            cg.threads(&mut self.text_buf, &mut self.tids);
                            for &tid in &self.tids {
                                if let Some(s) = tree::read_stat_at(dir, tid, Some(tid)) {
                                    split.thread(&s, tid);
                                }
                            }
                        }
                        Inner::Proc { tree, disc, .. } => {
                            // Only the processes read in this sample ran since the last
                            // one: the others' threads used no time.
                            self.pids.clear();
                            if let Some(d) = disc {
                                self.pids.extend(
                                    d.observed_pids()
                                        .iter()
                                        .copied()
                                        .filter(|&p| tree.is_tracked(p)),
                                );
                            }
                            for &pid in &self.pids {
                                tree::list_tids(dir, pid, &mut self.dent_buf, &mut self.tids);
                                self.split_counts.files += 1;
                                for &tid in &self.tids {
                                    if let Some(s) = tree::read_stat_counted(
                                        dir,
                                        pid,
                                        Some(tid),
                                        &mut self.split_counts,
                                    ) {
                                        split.thread(&s, pid);
                                    }
                                }
                            }
                        }
                    }
                }
                let inner = &self.inner;
                split.end(delta, &mut self.per_socket, |tgid| match inner {
                    Inner::Proc { tree, .. } => tree.is_tracked(tgid),
                    Inner::Cgroup(_) => false,
                });
            }
        }
        out.total_s = self.total_s;
        out.per_socket_s.clear();
        out.per_socket_s.extend_from_slice(&self.per_socket);
        debug_assert_eq!(out.per_socket_s.len(), self.npkg);
    }

    /// What the `/proc` method has read so far (CPU clocks, files, bytes), the
    /// per-thread reads of the socket split included; `None` with a cgroup. For the
    /// tests and benchmarks of its cost.
    pub fn read_counts(&self) -> Option<ReadCounts> {
        match &self.inner {
            Inner::Cgroup(_) => None,
            Inner::Proc { disc, .. } => {
                let d = disc.as_ref().map(|d| d.counts()).unwrap_or_default();
                let s = self.split_counts;
                Some(ReadCounts {
                    clocks: d.clocks + s.clocks,
                    files: d.files + s.files,
                    bytes: d.bytes + s.bytes,
                })
            }
        }
    }

    /// The command's processes as of the last [`TreeTracker::sample`] (`/proc`) or now
    /// (cgroup), into `out`: what per-process interfaces (NVML's per-PID GPU use) are
    /// filtered by. The root is always included while it runs.
    pub fn pids(&mut self, out: &mut Vec<i32>) {
        out.clear();
        match &self.inner {
            Inner::Cgroup(cg) => cg.processes(&mut self.text_buf, out),
            Inner::Proc { tree, .. } => out.extend(tree.tracked_pids()),
        }
        if !out.contains(&self.root) && self.root_alive() {
            out.push(self.root);
        }
        out.sort_unstable();
    }

    /// Stop tracking; for a cgroup, move any survivors back to the parent and remove it.
    /// A failure to clean up is reported on stderr (see [`TreeTracker::finish_checked`]).
    pub fn finish(self) {
        if let Err(e) = self.finish_checked() {
            eprintln!("joulerun: warning: {e}");
        }
    }

    /// [`TreeTracker::finish`], returning the clean-up failure instead of printing it.
    pub fn finish_checked(self) -> Result<(), String> {
        match self.inner {
            Inner::Cgroup(mut cg) => cg.remove(),
            Inner::Proc { .. } => Ok(()),
        }
    }
}

/// Per-CPU `/proc/stat` deltas accumulated per package.
struct CpuAccum {
    pkg_of_cpu: Vec<usize>,
    /// Last (busy, idle) ticks of each CPU.
    prev: Vec<Option<(u64, u64)>>,
    busy: Vec<u64>,
    idle: Vec<u64>,
    cpus: Vec<usize>,
}

impl CpuAccum {
    fn new(topology: &Topology) -> CpuAccum {
        let (pkg_of_cpu, npkg) = package_map(topology);
        CpuAccum {
            prev: vec![None; pkg_of_cpu.len().max(1)],
            pkg_of_cpu,
            busy: vec![0; npkg],
            idle: vec![0; npkg],
            cpus: vec![0; npkg],
        }
    }

    /// Fold one `/proc/stat` text in. Each CPU's counters are differenced on their own
    /// (saturating: iowait is known to step back), so a CPU going offline (its line
    /// disappears) or coming back never makes a total go down.
    fn ingest(&mut self, text: &[u8]) {
        self.cpus.iter_mut().for_each(|c| *c = 0);
        let CpuAccum {
            pkg_of_cpu,
            prev,
            busy,
            idle,
            cpus,
        } = self;
        for_each_cpu_line(text, |cpu, b, i| {
            if cpu >= 65536 {
                return;
            }
            let pkg = pkg_of_cpu
                .get(cpu)
                .copied()
                .unwrap_or(0)
                .min(busy.len() - 1);
            if prev.len() <= cpu {
                prev.resize(cpu + 1, None);
            }
            if let Some((pb, pi)) = prev[cpu] {
                busy[pkg] += b.saturating_sub(pb);
                idle[pkg] += i.saturating_sub(pi);
            }
            prev[cpu] = Some((
                b.max(prev[cpu].map_or(0, |p| p.0)),
                i.max(prev[cpu].map_or(0, |p| p.1)),
            ));
            cpus[pkg] += 1;
        });
    }
}

/// The machine's busy CPU time as last read by a [`MachineCpu`], shared with the
/// estimate, which then reads no `/proc/stat` of its own.
#[derive(Debug, Default)]
pub struct MachineBusy {
    busy_s_bits: std::sync::atomic::AtomicU64,
    cpus: std::sync::atomic::AtomicUsize,
}

impl MachineBusy {
    pub fn publish(&self, busy_s: f64, cpus: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.busy_s_bits.store(busy_s.to_bits(), Relaxed);
        self.cpus.store(cpus, Relaxed);
    }

    /// The cumulative busy CPU seconds (all CPUs) and the CPU count, as last read.
    pub fn get(&self) -> (f64, usize) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            f64::from_bits(self.busy_s_bits.load(Relaxed)),
            self.cpus.load(Relaxed),
        )
    }
}

/// The machine's busy CPU time per package from `/proc/stat`.
pub struct MachineCpu {
    file: File,
    buf: Vec<u8>,
    hz: f64,
    acc: CpuAccum,
    publish: Option<Arc<MachineBusy>>,
}

/// Cumulative busy seconds per package since `MachineCpu::new`, and the CPU count of each.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MachineCpuSample {
    pub busy_s_per_socket: Vec<f64>,
    pub idle_s_per_socket: Vec<f64>,
    pub cpus_per_socket: Vec<usize>,
}

impl MachineCpu {
    /// busy = user + nice + system + irq + softirq (guest time is already inside user
    /// and nice; steal is excluded), idle = idle + iowait, per package index of
    /// `topology.packages()`; CPUs outside the topology count in index 0.
    pub fn new(topology: &Topology) -> Result<MachineCpu, String> {
        let file = File::open("/proc/stat").map_err(|e| format!("open /proc/stat: {e}"))?;
        let mut m = MachineCpu {
            file,
            buf: Vec::with_capacity(16 * 1024),
            hz: sys::clock_ticks_per_s() as f64,
            acc: CpuAccum::new(topology),
            publish: None,
        };
        crate::kfs::read_to_vec(&m.file, &mut m.buf, true)
            .map_err(|e| format!("read /proc/stat: {e}"))?;
        m.acc.ingest(&m.buf);
        if m.acc.cpus.iter().sum::<usize>() == 0 {
            return Err("/proc/stat has no cpuN lines".to_string());
        }
        Ok(m)
    }

    /// Publish every sample's machine-wide busy time to `to` (for the estimate).
    pub fn publishing(mut self, to: Arc<MachineBusy>) -> MachineCpu {
        self.publish = Some(to);
        self.publish_now();
        self
    }

    /// Does it publish its readings (to the estimate)?
    pub fn publishes(&self) -> bool {
        self.publish.is_some()
    }

    fn publish_now(&self) {
        if let Some(p) = &self.publish {
            let busy: u64 = self.acc.busy.iter().sum();
            p.publish(busy as f64 / self.hz, self.acc.cpus.iter().sum());
        }
    }

    /// Read `/proc/stat` now. On a read error the previous totals are kept.
    pub fn sample(&mut self, out: &mut MachineCpuSample) {
        if crate::kfs::read_to_vec(&self.file, &mut self.buf, true).is_ok() {
            self.acc.ingest(&self.buf);
        }
        self.publish_now();
        fill_sample(&self.acc, self.hz, out);
    }
}

fn fill_sample(acc: &CpuAccum, hz: f64, out: &mut MachineCpuSample) {
    out.busy_s_per_socket.clear();
    out.busy_s_per_socket
        .extend(acc.busy.iter().map(|&t| t as f64 / hz));
    out.idle_s_per_socket.clear();
    out.idle_s_per_socket
        .extend(acc.idle.iter().map(|&t| t as f64 / hz));
    out.cpus_per_socket.clear();
    out.cpus_per_socket.extend_from_slice(&acc.cpus);
}

/// The calling thread's CPU time so far, seconds (its CPU-time clock: nanoseconds).
pub fn thread_cpu_s() -> f64 {
    // SAFETY: an all-zero timespec is valid; clock_gettime only writes into it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is a valid, writable timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0.0;
    }
    ts.tv_sec.max(0) as f64 + ts.tv_nsec.max(0) as f64 / 1e9
}

/// joulerun's own CPU time so far (all its threads), seconds.
pub fn self_cpu_s() -> f64 {
    sys::rusage_us(libc::RUSAGE_SELF) as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_packages() -> Topology {
        // CPUs 0,1 on package 0; 2,3 on package 1 (ids 0 and 3: indexes 0 and 1).
        Topology::from_packages(vec![Some(0), Some(0), Some(3), Some(3)])
    }

    const T0: &str = "cpu  0 0 0 0 0 0 0 0 0 0\n\
        cpu0 100 0 50 1000 10 0 0 0 0 0\n\
        cpu1 100 0 50 1000 10 0 0 0 0 0\n\
        cpu2 100 0 50 1000 10 0 0 0 0 0\n\
        cpu3 100 0 50 1000 10 0 0 0 0 0\n\
        intr 1\n";
    // cpu0: +20 user +5 nice +5 system +3 irq +2 softirq +50 steal, +60 idle +1 iowait;
    // cpu2: +10 user, iowait steps back by 4; cpu3 went offline; cpu9 (outside the
    // topology) appears.
    const T1: &str = "cpu  0 0 0 0 0 0 0 0 0 0\n\
        cpu0 120 5 55 1060 11 3 2 50 7 0\n\
        cpu1 100 0 50 1000 10 0 0 0 0 0\n\
        cpu2 110 0 50 1000 6 0 0 0 0 0\n\
        cpu9 5 0 0 5 0 0 0 0 0 0\n";
    const T2: &str = "cpu  0 0 0 0 0 0 0 0 0 0\n\
        cpu0 120 5 55 1060 11 3 2 50 7 0\n\
        cpu1 100 0 50 1000 10 0 0 0 0 0\n\
        cpu2 110 0 50 1000 10 0 0 0 0 0\n\
        cpu3 100 0 50 1100 10 0 0 0 0 0\n\
        cpu9 10 0 0 5 0 0 0 0 0 0\n";

    #[test]
    fn machine_cpu_two_packages() {
        let mut acc = CpuAccum::new(&two_packages());
        acc.ingest(T0.as_bytes());
        let mut s = MachineCpuSample::default();
        fill_sample(&acc, 100.0, &mut s);
        assert_eq!(s.busy_s_per_socket, vec![0.0, 0.0]);
        assert_eq!(s.cpus_per_socket, vec![2, 2]);
        acc.ingest(T1.as_bytes());
        fill_sample(&acc, 100.0, &mut s);
        // Package 0: cpu0 busy +35 (steal excluded), cpu9 first seen: no delta yet.
        assert_eq!(acc.busy, vec![35, 10]);
        assert_eq!(acc.idle, vec![61, 0]);
        assert_eq!(s.cpus_per_socket, vec![3, 1]);
        assert!((s.busy_s_per_socket[0] - 0.35).abs() < 1e-12);
        acc.ingest(T2.as_bytes());
        // cpu3 back: +100 idle; cpu2's iowait recovers 4 (counted from the max seen,
        // so the step back is not counted twice); cpu9 +5 busy to package index 0.
        assert_eq!(acc.busy, vec![40, 10]);
        assert_eq!(acc.idle, vec![61, 100]);
        fill_sample(&acc, 100.0, &mut s);
        assert_eq!(s.cpus_per_socket, vec![3, 2]);
    }

    #[test]
    fn machine_cpu_real_is_monotonic() {
        let topo = Topology::read(&crate::sysroot::SysRoot::default());
        let mut m = MachineCpu::new(&topo).unwrap();
        let mut prev = MachineCpuSample::default();
        m.sample(&mut prev);
        assert_eq!(prev.busy_s_per_socket.len(), topo.package_count());
        assert!(prev.cpus_per_socket.iter().sum::<usize>() >= 1);
        let t = std::time::Instant::now();
        while t.elapsed().as_millis() < 60 {
            std::hint::black_box(0u64);
        }
        let mut s = MachineCpuSample::default();
        for _ in 0..5 {
            m.sample(&mut s);
            for i in 0..s.busy_s_per_socket.len() {
                assert!(s.busy_s_per_socket[i] >= prev.busy_s_per_socket[i]);
                assert!(s.idle_s_per_socket[i] >= prev.idle_s_per_socket[i]);
            }
            prev = s.clone();
        }
        // We just burned 60 ms of CPU: the machine was busy at least a little.
        assert!(s.busy_s_per_socket.iter().sum::<f64>() > 0.0);
    }

    #[test]
    fn package_map_positions() {
        let (m, n) = package_map(&Topology::from_packages(vec![Some(5), None, Some(2)]));
        assert_eq!((m, n), (vec![1, 0, 0], 2));
    }

    #[test]
    fn self_time_grows() {
        let a = self_cpu_s();
        let t = std::time::Instant::now();
        while t.elapsed().as_millis() < 30 {
            std::hint::black_box(0u64);
        }
        assert!(self_cpu_s() > a);
    }

    #[test]
    fn the_fallback_says_how_to_get_a_cgroup_where_systemd_can_delegate_one() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!cgroup::user_manager_runs(dir.path()));
        std::fs::create_dir(dir.path().join("systemd")).unwrap();
        std::fs::write(dir.path().join("systemd/private"), "").unwrap();
        assert!(cgroup::user_manager_runs(dir.path()));
        let perm = cgroup::CgroupUnavailable {
            why: "cgroup v2 at /sys/fs/cgroup/user.slice is not writable by this user".into(),
            fix: String::new(),
            not_delegated: true,
        };
        let m = fallback_message(&perm, Some(cgroup::SYSTEMD_HINT));
        assert!(m.starts_with("cgroup v2 at /sys/fs/cgroup/user.slice is not writable"));
        assert!(m.contains("tracking through /proc; for the exact and cheaper cgroup method"));
        assert!(
            m.contains("`systemd-run --user --scope -p Delegate=yes joulerun ...`"),
            "{m}"
        );
        // No user manager, or a reason delegation would not cure: no hint.
        assert!(!fallback_message(&perm, None).contains("systemd-run"));
        let other = cgroup::CgroupUnavailable {
            not_delegated: false,
            why: "no cgroup v2 hierarchy is mounted".into(),
            ..perm
        };
        assert_eq!(
            fallback_message(&other, Some(cgroup::SYSTEMD_HINT)),
            "no cgroup v2 hierarchy is mounted: tracking through /proc"
        );
    }

    #[test]
    fn proc_request_never_fails() {
        let s = TreeSetup::prepare(TrackRequest::Proc).unwrap();
        assert_eq!(s.method(), TrackMethod::Proc);
        assert!(s.fallback_reason.is_none());
    }
}
