//! The battery reader against fake power-supply trees built with
//! `joulerun_testkit::fakebattery`, through the production code path: the four ways of
//! reading a discharge, firmware steps, AC power at open and mid-run, peripheral batteries,
//! failures, permissions, FIFOs, and no allocation on steady reads.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use joulerun::counter::Accumulator;
use joulerun::sampler::Sampler;
use joulerun::sources::battery::{self, BatteryMethod, BatterySource};
use joulerun::sources::{
    self, Cadence, Category, Device, DomainKind, OpenContext, Place, ReadError, Reading, Source,
    SourceKind, UnavailableKind, Wrap,
};
use joulerun::sysroot::SysRoot;
use joulerun_testkit::fakebattery::{FakePowerSupply, Supply};
use joulerun_testkit::fakehw::{CounterDriver, DrivenCounter};
use joulerun_testkit::fakehwmon::mkfifo;

mod alloc_count;
use alloc_count::allocations_in;

fn ctx(root: &Path) -> OpenContext {
    OpenContext::for_root(SysRoot::new(root))
}

fn read1(s: &mut BatterySource) -> Result<Reading, ReadError> {
    let mut out = Vec::new();
    s.read(&mut out);
    assert_eq!(out.len(), s.domains().len());
    out.remove(0)
}

fn watts(r: &Result<Reading, ReadError>) -> f64 {
    match r {
        Ok(Reading::Power { watts }) => *watts,
        other => panic!("not a power: {other:?}"),
    }
}

/// A counter reading: value and joules per unit.
fn counter(r: &Result<Reading, ReadError>) -> (u64, f64) {
    match r {
        Ok(Reading::Counter {
            value,
            wrap,
            joules_per_unit,
        }) => {
            assert_eq!(*wrap, Wrap::Full64);
            (*value, *joules_per_unit)
        }
        other => panic!("not a counter: {other:?}"),
    }
}

#[test]
fn a_discharging_laptop_battery_is_the_whole_machine_and_the_mouse_is_ignored() {
    let t = tempfile::tempdir().unwrap();
    FakePowerSupply::laptop_discharging(t.path(), 12.0).unwrap();
    let mut s = BatterySource::open(&ctx(t.path())).unwrap();
    assert_eq!(s.domains().len(), 1);
    let d = &s.domains()[0];
    assert_eq!(d.name, "BAT0");
    assert_eq!(d.kind, DomainKind::Battery);
    assert_eq!(
        d.device,
        Device::Battery {
            name: "BAT0".to_string()
        }
    );
    assert_eq!(d.place, Place::Whole);
    assert_eq!(d.source, SourceKind::Battery);
    assert_eq!(d.category(), Category::Battery);
    assert_eq!(s.methods(), [BatteryMethod::PowerNow]);
    assert_eq!(s.cadence(), Cadence::Every(Duration::from_millis(500)));
    assert!(s.warnings().is_empty(), "{:?}", s.warnings());
    assert!((watts(&read1(&mut s)) - 12.0).abs() < 1e-9);

    let survey = battery::survey(&ctx(t.path()));
    assert_eq!(survey.len(), 2, "the AC adapter is not a battery");
    assert_eq!(survey[0].name, "BAT0");
    assert_eq!(survey[0].method, Some(BatteryMethod::PowerNow));
    assert_eq!(survey[0].skipped, None);
    assert_eq!(survey[1].scope.as_deref(), Some("Device"));
    assert!(
        survey[1]
            .skipped
            .as_deref()
            .unwrap()
            .starts_with("a peripheral's battery (scope: Device)")
    );
    serde_json::to_value(&survey).unwrap();

    // Through `sources::open` too.
    let b = sources::open(SourceKind::Battery, &ctx(t.path())).unwrap();
    assert_eq!(b.domains()[0].name, "BAT0");
}

#[test]
fn a_signed_power_now_counts_by_its_magnitude() {
    let t = tempfile::tempdir().unwrap();
    let f = FakePowerSupply::new(t.path()).unwrap();
    f.add(&Supply::battery("BAT1").power_now_uw(-15_250_000))
        .unwrap();
    let mut s = BatterySource::open(&ctx(t.path())).unwrap();
    assert!((watts(&read1(&mut s)) - 15.25).abs() < 1e-9);
    f.set("BAT1", "power_now", 9_000_000).unwrap();
    assert!((watts(&read1(&mut s)) - 9.0).abs() < 1e-9);
}

#[test]
fn current_times_voltage_when_there_is_no_power_now() {
    let t = tempfile::tempdir().unwrap();
    let f = FakePowerSupply::new(t.path()).unwrap();
    f.add(
        &Supply::battery("BAT0")
            .current_now_ua(-1_500_000)
            .voltage_now_uv(11_400_000)
            .charge_now_uah(3_000_000),
    )
    .unwrap();
    let mut s = BatterySource::open(&ctx(t.path())).unwrap();
    assert_eq!(s.methods(), [BatteryMethod::CurrentVoltage]);
    assert!((watts(&read1(&mut s)) - 17.1).abs() < 1e-9);
    // Positive while discharging, as many ACPI batteries report it: the same.
    f.set("BAT0", "current_now", 1_500_000).unwrap();
    assert!((watts(&read1(&mut s)) - 17.1).abs() < 1e-9);
    // 0 A while discharging: the firmware has no rate yet; missing, not 0 W.
    f.set("BAT0", "current_now", 0).unwrap();
    let e = read1(&mut s).unwrap_err();
    assert!(!e.gone);
    assert!(
        e.message.contains("current_now reads 0 while discharging"),
        "{}",
        e.message
    );
}

#[test]
fn the_drop_of_energy_now_is_a_counter_unchanged_between_firmware_updates() {
    let t = tempfile::tempdir().unwrap();
    let f = FakePowerSupply::new(t.path()).unwrap();
    f.add(&Supply::battery("BAT0").energy_now_uwh(40_000_000))
        .unwrap();
    let mut s = BatterySource::open(&ctx(t.path())).unwrap();
    assert_eq!(s.methods(), [BatteryMethod::EnergyDrop]);
    let mut acc = Accumulator::for_domain(&s.domains()[0]);
    // The first reading is the zero point.
    let r = read1(&mut s);
    assert_eq!(counter(&r), (0, battery::ENERGY_UNIT_J));
    acc.update(0.0, r.unwrap());
    // Until the firmware updates: nothing new.
    assert_eq!(read1(&mut s), Ok(Reading::Unchanged));
    assert_eq!(read1(&mut s), Ok(Reading::Unchanged));
    // 10 mWh consumed = 36 J.
    f.set("BAT0", "energy_now", 39_990_000).unwrap();
    let r = read1(&mut s);
    assert_eq!(counter(&r).0, 10_000);
    acc.update(3.0, r.unwrap());
    assert!((acc.total_j - 36.0).abs() < 1e-9, "{}", acc.total_j);
    assert_eq!(read1(&mut s), Ok(Reading::Unchanged));
    f.set("BAT0", "energy_now", 39_985_000).unwrap();
    let r = read1(&mut s);
    assert_eq!(counter(&r).0, 15_000);
    acc.update(6.0, r.unwrap());
    assert!((acc.total_j - 54.0).abs() < 1e-9, "{}", acc.total_j);
    // A rise while discharging (a recalibration): that interval is unknown; the next
    // reading is a base again, never a decrease of the counter.
    f.set("BAT0", "energy_now", 39_995_000).unwrap();
    assert!(read1(&mut s).is_err());
    assert_eq!(counter(&read1(&mut s)).0, 15_000);
}

#[test]
fn the_drop_of_charge_now_times_voltage() {
    let t = tempfile::tempdir().unwrap();
    let f = FakePowerSupply::new(t.path()).unwrap();
    f.add(
        &Supply::battery("BAT0")
            .charge_now_uah(3_000_000)
            .voltage_now_uv(12_000_000),
    )
    .unwrap();
    let mut s = BatterySource::open(&ctx(t.path())).unwrap();
    assert_eq!(s.methods(), [BatteryMethod::ChargeDrop]);
    let mut acc = Accumulator::for_domain(&s.domains()[0]);
    acc.update(0.0, read1(&mut s).unwrap());
    assert_eq!(read1(&mut s), Ok(Reading::Unchanged));
    // 1000 µAh at 12 V = 12 mWh = 43.2 J.
    f.set("BAT0", "charge_now", 2_999_000).unwrap();
    let r = read1(&mut s);
    assert_eq!(counter(&r), (1000 * 12_000_000, battery::CHARGE_UNIT_J));
    acc.update(4.0, r.unwrap());
    assert!((acc.total_j - 43.2).abs() < 1e-9, "{}", acc.total_j);
}

#[test]
fn a_driven_battery_drain_integrates_to_the_truth() {
    let t = tempfile::tempdir().unwrap();
    let f = FakePowerSupply::new(t.path()).unwrap();
    f.add(&Supply::battery("BAT0").energy_now_uwh(50_000_000))
        .unwrap();
    let update = Duration::from_millis(200);
    let _driver = CounterDriver::start(vec![DrivenCounter::battery_energy(
        f.path("BAT0", "energy_now"),
        20.0,
        50_000_000,
        update,
    )])
    .unwrap();
    let s = BatterySource::open(&ctx(t.path())).unwrap();
    let mut sampler = Sampler::new(vec![Box::new(s)], &[]);
    assert!(sampler.is_slow(0));
    sampler.start();
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2200) {
        std::thread::sleep(Duration::from_millis(100));
        sampler.tick();
    }
    sampler.final_tick();
    let e = sampler.accumulators()[0].total_j;
    let el = sampler.elapsed_s();
    // The firmware steps every 200 ms: what is counted is the drain between the last
    // update before the start and the last one before the end, so it is within one step
    // (4 J at 20 W) of the truth, plus a little for the threads' scheduling.
    let truth = 20.0 * el;
    assert!(
        (e - truth).abs() <= 20.0 * (update.as_secs_f64() + 0.05),
        "{e} J over {el} s, want about {truth} J"
    );
    assert!(e > 0.0);
    assert_eq!(sampler.health()[0].failed_reads, 0);
    assert_eq!(sampler.accumulators()[0].glitches, 0);
}

#[test]
fn on_ac_power_at_open_there_is_no_battery_reading() {
    for status in ["Charging", "Full", "Not charging", "Unknown"] {
        let t = tempfile::tempdir().unwrap();
        let f = FakePowerSupply::new(t.path()).unwrap();
        f.add(&Supply::mains("AC", true))
            .unwrap()
            .add(&Supply::battery("BAT0").status(status).power_now(0.0))
            .unwrap();
        let u = BatterySource::open(&ctx(t.path())).unwrap_err();
        // Present but with nothing to measure now: the run says so instead of 0 W.
        assert_eq!(u.kind, UnavailableKind::Inactive);
        assert_eq!(u.source_kind, SourceKind::Battery);
        assert_eq!(
            u.reason,
            format!("on AC power (status: {status}): no battery reading")
        );
        assert!(u.fix.unwrap().contains("unplug the charger"));
        let survey = battery::survey(&ctx(t.path()));
        assert_eq!(survey[0].status.as_deref(), Some(status));
        assert!(
            survey[0]
                .skipped
                .as_deref()
                .unwrap()
                .starts_with("on AC power")
        );
    }
    // Two batteries: both named.
    let t = tempfile::tempdir().unwrap();
    let f = FakePowerSupply::new(t.path()).unwrap();
    f.add(&Supply::battery("BAT0").status("Charging").power_now(20.0))
        .unwrap()
        .add(&Supply::battery("BAT1").status("Full").power_now(0.0))
        .unwrap();
    let u = BatterySource::open(&ctx(t.path())).unwrap_err();
    assert_eq!(
        u.reason,
        "on AC power (status: BAT0 Charging, BAT1 Full): no battery reading"
    );
    // One discharging, the other resting: the resting one is left out with a warning.
    f.set_status("BAT0", "Discharging").unwrap();
    let s = BatterySource::open(&ctx(t.path())).unwrap();
    assert_eq!(s.domains()[0].name, "BAT0");
    assert_eq!(s.domains().len(), 1);
    assert!(
        s.warnings()[0].starts_with("BAT1 left out: on AC power (status: Full)"),
        "{:?}",
        s.warnings()
    );
}

#[test]
fn plugged_in_mid_run_is_missing_energy_not_zero_watts() {
    let t = tempfile::tempdir().unwrap();
    let f = FakePowerSupply::laptop_discharging(t.path(), 12.0).unwrap();
    let mut s = BatterySource::open(&ctx(t.path())).unwrap();
    assert!(read1(&mut s).is_ok());
    f.set_status("BAT0", "Charging").unwrap();
    let e = read1(&mut s).unwrap_err();
    assert!(!e.gone, "the battery is still there");
    assert!(
        e.message
            .starts_with("BAT0: on AC power since the previous reading (status: Charging)"),
        "{}",
        e.message
    );
    assert!(e.message.contains("not 0 W"), "{}", e.message);
    // Unplugged again: readings resume.
    f.set_status("BAT0", "Discharging").unwrap();
    assert!((watts(&read1(&mut s)) - 12.0).abs() < 1e-9);

    // The counter path: after a stretch on AC, the first reading is a new base.
    let t = tempfile::tempdir().unwrap();
    let f = FakePowerSupply::new(t.path()).unwrap();
    f.add(&Supply::battery("BAT0").energy_now_uwh(40_000_000))
        .unwrap();
    let mut s = BatterySource::open(&ctx(t.path())).unwrap();
    assert_eq!(counter(&read1(&mut s)).0, 0);
    f.set("BAT0", "energy_now", 39_000_000).unwrap();
    assert_eq!(counter(&read1(&mut s)).0, 1_000_000);
    f.set_status("BAT0", "Charging").unwrap();
    f.set("BAT0", "energy_now", 45_000_000).unwrap();
    assert!(read1(&mut s).is_err());
    f.set_status("BAT0", "Discharging").unwrap();
    // Charged to 45 Wh meanwhile: not a drop of -6 Wh, and the counter never goes down.
    assert_eq!(counter(&read1(&mut s)).0, 1_000_000);
    assert_eq!(read1(&mut s), Ok(Reading::Unchanged));
    f.set("BAT0", "energy_now", 44_999_000).unwrap();
    assert_eq!(counter(&read1(&mut s)).0, 1_001_000);
}

#[test]
fn peripheral_batteries_alone_or_no_battery_are_not_present() {
    let t = tempfile::tempdir().unwrap();
    let u = BatterySource::open(&ctx(t.path())).unwrap_err();
    assert_eq!(u.kind, UnavailableKind::NotPresent);
    assert!(u.reason.starts_with("no battery:"), "{}", u.reason);
    let f = FakePowerSupply::new(t.path()).unwrap();
    f.add(&Supply::mains("AC", true)).unwrap();
    let u = BatterySource::open(&ctx(t.path())).unwrap_err();
    assert_eq!(
        u.reason,
        format!(
            "no battery: no power supply of type Battery under {}",
            t.path().join("sys/class/power_supply").display()
        )
    );
    f.add(&Supply::peripheral_battery("hid-00:1f:20:aa:bb:cc-battery"))
        .unwrap();
    let u = BatterySource::open(&ctx(t.path())).unwrap_err();
    assert_eq!(u.kind, UnavailableKind::NotPresent);
    assert!(
        u.reason.starts_with(
            "no battery of this machine, only peripheral ones (hid-00:1f:20:aa:bb:cc-battery: \
             scope Device)"
        ),
        "{}",
        u.reason
    );
    // A battery with scope System is the machine's.
    f.add(&Supply::battery("BAT0").scope("System").power_now(7.0))
        .unwrap();
    let s = BatterySource::open(&ctx(t.path())).unwrap();
    assert_eq!(s.domains()[0].name, "BAT0");
}

#[test]
fn zero_power_garbage_and_a_removed_battery() {
    let t = tempfile::tempdir().unwrap();
    let f = FakePowerSupply::laptop_discharging(t.path(), 12.0).unwrap();
    let mut s = BatterySource::open(&ctx(t.path())).unwrap();
    f.set("BAT0", "power_now", 0).unwrap();
    let e = read1(&mut s).unwrap_err();
    assert!(
        e.message.contains("power_now reads 0 while discharging"),
        "{}",
        e.message
    );
    for garbage in [&b"banana\n"[..], b"\n", b"12.5\n"] {
        f.set_raw("BAT0", "power_now", garbage).unwrap();
        let e = read1(&mut s).unwrap_err();
        assert!(!e.gone);
        assert!(e.message.contains("BAT0/power_now"), "{}", e.message);
    }
    f.set_raw("BAT0", "status", b"").unwrap();
    let e = read1(&mut s).unwrap_err();
    assert!(e.message.contains("BAT0/status: no data"), "{}", e.message);
    f.set_status("BAT0", "Discharging").unwrap();
    f.set("BAT0", "power_now", 8_000_000).unwrap();
    assert!((watts(&read1(&mut s)) - 8.0).abs() < 1e-9);
    // Taken out: gone for good.
    f.remove("BAT0").unwrap();
    let e = read1(&mut s).unwrap_err();
    assert!(e.gone, "{e:?}");
    assert!(e.message.contains("has disappeared"), "{}", e.message);
}

#[test]
fn a_fifo_planted_in_a_battery_is_refused_without_blocking() {
    for victim in ["power_now", "status", "type"] {
        let t = tempfile::tempdir().unwrap();
        let f = FakePowerSupply::laptop_discharging(t.path(), 12.0).unwrap();
        let p = f.path("BAT0", victim);
        std::fs::remove_file(&p).unwrap();
        mkfifo(&p).unwrap();
        let root = t.path().to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send((
                BatterySource::open(&ctx(&root)).map(|s| s.domains().len()),
                battery::survey(&ctx(&root)),
            ));
        });
        let (r, _survey) = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("blocked on a FIFO as {victim}"));
        let u = r.unwrap_err();
        match victim {
            // Not a battery any more, and the mouse's is a peripheral.
            "type" => assert_eq!(u.kind, UnavailableKind::NotPresent, "{u:?}"),
            _ => {
                assert_eq!(u.kind, UnavailableKind::Invalid, "{u:?}");
                assert!(u.reason.contains(victim), "{}", u.reason);
                assert!(u.reason.contains("FIFO"), "{}", u.reason);
            }
        }
    }
}

#[test]
fn no_allocation_on_steady_reads() {
    let t = tempfile::tempdir().unwrap();
    let f = FakePowerSupply::new(t.path()).unwrap();
    f.add(&Supply::battery("BAT0").power_now(10.0))
        .unwrap()
        .add(
            &Supply::battery("BAT1")
                .current_now_ua(-1_000_000)
                .voltage_now_uv(12_000_000),
        )
        .unwrap()
        .add(&Supply::battery("BAT2").energy_now_uwh(40_000_000))
        .unwrap()
        .add(
            &Supply::battery("BAT3")
                .charge_now_uah(3_000_000)
                .voltage_now_uv(12_000_000),
        )
        .unwrap();
    let mut s = BatterySource::open(&ctx(t.path())).unwrap();
    assert_eq!(
        s.methods(),
        [
            BatteryMethod::PowerNow,
            BatteryMethod::CurrentVoltage,
            BatteryMethod::EnergyDrop,
            BatteryMethod::ChargeDrop
        ]
    );
    let mut out = Vec::new();
    s.read(&mut out);
    let n = allocations_in(|| {
        for _ in 0..100 {
            s.read(&mut out);
        }
    });
    assert_eq!(n, 0, "{n} allocations in 100 reads");
    assert!(out.iter().all(|r| r.is_ok()), "{out:?}");
    // And with the counter moving between reads (the test's writes are not counted).
    let mut level = 40_000_000;
    let mut moved = 0;
    for _ in 0..10 {
        level -= 1000;
        f.set("BAT2", "energy_now", level).unwrap();
        moved += allocations_in(|| s.read(&mut out));
        assert!(
            matches!(out[2], Ok(Reading::Counter { .. })),
            "{:?}",
            out[2]
        );
    }
    assert_eq!(moved, 0);
}

// ---------------------------------------------------------------------------------------
// Permission: as root, run the checks in a child with uid 65534 (see tests/permissions.rs).
// ---------------------------------------------------------------------------------------

const CHILD_ENV: &str = "JOULERUN_TEST_BATTERY_UNPRIVILEGED_ROOT";
const CHILD_OK: &str = "unprivileged-battery-checks-passed";

fn check_permission(root: &Path) {
    let u = BatterySource::open(&ctx(root)).unwrap_err();
    assert_eq!(u.kind, UnavailableKind::Permission, "{u:?}");
    let p = root.join("sys/class/power_supply/BAT0/power_now");
    assert_eq!(
        u.reason,
        format!("cannot read {}: permission denied", p.display())
    );
    assert!(
        u.fix
            .unwrap()
            .contains(&format!("sudo chmod o+r {}", p.display()))
    );
}

#[test]
fn an_unreadable_battery_is_a_permission_problem_naming_the_file() {
    if let Some(root) = std::env::var_os(CHILD_ENV) {
        check_permission(Path::new(&root));
        println!("{CHILD_OK}");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let f = FakePowerSupply::laptop_discharging(t.path(), 12.0).unwrap();
    let root_user = nix::unistd::geteuid().is_root();
    f.chmod("BAT0", "power_now", if root_user { 0o400 } else { 0o000 })
        .unwrap();
    if !root_user {
        check_permission(t.path());
        return;
    }
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for d in t.path().ancestors().skip(1) {
        if std::fs::metadata(d).unwrap().permissions().mode() & 0o001 == 0 {
            eprintln!("SKIPPED: {} is not searchable by other users", d.display());
            return;
        }
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(&exe)
        .args([
            "an_unreadable_battery_is_a_permission_problem_naming_the_file",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, t.path())
        .uid(65534)
        .gid(65534)
        .output();
    match out {
        Ok(out) => {
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            if !out.status.success()
                && stderr.contains("Permission denied")
                && !stdout.contains("running 1 test")
            {
                eprintln!("SKIPPED: the unprivileged child could not run: {stderr}");
                return;
            }
            assert!(
                out.status.success() && stdout.contains(CHILD_OK),
                "child failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
                out.status
            );
        }
        Err(e) => eprintln!("SKIPPED: cannot start the test as uid 65534 ({e})"),
    }
}
