//! The progress bar of a series (`-r`), drawn with indicatif on stderr when it is a
//! terminal, never otherwise.
//!
//! The terminal belongs to the command while it runs: the bar is cleared before each run
//! starts and drawn again when it ends (with the run's energy and time), and stays up
//! during a cool-down.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::report::series::RunRecord;
use crate::report::{fmt_joules, sig};

pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar for `warmup + runs` runs, when there is more than one, stderr is a terminal
    /// and nothing else streams to it (`quiet_stderr`: no `-I` lines there).
    pub fn new(warmup: u32, runs: u32, quiet_stderr: bool) -> Progress {
        let total = u64::from(warmup) + u64::from(runs);
        let on = total > 1 && quiet_stderr && std::io::stderr().is_terminal();
        Progress {
            bar: on.then(|| {
                let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
                if let Ok(style) =
                    ProgressStyle::with_template(" joulerun [{bar:24}] {pos}/{len} {msg}")
                {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar
            }),
        }
    }

    /// `what` is about to run.
    pub fn starting(&self, what: &str) {
        if let Some(b) = &self.bar {
            b.set_message(format!("{what}…"));
        }
    }

    /// Run `f` (a run) with the bar off the terminal.
    pub fn hidden<T>(&self, f: impl FnOnce() -> T) -> T {
        match &self.bar {
            Some(b) => b.suspend(f),
            None => f(),
        }
    }

    /// A measured run ended.
    pub fn finished(&self, what: &str, r: &RunRecord) {
        if let Some(b) = &self.bar {
            b.inc(1);
            b.set_message(format!(
                "{what}: {} in {} s",
                fmt_joules(r.command_j.unwrap_or(r.total_j)),
                sig(r.elapsed_s, 3)
            ));
        }
    }

    /// A warm-up run ended.
    pub fn finished_warmup(&self, what: &str) {
        if let Some(b) = &self.bar {
            b.inc(1);
            b.set_message(format!("{what} done"));
        }
    }

    /// Waiting between runs.
    pub fn cooling_down(&self, secs: f64) {
        if let Some(b) = &self.bar {
            b.set_message(format!("cooling down for {} s", sig(secs, 3)));
        }
    }

    /// The series is over: the bar goes away before the report is written.
    pub fn done(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
