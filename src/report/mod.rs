//! Reports: the `Summary` every exporter reads, and one module per output format.
//! The measuring core knows nothing of formats; exporters know nothing of measuring.

pub mod csv;
pub mod gpu;
pub mod intervals;
pub mod json;
// Launchers (issue 13)
pub mod launcher;
pub mod markdown;
pub mod separated;
pub mod series;
// Carbon, OpenMetrics, plots (issue 12)
pub mod openmetrics;
pub mod plot;
pub mod push;
pub mod sink;
pub mod stream;
pub mod summary;
pub mod table;

pub use summary::totals;

use serde::Serialize;

use crate::attribution::AttributionSummary;
use crate::procs::TrackMethod;
use crate::sources::{Category, Device, DomainKind, Place, SourceKind};

/// Version of the JSON summary schema (docs/output-formats.md). Bump on any change
/// that is not a pure addition.
pub const SUMMARY_SCHEMA_VERSION: u32 = 1;

/// Joules in one kWh.
pub const J_PER_KWH: f64 = 3.6e6;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `joulerun -- CMD`
    Command,
    /// `joulerun -p PID`
    Pid,
    /// `joulerun -a [-- CMD]`: the machine only
    All,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExitInfo {
    /// The status joulerun exits with: the code, or 128+N for signal N.
    pub status: i32,
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DomainSummary {
    pub name: String,
    pub kind: DomainKind,
    pub socket: Option<u32>,
    pub source: SourceKind,
    pub estimated: bool,
    /// Whether this domain is added into `total`: the whole-machine domains when one was
    /// measured, else the parts (core/uncore are inside the package, psys overlaps
    /// everything: never).
    pub in_total: bool,
    pub energy_j: f64,
    pub avg_power_w: f64,
    /// Counter wraps corrected during the run.
    pub wraps: u64,
    /// Ticks on which the domain could not be read (their energy is missing).
    pub failed_reads: u64,
    pub first_error: Option<String>,
    /// Implausible readings ignored (their intervals' energy is unknown): a counter that
    /// jumped, went down without a plausible wrap, or read above its range; a bad power.
    pub glitches: u64,
    /// The first of them: what happened, with the power it would have meant.
    pub first_glitch: Option<String>,
    /// The counter did not change at all over the run (at least
    /// [`crate::counter::STUCK_MIN_S`]): its 0 J is not a measurement.
    pub stuck: bool,
    /// When the first failure happened, s.
    #[serde(skip)]
    pub first_error_s: Option<f64>,
    /// The device measured (a socket, a GPU, the chassis, ...).
    pub device: Device,
    pub category: Category,
    /// `place`: `whole`, `part`, `inside` (with `parent`) or `overlaps`.
    #[serde(flatten)]
    pub place: Place,
    /// Time its intervals covered, s (`avg_power_w` is over this time).
    pub measured_s: f64,
    /// The device went away for good at this time, s.
    pub gone_at_s: Option<f64>,
    /// Its reader had not returned its last sample when the run ended.
    pub unfinished: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Total {
    pub energy_j: f64,
    pub kwh: f64,
    pub avg_power_w: f64,
    pub estimated: bool,
    /// What the total is made of: `"whole"` (the chassis, a battery) or `"parts"`.
    pub of: &'static str,
    /// The domains summed.
    pub domains: Vec<String>,
    /// With a whole-machine domain: what it measured beyond the parts inside it, J.
    pub rest_of_system_j: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cost {
    pub price_per_kwh: f64,
    pub currency: String,
    pub amount: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Overhead {
    /// CPU time joulerun itself used (all threads), seconds.
    pub cpu_s: f64,
    /// That CPU time as a percentage of one core over the run.
    pub percent_of_one_core: f64,
}

/// Which baseline a run used.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BaselineStatus {
    pub used: bool,
    /// The baseline file read (or ignored).
    pub file: Option<String>,
    /// When it was calibrated, RFC 3339.
    pub taken_at: Option<String>,
    /// Why no baseline was used, and how to get one.
    pub note: Option<String>,
}

/// Attribution as reported: how the tree was followed, the baseline, and the numbers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AttributionReport {
    /// `cgroup` or `proc`; absent when no process was followed.
    pub method: Option<TrackMethod>,
    pub baseline: BaselineStatus,
    #[serde(flatten)]
    pub summary: AttributionSummary,
}

/// What a category of devices was measured through, or why it was not.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CategoryUse {
    pub category: Category,
    /// The interface read; `None`: not measured.
    pub interface: Option<SourceKind>,
    /// Why it was not measured, when that is worth saying (switched off; a battery on AC
    /// power; an interface that exists but cannot be read).
    pub note: Option<String>,
}

/// Everything a report prints. Serialisable; no formatting in it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub schema_version: u32,
    pub joulerun_version: String,
    pub mode: Mode,
    pub command: Vec<String>,
    pub pid: Option<i32>,
    /// Wall-clock start, RFC 3339 UTC.
    pub started_at: String,
    pub elapsed_s: f64,
    pub interval_ms: u64,
    pub ticks: u64,
    pub exit: Option<ExitInfo>,
    pub sources: Vec<SourceKind>,
    /// Per category of devices, the interface used or why none was.
    pub categories: Vec<CategoryUse>,
    /// True when any number in `total` comes from the estimate model.
    pub estimated: bool,
    pub domains: Vec<DomainSummary>,
    pub total: Total,
    pub cost: Cost,
    /// CO2e of `total` and of the command's share, with the intensity used (issue 12).
    pub emissions: crate::carbon::Emissions,
    /// The command's share (absent with `-a`).
    pub attribution: Option<AttributionReport>,
    pub overhead: Overhead,
    pub warnings: Vec<String>,
    /// GPUs (issue 9): one entry per GPU, the command's share of each, the CPU/GPU
    /// split. Absent when the run had no GPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu: Option<gpu::GpuSection>,
    /// The machine the run was on (`joulerun compare` refuses runs of two machines).
    pub machine: crate::baseline::MachineIdentity,
    /// The units of every figure (`joulerun compare` refuses runs in other units).
    pub units: Units,
    /// With `-r`: every run and the statistics over them. The rest of the summary is the
    /// last measured run's.
    pub repeat: Option<series::Repeat>,
    /// Launchers (issue 13): the rank's place in its job and its node's measurement;
    /// absent outside a launcher.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub launcher: Option<crate::launcher::LauncherReport>,
}

/// The units of a summary's figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Units {
    pub energy: &'static str,
    pub power: &'static str,
    pub time: &'static str,
}

impl Default for Units {
    fn default() -> Units {
        Units {
            energy: "J",
            power: "W",
            time: "s",
        }
    }
}

impl Summary {
    /// The command as one shell-like string, for titles (not escaped: see
    /// [`crate::text`]).
    pub fn command_line(&self) -> String {
        let argv: Vec<std::ffi::OsString> = self.command.iter().map(Into::into).collect();
        crate::plan::shell_words(&argv)
    }
}

/// `x` with `digits` significant digits, without exponent, trailing zeros kept to two
/// decimals at least: 0.0000011, 12.35, 1234.6.
pub fn sig(x: f64, digits: usize) -> String {
    let x = crate::text::no_negative_zero(x);
    if x == 0.0 || !x.is_finite() {
        return format!("{:.2}", if x.is_finite() { x } else { 0.0 });
    }
    let mag = x.abs().log10().floor() as i32;
    let decimals = (digits as i32 - 1 - mag).max(2) as usize;
    format!("{x:.decimals$}")
}

/// An energy in joules with its unit, scaled for reading: 812.3 J, 12.35 kJ, 3.40 MJ.
pub fn fmt_joules(j: f64) -> String {
    let j = crate::text::no_negative_zero(j);
    let a = j.abs();
    if a >= 1e6 {
        format!("{:.2} MJ", j / 1e6)
    } else if a >= 1e4 {
        format!("{:.2} kJ", j / 1e3)
    } else {
        format!("{} J", sig(j, 4))
    }
}

/// An energy as kWh, or Wh / mWh when small, with the unit shown.
pub fn fmt_kwh(j: f64) -> String {
    let kwh = crate::text::no_negative_zero(j / J_PER_KWH);
    let wh = kwh * 1e3;
    if kwh.abs() >= 0.1 {
        format!("{kwh:.3} kWh")
    } else if wh.abs() >= 0.1 {
        format!("{wh:.3} Wh")
    } else {
        format!("{} mWh", sig(wh * 1e3, 3))
    }
}

pub fn fmt_watts(w: f64) -> String {
    format!("{} W", sig(w, 4))
}

pub fn fmt_money(amount: f64, currency: &str) -> String {
    let amount = crate::text::no_negative_zero(amount);
    if amount.abs() >= 0.01 || amount == 0.0 {
        format!("{amount:.4} {currency}")
    } else {
        format!("{} {currency}", sig(amount, 2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formats() {
        assert_eq!(sig(0.0000011234, 2), "0.0000011");
        assert_eq!(sig(12.3456, 4), "12.35");
        assert_eq!(sig(1234.56, 4), "1234.56");
        assert_eq!(fmt_joules(812.34), "812.34 J");
        assert_eq!(fmt_joules(12_345.0), "12.35 kJ");
        assert_eq!(fmt_joules(3_400_000.0), "3.40 MJ");
        assert_eq!(fmt_kwh(3.6e6), "1.000 kWh");
        assert_eq!(fmt_kwh(3600.0), "1.000 Wh");
        assert_eq!(fmt_kwh(36.0), "10.00 mWh");
        assert_eq!(fmt_money(0.3, "EUR"), "0.3000 EUR");
        assert_eq!(fmt_money(0.0000031, "EUR"), "0.0000031 EUR");
        // Negative zero never shows.
        assert_eq!(sig(-0.0, 3), "0.00");
        assert_eq!(fmt_joules(-0.0), "0.00 J");
        assert_eq!(fmt_money(-0.0, "EUR"), "0.0000 EUR");
        assert_eq!(fmt_kwh(-0.0), "0.00 mWh");
    }
}
