//! `joulerun plot RUN.csv -o FILE.svg`: a saved CSV timeline (schema 2) drawn like
//! `--plot` draws a run (issue 12).
//!
//! The CSV holds each domain's energy per tick or sample, but neither where a domain sits
//! nor the command's share nor a baseline: places come from the domain kinds
//! (`DomainKind::default_place`: packages, DRAM, GPUs and the estimate are stacked; the
//! chassis, else a battery, is the whole), and the plot says the share and baseline are
//! not in the file. The cost and the CO2e in the title use the price and carbon settings
//! of the environment (`JOULERUN_PRICE`, `JOULERUN_CURRENCY`, `JOULERUN_REGION`,
//! `JOULERUN_CARBON_INTENSITY`, `JOULERUN_PUE`), else their defaults.

use std::path::Path;

use crate::cli::PlotArgs;
use crate::error::{Error, Result};
use crate::output::{self, Dest, Requested};
use crate::plan::Env;
use crate::report::csv::{CSV_SCHEMA_VERSION, HEADER};
use crate::report::plot::{self, PlotInfo, Role, Series, Timeline};
use crate::sources::{DomainKind, Place};

/// Largest CSV read, bytes (a day at 100 ms with a dozen domains is about 1 GB; this is
/// a plot, not an archive).
const MAX_CSV_BYTES: u64 = 2 << 30;

struct Row {
    run: u32,
    domain: String,
    kind: DomainKind,
    start_s: f64,
    end_s: f64,
    energy_j: f64,
}

fn bad(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::usage(format!(
        "cannot plot '{}': {why}",
        crate::text::escape_line(&path.display().to_string())
    ))
}

/// The timelines of a CSV file's text: one per run (several for a `-r` series).
pub fn timeline_of_csv(path: &Path, text: &[u8]) -> Result<Vec<Timeline>> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(text);
    let header: Vec<String> = r
        .headers()
        .map_err(|e| bad(path, format!("not a CSV file ({e})")))?
        .iter()
        .map(str::to_string)
        .collect();
    let col = |name: &str| header.iter().position(|h| h == name);
    let Some(version_col) = col("schema_version") else {
        return Err(bad(
            path,
            "not a joulerun CSV timeline (no schema_version column)",
        ));
    };
    let mut rows = Vec::new();
    let mut first_version: Option<String> = None;
    for (n, rec) in r.records().enumerate() {
        let rec = rec.map_err(|e| bad(path, format!("row {}: {e}", n + 2)))?;
        let version = rec.get(version_col).unwrap_or("").to_string();
        if version != CSV_SCHEMA_VERSION.to_string() {
            return Err(bad(
                path,
                format!(
                    "it is a CSV timeline of schema {}; this joulerun plots schema {CSV_SCHEMA_VERSION} (record the run again with `joulerun --csv`)",
                    crate::text::escape_line(&version)
                ),
            ));
        }
        first_version.get_or_insert(version);
        // Schema 2 as first written had no `run` column (one run): a pure addition.
        if n == 0 && header != HEADER && header[..] != HEADER[..HEADER.len() - 1] {
            return Err(bad(path, "its header is not that of schema 2"));
        }
        let get = |name: &str| col(name).and_then(|i| rec.get(i)).unwrap_or("");
        let num = |name: &str| -> Result<f64> {
            get(name)
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| bad(path, format!("row {}: {name} is not a number", n + 2)))
        };
        let kind = DomainKind::parse(get("kind")).ok_or_else(|| {
            bad(
                path,
                format!(
                    "row {}: unknown kind '{}'",
                    n + 2,
                    crate::text::escape_line(get("kind"))
                ),
            )
        })?;
        let run = match get("run") {
            "" => 1,
            r => r
                .parse::<u32>()
                .map_err(|_| bad(path, format!("row {}: run is not a run number", n + 2)))?,
        };
        rows.push(Row {
            run,
            domain: get("domain").to_string(),
            kind,
            start_s: num("start_s")?,
            end_s: num("elapsed_s")?,
            energy_j: num("energy_delta_j")?,
        });
    }
    if rows.is_empty() {
        return Err(bad(
            path,
            "it has no rows (the run ended before its first tick?)",
        ));
    }
    let mut series: Vec<Series> = Vec::new();
    for r in &rows {
        if !series.iter().any(|s| s.name == r.domain) {
            series.push(Series {
                name: r.domain.clone(),
                kind: r.kind,
                role: match r.kind.default_place(None) {
                    Place::Part => Role::Part,
                    Place::Whole => Role::Whole,
                    _ => Role::Hidden,
                },
            });
        }
    }
    // The chassis is the whole when measured; a battery beside it is not added.
    if series.iter().any(|s| s.kind == DomainKind::Chassis) {
        for s in series.iter_mut().filter(|s| s.kind == DomainKind::Battery) {
            s.role = Role::Hidden;
        }
    }
    let step = rows
        .iter()
        .map(|r| r.end_s - r.start_s)
        .find(|d| *d > 0.0)
        .unwrap_or(0.1);
    let mut runs: Vec<(u32, Timeline)> = Vec::new();
    for r in &rows {
        if runs.last().is_none_or(|(n, _)| *n != r.run) {
            runs.push((r.run, Timeline::new(series.clone(), step)));
        }
        let t = &mut runs.last_mut().expect("just pushed").1;
        if let Some(k) = t.series.iter().position(|s| s.name == r.domain) {
            t.add(k, r.start_s, r.end_s, r.energy_j);
        }
    }
    Ok(runs.into_iter().map(|(_, t)| t).collect())
}

/// `joulerun plot`.
pub fn plot(args: &PlotArgs, env: Env<'_>) -> Result<i32> {
    let out = Requested {
        flag: "-o",
        what: "the plot",
        dest: Dest::parse(&args.output),
    };
    output::check(
        std::slice::from_ref(&out),
        &[(&args.input, "the CSV being plotted")],
    )?;
    let price = crate::config::parse_price(
        crate::config::setting(None, "--price", "JOULERUN_PRICE", env)?.as_ref(),
        crate::config::setting(None, "--currency", "JOULERUN_CURRENCY", env)?.as_ref(),
    )?;
    let carbon = crate::carbon::resolve(&crate::carbon::CarbonSettings::default(), env)?;
    let path = &args.input;
    let text = crate::fsx::read_regular(path, MAX_CSV_BYTES).map_err(|e| bad(path, e))?;
    let runs = timeline_of_csv(path, &text)?;
    let t = &runs[0];
    // With several runs (a `-r` series): the first is drawn, the others as its spread;
    // the title gives their mean.
    let energy_j = runs.iter().map(Timeline::total_j).sum::<f64>() / runs.len() as f64;
    let estimated = t.series.iter().any(|s| s.kind == DomainKind::Estimate);
    let em = crate::carbon::emissions(energy_j, None, &carbon, estimated);
    let est = if estimated { " (estimated)" } else { "" };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let info = PlotInfo {
        title: if runs.len() > 1 {
            format!(
                "Power of the {} runs in {}",
                runs.len(),
                crate::text::escape_line(&name)
            )
        } else {
            format!("Power of the run in {}", crate::text::escape_line(&name))
        },
        summary: format!(
            "{} ({}) · {} · {} CO2e{est} at {} g/kWh",
            crate::report::fmt_joules(energy_j),
            crate::report::fmt_kwh(energy_j),
            crate::report::fmt_money(
                energy_j / crate::report::J_PER_KWH * price.per_kwh,
                &price.currency
            ),
            crate::carbon::fmt_grams(em.g_co2e),
            crate::carbon::fmt_intensity(em.intensity_g_per_kwh),
        ),
        notes: vec![
            "from a saved timeline: the command's share and the baseline are not in it".to_string(),
        ],
    };
    let bytes = plot::document(&runs, &info, plot::wants_html(&out)).map_err(Error::failure)?;
    output::prepare(&out)?
        .finish(&bytes, out.flag)
        .map_err(|e| Error::failure(format!("writing the plot to {}: {e}", out.dest.describe())))?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_gives_one_timeline_per_run() {
        let p = Path::new("series.csv");
        let text = format!(
            "{}\n2,0.100000,package-0,package,0,powercap,false,1.000000,10.000000,socket:0,0.000000,1.000000,1\n2,0.100000,package-0,package,0,powercap,false,2.000000,20.000000,socket:0,0.000000,2.000000,2\n2,0.200000,package-0,package,0,powercap,false,2.000000,20.000000,socket:0,0.100000,4.000000,2\n",
            HEADER.join(",")
        );
        let runs = timeline_of_csv(p, text.as_bytes()).unwrap();
        assert_eq!(runs.len(), 2);
        assert!((runs[0].total_j() - 1.0).abs() < 1e-9);
        assert!((runs[1].total_j() - 4.0).abs() < 1e-9);
        let bad_run = text.replace(",2\n2,0.200000", ",x\n2,0.200000");
        let e = timeline_of_csv(p, bad_run.as_bytes()).unwrap_err();
        assert!(
            e.message.contains("run is not a run number"),
            "{}",
            e.message
        );
    }

    #[test]
    fn schema_2_is_read_and_others_refused() {
        let p = Path::new("run.csv");
        let ok = format!(
            "{}\n2,0.100000,package-0,package,0,powercap,false,1.000000,10.000000,socket:0,0.000000,1.000000\n2,0.100000,core-0,core,0,powercap,false,0.500000,5.000000,socket:0,0.000000,0.500000\n2,0.200000,package-0,package,0,powercap,false,1.000000,10.000000,socket:0,0.100000,2.000000\n",
            // Schema 2 as first written, without the `run` column.
            HEADER[..HEADER.len() - 1].join(",")
        );
        let t = timeline_of_csv(p, ok.as_bytes()).unwrap().remove(0);
        assert_eq!(t.series.len(), 2);
        assert_eq!(t.series[1].role, Role::Hidden);
        assert!(
            t.total_power().iter().all(|w| (w - 10.0).abs() < 1e-9),
            "{:?}",
            t.total_power()
        );
        let v1 = "schema_version,elapsed_s,domain,kind,socket,source,estimated,energy_delta_j,power_w,cumulative_j\n1,0.1,package-0,package,0,powercap,false,1,10,1\n";
        let e = timeline_of_csv(p, v1.as_bytes()).unwrap_err();
        assert!(
            e.message.contains("schema 1; this joulerun plots schema 2"),
            "{}",
            e.message
        );
        let e = timeline_of_csv(p, b"a,b\n1,2\n").unwrap_err();
        assert!(
            e.message.contains("not a joulerun CSV timeline"),
            "{}",
            e.message
        );
        let e = timeline_of_csv(p, format!("{}\n", HEADER.join(",")).as_bytes()).unwrap_err();
        assert!(e.message.contains("no rows"), "{}", e.message);
    }
}
