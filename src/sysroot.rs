//! Where hardware files are read from. Production reads `/`; tests point
//! `JOULERUN_SYSFS_ROOT` (or `--sysfs-root`) at a fake tree with the same layout
//! (`sys/class/powercap/...`, `sys/bus/event_source/...`, `dev/cpu/N/msr`).
//! `/proc` is always the real one: processes are never faked.

use std::path::{Path, PathBuf};

/// The environment variable that moves the hardware root.
pub const ROOT_ENV: &str = "JOULERUN_SYSFS_ROOT";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SysRoot {
    root: PathBuf,
}

impl Default for SysRoot {
    fn default() -> Self {
        SysRoot {
            root: PathBuf::from("/"),
        }
    }
}

impl SysRoot {
    pub fn new(root: impl Into<PathBuf>) -> SysRoot {
        SysRoot { root: root.into() }
    }

    /// The root named by `JOULERUN_SYSFS_ROOT`, or `/`.
    pub fn from_env() -> SysRoot {
        match std::env::var_os(ROOT_ENV) {
            Some(v) if !v.is_empty() => SysRoot::new(PathBuf::from(v)),
            _ => SysRoot::default(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn is_default(&self) -> bool {
        self.root == Path::new("/")
    }

    /// An absolute system path (`/sys/class/powercap`) under this root.
    pub fn path(&self, abs: impl AsRef<Path>) -> PathBuf {
        let abs = abs.as_ref();
        let rel = abs.strip_prefix("/").unwrap_or(abs);
        self.root.join(rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_under_root() {
        let r = SysRoot::new("/tmp/fake");
        assert_eq!(
            r.path("/sys/class/powercap"),
            PathBuf::from("/tmp/fake/sys/class/powercap")
        );
        assert_eq!(
            SysRoot::default().path("/dev/cpu"),
            PathBuf::from("/dev/cpu")
        );
    }
}
