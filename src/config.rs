//! Settings resolved from flags, environment and defaults into plain values.
//! Flags win over environment variables (clap reads both), which win over defaults.

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

pub fn parse_price(price: Option<&str>, currency: Option<&str>) -> Result<Price> {
    let per_kwh = match price {
        None => DEFAULT_PRICE_PER_KWH,
        Some(s) => {
            let v: f64 = s.trim().parse().map_err(|_| {
                Error::usage(format!(
                    "invalid price '{s}': give a number per kWh, e.g. --price 0.25 (or JOULERUN_PRICE=0.25)"
                ))
            })?;
            if !v.is_finite() || v < 0.0 {
                return Err(Error::usage(format!(
                    "invalid price '{s}': it must be a finite number of at least 0"
                )));
            }
            v
        }
    };
    let currency = match currency {
        None => DEFAULT_CURRENCY.to_string(),
        Some(c) => {
            let c = c.trim();
            if c.is_empty() || c.len() > 16 || c.chars().any(|ch| ch.is_control()) {
                return Err(Error::usage(format!(
                    "invalid currency '{c}': give a short code or symbol, e.g. --currency USD"
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
                    "unknown domain '{item}' in -e/--domains: use package, core, uncore, dram or psys (comma separated)"
                )));
            }
        }
    }
    Ok(out)
}

pub fn parse_cpu_watts(s: Option<&str>) -> Result<CpuWatts> {
    match s {
        None => Ok(CpuWatts::default()),
        Some(s) => CpuWatts::parse(s)
            .map_err(|e| Error::usage(format!("invalid --cpu-watts (or JOULERUN_CPU_WATTS): {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn price_defaults_and_errors() {
        assert_eq!(parse_price(None, None).unwrap(), Price::default());
        let p = parse_price(Some("0.12"), Some("USD")).unwrap();
        assert_eq!((p.per_kwh, p.currency.as_str()), (0.12, "USD"));
        assert!(parse_price(Some("cheap"), None).is_err());
        assert!(parse_price(Some("-1"), None).is_err());
        assert!(parse_price(Some("inf"), None).is_err());
        assert!(parse_price(None, Some("")).is_err());
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
