//! NVML reports host PIDs. When joulerun runs in a PID namespace (a container), the
//! command's PIDs as joulerun sees them are mapped to the host's through the `NSpid:`
//! line of `/proc/PID/status`, which lists a process's PID in each namespace it belongs
//! to, the leftmost in the namespace of the procfs mount (proc(5)).
//!
//! * joulerun in the initial PID namespace (`/proc/self/ns/pid` is `pid:[4026531836]`,
//!   the kernel's fixed inode for it), or the namespace cannot be read: PIDs are host
//!   PIDs already.
//! * joulerun's own `NSpid:` has more than one entry: this procfs shows an outer
//!   namespace, and each PID maps to its leftmost entry.
//! * Otherwise (a container with its own `/proc`): no mapping is possible, and the run
//!   says so instead of attributing zero silently.

use std::path::{Path, PathBuf};

/// The inode of the initial PID namespace (`PROC_PID_INIT_INO` in the kernel).
pub const INIT_PID_NS_INO: u64 = 0xEFFF_FFFC;

/// How the command's PIDs relate to the host's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Namespace {
    /// PIDs are host PIDs.
    Host,
    /// Map each PID through its `NSpid:` line.
    Nested,
    /// A PID namespace whose procfs shows no outer PIDs: why, for the report.
    Opaque(String),
}

/// The PIDs of an `NSpid:` line of a status file, outermost first.
pub fn nspid(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Reads namespaces and status files under a `/proc` (tests give a fake one).
#[derive(Clone, Debug)]
pub struct PidMapper {
    proc_root: PathBuf,
    pub namespace: Namespace,
}

impl PidMapper {
    /// Find out, from `proc_root` (normally `/proc`), how PIDs map.
    pub fn detect(proc_root: &Path) -> PidMapper {
        let ns = std::fs::read_link(proc_root.join("self/ns/pid"))
            .ok()
            .and_then(|l| {
                let s = l.to_string_lossy().into_owned();
                s.strip_prefix("pid:[")?
                    .strip_suffix(']')?
                    .parse::<u64>()
                    .ok()
            });
        let own = std::fs::read_to_string(proc_root.join("self/status"))
            .map(|s| nspid(&s))
            .unwrap_or_default();
        let namespace = match ns {
            None | Some(INIT_PID_NS_INO) => Namespace::Host,
            Some(_) if own.len() > 1 => Namespace::Nested,
            Some(ino) => Namespace::Opaque(format!(
                "joulerun runs in a PID namespace (pid:[{ino}]) whose /proc shows no host PIDs, \
                 and NVML reports host PIDs: the command's own GPU processes cannot be told apart"
            )),
        };
        PidMapper {
            proc_root: proc_root.to_path_buf(),
            namespace,
        }
    }

    /// The host PIDs of `pids`, into `out` (cleared first). `false` when the mapping is
    /// impossible here (`Opaque`); a PID whose status cannot be read (it ended) is left
    /// out.
    pub fn map(&self, pids: &[i32], out: &mut Vec<u32>) -> bool {
        out.clear();
        match &self.namespace {
            Namespace::Host => {
                out.extend(pids.iter().filter(|p| **p > 0).map(|p| *p as u32));
                true
            }
            Namespace::Opaque(_) => false,
            Namespace::Nested => {
                for &p in pids.iter().filter(|p| **p > 0) {
                    let path = self.proc_root.join(format!("{p}/status"));
                    if let Ok(s) = std::fs::read_to_string(path)
                        && let Some(host) = nspid(&s).first()
                    {
                        out.push(*host);
                    }
                }
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_proc(ns: &str, own_nspid: &str) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let me = t.path().join("self/ns");
        std::fs::create_dir_all(&me).unwrap();
        std::os::unix::fs::symlink(ns, me.join("pid")).unwrap();
        std::fs::write(
            t.path().join("self/status"),
            format!("Name:\tjoulerun\nNSpid:\t{own_nspid}\n"),
        )
        .unwrap();
        t
    }

    #[test]
    fn nspid_lines_parse_outermost_first() {
        assert_eq!(
            nspid("Name:\tx\nNSpid:\t4242\t17\t1\nVmRSS: 1"),
            [4242, 17, 1]
        );
        assert_eq!(nspid("Name:\tx\n"), Vec::<u32>::new());
    }

    #[test]
    fn host_pids_pass_through() {
        let t = fake_proc("pid:[4026531836]", "100");
        let m = PidMapper::detect(t.path());
        assert_eq!(m.namespace, Namespace::Host);
        let mut out = Vec::new();
        assert!(m.map(&[5, -1, 7], &mut out));
        assert_eq!(out, [5, 7]);
    }

    #[test]
    fn nested_namespaces_map_through_nspid() {
        let t = fake_proc("pid:[4026532999]", "9000\t1");
        for (pid, line) in [(1, "9001\t2"), (2, "9002\t3")] {
            std::fs::create_dir_all(t.path().join(pid.to_string())).unwrap();
            std::fs::write(
                t.path().join(format!("{pid}/status")),
                format!("Name:\tx\nNSpid:\t{line}\n"),
            )
            .unwrap();
        }
        let m = PidMapper::detect(t.path());
        assert_eq!(m.namespace, Namespace::Nested);
        let mut out = Vec::new();
        // PID 3 has ended: left out.
        assert!(m.map(&[1, 2, 3], &mut out));
        assert_eq!(out, [9001, 9002]);
    }

    #[test]
    fn a_container_with_its_own_proc_cannot_map_and_says_so() {
        let t = fake_proc("pid:[4026532999]", "1");
        let m = PidMapper::detect(t.path());
        match &m.namespace {
            Namespace::Opaque(why) => assert!(why.contains("host PIDs"), "{why}"),
            other => panic!("{other:?}"),
        }
        let mut out = vec![1];
        assert!(!m.map(&[1], &mut out));
        assert!(out.is_empty());
        // No namespace link at all (an old kernel): taken as the host.
        let t = tempfile::tempdir().unwrap();
        assert_eq!(PidMapper::detect(t.path()).namespace, Namespace::Host);
    }
}
