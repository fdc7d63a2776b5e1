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
    after_help = "Examples:\n  joulerun -- python train.py\n  joulerun --csv energy.csv --json energy.json -- cargo test\n  joulerun -r 10 --json new.json -- make test    ten runs: mean, spread, 95% interval\n  joulerun compare base.json new.json            a regression gate for CI\n  srun joulerun --json 'e-%j-%n-%r.json' -- ./app   one file per rank of a Slurm or MPI job\n  joulerun merge e-*.json        one report of the job, every node counted once\n  joulerun --basepower          calibrate idle power once per machine\n  joulerun list                 show every energy interface and why one does not work",
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
    /// Draw a saved CSV timeline (`--csv`, schema 2) as an SVG or HTML plot.
    Plot(PlotArgs),
    /// Compare two runs or two `-r` series saved with `--json`: the change in energy per
    /// domain and for the command, with its confidence interval and a verdict. Exits 0
    /// when nothing is significantly worse beyond the threshold, 1 when something is, 2
    /// on a usage error.
    Compare(CompareArgs),
    /// One report of a Slurm or MPI job from its ranks' --json files
    ///
    /// Combines the `--json` files of a launched job's ranks (srun, mpirun) into one
    /// report of the job: per node its devices, energy and the job's share, counted once;
    /// the job's totals, kWh, cost and CO2e; warnings where nodes disagree or ranks are
    /// missing. Refuses files of different jobs unless `--force`.
    Merge(MergeArgs),
}

// Launchers (issue 13)
/// `joulerun merge FILES... [--json OUT] [-o REPORT]` (docs/launchers.md).
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The ranks' `--json` files (every rank's, or at least every node's).
    #[arg(value_name = "FILES", required = true)]
    pub files: Vec<PathBuf>,

    /// Write the merged report as JSON to OUT (`-` for stdout).
    #[arg(long, value_name = "OUT")]
    pub json: Option<PathBuf>,

    /// Write the report to REPORT instead of stdout.
    #[arg(short, long, value_name = "REPORT")]
    pub output: Option<PathBuf>,

    /// Merge files of different jobs into one report.
    #[arg(long)]
    pub force: bool,
}

/// `joulerun compare BASE.json NEW.json` (docs/ci.md).
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The reference: a `--json` summary (one run or a `-r` series).
    #[arg(value_name = "BASE.json")]
    pub base: PathBuf,

    /// The run or series to judge against it.
    #[arg(value_name = "NEW.json")]
    pub new: PathBuf,

    /// The smallest change that counts, relative to the base mean: `5%`, `0.05`
    /// [default: 5%].
    #[arg(long, value_name = "PCT")]
    pub threshold: Option<String>,

    /// Significance level of each test, between 0 and 0.5 [default: 0.05].
    #[arg(long, value_name = "ALPHA")]
    pub alpha: Option<String>,

    /// Relative uncertainty of one run's reading, for sides with a single run: `5%`
    /// [default: the stated uncertainty of each source, docs/ci.md].
    #[arg(long, value_name = "PCT")]
    pub uncertainty: Option<String>,

    /// Compare even runs from different machines, sources or units.
    #[arg(long)]
    pub force: bool,

    /// Print the comparison as JSON on stdout instead of the table.
    #[arg(long)]
    pub json: bool,

    /// Also write the comparison as GitHub-flavoured Markdown to FILE (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
}

/// `joulerun plot RUN.csv -o FILE.svg` (issue 12).
#[derive(Debug, Args)]
pub struct PlotArgs {
    /// A CSV timeline written by `joulerun --csv` (schema 2).
    #[arg(value_name = "RUN.csv")]
    pub input: PathBuf,

    /// Where to write the plot: FILE.svg, or FILE.html for a self-contained page.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
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

    // GPUs (issue 9)
    /// NVIDIA GPUs: load this libnvidia-ml.so instead of the driver's
    /// [env: JOULERUN_NVML_LIB].
    #[arg(long, value_name = "PATH")]
    pub nvml_lib: Option<PathBuf>,

    /// NVIDIA GPUs to measure: `all`, or NVML indices, GPU-<uuid> and MIG-<uuid>, comma
    /// separated [default: those in CUDA_VISIBLE_DEVICES when set, else all].
    #[arg(long, value_name = "LIST|all")]
    pub gpus: Option<String>,
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

    /// GPUs: `auto` uses the first GPU interface that works (nvml: NVIDIA; hwmon:
    /// amdgpu, i915, xe, nouveau), `none` measures no GPU.
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

    /// Sampling interval in milliseconds, 1 to 10000 [default: 100, or the -I period
    /// when that is shorter].
    #[arg(short, long, value_name = "MS")]
    pub interval: Option<u64>,

    /// Run the command N times and report the mean, spread and 95% confidence interval
    /// of each figure (like `perf stat -r`).
    #[arg(short = 'r', long, value_name = "N")]
    pub repeat: Option<u32>,

    /// With -r: run the command K more times first, unmeasured (caches, JIT, disks).
    #[arg(long, value_name = "K")]
    pub warmup: Option<u32>,

    /// With -r: wait S seconds between runs so the machine returns to idle.
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    pub cooldown: Option<f64>,

    /// With -r: go on after a run fails (the exit status is still the first failure's).
    #[arg(long)]
    pub keep_going: bool,

    /// While the command runs, print each domain's energy and power every MS
    /// milliseconds (at least 10) to the report stream (like `perf stat -I`).
    #[arg(short = 'I', long, value_name = "MS")]
    pub interval_print: Option<u64>,

    /// Print the report as SEP-separated records instead of the table (like
    /// `perf stat -x`); `\t` for a tab.
    #[arg(short = 'x', long, value_name = "SEP")]
    pub field_separator: Option<String>,

    /// Write a GitHub-flavoured Markdown summary to FILE (`-` for stdout), e.g. for
    /// `$GITHUB_STEP_SUMMARY`.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,

    /// Write the report to FILE instead of stderr. Output file names accept %j job, %s
    /// step, %n node, %r rank (under srun or mpirun), %h host name, %p PID, %% a %.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Write the summary as JSON to FILE (`-` for stdout; placeholders as for -o).
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

    // Big process trees (issue 14)
    /// CPU time reading the command's process tree may cost, in percent of one core
    /// [default: 0.5]: a tree that costs more is read less often (at most 1 s apart).
    #[arg(long, value_name = "PCT")]
    pub probe_budget: Option<String>,

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

    // Carbon, OpenMetrics, plots (issue 12)
    /// Grid carbon intensity, gCO2e per kWh (0 to 2000)
    /// [env: JOULERUN_CARBON_INTENSITY].
    #[arg(long, value_name = "G_PER_KWH", conflicts_with = "region")]
    pub carbon_intensity: Option<String>,

    /// Country whose annual average grid intensity to use, ISO 3166 (DE, FR, US...)
    /// [env: JOULERUN_REGION] [default: the world average].
    #[arg(long, value_name = "CODE")]
    pub region: Option<String>,

    /// Power usage effectiveness of the facility (1.0 to 3.0): adds its energy and CO2e
    /// [env: JOULERUN_PUE].
    #[arg(long, value_name = "RATIO")]
    pub pue: Option<String>,

    /// Write the run's metrics as Prometheus text (node_exporter's textfile collector) to
    /// FILE, replaced atomically.
    #[arg(long, value_name = "FILE")]
    pub openmetrics: Option<PathBuf>,

    /// Push the run's metrics to a Prometheus Pushgateway (http://HOST:PORT) at the end;
    /// a failure is a warning.
    #[arg(long, value_name = "URL")]
    pub push: Option<String>,

    /// The `job` of the metrics (the Pushgateway's grouping key) [default: joulerun].
    #[arg(long, value_name = "NAME")]
    pub push_job: Option<String>,

    /// Draw power over time to FILE: .svg, or .html for a self-contained page.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,

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
    Nvml,
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
