//! Node control: what nodes of one cluster tell each other through the engine, and the
//! registry of the nodes heard from (node discovery).
//!
//! Each node announces itself ([`ControlMessage::Node`]) every [`ANNOUNCE_INTERVAL`]; a node
//! not heard from for [`MAX_SILENT_PERIODS`] periods is dropped. Server API calls that act on
//! users (`disconnect`, `subscribe`, `unsubscribe`, `refresh`) are sent to every node, which
//! acts on its own connections; `channels` is a survey every live node answers.
//!
//! The engine carries the bytes ([`NodeControl`]): the memory engine hands them straight
//! back to this node (a cluster of one), the Redis engine publishes them on a control
//! channel every node subscribes to. Messages are JSON: small, rare (a few per second per
//! node), and readable with `redis-cli subscribe`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::engine::{BoxFuture, EngineError};
use crate::node::NodeInfo;

/// How often a node announces itself.
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(3);
/// Announcements a node may miss before the others drop it.
pub const MAX_SILENT_PERIODS: u32 = 3;

/// Receives the control messages of the cluster (this node's own included).
pub trait ControlHandler: Send + Sync {
    fn handle_control(&self, data: &[u8]);
}

/// Carries control messages between the nodes of a cluster.
pub trait NodeControl: Send + Sync {
    /// Called once, before any [`NodeControl::publish_control`].
    fn set_control_handler(&self, handler: Arc<dyn ControlHandler>);
    /// Delivers `data` to every node's handler, this node's included.
    fn publish_control(&self, data: Vec<u8>) -> BoxFuture<'_, Result<(), EngineError>>;
}

/// One control message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlMessage {
    /// A node's announcement, with its figures.
    Node { info: NodeInfo },
    /// A node stops (its drain is over): the others drop it at once.
    Shutdown { uid: String },
    /// Close a user's connections (or one client's), sparing `whitelist`.
    Disconnect {
        user: String,
        #[serde(default)]
        client: String,
        #[serde(default)]
        whitelist: Vec<String>,
        code: u16,
        reason: String,
    },
    Subscribe {
        user: String,
        channel: String,
        #[serde(default)]
        client: String,
    },
    Unsubscribe {
        user: String,
        channel: String,
        #[serde(default)]
        client: String,
    },
    Refresh {
        user: String,
        #[serde(default)]
        client: String,
        #[serde(default)]
        expire_at: Option<u64>,
    },
    /// Asks every node for its channels matching `pattern`; answered with a
    /// [`ControlMessage::ChannelsReply`] to `from`.
    Channels { id: u64, from: String, pattern: String },
    ChannelsReply {
        id: u64,
        to: String,
        from: String,
        channels: Vec<(String, usize)>,
    },
    /// Commands for an emulated (HTTP-streaming, SSE) session held by node `node`: the
    /// `/emulation` request reached another node behind the load balancer.
    Emulation {
        node: String,
        session: String,
        #[serde(with = "base64_bytes")]
        data: Vec<u8>,
    },
    /// Asks every node for a user's connections; answered with a
    /// [`ControlMessage::ConnectionsReply`] to `from`.
    Connections { id: u64, from: String, user: String },
    ConnectionsReply {
        id: u64,
        to: String,
        from: String,
        connections: Vec<ConnectionSummary>,
    },
}

/// Bytes as base64 text in a control message: serde_json writes a `Vec<u8>` as an array of
/// numbers, up to four characters a byte where base64 takes 1.33. An array (what nodes of
/// earlier versions send) is still read.
mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(data))
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Text(String),
        Numbers(Vec<u8>),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        match Either::deserialize(d)? {
            Either::Text(t) => base64::engine::general_purpose::STANDARD
                .decode(t)
                .map_err(serde::de::Error::custom),
            Either::Numbers(b) => Ok(b),
        }
    }
}

/// One connection as the `connections` survey reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionSummary {
    pub client: String,
    pub user: String,
    /// `json` or `protobuf`.
    pub protocol: String,
    pub transport: String,
    /// The channels it is subscribed to (absent from an older node's reply).
    #[serde(default)]
    pub channels: Vec<String>,
}

impl ControlMessage {
    pub fn encode(&self) -> Vec<u8> {
        // A plain enum of strings and numbers: serialising it cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(data: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(data)
    }
}

/// The nodes heard from, with when each was last heard.
#[derive(Debug, Default)]
pub struct Peers {
    nodes: HashMap<String, (NodeInfo, Instant)>,
}

impl Peers {
    /// An announcement without metrics keeps the ones heard before (a node sends them once
    /// per aggregation interval).
    pub fn handle_announce(&mut self, mut info: NodeInfo, now: Instant) {
        if info.metrics.is_none() {
            info.metrics = self.nodes.get(&info.uid).and_then(|(old, _)| old.metrics.clone());
        }
        self.nodes.insert(info.uid.clone(), (info, now));
    }

    pub fn handle_shutdown(&mut self, uid: &str) {
        self.nodes.remove(uid);
    }

    /// Drops the nodes silent for too long; returns the ones dropped.
    pub fn expire(&mut self, now: Instant) -> Vec<NodeInfo> {
        let max = ANNOUNCE_INTERVAL * MAX_SILENT_PERIODS;
        let dead: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, (_, at))| now.saturating_duration_since(*at) > max)
            .map(|(uid, _)| uid.clone())
            .collect();
        dead.into_iter().filter_map(|uid| self.nodes.remove(&uid).map(|(i, _)| i)).collect()
    }

    /// The live nodes other than `me`, by uid.
    pub fn others(&self, me: &str) -> Vec<NodeInfo> {
        let mut v: Vec<NodeInfo> = self.nodes.values().filter(|(i, _)| i.uid != me).map(|(i, _)| i.clone()).collect();
        v.sort_by(|a, b| a.uid.cmp(&b.uid));
        v
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn emulation_data_travels_as_base64_and_the_old_number_array_is_still_read() {
        let data = b"{\"id\":2,\"subscribe\":{\"channel\":\"news\"}}".to_vec();
        let m = ControlMessage::Emulation {
            node: "n".into(),
            session: "s".into(),
            data: data.clone(),
        };
        let wire = m.encode();
        let v: serde_json::Value = serde_json::from_slice(&wire).unwrap();
        assert_eq!(v["data"], base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &data));
        assert!(wire.len() < 2 * data.len() + 64, "{} bytes for {}", wire.len(), data.len());
        assert_eq!(ControlMessage::decode(&wire).unwrap(), m);
        let old = serde_json::json!({"type": "emulation", "node": "n", "session": "s", "data": data}).to_string();
        assert_eq!(ControlMessage::decode(old.as_bytes()).unwrap(), m);
        let bad = r#"{"type":"emulation","node":"n","session":"s","data":"not base64!"}"#;
        assert!(ControlMessage::decode(bad.as_bytes()).is_err());
    }

    fn info(uid: &str) -> NodeInfo {
        NodeInfo {
            uid: uid.into(),
            name: format!("n-{uid}"),
            version: "0".into(),
            num_clients: 1,
            num_users: 1,
            num_channels: 2,
            num_subs: 3,
            uptime: 4,
            metrics: None,
            process: None,
        }
    }

    #[test]
    fn an_announcement_without_metrics_keeps_the_last_ones_and_old_nodes_are_read() {
        let t0 = Instant::now();
        let mut p = Peers::default();
        let mut first = info("a");
        let items = [("centrifugo.node.num_clients".to_string(), 1.0)].into_iter().collect();
        first.metrics = Some(crate::node::NodeMetrics { interval: 60.0, items });
        p.handle_announce(first.clone(), t0);
        let mut next = info("a");
        next.num_clients = 7;
        p.handle_announce(next, t0 + ANNOUNCE_INTERVAL);
        let now = &p.others("x")[0];
        assert_eq!(now.num_clients, 7);
        assert_eq!(now.metrics, first.metrics);
        // A node of an older wshub announces without the two objects.
        let old = r#"{"type":"node","info":{"uid":"b","name":"b","version":"0","num_clients":0,"num_users":0,"num_channels":0,"num_subs":0,"uptime":1}}"#;
        assert!(matches!(ControlMessage::decode(old.as_bytes()).unwrap(), ControlMessage::Node { info } if info.metrics.is_none()));
    }

    #[test]
    fn nodes_are_dropped_after_three_silent_periods() {
        let t0 = Instant::now();
        let mut p = Peers::default();
        p.handle_announce(info("a"), t0);
        p.handle_announce(info("b"), t0);
        assert_eq!(p.others("a").len(), 1);
        p.handle_announce(info("a"), t0 + ANNOUNCE_INTERVAL * 3);
        assert!(
            p.expire(t0 + ANNOUNCE_INTERVAL * 3).is_empty(),
            "exactly three periods: still there"
        );
        let dropped = p.expire(t0 + ANNOUNCE_INTERVAL * 3 + Duration::from_millis(1));
        assert_eq!(dropped.iter().map(|i| i.uid.as_str()).collect::<Vec<_>>(), ["b"]);
        assert_eq!(p.others("x").len(), 1);
        p.handle_shutdown("a");
        assert!(p.others("x").is_empty());
    }

    #[test]
    fn messages_round_trip() {
        let msgs = [
            ControlMessage::Node { info: info("a") },
            ControlMessage::Disconnect {
                user: "u".into(),
                client: String::new(),
                whitelist: vec!["c".into()],
                code: 3503,
                reason: "bye".into(),
            },
            ControlMessage::ChannelsReply {
                id: 7,
                to: "a".into(),
                from: "b".into(),
                channels: vec![("news".into(), 2)],
            },
        ];
        for m in msgs {
            assert_eq!(ControlMessage::decode(&m.encode()).unwrap(), m);
        }
        assert!(ControlMessage::decode(b"{\"type\":\"nope\"}").is_err());
    }
}
