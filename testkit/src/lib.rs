//! Test doubles for joulerun's tests, kept out of the shipped library and binary: joulerun
//! uses this crate as a dev-dependency only.
//!
//! * [`fakehw`]: fake hardware trees under a root directory (powercap sysfs, CPU topology,
//!   `/proc/cpuinfo`, `/dev/cpu/N/msr`) and a thread that advances counters at a known
//!   power.
//!
//! Doubles that are not Rust libraries (a fake `libnvidia-ml.so`, an `LD_PRELOAD` shim)
//! are workspace members of their own beside this one (see `docs/architecture.md`).

pub mod fakehw;
