//! The resolved plan: everything the command line and the environment say, checked and
//! turned into plain values before any work starts.
//!
//! `cli.rs` only defines flags. Here each setting is taken from its flag or, failing that,
//! its environment variable (errors name whichever the value came from), combinations
//! that make no sense are refused, the outputs are checked against each other, and the
//! command is looked up in `PATH`, so that every usage error is reported before anything
//! is opened, created or started.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::baseline;
use crate::cli::{ChassisArg, CommonArgs, GpuArg, OnOffArg, RunArgs, SourceArg, TrackArg};
use crate::config::{self, Origin, Price};
use crate::error::{EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND, Error, Result};
use crate::output::{Dest, Requested};
use crate::report::Mode;
use crate::sources::estimate::CpuWatts;
use crate::sources::ipmi::{BmcTarget, IpmiOptions, Secret};
use crate::sources::{Category, DomainKind, SourceKind};

/// How the environment is read (the process environment, or a test's).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<OsString>;

/// The process environment.
pub fn process_env(k: &str) -> Option<OsString> {
    std::env::var_os(k)
}

/// Settings shared by runs, calibration and `list`.
#[derive(Clone, Debug, PartialEq)]
pub struct Common {
    pub sysfs_root: Option<PathBuf>,
    pub cpu_watts: CpuWatts,
    /// GPUs (issue 9): the NVML library and the GPUs to measure.
    pub nvml: crate::sources::nvml::NvmlOptions,
    /// Chassis through IPMI (issue 10): `--bmc` and its credentials, the tools' PATH.
    pub ipmi: IpmiOptions,
}

pub fn common(args: &CommonArgs, env: Env<'_>) -> Result<Common> {
    let sysfs_root = match &args.sysfs_root {
        Some(p) => Some(p.clone()),
        None => env("JOULERUN_SYSFS_ROOT")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
    };
    let cpu_watts = config::setting(
        args.cpu_watts.as_deref(),
        "--cpu-watts",
        "JOULERUN_CPU_WATTS",
        env,
    )?;
    Ok(Common {
        sysfs_root,
        cpu_watts: config::parse_cpu_watts(cpu_watts.as_ref())?,
        nvml: crate::sources::nvml::NvmlOptions::resolve(
            args.nvml_lib.as_deref(),
            args.gpus.as_deref(),
            env,
        )?,
        ipmi: ipmi_options(args, env)?,
    })
}

// Chassis through IPMI (issue 10)

/// The variable holding the password of `--bmc`.
pub const BMC_PASSWORD_ENV: &str = "JOULERUN_BMC_PASSWORD";

/// The longest password IPMI 2.0 takes, bytes.
pub const BMC_PASSWORD_MAX: usize = 20;

/// A host or user name handed to ipmitool as an argument: something, without spaces or
/// control characters, and not starting with `-` (ipmitool would take it for an option).
fn bmc_word(what: &str, flag: &str, v: &str) -> Result<String> {
    let bad = v.is_empty()
        || v.starts_with('-')
        || v.chars().any(|c| c.is_whitespace() || c.is_control());
    if bad {
        return Err(Error::usage(format!(
            "invalid {what} '{}' for {flag}: give a name without spaces that does not start with '-'",
            crate::text::escape_line(v)
        )));
    }
    Ok(v.to_string())
}

/// `--bmc`, `--bmc-user`, the password (`--bmc-password-file`, else
/// `JOULERUN_BMC_PASSWORD`), and `PATH` for the tools. Errors name where a value came
/// from, never the password itself.
fn ipmi_options(args: &CommonArgs, env: Env<'_>) -> Result<IpmiOptions> {
    let search_path = env("PATH").filter(|p| !p.is_empty());
    let Some(host) = &args.bmc else {
        return Ok(IpmiOptions {
            bmc: None,
            search_path,
        });
    };
    let host = bmc_word("host", "--bmc", host.trim())?;
    let user = match &args.bmc_user {
        Some(u) => Some(bmc_word("user", "--bmc-user", u)?),
        None => None,
    };
    let (password, origin) = match &args.bmc_password_file {
        Some(f) => {
            let bytes = crate::fsx::read_regular(f, 4096).map_err(|e| {
                Error::usage(format!(
                    "cannot read the BMC password file '{}' (from --bmc-password-file): {e}",
                    crate::text::escape_line(&f.display().to_string())
                ))
            })?;
            let first = bytes.split(|b| *b == b'\n').next().unwrap_or(&[]);
            let first = first.strip_suffix(b"\r").unwrap_or(first);
            (
                first.to_vec(),
                format!(
                    "the file '{}' (from --bmc-password-file)",
                    crate::text::escape_line(&f.display().to_string())
                ),
            )
        }
        None => match env(BMC_PASSWORD_ENV) {
            Some(v) => (v.as_bytes().to_vec(), BMC_PASSWORD_ENV.to_string()),
            None => {
                return Err(Error::usage(format!(
                    "--bmc {host} needs the BMC's password: set {BMC_PASSWORD_ENV}, or give --bmc-password-file FILE (never on the command line, where ps shows it)"
                )));
            }
        },
    };
    if password.is_empty() {
        return Err(Error::usage(format!(
            "the BMC password from {origin} is empty"
        )));
    }
    if password.len() > BMC_PASSWORD_MAX {
        return Err(Error::usage(format!(
            "the BMC password from {origin} is longer than the {BMC_PASSWORD_MAX} bytes IPMI 2.0 allows"
        )));
    }
    let password = String::from_utf8(password)
        .ok()
        .filter(|p| !p.contains('\0'))
        .ok_or_else(|| {
            Error::usage(format!(
                "the BMC password from {origin} is not text (UTF-8 without NUL bytes)"
            ))
        })?;
    Ok(IpmiOptions {
        bmc: Some(BmcTarget {
            host,
            user,
            password: Secret::new(password),
        }),
        search_path,
    })
}

/// `--chassis bmc` needs `--bmc`; `--bmc` needs a chassis pick that can use it.
fn check_bmc(categories: &Categories, common: &Common) -> Result<()> {
    let named = common.ipmi.bmc.is_some();
    match categories.chassis {
        Pick::Only(SourceKind::IpmiLan) if !named => Err(Error::usage(
            "--chassis bmc reads the BMC named by --bmc HOST: give --bmc",
        )),
        Pick::Only(k) if named && k != SourceKind::IpmiLan => Err(Error::usage(format!(
            "--bmc has no effect with --chassis {k}: use --chassis bmc or auto"
        ))),
        Pick::Off if named => Err(Error::usage(
            "--bmc has no effect with --chassis none: use --chassis bmc or auto",
        )),
        _ => Ok(()),
    }
}

/// Which baseline file a run reads, or a calibration writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BaselineChoice {
    /// `--no-baseline`.
    Off,
    /// Named by `--baseline` or `JOULERUN_BASELINE`: it must exist (for a run).
    Explicit { path: PathBuf, origin: Origin },
    /// The default location (`$XDG_STATE_HOME/...`, `~/.local/state/...`), if there is
    /// one: a missing or unreadable file there means "no baseline".
    Default(Option<PathBuf>),
}

impl BaselineChoice {
    pub fn path(&self) -> Option<&Path> {
        match self {
            BaselineChoice::Off => None,
            BaselineChoice::Explicit { path, .. } => Some(path),
            BaselineChoice::Default(p) => p.as_deref(),
        }
    }
}

fn baseline_choice(args: &RunArgs, env: Env<'_>) -> BaselineChoice {
    if args.no_baseline {
        return BaselineChoice::Off;
    }
    if let Some(p) = &args.baseline {
        return BaselineChoice::Explicit {
            path: p.clone(),
            origin: Origin::Flag("--baseline"),
        };
    }
    if let Some(p) = env(baseline::ENV_VAR).filter(|v| !v.is_empty()) {
        return BaselineChoice::Explicit {
            path: PathBuf::from(p),
            origin: Origin::Env(baseline::ENV_VAR),
        };
    }
    BaselineChoice::Default(baseline::path_from_env(|k| {
        if k == baseline::ENV_VAR { None } else { env(k) }
    }))
}

fn source(args: &RunArgs, env: Env<'_>) -> Result<SourceArg> {
    if let Some(s) = args.source {
        return Ok(s);
    }
    let Some(s) = config::setting(None, "--source", "JOULERUN_SOURCE", env)? else {
        return Ok(SourceArg::Auto);
    };
    use clap::ValueEnum;
    SourceArg::from_str(s.value.trim(), true).map_err(|_| {
        Error::usage(format!(
            "invalid source '{}' from {}: use auto, perf, powercap, msr or estimate",
            crate::text::escape_line(&s.value),
            s.origin
        ))
    })
}

/// Which interface a category (other than the CPU) is read through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// The first interface of the category that works here; none is fine.
    Auto,
    /// The category is not measured.
    Off,
    /// This interface, or joulerun stops before the command starts, saying why.
    Only(SourceKind),
}

/// The choice for every category but the CPU's (`--source`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Categories {
    pub gpu: Pick,
    pub chassis: Pick,
    pub battery: Pick,
    pub meters: Pick,
}

impl Default for Categories {
    fn default() -> Categories {
        Categories {
            gpu: Pick::Auto,
            chassis: Pick::Auto,
            battery: Pick::Auto,
            meters: Pick::Auto,
        }
    }
}

impl Categories {
    /// The categories and their picks, in the order they are opened.
    pub fn picks(&self) -> [(Category, Pick); 4] {
        [
            (Category::Gpu, self.gpu),
            (Category::Chassis, self.chassis),
            (Category::Battery, self.battery),
            (Category::Meter, self.meters),
        ]
    }

    /// Every category off (for tests and tools that want the CPU alone).
    pub fn none() -> Categories {
        Categories {
            gpu: Pick::Off,
            chassis: Pick::Off,
            battery: Pick::Off,
            meters: Pick::Off,
        }
    }
}

fn categories(args: &RunArgs) -> Categories {
    let on_off = |a: Option<OnOffArg>| match a {
        None | Some(OnOffArg::Auto) => Pick::Auto,
        Some(OnOffArg::None) => Pick::Off,
    };
    Categories {
        gpu: match (args.no_gpu, args.gpu) {
            (true, _) | (_, Some(GpuArg::None)) => Pick::Off,
            (_, Some(GpuArg::Nvml)) => Pick::Only(SourceKind::Nvml),
            (_, Some(GpuArg::Hwmon)) => Pick::Only(SourceKind::Hwmon),
            _ => Pick::Auto,
        },
        chassis: match args.chassis {
            Some(ChassisArg::None) => Pick::Off,
            Some(ChassisArg::Hwmon) => Pick::Only(SourceKind::Hwmon),
            // Chassis through IPMI (issue 10)
            Some(ChassisArg::Dcmi) => Pick::Only(SourceKind::Dcmi),
            Some(ChassisArg::Bmc) => Pick::Only(SourceKind::IpmiLan),
            Some(ChassisArg::Tools) => Pick::Only(SourceKind::IpmiTool),
            _ => Pick::Auto,
        },
        battery: on_off(args.battery),
        meters: on_off(args.meters),
    }
}

/// What a run measures and where its outputs go.
#[derive(Clone, Debug)]
pub struct RunPlan {
    pub mode: Mode,
    pub command: Vec<OsString>,
    pub pid: Option<i32>,
    pub source: SourceArg,
    pub categories: Categories,
    pub only: Vec<DomainKind>,
    pub interval_ms: u64,
    pub price: Price,
    pub common: Common,
    pub baseline: BaselineChoice,
    pub track: TrackArg,
    // Big process trees (issue 14)
    /// `--probe-budget PCT`, as a fraction of one core.
    pub probe_budget: f64,
    /// `-o FILE`; `None`: the report goes to stderr.
    pub report: Option<Requested>,
    pub json: Option<Requested>,
    pub csv: Option<Requested>,
    // Carbon, OpenMetrics, plots (issue 12)
    pub carbon: crate::carbon::Carbon,
    pub openmetrics: Option<Requested>,
    pub push: Option<crate::report::push::PushTarget>,
    /// The `job` label of the metrics (`--push-job`).
    pub push_job: String,
    pub plot: Option<Requested>,
    /// `--markdown FILE`.
    pub markdown: Option<Requested>,
    /// How many times the command runs (`-r`, `--warmup`, `--cooldown`, `--keep-going`).
    pub series: Series,
    /// `-I MS`: interval lines on the report stream while the command runs.
    pub interval_print_ms: Option<u64>,
    /// `-x SEP`: the report as separated records instead of the table.
    pub separator: Option<String>,
    // Launchers (issue 13)
    /// The launcher's context (Slurm, Open MPI, PMIx, PMI), when joulerun is a rank.
    pub launcher: Option<crate::launcher::Launcher>,
    /// `JOULERUN_RUNTIME_DIR`: where the ranks of a node meet (default `/dev/shm`).
    pub runtime_dir: Option<PathBuf>,
}

/// A run is a series: `warmup` unmeasured runs, then `runs` measured ones (1 without
/// `-r`), `cooldown_s` apart.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub runs: u32,
    pub warmup: u32,
    pub cooldown_s: f64,
    pub keep_going: bool,
    /// `-r` was given (the report shows the series' statistics, even for `-r 1`).
    pub repeated: bool,
}

impl Default for Series {
    fn default() -> Series {
        Series {
            runs: 1,
            warmup: 0,
            cooldown_s: 0.0,
            keep_going: false,
            repeated: false,
        }
    }
}

/// Most runs `-r` accepts.
pub const MAX_REPEAT: u32 = 100_000;
/// Longest `--cooldown`, s.
pub const MAX_COOLDOWN_S: f64 = 3600.0;
/// Shortest `-I` period, ms: below it the lines would be mostly noise and their printing
/// would cost more than the sampling.
pub const MIN_INTERVAL_PRINT_MS: u64 = 10;
/// Longest `-I` period, ms (an hour).
pub const MAX_INTERVAL_PRINT_MS: u64 = 3_600_000;

fn series(args: &RunArgs, mode: Mode, has_command: bool) -> Result<Series> {
    let runs = args.repeat.unwrap_or(1);
    if runs == 0 || runs > MAX_REPEAT {
        return Err(Error::usage(format!(
            "invalid -r/--repeat {runs}: give a number of runs from 1 to {MAX_REPEAT}"
        )));
    }
    let warmup = args.warmup.unwrap_or(0);
    if warmup > MAX_REPEAT {
        return Err(Error::usage(format!(
            "invalid --warmup {warmup}: give a number of runs from 0 to {MAX_REPEAT}"
        )));
    }
    let cooldown_s = args.cooldown.unwrap_or(0.0);
    if !(cooldown_s.is_finite() && (0.0..=MAX_COOLDOWN_S).contains(&cooldown_s)) {
        return Err(Error::usage(format!(
            "invalid --cooldown {cooldown_s}: give seconds from 0 to {MAX_COOLDOWN_S}"
        )));
    }
    let repeated = args.repeat.is_some() || args.warmup.is_some();
    if repeated {
        let flag = if args.repeat.is_some() {
            "-r/--repeat"
        } else {
            "--warmup"
        };
        match mode {
            Mode::Pid => {
                return Err(Error::usage(format!(
                    "{flag} cannot be used with -p: an attached process runs once and cannot be started again"
                )));
            }
            Mode::All if !has_command => {
                return Err(Error::usage(format!(
                    "{flag} needs a command to run again: -a without a command measures until Ctrl-C, once"
                )));
            }
            _ => {}
        }
    }
    let total = u64::from(runs) + u64::from(warmup);
    if total == 1 {
        if args.cooldown.is_some() {
            return Err(Error::usage(
                "--cooldown waits between runs, and there is only one: add -r N (or --warmup K)",
            ));
        }
        if args.keep_going {
            return Err(Error::usage(
                "--keep-going goes on after a failed run, and there is only one: add -r N",
            ));
        }
    }
    Ok(Series {
        runs,
        warmup,
        cooldown_s,
        keep_going: args.keep_going,
        repeated,
    })
}

/// The `-x` separator: any text but an empty one, a newline or a double quote (which
/// quotes fields); `\t` is a tab.
pub fn separator(sep: &str) -> Result<String> {
    let sep = if sep == "\\t" { "\t" } else { sep };
    if sep.is_empty() || sep.contains(['\n', '\r', '"']) {
        return Err(Error::usage(format!(
            "invalid -x/--field-separator '{}': give a separator such as ',' ';' or '\\t' (not empty, no newline or double quote)",
            crate::text::escape_line(sep)
        )));
    }
    Ok(sep.to_string())
}

/// The sampling interval and the `-I` period: `-I` shorter than `-i` is refused (its
/// lines could not be that often); without `-i`, the interval is at most the period.
// Big process trees (issue 14)
/// `--probe-budget PCT` (percent of one core, above 0 and at most 100) as a fraction;
/// the default without it.
fn probe_budget(arg: Option<&str>) -> Result<f64> {
    let Some(text) = arg else {
        return Ok(crate::sampler::TREE_PROBE_BUDGET);
    };
    let t = text.trim().trim_end_matches('%').trim_end();
    match t.parse::<f64>() {
        Ok(p) if p.is_finite() && p > 0.0 && p <= 100.0 => Ok(p / 100.0),
        _ => Err(Error::usage(format!(
            "invalid --probe-budget '{}': give a percentage of one core above 0 and at most 100, e.g. 0.5",
            crate::text::escape_line(text)
        ))),
    }
}

fn intervals(args: &RunArgs) -> Result<(u64, Option<u64>)> {
    let print = match args.interval_print {
        None => None,
        Some(ms) if (MIN_INTERVAL_PRINT_MS..=MAX_INTERVAL_PRINT_MS).contains(&ms) => Some(ms),
        Some(ms) => {
            return Err(Error::usage(format!(
                "invalid -I/--interval-print {ms}: give milliseconds from {MIN_INTERVAL_PRINT_MS} to {MAX_INTERVAL_PRINT_MS}"
            )));
        }
    };
    let interval = match (args.interval, print) {
        (Some(i), _) => config::parse_interval(i)?,
        (None, Some(p)) => p.min(config::DEFAULT_INTERVAL_MS),
        (None, None) => config::DEFAULT_INTERVAL_MS,
    };
    if let Some(p) = print
        && p < interval
    {
        return Err(Error::usage(format!(
            "-I {p} is shorter than the sampling interval -i {interval}: lines cannot come more often than samples; give -i {p} or less, or a longer -I"
        )));
    }
    Ok((interval, print))
}

fn requested(flag: &'static str, what: &'static str, p: &Option<PathBuf>) -> Option<Requested> {
    p.as_ref().map(|p| Requested {
        flag,
        what,
        dest: Dest::parse(p),
    })
}

/// Resolve a run (`joulerun [OPTIONS] -- CMD`, `-p`, `-a`).
pub fn run(args: &RunArgs, command: &[OsString], env: Env<'_>) -> Result<RunPlan> {
    let mode = if args.pid.is_some() {
        Mode::Pid
    } else if args.all {
        Mode::All
    } else {
        Mode::Command
    };
    if mode == Mode::Command && command.is_empty() {
        return Err(Error::usage(
            "no command given: try `joulerun -- sleep 1`, `joulerun -a` for the whole machine, or `joulerun --help`",
        ));
    }
    if mode == Mode::Pid && !command.is_empty() {
        return Err(Error::usage(
            "-p/--pid attaches to a running process: give no command with it",
        ));
    }
    if args.duration.is_some() || args.force {
        return Err(Error::usage(
            "--duration and --force only apply to --basepower",
        ));
    }
    let price = config::parse_price(
        config::setting(args.price.as_deref(), "--price", "JOULERUN_PRICE", env)?.as_ref(),
        config::setting(
            args.currency.as_deref(),
            "--currency",
            "JOULERUN_CURRENCY",
            env,
        )?
        .as_ref(),
    )?;
    let (interval_ms, interval_print_ms) = intervals(args)?;
    let plan = RunPlan {
        mode,
        command: command.to_vec(),
        pid: args.pid,
        source: source(args, env)?,
        categories: categories(args),
        only: config::parse_domains(&args.domains)?,
        interval_ms,
        price,
        common: common(&args.common, env)?,
        baseline: baseline_choice(args, env),
        track: args.track.unwrap_or(TrackArg::Auto),
        // Big process trees (issue 14)
        probe_budget: probe_budget(args.probe_budget.as_deref())?,
        report: requested("-o", "the report", &args.output),
        json: requested("--json", "the JSON summary", &args.json),
        csv: requested("--csv", "the CSV timeline", &args.csv),
        // Carbon, OpenMetrics, plots (issue 12)
        carbon: crate::carbon::resolve(
            &crate::carbon::CarbonSettings {
                intensity_flag: args.carbon_intensity.clone(),
                region_flag: args.region.clone(),
                pue_flag: args.pue.clone(),
            },
            env,
        )?,
        openmetrics: requested("--openmetrics", "the metrics", &args.openmetrics),
        push: args
            .push
            .as_deref()
            .map(crate::report::push::PushTarget::parse)
            .transpose()?,
        push_job: crate::report::openmetrics::parse_job(args.push_job.as_deref())?,
        plot: requested("--plot", "the plot", &args.plot),
        markdown: requested("--markdown", "the Markdown summary", &args.markdown),
        series: series(args, mode, !command.is_empty())?,
        interval_print_ms,
        separator: args.field_separator.as_deref().map(separator).transpose()?,
        // Launchers (issue 13)
        launcher: crate::launcher::Launcher::detect(env)?,
        runtime_dir: env("JOULERUN_RUNTIME_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
    };
    check_bmc(&plan.categories, &plan.common)?;
    let mut plan = plan;
    crate::launcher::resolve_outputs(&mut plan)?;
    if mode == Mode::Pid && args.track.is_some() {
        return Err(Error::usage(
            "--track has no effect with -p: an attached process is always followed through /proc",
        ));
    }
    // Big process trees (issue 14)
    if mode == Mode::All && args.probe_budget.is_some() {
        return Err(Error::usage(
            "--probe-budget has no effect with -a: the whole machine is measured, no process tree",
        ));
    }
    if mode == Mode::All && args.track.is_some() {
        return Err(Error::usage(
            "--track has no effect with -a: the whole machine is measured, no process tree",
        ));
    }
    let mut outs: Vec<Requested> = [
        &plan.report,
        &plan.json,
        &plan.csv,
        &plan.markdown,
        &plan.openmetrics,
        &plan.plot,
    ]
    .into_iter()
    .flatten()
    .cloned()
    .collect();
    // The report goes to stderr unless -o says otherwise: nothing else may go there.
    if plan.report.is_none() && !crate::output::stderr_closed_at_start() {
        outs.push(Requested {
            flag: "the report (stderr)",
            what: "the report",
            dest: Dest::Fd(2),
        });
    }
    let reserved: Vec<(&Path, &str)> = plan
        .baseline
        .path()
        .map(|p| (p, "the baseline file this run reads"))
        .into_iter()
        .collect();
    crate::output::check(&outs, &reserved)?;
    if let Some(prog) = plan.command.first() {
        resolve_command(prog, env)?;
    }
    Ok(plan)
}

/// What `--basepower` does.
#[derive(Clone, Debug)]
pub struct CalibratePlan {
    pub duration_s: f64,
    pub force: bool,
    pub source: SourceArg,
    pub categories: Categories,
    pub only: Vec<DomainKind>,
    pub interval_ms: u64,
    pub common: Common,
    /// Where the baseline is written.
    pub path: PathBuf,
    /// `-o FILE`; `None`: stderr.
    pub report: Option<Requested>,
}

/// Shortest and longest calibration accepted, seconds.
pub const MIN_CALIBRATION_S: f64 = 1.0;
pub const MAX_CALIBRATION_S: f64 = 3600.0;
pub const DEFAULT_CALIBRATION_S: f64 = 10.0;

/// Resolve `joulerun --basepower`. Options that only make sense for a run are refused,
/// not silently ignored.
pub fn calibrate(args: &RunArgs, command: &[OsString], env: Env<'_>) -> Result<CalibratePlan> {
    if !command.is_empty() {
        return Err(Error::usage(format!(
            "--basepower measures the idle machine and runs no command: remove '{}' (or drop --basepower to measure the command)",
            crate::text::escape_line(&shell_words(command))
        )));
    }
    let refuse = |flag: &str, why: &str| {
        Err(Error::usage(format!(
            "{flag} cannot be used with --basepower: {why}"
        )))
    };
    if args.no_baseline {
        return refuse(
            "--no-baseline",
            "calibration writes a baseline (give --baseline FILE to choose where)",
        );
    }
    if args.pid.is_some() || args.all {
        return refuse(
            if args.all { "-a" } else { "-p" },
            "calibration measures the idle machine on its own",
        );
    }
    for (given, flag) in [
        (args.json.is_some(), "--json"),
        (args.csv.is_some(), "--csv"),
        (args.track.is_some(), "--track"),
        (args.probe_budget.is_some(), "--probe-budget"),
        (args.price.is_some(), "--price"),
        (args.currency.is_some(), "--currency"),
        // Carbon, OpenMetrics, plots (issue 12)
        (args.carbon_intensity.is_some(), "--carbon-intensity"),
        (args.region.is_some(), "--region"),
        (args.pue.is_some(), "--pue"),
        (args.openmetrics.is_some(), "--openmetrics"),
        (args.push.is_some(), "--push"),
        (args.push_job.is_some(), "--push-job"),
        (args.plot.is_some(), "--plot"),
        (args.repeat.is_some(), "-r/--repeat"),
        (args.warmup.is_some(), "--warmup"),
        (args.cooldown.is_some(), "--cooldown"),
        (args.keep_going, "--keep-going"),
        (args.interval_print.is_some(), "-I/--interval-print"),
        (args.field_separator.is_some(), "-x/--field-separator"),
        (args.markdown.is_some(), "--markdown"),
    ] {
        if given {
            return refuse(flag, "it only applies to a measured run");
        }
    }
    let d = args.duration.unwrap_or(DEFAULT_CALIBRATION_S);
    if !(d.is_finite() && (MIN_CALIBRATION_S..=MAX_CALIBRATION_S).contains(&d)) {
        return Err(Error::usage(format!(
            "invalid --duration {d}: give seconds between {MIN_CALIBRATION_S} and {MAX_CALIBRATION_S} (the default is 10)"
        )));
    }
    let path = match baseline_choice(args, env) {
        BaselineChoice::Explicit { path, .. } => path,
        BaselineChoice::Default(Some(p)) => p,
        BaselineChoice::Default(None) | BaselineChoice::Off => {
            return Err(Error::usage(
                "no place to store the baseline: HOME and XDG_STATE_HOME are unset; give --baseline FILE or set JOULERUN_BASELINE",
            ));
        }
    };
    let report = requested("-o", "the calibration report", &args.output);
    if let Some(r) = &report {
        crate::output::check(
            std::slice::from_ref(r),
            &[(&path, "where the baseline is written")],
        )?;
    }
    let plan = CalibratePlan {
        duration_s: d,
        force: args.force,
        source: source(args, env)?,
        categories: categories(args),
        only: config::parse_domains(&args.domains)?,
        interval_ms: config::parse_interval(args.interval.unwrap_or(config::DEFAULT_INTERVAL_MS))?,
        common: common(&args.common, env)?,
        path,
        report,
    };
    check_bmc(&plan.categories, &plan.common)?;
    Ok(plan)
}

/// The command line as one shell-like string.
pub fn shell_words(argv: &[OsString]) -> String {
    argv.iter()
        .map(|a| {
            let a = a.to_string_lossy();
            if a.is_empty()
                || a.chars()
                    .any(|c| c.is_whitespace() || "'\"$`\\;&|<>*?()[]{}#~".contains(c))
            {
                format!("'{}'", a.replace('\'', "'\\''"))
            } else {
                a.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn is_executable_file(p: &Path) -> std::result::Result<bool, std::io::Error> {
    let m = std::fs::metadata(p)?;
    Ok(m.is_file() && m.permissions().mode() & 0o111 != 0 && access_x(p))
}

fn access_x(p: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::X_OK) == 0 }
}

/// The hint added when the command is named `list`: options given before the subcommand
/// make clap take `list` for the command to run.
fn list_hint(prog: &OsStr) -> &'static str {
    if prog == "list" {
        "\n  (to list energy interfaces, give options after the subcommand: `joulerun list --sysfs-root DIR`)"
    } else {
        ""
    }
}

/// Find the program the way `execvp` will: a name with a slash is a path; otherwise the
/// first executable regular file of that name in `PATH`. Not found: 127; found but not
/// executable (a directory, no execute permission): 126. Messages say which and what to do.
pub fn resolve_command(prog: &OsStr, env: Env<'_>) -> Result<PathBuf> {
    let name = crate::text::escape_line(&prog.to_string_lossy()).into_owned();
    let hint = list_hint(prog);
    if prog.is_empty() {
        return Err(Error::with_code(
            "command not found: '' (the command name is empty)",
            EXIT_NOT_FOUND,
        ));
    }
    let not_executable = |p: &Path, why: &str| {
        Error::with_code(
            format!(
                "cannot execute '{}': {why}{hint}",
                crate::text::escape_line(&p.display().to_string())
            ),
            EXIT_CANNOT_EXECUTE,
        )
    };
    if prog.as_bytes().contains(&b'/') {
        let p = PathBuf::from(prog);
        return match std::fs::metadata(&p) {
            Err(_) => Err(Error::with_code(
                format!("command not found: '{name}' (check the path){hint}"),
                EXIT_NOT_FOUND,
            )),
            Ok(m) if m.is_dir() => Err(not_executable(&p, "it is a directory")),
            Ok(_) if !is_executable_file(&p).unwrap_or(false) => Err(not_executable(
                &p,
                &format!(
                    "permission denied (a file without execute permission? try chmod +x '{name}')"
                ),
            )),
            Ok(_) => Ok(p),
        };
    }
    let path = env("PATH")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
    let mut denied: Option<PathBuf> = None;
    for dir in path.as_bytes().split(|b| *b == b':') {
        let dir = if dir.is_empty() {
            Path::new(".")
        } else {
            Path::new(OsStr::from_bytes(dir))
        };
        let cand = dir.join(prog);
        match std::fs::metadata(&cand) {
            Ok(m) if m.is_file() => {
                if is_executable_file(&cand).unwrap_or(false) {
                    return Ok(cand);
                }
                denied.get_or_insert(cand);
            }
            _ => {}
        }
    }
    match denied {
        Some(p) => Err(not_executable(
            &p,
            "permission denied (found in PATH, but without execute permission)",
        )),
        None => Err(Error::with_code(
            format!(
                "command not found: '{name}' (check the spelling, or give its path; it was looked up in PATH){hint}"
            ),
            EXIT_NOT_FOUND,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> crate::cli::Cli {
        crate::cli::Cli::try_parse_from(std::iter::once("joulerun").chain(args.iter().copied()))
            .unwrap()
    }

    fn no_env(_: &str) -> Option<OsString> {
        None
    }

    // Big process trees (issue 14)
    #[test]
    fn probe_budget_is_a_percentage_of_one_core() {
        assert_eq!(
            probe_budget(None).unwrap(),
            crate::sampler::TREE_PROBE_BUDGET
        );
        assert_eq!(probe_budget(Some("2")).unwrap(), 0.02);
        assert_eq!(probe_budget(Some("0.5%")).unwrap(), 0.005);
        assert_eq!(probe_budget(Some("100")).unwrap(), 1.0);
        for bad in ["0", "-1", "101", "NaN", "inf", "x", "", "1\n2"] {
            let e = probe_budget(Some(bad)).unwrap_err();
            assert_eq!(e.code, 2, "{bad}");
            assert!(
                e.message.contains("invalid --probe-budget"),
                "{}",
                e.message
            );
            assert!(!e.message.contains('\n'), "{}", e.message);
        }
    }

    #[test]
    fn environment_errors_name_the_variable() {
        let cli = parse(&["--", "true"]);
        let env = |k: &str| (k == "JOULERUN_SOURCE").then(|| OsString::from("bogus"));
        let e = run(&cli.run, &cli.command, &env).unwrap_err();
        assert_eq!(e.code, 2);
        assert!(
            e.message
                .starts_with("invalid source 'bogus' from JOULERUN_SOURCE"),
            "{}",
            e.message
        );
        let env = |k: &str| (k == "JOULERUN_PRICE").then(|| OsString::from("free"));
        let e = run(&cli.run, &cli.command, &env).unwrap_err();
        assert!(
            e.message
                .starts_with("invalid price 'free' from JOULERUN_PRICE"),
            "{}",
            e.message
        );
        let env = |k: &str| (k == "JOULERUN_CPU_WATTS").then(|| OsString::from("7"));
        let e = run(&cli.run, &cli.command, &env).unwrap_err();
        assert!(
            e.message.starts_with("invalid JOULERUN_CPU_WATTS"),
            "{}",
            e.message
        );
        // The flag wins over the variable.
        let cli = parse(&["--source", "estimate", "--", "true"]);
        let env = |k: &str| (k == "JOULERUN_SOURCE").then(|| OsString::from("bogus"));
        assert_eq!(
            run(&cli.run, &cli.command, &env).unwrap().source,
            SourceArg::Estimate
        );
    }

    #[test]
    fn baseline_from_flag_variable_or_default() {
        let cli = parse(&["--", "true"]);
        let env = |k: &str| match k {
            "JOULERUN_BASELINE" => Some(OsString::from("/x/b.json")),
            "HOME" => Some(OsString::from("/home/u")),
            _ => None,
        };
        let p = run(&cli.run, &cli.command, &env).unwrap();
        assert_eq!(
            p.baseline,
            BaselineChoice::Explicit {
                path: "/x/b.json".into(),
                origin: Origin::Env("JOULERUN_BASELINE")
            }
        );
        let env = |k: &str| (k == "HOME").then(|| OsString::from("/home/u"));
        let p = run(&cli.run, &cli.command, &env).unwrap();
        assert_eq!(
            p.baseline,
            BaselineChoice::Default(Some("/home/u/.local/state/joulerun/baseline.json".into()))
        );
        let cli = parse(&["--no-baseline", "--", "true"]);
        assert_eq!(
            run(&cli.run, &cli.command, &env).unwrap().baseline,
            BaselineChoice::Off
        );
    }

    #[test]
    fn calibration_refuses_what_it_would_ignore() {
        for (args, needle) in [
            (vec!["--basepower", "--", "sleep", "1"], "runs no command"),
            (
                vec!["--basepower", "--no-baseline"],
                "--no-baseline cannot be used",
            ),
            (vec!["--basepower", "--json", "x"], "--json cannot be used"),
            (vec!["--basepower", "-p", "1"], "-p cannot be used"),
            (
                vec!["--basepower", "--duration", "0.5"],
                "invalid --duration",
            ),
        ] {
            let cli = parse(&args);
            let e = calibrate(&cli.run, &cli.command, &no_env).unwrap_err();
            assert_eq!(e.code, 2, "{args:?}");
            assert!(e.message.contains(needle), "{args:?}: {}", e.message);
        }
        let cli = parse(&[
            "--basepower",
            "--baseline",
            "/tmp/b.json",
            "--duration",
            "2",
        ]);
        let p = calibrate(&cli.run, &cli.command, &no_env).unwrap();
        assert_eq!(
            (p.duration_s, p.path.as_path()),
            (2.0, Path::new("/tmp/b.json"))
        );
    }

    #[test]
    fn commands_are_resolved_like_execvp() {
        let t = tempfile::tempdir().unwrap();
        let exe = t.path().join("tool");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let plain = t.path().join("plain");
        std::fs::write(&plain, "x").unwrap();
        let dir = t.path().to_path_buf();
        let env = move |k: &str| (k == "PATH").then(|| dir.clone().into_os_string());
        assert_eq!(resolve_command(OsStr::new("tool"), &env).unwrap(), exe);
        assert_eq!(
            resolve_command(OsStr::new("nope"), &env).unwrap_err().code,
            127
        );
        assert_eq!(
            resolve_command(OsStr::new("plain"), &env).unwrap_err().code,
            126
        );
        let e = resolve_command(t.path().as_os_str(), &env).unwrap_err();
        assert_eq!(e.code, 126);
        assert!(e.message.contains("directory"), "{}", e.message);
        let e = resolve_command(OsStr::new("./no/such"), &env).unwrap_err();
        assert_eq!(e.code, 127);
        let e = resolve_command(OsStr::new("list"), &env).unwrap_err();
        assert!(
            e.message.contains("options after the subcommand"),
            "{}",
            e.message
        );
        let e = resolve_command(OsStr::new("a\x1b[2Jb"), &env).unwrap_err();
        assert!(e.message.contains("a\\x1b[2Jb"), "{}", e.message);
    }

    #[test]
    fn shell_words_quote_what_a_shell_would_split() {
        let v: Vec<OsString> = ["sh", "-c", "a b", "it's", ""]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(shell_words(&v), "sh -c 'a b' 'it'\\''s' ''");
    }

    // Chassis through IPMI (issue 10)
    #[test]
    fn bmc_credentials_come_from_a_file_or_the_variable_never_printed() {
        let cli = parse(&["--bmc", "bmc1", "--bmc-user", "admin", "--", "true"]);
        let env = |k: &str| (k == BMC_PASSWORD_ENV).then(|| OsString::from("pw-from-env"));
        let p = run(&cli.run, &cli.command, &env).unwrap();
        let t = p.common.ipmi.bmc.clone().unwrap();
        assert_eq!(
            (t.host.as_str(), t.user.as_deref()),
            ("bmc1", Some("admin"))
        );
        assert_eq!(t.password.expose(), "pw-from-env");
        assert!(!format!("{p:?}").contains("pw-from-env"));
        // The file wins over the variable; its first line only, without CR LF.
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "pw-from-file\r\nsecond line\n").unwrap();
        let cli = parse(&[
            "--bmc",
            "bmc1",
            "--bmc-password-file",
            f.to_str().unwrap(),
            "--",
            "true",
        ]);
        let p = run(&cli.run, &cli.command, &env).unwrap();
        assert_eq!(p.common.ipmi.bmc.unwrap().password.expose(), "pw-from-file");
        // Errors name the origin, never the password.
        std::fs::write(&f, "\n").unwrap();
        let e = run(&cli.run, &cli.command, &env).unwrap_err();
        assert!(
            e.message.contains("(from --bmc-password-file) is empty"),
            "{}",
            e.message
        );
        let long =
            |k: &str| (k == BMC_PASSWORD_ENV).then(|| OsString::from("abcdefghijklmnopqrstuvwxyz"));
        let cli = parse(&["--bmc", "bmc1", "--", "true"]);
        let e = run(&cli.run, &cli.command, &long).unwrap_err();
        assert!(
            e.message.contains("JOULERUN_BMC_PASSWORD is longer"),
            "{}",
            e.message
        );
        assert!(!e.message.contains("abcdef"));
        // --bmc only with a chassis pick that can read it; --chassis bmc needs --bmc.
        for (args, needle) in [
            (
                vec!["--bmc", "h", "--chassis", "none", "--", "true"],
                "no effect",
            ),
            (vec!["--chassis", "bmc", "--", "true"], "give --bmc"),
            (vec!["--bmc", "h h", "--", "true"], "invalid host"),
            (
                vec!["--bmc", "h", "--bmc-user=-x", "--", "true"],
                "invalid user",
            ),
        ] {
            let cli = crate::cli::Cli::try_parse_from(
                std::iter::once("joulerun").chain(args.iter().copied()),
            )
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let e = run(&cli.run, &cli.command, &env).unwrap_err();
            assert_eq!(e.code, 2, "{args:?}");
            assert!(e.message.contains(needle), "{args:?}: {}", e.message);
        }
        // Without --bmc nothing is asked; PATH is kept for the tools.
        let path = |k: &str| (k == "PATH").then(|| OsString::from("/opt/ipmi/bin"));
        let cli = parse(&["--", "/bin/true"]);
        let p = run(&cli.run, &cli.command, &path).unwrap();
        assert_eq!(p.common.ipmi.bmc, None);
        assert_eq!(
            p.common.ipmi.search_path,
            Some(OsString::from("/opt/ipmi/bin"))
        );
    }
}
