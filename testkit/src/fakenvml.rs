//! The fake `libnvidia-ml.so` (the `fake-nvml` and `fake-nvml-old` workspace members),
//! found and scripted for tests.
//!
//! [`lib`] and [`old_lib`] build the two libraries once per test process with
//! `cargo build -p fake-nvml -p fake-nvml-old` into their own target directory,
//! `<target>/fake-nvml` (`CARGO_TARGET_DIR`, else `target/` at the workspace root), and
//! return their paths. Their own target directory: the `cargo test` that runs the tests
//! holds the lock of the main one. The fake has no dependencies, so this takes a second
//! or two the first time and nothing afterwards; plain `cargo test` at the root needs no
//! step before it.
//!
//! [`Script`] writes the script the fake reads (its syntax: `fake-nvml/src/lib.rs`) and
//! rewrites it in one rename, so a run sees either the old or the new one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The variable the fake reads its script's path from.
pub const SCRIPT_VAR: &str = "JOULERUN_FAKE_NVML";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit sits in the workspace")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                workspace().join(p)
            }
        })
        .unwrap_or_else(|| workspace().join("target"));
    base.join("fake-nvml")
}

fn build() -> &'static Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let dir = target_dir();
        let out = Command::new(cargo)
            .current_dir(workspace())
            .args(["build", "--quiet", "-p", "fake-nvml", "-p", "fake-nvml-old"])
            .arg("--target-dir")
            .arg(&dir)
            .env_remove("CARGO_TARGET_DIR")
            .output()
            .map_err(|e| format!("cannot run cargo to build the fake NVML: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "building the fake NVML failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(dir.join("debug"))
    })
}

fn built(name: &str) -> PathBuf {
    match build() {
        Ok(dir) => {
            let p = dir.join(name);
            assert!(
                p.is_file(),
                "the fake NVML was built but {} is missing",
                p.display()
            );
            p
        }
        Err(e) => panic!("{e}"),
    }
}

/// `libfake_nvml.so`, built if needed.
pub fn lib() -> PathBuf {
    built("libfake_nvml.so")
}

/// `libfake_nvml_old.so`: the fake without `nvmlDeviceGetTotalEnergyConsumption`.
pub fn old_lib() -> PathBuf {
    built("libfake_nvml_old.so")
}

/// A script file for the fake.
pub struct Script {
    path: PathBuf,
}

impl Script {
    /// A script at `dir/nvml-script` holding `text`.
    pub fn new(dir: &Path, text: &str) -> Script {
        let s = Script {
            path: dir.join("nvml-script"),
        };
        s.write(text);
        s
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replace the script (in one rename: the fake never sees half of it).
    pub fn write(&self, text: &str) {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, text).expect("write the fake NVML script");
        std::fs::rename(&tmp, &self.path).expect("replace the fake NVML script");
    }
}

/// A GPU line: `uuid` from a number, a name, energy counter or not, constant watts.
pub fn gpu_line(n: u32, name: &str, energy: bool, watts: f64) -> String {
    format!(
        "gpu uuid={} name=\"{name}\" energy={} power={watts}\n",
        uuid(n),
        if energy { "yes" } else { "no" }
    )
}

/// The uuid of fake GPU `n`: `GPU-0000000n-1111-2222-3333-444444444444`.
pub fn uuid(n: u32) -> String {
    format!("GPU-{n:08x}-1111-2222-3333-444444444444")
}
