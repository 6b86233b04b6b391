//! The config's units: durations (`"90s"`, `"5m"`, `"1h"`, `"2d"`) and sizes (bytes, `"512KB"`,
//! `"10MiB"`).

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// What a size key expects, in every message about one.
const SIZE_EXPECTED: &str =
    "bytes as a whole number, or a size such as \"512KB\", \"1MB\", \"10MiB\"";

/// A size as written in the TOML: a whole number of bytes or a string with a unit. Read with
/// [`parse_size`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawSize {
    /// A bare integer: bytes.
    Bytes(u64),
    /// Text such as `"512KB"`.
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;

        impl Visitor<'_> for SizeVisitor {
            type Value = RawSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(SIZE_EXPECTED)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawSize, E> {
                u64::try_from(v).map(RawSize::Bytes).map_err(|_| {
                    E::custom(format!(
                        "must not be negative: expected {SIZE_EXPECTED}, got {v}"
                    ))
                })
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(v.to_owned()))
            }
        }

        deserializer.deserialize_any(SizeVisitor)
    }
}

/// Parses `"90s"`, `"5m"`, `"1h"`, `"2d"` (and combinations such as `"1h 30m"`); never zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|_| {
            format!("must be a duration such as \"90s\", \"5m\", \"1h\" or \"2d\", got {text:?}")
        })
        .and_then(|d| {
            if d.is_zero() {
                Err(format!("must be longer than zero, got {text:?}"))
            } else {
                Ok(d)
            }
        })
}

/// What a moment key expects, in every message about one.
const MOMENT_EXPECTED: &str =
    "an RFC 3339 date-time with its UTC offset, such as \"2027-01-01T00:00:00Z\"";

/// Unix seconds from an RFC 3339 date-time, written as a string or as a TOML date-time. The
/// offset is required: a moment every replica reads alike, whatever its time zone.
pub fn parse_moment(value: &toml::Value) -> Result<u64, String> {
    let datetime = match value {
        toml::Value::Datetime(datetime) => *datetime,
        toml::Value::String(text) => text
            .parse::<toml::value::Datetime>()
            .map_err(|_| format!("must be {MOMENT_EXPECTED}, got {text:?}"))?,
        other => return Err(format!("must be {MOMENT_EXPECTED}, got {other}")),
    };
    let (Some(date), Some(time), Some(offset)) = (datetime.date, datetime.time, datetime.offset)
    else {
        return Err(format!(
            "must be {MOMENT_EXPECTED}: {datetime} lacks a date, a time or an offset"
        ));
    };
    let offset_minutes = match offset {
        toml::value::Offset::Z => 0,
        toml::value::Offset::Custom { minutes } => i64::from(minutes),
    };
    let days = days_from_civil(
        i64::from(date.year),
        i64::from(date.month),
        i64::from(date.day),
    );
    let seconds = days * 86_400
        + i64::from(time.hour) * 3600
        + i64::from(time.minute) * 60
        + i64::from(time.second.unwrap_or(0))
        - offset_minutes * 60;
    u64::try_from(seconds).map_err(|_| format!("must be after 1970, got {datetime}"))
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`); also SigV4's `X-Amz-Date`.
pub(crate) fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Bytes from a size: `KB`/`MB` are powers of 1000, `KiB`/`MiB` powers of 1024.
pub fn parse_size(raw: &RawSize) -> Result<u64, String> {
    let text = match raw {
        RawSize::Bytes(n) => return Ok(*n),
        RawSize::Text(text) => text,
    };
    let bad = || format!("must be {SIZE_EXPECTED}, got {text:?}");
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    let number: u64 = digits.parse().map_err(|_| bad())?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000_u64.pow(2),
        "gb" => 1000_u64.pow(3),
        "tb" => 1000_u64.pow(4),
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("is too large, got {text:?}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn moments_are_read_with_their_offset_and_refused_without_one() {
        let text = |t: &str| super::parse_moment(&toml::Value::String(t.into()));
        assert_eq!(text("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(text("2027-01-01T00:00:00Z"), Ok(1_798_761_600));
        assert_eq!(text("2024-02-29T12:30:15Z"), Ok(1_709_209_815));
        assert_eq!(text("2027-01-01T01:00:00+01:00"), Ok(1_798_761_600));
        assert_eq!(text("2026-12-31T19:00:00-05:00"), Ok(1_798_761_600));
        let toml: toml::Table = toml::from_str("at = 2027-01-01T00:00:00Z").expect("toml");
        assert_eq!(super::parse_moment(&toml["at"]), Ok(1_798_761_600));
        for bad in [
            "2027-01-01T00:00:00",
            "2027-01-01",
            "tomorrow",
            "1969-12-31T23:59:59Z",
        ] {
            let error = text(bad).expect_err(bad);
            assert!(error.starts_with("must be"), "{bad}: {error}");
        }
        assert!(super::parse_moment(&toml::Value::Integer(5)).is_err());
    }

    use super::*;

    #[test]
    fn sizes_follow_the_usual_convention() {
        let size = |s: &str| parse_size(&RawSize::Text(s.into()));
        assert_eq!(size("512KB"), Ok(512_000));
        assert_eq!(size("1MB"), Ok(1_000_000));
        assert_eq!(size("10MiB"), Ok(10 * 1024 * 1024));
        assert_eq!(size("7"), Ok(7));
        assert_eq!(parse_size(&RawSize::Bytes(42)), Ok(42));
        assert!(size("1XB").is_err());
        assert!(size("MB").is_err());
        assert!(size("99999999999TB").is_err());
    }

    #[test]
    fn a_negative_or_mistyped_size_says_what_is_expected() {
        #[derive(Debug, Deserialize)]
        struct One {
            #[allow(dead_code, reason = "only the error is looked at")]
            max_size: RawSize,
        }
        for text in ["max_size = -5", "max_size = true", "max_size = 1.5"] {
            let error = toml::from_str::<One>(text).expect_err(text).to_string();
            assert!(error.contains("max_size"), "{error}");
            assert!(error.contains("bytes as a whole number"), "{error}");
            assert!(!error.contains("RawSize"), "{error}");
        }
    }

    #[test]
    fn durations_are_humane_and_never_zero() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
