//! Where joulerun's outputs go, and how they are written so that nothing is lost, mixed
//! or destroyed (docs/reliability.md).
//!
//! Every output named on the command line (`-o`, `--json`, `--csv`, later ones alike) is
//! a [`Dest`]:
//!
//! * `-`, `/dev/stdout`, `/dev/stderr`, `/dev/fd/N`, `/proc/self/fd/N`: that open file
//!   descriptor, written through a duplicate of it (a closed descriptor is an error at
//!   once, never a silent loss);
//! * a regular file, or a path that does not exist yet: written **atomically** through
//!   [`AtomicFile`] (a temporary file created before the command starts, so an unwritable
//!   destination stops joulerun before anything runs, and renamed over the destination
//!   when complete, so a previous good file survives any failure). Symbolic links are
//!   followed;
//! * an existing FIFO, character device or other special file: a stream, opened for
//!   writing without creating or truncating anything. A FIFO nobody reads yet is waited
//!   for with a message (a stop signal ends the wait);
//! * a directory, or a path whose directory does not exist: an error.
//!
//! Two outputs that would land in the same place (the same path, the same file through a
//! link, or two on standard output) are a usage error: their contents would interleave.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsx::{self, AtomicFile};

/// Standard descriptors (0, 1, 2) that were closed when joulerun started (bit n: fd n).
static CLOSED_AT_START: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Note which of fds 0, 1 and 2 are closed. Must run before the Rust runtime starts: it
/// reopens closed standard descriptors on `/dev/null` before `main` (so a JSON "to
/// stdout" would vanish without a trace). The binary calls it from `.init_array`.
pub fn note_closed_standard_fds() {
    let mut closed = 0u8;
    for fd in 0..=2 {
        // SAFETY: F_GETFD on a plain integer fd.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            closed |= 1 << fd;
        }
    }
    CLOSED_AT_START.fetch_or(closed, std::sync::atomic::Ordering::SeqCst);
}

/// Call first thing in `main`: note which of fds 0, 1 and 2 are closed and fill each with
/// `/dev/null`, so that no file joulerun opens later can land on it (a JSON "to stdout"
/// must not go into a CSV file that happened to get fd 1). Outputs to a descriptor closed
/// at start are refused by [`check`].
pub fn guard_standard_fds() {
    let mut closed = 0u8;
    for fd in 0..=2 {
        // SAFETY: F_GETFD on a plain integer fd.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            closed |= 1 << fd;
            // SAFETY: opening /dev/null; open returns the lowest free fd, which is `fd`.
            let got = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
            if got >= 0 && got != fd {
                // SAFETY: plain fd operations on fds we own.
                unsafe {
                    libc::dup2(got, fd);
                    libc::close(got);
                }
            }
        }
    }
    CLOSED_AT_START.fetch_or(closed, std::sync::atomic::Ordering::SeqCst);
}

/// Whether stderr was closed when joulerun started (the report then has nowhere to go).
pub fn stderr_closed_at_start() -> bool {
    closed_at_start(2)
}

fn closed_at_start(fd: i32) -> bool {
    (0..=2).contains(&fd)
        && CLOSED_AT_START.load(std::sync::atomic::Ordering::SeqCst) & (1 << fd) != 0
}

/// Where one output goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dest {
    /// An open file descriptor of joulerun: 1 for `-` and `/dev/stdout`, 2 for stderr.
    Fd(i32),
    /// A path: a regular file (written atomically) or a special file (streamed).
    Path(PathBuf),
}

impl Dest {
    /// The destination a command-line value names.
    pub fn parse(path: &Path) -> Dest {
        if path == Path::new("-") {
            return Dest::Fd(1);
        }
        let s = path.to_string_lossy();
        let fd = match s.as_ref() {
            "/dev/stdout" => Some(1),
            "/dev/stderr" => Some(2),
            "/dev/stdin" => Some(0),
            _ => s
                .strip_prefix("/dev/fd/")
                .or_else(|| s.strip_prefix("/proc/self/fd/"))
                .and_then(|n| n.parse::<i32>().ok())
                .filter(|n| *n >= 0),
        };
        match fd {
            Some(n) => Dest::Fd(n),
            None => Dest::Path(path.to_path_buf()),
        }
    }

    /// For messages: "standard output", "'energy.json'".
    pub fn describe(&self) -> String {
        match self {
            Dest::Fd(1) => "standard output".to_string(),
            Dest::Fd(2) => "standard error".to_string(),
            Dest::Fd(n) => format!("file descriptor {n}"),
            Dest::Path(p) => format!("'{}'", p.display()),
        }
    }

    /// What makes two destinations the same place: the (device, inode) of what exists,
    /// else the normalised absolute path it would be created at.
    fn identity(&self) -> Option<Identity> {
        match self {
            Dest::Fd(n) => fsx::identity_of_fd(*n).map(Identity::Inode),
            Dest::Path(p) => match fsx::identity_of_path(p) {
                Some(id) => Some(Identity::Inode(id)),
                None => {
                    let target = fsx::resolve_destination(p).unwrap_or_else(|_| p.clone());
                    Some(Identity::NewPath(normalise(&target)))
                }
            },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Identity {
    Inode((u64, u64)),
    NewPath(PathBuf),
}

/// An absolute path with `.` and `..` removed lexically (for files that do not exist yet).
fn normalise(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(p)
    };
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c.as_os_str()),
        }
    }
    out
}

/// One output the user asked for: the option that named it and where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requested {
    /// The option, for messages: `--json`, `--csv`, `-o`.
    pub flag: &'static str,
    /// What it holds, for messages: "the JSON summary".
    pub what: &'static str,
    pub dest: Dest,
}

/// Check a set of outputs before anything is opened: every file descriptor they name is
/// open, and no two land in the same place. `reserved`: other files of the run that an
/// output must not overwrite (the baseline being read), with a description.
pub fn check(requested: &[Requested], reserved: &[(&Path, &str)]) -> Result<()> {
    let mut seen: Vec<(Identity, &Requested)> = Vec::new();
    for r in requested {
        if let Dest::Fd(n) = r.dest
            && (closed_at_start(n) || fsx::identity_of_fd(n).is_none())
        {
            return Err(Error::usage(format!(
                "{}: {} is closed, so that output would be lost; give {} a file instead",
                r.flag,
                r.dest.describe(),
                r.flag
            )));
        }
        let Some(id) = r.dest.identity() else {
            continue;
        };
        if let Some((_, other)) = seen.iter().find(|(i, _)| *i == id) {
            let place = if other.dest == r.dest {
                r.dest.describe()
            } else {
                format!(
                    "the same file ({} and {})",
                    other.dest.describe(),
                    r.dest.describe()
                )
            };
            return Err(Error::usage(format!(
                "{} and {} would both write to {place}: their contents would be mixed; give each its own file",
                other.flag, r.flag
            )));
        }
        for (path, what) in reserved {
            let same = match (&id, fsx::identity_of_path(path)) {
                (Identity::Inode(a), Some(b)) => *a == b,
                (Identity::NewPath(a), None) => *a == normalise(path),
                _ => false,
            };
            if same {
                return Err(Error::usage(format!(
                    "{} {} is {what}: it would be overwritten; choose another file",
                    r.flag,
                    r.dest.describe()
                )));
            }
        }
        seen.push((id, r));
    }
    Ok(())
}

/// An output, ready: its temporary file created, or its descriptor duplicated.
pub enum Prepared {
    /// A duplicate of one of joulerun's descriptors.
    Fd(File),
    /// A regular file, written whole at [`Prepared::finish`] (or, for a stream such as the
    /// CSV, put in place by [`Prepared::place`] and written through afterwards).
    Atomic(AtomicFile),
    /// An existing special file, opened when it is first needed.
    Special(PathBuf),
    /// A special file or a placed atomic file, open for writing.
    Open(File, PathBuf),
}

fn dup_fd(n: i32) -> io::Result<File> {
    // SAFETY: F_DUPFD_CLOEXEC on a plain integer fd returns a new fd or -1.
    let fd = unsafe { libc::fcntl(n, libc::F_DUPFD_CLOEXEC, 3) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this fd and nothing else owns it.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Prepare `r` for writing (see the module documentation). Errors name the option.
pub fn prepare(r: &Requested) -> Result<Prepared> {
    let fail = |why: String| Error::failure(format!("cannot write {} {why}", r.what));
    match &r.dest {
        Dest::Fd(n) => dup_fd(*n)
            .map(Prepared::Fd)
            .map_err(|e| fail(format!("to {}: {e}", r.dest.describe()))),
        Dest::Path(p) => match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => Err(fail(format!(
                "to '{}': it is a directory; give a file name",
                p.display()
            ))),
            Ok(m) if !m.is_file() => {
                let t = m.file_type();
                if t.is_fifo() || t.is_char_device() {
                    Ok(Prepared::Special(p.clone()))
                } else {
                    Err(fail(format!(
                        "to '{}': it is {}, which joulerun cannot write to",
                        p.display(),
                        fsx::describe_type(&t)
                    )))
                }
            }
            _ => AtomicFile::create(p)
                .map(Prepared::Atomic)
                .map_err(|why| fail(format!("to '{}': {why}", p.display()))),
        },
    }
}

/// Open a FIFO or device for writing without creating or truncating it. A FIFO with no
/// reader yet is waited for, after a message (a stop signal ends joulerun meanwhile).
fn open_special(path: &Path, flag: &str) -> io::Result<File> {
    let open = |nonblock: bool| {
        OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOCTTY | if nonblock { libc::O_NONBLOCK } else { 0 })
            .open(path)
    };
    match open(true) {
        Ok(f) => {
            clear_nonblock(&f);
            Ok(f)
        }
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            eprintln!(
                "joulerun: waiting for a process to read the FIFO '{}' ({flag}); Ctrl-C stops",
                crate::text::escape_line(&path.display().to_string())
            );
            open(false)
        }
        Err(e) => Err(e),
    }
}

fn clear_nonblock(f: &File) {
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    // SAFETY: fcntl with integer arguments on an fd we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
}

impl Prepared {
    /// For a streamed output (the CSV): make it the file at its destination now (the
    /// command has started) and return it for writing. Special files are opened here.
    pub fn place(&mut self, flag: &str) -> io::Result<&mut File> {
        let taken = std::mem::replace(self, Prepared::Special(PathBuf::new()));
        *self = match taken {
            Prepared::Atomic(a) => {
                let target = a.target().to_path_buf();
                Prepared::Open(a.commit()?, target)
            }
            Prepared::Special(p) => Prepared::Open(open_special(&p, flag)?, p),
            other => other,
        };
        match self {
            Prepared::Fd(f) | Prepared::Open(f, _) => Ok(f),
            _ => Err(io::Error::other("output not open")),
        }
    }

    /// The file to write into now: a descriptor, an opened special file, or the temporary
    /// file of a regular one (before or after [`Prepared::place`]).
    pub fn writer(&mut self) -> io::Result<&mut File> {
        match self {
            Prepared::Fd(f) | Prepared::Open(f, _) => Ok(f),
            Prepared::Atomic(a) => a.file(),
            Prepared::Special(p) => Err(io::Error::other(format!(
                "'{}' is not open yet",
                p.display()
            ))),
        }
    }

    /// Write `bytes` as this output's whole content, and put a regular file in place.
    pub fn finish(self, bytes: &[u8], flag: &str) -> io::Result<()> {
        match self {
            Prepared::Fd(mut f) | Prepared::Open(mut f, _) => {
                f.write_all(bytes)?;
                f.flush()
            }
            Prepared::Atomic(a) => a.write_all_and_commit(bytes),
            Prepared::Special(p) => {
                let mut f = open_special(&p, flag)?;
                f.write_all(bytes)?;
                f.flush()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(flag: &'static str, p: &str) -> Requested {
        Requested {
            flag,
            what: "the output",
            dest: Dest::parse(Path::new(p)),
        }
    }

    #[test]
    fn parses_descriptor_names() {
        assert_eq!(Dest::parse(Path::new("-")), Dest::Fd(1));
        assert_eq!(Dest::parse(Path::new("/dev/stdout")), Dest::Fd(1));
        assert_eq!(Dest::parse(Path::new("/dev/stderr")), Dest::Fd(2));
        assert_eq!(Dest::parse(Path::new("/dev/fd/7")), Dest::Fd(7));
        assert_eq!(Dest::parse(Path::new("/proc/self/fd/3")), Dest::Fd(3));
        assert_eq!(
            Dest::parse(Path::new("/dev/null")),
            Dest::Path("/dev/null".into())
        );
    }

    #[test]
    fn conflicts_are_usage_errors() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a.json");
        let a_s = a.to_str().unwrap();
        // Same new path, spelled differently.
        let dotted = format!("{}/./a.json", t.path().display());
        let e = check(&[req("--json", a_s), req("--csv", &dotted)], &[]).unwrap_err();
        assert_eq!(e.code, 2);
        assert!(e.message.contains("--json and --csv"), "{}", e.message);
        // Two on stdout.
        let e = check(&[req("--json", "-"), req("--csv", "/dev/stdout")], &[]).unwrap_err();
        assert!(e.message.contains("standard output"), "{}", e.message);
        // A link to an existing file.
        std::fs::write(&a, "x").unwrap();
        let l = t.path().join("l.json");
        std::os::unix::fs::symlink(&a, &l).unwrap();
        assert!(check(&[req("-o", a_s), req("--json", l.to_str().unwrap())], &[]).is_err());
        // The baseline being read.
        let e = check(&[req("--json", a_s)], &[(&a, "the baseline file")]).unwrap_err();
        assert!(e.message.contains("the baseline file"), "{}", e.message);
        // Distinct files are fine.
        let b = t.path().join("b.csv");
        check(
            &[req("--json", a_s), req("--csv", b.to_str().unwrap())],
            &[],
        )
        .unwrap();
        // A closed descriptor.
        let e = check(&[req("--json", "/dev/fd/987")], &[]).unwrap_err();
        assert!(e.message.contains("is closed"), "{}", e.message);
    }

    #[test]
    fn prepared_files_keep_the_old_content_until_finished() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a.json");
        std::fs::write(&a, "old").unwrap();
        let p = prepare(&req("--json", a.to_str().unwrap())).unwrap();
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "old");
        drop(p);
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "old");
        let p = prepare(&req("--json", a.to_str().unwrap())).unwrap();
        p.finish(b"new", "--json").unwrap();
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "new");
        // A directory is refused; so is a missing directory.
        assert!(prepare(&req("--json", t.path().to_str().unwrap())).is_err());
        let e = prepare(&req("--json", "/no/such/dir/x.json"))
            .err()
            .unwrap();
        assert!(e.message.contains("does not exist"), "{}", e.message);
        // /dev/null streams.
        let p = prepare(&req("--csv", "/dev/null")).unwrap();
        p.finish(b"x", "--csv").unwrap();
    }
}
