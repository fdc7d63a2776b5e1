//! End-to-end attribution and baseline tests of the built binary with real processes
//! and fake counters. They measure the whole machine's CPU time, so they run one at a
//! time (a lock) and expect a machine that is otherwise mostly idle, as CI is.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{OnePackage as Machine, burn, json, ok_json, serial};

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn background_burner(s: f64) -> Child {
    Command::new("sh")
        .args(["-c", &burn(s)])
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
#[cfg_attr(
    not(probe_cgroup2),
    ignore = "needs a writable cgroup v2 (probe_cgroup2): mount cgroup2 and run as root or in a delegated cgroup, as CI does"
)]
fn a_cpu_burning_command_gets_nearly_all_the_dynamic_energy() {
    let _l = serial();
    let m = Machine::new();
    let _d = m.drive(20.0);
    // The claim is about an otherwise idle machine: when other processes were busy beside
    // the command (a build next to the tests), run it again, and fail rather than pass
    // when the machine is never quiet enough to check it.
    const TRIES: u32 = 3;
    for attempt in 1..=TRIES {
        let o = m
            .bin()
            .args(["--json", "-", "--", "sh", "-c", &burn(1.0)])
            .output()
            .unwrap();
        let j = ok_json(&o);
        let a = &j["attribution"];
        assert_eq!(a["method"], "cgroup");
        assert_eq!(a["baseline_used"], false);
        let share = f(&a["share"]);
        let (tree, busy) = (f(&a["tree_cpu_s"]), f(&a["busy_cpu_s"]));
        assert!(tree > 0.5, "{a}");
        // The share is the command's CPU time over all busy time (per tick, clamped).
        assert!(
            (share - tree / busy).abs() < 0.1,
            "share {share}, tree {tree}, busy {busy}"
        );
        // Without a baseline all energy is dynamic.
        assert!((f(&a["total"]["dynamic_j"]) - f(&j["total"]["energy_j"])).abs() < 1e-6);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains("no baseline was calibrated"), "{e}");
        assert!(e.contains("joulerun --basepower"), "{e}");
        // On an otherwise idle machine that is nearly all of it.
        let others = busy - tree;
        if others <= 0.25 * tree {
            assert!(share > 0.8, "share {share}: {a}");
            return;
        }
        assert!(
            attempt < TRIES,
            "cannot check the idle-machine claim: other processes used {others:.2} s CPU \
             beside the command's {tree:.2} s in each of {TRIES} runs; run this test alone on a \
             quiet machine"
        );
        eprintln!(
            "run {attempt}: other processes used {others:.2} s CPU beside the command's \
             {tree:.2} s; trying again"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
#[cfg_attr(
    not(probe_cgroup2),
    ignore = "needs a writable cgroup v2 (probe_cgroup2): mount cgroup2 and run as root or in a delegated cgroup, as CI does"
)]
fn a_sleeping_command_gets_nearly_none_while_another_process_burns() {
    let _l = serial();
    let m = Machine::new();
    let _d = m.drive(20.0);
    for track in ["cgroup", "proc"] {
        let mut bg = background_burner(1.5);
        let o = m
            .bin()
            .args(["--track", track, "--json", "-", "--", "sleep", "1"])
            .output()
            .unwrap();
        let _ = bg.wait();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let a = &json(&o)["attribution"];
        assert_eq!(a["method"], track);
        let share = f(&a["share"]);
        assert!(share < 0.05, "{track}: share {share}: {a}");
        assert!(
            f(&a["busy_cpu_s"]) > 0.8,
            "{track}: the burner was seen: {a}"
        );
    }
}

#[test]
#[cfg_attr(
    not(probe_usr_bin_time),
    ignore = "needs GNU /usr/bin/time (probe_usr_bin_time): apt-get install time (.ci/run installs it)"
)]
#[cfg_attr(
    all(probe_usr_bin_time, not(probe_cgroup2)),
    ignore = "needs a writable cgroup v2 (probe_cgroup2): mount cgroup2 and run as root or in a delegated cgroup, as CI does"
)]
fn two_hundred_short_lived_children_match_usr_bin_time_within_5_percent() {
    let _l = serial();
    let m = Machine::new();
    let _d = m.drive(20.0);
    // Each child does a little work and is gone within milliseconds.
    let script =
        "for i in $(seq 200); do sh -c 'i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done'; done";
    for track in ["cgroup", "proc"] {
        let dir = tempfile::tempdir().unwrap();
        let times = dir.path().join("times");
        let o = m
            .bin()
            .args([
                "--track",
                track,
                "--json",
                "-",
                "--",
                "/usr/bin/time",
                "-f",
                "%U %S",
                "-o",
            ])
            .arg(&times)
            .args(["sh", "-c", script])
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let a = &json(&o)["attribution"];
        let text = std::fs::read_to_string(&times).unwrap();
        let v: Vec<f64> = text
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        let truth = v[0] + v[1];
        let seen = f(&a["tree_cpu_s"]);
        assert!(truth > 0.3, "the workload is too small to compare: {truth}");
        // /usr/bin/time's own few milliseconds are in the tree too.
        assert!(
            (seen - truth).abs() <= 0.05 * truth + 0.02,
            "{track}: joulerun saw {seen} s, /usr/bin/time {truth} s"
        );
    }
}

#[test]
#[cfg_attr(
    not(probe_usr_bin_time),
    ignore = "needs /usr/bin/time (probe_usr_bin_time): apt-get install time (.ci/run does)"
)]
#[cfg_attr(
    not(probe_cgroup2),
    ignore = "needs a writable cgroup v2 (probe_cgroup2): mount cgroup2 and run as root or in a delegated cgroup, as CI does"
)]
fn two_thousand_children_reaped_late_get_the_same_share_with_both_methods() {
    let _l = serial();
    let m = Machine::new();
    let _d = m.drive(20.0);
    // Background children run for well under a clock tick each and stay zombies
    // until the shell reaps them all at `wait`, at the end.
    let script = "for i in $(seq 2000); do /bin/true & done; wait";
    // (share, tree, busy, others' CPU) per method.
    let mut seen = Vec::new();
    for track in ["cgroup", "proc"] {
        let dir = tempfile::tempdir().unwrap();
        let times = dir.path().join("times");
        let o = m
            .bin()
            .args([
                "--track",
                track,
                "--json",
                "-",
                "--",
                "/usr/bin/time",
                "-f",
                "%U %S",
                "-o",
            ])
            .arg(&times)
            .args(["sh", "-c", script])
            .output()
            .unwrap();
        let j = ok_json(&o);
        let a = &j["attribution"];
        assert_eq!(a["method"], track);
        let text = std::fs::read_to_string(&times).unwrap();
        let v: Vec<f64> = text
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        let truth = v[0] + v[1];
        let (share, tree, busy) = (f(&a["share"]), f(&a["tree_cpu_s"]), f(&a["busy_cpu_s"]));
        let clamped: f64 = a["per_socket"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| f(&s["clamped_cpu_s"]))
            .sum();
        let others = busy - tree - f(&a["overhead_cpu_s"]);
        eprintln!(
            "{track}: tree {tree:.3} s (/usr/bin/time {truth:.3} s), busy {busy:.3} s, \
             share {share:.3}, clamped {clamped:.3} s, others {others:.3} s"
        );
        assert!(truth > 0.3, "the workload is too small to compare: {truth}");
        // The tree's CPU time is the kernel's account of the command, with both methods.
        assert!(
            (tree - truth).abs() <= 0.05 * truth + 0.02,
            "{track}: joulerun saw {tree} s, /usr/bin/time {truth} s"
        );
        // The share follows the CPU time: tree time is attributed in the ticks it was
        // used, not cut at the end. (With /proc, 60-87% of the tree's time used to be
        // clamped away in the tick where the shell reaped its zombies: a share of
        // 19-32% against 96%.)
        assert!(
            clamped <= 0.15 * tree,
            "{track}: {clamped} s of {tree} s clamped: {a}"
        );
        assert!(
            (share - tree / busy).abs() < 0.1,
            "{track}: share {share}, tree {tree}, busy {busy}"
        );
        // Clamping worth more than 5% of the tree's time is reported, with its size.
        let w = j["warnings"].to_string();
        let material = clamped > 0.05 * tree && clamped > 0.02;
        assert_eq!(w.contains("was given no energy"), material, "{w}");
        if material {
            assert!(
                w.contains(&format!("{clamped:.2} s of the command's {tree:.2} s")),
                "{w}"
            );
        }
        seen.push((share, tree, others));
    }
    // Both methods give the command the same share of the same machine. Other processes'
    // CPU time beside it lowers each run's share by up to others / (command + others):
    // the bound widens by what was measured, so it holds on a busy machine too.
    let (cg, pr) = (seen[0], seen[1]);
    let noise = |x: (f64, f64, f64)| x.2 / (x.1 + x.2).max(1e-9);
    {
        let bound = 0.1 + noise(cg) + noise(pr);
        assert!(
            (pr.0 - cg.0).abs() <= bound,
            "share with /proc {} vs with a cgroup {} (bound {bound:.3}: others used {:.2} s and {:.2} s)",
            pr.0,
            cg.0,
            cg.2,
            pr.2
        );
    }
}

/// Issue 14: following 1,000 sleeping processes through `/proc` costs joulerun so little
/// that a burner among them keeps at least 90% of the dynamic energy (its CPU time
/// over all busy time: joulerun's own time is part of the busy time). Before issue 14 it
/// got 89% on a quiet machine, with joulerun at 10% of a core (docs/performance.md, (f)).
#[test]
fn a_burner_among_a_thousand_sleepers_keeps_its_share_with_proc_tracking() {
    let _l = serial();
    let m = Machine::new();
    let _d = m.drive(20.0);
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let script = format!(
        "for i in $(seq 1000); do sleep 1000 & echo $! >> {p}; done; {}; kill $(cat {p}); wait",
        burn(2.0),
        p = pids.display()
    );
    // Other processes' CPU time beside the command lowers its share: retry when the
    // machine was busy, and fail rather than pass when it never is quiet enough.
    const TRIES: u32 = 4;
    for attempt in 1..=TRIES {
        let _ = std::fs::remove_file(&pids);
        let o = m
            .bin()
            .args(["--track", "proc", "--json", "-", "--", "sh", "-c", &script])
            .output()
            .unwrap();
        let j = ok_json(&o);
        let a = &j["attribution"];
        assert_eq!(a["method"], "proc");
        let (tree, busy, own) = (
            f(&a["tree_cpu_s"]),
            f(&a["busy_cpu_s"]),
            f(&a["overhead_cpu_s"]),
        );
        let share = f(&a["total"]["command_dynamic_j"]) / f(&a["total"]["dynamic_j"]);
        let others = busy - tree - own;
        eprintln!(
            "run {attempt}: share {share:.3} of the dynamic energy; tree {tree:.2} s, \
             joulerun {own:.3} s, others {others:.2} s"
        );
        assert!(tree > 1.5, "the burner was seen: {a}");
        if others <= 0.03 * tree {
            assert!(share >= 0.9, "share {share}: {a}");
            return;
        }
        if attempt == TRIES {
            // Never quiet: other processes' time lowers the share by up to their part of
            // the busy time; joulerun's own time still counts in full against the bound.
            assert!(
                others < tree,
                "cannot check the share: other processes used {others:.2} s CPU beside the \
                 command's {tree:.2} s in each of {TRIES} runs; run this test alone on a \
                 quieter machine"
            );
            let bound = 0.9 - others / busy;
            assert!(share >= bound, "share {share} (bound {bound:.3}): {a}");
            return;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
#[cfg_attr(
    not(probe_cgroup2),
    ignore = "needs a writable cgroup v2 (probe_cgroup2): mount cgroup2 and run as root or in a delegated cgroup, as CI does"
)]
fn a_daemonising_child_that_outlives_its_parent_is_seen_with_cgroups() {
    let _l = serial();
    let m = Machine::new();
    let _d = m.drive(20.0);
    // The child double-forks a daemon (new session) that burns, writes the CPU time it
    // used (the shell's `times`), and signals; the command waits for it, then exits.
    let dir = tempfile::tempdir().unwrap();
    let (times, done) = (dir.path().join("times"), dir.path().join("done"));
    let daemon = dir.path().join("daemon.sh");
    std::fs::write(
        &daemon,
        format!(
            "i=0; while [ $i -lt 400000 ]; do i=$((i+1)); done; times > {}; touch {}\n",
            times.display(),
            done.display()
        ),
    )
    .unwrap();
    let script = format!(
        "sh -c 'setsid sh {} >/dev/null 2>&1 &'; while [ ! -e {} ]; do sleep 0.05; done",
        daemon.display(),
        done.display()
    );
    let o = m
        .bin()
        .args([
            "--track", "cgroup", "--json", "-", "--", "sh", "-c", &script,
        ])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let a = &json(&o)["attribution"];
    // `times` prints "0m0.31s 0m0.00s" (user, system of the shell itself) first.
    let t = std::fs::read_to_string(&times).unwrap();
    let secs = |x: &str| -> f64 {
        let (m, s) = x.trim_end_matches('s').split_once('m').unwrap();
        m.parse::<f64>().unwrap() * 60.0 + s.parse::<f64>().unwrap()
    };
    let first: Vec<&str> = t.lines().next().unwrap().split_whitespace().collect();
    let daemon_cpu = secs(first[0]) + secs(first[1]);
    assert!(daemon_cpu > 0.1, "{t}");
    let tree = f(&a["tree_cpu_s"]);
    assert!(
        tree >= daemon_cpu * 0.95,
        "the daemon used {daemon_cpu} s but the tree only {tree} s: {a}"
    );
}

#[test]
fn attach_to_a_running_process_with_p() {
    let _l = serial();
    let m = Machine::new();
    let _d = m.drive(20.0);
    let mut target = Command::new("sh")
        .args(["-c", &format!("sleep 0.3; {}", burn(0.6))])
        .spawn()
        .unwrap();
    let pid = target.id().to_string();
    let o = m.bin().args(["-p", &pid, "--json", "-"]).output().unwrap();
    let _ = target.wait();
    let j = ok_json(&o);
    assert_eq!(j["mode"], "pid");
    assert_eq!(j["attribution"]["method"], "proc");
    assert!(
        f(&j["attribution"]["tree_cpu_s"]) > 0.4,
        "{}",
        j["attribution"]
    );
    assert!(
        f(&j["elapsed_s"]) >= 0.8,
        "measured until the process exited"
    );

    let o = m.bin().args(["-p", "999999999"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no process with PID 999999999"));
}

#[test]
fn all_mode_measures_the_machine_without_attribution() {
    let _l = serial();
    let m = Machine::new();
    let _d = m.drive(20.0);
    let o = m
        .bin()
        .args(["-a", "--json", "-", "--", "sleep", "0.3"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    let j = json(&o);
    assert_eq!(j["mode"], "all");
    assert!(j["attribution"].is_null());
    assert!(!String::from_utf8_lossy(&o.stderr).contains("Attribution"));

    // Without a command: until a stop signal.
    let child = m
        .bin()
        .args(["-a", "--json", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let o = child.wait_with_output().unwrap();
    let j = ok_json(&o);
    assert!(f(&j["elapsed_s"]) >= 0.3);
    assert!(
        (f(&j["total"]["avg_power_w"]) - 20.0).abs() < 0.5,
        "{}",
        j["total"]
    );
}

#[test]
fn basepower_round_trip_then_a_run_splits_static_and_dynamic() {
    let _l = serial();
    let m = Machine::new();
    {
        let _d = m.drive(8.0);
        let o = m
            .bin()
            .args(["--basepower", "--duration", "1.5", "--force"])
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains("package-0"), "{e}");
        assert!(e.contains(&m.baseline().display().to_string()), "{e}");
    }
    let b: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(m.baseline()).unwrap()).unwrap();
    assert_eq!(b["schema_version"], 1);
    assert_eq!(b["interface"], "powercap");
    let d = &b["domains"][0];
    assert_eq!(d["name"], "package-0");
    assert!((f(&d["mean_w"]) - 8.0).abs() < 0.2, "{d}");
    assert!(f(&b["duration_s"]) >= 1.4);
    assert!(b["cpu_utilisation"].is_number(), "{b}");
    for k in ["hostname", "kernel", "cpu_model", "taken_at"] {
        assert!(b[k].is_string(), "{k}: {b}");
    }
    // No temporary file left beside it.
    let n = std::fs::read_dir(m.root()).unwrap().count();
    assert_eq!(n, 2, "sys and baseline.json only");

    // A run at 20 W: 8 W static, 12 W dynamic.
    let _d = m.drive(20.0);
    let o = m
        .bin()
        .args(["--json", "-", "--", "sh", "-c", &burn(0.8)])
        .output()
        .unwrap();
    let j = ok_json(&o);
    let a = &j["attribution"];
    assert_eq!(a["baseline_used"], true);
    assert_eq!(a["baseline"]["used"], true);
    let el = f(&a["total"]["measured_s"]);
    assert!(
        (f(&a["total"]["static_j"]) - 8.0 * el).abs() < 0.02 * 8.0 * el,
        "{a}"
    );
    assert!(
        (f(&a["total"]["dynamic_j"]) - 12.0 * el).abs() < 0.02 * 12.0 * el,
        "{a}"
    );
    // The command is charged its dynamic share plus its share of the static power.
    let share = f(&a["share"]);
    assert!(share > 0.2, "{a}");
    let cmd_static = f(&a["total"]["command_static_j"]);
    let cap = f(&a["tree_cpu_s"]) / (2.0 * el);
    assert!(
        (cmd_static - f(&a["total"]["static_j"]) * cap).abs() < 0.15 * cmd_static + 0.05,
        "static share by capacity: {a}"
    );
    assert!(
        (f(&a["command_total_j"]) - f(&a["total"]["command_dynamic_j"]) - cmd_static).abs() < 1e-9
    );
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("command static"), "{e}");
    assert!(e.contains("baseline calibrated"), "{e}");
}

#[test]
fn basepower_refuses_a_busy_machine() {
    let _l = serial();
    let m = Machine::new();
    let _d = m.drive(8.0);
    let n = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut burners: Vec<Child> = (0..n).map(|_| background_burner(2.5)).collect();
    let t = Instant::now();
    let o = m
        .bin()
        .args(["--basepower", "--duration", "1.5"])
        .output()
        .unwrap();
    for b in burners.iter_mut() {
        let _ = b.kill();
        let _ = b.wait();
    }
    assert!(t.elapsed() >= Duration::from_millis(1400));
    assert_eq!(
        o.status.code(),
        Some(125),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("--force"), "{e}");
    assert!(e.contains("nothing was stored"), "{e}");
    assert!(!m.baseline().exists());
}

#[test]
fn a_baseline_from_another_machine_is_ignored_with_a_warning() {
    let _l = serial();
    let m = Machine::new();
    let _d = m.drive(10.0);
    let o = m
        .bin()
        .args(["--basepower", "--duration", "1", "--force"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = std::fs::read_to_string(m.baseline()).unwrap();
    let mut b: serde_json::Value = serde_json::from_str(&text).unwrap();
    b["hostname"] = "some-other-host".into();
    std::fs::write(m.baseline(), b.to_string()).unwrap();
    let o = m
        .bin()
        .args(["--json", "-", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    let j = json(&o);
    assert_eq!(j["attribution"]["baseline_used"], false);
    let w = j["warnings"].to_string();
    assert!(w.contains("ignoring the baseline"), "{w}");
    assert!(w.contains("some-other-host"), "{w}");
}

#[test]
fn a_corrupt_baseline_is_one_clear_error_naming_the_file() {
    let _l = serial();
    let m = Machine::new();
    std::fs::write(m.baseline(), "{\"schema_version\": 1, \"domains\": [tru").unwrap();
    let marker = m.root().join("ran");
    let o = m
        .bin()
        .args(["--", "touch", marker.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains(&m.baseline().display().to_string()), "{e}");
    assert!(e.contains("--basepower"), "{e}");
    assert!(e.contains("--no-baseline"), "{e}");
    assert!(!marker.exists());
    // --no-baseline gets past it.
    let o = m
        .bin()
        .args(["--no-baseline", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
