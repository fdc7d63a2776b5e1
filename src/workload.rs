//! Starting the command, reaping, exit statuses.
//!
//! The command starts with an empty signal mask and default dispositions (the pre-exec
//! hook clears the mask joulerun blocks; the standard library resets dispositions), in
//! joulerun's process group, with joulerun's stdin, stdout, stderr and terminal. It gets
//! SIGTERM if joulerun dies (`PR_SET_PDEATHSIG`), so a `kill -9` of joulerun does not leave
//! it running unmeasured. Signals themselves are handled in [`crate::signals`].
//!
//! joulerun is a child subreaper: orphaned descendants are reparented to it and reaped,
//! so their CPU time reaches its `RUSAGE_CHILDREN`.

use std::ffi::OsString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::error::{EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND, Error};

/// The signal the command gets when joulerun dies before it (see the module docs).
pub const PARENT_DEATH_SIGNAL: i32 = libc::SIGTERM;

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
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: between fork and exec only async-signal-safe calls are made: sigemptyset
    // and pthread_sigmask on a stack value, prctl, getppid, kill, then the hook,
    // documented to be async-signal-safe (no allocation, raw syscalls).
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
            // Die with joulerun; if joulerun is already gone, do not start at all.
            libc::prctl(libc::PR_SET_PDEATHSIG, PARENT_DEATH_SIGNAL, 0, 0, 0);
            if libc::getppid() != parent {
                libc::kill(libc::getpid(), PARENT_DEATH_SIGNAL);
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

/// The program `prog` names: itself with a slash, else the first match in `PATH`.
fn locate(prog: &OsString) -> Option<std::path::PathBuf> {
    let env = |k: &str| std::env::var_os(k);
    crate::plan::resolve_command(prog, &env).ok()
}

/// Why exec said "not found" for a file that exists: the interpreter of its `#!` line, or
/// the ELF program interpreter (dynamic loader) it names, is missing.
pub fn missing_interpreter(file: &std::path::Path) -> Option<String> {
    use std::io::Read;
    let mut head = [0u8; 512];
    let n = crate::fsx::open_regular(file).ok()?.read(&mut head).ok()?;
    let head = &head[..n];
    if let Some(rest) = head.strip_prefix(b"#!") {
        let line = rest.split(|b| *b == b'\n').next().unwrap_or(rest);
        let line = String::from_utf8_lossy(line);
        let interp = line.split_whitespace().next()?.to_string();
        let exists = std::path::Path::new(&interp).exists();
        return (!exists).then(|| {
            format!(
                "its interpreter '{}' (named on its #! line) was not found: install it, or fix the #! line",
                crate::text::escape_line(&interp)
            )
        });
    }
    if head.starts_with(b"\x7fELF") {
        return Some(
            "its ELF program interpreter (dynamic loader) was not found: it was built for another system or C library"
                .to_string(),
        );
    }
    None
}

fn spawn_error_plain(prog: &OsString, e: &io::Error) -> Error {
    let name = crate::text::escape_line(&prog.to_string_lossy()).into_owned();
    let has_slash = name.contains('/');
    match e.kind() {
        io::ErrorKind::NotFound => {
            if let Some(path) = locate(prog)
                && let Some(why) = missing_interpreter(&path)
            {
                return Error::with_code(format!("cannot execute '{name}': {why}"), EXIT_NOT_FOUND);
            }
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

/// The state letter of a process (`R`, `S`, `Z` for a zombie, ...) from
/// `/proc/PID/stat`, `None` when there is no such process.
pub fn process_state(pid: i32) -> Option<u8> {
    let text = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold anything: the state follows the
    // last ')'.
    let close = text.iter().rposition(|b| *b == b')')?;
    text.get(close + 2).copied()
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
