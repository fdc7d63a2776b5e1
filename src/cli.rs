//! Command-line definitions only (clap). No behaviour lives here.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Measure the energy of a command, like `perf stat` measures its counters.
#[derive(Debug, Parser)]
#[command(
    name = "joulerun",
    version,
    about = "Measure the energy a command uses: joules, kWh, average watts and cost.",
    long_about = "Runs COMMAND, samples every energy counter the machine has while it and \
its children run, attributes the command's share by CPU time, and prints a report to \
stderr when it ends. On a machine without counters (most VMs) the report is an estimate \
from a CPU-utilisation power model, labelled as such.",
    after_help = "Examples:\n  joulerun -- python train.py\n  joulerun --csv energy.csv --json energy.json -- cargo test\n  joulerun --basepower          calibrate idle power once per machine\n  joulerun list                 show every energy interface and why one does not work",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub subcommand: Option<Sub>,

    #[command(flatten)]
    pub run: RunArgs,

    /// The command to measure, with its arguments (`--` before it is optional).
    #[arg(value_name = "COMMAND", trailing_var_arg = true, num_args = 0..)]
    pub command: Vec<OsString>,
}

#[derive(Debug, Subcommand)]
pub enum Sub {
    /// List every energy interface, the domains each gives, and why one does not work.
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print the listing as JSON on stdout.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// Options shared by runs and `list`.
#[derive(Debug, Args, Clone)]
pub struct CommonArgs {
    /// Root under which /sys and /dev are read (for fake hardware in tests)
    /// [env: JOULERUN_SYSFS_ROOT].
    #[arg(long, value_name = "DIR")]
    pub sysfs_root: Option<PathBuf>,

    /// Estimate model: whole-machine power at idle and at full load, in watts, at most
    /// 1 MW [env: JOULERUN_CPU_WATTS].
    #[arg(long, value_name = "IDLE,MAX")]
    pub cpu_watts: Option<String>,

    // Chassis through IPMI (issue 10)
    /// A remote BMC to read the chassis power from (IPMI 2.0 lanplus, through ipmitool);
    /// its password comes from JOULERUN_BMC_PASSWORD or --bmc-password-file, never from
    /// the command line.
    #[arg(long, value_name = "HOST")]
    pub bmc: Option<String>,

    /// The BMC user for --bmc [default: the BMC's null user].
    #[arg(long, value_name = "USER", requires = "bmc")]
    pub bmc_user: Option<String>,

    /// A file whose first line is the password for --bmc [default: JOULERUN_BMC_PASSWORD].
    #[arg(long, value_name = "FILE", requires = "bmc")]
    pub bmc_password_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Where CPU energy comes from: `auto` picks the best interface that works here
    /// [default: auto] [env: JOULERUN_SOURCE].
    #[arg(long, value_enum)]
    pub source: Option<SourceArg>,

    /// GPUs: `auto` uses the first GPU interface that works (hwmon: amdgpu, i915, xe,
    /// nouveau), `none` measures no GPU.
    #[arg(long, value_enum, value_name = "WHICH")]
    pub gpu: Option<GpuArg>,

    /// Measure no GPU (the same as `--gpu none`).
    #[arg(long, conflicts_with = "gpu")]
    pub no_gpu: bool,

    /// The whole machine at the wall: `auto` uses the first chassis interface that
    /// works (dcmi: the BMC through /dev/ipmi0; bmc: the BMC named by --bmc; tools:
    /// ipmitool or ipmi-dcmi; hwmon: ACPI power meter, power supplies), `none` measures
    /// none.
    #[arg(long, value_enum, value_name = "WHICH")]
    pub chassis: Option<ChassisArg>,

    /// A laptop battery while it discharges: `auto` or `none`.
    #[arg(long, value_enum, value_name = "WHICH")]
    pub battery: Option<OnOffArg>,

    /// Other power sensors (hwmon chips that are neither a GPU nor a power supply),
    /// shown but never added: `auto` or `none`.
    #[arg(long, value_enum, value_name = "WHICH")]
    pub meters: Option<OnOffArg>,

    /// Only these domain kinds, comma separated: package,core,uncore,dram,psys,gpu,
    /// chassis,battery,meter.
    #[arg(short = 'e', long, value_name = "LIST", value_delimiter = ',')]
    pub domains: Vec<String>,

    /// Sampling interval in milliseconds (minimum 1).
    #[arg(short, long, value_name = "MS", default_value_t = 100)]
    pub interval: u64,

    /// Write the report to FILE instead of stderr.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Write the summary as JSON to FILE (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Stream a per-tick timeline as CSV to FILE (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,

    /// Electricity price per kWh [default: 0.30] [env: JOULERUN_PRICE].
    #[arg(long, value_name = "PRICE")]
    pub price: Option<String>,

    /// Currency of the price [default: EUR] [env: JOULERUN_CURRENCY].
    #[arg(long, value_name = "CODE")]
    pub currency: Option<String>,

    /// Measure the machine only, without attributing a share to a command (like
    /// `perf stat -a`). Without a command, runs until Ctrl-C.
    #[arg(short = 'a', long)]
    pub all: bool,

    /// Attach to a running process and its descendants until it exits or Ctrl-C.
    #[arg(short = 'p', long, value_name = "PID", conflicts_with = "all")]
    pub pid: Option<i32>,

    /// How the command's process tree is followed [default: auto].
    #[arg(long, value_enum)]
    pub track: Option<TrackArg>,

    /// Calibrate this machine's idle (static) power and store it as the baseline.
    #[arg(long)]
    pub basepower: bool,

    /// With --basepower: how long to measure, in seconds [default: 10].
    #[arg(long, value_name = "SECONDS", requires = "basepower")]
    pub duration: Option<f64>,

    /// With --basepower: store the baseline even if the machine looks busy.
    #[arg(long, requires = "basepower")]
    pub force: bool,

    /// Baseline file to write (--basepower) or use (runs) [env: JOULERUN_BASELINE]
    /// [default: $XDG_STATE_HOME/joulerun/baseline.json, else
    /// ~/.local/state/joulerun/baseline.json].
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,

    /// Do not use any baseline for this run.
    #[arg(long, conflicts_with = "baseline")]
    pub no_baseline: bool,

    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceArg {
    Auto,
    Powercap,
    Perf,
    Msr,
    Estimate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TrackArg {
    Auto,
    Cgroup,
    Proc,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GpuArg {
    Auto,
    Hwmon,
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ChassisArg {
    Auto,
    Hwmon,
    None,
    // Chassis through IPMI (issue 10)
    /// The BMC in-band: /dev/ipmi0 and the OpenIPMI ioctls.
    Dcmi,
    /// The BMC named by --bmc HOST, over the network.
    Bmc,
    /// ipmitool or freeipmi's ipmi-dcmi.
    Tools,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnOffArg {
    Auto,
    None,
}
