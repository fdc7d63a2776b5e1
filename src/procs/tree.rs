//! The `/proc` method: which processes belong to the tree, and how much CPU time the
//! tree has used, including processes that are gone.
//!
//! [`ProcTree`] is the pure bookkeeping (fed with parsed `stat` records, tested on
//! fabricated data); [`Discovery`] does the per-tick reads that feed it.
//!
//! # Exited children
//!
//! A process's own time is read from its CPU-time clock (nanoseconds), not from the
//! tick-truncated utime + stime of `stat`: a child that ran for 0.8 ms shows 0 ticks
//! there, and two thousand of them showed nothing until their parent reaped them and
//! their exact time appeared at once in its `cutime`. The clock still reads while the
//! process is a zombie, so an exited child's time is counted in the read that first
//! sees it, whenever its parent reaps it.
//!
//! When a tracked process vanishes into its (tracked, live) parent, its last-seen time
//! is *pending* on the parent until the parent's `cutime`/`cstime` grows to take it
//! in: the parent may have been read just before it reaped the child, and dropping the
//! child then would lose its time for a read and bring it back later in one lump.
//! Cutime growth pays pending time first; growth beyond it is the time of children
//! that lived and were reaped between two reads, counted when it appears. Parents are
//! read before their children (see [`Discovery::tick`]), so a child counted in a read
//! cannot also be in the `cutime` read for its parent in that same read.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use super::parse::{PidStat, for_each_number, parse_pid_stat};
use super::sys::{self, StackPath};

/// One process of the tree as last seen. Times in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tracked {
    start: u64,
    ppid: i32,
    /// Own time (the CPU clock, or utime + stime) + cutime + cstime at the last read.
    last: u64,
    /// cutime + cstime at the last read.
    cut: u64,
    /// How much cutime + cstime grew in the last read that saw it.
    cut_grew: u64,
    /// Last-seen time of children that vanished into this process and has not shown
    /// up in its cutime + cstime yet.
    pending: u64,
    /// Time that is not the tree's: the process's time when tracking began (attach),
    /// plus the bases of reaped children whose time moved into `cutime`.
    base: u64,
    /// Generation of the last read that saw it.
    seen: u64,
    /// Seen exited (a zombie): its time is final.
    zombie: bool,
}

impl Tracked {
    /// What it contributes to the tree's time.
    fn counted(&self) -> u64 {
        (self.last + self.pending).saturating_sub(self.base)
    }
}

/// Where the time of a vanished process went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    /// Into the `cutime`/`cstime` of a live tracked process (which reaped it).
    Parent(i32),
    /// Into joulerun's `RUSAGE_CHILDREN` (joulerun reaped it).
    Rusage,
    /// Nowhere we can see (reparented to init or an outside subreaper, or an
    /// auto-reaping parent): its last-seen time is kept.
    Lost,
}

/// The bookkeeping of the `/proc` method. All times in nanoseconds; `stat` fields,
/// in clock ticks, are converted.
pub struct ProcTree {
    tracked: HashMap<i32, Tracked>,
    self_pid: i32,
    /// Nanoseconds per clock tick (`stat`'s unit).
    tick_ns: u64,
    /// joulerun is a child subreaper: a process whose parent is joulerun belongs to the
    /// tree (an orphan of it), and its time arrives in `RUSAGE_CHILDREN` when reaped.
    accept_self_children: bool,
    /// Processes whose parent is joulerun are reaped by joulerun, so their final time
    /// is in `RUSAGE_CHILDREN` (false in attach mode: nothing is joulerun's child).
    self_children_in_rusage: bool,
    /// A pid to accept as the root when first seen with joulerun as parent (the root
    /// could not be read when tracking began).
    pending_root: Option<i32>,
    /// Attach mode: a process that started before this boot-relative tick existed
    /// before tracking began, so its time so far is not the tree's.
    preexisting_before: Option<u64>,
    /// The next `apply` is the first read of an attach: everything seen is baseline.
    baseline_next: bool,
    /// Time of vanished processes that went nowhere we can see.
    lost: u64,
    /// Bases of processes that vanished into `RUSAGE_CHILDREN` (to subtract).
    rusage_base: u64,
    generation: u64,
    candidates: Vec<PidStat>,
    accepted: Vec<bool>,
    vanished: Vec<(i32, Tracked)>,
}

impl ProcTree {
    /// Tracking a command joulerun just spawned: all its time is the tree's.
    pub fn spawned(self_pid: i32, reaper: bool) -> ProcTree {
        ProcTree::new(self_pid, reaper, true, None)
    }

    /// Tracking an existing process (`-p`): only time used from now on counts.
    /// `now_ticks`: the boot-relative clock tick of now (as `starttime` counts).
    pub fn attached(self_pid: i32, now_ticks: u64) -> ProcTree {
        let mut t = ProcTree::new(self_pid, false, false, Some(now_ticks));
        t.baseline_next = true;
        t
    }

    fn new(
        self_pid: i32,
        accept_self_children: bool,
        self_children_in_rusage: bool,
        preexisting_before: Option<u64>,
    ) -> ProcTree {
        ProcTree {
            tracked: HashMap::new(),
            self_pid,
            tick_ns: 1_000_000_000 / sys::clock_ticks_per_s().max(1),
            accept_self_children,
            self_children_in_rusage,
            pending_root: None,
            preexisting_before,
            baseline_next: false,
            lost: 0,
            rusage_base: 0,
            generation: 0,
            candidates: Vec::new(),
            accepted: Vec::new(),
            vanished: Vec::new(),
        }
    }

    /// cutime + cstime of `s`, ns.
    fn cut_ns(&self, s: &PidStat) -> u64 {
        (s.cutime + s.cstime) * self.tick_ns
    }

    /// Own time + cutime + cstime of `s`, ns. The own time is the CPU clock when it was
    /// read and is consistent with `stat` (read after it, it is never below the
    /// truncated utime + stime; below means the pid changed hands in between).
    fn total_ns(&self, s: &PidStat) -> u64 {
        let stat_own = s.own() * self.tick_ns;
        let own = s.cpu_ns.filter(|&ns| ns >= stat_own).unwrap_or(stat_own);
        own + self.cut_ns(s)
    }

    fn new_tracked(&self, s: &PidStat, seen: u64) -> Tracked {
        let total = self.total_ns(s);
        Tracked {
            start: s.starttime,
            ppid: s.ppid,
            last: total,
            cut: self.cut_ns(s),
            cut_grew: 0,
            pending: 0,
            base: if self.is_preexisting(s) { total } else { 0 },
            seen,
            zombie: is_exited(s),
        }
    }

    /// Make `s` part of the tree regardless of its parent (the root).
    pub fn seed(&mut self, s: &PidStat) {
        let t = self.new_tracked(s, self.generation);
        self.tracked.insert(s.pid, t);
    }

    /// The root could not be read yet: accept `pid` when it shows up as joulerun's child.
    pub fn expect_root(&mut self, pid: i32) {
        self.pending_root = Some(pid);
    }

    fn is_preexisting(&self, s: &PidStat) -> bool {
        self.baseline_next || self.preexisting_before.is_some_and(|t| s.starttime < t)
    }

    pub fn is_tracked(&self, pid: i32) -> bool {
        self.tracked.contains_key(&pid)
    }

    /// Is `pid` tracked with this start time?
    #[cfg(test)]
    pub fn is_tracked_as(&self, pid: i32, start: u64) -> bool {
        self.tracked.get(&pid).is_some_and(|t| t.start == start)
    }

    pub fn tracked_pids(&self) -> impl Iterator<Item = i32> + '_ {
        self.tracked.keys().copied()
    }

    /// The tracked processes whose parent is not tracked (the root, orphans, processes
    /// reparented out of the tree): where a walk down the tree starts.
    pub fn top_pids(&self) -> impl Iterator<Item = i32> + '_ {
        self.tracked
            .iter()
            .filter(|(_, t)| !self.tracked.contains_key(&t.ppid))
            .map(|(p, _)| *p)
    }

    /// A tracked zombie child of `ppid` as last read, for a read that found `pid`
    /// still listed among `ppid`'s children: its time is final and its pid cannot have
    /// been reused while it is listed, so its `stat` need not be read again.
    pub fn known_zombie(&self, pid: i32, ppid: i32) -> Option<PidStat> {
        let t = self
            .tracked
            .get(&pid)
            .filter(|t| t.zombie && t.ppid == ppid)?;
        Some(PidStat {
            pid,
            ppid,
            state: b'Z',
            cutime: t.cut / self.tick_ns,
            num_threads: 1,
            starttime: t.start,
            cpu_ns: Some(t.last - t.cut),
            ..PidStat::default()
        })
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.tracked.len()
    }

    /// Feed one read: `obs` holds the `stat` of every tracked process still present,
    /// and of any other process that might have joined, each parent before its
    /// children. Processes tracked but absent have vanished. Calls `rejected(pid)` for
    /// each observed process that is not in the tree.
    pub fn apply(&mut self, obs: &[PidStat], mut rejected: impl FnMut(i32)) {
        self.generation += 1;
        let cur = self.generation;
        self.candidates.clear();
        self.vanished.clear();
        for s in obs {
            let (total, cut) = (self.total_ns(s), self.cut_ns(s));
            match self.tracked.get_mut(&s.pid) {
                Some(t) if t.start == s.starttime => {
                    t.last = total.max(t.last);
                    t.cut_grew = cut.saturating_sub(t.cut);
                    t.cut = cut.max(t.cut);
                    t.ppid = s.ppid;
                    t.seen = cur;
                    t.zombie = is_exited(s);
                }
                Some(t) => {
                    // PID reuse: the process we knew is gone; this is another one.
                    let old = *t;
                    self.tracked.remove(&s.pid);
                    self.vanished.push((s.pid, old));
                    self.candidates.push(*s);
                }
                None => self.candidates.push(*s),
            }
        }
        // Accept candidates whose parent is in the tree, until nothing changes (a new
        // child and its new grandchild may arrive in the same read, in any order).
        self.accepted.clear();
        self.accepted.resize(self.candidates.len(), false);
        loop {
            let mut changed = false;
            for i in 0..self.candidates.len() {
                if self.accepted[i] {
                    continue;
                }
                let c = self.candidates[i];
                let is_root = self.pending_root == Some(c.pid) && c.ppid == self.self_pid;
                let parent_in_tree = self.tracked.contains_key(&c.ppid)
                    && !self.vanished.iter().any(|(p, _)| *p == c.ppid);
                let orphan_of_ours = self.accept_self_children && c.ppid == self.self_pid;
                if is_root || parent_in_tree || orphan_of_ours {
                    if is_root {
                        self.pending_root = None;
                    }
                    let t = self.new_tracked(&c, cur);
                    self.tracked.insert(c.pid, t);
                    self.accepted[i] = true;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        for (c, ok) in self.candidates.iter().zip(&self.accepted) {
            if !ok {
                rejected(c.pid);
            }
        }
        self.baseline_next = false;
        // Tracked but not seen: vanished.
        for (pid, t) in &self.tracked {
            if t.seen != cur {
                self.vanished.push((*pid, *t));
            }
        }
        for (pid, _) in &self.vanished {
            // A reused pid was already replaced (or dropped) above; only remove the
            // entry when it is the vanished process itself.
            if self.tracked.get(pid).is_some_and(|t| t.seen != cur) {
                self.tracked.remove(pid);
            }
        }
        for i in 0..self.vanished.len() {
            let (_, v) = self.vanished[i];
            match self.dest_of(v.ppid) {
                Dest::Parent(p) => {
                    if let Some(t) = self.tracked.get_mut(&p) {
                        // Its time stays counted, on the parent, until the parent's
                        // cutime takes it in.
                        t.pending += v.last + v.pending;
                        t.base += v.base;
                    }
                }
                // RUSAGE_CHILDREN holds its exact total, its reaped children included.
                Dest::Rusage => self.rusage_base += v.base,
                Dest::Lost => self.lost += v.counted(),
            }
        }
        // Cutime growth pays what is pending first (this read's vanished children, or
        // earlier ones reaped after their parent was read); the rest is the time of
        // children that lived and were reaped between two reads.
        for t in self.tracked.values_mut() {
            let paid = t.pending.min(t.cut_grew);
            t.pending -= paid;
            t.cut_grew = 0;
            // An exited process reaps no more, and its cutime is final: what is still
            // pending on it was not reaped by it but reparented when it exited. To
            // joulerun, a subreaper, which reaped it into RUSAGE_CHILDREN; else to init,
            // out of sight, and kept like other lost time.
            if t.zombie && self.accept_self_children {
                t.pending = 0;
            }
        }
    }

    /// Where the time of a process whose last-seen parent was `ppid` went: follow the
    /// parent links through processes that vanished in the same read.
    fn dest_of(&self, mut ppid: i32) -> Dest {
        for _ in 0..=self.vanished.len() {
            if ppid == self.self_pid && self.self_children_in_rusage {
                return Dest::Rusage;
            }
            if self.tracked.contains_key(&ppid) {
                return Dest::Parent(ppid);
            }
            match self.vanished.iter().find(|(p, _)| *p == ppid) {
                Some((_, v)) => ppid = v.ppid,
                None => return Dest::Lost,
            }
        }
        Dest::Lost
    }

    /// The tree's time visible in `/proc`, ns: live processes (and their pending
    /// children) since tracking began plus the lost ones. Add `RUSAGE_CHILDREN` (since
    /// tracking began) and subtract [`ProcTree::rusage_base_ns`] for the total.
    pub fn proc_ns(&self) -> u64 {
        let live: u64 = self.tracked.values().map(Tracked::counted).sum();
        live + self.lost
    }

    pub fn rusage_base_ns(&self) -> u64 {
        self.rusage_base
    }

    /// [`ProcTree::proc_ns`] in clock ticks.
    #[cfg(test)]
    pub fn proc_ticks(&self) -> u64 {
        self.proc_ns() / self.tick_ns
    }

    #[cfg(test)]
    pub fn lost_ticks(&self) -> u64 {
        self.lost / self.tick_ns
    }
}

/// An exited process whose threads are all gone: it can no longer use CPU time or
/// have children.
fn is_exited(s: &PidStat) -> bool {
    s.state == b'Z' && s.num_threads <= 1
}

/// How new members of the tree are found each tick.
enum Mode {
    /// `/proc/<pid>/task/<tid>/children` (CONFIG_PROC_CHILDREN): walk down from the
    /// tracked processes; cost proportional to the tree. `forking`: the processes that
    /// had new children in this read.
    Walk {
        seen: HashSet<i32>,
        queue: Vec<i32>,
        forking: Vec<i32>,
    },
    /// List `/proc` and read the `stat` of processes not known yet (and of all of them
    /// over `RECHECK_EVERY` reads, a slice of the known outsiders per read, to notice a
    /// pid that died and was reused by the tree between two reads).
    Scan {
        outsiders: HashMap<i32, u64>,
        pids: Vec<i32>,
    },
}

const RECHECK_EVERY: u64 = 50;

/// Walk mode: at most this many extra rounds per read for children forked while the
/// read ran.
const CATCH_UP_ROUNDS: u32 = 3;

/// Walk mode: how often the `children` of every thread (not only the main thread's)
/// of multi-threaded processes are read.
const ALL_THREADS_EVERY: u64 = 5;

/// Reads `/proc` for a [`ProcTree`].
pub struct Discovery {
    proc_fd: OwnedFd,
    mode: Mode,
    self_pid: i32,
    include_self_children: bool,
    reads: u64,
    dent_buf: Vec<u8>,
    text_buf: Vec<u8>,
    tid_buf: Vec<i32>,
    obs: Vec<PidStat>,
}

/// Does this kernel have `/proc/<pid>/task/<tid>/children`?
pub fn children_files_available() -> bool {
    let pid = std::process::id();
    std::path::Path::new(&format!("/proc/{pid}/task/{pid}/children")).exists()
}

impl Discovery {
    pub fn new(self_pid: i32, include_self_children: bool) -> io::Result<Discovery> {
        Discovery::with_mode(self_pid, include_self_children, children_files_available())
    }

    /// `walk`: use `children` files (they must exist), else scan `/proc`.
    pub fn with_mode(
        self_pid: i32,
        include_self_children: bool,
        walk: bool,
    ) -> io::Result<Discovery> {
        let proc_fd = sys::open_at(libc::AT_FDCWD, c"/proc", libc::O_RDONLY | libc::O_DIRECTORY)?;
        let mode = if walk {
            Mode::Walk {
                seen: HashSet::new(),
                queue: Vec::new(),
                forking: Vec::new(),
            }
        } else {
            Mode::Scan {
                outsiders: HashMap::new(),
                pids: Vec::new(),
            }
        };
        Ok(Discovery {
            proc_fd,
            mode,
            self_pid,
            include_self_children,
            reads: 0,
            dent_buf: Vec::new(),
            text_buf: Vec::new(),
            tid_buf: Vec::new(),
            obs: Vec::new(),
        })
    }

    #[cfg(test)]
    pub fn is_walk(&self) -> bool {
        matches!(self.mode, Mode::Walk { .. })
    }

    /// Read the `stat` of `pid` and its CPU clock; `None` when it is gone or unreadable.
    pub fn read_stat(&self, pid: i32) -> Option<PidStat> {
        read_process_at(self.proc_fd.as_raw_fd(), pid)
    }

    /// One read of the tree: refresh every tracked process, find new members, and
    /// settle the vanished ones.
    ///
    /// Walk mode reads parents before their children: it starts from the tracked
    /// processes whose parent is not tracked and goes down through `children` files,
    /// then reads the tracked processes the walk did not reach. A parent's `cutime`
    /// is then read before it could take in a child read later in the same pass (see
    /// the module's notes). Last, the processes that had new children are listed again,
    /// for up to `CATCH_UP_ROUNDS` rounds while that finds more: children forked while
    /// the read ran (a read of hundreds of new processes can take tens of ms) are then
    /// counted in this tick, whose busy time (read after the tree) holds their CPU
    /// time, not in the next. Scan mode reads `/proc` in pid order, which is parent
    /// first unless pids wrapped around.
    pub fn tick(&mut self, tree: &mut ProcTree) {
        self.reads += 1;
        self.obs.clear();
        let dir = self.proc_fd.as_raw_fd();
        match &mut self.mode {
            Mode::Walk {
                seen,
                queue,
                forking,
            } => {
                seen.clear();
                queue.clear();
                forking.clear();
                queue.extend(tree.top_pids());
                if let Some(root) = tree.pending_root {
                    queue.push(root);
                }
                let all_threads = self.reads.is_multiple_of(ALL_THREADS_EVERY);
                if self.include_self_children {
                    if all_threads {
                        children_of(
                            dir,
                            self.self_pid,
                            &mut self.dent_buf,
                            &mut self.text_buf,
                            &mut self.tid_buf,
                            queue,
                        );
                    } else {
                        main_thread_children(dir, self.self_pid, &mut self.text_buf, queue);
                    }
                }
                let mut i = 0;
                // 0: walking down; 1: the tracked processes not reached; 2..: catching up.
                let mut phase = 0;
                let mut round_start = 0;
                loop {
                    if i == queue.len() {
                        if phase == 0 {
                            // Tracked processes the walk did not reach (moved, or gone).
                            phase = 1;
                            queue.extend(tree.tracked_pids());
                            continue;
                        }
                        let found_more = phase == 1 || self.obs.len() > round_start;
                        if forking.is_empty() || !found_more || phase > CATCH_UP_ROUNDS {
                            break;
                        }
                        // Children forked while this read ran.
                        phase += 1;
                        round_start = self.obs.len();
                        for &p in forking.iter() {
                            main_thread_children(dir, p, &mut self.text_buf, queue);
                        }
                        continue;
                    }
                    let pid = queue[i];
                    i += 1;
                    if pid == self.self_pid || !seen.insert(pid) {
                        continue;
                    }
                    let Some(s) = read_process_at(dir, pid) else {
                        continue;
                    };
                    self.obs.push(s);
                    // An exited process has no children (they were reparented when it
                    // exited), unless other threads of it still run.
                    if is_exited(&s) {
                        continue;
                    }
                    let listed = queue.len();
                    // Every thread has its own `children` file. The main thread's is
                    // read every time; the others' every `ALL_THREADS_EVERY` reads (a
                    // child forked by another thread is found a little later; its time
                    // is not lost meanwhile: a reaped child moves into its parent's
                    // cutime, an orphan into joulerun's RUSAGE_CHILDREN).
                    if s.num_threads <= 1 || !all_threads {
                        main_thread_children(dir, pid, &mut self.text_buf, queue);
                    } else {
                        children_of(
                            dir,
                            pid,
                            &mut self.dent_buf,
                            &mut self.text_buf,
                            &mut self.tid_buf,
                            queue,
                        );
                    }
                    // Zombies already read and still listed: their last read stands
                    // (each one's stat is still read once every RECHECK_EVERY reads).
                    let mut new_child = false;
                    for &c in &queue[listed..] {
                        if c as u64 % RECHECK_EVERY != self.reads % RECHECK_EVERY
                            && let Some(z) = tree.known_zombie(c, pid)
                            && seen.insert(c)
                        {
                            self.obs.push(z);
                        }
                        new_child |= !tree.is_tracked(c);
                    }
                    if new_child {
                        forking.push(pid);
                    }
                }
                tree.apply(&self.obs, |_| {});
            }
            Mode::Scan { outsiders, pids } => {
                let slice = self.reads % RECHECK_EVERY;
                pids.clear();
                if sys::for_each_dirent(dir, &mut self.dent_buf, |name| {
                    if let Some(p) = sys::parse_pid(name) {
                        pids.push(p);
                    }
                })
                .is_err()
                {
                    // /proc unreadable this time: skip the read rather than declare
                    // every process vanished.
                    return;
                }
                let reads = self.reads;
                for &pid in pids.iter() {
                    if pid == self.self_pid {
                        continue;
                    }
                    if pid as u64 % RECHECK_EVERY != slice
                        && !tree.is_tracked(pid)
                        && let Some(r) = outsiders.get_mut(&pid)
                    {
                        *r = reads;
                        continue;
                    }
                    if let Some(s) = read_process_at(dir, pid) {
                        self.obs.push(s);
                    }
                }
                tree.apply(&self.obs, |p| {
                    outsiders.insert(p, reads);
                });
                outsiders.retain(|_, r| *r == reads);
            }
        }
    }
}

/// Push the children of the main thread of `pid` onto `out`.
fn main_thread_children(dir: i32, pid: i32, text_buf: &mut Vec<u8>, out: &mut Vec<i32>) {
    let mut p = StackPath::new();
    p.num(pid as u64)
        .push(b"/task/")
        .num(pid as u64)
        .push(b"/children");
    if sys::read_at_vec(dir, p.as_cstr(), text_buf).is_ok() {
        for_each_number(text_buf, |c| out.push(c));
    }
}

/// Push the children of every thread of `pid` onto `out`.
fn children_of(
    dir: i32,
    pid: i32,
    dent_buf: &mut Vec<u8>,
    text_buf: &mut Vec<u8>,
    tids: &mut Vec<i32>,
    out: &mut Vec<i32>,
) {
    list_tids(dir, pid, dent_buf, tids);
    for &tid in tids.iter() {
        let mut p = StackPath::new();
        p.num(pid as u64)
            .push(b"/task/")
            .num(tid as u64)
            .push(b"/children");
        if sys::read_at_vec(dir, p.as_cstr(), text_buf).is_ok() {
            for_each_number(text_buf, |c| out.push(c));
        }
    }
}

/// The thread ids of `pid` (empty when it is gone).
pub fn list_tids(dir: i32, pid: i32, dent_buf: &mut Vec<u8>, tids: &mut Vec<i32>) {
    tids.clear();
    let mut p = StackPath::new();
    p.num(pid as u64).push(b"/task");
    let Ok(fd) = sys::open_at(dir, p.as_cstr(), libc::O_RDONLY | libc::O_DIRECTORY) else {
        return;
    };
    let _ = sys::for_each_dirent(fd.as_raw_fd(), dent_buf, |name| {
        if let Some(t) = sys::parse_pid(name) {
            tids.push(t);
        }
    });
}

/// [`read_stat_at`] of a process, with its CPU clock read right after (so that the
/// clock is never below the truncated utime + stime of the same process).
pub fn read_process_at(dir: i32, pid: i32) -> Option<PidStat> {
    let mut s = read_stat_at(dir, pid, None)?;
    s.cpu_ns = sys::process_cpu_ns(pid);
    Some(s)
}

/// Read and parse `/proc/<pid>/stat`, or `/proc/<pid>/task/<tid>/stat` with `tid`.
pub fn read_stat_at(dir: i32, pid: i32, tid: Option<i32>) -> Option<PidStat> {
    let mut p = StackPath::new();
    p.num(pid as u64);
    if let Some(t) = tid {
        p.push(b"/task/").num(t as u64);
    }
    p.push(b"/stat");
    let mut buf = [0u8; 2048];
    let n = sys::read_at(dir, p.as_cstr(), &mut buf).ok()?;
    parse_pid_stat(&buf[..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: i32 = 1000;

    fn st(pid: i32, ppid: i32, start: u64, total: u64) -> PidStat {
        PidStat {
            pid,
            ppid,
            starttime: start,
            utime: total,
            num_threads: 1,
            state: b'S',
            ..PidStat::default()
        }
    }

    fn with_cutime(mut s: PidStat, c: u64) -> PidStat {
        s.cutime = c;
        s
    }

    /// Nanoseconds per clock tick.
    fn tick_ns() -> u64 {
        1_000_000_000 / sys::clock_ticks_per_s()
    }

    /// A process whose CPU clock was read: `own_ns` exact, utime its truncation.
    fn clocked(pid: i32, ppid: i32, start: u64, own_ns: u64) -> PidStat {
        PidStat {
            cpu_ns: Some(own_ns),
            ..st(pid, ppid, start, own_ns / tick_ns())
        }
    }

    fn zombie(s: PidStat) -> PidStat {
        PidStat { state: b'Z', ..s }
    }

    #[test]
    fn zombie_counted_once_then_moved_to_parent_then_vanished() {
        let tk = tick_ns();
        let ms = 1_000_000;
        let mut t = ProcTree::spawned(ME, true);
        t.seed(&clocked(10, ME, 1, 0));
        // Three children of 10 that used 4 ms each (0 clock ticks in stat) are
        // zombies, not reaped: counted exactly in the read that sees them.
        let kids = |n| (0..n).map(|i| zombie(clocked(20 + i, 10, 2, 4 * ms)));
        let mut obs = vec![clocked(10, ME, 1, 2 * ms)];
        obs.extend(kids(3));
        t.apply(&obs, |_| {});
        assert_eq!(t.proc_ns(), 2 * ms + 12 * ms);
        // Seen again (read, or still listed by their parent): counted once, not again.
        t.apply(&obs, |_| {});
        let z = t.known_zombie(20, 10).unwrap();
        assert_eq!(z.cpu_ns, Some(4 * ms));
        assert_eq!(t.known_zombie(20, 11), None);
        assert_eq!(t.known_zombie(10, ME), None, "10 is alive");
        t.apply(&[obs[0], z, obs[2], obs[3]], |_| {});
        assert_eq!(t.proc_ns(), 14 * ms);
        // 10 was read just before it reaped 20 and 21: they are gone, its cutime has
        // not grown yet. Their time stays counted, pending on 10 (no dip).
        t.apply(&[obs[0], obs[3]], |_| {});
        assert_eq!(t.proc_ns(), 14 * ms);
        // 10 reaps 22 too; its cutime now holds all three, 12 ms: 1 tick in stat. The
        // pending time is paid by the growth, without counting it twice.
        let mut p = clocked(10, ME, 1, 3 * ms);
        p.cutime = 12 * ms / tk;
        t.apply(&[p], |_| {});
        assert_eq!(t.proc_ns(), 3 * ms + 12 * ms);
        // A child that used 8 ms lived and was reaped between two reads (never seen):
        // 10's cutime, 20 ms exactly, reads 2 ticks. The growth first pays the 2 ms the
        // truncation had left pending, the rest is the new child's.
        p.cutime = 20 * ms / tk;
        t.apply(&[p], |_| {});
        assert_eq!(t.proc_ns(), 3 * ms + 12 * ms + 8 * ms);
        // 10 exits and is reaped by joulerun: all of it is in RUSAGE_CHILDREN now.
        t.apply(&[], |_| {});
        assert_eq!(t.proc_ns(), 0);
        assert_eq!(t.rusage_base_ns(), 0);
        assert_eq!(t.lost_ticks(), 0);
    }

    #[test]
    fn zombie_reaped_before_its_parent_is_read_is_counted_once() {
        let ms = 1_000_000;
        // 10's parent is outside the tree (as with -p).
        let mut t = ProcTree::spawned(ME, false);
        t.seed(&clocked(10, 1, 1, 0));
        t.apply(
            &[clocked(10, 1, 1, 0), zombie(clocked(20, 10, 2, 25 * ms))],
            |_| {},
        );
        assert_eq!(t.proc_ns(), 25 * ms);
        // Reaped before this read: gone, and already in 10's cutime (2 ticks of 25 ms).
        let mut p = clocked(10, 1, 1, 0);
        p.cutime = 25 * ms / tick_ns();
        t.apply(&[p], |_| {});
        // The 5 ms the tick truncation hides stay pending: exact, and never above.
        assert_eq!(t.proc_ns(), 25 * ms);
        // The parent vanishes where nothing sees it: its time, pending part included,
        // is kept.
        t.apply(&[], |_| {});
        assert_eq!(t.proc_ns(), 25 * ms);
    }

    #[test]
    fn orphan_of_an_exited_parent_reaped_by_joulerun_is_not_pending() {
        // 20's parent 10 exits; 20 is reparented to joulerun (a subreaper), exits and is
        // reaped by it, all between two reads: its time is in RUSAGE_CHILDREN, not in
        // the zombie 10's cutime, which can no longer grow.
        let mut t = ProcTree::spawned(ME, true);
        t.seed(&st(10, ME, 1, 0));
        t.apply(&[st(10, ME, 1, 1), st(20, 10, 2, 5)], |_| {});
        assert_eq!(t.proc_ticks(), 6);
        t.apply(&[zombie(st(10, ME, 1, 1))], |_| {});
        assert_eq!(t.proc_ticks(), 1);
        // 10 had reaped 20 itself before exiting: its cutime holds it.
        let mut t = ProcTree::spawned(ME, true);
        t.seed(&st(10, ME, 1, 0));
        t.apply(&[st(10, ME, 1, 1), st(20, 10, 2, 5)], |_| {});
        t.apply(&[with_cutime(zombie(st(10, ME, 1, 1)), 6)], |_| {});
        assert_eq!(t.proc_ticks(), 7);
        // Not a subreaper: the orphan went to init, out of sight; its last-seen time is
        // kept.
        let mut t = ProcTree::spawned(ME, false);
        t.seed(&st(10, ME, 1, 0));
        t.apply(&[st(10, ME, 1, 1), st(20, 10, 2, 5)], |_| {});
        t.apply(&[zombie(st(10, ME, 1, 1))], |_| {});
        assert_eq!(t.proc_ticks(), 6);
    }

    #[test]
    fn the_cpu_clock_is_used_when_consistent_with_stat() {
        let tk = tick_ns();
        let mut t = ProcTree::spawned(ME, false);
        // Clock 15 ms, stat 1 tick: the clock.
        t.seed(&clocked(10, ME, 1, 15_000_000));
        assert_eq!(t.proc_ns(), 15_000_000);
        // A clock below the truncated stat time belongs to another process (the pid
        // changed hands between the two reads): stat's 3 ticks.
        let mut s = st(10, ME, 1, 3);
        s.cpu_ns = Some(tk);
        t.apply(&[s], |_| {});
        assert_eq!(t.proc_ns(), 3 * tk);
        // No clock: stat. Never decreasing.
        t.apply(&[st(10, ME, 1, 2)], |_| {});
        assert_eq!(t.proc_ns(), 3 * tk);
    }

    #[test]
    fn children_join_and_grandchildren_in_any_order() {
        let mut t = ProcTree::spawned(ME, false);
        t.seed(&st(10, ME, 1, 5));
        // Grandchild listed before its (new) parent; an outsider is rejected.
        let mut rej = Vec::new();
        t.apply(
            &[
                st(10, ME, 1, 6),
                st(30, 20, 3, 2),
                st(20, 10, 2, 1),
                st(40, 1, 4, 99),
            ],
            |p| rej.push(p),
        );
        assert_eq!(rej, vec![40]);
        assert_eq!(t.len(), 3);
        assert_eq!(t.proc_ticks(), 6 + 2 + 1);
    }

    #[test]
    fn reaped_child_moves_into_parent_without_double_count() {
        let mut t = ProcTree::spawned(ME, false);
        t.seed(&st(10, ME, 1, 0));
        t.apply(&[st(10, ME, 1, 4), st(20, 10, 2, 7)], |_| {});
        assert_eq!(t.proc_ticks(), 11);
        // 20 exits after using 2 more ticks and is reaped by 10: 10's cutime += 9.
        t.apply(&[with_cutime(st(10, ME, 1, 5), 9)], |_| {});
        assert_eq!(t.proc_ticks(), 14);
        assert_eq!(t.lost_ticks(), 0);
    }

    #[test]
    fn orphan_reparented_to_init_keeps_last_seen_time() {
        let mut t = ProcTree::spawned(ME, false);
        t.seed(&st(10, ME, 1, 0));
        t.apply(&[st(10, ME, 1, 1), st(20, 10, 2, 3)], |_| {});
        // 10 exits (reaped by joulerun: RUSAGE_CHILDREN), 20 reparented to init.
        t.apply(&[st(20, 1, 2, 8)], |_| {});
        assert_eq!(t.proc_ticks(), 8);
        // 20 exits, reaped by init: its last-seen 8 ticks are kept.
        t.apply(&[], |_| {});
        assert_eq!(t.lost_ticks(), 8);
        assert_eq!(t.proc_ticks(), 8);
    }

    #[test]
    fn chain_of_vanished_processes() {
        // 20 reaped by 30, which was reaped by 10, all within one tick: 10's cutime
        // holds both, nothing is lost.
        let mut t = ProcTree::spawned(ME, false);
        t.seed(&st(10, ME, 1, 0));
        t.apply(
            &[st(10, ME, 1, 0), st(30, 10, 2, 1), st(20, 30, 3, 1)],
            |_| {},
        );
        t.apply(&[with_cutime(st(10, ME, 1, 0), 5)], |_| {});
        assert_eq!(t.lost_ticks(), 0);
        assert_eq!(t.proc_ticks(), 5);
        // The same chain ending at an outsider: both last-seen times are lost-kept.
        let mut t = ProcTree::spawned(ME, false);
        t.seed(&st(30, 1, 2, 0));
        t.apply(&[st(30, 1, 2, 1), st(20, 30, 3, 4)], |_| {});
        t.apply(&[], |_| {});
        assert_eq!(t.lost_ticks(), 5);
    }

    #[test]
    fn pid_reuse_is_a_new_process() {
        let mut t = ProcTree::spawned(ME, false);
        t.seed(&st(10, ME, 1, 0));
        t.apply(&[st(10, ME, 1, 0), st(20, 10, 2, 50)], |_| {});
        assert_eq!(t.proc_ticks(), 50);
        // Pid 20 now belongs to an outsider (other parent, other start time): the old
        // 20 was reaped by 10 (cutime 60), the new one is rejected.
        let mut rej = Vec::new();
        t.apply(
            &[with_cutime(st(10, ME, 1, 0), 60), st(20, 1, 900, 5)],
            |p| rej.push(p),
        );
        assert_eq!(rej, vec![20]);
        assert!(!t.is_tracked(20));
        assert_eq!(t.proc_ticks(), 60);
        // Reused by a tree member instead: it is counted from zero, not as a delta
        // against the old process's 50.
        let mut t = ProcTree::spawned(ME, false);
        t.seed(&st(10, ME, 1, 0));
        t.apply(&[st(10, ME, 1, 0), st(20, 10, 2, 50)], |_| {});
        t.apply(
            &[with_cutime(st(10, ME, 1, 0), 55), st(20, 10, 700, 3)],
            |_| {},
        );
        assert!(t.is_tracked_as(20, 700));
        assert_eq!(t.proc_ticks(), 55 + 3);
    }

    #[test]
    fn rusage_children_and_orphans_of_a_reaper() {
        let mut t = ProcTree::spawned(ME, true);
        t.seed(&st(10, ME, 1, 0));
        t.apply(&[st(10, ME, 1, 2), st(20, 10, 2, 3)], |_| {});
        // 10 exits; 20 is reparented to joulerun (a subreaper) and stays tracked; a
        // new orphan 25 (never seen under 10) also shows up under joulerun.
        t.apply(&[st(20, ME, 2, 4), st(25, ME, 3, 1)], |_| {});
        assert_eq!(t.len(), 2);
        assert_eq!(t.proc_ticks(), 5);
        // Both reaped by joulerun: their time is RUSAGE_CHILDREN's now.
        t.apply(&[], |_| {});
        assert_eq!(t.proc_ticks(), 0);
        assert_eq!(t.lost_ticks(), 0);
        // Not a reaper: joulerun's other children are not the tree.
        let mut t = ProcTree::spawned(ME, false);
        t.seed(&st(10, ME, 1, 0));
        let mut rej = Vec::new();
        t.apply(&[st(10, ME, 1, 0), st(11, ME, 2, 9)], |p| rej.push(p));
        assert_eq!(rej, vec![11]);
    }

    #[test]
    fn attach_counts_only_time_after_attaching() {
        let mut t = ProcTree::attached(ME, 500);
        t.seed(&st(10, 1, 100, 1000));
        // First read: the existing child 20 is baseline too.
        t.apply(&[st(10, 1, 100, 1010), st(20, 10, 200, 300)], |_| {});
        assert_eq!(t.proc_ticks(), 10);
        // 20 reaped by 10 after 5 more ticks: 10's cutime += 305; only 5 are new.
        t.apply(&[with_cutime(st(10, 1, 100, 1012), 305)], |_| {});
        assert_eq!(t.proc_ticks(), 12 + 5);
        // A process that started before attaching but is found only now: baseline.
        // One started after: counted in full.
        t.apply(
            &[
                with_cutime(st(10, 1, 100, 1012), 305),
                st(30, 10, 499, 40),
                st(31, 10, 501, 7),
            ],
            |_| {},
        );
        assert_eq!(t.proc_ticks(), 17 + 7);
        // The root vanishes (reaped by its outside parent): its time is kept.
        t.apply(&[st(30, 1, 499, 41), st(31, 1, 501, 8)], |_| {});
        assert_eq!(t.proc_ticks(), 12 + 5 + 1 + 8);
    }

    #[test]
    fn pending_root() {
        let mut t = ProcTree::spawned(ME, false);
        t.expect_root(10);
        t.apply(&[st(10, ME, 1, 3), st(11, ME, 2, 3)], |_| {});
        assert!(t.is_tracked(10));
        assert!(!t.is_tracked(11));
    }

    fn discovery_finds(walk: bool) {
        use std::os::unix::process::CommandExt;
        let me = std::process::id() as i32;
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 5 & sleep 5 & sh -c 'sleep 5 & wait' & wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let mut tree = ProcTree::spawned(me, false);
        let mut disc = Discovery::with_mode(me, false, walk).unwrap();
        assert_eq!(disc.is_walk(), walk);
        match disc.read_stat(pid) {
            Some(s) => tree.seed(&s),
            None => tree.expect_root(pid),
        }
        // sh, 2 x sleep, sh, sleep.
        let t = std::time::Instant::now();
        while tree.len() < 5 && t.elapsed().as_secs() < 10 {
            disc.tick(&mut tree);
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let n = tree.len();
        // SAFETY: kill has no memory-safety preconditions; the group is our child's.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = child.wait();
        assert_eq!(n, 5, "walk={walk}");
        // Everything vanished: nothing tracked, no panic.
        // (The orphaned sleeps are reaped by init, which may take a moment.)
        let t = std::time::Instant::now();
        while tree.len() > 0 && t.elapsed().as_secs() < 10 {
            disc.tick(&mut tree);
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(tree.len(), 0);
    }

    #[test]
    fn discovery_scan_finds_descendants() {
        discovery_finds(false);
    }

    #[test]
    fn discovery_walk_finds_descendants() {
        if !children_files_available() {
            eprintln!("skipped: this kernel has no /proc/<pid>/task/<tid>/children");
            return;
        }
        discovery_finds(true);
    }

    /// Cost of one read in each mode: a measurement that checks nothing, so it never
    /// runs in the suite (timings belong to scripts/bench and docs/performance.md).
    #[test]
    #[ignore = "a timing measurement, not a check: cargo test --release --lib discovery_cost -- --ignored --nocapture"]
    fn discovery_cost() {
        let me = std::process::id() as i32;
        for walk in [false, true] {
            if walk && !children_files_available() {
                continue;
            }
            let mut tree = ProcTree::spawned(me, false);
            let mut disc = Discovery::with_mode(me, false, walk).unwrap();
            let s = disc.read_stat(1).unwrap();
            tree.seed(&s);
            for _ in 0..25 {
                disc.tick(&mut tree);
            }
            let n = 500;
            let t = std::time::Instant::now();
            for _ in 0..n {
                disc.tick(&mut tree);
            }
            let us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
            eprintln!(
                "walk={walk}: tree of {} processes (all of pid 1's), {us:.0} us/read",
                tree.len()
            );
        }
    }
}
