//! A real one-node Slurm cluster on 127.0.0.1 for tests (issue 13): Debian's `munge`,
//! `slurmctld` and `slurmd`, configured in a directory of the test's, started as daemons
//! with pid files, and stopped (by those pids) when the [`Cluster`] is dropped.
//!
//! The configuration that works in a container without systemd or a writable cgroup v1
//! hierarchy, as root (docs/launchers.md, "Testing with a real Slurm"):
//!
//! * `ProctrackType=proctrack/linuxproc` and `TaskPlugin=task/none`: no cgroup plugin,
//!   so slurmd needs neither cgroup v1 controllers nor a delegated v2 subtree; joulerun
//!   makes its own cgroups below the task's;
//! * `SelectType=select/cons_tres`, one node `NodeAddr=127.0.0.1` named after the host
//!   (slurmctld must find itself in `SlurmctldHost`), with more CPUs than the machine
//!   (`SlurmdParameters=config_overrides`) so that `srun -n 3` fits on a 2-core machine;
//! * `SlurmUser=root`, `SlurmdUser=root`, state and spool in the directory, free TCP
//!   ports, `AuthType=auth/munge` with `AuthInfo=socket=` the test's own munged;
//! * no accounting, no job completion log, `MpiDefault=none`.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The programs a cluster needs; `None` when all are installed.
pub fn missing_programs() -> Option<String> {
    let missing: Vec<&str> = [
        "/usr/sbin/munged",
        "/usr/sbin/slurmctld",
        "/usr/sbin/slurmd",
        "/usr/bin/srun",
        "/usr/bin/sbatch",
        "/usr/bin/sinfo",
    ]
    .into_iter()
    .filter(|p| !Path::new(p).exists())
    .collect();
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// A running one-node cluster.
pub struct Cluster {
    dir: PathBuf,
    conf: PathBuf,
    node: String,
    pid_files: Vec<PathBuf>,
}

fn free_port() -> io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let n = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let h = if r == 0 {
        String::from_utf8_lossy(&buf[..n]).into_owned()
    } else {
        "localhost".to_string()
    };
    h.split('.').next().unwrap_or("localhost").to_string()
}

fn run(c: &mut Command, what: &str) -> io::Result<()> {
    let out = c.stdin(Stdio::null()).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

impl Cluster {
    /// Start munged, slurmctld and slurmd with everything under `dir` (which must exist
    /// and be short enough for a Unix socket path), the node declaring `cpus` CPUs; wait
    /// until the node is idle.
    pub fn start(dir: &Path, cpus: u32) -> io::Result<Cluster> {
        let node = hostname();
        let munge = dir.join("munge");
        for d in ["munge", "state", "spool", "log"] {
            fs::create_dir_all(dir.join(d))?;
        }
        fs::set_permissions(&munge, fs::Permissions::from_mode(0o711))?;
        let key = munge.join("munge.key");
        let mut bytes = vec![0u8; 1024];
        io::Read::read_exact(&mut fs::File::open("/dev/urandom")?, &mut bytes)?;
        fs::write(&key, &bytes)?;
        fs::set_permissions(&key, fs::Permissions::from_mode(0o400))?;
        let socket = munge.join("munge.socket");
        let mut cluster = Cluster {
            dir: dir.to_path_buf(),
            conf: dir.join("slurm.conf"),
            node: node.clone(),
            pid_files: vec![munge.join("munged.pid")],
        };
        run(
            Command::new("/usr/sbin/munged")
                .arg("--force")
                .arg(format!("--key-file={}", key.display()))
                .arg(format!("--socket={}", socket.display()))
                .arg(format!("--pid-file={}", munge.join("munged.pid").display()))
                .arg(format!("--log-file={}", munge.join("munged.log").display()))
                .arg(format!(
                    "--seed-file={}",
                    munge.join("munged.seed").display()
                )),
            "munged",
        )?;
        let (ctld_port, d_port) = (free_port()?, free_port()?);
        let p = |name: &str| dir.join(name).display().to_string();
        let conf = format!(
            "ClusterName=joulerun-test
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={socket}
CredType=cred/munge
StateSaveLocation={state}
SlurmdSpoolDir={spool}
SlurmctldPidFile={ctld_pid}
SlurmdPidFile={d_pid}
SlurmctldLogFile={ctld_log}
SlurmdLogFile={d_log}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE
",
            socket = socket.display(),
            state = p("state"),
            spool = p("spool"),
            ctld_pid = p("slurmctld.pid"),
            d_pid = p("slurmd.pid"),
            ctld_log = p("log/slurmctld.log"),
            d_log = p("log/slurmd.log"),
        );
        fs::write(&cluster.conf, conf)?;
        cluster.pid_files.push(dir.join("slurmctld.pid"));
        run(
            Command::new("/usr/sbin/slurmctld")
                .arg("-i")
                .env("SLURM_CONF", &cluster.conf),
            "slurmctld",
        )?;
        cluster.pid_files.push(dir.join("slurmd.pid"));
        run(
            Command::new("/usr/sbin/slurmd").env("SLURM_CONF", &cluster.conf),
            "slurmd",
        )?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = Command::new("/usr/bin/sinfo")
                .args(["-h", "-N", "-o", "%T"])
                .env("SLURM_CONF", &cluster.conf)
                .stdin(Stdio::null())
                .output()?;
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if state == "idle" {
                return Ok(cluster);
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "the test cluster's node did not become idle (state '{state}'); logs in {}",
                    dir.join("log").display()
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The node's name (the host's short name).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// `slurm.conf`, for `SLURM_CONF`.
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// A Slurm client command (`srun`, `sbatch`, `squeue`...) talking to this cluster.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", &self.conf);
        c
    }

    /// The daemons' logs, for a failing test's message.
    pub fn logs(&self) -> String {
        ["log/slurmctld.log", "log/slurmd.log"]
            .iter()
            .map(|f| {
                let text = fs::read_to_string(self.dir.join(f)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                format!(
                    "== {f}\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn pid_in(file: &Path) -> Option<i32> {
    fs::read_to_string(file).ok()?.trim().parse().ok()
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

impl Drop for Cluster {
    /// Stop the daemons this cluster started (by the pids in their pid files), slurmd
    /// first: SIGTERM, then SIGKILL after 10 s.
    fn drop(&mut self) {
        for f in self.pid_files.iter().rev() {
            let Some(pid) = pid_in(f).filter(|p| *p > 1) else {
                continue;
            };
            // SAFETY: signalling a daemon this cluster started, by its recorded pid.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if alive(pid) {
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}
