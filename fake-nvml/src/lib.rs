//! A fake `libnvidia-ml.so` for joulerun's tests: the C entry points nvml-wrapper uses,
//! answering from a script file instead of a driver. joulerun loads it by path
//! (`--nvml-lib`, `JOULERUN_NVML_LIB`) through the code that loads the real library.
//!
//! The script is the file named by `JOULERUN_FAKE_NVML`, read at `nvmlInit_v2` and again
//! whenever it changes (size or modification time), so a test can change the GPUs' power
//! or processes while a run goes on. Without it, `nvmlInit_v2` answers
//! `NVML_ERROR_DRIVER_NOT_LOADED`. One statement a line, `#` starts a comment:
//!
//! ```text
//! init CODE                      nvmlInit_v2 returns CODE (0: success; 9 driver not
//!                                loaded, 18 library/driver mismatch, 4 no permission)
//! gpu uuid=GPU-... name="NVIDIA A100" energy=yes|no power=W[@S],W@S,... step_ms=100
//!     mig=MIG-a,MIG-b            one GPU per line, indexed from 0 in order: `energy=no`
//!                                answers NOT_SUPPORTED for the energy counter (a
//!                                pre-Volta part); `power` is piecewise constant from S
//!                                seconds after nvmlInit_v2; the energy counter (mJ,
//!                                starting at 1e6) integrates it and moves in steps of
//!                                `step_ms`; `mig` lists MIG instances (MIG mode on)
//! util gpu=N pid=P sm=U [mem=U]  one utilisation sample of P, stamped now, on every query
//! proc gpu=N pid=P [mem=BYTES]   P holds a compute context on GPU N
//! fail gpu=N call=C code=E [after=K]
//!                                call C (energy, power, util, procs, name, uuid, or any)
//!                                of GPU N answers E after K successful measurement reads
//!                                (energy and power calls) of that GPU, 0 by default. With
//!                                `call=any` and code 15 (GPU_IS_LOST) the GPU is lost.
//! ```
//!
//! Built twice: `fake-nvml` (libfake_nvml.so) and `fake-nvml-old` (libfake_nvml_old.so,
//! the `old-driver` feature: no `nvmlDeviceGetTotalEnergyConsumption` symbol at all).
//! Test doubles only: never shipped, never a dependency of joulerun.

#![allow(non_snake_case)]
#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_char, c_uint, c_ulonglong, c_void};
use std::sync::{Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

type Ret = c_uint;
type Handle = *mut c_void;

const SUCCESS: Ret = 0;
const UNINITIALIZED: Ret = 1;
const INVALID_ARGUMENT: Ret = 2;
const NOT_SUPPORTED: Ret = 3;
const NOT_FOUND: Ret = 6;
const INSUFFICIENT_SIZE: Ret = 7;
const DRIVER_NOT_LOADED: Ret = 9;

/// The environment variable naming the script.
pub const SCRIPT_VAR: &str = "JOULERUN_FAKE_NVML";

#[derive(Clone, Debug, Default)]
#[cfg_attr(feature = "old-driver", allow(dead_code))]
struct Gpu {
    uuid: String,
    name: String,
    energy: bool,
    /// (from seconds after init, watts), ascending.
    power: Vec<(f64, f64)>,
    step_ms: u64,
    mig: Vec<String>,
}

#[derive(Clone, Debug)]
struct Fail {
    gpu: usize,
    call: String,
    code: Ret,
    after: u64,
}

#[derive(Clone, Debug, Default)]
struct Script {
    init: Ret,
    gpus: Vec<Gpu>,
    /// (gpu, pid, sm, mem)
    util: Vec<(usize, u32, u32, u32)>,
    /// (gpu, pid, mem)
    procs: Vec<(usize, u32, u64)>,
    fails: Vec<Fail>,
}

/// Per GPU: the energy integrated until `base_t` (seconds after init) under earlier
/// scripts, and the measurement reads answered so far.
#[derive(Clone, Debug, Default)]
struct GpuState {
    base_mj: f64,
    base_t: f64,
    reads: u64,
}

struct State {
    script: Script,
    stamp: Option<(u64, SystemTime)>,
    path: String,
    t0: Instant,
    gpus: Vec<GpuState>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn lock() -> MutexGuard<'static, Option<State>> {
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// `key=value` tokens of a line; values may be double-quoted to hold spaces.
fn tokens(line: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().to_string();
        let after = &rest[eq + 1..];
        let (val, next) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (q[..end].to_string(), &q[end + 1..]),
                None => (q.to_string(), ""),
            }
        } else {
            match after.find(char::is_whitespace) {
                Some(end) => (after[..end].to_string(), &after[end..]),
                None => (after.to_string(), ""),
            }
        };
        out.push((key, val));
        rest = next.trim_start();
    }
    out
}

fn parse(text: &str) -> Script {
    let mut s = Script::default();
    for raw in text.lines() {
        let line = raw.split('#').next().unwrap_or("").trim();
        let (word, rest) = match line.split_once(char::is_whitespace) {
            Some((w, r)) => (w, r),
            None => (line, ""),
        };
        let kv = tokens(rest);
        let get = |k: &str| kv.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        let num = |k: &str, d: u64| get(k).and_then(|v| v.parse().ok()).unwrap_or(d);
        match word {
            "init" => s.init = rest.trim().parse().unwrap_or(0),
            "gpu" => {
                let i = s.gpus.len();
                let power = get("power")
                    .unwrap_or("0")
                    .split(',')
                    .filter_map(|p| {
                        let (w, at) = p.split_once('@').unwrap_or((p, "0"));
                        Some((at.parse().ok()?, w.parse().ok()?))
                    })
                    .collect();
                s.gpus.push(Gpu {
                    uuid: get("uuid")
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("GPU-{i:08x}-0000-0000-0000-000000000000")),
                    name: get("name").unwrap_or("NVIDIA Fake GPU").to_string(),
                    energy: get("energy") != Some("no"),
                    power,
                    step_ms: num("step_ms", 100).max(1),
                    mig: get("mig")
                        .map(|m| m.split(',').map(str::to_string).collect())
                        .unwrap_or_default(),
                });
            }
            "util" => s.util.push((
                num("gpu", 0) as usize,
                num("pid", 0) as u32,
                num("sm", 0) as u32,
                num("mem", 0) as u32,
            )),
            "proc" => s.procs.push((
                num("gpu", 0) as usize,
                num("pid", 0) as u32,
                num("mem", 1 << 20),
            )),
            "fail" => s.fails.push(Fail {
                gpu: num("gpu", 0) as usize,
                call: get("call").unwrap_or("any").to_string(),
                code: num("code", NOT_SUPPORTED as u64) as Ret,
                after: num("after", 0),
            }),
            _ => {}
        }
    }
    s
}

fn file_stamp(path: &str) -> Option<(u64, SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// Watts of `g` at `t` seconds after init.
fn power_at(g: &Gpu, t: f64) -> f64 {
    let mut w = 0.0;
    for &(at, watts) in &g.power {
        if at <= t {
            w = watts;
        }
    }
    w
}

/// Joules of `g` from `a` to `b` seconds after init (its piecewise-constant power).
fn energy_between(g: &Gpu, a: f64, b: f64) -> f64 {
    if b <= a {
        return 0.0;
    }
    let mut cuts: Vec<f64> = vec![a];
    cuts.extend(g.power.iter().map(|p| p.0).filter(|&t| t > a && t < b));
    cuts.push(b);
    cuts.windows(2)
        .map(|w| power_at(g, w[0]) * (w[1] - w[0]))
        .sum()
}

impl State {
    fn now(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    /// Re-read the script if it changed: energy so far is kept under the old one.
    fn refresh(&mut self) {
        let stamp = file_stamp(&self.path);
        if stamp == self.stamp {
            return;
        }
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return;
        };
        let t = self.now();
        for (i, st) in self.gpus.iter_mut().enumerate() {
            if let Some(g) = self.script.gpus.get(i) {
                st.base_mj += 1e3 * energy_between(g, st.base_t, t);
                st.base_t = t;
            }
        }
        self.script = parse(&text);
        self.stamp = stamp;
        while self.gpus.len() < self.script.gpus.len() {
            self.gpus.push(GpuState {
                base_mj: 1e6,
                base_t: t,
                reads: 0,
            });
        }
    }

    /// The injected failure of `call` on GPU `i`, if one applies now.
    fn failure(&self, i: usize, call: &str) -> Option<Ret> {
        let reads = self.gpus.get(i).map_or(0, |g| g.reads);
        self.script
            .fails
            .iter()
            .find(|f| f.gpu == i && (f.call == call || f.call == "any") && reads >= f.after)
            .map(|f| f.code)
    }
}

/// Run `f` on the state of GPU `dev` (refreshed), or answer the error.
fn with_gpu(dev: Handle, call: &str, f: impl FnOnce(&mut State, usize) -> Ret) -> Ret {
    let mut guard = lock();
    let Some(st) = guard.as_mut() else {
        return UNINITIALIZED;
    };
    st.refresh();
    let i = dev as usize;
    if i == 0 || i > st.script.gpus.len() {
        return INVALID_ARGUMENT;
    }
    let i = i - 1;
    if let Some(code) = st.failure(i, call) {
        return code;
    }
    f(st, i)
}

fn write_str(s: &str, buf: *mut c_char, len: c_uint) -> Ret {
    if buf.is_null() {
        return INVALID_ARGUMENT;
    }
    let bytes = s.as_bytes();
    if bytes.len() + 1 > len as usize {
        return INSUFFICIENT_SIZE;
    }
    // SAFETY: the caller gave `len` writable bytes; we write at most len.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf as *mut u8, bytes.len());
        *buf.add(bytes.len()) = 0;
    }
    SUCCESS
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlInit_v2() -> Ret {
    let Some(path) = std::env::var_os(SCRIPT_VAR) else {
        return DRIVER_NOT_LOADED;
    };
    let path = path.to_string_lossy().into_owned();
    let Ok(text) = std::fs::read_to_string(&path) else {
        return DRIVER_NOT_LOADED;
    };
    let script = parse(&text);
    if script.init != SUCCESS {
        return script.init;
    }
    let gpus = vec![
        GpuState {
            base_mj: 1e6,
            base_t: 0.0,
            reads: 0,
        };
        script.gpus.len()
    ];
    *lock() = Some(State {
        stamp: file_stamp(&path),
        script,
        path,
        t0: Instant::now(),
        gpus,
    });
    SUCCESS
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlInitWithFlags(_flags: c_uint) -> Ret {
    nvmlInit_v2()
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlShutdown() -> Ret {
    *lock() = None;
    SUCCESS
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlErrorString(_result: Ret) -> *const c_char {
    c"fake NVML error".as_ptr()
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetDriverVersion(version: *mut c_char, len: c_uint) -> Ret {
    write_str("550.00.fake", version, len)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCount_v2(count: *mut c_uint) -> Ret {
    let mut guard = lock();
    let Some(st) = guard.as_mut() else {
        return UNINITIALIZED;
    };
    st.refresh();
    if count.is_null() {
        return INVALID_ARGUMENT;
    }
    // SAFETY: non-null out pointer from the caller.
    unsafe { *count = st.script.gpus.len() as c_uint };
    SUCCESS
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex_v2(index: c_uint, device: *mut Handle) -> Ret {
    let guard = lock();
    let Some(st) = guard.as_ref() else {
        return UNINITIALIZED;
    };
    if device.is_null() || index as usize >= st.script.gpus.len() {
        return INVALID_ARGUMENT;
    }
    // SAFETY: non-null out pointer. Handles are index + 1, never dereferenced.
    unsafe { *device = (index as usize + 1) as Handle };
    SUCCESS
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetIndex(device: Handle, index: *mut c_uint) -> Ret {
    with_gpu(device, "index", |_, i| {
        // SAFETY: out pointer from the caller.
        unsafe { *index = i as c_uint };
        SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetName(device: Handle, name: *mut c_char, len: c_uint) -> Ret {
    with_gpu(device, "name", |st, i| {
        write_str(&st.script.gpus[i].name, name, len)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetUUID(device: Handle, uuid: *mut c_char, len: c_uint) -> Ret {
    if device as usize >= MIG_BASE {
        return mig_uuid(device, uuid, len);
    }
    with_gpu(device, "uuid", |st, i| {
        write_str(&st.script.gpus[i].uuid, uuid, len)
    })
}

#[cfg(not(feature = "old-driver"))]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetTotalEnergyConsumption(
    device: Handle,
    energy: *mut c_ulonglong,
) -> Ret {
    with_gpu(device, "energy", |st, i| {
        let t = st.now();
        let g = &st.script.gpus[i];
        if !g.energy {
            return NOT_SUPPORTED;
        }
        if energy.is_null() {
            return INVALID_ARGUMENT;
        }
        // The counter moves only at multiples of its step after init.
        let step = g.step_ms as f64 / 1e3;
        let t_q = (t / step).floor() * step;
        let gs = &st.gpus[i];
        let mj = if t_q >= gs.base_t {
            gs.base_mj + 1e3 * energy_between(g, gs.base_t, t_q)
        } else {
            gs.base_mj
        };
        // SAFETY: non-null out pointer.
        unsafe { *energy = mj as c_ulonglong };
        st.gpus[i].reads += 1;
        SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPowerUsage(device: Handle, power: *mut c_uint) -> Ret {
    with_gpu(device, "power", |st, i| {
        if power.is_null() {
            return INVALID_ARGUMENT;
        }
        let w = power_at(&st.script.gpus[i], st.now());
        // SAFETY: non-null out pointer.
        unsafe { *power = (w * 1e3).round() as c_uint };
        st.gpus[i].reads += 1;
        SUCCESS
    })
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ProcessUtilizationSample {
    pid: c_uint,
    time_stamp: c_ulonglong,
    sm_util: c_uint,
    mem_util: c_uint,
    enc_util: c_uint,
    dec_util: c_uint,
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetProcessUtilization(
    device: Handle,
    utilization: *mut ProcessUtilizationSample,
    count: *mut c_uint,
    last_seen: c_ulonglong,
) -> Ret {
    with_gpu(device, "util", |st, i| {
        if count.is_null() {
            return INVALID_ARGUMENT;
        }
        if !st.script.gpus[i].mig.is_empty() {
            // Not on MIG, like the real library.
            return NOT_SUPPORTED;
        }
        let ts = now_us();
        let samples: Vec<ProcessUtilizationSample> = st
            .script
            .util
            .iter()
            .filter(|u| u.0 == i && ts > last_seen)
            .map(|u| ProcessUtilizationSample {
                pid: u.1,
                time_stamp: ts,
                sm_util: u.2,
                mem_util: u.3,
                enc_util: 0,
                dec_util: 0,
            })
            .collect();
        // SAFETY: count and the buffer come from the caller, the buffer `*count` long.
        unsafe {
            if samples.is_empty() {
                *count = 0;
                return NOT_FOUND;
            }
            if utilization.is_null() || (*count as usize) < samples.len() {
                *count = samples.len() as c_uint;
                return INSUFFICIENT_SIZE;
            }
            std::ptr::copy_nonoverlapping(samples.as_ptr(), utilization, samples.len());
            *count = samples.len() as c_uint;
        }
        SUCCESS
    })
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ProcessInfo {
    pid: c_uint,
    used_gpu_memory: c_ulonglong,
    gpu_instance_id: c_uint,
    compute_instance_id: c_uint,
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetComputeRunningProcesses_v3(
    device: Handle,
    count: *mut c_uint,
    infos: *mut ProcessInfo,
) -> Ret {
    with_gpu(device, "procs", |st, i| {
        if count.is_null() {
            return INVALID_ARGUMENT;
        }
        let list: Vec<ProcessInfo> = st
            .script
            .procs
            .iter()
            .filter(|p| p.0 == i)
            .map(|p| ProcessInfo {
                pid: p.1,
                used_gpu_memory: p.2,
                gpu_instance_id: u32::MAX,
                compute_instance_id: u32::MAX,
            })
            .collect();
        // SAFETY: as above.
        unsafe {
            if list.is_empty() {
                *count = 0;
                return SUCCESS;
            }
            if infos.is_null() || (*count as usize) < list.len() {
                *count = list.len() as c_uint;
                return INSUFFICIENT_SIZE;
            }
            std::ptr::copy_nonoverlapping(list.as_ptr(), infos, list.len());
            *count = list.len() as c_uint;
        }
        SUCCESS
    })
}

/// MIG instance handles: 0x10000 + gpu * 256 + instance, answered for the uuid only.
const MIG_BASE: usize = 0x10000;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMigMode(
    device: Handle,
    current: *mut c_uint,
    pending: *mut c_uint,
) -> Ret {
    with_gpu(device, "mig", |st, i| {
        let on = !st.script.gpus[i].mig.is_empty() as c_uint;
        // SAFETY: out pointers from the caller.
        unsafe {
            *current = on;
            *pending = on;
        }
        SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMaxMigDeviceCount(device: Handle, count: *mut c_uint) -> Ret {
    with_gpu(device, "mig", |st, i| {
        // SAFETY: out pointer from the caller.
        unsafe { *count = st.script.gpus[i].mig.len() as c_uint };
        SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMigDeviceHandleByIndex(
    device: Handle,
    index: c_uint,
    mig: *mut Handle,
) -> Ret {
    with_gpu(device, "mig", |st, i| {
        if index as usize >= st.script.gpus[i].mig.len() {
            return NOT_FOUND;
        }
        // SAFETY: out pointer from the caller.
        unsafe { *mig = (MIG_BASE + i * 256 + index as usize) as Handle };
        SUCCESS
    })
}

/// The uuid of a MIG handle, for `nvmlDeviceGetUUID` on one.
fn mig_uuid(device: Handle, uuid: *mut c_char, len: c_uint) -> Ret {
    let h = device as usize;
    if h < MIG_BASE {
        return INVALID_ARGUMENT;
    }
    let (gpu, k) = ((h - MIG_BASE) / 256, (h - MIG_BASE) % 256);
    let guard = lock();
    let Some(st) = guard.as_ref() else {
        return UNINITIALIZED;
    };
    match st.script.gpus.get(gpu).and_then(|g| g.mig.get(k)) {
        Some(u) => write_str(u, uuid, len),
        None => INVALID_ARGUMENT,
    }
}
