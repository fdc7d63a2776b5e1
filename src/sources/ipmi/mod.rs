//! The chassis through its BMC: IPMI DCMI "Get Power Reading", the machine's input power
//! at the wall as the BMC measures it (fans, disks, NICs, memory, power-supply losses
//! included), beside RAPL and NVML in the same run.
//!
//! Three paths to a BMC, in the order `--chassis auto` tries them (then hwmon):
//!
//! * **dcmi** ([`SourceKind::Dcmi`], `inband.rs`): `/dev/ipmi0` (or `/dev/ipmi/0`,
//!   `/dev/ipmidev/0`) under the hardware root, through the OpenIPMI ioctls, by hand: no
//!   subprocess, no library.
//! * **bmc** ([`SourceKind::IpmiLan`], `lan.rs`): a BMC over the network (`--bmc HOST`),
//!   IPMI 2.0 lanplus, through `ipmitool -I lanplus -E` with the password in the child's
//!   environment (never on its command line).
//! * **tools** ([`SourceKind::IpmiTool`], `tools.rs`): when no device node exists, an
//!   installed `ipmitool` or freeipmi's `ipmi-dcmi` that works (freeipmi can reach a BMC
//!   without the kernel driver), their output parsed.
//!
//! Each path yields the same [`dcmi::PowerReading`]; [`BmcSource`] turns it into the
//! `chassis` domain's power. Cadence: BMCs refresh their reading every second or slower,
//! so the source is read on a reader thread of its own every [`POLL_PERIOD`]. Every
//! exchange is bounded ([`ATTEMPTS`] requests of at most [`ATTEMPT_TIMEOUT`] in-band,
//! [`tools::TOOL_TIMEOUT`] for a tool): a BMC that stops answering costs failed reads,
//! never a stalled run; after [`BACKOFF_AFTER`] unanswered reads in a row it is asked only
//! every [`BACKOFF_EVERY`] reads, so it is not flooded while it restarts, and readings
//! resume when it answers again.

pub mod dcmi;
pub mod inband;
pub mod lan;
pub mod tools;

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{
    Cadence, Device, Domain, DomainKind, OpenContext, Place, ReadError, Reading, Source,
    SourceKind, Unavailable, UnavailableKind,
};
use dcmi::{NotAPower, PowerReading};

/// How often the chassis is read: BMCs update their power reading every second or slower
/// (the DCMI statistics are kept by the BMC; the current value follows the power
/// supplies' own sampling), so reading faster would only repeat values and load the BMC.
pub const POLL_PERIOD: Duration = Duration::from_secs(1);

/// The longest one in-band request waits for its reply. A BMC answers DCMI in tens of
/// milliseconds; the kernel's own timeout is seconds long.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(750);

/// Requests per read in-band: a timeout or a transient completion code (busy, timeout,
/// initialising) is retried once. One read thus takes at most 1.5 s, inside the 2 s the end
/// of a run waits for a reader's last sample.
pub const ATTEMPTS: u32 = 2;

/// Unanswered reads in a row after which the BMC is asked less often...
pub const BACKOFF_AFTER: u32 = 3;
/// ...only every this many reads (about every 10 s); the others fail at once.
pub const BACKOFF_EVERY: u32 = 10;

/// The device nodes of the IPMI driver, in the order ipmitool and freeipmi try them.
pub const DEVICE_PATHS: [&str; 3] = ["/dev/ipmi0", "/dev/ipmi/0", "/dev/ipmidev/0"];

/// The fix when the driver's device node is missing.
pub const MODPROBE_FIX: &str = "on a machine with a BMC, load the IPMI driver: `sudo modprobe ipmi_si ipmi_devintf` (`dmesg | grep -i ipmi` says whether a BMC was found)";

/// A password: never printed (its `Debug` hides it), only handed to a child's environment.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The password itself, for the one place that passes it on.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A remote BMC (`--bmc HOST`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BmcTarget {
    pub host: String,
    /// `--bmc-user`; `None`: ipmitool's default (the null user).
    pub user: Option<String>,
    pub password: Secret,
}

/// What the IPMI paths need beyond the hardware root, resolved by `plan.rs`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpmiOptions {
    /// `--bmc HOST` and its credentials.
    pub bmc: Option<BmcTarget>,
    /// Where `ipmitool` and `ipmi-dcmi` are looked up (`PATH`); `None`: the process's.
    pub search_path: Option<OsString>,
}

/// What kind of failure an exchange with the BMC was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkClass {
    /// The BMC (or the tool) did not answer in time.
    Unanswered,
    /// The BMC has no DCMI power reading (invalid command, not supported...).
    Unsupported,
    /// Not allowed: the device node's permissions, the BMC's privilege, a wrong password.
    Permission,
    /// No IPMI device or driver (a tool found none).
    NoDevice,
    /// Anything else (a transient completion code after retries, a reply or output that
    /// makes no sense, a device that does not take IPMI ioctls).
    Other,
}

/// A failed exchange: what happened, in words naming the path or tool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkError {
    pub message: String,
    pub class: LinkClass,
}

impl LinkError {
    pub fn new(class: LinkClass, message: impl Into<String>) -> LinkError {
        LinkError {
            message: message.into(),
            class,
        }
    }
}

/// One way of getting a power reading from a BMC.
pub trait Link: Send {
    /// Ask the BMC once (with this path's bounded retries).
    fn read(&mut self) -> Result<PowerReading, LinkError>;
}

/// The chassis as a BMC measures it: one domain, `chassis`, the whole machine.
pub struct BmcSource {
    kind: SourceKind,
    domains: Vec<Domain>,
    link: Box<dyn Link>,
    /// Unanswered reads in a row.
    unanswered: u32,
    /// Reads answered at once (failed) since the BMC was last asked, while backing off.
    skipped: u32,
    warnings: Vec<String>,
}

/// The chassis domain of a BMC path.
pub fn chassis_domain(kind: SourceKind) -> Domain {
    Domain::on_device("chassis", DomainKind::Chassis, Device::Chassis, kind)
        .placed(Place::Whole)
        .with_max_power(dcmi::MAX_PLAUSIBLE_W)
}

impl BmcSource {
    /// A source over `link`, after its first reading was checked ([`probe`]).
    pub fn new(kind: SourceKind, link: Box<dyn Link>) -> BmcSource {
        BmcSource {
            kind,
            domains: vec![chassis_domain(kind)],
            link,
            unanswered: 0,
            skipped: 0,
            warnings: Vec::new(),
        }
    }

    /// The same source with caveats for the report.
    pub fn with_warnings(mut self, w: Vec<String>) -> BmcSource {
        self.warnings = w;
        self
    }

    fn read_one(&mut self) -> Result<Reading, ReadError> {
        if self.unanswered >= BACKOFF_AFTER && self.skipped + 1 < BACKOFF_EVERY {
            self.skipped += 1;
            return Err(ReadError::new(format!(
                "the BMC did not answer the last {} reads: asked again every {} reads",
                self.unanswered, BACKOFF_EVERY
            )));
        }
        self.skipped = 0;
        match self.link.read() {
            Ok(r) => {
                self.unanswered = 0;
                r.watts()
                    .map(|watts| Reading::Power { watts })
                    .map_err(|e| ReadError::new(e.to_string()))
            }
            Err(e) => {
                if e.class == LinkClass::Unanswered {
                    self.unanswered = self.unanswered.saturating_add(1);
                } else {
                    self.unanswered = 0;
                }
                Err(ReadError::new(e.message))
            }
        }
    }
}

impl Source for BmcSource {
    fn kind(&self) -> SourceKind {
        self.kind
    }

    fn domains(&self) -> &[Domain] {
        &self.domains
    }

    fn read(&mut self, out: &mut Vec<Result<Reading, ReadError>>) {
        out.clear();
        let r = self.read_one();
        out.push(r);
    }

    fn cadence(&self) -> Cadence {
        Cadence::Every(POLL_PERIOD)
    }

    fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// Ask once when opening, so that an interface that cannot measure is refused with its
/// reason (no DCMI, no privilege, measurement inactive, no answer) and `auto` goes on.
/// `permission_fix` is the fix for a permission problem.
pub fn probe(
    kind: SourceKind,
    link: &mut dyn Link,
    permission_fix: &str,
) -> Result<PowerReading, Unavailable> {
    let r = link.read().map_err(|e| {
        let (k, fix) = match e.class {
            LinkClass::Unsupported => (
                UnavailableKind::NotPresent,
                Some(
                    "this BMC gives no DCMI power reading; an ACPI power meter or the power supplies may be readable through hwmon (`--chassis hwmon`)"
                        .to_string(),
                ),
            ),
            LinkClass::Permission => (UnavailableKind::Permission, Some(permission_fix.to_string())),
            LinkClass::NoDevice => (UnavailableKind::ModuleMissing, Some(MODPROBE_FIX.to_string())),
            LinkClass::Unanswered | LinkClass::Other => (UnavailableKind::Invalid, None),
        };
        Unavailable::new(kind, k, e.message, fix)
    })?;
    match r.watts() {
        Ok(_) => Ok(r),
        Err(NotAPower::Inactive) => Err(Unavailable::new(
            kind,
            UnavailableKind::Inactive,
            NotAPower::Inactive.to_string(),
            Some("power monitoring is off or unsupported in the BMC: check its settings (web interface, vendor tool) and that the power supplies report power".to_string()),
        )),
        Err(e) => Err(Unavailable::new(kind, UnavailableKind::Invalid, e.to_string(), None)),
    }
}

/// The first of [`DEVICE_PATHS`] that exists under the root.
pub fn device_path(root: &crate::sysroot::SysRoot) -> Option<PathBuf> {
    DEVICE_PATHS
        .iter()
        .map(|p| root.path(p))
        .find(|p| std::fs::symlink_metadata(p).is_ok())
}

/// In-band: the device node, then one reading to check the BMC measures.
pub fn open_dcmi(ctx: &OpenContext) -> Result<BmcSource, Unavailable> {
    let kind = SourceKind::Dcmi;
    let Some(path) = device_path(&ctx.root) else {
        return Err(no_device(ctx));
    };
    let dev = inband::Device::open(&path, !ctx.root.is_default()).map_err(|e| {
        match e.raw_os_error() {
            Some(libc::EACCES) | Some(libc::EPERM) => Unavailable::new(
                kind,
                UnavailableKind::Permission,
                format!("cannot open {}: permission denied", path.display()),
                Some(permission_fix(&path)),
            ),
            Some(libc::ENOENT) | Some(libc::ENXIO) | Some(libc::ENODEV) => Unavailable::new(
                kind,
                UnavailableKind::NotPresent,
                format!("cannot open {}: {e} (no BMC behind it)", path.display()),
                Some(MODPROBE_FIX.to_string()),
            ),
            _ => Unavailable::new(
                kind,
                UnavailableKind::Invalid,
                format!("cannot open {}: {e}", path.display()),
                None,
            ),
        }
    })?;
    let mut link = inband::InbandLink::new(dev);
    probe(kind, &mut link, &permission_fix(&path))?;
    Ok(BmcSource::new(kind, Box::new(link)))
}

fn permission_fix(path: &Path) -> String {
    format!(
        "run as root, or give a group access to the device: `sudo chgrp GROUP {p} && sudo chmod g+rw {p}` (a udev rule, KERNEL==\"ipmi*\", GROUP=\"GROUP\", MODE=\"0660\", keeps it after a reboot)",
        p = path.display()
    )
}

/// Why there is no device node: the driver is not loaded, or it found no BMC.
fn no_device(ctx: &OpenContext) -> Unavailable {
    let names = DEVICE_PATHS.join(", ");
    if ctx.root.path("/sys/module/ipmi_devintf").exists()
        || ctx.root.path("/sys/class/ipmi").exists()
    {
        Unavailable::new(
            SourceKind::Dcmi,
            UnavailableKind::NotPresent,
            format!("no {names}: the IPMI driver is loaded but found no BMC"),
            Some(
                "this machine has no BMC the kernel can reach; a remote BMC can be read with --bmc HOST"
                    .to_string(),
            ),
        )
    } else {
        Unavailable::new(
            SourceKind::Dcmi,
            UnavailableKind::ModuleMissing,
            format!("no {names}: the IPMI driver is not loaded, or this machine has no BMC"),
            Some(MODPROBE_FIX.to_string()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link replaying answers, then repeating the last.
    struct Script(Vec<Result<PowerReading, LinkError>>, usize);

    impl Link for Script {
        fn read(&mut self) -> Result<PowerReading, LinkError> {
            let i = self.1.min(self.0.len() - 1);
            self.1 += 1;
            self.0[i].clone()
        }
    }

    fn reading(w: u32, active: bool) -> Result<PowerReading, LinkError> {
        Ok(PowerReading {
            current_w: w,
            min_w: w,
            max_w: w,
            average_w: w,
            timestamp: None,
            period_ms: Some(1000),
            active,
        })
    }

    fn read(s: &mut BmcSource) -> Result<Reading, ReadError> {
        let mut out = Vec::new();
        s.read(&mut out);
        assert_eq!(out.len(), 1);
        out.pop().unwrap()
    }

    #[test]
    fn readings_are_powers_and_non_readings_failed_reads() {
        let unanswered = LinkError::new(LinkClass::Unanswered, "no answer");
        let mut s = BmcSource::new(
            SourceKind::Dcmi,
            Box::new(Script(
                vec![
                    reading(250, true),
                    reading(250, false),
                    reading(0, true),
                    reading(65535, true),
                    Err(LinkError::new(LinkClass::Other, "0xD5")),
                    Err(unanswered),
                ],
                0,
            )),
        );
        let d = &s.domains()[0];
        assert_eq!(
            (d.name.as_str(), d.place.clone()),
            ("chassis", Place::Whole)
        );
        assert_eq!(
            (d.kind, d.device.clone()),
            (DomainKind::Chassis, Device::Chassis)
        );
        assert_eq!(s.cadence(), Cadence::Every(Duration::from_secs(1)));
        assert_eq!(read(&mut s), Ok(Reading::Power { watts: 250.0 }));
        let e = read(&mut s).unwrap_err();
        assert!(e.message.contains("not active") && !e.gone, "{e:?}");
        assert!(read(&mut s).unwrap_err().message.contains("0 W"));
        assert!(read(&mut s).unwrap_err().message.contains("out of range"));
        assert_eq!(read(&mut s).unwrap_err().message, "0xD5");
        assert_eq!(read(&mut s).unwrap_err().message, "no answer");
    }

    #[test]
    fn a_silent_bmc_is_asked_less_often_and_readings_resume_when_it_answers() {
        let mut answers: Vec<Result<PowerReading, LinkError>> = (0..BACKOFF_AFTER)
            .map(|_| Err(LinkError::new(LinkClass::Unanswered, "no answer")))
            .collect();
        answers.push(reading(300, true));
        let mut s = BmcSource::new(SourceKind::Dcmi, Box::new(Script(answers, 0)));
        for _ in 0..BACKOFF_AFTER {
            assert_eq!(read(&mut s).unwrap_err().message, "no answer");
        }
        // The next BACKOFF_EVERY - 1 reads fail at once, without asking.
        for _ in 0..BACKOFF_EVERY - 1 {
            let e = read(&mut s).unwrap_err();
            assert!(e.message.contains("asked again every 10 reads"), "{e:?}");
        }
        // Then it is asked, answers, and is read normally again.
        assert_eq!(read(&mut s), Ok(Reading::Power { watts: 300.0 }));
        assert_eq!(read(&mut s), Ok(Reading::Power { watts: 300.0 }));
    }

    #[test]
    fn opening_classifies_what_the_first_answer_says() {
        let open = |r: Result<PowerReading, LinkError>| {
            probe(SourceKind::Dcmi, &mut Script(vec![r], 0), "be root").unwrap_err()
        };
        let u = open(Err(LinkError::new(LinkClass::Unsupported, "0xC1")));
        assert_eq!(u.kind, UnavailableKind::NotPresent);
        assert!(u.fix.unwrap().contains("--chassis hwmon"));
        let u = open(Err(LinkError::new(LinkClass::Permission, "0xD4")));
        assert_eq!(
            (u.kind, u.fix.as_deref()),
            (UnavailableKind::Permission, Some("be root"))
        );
        let u = open(Err(LinkError::new(LinkClass::NoDevice, "none")));
        assert_eq!(u.kind, UnavailableKind::ModuleMissing);
        assert!(u.fix.unwrap().contains("modprobe ipmi_si ipmi_devintf"));
        let u = open(Err(LinkError::new(LinkClass::Unanswered, "silent")));
        assert_eq!(u.kind, UnavailableKind::Invalid);
        let u = open(reading(200, false));
        assert_eq!(u.kind, UnavailableKind::Inactive);
        let u = open(reading(0, true));
        assert_eq!(u.kind, UnavailableKind::Invalid);
        assert!(u.reason.contains("0 W"));
        assert!(
            probe(
                SourceKind::Dcmi,
                &mut Script(vec![reading(90, true)], 0),
                ""
            )
            .is_ok()
        );
    }
}
