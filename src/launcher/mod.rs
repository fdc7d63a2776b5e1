//! Launchers (issue 13): a joulerun started by `srun` or `mpirun`, one per rank.
//!
//! * [`Launcher::detect`] reads the launcher's context from the environment (Slurm, Open
//!   MPI, PMIx, PMI), pure and tested with made-up environments;
//! * [`expand`] fills the placeholders of output file names (`%j %s %n %r %h %p %%`);
//! * [`node`] makes the ranks of one node measure its devices once: one of them (the
//!   *leader*) samples them, the others (*followers*) send it their process trees' CPU
//!   time (docs/launchers.md explains the choice);
//! * [`LauncherReport`] is what a run's summary says about all this (`launcher` in the
//!   JSON), which `joulerun merge` (`crate::merge`) reads.

pub mod node;
pub mod share;

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::plan::Env;

/// Which launcher started this joulerun.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LauncherKind {
    /// `srun` (or the batch script of `sbatch`): `SLURM_*`.
    Slurm,
    /// Open MPI's `mpirun`: `OMPI_COMM_WORLD_*`.
    Openmpi,
    /// A PMIx launcher other than the above (PRRTE, ...): `PMIX_RANK`, `PMIX_NAMESPACE`.
    Pmix,
    /// MPICH's Hydra, Intel MPI (PMI-1/2): `PMI_RANK`, `PMI_SIZE`, `MPI_LOCALRANKID`.
    Pmi,
}

impl LauncherKind {
    pub fn name(self) -> &'static str {
        match self {
            LauncherKind::Slurm => "Slurm",
            LauncherKind::Openmpi => "Open MPI",
            LauncherKind::Pmix => "PMIx",
            LauncherKind::Pmi => "PMI",
        }
    }
}

/// Where a rank stands in its job, as its launcher says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launcher {
    pub kind: LauncherKind,
    /// The job: `SLURM_JOB_ID` (also under `mpirun` inside an allocation), else the MPI
    /// launch's namespace (`PMIX_NAMESPACE`, `OMPI_MCA_ess_base_jobid`).
    pub job: Option<String>,
    /// The step of the job: `SLURM_STEP_ID`; for `mpirun` inside an allocation, its
    /// namespace. `None` in a batch script and for a plain `mpirun`.
    pub step: Option<String>,
    /// The global rank (`SLURM_PROCID`, `OMPI_COMM_WORLD_RANK`, `PMIX_RANK`, `PMI_RANK`).
    pub rank: Option<u32>,
    /// The rank on its node (`SLURM_LOCALID`, `OMPI_COMM_WORLD_LOCAL_RANK`,
    /// `MPI_LOCALRANKID`).
    pub local_rank: Option<u32>,
    /// How many ranks the step (or MPI launch) has.
    pub size: Option<u32>,
    /// How many of them run on this node, when the launcher says.
    pub local_size: Option<u32>,
    /// The node's index in the allocation (`SLURM_NODEID`).
    pub node_index: Option<u32>,
    /// The node's name as the launcher knows it (`SLURMD_NODENAME`, `PMIX_HOSTNAME`).
    pub node_name: Option<String>,
}

/// A number from a launcher variable; a value that is not one is an error naming it.
fn number(env: Env<'_>, var: &str) -> Result<Option<u32>> {
    let Some(v) = text(env, var) else {
        return Ok(None);
    };
    v.trim().parse::<u32>().map(Some).map_err(|_| {
        Error::usage(format!(
            "{var}='{}' is not a number: joulerun reads its place in a launched job (rank, node) from the launcher's variables; fix or unset {var}",
            crate::text::escape_line(&v)
        ))
    })
}

fn text(env: Env<'_>, var: &str) -> Option<String> {
    env(var)
        .map(|v| v.to_string_lossy().trim().to_string())
        .filter(|v| !v.is_empty())
}

impl Launcher {
    /// The launcher's context, or `None` outside any. Open MPI first (under `mpirun` in a
    /// Slurm allocation the ranks also see the `SLURM_*` of the daemon that started them,
    /// whose `SLURM_PROCID` is not the MPI rank), then Slurm, then PMIx, then PMI.
    pub fn detect(env: Env<'_>) -> Result<Option<Launcher>> {
        let slurm_job = text(env, "SLURM_JOB_ID");
        if env("OMPI_COMM_WORLD_RANK").is_some() {
            let launch =
                text(env, "PMIX_NAMESPACE").or_else(|| text(env, "OMPI_MCA_ess_base_jobid"));
            return Ok(Some(Launcher {
                kind: LauncherKind::Openmpi,
                step: if slurm_job.is_some() {
                    launch.clone()
                } else {
                    None
                },
                job: slurm_job.clone().or(launch),
                rank: number(env, "OMPI_COMM_WORLD_RANK")?,
                local_rank: number(env, "OMPI_COMM_WORLD_LOCAL_RANK")?,
                size: number(env, "OMPI_COMM_WORLD_SIZE")?,
                local_size: number(env, "OMPI_COMM_WORLD_LOCAL_SIZE")?,
                node_index: if slurm_job.is_some() {
                    number(env, "SLURM_NODEID")?
                } else {
                    None
                },
                node_name: text(env, "SLURMD_NODENAME").or_else(|| text(env, "PMIX_HOSTNAME")),
            }));
        }
        if slurm_job.is_some() && env("SLURM_PROCID").is_some() {
            // A batch script has no step and runs once, whatever SLURM_NTASKS says.
            let step = text(env, "SLURM_STEP_ID");
            let size = match step {
                Some(_) => match number(env, "SLURM_STEP_NUM_TASKS")? {
                    Some(n) => Some(n),
                    None => number(env, "SLURM_NTASKS")?,
                },
                None => Some(1),
            };
            return Ok(Some(Launcher {
                kind: LauncherKind::Slurm,
                job: slurm_job,
                step,
                rank: number(env, "SLURM_PROCID")?,
                local_rank: number(env, "SLURM_LOCALID")?,
                size,
                local_size: None,
                node_index: number(env, "SLURM_NODEID")?,
                node_name: text(env, "SLURMD_NODENAME"),
            }));
        }
        if env("PMIX_RANK").is_some() {
            return Ok(Some(Launcher {
                kind: LauncherKind::Pmix,
                job: text(env, "PMIX_NAMESPACE"),
                step: None,
                rank: number(env, "PMIX_RANK")?,
                local_rank: None,
                size: None,
                local_size: None,
                node_index: None,
                node_name: text(env, "PMIX_HOSTNAME"),
            }));
        }
        if env("PMI_RANK").is_some() {
            return Ok(Some(Launcher {
                kind: LauncherKind::Pmi,
                job: None,
                step: None,
                rank: number(env, "PMI_RANK")?,
                local_rank: number(env, "MPI_LOCALRANKID")?,
                size: number(env, "PMI_SIZE")?,
                local_size: number(env, "MPI_LOCALNRANKS")?,
                node_index: None,
                node_name: None,
            }));
        }
        Ok(None)
    }

    /// "rank 2 of job 42 (step 0)", for reports.
    pub fn describe(&self) -> String {
        let mut s = match self.rank {
            Some(r) => format!("rank {r}"),
            None => "a rank".to_string(),
        };
        if let Some(j) = &self.job {
            s.push_str(&format!(" of job {j}"));
        }
        if let Some(st) = &self.step {
            s.push_str(&format!(" (step {st})"));
        }
        crate::text::escape_line(&s).into_owned()
    }
}

/// What identifies a node: its host name (as the kernel of its UTS namespace gives it)
/// and its boot id. `joulerun merge` groups readings by both, never by file name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeIdentity {
    pub hostname: String,
    /// `/proc/sys/kernel/random/boot_id`: tells two machines of one name apart.
    pub boot_id: Option<String>,
}

impl NodeIdentity {
    pub fn current() -> NodeIdentity {
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown".to_string());
        let boot_id = crate::fsx::read_regular(Path::new("/proc/sys/kernel/random/boot_id"), 256)
            .ok()
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .filter(|b| !b.is_empty());
        NodeIdentity { hostname, boot_id }
    }
}

/// The placeholders of output file names, for messages.
pub const PLACEHOLDERS: &str =
    "%j job, %s step, %n node, %r rank, %h host name, %p joulerun's PID, %% a %";

/// A placeholder's value made safe as part of a file name: no `/`, no NUL.
fn file_part(s: &str) -> String {
    s.chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect()
}

/// Fill the placeholders of an output file name given to `flag`: `%j` the job, `%s` its
/// step, `%n` the node (its index in the allocation when the launcher gives one, else
/// its name), `%r` the rank, `%h` the host name, `%p` joulerun's PID, `%%` a `%`. A `%`
/// before anything but a letter is kept as it is. A placeholder the launcher cannot fill
/// (none outside a launcher), or an unknown letter, is a usage error saying which.
pub fn expand(
    path: &Path,
    flag: &str,
    launcher: Option<&Launcher>,
    host: &str,
    pid: u32,
) -> Result<PathBuf> {
    let bytes = path.as_os_str().as_bytes();
    if !bytes.contains(&b'%') {
        return Ok(path.to_path_buf());
    }
    let shown = || crate::text::escape_line(&path.to_string_lossy()).into_owned();
    let missing = |what: &str, letter: char| {
        let why = match launcher {
            None => {
                "no launcher (Slurm, Open MPI, PMIx, PMI) was found in the environment".to_string()
            }
            Some(l) => format!("{} does not give one here", l.kind.name()),
        };
        Error::usage(format!(
            "{flag} '{}': %{letter} is the {what}, and {why}; remove %{letter} or run under srun or mpirun (placeholders: {PLACEHOLDERS})",
            shown()
        ))
    };
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len() + 16);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let next = bytes.get(i + 1).copied();
        if b != b'%' || !next.is_some_and(|n| n == b'%' || n.is_ascii_alphabetic()) {
            out.push(b);
            i += 1;
            continue;
        }
        let letter = next.unwrap_or(b'%') as char;
        let value: String = match letter {
            '%' => "%".to_string(),
            'j' => launcher
                .and_then(|l| l.job.clone())
                .ok_or_else(|| missing("job", 'j'))?,
            's' => launcher
                .and_then(|l| l.step.clone())
                .ok_or_else(|| missing("job's step", 's'))?,
            'r' => launcher
                .and_then(|l| l.rank)
                .map(|r| r.to_string())
                .ok_or_else(|| missing("rank", 'r'))?,
            'n' => match launcher {
                Some(l) => l
                    .node_index
                    .map(|n| n.to_string())
                    .or_else(|| l.node_name.clone())
                    .unwrap_or_else(|| host.to_string()),
                None => return Err(missing("node of a launched job", 'n')),
            },
            'h' => host.to_string(),
            'p' => pid.to_string(),
            other => {
                return Err(Error::usage(format!(
                    "{flag} '{}': %{} is not a placeholder (placeholders: {PLACEHOLDERS})",
                    shown(),
                    crate::text::escape_line(&other.to_string())
                )));
            }
        };
        out.extend_from_slice(file_part(&value).as_bytes());
        i += 2;
    }
    Ok(PathBuf::from(OsString::from_vec(out)))
}

/// Fill the placeholders of every output file name of a run, and refuse what a launched
/// job of several ranks cannot do (`-r`: the ranks' runs would not line up, so their
/// node's energy could not be shared out run by run).
pub fn resolve_outputs(plan: &mut crate::plan::RunPlan) -> Result<()> {
    let l = plan.launcher.as_ref();
    if let Some(l) = l
        && l.size.is_some_and(|n| n > 1)
        && plan.series.runs + plan.series.warmup > 1
    {
        return Err(Error::usage(format!(
            "-r/--repeat and --warmup cannot be used by the {} ranks of a launched job ({} of {}): their runs would not line up, so their node's energy could not be shared out; repeat the whole job instead, or run one rank (srun -n 1 joulerun -r N ...)",
            l.size.unwrap_or(0),
            l.describe(),
            l.kind.name()
        )));
    }
    let host = NodeIdentity::current().hostname;
    let pid = std::process::id();
    for r in [
        &mut plan.report,
        &mut plan.json,
        &mut plan.csv,
        &mut plan.markdown,
        &mut plan.openmetrics,
        &mut plan.plot,
    ]
    .into_iter()
    .flatten()
    {
        if let crate::output::Dest::Path(p) = &r.dest {
            let x = expand(p, r.flag, l, &host, pid)?;
            r.dest = crate::output::Dest::parse(&x);
        }
    }
    Ok(())
}

/// Whose energy a file holds, in a launched job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// This joulerun measured the node's devices, for itself and for the ranks in
    /// `ranks`: its figures are the node's.
    Node,
    /// Another rank's joulerun (`measured_by`) measured the node: this file holds no
    /// energy, only this rank's own facts.
    Rank,
}

/// The joulerun that measured a follower's node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeasuredBy {
    /// joulerun's PID.
    pub pid: u32,
    pub rank: Option<u32>,
    pub local_rank: Option<u32>,
    pub step: Option<String>,
}

/// One rank a node's reading covered (the leader itself first).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RankShare {
    pub rank: Option<u32>,
    pub local_rank: Option<u32>,
    pub step: Option<String>,
    /// The rank's joulerun PID.
    pub pid: u32,
    /// Its command's CPU time while the node was measured, s.
    pub cpu_s: f64,
    /// Its part of the command's (all ranks') attributed energy on this node, J: the
    /// dynamic and static parts and their sum. `None` with `-a` (nothing attributed).
    pub command_dynamic_j: Option<f64>,
    pub command_static_j: Option<f64>,
    pub command_j: Option<f64>,
    /// When it joined and left, on the reading's clock, s.
    pub joined_s: f64,
    pub left_s: Option<f64>,
    /// Its command's exit status, when it said.
    pub exit_status: Option<i32>,
    /// It ended the way the protocol says (its final CPU time arrived); false: it went
    /// away, and its CPU time after its last message is missing.
    pub complete: bool,
}

/// The `launcher` section of a summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LauncherReport {
    #[serde(flatten)]
    pub context: Launcher,
    /// The node this ran on, as the merge identifies it.
    pub node: NodeIdentity,
    /// The start of the measurement, Unix time in seconds (finer than `started_at`).
    pub started_unix_s: f64,
    pub role: Role,
    /// Whether the node's ranks shared one measurement; false: this joulerun measured the
    /// node by itself (why in `note`), and so may another rank's at the same time.
    pub shared: bool,
    pub note: Option<String>,
    /// With `role` `rank`: who measured the node.
    pub measured_by: Option<MeasuredBy>,
    /// This rank's command's CPU time, s.
    pub cpu_s: f64,
    /// With `role` `node`: every rank the reading covered, this one first.
    pub ranks: Vec<RankShare>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<OsString> {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn slurm_steps_and_batch_scripts() {
        let env = env_of(&[
            ("SLURM_JOB_ID", "42"),
            ("SLURM_STEP_ID", "0"),
            ("SLURM_PROCID", "5"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_NODEID", "2"),
            ("SLURMD_NODENAME", "n3"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_STEP_NUM_TASKS", "6"),
        ]);
        let l = Launcher::detect(&env).unwrap().unwrap();
        assert_eq!(l.kind, LauncherKind::Slurm);
        assert_eq!(
            (
                l.job.as_deref(),
                l.step.as_deref(),
                l.rank,
                l.local_rank,
                l.size
            ),
            (Some("42"), Some("0"), Some(5), Some(1), Some(6))
        );
        assert_eq!(
            (l.node_index, l.node_name.as_deref()),
            (Some(2), Some("n3"))
        );
        // The batch script: no step, one process whatever SLURM_NTASKS says.
        let env = env_of(&[
            ("SLURM_JOB_ID", "42"),
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "8"),
        ]);
        let l = Launcher::detect(&env).unwrap().unwrap();
        assert_eq!((l.step, l.size), (None, Some(1)));
    }

    #[test]
    fn open_mpi_wins_over_the_slurm_variables_of_its_daemon() {
        let env = env_of(&[
            ("SLURM_JOB_ID", "42"),
            ("SLURM_STEP_ID", "1"),
            ("SLURM_PROCID", "1"),
            ("SLURM_NODEID", "1"),
            ("OMPI_COMM_WORLD_RANK", "7"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "3"),
            ("OMPI_COMM_WORLD_SIZE", "8"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "4"),
            ("PMIX_NAMESPACE", "1454964737"),
            ("PMIX_RANK", "7"),
        ]);
        let l = Launcher::detect(&env).unwrap().unwrap();
        assert_eq!(l.kind, LauncherKind::Openmpi);
        assert_eq!(
            (l.job.as_deref(), l.step.as_deref(), l.rank, l.local_rank),
            (Some("42"), Some("1454964737"), Some(7), Some(3))
        );
        assert_eq!(
            (l.size, l.local_size, l.node_index),
            (Some(8), Some(4), Some(1))
        );
        // Plain mpirun: the namespace is the job.
        let env = env_of(&[
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_MCA_ess_base_jobid", "99"),
        ]);
        let l = Launcher::detect(&env).unwrap().unwrap();
        assert_eq!((l.job.as_deref(), l.step), (Some("99"), None));
    }

    #[test]
    fn pmix_and_pmi_and_nothing() {
        let env = env_of(&[("PMIX_RANK", "3"), ("PMIX_NAMESPACE", "prterun-x-1@1")]);
        let l = Launcher::detect(&env).unwrap().unwrap();
        assert_eq!(
            (l.kind, l.rank, l.job.as_deref()),
            (LauncherKind::Pmix, Some(3), Some("prterun-x-1@1"))
        );
        let env = env_of(&[
            ("PMI_RANK", "2"),
            ("PMI_SIZE", "4"),
            ("MPI_LOCALRANKID", "0"),
        ]);
        let l = Launcher::detect(&env).unwrap().unwrap();
        assert_eq!(
            (l.kind, l.rank, l.size, l.local_rank),
            (LauncherKind::Pmi, Some(2), Some(4), Some(0))
        );
        assert_eq!(
            Launcher::detect(&env_of(&[("HOME", "/root")])).unwrap(),
            None
        );
        // A launcher variable that is not a number names itself.
        let env = env_of(&[("SLURM_JOB_ID", "1"), ("SLURM_PROCID", "x")]);
        let e = Launcher::detect(&env).unwrap_err();
        assert_eq!(e.code, 2);
        assert!(
            e.message.starts_with("SLURM_PROCID='x' is not a number"),
            "{}",
            e.message
        );
    }

    #[test]
    fn placeholders_fill_file_names() {
        let l = Launcher {
            kind: LauncherKind::Slurm,
            job: Some("42".into()),
            step: Some("0".into()),
            rank: Some(5),
            local_rank: Some(1),
            size: Some(6),
            local_size: None,
            node_index: Some(2),
            node_name: Some("n3".into()),
        };
        let x = |p: &str| expand(Path::new(p), "--json", Some(&l), "host1", 77);
        assert_eq!(
            x("e-%j-%s-%n-%r.json").unwrap(),
            Path::new("e-42-0-2-5.json")
        );
        assert_eq!(
            x("%h/%p/100%%/50%.json").unwrap(),
            Path::new("host1/77/100%/50%.json")
        );
        assert_eq!(x("plain.json").unwrap(), Path::new("plain.json"));
        let e = x("e-%q.json").unwrap_err();
        assert!(
            e.message.contains("%q is not a placeholder"),
            "{}",
            e.message
        );
        // Outside a launcher only %h, %p and %% can be filled.
        let e = expand(Path::new("e-%r.json"), "--json", None, "h", 1).unwrap_err();
        assert_eq!(e.code, 2);
        assert!(
            e.message.contains("%r is the rank") && e.message.contains("no launcher"),
            "{}",
            e.message
        );
        assert_eq!(
            expand(Path::new("e-%h-%p.json"), "--json", None, "h", 1).unwrap(),
            Path::new("e-h-1.json")
        );
        // A job id with a slash cannot make a directory.
        let l2 = Launcher {
            job: Some("a/b".into()),
            ..l.clone()
        };
        assert_eq!(
            expand(Path::new("%j.json"), "--json", Some(&l2), "h", 1).unwrap(),
            Path::new("a_b.json")
        );
        // Without a node index, %n is the launcher's node name.
        let l3 = Launcher {
            node_index: None,
            ..l
        };
        assert_eq!(
            expand(Path::new("%n"), "-o", Some(&l3), "h", 1).unwrap(),
            Path::new("n3")
        );
    }
}
