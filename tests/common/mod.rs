//! Shared by the end-to-end tests of the binary.
// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

// Launchers (issue 13)
pub mod ranks;

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// The built joulerun, reading hardware under `root` and its baseline state under
/// `state`, with every other joulerun setting of the caller's environment removed.
pub fn joulerun(root: &Path, state: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_joulerun"));
    c.env("JOULERUN_SYSFS_ROOT", root)
        .env("XDG_STATE_HOME", state);
    scrub(&mut c);
    c.stdin(Stdio::null());
    c
}

/// Removes every joulerun setting of the caller's environment from `c`, so a test sees
/// only what it sets.
pub fn scrub(c: &mut Command) {
    for var in [
        "JOULERUN_BASELINE",
        "JOULERUN_SOURCE",
        "JOULERUN_PRICE",
        "JOULERUN_CURRENCY",
        "JOULERUN_CPU_WATTS",
        // Carbon (issue 12)
        "JOULERUN_CARBON_INTENSITY",
        "JOULERUN_REGION",
        "JOULERUN_PUE",
        "JOULERUN_NVML_LIB",
        "JOULERUN_FAKE_NVML",
        "CUDA_VISIBLE_DEVICES",
    ] {
        c.env_remove(var);
    }
}

/// A finished command's status and both outputs, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout {}\nstderr {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The JSON joulerun wrote on stdout, or a panic showing both of its outputs.
pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON ({e}): stdout {} stderr {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

/// The JSON of a joulerun that exited 0, or a panic showing its status and outputs.
pub fn ok_json(o: &Output) -> serde_json::Value {
    assert_eq!(o.status.code(), Some(0), "{}", text(o));
    json(o)
}

/// Tests that read the whole machine's CPU time (shares, timed workloads) run one at a
/// time within their test binary.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A shell busy loop of about `s` seconds of CPU (by wall clock, on an idle CPU).
pub fn burn(s: f64) -> String {
    format!(
        "end=$(( $(date +%s%N) + {} )); while [ $(date +%s%N) -lt $end ]; do :; done",
        (s * 1e9) as u64
    )
}

/// A fake machine with one RAPL package (`intel-rapl:0`, `package-0`, two CPUs on
/// package 0) under a temporary root, whose state directory is the default baseline
/// location of [`OnePackage::bin`].
pub struct OnePackage {
    pub dir: tempfile::TempDir,
    pub f: joulerun_testkit::fakehw::FakePowercap,
}

impl OnePackage {
    pub fn new() -> OnePackage {
        use joulerun_testkit::fakehw::{FakePowercap, INTEL_RANGE_UJ, write_topology};
        let dir = tempfile::tempdir().unwrap();
        let f = FakePowercap::new(dir.path()).unwrap();
        f.add_zone("intel-rapl:0", "package-0", 0, Some(INTEL_RANGE_UJ))
            .unwrap();
        write_topology(dir.path(), &[0, 0]).unwrap();
        std::fs::create_dir_all(dir.path().join("state/joulerun")).unwrap();
        OnePackage { dir, f }
    }

    /// Run the package counter at `watts` until the driver is dropped.
    pub fn drive(&self, watts: f64) -> joulerun_testkit::fakehw::CounterDriver {
        use joulerun_testkit::fakehw::{CounterDriver, DrivenCounter, INTEL_RANGE_UJ};
        CounterDriver::start(vec![DrivenCounter::powercap(
            self.f.energy_path("intel-rapl:0"),
            watts,
            INTEL_RANGE_UJ,
            0,
        )])
        .unwrap()
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A file under the root (the tests' working directory).
    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.root().join(name)
    }

    /// The default baseline location of `bin()` (under its XDG_STATE_HOME): a missing
    /// file there means "no baseline", as on a machine never calibrated.
    pub fn baseline(&self) -> std::path::PathBuf {
        self.root().join("state/joulerun/baseline.json")
    }

    /// joulerun on this machine, in its root.
    pub fn bin(&self) -> Command {
        let mut c = joulerun(self.root(), &self.root().join("state"));
        c.current_dir(self.root());
        c
    }
}
