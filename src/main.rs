//! Thin: parse, dispatch, map errors to exit statuses.

use std::process::ExitCode;

use clap::Parser;

use joulerun::cli::{Cli, Sub};
use joulerun::error::{EXIT_FAILURE, EXIT_USAGE};
use joulerun::{list, run, workload};

fn main() -> ExitCode {
    // Signals first, before any thread exists, so every thread inherits the mask.
    let mut signals = match workload::Signals::install() {
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
    let result = match &cli.subcommand {
        Some(Sub::List(args)) => list::list(args),
        None if cli.run.basepower => joulerun::calibrate::calibrate(&cli.run, &mut signals),
        None => run::run(&cli.run, &cli.command, &mut signals),
    };
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("joulerun: {}", e.message);
            ExitCode::from(e.code.clamp(0, 255) as u8)
        }
    }
}
