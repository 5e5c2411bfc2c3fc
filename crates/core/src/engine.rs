//! The engine traits by concept: the [`Broker`] (publications between nodes, history
//! streams), the [`PresenceManager`] and, in [`crate::cluster`], node control. The in-memory engine ([`crate::memory`]) is the single-node default; the
//! Redis engine implements the same traits for many nodes.
//!
//! Methods return boxed futures so that an engine may do network IO; the in-memory one
//! answers at once. Publications, joins and leaves come back to the node through the
//! [`BrokerHandler`] given at start, in stream order per channel.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use wshub_protocol::{ClientInfo, Publication};

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
#[cfg(any(test, feature = "testing"))]
pub mod conformance_map;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A position in a channel's stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamPosition {
    pub offset: u64,
    pub epoch: String,
}

/// How a publication is kept.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// 0: not kept in history (and no offset).
    pub history_size: usize,
    pub history_ttl: Duration,
    /// A publish with a key already used in this channel within `idempotent_result_ttl` is
    /// not published again: its first result is returned (a backend's safe retry).
    pub idempotency_key: Option<String>,
    pub idempotent_result_ttl: Duration,
    /// How long the stream's epoch and top offset live after this publication (zero: the
    /// engine's default, 30 days).
    pub meta_ttl: Duration,
}

/// Which part of a stream to read.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// Publications after this position; its epoch must match the stream's.
    pub since: Option<StreamPosition>,
    /// -1: all; 0: none (position only); n: at most n.
    pub limit: i64,
    /// Newest first.
    pub reverse: bool,
    /// A read keeps the stream's position alive this much longer (zero: the engine's
    /// default, 30 days), as a publication does.
    pub meta_ttl: Duration,
}

impl HistoryQuery {
    /// The whole stream, oldest first.
    pub const ALL: HistoryQuery = HistoryQuery {
        since: None,
        limit: -1,
        reverse: false,
        meta_ttl: Duration::ZERO,
    };
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistoryResult {
    pub publications: Vec<Publication>,
    /// The stream's top.
    pub position: StreamPosition,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// `since` names an epoch the stream no longer has (112).
    #[error("unrecoverable position")]
    UnrecoverablePosition,
    #[error("engine: {0}")]
    Internal(String),
}

/// Receives what the broker delivers to this node.
pub trait BrokerHandler: Send + Sync {
    fn handle_publication(&self, channel: &str, publication: &Publication);
    fn handle_join(&self, channel: &str, info: &ClientInfo);
    fn handle_leave(&self, channel: &str, info: &ClientInfo);
    /// The channel's stream restarted under a new epoch while this node had subscribers.
    fn handle_reset(&self, channel: &str);
    /// Whether this node still has subscribers of `channel`. A broker that unsubscribes
    /// asynchronously asks before doing it, so that a subscribe racing with the last
    /// unsubscribe is not left without deliveries.
    fn has_subscribers(&self, channel: &str) -> bool;
}

/// Publication fan-out between nodes and history streams with offsets and epochs.
pub trait Broker: Send + Sync {
    /// Called once by the node before any other method.
    fn set_handler(&self, handler: Arc<dyn BrokerHandler>);
    /// Appends to the stream (when kept) and delivers to every node with subscribers.
    /// Returns the publication's position (offset 0 when not kept).
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        publication: Publication,
        opts: &'a PublishOptions,
    ) -> BoxFuture<'a, Result<StreamPosition, EngineError>>;
    fn publish_join<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BoxFuture<'a, Result<(), EngineError>>;
    fn publish_leave<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BoxFuture<'a, Result<(), EngineError>>;
    fn history<'a>(&'a self, channel: &'a str, query: HistoryQuery) -> BoxFuture<'a, Result<HistoryResult, EngineError>>;
    fn remove_history<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>>;
    /// Whether the broker can serve: a shared one's backend answers. The server checks it
    /// at start, so that a wrong address fails there and not at the first publication.
    fn check(&self) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(std::future::ready(Ok(())))
    }
    /// Tells the broker that a subscriber of `channel` joined this node (every one, not
    /// only the first), and answers once the channel's publications reach this node: at once
    /// when an earlier subscriber's subscription stands, after it when one is being set up,
    /// an error when it cannot be set up; so that no subscriber is told it is subscribed
    /// before its publications can arrive.
    /// Whether publications are kept for history and recovery. A broker that only fans out
    /// (NATS, say) says no, and a namespace with history on it is refused at start rather
    /// than answering empty histories.
    fn keeps_history(&self) -> bool {
        true
    }
    fn subscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>>;
    fn unsubscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>>;
}

/// Who is in a channel, shared between nodes.
/// What [`PresenceManager::join_presence`] changed for the client's user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// The user's first client in the channel.
    First,
    /// The user already had another client there.
    Another,
    /// This client was present already (a refresh).
    Again,
    /// Not added: the channel has its most distinct users.
    Full,
}

pub trait PresenceManager: Send + Sync {
    fn add_presence<'a>(&'a self, channel: &'a str, client: &'a str, info: ClientInfo) -> BoxFuture<'a, Result<(), EngineError>>;
    /// Presence entries expire unless added again; sessions re-add theirs at every ping.
    fn remove_presence<'a>(&'a self, channel: &'a str, client: &'a str) -> BoxFuture<'a, Result<(), EngineError>>;
    fn presence<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<HashMap<String, ClientInfo>, EngineError>>;
    /// Clients and distinct users present in `channel`. The default counts the whole map;
    /// a shared engine keeps the counts so that this is O(1) whatever the channel's size.
    fn presence_stats<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(u32, u32), EngineError>> {
        Box::pin(async move {
            let p = self.presence(channel).await?;
            let users: std::collections::HashSet<&str> = p.values().map(|i| i.user.as_str()).collect();
            Ok((p.len() as u32, users.len() as u32))
        })
    }
    /// Adds `client` as [`PresenceManager::add_presence`] does, and answers what that
    /// changed for its user, judged with the channel's other entries in one step on a
    /// shared engine: of two nodes adding the same user's clients at once, one sees
    /// [`Joined::First`]; with `max_users` (0: no limit) distinct users present and this
    /// one not among them, nothing is added ([`Joined::Full`]). The default (an engine
    /// without such a step) reads, then adds: right on one node only.
    fn join_presence<'a>(
        &'a self,
        channel: &'a str,
        client: &'a str,
        info: ClientInfo,
        max_users: usize,
    ) -> BoxFuture<'a, Result<Joined, EngineError>> {
        Box::pin(async move {
            let p = self.presence(channel).await?;
            if p.contains_key(client) {
                self.add_presence(channel, client, info).await?;
                return Ok(Joined::Again);
            }
            let others = p.values().any(|i| i.user == info.user);
            let users: std::collections::HashSet<&str> = p.values().map(|i| i.user.as_str()).collect();
            if max_users > 0 && !others && users.len() >= max_users {
                return Ok(Joined::Full);
            }
            self.add_presence(channel, client, info).await?;
            Ok(if others { Joined::Another } else { Joined::First })
        })
    }
    /// Removes `client` as [`PresenceManager::remove_presence`] does; `true` when it was
    /// present and its user has no client left in the channel (in one step on a shared
    /// engine: of two nodes removing a user's last two clients at once, one sees it).
    fn leave_presence<'a>(&'a self, channel: &'a str, client: &'a str) -> BoxFuture<'a, Result<bool, EngineError>> {
        Box::pin(async move {
            let p = self.presence(channel).await?;
            let Some(info) = p.get(client) else {
                return Ok(false);
            };
            self.remove_presence(channel, client).await?;
            Ok(!p.iter().any(|(c, i)| c != client && i.user == info.user))
        })
    }
    /// Called once by the node with its uid: a shared engine records which presence
    /// entries this node's sessions add, so that they can be taken out if it dies.
    fn set_node_uid(&self, _uid: &str) {}
    /// Takes out the presence entries of a node that died (not heard from), returning them
    /// as (channel, info) so that their leaves can be pushed; each entry is returned to one
    /// caller only. A single-node engine has none.
    fn reap_node<'a>(&'a self, _uid: &'a str) -> BoxFuture<'a, Result<Vec<(String, ClientInfo)>, EngineError>> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }
}

/// One backend that is both (the memory engine, the Redis engine). A node may as well take
/// a broker and a presence manager from different backends ([`crate::node::Node::with_parts`]),
/// a broker without history beside Redis presence, say.
pub trait Engine: Broker + PresenceManager {}

impl<T: Broker + PresenceManager + ?Sized> Engine for T {}
