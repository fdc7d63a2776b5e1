//! Every output plugs in behind one small trait: the run loop knows no format.
//!
//! A sink is created (its destination prepared: a temporary file made, a descriptor
//! duplicated) while the run is set up, then:
//!
//! 1. [`Sink::open`] before the command starts (a stream opens a FIFO or device, and
//!    writes its header);
//! 2. [`Sink::started`] once the command runs (a streamed file replaces its destination);
//! 3. [`Sink::tick`] on every tick, with what the tick measured;
//! 4. [`Sink::finish`] with the [`Summary`] when the run is over.
//!
//! With `-r`, one set of sinks serves the whole series: `open` and `started` come before
//! every run and act the first time only, ticks carry their run's number, and `finish`
//! comes once, with the summary of the series.
//!
//! A failure while streaming is kept ([`Sink::stream_error`]) and reported; it changes
//! the exit status like a failure to finish.

use std::io::Write;

use crate::error::{Error, Result};
use crate::output::{self, Prepared, Requested};
use crate::plan::RunPlan;
use crate::sampler::Interval;
use crate::sources::Domain;

use super::Summary;
use super::intervals::IntervalLines;
use super::stream::{Background, Stream};

/// What one tick measured, for streaming sinks.
pub struct TickView<'a> {
    /// The tick's start and end on the sampler's clock, s.
    pub start_s: f64,
    pub end_s: f64,
    pub domains: &'a [Domain],
    /// Per domain, the tick's energy and power (fast domains; 0 for slow ones).
    pub delta_j: &'a [f64],
    pub power_w: &'a [f64],
    /// Per domain: read on a reader thread (its energy comes in `intervals` only).
    pub is_slow: &'a [bool],
    /// Every interval that ended in this tick, fast and slow domains alike.
    pub intervals: &'a [Interval],
    /// The command's attributed energy so far (`Attributor::command_j`), J; `None` with
    /// `-a` (issue 12: the plot shades the command's share).
    pub command_j: Option<f64>,
    /// The run of the series (1-based; 1 without `-r`); the clock starts again with each.
    pub run: u32,
    /// The run's last tick (right after its command ended).
    pub last: bool,
    /// Per domain, the command's attributed energy so far in this run, J (`None` with
    /// `-a`). Attribution waits for the usage that covers each interval, so it trails
    /// the energy by up to one usage window.
    pub domain_command_j: Option<&'a [f64]>,
}

pub trait Sink {
    /// Before the command starts. An error stops the run before anything is started.
    fn open(&mut self) -> std::result::Result<(), String> {
        Ok(())
    }
    /// The command has started.
    fn started(&mut self) {}
    fn tick(&mut self, _t: &TickView<'_>) {}
    /// A failure while streaming (the stream stopped at it).
    fn stream_error(&self) -> Option<String> {
        None
    }
    /// The run is over: write what this output holds.
    fn finish(self: Box<Self>, summary: &Summary) -> std::result::Result<(), String>;
}

/// Where a whole-content output (the table, the JSON) goes.
enum Whole {
    Stderr,
    Out {
        flag: &'static str,
        describe: String,
        what: &'static str,
        out: Prepared,
    },
}

impl Whole {
    fn new(r: Option<&Requested>) -> Result<Whole> {
        Ok(match r {
            None => Whole::Stderr,
            Some(r) => Whole::Out {
                flag: r.flag,
                describe: r.dest.describe(),
                what: r.what,
                out: output::prepare(r)?,
            },
        })
    }

    fn write(self, bytes: &[u8]) -> std::result::Result<(), String> {
        match self {
            Whole::Stderr => {
                // stderr closed or a broken pipe: nothing useful can be said about it.
                let _ = std::io::stderr().lock().write_all(bytes);
                Ok(())
            }
            Whole::Out {
                flag,
                describe,
                what,
                out,
            } => out
                .finish(bytes, flag)
                .map_err(|e| format!("writing {what} to {describe}: {e}")),
        }
    }
}

/// How the end-of-run report is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReportFormat {
    /// The table.
    Table,
    /// `-x SEP`: separated records.
    Separated(String),
}

impl ReportFormat {
    fn render(&self, summary: &Summary) -> String {
        match self {
            ReportFormat::Table => super::table::render(summary),
            ReportFormat::Separated(sep) => super::separated::render(summary, sep),
        }
    }
}

/// Where the report stream goes when it carries `-I` lines: written while the command
/// runs, by a thread of its own.
enum Streamed {
    /// Opened and placed once the command runs.
    Waiting(Stream),
    Running(Background),
    /// Could not start its writer thread (the reason is the stream's error).
    Failed(String),
}

/// The report: the table or `-x` records, on stderr or `-o FILE`; with `-I`, preceded by
/// the interval lines, streamed.
pub struct ReportSink {
    format: ReportFormat,
    out: ReportOut,
}

enum ReportOut {
    Whole(Whole),
    Streamed {
        out: Option<Streamed>,
        lines: Box<IntervalLines>,
        /// stderr: nothing useful can be said about a failure to write it.
        quiet: bool,
        last_s: f64,
    },
}

impl ReportSink {
    /// `interval_print_ms`: `-I`, which makes the report a stream.
    pub fn new(
        r: Option<&Requested>,
        format: ReportFormat,
        interval_print_ms: Option<u64>,
    ) -> Result<ReportSink> {
        let out = match interval_print_ms {
            None => ReportOut::Whole(Whole::new(r)?),
            Some(ms) => {
                let sep = match &format {
                    ReportFormat::Separated(s) => Some(s.clone()),
                    ReportFormat::Table => None,
                };
                let stderr = Requested {
                    flag: "the report (stderr)",
                    what: "the report",
                    dest: output::Dest::Fd(2),
                };
                let req = r.unwrap_or(&stderr);
                let stream = Stream::new(
                    output::prepare(req)?,
                    req.flag,
                    "the report",
                    req.dest.describe(),
                    "the lines after that are missing",
                );
                ReportOut::Streamed {
                    out: Some(Streamed::Waiting(stream)),
                    lines: Box::new(IntervalLines::new(ms, sep)),
                    quiet: r.is_none(),
                    last_s: 0.0,
                }
            }
        };
        Ok(ReportSink { format, out })
    }
}

impl Sink for ReportSink {
    fn open(&mut self) -> std::result::Result<(), String> {
        match &mut self.out {
            ReportOut::Streamed {
                out: Some(Streamed::Waiting(s)),
                ..
            } => s.open(),
            _ => Ok(()),
        }
    }

    fn started(&mut self) {
        if let ReportOut::Streamed { out, .. } = &mut self.out
            && matches!(out, Some(Streamed::Waiting(_)))
            && let Some(Streamed::Waiting(mut s)) = out.take()
        {
            s.place();
            *out = Some(match s.error() {
                Some(e) => Streamed::Failed(e.to_string()),
                None => match Background::start(s) {
                    Ok(b) => Streamed::Running(b),
                    Err(e) => Streamed::Failed(format!("cannot start the report writer: {e}")),
                },
            });
        }
    }

    fn tick(&mut self, t: &TickView<'_>) {
        if let ReportOut::Streamed {
            out: Some(Streamed::Running(b)),
            lines,
            last_s,
            ..
        } = &mut self.out
            && let Some(text) = lines.tick(t)
        {
            *last_s = t.end_s;
            b.send_droppable(text.into_bytes(), t.end_s);
        }
    }

    fn stream_error(&self) -> Option<String> {
        match &self.out {
            ReportOut::Streamed { quiet: true, .. } | ReportOut::Whole(_) => None,
            ReportOut::Streamed { out, .. } => match out {
                Some(Streamed::Running(b)) => b.error(),
                Some(Streamed::Failed(e)) => Some(e.clone()),
                _ => None,
            },
        }
    }

    fn finish(self: Box<Self>, summary: &Summary) -> std::result::Result<(), String> {
        let text = self.format.render(summary);
        match self.out {
            ReportOut::Whole(w) => w.write(text.as_bytes()),
            ReportOut::Streamed {
                out, quiet, last_s, ..
            } => {
                let err = match out {
                    Some(Streamed::Running(b)) => {
                        let mut text = text;
                        let dropped = b.dropped();
                        if dropped > 0 {
                            text.push_str(&format!(
                                " warning: {dropped} intervals' -I lines were not printed: the report stream did not keep up (a paused terminal, a slow pipe)\n"
                            ));
                        }
                        b.finish(text.into_bytes(), last_s)
                    }
                    // The command never started (or its writer could not): written now.
                    Some(Streamed::Waiting(mut s)) => {
                        s.place();
                        s.write(text.as_bytes(), last_s);
                        s.error().map(str::to_string)
                    }
                    Some(Streamed::Failed(e)) => Some(e),
                    None => None,
                };
                match err {
                    Some(e) if !quiet => Err(e),
                    _ => Ok(()),
                }
            }
        }
    }
}

/// The JSON summary (`--json`).
pub struct JsonSink(Whole);

impl JsonSink {
    pub fn new(r: &Requested) -> Result<JsonSink> {
        Whole::new(Some(r)).map(JsonSink)
    }
}

impl Sink for JsonSink {
    fn finish(self: Box<Self>, summary: &Summary) -> std::result::Result<(), String> {
        match super::json::to_bytes(summary) {
            Ok(b) => self.0.write(&b),
            Err(e) => Err(format!("encoding the JSON summary: {e}")),
        }
    }
}

/// The Markdown summary (`--markdown`).
pub struct MarkdownSink(Whole);

impl Sink for MarkdownSink {
    fn finish(self: Box<Self>, summary: &Summary) -> std::result::Result<(), String> {
        self.0.write(super::markdown::render(summary).as_bytes())
    }
}

/// The sinks of a run (or of every run of a series), in the order they are finished: the
/// report, the JSON, the Markdown, the CSV.
pub fn for_run(plan: &RunPlan) -> Result<Vec<Box<dyn Sink>>> {
    let format = match &plan.separator {
        Some(sep) => ReportFormat::Separated(sep.clone()),
        None => ReportFormat::Table,
    };
    let mut v: Vec<Box<dyn Sink>> = vec![Box::new(ReportSink::new(
        plan.report.as_ref(),
        format,
        plan.interval_print_ms,
    )?)];
    if let Some(r) = &plan.json {
        v.push(Box::new(JsonSink::new(r)?));
    }
    if let Some(r) = &plan.markdown {
        v.push(Box::new(MarkdownSink(Whole::new(Some(r))?)));
    }
    if let Some(r) = &plan.csv {
        v.push(Box::new(super::csv::CsvSink::new(
            output::prepare(r)?,
            r.flag,
            r.dest.describe(),
        )));
    }
    Ok(v)
}

/// Open every sink before the command starts; the first failure stops the run. Each
/// sink opens once: a series calls this before every run.
pub fn open_all(sinks: &mut [Box<dyn Sink>]) -> Result<()> {
    for s in sinks.iter_mut() {
        s.open().map_err(Error::failure)?;
    }
    Ok(())
}
