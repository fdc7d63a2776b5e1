//! The CSV timeline: one row per domain per tick, flushed every tick so a killed run
//! still leaves its rows (schema in docs/output-formats.md).

use std::io::Write;

use crate::sources::Domain;

/// Version of the CSV schema, written in the `schema_version` column of every row.
pub const CSV_SCHEMA_VERSION: u32 = 1;

pub const HEADER: [&str; 10] = [
    "schema_version",
    "elapsed_s",
    "domain",
    "kind",
    "socket",
    "source",
    "estimated",
    "energy_delta_j",
    "power_w",
    "cumulative_j",
];

pub struct CsvSink {
    w: csv::Writer<Box<dyn Write>>,
    cumulative: Vec<f64>,
}

impl CsvSink {
    pub fn new(out: Box<dyn Write>) -> csv::Result<CsvSink> {
        let mut w = csv::WriterBuilder::new().from_writer(out);
        w.write_record(HEADER)?;
        w.flush()?;
        Ok(CsvSink {
            w,
            cumulative: Vec::new(),
        })
    }

    /// Write one tick and flush.
    pub fn tick(
        &mut self,
        elapsed_s: f64,
        domains: &[Domain],
        delta_j: &[f64],
        power_w: &[f64],
    ) -> csv::Result<()> {
        if self.cumulative.len() != domains.len() {
            self.cumulative.resize(domains.len(), 0.0);
        }
        let t = format!("{elapsed_s:.6}");
        for (i, d) in domains.iter().enumerate() {
            self.cumulative[i] += delta_j[i];
            let socket = d.socket.map(|s| s.to_string()).unwrap_or_default();
            self.w.write_record([
                CSV_SCHEMA_VERSION.to_string().as_str(),
                t.as_str(),
                d.name.as_str(),
                d.kind.name(),
                socket.as_str(),
                d.source.name(),
                if d.estimated { "true" } else { "false" },
                format!("{:.6}", delta_j[i]).as_str(),
                format!("{:.6}", power_w[i]).as_str(),
                format!("{:.6}", self.cumulative[i]).as_str(),
            ])?;
        }
        self.w.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::{DomainKind, SourceKind};
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn rows_accumulate_and_flush() {
        let buf = Shared::default();
        let mut s = CsvSink::new(Box::new(buf.clone())).unwrap();
        let d = vec![
            Domain::new(DomainKind::Package, Some(0), SourceKind::Powercap),
            Domain::new(DomainKind::Estimate, None, SourceKind::Estimate),
        ];
        s.tick(0.1, &d, &[1.0, 0.5], &[10.0, 5.0]).unwrap();
        s.tick(0.2, &d, &[2.0, 0.5], &[20.0, 5.0]).unwrap();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], HEADER.join(","));
        assert_eq!(
            lines[3],
            "1,0.200000,package-0,package,0,powercap,false,2.000000,20.000000,3.000000"
        );
        assert_eq!(
            lines[4],
            "1,0.200000,cpu (estimated),estimate,,estimate,true,0.500000,5.000000,1.000000"
        );
    }
}
