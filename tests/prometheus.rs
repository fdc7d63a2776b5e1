//! `--openmetrics` and `--push` through the built binary, checked with the real tools
//! (issue 12): Prometheus' `promtool check metrics` on the file, and a real
//! `prometheus-pushgateway` started here on 127.0.0.1, whose `/metrics` must show the
//! pushed series. Without the tools the tests that need them are ignored with the reason
//! (build.rs; `.ci/run` installs them).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

fn bin() -> Command {
    let root = std::env::temp_dir().join("joulerun-empty-root");
    std::fs::create_dir_all(&root).unwrap();
    common::joulerun(&root, &std::env::temp_dir().join("joulerun-no-state"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `promtool check metrics < file`: its status and what it said.
fn promtool(file: &Path) -> (Option<i32>, String) {
    let o = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(file).unwrap())
        .output()
        .expect("promtool runs");
    (
        o.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// The value of the first sample of `name` whose labels contain every one of `with`.
fn sample(doc: &str, name: &str, with: &[&str]) -> Option<f64> {
    doc.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| with.iter().all(|w| l.contains(w)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
#[cfg_attr(
    not(probe_promtool),
    ignore = "needs promtool: apt-get install prometheus (.ci/run does)"
)]
fn the_metrics_file_passes_promtool_and_holds_the_runs_figures() {
    let dir = tempfile::tempdir().unwrap();
    let prom = dir.path().join("joulerun.prom");
    let o = bin()
        .args([
            "--openmetrics",
            prom.to_str().unwrap(),
            "--region",
            "DE",
            "--pue",
            "1.25",
        ])
        .args(["--push-job", "nightly", "--json", "-", "--"])
        .args([
            "sh",
            "-c",
            "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; exit 3",
            "secret-arg-123",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let j = common::json(&o);
    let (code, said) = promtool(&prom);
    assert_eq!(code, Some(0), "promtool: {said}");
    let doc = std::fs::read_to_string(&prom).unwrap();
    assert!(doc.ends_with("# EOF\n"), "{doc}");
    // The figures are the JSON's.
    let d0 = &j["domains"][0];
    let domain = format!("domain=\"{}\"", d0["name"].as_str().unwrap());
    let energy = sample(
        &doc,
        "joulerun_energy_joules_total",
        &[&domain, "estimated=\"true\""],
    )
    .unwrap();
    assert!(
        (energy - d0["energy_j"].as_f64().unwrap()).abs() < 1e-9,
        "{doc}"
    );
    let total = sample(
        &doc,
        "joulerun_machine_energy_joules_total",
        &["of=\"parts\""],
    )
    .unwrap();
    assert!((total - j["total"]["energy_j"].as_f64().unwrap()).abs() < 1e-9);
    let cmd = sample(&doc, "joulerun_command_energy_joules_total", &[]).unwrap();
    assert!((cmd - j["attribution"]["command_total_j"].as_f64().unwrap()).abs() < 1e-9);
    let g = sample(&doc, "joulerun_co2e_grams_total", &[]).unwrap();
    assert!((g - j["emissions"]["g_co2e"].as_f64().unwrap()).abs() < 1e-12);
    assert!(sample(&doc, "joulerun_command_co2e_grams_total", &[]).is_some());
    assert!(sample(&doc, "joulerun_facility_co2e_grams_total", &[]).is_some());
    assert_eq!(
        sample(
            &doc,
            "joulerun_carbon_intensity_grams_per_kwh",
            &["region=\"DE\"", "year=\""]
        ),
        j["emissions"]["intensity_g_per_kwh"].as_f64()
    );
    assert_eq!(sample(&doc, "joulerun_pue_ratio", &[]), Some(1.25));
    assert_eq!(sample(&doc, "joulerun_exit_status", &[]), Some(3.0));
    let dur = sample(&doc, "joulerun_duration_seconds", &[]).unwrap();
    assert!((dur - j["elapsed_s"].as_f64().unwrap()).abs() < 1e-9);
    // Every series names the host, the program (never its arguments), the job, the run.
    for line in doc.lines().filter(|l| !l.starts_with('#')) {
        for l in ["host=\"", "command=\"sh\"", "job=\"nightly\"", "run_id=\""] {
            assert!(line.contains(l), "{l}: {line}");
        }
    }
    assert!(
        !doc.contains("secret-arg-123") && !doc.contains("-c"),
        "{doc}"
    );
    // Nothing left beside it: written through a temporary file and renamed.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["joulerun.prom"]);
}

#[test]
fn a_metrics_file_is_replaced_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let prom = dir.path().join("m.prom");
    std::fs::write(&prom, "old\n").unwrap();
    // The command cannot be started: the old file stays.
    let o = bin()
        .args([
            "--openmetrics",
            prom.to_str().unwrap(),
            "--",
            "no-such-command-xyz",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&prom).unwrap(), "old\n");
    // A destination that cannot be written stops joulerun before the command runs.
    let marker = dir.path().join("ran");
    let o = bin()
        .args([
            "--openmetrics",
            "/nonexistent-dir/m.prom",
            "--",
            "touch",
            marker.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot write the metrics to '/nonexistent-dir/m.prom'"),
        "{}",
        stderr(&o)
    );
    assert!(!marker.exists());
    // The same file as another output is a usage error.
    let o = bin()
        .args([
            "--openmetrics",
            prom.to_str().unwrap(),
            "--json",
            prom.to_str().unwrap(),
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--json and --openmetrics")
            || stderr(&o).contains("--openmetrics and --json"),
        "{}",
        stderr(&o)
    );
    // A good run replaces it.
    let o = bin()
        .args(["--openmetrics", prom.to_str().unwrap(), "--", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        std::fs::read_to_string(&prom)
            .unwrap()
            .contains("joulerun_energy_joules_total{")
    );
}

/// A free port on 127.0.0.1 (bound, then released for the server to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on 127.0.0.1:port: the status and the body.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((
        code,
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    ))
}

/// A real Pushgateway on 127.0.0.1, killed when dropped.
struct Pushgateway {
    child: Child,
    port: u16,
}

impl Pushgateway {
    fn start() -> Pushgateway {
        let port = free_port();
        let child = Command::new("prometheus-pushgateway")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            // In memory only: Debian's build persists to /var/lib/prometheus by default.
            .arg("--persistence.file=")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-pushgateway starts");
        let gw = Pushgateway { child, port };
        let t0 = Instant::now();
        while get(port, "/-/ready").map(|(c, _)| c) != Some(200) {
            assert!(
                t0.elapsed() < Duration::from_secs(15),
                "the Pushgateway did not answer on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        gw
    }
}

impl Drop for Pushgateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[cfg_attr(
    not(probe_pushgateway),
    ignore = "needs prometheus-pushgateway: apt-get install prometheus-pushgateway (.ci/run does)"
)]
fn a_push_reaches_a_real_pushgateway() {
    let gw = Pushgateway::start();
    let url = format!("http://127.0.0.1:{}", gw.port);
    let o = bin()
        .args([
            "--push",
            &url,
            "--push-job",
            "itest",
            "--json",
            "-",
            "--",
            "sh",
            "-c",
            "exit 0",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stderr(&o).contains("warning: --push"), "{}", stderr(&o));
    let j = common::json(&o);
    let (code, body) = get(gw.port, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(
        body.contains("# TYPE joulerun_energy_joules_total counter\n"),
        "{body}"
    );
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let grouping = [
        format!("instance=\"{host}\""),
        "job=\"itest\"".to_string(),
        "command=\"sh\"".to_string(),
    ];
    let with: Vec<&str> = grouping.iter().map(String::as_str).collect();
    let total = sample(&body, "joulerun_machine_energy_joules_total", &with)
        .unwrap_or_else(|| panic!("{body}"));
    assert!((total - j["total"]["energy_j"].as_f64().unwrap()).abs() < 1e-9);
    assert!(
        sample(&body, "joulerun_co2e_grams_total", &with).is_some(),
        "{body}"
    );
    assert_eq!(sample(&body, "joulerun_exit_status", &with), Some(0.0));
    // A second run replaces the group's metrics (PUT): one run_id left.
    let o = bin()
        .args(["--push", &url, "--push-job", "itest", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let (_, body) = get(gw.port, "/metrics").unwrap();
    let ids: std::collections::BTreeSet<&str> = body
        .lines()
        .filter(|l| l.starts_with("joulerun_duration_seconds{"))
        .filter_map(|l| l.split("run_id=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(ids.len(), 1, "{body}");
    assert!(body.contains("command=\"true\""), "{body}");
}

#[test]
fn a_failed_push_is_a_warning_never_a_lost_report_or_another_status() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("s.json");
    // Nothing listens on a port just released.
    let url = format!("http://127.0.0.1:{}", free_port());
    let t0 = Instant::now();
    let o = bin()
        .args([
            "--push",
            &url,
            "--json",
            json.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "exit 3",
        ])
        .output()
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains(&format!(
            "joulerun: warning: --push to {url} failed: connecting to 127.0.0.1"
        )),
        "{e}"
    );
    assert!(
        e.contains("Energy of 'sh -c 'exit 3''") || e.contains("Energy of: sh -c 'exit 3'"),
        "{e}"
    );
    assert!(
        std::fs::read_to_string(&json)
            .unwrap()
            .contains("\"emissions\"")
    );
    let o = bin().args(["--push", &url, "--", "true"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // A bad URL is a usage error before anything runs.
    let o = bin()
        .args(["--push", "https://gw:9091", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("https is not supported"),
        "{}",
        stderr(&o)
    );
}

/// The `-I` hook: the sink rewrites its file at each interval of the sampler's clock,
/// each time whole (read back between ticks; checked with promtool when installed).
#[test]
fn interval_writes_replace_the_file_at_each_interval() {
    use joulerun::output::{Dest, Requested};
    use joulerun::report::openmetrics::{OpenMetricsSink, RunLabels};
    use joulerun::report::sink::{Sink, TickView};
    use joulerun::sources::{Domain, DomainKind, SourceKind};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.prom");
    let r = Requested {
        flag: "--openmetrics",
        what: "the metrics",
        dest: Dest::Path(path.clone()),
    };
    let labels = RunLabels::new(&["/usr/bin/make".into()], None, "j");
    let mut sink = OpenMetricsSink::new(Some(&r), None, labels)
        .unwrap()
        .every(200);
    let domains = vec![Domain::new(
        DomainKind::Package,
        Some(0),
        SourceKind::Powercap,
    )];
    let mut tick = |start_s: f64, end_s: f64| {
        sink.tick(&TickView {
            start_s,
            end_s,
            domains: &domains,
            delta_j: &[1.0],
            power_w: &[10.0],
            is_slow: &[false],
            intervals: &[],
            command_j: None,
            run: 1,
            last: false,
            domain_command_j: None,
        });
    };
    tick(0.0, 0.1);
    assert!(!path.exists(), "not before the first interval");
    tick(0.1, 0.2);
    let doc = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        sample(
            &doc,
            "joulerun_energy_joules_total",
            &["domain=\"package-0\""]
        ),
        Some(2.0),
        "{doc}"
    );
    assert_eq!(
        sample(&doc, "joulerun_duration_seconds", &["command=\"make\""]),
        Some(0.2)
    );
    tick(0.2, 0.3);
    let doc = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        sample(&doc, "joulerun_energy_joules_total", &[]),
        Some(2.0),
        "unchanged until the next interval: {doc}"
    );
    tick(0.3, 0.4);
    let doc = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        sample(&doc, "joulerun_energy_joules_total", &[]),
        Some(4.0),
        "{doc}"
    );
    if Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let (code, said) = promtool(&path);
        assert_eq!(code, Some(0), "{said}");
    }
}
