//! The powercap reader against fake sysfs trees built with `joulerun_testkit::fakehw`.

use std::path::Path;
use std::time::Duration;

use joulerun::counter::Accumulator;
use joulerun::sources::powercap::PowercapSource;
use joulerun::sources::{
    DomainKind, OpenContext, ReadError, Reading, Source, SourceKind, UnavailableKind, Wrap,
};
use joulerun::sysroot::SysRoot;
use joulerun_testkit::fakehw::{
    AMD_RANGE_UJ, CounterDriver, DrivenCounter, FakePowercap, INTEL_RANGE_UJ, write_topology,
};

fn ctx(root: &Path) -> OpenContext {
    OpenContext::for_root(SysRoot::new(root))
}

fn list(s: &PowercapSource) -> Vec<(String, DomainKind, Option<u32>)> {
    s.domains()
        .iter()
        .map(|d| {
            assert_eq!(d.source, SourceKind::Powercap);
            assert!(!d.estimated);
            (d.name.clone(), d.kind, d.socket)
        })
        .collect()
}

fn d(name: &str, kind: DomainKind, socket: Option<u32>) -> (String, DomainKind, Option<u32>) {
    (name.to_string(), kind, socket)
}

fn read(s: &mut PowercapSource) -> Vec<Result<Reading, ReadError>> {
    let mut out = Vec::new();
    s.read(&mut out);
    assert_eq!(out.len(), s.domains().len());
    out
}

fn value(r: &Result<Reading, ReadError>) -> u64 {
    match r {
        Ok(Reading::Counter { value, .. }) => *value,
        other => panic!("not a counter: {other:?}"),
    }
}

use DomainKind::*;

#[test]
fn intel_server_two_sockets_with_dram() {
    let t = tempfile::tempdir().unwrap();
    FakePowercap::intel_server_2s(t.path()).unwrap();
    let mut s = PowercapSource::open(&ctx(t.path())).unwrap();
    assert_eq!(
        list(&s),
        vec![
            d("package-0", Package, Some(0)),
            d("dram-0", Dram, Some(0)),
            d("package-1", Package, Some(1)),
            d("dram-1", Dram, Some(1)),
        ]
    );
    let class = t.path().join("sys/class/powercap");
    assert_eq!(
        s.zone_paths(),
        &[
            class.join("intel-rapl:0"),
            class.join("intel-rapl:0:0"),
            class.join("intel-rapl:1"),
            class.join("intel-rapl:1:0"),
        ]
    );
    assert!(s.warnings().is_empty(), "{:?}", s.warnings());
    let out = read(&mut s);
    assert_eq!(
        out[1],
        Ok(Reading::Counter {
            value: 2_000_000,
            wrap: Wrap::At(joulerun_testkit::fakehw::HSW_DRAM_RANGE_UJ),
            joules_per_unit: 1e-6,
        })
    );
    assert_eq!(value(&out[2]), 3_000_000);
}

#[test]
fn laptop_with_psys_core_uncore() {
    let t = tempfile::tempdir().unwrap();
    let f = FakePowercap::intel_laptop(t.path()).unwrap();
    // The counter runs whatever `enabled` (a power-limit switch) says.
    f.set_enabled("intel-rapl:0:1", false).unwrap();
    let mut s = PowercapSource::open(&ctx(t.path())).unwrap();
    assert_eq!(
        list(&s),
        vec![
            d("package-0", Package, Some(0)),
            d("core-0", Core, Some(0)),
            d("uncore-0", Uncore, Some(0)),
            d("psys", Psys, None),
        ]
    );
    assert!(!s.domains()[3].in_total());
    let out = read(&mut s);
    assert_eq!(value(&out[2]), 100_000);
    assert_eq!(value(&out[3]), 5_000_000);
}

#[test]
fn amd_epyc_package_and_core() {
    let t = tempfile::tempdir().unwrap();
    FakePowercap::amd_epyc_2s(t.path()).unwrap();
    let mut s = PowercapSource::open(&ctx(t.path())).unwrap();
    assert_eq!(
        list(&s),
        vec![
            d("package-0", Package, Some(0)),
            d("core-0", Core, Some(0)),
            d("package-1", Package, Some(1)),
            d("core-1", Core, Some(1)),
        ]
    );
    match read(&mut s)[3] {
        Ok(Reading::Counter { value, wrap, .. }) => {
            assert_eq!(value, 700_000);
            assert_eq!(wrap, Wrap::At(AMD_RANGE_UJ));
        }
        ref r => panic!("{r:?}"),
    }
}

#[test]
fn mmio_duplicate_of_package_is_not_counted_twice() {
    let t = tempfile::tempdir().unwrap();
    let f = FakePowercap::intel_laptop(t.path()).unwrap();
    f.add_zone("intel-rapl-mmio:0", "package-0", 999, Some(INTEL_RANGE_UJ))
        .unwrap();
    let s = PowercapSource::open(&ctx(t.path())).unwrap();
    assert_eq!(
        list(&s),
        vec![
            d("package-0", Package, Some(0)),
            d("core-0", Core, Some(0)),
            d("uncore-0", Uncore, Some(0)),
            d("psys", Psys, None),
        ]
    );
    assert_eq!(s.zone_paths()[0], f.zone_path("intel-rapl:0"));
}

#[test]
fn mmio_alone_provides_the_package() {
    let t = tempfile::tempdir().unwrap();
    let f = FakePowercap::new(t.path()).unwrap();
    f.add_zone("intel-rapl-mmio:0", "package-0", 42, Some(INTEL_RANGE_UJ))
        .unwrap();
    let mut s = PowercapSource::open(&ctx(t.path())).unwrap();
    assert_eq!(list(&s), vec![d("package-0", Package, Some(0))]);
    assert_eq!(s.zone_paths()[0], f.zone_path("intel-rapl-mmio:0"));
    assert_eq!(value(&read(&mut s)[0]), 42);
}

#[test]
fn hex_indexes_and_psys_shifting_sockets() {
    // 11 sockets; psys registered second, so socket N > 0 is zone N+1: package-9 is
    // intel-rapl:a and package-10 is intel-rapl:b.
    let t = tempfile::tempdir().unwrap();
    let f = FakePowercap::new(t.path()).unwrap();
    f.add_zone("intel-rapl:0", "package-0", 0, Some(INTEL_RANGE_UJ))
        .unwrap();
    f.add_zone("intel-rapl:1", "psys", 7, Some(INTEL_RANGE_UJ))
        .unwrap();
    for socket in 1..=10u32 {
        let id = format!("intel-rapl:{:x}", socket + 1);
        f.add_zone(
            &id,
            &format!("package-{socket}"),
            u64::from(socket) * 1000,
            Some(INTEL_RANGE_UJ),
        )
        .unwrap();
        f.add_zone(
            &format!("{id}:0"),
            "dram",
            u64::from(socket) * 1000 + 1,
            Some(INTEL_RANGE_UJ),
        )
        .unwrap();
    }
    write_topology(t.path(), &(0..11).collect::<Vec<u32>>()).unwrap();
    let mut s = PowercapSource::open(&ctx(t.path())).unwrap();
    let mut want = vec![d("package-0", Package, Some(0))];
    for socket in 1..=10 {
        want.push(d(&format!("package-{socket}"), Package, Some(socket)));
        want.push(d(&format!("dram-{socket}"), Dram, Some(socket)));
    }
    want.push(d("psys", Psys, None));
    assert_eq!(list(&s), want);
    let i9 = s
        .domains()
        .iter()
        .position(|d| d.name == "package-9")
        .unwrap();
    assert_eq!(s.zone_paths()[i9], f.zone_path("intel-rapl:a"));
    let out = read(&mut s);
    assert_eq!(value(&out[i9]), 9000);
    assert_eq!(value(&out[i9 + 1]), 9001);
    assert_eq!(value(out.last().unwrap()), 7);
}

#[test]
fn dies_top_level_dram_and_unknown_names() {
    let t = tempfile::tempdir().unwrap();
    let f = FakePowercap::new(t.path()).unwrap();
    f.add_zone("intel-rapl:0", "package-0-die-0", 1, Some(INTEL_RANGE_UJ))
        .unwrap()
        .add_zone("intel-rapl:0:0", "dram", 2, Some(INTEL_RANGE_UJ))
        .unwrap()
        .add_zone("intel-rapl:1", "package-0-die-1", 3, Some(INTEL_RANGE_UJ))
        .unwrap()
        .add_zone("intel-rapl:1:0", "dram", 4, Some(INTEL_RANGE_UJ))
        .unwrap()
        .add_zone("intel-rapl:2", "dram", 5, Some(INTEL_RANGE_UJ))
        .unwrap()
        .add_zone("intel-rapl:3", "banana", 6, Some(INTEL_RANGE_UJ))
        .unwrap();
    let s = PowercapSource::open(&ctx(t.path())).unwrap();
    assert_eq!(
        list(&s),
        vec![
            d("package-0-die-0", Package, Some(0)),
            d("dram-0-die-0", Dram, Some(0)),
            d("package-0-die-1", Package, Some(0)),
            d("dram-0-die-1", Dram, Some(0)),
            d("dram", Dram, None),
        ]
    );
    assert!(
        s.warnings()
            .iter()
            .any(|w| w.contains("intel-rapl:3") && w.contains("unknown zone name 'banana'")),
        "{:?}",
        s.warnings()
    );
}

#[test]
fn kept_open_fd_sees_live_updates() {
    let t = tempfile::tempdir().unwrap();
    let f = FakePowercap::intel_laptop(t.path()).unwrap();
    let mut s = PowercapSource::open(&ctx(t.path())).unwrap();
    assert_eq!(value(&read(&mut s)[0]), 1_000_000);
    f.set_energy("intel-rapl:0", 1_234_567).unwrap();
    assert_eq!(value(&read(&mut s)[0]), 1_234_567);
    // A shorter number with a trailing newline only, as the kernel writes it ("%lld\n"),
    // in place over the padded one: the reader must not see stale digits.
    f.set_energy_raw("intel-rapl:0", b"77\n").unwrap();
    assert_eq!(value(&read(&mut s)[0]), 77);
}

#[test]
fn wrap_between_ticks_is_corrected() {
    let t = tempfile::tempdir().unwrap();
    let f = FakePowercap::intel_laptop(t.path()).unwrap();
    f.set_energy("intel-rapl:0", INTEL_RANGE_UJ - 1_000_000)
        .unwrap();
    let mut s = PowercapSource::open(&ctx(t.path())).unwrap();
    let mut acc = Accumulator::new();
    acc.update(0.0, read(&mut s)[0].clone().unwrap());
    f.set_energy("intel-rapl:0", 2_500_000).unwrap();
    acc.update(0.1, read(&mut s)[0].clone().unwrap());
    assert!((acc.total_j - 3.5).abs() < 1e-9, "{}", acc.total_j);
    assert_eq!(acc.wraps, 1);
}

#[test]
fn driven_counters_with_wraps_accumulate_the_right_energy() {
    let t = tempfile::tempdir().unwrap();
    let f = FakePowercap::new(t.path()).unwrap();
    let range = 10_000_000; // 10 J: at 100 W a wrap every 100 ms
    f.add_zone("intel-rapl:0", "package-0", 0, Some(range))
        .unwrap()
        .add_zone("intel-rapl:0:0", "core", 0, Some(range))
        .unwrap();
    let driver = CounterDriver::start(vec![
        DrivenCounter::powercap(f.energy_path("intel-rapl:0"), 100.0, range, 9_000_000),
        DrivenCounter::powercap(f.energy_path("intel-rapl:0:0"), 40.0, range, 0),
    ])
    .unwrap();
    let mut s = PowercapSource::open(&ctx(t.path())).unwrap();
    let mut accs = [Accumulator::new(), Accumulator::new()];
    let start = std::time::Instant::now();
    let mut out = Vec::new();
    while start.elapsed() < Duration::from_millis(400) {
        s.read(&mut out);
        let now = start.elapsed().as_secs_f64();
        for (a, r) in accs.iter_mut().zip(&out) {
            a.update(now, r.clone().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    s.read(&mut out);
    let elapsed = start.elapsed().as_secs_f64();
    for (a, r) in accs.iter_mut().zip(&out) {
        a.update(elapsed, r.clone().unwrap());
    }
    drop(driver);
    let pkg_w = accs[0].total_j / elapsed;
    let core_w = accs[1].total_j / elapsed;
    // Both ends of the window lag the driver by up to one update (~1 ms + scheduling).
    assert!((pkg_w - 100.0).abs() < 5.0, "package {pkg_w} W");
    assert!((core_w - 40.0).abs() < 2.0, "core {core_w} W");
    assert!(accs[0].wraps >= 3, "{}", accs[0].wraps);
    assert_eq!(accs[0].resets, 0);
}

#[test]
fn hidden_max_range_is_unknown_wrap_with_a_warning() {
    let t = tempfile::tempdir().unwrap();
    let f = FakePowercap::intel_laptop(t.path()).unwrap();
    f.hide_max_range("intel-rapl:0").unwrap();
    let mut s = PowercapSource::open(&ctx(t.path())).unwrap();
    match read(&mut s)[0] {
        Ok(Reading::Counter { wrap, .. }) => assert_eq!(wrap, Wrap::Unknown),
        ref r => panic!("{r:?}"),
    }
    match read(&mut s)[1] {
        Ok(Reading::Counter { wrap, .. }) => assert_eq!(wrap, Wrap::At(INTEL_RANGE_UJ)),
        ref r => panic!("{r:?}"),
    }
    assert_eq!(s.warnings().len(), 1, "{:?}", s.warnings());
    let w = &s.warnings()[0];
    assert!(w.contains("wraps cannot be corrected for package-0"), "{w}");
    assert!(w.contains("intel-rapl:0/max_energy_range_uj"), "{w}");
}

#[test]
fn garbage_content_is_a_read_error() {
    let t = tempfile::tempdir().unwrap();
    let f = FakePowercap::intel_laptop(t.path()).unwrap();
    let mut s = PowercapSource::open(&ctx(t.path())).unwrap();
    for garbage in [
        &b"banana\n"[..],
        b"-5\n",
        b"\xff\xfe\n",
        b"99999999999999999999999\n",
    ] {
        f.set_energy_raw("intel-rapl:0:0", garbage).unwrap();
        let out = read(&mut s);
        assert!(out[0].is_ok());
        let e = out[1].clone().unwrap_err();
        assert!(
            e.message.contains("intel-rapl:0:0/energy_uj"),
            "{}",
            e.message
        );
        assert!(
            e.message.contains("expected a decimal number"),
            "{}",
            e.message
        );
    }
    f.set_energy_raw("intel-rapl:0:0", b"banana\n").unwrap();
    let e = read(&mut s)[1].clone().unwrap_err();
    assert!(e.message.contains("\"banana\\n\""), "{}", e.message);
    // Far too long for a counter.
    f.set_energy_raw("intel-rapl:0:0", &[b'7'; 100]).unwrap();
    assert!(read(&mut s)[1].is_err());
    // It recovers when the content is sane again.
    f.set_energy_raw("intel-rapl:0:0", b"5\n").unwrap();
    assert_eq!(value(&read(&mut s)[1]), 5);
}

#[test]
fn vanished_counter_mid_run_is_a_read_error_not_zero() {
    let t = tempfile::tempdir().unwrap();
    let f = FakePowercap::intel_laptop(t.path()).unwrap();
    let mut s = PowercapSource::open(&ctx(t.path())).unwrap();
    assert!(read(&mut s).iter().all(|r| r.is_ok()));
    f.vanish("intel-rapl:0:1").unwrap();
    let out = read(&mut s);
    let e = out[2].clone().unwrap_err();
    assert!(
        e.message.contains("intel-rapl:0:1/energy_uj"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("No such file or directory"),
        "{}",
        e.message
    );
    assert!(out[0].is_ok() && out[1].is_ok() && out[3].is_ok());

    f.replace_with_dir("intel-rapl:0:0").unwrap();
    let e = read(&mut s)[1].clone().unwrap_err();
    assert!(
        e.message.contains("intel-rapl:0:0/energy_uj"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("no longer a regular file"),
        "{}",
        e.message
    );
}

#[test]
fn unreadable_zone_at_open_is_left_out_with_a_warning() {
    let t = tempfile::tempdir().unwrap();
    let f = FakePowercap::intel_laptop(t.path()).unwrap();
    f.replace_with_dir("intel-rapl:1").unwrap();
    let s = PowercapSource::open(&ctx(t.path())).unwrap();
    assert_eq!(s.domains().len(), 3);
    assert!(s.domains().iter().all(|d| d.kind != Psys));
    assert!(
        s.warnings()
            .iter()
            .any(|w| w.starts_with("psys left out") && w.contains("intel-rapl:1/energy_uj")),
        "{:?}",
        s.warnings()
    );
}

#[test]
fn all_zones_unreadable_is_invalid() {
    let t = tempfile::tempdir().unwrap();
    let f = FakePowercap::new(t.path()).unwrap();
    f.add_zone("intel-rapl:0", "package-0", 0, Some(INTEL_RANGE_UJ))
        .unwrap();
    f.replace_with_dir("intel-rapl:0").unwrap();
    let u = PowercapSource::open(&ctx(t.path())).unwrap_err();
    assert_eq!(u.kind, UnavailableKind::Invalid);
    assert!(u.reason.contains("intel-rapl:0/energy_uj"), "{}", u.reason);
}

#[test]
fn empty_roots_are_not_present() {
    let t = tempfile::tempdir().unwrap();
    // No class directory at all.
    let u = PowercapSource::open(&ctx(t.path())).unwrap_err();
    assert_eq!(u.kind, UnavailableKind::NotPresent);
    assert_eq!(u.source_kind, SourceKind::Powercap);
    assert!(u.reason.contains("sys/class/powercap"), "{}", u.reason);
    assert!(
        u.fix
            .as_deref()
            .unwrap()
            .contains("modprobe intel_rapl_msr")
    );
    // The class directory with only the bare control type.
    FakePowercap::new(t.path()).unwrap();
    let u = PowercapSource::open(&ctx(t.path())).unwrap_err();
    assert_eq!(u.kind, UnavailableKind::NotPresent);
    assert_eq!(
        u.reason,
        format!(
            "no RAPL zones under {} (no Intel/AMD RAPL driver loaded, or a VM that does not \
             expose RAPL)",
            t.path().join("sys/class/powercap").display()
        )
    );
}

#[test]
fn no_allocation_needed_for_reads_after_the_first() {
    // The output vector keeps its capacity between ticks.
    let t = tempfile::tempdir().unwrap();
    FakePowercap::intel_server_2s(t.path()).unwrap();
    let mut s = PowercapSource::open(&ctx(t.path())).unwrap();
    let mut out = Vec::new();
    s.read(&mut out);
    let cap = out.capacity();
    let ptr = out.as_ptr();
    s.read(&mut out);
    assert_eq!((out.capacity(), out.as_ptr()), (cap, ptr));
}

#[test]
fn mmio_stands_in_when_the_intel_rapl_package_cannot_be_read() {
    let t = tempfile::tempdir().unwrap();
    let f = FakePowercap::intel_laptop(t.path()).unwrap();
    f.add_zone("intel-rapl-mmio:0", "package-0", 999, Some(INTEL_RANGE_UJ))
        .unwrap();
    f.replace_with_dir("intel-rapl:0").unwrap();
    let mut s = PowercapSource::open(&ctx(t.path())).unwrap();
    assert_eq!(
        list(&s),
        vec![
            d("package-0", Package, Some(0)),
            d("core-0", Core, Some(0)),
            d("uncore-0", Uncore, Some(0)),
            d("psys", Psys, None),
        ]
    );
    assert_eq!(s.zone_paths()[0], f.zone_path("intel-rapl-mmio:0"));
    assert_eq!(value(&read(&mut s)[0]), 999);
    assert!(
        s.warnings()
            .iter()
            .any(|w| w.contains("package-0 is read through") && w.contains("intel-rapl-mmio:0")),
        "{:?}",
        s.warnings()
    );
}

#[test]
fn two_primary_zones_with_one_name_are_one_domain_from_the_first() {
    let t = tempfile::tempdir().unwrap();
    let f = FakePowercap::new(t.path()).unwrap();
    f.add_zone("intel-rapl:0", "package-0", 10, Some(INTEL_RANGE_UJ))
        .unwrap()
        .add_zone("intel-rapl:0:0", "dram", 11, Some(INTEL_RANGE_UJ))
        .unwrap()
        .add_zone("intel-rapl:1", "package-0", 20, Some(INTEL_RANGE_UJ))
        .unwrap()
        .add_zone("intel-rapl:1:0", "dram", 21, Some(INTEL_RANGE_UJ))
        .unwrap();
    let mut s = PowercapSource::open(&ctx(t.path())).unwrap();
    assert_eq!(
        list(&s),
        vec![d("package-0", Package, Some(0)), d("dram-0", Dram, Some(0))]
    );
    assert_eq!(
        s.zone_paths(),
        &[f.zone_path("intel-rapl:0"), f.zone_path("intel-rapl:0:0")]
    );
    let out = read(&mut s);
    assert_eq!((value(&out[0]), value(&out[1])), (10, 11));
    let w = s
        .warnings()
        .iter()
        .find(|w| w.contains("both named 'package-0'"))
        .unwrap_or_else(|| panic!("{:?}", s.warnings()));
    assert!(
        w.contains(&f.zone_path("intel-rapl:0").display().to_string())
            && w.contains(&f.zone_path("intel-rapl:1").display().to_string()),
        "{w}"
    );
    // When the first cannot be read, the second stands in.
    f.replace_with_dir("intel-rapl:0").unwrap();
    let s = PowercapSource::open(&ctx(t.path())).unwrap();
    assert_eq!(s.zone_paths()[0], f.zone_path("intel-rapl:1"));
}

#[test]
fn energy_above_its_range_at_open_makes_the_wrap_unknown_with_a_warning() {
    let t = tempfile::tempdir().unwrap();
    let f = FakePowercap::intel_laptop(t.path()).unwrap();
    f.set_energy("intel-rapl:0", INTEL_RANGE_UJ + 1).unwrap();
    // At the range exactly is fine: energy_uj can equal max_energy_range_uj.
    f.set_energy("intel-rapl:0:0", INTEL_RANGE_UJ).unwrap();
    let mut s = PowercapSource::open(&ctx(t.path())).unwrap();
    let out = read(&mut s);
    match out[0] {
        Ok(Reading::Counter { wrap, .. }) => assert_eq!(wrap, Wrap::Unknown),
        ref r => panic!("{r:?}"),
    }
    match out[1] {
        Ok(Reading::Counter { wrap, .. }) => assert_eq!(wrap, Wrap::At(INTEL_RANGE_UJ)),
        ref r => panic!("{r:?}"),
    }
    assert_eq!(s.warnings().len(), 1, "{:?}", s.warnings());
    let w = &s.warnings()[0];
    assert!(w.contains(&(INTEL_RANGE_UJ + 1).to_string()), "{w}");
    assert!(w.contains(&INTEL_RANGE_UJ.to_string()), "{w}");
    assert!(w.contains("intel-rapl:0/energy_uj"), "{w}");
    assert!(w.contains("wraps cannot be corrected for package-0"), "{w}");
}
