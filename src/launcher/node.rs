//! One measurement per node: the ranks of a job on one node elect a *leader*, which
//! samples the node's devices; the others (*followers*) run their commands without
//! opening any energy source and send the leader their process trees' CPU time. The
//! leader adds it to its own command's, so the node's energy is measured once and split
//! once, over every rank's processes together, and shares each window's part among the
//! ranks by their CPU time in it (docs/launchers.md).
//!
//! The rendezvous is node-local and private: a directory `joulerun-<uid>` (mode 0700)
//! under `$JOULERUN_RUNTIME_DIR`, else `/dev/shm`, else the temporary directory, holding
//! per job and node (host name and boot id) a lock file and a Unix socket. The leader is
//! whoever holds the lock (`flock`): the first rank to take it. Because the kernel drops
//! a lock when its holder exits, a crashed leader never blocks a node, and because the
//! lock is held for the whole measurement, two leaders of one node never measure at the
//! same time: a rank that comes after the leader has finished leads a new reading of a
//! later window, which `joulerun merge` adds.
//!
//! The protocol: JSON lines over the socket. A follower sends `hello`, waits for
//! `welcome` (or `refused`), then sends its tree's cumulative CPU time per socket
//! (`cpu`) after each of its usage probes and, when its command has exited, `exit` with
//! the final figures. The leader keeps measuring after its own command has exited until
//! every follower it welcomed has sent `exit` or gone away.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Launcher, MeasuredBy, NodeIdentity, RankShare};

/// The protocol's version: a follower of another version is refused (and measures its
/// node by itself, saying so).
pub const PROTOCOL: u32 = 1;
/// How long a follower waits for its node's leader to welcome it.
pub const JOIN_WAIT: Duration = Duration::from_secs(30);
/// Longest message line accepted, bytes.
const MAX_LINE: usize = 64 << 10;

/// The messages, one JSON object per line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase")]
enum Msg {
    Hello {
        v: u32,
        pid: u32,
        rank: Option<u32>,
        local_rank: Option<u32>,
        step: Option<String>,
    },
    Welcome {
        v: u32,
        pid: u32,
        rank: Option<u32>,
        local_rank: Option<u32>,
        step: Option<String>,
    },
    Refused {
        why: String,
    },
    /// The follower's command runs in this cgroup (v2): the leader reads its `cpu.stat`
    /// at its own usage probes, in step with the machine's CPU time.
    Track {
        cgroup: String,
    },
    /// The follower's command's cumulative CPU time per socket, s.
    Cpu {
        s: Vec<f64>,
    },
    /// Its command exited: its status and final CPU time.
    Exit {
        status: i32,
        s: Vec<f64>,
    },
}

fn line_of(m: &Msg) -> Vec<u8> {
    let mut v = serde_json::to_vec(m).unwrap_or_default();
    v.push(b'\n');
    v
}

/// What a rank became.
pub enum Joined {
    /// It measures the node, for itself and the followers it welcomes.
    Leader(Leader),
    /// Another rank's joulerun measures the node.
    Follower(Follower),
    /// Node sharing is not possible: it measures the node by itself; why.
    Alone(String),
}

/// The node-local directory of the rendezvous, made private to this user.
fn runtime_dir(base: Option<&Path>) -> Result<PathBuf, String> {
    let base = match base {
        Some(d) => d.to_path_buf(),
        None if access_w(Path::new("/dev/shm")) => PathBuf::from("/dev/shm"),
        None => std::env::temp_dir(),
    };
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let dir = base.join(format!("joulerun-{uid}"));
    let shown = dir.display().to_string();
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {shown}: {e}")),
    }
    let m = std::fs::symlink_metadata(&dir).map_err(|e| format!("cannot inspect {shown}: {e}"))?;
    if !m.is_dir() {
        return Err(format!("{shown} is not a directory"));
    }
    if m.uid() != uid || m.mode() & 0o077 != 0 {
        return Err(format!(
            "{shown} is not private to this user (owner {}, mode {:o}): another user could join this node's measurement; remove it, or set JOULERUN_RUNTIME_DIR to a directory of your own",
            m.uid(),
            m.mode() & 0o7777
        ));
    }
    Ok(dir)
}

fn access_w(p: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated path.
    p.is_dir() && unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0
}

/// FNV-1a, 64 bits: a stable name for the rendezvous of a job on a node.
fn fnv64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.iter().chain(std::iter::once(&0u8)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The lock and socket paths of a job's rendezvous on this node. Without a job id (PMI),
/// the ranks of one launch on a node share their parent, the launcher's daemon.
fn paths(dir: &Path, l: &Launcher, node: &NodeIdentity) -> (PathBuf, PathBuf) {
    let job = match &l.job {
        Some(j) => format!("job:{j}"),
        // SAFETY: getppid has no preconditions.
        None => format!("ppid:{}", unsafe { libc::getppid() }),
    };
    let key = fnv64(&[
        job.as_bytes(),
        node.hostname.as_bytes(),
        node.boot_id.as_deref().unwrap_or("").as_bytes(),
    ]);
    (
        dir.join(format!("node-{key:016x}.lock")),
        dir.join(format!("node-{key:016x}.sock")),
    )
}

/// Take the lock at `path` without waiting: `Ok(None)` when another process holds it. A
/// lock file a finishing leader removed meanwhile is not the rendezvous any more: taken
/// again from the new one.
fn try_lock(path: &Path) -> io::Result<Option<OwnedFd>> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("NUL in the path"))?;
    loop {
        // SAFETY: a valid NUL-terminated path; flags and mode are integers.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                0o600,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just gave us this fd.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EWOULDBLOCK) => Ok(None),
                _ => Err(e),
            };
        }
        let held = std::fs::File::from(fd);
        let same = match (held.metadata(), std::fs::symlink_metadata(path)) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        };
        if same {
            return Ok(Some(OwnedFd::from(held)));
        }
    }
}

/// Join the node's measurement: lead it, follow its leader, or (when neither can be
/// done) measure alone, with the reason. `runtime`: `JOULERUN_RUNTIME_DIR`, the place of
/// the rendezvous (default `/dev/shm`, else the temporary directory).
pub fn join(l: &Launcher, node: &NodeIdentity, runtime: Option<&Path>, wait: Duration) -> Joined {
    let dir = match runtime_dir(runtime) {
        Ok(d) => d,
        Err(why) => return Joined::Alone(format!("no rendezvous for the node's ranks: {why}")),
    };
    let (lock_path, sock_path) = paths(&dir, l, node);
    let deadline = Instant::now() + wait;
    let hello = Msg::Hello {
        v: PROTOCOL,
        pid: std::process::id(),
        rank: l.rank,
        local_rank: l.local_rank,
        step: l.step.clone(),
    };
    loop {
        match try_lock(&lock_path) {
            Ok(Some(lock)) => {
                let _ = std::fs::remove_file(&sock_path);
                return match UnixListener::bind(&sock_path).and_then(|s| {
                    s.set_nonblocking(true)?;
                    Ok(s)
                }) {
                    Ok(listener) => {
                        Joined::Leader(Leader::new(listener, lock, lock_path, sock_path, l))
                    }
                    Err(e) => {
                        Joined::Alone(format!("cannot listen on {}: {e}", sock_path.display()))
                    }
                };
            }
            Ok(None) => match Follower::connect(&sock_path, &hello, deadline) {
                Ok(Some(f)) => return Joined::Follower(f),
                Ok(None) => {}
                Err(why) => return Joined::Alone(why),
            },
            Err(e) => {
                return Joined::Alone(format!("cannot use the lock {}: {e}", lock_path.display()));
            }
        }
        if Instant::now() >= deadline {
            return Joined::Alone(format!(
                "the rank measuring this node (holding {}) did not answer within {} s",
                lock_path.display(),
                wait.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A rank whose node another joulerun measures.
pub struct Follower {
    stream: UnixStream,
    pub leader: MeasuredBy,
    /// Bytes not yet written (a leader slow to read): no further CPU update is queued
    /// meanwhile, the next one carries the cumulative figures anyway.
    pending: Vec<u8>,
    /// Why the leader can no longer be told anything, and when (the follower's clock).
    pub lost: Option<(f64, String)>,
}

impl Follower {
    /// `Ok(None)`: nobody to follow right now (no socket yet, or a leader finishing):
    /// try the lock again. `Err`: a leader that refused this rank.
    fn connect(sock: &Path, hello: &Msg, deadline: Instant) -> Result<Option<Follower>, String> {
        let Ok(mut stream) = UnixStream::connect(sock) else {
            return Ok(None);
        };
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        let _ = stream.set_write_timeout(Some(left));
        let _ = stream.set_read_timeout(Some(left));
        if stream.write_all(&line_of(hello)).is_err() {
            return Ok(None);
        }
        let mut buf = Vec::new();
        let mut chunk = [0u8; 512];
        let line = loop {
            if let Some(n) = buf.iter().position(|b| *b == b'\n') {
                break buf[..n].to_vec();
            }
            match stream.read(&mut chunk) {
                Ok(0) => return Ok(None),
                Ok(n) if buf.len() + n <= MAX_LINE => buf.extend_from_slice(&chunk[..n]),
                Ok(_) => return Err("the node's leader sent a message too long to be one".into()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Ok(None),
            }
        };
        match serde_json::from_slice::<Msg>(&line) {
            Ok(Msg::Welcome {
                v,
                pid,
                rank,
                local_rank,
                step,
            }) if v == PROTOCOL => {
                let _ = stream.set_nonblocking(true);
                Ok(Some(Follower {
                    stream,
                    leader: MeasuredBy {
                        pid,
                        rank,
                        local_rank,
                        step,
                    },
                    pending: Vec::new(),
                    lost: None,
                }))
            }
            Ok(Msg::Refused { why }) => Err(format!("the node's leader refused this rank: {why}")),
            Ok(Msg::Welcome { v, pid, .. }) => Err(format!(
                "the node's leader (joulerun PID {pid}) speaks version {v} of the ranks' protocol, this joulerun {PROTOCOL}: run one joulerun version on every rank"
            )),
            _ => Err(format!(
                "the node's rendezvous {} answered something that is not joulerun's: measuring alone",
                sock.display()
            )),
        }
    }

    fn flush(&mut self, now_s: f64) {
        while !self.pending.is_empty() && self.lost.is_none() {
            match self.stream.write(&self.pending) {
                Ok(0) => self.lose(now_s, "the connection closed".into()),
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => self.lose(now_s, e.to_string()),
            }
        }
    }

    fn lose(&mut self, now_s: f64, why: String) {
        if self.lost.is_none() {
            self.lost = Some((now_s, why));
        }
    }

    /// Tell the leader the cgroup the command runs in.
    pub fn send_track(&mut self, cgroup: &Path, now_s: f64) {
        self.flush(now_s);
        if self.lost.is_none() {
            self.pending.extend(line_of(&Msg::Track {
                cgroup: cgroup.to_string_lossy().into_owned(),
            }));
            self.flush(now_s);
        }
    }

    /// Send the command's cumulative CPU time per socket (never blocks: a leader slow to
    /// read gets the next figures instead).
    pub fn send_cpu(&mut self, per_socket_s: &[f64], now_s: f64) {
        self.flush(now_s);
        if self.pending.is_empty() && self.lost.is_none() {
            self.pending = line_of(&Msg::Cpu {
                s: per_socket_s.to_vec(),
            });
            self.flush(now_s);
        }
    }

    /// The command exited: send its status and final CPU time, waiting up to 2 s for the
    /// leader to take them.
    pub fn finish(&mut self, status: i32, per_socket_s: &[f64], now_s: f64) {
        if self.lost.is_some() {
            return;
        }
        // What a pending update carried is superseded by the final figures, unless it
        // was cut mid-line (then it must be completed first).
        let mut out = std::mem::take(&mut self.pending);
        out.extend(line_of(&Msg::Exit {
            status,
            s: per_socket_s.to_vec(),
        }));
        let _ = self.stream.set_nonblocking(false);
        let _ = self.stream.set_write_timeout(Some(Duration::from_secs(2)));
        if let Err(e) = self.stream.write_all(&out) {
            self.lose(now_s, e.to_string());
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }
}

/// The leader's view of one follower.
struct Member {
    stream: UnixStream,
    buf: Vec<u8>,
    /// Who it is (its `hello`).
    hello: Option<MeasuredBy>,
    /// The latest cumulative CPU time per socket it sent.
    cum: Vec<f64>,
    /// Its command's cgroup `cpu.stat`, read at each usage window, and the last value, s.
    cgroup: Option<std::fs::File>,
    cgroup_s: f64,
    /// Its CPU time counted so far, s.
    counted_s: f64,
    /// Its CPU time in the current usage window, s.
    window_s: f64,
    joined_s: f64,
    left_s: Option<f64>,
    exit_status: Option<i32>,
    /// Sent `exit` (its last figures are in).
    complete: bool,
    /// No more data will come (exit, EOF, or an error).
    done: bool,
    dynamic_j: f64,
    static_j: f64,
}

impl Member {
    /// Its cumulative CPU time as known now: the cgroup's (read now) or what it sent,
    /// whichever is more (a removed cgroup reads nothing; its last figures come in
    /// `exit`).
    fn total_s(&mut self) -> f64 {
        if let Some(f) = &self.cgroup {
            let mut buf = [0u8; 512];
            match crate::kfs::pread_head(f, &mut buf) {
                Ok(n) => {
                    if let Some(us) = crate::procs::parse_cpu_stat_usage(&buf[..n]) {
                        self.cgroup_s = self.cgroup_s.max(us as f64 / 1e6);
                    }
                }
                Err(_) => self.cgroup = None,
            }
        }
        self.cgroup_s.max(self.cum.iter().sum())
    }

    fn unconsumed(&self) -> bool {
        self.cum.iter().sum::<f64>() > self.counted_s + 1e-9
    }

    fn cpu_s(&self) -> f64 {
        self.counted_s
    }
}

/// The rank that measures its node.
pub struct Leader {
    listener: Option<UnixListener>,
    lock: Option<OwnedFd>,
    lock_path: PathBuf,
    sock_path: PathBuf,
    members: Vec<Member>,
    /// This rank: its launcher's place, and its share.
    own_rank: Option<u32>,
    own_local: Option<u32>,
    own_step: Option<String>,
    own_cpu_s: f64,
    own_window_s: f64,
    own_dynamic_j: f64,
    own_static_j: f64,
    own_left_s: Option<f64>,
    /// The command's attributed energy so far, dynamic and static, at the last split.
    split_dynamic_j: f64,
    split_static_j: f64,
    pub warnings: Vec<String>,
}

impl Leader {
    fn new(
        listener: UnixListener,
        lock: OwnedFd,
        lock_path: PathBuf,
        sock_path: PathBuf,
        l: &Launcher,
    ) -> Leader {
        Leader {
            listener: Some(listener),
            lock: Some(lock),
            lock_path,
            sock_path,
            members: Vec::new(),
            own_rank: l.rank,
            own_local: l.local_rank,
            own_step: l.step.clone(),
            own_cpu_s: 0.0,
            own_window_s: 0.0,
            own_dynamic_j: 0.0,
            own_static_j: 0.0,
            own_left_s: None,
            split_dynamic_j: 0.0,
            split_static_j: 0.0,
            warnings: Vec::new(),
        }
    }

    /// The listening socket, readable when a follower connects.
    pub fn fd(&self) -> Option<RawFd> {
        self.listener.as_ref().map(|l| l.as_raw_fd())
    }

    /// Welcome every follower waiting to connect.
    pub fn accept(&mut self, now_s: f64) {
        let Some(listener) = &self.listener else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    let welcome = line_of(&Msg::Welcome {
                        v: PROTOCOL,
                        pid: std::process::id(),
                        rank: self.own_rank,
                        local_rank: self.own_local,
                        step: self.own_step.clone(),
                    });
                    // An empty socket buffer takes a short line whole.
                    if stream.set_nonblocking(true).is_err() || stream.write_all(&welcome).is_err()
                    {
                        continue;
                    }
                    self.members.push(Member {
                        stream,
                        buf: Vec::new(),
                        hello: None,
                        cum: Vec::new(),
                        cgroup: None,
                        cgroup_s: 0.0,
                        counted_s: 0.0,
                        window_s: 0.0,
                        joined_s: now_s,
                        left_s: None,
                        exit_status: None,
                        complete: false,
                        done: false,
                        dynamic_j: 0.0,
                        static_j: 0.0,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// Read what the followers sent.
    pub fn poll(&mut self, now_s: f64) {
        let mut chunk = [0u8; 4096];
        for m in self.members.iter_mut().filter(|m| !m.done) {
            loop {
                match m.stream.read(&mut chunk) {
                    Ok(0) => {
                        m.done = true;
                        break;
                    }
                    Ok(n) => m.buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        m.done = true;
                        break;
                    }
                }
            }
            while let Some(n) = m.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = m.buf.drain(..=n).collect();
                match serde_json::from_slice::<Msg>(&line[..n]) {
                    Ok(Msg::Hello {
                        v,
                        pid,
                        rank,
                        local_rank,
                        step,
                    }) if v == PROTOCOL => {
                        m.hello = Some(MeasuredBy {
                            pid,
                            rank,
                            local_rank,
                            step,
                        })
                    }
                    Ok(Msg::Track { cgroup }) => {
                        m.cgroup = std::fs::File::open(Path::new(&cgroup).join("cpu.stat")).ok();
                    }
                    Ok(Msg::Cpu { s }) if !m.complete => m.cum = keep_rising(&m.cum, s),
                    Ok(Msg::Exit { status, s }) if !m.complete => {
                        m.cum = keep_rising(&m.cum, s);
                        m.exit_status = Some(status);
                        m.complete = true;
                        m.done = true;
                    }
                    _ => {
                        self.warnings.push(format!(
                            "a rank on this node (joulerun PID {}) sent a message joulerun cannot read: its CPU time after that is not counted",
                            m.hello.as_ref().map_or("?".to_string(), |h| h.pid.to_string())
                        ));
                        m.done = true;
                        m.buf.clear();
                        break;
                    }
                }
            }
            if m.buf.len() > MAX_LINE {
                m.done = true;
                m.buf.clear();
            }
            if m.done && m.left_s.is_none() {
                m.left_s = Some(now_s);
            }
        }
    }

    /// The followers' CPU time since the previous window, added per socket into `out`
    /// (the leader's own tree's, for the attribution of the node's energy); `own_s` is
    /// the leader's own command's in the same window.
    pub fn take_window(&mut self, own_s: f64, out: &mut [f64]) {
        self.own_window_s = own_s.max(0.0);
        self.own_cpu_s += self.own_window_s;
        for m in &mut self.members {
            let total = m.total_s();
            let d = (total - m.counted_s).max(0.0);
            m.counted_s = m.counted_s.max(total);
            m.window_s = d;
            if d == 0.0 {
                continue;
            }
            // Per socket in the proportions of the figures it sent (same machine, same
            // sockets; any beyond ours go to the first); all on the first without any.
            let sent: f64 = m.cum.iter().sum();
            if sent > 0.0 {
                for (i, c) in m.cum.iter().enumerate() {
                    let k = if i < out.len() { i } else { 0 };
                    if let Some(o) = out.get_mut(k) {
                        *o += d * c / sent;
                    }
                }
            } else if let Some(o) = out.first_mut() {
                *o += d;
            }
        }
    }

    /// Share the command's energy attributed in this window among the ranks, by their CPU
    /// time in it (or, for a window without any, by their CPU time so far): `dynamic_j`
    /// and `static_j` are the attributor's running totals.
    pub fn split(&mut self, dynamic_j: f64, static_j: f64) {
        let dd = (dynamic_j - self.split_dynamic_j).max(0.0);
        let ds = (static_j - self.split_static_j).max(0.0);
        self.split_dynamic_j = dynamic_j.max(self.split_dynamic_j);
        self.split_static_j = static_j.max(self.split_static_j);
        if dd == 0.0 && ds == 0.0 {
            return;
        }
        let window: f64 = self.own_window_s + self.members.iter().map(|m| m.window_s).sum::<f64>();
        let (own_w, weights): (f64, Vec<f64>) = if window > 0.0 {
            (
                self.own_window_s / window,
                self.members.iter().map(|m| m.window_s / window).collect(),
            )
        } else {
            let all: f64 = self.own_cpu_s + self.members.iter().map(Member::cpu_s).sum::<f64>();
            if all > 0.0 {
                (
                    self.own_cpu_s / all,
                    self.members.iter().map(|m| m.cpu_s() / all).collect(),
                )
            } else {
                (1.0, vec![0.0; self.members.len()])
            }
        };
        self.own_dynamic_j += dd * own_w;
        self.own_static_j += ds * own_w;
        for (m, w) in self.members.iter_mut().zip(weights) {
            m.dynamic_j += dd * w;
            m.static_j += ds * w;
        }
    }

    /// After the leader's own command exited: whether to keep measuring (a follower is
    /// still running, or its last figures are not counted yet). Closes the rendezvous
    /// when not, so that a rank arriving later leads a reading of its own.
    pub fn hold(&mut self, now_s: f64) -> bool {
        self.own_left_s.get_or_insert(now_s);
        self.accept(now_s);
        self.poll(now_s);
        let busy = self.members.iter().any(|m| !m.done || m.unconsumed());
        if !busy {
            self.close();
        }
        busy
    }

    /// Stop taking followers: the socket and the lock file go, then the lock.
    pub fn close(&mut self) {
        if self.listener.take().is_some() {
            let _ = std::fs::remove_file(&self.sock_path);
        }
        if self.lock.is_some() {
            let _ = std::fs::remove_file(&self.lock_path);
            self.lock = None;
        }
    }

    /// Every rank the reading covered, this one first; and the warnings about them.
    /// `attributed`: false with `-a` (no shares). `end_s`: the reading's end.
    pub fn finish(mut self, attributed: bool, end_s: f64) -> (Vec<RankShare>, Vec<String>) {
        self.close();
        let j = |d: f64, s: f64| attributed.then_some((d, s, d + s));
        let own = j(self.own_dynamic_j, self.own_static_j);
        let mut out = vec![RankShare {
            rank: self.own_rank,
            local_rank: self.own_local,
            step: self.own_step.clone(),
            pid: std::process::id(),
            cpu_s: self.own_cpu_s,
            command_dynamic_j: own.map(|x| x.0),
            command_static_j: own.map(|x| x.1),
            command_j: own.map(|x| x.2),
            joined_s: 0.0,
            left_s: Some(self.own_left_s.unwrap_or(end_s)),
            exit_status: None,
            complete: true,
        }];
        let mut warnings = std::mem::take(&mut self.warnings);
        for m in &self.members {
            let MeasuredBy {
                pid,
                rank,
                local_rank,
                step,
            } = m.hello.clone().unwrap_or(MeasuredBy {
                pid: 0,
                rank: None,
                local_rank: None,
                step: None,
            });
            let x = j(m.dynamic_j, m.static_j);
            if !m.complete {
                warnings.push(format!(
                    "rank {} (joulerun PID {pid}) on this node went away at {:.2} s without its final figures: its CPU time after its last message is not counted",
                    rank.map_or("?".to_string(), |r| r.to_string()),
                    m.left_s.unwrap_or(end_s)
                ));
            }
            out.push(RankShare {
                rank,
                local_rank,
                step,
                pid,
                cpu_s: m.cpu_s(),
                command_dynamic_j: x.map(|x| x.0),
                command_static_j: x.map(|x| x.1),
                command_j: x.map(|x| x.2),
                joined_s: m.joined_s,
                left_s: m.left_s,
                exit_status: m.exit_status,
                complete: m.complete,
            });
        }
        (out, warnings)
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.close();
    }
}

/// Cumulative figures never go down: a lower value (a confused sender) keeps the higher.
fn keep_rising(old: &[f64], new: Vec<f64>) -> Vec<f64> {
    new.into_iter()
        .enumerate()
        .map(|(i, x)| {
            let x = if x.is_finite() && x >= 0.0 { x } else { 0.0 };
            x.max(old.get(i).copied().unwrap_or(0.0))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launcher::LauncherKind;

    fn launcher(rank: u32) -> Launcher {
        Launcher {
            kind: LauncherKind::Slurm,
            job: Some("7".into()),
            step: Some("0".into()),
            rank: Some(rank),
            local_rank: Some(rank),
            size: Some(3),
            local_size: None,
            node_index: Some(0),
            node_name: None,
        }
    }

    #[test]
    fn one_leader_per_node_and_followers_counted_once() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().to_path_buf();
        let node = NodeIdentity {
            hostname: "n1".into(),
            boot_id: Some("b".into()),
        };
        let Joined::Leader(mut leader) = join(&launcher(0), &node, Some(&dir), JOIN_WAIT) else {
            panic!("the first rank leads");
        };
        // A follower connects from a thread; the leader welcomes it.
        let dir2 = dir.clone();
        let node2 = node.clone();
        let h =
            std::thread::spawn(
                move || match join(&launcher(1), &node2, Some(&dir2), JOIN_WAIT) {
                    Joined::Follower(f) => f,
                    _ => panic!("the second rank follows"),
                },
            );
        let start = Instant::now();
        while leader.members.is_empty() && start.elapsed() < Duration::from_secs(10) {
            leader.accept(0.0);
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut f = h.join().unwrap();
        assert_eq!(f.leader.rank, Some(0));
        // Another node (another host name) gets a leader of its own.
        let other = NodeIdentity {
            hostname: "n2".into(),
            boot_id: Some("b".into()),
        };
        assert!(matches!(
            join(&launcher(2), &other, Some(&dir), JOIN_WAIT),
            Joined::Leader(_)
        ));

        f.send_cpu(&[0.5], 0.1);
        std::thread::sleep(Duration::from_millis(50));
        leader.poll(0.2);
        let mut out = vec![0.2];
        leader.take_window(0.2, &mut out);
        assert!((out[0] - 0.7).abs() < 1e-12, "{out:?}");
        leader.split(7.0, 0.0);
        f.finish(0, &[0.75], 0.3);
        let start = Instant::now();
        while leader.hold(0.4) && start.elapsed() < Duration::from_secs(10) {
            let mut out = vec![0.0];
            leader.take_window(0.0, &mut out);
            leader.split(7.5, 0.0);
            std::thread::sleep(Duration::from_millis(5));
        }
        let (ranks, warnings) = leader.finish(true, 0.5);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(ranks.len(), 2);
        assert_eq!(
            (ranks[1].rank, ranks[1].exit_status, ranks[1].complete),
            (Some(1), Some(0), true)
        );
        assert!((ranks[1].cpu_s - 0.75).abs() < 1e-12);
        // 7 J split 0.2 : 0.5, then 0.5 J all to the follower (its last 0.25 s).
        let own = ranks[0].command_j.unwrap();
        let fol = ranks[1].command_j.unwrap();
        assert!((own + fol - 7.5).abs() < 1e-9, "{own} + {fol}");
        assert!((own - 2.0).abs() < 1e-9, "{own}");
        // The rendezvous is gone: the next rank leads.
        assert!(matches!(
            join(&launcher(1), &node, Some(&dir), JOIN_WAIT),
            Joined::Leader(_)
        ));
    }

    #[test]
    fn a_rendezvous_others_could_enter_is_refused() {
        let t = tempfile::tempdir().unwrap();
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        let d = t.path().join(format!("joulerun-{uid}"));
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let node = NodeIdentity {
            hostname: "n1".into(),
            boot_id: None,
        };
        match join(&launcher(0), &node, Some(t.path()), JOIN_WAIT) {
            Joined::Alone(why) => assert!(why.contains("not private"), "{why}"),
            _ => panic!("must measure alone"),
        }
    }
}
