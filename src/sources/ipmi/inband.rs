//! The BMC through the Linux IPMI driver (`ipmi_devintf`): `/dev/ipmi0` and the OpenIPMI
//! ioctls, by hand, without a subprocess or a library.
//!
//! The driver (`include/uapi/linux/ipmi.h`, `drivers/char/ipmi/ipmi_devintf.c`):
//! `IPMICTL_SEND_COMMAND` takes a `struct ipmi_req` (the address of the BMC's system
//! interface, a message id, the message); the reply is queued for this open file, which
//! then polls readable, and `IPMICTL_RECEIVE_MSG_TRUNC` takes it into a `struct ipmi_recv`
//! (a reply too large for the buffer is truncated rather than left queued). Replies carry
//! the message id of their request; asynchronous events can arrive on the same file
//! (`recv_type` other than a response) and are skipped. The kernel times a request out
//! itself (it then answers completion code 0xC3), but only after seconds, so joulerun
//! polls with a deadline of its own and discards replies to requests it has given up on
//! (their message ids are older).
//!
//! The structures below mirror the kernel's field for field (`#[repr(C)]`); the unit tests
//! check their sizes and offsets against the kernel's on x86_64 and aarch64, and the ioctl
//! numbers against `_IOR('i', 13, struct ipmi_req)` (0x8028690d) and
//! `_IOWR('i', 11, struct ipmi_recv)` (0xc030690b).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libc::{c_int, c_long, c_short, c_uchar, c_uint, c_ushort};

/// `IPMI_SYSTEM_INTERFACE_ADDR_TYPE`: talk to the BMC itself.
pub const SYSTEM_INTERFACE_ADDR_TYPE: c_int = 0x0c;
/// `IPMI_BMC_CHANNEL`.
pub const BMC_CHANNEL: c_short = 0x0f;
/// `IPMI_RESPONSE_RECV_TYPE`: a response to a command we sent.
pub const RESPONSE_RECV_TYPE: c_int = 1;
/// `IPMI_MAX_ADDR_SIZE`: the data part of `struct ipmi_addr`.
pub const MAX_ADDR_SIZE: usize = 32;

/// `struct ipmi_system_interface_addr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemInterfaceAddr {
    pub addr_type: c_int,
    pub channel: c_short,
    pub lun: c_uchar,
}

/// `struct ipmi_addr`: large enough for any address the driver writes back.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AnyAddr {
    pub addr_type: c_int,
    pub channel: c_short,
    pub data: [u8; MAX_ADDR_SIZE],
}

/// `struct ipmi_msg`.
#[repr(C)]
#[derive(Debug)]
pub struct IpmiMsg {
    pub netfn: c_uchar,
    pub cmd: c_uchar,
    pub data_len: c_ushort,
    pub data: *mut c_uchar,
}

/// `struct ipmi_req`.
#[repr(C)]
#[derive(Debug)]
pub struct IpmiReq {
    pub addr: *mut c_uchar,
    pub addr_len: c_uint,
    pub msgid: c_long,
    pub msg: IpmiMsg,
}

/// `struct ipmi_recv`.
#[repr(C)]
#[derive(Debug)]
pub struct IpmiRecv {
    pub recv_type: c_int,
    pub addr: *mut c_uchar,
    pub addr_len: c_uint,
    pub msgid: c_long,
    pub msg: IpmiMsg,
}

const IPMI_IOC_MAGIC: u8 = b'i';

/// `IPMICTL_SEND_COMMAND = _IOR('i', 13, struct ipmi_req)`.
pub const IPMICTL_SEND_COMMAND: u64 =
    nix::request_code_read!(IPMI_IOC_MAGIC, 13, std::mem::size_of::<IpmiReq>()) as u64;
/// `IPMICTL_RECEIVE_MSG_TRUNC = _IOWR('i', 11, struct ipmi_recv)`.
pub const IPMICTL_RECEIVE_MSG_TRUNC: u64 =
    nix::request_code_readwrite!(IPMI_IOC_MAGIC, 11, std::mem::size_of::<IpmiRecv>()) as u64;

/// The largest reply body taken (the kernel's `IPMI_MAX_MSG_LENGTH` is 272); longer ones
/// are truncated by `IPMICTL_RECEIVE_MSG_TRUNC`.
pub const MAX_REPLY: usize = 300;

/// The largest request body sent (DCMI requests have a few bytes).
pub const MAX_REQUEST: usize = 64;

/// Why a request got no usable reply.
#[derive(Debug)]
pub enum RequestError {
    /// The send ioctl failed (ENOTTY: not an IPMI device; EINVAL, EMSGSIZE, ENOMEM...).
    Send(io::Error),
    /// Polling or the receive ioctl failed.
    Receive(io::Error),
    /// No reply before the deadline.
    Timeout(Duration),
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::Send(e) => write!(f, "IPMICTL_SEND_COMMAND failed: {e}"),
            RequestError::Receive(e) => write!(f, "IPMICTL_RECEIVE_MSG_TRUNC failed: {e}"),
            RequestError::Timeout(d) => write!(f, "no reply within {} ms", d.as_millis()),
        }
    }
}

/// An open IPMI device.
#[derive(Debug)]
pub struct Device {
    fd: OwnedFd,
    path: PathBuf,
    next_msgid: c_long,
}

fn ioctl(fd: c_int, request: u64, arg: *mut libc::c_void) -> io::Result<()> {
    loop {
        // SAFETY: `arg` points to a live structure of the layout `request` names; the
        // buffers it points to outlive the call (the callers keep them on their stack).
        let r = unsafe { libc::ioctl(fd, request as _, arg) };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

impl Device {
    /// Open `path` for requests. A character device is expected; `allow_regular` lets a
    /// regular file stand in (fake hardware trees, where a test double answers its
    /// ioctls). Anything else (a FIFO, a directory) is refused without blocking.
    pub fn open(path: &Path, allow_regular: bool) -> io::Result<Device> {
        let ok = |t: &std::fs::FileType| t.is_char_device() || (allow_regular && t.is_file());
        let meta = std::fs::metadata(path)?;
        if !ok(&meta.file_type()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is {}, not a character device",
                    path.display(),
                    crate::fsx::describe_type(&meta.file_type())
                ),
            ));
        }
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the path"))?;
        // SAFETY: a valid NUL-terminated path and integer flags.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just gave us this fd and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let file = std::fs::File::from(fd);
        let meta = file.metadata()?;
        if !ok(&meta.file_type()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} changed while it was opened", path.display()),
            ));
        }
        Ok(Device {
            fd: OwnedFd::from(file),
            path: path.to_path_buf(),
            next_msgid: 1,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Send `netfn`/`cmd` with `data` to the BMC and wait at most `timeout` for its reply,
    /// which is put in `reply` (completion code first). Replies to earlier requests that
    /// arrive late, and asynchronous events, are skipped. Nothing is allocated.
    pub fn request(
        &mut self,
        netfn: u8,
        cmd: u8,
        data: &[u8],
        timeout: Duration,
        reply: &mut Vec<u8>,
    ) -> Result<(), RequestError> {
        let deadline = Instant::now() + timeout;
        let msgid = self.next_msgid;
        self.next_msgid = self.next_msgid.wrapping_add(1).max(1);
        let mut addr = SystemInterfaceAddr {
            addr_type: SYSTEM_INTERFACE_ADDR_TYPE,
            channel: BMC_CHANNEL,
            lun: 0,
        };
        let mut body = [0u8; MAX_REQUEST];
        let len = data.len().min(MAX_REQUEST);
        body[..len].copy_from_slice(&data[..len]);
        let mut req = IpmiReq {
            addr: (&mut addr as *mut SystemInterfaceAddr).cast(),
            addr_len: std::mem::size_of::<SystemInterfaceAddr>() as c_uint,
            msgid,
            msg: IpmiMsg {
                netfn,
                cmd,
                data_len: len as c_ushort,
                data: body.as_mut_ptr(),
            },
        };
        let fd = self.fd.as_raw_fd();
        ioctl(fd, IPMICTL_SEND_COMMAND, (&mut req as *mut IpmiReq).cast())
            .map_err(RequestError::Send)?;
        let mut buf = [0u8; MAX_REPLY];
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(RequestError::Timeout(timeout));
            }
            let ms = (deadline - now).as_millis().clamp(1, i32::MAX as u128) as c_int;
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd on our stack.
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(RequestError::Receive(e));
            }
            if n == 0 {
                continue; // the deadline is checked at the top
            }
            if pfd.revents & (libc::POLLERR | libc::POLLNVAL) != 0
                && pfd.revents & libc::POLLIN == 0
            {
                return Err(RequestError::Receive(io::Error::other(format!(
                    "poll reported an error on {} (revents 0x{:x})",
                    self.path.display(),
                    pfd.revents
                ))));
            }
            let mut from = AnyAddr {
                addr_type: 0,
                channel: 0,
                data: [0; MAX_ADDR_SIZE],
            };
            let mut recv = IpmiRecv {
                recv_type: 0,
                addr: (&mut from as *mut AnyAddr).cast(),
                addr_len: std::mem::size_of::<AnyAddr>() as c_uint,
                msgid: 0,
                msg: IpmiMsg {
                    netfn: 0,
                    cmd: 0,
                    data_len: buf.len() as c_ushort,
                    data: buf.as_mut_ptr(),
                },
            };
            match ioctl(
                fd,
                IPMICTL_RECEIVE_MSG_TRUNC,
                (&mut recv as *mut IpmiRecv).cast(),
            ) {
                Ok(()) => {}
                // Readable, then taken by nobody else: a spurious wake-up.
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue,
                Err(e) => return Err(RequestError::Receive(e)),
            }
            let is_ours = recv.recv_type == RESPONSE_RECV_TYPE
                && recv.msgid == msgid
                && recv.msg.netfn == (netfn | 1)
                && recv.msg.cmd == cmd;
            if !is_ours {
                continue; // an event, or a reply to a request given up on
            }
            let n = usize::from(recv.msg.data_len).min(buf.len());
            reply.clear();
            reply.extend_from_slice(&buf[..n]);
            return Ok(());
        }
    }
}

/// The in-band [`Link`](super::Link): DCMI Get Power Reading over an open device, each
/// read at most [`super::ATTEMPTS`] requests of [`super::ATTEMPT_TIMEOUT`].
pub struct InbandLink {
    dev: Device,
    reply: Vec<u8>,
    /// The device's path, for messages.
    path: PathBuf,
}

impl InbandLink {
    pub fn new(dev: Device) -> InbandLink {
        InbandLink {
            path: dev.path().to_path_buf(),
            dev,
            reply: Vec::with_capacity(MAX_REPLY),
        }
    }
}

impl super::Link for InbandLink {
    fn read(&mut self) -> Result<super::dcmi::PowerReading, super::LinkError> {
        use super::dcmi::{self, CcClass, DcmiError};
        use super::{LinkClass, LinkError};
        // Messages name the device; nothing is formatted unless something failed.
        let InbandLink { dev, reply, path } = self;
        let path = path.display();
        let request = dcmi::power_reading_request();
        let mut last = None;
        for _ in 0..super::ATTEMPTS {
            match dev.request(
                dcmi::NETFN_DCGRP,
                dcmi::CMD_GET_POWER_READING,
                &request,
                super::ATTEMPT_TIMEOUT,
                reply,
            ) {
                Ok(()) => match dcmi::decode_power_reading(reply) {
                    Ok(r) => return Ok(r),
                    Err(e @ DcmiError::Completion(cc)) => {
                        let class = match dcmi::classify_completion(cc) {
                            CcClass::Transient => {
                                last = Some(LinkError::new(
                                    LinkClass::Other,
                                    format!("{path}: DCMI Get Power Reading: {e}"),
                                ));
                                continue;
                            }
                            CcClass::Unsupported => LinkClass::Unsupported,
                            CcClass::Privilege => LinkClass::Permission,
                            CcClass::Other => LinkClass::Other,
                        };
                        return Err(LinkError::new(
                            class,
                            format!("{path}: DCMI Get Power Reading: {e}"),
                        ));
                    }
                    Err(e) => {
                        return Err(LinkError::new(
                            LinkClass::Other,
                            format!("{path}: DCMI Get Power Reading: {e}"),
                        ));
                    }
                },
                Err(RequestError::Timeout(_)) => {
                    last = Some(LinkError::new(
                        LinkClass::Unanswered,
                        format!(
                            "the BMC did not answer DCMI Get Power Reading through {path} ({} requests, {} ms each)",
                            super::ATTEMPTS,
                            super::ATTEMPT_TIMEOUT.as_millis()
                        ),
                    ));
                }
                Err(RequestError::Send(e)) if e.raw_os_error() == Some(libc::ENOTTY) => {
                    return Err(LinkError::new(
                        LinkClass::Other,
                        format!("{path} does not take IPMI ioctls ({e}): not an IPMI device"),
                    ));
                }
                Err(e) => {
                    return Err(LinkError::new(LinkClass::Other, format!("{path}: {e}")));
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            LinkError::new(
                LinkClass::Unanswered,
                format!("{path}: no request was sent"),
            )
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// Sizes and offsets of the kernel's structures on LP64 Linux (x86_64, aarch64):
    /// `struct ipmi_system_interface_addr` {int addr_type @0; short channel @4;
    /// unsigned char lun @6} = 8; `struct ipmi_msg` {netfn @0, cmd @1, data_len @2,
    /// data @8} = 16; `struct ipmi_req` {addr @0, addr_len @8, msgid @16, msg @24} = 40;
    /// `struct ipmi_recv` {recv_type @0, addr @8, addr_len @16, msgid @24, msg @32} = 48;
    /// `struct ipmi_addr` = 40.
    #[cfg(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    #[test]
    fn the_structures_match_the_kernels_layout() {
        assert_eq!(size_of::<SystemInterfaceAddr>(), 8);
        assert_eq!(offset_of!(SystemInterfaceAddr, addr_type), 0);
        assert_eq!(offset_of!(SystemInterfaceAddr, channel), 4);
        assert_eq!(offset_of!(SystemInterfaceAddr, lun), 6);
        assert_eq!(size_of::<AnyAddr>(), 40);
        assert_eq!(size_of::<IpmiMsg>(), 16);
        assert_eq!(offset_of!(IpmiMsg, netfn), 0);
        assert_eq!(offset_of!(IpmiMsg, cmd), 1);
        assert_eq!(offset_of!(IpmiMsg, data_len), 2);
        assert_eq!(offset_of!(IpmiMsg, data), 8);
        assert_eq!(size_of::<IpmiReq>(), 40);
        assert_eq!(offset_of!(IpmiReq, addr), 0);
        assert_eq!(offset_of!(IpmiReq, addr_len), 8);
        assert_eq!(offset_of!(IpmiReq, msgid), 16);
        assert_eq!(offset_of!(IpmiReq, msg), 24);
        assert_eq!(size_of::<IpmiRecv>(), 48);
        assert_eq!(offset_of!(IpmiRecv, recv_type), 0);
        assert_eq!(offset_of!(IpmiRecv, addr), 8);
        assert_eq!(offset_of!(IpmiRecv, addr_len), 16);
        assert_eq!(offset_of!(IpmiRecv, msgid), 24);
        assert_eq!(offset_of!(IpmiRecv, msg), 32);
        // The numbers the kernel's headers give (ipmitool and the field notes agree).
        assert_eq!(IPMICTL_SEND_COMMAND, 0x8028_690d);
        assert_eq!(IPMICTL_RECEIVE_MSG_TRUNC, 0xc030_690b);
    }

    #[test]
    fn opening_refuses_what_is_not_a_device_without_blocking() {
        let t = tempfile::tempdir().unwrap();
        let fifo = t.path().join("ipmi0");
        let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = Device::open(&fifo, true).unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
        let plain = t.path().join("plain");
        std::fs::write(&plain, b"").unwrap();
        assert!(Device::open(&plain, false).is_err());
        // A regular file stands in only when allowed, and is then not an IPMI device.
        let mut d = Device::open(&plain, true).unwrap();
        let mut reply = Vec::new();
        match d.request(
            0x2C,
            0x02,
            &[0xDC, 1, 0, 0],
            Duration::from_millis(50),
            &mut reply,
        ) {
            Err(RequestError::Send(e)) => assert_eq!(e.raw_os_error(), Some(libc::ENOTTY)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            Device::open(&t.path().join("none"), true)
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
    }
}
