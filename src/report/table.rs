//! The human report, `perf stat` style, built with comfy-table. Goes to stderr unless
//! `-o FILE` says otherwise.

use std::io::Write;

use comfy_table::{CellAlignment, ColumnConstraint, Table, presets};

use crate::procs::TrackMethod;

use crate::sources::{Device, DomainKind, Place};

use super::{
    AttributionReport, DomainSummary, Mode, Summary, fmt_joules, fmt_kwh, fmt_money, fmt_watts, sig,
};

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
    t.set_header(vec![
        "device",
        "domain",
        "source",
        "energy",
        "avg power",
        "",
    ]);
    // Grouped by device, categories in their order (CPU sockets, GPUs, chassis, battery,
    // meters), each device's domains in the order they were read.
    let mut order: Vec<usize> = (0..s.domains.len()).collect();
    order.sort_by_key(|&i| (s.domains[i].category, device_rank(&s.domains[i].device), i));
    let mut last_device: Option<&Device> = None;
    for &i in &order {
        let d = &s.domains[i];
        let device = if last_device == Some(&d.device) {
            String::new()
        } else {
            crate::text::escape_line(&d.device.label()).into_owned()
        };
        last_device = Some(&d.device);
        t.add_row(vec![
            device,
            crate::text::escape_line(&d.name).into_owned(),
            d.source.name().to_string(),
            fmt_joules(d.energy_j),
            fmt_watts(d.avg_power_w),
            domain_note(d, s.total.of),
        ]);
    }
    if let Some(rest) = s.total.rest_of_system_j {
        let over = s
            .attribution
            .as_ref()
            .and_then(|a| a.summary.rest_of_system.as_ref())
            .map_or(s.elapsed_s, |r| r.measured_s);
        t.add_row(vec![
            String::new(),
            "rest of system".to_string(),
            String::new(),
            fmt_joules(rest),
            fmt_watts(if over > 0.0 { rest / over } else { 0.0 }),
            "the whole machine minus the parts: fans, disks, PSU losses...".to_string(),
        ]);
    }
    let total_name = if s.total.estimated {
        "total (estimated)"
    } else {
        "total"
    };
    let total_note = match (s.total.of, s.total.domains.as_slice()) {
        (_, []) => "nothing measured".to_string(),
        ("whole", [one]) => format!("= {}", crate::text::escape_line(one)),
        ("whole", many) => format!("= {}", crate::text::escape_line(&many.join(" + "))),
        (_, [_]) => String::new(),
        _ => "sum of the parts".to_string(),
    };
    t.add_row(vec![
        String::new(),
        total_name.to_string(),
        String::new(),
        fmt_joules(s.total.energy_j),
        fmt_watts(s.total.avg_power_w),
        total_note,
    ]);
    for i in [3, 4] {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    if let Some(c) = t.column_mut(5) {
        c.set_constraint(ColumnConstraint::ContentWidth);
    }
    push_indented(&mut out, &t.to_string());
    // What each other category used, when it measured nothing worth a word.
    for c in &s.categories {
        if c.interface.is_none()
            && let Some(n) = &c.note
            && !n.starts_with("not measured (--")
        {
            out.push_str(&format!(
                " {}: {}\n",
                c.category,
                crate::text::escape_line(n)
            ));
        }
    }
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
    if let Some(r) = &m.rest_of_system {
        k.add_row(vec![
            "command rest of system".to_string(),
            format!("{}{est}", fmt_joules(r.command_j)),
            "modelled: its share of the whole machine, applied to the rest".to_string(),
        ]);
    }
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

/// Order of devices within a category: sockets and GPUs by index.
fn device_rank(d: &Device) -> u32 {
    match d {
        Device::Socket { index } | Device::Gpu { index, .. } => *index,
        Device::Machine => u32::MAX,
        _ => 0,
    }
}

/// The note of a domain's row: where it sits, and what went wrong with it.
fn domain_note(d: &DomainSummary, total_of: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    if d.estimated {
        parts.push("estimated".to_string());
    } else {
        match &d.place {
            Place::Inside(p) => parts.push(format!("inside {}", crate::text::escape_line(p))),
            Place::Overlaps if d.kind == DomainKind::Psys => {
                parts.push("whole platform, not added".to_string())
            }
            Place::Overlaps => parts.push("overlaps the parts, not added".to_string()),
            Place::Whole if !d.in_total && d.measured_s > 0.0 => {
                parts.push("partial, not the total".to_string())
            }
            Place::Whole if !d.in_total => parts.push("no readings".to_string()),
            Place::Part if total_of == "whole" => parts.push("inside the whole".to_string()),
            _ => {}
        }
    }
    if d.failed_reads > 0 {
        parts.push(format!("{} failed reads", d.failed_reads));
    }
    match d.glitches {
        0 => {}
        1 => parts.push("1 implausible reading".to_string()),
        n => parts.push(format!("{n} implausible readings")),
    }
    if d.stuck {
        parts.push("counter stuck".to_string());
    }
    if d.gone_at_s.is_some() || d.unfinished {
        parts.push("partial".to_string());
    }
    parts.join(", ")
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
