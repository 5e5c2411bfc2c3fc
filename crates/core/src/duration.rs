//! Durations in configuration files: `"25s"`, `"500ms"`, `"1m30s"`, `"2h"` (and plain
//! numbers as seconds).

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Parses `"1h2m3s"`, `"500ms"`, `"10s"`, `"0"`.
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
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let secs = match unit {
            "ms" => n / 1000.0,
            "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            "" if rest.is_empty() && total.is_zero() => n,
            _ => return Err(format!("invalid duration unit {unit:?} in {s:?} (use ms, s, m or h)")),
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
    if d.subsec_nanos() != 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs())
    }
}

/// serde adapter (serialize half).
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

/// serde adapter for `Duration` fields written as strings or numbers of seconds.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        S(String),
        N(f64),
    }
    match Repr::deserialize(d)? {
        Repr::S(s) => parse(&s).map_err(serde::de::Error::custom),
        Repr::N(n) if n >= 0.0 && n.is_finite() => Duration::try_from_secs_f64(n)
            .ok()
            .filter(|d| *d <= crate::deadline::FARTHEST)
            .ok_or_else(|| serde::de::Error::custom(too_long(&n.to_string()))),
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
        assert_eq!(parse("15"), Ok(Duration::from_secs(15)));
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
}
