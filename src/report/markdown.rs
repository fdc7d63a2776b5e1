//! `--markdown FILE`: a GitHub-flavoured Markdown summary of a run or a series, for a CI
//! job's step summary (`$GITHUB_STEP_SUMMARY`) or a merge-request comment.

use std::fmt::Write as _;

use super::series::Repeat;
use super::{Summary, fmt_joules, fmt_kwh, fmt_money, fmt_watts, sig};
use crate::stats::Stats;

/// Text from a run made safe in a Markdown table cell or paragraph: control characters
/// escaped ([`crate::text`]), and the characters Markdown or HTML would act on
/// backslash-escaped or replaced.
pub fn cell(s: &str) -> String {
    let s = crate::text::escape_line(s);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '|' | '\\' | '`' | '*' | '_' | '[' | ']' | '#' | '~' => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` as an inline code span, its fence longer than any run of backticks in it.
pub fn code(s: &str) -> String {
    let s = crate::text::escape_line(s).replace('|', "\\|");
    let longest = s.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    let pad = if s.starts_with('`') || s.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{s}{pad}{fence}")
}

/// A figure with the half-width of its 95% interval: `12.35 J ± 1.2%`.
pub fn with_spread(value: String, st: Option<&Stats>) -> String {
    match st {
        Some(s) if s.n > 1 => format!("{value} ± {}", spread_pct(s.ci95_pct)),
        _ => value,
    }
}

/// A relative spread as a percentage: `1.2%`, and `<0.01%` below that.
pub fn spread_pct(pct: f64) -> String {
    if pct < 0.01 {
        "<0.01%".to_string()
    } else {
        format!("{}%", sig(pct, 2))
    }
}

/// The estimate's caveat, in every format that shows an estimated figure.
pub const ESTIMATE_NOTE: &str = "no energy counters could be read on this machine (a VM or a hosted CI runner): these figures come from a CPU-utilisation power model, so they follow the command's CPU time, not measured power";

pub fn render(s: &Summary) -> String {
    let mut out = String::new();
    let rep = s.repeat.as_ref();
    let what = match s.mode {
        super::Mode::Pid => format!(
            "process {}",
            s.pid.map(|p| p.to_string()).unwrap_or_default()
        ),
        _ if s.command.is_empty() => "the whole machine".to_string(),
        _ => code(&crate::text::elide_middle(&s.command_line(), 160)),
    };
    let runs = match rep {
        Some(r) if r.completed == r.requested => format!(" ({} runs)", r.completed),
        Some(r) => format!(" ({} of {} runs)", r.completed, r.requested),
        None => String::new(),
    };
    let _ = writeln!(out, "### Energy of {what}{runs}\n");
    if s.estimated {
        let _ = writeln!(out, "> **Estimated:** {ESTIMATE_NOTE}.\n");
    }
    let _ = writeln!(out, "| device | domain | source | energy | avg power |");
    let _ = writeln!(out, "|---|---|---|--:|--:|");
    for d in &s.domains {
        let st = rep.and_then(|r| r.domain(&d.name));
        let e = st.map_or(d.energy_j, |x| x.energy_j.mean);
        let p = st.map_or(d.avg_power_w, |x| x.avg_power_w.mean);
        let _ = writeln!(
            out,
            "| {} | {}{} | {} | {} | {} |",
            cell(&d.device.label()),
            cell(&d.name),
            if d.in_total || d.estimated {
                ""
            } else {
                " (not added)"
            },
            d.source.name(),
            with_spread(fmt_joules(e), st.map(|x| &x.energy_j)),
            with_spread(fmt_watts(p), st.map(|x| &x.avg_power_w)),
        );
    }
    let total_st = rep.and_then(|r| r.stats.total_j.as_ref());
    let total = total_st.map_or(s.total.energy_j, |x| x.mean);
    let elapsed_st = rep.and_then(|r| r.stats.elapsed_s.as_ref());
    let elapsed = elapsed_st.map_or(s.elapsed_s, |x| x.mean);
    let est = if s.total.estimated {
        " (estimated)"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "| | **total{est}** | | **{}** | {} |\n",
        with_spread(fmt_joules(total), total_st),
        fmt_watts(if elapsed > 0.0 { total / elapsed } else { 0.0 }),
    );

    let _ = writeln!(out, "| | |");
    let _ = writeln!(out, "|---|--:|");
    if let Some(a) = &s.attribution {
        let st = rep.and_then(|r| r.stats.command_j.as_ref());
        let v = st.map_or(a.summary.command_total_j, |x| x.mean);
        let _ = writeln!(
            out,
            "| the command's energy | {}{est} |",
            with_spread(fmt_joules(v), st)
        );
    }
    let _ = writeln!(
        out,
        "| elapsed | {} |",
        with_spread(format!("{} s", sig(elapsed, 4)), elapsed_st)
    );
    let _ = writeln!(out, "| energy | {}{est} |", fmt_kwh(total));
    let currency = cell(&s.cost.currency);
    let _ = writeln!(
        out,
        "| cost | {}{est} at {} {currency}/kWh |",
        fmt_money(total / super::J_PER_KWH * s.cost.price_per_kwh, &currency),
        sig(s.cost.price_per_kwh, 3),
    );
    let co2 = rep.and_then(|r| r.stats.co2e_g.as_ref());
    let _ = writeln!(
        out,
        "| CO2e | {}{est} at {} g/kWh |",
        with_spread(
            crate::carbon::fmt_grams(co2.map_or(s.emissions.g_co2e, |x| x.mean)),
            co2
        ),
        crate::carbon::fmt_intensity(s.emissions.intensity_g_per_kwh),
    );
    let status = super::separated::exit_status(s);
    if status != 0 {
        let _ = writeln!(out, "| exit status | {status} |");
    }
    out.push('\n');
    if let Some(r) = rep {
        runs_table(&mut out, r);
    }
    for w in &s.warnings {
        let _ = writeln!(out, "> **Warning:** {}\n", cell(w));
    }
    out
}

fn runs_table(out: &mut String, r: &Repeat) {
    let mut head = format!(
        "<details><summary>{} measured run{}",
        r.completed,
        if r.completed == 1 { "" } else { "s" }
    );
    if r.warmup > 0 {
        let _ = write!(head, " after {} warm-up", r.warmup);
    }
    if let Some(why) = &r.stopped {
        let _ = write!(head, "; stopped: {}", cell(why));
    }
    let _ = writeln!(out, "{head}</summary>\n");
    let _ = writeln!(out, "| run | exit | elapsed | total | command |");
    let _ = writeln!(out, "|--:|--:|--:|--:|--:|");
    for x in &r.runs {
        let _ = writeln!(
            out,
            "| {} | {} | {} s | {} | {} |",
            x.run,
            x.exit_status,
            sig(x.elapsed_s, 4),
            fmt_joules(x.total_j),
            x.command_j.map(fmt_joules).unwrap_or_else(|| "-".into()),
        );
    }
    let _ = writeln!(out, "\n</details>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_and_code_spans_are_safe() {
        assert_eq!(cell("a|b <script> *x*"), "a\\|b &lt;script&gt; \\*x\\*");
        assert_eq!(cell("esc\x1b[31m"), "esc\\\\x1b\\[31m");
        assert_eq!(code("make test"), "`make test`");
        assert_eq!(code("echo `date`"), "`` echo `date` ``");
        assert_eq!(code("a|b"), "`a\\|b`");
    }
}
