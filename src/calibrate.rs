//! `joulerun --basepower`: measure this machine's idle (static) power per domain and store
//! it as the baseline that runs subtract before attributing dynamic energy.

use std::io::{self, Write};
use std::time::{Duration, SystemTime};

use comfy_table::{CellAlignment, Table, presets};

use crate::baseline::{self, Baseline, BusyVerdict, Calibration, MachineIdentity};
use crate::cli::RunArgs;
use crate::error::{Error, Result};
use crate::procs::{MachineCpu, MachineCpuSample};
use crate::report::sig;
use crate::run::{Ended, Prepared, Workload, drive, prepare_sampler};
use crate::sources::SourceKind;
use crate::workload::Signals;

/// Shortest and longest calibration accepted, seconds.
pub const MIN_DURATION_S: f64 = 1.0;
pub const MAX_DURATION_S: f64 = 3600.0;

pub fn calibrate(args: &RunArgs, signals: &mut Signals) -> Result<i32> {
    let d = args.duration;
    if !(d.is_finite() && (MIN_DURATION_S..=MAX_DURATION_S).contains(&d)) {
        return Err(Error::usage(format!(
            "invalid --duration {d}: give seconds between {MIN_DURATION_S} and {MAX_DURATION_S} (the default is 10)"
        )));
    }
    let path = args.baseline.clone().or_else(baseline::default_path).ok_or_else(|| {
        Error::usage(
            "no place to store the baseline: HOME and XDG_STATE_HOME are unset; give --baseline FILE or set JOULERUN_BASELINE",
        )
    })?;
    let Prepared {
        ctx,
        mut sampler,
        mut warnings,
        interval_ms,
    } = prepare_sampler(args)?;
    let interface = sampler.domains()[0].source;
    if interface == SourceKind::Estimate {
        warnings.push(
            "calibrating the estimate measures the model's idle coefficient, not the machine: a baseline is only meaningful with real counters".to_string(),
        );
    }
    let already_shown = warnings.len();
    let mut err = io::stderr().lock();
    for w in &warnings {
        let _ = writeln!(err, "joulerun: warning: {w}");
    }
    let _ = writeln!(
        err,
        "joulerun: measuring idle power through {interface} for {} s; keep the machine idle (Ctrl-C aborts)...",
        sig(d, 3)
    );
    drop(err);

    let mut machine = MachineCpu::new(&ctx.topology).map_err(Error::failure)?;
    let mut prev = MachineCpuSample::default();
    let mut cur = MachineCpuSample::default();
    machine.sample(&mut prev);
    let mut cal = Calibration::new(sampler.domains().len());
    sampler.start();
    let ended = drive(
        &mut sampler,
        signals,
        &Workload::Timer { until_s: d },
        Duration::from_millis(interval_ms),
        |s, dt| {
            machine.sample(&mut cur);
            let sum = |v: &[f64]| v.iter().sum::<f64>();
            let busy = (sum(&cur.busy_s_per_socket) - sum(&prev.busy_s_per_socket)).max(0.0);
            let idle = (sum(&cur.idle_s_per_socket) - sum(&prev.idle_s_per_socket)).max(0.0);
            cal.tick(dt, &s.energy, Some((busy, idle)));
            std::mem::swap(&mut cur, &mut prev);
        },
    );
    if ended == Ended::Stopped {
        return Err(Error::with_code(
            "calibration interrupted: no baseline was stored",
            130,
        ));
    }
    match baseline::busy_verdict(cal.utilisation(), args.force) {
        BusyVerdict::Ok => {}
        BusyVerdict::Warn(w) => warnings.push(w),
        BusyVerdict::Refuse(why) => {
            return Err(Error::failure(format!(
                "{why}\n  nothing was stored in {}",
                path.display()
            )));
        }
    }
    let (b, notes) = cal
        .finish(
            &MachineIdentity::current(),
            interface,
            sampler.domains(),
            interval_ms,
            SystemTime::now(),
        )
        .map_err(Error::failure)?;
    warnings.extend(notes);
    b.save(&path).map_err(|e| Error::failure(e.to_string()))?;
    let _ = io::stderr()
        .lock()
        .write_all(render(&b, &path.display().to_string(), &warnings[already_shown..]).as_bytes());
    Ok(0)
}

fn render(b: &Baseline, path: &str, warnings: &[String]) -> String {
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    t.set_header(vec!["domain", "idle power", "spread (sd)", "min", "max"]);
    for d in &b.domains {
        t.add_row(vec![
            d.name.clone(),
            format!("{} W", sig(d.mean_w, 4)),
            format!("± {} W", sig(d.stddev_w, 2)),
            format!("{} W", sig(d.min_w, 4)),
            format!("{} W", sig(d.max_w, 4)),
        ]);
    }
    for i in 1..5 {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    let mut out = format!(
        "\n Baseline (idle power) through {} over {} s:\n\n",
        b.interface,
        sig(b.duration_s, 3)
    );
    for line in t.to_string().lines() {
        out.push(' ');
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push('\n');
    if let Some(u) = b.cpu_utilisation {
        out.push_str(&format!(
            " CPU utilisation during calibration: {}%\n",
            sig(100.0 * u, 2)
        ));
    }
    out.push_str(&format!(" stored in {path}\n"));
    for w in warnings {
        out.push_str(&format!(" warning: {w}\n"));
    }
    out.push('\n');
    out
}
