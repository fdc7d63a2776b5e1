//! joulerun: measure the energy of a command, `perf stat` style.
//!
//! See `docs/architecture.md` for the layout and the data flow.

pub mod attribution;
pub mod baseline;
pub mod calibrate;
pub mod carbon;
pub mod cli;
pub mod compare;
pub mod config;
pub mod counter;
pub mod error;
pub mod fsx;
pub mod integrate;
pub mod kfs;
// Launchers (issue 13): Slurm and MPI ranks, one measurement per node, `joulerun merge`.
pub mod launcher;
pub mod list;
pub mod merge;
pub mod output;
pub mod plan;
pub mod plot_cmd;
pub mod procs;
pub mod progress;
pub mod report;
pub mod run;
pub mod sampler;
pub mod signals;
pub mod sources;
pub mod stats;
pub mod sysroot;
pub mod text;
pub mod topology;
pub mod usage;
pub mod workload;
