//! Thin: signals first, parse, resolve the plan, dispatch, map errors to exit statuses.

use std::process::ExitCode;

use clap::Parser;

use joulerun::cli::{Cli, Sub};
use joulerun::error::{EXIT_FAILURE, EXIT_USAGE};
use joulerun::signals::Signals;
use joulerun::{list, plan, run, text};

/// Runs before the Rust runtime, which would otherwise hide a closed stdout behind
/// `/dev/null` (see `output::note_closed_standard_fds`).
#[used]
#[unsafe(link_section = ".init_array")]
static NOTE_CLOSED_FDS: extern "C" fn() = {
    extern "C" fn note() {
        joulerun::output::note_closed_standard_fds();
    }
    note
};

fn main() -> ExitCode {
    // Closed standard descriptors are noted and filled, before anything else is opened.
    joulerun::output::guard_standard_fds();
    // Signals next, before any thread exists, so every thread inherits the mask.
    let mut signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("joulerun: {e}");
            return ExitCode::from(EXIT_FAILURE as u8);
        }
    };
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code as u8);
        }
    };
    let env = plan::process_env;
    let result = match &cli.subcommand {
        Some(Sub::List(args)) => list::list(args),
        // Carbon, OpenMetrics, plots (issue 12)
        Some(Sub::Plot(args)) => joulerun::plot_cmd::plot(args, &env),
        Some(Sub::Compare(args)) => joulerun::compare::compare(args),
        // Launchers (issue 13)
        Some(Sub::Merge(args)) => joulerun::merge::merge(args),
        None if cli.run.basepower => plan::calibrate(&cli.run, &cli.command, &env)
            .and_then(|p| joulerun::calibrate::calibrate(&p, &mut signals)),
        None => plan::run(&cli.run, &cli.command, &env).and_then(|p| run::run(&p, &mut signals)),
    };
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!(
                "joulerun: {}",
                text::escape_text(&e.message).replace('\n', "\n  ")
            );
            ExitCode::from(e.code.clamp(0, 255) as u8)
        }
    }
}
