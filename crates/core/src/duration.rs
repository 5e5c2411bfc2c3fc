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
        total += Duration::from_secs_f64(secs);
    }
    Ok(total)
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
        Repr::N(n) if n >= 0.0 && n.is_finite() => Ok(Duration::from_secs_f64(n)),
        Repr::N(n) => Err(serde::de::Error::custom(format!("invalid duration {n}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
