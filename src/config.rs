//! Settings resolved from flags, environment and defaults into plain values.
//! Flags win over environment variables (clap reads both), which win over defaults.

use std::fmt;

use crate::error::{Error, Result};
use crate::sources::DomainKind;
use crate::sources::estimate::CpuWatts;

/// Default electricity price per kWh: 0.30, about the EU household average of
/// 2024-2025 (Eurostat, nrg_pc_204), in EUR.
pub const DEFAULT_PRICE_PER_KWH: f64 = 0.30;
pub const DEFAULT_CURRENCY: &str = "EUR";

/// Default sampling interval, ms. See docs/sources.md: far below the shortest wrap time
/// of any RAPL counter (about 60 s), fine enough for per-tick attribution, and cheap.
pub const DEFAULT_INTERVAL_MS: u64 = 100;
/// Longest interval accepted: a RAPL counter with a 65 kJ range wraps in about two
/// minutes at 500 W; an interval of at most 10 s can never see two wraps.
pub const MAX_INTERVAL_MS: u64 = 10_000;

/// Where a setting's value came from, named the way the user wrote it: the flag
/// (`--price`) or the environment variable (`JOULERUN_PRICE`). Error messages name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Flag(&'static str),
    Env(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(s) | Origin::Env(s) => f.write_str(s),
        }
    }
}

/// A value given by a flag or, failing that, by its environment variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub value: String,
    pub origin: Origin,
}

impl Setting {
    pub fn flag(flag: &'static str, value: impl Into<String>) -> Setting {
        Setting {
            value: value.into(),
            origin: Origin::Flag(flag),
        }
    }
}

/// The value of `flag` if given, else of the environment variable `var` (looked up
/// through `env`; an empty variable counts as unset). A variable that is not valid
/// UTF-8 is an error naming it.
pub fn setting(
    flag_value: Option<&str>,
    flag: &'static str,
    var: &'static str,
    env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<Option<Setting>> {
    if let Some(v) = flag_value {
        return Ok(Some(Setting::flag(flag, v)));
    }
    match env(var) {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => match v.into_string() {
            Ok(value) => Ok(Some(Setting {
                value,
                origin: Origin::Env(var),
            })),
            Err(_) => Err(Error::usage(format!(
                "invalid {var}: it is not valid UTF-8; unset it or give {flag}"
            ))),
        },
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Price {
    pub per_kwh: f64,
    pub currency: String,
}

impl Default for Price {
    fn default() -> Self {
        Price {
            per_kwh: DEFAULT_PRICE_PER_KWH,
            currency: DEFAULT_CURRENCY.to_string(),
        }
    }
}

pub fn parse_price(price: Option<&Setting>, currency: Option<&Setting>) -> Result<Price> {
    let per_kwh = match price {
        None => DEFAULT_PRICE_PER_KWH,
        Some(Setting { value: s, origin }) => {
            let v: f64 = s.trim().parse().map_err(|_| {
                Error::usage(format!(
                    "invalid price '{s}' from {origin}: give a number per kWh, e.g. 0.25"
                ))
            })?;
            if !v.is_finite() || v < 0.0 {
                return Err(Error::usage(format!(
                    "invalid price '{s}' from {origin}: it must be a finite number of at least 0"
                )));
            }
            crate::text::no_negative_zero(v)
        }
    };
    let currency = match currency {
        None => DEFAULT_CURRENCY.to_string(),
        Some(Setting { value: c, origin }) => {
            let c = c.trim();
            if c.is_empty() || c.chars().count() > 16 || c.chars().any(|ch| ch.is_control()) {
                return Err(Error::usage(format!(
                    "invalid currency '{}' from {origin}: give a short code or symbol, e.g. USD",
                    crate::text::escape_line(c)
                )));
            }
            c.to_string()
        }
    };
    Ok(Price { per_kwh, currency })
}

pub fn parse_interval(ms: u64) -> Result<u64> {
    if ms == 0 {
        return Err(Error::usage(
            "invalid interval 0 ms: the minimum is 1 (e.g. -i 100)",
        ));
    }
    if ms > MAX_INTERVAL_MS {
        return Err(Error::usage(format!(
            "invalid interval {ms} ms: the maximum is {MAX_INTERVAL_MS} ms, beyond which a RAPL counter could wrap twice between two readings"
        )));
    }
    Ok(ms)
}

pub fn parse_domains(list: &[String]) -> Result<Vec<DomainKind>> {
    let mut out = Vec::new();
    for item in list {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        match DomainKind::parse(&item.to_ascii_lowercase()) {
            Some(k) if k != DomainKind::Estimate => {
                if !out.contains(&k) {
                    out.push(k)
                }
            }
            _ => {
                return Err(Error::usage(format!(
                    "unknown domain '{item}' in -e/--domains: use package, core, uncore, dram, psys, gpu, chassis, battery or meter (comma separated)"
                )));
            }
        }
    }
    Ok(out)
}

pub fn parse_cpu_watts(s: Option<&Setting>) -> Result<CpuWatts> {
    match s {
        None => Ok(CpuWatts::default()),
        Some(Setting { value, origin }) => {
            CpuWatts::parse(value).map_err(|e| Error::usage(format!("invalid {origin}: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn price_defaults_and_errors() {
        let p = |v: &str| Setting::flag("--price", v);
        let c = |v: &str| Setting::flag("--currency", v);
        assert_eq!(parse_price(None, None).unwrap(), Price::default());
        let got = parse_price(Some(&p("0.12")), Some(&c("USD"))).unwrap();
        assert_eq!((got.per_kwh, got.currency.as_str()), (0.12, "USD"));
        assert!(parse_price(Some(&p("cheap")), None).is_err());
        assert!(parse_price(Some(&p("-1")), None).is_err());
        assert!(parse_price(Some(&p("inf")), None).is_err());
        assert!(parse_price(None, Some(&c(""))).is_err());
        // -0 is 0, never printed as -0.
        assert!(
            parse_price(Some(&p("-0")), None)
                .unwrap()
                .per_kwh
                .is_sign_positive()
        );
        // Errors name where the value came from.
        let env = Setting {
            value: "x".into(),
            origin: Origin::Env("JOULERUN_PRICE"),
        };
        let e = parse_price(Some(&env), None).unwrap_err();
        assert!(
            e.message
                .starts_with("invalid price 'x' from JOULERUN_PRICE"),
            "{}",
            e.message
        );
    }

    #[test]
    fn settings_prefer_the_flag_and_name_their_origin() {
        let env = |k: &str| match k {
            "V" => Some(std::ffi::OsString::from("from-env")),
            "EMPTY" => Some(std::ffi::OsString::new()),
            _ => None,
        };
        let s = setting(Some("x"), "--v", "V", &env).unwrap().unwrap();
        assert_eq!(s.origin, Origin::Flag("--v"));
        let s = setting(None, "--v", "V", &env).unwrap().unwrap();
        assert_eq!((s.value.as_str(), s.origin), ("from-env", Origin::Env("V")));
        assert_eq!(setting(None, "--v", "EMPTY", &env).unwrap(), None);
        assert_eq!(setting(None, "--v", "NONE", &env).unwrap(), None);
    }

    #[test]
    fn interval_bounds() {
        assert!(parse_interval(0).is_err());
        assert_eq!(parse_interval(1).unwrap(), 1);
        assert!(parse_interval(10_001).is_err());
    }

    #[test]
    fn domains() {
        let d = parse_domains(&["package".into(), "DRAM".into(), "dram".into()]).unwrap();
        assert_eq!(d, vec![DomainKind::Package, DomainKind::Dram]);
        assert!(parse_domains(&["gpu0".into()]).is_err());
        assert!(parse_domains(&["estimate".into()]).is_err());
    }
}
