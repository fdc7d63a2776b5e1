//! The chassis through a BMC, end to end through the built binary: in-band through the
//! production ioctl code (the `fake-ipmi` LD_PRELOAD double of the kernel driver answers
//! on a fake `/dev/ipmi0`), through a fake `ipmitool` on `PATH`, and out-of-band with
//! `--bmc`, beside fake RAPL counters ticking every 100 ms.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use joulerun_testkit::fakehw::{CounterDriver, DrivenCounter, FakePowercap, INTEL_RANGE_UJ};
use joulerun_testkit::fakeipmi::{FakeBmc, fake_ipmitool, write_program};
use serde_json::Value;

mod common;

fn joulerun(root: &Path) -> Command {
    let mut c = common::joulerun(root, &root.join("state"));
    c.env_remove("JOULERUN_BMC_PASSWORD")
        .env_remove("LD_PRELOAD")
        .env_remove("FAKE_IPMI_SCRIPT");
    c
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

/// Two packages at 100 W each (their DRAM counters do not move), driven while the test
/// runs.
fn two_packages(root: &Path) -> CounterDriver {
    let pc = FakePowercap::intel_server_2s(root).unwrap();
    CounterDriver::start(vec![
        DrivenCounter::powercap(pc.energy_path("intel-rapl:0"), 100.0, INTEL_RANGE_UJ, 0),
        DrivenCounter::powercap(pc.energy_path("intel-rapl:1"), 100.0, INTEL_RANGE_UJ, 0),
    ])
    .unwrap()
}

#[test]
fn the_bmc_in_band_is_the_chassis_and_the_rest_of_the_system_is_over_its_own_seconds() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let _d = two_packages(root);
    // The BMC reads 300 W for the first 1.5 s of its requests, then 500 W.
    let bmc = FakeBmc::new(root, "watts 300 until 1.5\nwatts 500\nstats 250 520 410").unwrap();
    let mut c = joulerun(root);
    bmc.apply(&mut c);
    c.args(["--json", "-", "--", "sleep", "3.2"]);
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j = common::json(&o);
    let ch = domain(&j, "chassis");
    assert_eq!(ch["source"], "dcmi");
    assert_eq!(
        (ch["place"].as_str(), ch["in_total"].as_bool()),
        (Some("whole"), Some(true))
    );
    assert_eq!(ch["failed_reads"], 0, "{ch}");
    // 300 W for 1.5 s and 500 W after: the trapezoids over 1 s samples give the same
    // energy as the step (the ramp across the step is symmetric), about 1300 J.
    let e = f(&ch["energy_j"]);
    let over = f(&ch["measured_s"]);
    assert!(over > 2.8 && over < 3.5, "{ch}");
    let truth = 300.0 * 1.5 + 500.0 * (over - 1.5);
    assert!(close(e, truth, 0.06), "{e} J against {truth} J: {ch}");
    // The total is the chassis, the packages are inside it; kWh and cost follow it.
    assert_eq!(j["total"]["of"], "whole");
    assert_eq!(j["total"]["domains"], serde_json::json!(["chassis"]));
    assert!(close(f(&j["total"]["kwh"]), e / 3.6e6, 1e-9));
    assert!(close(f(&j["cost"]["amount"]), e / 3.6e6 * 0.30, 1e-9));
    assert_eq!(domain(&j, "package-0")["in_total"], false);
    // Rest of system: the chassis minus the packages' 200 W over the chassis' own
    // intervals (1 s samples beside 100 ms ticks).
    let rest = &j["attribution"]["rest_of_system"];
    let rest_j = f(&j["total"]["rest_of_system_j"]);
    let rest_s = f(&rest["measured_s"]);
    assert!(close(rest_s, over, 1e-6), "{rest}");
    assert!(
        close(rest_j, e - 200.0 * rest_s, 0.03),
        "{rest_j} J against {e} J - 200 W x {rest_s} s"
    );
    assert_eq!(rest["negative_intervals"], 0, "{rest}");
    assert!(j["ticks"].as_u64().unwrap() >= 25, "{}", j["ticks"]);
    // The chassis' share is modelled, and so is the command's share of the rest.
    let per = j["attribution"]["per_domain"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "chassis")
        .unwrap();
    assert_eq!(per["modelled"], true);
    assert_eq!(rest["modelled"], true, "{rest}");
    // What the BMC saw: DCMI Get Power Reading, mode 1, to the system interface, about
    // once a second (the probe when opening, then the reader's samples).
    let reqs = bmc.requests();
    assert!(reqs.len() >= 4 && reqs.len() <= 7, "{reqs:?}");
    for r in &reqs {
        assert_eq!((r.netfn, r.cmd), (0x2C, 0x02), "{r:?}");
        assert_eq!(r.data, [0xDC, 0x01, 0x00, 0x00], "{r:?}");
        assert_eq!((r.addr_type, r.channel), (0x0c, 0x0f), "{r:?}");
        assert!(r.replied);
    }
    let msgids: Vec<i64> = reqs.iter().map(|r| r.msgid).collect();
    assert!(msgids.windows(2).all(|w| w[1] > w[0]), "{msgids:?}");
    // The reader's samples (after the probe) are about a second apart, the last one at
    // the end of the run (bounds wide enough for a loaded machine, far from 100 ms).
    for w in reqs[1..reqs.len() - 1].windows(2) {
        let gap = w[1].t_s - w[0].t_s;
        assert!((0.5..2.0).contains(&gap), "{reqs:?}");
    }
    // The table names the interface and says which total it used.
    let c2 = {
        let mut c = joulerun(root);
        bmc.apply(&mut c);
        c.args(["--", "sleep", "1.2"]);
        c.output().unwrap()
    };
    let e = stderr(&c2);
    assert_eq!(c2.status.code(), Some(0), "{e}");
    assert!(e.contains("chassis") && e.contains("dcmi"), "{e}");
    assert!(e.contains("= chassis"), "{e}");
    assert!(e.contains("rest of system"), "{e}");
    assert!(e.contains("modelled"), "{e}");
}

#[test]
fn a_bmc_that_stops_answering_mid_run_leaves_the_chassis_partial_and_never_stalls() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let _d = two_packages(root);
    // Request 0 is the probe when opening; the reader's samples at about 0, 1 s are
    // answered; from the third (about 2 s) on, nothing comes back.
    let bmc = FakeBmc::new(root, "watts 350\nsilent from 3").unwrap();
    let mut c = joulerun(root);
    bmc.apply(&mut c);
    c.args(["--json", "-", "--", "sleep", "5"]);
    let started = Instant::now();
    let o = c.output().unwrap();
    let took = started.elapsed();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // The end waits at most 2 s for a reader stuck in a read: never longer.
    assert!(took < Duration::from_secs(5 + 4), "took {took:?}");
    let j = common::json(&o);
    let ch = domain(&j, "chassis");
    assert!(ch["failed_reads"].as_u64().unwrap() >= 1, "{ch}");
    assert!(
        ch["first_error"]
            .as_str()
            .unwrap()
            .contains("did not answer DCMI Get Power Reading"),
        "{ch}"
    );
    // Measured while it answered: about the first second, at 350 W.
    let over = f(&ch["measured_s"]);
    assert!((0.7..1.6).contains(&over), "{ch}");
    assert!(close(f(&ch["avg_power_w"]), 350.0, 0.02), "{ch}");
    // It did not cover the run: the total falls back to the parts, and says so.
    assert_eq!(j["total"]["of"], "parts", "{}", j["total"]);
    assert_eq!(ch["in_total"], false);
    let warnings = j["warnings"].to_string();
    assert!(
        warnings.contains("the total is the sum of the parts"),
        "{warnings}"
    );
    // The rest of the system is over the seconds the chassis measured, not the run:
    // 350 W - 200 W.
    let rest = &j["attribution"]["rest_of_system"];
    let rest_s = f(&rest["measured_s"]);
    assert!(close(rest_s, over, 1e-6), "{rest}");
    assert!(
        close(f(&j["total"]["rest_of_system_j"]) / rest_s, 150.0, 0.06),
        "{rest}"
    );
    // The table marks the chassis partial and not the total.
    let mut c = joulerun(root);
    let bmc = FakeBmc::new(root, "watts 350\nsilent from 3").unwrap();
    bmc.apply(&mut c);
    c.args(["--", "sleep", "3"]);
    let o = c.output().unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{e}");
    assert!(e.contains("not the total"), "{e}");
    assert!(e.contains("sum of the parts"), "{e}");
}

#[test]
fn a_bmc_that_answers_with_errors_gives_failed_reads_never_zero_watts() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let _d = two_packages(root);
    // Request 0 is the probe; the samples at about 0 and 1 s are answered, then the
    // measurement is inactive (about 2 s), the BMC says 0 W (3 s), and it answers
    // completion code 0xD5 from then on.
    let bmc = FakeBmc::new(
        root,
        "watts 400\ninactive from 3 to 3\nzero from 4 to 4\ncompletion D5 from 5",
    )
    .unwrap();
    let mut c = joulerun(root);
    bmc.apply(&mut c);
    c.args(["--json", "-", "--", "sleep", "4.5"]);
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j = common::json(&o);
    let ch = domain(&j, "chassis");
    assert!(ch["failed_reads"].as_u64().unwrap() >= 3, "{ch}");
    assert!(
        ch["first_error"].as_str().unwrap().contains("not active"),
        "{ch}"
    );
    // Only the first second was measured, at 400 W: nothing was counted as 0 W.
    assert!(close(f(&ch["avg_power_w"]), 400.0, 0.02), "{ch}");
    assert!(f(&ch["measured_s"]) < 1.6, "{ch}");
    let w = j["warnings"].to_string();
    assert!(w.contains("chassis:") && w.contains("reads failed"), "{w}");
}

#[test]
fn a_bmc_without_dcmi_power_is_refused_when_opening_with_the_reason() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    FakePowercap::intel_server_2s(root).unwrap();
    let bmc = FakeBmc::new(root, "watts 300\ncompletion C1").unwrap();
    // Named: joulerun stops before the command starts.
    let marker = root.join("ran");
    let mut c = joulerun(root);
    bmc.apply(&mut c);
    c.args(["--chassis", "dcmi", "--", "touch", marker.to_str().unwrap()]);
    let o = c.output().unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(125), "{e}");
    assert!(e.contains("cannot use --chassis dcmi"), "{e}");
    assert!(e.contains("completion code 0xC1 (invalid command)"), "{e}");
    assert!(e.contains("fix:"), "{e}");
    assert!(!marker.exists());
    // auto: the run goes on without a chassis; the total is the parts.
    let mut c = joulerun(root);
    bmc.apply(&mut c);
    c.args(["--json", "-", "--", "true"]);
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j = common::json(&o);
    assert_eq!(j["total"]["of"], "parts");
    // list: the reason and the fix, under the chassis.
    let mut c = joulerun(root);
    bmc.apply(&mut c);
    c.args(["list"]);
    let o = c.output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(out.contains("Chassis (--chassis)"), "{out}");
    assert!(out.contains("dcmi"), "{out}");
    assert!(out.contains("invalid command"), "{out}");
    assert!(out.contains("--chassis hwmon"), "{out}");
    // A measurement that is not active: "inactive", with what to check.
    let bmc = FakeBmc::new(root, "watts 300\ninactive").unwrap();
    let mut c = joulerun(root);
    bmc.apply(&mut c);
    c.args(["list", "--json"]);
    let o = c.output().unwrap();
    let l: Value = serde_json::from_slice(&o.stdout).unwrap();
    let chassis = l["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["category"] == "chassis")
        .unwrap()
        .clone();
    let dcmi = chassis["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["source"] == "dcmi")
        .unwrap()
        .clone();
    assert_eq!(dcmi["available"], false);
    assert_eq!(dcmi["problem"]["kind"], "inactive", "{dcmi}");
}

#[test]
fn list_shows_each_chassis_interface_with_its_reason_and_fix() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    FakePowercap::intel_server_2s(root).unwrap();
    // No /dev/ipmi0, no tool in the tree: dcmi needs the driver, tools are missing.
    let mut c = joulerun(root);
    c.args(["list"]);
    let o = c.output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(out.contains("modprobe ipmi_si ipmi_devintf"), "{out}");
    assert!(
        out.contains("neither ipmitool nor ipmi-dcmi (freeipmi) is installed"),
        "{out}"
    );
    assert!(out.contains("give --bmc HOST"), "{out}");
    // With a working BMC: it is what a run would use.
    let bmc = FakeBmc::new(root, "watts 250").unwrap();
    let mut c = joulerun(root);
    bmc.apply(&mut c);
    c.args(["list", "--json"]);
    let o = c.output().unwrap();
    let l: Value = serde_json::from_slice(&o.stdout).unwrap();
    let chassis = l["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["category"] == "chassis")
        .unwrap()
        .clone();
    assert_eq!(chassis["would_use"], "dcmi", "{chassis}");
    let kinds: Vec<&str> = chassis["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["source"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["dcmi", "bmc", "tools", "hwmon"]);
    // A tool that finds no BMC: its own words, classified (ipmitool 1.8.19's message).
    std::fs::remove_file(&bmc.device).unwrap();
    let bin = root.join("bin");
    write_program(
        &bin,
        "ipmitool",
        "echo 'Could not open device at /dev/ipmi0 or /dev/ipmi/0 or /dev/ipmidev/0: No such file or directory' >&2\nexit 1\n",
    )
    .unwrap();
    let mut c = joulerun(root);
    c.env("PATH", format!("{}:/usr/bin:/bin", bin.display()));
    c.args(["list"]);
    let o = c.output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("ipmitool (exit status 1): Could not open device"),
        "{out}"
    );
}

#[test]
#[cfg_attr(
    all(probe_root, not(probe_run_as_nobody)),
    ignore = "as root it runs joulerun as uid 65534, which cannot reach the temporary or target directory here (probe_run_as_nobody): chmod o+x the directories above them, or run as a normal user"
)]
fn an_unreadable_device_is_a_permission_problem_with_its_fix() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    FakePowercap::intel_server_2s(root).unwrap();
    let bmc = FakeBmc::new(root, "watts 250").unwrap();
    std::fs::set_permissions(&bmc.device, std::fs::Permissions::from_mode(0o000)).unwrap();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut c = joulerun(root);
    c.env("XDG_STATE_HOME", "/nonexistent").args(["list"]);
    if nix::unistd::geteuid().is_root() {
        c.uid(65534).gid(65534);
    }
    let o = c.output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        out.contains(&format!(
            "cannot open {}: permission denied",
            bmc.device.display()
        )),
        "{out}"
    );
    assert!(out.contains("chmod g+rw"), "{out}");
}

#[test]
fn the_tools_path_reads_a_fake_ipmitool_whose_readings_change() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let _d = two_packages(root);
    // No device node in the tree: the tools path; ipmitool inside the tree, on PATH.
    let bin = root.join("bin");
    fake_ipmitool(&bin, &[(1.5, 280), (f64::INFINITY, 420)]).unwrap();
    let mut c = joulerun(root);
    c.env("PATH", format!("{}:/usr/bin:/bin", bin.display()));
    c.args(["--json", "-", "--", "sleep", "3.2"]);
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j = common::json(&o);
    let ch = domain(&j, "chassis");
    assert_eq!(ch["source"], "tools", "{ch}");
    assert_eq!(ch["failed_reads"], 0, "{ch}");
    let over = f(&ch["measured_s"]);
    let e = f(&ch["energy_j"]);
    // Its clock starts at the probe, a little before the run: the step comes a little
    // early in the run's time, so the energy is between 280 W and 420 W throughout.
    assert!(e > 280.0 * over && e < 420.0 * over, "{ch}");
    let truth = 280.0 * 1.5 + 420.0 * (over - 1.5);
    assert!(close(e, truth, 0.08), "{e} J against {truth} J: {ch}");
    assert_eq!(j["total"]["of"], "whole");
    let rest_j = f(&j["total"]["rest_of_system_j"]);
    let rest_s = f(&j["attribution"]["rest_of_system"]["measured_s"]);
    assert!(
        close(rest_j, e - 200.0 * rest_s, 0.04),
        "{rest_j} {e} {rest_s}"
    );
    // No password is handed to a local tool.
    let env = std::fs::read_to_string(bin.join("ipmitool.env")).unwrap();
    assert!(env.lines().all(|l| l == "IPMI_PASSWORD=unset"), "{env}");
    let argv = std::fs::read_to_string(bin.join("ipmitool.argv")).unwrap();
    assert!(argv.lines().all(|l| l == "dcmi power reading"), "{argv}");
}

#[test]
fn a_remote_bmc_gets_its_password_through_the_environment_only() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let _d = two_packages(root);
    let bin = root.join("bin");
    fake_ipmitool(&bin, &[(f64::INFINITY, 330)]).unwrap();
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let mut c = joulerun(root);
    c.env("PATH", &path)
        .env("JOULERUN_BMC_PASSWORD", "s3cr3t-pw")
        .args([
            "--bmc",
            "bmc-7.example",
            "--bmc-user",
            "operator",
            "--json",
            "-",
            "--",
            "sleep",
            "2.2",
        ]);
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j = common::json(&o);
    let ch = domain(&j, "chassis");
    // In-band comes first, but there is no device here: the remote BMC is read.
    assert_eq!(ch["source"], "bmc", "{ch}");
    assert!(close(f(&ch["avg_power_w"]), 330.0, 0.01), "{ch}");
    let argv = std::fs::read_to_string(bin.join("ipmitool.argv")).unwrap();
    for l in argv.lines() {
        assert_eq!(
            l,
            "-I lanplus -H bmc-7.example -U operator -E -N 1 -R 2 dcmi power reading"
        );
    }
    let env = std::fs::read_to_string(bin.join("ipmitool.env")).unwrap();
    assert!(env.lines().all(|l| l == "IPMI_PASSWORD=s3cr3t-pw"), "{env}");
    // The password is nowhere in what joulerun wrote.
    assert!(!String::from_utf8_lossy(&o.stdout).contains("s3cr3t"));
    assert!(!stderr(&o).contains("s3cr3t"));

    // From a file named by a flag, first line only; --chassis bmc insists on it.
    let pw = root.join("pw");
    std::fs::write(&pw, "from-file\nignored\n").unwrap();
    std::fs::remove_file(bin.join("ipmitool.env")).unwrap();
    let mut c = joulerun(root);
    c.env("PATH", &path).args([
        "--bmc",
        "10.1.2.3",
        "--bmc-password-file",
        pw.to_str().unwrap(),
        "--chassis",
        "bmc",
        "--",
        "true",
    ]);
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let env = std::fs::read_to_string(bin.join("ipmitool.env")).unwrap();
    assert!(env.lines().all(|l| l == "IPMI_PASSWORD=from-file"), "{env}");

    // Usage errors name where a value came from, never the password.
    for (args, envpw, needle) in [
        (
            vec!["--bmc", "h", "--", "true"],
            None,
            "needs the BMC's password",
        ),
        (
            vec!["--chassis", "bmc", "--", "true"],
            Some("x"),
            "--chassis bmc reads the BMC named by --bmc HOST",
        ),
        (
            vec!["--bmc=-oProxyCommand=x", "--", "true"],
            Some("x"),
            "invalid host",
        ),
        (
            vec!["--bmc", "h", "--chassis", "hwmon", "--", "true"],
            Some("x"),
            "--bmc has no effect with --chassis hwmon",
        ),
        (
            vec!["--bmc", "h", "--", "true"],
            Some("123456789012345678901"),
            "longer than the 20 bytes",
        ),
        (vec!["--bmc-user", "u", "--", "true"], Some("x"), "--bmc"),
    ] {
        let mut c = joulerun(root);
        c.env("PATH", &path).args(&args);
        if let Some(p) = envpw {
            c.env("JOULERUN_BMC_PASSWORD", p);
        }
        let o = c.output().unwrap();
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
        assert!(e.contains(needle), "{args:?}: {e}");
        assert!(!e.contains("123456789012345678901"), "{e}");
    }
    let missing = root.join("no-such-file");
    let mut c = joulerun(root);
    c.args([
        "--bmc",
        "h",
        "--bmc-password-file",
        missing.to_str().unwrap(),
        "--",
        "true",
    ]);
    let e = stderr(&c.output().unwrap());
    assert!(
        e.contains("cannot read the BMC password file") && e.contains("--bmc-password-file"),
        "{e}"
    );
}
