//! A fake BMC for joulerun's IPMI tests: the in-band device through the `fake-ipmi`
//! `LD_PRELOAD` library (a workspace member), and fake `ipmitool` programs for the tools
//! and LAN paths.
//!
//! In-band: [`FakeBmc::new`] creates `<root>/dev/ipmi0` as a regular file and a script
//! for the library (its format: `fake-ipmi/src/lib.rs`); [`FakeBmc::apply`] sets
//! `LD_PRELOAD` and `FAKE_IPMI_SCRIPT` on a command, so that joulerun's own `ioctl` and
//! `poll` calls on that file reach the scripted BMC. [`FakeBmc::requests`] reads back
//! what the BMC received.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The `fake-ipmi` library: built with the tests (joulerun names it as a dev-dependency),
/// so it lies beside the test binaries in `target/<profile>/deps`, or one level up when
/// built on its own (`cargo build -p joulerun-fake-ipmi`).
pub fn library() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = exe.parent() {
        dirs.push(d.to_path_buf());
        if let Some(up) = d.parent() {
            dirs.push(up.to_path_buf());
        }
    }
    for d in &dirs {
        let p = d.join("libfake_ipmi.so");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "libfake_ipmi.so not found in {dirs:?}: build it with `cargo build -p joulerun-fake-ipmi` (plain `cargo test` builds it)"
    );
}

/// One request the fake BMC received (a line of its log).
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// Seconds since its first request.
    pub t_s: f64,
    pub netfn: u8,
    pub cmd: u8,
    pub data: Vec<u8>,
    pub addr_type: u8,
    pub channel: u8,
    pub msgid: i64,
    pub replied: bool,
}

/// A scripted BMC behind `<root>/dev/ipmi0`.
pub struct FakeBmc {
    pub device: PathBuf,
    pub script: PathBuf,
    pub log: PathBuf,
}

impl FakeBmc {
    /// `<root>/dev/ipmi0` and a script: `directives` (one a line: `watts 350`, `silent
    /// from 3`, ...), after the `device` and `log` lines this adds.
    pub fn new(root: &Path, directives: &str) -> io::Result<FakeBmc> {
        let dev = root.join("dev");
        std::fs::create_dir_all(&dev)?;
        let device = dev.join("ipmi0");
        std::fs::write(&device, b"")?;
        let script = root.join("fake-ipmi.script");
        let log = root.join("fake-ipmi.log");
        std::fs::write(
            &script,
            format!(
                "device {}\nlog {}\n{directives}\n",
                device.display(),
                log.display()
            ),
        )?;
        Ok(FakeBmc {
            device,
            script,
            log,
        })
    }

    /// Make `cmd` load the fake driver.
    pub fn apply(&self, cmd: &mut Command) {
        cmd.env("LD_PRELOAD", library())
            .env("FAKE_IPMI_SCRIPT", &self.script);
    }

    /// The requests received so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().filter_map(parse_request).collect()
    }
}

fn parse_request(line: &str) -> Option<Request> {
    let mut w = line.split_whitespace();
    let t_s = w.next()?.parse().ok()?;
    let mut r = Request {
        t_s,
        netfn: 0,
        cmd: 0,
        data: Vec::new(),
        addr_type: 0,
        channel: 0,
        msgid: 0,
        replied: false,
    };
    let hex = |v: &str| u8::from_str_radix(v, 16).ok();
    for kv in w {
        let (k, v) = kv.split_once('=')?;
        match k {
            "netfn" => r.netfn = hex(v)?,
            "cmd" => r.cmd = hex(v)?,
            "addr_type" => r.addr_type = hex(v)?,
            "channel" => r.channel = hex(v)?,
            "msgid" => r.msgid = v.parse().ok()?,
            "replied" => r.replied = v == "true",
            "data" => {
                r.data = (0..v.len() / 2)
                    .filter_map(|i| hex(&v[2 * i..2 * i + 2]))
                    .collect()
            }
            _ => {}
        }
    }
    Some(r)
}

/// Write an executable shell script `dir/name` with `body` (after `#!/bin/sh`).
pub fn write_program(dir: &Path, name: &str, body: &str) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let p = dir.join(name);
    // Written to a temporary name and renamed, so that no process ever executes a
    // half-written script ("Text file busy" cannot happen either).
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, format!("#!/bin/sh\n{body}"))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, &p)?;
    Ok(p)
}

/// A fake `ipmitool` in `dir` printing `dcmi power reading` in 1.8.19's format (the
/// timestamp without its newline), its power stepping through `schedule`: `(until_s,
/// watts)` pairs measured from its first call, the last one lasting. Each call appends
/// its arguments, one line, to `dir/ipmitool.argv`, and the `IPMI_PASSWORD` it was given
/// to `dir/ipmitool.env`.
pub fn fake_ipmitool(dir: &Path, schedule: &[(f64, u32)]) -> io::Result<PathBuf> {
    let mut cases = String::new();
    for (until, w) in schedule {
        cases.push_str(&format!(
            "if [ -z \"$W\" ] && awk \"BEGIN {{ exit !($T < {until}) }}\"; then W={w}; fi\n"
        ));
    }
    let last = schedule.last().map_or(0, |s| s.1);
    let d = dir.display();
    let body = format!(
        r#"echo "$*" >> "{d}/ipmitool.argv"
echo "IPMI_PASSWORD=${{IPMI_PASSWORD-unset}}" >> "{d}/ipmitool.env"
NOW=$(date +%s.%N)
[ -f "{d}/ipmitool.start" ] || echo "$NOW" > "{d}/ipmitool.start"
START=$(cat "{d}/ipmitool.start")
T=$(awk "BEGIN {{ print $NOW - $START }}")
W=
{cases}[ -n "$W" ] || W={last}
printf '\n'
printf '    Instantaneous power reading:              %8d Watts\n' "$W"
printf '    Minimum during sampling period:           %8d Watts\n' 40
printf '    Maximum during sampling period:           %8d Watts\n' 900
printf '    Average power reading over sample period: %8d Watts\n' 300
printf '    IPMI timestamp:                           11/14/23 22:13:20 UTC'
printf '    Sampling period:                          00000001 Seconds.\n'
printf '    Power reading state is:                   activated\n\n\n'
"#
    );
    write_program(dir, "ipmitool", &body)
}
