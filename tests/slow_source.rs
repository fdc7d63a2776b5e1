//! A slow source never slows the tick: a reader whose every read blocks for 500 ms runs
//! beside a fake RAPL package driven at a known power, through the production sampling
//! loop (`run::drive`), sampler, reader threads and CSV sink. The CSV's own timestamps
//! (the sampler's monotonic clock) show the package ticking at its interval and the slow
//! domain's samples arriving over their own intervals.

use std::path::Path;
use std::time::Duration;

use joulerun::output::{self, Dest, Requested};
use joulerun::report::csv::CsvSink;
use joulerun::report::sink::{Sink, TickView};
use joulerun::run::{Ended, Workload, drive};
use joulerun::sampler::Sampler;
use joulerun::signals::Signals;
use joulerun::sources::powercap::PowercapSource;
use joulerun::sources::{
    Cadence, Device, Domain, DomainKind, OpenContext, Place, ReadError, Reading, Source, SourceKind,
};
use joulerun::sysroot::SysRoot;
use joulerun_testkit::fakehw::{CounterDriver, DrivenCounter, FakePowercap, INTEL_RANGE_UJ};

/// A whole-machine meter whose reads block for half a second, then report 100 W.
struct Blocking {
    domains: Vec<Domain>,
}

impl Source for Blocking {
    fn kind(&self) -> SourceKind {
        SourceKind::Hwmon
    }
    fn domains(&self) -> &[Domain] {
        &self.domains
    }
    fn cadence(&self) -> Cadence {
        Cadence::Every(Duration::from_millis(100))
    }
    fn read(&mut self, out: &mut Vec<Result<Reading, ReadError>>) {
        std::thread::sleep(Duration::from_millis(500));
        out.clear();
        out.push(Ok(Reading::Power { watts: 100.0 }));
    }
}

struct Row {
    elapsed_s: f64,
    domain: String,
    energy_j: f64,
    power_w: f64,
    start_s: f64,
}

fn rows(path: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |n: &str| header.iter().position(|h| *h == n).unwrap();
    let (e, d, j, p, s) = (
        col("elapsed_s"),
        col("domain"),
        col("energy_delta_j"),
        col("power_w"),
        col("start_s"),
    );
    lines
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            Row {
                elapsed_s: c[e].parse().unwrap(),
                domain: c[d].to_string(),
                energy_j: c[j].parse().unwrap(),
                power_w: c[p].parse().unwrap(),
                start_s: c[s].parse().unwrap(),
            }
        })
        .collect()
}

#[test]
fn a_reader_blocking_500_ms_per_read_never_delays_the_tick() {
    let mut signals = Signals::install().unwrap();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("hw");
    let f = FakePowercap::new(&root).unwrap();
    f.add_zone("intel-rapl:0", "package-0", 0, Some(INTEL_RANGE_UJ))
        .unwrap();
    let _driver = CounterDriver::start(vec![DrivenCounter::powercap(
        f.energy_path("intel-rapl:0"),
        40.0,
        INTEL_RANGE_UJ,
        0,
    )])
    .unwrap();
    let ctx = OpenContext::for_root(SysRoot::new(&root));
    let pc = PowercapSource::open(&ctx).unwrap();
    let meter = Blocking {
        domains: vec![
            Domain::on_device(
                "chassis",
                DomainKind::Chassis,
                Device::Chassis,
                SourceKind::Hwmon,
            )
            .placed(Place::Whole),
        ],
    };
    let mut sampler = Sampler::new(vec![Box::new(pc), Box::new(meter)], &[]);
    assert!(!sampler.is_slow(0) && sampler.is_slow(1));
    let csv_path = t.path().join("t.csv");
    let req = Requested {
        flag: "--csv",
        what: "the CSV timeline",
        dest: Dest::parse(&csv_path),
    };
    let mut csv = CsvSink::new(output::prepare(&req).unwrap(), "--csv", "t.csv".into());
    csv.open().unwrap();
    sampler.start();
    csv.started();
    let is_slow = [false, true];
    let mut tick_start = 0.0;
    let ended = drive(
        &mut sampler,
        &mut signals,
        &Workload::Timer { until_s: 3.0 },
        Duration::from_millis(100),
        |s, _dt| {
            let end_s = s.elapsed_s();
            csv.tick(&TickView {
                start_s: tick_start,
                end_s,
                domains: s.domains(),
                delta_j: &s.delta_j,
                power_w: &s.power_w,
                is_slow: &is_slow,
                intervals: &s.intervals,
                run: 1,
                last: s.is_final(),
                command_j: None,
                domain_command_j: None,
            });
            tick_start = end_s;
        },
    );
    assert_eq!(ended, Ended::Deadline);
    assert!(csv.stream_error().is_none());
    let rows = rows(&csv_path);

    // The package ticked every 100 ms for 3 s: about 30 ticks, never 500 ms apart.
    let pkg: Vec<&Row> = rows.iter().filter(|r| r.domain == "package-0").collect();
    assert!((27..=31).contains(&pkg.len()), "{} package rows", pkg.len());
    let gaps: Vec<f64> = pkg
        .windows(2)
        .map(|w| w[1].elapsed_s - w[0].elapsed_s)
        .collect();
    let widest = gaps.iter().cloned().fold(0.0, f64::max);
    assert!(
        widest < 0.4,
        "a tick waited for the blocking reader: gap {widest} s"
    );
    let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
    assert!((0.09..=0.12).contains(&mean), "mean tick spacing {mean} s");
    // Its energy: 40 W over the run, within 2%.
    let pkg_j: f64 = pkg.iter().map(|r| r.energy_j).sum();
    let span = pkg.last().unwrap().elapsed_s;
    assert!(
        (pkg_j - 40.0 * span).abs() < 0.02 * 40.0 * span,
        "{pkg_j} J in {span} s"
    );

    // The slow domain: a sample about every 600 ms (a 500 ms read and a 100 ms period),
    // each over its own interval, at 100 W.
    let slow: Vec<&Row> = rows.iter().filter(|r| r.domain == "chassis").collect();
    assert!((3..=6).contains(&slow.len()), "{} chassis rows", slow.len());
    for r in &slow {
        let len = r.elapsed_s - r.start_s;
        assert!(len > 0.45, "a sample's own interval: {len} s");
        assert!((r.power_w - 100.0).abs() < 1e-6, "{}", r.power_w);
        assert!((r.energy_j - 100.0 * len).abs() < 1e-3);
    }
    // Consecutive samples tile time: each starts where the previous ended.
    for w in slow.windows(2) {
        assert!((w[1].start_s - w[0].elapsed_s).abs() < 1e-9);
    }
}
