//! The HTTP server API (PROTOCOL.md, "HTTP server API"): `POST /api/<method>`.
//!
//! Authentication by `X-API-Key: KEY` or `Authorization: apikey KEY` (wrong or missing:
//! 401 with a one-line JSON error saying so). A body that is not JSON: 400. Otherwise 200 with `{"result": ...}` or
//! `{"error": {"code", "message"}}`; bad params are error 107.
//!
//! A body is deserialized straight into the method's parameters ([`parse_request`]), never
//! into a `serde_json::Value` tree first: a 15 MiB JSON array costs a tree of some 240 MB,
//! and nothing here (measured: `large_array_body` in `tests/node_bad_input.rs`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{json, value::RawValue, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use wshub_core::engine::{HistoryQuery, StreamPosition};
use wshub_core::node::ApiError;

use crate::cluster::Cluster;

/// The parameters of a method that publishes: its own fields, then what every publishing
/// method carries and [`payload`](PublishParams::payload) checks the same way: the data
/// (JSON, or base64 in `b64data`), tags, an idempotency key, and whether delta subscribers
/// get a delta against the previous data.
macro_rules! publishing_params {
    ($(#[$doc:meta])* $name:ident { $($(#[$attr:meta])* $field:ident: $ty:ty,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Deserialize)]
        pub struct $name {
            $($(#[$attr])* pub $field: $ty,)*
            pub data: Option<Box<RawValue>>,
            #[serde(default)]
            pub b64data: String,
            #[serde(default)]
            pub tags: HashMap<String, String>,
            #[serde(default)]
            pub idempotency_key: String,
            #[serde(default)]
            pub delta: bool,
        }

        impl $name {
            /// The data and the idempotency key, checked.
            pub fn payload(&self) -> Result<(::bytes::Bytes, Option<&str>), ApiError> {
                let data = $crate::api::data_bytes(self.data.as_deref(), &self.b64data)?;
                Ok((data, $crate::api::idempotency_key(&self.idempotency_key)?))
            }
        }
    };
}

pub mod map;
use wshub_protocol::codes::error as ec;
use wshub_protocol::{ClientInfo, Publication};

/// Whether the request carries the API key.
pub fn authorized(headers: &http::HeaderMap, key: &str, insecure: bool) -> bool {
    if insecure {
        return true;
    }
    if key.is_empty() {
        return false;
    }
    let given = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("apikey "))
        })
        .map(str::trim);
    given.is_some_and(|g| key_matches(g, key))
}

/// Compares fixed-size digests in constant time: neither the position of the first
/// difference nor the key's length shows in the time taken.
fn key_matches(given: &str, key: &str) -> bool {
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(key.as_bytes());
    bool::from(a.as_slice().ct_eq(b.as_slice()))
}

/// Why a request body could not become an [`ApiRequest`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The body is not JSON (HTTP 400).
    #[error("body is not JSON: {0}")]
    NotJson(String),
    /// JSON, but not this method's parameters (107), or no such method (104).
    #[error("{0}")]
    Api(ApiError),
}

impl From<ApiError> for RequestError {
    fn from(e: ApiError) -> Self {
        RequestError::Api(e)
    }
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(&format!("bad request: {e}"))
}

/// Whether `body` is well-formed JSON, checked without building anything.
fn check_json(body: &[u8]) -> Result<(), RequestError> {
    serde_json::from_slice::<IgnoredAny>(body)
        .map(drop)
        .map_err(|e| RequestError::NotJson(e.to_string()))
}

/// Deserializes `body` straight into `T`. A data error (a wrong type, a missing field)
/// stops serde before the end of the body, so the rest is checked for syntax to tell
/// "not JSON" (400) from "bad params" (107).
fn params<'de, T: Deserialize<'de>>(body: &'de [u8]) -> Result<T, RequestError> {
    match serde_json::from_slice(body) {
        Ok(p) => Ok(p),
        Err(e) if e.is_data() => {
            check_json(body)?;
            Err(RequestError::Api(bad(e)))
        }
        Err(e) => Err(RequestError::NotJson(e.to_string())),
    }
}

publishing_params! {
    /// `publish` parameters.
    PublishParams {
        channel: String,
        #[serde(default)]
        skip_history: bool,
    }
}

publishing_params! {
    /// `broadcast` parameters (the idempotency key counts per channel, as for `publish`).
    BroadcastParams {
        channels: Vec<String>,
        #[serde(default)]
        skip_history: bool,
    }
}

/// The longest `idempotency_key` accepted (it becomes part of a key in the engine).
const MAX_IDEMPOTENCY_KEY: usize = 256;

fn idempotency_key(k: &str) -> Result<Option<&str>, ApiError> {
    if k.len() > MAX_IDEMPOTENCY_KEY {
        return Err(ApiError::bad_request("idempotency_key longer than 256 bytes"));
    }
    Ok((!k.is_empty()).then_some(k))
}

fn data_bytes(data: Option<&RawValue>, b64: &str) -> Result<Bytes, ApiError> {
    if !b64.is_empty() {
        return base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map(Bytes::from)
            .map_err(|_| ApiError::bad_request("bad b64data"));
    }
    match data {
        Some(raw) => Ok(Bytes::copy_from_slice(raw.get().as_bytes())),
        None => Err(ApiError::bad_request("data required")),
    }
}

fn position(sp: StreamPosition) -> Value {
    if sp.offset == 0 && sp.epoch.is_empty() {
        json!({})
    } else {
        json!({"offset": sp.offset, "epoch": sp.epoch})
    }
}

/// `subscribe` and `unsubscribe` parameters.
#[derive(Debug, Deserialize)]
pub struct UserChannel {
    pub user: String,
    pub channel: String,
    #[serde(default)]
    pub client: String,
    /// Centrifugo's narrowing to one connection session; see [`no_session`].
    #[serde(default)]
    pub session: String,
}

/// `disconnect` parameters.
#[derive(Debug, Deserialize)]
pub struct DisconnectParams {
    pub user: String,
    #[serde(default)]
    pub client: String,
    #[serde(default)]
    pub session: String,
    #[serde(default)]
    pub whitelist: Vec<String>,
    pub disconnect: Option<DisconnectObj>,
}

/// The close code and reason of a `disconnect`.
#[derive(Debug, Deserialize)]
pub struct DisconnectObj {
    pub code: u16,
    #[serde(default)]
    pub reason: String,
}

/// `refresh` parameters.
#[derive(Debug, Deserialize)]
pub struct RefreshParams {
    pub user: String,
    #[serde(default)]
    pub client: String,
    #[serde(default)]
    pub session: String,
    #[serde(default)]
    pub expired: bool,
    #[serde(default)]
    pub expire_at: u64,
}

/// Parameters naming one channel (`presence`, `presence_stats`, `history_remove`).
#[derive(Debug, Deserialize)]
pub struct ChannelParam {
    pub channel: String,
}

/// `rpc` parameters: a method for the RPC proxy and its params.
#[derive(Debug, Deserialize)]
pub struct RpcParams {
    pub method: String,
    #[serde(default)]
    pub params: Option<Box<RawValue>>,
}

/// `history` parameters.
#[derive(Debug, Deserialize)]
pub struct HistoryParams {
    pub channel: String,
    #[serde(default)]
    pub limit: i64,
    pub since: Option<SinceParam>,
    #[serde(default)]
    pub reverse: bool,
}

/// A stream position in `history`.
#[derive(Debug, Deserialize)]
pub struct SinceParam {
    #[serde(default)]
    pub offset: u64,
    #[serde(default)]
    pub epoch: String,
}

/// `channels` parameters.
#[derive(Debug, Deserialize, Default)]
pub struct ChannelsParams {
    #[serde(default)]
    pub pattern: String,
}

/// `batch` parameters: each command stays raw JSON until its own method parses it.
#[derive(Debug, Deserialize)]
pub struct BatchParams {
    /// `{"publish": {...}}` each (the first key names the method).
    pub commands: Vec<BTreeMap<String, Box<RawValue>>>,
}

/// `connections` parameters (Centrifugo PRO's method, without its `expression`): a user's
/// connections on every node.
#[derive(Debug, Deserialize)]
pub struct ConnectionsParams {
    pub user: String,
}

/// One API call, its parameters typed.
#[derive(Debug)]
pub enum ApiRequest {
    Publish(PublishParams),
    Broadcast(BroadcastParams),
    Subscribe(UserChannel),
    Unsubscribe(UserChannel),
    Disconnect(DisconnectParams),
    Refresh(RefreshParams),
    Presence(ChannelParam),
    PresenceStats(ChannelParam),
    History(HistoryParams),
    HistoryRemove(ChannelParam),
    Channels(ChannelsParams),
    Connections(ConnectionsParams),
    Info,
    Batch(BatchParams),
    Rpc(RpcParams),
    /// `map_*` ([`map`]).
    Map(map::MapRequest),
}

impl ApiRequest {
    /// Whether the call publishes (`publish`, `broadcast`, or a batch holding one): a
    /// draining node on the memory engine refuses those, as nobody would receive them.
    pub fn publishes(&self) -> bool {
        match self {
            ApiRequest::Publish(_) | ApiRequest::Broadcast(_) => true,
            ApiRequest::Map(m) => m.publishes(),
            ApiRequest::Batch(b) => b.commands.iter().any(|c| {
                c.keys()
                    .next()
                    .is_some_and(|m| ["publish", "broadcast", "map_publish", "map_remove", "shared_poll_publish"].contains(&m.as_str()))
            }),
            _ => false,
        }
    }
}

/// The server API's methods (the label of a call's metrics; at an empty
/// `http_api.handler_prefix`, the only root paths that are the API's).
pub const METHODS: &[&str] = &[
    "publish",
    "broadcast",
    "subscribe",
    "unsubscribe",
    "disconnect",
    "refresh",
    "presence",
    "presence_stats",
    "history",
    "history_remove",
    "channels",
    "connections",
    "info",
    "rpc",
    "batch",
];

/// Whether `method` is one of [`METHODS`] or [`map::METHODS`].
pub fn is_method(method: &str) -> bool {
    METHODS.contains(&method) || map::METHODS.contains(&method)
}

/// Parses the body of `POST /api/<method>`. An empty (or blank) body means `{}`.
pub fn parse_request(method: &str, body: &[u8]) -> Result<ApiRequest, RequestError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
    Ok(match method {
        "publish" => ApiRequest::Publish(params(body)?),
        "broadcast" => ApiRequest::Broadcast(params(body)?),
        "subscribe" => ApiRequest::Subscribe(params(body)?),
        "unsubscribe" => ApiRequest::Unsubscribe(params(body)?),
        "disconnect" => ApiRequest::Disconnect(params(body)?),
        "refresh" => ApiRequest::Refresh(params(body)?),
        "presence" => ApiRequest::Presence(params(body)?),
        "presence_stats" => ApiRequest::PresenceStats(params(body)?),
        "history" => ApiRequest::History(params(body)?),
        "history_remove" => ApiRequest::HistoryRemove(params(body)?),
        "channels" => ApiRequest::Channels(params::<Option<ChannelsParams>>(body)?.unwrap_or_default()),
        "connections" => ApiRequest::Connections(params(body)?),
        "info" => {
            check_json(body)?;
            ApiRequest::Info
        }
        "batch" => ApiRequest::Batch(params(body)?),
        // Through the RPC proxy (108 without one, as Centrifugo answers).
        "rpc" => ApiRequest::Rpc(params(body)?),
        _ => match map::parse(method, body) {
            Some(r) => ApiRequest::Map(r?),
            None => {
                check_json(body)?;
                return Err(ApiError::MethodNotFound.into());
            }
        },
    })
}

fn publication_json(p: &Publication) -> Value {
    serde_json::to_value(p).unwrap_or(Value::Null)
}

fn info_json(i: &ClientInfo) -> Value {
    serde_json::to_value(i).unwrap_or(Value::Null)
}

/// wshub has no connection sessions apart from clients: a call narrowed by `session` is
/// refused (107) rather than carried out on every connection of the user, which is what
/// ignoring the field would do.
fn no_session(session: &str) -> Result<(), ApiError> {
    if session.is_empty() {
        Ok(())
    } else {
        Err(ApiError::bad_request("session is not supported: narrow by client"))
    }
}

/// Runs one API call (not a batch); `Ok` is the `result` object.
pub async fn call(cluster: &Arc<Cluster>, request: ApiRequest) -> Result<Value, ApiError> {
    let node = &cluster.node;
    match request {
        ApiRequest::Rpc(p) => {
            let data = p.params.map(|r| Bytes::copy_from_slice(r.get().as_bytes())).unwrap_or_default();
            let out = node.api_rpc(&p.method, data).await?;
            let data: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
            Ok(if out.is_empty() { json!({}) } else { json!({ "data": data }) })
        }
        ApiRequest::Publish(mut p) => {
            let tags = std::mem::take(&mut p.tags);
            let (data, key) = p.payload()?;
            Ok(position(
                node.publish_with_delta(&p.channel, data, None, p.skip_history, tags, key, p.delta)
                    .await?,
            ))
        }
        ApiRequest::Broadcast(p) => {
            if p.channels.is_empty() {
                return Err(ApiError::bad_request("channels required"));
            }
            let (data, key) = p.payload()?;
            let mut responses = Vec::with_capacity(p.channels.len());
            for ch in &p.channels {
                let published = node
                    .publish_with_delta(ch, data.clone(), None, p.skip_history, p.tags.clone(), key, p.delta)
                    .await;
                responses.push(match published {
                    Ok(sp) => json!({"result": position(sp)}),
                    Err(e) => json!({"error": error_json(&e)}),
                });
            }
            Ok(json!({"responses": responses}))
        }
        ApiRequest::Subscribe(p) => {
            no_session(&p.session)?;
            cluster.subscribe(&p.user, &p.channel, &p.client).await?;
            Ok(json!({}))
        }
        ApiRequest::Unsubscribe(p) => {
            no_session(&p.session)?;
            cluster.unsubscribe(&p.user, &p.channel, &p.client).await?;
            Ok(json!({}))
        }
        ApiRequest::Disconnect(p) => {
            no_session(&p.session)?;
            let (code, reason) = match p.disconnect {
                Some(d) => (d.code, d.reason),
                None => (wshub_protocol::codes::disconnect::FORCE_DISCONNECT, "force disconnect".to_string()),
            };
            if !(3000..=4999).contains(&code) {
                return Err(ApiError::bad_request("disconnect code must be in 3000..4999"));
            }
            cluster.disconnect(&p.user, &p.client, &p.whitelist, code, &reason).await?;
            Ok(json!({}))
        }
        ApiRequest::Refresh(p) => {
            no_session(&p.session)?;
            if p.expired {
                cluster
                    .disconnect(
                        &p.user,
                        &p.client,
                        &[],
                        wshub_protocol::codes::disconnect::EXPIRED,
                        "connection expired",
                    )
                    .await?;
            } else {
                cluster
                    .refresh(&p.user, &p.client, (p.expire_at > 0).then_some(p.expire_at))
                    .await?;
            }
            Ok(json!({}))
        }
        ApiRequest::Presence(p) => {
            let presence = node.presence(&p.channel).await?;
            let m: serde_json::Map<String, Value> = presence.iter().map(|(k, v)| (k.clone(), info_json(v))).collect();
            Ok(json!({"presence": m}))
        }
        ApiRequest::PresenceStats(p) => {
            let (c, u) = node.presence_stats(&p.channel).await?;
            Ok(json!({"num_clients": c, "num_users": u}))
        }
        ApiRequest::History(p) => {
            let q = HistoryQuery {
                since: p.since.map(|s| StreamPosition {
                    offset: s.offset,
                    epoch: s.epoch,
                }),
                limit: p.limit,
                reverse: p.reverse,
                ..Default::default()
            };
            let h = node.history(&p.channel, q).await?;
            Ok(json!({
                "publications": h.publications.iter().map(publication_json).collect::<Vec<_>>(),
                "epoch": h.position.epoch,
                "offset": h.position.offset,
            }))
        }
        ApiRequest::HistoryRemove(p) => {
            node.history_remove(&p.channel).await?;
            Ok(json!({}))
        }
        ApiRequest::Channels(p) => {
            // Every node's channels (a survey through the engine), subscribers summed.
            let m: serde_json::Map<String, Value> = cluster
                .channels(&p.pattern)
                .await?
                .into_iter()
                .map(|(c, n)| (c, json!({"num_clients": n})))
                .collect();
            Ok(json!({"channels": m}))
        }
        ApiRequest::Connections(p) => {
            if p.user.is_empty() {
                return Err(ApiError::bad_request("user required"));
            }
            let m: serde_json::Map<String, Value> = cluster
                .connections(&p.user)
                .await?
                .into_iter()
                .map(|(node, c)| {
                    let v = json!({
                        "user": c.user, "transport": c.transport, "protocol": c.protocol, "node": node,
                        // Centrifugo PRO's shape (`ConnectionState.channels`), which the
                        // gRPC API's `ConnectionInfo` carries too.
                        "state": {"channels": c.channels.iter().map(|ch| (ch.clone(), json!({}))).collect::<serde_json::Map<_, _>>()},
                    });
                    (c.client, v)
                })
                .collect();
            Ok(json!({"connections": m}))
        }
        ApiRequest::Info => {
            let nodes: Vec<Value> = cluster
                .nodes()
                .into_iter()
                .map(|i| {
                    let mut v = json!({
                        "uid": i.uid, "name": i.name, "version": i.version, "num_clients": i.num_clients,
                        "num_users": i.num_users, "num_channels": i.num_channels, "num_subs": i.num_subs, "uptime": i.uptime,
                    });
                    // Centrifugo's `metrics` and `process` objects, absent until known.
                    if let Some(m) = i.metrics {
                        v["metrics"] = json!({"interval": m.interval, "items": m.items});
                    }
                    if let Some(p) = i.process {
                        v["process"] = json!({"cpu": p.cpu, "rss": p.rss});
                    }
                    v
                })
                .collect();
            Ok(json!({ "nodes": nodes }))
        }
        ApiRequest::Map(m) => map::call(node, m).await,
        ApiRequest::Batch(_) => Err(ApiError::bad_request("nested batch")),
    }
}

/// `batch`: `{"commands": [{"publish": {...}}, ...], "parallel": bool}`; each reply keyed by
/// its method name (`{}` when empty), or `{"error": ...}`.
pub async fn batch(cluster: &Arc<Cluster>, p: BatchParams, protocol: &'static str) -> Value {
    let mut replies = Vec::with_capacity(p.commands.len());
    for cmd in p.commands {
        let Some((method, raw)) = cmd.into_iter().next() else {
            replies.push(json!({"error": {"code": ec::BAD_REQUEST, "message": "empty command"}}));
            continue;
        };
        let r = match parse_request(&method, raw.get().as_bytes()) {
            Ok(req) => call(cluster, req).await,
            Err(RequestError::Api(e)) => Err(e),
            Err(e @ RequestError::NotJson(_)) => Err(bad(e)),
        };
        replies.push(match r {
            Ok(v) => json!({ method: v }),
            Err(e) => {
                crate::metrics::centrifugo::api_error(protocol, &method, e.code());
                json!({"error": error_json(&e)})
            }
        });
    }
    json!({"replies": replies})
}

/// The `error` object of an answer: `{"code", "message"}`, as Centrifugo's JSON API writes it.
pub fn error_json(e: &ApiError) -> Value {
    json!({"code": e.code(), "message": e.message()})
}

/// The HTTP status of an error in the transport error mode (Centrifugo's
/// `MapErrorToHTTPCode`): codes it does not map are 500, as there.
pub fn http_status(code: u32) -> http::StatusCode {
    use http::StatusCode as S;
    use wshub_protocol::codes::error as ec;
    match code {
        ec::UNKNOWN_CHANNEL | ec::METHOD_NOT_FOUND => S::NOT_FOUND,
        ec::BAD_REQUEST | ec::NOT_AVAILABLE => S::BAD_REQUEST,
        ec::UNRECOVERABLE_POSITION => S::RANGE_NOT_SATISFIABLE,
        // 113: Centrifugo's API names it "conflict" (a conditional write that lost).
        ec::CONCURRENT_PAGINATION => S::CONFLICT,
        _ => S::INTERNAL_SERVER_ERROR,
    }
}

/// The response body of a call.
pub fn envelope(r: Result<Value, ApiError>) -> Value {
    match r {
        Ok(v) => json!({"result": v}),
        Err(e) => json!({"error": error_json(&e)}),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn headers(name: &str, value: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        h
    }

    #[test]
    fn key_accepted_only_when_equal() {
        let key = "s3cret-key";
        assert!(authorized(&headers("x-api-key", key), key, false));
        assert!(authorized(&headers("authorization", "apikey s3cret-key"), key, false));
        for wrong in [
            "s3cret-kez",
            "S3cret-key",
            "s3cret-ke",
            "s3cret-key!",
            "",
            "x",
            &"s3cret-key".repeat(10),
        ] {
            assert!(!authorized(&headers("x-api-key", wrong), key, false), "{wrong:?}");
            assert!(
                !authorized(&headers("authorization", &format!("apikey {wrong}")), key, false),
                "{wrong:?}"
            );
        }
        assert!(!authorized(&http::HeaderMap::new(), key, false), "no header");
        assert!(!authorized(&headers("x-api-key", ""), "", false), "empty key refuses every call");
        assert!(authorized(&http::HeaderMap::new(), "", true), "insecure");
    }

    fn code(r: Result<ApiRequest, RequestError>) -> u32 {
        match r {
            Err(RequestError::Api(e)) => e.code(),
            other => panic!("expected an API error, got {other:?}"),
        }
    }

    #[test]
    fn parse_request_answers() {
        assert!(matches!(parse_request("info", b""), Ok(ApiRequest::Info)), "empty body is {{}}");
        assert!(matches!(parse_request("channels", b" \n"), Ok(ApiRequest::Channels(_))));
        assert!(matches!(parse_request("channels", b"null"), Ok(ApiRequest::Channels(_))));
        match parse_request("publish", br#"{"channel":"a","data":{"x":[1,2]}}"#).unwrap() {
            ApiRequest::Publish(p) => {
                assert_eq!(p.channel, "a");
                assert_eq!(p.data.unwrap().get(), r#"{"x":[1,2]}"#);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse_request("publish", b"{not json"), Err(RequestError::NotJson(_))));
        // A data error early in a body that is not JSON further on is still "not JSON".
        assert!(matches!(
            parse_request("publish", br#"{"channel": 5, oops"#),
            Err(RequestError::NotJson(_))
        ));
        assert!(matches!(parse_request("frobnicate", b"{oops"), Err(RequestError::NotJson(_))));
        assert_eq!(code(parse_request("publish", br#"{"channel": 5, "data": {}}"#)), ec::BAD_REQUEST);
        assert_eq!(code(parse_request("publish", b"[0,0,0,0]")), ec::BAD_REQUEST);
        assert_eq!(code(parse_request("batch", br#"{"commands": 5}"#)), ec::BAD_REQUEST);
        assert_eq!(code(parse_request("frobnicate", b"{}")), ec::METHOD_NOT_FOUND);
        // Without an RPC proxy the call itself answers 108 (tests/node_bad_input.rs).
        assert!(matches!(
            parse_request("rpc", br#"{"method":"x","params":{}}"#),
            Ok(ApiRequest::Rpc(_))
        ));
        let b = parse_request(
            "batch",
            br#"{"commands": [{"info": {}}, {"publish": {"channel": "a", "data": 1}}]}"#,
        )
        .unwrap();
        assert!(b.publishes());
        assert!(!parse_request("batch", br#"{"commands": [{"info": {}}]}"#).unwrap().publishes());
        assert!(parse_request("broadcast", br#"{"channels": ["a"], "data": 1}"#)
            .unwrap()
            .publishes());
        assert!(!parse_request("history", br#"{"channel": "a"}"#).unwrap().publishes());
        // Nesting deeper than serde_json's recursion limit is refused, not a stack overflow.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse_request("publish", deep.as_bytes()).is_err());
        assert!(parse_request("frobnicate", deep.as_bytes()).is_err());
    }
}
