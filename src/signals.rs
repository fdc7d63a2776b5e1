//! Signals, in every phase of a joulerun process.
//!
//! `main` blocks every catchable terminating signal (and SIGCHLD) before anything else
//! runs, so every thread inherits the mask and none of them can kill joulerun. One thread,
//! started right after, reads them from a signalfd and acts on them according to the
//! *phase* the main thread has declared:
//!
//! | phase | a stop signal N (SIGINT, SIGTERM, SIGHUP, SIGUSR1, ...) |
//! |---|---|
//! | [`Phase::Setup`] (options, sources, outputs, `list`) | joulerun ends at once with 128+N; nothing was started |
//! | [`Phase::Calibrating`] (`--basepower`) | ends at once with 128+N; no baseline is stored |
//! | [`Phase::Running`] with a command | forwarded to the command (SIGINT/SIGQUIT typed at the terminal are not: the command got them already); joulerun keeps measuring until the command exits, and a series (`-r`) starts no further run |
//! | [`Phase::Running`] between the runs of a series (`-r`: a cool-down, the next run's setup) | the series ends; the report covers the runs so far |
//! | [`Phase::Running`] without a command (`-a`, `-p`) | the sampling loop ends and the report is written |
//! | [`Phase::Finishing`] (writing the reports) | ends at once with 128+N |
//!
//! Ending "at once" means: wait for any critical section of the main thread to finish (an
//! atomic rename, a move of joulerun between cgroups, the start of the command), remove
//! every registered temporary file and directory ([`register_cleanup`]), print one line,
//! and `_exit`. A blocked `open()` of a FIFO or a write to a pipe nobody reads can
//! therefore never keep joulerun alive against Ctrl-C or SIGTERM.
//!
//! While the command runs, the main loop reports progress ([`Signals::heartbeat`]). If a
//! stop signal arrives while the loop has made no progress for longer than its stall
//! limit (blocked writing the CSV to a pipe nobody reads, say), the signal is forwarded
//! and joulerun then ends too, so it never outlives a Ctrl-C because of a stuck output.
//!
//! SIGXFSZ and SIGXCPU raised by the kernel concern joulerun's own resource limits: they
//! are ignored (a write beyond `ulimit -f` then fails with EFBIG and is reported).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::error::Error;

/// What the main thread is doing, which decides what a stop signal does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Setup = 0,
    Running = 1,
    Finishing = 2,
    Calibrating = 3,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            1 => Phase::Running,
            2 => Phase::Finishing,
            3 => Phase::Calibrating,
            _ => Phase::Setup,
        }
    }
}

/// The signals joulerun handles: SIGCHLD and every catchable signal whose default action
/// would end the process (the synchronous fault signals excepted), real-time ones included.
pub fn handled_set() -> SigSet {
    let mut s = SigSet::empty();
    for sig in [
        Signal::SIGHUP,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGABRT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGALRM,
        Signal::SIGTERM,
        Signal::SIGSTKFLT,
        Signal::SIGCHLD,
        Signal::SIGXCPU,
        Signal::SIGXFSZ,
        Signal::SIGVTALRM,
        Signal::SIGPROF,
        Signal::SIGIO,
        Signal::SIGPWR,
    ] {
        s.add(sig);
    }
    s
}

/// Add the real-time signals the C library leaves to applications (SIGRTMIN..=SIGRTMAX).
fn add_realtime(set: &mut libc::sigset_t) {
    for sig in libc::SIGRTMIN()..=libc::SIGRTMAX() {
        // SAFETY: `set` is a valid, initialised sigset_t; sigaddset only writes into it.
        unsafe {
            libc::sigaddset(set, sig);
        }
    }
}

/// The name of a signal for messages (`SIGTERM`, `SIGRTMIN+3`, `signal 99`).
pub fn signal_name(sig: i32) -> String {
    if let Ok(s) = Signal::try_from(sig) {
        return s.as_str().to_string();
    }
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    if (min..=max).contains(&sig) {
        return if sig == min {
            "SIGRTMIN".to_string()
        } else {
            format!("SIGRTMIN+{}", sig - min)
        };
    }
    format!("signal {sig}")
}

/// The process the stop signals are forwarded to.
struct Target {
    pid: i32,
    /// Refers to that process even after it has been reaped and its PID reused.
    pidfd: Option<OwnedFd>,
}

impl Target {
    fn send(&self, sig: i32) {
        match &self.pidfd {
            Some(fd) => {
                // SAFETY: a pidfd we own, a signal number, no siginfo, no flags.
                unsafe {
                    libc::syscall(
                        libc::SYS_pidfd_send_signal,
                        fd.as_raw_fd(),
                        sig,
                        std::ptr::null::<libc::siginfo_t>(),
                        0,
                    );
                }
            }
            None => {
                // SAFETY: kill takes a pid and a signal number.
                unsafe {
                    libc::kill(self.pid, sig);
                }
            }
        }
    }
}

struct Shared {
    phase: AtomicU8,
    child: AtomicBool,
    stop: AtomicI32,
    /// The first stop signal of the Running phase, kept (a series of runs ends at it).
    requested: AtomicI32,
    wake: OwnedFd,
    target: Mutex<Option<Target>>,
    epoch: Instant,
    heartbeat_ms: AtomicU64,
    stall_limit_ms: AtomicU64,
}

static SHARED: OnceLock<Shared> = OnceLock::new();
/// Held by the main thread around steps that must not be cut in half.
static CRITICAL: Mutex<()> = Mutex::new(());
/// Temporary files and directories to remove if joulerun ends from a signal.
static CLEANUP: Mutex<Vec<Cleanup>> = Mutex::new(Vec::new());

#[derive(Clone, Debug, PartialEq, Eq)]
enum Cleanup {
    File(PathBuf),
    Dir(PathBuf),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Remove this temporary file if joulerun is ended by a signal before [`unregister`].
pub fn register_cleanup_file(path: PathBuf) {
    lock(&CLEANUP).push(Cleanup::File(path));
}

/// Remove this (empty) directory if joulerun is ended by a signal before [`unregister`].
pub fn register_cleanup_dir(path: PathBuf) {
    lock(&CLEANUP).push(Cleanup::Dir(path));
}

/// Forget a registered path (it was renamed into place, or removed already).
pub fn unregister(path: &std::path::Path) {
    lock(&CLEANUP).retain(|c| match c {
        Cleanup::File(p) | Cleanup::Dir(p) => p != path,
    });
}

/// Run `f` so that no signal can end joulerun half-way through it.
pub fn critical<T>(f: impl FnOnce() -> T) -> T {
    let _g = lock(&CRITICAL);
    f()
}

/// The critical section as a guard, for steps spread over several statements.
pub fn critical_guard() -> MutexGuard<'static, ()> {
    lock(&CRITICAL)
}

fn run_cleanups() {
    let list = std::mem::take(&mut *lock(&CLEANUP));
    for c in list.iter().rev() {
        let _ = match c {
            Cleanup::File(p) => std::fs::remove_file(p),
            Cleanup::Dir(p) => std::fs::remove_dir(p),
        };
    }
}

fn write_stderr(msg: &str) {
    let bytes = msg.as_bytes();
    let mut off = 0;
    while off < bytes.len() {
        // SAFETY: writing a valid buffer to fd 2.
        let r = unsafe { libc::write(2, bytes[off..].as_ptr().cast(), bytes.len() - off) };
        if r <= 0 {
            break;
        }
        off += r as usize;
    }
}

/// End joulerun now, from the signal thread: wait for the critical section, clean up,
/// one line on stderr, `_exit(128 + sig)`.
fn exit_now(sig: i32, why: &str) -> ! {
    let _g = lock(&CRITICAL);
    run_cleanups();
    write_stderr(&format!(
        "joulerun: interrupted by {} {why}\n",
        signal_name(sig)
    ));
    // SAFETY: _exit ends the process without running destructors or atexit handlers.
    unsafe { libc::_exit(128 + sig) }
}

/// What the sampling loop learns from the signals that arrived since it last asked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SignalEvents {
    /// SIGCHLD arrived: reap.
    pub child: bool,
    /// The last stop signal that arrived (SIGINT, SIGTERM, ...), if any.
    pub stop: Option<i32>,
}

/// The main thread's handle on the signal machinery.
pub struct Signals {
    shared: &'static Shared,
}

impl Signals {
    /// Block the handled signals and start the thread that reads them. Must run in the
    /// main thread before any other thread starts, so every thread inherits the mask.
    /// A second call in one process is an error.
    pub fn install() -> Result<Signals, Error> {
        let set = handled_set();
        let mut raw: libc::sigset_t = *set.as_ref();
        add_realtime(&mut raw);
        // SAFETY: `raw` is an initialised sigset_t built from a nix SigSet.
        let set = unsafe { SigSet::from_sigset_t_unchecked(raw) };
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
            .map_err(|e| Error::failure(format!("cannot block signals: {e}")))?;
        let sfd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC)
            .map_err(|e| Error::failure(format!("cannot create a signalfd: {e}")))?;
        // SAFETY: eventfd takes an initial value and flags, returns a new fd or -1.
        let wake = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if wake < 0 {
            return Err(Error::failure(format!(
                "cannot create an eventfd: {}",
                io::Error::last_os_error()
            )));
        }
        let shared = Shared {
            phase: AtomicU8::new(Phase::Setup as u8),
            child: AtomicBool::new(false),
            stop: AtomicI32::new(0),
            requested: AtomicI32::new(0),
            // SAFETY: the kernel just gave us this fd and nothing else owns it.
            wake: unsafe { OwnedFd::from_raw_fd(wake) },
            target: Mutex::new(None),
            epoch: Instant::now(),
            heartbeat_ms: AtomicU64::new(0),
            stall_limit_ms: AtomicU64::new(u64::MAX),
        };
        if SHARED.set(shared).is_err() {
            return Err(Error::failure("signal handling was installed twice"));
        }
        let shared: &'static Shared = SHARED.get().expect("just set");
        std::thread::Builder::new()
            .name("joulerun-signals".to_string())
            .spawn(move || signal_thread(sfd, shared))
            .map_err(|e| Error::failure(format!("cannot start the signal thread: {e}")))?;
        Ok(Signals { shared })
    }

    /// The fd the sampling loop polls: readable when there is something to [`take`].
    ///
    /// [`take`]: Signals::take
    pub fn fd(&self) -> RawFd {
        self.shared.wake.as_raw_fd()
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.shared.phase.load(Ordering::SeqCst))
    }

    pub fn set_phase(&self, phase: Phase) {
        let _g = lock(&CRITICAL);
        self.shared.phase.store(phase as u8, Ordering::SeqCst);
    }

    /// Enter [`Phase::Running`] with `pid` as the process stop signals are forwarded to.
    /// Call it inside the critical section that started the command.
    pub fn running_with_target(&self, pid: i32) {
        let pidfd = crate::workload::pidfd_open(pid).ok();
        *lock(&self.shared.target) = Some(Target { pid, pidfd });
        self.shared
            .phase
            .store(Phase::Running as u8, Ordering::SeqCst);
    }

    /// Forward nothing any more (the command has been reaped).
    pub fn clear_target(&self) {
        *lock(&self.shared.target) = None;
    }

    /// The longest the sampling loop may go without calling [`heartbeat`] before a stop
    /// signal is taken to mean it is stuck.
    ///
    /// [`heartbeat`]: Signals::heartbeat
    pub fn set_stall_limit(&self, ms: u64) {
        self.heartbeat();
        self.shared.stall_limit_ms.store(ms, Ordering::SeqCst);
    }

    /// The sampling loop is making progress.
    pub fn heartbeat(&self) {
        let now = self.shared.epoch.elapsed().as_millis() as u64;
        self.shared.heartbeat_ms.store(now, Ordering::SeqCst);
    }

    /// The first stop signal that arrived while a command ran or between runs, if any:
    /// a series of runs (`-r`) starts no further run after it.
    pub fn stop_requested(&self) -> Option<i32> {
        let s = self.shared.requested.load(Ordering::SeqCst);
        (s != 0).then_some(s)
    }

    /// What arrived since the last call. Clears it.
    pub fn take(&mut self) -> SignalEvents {
        // Drain the wake-up first: a signal arriving after this raises it again.
        let mut buf = [0u8; 8];
        // SAFETY: reading 8 bytes from our nonblocking eventfd into a stack buffer.
        unsafe {
            libc::read(self.fd(), buf.as_mut_ptr().cast(), 8);
        }
        let stop = self.shared.stop.swap(0, Ordering::SeqCst);
        SignalEvents {
            child: self.shared.child.swap(false, Ordering::SeqCst),
            stop: (stop != 0).then_some(stop),
        }
    }
}

fn wake(shared: &Shared) {
    let one: u64 = 1;
    // SAFETY: writing 8 bytes to our eventfd.
    unsafe {
        libc::write(shared.wake.as_raw_fd(), (&one as *const u64).cast(), 8);
    }
}

fn signal_thread(sfd: SignalFd, shared: &'static Shared) {
    loop {
        match sfd.read_signal() {
            Ok(Some(info)) => handle(shared, info.ssi_signo as i32, info.ssi_code),
            Ok(None) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                write_stderr(&format!(
                    "joulerun: warning: cannot read signals any more ({e})\n"
                ));
                return;
            }
        }
    }
}

fn handle(shared: &Shared, sig: i32, code: i32) {
    if sig == libc::SIGCHLD {
        shared.child.store(true, Ordering::SeqCst);
        wake(shared);
        return;
    }
    // Sent by a process (kill, sigqueue, tgkill), not by the terminal or the kernel.
    let from_process = code == libc::SI_USER || code == libc::SI_QUEUE || code == libc::SI_TKILL;
    if !from_process && (sig == libc::SIGXFSZ || sig == libc::SIGXCPU) {
        return;
    }
    let _g = lock(&CRITICAL);
    match Phase::from_u8(shared.phase.load(Ordering::SeqCst)) {
        Phase::Setup => {
            drop(_g);
            exit_now(sig, "during setup: the command was not started")
        }
        Phase::Calibrating => {
            drop(_g);
            exit_now(sig, "during calibration: no baseline was stored")
        }
        Phase::Finishing => {
            drop(_g);
            exit_now(
                sig,
                "while writing the reports: those not yet written are lost",
            )
        }
        Phase::Running => {
            let has_target = {
                let t = lock(&shared.target);
                if let Some(t) = t.as_ref() {
                    let typed_at_terminal =
                        !from_process && (sig == libc::SIGINT || sig == libc::SIGQUIT);
                    if !typed_at_terminal {
                        t.send(sig);
                    }
                }
                t.is_some()
            };
            shared.stop.store(sig, Ordering::SeqCst);
            let _ = shared
                .requested
                .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
            wake(shared);
            let now = shared.epoch.elapsed().as_millis() as u64;
            let last = shared.heartbeat_ms.load(Ordering::SeqCst);
            let limit = shared.stall_limit_ms.load(Ordering::SeqCst);
            if now.saturating_sub(last) > limit {
                drop(_g);
                exit_now(
                    sig,
                    &format!(
                        "while the sampling loop was blocked for {:.1} s (an output nobody reads?){}: no report",
                        (now - last) as f64 / 1000.0,
                        if has_target {
                            "; the command got the signal"
                        } else {
                            ""
                        }
                    ),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(signal_name(libc::SIGTERM), "SIGTERM");
        assert_eq!(signal_name(libc::SIGRTMIN()), "SIGRTMIN");
        assert_eq!(signal_name(libc::SIGRTMIN() + 3), "SIGRTMIN+3");
        assert_eq!(signal_name(999), "signal 999");
    }

    #[test]
    fn handled_set_has_the_terminating_signals_but_no_faults() {
        let s = handled_set();
        for sig in [
            Signal::SIGINT,
            Signal::SIGTERM,
            Signal::SIGHUP,
            Signal::SIGUSR1,
            Signal::SIGUSR2,
            Signal::SIGALRM,
            Signal::SIGCHLD,
        ] {
            assert!(s.contains(sig), "{sig}");
        }
        for sig in [
            Signal::SIGSEGV,
            Signal::SIGBUS,
            Signal::SIGKILL,
            Signal::SIGSTOP,
        ] {
            assert!(!s.contains(sig), "{sig}");
        }
    }

    #[test]
    fn cleanup_registry() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("tmpfile");
        let g = t.path().join("kept");
        register_cleanup_file(f.clone());
        register_cleanup_dir(g.clone());
        let has = |p: &PathBuf| {
            lock(&CLEANUP)
                .iter()
                .any(|c| matches!(c, Cleanup::File(x) | Cleanup::Dir(x) if x == p))
        };
        assert!(has(&f) && has(&g));
        unregister(&g);
        assert!(has(&f) && !has(&g));
        unregister(&f);
        assert!(!has(&f));
    }
}
