//! End-to-end tests of the built binary: exit statuses, signals, passthrough of the
//! terminal, outputs. They run against an empty hardware root, so joulerun uses the
//! estimate on any machine (a machine with counters does not change the outcome).

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};

mod common;
use nix::unistd::Pid;

fn bin() -> Command {
    let root = std::env::temp_dir().join("joulerun-empty-root");
    std::fs::create_dir_all(&root).unwrap();
    // No baseline from the developer's own state directory.
    common::joulerun(&root, &std::env::temp_dir().join("joulerun-no-state"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn passes_exit_status_and_prints_report_to_stderr() {
    let o = run(&["--", "false"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("Energy of 'false'"), "{e}");
    assert!(e.contains("exit status"), "{e}");
    assert!(o.stdout.is_empty());

    let o = run(&["sh", "-c", "exit 3"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains("exit status        3"),
        "{}",
        stderr(&o)
    );

    let o = run(&["true"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(!stderr(&o).contains("exit status"));
}

#[test]
fn killed_command_gives_128_plus_signal() {
    let o = run(&["--", "sh", "-c", "kill -KILL $$"]);
    assert_eq!(o.status.code(), Some(137));
    assert!(stderr(&o).contains("killed by signal 9"), "{}", stderr(&o));
}

#[test]
fn missing_and_non_executable_commands() {
    let o = run(&["--", "joulerun-no-such-command-xyz"]);
    assert_eq!(o.status.code(), Some(127));
    let e = stderr(&o);
    assert!(
        e.contains("command not found: 'joulerun-no-such-command-xyz'"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "one clear message: {e}");

    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("script.sh");
    std::fs::write(&f, "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = run(&["--", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(126));
    assert!(stderr(&o).contains("permission denied"), "{}", stderr(&o));
    assert!(stderr(&o).contains("chmod +x"), "{}", stderr(&o));

    let o = run(&["--", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
}

#[test]
fn terminal_passes_through_untouched() {
    let mut child = bin()
        .args(["--", "sh", "-c", "cat; echo out; echo err >&2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "from stdin\nout\n");
    assert!(stderr(&o).starts_with("err\n"), "{}", stderr(&o));
}

#[test]
fn command_starts_with_no_blocked_or_ignored_signals() {
    let o = run(&["--", "grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("SigBlk:\t0000000000000000"), "{out}");
    // No standard signal (1-31) is ignored: SIGPIPE, which Rust programs ignore, is back
    // to its default. (Real-time signals 32+ belong to the C library and the environment.)
    let ign = out.lines().find(|l| l.starts_with("SigIgn:")).unwrap();
    let mask = u64::from_str_radix(ign.trim_start_matches("SigIgn:").trim(), 16).unwrap();
    assert_eq!(mask & 0x7fff_ffff, 0, "{out}");
}

#[test]
fn usage_errors_are_one_clear_line_with_status_2() {
    for (args, needle) in [
        (vec!["-i", "0", "true"], "invalid interval 0 ms"),
        (vec!["--price", "cheap", "true"], "invalid price 'cheap'"),
        (vec!["-e", "gpu7", "true"], "unknown domain 'gpu7'"),
        (vec!["--cpu-watts", "5", "true"], "invalid --cpu-watts"),
        (vec![], "no command given"),
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains(needle), "{args:?}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "{args:?}: {e}");
    }
    let o = run(&["--no-such-flag", "true"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn explicit_unavailable_source_fails_before_starting_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let o = run(&[
        "--source",
        "powercap",
        "--",
        "touch",
        marker.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot use --source powercap"));
    assert!(!marker.exists(), "the command must not have run");
}

/// Wait until the file exists (the child has started and set its traps).
fn wait_for(path: &std::path::Path) {
    let t = Instant::now();
    while !path.exists() {
        assert!(t.elapsed() < Duration::from_secs(10), "child never started");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sigterm_to_joulerun_is_forwarded_and_the_report_still_printed() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let script = format!(
        "trap 'exit 7' TERM; touch {}; while :; do sleep 0.02; done",
        ready.display()
    );
    let child = bin()
        .args(["--", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&ready);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert!(stderr(&o).contains("Energy of"), "{}", stderr(&o));

    // A command that does not handle SIGTERM dies of it: 128 + 15.
    let mut child = bin()
        .args(["--", "sleep", "30"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(143), "{err}");
    assert!(err.contains("killed by signal 15"), "{err}");
}

/// A shell script that counts the SIGINTs it receives and exits with 10 + that count.
fn sigint_counter(ready: &std::path::Path) -> String {
    format!(
        "n=0; trap 'n=$((n+1))' INT; touch {}; i=0; while [ $i -lt 40 ]; do sleep 0.025; i=$((i+1)); done; exit $((10+n))",
        ready.display()
    )
}

#[test]
fn ctrl_c_at_a_terminal_reaches_the_command_once_and_joulerun_survives() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two fds into the given integers.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both fds were just opened and are owned here.
    let (master, slave) = unsafe {
        use std::os::fd::FromRawFd;
        (
            std::fs::File::from_raw_fd(master),
            std::os::fd::OwnedFd::from_raw_fd(slave),
        )
    };
    let mut cmd = bin();
    cmd.args(["--", "sh", "-c", &sigint_counter(&ready)])
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setsid and ioctl are async-signal-safe. joulerun becomes the leader of a
    // session whose controlling terminal is the pty, in its foreground process group.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    drop(slave);
    wait_for(&ready);
    // Type Ctrl-C: the terminal driver sends SIGINT to the foreground process group.
    use std::io::Write;
    (&master).write_all(&[0x03]).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(11),
        "exactly one SIGINT: {}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("Energy of"), "{}", stderr(&o));
}

#[test]
fn sigint_sent_to_joulerun_alone_is_forwarded_once() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let child = bin()
        .args(["--", "sh", "-c", &sigint_counter(&ready)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&ready);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(11), "{}", stderr(&o));
    assert!(stderr(&o).contains("Energy of"), "{}", stderr(&o));
}

#[test]
fn estimate_is_labelled_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("t.csv");
    let o = run(&[
        "-i",
        "20",
        "--json",
        "-",
        "--csv",
        csv.to_str().unwrap(),
        "--",
        "sleep",
        "0.2",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("ESTIMATED"), "{e}");
    assert!(e.contains("total (estimated)"), "{e}");
    assert!(e.contains("(estimated)"), "{e}");

    let j: serde_json::Value = common::json(&o);
    assert_eq!(j["schema_version"], 1);
    assert_eq!(j["estimated"], true);
    assert_eq!(j["total"]["estimated"], true);
    assert_eq!(j["domains"][0]["estimated"], true);
    assert_eq!(j["sources"][0], "estimate");
    let total = j["total"]["energy_j"].as_f64().unwrap();
    let el = j["elapsed_s"].as_f64().unwrap();
    assert!(el >= 0.2, "{el}");
    // Between the idle and full-load power of the default model for this machine.
    let n = std::thread::available_parallelism().unwrap().get() as f64;
    assert!(total >= 0.74 * n * el * 0.95, "{total} J in {el} s");
    assert!(total <= 3.5 * n * el * 1.05, "{total} J in {el} s");
    assert!((j["total"]["kwh"].as_f64().unwrap() - total / 3.6e6).abs() < 1e-12);
    let cost = j["cost"]["amount"].as_f64().unwrap();
    assert!((cost - total / 3.6e6 * 0.30).abs() < 1e-12);
    assert_eq!(j["cost"]["currency"], "EUR");

    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        // Schema 2 (issue 8): `device` and `start_s` before `cumulative_j`; `run` added
        // last (issue 11).
        "schema_version,elapsed_s,domain,kind,socket,source,estimated,energy_delta_j,power_w,device,start_s,cumulative_j,run"
    );
    let rows: Vec<&str> = lines.collect();
    assert!(rows.len() >= 5, "{text}");
    for r in &rows {
        assert!(
            r.contains(",cpu (estimated),estimate,,estimate,true,"),
            "{r}"
        );
    }
    // `cumulative_j`, the column before `run`.
    let last: f64 = rows
        .last()
        .unwrap()
        .rsplit(',')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (last - total).abs() < 1e-3 * total.max(1.0),
        "{last} vs {total}"
    );
}

#[test]
fn price_and_currency_from_flags_and_environment() {
    let o = bin()
        .args(["--json", "-", "--", "true"])
        .env("JOULERUN_PRICE", "0.5")
        .env("JOULERUN_CURRENCY", "USD")
        .output()
        .unwrap();
    let j: serde_json::Value = common::json(&o);
    assert_eq!(j["cost"]["price_per_kwh"], 0.5);
    assert_eq!(j["cost"]["currency"], "USD");
    // The flag wins over the environment.
    let o = bin()
        .args(["--price", "0.1", "--json", "-", "--", "true"])
        .env("JOULERUN_PRICE", "0.5")
        .output()
        .unwrap();
    let j: serde_json::Value = common::json(&o);
    assert_eq!(j["cost"]["price_per_kwh"], 0.1);
    assert!(stderr(&o).contains("at 0.100 EUR/kWh"), "{}", stderr(&o));
}

#[test]
fn report_to_file_with_o() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("report.txt");
    let o = run(&["-o", f.to_str().unwrap(), "--", "true"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(!stderr(&o).contains("Energy of"));
    assert!(
        std::fs::read_to_string(&f)
            .unwrap()
            .contains("Energy of 'true'")
    );
    let o = run(&["-o", "/nonexistent-dir/r.txt", "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("cannot write the report to '/nonexistent-dir/r.txt'"));
}

#[test]
fn list_on_a_machine_without_counters() {
    let o = run(&["list"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for needle in ["perf", "powercap", "msr", "estimate", "would use: estimate"] {
        assert!(out.contains(needle), "{needle}: {out}");
    }
    let o = run(&["list", "--json"]);
    let j: serde_json::Value = common::json(&o);
    assert_eq!(j["would_use"], "estimate");
    assert_eq!(j["would_use_is_estimate"], true);
    assert_eq!(j["interfaces"].as_array().unwrap().len(), 4);
}
