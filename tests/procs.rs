//! Process-tree CPU accounting on real processes. The tests share joulerun's
//! `RUSAGE_CHILDREN` (the `/proc` method adds it), so they run one at a time.
//!
//! The reference for every check is the kernel's own account of the same processes:
//! `wait4`'s rusage of the root (which includes every descendant it waited for), or the
//! `times` a daemon prints for itself. CPU amounts are set by loop counts, not wall
//! time, so a loaded machine changes how long the tests take, not what they measure.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use joulerun::procs::{TrackMethod, TrackRequest, TreeCpu, TreeSetup, TreeTracker};
use joulerun::sysroot::SysRoot;
use joulerun::topology::Topology;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn topo() -> Topology {
    Topology::read(&SysRoot::default())
}

/// A shell loop of about `n / 1e6` CPU seconds on a current x86 core.
fn busy(n: u32) -> String {
    format!("i=0; while [ $i -lt {n} ]; do i=$((i+1)); done")
}

/// Reap `pid`; its user + system time including all descendants it waited for.
fn wait4_cpu(pid: i32) -> f64 {
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 writes into `status` and `ru`.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to locals.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    s(ru.ru_utime) + s(ru.ru_stime)
}

/// 5% plus 3 clock ticks per process summed from `/proc` (values there are truncated
/// to ticks; the kernel's scaling of utime/stime adds up to a tick more).
fn close(got: f64, want: f64, procs: usize) -> bool {
    let eps = 0.05 * want + 0.03 * procs as f64;
    (got - want).abs() <= eps
}

/// Start `sh -c script` in the setup's tracking and return its PID: the tests reap it
/// themselves with wait4, to read its CPU time.
fn spawn(setup: &TreeSetup, script: &str) -> i32 {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script]);
    let hook = setup.child_hook();
    // SAFETY: the hook only performs async-signal-safe calls (open/write/close and an
    // atomic store) on memory prepared before the fork.
    unsafe { cmd.pre_exec(hook) };
    cmd.spawn().expect("spawn sh").id() as i32
}

/// The tests that call it are ignored where cgroup v2 is not writable (build.rs,
/// `probe_cgroup2`), so here it must work.
fn cgroup_setup() -> TreeSetup {
    let s = TreeSetup::prepare(TrackRequest::Cgroup).unwrap_or_else(|e| {
        panic!("cgroup tracking unavailable (build.rs probes it as probe_cgroup2): {e}")
    });
    assert_eq!(s.method(), TrackMethod::Cgroup);
    s
}

fn sample(t: &mut TreeTracker) -> TreeCpu {
    let mut c = TreeCpu::default();
    t.sample(&mut c);
    assert!(
        (c.per_socket_s.iter().sum::<f64>() - c.total_s).abs() < 1e-6,
        "per-socket sums to the total: {c:?}"
    );
    c
}

/// Sample every `every` until `done()` (or a minute passes), checking monotonicity.
fn sample_until(t: &mut TreeTracker, every: Duration, mut done: impl FnMut() -> bool) -> TreeCpu {
    let start = Instant::now();
    let mut last = sample(t);
    while !done() && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(every);
        let c = sample(t);
        assert!(c.total_s >= last.total_s, "monotonic: {c:?} after {last:?}");
        for (a, b) in c.per_socket_s.iter().zip(&last.per_socket_s) {
            assert!(a >= b, "per-socket monotonic");
        }
        last = c;
    }
    last
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// `times` of dash/bash: first line is the shell's own "XmY.YYYs XmY.YYYs".
fn parse_times(text: &str) -> f64 {
    let line = text.lines().next().unwrap_or("");
    line.split_whitespace()
        .map(|f| {
            let f = f.trim_end_matches('s');
            let (m, s) = f.split_once('m').unwrap_or(("0", f));
            m.parse::<f64>().unwrap_or(0.0) * 60.0 + s.parse::<f64>().unwrap_or(0.0)
        })
        .sum()
}

fn own_cgroup_of(pid: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
}

fn wait_for_file(p: &Path) {
    let t = Instant::now();
    while !p.exists() && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
#[cfg_attr(
    not(probe_cgroup2),
    ignore = "needs a writable cgroup v2 (probe_cgroup2): mount cgroup2 and run as root or in a delegated cgroup, as CI does"
)]
fn cgroup_counts_a_busy_loop_exactly() {
    let _g = serial();
    let setup = cgroup_setup();
    let dir = setup.cgroup_dir().unwrap().to_path_buf();
    assert!(dir.is_dir());
    let pid = spawn(&setup, &busy(300_000));
    let mut tr = setup.into_tracker(pid, false, &topo());
    assert_eq!(tr.method(), TrackMethod::Cgroup);
    assert!(tr.fallback_reason().is_none());
    let mid = sample_until(&mut tr, Duration::from_millis(20), || !tr_alive(pid));
    let want = wait4_cpu(pid);
    let got = sample(&mut tr);
    eprintln!(
        "cgroup busy loop: tracker {:.4} s, wait4 {:.4} s",
        got.total_s, want
    );
    assert!(want > 0.05, "the loop burned CPU: {want}");
    assert!(mid.total_s <= got.total_s);
    // Both come from the same scheduler runtime: within 5% + a few ms.
    assert!(
        (got.total_s - want).abs() <= 0.05 * want + 0.005,
        "{got:?} vs {want}"
    );
    tr.finish_checked().unwrap();
    assert!(!dir.exists(), "cgroup removed");
}

fn tr_alive(pid: i32) -> bool {
    !matches!(
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s
                .rsplit_once(')')
                .map(|(_, r)| r.trim_start().chars().next()))
            .flatten(),
        None | Some('Z') | Some('X')
    )
}

#[test]
#[cfg_attr(
    not(probe_cgroup2),
    ignore = "needs a writable cgroup v2 (probe_cgroup2): mount cgroup2 and run as root or in a delegated cgroup, as CI does"
)]
fn cgroup_counts_a_daemon_that_outlives_its_parent() {
    let _g = serial();
    let setup = cgroup_setup();
    let dir = setup.cgroup_dir().unwrap().to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("d");
    let script = tmp.path().join("daemon.sh");
    std::fs::write(
        &script,
        format!(
            "sleep 0.2\n{}\ntimes > \"$1.times\"\necho $$ > \"$1.pid\"\nexec sleep 30\n",
            busy(300_000)
        ),
    )
    .unwrap();
    // Double fork + setsid: the command exits at once, the daemon works afterwards.
    let pid = spawn(
        &setup,
        &format!(
            "(setsid sh {} {} &) ; exit 0",
            script.display(),
            base.display()
        ),
    );
    let mut tr = setup.into_tracker(pid, false, &topo());
    let parent_cpu = wait4_cpu(pid);
    let pidfile = base.with_extension("pid");
    sample_until(&mut tr, Duration::from_millis(20), || pidfile.exists());
    wait_for_file(&pidfile);
    std::thread::sleep(Duration::from_millis(50));
    let got = sample(&mut tr);
    let daemon_cpu = parse_times(&std::fs::read_to_string(base.with_extension("times")).unwrap());
    let daemon_pid = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .to_string();
    eprintln!(
        "cgroup daemon: tracker {:.4} s, daemon's own times {:.4} s, parent {:.4} s",
        got.total_s, daemon_cpu, parent_cpu
    );
    assert!(daemon_cpu > 0.05);
    // The daemon's shell (times has 10 ms resolution in dash) plus the parent and the
    // small processes around it.
    assert!(got.total_s >= daemon_cpu - 0.02, "{got:?} vs {daemon_cpu}");
    assert!(
        got.total_s <= (daemon_cpu + parent_cpu) * 1.05 + 0.06,
        "{got:?}"
    );
    // The sleeping daemon survives joulerun's measurement: moved back, cgroup removed.
    let before = own_cgroup_of(&daemon_pid);
    assert!(before.is_some_and(|c| c.contains("joulerun-")));
    tr.finish_checked().unwrap();
    assert!(!dir.exists(), "cgroup removed");
    assert_eq!(
        own_cgroup_of(&daemon_pid),
        own_cgroup_of(&std::process::id().to_string())
    );
    if let Ok(p) = daemon_pid.parse::<i32>() {
        // SAFETY: kill has no memory-safety preconditions; this is our test's daemon.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
}

#[test]
#[cfg_attr(
    not(probe_cgroup2),
    ignore = "needs a writable cgroup v2 (probe_cgroup2): mount cgroup2 and run as root or in a delegated cgroup, as CI does"
)]
fn cgroup_move_failure_falls_back_to_proc() {
    let _g = serial();
    let setup = cgroup_setup();
    // Sabotage: the cgroup disappears between prepare and spawn.
    std::fs::remove_dir(setup.cgroup_dir().unwrap()).unwrap();
    let pid = spawn(&setup, &busy(100_000));
    let mut tr = setup.into_tracker(pid, false, &topo());
    assert_eq!(tr.method(), TrackMethod::Proc);
    let why = tr.fallback_reason().unwrap().to_string();
    assert!(why.contains("could not move the command"), "{why}");
    sample_until(&mut tr, Duration::from_millis(20), || !tr_alive(pid));
    let want = wait4_cpu(pid);
    let got = sample(&mut tr);
    assert!(close(got.total_s, want, 1), "{got:?} vs {want}");
    tr.finish_checked().unwrap();
}

#[test]
fn proc_counts_hundreds_of_short_lived_children() {
    let _g = serial();
    let setup = TreeSetup::prepare(TrackRequest::Proc).unwrap();
    assert_eq!(setup.method(), TrackMethod::Proc);
    let script = format!(
        "for i in $(seq 200); do /bin/true; done; \
         for i in 1 2 3 4 5 6 7 8; do sh -c '{}' & done; wait; \
         exec sleep 0.5",
        busy(20_000)
    );
    let pid = spawn(&setup, &script);
    let mut tr = setup.into_tracker(pid, false, &topo());
    // Sample fast, through all the churn (vanishing processes mid-read are normal).
    let during = sample_until(&mut tr, Duration::from_millis(2), || comm(pid) == "sleep");
    // One more read after the exec, while the root is still alive.
    let during = sample(&mut tr).total_s.max(during.total_s);
    let want = wait4_cpu(pid);
    let after = sample(&mut tr).total_s;
    eprintln!(
        "proc, 200 short children + 8 workers: tracker {during:.4} s while the root \
         lives, {after:.4} s after reaping; wait4 {want:.4} s"
    );
    assert!(want > 0.02, "the children burned CPU: {want}");
    // While the root lives: its own time plus its reaped children's (cutime), read
    // from /proc in clock ticks.
    assert!(close(during, want, 2), "during {during} vs {want}");
    // After it is reaped: the exact RUSAGE_CHILDREN (unless an earlier read was
    // higher, which the tolerance above bounds).
    assert!(
        after >= want - 1e-3 && close(after, want, 2),
        "after {after} vs {want}"
    );
    tr.finish();
}

/// The states of the processes listed in `pid`'s main-thread `children` file.
fn children_states(pid: i32) -> Vec<char> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|c| {
            let s = std::fs::read_to_string(format!("/proc/{c}/stat")).ok()?;
            s.rsplit_once(')')?.1.trim_start().chars().next()
        })
        .collect()
}

#[test]
fn proc_counts_exited_children_before_their_parent_reaps_them() {
    let _g = serial();
    if !joulerun::procs::children_files_available() {
        eprintln!("skipped: this kernel has no /proc/<pid>/task/<tid>/children");
        return;
    }
    let setup = TreeSetup::prepare(TrackRequest::Proc).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("go");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // 1000 children of well under a clock tick each (0 ticks in their stat), left as
    // zombies until the shell waits, after the test lets it go on.
    let n = 1000;
    let pid = spawn(
        &setup,
        &format!(
            "for i in $(seq {n}); do /bin/true & done; read x < {}; wait",
            fifo.display()
        ),
    );
    let mut tr = setup.into_tracker(pid, false, &topo());
    let during = sample_until(&mut tr, Duration::from_millis(10), || {
        let s = children_states(pid);
        s.len() == n && s.iter().all(|&c| c == 'Z')
    });
    let zombies = children_states(pid).len();
    std::fs::write(&fifo, "\n").unwrap();
    let want = wait4_cpu(pid);
    let after = sample(&mut tr);
    eprintln!(
        "proc, {zombies} zombie children: tracker {:.4} s before they were reaped, {:.4} s \
         after; wait4 {want:.4} s",
        during.total_s, after.total_s
    );
    assert_eq!(zombies, n, "all children were zombies when sampled");
    // The shell's own time plus its zombies' exact CPU clocks, before it reaped any:
    // the time does not wait for the reaping to show up.
    assert!(
        close(during.total_s, want, 2),
        "before reaping {} vs {want}",
        during.total_s
    );
    assert!(close(after.total_s, want, 2), "after {after:?} vs {want}");
    tr.finish();
}

#[test]
fn proc_counts_an_orphan_until_it_is_gone() {
    let _g = serial();
    let setup = TreeSetup::prepare(TrackRequest::Proc).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("o");
    let script = tmp.path().join("orphan.sh");
    std::fs::write(
        &script,
        format!(
            "sleep 0.2\n{}\ntimes > \"$1.times\"\nsleep 0.3\n",
            busy(300_000)
        ),
    )
    .unwrap();
    let pid = spawn(
        &setup,
        &format!(
            "(setsid sh {} {} & sleep 0.1) ; exit 0",
            script.display(),
            base.display()
        ),
    );
    // The intermediate shell lives long enough for the orphan to be seen under it;
    // then it exits and the orphan is reparented to init. Not a subreaper: only what
    // /proc shows can be counted (an orphan whose parent dies before any read sees it
    // is invisible; a runner tracking through /proc should be a child subreaper, see
    // procs_reaper.rs).
    let mut tr = setup.into_tracker(pid, false, &topo());
    let times = base.with_extension("times");
    let got = sample_until(&mut tr, Duration::from_millis(10), || times.exists());
    let _ = wait4_cpu(pid);
    std::thread::sleep(Duration::from_millis(600));
    let end = sample(&mut tr);
    let daemon_cpu = parse_times(&std::fs::read_to_string(&times).unwrap());
    eprintln!(
        "proc orphan: tracker {:.4} s (at its end {:.4} s), orphan's own times {:.4} s",
        got.total_s, end.total_s, daemon_cpu
    );
    assert!(daemon_cpu > 0.05);
    // Seen every 10 ms while it ran; its last-seen time is kept after it is gone.
    assert!(close(end.total_s, daemon_cpu, 2), "{end:?} vs {daemon_cpu}");
}

/// Not a test on its own: the multi-threaded burner run by `proc_counts_threads`.
#[test]
fn helper_thread_burner() {
    if std::env::var_os("JOULERUN_TEST_BURN").is_none() {
        return;
    }
    let thread_cpu = || {
        // SAFETY: an all-zero timespec is valid; clock_gettime writes into it.
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointer to a local.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
    };
    let hs: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(move || {
                let mut x = 0u64;
                while thread_cpu() < 0.25 {
                    for i in 0..10_000u64 {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
                    }
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
}

/// Not a test on its own: run by `proc_sees_a_child_forked_by_another_thread`. A thread
/// other than the main one starts a shell that burns, leaves a mark, then sleeps; the
/// process then only waits.
#[test]
fn helper_thread_forker() {
    let Some(mark) = std::env::var_os("JOULERUN_TEST_FORK_MARK") else {
        return;
    };
    let mark = std::path::PathBuf::from(mark);
    std::thread::spawn(move || {
        let script = format!("{}; touch '{}'; sleep 1", busy(300_000), mark.display());
        let mut c = Command::new("sh").args(["-c", &script]).spawn().unwrap();
        c.wait().unwrap();
    })
    .join()
    .unwrap();
}

/// Issue 14: a process whose clock has not moved is not read, so a multi-threaded process
/// whose other thread forked a child, then went quiet, must still have that thread's
/// `children` listed: the child's CPU time is counted while it runs, not in one lump
/// when it is reaped.
#[test]
fn proc_sees_a_child_forked_by_another_thread() {
    let _g = serial();
    let setup = TreeSetup::prepare(TrackRequest::Proc).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mark = tmp.path().join("burnt");
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "helper_thread_forker", "--test-threads=1", "-q"])
        .env("JOULERUN_TEST_FORK_MARK", &mark)
        .stdout(std::process::Stdio::null());
    let hook = setup.child_hook();
    // SAFETY: the hook is async-signal-safe (and a no-op for /proc tracking).
    unsafe { cmd.pre_exec(hook) };
    let pid = cmd.spawn().unwrap().id() as i32; // reaped with wait4 below
    let mut tr = setup.into_tracker(pid, false, &topo());
    sample_until(&mut tr, Duration::from_millis(20), || mark.exists());
    // The burner is done and sleeps, not reaped yet: its time is in the tree already.
    std::thread::sleep(Duration::from_millis(50));
    let seen = sample(&mut tr);
    let want = wait4_cpu(pid);
    let after = sample(&mut tr);
    eprintln!(
        "child of another thread: {:.4} s seen while it lived, {:.4} s after; wait4 {want:.4} s",
        seen.total_s, after.total_s
    );
    assert!(want > 0.1, "it burned: {want}");
    assert!(close(seen.total_s, want, 2), "{seen:?} vs {want}");
    tr.finish();
}

/// Issue 14: the root's children are listed in the first read even when the root forked
/// them and went to sleep before tracking began (as `/usr/bin/time CMD` does): the root's
/// clock never moves again, and a process is otherwise read only when it does.
#[test]
fn proc_lists_a_root_that_forked_and_slept_before_the_first_read() {
    let _g = serial();
    let setup = TreeSetup::prepare(TrackRequest::Proc).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mark = tmp.path().join("burnt");
    let pid = spawn(
        &setup,
        &format!(
            "({}; touch '{}'; sleep 1) & wait",
            busy(300_000),
            mark.display()
        ),
    );
    // The root has forked and waits before the tracker's first read.
    std::thread::sleep(Duration::from_millis(100));
    let mut tr = setup.into_tracker(pid, false, &topo());
    sample_until(&mut tr, Duration::from_millis(20), || mark.exists());
    std::thread::sleep(Duration::from_millis(50));
    let seen = sample(&mut tr);
    let want = wait4_cpu(pid);
    eprintln!(
        "root asleep from the start: {:.4} s seen while its child lived; wait4 {want:.4} s",
        seen.total_s
    );
    assert!(want > 0.1, "it burned: {want}");
    assert!(close(seen.total_s, want, 2), "{seen:?} vs {want}");
    tr.finish();
}

#[test]
fn proc_counts_threads_and_splits_them_by_package() {
    let _g = serial();
    let setup = TreeSetup::prepare(TrackRequest::Proc).unwrap();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "helper_thread_burner", "--test-threads=1", "-q"])
        .env("JOULERUN_TEST_BURN", "1")
        .stdout(std::process::Stdio::null());
    let hook = setup.child_hook();
    // SAFETY: the hook is async-signal-safe (and a no-op for /proc tracking).
    unsafe { cmd.pre_exec(hook) };
    let pid = cmd.spawn().unwrap().id() as i32; // reaped with wait4 below
    // Pretend CPUs alternate between two packages, to run the per-thread split.
    let n = topo().cpu_package.len().max(2);
    let fake = Topology::from_packages((0..n).map(|c| Some((c % 2) as u32)).collect());
    let mut tr = setup.into_tracker(pid, false, &fake);
    let mut max_threads = 0;
    let during = sample_until(&mut tr, Duration::from_millis(20), || {
        let t = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("Threads:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
            })
            .unwrap_or(0);
        max_threads = max_threads.max(t);
        !tr_alive(pid)
    });
    let want = wait4_cpu(pid);
    let got = sample(&mut tr);
    eprintln!(
        "proc threads: up to {max_threads} threads, tracker {:.4} s (split {:?}), wait4 {want:.4} s",
        got.total_s, got.per_socket_s
    );
    assert!(max_threads >= 3, "saw the threads: {max_threads}");
    assert!(want >= 0.7, "3 threads x 0.25 s: {want}");
    assert!(close(during.total_s, want, 1), "{during:?} vs {want}");
    assert!(close(got.total_s, want, 1), "{got:?} vs {want}");
    assert_eq!(got.per_socket_s.len(), 2);
    assert!(got.per_socket_s.iter().all(|&s| s >= 0.0));
}

#[test]
fn attach_counts_only_time_after_attaching() {
    let _g = serial();
    let mut child: Child = Command::new("sh")
        .args(["-c", &busy(600_000)])
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let ticks = |pid: i32| -> f64 {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let f: Vec<u64> = s
                    .rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .skip(11)
                    .take(2)
                    .filter_map(|x| x.parse().ok())
                    .collect();
                Some(f.iter().sum::<u64>() as f64 / hz)
            })
            .unwrap_or(0.0)
    };
    let t = Instant::now();
    while ticks(pid) < 0.15 && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut tr = TreeTracker::attach(pid, &topo()).unwrap();
    let before = ticks(pid);
    assert_eq!(tr.method(), TrackMethod::Proc);
    assert!(tr.root_alive());
    let at_exit = sample_until(&mut tr, Duration::from_millis(20), || !tr_alive(pid));
    let want = wait4_cpu(pid);
    // Reaped (by us, its real parent: not joulerun's RUSAGE_CHILDREN in attach mode):
    // its last-seen time is kept.
    let after = sample(&mut tr);
    assert!(!tr.root_alive());
    eprintln!(
        "attach: tracker {:.4} s; child total {want:.4} s, {before:.2} s before attaching",
        after.total_s
    );
    assert!(after.total_s >= at_exit.total_s);
    assert!(
        (after.total_s - at_exit.total_s).abs() < 0.011,
        "vanish keeps the time"
    );
    assert!(
        close(after.total_s, want - before, 1),
        "{after:?} vs {}",
        want - before
    );
    let _ = child.try_wait();
    tr.finish();
}

#[test]
fn attach_errors_name_the_pid() {
    let e = TreeTracker::attach(999_999_999, &topo()).err().unwrap();
    assert!(e.contains("999999999"), "{e}");
    let e = TreeTracker::attach(std::process::id() as i32, &topo())
        .err()
        .unwrap();
    assert!(e.contains("itself"), "{e}");
    assert!(TreeTracker::attach(0, &topo()).is_err());
}

/// The command's processes, as listed by the tracker (both methods): the shell, its two
/// sleeping children, and a grandchild; nothing of joulerun's.
fn lists_the_tree(setup: TreeSetup) {
    let dir = tempfile::tempdir().unwrap();
    let pids_file = dir.path().join("pids");
    let script = format!(
        "sleep 5 & a=$!; sh -c 'sleep 5 & echo $! > {p}.g; wait' & b=$!; echo $a $b > {p}; wait",
        p = pids_file.display()
    );
    let root = spawn(&setup, &script);
    let mut t = setup.into_tracker(root, true, &topo());
    let grand_file = dir.path().join("pids.g");
    let start = Instant::now();
    while !(pids_file.exists() && grand_file.exists()) {
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(50));
    let want: Vec<i32> = std::fs::read_to_string(&pids_file)
        .unwrap()
        .split_whitespace()
        .chain(
            std::fs::read_to_string(&grand_file)
                .unwrap()
                .split_whitespace(),
        )
        .map(|s| s.to_string().parse().unwrap())
        .collect();
    // The /proc method knows the tree from its last sample.
    let _ = sample(&mut t);
    let mut got = Vec::new();
    t.pids(&mut got);
    assert!(got.contains(&root), "{got:?}");
    for p in &want {
        assert!(got.contains(p), "{p} missing from {got:?}");
    }
    assert!(!got.contains(&(std::process::id() as i32)));
    // SAFETY: kill takes a pid and a signal number.
    unsafe {
        for p in want.iter().chain([&root]) {
            libc::kill(*p, libc::SIGKILL);
        }
    }
    let mut status = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(root, &mut status, 0) };
    t.finish();
}

#[test]
fn the_proc_tracker_lists_the_commands_processes() {
    let _g = serial();
    lists_the_tree(TreeSetup::prepare(TrackRequest::Proc).unwrap());
}

#[test]
#[cfg_attr(
    not(probe_cgroup2),
    ignore = "needs a writable cgroup v2 (probe_cgroup2): mount cgroup2 and run as root or in a delegated cgroup, as CI does"
)]
fn the_cgroup_tracker_lists_the_commands_processes() {
    let _g = serial();
    lists_the_tree(cgroup_setup());
}

/// Runs the joulerun binary as uid/gid 65534 with `args`, after moving the process (as
/// root, before dropping privileges) into the cgroup `into` when given; its JSON report.
fn joulerun_as_nobody(into: Option<&Path>, args: &[&str]) -> serde_json::Value {
    let bin = env!("CARGO_BIN_EXE_joulerun");
    let mut script = String::new();
    if let Some(d) = into {
        script.push_str(&format!("echo $$ > '{}/cgroup.procs' && ", d.display()));
    }
    script.push_str(&format!(
        "exec setpriv --reuid=65534 --regid=65534 --clear-groups -- '{bin}' \"$@\""
    ));
    let o = Command::new("sh")
        .args(["-c", &script, "sh"])
        .args(args)
        .current_dir("/")
        .env("HOME", "/")
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Issue 14: a user's joulerun that sits in a cgroup delegated to it (its own cgroup is
/// the user's, as in `systemd-run --user --scope -p Delegate=yes joulerun ...`) uses the
/// exact cgroup method by itself; in a cgroup it may not write, it follows the tree
/// through `/proc` and says why.
#[test]
#[cfg_attr(
    not(all(probe_cgroup2, probe_run_as_nobody)),
    ignore = "needs root, a writable cgroup v2 and uid 65534 reaching the build (probe_cgroup2, probe_run_as_nobody), as CI has"
)]
fn a_user_in_a_delegated_cgroup_gets_the_cgroup_method() {
    use std::os::unix::fs::chown;
    let _g = serial();
    assert!(
        Path::new("/usr/bin/setpriv").exists(),
        "needs setpriv (util-linux) to drop privileges"
    );
    let own = joulerun::procs::own_cgroup_dir().expect("a cgroup v2 (probe_cgroup2)");
    let deleg = own.join(format!("joulerun-test-delegated-{}", std::process::id()));
    std::fs::create_dir(&deleg).unwrap();
    // What delegation hands to a user: the directory and its interface files.
    for p in [
        deleg.clone(),
        deleg.join("cgroup.procs"),
        deleg.join("cgroup.threads"),
        deleg.join("cgroup.subtree_control"),
    ] {
        chown(&p, Some(65534), Some(65534)).unwrap();
    }
    let args = [
        "--source",
        "estimate",
        "--no-baseline",
        "--json",
        "-",
        "-o",
        "/dev/null",
        "--",
        "sh",
        "-c",
        "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done",
    ];
    let delegated = joulerun_as_nobody(Some(&deleg), &args);
    let not = joulerun_as_nobody(None, &args);
    // Empty once joulerun has exited (it removes the command's cgroup).
    let start = Instant::now();
    while std::fs::remove_dir(&deleg).is_err() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(delegated["attribution"]["method"], "cgroup", "{delegated}");
    assert!(f64_of(&delegated["attribution"]["tree_cpu_s"]) > 0.0);
    assert_eq!(not["attribution"]["method"], "proc", "{not}");
    let w = not["warnings"].to_string();
    assert!(
        w.contains("not writable by this user: tracking through /proc"),
        "{w}"
    );
    assert!(!deleg.exists(), "test cgroup removed");
}

fn f64_of(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}
