//! CPU to package (socket) map, from
//! `/sys/devices/system/cpu/cpuN/topology/physical_package_id` under the [`SysRoot`].

use std::fs;

use crate::kfs;
use crate::sysroot::SysRoot;

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Topology {
    /// `cpu_package[n]` is the package of CPU n, `None` for a CPU with no topology
    /// directory (offline, or a gap in numbering).
    pub cpu_package: Vec<Option<u32>>,
}

impl Topology {
    /// Read the map. A machine (or VM) with no topology files gets one package, 0,
    /// holding every CPU that `/sys/devices/system/cpu/cpuN` lists, or CPU 0 alone.
    pub fn read(root: &SysRoot) -> Topology {
        let dir = root.path("/sys/devices/system/cpu");
        let mut cpu_package: Vec<Option<u32>> = Vec::new();
        let mut any_id = false;
        if let Ok(entries) = fs::read_dir(&dir) {
            for e in entries.flatten() {
                let name = e.file_name();
                let Some(n) = name
                    .as_encoded_bytes()
                    .strip_prefix(b"cpu")
                    .and_then(kfs::parse_u64)
                    .and_then(|n| usize::try_from(n).ok())
                    .filter(|&n| n <= kfs::MAX_CPU)
                else {
                    continue;
                };
                if cpu_package.len() <= n {
                    cpu_package.resize(n + 1, None);
                }
                // Never blocks on a FIFO planted in a fake tree: regular files only.
                let id =
                    crate::fsx::read_attr_string(&e.path().join("topology/physical_package_id"))
                        .ok()
                        .and_then(|s| kfs::parse_decimal_i64(s.as_bytes()));
                cpu_package[n] = match id {
                    // -1 is what some hypervisors report: treat as package 0.
                    Some(id) if id >= 0 && id <= u32::MAX as i64 => {
                        any_id = true;
                        Some(id as u32)
                    }
                    _ => Some(0),
                };
            }
        }
        if cpu_package.is_empty() {
            cpu_package.push(Some(0));
        }
        if !any_id {
            for p in cpu_package.iter_mut().flatten() {
                *p = 0;
            }
        }
        Topology { cpu_package }
    }

    /// A topology from a literal map, for tests and for callers that know it.
    pub fn from_packages(cpu_package: Vec<Option<u32>>) -> Topology {
        Topology { cpu_package }
    }

    pub fn package_of(&self, cpu: usize) -> Option<u32> {
        self.cpu_package.get(cpu).copied().flatten()
    }

    /// The distinct packages, ascending.
    pub fn packages(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.cpu_package.iter().flatten().copied().collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Number of packages (at least 1).
    pub fn package_count(&self) -> usize {
        self.packages().len().max(1)
    }

    /// The CPUs of one package, ascending.
    pub fn cpus_of(&self, package: u32) -> Vec<usize> {
        self.cpu_package
            .iter()
            .enumerate()
            .filter(|(_, p)| **p == Some(package))
            .map(|(c, _)| c)
            .collect()
    }

    /// One CPU of each package, the lowest numbered: where per-package reads go.
    pub fn first_cpu_per_package(&self) -> Vec<(u32, usize)> {
        self.packages()
            .into_iter()
            .filter_map(|p| self.cpus_of(p).first().map(|c| (p, *c)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &std::path::Path, cpu: usize, pkg: &str) {
        let d = root.join(format!("sys/devices/system/cpu/cpu{cpu}/topology"));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("physical_package_id"), pkg).unwrap();
    }

    #[test]
    fn two_sockets() {
        let t = tempfile::tempdir().unwrap();
        for c in 0..4 {
            write(t.path(), c, if c % 2 == 0 { "0\n" } else { "1\n" });
        }
        // Not a CPU directory: ignored.
        fs::create_dir_all(t.path().join("sys/devices/system/cpu/cpufreq")).unwrap();
        let topo = Topology::read(&SysRoot::new(t.path()));
        assert_eq!(topo.packages(), vec![0, 1]);
        assert_eq!(topo.cpus_of(1), vec![1, 3]);
        assert_eq!(topo.first_cpu_per_package(), vec![(0, 0), (1, 1)]);
    }

    #[test]
    fn missing_tree_is_one_package() {
        let t = tempfile::tempdir().unwrap();
        let topo = Topology::read(&SysRoot::new(t.path()));
        assert_eq!(topo.packages(), vec![0]);
        assert_eq!(topo.package_count(), 1);
    }

    #[test]
    fn garbage_ids_fall_back_to_zero() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), 0, "-1\n");
        write(t.path(), 1, "banana");
        let topo = Topology::read(&SysRoot::new(t.path()));
        assert_eq!(topo.packages(), vec![0]);
        assert_eq!(topo.cpus_of(0), vec![0, 1]);
    }
}
