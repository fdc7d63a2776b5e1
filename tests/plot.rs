//! `--plot` and `joulerun plot` through the built binary (issue 12), checked as a person
//! would look: the SVG rendered to PNG by `rsvg-convert` (Debian `librsvg2-bin`), and the
//! picture's size and content asserted on. Without rsvg-convert those tests are ignored
//! with the reason (build.rs; `.ci/run` installs it).

use std::path::Path;
use std::process::{Command, Output};

mod common;

fn bin() -> Command {
    let root = std::env::temp_dir().join("joulerun-empty-root");
    std::fs::create_dir_all(&root).unwrap();
    common::joulerun(&root, &std::env::temp_dir().join("joulerun-no-state"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The SVG at `svg` rendered to RGBA pixels: (width, height, pixels).
fn render(svg: &Path) -> (u32, u32, Vec<[u8; 4]>) {
    let png = svg.with_extension("png");
    let o = Command::new("rsvg-convert")
        .args(["-b", "white", "-o"])
        .arg(&png)
        .arg(svg)
        .output()
        .expect("rsvg-convert runs");
    assert!(o.status.success(), "rsvg-convert: {}", stderr(&o));
    let mut d = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    d.set_transformations(png::Transformations::EXPAND | png::Transformations::ALPHA);
    let mut r = d.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    let info = r.next_frame(&mut buf).unwrap();
    let px = match info.color_type {
        png::ColorType::Rgba => buf[..info.buffer_size()]
            .chunks(4)
            .map(|c| [c[0], c[1], c[2], c[3]])
            .collect(),
        png::ColorType::GrayscaleAlpha => buf[..info.buffer_size()]
            .chunks(2)
            .map(|c| [c[0], c[0], c[0], c[1]])
            .collect(),
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    (info.width, info.height, px)
}

/// Share of pixels for which `f` holds.
fn share(px: &[[u8; 4]], f: impl Fn(&[u8; 4]) -> bool) -> f64 {
    px.iter().filter(|p| f(p)).count() as f64 / px.len() as f64
}

/// The estimate's orange, as drawn (85% over white), give or take anti-aliasing.
fn orange(p: &[u8; 4]) -> bool {
    p[0] > 230 && (120..175).contains(&p[1]) && p[2] < 90
}

#[test]
#[cfg_attr(
    not(probe_rsvg_convert),
    ignore = "needs rsvg-convert: apt-get install librsvg2-bin (.ci/run does)"
)]
fn the_plot_of_a_run_renders_to_a_picture_of_its_power() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("run.svg");
    let csv = dir.path().join("run.csv");
    let o = bin()
        .args([
            "-i",
            "20",
            "--plot",
            svg.to_str().unwrap(),
            "--csv",
            csv.to_str().unwrap(),
        ])
        .args([
            "--region",
            "FR",
            "--",
            "sh",
            "-c",
            "i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done; sleep 0.2",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = std::fs::read_to_string(&svg).unwrap();
    // The summary in the title, the estimate and the command's share in the legend.
    for needle in [
        "Power of",
        "mWh",
        "EUR",
        "CO2e (estimated) at 56.04 g/kWh",
        "cpu (estimated)",
        "the command",
    ] {
        assert!(text.contains(needle), "{needle} not in the SVG");
    }
    let (w, h, px) = render(&svg);
    assert_eq!((w, h), (1000, 560));
    // Not blank: a good part is drawn, and the stacked estimate is a visible area.
    let ink = share(&px, |p| p[0] < 245 || p[1] < 245 || p[2] < 245);
    assert!(
        ink > 0.08,
        "only {:.1}% of the picture is drawn",
        ink * 100.0
    );
    let area = share(&px, orange);
    assert!(
        area > 0.03,
        "the estimate's area covers {:.2}%",
        area * 100.0
    );

    // The same run from its saved timeline: `joulerun plot`.
    let again = dir.path().join("again.svg");
    let o = bin()
        .args(["plot", csv.to_str().unwrap(), "-o", again.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = std::fs::read_to_string(&again).unwrap();
    assert!(
        text.contains("run.csv") && text.contains("not in it"),
        "title and note"
    );
    let (w, h, px) = render(&again);
    assert_eq!((w, h), (1000, 560));
    assert!(share(&px, orange) > 0.03);
}

#[test]
fn a_saved_timeline_becomes_a_page_and_other_schemas_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("run.csv");
    let o = bin()
        .args([
            "-i",
            "20",
            "--csv",
            csv.to_str().unwrap(),
            "--",
            "sleep",
            "0.1",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let html = dir.path().join("run.html");
    let o = bin()
        .args(["plot", csv.to_str().unwrap(), "-o", html.to_str().unwrap()])
        .env("JOULERUN_REGION", "DE")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.starts_with("<!DOCTYPE html>") && page.contains("<svg") && page.ends_with("</html>\n")
    );
    assert!(page.contains("at 380.95 g/kWh"), "the environment's region");
    assert!(
        !page.contains("src=") && !page.contains("href=\"http"),
        "self-contained"
    );

    let old = dir.path().join("old.csv");
    std::fs::write(
        &old,
        "schema_version,elapsed_s,domain,kind,socket,source,estimated,energy_delta_j,power_w,cumulative_j\n1,0.1,package-0,package,0,powercap,false,1,10,1\n",
    )
    .unwrap();
    let out = dir.path().join("old.svg");
    let o = bin()
        .args(["plot", old.to_str().unwrap(), "-o", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("schema 1; this joulerun plots schema 2"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
    let o = bin()
        .args(["plot", "/no/such.csv", "-o", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // The plot may not overwrite the CSV it reads.
    let o = bin()
        .args(["plot", csv.to_str().unwrap(), "-o", csv.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        std::fs::read_to_string(&csv)
            .unwrap()
            .starts_with("schema_version,")
    );
}
