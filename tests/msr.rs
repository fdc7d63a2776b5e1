//! The MSR reader against fake `/dev/cpu/N/msr` files built with `joulerun_testkit::fakehw`.

use std::path::Path;
use std::time::Duration;

use joulerun::counter::Accumulator;
use joulerun::sources::DomainKind::{self, *};
use joulerun::sources::msr::*;
use joulerun::sources::{
    OpenContext, ReadError, Reading, Source, SourceKind, UnavailableKind, Wrap,
};
use joulerun::sysroot::SysRoot;
use joulerun_testkit::fakehw::{
    CounterDriver, DrivenCounter, FakeMsr, write_cpuinfo, write_topology,
};

fn ctx(root: &Path) -> OpenContext {
    OpenContext::for_root(SysRoot::new(root))
}

fn list(s: &MsrSource) -> Vec<(String, DomainKind, Option<u32>)> {
    s.domains()
        .iter()
        .map(|d| {
            assert_eq!(d.source, SourceKind::Msr);
            (d.name.clone(), d.kind, d.socket)
        })
        .collect()
}

fn d(name: &str, kind: DomainKind, socket: Option<u32>) -> (String, DomainKind, Option<u32>) {
    (name.to_string(), kind, socket)
}

fn read(s: &mut MsrSource) -> Vec<Result<Reading, ReadError>> {
    let mut out = Vec::new();
    s.read(&mut out);
    assert_eq!(out.len(), s.domains().len());
    out
}

fn counter(r: &Result<Reading, ReadError>) -> (u64, f64) {
    match r {
        Ok(Reading::Counter {
            value,
            wrap,
            joules_per_unit,
        }) => {
            assert_eq!(*wrap, Wrap::At(1 << 32));
            (*value, *joules_per_unit)
        }
        other => panic!("not a counter: {other:?}"),
    }
}

/// A 2-socket Intel server (CPUs 0,2 on package 0 and 1,3 on package 1), ESU=14, with
/// package, PP0 and DRAM on both packages, no PP1, and psys.
fn intel_2s(root: &Path, model: u32) -> FakeMsr {
    write_cpuinfo(root, "GenuineIntel", 6, model).unwrap();
    write_topology(root, &[0, 1, 0, 1]).unwrap();
    let m = FakeMsr::new(root).unwrap();
    for cpu in 0..4 {
        m.add_cpu(cpu).unwrap();
    }
    for (cpu, base) in [(0usize, 1000u64), (1, 2000)] {
        m.set(cpu, MSR_RAPL_POWER_UNIT, FakeMsr::unit_register(14))
            .unwrap()
            .set(cpu, MSR_PKG_ENERGY_STATUS, base + 1)
            .unwrap()
            .set(cpu, MSR_PP0_ENERGY_STATUS, base + 2)
            .unwrap()
            .set(cpu, MSR_DRAM_ENERGY_STATUS, base + 3)
            .unwrap();
    }
    m.set(0, MSR_PLATFORM_ENERGY_STATUS, 77).unwrap();
    m
}

#[test]
fn intel_two_sockets_esu_14() {
    let t = tempfile::tempdir().unwrap();
    intel_2s(t.path(), 0x2D); // Sandy Bridge-EP: DRAM uses the ESU
    let mut s = MsrSource::open(&ctx(t.path())).unwrap();
    assert_eq!(s.vendor(), Vendor::Intel);
    assert_eq!(
        list(&s),
        vec![
            d("package-0", Package, Some(0)),
            d("core-0", Core, Some(0)),
            d("dram-0", Dram, Some(0)),
            d("package-1", Package, Some(1)),
            d("core-1", Core, Some(1)),
            d("dram-1", Dram, Some(1)),
            d("psys", Psys, None),
        ]
    );
    let out = read(&mut s);
    let values: Vec<u64> = out.iter().map(|r| counter(r).0).collect();
    assert_eq!(values, vec![1001, 1002, 1003, 2001, 2002, 2003, 77]);
    for r in &out {
        assert_eq!(counter(r).1, 1.0 / 16384.0);
    }
    assert_eq!(
        s.device_paths(),
        vec![
            t.path().join("dev/cpu/0/msr").as_path(),
            t.path().join("dev/cpu/1/msr").as_path()
        ]
    );
}

#[test]
fn intel_server_dram_uses_the_fixed_unit() {
    let t = tempfile::tempdir().unwrap();
    intel_2s(t.path(), 0x55); // Skylake-SP
    let mut s = MsrSource::open(&ctx(t.path())).unwrap();
    let out = read(&mut s);
    assert_eq!(counter(&out[0]).1, 1.0 / 16384.0);
    assert_eq!(counter(&out[2]).1, 1.0 / 65536.0);
    assert_eq!(counter(&out[5]).1, 1.0 / 65536.0);
}

#[test]
fn intel_laptop_has_uncore_and_psys_but_no_dram() {
    let t = tempfile::tempdir().unwrap();
    write_cpuinfo(t.path(), "GenuineIntel", 6, 0x8C).unwrap();
    let m = FakeMsr::new(t.path()).unwrap();
    m.add_cpu(0)
        .unwrap()
        .set(0, MSR_RAPL_POWER_UNIT, FakeMsr::unit_register(14))
        .unwrap()
        .set(0, MSR_PKG_ENERGY_STATUS, 10)
        .unwrap()
        .set(0, MSR_PP0_ENERGY_STATUS, 11)
        .unwrap()
        .set(0, MSR_PP1_ENERGY_STATUS, 12)
        .unwrap()
        .set(0, MSR_PLATFORM_ENERGY_STATUS, 13)
        .unwrap();
    // No topology files: one package holding CPU 0.
    let s = MsrSource::open(&ctx(t.path())).unwrap();
    assert_eq!(
        list(&s),
        vec![
            d("package-0", Package, Some(0)),
            d("core-0", Core, Some(0)),
            d("uncore-0", Uncore, Some(0)),
            d("psys", Psys, None),
        ]
    );
}

#[test]
fn amd_two_sockets_esu_16() {
    let t = tempfile::tempdir().unwrap();
    write_cpuinfo(t.path(), "AuthenticAMD", 0x19, 1).unwrap();
    write_topology(t.path(), &[0, 0, 1, 1]).unwrap();
    let m = FakeMsr::new(t.path()).unwrap();
    for cpu in 0..4 {
        m.add_cpu(cpu).unwrap();
    }
    for (cpu, base) in [(0usize, 100u64), (2, 200)] {
        m.set(cpu, MSR_AMD_RAPL_POWER_UNIT, FakeMsr::unit_register(16))
            .unwrap()
            .set(cpu, MSR_AMD_PKG_ENERGY_STATUS, base + 1)
            .unwrap()
            .set(cpu, MSR_AMD_CORE_ENERGY_STATUS, base + 2)
            .unwrap();
    }
    let mut s = MsrSource::open(&ctx(t.path())).unwrap();
    assert_eq!(s.vendor(), Vendor::Amd);
    assert_eq!(
        list(&s),
        vec![
            d("package-0", Package, Some(0)),
            d("core-0", Core, Some(0)),
            d("package-1", Package, Some(1)),
            d("core-1", Core, Some(1)),
        ]
    );
    let out = read(&mut s);
    assert_eq!(counter(&out[0]), (101, 1.0 / 65536.0));
    assert_eq!(counter(&out[3]), (202, 1.0 / 65536.0));
    assert_eq!(s.warnings().len(), 2);
    assert!(s.warnings()[1].contains("core-1 is the energy of CPU 2's core only"));
}

#[test]
fn hygon_uses_the_amd_registers() {
    let t = tempfile::tempdir().unwrap();
    write_cpuinfo(t.path(), "HygonGenuine", 0x18, 0).unwrap();
    let m = FakeMsr::new(t.path()).unwrap();
    m.add_cpu(0)
        .unwrap()
        .set(0, MSR_AMD_RAPL_POWER_UNIT, FakeMsr::unit_register(16))
        .unwrap()
        .set(0, MSR_AMD_PKG_ENERGY_STATUS, 5)
        .unwrap();
    let s = MsrSource::open(&ctx(t.path())).unwrap();
    assert_eq!(list(&s), vec![d("package-0", Package, Some(0))]);
}

#[test]
fn thirty_two_bit_wrap_between_reads() {
    let t = tempfile::tempdir().unwrap();
    let m = intel_2s(t.path(), 0x2D);
    m.set(0, MSR_PKG_ENERGY_STATUS, (1 << 32) - 1000).unwrap();
    let mut s = MsrSource::open(&ctx(t.path())).unwrap();
    let mut acc = Accumulator::new();
    acc.update(0.0, read(&mut s)[0].clone().unwrap());
    // Reserved high bits set: the reader keeps bits 31:0 only.
    m.set(0, MSR_PKG_ENERGY_STATUS, 0xdead_0000_0000_0000 | 500)
        .unwrap();
    let r = read(&mut s)[0].clone();
    assert_eq!(counter(&r).0, 500);
    acc.update(0.1, r.unwrap());
    assert_eq!(acc.wraps, 1);
    assert!(
        (acc.total_j - 1500.0 / 16384.0).abs() < 1e-12,
        "{}",
        acc.total_j
    );
}

#[test]
fn driven_msr_counter_wraps_and_accumulates() {
    let t = tempfile::tempdir().unwrap();
    write_cpuinfo(t.path(), "AuthenticAMD", 0x17, 0x31).unwrap();
    let m = FakeMsr::new(t.path()).unwrap();
    let jpu = 1.0 / 65536.0;
    m.add_cpu(0)
        .unwrap()
        .set(0, MSR_AMD_RAPL_POWER_UNIT, FakeMsr::unit_register(16))
        .unwrap()
        .set(0, MSR_AMD_PKG_ENERGY_STATUS, 1)
        .unwrap();
    // 200 W starting 5 J below the 2^32 wrap (65536 J): wraps after 25 ms.
    let start = (1u64 << 32) - 5 * 65536;
    let driver = CounterDriver::start(vec![DrivenCounter::msr(
        m.msr_path(0),
        MSR_AMD_PKG_ENERGY_STATUS,
        200.0,
        jpu,
        start,
    )])
    .unwrap();
    let mut s = MsrSource::open(&ctx(t.path())).unwrap();
    let t0 = std::time::Instant::now();
    let mut acc = Accumulator::new();
    let mut out = Vec::new();
    loop {
        s.read(&mut out);
        let now = t0.elapsed();
        acc.update(now.as_secs_f64(), out[0].clone().unwrap());
        if now > Duration::from_millis(200) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(driver);
    let w = acc.total_j / t0.elapsed().as_secs_f64();
    assert_eq!(acc.wraps, 1);
    assert!((w - 200.0).abs() < 16.0, "{w} W");
}

#[test]
fn missing_msr_module() {
    let t = tempfile::tempdir().unwrap();
    write_cpuinfo(t.path(), "GenuineIntel", 6, 0x8C).unwrap();
    let u = MsrSource::open(&ctx(t.path())).unwrap_err();
    assert_eq!(u.kind, UnavailableKind::ModuleMissing);
    assert_eq!(
        u.reason,
        format!(
            "no {}: the msr kernel module is not loaded",
            t.path().join("dev/cpu/0/msr").display()
        )
    );
    assert!(u.fix.as_deref().unwrap().starts_with("sudo modprobe msr"));
    // /dev/cpu/0 exists (cpuid only), still no msr.
    std::fs::create_dir_all(t.path().join("dev/cpu/0")).unwrap();
    std::fs::write(t.path().join("dev/cpu/0/cpuid"), "").unwrap();
    let u = MsrSource::open(&ctx(t.path())).unwrap_err();
    assert_eq!(u.kind, UnavailableKind::ModuleMissing);
}

#[test]
#[cfg_attr(
    not(probe_rapl_msr_cpu),
    ignore = "needs an x86 CPU with RAPL MSRs (probe_rapl_msr_cpu): Intel, or AMD or Hygon family 0x17 or later"
)]
#[cfg_attr(
    all(probe_rapl_msr_cpu, probe_msr_device),
    ignore = "needs a machine without /dev/cpu/0/msr, and this one has it (probe_msr_device): sudo rmmod msr to run it"
)]
fn real_root_without_msr_device_is_module_missing() {
    // build.rs probes both; the machine may have changed since the build.
    let stale = "this test needs an x86 CPU with RAPL MSRs and no /dev/cpu/0/msr \
                 (build.rs probes both: touch build.rs if the machine changed)";
    assert!(!Path::new("/dev/cpu/0/msr").exists(), "{stale}");
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let rapl_cpu = match parse_cpuinfo(&cpuinfo).and_then(|c| c.vendor().map(|v| (v, c.family))) {
        Some((Vendor::Intel, _)) => true,
        Some((Vendor::Amd, f)) => f >= 0x17,
        None => false,
    };
    assert!(rapl_cpu, "{stale}");
    let ctx = OpenContext::for_root(SysRoot::default());
    let u = MsrSource::open(&ctx).unwrap_err();
    assert_eq!(u.kind, UnavailableKind::ModuleMissing, "{u:?}");
    assert!(u.reason.starts_with("no /dev/cpu/"), "{}", u.reason);
}

#[test]
fn unknown_vendor_and_old_amd_are_not_present() {
    let t = tempfile::tempdir().unwrap();
    let m = FakeMsr::new(t.path()).unwrap();
    m.add_cpu(0).unwrap();
    for (vendor, family) in [("CentaurHauls", 6), ("AuthenticAMD", 0x15)] {
        write_cpuinfo(t.path(), vendor, family, 0).unwrap();
        let u = MsrSource::open(&ctx(t.path())).unwrap_err();
        assert_eq!(u.kind, UnavailableKind::NotPresent, "{vendor}");
    }
    let u = MsrSource::open_with_cpu(&ctx(t.path()), &CpuIdent::new("VIA", 6, 0)).unwrap_err();
    assert!(u.reason.contains("'VIA'"), "{}", u.reason);
}

#[test]
fn unimplemented_unit_register_is_not_present() {
    let t = tempfile::tempdir().unwrap();
    write_cpuinfo(t.path(), "GenuineIntel", 6, 0x8C).unwrap();
    let m = FakeMsr::new(t.path()).unwrap();
    m.add_cpu(0).unwrap();
    // Empty device: every read past the end, like EIO from an unimplemented MSR.
    let u = MsrSource::open(&ctx(t.path())).unwrap_err();
    assert_eq!(u.kind, UnavailableKind::NotPresent);
    assert!(
        u.reason
            .starts_with("RAPL MSRs not implemented by this CPU or hypervisor"),
        "{}",
        u.reason
    );
    assert!(u.reason.contains("0x606"), "{}", u.reason);
    // A hypervisor answering 0 for unknown MSRs.
    m.set(0, MSR_PLATFORM_ENERGY_STATUS, 0).unwrap();
    let u = MsrSource::open(&ctx(t.path())).unwrap_err();
    assert_eq!(u.kind, UnavailableKind::NotPresent);
    // A unit register but no energy register.
    m.set(0, MSR_RAPL_POWER_UNIT, FakeMsr::unit_register(14))
        .unwrap();
    let u = MsrSource::open(&ctx(t.path())).unwrap_err();
    assert_eq!(u.kind, UnavailableKind::NotPresent);
}

#[test]
fn failing_register_mid_run_is_a_read_error() {
    let t = tempfile::tempdir().unwrap();
    let m = intel_2s(t.path(), 0x2D);
    let mut s = MsrSource::open(&ctx(t.path())).unwrap();
    assert!(read(&mut s).iter().all(|r| r.is_ok()));
    // Shrink the device file so the psys register (the highest offset) reads short.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(m.msr_path(0))
        .unwrap();
    f.set_len(FakeMsr::offset(MSR_PLATFORM_ENERGY_STATUS))
        .unwrap();
    let out = read(&mut s);
    let e = out[6].clone().unwrap_err();
    assert!(e.message.contains("0x64d"), "{}", e.message);
    assert!(e.message.contains("dev/cpu/0/msr"), "{}", e.message);
    assert!(out[0].is_ok());
}
