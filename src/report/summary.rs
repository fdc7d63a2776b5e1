//! Building the [`Summary`] of a run: pure, from what the sampler and the attributor
//! accumulated. [`totals`] is the one function that decides what the total is.

use std::ffi::OsString;

use crate::config::Price;
use crate::sampler::Sampler;
use crate::sources::{Category, DomainKind, Place, SourceKind};
use crate::workload::Exit;

use super::{
    AttributionReport, Cost, DomainSummary, ExitInfo, J_PER_KWH, Mode, Overhead,
    SUMMARY_SCHEMA_VERSION, Summary, Total,
};

/// What the total of a run is made of.
#[derive(Clone, Debug, PartialEq)]
pub struct Totals {
    pub energy_j: f64,
    /// `"whole"` (the chassis, a battery) or `"parts"` (packages, DRAM, GPUs, the
    /// estimate), and the domains it sums.
    pub of: &'static str,
    pub domains: Vec<String>,
    pub estimated: bool,
    /// Whole-machine domains with readings that did not cover the run, so that the total
    /// is not theirs ([`covers_run`]).
    pub partial_whole: Vec<String>,
}

/// The least share of the run a whole-machine domain whose reads failed must still cover
/// to be the total.
pub const WHOLE_MIN_COVERAGE: f64 = 0.9;

/// Whether a whole-machine domain covered a run of `elapsed_s`: it had readings, and
/// either nothing went wrong with it (no failed read, its device never went away, its
/// reader finished: its samples then span the run as closely as its cadence allows), or
/// its intervals still cover [`WHOLE_MIN_COVERAGE`] of the run (a failed read loses the
/// intervals around it). A BMC that stopped answering halfway covers half the run: taken
/// as the total it would undercount the machine, so the parts are the total instead.
pub fn covers_run(d: &DomainSummary, elapsed_s: f64) -> bool {
    let clean = d.failed_reads == 0 && d.gone_at_s.is_none() && !d.unfinished;
    d.measured_s > 0.0 && (clean || d.measured_s >= WHOLE_MIN_COVERAGE * elapsed_s)
}

/// The total, from the structure of the domains: the whole-machine domains when they were
/// measured over the run (every one of them with readings [`covers_run`]), otherwise the
/// sum of the parts. The whole is one category's (the chassis at the wall when measured,
/// else a discharging battery: both at once would count the machine twice). Domains
/// inside another one, or overlapping several, are never added. Each domain's `in_total`
/// is set to whether it is in the total.
pub fn totals(domains: &mut [DomainSummary], elapsed_s: f64) -> Totals {
    let with_readings = |c: Category| {
        domains
            .iter()
            .filter(move |d| d.place == Place::Whole && d.category == c && d.measured_s > 0.0)
    };
    let whole = [Category::Chassis, Category::Battery]
        .into_iter()
        .find(|c| {
            with_readings(*c).next().is_some()
                && with_readings(*c).all(|d| covers_run(d, elapsed_s))
        });
    let partial_whole: Vec<String> = if whole.is_some() {
        Vec::new()
    } else {
        domains
            .iter()
            .filter(|d| d.place == Place::Whole && d.measured_s > 0.0)
            .map(|d| d.name.clone())
            .collect()
    };
    let of = if whole.is_some() { "whole" } else { "parts" };
    let mut t = Totals {
        energy_j: 0.0,
        of,
        domains: Vec::new(),
        estimated: false,
        partial_whole,
    };
    for d in domains.iter_mut() {
        d.in_total = match whole {
            Some(c) => d.place == Place::Whole && d.category == c,
            None => d.place == Place::Part,
        };
        if d.in_total {
            t.energy_j += d.energy_j;
            t.estimated |= d.estimated;
            t.domains.push(d.name.clone());
        }
    }
    t.energy_j = crate::text::no_negative_zero(t.energy_j);
    t
}

/// The warning of a run that measured nothing.
pub const NOTHING_MEASURED: &str = "no package, dram, GPU, estimate or whole-machine domain was measured: the total is 0 (see -e/--domains)";

/// Everything a summary is built from.
pub struct SummaryInput<'a> {
    pub mode: Mode,
    pub command: &'a [OsString],
    pub pid: Option<i32>,
    pub started_at: String,
    pub interval_ms: u64,
    pub exit: Option<Exit>,
    pub sampler: &'a Sampler,
    pub price: &'a Price,
    pub self_cpu_s: f64,
    pub warnings: Vec<String>,
    pub categories: Vec<super::CategoryUse>,
    pub attribution: Option<AttributionReport>,
    /// Intensity and PUE for the emissions (issue 12).
    pub carbon: &'a crate::carbon::Carbon,
    pub machine: crate::baseline::MachineIdentity,
}

/// The warnings about one domain's readings, in the order a report lists them.
fn domain_warnings(d: &DomainSummary, held: (f64, u64), out: &mut Vec<String>) {
    if let (Some(msg), Some(t)) = (&d.first_error, d.first_error_s) {
        out.push(format!(
            "{}: {} reads failed, the first at {:.2} s: {msg}; its energy during those ticks is missing",
            d.name, d.failed_reads, t
        ));
    }
    if let Some(t) = d.gone_at_s {
        out.push(format!(
            "{}: the device went away at {t:.2} s and was not read again: its energy is partial",
            d.name
        ));
    }
    if d.unfinished {
        out.push(format!(
            "{}: its last read had not returned when the run ended: the energy after its last sample is missing",
            d.name
        ));
    }
    if held.1 > 0 {
        out.push(format!(
            "{}: samples came more than the gap threshold apart {} times ({:.1} s in all): the last reading was held over those gaps",
            d.name, held.1, held.0
        ));
    }
}

/// Fold a finished run into its summary.
pub fn build(i: SummaryInput<'_>) -> Summary {
    let s = i.sampler;
    let el = s.elapsed_s();
    let per_s = |j: f64, over: f64| if over > 0.0 { j / over } else { 0.0 };
    let mut warnings = i.warnings;
    let mut domains = Vec::new();
    let mut sources: Vec<SourceKind> = Vec::new();
    for (k, ((d, acc), h)) in s
        .domains()
        .iter()
        .zip(s.accumulators())
        .zip(s.health())
        .enumerate()
    {
        if !sources.contains(&d.source) {
            sources.push(d.source);
        }
        let measured_s = s.measured_s().get(k).copied().unwrap_or(0.0);
        // A counter that never moved; the estimate is a model, never stuck.
        let unchanged_s = acc.unchanged_for_s().filter(|_| !d.estimated);
        let ds = DomainSummary {
            name: d.name.clone(),
            kind: d.kind,
            socket: d.socket,
            source: d.source,
            estimated: d.estimated,
            in_total: d.in_total(),
            energy_j: acc.total_j,
            // Over the time its intervals covered: a domain read less often, or with
            // gaps, is not diluted over time it was not measured.
            avg_power_w: per_s(acc.total_j, if measured_s > 0.0 { measured_s } else { el }),
            wraps: acc.wraps,
            failed_reads: h.failed_reads,
            first_error: h.first_error.as_ref().map(|(_, m)| m.clone()),
            first_error_s: h.first_error.as_ref().map(|(t, _)| *t),
            glitches: acc.glitches,
            first_glitch: acc.first_glitch.as_ref().map(|g| g.kind.to_string()),
            stuck: unchanged_s.is_some(),
            device: d.device.clone(),
            category: d.category(),
            place: d.place.clone(),
            measured_s,
            gone_at_s: h.gone_at,
            unfinished: h.unfinished,
        };
        domain_warnings(&ds, acc.held(), &mut warnings);
        if acc.resets > 0 {
            warnings.push(format!(
                "{}: the counter went down {} times and its wrap range is unknown: counted from zero each time, so its energy is a lower bound",
                d.name, acc.resets
            ));
        }
        if let Some(g) = &acc.first_glitch {
            warnings.push(format!(
                "{}: {} ignored, the first at {:.2} s ({}): the energy of {} is unknown",
                d.name,
                if acc.glitches == 1 {
                    "1 implausible reading".to_string()
                } else {
                    format!("{} implausible readings", acc.glitches)
                },
                g.t_s,
                g.kind,
                if acc.glitches == 1 {
                    "that interval"
                } else {
                    "those intervals"
                },
            ));
        }
        if let Some(still_s) = unchanged_s {
            warnings.push(format!(
                "{}: the counter did not change in {:.1} s: a stuck counter{}; its 0 J is not a measurement",
                d.name,
                still_s,
                if d.kind == DomainKind::Uncore {
                    " (or an integrated GPU powered off all along)"
                } else {
                    ""
                }
            ));
        }
        domains.push(ds);
    }
    let t = totals(&mut domains, el);
    for name in &t.partial_whole {
        if let Some(d) = domains.iter().find(|d| &d.name == name) {
            warnings.push(format!(
                "{}: measured {:.1} s of the {:.1} s run, so the total is the sum of the parts, not {}; its row shows what it measured",
                d.name, d.measured_s, el, d.name
            ));
        }
    }
    let mut attribution = i.attribution;
    if t.of == "parts"
        && let Some(a) = attribution.as_mut()
        && a.summary.total_of == "whole"
    {
        a.summary.use_parts_as_total();
    }
    if t.domains.is_empty() {
        warnings.push(NOTHING_MEASURED.to_string());
    }
    warnings.extend(
        attribution
            .as_ref()
            .and_then(|a| crate::attribution::clamped_warning(&a.summary, a.method)),
    );
    let rest = attribution
        .as_ref()
        .and_then(|a| a.summary.rest_of_system.clone());
    if let Some(r) = &rest
        && r.negative_intervals > 0
    {
        warnings.push(format!(
            "the parts measured more than the whole machine in {} of its samples ({} more in all): \
             those samples count no rest of system; a meter is off, or the samples are out of step",
            r.negative_intervals,
            super::fmt_joules(r.negative_j)
        ));
    }
    let gpu = super::gpu::section(
        &domains,
        s.domains(),
        s.peak_w(),
        el,
        attribution.as_ref().map(|a| &a.summary),
        &mut warnings,
    );
    let kwh = t.energy_j / J_PER_KWH;
    Summary {
        schema_version: SUMMARY_SCHEMA_VERSION,
        joulerun_version: env!("CARGO_PKG_VERSION").to_string(),
        mode: i.mode,
        command: i
            .command
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        pid: i.pid,
        started_at: i.started_at,
        elapsed_s: el,
        interval_ms: i.interval_ms,
        ticks: s.ticks(),
        exit: i.exit.map(|e| ExitInfo {
            status: e.status(),
            code: match e {
                Exit::Code(c) => Some(c),
                Exit::Signal(_) => None,
            },
            signal: match e {
                Exit::Signal(sig) => Some(sig),
                Exit::Code(_) => None,
            },
        }),
        sources,
        categories: i.categories,
        estimated: t.estimated,
        domains,
        total: Total {
            energy_j: t.energy_j,
            kwh,
            avg_power_w: per_s(t.energy_j, el),
            estimated: t.estimated,
            of: t.of,
            domains: t.domains,
            rest_of_system_j: rest.map(|r| r.energy_j),
        },
        cost: Cost {
            price_per_kwh: i.price.per_kwh,
            currency: i.price.currency.clone(),
            amount: kwh * i.price.per_kwh,
        },
        emissions: crate::carbon::emissions(
            t.energy_j,
            attribution.as_ref().map(|a| a.summary.command_total_j),
            i.carbon,
            t.estimated,
        ),
        attribution,
        machine: i.machine,
        units: super::Units::default(),
        repeat: None,
        launcher: None,
        overhead: Overhead {
            cpu_s: i.self_cpu_s,
            percent_of_one_core: if el > 0.0 {
                100.0 * i.self_cpu_s / el
            } else {
                0.0
            },
        },
        warnings,
        gpu,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::{Category, Device};

    fn dom(name: &str, place: Place, energy_j: f64, measured_s: f64) -> DomainSummary {
        DomainSummary {
            name: name.to_string(),
            kind: DomainKind::Package,
            socket: None,
            source: SourceKind::Powercap,
            estimated: false,
            in_total: false,
            energy_j,
            avg_power_w: 0.0,
            wraps: 0,
            failed_reads: 0,
            first_error: None,
            first_error_s: None,
            glitches: 0,
            first_glitch: None,
            stuck: false,
            device: Device::Machine,
            category: Category::Cpu,
            place,
            measured_s,
            gone_at_s: None,
            unfinished: false,
        }
    }

    #[test]
    fn the_total_is_the_whole_when_measured_else_the_parts() {
        let mut d = vec![
            dom("package-0", Place::Part, 100.0, 3.0),
            dom("core-0", Place::Inside("package-0".into()), 60.0, 3.0),
            dom("dram-0", Place::Part, 20.0, 3.0),
            dom("gpu-0", Place::Part, 200.0, 3.0),
            dom("psys", Place::Overlaps, 150.0, 3.0),
        ];
        let t = totals(&mut d, 3.0);
        assert_eq!((t.energy_j, t.of), (320.0, "parts"));
        assert_eq!(t.domains, ["package-0", "dram-0", "gpu-0"]);
        assert!(d[0].in_total && !d[1].in_total && !d[4].in_total);
        // A chassis with readings: it is the total, the parts are inside it.
        let mut chassis = dom("chassis", Place::Whole, 500.0, 3.0);
        chassis.category = Category::Chassis;
        d.push(chassis);
        let t = totals(&mut d, 3.0);
        assert_eq!((t.energy_j, t.of), (500.0, "whole"));
        assert_eq!(t.domains, ["chassis"]);
        assert!(!d[0].in_total && d[5].in_total);
        // A chassis that never answered is not a total of 0 J.
        d[5].measured_s = 0.0;
        d[5].energy_j = 0.0;
        assert_eq!(totals(&mut d, 3.0).of, "parts");
        // Two PSUs make the whole together.
        d[5].measured_s = 3.0;
        d[5].energy_j = 300.0;
        d[5].category = Category::Chassis;
        let mut psu = dom("psu-1", Place::Whole, 250.0, 3.0);
        psu.category = Category::Chassis;
        d.push(psu);
        assert_eq!(totals(&mut d, 3.0).energy_j, 550.0);
        // A battery measured beside the chassis is not added on top of it.
        let mut bat = dom("BAT0", Place::Whole, 40.0, 3.0);
        bat.category = Category::Battery;
        d.push(bat);
        let t = totals(&mut d, 3.0);
        assert_eq!((t.energy_j, t.domains.len()), (550.0, 2));
        assert!(!d[7].in_total);
        // A whole that failed and covered less than 90% of the run is not the total;
        // one whose reads failed but still covered it is.
        let mut d = vec![
            dom("package-0", Place::Part, 100.0, 3.0),
            dom("chassis", Place::Whole, 180.0, 1.5),
        ];
        d[1].category = Category::Chassis;
        d[1].failed_reads = 2;
        let t = totals(&mut d, 3.0);
        assert_eq!((t.of, t.energy_j), ("parts", 100.0));
        assert_eq!(t.partial_whole, ["chassis"]);
        assert!(!d[1].in_total);
        d[1].measured_s = 2.8;
        assert_eq!(totals(&mut d, 3.0).of, "whole");
        d[1].gone_at_s = Some(1.0);
        d[1].measured_s = 1.0;
        assert_eq!(totals(&mut d, 3.0).of, "parts");
        // Without failures, sampling alone never makes it partial (a slow BMC's last
        // sample can start a little before the end).
        d[1] = dom("chassis", Place::Whole, 180.0, 2.0);
        d[1].category = Category::Chassis;
        assert_eq!(totals(&mut d, 3.0).of, "whole");
        // Nothing measured: 0, never -0.
        let mut none: Vec<DomainSummary> = Vec::new();
        let t = totals(&mut none, 0.0);
        assert!(t.energy_j == 0.0 && t.energy_j.is_sign_positive());
    }
}
