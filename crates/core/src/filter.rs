//! Publication tags filters (`tf` of a subscribe request, Centrifugo's `FilterNode`).
//!
//! A node is a leaf comparison on one tag (`op` empty) or `and` / `or` / `not` over child
//! nodes. Leaf comparisons (`cmp`), as the protocol's builders in centrifuge-js and
//! centrifuge-python write them: `eq`, `neq`, `in`, `nin`, `ex`, `nex`, `sw` (starts with),
//! `ew` (ends with), `ct` (contains), and the numeric `gt`, `gte`, `lt`, `lte` (decimal
//! numbers; a tag or value that is not one never matches).
//!
//! [`validate`] runs once at subscribe (a bad filter is error 107); [`matches`] runs per
//! publication and subscriber, on the tags only: it never looks at the data.

use std::cmp::Ordering;
use std::collections::HashMap;

use wshub_protocol::FilterNode;

/// Why a filter is refused at subscribe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("unknown filter op {0:?}")]
    UnknownOp(String),
    #[error("unknown filter comparison {0:?}")]
    UnknownCmp(String),
    #[error("{0} node needs at least one child")]
    NoChildren(&'static str),
    #[error("not node needs exactly one child")]
    NotArity,
    #[error("{0} comparison needs val and no vals")]
    NeedsVal(String),
    #[error("{0} comparison needs vals and no val")]
    NeedsVals(String),
    #[error("{0} comparison takes neither val nor vals")]
    NoOperand(String),
    #[error("leaf comparison needs a key")]
    NoKey,
    #[error("filter nested deeper than {MAX_DEPTH}")]
    TooDeep,
}

/// Nesting a filter may have. The decoders stop earlier (prost at 100 levels), this keeps
/// evaluation's recursion bounded whatever the decoder.
pub const MAX_DEPTH: usize = 64;

/// Checks a filter's shape, as Centrifugo does before accepting a subscription.
pub fn validate(f: &FilterNode) -> Result<(), FilterError> {
    validate_at(f, 0)
}

fn validate_at(f: &FilterNode, depth: usize) -> Result<(), FilterError> {
    if depth > MAX_DEPTH {
        return Err(FilterError::TooDeep);
    }
    match f.op.as_str() {
        "" => {
            match f.cmp.as_str() {
                "eq" | "neq" | "sw" | "ew" | "ct" | "gt" | "gte" | "lt" | "lte" => {
                    if f.val.is_empty() || !f.vals.is_empty() {
                        return Err(FilterError::NeedsVal(f.cmp.clone()));
                    }
                }
                "in" | "nin" => {
                    if f.vals.is_empty() || !f.val.is_empty() {
                        return Err(FilterError::NeedsVals(f.cmp.clone()));
                    }
                }
                "ex" | "nex" => {
                    if !f.val.is_empty() || !f.vals.is_empty() {
                        return Err(FilterError::NoOperand(f.cmp.clone()));
                    }
                }
                other => return Err(FilterError::UnknownCmp(other.to_string())),
            }
            if f.key.is_empty() && f.cmp != "ex" && f.cmp != "nex" {
                return Err(FilterError::NoKey);
            }
            Ok(())
        }
        "and" | "or" => {
            if f.nodes.is_empty() {
                return Err(FilterError::NoChildren(if f.op == "and" { "and" } else { "or" }));
            }
            f.nodes.iter().try_for_each(|n| validate_at(n, depth + 1))
        }
        "not" => match f.nodes.as_slice() {
            [one] => validate_at(one, depth + 1),
            _ => Err(FilterError::NotArity),
        },
        other => Err(FilterError::UnknownOp(other.to_string())),
    }
}

/// Whether a publication with these tags passes a filter that [`validate`] accepted (an
/// invalid node never matches).
pub fn matches(f: &FilterNode, tags: &HashMap<String, String>) -> bool {
    match f.op.as_str() {
        "" => {
            let tag = tags.get(&f.key).map(String::as_str);
            // A missing tag compares as "" for set membership, as in Centrifugo.
            let val = tag.unwrap_or("");
            match f.cmp.as_str() {
                "eq" => tag == Some(f.val.as_str()),
                "neq" => tag != Some(f.val.as_str()),
                "in" => f.vals.iter().any(|v| v == val),
                "nin" => !f.vals.iter().any(|v| v == val),
                "ex" => tag.is_some(),
                "nex" => tag.is_none(),
                "sw" => tag.is_some_and(|t| t.starts_with(&f.val)),
                "ew" => tag.is_some_and(|t| t.ends_with(&f.val)),
                "ct" => tag.is_some_and(|t| t.contains(&f.val)),
                cmp @ ("gt" | "gte" | "lt" | "lte") => {
                    let Some(ord) = tag.and_then(|t| compare_decimal(t, &f.val)) else {
                        return false;
                    };
                    match cmp {
                        "gt" => ord == Ordering::Greater,
                        "gte" => ord != Ordering::Less,
                        "lt" => ord == Ordering::Less,
                        _ => ord != Ordering::Greater,
                    }
                }
                _ => false,
            }
        }
        "and" => f.nodes.iter().all(|n| matches(n, tags)),
        "or" => f.nodes.iter().any(|n| matches(n, tags)),
        "not" => match f.nodes.as_slice() {
            [one] => !matches(one, tags),
            _ => false,
        },
        _ => false,
    }
}

/// A decimal number as sign, integer digits (no leading zeros) and fraction digits (no
/// trailing zeros): compared exactly, whatever its length.
struct Decimal<'a> {
    negative: bool,
    int: &'a str,
    frac: &'a str,
}

fn parse_decimal(s: &str) -> Option<Decimal<'_>> {
    let (negative, rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (int, frac) = rest.split_once('.').unwrap_or((rest, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    // Zero has no sign.
    let negative = negative && !(int.is_empty() && frac.is_empty());
    Some(Decimal { negative, int, frac })
}

fn compare_magnitude(a: &Decimal, b: &Decimal) -> Ordering {
    a.int
        .len()
        .cmp(&b.int.len())
        .then_with(|| a.int.cmp(b.int))
        .then_with(|| a.frac.cmp(b.frac))
}

/// Compares two decimal numbers; `None` when either is not one.
pub fn compare_decimal(a: &str, b: &str) -> Option<Ordering> {
    let (a, b) = (parse_decimal(a)?, parse_decimal(b)?);
    Some(match (a.negative, b.negative) {
        (false, true) => Ordering::Greater,
        (true, false) => Ordering::Less,
        (false, false) => compare_magnitude(&a, &b),
        (true, true) => compare_magnitude(&b, &a),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaf(key: &str, cmp: &str, val: &str) -> FilterNode {
        FilterNode {
            key: key.into(),
            cmp: cmp.into(),
            val: val.into(),
            ..Default::default()
        }
    }

    fn set(key: &str, cmp: &str, vals: &[&str]) -> FilterNode {
        FilterNode {
            key: key.into(),
            cmp: cmp.into(),
            vals: vals.iter().map(|v| v.to_string()).collect(),
            ..Default::default()
        }
    }

    fn logical(op: &str, nodes: Vec<FilterNode>) -> FilterNode {
        FilterNode {
            op: op.into(),
            nodes,
            ..Default::default()
        }
    }

    fn tags(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn every_comparison() {
        let t = tags(&[("ticker", "AAPL"), ("price", "101.5"), ("src", "NASDAQ")]);
        let yes = [
            leaf("ticker", "eq", "AAPL"),
            leaf("ticker", "neq", "MSFT"),
            leaf("missing", "neq", "x"),
            set("src", "in", &["NYSE", "NASDAQ"]),
            set("src", "nin", &["NYSE"]),
            set("missing", "nin", &["a"]),
            leaf("ticker", "ex", ""),
            leaf("missing", "nex", ""),
            leaf("ticker", "sw", "AA"),
            leaf("ticker", "ew", "PL"),
            leaf("ticker", "ct", "AP"),
            leaf("price", "gt", "100"),
            leaf("price", "gte", "101.50"),
            leaf("price", "lt", "200"),
            leaf("price", "lte", "101.5"),
        ];
        for f in &yes {
            validate(f).unwrap();
            assert!(matches(f, &t), "{f:?}");
        }
        let no = [
            leaf("ticker", "eq", "MSFT"),
            leaf("missing", "eq", "x"),
            leaf("ticker", "neq", "AAPL"),
            set("src", "in", &["NYSE"]),
            set("src", "nin", &["NASDAQ"]),
            leaf("missing", "ex", ""),
            leaf("ticker", "nex", ""),
            leaf("ticker", "sw", "PL"),
            leaf("missing", "sw", "A"),
            leaf("ticker", "ew", "AA"),
            leaf("ticker", "ct", "Z"),
            leaf("price", "gt", "101.5"),
            leaf("price", "gte", "102"),
            leaf("price", "lt", "-5"),
            leaf("price", "lte", "101.49"),
            leaf("ticker", "gt", "1"),
            leaf("missing", "lt", "1"),
        ];
        for f in &no {
            validate(f).unwrap();
            assert!(!matches(f, &t), "{f:?}");
        }
    }

    #[test]
    fn logical_nodes() {
        let t = tags(&[("a", "1"), ("b", "2")]);
        let a1 = leaf("a", "eq", "1");
        let b3 = leaf("b", "eq", "3");
        assert!(!matches(&logical("and", vec![a1.clone(), b3.clone()]), &t));
        assert!(matches(&logical("or", vec![a1.clone(), b3.clone()]), &t));
        assert!(matches(&logical("not", vec![b3.clone()]), &t));
        let nested = logical("and", vec![a1, logical("not", vec![logical("or", vec![b3, leaf("c", "ex", "")])])]);
        validate(&nested).unwrap();
        assert!(matches(&nested, &t));
    }

    #[test]
    fn bad_filters_are_refused() {
        let bad = [
            leaf("a", "", "1"),
            leaf("a", "like", "1"),
            leaf("a", "eq", ""),
            leaf("", "eq", "1"),
            set("a", "in", &[]),
            FilterNode {
                key: "a".into(),
                cmp: "in".into(),
                val: "x".into(),
                vals: vec!["y".into()],
                ..Default::default()
            },
            leaf("a", "ex", "1"),
            logical("and", vec![]),
            logical("or", vec![]),
            logical("not", vec![]),
            logical("not", vec![leaf("a", "ex", ""), leaf("b", "ex", "")]),
            logical("xor", vec![leaf("a", "ex", "")]),
            logical("and", vec![leaf("a", "eq", "")]),
        ];
        for f in &bad {
            assert!(validate(f).is_err(), "{f:?}");
        }
        let mut deep = leaf("a", "ex", "");
        for _ in 0..=MAX_DEPTH {
            deep = logical("not", vec![deep]);
        }
        assert_eq!(validate(&deep), Err(FilterError::TooDeep));
    }

    #[test]
    fn decimals() {
        use Ordering::*;
        for (a, b, o) in [
            ("1", "1.0", Equal),
            ("-0", "0", Equal),
            ("10", "9", Greater),
            ("-10", "-9", Less),
            ("0.5", ".5", Equal),
            ("12345678901234567890123", "12345678901234567890122.99", Greater),
            ("+3", "3", Equal),
        ] {
            assert_eq!(compare_decimal(a, b), Some(o), "{a} {b}");
        }
        for bad in ["", "-", "1e5", "abc", "1.2.3", ".", "1 "] {
            assert_eq!(compare_decimal(bad, "1"), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn decimal_order_agrees_with_floats(a in -1_000_000i64..1_000_000, b in -1_000_000i64..1_000_000) {
            let (sa, sb) = (format!("{}.{:02}", a / 100, (a % 100).abs()), format!("{}.{:02}", b / 100, (b % 100).abs()));
            // Formatting loses the sign of -0.xx; compare what was written.
            let fa: f64 = sa.parse().unwrap();
            let fb: f64 = sb.parse().unwrap();
            prop_assert_eq!(compare_decimal(&sa, &sb), fa.partial_cmp(&fb));
        }
    }
}
