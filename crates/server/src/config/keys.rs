//! Which keys of a configuration wshub knows, and which unknown ones stop the start.
//!
//! Known keys are those of the default configuration's JSON, walked as a tree (so that
//! objects serde flattens, such as a namespace's options or a proxy's settings, are
//! checked too; `serde_ignored` cannot see inside them), with one prototype for each list
//! of objects. An unknown key is a warning (`checkconfig` fails on it), except a key on
//! [`REFUSED`]: a Centrifugo key that would make a deployment less safe if it were ignored
//! stops the start, naming it.

use serde_json::Value;

/// Centrifugo keys wshub does not implement and that would tighten security. Set to
/// anything but Centrifugo's default (false, empty, zero), each one stops the start. A
/// trailing `.*` covers every key under a section (there, the whole section is security).
pub const REFUSED: &[(&str, &str)] = &[
    ("client.token.*", "a connection token rule wshub does not know would be skipped"),
    (
        "client.subscription_token.*",
        "a subscription token rule wshub does not know would be skipped",
    ),
    ("http_server.tls_autocert.*", "no ACME yet: the server would run without TLS"),
    (
        "engine.redis.tls.server_name",
        "no other name than the address's is checked on Redis's certificate yet",
    ),
    (
        "engine.redis.sentinel_tls.server_name",
        "no other name than the address's is checked on a sentinel's certificate yet",
    ),
    (
        "broker.redis.tls.server_name",
        "no other name than the address's is checked on Redis's certificate yet",
    ),
    (
        "broker.redis.sentinel_tls.server_name",
        "no other name than the address's is checked on a sentinel's certificate yet",
    ),
    (
        "presence_manager.redis.tls.server_name",
        "no other name than the address's is checked on Redis's certificate yet",
    ),
    (
        "presence_manager.redis.sentinel_tls.server_name",
        "no other name than the address's is checked on a sentinel's certificate yet",
    ),
    (
        "map_broker.redis.tls.server_name",
        "no other name than the address's is checked on Redis's certificate yet",
    ),
    (
        "map_broker.redis.sentinel_tls.server_name",
        "no other name than the address's is checked on a sentinel's certificate yet",
    ),
    (
        "broker.nats.tls.server_name",
        "no other name than the URL's is checked on NATS's certificate yet",
    ),
    (
        "consumers.redis_stream.tls.server_name",
        "no other name than the address's is checked on Redis's certificate yet",
    ),
    (
        "consumers.redis_stream.sentinel_tls.server_name",
        "no other name than the address's is checked on a sentinel's certificate yet",
    ),
    (
        "consumers.postgresql.tls.server_name",
        "no other name than the DSN's host is checked on PostgreSQL's certificate yet",
    ),
    (
        "consumers.nats_jetstream.tls.server_name",
        "no other name than the URL's is checked on NATS's certificate yet",
    ),
];

/// Paths of lists whose items are objects, with one item's default as the shape to check
/// them against.
pub(super) fn prototypes() -> Vec<(&'static str, Value)> {
    let v = |x: Result<Value, serde_json::Error>| x.unwrap_or(Value::Null);
    vec![
        (
            "channel.namespaces",
            v(serde_json::to_value(wshub_core::config::Namespace::default())),
        ),
        ("proxies", v(serde_json::to_value(wshub_core::config::NamedProxy::default()))),
        ("consumers", v(serde_json::to_value(crate::consumers::ConsumerConfig::default()))),
        (
            "rpc.namespaces",
            v(serde_json::to_value(wshub_core::config::RpcNamespace::default())),
        ),
        ("pusher.apps", v(serde_json::to_value(crate::pusher::PusherApp::default()))),
    ]
}

/// Older names wshub still reads.
const ALIASES: &[&str] = &["client.stale_delay"];

/// The keys of `root` that the default configuration `known` does not have, as paths
/// (`a.b`, `a.list[2].c`).
pub fn unknown(root: &Value, known: &Value) -> Vec<String> {
    let protos = prototypes();
    let mut out = Vec::new();
    walk(root, known, "", "", &protos, &mut out);
    out
}

/// `path` names the place with list indexes (for people), `shape` without (for lookups).
fn walk(v: &Value, known: &Value, path: &str, shape: &str, protos: &[(&str, Value)], out: &mut Vec<String>) {
    let join = |a: &str, k: &str| if a.is_empty() { k.to_string() } else { format!("{a}.{k}") };
    match (v, known) {
        // An empty object in the defaults is a free-form map (headers, say).
        (Value::Object(m), Value::Object(k)) if !k.is_empty() => {
            for (key, child) in m {
                let (p, s) = (join(path, key), join(shape, key));
                match k.get(key) {
                    Some(kc) => walk(child, kc, &p, &s, protos, out),
                    None if ALIASES.contains(&s.as_str()) => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(items), _) => {
            if let Some((_, proto)) = protos.iter().find(|(p, _)| *p == shape) {
                for (i, item) in items.iter().enumerate() {
                    walk(item, proto, &format!("{path}[{i}]"), shape, protos, out);
                }
            }
        }
        _ => {}
    }
}

/// Whether a value is Centrifugo's default for an unset key (so that a file written by
/// `centrifugo defaultconfig` is not refused for keys it merely lists).
pub(super) fn is_default(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty() || s == "0",
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.values().all(is_default),
    }
}

/// The entry of [`REFUSED`] that covers `path` (with list indexes removed), if any.
pub fn refusal(path: &str) -> Option<&'static (&'static str, &'static str)> {
    let shape = super::planned::strip_indexes(path);
    REFUSED.iter().find(|(k, _)| match k.strip_suffix(".*") {
        Some(section) => shape == section || shape.starts_with(&format!("{section}.")),
        None => shape == *k,
    })
}

/// The first unknown key of `root` that is on [`REFUSED`] with a value that is not the
/// default: the message that stops the start.
pub fn refused(root: &Value, unknown: &[String]) -> Option<String> {
    unknown.iter().find_map(|path| {
        let (key, why) = refusal(path)?;
        let value = lookup(root, path)?;
        (!is_default(value) && !super::planned::is_centrifugo_default(path, value)).then(|| {
            format!(
                "{path}: this Centrifugo key is not supported by wshub and ignoring it would make the deployment less safe ({why}); remove it or see the README's list of refused keys ({key})"
            )
        })
    })
}

/// The first `CENTRIFUGO_` variable naming no wshub key that is on [`REFUSED`] (its name
/// is the key's, upper case with `_`), with a value that is not the default.
pub fn refused_env(unknown: &[(String, String, String)]) -> Option<String> {
    unknown.iter().find_map(|(var, _, value)| {
        let (key, why) = REFUSED.iter().find(|(k, _)| {
            let env = format!("CENTRIFUGO_{}", k.trim_end_matches(".*").replace('.', "_").to_ascii_uppercase());
            match k.ends_with(".*") {
                true => var.starts_with(&format!("{env}_")),
                false => *var == env,
            }
        })?;
        let default = matches!(value.as_str(), "" | "0" | "false" | "False" | "FALSE" | "f" | "F");
        (!default).then(|| {
            format!("{var}: this Centrifugo key ({key}) is not supported by wshub and ignoring it would make the deployment less safe ({why}); unset it or see the README's list of refused keys")
        })
    })
}

/// The value at a path of [`unknown`]'s form.
pub(super) fn lookup<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = root;
    for part in path.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        cur = cur.get(name)?;
        if let Some(i) = index {
            cur = cur.get(i)?;
        }
    }
    Some(cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn walks_flattened_objects_and_lists() {
        let known = json!({"a": {"b": 1, "headers": {}}, "proxies": [], "channel": {"namespaces": []}});
        let root = json!({
            "a": {"b": 2, "c": 3, "headers": {"X-Any": "1"}},
            "proxies": [{"name": "p", "endpoint": "http://x", "bogus2": 1}],
            "channel": {"namespaces": [{"name": "n", "bogus3": true}]},
            "top": 1
        });
        let mut u = unknown(&root, &known);
        u.sort();
        assert_eq!(u, ["a.c", "channel.namespaces[0].bogus3", "proxies[0].bogus2", "top"]);
    }

    #[test]
    fn refusals_match_sections_and_skip_defaults() {
        assert_eq!(refusal("client.token.foo").map(|r| r.0), Some("client.token.*"));
        assert_eq!(
            refusal("http_server.tls_autocert.email").map(|r| r.0),
            Some("http_server.tls_autocert.*")
        );
        assert!(refusal("client.tokenx").is_none());
        let root = json!({"http_server": {"tls_autocert": {"enabled": false, "cache_dir": "/var/acme"}}});
        let unknown = vec![
            "http_server.tls_autocert.enabled".to_string(),
            "http_server.tls_autocert.cache_dir".to_string(),
        ];
        let m = refused(&root, &unknown).unwrap();
        assert!(m.starts_with("http_server.tls_autocert.cache_dir:"), "{m}");
        assert_eq!(refused(&root, &unknown[..1]), None, "Centrifugo's default is not a request");
    }
}
