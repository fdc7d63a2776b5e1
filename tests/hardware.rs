//! End-to-end tests of the built binary against fake hardware whose counters advance at
//! a known power while a real child runs: powercap (with a wrap), MSRs (32-bit wrap),
//! counters that vanish mid-run, and counters that refuse permission.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

use joulerun::sources::msr::{MSR_PKG_ENERGY_STATUS, MSR_RAPL_POWER_UNIT};
use joulerun_testkit::fakehw::{
    CounterDriver, DrivenCounter, FakeMsr, FakePowercap, INTEL_RANGE_UJ, write_cpuinfo,
    write_topology,
};

mod common;
use common::{json, ok_json};

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

fn assert_close(got: f64, want: f64, rel: f64, what: &str) {
    assert!(
        (got - want).abs() <= rel * want.abs(),
        "{what}: got {got}, want {want} (within {}%)",
        rel * 100.0
    );
}

#[test]
fn powercap_energy_matches_the_truth_within_one_percent_across_a_wrap() {
    let t = tempfile::tempdir().unwrap();
    let f = FakePowercap::new(t.path()).unwrap();
    // package-0 wraps every ~0.33 s at 30 W (range 10 J), starting 1 J below the wrap.
    let small_range: u64 = 10_000_000;
    f.add_zone("intel-rapl:0", "package-0", 9_000_000, Some(small_range))
        .unwrap()
        .add_zone("intel-rapl:0:0", "dram", 0, Some(INTEL_RANGE_UJ))
        .unwrap()
        .add_zone("intel-rapl:1", "package-1", 5_000_000, Some(INTEL_RANGE_UJ))
        .unwrap()
        .add_zone("intel-rapl:1:0", "dram", 0, Some(INTEL_RANGE_UJ))
        .unwrap()
        .add_zone("intel-rapl:2", "psys", 0, Some(INTEL_RANGE_UJ))
        .unwrap();
    write_topology(t.path(), &[0, 1]).unwrap();
    let watts = [
        ("intel-rapl:0", 30.0, small_range, 9_000_000),
        ("intel-rapl:0:0", 4.0, INTEL_RANGE_UJ, 0),
        ("intel-rapl:1", 12.0, INTEL_RANGE_UJ, 5_000_000),
        ("intel-rapl:1:0", 2.0, INTEL_RANGE_UJ, 0),
        ("intel-rapl:2", 60.0, INTEL_RANGE_UJ, 0),
    ];
    let _driver = CounterDriver::start(
        watts
            .iter()
            .map(|(id, w, r, s)| DrivenCounter::powercap(f.energy_path(id), *w, *r, *s))
            .collect(),
    )
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("timeline.csv");
    let o = bin(t.path())
        .args(["-i", "20", "--json", "-", "--csv"])
        .arg(&csv)
        .args(["--", "sleep", "1.5"])
        .output()
        .unwrap();
    let j = ok_json(&o);
    let el = j["elapsed_s"].as_f64().unwrap();
    assert!(el >= 1.5, "{el}");
    assert_eq!(j["sources"][0], "powercap");
    assert_eq!(j["estimated"], false);
    for (name, w) in [
        ("package-0", 30.0),
        ("dram-0", 4.0),
        ("package-1", 12.0),
        ("dram-1", 2.0),
        ("psys", 60.0),
    ] {
        let d = domain(&j, name);
        assert_close(d["energy_j"].as_f64().unwrap(), w * el, 0.01, name);
        assert_eq!(d["estimated"], false);
    }
    let p0 = domain(&j, "package-0");
    // 30 W over >= 1.5 s through a 10 J range starting 1 J below it: at least 4 wraps.
    assert!(p0["wraps"].as_u64().unwrap() >= 4, "{p0}");
    assert_eq!(domain(&j, "psys")["in_total"], false);
    // psys stays out of the total: packages and dram only.
    assert_close(
        j["total"]["energy_j"].as_f64().unwrap(),
        48.0 * el,
        0.01,
        "total",
    );
    assert_close(
        j["total"]["kwh"].as_f64().unwrap(),
        48.0 * el / 3.6e6,
        0.01,
        "kWh",
    );

    // The CSV timeline: its last cumulative value per domain matches the summary.
    let text = std::fs::read_to_string(&csv).unwrap();
    let last_p0 = text
        .lines()
        .rev()
        .find(|l| l.contains(",package-0,"))
        .unwrap();
    // `cumulative_j`, the column before `run`.
    let cum: f64 = last_p0.rsplit(',').nth(1).unwrap().parse().unwrap();
    assert_close(
        cum,
        p0["energy_j"].as_f64().unwrap(),
        1e-6,
        "csv cumulative",
    );
    assert!(last_p0.contains(",package,0,powercap,false,"), "{last_p0}");

    // The table names each domain and its source, and says psys is not added.
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("package-0  powercap"), "{e}");
    assert!(e.contains("whole platform, not added"), "{e}");
    assert!(!e.contains("estimated"), "{e}");
}

#[test]
fn msr_energy_through_the_binary_with_a_32_bit_wrap() {
    let t = tempfile::tempdir().unwrap();
    write_cpuinfo(t.path(), "GenuineIntel", 6, 0x8C).unwrap();
    write_topology(t.path(), &[0, 0]).unwrap();
    let m = FakeMsr::new(t.path()).unwrap();
    // ESU 10: 1/1024 J per unit, so 2^32 units = 4 MJ: start 1 J below the wrap.
    let jpu = 1.0 / 1024.0;
    let start = (1u64 << 32) - 1024;
    m.add_cpu(0)
        .unwrap()
        .set(0, MSR_RAPL_POWER_UNIT, FakeMsr::unit_register(10))
        .unwrap()
        .set(0, MSR_PKG_ENERGY_STATUS, start)
        .unwrap();
    let _driver = CounterDriver::start(vec![DrivenCounter::msr(
        m.msr_path(0),
        MSR_PKG_ENERGY_STATUS,
        25.0,
        jpu,
        start,
    )])
    .unwrap();
    let o = bin(t.path())
        .args([
            "--source", "msr", "-i", "50", "--json", "-", "--", "sleep", "1",
        ])
        .output()
        .unwrap();
    let j = ok_json(&o);
    let el = j["elapsed_s"].as_f64().unwrap();
    let p = domain(&j, "package-0");
    assert_eq!(p["source"], "msr");
    assert_close(
        p["energy_j"].as_f64().unwrap(),
        25.0 * el,
        0.01,
        "msr package-0",
    );
    assert_eq!(p["wraps"], 1);
}

#[test]
fn a_counter_that_vanishes_mid_run_is_reported_never_counted_as_zero_watts() {
    let t = tempfile::tempdir().unwrap();
    let f = FakePowercap::new(t.path()).unwrap();
    f.add_zone("intel-rapl:0", "package-0", 0, Some(INTEL_RANGE_UJ))
        .unwrap()
        .add_zone("intel-rapl:1", "package-1", 0, Some(INTEL_RANGE_UJ))
        .unwrap();
    write_topology(t.path(), &[0, 1]).unwrap();
    let _driver = CounterDriver::start(vec![DrivenCounter::powercap(
        f.energy_path("intel-rapl:0"),
        10.0,
        INTEL_RANGE_UJ,
        0,
    )])
    .unwrap();
    // The command itself removes package-1's counter halfway through.
    let victim = f.energy_path("intel-rapl:1");
    // As sysfs does when a zone goes away: the open file reads empty, the path is gone.
    let script = format!(
        "sleep 0.3; : > '{0}'; rm -f '{0}'; sleep 0.4",
        victim.display()
    );
    let o = bin(t.path())
        .args(["-i", "20", "--json", "-", "--", "sh", "-c", &script])
        .output()
        .unwrap();
    let j = ok_json(&o);
    let p1 = domain(&j, "package-1");
    assert!(p1["failed_reads"].as_u64().unwrap() >= 5, "{p1}");
    let err = p1["first_error"].as_str().unwrap();
    assert!(err.contains("intel-rapl:1"), "{err}");
    let warnings = j["warnings"].to_string();
    assert!(warnings.contains("package-1"), "{warnings}");
    assert!(warnings.contains("missing"), "{warnings}");
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("failed reads"), "{e}");
    // package-0 is unaffected.
    let el = j["elapsed_s"].as_f64().unwrap();
    assert_close(
        domain(&j, "package-0")["energy_j"].as_f64().unwrap(),
        10.0 * el,
        0.01,
        "package-0",
    );
}

/// Run the binary as a user who cannot read root-only counters: as root, uid/gid 65534
/// against a root-owned tree with the kernel's 0400 mode; otherwise, as ourselves
/// against 0000. The tests that call it are ignored where uid 65534 cannot reach the
/// build (build.rs, `probe_run_as_nobody`).
fn run_unprivileged(root: &Path, args: &[&str]) -> Output {
    let root_user = nix::unistd::geteuid().is_root();
    let mode = if root_user { 0o400 } else { 0o000 };
    let f = FakePowercap::intel_laptop(root).unwrap();
    for id in [
        "intel-rapl:0",
        "intel-rapl:0:0",
        "intel-rapl:0:1",
        "intel-rapl:1",
    ] {
        f.chmod_energy(id, mode).unwrap();
    }
    // A root-only MSR device as well (crw------- on real machines).
    write_cpuinfo(root, "GenuineIntel", 6, 0x8C).unwrap();
    let m = FakeMsr::new(root).unwrap();
    m.add_cpu(0)
        .unwrap()
        .set(0, MSR_RAPL_POWER_UNIT, FakeMsr::unit_register(14))
        .unwrap()
        .set(0, MSR_PKG_ENERGY_STATUS, 1000)
        .unwrap();
    let dev_mode = if root_user { 0o600 } else { 0o000 };
    std::fs::set_permissions(m.msr_path(0), std::fs::Permissions::from_mode(dev_mode)).unwrap();
    let mut cmd = bin(root);
    cmd.args(args);
    if root_user {
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let exe = Path::new(env!("CARGO_BIN_EXE_joulerun"));
        for d in root.ancestors().skip(1).chain(exe.ancestors().skip(1)) {
            let m = std::fs::metadata(d).unwrap().permissions().mode();
            assert!(
                m & 0o001 != 0,
                "{} is not searchable by other users, so joulerun cannot run as uid 65534 \
                 (build.rs probes this as probe_run_as_nobody; touch build.rs if the machine \
                 changed since the build)",
                d.display()
            );
        }
        cmd.uid(65534)
            .gid(65534)
            .env("XDG_STATE_HOME", "/nonexistent");
    }
    cmd.output().unwrap()
}

#[test]
#[cfg_attr(
    all(probe_root, not(probe_run_as_nobody)),
    ignore = "as root it runs joulerun as uid 65534, which cannot reach the temporary or target directory here (probe_run_as_nobody): chmod o+x the directories above them, or run as a normal user"
)]
fn root_only_powercap_auto_falls_back_to_the_estimate_with_the_reason() {
    let t = tempfile::tempdir().unwrap();
    let o = run_unprivileged(t.path(), &["--json", "-", "--", "true"]);
    let j = ok_json(&o);
    assert_eq!(j["estimated"], true);
    assert_eq!(j["sources"][0], "estimate");
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("ESTIMATED"), "{e}");
    assert!(
        e.contains("intel-rapl:0/energy_uj: permission denied (energy_uj is readable by root only since Linux 5.10"),
        "{e}"
    );
    assert!(e.contains("sudo chmod o+r"), "{e}");
}

#[test]
#[cfg_attr(
    all(probe_root, not(probe_run_as_nobody)),
    ignore = "as root it runs joulerun as uid 65534, which cannot reach the temporary or target directory here (probe_run_as_nobody): chmod o+x the directories above them, or run as a normal user"
)]
fn root_only_powercap_with_source_powercap_fails_before_the_command_starts() {
    let t = tempfile::tempdir().unwrap();
    let marker = t.path().join("ran");
    // The marker directory must be writable by the unprivileged user for the check to
    // mean anything; it never gets written because the command never starts.
    let o = run_unprivileged(
        t.path(),
        &[
            "--source",
            "powercap",
            "--",
            "touch",
            marker.to_str().unwrap(),
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(125),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("cannot use --source powercap"), "{e}");
    assert!(e.contains("permission denied"), "{e}");
    assert!(e.contains("fix:"), "{e}");
    assert!(!marker.exists());
}

#[test]
#[cfg_attr(
    all(probe_root, not(probe_run_as_nobody)),
    ignore = "as root it runs joulerun as uid 65534, which cannot reach the temporary or target directory here (probe_run_as_nobody): chmod o+x the directories above them, or run as a normal user"
)]
fn list_gives_each_permission_failure_its_own_reason_and_fix() {
    let t = tempfile::tempdir().unwrap();
    let o = run_unprivileged(t.path(), &["list", "--json"]);
    let j = ok_json(&o);
    let iface = |name: &str| {
        j["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["source"] == name)
            .unwrap()
            .clone()
    };
    let pc = iface("powercap");
    assert_eq!(pc["problem"]["kind"], "permission", "{pc}");
    assert!(
        pc["problem"]["reason"]
            .as_str()
            .unwrap()
            .contains("Linux 5.10")
    );
    assert!(pc["problem"]["fix"].as_str().unwrap().contains("chmod"));
    let msr = iface("msr");
    assert_eq!(msr["problem"]["kind"], "permission", "{msr}");
    assert!(
        msr["problem"]["fix"]
            .as_str()
            .unwrap()
            .contains("CAP_SYS_RAWIO")
    );
    assert_eq!(j["would_use"], "estimate");

    let o = run_unprivileged(t.path(), &["list"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("no access"), "{out}");
    assert!(out.contains("would use: estimate"), "{out}");
}

#[test]
fn list_shows_each_interface_with_its_domains_on_fake_hardware() {
    let t = tempfile::tempdir().unwrap();
    FakePowercap::intel_server_2s(t.path()).unwrap();
    let o = bin(t.path()).args(["list", "--json"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    let j = json(&o);
    assert_eq!(j["would_use"], "powercap");
    let pc = j["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["source"] == "powercap")
        .unwrap();
    let names: Vec<&str> = pc["domains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["package-0", "dram-0", "package-1", "dram-1"]);
    let msr = j["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["source"] == "msr")
        .unwrap();
    assert_eq!(msr["problem"]["kind"], "module_missing");
    assert!(
        msr["problem"]["fix"]
            .as_str()
            .unwrap()
            .contains("modprobe msr")
    );
    let text = bin(t.path()).arg("list").output().unwrap();
    let out = String::from_utf8_lossy(&text.stdout);
    assert!(out.contains("would use: powercap"), "{out}");
}
