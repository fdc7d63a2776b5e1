//! Test doubles for joulerun's tests, kept out of the shipped library and binary: joulerun
//! uses this crate as a dev-dependency only.
//!
//! * [`fakehw`]: fake hardware trees under a root directory (powercap sysfs, CPU topology,
//!   `/proc/cpuinfo`, `/dev/cpu/N/msr`) and a thread that drives counters, power files and
//!   battery gauges at a known power.
//! * [`fakehwmon`]: a fake `/sys/class/hwmon` (GPUs, power meters, power supplies, other
//!   sensors) and ready-made machines.
//! * [`fakebattery`]: a fake `/sys/class/power_supply` (batteries, AC adapters, peripheral
//!   batteries) and a laptop on battery.
//! * [`fakeipmi`]: a scripted BMC behind a fake `/dev/ipmi0` (through the `fake-ipmi`
//!   `LD_PRELOAD` library), and fake `ipmitool` programs.
//!
//! * [`fakenvml`]: finds (building it once) the fake `libnvidia-ml.so` and writes its
//!   scripts.
//! * [`slurm`]: a real one-node Slurm cluster (munge, slurmctld, slurmd) on 127.0.0.1,
//!   for the launcher tests (issue 13).
//!
//! Doubles that are not Rust libraries (the fake `libnvidia-ml.so` in `fake-nvml/`, an
//! `LD_PRELOAD` shim) are workspace members of their own beside this one (see
//! `docs/architecture.md`).

pub mod fakebattery;
pub mod fakehw;
pub mod fakehwmon;
pub mod fakeipmi;
pub mod fakenvml;
pub mod slurm;
