//! The server API's keyed methods (Centrifugo 6.8's `map_*`, over the node's map
//! operations `wshub_core::subscription::map::ops`, and `shared_poll_publish`). Each
//! method's parameters and result keep Centrifugo's names.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{json, value::RawValue, Value};
use wshub_core::engine::StreamPosition;
use wshub_core::node::{ApiError, Node};
use wshub_core::subscription::map::broker::{MapUpdate, StateQuery};
use wshub_core::subscription::map::ops::MapPublish;
use wshub_core::subscription::map::state::KeyMode;
use wshub_protocol::Publication;

use super::{idempotency_key, params, RequestError};

/// The map methods, as their paths name them.
pub const METHODS: &[&str] = &[
    "map_publish",
    "map_remove",
    "map_read_state",
    "map_read_stream",
    "map_stats",
    "map_clear",
    "shared_poll_publish",
];

/// `shared_poll_publish`: a key's new version, to every node whose connections track it.
#[derive(Debug, Deserialize)]
pub struct SharedPollPublishParams {
    #[serde(default)]
    pub channel: String,
    #[serde(default)]
    pub key: String,
    pub data: Option<Box<RawValue>>,
    #[serde(default)]
    pub b64data: String,
    #[serde(default)]
    pub version: u64,
    #[serde(default)]
    pub epoch: String,
}

publishing_params! {
    /// `map_publish` parameters (a delta is against the key's previous data).
    PublishParams {
        channel: String,
        key: String,
        /// `""`, `"if_new"` or `"if_exists"`.
        #[serde(default)]
        key_mode: String,
        /// Not zero: written only if the key holds an older version (of `version_epoch`).
        #[serde(default)]
        version: u64,
        #[serde(default)]
        version_epoch: String,
    }
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
    SharedPollPublish(SharedPollPublishParams),
}

impl MapRequest {
    /// Whether the call writes (a draining node on the memory engine refuses those).
    pub fn publishes(&self) -> bool {
        matches!(
            self,
            MapRequest::Publish(_) | MapRequest::Remove(_) | MapRequest::SharedPollPublish(_)
        )
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
        "shared_poll_publish" => params(body).map(MapRequest::SharedPollPublish),
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
        MapRequest::SharedPollPublish(p) => {
            let data = crate::api::data_bytes(p.data.as_deref(), &p.b64data)?;
            node.shared_poll_publish(&p.channel, &p.key, p.version, &p.epoch, data).await?;
            Ok(json!({}))
        }
        MapRequest::Publish(mut p) => {
            let key_mode = match p.key_mode.as_str() {
                "" => KeyMode::Any,
                "if_new" => KeyMode::IfNew,
                "if_exists" => KeyMode::IfExists,
                _ => return Err(ApiError::bad_request("bad request: key_mode must be \"if_new\" or \"if_exists\"")),
            };
            let (key, tags) = (std::mem::take(&mut p.key), std::mem::take(&mut p.tags));
            let (data, idempotency_key) = p.payload()?;
            let w = MapPublish {
                key,
                data,
                info: None,
                tags,
                idempotency_key: idempotency_key.map(str::to_string),
                key_mode,
                delta: p.delta,
                version: p.version,
                version_epoch: p.version_epoch,
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use wshub_core::config::{ChannelOptions, Namespace, NodeConfig};
    use wshub_core::memory::MemoryEngine;
    use wshub_core::subscription::map::{MapOptions, Mode};
    use wshub_core::subscription::SubscriptionType;

    use super::*;
    use crate::api::{parse_request, ApiRequest};

    fn node() -> Arc<Node> {
        let mut cfg = NodeConfig::default();
        cfg.channel.namespaces.push(Namespace {
            name: "m".into(),
            options: ChannelOptions {
                subscription_type: SubscriptionType::Map,
                map: MapOptions {
                    mode: Mode::Persistent,
                    ..Default::default()
                },
                ..Default::default()
            },
        });
        Node::new(cfg, Arc::new(MemoryEngine::default())).unwrap()
    }

    async fn run(node: &Node, method: &str, body: &str) -> Result<Value, ApiError> {
        match parse_request(method, body.as_bytes()) {
            Ok(ApiRequest::Map(r)) => call(node, r).await,
            other => panic!("{method}: {other:?}"),
        }
    }

    #[tokio::test]
    async fn map_methods_write_read_and_clear() {
        let node = node();
        let r = run(
            &node,
            "map_publish",
            r#"{"channel":"m:1","key":"a","data":{"v":1},"tags":{"t":"x"}}"#,
        )
        .await
        .unwrap();
        assert_eq!(r["offset"], 1);
        let epoch = r["epoch"].as_str().unwrap().to_string();
        let r = run(&node, "map_publish", r#"{"channel":"m:1","key":"a","data":2,"key_mode":"if_new"}"#)
            .await
            .unwrap();
        assert_eq!(
            (r["suppressed"].as_bool(), r["suppress_reason"].as_str()),
            (Some(true), Some("key_exists"))
        );
        run(&node, "map_publish", r#"{"channel":"m:1","key":"b","b64data":"Mw==","version":3}"#)
            .await
            .unwrap();
        let r = run(&node, "map_publish", r#"{"channel":"m:1","key":"b","data":1,"version":2}"#)
            .await
            .unwrap();
        assert_eq!(r["suppress_reason"].as_str(), Some("version"), "an older version: {r}");
        let r = run(&node, "map_read_state", r#"{"channel":"m:1","limit":1}"#).await.unwrap();
        assert_eq!(
            (r["entries"][0]["key"].as_str(), r["cursor"].as_str()),
            (Some("a"), Some("a")),
            "{r}"
        );
        assert_eq!(
            (r["entries"][0]["data"]["v"].as_i64(), r["entries"][0]["tags"]["t"].as_str()),
            (Some(1), Some("x"))
        );
        let r = run(&node, "map_read_state", r#"{"channel":"m:1","limit":10,"cursor":"a"}"#)
            .await
            .unwrap();
        assert_eq!((r["entries"][0]["data"].as_i64(), r.get("cursor")), (Some(3), None), "{r}");
        let r = run(&node, "map_remove", r#"{"channel":"m:1","key":"a"}"#).await.unwrap();
        assert_eq!(r["offset"], 3);
        let r = run(
            &node,
            "map_read_stream",
            &format!(r#"{{"channel":"m:1","since_offset":1,"since_epoch":"{epoch}","limit":-1}}"#),
        )
        .await
        .unwrap();
        let stream: Vec<(Option<&str>, Option<bool>)> = r["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["key"].as_str(), e["removed"].as_bool()))
            .collect();
        assert_eq!(stream, vec![(Some("b"), None), (Some("a"), Some(true))]);
        assert_eq!(run(&node, "map_stats", r#"{"channel":"m:1"}"#).await.unwrap()["num_keys"], 1);
        run(&node, "map_clear", r#"{"channel":"m:1"}"#).await.unwrap();
        assert_eq!(run(&node, "map_stats", r#"{"channel":"m:1"}"#).await.unwrap()["num_keys"], 0);
        let e = run(
            &node,
            "map_read_stream",
            &format!(r#"{{"channel":"m:1","since_offset":3,"since_epoch":"{epoch}"}}"#),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), 112, "a new epoch after map_clear");
    }

    #[tokio::test]
    async fn map_methods_refuse_what_centrifugo_refuses() {
        let node = node();
        for (method, body, code) in [
            ("map_publish", r#"{"channel":"other","key":"a","data":1}"#, 107),
            ("map_publish", r#"{"channel":"m:1","key":"","data":1}"#, 107),
            ("map_publish", r#"{"channel":"m:1","key":"a","data":1,"key_mode":"always"}"#, 107),
            ("map_remove", r#"{"channel":"nope:1","key":"a"}"#, 102),
        ] {
            assert_eq!(run(&node, method, body).await.unwrap_err().code(), code, "{method} {body}");
        }
        assert!(matches!(parse_request("map_stats", b"{}"), Err(crate::api::RequestError::Api(e)) if e.code() == 107));
        assert!(crate::api::is_method("map_read_state"));
        assert!(parse_request("map_publish", br#"{"channel":"m:1","key":"a","data":1}"#)
            .unwrap()
            .publishes());
    }
}
