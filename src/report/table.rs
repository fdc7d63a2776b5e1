//! The human report, `perf stat` style, built with comfy-table. Goes to stderr unless
//! `-o FILE` says otherwise.

use std::io::Write;

use comfy_table::{CellAlignment, ColumnConstraint, Table, presets};

use crate::procs::TrackMethod;

use crate::sources::{Device, DomainKind, Place};

use super::markdown::with_spread;
use super::series::Repeat;
use super::{
    AttributionReport, DomainSummary, Mode, Summary, fmt_joules, fmt_kwh, fmt_money, fmt_watts, sig,
};
use crate::stats::Stats;

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
    let title = match &s.repeat {
        Some(r) => {
            let runs = if r.completed == r.requested {
                format!("{} runs", r.completed)
            } else {
                format!("{} of {} runs", r.completed, r.requested)
            };
            format!("{} ({runs}):", title.trim_end_matches(':'))
        }
        None => title,
    };
    // Launchers (issue 13): a rank whose node another rank measured has no energy here.
    if super::launcher::is_rank_only(s) {
        return super::launcher::render_rank(s, &title);
    }
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
    let rep = s.repeat.as_ref();
    let total_st = rep.and_then(|r| r.stats.total_j.as_ref());
    let total_j = total_st.map_or(s.total.energy_j, |x| x.mean);
    let elapsed_st = rep.and_then(|r| r.stats.elapsed_s.as_ref());
    let elapsed_s = elapsed_st.map_or(s.elapsed_s, |x| x.mean);
    for &i in &order {
        let d = &s.domains[i];
        let device = if last_device == Some(&d.device) {
            String::new()
        } else {
            crate::text::escape_line(&d.device.label()).into_owned()
        };
        last_device = Some(&d.device);
        let st = rep.and_then(|r| r.domain(&d.name));
        t.add_row(vec![
            device,
            crate::text::escape_line(&d.name).into_owned(),
            d.source.name().to_string(),
            with_spread(
                fmt_joules(st.map_or(d.energy_j, |x| x.energy_j.mean)),
                st.map(|x| &x.energy_j),
            ),
            with_spread(
                fmt_watts(st.map_or(d.avg_power_w, |x| x.avg_power_w.mean)),
                st.map(|x| &x.avg_power_w),
            ),
            gpu_note(s, d).unwrap_or_else(|| domain_note(d, s.total.of)),
        ]);
    }
    if let Some(rest) = s.total.rest_of_system_j.filter(|_| rep.is_none()) {
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
        with_spread(fmt_joules(total_j), total_st),
        fmt_watts(if elapsed_s > 0.0 {
            total_j / elapsed_s
        } else {
            0.0
        }),
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
    if let Some(line) = cpu_gpu_split(s) {
        out.push_str(&line);
    }
    out.push('\n');

    let est = if s.estimated { " (estimated)" } else { "" };
    let mut k = new_table();
    k.add_row(vec![
        "elapsed".to_string(),
        with_spread(format!("{} s", sig(elapsed_s, 4)), elapsed_st),
    ]);
    k.add_row(vec![
        "energy".to_string(),
        format!("{}{est}", fmt_kwh(total_j)),
    ]);
    let cost = total_j / super::J_PER_KWH * s.cost.price_per_kwh;
    k.add_row(vec![
        "cost".to_string(),
        format!(
            "{}{est} at {} {}/kWh",
            fmt_money(cost, &crate::text::escape_line(&s.cost.currency)),
            sig(s.cost.price_per_kwh, 3),
            crate::text::escape_line(&s.cost.currency)
        ),
    ]);
    // Carbon (issue 12): keys no longer than "joulerun overhead", which sets the column.
    let em = &s.emissions;
    k.add_row(vec![
        "CO2e".to_string(),
        format!(
            "{}{est} at {}",
            with_spread(
                crate::carbon::fmt_grams(
                    rep.and_then(|r| r.stats.co2e_g.as_ref())
                        .map_or(em.g_co2e, |x| x.mean)
                ),
                rep.and_then(|r| r.stats.co2e_g.as_ref())
            ),
            intensity_note(em)
        ),
    ]);
    if let (Some(pue), Some(kwh), Some(g)) = (em.pue, em.facility_kwh, em.facility_g_co2e) {
        k.add_row(vec![
            "facility".to_string(),
            format!(
                "{}, {} CO2e{est} at PUE {}",
                fmt_kwh(kwh * super::J_PER_KWH),
                crate::carbon::fmt_grams(g),
                sig(pue, 3)
            ),
        ]);
    }
    let status = super::separated::exit_status(s);
    if status != 0 {
        let how = match s.exit.as_ref().and_then(|e| e.signal) {
            Some(sig) if rep.is_none() => format!("{status} (killed by signal {sig})"),
            _ => status.to_string(),
        };
        let what = if rep.is_some() {
            "exit status (first failed run)"
        } else {
            "exit status"
        };
        k.add_row(vec![what.to_string(), how]);
    }
    k.add_row(overhead_row(s));
    push_indented(&mut out, &k.to_string());

    if let Some(r) = rep {
        out.push('\n');
        out.push_str(&render_series(r, s.estimated));
    }

    if let Some(a) = &s.attribution {
        out.push('\n');
        out.push_str(&render_attribution(
            a,
            s.estimated,
            &s.emissions,
            rep.is_some(),
        ));
        out.push_str(&gpu_shares(s));
    }
    out.push_str(&super::launcher::node_section(s));

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

/// "480.6 g/kWh, world average 2023 (Ember/Our World in Data via codecarbon 3.3.2)",
/// "380.95 g/kWh, DE (Germany) 2023 (...)", "250 g/kWh, given by --carbon-intensity".
fn intensity_note(em: &crate::carbon::Emissions) -> String {
    use crate::carbon::Basis;
    let what = match em.basis {
        Basis::WorldAverage => "world average".to_string(),
        Basis::Region => format!(
            "{} ({})",
            em.region.as_deref().unwrap_or("?"),
            em.region_name.as_deref().unwrap_or("?")
        ),
        Basis::Given => format!("given by {}", em.source),
    };
    let from = match (em.basis, em.year) {
        (Basis::Given, _) => String::new(),
        (_, Some(y)) => format!(" {y} ({})", em.source),
        (_, None) => format!(" ({})", em.source),
    };
    format!(
        "{} g/kWh, {}{from}",
        crate::carbon::fmt_intensity(em.intensity_g_per_kwh),
        crate::text::escape_line(&what)
    )
}

/// The series: how it ran, and each figure's mean, 95% interval, spread and range.
fn render_series(r: &Repeat, estimated: bool) -> String {
    let mut how = format!(
        "{} measured run{}",
        r.completed,
        if r.completed == 1 { "" } else { "s" }
    );
    if r.warmup > 0 {
        how.push_str(&format!(
            " after {} warm-up{}",
            r.warmup,
            if r.warmup == 1 { "" } else { "s" }
        ));
    }
    if r.cooldown_s > 0.0 {
        how.push_str(&format!(", {} s apart", sig(r.cooldown_s, 3)));
    }
    let mut out = format!(" Series ({how}):\n");
    let mut k = new_table();
    k.set_header(vec!["", "mean", "± 95% CI", "std dev", "min", "max"]);
    let est = if estimated { " (estimated)" } else { "" };
    let row = |k: &mut Table, name: String, st: &Stats, f: &dyn Fn(f64) -> String| {
        // One run has no spread to show.
        let spread = |s: String| if st.n > 1 { s } else { "-".to_string() };
        k.add_row(vec![
            name,
            f(st.mean),
            spread(format!("± {}", super::markdown::spread_pct(st.ci95_pct))),
            spread(f(st.sd)),
            f(st.min),
            f(st.max),
        ]);
    };
    let secs = |x: f64| format!("{} s", sig(x, 4));
    if let Some(st) = &r.stats.elapsed_s {
        row(&mut k, "elapsed".into(), st, &secs);
    }
    if let Some(st) = &r.stats.total_j {
        row(&mut k, format!("total{est}"), st, &fmt_joules);
    }
    if let Some(st) = &r.stats.command_j {
        row(&mut k, format!("command{est}"), st, &fmt_joules);
    }
    for c in 1..6 {
        if let Some(col) = k.column_mut(c) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    push_indented(&mut out, &k.to_string());
    out
}

fn render_attribution(
    a: &AttributionReport,
    estimated: bool,
    em: &crate::carbon::Emissions,
    last_of_series: bool,
) -> String {
    let m = &a.summary;
    let t = &m.total;
    let est = if estimated { " (estimated)" } else { "" };
    let method = match a.method {
        Some(TrackMethod::Cgroup) => "process tree followed through its own cgroup",
        Some(TrackMethod::Proc) => "process tree followed through /proc",
        None => "no process tree",
    };
    let mut out = if last_of_series {
        format!(" Attribution of the last run ({method}):\n")
    } else {
        format!(" Attribution ({method}):\n")
    };
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
    if let Some(g) = em.command_g_co2e {
        k.add_row(vec![
            "command CO2e".to_string(),
            format!("{}{est}", crate::carbon::fmt_grams(g)),
            format!(
                "at {} g/kWh",
                crate::carbon::fmt_intensity(em.intensity_g_per_kwh)
            ),
        ]);
    }
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

// GPUs (issue 9): the method, peak and partial flag in a GPU's note; the CPU/GPU split;
// the command's share of each GPU.

/// The note of a GPU row whose source says how it measured (NVML): its method, peak
/// power, resolution when the run was too short for it, and the usual notes.
fn gpu_note(s: &Summary, d: &DomainSummary) -> Option<String> {
    let g = s.gpu.as_ref()?.gpus.iter().find(|g| g.domain == d.name)?;
    let method = g.method?;
    let mut parts = vec![
        method.to_string(),
        format!("peak {}", fmt_watts(g.peak_power_w)),
    ];
    if !g.resolved {
        parts.push(format!(
            "not resolved (run < 2 x {} s)",
            sig(g.resolution_s.unwrap_or(0.0), 2)
        ));
    }
    let rest = domain_note(d, s.total.of);
    if !rest.is_empty() {
        parts.push(rest);
    }
    Some(parts.join(", "))
}

/// ` CPU / GPU: 12.30 J (20%) / 49.00 J (80%)`, when GPUs measured something.
fn cpu_gpu_split(s: &Summary) -> Option<String> {
    let g = s.gpu.as_ref()?;
    if g.gpu_j <= 0.0 && g.cpu_j <= 0.0 {
        return None;
    }
    Some(format!(
        " CPU / GPU{}: {} ({}%) / {} ({}%)\n",
        if s.repeat.is_some() {
            " (last run)"
        } else {
            ""
        },
        fmt_joules(g.cpu_j),
        sig(100.0 * (1.0 - g.gpu_fraction), 3),
        fmt_joules(g.gpu_j),
        sig(100.0 * g.gpu_fraction, 3)
    ))
}

/// The command's share of each GPU, and how it was found.
fn gpu_shares(s: &Summary) -> String {
    let Some(sec) = &s.gpu else {
        return String::new();
    };
    let mut k = new_table();
    for g in &sec.gpus {
        let (Some(share), Some(j)) = (g.command_share, g.command_j) else {
            continue;
        };
        let how: Vec<String> = g
            .share_methods
            .iter()
            .map(|m| match m.method {
                Some(x) => x.describe().to_string(),
                None => "modelled (no per-process use)".to_string(),
            })
            .collect();
        k.add_row(vec![
            format!("GPU {}", g.index),
            fmt_joules(j),
            format!(
                "{}% of its dynamic energy{}{}",
                sig(100.0 * share, 3),
                if how.is_empty() {
                    String::new()
                } else {
                    format!(": {}", how.join("; "))
                },
                if g.baseline_w.is_none() {
                    " (no idle baseline for it: all its energy is dynamic)"
                } else {
                    ""
                }
            ),
        ]);
    }
    if k.row_count() == 0 {
        return String::new();
    }
    let mut out = String::from(if s.repeat.is_some() {
        " Command's share of each GPU (last run):\n"
    } else {
        " Command's share of each GPU:\n"
    });
    push_indented(&mut out, &k.to_string());
    if let (Some(c), Some(g)) = (sec.command_cpu_j, sec.command_gpu_j) {
        out.push_str(&format!(
            " command CPU / GPU: {} / {}\n",
            fmt_joules(c),
            fmt_joules(g)
        ));
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

/// The "joulerun overhead" row of the report's key-value block (also a follower's).
pub(super) fn overhead_row(s: &Summary) -> Vec<String> {
    vec![
        "joulerun overhead".to_string(),
        format!(
            "{} s CPU ({}% of one core)",
            sig(s.overhead.cpu_s, 2),
            sig(s.overhead.percent_of_one_core, 2)
        ),
    ]
}

/// A comfy-table's text, each line indented by one space, trailing spaces cut.
pub(super) fn push_indented(out: &mut String, text: &str) {
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
