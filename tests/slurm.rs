//! Launchers (issue 13) under a real Slurm: Debian's slurm-wlm and munge, started by each
//! test as a one-node cluster on 127.0.0.1 (`joulerun_testkit::slurm`), `srun -n 3
//! joulerun ...` on a fake RAPL node, `joulerun merge`, the README's batch script through
//! `sbatch`, and two nodes simulated with UTS namespaces.

use std::path::{Path, PathBuf};

use joulerun_testkit::slurm::Cluster;

mod common;
use common::ranks::{
    FakeNode, check_merged, json_files, merge, num, rank_env, read_json, write_app,
};
use common::{serial, text};

/// Fields drop in order: the cluster (its daemons stopped by the pids in their files)
/// before the directory that holds those files.
struct Setup {
    cluster: Cluster,
    work: PathBuf,
    _t: tempfile::TempDir,
}

fn setup() -> Setup {
    let t = tempfile::tempdir().unwrap();
    let slurm = t.path().join("slurm");
    std::fs::create_dir_all(&slurm).unwrap();
    let cluster = Cluster::start(&slurm, 8).unwrap_or_else(|e| panic!("the test cluster: {e}"));
    let work = t.path().join("work");
    std::fs::create_dir_all(work.join("run")).unwrap();
    write_app(&work);
    Setup {
        cluster,
        work,
        _t: t,
    }
}

#[test]
#[cfg_attr(
    not(probe_slurm),
    ignore = "needs a real Slurm (Debian slurm-wlm and munge) and root: .ci/run installs them"
)]
fn srun_three_ranks_then_merge_counts_the_node_once() {
    let _s = serial();
    let node = FakeNode::new(20.0);
    let s = setup();
    let mut c = s.cluster.command("/usr/bin/srun");
    rank_env(&mut c, node.root(), &s.work.join("run"));
    let o = c
        .current_dir(&s.work)
        .env("APP_MS", "200")
        .args(["-n", "3", "joulerun", "--json", "energy-%j-%n-%r.json"])
        .args(["-o", "energy-%j-%n-%r.txt", "--", "./app"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}\n{}", text(&o), s.cluster.logs());
    let files = json_files(&s.work, "energy-");
    assert_eq!(files.len(), 3, "{files:?}");
    let js: Vec<serde_json::Value> = files.iter().map(|f| read_json(f)).collect();
    let job = js[0]["launcher"]["job"].as_str().unwrap().to_string();
    for (j, f) in js.iter().zip(&files) {
        let l = &j["launcher"];
        assert_eq!(l["kind"], "slurm");
        assert_eq!(l["job"].as_str(), Some(job.as_str()));
        assert_eq!(l["step"], "0");
        assert_eq!(l["size"], 3);
        assert_eq!(l["node_name"].as_str(), Some(s.cluster.node()));
        // The file names carry the launcher's job, node and rank.
        assert_eq!(
            f.file_name().unwrap().to_string_lossy(),
            format!("energy-{job}-0-{}.json", l["rank"])
        );
    }
    let lead: Vec<&serde_json::Value> = js
        .iter()
        .filter(|j| j["launcher"]["role"] == "node")
        .collect();
    assert_eq!(lead.len(), 1, "the node is measured once");
    assert_eq!(lead[0]["launcher"]["ranks"].as_array().unwrap().len(), 3);
    let e = num(&lead[0]["total"]["energy_j"]);
    let el = num(&lead[0]["elapsed_s"]);
    assert!(
        (e - 20.0 * el).abs() < 0.15 * 20.0 * el + 0.5,
        "{e} J over {el} s"
    );

    let o = merge(&files, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    check_merged(&m);
    assert_eq!(m["job"].as_str(), Some(job.as_str()));
    assert_eq!(m["nodes"].as_array().unwrap().len(), 1);
    // Counted once: the node's one reading, not three.
    assert!((num(&m["total"]["energy_j"]) - e).abs() < 1e-9);
    assert_eq!(m["ranks"].as_array().unwrap().len(), 3);
    // A share for every rank; the longer ranks used more CPU.
    let cpu: Vec<f64> = (0..3).map(|r| num(&m["ranks"][r]["cpu_s"])).collect();
    assert!(cpu.iter().all(|c| *c > 0.0), "{cpu:?}");
}

/// The README's Slurm section shows this file; here it runs through `sbatch`.
#[test]
#[cfg_attr(
    not(probe_slurm),
    ignore = "needs a real Slurm (Debian slurm-wlm and munge) and root: .ci/run installs them"
)]
fn the_readme_slurm_batch_script_runs_as_shown() {
    let script = include_str!("../scripts/slurm-energy.sbatch");
    assert!(
        include_str!("../README.md").contains(script),
        "README.md must show scripts/slurm-energy.sbatch as it is"
    );
    let _s = serial();
    let node = FakeNode::new(15.0);
    let s = setup();
    let job = sbatch(&s, &node, "slurm-energy.sbatch");
    let merged = read_json(&s.work.join(format!("energy-{job}.json")));
    check_merged(&merged);
    assert_eq!(merged["job"].as_str(), Some(job.as_str()));
    assert_eq!(merged["ranks"].as_array().unwrap().len(), 3);
    assert_eq!(merged["nodes"].as_array().unwrap().len(), 1);
    let report = std::fs::read_to_string(s.work.join(format!("energy-{job}.txt"))).unwrap();
    assert!(
        report.contains(&format!(
            "Energy of job {job}: 1 node, 3 ranks, from 3 files"
        )),
        "{report}"
    );
}

/// Submit `scripts/<name>` with `sbatch --wait` from the work directory; the job id.
fn sbatch(s: &Setup, node: &FakeNode, name: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name);
    let mut c = s.cluster.command("/usr/bin/sbatch");
    rank_env(&mut c, node.root(), &s.work.join("run"));
    let o = c
        .current_dir(&s.work)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("APP_MS", "200")
        .args(["--wait", "--parsable"])
        .arg(&script)
        .output()
        .unwrap();
    let job = String::from_utf8_lossy(&o.stdout)
        .trim()
        .split(';')
        .next()
        .unwrap_or("")
        .to_string();
    let out = std::fs::read_to_string(
        std::fs::read_dir(&s.work)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "out"))
            .unwrap_or_default(),
    )
    .unwrap_or_default();
    assert!(
        o.status.success() && !job.is_empty(),
        "{}\njob output: {out}\n{}",
        text(&o),
        s.cluster.logs()
    );
    job
}

/// Two nodes on one machine: ranks 0-1 on `sim0`, 2-3 on `sim1`, each rank in a UTS
/// namespace of its node's host name, with the variables a real two-node step has, and
/// each node its own fake hardware (10 W and 30 W). The files' names carry no node; the
/// merge keeps the nodes apart by their identity.
#[test]
#[cfg_attr(
    not(all(probe_slurm, probe_unshare_uts)),
    ignore = "needs a real Slurm (Debian slurm-wlm and munge), root, and unshare --uts: .ci/run installs them"
)]
fn nodes_simulated_with_uts_namespaces_are_kept_apart_by_identity() {
    let _s = serial();
    let sim0 = FakeNode::new(10.0);
    let sim1 = FakeNode::new(30.0);
    let s = setup();
    let wrapper = s.work.join("sim-node");
    std::fs::write(
        &wrapper,
        r#"#!/bin/sh
# A two-node step on one machine: what srun sets on each node, a host name of its own.
n=$((SLURM_PROCID / 2))
export SLURM_NODEID=$n SLURM_LOCALID=$((SLURM_PROCID % 2)) SLURMD_NODENAME=sim$n
eval "export JOULERUN_SYSFS_ROOT=\$SIM_ROOT_$n"
exec unshare --uts sh -c 'hostname "$SLURMD_NODENAME" && exec "$@"' sh "$@"
"#,
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut c = s.cluster.command("/usr/bin/srun");
    rank_env(&mut c, sim0.root(), &s.work.join("run"));
    let o = c
        .current_dir(&s.work)
        .env("SIM_ROOT_0", sim0.root())
        .env("SIM_ROOT_1", sim1.root())
        .env("APP_MS", "150")
        .args(["-n", "4", "./sim-node", "joulerun", "--json", "out-%r.json"])
        .args(["-o", "/dev/null", "--", "./app"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}\n{}", text(&o), s.cluster.logs());
    let files = json_files(&s.work, "out-");
    assert_eq!(files.len(), 4);
    let js: Vec<serde_json::Value> = files.iter().map(|f| read_json(f)).collect();
    for (r, j) in js.iter().enumerate() {
        assert_eq!(j["launcher"]["node"]["hostname"], format!("sim{}", r / 2));
    }
    assert_eq!(
        js.iter()
            .filter(|j| j["launcher"]["role"] == "node")
            .count(),
        2,
        "one reading per node"
    );
    // Names that lie about the node change nothing: rank 0's file is called "sim1".
    let renamed: Vec<PathBuf> = files
        .iter()
        .enumerate()
        .map(|(r, f)| {
            let to = s.work.join(format!("sim{}-{r}.json", 1 - r / 2));
            std::fs::copy(f, &to).unwrap();
            to
        })
        .collect();
    for set in [&files, &renamed] {
        let o = merge(set, &[]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        check_merged(&m);
        let nodes = m["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 2);
        for n in nodes {
            let host = n["hostname"].as_str().unwrap();
            let (watts, ranks) = if host == "sim0" {
                (10.0, [0, 1])
            } else {
                (30.0, [2, 3])
            };
            let got: Vec<u64> = n["ranks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["rank"].as_u64().unwrap())
                .collect();
            assert_eq!(got, ranks, "{host}");
            let e = num(&n["energy_j"]);
            let el = num(&n["measured_s"]);
            assert!(
                (e - watts * el).abs() < 0.15 * watts * el + 0.5,
                "{host}: {e} J over {el} s"
            );
        }
    }
}
