//! The hub: this node's subscribers per channel, sharded by channel so that no lock is
//! global on the publication path.
//!
//! A publication is encoded at most once per wire format and framed once
//! ([`PreparedPush`]); every subscriber of that format gets the same shared bytes through
//! its [`ConnectionHandle`]. A subscriber that is recovering gets its pushes buffered here
//! until the session has merged history ([`Hub::finish_recovery`]), so that nothing
//! published meanwhile is lost or sent twice.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use wshub_protocol::codec::push_bytes;
use wshub_protocol::{ClientInfo, Format, Join, Leave, Publication, Push};
use wshub_websocket::{MessageKind, PreparedMessage};

const SHARDS: usize = 64;

/// Control requests for a live connection, from the server API.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    Subscribe { channel: String },
    Unsubscribe { channel: String },
    Disconnect { code: u16, reason: String },
    Refresh { expire_at: Option<u64> },
}

/// The server glue's side of one connection: its outbound queue and control inbox.
pub trait ConnectionHandle: Send + Sync {
    /// Unique per node.
    fn id(&self) -> u64;
    fn format(&self) -> Format;
    /// Queues a frame. A full queue is the connection's problem (it closes with 3008);
    /// the hub goes on with the next subscriber.
    fn deliver(&self, frame: &PreparedMessage);
    /// Passes a control request to the connection's task.
    fn control(&self, control: Control);
    /// The session id of a connection over an HTTP transport (HTTP-streaming, SSE), which
    /// the client names in its `/emulation` requests: sent in the connect result with the
    /// node's uid. Secret to the client, unlike its client id (presence shows those).
    fn emulation_session(&self) -> Option<&str> {
        None
    }
    /// A unidirectional connection (`uni_*` transports): the client sends nothing after its
    /// connect, so pings expect no pong.
    fn unidirectional(&self) -> bool {
        false
    }
}

/// A push encoded and framed at most once per format, on first use.
pub struct PreparedPush {
    /// The stream offset (0 for joins, leaves and publications without history).
    pub offset: u64,
    push: Push,
    json: OnceLock<Option<PreparedMessage>>,
    protobuf: OnceLock<Option<PreparedMessage>>,
}

impl PreparedPush {
    pub fn new(offset: u64, push: Push) -> Arc<Self> {
        Arc::new(PreparedPush {
            offset,
            push,
            json: OnceLock::new(),
            protobuf: OnceLock::new(),
        })
    }

    /// The frame for one format; `None` when the push cannot be expressed in it (non-JSON
    /// data for a JSON client).
    pub fn frame(&self, format: Format) -> Option<&PreparedMessage> {
        let (slot, kind) = match format {
            Format::Json => (&self.json, MessageKind::Text),
            Format::Protobuf => (&self.protobuf, MessageKind::Binary),
        };
        slot.get_or_init(|| match push_bytes(format, self.push.clone()) {
            Ok(b) => Some(PreparedMessage::new(kind, b)),
            Err(e) => {
                tracing::warn!(error = %e, channel = %self.push.channel, "push cannot be encoded for {format:?} clients");
                None
            }
        })
        .as_ref()
    }
}

struct Entry {
    conn: Arc<dyn ConnectionHandle>,
    join_leave: bool,
    /// `Some` while the subscriber recovers: publications wait here. Boxed, like `last`
    /// below kept to 8 bytes: one entry per subscription, in a table sized for all of
    /// them (72 -> 48 bytes a bucket).
    #[allow(clippy::box_collection)] // 8 bytes in every entry instead of 24: see above
    buffer: Option<Box<Vec<Arc<PreparedPush>>>>,
    /// Positioned subscribers: the last offset sent, so that a gap in the live stream (a
    /// broker connection lost for a while) is noticed rather than silently skipped.
    /// [`UNTRACKED`] for the others.
    last: u64,
}

/// `Entry::last` of a subscriber without a stream position.
const UNTRACKED: u64 = u64::MAX;
/// `Entry::last` after a gap was reported: later publications are dropped until it leaves.
const GAP_REPORTED: u64 = u64::MAX - 1;

impl Entry {
    fn send(&self, p: &PreparedPush) {
        if let Some(f) = p.frame(self.conn.format()) {
            self.conn.deliver(f);
        }
    }
}

/// A gap between history and the buffered publications: the client must resubscribe
/// (3010 insufficient state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("insufficient state: publication {expected} missing")]
pub struct Gap {
    pub expected: u64,
}

/// This node's subscribers.
pub struct Hub {
    shards: Vec<Mutex<HashMap<String, HashMap<u64, Entry>>>>,
    /// Subscriptions in all shards, kept as they change: `info` and node announcements read
    /// it without walking every channel.
    subscriptions: std::sync::atomic::AtomicUsize,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            subscriptions: std::sync::atomic::AtomicUsize::new(0),
        }
    }
}

fn shard_of(channel: &str) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    channel.hash(&mut h);
    (h.finish() as usize) % SHARDS
}

impl Hub {
    /// Adds a subscriber. Returns true when it is the channel's first on this node (the
    /// node then subscribes to the broker). `recovering`: buffer its publications until
    /// [`Hub::finish_recovery`].
    pub fn add(&self, channel: &str, conn: Arc<dyn ConnectionHandle>, join_leave: bool, recovering: bool) -> bool {
        let mut shard = self.shards[shard_of(channel)].lock();
        let first = !shard.contains_key(channel);
        let id = conn.id();
        let replaced = shard.entry(channel.to_string()).or_default().insert(
            id,
            Entry {
                conn,
                join_leave,
                buffer: recovering.then(Box::default),
                last: UNTRACKED,
            },
        );
        if replaced.is_none() {
            self.subscriptions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        first
    }

    /// Removes a subscriber. Returns true when the channel has no subscriber left here.
    pub fn remove(&self, channel: &str, conn_id: u64) -> bool {
        let mut shard = self.shards[shard_of(channel)].lock();
        let Some(subs) = shard.get_mut(channel) else { return false };
        if subs.remove(&conn_id).is_none() {
            return false;
        }
        self.subscriptions.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if subs.is_empty() {
            shard.remove(channel);
            return true;
        }
        false
    }

    /// Ends a subscriber's recovery: the buffered publications after `delivered` (the last
    /// offset the client has, from history) go out in order, and it turns live.
    pub fn finish_recovery(&self, channel: &str, conn_id: u64, delivered: u64) -> Result<(), Gap> {
        let mut shard = self.shards[shard_of(channel)].lock();
        let Some(entry) = shard.get_mut(channel).and_then(|s| s.get_mut(&conn_id)) else {
            return Ok(());
        };
        let buffered = entry.buffer.take().unwrap_or_default();
        let mut top = delivered;
        for p in *buffered {
            if p.offset == 0 || p.offset <= top {
                continue;
            }
            if p.offset != top + 1 {
                return Err(Gap { expected: top + 1 });
            }
            entry.send(&p);
            top = p.offset;
        }
        entry.last = top;
        Ok(())
    }

    /// Delivers a publication to the channel's subscribers here (buffered for those that
    /// are recovering). Delivery happens under the shard lock, which keeps per-channel order
    /// against [`Hub::finish_recovery`].
    pub fn broadcast_publication(&self, channel: &str, publication: &Publication) {
        let mut shard = self.shards[shard_of(channel)].lock();
        let Some(subs) = shard.get_mut(channel) else { return };
        let push = Push {
            channel: channel.to_string(),
            r#pub: Some(publication.clone()),
            ..Default::default()
        };
        let offset = publication.offset;
        let prepared = PreparedPush::new(offset, push);
        for entry in subs.values_mut() {
            match &mut entry.buffer {
                Some(buf) => buf.push(prepared.clone()),
                None => match entry.last {
                    UNTRACKED => entry.send(&prepared),
                    GAP_REPORTED => {}
                    _ if offset == 0 => entry.send(&prepared),
                    last if last.checked_add(1) == Some(offset) => {
                        entry.last = offset;
                        entry.send(&prepared);
                    }
                    // Already sent: history can run ahead of the live stream (a publication
                    // read in history at subscribe time may arrive here afterwards).
                    last if offset <= last => {}
                    last => {
                        // Publications were lost on the way to this node: the client must
                        // reconnect and recover them from history.
                        tracing::debug!(channel, expected = last + 1, got = offset, "live stream gap");
                        entry.last = GAP_REPORTED; // once
                        entry.conn.control(Control::Disconnect {
                            code: wshub_protocol::codes::disconnect::INSUFFICIENT_STATE,
                            reason: "insufficient state".into(),
                        });
                    }
                },
            }
        }
    }

    /// The channel's stream restarted under a new epoch (its history is gone, e.g. Redis
    /// lost its data): offsets start again from 1, so its positioned subscribers cannot go on
    /// and are closed with 3010 (their SDKs resubscribe and learn `recovered: false`).
    pub fn reset(&self, channel: &str) {
        let mut shard = self.shards[shard_of(channel)].lock();
        let Some(subs) = shard.get_mut(channel) else { return };
        for entry in subs.values_mut() {
            if entry.last != UNTRACKED && entry.last != GAP_REPORTED {
                entry.last = GAP_REPORTED;
                entry.conn.control(Control::Disconnect {
                    code: wshub_protocol::codes::disconnect::INSUFFICIENT_STATE,
                    reason: "insufficient state".into(),
                });
            }
        }
    }

    /// Delivers a join or leave push to the subscribers that asked for them.
    pub fn broadcast_join_leave(&self, channel: &str, info: &ClientInfo, join: bool) {
        let shard = self.shards[shard_of(channel)].lock();
        let Some(subs) = shard.get(channel) else { return };
        let push = if join {
            Push {
                channel: channel.to_string(),
                join: Some(Join { info: Some(info.clone()) }),
                ..Default::default()
            }
        } else {
            Push {
                channel: channel.to_string(),
                leave: Some(Leave { info: Some(info.clone()) }),
                ..Default::default()
            }
        };
        let prepared = PreparedPush::new(0, push);
        for entry in subs.values().filter(|e| e.join_leave && e.buffer.is_none()) {
            entry.send(&prepared);
        }
    }

    /// Channels with at least one subscriber here, and their subscriber counts.
    pub fn channels(&self) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        for shard in &self.shards {
            out.extend(shard.lock().iter().map(|(c, subs)| (c.clone(), subs.len())));
        }
        out
    }

    /// Channels with subscribers on this node; no copy of their names (node announcements
    /// read it every few seconds).
    pub fn num_channels(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// Subscriptions on this node (a connection subscribed to two channels counts twice).
    pub fn num_subscriptions(&self) -> usize {
        self.subscriptions.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn num_subscribers(&self, channel: &str) -> usize {
        self.shards[shard_of(channel)].lock().get(channel).map_or(0, HashMap::len)
    }
}

#[cfg(test)]
mod tests;
