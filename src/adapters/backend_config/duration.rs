//! Go duration syntax (`time.ParseDuration`): `300ms`, `30s`, `1m30s`, `1.5h`, `-2s`; units
//! `ns`, `us`, `µs`, `μs`, `ms`, `s`, `m`, `h` (no days); a bare `0` is allowed, any other bare
//! number is an error. Also the inverse, for printing the effective config.

use std::time::Duration;

/// A parsed Go duration: a magnitude and a sign (Go durations may be negative).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GoDuration {
    /// True for a leading `-` on a non-zero value.
    pub negative: bool,
    /// The absolute value.
    pub magnitude: Duration,
}

impl GoDuration {
    /// True when the value is zero or negative.
    pub(crate) fn is_non_positive(self) -> bool {
        self.negative || self.magnitude.is_zero()
    }
}

/// Parses Go duration syntax. The error is a short reason, without the input.
pub(crate) fn parse_go_duration(raw: &str) -> Result<GoDuration, &'static str> {
    let (negative, mut rest) = match raw.as_bytes().first() {
        Some(b'-') => (true, &raw[1..]),
        Some(b'+') => (false, &raw[1..]),
        _ => (false, raw),
    };
    if rest == "0" {
        return Ok(GoDuration {
            negative: false,
            magnitude: Duration::ZERO,
        });
    }
    if rest.is_empty() {
        return Err("empty duration");
    }
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        rest = &rest[number_len..];
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
            return Err("expected a number before each unit");
        }
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit_nanos: u128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            "" => return Err("missing unit"),
            _ => return Err("unknown unit"),
        };
        rest = &rest[unit_len..];
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| "number out of range")?
        };
        let mut part = whole.checked_mul(unit_nanos).ok_or("number out of range")?;
        let mut scale = unit_nanos;
        for digit in fraction.bytes() {
            scale /= 10;
            part += u128::from(digit - b'0') * scale;
        }
        total_nanos = total_nanos.checked_add(part).ok_or("number out of range")?;
    }
    // Go's limit is i64 nanoseconds (about 292 years).
    if total_nanos > i64::MAX as u128 {
        return Err("number out of range");
    }
    let magnitude = Duration::from_nanos(total_nanos as u64);
    Ok(GoDuration {
        negative: negative && !magnitude.is_zero(),
        magnitude,
    })
}

/// Formats a duration compactly in Go syntax (`0s`, `300ms`, `1m30s`, `2h`), so that
/// [`parse_go_duration`] reads it back exactly.
pub(crate) fn format_go_duration(duration: Duration) -> String {
    if duration.is_zero() {
        return "0s".to_owned();
    }
    let mut out = String::new();
    let total_secs = duration.as_secs();
    let (hours, minutes, seconds) = (total_secs / 3600, total_secs / 60 % 60, total_secs % 60);
    for (value, unit) in [(hours, "h"), (minutes, "m"), (seconds, "s")] {
        if value > 0 {
            out.push_str(&format!("{value}{unit}"));
        }
    }
    let nanos = duration.subsec_nanos();
    if nanos > 0 {
        if nanos.is_multiple_of(1_000_000) {
            out.push_str(&format!("{}ms", nanos / 1_000_000));
        } else {
            out.push_str(&format!("{nanos}ns"));
        }
    }
    out
}
