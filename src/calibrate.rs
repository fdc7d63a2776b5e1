//! `joulerun --basepower`: measure this machine's idle (static) power per domain and store
//! it as the baseline that runs subtract before attributing dynamic energy.

use std::io::{self, Write};
use std::time::{Duration, SystemTime};

use comfy_table::{CellAlignment, Table, presets};

use crate::baseline::{self, Baseline, BusyVerdict, Calibration, MachineIdentity};
use crate::error::{Error, Result};
use crate::output;
use crate::plan::CalibratePlan;
use crate::report::sig;
use crate::run::{Ended, Opened, Workload, drive, prepare_sampler};
use crate::signals::{Phase, Signals};
use crate::sources::SourceKind;

pub fn calibrate(plan: &CalibratePlan, signals: &mut Signals) -> Result<i32> {
    let d = plan.duration_s;
    let path = &plan.path;
    // Where the baseline goes is checked (and its temporary file created) before an hour
    // of measuring, not after.
    let destination = baseline::Destination::prepare(path).map_err(Error::failure)?;
    let report_out = match &plan.report {
        Some(r) => Some((r, output::prepare(r)?)),
        None => None,
    };
    let Opened {
        mut sampler,
        mut warnings,
        ..
    } = prepare_sampler(&plan.common, plan.source, &plan.categories, &plan.only)?;
    let interface = sampler.domains()[0].source;
    if interface == SourceKind::Estimate {
        warnings.push(
            "calibrating the estimate measures the model's idle coefficient, not the machine: a baseline is only meaningful with real counters".to_string(),
        );
    }
    let already_shown = warnings.len();
    let mut err = io::stderr().lock();
    for w in &warnings {
        let _ = writeln!(
            err,
            "joulerun: warning: {}",
            crate::text::escape_text(w).replace('\n', "\n   ")
        );
    }
    let _ = writeln!(
        err,
        "joulerun: measuring idle power through {interface} for {} s; keep the machine idle (Ctrl-C aborts)...",
        sig(d, 3)
    );
    drop(err);

    let mut cal = Calibration::new(sampler.domains().len());
    // GPUs (issue 9): a GPU's idle power comes only from intervals with no compute
    // process on it (its source says who was there).
    let mut gpu_busy_s = vec![0.0; sampler.domains().len()];
    signals.set_phase(Phase::Calibrating);
    sampler.start();
    let ended = drive(
        &mut sampler,
        signals,
        &Workload::Timer { until_s: d },
        Duration::from_millis(plan.interval_ms),
        |s, dt| {
            // CPU time is read every tick of 10 ms or more (every few ticks below that).
            let cpu = s.usage_fresh().then(|| {
                let (cur, prev) = (&s.machine_now, &s.machine_before);
                let sum = |v: &[f64]| v.iter().sum::<f64>();
                (
                    (sum(&cur.busy_s_per_socket) - sum(&prev.busy_s_per_socket)).max(0.0),
                    (sum(&cur.idle_s_per_socket) - sum(&prev.idle_s_per_socket)).max(0.0),
                )
            });
            cal.tick(dt, &s.energy, cpu);
            // Domains read at their own cadence (a chassis, a battery): their samples.
            for i in &s.intervals {
                if s.is_slow(i.domain) {
                    if i.usage
                        .is_some_and(|u| u.method != crate::sources::UsageMethod::Nobody)
                    {
                        gpu_busy_s[i.domain] += i.end_s - i.start_s;
                        continue;
                    }
                    cal.interval(i.domain, i.end_s - i.start_s, i.energy_j);
                }
            }
        },
    );
    if let Ended::Stopped(sig) = ended {
        return Err(Error::with_code(
            format!(
                "calibration interrupted by {}: no baseline was stored",
                crate::signals::signal_name(sig)
            ),
            128 + sig,
        ));
    }
    for (d, busy) in sampler.domains().iter().zip(&gpu_busy_s) {
        if *busy > 0.0 {
            warnings.push(format!(
                "{}: compute processes were on it for {} s of the calibration; that time is left out of its idle power (stop them and calibrate again for a full measurement)",
                d.name,
                sig(*busy, 3)
            ));
        }
    }
    match baseline::busy_verdict(cal.utilisation(), plan.force) {
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
            plan.interval_ms,
            SystemTime::now(),
        )
        .map_err(Error::failure)?;
    warnings.extend(notes);
    destination
        .commit(&b)
        .map_err(|e| Error::failure(e.to_string()))?;
    signals.set_phase(Phase::Finishing);
    let text = render(&b, &path.display().to_string(), &warnings[already_shown..]);
    match report_out {
        Some((r, out)) => out.finish(text.as_bytes(), r.flag).map_err(|e| {
            Error::failure(format!(
                "the baseline was stored in {}, but writing the report to {} failed: {e}",
                path.display(),
                r.dest.describe()
            ))
        })?,
        None => {
            let _ = io::stderr().lock().write_all(text.as_bytes());
        }
    }
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
    out.push_str(&format!(" stored in {}\n", crate::text::escape_line(path)));
    for w in warnings {
        out.push_str(&format!(
            " warning: {}\n",
            crate::text::escape_text(w).replace('\n', "\n   ")
        ));
    }
    out.push('\n');
    out
}
