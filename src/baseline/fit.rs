//! Whether a baseline fits this machine and this run.

use serde::Serialize;

use super::Baseline;
use crate::sources::{Category, Domain, SourceKind};

/// What identifies the machine a baseline belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MachineIdentity {
    pub hostname: String,
    pub kernel: String,
    pub cpu_model: String,
}

impl MachineIdentity {
    /// This machine: `gethostname`, `uname` release, `/proc/cpuinfo`. Anything unreadable is
    /// "unknown".
    pub fn current() -> MachineIdentity {
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown".to_string());
        let cpu_model = crate::fsx::read_regular(std::path::Path::new("/proc/cpuinfo"), 16 << 20)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map(|s| parse_cpu_model(&s))
            .unwrap_or_else(|_| "unknown".to_string());
        MachineIdentity {
            hostname,
            kernel: kernel_release(),
            cpu_model,
        }
    }
}

fn kernel_release() -> String {
    // SAFETY: `uname` fills a plain C struct we own; the fields are NUL-terminated arrays.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown".to_string();
    }
    let bytes: Vec<u8> = u
        .release
        .iter()
        // Scanned within its bounds: not every libc promises a terminating NUL.
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    let s = String::from_utf8_lossy(&bytes).trim().to_string();
    if s.is_empty() {
        "unknown".to_string()
    } else {
        s
    }
}

/// The CPU model from the text of `/proc/cpuinfo`: the first `model name` (x86), else
/// `Processor`/`cpu model`/`Hardware` (other architectures), else "unknown".
pub fn parse_cpu_model(cpuinfo: &str) -> String {
    for key in ["model name", "processor", "cpu model", "cpu", "hardware"] {
        for line in cpuinfo.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            // x86 "processor : 0" is a CPU number, not a model.
            if k.trim().eq_ignore_ascii_case(key)
                && !v.is_empty()
                && !v.chars().all(|c| c.is_ascii_digit())
            {
                return v.split_whitespace().collect::<Vec<_>>().join(" ");
            }
        }
    }
    "unknown".to_string()
}

/// Whether a baseline can be used for this run.
#[derive(Clone, Debug, PartialEq)]
pub enum Fit {
    /// It fits. `watts[i]` is the idle power of the run's domain `i` (always `Some` today;
    /// an `Option` so that callers can pass it straight to `Attributor::new`). `notes`:
    /// things worth a warning that do not invalidate it (a different kernel).
    Matches {
        watts: Vec<Option<f64>>,
        notes: Vec<String>,
    },
    /// It does not fit, and why, in one sentence; the run goes on without it.
    Mismatch(String),
}

impl Baseline {
    /// Whether this baseline fits a run on `machine` through `interface` with `domains`.
    pub fn check(
        &self,
        machine: &MachineIdentity,
        interface: SourceKind,
        domains: &[Domain],
    ) -> Fit {
        if self.hostname != machine.hostname || self.cpu_model != machine.cpu_model {
            return Fit::Mismatch(format!(
                "the baseline was taken on host {} (CPU {}), this is host {} (CPU {})",
                self.hostname, self.cpu_model, machine.hostname, machine.cpu_model
            ));
        }
        if self.interface != interface.name() {
            return Fit::Mismatch(format!(
                "the baseline was measured through {}, this run reads {}",
                self.interface,
                interface.name()
            ));
        }
        let mut watts = Vec::with_capacity(domains.len());
        let mut missing = Vec::new();
        for d in domains {
            match self
                .domains
                .iter()
                .find(|b| b.name == d.name && b.kind == d.kind.name() && b.socket == d.socket)
            {
                Some(b) => watts.push(Some(b.mean_w)),
                None => missing.push(d.name.as_str()),
            }
        }
        if !missing.is_empty() {
            let have: Vec<&str> = self.domains.iter().map(|b| b.name.as_str()).collect();
            return Fit::Mismatch(format!(
                "the baseline has no {} (it has {}), recalibrate with `joulerun --basepower`",
                missing.join(", "),
                if have.is_empty() {
                    "no domain".to_string()
                } else {
                    have.join(", ")
                }
            ));
        }
        let mut notes = Vec::new();
        if self.kernel != machine.kernel {
            notes.push(format!(
                "the baseline was taken under kernel {}, this is {}: idle power may differ; \
                 recalibrate with `joulerun --basepower` if in doubt",
                self.kernel, machine.kernel
            ));
        }
        Fit::Matches { watts, notes }
    }
}

/// How a baseline applies to a run, domain by domain.
#[derive(Clone, Debug, PartialEq)]
pub struct DomainFit {
    /// The idle power of the run's domain `i`, when the baseline has it.
    pub watts: Vec<Option<f64>>,
    /// Worth a warning: the CPU domains could not use it (and why), a device without a
    /// calibrated idle power, a different kernel.
    pub notes: Vec<String>,
    /// The whole file does not fit (another machine): why.
    pub ignored: Option<String>,
}

impl Baseline {
    /// The baseline for each domain of a run. The CPU domains take it together or not
    /// at all, as [`Baseline::check`] decides (the same interface, every domain in it);
    /// every other domain takes its own value when the file has that domain through the
    /// same interface (and the same device: a GPU swapped for another does not). A machine
    /// that gained a GPU keeps its CPU baseline, and the GPU runs without one until the
    /// next calibration.
    pub fn fit(&self, machine: &MachineIdentity, domains: &[Domain]) -> DomainFit {
        let mut out = DomainFit {
            watts: vec![None; domains.len()],
            notes: Vec::new(),
            ignored: None,
        };
        if self.hostname != machine.hostname || self.cpu_model != machine.cpu_model {
            out.ignored = Some(format!(
                "the baseline was taken on host {} (CPU {}), this is host {} (CPU {})",
                self.hostname, self.cpu_model, machine.hostname, machine.cpu_model
            ));
            return out;
        }
        let cpu: Vec<usize> = (0..domains.len())
            .filter(|&i| domains[i].category() == Category::Cpu)
            .collect();
        if let Some(&first) = cpu.first() {
            let cpu_domains: Vec<Domain> = cpu.iter().map(|&i| domains[i].clone()).collect();
            match self.check(machine, domains[first].source, &cpu_domains) {
                Fit::Matches { watts, notes } => {
                    for (&i, w) in cpu.iter().zip(watts) {
                        out.watts[i] = w;
                    }
                    out.notes.extend(notes);
                }
                Fit::Mismatch(why) if cpu.len() == domains.len() => {
                    out.ignored = Some(why);
                    return out;
                }
                Fit::Mismatch(why) => out.notes.push(format!("not for the CPU domains: {why}")),
            }
        }
        let mut missing = Vec::new();
        for (i, d) in domains.iter().enumerate() {
            if d.category() == Category::Cpu {
                continue;
            }
            let found = self.domains.iter().find(|b| {
                b.name == d.name
                    && b.kind == d.kind.name()
                    && b.interface.as_deref().unwrap_or(&self.interface) == d.source.name()
                    && b.device.as_ref().is_none_or(|dev| *dev == d.device)
            });
            match found {
                Some(b) => out.watts[i] = Some(b.mean_w),
                None => missing.push(d.name.as_str()),
            }
        }
        if !missing.is_empty() {
            out.notes.push(format!(
                "no idle power for {} (not measured when it was calibrated): {} without a baseline until `joulerun --basepower` is run again",
                missing.join(", "),
                if missing.len() == 1 { "it runs" } else { "they run" }
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use crate::sources::DomainKind;

    #[test]
    fn matching_machine() {
        let b = sample();
        let d = domains();
        match b.check(&machine(), SourceKind::Powercap, &d) {
            Fit::Matches { watts, notes } => {
                assert_eq!(watts, vec![Some(21.0), Some(3.0), Some(18.0)]);
                assert!(notes.is_empty());
            }
            f => panic!("{f:?}"),
        }
        // A subset, in another order (`-e package`): still matches, aligned to the run.
        let sub = [d[2].clone(), d[0].clone()];
        assert_eq!(
            b.check(&machine(), SourceKind::Powercap, &sub),
            Fit::Matches {
                watts: vec![Some(18.0), Some(21.0)],
                notes: vec![]
            }
        );
        // Another kernel: matches with a note.
        let mut m = machine();
        m.kernel = "6.9.1".to_string();
        match b.check(&m, SourceKind::Powercap, &d) {
            Fit::Matches { notes, .. } => {
                assert_eq!(notes.len(), 1);
                assert!(notes[0].contains("6.8.0") && notes[0].contains("6.9.1"));
            }
            f => panic!("{f:?}"),
        }
    }

    #[test]
    fn mismatched_machine() {
        let b = sample();
        let mut m = machine();
        m.hostname = "laptop".to_string();
        m.cpu_model = "AMD Ryzen 7 5800U".to_string();
        match b.check(&m, SourceKind::Powercap, &domains()) {
            Fit::Mismatch(r) => assert_eq!(
                r,
                "the baseline was taken on host box (CPU Intel(R) Xeon(R) Gold 6130), this is \
                 host laptop (CPU AMD Ryzen 7 5800U)"
            ),
            f => panic!("{f:?}"),
        }
        // Same host, new CPU.
        let mut m = machine();
        m.cpu_model = "other".to_string();
        assert!(matches!(
            b.check(&m, SourceKind::Powercap, &domains()),
            Fit::Mismatch(_)
        ));
        // Another interface.
        match b.check(&machine(), SourceKind::Perf, &domains()) {
            Fit::Mismatch(r) => assert!(r.contains("powercap") && r.contains("perf"), "{r}"),
            f => panic!("{f:?}"),
        }
    }

    #[test]
    fn mismatched_domains() {
        let b = sample();
        let mut d = domains();
        d.push(Domain::new(DomainKind::Dram, Some(1), SourceKind::Powercap));
        d.push(Domain::new(DomainKind::Psys, None, SourceKind::Powercap));
        match b.check(&machine(), SourceKind::Powercap, &d) {
            Fit::Mismatch(r) => {
                assert!(r.contains("no dram-1, psys"), "{r}");
                assert!(r.contains("package-0, dram-0, package-1"), "{r}");
            }
            f => panic!("{f:?}"),
        }
    }

    #[test]
    fn cpu_model_parsing() {
        let x86 =
            "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R)  Core(TM) i7\n";
        assert_eq!(parse_cpu_model(x86), "Intel(R) Core(TM) i7");
        let arm = "processor\t: 0\nBogoMIPS\t: 48.00\nHardware\t: BCM2835\n";
        assert_eq!(parse_cpu_model(arm), "BCM2835");
        assert_eq!(parse_cpu_model(""), "unknown");
        assert_eq!(parse_cpu_model("garbage\n:::\n"), "unknown");
    }

    #[test]
    fn current_machine_does_not_panic() {
        let m = MachineIdentity::current();
        assert!(!m.hostname.is_empty() && !m.kernel.is_empty() && !m.cpu_model.is_empty());
    }

    #[test]
    fn a_machine_that_gained_a_gpu_keeps_its_cpu_baseline() {
        use crate::sources::{Device, Place};
        let b = sample();
        let mut d = domains();
        let gpu = Domain::on_device(
            "gpu-0",
            DomainKind::Gpu,
            Device::Gpu {
                index: 0,
                uuid: None,
                name: Some("amdgpu".into()),
            },
            SourceKind::Hwmon,
        );
        d.push(gpu.clone());
        let f = b.fit(&machine(), &d);
        assert_eq!(f.ignored, None);
        assert_eq!(f.watts, vec![Some(21.0), Some(3.0), Some(18.0), None]);
        assert!(
            f.notes[0].contains("no idle power for gpu-0"),
            "{:?}",
            f.notes
        );
        // Calibrated with the GPU: it gets its own value; another GPU does not.
        let mut with_gpu = b.clone();
        with_gpu.domains.push(super::super::BaselineDomain {
            name: "gpu-0".into(),
            kind: "gpu".into(),
            socket: None,
            mean_w: 30.0,
            stddev_w: 1.0,
            min_w: 29.0,
            max_w: 31.0,
            samples: 10,
            interface: Some("hwmon".into()),
            device: Some(gpu.device.clone()),
        });
        assert_eq!(with_gpu.fit(&machine(), &d).watts[3], Some(30.0));
        let mut other = d.clone();
        other[3].device = Device::Gpu {
            index: 0,
            uuid: Some("GPU-ffff".into()),
            name: None,
        };
        assert_eq!(with_gpu.fit(&machine(), &other).watts[3], None);
        // A whole-machine domain is matched the same way.
        let chassis = Domain::on_device(
            "chassis",
            DomainKind::Chassis,
            Device::Chassis,
            SourceKind::Hwmon,
        )
        .placed(Place::Whole);
        assert_eq!(b.fit(&machine(), &[chassis]).watts, vec![None]);
        // Another host: the whole file is ignored.
        let mut m = machine();
        m.hostname = "elsewhere".into();
        assert!(b.fit(&m, &d).ignored.is_some());
        // CPU domains through another interface, beside a GPU: the GPU part still fits.
        let mut perf = d.clone();
        for x in perf.iter_mut().take(3) {
            x.source = SourceKind::Perf;
        }
        let f = with_gpu.fit(&machine(), &perf);
        assert_eq!(f.watts, vec![None, None, None, Some(30.0)]);
        assert!(
            f.notes
                .iter()
                .any(|n| n.starts_with("not for the CPU domains")),
            "{:?}",
            f.notes
        );
    }
}
