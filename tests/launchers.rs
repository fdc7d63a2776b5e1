//! Launchers (issue 13) end to end through the built binary, without a launcher: ranks
//! started with the environment Slurm gives its tasks, on fake nodes. The same flows
//! under the real Slurm and Open MPI are in `tests/slurm.rs` and `tests/mpi.rs`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;
use common::ranks::{
    FakeNode, check_merged, json_files, merge, num, rank_env, read_json, write_app,
};
use common::serial;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Start `n` ranks of job `job` on one fake node (its sysfs under `root`), as srun would (`SLURM_*`), each
/// running `joulerun --json out-%j-%n-%r.json -o out-%j-%n-%r.txt -- ./app`, and wait.
fn run_ranks(dir: &Path, root: &Path, job: &str, n: u32, extra: &[(&str, &str)]) -> Vec<Output> {
    let children: Vec<_> = (0..n)
        .map(|r| {
            let mut c = Command::new(env!("CARGO_BIN_EXE_joulerun"));
            rank_env(&mut c, root, &dir.join("run"));
            c.current_dir(dir)
                .env("SLURM_JOB_ID", job)
                .env("SLURM_STEP_ID", "0")
                .env("SLURM_PROCID", r.to_string())
                .env("SLURM_LOCALID", r.to_string())
                .env("SLURM_NODEID", "0")
                .env("SLURMD_NODENAME", "fake")
                .env("SLURM_STEP_NUM_TASKS", n.to_string())
                .env("APP_MS", "150")
                .envs(extra.iter().copied())
                .args([
                    "--json",
                    "out-%j-%n-%r.json",
                    "-o",
                    "out-%j-%n-%r.txt",
                    "--",
                    "./app",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("run")).unwrap();
    write_app(t.path());
    let p = t.path().to_path_buf();
    (t, p)
}

#[test]
fn the_ranks_of_a_node_measure_it_once_and_their_shares_add_up() {
    let _s = serial();
    let node = FakeNode::new(20.0);
    let (_t, dir) = setup();
    let outs = run_ranks(&dir, node.root(), "4242", 3, &[("APP_EXIT_2", "3")]);
    // Each joulerun exits with its own command's status.
    let codes: Vec<Option<i32>> = outs.iter().map(|o| o.status.code()).collect();
    assert_eq!(
        codes,
        [Some(0), Some(0), Some(3)],
        "{:?}",
        outs.iter().map(stderr).collect::<Vec<_>>()
    );
    let files = json_files(&dir, "out-4242-0-");
    assert_eq!(files.len(), 3, "{files:?}");
    let js: Vec<serde_json::Value> = files.iter().map(|p| read_json(p)).collect();
    let leaders: Vec<&serde_json::Value> = js
        .iter()
        .filter(|j| j["launcher"]["role"] == "node")
        .collect();
    assert_eq!(leaders.len(), 1, "one rank measures the node");
    let lead = leaders[0];
    let l = &lead["launcher"];
    assert_eq!(
        (l["kind"].as_str(), l["job"].as_str(), l["step"].as_str()),
        (Some("slurm"), Some("4242"), Some("0"))
    );
    assert_eq!(l["shared"], true);
    let mut ranks: Vec<u64> = l["ranks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rank"].as_u64().unwrap())
        .collect();
    ranks.sort();
    assert_eq!(ranks, [0, 1, 2]);
    // The node's energy: the fake package's 20 W over the time every rank ran, once.
    let e = num(&lead["total"]["energy_j"]);
    let el = num(&lead["elapsed_s"]);
    assert!(
        (e - 20.0 * el).abs() < 0.15 * 20.0 * el + 0.5,
        "{e} J over {el} s"
    );
    // The last rank runs 3 x 150 ms: the node was measured until it ended.
    assert!(el >= 0.4, "{el}");
    // The followers hold no energy, and say who measured their node.
    for j in js.iter().filter(|j| j["launcher"]["role"] == "rank") {
        assert_eq!(j["domains"].as_array().unwrap().len(), 0);
        assert_eq!(num(&j["total"]["energy_j"]), 0.0);
        assert!(j["attribution"].is_null());
        assert_eq!(j["launcher"]["measured_by"]["pid"], l["ranks"][0]["pid"]);
        assert!(
            !j["warnings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w.as_str().unwrap().starts_with("no package"))
        );
    }
    // The ranks' shares add up to the command's share of the node.
    let sum: f64 = l["ranks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| num(&r["command_j"]))
        .sum();
    let cmd = num(&lead["attribution"]["command_total_j"]);
    assert!((sum - cmd).abs() < 1e-6 * cmd.max(1.0), "{sum} != {cmd}");
    // Each rank's report file: the follower's says where its energy is.
    let txt: Vec<String> = (0..3)
        .map(|r| std::fs::read_to_string(dir.join(format!("out-4242-0-{r}.txt"))).unwrap())
        .collect();
    assert_eq!(
        txt.iter()
            .filter(|t| t.contains("were measured once, by rank"))
            .count(),
        2,
        "{txt:?}"
    );
    assert_eq!(
        txt.iter()
            .filter(|t| t.contains("its devices were measured once, here, for 3 ranks"))
            .count(),
        1,
        "{txt:?}"
    );

    // The merge counts the node once.
    let o = merge(&files, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    check_merged(&m);
    assert_eq!(m["job"], "4242");
    assert_eq!(m["nodes"].as_array().unwrap().len(), 1);
    assert!((num(&m["total"]["energy_j"]) - e).abs() < 1e-9);
    assert_eq!(m["ranks"].as_array().unwrap().len(), 3);
    assert_eq!(m["ranks"][2]["exit_status"], 3);
    assert!(
        m["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| !w.as_str().unwrap().contains("missing")),
        "{}",
        m["warnings"]
    );
    // The report (stderr when the JSON has stdout) shows the node and the ranks.
    let report = stderr(&o);
    assert!(
        report.contains("Energy of job 4242: 1 node, 3 ranks, from 3 files"),
        "{report}"
    );
}

#[test]
fn a_rank_that_comes_after_its_leader_finished_leads_a_later_reading() {
    let _s = serial();
    let node = FakeNode::new(10.0);
    let (_t, dir) = setup();
    // Rank 0 alone first, then rank 1: two readings of one node, at different times.
    let one = |r: u32| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_joulerun"));
        rank_env(&mut c, node.root(), &dir.join("run"));
        let o = c
            .current_dir(&dir)
            .env("SLURM_JOB_ID", "77")
            .env("SLURM_STEP_ID", "0")
            .env("SLURM_PROCID", r.to_string())
            .env("SLURM_STEP_NUM_TASKS", "2")
            .env("APP_MS", "100")
            .args(["--json", "late-%r.json", "-o", "/dev/null", "--", "./app"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    };
    one(0);
    one(1);
    let files = json_files(&dir, "late-");
    for f in &files {
        assert_eq!(read_json(f)["launcher"]["role"], "node");
    }
    let o = merge(&files, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    check_merged(&m);
    let n = &m["nodes"][0];
    assert_eq!(n["readings"], 2);
    let sum: f64 = files
        .iter()
        .map(|f| num(&read_json(f)["total"]["energy_j"]))
        .sum();
    assert!((num(&n["energy_j"]) - sum).abs() < 1e-9);
}

#[test]
fn placeholders_need_a_launcher_and_repeats_need_one_rank() {
    let node = FakeNode::new(5.0);
    let (_t, dir) = setup();
    let run = |env: &[(&str, &str)], args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_joulerun"));
        rank_env(&mut c, node.root(), &dir.join("run"));
        for v in [
            "SLURM_JOB_ID",
            "SLURM_PROCID",
            "OMPI_COMM_WORLD_RANK",
            "PMIX_RANK",
            "PMI_RANK",
        ] {
            c.env_remove(v);
        }
        c.current_dir(&dir)
            .envs(env.iter().copied())
            .args(args)
            .output()
            .unwrap()
    };
    // Outside a launcher, %r cannot be filled: a usage error before anything runs.
    let o = run(&[], &["--json", "e-%r.json", "--", "true"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("%r is the rank") && stderr(&o).contains("no launcher"),
        "{}",
        stderr(&o)
    );
    // %h and %p work anywhere.
    let o = run(
        &[],
        &["--json", "e-%h-%p.json", "-o", "/dev/null", "--", "true"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let host = nix_hostname();
    assert_eq!(json_files(&dir, &format!("e-{host}-")).len(), 1);
    // An unknown placeholder.
    let o = run(&[], &["--json", "e-%x.json", "--", "true"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("%x is not a placeholder"),
        "{}",
        stderr(&o)
    );
    // -r with several ranks: refused, saying why.
    let slurm = [
        ("SLURM_JOB_ID", "9"),
        ("SLURM_STEP_ID", "0"),
        ("SLURM_PROCID", "1"),
        ("SLURM_STEP_NUM_TASKS", "4"),
    ];
    let o = run(&slurm, &["-r", "3", "--", "true"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("-r/--repeat and --warmup cannot be used by the 4 ranks"),
        "{}",
        stderr(&o)
    );
    // A launcher variable that is not a number.
    let o = run(
        &[("SLURM_JOB_ID", "9"), ("SLURM_PROCID", "one")],
        &["--", "true"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("SLURM_PROCID='one' is not a number"),
        "{}",
        stderr(&o)
    );
}

fn nix_hostname() -> String {
    let o = Command::new("hostname").output().unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// `joulerun merge` on bad input: one clear message each (exit 2, naming the file and
/// what to do), or a warning where the job can still be reported; never anything counted
/// twice.
#[test]
fn merge_on_bad_input_says_what_failed_and_counts_nothing_twice() {
    let _s = serial();
    let node = FakeNode::new(20.0);
    let (_t, dir) = setup();
    for o in run_ranks(&dir, node.root(), "500", 3, &[]) {
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    let files = json_files(&dir, "out-500-");
    assert_eq!(files.len(), 3);
    let js: Vec<serde_json::Value> = files.iter().map(|f| read_json(f)).collect();
    let lead = js
        .iter()
        .position(|j| j["launcher"]["role"] == "node")
        .unwrap();
    let follower = (0..3).find(|i| *i != lead).unwrap();
    let node_j = num(&js[lead]["total"]["energy_j"]);
    let merged = |fs: &[PathBuf], extra: &[&str]| {
        let o = merge(fs, extra);
        let m: Option<serde_json::Value> = serde_json::from_slice(&o.stdout).ok();
        (o, m)
    };
    let (o, good) = merged(&files, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let good = good.unwrap();
    check_merged(&good);
    assert!((num(&good["total"]["energy_j"]) - node_j).abs() < 1e-9);

    // A truncated file: refused, naming it, saying it is cut short.
    let cut = dir.join("cut.json");
    let bytes = std::fs::read(&files[lead]).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let mut set = files.clone();
    set[lead] = cut.clone();
    let (o, m) = merged(&set, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(m.is_none());
    let e = stderr(&o);
    assert!(
        e.contains("cut.json")
            && e.contains("is cut short")
            && e.contains("give the complete file"),
        "{e}"
    );
    assert_eq!(e.trim().lines().count(), 1, "one message: {e}");

    // A file of another summary schema version: refused, saying which versions.
    let old = dir.join("old.json");
    let mut v = js[follower].clone();
    v["schema_version"] = serde_json::json!(99);
    std::fs::write(&old, serde_json::to_vec(&v).unwrap()).unwrap();
    let mut set = files.clone();
    set[follower] = old;
    let (o, _) = merged(&set, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("old.json")
            && e.contains("schema version 99")
            && e.contains("merge files written by one joulerun version"),
        "{e}"
    );

    // Two copies of one rank's file (the same run twice): counted once, with a warning.
    let copy = dir.join("copy-of-leader.json");
    std::fs::copy(&files[lead], &copy).unwrap();
    let mut set = files.clone();
    set.push(copy);
    let (o, m) = merged(&set, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let m = m.unwrap();
    check_merged(&m);
    assert!(
        (num(&m["total"]["energy_j"]) - node_j).abs() < 1e-9,
        "counted once"
    );
    assert_eq!(m["ranks"].as_array().unwrap().len(), 3);
    assert!(
        m["warnings"].as_array().unwrap().iter().any(|w| w
            .as_str()
            .unwrap()
            .contains("are copies of one run's report: counted once")),
        "{m}"
    );

    // A rank missing: the job said 4 ranks, only 3 ran. Merged, with a warning naming it.
    let (_t4, dir4) = setup();
    for o in (0..3).map(|r| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_joulerun"));
        rank_env(&mut c, node.root(), &dir4.join("run"));
        c.current_dir(&dir4)
            .env("SLURM_JOB_ID", "502")
            .env("SLURM_STEP_ID", "0")
            .env("SLURM_PROCID", r.to_string())
            .env("SLURM_STEP_NUM_TASKS", "4")
            .env("APP_MS", "50")
            .args(["--json", "m-%r.json", "-o", "/dev/null", "--", "./app"])
            .output()
            .unwrap()
    }) {
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    let (o, m) = merged(&json_files(&dir4, "m-"), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let m = m.unwrap();
    check_merged(&m);
    let warns: Vec<&str> = m["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        warns
            .iter()
            .any(|w| w.contains("1 of 4 ranks of step 0 missing: 3")),
        "{warns:?}"
    );
    // The node's reading missing (only a follower's file): merged nothing, saying whose
    // file to add.
    let (o, _) = merged(&[files[follower].clone()], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("none of the files holds a node's energy")
            && stderr(&o).contains(&format!("rank {}", js[lead]["launcher"]["rank"])),
        "{}",
        stderr(&o)
    );

    // Two runs claiming one job's ranks (the job id reused): refused.
    let (_t2, dir2) = setup();
    for o in run_ranks(&dir2, node.root(), "500", 3, &[]) {
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    let again = json_files(&dir2, "out-500-");
    let role = |f: &PathBuf| {
        read_json(f)["launcher"]["role"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // The other run's reading of the node: it claims ranks this run's reading has.
    let other_lead = again.iter().find(|f| role(f) == "node").unwrap();
    // The other run's file of a rank this run's reading covered.
    let other_follower = again.iter().find(|f| role(f) == "rank").unwrap();
    for extra in [other_lead, other_follower] {
        let mut set = files.clone();
        set.push(extra.clone());
        let (o, _) = merged(&set, &[]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("come from two runs of one job id; give one run's files"),
            "{}",
            stderr(&o)
        );
    }

    // Two jobs: refused unless --force; with it, both counted once each.
    let (_t3, dir3) = setup();
    for o in run_ranks(&dir3, node.root(), "501", 2, &[]) {
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    let other = json_files(&dir3, "out-501-");
    let mut set = files.clone();
    set.extend(other.iter().cloned());
    let (o, _) = merged(&set, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("the files come from 2 jobs")
            && e.contains("job 500")
            && e.contains("job 501")
            && e.contains("--force"),
        "{e}"
    );
    let (o, m) = merged(&set, &["--force"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let m = m.unwrap();
    let other_j: f64 = other
        .iter()
        .map(|f| read_json(f))
        .filter(|j| j["launcher"]["role"] == "node")
        .map(|j| num(&j["total"]["energy_j"]))
        .sum();
    assert!(
        (num(&m["total"]["energy_j"]) - node_j - other_j).abs() < 1e-9,
        "{m}"
    );
    assert_eq!(m["ranks"].as_array().unwrap().len(), 5);
}

/// Start rank `r` of job `job` (2 ranks) in `dir`, its app running `ms` ms times (r + 1).
fn spawn_rank(dir: &Path, node: &FakeNode, job: &str, r: u32, ms: u32) -> std::process::Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_joulerun"));
    rank_env(&mut c, node.root(), &dir.join("run"));
    c.current_dir(dir)
        .env("SLURM_JOB_ID", job)
        .env("SLURM_STEP_ID", "0")
        .env("SLURM_PROCID", r.to_string())
        .env("SLURM_LOCALID", r.to_string())
        .env("SLURM_STEP_NUM_TASKS", "2")
        .env("APP_MS", ms.to_string())
        .args(["--json", "k-%j-%r.json", "-o", "/dev/null", "--", "./app"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Wait until the node's leader listens (its socket exists under the rendezvous).
fn wait_for_leader(dir: &Path) {
    let start = std::time::Instant::now();
    loop {
        let found = std::fs::read_dir(dir.join("run"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .flat_map(|e| std::fs::read_dir(e.path()).into_iter().flatten().flatten())
            .any(|e| e.path().extension().is_some_and(|x| x == "sock"));
        if found {
            return;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "no leader"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Wait until rank process `c` has started its command: it has joined its node's
/// measurement by then (a follower joins before anything else).
fn wait_for_command(c: &std::process::Child) {
    let start = std::time::Instant::now();
    let children = format!("/proc/{0}/task/{0}/children", c.id());
    while std::fs::read_to_string(&children)
        .unwrap_or_default()
        .trim()
        .is_empty()
    {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "the rank did not start its command"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn sigkill(c: &std::process::Child) {
    // SAFETY: a child this test started, by its pid.
    unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
}

/// A follower killed mid-run: the leader finishes, counts its CPU time until then and
/// says so. A leader killed mid-run: its follower says it lost it, the merge of what is
/// left says whose file is missing, and the next rank on the node leads (the kernel
/// dropped the lock).
#[test]
fn a_killed_rank_or_leader_is_reported_never_silently_lost() {
    let _s = serial();
    let node = FakeNode::new(10.0);
    let (_t, dir) = setup();

    let lead = spawn_rank(&dir, &node, "600", 0, 600);
    wait_for_leader(&dir);
    let follower = spawn_rank(&dir, &node, "600", 1, 5000);
    wait_for_command(&follower);
    std::thread::sleep(std::time::Duration::from_millis(100));
    sigkill(&follower);
    let _ = follower.wait_with_output().unwrap();
    let o = lead.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j = read_json(&dir.join("k-600-0.json"));
    let ranks = j["launcher"]["ranks"].as_array().unwrap();
    assert_eq!(ranks.len(), 2, "{j}");
    assert_eq!(ranks[1]["complete"], false);
    assert!(
        j["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("went away")
                && w.as_str().unwrap().contains("without its final figures")),
        "{}",
        j["warnings"]
    );
    let o = merge(&[dir.join("k-600-0.json")], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    check_merged(&serde_json::from_slice(&o.stdout).unwrap());

    let lead = spawn_rank(&dir, &node, "601", 0, 1500);
    wait_for_leader(&dir);
    let follower = spawn_rank(&dir, &node, "601", 1, 300);
    wait_for_command(&follower);
    sigkill(&lead);
    let _ = lead.wait_with_output().unwrap();
    let o = follower.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let f = dir.join("k-601-1.json");
    let j = read_json(&f);
    assert_eq!(j["launcher"]["role"], "rank");
    assert!(
        j["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("lost its node's leader")),
        "{}",
        j["warnings"]
    );
    let o = merge(std::slice::from_ref(&f), &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("none of the files holds a node's energy")
            && stderr(&o).contains("rank 0"),
        "{}",
        stderr(&o)
    );
    // The killed leader's lock is gone with it: the next rank of job 601 leads.
    let again = spawn_rank(&dir, &node, "601", 0, 50);
    let o = again.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        read_json(&dir.join("k-601-0.json"))["launcher"]["role"],
        "node"
    );
}

/// Node sharing off (a rendezvous directory others could enter): every rank measures the
/// node by itself, says why, and the merge still counts the node once (the longest of the
/// overlapping readings), the job's share capped at the node's.
#[test]
fn ranks_that_each_measured_their_node_count_it_once() {
    let _s = serial();
    let node = FakeNode::new(20.0);
    let (_t, dir) = setup();
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let open = dir.join("run").join(format!("joulerun-{uid}"));
    std::fs::create_dir_all(&open).unwrap();
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    for o in run_ranks(&dir, node.root(), "700", 3, &[]) {
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    let files = json_files(&dir, "out-700-");
    let js: Vec<serde_json::Value> = files.iter().map(|f| read_json(f)).collect();
    for j in &js {
        assert_eq!(j["launcher"]["role"], "node");
        assert_eq!(j["launcher"]["shared"], false);
        assert!(
            j["launcher"]["note"]
                .as_str()
                .unwrap()
                .contains("not private")
        );
        assert!(
            j["warnings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w.as_str().unwrap().contains("measured its node by itself")),
            "{}",
            j["warnings"]
        );
    }
    let o = merge(&files, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    check_merged(&m);
    let longest = js
        .iter()
        .max_by(|a, b| num(&a["elapsed_s"]).total_cmp(&num(&b["elapsed_s"])))
        .unwrap();
    assert_eq!(m["nodes"].as_array().unwrap().len(), 1);
    assert_eq!(m["nodes"][0]["readings"], 1);
    assert_eq!(
        m["nodes"][0]["overlapping_files"].as_array().unwrap().len(),
        2
    );
    assert!(
        (num(&m["total"]["energy_j"]) - num(&longest["total"]["energy_j"])).abs() < 1e-9,
        "counted once: {}",
        m["total"]
    );
    assert!(
        m["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("was measured 3 times at once")),
        "{}",
        m["warnings"]
    );
    assert_eq!(m["ranks"].as_array().unwrap().len(), 3);
}

/// A job on a node without energy counters: the merged report says it is an estimate in a
/// banner and beside every energy, cost and CO2e figure, the ranks' included.
#[test]
fn a_merged_job_of_estimated_nodes_labels_every_figure_an_estimate() {
    let _s = serial();
    let bare = tempfile::tempdir().unwrap();
    joulerun_testkit::fakehw::write_topology(bare.path(), &[0, 0]).unwrap();
    let (_t, dir) = setup();
    // The ranks read this node's sysfs: a topology and no counter.
    let outs = run_ranks(&dir, bare.path(), "77", 2, &[]);
    for o in &outs {
        assert_eq!(o.status.code(), Some(0), "{}", stderr(o));
    }
    let files = json_files(&dir, "out-77-");
    assert_eq!(files.len(), 2, "{files:?}");
    let report = dir.join("job.txt");
    let o = merge(&files, &["-o", report.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(m["total"]["estimated"], true, "{m}");
    let text = std::fs::read_to_string(&report).unwrap();
    assert!(
        text.contains(" ESTIMATED: no energy counter could be read on any node"),
        "{text}"
    );
    let figures = [" J", " mWh", " Wh", " kWh", " EUR", " g"];
    let mut checked = 0;
    for line in text.lines() {
        let has_figure = figures.iter().any(|u| {
            line.match_indices(u).any(|(i, _)| {
                line[..i].ends_with(|c: char| c.is_ascii_digit())
                    && !line[i + u.len()..].starts_with(|c: char| c.is_alphanumeric())
            })
        });
        if has_figure && !line.starts_with(" warning:") {
            checked += 1;
            assert!(
                line.contains("(estimated)"),
                "not labelled: {line:?}\n{text}"
            );
        }
    }
    assert!(checked >= 6, "only {checked} lines with figures:\n{text}");
}
