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
    c.stdin(Stdio::null());
    c
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
