//! `joulerun compare BASE.json NEW.json`: is NEW significantly worse than BASE?
//!
//! Each side is a `--json` summary: one run, or a `-r` series (its `repeat.runs`). For each
//! figure (every domain's energy, the total, the command's share; the elapsed time for
//! information) the change in the mean is tested:
//!
//! * both sides with at least two runs: Welch's t-test on the per-run values;
//! * a side with one run: that run's value with the stated uncertainty of its source
//!   ([`stated_uncertainty`], or `--uncertainty`), a known ("type B") uncertainty of
//!   infinite degrees of freedom, in the same Welch formula ([`crate::stats::Sample`]);
//!   two single runs make it a z-test.
//!
//! The CO2e of the total is compared too, for information (it follows the energy, and
//! each side's grid intensity). The energy figures are one family: their p-values are
//! Holm-adjusted, so two series of
//! the same command fail the gate at most `alpha` of the time however many domains the
//! machine has. A figure is *worse* when its adjusted p is below `alpha` and its mean rose
//! by more than the threshold, *better* when it fell by more; anything else is no
//! significant change. Exit status: 0 nothing worse, 1 something worse, 2 a usage error
//! (files, options, or sides that cannot be compared without `--force`).

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cli::CompareArgs;
use crate::error::{Error, Result};
use crate::output::{Dest, Requested};
use crate::report::markdown::{cell, code};
use crate::report::{fmt_joules, sig};
use crate::stats::{self, Sample, Stats};

/// The version of `compare --json`.
pub const COMPARE_SCHEMA_VERSION: u32 = 1;
/// Default `--threshold` and `--alpha`.
pub const DEFAULT_THRESHOLD: f64 = 0.05;
pub const DEFAULT_ALPHA: f64 = 0.05;
/// Largest summary file read, bytes.
const MAX_INPUT: u64 = 512 << 20;

/// The relative uncertainty (95%, so twice the standard uncertainty) joulerun states for
/// one run's reading from each interface, used when a side has a single run
/// (docs/ci.md, "Single runs"). Conservative on purpose: one run's spread is unknown.
pub fn stated_uncertainty(source: &str) -> f64 {
    match source {
        // RAPL: a model on older Intel parts, measured since Haswell; the literature puts
        // package energy within a few percent of external meters.
        "perf" | "powercap" | "msr" => 0.05,
        // Board power sensors (NVML, hwmon meters and supplies).
        "nvml" | "hwmon" => 0.05,
        // BMC sensors and batteries: coarse, slow, firmware-averaged.
        "dcmi" | "bmc" | "ipmi" | "tools" | "battery" => 0.10,
        // The estimate follows CPU time through a fixed model: its run-to-run noise is
        // that of CPU time accounting; its absolute error is much larger, but the same
        // on both sides of one machine.
        "estimate" => 0.10,
        _ => 0.10,
    }
}

// What compare reads from a summary. Unknown fields are ignored: any later summary with
// the same schema_version can be read.

#[derive(Debug, Deserialize)]
struct Input {
    schema_version: u32,
    #[serde(default)]
    command: Vec<String>,
    mode: String,
    #[serde(default)]
    estimated: bool,
    elapsed_s: f64,
    domains: Vec<InputDomain>,
    total: InputTotal,
    attribution: Option<InputAttribution>,
    exit: Option<InputExit>,
    machine: Option<InputMachine>,
    units: Option<InputUnits>,
    repeat: Option<InputRepeat>,
    emissions: Option<InputEmissions>,
    /// Launchers (issue 13): a rank whose node another rank measured holds no energy.
    #[serde(default)]
    launcher: Option<InputLauncher>,
}

#[derive(Debug, Deserialize)]
struct InputLauncher {
    role: crate::launcher::Role,
}

#[derive(Debug, Deserialize)]
struct InputEmissions {
    g_co2e: f64,
    intensity_g_per_kwh: f64,
}

#[derive(Debug, Deserialize)]
struct InputDomain {
    name: String,
    source: String,
    #[serde(default)]
    estimated: bool,
    energy_j: f64,
}

#[derive(Debug, Deserialize)]
struct InputTotal {
    energy_j: f64,
}

#[derive(Debug, Deserialize)]
struct InputAttribution {
    command_total_j: f64,
    baseline: InputBaseline,
}

#[derive(Debug, Deserialize, PartialEq)]
struct InputBaseline {
    used: bool,
    file: Option<String>,
    taken_at: Option<String>,
}

#[derive(Debug, Deserialize)]
struct InputExit {
    status: i32,
}

#[derive(Debug, Deserialize, Serialize, Clone, PartialEq)]
struct InputMachine {
    hostname: String,
    kernel: String,
    cpu_model: String,
}

#[derive(Debug, Deserialize, PartialEq)]
struct InputUnits {
    energy: String,
    power: String,
    time: String,
}

#[derive(Debug, Deserialize)]
struct InputRepeat {
    runs: Vec<crate::report::series::RunRecord>,
}

/// One run's figures, whichever way the side was written.
struct RunValues {
    elapsed_s: f64,
    total_j: f64,
    command_j: Option<f64>,
    /// The machine's emissions, g (absent from summaries without them).
    co2e_g: Option<f64>,
    exit_status: i32,
    domains: Vec<(String, f64)>,
}

/// One side of the comparison.
struct Side {
    label: String,
    input: Input,
    runs: Vec<RunValues>,
}

/// The bytes of a `--json` summary named on the command line, or why not (for a
/// message that names the file): `compare` and `merge` (issue 13) read them alike.
pub(crate) fn read_summary_file(path: &Path) -> std::result::Result<Vec<u8>, String> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| format!("cannot open it ({e}); give the --json file of a joulerun run"))?;
    if f.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        return Err("is a directory; give the --json file of a joulerun run".into());
    }
    let mut bytes = Vec::new();
    (&mut f)
        .take(MAX_INPUT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > MAX_INPUT {
        return Err(format!(
            "is larger than {} MiB: not a joulerun summary",
            MAX_INPUT >> 20
        ));
    }
    Ok(bytes)
}

fn read_side(path: &Path, label: &str) -> Result<Side> {
    let shown = crate::text::escape_line(&path.display().to_string()).into_owned();
    let fail = |why: String| Error::usage(format!("{label} '{shown}': {why}"));
    let bytes = read_summary_file(path).map_err(fail)?;
    let input: Input = serde_json::from_slice(&bytes).map_err(|e| {
        fail(format!(
            "is not a joulerun JSON summary ({e}); write one with `joulerun --json FILE -- CMD`"
        ))
    })?;
    if input.schema_version != crate::report::SUMMARY_SCHEMA_VERSION {
        return Err(fail(format!(
            "has summary schema version {}, this joulerun reads version {}",
            input.schema_version,
            crate::report::SUMMARY_SCHEMA_VERSION
        )));
    }
    if input
        .launcher
        .as_ref()
        .is_some_and(|l| l.role == crate::launcher::Role::Rank)
    {
        return Err(fail(
            "is the report of a rank whose node another rank measured: it holds no energy; compare the reports of the ranks that measured the nodes (`launcher.role` \"node\")".into(),
        ));
    }
    let runs: Vec<RunValues> = match &input.repeat {
        Some(r) if !r.runs.is_empty() => r
            .runs
            .iter()
            .map(|x| RunValues {
                elapsed_s: x.elapsed_s,
                total_j: x.total_j,
                command_j: x.command_j,
                co2e_g: input.emissions.as_ref().map(|_| x.co2e_g),
                exit_status: x.exit_status,
                domains: x
                    .domains
                    .iter()
                    .map(|d| (d.name.clone(), d.energy_j))
                    .collect(),
            })
            .collect(),
        Some(_) => {
            return Err(fail(
                "is a series with no measured run: nothing to compare".into(),
            ));
        }
        None => vec![RunValues {
            elapsed_s: input.elapsed_s,
            total_j: input.total.energy_j,
            command_j: input.attribution.as_ref().map(|a| a.command_total_j),
            co2e_g: input.emissions.as_ref().map(|e| e.g_co2e),
            exit_status: input.exit.as_ref().map_or(0, |e| e.status),
            domains: input
                .domains
                .iter()
                .map(|d| (d.name.clone(), d.energy_j))
                .collect(),
        }],
    };
    let all = runs.iter().flat_map(|r| {
        [r.elapsed_s, r.total_j]
            .into_iter()
            .chain(r.command_j)
            .chain(r.domains.iter().map(|d| d.1))
    });
    if all.clone().any(|x| !x.is_finite()) {
        return Err(fail("holds a figure that is not a number".into()));
    }
    Ok(Side {
        label: shown,
        input,
        runs,
    })
}

/// A percentage or fraction: `5%`, `5 %`, `0.05`.
fn parse_fraction(s: &str, flag: &str, max: f64) -> Result<f64> {
    let t = s.trim();
    let (num, pct) = match t.strip_suffix('%') {
        Some(n) => (n.trim(), true),
        None => (t, false),
    };
    let v: f64 = num.parse().map_err(|_| {
        Error::usage(format!(
            "invalid {flag} '{}': give a percentage such as 5% (or a fraction such as 0.05)",
            crate::text::escape_line(s)
        ))
    })?;
    let v = if pct { v / 100.0 } else { v };
    if !(v.is_finite() && v >= 0.0 && v <= max) {
        return Err(Error::usage(format!(
            "invalid {flag} '{}': give a value from 0% to {}%",
            crate::text::escape_line(s),
            max * 100.0
        )));
    }
    Ok(v)
}

/// What `compare` is asked.
#[derive(Clone, Debug)]
pub struct ComparePlan {
    pub threshold: f64,
    pub alpha: f64,
    pub uncertainty: Option<f64>,
    pub force: bool,
    pub json: bool,
    pub markdown: Option<Requested>,
}

pub fn plan(args: &CompareArgs) -> Result<ComparePlan> {
    let threshold = match &args.threshold {
        Some(t) => parse_fraction(t, "--threshold", 10.0)?,
        None => DEFAULT_THRESHOLD,
    };
    let alpha = match &args.alpha {
        Some(a) => parse_fraction(a, "--alpha", 0.5)?,
        None => DEFAULT_ALPHA,
    };
    if alpha <= 0.0 {
        return Err(Error::usage(
            "invalid --alpha 0: give a significance level above 0, such as 0.05",
        ));
    }
    let uncertainty = args
        .uncertainty
        .as_deref()
        .map(|u| parse_fraction(u, "--uncertainty", 1.0))
        .transpose()?;
    let markdown = args.markdown.as_ref().map(|p| Requested {
        flag: "--markdown",
        what: "the Markdown comparison",
        dest: Dest::parse(p),
    });
    if let Some(m) = &markdown {
        if args.json && m.dest == Dest::Fd(1) {
            return Err(Error::usage(
                "--json and --markdown - would both write to stdout: give --markdown FILE",
            ));
        }
        let reserved = [
            (args.base.as_path(), "BASE.json"),
            (args.new.as_path(), "NEW.json"),
        ];
        crate::output::check(std::slice::from_ref(m), &reserved)?;
    }
    Ok(ComparePlan {
        threshold,
        alpha,
        uncertainty,
        force: args.force,
        json: args.json,
        markdown,
    })
}

/// What a figure is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Figure {
    Domain,
    Total,
    Command,
    Co2e,
    Elapsed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Verdict {
    #[serde(rename = "better")]
    Better,
    #[serde(rename = "worse")]
    Worse,
    #[serde(rename = "faster")]
    Faster,
    #[serde(rename = "slower")]
    Slower,
    #[serde(rename = "no significant change")]
    NoChange,
}

impl Verdict {
    pub fn text(self) -> &'static str {
        match self {
            Verdict::Better => "better",
            Verdict::Worse => "worse",
            Verdict::Faster => "faster",
            Verdict::Slower => "slower",
            Verdict::NoChange => "no significant change",
        }
    }
}

/// How a line was tested.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Test {
    /// Welch's t-test on both series.
    Welch,
    /// At least one side is a single run: its stated uncertainty stands in for a spread.
    StatedUncertainty,
}

/// One side of a line.
#[derive(Clone, Debug, Serialize)]
pub struct SideStats {
    #[serde(flatten)]
    pub stats: Stats,
    /// For a single run, the relative uncertainty used (95%).
    pub stated_uncertainty: Option<f64>,
}

/// One compared figure.
#[derive(Clone, Debug, Serialize)]
pub struct Line {
    pub name: String,
    pub figure: Figure,
    pub unit: &'static str,
    pub base: SideStats,
    pub new: SideStats,
    /// `new.mean - base.mean`, and relative to `base.mean` (`None` when it is 0).
    pub change: f64,
    pub change_rel: Option<f64>,
    /// The `1 - alpha` interval of the change, relative to `base.mean`.
    pub ci_low_rel: Option<f64>,
    pub ci_high_rel: Option<f64>,
    pub test: Test,
    /// Degrees of freedom (`None`: infinite, a z-test).
    pub df: Option<f64>,
    pub p: f64,
    /// `p` after Holm's adjustment over the energy figures (`p` for the elapsed time).
    pub p_adjusted: f64,
    /// In the family of figures that decide the exit status.
    pub gates: bool,
    pub significant: bool,
    pub verdict: Verdict,
}

#[derive(Clone, Debug, Serialize)]
pub struct SideInfo {
    pub file: String,
    pub runs: usize,
    pub command: Vec<String>,
    pub estimated: bool,
    pub failed_runs: usize,
}

/// The result of `compare`.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub schema_version: u32,
    pub base: SideInfo,
    pub new: SideInfo,
    pub threshold: f64,
    pub alpha: f64,
    pub lines: Vec<Line>,
    /// Some energy figure is worse: the exit status is 1.
    pub regression: bool,
    /// Things to know when reading the result (estimates, differing baselines, ...).
    pub notes: Vec<String>,
    /// Refusals overridden by `--force`.
    pub forced: Vec<String>,
}

/// The values of one figure on one side.
fn values(side: &Side, f: &dyn Fn(&RunValues) -> Option<f64>) -> Vec<f64> {
    side.runs.iter().filter_map(f).collect()
}

/// The test of one figure. `u_base`/`u_new`: the stated relative uncertainties (95%) of
/// a single run on each side.
#[allow(clippy::too_many_arguments)]
fn line(
    name: &str,
    figure: Figure,
    unit: &'static str,
    xs: &[f64],
    ys: &[f64],
    u_base: f64,
    u_new: f64,
    alpha: f64,
) -> Option<Line> {
    let sample = |v: &[f64], u: f64| -> Option<(Sample, Option<f64>)> {
        match v {
            [] => None,
            [x] => Sample::measured_once(*x, u * x.abs() / 2.0).map(|s| (s, Some(u))),
            _ => Sample::of_runs(v).map(|s| (s, None)),
        }
    };
    let (a, ua) = sample(xs, u_base)?;
    let (b, ub) = sample(ys, u_new)?;
    let w = stats::welch_samples(&a, &b, alpha);
    let rel = |x: f64| (a.mean != 0.0).then(|| x / a.mean.abs());
    Some(Line {
        name: name.to_string(),
        figure,
        unit,
        base: SideStats {
            stats: stats::describe(xs)?,
            stated_uncertainty: ua,
        },
        new: SideStats {
            stats: stats::describe(ys)?,
            stated_uncertainty: ub,
        },
        change: w.diff,
        change_rel: rel(w.diff),
        ci_low_rel: rel(w.ci_low),
        ci_high_rel: rel(w.ci_high),
        test: if ua.is_none() && ub.is_none() {
            Test::Welch
        } else {
            Test::StatedUncertainty
        },
        df: w.df,
        p: w.p,
        p_adjusted: w.p,
        gates: !matches!(figure, Figure::Elapsed | Figure::Co2e),
        significant: false,
        verdict: Verdict::NoChange,
    })
}

/// Whether the two sides can be compared: the refusals (machine, units, sources), and
/// the notes worth reading either way.
fn check(base: &Side, new: &Side) -> (Vec<String>, Vec<String>) {
    let mut refuse = Vec::new();
    let mut notes = Vec::new();
    let (b, n) = (&base.input, &new.input);
    let m = |s: &Side| {
        s.input.machine.clone().ok_or_else(|| {
            format!(
                "{} does not say which machine it was measured on (written by an older joulerun)",
                s.label
            )
        })
    };
    match (m(base), m(new)) {
        (Ok(mb), Ok(mn)) => {
            if mb.hostname != mn.hostname || mb.cpu_model != mn.cpu_model {
                refuse.push(format!(
                    "the runs come from two machines: {} on '{}' ({}), {} on '{}' ({}); energy on different machines is not comparable",
                    base.label,
                    crate::text::escape_line(&mb.hostname),
                    crate::text::escape_line(&mb.cpu_model),
                    new.label,
                    crate::text::escape_line(&mn.hostname),
                    crate::text::escape_line(&mn.cpu_model)
                ));
            } else if mb.kernel != mn.kernel {
                notes.push(format!(
                    "the kernels differ ({} and {}): a kernel can change energy too",
                    crate::text::escape_line(&mb.kernel),
                    crate::text::escape_line(&mn.kernel)
                ));
            }
        }
        (b, n) => refuse.extend(b.err().into_iter().chain(n.err())),
    }
    if b.units != n.units || b.units.is_none() {
        refuse.push(format!(
            "the units differ or are not stated ({}: {}, {}: {})",
            base.label,
            units_text(&b.units),
            new.label,
            units_text(&n.units)
        ));
    }
    let sources = |i: &Input| -> Vec<(String, String, bool)> {
        i.domains
            .iter()
            .map(|d| (d.name.clone(), d.source.clone(), d.estimated))
            .collect()
    };
    let (sb, sn) = (sources(b), sources(n));
    if sb != sn {
        let show = |v: &[(String, String, bool)]| {
            v.iter()
                .map(|(d, s, _)| format!("{} ({s})", crate::text::escape_line(d)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        refuse.push(format!(
            "the energy sources differ: {} has {}; {} has {}",
            base.label,
            show(&sb),
            new.label,
            show(&sn)
        ));
    }
    if b.mode != n.mode {
        notes.push(format!(
            "{} measured in mode '{}', {} in mode '{}'",
            base.label, b.mode, new.label, n.mode
        ));
    }
    if b.estimated || n.estimated {
        notes.push(
            "estimated: no energy counter was read, the figures come from a CPU-utilisation model; the comparison follows the command's CPU time, which is what a change of code moves".to_string(),
        );
    }
    match (&b.attribution, &n.attribution) {
        (Some(x), Some(y)) if x.baseline != y.baseline => {
            let desc = |a: &InputBaseline| match (a.used, &a.file, &a.taken_at) {
                (false, _, _) => "no baseline".to_string(),
                (true, f, t) => format!(
                    "the baseline {} calibrated {}",
                    crate::text::escape_line(f.as_deref().unwrap_or("?")),
                    crate::text::escape_line(t.as_deref().unwrap_or("?"))
                ),
            };
            notes.push(format!(
                "the baselines differ ({}: {}; {}: {}): the command's static share is split differently on each side",
                base.label,
                desc(&x.baseline),
                new.label,
                desc(&y.baseline)
            ));
        }
        (Some(_), None) | (None, Some(_)) => notes.push(
            "only one side attributed a share to a command: the command's energy is not compared"
                .to_string(),
        ),
        _ => {}
    }
    for s in [base, new] {
        let failed = s.runs.iter().filter(|r| r.exit_status != 0).count();
        if failed > 0 {
            notes.push(format!(
                "{} includes {failed} run{} whose command failed",
                s.label,
                if failed == 1 { "" } else { "s" }
            ));
        }
    }
    if base.runs.len() < 2 || new.runs.len() < 2 {
        notes.push(
            "a side has a single run: its spread is unknown, so the stated measurement uncertainty of its source stands in for it; run both sides with -r 5 or more for a real test".to_string(),
        );
    }
    (refuse, notes)
}

fn units_text(u: &Option<InputUnits>) -> String {
    match u {
        Some(u) => format!(
            "{}, {}, {}",
            crate::text::escape_line(&u.energy),
            crate::text::escape_line(&u.power),
            crate::text::escape_line(&u.time)
        ),
        None => "not stated".to_string(),
    }
}

/// The largest stated uncertainty among a side's domains (its figure `name`, or all of
/// them for the total and the command's share), or `--uncertainty`.
fn uncertainty_of(side: &Side, name: Option<&str>, over: Option<f64>) -> f64 {
    if let Some(u) = over {
        return u;
    }
    side.input
        .domains
        .iter()
        .filter(|d| name.is_none_or(|n| n == d.name))
        .map(|d| stated_uncertainty(&d.source))
        .fold(0.0, f64::max)
        .max(if name.is_none() && side.input.domains.is_empty() {
            0.10
        } else {
            0.0
        })
}

/// Compare two sides (pure: the files are already read).
fn compare_sides(base: &Side, new: &Side, p: &ComparePlan) -> Result<Comparison> {
    let (refuse, mut notes) = check(base, new);
    let forced = if refuse.is_empty() {
        Vec::new()
    } else if p.force {
        refuse
    } else {
        return Err(Error::usage(format!(
            "cannot compare {} with {}:\n{}\n  compare runs of one machine and one set of sources, or give --force to compare anyway",
            base.label,
            new.label,
            refuse
                .iter()
                .map(|r| format!("  - {r}"))
                .collect::<Vec<_>>()
                .join("\n")
        )));
    };
    let mut lines = Vec::new();
    for d in &base.input.domains {
        let name = d.name.as_str();
        let pick = |r: &RunValues| r.domains.iter().find(|x| x.0 == name).map(|x| x.1);
        let ys = values(new, &pick);
        if ys.is_empty() {
            notes.push(format!(
                "{} is only in {}",
                crate::text::escape_line(name),
                base.label
            ));
            continue;
        }
        lines.extend(line(
            name,
            Figure::Domain,
            "J",
            &values(base, &pick),
            &ys,
            uncertainty_of(base, Some(name), p.uncertainty),
            uncertainty_of(new, Some(name), p.uncertainty),
            p.alpha,
        ));
    }
    for d in &new.input.domains {
        if !base.input.domains.iter().any(|b| b.name == d.name) {
            notes.push(format!(
                "{} is only in {}",
                crate::text::escape_line(&d.name),
                new.label
            ));
        }
    }
    let (ub, un) = (
        uncertainty_of(base, None, p.uncertainty),
        uncertainty_of(new, None, p.uncertainty),
    );
    lines.extend(line(
        "total",
        Figure::Total,
        "J",
        &values(base, &|r| Some(r.total_j)),
        &values(new, &|r| Some(r.total_j)),
        ub,
        un,
        p.alpha,
    ));
    let cmd = |r: &RunValues| r.command_j;
    let (cb, cn) = (values(base, &cmd), values(new, &cmd));
    if cb.len() == base.runs.len() && cn.len() == new.runs.len() {
        lines.extend(line(
            "command",
            Figure::Command,
            "J",
            &cb,
            &cn,
            ub,
            un,
            p.alpha,
        ));
    }
    // Emissions: the total's energy times each side's intensity; informative (the energy
    // decides), and worth a note when the intensities differ.
    let co2 = |r: &RunValues| r.co2e_g;
    let (gb, gn) = (values(base, &co2), values(new, &co2));
    if gb.len() == base.runs.len() && gn.len() == new.runs.len() {
        lines.extend(line("CO2e", Figure::Co2e, "g", &gb, &gn, ub, un, p.alpha));
    }
    if let (Some(eb), Some(en)) = (&base.input.emissions, &new.input.emissions)
        && eb.intensity_g_per_kwh != en.intensity_g_per_kwh
    {
        notes.push(format!(
            "the carbon intensities differ ({} and {} g/kWh): the CO2e changes with them, not only with the energy",
            crate::carbon::fmt_intensity(eb.intensity_g_per_kwh),
            crate::carbon::fmt_intensity(en.intensity_g_per_kwh)
        ));
    }
    // Timing: the clock is exact; one run's noise is stated like an energy's.
    let t = p.uncertainty.unwrap_or(0.05);
    lines.extend(line(
        "elapsed",
        Figure::Elapsed,
        "s",
        &values(base, &|r| Some(r.elapsed_s)),
        &values(new, &|r| Some(r.elapsed_s)),
        t,
        t,
        p.alpha,
    ));
    // Holm over the energy figures; the elapsed time and the CO2e on their own.
    let family: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].gates).collect();
    let adjusted = stats::holm(&family.iter().map(|&i| lines[i].p).collect::<Vec<_>>());
    for (&i, a) in family.iter().zip(adjusted) {
        lines[i].p_adjusted = a;
    }
    for l in &mut lines {
        l.significant = l.p_adjusted < p.alpha;
        let rel = l.change_rel.unwrap_or(if l.change > 0.0 {
            f64::INFINITY
        } else if l.change < 0.0 {
            f64::NEG_INFINITY
        } else {
            0.0
        });
        let timing = l.figure == Figure::Elapsed;
        l.verdict = match (l.significant, rel) {
            (true, r) if r > p.threshold => {
                if timing {
                    Verdict::Slower
                } else {
                    Verdict::Worse
                }
            }
            (true, r) if r < -p.threshold => {
                if timing {
                    Verdict::Faster
                } else {
                    Verdict::Better
                }
            }
            _ => Verdict::NoChange,
        };
    }
    let regression = lines.iter().any(|l| l.gates && l.verdict == Verdict::Worse);
    let info = |s: &Side| SideInfo {
        file: s.label.clone(),
        runs: s.runs.len(),
        command: s.input.command.clone(),
        estimated: s.input.estimated,
        failed_runs: s.runs.iter().filter(|r| r.exit_status != 0).count(),
    };
    Ok(Comparison {
        schema_version: COMPARE_SCHEMA_VERSION,
        base: info(base),
        new: info(new),
        threshold: p.threshold,
        alpha: p.alpha,
        lines,
        regression,
        notes,
        forced,
    })
}

fn pct(x: Option<f64>) -> String {
    match x {
        Some(x) if x.is_finite() => {
            let v = crate::text::no_negative_zero(100.0 * x);
            format!("{}{}%", if v > 0.0 { "+" } else { "" }, sig(v, 2))
        }
        _ => "n/a".to_string(),
    }
}

fn p_text(p: f64) -> String {
    if p < 0.001 {
        "<0.001".to_string()
    } else {
        format!("{p:.3}")
    }
}

fn value(x: f64, unit: &str) -> String {
    match unit {
        "J" => fmt_joules(x),
        u => format!("{} {u}", sig(x, 4)),
    }
}

fn side_cell(s: &SideStats, unit: &str) -> String {
    let v = value(s.stats.mean, unit);
    match s.stated_uncertainty {
        Some(u) => format!("{v} ±{}% (1 run)", sig(100.0 * u, 2)),
        None => format!("{v} ±{}%", sig(s.stats.ci95_pct, 2)),
    }
}

fn interval(l: &Line) -> String {
    format!("[{}, {}]", pct(l.ci_low_rel), pct(l.ci_high_rel))
}

/// The conclusion in one sentence.
pub fn headline(c: &Comparison) -> String {
    let worse: Vec<&str> = c
        .lines
        .iter()
        .filter(|l| l.gates && l.verdict == Verdict::Worse)
        .map(|l| l.name.as_str())
        .collect();
    let how = format!(
        "threshold {}%, alpha {}, p-values Holm-adjusted over {} energy figures",
        sig(100.0 * c.threshold, 2),
        c.alpha,
        c.lines.iter().filter(|l| l.gates).count()
    );
    if worse.is_empty() {
        format!("no significant energy regression ({how})")
    } else {
        format!(
            "REGRESSION: {} significantly worse ({how})",
            crate::text::escape_line(&worse.join(", "))
        )
    }
}

fn side_title(s: &SideInfo) -> String {
    format!(
        "{} ({} run{})",
        s.file,
        s.runs,
        if s.runs == 1 { "" } else { "s" }
    )
}

/// The table for people.
pub fn render_table(c: &Comparison) -> String {
    use comfy_table::{CellAlignment, Table, presets};
    let mut out = format!(
        "\n joulerun compare: {} -> {}\n\n",
        side_title(&c.base),
        side_title(&c.new)
    );
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    t.set_header(vec![
        "",
        "base",
        "new",
        "change",
        "CI of change",
        "p",
        "verdict",
    ]);
    for l in &c.lines {
        t.add_row(vec![
            crate::text::escape_line(&l.name).into_owned(),
            side_cell(&l.base, l.unit),
            side_cell(&l.new, l.unit),
            pct(l.change_rel),
            interval(l),
            p_text(l.p_adjusted),
            l.verdict.text().to_string(),
        ]);
    }
    for i in 1..6 {
        if let Some(col) = t.column_mut(i) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    for line in t.to_string().lines() {
        out.push(' ');
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let _ = writeln!(out, "\n {}", headline(c));
    for n in c
        .forced
        .iter()
        .map(|f| format!("compared anyway (--force): {f}"))
    {
        let _ = writeln!(out, " note: {}", crate::text::escape_text(&n));
    }
    for n in &c.notes {
        let _ = writeln!(out, " note: {}", crate::text::escape_text(n));
    }
    out.push('\n');
    out
}

/// The comparison as GitHub-flavoured Markdown.
pub fn render_markdown(c: &Comparison) -> String {
    let mut out = String::new();
    let verdict = if c.regression {
        "Energy regression"
    } else {
        "No energy regression"
    };
    let _ = writeln!(
        out,
        "### {verdict}: {} vs {}\n",
        code(&side_title(&c.new)),
        code(&side_title(&c.base))
    );
    let _ = writeln!(
        out,
        "| | base | new | change | {}% CI of change | p | verdict |",
        sig(100.0 * (1.0 - c.alpha), 3)
    );
    let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|---|");
    for l in &c.lines {
        let v = match l.verdict {
            Verdict::Worse | Verdict::Slower => format!("**{}**", l.verdict.text()),
            v => v.text().to_string(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {v} |",
            cell(&l.name),
            cell(&side_cell(&l.base, l.unit)),
            cell(&side_cell(&l.new, l.unit)),
            pct(l.change_rel),
            interval(l),
            cell(&p_text(l.p_adjusted)),
        );
    }
    let _ = writeln!(out, "\n{}\n", cell(&headline(c)));
    for f in &c.forced {
        let _ = writeln!(out, "> **Compared anyway (--force):** {}\n", cell(f));
    }
    for n in &c.notes {
        let _ = writeln!(out, "> **Note:** {}\n", cell(n));
    }
    out
}

/// `joulerun compare`: 0 no regression, 1 a regression, 2 a usage error.
pub fn compare(args: &CompareArgs) -> Result<i32> {
    let p = plan(args)?;
    let base = read_side(&args.base, "BASE.json")?;
    let new = read_side(&args.new, "NEW.json")?;
    let c = compare_sides(&base, &new, &p)?;
    let text = if p.json {
        let mut v = serde_json::to_vec_pretty(&c)
            .map_err(|e| Error::failure(format!("encoding the comparison: {e}")))?;
        v.push(b'\n');
        v
    } else {
        render_table(&c).into_bytes()
    };
    if let Some(m) = &p.markdown {
        crate::output::prepare(m)?
            .finish(render_markdown(&c).as_bytes(), m.flag)
            .map_err(|e| {
                Error::failure(format!(
                    "writing the Markdown comparison to {}: {e}",
                    m.dest.describe()
                ))
            })?;
    }
    // The table goes to stdout, or to stderr when `--markdown -` has stdout.
    let markdown_on_stdout = p.markdown.as_ref().is_some_and(|m| m.dest == Dest::Fd(1));
    if markdown_on_stdout && !p.json {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(&text).and_then(|_| err.flush());
    } else {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&text).and_then(|_| out.flush());
    }
    Ok(if c.regression { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic generator (xorshift64*) with normal deviates by Box–Muller.
    struct Rng(u64);

    impl Rng {
        fn uniform(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
            ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }
        fn normal(&mut self, mean: f64, sd: f64) -> f64 {
            let (u1, u2) = (self.uniform(), self.uniform());
            mean + sd * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        }
    }

    fn side(label: &str, runs: Vec<RunValues>, domains: &[(&str, &str)], estimated: bool) -> Side {
        Side {
            label: label.into(),
            input: Input {
                schema_version: 1,
                command: vec!["work".into()],
                mode: "command".into(),
                estimated,
                elapsed_s: 1.0,
                domains: domains
                    .iter()
                    .map(|(n, s)| InputDomain {
                        name: n.to_string(),
                        source: s.to_string(),
                        estimated,
                        energy_j: 0.0,
                    })
                    .collect(),
                total: InputTotal { energy_j: 0.0 },
                attribution: Some(InputAttribution {
                    command_total_j: 0.0,
                    baseline: InputBaseline {
                        used: false,
                        file: None,
                        taken_at: None,
                    },
                }),
                exit: None,
                machine: Some(InputMachine {
                    hostname: "ci".into(),
                    kernel: "6.1".into(),
                    cpu_model: "cpu".into(),
                }),
                units: Some(InputUnits {
                    energy: "J".into(),
                    power: "W".into(),
                    time: "s".into(),
                }),
                repeat: None,
                emissions: None,
                launcher: None,
            },
            runs,
        }
    }

    /// A series of `n` runs of a command of mean energy `mean` (J) with a 3% spread,
    /// on a two-socket machine (package-0 and package-1 take 60% and 40%, with their own
    /// noise; the command has 90% of the total).
    fn series(rng: &mut Rng, n: usize, mean: f64) -> Vec<RunValues> {
        (0..n)
            .map(|_| {
                let p0 = rng.normal(0.6 * mean, 0.03 * 0.6 * mean);
                let p1 = rng.normal(0.4 * mean, 0.03 * 0.4 * mean);
                let total = p0 + p1;
                RunValues {
                    elapsed_s: rng.normal(1.0, 0.02),
                    total_j: total,
                    command_j: Some(0.9 * total * rng.normal(1.0, 0.01)),
                    co2e_g: None,
                    exit_status: 0,
                    domains: vec![("package-0".into(), p0), ("package-1".into(), p1)],
                }
            })
            .collect()
    }

    fn plan() -> ComparePlan {
        ComparePlan {
            threshold: DEFAULT_THRESHOLD,
            alpha: DEFAULT_ALPHA,
            uncertainty: None,
            force: false,
            json: false,
            markdown: None,
        }
    }

    const DOMAINS: [(&str, &str); 2] = [("package-0", "powercap"), ("package-1", "powercap")];

    /// Two series of one command (10 runs each): over 2000 trials the gate fails at most
    /// alpha of the time with the threshold at 0 (the significance test alone decides,
    /// the strictest case), and far less with the default 5% threshold.
    #[test]
    fn false_alarm_rate_of_same_vs_same_is_at_most_alpha() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let trials = 2000;
        let (mut alarms_zero, mut alarms_default) = (0, 0);
        for _ in 0..trials {
            let a = side("a", series(&mut rng, 10, 100.0), &DOMAINS, false);
            let b = side("b", series(&mut rng, 10, 100.0), &DOMAINS, false);
            let mut p = plan();
            p.threshold = 0.0;
            if compare_sides(&a, &b, &p).unwrap().regression {
                alarms_zero += 1;
            }
            if compare_sides(&a, &b, &plan()).unwrap().regression {
                alarms_default += 1;
            }
        }
        let rate = alarms_zero as f64 / trials as f64;
        // One-sided regressions only count: the expected rate is at most alpha / 2 per
        // figure, Holm keeps the family at alpha; 3 standard errors of slack.
        let se = (0.05f64 * 0.95 / trials as f64).sqrt();
        assert!(rate <= 0.05 + 3.0 * se, "false alarms {rate}");
        assert!(
            alarms_default <= alarms_zero && alarms_default as f64 / trials as f64 <= 0.01,
            "{alarms_default}"
        );
    }

    /// 20% more energy in the new series is found every time, at 10 and at 5 runs.
    #[test]
    fn a_twenty_percent_rise_is_found() {
        let mut rng = Rng(42);
        for n in [10, 5] {
            for _ in 0..200 {
                let a = side("a", series(&mut rng, n, 100.0), &DOMAINS, false);
                let b = side("b", series(&mut rng, n, 120.0), &DOMAINS, false);
                let c = compare_sides(&a, &b, &plan()).unwrap();
                assert!(c.regression, "{}", render_table(&c));
                let total = c.lines.iter().find(|l| l.name == "total").unwrap();
                assert_eq!(total.verdict, Verdict::Worse);
                assert_eq!(total.test, Test::Welch);
                let r = total.change_rel.unwrap();
                assert!((0.12..0.28).contains(&r), "{r}");
                assert!(total.ci_low_rel.unwrap() < r && r < total.ci_high_rel.unwrap());
                // And the other way round it is better, not a regression.
                let back = compare_sides(&b, &a, &plan()).unwrap();
                assert!(!back.regression);
                assert!(back.lines.iter().any(|l| l.verdict == Verdict::Better));
            }
        }
    }

    #[test]
    fn single_runs_use_the_stated_uncertainty() {
        let run = |total: f64| RunValues {
            elapsed_s: 1.0,
            total_j: total,
            command_j: Some(total),
            co2e_g: None,
            exit_status: 0,
            domains: vec![("package-0".into(), total)],
        };
        let d = [("package-0", "powercap")];
        let a = side("a", vec![run(100.0)], &d, false);
        // 3% more: within RAPL's stated 5% (two runs: z = 3 / sqrt(2 * 2.5²) = 0.85).
        let c = compare_sides(&a, &side("b", vec![run(103.0)], &d, false), &plan()).unwrap();
        assert!(!c.regression);
        assert!(c.lines.iter().all(|l| l.test == Test::StatedUncertainty));
        assert!(c.notes.iter().any(|n| n.contains("single run")));
        // 20% more: beyond it.
        let c = compare_sides(&a, &side("b", vec![run(120.0)], &d, false), &plan()).unwrap();
        assert!(c.regression, "{}", render_table(&c));
        assert_eq!(c.lines[0].df, None);
    }

    #[test]
    fn refuses_other_machines_sources_and_units_unless_forced() {
        let mut rng = Rng(7);
        let a = side("a", series(&mut rng, 5, 100.0), &DOMAINS, false);
        let mut b = side("b", series(&mut rng, 5, 100.0), &DOMAINS, false);
        b.input.machine.as_mut().unwrap().hostname = "other".into();
        let e = compare_sides(&a, &b, &plan()).unwrap_err();
        assert_eq!(e.code, 2);
        assert!(
            e.message.contains("two machines") && e.message.contains("--force"),
            "{}",
            e.message
        );
        let mut p = plan();
        p.force = true;
        let c = compare_sides(&a, &b, &p).unwrap();
        assert_eq!(c.forced.len(), 1);

        let mut b = side(
            "b",
            series(&mut rng, 5, 100.0),
            &[("package-0", "msr"), ("package-1", "powercap")],
            false,
        );
        let e = compare_sides(&a, &b, &plan()).unwrap_err();
        assert!(e.message.contains("sources differ"), "{}", e.message);
        b.input.domains[0].source = "powercap".into();
        b.input.units.as_mut().unwrap().energy = "kWh".into();
        let e = compare_sides(&a, &b, &plan()).unwrap_err();
        assert!(e.message.contains("units"), "{}", e.message);
    }

    #[test]
    fn notes_estimates_and_differing_baselines() {
        let mut rng = Rng(9);
        let d = [("cpu (estimated)", "estimate")];
        let mut a = side("a", series(&mut rng, 5, 100.0), &d, true);
        let b = side("b", series(&mut rng, 5, 100.0), &d, true);
        a.input.attribution.as_mut().unwrap().baseline = InputBaseline {
            used: true,
            file: Some("/x/baseline.json".into()),
            taken_at: Some("2026-11-01T00:00:00Z".into()),
        };
        // The series' domains are named package-*: nothing matches "cpu (estimated)".
        let c = compare_sides(&a, &b, &plan()).unwrap();
        assert!(
            c.notes.iter().any(|n| n.starts_with("estimated")),
            "{:?}",
            c.notes
        );
        assert!(
            c.notes.iter().any(|n| n.contains("baselines differ")),
            "{:?}",
            c.notes
        );
    }

    #[test]
    fn fractions() {
        assert_eq!(parse_fraction("5%", "--threshold", 10.0).unwrap(), 0.05);
        assert_eq!(
            parse_fraction(" 2.5 % ", "--threshold", 10.0).unwrap(),
            0.025
        );
        assert_eq!(parse_fraction("0.1", "--alpha", 0.5).unwrap(), 0.1);
        for bad in ["", "x", "-1%", "nan", "60%"] {
            assert!(parse_fraction(bad, "--alpha", 0.5).is_err(), "{bad}");
        }
    }
}
