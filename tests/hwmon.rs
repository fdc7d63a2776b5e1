//! The hwmon reader against fake sysfs trees built with `joulerun_testkit::fakehwmon`,
//! through the production code path: discovery and classification, channel choice, places,
//! readings over time (also through the sampler's reader thread), failures, permissions,
//! FIFOs, and no allocation on steady reads.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use joulerun::counter::Accumulator;
use joulerun::sampler::Sampler;
use joulerun::sources::hwmon::{self, ChannelKind, ChipClass, HwmonSource};
use joulerun::sources::{
    self, Cadence, Device, DomainKind, OpenContext, Place, ReadError, Reading, Source, SourceKind,
    UnavailableKind, Wrap,
};
use joulerun::sysroot::SysRoot;
use joulerun_testkit::fakehw::{CounterDriver, DrivenCounter};
use joulerun_testkit::fakehwmon::{FakeHwmon, HwmonChip};

mod alloc_count;
use alloc_count::allocations_in;

fn ctx(root: &Path) -> OpenContext {
    OpenContext::for_root(SysRoot::new(root))
}

fn read(s: &mut HwmonSource) -> Vec<Result<Reading, ReadError>> {
    let mut out = Vec::new();
    s.read(&mut out);
    assert_eq!(out.len(), s.domains().len());
    out
}

fn names(s: &HwmonSource) -> Vec<&str> {
    s.domains().iter().map(|d| d.name.as_str()).collect()
}

fn watts(r: &Result<Reading, ReadError>) -> f64 {
    match r {
        Ok(Reading::Power { watts }) => *watts,
        other => panic!("not a power: {other:?}"),
    }
}

fn counter(r: &Result<Reading, ReadError>) -> (u64, Wrap) {
    match r {
        Ok(Reading::Counter {
            value,
            wrap,
            joules_per_unit,
        }) => {
            assert_eq!(*joules_per_unit, 1e-6);
            (*value, *wrap)
        }
        other => panic!("not a counter: {other:?}"),
    }
}

#[test]
fn workstation_gpus_are_ordered_by_pci_address_and_the_igpu_is_inside_the_package() {
    let t = tempfile::tempdir().unwrap();
    let f = FakeHwmon::workstation(t.path()).unwrap();
    let mut s = HwmonSource::open_gpu(&ctx(t.path())).unwrap();
    assert_eq!(names(&s), ["gpu-0", "gpu-1"]);
    let d = s.domains();
    assert!(d.iter().all(|d| d.kind == DomainKind::Gpu
        && d.source == SourceKind::Hwmon
        && d.category() == sources::Category::Gpu
        && !d.estimated));
    // 0000:00:02.0 sorts before 0000:03:00.0: the integrated i915 is gpu-0.
    assert_eq!(
        d[0].device,
        Device::Gpu {
            index: 0,
            uuid: None,
            name: Some("i915".to_string())
        }
    );
    assert_eq!(d[0].place, Place::Inside("package-0".to_string()));
    assert!(!d[0].in_total());
    assert_eq!(
        d[1].device,
        Device::Gpu {
            index: 1,
            uuid: None,
            name: Some("AMD Radeon RX 6800".to_string())
        }
    );
    assert_eq!(d[1].place, Place::Part);
    assert!(d[1].in_total());
    assert_eq!(
        s.paths(),
        [
            f.attr_path(2, "energy1_input").as_path(),
            f.attr_path(1, "power1_average").as_path()
        ]
    );
    let out = read(&mut s);
    // i915 keeps a 64-bit µJ value in the driver.
    assert_eq!(counter(&out[0]), (1_000_000, Wrap::Full64));
    assert!((watts(&out[1]) - 45.0).abs() < 1e-9);
    assert_eq!(s.cadence(), Cadence::Every(Duration::from_millis(100)));
    assert!(s.warnings().is_empty(), "{:?}", s.warnings());

    // No chassis, no other meter here; temperature chips are not meters.
    let u = HwmonSource::open_chassis(&ctx(t.path())).unwrap_err();
    assert_eq!(u.kind, UnavailableKind::NotPresent);
    assert_eq!(
        u.reason,
        "no power meter or power supply among the 2 hwmon chips with power readings \
         (found: amdgpu (hwmon1), i915 (hwmon2))"
    );
    assert!(u.fix.unwrap().contains("acpi_power_meter"));
    let u = HwmonSource::open_meters(&ctx(t.path())).unwrap_err();
    assert_eq!(u.kind, UnavailableKind::NotPresent);

    // The survey says what each chip is, and why the others are skipped.
    let survey = hwmon::survey(&ctx(t.path()));
    assert_eq!(survey.len(), 4);
    assert_eq!(survey[0].driver.as_deref(), Some("nct6775"));
    assert_eq!(survey[0].class, None);
    assert_eq!(
        survey[0].skipped.as_deref(),
        Some("no power or energy channel (a temperature, voltage or fan sensor)")
    );
    assert_eq!(survey[1].class, Some(ChipClass::Gpu));
    assert_eq!(survey[1].pci_address.as_deref(), Some("0000:03:00.0"));
    assert_eq!(survey[1].domains, ["gpu-1"]);
    assert_eq!(survey[1].channels.len(), 1);
    assert_eq!(survey[1].channels[0].kind, ChannelKind::PowerAverage);
    assert_eq!(survey[1].channels[0].label.as_deref(), Some("PPT"));
    assert!(survey[1].channels[0].used);
    assert_eq!(survey[2].domains, ["gpu-0"]);
    assert!(
        survey[2]
            .place_reason
            .as_deref()
            .unwrap()
            .contains("integrated GPU (PCI 0000:00:02.0)")
    );
    assert_eq!(survey[3].driver.as_deref(), Some("coretemp"));
    assert!(survey[3].skipped.is_some());
    // It serialises for `joulerun list --json`.
    let j = serde_json::to_value(&survey).unwrap();
    assert_eq!(j[2]["place"]["place"], "inside");
    assert_eq!(j[2]["place"]["parent"], "package-0");

    // `sources::open(Hwmon)` gives every class, not a placeholder.
    let all = sources::open(SourceKind::Hwmon, &ctx(t.path())).unwrap();
    assert_eq!(all.domains().len(), 2);
}

#[test]
fn server_power_meter_is_the_chassis_and_its_psus_are_inside_it() {
    let t = tempfile::tempdir().unwrap();
    let f = FakeHwmon::server(t.path()).unwrap();
    let mut s = HwmonSource::open_chassis(&ctx(t.path())).unwrap();
    assert_eq!(names(&s), ["chassis", "psu-0", "psu-1"]);
    let d = s.domains();
    assert!(
        d.iter()
            .all(|d| d.kind == DomainKind::Chassis && d.device == Device::Chassis)
    );
    assert_eq!(d[0].place, Place::Whole);
    assert_eq!(d[1].place, Place::Inside("chassis".to_string()));
    assert_eq!(d[2].place, Place::Inside("chassis".to_string()));
    // The PSUs' input, never an output rail.
    assert_eq!(
        s.paths(),
        [
            f.attr_path(0, "power1_average").as_path(),
            f.attr_path(1, "power1_input").as_path(),
            f.attr_path(2, "power1_input").as_path(),
        ]
    );
    let out = read(&mut s);
    assert!((watts(&out[0]) - 350.0).abs() < 1e-9);
    assert!((watts(&out[1]) - 180.0).abs() < 1e-9);
    assert!((watts(&out[2]) - 170.0).abs() < 1e-9);
    // The power meter averages over 1 s: no faster than that.
    assert_eq!(s.cadence(), Cadence::Every(Duration::from_secs(1)));
    let survey = hwmon::survey(&ctx(t.path()));
    assert_eq!(survey[1].class, Some(ChipClass::Psu));
    let pout = survey[1]
        .channels
        .iter()
        .find(|c| c.label.as_deref() == Some("pout1"))
        .unwrap();
    assert!(!pout.used);
    // No GPU here.
    let u = HwmonSource::open_gpu(&ctx(t.path())).unwrap_err();
    assert_eq!(u.kind, UnavailableKind::NotPresent);
    assert!(
        u.reason.starts_with("no GPU among the 3 hwmon chips"),
        "{}",
        u.reason
    );
    assert!(u.fix.unwrap().contains("NVML"));
}

#[test]
fn psus_without_a_power_meter_are_the_whole_together() {
    let t = tempfile::tempdir().unwrap();
    let f = FakeHwmon::new(t.path()).unwrap();
    for (addr, pin) in [("7-0058", 200.0), ("7-0059", 150.0)] {
        f.add(
            &HwmonChip::new("ipsps1")
                .on_device(&format!("platform/i2c-7/{addr}"))
                .power_input(1, pin, Some("pin"))
                .power_input(2, pin - 10.0, Some("pout1")),
        )
        .unwrap();
    }
    // A PSU with output rails only is not the machine's input.
    f.add(
        &HwmonChip::new("dps460")
            .on_device("platform/i2c-8/8-0058")
            .power_input(2, 90.0, Some("pout1")),
    )
    .unwrap();
    let mut s = HwmonSource::open_chassis(&ctx(t.path())).unwrap();
    assert_eq!(names(&s), ["psu-0", "psu-1"]);
    assert!(s.domains().iter().all(|d| d.place == Place::Whole));
    let out = read(&mut s);
    assert!((watts(&out[0]) + watts(&out[1]) - 350.0).abs() < 1e-9);
    let survey = hwmon::survey(&ctx(t.path()));
    assert!(
        survey[2]
            .skipped
            .as_deref()
            .unwrap()
            .starts_with("no input-power channel (labelled 'pin')")
    );
}

#[test]
fn corsair_psu_total_is_used_with_a_warning_that_it_is_dc_output() {
    let t = tempfile::tempdir().unwrap();
    let f = FakeHwmon::new(t.path()).unwrap();
    f.add(
        &HwmonChip::new("corsairpsu")
            .on_device("pci0000:00/0000:00:14.0/usb1/1-4/1-4:1.0/0003:1B1C:1C05.0004")
            .power_input(1, 240.0, Some("power total"))
            .power_input(2, 200.0, Some("power +12v"))
            .power_input(3, 25.0, Some("power +5v"))
            .power_input(4, 15.0, Some("power +3.3v")),
    )
    .unwrap();
    let mut s = HwmonSource::open_chassis(&ctx(t.path())).unwrap();
    assert_eq!(names(&s), ["psu-0"]);
    assert_eq!(s.domains()[0].place, Place::Whole);
    assert!((watts(&read(&mut s)[0]) - 240.0).abs() < 1e-9);
    assert_eq!(s.warnings().len(), 1, "{:?}", s.warnings());
    assert!(
        s.warnings()[0].contains("total DC output"),
        "{:?}",
        s.warnings()
    );
}

#[test]
fn an_apu_overlaps_the_package() {
    let t = tempfile::tempdir().unwrap();
    FakeHwmon::apu_laptop(t.path()).unwrap();
    let mut s = HwmonSource::open_gpu(&ctx(t.path())).unwrap();
    assert_eq!(names(&s), ["gpu-0"]);
    assert_eq!(s.domains()[0].place, Place::Overlaps);
    assert!(!s.domains()[0].in_total());
    // power1_input is preferred to an average when both exist; here only input.
    assert!((watts(&read(&mut s)[0]) - 9.0).abs() < 1e-9);
    let survey = hwmon::survey(&ctx(t.path()));
    assert!(survey[0].place_reason.as_deref().unwrap().contains("vddnb"));
    // The same card without vddnb is a discrete one.
    let t2 = tempfile::tempdir().unwrap();
    let f = FakeHwmon::new(t2.path()).unwrap();
    f.add(
        &HwmonChip::new("amdgpu")
            .pci("0000:04:00.0")
            .power_input(1, 9.0, Some("PPT"))
            .power_average(1, 8.0, Some("PPT"))
            .in1_label("vddgfx"),
    )
    .unwrap();
    let mut s = HwmonSource::open_gpu(&ctx(t2.path())).unwrap();
    assert_eq!(s.domains()[0].place, Place::Part);
    assert_eq!(
        s.paths(),
        [f.attr_path(0, "power1_input").as_path()],
        "input over average"
    );
    assert!((watts(&read(&mut s)[0]) - 9.0).abs() < 1e-9);
}

#[test]
fn xe_card_over_pkg_and_i915_per_gt_chips_are_not_counted_twice() {
    let t = tempfile::tempdir().unwrap();
    let f = FakeHwmon::new(t.path()).unwrap();
    // A discrete Arc card (xe), and an i915 card with a per-GT chip.
    f.add(
        &HwmonChip::new("xe")
            .pci("0000:03:00.0")
            .energy(1, 5_000_000, Some("card"))
            .energy(2, 4_000_000, Some("pkg")),
    )
    .unwrap();
    f.add(
        &HwmonChip::new("i915")
            .pci("0000:0a:00.0")
            .energy(1, 7_000_000, None),
    )
    .unwrap();
    f.add(
        &HwmonChip::new("i915_gt0")
            .pci("0000:0a:00.0")
            .energy(1, 6_000_000, None),
    )
    .unwrap();
    // xe at the integrated address is inside the package too.
    f.add(
        &HwmonChip::new("xe")
            .pci("0000:00:02.0")
            .energy(1, 100, Some("pkg")),
    )
    .unwrap();
    let mut s = HwmonSource::open_gpu(&ctx(t.path())).unwrap();
    assert_eq!(names(&s), ["gpu-0", "gpu-1", "gpu-2"]);
    assert_eq!(
        s.paths(),
        [
            f.attr_path(3, "energy1_input").as_path(),
            f.attr_path(0, "energy1_input").as_path(),
            f.attr_path(1, "energy1_input").as_path(),
        ]
    );
    let places: Vec<&Place> = s.domains().iter().map(|d| &d.place).collect();
    assert_eq!(
        places,
        [
            &Place::Inside("package-0".into()),
            &Place::Part,
            &Place::Part
        ]
    );
    let out = read(&mut s);
    assert_eq!(counter(&out[1]), (5_000_000, Wrap::Full64));
    let survey = hwmon::survey(&ctx(t.path()));
    assert!(
        survey[2]
            .skipped
            .as_deref()
            .unwrap()
            .contains("per-GT counter")
    );
    assert!(survey[2].domains.is_empty());
}

#[test]
fn other_power_sensors_are_meters_one_per_channel_never_added() {
    let t = tempfile::tempdir().unwrap();
    let f = FakeHwmon::new(t.path()).unwrap();
    f.add(
        &HwmonChip::new("ina3221")
            .on_device("platform/i2c-1/1-0040")
            .power_input(1, 3.0, Some("VDD_IN"))
            .power_input(2, 1.5, Some("VDD CPU,GPU"))
            .power_input(3, 0.5, None),
    )
    .unwrap();
    // Two identical single-channel chips: told apart by their hwmon number.
    for addr in ["1-0041", "1-0044"] {
        f.add(
            &HwmonChip::new("ina226")
                .on_device(&format!("platform/i2c-1/{addr}"))
                .power_input(1, 2.0, None),
        )
        .unwrap();
    }
    // RAPL seen through hwmon: an energy counter, with an unknown width.
    f.add(
        &HwmonChip::new("amd_energy")
            .on_device("platform/amd_energy.0")
            .energy(1, 42, Some("Esocket0")),
    )
    .unwrap();
    f.add(&HwmonChip::new("acpitz").temp(1, 40_000)).unwrap();
    let mut s = HwmonSource::open_meters(&ctx(t.path())).unwrap();
    assert_eq!(
        names(&s),
        [
            "meter-ina3221-VDD_IN",
            "meter-ina3221-VDD_CPU_GPU",
            "meter-ina3221-power3",
            "meter-ina226-hwmon1",
            "meter-ina226-hwmon2",
            "meter-amd_energy-Esocket0",
        ]
    );
    for d in s.domains() {
        assert_eq!(d.kind, DomainKind::Meter);
        assert_eq!(d.place, Place::Overlaps);
        assert!(!d.in_total());
        assert_eq!(d.category(), sources::Category::Meter);
    }
    assert_eq!(
        s.domains()[0].device,
        Device::Meter {
            name: "ina3221-VDD_IN".to_string()
        }
    );
    let out = read(&mut s);
    assert!((watts(&out[1]) - 1.5).abs() < 1e-9);
    assert_eq!(counter(&out[5]), (42, Wrap::Unknown));
    let survey = hwmon::survey(&ctx(t.path()));
    assert_eq!(survey[4].class, None);
    assert!(survey[4].skipped.is_some());
    // No GPU, no chassis.
    assert!(HwmonSource::open_gpu(&ctx(t.path())).is_err());
    assert!(HwmonSource::open_chassis(&ctx(t.path())).is_err());
}

#[test]
fn an_old_style_chip_is_read_from_its_device_directory() {
    let t = tempfile::tempdir().unwrap();
    let f = FakeHwmon::new(t.path()).unwrap();
    f.add(
        &HwmonChip::new("power_meter")
            .on_device("LNXSYSTM:00/LNXSYBUS:00/ACPI000D:00")
            .attributes_on_device()
            .power_average(1, 210.0, None)
            .average_interval(1, 500),
    )
    .unwrap();
    let mut s = HwmonSource::open_chassis(&ctx(t.path())).unwrap();
    assert_eq!(names(&s), ["chassis"]);
    assert_eq!(s.paths(), [f.attr_path(0, "power1_average").as_path()]);
    assert!((watts(&read(&mut s)[0]) - 210.0).abs() < 1e-9);
    assert_eq!(s.cadence(), Cadence::Every(Duration::from_millis(500)));
    // A power meter reading exactly 0 is passed through: the integrator judges.
    f.set_power(0, "power1_average", 0.0).unwrap();
    assert_eq!(watts(&read(&mut s)[0]), 0.0);
}

#[test]
fn nothing_to_read_is_not_present_with_the_reason() {
    let t = tempfile::tempdir().unwrap();
    let u = HwmonSource::open_gpu(&ctx(t.path())).unwrap_err();
    assert_eq!(u.kind, UnavailableKind::NotPresent);
    assert_eq!(u.source_kind, SourceKind::Hwmon);
    assert!(
        u.reason.contains("sys/class/hwmon does not exist"),
        "{}",
        u.reason
    );
    let f = FakeHwmon::new(t.path()).unwrap();
    f.add(&HwmonChip::new("coretemp").temp(1, 40_000)).unwrap();
    for open in [
        HwmonSource::open_gpu,
        HwmonSource::open_chassis,
        HwmonSource::open_meters,
        HwmonSource::open_all,
    ] {
        let u = open(&ctx(t.path())).unwrap_err();
        assert_eq!(u.kind, UnavailableKind::NotPresent);
        assert_eq!(
            u.reason,
            format!(
                "no hwmon chip reports power or energy under {} (1 chips: temperature, \
                 voltage or fan sensors only)",
                t.path().join("sys/class/hwmon").display()
            )
        );
    }
}

#[test]
fn driven_power_and_energy_integrate_to_the_truth_within_one_percent() {
    let t = tempfile::tempdir().unwrap();
    let f = FakeHwmon::workstation(t.path()).unwrap();
    let _driver = CounterDriver::start(vec![
        DrivenCounter::power(f.attr_path(1, "power1_average"), 45.0),
        DrivenCounter::hwmon_energy(f.attr_path(2, "energy1_input"), 12.0, 1_000_000),
    ])
    .unwrap();
    let s = HwmonSource::open_gpu(&ctx(t.path())).unwrap();
    // Through the sampler: the source runs on its own reader thread every 100 ms.
    let mut sampler = Sampler::new(vec![Box::new(s)], &[]);
    assert!(sampler.is_slow(0) && sampler.is_slow(1));
    sampler.start();
    let end = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
        sampler.tick();
    }
    sampler.final_tick();
    for (i, w) in [(0usize, 12.0), (1, 45.0)] {
        let measured = sampler.measured_s()[i];
        assert!(measured > 1.2, "domain {i} measured {measured} s");
        let e = sampler.accumulators()[i].total_j;
        let truth = w * measured;
        assert!(
            (e - truth).abs() <= 0.01 * truth,
            "domain {i}: {e} J, want {truth} J"
        );
        assert_eq!(sampler.health()[i].failed_reads, 0);
    }
}

#[test]
fn a_driven_power_file_through_the_accumulator() {
    let t = tempfile::tempdir().unwrap();
    let f = FakeHwmon::server(t.path()).unwrap();
    let _driver = CounterDriver::start(vec![DrivenCounter::power(
        f.attr_path(1, "power1_input"),
        180.0,
    )])
    .unwrap();
    let mut s = HwmonSource::open_chassis(&ctx(t.path())).unwrap();
    let mut acc = Accumulator::for_domain(&s.domains()[1]);
    let start = Instant::now();
    let mut out = Vec::new();
    let mut last = 0.0;
    while start.elapsed() < Duration::from_millis(500) {
        s.read(&mut out);
        last = start.elapsed().as_secs_f64();
        acc.update(last, out[1].clone().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    let truth = 180.0 * last;
    assert!(
        (acc.total_j - truth).abs() <= 0.01 * truth,
        "{} J",
        acc.total_j
    );
}

#[test]
fn a_vanished_chip_is_gone_for_good_and_the_others_read_on() {
    let t = tempfile::tempdir().unwrap();
    let f = FakeHwmon::workstation(t.path()).unwrap();
    let mut s = HwmonSource::open_gpu(&ctx(t.path())).unwrap();
    assert!(read(&mut s).iter().all(|r| r.is_ok()));
    f.unplug(1).unwrap(); // the amdgpu card, gpu-1
    let out = read(&mut s);
    assert!(out[0].is_ok());
    let e = out[1].clone().unwrap_err();
    assert!(e.gone, "{e:?}");
    assert!(e.message.contains("power1_average"), "{}", e.message);
    assert!(e.message.contains("has disappeared"), "{}", e.message);
    // A file emptied while its chip is still there is worth retrying.
    f.set_raw(2, "energy1_input", b"").unwrap();
    let e = read(&mut s)[0].clone().unwrap_err();
    assert!(!e.gone, "{e:?}");
    assert!(e.message.contains("empty"), "{}", e.message);
}

#[test]
fn unparsable_content_is_a_read_error_and_it_recovers() {
    let t = tempfile::tempdir().unwrap();
    let f = FakeHwmon::workstation(t.path()).unwrap();
    let mut s = HwmonSource::open_gpu(&ctx(t.path())).unwrap();
    for garbage in [&b"banana\n"[..], b"12 34\n", b"\xff\xfe\n", &[b'7'; 100]] {
        f.set_raw(1, "power1_average", garbage).unwrap();
        f.set_raw(2, "energy1_input", garbage).unwrap();
        let out = read(&mut s);
        for (r, file) in out.iter().zip(["energy1_input", "power1_average"]) {
            let e = r.clone().unwrap_err();
            assert!(!e.gone);
            assert!(e.message.contains(file), "{}", e.message);
        }
    }
    f.set_raw(1, "power1_average", b"banana\n").unwrap();
    let e = read(&mut s)[1].clone().unwrap_err();
    assert!(
        e.message
            .ends_with("expected a decimal number of microwatts, got \"banana\\n\""),
        "{}",
        e.message
    );
    // An energy counter cannot be negative; a power can be read as one (a glitch then).
    f.set_raw(2, "energy1_input", b"-5\n").unwrap();
    f.set_raw(1, "power1_average", b"-5000000\n").unwrap();
    let out = read(&mut s);
    assert!(out[0].is_err());
    assert_eq!(watts(&out[1]), -5.0);
    f.set_raw(2, "energy1_input", b"77\n").unwrap();
    f.set_raw(1, "power1_average", b"30000000\n").unwrap();
    let out = read(&mut s);
    assert_eq!(counter(&out[0]).0, 77);
    assert_eq!(watts(&out[1]), 30.0);
}

#[test]
fn a_fifo_planted_as_a_channel_or_a_name_is_refused_without_blocking() {
    for victim in ["power1_average", "name", "power1_label"] {
        let t = tempfile::tempdir().unwrap();
        let f = FakeHwmon::new(t.path()).unwrap();
        f.add(
            &HwmonChip::new("amdgpu")
                .pci("0000:03:00.0")
                .power_average(1, 45.0, Some("PPT")),
        )
        .unwrap();
        f.fifo_instead(0, victim).unwrap();
        let root = t.path().to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let c = ctx(&root);
            let r = (
                HwmonSource::open_gpu(&c).map(|s| names(&s).len()),
                HwmonSource::open_meters(&c).map(|s| s.warnings().to_vec()),
                hwmon::survey(&c),
            );
            let _ = tx.send(r);
        });
        let (gpu, meters, survey) = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("blocked on a FIFO as {victim}"));
        match victim {
            "power1_average" => {
                let u = gpu.unwrap_err();
                assert_eq!(u.kind, UnavailableKind::Invalid);
                assert!(u.reason.contains("power1_average"), "{}", u.reason);
                assert!(u.reason.contains("FIFO"), "{}", u.reason);
            }
            "name" => {
                // Unclassifiable: left out with a warning where it would have belonged.
                assert!(gpu.is_err());
                let u = meters.unwrap_err();
                assert_eq!(u.kind, UnavailableKind::NotPresent, "{u:?}");
                assert!(
                    u.reason.contains("hwmon0 (driver unknown: cannot read"),
                    "{}",
                    u.reason
                );
                assert!(u.reason.contains("FIFO"), "{}", u.reason);
                assert!(survey[0].skipped.as_deref().unwrap().contains("FIFO"));
            }
            _ => {
                // A label that cannot be read is no label.
                assert_eq!(gpu.unwrap(), 1);
                assert_eq!(survey[0].channels[0].label, None);
            }
        }
    }
}

#[test]
fn no_allocation_on_steady_reads() {
    let t = tempfile::tempdir().unwrap();
    FakeHwmon::workstation(t.path()).unwrap();
    FakeHwmon::new(t.path())
        .unwrap()
        .add(
            &HwmonChip::new("power_meter")
                .on_device("LNXSYSTM:00/LNXSYBUS:00/ACPI000D:00")
                .power_average(1, 100.0, None),
        )
        .unwrap();
    let mut s = HwmonSource::open_all(&ctx(t.path())).unwrap();
    assert_eq!(s.domains().len(), 3);
    let mut out = Vec::new();
    s.read(&mut out);
    let n = allocations_in(|| {
        for _ in 0..100 {
            s.read(&mut out);
        }
    });
    assert_eq!(n, 0, "{n} allocations in 100 reads");
    assert!(out.iter().all(|r| r.is_ok()));
}

// ---------------------------------------------------------------------------------------
// Permission: as root, run the checks in a child with uid 65534 (see tests/permissions.rs).
// ---------------------------------------------------------------------------------------

const CHILD_ENV: &str = "JOULERUN_TEST_HWMON_UNPRIVILEGED_ROOT";
const CHILD_OK: &str = "unprivileged-hwmon-checks-passed";

fn check_permission(root: &Path) {
    // Both GPUs unreadable: the first refusal, naming the file, with the fix.
    let u = HwmonSource::open_gpu(&ctx(root)).unwrap_err();
    assert_eq!(u.kind, UnavailableKind::Permission, "{u:?}");
    let i915 = root.join("sys/class/hwmon/hwmon2/energy1_input");
    assert_eq!(
        u.reason,
        format!("cannot read {}: permission denied", i915.display())
    );
    assert!(
        u.fix
            .unwrap()
            .contains(&format!("sudo chmod o+r {}", i915.display()))
    );
}

fn check_partial_permission(root: &Path) {
    let s = HwmonSource::open_gpu(&ctx(root)).unwrap();
    assert_eq!(names(&s), ["gpu-1"]);
    assert!(
        s.warnings()[0].starts_with("gpu-0 (i915 (hwmon2)) left out: cannot read")
            && s.warnings()[0].ends_with("energy1_input: permission denied"),
        "{:?}",
        s.warnings()
    );
}

#[test]
fn unreadable_channels_are_a_permission_problem_naming_the_file() {
    if let Some(root) = std::env::var_os(CHILD_ENV) {
        let root = Path::new(&root);
        check_permission(&root.join("all"));
        check_partial_permission(&root.join("one"));
        println!("{CHILD_OK}");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let all = FakeHwmon::workstation(t.path().join("all")).unwrap();
    let one = FakeHwmon::workstation(t.path().join("one")).unwrap();
    let root_user = nix::unistd::geteuid().is_root();
    let mode = if root_user { 0o400 } else { 0o000 };
    all.chmod(1, "power1_average", mode).unwrap();
    all.chmod(2, "energy1_input", mode).unwrap();
    one.chmod(2, "energy1_input", mode).unwrap();
    if !root_user {
        check_permission(&t.path().join("all"));
        check_partial_permission(&t.path().join("one"));
        return;
    }
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for d in t.path().ancestors().skip(1) {
        if std::fs::metadata(d).unwrap().permissions().mode() & 0o001 == 0 {
            eprintln!(
                "SKIPPED: {} is not searchable by other users; the classification is \
                 unit-tested in sources::hwmon",
                d.display()
            );
            return;
        }
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(&exe)
        .args([
            "unreadable_channels_are_a_permission_problem_naming_the_file",
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

#[test]
fn psus_are_the_whole_when_the_power_meter_cannot_be_read() {
    let t = tempfile::tempdir().unwrap();
    let f = FakeHwmon::server(t.path()).unwrap();
    f.fifo_instead(0, "power1_average").unwrap();
    let s = HwmonSource::open_chassis(&ctx(t.path())).unwrap();
    assert_eq!(names(&s), ["psu-0", "psu-1"]);
    assert!(s.domains().iter().all(|d| d.place == Place::Whole));
    assert!(
        s.warnings()
            .iter()
            .any(|w| w.starts_with("chassis (power_meter (hwmon0)) left out") && w.contains("FIFO")),
        "{:?}",
        s.warnings()
    );
    assert!(
        s.warnings()
            .iter()
            .any(|w| w.contains("the power supplies are the whole machine instead")),
        "{:?}",
        s.warnings()
    );
}

#[test]
fn channels_sharing_a_label_in_one_chip_are_told_apart() {
    let t = tempfile::tempdir().unwrap();
    let f = FakeHwmon::new(t.path()).unwrap();
    f.add(
        &HwmonChip::new("ina2xx")
            .on_device("platform/i2c-2/2-0040")
            .power_input(1, 1.0, Some("VDD"))
            .power_input(2, 2.0, Some("VDD"))
            // The same sensor as power1, averaged: read once, as its instantaneous value.
            .power_average(1, 1.1, Some("VDD")),
    )
    .unwrap();
    let mut s = HwmonSource::open_meters(&ctx(t.path())).unwrap();
    assert_eq!(
        names(&s),
        ["meter-ina2xx-VDD-power1", "meter-ina2xx-VDD-power2"]
    );
    let out = read(&mut s);
    assert_eq!((watts(&out[0]), watts(&out[1])), (1.0, 2.0));
}
