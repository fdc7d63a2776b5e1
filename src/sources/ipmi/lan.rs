//! A BMC over the network (`--bmc HOST`): IPMI 2.0 RMCP+ ("lanplus") through `ipmitool`.
//!
//! `ipmitool -I lanplus -H HOST [-U USER] -E -N 1 -R 2 dcmi power reading`, the password
//! in the child's environment (`IPMI_PASSWORD`, which `-E` reads), never in its arguments
//! where `ps` would show it. `-N 1 -R 2`: one second per try, two tries, so a read ends
//! within [`LAN_TIMEOUT`] even when the BMC is unreachable. ipmitool 1.8.19 picks the
//! strongest cipher suite the BMC offers (17, HMAC-SHA256, on current BMCs).
//!
//! Why not the `ipmi-rs` crate, which speaks RMCP+ itself: its 0.6 release has no
//! RAKP-HMAC-SHA256 (cipher suite 17, the default of current BMCs and of ipmitool): that
//! algorithm is a `todo!()` there, a panic on the first session with such a BMC.

use std::ffi::OsString;
use std::time::Duration;

use super::tools::{ToolLink, find_program};
use super::{BmcSource, BmcTarget, OpenContext, SourceKind, Unavailable, UnavailableKind};

/// The longest one remote reading may take: a session is set up for every reading (four
/// exchanges before the command), up to two tries of a second each.
pub const LAN_TIMEOUT: Duration = Duration::from_millis(4500);

/// The arguments of one reading from `target` (no password among them).
pub fn ipmitool_args(target: &BmcTarget) -> Vec<OsString> {
    let mut a: Vec<OsString> = ["-I", "lanplus", "-H", target.host.as_str()]
        .iter()
        .map(OsString::from)
        .collect();
    if let Some(u) = &target.user {
        a.push("-U".into());
        a.push(u.into());
    }
    for s in ["-E", "-N", "1", "-R", "2", "dcmi", "power", "reading"] {
        a.push(s.into());
    }
    a
}

/// The remote BMC named by `--bmc`, through the `ipmitool` found in the search path.
pub fn open_lan(ctx: &OpenContext) -> Result<BmcSource, Unavailable> {
    let kind = SourceKind::IpmiLan;
    let Some(target) = &ctx.ipmi.bmc else {
        return Err(Unavailable::new(
            kind,
            UnavailableKind::NotPresent,
            "no remote BMC named: give --bmc HOST (with --bmc-user and JOULERUN_BMC_PASSWORD or --bmc-password-file)",
            None,
        ));
    };
    let search = ctx
        .ipmi
        .search_path
        .clone()
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
    let Some(program) = find_program("ipmitool", &search, ctx.root.root()) else {
        return Err(Unavailable::new(
            kind,
            UnavailableKind::NotPresent,
            format!(
                "--bmc {} needs ipmitool (IPMI 2.0 lanplus), which is not installed",
                target.host
            ),
            Some("install ipmitool (Debian, Ubuntu: `sudo apt install ipmitool`)".to_string()),
        ));
    };
    let label = format!("ipmitool -I lanplus -H {}", target.host);
    let mut link = ToolLink::custom(
        program,
        ipmitool_args(target),
        vec![(
            OsString::from("IPMI_PASSWORD"),
            OsString::from(target.password.expose()),
        )],
        LAN_TIMEOUT,
        label,
    );
    super::probe(
        kind,
        &mut link,
        "check --bmc-user and the password (JOULERUN_BMC_PASSWORD or --bmc-password-file); the user needs at least USER privilege on the BMC",
    )?;
    Ok(BmcSource::new(kind, Box::new(link)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::ipmi::Secret;

    #[test]
    fn the_password_is_never_an_argument() {
        let t = BmcTarget {
            host: "10.0.0.9".to_string(),
            user: Some("admin".to_string()),
            password: Secret::new("hunter2"),
        };
        let a = ipmitool_args(&t);
        assert!(a.iter().all(|s| s != "hunter2"));
        assert!(a.iter().any(|s| s == "-E"));
        let joined: Vec<String> = a.iter().map(|s| s.to_string_lossy().into_owned()).collect();
        assert_eq!(
            joined.join(" "),
            "-I lanplus -H 10.0.0.9 -U admin -E -N 1 -R 2 dcmi power reading"
        );
        assert_eq!(format!("{:?}", t.password), "Secret(***)");
        assert!(!format!("{t:?}").contains("hunter2"));
    }
}
