//! Reading and parsing kernel files: sysfs and procfs attributes, cgroupfs files,
//! `/dev/cpu/N/msr` registers.
//!
//! [`crate::fsx`] opens files so that nothing a path points at can hang joulerun; this
//! module reads from descriptors that are already open, into buffers the caller owns and
//! reuses, and parses what the kernel writes there: decimal and hexadecimal numbers and
//! CPU lists (`0-3,8,10-11`).
//!
//! Every read retries on EINTR, goes on after a short read and never writes past the
//! buffer it is given. Nothing allocates on success except [`read_to_vec`] (only when a
//! file is larger than any before it) and [`parse_cpu_list`] (open time only), so the
//! readers are fit for the per-tick paths.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};

/// Highest CPU number accepted, in a CPU list or a `cpuN` directory name: guards against
/// absurd ranges.
pub const MAX_CPU: usize = 65535;

// ---------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------

/// Run one read-like system call until it does not fail with EINTR; its byte count.
fn retry(mut call: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        let r = call();
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn pread_raw(fd: RawFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let offset = libc::off_t::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file offset out of range"))?;
    // SAFETY: the pointer and length describe `buf`, which outlives the call.
    retry(|| unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), offset) })
}

/// One `pread` of at most `buf.len()` bytes at `offset` (EINTR retried): the bytes read,
/// 0 at the end of the file. For fixed-size records at an offset (MSR registers).
pub fn pread_at(fd: impl AsFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    pread_raw(fd.as_fd().as_raw_fd(), buf, offset)
}

/// `pread` from offset 0 into `buf` until the end of the file or a full buffer; with
/// `value`, also after a read whose data ends in a newline.
///
/// A kernel file (sysfs, procfs, cgroupfs) hands over everything it has, up to the size
/// asked, in one read: a read shorter than asked is the end of the file. Stopping there
/// saves a second system call per tick, and for procfs files a second generation of the
/// whole content (a read at a non-zero offset makes the kernel produce it again).
fn pread_from_start(fd: RawFd, buf: &mut [u8], value: bool) -> io::Result<usize> {
    let mut len = 0;
    while len < buf.len() {
        let asked = buf.len() - len;
        let n = pread_raw(fd, &mut buf[len..], len as u64)?;
        if n == 0 {
            return Ok(len);
        }
        len += n;
        if n < asked {
            return Ok(len);
        }
        // sysfs hands over a whole attribute in one read; its newline ends it, which
        // saves a second system call per tick.
        if value && buf[len - 1] == b'\n' {
            return Ok(len);
        }
    }
    if value {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "more than {} bytes, not a single value",
                buf.len().saturating_sub(1)
            ),
        ));
    }
    Ok(len)
}

/// Read a one-value attribute (`energy_uj`, `physical_package_id`) from offset 0 of a
/// kept-open file into `buf`: up to the newline that ends it, or the end of the file.
/// Returns the bytes read (0: the file is empty). Content that does not fit in `buf` is
/// an `InvalidData` error (the only case that allocates).
pub fn pread_value(fd: impl AsFd, buf: &mut [u8]) -> io::Result<usize> {
    pread_from_start(fd.as_fd().as_raw_fd(), buf, true)
}

/// As much of a file from offset 0 as fits in `buf` (a longer file is cut): a multi-line
/// file whose beginning is wanted (cgroup `cpu.stat`). Returns the bytes read.
pub fn pread_head(fd: impl AsFd, buf: &mut [u8]) -> io::Result<usize> {
    pread_from_start(fd.as_fd().as_raw_fd(), buf, false)
}

/// Sequential `read` from the descriptor's position until `buf` is full or the end of the
/// file (a longer file is cut): procfs files whose offsets are not byte offsets, so
/// `pread` cannot be used (`children`). Returns the bytes read.
pub fn read_head(fd: impl AsFd, buf: &mut [u8]) -> io::Result<usize> {
    let fd = fd.as_fd().as_raw_fd();
    let mut len = 0;
    while len < buf.len() {
        let tail = &mut buf[len..];
        // SAFETY: the pointer and length describe `tail`, the unfilled part of `buf`.
        let n = retry(|| unsafe { libc::read(fd, tail.as_mut_ptr().cast(), tail.len()) })?;
        if n == 0 {
            break;
        }
        len += n;
    }
    Ok(len)
}

/// All of a file into the growable `buf` (cleared first; it grows only when a file is
/// larger than every one before it). `positional`: `pread` from offset 0 (a kept-open
/// kernel file re-read every tick), else sequential `read` from the descriptor's position.
///
/// With `positional`, one `pread` of the whole buffer: a shorter read is the whole file
/// (kernel files hand over all they have at once; see [`pread_head`]). A read that fills
/// the buffer grows it and reads again from offset 0, so the content is always one
/// generation of the file, never two glued together.
pub fn read_to_vec(fd: impl AsFd, buf: &mut Vec<u8>, positional: bool) -> io::Result<()> {
    let fd = fd.as_fd().as_raw_fd();
    buf.clear();
    if buf.capacity() < 4096 {
        buf.reserve(4096);
    }
    if positional {
        loop {
            let spare = buf.spare_capacity_mut();
            let room = spare.len();
            let ptr = spare.as_mut_ptr().cast::<libc::c_void>();
            // SAFETY: `ptr` and `room` describe the uninitialised tail of the empty `buf`;
            // the kernel writes at most that many bytes, and only those become its content.
            let n = retry(|| unsafe { libc::pread(fd, ptr, room, 0) })?;
            if n < room {
                // SAFETY: the kernel initialised `n` bytes at the start of `buf`.
                unsafe { buf.set_len(n) };
                return Ok(());
            }
            let cap = buf.capacity();
            buf.reserve(cap * 2);
        }
    }
    loop {
        let len = buf.len();
        if len == buf.capacity() {
            buf.reserve(len);
        }
        let spare = buf.spare_capacity_mut();
        let room = spare.len();
        let ptr = spare.as_mut_ptr().cast::<libc::c_void>();
        let n = if positional {
            // SAFETY: `ptr` and `room` describe the uninitialised tail of `buf`; the kernel
            // writes at most that many bytes, and only those become part of the vector.
            retry(|| unsafe { libc::pread(fd, ptr, room, len as libc::off_t) })?
        } else {
            // SAFETY: as above.
            retry(|| unsafe { libc::read(fd, ptr, room) })?
        };
        if n == 0 {
            return Ok(());
        }
        // SAFETY: the kernel initialised `n <= room` more bytes after `len`.
        unsafe { buf.set_len(len + n) };
    }
}

// ---------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------

/// Decimal digits only (no sign, no whitespace, at least one digit; leading zeros
/// allowed). `None` for anything else or an overflow. Never allocates.
pub fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

/// A sysfs decimal number: optional surrounding ASCII whitespace (the newline), then
/// [`parse_u64`]. Never allocates.
pub fn parse_decimal_u64(bytes: &[u8]) -> Option<u64> {
    parse_u64(bytes.trim_ascii())
}

/// A signed sysfs decimal number (`physical_package_id` is -1 on some hypervisors):
/// optional surrounding ASCII whitespace, an optional `-`, then digits. Never allocates.
pub fn parse_decimal_i64(bytes: &[u8]) -> Option<i64> {
    match bytes.trim_ascii() {
        [b'-', digits @ ..] => {
            let v = parse_u64(digits)?;
            if v == 1 << 63 {
                Some(i64::MIN)
            } else {
                i64::try_from(v).ok().map(|v| -v)
            }
        }
        digits => parse_u64(digits).and_then(|v| i64::try_from(v).ok()),
    }
}

/// Hexadecimal digits only (no prefix, no sign, no whitespace, at least one digit).
/// `None` for anything else or an overflow. Never allocates.
pub fn parse_hex_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &b in digits {
        let d = char::from(b).to_digit(16)?;
        v = v.checked_mul(16)?.checked_add(u64::from(d))?;
    }
    Some(v)
}

/// `0x02`, `0X2` (hexadecimal) or `2` (decimal), with optional surrounding ASCII
/// whitespace: the values of perf event terms. Never allocates.
pub fn parse_hex_or_decimal_u64(bytes: &[u8]) -> Option<u64> {
    let t = bytes.trim_ascii();
    match t.strip_prefix(b"0x").or_else(|| t.strip_prefix(b"0X")) {
        Some(hex) => parse_hex_u64(hex),
        None => parse_u64(t),
    }
}

/// Parse a kernel CPU list (`0`, `0,36`, `0-3,8,10-11`, with or without a trailing
/// newline) into ascending, de-duplicated CPU numbers, each at most [`MAX_CPU`]. An empty
/// list is an error; the error says what is wrong in words.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty CPU list".to_string());
    }
    let num = |x: &str| -> Result<usize, String> {
        let x = x.trim();
        if x.is_empty() || !x.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("'{x}' is not a CPU number"));
        }
        match parse_u64(x.as_bytes()).and_then(|n| usize::try_from(n).ok()) {
            Some(n) if n <= MAX_CPU => Ok(n),
            _ => Err(format!("CPU number '{x}' is out of range")),
        }
    };
    let mut cpus = Vec::new();
    for part in t.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("range '{}' is reversed", part.trim()));
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(num(part)?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, File};

    #[test]
    fn parses_decimal() {
        assert_eq!(parse_decimal_u64(b"12345\n"), Some(12345));
        assert_eq!(parse_decimal_u64(b"00000000000000000042\n"), Some(42));
        assert_eq!(parse_decimal_u64(b" 7 "), Some(7));
        assert_eq!(parse_decimal_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_decimal_u64(b"18446744073709551616"), None);
        assert_eq!(parse_decimal_u64(b""), None);
        assert_eq!(parse_decimal_u64(b"\n"), None);
        assert_eq!(parse_decimal_u64(b"-1"), None);
        assert_eq!(parse_decimal_u64(b"+1"), None);
        assert_eq!(parse_decimal_u64(b"12 34"), None);
        assert_eq!(parse_decimal_u64(b"0x10"), None);
        assert_eq!(parse_decimal_u64(b"\xff\xfe"), None);
        // Digits only: no trimming.
        assert_eq!(parse_u64(b"42"), Some(42));
        assert_eq!(parse_u64(b" 42"), None);
        assert_eq!(parse_u64(b""), None);
    }

    #[test]
    fn parses_signed_decimal() {
        assert_eq!(parse_decimal_i64(b"-1\n"), Some(-1));
        assert_eq!(parse_decimal_i64(b" 3 "), Some(3));
        assert_eq!(parse_decimal_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_decimal_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_decimal_i64(b"9223372036854775808"), None);
        assert_eq!(parse_decimal_i64(b"-9223372036854775809"), None);
        for bad in [&b""[..], b"-", b"--1", b"+1", b"1-", b"banana", b"- 1"] {
            assert_eq!(parse_decimal_i64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn parses_hex() {
        assert_eq!(parse_hex_u64(b"a"), Some(10));
        assert_eq!(parse_hex_u64(b"1F"), Some(31));
        assert_eq!(parse_hex_u64(b"ffffffffffffffff"), Some(u64::MAX));
        assert_eq!(parse_hex_u64(b"10000000000000000"), None);
        for bad in [&b""[..], b"g", b"+1", b"0x1", b" 1"] {
            assert_eq!(parse_hex_u64(bad), None, "{bad:?}");
        }
        assert_eq!(parse_hex_or_decimal_u64(b"0x02"), Some(2));
        assert_eq!(parse_hex_or_decimal_u64(b"0XfF"), Some(255));
        assert_eq!(parse_hex_or_decimal_u64(b" 17 "), Some(17));
        assert_eq!(parse_hex_or_decimal_u64(b"0x"), None);
        assert_eq!(parse_hex_or_decimal_u64(b"0x+1"), None);
        assert_eq!(parse_hex_or_decimal_u64(b"-1"), None);
        assert_eq!(parse_hex_or_decimal_u64(b"0x0x1"), None);
        assert_eq!(parse_hex_or_decimal_u64(b""), None);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0"), Ok(vec![0]));
        assert_eq!(parse_cpu_list("0\n"), Ok(vec![0]));
        assert_eq!(parse_cpu_list("0,36\n"), Ok(vec![0, 36]));
        assert_eq!(
            parse_cpu_list("0-3,8-11\n"),
            Ok(vec![0, 1, 2, 3, 8, 9, 10, 11])
        );
        assert_eq!(
            parse_cpu_list("0-3,8,10-11"),
            Ok(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("0-1"), Ok(vec![0, 1]));
        assert_eq!(parse_cpu_list("5,1,1"), Ok(vec![1, 5]));
        assert_eq!(parse_cpu_list("65535"), Ok(vec![MAX_CPU]));
        for bad in [
            "",
            "\n",
            "banana",
            "0,",
            "0-",
            "-3",
            "3-1",
            "0,,1",
            "1 2",
            "0x1",
            "+1",
            "65536",
            "0-99999999999",
        ] {
            assert!(parse_cpu_list(bad).is_err(), "{bad:?} accepted");
        }
    }

    fn file_with(dir: &tempfile::TempDir, name: &str, content: &[u8]) -> File {
        let p = dir.path().join(name);
        fs::write(&p, content).unwrap();
        File::open(p).unwrap()
    }

    #[test]
    fn values_are_read_whole_and_again_from_the_start() {
        let t = tempfile::tempdir().unwrap();
        let f = file_with(&t, "energy_uj", b"00000000000000000042\n");
        let mut buf = [0u8; 32];
        for _ in 0..2 {
            let n = pread_value(&f, &mut buf).unwrap();
            assert_eq!(&buf[..n], b"00000000000000000042\n");
        }
        // No newline: read to the end of the file.
        let f = file_with(&t, "bare", b"7");
        assert_eq!(pread_value(&f, &mut buf).unwrap(), 1);
        // Empty.
        let f = file_with(&t, "empty", b"");
        assert_eq!(pread_value(&f, &mut buf).unwrap(), 0);
        // Exactly the buffer, ending in its newline: fits.
        let f = file_with(&t, "fits", &[b"7".repeat(31), b"\n".to_vec()].concat());
        assert_eq!(pread_value(&f, &mut buf).unwrap(), 32);
        // Longer than the buffer: an error, not a cut value.
        let f = file_with(&t, "long", &[b'7'; 100]);
        let e = pread_value(&f, &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("more than 31 bytes"), "{e}");
        // A multi-line file: the first line, in one read.
        let f = file_with(&t, "lines", b"1\n2\n");
        assert_eq!(pread_value(&f, &mut buf).unwrap(), 4);
    }

    #[test]
    fn heads_are_cut_to_the_buffer() {
        let t = tempfile::tempdir().unwrap();
        let f = file_with(
            &t,
            "cpu.stat",
            b"usage_usec 5\nuser_usec 3\nsystem_usec 2\n",
        );
        let mut buf = [0u8; 16];
        let n = pread_head(&f, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"usage_usec 5\nuse");
        let n = pread_head(&f, &mut buf).unwrap();
        assert_eq!(n, 16, "again from offset 0");
        let mut big = [0u8; 64];
        let n = pread_head(&f, &mut big).unwrap();
        assert_eq!(n, 39);
        let f = file_with(&t, "seq", b"abcdef");
        let mut small = [0u8; 4];
        assert_eq!(read_head(&f, &mut small).unwrap(), 4);
        assert_eq!(&small, b"abcd");
        // Sequential: the next read goes on from the position.
        assert_eq!(read_head(&f, &mut small).unwrap(), 2);
        assert_eq!(&small[..2], b"ef");
    }

    #[test]
    fn registers_are_read_at_their_offset() {
        let t = tempfile::tempdir().unwrap();
        let mut content = vec![0u8; 16];
        content[8..].copy_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
        let f = file_with(&t, "msr", &content);
        let mut buf = [0u8; 8];
        assert_eq!(pread_at(&f, &mut buf, 8).unwrap(), 8);
        assert_eq!(u64::from_le_bytes(buf), 0x1122_3344_5566_7788);
        assert_eq!(pread_at(&f, &mut buf, 12).unwrap(), 4, "short at the end");
        assert_eq!(pread_at(&f, &mut buf, 16).unwrap(), 0, "past the end");
        assert!(pread_at(&f, &mut buf, u64::MAX).is_err());
    }

    #[test]
    fn whole_files_grow_the_buffer_once() {
        let t = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..10_000u32).map(|i| b'0' + (i % 10) as u8).collect();
        let f = file_with(&t, "stat", &content);
        let mut buf = Vec::new();
        read_to_vec(&f, &mut buf, true).unwrap();
        assert_eq!(buf, content);
        let cap = buf.capacity();
        read_to_vec(&f, &mut buf, true).unwrap();
        assert_eq!(buf, content);
        assert_eq!(buf.capacity(), cap, "no growth on a re-read");
        let f = file_with(&t, "seq", b"12 345\n");
        read_to_vec(&f, &mut buf, false).unwrap();
        assert_eq!(buf, b"12 345\n");
        // procfs, sequentially and positionally.
        let f = File::open("/proc/self/stat").unwrap();
        read_to_vec(&f, &mut buf, true).unwrap();
        assert!(buf.starts_with(std::process::id().to_string().as_bytes()));
    }

    #[test]
    fn a_file_larger_than_the_buffer_is_read_whole_in_one_generation() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("big");
        let content: Vec<u8> = (0..20_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        std::fs::write(&p, &content).unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let mut buf = Vec::new();
        read_to_vec(&f, &mut buf, true).unwrap();
        assert_eq!(buf, content);
        // Steady state: the same capacity serves the next read.
        let cap = buf.capacity();
        read_to_vec(&f, &mut buf, true).unwrap();
        assert_eq!((buf.len(), buf.capacity()), (content.len(), cap));
        // A small file: one read, whole.
        std::fs::write(&p, b"cpu 1 2 3\n").unwrap();
        read_to_vec(&f, &mut buf, true).unwrap();
        assert_eq!(buf, b"cpu 1 2 3\n");
        let mut head = [0u8; 512];
        assert_eq!(pread_head(&f, &mut head).unwrap(), 10);
    }
}
