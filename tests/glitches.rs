//! End-to-end tests of the built binary against fake hardware whose counters glitch
//! while a real child runs (a counter that steps down without a wrap, jumps forward,
//! resets, reads above its range, or never moves), against zones that duplicate a
//! domain or start above their range, against absurd estimate coefficients, and the
//! estimate's average power for a very short command.
//!
//! Glitches are played by `CounterDriver` when the command creates a trigger file, so
//! they always happen mid-run, whatever the machine's load.

use std::path::Path;
use std::process::{Command, Output};

use joulerun::sources::msr::{MSR_PKG_ENERGY_STATUS, MSR_RAPL_POWER_UNIT};
use joulerun_testkit::fakehw::{
    CounterDriver, DrivenCounter, FakeMsr, FakePowercap, INTEL_RANGE_UJ, write_cpuinfo,
    write_topology,
};

mod common;
use common::json;

fn bin(root: &Path) -> Command {
    common::joulerun(root, &root.join("state"))
}

fn domain<'a>(j: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    j["domains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no domain {name} in {j}"))
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn assert_close(got: f64, want: f64, rel: f64, what: &str) {
    assert!(
        (got - want).abs() <= rel * want.abs(),
        "{what}: got {got}, want {want} (within {}%)",
        rel * 100.0
    );
}

fn ok(o: &Output) -> String {
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(0), "{e}");
    e
}

/// The command: wait, create `trigger` (the driver glitches the counter), wait again.
fn glitch_script(trigger: &Path) -> String {
    format!(
        "sleep 0.5; touch '{}'; sleep 0.7",
        trigger.to_str().unwrap()
    )
}

/// From the CSV timeline: the total length of the ticks in which `name` had no energy
/// (unknown: a glitch, or the first reading after one), seconds.
fn unknown_seconds(csv: &Path, name: &str) -> f64 {
    let text = std::fs::read_to_string(csv).unwrap();
    let mut prev_t = 0.0;
    let mut unknown = 0.0;
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split(',').collect();
        if cols[2] != name {
            continue;
        }
        let t: f64 = cols[1].parse().unwrap();
        let delta: f64 = cols[7].parse().unwrap();
        if delta == 0.0 {
            unknown += t - prev_t;
        }
        prev_t = t;
    }
    unknown
}

/// Run with `--json - --csv` and a glitch script; returns the JSON, the report and the
/// seconds during which `glitched` had no energy.
fn run_glitch(root: &Path, extra: &[&str], glitched: &str) -> (serde_json::Value, String, f64) {
    let csv = root.join("timeline.csv");
    let trigger = root.join("glitch-now");
    let o = bin(root)
        .args(extra)
        .args(["-i", "20", "--json", "-", "--csv"])
        .arg(&csv)
        .args(["--", "sh", "-c", &glitch_script(&trigger)])
        .output()
        .unwrap();
    let e = ok(&o);
    assert!(trigger.exists());
    (json(&o), e, unknown_seconds(&csv, glitched))
}

/// The glitched domain's report: at least one implausible reading, named with its
/// first one in the warnings and in the table, and its energy the truth of the other
/// intervals within 1%.
fn assert_glitch_reported(
    j: &serde_json::Value,
    report: &str,
    name: &str,
    watts: f64,
    unknown_s: f64,
    what: &str,
) {
    let el = f(&j["elapsed_s"]);
    let d = domain(j, name);
    assert!(d["glitches"].as_u64().unwrap() >= 1, "{d}");
    let first = d["first_glitch"].as_str().unwrap();
    assert!(first.contains(what), "{first}");
    // One tick or two (the glitch, and the one after a value with no base) of 20 ms.
    assert!(unknown_s > 0.0 && unknown_s < 0.3, "{unknown_s}");
    assert_close(f(&d["energy_j"]), watts * (el - unknown_s), 0.01, name);
    assert!(f(&d["avg_power_w"]) < watts * 1.01, "{d}");
    let warnings = j["warnings"].to_string();
    assert!(
        warnings.contains(&format!(
            "{name}: 1 implausible reading ignored, the first at"
        )) || warnings.contains(&format!("{name}: "))
            && warnings.contains("implausible readings ignored"),
        "{warnings}"
    );
    assert!(warnings.contains(what), "{warnings}");
    assert!(warnings.contains("is unknown"), "{warnings}");
    assert!(report.contains("implausible reading"), "{report}");
    assert!(report.contains(&format!("warning: {name}: ")), "{report}");
}

#[test]
fn a_powercap_counter_stepping_down_without_a_wrap_is_ignored_and_reported() {
    let t = tempfile::tempdir().unwrap();
    let fake = FakePowercap::new(t.path()).unwrap();
    let start = 100_000_000_000; // 100 kJ into the Intel range
    fake.add_zone("intel-rapl:0", "package-0", start, Some(INTEL_RANGE_UJ))
        .unwrap()
        .add_zone("intel-rapl:1", "package-1", 0, Some(INTEL_RANGE_UJ))
        .unwrap();
    write_topology(t.path(), &[0, 1]).unwrap();
    // Down by 50 kJ: one wrap would be 212 kJ in a 20 ms tick, about 10 MW.
    let _driver = CounterDriver::start(vec![
        DrivenCounter::powercap(
            fake.energy_path("intel-rapl:0"),
            20.0,
            INTEL_RANGE_UJ,
            start,
        )
        .jump_when(t.path().join("glitch-now"), start - 50_000_000_000),
        DrivenCounter::powercap(fake.energy_path("intel-rapl:1"), 10.0, INTEL_RANGE_UJ, 0),
    ])
    .unwrap();
    let (j, report, unknown_s) = run_glitch(t.path(), &[], "package-0");
    assert_glitch_reported(
        &j,
        &report,
        "package-0",
        20.0,
        unknown_s,
        "the counter went down by 50.0",
    );
    let p0 = domain(&j, "package-0");
    assert_eq!(p0["wraps"], 0);
    assert_eq!(p0["failed_reads"], 0);
    let el = f(&j["elapsed_s"]);
    assert_eq!(domain(&j, "package-1")["glitches"], 0);
    assert_close(
        f(&domain(&j, "package-1")["energy_j"]),
        10.0 * el,
        0.01,
        "package-1",
    );
    assert_close(
        f(&j["total"]["energy_j"]),
        20.0 * (el - unknown_s) + 10.0 * el,
        0.01,
        "total",
    );
}

#[test]
fn a_forward_jump_of_1e12_microjoules_is_ignored_and_reported() {
    let t = tempfile::tempdir().unwrap();
    let fake = FakePowercap::new(t.path()).unwrap();
    fake.add_zone("intel-rapl:0", "package-0", 1_000_000, Some(INTEL_RANGE_UJ))
        .unwrap();
    // A range large enough for the jump to be a rise, not a wrap.
    fake.add_zone("intel-rapl:0:0", "dram", 5_000_000, Some(u64::MAX / 2))
        .unwrap();
    write_topology(t.path(), &[0, 0]).unwrap();
    let _driver = CounterDriver::start(vec![
        DrivenCounter::powercap(
            fake.energy_path("intel-rapl:0"),
            30.0,
            INTEL_RANGE_UJ,
            1_000_000,
        ),
        DrivenCounter::powercap(
            fake.energy_path("intel-rapl:0:0"),
            6.0,
            u64::MAX / 2,
            5_000_000,
        )
        .jump_when(t.path().join("glitch-now"), 1_000_000_000_000 + 5_000_000),
    ])
    .unwrap();
    let (j, report, unknown_s) = run_glitch(t.path(), &[], "dram-0");
    assert_glitch_reported(
        &j,
        &report,
        "dram-0",
        6.0,
        unknown_s,
        "the counter jumped by 1.00 MJ in 0.0",
    );
    let el = f(&j["elapsed_s"]);
    assert_close(
        f(&j["total"]["energy_j"]),
        30.0 * el + 6.0 * (el - unknown_s),
        0.01,
        "total",
    );
}

#[test]
fn an_msr_reset_to_zero_is_ignored_and_reported() {
    let t = tempfile::tempdir().unwrap();
    write_cpuinfo(t.path(), "GenuineIntel", 6, 0x8C).unwrap();
    write_topology(t.path(), &[0, 0]).unwrap();
    let m = FakeMsr::new(t.path()).unwrap();
    // ESU 14: 61 µJ units; half-way through the 32-bit range, so the reset's "wrap"
    // would be 131 kJ.
    let jpu = 1.0 / 16384.0;
    let start = 1u64 << 31;
    m.add_cpu(0)
        .unwrap()
        .set(0, MSR_RAPL_POWER_UNIT, FakeMsr::unit_register(14))
        .unwrap()
        .set(0, MSR_PKG_ENERGY_STATUS, start)
        .unwrap();
    let _driver = CounterDriver::start(vec![
        DrivenCounter::msr(m.msr_path(0), MSR_PKG_ENERGY_STATUS, 25.0, jpu, start)
            .jump_when(t.path().join("glitch-now"), 0),
    ])
    .unwrap();
    let (j, report, unknown_s) = run_glitch(t.path(), &["--source", "msr"], "package-0");
    assert_eq!(j["sources"][0], "msr");
    assert_glitch_reported(
        &j,
        &report,
        "package-0",
        25.0,
        unknown_s,
        "without a plausible wrap, which would mean",
    );
    assert_eq!(domain(&j, "package-0")["wraps"], 0);
    let el = f(&j["elapsed_s"]);
    assert_close(
        f(&j["total"]["energy_j"]),
        25.0 * (el - unknown_s),
        0.01,
        "total",
    );
}

#[test]
fn a_value_above_the_range_mid_run_is_a_glitch_not_a_reset() {
    let t = tempfile::tempdir().unwrap();
    let fake = FakePowercap::new(t.path()).unwrap();
    let range = 200_000_000_000;
    fake.add_zone("intel-rapl:0", "package-0", 1_000_000, Some(range))
        .unwrap();
    write_topology(t.path(), &[0]).unwrap();
    let _driver = CounterDriver::start(vec![
        DrivenCounter::powercap(fake.energy_path("intel-rapl:0"), 20.0, range, 1_000_000)
            .jump_when(t.path().join("glitch-now"), range + 5_000_000),
    ])
    .unwrap();
    let csv = t.path().join("timeline.csv");
    let trigger = t.path().join("glitch-now");
    let o = bin(t.path())
        .args(["-i", "20", "--json", "-", "--csv"])
        .arg(&csv)
        .args(["--", "sh", "-c", &glitch_script(&trigger)])
        .output()
        .unwrap();
    let report = ok(&o);
    let j = json(&o);
    let p0 = domain(&j, "package-0");
    // Every reading after the jump is above the range: all of them are glitches.
    assert!(p0["glitches"].as_u64().unwrap() >= 10, "{p0}");
    assert_eq!(p0["wraps"], 0);
    let first = p0["first_glitch"].as_str().unwrap();
    assert!(
        first.contains(&format!("above its wrap range {range}")),
        "{first}"
    );
    // The energy is that of the time before the jump, about 0.5 s at 20 W.
    let unknown_s = unknown_seconds(&csv, "package-0");
    let el = f(&j["elapsed_s"]);
    assert_close(
        f(&p0["energy_j"]),
        20.0 * (el - unknown_s),
        0.01,
        "package-0",
    );
    assert!(f(&p0["energy_j"]) < 20.0 * 0.7, "{p0}");
    assert!(report.contains("implausible readings"), "{report}");
    let warnings = j["warnings"].to_string();
    assert!(
        warnings.contains("implausible readings ignored"),
        "{warnings}"
    );
    assert!(!warnings.contains("lower bound"), "{warnings}");
}

#[test]
fn energy_uj_above_max_energy_range_uj_at_open_is_flagged() {
    let t = tempfile::tempdir().unwrap();
    let fake = FakePowercap::new(t.path()).unwrap();
    fake.add_zone("intel-rapl:0", "package-0", 5_000_000, Some(1_000_000))
        .unwrap()
        .add_zone("intel-rapl:1", "package-1", 5_000, Some(1_000_000))
        .unwrap();
    write_topology(t.path(), &[0, 1]).unwrap();
    let o = bin(t.path())
        .args(["--json", "-", "--", "true"])
        .output()
        .unwrap();
    let report = ok(&o);
    let j = json(&o);
    let warnings: Vec<String> = j["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect();
    let w = warnings
        .iter()
        .find(|w| w.starts_with("package-0:"))
        .unwrap_or_else(|| panic!("{warnings:?}"));
    assert!(w.contains("5000000"), "{w}");
    assert!(w.contains("1000000"), "{w}");
    assert!(w.contains("intel-rapl:0/energy_uj"), "{w}");
    assert!(w.contains("wraps cannot be corrected for package-0"), "{w}");
    assert!(
        !warnings.iter().any(|w| w.starts_with("package-1:")),
        "{warnings:?}"
    );
    assert!(report.contains("intel-rapl:0/energy_uj"), "{report}");
}

#[test]
fn two_primary_zones_named_package_0_are_counted_once() {
    let t = tempfile::tempdir().unwrap();
    let fake = FakePowercap::new(t.path()).unwrap();
    fake.add_zone("intel-rapl:0", "package-0", 0, Some(INTEL_RANGE_UJ))
        .unwrap()
        .add_zone("intel-rapl:1", "package-0", 0, Some(INTEL_RANGE_UJ))
        .unwrap()
        .add_zone("intel-rapl:2", "package-1", 0, Some(INTEL_RANGE_UJ))
        .unwrap();
    write_topology(t.path(), &[0, 1]).unwrap();
    let _driver = CounterDriver::start(
        [
            ("intel-rapl:0", 10.0),
            ("intel-rapl:1", 40.0),
            ("intel-rapl:2", 5.0),
        ]
        .iter()
        .map(|(id, w)| DrivenCounter::powercap(fake.energy_path(id), *w, INTEL_RANGE_UJ, 0))
        .collect(),
    )
    .unwrap();
    let o = bin(t.path())
        .args(["--json", "-", "--", "sleep", "0.5"])
        .output()
        .unwrap();
    let report = ok(&o);
    let j = json(&o);
    let names: Vec<&str> = j["domains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["package-0", "package-1"]);
    let el = f(&j["elapsed_s"]);
    // The first zone (intel-rapl:0, 10 W) is package-0; the second (40 W) is left out.
    assert_close(
        f(&domain(&j, "package-0")["energy_j"]),
        10.0 * el,
        0.01,
        "package-0",
    );
    assert_close(f(&j["total"]["energy_j"]), 15.0 * el, 0.01, "total");
    let warnings = j["warnings"].to_string();
    let class = t.path().join("sys/class/powercap");
    for p in ["intel-rapl:0", "intel-rapl:1"] {
        assert!(
            warnings.contains(&class.join(p).display().to_string()),
            "{warnings}"
        );
    }
    assert!(warnings.contains("counted once"), "{warnings}");
    assert!(report.contains("both named 'package-0'"), "{report}");
}

#[test]
fn a_counter_that_never_moves_over_a_long_run_is_flagged() {
    let t = tempfile::tempdir().unwrap();
    let fake = FakePowercap::new(t.path()).unwrap();
    fake.add_zone("intel-rapl:0", "package-0", 0, Some(INTEL_RANGE_UJ))
        .unwrap()
        .add_zone("intel-rapl:0:0", "dram", 123_456, Some(INTEL_RANGE_UJ))
        .unwrap();
    write_topology(t.path(), &[0]).unwrap();
    let _driver = CounterDriver::start(vec![DrivenCounter::powercap(
        fake.energy_path("intel-rapl:0"),
        10.0,
        INTEL_RANGE_UJ,
        0,
    )])
    .unwrap();
    let o = bin(t.path())
        .args(["--json", "-", "--", "sleep", "1.5"])
        .output()
        .unwrap();
    let report = ok(&o);
    let j = json(&o);
    assert_eq!(domain(&j, "dram-0")["stuck"], true);
    assert_eq!(domain(&j, "dram-0")["energy_j"], 0.0);
    assert_eq!(domain(&j, "package-0")["stuck"], false);
    let warnings = j["warnings"].to_string();
    assert!(
        warnings.contains("dram-0: the counter did not change in 1.5 s: a stuck counter; its 0 J is not a measurement"),
        "{warnings}"
    );
    assert!(!warnings.contains("package-0: the counter"), "{warnings}");
    assert!(report.contains("counter stuck"), "{report}");

    // A short run is not enough to tell.
    let o = bin(t.path())
        .args(["--json", "-", "--", "sleep", "0.3"])
        .output()
        .unwrap();
    ok(&o);
    let j = json(&o);
    assert_eq!(domain(&j, "dram-0")["stuck"], false);
    assert!(
        !j["warnings"].to_string().contains("stuck"),
        "{}",
        j["warnings"]
    );
}

#[test]
fn one_millisecond_ticks_are_not_mistaken_for_glitches() {
    let t = tempfile::tempdir().unwrap();
    let fake = FakePowercap::new(t.path()).unwrap();
    fake.add_zone("intel-rapl:0", "package-0", 0, Some(INTEL_RANGE_UJ))
        .unwrap()
        .add_zone("intel-rapl:1", "psys", 0, Some(INTEL_RANGE_UJ))
        .unwrap();
    write_topology(t.path(), &[0]).unwrap();
    let _driver = CounterDriver::start(vec![
        DrivenCounter::powercap(fake.energy_path("intel-rapl:0"), 200.0, INTEL_RANGE_UJ, 0),
        DrivenCounter::powercap(fake.energy_path("intel-rapl:1"), 400.0, INTEL_RANGE_UJ, 0),
    ])
    .unwrap();
    let o = bin(t.path())
        .args(["-i", "1", "--json", "-", "--", "sleep", "0.5"])
        .output()
        .unwrap();
    ok(&o);
    let j = json(&o);
    let el = f(&j["elapsed_s"]);
    assert!(j["ticks"].as_u64().unwrap() >= 100, "{}", j["ticks"]);
    for (name, w) in [("package-0", 200.0), ("psys", 400.0)] {
        let d = domain(&j, name);
        assert_eq!(d["glitches"], 0, "{d}");
        assert_close(f(&d["energy_j"]), w * el, 0.01, name);
    }
}

#[test]
fn absurd_cpu_watts_are_a_usage_error_with_one_clear_line() {
    let t = tempfile::tempdir().unwrap();
    let marker = t.path().join("ran");
    for watts in ["1e308,1e308", "1e10,1e10"] {
        for via_env in [false, true] {
            let mut c = bin(t.path());
            if via_env {
                c.env("JOULERUN_CPU_WATTS", watts);
            } else {
                c.args(["--cpu-watts", watts]);
            }
            let o = c
                .args(["--source", "estimate", "--", "touch"])
                .arg(&marker)
                .output()
                .unwrap();
            assert_eq!(o.status.code(), Some(2), "{watts}");
            let e = String::from_utf8_lossy(&o.stderr);
            assert_eq!(e.trim_end().lines().count(), 1, "{e}");
            // The message names where the value came from.
            let origin = if via_env {
                "JOULERUN_CPU_WATTS"
            } else {
                "--cpu-watts"
            };
            assert!(e.contains(origin), "{e}");
            assert!(e.contains("1 MW"), "{e}");
            assert!(!marker.exists());
        }
    }
}

#[test]
fn a_constant_estimate_reports_its_own_power_even_for_true() {
    let t = tempfile::tempdir().unwrap();
    for _ in 0..5 {
        let o = bin(t.path())
            .args([
                "--source",
                "estimate",
                "--cpu-watts",
                "10,10",
                "--json",
                "-",
                "--",
                "true",
            ])
            .output()
            .unwrap();
        let report = ok(&o);
        let j = json(&o);
        assert_eq!(j["estimated"], true);
        assert_close(f(&j["total"]["avg_power_w"]), 10.0, 0.01, "total");
        assert_close(
            f(&domain(&j, "cpu (estimated)")["avg_power_w"]),
            10.0,
            0.01,
            "domain",
        );
        assert_close(
            f(&j["total"]["energy_j"]),
            10.0 * f(&j["elapsed_s"]),
            0.01,
            "energy",
        );
        assert!(!report.contains("stuck"), "{report}");
    }
}
