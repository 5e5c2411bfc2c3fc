//! The map broker: where map channels live, and whence their changes reach subscribers
//! (through the node's [`BrokerHandler`], as stream publications do). This file holds the
//! trait and the in-memory broker of a single node.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use parking_lot::Mutex;
use wshub_protocol::Publication;

use super::state::{KeyMode, MapChannel, StatePage, Suppressed};
use super::Retention;
use crate::clock::{new_epoch, Clock, SystemClock};
use crate::engine::{BoxFuture, BrokerHandler, EngineError, StreamPosition};

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
    /// window is not done again: its first position is returned, suppressed
    /// (`idempotency`).
    pub idempotency_key: Option<String>,
    /// Not zero: the write is suppressed (`version`) when the key holds this version or a
    /// newer one of the same `version_epoch` (empty: any), on maps with a stream, as
    /// Centrifugo's.
    pub version: u64,
    pub version_epoch: String,
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
    /// Whether the broker can serve (a shared one's backend answers): `/ready` follows it,
    /// as it follows the engine's, so that a node whose map state is out of reach is taken
    /// out of a load balancer's rotation.
    fn check(&self) -> BoxFuture<'_, Result<(), EngineError>> {
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
    /// The idempotent results in the order they expire (one TTL for all): a write drops
    /// the expired ones from the front instead of looking at every one.
    idempotent_order: VecDeque<(Instant, (String, String))>,
    /// Channels by when the sweep has work in them (at or before it): a sweep touches
    /// only the channels due, not every channel.
    due: BTreeSet<(Instant, String)>,
    /// Each channel's time in `due`.
    scheduled: HashMap<String, Instant>,
}

impl Channels {
    /// Puts `channel` in the sweep's schedule at `at`, unless it is there earlier already
    /// (an earlier visit finds nothing to do and schedules the channel again).
    fn schedule(&mut self, channel: &str, at: Option<Instant>) {
        let Some(at) = at else { return };
        match self.scheduled.get(channel) {
            Some(&was) if was <= at => {}
            Some(&was) => {
                self.due.remove(&(was, channel.to_string()));
                self.due.insert((at, channel.to_string()));
                self.scheduled.insert(channel.to_string(), at);
            }
            None => {
                self.due.insert((at, channel.to_string()));
                self.scheduled.insert(channel.to_string(), at);
            }
        }
    }

    fn forget_idempotent(&mut self, now: Instant) {
        while let Some((at, _)) = self.idempotent_order.front() {
            if *at > now {
                break;
            }
            if let Some((at, k)) = self.idempotent_order.pop_front() {
                // Only the entry this one recorded: a later write with the key keeps its own.
                if self.idempotent.get(&k).is_some_and(|(t, _)| *t == at) {
                    self.idempotent.remove(&k);
                }
            }
        }
    }
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
                epoch: new_epoch(),
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
        c.forget_idempotent(now);
        let idem = w.idempotency_key.clone().map(|k| (channel.to_string(), k));
        if let Some(first) = idem.as_ref().and_then(|k| c.idempotent.get(k)) {
            return MapUpdate {
                position: first.1.position.clone(),
                suppressed: Some("idempotency"),
            };
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
            false if w.version > 0 && retention.mode.has_stream() && map.version_suppresses(&w.key, w.version, &w.version_epoch) => {
                Err(Suppressed::Version)
            }
            false => map.publish(&w.key, w.publication, w.key_mode, retention, now).map(|(mut p, prev)| {
                if w.version > 0 {
                    map.set_version(&w.key, w.version, &w.version_epoch);
                }
                if w.delta {
                    // Marks "published with delta" inside the node (crate::delta).
                    p.delta = true;
                    p.prev_data = prev;
                }
                p
            }),
        };
        let position = map.position();
        let due = map.next_due();
        let forgettable = map.is_forgettable(now);
        if forgettable {
            // An ephemeral map emptied by a removal: nothing to keep (its epoch is the node's).
            c.maps.remove(channel);
        }
        c.schedule(channel, due);
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
        // Only what was written is remembered: a suppressed write may be tried again.
        if let Some(k) = idem.filter(|_| update.suppressed.is_none()) {
            c.idempotent.insert(k.clone(), (now + IDEMPOTENT_TTL, update.clone()));
            c.idempotent_order.push_back((now + IDEMPOTENT_TTL, k));
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
            *m = MapChannel::new(new_epoch(), retention);
        }
        c.idempotent.retain(|(ch, _), _| ch != channel);
        if let Some(at) = c.scheduled.remove(channel) {
            c.due.remove(&(at, channel.to_string()));
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn expire(&self) -> BoxFuture<'_, ()> {
        let now = self.clock.now();
        let mut guard = self.channels.lock();
        let c = &mut *guard;
        while let Some((at, channel)) = c.due.first().cloned() {
            if at > now {
                break;
            }
            c.due.pop_first();
            c.scheduled.remove(&channel);
            let Some(m) = c.maps.get_mut(&channel) else { continue };
            let epoch = m.position().epoch;
            for p in m.expire(now) {
                self.deliver(&channel, &p, &epoch);
            }
            let due = m.next_due();
            if m.is_forgettable(now) && due.is_none_or(|d| d <= now) {
                c.maps.remove(&channel);
            } else {
                c.schedule(&channel, due);
            }
        }
        Box::pin(std::future::ready(()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{MapOptions, Mode};
    use super::*;
    use crate::memory::ManualClock;
    use std::time::Duration;

    fn write(key: &str) -> MapWrite {
        MapWrite {
            key: key.into(),
            ..Default::default()
        }
    }

    /// The sweep visits the channels with something due only: a thousand persistent maps
    /// are never in its schedule, and each map with expiring keys is there once, however
    /// many keys it has.
    #[test]
    fn the_sweep_visits_only_the_channels_due() {
        let clock = Arc::new(ManualClock::new());
        let b = MemoryMapBroker::new(clock.clone());
        let persistent = MapOptions {
            mode: Mode::Persistent,
            ..Default::default()
        }
        .retention();
        let ephemeral = MapOptions {
            mode: Mode::Ephemeral,
            key_ttl: Duration::from_secs(3),
            ..Default::default()
        }
        .retention();
        for i in 0..1000 {
            b.write_sync(&format!("p{i}"), persistent, write("k"));
        }
        for k in 0..50 {
            b.write_sync("e1", ephemeral, write(&format!("k{k}")));
            clock.advance(Duration::from_millis(10));
        }
        b.write_sync("e2", ephemeral, write("k"));
        let scheduled = |b: &MemoryMapBroker| {
            let c = b.channels.lock();
            (c.due.len(), c.scheduled.len(), c.maps.len())
        };
        assert_eq!(scheduled(&b), (2, 2, 1002));
        futures_util_free_block_on(b.expire());
        assert_eq!(scheduled(&b), (2, 2, 1002), "nothing due yet");
        // e1's keys written in its first 200 ms expire; e1 is due again, e2 not yet.
        clock.advance(Duration::from_millis(2700));
        futures_util_free_block_on(b.expire());
        assert_eq!(scheduled(&b), (2, 2, 1002));
        assert_eq!(b.channels.lock().maps.get("e1").map(MapChannel::len), Some(29));
        clock.advance(Duration::from_secs(1));
        futures_util_free_block_on(b.expire());
        assert_eq!(scheduled(&b), (0, 0, 1000), "every ephemeral key gone, and its map");
    }

    fn futures_util_free_block_on(f: BoxFuture<'_, ()>) {
        crate::engine::conformance::block_on(f);
    }
}
