//! A series of runs (`-r N`): what each run measured, and the statistics over them.
//!
//! Pure: the run loop hands each measured run's [`Summary`] to [`RunRecord::of`], and
//! [`Repeat::new`] computes the statistics (`crate::stats`). Every report reads the
//! result from `Summary::repeat`.

use serde::{Deserialize, Serialize};

use crate::stats::{self, Stats};

use super::Summary;

/// One measured run of a series, as the JSON keeps it (and `joulerun compare` reads it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// 1-based, warm-ups not counted.
    pub run: u32,
    pub started_at: String,
    /// The status the run's command ended with (0 without a command's exit).
    pub exit_status: i32,
    pub elapsed_s: f64,
    /// The machine's total, J.
    pub total_j: f64,
    /// The command's attributed energy, J (absent with `-a`).
    pub command_j: Option<f64>,
    /// Any figure of this run comes from the estimate model.
    pub estimated: bool,
    /// The machine's emissions, gCO2e (`Summary::emissions`).
    #[serde(default)]
    pub co2e_g: f64,
    /// Each domain's energy, J, in the order of the report.
    pub domains: Vec<RunDomain>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunDomain {
    pub name: String,
    pub energy_j: f64,
    pub avg_power_w: f64,
}

impl RunRecord {
    /// What run number `run` of a series measured.
    pub fn of(run: u32, s: &Summary) -> RunRecord {
        RunRecord {
            run,
            started_at: s.started_at.clone(),
            exit_status: s.exit.as_ref().map_or(0, |e| e.status),
            elapsed_s: s.elapsed_s,
            total_j: s.total.energy_j,
            command_j: s.attribution.as_ref().map(|a| a.summary.command_total_j),
            estimated: s.estimated,
            co2e_g: s.emissions.g_co2e,
            domains: s
                .domains
                .iter()
                .map(|d| RunDomain {
                    name: d.name.clone(),
                    energy_j: d.energy_j,
                    avg_power_w: d.avg_power_w,
                })
                .collect(),
        }
    }
}

/// The statistics of one domain over the runs that measured it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DomainStats {
    pub name: String,
    pub energy_j: Stats,
    pub avg_power_w: Stats,
}

/// The statistics of a series: each figure over every measured run (failed runs kept
/// with `--keep-going` included: they are what the command did).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeriesStats {
    pub elapsed_s: Option<Stats>,
    pub total_j: Option<Stats>,
    pub command_j: Option<Stats>,
    pub co2e_g: Option<Stats>,
    pub domains: Vec<DomainStats>,
}

/// `Summary::repeat`: the series as run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Repeat {
    /// `-r N`.
    pub requested: u32,
    /// Measured runs that ran to their end.
    pub completed: u32,
    /// `--warmup K` (the warm-up runs that ran are not in `runs`).
    pub warmup: u32,
    pub cooldown_s: f64,
    pub keep_going: bool,
    /// Why the series ended before its `requested` runs, if it did.
    pub stopped: Option<String>,
    pub runs: Vec<RunRecord>,
    pub stats: SeriesStats,
}

impl Repeat {
    pub fn new(
        requested: u32,
        warmup: u32,
        cooldown_s: f64,
        keep_going: bool,
        stopped: Option<String>,
        runs: Vec<RunRecord>,
    ) -> Repeat {
        let of = |f: &dyn Fn(&RunRecord) -> Option<f64>| -> Option<Stats> {
            let xs: Vec<f64> = runs.iter().filter_map(f).collect();
            stats::describe(&xs)
        };
        // Domains in the order they first appear.
        let mut names: Vec<&str> = Vec::new();
        for r in &runs {
            for d in &r.domains {
                if !names.contains(&d.name.as_str()) {
                    names.push(&d.name);
                }
            }
        }
        let domains = names
            .iter()
            .filter_map(|name| {
                let pick = |f: fn(&RunDomain) -> f64| -> Vec<f64> {
                    runs.iter()
                        .filter_map(|r| r.domains.iter().find(|d| d.name == *name).map(f))
                        .collect()
                };
                Some(DomainStats {
                    name: name.to_string(),
                    energy_j: stats::describe(&pick(|d| d.energy_j))?,
                    avg_power_w: stats::describe(&pick(|d| d.avg_power_w))?,
                })
            })
            .collect();
        let stats = SeriesStats {
            elapsed_s: of(&|r| Some(r.elapsed_s)),
            total_j: of(&|r| Some(r.total_j)),
            command_j: if runs.iter().all(|r| r.command_j.is_some()) {
                of(&|r| r.command_j)
            } else {
                None
            },
            co2e_g: of(&|r| Some(r.co2e_g)),
            domains,
        };
        Repeat {
            requested,
            completed: runs.len() as u32,
            warmup,
            cooldown_s,
            keep_going,
            stopped,
            runs,
            stats,
        }
    }

    /// The statistics of domain `name`.
    pub fn domain(&self, name: &str) -> Option<&DomainStats> {
        self.stats.domains.iter().find(|d| d.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(run: u32, total: f64, pkg: f64, cmd: Option<f64>) -> RunRecord {
        RunRecord {
            run,
            started_at: String::new(),
            exit_status: 0,
            elapsed_s: 1.0 + run as f64 / 10.0,
            total_j: total,
            command_j: cmd,
            estimated: false,
            co2e_g: total / 10.0,
            domains: vec![RunDomain {
                name: "package-0".into(),
                energy_j: pkg,
                avg_power_w: pkg,
            }],
        }
    }

    #[test]
    fn statistics_over_the_runs() {
        let r = Repeat::new(
            3,
            1,
            0.0,
            false,
            None,
            vec![
                rec(1, 10.0, 9.0, Some(5.0)),
                rec(2, 12.0, 11.0, Some(6.0)),
                rec(3, 11.0, 10.0, Some(7.0)),
            ],
        );
        assert_eq!(r.completed, 3);
        let t = r.stats.total_j.unwrap();
        assert_eq!(
            (t.n, t.mean, t.min, t.max, t.sd),
            (3, 11.0, 10.0, 12.0, 1.0)
        );
        assert_eq!(r.domain("package-0").unwrap().energy_j.mean, 10.0);
        assert_eq!(r.stats.command_j.unwrap().mean, 6.0);
        assert!((r.stats.elapsed_s.unwrap().mean - 1.2).abs() < 1e-12);
    }

    #[test]
    fn a_domain_missing_from_a_run_has_fewer_values() {
        let mut second = rec(2, 12.0, 11.0, None);
        second.domains.push(RunDomain {
            name: "gpu0".into(),
            energy_j: 4.0,
            avg_power_w: 4.0,
        });
        let r = Repeat::new(
            2,
            0,
            0.0,
            false,
            None,
            vec![rec(1, 10.0, 9.0, Some(1.0)), second],
        );
        assert_eq!(r.domain("gpu0").unwrap().energy_j.n, 1);
        assert_eq!(r.domain("package-0").unwrap().energy_j.n, 2);
        // The command's share is summarised only when every run has one.
        assert_eq!(r.stats.command_j, None);
    }
}
