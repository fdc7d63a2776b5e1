//! Files, opened so that nothing a path points at can hang or hurt joulerun.
//!
//! * [`open_regular`] / [`read_regular`]: where a regular file is meant (sysfs and procfs
//!   attributes, a baseline), anything else (a FIFO, a device, a socket, a directory) is
//!   refused with a message saying what it is. The open itself uses `O_NONBLOCK`, so a
//!   FIFO swapped in between the check and the open cannot block it either.
//! * [`open_char_device`]: where a character device is meant (`/dev/cpu/N/msr`).
//! * [`AtomicFile`]: a regular file written whole or not at all: the content goes to an
//!   unnamed temporary file in the destination's directory (`O_TMPFILE`, or a hidden named
//!   one where the filesystem cannot), created *before* the work starts so an unwritable
//!   destination is known at once, then linked and renamed over the destination. A previous
//!   file survives any failure; a signal or a crash leaves no debris (the named fallback is
//!   registered for removal with [`crate::signals`]).
//! * [`resolve_destination`]: the one rule for where a written file goes. A symbolic link is
//!   followed (the link stays, the file it points at is replaced); the destination must be a
//!   regular file or not exist yet, in an existing directory.

use std::ffi::{CString, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::signals;

/// What is at a path, in words for messages: "a FIFO (named pipe)", "a directory"...
pub fn describe_type(ft: &fs::FileType) -> &'static str {
    if ft.is_file() {
        "a regular file"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO (named pipe)"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

fn wrong_type(ft: &fs::FileType, wanted: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("it is {}, not {wanted}", describe_type(ft)),
    )
}

/// Open without blocking, then check what was opened. `ok` decides on the file type.
fn open_checked(path: &Path, wanted: &str, ok: impl Fn(&fs::FileType) -> bool) -> io::Result<File> {
    // A first look without opening: a FIFO or a device is never even opened.
    let meta = fs::metadata(path)?;
    if !ok(&meta.file_type()) {
        return Err(wrong_type(&meta.file_type(), wanted));
    }
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    // The path may have changed between the look and the open.
    let meta = f.metadata()?;
    if !ok(&meta.file_type()) {
        return Err(wrong_type(&meta.file_type(), wanted));
    }
    clear_nonblock(&f)?;
    Ok(f)
}

fn clear_nonblock(f: &File) -> io::Result<()> {
    let fd = f.as_raw_fd();
    // SAFETY: fcntl on an fd we own, with integer arguments.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Open a regular file for reading; anything else is refused without blocking.
pub fn open_regular(path: &Path) -> io::Result<File> {
    open_checked(path, "a regular file", |t| t.is_file())
}

/// Open a character device for reading (`/dev/cpu/0/msr`). `allow_regular`: a regular
/// file may stand in for it (fake hardware trees).
pub fn open_char_device(path: &Path, allow_regular: bool) -> io::Result<File> {
    open_checked(path, "a character device", |t| {
        t.is_char_device() || (allow_regular && t.is_file())
    })
}

/// The whole content of a regular file, at most `limit` bytes (more is an error).
pub fn read_regular(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let f = open_regular(path)?;
    let mut bytes = Vec::new();
    f.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes"),
        ));
    }
    Ok(bytes)
}

/// Small kernel attribute files: 64 KiB is far more than any of them holds.
pub const ATTR_LIMIT: u64 = 64 * 1024;

/// [`read_regular`] of a small attribute file as (lossy) UTF-8.
pub fn read_attr_string(path: &Path) -> io::Result<String> {
    read_regular(path, ATTR_LIMIT).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Where a file written to `path` really goes: symbolic links followed (at most 40),
/// relative link targets taken from the link's directory. The result is a regular file or
/// does not exist; its directory exists. Errors say what is in the way.
pub fn resolve_destination(path: &Path) -> Result<PathBuf, String> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = fs::read_link(&p)
                    .map_err(|e| format!("cannot read the symbolic link '{}': {e}", p.display()))?;
                p = match p.parent() {
                    Some(dir) if target.is_relative() => dir.join(target),
                    _ => target,
                };
            }
            Ok(m) if m.file_type().is_file() => return Ok(p),
            Ok(m) => {
                let via = if p == path {
                    String::new()
                } else {
                    format!(" (where '{}' points)", path.display())
                };
                return Err(format!(
                    "'{}'{via} is {}: joulerun only replaces a regular file or creates a new one",
                    p.display(),
                    describe_type(&m.file_type())
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let dir = parent_dir(&p);
                return match fs::metadata(&dir) {
                    Ok(m) if m.is_dir() => Ok(p),
                    Ok(_) => Err(format!("'{}' is not a directory", dir.display())),
                    Err(e) => Err(format!(
                        "the directory '{}' does not exist ({e}): create it first",
                        dir.display()
                    )),
                };
            }
            Err(e) => return Err(format!("cannot look at '{}': {e}", p.display())),
        }
    }
    Err(format!(
        "'{}': too many levels of symbolic links",
        path.display()
    ))
}

fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

static SEQ: AtomicU64 = AtomicU64::new(0);

fn temp_name(dir: &Path, target: &Path) -> PathBuf {
    let mut name = OsString::from(".");
    name.push(target.file_name().unwrap_or_else(|| "joulerun".as_ref()));
    name.push(format!(
        ".tmp.{}.{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    dir.join(name)
}

/// A file written whole or not at all (see the module documentation).
pub struct AtomicFile {
    target: PathBuf,
    dir: PathBuf,
    /// `None` only once committed.
    file: Option<File>,
    /// The named temporary file, when `O_TMPFILE` could not be used.
    named: Option<PathBuf>,
}

impl AtomicFile {
    /// Prepare to replace `path` (after [`resolve_destination`]). Creates the temporary
    /// file now, so an unwritable directory is an error before any work is done.
    pub fn create(path: &Path) -> Result<AtomicFile, String> {
        let target = resolve_destination(path)?;
        let dir = parent_dir(&target);
        let mode = fs::metadata(&target)
            .map(|m| m.permissions().mode() & 0o7777)
            .ok();
        let describe = |e: io::Error| {
            format!(
                "cannot write in '{}': {} (check it is writable)",
                dir.display(),
                match e.raw_os_error() {
                    Some(libc::EACCES) | Some(libc::EPERM) => "permission denied".to_string(),
                    Some(libc::EROFS) => "read-only file system".to_string(),
                    _ => e.to_string(),
                }
            )
        };
        let (file, named) = match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .mode(0o666)
            .open(&dir)
        {
            Ok(f) => (f, None),
            // Filesystems without O_TMPFILE answer EOPNOTSUPP or EISDIR (old kernels).
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP) | Some(libc::EISDIR) | Some(libc::EINVAL)
                ) =>
            {
                let name = temp_name(&dir, &target);
                let f = signals::critical(|| {
                    let f = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o666)
                        .open(&name);
                    if f.is_ok() {
                        signals::register_cleanup_file(name.clone());
                    }
                    f
                })
                .map_err(describe)?;
                (f, Some(name))
            }
            Err(e) => return Err(describe(e)),
        };
        if let Some(mode) = mode {
            // Keep the permissions of the file being replaced.
            let _ = file.set_permissions(fs::Permissions::from_mode(mode));
        }
        Ok(AtomicFile {
            target,
            dir,
            file: Some(file),
            named,
        })
    }

    /// The destination (symbolic links resolved).
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The temporary file, to write the content into before [`AtomicFile::commit`].
    pub fn file(&mut self) -> io::Result<&mut File> {
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("the file was already committed"))
    }

    /// Write `bytes` as the whole content and put the file in place.
    pub fn write_all_and_commit(mut self, bytes: &[u8]) -> io::Result<()> {
        self.file()?.write_all(bytes)?;
        self.commit().map(|_| ())
    }

    /// Flush to disk and put the file in place, replacing what was there. Returns the
    /// file, still open (more writes go to the file now in place).
    pub fn commit(mut self) -> io::Result<File> {
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("the file was already committed"))?;
        file.sync_all()?;
        let named = self.named.take();
        let (dir, target) = (&self.dir, &self.target);
        let placed = signals::critical(|| -> io::Result<()> {
            let name = match &named {
                Some(n) => n.clone(),
                None => {
                    let name = temp_name(dir, target);
                    link_unnamed(&file, &name)?;
                    name
                }
            };
            let r = fs::rename(&name, target);
            if r.is_err() {
                let _ = fs::remove_file(&name);
            }
            signals::unregister(&name);
            r
        });
        if let (Err(_), Some(n)) = (&placed, &named) {
            let _ = fs::remove_file(n);
            signals::unregister(n);
        }
        placed?;
        // Make the rename durable. Some filesystems cannot fsync a directory.
        if let Ok(d) = File::open(dir)
            && let Err(e) = d.sync_all()
            && !matches!(
                e.raw_os_error(),
                Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)
            )
        {
            return Err(e);
        }
        Ok(file)
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        // Not committed: remove the named temporary file (an O_TMPFILE one vanishes).
        if let Some(n) = self.named.take() {
            let _ = fs::remove_file(&n);
            signals::unregister(&n);
        }
    }
}

/// Give an `O_TMPFILE` file the name `name` (through `/proc/self/fd`, which needs no
/// capability).
fn link_unnamed(file: &File, name: &Path) -> io::Result<()> {
    let from =
        CString::new(format!("/proc/self/fd/{}", file.as_raw_fd())).map_err(io::Error::other)?;
    let to = CString::new(name.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: two valid NUL-terminated paths; linkat does not keep them.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    signals::register_cleanup_file(name.to_path_buf());
    Ok(())
}

/// Identity of an open file or of what a path names: (device, inode).
pub fn identity_of_path(path: &Path) -> Option<(u64, u64)> {
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// (device, inode) of an open file descriptor, `None` when it is closed.
pub fn identity_of_fd(fd: i32) -> Option<(u64, u64)> {
    // SAFETY: an all-zero stat is valid; fstat only writes into it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on a plain integer fd and a stat we own.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return None;
    }
    Some((st.st_dev, st.st_ino))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkfifo(p: &Path) {
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn refuses_fifos_and_directories_without_blocking() {
        let t = tempfile::tempdir().unwrap();
        let fifo = t.path().join("fifo");
        mkfifo(&fifo);
        let e = open_regular(&fifo).unwrap_err();
        assert_eq!(
            e.to_string(),
            "it is a FIFO (named pipe), not a regular file"
        );
        let e = read_regular(t.path(), 10).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
        let e = open_regular(Path::new("/dev/null")).unwrap_err();
        assert!(e.to_string().contains("a character device"), "{e}");
        assert!(open_char_device(Path::new("/dev/null"), false).is_ok());
        assert!(open_char_device(&fifo, true).is_err());
        let f = t.path().join("f");
        fs::write(&f, "12\n").unwrap();
        assert_eq!(read_attr_string(&f).unwrap(), "12\n");
        assert!(open_char_device(&f, true).is_ok());
        assert!(open_char_device(&f, false).is_err());
        assert!(read_regular(&f, 2).is_err());
    }

    #[test]
    fn destinations_follow_links_and_refuse_what_is_not_a_file() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("real.json");
        fs::write(&real, "old").unwrap();
        let link = t.path().join("link.json");
        std::os::unix::fs::symlink("real.json", &link).unwrap();
        assert_eq!(resolve_destination(&link).unwrap(), real);
        let dangling = t.path().join("dangling.json");
        std::os::unix::fs::symlink("new.json", &dangling).unwrap();
        assert_eq!(
            resolve_destination(&dangling).unwrap(),
            t.path().join("new.json")
        );
        let e = resolve_destination(Path::new("/dev/full")).unwrap_err();
        assert!(e.contains("a character device"), "{e}");
        let fifo = t.path().join("fifo");
        mkfifo(&fifo);
        let e = resolve_destination(&fifo).unwrap_err();
        assert!(e.contains("FIFO"), "{e}");
        let e = resolve_destination(&t.path().join("no/such/dir/x.json")).unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
        let loop_a = t.path().join("a");
        std::os::unix::fs::symlink("b", &loop_a).unwrap();
        std::os::unix::fs::symlink("a", t.path().join("b")).unwrap();
        assert!(
            resolve_destination(&loop_a)
                .unwrap_err()
                .contains("too many")
        );
    }

    #[test]
    fn atomic_file_replaces_whole_keeps_mode_and_leaves_nothing() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("real.json");
        fs::write(&real, "old").unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o640)).unwrap();
        let link = t.path().join("link.json");
        std::os::unix::fs::symlink("real.json", &link).unwrap();
        // Not committed: the old content stays, nothing is left behind.
        let a = AtomicFile::create(&link).unwrap();
        drop(a);
        assert_eq!(fs::read_to_string(&real).unwrap(), "old");
        let names = || {
            let mut v: Vec<String> = fs::read_dir(t.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(), vec!["link.json", "real.json"]);
        let a = AtomicFile::create(&link).unwrap();
        a.write_all_and_commit(b"new").unwrap();
        assert_eq!(fs::read_to_string(&link).unwrap(), "new");
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            fs::metadata(&real).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert_eq!(names(), vec!["link.json", "real.json"]);
        // A new file in an existing directory.
        let fresh = t.path().join("fresh.csv");
        AtomicFile::create(&fresh)
            .unwrap()
            .write_all_and_commit(b"x")
            .unwrap();
        assert_eq!(fs::read_to_string(&fresh).unwrap(), "x");
    }

    #[test]
    fn fd_and_path_identities() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("f");
        let file = File::create(&f).unwrap();
        assert_eq!(identity_of_fd(file.as_raw_fd()), identity_of_path(&f));
        assert_eq!(identity_of_fd(-1), None);
    }
}
