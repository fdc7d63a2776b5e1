//! The runner's setting: joulerun is a child subreaper and reaps everything with
//! `waitpid(-1)`. The command daemonises workers at once (their parent dies before any
//! read can see them); the tree's total must still equal the kernel's account of
//! everything reaped (`RUSAGE_CHILDREN`), with both methods. Its own test binary:
//! the subreaper flag and `waitpid(-1)` are process-wide.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use joulerun::procs::{TrackRequest, TreeCpu, TreeSetup};
use joulerun::sysroot::SysRoot;
use joulerun::topology::Topology;

static SERIAL: Mutex<()> = Mutex::new(());

fn children_cpu() -> f64 {
    // SAFETY: an all-zero rusage is valid; getrusage writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a local.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    s(ru.ru_utime) + s(ru.ru_stime)
}

fn run(req: TrackRequest) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: prctl with these arguments only sets a flag on this process.
    assert_eq!(
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) },
        0
    );
    // The cgroup test is ignored where cgroup v2 is not writable (build.rs,
    // `probe_cgroup2`), and `/proc` tracking always prepares: here it must work.
    let setup = TreeSetup::prepare(req).unwrap_or_else(|e| panic!("{req:?}: {e}"));
    let method = setup.method();
    let before = children_cpu();
    let busy = |n: u32| format!("i=0; while [ $i -lt {n} ]; do i=$((i+1)); done");
    // Three daemonised workers, one that dies at once, and the root's own work.
    let script = format!(
        "for n in 200000 150000 100000 10; do (setsid sh -c \"i=0; while [ \\$i -lt $n ]; \
         do i=\\$((i+1)); done\" &) ; done; {}",
        busy(50_000)
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]);
    let hook = setup.child_hook();
    // SAFETY: the hook is async-signal-safe.
    unsafe { cmd.pre_exec(hook) };
    // Reaped with waitpid(-1) below, as the runner does.
    let root = cmd.spawn().unwrap().id() as i32;
    let topo = Topology::read(&SysRoot::default());
    let mut tr = setup.into_tracker(root, true, &topo);
    assert_eq!(tr.method(), method);
    let mut c = TreeCpu::default();
    let mut last = 0.0f64;
    let mut before_last_reap = 0.0;
    let mut reaped = 0;
    let start = Instant::now();
    loop {
        tr.sample(&mut c);
        assert!(c.total_s >= last, "monotonic");
        last = c.total_s;
        let done;
        loop {
            let mut st = 0;
            // SAFETY: valid pointer to a local; WNOHANG never blocks.
            let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
            if r > 0 {
                reaped += 1;
                before_last_reap = last;
                continue;
            }
            done = r < 0; // ECHILD: everything reaped.
            break;
        }
        if done || start.elapsed() > Duration::from_secs(60) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    tr.sample(&mut c);
    let want = children_cpu() - before;
    eprintln!(
        "{method:?} subreaper: tracker {:.4} s, RUSAGE_CHILDREN {want:.4} s, {reaped} reaped, \
         {before_last_reap:.4} s seen before the last reap",
        c.total_s
    );
    assert!(reaped >= 5, "root + 4 orphans: {reaped}");
    assert!(want > 0.2);
    // The tree's time is everything joulerun reaped.
    assert!(
        (c.total_s - want).abs() <= 0.02 * want + 0.005,
        "{} vs {want}",
        c.total_s
    );
    // And most of it was visible while the orphans still ran, not only at their reaping.
    assert!(
        before_last_reap >= 0.5 * want,
        "{before_last_reap} vs {want}"
    );
    tr.finish_checked().unwrap();
}

#[test]
fn proc_with_subreaper_sees_daemonised_workers() {
    run(TrackRequest::Proc);
}

#[test]
#[cfg_attr(
    not(probe_cgroup2),
    ignore = "needs a writable cgroup v2 (probe_cgroup2): mount cgroup2 and run as root or in a delegated cgroup, as CI does"
)]
fn cgroup_with_subreaper_sees_daemonised_workers() {
    run(TrackRequest::Cgroup);
}
