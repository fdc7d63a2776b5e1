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
//! read before their children (see [`Discovery::pass`]), so a child counted in a read
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
    /// Its CPU clock (ns) at the last read of its `stat`, when it could be read: while
    /// the clock stays there, the process has not run, so nothing in its `stat` or its
    /// `children` can have changed (see [`ProcTree::sort_out`]).
    clock: Option<u64>,
    /// Its depth below the tree's top when it was last read (0: its parent is not
    /// tracked): a read in depth order reads parents before their children.
    depth: u32,
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
    /// The live tracked processes that vanished processes went into in the last
    /// [`ProcTree::apply_observed`] (their time pending there).
    vanished_into: Vec<i32>,
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
            vanished_into: Vec::new(),
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

    /// The depth of a process whose parent is `ppid`.
    fn depth_under(&self, ppid: i32) -> u32 {
        self.tracked
            .get(&ppid)
            .map_or(0, |p| p.depth.saturating_add(1))
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
            clock: s.cpu_ns,
            depth: self.depth_under(s.ppid),
        }
    }

    /// Make `s` part of the tree regardless of its parent (the root). Its children have
    /// not been listed: the next read reads it whatever its clock says (a root that
    /// forked and went to sleep before this read would otherwise never be listed).
    pub fn seed(&mut self, s: &PidStat) {
        let t = Tracked {
            clock: None,
            ..self.new_tracked(s, self.generation)
        };
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

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.tracked.len()
    }

    /// Feed one read: `obs` holds the `stat` of every tracked process still present,
    /// and of any other process that might have joined, each parent before its
    /// children. Processes tracked but absent have vanished. Calls `rejected(pid)` for
    /// each observed process that is not in the tree.
    #[cfg(test)]
    pub fn apply(&mut self, obs: &[PidStat], rejected: impl FnMut(i32)) {
        self.begin();
        self.apply_observed(obs, rejected);
    }

    /// Start a read: from here on, [`ProcTree::sort_out`] and
    /// [`ProcTree::apply_observed`] belong to it.
    pub fn begin(&mut self) {
        self.generation += 1;
    }

    /// The first step of a read: the CPU clock of every tracked process, from `clock`
    /// (one `clock_gettime`, no file). A process whose clock has not moved since its
    /// `stat` was last read has not run since: it forked nothing, reaped nothing, did
    /// not exit, and its `stat` would say what it said, so it counts as seen in this
    /// read as it was. Its parent can still have changed without it running (reparented
    /// when the parent exited), so a process whose parent is not a live tracked process
    /// (nor joulerun) is read anyway. Every other process (its clock moved, or it is
    /// gone) is pushed onto `reread`, parents before their children (by depth): read
    /// their `stat` in that order and pass them to [`ProcTree::apply_observed`].
    /// `unchanged` is scratch space.
    #[cfg(test)]
    pub fn sort_out(
        &mut self,
        clock: impl FnMut(i32) -> Option<u64>,
        reread: &mut Vec<i32>,
        unchanged: &mut Vec<i32>,
    ) {
        self.sort_out_among(clock, None, reread, unchanged);
    }

    /// [`ProcTree::sort_out`] of a settling pass (see [`Discovery::read`]): only the
    /// processes in `among` (sorted) are checked; the others count as seen as they were
    /// in the pass before, which read them or found them unchanged.
    pub fn sort_out_among(
        &mut self,
        mut clock: impl FnMut(i32) -> Option<u64>,
        among: Option<&[i32]>,
        reread: &mut Vec<i32>,
        unchanged: &mut Vec<i32>,
    ) {
        reread.clear();
        unchanged.clear();
        for (&pid, t) in &self.tracked {
            if among.is_some_and(|a| a.binary_search(&pid).is_err()) {
                unchanged.push(pid);
                continue;
            }
            let still = t.clock.is_some() && clock(pid) == t.clock;
            let parent_ok =
                t.ppid == self.self_pid || self.tracked.get(&t.ppid).is_some_and(|p| !p.zombie);
            if still && parent_ok {
                unchanged.push(pid);
            } else {
                reread.push(pid);
            }
        }
        let cur = self.generation;
        for pid in unchanged.iter() {
            if let Some(t) = self.tracked.get_mut(pid) {
                t.seen = cur;
            }
        }
        reread.sort_unstable_by_key(|p| self.tracked.get(p).map_or(0, |t| t.depth));
    }

    /// Read `pid` in the next read whatever its clock says (its children have not all
    /// been listed: see [`Discovery::pass`]).
    pub fn forget_clock(&mut self, pid: i32) {
        if let Some(t) = self.tracked.get_mut(&pid) {
            t.clock = None;
        }
    }

    /// The live tracked processes that processes vanished in the last read went into.
    pub fn vanished_into(&self) -> &[i32] {
        &self.vanished_into
    }

    /// The parent of `pid` when both are tracked.
    pub fn parent_of(&self, pid: i32) -> Option<i32> {
        self.tracked
            .get(&pid)
            .map(|t| t.ppid)
            .filter(|p| self.tracked.contains_key(p))
    }

    /// The tracked processes whose parent is one of `parents` (sorted), onto `out`.
    pub fn children_of(&self, parents: &[i32], out: &mut Vec<i32>) {
        out.extend(
            self.tracked
                .iter()
                .filter(|(_, t)| parents.binary_search(&t.ppid).is_ok())
                .map(|(p, _)| *p),
        );
    }

    /// `pid`, counted as seen in the read under way by its clock, is gone after all: it
    /// vanishes in this read.
    pub fn unsee(&mut self, pid: i32) {
        let cur = self.generation;
        if let Some(t) = self.tracked.get_mut(&pid)
            && t.seen == cur
        {
            t.seen = cur.wrapping_sub(1);
        }
    }

    /// Was `pid` seen in the read under way (unchanged, or already observed)?
    pub fn seen_now(&self, pid: i32) -> bool {
        self.tracked
            .get(&pid)
            .is_some_and(|t| t.seen == self.generation)
    }

    /// Is `pid` tracked, and was it a zombie when last read?
    pub fn was_zombie(&self, pid: i32) -> bool {
        self.tracked.get(&pid).is_some_and(|t| t.zombie)
    }

    /// The tracked processes seen unchanged in this read whose parent is one of `dead`
    /// (sorted): the processes that exited or vanished in this read. Their parent
    /// changed when it exited (they were reparented), without them running: read them
    /// in this read too, so that their time goes where they now belong.
    pub fn unchanged_children_of(&self, dead: &[i32], out: &mut Vec<i32>) {
        out.clear();
        if dead.is_empty() {
            return;
        }
        let cur = self.generation;
        out.extend(
            self.tracked
                .iter()
                .filter(|(_, t)| t.seen == cur && dead.binary_search(&t.ppid).is_ok())
                .map(|(p, _)| *p),
        );
    }

    /// The rest of a read begun with [`ProcTree::begin`]: as [`ProcTree::apply`], except
    /// that processes already seen in this read ([`ProcTree::sort_out`]) need not be in
    /// `obs`.
    pub fn apply_observed(&mut self, obs: &[PidStat], mut rejected: impl FnMut(i32)) {
        let cur = self.generation;
        self.candidates.clear();
        self.vanished.clear();
        self.vanished_into.clear();
        for s in obs {
            let (total, cut) = (self.total_ns(s), self.cut_ns(s));
            let depth = self.depth_under(s.ppid);
            match self.tracked.get_mut(&s.pid) {
                Some(t) if t.start == s.starttime => {
                    t.last = total.max(t.last);
                    t.cut_grew = cut.saturating_sub(t.cut);
                    t.cut = cut.max(t.cut);
                    if t.ppid != s.ppid {
                        t.depth = depth;
                    }
                    t.ppid = s.ppid;
                    t.seen = cur;
                    t.zombie = is_exited(s);
                    t.clock = s.cpu_ns;
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
                    self.vanished_into.push(p);
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

/// What the `/proc` method read, since it began: for the tests and benchmarks of its
/// cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadCounts {
    /// Reads of a process's CPU clock (`clock_gettime`: a system call, no file).
    pub clocks: u64,
    /// Files read: `stat`, `children`, and listings of `/proc` and `task` directories.
    pub files: u64,
    /// The bytes those reads returned.
    pub bytes: u64,
}

/// How new members of the tree are found.
enum Mode {
    /// `/proc/<pid>/task/<tid>/children` (CONFIG_PROC_CHILDREN): listed for the
    /// processes that ran since the last read. `forking`: the processes that had new
    /// children in this read.
    Walk {
        seen: HashSet<i32>,
        queue: Vec<i32>,
        forking: Vec<i32>,
    },
    /// List `/proc` (when a tracked process ran since the last read) and read the `stat`
    /// of processes not known yet (and of the known outsiders, a slice of them per read
    /// over `RECHECK_EVERY` reads, to notice a pid that died and was reused by the tree
    /// between two reads).
    Scan {
        outsiders: HashMap<i32, u64>,
        pids: Vec<i32>,
    },
}

const RECHECK_EVERY: u64 = 50;

/// At most this many settling passes per read ([`Discovery::read`]).
const SETTLE_PASSES: u32 = 3;

/// A pass this long or longer that read something is followed by a settling pass: what
/// the tree did meanwhile is then counted in this read (a millisecond of a few CPUs is
/// well under the 10 ms clock tick of the machine's busy time).
const SETTLE_AFTER: std::time::Duration = std::time::Duration::from_millis(1);

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
    reread: Vec<i32>,
    scratch: Vec<i32>,
    dead: Vec<i32>,
    /// Multi-threaded processes read in this read whose other threads' `children` were
    /// not listed: they are read again next time whatever their clock.
    unlisted: Vec<i32>,
    /// The processes whose `stat` some pass of the last read read (sorted, once each).
    observed_pids: Vec<i32>,
    /// The processes a settling pass checks, and the processes the pass before read.
    among: Vec<i32>,
    parents: Vec<i32>,
    counts: ReadCounts,
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
            reread: Vec::new(),
            scratch: Vec::new(),
            dead: Vec::new(),
            unlisted: Vec::new(),
            observed_pids: Vec::new(),
            among: Vec::new(),
            parents: Vec::new(),
            counts: ReadCounts::default(),
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

    /// What every read so far has read.
    pub fn counts(&self) -> ReadCounts {
        self.counts
    }

    /// The processes whose `stat` the last read read, in any of its passes (those that
    /// ran since the read before, and new ones), sorted; the others have not run since.
    pub fn observed_pids(&self) -> &[i32] {
        &self.observed_pids
    }

    /// One read of the tree: a pass over every tracked process ([`Discovery::pass`]),
    /// then, while the last pass saw the tree change under it, up to `SETTLE_PASSES`
    /// settling passes over the processes it read, their tracked children and parents.
    ///
    /// A pass reads a parent's `stat` before its children, and the machine's busy time
    /// is read after the whole read, so what the tree does while a pass runs is in the
    /// busy time of this probe window but not in the tree's: a child listed by its
    /// parent and reaped before its own `stat` could be read goes into the parent's
    /// `cutime`, already read, and a process read early in a long pass (a shell forking
    /// thousands of children) keeps running. Left there, that time is found by the next
    /// read, in the next window, where it can exceed that window's busy time (the last
    /// window of a run, after the command exited, is often a few ms long) and be given
    /// no energy. A settling pass reads those processes again: their time is then in
    /// this window. It runs when the pass before found a listed child gone, or took
    /// `SETTLE_AFTER` or longer with something to read, or when a tracked process
    /// vanished in it (its time is pending on the parent that reaped it, whose clock may
    /// have been checked before it did: that parent is checked again, and its `cutime`
    /// growth, children the pass could not read included, counts now); it checks only the processes
    /// that pass read, their tracked children (a reaped child must be found gone, so
    /// that its parent's `cutime` growth pays for it rather than count it twice) and
    /// their tracked parents (one that reaped a process of the pass has its time in its
    /// `cutime`), so a tree of sleepers never has one and a big tree with a few busy
    /// processes has a cheap one.
    pub fn read(&mut self, tree: &mut ProcTree) {
        self.observed_pids.clear();
        let mut among = std::mem::take(&mut self.among);
        let mut settling = false;
        for _ in 0..=SETTLE_PASSES {
            let t0 = std::time::Instant::now();
            let gone = self.pass(tree, settling.then_some(among.as_slice()));
            let slow = t0.elapsed() >= SETTLE_AFTER;
            self.observed_pids.extend(self.obs.iter().map(|s| s.pid));
            let into = tree.vanished_into();
            if (self.obs.is_empty() || !(gone > 0 || slow)) && into.is_empty() {
                break;
            }
            self.parents.clear();
            self.parents.extend(self.obs.iter().map(|s| s.pid));
            self.parents.sort_unstable();
            among.clear();
            among.extend_from_slice(&self.parents);
            tree.children_of(&self.parents, &mut among);
            among.extend(self.parents.iter().filter_map(|&p| tree.parent_of(p)));
            among.extend_from_slice(tree.vanished_into());
            among.sort_unstable();
            among.dedup();
            settling = true;
        }
        self.among = among;
        self.observed_pids.sort_unstable();
        self.observed_pids.dedup();
    }

    /// One full pass ([`Discovery::pass`]) with no settling pass.
    #[cfg(test)]
    pub fn tick(&mut self, tree: &mut ProcTree) {
        self.pass(tree, None);
    }

    /// One pass of a read: find what changed, refresh it, find new members, and
    /// settle the vanished ones.
    ///
    /// First the CPU clock of every tracked process ([`ProcTree::sort_out_among`]): one
    /// system call each, no file. Only the processes whose clock moved (they ran, so
    /// they may have forked, reaped or exited), are gone, or whose parent is gone have
    /// their `stat` read and, with `children` files, their `children` listed; a
    /// sleeping process costs one clock read. When nothing ran, joulerun's own children
    /// (orphans) are not listed either: a process becomes an orphan only when a tracked
    /// process exits, which runs it.
    ///
    /// Walk mode reads parents before their children: the processes to read in depth
    /// order, each one's new children after it. A parent's `cutime` is then read before
    /// it could take in a child read later in the same pass (see the module's notes);
    /// a parent that did not run reaped nothing. Last, the processes that had new
    /// children are listed again, for up to `CATCH_UP_ROUNDS` rounds while that finds
    /// more: children forked while the read ran (a read of hundreds of new processes
    /// can take tens of ms) are then counted in this tick, whose busy time (read after
    /// the tree) holds their CPU time, not in the next. Scan mode reads `/proc` in pid
    /// order, which is parent first unless pids wrapped around.
    ///
    /// A settling pass (see [`Discovery::read`]) checks only the processes in `among`
    /// (sorted). Returns how many children the pass listed that were gone before their
    /// `stat` could be read.
    fn pass(&mut self, tree: &mut ProcTree, among: Option<&[i32]>) -> u32 {
        let mut gone = 0;
        self.reads += 1;
        self.obs.clear();
        let dir = self.proc_fd.as_raw_fd();
        tree.begin();
        let counts = &mut self.counts;
        tree.sort_out_among(
            |pid| {
                counts.clocks += 1;
                sys::process_cpu_ns(pid)
            },
            among,
            &mut self.reread,
            &mut self.scratch,
        );
        let active = !self.reread.is_empty() || tree.pending_root.is_some();
        match &mut self.mode {
            Mode::Walk {
                seen,
                queue,
                forking,
            } => {
                seen.clear();
                queue.clear();
                forking.clear();
                self.unlisted.clear();
                queue.extend_from_slice(&self.reread);
                if let Some(root) = tree.pending_root {
                    queue.push(root);
                }
                let all_threads = self.reads.is_multiple_of(ALL_THREADS_EVERY);
                if self.include_self_children && active {
                    if all_threads {
                        children_of(
                            dir,
                            self.self_pid,
                            &mut self.dent_buf,
                            &mut self.text_buf,
                            &mut self.tid_buf,
                            queue,
                            &mut self.counts,
                        );
                    } else {
                        main_thread_children(
                            dir,
                            self.self_pid,
                            &mut self.text_buf,
                            queue,
                            &mut self.counts,
                        );
                    }
                }
                let mut i = 0;
                // 0: the processes that ran and their new descendants; 1..: catching up.
                let mut round = 0;
                let mut round_start = 0;
                loop {
                    if i == queue.len() {
                        let found_more = round == 0 || self.obs.len() > round_start;
                        if forking.is_empty() || !found_more || round >= CATCH_UP_ROUNDS {
                            break;
                        }
                        // Children forked while this read ran.
                        round += 1;
                        round_start = self.obs.len();
                        for &p in forking.iter() {
                            main_thread_children(
                                dir,
                                p,
                                &mut self.text_buf,
                                queue,
                                &mut self.counts,
                            );
                        }
                        continue;
                    }
                    let pid = queue[i];
                    i += 1;
                    // Unchanged processes were seen by their clock already.
                    if pid == self.self_pid || tree.seen_now(pid) || !seen.insert(pid) {
                        continue;
                    }
                    let Some(s) = read_counted(dir, pid, &mut self.counts) else {
                        // Listed, and gone before it could be read: reaped meanwhile.
                        if !tree.is_tracked(pid) {
                            gone += 1;
                        }
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
                        main_thread_children(dir, pid, &mut self.text_buf, queue, &mut self.counts);
                        // Its other threads may have forked: until they are listed (at
                        // most `ALL_THREADS_EVERY` reads), it is read whatever its clock.
                        if s.num_threads > 1 {
                            self.unlisted.push(pid);
                        }
                    } else {
                        children_of(
                            dir,
                            pid,
                            &mut self.dent_buf,
                            &mut self.text_buf,
                            &mut self.tid_buf,
                            queue,
                            &mut self.counts,
                        );
                    }
                    if queue[listed..].iter().any(|&c| !tree.is_tracked(c)) {
                        forking.push(pid);
                    }
                }
                self.settle_reparented(tree, dir);
                tree.apply_observed(&self.obs, |_| {});
                for &p in &self.unlisted {
                    tree.forget_clock(p);
                }
            }
            Mode::Scan { outsiders, pids } => {
                let reads = self.reads;
                if active {
                    let slice = reads % RECHECK_EVERY;
                    pids.clear();
                    let listed = sys::for_each_dirent(dir, &mut self.dent_buf, |name| {
                        self.counts.bytes += name.len() as u64;
                        if let Some(p) = sys::parse_pid(name) {
                            pids.push(p);
                        }
                    });
                    self.counts.files += 1;
                    if listed.is_err() {
                        // /proc unreadable this time: skip the read rather than declare
                        // every process vanished.
                        return 0;
                    }
                    for &pid in pids.iter() {
                        if pid == self.self_pid || tree.seen_now(pid) {
                            continue;
                        }
                        if pid as u64 % RECHECK_EVERY != slice
                            && !tree.is_tracked(pid)
                            && let Some(r) = outsiders.get_mut(&pid)
                        {
                            *r = reads;
                            continue;
                        }
                        if let Some(s) = read_counted(dir, pid, &mut self.counts) {
                            self.obs.push(s);
                        }
                    }
                }
                // (Without a listing, every process to read is tracked: nothing new
                // can have appeared, and `reread` is empty.)
                let Discovery {
                    obs,
                    reread,
                    scratch,
                    dead,
                    counts,
                    ..
                } = self;
                settle_reparented(tree, dir, obs, reread, scratch, dead, counts);
                tree.apply_observed(&self.obs, |p| {
                    outsiders.insert(p, reads);
                });
                if active {
                    outsiders.retain(|_, r| *r == reads);
                }
            }
        }
        gone
    }

    fn settle_reparented(&mut self, tree: &mut ProcTree, dir: i32) {
        let Discovery {
            obs,
            reread,
            scratch,
            dead,
            counts,
            ..
        } = self;
        settle_reparented(tree, dir, obs, reread, scratch, dead, counts);
    }
}

/// Check again the processes found unchanged by their clock whose parent's `stat` was
/// read in this pass: the parent may have reaped one between its clock check and the
/// parent's read, and its time is then in the `cutime` just read: found gone now, it
/// vanishes in this read (pending on the parent, whose `cutime` growth pays for it)
/// instead of being counted twice. Then read the unchanged children of the processes
/// that exited or vanished in this read (they were reparented; see
/// [`ProcTree::unchanged_children_of`]) into `obs`.
fn settle_reparented(
    tree: &mut ProcTree,
    dir: i32,
    obs: &mut Vec<PidStat>,
    reread: &[i32],
    scratch: &mut Vec<i32>,
    dead: &mut Vec<i32>,
    counts: &mut ReadCounts,
) {
    if reread.is_empty() {
        return;
    }
    scratch.clear();
    scratch.extend(obs.iter().map(|s| s.pid));
    scratch.sort_unstable();
    tree.unchanged_children_of(scratch, dead);
    for &pid in dead.iter() {
        counts.clocks += 1;
        if sys::process_cpu_ns(pid).is_none() {
            tree.unsee(pid);
        }
    }
    dead.clear();
    dead.extend(
        obs.iter()
            .filter(|s| is_exited(s) && tree.is_tracked(s.pid) && !tree.was_zombie(s.pid))
            .map(|s| s.pid),
    );
    scratch.clear();
    scratch.extend(obs.iter().map(|s| s.pid));
    scratch.sort_unstable();
    dead.extend(
        reread
            .iter()
            .filter(|p| scratch.binary_search(p).is_err())
            .copied(),
    );
    dead.sort_unstable();
    tree.unchanged_children_of(dead, scratch);
    for &pid in scratch.iter() {
        if let Some(s) = read_counted(dir, pid, counts) {
            obs.push(s);
        }
    }
}

/// Push the children of the main thread of `pid` onto `out`.
fn main_thread_children(
    dir: i32,
    pid: i32,
    text_buf: &mut Vec<u8>,
    out: &mut Vec<i32>,
    counts: &mut ReadCounts,
) {
    let mut p = StackPath::new();
    p.num(pid as u64)
        .push(b"/task/")
        .num(pid as u64)
        .push(b"/children");
    counts.files += 1;
    if sys::read_at_vec(dir, p.as_cstr(), text_buf).is_ok() {
        counts.bytes += text_buf.len() as u64;
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
    counts: &mut ReadCounts,
) {
    list_tids(dir, pid, dent_buf, tids);
    counts.files += 1;
    for &tid in tids.iter() {
        let mut p = StackPath::new();
        p.num(pid as u64)
            .push(b"/task/")
            .num(tid as u64)
            .push(b"/children");
        counts.files += 1;
        if sys::read_at_vec(dir, p.as_cstr(), text_buf).is_ok() {
            counts.bytes += text_buf.len() as u64;
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
    read_counted(dir, pid, &mut ReadCounts::default())
}

/// [`read_process_at`], counted.
fn read_counted(dir: i32, pid: i32, counts: &mut ReadCounts) -> Option<PidStat> {
    let mut s = read_stat_counted(dir, pid, None, counts)?;
    s.cpu_ns = sys::process_cpu_ns(pid);
    counts.clocks += 1;
    Some(s)
}

/// Read and parse `/proc/<pid>/stat`, or `/proc/<pid>/task/<tid>/stat` with `tid`.
pub fn read_stat_at(dir: i32, pid: i32, tid: Option<i32>) -> Option<PidStat> {
    read_stat_counted(dir, pid, tid, &mut ReadCounts::default())
}

/// [`read_stat_at`], counted.
pub fn read_stat_counted(
    dir: i32,
    pid: i32,
    tid: Option<i32>,
    counts: &mut ReadCounts,
) -> Option<PidStat> {
    let mut p = StackPath::new();
    p.num(pid as u64);
    if let Some(t) = tid {
        p.push(b"/task/").num(t as u64);
    }
    p.push(b"/stat");
    let mut buf = [0u8; 2048];
    counts.files += 1;
    let n = sys::read_at(dir, p.as_cstr(), &mut buf).ok()?;
    counts.bytes += n as u64;
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
        // Seen again: counted once, not again.
        t.apply(&obs, |_| {});
        t.apply(&obs, |_| {});
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
    fn processes_whose_clock_did_not_move_are_seen_without_a_read() {
        let ms = 1_000_000;
        let mut t = ProcTree::spawned(ME, true);
        t.seed(&clocked(10, ME, 1, 5 * ms));
        t.apply(
            &[
                clocked(10, ME, 1, 5 * ms),
                clocked(20, 10, 2, 3 * ms),
                clocked(30, 20, 3, ms),
                clocked(40, 10, 4, ms),
            ],
            |_| {},
        );
        let (mut re, mut scratch) = (Vec::new(), Vec::new());
        // A seeded root is read in the first read whatever its clock: its children
        // were never listed (it may have forked them and gone to sleep before).
        let mut fresh = ProcTree::spawned(ME, true);
        fresh.seed(&clocked(10, ME, 1, 5 * ms));
        fresh.begin();
        fresh.sort_out(|_| Some(5 * ms), &mut re, &mut scratch);
        assert_eq!(re, vec![10]);
        let clocks = |c20: Option<u64>, c30: u64, c40: u64| {
            move |p: i32| match p {
                10 => Some(5 * ms),
                20 => c20,
                30 => Some(c30),
                40 => Some(c40),
                _ => None,
            }
        };
        // Only 20 and 40 ran: only they are to be read, parents first (by depth).
        t.begin();
        t.sort_out(clocks(Some(4 * ms), ms, 2 * ms), &mut re, &mut scratch);
        re.sort_unstable();
        assert_eq!(re, vec![20, 40]);
        assert!(t.seen_now(10) && t.seen_now(30) && !t.seen_now(20));
        t.apply_observed(
            &[clocked(20, 10, 2, 4 * ms), clocked(40, 10, 4, 2 * ms)],
            |_| {},
        );
        assert_eq!(t.proc_ns(), (5 + 4 + 1 + 2) * ms);
        // 30 and 20 both ran: 20 (depth 1) before 30 (depth 2).
        t.begin();
        t.sort_out(clocks(Some(5 * ms), 2 * ms, 2 * ms), &mut re, &mut scratch);
        assert_eq!(re, vec![20, 30]);
        // 20 exits: a zombie now. Its child 30 was reparented without running: the
        // read after that reads it anyway (its parent is no longer a live process).
        t.apply_observed(
            &[
                zombie(clocked(20, 10, 2, 5 * ms)),
                clocked(30, 20, 3, 2 * ms),
            ],
            |_| {},
        );
        assert!(t.was_zombie(20));
        t.begin();
        t.sort_out(clocks(Some(5 * ms), 2 * ms, 2 * ms), &mut re, &mut scratch);
        assert_eq!(re, vec![30]);
        // In the read where the parent exits, its unchanged children are found.
        let mut kids = Vec::new();
        t.unchanged_children_of(&[20], &mut kids);
        assert_eq!(kids, Vec::<i32>::new(), "30 is to be read, not unchanged");
        t.apply_observed(&[clocked(30, ME, 3, 2 * ms)], |_| {});
        // 20 is reaped (its clock cannot be read): it is to be read, and vanishes.
        t.begin();
        t.sort_out(clocks(None, 2 * ms, 2 * ms), &mut re, &mut scratch);
        assert_eq!(re, vec![20]);
        t.unchanged_children_of(&[20], &mut kids);
        assert!(kids.is_empty());
        t.unchanged_children_of(&[10], &mut kids);
        assert_eq!(kids, vec![40]);
        t.apply_observed(&[], |_| {});
        assert!(!t.is_tracked(20) && t.is_tracked(30) && t.is_tracked(40));
        // Its time moved into 10's cutime, which 10 (not run since) has not read yet:
        // it stays counted, pending on 10.
        assert_eq!(t.proc_ns(), (5 + 5 + 2 + 2) * ms);
    }

    /// A settling pass checks only the processes the pass before read and their tracked
    /// children: a parent that reaped a child listed in that pass before the child could
    /// be read is read again, and the child's time, in its `cutime`, counts in this read
    /// (not the next, a probe window late); a zombie it reaped meanwhile is found gone,
    /// so that its time is not counted twice.
    #[test]
    fn a_settling_pass_counts_children_reaped_while_the_read_ran() {
        let ms = 1_000_000;
        let tk = tick_ns();
        let mut t = ProcTree::spawned(ME, true);
        let (mut re, mut scratch) = (Vec::new(), Vec::new());
        t.apply(
            &[
                clocked(10, ME, 1, 5 * ms),
                zombie(clocked(20, 10, 2, tk)),
                clocked(40, ME, 4, ms),
            ],
            |_| {},
        );
        assert_eq!(t.proc_ns(), 6 * ms + tk);
        // The pass: 10 ran (it forked 30, which ran 2 ticks and exited, and was reaped
        // with 20 before 30's stat could be read: it is not in the observations).
        t.begin();
        let clock = |z: Option<u64>| {
            move |p: i32| match p {
                10 => Some(7 * ms),
                20 => z,
                _ => Some(ms),
            }
        };
        t.sort_out(clock(Some(tk)), &mut re, &mut scratch);
        assert_eq!(re, vec![10]);
        t.apply_observed(&[clocked(10, ME, 1, 6 * ms)], |_| {});
        assert_eq!(t.proc_ns(), 7 * ms + tk);
        // The settling pass: 10 and its tracked child 20; 40 is not checked.
        let mut among = vec![10];
        t.children_of(&[10], &mut among);
        among.sort_unstable();
        assert_eq!(among, vec![10, 20]);
        t.begin();
        let mut checked = Vec::new();
        t.sort_out_among(
            |p| {
                checked.push(p);
                clock(None)(p)
            },
            Some(&among),
            &mut re,
            &mut scratch,
        );
        checked.sort_unstable();
        assert_eq!(checked, vec![10, 20]);
        re.sort_unstable();
        assert_eq!(re, vec![10, 20]);
        assert!(t.seen_now(40));
        t.apply_observed(&[with_cutime(clocked(10, ME, 1, 7 * ms), 3)], |_| {});
        assert!(!t.is_tracked(20) && t.is_tracked(40));
        // 20's tick moved into 10's cutime; 30's two ticks count now, once.
        assert_eq!(t.proc_ns(), 8 * ms + 3 * tk);
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
