//! One measured run: open sources and sinks, start (or attach to) the workload, tick
//! until it ends, fold everything into a `Summary`, write the reports.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, SystemTime};

use nix::unistd::Pid;

use crate::attribution::{Attributor, NO_BASELINE_NOTE, TickInput};
use crate::baseline::{Baseline, BaselineError, MachineIdentity};
use crate::cli::{SourceArg, TrackArg};
use crate::error::{Error, Result};
use crate::plan::{BaselineChoice, Categories, Common, Pick, RunPlan};
use crate::procs::{self, MachineCpu, TrackRequest, TreeTracker};
use crate::report::series::{Repeat, RunRecord};
use crate::report::sink::{self, TickView};
use crate::report::summary::{self, SummaryInput};
use crate::report::{AttributionReport, BaselineStatus, CategoryUse, Mode, Summary};
use crate::sampler::Sampler;
use crate::signals::{Phase, Signals};
use crate::sources::{
    self, Category, DomainKind, OpenContext, Source, SourceKind, UnavailableKind,
};
use crate::sysroot::SysRoot;
use crate::workload::{self, Exit};

/// Build the context every source opens from.
pub fn open_context(common: &Common) -> Result<OpenContext> {
    let root = match &common.sysfs_root {
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
        cpu_watts: common.cpu_watts,
        nvml: common.nvml.clone(),
        ipmi: common.ipmi.clone(),
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

/// What runs and calibration share: the hardware context, every source in a sampler,
/// the warnings from opening them, and what each category uses.
pub(crate) struct Opened {
    pub ctx: OpenContext,
    pub sampler: Sampler,
    pub warnings: Vec<String>,
    pub categories: Vec<CategoryUse>,
}

/// Open one category other than the CPU, as picked. `Ok(None)`: nothing to measure (the
/// reason, when worth saying, in the `CategoryUse`).
fn open_category(
    cat: Category,
    pick: Pick,
    ctx: &OpenContext,
    warnings: &mut Vec<String>,
) -> Result<(Option<Box<dyn Source>>, CategoryUse)> {
    let mut used = CategoryUse {
        category: cat,
        interface: None,
        note: None,
    };
    match pick {
        Pick::Off => {
            used.note = Some(format!("not measured (--{} none)", cat.switch()));
            Ok((None, used))
        }
        Pick::Only(kind) => match sources::open_for(cat, kind, ctx) {
            Ok(s) => {
                warnings.extend(s.warnings().iter().cloned());
                used.interface = Some(kind);
                Ok((Some(s), used))
            }
            Err(u) => Err(Error::failure(format!(
                "cannot use --{} {kind}: {}\n  fix: {}\n  (`joulerun list` shows every interface; `--{} auto` goes on without it)",
                cat.switch(),
                u.reason,
                u.fix.as_deref().unwrap_or("none known"),
                cat.switch()
            ))),
        },
        Pick::Auto => {
            let mut notes = Vec::new();
            for &kind in sources::interfaces(cat) {
                match sources::open_for(cat, kind, ctx) {
                    Ok(s) => {
                        warnings.extend(s.warnings().iter().cloned());
                        used.interface = Some(kind);
                        return Ok((Some(s), used));
                    }
                    Err(u) => match u.kind {
                        // Exists but cannot be read: worth a warning with its fix.
                        UnavailableKind::Permission | UnavailableKind::Invalid => {
                            warnings.push(u.explain());
                            notes.push(u.reason);
                        }
                        // Exists but has nothing to measure now (a battery on AC power).
                        UnavailableKind::Inactive => notes.push(u.reason),
                        UnavailableKind::NotPresent | UnavailableKind::ModuleMissing => {}
                    },
                }
            }
            used.note = (!notes.is_empty()).then(|| notes.join("; "));
            Ok((None, used))
        }
    }
}

/// Open the CPU source (`--source`, or `auto`) and every other category as picked, and
/// put them in a sampler keeping the `only` domain kinds. An `-e` that leaves no domain
/// is an error.
pub(crate) fn prepare_sampler(
    common: &Common,
    source: SourceArg,
    categories: &Categories,
    only: &[DomainKind],
) -> Result<Opened> {
    let mut ctx = open_context(common)?;
    // The machine's CPU time is read once per tick, by the sampler, and shared with the
    // estimate.
    let busy = std::sync::Arc::new(procs::MachineBusy::default());
    let machine = MachineCpu::new(&ctx.topology)
        .map_err(Error::failure)?
        .publishing(busy.clone());
    ctx.machine_busy = Some(busy);
    // GPUs (issue 9): the command's PIDs, published by the sampler for NVML's reader.
    let pids = std::sync::Arc::new(sources::CommandPids::default());
    ctx.command_pids = Some(pids.clone());
    let (cpu, mut warnings) = open_cpu_source(source, &ctx)?;
    warnings.extend(cpu.warnings().iter().cloned());
    let mut used = vec![CategoryUse {
        category: Category::Cpu,
        interface: Some(cpu.kind()),
        note: None,
    }];
    let mut all = vec![cpu];
    for (cat, pick) in categories.picks() {
        let (s, u) = open_category(cat, pick, &ctx, &mut warnings)?;
        all.extend(s);
        used.push(u);
    }
    let wants_pids = all.iter().any(|s| s.kind() == SourceKind::Nvml);
    let mut sampler = Sampler::new(all, only).with_machine_cpu(machine);
    if wants_pids {
        sampler.share_pids(pids);
    }
    if sampler.domains().is_empty() {
        let names: Vec<&str> = only.iter().map(|k| k.name()).collect();
        return Err(Error::failure(format!(
            "-e/--domains {} matches no domain of this machine's energy interfaces (`joulerun list` shows them)",
            names.join(",")
        )));
    }
    Ok(Opened {
        ctx,
        sampler,
        warnings,
        categories: used,
    })
}

/// What the sampling loop waits for.
pub enum Workload {
    /// The command joulerun started.
    Child { pid: Pid },
    /// A process joulerun attached to (`-p`); a pidfd when the kernel has pidfd_open.
    Attached { pid: i32, pidfd: Option<OwnedFd> },
    /// Nothing: run until this many seconds have passed (calibration).
    Timer { until_s: f64 },
    /// Nothing: run until a stop signal (`-a` without a command).
    UntilSignal,
}

/// Why the sampling loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The command exited (and was reaped).
    Exited(Exit),
    /// The attached process is gone.
    ProcessGone,
    /// This stop signal arrived while no command of ours was running.
    Stopped(i32),
    /// The timer ran out.
    Deadline,
}

/// The sampling loop: a tick every `interval` on a monotonic schedule (late ticks are
/// skipped, never bunched), signal events taken between ticks, and a final tick right
/// after the workload ends. `on_tick` sees the sampler after every tick.
pub fn drive(
    sampler: &mut Sampler,
    signals: &mut Signals,
    workload: &Workload,
    interval: Duration,
    on_tick: impl FnMut(&Sampler, f64),
) -> Ended {
    drive_with(sampler, signals, workload, interval, &NoHooks, on_tick)
}

// Launchers (issue 13): a node's leader also waits for its followers.
/// What else a sampling loop attends to (a node's leader: followers connecting, and
/// ranks still running after its own command ended).
pub trait DriveHooks {
    /// A descriptor to wake on besides the signals (a listening socket).
    fn wake_fd(&self) -> Option<RawFd> {
        None
    }
    /// `wake_fd` is readable.
    fn woke(&self, _now_s: f64) {}
    /// The command has exited: keep ticking while this is true (asked again before
    /// every tick); a stop signal ends the wait.
    fn hold(&self, _now_s: f64) -> bool {
        false
    }
}

/// No hooks: the loop ends with its workload.
pub struct NoHooks;

impl DriveHooks for NoHooks {}

/// [`drive`], with `hooks`.
pub fn drive_with(
    sampler: &mut Sampler,
    signals: &mut Signals,
    workload: &Workload,
    interval: Duration,
    hooks: &dyn DriveHooks,
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
    let wake_at = hooks.wake_fd().map(|fd| {
        fds.push(fd);
        fds.len() - 1
    });
    let mut ready = [false; 3];
    // The command exited while the hooks hold the loop (issue 13).
    let mut held: Option<Exit> = None;
    // A tick that takes longer than this is a stuck loop (see `signals`).
    signals.set_stall_limit(interval.as_millis() as u64 + 5_000);
    loop {
        signals.heartbeat();
        let mut ended = None;
        if let Some(e) = held
            && !hooks.hold(sampler.now_s())
        {
            ended = Some(Ended::Exited(e));
        }
        let now = sampler.now_s();
        if let Workload::Timer { until_s } = workload {
            next_tick = next_tick.min(*until_s);
            if now >= *until_s {
                ended = Some(Ended::Deadline);
            }
        }
        if ended.is_none() && now < next_tick {
            workload::wait_readable(&fds, Duration::from_secs_f64(next_tick - now), &mut ready);
            if let Some(k) = wake_at
                && ready[k]
            {
                hooks.woke(sampler.now_s());
            }
            if ready[0] {
                let ev = signals.take();
                if ev.child
                    && let Some(e) = workload::reap(target)
                {
                    signals.clear_target();
                    if hooks.hold(sampler.now_s()) {
                        held = Some(e);
                    } else {
                        ended = Some(Ended::Exited(e));
                    }
                }
                if let Some(sig) = ev.stop {
                    match held {
                        // Waiting for other ranks: a stop signal ends the wait.
                        Some(e) => ended = Some(Ended::Exited(e)),
                        None if target.is_none() => ended = Some(Ended::Stopped(sig)),
                        None => {}
                    }
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
        // A tick: on schedule, or the final one right after the workload ended (which
        // also stops the reader threads, each after a last sample).
        let dt = if ended.is_some() {
            sampler.final_tick()
        } else {
            sampler.tick()
        };
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
/// report says about it.
///
/// One rule for a baseline named by `--baseline` or `JOULERUN_BASELINE`: it must exist and
/// be valid. At the default location, a missing file means "no baseline", and one that
/// cannot be read (an unreadable HOME, say) too, with a warning; a corrupt one is an error.
/// A baseline of another machine or interface is ignored with a warning.
fn load_baseline(
    choice: &BaselineChoice,
    domains: &[sources::Domain],
    warnings: &mut Vec<String>,
) -> Result<(Vec<Option<f64>>, BaselineStatus)> {
    let none = |note: &str, path: Option<&std::path::Path>| BaselineStatus {
        used: false,
        file: path.map(|p| p.display().to_string()),
        taken_at: None,
        note: Some(note.to_string()),
    };
    let or_skip = "(or run with --no-baseline to measure without one)";
    let (path, b) = match choice {
        BaselineChoice::Off => {
            return Ok((Vec::new(), none("no baseline used (--no-baseline)", None)));
        }
        BaselineChoice::Default(None) => return Ok((Vec::new(), none(NO_BASELINE_NOTE, None))),
        BaselineChoice::Explicit { path, origin } => match Baseline::load(path) {
            Ok(Some(b)) => (path, b),
            Ok(None) => {
                return Err(Error::usage(format!(
                    "baseline file '{}' (from {origin}) does not exist: create it with `joulerun --basepower --baseline {}` {or_skip}",
                    path.display(),
                    path.display()
                )));
            }
            Err(e) => return Err(Error::failure(format!("{e}\n  {or_skip}"))),
        },
        BaselineChoice::Default(Some(path)) => match Baseline::load(path) {
            Ok(Some(b)) => (path, b),
            Ok(None) => return Ok((Vec::new(), none(NO_BASELINE_NOTE, None))),
            Err(BaselineError::Read { source, .. }) => {
                let msg = format!(
                    "the default baseline '{}' cannot be read ({source}): running without a baseline; fix its permissions, or give --baseline FILE",
                    path.display()
                );
                warnings.push(msg.clone());
                return Ok((Vec::new(), none(&msg, Some(path))));
            }
            Err(e) => return Err(Error::failure(format!("{e}\n  {or_skip}"))),
        },
    };
    let fit = b.fit(&MachineIdentity::current(), domains);
    if let Some(why) = fit.ignored {
        let msg = format!(
            "ignoring the baseline in {}: {why}; recalibrate with `joulerun --basepower`",
            path.display()
        );
        warnings.push(msg.clone());
        return Ok((Vec::new(), none(&msg, Some(path))));
    }
    warnings.extend(
        fit.notes
            .into_iter()
            .map(|n| format!("baseline {}: {n}", path.display())),
    );
    if fit.watts.iter().all(Option::is_none) {
        let msg = format!(
            "the baseline in {} has none of this run's domains; recalibrate with `joulerun --basepower`",
            path.display()
        );
        return Ok((Vec::new(), none(&msg, Some(path))));
    }
    Ok((
        fit.watts,
        BaselineStatus {
            used: true,
            file: Some(path.display().to_string()),
            taken_at: Some(b.taken_at.clone()),
            note: None,
        },
    ))
}

/// `-p PID`: the process must exist and not have exited yet.
fn check_attachable(pid: i32) -> Result<()> {
    let state = if pid > 0 {
        workload::process_state(pid)
    } else {
        None
    };
    match state {
        None => Err(Error::usage(format!(
            "no process with PID {pid} (check it with `ps -p {pid}`)"
        ))),
        Some(b'Z') | Some(b'X') => Err(Error::usage(format!(
            "process {pid} has already exited (a zombie its parent has not reaped): nothing left to measure"
        ))),
        Some(_) => Ok(()),
    }
}

/// One run of a series, as [`measure_once`] is asked to make it.
#[derive(Clone, Copy, Debug)]
struct Slot {
    /// 1-based among the measured runs (or among the warm-ups).
    number: u32,
    /// Recorded (not a warm-up): its ticks go to the sinks.
    measured: bool,
    /// No run follows it: joulerun moves on to writing the reports.
    last: bool,
}

/// What one run gave.
struct Measured {
    summary: Summary,
    status: i32,
    /// Streams that failed during the run.
    failures: Vec<String>,
}

/// What the runs of a series share: the sinks (made by the first run, once its sources
/// are open, so an unwritable output stops joulerun before any command starts) and the
/// machine's identity.
struct SeriesState {
    sinks: Option<Vec<Box<dyn sink::Sink>>>,
    machine: MachineIdentity,
}

/// Run `joulerun [OPTIONS] -- COMMAND` (or `-p`, or `-a`): one run, or a series of them
/// with `-r`. Returns the exit status.
pub fn run(plan: &RunPlan, signals: &mut Signals) -> Result<i32> {
    if let Some(pid) = plan.pid {
        check_attachable(pid)?;
    }
    let series = &plan.series;
    let total = series.warmup + series.runs;
    let mut state = SeriesState {
        sinks: None,
        machine: MachineIdentity::current(),
    };
    // No bar while -I lines stream to stderr (they would cut into each other).
    let progress = crate::progress::Progress::new(
        series.warmup,
        series.runs,
        plan.interval_print_ms.is_none() || plan.report.is_some(),
    );
    let mut records: Vec<RunRecord> = Vec::new();
    let mut summaries: Vec<Summary> = Vec::new();
    let mut last_warmup: Option<Summary> = None;
    let mut failures: Vec<String> = Vec::new();
    let mut first_failure: Option<i32> = None;
    let mut stopped: Option<String> = None;
    let mut ended_by_signal: Option<i32> = None;
    let mut setup_error: Option<Error> = None;
    for k in 0..total {
        let measured = k >= series.warmup;
        let slot = Slot {
            number: if measured {
                k - series.warmup + 1
            } else {
                k + 1
            },
            measured,
            last: k + 1 == total,
        };
        let what = if measured {
            format!("run {}", slot.number)
        } else {
            format!("warm-up run {}", slot.number)
        };
        if k > 0 {
            let sig = match signals.stop_requested() {
                Some(sig) => Some(sig),
                None if series.cooldown_s > 0.0 => {
                    progress.cooling_down(series.cooldown_s);
                    cool_down(signals, series.cooldown_s)
                }
                None => None,
            };
            if let Some(sig) = sig {
                stopped = Some(format!(
                    "interrupted by {} before {what}",
                    crate::signals::signal_name(sig)
                ));
                ended_by_signal = Some(sig);
                break;
            }
        }
        progress.starting(&what);
        let m = match progress.hidden(|| measure_once(plan, signals, &mut state, slot)) {
            Ok(m) => m,
            // Nothing ran yet: the error is the whole answer.
            Err(e) if k == 0 => return Err(e),
            // Later runs measured something: keep it, and say why the series ended.
            Err(e) => {
                stopped = Some(format!("{what} could not start: {}", e.message));
                setup_error = Some(e);
                break;
            }
        };
        failures.extend(m.failures.iter().cloned());
        let status = m.status;
        if measured {
            let r = RunRecord::of(slot.number, &m.summary);
            progress.finished(&what, &r);
            records.push(r);
            summaries.push(m.summary);
        } else {
            progress.finished_warmup(&what);
            last_warmup = Some(m.summary);
        }
        if status != 0 {
            first_failure.get_or_insert(status);
            if !series.keep_going && k + 1 < total {
                stopped = Some(format!(
                    "{what} exited with status {status} (--keep-going runs on)"
                ));
                break;
            }
        }
        if k + 1 < total
            && let Some(sig) = signals.stop_requested()
        {
            stopped = Some(format!(
                "interrupted by {} during {what}",
                crate::signals::signal_name(sig)
            ));
            ended_by_signal = Some(sig);
            break;
        }
    }
    progress.done();
    signals.set_phase(Phase::Finishing);

    let summary = series_summary(series, records, summaries, last_warmup, stopped);
    let status = first_failure
        .or(ended_by_signal.map(|s| 128 + s))
        .or(setup_error.as_ref().map(|e| e.code))
        .unwrap_or(0);
    for s in state.sinks.take().unwrap_or_default() {
        if let Err(e) = s.finish(&summary)
            && !failures.contains(&e)
        {
            failures.push(e);
        }
    }
    if failures.is_empty() {
        return Ok(status);
    }
    // The command ran: its status wins unless it succeeded, so a lost output is not
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

/// The summary of a series: the last measured run's, with every run and the statistics
/// over them (`-r`), and the warnings of every run (those of earlier runs that the last
/// did not have, with their run's number).
fn series_summary(
    series: &crate::plan::Series,
    records: Vec<RunRecord>,
    mut summaries: Vec<Summary>,
    last_warmup: Option<Summary>,
    stopped: Option<String>,
) -> Summary {
    let measured = summaries.len();
    let mut summary = match summaries.pop() {
        Some(s) => s,
        None => {
            // Only warm-ups ran (the first failed, or the series was stopped): show it.
            let mut s = last_warmup.expect("a series that ran has a run");
            s.warnings.insert(
                0,
                "no measured run completed: these figures are the last warm-up run's".to_string(),
            );
            s
        }
    };
    let mut earlier: Vec<String> = Vec::new();
    for (i, s) in summaries.iter().enumerate() {
        for w in &s.warnings {
            let tagged = format!("run {}: {w}", i + 1);
            if !summary.warnings.contains(w) && !earlier.iter().any(|e| e.ends_with(w.as_str())) {
                earlier.push(tagged);
            }
        }
    }
    if !earlier.is_empty() {
        earlier.append(&mut summary.warnings);
        summary.warnings = earlier;
    }
    if let Some(why) = &stopped {
        summary.warnings.push(format!(
            "the series stopped after {measured} of {} runs: {why}",
            series.runs
        ));
    }
    if series.repeated {
        summary.repeat = Some(Repeat::new(
            series.runs,
            series.warmup,
            series.cooldown_s,
            series.keep_going,
            stopped,
            records,
        ));
    }
    summary
}

/// `--cooldown`: wait `secs` between two runs, ending early at a stop signal (returned).
fn cool_down(signals: &mut Signals, secs: f64) -> Option<i32> {
    let until = std::time::Instant::now() + Duration::from_secs_f64(secs);
    signals.set_stall_limit((secs * 1000.0) as u64 + 5_000);
    let mut ready = [false];
    loop {
        signals.heartbeat();
        if let Some(sig) = signals.stop_requested() {
            return Some(sig);
        }
        let now = std::time::Instant::now();
        if now >= until {
            return None;
        }
        workload::wait_readable(&[signals.fd()], until - now, &mut ready);
        if ready[0] {
            // Stop signals are kept by `stop_requested`; nothing else matters here.
            let _ = signals.take();
        }
    }
}

/// Measure one run: open the sources, start the command (or attach), tick until it
/// ends, and build its summary. The sinks are fed when the run is `measured`.
fn measure_once(
    plan: &RunPlan,
    signals: &mut Signals,
    state: &mut SeriesState,
    slot: Slot,
) -> Result<Measured> {
    let mode = plan.mode;
    let command: &[OsString] = &plan.command;
    let interval_ms = plan.interval_ms;
    // Launchers (issue 13): the node's devices are measured once, by one of its ranks; a
    // rank whose node another joulerun measures opens no energy source.
    let mut node = crate::launcher::share::NodeShare::join(plan);
    let follower = node.as_ref().is_some_and(|n| n.is_follower());
    let Opened {
        ctx,
        mut sampler,
        mut warnings,
        categories,
    } = if follower {
        Opened {
            ctx: open_context(&plan.common)?,
            sampler: Sampler::new(Vec::new(), &[]),
            warnings: Vec::new(),
            categories: Vec::new(),
        }
    } else {
        prepare_sampler(&plan.common, plan.source, &plan.categories, &plan.only)?
    };
    sampler.set_probe_budget(plan.probe_budget); // Big process trees (issue 14)

    // Attribution (not reported with -a): baseline, process tracking, machine CPU time.
    let attribute = mode != Mode::All && !follower;
    let (baseline_w, baseline_status) = if attribute {
        load_baseline(&plan.baseline, sampler.domains(), &mut warnings)?
    } else {
        (Vec::new(), BaselineStatus::default())
    };

    // Outputs: temporary files now (an unwritable destination stops here), in place later.
    if state.sinks.is_none() {
        let mut v = sink::for_run(plan)?;
        // Carbon, OpenMetrics, plots (issue 12)
        v.extend(crate::report::plot::issue12_sinks(
            plan,
            &baseline_w,
            sampler.domains(),
        )?);
        state.sinks = Some(v);
    }
    let mut none: Vec<Box<dyn sink::Sink>> = Vec::new();
    let sinks: &mut Vec<Box<dyn sink::Sink>> = match (&mut state.sinks, slot.measured) {
        (Some(s), true) => s,
        _ => &mut none,
    };

    let track = match plan.track {
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
    let cgroup_dir = setup
        .as_ref()
        .and_then(|s| s.cgroup_dir().map(std::path::Path::to_path_buf));
    let packages = ctx.topology.packages();
    let n_sockets = packages.len().max(1);
    let is_slow: Vec<bool> = (0..sampler.domains().len())
        .map(|k| sampler.is_slow(k))
        .collect();
    let mut attributor = Attributor::new(
        sampler.domains(),
        &packages,
        &sampler.machine_now.cpus_per_socket,
        &baseline_w,
    )
    .with_interval_domains(&is_slow);

    // Streams open their destination now (a FIFO waits for its reader here); a stream
    // that cannot even take its header stops the run before the command starts.
    sink::open_all(sinks)?;
    if let Some(n) = node.as_mut() {
        n.started();
    }
    let started_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let self_cpu0 = procs::self_cpu_s();

    // Start: the first reading right before the command starts.
    let workload = match mode {
        Mode::Pid => {
            let pid = plan.pid.unwrap_or(0);
            check_attachable(pid)?;
            let t = TreeTracker::attach(pid, &ctx.topology).map_err(Error::usage)?;
            signals.set_phase(Phase::Running);
            sampler.start();
            sampler.set_tree(t);
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
                Some(s) => Box::new(s.child_hook())
                    as Box<dyn FnMut() -> std::io::Result<()> + Send + Sync>,
                None => Box::new(|| Ok(())),
            };
            sampler.start();
            // Started and registered as the target of forwarded signals in one step, so
            // a signal arriving meanwhile is forwarded rather than ending joulerun.
            let pid = crate::signals::critical(|| {
                let pid = workload::spawn(command, hook)?;
                signals.running_with_target(pid.as_raw());
                Ok::<_, Error>(pid)
            })?;
            if let Some(s) = setup {
                let t = s.into_tracker(pid.as_raw(), true, &ctx.topology);
                // The move into the cgroup can still fail in the child: then /proc.
                if let Some(why) = t.fallback_reason()
                    && !warnings.iter().any(|w| w == why)
                {
                    warnings.push(why.to_string());
                }
                sampler.set_tree(t);
            }
            Workload::Child { pid }
        }
        _ => {
            signals.set_phase(Phase::Running);
            sampler.start();
            Workload::UntilSignal
        }
    };
    for s in sinks.iter_mut() {
        s.started();
    }
    let method = sampler.tree().map(|t| t.method());
    // Launchers (issue 13): a follower's command in a cgroup is read by its leader.
    let mut interval_ms = interval_ms;
    if let Some(n) = &node {
        let cgroup = method == Some(procs::TrackMethod::Cgroup);
        if let (true, Some(dir)) = (cgroup, &cgroup_dir) {
            n.tracking(dir, sampler.elapsed_s());
        }
        interval_ms = n.interval_ms(interval_ms, cgroup);
    }
    let mut tree_d = vec![0.0; n_sockets];
    let mut busy_d = vec![0.0; n_sockets];
    let mut self_prev = procs::self_cpu_s();
    let mut tick_start = 0.0;
    // The probe window: the fast ticks since usage was last read, summed, and the
    // intervals waiting for the usage that covers them.
    let n_domains = sampler.domains().len();
    let mut win_dt = 0.0;
    let mut win_energy: Vec<Option<f64>> = vec![Some(0.0); n_domains];
    let mut pending: Vec<crate::sampler::Interval> = Vec::new();
    let mut command_j: Vec<f64> = Vec::with_capacity(n_domains);

    let hooks: &dyn DriveHooks = match &node {
        Some(n) => n,
        None => &NoHooks,
    };
    let ended = drive_with(
        &mut sampler,
        signals,
        &workload,
        Duration::from_millis(interval_ms),
        hooks,
        |sampler, dt| {
            win_dt += dt;
            for (w, e) in win_energy.iter_mut().zip(&sampler.energy) {
                *w = match (*w, *e) {
                    (Some(a), Some(b)) => Some(a + b),
                    _ => None,
                };
            }
            pending.extend(
                sampler
                    .intervals
                    .iter()
                    .filter(|i| attributor.wants_interval(i.domain)),
            );
            if sampler.usage_fresh() {
                let (tree, tree_prev) = (&sampler.tree_now, &sampler.tree_before);
                let (mc, mc_prev) = (&sampler.machine_now, &sampler.machine_before);
                let self_now = procs::self_cpu_s();
                let at = |v: &[f64], i: usize| v.get(i).copied().unwrap_or(0.0);
                for i in 0..n_sockets {
                    tree_d[i] =
                        (at(&tree.per_socket_s, i) - at(&tree_prev.per_socket_s, i)).max(0.0);
                    busy_d[i] =
                        (at(&mc.busy_s_per_socket, i) - at(&mc_prev.busy_s_per_socket, i)).max(0.0);
                }
                // Launchers (issue 13): the other ranks' CPU time on this node joins the
                // command's (a follower sends its own instead).
                if let Some(n) = &node {
                    n.window(&mut tree_d, &tree.per_socket_s, sampler.elapsed_s());
                }
                attributor.tick(&TickInput {
                    dt_s: win_dt,
                    energy_j: &win_energy,
                    tree_cpu_s: &tree_d,
                    busy_cpu_s: &busy_d,
                    self_cpu_s: (self_now - self_prev).max(0.0),
                });
                // Domains with intervals of their own (slow ones, and devices without a
                // CPU usage signal): split by the usage of those same intervals.
                for i in pending.drain(..) {
                    attributor
                        .interval_with_usage(i.domain, i.start_s, i.end_s, i.energy_j, i.usage);
                }
                if let Some(n) = &node {
                    let (d, st) = attributor.command_split_j();
                    n.attributed(d, st);
                }
                self_prev = self_now;
                win_dt = 0.0;
                win_energy.iter_mut().for_each(|w| *w = Some(0.0));
            }
            let end_s = sampler.elapsed_s();
            if attribute {
                attributor.command_j_into(&mut command_j);
            }
            let view = TickView {
                start_s: tick_start,
                end_s,
                domains: sampler.domains(),
                delta_j: &sampler.delta_j,
                power_w: &sampler.power_w,
                is_slow: &is_slow,
                intervals: &sampler.intervals,
                command_j: attribute.then(|| attributor.command_j()),
                run: slot.number,
                last: sampler.is_final(),
                domain_command_j: attribute.then_some(command_j.as_slice()),
            };
            for s in sinks.iter_mut() {
                s.tick(&view);
            }
            tick_start = end_s;
        },
    );
    if slot.last {
        signals.set_phase(Phase::Finishing);
    } else {
        // Between runs a stop signal ends the series (`Signals::stop_requested`).
        signals.clear_target();
        signals.set_phase(Phase::Running);
    }
    if let Some(t) = sampler.take_tree() {
        t.finish();
    }
    let mut failures = Vec::new();
    for e in sinks.iter().filter_map(|s| s.stream_error()) {
        warnings.push(e.clone());
        failures.push(e);
    }
    let exit = match ended {
        Ended::Exited(e) => Some(e),
        _ => None,
    };
    let self_cpu_s = (procs::self_cpu_s() - self_cpu0).max(0.0);
    let launcher = node.map(|n| {
        let (report, w) = n.finish(
            attribute,
            sampler.elapsed_s(),
            exit.map(|e| e.status()),
            &sampler.tree_now.per_socket_s,
        );
        warnings.extend(w);
        report
    });
    let attribution = attributor.summary();
    let mut summary = summary::build(SummaryInput {
        mode,
        command,
        pid: plan.pid,
        started_at,
        interval_ms,
        exit,
        sampler: &sampler,
        price: &plan.price,
        self_cpu_s,
        warnings,
        categories,
        attribution: attribute.then_some(AttributionReport {
            method,
            baseline: baseline_status,
            summary: attribution,
        }),
        carbon: &plan.carbon,
        machine: state.machine.clone(),
    });
    if follower {
        // A follower measured nothing on purpose: its report says whose report has it.
        summary.warnings.retain(|w| w != summary::NOTHING_MEASURED);
    }
    summary.launcher = launcher;
    Ok(Measured {
        summary,
        status: exit.map_or(0, |e| e.status()),
        failures,
    })
}
