//! The messages of the client protocol v2, with the field numbers of Centrifugo's
//! `client.proto` (written here, not copied). Each type derives `prost::Message` for the
//! Protobuf format and serde for the JSON one: snake_case names, zero values omitted (but
//! `ClientInfo.user`/`.client`), `bytes` fields as raw embedded JSON (see [`crate::raw`]).
//! Unknown fields are ignored in both formats.

use std::collections::HashMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

fn z<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct Error {
    #[prost(uint32, tag = "1")]
    #[serde(default, skip_serializing_if = "z")]
    pub code: u32,
    #[prost(string, tag = "2")]
    #[serde(default, skip_serializing_if = "z")]
    pub message: String,
    #[prost(bool, tag = "3")]
    #[serde(default, skip_serializing_if = "z")]
    pub temporary: bool,
}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct Command {
    #[prost(uint32, tag = "1")]
    #[serde(default, skip_serializing_if = "z")]
    pub id: u32,
    #[prost(message, optional, tag = "4")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<ConnectRequest>,
    #[prost(message, optional, tag = "5")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<SubscribeRequest>,
    #[prost(message, optional, tag = "6")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsubscribe: Option<UnsubscribeRequest>,
    #[prost(message, optional, tag = "7")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<PublishRequest>,
    #[prost(message, optional, tag = "8")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<PresenceRequest>,
    #[prost(message, optional, tag = "9")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_stats: Option<PresenceStatsRequest>,
    #[prost(message, optional, tag = "10")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryRequest>,
    #[prost(message, optional, tag = "11")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping: Option<PingRequest>,
    #[prost(message, optional, tag = "12")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<SendRequest>,
    #[prost(message, optional, tag = "13")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpc: Option<RpcRequest>,
    #[prost(message, optional, tag = "14")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<RefreshRequest>,
    #[prost(message, optional, tag = "15")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_refresh: Option<SubRefreshRequest>,
}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct Reply {
    #[prost(uint32, tag = "1")]
    #[serde(default, skip_serializing_if = "z")]
    pub id: u32,
    #[prost(message, optional, tag = "2")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Error>,
    #[prost(message, optional, tag = "4")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<Push>,
    #[prost(message, optional, tag = "5")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<ConnectResult>,
    #[prost(message, optional, tag = "6")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<SubscribeResult>,
    #[prost(message, optional, tag = "7")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsubscribe: Option<UnsubscribeResult>,
    #[prost(message, optional, tag = "8")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<PublishResult>,
    #[prost(message, optional, tag = "9")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<PresenceResult>,
    #[prost(message, optional, tag = "10")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_stats: Option<PresenceStatsResult>,
    #[prost(message, optional, tag = "11")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryResult>,
    #[prost(message, optional, tag = "12")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping: Option<PingResult>,
    #[prost(message, optional, tag = "13")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpc: Option<RpcResult>,
    #[prost(message, optional, tag = "14")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<RefreshResult>,
    #[prost(message, optional, tag = "15")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_refresh: Option<SubRefreshResult>,
}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct Push {
    #[prost(int64, tag = "1")]
    #[serde(default, skip_serializing_if = "z")]
    pub id: i64,
    #[prost(string, tag = "2")]
    #[serde(default, skip_serializing_if = "z")]
    pub channel: String,
    #[prost(message, optional, tag = "4")]
    #[serde(rename = "pub", default, skip_serializing_if = "Option::is_none")]
    pub r#pub: Option<Publication>,
    #[prost(message, optional, tag = "5")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<Join>,
    #[prost(message, optional, tag = "6")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leave: Option<Leave>,
    #[prost(message, optional, tag = "7")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsubscribe: Option<Unsubscribe>,
    #[prost(message, optional, tag = "8")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    #[prost(message, optional, tag = "9")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<Subscribe>,
    #[prost(message, optional, tag = "10")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<Connect>,
    #[prost(message, optional, tag = "11")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnect: Option<Disconnect>,
    #[prost(message, optional, tag = "12")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<Refresh>,
}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct ClientInfo {
    #[prost(string, tag = "1")]
    #[serde(default)]
    pub user: String,
    #[prost(string, tag = "2")]
    #[serde(default)]
    pub client: String,
    #[prost(bytes = "bytes", tag = "3")]
    #[serde(default, skip_serializing_if = "Bytes::is_empty", with = "crate::raw")]
    pub conn_info: Bytes,
    #[prost(bytes = "bytes", tag = "4")]
    #[serde(default, skip_serializing_if = "Bytes::is_empty", with = "crate::raw")]
    pub chan_info: Bytes,
}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct Publication {
    #[prost(bytes = "bytes", tag = "4")]
    #[serde(default, skip_serializing_if = "Bytes::is_empty", with = "crate::raw")]
    pub data: Bytes,
    #[prost(message, optional, tag = "5")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<ClientInfo>,
    #[prost(uint64, tag = "6")]
    #[serde(default, skip_serializing_if = "z")]
    pub offset: u64,
    #[prost(map = "string, string", tag = "7")]
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub tags: HashMap<String, String>,
    #[prost(bool, tag = "8")]
    #[serde(default, skip_serializing_if = "z")]
    pub delta: bool,
    #[prost(int64, tag = "9")]
    #[serde(default, skip_serializing_if = "z")]
    pub time: i64,
    #[prost(string, tag = "10")]
    #[serde(default, skip_serializing_if = "z")]
    pub channel: String,
    /// A map entry's key (map subscriptions).
    #[prost(string, tag = "11")]
    #[serde(default, skip_serializing_if = "z")]
    pub key: String,
    /// The map entry `key` was removed.
    #[prost(bool, tag = "12")]
    #[serde(default, skip_serializing_if = "z")]
    pub removed: bool,
    /// The stream's epoch, on the publication at offset 1 (a client that has none adopts
    /// it; a different one means its position is gone).
    #[prost(string, tag = "14")]
    #[serde(default, skip_serializing_if = "z")]
    pub epoch: String,
    /// Between nodes only: the map key's previous data, the base of its Fossil delta
    /// (the hub takes it out before anything reaches a client).
    #[prost(bytes = "bytes", tag = "15")]
    #[serde(default, skip_serializing_if = "Bytes::is_empty", with = "crate::raw")]
    pub prev_data: Bytes,
    /// A shared poll key's version (the backend's, or a synthetic one in versionless mode).
    #[prost(uint64, tag = "16")]
    #[serde(default, skip_serializing_if = "z")]
    pub version: u64,
}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct Join {
    #[prost(message, optional, tag = "1")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<ClientInfo>,
}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct Leave {
    #[prost(message, optional, tag = "1")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<ClientInfo>,
}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct Unsubscribe {
    #[prost(uint32, tag = "2")]
    #[serde(default, skip_serializing_if = "z")]
    pub code: u32,
    #[prost(string, tag = "3")]
    #[serde(default, skip_serializing_if = "z")]
    pub reason: String,
}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct Subscribe {
    #[prost(bool, tag = "1")]
    #[serde(default, skip_serializing_if = "z")]
    pub recoverable: bool,
    #[prost(string, tag = "4")]
    #[serde(default, skip_serializing_if = "z")]
    pub epoch: String,
    #[prost(uint64, tag = "5")]
    #[serde(default, skip_serializing_if = "z")]
    pub offset: u64,
    #[prost(bool, tag = "6")]
    #[serde(default, skip_serializing_if = "z")]
    pub positioned: bool,
    #[prost(bytes = "bytes", tag = "7")]
    #[serde(default, skip_serializing_if = "Bytes::is_empty", with = "crate::raw")]
    pub data: Bytes,
}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct Message {
    #[prost(bytes = "bytes", tag = "1")]
    #[serde(default, skip_serializing_if = "Bytes::is_empty", with = "crate::raw")]
    pub data: Bytes,
}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct Connect {
    #[prost(string, tag = "1")]
    #[serde(default, skip_serializing_if = "z")]
    pub client: String,
    #[prost(string, tag = "2")]
    #[serde(default, skip_serializing_if = "z")]
    pub version: String,
    #[prost(bytes = "bytes", tag = "3")]
    #[serde(default, skip_serializing_if = "Bytes::is_empty", with = "crate::raw")]
    pub data: Bytes,
    #[prost(message, repeated, tag = "4")]
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "crate::entries")]
    pub subs: Vec<SubscribeResultEntry>,
    #[prost(bool, tag = "5")]
    #[serde(default, skip_serializing_if = "z")]
    pub expires: bool,
    #[prost(uint32, tag = "6")]
    #[serde(default, skip_serializing_if = "z")]
    pub ttl: u32,
    #[prost(uint32, tag = "7")]
    #[serde(default, skip_serializing_if = "z")]
    pub ping: u32,
    #[prost(bool, tag = "8")]
    #[serde(default, skip_serializing_if = "z")]
    pub pong: bool,
    #[prost(string, tag = "9")]
    #[serde(default, skip_serializing_if = "z")]
    pub session: String,
    #[prost(string, tag = "10")]
    #[serde(default, skip_serializing_if = "z")]
    pub node: String,
}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct Disconnect {
    #[prost(uint32, tag = "1")]
    #[serde(default, skip_serializing_if = "z")]
    pub code: u32,
    #[prost(string, tag = "2")]
    #[serde(default, skip_serializing_if = "z")]
    pub reason: String,
    #[prost(bool, tag = "3")]
    #[serde(default, skip_serializing_if = "z")]
    pub reconnect: bool,
}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct Refresh {
    #[prost(bool, tag = "1")]
    #[serde(default, skip_serializing_if = "z")]
    pub expires: bool,
    #[prost(uint32, tag = "2")]
    #[serde(default, skip_serializing_if = "z")]
    pub ttl: u32,
}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct ConnectRequest {
    #[prost(string, tag = "1")]
    #[serde(default, skip_serializing_if = "z")]
    pub token: String,
    #[prost(bytes = "bytes", tag = "2")]
    #[serde(default, skip_serializing_if = "Bytes::is_empty", with = "crate::raw")]
    pub data: Bytes,
    #[prost(map = "string, message", tag = "3")]
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub subs: HashMap<String, SubscribeRequest>,
    #[prost(string, tag = "4")]
    #[serde(default, skip_serializing_if = "z")]
    pub name: String,
    #[prost(string, tag = "5")]
    #[serde(default, skip_serializing_if = "z")]
    pub version: String,
    #[prost(map = "string, string", tag = "6")]
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub headers: HashMap<String, String>,
    #[prost(int64, tag = "7")]
    #[serde(default, skip_serializing_if = "z")]
    pub flag: i64,
}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct ConnectResult {
    #[prost(string, tag = "1")]
    #[serde(default, skip_serializing_if = "z")]
    pub client: String,
    #[prost(string, tag = "2")]
    #[serde(default, skip_serializing_if = "z")]
    pub version: String,
    #[prost(bool, tag = "3")]
    #[serde(default, skip_serializing_if = "z")]
    pub expires: bool,
    #[prost(uint32, tag = "4")]
    #[serde(default, skip_serializing_if = "z")]
    pub ttl: u32,
    #[prost(bytes = "bytes", tag = "5")]
    #[serde(default, skip_serializing_if = "Bytes::is_empty", with = "crate::raw")]
    pub data: Bytes,
    #[prost(message, repeated, tag = "6")]
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "crate::entries")]
    pub subs: Vec<SubscribeResultEntry>,
    #[prost(uint32, tag = "7")]
    #[serde(default, skip_serializing_if = "z")]
    pub ping: u32,
    #[prost(bool, tag = "8")]
    #[serde(default, skip_serializing_if = "z")]
    pub pong: bool,
    #[prost(string, tag = "9")]
    #[serde(default, skip_serializing_if = "z")]
    pub session: String,
    #[prost(string, tag = "10")]
    #[serde(default, skip_serializing_if = "z")]
    pub node: String,
    #[prost(int64, tag = "11")]
    #[serde(default, skip_serializing_if = "z")]
    pub time: i64,
}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct RefreshRequest {
    #[prost(string, tag = "1")]
    #[serde(default, skip_serializing_if = "z")]
    pub token: String,
}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct RefreshResult {
    #[prost(string, tag = "1")]
    #[serde(default, skip_serializing_if = "z")]
    pub client: String,
    #[prost(string, tag = "2")]
    #[serde(default, skip_serializing_if = "z")]
    pub version: String,
    #[prost(bool, tag = "3")]
    #[serde(default, skip_serializing_if = "z")]
    pub expires: bool,
    #[prost(uint32, tag = "4")]
    #[serde(default, skip_serializing_if = "z")]
    pub ttl: u32,
}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct SubscribeRequest {
    #[prost(string, tag = "1")]
    #[serde(default, skip_serializing_if = "z")]
    pub channel: String,
    #[prost(string, tag = "2")]
    #[serde(default, skip_serializing_if = "z")]
    pub token: String,
    #[prost(bool, tag = "3")]
    #[serde(default, skip_serializing_if = "z")]
    pub recover: bool,
    #[prost(string, tag = "6")]
    #[serde(default, skip_serializing_if = "z")]
    pub epoch: String,
    #[prost(uint64, tag = "7")]
    #[serde(default, skip_serializing_if = "z")]
    pub offset: u64,
    #[prost(bytes = "bytes", tag = "8")]
    #[serde(default, skip_serializing_if = "Bytes::is_empty", with = "crate::raw")]
    pub data: Bytes,
    #[prost(bool, tag = "9")]
    #[serde(default, skip_serializing_if = "z")]
    pub positioned: bool,
    #[prost(bool, tag = "10")]
    #[serde(default, skip_serializing_if = "z")]
    pub recoverable: bool,
    #[prost(bool, tag = "11")]
    #[serde(default, skip_serializing_if = "z")]
    pub join_leave: bool,
    /// Delta compression asked for: `"fossil"` or empty.
    #[prost(string, tag = "12")]
    #[serde(default, skip_serializing_if = "z")]
    pub delta: String,
    /// Publication tags filter (`wshub_core::filter`), where the namespace allows one.
    #[prost(message, optional, tag = "13")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tf: Option<FilterNode>,
    #[prost(int64, tag = "14")]
    #[serde(default, skip_serializing_if = "z")]
    pub flag: i64,
    /// The subscription's kind: 0 a stream; 1-3 map subscriptions, 4 shared poll
    /// (Centrifugo 6.8).
    #[prost(int32, tag = "15")]
    #[serde(default, rename = "type", skip_serializing_if = "z")]
    pub r#type: i32,
    /// A map subscribe's phase: 0 live, 1 stream, 2 state.
    #[prost(int32, tag = "16")]
    #[serde(default, skip_serializing_if = "z")]
    pub phase: i32,
    /// The next state page (from the previous reply).
    #[prost(string, tag = "17")]
    #[serde(default, skip_serializing_if = "z")]
    pub cursor: String,
    /// Page size asked for (clamped by the namespace).
    #[prost(int32, tag = "18")]
    #[serde(default, skip_serializing_if = "z")]
    pub limit: i32,
    /// Ordered maps only (none in Centrifugo): ignored.
    #[prost(bool, tag = "19")]
    #[serde(default, skip_serializing_if = "z")]
    pub asc: bool,
}

/// A publication tags filter (`FilterNode` of client.proto): a leaf comparison on one tag,
/// or `and` / `or` / `not` over child nodes. `Eq` and `Hash` let a hub share one copy of
/// identical filters.
#[derive(Clone, PartialEq, Eq, Hash, ::prost::Message, Serialize, Deserialize)]
pub struct FilterNode {
    #[prost(string, tag = "1")]
    #[serde(default, skip_serializing_if = "z")]
    pub op: String,
    #[prost(string, tag = "2")]
    #[serde(default, skip_serializing_if = "z")]
    pub key: String,
    #[prost(string, tag = "3")]
    #[serde(default, skip_serializing_if = "z")]
    pub cmp: String,
    #[prost(string, tag = "4")]
    #[serde(default, skip_serializing_if = "z")]
    pub val: String,
    #[prost(string, repeated, tag = "5")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vals: Vec<String>,
    #[prost(message, repeated, tag = "6")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<FilterNode>,
}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct SubscribeResult {
    #[prost(bool, tag = "1")]
    #[serde(default, skip_serializing_if = "z")]
    pub expires: bool,
    #[prost(uint32, tag = "2")]
    #[serde(default, skip_serializing_if = "z")]
    pub ttl: u32,
    #[prost(bool, tag = "3")]
    #[serde(default, skip_serializing_if = "z")]
    pub recoverable: bool,
    #[prost(string, tag = "6")]
    #[serde(default, skip_serializing_if = "z")]
    pub epoch: String,
    #[prost(message, repeated, tag = "7")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publications: Vec<Publication>,
    #[prost(bool, tag = "8")]
    #[serde(default, skip_serializing_if = "z")]
    pub recovered: bool,
    #[prost(uint64, tag = "9")]
    #[serde(default, skip_serializing_if = "z")]
    pub offset: u64,
    #[prost(bool, tag = "10")]
    #[serde(default, skip_serializing_if = "z")]
    pub positioned: bool,
    #[prost(bytes = "bytes", tag = "11")]
    #[serde(default, skip_serializing_if = "Bytes::is_empty", with = "crate::raw")]
    pub data: Bytes,
    #[prost(bool, tag = "12")]
    #[serde(default, skip_serializing_if = "z")]
    pub was_recovering: bool,
    #[prost(bool, tag = "13")]
    #[serde(default, skip_serializing_if = "z")]
    pub delta: bool,
    /// The subscription's kind, echoed (1 for every map kind).
    #[prost(int32, tag = "15")]
    #[serde(default, rename = "type", skip_serializing_if = "z")]
    pub r#type: i32,
    /// The phase of this reply: 2 more state, 1 more stream, 0 live.
    #[prost(int32, tag = "16")]
    #[serde(default, skip_serializing_if = "z")]
    pub phase: i32,
    /// The next state page; empty on the last.
    #[prost(string, tag = "17")]
    #[serde(default, skip_serializing_if = "z")]
    pub cursor: String,
    /// Map state entries (`publications` carries the stream).
    #[prost(message, repeated, tag = "18")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub state: Vec<Publication>,
}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct SubRefreshRequest {
    #[prost(string, tag = "1")]
    #[serde(default, skip_serializing_if = "z")]
    pub channel: String,
    #[prost(string, tag = "2")]
    #[serde(default, skip_serializing_if = "z")]
    pub token: String,
    /// 0: a subscription token refresh; 1: track keys (shared poll); 2: untrack keys.
    #[prost(int32, tag = "3")]
    #[serde(default, rename = "type", skip_serializing_if = "z")]
    pub r#type: i32,
    /// Signed key batches to track.
    #[prost(message, repeated, tag = "4")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub track: Vec<TrackBatch>,
    /// Keys to stop tracking (with `track`: keys of its batches dropped since they were signed).
    #[prost(string, repeated, tag = "5")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub untrack: Vec<String>,
}

/// A shared poll key and the version the client holds (0: none).
#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct KeyedItem {
    #[prost(string, tag = "1")]
    #[serde(default, skip_serializing_if = "z")]
    pub key: String,
    #[prost(uint64, tag = "2")]
    #[serde(default, skip_serializing_if = "z")]
    pub version: u64,
}

/// Keys to track with the application's signature over them.
#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct TrackBatch {
    #[prost(string, tag = "1")]
    #[serde(default, skip_serializing_if = "z")]
    pub signature: String,
    #[prost(message, repeated, tag = "2")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<KeyedItem>,
}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct SubRefreshResult {
    #[prost(bool, tag = "1")]
    #[serde(default, skip_serializing_if = "z")]
    pub expires: bool,
    #[prost(uint32, tag = "2")]
    #[serde(default, skip_serializing_if = "z")]
    pub ttl: u32,
    /// Track: what the server holds newer than the client's versions.
    #[prost(message, repeated, tag = "3")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<Publication>,
}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct UnsubscribeRequest {
    #[prost(string, tag = "1")]
    #[serde(default, skip_serializing_if = "z")]
    pub channel: String,
}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct UnsubscribeResult {}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct PublishRequest {
    #[prost(string, tag = "1")]
    #[serde(default, skip_serializing_if = "z")]
    pub channel: String,
    #[prost(bytes = "bytes", tag = "2")]
    #[serde(default, skip_serializing_if = "Bytes::is_empty", with = "crate::raw")]
    pub data: Bytes,
    /// 1: a map write of `key` (or its removal).
    #[prost(int32, tag = "3")]
    #[serde(default, rename = "type", skip_serializing_if = "z")]
    pub r#type: i32,
    #[prost(string, tag = "4")]
    #[serde(default, skip_serializing_if = "z")]
    pub key: String,
    #[prost(bool, tag = "5")]
    #[serde(default, skip_serializing_if = "z")]
    pub removed: bool,
}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct PublishResult {}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct PresenceRequest {
    #[prost(string, tag = "1")]
    #[serde(default, skip_serializing_if = "z")]
    pub channel: String,
}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct PresenceResult {
    /// Always written in JSON, empty or not: centrifuge-js reads `Object.keys(presence)`.
    #[prost(map = "string, message", tag = "1")]
    #[serde(default)]
    pub presence: HashMap<String, ClientInfo>,
}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct PresenceStatsRequest {
    #[prost(string, tag = "1")]
    #[serde(default, skip_serializing_if = "z")]
    pub channel: String,
}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct PresenceStatsResult {
    #[prost(uint32, tag = "1")]
    #[serde(default)]
    pub num_clients: u32,
    #[prost(uint32, tag = "2")]
    #[serde(default)]
    pub num_users: u32,
}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct StreamPosition {
    #[prost(uint64, tag = "1")]
    #[serde(default, skip_serializing_if = "z")]
    pub offset: u64,
    #[prost(string, tag = "2")]
    #[serde(default, skip_serializing_if = "z")]
    pub epoch: String,
}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct HistoryRequest {
    #[prost(string, tag = "1")]
    #[serde(default, skip_serializing_if = "z")]
    pub channel: String,
    #[prost(int32, tag = "7")]
    #[serde(default, skip_serializing_if = "z")]
    pub limit: i32,
    #[prost(message, optional, tag = "8")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<StreamPosition>,
    #[prost(bool, tag = "9")]
    #[serde(default, skip_serializing_if = "z")]
    pub reverse: bool,
}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct HistoryResult {
    #[prost(message, repeated, tag = "1")]
    #[serde(default)]
    pub publications: Vec<Publication>,
    #[prost(string, tag = "2")]
    #[serde(default)]
    pub epoch: String,
    #[prost(uint64, tag = "3")]
    #[serde(default)]
    pub offset: u64,
}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct PingRequest {}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct PingResult {}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct RpcRequest {
    #[prost(bytes = "bytes", tag = "1")]
    #[serde(default, skip_serializing_if = "Bytes::is_empty", with = "crate::raw")]
    pub data: Bytes,
    #[prost(string, tag = "2")]
    #[serde(default, skip_serializing_if = "z")]
    pub method: String,
}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct RpcResult {
    #[prost(bytes = "bytes", tag = "1")]
    #[serde(default, skip_serializing_if = "Bytes::is_empty", with = "crate::raw")]
    pub data: Bytes,
}

#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct SendRequest {
    #[prost(bytes = "bytes", tag = "1")]
    #[serde(default, skip_serializing_if = "Bytes::is_empty", with = "crate::raw")]
    pub data: Bytes,
}

/// One entry of a `map<string, SubscribeResult>`, written as the repeated entry message
/// that a protobuf map is on the wire. prost leaves out an entry's value when it is empty,
/// which JavaScript decoders read as `null`; an explicit entry always carries it. In JSON
/// the entries are an object keyed by channel (see [`crate::entries`]).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct SubscribeResultEntry {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<SubscribeResult>,
}
