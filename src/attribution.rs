//! Attribution: static/dynamic split against a baseline and the command's share, per
//! socket, by CPU time. Pure functions and an accumulator; no I/O.
//!
//! PLACEHOLDER SIGNATURES: the implementation fills these in.

use serde::Serialize;

use crate::sources::Domain;

/// Everything one tick contributes, for every domain of the run.
pub struct TickInput<'a> {
    pub dt_s: f64,
    /// Energy of each domain this tick, J (same order as the domains given to `new`).
    pub energy_j: &'a [f64],
    /// CPU seconds of the command's tree this tick, per package index.
    pub tree_cpu_s: &'a [f64],
    /// Busy CPU seconds of the whole machine this tick, per package index.
    pub busy_cpu_s: &'a [f64],
    /// joulerun's own CPU seconds this tick, charged to package index 0's share pool
    /// for overhead reporting.
    pub self_cpu_s: f64,
}

/// Per-domain result.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DomainAttribution {
    pub energy_j: f64,
    pub static_j: f64,
    pub dynamic_j: f64,
    pub command_dynamic_j: f64,
    pub command_static_j: f64,
    pub below_baseline_s: f64,
}

pub struct Attributor {
    pub per_domain: Vec<DomainAttribution>,
}

impl Attributor {
    /// `baseline_w[i]`: the calibrated idle power of domain i, if any.
    /// `package_index[i]`: the package index of domain i (None: machine-wide).
    pub fn new(
        domains: &[Domain],
        baseline_w: Vec<Option<f64>>,
        cpus_per_socket: Vec<usize>,
    ) -> Attributor {
        let _ = (baseline_w, cpus_per_socket);
        Attributor {
            per_domain: vec![DomainAttribution::default(); domains.len()],
        }
    }

    pub fn tick(&mut self, t: &TickInput<'_>) {
        let _ = t;
    }
}
