//! Launchers (issue 13) in the table report: a node leader's ranks, and the short report
//! of a rank whose node another joulerun measured.

use comfy_table::{CellAlignment, Table, presets};

use super::{Summary, fmt_joules, sig};
use crate::launcher::{LauncherReport, Role};

fn escaped(s: &str) -> String {
    crate::text::escape_line(s).into_owned()
}

/// "rank 2 of job 42 (step 0) on n1".
fn place(l: &LauncherReport) -> String {
    format!("{} on {}", l.context.describe(), escaped(&l.node.hostname))
}

/// Whether the summary is a follower's (its node measured by another rank).
pub fn is_rank_only(s: &Summary) -> bool {
    s.launcher.as_ref().is_some_and(|l| l.role == Role::Rank)
}

/// The report of a rank whose node another rank measured: what it ran, its own facts,
/// and where its energy is.
pub fn render_rank(s: &Summary, title: &str) -> String {
    let Some(l) = &s.launcher else {
        return String::new();
    };
    let mut out = format!("\n{} ({}):\n\n", title.trim_end_matches(':'), place(l));
    if let Some(by) = &l.measured_by {
        out.push_str(&format!(
            " This node's devices were measured once, by {} (joulerun PID {}): this rank's\n energy and share are in that rank's report. `joulerun merge FILES...` combines them.\n\n",
            by.rank.map_or("another rank".to_string(), |r| format!("rank {r}")),
            by.pid
        ));
    }
    let mut k = Table::new();
    k.load_style(presets::NOTHING);
    k.add_row(vec![
        "elapsed".to_string(),
        format!("{} s", sig(s.elapsed_s, 4)),
    ]);
    k.add_row(vec![
        "command CPU time".to_string(),
        format!("{} s", sig(l.cpu_s, 3)),
    ]);
    let status = super::separated::exit_status(s);
    if status != 0 {
        k.add_row(vec!["exit status".to_string(), status.to_string()]);
    }
    k.add_row(super::table::overhead_row(s));
    super::table::push_indented(&mut out, &k.to_string());
    let note = l
        .measured_by
        .as_ref()
        .map(crate::launcher::share::follower_note);
    let others: Vec<&String> = s
        .warnings
        .iter()
        .filter(|w| Some(*w) != note.as_ref())
        .collect();
    if !others.is_empty() {
        out.push('\n');
        for w in others {
            out.push_str(" warning: ");
            out.push_str(&crate::text::escape_text(w).replace('\n', "\n   "));
            out.push('\n');
        }
    }
    out.push('\n');
    out
}

/// A node leader's ranks: who the node's reading covered, and each one's part of the
/// command's energy.
pub fn node_section(s: &Summary) -> String {
    let Some(l) = s.launcher.as_ref().filter(|l| l.role == Role::Node) else {
        return String::new();
    };
    let est = if s.estimated { " (estimated)" } else { "" };
    let mut out = if l.shared {
        format!(
            "\n Node {}: its devices were measured once, here, for {} rank{} ({}); the attribution above covers them all:\n",
            escaped(&l.node.hostname),
            l.ranks.len(),
            if l.ranks.len() == 1 { "" } else { "s" },
            escaped(
                &l.context
                    .job
                    .as_ref()
                    .map_or("no job id".to_string(), |j| format!("job {j}"))
            )
        )
    } else {
        format!(
            "\n Node {}: measured by this rank alone ({}):\n",
            escaped(&l.node.hostname),
            escaped(l.note.as_deref().unwrap_or("node sharing was off"))
        )
    };
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    t.set_header(vec![
        "rank",
        "step",
        "PID",
        "CPU time",
        "command energy",
        "exit",
    ]);
    for r in &l.ranks {
        t.add_row(vec![
            r.rank.map_or("?".to_string(), |x| x.to_string()),
            escaped(r.step.as_deref().unwrap_or("-")),
            r.pid.to_string(),
            format!("{} s", sig(r.cpu_s, 3)),
            r.command_j
                .map_or("-".to_string(), |j| format!("{}{est}", fmt_joules(j))),
            match (r.exit_status, r.complete) {
                (Some(x), _) => x.to_string(),
                (None, false) => "went away".to_string(),
                (None, true) => "-".to_string(),
            },
        ]);
    }
    for c in [3, 4] {
        if let Some(col) = t.column_mut(c) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    super::table::push_indented(&mut out, &t.to_string());
    out
}
