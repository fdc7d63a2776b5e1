//! Launchers (issue 13) under a real MPI launcher: Open MPI's `mpirun` (Debian
//! openmpi-bin) starting joulerun ranks on a fake RAPL node, a real MPI program
//! (mpi4py) under joulerun, and the README's MPI batch script through a real Slurm.

use std::path::PathBuf;
use std::process::Command;

mod common;
use common::ranks::{
    FakeNode, check_merged, json_files, merge, num, rank_env, read_json, write_app,
};
use common::{serial, text};

/// `mpirun -np N --oversubscribe` with the ranks' environment; as root too (CI).
fn mpirun(node: &FakeNode, work: &std::path::Path, n: u32) -> Command {
    let mut c = Command::new("/usr/bin/mpirun");
    rank_env(&mut c, node.root(), &work.join("run"));
    for v in [
        "SLURM_JOB_ID",
        "SLURM_STEP_ID",
        "SLURM_PROCID",
        "SLURM_NODEID",
        "SLURM_CONF",
    ] {
        c.env_remove(v);
    }
    c.current_dir(work)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .args(["-np", &n.to_string(), "--oversubscribe"]);
    c
}

fn work() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let w = t.path().to_path_buf();
    std::fs::create_dir_all(w.join("run")).unwrap();
    (t, w)
}

#[test]
#[cfg_attr(
    not(probe_openmpi),
    ignore = "needs Open MPI's mpirun (Debian openmpi-bin): .ci/run installs it"
)]
fn mpirun_two_ranks_share_one_reading_of_their_node() {
    let _s = serial();
    let node = FakeNode::new(25.0);
    let (_t, w) = work();
    write_app(&w);
    let o = mpirun(&node, &w, 2)
        .env("APP_MS", "200")
        .args([
            "joulerun",
            "--json",
            "mpi-%j-%n-%r.json",
            "-o",
            "/dev/null",
            "--",
            "./app",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let files = json_files(&w, "mpi-");
    assert_eq!(files.len(), 2, "{files:?}");
    let js: Vec<serde_json::Value> = files.iter().map(|f| read_json(f)).collect();
    for j in &js {
        let l = &j["launcher"];
        assert_eq!(l["kind"], "openmpi");
        assert_eq!(l["size"], 2);
        assert_eq!(l["local_size"], 2);
        assert!(
            l["job"].is_string(),
            "the launch's namespace is the job: {l}"
        );
        assert!(l["step"].is_null());
    }
    let roles: Vec<&str> = js
        .iter()
        .map(|j| j["launcher"]["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles.iter().filter(|r| **r == "node").count(),
        1,
        "{roles:?}"
    );
    let o = merge(&files, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    check_merged(&m);
    assert_eq!(m["ranks"].as_array().unwrap().len(), 2);
    let lead = js.iter().find(|j| j["launcher"]["role"] == "node").unwrap();
    assert!((num(&m["total"]["energy_j"]) - num(&lead["total"]["energy_j"])).abs() < 1e-9);
}

/// A real MPI program (ranks exchanging data with MPI_Allreduce) under joulerun: MPI
/// wires up through joulerun untouched, and a failing rank's status comes back.
#[test]
#[cfg_attr(
    not(all(probe_openmpi, probe_mpi4py)),
    ignore = "needs Open MPI's mpirun and mpi4py (Debian openmpi-bin, python3-mpi4py): .ci/run installs them"
)]
fn a_real_mpi_program_runs_under_joulerun() {
    let _s = serial();
    let node = FakeNode::new(25.0);
    let (_t, w) = work();
    let app = w.join("app");
    std::fs::write(
        &app,
        r#"#!/usr/bin/python3
import time
from mpi4py import MPI
comm = MPI.COMM_WORLD
end = time.monotonic() + 0.3
total = 0
# Rank 0's clock ends the loop for all: every rank makes the same calls.
while not comm.bcast(time.monotonic() >= end if comm.Get_rank() == 0 else None, root=0):
    total = comm.allreduce(comm.Get_rank() + 1, op=MPI.SUM)
comm.Barrier()
with open(f"sum-{comm.Get_rank()}.txt", "w") as f:
    f.write(f"{total} {comm.Get_size()}\n")
"#,
    )
    .unwrap();
    std::fs::set_permissions(&app, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let o = mpirun(&node, &w, 2)
        // TCP between the ranks over the loopback only: a container's other interfaces
        // may route nowhere, and Open MPI would wait on them for ever.
        .args([
            "--mca",
            "btl",
            "self,tcp",
            "--mca",
            "btl_tcp_if_include",
            "lo",
        ])
        .args([
            "joulerun",
            "--json",
            "real-%r.json",
            "-o",
            "/dev/null",
            "--",
            "./app",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    for r in 0..2 {
        let s = std::fs::read_to_string(w.join(format!("sum-{r}.txt"))).unwrap();
        assert_eq!(
            s.trim(),
            "3 2",
            "rank {r}: MPI_Allreduce of 1 + 2 over 2 ranks"
        );
    }
    let files = json_files(&w, "real-");
    let o = merge(&files, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    check_merged(&m);
    assert!(
        m["ranks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| num(&r["cpu_s"]) > 0.0),
        "{m}"
    );
}

/// The README's MPI section shows this file; here `mpirun` runs inside a real Slurm
/// allocation through `sbatch`.
#[test]
#[cfg_attr(
    not(all(probe_openmpi, probe_slurm)),
    ignore = "needs Open MPI's mpirun and a real Slurm (Debian openmpi-bin, slurm-wlm, munge) and root: .ci/run installs them"
)]
fn the_readme_mpi_batch_script_runs_as_shown() {
    let script = include_str!("../scripts/mpi-energy.sbatch");
    assert!(
        include_str!("../README.md").contains(script),
        "README.md must show scripts/mpi-energy.sbatch as it is"
    );
    let _s = serial();
    let node = FakeNode::new(15.0);
    let t = tempfile::tempdir().unwrap();
    let slurm = t.path().join("slurm");
    std::fs::create_dir_all(&slurm).unwrap();
    let cluster = joulerun_testkit::slurm::Cluster::start(&slurm, 8)
        .unwrap_or_else(|e| panic!("the test cluster: {e}"));
    let w = t.path().join("work");
    std::fs::create_dir_all(w.join("run")).unwrap();
    write_app(&w);
    let mut c = cluster.command("/usr/bin/sbatch");
    rank_env(&mut c, node.root(), &w.join("run"));
    let o = c
        .current_dir(&w)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("APP_MS", "200")
        .args(["--wait", "--parsable"])
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mpi-energy.sbatch"))
        .output()
        .unwrap();
    let job = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let out = std::fs::read_to_string(w.join(format!("energy-mpi-{job}.out"))).unwrap_or_default();
    assert!(
        o.status.success(),
        "{}\njob output: {out}\n{}",
        text(&o),
        cluster.logs()
    );
    let merged = read_json(&w.join(format!("energy-{job}.json")));
    check_merged(&merged);
    assert_eq!(
        merged["job"].as_str(),
        Some(job.as_str()),
        "%j is the Slurm job under mpirun too"
    );
    assert_eq!(merged["ranks"].as_array().unwrap().len(), 2);
    for f in json_files(&w, &format!("energy-{job}-")) {
        assert_eq!(read_json(&f)["launcher"]["kind"], "openmpi");
    }
}
