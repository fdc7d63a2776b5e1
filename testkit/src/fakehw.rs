//! Fake hardware trees for tests: a powercap sysfs tree, CPU topology files, `/proc/cpuinfo`
//! and `/dev/cpu/N/msr` files under a root directory, plus [`CounterDriver`], a thread
//! that advances counters at a known power (and holds power files, and drains battery
//! gauges: the trees of [`crate::fakehwmon`] and [`crate::fakebattery`]).
//!
//! Part of the `joulerun-testkit` crate, a dev-dependency of joulerun: it is never in the
//! shipped library or binary. It never touches anything outside the root it is given.
//!
//! The fake behaves like sysfs where readers can tell: every update is written **in
//! place** (`pwrite` at offset 0 of the same inode, never a rename), so a reader that keeps
//! the file open and re-reads it with `pread` sees the live value. Counters are written as
//! fixed-width zero-padded decimal (20 digits and a newline), so the length never changes.
//! A driven counter can also glitch once, mid-run ([`DrivenCounter::jump_when`]): a reset,
//! a step back, a forward jump or a value above its range, played when a trigger file
//! appears (a test's command creates it).
//! MSR files are sparse files holding little-endian u64 values; register R is at byte
//! `R * 8` ([`FAKE_MSR_STRIDE`], declared in `dev/cpu/fake-msr-stride`, which the MSR
//! reader honours under a non-default root only) because AMD's registers are consecutive
//! numbers and 8-byte values at byte offset R would overlap. Registers never written read
//! past the end or as 0, which the MSR reader takes as "not implemented".
//!
//! Permission failures: [`FakePowercap::deny`] does `chmod 000`, which root ignores. Tests
//! running as root should either classify a real errno with
//! `joulerun::sources::powercap::classify_open_error`, or run the opening code in a child
//! process with a non-root uid (see `tests/powercap.rs`), or skip with a message.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Intel `max_energy_range_uj` with ESU=14 (2^32 units of 61 µJ).
pub const INTEL_RANGE_UJ: u64 = 262_143_328_850;
/// `max_energy_range_uj` of an AMD EPYC 7543.
pub const AMD_RANGE_UJ: u64 = 65_532_610_987;
/// `max_energy_range_uj` of a Haswell-EP DRAM domain.
pub const HSW_DRAM_RANGE_UJ: u64 = 65_712_999_613;

/// The content a fake `energy_uj` holds for `uj`: 20 digits, zero padded, and a newline.
pub fn energy_text(uj: u64) -> String {
    format!("{uj:020}\n")
}

/// Write `bytes` at offset 0 of an existing file without truncating it.
fn write_in_place(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let f = OpenOptions::new().write(true).open(path)?;
    f.write_all_at(bytes, 0)
}

/// Write `cpuN/topology/physical_package_id` for each CPU: `packages[n]` is CPU n's package.
pub fn write_topology(root: &Path, packages: &[u32]) -> io::Result<()> {
    for (cpu, pkg) in packages.iter().enumerate() {
        let d = root.join(format!("sys/devices/system/cpu/cpu{cpu}/topology"));
        fs::create_dir_all(&d)?;
        fs::write(d.join("physical_package_id"), format!("{pkg}\n"))?;
    }
    Ok(())
}

/// Write a minimal `<root>/proc/cpuinfo` (one processor block) with the given identity.
pub fn write_cpuinfo(root: &Path, vendor_id: &str, family: u32, model: u32) -> io::Result<()> {
    let d = root.join("proc");
    fs::create_dir_all(&d)?;
    fs::write(
        d.join("cpuinfo"),
        format!(
            "processor\t: 0\nvendor_id\t: {vendor_id}\ncpu family\t: {family}\nmodel\t\t: \
             {model}\nmodel name\t: fake CPU\n\n"
        ),
    )
}

/// A fake `/sys/class/powercap` tree. Nodes live under
/// `sys/devices/virtual/powercap/<control type>/...` with relative symlinks in
/// `sys/class/powercap/`, as on real kernels.
#[derive(Clone, Debug)]
pub struct FakePowercap {
    root: PathBuf,
}

impl FakePowercap {
    /// Create the class directory and the bare `intel-rapl` control type (no counter).
    pub fn new(root: impl Into<PathBuf>) -> io::Result<FakePowercap> {
        let fake = FakePowercap { root: root.into() };
        fs::create_dir_all(fake.class_dir())?;
        fake.control_type("intel-rapl")?;
        Ok(fake)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/sys/class/powercap`.
    pub fn class_dir(&self) -> PathBuf {
        self.root.join("sys/class/powercap")
    }

    fn devices_dir(&self) -> PathBuf {
        self.root.join("sys/devices/virtual/powercap")
    }

    fn control_type(&self, control: &str) -> io::Result<()> {
        let dir = self.devices_dir().join(control);
        if dir.exists() {
            return Ok(());
        }
        fs::create_dir_all(&dir)?;
        fs::write(dir.join("enabled"), "1\n")?;
        let link = self.class_dir().join(control);
        if fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(
                Path::new("../../devices/virtual/powercap").join(control),
                link,
            )?;
        }
        Ok(())
    }

    /// The real node directory of a zone id (`intel-rapl:0:1` lives in
    /// `.../intel-rapl/intel-rapl:0/intel-rapl:0:1`).
    fn node_rel(id: &str) -> io::Result<PathBuf> {
        let mut parts = id.split(':');
        let control = parts.next().unwrap_or_default();
        let idx: Vec<&str> = parts.collect();
        if control.is_empty() || idx.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not a zone id: {id}"),
            ));
        }
        let mut rel = PathBuf::from(control);
        for i in 1..=idx.len() {
            rel.push(format!("{}:{}", control, idx[..i].join(":")));
        }
        Ok(rel)
    }

    /// Add a zone: `id` is the directory name (`intel-rapl:0`, `intel-rapl:0:1`,
    /// `intel-rapl-mmio:0`, hex indexes), `name` its `name` file. `max_range_uj: None`
    /// leaves `max_energy_range_uj` out (a kernel that hides it). `enabled` is 1.
    pub fn add_zone(
        &self,
        id: &str,
        name: &str,
        energy_uj: u64,
        max_range_uj: Option<u64>,
    ) -> io::Result<&FakePowercap> {
        let rel = Self::node_rel(id)?;
        let control = id.split(':').next().unwrap_or_default();
        self.control_type(control)?;
        let dir = self.devices_dir().join(&rel);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join("name"), format!("{name}\n"))?;
        fs::write(dir.join("energy_uj"), energy_text(energy_uj))?;
        fs::set_permissions(dir.join("energy_uj"), fs::Permissions::from_mode(0o444))?;
        if let Some(r) = max_range_uj {
            fs::write(dir.join("max_energy_range_uj"), format!("{r}\n"))?;
        }
        fs::write(dir.join("enabled"), "1\n")?;
        let link = self.class_dir().join(id);
        if fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(
                Path::new("../../devices/virtual/powercap").join(rel),
                link,
            )?;
        }
        Ok(self)
    }

    /// `<root>/sys/class/powercap/<id>` (through the symlink, as readers see it).
    pub fn zone_path(&self, id: &str) -> PathBuf {
        self.class_dir().join(id)
    }

    /// `<root>/sys/class/powercap/<id>/energy_uj`.
    pub fn energy_path(&self, id: &str) -> PathBuf {
        self.zone_path(id).join("energy_uj")
    }

    /// Set a counter, in place.
    pub fn set_energy(&self, id: &str, uj: u64) -> io::Result<()> {
        write_in_place(&self.energy_path(id), energy_text(uj).as_bytes())
    }

    /// Replace the whole content of `energy_uj` (same inode, truncated): garbage tests.
    pub fn set_energy_raw(&self, id: &str, content: &[u8]) -> io::Result<()> {
        let f = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(self.energy_path(id))?;
        f.write_all_at(content, 0)
    }

    /// Write `enabled` (0 or 1).
    pub fn set_enabled(&self, id: &str, enabled: bool) -> io::Result<()> {
        fs::write(
            self.zone_path(id).join("enabled"),
            if enabled { "1\n" } else { "0\n" },
        )
    }

    /// Remove `max_energy_range_uj` (kernels that hide it).
    pub fn hide_max_range(&self, id: &str) -> io::Result<()> {
        fs::remove_file(self.zone_path(id).join("max_energy_range_uj"))
    }

    /// Make `energy_uj` vanish as a removed sysfs node does: it is emptied (so a reader's
    /// open descriptor reads nothing, as kernfs answers ENODEV) and unlinked. Do not
    /// vanish a counter a running [`CounterDriver`] writes: it would refill the inode.
    pub fn vanish(&self, id: &str) -> io::Result<()> {
        let p = self.energy_path(id);
        OpenOptions::new().write(true).truncate(true).open(&p)?;
        fs::remove_file(p)
    }

    /// [`FakePowercap::vanish`], then put a directory where `energy_uj` was.
    pub fn replace_with_dir(&self, id: &str) -> io::Result<()> {
        self.vanish(id)?;
        fs::create_dir(self.energy_path(id))
    }

    /// `chmod` `energy_uj` (0o400 is the kernel's mode since 5.10, 0o000 denies all).
    /// Has no effect on reads by root.
    pub fn chmod_energy(&self, id: &str, mode: u32) -> io::Result<()> {
        fs::set_permissions(self.energy_path(id), fs::Permissions::from_mode(mode))
    }

    /// `chmod 000` on `energy_uj`. Root still reads it: see the module documentation.
    pub fn deny(&self, id: &str) -> io::Result<()> {
        self.chmod_energy(id, 0o000)
    }

    /// A 2-socket Intel server: `intel-rapl:0` package-0 with `:0:0` dram, `intel-rapl:1`
    /// package-1 with `:1:0` dram; topology of 4 CPUs alternating packages.
    pub fn intel_server_2s(root: impl Into<PathBuf>) -> io::Result<FakePowercap> {
        let f = FakePowercap::new(root)?;
        f.add_zone("intel-rapl:0", "package-0", 1_000_000, Some(INTEL_RANGE_UJ))?
            .add_zone("intel-rapl:0:0", "dram", 2_000_000, Some(HSW_DRAM_RANGE_UJ))?
            .add_zone("intel-rapl:1", "package-1", 3_000_000, Some(INTEL_RANGE_UJ))?
            .add_zone("intel-rapl:1:0", "dram", 4_000_000, Some(HSW_DRAM_RANGE_UJ))?;
        write_topology(&f.root, &[0, 1, 0, 1])?;
        Ok(f)
    }

    /// A laptop: `intel-rapl:0` package-0 with `:0:0` core and `:0:1` uncore,
    /// `intel-rapl:1` psys.
    pub fn intel_laptop(root: impl Into<PathBuf>) -> io::Result<FakePowercap> {
        let f = FakePowercap::new(root)?;
        f.add_zone("intel-rapl:0", "package-0", 1_000_000, Some(INTEL_RANGE_UJ))?
            .add_zone("intel-rapl:0:0", "core", 500_000, Some(INTEL_RANGE_UJ))?
            .add_zone("intel-rapl:0:1", "uncore", 100_000, Some(INTEL_RANGE_UJ))?
            .add_zone("intel-rapl:1", "psys", 5_000_000, Some(INTEL_RANGE_UJ))?;
        write_topology(&f.root, &[0, 0, 0, 0])?;
        Ok(f)
    }

    /// A 2-socket AMD EPYC: package-N with a `core` subzone each.
    pub fn amd_epyc_2s(root: impl Into<PathBuf>) -> io::Result<FakePowercap> {
        let f = FakePowercap::new(root)?;
        f.add_zone("intel-rapl:0", "package-0", 1_000_000, Some(AMD_RANGE_UJ))?
            .add_zone("intel-rapl:0:0", "core", 600_000, Some(AMD_RANGE_UJ))?
            .add_zone("intel-rapl:1", "package-1", 2_000_000, Some(AMD_RANGE_UJ))?
            .add_zone("intel-rapl:1:0", "core", 700_000, Some(AMD_RANGE_UJ))?;
        write_topology(&f.root, &[0, 0, 1, 1])?;
        Ok(f)
    }
}

/// Byte distance between consecutive registers in fake `msr` files.
pub const FAKE_MSR_STRIDE: u64 = 8;

/// Fake `/dev/cpu/N/msr` files: sparse files with little-endian u64 registers at
/// `register * FAKE_MSR_STRIDE`.
#[derive(Clone, Debug)]
pub struct FakeMsr {
    root: PathBuf,
}

impl FakeMsr {
    /// Create `<root>/dev/cpu` with its stride declaration (and no CPU in it: add them
    /// with [`FakeMsr::add_cpu`]).
    pub fn new(root: impl Into<PathBuf>) -> io::Result<FakeMsr> {
        let f = FakeMsr { root: root.into() };
        fs::create_dir_all(f.root.join("dev/cpu"))?;
        fs::write(
            f.root.join("dev/cpu/fake-msr-stride"),
            format!("{FAKE_MSR_STRIDE}\n"),
        )?;
        Ok(f)
    }

    /// The byte offset of a register in the fake files.
    pub fn offset(reg: u64) -> u64 {
        reg * FAKE_MSR_STRIDE
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/dev/cpu/<cpu>/msr`.
    pub fn msr_path(&self, cpu: usize) -> PathBuf {
        self.root.join(format!("dev/cpu/{cpu}/msr"))
    }

    /// Create an empty `msr` file for a CPU (every register reads as not implemented).
    pub fn add_cpu(&self, cpu: usize) -> io::Result<&FakeMsr> {
        let p = self.msr_path(cpu);
        if let Some(d) = p.parent() {
            fs::create_dir_all(d)?;
        }
        File::create(&p)?;
        Ok(self)
    }

    /// Write a register, in place.
    pub fn set(&self, cpu: usize, reg: u64, value: u64) -> io::Result<&FakeMsr> {
        let f = OpenOptions::new().write(true).open(self.msr_path(cpu))?;
        f.write_all_at(&value.to_le_bytes(), Self::offset(reg))?;
        Ok(self)
    }

    /// A plausible power-unit register value with the given energy status unit (bits
    /// 12:8): power unit 3 (1/8 W), time unit 10 (~976 µs).
    pub fn unit_register(esu: u32) -> u64 {
        (0xA << 16) | (u64::from(esu & 0x1f) << 8) | 0x3
    }
}

/// How a driven counter is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterFormat {
    /// A rising counter (powercap `energy_uj`, hwmon `energyN_input`): 20-digit
    /// zero-padded decimal at offset 0.
    Decimal,
    /// A fake MSR: little-endian u64 at this register's offset ([`FakeMsr::offset`]).
    MsrAt(u64),
    /// A power file (hwmon `powerN_input` / `powerN_average`, a battery's `power_now`):
    /// `start` (µW) written as 20-digit decimal, constant (until a [`Jump`] sets another).
    Power,
    /// A battery's `energy_now` or `charge_now`: 20-digit decimal going *down* from
    /// `start` at `watts`, changed only every `update_every` as firmwares do:
    /// `start - floor(watts * t_q / joules_per_unit)` with `t` rounded down to a multiple
    /// of `update_every` (never below 0).
    Draining { update_every: Duration },
}

/// One counter for [`CounterDriver`]: its value at `t` seconds after the start is
/// `(start + floor(watts * t / joules_per_unit)) mod range` ([`CounterFormat::Decimal`],
/// [`CounterFormat::MsrAt`]), `start` ([`CounterFormat::Power`]), or a draining value
/// ([`CounterFormat::Draining`]), until its [`Jump`], if any.
#[derive(Clone, Debug)]
pub struct DrivenCounter {
    pub path: PathBuf,
    pub format: CounterFormat,
    pub watts: f64,
    pub joules_per_unit: f64,
    pub range: u64,
    pub start: u64,
    /// A glitch to play once, when a file appears.
    pub jump: Option<Jump>,
}

/// A counter glitch for [`CounterDriver`]: as soon as the driver sees `trigger` exist
/// (a test's command creates it mid-run), the counter is set to `to` and runs on from
/// there at the same power, `(to + floor(watts * (t - t_jump) / joules_per_unit)) mod
/// range`. A reset (`to: 0`), a step back, a forward jump, a value above the range.
#[derive(Clone, Debug)]
pub struct Jump {
    pub trigger: PathBuf,
    pub to: u64,
}

impl DrivenCounter {
    /// A powercap `energy_uj` (µJ) wrapping at `range_uj`.
    pub fn powercap(path: impl Into<PathBuf>, watts: f64, range_uj: u64, start_uj: u64) -> Self {
        DrivenCounter {
            path: path.into(),
            format: CounterFormat::Decimal,
            watts,
            joules_per_unit: 1e-6,
            range: range_uj,
            start: start_uj,
            jump: None,
        }
    }

    /// An MSR energy register (32 bits, wrapping at 2^32 units of `joules_per_unit`).
    pub fn msr(
        path: impl Into<PathBuf>,
        reg: u64,
        watts: f64,
        joules_per_unit: f64,
        start: u64,
    ) -> Self {
        DrivenCounter {
            path: path.into(),
            format: CounterFormat::MsrAt(reg),
            watts,
            joules_per_unit,
            range: 1 << 32,
            start,
            jump: None,
        }
    }

    /// A hwmon `energyN_input` (µJ) at `watts`: a 64-bit counter as the drivers keep it.
    pub fn hwmon_energy(path: impl Into<PathBuf>, watts: f64, start_uj: u64) -> Self {
        DrivenCounter {
            path: path.into(),
            format: CounterFormat::Decimal,
            watts,
            joules_per_unit: 1e-6,
            range: u64::MAX,
            start: start_uj,
            jump: None,
        }
    }

    /// A power file (µW) holding `watts`: hwmon `powerN_input` / `powerN_average`, a
    /// battery's `power_now`. A [`Jump`] sets another raw µW value.
    pub fn power(path: impl Into<PathBuf>, watts: f64) -> Self {
        DrivenCounter {
            path: path.into(),
            format: CounterFormat::Power,
            watts,
            joules_per_unit: 1e-6,
            range: u64::MAX,
            start: (watts * 1e6).round().max(0.0) as u64,
            jump: None,
        }
    }

    /// A battery's `energy_now` (µWh) draining at `watts` from `start_uwh`, updated by
    /// the "firmware" every `update_every`.
    pub fn battery_energy(
        path: impl Into<PathBuf>,
        watts: f64,
        start_uwh: u64,
        update_every: Duration,
    ) -> Self {
        DrivenCounter {
            path: path.into(),
            format: CounterFormat::Draining { update_every },
            watts,
            joules_per_unit: 3.6e-3,
            range: u64::MAX,
            start: start_uwh,
            jump: None,
        }
    }

    /// A battery's `charge_now` (µAh) draining at `watts` from `start_uah` at a constant
    /// `volts` (write the same voltage in `voltage_now`), updated every `update_every`.
    pub fn battery_charge(
        path: impl Into<PathBuf>,
        watts: f64,
        volts: f64,
        start_uah: u64,
        update_every: Duration,
    ) -> Self {
        DrivenCounter {
            path: path.into(),
            format: CounterFormat::Draining { update_every },
            watts,
            joules_per_unit: 3.6e-3 * volts,
            range: u64::MAX,
            start: start_uah,
            jump: None,
        }
    }

    /// The same counter, set to `to` as soon as `trigger` exists (see [`Jump`]).
    pub fn jump_when(mut self, trigger: impl Into<PathBuf>, to: u64) -> Self {
        self.jump = Some(Jump {
            trigger: trigger.into(),
            to,
        });
        self
    }

    /// The raw value `elapsed` after the start (no jump).
    pub fn value_at(&self, elapsed: Duration) -> u64 {
        self.value_from(self.start, self.range, elapsed)
    }

    /// The raw value `elapsed` after the start when the jump happened at `jumped_at`.
    pub fn value_after_jump(&self, elapsed: Duration, jumped_at: Option<Duration>) -> u64 {
        match (&self.jump, jumped_at) {
            (Some(j), Some(at)) => self.value_from(
                j.to,
                // A value at or above the range stays there and runs on (unwrapped).
                if j.to >= self.range {
                    u64::MAX
                } else {
                    self.range
                },
                elapsed.saturating_sub(at),
            ),
            _ => self.value_at(elapsed),
        }
    }

    /// The raw value `d` after it was `from`.
    fn value_from(&self, from: u64, range: u64, d: Duration) -> u64 {
        match self.format {
            CounterFormat::Decimal | CounterFormat::MsrAt(_) => {
                Self::advance(from, self.watts, self.joules_per_unit, range, d)
            }
            CounterFormat::Power => from,
            CounterFormat::Draining { update_every } => {
                let step = update_every.as_nanos().max(1);
                let t = Duration::from_nanos(
                    u64::try_from(d.as_nanos() / step * step).unwrap_or(u64::MAX),
                );
                // A millionth of a unit absorbs float error (18 J / 3.6 mJ is 5000, not
                // 4999.999...).
                let units = (self.watts * t.as_secs_f64() / self.joules_per_unit + 1e-6).max(0.0);
                from.saturating_sub(units.min(u64::MAX as f64) as u64)
            }
        }
    }

    fn advance(from: u64, watts: f64, joules_per_unit: f64, range: u64, d: Duration) -> u64 {
        let units = (watts * d.as_secs_f64() / joules_per_unit).max(0.0) as u128;
        let range = u128::from(range.max(1));
        ((u128::from(from) + units) % range) as u64
    }
}

struct Open {
    counter: DrivenCounter,
    file: File,
    jumped_at: Option<Duration>,
}

impl Open {
    fn write(&mut self, elapsed: Duration) -> io::Result<()> {
        if self.jumped_at.is_none()
            && let Some(j) = &self.counter.jump
            && j.trigger.exists()
        {
            self.jumped_at = Some(elapsed);
        }
        let v = self.counter.value_after_jump(elapsed, self.jumped_at);
        match self.counter.format {
            CounterFormat::Decimal | CounterFormat::Power | CounterFormat::Draining { .. } => {
                self.file.write_all_at(energy_text(v).as_bytes(), 0)
            }
            CounterFormat::MsrAt(reg) => self
                .file
                .write_all_at(&v.to_le_bytes(), FakeMsr::offset(reg)),
        }
    }
}

/// A background thread advancing counters at constant power (holding power files, draining
/// battery gauges: see [`CounterFormat`]), rewriting every file about every millisecond,
/// until stopped or dropped. Write errors (a file removed by the test)
/// are ignored for that counter.
pub struct CounterDriver {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    started: Instant,
}

impl CounterDriver {
    /// Open every counter's file (which must exist), write its start value, and start the
    /// thread.
    pub fn start(counters: Vec<DrivenCounter>) -> io::Result<CounterDriver> {
        let mut open = Vec::with_capacity(counters.len());
        for counter in counters {
            let file = OpenOptions::new().write(true).open(&counter.path)?;
            open.push(Open {
                counter,
                file,
                jumped_at: None,
            });
        }
        let started = Instant::now();
        for o in &mut open {
            o.write(Duration::ZERO)?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("fakehw-counter-driver".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    let elapsed = started.elapsed();
                    for o in &mut open {
                        let _ = o.write(elapsed);
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            })?;
        Ok(CounterDriver {
            stop,
            thread: Some(thread),
            started,
        })
    }

    /// When the counters were at their start values.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Stop the thread and wait for it; the files keep their last values.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for CounterDriver {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use joulerun::counter::Accumulator;
    use joulerun::sources::{Reading, Wrap};

    fn read_uj(p: &Path) -> u64 {
        fs::read_to_string(p).unwrap().trim().parse().unwrap()
    }

    /// Wait for the driver's next write, so the value read is fresh at the time taken.
    fn fresh(p: &Path) -> (Instant, u64) {
        let v0 = read_uj(p);
        let limit = Instant::now() + Duration::from_secs(5);
        loop {
            assert!(
                Instant::now() < limit,
                "the driver stopped writing {}",
                p.display()
            );
            let v = read_uj(p);
            if v != v0 {
                return (Instant::now(), v);
            }
            std::hint::spin_loop();
        }
    }

    #[test]
    fn driver_advances_at_the_given_power_with_a_wrap() {
        let t = tempfile::tempdir().unwrap();
        let fake = FakePowercap::new(t.path()).unwrap();
        let range = 20_000_000; // 20 J
        fake.add_zone("intel-rapl:0", "package-0", 0, Some(range))
            .unwrap();
        let path = fake.energy_path("intel-rapl:0");
        // 50 W starting 1 J below the wrap: 300 ms is 15 J, one wrap.
        let driver = CounterDriver::start(vec![DrivenCounter::powercap(
            &path,
            50.0,
            range,
            range - 1_000_000,
        )])
        .unwrap();
        let mut acc = Accumulator::new();
        let (t0, v0) = fresh(&path);
        let reading = |v| Reading::Counter {
            value: v,
            wrap: Wrap::At(range),
            joules_per_unit: 1e-6,
        };
        acc.update(0.0, reading(v0));
        let mut t1 = t0;
        while t1.duration_since(t0) < Duration::from_millis(300) {
            std::thread::sleep(Duration::from_millis(10));
            let (t, v) = fresh(&path);
            acc.update(t.duration_since(t0).as_secs_f64(), reading(v));
            t1 = t;
        }
        drop(driver);
        let dt = t1.duration_since(t0).as_secs_f64();
        let watts = acc.total_j / dt;
        assert!((watts - 50.0).abs() < 0.5, "{watts} W over {dt} s");
        assert_eq!(acc.wraps, 1);
    }

    #[test]
    fn a_jump_restarts_the_counter_from_its_target() {
        let c = DrivenCounter::powercap("/nonexistent", 10.0, 1 << 40, 500).jump_when("/t", 7);
        let s = Duration::from_secs;
        assert_eq!(c.value_after_jump(s(2), None), c.value_at(s(2)));
        let v = c.value_after_jump(s(3), Some(s(1)));
        assert!((19_999_990..=20_000_007).contains(&v), "{v}");
        // A target above the range stays above it and runs on.
        let c = DrivenCounter::powercap("/nonexistent", 1.0, 1000, 0).jump_when("/t", 5000);
        assert!(c.value_after_jump(s(1), Some(s(0))) > 1000);
    }

    #[test]
    fn the_driver_plays_the_jump_when_the_trigger_appears() {
        let t = tempfile::tempdir().unwrap();
        let fake = FakePowercap::new(t.path()).unwrap();
        fake.add_zone("intel-rapl:0", "package-0", 0, Some(INTEL_RANGE_UJ))
            .unwrap();
        let path = fake.energy_path("intel-rapl:0");
        let trigger = t.path().join("now");
        let start = 100_000_000_000;
        let driver = CounterDriver::start(vec![
            DrivenCounter::powercap(&path, 10.0, INTEL_RANGE_UJ, start).jump_when(&trigger, 5),
        ])
        .unwrap();
        let (_, before) = fresh(&path);
        assert!(before >= start);
        fs::write(&trigger, "").unwrap();
        let limit = Instant::now() + Duration::from_secs(5);
        while read_uj(&path) >= start {
            assert!(Instant::now() < limit, "no jump");
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(driver);
        assert!(read_uj(&path) < 10_000_000);
    }

    #[test]
    fn power_files_hold_and_batteries_drain_in_firmware_steps() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let p = DrivenCounter::power("/nonexistent", 45.5);
        assert_eq!(p.value_at(s(0)), 45_500_000);
        assert_eq!(p.value_at(s(100)), 45_500_000);
        let j = DrivenCounter::power("/nonexistent", 45.0).jump_when("/t", 90_000_000);
        assert_eq!(j.value_after_jump(s(5), Some(s(1))), 90_000_000);
        assert_eq!(j.value_after_jump(s(5), None), 45_000_000);
        // 36 W is 10 mWh a second: 5000 µWh per 500 ms update.
        let b = DrivenCounter::battery_energy("/nonexistent", 36.0, 40_000_000, ms(500));
        assert_eq!(b.value_at(ms(0)), 40_000_000);
        assert_eq!(b.value_at(ms(499)), 40_000_000);
        assert_eq!(b.value_at(ms(500)), 39_995_000);
        assert_eq!(b.value_at(ms(1999)), 39_985_000);
        // 36 W at 12 V is 3 A: 833.3 µAh a second.
        let c = DrivenCounter::battery_charge("/nonexistent", 36.0, 12.0, 3_000_000, s(1));
        assert_eq!(c.value_at(ms(999)), 3_000_000);
        assert_eq!(c.value_at(s(1)), 3_000_000 - 833);
        // Never below empty.
        let e = DrivenCounter::battery_energy("/nonexistent", 1000.0, 10, ms(1));
        assert_eq!(e.value_at(s(10)), 0);
    }

    #[test]
    fn value_at_wraps() {
        let c = DrivenCounter::msr("/nonexistent", 0x611, 1.0, 1.0 / 16384.0, (1 << 32) - 10);
        assert_eq!(c.value_at(Duration::ZERO), (1 << 32) - 10);
        assert_eq!(c.value_at(Duration::from_secs(1)), 16384 - 10);
    }

    #[test]
    fn node_layout_is_real_looking() {
        let t = tempfile::tempdir().unwrap();
        let fake = FakePowercap::intel_laptop(t.path()).unwrap();
        let link = fs::read_link(fake.zone_path("intel-rapl:0:1")).unwrap();
        assert_eq!(
            link,
            PathBuf::from("../../devices/virtual/powercap/intel-rapl/intel-rapl:0/intel-rapl:0:1")
        );
        assert_eq!(
            fs::read_to_string(fake.zone_path("intel-rapl:0:1").join("name")).unwrap(),
            "uncore\n"
        );
        assert!(fake.class_dir().join("intel-rapl").is_dir());
        assert!(!fake.class_dir().join("intel-rapl/energy_uj").exists());
        assert_eq!(
            fs::read_to_string(fake.energy_path("intel-rapl:1")).unwrap(),
            "00000000000005000000\n"
        );
    }
}
