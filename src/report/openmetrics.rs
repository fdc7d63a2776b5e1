//! `--openmetrics FILE` and `--push URL`: the run's figures for Prometheus
//! (docs/output-formats.md, "Metrics").
//!
//! The metrics are built and encoded by `prometheus-client`, which writes OpenMetrics
//! 1.0 text. The consumers these outputs are for (node_exporter's textfile collector,
//! the Pushgateway, `promtool check metrics`) parse the Prometheus text format 0.0.4,
//! where an OpenMetrics counter family `x` with its sample `x_total` reads as an empty
//! counter plus an untyped `x_total`: promtool rejects it ("no help text") and the
//! Pushgateway stores the series untyped. [`text_format`] therefore names each
//! counter's HELP and TYPE after its `_total` sample and drops the `# UNIT` lines (the
//! unit is in every name); the document keeps its final `# EOF` (a comment to 0.0.4
//! parsers, the end marker to OpenMetrics ones), so a reader can tell a whole file.
//!
//! The file is replaced atomically (temporary file, fsync, rename: `fsx::AtomicFile`),
//! so the textfile collector never reads half of it. [`OpenMetricsSink::every`] also
//! rewrites it every N ms of the sampler's clock while the run goes on (the hook for
//! `-I`, issue 11): those interim files hold the energy per domain and the duration so
//! far; the command's share, the total and the emissions come with the final file.

use std::borrow::Cow;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::error::{Error, Result};
use crate::output::{self, Prepared, Requested};
use crate::sources::Domain;

use super::Summary;
use super::push::{self, PushTarget};
use super::sink::{Sink, TickView};

/// The `job` label when `--push-job` is not given.
pub const DEFAULT_JOB: &str = "joulerun";
/// Longest `command` label: the program's name, never its arguments.
pub const MAX_COMMAND_LABEL: usize = 64;

/// `--push-job NAME`: 1 to 128 printable characters.
pub fn parse_job(v: Option<&str>) -> Result<String> {
    let Some(v) = v else {
        return Ok(DEFAULT_JOB.to_string());
    };
    let t = v.trim();
    if t.is_empty() || t.chars().count() > 128 || t.chars().any(char::is_control) {
        return Err(Error::usage(format!(
            "invalid --push-job '{}': give a name of 1 to 128 printable characters, e.g. nightly-build",
            crate::text::escape_line(v)
        )));
    }
    Ok(t.to_string())
}

/// The `command` label: the program's base name, control characters escaped, at most
/// [`MAX_COMMAND_LABEL`] characters. Arguments never go into a label (unbounded, and
/// they may hold secrets).
pub fn command_label(program: &str) -> String {
    let base = program.rsplit('/').find(|s| !s.is_empty()).unwrap_or("");
    crate::text::escape_line(base)
        .chars()
        .take(MAX_COMMAND_LABEL)
        .collect()
}

/// The labels every series of a run carries.
#[derive(Clone, Debug, PartialEq)]
pub struct RunLabels {
    pub host: String,
    pub command: String,
    pub job: String,
    /// Unique per run on a host: the start time in ms (hex) and joulerun's PID.
    pub run_id: String,
}

impl RunLabels {
    /// The labels of this run: `command` from the program run, or the attached process's
    /// name (`-p`), empty with `-a` alone.
    pub fn new(command: &[std::ffi::OsString], pid: Option<i32>, job: &str) -> RunLabels {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "unknown".to_string());
        let program = match (command.first(), pid) {
            (Some(p), _) => p.to_string_lossy().into_owned(),
            (None, Some(pid)) => std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|s| s.trim_end().to_string())
                .unwrap_or_default(),
            (None, None) => String::new(),
        };
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        RunLabels {
            host,
            command: command_label(&program),
            job: job.to_string(),
            run_id: format!("{ms:x}-{}", std::process::id()),
        }
    }
}

/// One domain's energy, for the metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct DomainFigure {
    pub name: String,
    pub kind: &'static str,
    pub device: String,
    pub source: &'static str,
    pub category: String,
    pub in_total: bool,
    pub estimated: bool,
    pub energy_j: f64,
}

impl DomainFigure {
    fn of(d: &Domain, energy_j: f64) -> DomainFigure {
        DomainFigure {
            name: d.name.clone(),
            kind: d.kind.name(),
            device: d.device.id(),
            source: d.source.name(),
            category: d.category().to_string(),
            in_total: d.in_total(),
            estimated: d.estimated,
            energy_j,
        }
    }
}

/// What one metrics document holds: everything at the end of a run, the energy per
/// domain and the duration at an interval.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    pub domains: Vec<DomainFigure>,
    pub duration_s: f64,
    /// The rest is only known when the run is over.
    pub fin: Option<Final>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Final {
    pub total_j: f64,
    /// `whole` or `parts`.
    pub total_of: &'static str,
    pub estimated: bool,
    pub command_j: Option<f64>,
    pub emissions: crate::carbon::Emissions,
    pub exit_status: Option<i32>,
}

impl Figures {
    /// The figures of a finished run.
    pub fn of_summary(s: &Summary) -> Figures {
        Figures {
            domains: s
                .domains
                .iter()
                .map(|d| DomainFigure {
                    name: d.name.clone(),
                    kind: d.kind.name(),
                    device: d.device.id(),
                    source: d.source.name(),
                    category: d.category.to_string(),
                    in_total: d.in_total,
                    estimated: d.estimated,
                    energy_j: d.energy_j,
                })
                .collect(),
            duration_s: s.elapsed_s,
            fin: Some(Final {
                total_j: s.total.energy_j,
                total_of: s.total.of,
                estimated: s.estimated,
                command_j: s.attribution.as_ref().map(|a| a.summary.command_total_j),
                emissions: s.emissions.clone(),
                exit_status: s.exit.as_ref().map(|e| e.status),
            }),
        }
    }
}

type Labels = Vec<(String, String)>;
type FloatCounter = Counter<f64, AtomicU64>;
type FloatGauge = Gauge<f64, AtomicU64>;

fn yes_no(b: bool) -> String {
    if b { "true" } else { "false" }.to_string()
}

/// The figures as OpenMetrics text, as `prometheus-client` encodes it. `with_job`: put
/// the `job` label on every series (a file; a push gets it from its grouping key).
pub fn encode_openmetrics(f: &Figures, l: &RunLabels, with_job: bool) -> String {
    let mut consts: Vec<(Cow<'static, str>, Cow<'static, str>)> = Vec::new();
    let mut add = |k: &'static str, v: &str| {
        if !v.is_empty() {
            consts.push((Cow::Borrowed(k), Cow::Owned(v.to_string())));
        }
    };
    add("host", &l.host);
    add("command", &l.command);
    if with_job {
        add("job", &l.job);
    }
    add("run_id", &l.run_id);
    let mut r = Registry::with_prefix_and_labels("joulerun", consts.into_iter());

    let energy = Family::<Labels, FloatCounter>::default();
    for d in &f.domains {
        energy
            .get_or_create(&vec![
                ("domain".to_string(), d.name.clone()),
                ("kind".to_string(), d.kind.to_string()),
                ("device".to_string(), d.device.clone()),
                ("category".to_string(), d.category.clone()),
                ("source".to_string(), d.source.to_string()),
                ("in_total".to_string(), yes_no(d.in_total)),
                ("estimated".to_string(), yes_no(d.estimated)),
            ])
            .inc_by(d.energy_j.max(0.0));
    }
    r.register_with_unit(
        "energy",
        "Energy per measured domain since the run started; sum only in_total=\"true\" (the others are inside or overlap them)",
        Unit::Joules,
        energy,
    );
    let duration = FloatGauge::default();
    duration.set(f.duration_s);
    r.register_with_unit(
        "duration",
        "Time from the first reading to the last",
        Unit::Seconds,
        duration,
    );
    if let Some(fin) = &f.fin {
        let est = || vec![("estimated".to_string(), yes_no(fin.estimated))];
        let counter =
            |r: &mut Registry, name: &str, help: &str, unit: Unit, v: f64, labels: Labels| {
                let fam = Family::<Labels, FloatCounter>::default();
                fam.get_or_create(&labels).inc_by(v.max(0.0));
                r.register_with_unit(name, help, unit, fam);
            };
        let mut total = est();
        total.push(("of".to_string(), fin.total_of.to_string()));
        counter(
            &mut r,
            "machine_energy",
            "The run's total energy: the whole machine when measured (of=\"whole\"), else the sum of the parts",
            Unit::Joules,
            fin.total_j,
            total,
        );
        if let Some(c) = fin.command_j {
            counter(
                &mut r,
                "command_energy",
                "The command's attributed energy (dynamic share plus its share of idle power)",
                Unit::Joules,
                c,
                est(),
            );
        }
        let em = &fin.emissions;
        counter(
            &mut r,
            "co2e",
            "Emissions of the machine's energy at the grid intensity",
            Unit::Grams,
            em.g_co2e,
            est(),
        );
        if let Some(g) = em.command_g_co2e {
            counter(
                &mut r,
                "command_co2e",
                "Emissions of the command's energy at the grid intensity",
                Unit::Grams,
                g,
                est(),
            );
        }
        if let Some(g) = em.facility_g_co2e {
            counter(
                &mut r,
                "facility_co2e",
                "Emissions of the facility's energy (the machine's times the PUE)",
                Unit::Grams,
                g,
                est(),
            );
        }
        let intensity = Family::<Labels, FloatGauge>::default();
        let mut il = vec![
            (
                "basis".to_string(),
                serde_json::to_value(em.basis)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
            ),
            ("source".to_string(), em.source.clone()),
        ];
        if let Some(y) = em.year {
            il.push(("year".to_string(), y.to_string()));
        }
        if let Some(rg) = &em.region {
            il.push(("region".to_string(), rg.clone()));
        }
        intensity.get_or_create(&il).set(em.intensity_g_per_kwh);
        r.register(
            "carbon_intensity_grams_per_kwh",
            "Grid carbon intensity used, gCO2e per kWh",
            intensity,
        );
        if let Some(p) = em.pue {
            let g = FloatGauge::default();
            g.set(p);
            r.register(
                "pue_ratio",
                "Power usage effectiveness applied to the facility figures",
                g,
            );
        }
        if let Some(s) = fin.exit_status {
            let g = Gauge::<i64>::default();
            g.set(i64::from(s));
            r.register(
                "exit_status",
                "What joulerun exits with: the command's exit code, or 128+N for signal N",
                g,
            );
        }
    }
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &r);
    out
}

/// OpenMetrics text as the Prometheus text format 0.0.4 parsers read it (module
/// documentation): counters' HELP and TYPE named after their `_total` samples, no
/// `# UNIT` lines; everything else, `# EOF` included, as it was.
pub fn text_format(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 64);
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters
                .contains(&name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// The metrics document of a file (with `job`) or a push (without).
pub fn document(f: &Figures, l: &RunLabels, with_job: bool) -> String {
    text_format(&encode_openmetrics(f, l, with_job))
}

/// The `--openmetrics` file and the `--push`, as one sink.
pub struct OpenMetricsSink {
    file: Option<(Requested, Option<Prepared>)>,
    push: Option<PushTarget>,
    labels: RunLabels,
    /// Rewrite the file every this many seconds of the sampler's clock (`-I`).
    every_s: Option<f64>,
    next_s: f64,
    domains: Vec<DomainFigure>,
    error: Option<String>,
    /// The run of a series the interval figures are of (they start again with each).
    run: u32,
}

impl OpenMetricsSink {
    /// `file`'s temporary file is created now: an unwritable destination stops the run
    /// before the command starts.
    pub fn new(
        file: Option<&Requested>,
        push: Option<&PushTarget>,
        labels: RunLabels,
    ) -> Result<OpenMetricsSink> {
        let file = match file {
            Some(r) => Some((r.clone(), Some(output::prepare(r)?))),
            None => None,
        };
        Ok(OpenMetricsSink {
            file,
            push: push.cloned(),
            labels,
            every_s: None,
            next_s: 0.0,
            domains: Vec::new(),
            error: None,
            run: 0,
        })
    }

    /// Also write the file every `ms` milliseconds of the sampler's clock while the run
    /// goes on (a regular file only: a stream or descriptor gets the final document).
    pub fn every(mut self, ms: u64) -> OpenMetricsSink {
        let regular = self
            .file
            .as_ref()
            .is_some_and(|(_, p)| matches!(p, Some(Prepared::Atomic(_))));
        if ms > 0 && regular {
            self.every_s = Some(ms as f64 / 1e3);
            self.next_s = ms as f64 / 1e3;
        }
        self
    }

    fn write(&mut self, doc: &str) -> std::result::Result<(), String> {
        let Some((r, prepared)) = &mut self.file else {
            return Ok(());
        };
        let p = match prepared.take() {
            Some(p) => p,
            None => output::prepare(r).map_err(|e| e.message)?,
        };
        p.finish(doc.as_bytes(), r.flag)
            .map_err(|e| format!("writing {} to {}: {e}", r.what, r.dest.describe()))
    }
}

impl Sink for OpenMetricsSink {
    fn tick(&mut self, t: &TickView<'_>) {
        let Some(every) = self.every_s else { return };
        if t.run != self.run {
            self.run = t.run;
            self.domains.clear();
            self.next_s = every;
        }
        if self.domains.len() != t.domains.len() {
            self.domains = t.domains.iter().map(|d| DomainFigure::of(d, 0.0)).collect();
        }
        for (k, f) in self.domains.iter_mut().enumerate() {
            if !t.is_slow.get(k).copied().unwrap_or(false) {
                f.energy_j += t.delta_j.get(k).copied().unwrap_or(0.0);
            }
        }
        for i in t.intervals {
            if t.is_slow.get(i.domain).copied().unwrap_or(false)
                && let Some(f) = self.domains.get_mut(i.domain)
            {
                f.energy_j += i.energy_j;
            }
        }
        if t.end_s + 1e-9 < self.next_s || self.error.is_some() {
            return;
        }
        while self.next_s <= t.end_s + 1e-9 {
            self.next_s += every;
        }
        let f = Figures {
            domains: self.domains.clone(),
            duration_s: t.end_s,
            fin: None,
        };
        let doc = document(&f, &self.labels, true);
        if let Err(e) = self.write(&doc) {
            self.error = Some(format!("{e} (at {:.2} s)", t.end_s));
        }
    }

    fn stream_error(&self) -> Option<String> {
        self.error.clone()
    }

    fn finish(mut self: Box<Self>, summary: &Summary) -> std::result::Result<(), String> {
        let f = Figures::of_summary(summary);
        let written = match self.file.is_some() {
            true => self.write(&document(&f, &self.labels, true)),
            false => Ok(()),
        };
        if let Some(t) = &self.push {
            let body = document(&f, &self.labels, false);
            if let Err(e) = push::push(t, &self.labels.job, &self.labels.host, body.as_bytes()) {
                // Never a lost report nor a changed exit status: a warning.
                eprintln!(
                    "joulerun: warning: --push to {} failed: {}; the run's other outputs are complete",
                    crate::text::escape_line(&t.shown),
                    crate::text::escape_line(&e)
                );
            }
        }
        match (written, self.error.take()) {
            (Err(e), _) | (Ok(()), Some(e)) => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carbon::{Carbon, emissions};

    fn labels() -> RunLabels {
        RunLabels {
            host: "node-1".into(),
            command: command_label("/usr/bin/make"),
            job: "ci".into(),
            run_id: "18c-42".into(),
        }
    }

    fn figures() -> Figures {
        let dom = |name: &str, kind, in_total, e| DomainFigure {
            name: name.into(),
            kind,
            device: "socket:0".into(),
            source: "powercap",
            category: "cpu".into(),
            in_total,
            estimated: false,
            energy_j: e,
        };
        Figures {
            domains: vec![
                dom("package-0", "package", true, 10.5),
                dom("core-0", "core", false, 6.0),
            ],
            duration_s: 2.5,
            fin: Some(Final {
                total_j: 10.5,
                total_of: "parts",
                estimated: false,
                command_j: Some(7.0),
                emissions: emissions(10.5, Some(7.0), &Carbon::default(), false),
                exit_status: Some(3),
            }),
        }
    }

    #[test]
    fn labels_are_bounded_and_hold_no_arguments() {
        assert_eq!(command_label("/usr/bin/python3"), "python3");
        assert_eq!(command_label("make"), "make");
        assert_eq!(command_label("dir/"), "dir");
        assert_eq!(command_label(&"x".repeat(200)).len(), MAX_COMMAND_LABEL);
        assert_eq!(command_label("a\u{1b}[2Jb"), "a\\x1b[2Jb");
        assert_eq!(parse_job(None).unwrap(), "joulerun");
        assert_eq!(parse_job(Some(" nightly ")).unwrap(), "nightly");
        assert!(parse_job(Some("")).is_err() && parse_job(Some("a\nb")).is_err());
        let l = RunLabels::new(&["/bin/true".into()], None, "j");
        assert_eq!((l.command.as_str(), l.job.as_str()), ("true", "j"));
        assert!(!l.host.is_empty() && l.run_id.contains('-'));
    }

    #[test]
    fn the_document_names_counters_as_the_text_format_reads_them() {
        let om = encode_openmetrics(&figures(), &labels(), true);
        // prometheus-client's OpenMetrics: the family without _total, a UNIT line.
        assert!(
            om.contains("# TYPE joulerun_energy_joules counter\n"),
            "{om}"
        );
        assert!(
            om.contains("# UNIT joulerun_energy_joules joules\n"),
            "{om}"
        );
        let doc = text_format(&om);
        assert!(doc.ends_with("# EOF\n"), "{doc}");
        assert!(!doc.contains("# UNIT"), "{doc}");
        for name in [
            "joulerun_energy_joules_total",
            "joulerun_machine_energy_joules_total",
            "joulerun_command_energy_joules_total",
            "joulerun_co2e_grams_total",
            "joulerun_command_co2e_grams_total",
        ] {
            assert!(
                doc.contains(&format!("# TYPE {name} counter\n")),
                "{name}: {doc}"
            );
            assert!(doc.contains(&format!("# HELP {name} ")), "{name}: {doc}");
        }
        assert!(
            doc.contains("# TYPE joulerun_duration_seconds gauge\n"),
            "{doc}"
        );
        assert!(doc.contains("# TYPE joulerun_exit_status gauge\n"), "{doc}");
        let line = doc
            .lines()
            .find(|l| l.starts_with("joulerun_energy_joules_total{") && l.contains("package-0"))
            .unwrap();
        for l in [
            "host=\"node-1\"",
            "command=\"make\"",
            "job=\"ci\"",
            "run_id=\"18c-42\"",
            "in_total=\"true\"",
        ] {
            assert!(line.contains(l), "{l}: {line}");
        }
        assert!(line.ends_with(" 10.5"), "{line}");
        assert!(doc.contains("joulerun_exit_status{host=\"node-1\",command=\"make\",job=\"ci\",run_id=\"18c-42\"} 3\n"), "{doc}");
        // A push leaves the job to the grouping key.
        assert!(!document(&figures(), &labels(), false).contains("job=\"ci\""));
        // Interval documents: energy and duration only.
        let mut f = figures();
        f.fin = None;
        let d = document(&f, &labels(), true);
        assert!(
            d.contains("joulerun_energy_joules_total") && !d.contains("co2e"),
            "{d}"
        );
    }
}
