//! End-to-end tests of the built binary against absurd readings and settings.

use std::path::Path;
use std::process::Command;

mod common;

fn bin(root: &Path) -> Command {
    common::joulerun(root, &root.join("state"))
}

#[test]
fn absurd_cpu_watts_are_a_usage_error_with_one_clear_line() {
    let t = tempfile::tempdir().unwrap();
    let marker = t.path().join("ran");
    for watts in ["1e308,1e308", "1e10,1e10"] {
        for via_env in [false, true] {
            let mut c = bin(t.path());
            if via_env {
                c.env("JOULERUN_CPU_WATTS", watts);
            } else {
                c.args(["--cpu-watts", watts]);
            }
            let o = c
                .args(["--source", "estimate", "--", "touch"])
                .arg(&marker)
                .output()
                .unwrap();
            assert_eq!(o.status.code(), Some(2), "{watts}");
            let e = String::from_utf8_lossy(&o.stderr);
            assert_eq!(e.trim_end().lines().count(), 1, "{e}");
            assert!(e.contains("--cpu-watts"), "{e}");
            assert!(e.contains("1 MW"), "{e}");
            assert!(!marker.exists());
        }
    }
}
