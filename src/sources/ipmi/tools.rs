//! The BMC through an installed tool: `ipmitool dcmi power reading` or freeipmi's
//! `ipmi-dcmi --get-system-power-statistics`, run with a deadline and their output parsed.
//!
//! Used when joulerun cannot reach the BMC itself: no device node under the root (freeipmi
//! reaches a KCS or SSIF BMC without the kernel driver), and for `--bmc` (`lan.rs`), where
//! `ipmitool -I lanplus` speaks RMCP+.
//!
//! Output formats (fixtures in `tests/fixtures/ipmi/`):
//!
//! * ipmitool 1.8.18: one `label: value` per line, `Instantaneous power reading:  220
//!   Watts`, ..., `IPMI timestamp:  Thu Feb  4 10:51:41 2016` (asctime's newline),
//!   `Sampling period:  00000005 Seconds.`, `Power reading state is:  activated`.
//! * ipmitool 1.8.19 prints the timestamp without a newline, so `Sampling period:` follows
//!   it on the same line. Labels are therefore found anywhere in the text, not at line
//!   starts.
//! * freeipmi 1.6: `Current Power : 164 Watts`, `Minimum/Maximum/Average Power over
//!   sampling duration : N watts`, `Time Stamp : 11/14/2023 - 22:13:20`, `Statistics
//!   reporting time period : N milliseconds`, `Power Measurement : Active` (or `Not
//!   Available`).
//!
//! Exit statuses are not relied on: during a run, joulerun reaps every child that exits
//! (it is a child subreaper, and its loop waits for any child), so a tool's status may be
//! taken before this code asks for it. A reading is a reading when the output parses;
//! otherwise the tool's messages say why (see [`classify_failure`]).

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::dcmi::PowerReading;
use super::{BmcSource, Link, LinkClass, LinkError, OpenContext, SourceKind, Unavailable};
use crate::sources::UnavailableKind;

/// The longest a local tool may take for one reading (in-band through a driver or KCS it
/// takes tens of milliseconds); killed after that. Below the 2 s the end of a run waits.
pub const TOOL_TIMEOUT: Duration = Duration::from_millis(1500);

/// The most output kept from a tool, per stream.
pub const OUTPUT_LIMIT: usize = 64 * 1024;

/// The tools, in the order they are tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    /// `ipmitool dcmi power reading` (1.8.18, 1.8.19).
    Ipmitool,
    /// freeipmi's `ipmi-dcmi --get-system-power-statistics` (1.6).
    IpmiDcmi,
}

impl Tool {
    pub const ALL: [Tool; 2] = [Tool::Ipmitool, Tool::IpmiDcmi];

    pub fn program(self) -> &'static str {
        match self {
            Tool::Ipmitool => "ipmitool",
            Tool::IpmiDcmi => "ipmi-dcmi",
        }
    }

    /// The arguments of one in-band reading.
    pub fn args(self) -> &'static [&'static str] {
        match self {
            Tool::Ipmitool => &["dcmi", "power", "reading"],
            Tool::IpmiDcmi => &["--get-system-power-statistics"],
        }
    }

    /// Parse one reading from the tool's standard output.
    pub fn parse(self, out: &str) -> Result<PowerReading, String> {
        match self {
            Tool::Ipmitool => parse_ipmitool(out),
            Tool::IpmiDcmi => parse_freeipmi(out),
        }
    }
}

/// The value after `label` (case as the tools print it: "Sampling period" is not the end
/// of "Minimum during sampling period") and its colon, up to the end of the line.
fn after_label<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    let at = text.find(label)?;
    let rest = &text[at + label.len()..];
    let rest = rest.trim_start_matches([' ', '\t']);
    let rest = rest.strip_prefix(':')?;
    Some(rest.split('\n').next().unwrap_or("").trim())
}

/// The first unsigned number in `value`, with the unit word that follows it.
fn number_and_unit(value: &str) -> Option<(u64, String)> {
    let v = value.trim_start();
    let end = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    if end == 0 {
        return None;
    }
    let n = v[..end].parse().ok()?;
    let unit = v[end..]
        .split_whitespace()
        .next()
        .unwrap_or("")
        .trim_end_matches('.')
        .to_ascii_lowercase();
    Some((n, unit))
}

fn watts(text: &str, label: &str) -> Result<u32, String> {
    let v = after_label(text, label).ok_or_else(|| format!("no '{label}' line"))?;
    match number_and_unit(v) {
        Some((n, unit)) if unit == "watts" || unit == "watt" || unit == "w" => {
            u32::try_from(n).map_err(|_| format!("'{label}' is out of range: {n}"))
        }
        _ => Err(format!("'{label}' is not a number of watts: '{v}'")),
    }
}

/// Parse `ipmitool dcmi power reading` (1.8.18 and 1.8.19).
pub fn parse_ipmitool(out: &str) -> Result<PowerReading, String> {
    let current_w = watts(out, "Instantaneous power reading")?;
    let min_w = watts(out, "Minimum during sampling period")?;
    let max_w = watts(out, "Maximum during sampling period")?;
    let average_w = watts(out, "Average power reading over sample period")?;
    let period_ms = after_label(out, "Sampling period")
        .and_then(number_and_unit)
        .and_then(|(n, unit)| match unit.as_str() {
            "seconds" | "second" => n.checked_mul(1000),
            "milliseconds" => Some(n),
            _ => None,
        });
    let state = after_label(out, "Power reading state is")
        .ok_or("no 'Power reading state is' line")?
        .to_ascii_lowercase();
    let active = match state.split_whitespace().next() {
        Some("activated") | Some("active") => true,
        Some("deactivated") | Some("not") | Some("inactive") => false,
        _ => return Err(format!("unknown power reading state '{state}'")),
    };
    Ok(PowerReading {
        current_w,
        min_w,
        max_w,
        average_w,
        timestamp: None,
        period_ms,
        active,
    })
}

/// Parse freeipmi's `ipmi-dcmi --get-system-power-statistics` (1.6).
pub fn parse_freeipmi(out: &str) -> Result<PowerReading, String> {
    let current_w = watts(out, "Current Power")?;
    let min_w = watts(out, "Minimum Power over sampling duration")?;
    let max_w = watts(out, "Maximum Power over sampling duration")?;
    let average_w = watts(out, "Average Power over sampling duration")?;
    let period_ms = after_label(out, "Statistics reporting time period")
        .and_then(number_and_unit)
        .and_then(|(n, unit)| match unit.as_str() {
            "milliseconds" => Some(n),
            "seconds" => n.checked_mul(1000),
            _ => None,
        });
    let state = after_label(out, "Power Measurement")
        .ok_or("no 'Power Measurement' line")?
        .to_ascii_lowercase();
    let active = match state.as_str() {
        "active" => true,
        "not available" | "inactive" | "not active" => false,
        _ => return Err(format!("unknown power measurement state '{state}'")),
    };
    Ok(PowerReading {
        current_w,
        min_w,
        max_w,
        average_w,
        timestamp: None,
        period_ms,
        active,
    })
}

/// What a failed tool's messages mean. `text` is its standard error and output together.
pub fn classify_failure(text: &str) -> LinkClass {
    let t = text.to_ascii_lowercase();
    let has = |s: &str| t.contains(s);
    if has("permission denied")
        || has("insufficient privilege")
        || has("unauthorized name")
        || has("rakp")
        || has("password")
        || has("authentication")
    {
        LinkClass::Permission
    } else if has("could not open device")
        || has("could not find inband device")
        || has("no such file or directory")
    {
        LinkClass::NoDevice
    } else if has("invalid command")
        || has("command invalid")
        || has("unsupported")
        || has("not supported")
        || has("dcmi request failed")
        || has("a valid dcmi command was not returned")
        || has("parameter not supported")
    {
        LinkClass::Unsupported
    } else if has("unable to establish")
        || has("no response")
        || has("timeout")
        || has("timed out")
        || has("session")
    {
        LinkClass::Unanswered
    } else {
        LinkClass::Other
    }
}

/// What a bounded run of a tool gave.
#[derive(Debug, Default)]
pub struct ToolOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Its exit status, when this code reaped it (see the module's note).
    pub status: Option<std::process::ExitStatus>,
}

/// Why a tool gave no output to parse.
#[derive(Debug)]
pub enum RunError {
    Spawn(io::Error),
    /// Still running at the deadline: it (and anything it started) was killed.
    TimedOut(Duration),
}

/// Run `cmd` with no input, in a process group of its own, collecting its output for at
/// most `timeout`; past that the whole group is killed (a tool that forks keeps no pipe
/// open behind it). Never waits longer than `timeout` plus a few milliseconds.
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> Result<ToolOutput, RunError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // joulerun blocks its terminating signals in every thread (signals.rs); a tool must
    // start with none blocked, or one relying on SIGALRM, say, would hang.
    // SAFETY: between fork and exec only async-signal-safe calls on stack values.
    unsafe {
        cmd.pre_exec(|| {
            let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(set.as_mut_ptr());
            libc::pthread_sigmask(libc::SIG_SETMASK, set.as_ptr(), std::ptr::null_mut());
            Ok(())
        });
    }
    let deadline = Instant::now() + timeout;
    let mut child = cmd.spawn().map_err(RunError::Spawn)?;
    let pgid = child.id() as i32;
    let mut out = ToolOutput::default();
    let mut open_out = child.stdout.take();
    let mut errpipe = child.stderr.take();
    let set_nonblock = |fd: i32| {
        // SAFETY: fcntl on an fd we own.
        unsafe {
            let fl = libc::fcntl(fd, libc::F_GETFL);
            if fl >= 0 {
                libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
            }
        }
    };
    if let Some(p) = &open_out {
        set_nonblock(p.as_raw_fd());
    }
    if let Some(p) = &errpipe {
        set_nonblock(p.as_raw_fd());
    }
    let mut buf = [0u8; 4096];
    while open_out.is_some() || errpipe.is_some() {
        let now = Instant::now();
        if now >= deadline {
            kill_group(pgid);
            let _ = child.wait();
            return Err(RunError::TimedOut(timeout));
        }
        let mut fds = [
            libc::pollfd {
                fd: open_out.as_ref().map_or(-1, |p| p.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: errpipe.as_ref().map_or(-1, |p| p.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let ms = (deadline - now).as_millis().clamp(1, 60_000) as libc::c_int;
        // SAFETY: two pollfds on our stack.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
        if n <= 0 {
            continue; // EINTR or the deadline: checked above
        }
        if fds[0].revents != 0
            && let Some(p) = open_out.as_mut()
            && drain(p, &mut out.stdout, &mut buf)
        {
            open_out = None;
        }
        if fds[1].revents != 0
            && let Some(p) = errpipe.as_mut()
            && drain(p, &mut out.stderr, &mut buf)
        {
            errpipe = None;
        }
    }
    // Both pipes closed: the tool has exited or is about to. Its status, if nobody else
    // reaped it first; a straggler past the deadline is killed.
    loop {
        match child.try_wait() {
            Ok(Some(st)) => {
                out.status = Some(st);
                break;
            }
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(None) => {
                kill_group(pgid);
                let _ = child.wait();
                break;
            }
            // ECHILD: reaped by the run's loop (see the module's note).
            Err(_) => break,
        }
    }
    Ok(out)
}

/// Read what is available; true at end of file (or an error: the pipe is done).
fn drain(p: &mut impl Read, into: &mut Vec<u8>, buf: &mut [u8]) -> bool {
    loop {
        match p.read(buf) {
            Ok(0) => return true,
            Ok(n) => {
                let room = OUTPUT_LIMIT.saturating_sub(into.len());
                into.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}

fn kill_group(pgid: i32) {
    if pgid > 0 {
        // SAFETY: kill with a negative pid signals the process group we created.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

/// Look `name` up like `execvp` in `search_path` (`PATH`): the first executable regular
/// file. Under a hardware root other than `/` (a fake tree), only a program inside that
/// root counts: a tool outside would read this machine's BMC, not the tree's.
pub fn find_program(name: &str, search_path: &OsStr, root: &Path) -> Option<PathBuf> {
    let root_real = std::fs::canonicalize(root).ok()?;
    for dir in search_path.as_bytes().split(|b| *b == b':') {
        let dir = if dir.is_empty() {
            Path::new(".")
        } else {
            Path::new(OsStr::from_bytes(dir))
        };
        let cand = dir.join(name);
        let Ok(meta) = std::fs::metadata(&cand) else {
            continue;
        };
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            continue;
        }
        let Ok(real) = std::fs::canonicalize(&cand) else {
            continue;
        };
        if real.starts_with(&root_real) {
            return Some(cand);
        }
    }
    None
}

/// A tool as a [`Link`]: each read runs it once.
pub struct ToolLink {
    tool: Tool,
    program: PathBuf,
    args: Vec<OsString>,
    /// Set in the child's environment (the LAN password).
    env: Vec<(OsString, OsString)>,
    /// Removed from the child's environment.
    env_remove: Vec<OsString>,
    timeout: Duration,
    /// `ipmitool`, or `ipmitool -I lanplus -H HOST`: how messages name it.
    label: String,
}

impl ToolLink {
    /// `tool` found at `program`, run with its in-band arguments.
    pub fn local(tool: Tool, program: PathBuf) -> ToolLink {
        ToolLink {
            tool,
            label: tool.program().to_string(),
            args: tool.args().iter().map(OsString::from).collect(),
            program,
            env: Vec::new(),
            env_remove: vec![OsString::from("IPMI_PASSWORD")],
            timeout: TOOL_TIMEOUT,
        }
    }

    /// `ipmitool` at `program` with these arguments and environment (`lan.rs`).
    pub fn custom(
        program: PathBuf,
        args: Vec<OsString>,
        env: Vec<(OsString, OsString)>,
        timeout: Duration,
        label: String,
    ) -> ToolLink {
        ToolLink {
            tool: Tool::Ipmitool,
            program,
            args,
            env,
            env_remove: Vec::new(),
            timeout,
            label,
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }
}

/// The first line with something in it, for messages.
fn first_line(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

impl Link for ToolLink {
    fn read(&mut self) -> Result<PowerReading, LinkError> {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        for k in &self.env_remove {
            cmd.env_remove(k);
        }
        cmd.env_remove("JOULERUN_BMC_PASSWORD");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let out = match run_bounded(cmd, self.timeout) {
            Ok(o) => o,
            Err(RunError::Spawn(e)) => {
                return Err(LinkError::new(
                    LinkClass::Other,
                    format!("cannot run {}: {e}", self.program.display()),
                ));
            }
            Err(RunError::TimedOut(d)) => {
                return Err(LinkError::new(
                    LinkClass::Unanswered,
                    format!(
                        "{} gave no reading within {} ms (killed)",
                        self.label,
                        d.as_millis()
                    ),
                ));
            }
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        match self.tool.parse(&stdout) {
            Ok(r) => Ok(r),
            Err(why) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let said = first_line(&stderr);
                let said = if said.is_empty() {
                    first_line(&stdout)
                } else {
                    said
                };
                let both = format!("{stderr}\n{stdout}");
                let class = if said.is_empty() {
                    LinkClass::Other
                } else {
                    classify_failure(&both)
                };
                let status = match out.status.and_then(|s| s.code()) {
                    Some(c) => format!(" (exit status {c})"),
                    None => String::new(),
                };
                let message = if said.is_empty() {
                    format!("{}{status} printed no power reading: {why}", self.label)
                } else {
                    format!(
                        "{}{status}: {}",
                        self.label,
                        crate::text::escape_line(&crate::text::elide_middle(said, 200))
                    )
                };
                Err(LinkError::new(class, message))
            }
        }
    }
}

/// The tools path: when no IPMI device node exists under the root, the first installed
/// tool that gives a reading.
pub fn open_tools(ctx: &OpenContext) -> Result<BmcSource, Unavailable> {
    let kind = SourceKind::IpmiTool;
    if let Some(p) = super::device_path(&ctx.root) {
        return Err(Unavailable::new(
            kind,
            UnavailableKind::NotPresent,
            format!(
                "not used: {} exists, and joulerun reads it itself (the dcmi interface)",
                p.display()
            ),
            None,
        ));
    }
    let search = ctx
        .ipmi
        .search_path
        .clone()
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_else(|| {
            OsString::from("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        });
    let mut problems: Vec<Unavailable> = Vec::new();
    for tool in Tool::ALL {
        let Some(program) = find_program(tool.program(), &search, ctx.root.root()) else {
            continue;
        };
        let mut link = ToolLink::local(tool, program);
        match super::probe(
            kind,
            &mut link,
            "run as root (the tools open the IPMI device or the BMC's I/O ports)",
        ) {
            Ok(_) => return Ok(BmcSource::new(kind, Box::new(link))),
            Err(u) => problems.push(u),
        }
    }
    if problems.is_empty() {
        return Err(Unavailable::new(
            kind,
            UnavailableKind::NotPresent,
            "neither ipmitool nor ipmi-dcmi (freeipmi) is installed",
            Some(
                "install ipmitool or freeipmi-tools (Debian, Ubuntu: `sudo apt install ipmitool`)"
                    .to_string(),
            ),
        ));
    }
    // The most telling problem: permission, then inactive, invalid, no DCMI, no device.
    let rank = |k: UnavailableKind| match k {
        UnavailableKind::Permission => 0,
        UnavailableKind::Inactive => 1,
        UnavailableKind::Invalid => 2,
        UnavailableKind::NotPresent => 3,
        UnavailableKind::ModuleMissing => 4,
    };
    problems.sort_by_key(|u| rank(u.kind));
    let reason = problems
        .iter()
        .map(|u| u.reason.clone())
        .collect::<Vec<_>>()
        .join("; ");
    let first = problems.swap_remove(0);
    Err(Unavailable::new(kind, first.kind, reason, first.fix))
}

#[cfg(test)]
mod tests {
    use super::*;

    const IPMITOOL_1_8_18: &str =
        include_str!("../../../tests/fixtures/ipmi/ipmitool-1.8.18-reading.stdout");
    const IPMITOOL_1_8_19: &str =
        include_str!("../../../tests/fixtures/ipmi/ipmitool-1.8.19-reading.stdout");
    const IPMITOOL_1_8_19_INACTIVE: &str =
        include_str!("../../../tests/fixtures/ipmi/ipmitool-1.8.19-inactive.stdout");
    const FREEIPMI_1_6: &str =
        include_str!("../../../tests/fixtures/ipmi/freeipmi-1.6.10-reading.stdout");
    const FREEIPMI_1_6_INACTIVE: &str =
        include_str!("../../../tests/fixtures/ipmi/freeipmi-1.6.10-inactive.stdout");

    #[test]
    fn ipmitool_1_8_18_one_value_per_line() {
        let r = parse_ipmitool(IPMITOOL_1_8_18).unwrap();
        assert_eq!(
            (r.current_w, r.min_w, r.max_w, r.average_w),
            (220, 2, 704, 226)
        );
        assert_eq!((r.period_ms, r.active), (Some(5000), true));
        assert_eq!(r.watts(), Ok(220.0));
    }

    #[test]
    fn ipmitool_1_8_19_timestamp_without_its_newline() {
        // The timestamp and the sampling period share a line.
        let line = IPMITOOL_1_8_19
            .lines()
            .find(|l| l.contains("IPMI timestamp"))
            .unwrap();
        assert!(line.contains("Sampling period"), "{line}");
        let r = parse_ipmitool(IPMITOOL_1_8_19).unwrap();
        assert_eq!(
            (r.current_w, r.min_w, r.max_w, r.average_w),
            (331, 68, 504, 348)
        );
        assert_eq!((r.period_ms, r.active), (Some(1000), true));
        let r = parse_ipmitool(IPMITOOL_1_8_19_INACTIVE).unwrap();
        assert!(!r.active);
        assert!(r.watts().is_err());
    }

    #[test]
    fn freeipmi_1_6_statistics() {
        let r = parse_freeipmi(FREEIPMI_1_6).unwrap();
        assert_eq!(
            (r.current_w, r.min_w, r.max_w, r.average_w),
            (164, 48, 361, 157)
        );
        assert_eq!((r.period_ms, r.active), (Some(1_473_439_000), true));
        let r = parse_freeipmi(FREEIPMI_1_6_INACTIVE).unwrap();
        assert!(!r.active);
    }

    #[test]
    fn outputs_without_a_reading_are_errors_naming_what_is_missing() {
        assert!(parse_ipmitool("").unwrap_err().contains("Instantaneous"));
        assert!(parse_freeipmi(IPMITOOL_1_8_18).is_err());
        assert!(parse_ipmitool(FREEIPMI_1_6).is_err());
        let e = parse_ipmitool(&IPMITOOL_1_8_18.replace("220 Watts", "lots Watts")).unwrap_err();
        assert!(e.contains("not a number of watts"), "{e}");
        let e = parse_ipmitool(&IPMITOOL_1_8_18.replace("activated", "sleepy")).unwrap_err();
        assert!(e.contains("sleepy"), "{e}");
    }

    #[test]
    fn the_real_tools_messages_without_a_bmc_are_classified() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ipmi");
        for (name, class) in [
            ("ipmitool-1.8.19-no-device.stderr", LinkClass::NoDevice),
            ("freeipmi-1.6.10-no-device.stderr", LinkClass::NoDevice),
            ("freeipmi-1.6.10-not-root.stderr", LinkClass::Permission),
            (
                "ipmitool-1.8.19-lanplus-unreachable.stderr",
                LinkClass::Unanswered,
            ),
            (
                "ipmitool-1.8.19-not-an-ipmi-device.stderr",
                LinkClass::Other,
            ),
            (
                "ipmitool-1.8.19-invalid-command.stderr",
                LinkClass::Unsupported,
            ),
            (
                "freeipmi-1.6.10-invalid-command.stderr",
                LinkClass::Unsupported,
            ),
        ] {
            let text = std::fs::read_to_string(dir.join(name)).unwrap();
            assert_eq!(classify_failure(&text), class, "{name}");
        }
    }

    #[test]
    fn a_tool_that_hangs_is_killed_at_the_deadline_with_its_children() {
        let mut c = Command::new("sh");
        c.args(["-c", "echo started; sleep 30 & sleep 30"]);
        let t = Instant::now();
        match run_bounded(c, Duration::from_millis(300)) {
            Err(RunError::TimedOut(_)) => {}
            other => panic!("{other:?}"),
        }
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        let mut c = Command::new("sh");
        c.args(["-c", "echo out; echo err >&2; exit 3"]);
        let o = run_bounded(c, Duration::from_secs(5)).unwrap();
        assert_eq!(
            (o.stdout.as_slice(), o.stderr.as_slice()),
            (&b"out\n"[..], &b"err\n"[..])
        );
        assert_eq!(o.status.and_then(|s| s.code()), Some(3));
    }

    #[test]
    fn programs_are_found_like_execvp_and_inside_a_fake_root_only() {
        let t = tempfile::tempdir().unwrap();
        let bin = t.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let tool = bin.join("ipmitool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::join_paths([Path::new("/nonexistent"), &bin]).unwrap();
        assert_eq!(
            find_program("ipmitool", &path, t.path()),
            Some(tool.clone())
        );
        assert_eq!(find_program("ipmitool", &path, Path::new("/")), Some(tool));
        // A root elsewhere: the same program is outside it.
        let other = tempfile::tempdir().unwrap();
        assert_eq!(find_program("ipmitool", &path, other.path()), None);
        // Not executable: skipped.
        let plain = bin.join("ipmi-dcmi");
        std::fs::write(&plain, "x").unwrap();
        assert_eq!(find_program("ipmi-dcmi", &path, t.path()), None);
    }
}
