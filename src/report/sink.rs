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
//! A failure while streaming is kept ([`Sink::stream_error`]) and reported; it changes
//! the exit status like a failure to finish.

use std::io::Write;

use crate::error::{Error, Result};
use crate::output::{self, Prepared, Requested};
use crate::sampler::Interval;
use crate::sources::Domain;

use super::Summary;

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

/// The human report: stderr, or `-o FILE`.
pub struct TableSink(Whole);

impl TableSink {
    pub fn new(r: Option<&Requested>) -> Result<TableSink> {
        Whole::new(r).map(TableSink)
    }
}

impl Sink for TableSink {
    fn finish(self: Box<Self>, summary: &Summary) -> std::result::Result<(), String> {
        self.0.write(super::table::render(summary).as_bytes())
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

/// The sinks of a run, in the order they are finished: the table, the JSON, the CSV.
pub fn for_run(
    report: Option<&Requested>,
    json: Option<&Requested>,
    csv: Option<&Requested>,
) -> Result<Vec<Box<dyn Sink>>> {
    let mut v: Vec<Box<dyn Sink>> = vec![Box::new(TableSink::new(report)?)];
    if let Some(r) = json {
        v.push(Box::new(JsonSink::new(r)?));
    }
    if let Some(r) = csv {
        v.push(Box::new(super::csv::CsvSink::new(
            output::prepare(r)?,
            r.flag,
            r.dest.describe(),
        )));
    }
    Ok(v)
}

/// Open every sink before the command starts; the first failure stops the run.
pub fn open_all(sinks: &mut [Box<dyn Sink>]) -> Result<()> {
    for s in sinks.iter_mut() {
        s.open().map_err(Error::failure)?;
    }
    Ok(())
}
