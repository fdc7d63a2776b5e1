//! `-x SEP`: the end-of-run report as separator-delimited records instead of the table,
//! like `perf stat -x` (schema in docs/output-formats.md, "-x records").
//!
//! The first field of every record names its type, and each type has a fixed number of
//! fields: `schema_version` (2), the figures `energy`, `power`, `elapsed`, `cost` and
//! `exit_status` (11), `warning` (2). No padding; a field holding the separator, a
//! double quote or a line break is quoted CSV-style.

use super::intervals::{field, num};
use super::series::Repeat;
use super::{DomainSummary, J_PER_KWH, Summary};
use crate::stats::Stats;

/// Version of the `-x` records (and of the `-I` records with `-x`).
pub const SEPARATED_SCHEMA_VERSION: u32 = 1;

/// The fields of a figure record after its type, subject, value and unit.
struct Spread {
    runs: String,
    sd: String,
    min: String,
    max: String,
    ci95_pct: String,
}

impl Spread {
    fn of(st: Option<&Stats>, value: f64, scale: f64) -> Spread {
        match st {
            Some(s) => Spread {
                runs: s.n.to_string(),
                sd: num(s.sd * scale),
                min: num(s.min * scale),
                max: num(s.max * scale),
                ci95_pct: num(s.ci95_pct),
            },
            None => Spread {
                runs: "1".into(),
                sd: "0".into(),
                min: num(value),
                max: num(value),
                ci95_pct: "0".into(),
            },
        }
    }

    fn none(runs: usize) -> Spread {
        Spread {
            runs: runs.to_string(),
            sd: String::new(),
            min: String::new(),
            max: String::new(),
            ci95_pct: String::new(),
        }
    }
}

struct Records<'a> {
    sep: &'a str,
    out: String,
}

impl Records<'_> {
    fn push(&mut self, fields: &[&str]) {
        let line: Vec<String> = fields.iter().map(|f| field(f, self.sep)).collect();
        self.out.push_str(&line.join(self.sep));
        self.out.push('\n');
    }

    #[allow(clippy::too_many_arguments)]
    fn figure(
        &mut self,
        record: &str,
        subject: &str,
        value: f64,
        unit: &str,
        spread: Spread,
        source: &str,
        status: &str,
    ) {
        self.push(&[
            record,
            subject,
            &num(value),
            unit,
            &spread.runs,
            &spread.sd,
            &spread.min,
            &spread.max,
            &spread.ci95_pct,
            source,
            status,
        ]);
    }
}

fn status(estimated: bool) -> &'static str {
    if estimated { "estimated" } else { "measured" }
}

/// The value a figure shows: the series mean with `-r`, else the run's own.
fn shown(st: Option<&Stats>, run: f64) -> f64 {
    st.map_or(run, |s| s.mean)
}

/// The status joulerun exits with for this summary: a series' first failing run's, else
/// the run's.
pub fn exit_status(s: &Summary) -> i32 {
    match &s.repeat {
        Some(r) => r
            .runs
            .iter()
            .map(|x| x.exit_status)
            .find(|&c| c != 0)
            .unwrap_or(0),
        None => s.exit.as_ref().map_or(0, |e| e.status),
    }
}

fn domain_stats<'a>(
    rep: Option<&'a Repeat>,
    d: &DomainSummary,
) -> (Option<&'a Stats>, Option<&'a Stats>) {
    match rep.and_then(|r| r.domain(&d.name)) {
        Some(ds) => (Some(&ds.energy_j), Some(&ds.avg_power_w)),
        None => (None, None),
    }
}

/// The records of a summary, each ending with a newline.
pub fn render(s: &Summary, sep: &str) -> String {
    let mut r = Records {
        sep,
        out: String::new(),
    };
    r.push(&["schema_version", &SEPARATED_SCHEMA_VERSION.to_string()]);
    let rep = s.repeat.as_ref();
    for d in &s.domains {
        let (e, p) = domain_stats(rep, d);
        let name = crate::text::escape_line(&d.name);
        r.figure(
            "energy",
            &name,
            shown(e, d.energy_j),
            "J",
            Spread::of(e, shown(e, d.energy_j), 1.0),
            d.source.name(),
            status(d.estimated),
        );
        r.figure(
            "power",
            &name,
            shown(p, d.avg_power_w),
            "W",
            Spread::of(p, shown(p, d.avg_power_w), 1.0),
            d.source.name(),
            status(d.estimated),
        );
    }
    let total_st = rep.and_then(|r| r.stats.total_j.as_ref());
    let total = shown(total_st, s.total.energy_j);
    r.figure(
        "energy",
        "total",
        total,
        "J",
        Spread::of(total_st, total, 1.0),
        s.total.of,
        status(s.total.estimated),
    );
    let elapsed_st = rep.and_then(|r| r.stats.elapsed_s.as_ref());
    let elapsed = shown(elapsed_st, s.elapsed_s);
    let power = if elapsed > 0.0 { total / elapsed } else { 0.0 };
    r.figure(
        "power",
        "total",
        power,
        "W",
        Spread::none(rep.map_or(1, |r| r.runs.len())),
        s.total.of,
        status(s.total.estimated),
    );
    if let Some(rest) = s.total.rest_of_system_j
        && rep.is_none()
    {
        r.figure(
            "energy",
            "rest of system",
            rest,
            "J",
            Spread::of(None, rest, 1.0),
            "",
            status(s.total.estimated),
        );
    }
    if let Some(a) = &s.attribution {
        let st = rep.and_then(|r| r.stats.command_j.as_ref());
        let v = shown(st, a.summary.command_total_j);
        r.figure(
            "energy",
            "command",
            v,
            "J",
            Spread::of(st, v, 1.0),
            "",
            status(s.estimated),
        );
    }
    r.figure(
        "elapsed",
        "run",
        elapsed,
        "s",
        Spread::of(elapsed_st, elapsed, 1.0),
        "",
        "",
    );
    let per_j = s.cost.price_per_kwh / J_PER_KWH;
    r.figure(
        "cost",
        "total",
        total * per_j,
        &crate::text::escape_line(&s.cost.currency),
        Spread::of(total_st, total * per_j, per_j),
        "",
        status(s.total.estimated),
    );
    // Emissions are the energy times the grid intensity: their spread is the energy's.
    let per_j_co2 = s.emissions.intensity_g_per_kwh / J_PER_KWH;
    r.figure(
        "co2e",
        "total",
        total * per_j_co2,
        "g",
        Spread::of(total_st, total * per_j_co2, per_j_co2),
        "",
        status(s.total.estimated),
    );
    if let Some(a) = &s.attribution {
        let st = rep.and_then(|r| r.stats.command_j.as_ref());
        let v = shown(st, a.summary.command_total_j) * per_j_co2;
        r.figure(
            "co2e",
            "command",
            v,
            "g",
            Spread::of(st, v, per_j_co2),
            "",
            status(s.estimated),
        );
    }
    r.figure(
        "exit_status",
        "run",
        f64::from(exit_status(s)),
        "",
        Spread::none(rep.map_or(1, |r| r.runs.len())),
        "",
        "",
    );
    for w in &s.warnings {
        r.push(&["warning", &crate::text::escape_line(w)]);
    }
    r.out
}
