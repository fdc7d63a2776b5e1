//! Many devices in one run, end to end through the built binary: fake hwmon and
//! power-supply trees (values driven while a real child runs) beside a fake RAPL tree.
//! GPUs are parts (an integrated one sits inside its package), the chassis or a
//! discharging battery is the whole machine and the total, other meters are shown and
//! never added, and each category can be switched or named.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use joulerun_testkit::fakebattery::{FakePowerSupply, Supply};
use joulerun_testkit::fakehw::{CounterDriver, DrivenCounter, FakePowercap, INTEL_RANGE_UJ};
use joulerun_testkit::fakehwmon::{FakeHwmon, HwmonChip};
use serde_json::Value;

mod common;

fn run(root: &Path, args: &[&str]) -> Output {
    let mut c = common::joulerun(root, &root.join("state"));
    c.args(args);
    c.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn domain<'a>(j: &'a Value, name: &str) -> &'a Value {
    j["domains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no domain {name} in {}", j["domains"]))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn close(got: f64, want: f64, rel: f64) -> bool {
    (got - want).abs() <= rel * want.abs()
}

#[test]
fn gpus_are_parts_and_an_integrated_one_is_inside_its_package() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let pc = FakePowercap::intel_laptop(root).unwrap();
    let hw = FakeHwmon::workstation(root).unwrap();
    let _d = CounterDriver::start(vec![
        DrivenCounter::power(hw.attr_path(1, "power1_average"), 45.0),
        DrivenCounter::hwmon_energy(hw.attr_path(2, "energy1_input"), 5.0, 1_000_000),
        DrivenCounter::powercap(pc.energy_path("intel-rapl:0"), 30.0, INTEL_RANGE_UJ, 0),
    ])
    .unwrap();
    let o = run(root, &["--json", "-", "--", "sleep", "1.5"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j = common::json(&o);
    // Ordered by PCI address: the integrated i915 (00:02.0) is gpu-0, the amdgpu gpu-1.
    let igpu = domain(&j, "gpu-0");
    let dgpu = domain(&j, "gpu-1");
    assert_eq!(dgpu["place"], "part");
    assert_eq!(dgpu["in_total"], true);
    assert_eq!(dgpu["device"]["type"], "gpu");
    assert_eq!(dgpu["category"], "gpu");
    assert!(close(f(&dgpu["avg_power_w"]), 45.0, 0.03), "{dgpu}");
    assert_eq!(igpu["place"], "inside");
    assert_eq!(igpu["parent"], "package-0");
    assert_eq!(igpu["in_total"], false);
    assert!(close(f(&igpu["avg_power_w"]), 5.0, 0.05), "{igpu}");
    // The total is the parts: package-0 and the discrete GPU, not the integrated one.
    assert_eq!(j["total"]["of"], "parts");
    let want = f(&domain(&j, "package-0")["energy_j"]) + f(&dgpu["energy_j"]);
    assert!(
        close(f(&j["total"]["energy_j"]), want, 1e-9),
        "{}",
        j["total"]
    );
    let gpu = j["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["category"] == "gpu")
        .unwrap();
    assert_eq!(gpu["interface"], "hwmon");
    // The table groups by device and says where the integrated GPU sits.
    let e = stderr(&o);
    assert!(e.contains("inside package-0"), "{e}");
    assert!(e.contains("GPU 1 (AMD Radeon RX 6800)"), "{e}");
    // --no-gpu: no GPU row, and the total is the package alone.
    let o = run(root, &["--no-gpu", "--json", "-", "--", "sleep", "0.3"]);
    let j = common::json(&o);
    assert!(
        j["domains"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["category"] != "gpu")
    );
}

#[test]
fn the_chassis_is_the_total_and_the_rest_of_the_system_is_what_the_parts_do_not_see() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let pc = FakePowercap::intel_server_2s(root).unwrap();
    let hw = FakeHwmon::server(root).unwrap();
    let _d = CounterDriver::start(vec![
        DrivenCounter::power(hw.attr_path(0, "power1_average"), 350.0),
        DrivenCounter::powercap(pc.energy_path("intel-rapl:0"), 100.0, INTEL_RANGE_UJ, 0),
        DrivenCounter::powercap(pc.energy_path("intel-rapl:1"), 100.0, INTEL_RANGE_UJ, 0),
    ])
    .unwrap();
    let o = run(root, &["--json", "-", "--", "sleep", "3.2"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j = common::json(&o);
    let c = domain(&j, "chassis");
    assert_eq!(
        (c["place"].as_str(), c["in_total"].as_bool()),
        (Some("whole"), Some(true))
    );
    assert!(close(f(&c["avg_power_w"]), 350.0, 0.02), "{c}");
    // The PSUs are inside the chassis (its meter measures them), never added.
    for psu in ["psu-0", "psu-1"] {
        let p = domain(&j, psu);
        assert_eq!(p["place"], "inside");
        assert_eq!(p["parent"], "chassis");
        assert_eq!(p["in_total"], false);
    }
    assert_eq!(j["total"]["of"], "whole");
    assert_eq!(j["total"]["domains"], serde_json::json!(["chassis"]));
    assert!(close(f(&j["total"]["energy_j"]), f(&c["energy_j"]), 1e-9));
    // Rest of system over the chassis' own seconds: 350 W minus the two packages'
    // 200 W (the fake DRAM counters do not move), about 150 W.
    let rest = f(&j["total"]["rest_of_system_j"]);
    let over = f(&j["attribution"]["rest_of_system"]["measured_s"]);
    assert!(over > 2.0, "{over}");
    assert!(close(rest / over, 150.0, 0.05), "{rest} J over {over} s");
    let e = stderr(&o);
    assert!(e.contains("rest of system"), "{e}");
    assert!(e.contains("= chassis"), "{e}");
    // The chassis' share is modelled.
    let per = j["attribution"]["per_domain"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "chassis")
        .unwrap();
    assert_eq!(per["modelled"], true);
    // --chassis none: the parts are the total again.
    let o = run(
        root,
        &["--chassis", "none", "--json", "-", "--", "sleep", "0.3"],
    );
    assert_eq!(common::json(&o)["total"]["of"], "parts");
}

#[test]
fn a_discharging_battery_is_the_whole_laptop() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let pc = FakePowercap::intel_laptop(root).unwrap();
    FakePowerSupply::laptop_discharging(root, 12.0).unwrap();
    let _d = CounterDriver::start(vec![DrivenCounter::powercap(
        pc.energy_path("intel-rapl:0"),
        7.0,
        INTEL_RANGE_UJ,
        0,
    )])
    .unwrap();
    let o = run(root, &["--json", "-", "--", "sleep", "2"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j = common::json(&o);
    let b = domain(&j, "BAT0");
    assert_eq!(b["place"], "whole");
    assert_eq!(b["category"], "battery");
    assert!(close(f(&b["avg_power_w"]), 12.0, 0.02), "{b}");
    assert_eq!(j["total"]["of"], "whole");
    assert_eq!(j["total"]["domains"], serde_json::json!(["BAT0"]));
    // The mouse's battery is not the laptop's.
    assert!(
        j["domains"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| !d["name"].as_str().unwrap().contains("hid"))
    );
    // psys overlaps, never added; the package is inside the whole.
    assert_eq!(domain(&j, "psys")["in_total"], false);
    let rest = f(&j["total"]["rest_of_system_j"]);
    let over = f(&j["attribution"]["rest_of_system"]["measured_s"]);
    assert!(close(rest / over, 5.0, 0.1), "{rest} J over {over} s");
}

#[test]
fn on_ac_power_the_report_says_there_is_no_battery_reading() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    FakePowerSupply::new(root)
        .unwrap()
        .add(&Supply::mains("AC", true))
        .unwrap()
        .add(&Supply::battery("BAT0").status("Charging").power_now(0.0))
        .unwrap();
    let o = run(root, &["--json", "-", "--", "true"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j = common::json(&o);
    assert!(
        j["domains"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["category"] != "battery"),
        "no 0 W battery row"
    );
    let bat = j["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["category"] == "battery")
        .unwrap();
    assert_eq!(bat["interface"], Value::Null);
    assert!(
        bat["note"]
            .as_str()
            .unwrap()
            .contains("on AC power (status: Charging): no battery reading"),
        "{bat}"
    );
    assert!(
        stderr(&o).contains("battery: on AC power (status: Charging): no battery reading"),
        "{}",
        stderr(&o)
    );
    // Asked for by name, it stops the run before the command starts.
    let marker = t.path().join("ran");
    let o = run(
        root,
        &[
            "--battery",
            "auto",
            "--gpu",
            "hwmon",
            "--",
            "touch",
            marker.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot use --gpu hwmon"),
        "{}",
        stderr(&o)
    );
    assert!(!marker.exists());
}

#[test]
fn a_battery_plugged_in_mid_run_has_its_energy_partial_never_zero_watts() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let ps = FakePowerSupply::laptop_discharging(root, 10.0).unwrap();
    let trigger = t.path().join("plugged");
    let script = format!("sleep 1; touch {}; sleep 1.2", trigger.display());
    let ps2 = ps.clone();
    let trig = trigger.clone();
    let watcher = std::thread::spawn(move || {
        while !trig.exists() {
            std::thread::sleep(Duration::from_millis(10));
        }
        ps2.set_status("BAT0", "Charging").unwrap();
    });
    let o = run(root, &["--json", "-", "--", "sh", "-c", &script]);
    watcher.join().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j = common::json(&o);
    let b = domain(&j, "BAT0");
    assert!(b["failed_reads"].as_u64().unwrap() >= 1, "{b}");
    assert!(
        b["first_error"].as_str().unwrap().contains("on AC power"),
        "{b}"
    );
    // Measured while it discharged (about the first second), at 10 W over that time.
    let measured = f(&b["measured_s"]);
    assert!((0.5..2.0).contains(&measured), "{b}");
    assert!(close(f(&b["avg_power_w"]), 10.0, 0.05), "{b}");
}

#[test]
fn an_apu_meter_overlaps_the_package_and_other_meters_are_never_added() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let pc = FakePowercap::intel_laptop(root).unwrap();
    let hw = FakeHwmon::apu_laptop(root).unwrap();
    hw.add(
        &HwmonChip::new("ina3221")
            .on_device("platform/i2c-1/1-0040")
            .power_input(1, 3.0, Some("VDD_IN")),
    )
    .unwrap();
    let _d = CounterDriver::start(vec![DrivenCounter::powercap(
        pc.energy_path("intel-rapl:0"),
        9.0,
        INTEL_RANGE_UJ,
        0,
    )])
    .unwrap();
    let o = run(root, &["--json", "-", "--", "sleep", "1"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j = common::json(&o);
    let apu = domain(&j, "gpu-0");
    assert_eq!(
        (apu["place"].as_str(), apu["in_total"].as_bool()),
        (Some("overlaps"), Some(false))
    );
    let meter = j["domains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["category"] == "meter")
        .unwrap_or_else(|| panic!("no meter row: {}", j["domains"]));
    assert_eq!(meter["in_total"], false);
    assert!(close(f(&meter["avg_power_w"]), 3.0, 0.02), "{meter}");
    // The total is the package alone.
    assert_eq!(j["total"]["domains"], serde_json::json!(["package-0"]));
    assert!(
        stderr(&o).contains("overlaps the parts, not added"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_fifo_in_the_hwmon_tree_is_refused_without_blocking() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let hw = FakeHwmon::workstation(root).unwrap();
    hw.fifo_instead(1, "power1_average").unwrap();
    let mut c = common::joulerun(root, &root.join("state"));
    c.args(["--json", "-", "--", "true"]);
    let child = c
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(15));
        // SAFETY: kill takes a pid and a signal number.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    });
    let o = child.wait_with_output().unwrap();
    drop(killer);
    assert_eq!(o.status.code(), Some(0), "hung or failed: {}", stderr(&o));
    assert!(stderr(&o).contains("FIFO"), "{}", stderr(&o));
    // list too.
    let o = run(root, &["list"]);
    assert_eq!(o.status.code(), Some(0));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("GPU (--gpu)"), "{out}");
}

#[test]
fn list_shows_every_category_with_its_domains() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    FakePowercap::intel_server_2s(root).unwrap();
    FakeHwmon::server(root).unwrap();
    let o = run(root, &["list", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let l: Value = serde_json::from_slice(&o.stdout).unwrap();
    let cat = |c: &str| {
        l["categories"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["category"] == c)
            .unwrap()
            .clone()
    };
    assert_eq!(cat("chassis")["would_use"], "hwmon");
    let chassis = cat("chassis");
    let names: Vec<&str> = chassis["interfaces"][0]["domains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["chassis", "psu-0", "psu-1"]);
    assert_eq!(cat("gpu")["would_use"], Value::Null);
    assert_eq!(cat("battery")["would_use"], Value::Null);
    let o = run(root, &["list"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("Chassis (--chassis)"), "{out}");
    assert!(out.contains("hwmon for the chassis"), "{out}");
}
