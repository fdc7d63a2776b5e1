//! Probes the build machine once for what some tests need and not every machine has.
//!
//! Each probe that holds sets a `probe_*` cfg. A test that needs one carries
//! `#[cfg_attr(not(probe_...), ignore = "needs ...: how to get it")]`, so on a machine
//! without it `cargo test` lists the test as ignored, with the reason, instead of running
//! it into a failure or letting it pass without checking anything. README.md
//! ("Development") lists the probes and the tests each gates; CI (`.ci/run`: root, cgroup
//! v2) satisfies them all.
//!
//! The probes are cheap and leave nothing behind: they read `/proc` files, look at paths,
//! ask `access(2)`, open and close one perf counter, and as root start `true` under
//! `/usr/bin/time` and a shell as uid 65534. They describe the machine and the user that
//! build the tests, which under `cargo test` are the ones that run them. They are re-run
//! when a watched path changes (below) or `TMPDIR` or `USER` change; after any other
//! change to the machine (a cgroup mounted, a sysctl set), `touch build.rs`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Every cfg this script may set, for `rustc-check-cfg`.
const PROBES: &[&str] = &[
    "probe_root",
    "probe_cgroup2",
    "probe_usr_bin_time",
    "probe_rapl_msr_cpu",
    "probe_msr_device",
    "probe_run_as_nobody",
    "probe_perf_events",
    // Carbon, OpenMetrics, plots (issue 12)
    "probe_promtool",
    "probe_pushgateway",
    "probe_rsvg_convert",
    // Launchers (issue 13)
    "probe_slurm",
    "probe_openmpi",
    "probe_mpi4py",
    "probe_unshare_uts",
];

/// The uid and gid the tests run joulerun as to be "another user".
const NOBODY: u32 = 65534;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=TMPDIR");
    println!("cargo:rerun-if-env-changed=USER");
    println!("cargo:rustc-check-cfg=cfg({})", PROBES.join(", "));

    let root = effective_uid() == Some(0);
    let set = |name: &str, holds: bool| {
        debug_assert!(PROBES.contains(&name));
        if holds {
            println!("cargo:rustc-cfg={name}");
        }
    };
    set("probe_root", root);
    set("probe_cgroup2", cgroup2_writable());
    set("probe_usr_bin_time", usr_bin_time_works());
    set("probe_rapl_msr_cpu", rapl_msr_cpu());
    set("probe_msr_device", msr_device());
    set("probe_run_as_nobody", root && nobody_reaches_the_build());
    set("probe_perf_events", perf_events());
    // Carbon, OpenMetrics, plots (issue 12): the real tools the tests drive.
    set(
        "probe_promtool",
        tool_runs("/usr/bin/promtool", &["--version"]),
    );
    set(
        "probe_pushgateway",
        tool_runs("/usr/bin/prometheus-pushgateway", &["--version"]),
    );
    set(
        "probe_rsvg_convert",
        tool_runs("/usr/bin/rsvg-convert", &["--version"]),
    );
    // Launchers (issue 13): a real Slurm (started by the tests as root, munge beside
    // it), Open MPI's mpirun, mpi4py for a real MPI program, and UTS namespaces to
    // simulate nodes.
    set(
        "probe_slurm",
        root && tool_runs("/usr/sbin/munged", &["--version"])
            && tool_runs("/usr/sbin/slurmctld", &["-V"])
            && tool_runs("/usr/sbin/slurmd", &["-V"])
            && installed("/usr/bin/srun")
            && installed("/usr/bin/sbatch")
            && installed("/usr/bin/sinfo"),
    );
    set(
        "probe_openmpi",
        tool_runs("/usr/bin/mpirun", &["--version"]),
    );
    set(
        "probe_mpi4py",
        tool_runs("/usr/bin/python3", &["-c", "import mpi4py.MPI"]),
    );
    set(
        "probe_unshare_uts",
        root && tool_runs("/usr/bin/unshare", &["--uts", "true"]),
    );
}

/// A program that a test runs is installed and answers `args` (`--version`). Watched
/// like `/usr/bin/time`: the program, or `/usr/bin` while it is missing.
fn tool_runs(path: &str, args: &[&str]) -> bool {
    let p = Path::new(path);
    if p.exists() {
        println!("cargo:rerun-if-changed={path}");
    } else {
        if Path::new("/usr/bin").is_dir() {
            println!("cargo:rerun-if-changed=/usr/bin");
        }
        return false;
    }
    let mut c = Command::new(p);
    c.args(args);
    succeeds(c)
}

/// A program is installed (an executable file), for those that cannot answer
/// `--version` without a configuration (Slurm's clients). Watched like [`tool_runs`].
fn installed(path: &str) -> bool {
    let p = Path::new(path);
    if p.exists() {
        println!("cargo:rerun-if-changed={path}");
    } else if Path::new("/usr/bin").is_dir() {
        println!("cargo:rerun-if-changed=/usr/bin");
    }
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The effective uid, from `/proc/self/status` (`Uid: real effective saved fs`).
fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `access(path, W_OK)`: whether this user may write there (permissions, read-only mounts).
fn writable(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// A cgroup v2 hierarchy is mounted and this process's own cgroup in it takes new child
/// cgroups and process moves: what `--track cgroup` needs. Nothing is created: the
/// directory and its `cgroup.procs` are checked with `access(2)`.
fn cgroup2_writable() -> bool {
    let (Ok(mounts), Ok(own)) = (
        fs::read_to_string("/proc/self/mounts"),
        fs::read_to_string("/proc/self/cgroup"),
    ) else {
        return false;
    };
    // `cgroup2 /sys/fs/cgroup cgroup2 rw,...`: the mount point (spaces are octal-escaped
    // there, and a cgroup mount point with one is not worth handling in a probe).
    let Some(mount_point) = mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 2 && f[2] == "cgroup2").then(|| f[1].to_string())
    }) else {
        return false;
    };
    let Some(own_path) = own.lines().find_map(|l| l.strip_prefix("0::")) else {
        return false;
    };
    let dir = Path::new(&mount_point).join(own_path.trim().trim_start_matches('/'));
    let procs = dir.join("cgroup.procs");
    procs.is_file() && writable(&dir) && writable(&procs)
}

/// `/usr/bin/time` runs a command and writes its times where `-o` says, with `-f`, as the
/// attribution tests use it (GNU time, Debian package `time`).
fn usr_bin_time_works() -> bool {
    let time = Path::new("/usr/bin/time");
    if time.exists() {
        println!("cargo:rerun-if-changed=/usr/bin/time");
    } else if Path::new("/usr/bin").is_dir() {
        // Installing it changes the directory.
        println!("cargo:rerun-if-changed=/usr/bin");
        return false;
    }
    let mut c = Command::new(time);
    c.args(["-f", "%U %S", "-o", "/dev/null", "true"]);
    succeeds(c)
}

/// Run a command with no input and its output discarded: whether it exits 0.
fn succeeds(mut c: Command) -> bool {
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// An x86 CPU with RAPL MSRs, from the first processor of `/proc/cpuinfo`: Intel, or AMD
/// or Hygon from family 0x17 (Zen) on.
fn rapl_msr_cpu() -> bool {
    let Ok(text) = fs::read_to_string("/proc/cpuinfo") else {
        return false;
    };
    let field = |key: &str| {
        text.lines()
            .take_while(|l| !l.trim().is_empty())
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == key).then(|| v.trim().to_string())
            })
    };
    let family: u32 = field("cpu family")
        .and_then(|f| f.parse().ok())
        .unwrap_or(0);
    match field("vendor_id").as_deref() {
        Some("GenuineIntel") => true,
        Some("AuthenticAMD" | "HygonGenuine") => family >= 0x17,
        _ => false,
    }
}

/// `/dev/cpu/0/msr` exists (the `msr` module is loaded).
fn msr_device() -> bool {
    // Watch the nearest of the device and its directories that exists: loading or
    // unloading the module changes it.
    if let Some(p) = ["/dev/cpu/0/msr", "/dev/cpu/0", "/dev/cpu"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    {
        println!("cargo:rerun-if-changed={p}");
    }
    Path::new("/dev/cpu/0/msr").exists()
}

/// As root: a process started as uid/gid 65534 can enter the temporary directory the tests
/// make their trees in and the build's output directories, and could run the executables
/// built there (this script's own, built with the same umask). The tests that run joulerun
/// or themselves as another user need all three.
fn nobody_reaches_the_build() -> bool {
    let tmp = std::env::temp_dir();
    let exe = std::env::current_exe().unwrap_or_default();
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out; tests and binaries are in
    // <target>/<profile>/deps and <target>/<profile>.
    let Some(profile) = std::env::var_os("OUT_DIR")
        .map(PathBuf::from)
        .and_then(|o| o.ancestors().nth(3).map(Path::to_path_buf))
    else {
        return false;
    };
    let deps = profile.join("deps");
    let deps = if deps.is_dir() { deps } else { profile };
    // Only the mode bits say whether "others" may execute it; `test -x` as nobody
    // answers the same through every directory above it.
    let exe_mode_ok = fs::metadata(&exe).is_ok_and(|m| m.permissions().mode() & 0o001 != 0);
    let mut c = Command::new("/bin/sh");
    c.args(["-c", r#"cd "$1" && cd "$2" && test -x "$3""#, "sh"])
        .arg(&tmp)
        .arg(&deps)
        .arg(&exe)
        .current_dir("/")
        .uid(NOBODY)
        .gid(NOBODY);
    exe_mode_ok && succeeds(c)
}

/// `perf_event_open` of a system-wide software counter (cpu-clock on CPU 0) succeeds:
/// root, CAP_PERFMON or `kernel.perf_event_paranoid` <= 0, and no seccomp filter against
/// it. The counter is closed at once.
fn perf_events() -> bool {
    // perf_event_attr, first version (64 bytes): type (u32), size (u32), config (u64),
    // everything else 0. PERF_TYPE_SOFTWARE = 1, PERF_COUNT_SW_CPU_CLOCK = 0.
    let mut attr = [0u8; 64];
    attr[0..4].copy_from_slice(&1u32.to_ne_bytes());
    attr[4..8].copy_from_slice(&64u32.to_ne_bytes());
    const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
    // SAFETY: `attr` is a valid perf_event_attr of the size it declares and outlives the
    // call; the other arguments are integers.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_mut_ptr(),
            -1 as libc::pid_t,
            0 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return false;
    }
    // SAFETY: `fd` was just returned to us and is closed once.
    unsafe { libc::close(fd as libc::c_int) };
    true
}
