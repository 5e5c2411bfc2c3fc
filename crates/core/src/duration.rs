//! Durations in configuration files, read as Centrifugo v6 reads them (its
//! `configtypes.Duration`): a string in Go's `time.ParseDuration` form (`"25s"`, `"500ms"`,
//! `"1m30s"`, `"1.5h"`, `"250us"`, `"0"`), or a number of nanoseconds.
//!
//! Where wshub is stricter: a number from 1 to 999,999 (under a millisecond) and a string
//! without a unit other than `"0"` are refused with a message saying how to write it. Such a
//! value is nearly always seconds written the way Centrifugo v5 (or an earlier wshub) took
//! them; read as nanoseconds it would silently turn a timeout or a TTL into nothing.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Parses `"1h2m3s"`, `"500ms"`, `"1.5h"`, `"250us"`, `"10ns"`, `"0"` (Go's units).
pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("invalid duration {s:?}"));
        }
        let n: f64 = rest[..digits].parse().map_err(|_| format!("invalid duration {s:?}"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let secs = match unit {
            "ns" => n / 1e9,
            "us" | "µs" | "μs" => n / 1e6,
            "ms" => n / 1e3,
            "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            "" => {
                return Err(format!(
                    "duration {s:?} has no unit: write \"{s}s\" for seconds (Go's units: ns, us, ms, s, m, h)"
                ))
            }
            _ => return Err(format!("invalid duration unit {unit:?} in {s:?} (use ns, us, ms, s, m or h)")),
        };
        total = Duration::try_from_secs_f64(secs)
            .ok()
            .and_then(|d| total.checked_add(d))
            .filter(|t| *t <= crate::deadline::FARTHEST)
            .ok_or_else(|| too_long(s))?;
    }
    Ok(total)
}

/// Why: a deadline is `now + duration`, which panics past what an `Instant` holds; no
/// setting needs more than a century.
fn too_long(s: &str) -> String {
    format!("duration {s:?} is longer than a century")
}

/// Writes a duration the way [`parse`] reads it.
pub fn format(d: Duration) -> String {
    match (d.subsec_nanos(), d.subsec_micros() * 1000 == d.subsec_nanos()) {
        (0, _) => format!("{}s", d.as_secs()),
        (_, true) if d.subsec_millis() * 1_000_000 == d.subsec_nanos() => format!("{}ms", d.as_millis()),
        (_, true) => format!("{}us", d.as_micros()),
        _ => format!("{}ns", d.as_nanos()),
    }
}

/// Numbers below this many nanoseconds (a millisecond), but above zero, are refused: see
/// the module's documentation.
const SMALLEST_NUMBER_NS: f64 = 1e6;

/// serde adapter (serialize half).
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

/// serde adapter for `Duration` fields written as strings or numbers of nanoseconds.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        S(String),
        N(f64),
    }
    match Repr::deserialize(d)? {
        Repr::S(s) => parse(&s).map_err(serde::de::Error::custom),
        Repr::N(0.0) => Ok(Duration::ZERO),
        Repr::N(n) if n > 0.0 && n < SMALLEST_NUMBER_NS => Err(serde::de::Error::custom(format!(
            "{n} is read as nanoseconds, as Centrifugo v6 reads a number; write a string such as \"{n}s\" (or \"{n}ms\")"
        ))),
        Repr::N(n) if n > 0.0 && n.is_finite() => Duration::try_from_secs_f64(n / 1e9)
            .ok()
            .filter(|d| *d <= crate::deadline::FARTHEST)
            .ok_or_else(|| serde::de::Error::custom(too_long(&format!("{n}ns")))),
        Repr::N(n) => Err(serde::de::Error::custom(format!("invalid duration {n}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Wrapped {
        #[serde(with = "super")]
        d: Duration,
    }

    #[test]
    fn parses() {
        assert_eq!(parse("25s"), Ok(Duration::from_secs(25)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse("10ns"), Ok(Duration::from_nanos(10)));
        assert_eq!(parse("1h0.5m"), Ok(Duration::from_secs(3630)));
        assert!(parse("15").unwrap_err().contains("\"15s\""));
        assert!(parse("").is_err());
        assert!(parse("10 parsecs").is_err());
        assert!(parse("s").is_err());
        // Past what a deadline can hold: refused with a reason instead of a panic.
        for long in [
            "1000000000000000000000s",
            "18446744073709551616s",
            "1000000000000h",
            "3154000000s",
            "500000h500000h",
        ] {
            assert!(parse(long).unwrap_err().contains("longer than a century"), "{long}");
        }
        assert!(parse("876000h").is_ok(), "a century fits");
        let n: Result<Wrapped, _> = serde_json::from_str("{\"d\": 1e300}");
        assert!(n.unwrap_err().to_string().contains("longer than a century"));
    }

    #[test]
    fn numbers_are_nanoseconds_as_in_centrifugo() {
        let d = |json: &str| serde_json::from_str::<Wrapped>(json).map(|w| w.d).map_err(|e| e.to_string());
        assert_eq!(d(r#"{"d": 25000000000}"#), Ok(Duration::from_secs(25)));
        assert_eq!(d(r#"{"d": 1000000}"#), Ok(Duration::from_millis(1)));
        assert_eq!(d(r#"{"d": 0}"#), Ok(Duration::ZERO));
        let e = d(r#"{"d": 25}"#).unwrap_err();
        assert!(e.contains("nanoseconds") && e.contains("\"25s\""), "{e}");
        assert!(d(r#"{"d": -1}"#).is_err());
    }

    #[test]
    fn format_round_trips() {
        for d in [
            Duration::ZERO,
            Duration::from_secs(25),
            Duration::from_millis(1500),
            Duration::from_micros(250),
            Duration::from_nanos(7),
        ] {
            assert_eq!(parse(&format(d)), Ok(d), "{}", format(d));
        }
    }
}
