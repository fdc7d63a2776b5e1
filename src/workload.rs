//! Starting the command, receiving signals, forwarding them, reaping, exit statuses.
//!
//! joulerun blocks SIGINT, SIGQUIT, SIGTERM, SIGHUP and SIGCHLD in its main thread before
//! anything else starts and reads them from a signalfd inside its sampling loop, so it
//! never dies of them. The command starts with an empty signal mask and default
//! dispositions (the standard library resets both between fork and exec), in joulerun's
//! process group, with joulerun's stdin, stdout, stderr and terminal.
//!
//! - SIGINT/SIGQUIT typed at the terminal go to the whole foreground group, so the command
//!   gets them directly; joulerun does not forward those (the command would get two).
//!   Sent by a process to joulerun alone (`kill -INT`), they are forwarded.
//! - SIGTERM and SIGHUP are always forwarded to the command.
//! - joulerun is a child subreaper: orphaned descendants are reparented to it and reaped,
//!   so their CPU time reaches its `RUSAGE_CHILDREN`.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::error::{EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND, Error};

/// How the command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// The shell convention: the code, or 128+N for signal N.
    pub fn status(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

/// What the sampling loop should do after signals arrived.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SignalEvents {
    /// SIGCHLD arrived: reap.
    pub child: bool,
    /// A signal asking joulerun to stop (SIGINT, SIGTERM, SIGHUP, SIGQUIT) arrived.
    pub stop: bool,
}

pub struct Signals {
    sfd: SignalFd,
    old_mask: SigSet,
}

fn handled() -> SigSet {
    let mut s = SigSet::empty();
    for sig in [
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGCHLD,
    ] {
        s.add(sig);
    }
    s
}

impl Signals {
    /// Block the handled signals and open a signalfd for them. Must run in the main thread
    /// before any other thread starts, so every thread inherits the mask.
    pub fn install() -> Result<Signals, Error> {
        let set = handled();
        let mut old_mask = SigSet::empty();
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old_mask))
            .map_err(|e| Error::failure(format!("cannot block signals: {e}")))?;
        let sfd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| Error::failure(format!("cannot create a signalfd: {e}")))?;
        Ok(Signals { sfd, old_mask })
    }

    pub fn fd(&self) -> RawFd {
        self.sfd.as_raw_fd()
    }

    /// Read every pending signal; forward to `target` what must be forwarded.
    pub fn drain(&mut self, target: Option<Pid>) -> SignalEvents {
        let mut ev = SignalEvents::default();
        while let Ok(Some(info)) = self.sfd.read_signal() {
            let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            // Sent by a process (kill, sigqueue), not by the terminal or the kernel.
            let from_process = info.ssi_code == libc::SI_USER || info.ssi_code == libc::SI_QUEUE;
            match sig {
                Signal::SIGCHLD => ev.child = true,
                Signal::SIGTERM | Signal::SIGHUP => {
                    ev.stop = true;
                    if let Some(pid) = target {
                        let _ = kill(pid, sig);
                    }
                }
                Signal::SIGINT | Signal::SIGQUIT => {
                    ev.stop = true;
                    if from_process && let Some(pid) = target {
                        let _ = kill(pid, sig);
                    }
                }
                _ => {}
            }
        }
        ev
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&self.old_mask), None);
    }
}

/// Make joulerun the reaper of orphaned descendants. Failure is harmless (tracking then
/// loses orphans' CPU time when they are reaped by init) and reported by the caller.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer argument only.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Start the command. `hook` runs in the child between fork and exec.
pub fn spawn<F>(argv: &[OsString], mut hook: F) -> Result<Pid, Error>
where
    F: FnMut() -> io::Result<()> + Send + Sync + 'static,
{
    let Some((prog, args)) = argv.split_first() else {
        return Err(Error::usage("no command given"));
    };
    let mut cmd = Command::new(prog);
    cmd.args(args);
    // SAFETY: between fork and exec only async-signal-safe calls are made: sigemptyset
    // and pthread_sigmask on a stack value, then the hook, documented to be
    // async-signal-safe (no allocation, raw syscalls).
    unsafe {
        cmd.pre_exec(move || {
            // joulerun blocks the signals it reads from its signalfd; the command must
            // start with an empty mask (the standard library does not reset it here).
            let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(set.as_mut_ptr());
            let r = libc::pthread_sigmask(libc::SIG_SETMASK, set.as_ptr(), std::ptr::null_mut());
            if r != 0 {
                return Err(io::Error::from_raw_os_error(r));
            }
            hook()
        });
    }
    match cmd.spawn() {
        // The std Child is dropped without waiting: joulerun reaps with waitpid(-1).
        Ok(child) => Ok(Pid::from_raw(child.id() as i32)),
        Err(e) => Err(spawn_error(prog, &e)),
    }
}

/// The message and exit status for a command that could not be started.
pub fn spawn_error(prog: &OsString, e: &io::Error) -> Error {
    let mut err = spawn_error_plain(prog, e);
    if prog == "list" {
        err.message.push_str(
            "\n  (to list energy interfaces, give options after the subcommand: `joulerun list --sysfs-root DIR`)",
        );
    }
    err
}

fn spawn_error_plain(prog: &OsString, e: &io::Error) -> Error {
    let name = prog.to_string_lossy();
    let has_slash = name.contains('/');
    match e.kind() {
        io::ErrorKind::NotFound => {
            let hint = if has_slash {
                "check the path".to_string()
            } else {
                "check the spelling, or give its path; it was looked up in PATH".to_string()
            };
            Error::with_code(
                format!("command not found: '{name}' ({hint})"),
                EXIT_NOT_FOUND,
            )
        }
        io::ErrorKind::PermissionDenied => Error::with_code(
            format!(
                "cannot execute '{name}': permission denied (is it a directory, or a file without execute permission? try chmod +x '{name}')"
            ),
            EXIT_CANNOT_EXECUTE,
        ),
        _ => Error::with_code(format!("cannot execute '{name}': {e}"), EXIT_CANNOT_EXECUTE),
    }
}

/// Reap every exited child without blocking (the command and reparented orphans).
/// Returns the command's exit when it was among them.
pub fn reap(command: Option<Pid>) -> Option<Exit> {
    let mut exit = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => {
                if Some(pid) == command {
                    exit = Some(Exit::Code(code));
                }
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) => {
                if Some(pid) == command {
                    exit = Some(Exit::Signal(sig as i32));
                }
            }
            Ok(WaitStatus::StillAlive) => break,
            Ok(_) => continue,
            Err(Errno::EINTR) => continue,
            Err(_) => break, // ECHILD: nothing left to reap
        }
    }
    exit
}

/// A pidfd for a process that is not our child (`-p`): readable when it exits.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Whether a process exists (for `-p` without pidfd support).
pub fn process_alive(pid: i32) -> bool {
    match kill(Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(Errno::EPERM) => true,
        Err(_) => false,
    }
}

/// Wait until one of `fds` (at most 4) is readable or `timeout` passes; `ready[i]` tells
/// which were. A signal arriving meanwhile also ends the wait (it is read from the
/// signalfd, one of `fds`).
pub fn wait_readable(fds: &[RawFd], timeout: std::time::Duration, ready: &mut [bool]) {
    let mut pfds: [libc::pollfd; 4] = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; 4];
    let n = fds.len().min(4);
    for (p, fd) in pfds.iter_mut().zip(fds.iter()) {
        p.fd = *fd;
        p.events = libc::POLLIN;
    }
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: pfds holds n initialised pollfd structs; ts outlives the call.
    let r = unsafe { libc::ppoll(pfds.as_mut_ptr(), n as libc::nfds_t, &ts, std::ptr::null()) };
    for (i, flag) in ready.iter_mut().enumerate().take(n) {
        *flag = r > 0 && pfds[i].revents != 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_convention() {
        assert_eq!(Exit::Code(3).status(), 3);
        assert_eq!(Exit::Signal(9).status(), 137);
    }

    #[test]
    fn spawn_errors_map_to_126_and_127() {
        let e = spawn_error(
            &OsString::from("nope"),
            &io::Error::from(io::ErrorKind::NotFound),
        );
        assert_eq!(e.code, 127);
        assert!(e.message.contains("command not found: 'nope'"));
        let e = spawn_error(
            &OsString::from("./x"),
            &io::Error::from_raw_os_error(libc::EACCES),
        );
        assert_eq!(e.code, 126);
        assert!(e.message.contains("chmod +x"));
    }
}
