//! `joulerun merge FILES...` (issue 13): the `--json` files of a launched job's ranks
//! combined into one report of the job.
//!
//! Files are of two kinds (their `launcher.role`): a *reading* of a node (`node`: the
//! rank that measured the node's devices, for every rank listed in its `ranks`; also any
//! summary written outside a launcher), and a *rank* file (`rank`: a rank whose node
//! another rank measured, holding no energy). Readings are grouped by node identity (host
//! name and boot id, never the file name); a node's readings of disjoint windows add up
//! (a rank that came after its node's leader had finished led a later reading); readings
//! of one node that overlap in time (ranks that each measured the node by themselves,
//! because node sharing was off) count the node once: the longest is kept, and the job's
//! share there is the sum of theirs, as fractions of it. Nothing is counted twice:
//! copies of one file are merged into one, two different runs claiming the same rank are
//! refused, and so are files of different jobs unless `--force`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cli::MergeArgs;
use crate::error::{Error, Result};
use crate::launcher::{LauncherReport, NodeIdentity, RankShare, Role};
use crate::output::{Dest, Requested};
use crate::report::{J_PER_KWH, fmt_joules, fmt_kwh, fmt_money, sig};

/// A rank in a job: its job, its step and its rank.
type RankKey = (Option<String>, Option<String>, u32);

/// The version of `merge --json`.
pub const MERGE_SCHEMA_VERSION: u32 = 1;

/// Two readings of one node overlap when they share more than this part of the shorter
/// one's window (a leader handing over to the next overlaps by milliseconds).
const OVERLAP_FRACTION: f64 = 0.25;

// What merge reads from a summary (unknown fields are ignored).

#[derive(Debug, Deserialize)]
struct In {
    schema_version: u32,
    #[serde(default)]
    command: Vec<String>,
    started_at: String,
    elapsed_s: f64,
    exit: Option<InExit>,
    #[serde(default)]
    sources: Vec<String>,
    #[serde(default)]
    estimated: bool,
    domains: Vec<InDomain>,
    total: InTotal,
    cost: InCost,
    emissions: Option<InEmissions>,
    attribution: Option<InAttribution>,
    machine: Option<InMachine>,
    repeat: Option<InRepeat>,
    launcher: Option<LauncherReport>,
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct InExit {
    status: i32,
}

#[derive(Debug, Deserialize, Clone)]
struct InDomain {
    name: String,
    kind: String,
    source: String,
    #[serde(default)]
    in_total: bool,
    energy_j: f64,
}

#[derive(Debug, Deserialize)]
struct InTotal {
    energy_j: f64,
}

#[derive(Debug, Deserialize)]
struct InCost {
    price_per_kwh: f64,
    currency: String,
}

#[derive(Debug, Deserialize)]
struct InEmissions {
    intensity_g_per_kwh: f64,
    pue: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct InAttribution {
    total: InSplit,
}

#[derive(Debug, Deserialize)]
struct InSplit {
    static_j: f64,
    dynamic_j: f64,
    command_dynamic_j: f64,
    command_static_j: f64,
}

#[derive(Debug, Deserialize)]
struct InMachine {
    hostname: String,
}

#[derive(Debug, Deserialize)]
struct InRepeat {
    completed: u32,
}

/// One file, read and checked.
struct File {
    label: String,
    input: In,
}

impl File {
    fn role(&self) -> Role {
        self.input.launcher.as_ref().map_or(Role::Node, |l| l.role)
    }

    fn job(&self) -> Option<&str> {
        self.input
            .launcher
            .as_ref()
            .and_then(|l| l.context.job.as_deref())
    }

    fn node(&self) -> NodeIdentity {
        match &self.input.launcher {
            Some(l) => l.node.clone(),
            None => NodeIdentity {
                hostname: self
                    .input
                    .machine
                    .as_ref()
                    .map_or("unknown".to_string(), |m| m.hostname.clone()),
                boot_id: None,
            },
        }
    }

    /// The window it measured, Unix seconds.
    fn window(&self) -> (f64, f64) {
        let start = match &self.input.launcher {
            Some(l) => l.started_unix_s,
            None => humantime::parse_rfc3339(&self.input.started_at)
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0.0, |d| d.as_secs_f64()),
        };
        (start, start + self.input.elapsed_s.max(0.0))
    }

    /// What makes two files copies of one run: joulerun's PID and its start.
    fn run_key(&self) -> (NodeIdentity, u32, u64) {
        let pid = self
            .input
            .launcher
            .as_ref()
            .and_then(|l| match l.role {
                Role::Node => l.ranks.first().map(|r| r.pid),
                Role::Rank => None,
            })
            .unwrap_or(0);
        let pid = if pid == 0 {
            // A rank file: its own PID is not recorded apart; its place is its identity.
            self.input
                .launcher
                .as_ref()
                .and_then(|l| l.context.rank)
                .unwrap_or(u32::MAX)
        } else {
            pid
        };
        (self.node(), pid, (self.window().0 * 1e3) as u64)
    }

    fn rank_key(&self) -> Option<RankKey> {
        let l = self.input.launcher.as_ref()?;
        Some((
            l.context.job.clone(),
            l.context.step.clone(),
            l.context.rank?,
        ))
    }
}

fn read_file(path: &Path) -> Result<File> {
    let label = crate::text::escape_line(&path.display().to_string()).into_owned();
    let fail = |why: String| Error::usage(format!("'{label}': {why}"));
    let bytes = crate::compare::read_summary_file(path).map_err(fail)?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        if e.is_eof() {
            fail(format!(
                "is cut short: the JSON ends at line {}, column {}, in the middle of the summary (a copy made while it was written, a full disk?); give the complete file, or leave it out and see which rank goes missing",
                e.line(),
                e.column()
            ))
        } else {
            fail(format!(
                "is not a joulerun JSON summary ({e}); give the --json files the ranks wrote"
            ))
        }
    })?;
    if value.get("merge_schema_version").is_some() {
        return Err(fail(
            "is a merged report (`joulerun merge --json`), not a rank's summary: give the files the ranks wrote".into(),
        ));
    }
    match value.get("schema_version").and_then(|v| v.as_u64()) {
        None => {
            return Err(fail(
                "is not a joulerun JSON summary (no schema_version); give the --json files the ranks wrote"
                    .into(),
            ));
        }
        Some(v) if v != u64::from(crate::report::SUMMARY_SCHEMA_VERSION) => {
            return Err(fail(format!(
                "has summary schema version {v}, and this joulerun reads version {}: merge files written by one joulerun version",
                crate::report::SUMMARY_SCHEMA_VERSION
            )));
        }
        Some(_) => {}
    }
    let input: In = serde_json::from_value(value).map_err(|e| {
        fail(format!(
            "is not a complete joulerun JSON summary ({e}); give the --json files the ranks wrote"
        ))
    })?;
    let _ = input.schema_version;
    if input.repeat.as_ref().is_some_and(|r| r.completed > 1) {
        return Err(fail(
            "is a -r series: its figures are its last run's; merge files of single runs".into(),
        ));
    }
    let numbers = [input.elapsed_s, input.total.energy_j]
        .into_iter()
        .chain(input.domains.iter().map(|d| d.energy_j));
    if numbers.clone().any(|x| !x.is_finite() || x < 0.0) {
        return Err(fail(
            "holds an energy or a time that is not a number".into(),
        ));
    }
    Ok(File { label, input })
}

/// One domain of a node, summed over its readings.
#[derive(Clone, Debug, Serialize)]
pub struct NodeDomain {
    pub name: String,
    pub kind: String,
    pub source: String,
    pub in_total: bool,
    pub energy_j: f64,
}

/// One rank of the job.
#[derive(Clone, Debug, Serialize)]
pub struct MergedRank {
    /// Its job (several only with `--force`).
    pub job: Option<String>,
    pub rank: Option<u32>,
    pub step: Option<String>,
    /// The host name of the node it ran on, when known.
    pub node: Option<String>,
    pub pid: Option<u32>,
    pub cpu_s: Option<f64>,
    /// Its part of the job's energy on its node, J (null: not attributed, or its node's
    /// reading is missing).
    pub job_j: Option<f64>,
    pub exit_status: Option<i32>,
    /// The file it wrote, if given.
    pub file: Option<String>,
    /// Whether a node's reading covered it.
    pub measured: bool,
}

/// One node of the job.
#[derive(Clone, Debug, Serialize)]
pub struct MergedNode {
    pub hostname: String,
    pub boot_id: Option<String>,
    /// The launcher's index and name of the node, when it gave them.
    pub node_index: Option<u32>,
    pub node_name: Option<String>,
    pub sources: Vec<String>,
    pub estimated: bool,
    /// The readings counted (disjoint windows), and the files.
    pub readings: usize,
    pub files: Vec<String>,
    /// Readings left out because another reading of the same time was kept.
    pub overlapping_files: Vec<String>,
    pub measured_s: f64,
    pub domains: Vec<NodeDomain>,
    pub energy_j: f64,
    pub kwh: f64,
    pub static_j: Option<f64>,
    pub dynamic_j: Option<f64>,
    /// The job's energy on the node: its dynamic and static parts and their sum (null
    /// when a reading attributed nothing, `-a`).
    pub job_dynamic_j: Option<f64>,
    pub job_static_j: Option<f64>,
    pub job_j: Option<f64>,
    /// `job_dynamic_j / dynamic_j`.
    pub job_share: Option<f64>,
    pub cost: f64,
    pub currency: String,
    pub g_co2e: f64,
    pub job_g_co2e: Option<f64>,
    pub ranks: Vec<MergedRank>,
}

#[derive(Clone, Debug, Serialize)]
pub struct MergedTotal {
    pub energy_j: f64,
    pub kwh: f64,
    pub estimated: bool,
    pub job_j: Option<f64>,
    pub job_kwh: Option<f64>,
    pub job_dynamic_j: Option<f64>,
    pub dynamic_j: Option<f64>,
    /// The job's dynamic energy over the nodes' dynamic energy.
    pub job_share: Option<f64>,
    /// `null` when the nodes priced energy in different currencies.
    pub cost: Option<f64>,
    pub job_cost: Option<f64>,
    pub currency: Option<String>,
    pub g_co2e: f64,
    pub job_g_co2e: Option<f64>,
}

/// The job's report.
#[derive(Clone, Debug, Serialize)]
pub struct Merged {
    pub merge_schema_version: u32,
    pub joulerun_version: String,
    /// The job (null: the files have no job id); with `--force`, every job merged.
    pub job: Option<String>,
    pub jobs: Vec<Option<String>>,
    pub command: Vec<String>,
    pub files: usize,
    pub nodes: Vec<MergedNode>,
    pub ranks: Vec<MergedRank>,
    pub total: MergedTotal,
    pub warnings: Vec<String>,
}

/// Copies of one file are merged into one (with a warning); two different runs claiming
/// one rank are refused.
fn dedupe(files: Vec<File>, warnings: &mut Vec<String>) -> Result<Vec<File>> {
    let mut kept: Vec<File> = Vec::new();
    for f in files {
        if let Some(k) = kept
            .iter()
            .find(|k| k.run_key() == f.run_key() && k.role() == f.role())
        {
            warnings.push(format!(
                "'{}' and '{}' are copies of one run's report: counted once",
                k.label, f.label
            ));
            continue;
        }
        if let (Some(rk), Role::Rank) = (f.rank_key(), f.role())
            && let Some(k) = kept
                .iter()
                .find(|k| k.role() == Role::Rank && k.rank_key().as_ref() == Some(&rk))
        {
            return Err(Error::usage(format!(
                "'{}' and '{}' are both rank {}{} of one job: they come from two runs of one job id; give one run's files",
                k.label,
                f.label,
                rk.2,
                rk.1.as_ref()
                    .map_or(String::new(), |s| format!(" (step {s})"))
            )));
        }
        kept.push(f);
    }
    // A rank measured by two different readings: two runs of the same job id.
    let mut seen: BTreeMap<RankKey, &str> = BTreeMap::new();
    for f in kept.iter().filter(|f| f.role() == Role::Node) {
        let Some(l) = &f.input.launcher else { continue };
        if !l.shared {
            continue;
        }
        for r in &l.ranks {
            let Some(rank) = r.rank else { continue };
            if let Some(other) = seen.insert(
                (f.job().map(str::to_string), r.step.clone(), rank),
                &f.label,
            ) {
                return Err(Error::usage(format!(
                    "'{other}' and '{}' both measured rank {rank}{}: they come from two runs of one job id; give one run's files",
                    f.label,
                    r.step
                        .as_ref()
                        .map_or(String::new(), |s| format!(" (step {s})"))
                )));
            }
        }
    }
    Ok(kept)
}

/// The readings of one node, in clusters of overlapping windows (a cluster of one is a
/// normal reading).
fn clusters(mut readings: Vec<&File>) -> Vec<Vec<&File>> {
    readings.sort_by(|a, b| a.window().0.total_cmp(&b.window().0));
    let mut out: Vec<Vec<&File>> = Vec::new();
    for r in readings {
        let (s, e) = r.window();
        let joins = out.last().is_some_and(|c| {
            c.iter().any(|o| {
                let (os, oe) = o.window();
                let inter = e.min(oe) - s.max(os);
                let shorter = (e - s).min(oe - os).max(1e-9);
                inter > OVERLAP_FRACTION * shorter
            })
        });
        match out.last_mut() {
            Some(c) if joins => c.push(r),
            _ => out.push(vec![r]),
        }
    }
    out
}

/// A reading's contribution: its energy and the job's part of it.
struct Contribution {
    energy_j: f64,
    static_j: Option<f64>,
    dynamic_j: Option<f64>,
    job_dynamic_j: Option<f64>,
    job_static_j: Option<f64>,
    intensity: f64,
    price: f64,
    /// Every rank the readings covered: its job, the PID of the joulerun that measured
    /// it, the rank, its part of the job's energy, J.
    ranks: Vec<(Option<String>, u32, RankShare, Option<f64>)>,
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// One cluster of readings of a node: the longest counts; each reading's share of the
/// node (its command's fraction of the dynamic and of the static energy, for the ranks it
/// measured) is applied to the kept one, and their sum is at most all of it. A cluster of
/// one is a reading as it is.
fn contribution(cluster: &[&File]) -> Contribution {
    let kept = cluster
        .iter()
        .max_by(|a, b| a.input.elapsed_s.total_cmp(&b.input.elapsed_s))
        .expect("a cluster has a reading");
    let base = kept.input.attribution.as_ref().map(|a| &a.total);
    let all_attributed = cluster.iter().all(|f| f.input.attribution.is_some());
    // Each reading's command energy, in the kept reading's terms.
    let parts: Vec<(&File, f64, f64)> = match base {
        Some(b) if all_attributed => cluster
            .iter()
            .filter_map(|f| {
                let t = &f.input.attribution.as_ref()?.total;
                Some((
                    *f,
                    ratio(t.command_dynamic_j, t.dynamic_j) * b.dynamic_j,
                    ratio(t.command_static_j, t.static_j) * b.static_j,
                ))
            })
            .collect(),
        _ => Vec::new(),
    };
    let (jd, js): (f64, f64) = parts.iter().fold((0.0, 0.0), |a, p| (a.0 + p.1, a.1 + p.2));
    let (kd, ks) = match base {
        Some(b) => (
            if jd > b.dynamic_j {
                ratio(b.dynamic_j, jd)
            } else {
                1.0
            },
            if js > b.static_j {
                ratio(b.static_j, js)
            } else {
                1.0
            },
        ),
        None => (1.0, 1.0),
    };
    let mut ranks = Vec::new();
    for f in cluster {
        let Some(l) = &f.input.launcher else { continue };
        let mine = parts.iter().find(|p| std::ptr::eq(p.0, *f));
        let f_job = mine.map(|p| p.1 * kd + p.2 * ks);
        let f_total: f64 = l.ranks.iter().filter_map(|r| r.command_j).sum();
        let n = l.ranks.len().max(1) as f64;
        for r in &l.ranks {
            let rj = f_job.map(|fj| match r.command_j {
                Some(c) if f_total > 0.0 => fj * c / f_total,
                _ => fj / n,
            });
            let by = l.ranks.first().map_or(0, |x| x.pid);
            ranks.push((f.job().map(str::to_string), by, r.clone(), rj));
        }
    }
    let attributed = base.is_some() && all_attributed;
    Contribution {
        energy_j: kept.input.total.energy_j,
        static_j: base.map(|s| s.static_j),
        dynamic_j: base.map(|s| s.dynamic_j),
        job_dynamic_j: attributed.then_some(jd * kd),
        job_static_j: attributed.then_some(js * ks),
        intensity: kept
            .input
            .emissions
            .as_ref()
            .map_or(0.0, |e| e.intensity_g_per_kwh),
        price: kept.input.cost.price_per_kwh,
        ranks,
    }
}

fn add(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? + b?)
}

/// Merge the files (pure: already read). `force`: files of different jobs too.
fn merge_files(files: Vec<File>, force: bool) -> Result<Merged> {
    let mut warnings = Vec::new();
    let n_files = files.len();
    // One job, unless told otherwise.
    let mut jobs: Vec<Option<String>> = Vec::new();
    for f in &files {
        let j = f.job().map(str::to_string);
        if !jobs.contains(&j) {
            jobs.push(j);
        }
    }
    if jobs.len() > 1 {
        let list = jobs
            .iter()
            .map(|j| {
                let which: Vec<&str> = files
                    .iter()
                    .filter(|f| f.job() == j.as_deref())
                    .map(|f| f.label.as_str())
                    .take(3)
                    .collect();
                format!(
                    "{} ({}{})",
                    j.as_deref().map_or("no job id".to_string(), |j| format!(
                        "job {}",
                        crate::text::escape_line(j)
                    )),
                    which.join(", "),
                    if files.iter().filter(|f| f.job() == j.as_deref()).count() > 3 {
                        ", ..."
                    } else {
                        ""
                    }
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        if !force {
            return Err(Error::usage(format!(
                "the files come from {} jobs: {list}; merge one job's files, or give --force to merge them into one report",
                jobs.len()
            )));
        }
        warnings.push(format!("merged {} jobs (--force): {list}", jobs.len()));
    }
    let files = dedupe(files, &mut warnings)?;
    let readings: Vec<&File> = files.iter().filter(|f| f.role() == Role::Node).collect();
    if readings.is_empty() {
        let by: BTreeSet<String> = files
            .iter()
            .filter_map(|f| f.input.launcher.as_ref()?.measured_by.as_ref())
            .map(|b| {
                b.rank
                    .map_or(format!("joulerun PID {}", b.pid), |r| format!("rank {r}"))
            })
            .collect();
        return Err(Error::usage(format!(
            "none of the files holds a node's energy: they are ranks whose nodes were measured by {}; add those ranks' files",
            by.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }

    // Nodes, by identity, in the order they first appear.
    let mut order: Vec<NodeIdentity> = Vec::new();
    for r in &readings {
        let n = r.node();
        if !order.contains(&n) {
            order.push(n);
        }
    }
    let mut nodes = Vec::new();
    // Per rank: its node's host name, its share, its part of the job's energy, and the
    // PIDs of the jouleruns that measured it.
    type Measured = (String, RankShare, Option<f64>, Vec<u32>);
    let mut measured_ranks: BTreeMap<RankKey, Measured> = BTreeMap::new();
    for id in &order {
        let mine: Vec<&File> = readings
            .iter()
            .copied()
            .filter(|r| r.node() == *id)
            .collect();
        let mut node = MergedNode {
            hostname: id.hostname.clone(),
            boot_id: id.boot_id.clone(),
            node_index: None,
            node_name: None,
            sources: Vec::new(),
            estimated: false,
            readings: 0,
            files: Vec::new(),
            overlapping_files: Vec::new(),
            measured_s: 0.0,
            domains: Vec::new(),
            energy_j: 0.0,
            kwh: 0.0,
            static_j: Some(0.0),
            dynamic_j: Some(0.0),
            job_dynamic_j: Some(0.0),
            job_static_j: Some(0.0),
            job_j: None,
            job_share: None,
            cost: 0.0,
            currency: mine[0].input.cost.currency.clone(),
            g_co2e: 0.0,
            job_g_co2e: Some(0.0),
            ranks: Vec::new(),
        };
        for cluster in clusters(mine.clone()) {
            let c = contribution(&cluster);
            let kept = cluster
                .iter()
                .max_by(|a, b| a.input.elapsed_s.total_cmp(&b.input.elapsed_s))
                .expect("a cluster has a reading");
            if cluster.len() > 1 {
                let others: Vec<String> = cluster
                    .iter()
                    .filter(|f| f.label != kept.label)
                    .map(|f| f.label.clone())
                    .collect();
                warnings.push(format!(
                    "node {} was measured {} times at once ('{}' and {}): node sharing was off for them ({}); its energy is counted once, from '{}' (the longest), and the job's share there is the sum of their shares of it",
                    crate::text::escape_line(&id.hostname),
                    cluster.len(),
                    kept.label,
                    others.iter().map(|o| format!("'{o}'")).collect::<Vec<_>>().join(", "),
                    cluster
                        .iter()
                        .filter_map(|f| f.input.launcher.as_ref()?.note.clone())
                        .next()
                        .unwrap_or_else(|| "no launcher was seen".to_string()),
                    kept.label
                ));
                node.overlapping_files.extend(others);
            }
            node.readings += 1;
            node.files.push(kept.label.clone());
            node.measured_s += kept.input.elapsed_s;
            node.energy_j += c.energy_j;
            node.static_j = add(node.static_j, c.static_j);
            node.dynamic_j = add(node.dynamic_j, c.dynamic_j);
            node.job_dynamic_j = add(node.job_dynamic_j, c.job_dynamic_j);
            node.job_static_j = add(node.job_static_j, c.job_static_j);
            node.cost += c.energy_j / J_PER_KWH * c.price;
            node.g_co2e += c.energy_j / J_PER_KWH * c.intensity;
            let job_here = add(c.job_dynamic_j, c.job_static_j);
            node.job_g_co2e = add(
                node.job_g_co2e,
                job_here.map(|j| j / J_PER_KWH * c.intensity),
            );
            for d in &kept.input.domains {
                match node.domains.iter_mut().find(|x| x.name == d.name) {
                    Some(x) => x.energy_j += d.energy_j,
                    None => node.domains.push(NodeDomain {
                        name: d.name.clone(),
                        kind: d.kind.clone(),
                        source: d.source.clone(),
                        in_total: d.in_total,
                        energy_j: d.energy_j,
                    }),
                }
            }
            for s in &kept.input.sources {
                if !node.sources.contains(s) {
                    node.sources.push(s.clone());
                }
            }
            node.estimated |= kept.input.estimated;
            if let Some(l) = &kept.input.launcher {
                node.node_index = node.node_index.or(l.context.node_index);
                node.node_name = node.node_name.clone().or(l.context.node_name.clone());
            }
            if kept.input.cost.currency != node.currency {
                warnings.push(format!(
                    "node {}: its readings price energy in {} and {}: its cost is in {}",
                    crate::text::escape_line(&id.hostname),
                    crate::text::escape_line(&node.currency),
                    crate::text::escape_line(&kept.input.cost.currency),
                    crate::text::escape_line(&node.currency)
                ));
            }
            for (job, by, r, job_j) in c.ranks {
                let Some(rank) = r.rank else {
                    let mut m = merged_rank(&r, &id.hostname, job_j);
                    m.job = job;
                    node.ranks.push(m);
                    continue;
                };
                let key = (job, r.step.clone(), rank);
                match measured_ranks.get_mut(&key) {
                    // The same rank in two consecutive readings of its node.
                    Some((_, prev, j, bys)) => {
                        prev.cpu_s += r.cpu_s;
                        *j = add(*j, job_j);
                        prev.exit_status = r.exit_status.or(prev.exit_status);
                        bys.push(by);
                    }
                    None => {
                        measured_ranks
                            .insert(key, (id.hostname.clone(), r.clone(), job_j, vec![by]));
                    }
                }
            }
            for f in &cluster {
                if f.input.attribution.is_none() {
                    warnings.push(format!(
                        "'{}' attributed nothing (-a): the job's share of node {} is unknown",
                        f.label,
                        crate::text::escape_line(&id.hostname)
                    ));
                }
            }
        }
        node.kwh = node.energy_j / J_PER_KWH;
        node.job_j = add(node.job_dynamic_j, node.job_static_j);
        node.job_share = match (node.job_dynamic_j, node.dynamic_j) {
            (Some(j), Some(d)) => Some(ratio(j, d)),
            _ => None,
        };
        if node.readings > 1 {
            warnings.push(format!(
                "node {} has {} readings of different times (a rank came after the node's leader had finished): added",
                crate::text::escape_line(&id.hostname),
                node.readings
            ));
        }
        nodes.push(node);
    }

    // Ranks: what the readings say, and what the ranks' own files say.
    let mut ranks: BTreeMap<RankKey, MergedRank> = BTreeMap::new();
    for ((job, step, rank), (host, r, job_j, _)) in &measured_ranks {
        let mut m = merged_rank(r, host, *job_j);
        m.job = job.clone();
        m.step = step.clone();
        m.rank = Some(*rank);
        ranks.insert((job.clone(), step.clone(), *rank), m);
    }
    for f in &files {
        let Some(l) = &f.input.launcher else { continue };
        let Some(rank) = l.context.rank else { continue };
        let key = (l.context.job.clone(), l.context.step.clone(), rank);
        // A rank's own file and a reading that covered that rank, of two different runs
        // (the job id reused): nothing of the two can be told apart any more.
        if l.role == Role::Rank
            && let (Some(by), Some((_, _, _, bys))) = (&l.measured_by, measured_ranks.get(&key))
            && !bys.contains(&by.pid)
        {
            return Err(Error::usage(format!(
                "'{}' is rank {rank}{} measured by joulerun PID {}, but the reading that covers rank {rank} in the other files was taken by joulerun PID {}: they come from two runs of one job id; give one run's files",
                f.label,
                l.context
                    .step
                    .as_ref()
                    .map_or(String::new(), |s| format!(" (step {s})")),
                by.pid,
                bys.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let e = ranks.entry(key).or_insert_with(|| MergedRank {
            job: l.context.job.clone(),
            rank: Some(rank),
            step: l.context.step.clone(),
            node: Some(l.node.hostname.clone()),
            pid: None,
            cpu_s: Some(l.cpu_s),
            job_j: None,
            exit_status: f.input.exit.as_ref().map(|x| x.status),
            file: None,
            measured: false,
        });
        e.file = Some(f.label.clone());
        e.exit_status = e.exit_status.or(f.input.exit.as_ref().map(|x| x.status));
        if !e.measured && l.role == Role::Rank {
            let by = l.measured_by.as_ref();
            warnings.push(format!(
                "rank {rank}{} ran on {}, whose reading is not among the files: add the file of {} (joulerun PID {}), which measured that node; until then its energy is missing from the total",
                l.context.step.as_ref().map_or(String::new(), |s| format!(" (step {s})")),
                crate::text::escape_line(&l.node.hostname),
                by.and_then(|b| b.rank).map_or("the rank".to_string(), |r| format!("rank {r}")),
                by.map_or(0, |b| b.pid)
            ));
        }
    }
    // Missing ranks, per job and step, from the sizes the launchers gave.
    let mut sizes: BTreeMap<(Option<String>, Option<String>), u32> = BTreeMap::new();
    for f in &files {
        if let Some(l) = &f.input.launcher
            && let Some(n) = l.context.size
        {
            let e = sizes
                .entry((l.context.job.clone(), l.context.step.clone()))
                .or_insert(0);
            *e = (*e).max(n);
        }
    }
    for ((job, step), size) in &sizes {
        let missing: Vec<u32> = (0..*size)
            .filter(|r| !ranks.contains_key(&(job.clone(), step.clone(), *r)))
            .collect();
        if !missing.is_empty() {
            warnings.push(format!(
                "{} of {size} ranks{} missing: {}: no file has {} and no node's reading covered {}; the energy of their nodes may be missing from the total",
                missing.len(),
                step.as_ref().map_or(String::new(), |s| format!(" of step {s}")),
                ranges(&missing),
                if missing.len() == 1 { "it" } else { "them" },
                if missing.len() == 1 { "it" } else { "them" },
            ));
        }
    }
    // Where nodes disagree.
    let src: BTreeSet<String> = nodes.iter().map(|n| n.sources.join("+")).collect();
    if src.len() > 1 {
        warnings.push(format!(
            "the nodes were measured through different sources ({}): their energies are not equally accurate",
            nodes
                .iter()
                .map(|n| format!("{}: {}", crate::text::escape_line(&n.hostname), n.sources.join(", ")))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    let est: Vec<String> = nodes
        .iter()
        .filter(|n| n.estimated)
        .map(|n| crate::text::escape_line(&n.hostname).into_owned())
        .collect();
    if !est.is_empty() && est.len() < nodes.len() {
        warnings.push(format!(
            "{} estimated (no energy counter was read there): the job's total mixes measured and estimated energy",
            if est.len() == 1 {
                format!("node {} is", est[0])
            } else {
                format!("nodes {} are", est.join(", "))
            }
        ));
    }
    let intensities: BTreeSet<String> = readings
        .iter()
        .filter_map(|f| f.input.emissions.as_ref())
        .map(|e| crate::carbon::fmt_intensity(e.intensity_g_per_kwh))
        .collect();
    if intensities.len() > 1 {
        warnings.push(format!(
            "the nodes used different carbon intensities ({} g/kWh): each node's CO2e is at its own",
            intensities.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    if readings
        .iter()
        .any(|f| f.input.emissions.as_ref().is_some_and(|e| e.pue.is_some()))
    {
        warnings.push(
            "some files were written with --pue: the merged figures are the machines' own, without the facility's"
                .to_string(),
        );
    }
    for f in &readings {
        for w in &f.input.warnings {
            let w = format!("{}: {w}", f.label);
            if !warnings.contains(&w) {
                warnings.push(w);
            }
        }
    }

    // Attach the ranks to their nodes, and total up.
    for n in &mut nodes {
        n.ranks.extend(
            ranks
                .values()
                .filter(|r| r.measured && r.node.as_deref() == Some(n.hostname.as_str()))
                .cloned(),
        );
    }
    let currencies: BTreeSet<&str> = nodes.iter().map(|n| n.currency.as_str()).collect();
    let same_currency = currencies.len() == 1;
    if !same_currency {
        warnings.push(format!(
            "the nodes price energy in different currencies ({}): no total cost",
            currencies.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    let sum = |f: &dyn Fn(&MergedNode) -> Option<f64>| -> Option<f64> {
        nodes.iter().map(f).sum::<Option<f64>>()
    };
    let energy_j: f64 = nodes.iter().map(|n| n.energy_j).sum();
    let job_j = sum(&|n| n.job_j);
    let job_dynamic_j = sum(&|n| n.job_dynamic_j);
    let dynamic_j = sum(&|n| n.dynamic_j);
    let cost: f64 = nodes.iter().map(|n| n.cost).sum();
    let job_cost = sum(&|n| n.job_j.map(|j| ratio(j, n.energy_j) * n.cost));
    let total = MergedTotal {
        energy_j,
        kwh: energy_j / J_PER_KWH,
        estimated: nodes.iter().any(|n| n.estimated),
        job_j,
        job_kwh: job_j.map(|j| j / J_PER_KWH),
        job_dynamic_j,
        dynamic_j,
        job_share: match (job_dynamic_j, dynamic_j) {
            (Some(j), Some(d)) => Some(ratio(j, d)),
            _ => None,
        },
        cost: same_currency.then_some(cost),
        job_cost: job_cost.filter(|_| same_currency),
        currency: same_currency.then(|| nodes[0].currency.clone()),
        g_co2e: nodes.iter().map(|n| n.g_co2e).sum(),
        job_g_co2e: sum(&|n| n.job_g_co2e),
    };
    let command = files
        .iter()
        .map(|f| &f.input.command)
        .find(|c| !c.is_empty())
        .cloned()
        .unwrap_or_default();
    Ok(Merged {
        merge_schema_version: MERGE_SCHEMA_VERSION,
        joulerun_version: env!("CARGO_PKG_VERSION").to_string(),
        job: if jobs.len() == 1 {
            jobs[0].clone()
        } else {
            None
        },
        jobs,
        command,
        files: n_files,
        nodes,
        ranks: ranks.into_values().collect(),
        total,
        warnings,
    })
}

fn merged_rank(r: &RankShare, host: &str, job_j: Option<f64>) -> MergedRank {
    MergedRank {
        job: None,
        rank: r.rank,
        step: r.step.clone(),
        node: Some(host.to_string()),
        pid: Some(r.pid),
        cpu_s: Some(r.cpu_s),
        job_j,
        exit_status: r.exit_status,
        file: None,
        measured: true,
    }
}

/// "0-3, 5, 7-8".
fn ranges(xs: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < xs.len() {
        let mut j = i;
        while j + 1 < xs.len() && xs[j + 1] == xs[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            xs[i].to_string()
        } else {
            format!("{}-{}", xs[i], xs[j])
        });
        i = j + 1;
    }
    out.join(", ")
}

fn opt_j(x: Option<f64>) -> String {
    x.map_or("-".to_string(), fmt_joules)
}

/// " (estimated)" after a figure of a node whose energy is an estimate.
fn node_est(n: &MergedNode) -> &'static str {
    if n.estimated { " (estimated)" } else { "" }
}

/// The report for people.
pub fn render(m: &Merged) -> String {
    use comfy_table::{CellAlignment, Table, presets};
    let est = if m.total.estimated {
        " (estimated)"
    } else {
        ""
    };
    let job = match (&m.job, m.jobs.len()) {
        (Some(j), _) => format!("job {}", crate::text::escape_line(j)),
        (None, n) if n > 1 => format!("{n} jobs"),
        _ => "a job without id".to_string(),
    };
    let n_ranks = m.ranks.len();
    let mut out = format!(
        "\n Energy of {job}: {} node{}, {n_ranks} rank{}, from {} file{}\n",
        m.nodes.len(),
        if m.nodes.len() == 1 { "" } else { "s" },
        if n_ranks == 1 { "" } else { "s" },
        m.files,
        if m.files == 1 { "" } else { "s" }
    );
    if !m.command.is_empty() {
        let argv: Vec<std::ffi::OsString> = m.command.iter().map(Into::into).collect();
        let _ = writeln!(
            out,
            " command: {}",
            crate::text::escape_line(&crate::plan::shell_words(&argv))
        );
    }
    if m.total.estimated {
        let which = if m.nodes.iter().all(|n| n.estimated) {
            "no energy counter could be read on any node"
        } else {
            "no energy counter could be read on some nodes"
        };
        let _ = writeln!(
            out,
            "\n ESTIMATED: {which}; the figures marked (estimated)\n come from a CPU-utilisation power model, not a measurement (`joulerun list` there says why)."
        );
    }
    out.push('\n');
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    t.set_header(vec![
        "node",
        "devices",
        "source",
        "energy",
        "job's share",
        "ranks",
    ]);
    for n in &m.nodes {
        let devices: Vec<&str> = n
            .domains
            .iter()
            .filter(|d| d.in_total)
            .map(|d| d.name.as_str())
            .collect();
        let ranks: Vec<u32> = n.ranks.iter().filter_map(|r| r.rank).collect();
        t.add_row(vec![
            crate::text::escape_line(&n.hostname).into_owned(),
            crate::text::escape_line(&devices.join(", ")).into_owned(),
            n.sources.join(", "),
            format!("{}{}", fmt_joules(n.energy_j), node_est(n)),
            match (n.job_j, n.job_share) {
                (Some(j), Some(s)) => {
                    format!("{}{} ({}%)", fmt_joules(j), node_est(n), sig(100.0 * s, 3))
                }
                _ => "-".to_string(),
            },
            ranges(&ranks),
        ]);
    }
    t.add_row(vec![
        "total".to_string(),
        String::new(),
        String::new(),
        format!("{}{est}", fmt_joules(m.total.energy_j)),
        match (m.total.job_j, m.total.job_share) {
            (Some(j), Some(s)) => format!("{}{est} ({}%)", fmt_joules(j), sig(100.0 * s, 3)),
            _ => "-".to_string(),
        },
        String::new(),
    ]);
    for c in [3, 4] {
        if let Some(col) = t.column_mut(c) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    for line in t.to_string().lines() {
        let _ = writeln!(out, " {}", line.trim_end());
    }
    out.push('\n');
    let mut k = Table::new();
    k.load_style(presets::NOTHING);
    k.add_row(vec![
        "energy".to_string(),
        format!(
            "{}{est}{}",
            fmt_kwh(m.total.energy_j),
            m.total.job_j.map_or(String::new(), |j| format!(
                ", the job's share {}{est}",
                fmt_kwh(j)
            ))
        ),
    ]);
    if let (Some(c), Some(cur)) = (m.total.cost, &m.total.currency) {
        let cur = crate::text::escape_line(cur);
        k.add_row(vec![
            "cost".to_string(),
            format!(
                "{}{est}{}",
                fmt_money(c, &cur),
                m.total.job_cost.map_or(String::new(), |j| format!(
                    ", the job's share {}{est}",
                    fmt_money(j, &cur)
                ))
            ),
        ]);
    }
    k.add_row(vec![
        "CO2e".to_string(),
        format!(
            "{}{est}{}",
            crate::carbon::fmt_grams(m.total.g_co2e),
            m.total.job_g_co2e.map_or(String::new(), |g| format!(
                ", the job's share {}{est}",
                crate::carbon::fmt_grams(g)
            ))
        ),
    ]);
    for line in k.to_string().lines() {
        let _ = writeln!(out, " {}", line.trim_end());
    }
    out.push_str("\n Ranks:\n");
    let mut r = Table::new();
    r.load_style(presets::NOTHING);
    r.set_header(vec![
        "rank",
        "step",
        "node",
        "CPU time",
        "job's energy",
        "exit",
        "file",
    ]);
    for x in &m.ranks {
        r.add_row(vec![
            x.rank.map_or("?".to_string(), |v| v.to_string()),
            crate::text::escape_line(x.step.as_deref().unwrap_or("-")).into_owned(),
            crate::text::escape_line(x.node.as_deref().unwrap_or("?")).into_owned(),
            x.cpu_s
                .map_or("-".to_string(), |c| format!("{} s", sig(c, 3))),
            if x.measured {
                let estimated = m
                    .nodes
                    .iter()
                    .any(|n| n.estimated && x.node.as_deref() == Some(n.hostname.as_str()));
                match x.job_j {
                    Some(_) if estimated => format!("{} (estimated)", opt_j(x.job_j)),
                    _ => opt_j(x.job_j),
                }
            } else {
                "not measured".to_string()
            },
            x.exit_status.map_or("-".to_string(), |e| e.to_string()),
            x.file.as_deref().map_or("-".to_string(), |f| {
                crate::text::escape_line(f).into_owned()
            }),
        ]);
    }
    for c in [3, 4] {
        if let Some(col) = r.column_mut(c) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    for line in r.to_string().lines() {
        let _ = writeln!(out, " {}", line.trim_end());
    }
    if !m.warnings.is_empty() {
        out.push('\n');
        for w in &m.warnings {
            let _ = writeln!(
                out,
                " warning: {}",
                crate::text::escape_text(w).replace('\n', "\n   ")
            );
        }
    }
    out.push('\n');
    out
}

/// `joulerun merge FILES... [--json OUT] [-o REPORT] [--force]`: 0 when merged (with
/// warnings, if any), 2 on bad input, 125 when an output cannot be written.
pub fn merge(args: &MergeArgs) -> Result<i32> {
    if args.files.is_empty() {
        return Err(Error::usage(
            "no files given: `joulerun merge energy-*.json` merges the --json files of a job's ranks",
        ));
    }
    let json = args.json.as_ref().map(|p| Requested {
        flag: "--json",
        what: "the merged JSON",
        dest: Dest::parse(p),
    });
    let report = args.output.as_ref().map(|p| Requested {
        flag: "-o",
        what: "the merged report",
        dest: Dest::parse(p),
    });
    let mut outs: Vec<Requested> = json.iter().chain(report.iter()).cloned().collect();
    // The report goes to stdout without -o, or to stderr when the JSON has stdout.
    let json_on_stdout = json.as_ref().is_some_and(|j| j.dest == Dest::Fd(1));
    if report.is_none() {
        outs.push(Requested {
            flag: "the report (standard output)",
            what: "the merged report",
            dest: Dest::Fd(if json_on_stdout { 2 } else { 1 }),
        });
    }
    let reserved: Vec<(&Path, &str)> = args
        .files
        .iter()
        .map(|p| (p.as_path(), "a file being merged"))
        .collect();
    crate::output::check(&outs, &reserved)?;
    let files = args
        .files
        .iter()
        .map(|p| read_file(p))
        .collect::<Result<Vec<_>>>()?;
    let merged = merge_files(files, args.force)?;
    if let Some(j) = &json {
        let mut v = serde_json::to_vec_pretty(&merged)
            .map_err(|e| Error::failure(format!("encoding the merged JSON: {e}")))?;
        v.push(b'\n');
        crate::output::prepare(j)?.finish(&v, j.flag).map_err(|e| {
            Error::failure(format!(
                "writing the merged JSON to {}: {e}",
                j.dest.describe()
            ))
        })?;
    }
    let text = render(&merged);
    match &report {
        Some(r) => crate::output::prepare(r)?
            .finish(text.as_bytes(), r.flag)
            .map_err(|e| {
                Error::failure(format!(
                    "writing the merged report to {}: {e}",
                    r.dest.describe()
                ))
            })?,
        None if json_on_stdout => {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(text.as_bytes()).and_then(|_| err.flush());
        }
        None => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node reading of `host` starting at `start` for `len` s (a leader's file, reduced
    /// to what the merge reads).
    fn reading(label: &str, host: &str, start: f64, len: f64) -> File {
        let v = serde_json::json!({
            "schema_version": crate::report::SUMMARY_SCHEMA_VERSION,
            "started_at": "2026-11-22T00:00:00Z",
            "elapsed_s": len,
            "domains": [],
            "total": {"energy_j": 10.0 * len},
            "cost": {"price_per_kwh": 0.3, "currency": "EUR"},
            "launcher": {
                "kind": "slurm", "job": "1", "step": "0", "rank": 0, "local_rank": 0,
                "size": 1, "local_size": null, "node_index": 0, "node_name": host,
                "node": {"hostname": host, "boot_id": "b"},
                "started_unix_s": start, "role": "node", "shared": true, "note": null,
                "measured_by": null, "cpu_s": 0.0, "ranks": []
            }
        });
        File {
            label: label.to_string(),
            input: serde_json::from_value(v).unwrap(),
        }
    }

    #[test]
    fn rank_ranges() {
        assert_eq!(ranges(&[0, 1, 2, 3, 5, 7, 8]), "0-3, 5, 7-8");
        assert_eq!(ranges(&[4]), "4");
        assert_eq!(ranges(&[]), "");
    }

    #[test]
    fn overlapping_readings_cluster_and_consecutive_ones_do_not() {
        let a = reading("a", "n", 100.0, 10.0);
        // Starts as `a` ends (a leader handing over): a later reading.
        let b = reading("b", "n", 110.01, 5.0);
        // Inside `b`'s window: the same time measured twice.
        let c = reading("c", "n", 111.0, 3.0);
        // Overlapping `c` by less than a quarter of the shorter: apart.
        let d = reading("d", "n", 114.5, 4.0);
        let cl = clusters(vec![&d, &c, &b, &a]);
        let labels: Vec<Vec<&str>> = cl
            .iter()
            .map(|c| c.iter().map(|f| f.label.as_str()).collect())
            .collect();
        assert_eq!(labels, vec![vec!["a"], vec!["b", "c"], vec!["d"]]);
        // A cluster counts its longest reading once.
        let x = contribution(&cl[1]);
        assert_eq!(x.energy_j, 50.0);
    }
}
