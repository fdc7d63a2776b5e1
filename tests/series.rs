//! Issue 11 end to end, through the built binary: `-r` series, `-I` lines, `-x` records,
//! `--markdown`, `joulerun compare` as a CI gate, and `scripts/energy-gate`, on a fake
//! RAPL package whose counter runs while real commands do.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use joulerun_testkit::fakehw::CounterDriver;

mod common;
use common::{OnePackage, burn, json, serial};

/// A fake one-package machine whose package counter runs at `watts` while it lives.
struct Machine {
    m: OnePackage,
    _driver: CounterDriver,
}

impl Machine {
    fn new(watts: f64) -> Machine {
        let m = OnePackage::new();
        let _driver = m.drive(watts);
        Machine { m, _driver }
    }

    fn root(&self) -> &Path {
        self.m.root()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.m.path(name)
    }

    fn bin(&self) -> Command {
        self.m.bin()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn a_series_reports_every_run_with_its_statistics() {
    let _l = serial();
    let m = Machine::new(10.0);
    let o = m
        .bin()
        .args([
            "-r", "3", "--warmup", "1", "--json", "s.json", "--csv", "s.csv",
        ])
        .args(["--", "sleep", "0.15"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m.path("s.json")).unwrap()).unwrap();
    let r = &j["repeat"];
    assert_eq!(
        (r["requested"].as_u64(), r["completed"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(r["warmup"], 1);
    let runs = r["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    let totals: Vec<f64> = runs.iter().map(|x| f(&x["total_j"])).collect();
    for (i, x) in runs.iter().enumerate() {
        assert_eq!(x["run"], i as u64 + 1);
        assert_eq!(x["exit_status"], 0);
        // 10 W for about 0.15 s.
        let t = f(&x["total_j"]);
        assert!((1.2..2.5).contains(&t), "{t}");
        assert_eq!(x["domains"][0]["name"], "package-0");
    }
    let st = &r["stats"]["total_j"];
    assert_eq!(st["n"], 3);
    let mean = totals.iter().sum::<f64>() / 3.0;
    assert!((f(&st["mean"]) - mean).abs() < 1e-9);
    assert!(f(&st["ci95_low"]) <= mean && mean <= f(&st["ci95_high"]));
    assert!(r["stats"]["command_j"]["n"] == 3);
    // The rest of the summary is the last run's; the machine and units are stated.
    assert!((f(&j["total"]["energy_j"]) - totals[2]).abs() < 1e-9);
    assert!(j["machine"]["hostname"].is_string());
    assert_eq!(j["units"]["energy"], "J");
    // The CSV timeline holds the three measured runs, not the warm-up, each from 0.
    let csv = std::fs::read_to_string(m.path("s.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let run_col = header.iter().position(|h| *h == "run").unwrap();
    let mut seen: Vec<String> = Vec::new();
    for line in csv.lines().skip(1) {
        let run = line.split(',').nth(run_col).unwrap().to_string();
        if seen.last() != Some(&run) {
            seen.push(run);
        }
    }
    assert_eq!(seen, ["1", "2", "3"]);
    // perf stat's presentation: the mean with the half-width of its 95% interval.
    let e = stderr(&o);
    assert!(e.contains("Energy of 'sleep 0.15' (3 runs):"), "{e}");
    assert!(
        e.contains("Series (3 measured runs after 1 warm-up):"),
        "{e}"
    );
    assert!(e.contains(" J ± "), "{e}");
    assert!(e.contains("Attribution of the last run"), "{e}");
}

#[test]
fn a_failing_run_stops_the_series_unless_keep_going() {
    let _l = serial();
    let m = Machine::new(10.0);
    // The second run of each series fails with status 7.
    let script =
        "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; [ $n -ne 2 ] || exit 7";
    let o = m
        .bin()
        .args(["-r", "4", "--json", "a.json", "--", "sh", "-c", script])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m.path("a.json")).unwrap()).unwrap();
    assert_eq!(j["repeat"]["completed"], 2);
    assert!(
        j["repeat"]["stopped"]
            .as_str()
            .unwrap()
            .contains("run 2 exited with status 7"),
        "{}",
        j["repeat"]
    );
    assert!(stderr(&o).contains("the series stopped after 2 of 4 runs"));

    std::fs::remove_file(m.path("count")).unwrap();
    let o = m
        .bin()
        .args(["-r", "4", "--keep-going", "--json", "b.json", "--"])
        .args(["sh", "-c", script])
        .output()
        .unwrap();
    // The first failing run's status, after all four ran.
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m.path("b.json")).unwrap()).unwrap();
    let st: Vec<i64> = j["repeat"]["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["exit_status"].as_i64().unwrap())
        .collect();
    assert_eq!(st, [0, 7, 0, 0]);
    assert!(j["repeat"]["stopped"].is_null());
}

#[test]
fn ctrl_c_during_a_cooldown_ends_the_series_with_what_was_measured() {
    let _l = serial();
    let m = Machine::new(10.0);
    let child = m
        .bin()
        .args([
            "-r",
            "5",
            "--cooldown",
            "30",
            "--json",
            "c.json",
            "--",
            "true",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let t0 = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m.path("c.json")).unwrap()).unwrap();
    assert_eq!(j["repeat"]["completed"], 1);
    assert!(
        j["repeat"]["stopped"]
            .as_str()
            .unwrap()
            .contains("interrupted by SIGINT before run 2")
    );
}

/// `-I 100` prints each interval's lines while the command still runs (flushed as
/// printed), and a run's lines add up to its energy.
#[test]
fn interval_lines_stream_while_the_command_runs_and_add_up() {
    let _l = serial();
    let m = Machine::new(20.0);
    let mut child = m
        .bin()
        .args(["-I", "100", "--json", "i.json", "--", "sleep", "1"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let started = Instant::now();
    let mut data = Vec::new();
    // The first three data lines come long before the command's second is over.
    while data.len() < 3 {
        let l = lines.next().unwrap().unwrap();
        if !l.starts_with('#') {
            data.push(l);
        }
    }
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the command still runs"
    );
    let mut rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    assert!(child.wait().unwrap().success());
    data.extend(rest.iter().take_while(|l| !l.is_empty()).cloned());
    rest.clear();
    let mut sum = 0.0;
    let mut last_t = 0.0;
    for (i, l) in data.iter().enumerate() {
        let c: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(c.len(), 6, "{l}");
        assert_eq!((c[1], c[5]), ("1", "package-0"), "{l}");
        let t: f64 = c[0].parse().unwrap();
        assert!(t > last_t, "{l}");
        last_t = t;
        let (e, w): (f64, f64) = (c[2].parse().unwrap(), c[3].parse().unwrap());
        // 20 W throughout (the last interval is shorter, and only as exact as its µJ).
        if i + 1 < data.len() {
            assert!((17.0..23.0).contains(&w), "{l}");
        }
        sum += e;
    }
    assert!((9..=12).contains(&data.len()), "{data:?}");
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m.path("i.json")).unwrap()).unwrap();
    let total = f(&j["domains"][0]["energy_j"]);
    assert!(
        (sum - total).abs() < 1e-3 * total + 1e-5,
        "{sum} vs {total}"
    );
}

/// `-x ';'`: fixed fields per record type, no padding, the separator quoted, the same
/// numbers as the JSON; `-I` with `-x` gives `interval` records.
#[test]
fn separated_records_are_stable_and_carry_the_series() {
    let _l = serial();
    let m = Machine::new(10.0);
    let o = m
        .bin()
        .args(["-x", ";", "-I", "100", "-r", "2", "--json", "x.json", "--"])
        .args(["sleep", "0.25"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let e = stderr(&o);
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m.path("x.json")).unwrap()).unwrap();
    let mut kinds = Vec::new();
    for line in e.lines() {
        let fields: Vec<&str> = line.split(';').collect();
        for fl in &fields {
            assert_eq!(fl.trim(), *fl, "no padding: {line:?}");
        }
        let n = match fields[0] {
            "interval" => 7,
            "schema_version" => 2,
            "warning" => 2,
            "energy" | "power" | "elapsed" | "cost" | "co2e" | "exit_status" => 11,
            other => panic!("unknown record {other}: {line}"),
        };
        assert_eq!(fields.len(), n, "{line}");
        if !kinds.contains(&fields[0]) {
            kinds.push(fields[0]);
        }
        if fields[0] == "energy" && fields[1] == "package-0" {
            let mean = f(&j["repeat"]["stats"]["domains"][0]["energy_j"]["mean"]);
            assert!(
                (fields[2].parse::<f64>().unwrap() - mean).abs() < 1e-8,
                "{line}"
            );
            assert_eq!((fields[3], fields[4]), ("J", "2"));
            assert_eq!((fields[9], fields[10]), ("powercap", "measured"));
        }
        if fields[0] == "interval" {
            assert!(fields[2] == "1" || fields[2] == "2", "{line}");
        }
    }
    assert_eq!(
        kinds,
        [
            "interval",
            "schema_version",
            "energy",
            "power",
            "elapsed",
            "cost",
            "co2e",
            "exit_status"
        ],
        "{e}"
    );
    // A separator inside a field is quoted.
    let o = m.bin().args(["-x", "-", "--", "true"]).output().unwrap();
    let e = stderr(&o);
    assert!(e.contains("energy-\"package-0\"-"), "{e}");
}

#[test]
fn markdown_summary_for_a_step_summary() {
    let _l = serial();
    let m = Machine::new(10.0);
    let o = m
        .bin()
        .args([
            "-r",
            "2",
            "--markdown",
            "s.md",
            "--",
            "sh",
            "-c",
            "echo 'a|b'",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // The terminal is the command's: its output untouched on stdout.
    assert_eq!(String::from_utf8_lossy(&o.stdout), "a|b\na|b\n");
    let md = std::fs::read_to_string(m.path("s.md")).unwrap();
    assert!(
        md.starts_with("### Energy of `sh -c 'echo '\\''a\\|b'\\'''` (2 runs)"),
        "{md}"
    );
    assert!(
        md.contains("| device | domain | source | energy | avg power |"),
        "{md}"
    );
    assert!(md.contains("| socket 0 | package-0 | powercap |"), "{md}");
    assert!(
        md.contains("<details><summary>2 measured runs</summary>"),
        "{md}"
    );
    assert!(!md.contains("Estimated"), "{md}");
}

#[test]
fn usage_errors_of_the_new_options() {
    let _l = serial();
    let m = Machine::new(10.0);
    for (args, want) in [
        (vec!["-r", "0", "--", "true"], "-r/--repeat 0"),
        (vec!["-I", "5", "--", "true"], "-I/--interval-print 5"),
        (
            vec!["-I", "50", "-i", "100", "--", "true"],
            "shorter than the sampling interval",
        ),
        (vec!["-x", "", "--", "true"], "field-separator"),
        (vec!["--cooldown", "1", "--", "true"], "only one"),
        (vec!["--keep-going", "--", "true"], "only one"),
        (vec!["-r", "2", "-p", "1"], "-p"),
        (vec!["-r", "2", "-a"], "needs a command"),
        (
            vec!["-r", "2", "--cooldown", "-1", "--", "true"],
            "--cooldown",
        ),
        (
            vec!["--basepower", "-r", "2"],
            "-r/--repeat cannot be used with --basepower",
        ),
        (
            vec!["--markdown", "x.md", "--json", "x.md", "--", "true"],
            "--json",
        ),
    ] {
        let o = m.bin().args(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
        assert_eq!(
            stderr(&o).lines().count(),
            1,
            "{args:?}: one message: {}",
            stderr(&o)
        );
    }
}

/// Series of `burn(s)` with `-r 5`, saved as `name`.
fn burn_series(m: &Machine, name: &str, s: f64) {
    let o = m
        .bin()
        .args(["-r", "5", "--json", name, "--", "sh", "-c", &burn(s)])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

fn compare(m: &Machine, args: &[&str]) -> Output {
    m.bin().arg("compare").args(args).output().unwrap()
}

/// The gate of the issue: the same command twice is no regression; a command burning
/// 20% more CPU is one, on the package, the total and the command's share.
///
/// The command's share is its CPU time over all busy CPU time: other processes busy
/// beside the tests (a build) make it noisy. When it is, the series are measured again,
/// and the test fails rather than passes when the machine is never quiet enough.
#[test]
fn compare_gates_on_a_twenty_percent_rise_and_passes_the_same_command() {
    let _l = serial();
    let m = Machine::new(20.0);
    const TRIES: u32 = 3;
    let mut attempt = 0;
    let c = loop {
        attempt += 1;
        burn_series(&m, "base.json", 0.30);
        burn_series(&m, "same.json", 0.30);
        burn_series(&m, "more.json", 0.36);

        let o = compare(&m, &["base.json", "same.json"]);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
        assert!(out.contains("no significant energy regression"), "{out}");

        let o = compare(
            &m,
            &["base.json", "more.json", "--json", "--markdown", "c.md"],
        );
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let c = json(&o);
        assert_eq!(c["regression"], true);
        // What the gate must show on the package, the total and the command's share.
        let mut wrong = Vec::new();
        let mut noisy: f64 = 0.0;
        for name in ["package-0", "total", "command"] {
            let l = c["lines"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["name"] == name)
                .unwrap()
                .clone();
            noisy = noisy
                .max(f(&l["base"]["ci95_pct"]))
                .max(f(&l["new"]["ci95_pct"]));
            assert_eq!(l["test"], "welch");
            let rel = f(&l["change_rel"]);
            // The energy follows the time (constant power): about +20%, diluted a little
            // by each run's fixed start-up; significant (the interval of the change
            // excludes no change) and beyond the threshold.
            if l["verdict"] != "worse"
                || !(0.12..0.30).contains(&rel)
                || f(&l["ci_low_rel"]) <= 0.0
                || f(&l["p_adjusted"]) >= 0.05
            {
                wrong.push(format!("{name}: {l}"));
            }
        }
        if wrong.is_empty() {
            break c;
        }
        // A quiet machine must give the right answer at once; a busy one is measured
        // again, and after TRIES the test fails rather than passes.
        assert!(
            noisy >= 8.0 && attempt < TRIES,
            "after {attempt} tries (spread up to ±{noisy:.0}%; more than ±8% means other processes kept the machine busy: run this test alone on a quiet machine):\n{}",
            wrong.join("\n")
        );
        eprintln!("try {attempt}: the series were noisy (±{noisy:.0}%): measuring again");
    };
    let line = |name: &str| {
        c["lines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(line("elapsed")["verdict"], "slower");
    // CO2e follows the energy at one intensity; it is shown, and never gates.
    let co2 = line("CO2e");
    assert_eq!(
        (co2["verdict"].as_str(), co2["gates"].as_bool()),
        (Some("worse"), Some(false))
    );
    assert!((f(&co2["change_rel"]) - f(&line("total")["change_rel"])).abs() < 1e-9);
    let md = std::fs::read_to_string(m.path("c.md")).unwrap();
    assert!(md.starts_with("### Energy regression"), "{md}");
    assert!(md.contains("| total |"), "{md}");

    // The other way round, the change is an improvement: exit 0, verdict better.
    let o = compare(&m, &["more.json", "base.json", "--json"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        json(&o)["lines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == "total")
            .unwrap()["verdict"],
        "better"
    );
    // A threshold above the change: no regression.
    let o = compare(&m, &["base.json", "more.json", "--threshold", "40%"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn compare_refuses_what_cannot_be_compared() {
    let _l = serial();
    let m = Machine::new(10.0);
    let o = m
        .bin()
        .args(["--json", "one.json", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    let one: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m.path("one.json")).unwrap()).unwrap();
    let mut other = one.clone();
    other["machine"]["hostname"] = "elsewhere".into();
    std::fs::write(m.path("other.json"), other.to_string()).unwrap();
    let o = compare(&m, &["one.json", "other.json"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("two machines") && e.contains("--force"), "{e}");
    // Forced: compared, with the refusal noted.
    let o = compare(&m, &["one.json", "other.json", "--force"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("compared anyway (--force)"));
    // Two single runs: the stated uncertainty stands in for a spread, and says so.
    let o = compare(&m, &["one.json", "one.json"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("(1 run)"));
    assert!(String::from_utf8_lossy(&o.stdout).contains("single run"));
    // Files that are not summaries, and bad options.
    std::fs::write(m.path("junk.json"), "{\"a\": 1}").unwrap();
    for (args, want) in [
        (
            vec!["missing.json", "one.json"],
            "BASE.json 'missing.json': cannot open it",
        ),
        (
            vec!["one.json", "junk.json"],
            "NEW.json 'junk.json': is not a joulerun JSON summary",
        ),
        (vec!["one.json", "."], "is a directory"),
        (
            vec!["one.json", "one.json", "--threshold", "x"],
            "invalid --threshold",
        ),
        (
            vec!["one.json", "one.json", "--alpha", "0.9"],
            "invalid --alpha",
        ),
        (
            vec!["one.json", "one.json", "--json", "--markdown", "-"],
            "both write to stdout",
        ),
    ] {
        let o = compare(&m, &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
}

/// `scripts/energy-gate`, the script the CI examples in README and docs/ci.md call.
#[test]
fn the_ci_gate_script_passes_an_unchanged_command_and_fails_a_regression() {
    let _l = serial();
    let m = Machine::new(20.0);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/energy-gate");
    let summary = m.path("step-summary.md");
    let gate = |out: &str, base: &str, new: &str| {
        let mut c = Command::new("sh");
        c.arg(&script)
            .args(["--runs", "4", "--warmup", "0", "--out", out, base, new])
            .current_dir(m.root())
            .env("JOULERUN", env!("CARGO_BIN_EXE_joulerun"))
            .env("JOULERUN_SYSFS_ROOT", m.root())
            .env("XDG_STATE_HOME", m.path("state"))
            .env("GITHUB_STEP_SUMMARY", &summary)
            .stdin(Stdio::null());
        c.output().unwrap()
    };
    let o = gate("pass", &burn(0.25), &burn(0.25));
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    for f in [
        "base.json",
        "base.csv",
        "new.json",
        "new.csv",
        "new.md",
        "compare.md",
        "compare.json",
    ] {
        assert!(m.path("pass").join(f).is_file(), "{f}");
    }
    let o = gate("fail", &burn(0.25), &burn(0.30));
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    let s = std::fs::read_to_string(&summary).unwrap();
    assert!(
        s.contains("### No energy regression") && s.contains("### Energy regression"),
        "{s}"
    );
    // A failing command is not mistaken for a verdict.
    let o = gate("broken", "true", "exit 4");
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("failed with status 4"));
}

/// On a terminal (a pty from util-linux's `script`), a progress bar between runs, cleared
/// before each run so the command's own output is untouched; never without a terminal.
#[test]
fn a_progress_bar_on_a_terminal_only() {
    let _l = serial();
    if Command::new("script").arg("--version").output().is_err() {
        panic!("util-linux's `script` is needed for this test (Debian: bsdutils)");
    }
    let m = Machine::new(10.0);
    let bin = env!("CARGO_BIN_EXE_joulerun");
    let o = Command::new("script")
        .args(["-qec"])
        .arg(format!(
            "{bin} -r 3 --cooldown 0.3 -- sh -c 'echo hello-from-the-command'"
        ))
        .arg("/dev/null")
        .env("JOULERUN_SYSFS_ROOT", m.root())
        .env("XDG_STATE_HOME", m.path("state"))
        .current_dir(m.root())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let tty = String::from_utf8_lossy(&o.stdout);
    assert!(tty.contains("joulerun ["), "{tty:?}");
    assert!(tty.contains("] 3/3 run 3: "), "{tty:?}");
    assert!(tty.contains("cooling down for 0.300 s"), "{tty:?}");
    // Each line the command printed starts on a line the bar cleared.
    assert_eq!(
        tty.matches("\x1b[2Khello-from-the-command").count(),
        3,
        "{tty:?}"
    );
    // Without a terminal: no bar.
    let o = m.bin().args(["-r", "3", "--", "true"]).output().unwrap();
    assert!(!stderr(&o).contains("joulerun ["), "{}", stderr(&o));
}

/// The GitHub Actions and GitLab CI jobs of README.md, parsed as YAML, and their gate
/// steps run as written: in a scratch directory standing for the runner, with stand-in
/// `myapp` programs (the base burns 0.25 s of CPU, the change 0.25 s, then 0.35 s) and a
/// fake RAPL package.
#[test]
fn the_readme_ci_jobs_gate_as_written() {
    use yaml_rust2::{Yaml, YamlLoader};
    let _l = serial();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let blocks: Vec<&str> = readme
        .split("```yaml\n")
        .skip(1)
        .map(|b| b.split("\n```").next().unwrap())
        .collect();
    let github = blocks
        .iter()
        .find(|b| b.contains("runs-on:"))
        .expect("the GitHub Actions job");
    let gitlab = blocks
        .iter()
        .find(|b| b.contains("image:"))
        .expect("the GitLab CI job");
    let gh = &YamlLoader::load_from_str(github).unwrap()[0];
    let steps = gh["jobs"]["energy"]["steps"].as_vec().expect("steps");
    let gh_gate = steps
        .iter()
        .find(|s| s["name"].as_str() == Some("Energy gate"))
        .and_then(|s| s["run"].as_str())
        .expect("the gate step")
        .to_string();
    assert!(
        steps.iter().any(|s| s["uses"]
            .as_str()
            .is_some_and(|u| u.starts_with("actions/upload-artifact"))),
        "the artifacts are uploaded"
    );
    let gl = &YamlLoader::load_from_str(gitlab).unwrap()[0];
    let job = &gl["energy"];
    let gl_gate = job["script"]
        .as_vec()
        .expect("script")
        .iter()
        .filter_map(Yaml::as_str)
        .find(|l| l.contains("energy-gate"))
        .expect("the gate line")
        .to_string();
    assert_eq!(
        job["artifacts"]["paths"][0].as_str(),
        Some("energy/"),
        "the artifacts are kept"
    );

    let m = Machine::new(20.0);
    let runner = m.path("runner");
    let base = runner.join("base");
    let src = runner.join("joulerun");
    std::fs::create_dir_all(src.join("scripts")).unwrap();
    std::fs::copy(
        root.join("scripts/energy-gate"),
        src.join("scripts/energy-gate"),
    )
    .unwrap();
    let myapp = |dir: &Path, s: f64| {
        let p = dir.join("target/release/myapp");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, format!("#!/bin/sh\n{}\n", burn(s))).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    let work = m.path("checkout");
    myapp(&base, 0.25);
    let run = |script: &str| {
        let _ = std::fs::remove_dir_all(work.join("energy"));
        Command::new("bash")
            .args(["-e", "-c", script])
            .current_dir(&work)
            .env("RUNNER_TEMP", &runner)
            .env("JOULERUN_SRC", &src)
            .env("BASE_DIR", &base)
            .env("JOULERUN", env!("CARGO_BIN_EXE_joulerun"))
            .env("JOULERUN_SYSFS_ROOT", m.root())
            .env("XDG_STATE_HOME", m.path("state"))
            .env_remove("GITHUB_STEP_SUMMARY")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    for (name, script) in [("GitHub", &gh_gate), ("GitLab", &gl_gate)] {
        myapp(&work, 0.25);
        let o = run(script);
        assert_eq!(o.status.code(), Some(0), "{name}: {}", stderr(&o));
        assert!(work.join("energy/compare.md").is_file(), "{name}");
        myapp(&work, 0.35);
        let o = run(script);
        assert_eq!(o.status.code(), Some(1), "{name}: {}", stderr(&o));
    }
}

/// `-I` with `-o FILE`: the file is in place once the command runs and fills as it goes,
/// the final report last.
#[test]
fn interval_lines_stream_into_the_report_file() {
    let _l = serial();
    let m = Machine::new(10.0);
    let report = m.path("report.txt");
    std::fs::write(&report, "an earlier report\n").unwrap();
    let mut child = m
        .bin()
        .args(["-I", "100", "-o", "report.txt", "--", "sleep", "1"])
        .spawn()
        .unwrap();
    // Lines arrive while the command runs (polled: no timing is asserted, only order).
    let mut seen = String::new();
    for _ in 0..200 {
        std::thread::sleep(Duration::from_millis(10));
        seen = std::fs::read_to_string(&report).unwrap_or_default();
        if seen.lines().filter(|l| l.ends_with("package-0")).count() >= 2 {
            break;
        }
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the command still runs"
    );
    assert!(!seen.contains("an earlier report"), "{seen}");
    assert!(!seen.contains("Energy of"), "no final report yet: {seen}");
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&report).unwrap();
    let final_at = text.find("Energy of 'sleep 1'").expect("the final report");
    let last_line = text.rfind("package-0\n").unwrap();
    assert!(last_line < final_at, "{text}");
}
