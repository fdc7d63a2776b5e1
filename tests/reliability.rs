//! The classes of bad input and faults of docs/reliability.md, each driven through the
//! built binary: nothing hangs beyond a stop signal, nothing at a path is destroyed, no
//! output is lost, mixed or torn, joulerun never dies without a report or leaves debris,
//! and what it echoes cannot drive the terminal.

use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

mod common;

/// joulerun against an empty hardware root (the estimate) and an empty state directory.
fn bin(dir: &Path) -> Command {
    let root = dir.join("hw");
    std::fs::create_dir_all(&root).unwrap();
    common::joulerun(&root, &dir.join("state"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The command's output, or a failure if joulerun is still running after `secs`.
fn output_within(mut cmd: Command, secs: u64) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let r = Running::new(child);
    r.finish_within(secs)
}

/// A joulerun process whose stderr is collected while it runs.
struct Running {
    child: Child,
    err: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn new(mut child: Child) -> Running {
        let err = Arc::new(Mutex::new(String::new()));
        let reader = child.stderr.take().map(|mut e| {
            let err = err.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = e.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    err.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            })
        });
        Running { child, err, reader }
    }

    fn spawn(mut cmd: Command) -> Running {
        Running::new(
            cmd.stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        )
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    /// Wait until stderr contains `needle` (or fail after 20 s).
    fn wait_for_stderr(&self, needle: &str) {
        let t = Instant::now();
        while !self.stderr().contains(needle) {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "never printed {needle:?}: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).unwrap();
    }

    /// Wait for the exit; kill and fail if it takes longer than `secs`.
    fn finish_within(mut self, secs: u64) -> Output {
        let t = Instant::now();
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if t.elapsed() > Duration::from_secs(secs) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "joulerun still running after {secs} s (a hang): {}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut stdout = Vec::new();
        if let Some(mut o) = self.child.stdout.take() {
            let _ = o.read_to_end(&mut stdout);
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        Output {
            status,
            stdout,
            stderr: self.stderr().into_bytes(),
        }
    }
}

fn mkfifo(p: &Path) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------
// 1. Nothing blocks beyond a stop signal
// ---------------------------------------------------------------------------------------

#[test]
fn a_fifo_where_the_baseline_should_be_is_refused_at_once() {
    let t = tempfile::tempdir().unwrap();
    let fifo = t.path().join("baseline.json");
    mkfifo(&fifo);
    let mut c = bin(t.path());
    c.args(["--baseline", fifo.to_str().unwrap(), "--", "true"]);
    let o = output_within(c, 10);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(stderr(&o).contains("FIFO"), "{}", stderr(&o));

    // At the default location: the run goes on without a baseline, and says why.
    let state = t.path().join("state/joulerun");
    std::fs::create_dir_all(&state).unwrap();
    mkfifo(&state.join("baseline.json"));
    let mut c = bin(t.path());
    c.args(["--", "true"]);
    let o = output_within(c, 10);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot be read") && stderr(&o).contains("FIFO"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_csv_fifo_without_reader_waits_and_a_signal_ends_it_before_the_command_starts() {
    for (sig, status) in [(Signal::SIGINT, 130), (Signal::SIGTERM, 143)] {
        let t = tempfile::tempdir().unwrap();
        let fifo = t.path().join("timeline.csv");
        mkfifo(&fifo);
        let marker = t.path().join("ran");
        let mut c = bin(t.path());
        c.args([
            "--csv",
            fifo.to_str().unwrap(),
            "--",
            "touch",
            marker.to_str().unwrap(),
        ]);
        let r = Running::spawn(c);
        r.wait_for_stderr("waiting for a process to read the FIFO");
        r.signal(sig);
        let o = r.finish_within(5);
        assert_eq!(o.status.code(), Some(status), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("the command was not started"),
            "{}",
            stderr(&o)
        );
        assert!(!marker.exists(), "the command must not have run");
    }
}

#[test]
fn a_json_fifo_is_written_when_read_and_a_signal_ends_the_wait_otherwise() {
    let t = tempfile::tempdir().unwrap();
    let fifo = t.path().join("summary.json");
    mkfifo(&fifo);
    // Nobody reads: joulerun waits at the end, and SIGTERM ends the wait.
    let mut c = bin(t.path());
    c.args(["--json", fifo.to_str().unwrap(), "--", "true"]);
    let r = Running::spawn(c);
    r.wait_for_stderr("waiting for a process to read the FIFO");
    r.signal(Signal::SIGTERM);
    let o = r.finish_within(5);
    assert_eq!(o.status.code(), Some(143), "{}", stderr(&o));
    // A reader: the JSON arrives whole.
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
    };
    let mut c = bin(t.path());
    c.args(["--json", fifo.to_str().unwrap(), "--", "true"]);
    let o = output_within(c, 10);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = reader.join().unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["schema_version"], 1);
    assert!(
        t.path()
            .join("summary.json")
            .metadata()
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

/// Replace a file of a fake tree by a FIFO.
fn fifo_instead(p: &Path) {
    std::fs::remove_file(p).unwrap();
    mkfifo(p);
}

#[test]
fn fifos_planted_in_the_hardware_tree_are_refused_without_blocking() {
    use joulerun::sources::msr::{MSR_PKG_ENERGY_STATUS, MSR_RAPL_POWER_UNIT};
    use joulerun_testkit::fakehw::{
        FakeMsr, FakePowercap, INTEL_RANGE_UJ, write_cpuinfo, write_topology,
    };
    for file in [
        "energy_uj",
        "max_energy_range_uj",
        "name",
        "msr",
        "physical_package_id",
    ] {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("hw");
        let f = FakePowercap::new(&root).unwrap();
        f.add_zone("intel-rapl:0", "package-0", 1_000, Some(INTEL_RANGE_UJ))
            .unwrap();
        write_topology(&root, &[0]).unwrap();
        write_cpuinfo(&root, "GenuineIntel", 6, 0x8C).unwrap();
        let m = FakeMsr::new(&root).unwrap();
        m.add_cpu(0)
            .unwrap()
            .set(0, MSR_RAPL_POWER_UNIT, FakeMsr::unit_register(14))
            .unwrap()
            .set(0, MSR_PKG_ENERGY_STATUS, 1000)
            .unwrap();
        let victim = match file {
            "msr" => m.msr_path(0),
            "physical_package_id" => {
                root.join("sys/devices/system/cpu/cpu0/topology/physical_package_id")
            }
            f_ => f.zone_path("intel-rapl:0").join(f_),
        };
        fifo_instead(&victim);
        let state = t.path().join("state");
        for args in [
            vec!["--", "true"],
            vec!["list"],
            vec!["--source", "msr", "--", "true"],
        ] {
            let mut c = common::joulerun(&root, &state);
            c.args(&args);
            let o = output_within(c, 10);
            let e = stderr(&o);
            assert!(o.status.code().is_some(), "{file} {args:?}: {e}");
            if file == "msr" && args.get(1) == Some(&"msr") {
                assert_eq!(o.status.code(), Some(125), "{e}");
                assert!(e.contains("FIFO"), "{file}: {e}");
            }
            if file == "energy_uj" && args[0] == "list" {
                let out = String::from_utf8_lossy(&o.stdout);
                assert!(out.contains("FIFO"), "{out}");
            }
        }
    }
}

#[test]
fn signals_end_a_calibration_at_once_with_their_status_and_store_nothing() {
    for (sig, status) in [
        (Signal::SIGTERM, 143),
        (Signal::SIGHUP, 129),
        (Signal::SIGINT, 130),
    ] {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("out");
        std::fs::create_dir(&dir).unwrap();
        let b = dir.join("baseline.json");
        let mut c = bin(t.path());
        c.args([
            "--basepower",
            "--duration",
            "60",
            "--baseline",
            b.to_str().unwrap(),
        ]);
        let r = Running::spawn(c);
        r.wait_for_stderr("measuring idle power");
        r.signal(sig);
        let o = r.finish_within(5);
        assert_eq!(o.status.code(), Some(status), "{sig}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("no baseline was stored"),
            "{}",
            stderr(&o)
        );
        assert!(names_in(&dir).is_empty(), "{:?}", names_in(&dir));
    }
}

// ---------------------------------------------------------------------------------------
// 2. Nothing at a path is destroyed
// ---------------------------------------------------------------------------------------

#[test]
fn the_baseline_is_written_only_over_a_regular_file_checked_before_calibrating() {
    let t = tempfile::tempdir().unwrap();
    // A character device (made here, as root; a FIFO otherwise), and a FIFO.
    let dev = t.path().join("full");
    let c = CString::new(dev.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid path; makedev(1, 7) is /dev/full's number.
    let made = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 7)) } == 0;
    if !made {
        mkfifo(&dev);
    }
    let fifo = t.path().join("fifo");
    mkfifo(&fifo);
    let file = t.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let under_file = file.join("baseline.json");
    for target in [&dev, &fifo, &under_file] {
        let mut c = bin(t.path());
        c.args([
            "--basepower",
            "--duration",
            "30",
            "--baseline",
            target.to_str().unwrap(),
        ]);
        let o = output_within(c, 10);
        assert_eq!(o.status.code(), Some(125), "{target:?}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains("cannot write the baseline"), "{e}");
        assert!(!e.contains("measuring idle power"), "checked first: {e}");
    }
    let m = std::fs::symlink_metadata(&dev).unwrap().file_type();
    assert!(m.is_char_device() || m.is_fifo());
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
}

#[test]
fn a_read_only_destination_fails_before_calibrating() {
    let t = tempfile::tempdir().unwrap();
    let ro = t.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let exe = env!("CARGO_BIN_EXE_joulerun");
    let hw = t.path().join("hw");
    std::fs::create_dir(&hw).unwrap();
    // A read-only tmpfs in a mount namespace of its own (root is not stopped by modes).
    let script = format!(
        "mount -t tmpfs -o ro,size=64k tmpfs {ro} && exec {exe} --basepower --duration 30 --baseline {ro}/b.json",
        ro = ro.display()
    );
    let mut c = Command::new("unshare");
    c.args(["-m", "sh", "-c", &script])
        .env("JOULERUN_SYSFS_ROOT", &hw)
        .env("XDG_STATE_HOME", t.path().join("state"))
        .stdin(Stdio::null());
    let o = output_within(c, 10);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("read-only file system"),
        "{}",
        stderr(&o)
    );
    assert!(
        !stderr(&o).contains("measuring idle power"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_symlinked_baseline_is_followed_and_the_link_kept() {
    let t = tempfile::tempdir().unwrap();
    let real = t.path().join("real.json");
    let link = t.path().join("link.json");
    std::os::unix::fs::symlink("real.json", &link).unwrap();
    let mut c = bin(t.path());
    c.args([
        "--basepower",
        "--force",
        "--duration",
        "1",
        "-i",
        "50",
        "--baseline",
        link.to_str().unwrap(),
    ]);
    let o = output_within(c, 20);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&real).unwrap()).unwrap();
    assert_eq!(v["schema_version"], 1);
    assert_eq!(names_in(t.path()), vec!["hw", "link.json", "real.json"]);
}

// ---------------------------------------------------------------------------------------
// 4. No output lost, mixed or torn
// ---------------------------------------------------------------------------------------

#[test]
fn two_outputs_in_one_place_are_a_usage_error() {
    let t = tempfile::tempdir().unwrap();
    let x = t.path().join("x");
    let xs = x.to_str().unwrap();
    let dotted = format!("{}/./x", t.path().display());
    for args in [
        vec!["--json", xs, "--csv", xs],
        vec!["-o", xs, "--json", &dotted],
        vec!["--json", "-", "--csv", "-"],
        vec!["--json", "/dev/stdout", "--csv", "-"],
        vec!["--csv", "/dev/stderr"],
    ] {
        let mut c = bin(t.path());
        c.args(&args).args(["--", "true"]);
        let o = output_within(c, 10);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("would both write to"), "{}", stderr(&o));
        assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
    }
    assert!(!x.exists());
}

#[test]
fn a_failure_before_the_command_runs_leaves_earlier_outputs_untouched() {
    let t = tempfile::tempdir().unwrap();
    let (j, c_, r) = (
        t.path().join("a.json"),
        t.path().join("a.csv"),
        t.path().join("a.txt"),
    );
    for f in [&j, &c_, &r] {
        std::fs::write(f, "previous good content").unwrap();
    }
    let corrupt = t.path().join("bad-baseline.json");
    std::fs::write(&corrupt, "{ not json").unwrap();
    let outs = [
        "--json",
        j.to_str().unwrap(),
        "--csv",
        c_.to_str().unwrap(),
        "-o",
        r.to_str().unwrap(),
    ];
    let cases: Vec<(Vec<&str>, i32)> = vec![
        (vec!["--", "joulerun-no-such-command"], 127),
        (
            vec!["--baseline", corrupt.to_str().unwrap(), "--", "true"],
            125,
        ),
        (vec!["--", "/etc"], 126),
    ];
    for (args, status) in cases {
        let mut c = bin(t.path());
        c.args(outs).args(&args);
        let o = output_within(c, 10);
        assert_eq!(o.status.code(), Some(status), "{args:?}: {}", stderr(&o));
        for f in [&j, &c_, &r] {
            assert_eq!(
                std::fs::read_to_string(f).unwrap(),
                "previous good content",
                "{args:?}: {f:?}"
            );
        }
    }
    // One output whose directory does not exist: the others are untouched too.
    let mut c = bin(t.path());
    c.args([
        "--csv",
        c_.to_str().unwrap(),
        "--json",
        "/nonexistent-dir/x.json",
        "--",
        "true",
    ]);
    let o = output_within(c, 10);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(&c_).unwrap(),
        "previous good content"
    );
    assert_eq!(
        names_in(t.path()),
        ["a.csv", "a.json", "a.txt", "bad-baseline.json", "hw"]
    );
}

/// Every line of a CSV timeline is a whole row.
fn assert_whole_rows(text: &str) {
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "torn last line: {text:?}"
    );
    for line in text.lines() {
        assert_eq!(line.split(',').count(), 13, "torn row {line:?}");
    }
}

#[test]
fn a_full_disk_mid_run_ends_the_csv_on_a_whole_row_and_changes_the_exit_status() {
    let t = tempfile::tempdir().unwrap();
    let mnt = t.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let exe = env!("CARGO_BIN_EXE_joulerun");
    let hw = t.path().join("hw");
    std::fs::create_dir(&hw).unwrap();
    for (cmd, status) in [("true", 125), ("exit 3", 3)] {
        // 8 KiB of tmpfs: full after about a hundred 1 ms ticks.
        let script = format!(
            "mount -t tmpfs -o size=8k tmpfs {m} && {exe} -i 1 --csv {m}/t.csv -- sh -c 'sleep 1; {cmd}'; s=$?; cp {m}/t.csv {out}; exit $s",
            m = mnt.display(),
            out = t.path().join("copy.csv").display()
        );
        let mut c = Command::new("unshare");
        c.args(["-m", "sh", "-c", &script])
            .env("JOULERUN_SYSFS_ROOT", &hw)
            .env("XDG_STATE_HOME", t.path().join("state"))
            .stdin(Stdio::null());
        let o = output_within(c, 30);
        assert_eq!(o.status.code(), Some(status), "{}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains("writing the CSV timeline"), "{e}");
        assert!(e.contains("No space left on device"), "{e}");
        assert!(e.contains("Energy of"), "the report is still printed: {e}");
        let text = std::fs::read_to_string(t.path().join("copy.csv")).unwrap();
        assert!(text.lines().count() > 10, "{text}");
        assert_whole_rows(&text);
    }
}

#[test]
fn a_file_size_limit_cuts_the_csv_back_to_its_last_whole_row() {
    let t = tempfile::tempdir().unwrap();
    let csv = t.path().join("t.csv");
    let mut c = bin(t.path());
    c.args([
        "-i",
        "1",
        "--csv",
        csv.to_str().unwrap(),
        "--",
        "sleep",
        "0.5",
    ]);
    // SAFETY: setrlimit in the child before exec; async-signal-safe.
    unsafe {
        c.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 3000,
                rlim_max: 3000,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
            Ok(())
        });
    }
    let o = output_within(c, 20);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("writing the CSV timeline"),
        "{}",
        stderr(&o)
    );
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.len() <= 3000 && text.len() > 1000, "{}", text.len());
    assert_whole_rows(&text);
}

#[test]
fn a_kill_mid_run_never_leaves_a_torn_row() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("hw");
    let f = joulerun_testkit::fakehw::FakePowercap::intel_server_2s(&root).unwrap();
    let _ = f;
    joulerun_testkit::fakehw::write_topology(&root, &[0, 0, 1, 1]).unwrap();
    for i in 0..3 {
        let csv = t.path().join(format!("t{i}.csv"));
        let mut c = common::joulerun(&root, &t.path().join("state"));
        c.args([
            "-i",
            "1",
            "--csv",
            csv.to_str().unwrap(),
            "--",
            "sleep",
            "10",
        ]);
        let r = Running::spawn(c);
        std::thread::sleep(Duration::from_millis(300 + 170 * i));
        r.signal(Signal::SIGKILL);
        let _ = r.finish_within(5);
        let text = std::fs::read_to_string(&csv).unwrap();
        assert!(text.lines().count() > 5, "{text}");
        assert_whole_rows(&text);
    }
}

#[test]
fn json_to_a_closed_stdout_is_an_error_not_a_silent_loss() {
    let t = tempfile::tempdir().unwrap();
    let mut c = bin(t.path());
    c.args(["--json", "-", "--", "true"]);
    // SAFETY: close(1) in the child before exec.
    unsafe {
        c.pre_exec(|| {
            libc::close(1);
            Ok(())
        });
    }
    let o = output_within(c, 10);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("standard output is closed"),
        "{}",
        stderr(&o)
    );
}

// ---------------------------------------------------------------------------------------
// 5. Every terminating signal: forwarded, reported; the command dies with joulerun
// ---------------------------------------------------------------------------------------

#[test]
fn usr1_usr2_and_alrm_are_forwarded_and_the_report_printed() {
    for sig in [Signal::SIGUSR1, Signal::SIGUSR2, Signal::SIGALRM] {
        let t = tempfile::tempdir().unwrap();
        let ready = t.path().join("ready");
        let script = format!("touch {}; exec sleep 30", ready.display());
        let mut c = bin(t.path());
        c.args(["--", "sh", "-c", &script]);
        let r = Running::spawn(c);
        let start = Instant::now();
        while !ready.exists() {
            assert!(start.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(50));
        r.signal(sig);
        let o = r.finish_within(5);
        assert_eq!(
            o.status.code(),
            Some(128 + sig as i32),
            "{sig}: {}",
            stderr(&o)
        );
        assert!(stderr(&o).contains("Energy of"), "{}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!("killed by signal {}", sig as i32)),
            "{}",
            stderr(&o)
        );
    }
    // A command that handles the signal decides: here it exits 5.
    let t = tempfile::tempdir().unwrap();
    let ready = t.path().join("ready");
    let script = format!(
        "trap 'exit 5' USR1; touch {}; while :; do sleep 0.02; done",
        ready.display()
    );
    let mut c = bin(t.path());
    c.args(["--", "sh", "-c", &script]);
    let r = Running::spawn(c);
    while !ready.exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
    r.signal(Signal::SIGUSR1);
    let o = r.finish_within(5);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
}

fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[test]
#[cfg_attr(
    not(probe_cgroup2),
    ignore = "needs a writable cgroup v2 (probe_cgroup2): mount cgroup2 and run as root or in a delegated cgroup, as CI does"
)]
fn the_command_dies_with_joulerun_and_stale_cgroups_are_removed_later() {
    let t = tempfile::tempdir().unwrap();
    let pidfile = t.path().join("pid");
    let script = format!("echo $$ > {}; exec sleep 60", pidfile.display());
    let mut c = bin(t.path());
    c.args(["--", "sh", "-c", &script]);
    let r = Running::spawn(c);
    let start = Instant::now();
    let pid: i32 = loop {
        if let Ok(s) = std::fs::read_to_string(&pidfile)
            && let Ok(p) = s.trim().parse()
        {
            break p;
        }
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(10));
    };
    r.signal(Signal::SIGKILL);
    let _ = r.finish_within(5);
    let start = Instant::now();
    while !process_gone(pid) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the command outlived joulerun"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // A cgroup left by a joulerun that died (its PID is not a joulerun any more) is removed
    // by the next joulerun that makes one.
    let Some(own) = joulerun::procs::own_cgroup_dir() else {
        panic!("no cgroup v2 here: this test needs one (the CI machine has it)");
    };
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let stale = own.join(format!("joulerun-{dead_pid}-0"));
    std::fs::create_dir(&stale).unwrap();
    let mut c = bin(t.path());
    c.args(["--track", "cgroup", "--", "true"]);
    let o = output_within(c, 10);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let gone = !stale.exists();
    let _ = std::fs::remove_dir(&stale);
    assert!(gone, "stale cgroup {stale:?} was not removed");
}

// ---------------------------------------------------------------------------------------
// 6. Unreadable default locations; the "also fix" list
// ---------------------------------------------------------------------------------------

#[test]
#[cfg_attr(
    not(probe_root),
    ignore = "needs root (probe_root): it runs joulerun as another user; run the tests as root, as CI does"
)]
#[cfg_attr(
    all(probe_root, not(probe_run_as_nobody)),
    ignore = "runs joulerun as uid 65534, which cannot reach the temporary or target directory here (probe_run_as_nobody): chmod o+x the directories above them"
)]
fn an_unreadable_home_means_no_baseline_with_a_note() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("home");
    std::fs::create_dir_all(home.join(".local/state/joulerun")).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs joulerun as another user, which needs root (CI runs as root)"
    );
    let mut c = Command::new(env!("CARGO_BIN_EXE_joulerun"));
    c.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", &home)
        .env("JOULERUN_SYSFS_ROOT", "/nonexistent-root-so-estimate")
        .args(["--source", "estimate", "--", "true"])
        .uid(65534)
        .gid(65534);
    // The sysfs root must exist; use an empty directory everyone can read.
    let hw = t.path().join("hw");
    std::fs::create_dir(&hw).unwrap();
    c.env("JOULERUN_SYSFS_ROOT", &hw);
    let o = output_within(c, 10);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the default baseline") && stderr(&o).contains("cannot be read"),
        "{}",
        stderr(&o)
    );
    // An explicit --baseline that cannot be read stays an error.
    let mut c = Command::new(env!("CARGO_BIN_EXE_joulerun"));
    c.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("JOULERUN_SYSFS_ROOT", &hw)
        .args(["--baseline"])
        .arg(home.join(".local/state/joulerun/baseline.json"))
        .args(["--", "true"])
        .uid(65534)
        .gid(65534);
    let o = output_within(c, 10);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
}

#[test]
fn options_that_would_be_ignored_are_usage_errors() {
    let t = tempfile::tempdir().unwrap();
    for (args, needle) in [
        (
            vec!["--basepower", "--", "sleep", "1"],
            "runs no command: remove 'sleep 1'",
        ),
        (
            vec!["--no-baseline", "--basepower"],
            "--no-baseline cannot be used with --basepower",
        ),
        (
            vec!["-a", "--track", "proc"],
            "--track has no effect with -a",
        ),
        (
            vec!["-a", "--probe-budget", "1"],
            "--probe-budget has no effect with -a",
        ),
        (vec!["--basepower", "--probe-budget", "1"], "--probe-budget"),
    ] {
        let mut c = bin(t.path());
        c.args(&args);
        let o = output_within(c, 10);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn environment_errors_name_the_variable_and_leave_list_alone() {
    let t = tempfile::tempdir().unwrap();
    let mut c = bin(t.path());
    c.env("JOULERUN_SOURCE", "bogus").args(["--", "true"]);
    let o = output_within(c, 10);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("invalid source 'bogus' from JOULERUN_SOURCE"),
        "{}",
        stderr(&o)
    );
    let mut c = bin(t.path());
    c.env("JOULERUN_PRICE", "cheap").args(["--", "true"]);
    let o = output_within(c, 10);
    assert!(stderr(&o).contains("from JOULERUN_PRICE"), "{}", stderr(&o));
    let mut c = bin(t.path());
    c.env("JOULERUN_SOURCE", "bogus").arg("list");
    let o = output_within(c, 10);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // JOULERUN_BASELINE and --baseline follow one rule: a missing file is an error.
    for how in ["env", "flag"] {
        let mut c = bin(t.path());
        let missing = t.path().join("missing.json");
        if how == "env" {
            c.env("JOULERUN_BASELINE", &missing);
        } else {
            c.arg("--baseline").arg(&missing);
        }
        c.args(["--", "true"]);
        let o = output_within(c, 10);
        assert_eq!(o.status.code(), Some(2), "{how}: {}", stderr(&o));
        assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    }
}

#[test]
fn echoed_text_cannot_drive_the_terminal_and_long_commands_stay_readable() {
    let t = tempfile::tempdir().unwrap();
    let mut c = bin(t.path());
    c.args([
        "--",
        "true",
        "\x1b[2J\x1b]0;owned\x07",
        "abc\u{202e}txt.exe",
    ]);
    let o = output_within(c, 10);
    let e = stderr(&o);
    assert!(
        !e.contains('\x1b') && !e.contains('\u{202e}') && !e.contains('\x07'),
        "{e:?}"
    );
    assert!(e.contains("\\x1b[2J") && e.contains("\\u{202e}"), "{e}");
    let long = "x".repeat(5000);
    let mut c = bin(t.path());
    c.args(["--", "true", "first", &long, "last"]);
    let o = output_within(c, 10);
    let e = stderr(&o);
    let title = e.lines().find(|l| l.contains("Energy of")).unwrap();
    assert!(title.chars().count() < 200, "{title}");
    assert!(title.contains("true first") && title.contains("last") && title.contains(" … "));
    // A command name with control characters, in an error.
    let mut c = bin(t.path());
    c.args(["--", "no-such-\x1b[31m-command"]);
    let o = output_within(c, 10);
    assert_eq!(o.status.code(), Some(127));
    assert!(!stderr(&o).contains('\x1b'), "{:?}", stderr(&o));
}

#[test]
fn no_negative_zero_in_the_report() {
    let t = tempfile::tempdir().unwrap();
    let mut c = bin(t.path());
    c.args(["--price=-0", "--", "true"]);
    let o = output_within(c, 10);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stderr(&o).contains("-0"), "{}", stderr(&o));
}

#[test]
fn a_missing_interpreter_is_named() {
    let t = tempfile::tempdir().unwrap();
    let script = t.path().join("train.py");
    std::fs::write(&script, "#!/nonexistent/bin/python9 -u\nprint(1)\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut c = bin(t.path());
    c.arg("--").arg(&script);
    let o = output_within(c, 10);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("interpreter '/nonexistent/bin/python9'"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
}

#[test]
fn attaching_to_a_zombie_or_a_missing_pid_is_one_rule() {
    let t = tempfile::tempdir().unwrap();
    // A zombie: a child of this test that exited and is not reaped yet.
    let mut z = Command::new("true").spawn().unwrap();
    let zpid = z.id();
    let start = Instant::now();
    while !process_gone(zpid as i32) {
        assert!(start.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(10));
    }
    for pid in [zpid.to_string(), "999999999".to_string()] {
        let mut c = bin(t.path());
        c.args(["-p", &pid]);
        let o = output_within(c, 10);
        assert_eq!(o.status.code(), Some(2), "{pid}: {}", stderr(&o));
    }
    z.wait().unwrap();
}

#[test]
fn a_hostile_baseline_is_a_clear_error() {
    let t = tempfile::tempdir().unwrap();
    let good = serde_json::json!({
        "schema_version": 1, "taken_at": "2026-01-01T00:00:00Z", "taken_at_unix_s": 0,
        "hostname": "h", "kernel": "k", "cpu_model": "c", "interface": "estimate",
        "duration_s": 10.0, "interval_ms": 100, "cpu_utilisation": 0.01,
        "cpu_utilisation_max": 0.02,
        "domains": [{"name": "cpu (estimated)", "kind": "estimate", "socket": null,
                     "mean_w": 5.0, "stddev_w": 0.1, "min_w": 4.0, "max_w": 6.0, "samples": 100}]
    });
    let cases: Vec<(&str, serde_json::Value)> = vec![
        ("mean_w", {
            let mut v = good.clone();
            v["domains"][0]["mean_w"] = 1e300.into();
            v
        }),
        ("mean must lie between", {
            let mut v = good.clone();
            v["domains"][0]["min_w"] = 7.0.into();
            v
        }),
        ("duration_s", {
            let mut v = good.clone();
            v["duration_s"] = (-1.0).into();
            v
        }),
        ("cpu_utilisation", {
            let mut v = good.clone();
            v["cpu_utilisation"] = 7.5.into();
            v
        }),
        ("listed twice", {
            let mut v = good.clone();
            let d = v["domains"][0].clone();
            v["domains"].as_array_mut().unwrap().push(d);
            v
        }),
        ("control characters", {
            let mut v = good.clone();
            v["taken_at"] = "2026\u{1b}[2J".into();
            v
        }),
    ];
    for (needle, v) in cases {
        let f = t.path().join("b.json");
        std::fs::write(&f, v.to_string()).unwrap();
        let mut c = bin(t.path());
        c.arg("--baseline").arg(&f).args(["--", "true"]);
        let o = output_within(c, 10);
        assert_eq!(o.status.code(), Some(125), "{needle}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(
            e.contains("is corrupt") && e.contains(needle),
            "{needle}: {e}"
        );
        assert!(!e.contains('\x1b'), "{e:?}");
    }
}
