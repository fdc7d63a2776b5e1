//! NVIDIA GPUs through NVML, end to end through the built binary (issue 9). joulerun
//! loads the fake `libnvidia-ml.so` (`fake-nvml/`, built by the testkit) by path through
//! `JOULERUN_NVML_LIB` or `--nvml-lib`, the code path that loads the real library; each
//! test scripts the fake: GPUs, their energy counter or power over time, per-process
//! utilisation samples and compute processes keyed to real PIDs, injected errors.
//! The hardware root is an empty directory: the CPU is the estimate, the GPUs the fake's.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use joulerun_testkit::fakenvml::{self, Script, gpu_line, uuid};
use serde_json::Value;

mod common;

fn run(dir: &Path, lib: &Path, script: &Script, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = common::joulerun(dir, &dir.join("state"));
    c.env("JOULERUN_NVML_LIB", lib)
        .env(fakenvml::SCRIPT_VAR, script.path())
        .args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn domain<'a>(j: &'a Value, name: &str) -> &'a Value {
    j["domains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no domain {name} in {}", j["domains"]))
}

fn gpu<'a>(j: &'a Value, name: &str) -> &'a Value {
    j["gpu"]["gpus"]
        .as_array()
        .unwrap_or_else(|| panic!("no gpu section in {j}"))
        .iter()
        .find(|g| g["domain"] == name)
        .unwrap_or_else(|| panic!("no GPU {name} in {}", j["gpu"]))
}

fn attributed<'a>(j: &'a Value, name: &str) -> &'a Value {
    j["attribution"]["per_domain"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no attribution of {name}"))
}

/// The share of the dynamic energy that `method` decided, and the time it covered.
fn share_by(j: &Value, name: &str, method: &str) -> (f64, f64) {
    let rows = attributed(j, name)["usage"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let r = rows
        .iter()
        .find(|r| r["method"] == method)
        .unwrap_or_else(|| panic!("no {method} in {rows:?}"));
    (
        f(&r["command_dynamic_j"]) / f(&r["dynamic_j"]),
        f(&r["measured_s"]),
    )
}

fn close(got: f64, want: f64, rel: f64) -> bool {
    (got - want).abs() <= rel * want.abs()
}

/// A process that runs until killed, standing for another job on the GPU.
struct Other(Child);

impl Other {
    fn start() -> Other {
        Other(
            Command::new("sleep")
                .arg("30")
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Other {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `sh -c` that puts its own PID into the fake's script (replacing `$$` in `text`), then
/// sleeps `secs`: the command's process is then the one the fake's samples name.
fn announcing(script: &Script, text: &str, secs: f64) -> Vec<String> {
    let tmp = script.path().with_extension("cmd");
    let body = text.replace('"', "\\\"");
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "printf \"%s\\n\" \"{body}\" | sed \"s/PID/$$/g\" > '{}' && mv '{}' '{}' && exec sleep {secs}",
            tmp.display(),
            tmp.display(),
            script.path().display()
        ),
    ]
}

/// A GPU line whose counter steps every 10 ms: every 100 ms read then ends an interval,
/// so each interval's usage is one read's (no interval mixes the reads before and after
/// the command announced itself).
fn fine_gpu(n: u32, watts: f64) -> String {
    gpu_line(n, "NVIDIA A100", true, watts).replace('\n', " step_ms=10\n")
}

#[test]
fn the_energy_counter_path_measures_each_gpu_with_its_method_and_peak() {
    let t = tempfile::tempdir().unwrap();
    let s = Script::new(t.path(), &gpu_line(0, "NVIDIA A100-SXM4-40GB", true, 150.0));
    let lib = fakenvml::lib();
    let o = run(
        t.path(),
        &lib,
        &s,
        &["--json", "-", "--", "sleep", "1"],
        &[],
    );
    let j = common::ok_json(&o);
    let d = domain(&j, "gpu-0");
    assert_eq!(d["source"], "nvml");
    assert_eq!(d["kind"], "gpu");
    assert_eq!(d["place"], "part");
    assert_eq!(d["device"]["type"], "gpu");
    assert_eq!(d["device"]["uuid"], uuid(0));
    assert_eq!(d["device"]["name"], "NVIDIA A100-SXM4-40GB");
    assert!(close(f(&d["avg_power_w"]), 150.0, 0.05), "{d}");
    let g = gpu(&j, "gpu-0");
    assert_eq!(g["method"], "energy counter");
    assert_eq!(g["resolution_s"], 0.1);
    assert_eq!(g["resolved"], true);
    assert_eq!(g["partial"], false);
    assert_eq!(g["short_uuid"], "00000000");
    assert!(f(&g["peak_power_w"]) >= 140.0, "{g}");
    // The GPU is a part of the total, with its kWh and cost.
    assert!(
        j["total"]["domains"]
            .as_array()
            .unwrap()
            .contains(&"gpu-0".into())
    );
    let total = f(&j["total"]["energy_j"]);
    assert!(total >= f(&d["energy_j"]), "{}", j["total"]);
    assert!(close(f(&j["total"]["kwh"]), total / 3.6e6, 1e-9));
    assert!(f(&j["cost"]["amount"]) > 0.0);
    assert!(close(f(&j["gpu"]["gpu_j"]), f(&d["energy_j"]), 1e-9));
    assert!(f(&j["gpu"]["gpu_fraction"]) > 0.9, "{}", j["gpu"]);
    // The table: the GPU's row, its method and peak, the CPU/GPU split.
    let e = stderr(&o);
    assert!(e.contains("GPU 0 (NVIDIA A100-SXM4-40GB, 00000000)"), "{e}");
    assert!(e.contains("energy counter, peak"), "{e}");
    assert!(e.contains("CPU / GPU:"), "{e}");
    assert!(e.contains("Command's share of each GPU:"), "{e}");
}

#[test]
fn the_power_only_path_integrates_power_over_time_and_the_csv_has_gpu_rows() {
    let t = tempfile::tempdir().unwrap();
    // No energy counter (a pre-Volta part): 100 W, then 300 W from 0.6 s on.
    let s = Script::new(
        t.path(),
        &format!(
            "gpu uuid={} name=\"Tesla P100\" energy=no power=100@0,300@0.6\n",
            uuid(0)
        ),
    );
    let csv = t.path().join("timeline.csv");
    let o = run(
        t.path(),
        &fakenvml::lib(),
        &s,
        &[
            "--json",
            "-",
            "--csv",
            csv.to_str().unwrap(),
            "--",
            "sleep",
            "1.3",
        ],
        &[],
    );
    let j = common::ok_json(&o);
    let g = gpu(&j, "gpu-0");
    assert_eq!(g["method"], "power (integrated)");
    assert_eq!(g["resolution_s"], 1.0);
    let avg = f(&domain(&j, "gpu-0")["avg_power_w"]);
    assert!(avg > 150.0 && avg < 250.0, "{avg}");
    assert!(f(&g["peak_power_w"]) > 250.0, "{g}");
    // The timeline: the GPU's samples, by device, low then high.
    let text = std::fs::read_to_string(&csv).unwrap();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|r| r[2] == "gpu-0")
        .collect();
    assert!(rows.len() >= 8, "{text}");
    assert!(
        rows.iter().all(|r| r[9] == "gpu:0" && r[5] == "nvml"),
        "{text}"
    );
    let power = |r: &Vec<&str>| r[8].parse::<f64>().unwrap();
    assert!(power(&rows[1]) < 150.0, "{text}");
    assert!(power(rows.last().unwrap()) > 250.0, "{text}");
}

#[test]
fn cuda_visible_devices_selects_the_gpus_the_command_can_use() {
    let t = tempfile::tempdir().unwrap();
    let s = Script::new(
        t.path(),
        &(gpu_line(0, "NVIDIA H100", true, 300.0) + &gpu_line(1, "NVIDIA H100", true, 50.0)),
    );
    let lib = fakenvml::lib();
    let names = |j: &Value| -> Vec<String> {
        j["domains"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"] == "gpu")
            .map(|d| d["name"].as_str().unwrap().to_string())
            .collect()
    };
    // By uuid prefix: only GPU 1.
    let o = run(
        t.path(),
        &lib,
        &s,
        &["--json", "-", "--", "sleep", "0.3"],
        &[("CUDA_VISIBLE_DEVICES", "GPU-00000001")],
    );
    let j = common::ok_json(&o);
    assert_eq!(names(&j), ["gpu-1"]);
    assert_eq!(domain(&j, "gpu-1")["device"]["uuid"], uuid(1));
    // By index, with an invalid entry that hides itself and the rest (as CUDA does).
    let o = run(
        t.path(),
        &lib,
        &s,
        &["--json", "-", "--", "sleep", "0.3"],
        &[("CUDA_VISIBLE_DEVICES", "0,7,1")],
    );
    let j = common::ok_json(&o);
    assert_eq!(names(&j), ["gpu-0"]);
    assert!(
        stderr(&o).contains("index 7 is out of range"),
        "{}",
        stderr(&o)
    );
    // --gpus overrides the variable; `all` takes every GPU.
    let o = run(
        t.path(),
        &lib,
        &s,
        &["--gpus", "all", "--json", "-", "--", "sleep", "0.3"],
        &[("CUDA_VISIBLE_DEVICES", "1")],
    );
    assert_eq!(names(&common::ok_json(&o)), ["gpu-0", "gpu-1"]);
    // None visible: no GPU measured, said in the report.
    let o = run(
        t.path(),
        &lib,
        &s,
        &["--json", "-", "--", "true"],
        &[("CUDA_VISIBLE_DEVICES", "")],
    );
    let j = common::ok_json(&o);
    assert!(names(&j).is_empty());
    let cat = j["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["category"] == "gpu")
        .unwrap();
    assert!(
        cat["note"]
            .as_str()
            .unwrap()
            .contains("makes no GPU visible"),
        "{cat}"
    );
    // A malformed --gpus is a usage error before anything runs.
    let o = run(t.path(), &lib, &s, &["--gpus", "first", "--", "true"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("invalid --gpus entry 'first'"));
}

#[test]
fn the_command_gets_its_sm_share_of_a_gpu_shared_with_another_process() {
    let t = tempfile::tempdir().unwrap();
    let other = Other::start();
    // Nobody on the GPU until the command starts its work: then it runs at 60 % SM beside
    // the other process at 20 %, and its share is 60 / (60 + 20) = 0.75.
    let s = Script::new(t.path(), &fine_gpu(0, 200.0));
    let with_cmd = format!(
        "{}util gpu=0 pid={o} sm=20\nproc gpu=0 pid={o}\nutil gpu=0 pid=PID sm=60\nproc gpu=0 pid=PID\n",
        fine_gpu(0, 200.0),
        o = other.pid()
    );
    let mut args = vec!["--json".to_string(), "-".into(), "--".into()];
    args.extend(announcing(&s, &with_cmd, 1.5));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run(t.path(), &fakenvml::lib(), &s, &args, &[]);
    let j = common::ok_json(&o);
    let (share, secs) = share_by(&j, "gpu-0", "sm_utilisation");
    assert!(close(share, 0.75, 0.03), "share {share} over {secs} s: {j}");
    assert!(secs > 1.0, "{secs}");
    let a = attributed(&j, "gpu-0");
    assert_eq!(a["modelled"], false, "{a}");
    // Over the run (before the command started its work nobody was on the GPU, and the
    // command got nothing of it), the command's share of the GPU is under 0.75.
    let rows = attributed(&j, "gpu-0")["usage"].as_array().unwrap().clone();
    if rows.iter().any(|r| r["method"] == "nobody") {
        assert_eq!(share_by(&j, "gpu-0", "nobody").0, 0.0);
    }
    let g = gpu(&j, "gpu-0");
    let whole = f(&g["command_share"]);
    assert!(whole > 0.3 && whole <= 0.7501, "{g}");
    assert!(stderr(&o).contains("SM utilisation"), "{}", stderr(&o));
}

#[test]
fn without_utilisation_samples_the_gpu_is_split_equally_among_compute_processes() {
    let t = tempfile::tempdir().unwrap();
    let other = Other::start();
    let lib = fakenvml::lib();
    // Twice: no samples at all (NOT_FOUND), then the utilisation call not supported.
    for extra in ["", "fail gpu=0 call=util code=3\n"] {
        let base = format!("{}{extra}", fine_gpu(0, 100.0));
        let s = Script::new(t.path(), &base);
        let with_cmd = format!("{base}proc gpu=0 pid={}\nproc gpu=0 pid=PID\n", other.pid());
        let mut args = vec!["--json".to_string(), "-".into(), "--".into()];
        args.extend(announcing(&s, &with_cmd, 1.0));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = run(t.path(), &lib, &s, &args, &[]);
        let j = common::ok_json(&o);
        let (share, secs) = share_by(&j, "gpu-0", "equal_split");
        assert!(
            close(share, 0.5, 0.02),
            "{extra}: share {share} over {secs} s"
        );
        assert!(
            stderr(&o).contains("equal split among compute processes"),
            "{}",
            stderr(&o)
        );
    }
    // The command alone on the GPU gets all of it; nobody on it: the command nothing.
    let s = Script::new(t.path(), &fine_gpu(0, 100.0));
    let with_cmd = format!("{}proc gpu=0 pid=PID\n", fine_gpu(0, 100.0));
    let mut args = vec!["--json".to_string(), "-".into(), "--".into()];
    args.extend(announcing(&s, &with_cmd, 0.8));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let j = common::ok_json(&run(t.path(), &lib, &s, &args, &[]));
    assert_eq!(share_by(&j, "gpu-0", "alone").0, 1.0);
    let s = Script::new(t.path(), &gpu_line(0, "NVIDIA A100", true, 100.0));
    let j = common::ok_json(&run(
        t.path(),
        &lib,
        &s,
        &["--json", "-", "--", "sleep", "0.5"],
        &[],
    ));
    assert_eq!(share_by(&j, "gpu-0", "nobody").0, 0.0);
}

#[test]
fn a_gpu_lost_mid_run_keeps_its_energy_is_partial_and_the_rest_goes_on() {
    let t = tempfile::tempdir().unwrap();
    // GPU 0 is lost after 5 reads (GPU_IS_LOST on every call); GPU 1 carries on.
    let s = Script::new(
        t.path(),
        &(gpu_line(0, "NVIDIA A100", true, 200.0)
            + &gpu_line(1, "NVIDIA A100", true, 100.0)
            + "fail gpu=0 call=any code=15 after=5\n"),
    );
    let csv = t.path().join("t.csv");
    let o = run(
        t.path(),
        &fakenvml::lib(),
        &s,
        &[
            "--json",
            "-",
            "--csv",
            csv.to_str().unwrap(),
            "--",
            "sleep",
            "1.5",
        ],
        &[],
    );
    let j = common::ok_json(&o);
    let lost = domain(&j, "gpu-0");
    assert!(f(&lost["gone_at_s"]) < 1.0, "{lost}");
    // About 4 read periods of 200 W were measured before it went.
    let e = f(&lost["energy_j"]);
    assert!(e > 40.0 && e < 150.0, "{lost}");
    assert_eq!(gpu(&j, "gpu-0")["partial"], true);
    let fine = domain(&j, "gpu-1");
    assert!(fine["gone_at_s"].is_null());
    assert!(close(f(&fine["avg_power_w"]), 100.0, 0.05), "{fine}");
    assert_eq!(gpu(&j, "gpu-1")["partial"], false);
    assert!(f(&domain(&j, "cpu (estimated)")["measured_s"]) > 1.3);
    let err = stderr(&o);
    assert!(err.contains("partial"), "{err}");
    assert!(err.contains("gpu-0: the device went away"), "{err}");
    // Marked in the JSON's warnings too, and the CSV has its rows until then.
    assert!(
        j["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("gpu-0: the device went away")),
        "{}",
        j["warnings"]
    );
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.lines().any(|l| l.contains(",gpu-0,")), "{text}");
}

#[test]
fn a_missing_or_failing_library_leaves_gpus_out_and_list_says_why() {
    let t = tempfile::tempdir().unwrap();
    // No library named and none installed: auto goes on without NVML GPUs.
    let has_driver = ["/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"]
        .iter()
        .any(|d| Path::new(d).join("libnvidia-ml.so.1").exists());
    if !has_driver {
        let mut c = common::joulerun(t.path(), &t.path().join("state"));
        let o = c.args(["list", "--json"]).output().unwrap();
        let j = common::json(&o);
        let gpu = j["categories"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["category"] == "gpu")
            .unwrap();
        let nvml = &gpu["interfaces"][0];
        assert_eq!(nvml["source"], "nvml");
        assert_eq!(nvml["available"], false);
        let reason = nvml["problem"]["reason"].as_str().unwrap();
        assert!(reason.contains("library not found"), "{reason}");
        assert!(
            nvml["problem"]["fix"]
                .as_str()
                .unwrap()
                .contains("--nvml-lib"),
            "{nvml}"
        );
        let mut c = common::joulerun(t.path(), &t.path().join("state"));
        let o = c.args(["--json", "-", "--", "true"]).output().unwrap();
        let j = common::ok_json(&o);
        assert!(
            !j["domains"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["source"] == "nvml")
        );
        // Asked for by name, it stops before the command runs, with the fix.
        let mut c = common::joulerun(t.path(), &t.path().join("state"));
        let o = c.args(["--gpu", "nvml", "--", "true"]).output().unwrap();
        assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("install the NVIDIA driver"),
            "{}",
            stderr(&o)
        );
    }
    // A library named but not there: a usage error naming where it came from.
    let mut c = common::joulerun(t.path(), &t.path().join("state"));
    let o = c
        .env("JOULERUN_NVML_LIB", t.path().join("nope.so"))
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("(from JOULERUN_NVML_LIB)"),
        "{}",
        stderr(&o)
    );
    // The driver not loaded, a driver/library mismatch, no permission: each said, and
    // the command still runs (NVML failing to initialise never stops it).
    let lib = fakenvml::lib();
    for (code, says) in [
        (9, "kernel driver is not loaded"),
        (18, "driver/library mismatch"),
        (4, "/dev/nvidia"),
    ] {
        let s = Script::new(
            t.path(),
            &format!("init {code}\n{}", gpu_line(0, "X", true, 1.0)),
        );
        let mut c = common::joulerun(t.path(), &t.path().join("state"));
        let o = c
            .env(fakenvml::SCRIPT_VAR, s.path())
            .args(["list", "--nvml-lib", lib.to_str().unwrap()])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains(says), "{code}: {out}");
        let o = run(t.path(), &lib, &s, &["--json", "-", "--", "true"], &[]);
        let j = common::ok_json(&o);
        assert!(
            !j["domains"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["source"] == "nvml")
        );
    }
}

#[test]
fn an_old_library_without_the_energy_counter_symbol_falls_back_to_power() {
    let t = tempfile::tempdir().unwrap();
    let s = Script::new(t.path(), &gpu_line(0, "NVIDIA A100", true, 120.0));
    let o = run(
        t.path(),
        &fakenvml::old_lib(),
        &s,
        &["--json", "-", "--", "sleep", "0.6"],
        &[],
    );
    let j = common::ok_json(&o);
    let g = gpu(&j, "gpu-0");
    assert_eq!(g["method"], "power (integrated)", "{g}");
    assert!(close(f(&domain(&j, "gpu-0")["avg_power_w"]), 120.0, 0.05));
    assert!(
        stderr(&o).contains("this NVML library has no energy counter"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_run_shorter_than_the_counter_period_is_flagged_not_shown_as_exact() {
    let t = tempfile::tempdir().unwrap();
    let s = Script::new(t.path(), &gpu_line(0, "NVIDIA A100", true, 250.0));
    let o = run(
        t.path(),
        &fakenvml::lib(),
        &s,
        &["--json", "-", "--", "true"],
        &[],
    );
    let j = common::ok_json(&o);
    assert!(f(&j["elapsed_s"]) < 0.2, "{}", j["elapsed_s"]);
    let g = gpu(&j, "gpu-0");
    assert_eq!(g["resolved"], false, "{g}");
    let err = stderr(&o);
    assert!(err.contains("not resolved"), "{err}");
    assert!(
        err.contains("shorter than twice the energy counter's update period"),
        "{err}"
    );
}

#[test]
fn basepower_calibrates_each_gpus_idle_power_without_compute_processes() {
    let t = tempfile::tempdir().unwrap();
    let lib = fakenvml::lib();
    let b = t.path().join("baseline.json");
    let calibrate = |s: &Script| {
        let mut c = common::joulerun(t.path(), &t.path().join("state"));
        c.env("JOULERUN_NVML_LIB", &lib)
            .env(fakenvml::SCRIPT_VAR, s.path())
            .args(["--basepower", "--force", "--duration", "1", "--baseline"])
            .arg(&b)
            .output()
            .unwrap()
    };
    // Idle at 60 W, nobody on the GPU.
    let s = Script::new(t.path(), &gpu_line(0, "NVIDIA A100", true, 60.0));
    let o = calibrate(&s);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("gpu-0"), "{}", stderr(&o));
    // A run at 260 W: 60 W of it is static, the rest dynamic.
    s.write(&gpu_line(0, "NVIDIA A100", true, 260.0));
    let o = run(
        t.path(),
        &lib,
        &s,
        &[
            "--baseline",
            b.to_str().unwrap(),
            "--json",
            "-",
            "--",
            "sleep",
            "1",
        ],
        &[],
    );
    let j = common::ok_json(&o);
    let a = attributed(&j, "gpu-0");
    assert!(close(f(&a["baseline_w"]), 60.0, 0.02), "{a}");
    let (st, dy) = (f(&a["static_j"]), f(&a["dynamic_j"]));
    assert!(close(dy / st, 200.0 / 60.0, 0.1), "{a}");
    assert!(close(f(&gpu(&j, "gpu-0")["baseline_w"]), 60.0, 0.02));
    // A compute process on the GPU during calibration: that time is left out, and said.
    let other = Other::start();
    s.write(&format!(
        "{}proc gpu=0 pid={}\n",
        gpu_line(0, "NVIDIA A100", true, 60.0),
        other.pid()
    ));
    let o = calibrate(&s);
    assert!(
        stderr(&o).contains("gpu-0: compute processes were on it"),
        "{}",
        stderr(&o)
    );
    // Without a baseline, the report says all the GPU's energy is dynamic.
    let o = run(
        t.path(),
        &lib,
        &s,
        &["--no-baseline", "--", "sleep", "0.3"],
        &[],
    );
    assert!(
        stderr(&o).contains("no idle baseline for it: all its energy is dynamic"),
        "{}",
        stderr(&o)
    );
}
