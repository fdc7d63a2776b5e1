//! A test double of the Linux IPMI driver (`ipmi_devintf`), loaded with `LD_PRELOAD` into
//! joulerun (or ipmitool, or freeipmi) so that the production code path, with its real
//! `open`, `ioctl` and `poll` calls, talks to a scripted BMC.
//!
//! It wraps `ioctl`, `poll`, `select` and `close`. A descriptor is the fake device when it
//! is open on the file named by the script's `device` line (compared by device and inode,
//! so any spelling of the path works; tests create a regular file there). Calls on any
//! other descriptor go straight to the C library. On the fake device:
//!
//! * `IPMICTL_SEND_COMMAND` (`_IOR('i', 13, struct ipmi_req)`) reads the request as the
//!   kernel does (an address of `addr_len` bytes that must be the BMC's system interface,
//!   type 0x0c channel 0x0f, and `data_len` bytes of data) and queues the scripted reply,
//!   or nothing when the BMC is silent. Malformed requests fail with EINVAL or EFAULT
//!   like the kernel's.
//! * `IPMICTL_RECEIVE_MSG_TRUNC` / `IPMICTL_RECEIVE_MSG` take the first reply that is due,
//!   with its `msgid`, `netfn | 1`, `cmd` and data (truncated, or EMSGSIZE), and the
//!   system interface address (EINVAL when `addr_len` is too small for it); EAGAIN when
//!   none is due.
//! * `poll` and `select` report the descriptor readable when a reply is due.
//! * `IPMICTL_SET_GETS_EVENTS_CMD`, `IPMICTL_GET_MY_ADDRESS_CMD` and the like answer as
//!   the driver does; any other request is ENOTTY.
//!
//! The structure layouts are written here from `include/uapi/linux/ipmi.h`, independently
//! of joulerun's, so a layout mistake on either side fails the tests.
//!
//! The script (a file named by `FAKE_IPMI_SCRIPT`), one directive a line, `#` comments.
//! Times are seconds since this process's first request; request numbers count from 0.
//!
//! ```text
//! device /tmp/x/dev/ipmi0     the fake device file (required)
//! log /tmp/x/requests.log     one line per request received (optional)
//! watts 200 until 1.5         current power, piecewise: 200 W until 1.5 s, ...
//! watts 350                   ...then 350 W (the last segment lasts)
//! stats 10 900 300            minimum, maximum, average (default: the current power)
//! period_ms 1000              statistics reporting period (default 1000)
//! inactive from 3 to 4        measurement inactive in the replies to requests 3 and 4
//! zero from 5                 0 W from request 5 on (omit `to`: every later request)
//! completion C1 from 2        completion code 0xC1 from request 2 on
//! short from 4                a truncated reply (10 bytes) from request 4 on
//! silent from 5 to 9          no reply to requests 5..=9
//! delay_ms 20                 every reply is due this long after its request
//! ```
//!
//! (A directive without `from` applies to every request.)

use std::collections::VecDeque;
use std::ffi::{CString, c_int, c_long, c_short, c_uchar, c_uint, c_ulong, c_ushort, c_void};
use std::io::Write;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

// --- The kernel's structures (include/uapi/linux/ipmi.h), for this crate alone. ---

#[repr(C)]
struct KIpmiMsg {
    netfn: c_uchar,
    cmd: c_uchar,
    data_len: c_ushort,
    data: *mut c_uchar,
}

#[repr(C)]
struct KIpmiReq {
    addr: *mut c_uchar,
    addr_len: c_uint,
    msgid: c_long,
    msg: KIpmiMsg,
}

#[repr(C)]
struct KIpmiRecv {
    recv_type: c_int,
    addr: *mut c_uchar,
    addr_len: c_uint,
    msgid: c_long,
    msg: KIpmiMsg,
}

#[repr(C)]
struct KSystemInterfaceAddr {
    addr_type: c_int,
    channel: c_short,
    lun: c_uchar,
}

/// `_IOC` as asm-generic encodes it (x86, arm, aarch64, riscv).
const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | ((b'i' as u64) << 8) | nr
}
const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;

const SEND_COMMAND: u64 = ioc(IOC_READ, 13, std::mem::size_of::<KIpmiReq>());
const SEND_COMMAND_SETTIME: u64 = ioc(IOC_READ, 21, std::mem::size_of::<KIpmiReq>() + 8);
const RECEIVE_MSG: u64 = ioc(IOC_READ | IOC_WRITE, 12, std::mem::size_of::<KIpmiRecv>());
const RECEIVE_MSG_TRUNC: u64 = ioc(IOC_READ | IOC_WRITE, 11, std::mem::size_of::<KIpmiRecv>());
const SET_GETS_EVENTS: u64 = ioc(IOC_READ, 16, std::mem::size_of::<c_int>());
const SET_MY_ADDRESS: u64 = ioc(IOC_READ, 17, std::mem::size_of::<c_uint>());
const GET_MY_ADDRESS: u64 = ioc(IOC_READ, 18, std::mem::size_of::<c_uint>());
const SET_MY_LUN: u64 = ioc(IOC_READ, 19, std::mem::size_of::<c_uint>());
const GET_MY_LUN: u64 = ioc(IOC_READ, 20, std::mem::size_of::<c_uint>());

const SYSTEM_INTERFACE_ADDR_TYPE: c_int = 0x0c;
const BMC_CHANNEL: c_short = 0x0f;
const IPMI_MAX_MSG_LENGTH: usize = 272;

// --- The script. ---

/// Requests `from..=to` (`to` absent: every later one).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Range {
    from: u64,
    to: Option<u64>,
}

impl Range {
    fn has(&self, n: u64) -> bool {
        n >= self.from && self.to.is_none_or(|t| n <= t)
    }
}

#[derive(Default, Debug)]
struct Script {
    device: Option<(u64, u64)>,
    log: Option<String>,
    /// (watts, until seconds); `None` until: the rest of time.
    watts: Vec<(u32, Option<f64>)>,
    stats: Option<(u32, u32, u32)>,
    period_ms: u32,
    inactive: Option<Range>,
    zero: Option<Range>,
    completion: Option<(u8, Range)>,
    short: Option<Range>,
    silent: Option<Range>,
    delay: Duration,
}

fn parse_script(text: &str) -> Script {
    let mut s = Script {
        period_ms: 1000,
        ..Script::default()
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let w: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| w.get(i).and_then(|v| v.parse::<f64>().ok());
        // `[from N [to M]]` starting at word i.
        let range = |i: usize| {
            let from = match (w.get(i), w.get(i + 1)) {
                (Some(&"from"), Some(n)) => n.parse::<u64>().ok()?,
                _ => 0,
            };
            let to = match (w.get(i + 2), w.get(i + 3)) {
                (Some(&"to"), Some(n)) => Some(n.parse::<u64>().ok()?),
                _ => None,
            };
            Some(Range { from, to })
        };
        match w.first().copied() {
            Some("device") => {
                if let Some(p) = w.get(1) {
                    s.device = identity_of_path(p);
                }
            }
            Some("log") => s.log = w.get(1).map(|p| p.to_string()),
            Some("watts") => {
                if let Some(v) = num(1) {
                    let until = match w.get(2) {
                        Some(&"until") => num(3),
                        _ => None,
                    };
                    s.watts.push((v as u32, until));
                }
            }
            Some("stats") => {
                if let (Some(a), Some(b), Some(c)) = (num(1), num(2), num(3)) {
                    s.stats = Some((a as u32, b as u32, c as u32));
                }
            }
            Some("period_ms") => s.period_ms = num(1).unwrap_or(1000.0) as u32,
            Some("inactive") => s.inactive = range(1),
            Some("zero") => s.zero = range(1),
            Some("short") => s.short = range(1),
            Some("silent") => s.silent = range(1),
            Some("completion") => {
                if let Some(cc) = w.get(1).and_then(|c| u8::from_str_radix(c, 16).ok()) {
                    s.completion = range(2).map(|r| (cc, r));
                }
            }
            Some("delay_ms") => s.delay = Duration::from_millis(num(1).unwrap_or(0.0) as u64),
            _ => {}
        }
    }
    s
}

fn identity_of_path(p: &str) -> Option<(u64, u64)> {
    let c = CString::new(p).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: a valid path and a stat buffer.
    if unsafe { libc::stat(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: stat succeeded and filled it.
    let st = unsafe { st.assume_init() };
    Some((st.st_dev, st.st_ino))
}

thread_local! {
    /// This thread is reading the script: the calls that makes (its `close`) are not the
    /// fake device's, and must not wait for the script they are part of reading.
    static LOADING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn script() -> Option<&'static Script> {
    static S: OnceLock<Option<Script>> = OnceLock::new();
    if let Some(s) = S.get() {
        return s.as_ref();
    }
    if LOADING.try_with(|l| l.replace(true)).unwrap_or(true) {
        return None;
    }
    let s = S.get_or_init(|| {
        let path = std::env::var_os("FAKE_IPMI_SCRIPT")?;
        let text = std::fs::read_to_string(path).ok()?;
        let s = parse_script(&text);
        s.device.is_some().then_some(s)
    });
    let _ = LOADING.try_with(|l| l.set(false));
    s.as_ref()
}

// --- The state of the fake BMC. ---

struct Reply {
    fd: c_int,
    due: Instant,
    msgid: c_long,
    netfn: u8,
    cmd: u8,
    data: Vec<u8>,
}

#[derive(Default)]
struct State {
    first: Option<Instant>,
    requests: u64,
    queue: VecDeque<Reply>,
}

fn state() -> MutexGuard<'static, State> {
    static S: OnceLock<Mutex<State>> = OnceLock::new();
    S.get_or_init(|| Mutex::new(State::default()))
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

fn is_fake(fd: c_int) -> bool {
    let Some(s) = script() else { return false };
    if fd < 0 {
        return false;
    }
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat on any descriptor number is safe; it fails on a closed one.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: fstat succeeded.
    let st = unsafe { st.assume_init() };
    s.device == Some((st.st_dev, st.st_ino))
}

fn set_errno(e: c_int) {
    // SAFETY: the thread's errno location.
    unsafe { *libc::__errno_location() = e };
}

// --- The real functions. ---

fn real<T: Copy>(name: &str, slot: &OnceLock<usize>) -> Option<T> {
    let p = *slot.get_or_init(|| {
        let c = CString::new(name).unwrap_or_default();
        // SAFETY: dlsym with RTLD_NEXT and a valid symbol name.
        unsafe { libc::dlsym(libc::RTLD_NEXT, c.as_ptr()) as usize }
    });
    if p == 0 {
        return None;
    }
    // SAFETY: T is the function pointer type of the symbol looked up.
    Some(unsafe { std::mem::transmute_copy::<usize, T>(&p) })
}

type IoctlFn = unsafe extern "C" fn(c_int, c_ulong, *mut c_void) -> c_int;
type PollFn = unsafe extern "C" fn(*mut libc::pollfd, libc::nfds_t, c_int) -> c_int;
type SelectFn = unsafe extern "C" fn(
    c_int,
    *mut libc::fd_set,
    *mut libc::fd_set,
    *mut libc::fd_set,
    *mut libc::timeval,
) -> c_int;
type CloseFn = unsafe extern "C" fn(c_int) -> c_int;

fn real_ioctl() -> Option<IoctlFn> {
    static S: OnceLock<usize> = OnceLock::new();
    real("ioctl", &S)
}
fn real_poll() -> Option<PollFn> {
    static S: OnceLock<usize> = OnceLock::new();
    real("poll", &S)
}
fn real_select() -> Option<SelectFn> {
    static S: OnceLock<usize> = OnceLock::new();
    real("select", &S)
}
fn real_close() -> Option<CloseFn> {
    static S: OnceLock<usize> = OnceLock::new();
    real("close", &S)
}

// --- The BMC's answers. ---

fn watts_at(s: &Script, t: f64) -> u32 {
    for &(w, until) in &s.watts {
        match until {
            Some(u) if t < u => return w,
            Some(_) => continue,
            None => return w,
        }
    }
    s.watts.last().map_or(0, |w| w.0)
}

fn answer(s: &Script, n: u64, t: f64, netfn: u8, cmd: u8, data: &[u8]) -> Option<Vec<u8>> {
    if s.silent.is_some_and(|r| r.has(n)) {
        return None;
    }
    if let Some((cc, r)) = s.completion
        && r.has(n)
    {
        return Some(vec![cc]);
    }
    match (netfn, cmd) {
        // DCMI Get Power Reading.
        (0x2C, 0x02) => {
            if data.len() < 4 || data[0] != 0xDC {
                return Some(vec![0xCC]);
            }
            let cur = if s.zero.is_some_and(|r| r.has(n)) {
                0
            } else {
                watts_at(s, t)
            };
            let (min, max, avg) = s.stats.unwrap_or((cur, cur, cur));
            let w = |v: u32| (v.min(0xFFFF) as u16).to_le_bytes();
            let mut r = vec![0x00, 0xDC];
            r.extend_from_slice(&w(cur));
            r.extend_from_slice(&w(min));
            r.extend_from_slice(&w(max));
            r.extend_from_slice(&w(avg));
            r.extend_from_slice(&(1_700_000_000u32 + t as u32).to_le_bytes());
            r.extend_from_slice(&s.period_ms.to_le_bytes());
            let active = !s.inactive.is_some_and(|r| r.has(n));
            r.push(if active { 0x40 } else { 0x00 });
            if s.short.is_some_and(|r| r.has(n)) {
                r.truncate(10);
            }
            Some(r)
        }
        // DCMI Get Capabilities: DCMI 1.5, power management supported.
        (0x2C, 0x01) => Some(vec![0x00, 0xDC, 0x01, 0x05, 0x02, 0x00, 0x01, 0x00, 0x00]),
        // Get Device ID: a BMC of IPMI 2.0 with DCMI in its additional support.
        (0x06, 0x01) => Some(vec![
            0x00, 0x20, 0x01, 0x01, 0x00, 0x02, 0xBF, 0x57, 0x01, 0x00, 0x31, 0x00, 0x00, 0x00,
            0x00, 0x00,
        ]),
        _ => Some(vec![0xC1]),
    }
}

/// `IPMICTL_SEND_COMMAND` on the fake device.
///
/// # Safety
/// `arg` is what the caller passed to ioctl: a `struct ipmi_req` when it follows the ABI.
unsafe fn send(fd: c_int, arg: *mut c_void) -> c_int {
    let Some(s) = script() else {
        set_errno(libc::ENOTTY);
        return -1;
    };
    if arg.is_null() {
        set_errno(libc::EFAULT);
        return -1;
    }
    // SAFETY: the ABI says arg points to a struct ipmi_req.
    let req = unsafe { &*(arg as *const KIpmiReq) };
    let addr_size = std::mem::size_of::<KSystemInterfaceAddr>();
    if req.addr.is_null() || (req.addr_len as usize) < addr_size || req.addr_len > 40 {
        set_errno(libc::EINVAL);
        return -1;
    }
    // SAFETY: addr points to at least addr_len >= 8 bytes (checked above).
    let addr = unsafe { std::ptr::read_unaligned(req.addr as *const KSystemInterfaceAddr) };
    if addr.addr_type != SYSTEM_INTERFACE_ADDR_TYPE || addr.channel != BMC_CHANNEL {
        set_errno(libc::EINVAL);
        return -1;
    }
    let len = usize::from(req.msg.data_len);
    if len > IPMI_MAX_MSG_LENGTH {
        set_errno(libc::EMSGSIZE);
        return -1;
    }
    if len > 0 && req.msg.data.is_null() {
        set_errno(libc::EFAULT);
        return -1;
    }
    let data: Vec<u8> = if len == 0 {
        Vec::new()
    } else {
        // SAFETY: data points to data_len bytes (the ABI).
        unsafe { std::slice::from_raw_parts(req.msg.data, len) }.to_vec()
    };
    let now = Instant::now();
    let mut st = state();
    let first = *st.first.get_or_insert(now);
    let t = now.duration_since(first).as_secs_f64();
    let n = st.requests;
    st.requests += 1;
    let reply = answer(s, n, t, req.msg.netfn, req.msg.cmd, &data);
    if let Some(log) = &s.log
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
    {
        let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
        let _ = writeln!(
            f,
            "{t:.3} n={n} netfn={:02x} cmd={:02x} data={hex} addr_type={:02x} channel={:02x} lun={} msgid={} replied={}",
            req.msg.netfn,
            req.msg.cmd,
            addr.addr_type,
            addr.channel,
            addr.lun,
            req.msgid,
            reply.is_some()
        );
    }
    if let Some(data) = reply {
        st.queue.push_back(Reply {
            fd,
            due: now + s.delay,
            msgid: req.msgid,
            netfn: req.msg.netfn | 1,
            cmd: req.msg.cmd,
            data,
        });
    }
    0
}

/// `IPMICTL_RECEIVE_MSG[_TRUNC]` on the fake device.
///
/// # Safety
/// `arg` is what the caller passed to ioctl: a `struct ipmi_recv` when it follows the ABI.
unsafe fn receive(fd: c_int, arg: *mut c_void, truncate: bool) -> c_int {
    if arg.is_null() {
        set_errno(libc::EFAULT);
        return -1;
    }
    // SAFETY: the ABI says arg points to a struct ipmi_recv.
    let recv = unsafe { &mut *(arg as *mut KIpmiRecv) };
    let mut st = state();
    let now = Instant::now();
    let Some(i) = st.queue.iter().position(|r| r.fd == fd && r.due <= now) else {
        set_errno(libc::EAGAIN);
        return -1;
    };
    let addr_size = std::mem::size_of::<KSystemInterfaceAddr>();
    if recv.addr.is_null() || (recv.addr_len as usize) < addr_size {
        set_errno(libc::EINVAL);
        return -1;
    }
    let cap = usize::from(recv.msg.data_len);
    let len = st.queue[i].data.len();
    if len > cap && !truncate {
        set_errno(libc::EMSGSIZE);
        return -1;
    }
    if cap > 0 && recv.msg.data.is_null() {
        set_errno(libc::EFAULT);
        return -1;
    }
    let Some(r) = st.queue.remove(i) else {
        set_errno(libc::EAGAIN);
        return -1;
    };
    let addr = KSystemInterfaceAddr {
        addr_type: SYSTEM_INTERFACE_ADDR_TYPE,
        channel: BMC_CHANNEL,
        lun: 0,
    };
    // SAFETY: addr has room for addr_len >= 8 bytes; data for cap bytes.
    unsafe {
        std::ptr::write_unaligned(recv.addr as *mut KSystemInterfaceAddr, addr);
        let n = len.min(cap);
        if n > 0 {
            std::ptr::copy_nonoverlapping(r.data.as_ptr(), recv.msg.data, n);
        }
        recv.msg.data_len = n as c_ushort;
    }
    recv.addr_len = addr_size as c_uint;
    recv.recv_type = 1;
    recv.msgid = r.msgid;
    recv.msg.netfn = r.netfn;
    recv.msg.cmd = r.cmd;
    0
}

/// When the next reply for `fd` is due: `Some(None)`: one is due now.
fn due(fd: c_int) -> Option<Option<Duration>> {
    let st = state();
    let now = Instant::now();
    st.queue
        .iter()
        .filter(|r| r.fd == fd)
        .map(|r| r.due.saturating_duration_since(now))
        .min()
        .map(|d| if d.is_zero() { None } else { Some(d) })
}

// --- The wrapped functions. ---

/// # Safety
/// As the C library's `ioctl`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ioctl(fd: c_int, request: c_ulong, arg: *mut c_void) -> c_int {
    if !is_fake(fd) {
        return match real_ioctl() {
            // SAFETY: the caller's arguments, passed on.
            Some(f) => unsafe { f(fd, request, arg) },
            None => {
                set_errno(libc::ENOSYS);
                -1
            }
        };
    }
    // c_ulong is 32 bits on 32-bit targets.
    #[allow(clippy::unnecessary_cast)]
    let request = request as u64;
    match request {
        // SAFETY: the ABI of each request.
        SEND_COMMAND | SEND_COMMAND_SETTIME => unsafe { send(fd, arg) },
        RECEIVE_MSG_TRUNC => unsafe { receive(fd, arg, true) },
        RECEIVE_MSG => unsafe { receive(fd, arg, false) },
        SET_GETS_EVENTS | SET_MY_ADDRESS | SET_MY_LUN => 0,
        GET_MY_ADDRESS | GET_MY_LUN => {
            if arg.is_null() {
                set_errno(libc::EFAULT);
                return -1;
            }
            let v: c_uint = if request == GET_MY_ADDRESS { 0x20 } else { 2 };
            // SAFETY: the ABI: a pointer to an unsigned int.
            unsafe { *(arg as *mut c_uint) = v };
            0
        }
        _ => {
            set_errno(libc::ENOTTY);
            -1
        }
    }
}

/// # Safety
/// As the C library's `poll`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn poll(fds: *mut libc::pollfd, nfds: libc::nfds_t, timeout: c_int) -> c_int {
    let Some(real) = real_poll() else {
        set_errno(libc::ENOSYS);
        return -1;
    };
    if fds.is_null() || nfds == 0 {
        // SAFETY: passed on.
        return unsafe { real(fds, nfds, timeout) };
    }
    // SAFETY: the caller gives nfds pollfds.
    let set = unsafe { std::slice::from_raw_parts_mut(fds, nfds as usize) };
    let fake: Vec<bool> = set.iter().map(|p| is_fake(p.fd)).collect();
    if !fake.iter().any(|f| *f) {
        // SAFETY: passed on.
        return unsafe { real(fds, nfds, timeout) };
    }
    let deadline = (timeout >= 0).then(|| Instant::now() + Duration::from_millis(timeout as u64));
    let saved: Vec<c_int> = set.iter().map(|p| p.fd).collect();
    loop {
        let mut next: Option<Duration> = None;
        let mut ready = 0;
        for (p, f) in set.iter_mut().zip(&fake) {
            if !*f {
                continue;
            }
            p.revents = 0;
            match due(p.fd) {
                Some(None) => {
                    p.revents = libc::POLLIN & p.events;
                    if p.revents != 0 {
                        ready += 1;
                    }
                }
                Some(Some(d)) => next = Some(next.map_or(d, |n| n.min(d))),
                None => {}
            }
        }
        // The real descriptors, with the fake ones hidden (-1 is ignored by poll).
        for (p, f) in set.iter_mut().zip(&fake) {
            if *f {
                p.fd = -1;
            }
        }
        let slice = if ready > 0 {
            0
        } else {
            let mut s = Duration::from_millis(10);
            if let Some(n) = next {
                s = s.min(n);
            }
            if let Some(d) = deadline {
                s = s.min(d.saturating_duration_since(Instant::now()));
            }
            s.as_millis() as c_int
        };
        let fake_revents: Vec<libc::c_short> = set.iter().map(|p| p.revents).collect();
        // SAFETY: the caller's pollfds, the fake ones disabled.
        let r = unsafe { real(fds, nfds, slice) };
        for ((p, f), (fd, rev)) in set
            .iter_mut()
            .zip(&fake)
            .zip(saved.iter().zip(&fake_revents))
        {
            p.fd = *fd;
            if *f {
                p.revents = *rev;
            }
        }
        if r < 0 {
            return r;
        }
        let total = r + ready;
        if total > 0 || deadline.is_some_and(|d| Instant::now() >= d) {
            return total;
        }
    }
}

/// # Safety
/// As the C library's `select`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn select(
    nfds: c_int,
    readfds: *mut libc::fd_set,
    writefds: *mut libc::fd_set,
    exceptfds: *mut libc::fd_set,
    timeout: *mut libc::timeval,
) -> c_int {
    let Some(real) = real_select() else {
        set_errno(libc::ENOSYS);
        return -1;
    };
    let mut fakes: Vec<c_int> = Vec::new();
    if !readfds.is_null() {
        for fd in 0..nfds.clamp(0, libc::FD_SETSIZE as c_int) {
            // SAFETY: readfds is a valid fd_set.
            if unsafe { libc::FD_ISSET(fd, readfds) } && is_fake(fd) {
                fakes.push(fd);
            }
        }
    }
    if fakes.is_empty() {
        // SAFETY: passed on.
        return unsafe { real(nfds, readfds, writefds, exceptfds, timeout) };
    }
    let deadline = if timeout.is_null() {
        None
    } else {
        // SAFETY: a valid timeval.
        let tv = unsafe { *timeout };
        Some(
            Instant::now()
                + Duration::from_secs(tv.tv_sec.max(0) as u64)
                + Duration::from_micros(tv.tv_usec.max(0) as u64),
        )
    };
    let copy = |p: *mut libc::fd_set| -> Option<libc::fd_set> {
        // SAFETY: a valid fd_set when not null.
        (!p.is_null()).then(|| unsafe { *p })
    };
    let (r0, w0, e0) = (copy(readfds), copy(writefds), copy(exceptfds));
    loop {
        let mut ready_fakes = Vec::new();
        let mut next: Option<Duration> = None;
        for &fd in &fakes {
            match due(fd) {
                Some(None) => ready_fakes.push(fd),
                Some(Some(d)) => next = Some(next.map_or(d, |n| n.min(d))),
                None => {}
            }
        }
        let restore = |p: *mut libc::fd_set, v: &Option<libc::fd_set>| {
            if let Some(v) = v {
                // SAFETY: p is the caller's non-null fd_set.
                unsafe { *p = *v };
            }
        };
        restore(readfds, &r0);
        restore(writefds, &w0);
        restore(exceptfds, &e0);
        for &fd in &fakes {
            // SAFETY: readfds is non-null here.
            unsafe { libc::FD_CLR(fd, readfds) };
        }
        let slice = if ready_fakes.is_empty() {
            let mut s = Duration::from_millis(10);
            if let Some(n) = next {
                s = s.min(n);
            }
            if let Some(d) = deadline {
                s = s.min(d.saturating_duration_since(Instant::now()));
            }
            s
        } else {
            Duration::ZERO
        };
        let mut tv = libc::timeval {
            tv_sec: slice.as_secs() as libc::time_t,
            tv_usec: slice.subsec_micros() as libc::suseconds_t,
        };
        // SAFETY: the caller's sets, the fake descriptors cleared.
        let r = unsafe { real(nfds, readfds, writefds, exceptfds, &mut tv) };
        if r < 0 {
            return r;
        }
        for &fd in &ready_fakes {
            // SAFETY: readfds is non-null here.
            unsafe { libc::FD_SET(fd, readfds) };
        }
        let total = r + ready_fakes.len() as c_int;
        if total > 0 || deadline.is_some_and(|d| Instant::now() >= d) {
            return total;
        }
    }
}

/// # Safety
/// As the C library's `close`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    if is_fake(fd) {
        state().queue.retain(|r| r.fd != fd);
    }
    match real_close() {
        // SAFETY: passed on.
        Some(f) => unsafe { f(fd) },
        None => {
            set_errno(libc::ENOSYS);
            -1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ioctl_numbers_are_the_kernels() {
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        {
            assert_eq!(SEND_COMMAND, 0x8028_690d);
            assert_eq!(RECEIVE_MSG_TRUNC, 0xc030_690b);
            assert_eq!(RECEIVE_MSG, 0xc030_690c);
            assert_eq!(GET_MY_ADDRESS, 0x8004_6912);
        }
    }

    #[test]
    fn scripts_parse_and_answer() {
        let s = parse_script(
            "watts 200 until 1.5\nwatts 350\nsilent from 5 to 6\ncompletion d5 from 9\ninactive from 7 to 7\nzero from 8 to 8\n",
        );
        assert_eq!(watts_at(&s, 0.0), 200);
        assert_eq!(watts_at(&s, 2.0), 350);
        let r = answer(&s, 0, 0.0, 0x2C, 0x02, &[0xDC, 1, 0, 0]).unwrap();
        assert_eq!((r.len(), r[0], r[1], r[2], r[18]), (19, 0, 0xDC, 200, 0x40));
        assert!(answer(&s, 4, 0.0, 0x2C, 0x02, &[0xDC, 1, 0, 0]).is_some());
        assert!(answer(&s, 5, 0.0, 0x2C, 0x02, &[0xDC, 1, 0, 0]).is_none());
        assert!(answer(&s, 6, 0.0, 0x2C, 0x02, &[0xDC, 1, 0, 0]).is_none());
        assert_eq!(
            answer(&s, 7, 0.0, 0x2C, 0x02, &[0xDC, 1, 0, 0]).unwrap()[18],
            0
        );
        let r = answer(&s, 8, 0.0, 0x2C, 0x02, &[0xDC, 1, 0, 0]).unwrap();
        assert_eq!((r[2], r[3], r[18]), (0, 0, 0x40));
        assert_eq!(
            answer(&s, 9, 0.0, 0x2C, 0x02, &[0xDC, 1, 0, 0]).unwrap(),
            [0xD5]
        );
    }
}
