//! `-I MS`: while the command runs, one line per domain every MS milliseconds with the
//! energy and average power of that interval and the command's share of it (formats in
//! docs/output-formats.md, "Interval lines").
//!
//! The lines are cut from the ticks the sampler already takes (the interval is a whole
//! number of ticks, the first tick at or after each multiple of MS), so printing them
//! never adds a reading. The last, shorter interval of a run is printed when the run
//! ends: a run's lines add up to its energy.

use std::fmt::Write as _;

use super::sink::TickView;
use crate::text::{escape_line, no_negative_zero};

/// Version of the `-I` line formats, in the header of the human format and in `-x`'s
/// `schema_version` record.
pub const INTERVAL_SCHEMA_VERSION: u32 = 1;

/// Cuts the ticks into intervals and formats their lines.
pub struct IntervalLines {
    period_s: f64,
    /// `-x SEP`: separated records instead of aligned columns.
    sep: Option<String>,
    run: u32,
    window_start_s: f64,
    next_s: f64,
    /// Per domain, over the current interval: energy, J; the time its samples covered,
    /// s; whether anything was read.
    energy: Vec<f64>,
    covered: Vec<f64>,
    seen: Vec<bool>,
    /// Per domain, the command's attributed energy when the interval started, J.
    command_at_start: Vec<f64>,
    header_done: bool,
}

/// The number formats of the separated records: exact to a nanojoule (nanowatt,
/// nanosecond), shortest form, never an exponent, never `-0`.
pub fn num(x: f64) -> String {
    if !x.is_finite() {
        return String::new();
    }
    let r = (x * 1e9).round() / 1e9;
    format!("{}", no_negative_zero(r))
}

/// One field of a separated record: quoted (CSV-style, `"` doubled) when it holds the
/// separator, a quote or a line break.
pub fn field(s: &str, sep: &str) -> String {
    if s.contains(sep) || s.contains(['"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

impl IntervalLines {
    pub fn new(period_ms: u64, sep: Option<String>) -> IntervalLines {
        IntervalLines {
            period_s: period_ms as f64 / 1000.0,
            sep,
            run: 0,
            window_start_s: 0.0,
            next_s: 0.0,
            energy: Vec::new(),
            covered: Vec::new(),
            seen: Vec::new(),
            command_at_start: Vec::new(),
            header_done: false,
        }
    }

    fn reset(&mut self, n: usize) {
        self.energy.clear();
        self.energy.resize(n, 0.0);
        self.covered.clear();
        self.covered.resize(n, 0.0);
        self.seen.clear();
        self.seen.resize(n, false);
    }

    /// Take a tick; returns the lines to print when an interval ended with it.
    pub fn tick(&mut self, t: &TickView<'_>) -> Option<String> {
        let n = t.domains.len();
        if t.run != self.run || self.energy.len() != n {
            self.run = t.run;
            self.window_start_s = t.start_s;
            self.next_s = t.start_s + self.period_s;
            self.reset(n);
            self.command_at_start.clear();
            self.command_at_start.resize(n, 0.0);
        }
        let slow = |k: usize| t.is_slow.get(k).copied().unwrap_or(false);
        let dt = (t.end_s - t.start_s).max(0.0);
        for k in 0..n {
            if !slow(k) {
                self.energy[k] += t.delta_j.get(k).copied().unwrap_or(0.0);
                self.covered[k] += dt;
                self.seen[k] = true;
            }
        }
        for i in t.intervals {
            if i.domain < n && slow(i.domain) {
                self.energy[i.domain] += i.energy_j;
                self.covered[i.domain] += (i.end_s - i.start_s).max(0.0);
                self.seen[i.domain] = true;
            }
        }
        // Half a millisecond of slack, as the sampler's own schedule has.
        if t.end_s + 0.0005 < self.next_s && !t.last {
            return None;
        }
        let out = self.lines(t);
        self.window_start_s = t.end_s;
        while self.next_s <= t.end_s + 0.0005 {
            self.next_s += self.period_s;
        }
        if let Some(c) = t.domain_command_j {
            self.command_at_start.clear();
            self.command_at_start.extend_from_slice(c);
        }
        self.reset(n);
        Some(out)
    }

    fn lines(&mut self, t: &TickView<'_>) -> String {
        let mut out = String::new();
        let window = (t.end_s - self.window_start_s).max(0.0);
        if !self.header_done {
            self.header_done = true;
            if self.sep.is_none() {
                let _ = writeln!(
                    out,
                    "# joulerun -I lines v{INTERVAL_SCHEMA_VERSION}: time_s is the end of each interval; energy_j, power_w and command_j are over the interval"
                );
                let _ = writeln!(
                    out,
                    "#{:>13} {:>4} {:>14} {:>12} {:>14}  domain",
                    "time_s", "run", "energy_j", "power_w", "command_j"
                );
            }
        }
        for (k, d) in t.domains.iter().enumerate() {
            let (energy, power) = if self.seen[k] {
                let over = if t.is_slow.get(k).copied().unwrap_or(false) {
                    self.covered[k]
                } else {
                    window
                };
                let e = self.energy[k];
                (Some(e), (over > 0.0).then(|| e / over))
            } else {
                (None, None)
            };
            let command = t.domain_command_j.and_then(|c| {
                let now = c.get(k).copied()?;
                Some((now - self.command_at_start.get(k).copied().unwrap_or(0.0)).max(0.0))
            });
            let name = escape_line(&d.name);
            match &self.sep {
                Some(sep) => {
                    let f = |x: Option<f64>| x.map(num).unwrap_or_default();
                    let fields = [
                        "interval".to_string(),
                        num(t.end_s),
                        t.run.to_string(),
                        field(&name, sep),
                        f(energy),
                        f(power),
                        f(command),
                    ];
                    out.push_str(&fields.join(sep));
                    out.push('\n');
                }
                None => {
                    let f = |x: Option<f64>, w: usize, p: usize| match x {
                        Some(x) => format!("{:>w$.p$}", no_negative_zero(x)),
                        None => format!("{:>w$}", "-"),
                    };
                    let _ = writeln!(
                        out,
                        "{:>14.6} {:>4} {} {} {}  {name}",
                        t.end_s,
                        t.run,
                        f(energy, 14, 6),
                        f(power, 12, 4),
                        f(command, 14, 6),
                    );
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::Interval;
    use crate::sources::{Device, Domain, DomainKind, Place, SourceKind};

    fn domains() -> Vec<Domain> {
        vec![
            Domain::new(DomainKind::Package, Some(0), SourceKind::Powercap),
            Domain::on_device(
                "chassis",
                DomainKind::Chassis,
                Device::Chassis,
                SourceKind::Hwmon,
            )
            .placed(Place::Whole),
        ]
    }

    struct Tick {
        start: f64,
        end: f64,
        delta: Vec<f64>,
        intervals: Vec<Interval>,
        command: Vec<f64>,
        last: bool,
    }

    fn feed(l: &mut IntervalLines, d: &[Domain], ticks: &[Tick]) -> String {
        let mut out = String::new();
        for t in ticks {
            let power: Vec<f64> = t.delta.iter().map(|e| e / (t.end - t.start)).collect();
            let v = TickView {
                start_s: t.start,
                end_s: t.end,
                domains: d,
                delta_j: &t.delta,
                power_w: &power,
                is_slow: &[false, true],
                intervals: &t.intervals,
                run: 1,
                last: t.last,
                command_j: None,
                domain_command_j: Some(&t.command),
            };
            if let Some(s) = l.tick(&v) {
                out += &s;
            }
        }
        out
    }

    fn ticks() -> Vec<Tick> {
        (0..5)
            .map(|i| Tick {
                start: i as f64 * 0.1,
                end: (i + 1) as f64 * 0.1,
                delta: vec![1.0, 0.0],
                intervals: if i == 2 {
                    vec![Interval {
                        domain: 1,
                        start_s: 0.0,
                        end_s: 0.25,
                        energy_j: 25.0,
                        usage: None,
                    }]
                } else {
                    vec![]
                },
                command: vec![0.5 * (i + 1) as f64, 0.0],
                last: i == 4,
            })
            .collect()
    }

    #[test]
    fn lines_every_period_and_the_rest_at_the_end() {
        let d = domains();
        let mut l = IntervalLines::new(200, None);
        let text = feed(&mut l, &d, &ticks());
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        // Intervals ending at 0.2, 0.4 and (the last, shorter one) 0.5; two domains each.
        assert_eq!(lines.len(), 6, "{text}");
        let cols: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(
            cols,
            [
                "0.200000",
                "1",
                "2.000000",
                "10.0000",
                "1.000000",
                "package-0"
            ]
        );
        // The chassis had no sample in the first interval, one of 0.25 s in the second.
        assert_eq!(lines[1].split_whitespace().collect::<Vec<_>>()[2], "-");
        let chassis: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(&chassis[2..4], ["25.000000", "100.0000"]);
        let last: Vec<&str> = lines[4].split_whitespace().collect();
        assert_eq!(
            &last[..5],
            ["0.500000", "1", "1.000000", "10.0000", "0.500000"]
        );
        // The header comes once, with the column names.
        assert_eq!(text.matches("# joulerun -I lines").count(), 1);
        assert!(text.contains("time_s  run"), "{text}");
    }

    #[test]
    fn separated_records_quote_what_holds_the_separator() {
        let mut d = domains();
        d[0].name = "a,b".into();
        let mut l = IntervalLines::new(200, Some(",".into()));
        let text = feed(&mut l, &d, &ticks());
        let first = text.lines().next().unwrap();
        assert_eq!(first, "interval,0.2,1,\"a,b\",2,10,1");
        assert!(
            text.lines().nth(1).unwrap().ends_with(",chassis,,,0"),
            "{text}"
        );
        assert!(!text.contains('#'));
    }

    #[test]
    fn numbers_are_exact_short_and_never_negative_zero() {
        assert_eq!(num(12.5), "12.5");
        assert_eq!(num(0.1 + 0.2), "0.3");
        assert_eq!(num(-0.0), "0");
        assert_eq!(num(1e-7), "0.0000001");
        assert_eq!(num(f64::NAN), "");
        assert_eq!(field("x\"y", ";"), "\"x\"\"y\"");
        assert_eq!(field("plain", "\t"), "plain");
    }
}
