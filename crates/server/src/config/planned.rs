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

use serde_json::Value;

use super::keys::{is_default, lookup, refusal};
use super::LoadError;

/// A Centrifugo key (or, with a trailing `.*`, every key of a section) wshub does not
/// implement yet. Namespace options are written `namespace.<option>` (for
/// `channel.without_namespace` and every namespace) and proxy settings `proxy.<key>` (for
/// every proxy object: `client.proxy.*`, `channel.proxy.*`, `rpc.proxy`, `proxies[]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    pub key: &'static str,
    /// The open issue that brings it.
    pub issue: u32,
    /// Set to anything but Centrifugo's default, the start stops (else: a warning).
    pub stops: bool,
    /// The missing feature, in the words of the messages and of the README.
    pub what: &'static str,
}

const fn stop(key: &'static str, issue: u32, what: &'static str) -> Planned {
    Planned {
        key,
        issue,
        stops: true,
        what,
    }
}

const fn warn(key: &'static str, issue: u32, what: &'static str) -> Planned {
    Planned {
        key,
        issue,
        stops: false,
        what,
    }
}

const TRANSFORMS: &str = "connect error transforms for unidirectional transports";

/// The most specific entry covering a key wins (`grpc_api.enabled` before `grpc_api.*`).
pub const PLANNED: &[Planned] = &[
    // Map subscriptions.
    // Maps are kept in memory only: on several nodes each would have its own.
    stop("map_broker.type", 28, "a shared map broker (maps are kept in this node's memory)"),
    warn("map_broker.*", 28, "a shared map broker"),
    warn("channel.proxy.map_publish.*", 28, "the map publish and remove proxies"),
    warn("channel.proxy.map_remove.*", 28, "the map publish and remove proxies"),
    // Ignored, a client's map writes would be judged by the permissions, not the backend.
    stop("namespace.map.publish_proxy_enabled", 28, "the map publish and remove proxies"),
    stop("namespace.map.remove_proxy_enabled", 28, "the map publish and remove proxies"),
    warn("namespace.map.publish_proxy_name", 28, "the map publish and remove proxies"),
    warn("namespace.map.remove_proxy_name", 28, "the map publish and remove proxies"),
    // Shared poll.
    warn("shared_poll.*", 29, "shared poll"),
    warn("channel.proxy.shared_poll_refresh.*", 29, "shared poll"),
    warn("namespace.shared_poll.*", 29, "shared poll"),
    // gRPC.
    stop("proxy.grpc.tls.*", 30, "client certificates and TLS options for gRPC proxies"),
    warn("channel.proxy.subscribe_stream.*", 30, "the subscribe stream proxy"),
    stop("namespace.subscribe_stream_proxy_enabled", 30, "the subscribe stream proxy"),
    warn("namespace.subscribe_stream_proxy_name", 30, "the subscribe stream proxy"),
    warn("namespace.subscribe_stream_proxy_bidirectional", 30, "the subscribe stream proxy"),
    // Brokers, presence managers, controllers and consumers.
    stop("controller.enabled", 31, "a controller chosen apart from the engine"),
    warn("controller.*", 31, "a controller chosen apart from the engine"),
    // Consumers: the types wshub has not (`type` naming one stops the start) and the keys of
    // the PostgreSQL and Redis stream ones it does not read yet.
    warn("consumers.kafka.*", 31, "Kafka consumers"),
    stop("consumers.nats_jetstream.credentials_file", 31, "NATS credentials files"),
    stop("consumers.nats_jetstream.tls.enabled", 31, "TLS for the NATS JetStream consumer"),
    warn("consumers.nats_jetstream.tls.*", 31, "TLS for the NATS JetStream consumer"),
    stop(
        "consumers.nats_jetstream.publication_data_mode.enabled",
        31,
        "the publication data mode of consumers",
    ),
    warn(
        "consumers.nats_jetstream.publication_data_mode.*",
        31,
        "the publication data mode of consumers",
    ),
    warn("consumers.google_pub_sub.*", 31, "Google Pub/Sub consumers"),
    warn("consumers.aws_sqs.*", 31, "AWS SQS consumers"),
    warn("consumers.azure_service_bus.*", 31, "Azure Service Bus consumers"),
    stop("consumers.postgresql.tls.enabled", 31, "TLS for the PostgreSQL consumer"),
    warn("consumers.postgresql.tls.*", 31, "TLS for the PostgreSQL consumer"),
    stop("consumers.redis_stream.tls.enabled", 31, "TLS for the Redis stream consumer"),
    warn("consumers.redis_stream.tls.*", 31, "TLS for the Redis stream consumer"),
    stop(
        "consumers.redis_stream.cluster_address",
        31,
        "Redis Cluster for the Redis stream consumer",
    ),
    stop(
        "consumers.redis_stream.sentinel_address",
        31,
        "Sentinel for the Redis stream consumer",
    ),
    warn("consumers.redis_stream.sentinel_user", 31, "Sentinel for the Redis stream consumer"),
    warn(
        "consumers.redis_stream.sentinel_password",
        31,
        "Sentinel for the Redis stream consumer",
    ),
    warn(
        "consumers.redis_stream.sentinel_master_name",
        31,
        "Sentinel for the Redis stream consumer",
    ),
    warn(
        "consumers.redis_stream.sentinel_client_name",
        31,
        "Sentinel for the Redis stream consumer",
    ),
    warn(
        "consumers.redis_stream.sentinel_tls.*",
        31,
        "Sentinel for the Redis stream consumer",
    ),
    warn("consumers.redis_stream.client_name", 31, "this Redis connection key"),
    warn("consumers.redis_stream.force_resp2", 31, "this Redis connection key"),
    warn("consumers.redis_stream.replica_client.*", 31, "reading from Redis replicas"),
    stop(
        "consumers.redis_stream.publication_data_mode.enabled",
        31,
        "the publication data mode of consumers",
    ),
    warn(
        "consumers.redis_stream.publication_data_mode.*",
        31,
        "the publication data mode of consumers",
    ),
    // Observability and the operator's desk.
    stop(
        "opentelemetry.google_cloud_adc_auth",
        32,
        "Google Cloud credentials for the OpenTelemetry exporter",
    ),
    stop("debug.enabled", 32, "debug (profiling) endpoints"),
    warn("debug.*", 32, "debug (profiling) endpoints"),
    // The `metrics` crate's Prometheus exporter writes the text exposition format only,
    // which cannot carry native (sparse) histograms: the classic buckets stay.
    warn(
        "prometheus.native_histograms",
        32,
        "Prometheus native histograms (the exporter writes the text format, classic buckets only)",
    ),
    warn("admin.web_path", 32, "a custom admin web UI"),
    warn("admin.web_proxy_address", 32, "a custom admin web UI"),
    // The Redis engine.
    warn("engine.redis.client_name", 27, "this Redis connection key"),
    warn("engine.redis.sentinel_client_name", 27, "this Redis connection key"),
    warn("engine.redis.replica_client.*", 34, "reading from Redis replicas"),
    warn("engine.redis.history_use_lists", 34, "this Redis storage option"),
    warn("engine.redis.presence_hash_field_ttl", 34, "this Redis storage option"),
    warn("engine.redis.presence_user_mapping", 34, "this Redis storage option"),
    // The same Redis keys in the broker's and the presence manager's own sections.
    warn("broker.redis.client_name", 27, "this Redis connection key"),
    warn("broker.redis.sentinel_client_name", 27, "this Redis connection key"),
    warn("broker.redis.replica_client.*", 34, "reading from Redis replicas"),
    warn("broker.redis.history_use_lists", 34, "this Redis storage option"),
    warn("presence_manager.redis.client_name", 27, "this Redis connection key"),
    warn("presence_manager.redis.sentinel_client_name", 27, "this Redis connection key"),
    warn("presence_manager.redis.replica_client.*", 34, "reading from Redis replicas"),
    warn("presence_manager.redis.presence_hash_field_ttl", 34, "this Redis storage option"),
    warn("presence_manager.redis.presence_user_mapping", 34, "this Redis storage option"),
    // The broker wshub has not: `broker.type` naming it stops the start.
    warn("broker.postgres.*", 31, "the PostgreSQL broker"),
    // No issue of their own yet: issue 27 holds them.
    stop("http_server.http3.enabled", 27, "HTTP/3"),
    stop("webtransport.enabled", 27, "the WebTransport transport"),
    warn("webtransport.*", 27, "the WebTransport transport"),
    stop("swagger.enabled", 27, "the Swagger UI"),
    warn("swagger.*", 27, "the Swagger UI"),
    warn("client.concurrency", 27, "concurrent processing of a connection's commands"),
    warn(
        "client.presence_update_interval",
        27,
        "a presence refresh interval apart from the ping",
    ),
    warn("client.channel_position_check_delay", 27, "periodic stream position checks"),
    warn("client.channel_position_max_time_lag", 27, "periodic stream position checks"),
    stop("namespace.force_positioning", 27, "positioning without recovery"),
    stop("namespace.allow_positioning", 27, "positioning without recovery"),
    stop("namespace.force_recovery_mode", 27, "the cache recovery mode"),
    stop("namespace.auto_cache_recover", 27, "the cache recovery mode"),
    stop("client.connect_code_to_unidirectional_disconnect.enabled", 27, TRANSFORMS),
    warn("client.connect_code_to_unidirectional_disconnect.*", 27, TRANSFORMS),
    stop("uni_sse.connect_code_to_http_response.enabled", 27, TRANSFORMS),
    warn("uni_sse.connect_code_to_http_response.*", 27, TRANSFORMS),
    stop("uni_http_stream.connect_code_to_http_response.enabled", 27, TRANSFORMS),
    warn("uni_http_stream.connect_code_to_http_response.*", 27, TRANSFORMS),
    warn("uni_websocket.*", 27, "this unidirectional WebSocket option"),
    stop("proxy.emulated_headers", 27, "emulated headers for proxies"),
    stop("proxy.http.status_to_code_transforms", 27, "status code transforms for proxies"),
    stop("proxy.http.tls.*", 27, "client certificates and TLS options for proxies"),
];

/// Values other than Centrifugo's default that mean the same (Centrifugo's explicit name
/// of its default); an empty value: any value.
const SAME_AS_DEFAULT: &[(&str, &str)] = &[
    ("namespace.subscription_type", "stream"),
    ("namespace.force_recovery_mode", "stream"),
];

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
/// [`PLANNED`] (and of the refused list) at Centrifugo's default are accepted silently,
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
        "rpc.proxy.",
        "proxies.",
    ];
    let rest = |prefixes: &[&str]| prefixes.iter().find_map(|p| shape.strip_prefix(p));
    if let Some(r) = rest(NAMESPACES) {
        return Some(format!("namespace.{r}"));
    }
    rest(PROXIES).map(|r| format!("proxy.{r}"))
}

/// The most specific entry of [`PLANNED`] covering `shape`.
pub fn entry(shape: &str) -> Option<&'static Planned> {
    let names = std::iter::once(shape.to_string()).chain(generic(shape));
    names
        .flat_map(|name| {
            PLANNED.iter().filter(move |p| match p.key.strip_suffix(".*") {
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
