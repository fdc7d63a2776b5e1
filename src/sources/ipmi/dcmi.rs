//! DCMI "Get Power Reading": the request's bytes and the reply's decoding, shared by every
//! path to a BMC (in-band ioctls, the tools' output, the LAN through `ipmitool`).
//!
//! DCMI 1.5, section 6.6.1 (the bytes are also in `../shared/field-notes.md`, section 5):
//! NetFn 0x2C (the DCMI group extension), command 0x02, request `DC 01 00 00` (the group
//! extension id, mode 1 "system power statistics", two reserved bytes). The reply:
//!
//! | bytes | what |
//! |---|---|
//! | 0 | completion code (0 = success) |
//! | 1 | group extension id, 0xDC |
//! | 2..4 | current power, W, u16 little endian |
//! | 4..6, 6..8, 8..10 | minimum, maximum and average power over the statistics period, W |
//! | 10..14 | the BMC's timestamp of the reading, seconds since 1970 (its own clock), u32 LE |
//! | 14..18 | the statistics reporting period, ms, u32 LE |
//! | 18 | power reading state: bit 6 = power measurement active |
//!
//! Minimum, maximum and average are statistics over the *reporting period*, which on many
//! BMCs is the time since the statistics were last reset: hours or weeks (freeipmi prints
//! periods like 1473439000 ms, 17 days). They cannot describe the seconds of one command,
//! so joulerun integrates the current reading ([`PowerReading::watts`]); the others are
//! decoded for tests, listings and diagnostics.

use std::fmt;

/// The DCMI group extension's network function (requests; replies are 0x2D).
pub const NETFN_DCGRP: u8 = 0x2C;
/// Get Power Reading.
pub const CMD_GET_POWER_READING: u8 = 0x02;
/// The DCMI group extension id, first byte of every DCMI request and reply body.
pub const GROUP_EXTENSION_ID: u8 = 0xDC;
/// Mode 1: system power statistics.
pub const MODE_SYSTEM_POWER_STATISTICS: u8 = 0x01;
/// A complete reply, completion code included.
pub const REPLY_LEN: usize = 19;
/// Bit 6 of the state byte: power measurement active.
pub const STATE_MEASUREMENT_ACTIVE: u8 = 0x40;
/// The most a chassis can plausibly draw (the chassis domains' ceiling), W: a current
/// reading above it is out of range, not a measurement (0xFFFF, 65535 W, is what some
/// BMCs answer when they have no value).
pub const MAX_PLAUSIBLE_W: f64 = 20_000.0;

/// The request body of Get Power Reading, mode 1.
pub fn power_reading_request() -> [u8; 4] {
    [GROUP_EXTENSION_ID, MODE_SYSTEM_POWER_STATISTICS, 0x00, 0x00]
}

/// One decoded power reading, from the bytes or from a tool's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PowerReading {
    /// The current (latest) power, W.
    pub current_w: u32,
    pub min_w: u32,
    pub max_w: u32,
    /// The average over the reporting period, W.
    pub average_w: u32,
    /// The BMC's timestamp (seconds since 1970 on its clock), when the bytes were read.
    pub timestamp: Option<u32>,
    /// The statistics reporting period, ms.
    pub period_ms: Option<u64>,
    /// Power measurement active (state bit 6).
    pub active: bool,
}

/// Why a reply is not a power reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DcmiError {
    /// A completion code other than 0.
    Completion(u8),
    /// Fewer bytes than a reply has.
    Short(usize),
    /// A successful reply that is not DCMI's (another group extension id).
    NotDcmi(u8),
}

impl fmt::Display for DcmiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DcmiError::Completion(cc) => write!(
                f,
                "the BMC answered completion code 0x{cc:02X} ({})",
                completion_text(*cc)
            ),
            DcmiError::Short(n) => write!(
                f,
                "the BMC's reply has {n} bytes, a DCMI power reading has {REPLY_LEN}"
            ),
            DcmiError::NotDcmi(b) => write!(
                f,
                "the BMC's reply is not DCMI's (group extension 0x{b:02X}, not 0xDC)"
            ),
        }
    }
}

impl std::error::Error for DcmiError {}

fn u16_at(b: &[u8], i: usize) -> u32 {
    u32::from(u16::from_le_bytes([b[i], b[i + 1]]))
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Decode a Get Power Reading reply (completion code first). Bytes beyond the 19 of the
/// reply are ignored (the OEM extensions some BMCs append).
pub fn decode_power_reading(reply: &[u8]) -> Result<PowerReading, DcmiError> {
    match reply.first() {
        None => return Err(DcmiError::Short(0)),
        Some(&cc) if cc != 0 => return Err(DcmiError::Completion(cc)),
        Some(_) => {}
    }
    if reply.len() < REPLY_LEN {
        return Err(DcmiError::Short(reply.len()));
    }
    if reply[1] != GROUP_EXTENSION_ID {
        return Err(DcmiError::NotDcmi(reply[1]));
    }
    Ok(PowerReading {
        current_w: u16_at(reply, 2),
        min_w: u16_at(reply, 4),
        max_w: u16_at(reply, 6),
        average_w: u16_at(reply, 8),
        timestamp: Some(u32_at(reply, 10)),
        period_ms: Some(u64::from(u32_at(reply, 14))),
        active: reply[18] & STATE_MEASUREMENT_ACTIVE != 0,
    })
}

/// Encode a reply (for tests and test doubles): the exact inverse of
/// [`decode_power_reading`] for values that fit their fields.
pub fn encode_power_reading(r: &PowerReading) -> [u8; REPLY_LEN] {
    let w = |v: u32| (v.min(u32::from(u16::MAX)) as u16).to_le_bytes();
    let mut b = [0u8; REPLY_LEN];
    b[1] = GROUP_EXTENSION_ID;
    b[2..4].copy_from_slice(&w(r.current_w));
    b[4..6].copy_from_slice(&w(r.min_w));
    b[6..8].copy_from_slice(&w(r.max_w));
    b[8..10].copy_from_slice(&w(r.average_w));
    b[10..14].copy_from_slice(&r.timestamp.unwrap_or(0).to_le_bytes());
    let period = r.period_ms.unwrap_or(0).min(u64::from(u32::MAX)) as u32;
    b[14..18].copy_from_slice(&period.to_le_bytes());
    b[18] = if r.active {
        STATE_MEASUREMENT_ACTIVE
    } else {
        0
    };
    b
}

/// Why a decoded reading is not a power to integrate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotAPower {
    /// The BMC says its power measurement is not active.
    Inactive,
    /// 0 W from a machine that is running (joulerun runs on it): the BMC has no value.
    Zero,
    /// Above any chassis' draw.
    OutOfRange(u32),
}

impl fmt::Display for NotAPower {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotAPower::Inactive => f.write_str(
                "the BMC says its power measurement is not active (DCMI power reading state): no reading",
            ),
            NotAPower::Zero => f.write_str(
                "the BMC reported 0 W while the machine is running: it has no power value, not a measurement of 0 W",
            ),
            NotAPower::OutOfRange(w) => write!(
                f,
                "the BMC reported {w} W, out of range (no chassis draws more than {} kW): not a measurement",
                MAX_PLAUSIBLE_W / 1000.0
            ),
        }
    }
}

impl PowerReading {
    /// The power to integrate, W: the current reading, when it is one. "Measurement
    /// inactive", 0 W (the machine is plainly on: joulerun is running on it) and values
    /// above [`MAX_PLAUSIBLE_W`] are errors for that sample, never 0 W.
    pub fn watts(&self) -> Result<f64, NotAPower> {
        if !self.active {
            Err(NotAPower::Inactive)
        } else if self.current_w == 0 {
            Err(NotAPower::Zero)
        } else if f64::from(self.current_w) > MAX_PLAUSIBLE_W {
            Err(NotAPower::OutOfRange(self.current_w))
        } else {
            Ok(f64::from(self.current_w))
        }
    }
}

/// What a completion code means for reading power.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CcClass {
    /// Try again: the BMC is busy, timed out, or is starting.
    Transient,
    /// The BMC has no DCMI power reading (the command, the mode or the group extension
    /// is not supported, or it is switched off).
    Unsupported,
    /// The user or channel lacks the privilege.
    Privilege,
    /// Anything else.
    Other,
}

/// The class of a (non-zero) completion code (IPMI 2.0 table 5-2; DCMI 1.5 adds 0x80..).
pub fn classify_completion(cc: u8) -> CcClass {
    match cc {
        0xC0 | 0xC3 | 0xCE | 0xD2 | 0xFF => CcClass::Transient,
        0x80 | 0xC1 | 0xC2 | 0xC9 | 0xCB | 0xCC | 0xD5 | 0xD6 => CcClass::Unsupported,
        0xD4 => CcClass::Privilege,
        _ => CcClass::Other,
    }
}

/// The name of a completion code.
pub fn completion_text(cc: u8) -> &'static str {
    match cc {
        0x00 => "success",
        0x80 => "DCMI: parameter not supported",
        0x81..=0x8F => "DCMI command-specific error",
        0xC0 => "node busy",
        0xC1 => "invalid command",
        0xC2 => "command invalid for this LUN",
        0xC3 => "timeout while processing the command",
        0xC4 => "out of space",
        0xC5 => "reservation cancelled or invalid",
        0xC6 => "request data truncated",
        0xC7 => "request data length invalid",
        0xC8 => "request data field length limit exceeded",
        0xC9 => "parameter out of range",
        0xCA => "cannot return the number of requested bytes",
        0xCB => "requested sensor, data or record not present",
        0xCC => "invalid data field in request",
        0xCD => "command illegal for this sensor or record type",
        0xCE => "command response could not be provided",
        0xCF => "duplicated request",
        0xD0 => "SDR repository in update mode",
        0xD1 => "device in firmware update mode",
        0xD2 => "BMC initialization in progress",
        0xD3 => "destination unavailable",
        0xD4 => "insufficient privilege level",
        0xD5 => "command not supported in present state",
        0xD6 => "command sub-function disabled or unavailable",
        0xFF => "unspecified error",
        _ => "unknown completion code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply laid out as DCMI specifies: 220 W now, 2 W min, 704 W max, 226 W average,
    /// timestamp 0x56B32D3D (2016-02-04 10:51:41 UTC), period 5000 ms, active.
    const NORMAL: [u8; 19] = [
        0x00, 0xDC, 0xDC, 0x00, 0x02, 0x00, 0xC0, 0x02, 0xE2, 0x00, 0x3D, 0x2D, 0xB3, 0x56, 0x88,
        0x13, 0x00, 0x00, 0x40,
    ];

    #[test]
    fn the_request_is_mode_1_of_the_dcmi_group() {
        assert_eq!(power_reading_request(), [0xDC, 0x01, 0x00, 0x00]);
        assert_eq!((NETFN_DCGRP, CMD_GET_POWER_READING), (0x2C, 0x02));
    }

    #[test]
    fn a_normal_reply_decodes_every_field() {
        let r = decode_power_reading(&NORMAL).unwrap();
        assert_eq!(
            r,
            PowerReading {
                current_w: 220,
                min_w: 2,
                max_w: 704,
                average_w: 226,
                timestamp: Some(0x56B3_2D3D),
                period_ms: Some(5000),
                active: true,
            }
        );
        assert_eq!(r.watts(), Ok(220.0));
        assert_eq!(encode_power_reading(&r), NORMAL);
        // Bytes after the reply (OEM extensions) are ignored; other state bits too.
        let mut longer = NORMAL.to_vec();
        longer[18] |= 0x81;
        longer.extend_from_slice(&[1, 2, 3]);
        assert_eq!(decode_power_reading(&longer).unwrap().watts(), Ok(220.0));
    }

    #[test]
    fn a_non_zero_completion_code_is_an_error_named_and_classified() {
        let e = decode_power_reading(&[0xC1]).unwrap_err();
        assert_eq!(e, DcmiError::Completion(0xC1));
        assert_eq!(
            e.to_string(),
            "the BMC answered completion code 0xC1 (invalid command)"
        );
        // Even with a full body behind it.
        let mut b = NORMAL;
        b[0] = 0xD4;
        assert_eq!(decode_power_reading(&b), Err(DcmiError::Completion(0xD4)));
        assert_eq!(classify_completion(0xD4), CcClass::Privilege);
        assert_eq!(classify_completion(0xC1), CcClass::Unsupported);
        assert_eq!(classify_completion(0x80), CcClass::Unsupported);
        assert_eq!(classify_completion(0xC0), CcClass::Transient);
        assert_eq!(classify_completion(0xC3), CcClass::Transient);
        assert_eq!(classify_completion(0xA7), CcClass::Other);
    }

    #[test]
    fn measurement_inactive_is_not_a_power() {
        let mut b = NORMAL;
        b[18] = 0x00;
        let r = decode_power_reading(&b).unwrap();
        assert!(!r.active);
        assert_eq!(r.watts(), Err(NotAPower::Inactive));
        assert!(r.watts().unwrap_err().to_string().contains("not active"));
    }

    #[test]
    fn a_short_reply_is_an_error() {
        assert_eq!(decode_power_reading(&[]), Err(DcmiError::Short(0)));
        assert_eq!(
            decode_power_reading(&NORMAL[..18]),
            Err(DcmiError::Short(18))
        );
        assert_eq!(decode_power_reading(&NORMAL[..2]), Err(DcmiError::Short(2)));
        assert!(
            DcmiError::Short(18)
                .to_string()
                .contains("18 bytes, a DCMI power reading has 19")
        );
        // A success that is not DCMI's.
        let mut b = NORMAL;
        b[1] = 0x00;
        assert_eq!(decode_power_reading(&b), Err(DcmiError::NotDcmi(0x00)));
    }

    #[test]
    fn out_of_range_values_are_not_powers() {
        // 0xFFFF (65535 W): above any chassis.
        let mut b = NORMAL;
        b[2] = 0xFF;
        b[3] = 0xFF;
        let r = decode_power_reading(&b).unwrap();
        assert_eq!(r.current_w, 65535);
        assert_eq!(r.watts(), Err(NotAPower::OutOfRange(65535)));
        // 20 kW is still plausible, 20001 W is not.
        let at = |w: u16| {
            let mut b = NORMAL;
            b[2..4].copy_from_slice(&w.to_le_bytes());
            decode_power_reading(&b).unwrap().watts()
        };
        assert_eq!(at(20_000), Ok(20_000.0));
        assert_eq!(at(20_001), Err(NotAPower::OutOfRange(20_001)));
        // 0 W while the machine runs: no value, not 0 W.
        assert_eq!(at(0), Err(NotAPower::Zero));
        // The largest timestamp and period decode without overflow.
        let mut b = NORMAL;
        b[10..18].copy_from_slice(&[0xFF; 8]);
        let r = decode_power_reading(&b).unwrap();
        assert_eq!(
            (r.timestamp, r.period_ms),
            (Some(u32::MAX), Some(u64::from(u32::MAX)))
        );
    }
}
