//! A fake `/sys/class/hwmon` tree: chips with a `name`, power and energy channels with
//! their labels, `powerN_average_interval`, `in1_label`, other sensors, and a `device`
//! link to a fake device directory (a PCI device such as
//! `sys/devices/pci0000:00/0000:03:00.0`, an ACPI or platform device).
//!
//! Laid out like the kernel's: each chip's directory is `sys/devices/<device>/hwmon/hwmonN`
//! (`sys/devices/virtual/hwmon/hwmonN` without a device) with a relative symlink
//! `sys/class/hwmon/hwmonN` to it. A chip registered the old way
//! ([`HwmonChip::attributes_on_device`]) keeps its attributes, `name` included, in the
//! device's directory and only the `device` link in `hwmonN`.
//!
//! Values are written **in place** (`pwrite` at offset 0 of the same inode) as 20-digit
//! zero-padded decimals, so a reader keeping a file open sees live values, and
//! [`crate::fakehw::CounterDriver`] drives them while a real child runs
//! ([`crate::fakehw::DrivenCounter::power`], [`crate::fakehw::DrivenCounter::hwmon_energy`]
//! with [`FakeHwmon::attr_path`]).
//!
//! Permission failures: [`FakeHwmon::chmod`] does not stop root; see the module
//! documentation of [`crate::fakehw`].

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::fakehw::energy_text;

/// The content of a fake power file for `watts`: µW, 20 digits and a newline.
pub fn power_text(watts: f64) -> String {
    energy_text((watts * 1e6).round().max(0.0) as u64)
}

/// A chip to add to a [`FakeHwmon`].
#[derive(Clone, Debug)]
pub struct HwmonChip {
    name: String,
    /// Under `sys/devices`: `pci0000:00/0000:03:00.0`.
    device: Option<String>,
    attrs_on_device: bool,
    files: Vec<(String, String)>,
    device_files: Vec<(String, String)>,
}

impl HwmonChip {
    /// A chip whose `name` (driver) is `name`, with no device and no channel yet.
    pub fn new(name: &str) -> HwmonChip {
        HwmonChip {
            name: name.to_string(),
            device: None,
            attrs_on_device: false,
            files: Vec::new(),
            device_files: Vec::new(),
        }
    }

    /// On the PCI device at `address` (`0000:03:00.0`), under `sys/devices/pci0000:00`.
    pub fn pci(mut self, address: &str) -> HwmonChip {
        self.device = Some(format!("pci0000:00/{address}"));
        self
    }

    /// On the device at `rel` under `sys/devices` (`LNXSYSTM:00/LNXSYBUS:00/ACPI000D:00`,
    /// `platform/coretemp.0`); its `device` link ends in the last component.
    pub fn on_device(mut self, rel: &str) -> HwmonChip {
        self.device = Some(rel.to_string());
        self
    }

    /// Registered the old way: attributes in the device's directory (needs a device).
    pub fn attributes_on_device(mut self) -> HwmonChip {
        self.attrs_on_device = true;
        self
    }

    /// Any attribute file with this exact content.
    pub fn file(mut self, name: &str, content: &str) -> HwmonChip {
        self.files.retain(|(n, _)| n != name);
        self.files.push((name.to_string(), content.to_string()));
        self
    }

    /// A file in the device's own directory (amdgpu's `product_name`).
    pub fn device_file(mut self, name: &str, content: &str) -> HwmonChip {
        self.device_files
            .push((name.to_string(), content.to_string()));
        self
    }

    fn label(self, file: String, label: Option<&str>) -> HwmonChip {
        match label {
            Some(l) => self.file(&file, &format!("{l}\n")),
            None => self,
        }
    }

    /// `energyN_input` (µJ) and, when given, `energyN_label`.
    pub fn energy(self, n: u32, uj: u64, label: Option<&str>) -> HwmonChip {
        self.file(&format!("energy{n}_input"), &energy_text(uj))
            .label(format!("energy{n}_label"), label)
    }

    /// `powerN_input` (µW) and, when given, `powerN_label`.
    pub fn power_input(self, n: u32, watts: f64, label: Option<&str>) -> HwmonChip {
        self.file(&format!("power{n}_input"), &power_text(watts))
            .label(format!("power{n}_label"), label)
    }

    /// `powerN_average` (µW) and, when given, `powerN_label`.
    pub fn power_average(self, n: u32, watts: f64, label: Option<&str>) -> HwmonChip {
        self.file(&format!("power{n}_average"), &power_text(watts))
            .label(format!("power{n}_label"), label)
    }

    /// `powerN_average_interval` (ms).
    pub fn average_interval(self, n: u32, ms: u64) -> HwmonChip {
        self.file(&format!("power{n}_average_interval"), &format!("{ms}\n"))
    }

    /// `tempN_input` (m°C): a sensor that is not power.
    pub fn temp(self, n: u32, millidegrees: i64) -> HwmonChip {
        self.file(&format!("temp{n}_input"), &format!("{millidegrees}\n"))
    }

    /// `in1_label` (amdgpu writes `vddnb` there on APUs only).
    pub fn in1_label(self, label: &str) -> HwmonChip {
        self.file("in1_input", "800\n")
            .file("in1_label", &format!("{label}\n"))
    }
}

/// A fake hwmon class tree under a root directory.
#[derive(Clone, Debug)]
pub struct FakeHwmon {
    root: PathBuf,
}

impl FakeHwmon {
    /// Create `<root>/sys/class/hwmon` (empty).
    pub fn new(root: impl Into<PathBuf>) -> io::Result<FakeHwmon> {
        let f = FakeHwmon { root: root.into() };
        fs::create_dir_all(f.class_dir())?;
        Ok(f)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/sys/class/hwmon`.
    pub fn class_dir(&self) -> PathBuf {
        self.root.join("sys/class/hwmon")
    }

    /// Add a chip as the next `hwmonN` (one more than the highest there); returns N.
    pub fn add(&self, chip: &HwmonChip) -> io::Result<u32> {
        let mut next = 0;
        for e in fs::read_dir(self.class_dir())? {
            let name = e?.file_name();
            if let Some(n) = name
                .to_str()
                .and_then(|s| s.strip_prefix("hwmon"))
                .and_then(|s| s.parse::<u32>().ok())
            {
                next = next.max(n + 1);
            }
        }
        self.add_at(next, chip)?;
        Ok(next)
    }

    /// Add a chip as `hwmon<n>`.
    pub fn add_at(&self, n: u32, chip: &HwmonChip) -> io::Result<()> {
        let hw = format!("hwmon{n}");
        let (device_dir, chip_rel) = match &chip.device {
            Some(dev) => (
                Some(self.root.join("sys/devices").join(dev)),
                PathBuf::from(dev).join("hwmon").join(&hw),
            ),
            None => (None, PathBuf::from("virtual/hwmon").join(&hw)),
        };
        let chip_dir = self.root.join("sys/devices").join(&chip_rel);
        fs::create_dir_all(&chip_dir)?;
        if let Some(dev_dir) = &device_dir {
            let last = chip
                .device
                .as_deref()
                .and_then(|d| d.rsplit('/').next())
                .unwrap_or_default();
            std::os::unix::fs::symlink(Path::new("../../..").join(last), chip_dir.join("device"))?;
            for (name, content) in &chip.device_files {
                fs::write(dev_dir.join(name), content)?;
            }
        }
        let attrs = match (&device_dir, chip.attrs_on_device) {
            (Some(d), true) => d.clone(),
            _ => chip_dir.clone(),
        };
        fs::write(attrs.join("name"), format!("{}\n", chip.name))?;
        for (name, content) in &chip.files {
            fs::write(attrs.join(name), content)?;
        }
        let depth = Path::new("../../devices").join(&chip_rel);
        std::os::unix::fs::symlink(depth, self.class_dir().join(&hw))?;
        Ok(())
    }

    /// `<root>/sys/class/hwmon/hwmonN` (through the symlink, as readers see it).
    pub fn chip_path(&self, n: u32) -> PathBuf {
        self.class_dir().join(format!("hwmon{n}"))
    }

    /// Where attribute `file` of chip N is: in `hwmonN`, or in its device's directory
    /// for a chip registered the old way.
    pub fn attr_path(&self, n: u32, file: &str) -> PathBuf {
        let chip = self.chip_path(n);
        if chip.join("name").exists() {
            chip.join(file)
        } else {
            chip.join("device").join(file)
        }
    }

    /// Write a power file (`power1_input`, `power2_average`) in place, in watts.
    pub fn set_power(&self, n: u32, file: &str, watts: f64) -> io::Result<()> {
        write_in_place(&self.attr_path(n, file), power_text(watts).as_bytes())
    }

    /// Write `energy<ch>_input` in place, in µJ.
    pub fn set_energy(&self, n: u32, ch: u32, uj: u64) -> io::Result<()> {
        write_in_place(
            &self.attr_path(n, &format!("energy{ch}_input")),
            energy_text(uj).as_bytes(),
        )
    }

    /// Replace the whole content of a file (same inode, truncated): garbage tests.
    pub fn set_raw(&self, n: u32, file: &str, content: &[u8]) -> io::Result<()> {
        let f = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(self.attr_path(n, file))?;
        f.write_all_at(content, 0)
    }

    /// `chmod` a file of chip N (no effect on reads by root).
    pub fn chmod(&self, n: u32, file: &str, mode: u32) -> io::Result<()> {
        fs::set_permissions(self.attr_path(n, file), fs::Permissions::from_mode(mode))
    }

    /// Replace a file of chip N by a FIFO (named pipe), as a test that a reader never
    /// blocks on one.
    pub fn fifo_instead(&self, n: u32, file: &str) -> io::Result<()> {
        let p = self.attr_path(n, file);
        fs::remove_file(&p)?;
        mkfifo(&p)
    }

    /// Make chip N disappear as an unplugged device (or an unbound driver) does: every
    /// regular file of its attribute directory is emptied (a reader's open descriptor
    /// then reads nothing, as kernfs answers ENODEV), then its directory and its class
    /// link are removed. Stop a [`crate::fakehw::CounterDriver`] writing its files first:
    /// it would refill the inodes.
    pub fn unplug(&self, n: u32) -> io::Result<()> {
        let link = self.chip_path(n);
        let real = fs::canonicalize(&link)?;
        let attrs = if real.join("name").exists() {
            real.clone()
        } else {
            fs::canonicalize(real.join("device"))?
        };
        for e in fs::read_dir(&attrs)? {
            let e = e?;
            if e.file_type()?.is_file() {
                OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(e.path())?;
            }
        }
        fs::remove_dir_all(&real)?;
        fs::remove_file(&link)
    }

    /// A workstation: `hwmon0` nct6775 (temperatures, fans and voltages only), `hwmon1`
    /// amdgpu, a discrete card at PCI `0000:03:00.0` (`power1_average` 45 W labelled
    /// `PPT`, `product_name` "AMD Radeon RX 6800"), `hwmon2` i915, the integrated GPU at
    /// `0000:00:02.0` (`energy1_input` from 1 J), `hwmon3` coretemp.
    pub fn workstation(root: impl Into<PathBuf>) -> io::Result<FakeHwmon> {
        let f = FakeHwmon::new(root)?;
        f.add(
            &HwmonChip::new("nct6775")
                .on_device("platform/nct6775.656")
                .temp(1, 34_000)
                .file("fan1_input", "1200\n")
                .file("in0_input", "1040\n"),
        )?;
        f.add(
            &HwmonChip::new("amdgpu")
                .pci("0000:03:00.0")
                .power_average(1, 45.0, Some("PPT"))
                .temp(1, 51_000)
                .file("in0_label", "vddgfx\n")
                .file("in0_input", "850\n")
                .device_file("product_name", "AMD Radeon RX 6800\n"),
        )?;
        f.add(
            &HwmonChip::new("i915")
                .pci("0000:00:02.0")
                .energy(1, 1_000_000, None),
        )?;
        f.add(
            &HwmonChip::new("coretemp")
                .on_device("platform/coretemp.0")
                .temp(1, 45_000),
        )?;
        Ok(f)
    }

    /// A server: `hwmon0` the ACPI power meter (`power_meter` on `ACPI000D:00`,
    /// `power1_average` 350 W over `power1_average_interval` 1000 ms), `hwmon1` and
    /// `hwmon2` two PMBus power supplies (`pfe3000` on I2C `7-0058` and `7-0059`,
    /// `power1_input` labelled `pin`, 180 W and 170 W, `power2_input` labelled `pout1`,
    /// 165 W and 155 W), `hwmon3` coretemp.
    pub fn server(root: impl Into<PathBuf>) -> io::Result<FakeHwmon> {
        let f = FakeHwmon::new(root)?;
        f.add(
            &HwmonChip::new("power_meter")
                .on_device("LNXSYSTM:00/LNXSYBUS:00/ACPI000D:00")
                .power_average(1, 350.0, None)
                .average_interval(1, 1000)
                .file("power1_is_battery", "0\n"),
        )?;
        for (addr, pin, pout) in [("7-0058", 180.0, 165.0), ("7-0059", 170.0, 155.0)] {
            f.add(
                &HwmonChip::new("pfe3000")
                    .on_device(&format!("pci0000:00/0000:00:1f.4/i2c-7/{addr}"))
                    .power_input(1, pin, Some("pin"))
                    .power_input(2, pout, Some("pout1"))
                    .file("in1_label", "vin\n")
                    .file("in1_input", "230000\n")
                    .temp(1, 31_000),
            )?;
        }
        f.add(
            &HwmonChip::new("coretemp")
                .on_device("platform/coretemp.0")
                .temp(1, 45_000),
        )?;
        Ok(f)
    }

    /// An AMD APU laptop: `hwmon0` amdgpu at `0000:04:00.0` with `in1_label` `vddnb`
    /// (the APU's SoC rail, exposed on APUs only), `power1_input` 9 W labelled `PPT`;
    /// `hwmon1` k10temp.
    pub fn apu_laptop(root: impl Into<PathBuf>) -> io::Result<FakeHwmon> {
        let f = FakeHwmon::new(root)?;
        f.add(
            &HwmonChip::new("amdgpu")
                .pci("0000:04:00.0")
                .power_input(1, 9.0, Some("PPT"))
                .in1_label("vddnb")
                .file("in0_label", "vddgfx\n")
                .file("in0_input", "900\n"),
        )?;
        f.add(
            &HwmonChip::new("k10temp")
                .pci("0000:00:18.3")
                .temp(1, 48_000),
        )?;
        Ok(f)
    }
}

/// Make a FIFO (named pipe) at `path`, mode 0600.
pub fn mkfifo(path: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: a valid NUL-terminated path; mkfifo only reads it.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn write_in_place(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let f = OpenOptions::new().write(true).open(path)?;
    f.write_all_at(bytes, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_the_kernels() {
        let t = tempfile::tempdir().unwrap();
        let f = FakeHwmon::workstation(t.path()).unwrap();
        assert_eq!(
            fs::read_link(f.chip_path(1)).unwrap(),
            PathBuf::from("../../devices/pci0000:00/0000:03:00.0/hwmon/hwmon1")
        );
        assert_eq!(
            fs::read_link(f.chip_path(1).join("device")).unwrap(),
            PathBuf::from("../../../0000:03:00.0")
        );
        assert_eq!(
            fs::read_to_string(f.chip_path(1).join("device/product_name")).unwrap(),
            "AMD Radeon RX 6800\n"
        );
        assert_eq!(
            fs::read_to_string(f.chip_path(1).join("power1_average")).unwrap(),
            "00000000000045000000\n"
        );
        assert_eq!(
            fs::read_to_string(f.chip_path(2).join("name")).unwrap(),
            "i915\n"
        );
        // Old style: attributes on the device.
        let g = FakeHwmon::new(t.path().join("old")).unwrap();
        let n = g
            .add(
                &HwmonChip::new("power_meter")
                    .on_device("LNXSYSTM:00/LNXSYBUS:00/ACPI000D:00")
                    .attributes_on_device()
                    .power_average(1, 100.0, None),
            )
            .unwrap();
        assert!(!g.chip_path(n).join("name").exists());
        assert_eq!(
            g.attr_path(n, "power1_average"),
            g.chip_path(n).join("device/power1_average")
        );
        g.set_power(n, "power1_average", 12.5).unwrap();
        assert_eq!(
            fs::read_to_string(g.attr_path(n, "power1_average")).unwrap(),
            "00000000000012500000\n"
        );
    }

    #[test]
    fn unplugging_empties_open_files_and_removes_the_chip() {
        let t = tempfile::tempdir().unwrap();
        let f = FakeHwmon::workstation(t.path()).unwrap();
        let open = fs::File::open(f.attr_path(2, "energy1_input")).unwrap();
        f.unplug(2).unwrap();
        assert!(!f.chip_path(2).exists());
        assert_eq!(open.metadata().unwrap().len(), 0);
        assert!(f.chip_path(1).exists());
    }
}
