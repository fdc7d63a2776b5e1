//! GPUs in the reports (issue 9): one row per GPU with its method, resolution, peak power
//! and partial flag, the command's share of each, and the CPU/GPU split. Pure: built from
//! the summary's domains, the sampler's domain details and peaks, and the attribution.

use serde::Serialize;

use crate::attribution::{AttributionSummary, UsageShare};
use crate::sources::{Category, Device, Domain, Place, short_uuid};

use super::DomainSummary;

/// One GPU.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GpuReport {
    /// Its domain (`gpu-0`).
    pub domain: String,
    /// Its index (NVML's for NVML GPUs).
    pub index: u32,
    pub name: Option<String>,
    pub uuid: Option<String>,
    /// The first 8 hex digits of the uuid.
    pub short_uuid: Option<String>,
    /// `energy counter` or `power (integrated)` (NVML); `None` when the source does not say.
    pub method: Option<&'static str>,
    /// The readings' resolution, s (see [`crate::sources::MeasureDetail`]).
    pub resolution_s: Option<f64>,
    /// False when the run was shorter than twice the resolution: the energy is not
    /// resolved (a counter may not have stepped at all, or one whole step fell in the run).
    pub resolved: bool,
    /// The GPU was lost during the run, or its reader did not finish: energy until then.
    pub partial: bool,
    pub energy_j: f64,
    pub avg_power_w: f64,
    /// The highest power over one of its intervals, W.
    pub peak_power_w: f64,
    /// The command's part of its dynamic energy (absent with `-a`).
    pub command_share: Option<f64>,
    /// The command's energy on it, dynamic plus static share, J.
    pub command_j: Option<f64>,
    /// How the share was found, by method (`modelled` where the source gave no usage).
    pub share_methods: Vec<UsageShare>,
    /// True while any of its share was modelled rather than measured.
    pub modelled: Option<bool>,
    /// Its idle power from the baseline, W; `None`: no baseline for it, so all its
    /// energy counts as dynamic.
    pub baseline_w: Option<f64>,
}

/// The GPUs and the CPU/GPU split of the parts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GpuSection {
    pub gpus: Vec<GpuReport>,
    /// Energy of the CPU parts (packages, DRAM, the estimate), J.
    pub cpu_j: f64,
    /// Energy of the GPU parts, J.
    pub gpu_j: f64,
    /// `gpu_j / (cpu_j + gpu_j)`.
    pub gpu_fraction: f64,
    /// The command's energy on the CPU parts and on the GPUs (absent with `-a`), J.
    pub command_cpu_j: Option<f64>,
    pub command_gpu_j: Option<f64>,
}

/// The section, when the run has a GPU; the warnings about GPUs go to `warnings`.
pub fn section(
    domains: &[DomainSummary],
    sampled: &[Domain],
    peaks: &[f64],
    elapsed_s: f64,
    attribution: Option<&AttributionSummary>,
    warnings: &mut Vec<String>,
) -> Option<GpuSection> {
    let mut gpus = Vec::new();
    for (k, d) in domains.iter().enumerate() {
        let Device::Gpu { index, uuid, name } = &d.device else {
            continue;
        };
        let detail = sampled.get(k).and_then(|s| s.detail.as_ref());
        let att = attribution
            .and_then(|a| a.per_domain.get(k))
            .filter(|a| a.name == d.name);
        let partial = d.gone_at_s.is_some() || d.unfinished;
        let resolved = detail.is_none_or(|x| elapsed_s >= 2.0 * x.resolution_s);
        if let Some(x) = detail
            && !resolved
        {
            let step_j = d.avg_power_w * x.resolution_s;
            warnings.push(format!(
                "{}: the run ({:.3} s) is shorter than twice the {} (up to {} s): its {} is not resolved{}; run the command longer, or several times in one run",
                d.name,
                elapsed_s,
                x.resolution_of,
                x.resolution_s,
                super::fmt_joules(d.energy_j),
                if x.method != "energy counter" {
                    " (each reading is the power averaged over up to the last second)".to_string()
                } else if d.energy_j <= 0.0 {
                    " (the counter may simply not have stepped)".to_string()
                } else {
                    format!(
                        " (one step at this power is about {})",
                        super::fmt_joules(step_j)
                    )
                }
            ));
        }
        gpus.push(GpuReport {
            domain: d.name.clone(),
            index: *index,
            name: name.clone(),
            uuid: uuid.clone(),
            short_uuid: uuid.as_deref().map(short_uuid),
            method: detail.map(|x| x.method),
            resolution_s: detail.map(|x| x.resolution_s),
            resolved,
            partial,
            energy_j: d.energy_j,
            avg_power_w: d.avg_power_w,
            peak_power_w: peaks.get(k).copied().unwrap_or(0.0),
            command_share: att.map(|a| a.energy.share),
            command_j: att.map(|a| a.energy.command_total_j),
            share_methods: att.map(|a| a.usage.clone()).unwrap_or_default(),
            modelled: att.map(|a| a.modelled),
            baseline_w: att.and_then(|a| a.baseline_w),
        });
    }
    if gpus.is_empty() {
        return None;
    }
    let part = |c: Category| -> f64 {
        domains
            .iter()
            .filter(|d| d.place == Place::Part && d.category == c)
            .map(|d| d.energy_j)
            .sum()
    };
    let (cpu_j, gpu_j) = (part(Category::Cpu), part(Category::Gpu));
    let command = |c: Category| -> Option<f64> {
        attribution.map(|a| {
            a.per_domain
                .iter()
                .zip(domains)
                .filter(|(_, d)| d.place == Place::Part && d.category == c)
                .map(|(x, _)| x.energy.command_total_j)
                .sum()
        })
    };
    Some(GpuSection {
        gpus,
        cpu_j,
        gpu_j,
        gpu_fraction: if cpu_j + gpu_j > 0.0 {
            gpu_j / (cpu_j + gpu_j)
        } else {
            0.0
        },
        command_cpu_j: command(Category::Cpu),
        command_gpu_j: command(Category::Gpu),
    })
}
