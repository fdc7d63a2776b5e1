//! The per-tick cost of the CPU-time reads: heap allocations in steady state (counted
//! by a wrapping allocator, so this is its own test binary) and time per read
//! (printed; run with `--release` for meaningful numbers).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use joulerun::procs::{
    MachineCpu, MachineCpuSample, TrackRequest, TreeCpu, TreeSetup, TreeTracker,
};
use joulerun::sysroot::SysRoot;
use joulerun::topology::Topology;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set on the thread that measures, so the test harness's threads (another test
    /// starting or reporting) do not count.
    static MEASURING: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    // A const-initialised Cell needs no allocation and no destructor.
    if MEASURING.try_with(Cell::get).unwrap_or(false) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

static SERIAL: Mutex<()> = Mutex::new(());

/// (allocations per read, microseconds per read) over `n` reads after a warm-up.
fn measure(n: u32, mut f: impl FnMut()) -> (f64, f64) {
    for _ in 0..5 {
        f();
    }
    MEASURING.set(true);
    let a0 = ALLOCS.load(Ordering::Relaxed);
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let a = (ALLOCS.load(Ordering::Relaxed) - a0) as f64 / n as f64;
    MEASURING.set(false);
    (a, us)
}

/// A stable tree: a shell with two sleeping children and a grandchild.
fn spawn_tree(setup: &TreeSetup) -> std::process::Child {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "sleep 30 & sleep 30 & sh -c 'sleep 30 & wait' & wait"])
        .process_group(0);
    let hook = setup.child_hook();
    // SAFETY: the hook is async-signal-safe.
    unsafe { cmd.pre_exec(hook) };
    cmd.spawn().unwrap()
}

fn kill_tree(mut child: std::process::Child) {
    // SAFETY: kill has no memory-safety preconditions; the group is our child's.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    let _ = child.wait();
}

fn tree_cost(req: TrackRequest, topo: &Topology, label: &str) -> (f64, f64) {
    // cgroup costs are measured in their own test, ignored where cgroup v2 is not writable
    // (build.rs, `probe_cgroup2`); `/proc` tracking always prepares: here it must work.
    let setup = TreeSetup::prepare(req).unwrap_or_else(|e| panic!("{label}: {e}"));
    let child = spawn_tree(&setup);
    let mut tr = setup.into_tracker(child.id() as i32, true, topo);
    // Let the tree form.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut c = TreeCpu::default();
    let r = measure(200, || tr.sample(&mut c));
    eprintln!(
        "{label}: {:.2} allocations/read, {:.1} us/read ({:?})",
        r.0,
        r.1,
        tr.method()
    );
    tr.finish();
    kill_tree(child);
    r
}

/// This machine's topology, and the same CPUs split over two packages (the per-thread
/// split is then read too).
fn topologies() -> (Topology, Topology) {
    let topo = Topology::read(&SysRoot::default());
    let n = topo.cpu_package.len().max(2);
    let two = Topology::from_packages((0..n).map(|c| Some((c % 2) as u32)).collect());
    (topo, two)
}

#[test]
fn per_tick_cost() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (topo, two) = topologies();

    let mut m = MachineCpu::new(&topo).unwrap();
    let mut s = MachineCpuSample::default();
    let (a, us) = measure(500, || m.sample(&mut s));
    eprintln!("MachineCpu: {a:.2} allocations/read, {us:.1} us/read");
    assert_eq!(a, 0.0, "MachineCpu allocates per read");

    let (a, us) = measure(500, || {
        std::hint::black_box(joulerun::procs::self_cpu_s());
    });
    eprintln!("self_cpu_s: {a:.2} allocations/read, {us:.2} us/read");
    assert_eq!(a, 0.0);

    let (a, _) = tree_cost(TrackRequest::Proc, &topo, "proc, 1 package");
    assert_eq!(a, 0.0, "proc read allocates on a stable tree");
    tree_cost(
        TrackRequest::Proc,
        &two,
        "proc, 2 packages (per-thread split)",
    );

    // Attach to a stable tree.
    let setup = TreeSetup::prepare(TrackRequest::Proc).unwrap();
    let child = spawn_tree(&setup);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut tr = TreeTracker::attach(child.id() as i32, &topo).unwrap();
    let mut c = TreeCpu::default();
    let (a, us) = measure(200, || tr.sample(&mut c));
    eprintln!("attach (proc), 1 package: {a:.2} allocations/read, {us:.1} us/read");
    assert_eq!(a, 0.0);
    kill_tree(child);
}

#[test]
#[cfg_attr(
    not(probe_cgroup2),
    ignore = "needs a writable cgroup v2 (probe_cgroup2): mount cgroup2 and run as root or in a delegated cgroup, as CI does"
)]
fn per_tick_cost_of_cgroup_tracking() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (topo, two) = topologies();
    let (a, _) = tree_cost(TrackRequest::Cgroup, &topo, "cgroup, 1 package");
    assert_eq!(a, 0.0, "cgroup read allocates");
    tree_cost(
        TrackRequest::Cgroup,
        &two,
        "cgroup, 2 packages (per-thread split)",
    );
}

/// A shell with `n` sleeping children, waiting for them; its PID.
fn sleepers(setup: &TreeSetup, n: usize) -> std::process::Child {
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        &format!("for i in $(seq {n}); do sleep 60 & done; wait"),
    ])
    .process_group(0);
    let hook = setup.child_hook();
    // SAFETY: the hook is async-signal-safe.
    unsafe { cmd.pre_exec(hook) };
    cmd.spawn().unwrap()
}

/// Reads per sample of a `/proc` tracker over a tree of `n` sleeping processes, once the
/// tree has formed: (CPU clocks, files, bytes).
fn reads_per_sample(n: usize, topo: &Topology) -> (f64, f64, f64) {
    let setup = TreeSetup::prepare(TrackRequest::Proc).unwrap();
    let child = sleepers(&setup, n);
    let mut tr = setup.into_tracker(child.id() as i32, true, topo);
    let mut c = TreeCpu::default();
    let mut pids = Vec::new();
    let start = Instant::now();
    // Every sleeper found (and its `sleep` exec'd: the shell's children settle).
    while pids.len() < n + 1 && start.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(20));
        tr.sample(&mut c);
        tr.pids(&mut pids);
    }
    let found = pids.len();
    std::thread::sleep(std::time::Duration::from_millis(300));
    for _ in 0..3 {
        tr.sample(&mut c);
    }
    let before = tr.read_counts().unwrap();
    let samples = 20;
    for _ in 0..samples {
        std::thread::sleep(std::time::Duration::from_millis(5));
        tr.sample(&mut c);
    }
    let after = tr.read_counts().unwrap();
    tr.finish();
    kill_tree(child);
    assert_eq!(
        found,
        n + 1,
        "the tracker found the shell and its {n} children"
    );
    let per = |a: u64, b: u64| (b - a) as f64 / samples as f64;
    (
        per(before.clocks, after.clocks),
        per(before.files, after.files),
        per(before.bytes, after.bytes),
    )
}

/// Issue 14: what a sample of a `/proc` tree reads stays bounded as the tree grows. A
/// sleeping process costs one CPU-clock read (a system call, no file): no `stat`, no
/// `children` list, no thread listing, with one package or two. Counts, not timings
/// (those are in scripts/bench, "bigtrees").
#[test]
fn proc_reads_stay_bounded_as_the_tree_grows() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (topo, two) = topologies();
    let mut files = Vec::new();
    for (n, t, label) in [
        (100, &topo, "1 package"),
        (1000, &topo, "1 package"),
        (1000, &two, "2 packages"),
    ] {
        let (clocks, f, bytes) = reads_per_sample(n, t);
        eprintln!(
            "{n} sleeping children, {label}: {clocks:.1} clock reads, {f:.2} files, \
             {bytes:.0} bytes per sample"
        );
        // One clock per process (the shell and its children), and hardly a file: the
        // shell's `wait` and the sleepers never run.
        assert!(clocks <= (n + 1) as f64 + 2.0, "{n}: {clocks} clock reads");
        assert!(clocks >= (n + 1) as f64, "{n}: every process is checked");
        assert!(f <= 3.0, "{n}, {label}: {f} files per sample");
        assert!(
            bytes <= 3.0 * 1024.0,
            "{n}, {label}: {bytes} bytes per sample"
        );
        files.push(f);
    }
    // Ten times the processes: not more files.
    assert!(files[1] <= files[0] + 1.0, "{files:?}");
}
