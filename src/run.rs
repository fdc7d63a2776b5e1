//! One measured run: open sources and sinks, start (or attach to) the workload, tick
//! until it ends, fold everything into a `Summary`, write the reports.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::unistd::Pid;

use crate::attribution::{Attributor, NO_BASELINE_NOTE, TickInput};
use crate::baseline::{self, Baseline, Fit, MachineIdentity};
use crate::cli::{RunArgs, SourceArg, TrackArg};
use crate::config::{self, Price};
use crate::error::{Error, Result};
use crate::procs::{self, MachineCpu, MachineCpuSample, TrackRequest, TreeCpu, TreeTracker};
use crate::report::csv::CsvSink;
use crate::report::{
    self, AttributionReport, BaselineStatus, Cost, DomainSummary, ExitInfo, J_PER_KWH, Mode,
    Overhead, SUMMARY_SCHEMA_VERSION, Summary, Total,
};
use crate::sampler::Sampler;
use crate::sources::{self, OpenContext, Source, SourceKind, UnavailableKind};
use crate::sysroot::SysRoot;
use crate::workload::{self, Exit, Signals};

/// Build the context every source opens from.
pub fn open_context(sysfs_root: Option<&Path>, cpu_watts: Option<&str>) -> Result<OpenContext> {
    let root = match sysfs_root {
        Some(p) => SysRoot::new(p),
        None => SysRoot::default(),
    };
    if !root.root().is_dir() {
        return Err(Error::usage(format!(
            "--sysfs-root (or JOULERUN_SYSFS_ROOT) '{}' is not a directory",
            root.root().display()
        )));
    }
    Ok(OpenContext {
        cpu_watts: config::parse_cpu_watts(cpu_watts)?,
        ..OpenContext::for_root(root)
    })
}

fn source_kind(arg: SourceArg) -> Option<SourceKind> {
    match arg {
        SourceArg::Auto => None,
        SourceArg::Powercap => Some(SourceKind::Powercap),
        SourceArg::Perf => Some(SourceKind::Perf),
        SourceArg::Msr => Some(SourceKind::Msr),
        SourceArg::Estimate => Some(SourceKind::Estimate),
    }
}

/// Open the CPU energy interface: the one asked for, or for `auto` the first that works
/// in `SourceKind::AUTO_ORDER`, falling back to the estimate. Returns the source and the
/// warnings to show (interfaces that exist but could not be used).
pub fn open_cpu_source(
    arg: SourceArg,
    ctx: &OpenContext,
) -> Result<(Box<dyn Source>, Vec<String>)> {
    if let Some(kind) = source_kind(arg) {
        return sources::open(kind, ctx)
            .map(|s| (s, Vec::new()))
            .map_err(|u| {
                Error::failure(format!(
                    "cannot use --source {kind}: {}\n  fix: {}\n  (`joulerun list` shows every interface; `--source auto` falls back to an estimate)",
                    u.reason,
                    u.fix.as_deref().unwrap_or("none known")
                ))
            });
    }
    let mut warnings = Vec::new();
    for kind in SourceKind::AUTO_ORDER {
        match sources::open(kind, ctx) {
            Ok(s) => {
                if kind == SourceKind::Estimate {
                    warnings.push(
                        "no energy counter could be read on this machine: the numbers are an estimate from CPU utilisation (`joulerun list` says why)".to_string(),
                    );
                }
                return Ok((s, warnings));
            }
            Err(u) => {
                // Interfaces that exist but fail are worth a warning; absent ones are not.
                if matches!(
                    u.kind,
                    UnavailableKind::Permission | UnavailableKind::Invalid
                ) {
                    warnings.push(u.explain());
                }
            }
        }
    }
    Err(Error::failure(
        "no energy source could be opened, not even the estimate (is /proc mounted?)",
    ))
}

/// What runs and calibration share: the settings, the hardware context, the CPU energy
/// source in a sampler, and the warnings from opening it.
pub(crate) struct Prepared {
    pub ctx: OpenContext,
    pub sampler: Sampler,
    pub warnings: Vec<String>,
    pub interval_ms: u64,
}

/// Parse the interval and domains, open the source (`--source`, or `auto`) and put it in
/// a sampler. An `-e` that leaves no domain is an error.
pub(crate) fn prepare_sampler(args: &RunArgs) -> Result<Prepared> {
    let interval_ms = config::parse_interval(args.interval)?;
    let only = config::parse_domains(&args.domains)?;
    let ctx = open_context(
        args.common.sysfs_root.as_deref(),
        args.common.cpu_watts.as_deref(),
    )?;
    let (source, mut warnings) = open_cpu_source(args.source, &ctx)?;
    warnings.extend(source.warnings().iter().cloned());
    let sampler = Sampler::new(vec![source], &only);
    if sampler.domains().is_empty() {
        return Err(Error::failure(format!(
            "-e/--domains {} matches no domain of this machine's energy interface (`joulerun list` shows them)",
            args.domains.join(",")
        )));
    }
    Ok(Prepared {
        ctx,
        sampler,
        warnings,
        interval_ms,
    })
}

/// An output named on the command line: a file, or stdout for `-`.
fn open_output(path: &Path, what: &str) -> Result<Box<dyn Write>> {
    if path == Path::new("-") {
        return Ok(Box::new(io::stdout()));
    }
    File::create(path)
        .map(|f| Box::new(BufWriter::new(f)) as Box<dyn Write>)
        .map_err(|e| {
            Error::failure(format!(
                "cannot write the {what} to '{}': {e} (check the directory exists and is writable)",
                path.display()
            ))
        })
}

struct Outputs {
    report: Option<(PathBuf, Box<dyn Write>)>,
    json: Option<(PathBuf, Box<dyn Write>)>,
    csv: Option<(PathBuf, CsvSink)>,
}

/// What the sampling loop waits for.
pub(crate) enum Workload {
    /// The command joulerun started.
    Child { pid: Pid },
    /// A process joulerun attached to (`-p`); a pidfd when the kernel has pidfd_open.
    Attached { pid: i32, pidfd: Option<OwnedFd> },
    /// Nothing: run until this many seconds have passed (calibration).
    Timer { until_s: f64 },
    /// Nothing: run until SIGINT/SIGTERM/SIGHUP (`-a` without a command).
    UntilSignal,
}

/// Why the sampling loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The command exited (and was reaped).
    Exited(Exit),
    /// The attached process is gone.
    ProcessGone,
    /// A stop signal arrived while no command of ours was running.
    Stopped,
    /// The timer ran out.
    Deadline,
}

/// The sampling loop: a tick every `interval` on a monotonic schedule (late ticks are
/// skipped, never bunched), signals read from the signalfd between ticks, and a final
/// tick right after the workload ends. `on_tick` sees the sampler after every tick.
pub(crate) fn drive(
    sampler: &mut Sampler,
    signals: &mut Signals,
    workload: &Workload,
    interval: Duration,
    mut on_tick: impl FnMut(&Sampler, f64),
) -> Ended {
    let step = interval.as_secs_f64();
    let mut next_tick = step;
    let target = match workload {
        Workload::Child { pid } => Some(*pid),
        _ => None,
    };
    let mut fds: Vec<RawFd> = vec![signals.fd()];
    if let Workload::Attached {
        pidfd: Some(fd), ..
    } = workload
    {
        fds.push(fd.as_raw_fd());
    }
    let mut ready = [false; 2];
    loop {
        let mut ended = None;
        let now = sampler.now_s();
        if let Workload::Timer { until_s } = workload {
            next_tick = next_tick.min(*until_s);
            if now >= *until_s {
                ended = Some(Ended::Deadline);
            }
        }
        if ended.is_none() && now < next_tick {
            workload::wait_readable(&fds, Duration::from_secs_f64(next_tick - now), &mut ready);
            if ready[0] {
                let ev = signals.drain(target);
                if ev.child
                    && let Some(e) = workload::reap(target)
                {
                    ended = Some(Ended::Exited(e));
                }
                if ev.stop && target.is_none() {
                    ended = Some(Ended::Stopped);
                }
            }
            if let Workload::Attached { pid, pidfd } = workload {
                let gone = match pidfd {
                    Some(_) => ready[1],
                    None => !workload::process_alive(*pid),
                };
                if gone {
                    ended = Some(Ended::ProcessGone);
                }
            }
            if ended.is_none() && sampler.now_s() < next_tick {
                continue;
            }
        }
        // A tick: on schedule, or the final one right after the workload ended.
        let dt = sampler.tick();
        on_tick(sampler, dt);
        if let Some(e) = ended {
            return e;
        }
        next_tick += step;
        let now = sampler.now_s();
        if next_tick <= now {
            next_tick = now + step;
        }
    }
}

/// The baseline for this run: its per-domain watts (aligned with `domains`) and what the
/// report says about it. A corrupt file is an error; a mismatched one a warning.
fn load_baseline(
    args: &RunArgs,
    domains: &[sources::Domain],
    warnings: &mut Vec<String>,
) -> Result<(Vec<Option<f64>>, BaselineStatus)> {
    let none = |note: &str, path: Option<&Path>| BaselineStatus {
        used: false,
        file: path.map(|p| p.display().to_string()),
        taken_at: None,
        note: Some(note.to_string()),
    };
    if args.no_baseline {
        return Ok((Vec::new(), none("no baseline used (--no-baseline)", None)));
    }
    let Some(path) = args.baseline.clone().or_else(baseline::default_path) else {
        return Ok((Vec::new(), none(NO_BASELINE_NOTE, None)));
    };
    let loaded = Baseline::load(&path).map_err(|e| {
        Error::failure(format!(
            "{e}\n  (or run with --no-baseline to measure without one)"
        ))
    })?;
    let Some(b) = loaded else {
        if args.baseline.is_some() {
            return Err(Error::usage(format!(
                "baseline file '{}' does not exist: create it with `joulerun --basepower --baseline {}`",
                path.display(),
                path.display()
            )));
        }
        return Ok((Vec::new(), none(NO_BASELINE_NOTE, None)));
    };
    let interface = domains
        .first()
        .map(|d| d.source)
        .unwrap_or(SourceKind::Estimate);
    match b.check(&MachineIdentity::current(), interface, domains) {
        Fit::Matches { watts, notes } => {
            warnings.extend(
                notes
                    .into_iter()
                    .map(|n| format!("baseline {}: {n}", path.display())),
            );
            Ok((
                watts,
                BaselineStatus {
                    used: true,
                    file: Some(path.display().to_string()),
                    taken_at: Some(b.taken_at.clone()),
                    note: None,
                },
            ))
        }
        Fit::Mismatch(why) => {
            let msg = format!(
                "ignoring the baseline in {}: {why}; recalibrate with `joulerun --basepower`",
                path.display()
            );
            warnings.push(msg.clone());
            Ok((Vec::new(), none(&msg, Some(&path))))
        }
    }
}

/// Run `joulerun [OPTIONS] -- COMMAND` (or `-p`, or `-a`). Returns the exit status.
pub fn run(args: &RunArgs, command: &[OsString], signals: &mut Signals) -> Result<i32> {
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
    let price = config::parse_price(args.price.as_deref(), args.currency.as_deref())?;
    let Prepared {
        ctx,
        mut sampler,
        mut warnings,
        interval_ms,
    } = prepare_sampler(args)?;

    let mut outputs = Outputs {
        report: match &args.output {
            Some(p) => Some((p.clone(), open_output(p, "report")?)),
            None => None,
        },
        json: match &args.json {
            Some(p) => Some((p.clone(), open_output(p, "JSON summary")?)),
            None => None,
        },
        csv: match &args.csv {
            Some(p) => {
                let w = open_output(p, "CSV timeline")?;
                let sink = CsvSink::new(w).map_err(|e| {
                    Error::failure(format!(
                        "cannot write the CSV timeline to '{}': {e}",
                        p.display()
                    ))
                })?;
                Some((p.clone(), sink))
            }
            None => None,
        },
    };

    // Attribution (not for -a): baseline, process tracking, machine CPU time.
    let attribute = mode != Mode::All;
    let (baseline_w, baseline_status) = if attribute {
        load_baseline(args, sampler.domains(), &mut warnings)?
    } else {
        (Vec::new(), BaselineStatus::default())
    };
    let track = match args.track {
        TrackArg::Auto => TrackRequest::Auto,
        TrackArg::Cgroup => TrackRequest::Cgroup,
        TrackArg::Proc => TrackRequest::Proc,
    };
    let setup = if mode == Mode::Command {
        let s = procs::TreeSetup::prepare(track).map_err(Error::failure)?;
        if let Some(why) = &s.fallback_reason {
            warnings.push(why.clone());
        }
        Some(s)
    } else {
        None
    };
    let packages = ctx.topology.packages();
    let n_sockets = packages.len().max(1);
    let mut machine = MachineCpu::new(&ctx.topology).map_err(Error::failure)?;
    let mut mc_prev = MachineCpuSample::default();
    machine.sample(&mut mc_prev);
    let mut attributor = Attributor::new(
        sampler.domains(),
        &packages,
        &mc_prev.cpus_per_socket,
        &baseline_w,
    );

    let started_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let self_cpu0 = procs::self_cpu_s();

    // Start: the first reading right before the command starts.
    let mut tracker: Option<TreeTracker> = None;
    let workload = match mode {
        Mode::Pid => {
            let pid = args.pid.unwrap_or(0);
            if pid <= 0 || !workload::process_alive(pid) {
                return Err(Error::usage(format!(
                    "no process with PID {pid} (check it with `ps -p {pid}`)"
                )));
            }
            tracker = Some(TreeTracker::attach(pid, &ctx.topology).map_err(Error::failure)?);
            sampler.start();
            Workload::Attached {
                pid,
                pidfd: workload::pidfd_open(pid).ok(),
            }
        }
        Mode::Command | Mode::All if !command.is_empty() => {
            if let Err(e) = workload::become_subreaper() {
                warnings.push(format!(
                    "cannot become a child subreaper ({e}): CPU time of orphaned processes may be missed"
                ));
            }
            let hook = match &setup {
                Some(s) => {
                    Box::new(s.child_hook()) as Box<dyn FnMut() -> io::Result<()> + Send + Sync>
                }
                None => Box::new(|| Ok(())),
            };
            sampler.start();
            let pid = workload::spawn(command, hook)?;
            if let Some(s) = setup {
                let t = s.into_tracker(pid.as_raw(), true, &ctx.topology);
                // The move into the cgroup can still fail in the child: then /proc.
                if let Some(why) = t.fallback_reason()
                    && !warnings.iter().any(|w| w == why)
                {
                    warnings.push(why.to_string());
                }
                tracker = Some(t);
            }
            Workload::Child { pid }
        }
        _ => {
            sampler.start();
            Workload::UntilSignal
        }
    };
    let method = tracker.as_ref().map(|t| t.method());

    let mut tree = TreeCpu::default();
    let mut tree_prev = TreeCpu::default();
    if let Some(t) = tracker.as_mut() {
        t.sample(&mut tree_prev);
    }
    let mut mc = MachineCpuSample::default();
    let mut tree_d = vec![0.0; n_sockets];
    let mut busy_d = vec![0.0; n_sockets];
    let mut self_prev = procs::self_cpu_s();
    let mut csv_error: Option<String> = None;

    let ended = drive(
        &mut sampler,
        signals,
        &workload,
        Duration::from_millis(interval_ms),
        |sampler, dt| {
            if attribute {
                if let Some(t) = tracker.as_mut() {
                    t.sample(&mut tree);
                }
                machine.sample(&mut mc);
                let self_now = procs::self_cpu_s();
                let at = |v: &[f64], i: usize| v.get(i).copied().unwrap_or(0.0);
                for i in 0..n_sockets {
                    tree_d[i] =
                        (at(&tree.per_socket_s, i) - at(&tree_prev.per_socket_s, i)).max(0.0);
                    busy_d[i] =
                        (at(&mc.busy_s_per_socket, i) - at(&mc_prev.busy_s_per_socket, i)).max(0.0);
                }
                attributor.tick(&TickInput {
                    dt_s: dt,
                    energy_j: &sampler.energy,
                    tree_cpu_s: &tree_d,
                    busy_cpu_s: &busy_d,
                    self_cpu_s: (self_now - self_prev).max(0.0),
                });
                std::mem::swap(&mut tree, &mut tree_prev);
                std::mem::swap(&mut mc, &mut mc_prev);
                self_prev = self_now;
            }
            if let Some((path, sink)) = outputs.csv.as_mut()
                && csv_error.is_none()
                && let Err(e) = sink.tick(
                    sampler.now_s(),
                    sampler.domains(),
                    &sampler.delta_j,
                    &sampler.power_w,
                )
            {
                csv_error = Some(format!(
                    "writing the CSV timeline to '{}' failed: {e}; rows after {:.1} s are missing",
                    path.display(),
                    sampler.now_s()
                ));
            }
        },
    );
    if let Some(t) = tracker {
        t.finish();
    }
    warnings.extend(csv_error);
    let exit = match ended {
        Ended::Exited(e) => Some(e),
        _ => None,
    };

    let elapsed_s = sampler.now_s();
    let self_cpu_s = (procs::self_cpu_s() - self_cpu0).max(0.0);
    let summary = summarise(SummaryInput {
        mode,
        command,
        pid: args.pid,
        started_at,
        elapsed_s,
        interval_ms,
        exit,
        sampler: &sampler,
        price: &price,
        self_cpu_s,
        warnings,
        attribution: attribute.then(|| AttributionReport {
            method,
            baseline: baseline_status,
            summary: attributor.summary(),
        }),
    });
    let status = exit.map_or(0, |e| e.status());
    let failures = write_reports(&summary, &mut outputs);
    if failures.is_empty() {
        return Ok(status);
    }
    // The command ran: its status wins unless it succeeded, so a lost report is not
    // mistaken for a clean run.
    Err(Error::with_code(
        failures.join("\n"),
        if status != 0 {
            status
        } else {
            crate::error::EXIT_FAILURE
        },
    ))
}

struct SummaryInput<'a> {
    mode: Mode,
    command: &'a [OsString],
    pid: Option<i32>,
    started_at: String,
    elapsed_s: f64,
    interval_ms: u64,
    exit: Option<Exit>,
    sampler: &'a Sampler,
    price: &'a Price,
    self_cpu_s: f64,
    warnings: Vec<String>,
    attribution: Option<AttributionReport>,
}

fn summarise(i: SummaryInput<'_>) -> Summary {
    let s = i.sampler;
    let el = i.elapsed_s;
    let per_s = |j: f64| if el > 0.0 { j / el } else { 0.0 };
    let mut warnings = i.warnings;
    let mut domains = Vec::new();
    let mut sources: Vec<SourceKind> = Vec::new();
    for ((d, acc), h) in s.domains().iter().zip(s.accumulators()).zip(s.health()) {
        if !sources.contains(&d.source) {
            sources.push(d.source);
        }
        if let Some((t, msg)) = &h.first_error {
            warnings.push(format!(
                "{}: {} reads failed, the first at {:.2} s: {msg}; its energy during those ticks is missing",
                d.name, h.failed_reads, t
            ));
        }
        if acc.resets > 0 {
            warnings.push(format!(
                "{}: the counter went down {} times and its wrap range is unknown: counted from zero each time, so its energy is a lower bound",
                d.name, acc.resets
            ));
        }
        domains.push(DomainSummary {
            name: d.name.clone(),
            kind: d.kind,
            socket: d.socket,
            source: d.source,
            estimated: d.estimated,
            in_total: d.in_total(),
            energy_j: acc.total_j,
            avg_power_w: per_s(acc.total_j),
            wraps: acc.wraps,
            failed_reads: h.failed_reads,
            first_error: h.first_error.as_ref().map(|(_, m)| m.clone()),
        });
    }
    let in_total: Vec<&DomainSummary> = domains.iter().filter(|d| d.in_total).collect();
    let total_j: f64 = in_total.iter().map(|d| d.energy_j).sum();
    let estimated = in_total.iter().any(|d| d.estimated);
    if in_total.is_empty() {
        warnings.push(
            "no package, dram or estimate domain was measured: the total is 0 (see -e/--domains)"
                .to_string(),
        );
    }
    let kwh = total_j / J_PER_KWH;
    warnings.extend(
        i.attribution
            .as_ref()
            .and_then(|a| crate::attribution::clamped_warning(&a.summary, a.method)),
    );
    Summary {
        schema_version: SUMMARY_SCHEMA_VERSION,
        joulerun_version: env!("CARGO_PKG_VERSION").to_string(),
        mode: i.mode,
        command: i
            .command
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        pid: i.pid,
        started_at: i.started_at,
        elapsed_s: el,
        interval_ms: i.interval_ms,
        ticks: s.ticks(),
        exit: i.exit.map(|e| ExitInfo {
            status: e.status(),
            code: match e {
                Exit::Code(c) => Some(c),
                Exit::Signal(_) => None,
            },
            signal: match e {
                Exit::Signal(sig) => Some(sig),
                Exit::Code(_) => None,
            },
        }),
        sources,
        estimated,
        domains,
        total: Total {
            energy_j: total_j,
            kwh,
            avg_power_w: per_s(total_j),
            estimated,
        },
        cost: Cost {
            price_per_kwh: i.price.per_kwh,
            currency: i.price.currency.clone(),
            amount: kwh * i.price.per_kwh,
        },
        attribution: i.attribution,
        overhead: Overhead {
            cpu_s: i.self_cpu_s,
            percent_of_one_core: if el > 0.0 {
                100.0 * i.self_cpu_s / el
            } else {
                0.0
            },
        },
        warnings,
    }
}

fn write_reports(summary: &Summary, outputs: &mut Outputs) -> Vec<String> {
    let mut failures = Vec::new();
    match outputs.report.as_mut() {
        Some((path, w)) => {
            if let Err(e) = report::table::write(summary, w.as_mut()) {
                failures.push(format!("writing the report to '{}': {e}", path.display()));
            }
        }
        None => {
            // stderr closed or a broken pipe: nothing useful can be said about it.
            let _ = report::table::write(summary, &mut io::stderr().lock());
        }
    }
    if let Some((path, w)) = outputs.json.as_mut()
        && let Err(e) = report::json::write(summary, w.as_mut())
    {
        failures.push(format!(
            "writing the JSON summary to '{}': {e}",
            path.display()
        ));
    }
    failures
}
