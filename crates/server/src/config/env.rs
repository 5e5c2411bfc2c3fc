//! Configuration from the environment: Centrifugo's `CENTRIFUGO_*` variables, read as
//! Centrifugo v6 reads them, and wshub's own `WSHUB_*`.
//!
//! `CENTRIFUGO_<KEY_PATH>` sets the key `key.path` (upper case, `_` between parts):
//! lists are space-separated words, lists of objects (`channel.namespaces`, `proxies`,
//! `rpc.namespaces`) and maps are JSON, booleans and numbers as Go parses them, an empty
//! value is no value. Entries of the lists of named objects take their own variables:
//! `CENTRIFUGO_CHANNEL_NAMESPACES_<NAME>_<OPTION>`, `CENTRIFUGO_RPC_NAMESPACES_<NAME>_<OPTION>`,
//! `CENTRIFUGO_PROXIES_<NAME>_<KEY>` (the name with `.` and `-` as `_`). In map values,
//! `${CENTRIFUGO_VAR_X}` is replaced by the variable `CENTRIFUGO_VAR_X`. A `CENTRIFUGO_`
//! variable that names no key is reported like an unknown key, except those Kubernetes adds
//! (`CENTRIFUGO_*_PORT*`, `CENTRIFUGO_*_SERVICE_*`) and `CENTRIFUGO_VAR_*`.
//!
//! `WSHUB_<KEY_PATH>` is read after them (so it wins): JSON when the value parses as JSON,
//! a plain string otherwise.

use std::collections::HashMap;

use serde_json::Value;

use super::LoadError;

const CENTRIFUGO: &str = "CENTRIFUGO_";
const WSHUB: &str = "WSHUB_";

/// Lists of named objects, each item with variables of its own.
const NAMED: &[(&str, &str)] = &[
    ("channel.namespaces", "CENTRIFUGO_CHANNEL_NAMESPACES_"),
    ("rpc.namespaces", "CENTRIFUGO_RPC_NAMESPACES_"),
    ("proxies", "CENTRIFUGO_PROXIES_"),
];

/// Keys that are one string in wshub but a list in Centrifugo (its variables hold
/// space-separated words).
const LISTS_AS_STRINGS: &[&str] = &["engine.redis.address"];

/// Every leaf of `v` as (`a.b.c`, value); lists and empty objects (maps) are leaves.
pub fn leaves(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                leaves(&p, child, out);
            }
        }
        _ => out.push((prefix.to_string(), v.clone())),
    }
}

/// The environment variable of a key path after `prefix`.
fn var_name(prefix: &str, path: &str) -> String {
    format!("{prefix}{}", path.replace('.', "_").to_ascii_uppercase())
}

/// Centrifugo's `NameForEnv`: `.` and `-` become `_` (then upper case).
fn name_for_env(name: &str) -> String {
    name.replace(['.', '-'], "_").to_ascii_uppercase()
}

/// Kubernetes' service variables, which Centrifugo ignores: `CENTRIFUGO(_X)*_PORT…` and
/// `…_SERVICE_…`.
/// (Centrifugo's `^CENTRIFUGO(?:_[A-Z0-9_]+)?_(PORT|SERVICE_)`; only asked of variables
/// that name no key, so `CENTRIFUGO_HTTP_SERVER_PORT` is read.)
fn is_kubernetes(var: &str) -> bool {
    var.strip_prefix("CENTRIFUGO")
        .is_some_and(|rest| rest.starts_with('_') && (rest.contains("_PORT") || rest.contains("_SERVICE_")))
}

/// A value of a `CENTRIFUGO_` variable, read by the type of the key's default.
fn centrifugo_value(path: &str, default: &Value, raw: &str, env: &HashMap<&str, &str>) -> Result<Value, String> {
    let json = || serde_json::from_str::<Value>(raw).map_err(|e| format!("not valid JSON: {e}"));
    Ok(match default {
        Value::Bool(_) => Value::Bool(match raw {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => true,
            "0" | "f" | "F" | "false" | "FALSE" | "False" => false,
            _ => return Err(format!("{raw:?} is not a boolean")),
        }),
        Value::Number(_) => match (raw.parse::<i64>(), raw.parse::<f64>()) {
            (Ok(n), _) => Value::from(n),
            (_, Ok(f)) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
            _ => return Err(format!("{raw:?} is not a number")),
        },
        Value::Array(_) if NAMED.iter().any(|(p, _)| *p == path) => json()?,
        Value::Array(_) => Value::Array(raw.split(' ').filter(|s| !s.is_empty()).map(|s| Value::String(s.into())).collect()),
        Value::Object(_) => expand_vars(json()?, env)?,
        Value::String(_) if LISTS_AS_STRINGS.contains(&path) => {
            Value::Array(raw.split(' ').filter(|s| !s.is_empty()).map(|s| Value::String(s.into())).collect())
        }
        _ => Value::String(raw.to_string()),
    })
}

/// `${CENTRIFUGO_VAR_X}` in the string values of a map, from the environment (an unset
/// one is an error, as in Centrifugo).
fn expand_vars(v: Value, env: &HashMap<&str, &str>) -> Result<Value, String> {
    let Value::Object(m) = v else { return Ok(v) };
    let mut out = serde_json::Map::new();
    for (k, val) in m {
        let val = match val {
            Value::String(s) => {
                let mut text = s.clone();
                while let Some(start) = text.find("${CENTRIFUGO_VAR_") {
                    let Some(len) = text[start..].find('}') else { break };
                    let name = &text[start + 2..start + len];
                    let value = env.get(name).ok_or_else(|| format!("environment variable {name} not found"))?;
                    text.replace_range(start..=start + len, value);
                }
                Value::String(text)
            }
            other => other,
        };
        out.insert(k, val);
    }
    Ok(Value::Object(out))
}

/// Sets `value` at `path` (dots; created as needed).
pub(super) fn set_path(root: &mut Value, path: &str, value: Value) {
    let mut cur = root;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = Value::Object(Default::default());
        }
        let Value::Object(m) = cur else { return };
        if i + 1 == parts.len() {
            m.insert(part.to_string(), value);
            return;
        }
        cur = m.entry(part.to_string()).or_insert_with(|| Value::Object(Default::default()));
    }
}

/// What the environment changed: the variables that name no key (reported as unknown),
/// and for each a path-like name for the refusal rule (`http_server.internal_port`).
pub(super) struct Applied {
    pub unknown: Vec<String>,
    /// Unknown `CENTRIFUGO_` variables as (variable, lower-case path guess, value).
    pub unknown_centrifugo: Vec<(String, String, String)>,
}

/// Applies `CENTRIFUGO_*` then `WSHUB_*` variables of `env` to `root`, with `defaults` (the
/// default configuration's JSON) giving the keys and their types, and the prototypes of
/// named list items.
pub(super) fn apply(
    root: &mut Value,
    defaults: &Value,
    prototypes: &[(&str, Value)],
    env: &[(String, String)],
) -> Result<Applied, LoadError> {
    let vars: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut known = Vec::new();
    leaves("", defaults, &mut known);
    let by_var: HashMap<String, &(String, Value)> = known.iter().map(|kv| (var_name(CENTRIFUGO, &kv.0), kv)).collect();
    let mut applied = Applied {
        unknown: Vec::new(),
        unknown_centrifugo: Vec::new(),
    };
    let mut centrifugo: Vec<&(String, String)> = env.iter().filter(|(k, _)| k.starts_with(CENTRIFUGO)).collect();
    // Whole lists first, then the variables of their items.
    centrifugo.sort_by_key(|(k, _)| (NAMED.iter().any(|(_, p)| k.starts_with(p) && k.len() > p.len()), k.clone()));
    let bad = |var: &str, path: &str, e: String| LoadError(format!("{var} ({path}): {e}"));
    for (name, raw) in centrifugo {
        if raw.is_empty() {
            continue;
        }
        if let Some((path, default)) = by_var.get(name.as_str()).map(|kv| (&kv.0, &kv.1)) {
            let v = centrifugo_value(path, default, raw, &vars).map_err(|e| bad(name, path, e))?;
            set_path(root, path, v);
            continue;
        }
        if let Some((path, item)) = named_item(root, prototypes, name) {
            let default = item.1;
            let v = centrifugo_value(&path, &default, raw, &vars).map_err(|e| bad(name, &path, e))?;
            set_item(root, item.0, &path, v);
            continue;
        }
        if name.starts_with("CENTRIFUGO_VAR_") || is_kubernetes(name) {
            continue;
        }
        applied.unknown.push(name.clone());
        let guess = name[CENTRIFUGO.len()..].to_ascii_lowercase();
        applied.unknown_centrifugo.push((name.clone(), guess, raw.clone()));
    }
    let known_paths: Vec<&String> = known.iter().map(|(p, _)| p).collect();
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix(WSHUB) else { continue };
        match known_paths.iter().find(|p| p.replace('.', "_").eq_ignore_ascii_case(rest)) {
            Some(p) => {
                let v = serde_json::from_str(raw).unwrap_or(Value::String(raw.clone()));
                set_path(root, p, v);
            }
            None if rest == "LOG" => {}
            None => applied.unknown.push(name.clone()),
        }
    }
    Ok(applied)
}

/// For `CENTRIFUGO_CHANNEL_NAMESPACES_CHAT_PRESENCE`: the path of the option
/// (`channel.namespaces[i].presence`), the list and index, and the option's default.
#[allow(clippy::type_complexity)]
fn named_item(root: &Value, prototypes: &[(&str, Value)], var: &str) -> Option<(String, ((&'static str, usize), Value))> {
    for (list, prefix) in NAMED {
        let Some(rest) = var.strip_prefix(prefix) else { continue };
        let proto = prototypes.iter().find(|(p, _)| p == list).map(|(_, v)| v)?;
        let mut options = Vec::new();
        leaves("", proto, &mut options);
        let items = lookup(root, list).and_then(Value::as_array)?;
        for (i, item) in items.iter().enumerate() {
            let Some(name) = item.get("name").and_then(Value::as_str) else {
                continue;
            };
            let Some(opt) = rest.strip_prefix(&format!("{}_", name_for_env(name))) else {
                continue;
            };
            if let Some((key, default)) = options
                .iter()
                .find(|(k, _)| k != "name" && k.replace('.', "_").eq_ignore_ascii_case(opt))
            {
                return Some((format!("{list}[{i}].{key}"), ((list, i), default.clone())));
            }
        }
    }
    None
}

fn lookup<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(root, |cur, part| cur.get(part))
}

/// Sets an option of a named list item (`path` is `list[i].key.sub`).
fn set_item(root: &mut Value, (list, i): (&str, usize), path: &str, v: Value) {
    let key = path.split_once("].").map_or("", |(_, k)| k);
    let mut cur = root;
    for part in list.split('.') {
        let Some(next) = cur.get_mut(part) else { return };
        cur = next;
    }
    if let Some(item) = cur.get_mut(i) {
        set_path(item, key, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn centrifugo_variables_by_type() {
        let defaults = json!({
            "client": {"allowed_origins": [], "insecure": false, "channel_limit": 128, "token": {"hmac_secret_key": ""}},
            "engine": {"redis": {"address": "redis://127.0.0.1:6379"}},
            "channel": {"namespaces": []},
            "proxies": [],
            "http": {"static_headers": {}}
        });
        let protos = vec![("channel.namespaces", json!({"name": "", "presence": false, "history_size": 0}))];
        let mut root = json!({"channel": {"namespaces": [{"name": "chat-room"}]}});
        let a = apply(
            &mut root,
            &defaults,
            &protos,
            &env(&[
                ("CENTRIFUGO_CLIENT_ALLOWED_ORIGINS", "https://a.example https://b.example"),
                ("CENTRIFUGO_CLIENT_INSECURE", "true"),
                ("CENTRIFUGO_CLIENT_CHANNEL_LIMIT", "16"),
                ("CENTRIFUGO_CLIENT_TOKEN_HMAC_SECRET_KEY", "s3cret"),
                ("CENTRIFUGO_ENGINE_REDIS_ADDRESS", "redis://a:1 redis://b:2"),
                ("CENTRIFUGO_CHANNEL_NAMESPACES_CHAT_ROOM_PRESENCE", "1"),
                ("CENTRIFUGO_HTTP_STATIC_HEADERS", r#"{"X-Key": "${CENTRIFUGO_VAR_KEY}"}"#),
                ("CENTRIFUGO_VAR_KEY", "k1"),
                ("CENTRIFUGO_SERVICE_HOST", "10.0.0.1"),
                ("CENTRIFUGO_PORT_8000_TCP", "tcp://10.0.0.1:8000"),
                ("CENTRIFUGO_UNI_GRPC_ENABLED", "true"),
                ("CENTRIFUGO_CLIENT_CONCURRENCY", ""),
                ("WSHUB_CLIENT_CHANNEL_LIMIT", "8"),
            ]),
        )
        .unwrap();
        assert_eq!(root["client"]["allowed_origins"], json!(["https://a.example", "https://b.example"]));
        assert_eq!(root["client"]["insecure"], true);
        assert_eq!(root["client"]["channel_limit"], 8, "WSHUB_ wins");
        assert_eq!(root["client"]["token"]["hmac_secret_key"], "s3cret");
        assert_eq!(root["engine"]["redis"]["address"], json!(["redis://a:1", "redis://b:2"]));
        assert_eq!(root["channel"]["namespaces"][0]["presence"], true);
        assert_eq!(root["http"]["static_headers"]["X-Key"], "k1");
        assert_eq!(
            a.unknown,
            ["CENTRIFUGO_UNI_GRPC_ENABLED"],
            "Kubernetes, VAR and empty ones are not reported"
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let defaults = json!({"client": {"insecure": false}});
        let mut root = json!({});
        let e = apply(&mut root, &defaults, &[], &env(&[("CENTRIFUGO_CLIENT_INSECURE", "yes")]))
            .err()
            .unwrap();
        assert!(e.0.starts_with("CENTRIFUGO_CLIENT_INSECURE (client.insecure)"), "{e}");
    }

    #[test]
    fn whole_lists_as_json_then_their_items() {
        let defaults = json!({"channel": {"namespaces": []}});
        let protos = vec![("channel.namespaces", json!({"name": "", "presence": false}))];
        let mut root = json!({});
        apply(
            &mut root,
            &defaults,
            &protos,
            &env(&[
                ("CENTRIFUGO_CHANNEL_NAMESPACES_NEWS_PRESENCE", "true"),
                ("CENTRIFUGO_CHANNEL_NAMESPACES", r#"[{"name": "news"}]"#),
            ]),
        )
        .unwrap();
        assert_eq!(root["channel"]["namespaces"], json!([{"name": "news", "presence": true}]));
    }
}
