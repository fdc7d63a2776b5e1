//! Launched jobs in tests (issue 13): fake nodes (each a fake RAPL package driven at a
//! known power), the `app` the ranks run, and the environment every rank needs, whether
//! its launcher is real (srun, mpirun) or made up.

use std::path::{Path, PathBuf};
use std::process::Command;

use joulerun_testkit::fakehw::{
    CounterDriver, DrivenCounter, FakePowercap, INTEL_RANGE_UJ, write_topology,
};

/// A fake node: one package whose counter runs at a constant power while it lives.
pub struct FakeNode {
    pub dir: tempfile::TempDir,
    _driver: CounterDriver,
}

impl FakeNode {
    pub fn new(watts: f64) -> FakeNode {
        let dir = tempfile::tempdir().unwrap();
        let f = FakePowercap::new(dir.path()).unwrap();
        f.add_zone("intel-rapl:0", "package-0", 0, Some(INTEL_RANGE_UJ))
            .unwrap();
        write_topology(dir.path(), &[0, 0]).unwrap();
        let driver = CounterDriver::start(vec![DrivenCounter::powercap(
            f.energy_path("intel-rapl:0"),
            watts,
            INTEL_RANGE_UJ,
            0,
        )])
        .unwrap();
        FakeNode {
            dir,
            _driver: driver,
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }
}

/// The application the ranks run: `app` in `dir`, busy (a shell loop, forking `date`)
/// for `APP_S` seconds times (its rank + 1), then exiting with `APP_EXIT` (0 unless set
/// for its rank as `APP_EXIT_<rank>`). Its rank comes from the launcher's variables.
pub fn write_app(dir: &Path) -> PathBuf {
    let p = dir.join("app");
    std::fs::write(
        &p,
        r#"#!/bin/sh
rank=${OMPI_COMM_WORLD_RANK:-${SLURM_PROCID:-0}}
ms=$(( ${APP_MS:-200} * (rank + 1) ))
end=$(( $(date +%s%N) + ms * 1000000 ))
while [ "$(date +%s%N)" -lt "$end" ]; do :; done
eval "code=\${APP_EXIT_$rank:-0}"
exit "$code"
"#,
    )
    .unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    p
}

/// The directory of the built joulerun, for `PATH`.
pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_joulerun"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// What every rank of a test needs in its environment: joulerun first in `PATH`, its
/// node's fake hardware, a rendezvous directory of the test's own, a state directory
/// without a baseline, and none of the caller's joulerun settings.
pub fn rank_env(c: &mut Command, root: &Path, runtime: &Path) {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![bin_dir()];
    paths.extend(std::env::split_paths(&path));
    c.env("PATH", std::env::join_paths(paths).unwrap())
        .env("JOULERUN_SYSFS_ROOT", root)
        .env("JOULERUN_RUNTIME_DIR", runtime)
        .env("XDG_STATE_HOME", runtime.join("state"));
    super::scrub(c);
}

/// The files in `dir` whose names start with `prefix` and end with `.json`, sorted.
pub fn json_files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with(prefix) && n.ends_with(".json")
        })
        .collect();
    v.sort();
    v
}

pub fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn num(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// `joulerun merge` of `files`, with its JSON on stdout.
pub fn merge(files: &[PathBuf], extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_joulerun"))
        .arg("merge")
        .args(files)
        .args(["--json", "-"])
        .args(extra)
        .output()
        .unwrap()
}

/// The checks every merged job must pass, whatever launched it: every node counted once
/// (its energy is its one reading's, or the sum of its readings' of different times),
/// the ranks' shares adding up to the job's share of each node, at most its dynamic
/// energy, and the totals adding up over the nodes.
pub fn check_merged(m: &serde_json::Value) {
    let nodes = m["nodes"].as_array().unwrap();
    let mut energy = 0.0;
    let mut job = 0.0;
    for n in nodes {
        let e = num(&n["energy_j"]);
        energy += e;
        let j = num(&n["job_j"]);
        job += j;
        let dynamic = num(&n["dynamic_j"]);
        let jd = num(&n["job_dynamic_j"]);
        assert!(
            jd <= dynamic + 1e-9,
            "job {jd} J > dynamic {dynamic} J: {n}"
        );
        let ranks: f64 = n["ranks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| num(&r["job_j"]))
            .sum();
        assert!(
            (ranks - j).abs() <= 1e-6 * j.max(1.0),
            "ranks' shares {ranks} J != the job's {j} J on {}",
            n["hostname"]
        );
        let domains: f64 = n["domains"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["in_total"] == true)
            .map(|d| num(&d["energy_j"]))
            .sum();
        assert!((domains - e).abs() < 1e-6, "{domains} != {e}");
    }
    assert!((num(&m["total"]["energy_j"]) - energy).abs() < 1e-6);
    assert!((num(&m["total"]["job_j"]) - job).abs() < 1e-6);
}
