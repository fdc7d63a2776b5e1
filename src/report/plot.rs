//! `--plot FILE.svg|FILE.html`: power over time per device, drawn with plotters' SVG
//! backend (docs/output-formats.md, "Plot").
//!
//! The [`Timeline`] collects each domain's energy into time buckets of the sampler's
//! clock (fast domains per tick, slow ones over their own samples' intervals, spread by
//! overlap), and the command's attributed energy beside them. Memory is bounded: past
//! [`MAX_BUCKETS`] buckets, neighbours are merged (the bucket width doubles), and the
//! plot says over how long each point is averaged.
//!
//! [`render`] stacks the parts (CPU packages, DRAM, GPUs, the estimate) and, when the
//! whole machine was measured, the rest of the system on top; shades the command's share
//! from the bottom; draws the baseline (calibrated idle power of the stacked domains) as
//! a dashed line; and puts the run's energy, kWh, cost and CO2e in the title. It takes
//! several timelines: the runs of `-r` (issue 11) will draw their spread (the band
//! between the lowest and highest total power at each time) behind the first run; the
//! run loop gives it one today.

use plotters::prelude::*;

use crate::error::Result;
use crate::output::{self, Prepared, Requested};
use crate::plan::RunPlan;
use crate::sources::{Domain, DomainKind, Place};

use super::Summary;
use super::sink::{Sink, TickView};

/// Most time buckets kept per run; beyond, neighbours are merged.
pub const MAX_BUCKETS: usize = 1200;
/// Picture size, px.
pub const WIDTH: u32 = 1000;
pub const HEIGHT: u32 = 560;

/// How a series is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Stacked: a part of the machine's total.
    Part,
    /// The whole machine: drawn as the "rest of system" above the parts.
    Whole,
    /// Inside another domain, or overlapping several: not drawn.
    Hidden,
}

/// One domain of a timeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    pub kind: DomainKind,
    pub role: Role,
}

impl Series {
    pub fn of(d: &Domain) -> Series {
        Series {
            name: d.name.clone(),
            kind: d.kind,
            role: match d.place {
                Place::Part => Role::Part,
                Place::Whole => Role::Whole,
                Place::Inside(_) | Place::Overlaps => Role::Hidden,
            },
        }
    }

    /// Stacking order: packages, DRAM, GPUs, the estimate, other parts.
    fn rank(&self) -> u8 {
        match self.kind {
            DomainKind::Package => 0,
            DomainKind::Dram => 1,
            DomainKind::Gpu => 2,
            DomainKind::Estimate => 3,
            _ => 4,
        }
    }
}

/// A run's energy over time, in buckets of equal width from 0.
#[derive(Clone, Debug)]
pub struct Timeline {
    pub series: Vec<Series>,
    bucket_s: f64,
    /// Per bucket, per series, J.
    energy: Vec<Vec<f64>>,
    /// Per bucket, the command's energy, J.
    command: Vec<f64>,
    /// Whether the command's share was known (not `-a`, not a saved CSV).
    pub has_command: bool,
    command_so_far: f64,
    /// The end of the last data, s.
    pub end_s: f64,
    /// Baseline power of the stacked domains, W, if one was calibrated.
    pub baseline_w: Option<f64>,
    /// The bucket width the timeline started with (the sampling interval), s.
    pub base_bucket_s: f64,
}

impl Timeline {
    pub fn new(series: Vec<Series>, bucket_s: f64) -> Timeline {
        let bucket_s = if bucket_s.is_finite() && bucket_s > 0.0 {
            bucket_s
        } else {
            0.1
        };
        Timeline {
            series,
            bucket_s,
            energy: Vec::new(),
            command: Vec::new(),
            has_command: false,
            command_so_far: 0.0,
            end_s: 0.0,
            baseline_w: None,
            base_bucket_s: bucket_s,
        }
    }

    /// Width of one point now, s (doubles as long runs are merged).
    pub fn bucket_s(&self) -> f64 {
        self.bucket_s
    }

    pub fn len(&self) -> usize {
        self.energy.len()
    }

    pub fn is_empty(&self) -> bool {
        self.energy.is_empty()
    }

    /// Make room for time `t_s`, merging neighbours while the buckets would be too many.
    fn reach(&mut self, t_s: f64) {
        while t_s / self.bucket_s > MAX_BUCKETS as f64 {
            let n = self.series.len();
            let pairs = self.energy.len().div_ceil(2);
            let mut e = Vec::with_capacity(pairs);
            let mut c = Vec::with_capacity(pairs);
            for i in 0..pairs {
                let mut row = vec![0.0; n];
                let mut cj = 0.0;
                for j in [2 * i, 2 * i + 1] {
                    if let Some(r) = self.energy.get(j) {
                        row.iter_mut().zip(r).for_each(|(a, b)| *a += b);
                        cj += self.command[j];
                    }
                }
                e.push(row);
                c.push(cj);
            }
            self.energy = e;
            self.command = c;
            self.bucket_s *= 2.0;
        }
        let need = ((t_s / self.bucket_s).ceil() as usize).min(MAX_BUCKETS);
        while self.energy.len() < need {
            self.energy.push(vec![0.0; self.series.len()]);
            self.command.push(0.0);
        }
        self.end_s = self.end_s.max(t_s);
    }

    /// Spread `energy_j` over `[start_s, end_s]` by overlap with the buckets;
    /// `series`: `None` for the command.
    fn spread(&mut self, series: Option<usize>, start_s: f64, end_s: f64, energy_j: f64) {
        if !(energy_j.is_finite() && end_s.is_finite() && start_s.is_finite()) {
            return;
        }
        let (s, e) = (start_s.max(0.0), end_s.max(0.0));
        self.reach(e);
        let w = self.bucket_s;
        if e <= s {
            let i = ((e / w) as usize).min(self.energy.len().saturating_sub(1));
            self.put(series, i, energy_j);
            return;
        }
        let first = (s / w) as usize;
        let last = ((e / w).ceil() as usize).min(self.energy.len());
        for i in first..last {
            let (b0, b1) = (i as f64 * w, (i + 1) as f64 * w);
            let overlap = (e.min(b1) - s.max(b0)).max(0.0);
            if overlap > 0.0 {
                self.put(series, i, energy_j * overlap / (e - s));
            }
        }
    }

    fn put(&mut self, series: Option<usize>, i: usize, j: f64) {
        match series {
            Some(k) => {
                if let Some(v) = self.energy.get_mut(i).and_then(|r| r.get_mut(k)) {
                    *v += j;
                }
            }
            None => {
                if let Some(v) = self.command.get_mut(i) {
                    *v += j;
                }
            }
        }
    }

    /// Add one domain's energy over an interval of the sampler's clock.
    pub fn add(&mut self, series: usize, start_s: f64, end_s: f64, energy_j: f64) {
        self.spread(Some(series), start_s, end_s, energy_j);
    }

    /// The command's attributed energy so far, at `end_s` (cumulative): the rise since
    /// the last call goes over `[start_s, end_s]`.
    pub fn command_at(&mut self, start_s: f64, end_s: f64, cumulative_j: f64) {
        self.has_command = true;
        let rise = cumulative_j - self.command_so_far;
        self.command_so_far = cumulative_j;
        if rise > 0.0 {
            self.spread(None, start_s, end_s, rise);
        }
    }

    /// Take one tick (fast domains' deltas, slow domains' intervals, the command).
    pub fn tick(&mut self, t: &TickView<'_>) {
        for k in 0..self.series.len() {
            if !t.is_slow.get(k).copied().unwrap_or(false) {
                let d = t.delta_j.get(k).copied().unwrap_or(0.0);
                self.add(k, t.start_s, t.end_s, d);
            }
        }
        for i in t.intervals {
            if t.is_slow.get(i.domain).copied().unwrap_or(false) {
                self.add(i.domain, i.start_s, i.end_s, i.energy_j);
            }
        }
        if let Some(c) = t.command_j {
            self.command_at(t.start_s, t.end_s, c);
        }
        self.reach(t.end_s);
    }

    /// The time bucket `i` covers, s: its width, or less for the last one when the run
    /// ended inside it (so a short last bucket is no dip in power).
    fn width(&self, i: usize) -> f64 {
        let start = i as f64 * self.bucket_s;
        let w = (self.end_s - start).min(self.bucket_s);
        if w > self.bucket_s * 1e-3 {
            w
        } else {
            self.bucket_s
        }
    }

    /// Power per bucket of series `k`, W.
    fn power(&self, k: usize) -> Vec<f64> {
        self.energy
            .iter()
            .enumerate()
            .map(|(i, r)| r[k] / self.width(i))
            .collect()
    }

    /// Bucket centres, s.
    fn times(&self) -> Vec<f64> {
        (0..self.energy.len())
            .map(|i| (i as f64 + 0.5) * self.bucket_s)
            .collect()
    }

    /// The stacked layers, bottom to top: (label, power per bucket), with the rest of
    /// the system (whole minus parts, at least 0) on top when a whole was measured.
    pub fn layers(&self) -> Vec<(String, Vec<f64>)> {
        let mut parts: Vec<usize> = (0..self.series.len())
            .filter(|&k| self.series[k].role == Role::Part)
            .collect();
        parts.sort_by_key(|&k| (self.series[k].rank(), k));
        let mut out: Vec<(String, Vec<f64>)> = parts
            .iter()
            .map(|&k| (self.series[k].name.clone(), self.power(k)))
            .collect();
        let wholes: Vec<usize> = (0..self.series.len())
            .filter(|&k| self.series[k].role == Role::Whole)
            .collect();
        let whole: Vec<f64> = (0..self.energy.len())
            .map(|i| wholes.iter().map(|&k| self.energy[i][k]).sum::<f64>() / self.width(i))
            .collect();
        if whole.iter().any(|w| *w > 0.0) {
            let rest = (0..self.energy.len())
                .map(|i| {
                    let p: f64 = out.iter().map(|(_, v)| v[i]).sum();
                    (whole[i] - p).max(0.0)
                })
                .collect();
            out.push(("rest of system".to_string(), rest));
        }
        out
    }

    /// The run's energy, J: the whole machine's when measured, else the sum of the
    /// parts (as `report::totals` decides).
    pub fn total_j(&self) -> f64 {
        let sum = |role: Role| -> f64 {
            (0..self.series.len())
                .filter(|&k| self.series[k].role == role)
                .map(|k| self.energy.iter().map(|r| r[k]).sum::<f64>())
                .sum()
        };
        let whole = sum(Role::Whole);
        if whole > 0.0 { whole } else { sum(Role::Part) }
    }

    /// The command's power per bucket, W.
    pub fn command_power(&self) -> Vec<f64> {
        self.command
            .iter()
            .enumerate()
            .map(|(i, j)| j / self.width(i))
            .collect()
    }

    /// Total (stacked) power per bucket, W.
    pub fn total_power(&self) -> Vec<f64> {
        let layers = self.layers();
        (0..self.energy.len())
            .map(|i| layers.iter().map(|(_, v)| v[i]).sum())
            .collect()
    }
}

/// What the title and the notes say.
#[derive(Clone, Debug, Default)]
pub struct PlotInfo {
    /// "Energy of 'make -j8'".
    pub title: String,
    /// "2.59 J (0.719 mWh) · 0.00000022 EUR · 0.35 g CO2e (estimated)".
    pub summary: String,
    /// Shown small under the title (what is missing, how points are averaged).
    pub notes: Vec<String>,
}

impl PlotInfo {
    /// From a finished run's summary.
    pub fn of_summary(s: &Summary) -> PlotInfo {
        let est = if s.estimated { " (estimated)" } else { "" };
        let cmd = s.command_line();
        let cmd = crate::text::elide_middle(&crate::text::escape_line(&cmd), 60).into_owned();
        let title = match s.mode {
            super::Mode::Command if cmd.contains('\'') => format!("Power of: {cmd}"),
            super::Mode::Command => format!("Power of '{cmd}'"),
            super::Mode::Pid => format!("Power while process {} ran", s.pid.unwrap_or(0)),
            super::Mode::All => "Power of the whole machine".to_string(),
        };
        PlotInfo {
            title,
            summary: format!(
                "{} ({}) · {} · {} CO2e{est} at {} g/kWh",
                super::fmt_joules(s.total.energy_j),
                super::fmt_kwh(s.total.energy_j),
                super::fmt_money(s.cost.amount, &crate::text::escape_line(&s.cost.currency)),
                crate::carbon::fmt_grams(s.emissions.g_co2e),
                crate::carbon::fmt_intensity(s.emissions.intensity_g_per_kwh),
            ),
            notes: Vec::new(),
        }
    }
}

/// Colours of the stacked layers, by kind.
fn colour(label: &str, i: usize) -> RGBColor {
    let palette = [
        RGBColor(31, 119, 180),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(23, 190, 207),
        RGBColor(188, 189, 34),
    ];
    if label == "rest of system" {
        RGBColor(170, 170, 170)
    } else if label.starts_with("package") {
        [RGBColor(31, 119, 180), RGBColor(70, 150, 210)][i % 2]
    } else if label.starts_with("dram") {
        RGBColor(44, 160, 44)
    } else if label.starts_with("gpu") {
        RGBColor(214, 39, 40)
    } else if label.contains("estimate") {
        RGBColor(255, 127, 14)
    } else {
        palette[i % palette.len()]
    }
}

/// Draw `runs` (the first stacked, the others as a spread band) as an SVG document.
pub fn render(runs: &[Timeline], info: &PlotInfo) -> std::result::Result<String, String> {
    let first = runs.first().ok_or("no run to plot")?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, runs, first, info).map_err(|e| format!("drawing the plot: {e}"))?;
        root.present()
            .map_err(|e| format!("drawing the plot: {e}"))?;
    }
    Ok(svg)
}

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn draw(
    root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    runs: &[Timeline],
    first: &Timeline,
    info: &PlotInfo,
) -> DrawResult {
    root.fill(&WHITE)?;
    let (top, body) = root.split_vertically(64);
    top.draw(&Text::new(
        info.title.clone(),
        (16, 8),
        ("sans-serif", 22).into_font().color(&BLACK),
    ))?;
    top.draw(&Text::new(
        info.summary.clone(),
        (16, 36),
        ("sans-serif", 16).into_font().color(&RGBColor(60, 60, 60)),
    ))?;
    let layers = first.layers();
    let times = first.times();
    let totals = first.total_power();
    let command = first.command_power();
    // The spread of the other runs: lowest and highest total power per time.
    let spread: Option<(Vec<f64>, Vec<f64>)> = (runs.len() > 1).then(|| {
        let grid: Vec<Vec<f64>> = runs
            .iter()
            .map(|r| {
                let tp = r.total_power();
                times
                    .iter()
                    .map(|t| {
                        let i = (t / r.bucket_s()) as usize;
                        tp.get(i).copied().unwrap_or(0.0)
                    })
                    .collect()
            })
            .collect();
        let lo = (0..times.len())
            .map(|i| grid.iter().map(|g| g[i]).fold(f64::INFINITY, f64::min))
            .collect();
        let hi = (0..times.len())
            .map(|i| grid.iter().map(|g| g[i]).fold(0.0, f64::max))
            .collect();
        (lo, hi)
    });
    let mut y_max = totals.iter().copied().fold(0.0, f64::max);
    if let Some((_, hi)) = &spread {
        y_max = hi.iter().copied().fold(y_max, f64::max);
    }
    if let Some(b) = first.baseline_w {
        y_max = y_max.max(b);
    }
    let y_max = if y_max > 0.0 { y_max * 1.12 } else { 1.0 };
    let x_max = first.end_s.max(first.bucket_s());

    let mut notes = info.notes.clone();
    if first.bucket_s() > first.base_bucket_s * 1.5 {
        notes.push(format!(
            "each point averages {} s (long run, at most {MAX_BUCKETS} points)",
            super::sig(first.bucket_s(), 3)
        ));
    }
    let caption = notes.join("; ");
    let mut chart = ChartBuilder::on(&body)
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .caption(
            caption,
            ("sans-serif", 13).into_font().color(&RGBColor(90, 90, 90)),
        )
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("time since start (s)")
        .y_desc("power (W)")
        .label_style(("sans-serif", 13))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;

    if let Some((lo, hi)) = &spread {
        let band: Vec<(f64, f64)> = times
            .iter()
            .zip(hi)
            .map(|(t, h)| (*t, *h))
            .chain(times.iter().zip(lo).rev().map(|(t, l)| (*t, *l)))
            .collect();
        chart
            .draw_series(std::iter::once(Polygon::new(
                band,
                RGBColor(200, 200, 230).mix(0.6).filled(),
            )))?
            .label(format!("spread of {} runs", runs.len()))
            .legend(|(x, y)| {
                Rectangle::new(
                    [(x, y - 5), (x + 14, y + 5)],
                    RGBColor(200, 200, 230).filled(),
                )
            });
    }

    // Stacked areas: each layer from the sum below it to the sum with it, drawn top
    // first so lower layers stay visible at the edges.
    let mut cum: Vec<Vec<f64>> = Vec::with_capacity(layers.len());
    let mut acc = vec![0.0; times.len()];
    for (_, v) in &layers {
        acc.iter_mut().zip(v).for_each(|(a, b)| *a += b);
        cum.push(acc.clone());
    }
    let step = |t: &[f64], v: &[f64], w: f64| -> Vec<(f64, f64)> {
        // Steps: each bucket's value held over its width.
        let mut pts = Vec::with_capacity(2 * t.len());
        for (c, y) in t.iter().zip(v) {
            let start = c - w / 2.0;
            pts.push((start, *y));
            pts.push(((start + w).min(x_max), *y));
        }
        pts
    };
    let w = first.bucket_s();
    for (i, (label, _)) in layers.iter().enumerate().rev() {
        let c = colour(label, i);
        chart
            .draw_series(
                AreaSeries::new(step(&times, &cum[i], w), 0.0, c.mix(0.85)).border_style(c),
            )?
            .label(label.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.filled()));
    }
    if first.has_command && command.iter().any(|c| *c > 0.0) {
        let shade = RGBColor(20, 20, 20);
        chart
            .draw_series(
                AreaSeries::new(step(&times, &command, w), 0.0, shade.mix(0.28))
                    .border_style(shade.mix(0.6)),
            )?
            .label("the command's share (shaded)")
            .legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + Rectangle::new([(0, -5), (14, 5)], shade.mix(0.28).filled())
                    + Rectangle::new([(0, -5), (14, 5)], shade.mix(0.6))
            });
    }
    if let Some(b) = first.baseline_w {
        let red = RGBColor(200, 0, 0);
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, b), (x_max, b)],
                8,
                5,
                red.stroke_width(2),
            ))?
            .label(format!("baseline (idle) {} W", super::sig(b, 3)))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], red.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .label_font(("sans-serif", 13))
        .draw()?;
    Ok(())
}

/// An SVG document as a self-contained HTML page.
pub fn html_page(svg: &str, title: &str) -> String {
    let title = title
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    // The SVG's own XML declaration, if any, does not belong inside HTML.
    let body = svg.trim_start();
    let body = if body.starts_with("<?xml") {
        body.split_once("?>").map_or(body, |(_, b)| b)
    } else {
        body
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n<style>body{{font-family:sans-serif;margin:1em}} svg{{max-width:100%;height:auto}}</style>\n</head>\n<body>\n{}\n<p>Made by joulerun {}.</p>\n</body>\n</html>\n",
        body.trim(),
        env!("CARGO_PKG_VERSION")
    )
}

/// Whether a destination asks for an HTML page (`.html`, `.htm`); otherwise SVG.
pub fn wants_html(r: &Requested) -> bool {
    match &r.dest {
        output::Dest::Path(p) => p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("html") || e.eq_ignore_ascii_case("htm")),
        output::Dest::Fd(_) => false,
    }
}

/// The picture of `runs` as the bytes of `r`'s format.
pub fn document(
    runs: &[Timeline],
    info: &PlotInfo,
    html: bool,
) -> std::result::Result<Vec<u8>, String> {
    let svg = render(runs, info)?;
    Ok(if html {
        html_page(&svg, &format!("{} — {}", info.title, info.summary))
    } else {
        svg
    }
    .into_bytes())
}

/// `--plot`: collects the run's timeline, draws it when the run is over.
pub struct PlotSink {
    requested: Requested,
    out: Prepared,
    /// One timeline per run of a series (`-r`): the first is drawn stacked, the others
    /// as the band of their spread.
    runs: Vec<Timeline>,
    /// An empty timeline, the start of each run's.
    template: Timeline,
    /// The run the last timeline is of.
    run: u32,
}

impl PlotSink {
    /// The destination is prepared now (an unwritable one stops the run before it
    /// starts). `baseline_w`: per domain, its calibrated idle power, if any.
    pub fn new(
        r: &Requested,
        domains: &[Domain],
        baseline_w: &[Option<f64>],
        interval_s: f64,
    ) -> Result<PlotSink> {
        let series: Vec<Series> = domains.iter().map(Series::of).collect();
        let mut t = Timeline::new(series, interval_s);
        let stacked: Vec<Option<f64>> = t
            .series
            .iter()
            .zip(baseline_w.iter().chain(std::iter::repeat(&None)))
            .filter(|(s, _)| s.role == Role::Part)
            .map(|(_, b)| *b)
            .collect();
        if !stacked.is_empty() && stacked.iter().all(Option::is_some) {
            t.baseline_w = Some(stacked.iter().flatten().sum());
        }
        Ok(PlotSink {
            requested: r.clone(),
            out: output::prepare(r)?,
            runs: Vec::new(),
            template: t,
            run: 0,
        })
    }
}

impl Sink for PlotSink {
    fn tick(&mut self, t: &TickView<'_>) {
        if self.runs.is_empty() || t.run != self.run {
            self.run = t.run;
            self.runs.push(self.template.clone());
        }
        if let Some(r) = self.runs.last_mut() {
            r.tick(t);
        }
    }

    fn finish(mut self: Box<Self>, summary: &Summary) -> std::result::Result<(), String> {
        if self.runs.is_empty() {
            self.runs.push(self.template.clone());
        }
        let mut info = PlotInfo::of_summary(summary);
        if self.runs.iter().all(|r| r.baseline_w.is_none()) && summary.attribution.is_some() {
            info.notes
                .push("no baseline calibrated (joulerun --basepower)".to_string());
        }
        let bytes = document(&self.runs, &info, wants_html(&self.requested))?;
        let r = &self.requested;
        self.out
            .finish(&bytes, r.flag)
            .map_err(|e| format!("writing {} to {}: {e}", r.what, r.dest.describe()))
    }
}

/// The sinks of issue 12 for a run: OpenMetrics and the push, the plot.
pub fn issue12_sinks(
    plan: &RunPlan,
    baseline_w: &[Option<f64>],
    domains: &[Domain],
) -> Result<Vec<Box<dyn Sink>>> {
    let mut v: Vec<Box<dyn Sink>> = Vec::new();
    if plan.openmetrics.is_some() || plan.push.is_some() {
        let labels = super::openmetrics::RunLabels::new(&plan.command, plan.pid, &plan.push_job);
        let sink = super::openmetrics::OpenMetricsSink::new(
            plan.openmetrics.as_ref(),
            plan.push.as_ref(),
            labels,
        )?;
        // With -I, the file is rewritten at each interval too.
        v.push(Box::new(match plan.interval_print_ms {
            Some(ms) => sink.every(ms),
            None => sink,
        }));
    }
    if let Some(r) = &plan.plot {
        v.push(Box::new(PlotSink::new(
            r,
            domains,
            baseline_w,
            plan.interval_ms as f64 / 1e3,
        )?));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, kind: DomainKind, role: Role) -> Series {
        Series {
            name: name.into(),
            kind,
            role,
        }
    }

    #[test]
    fn buckets_spread_by_overlap_and_stay_bounded() {
        let mut t = Timeline::new(
            vec![
                series("dram-0", DomainKind::Dram, Role::Part),
                series("package-0", DomainKind::Package, Role::Part),
                series("core-0", DomainKind::Core, Role::Hidden),
                series("chassis", DomainKind::Chassis, Role::Whole),
            ],
            0.1,
        );
        // 10 W package, 2 W DRAM per 0.1 s tick; a chassis sample of 20 W over 1 s.
        for i in 0..10 {
            let (s, e) = (i as f64 / 10.0, (i + 1) as f64 / 10.0);
            t.add(1, s, e, 1.0);
            t.add(0, s, e, 0.2);
            t.command_at(s, e, (i + 1) as f64 * 0.5);
        }
        t.add(3, 0.0, 1.0, 20.0);
        assert_eq!(t.len(), 10);
        let layers = t.layers();
        let names: Vec<&str> = layers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["package-0", "dram-0", "rest of system"]);
        for (n, want) in [(0, 10.0), (1, 2.0), (2, 8.0)] {
            assert!(
                layers[n].1.iter().all(|p| (p - want).abs() < 1e-9),
                "{n}: {:?}",
                layers[n].1
            );
        }
        assert!(t.command_power().iter().all(|p| (p - 5.0).abs() < 1e-9));
        // A long run: at most MAX_BUCKETS, energy kept.
        for i in 10..5000 {
            let (s, e) = (i as f64 / 10.0, (i + 1) as f64 / 10.0);
            t.add(1, s, e, 1.0);
        }
        assert!(t.len() <= MAX_BUCKETS, "{}", t.len());
        assert!(t.bucket_s() > 0.1);
        let package_j: f64 = t.power(1).iter().sum::<f64>() * t.bucket_s();
        assert!((package_j - 5000.0).abs() < 1e-6, "{package_j}");
        // The whole (20 J over the first second) is the total when measured.
        assert!((t.total_j() - 20.0).abs() < 1e-9, "{}", t.total_j());
    }

    #[test]
    fn an_svg_and_a_page() {
        let mut t = Timeline::new(
            vec![series("cpu (estimated)", DomainKind::Estimate, Role::Part)],
            0.1,
        );
        for i in 0..20 {
            t.add(
                0,
                i as f64 / 10.0,
                (i + 1) as f64 / 10.0,
                0.5 + (i % 5) as f64 * 0.1,
            );
            t.command_at(i as f64 / 10.0, (i + 1) as f64 / 10.0, i as f64 * 0.3);
        }
        t.baseline_w = Some(3.0);
        let mut other = t.clone();
        other.add(0, 0.0, 2.0, 4.0);
        let info = PlotInfo {
            title: "Power of 'make <x>'".into(),
            summary: "10 J · 0.1 EUR · 1 g CO2e".into(),
            notes: vec![],
        };
        let svg = render(&[t.clone(), other], &info).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("width=\"1000\""),
            "{}",
            &svg[..200]
        );
        assert!(svg.contains("make &lt;x&gt;"), "title escaped");
        assert!(svg.contains("spread of 2 runs") && svg.contains("baseline (idle) 3.00 W"));
        let page = html_page(&svg, "a <b>");
        assert!(page.starts_with("<!DOCTYPE html>") && page.contains("<title>a &lt;b&gt;</title>"));
        assert!(page.contains("<svg"));
    }
}
