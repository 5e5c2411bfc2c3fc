//! The map broker: where map channels live, and whence their changes reach subscribers
//! (through the node's [`BrokerHandler`], as stream publications do). This file holds the
//! trait and the in-memory broker of a single node.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use parking_lot::Mutex;
use wshub_protocol::Publication;

use super::state::{KeyMode, MapChannel, StatePage, Suppressed};
use super::Retention;
use crate::engine::{BoxFuture, BrokerHandler, EngineError, StreamPosition};
use crate::memory::{Clock, SystemClock};

/// One write to a map.
#[derive(Debug, Clone, Default)]
pub struct MapWrite {
    pub key: String,
    /// Data, info and tags of the entry (ignored but tags for a removal).
    pub publication: Publication,
    pub removed: bool,
    /// Delta subscribers get it as a delta against the key's previous data.
    pub delta: bool,
    pub key_mode: KeyMode,
    /// A write with a key already used in this channel within the broker's idempotency
    /// window is not done again: its first result is returned.
    pub idempotency_key: Option<String>,
}

/// What a write did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MapUpdate {
    pub position: StreamPosition,
    pub suppressed: Option<&'static str>,
}

/// Which part of a map's state to read.
#[derive(Debug, Clone, Default)]
pub struct StateQuery {
    pub cursor: String,
    pub limit: usize,
    /// One key only.
    pub key: Option<String>,
    /// The epoch the reader holds: another one is 112.
    pub revision: Option<StreamPosition>,
}

/// Keyed state with a change stream, per channel.
pub trait MapBroker: Send + Sync {
    /// Called once by the node before any other method.
    fn set_handler(&self, handler: Arc<dyn BrokerHandler>);
    fn write<'a>(&'a self, channel: &'a str, retention: Retention, write: MapWrite) -> BoxFuture<'a, Result<MapUpdate, EngineError>>;
    fn read_state<'a>(&'a self, channel: &'a str, query: StateQuery) -> BoxFuture<'a, Result<StatePage, EngineError>>;
    /// Stream publications after `since` (see [`MapChannel::read_stream`]) and the top.
    fn read_stream<'a>(
        &'a self,
        channel: &'a str,
        since: Option<StreamPosition>,
        limit: i64,
        reverse: bool,
    ) -> BoxFuture<'a, Result<(Vec<Publication>, StreamPosition), EngineError>>;
    /// Number of keys.
    fn stats<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<usize, EngineError>>;
    /// Forgets the channel: state, stream and epoch.
    fn clear<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>>;
    /// Takes out expired keys (telling subscribers). The server calls it every second.
    fn expire(&self) -> BoxFuture<'_, ()>;
    /// How often [`MapBroker::expire`] is to be called (`None`: never).
    fn expire_interval(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(1))
    }
    /// This node has a subscriber of `channel` now: a shared broker starts delivering its
    /// writes from other nodes here (the in-memory one delivers everything already).
    fn subscribe<'a>(&'a self, _channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(std::future::ready(Ok(())))
    }
    /// The node's last subscriber of `channel` left.
    fn unsubscribe<'a>(&'a self, _channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Idempotent results are kept this long (Centrifugo's `idempotent_result_ttl` default).
const IDEMPOTENT_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// A single node's maps, in memory. Epochs change when the process restarts and on
/// [`MapBroker::clear`].
pub struct MemoryMapBroker {
    channels: Mutex<Channels>,
    handler: OnceLock<Arc<dyn BrokerHandler>>,
    clock: Arc<dyn Clock>,
}

#[derive(Default)]
struct Channels {
    maps: HashMap<String, MapChannel>,
    /// The epoch of a channel not created yet: one per node, so that reading an absent
    /// channel twice gives one answer without keeping it.
    epoch: String,
    idempotent: HashMap<(String, String), (Instant, MapUpdate)>,
}

impl Default for MemoryMapBroker {
    fn default() -> Self {
        Self::new(Arc::new(SystemClock))
    }
}

impl MemoryMapBroker {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        MemoryMapBroker {
            channels: Mutex::new(Channels {
                epoch: crate::memory::new_epoch(),
                ..Default::default()
            }),
            handler: OnceLock::new(),
            clock,
        }
    }

    fn deliver(&self, channel: &str, p: &Publication, epoch: &str) {
        if let Some(h) = self.handler.get() {
            if p.offset == 1 {
                // The epoch travels on the first publication of a stream.
                let mut p = p.clone();
                p.epoch = epoch.to_string();
                h.handle_publication(channel, &p);
            } else {
                h.handle_publication(channel, p);
            }
        }
    }

    fn write_sync(&self, channel: &str, retention: Retention, w: MapWrite) -> MapUpdate {
        let now = self.clock.now();
        let mut c = self.channels.lock();
        c.idempotent.retain(|_, (at, _)| *at > now);
        let idem = w.idempotency_key.clone().map(|k| (channel.to_string(), k));
        if let Some(first) = idem.as_ref().and_then(|k| c.idempotent.get(k)) {
            return first.1.clone();
        }
        let epoch = c.epoch.clone();
        let map = c
            .maps
            .entry(channel.to_string())
            .or_insert_with(|| MapChannel::new(epoch, retention));
        let written = match w.removed {
            true => map
                .remove(&w.key, Some(w.publication.tags).filter(|t| !t.is_empty()), now)
                .ok_or(Suppressed::KeyNotFound),
            false => map.publish(&w.key, w.publication, w.key_mode, retention, now).map(|(mut p, prev)| {
                if w.delta {
                    // Marks "published with delta" inside the node (crate::delta).
                    p.delta = true;
                    p.prev_data = prev;
                }
                p
            }),
        };
        let position = map.position();
        let update = match written {
            Ok(p) => {
                self.deliver(channel, &p, &position.epoch);
                MapUpdate {
                    position: StreamPosition {
                        offset: p.offset,
                        epoch: position.epoch,
                    },
                    suppressed: None,
                }
            }
            Err(s) => MapUpdate {
                position,
                suppressed: Some(s.reason()),
            },
        };
        if let Some(k) = idem {
            c.idempotent.insert(k, (now + IDEMPOTENT_TTL, update.clone()));
        }
        update
    }

    fn with_channel<T>(&self, channel: &str, f: impl FnOnce(Option<&MapChannel>, &str) -> T) -> T {
        let c = self.channels.lock();
        f(c.maps.get(channel), &c.epoch)
    }
}

impl MapBroker for MemoryMapBroker {
    fn set_handler(&self, handler: Arc<dyn BrokerHandler>) {
        let _ = self.handler.set(handler);
    }

    fn write<'a>(&'a self, channel: &'a str, retention: Retention, write: MapWrite) -> BoxFuture<'a, Result<MapUpdate, EngineError>> {
        Box::pin(std::future::ready(Ok(self.write_sync(channel, retention, write))))
    }

    fn read_state<'a>(&'a self, channel: &'a str, q: StateQuery) -> BoxFuture<'a, Result<StatePage, EngineError>> {
        let r = self.with_channel(channel, |m, epoch| match m {
            None => {
                let position = StreamPosition {
                    offset: 0,
                    epoch: epoch.to_string(),
                };
                match &q.revision {
                    Some(r) if r.epoch != position.epoch => Err(EngineError::UnrecoverablePosition),
                    _ => Ok(StatePage {
                        position,
                        ..Default::default()
                    }),
                }
            }
            Some(m) => match &q.key {
                Some(k) => Ok(StatePage {
                    entries: m.get(k).into_iter().collect(),
                    position: m.position(),
                    cursor: String::new(),
                }),
                None => m.read_state(&q.cursor, q.limit, q.revision.as_ref()),
            },
        });
        Box::pin(std::future::ready(r))
    }

    fn read_stream<'a>(
        &'a self,
        channel: &'a str,
        since: Option<StreamPosition>,
        limit: i64,
        reverse: bool,
    ) -> BoxFuture<'a, Result<(Vec<Publication>, StreamPosition), EngineError>> {
        let r = self.with_channel(channel, |m, epoch| match m {
            None => {
                let empty = MapChannel::new(epoch.to_string(), Retention::default());
                empty.read_stream(since.as_ref(), limit, reverse).map(|p| (p, empty.position()))
            }
            Some(m) => m.read_stream(since.as_ref(), limit, reverse).map(|p| (p, m.position())),
        });
        Box::pin(std::future::ready(r))
    }

    fn stats<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<usize, EngineError>> {
        let n = self.with_channel(channel, |m, _| m.map_or(0, MapChannel::len));
        Box::pin(std::future::ready(Ok(n)))
    }

    fn clear<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        let mut c = self.channels.lock();
        if let Some(m) = c.maps.get_mut(channel) {
            // Kept under a new epoch: a client positioned in the old one learns (112).
            let retention = Retention::default();
            *m = MapChannel::new(crate::memory::new_epoch(), retention);
        }
        c.idempotent.retain(|(ch, _), _| ch != channel);
        Box::pin(std::future::ready(Ok(())))
    }

    fn expire(&self) -> BoxFuture<'_, ()> {
        let now = self.clock.now();
        let mut c = self.channels.lock();
        c.maps.retain(|channel, m| {
            if m.next_expiry().is_some_and(|at| at <= now) {
                let epoch = m.position().epoch;
                for p in m.expire(now) {
                    self.deliver(channel, &p, &epoch);
                }
            }
            !m.is_forgettable(now) || m.next_expiry().is_some()
        });
        Box::pin(std::future::ready(()))
    }
}
