//! Centrifugo keys wshub knows but does not implement yet, each owned by an open issue.
//!
//! A Centrifugo deployment's file often lists every key (`centrifugo defaultconfig` writes
//! them all): such a file must load, so a key of a feature wshub lacks is accepted at
//! Centrifugo's default value. Set to anything else it is either a warning naming the key
//! and its issue, or, where ignoring it would leave the deployment without something it
//! relies on (a switched-on feature, a rule, data), it stops the start. Centrifugo's
//! defaults come from `centrifugo-defaultconfig.json` beside this file, generated from
//! Centrifugo's source by `scripts/centrifugo-defaultconfig.py --items`; a key absent from
//! it is no Centrifugo key and stays unknown (a misspelling).

use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;

use super::keys::{is_default, lookup, refusal};
use super::LoadError;

/// A Centrifugo key (or, with a trailing `.*`, every key of a section) wshub does not
/// implement yet. Namespace options are written `namespace.<option>` (for
/// `channel.without_namespace` and every namespace) and proxy settings `proxy.<key>` (for
/// every proxy object: `client.proxy.*`, `channel.proxy.*`, `rpc.proxy`, `proxies[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub key: String,
    /// The open issue that brings it.
    pub issue: u32,
    /// Set to anything but Centrifugo's default, the start stops (else: a warning).
    pub stops: bool,
    /// The missing feature, in the words of the messages and of the README.
    pub what: String,
}

/// A missing feature as `planned.toml` lists it: the keys that stop the start and those that
/// only warn share the issue and the words.
#[derive(Deserialize)]
struct Feature {
    issue: u32,
    what: String,
    #[serde(default)]
    stop: Vec<String>,
    #[serde(default)]
    warn: Vec<String>,
}

#[derive(Deserialize)]
struct Table {
    feature: Vec<Feature>,
}

/// Every planned key (`planned.toml`, a table kept as data: it is read the same way whatever
/// it lists). The most specific entry covering a key wins (`grpc_api.enabled` before
/// `grpc_api.*`).
pub fn planned() -> &'static [Planned] {
    static PLANNED: OnceLock<Vec<Planned>> = OnceLock::new();
    PLANNED.get_or_init(|| {
        // Compiled in and parsed by a test (`planned_keys_are_not_implemented`): an empty
        // table here cannot reach a release.
        let table: Table = toml::from_str(include_str!("planned.toml")).unwrap_or(Table { feature: Vec::new() });
        let entries = |f: &Feature, keys: &[String], stops: bool| -> Vec<Planned> {
            keys.iter()
                .map(|key| Planned {
                    key: key.clone(),
                    issue: f.issue,
                    stops,
                    what: f.what.clone(),
                })
                .collect()
        };
        table
            .feature
            .iter()
            .flat_map(|f| [entries(f, &f.stop, true), entries(f, &f.warn, false)])
            .flatten()
            .collect()
    })
}

/// Values other than Centrifugo's default that mean the same (Centrifugo's explicit name
/// of its default); an empty value: any value.
const SAME_AS_DEFAULT: &[(&str, &str)] = &[("namespace.subscription_type", "stream")];

/// Centrifugo's defaults, with one item in each list of objects.
pub fn centrifugo_defaults() -> &'static Value {
    static DEFAULTS: OnceLock<Value> = OnceLock::new();
    DEFAULTS.get_or_init(|| serde_json::from_str(include_str!("centrifugo-defaultconfig.json")).unwrap_or(Value::Null))
}

/// The keys of a configuration wshub does not implement, sorted out.
#[derive(Debug, Default)]
pub struct Sorted {
    /// Keys that are neither wshub's nor Centrifugo's (misspellings).
    pub unknown: Vec<String>,
    /// Planned keys set to a value wshub ignores, one message each.
    pub warnings: Vec<String>,
}

/// Sorts the `unknown` paths of `root` (as [`super::keys::unknown`] gives them): keys of
/// [`planned`] (and of the refused list) at Centrifugo's default are accepted silently,
/// other values give a warning or stop the start; what is no Centrifugo key stays unknown.
pub fn sort(root: &Value, unknown: Vec<String>) -> Result<Sorted, LoadError> {
    let mut out = Sorted::default();
    for path in unknown {
        let Some(value) = lookup(root, &path) else {
            out.unknown.push(path);
            continue;
        };
        let mut leaves = Vec::new();
        let shape = strip_indexes(&path);
        collect(value, default_at(&shape), &path, &shape, &mut leaves);
        for (p, shape, v, default) in leaves {
            let Some(default) = default else {
                out.unknown.push(p);
                continue;
            };
            if refusal(&p).is_some() {
                // Checked by the refused list: here only its defaults arrive.
                continue;
            }
            let Some(entry) = entry(&shape) else {
                out.unknown.push(p);
                continue;
            };
            if at_default(&shape, v, default) {
                continue;
            }
            let default = match default {
                Value::Null => "unset".to_string(),
                d => d.to_string(),
            };
            let message = format!(
                "{p}: wshub does not implement {} yet (issue #{}); a value other than Centrifugo's default ({default}) is ignored",
                entry.what, entry.issue
            );
            if entry.stops {
                return Err(LoadError(format!(
                    "{message}, and ignoring this one would leave the deployment without what it asks for: remove the key or set it to {default}"
                )));
            }
            out.warnings.push(message);
        }
    }
    Ok(out)
}

/// A leaf: its path, the path without list indexes, its value and Centrifugo's default.
type Leaf<'a> = (String, String, &'a Value, Option<&'static Value>);

/// The leaves of `v` (whose Centrifugo default is `d`), following the shape of Centrifugo's
/// defaults: an object there is walked into, anything else (a map, a list of values) is
/// one leaf; a list of objects is walked item by item.
fn collect<'a>(v: &'a Value, d: Option<&'static Value>, path: &str, shape: &str, out: &mut Vec<Leaf<'a>>) {
    match (v, d) {
        (Value::Object(m), Some(Value::Object(dm))) if !dm.is_empty() => {
            for (k, child) in m {
                collect(child, dm.get(k), &format!("{path}.{k}"), &format!("{shape}.{k}"), out);
            }
        }
        (Value::Array(items), Some(Value::Array(d))) if d.first().is_some_and(Value::is_object) => {
            for (i, item) in items.iter().enumerate() {
                collect(item, d.first(), &format!("{path}[{i}]"), shape, out);
            }
        }
        _ => out.push((path.to_string(), shape.to_string(), v, d)),
    }
}

/// Centrifugo's default at a path without list indexes (a list's first item standing for
/// every item).
fn default_at(shape: &str) -> Option<&'static Value> {
    let mut cur = centrifugo_defaults();
    for part in shape.split('.') {
        if let Value::Array(items) = cur {
            cur = items.first()?;
        }
        cur = cur.get(part)?;
    }
    Some(cur)
}

/// `path` without its list indexes (`a[2].b` is `a.b`).
pub(super) fn strip_indexes(path: &str) -> String {
    let mut shape = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => in_index = true,
            ']' => in_index = false,
            _ if !in_index => shape.push(c),
            _ => {}
        }
    }
    shape
}

/// `shape` in the table's terms: namespace options and proxy settings under one name each.
fn generic(shape: &str) -> Option<String> {
    const NAMESPACES: &[&str] = &["channel.without_namespace.", "channel.namespaces."];
    const PROXIES: &[&str] = &[
        "client.proxy.connect.",
        "client.proxy.refresh.",
        "channel.proxy.subscribe.",
        "channel.proxy.publish.",
        "channel.proxy.sub_refresh.",
        "channel.proxy.shared_poll_refresh.",
        "channel.proxy.map_publish.",
        "channel.proxy.map_remove.",
        "channel.proxy.subscribe_stream.",
        "rpc.proxy.",
        "proxies.",
    ];
    let rest = |prefixes: &[&str]| prefixes.iter().find_map(|p| shape.strip_prefix(p));
    if let Some(r) = rest(NAMESPACES) {
        return Some(format!("namespace.{r}"));
    }
    rest(PROXIES).map(|r| format!("proxy.{r}"))
}

/// The most specific entry of [`planned`] covering `shape`.
pub fn entry(shape: &str) -> Option<&'static Planned> {
    let names = std::iter::once(shape.to_string()).chain(generic(shape));
    names
        .flat_map(|name| {
            planned().iter().filter(move |p| match p.key.strip_suffix(".*") {
                Some(section) => name == section || name.starts_with(&format!("{section}.")),
                None => name == p.key,
            })
        })
        .max_by_key(|p| p.key.len())
}

/// Whether `v` means Centrifugo's default `d`: zero or empty (Centrifugo's "unset"), equal,
/// the same duration written otherwise (`"60s"` for `"1m0s"`), or Centrifugo's name for it.
fn at_default(shape: &str, v: &Value, d: &Value) -> bool {
    let same_duration =
        |a: &str, b: &str| matches!((wshub_core::duration::parse(a), wshub_core::duration::parse(b)), (Ok(x), Ok(y)) if x == y);
    let named = || {
        let g = generic(shape).unwrap_or_default();
        SAME_AS_DEFAULT
            .iter()
            .any(|(k, name)| (*k == shape || *k == g) && (name.is_empty() || v.as_str() == Some(name)))
    };
    match (v, d) {
        _ if is_default(v) || v == d || named() => true,
        (Value::String(a), Value::String(b)) => same_duration(a, b),
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Object(m), Value::Object(dm)) => m
            .iter()
            .all(|(k, child)| at_default(&format!("{shape}.{k}"), child, dm.get(k).unwrap_or(&Value::Null))),
        _ => false,
    }
}

/// Whether `v` at `path` (list indexes allowed) means Centrifugo's default there: for the
/// refused list, whose keys Centrifugo's own default file lists too (`tls_autocert.http_addr`
/// is `":80"`).
pub fn is_centrifugo_default(path: &str, v: &Value) -> bool {
    let shape = strip_indexes(path);
    default_at(&shape).is_some_and(|d| at_default(&shape, v, d))
}

/// `defaults` with every Centrifugo key it lacks added at Centrifugo's default: so that a
/// `CENTRIFUGO_` variable of a planned key is read into its place and sorted like the file.
/// The refused keys stay out: their variables are refused by name.
pub fn with_centrifugo_keys(defaults: &Value) -> Value {
    fn merge(into: &mut Value, from: &Value, path: &str) {
        if let (Value::Object(a), Value::Object(b)) = (into, from) {
            for (k, v) in b {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match a.get_mut(k) {
                    Some(existing) => merge(existing, v, &p),
                    None if refusal(&p).is_some() => {}
                    None => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
    }
    let mut out = defaults.clone();
    merge(&mut out, centrifugo_defaults(), "");
    out
}

/// `root` without its `null` values: Go writes an unset list or map as `null`
/// (`centrifugo defaultconfig` does), which means unset.
pub fn drop_nulls(root: &mut Value) {
    match root {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            m.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}
