//! CO2e through the built binary (issue 12): the intensity from flags, variables and the
//! default, the figures in the table and the JSON, PUE, and the errors. Against an empty
//! hardware root, so the numbers are the estimate's, and say so.

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

fn run_json(args: &[&str], env: &[(&str, &str)]) -> (serde_json::Value, String) {
    let mut c = bin();
    c.args(["--json", "-"]).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    (common::json(&o), stderr(&o))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12)
}

#[test]
fn emissions_are_the_energy_times_the_intensity_with_its_source_and_year() {
    // Default: the world average of the embedded table, labelled as such.
    let (j, e) = run_json(
        &[
            "--",
            "sh",
            "-c",
            "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done",
        ],
        &[],
    );
    let em = &j["emissions"];
    assert_eq!(em["basis"], "world_average", "{em}");
    assert_eq!(em["year"], 2023);
    assert!(
        em["source"].as_str().unwrap().contains("Our World in Data"),
        "{em}"
    );
    assert_eq!(em["estimated"], true);
    assert!(em["pue"].is_null() && em["facility_kwh"].is_null(), "{em}");
    let intensity = em["intensity_g_per_kwh"].as_f64().unwrap();
    assert!((400.0..560.0).contains(&intensity), "{intensity}");
    let kwh = j["total"]["kwh"].as_f64().unwrap();
    assert!(kwh > 0.0);
    assert!(
        close(em["g_co2e"].as_f64().unwrap(), kwh * intensity),
        "{em} {kwh}"
    );
    let cmd_j = j["attribution"]["command_total_j"].as_f64().unwrap();
    assert!(
        close(
            em["command_g_co2e"].as_f64().unwrap(),
            cmd_j / 3.6e6 * intensity
        ),
        "{em}"
    );
    assert_eq!(
        j["schema_version"], 1,
        "an addition keeps the schema version"
    );
    // The table: a CO2e line with the intensity, its year and source, "(estimated)",
    // and the command's CO2e in the attribution; the key column did not move.
    let line = e
        .lines()
        .find(|l| l.trim_start().starts_with("CO2e"))
        .unwrap_or_else(|| panic!("{e}"));
    assert!(line.contains(" g (estimated) at 4"), "{line}");
    assert!(
        line.contains(" g/kWh, world average 2023 (Ember/Our World in Data"),
        "{line}"
    );
    assert!(line.starts_with("  CO2e               "), "{line}");
    assert!(e.contains("  command CO2e "), "{e}");

    // A country, from the variable; the flag wins over it.
    let (j, e) = run_json(&["--", "true"], &[("JOULERUN_REGION", "fr")]);
    assert_eq!(
        (
            j["emissions"]["region"].as_str(),
            j["emissions"]["basis"].as_str()
        ),
        (Some("FR"), Some("region"))
    );
    assert!(j["emissions"]["intensity_g_per_kwh"].as_f64().unwrap() < 150.0);
    assert!(
        e.contains("FR (France) 2023 (Ember/Our World in Data via codecarbon"),
        "{e}"
    );
    let (j, _) = run_json(
        &["--region", "PL", "--", "true"],
        &[("JOULERUN_REGION", "FR")],
    );
    assert_eq!(j["emissions"]["region"], "PL");
    assert!(j["emissions"]["intensity_g_per_kwh"].as_f64().unwrap() > 500.0);
    // A number wins over a region; PUE scales the facility's figures.
    let (j, e) = run_json(
        &["--carbon-intensity", "200", "--pue", "1.5", "--", "true"],
        &[("JOULERUN_REGION", "FR")],
    );
    let em = &j["emissions"];
    assert_eq!(
        (em["basis"].as_str(), em["intensity_g_per_kwh"].as_f64()),
        (Some("given"), Some(200.0))
    );
    assert!(em["year"].is_null() && em["region"].is_null(), "{em}");
    let kwh = j["total"]["kwh"].as_f64().unwrap();
    assert!(
        close(em["facility_kwh"].as_f64().unwrap(), kwh * 1.5),
        "{em}"
    );
    assert!(
        close(em["facility_g_co2e"].as_f64().unwrap(), kwh * 200.0 * 1.5),
        "{em}"
    );
    assert!(
        e.contains("at 200 g/kWh, given by --carbon-intensity"),
        "{e}"
    );
    assert!(
        e.contains("  facility           ") && e.contains("CO2e (estimated) at PUE 1.50"),
        "{e}"
    );
    // -a: the machine's CO2e, no command's.
    let (j, _) = run_json(
        &["-a", "--", "true"],
        &[("JOULERUN_CARBON_INTENSITY", "300")],
    );
    assert_eq!(j["emissions"]["source"], "JOULERUN_CARBON_INTENSITY");
    assert!(j["emissions"]["command_g_co2e"].is_null());
}

#[test]
fn bad_carbon_settings_stop_joulerun_before_the_command_runs() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let touch = format!("touch '{}'", marker.display());
    for (args, env, needle) in [
        (
            vec!["--region", "Germ"],
            None,
            "unknown region 'Germ' from --region",
        ),
        (
            vec![],
            Some(("JOULERUN_REGION", "UK")),
            "close matches: GB (United Kingdom)",
        ),
        (
            vec!["--carbon-intensity", "3000"],
            None,
            "it must be between 0 and 2000",
        ),
        (
            vec![],
            Some(("JOULERUN_CARBON_INTENSITY", "lots")),
            "from JOULERUN_CARBON_INTENSITY",
        ),
        (vec!["--pue", "0.5"], None, "invalid PUE '0.5' from --pue"),
        (
            vec!["--region", "DE", "--carbon-intensity", "1"],
            None,
            "cannot be used with",
        ),
    ] {
        let mut c = bin();
        c.args(&args).args(["--", "sh", "-c", &touch]);
        if let Some((k, v)) = env {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
        assert!(!marker.exists(), "{args:?}: the command ran");
    }
    // --basepower refuses them rather than ignoring them.
    let o = bin()
        .args(["--basepower", "--region", "DE"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--region cannot be used with --basepower"),
        "{}",
        stderr(&o)
    );
}
