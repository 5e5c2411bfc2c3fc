//! The HTTP server API (PROTOCOL.md, "HTTP server API"): `POST /api/<method>`.
//!
//! Authentication by `X-API-Key: KEY` or `Authorization: apikey KEY` (wrong or missing:
//! 401, empty body). A body that is not JSON: 400. Otherwise 200 with `{"result": ...}` or
//! `{"error": {"code", "message"}}`; bad params are error 107.

use std::collections::HashMap;

use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, value::RawValue, Value};
use wshub_core::engine::{HistoryQuery, StreamPosition};
use wshub_core::node::{ApiError, Node};
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
    // Constant-time comparison: the key is a secret.
    given.is_some_and(|g| g.len() == key.len() && g.bytes().zip(key.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0)
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(&format!("bad request: {e}"))
}

fn params<T: for<'de> Deserialize<'de>>(v: Value) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(bad)
}

#[derive(Deserialize)]
struct PublishParams {
    channel: String,
    data: Option<Box<RawValue>>,
    #[serde(default)]
    b64data: String,
    #[serde(default)]
    skip_history: bool,
    #[serde(default)]
    tags: HashMap<String, String>,
    #[serde(default)]
    #[allow(dead_code)]
    idempotency_key: String,
}

#[derive(Deserialize)]
struct BroadcastParams {
    channels: Vec<String>,
    data: Option<Box<RawValue>>,
    #[serde(default)]
    b64data: String,
    #[serde(default)]
    skip_history: bool,
    #[serde(default)]
    tags: HashMap<String, String>,
}

fn data_bytes(data: Option<Box<RawValue>>, b64: &str) -> Result<Bytes, ApiError> {
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

#[derive(Deserialize)]
struct UserChannel {
    user: String,
    channel: String,
    #[serde(default)]
    client: String,
}

#[derive(Deserialize)]
struct DisconnectParams {
    user: String,
    #[serde(default)]
    client: String,
    #[serde(default)]
    whitelist: Vec<String>,
    disconnect: Option<DisconnectObj>,
}

#[derive(Deserialize)]
struct DisconnectObj {
    code: u16,
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
struct RefreshParams {
    user: String,
    #[serde(default)]
    client: String,
    #[serde(default)]
    expired: bool,
    #[serde(default)]
    expire_at: u64,
}

#[derive(Deserialize)]
struct ChannelParam {
    channel: String,
}

#[derive(Deserialize)]
struct HistoryParams {
    channel: String,
    #[serde(default)]
    limit: i64,
    since: Option<SinceParam>,
    #[serde(default)]
    reverse: bool,
}

#[derive(Deserialize)]
struct SinceParam {
    #[serde(default)]
    offset: u64,
    #[serde(default)]
    epoch: String,
}

#[derive(Deserialize, Default)]
struct ChannelsParams {
    #[serde(default)]
    pattern: String,
}

fn publication_json(p: &Publication) -> Value {
    serde_json::to_value(p).unwrap_or(Value::Null)
}

fn info_json(i: &ClientInfo) -> Value {
    serde_json::to_value(i).unwrap_or(Value::Null)
}

/// Runs one API method; `Ok` is the `result` object.
pub async fn call(node: &Node, method: &str, p: Value) -> Result<Value, ApiError> {
    match method {
        "publish" => {
            let p: PublishParams = params(p)?;
            let data = data_bytes(p.data, &p.b64data)?;
            Ok(position(node.publish(&p.channel, data, None, p.skip_history, p.tags).await?))
        }
        "broadcast" => {
            let p: BroadcastParams = params(p)?;
            if p.channels.is_empty() {
                return Err(ApiError::bad_request("channels required"));
            }
            let data = data_bytes(p.data, &p.b64data)?;
            let mut responses = Vec::with_capacity(p.channels.len());
            for ch in &p.channels {
                responses.push(match node.publish(ch, data.clone(), None, p.skip_history, p.tags.clone()).await {
                    Ok(sp) => json!({"result": position(sp)}),
                    Err(e) => json!({"error": {"code": e.code, "message": e.message}}),
                });
            }
            Ok(json!({"responses": responses}))
        }
        "subscribe" => {
            let p: UserChannel = params(p)?;
            node.subscribe_user(&p.user, &p.channel, &p.client)?;
            Ok(json!({}))
        }
        "unsubscribe" => {
            let p: UserChannel = params(p)?;
            node.unsubscribe_user(&p.user, &p.channel, &p.client)?;
            Ok(json!({}))
        }
        "disconnect" => {
            let p: DisconnectParams = params(p)?;
            let (code, reason) = match p.disconnect {
                Some(d) => (d.code, d.reason),
                None => (wshub_protocol::codes::disconnect::FORCE_DISCONNECT, "force disconnect".to_string()),
            };
            if !(3000..=4999).contains(&code) {
                return Err(ApiError::bad_request("disconnect code must be in 3000..4999"));
            }
            node.disconnect_user(&p.user, &p.client, &p.whitelist, code, &reason);
            Ok(json!({}))
        }
        "refresh" => {
            let p: RefreshParams = params(p)?;
            if p.expired {
                node.disconnect_user(
                    &p.user,
                    &p.client,
                    &[],
                    wshub_protocol::codes::disconnect::EXPIRED,
                    "connection expired",
                );
            } else {
                node.refresh_user(&p.user, &p.client, (p.expire_at > 0).then_some(p.expire_at));
            }
            Ok(json!({}))
        }
        "presence" => {
            let p: ChannelParam = params(p)?;
            let presence = node.presence(&p.channel).await?;
            let m: serde_json::Map<String, Value> = presence.iter().map(|(k, v)| (k.clone(), info_json(v))).collect();
            Ok(json!({"presence": m}))
        }
        "presence_stats" => {
            let p: ChannelParam = params(p)?;
            let (c, u) = node.presence_stats(&p.channel).await?;
            Ok(json!({"num_clients": c, "num_users": u}))
        }
        "history" => {
            let p: HistoryParams = params(p)?;
            let q = HistoryQuery {
                since: p.since.map(|s| StreamPosition {
                    offset: s.offset,
                    epoch: s.epoch,
                }),
                limit: p.limit,
                reverse: p.reverse,
            };
            let h = node.history(&p.channel, q).await?;
            Ok(json!({
                "publications": h.publications.iter().map(publication_json).collect::<Vec<_>>(),
                "epoch": h.position.epoch,
                "offset": h.position.offset,
            }))
        }
        "history_remove" => {
            let p: ChannelParam = params(p)?;
            node.history_remove(&p.channel).await?;
            Ok(json!({}))
        }
        "channels" => {
            let p: ChannelsParams = if p.is_null() { ChannelsParams::default() } else { params(p)? };
            let m: serde_json::Map<String, Value> = node
                .channels(&p.pattern)?
                .into_iter()
                .map(|(c, n)| (c, json!({"num_clients": n})))
                .collect();
            Ok(json!({"channels": m}))
        }
        "info" => {
            let i = node.info();
            Ok(json!({"nodes": [{
                "uid": i.uid, "name": i.name, "version": i.version, "num_clients": i.num_clients,
                "num_users": i.num_users, "num_channels": i.num_channels, "num_subs": i.num_subs, "uptime": i.uptime,
            }]}))
        }
        _ => Err(ApiError::new(ec::METHOD_NOT_FOUND, "method not found")),
    }
}

/// `batch`: `{"commands": [{"publish": {...}}, ...], "parallel": bool}`; each reply keyed by
/// its method name (`{}` when empty), or `{"error": ...}`.
pub async fn batch(node: &Node, p: Value) -> Result<Value, ApiError> {
    #[derive(Deserialize)]
    struct BatchParams {
        commands: Vec<serde_json::Map<String, Value>>,
    }
    let p: BatchParams = params(p)?;
    let mut replies = Vec::with_capacity(p.commands.len());
    for cmd in p.commands {
        let Some((method, params)) = cmd.into_iter().next() else {
            replies.push(json!({"error": {"code": ec::BAD_REQUEST, "message": "empty command"}}));
            continue;
        };
        let r = if method == "batch" {
            Err(ApiError::bad_request("nested batch"))
        } else {
            call(node, &method, params).await
        };
        replies.push(match r {
            Ok(v) => json!({ method: v }),
            Err(e) => json!({"error": {"code": e.code, "message": e.message}}),
        });
    }
    Ok(json!({"replies": replies}))
}

/// The response body of a call.
pub fn envelope(r: Result<Value, ApiError>) -> Value {
    match r {
        Ok(v) => json!({"result": v}),
        Err(e) => json!({"error": {"code": e.code, "message": e.message}}),
    }
}
