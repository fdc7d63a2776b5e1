//! NVIDIA GPUs through NVML (issue 9): each GPU's energy, and the command's share of it.
//!
//! Loading: `libnvidia-ml.so.1` through the dynamic loader, or the file named by
//! `--nvml-lib` / `JOULERUN_NVML_LIB`, at run time (nvml-wrapper, libloading): joulerun
//! builds and runs where no NVIDIA library exists, and then has no NVML GPUs. Symbols
//! are looked up when the library loads, but a missing one only fails the call that
//! needs it (`FailedToLoadSymbol`): an old library lacks a feature, never panics.
//! Failing to initialise is [`Unavailable`] with the reason and the fix ([`init_error`]).
//!
//! Which GPUs: `--gpus LIST|all`, else `CUDA_VISIBLE_DEVICES` when set, else all
//! ([`visible`]). One domain per GPU, `gpu-N` with N its NVML index (the order of
//! `nvidia-smi`, PCI bus order), [`Device::Gpu`] with its uuid and name, a [`Place::Part`]
//! of the machine.
//!
//! Energy per GPU: the cumulative `nvmlDeviceGetTotalEnergyConsumption` (mJ, Volta and
//! newer; a [`Reading::Counter`]), else `nvmlDeviceGetPowerUsage` (mW; a
//! [`Reading::Power`] integrated by the shared integrator). The counter steps every 10
//! to 100 ms: a read that finds it where it was is [`Reading::Unchanged`], so each
//! interval runs from one step to the next. The power is a 1 s trailing average on
//! Ampere and newer. Each domain's [`MeasureDetail`] states the method and its
//! resolution; reports flag runs too short for it.
//!
//! Cadence: [`Cadence::Every`]`(`[`PERIOD`]`)`, on a reader thread: NVML calls can take
//! milliseconds and never hold up the CPU tick.
//!
//! Usage: after each read, per GPU, the command's share of that read's window from
//! `nvmlDeviceGetProcessUtilization` (since the last sample seen) and
//! `nvmlDeviceGetComputeRunningProcesses`, filtered by the command's PIDs
//! ([`OpenContext::command_pids`], mapped to host PIDs by [`hostpid`]), by the rules of
//! [`share`]. Reads that return `Unchanged` add their windows to the next interval's.
//!
//! Faults: NOT_SUPPORTED is per call and per GPU (a GPU without the counter uses power; one
//! without utilisation samples falls back to the equal split; one without either process
//! query gives no usage, and its share is modelled). GPU_IS_LOST, and errors that mean
//! the driver is gone, end that GPU ([`ReadError::gone`]): its energy until then is kept
//! and reported partial; the other GPUs and the CPU go on.

pub mod hostpid;
pub mod share;
pub mod visible;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nvml_wrapper::Nvml;
use nvml_wrapper::error::NvmlError;

use super::{
    Cadence, CommandPids, Device, Domain, DomainKind, IntervalUsage, MeasureDetail, OpenContext,
    ReadError, Reading, Source, SourceKind, Unavailable, UnavailableKind, UsageMethod, Wrap,
};
use hostpid::{Namespace, PidMapper};
use share::Sample;

/// How often the GPUs are read: the energy counter's slowest documented update period.
pub const PERIOD: Duration = Duration::from_millis(100);

/// The resolution of the energy counter: it steps every 10 to 100 ms; the worst case.
pub const COUNTER_RESOLUTION_S: f64 = 0.1;

/// The resolution of the power reading: a 1 s trailing average on Ampere and newer.
pub const POWER_RESOLUTION_S: f64 = 1.0;

/// Reads for which the last utilisation samples still count when no new ones arrived
/// (NVML samples utilisation every 1/6 s to 1 s, depending on the GPU): 1 s at [`PERIOD`].
pub const UTIL_HOLD_READS: u32 = 10;

/// The library loaded when none is named.
pub const DEFAULT_LIB: &str = "libnvidia-ml.so.1";

/// The environment variable naming the library (like `--nvml-lib`).
pub const LIB_ENV: &str = "JOULERUN_NVML_LIB";

/// What the plan decided for NVML.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NvmlOptions {
    /// The library to load and where it was named (`--nvml-lib`, `JOULERUN_NVML_LIB`);
    /// `None`: [`DEFAULT_LIB`] through the dynamic loader.
    pub lib: Option<(PathBuf, String)>,
    /// `--gpus`: `Some(None)` for all, `Some(Some(list))`; `None`: follow
    /// `CUDA_VISIBLE_DEVICES`.
    pub gpus_flag: Option<Option<String>>,
    /// `CUDA_VISIBLE_DEVICES` as the command inherits it.
    pub cuda_visible: Option<String>,
    /// `CUDA_DEVICE_ORDER=PCI_BUS_ID`: CUDA's indices are NVML's.
    pub pci_order: bool,
}

impl NvmlOptions {
    /// Resolve `--nvml-lib` (or `JOULERUN_NVML_LIB`), `--gpus`, `CUDA_VISIBLE_DEVICES` and
    /// `CUDA_DEVICE_ORDER`. A named library that does not exist, or a malformed `--gpus`,
    /// is a usage error naming where it came from.
    pub fn resolve(
        lib_flag: Option<&Path>,
        gpus_flag: Option<&str>,
        env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
    ) -> crate::error::Result<NvmlOptions> {
        use crate::error::Error;
        let lib = match lib_flag {
            Some(p) => Some((p.to_path_buf(), "--nvml-lib".to_string())),
            None => env(LIB_ENV)
                .filter(|v| !v.is_empty())
                .map(|v| (PathBuf::from(v), LIB_ENV.to_string())),
        };
        if let Some((p, origin)) = &lib
            && !p.is_file()
        {
            return Err(Error::usage(format!(
                "the NVML library '{}' (from {origin}) is not a file: give the path of libnvidia-ml.so, or leave {origin} out to use the driver's",
                crate::text::escape_line(&p.display().to_string())
            )));
        }
        let gpus_flag = match gpus_flag {
            Some(v) => Some(visible::check_gpus_flag(v).map_err(Error::usage)?),
            None => None,
        };
        let var = |k: &str| env(k).map(|v| v.to_string_lossy().into_owned());
        Ok(NvmlOptions {
            lib,
            gpus_flag,
            cuda_visible: var("CUDA_VISIBLE_DEVICES"),
            pci_order: var("CUDA_DEVICE_ORDER").is_some_and(|v| v.trim() == "PCI_BUS_ID"),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Counter,
    Power,
}

impl Method {
    fn detail(self) -> MeasureDetail {
        match self {
            Method::Counter => MeasureDetail {
                method: "energy counter",
                resolution_s: COUNTER_RESOLUTION_S,
                resolution_of: "energy counter's update period",
            },
            Method::Power => MeasureDetail {
                method: "power (integrated)",
                resolution_s: POWER_RESOLUTION_S,
                resolution_of: "power reading's averaging window",
            },
        }
    }
}

/// One GPU's state between reads.
struct Gpu {
    index: u32,
    method: Method,
    last_mj: Option<u64>,
    gone: bool,
    util_ok: bool,
    procs_ok: bool,
    last_seen_us: u64,
    held: Vec<Sample>,
    held_reads: u32,
    /// Usage of the reads since the last interval ended: the sum of their shares, their
    /// count, and how many reads each method gave.
    acc_share: f64,
    acc_reads: f64,
    tally: [u32; 4],
    /// The usage of the interval that ended at the last read.
    ready: Option<IntervalUsage>,
    /// Scratch.
    samples: Vec<Sample>,
    compute: Vec<u32>,
}

pub struct NvmlSource {
    nvml: Nvml,
    gpus: Vec<Gpu>,
    domains: Vec<Domain>,
    warnings: Vec<String>,
    pids: Option<Arc<CommandPids>>,
    mapper: Option<PidMapper>,
    cmd_raw: Vec<i32>,
    cmd_host: Vec<u32>,
}

/// Why NVML could not be initialised, with the fix (`lib`: what was loaded and from where).
pub fn init_error(e: &NvmlError, lib: &str, named: Option<&str>) -> Unavailable {
    let u = |kind, reason: String, fix: &str| {
        Unavailable::new(SourceKind::Nvml, kind, reason, Some(fix.to_string()))
    };
    match e {
        NvmlError::LibloadingError(err) => match named {
            None => u(
                UnavailableKind::NotPresent,
                format!("cannot load {lib}: library not found ({err})"),
                "install the NVIDIA driver (it provides libnvidia-ml.so.1), or give the library's path with --nvml-lib PATH or JOULERUN_NVML_LIB",
            ),
            Some(origin) => u(
                UnavailableKind::Invalid,
                format!("cannot load {lib} (from {origin}): {err}"),
                "check the path: it must be NVIDIA's libnvidia-ml.so",
            ),
        },
        NvmlError::FailedToLoadSymbol(s) => u(
            UnavailableKind::Invalid,
            format!("{lib} is not a usable NVML library: {s}"),
            "point --nvml-lib or JOULERUN_NVML_LIB at NVIDIA's libnvidia-ml.so",
        ),
        NvmlError::DriverNotLoaded => u(
            UnavailableKind::NotPresent,
            format!("{lib}: the NVIDIA kernel driver is not loaded"),
            "load it (`modprobe nvidia`) or install the NVIDIA driver",
        ),
        NvmlError::LibRmVersionMismatch => u(
            UnavailableKind::Invalid,
            format!(
                "{lib}: driver/library mismatch (the library and the loaded kernel module are different versions)"
            ),
            "reboot after a driver update, or reload the nvidia kernel module",
        ),
        NvmlError::NoPermission => u(
            UnavailableKind::Permission,
            format!("{lib}: no permission to use the GPUs (/dev/nvidia*)"),
            "give this user read and write access to /dev/nvidiactl and /dev/nvidia* (often the `video` group), or run as root",
        ),
        other => u(
            UnavailableKind::Invalid,
            format!("{lib}: nvmlInit failed: {other}"),
            "check the driver with `nvidia-smi`",
        ),
    }
}

/// Whether an error means the GPU (or the driver) is gone for good.
fn is_gone(e: &NvmlError) -> bool {
    matches!(
        e,
        NvmlError::GpuLost
            | NvmlError::Uninitialized
            | NvmlError::DriverNotLoaded
            | NvmlError::ResetRequired
            | NvmlError::LibRmVersionMismatch
    )
}

fn not_supported(e: &NvmlError) -> bool {
    matches!(
        e,
        NvmlError::NotSupported | NvmlError::FailedToLoadSymbol(_)
    )
}

fn read_error(index: u32, call: &str, e: &NvmlError) -> ReadError {
    let msg = format!("NVML {call} of GPU {index}: {e}");
    if is_gone(e) {
        ReadError::gone(msg)
    } else {
        ReadError::new(msg)
    }
}

impl NvmlSource {
    pub fn open(ctx: &OpenContext) -> Result<NvmlSource, Unavailable> {
        let o = &ctx.nvml;
        let (lib, named): (PathBuf, Option<&str>) = match &o.lib {
            Some((p, origin)) => (p.clone(), Some(origin.as_str())),
            None => (PathBuf::from(DEFAULT_LIB), None),
        };
        let shown = lib.display().to_string();
        let nvml = Nvml::builder()
            .lib_path(OsStr::new(lib.as_os_str()))
            .init()
            .map_err(|e| init_error(&e, &shown, named))?;
        let invalid = |reason: String| {
            Unavailable::new(SourceKind::Nvml, UnavailableKind::Invalid, reason, None)
        };
        let count = nvml
            .device_count()
            .map_err(|e| invalid(format!("{shown}: nvmlDeviceGetCount: {e}")))?;
        if count == 0 {
            return Err(Unavailable::new(
                SourceKind::Nvml,
                UnavailableKind::NotPresent,
                format!("{shown}: NVML sees no GPU"),
                None,
            ));
        }
        let list: Option<(String, &str)> = match &o.gpus_flag {
            Some(None) => None,
            Some(Some(l)) => Some((l.clone(), "--gpus")),
            None => o.cuda_visible.clone().map(|l| (l, "CUDA_VISIBLE_DEVICES")),
        };
        let want_mig = list
            .as_ref()
            .is_some_and(|(l, _)| l.to_ascii_uppercase().contains("MIG-"));
        let mut idents = Vec::new();
        let mut names = Vec::new();
        let mut warnings = Vec::new();
        for i in 0..count {
            let dev = match nvml.device_by_index(i) {
                Ok(d) => d,
                Err(e) => {
                    warnings.push(format!("NVML: GPU {i} cannot be opened: {e}"));
                    continue;
                }
            };
            let uuid = dev.uuid().unwrap_or_default();
            let mut mig = Vec::new();
            if want_mig && let Ok(n) = dev.mig_device_count() {
                for k in 0..n {
                    if let Ok(u) = dev.mig_device_by_index(k).and_then(|m| m.uuid()) {
                        mig.push(u);
                    }
                }
            }
            names.push(dev.name().ok());
            idents.push(visible::GpuIdent {
                index: i,
                uuid,
                mig,
            });
        }
        let same_model = names.windows(2).all(|w| w[0] == w[1]);
        let selected: Vec<(u32, bool)> = match &list {
            None => idents.iter().map(|g| (g.index, false)).collect(),
            Some((l, origin)) => {
                let sel = visible::resolve(l, &idents, same_model, o.pci_order);
                let shown_list = crate::text::escape_line(l).into_owned();
                if let Some(why) = &sel.stopped {
                    if *origin == "--gpus" {
                        return Err(invalid(format!("--gpus {shown_list}: {why}")));
                    }
                    warnings.push(format!(
                        "{origin}={shown_list}: {why}; like CUDA, that entry and every one after it are hidden"
                    ));
                }
                if sel.order_caveat {
                    warnings.push(format!(
                        "{origin}={shown_list}: integer indices are taken as NVML's (PCI bus order); CUDA numbers GPUs fastest first unless CUDA_DEVICE_ORDER=PCI_BUS_ID, and the GPUs here differ: name them by GPU-<uuid> to be sure"
                    ));
                }
                if sel.gpus.iter().any(|g| g.1) {
                    warnings.push(format!(
                        "{origin}={shown_list}: MIG instances are measured as their whole GPU (NVML gives energy per physical GPU), and split among the processes on it without utilisation samples (none on MIG)"
                    ));
                }
                if sel.gpus.is_empty() {
                    return Err(Unavailable::new(
                        SourceKind::Nvml,
                        UnavailableKind::Inactive,
                        format!("{origin}={shown_list} makes no GPU visible to the command"),
                        None,
                    ));
                }
                sel.gpus
            }
        };
        let mut gpus = Vec::new();
        let mut domains = Vec::new();
        for (index, _mig) in selected {
            let Ok(dev) = nvml.device_by_index(index) else {
                continue;
            };
            let method = match dev.total_energy_consumption() {
                Ok(_) => Method::Counter,
                Err(e) if not_supported(&e) => {
                    if let NvmlError::FailedToLoadSymbol(s) = &e {
                        warnings.push(format!(
                            "gpu-{index}: this NVML library has no energy counter ({s}; an old driver): its power is integrated instead"
                        ));
                    }
                    match dev.power_usage() {
                        Ok(_) => Method::Power,
                        Err(e) => {
                            warnings.push(format!(
                                "gpu-{index}: neither the energy counter nor the power can be read ({e}): not measured"
                            ));
                            continue;
                        }
                    }
                }
                Err(e) => {
                    warnings.push(format!("gpu-{index}: cannot be read ({e}): not measured"));
                    continue;
                }
            };
            let ident = idents.iter().find(|g| g.index == index);
            let name = names
                .get(
                    idents
                        .iter()
                        .position(|g| g.index == index)
                        .unwrap_or(usize::MAX),
                )
                .cloned()
                .flatten();
            domains.push(
                Domain::on_device(
                    format!("gpu-{index}"),
                    DomainKind::Gpu,
                    Device::Gpu {
                        index,
                        uuid: ident.map(|g| g.uuid.clone()).filter(|u| !u.is_empty()),
                        name,
                    },
                    SourceKind::Nvml,
                )
                .with_detail(method.detail()),
            );
            gpus.push(Gpu::new(index, method));
        }
        if gpus.is_empty() {
            return Err(invalid(format!(
                "{shown}: no selected GPU can be read ({})",
                warnings.join("; ")
            )));
        }
        let mapper = ctx
            .command_pids
            .as_ref()
            .map(|_| PidMapper::detect(Path::new("/proc")));
        if let Some(PidMapper {
            namespace: Namespace::Opaque(why),
            ..
        }) = &mapper
        {
            warnings.push(format!(
                "{why}; the GPUs' shares are modelled instead (run joulerun on the host, or in the host's PID namespace, e.g. `docker run --pid=host`)"
            ));
        }
        drop(names);
        Ok(NvmlSource {
            nvml,
            gpus,
            domains,
            warnings,
            pids: ctx.command_pids.clone(),
            mapper,
            cmd_raw: Vec::new(),
            cmd_host: Vec::new(),
        })
    }
}

const METHODS: [UsageMethod; 4] = [
    UsageMethod::SmUtilisation,
    UsageMethod::EqualSplit,
    UsageMethod::Alone,
    UsageMethod::Nobody,
];

impl Gpu {
    /// GPU `index` read by `method`, before its first reading.
    fn new(index: u32, method: Method) -> Gpu {
        Gpu {
            index,
            method,
            last_mj: None,
            gone: false,
            util_ok: true,
            procs_ok: true,
            last_seen_us: 0,
            held: Vec::new(),
            held_reads: 0,
            acc_share: 0.0,
            acc_reads: 0.0,
            tally: [0; 4],
            ready: None,
            samples: Vec::new(),
            compute: Vec::new(),
        }
    }

    /// This read window's share, from NVML's process queries; `None`: no process query
    /// works on this GPU.
    fn window(
        &mut self,
        dev: &nvml_wrapper::Device<'_>,
        command: &[u32],
    ) -> Option<(f64, UsageMethod)> {
        self.samples.clear();
        if self.util_ok {
            match dev.process_utilization_stats(self.last_seen_us) {
                Ok(v) => {
                    for s in &v {
                        self.last_seen_us = self.last_seen_us.max(s.timestamp);
                        self.samples.push(Sample {
                            pid: s.pid,
                            sm: s.sm_util,
                        });
                    }
                }
                Err(e) if not_supported(&e) => self.util_ok = false,
                // NOT_FOUND: no sample since the last one; anything else: none this time.
                Err(_) => {}
            }
        }
        self.compute.clear();
        if self.procs_ok {
            match dev.running_compute_processes() {
                Ok(v) => self.compute.extend(v.iter().map(|p| p.pid)),
                Err(e) if not_supported(&e) => self.procs_ok = false,
                Err(_) => {}
            }
        }
        if !self.util_ok && !self.procs_ok {
            return None;
        }
        if !self.samples.is_empty() {
            self.held.clear();
            self.held.extend_from_slice(&self.samples);
            self.held_reads = 0;
        } else if self.held_reads < UTIL_HOLD_READS && !self.held.is_empty() {
            // No new sample: the last ones still describe the GPU, for processes that
            // still hold a context (when that can be known).
            self.held_reads += 1;
            let procs_ok = self.procs_ok;
            let compute = &self.compute;
            self.samples.extend(
                self.held
                    .iter()
                    .filter(|s| !procs_ok || compute.contains(&s.pid)),
            );
        }
        Some(share::window_share(&self.samples, &self.compute, command))
    }

    /// Add a window's share; `ends`: this read ends an interval, whose usage is then ready.
    fn account(&mut self, w: Option<(f64, UsageMethod)>, ends: bool) {
        if let Some((s, m)) = w {
            self.acc_share += s;
            self.acc_reads += 1.0;
            if let Some(k) = METHODS.iter().position(|x| *x == m) {
                self.tally[k] += 1;
            }
        }
        if !ends {
            self.ready = None;
            return;
        }
        self.ready = (self.acc_reads > 0.0).then(|| {
            let k = (0..4).max_by_key(|&k| (self.tally[k], 4 - k)).unwrap_or(0);
            IntervalUsage {
                command: self.acc_share,
                total: self.acc_reads,
                method: METHODS[k],
            }
        });
        self.acc_share = 0.0;
        self.acc_reads = 0.0;
        self.tally = [0; 4];
    }
}

impl Source for NvmlSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Nvml
    }

    fn domains(&self) -> &[Domain] {
        &self.domains
    }

    fn cadence(&self) -> Cadence {
        Cadence::Every(PERIOD)
    }

    fn warnings(&self) -> &[String] {
        &self.warnings
    }

    fn read(&mut self, out: &mut Vec<Result<Reading, ReadError>>) {
        out.clear();
        let NvmlSource {
            nvml,
            gpus,
            pids,
            mapper,
            cmd_raw,
            cmd_host,
            ..
        } = self;
        let usage_on = match (pids.as_ref(), mapper.as_ref()) {
            (Some(p), Some(m)) => {
                p.get(cmd_raw);
                m.map(cmd_raw, cmd_host)
            }
            _ => false,
        };
        for g in gpus.iter_mut() {
            if g.gone {
                out.push(Err(ReadError::gone(format!(
                    "GPU {} was lost earlier",
                    g.index
                ))));
                g.ready = None;
                continue;
            }
            let dev = match nvml.device_by_index(g.index) {
                Ok(d) => d,
                Err(e) => {
                    g.gone |= is_gone(&e);
                    g.ready = None;
                    out.push(Err(read_error(g.index, "nvmlDeviceGetHandleByIndex", &e)));
                    continue;
                }
            };
            let reading = match g.method {
                Method::Counter => dev
                    .total_energy_consumption()
                    .map(|mj| {
                        if g.last_mj.replace(mj) == Some(mj) {
                            Reading::Unchanged
                        } else {
                            Reading::Counter {
                                value: mj,
                                wrap: Wrap::Full64,
                                joules_per_unit: 1e-3,
                            }
                        }
                    })
                    .map_err(|e| (e, "nvmlDeviceGetTotalEnergyConsumption")),
                Method::Power => dev
                    .power_usage()
                    .map(|mw| Reading::Power {
                        watts: mw as f64 / 1e3,
                    })
                    .map_err(|e| (e, "nvmlDeviceGetPowerUsage")),
            };
            match reading {
                Ok(r) => {
                    let w = if usage_on {
                        g.window(&dev, cmd_host)
                    } else {
                        None
                    };
                    g.account(w, r != Reading::Unchanged);
                    out.push(Ok(r));
                }
                Err((e, call)) => {
                    g.gone |= is_gone(&e);
                    g.last_mj = None;
                    // The interval restarts after a failure: its usage too.
                    g.account(None, true);
                    g.ready = None;
                    out.push(Err(read_error(g.index, call, &e)));
                }
            }
        }
    }

    fn usage(&self, out: &mut Vec<Option<IntervalUsage>>) {
        out.clear();
        out.extend(self.gpus.iter().map(|g| g.ready));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_is_not_present_with_the_fix() {
        let ctx = OpenContext {
            nvml: NvmlOptions {
                lib: Some((
                    PathBuf::from("/nonexistent/libnvidia-ml.so"),
                    "--nvml-lib".into(),
                )),
                ..NvmlOptions::default()
            },
            ..OpenContext::for_root(crate::sysroot::SysRoot::default())
        };
        let u = NvmlSource::open(&ctx).err().unwrap();
        assert_eq!(u.kind, UnavailableKind::Invalid);
        assert!(u.reason.contains("from --nvml-lib"), "{}", u.reason);
        let e = NvmlError::DriverNotLoaded;
        let u = init_error(&e, DEFAULT_LIB, None);
        assert_eq!(u.kind, UnavailableKind::NotPresent);
        let u = init_error(&NvmlError::LibRmVersionMismatch, DEFAULT_LIB, None);
        assert!(u.reason.contains("driver/library mismatch"), "{}", u.reason);
        let u = init_error(&NvmlError::NoPermission, DEFAULT_LIB, None);
        assert_eq!(u.kind, UnavailableKind::Permission);
        assert!(u.fix.unwrap().contains("/dev/nvidia"));
    }

    #[test]
    fn usage_spans_the_reads_of_an_interval() {
        let mut g = Gpu::new(0, Method::Counter);
        // Two unchanged reads, then one that ends the interval.
        g.account(Some((1.0, UsageMethod::Alone)), false);
        assert_eq!(g.ready, None);
        g.account(Some((0.5, UsageMethod::SmUtilisation)), false);
        g.account(Some((0.0, UsageMethod::SmUtilisation)), true);
        let u = g.ready.unwrap();
        assert_eq!((u.command, u.total), (1.5, 3.0));
        assert_eq!(u.method, UsageMethod::SmUtilisation);
        assert_eq!(u.share(), 0.5);
        // The next interval starts empty; no window at all gives no usage.
        g.account(None, true);
        assert_eq!(g.ready, None);
    }
}
