//! RAPL through the model-specific registers (`/dev/cpu/N/msr`, needs the `msr` module and
//! CAP_SYS_RAWIO).
//!
//! One CPU per package (the lowest numbered, [`Topology::first_cpu_per_package`]) is
//! opened; a register is read with `pread` of 8 bytes at the register address as the file
//! offset (little-endian u64). Energy registers count in bits 31:0 and wrap at 2^32 units;
//! the unit is 1/2^ESU J, ESU being bits 12:8 of the power-unit register.
//!
//! | register | Intel | AMD (Zen, Hygon) |
//! |---|---|---|
//! | power unit | 0x606 | 0xC0010299 |
//! | package | 0x611 | 0xC001029B |
//! | core (PP0) | 0x639 | 0xC001029A |
//! | uncore (PP1) | 0x641 | - |
//! | dram | 0x619 | - |
//! | psys | 0x64D | - |
//!
//! - A register that cannot be read at open time (EIO: not implemented on this CPU) or that
//!   reads 0 (hypervisors with `ignore_msrs` answer 0 for unknown registers; a DRAM counter
//!   the firmware left off never moves) is left out: no dram on client parts, no psys on
//!   servers.
//! - psys is machine-wide: read once, from the first package's CPU, socket `None`.
//! - AMD's core counter (0xC001029A) is per *core*: the value read is that of the first
//!   CPU's core only, not the sum of the package's cores. It is reported as `core-N`
//!   anyway; the package counter is the one that is complete.
//! - Intel server parts whose DRAM domain uses a fixed 2^-16 J (15.3 µJ) unit whatever
//!   the ESU (Haswell-EP, Broadwell-EP, Skylake-SP and later Xeon SP up to Emerald Rapids,
//!   Xeon Phi: see [`intel_dram_fixed_unit`]) get that unit for `dram-N`, detected from
//!   the `/proc/cpuinfo` family and model.
//!
//! Fake trees: the register number is the file offset of the real device, and 8 bytes are
//! returned for it. AMD's registers are consecutive numbers (0xC0010299..0xC001029B), so
//! a regular file holding 8-byte values at those byte offsets would overlap them. Under a
//! non-default root only, a fake tree may therefore declare in `dev/cpu/fake-msr-stride`
//! ([`FAKE_STRIDE_FILE`]) that register R lives at byte `R * stride`
//! (`joulerun_testkit::fakehw::FakeMsr` writes 8). The default root never looks at it.
//!
//! The vendor comes from `/proc/cpuinfo`. Under a non-default root (tests, fake trees),
//! `<root>/proc/cpuinfo` is used when it exists, else the real `/proc/cpuinfo`; this is the
//! one place the root applies to `/proc`. [`MsrSource::open_with_cpu`] takes the CPU
//! identity directly.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use super::{
    Domain, DomainKind, OpenContext, ReadError, Reading, Source, SourceKind, Unavailable,
    UnavailableKind, Wrap,
};
#[cfg(doc)]
use crate::topology::Topology;

/// Intel RAPL power-unit register.
pub const MSR_RAPL_POWER_UNIT: u64 = 0x606;
/// Intel package energy status.
pub const MSR_PKG_ENERGY_STATUS: u64 = 0x611;
/// Intel DRAM energy status.
pub const MSR_DRAM_ENERGY_STATUS: u64 = 0x619;
/// Intel PP0 (cores) energy status.
pub const MSR_PP0_ENERGY_STATUS: u64 = 0x639;
/// Intel PP1 (uncore / integrated GPU) energy status.
pub const MSR_PP1_ENERGY_STATUS: u64 = 0x641;
/// Intel platform (psys) energy status.
pub const MSR_PLATFORM_ENERGY_STATUS: u64 = 0x64D;
/// AMD RAPL power-unit register.
pub const MSR_AMD_RAPL_POWER_UNIT: u64 = 0xC001_0299;
/// AMD core energy status (per core).
pub const MSR_AMD_CORE_ENERGY_STATUS: u64 = 0xC001_029A;
/// AMD package energy status.
pub const MSR_AMD_PKG_ENERGY_STATUS: u64 = 0xC001_029B;

/// The fix printed when the msr module is not loaded.
pub const MODPROBE_FIX: &str = "sudo modprobe msr (in a container, load it on the host and pass \
     the devices in, e.g. docker run --device=/dev/cpu/0/msr ...)";
/// The fix printed when the msr device may not be opened.
pub const RAWIO_FIX: &str = "run as root (reading MSRs needs CAP_SYS_RAWIO)";

/// CPU vendors with RAPL MSRs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    Intel,
    /// AMD and Hygon (same registers).
    Amd,
}

/// What `/proc/cpuinfo` says about the CPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuIdent {
    /// `vendor_id` as written (`GenuineIntel`, `AuthenticAMD`, `HygonGenuine`, ...).
    pub vendor_id: String,
    /// `cpu family`, 0 when absent.
    pub family: u32,
    /// `model`, 0 when absent.
    pub model: u32,
}

impl CpuIdent {
    pub fn new(vendor_id: &str, family: u32, model: u32) -> CpuIdent {
        CpuIdent {
            vendor_id: vendor_id.to_string(),
            family,
            model,
        }
    }

    /// The RAPL register set of this vendor, if it has one.
    pub fn vendor(&self) -> Option<Vendor> {
        match self.vendor_id.as_str() {
            "GenuineIntel" => Some(Vendor::Intel),
            "AuthenticAMD" | "HygonGenuine" => Some(Vendor::Amd),
            _ => None,
        }
    }
}

/// The first processor's `vendor_id`, `cpu family` and `model` from `/proc/cpuinfo` text.
pub fn parse_cpuinfo(text: &str) -> Option<CpuIdent> {
    let mut vendor = None;
    let mut family = None;
    let mut model = None;
    for line in text.lines() {
        if line.trim().is_empty() && vendor.is_some() {
            break; // end of the first processor's block
        }
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        match k {
            "vendor_id" if vendor.is_none() => vendor = Some(v.to_string()),
            "cpu family" if family.is_none() => family = v.parse().ok(),
            "model" if model.is_none() => model = v.parse().ok(),
            _ => {}
        }
    }
    Some(CpuIdent {
        vendor_id: vendor?,
        family: family.unwrap_or(0),
        model: model.unwrap_or(0),
    })
}

/// Intel models (family 6) whose DRAM energy unit is fixed at 2^-16 J (15.3 µJ) instead of
/// the ESU: the `rapl_defaults_hsw_server` / `rapl_defaults_spr_server` list of the
/// kernel's intel_rapl_common (and perf's RAPL quirk).
pub fn intel_dram_fixed_unit(family: u32, model: u32) -> bool {
    family == 6
        && matches!(
            model,
            0x3F // Haswell-X
            | 0x4F // Broadwell-X
            | 0x55 // Skylake-X / Cascade Lake / Cooper Lake
            | 0x6A // Ice Lake-X
            | 0x6C // Ice Lake-D
            | 0x8F // Sapphire Rapids-X
            | 0xCF // Emerald Rapids-X
            | 0x57 // Xeon Phi Knights Landing
            | 0x85 // Xeon Phi Knights Mill
        )
}

/// Joules per unit for an energy status unit (ESU) from bits 12:8 of the unit register.
pub fn joules_per_unit_from_unit_register(unit_reg: u64) -> f64 {
    let esu = ((unit_reg >> 8) & 0x1f) as i32;
    0.5f64.powi(esu)
}

/// Under a non-default root only: a file holding the byte distance between consecutive
/// registers of the fake `msr` files (see the module documentation). Real devices: 1.
pub const FAKE_STRIDE_FILE: &str = "/dev/cpu/fake-msr-stride";

/// The register stride of the `msr` files under this root: 1 (the register number is the
/// file offset) unless a fake tree declares another in [`FAKE_STRIDE_FILE`].
pub fn register_stride(root: &crate::sysroot::SysRoot) -> u64 {
    if root.is_default() {
        return 1;
    }
    crate::fsx::read_regular(&root.path(FAKE_STRIDE_FILE), crate::fsx::ATTR_LIMIT)
        .ok()
        .and_then(|b| crate::kfs::parse_decimal_u64(&b))
        .filter(|&s| (1..=4096).contains(&s))
        .unwrap_or(1)
}

/// Read register `reg` (8 bytes at file offset `reg * stride`). A short read (past the
/// end of a fake file) is an error.
fn read_reg(file: &File, reg: u64, stride: u64) -> io::Result<u64> {
    let mut buf = [0u8; 8];
    let offset = reg
        .checked_mul(stride)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "register offset overflow"))?;
    match crate::kfs::pread_at(file, &mut buf, offset)? {
        8 => Ok(u64::from_le_bytes(buf)),
        n => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("short read of register {reg:#x}: {n} of 8 bytes"),
        )),
    }
}

fn cpuinfo_text(ctx: &OpenContext) -> Result<String, Unavailable> {
    let faked = ctx.root.path("/proc/cpuinfo");
    let path = if !ctx.root.is_default() && faked.exists() {
        faked
    } else {
        PathBuf::from("/proc/cpuinfo")
    };
    crate::fsx::read_regular(&path, 16 << 20)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .map_err(|e| {
            Unavailable::new(
                SourceKind::Msr,
                UnavailableKind::NotPresent,
                format!(
                    "cannot read {} to find the CPU vendor: {}",
                    path.display(),
                    e
                ),
                None,
            )
        })
}

/// One opened per-package device.
#[derive(Debug)]
struct Device {
    path: PathBuf,
    file: File,
}

/// One domain: which device, which register, what unit.
#[derive(Debug)]
struct Register {
    device: usize,
    reg: u64,
    joules_per_unit: f64,
}

/// RAPL energy counters read straight from the MSRs.
#[derive(Debug)]
pub struct MsrSource {
    domains: Vec<Domain>,
    devices: Vec<Device>,
    registers: Vec<Register>,
    warnings: Vec<String>,
    vendor: Vendor,
    stride: u64,
}

impl MsrSource {
    /// Open the MSR devices of one CPU per package; the vendor comes from `/proc/cpuinfo`
    /// (see the module documentation for how the root applies to it).
    pub fn open(ctx: &OpenContext) -> Result<MsrSource, Unavailable> {
        let text = cpuinfo_text(ctx)?;
        let ident = parse_cpuinfo(&text).ok_or_else(|| {
            Unavailable::new(
                SourceKind::Msr,
                UnavailableKind::NotPresent,
                "/proc/cpuinfo has no vendor_id: not an x86 CPU, no RAPL MSRs",
                None,
            )
        })?;
        MsrSource::open_with_cpu(ctx, &ident)
    }

    /// Open with a known CPU identity instead of reading `/proc/cpuinfo`.
    pub fn open_with_cpu(ctx: &OpenContext, ident: &CpuIdent) -> Result<MsrSource, Unavailable> {
        let unavailable = |kind, reason: String, fix: Option<&str>| {
            Unavailable::new(SourceKind::Msr, kind, reason, fix.map(str::to_string))
        };
        let vendor = ident.vendor().ok_or_else(|| {
            unavailable(
                UnavailableKind::NotPresent,
                format!(
                    "CPU vendor '{}' has no RAPL MSRs (only GenuineIntel, AuthenticAMD and \
                     HygonGenuine do)",
                    ident.vendor_id
                ),
                None,
            )
        })?;
        if vendor == Vendor::Amd && ident.family < 0x17 {
            return Err(unavailable(
                UnavailableKind::NotPresent,
                format!(
                    "AMD CPU family {:#x} has no RAPL MSRs (they start with Zen, family 0x17)",
                    ident.family
                ),
                None,
            ));
        }
        let (unit_reg, layout): (u64, &[(DomainKind, u64)]) = match vendor {
            Vendor::Intel => (
                MSR_RAPL_POWER_UNIT,
                &[
                    (DomainKind::Package, MSR_PKG_ENERGY_STATUS),
                    (DomainKind::Core, MSR_PP0_ENERGY_STATUS),
                    (DomainKind::Uncore, MSR_PP1_ENERGY_STATUS),
                    (DomainKind::Dram, MSR_DRAM_ENERGY_STATUS),
                ],
            ),
            Vendor::Amd => (
                MSR_AMD_RAPL_POWER_UNIT,
                &[
                    (DomainKind::Package, MSR_AMD_PKG_ENERGY_STATUS),
                    (DomainKind::Core, MSR_AMD_CORE_ENERGY_STATUS),
                ],
            ),
        };
        let dram_fixed =
            vendor == Vendor::Intel && intel_dram_fixed_unit(ident.family, ident.model);

        let stride = register_stride(&ctx.root);
        let mut per_package = ctx.topology.first_cpu_per_package();
        if per_package.is_empty() {
            per_package.push((0, 0));
        }
        let mut domains = Vec::new();
        let mut devices = Vec::new();
        let mut registers = Vec::new();
        let mut warnings = Vec::new();
        for (pkg, first_cpu) in per_package {
            // The lowest CPU of the package, or the next one if that CPU has no device
            // (offline).
            let mut cpus = ctx.topology.cpus_of(pkg);
            if cpus.is_empty() {
                cpus.push(first_cpu);
            }
            let mut opened = None;
            let mut first_err: Option<(PathBuf, io::Error)> = None;
            for cpu in cpus {
                let path = ctx.root.path(format!("/dev/cpu/{cpu}/msr"));
                // A character device; a regular file stands in for it in fake trees.
                // Anything else (a FIFO) is refused without blocking.
                match crate::fsx::open_char_device(&path, !ctx.root.is_default()) {
                    Ok(f) => {
                        opened = Some((cpu, path, f));
                        break;
                    }
                    Err(e) => {
                        if first_err.is_none() {
                            first_err = Some((path, e));
                        }
                    }
                }
            }
            let (cpu, path, file) = match (opened, first_err) {
                (Some(o), _) => o,
                (None, Some((path, e))) => {
                    return Err(match e.raw_os_error() {
                        Some(libc::ENOENT) => unavailable(
                            UnavailableKind::ModuleMissing,
                            format!("no {}: the msr kernel module is not loaded", path.display()),
                            Some(MODPROBE_FIX),
                        ),
                        Some(libc::EACCES) | Some(libc::EPERM) => unavailable(
                            UnavailableKind::Permission,
                            format!("cannot open {}: permission denied", path.display()),
                            Some(RAWIO_FIX),
                        ),
                        _ => unavailable(
                            UnavailableKind::NotPresent,
                            format!("cannot open {}: {}", path.display(), e),
                            None,
                        ),
                    });
                }
                (None, None) => continue,
            };
            let unit = match read_reg(&file, unit_reg, stride) {
                Ok(u) if u != 0 => u,
                r => {
                    let what = match r {
                        Ok(_) => "it reads 0".to_string(),
                        Err(e) => e.to_string(),
                    };
                    return Err(unavailable(
                        UnavailableKind::NotPresent,
                        format!(
                            "RAPL MSRs not implemented by this CPU or hypervisor: register \
                             {unit_reg:#x} of {}: {what}",
                            path.display()
                        ),
                        None,
                    ));
                }
            };
            let jpu = joules_per_unit_from_unit_register(unit);
            let device = devices.len();
            let first_package = device == 0;
            let mut regs: Vec<(DomainKind, u64)> = layout.to_vec();
            if vendor == Vendor::Intel && first_package {
                regs.push((DomainKind::Psys, MSR_PLATFORM_ENERGY_STATUS));
            }
            for (kind, reg) in regs {
                match read_reg(&file, reg, stride) {
                    Ok(v) if v & 0xffff_ffff != 0 => {}
                    _ => continue, // not implemented here
                }
                let socket = if kind == DomainKind::Psys {
                    None
                } else {
                    Some(pkg)
                };
                let joules_per_unit = if kind == DomainKind::Dram && dram_fixed {
                    0.5f64.powi(16)
                } else {
                    jpu
                };
                domains.push(Domain::new(kind, socket, SourceKind::Msr));
                registers.push(Register {
                    device,
                    reg,
                    joules_per_unit,
                });
            }
            if vendor == Vendor::Amd
                && registers
                    .iter()
                    .any(|r| r.device == device && r.reg == MSR_AMD_CORE_ENERGY_STATUS)
            {
                warnings.push(format!(
                    "core-{pkg} is the energy of CPU {cpu}'s core only (AMD counts core \
                     energy per core; package-{pkg} is complete)"
                ));
            }
            devices.push(Device { path, file });
        }
        if registers.is_empty() {
            return Err(unavailable(
                UnavailableKind::NotPresent,
                "RAPL MSRs not implemented by this CPU or hypervisor: no energy register can \
                 be read"
                    .to_string(),
                None,
            ));
        }
        // Machine-wide psys last, like the other sources.
        let mut order: Vec<usize> = (0..domains.len()).collect();
        order.sort_by_key(|&i| (domains[i].socket.is_none(), domains[i].socket, i));
        let domains = order.iter().map(|&i| domains[i].clone()).collect();
        let registers = {
            let mut slots: Vec<Option<Register>> = registers.into_iter().map(Some).collect();
            order.iter().filter_map(|&i| slots[i].take()).collect()
        };
        Ok(MsrSource {
            domains,
            devices,
            registers,
            warnings,
            vendor,
            stride,
        })
    }

    /// The vendor whose register set is read.
    pub fn vendor(&self) -> Vendor {
        self.vendor
    }

    /// The MSR device files opened, one per package.
    pub fn device_paths(&self) -> Vec<&Path> {
        self.devices.iter().map(|d| d.path.as_path()).collect()
    }
}

impl Source for MsrSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Msr
    }

    fn warnings(&self) -> &[String] {
        &self.warnings
    }

    fn domains(&self) -> &[Domain] {
        &self.domains
    }

    fn read(&mut self, out: &mut Vec<Result<Reading, ReadError>>) {
        out.clear();
        for r in &self.registers {
            let Some(dev) = self.devices.get(r.device) else {
                out.push(Err(ReadError::new(
                    "internal: MSR device index out of range",
                )));
                continue;
            };
            out.push(match read_reg(&dev.file, r.reg, self.stride) {
                Ok(raw) => Ok(Reading::Counter {
                    value: raw & 0xffff_ffff,
                    wrap: Wrap::At(1 << 32),
                    joules_per_unit: r.joules_per_unit,
                }),
                Err(e) => Err(ReadError::new(format!(
                    "read register {:#x} of {}: {}",
                    r.reg,
                    dev.path.display(),
                    e
                ))),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpuinfo() {
        let t = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 85\n\
                 model name\t: Intel(R) Xeon(R)\n\nprocessor\t: 1\nvendor_id\t: Other\n";
        let id = parse_cpuinfo(t).unwrap();
        assert_eq!(id, CpuIdent::new("GenuineIntel", 6, 85));
        assert_eq!(id.vendor(), Some(Vendor::Intel));
        assert!(intel_dram_fixed_unit(id.family, id.model));
        assert!(!intel_dram_fixed_unit(6, 0x8C));
        assert_eq!(
            CpuIdent::new("HygonGenuine", 0x18, 0).vendor(),
            Some(Vendor::Amd)
        );
        assert_eq!(CpuIdent::new("CentaurHauls", 6, 0).vendor(), None);
        assert_eq!(parse_cpuinfo("processor : 0\nBogoMIPS : 50\n"), None);
    }

    #[test]
    fn esu_to_joules() {
        assert_eq!(
            joules_per_unit_from_unit_register(0x000A_0E03),
            1.0 / 16384.0
        );
        assert_eq!(
            joules_per_unit_from_unit_register(0x000A_1003),
            1.0 / 65536.0
        );
        assert_eq!(joules_per_unit_from_unit_register(0x0000_0000), 1.0);
    }
}
