//! The server API's map methods (Centrifugo 6.8's `map_*`), over the node's map
//! operations (`wshub_core::subscription::map::ops`). Each method's parameters and
//! result keep Centrifugo's names.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{json, value::RawValue, Value};
use wshub_core::engine::StreamPosition;
use wshub_core::node::{ApiError, Node};
use wshub_core::subscription::map::broker::{MapUpdate, StateQuery};
use wshub_core::subscription::map::ops::MapPublish;
use wshub_core::subscription::map::state::KeyMode;
use wshub_protocol::Publication;

use super::{data_bytes, idempotency_key, params, RequestError};

/// The map methods, as their paths name them.
pub const METHODS: &[&str] = &[
    "map_publish",
    "map_remove",
    "map_read_state",
    "map_read_stream",
    "map_stats",
    "map_clear",
];

#[derive(Debug, Deserialize)]
pub struct PublishParams {
    pub channel: String,
    pub key: String,
    pub data: Option<Box<RawValue>>,
    #[serde(default)]
    pub b64data: String,
    #[serde(default)]
    pub tags: HashMap<String, String>,
    #[serde(default)]
    pub idempotency_key: String,
    /// Delta subscribers get it as a delta against the key's previous data.
    #[serde(default)]
    pub delta: bool,
    /// `""`, `"if_new"` or `"if_exists"`.
    #[serde(default)]
    pub key_mode: String,
}

#[derive(Debug, Deserialize)]
pub struct RemoveParams {
    pub channel: String,
    pub key: String,
    #[serde(default)]
    pub idempotency_key: String,
}

#[derive(Debug, Deserialize)]
pub struct ReadStateParams {
    pub channel: String,
    #[serde(default)]
    pub cursor: String,
    #[serde(default)]
    pub limit: i32,
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub revision_offset: u64,
    #[serde(default)]
    pub revision_epoch: String,
}

#[derive(Debug, Deserialize)]
pub struct ReadStreamParams {
    pub channel: String,
    #[serde(default)]
    pub since_offset: u64,
    #[serde(default)]
    pub since_epoch: String,
    #[serde(default)]
    pub limit: i32,
    #[serde(default)]
    pub reverse: bool,
}

#[derive(Debug, Deserialize)]
pub struct ChannelParam {
    pub channel: String,
}

/// One map call, its parameters typed.
#[derive(Debug)]
pub enum MapRequest {
    Publish(PublishParams),
    Remove(RemoveParams),
    ReadState(ReadStateParams),
    ReadStream(ReadStreamParams),
    Stats(ChannelParam),
    Clear(ChannelParam),
}

impl MapRequest {
    /// Whether the call writes (a draining node on the memory engine refuses those).
    pub fn publishes(&self) -> bool {
        matches!(self, MapRequest::Publish(_) | MapRequest::Remove(_))
    }
}

/// `None`: not a map method.
pub fn parse(method: &str, body: &[u8]) -> Option<Result<MapRequest, RequestError>> {
    Some(match method {
        "map_publish" => params(body).map(MapRequest::Publish),
        "map_remove" => params(body).map(MapRequest::Remove),
        "map_read_state" => params(body).map(MapRequest::ReadState),
        "map_read_stream" => params(body).map(MapRequest::ReadStream),
        "map_stats" => params(body).map(MapRequest::Stats),
        "map_clear" => params(body).map(MapRequest::Clear),
        _ => return None,
    })
}

fn update(u: MapUpdate) -> Value {
    let mut v = json!({});
    if u.position.offset > 0 {
        v["offset"] = json!(u.position.offset);
    }
    if !u.position.epoch.is_empty() {
        v["epoch"] = json!(u.position.epoch);
    }
    if let Some(reason) = u.suppressed {
        v["suppressed"] = json!(true);
        v["suppress_reason"] = json!(reason);
    }
    v
}

/// A `MapEntry`: the entry's data is embedded JSON when it is JSON, as publications are.
fn entry(p: Publication) -> Value {
    let mut v = json!({ "key": p.key });
    if !p.data.is_empty() {
        v["data"] = serde_json::from_slice(&p.data).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&p.data).into()));
    }
    if !p.tags.is_empty() {
        v["tags"] = json!(p.tags);
    }
    if p.offset > 0 {
        v["offset"] = json!(p.offset);
    }
    if p.removed {
        v["removed"] = json!(true);
    }
    if p.time != 0 {
        v["time"] = json!(p.time);
    }
    v
}

fn with_position(mut v: Value, position: &StreamPosition) -> Value {
    if position.offset > 0 {
        v["offset"] = json!(position.offset);
    }
    if !position.epoch.is_empty() {
        v["epoch"] = json!(position.epoch);
    }
    v
}

/// -1 (or any negative): everything; 0: the position only.
fn read_limit(limit: i32) -> i64 {
    i64::from(limit)
}

pub async fn call(node: &Node, request: MapRequest) -> Result<Value, ApiError> {
    match request {
        MapRequest::Publish(p) => {
            let key_mode = match p.key_mode.as_str() {
                "" => KeyMode::Any,
                "if_new" => KeyMode::IfNew,
                "if_exists" => KeyMode::IfExists,
                _ => return Err(ApiError::bad_request("bad request: key_mode must be \"if_new\" or \"if_exists\"")),
            };
            let w = MapPublish {
                key: p.key,
                data: data_bytes(p.data, &p.b64data)?,
                info: None,
                tags: p.tags,
                idempotency_key: idempotency_key(&p.idempotency_key)?.map(str::to_string),
                key_mode,
                delta: p.delta,
            };
            Ok(update(node.map_publish(&p.channel, w).await?))
        }
        MapRequest::Remove(p) => {
            let key = idempotency_key(&p.idempotency_key)?.map(str::to_string);
            Ok(update(node.map_remove(&p.channel, &p.key, key, HashMap::new()).await?))
        }
        MapRequest::ReadState(p) => {
            let query = StateQuery {
                cursor: p.cursor,
                limit: usize::try_from(p.limit).unwrap_or(usize::MAX),
                key: (!p.key.is_empty()).then_some(p.key),
                revision: (p.revision_offset > 0 || !p.revision_epoch.is_empty()).then_some(StreamPosition {
                    offset: p.revision_offset,
                    epoch: p.revision_epoch,
                }),
            };
            let page = node.map_read_state(&p.channel, query).await?;
            let entries: Vec<Value> = page.entries.into_iter().map(entry).collect();
            let mut v = with_position(json!({ "entries": entries }), &page.position);
            if !page.cursor.is_empty() {
                v["cursor"] = json!(page.cursor);
            }
            Ok(v)
        }
        MapRequest::ReadStream(p) => {
            let since = (p.since_offset > 0 || !p.since_epoch.is_empty()).then_some(StreamPosition {
                offset: p.since_offset,
                epoch: p.since_epoch,
            });
            let (pubs, top) = node.map_read_stream(&p.channel, since, read_limit(p.limit), p.reverse).await?;
            let entries: Vec<Value> = pubs.into_iter().map(entry).collect();
            Ok(with_position(json!({ "entries": entries }), &top))
        }
        MapRequest::Stats(p) => Ok(json!({ "num_keys": node.map_stats(&p.channel).await? })),
        MapRequest::Clear(p) => {
            node.map_clear(&p.channel).await?;
            Ok(json!({}))
        }
    }
}
