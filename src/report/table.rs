//! The human report, `perf stat` style, built with comfy-table. Goes to stderr unless
//! `-o FILE` says otherwise.

use std::io::Write;

use comfy_table::{CellAlignment, ColumnConstraint, Table, presets};

use crate::procs::TrackMethod;

use super::{AttributionReport, Mode, Summary, fmt_joules, fmt_kwh, fmt_money, fmt_watts, sig};

fn new_table() -> Table {
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    t
}

/// Longest command line shown in a title; longer ones lose their middle.
const TITLE_COMMAND_CHARS: usize = 160;

/// The command line as a title shows it: control characters and bidirectional overrides
/// escaped, the middle of a very long one elided.
fn shown_command(s: &Summary) -> String {
    let line = s.command_line();
    let escaped = crate::text::escape_line(&line);
    crate::text::elide_middle(&escaped, TITLE_COMMAND_CHARS).into_owned()
}

pub fn render(s: &Summary) -> String {
    let mut out = String::new();
    let title = match s.mode {
        Mode::Command => quoted_title(" Energy of", &shown_command(s)),
        Mode::Pid => format!(
            " Energy while process {} ran:",
            s.pid.map(|p| p.to_string()).unwrap_or_default()
        ),
        Mode::All if s.command.is_empty() => " Energy of the whole machine:".to_string(),
        Mode::All => format!(
            "{} ran:",
            quoted_title(" Energy of the whole machine while", &shown_command(s))
                .trim_end_matches(':')
        ),
    };
    out.push('\n');
    out.push_str(&title);
    out.push_str("\n\n");
    if s.estimated {
        out.push_str(
            " ESTIMATED: no energy counters could be read on this machine; these numbers\n come from a CPU-utilisation power model, not a measurement (see `joulerun list`).\n\n",
        );
    }

    let mut t = new_table();
    t.set_header(vec!["domain", "source", "energy", "avg power", ""]);
    for d in &s.domains {
        let note = if d.estimated {
            "estimated".to_string()
        } else if !d.in_total {
            match d.kind {
                crate::sources::DomainKind::Psys => "whole platform, not added".to_string(),
                _ => "part of package".to_string(),
            }
        } else {
            String::new()
        };
        let note = if d.failed_reads > 0 {
            format!("{note} {} failed reads", d.failed_reads)
                .trim()
                .to_string()
        } else {
            note
        };
        let note = match d.glitches {
            0 => note,
            1 => format!("{note} 1 implausible reading").trim().to_string(),
            n => format!("{note} {n} implausible readings")
                .trim()
                .to_string(),
        };
        let note = if d.stuck {
            format!("{note} counter stuck").trim().to_string()
        } else {
            note
        };
        t.add_row(vec![
            crate::text::escape_line(&d.name).into_owned(),
            d.source.name().to_string(),
            fmt_joules(d.energy_j),
            fmt_watts(d.avg_power_w),
            note,
        ]);
    }
    let total_name = if s.total.estimated {
        "total (estimated)"
    } else {
        "total"
    };
    t.add_row(vec![
        total_name.to_string(),
        String::new(),
        fmt_joules(s.total.energy_j),
        fmt_watts(s.total.avg_power_w),
        String::new(),
    ]);
    for i in [2, 3] {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    if let Some(c) = t.column_mut(4) {
        c.set_constraint(ColumnConstraint::ContentWidth);
    }
    push_indented(&mut out, &t.to_string());
    out.push('\n');

    let est = if s.estimated { " (estimated)" } else { "" };
    let mut k = new_table();
    k.add_row(vec![
        "elapsed".to_string(),
        format!("{} s", sig(s.elapsed_s, 4)),
    ]);
    k.add_row(vec![
        "energy".to_string(),
        format!("{}{est}", fmt_kwh(s.total.energy_j)),
    ]);
    k.add_row(vec![
        "cost".to_string(),
        format!(
            "{}{est} at {} {}/kWh",
            fmt_money(s.cost.amount, &crate::text::escape_line(&s.cost.currency)),
            sig(s.cost.price_per_kwh, 3),
            crate::text::escape_line(&s.cost.currency)
        ),
    ]);
    if let Some(e) = &s.exit
        && e.status != 0
    {
        let how = match (e.code, e.signal) {
            (_, Some(sig)) => format!("{} (killed by signal {sig})", e.status),
            _ => e.status.to_string(),
        };
        k.add_row(vec!["exit status".to_string(), how]);
    }
    k.add_row(vec![
        "joulerun overhead".to_string(),
        format!(
            "{} s CPU ({}% of one core)",
            sig(s.overhead.cpu_s, 2),
            sig(s.overhead.percent_of_one_core, 2)
        ),
    ]);
    push_indented(&mut out, &k.to_string());

    if let Some(a) = &s.attribution {
        out.push('\n');
        out.push_str(&render_attribution(a, s.estimated));
    }

    if !s.warnings.is_empty() {
        out.push('\n');
        for w in &s.warnings {
            out.push_str(" warning: ");
            out.push_str(&crate::text::escape_text(w).replace('\n', "\n   "));
            out.push('\n');
        }
    }
    out.push('\n');
    out
}

fn render_attribution(a: &AttributionReport, estimated: bool) -> String {
    let m = &a.summary;
    let t = &m.total;
    let est = if estimated { " (estimated)" } else { "" };
    let method = match a.method {
        Some(TrackMethod::Cgroup) => "process tree followed through its own cgroup",
        Some(TrackMethod::Proc) => "process tree followed through /proc",
        None => "no process tree",
    };
    let mut out = format!(" Attribution ({method}):\n");
    let mut k = new_table();
    k.add_row(vec![
        "machine energy".to_string(),
        format!("{}{est}", fmt_joules(t.energy_j)),
        if m.baseline_used {
            format!(
                "static {} + dynamic {}",
                fmt_joules(t.static_j),
                fmt_joules(t.dynamic_j)
            )
        } else {
            "all counted as dynamic (no baseline)".to_string()
        },
    ]);
    k.add_row(vec![
        "command CPU time".to_string(),
        format!("{} s", sig(m.tree_cpu_s, 3)),
        format!("of {} s busy CPU time on the machine", sig(m.busy_cpu_s, 3)),
    ]);
    k.add_row(vec![
        "command dynamic".to_string(),
        format!("{}{est}", fmt_joules(t.command_dynamic_j)),
        format!("{}% of the dynamic energy", sig(100.0 * m.share, 3)),
    ]);
    if m.baseline_used {
        k.add_row(vec![
            "command static".to_string(),
            format!("{}{est}", fmt_joules(t.command_static_j)),
            "share of idle power by the CPU capacity it used".to_string(),
        ]);
    }
    k.add_row(vec![
        "command total".to_string(),
        format!("{}{est}", fmt_joules(m.command_total_j)),
        fmt_kwh(m.command_total_j),
    ]);
    k.add_row(vec![
        "joulerun itself".to_string(),
        format!("{}{est}", fmt_joules(m.overhead_j)),
        format!(
            "{} s CPU while sampling, not charged to the command",
            sig(m.overhead_cpu_s, 2)
        ),
    ]);
    if m.below_baseline_s > 0.0 {
        k.add_row(vec![
            "below baseline".to_string(),
            format!("{} s", sig(m.below_baseline_s, 3)),
            "measured power under the calibrated idle power".to_string(),
        ]);
    }
    push_indented(&mut out, &k.to_string());
    if let Some(note) = &a.baseline.note {
        out.push_str(" note: ");
        out.push_str(&crate::text::escape_text(note));
        out.push('\n');
    } else if let Some(at) = &a.baseline.taken_at {
        out.push_str(&format!(
            " baseline calibrated {}",
            crate::text::escape_line(at)
        ));
        if let Some(f) = &a.baseline.file {
            out.push_str(&format!(" ({})", crate::text::escape_line(f)));
        }
        out.push('\n');
    }
    out
}

/// `prefix 'cmd':`, or `prefix: cmd` when the command line has quotes of its own.
fn quoted_title(prefix: &str, cmd: &str) -> String {
    if cmd.contains('\'') {
        format!("{prefix}: {cmd}")
    } else {
        format!("{prefix} '{cmd}':")
    }
}

fn push_indented(out: &mut String, text: &str) {
    for line in text.lines() {
        out.push(' ');
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

pub fn write(s: &Summary, out: &mut dyn Write) -> std::io::Result<()> {
    out.write_all(render(s).as_bytes())?;
    out.flush()
}
