//! hwmon power and energy sensors (`/sys/class/hwmon/hwmon*`): GPUs, the chassis (an ACPI
//! power meter, the power supplies) and other power meters.
//!
//! Discovery: every `hwmon<N>` entry of `<root>/sys/class/hwmon` (symlinks into
//! `sys/devices/...`). A chip's attributes are in that directory; a chip registered the
//! old way has only a `device` link there, and its attributes (`name` included) in the
//! device's directory, which is then read instead (as libsensors does). Per chip: `name`
//! (the driver), and per channel N `energyN_input` (cumulative µJ), `powerN_input`
//! (instantaneous µW), `powerN_average` (µW averaged over `powerN_average_interval` ms),
//! each with its `..._label`; `in1_label`; the `device` link (a PCI address such as
//! `0000:03:00.0` when the chip belongs to a PCI device). A chip with no power or energy
//! channel is not a meter (most hwmon chips are temperature, voltage or fan sensors) and
//! is skipped silently. Units from the hwmon sysfs ABI
//! (`Documentation/hwmon/sysfs-interface.rst`).
//!
//! Classification by driver (`name`), see [`classify`]:
//! - **GPU**: `amdgpu`, `i915`, `xe`, `nouveau`, `radeon`. One domain per card, `gpu-0`,
//!   `gpu-1`... ordered by PCI address (chips without one after them, by hwmon number).
//!   i915's per-GT chips (`i915_gt0`...) are parts of the card's own `i915` chip: skipped.
//! - **Chassis**: `power_meter` (the hwmon name of `acpi_power_meter`) is `chassis`; a
//!   power supply ([`PSU_DRIVERS`]) is `psu-0`, `psu-1`...
//! - **Meter**: everything else with a power or energy channel, `meter-<driver>[-<label>]`,
//!   one domain per channel, never added (what it measures is unknown).
//!
//! Channels: an energy counter is preferred (the counter path, [`Reading::Counter`] in µJ),
//! then `powerN_input`, then `powerN_average` ([`Reading::Power`], watts, integrated).
//! A GPU's channel is the one labelled `card` (xe: `card` and `pkg`), else the first; a
//! PSU's is its input power (labelled `pin` by PMBus; corsairpsu's `power total`); a power
//! meter's is its (only) channel.
//!
//! Places (no double counting with RAPL): an Intel GPU at PCI address `0000:00:02.0` is
//! the integrated one, inside the CPU package (`package-0`); an amdgpu chip with an
//! `in1_label` of `vddnb` is an APU, whose power is the whole SoC's, CPU cores included:
//! it overlaps the package. PSUs are the whole machine together, unless a power meter
//! measures it already (they are then inside `chassis`). See docs/sources.md.
//!
//! Reading: each channel file is kept open and re-read with `pread` at offset 0 into a
//! stack buffer ([`kfs::pread_value`]); nothing is allocated on success. Reads can take
//! milliseconds (an SMU, an I2C/PMBus transaction, an ACPI method), so the source is read
//! on a reader thread of its own ([`Cadence::Every`], [`period_for`]).

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::{
    Cadence, Category, Device, Domain, DomainKind, OpenContext, Place, ReadError, Reading, Source,
    SourceKind, Unavailable, UnavailableKind, Wrap,
};
use crate::{fsx, kfs};

/// Where hwmon chips are listed, as an absolute system path (joined under the root).
pub const HWMON_CLASS_DIR: &str = "/sys/class/hwmon";

/// Drivers whose hwmon chip is a graphics card.
pub const GPU_DRIVERS: [&str; 5] = ["amdgpu", "i915", "xe", "nouveau", "radeon"];

/// The hwmon name of the `acpi_power_meter` driver: the whole machine's input power.
pub const POWER_METER_DRIVER: &str = "power_meter";

/// hwmon names of power supplies, compared after [`normalize_driver`] (lower case, `-` as
/// `_`). A PSU is recognised by its driver only, never by its labels: voltage regulators,
/// hot-swap controllers and DC/DC bricks speak PMBus too and label their input `pin` as
/// well, and one of them taken for a PSU would become the machine's total. A PSU missing
/// here is shown as a meter (never added), the safe side. The PMBus core names a chip
/// after its I2C client, so these are the I2C device ids of the kernel's PSU drivers:
/// corsair-psu (`corsairpsu`, USB HID), ibm-cffps (`ibm_cffps1`, `ibm_cffps2`,
/// `ibm_cffps`, renamed `cffps1`/`cffps2` once the version is read), inspur-ipsps
/// (`ipsps1`), bel-pfe (`pfe1100`, `pfe3000`), Delta PSUs of the generic pmbus driver
/// (`dps460`, `dps650ab`, `dps800`) and dps920ab, fsp-3y (`ym2151e`, `yh5151e`),
/// bpa-rs600 (`bpa-rs600`, `bpd-rs600`), acbel-fsg032 (`acbel_fsg032`), crps
/// (`intel_crps185`).
pub const PSU_DRIVERS: [&str; 20] = [
    "corsairpsu",
    "cffps1",
    "cffps2",
    "ibm_cffps",
    "ibm_cffps1",
    "ibm_cffps2",
    "ipsps1",
    "pfe1100",
    "pfe3000",
    "dps460",
    "dps650ab",
    "dps800",
    "dps920ab",
    "ym2151e",
    "yh5151e",
    "bpa_rs600",
    "bpd_rs600",
    "acbel_fsg032",
    "intel_crps185",
    "crps185",
];

/// The PCI address of Intel's integrated GPU (device 2, function 0 on bus 0).
pub const INTEGRATED_GPU_PCI_ADDRESS: &str = "0000:00:02.0";

/// The package an integrated GPU is inside.
pub const IGPU_PARENT: &str = "package-0";

/// How often a source is read when nothing slower is needed.
pub const DEFAULT_PERIOD: Duration = Duration::from_millis(100);

/// The slowest a source is read, whatever a `powerN_average_interval` says.
pub const MAX_PERIOD: Duration = Duration::from_secs(1);

/// The buffer a value is read into: a 64-bit number, a sign and whitespace fit.
const READ_BUF: usize = 32;

/// `amd-gpu`, `AMDGPU` -> `amd_gpu`, `amdgpu`: how driver names are compared.
pub fn normalize_driver(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace('-', "_")
}

/// What a chip is, by its driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ChipClass {
    /// A graphics card.
    Gpu,
    /// An ACPI power meter: the machine's input power.
    PowerMeter,
    /// A power supply.
    Psu,
    /// Any other power sensor.
    Meter,
}

impl ChipClass {
    /// The category its domains belong to.
    pub fn category(self) -> Category {
        match self {
            ChipClass::Gpu => Category::Gpu,
            ChipClass::PowerMeter | ChipClass::Psu => Category::Chassis,
            ChipClass::Meter => Category::Meter,
        }
    }
}

/// The class of a driver's chip: GPU, power meter, power supply, or another meter.
pub fn classify(driver: &str) -> ChipClass {
    let d = normalize_driver(driver);
    if GPU_DRIVERS.contains(&d.as_str()) || d.starts_with("i915_gt") {
        ChipClass::Gpu
    } else if d == POWER_METER_DRIVER {
        ChipClass::PowerMeter
    } else if PSU_DRIVERS.contains(&d.as_str()) {
        ChipClass::Psu
    } else {
        ChipClass::Meter
    }
}

/// What a channel file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// `energyN_input`: cumulative µJ.
    Energy,
    /// `powerN_input`: instantaneous µW.
    PowerInput,
    /// `powerN_average`: µW averaged by the hardware over `powerN_average_interval`.
    PowerAverage,
}

impl ChannelKind {
    /// The file of channel `n`: `energy1_input`, `power2_average`.
    pub fn file(self, n: u32) -> String {
        match self {
            ChannelKind::Energy => format!("energy{n}_input"),
            ChannelKind::PowerInput => format!("power{n}_input"),
            ChannelKind::PowerAverage => format!("power{n}_average"),
        }
    }

    fn label_file(self, n: u32) -> String {
        match self {
            ChannelKind::Energy => format!("energy{n}_label"),
            ChannelKind::PowerInput | ChannelKind::PowerAverage => format!("power{n}_label"),
        }
    }

    fn unit(self) -> &'static str {
        match self {
            ChannelKind::Energy => "microjoules",
            ChannelKind::PowerInput | ChannelKind::PowerAverage => "microwatts",
        }
    }
}

/// `energy3_input` -> `(Energy, 3)`; `power1_average_interval` and other attributes -> None.
pub fn parse_channel_file(name: &str) -> Option<(ChannelKind, u32)> {
    let (rest, energy) = match name.strip_prefix("energy") {
        Some(r) => (r, true),
        None => (name.strip_prefix("power")?, false),
    };
    let (num, suffix) = rest.split_once('_')?;
    let n = u32::try_from(kfs::parse_u64(num.as_bytes())?).ok()?;
    let kind = match (energy, suffix) {
        (true, "input") => ChannelKind::Energy,
        (false, "input") => ChannelKind::PowerInput,
        (false, "average") => ChannelKind::PowerAverage,
        _ => return None,
    };
    Some((kind, n))
}

/// Whether `s` is a PCI address, `0000:03:00.0` (domain:bus:device.function, hex).
pub fn is_pci_address(s: &str) -> bool {
    let hex = |p: &str, len: usize| p.len() == len && p.bytes().all(|b| b.is_ascii_hexdigit());
    let mut parts = s.split(':');
    let (Some(domain), Some(bus), Some(devfn), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Some((dev, func)) = devfn.split_once('.') else {
        return false;
    };
    domain.len() >= 4
        && hex(domain, domain.len())
        && hex(bus, 2)
        && hex(dev, 2)
        && func.len() == 1
        && func.bytes().all(|b| (b'0'..=b'7').contains(&b))
}

/// One power or energy channel of a chip.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChannelInfo {
    /// `energy1_input`, `power2_average`.
    pub file: String,
    pub index: u32,
    pub kind: ChannelKind,
    /// Its `..._label`, trimmed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// `powerN_average_interval`, ms (power averages only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub average_interval_ms: Option<u64>,
    /// Whether joulerun reads it.
    pub used: bool,
}

/// One hwmon chip, as [`survey`] sees it: for `joulerun list`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChipInfo {
    /// `hwmon3`.
    pub hwmon: String,
    /// The directory its attributes are read from.
    pub path: PathBuf,
    /// Its `name`: the driver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// The device it belongs to (the last part of its `device` link): a PCI address, an
    /// ACPI or platform device name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// `device`, when that is a PCI address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pci_address: Option<String>,
    /// GPU, power meter, PSU or meter; `None` for a chip without power or energy channels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<ChipClass>,
    /// Its power and energy channels.
    pub channels: Vec<ChannelInfo>,
    /// The domains it gives (none when skipped).
    pub domains: Vec<String>,
    /// Where they sit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub place: Option<Place>,
    /// Why it sits there, when it is not the class's usual place.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub place_reason: Option<String>,
    /// Why it gives no domain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// Everything found about one chip, before any channel is opened.
#[derive(Clone, Debug)]
struct Chip {
    info: ChipInfo,
    number: u64,
    /// `<root>/sys/class/hwmon/hwmonN`: its disappearance means the device is gone.
    link: PathBuf,
    in1_label: Option<String>,
    /// The card's model, when its driver says (amdgpu's `device/product_name`).
    model: Option<String>,
    /// Why its directory could not be listed: it may have channels nobody can see.
    list_error: Option<String>,
}

impl Chip {
    /// Whether it has (or, unlistable, may have) power or energy channels.
    fn candidate(&self) -> bool {
        !self.info.channels.is_empty() || self.list_error.is_some()
    }
}

/// A domain to open: which chip, which channel, and what it becomes.
#[derive(Clone, Debug)]
struct Planned {
    chip: usize,
    class: ChipClass,
    channel: ChannelInfo,
    domain: Domain,
    wrap: Wrap,
}

/// The survey of every chip and the domains they give.
struct Scan {
    class_dir: PathBuf,
    chips: Vec<Chip>,
    planned: Vec<Planned>,
    /// Warnings found while planning, each with the class of chips it concerns (a chip
    /// whose driver is unknown would have been a meter).
    warnings: Vec<(ChipClass, String)>,
}

fn read_trimmed(path: &Path) -> io::Result<String> {
    fsx::read_attr_string(path).map(|s| s.trim().to_string())
}

fn read_nonempty(path: &Path) -> Option<String> {
    read_trimmed(path).ok().filter(|s| !s.is_empty())
}

/// `hwmon12` -> 12.
fn hwmon_number(name: &str) -> Option<u64> {
    kfs::parse_u64(name.strip_prefix("hwmon")?.as_bytes())
}

fn read_chip(link: PathBuf, hwmon: String, number: u64) -> Chip {
    // New-style chips have their attributes here; old-style ones on their device.
    let device_dir = link.join("device");
    let path = if fs::metadata(link.join("name")).is_err()
        && fs::metadata(device_dir.join("name")).is_ok()
    {
        device_dir.clone()
    } else {
        link.clone()
    };
    let device = fs::read_link(&device_dir)
        .ok()
        .and_then(|t| t.file_name().and_then(|n| n.to_str()).map(str::to_string));
    let pci_address = device.clone().filter(|d| is_pci_address(d));
    let mut info = ChipInfo {
        hwmon,
        path: path.clone(),
        driver: None,
        device,
        pci_address,
        class: None,
        channels: Vec::new(),
        domains: Vec::new(),
        place: None,
        place_reason: None,
        skipped: None,
    };
    let mut channels = Vec::new();
    let mut list_error = None;
    match fs::read_dir(&path) {
        Err(e) => list_error = Some(format!("cannot list {}: {e}", path.display())),
        Ok(entries) => {
            for e in entries.flatten() {
                let name = e.file_name();
                let Some((kind, index)) = name.to_str().and_then(parse_channel_file) else {
                    continue;
                };
                let label = read_nonempty(&path.join(kind.label_file(index)));
                let average_interval_ms = (kind == ChannelKind::PowerAverage)
                    .then(|| {
                        fsx::read_regular(
                            &path.join(format!("power{index}_average_interval")),
                            fsx::ATTR_LIMIT,
                        )
                        .ok()
                        .and_then(|b| kfs::parse_decimal_u64(&b))
                    })
                    .flatten();
                channels.push(ChannelInfo {
                    file: kind.file(index),
                    index,
                    kind,
                    label,
                    average_interval_ms,
                    used: false,
                });
            }
        }
    }
    channels.sort_by_key(|c| (c.index, c.kind));
    info.channels = channels;
    match read_trimmed(&path.join("name")) {
        Ok(n) if !n.is_empty() => info.driver = Some(n),
        Ok(_) => {
            info.skipped = Some(format!("{} is empty", path.join("name").display()));
        }
        Err(e) => {
            info.skipped = Some(format!("cannot read {}: {e}", path.join("name").display()));
        }
    }
    let in1_label = read_nonempty(&path.join("in1_label"));
    let model = read_nonempty(&device_dir.join("product_name"));
    Chip {
        info,
        number,
        link,
        in1_label,
        model,
        list_error,
    }
}

fn find_chips(class_dir: &Path) -> io::Result<Vec<Chip>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(class_dir)? {
        let Ok(entry) = entry else { continue };
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            continue;
        };
        let Some(number) = hwmon_number(name) else {
            continue;
        };
        found.push((number, name.to_string()));
    }
    found.sort();
    Ok(found
        .into_iter()
        .map(|(number, name)| read_chip(class_dir.join(&name), name, number))
        .collect())
}

/// The best kind among `channels` (energy, then instantaneous, then average power).
fn best_kind<'a>(channels: impl Iterator<Item = &'a ChannelInfo>) -> Option<ChannelKind> {
    channels.map(|c| c.kind).min()
}

fn label_is(c: &ChannelInfo, want: &str) -> bool {
    c.label
        .as_deref()
        .is_some_and(|l| l.eq_ignore_ascii_case(want))
}

/// A GPU's channel: of the best kind it has, the one labelled `card`, else the first.
fn gpu_channel(channels: &[ChannelInfo]) -> Option<&ChannelInfo> {
    let kind = best_kind(channels.iter())?;
    let of_kind = || channels.iter().filter(move |c| c.kind == kind);
    of_kind()
        .find(|c| label_is(c, "card"))
        .or_else(|| of_kind().next())
}

/// Whether a label names a PMBus input power: `pin`, or `pin1` on a device whose input
/// power is paged (the PMBus core then numbers it by page).
fn is_pin_label(c: &ChannelInfo) -> bool {
    c.label.as_deref().is_some_and(|l| {
        l.strip_prefix("pin")
            .is_some_and(|rest| rest.is_empty() || rest == "1")
    })
}

/// A PSU's input-power channel: labelled `pin` (PMBus; `pin1`, the first page's, when the
/// PMBus core pages it), or corsairpsu's `power total`.
fn psu_channel(channels: &[ChannelInfo]) -> Option<&ChannelInfo> {
    let input = |c: &&ChannelInfo| is_pin_label(c) || label_is(c, "power total");
    let kind = best_kind(channels.iter().filter(input))?;
    channels.iter().filter(input).find(|c| c.kind == kind)
}

/// A meter's channels: one per sensor. Channels of one number and one label (or none)
/// read the same sensor two ways (`energy1_input` and `power1_average`, `power1_input` and
/// `power1_average`): the best kind is kept.
fn meter_channels(channels: &[ChannelInfo]) -> Vec<&ChannelInfo> {
    let same = |a: &ChannelInfo, b: &ChannelInfo| {
        a.index == b.index && a.label == b.label && a.kind != b.kind
    };
    let mut chosen: Vec<&ChannelInfo> = Vec::new();
    for c in channels {
        match chosen.iter().position(|k| same(k, c)) {
            Some(i) if c.kind < chosen[i].kind => chosen[i] = c,
            Some(_) => {}
            None => chosen.push(c),
        }
    }
    chosen.sort_by_key(|c| (c.index, c.kind));
    chosen
}

/// Characters other than ASCII letters, digits and `-_.+` become `_` in domain names.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// How a counter wraps, by driver: i915 and xe extend their 32-bit hardware counter into a
/// 64-bit value in µJ in the driver (their ABI documents `energy1_input` as "an unsigned
/// integer number that can be stored in 64-bits"); for anything else the width is unknown.
fn energy_wrap(driver: &str) -> Wrap {
    match normalize_driver(driver).as_str() {
        "i915" | "xe" => Wrap::Full64,
        _ => Wrap::Unknown,
    }
}

/// How often to read a channel: 100 ms, but a `powerN_average` no faster than its averaging
/// interval (reading faster only repeats the value, and each read can be an ACPI method or
/// a bus transaction), within 100 ms..1 s.
pub fn period_for(kind: ChannelKind, average_interval_ms: Option<u64>) -> Duration {
    match (kind, average_interval_ms) {
        (ChannelKind::PowerAverage, Some(ms)) => {
            Duration::from_millis(ms).clamp(DEFAULT_PERIOD, MAX_PERIOD)
        }
        _ => DEFAULT_PERIOD,
    }
}

fn scan(ctx: &OpenContext) -> Result<Scan, Unavailable> {
    let class_dir = ctx.root.path(HWMON_CLASS_DIR);
    let mut chips = match find_chips(&class_dir) {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Unavailable::new(
                SourceKind::Hwmon,
                UnavailableKind::NotPresent,
                format!(
                    "no hwmon sensors: {} does not exist (a kernel without hwmon, or a \
                     container without /sys)",
                    class_dir.display()
                ),
                None,
            ));
        }
        Err(e) => {
            return Err(Unavailable::new(
                SourceKind::Hwmon,
                UnavailableKind::Invalid,
                format!("cannot list {}: {e}", class_dir.display()),
                None,
            ));
        }
    };
    let mut warnings = Vec::new();
    // Classes, channels, and the order of GPUs.
    for chip in &mut chips {
        if let Some(why) = chip.list_error.clone() {
            let class = chip
                .info
                .driver
                .as_deref()
                .map_or(ChipClass::Meter, classify);
            chip.info.class = chip.info.driver.is_some().then_some(class);
            warnings.push((
                class,
                format!(
                    "{} ({}) left out: {why}",
                    chip.info.hwmon,
                    chip.info.driver.as_deref().unwrap_or("driver unknown")
                ),
            ));
            chip.info.skipped = Some(why);
            continue;
        }
        if chip.info.channels.is_empty() {
            chip.info.skipped.get_or_insert_with(|| {
                "no power or energy channel (a temperature, voltage or fan sensor)".to_string()
            });
            continue;
        }
        let Some(driver) = chip.info.driver.clone() else {
            warnings.push((
                ChipClass::Meter,
                format!(
                    "{} left out: it has power or energy channels but its driver is unknown: {}",
                    chip.info.hwmon,
                    chip.info.skipped.as_deref().unwrap_or("no name")
                ),
            ));
            continue;
        };
        chip.info.class = Some(classify(&driver));
    }
    let mut gpus: Vec<usize> = (0..chips.len())
        .filter(|&i| chips[i].info.class == Some(ChipClass::Gpu) && chips[i].info.skipped.is_none())
        .collect();
    gpus.sort_by(|&a, &b| {
        let key = |c: &Chip| {
            (
                c.info.pci_address.is_none(),
                c.info.pci_address.clone(),
                c.number,
            )
        };
        key(&chips[a]).cmp(&key(&chips[b]))
    });

    let mut planned = Vec::new();
    let mut plan = |chips: &mut Vec<Chip>,
                    i: usize,
                    class: ChipClass,
                    channel: &ChannelInfo,
                    domain: Domain| {
        let chip = &mut chips[i];
        let driver = chip.info.driver.clone().unwrap_or_default();
        chip.info.domains.push(domain.name.clone());
        chip.info.place = Some(domain.place.clone());
        if let Some(c) = chip
            .info
            .channels
            .iter_mut()
            .find(|c| c.file == channel.file)
        {
            c.used = true;
        }
        planned.push(Planned {
            chip: i,
            class,
            channel: channel.clone(),
            domain,
            wrap: if channel.kind == ChannelKind::Energy {
                energy_wrap(&driver)
            } else {
                Wrap::Unknown
            },
        });
    };

    // GPUs, one per card.
    let mut gpu_index = 0u32;
    for &i in &gpus {
        let chip = &chips[i];
        let driver = chip.info.driver.clone().unwrap_or_default();
        let d = normalize_driver(&driver);
        if d.starts_with("i915_gt") {
            chips[i].info.skipped = Some(
                "a per-GT counter of an i915 card: the card's own i915 chip covers it".to_string(),
            );
            continue;
        }
        let Some(channel) = gpu_channel(&chip.info.channels).cloned() else {
            continue;
        };
        let (place, reason) = if (d == "i915" || d == "xe")
            && chip.info.pci_address.as_deref() == Some(INTEGRATED_GPU_PCI_ADDRESS)
        {
            (
                Place::Inside(IGPU_PARENT.to_string()),
                Some(format!(
                    "integrated GPU (PCI {INTEGRATED_GPU_PCI_ADDRESS}): inside the CPU package, \
                     whose counter ({IGPU_PARENT}) already includes it"
                )),
            )
        } else if d == "amdgpu" && chip.in1_label.as_deref() == Some("vddnb") {
            (
                Place::Overlaps,
                Some(
                    "APU (in1_label is vddnb, which amdgpu exposes on APUs only): its power is \
                     the whole SoC's, CPU cores included, so it overlaps the CPU package"
                        .to_string(),
                ),
            )
        } else {
            (Place::Part, None)
        };
        let domain = Domain::on_device(
            format!("gpu-{gpu_index}"),
            DomainKind::Gpu,
            Device::Gpu {
                index: gpu_index,
                uuid: None,
                name: Some(chip.model.clone().unwrap_or(driver)),
            },
            SourceKind::Hwmon,
        )
        .placed(place);
        chips[i].info.place_reason = reason;
        plan(&mut chips, i, ChipClass::Gpu, &channel, domain);
        gpu_index += 1;
    }

    // Power meters: the first is the chassis.
    let meters: Vec<usize> = (0..chips.len())
        .filter(|&i| chips[i].info.class == Some(ChipClass::PowerMeter))
        .collect();
    let mut have_power_meter = false;
    for (k, &i) in meters.iter().enumerate() {
        let Some(channel) = best_kind(chips[i].info.channels.iter())
            .and_then(|kind| chips[i].info.channels.iter().find(|c| c.kind == kind))
            .cloned()
        else {
            continue;
        };
        let (name, place) = if k == 0 {
            ("chassis".to_string(), Place::Whole)
        } else {
            warnings.push((
                ChipClass::PowerMeter,
                format!(
                    "several ACPI power meters ({}): the first is the chassis; chassis-{k} ({}) \
                     is shown, not added",
                    meters
                        .iter()
                        .map(|&m| chips[m].info.hwmon.clone())
                        .collect::<Vec<_>>()
                        .join(", "),
                    chips[i].info.hwmon
                ),
            ));
            chips[i].info.place_reason =
                Some("another power meter is the chassis already".to_string());
            (format!("chassis-{k}"), Place::Overlaps)
        };
        let domain = Domain::on_device(
            name,
            DomainKind::Chassis,
            Device::Chassis,
            SourceKind::Hwmon,
        )
        .placed(place);
        plan(&mut chips, i, ChipClass::PowerMeter, &channel, domain);
        have_power_meter = true;
    }

    // Power supplies: together the whole, unless a power meter measures it.
    let mut psu_index = 0u32;
    for i in 0..chips.len() {
        if chips[i].info.class != Some(ChipClass::Psu) {
            continue;
        }
        let Some(channel) = psu_channel(&chips[i].info.channels).cloned() else {
            chips[i].info.skipped = Some(
                "no input-power channel (labelled 'pin'): its output rails are not the \
                 machine's input power"
                    .to_string(),
            );
            continue;
        };
        let place = if have_power_meter {
            chips[i].info.place_reason =
                Some("the ACPI power meter (chassis) measures the same input power".to_string());
            Place::Inside("chassis".to_string())
        } else {
            Place::Whole
        };
        if label_is(&channel, "power total") {
            warnings.push((
                ChipClass::Psu,
                format!(
                    "psu-{psu_index} ({}, {}): the driver reports the supply's total DC output \
                     ('power total'), not its AC input: the supply's own losses (typically \
                     5-15%) are not included",
                    chips[i].info.driver.as_deref().unwrap_or_default(),
                    chips[i].info.hwmon
                ),
            ));
        }
        let domain = Domain::on_device(
            format!("psu-{psu_index}"),
            DomainKind::Chassis,
            Device::Chassis,
            SourceKind::Hwmon,
        )
        .placed(place);
        plan(&mut chips, i, ChipClass::Psu, &channel, domain);
        psu_index += 1;
    }

    // Other meters: one domain per channel, never added.
    let mut names: Vec<(usize, ChannelInfo, String)> = Vec::new();
    for (i, chip) in chips.iter().enumerate() {
        if chip.info.class != Some(ChipClass::Meter) {
            continue;
        }
        let driver = clean(chip.info.driver.as_deref().unwrap_or_default());
        let chosen = meter_channels(&chip.info.channels);
        let several = chosen.len() > 1;
        for c in chosen {
            let name = match (&c.label, several) {
                (Some(l), _) => format!("{driver}-{}", clean(l)),
                (None, true) => format!("{driver}-{}", c.file.split('_').next().unwrap_or("")),
                (None, false) => driver.clone(),
            };
            names.push((i, c.clone(), name));
        }
    }
    for k in 0..names.len() {
        let (i, channel, base) = names[k].clone();
        let same: Vec<usize> = (0..names.len())
            .filter(|&j| j != k && names[j].2 == base)
            .map(|j| names[j].0)
            .collect();
        let mut name = base;
        // Two chips of one driver: told apart by their hwmon number; two channels of one
        // chip with one label: by the channel.
        if same.iter().any(|&chip| chip != i) {
            name = format!("{name}-{}", chips[i].info.hwmon);
        }
        if same.contains(&i) {
            name = format!("{name}-{}", channel.file.split('_').next().unwrap_or(""));
        }
        let domain = Domain::on_device(
            format!("meter-{name}"),
            DomainKind::Meter,
            Device::Meter { name },
            SourceKind::Hwmon,
        )
        .placed(Place::Overlaps);
        plan(&mut chips, i, ChipClass::Meter, &channel, domain);
    }
    Ok(Scan {
        class_dir,
        chips,
        planned,
        warnings,
    })
}

/// Every hwmon chip under the root, what it is and what joulerun makes of it (or why it
/// is skipped): for `joulerun list`. Nothing is opened for reading beyond the small
/// attribute files (`name`, labels, intervals). Empty when there is no hwmon directory.
pub fn survey(ctx: &OpenContext) -> Vec<ChipInfo> {
    match scan(ctx) {
        Ok(s) => s.chips.into_iter().map(|c| c.info).collect(),
        Err(_) => Vec::new(),
    }
}

/// The fix printed when a channel file is readable by root only.
pub fn permission_fix(path: &Path) -> String {
    format!(
        "run joulerun as root, or let your user read the sensor: `sudo chmod o+r {}` (until \
         reboot; a udev rule makes it last)",
        path.display()
    )
}

/// Turn the error of opening a channel file into the reason it is unavailable: EACCES and
/// EPERM are [`UnavailableKind::Permission`] naming the file, anything else
/// [`UnavailableKind::Invalid`].
pub fn classify_open_error(path: &Path, err: &io::Error) -> Unavailable {
    Unavailable::from_open_error(SourceKind::Hwmon, path, err, || permission_fix(path))
}

/// One opened channel.
#[derive(Debug)]
struct Opened {
    path: PathBuf,
    /// `<root>/sys/class/hwmon/hwmonN`: gone with the device.
    chip_link: PathBuf,
    file: File,
    kind: ChannelKind,
    wrap: Wrap,
}

impl Opened {
    /// The error for a read that failed (`err`) or gave nothing: gone for good when the
    /// chip's directory has disappeared (a GPU unplugged, the driver unbound), otherwise
    /// worth retrying. Allocates: failures only.
    fn failure(&self, err: Option<io::Error>) -> ReadError {
        let what = match &err {
            Some(e) => e.to_string(),
            None => "no data".to_string(),
        };
        match fs::metadata(&self.chip_link) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => ReadError::gone(format!(
                "read {}: {what} (the hwmon chip {} has disappeared: device removed or driver \
                 unbound)",
                self.path.display(),
                self.chip_link.display()
            )),
            _ => match (err, fs::metadata(&self.path)) {
                (_, Err(e)) => {
                    ReadError::new(format!("read {}: {what} ({e})", self.path.display()))
                }
                (None, Ok(m)) if !m.is_file() => ReadError::new(format!(
                    "read {}: no data, and the path is no longer a regular file",
                    self.path.display()
                )),
                (None, Ok(_)) => ReadError::new(format!(
                    "read {}: empty, expected a decimal number of {}",
                    self.path.display(),
                    self.kind.unit()
                )),
                (Some(_), Ok(_)) => ReadError::new(format!("read {}: {what}", self.path.display())),
            },
        }
    }

    /// Read the channel now. Allocates only on failure.
    fn read(&self) -> Result<Reading, ReadError> {
        let mut buf = [0u8; READ_BUF];
        let n = match kfs::pread_value(&self.file, &mut buf) {
            Ok(0) => return Err(self.failure(None)),
            Ok(n) => n,
            Err(e) => return Err(self.failure(Some(e))),
        };
        let bad = || {
            ReadError::new(format!(
                "read {}: expected a decimal number of {}, got {:?}",
                self.path.display(),
                self.kind.unit(),
                String::from_utf8_lossy(&buf[..n])
            ))
        };
        match self.kind {
            ChannelKind::Energy => kfs::parse_decimal_u64(&buf[..n])
                .map(|value| Reading::Counter {
                    value,
                    wrap: self.wrap,
                    joules_per_unit: 1e-6,
                })
                .ok_or_else(bad),
            // A negative or zero power is passed on: the integrator and the ceilings judge
            // plausibility (an idle power meter can read 0).
            ChannelKind::PowerInput | ChannelKind::PowerAverage => {
                kfs::parse_decimal_i64(&buf[..n])
                    .map(|uw| Reading::Power {
                        watts: uw as f64 * 1e-6,
                    })
                    .ok_or_else(bad)
            }
        }
    }
}

/// Power and energy sensors read through hwmon: the GPUs, the chassis, the other meters,
/// or all of them.
#[derive(Debug)]
pub struct HwmonSource {
    domains: Vec<Domain>,
    channels: Vec<Opened>,
    period: Duration,
    warnings: Vec<String>,
}

/// What an `open_*` function looks for.
#[derive(Clone, Copy)]
struct Wanted {
    classes: &'static [ChipClass],
    /// "GPU", "chassis power meter or power supply"...
    what: &'static str,
    fix: Option<&'static str>,
}

const GPU_FIX: &str = "AMD and Intel cards report their power through their driver's hwmon \
    chip (amdgpu, xe, i915): check the driver is loaded (`lsmod | grep -e amdgpu -e xe -e \
    i915`); NVIDIA cards are read through NVML, not hwmon";
const CHASSIS_FIX: &str = "servers expose their input power through ACPI (`sudo modprobe \
    acpi_power_meter`) or through their power supplies' PMBus drivers (loaded by the \
    platform, see `sensors`); a BMC (IPMI DCMI) is the other way to read the chassis";

impl HwmonSource {
    /// The GPUs with a power or energy sensor: one domain per card.
    pub fn open_gpu(ctx: &OpenContext) -> Result<HwmonSource, Unavailable> {
        Self::open_wanted(
            ctx,
            Wanted {
                classes: &[ChipClass::Gpu],
                what: "GPU",
                fix: Some(GPU_FIX),
            },
        )
    }

    /// The chassis: an ACPI power meter (`chassis`) and the power supplies (`psu-N`).
    pub fn open_chassis(ctx: &OpenContext) -> Result<HwmonSource, Unavailable> {
        Self::open_wanted(
            ctx,
            Wanted {
                classes: &[ChipClass::PowerMeter, ChipClass::Psu],
                what: "power meter or power supply",
                fix: Some(CHASSIS_FIX),
            },
        )
    }

    /// Every other power sensor: shown, never added.
    pub fn open_meters(ctx: &OpenContext) -> Result<HwmonSource, Unavailable> {
        Self::open_wanted(
            ctx,
            Wanted {
                classes: &[ChipClass::Meter],
                what: "power meter other than a GPU, an ACPI power meter or a power supply",
                fix: None,
            },
        )
    }

    /// Every hwmon domain of every class (what `sources::open(SourceKind::Hwmon)` gives).
    pub fn open_all(ctx: &OpenContext) -> Result<HwmonSource, Unavailable> {
        Self::open_wanted(
            ctx,
            Wanted {
                classes: &[
                    ChipClass::Gpu,
                    ChipClass::PowerMeter,
                    ChipClass::Psu,
                    ChipClass::Meter,
                ],
                what: "sensor",
                fix: None,
            },
        )
    }

    fn open_wanted(ctx: &OpenContext, wanted: Wanted) -> Result<HwmonSource, Unavailable> {
        let scan = scan(ctx)?;
        let not_present = |reason: String| {
            Unavailable::new(
                SourceKind::Hwmon,
                UnavailableKind::NotPresent,
                reason,
                wanted.fix.map(str::to_string),
            )
        };
        let with_power: Vec<&Chip> = scan.chips.iter().filter(|c| c.candidate()).collect();
        if with_power.is_empty() {
            return Err(not_present(format!(
                "no hwmon chip reports power or energy under {} ({} chips: temperature, \
                 voltage or fan sensors only)",
                scan.class_dir.display(),
                scan.chips.len()
            )));
        }
        let describe = |c: &Chip| match &c.info.driver {
            Some(d) => format!("{d} ({})", c.info.hwmon),
            None => format!(
                "{} (driver unknown: {})",
                c.info.hwmon,
                c.info.skipped.as_deref().unwrap_or("no name")
            ),
        };
        let of_class: Vec<&Chip> = with_power
            .iter()
            .copied()
            .filter(|c| c.info.class.is_some_and(|k| wanted.classes.contains(&k)))
            .collect();
        let mut warnings: Vec<String> = scan
            .warnings
            .iter()
            .filter(|(class, _)| wanted.classes.contains(class))
            .map(|(_, w)| w.clone())
            .collect();
        if of_class.is_empty() {
            return Err(not_present(format!(
                "no {} among the {} hwmon chips with power readings (found: {})",
                wanted.what,
                with_power.len(),
                with_power
                    .iter()
                    .map(|c| describe(c))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let planned: Vec<&Planned> = scan
            .planned
            .iter()
            .filter(|p| wanted.classes.contains(&p.class))
            .collect();
        if planned.is_empty() {
            return Err(not_present(format!(
                "hwmon {} chips found, none usable: {}",
                wanted.what,
                of_class
                    .iter()
                    .map(|c| format!(
                        "{}: {}",
                        describe(c),
                        c.info.skipped.as_deref().unwrap_or("no usable channel")
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
        let mut domains = Vec::new();
        let mut channels = Vec::new();
        let mut period = DEFAULT_PERIOD;
        let mut permission: Option<Unavailable> = None;
        let mut other: Option<Unavailable> = None;
        for p in planned {
            let chip = &scan.chips[p.chip];
            let path = chip.info.path.join(&p.channel.file);
            let opened = fsx::open_regular(&path)
                .map_err(|e| classify_open_error(&path, &e))
                .and_then(|file| {
                    let o = Opened {
                        path: path.clone(),
                        chip_link: chip.link.clone(),
                        file,
                        kind: p.channel.kind,
                        wrap: p.wrap,
                    };
                    match o.read() {
                        Ok(_) => Ok(o),
                        Err(e) => Err(Unavailable::new(
                            SourceKind::Hwmon,
                            UnavailableKind::Invalid,
                            e.message,
                            None,
                        )),
                    }
                });
            match opened {
                Ok(o) => {
                    period = period.max(period_for(p.channel.kind, p.channel.average_interval_ms));
                    domains.push(p.domain.clone());
                    channels.push(o);
                }
                Err(u) => {
                    warnings.push(format!(
                        "{} ({}) left out: {}",
                        p.domain.name,
                        describe(chip),
                        u.reason
                    ));
                    if u.kind == UnavailableKind::Permission {
                        permission.get_or_insert(u);
                    } else {
                        other.get_or_insert(u);
                    }
                }
            }
        }
        if domains.is_empty() {
            // Nothing planned opened: the first failure says why (permission first).
            if let Some(u) = permission.or(other) {
                return Err(u);
            }
        }
        // PSUs are inside the power meter only if it is read: otherwise they are the whole.
        let chassis = Place::Inside("chassis".to_string());
        if !domains.iter().any(|d| d.name == "chassis")
            && domains.iter().any(|d| d.place == chassis)
        {
            for d in domains.iter_mut().filter(|d| d.place == chassis) {
                d.place = Place::Whole;
            }
            warnings.push(
                "the power meter (chassis) could not be read: the power supplies are the whole \
                 machine instead"
                    .to_string(),
            );
        }
        Ok(HwmonSource {
            domains,
            channels,
            period,
            warnings,
        })
    }

    /// The file each domain is read from, in `domains()` order.
    pub fn paths(&self) -> Vec<&Path> {
        self.channels.iter().map(|c| c.path.as_path()).collect()
    }

    /// How often it is read.
    pub fn period(&self) -> Duration {
        self.period
    }
}

impl Source for HwmonSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Hwmon
    }

    fn domains(&self) -> &[Domain] {
        &self.domains
    }

    fn read(&mut self, out: &mut Vec<Result<Reading, ReadError>>) {
        out.clear();
        for c in &self.channels {
            out.push(c.read());
        }
    }

    fn cadence(&self) -> Cadence {
        Cadence::Every(self.period)
    }

    fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_files() {
        assert_eq!(
            parse_channel_file("energy1_input"),
            Some((ChannelKind::Energy, 1))
        );
        assert_eq!(
            parse_channel_file("power12_input"),
            Some((ChannelKind::PowerInput, 12))
        );
        assert_eq!(
            parse_channel_file("power2_average"),
            Some((ChannelKind::PowerAverage, 2))
        );
        for other in [
            "power1_average_interval",
            "power1_label",
            "power1_cap",
            "power1_input_highest",
            "energy1_label",
            "energy1_average",
            "temp1_input",
            "power_input",
            "powerx_input",
            "power-1_input",
            "name",
        ] {
            assert_eq!(parse_channel_file(other), None, "{other}");
        }
    }

    #[test]
    fn pci_addresses() {
        for ok in [
            "0000:00:02.0",
            "0000:03:00.0",
            "10000:c1:1f.7",
            "0000:AB:00.1",
        ] {
            assert!(is_pci_address(ok), "{ok}");
        }
        for bad in [
            "ACPI000D:00",
            "coretemp.0",
            "0000:00:02",
            "0000:00:02.8",
            "000:00:02.0",
            "0000:0:02.0",
            "0000:00:02.0:1",
            "",
        ] {
            assert!(!is_pci_address(bad), "{bad}");
        }
    }

    #[test]
    fn drivers_are_classified() {
        for gpu in ["amdgpu", "i915", "xe", "nouveau", "radeon", "i915_gt0"] {
            assert_eq!(classify(gpu), ChipClass::Gpu, "{gpu}");
        }
        assert_eq!(classify("power_meter"), ChipClass::PowerMeter);
        for psu in [
            "corsairpsu",
            "ipsps1",
            "pfe3000",
            "cffps2",
            "bpa-rs600",
            "acbel_fsg032",
            "intel_crps185",
        ] {
            assert_eq!(classify(psu), ChipClass::Psu, "{psu}");
        }
        // PMBus regulators and hot-swap controllers are not power supplies.
        for meter in [
            "pmbus",
            "ina3221",
            "mp2975",
            "adm1275",
            "amd_energy",
            "k10temp",
        ] {
            assert_eq!(classify(meter), ChipClass::Meter, "{meter}");
        }
    }

    #[test]
    fn periods_follow_the_averaging_interval_within_bounds() {
        let ms = Duration::from_millis;
        assert_eq!(period_for(ChannelKind::Energy, None), ms(100));
        assert_eq!(period_for(ChannelKind::PowerInput, Some(5000)), ms(100));
        assert_eq!(period_for(ChannelKind::PowerAverage, None), ms(100));
        assert_eq!(period_for(ChannelKind::PowerAverage, Some(10)), ms(100));
        assert_eq!(period_for(ChannelKind::PowerAverage, Some(250)), ms(250));
        assert_eq!(period_for(ChannelKind::PowerAverage, Some(1000)), ms(1000));
        assert_eq!(
            period_for(ChannelKind::PowerAverage, Some(30_000)),
            ms(1000)
        );
    }

    fn ch(kind: ChannelKind, index: u32, label: Option<&str>) -> ChannelInfo {
        ChannelInfo {
            file: kind.file(index),
            index,
            kind,
            label: label.map(str::to_string),
            average_interval_ms: None,
            used: false,
        }
    }

    #[test]
    fn channel_choice() {
        use ChannelKind::*;
        // xe: card over pkg.
        let xe = [ch(Energy, 1, Some("pkg")), ch(Energy, 2, Some("card"))];
        assert_eq!(gpu_channel(&xe).unwrap().file, "energy2_input");
        // An energy counter over any power; the first when nothing is labelled card.
        let mixed = [
            ch(PowerAverage, 1, Some("PPT")),
            ch(PowerInput, 1, Some("PPT")),
            ch(Energy, 3, None),
        ];
        assert_eq!(gpu_channel(&mixed).unwrap().file, "energy3_input");
        let amd = [
            ch(PowerAverage, 1, Some("PPT")),
            ch(PowerInput, 1, Some("PPT")),
        ];
        assert_eq!(gpu_channel(&amd).unwrap().file, "power1_input");
        // PSUs: the input, never an output rail.
        let pmbus = [
            ch(PowerInput, 1, Some("pin")),
            ch(PowerInput, 2, Some("pout1")),
            ch(PowerInput, 3, Some("pout2")),
        ];
        assert_eq!(psu_channel(&pmbus).unwrap().file, "power1_input");
        let outputs = [ch(PowerInput, 2, Some("pout1"))];
        assert!(psu_channel(&outputs).is_none());
        let paged = [
            ch(PowerInput, 1, Some("pin1")),
            ch(PowerInput, 2, Some("pin2")),
        ];
        assert_eq!(psu_channel(&paged).unwrap().file, "power1_input");
        let pinned = [ch(PowerInput, 1, Some("pins"))];
        assert!(psu_channel(&pinned).is_none());
        let corsair = [
            ch(PowerInput, 1, Some("power total")),
            ch(PowerInput, 2, Some("power +12v")),
        ];
        assert_eq!(psu_channel(&corsair).unwrap().file, "power1_input");
        // Meters: one per sensor, an energy counter preferred to the same sensor's power.
        let ibmaem = [
            ch(Energy, 1, None),
            ch(PowerAverage, 1, None),
            ch(PowerAverage, 2, None),
        ];
        let files: Vec<&str> = meter_channels(&ibmaem)
            .iter()
            .map(|c| c.file.as_str())
            .collect();
        assert_eq!(files, ["energy1_input", "power2_average"]);
    }

    #[test]
    fn eacces_and_eperm_are_permission_naming_the_file() {
        let p = Path::new("/sys/class/hwmon/hwmon3/energy1_input");
        for errno in [libc::EACCES, libc::EPERM] {
            let u = classify_open_error(p, &io::Error::from_raw_os_error(errno));
            assert_eq!(u.kind, UnavailableKind::Permission);
            assert_eq!(
                u.reason,
                "cannot read /sys/class/hwmon/hwmon3/energy1_input: permission denied"
            );
            assert!(
                u.fix
                    .unwrap()
                    .contains("sudo chmod o+r /sys/class/hwmon/hwmon3/energy1_input")
            );
        }
        let u = classify_open_error(p, &io::Error::from_raw_os_error(libc::EIO));
        assert_eq!(u.kind, UnavailableKind::Invalid);
    }
}
