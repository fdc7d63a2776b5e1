//! The CSV timeline: one row per domain per tick (schema in docs/output-formats.md).
//!
//! Each tick's rows are formatted into one buffer and handed to the kernel in one write,
//! so a kill of joulerun never leaves half a row. A write that fails (disk full, a file
//! size limit, a closed pipe) stops the timeline: a regular file is cut back to its last
//! complete row, and the failure is reported and changes joulerun's exit status like any
//! lost output (README, "Exit statuses").

use std::cell::RefCell;
use std::io::{self, Write};
use std::rc::Rc;

use crate::output::Prepared;
use crate::sources::Domain;

use super::sink::{Sink, TickView};
use super::stream::Stream;

/// Version of the CSV schema, written in the `schema_version` column of every row.
/// 2: rows of domains read at their own cadence come with their samples; `device` and
/// `start_s` columns; `run` (the run of a `-r` series) added last, a pure addition
/// (docs/output-formats.md).
pub const CSV_SCHEMA_VERSION: u32 = 2;

pub const HEADER: [&str; 13] = [
    "schema_version",
    "elapsed_s",
    "domain",
    "kind",
    "socket",
    "source",
    "estimated",
    "energy_delta_j",
    "power_w",
    "device",
    "start_s",
    "cumulative_j",
    "run",
];

/// The buffer the csv writer fills, shared so the formatted bytes can be taken out.
#[derive(Clone, Default)]
struct TickBuf(Rc<RefCell<Vec<u8>>>);

impl Write for TickBuf {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Formats the header and each tick's rows into bytes.
pub struct CsvFormat {
    w: csv::Writer<TickBuf>,
    buf: TickBuf,
    cumulative: Vec<f64>,
    /// The run the cumulative energies are of (they start again with each run).
    run: u32,
}

impl Default for CsvFormat {
    fn default() -> Self {
        let buf = TickBuf::default();
        CsvFormat {
            w: csv::WriterBuilder::new().from_writer(buf.clone()),
            buf,
            cumulative: Vec::new(),
            run: 0,
        }
    }
}

impl CsvFormat {
    fn take(&mut self) -> Vec<u8> {
        let _ = self.w.flush();
        std::mem::take(&mut *self.buf.0.borrow_mut())
    }

    pub fn header(&mut self) -> Vec<u8> {
        let _ = self.w.write_record(HEADER);
        self.take()
    }

    fn row(&mut self, d: &Domain, k: usize, start_s: f64, end_s: f64, delta: f64, power: f64) {
        let run = self.run.to_string();
        self.cumulative[k] += delta;
        let num = |x: f64| format!("{:.6}", crate::text::no_negative_zero(x));
        let socket = d.socket.map(|s| s.to_string()).unwrap_or_default();
        let _ = self.w.write_record([
            CSV_SCHEMA_VERSION.to_string().as_str(),
            format!("{end_s:.6}").as_str(),
            d.name.as_str(),
            d.kind.name(),
            socket.as_str(),
            d.source.name(),
            if d.estimated { "true" } else { "false" },
            num(delta).as_str(),
            num(power).as_str(),
            d.device.id().as_str(),
            format!("{start_s:.6}").as_str(),
            num(self.cumulative[k]).as_str(),
            run.as_str(),
        ]);
    }

    /// The rows of one tick: one per fast domain (its energy in the tick, 0 when the
    /// read failed), and one per interval a slow domain completed (over its own times).
    pub fn tick(&mut self, t: &TickView<'_>) -> Vec<u8> {
        if self.run != t.run {
            self.run = t.run;
            self.cumulative.clear();
        }
        if self.cumulative.len() != t.domains.len() {
            self.cumulative.resize(t.domains.len(), 0.0);
        }
        for (k, d) in t.domains.iter().enumerate() {
            if t.is_slow.get(k).copied().unwrap_or(false) {
                continue;
            }
            let delta = t.delta_j.get(k).copied().unwrap_or(0.0);
            let power = t.power_w.get(k).copied().unwrap_or(0.0);
            self.row(d, k, t.start_s, t.end_s, delta, power);
        }
        for i in t.intervals {
            if !t.is_slow.get(i.domain).copied().unwrap_or(false) {
                continue;
            }
            if let Some(d) = t.domains.get(i.domain) {
                self.row(d, i.domain, i.start_s, i.end_s, i.energy_j, i.power_w());
            }
        }
        self.take()
    }
}

/// The CSV output of a run (or of every run of a series).
pub struct CsvSink {
    fmt: CsvFormat,
    out: Stream,
    header_pending: bool,
}

impl CsvSink {
    /// `out` prepared by [`crate::output::prepare`]. A regular file gets its header at
    /// once, in its temporary file.
    pub fn new(out: Prepared, flag: &'static str, describe: String) -> CsvSink {
        let mut s = CsvSink {
            fmt: CsvFormat::default(),
            out: Stream::new(
                out,
                flag,
                "the CSV timeline",
                describe,
                "the rows after that are missing",
            ),
            header_pending: true,
        };
        if s.out.is_atomic() {
            s.write_header();
        }
        s
    }

    fn write_header(&mut self) {
        if self.header_pending {
            self.header_pending = false;
            let h = self.fmt.header();
            self.out.write(&h, 0.0);
        }
    }

    /// The failure, if writing failed.
    pub fn error(&self) -> Option<&str> {
        self.out.error()
    }
}

impl Sink for CsvSink {
    /// Before the command starts: a FIFO, a device or a descriptor is opened now and gets
    /// the header (a FIFO without a reader is waited for, with a message).
    fn open(&mut self) -> Result<(), String> {
        self.out.open()?;
        self.write_header();
        match self.out.error() {
            Some(e) => Err(e.to_string()),
            None => Ok(()),
        }
    }
    /// The command has started: a regular file now replaces what was at its destination.
    fn started(&mut self) {
        self.out.place();
    }
    /// One tick's rows, in one write.
    fn tick(&mut self, t: &TickView<'_>) {
        if self.out.error().is_none() {
            let rows = self.fmt.tick(t);
            self.out.write(&rows, t.end_s);
        }
    }
    fn stream_error(&self) -> Option<String> {
        self.out.error().map(str::to_string)
    }
    fn finish(self: Box<Self>, _summary: &super::Summary) -> Result<(), String> {
        match self.out.error() {
            Some(e) => Err(e.to_string()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::{DomainKind, SourceKind};

    #[test]
    fn rows_accumulate_fast_per_tick_and_slow_per_sample() {
        use crate::sampler::Interval;
        use crate::sources::{Device, Place};
        let mut f = CsvFormat::default();
        let d = vec![
            Domain::new(DomainKind::Package, Some(0), SourceKind::Powercap),
            Domain::new(DomainKind::Estimate, None, SourceKind::Estimate),
            Domain::on_device(
                "chassis",
                DomainKind::Chassis,
                Device::Chassis,
                SourceKind::Hwmon,
            )
            .placed(Place::Whole),
        ];
        let slow = [false, false, true];
        let view =
            |start_s, end_s, delta: &'static [f64], intervals: &'static [Interval]| TickView {
                start_s,
                end_s,
                domains: &[],
                delta_j: delta,
                power_w: &[10.0, 5.0, 0.0],
                is_slow: &[],
                intervals,
                run: 1,
                last: false,
                command_j: None,
                domain_command_j: None,
            };
        let mut text = String::from_utf8(f.header()).unwrap();
        let mut v = view(0.0, 0.1, &[1.0, 0.5, 0.0], &[]);
        v.domains = &d;
        v.is_slow = &slow;
        text += &String::from_utf8(f.tick(&v)).unwrap();
        static IV: [Interval; 1] = [Interval {
            domain: 2,
            start_s: 0.05,
            end_s: 0.15,
            energy_j: 3.0,
            usage: None,
        }];
        let mut v = view(0.1, 0.2, &[2.0, -0.0, 0.0], &IV);
        v.domains = &d;
        v.is_slow = &slow;
        v.power_w = &[20.0, 5.0, 0.0];
        let second = String::from_utf8(f.tick(&v)).unwrap();
        assert_eq!(second.lines().count(), 3, "one tick's rows in one buffer");
        text += &second;
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], HEADER.join(","));
        assert_eq!(
            lines[3],
            "2,0.200000,package-0,package,0,powercap,false,2.000000,20.000000,socket:0,0.100000,3.000000,1"
        );
        assert_eq!(
            lines[4],
            "2,0.200000,cpu (estimated),estimate,,estimate,true,0.000000,5.000000,machine,0.100000,0.500000,1"
        );
        // The chassis sample, over its own interval.
        assert_eq!(
            lines[5],
            "2,0.150000,chassis,chassis,,hwmon,false,3.000000,30.000000,chassis,0.050000,3.000000,1"
        );
    }
}
