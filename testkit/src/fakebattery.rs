//! A fake `/sys/class/power_supply` tree: batteries (with `type`, `scope`, `status`,
//! `power_now`, `current_now`, `voltage_now`, `energy_now`, `charge_now`), AC adapters and
//! peripheral batteries.
//!
//! Laid out like the kernel's: each supply's directory is
//! `sys/devices/<parent>/power_supply/<name>` with a relative symlink
//! `sys/class/power_supply/<name>` to it (ACPI batteries under
//! `LNXSYSTM:00/LNXSYBUS:00/PNP0C0A:00`).
//!
//! Every value is written **in place** at a fixed width, so a reader keeping the file open
//! sees live values and never a half-written one: numbers as 20-character zero-padded
//! decimals (`-0000000000012000000` for a negative one), `status` padded with spaces to 15
//! characters before its newline (the kernel writes `Discharging\n`; readers trim). A
//! [`crate::fakehw::CounterDriver`] drains `energy_now` or `charge_now` at a known power
//! while a real child runs ([`crate::fakehw::DrivenCounter::battery_energy`],
//! [`crate::fakehw::DrivenCounter::battery_charge`]), or holds `power_now`
//! ([`crate::fakehw::DrivenCounter::power`]).

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The content of a fake numeric file: 20 characters, zero padded, and a newline.
pub fn int_text(v: i64) -> String {
    format!("{v:020}\n")
}

/// The content of a fake `status` file: padded to a fixed width so it can be rewritten in
/// place.
pub fn status_text(status: &str) -> String {
    format!("{status:<15}\n")
}

/// A power supply to add to a [`FakePowerSupply`].
#[derive(Clone, Debug)]
pub struct Supply {
    name: String,
    parent: String,
    files: Vec<(String, String)>,
}

impl Supply {
    /// A system battery (no `scope` file, like ACPI batteries) named `name` (`BAT0`),
    /// `Discharging`, with no reading yet.
    pub fn battery(name: &str) -> Supply {
        Supply {
            name: name.to_string(),
            parent: "LNXSYSTM:00/LNXSYBUS:00/PNP0C0A:00".to_string(),
            files: Vec::new(),
        }
        .file("type", "Battery\n")
        .file("present", "1\n")
        .status("Discharging")
    }

    /// A peripheral's battery (`scope` `Device`), as HID devices register them.
    pub fn peripheral_battery(name: &str) -> Supply {
        Supply {
            name: name.to_string(),
            parent: "pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.2/0003:046D:C52B.0003".to_string(),
            files: Vec::new(),
        }
        .file("type", "Battery\n")
        .file("scope", "Device\n")
        .status("Discharging")
        .file("capacity", "55\n")
    }

    /// An AC adapter (`type` `Mains`), `online` or not.
    pub fn mains(name: &str, online: bool) -> Supply {
        Supply {
            name: name.to_string(),
            parent: "LNXSYSTM:00/LNXSYBUS:00/ACPI0003:00".to_string(),
            files: Vec::new(),
        }
        .file("type", "Mains\n")
        .file("online", if online { "1\n" } else { "0\n" })
    }

    /// Any file with this exact content.
    pub fn file(mut self, name: &str, content: &str) -> Supply {
        self.files.retain(|(n, _)| n != name);
        self.files.push((name.to_string(), content.to_string()));
        self
    }

    /// `scope`: `System`, `Device`, `Unknown`.
    pub fn scope(self, scope: &str) -> Supply {
        self.file("scope", &format!("{scope}\n"))
    }

    /// `status`: `Discharging`, `Charging`, `Full`, `Not charging`, `Unknown`.
    pub fn status(self, status: &str) -> Supply {
        self.file("status", &status_text(status))
    }

    /// `power_now`, µW (negative for firmwares that sign it).
    pub fn power_now_uw(self, uw: i64) -> Supply {
        self.file("power_now", &int_text(uw))
    }

    /// `power_now` in watts.
    pub fn power_now(self, watts: f64) -> Supply {
        self.power_now_uw((watts * 1e6).round() as i64)
    }

    /// `current_now`, µA (negative while discharging by the ABI).
    pub fn current_now_ua(self, ua: i64) -> Supply {
        self.file("current_now", &int_text(ua))
    }

    /// `voltage_now`, µV.
    pub fn voltage_now_uv(self, uv: i64) -> Supply {
        self.file("voltage_now", &int_text(uv))
    }

    /// `energy_now`, µWh.
    pub fn energy_now_uwh(self, uwh: i64) -> Supply {
        self.file("energy_now", &int_text(uwh))
    }

    /// `charge_now`, µAh.
    pub fn charge_now_uah(self, uah: i64) -> Supply {
        self.file("charge_now", &int_text(uah))
    }
}

/// A fake power-supply class tree under a root directory.
#[derive(Clone, Debug)]
pub struct FakePowerSupply {
    root: PathBuf,
}

impl FakePowerSupply {
    /// Create `<root>/sys/class/power_supply` (empty).
    pub fn new(root: impl Into<PathBuf>) -> io::Result<FakePowerSupply> {
        let f = FakePowerSupply { root: root.into() };
        fs::create_dir_all(f.class_dir())?;
        Ok(f)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/sys/class/power_supply`.
    pub fn class_dir(&self) -> PathBuf {
        self.root.join("sys/class/power_supply")
    }

    /// Add a supply.
    pub fn add(&self, s: &Supply) -> io::Result<&FakePowerSupply> {
        let rel = PathBuf::from(&s.parent).join("power_supply").join(&s.name);
        let dir = self.root.join("sys/devices").join(&rel);
        fs::create_dir_all(&dir)?;
        for (name, content) in &s.files {
            fs::write(dir.join(name), content)?;
        }
        std::os::unix::fs::symlink(
            Path::new("../../devices").join(rel),
            self.class_dir().join(&s.name),
        )?;
        Ok(self)
    }

    /// `<root>/sys/class/power_supply/<name>` (through the symlink, as readers see it).
    pub fn dir(&self, name: &str) -> PathBuf {
        self.class_dir().join(name)
    }

    /// A file of a supply: the path to drive with a [`crate::fakehw::CounterDriver`].
    pub fn path(&self, name: &str, file: &str) -> PathBuf {
        self.dir(name).join(file)
    }

    /// Rewrite `status` in place.
    pub fn set_status(&self, name: &str, status: &str) -> io::Result<()> {
        write_in_place(&self.path(name, "status"), status_text(status).as_bytes())
    }

    /// Rewrite a numeric file in place (`energy_now`, `power_now`...).
    pub fn set(&self, name: &str, file: &str, v: i64) -> io::Result<()> {
        write_in_place(&self.path(name, file), int_text(v).as_bytes())
    }

    /// Replace the whole content of a file (same inode, truncated): garbage tests.
    pub fn set_raw(&self, name: &str, file: &str, content: &[u8]) -> io::Result<()> {
        let f = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(self.path(name, file))?;
        f.write_all_at(content, 0)
    }

    /// `chmod` a file (no effect on reads by root).
    pub fn chmod(&self, name: &str, file: &str, mode: u32) -> io::Result<()> {
        fs::set_permissions(self.path(name, file), fs::Permissions::from_mode(mode))
    }

    /// Remove a supply as a battery taken out (or a driver unbound): its files are
    /// emptied (an open descriptor then reads nothing), its directory and link removed.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        let link = self.dir(name);
        let real = fs::canonicalize(&link)?;
        for e in fs::read_dir(&real)? {
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

    /// A laptop on battery: `AC` offline, `BAT0` discharging at `watts` (`power_now`),
    /// `energy_now` 40 Wh, `voltage_now` 11.55 V; and a wireless mouse's battery
    /// (`hid-00:1f:20:aa:bb:cc-battery`, scope Device) that must be ignored.
    pub fn laptop_discharging(root: impl Into<PathBuf>, watts: f64) -> io::Result<FakePowerSupply> {
        let f = FakePowerSupply::new(root)?;
        f.add(&Supply::mains("AC", false))?
            .add(
                &Supply::battery("BAT0")
                    .power_now(watts)
                    .energy_now_uwh(40_000_000)
                    .voltage_now_uv(11_550_000)
                    .file("capacity", "80\n"),
            )?
            .add(&Supply::peripheral_battery("hid-00:1f:20:aa:bb:cc-battery"))?;
        Ok(f)
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
    fn layout_and_fixed_width_values() {
        let t = tempfile::tempdir().unwrap();
        let f = FakePowerSupply::laptop_discharging(t.path(), 12.0).unwrap();
        assert_eq!(
            fs::read_link(f.dir("BAT0")).unwrap(),
            PathBuf::from("../../devices/LNXSYSTM:00/LNXSYBUS:00/PNP0C0A:00/power_supply/BAT0")
        );
        assert_eq!(
            fs::read_to_string(f.path("BAT0", "power_now")).unwrap(),
            "00000000000012000000\n"
        );
        assert_eq!(
            fs::read_to_string(f.path("BAT0", "status")).unwrap().trim(),
            "Discharging"
        );
        f.set_status("BAT0", "Charging").unwrap();
        assert_eq!(
            fs::read_to_string(f.path("BAT0", "status")).unwrap(),
            "Charging       \n"
        );
        f.set("BAT0", "power_now", -5).unwrap();
        assert_eq!(
            fs::read_to_string(f.path("BAT0", "power_now")).unwrap(),
            "-0000000000000000005\n"
        );
        assert_eq!(
            fs::read_to_string(f.path("hid-00:1f:20:aa:bb:cc-battery", "scope")).unwrap(),
            "Device\n"
        );
    }
}
