//! EACCES on the counter files, end to end.
//!
//! `chmod` does not stop root, and tests often run as root. So: as a normal user the
//! opening code runs in-process on a fake tree with the kernel's 0400 mode (owned by us,
//! made 0000); as root this test binary re-runs itself, the single test named, in a child
//! process with uid/gid 65534 (nobody) against a root-owned tree with mode 0400, exactly
//! the situation of a normal user on Linux >= 5.10. Where uid 65534 cannot reach the
//! build, the test is ignored (build.rs, `probe_run_as_nobody`). The classification itself
//! is also unit-tested with a real errno in `sources::powercap`.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use joulerun::sources::msr::{MSR_RAPL_POWER_UNIT, MsrSource};
use joulerun::sources::powercap::PowercapSource;
use joulerun::sources::{OpenContext, UnavailableKind};
use joulerun::sysroot::SysRoot;
use joulerun_testkit::fakehw::{FakeMsr, FakePowercap, write_cpuinfo};

const CHILD_ENV: &str = "JOULERUN_TEST_UNPRIVILEGED_ROOT";
const CHILD_OK: &str = "unprivileged-child-checks-passed";

fn ctx(root: &Path) -> OpenContext {
    OpenContext::for_root(SysRoot::new(root))
}

fn check_powercap(root: &Path) {
    let u = PowercapSource::open(&ctx(root)).unwrap_err();
    assert_eq!(u.kind, UnavailableKind::Permission, "{u:?}");
    let path = root.join("sys/class/powercap/intel-rapl:0/energy_uj");
    assert_eq!(
        u.reason,
        format!(
            "cannot read {}: permission denied (energy_uj is readable by root only since \
             Linux 5.10, CVE-2020-8694)",
            path.display()
        )
    );
    assert!(u.fix.unwrap().contains("sudo chmod o+r"));
}

fn check_msr(root: &Path) {
    let u = MsrSource::open(&ctx(root)).unwrap_err();
    assert_eq!(u.kind, UnavailableKind::Permission, "{u:?}");
    assert_eq!(
        u.reason,
        format!(
            "cannot open {}: permission denied",
            root.join("dev/cpu/0/msr").display()
        )
    );
    assert_eq!(
        u.fix.as_deref(),
        Some("run as root (reading MSRs needs CAP_SYS_RAWIO)")
    );
}

fn build_tree(root: &Path, mode: u32) {
    let f = FakePowercap::intel_laptop(root).unwrap();
    for id in [
        "intel-rapl:0",
        "intel-rapl:0:0",
        "intel-rapl:0:1",
        "intel-rapl:1",
    ] {
        f.chmod_energy(id, mode).unwrap();
    }
    let m = FakeMsr::new(root).unwrap();
    m.add_cpu(0)
        .unwrap()
        .set(0, MSR_RAPL_POWER_UNIT, FakeMsr::unit_register(14))
        .unwrap();
    std::fs::set_permissions(m.msr_path(0), std::fs::Permissions::from_mode(mode)).unwrap();
    write_cpuinfo(root, "GenuineIntel", 6, 0x8C).unwrap();
}

#[test]
#[cfg_attr(
    all(probe_root, not(probe_run_as_nobody)),
    ignore = "as root it re-runs itself as uid 65534, which cannot reach the temporary or target directory here (probe_run_as_nobody): chmod o+x the directories above them, or run as a normal user"
)]
fn unreadable_counters_are_a_permission_problem() {
    if let Some(root) = std::env::var_os(CHILD_ENV) {
        // The unprivileged child.
        let root = Path::new(&root);
        check_powercap(root);
        check_msr(root);
        println!("{CHILD_OK}");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    if !nix::unistd::geteuid().is_root() {
        build_tree(t.path(), 0o000);
        check_powercap(t.path());
        check_msr(t.path());
        return;
    }
    // Root: a root-owned tree with the kernel's modes, read by uid 65534.
    build_tree(t.path(), 0o400);
    // The child must be able to reach the files: open up the tempdir (0700) itself, and
    // never touch anything above it (build.rs checked that uid 65534 gets through).
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for d in t.path().ancestors().skip(1) {
        let mode = std::fs::metadata(d).unwrap().permissions().mode();
        assert!(
            mode & 0o001 != 0,
            "{} is not searchable by other users, so the unprivileged child cannot reach the \
             fake tree (build.rs probes this as probe_run_as_nobody; touch build.rs if the \
             machine changed since the build)",
            d.display()
        );
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(&exe)
        .args([
            "unreadable_counters_are_a_permission_problem",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, t.path())
        .uid(65534)
        .gid(65534)
        .output();
    let out = out.unwrap_or_else(|e| panic!("cannot start {} as uid 65534: {e}", exe.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(CHILD_OK),
        "child failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
}
