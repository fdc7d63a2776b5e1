//! Small allocation-free helpers over raw file descriptors for the per-tick reads:
//! relative paths built on the stack, `openat` + a [`crate::kfs`] read into caller
//! buffers, and `getdents64` directory listing into a reused buffer.

use std::ffi::CStr;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use crate::kfs;

/// A NUL-terminated relative path built on the stack (no allocation).
pub struct StackPath {
    buf: [u8; 128],
    len: usize,
}

impl StackPath {
    pub fn new() -> StackPath {
        StackPath {
            buf: [0; 128],
            len: 0,
        }
    }

    #[cfg(test)]
    pub fn clear(&mut self) -> &mut Self {
        self.len = 0;
        self
    }

    /// Appends; silently truncates past capacity (the open then fails with ENOENT).
    pub fn push(&mut self, s: &[u8]) -> &mut Self {
        let room = self.buf.len() - 1 - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
        self
    }

    pub fn num(&mut self, mut v: u64) -> &mut Self {
        let mut tmp = [0u8; 20];
        let mut i = tmp.len();
        loop {
            i -= 1;
            tmp[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&tmp[i..]);
        self
    }

    pub fn as_cstr(&mut self) -> &CStr {
        self.buf[self.len] = 0;
        // The buffer holds `len` path bytes (never NUL: callers push names from
        // directory entries and digits) followed by the NUL just written.
        CStr::from_bytes_until_nul(&self.buf[..=self.len]).unwrap_or(c"")
    }
}

fn last_err() -> io::Error {
    io::Error::last_os_error()
}

/// Open `rel` relative to `dir` read-only (close-on-exec).
pub fn open_at(dir: RawFd, rel: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: `rel` is a valid NUL-terminated string for the duration of the call.
    let fd = unsafe { libc::openat(dir, rel.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(last_err());
    }
    // SAFETY: `fd` was just returned by openat and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Read a whole (small, procfs or cgroupfs) file at `rel` under `dir` into `buf`
/// ([`kfs::read_head`]). Returns the bytes read; a file longer than `buf` is cut.
pub fn read_at(dir: RawFd, rel: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    let fd = open_at(dir, rel, libc::O_RDONLY)?;
    kfs::read_head(&fd, buf)
}

/// Read a whole file at `rel` under `dir` into the growable `buf` ([`kfs::read_to_vec`]:
/// cleared first; grows only when a file is larger than every one before it).
pub fn read_at_vec(dir: RawFd, rel: &CStr, buf: &mut Vec<u8>) -> io::Result<()> {
    let fd = open_at(dir, rel, libc::O_RDONLY)?;
    kfs::read_to_vec(&fd, buf, false)
}

/// Calls `f` with the name of every entry of the directory open as `fd` (rewound to
/// the start first; `.` and `..` skipped). `buf` is scratch space, reused.
pub fn for_each_dirent(fd: RawFd, buf: &mut Vec<u8>, mut f: impl FnMut(&[u8])) -> io::Result<()> {
    if buf.len() < 32 * 1024 {
        buf.resize(32 * 1024, 0);
    }
    // SAFETY: lseek on a directory fd we own has no memory-safety preconditions.
    if unsafe { libc::lseek(fd, 0, libc::SEEK_SET) } < 0 {
        return Err(last_err());
    }
    loop {
        // SAFETY: the buffer pointer and length are valid; getdents64 writes at most
        // `buf.len()` bytes of `linux_dirent64` records.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                fd,
                buf.as_mut_ptr().cast::<libc::c_void>(),
                buf.len(),
            )
        };
        if n < 0 {
            let e = last_err();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(());
        }
        let n = n as usize;
        let mut off = 0;
        // linux_dirent64: u64 d_ino, i64 d_off, u16 d_reclen, u8 d_type, name NUL.
        while off + 19 <= n {
            let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
            if reclen == 0 || off + reclen > n {
                break;
            }
            let name_area = &buf[off + 19..off + reclen];
            let end = name_area
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(name_area.len());
            let name = &name_area[..end];
            if name != b"." && name != b".." {
                f(name);
            }
            off += reclen;
        }
    }
}

/// Parse an all-digit name (a pid or tid directory); `None` for anything else.
pub fn parse_pid(name: &[u8]) -> Option<i32> {
    kfs::parse_u64(name)
        .and_then(|v| i32::try_from(v).ok())
        .filter(|&p| p > 0)
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), 100 when unknown.
pub fn clock_ticks_per_s() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as u64 } else { 100 }
}

/// The CPU time of process `pid` (user + system, all its threads, living and exited)
/// in nanoseconds, from its process CPU-time clock: exact where `/proc/<pid>/stat`
/// truncates to clock ticks, and still readable while the process is a zombie (until
/// its parent reaps it). No permission is needed. `None` when there is no such process.
pub fn process_cpu_ns(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    // The kernel's MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED): what glibc's
    // clock_getcpuclockid returns, without its extra clock_getres call.
    let clock = ((!(pid as libc::clockid_t)) << 3) | 2;
    // SAFETY: an all-zero timespec is valid; clock_gettime only writes into it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is a valid, writable timespec.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return None;
    }
    Some(ts.tv_sec.max(0) as u64 * 1_000_000_000 + ts.tv_nsec.max(0) as u64)
}

/// `getrusage(who)` user + system time in microseconds.
pub fn rusage_us(who: libc::c_int) -> u64 {
    // SAFETY: an all-zero rusage is a valid value; getrusage only writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    if unsafe { libc::getrusage(who, &mut ru) } != 0 {
        return 0;
    }
    let us = |t: libc::timeval| t.tv_sec.max(0) as u64 * 1_000_000 + t.tv_usec.max(0) as u64;
    us(ru.ru_utime) + us(ru.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn stack_path() {
        let mut p = StackPath::new();
        p.num(1234).push(b"/task/").num(0).push(b"/stat");
        assert_eq!(p.as_cstr().to_bytes(), b"1234/task/0/stat");
        p.clear().num(u64::MAX);
        assert_eq!(p.as_cstr().to_bytes(), b"18446744073709551615");
        let long = [b'a'; 300];
        p.clear().push(&long);
        assert_eq!(p.as_cstr().to_bytes().len(), 127);
    }

    #[test]
    fn pids() {
        assert_eq!(parse_pid(b"1"), Some(1));
        assert_eq!(parse_pid(b"4194304"), Some(4194304));
        assert_eq!(parse_pid(b"self"), None);
        assert_eq!(parse_pid(b""), None);
        assert_eq!(parse_pid(b"0"), None);
        assert_eq!(parse_pid(b"99999999999"), None);
    }

    #[test]
    fn process_cpu_clock_of_a_zombie() {
        let me = process_cpu_ns(std::process::id() as i32).unwrap();
        assert!(me > 0);
        assert_eq!(process_cpu_ns(0), None);
        // A child that burns a little, then stays a zombie until reaped: its clock
        // still reads its final time, the same as wait4's rusage.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"])
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let zombie = loop {
            let s = std::fs::read(format!("/proc/{pid}/stat")).unwrap();
            if crate::procs::parse_pid_stat(&s).unwrap().state == b'Z' {
                break process_cpu_ns(pid).unwrap();
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        let mut status = 0;
        // SAFETY: an all-zero rusage is valid; wait4 writes into `status` and `ru`.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers to locals; `pid` is our child.
        assert_eq!(unsafe { libc::wait4(pid, &mut status, 0, &mut ru) }, pid);
        let _ = child.try_wait();
        let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
        let waited_ns = (us(ru.ru_utime) + us(ru.ru_stime)) * 1000;
        assert!(zombie > 0);
        // rusage gives utime and stime each truncated to the microsecond: their sum is
        // up to 2 µs below the clock's nanoseconds.
        assert!(zombie.abs_diff(waited_ns) < 2000, "{zombie} vs {waited_ns}");
        // Reaped: gone.
        assert_eq!(process_cpu_ns(pid), None);
    }

    #[test]
    fn lists_proc() {
        let fd = open_at(libc::AT_FDCWD, c"/proc", libc::O_RDONLY | libc::O_DIRECTORY).unwrap();
        let mut buf = Vec::new();
        let me = std::process::id() as i32;
        for _ in 0..2 {
            let mut found = false;
            for_each_dirent(fd.as_raw_fd(), &mut buf, |n| {
                found |= parse_pid(n) == Some(me);
            })
            .unwrap();
            assert!(found, "own pid listed in /proc");
        }
    }
}
