//! The cgroup v2 method: the command runs in a fresh cgroup below joulerun's own, whose
//! `cpu.stat` `usage_usec` counts every descendant exactly, short-lived or daemonised.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

use super::parse;
use super::sys;

/// Why the cgroup method cannot be used, and what the user can do about it.
#[derive(Debug)]
pub struct CgroupUnavailable {
    pub why: String,
    pub fix: String,
    /// This user may not write joulerun's cgroup: in a cgroup delegated to it, it could
    /// (see [`delegation_hint`]).
    pub not_delegated: bool,
}

fn unavailable(why: String, fix: &str) -> CgroupUnavailable {
    CgroupUnavailable {
        why,
        fix: fix.to_string(),
        not_delegated: false,
    }
}

/// joulerun's cgroup is not writable by this user.
fn not_delegated(why: String) -> CgroupUnavailable {
    CgroupUnavailable {
        not_delegated: true,
        ..unavailable(why, FIX_PERM)
    }
}

/// What the fallback to `/proc` says where a systemd user manager runs for this user.
pub const SYSTEMD_HINT: &str = "for the exact and cheaper cgroup method, run joulerun in \
    a cgroup delegated to you: `systemd-run --user --scope -p Delegate=yes joulerun ...`";

/// How to get the cgroup method, where a systemd user manager runs for this user (its
/// private socket in `/run/user/<uid>/systemd/`); `None` elsewhere. (In a cgroup
/// delegated to it, a user's joulerun uses the cgroup method by itself: its own cgroup
/// is writable, which is all `--track auto` needs.)
pub fn delegation_hint() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    user_manager_runs(Path::new(&format!("/run/user/{uid}"))).then_some(SYSTEMD_HINT)
}

/// Does a systemd user manager serve the runtime directory `runtime_dir`?
pub fn user_manager_runs(runtime_dir: &Path) -> bool {
    runtime_dir.join("systemd/private").exists()
}

const FIX_PERM: &str = "run joulerun as root, or inside a delegated cgroup \
    (e.g. `systemd-run --user --scope -p Delegate=yes joulerun ...`), or use --track proc";

/// A page shared between joulerun and the forked child, where the child's pre-exec
/// hook leaves the errno of a failed move (0: moved).
struct SharedStatus {
    ptr: *mut AtomicI32,
}

// SAFETY: the page is only ever accessed through atomic operations, and it stays
// mapped until the last owner (behind an Arc) drops it.
unsafe impl Send for SharedStatus {}
// SAFETY: as above.
unsafe impl Sync for SharedStatus {}

impl SharedStatus {
    fn new() -> io::Result<SharedStatus> {
        // SAFETY: an anonymous shared mapping with no address hint; the result is
        // checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // The mapping is zero-filled, page-aligned and large enough for an AtomicI32.
        Ok(SharedStatus { ptr: p.cast() })
    }

    fn get(&self) -> &AtomicI32 {
        // SAFETY: `ptr` points to a live, aligned, zero-initialised mapping owned by
        // self; AtomicI32 has the same layout as i32.
        unsafe { &*self.ptr }
    }
}

impl Drop for SharedStatus {
    fn drop(&mut self) {
        // SAFETY: the mapping was created in `new` with this length and nothing
        // refers to it once the last owner is dropped.
        unsafe {
            libc::munmap(self.ptr.cast(), 4096);
        }
    }
}

/// What the child needs between fork and exec, prepared beforehand so the hook does
/// not allocate.
pub struct Hook {
    procs: CString,
    status: SharedStatus,
}

impl Hook {
    /// Runs in the forked child (async-signal-safe: open, write, close, an atomic
    /// store). A failure is recorded, not returned: the command still runs and
    /// joulerun falls back to `/proc` tracking.
    pub fn run(&self) {
        // SAFETY: `procs` is a valid NUL-terminated path; the buffer passed to write
        // is a static one-byte string. These calls are async-signal-safe.
        let err = unsafe {
            let fd = libc::open(self.procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                *libc::__errno_location()
            } else {
                let r = libc::write(fd, b"0".as_ptr().cast(), 1);
                let e = if r == 1 { 0 } else { *libc::__errno_location() };
                libc::close(fd);
                e
            }
        };
        self.status
            .get()
            .store(if err == 0 { 0 } else { err.max(1) }, Ordering::SeqCst);
    }

    /// The errno of the child's failed move, if it failed.
    pub fn failure(&self) -> Option<i32> {
        match self.status.get().load(Ordering::SeqCst) {
            0 => None,
            e => Some(e),
        }
    }
}

pub struct Cgroup {
    pub dir: PathBuf,
    /// joulerun's own cgroup, where survivors go back at the end.
    own_dir: PathBuf,
    usage_fd: OwnedFd,
    /// `<dir>/cgroup.threads`, NUL-terminated, for reads without allocation.
    threads_path: CString,
    base_usec: u64,
    removed: bool,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

fn describe(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => "permission denied".to_string(),
        Some(libc::EROFS) => "read-only file system".to_string(),
        _ => e.to_string(),
    }
}

fn write_pid(procs: &Path, pid: &str) -> io::Result<()> {
    fs::write(procs, pid.as_bytes())
}

impl Cgroup {
    /// Create the cgroup and check that a process can be moved into it and back.
    pub fn create() -> Result<(Cgroup, Hook), CgroupUnavailable> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(|e| {
            unavailable(
                format!("cannot read /proc/self/mountinfo: {e}"),
                "mount procfs, or use --track proc",
            )
        })?;
        let Some((mount_root, mount_point)) = parse::find_cgroup2_mount(&mountinfo) else {
            return Err(unavailable(
                "no cgroup v2 hierarchy is mounted".to_string(),
                "mount one (`mount -t cgroup2 none /sys/fs/cgroup`), or use --track proc",
            ));
        };
        let own = fs::read_to_string("/proc/self/cgroup").map_err(|e| {
            unavailable(
                format!("cannot read /proc/self/cgroup: {e}"),
                "use --track proc",
            )
        })?;
        let Some(own_path) = parse::find_cgroup2_path(&own) else {
            return Err(unavailable(
                "/proc/self/cgroup has no cgroup v2 entry (0::)".to_string(),
                "use --track proc",
            ));
        };
        let Some(own_dir) = parse::cgroup_dir(&mount_root, &mount_point, &own_path) else {
            return Err(unavailable(
                format!(
                    "joulerun's cgroup {own_path} is not visible under the cgroup v2 mount \
                     at {mount_point}"
                ),
                "use --track proc",
            ));
        };
        let own_dir = PathBuf::from(own_dir);
        clean_stale(&own_dir);
        let pid = std::process::id();
        let mut dir = PathBuf::new();
        let mut made = false;
        let mut last_err = None;
        for _ in 0..16 {
            let n = SEQ.fetch_add(1, Ordering::Relaxed);
            dir = own_dir.join(format!("joulerun-{pid}-{n}"));
            match crate::signals::critical(|| {
                let r = fs::create_dir(&dir);
                if r.is_ok() {
                    // Removed if a signal ends joulerun before the command starts.
                    crate::signals::register_cleanup_dir(dir.clone());
                }
                r
            }) {
                Ok(()) => {
                    made = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    last_err = Some(e);
                    break;
                }
            }
        }
        if !made {
            let why = match &last_err {
                Some(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => {
                    format!(
                        "cgroup v2 at {} is not writable by this user",
                        own_dir.display()
                    )
                }
                Some(e) if e.raw_os_error() == Some(libc::EROFS) => {
                    format!("cgroup v2 at {mount_point} is mounted read-only")
                }
                Some(e) => format!("cannot create {}: {}", dir.display(), describe(e)),
                None => format!("cannot find a free name under {}", own_dir.display()),
            };
            return Err(match &last_err {
                Some(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => {
                    not_delegated(why)
                }
                _ => unavailable(why, FIX_PERM),
            });
        }
        // From here on, the directory is removed on any failure (Drop).
        let stat_path = dir.join("cpu.stat");
        let usage_fd = match fs::File::open(&stat_path) {
            Ok(f) => OwnedFd::from(f),
            Err(e) => {
                let _ = fs::remove_dir(&dir);
                return Err(unavailable(
                    format!("cannot open {}: {}", stat_path.display(), describe(&e)),
                    "cgroup v2 CPU statistics need Linux 4.15 or later; use --track proc",
                ));
            }
        };
        let threads_path =
            CString::new(dir.join("cgroup.threads").as_os_str().as_bytes()).unwrap_or_default();
        let mut cg = Cgroup {
            dir,
            own_dir,
            usage_fd,
            threads_path,
            base_usec: 0,
            removed: false,
        };
        if cg.read_usage_usec().is_none() {
            return Err(unavailable(
                format!("{} has no usage_usec", stat_path.display()),
                "use --track proc",
            ));
        }
        // Check that moving works at all (delegation: the writer needs write access to
        // the common ancestor's cgroup.procs, here joulerun's own cgroup; a threaded or
        // otherwise restricted cgroup refuses): move joulerun itself in and back.
        let procs = cg.dir.join("cgroup.procs");
        let own_procs = cg.own_dir.join("cgroup.procs");
        let me = pid.to_string();
        // In and back out as one step: a signal never ends joulerun while it sits in the
        // command's cgroup (which could then not be removed).
        let _in_and_out = crate::signals::critical_guard();
        if let Err(e) = write_pid(&procs, &me) {
            let why = format!(
                "cannot move processes into {}: {}",
                procs.display(),
                describe(&e)
            );
            return Err(
                if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) {
                    not_delegated(why)
                } else {
                    unavailable(why, FIX_PERM)
                },
            );
        }
        if let Err(e) = write_pid(&own_procs, &me) {
            // Stuck in the new cgroup: keep it (it cannot be removed while joulerun
            // is in it) and say so.
            cg.removed = true;
            return Err(unavailable(
                format!(
                    "moved joulerun into {} but could not move it back to {}: {}; \
                     remove that cgroup by hand after joulerun exits",
                    cg.dir.display(),
                    own_procs.display(),
                    describe(&e)
                ),
                "use --track proc",
            ));
        }
        drop(_in_and_out);
        cg.base_usec = cg.read_usage_usec().unwrap_or(0);
        let procs_c = CString::new(procs.as_os_str().as_bytes()).map_err(|_| {
            unavailable(
                format!("cgroup path {} contains a NUL byte", procs.display()),
                "use --track proc",
            )
        })?;
        let status = SharedStatus::new().map_err(|e| {
            unavailable(
                format!("cannot map a page shared with the child: {e}"),
                "use --track proc",
            )
        })?;
        Ok((
            cg,
            Hook {
                procs: procs_c,
                status,
            },
        ))
    }

    /// Cumulative `usage_usec` of the cgroup (no allocation).
    pub fn read_usage_usec(&self) -> Option<u64> {
        let mut buf = [0u8; 512];
        let n = crate::kfs::pread_head(&self.usage_fd, &mut buf).ok()?;
        parse::parse_cpu_stat_usage(&buf[..n])
    }

    /// CPU microseconds used in the cgroup since it was prepared.
    pub fn used_usec(&self) -> Option<u64> {
        self.read_usage_usec()
            .map(|u| u.saturating_sub(self.base_usec))
    }

    /// The thread ids now in the cgroup (for the per-package split).
    pub fn threads(&self, buf: &mut Vec<u8>, out: &mut Vec<i32>) {
        out.clear();
        if sys::read_at_vec(libc::AT_FDCWD, &self.threads_path, buf).is_ok() {
            parse::for_each_number(buf, |t| out.push(t));
        }
    }

    /// The process ids now in the cgroup.
    pub fn processes(&self, buf: &mut Vec<u8>, out: &mut Vec<i32>) {
        out.clear();
        let procs = self.dir.join("cgroup.procs");
        let Ok(c) = std::ffi::CString::new(procs.as_os_str().as_bytes()) else {
            return;
        };
        if sys::read_at_vec(libc::AT_FDCWD, &c, buf).is_ok() {
            parse::for_each_number(buf, |t| out.push(t));
        }
    }

    /// Move any surviving processes back to joulerun's own cgroup and remove this one.
    pub fn remove(&mut self) -> Result<(), String> {
        if self.removed {
            return Ok(());
        }
        self.removed = true;
        let procs = self.dir.join("cgroup.procs");
        let own_procs = self.own_dir.join("cgroup.procs");
        let mut last = Err(String::new());
        for attempt in 0..50 {
            if let Ok(text) = fs::read_to_string(&procs) {
                for pid in text.split_ascii_whitespace() {
                    // A process that exits meanwhile gives ESRCH: fine.
                    let _ = write_pid(&own_procs, pid);
                }
            }
            match fs::remove_dir(&self.dir) {
                Ok(()) => {
                    crate::signals::unregister(&self.dir);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    crate::signals::unregister(&self.dir);
                    return Ok(());
                }
                Err(e) => {
                    last = Err(format!(
                        "could not remove cgroup {}: {}",
                        self.dir.display(),
                        describe(&e)
                    ));
                    // EBUSY: processes still exiting (or a survivor that could not be
                    // moved); give them a moment.
                    if e.raw_os_error() != Some(libc::EBUSY) {
                        break;
                    }
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(if attempt < 10 {
                2
            } else {
                10
            }));
        }
        last
    }
}

/// The directory of this process's own cgroup v2, when one is mounted and visible.
pub fn own_cgroup_dir() -> Option<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let (mount_root, mount_point) = parse::find_cgroup2_mount(&mountinfo)?;
    let own = fs::read_to_string("/proc/self/cgroup").ok()?;
    let own_path = parse::find_cgroup2_path(&own)?;
    parse::cgroup_dir(&mount_root, &mount_point, &own_path).map(PathBuf::from)
}

/// The pid in the name of a cgroup joulerun creates (`joulerun-<pid>-<n>`).
pub fn stale_name_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix("joulerun-")?;
    let (pid, n) = rest.split_once('-')?;
    n.parse::<u32>().ok()?;
    pid.parse::<i32>().ok().filter(|p| *p > 0)
}

/// Whether `pid` is a live joulerun.
fn joulerun_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) => comm.trim() == "joulerun",
        Err(_) => false,
    }
}

/// Remove the cgroups an earlier joulerun left in `own_dir` (killed before it could clean
/// up): named `joulerun-<pid>-<n>` with `<pid>` no longer a joulerun, owned by this user,
/// and empty (a cgroup that still holds processes cannot be removed, and is left alone).
/// Returns how many were removed.
pub fn clean_stale(own_dir: &Path) -> usize {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = fs::read_dir(own_dir) else {
        return 0;
    };
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let me = std::process::id() as i32;
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(stale_name_pid) else {
            continue;
        };
        if pid == me || joulerun_alive(pid) {
            continue;
        }
        let path = e.path();
        let owned = fs::metadata(&path).is_ok_and(|m| m.is_dir() && m.uid() == uid);
        let empty =
            fs::read_to_string(path.join("cgroup.procs")).is_ok_and(|t| t.trim().is_empty());
        if owned && empty && fs::remove_dir(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}
