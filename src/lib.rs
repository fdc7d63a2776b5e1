//! joulerun: measure the energy of a command, `perf stat` style.
//!
//! See `docs/architecture.md` for the layout and the data flow.

pub mod attribution;
pub mod baseline;
pub mod counter;
pub mod procs;
pub mod sources;
pub mod sysroot;
pub mod topology;
