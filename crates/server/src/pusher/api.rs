//! Pusher's HTTP API under `/apps/{id}/`, signed as Pusher's server SDKs sign it:
//! `auth_signature = hex(HMAC-SHA256(secret, METHOD \n path \n sorted query))` over the
//! other query parameters (`auth_key`, `auth_timestamp`, `auth_version`, `body_md5` of a
//! body). A wrong key or signature is 401, a timestamp more than [`MAX_SKEW`] away 401.
//!
//! Events are published through the broker like any publication ([`wshub_core::pusher`]
//! says how), so that they reach Pusher and Centrifugo subscribers on every node; channel
//! queries ask every node (`channels`) and the engine's presence.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use md5::{Digest, Md5};
use serde::Deserialize;
use serde_json::{json, Value};
use wshub_core::node::Node;
use wshub_core::pusher::{publication_data, EVENT_TAG};
use wshub_protocol::{ClientInfo, Publication};

use super::{valid_channel, Apps, PusherApp};
use crate::cluster::Cluster;
use crate::response::{json_response, text, Body};

/// How far a request's `auth_timestamp` may be from the server's clock (Pusher's).
pub const MAX_SKEW: Duration = Duration::from_secs(600);
/// The largest body read.
const MAX_BODY: usize = 1 << 20;
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// The close code of `terminate_connections` (the client must not reconnect as it is).
const TERMINATED: u16 = super::session::code::UNAUTHORIZED;

/// What the API reaches.
pub struct PusherApi {
    pub apps: Arc<Apps>,
    pub node: Arc<Node>,
    pub cluster: Arc<Cluster>,
}

#[derive(Deserialize)]
struct Event {
    name: String,
    data: Value,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    socket_id: Option<String>,
}

#[derive(Deserialize)]
struct Batch {
    batch: Vec<Event>,
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    text(status, message)
}

/// Answers a request under `/apps/`.
pub async fn handle(req: Request<Incoming>, api: &PusherApi) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let method = req.method().clone();
    let parts: Vec<&str> = path.trim_start_matches("/apps/").split('/').collect();
    let Some(app) = parts.first().and_then(|id| api.apps.by_id(id)).cloned() else {
        return error(StatusCode::NOT_FOUND, "unknown app");
    };
    let body = if method == Method::POST {
        match crate::body::read(req.into_body(), MAX_BODY, Some(BODY_TIMEOUT)).await {
            Ok(b) => b,
            Err(e) => return e.response(crate::body::READ_TIMEOUT_KEY),
        }
    } else {
        Bytes::new()
    };
    let params = parse_query(&query);
    if let Err(why) = check_signature(&app, method.as_str(), &path, &params, &body, now_unix()) {
        return error(StatusCode::UNAUTHORIZED, why);
    }
    let param = |k: &str| params.iter().find(|(p, _)| p == k).map(|(_, v)| v.as_str());
    match (&method, &parts[1..]) {
        (&Method::POST, ["events"]) => match serde_json::from_slice::<Event>(&body) {
            Ok(e) => match publish(api, &app, e).await {
                Ok(()) => json_response(&json!({})),
                Err((status, why)) => error(status, &why),
            },
            Err(e) => error(StatusCode::BAD_REQUEST, &format!("bad event: {e}")),
        },
        (&Method::POST, ["batch_events"]) => match serde_json::from_slice::<Batch>(&body) {
            Ok(b) if app.limits.max_batch_size > 0 && b.batch.len() > app.limits.max_batch_size => {
                error(StatusCode::BAD_REQUEST, "too many events in the batch")
            }
            Ok(b) => {
                for e in b.batch {
                    if let Err((status, why)) = publish(api, &app, e).await {
                        return error(status, &why);
                    }
                }
                json_response(&json!({ "batch": [] }))
            }
            Err(e) => error(StatusCode::BAD_REQUEST, &format!("bad batch: {e}")),
        },
        (&Method::GET, ["channels"]) => channels(api, &app, param("filter_by_prefix").unwrap_or(""), param("info")).await,
        (&Method::GET, ["channels", name]) => channel(api, &app, name, param("info")).await,
        (&Method::GET, ["channels", name, "users"]) => users(api, &app, name).await,
        (&Method::POST, ["users", user, "terminate_connections"]) => {
            let key = format!("{}{user}", app.channel_prefix);
            match api.cluster.disconnect(&key, "", &[], TERMINATED, "terminated").await {
                Ok(()) => json_response(&json!({})),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.message()),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

/// A refused event: the status and why.
type Refused = (StatusCode, String);

async fn publish(api: &PusherApi, app: &PusherApp, e: Event) -> Result<(), Refused> {
    let bad = |m: &str| Err((StatusCode::BAD_REQUEST, m.to_string()));
    let mut channels = e.channels;
    channels.extend(e.channel);
    if channels.is_empty() {
        return bad("no channel");
    }
    if app.limits.max_channels_per_event > 0 && channels.len() > app.limits.max_channels_per_event {
        return bad("too many channels");
    }
    if e.name.len() > 200 {
        return bad("event name too long");
    }
    let data = match e.data {
        Value::String(s) => s,
        other => other.to_string(),
    };
    if app.limits.max_event_size > 0 && data.len() > app.limits.max_event_size {
        return Err((StatusCode::PAYLOAD_TOO_LARGE, "event data too large".into()));
    }
    let (bytes, string_tag) = publication_data(&data);
    let mut tags: std::collections::HashMap<String, String> = [(EVENT_TAG.to_string(), e.name)].into_iter().collect();
    if let Some((k, v)) = string_tag {
        tags.insert(k.into(), v.into());
    }
    // The excluded socket is the publication's client: Pusher subscribers skip their own.
    let info = e.socket_id.filter(|s| !s.is_empty()).map(|s| ClientInfo {
        client: s,
        ..Default::default()
    });
    for name in &channels {
        if !valid_channel(name) {
            return bad("invalid channel name");
        }
    }
    for name in channels {
        let publication = Publication {
            data: bytes.clone(),
            tags: tags.clone(),
            info: info.clone(),
            ..Default::default()
        };
        let ch = app.hub_channel(&name);
        if let Err(e) = api.node.broker.publish(&ch, publication, &super::publish_options(&name)).await {
            return Err((StatusCode::INTERNAL_SERVER_ERROR, e.to_string()));
        }
    }
    Ok(())
}

async fn channels(api: &PusherApi, app: &PusherApp, prefix: &str, info: Option<&str>) -> Response<Body> {
    let user_count = info.is_some_and(|i| i.split(',').any(|x| x == "user_count"));
    if user_count && !prefix.starts_with("presence-") {
        return error(StatusCode::BAD_REQUEST, "user_count needs filter_by_prefix=presence-");
    }
    let pattern = format!("{}*", app.hub_channel(prefix));
    let all = match api.cluster.channels(&pattern).await {
        Ok(c) => c,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.message()),
    };
    let mut out = serde_json::Map::new();
    for ch in all.keys() {
        let Some(name) = app.pusher_channel(ch) else { continue };
        let mut attrs = serde_json::Map::new();
        if user_count {
            attrs.insert("user_count".into(), user_count_of(api, ch).await.into());
        }
        out.insert(name.to_string(), Value::Object(attrs));
    }
    json_response(&json!({ "channels": out }))
}

async fn user_count_of(api: &PusherApi, ch: &str) -> u32 {
    api.node.presence.presence_stats(ch).await.map_or(0, |(_, users)| users)
}

async fn channel(api: &PusherApi, app: &PusherApp, name: &str, info: Option<&str>) -> Response<Body> {
    if !valid_channel(name) {
        return error(StatusCode::BAD_REQUEST, "invalid channel name");
    }
    let ch = app.hub_channel(name);
    let subs = match api.cluster.channels(&ch).await {
        Ok(c) => c.get(&ch).copied().unwrap_or(0),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.message()),
    };
    let mut out = serde_json::Map::new();
    out.insert("occupied".into(), (subs > 0).into());
    let wants = |k: &str| info.is_some_and(|i| i.split(',').any(|x| x == k));
    if wants("subscription_count") {
        out.insert("subscription_count".into(), subs.into());
    }
    if wants("user_count") {
        if !name.starts_with("presence-") {
            return error(StatusCode::BAD_REQUEST, "user_count is for presence channels");
        }
        out.insert("user_count".into(), user_count_of(api, &ch).await.into());
    }
    json_response(&Value::Object(out))
}

async fn users(api: &PusherApi, app: &PusherApp, name: &str) -> Response<Body> {
    if !name.starts_with("presence-") || !valid_channel(name) {
        return error(StatusCode::BAD_REQUEST, "users are listed for presence channels only");
    }
    let present = api.node.presence.presence(&app.hub_channel(name)).await.unwrap_or_default();
    let mut ids: Vec<&str> = present.values().map(|i| i.user.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let users: Vec<Value> = ids.into_iter().map(|id| json!({ "id": id })).collect();
    json_response(&json!({ "users": users }))
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The query's parameters, decoded, keys lower-cased (as Pusher signs them).
fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k).to_ascii_lowercase(), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let digit = |c: u8| (c as char).to_digit(16);
                match (digit(b[i + 1]), digit(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Pusher's request signature (see the module docs).
pub fn check_signature(
    app: &PusherApp,
    method: &str,
    path: &str,
    params: &[(String, String)],
    body: &[u8],
    now: u64,
) -> Result<(), &'static str> {
    let get = |k: &str| params.iter().find(|(p, _)| p == k).map(|(_, v)| v.as_str());
    if get("auth_key") != Some(app.key.as_str()) {
        return Err("unknown auth_key");
    }
    let ts: u64 = get("auth_timestamp").and_then(|t| t.parse().ok()).ok_or("no auth_timestamp")?;
    if ts.abs_diff(now) > MAX_SKEW.as_secs() {
        return Err("auth_timestamp is too far from the server's time");
    }
    if !body.is_empty() {
        let md5 = super::hex(&Md5::digest(body));
        if get("body_md5") != Some(md5.as_str()) {
            return Err("body_md5 does not match the body");
        }
    }
    let signature = get("auth_signature").ok_or("no auth_signature")?;
    let mut signed: BTreeMap<&str, &str> = BTreeMap::new();
    for (k, v) in params {
        if k != "auth_signature" {
            signed.insert(k, v);
        }
    }
    let query: Vec<String> = signed.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let message = format!("{method}\n{path}\n{}", query.join("&"));
    let expected = super::hmac_hex(&app.secret, message.as_bytes());
    use subtle::ConstantTimeEq;
    if expected.len() == signature.len() && bool::from(expected.as_bytes().ct_eq(signature.as_bytes())) {
        Ok(())
    } else {
        Err("invalid signature")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_signed_request_passes_and_a_changed_or_stale_one_does_not() {
        let app = PusherApp {
            id: "1".into(),
            key: "k".into(),
            secret: "s".into(),
            ..Default::default()
        };
        let body = br#"{"name":"e","channel":"c","data":"{}"}"#;
        let md5 = super::super::hex(&Md5::digest(body));
        let unsigned = format!("auth_key=k&auth_timestamp=1000&auth_version=1.0&body_md5={md5}");
        let message = format!("POST\n/apps/1/events\n{unsigned}");
        let sig = super::super::hmac_hex("s", message.as_bytes());
        let params = parse_query(&format!("{unsigned}&auth_signature={sig}"));
        assert_eq!(check_signature(&app, "POST", "/apps/1/events", &params, body, 1000), Ok(()));
        assert!(check_signature(&app, "POST", "/apps/1/events", &params, b"{}", 1000).is_err());
        assert!(check_signature(&app, "POST", "/apps/2/events", &params, body, 1000).is_err());
        assert!(check_signature(&app, "POST", "/apps/1/events", &params, body, 1000 + 601).is_err());
        assert_eq!(decode("a%20b+c%2"), "a b c%2");
    }
}
