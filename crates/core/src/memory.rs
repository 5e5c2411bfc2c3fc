//! The in-memory engine: the embedded default for one node.
//!
//! Streams keep at most `history_size` publications for at most `history_ttl`, each with an
//! offset that grows by one, under an epoch chosen when the stream is created (a restart
//! loses history, so the epoch changes and clients learn they cannot recover).
//! Publishing appends and hands the publication to the node under the same lock, so every
//! node-side subscriber sees a channel's publications in offset order.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use wshub_protocol::{ClientInfo, Publication};

use crate::clock::new_epoch;
pub use crate::clock::{Clock, ManualClock, SystemClock};
use crate::cluster::{ControlHandler, NodeControl};
use crate::engine::*;

const SHARDS: usize = 64;

#[derive(Debug, Default)]
struct Idempotent {
    results: HashMap<(String, String), (Instant, StreamPosition)>,
    order: VecDeque<(Instant, (String, String))>,
}

impl Idempotent {
    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if *at > now {
                break;
            }
            if let Some((_, key)) = self.order.pop_front() {
                if self.results.get(&key).is_some_and(|(exp, _)| *exp <= now) {
                    self.results.remove(&key);
                }
            }
        }
    }
}

struct Stream {
    epoch: String,
    top: u64,
    items: VecDeque<(Instant, Publication)>,
    /// When the epoch and top offset are forgotten (`history_meta_ttl` after the last
    /// publication or history read); a stream made again gets a new epoch.
    meta_expires: Instant,
}

impl Stream {
    fn new(epoch: &str, meta_expires: Instant) -> Self {
        Stream {
            epoch: epoch.to_string(),
            top: 0,
            items: VecDeque::new(),
            meta_expires,
        }
    }

    fn expire(&mut self, now: Instant) {
        while matches!(self.items.front(), Some((exp, _)) if *exp <= now) {
            self.items.pop_front();
        }
    }
}

/// A publication's `meta_ttl`, zero meaning the default.
fn meta_ttl(ttl: Duration) -> Duration {
    if ttl.is_zero() {
        crate::config::DEFAULT_HISTORY_META_TTL
    } else {
        ttl
    }
}

/// One shard's streams, and when its next pass over them for expired positions is due.
#[derive(Default)]
struct Streams {
    map: HashMap<String, Stream>,
    next_sweep: Option<Instant>,
}

impl std::ops::Deref for Streams {
    type Target = HashMap<String, Stream>;
    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl std::ops::DerefMut for Streams {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.map
    }
}

/// Between two passes of a shard over its streams: positions whose `history_meta_ttl` ran
/// out are dropped at most this late (or when touched), for a pass in O(streams) paid by
/// one publish a minute.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Whether a stream was dropped.
fn sweep(shard: &mut Streams, now: Instant) -> bool {
    if shard.next_sweep.is_some_and(|t| t > now) {
        return false;
    }
    shard.next_sweep = Some(now + SWEEP_EVERY);
    let before = shard.map.len();
    shard.map.retain(|_, s| s.meta_expires > now);
    shard.map.len() != before
}

fn shard_of(channel: &str) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    channel.hash(&mut h);
    (h.finish() as usize) % SHARDS
}

/// The in-memory engine.
pub struct MemoryEngine {
    streams: Vec<Mutex<Streams>>,
    /// Results of idempotent publishes, per shard of channel: (channel, key) -> (expiry,
    /// position), and the same keys in expiry order (one TTL per node: they expire in the
    /// order they were made, so the queue's front is always the next to go).
    idempotent: Vec<Mutex<Idempotent>>,
    presence: Vec<Mutex<HashMap<String, HashMap<String, ClientInfo>>>>,
    handler: OnceLock<Arc<dyn BrokerHandler>>,
    control: OnceLock<Arc<dyn ControlHandler>>,
    clock: Arc<dyn Clock>,
    /// Every stream's epoch: this engine's history is lost only with the engine itself, so
    /// one epoch per engine says all an epoch must. It also lets a history read of a channel
    /// never published answer its position without creating a stream (reads of many names
    /// would otherwise grow memory).
    /// Changed whenever a stream's position is forgotten (`history_meta_ttl`): a client
    /// positioned in the forgotten stream must not take a new stream of the same name, under
    /// the same epoch, for the old one.
    epoch: Mutex<String>,
}

impl Default for MemoryEngine {
    fn default() -> Self {
        Self::new(Arc::new(SystemClock))
    }
}

impl MemoryEngine {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        MemoryEngine {
            streams: (0..SHARDS).map(|_| Mutex::new(Streams::default())).collect(),
            idempotent: (0..SHARDS).map(|_| Mutex::new(Idempotent::default())).collect(),
            presence: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            handler: OnceLock::new(),
            control: OnceLock::new(),
            clock,
            epoch: Mutex::new(new_epoch()),
        }
    }

    fn publish_sync(&self, channel: &str, mut publication: Publication, opts: &PublishOptions) -> StreamPosition {
        let mut shard = self.streams[shard_of(channel)].lock();
        // Checked and recorded under the stream's lock: two publishes with one key race to
        // one publication.
        let mut idempotent = opts.idempotency_key.as_ref().map(|k| {
            let mut table = self.idempotent[shard_of(channel)].lock();
            table.expire(self.clock.now());
            (
                table.results.get(&(channel.to_string(), k.clone())).map(|(_, p)| p.clone()),
                table,
                k,
            )
        });
        if let Some((Some(first), _, _)) = &idempotent {
            return first.clone();
        }
        let position = if opts.history_size > 0 && !opts.history_ttl.is_zero() {
            let now = self.clock.now();
            let meta_expires = now + meta_ttl(opts.meta_ttl);
            if sweep(&mut shard, now) {
                *self.epoch.lock() = new_epoch();
            }
            let s = shard
                .entry(channel.to_string())
                .or_insert_with(|| Stream::new(&self.epoch.lock(), meta_expires));
            if s.meta_expires <= now {
                // Forgotten: a new stream, under a new epoch (clients positioned in the old
                // one learn they cannot recover).
                *s = Stream::new(&new_epoch(), meta_expires);
            }
            s.meta_expires = meta_expires;
            s.expire(now);
            s.top += 1;
            publication.offset = s.top;
            s.items.push_back((now + opts.history_ttl, publication.clone()));
            while s.items.len() > opts.history_size {
                s.items.pop_front();
            }
            StreamPosition {
                offset: s.top,
                epoch: s.epoch.clone(),
            }
        } else {
            StreamPosition::default()
        };
        if let Some(h) = self.handler.get() {
            // Still under the shard lock: deliveries of one channel keep offset order.
            h.handle_publication(channel, &publication);
        }
        if let Some((_, table, key)) = idempotent.as_mut() {
            let expires = self.clock.now() + opts.idempotent_result_ttl;
            let k = (channel.to_string(), key.to_string());
            table.results.insert(k.clone(), (expires, position.clone()));
            table.order.push_back((expires, k));
        }
        position
    }

    fn history_sync(&self, channel: &str, q: &HistoryQuery) -> Result<HistoryResult, EngineError> {
        let mut shard = self.streams[shard_of(channel)].lock();
        let now = self.clock.now();
        if shard.get(channel).is_some_and(|s| s.meta_expires <= now) {
            shard.remove(channel);
            *self.epoch.lock() = new_epoch();
        }
        let mut never_published;
        let s = match shard.get_mut(channel) {
            Some(s) => {
                // A read keeps the position alive too (as Centrifugo's engines).
                s.meta_expires = s.meta_expires.max(now + meta_ttl(q.meta_ttl));
                s
            }
            None => {
                never_published = Stream::new(&self.epoch.lock(), now);
                &mut never_published
            }
        };
        s.expire(now);
        let position = StreamPosition {
            offset: s.top,
            epoch: s.epoch.clone(),
        };
        let from = match &q.since {
            Some(since) => {
                if !since.epoch.is_empty() && since.epoch != s.epoch {
                    return Err(EngineError::UnrecoverablePosition);
                }
                since.offset + 1
            }
            None => 0,
        };
        let limit = if q.limit < 0 { usize::MAX } else { q.limit as usize };
        let mut publications: Vec<Publication> = if limit == 0 {
            Vec::new()
        } else if q.reverse {
            s.items
                .iter()
                .rev()
                .map(|(_, p)| p)
                .filter(|p| p.offset >= from)
                .take(limit)
                .cloned()
                .collect()
        } else {
            s.items
                .iter()
                .map(|(_, p)| p)
                .filter(|p| p.offset >= from)
                .take(limit)
                .cloned()
                .collect()
        };
        publications.shrink_to_fit();
        Ok(HistoryResult { publications, position })
    }
}

/// A cluster of one: control messages come straight back to this node.
impl NodeControl for MemoryEngine {
    fn set_control_handler(&self, handler: Arc<dyn ControlHandler>) {
        let _ = self.control.set(handler);
    }

    fn publish_control(&self, data: Vec<u8>) -> BoxFuture<'_, Result<(), EngineError>> {
        if let Some(h) = self.control.get() {
            h.handle_control(&data);
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

impl Broker for MemoryEngine {
    fn set_handler(&self, handler: Arc<dyn BrokerHandler>) {
        let _ = self.handler.set(handler);
    }
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        publication: Publication,
        opts: &'a PublishOptions,
    ) -> BoxFuture<'a, Result<StreamPosition, EngineError>> {
        let r = self.publish_sync(channel, publication, opts);
        Box::pin(std::future::ready(Ok(r)))
    }
    fn publish_join<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BoxFuture<'a, Result<(), EngineError>> {
        if let Some(h) = self.handler.get() {
            h.handle_join(channel, &info);
        }
        Box::pin(std::future::ready(Ok(())))
    }
    fn publish_leave<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BoxFuture<'a, Result<(), EngineError>> {
        if let Some(h) = self.handler.get() {
            h.handle_leave(channel, &info);
        }
        Box::pin(std::future::ready(Ok(())))
    }
    fn history<'a>(&'a self, channel: &'a str, query: HistoryQuery) -> BoxFuture<'a, Result<HistoryResult, EngineError>> {
        Box::pin(std::future::ready(self.history_sync(channel, &query)))
    }
    fn remove_history<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        let mut shard = self.streams[shard_of(channel)].lock();
        if let Some(s) = shard.get_mut(channel) {
            // The offsets and epoch stay: clients positioned in the stream are not misled.
            s.items.clear();
        }
        Box::pin(std::future::ready(Ok(())))
    }
    fn subscribe<'a>(&'a self, _channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(std::future::ready(Ok(())))
    }
    fn unsubscribe<'a>(&'a self, _channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

impl PresenceManager for MemoryEngine {
    fn add_presence<'a>(&'a self, channel: &'a str, client: &'a str, info: ClientInfo) -> BoxFuture<'a, Result<(), EngineError>> {
        self.presence[shard_of(channel)]
            .lock()
            .entry(channel.to_string())
            .or_default()
            .insert(client.to_string(), info);
        Box::pin(std::future::ready(Ok(())))
    }
    fn remove_presence<'a>(&'a self, channel: &'a str, client: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        let mut shard = self.presence[shard_of(channel)].lock();
        if let Some(m) = shard.get_mut(channel) {
            m.remove(client);
            if m.is_empty() {
                shard.remove(channel);
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }
    /// Under the shard's lock: sessions on other runtime threads cannot interleave.
    fn join_presence<'a>(
        &'a self,
        channel: &'a str,
        client: &'a str,
        info: ClientInfo,
        max_users: usize,
    ) -> BoxFuture<'a, Result<Joined, EngineError>> {
        let mut shard = self.presence[shard_of(channel)].lock();
        let m = shard.entry(channel.to_string()).or_default();
        let joined = if m.contains_key(client) {
            Joined::Again
        } else if m.values().any(|i| i.user == info.user) {
            Joined::Another
        } else if max_users > 0 && m.values().map(|i| i.user.as_str()).collect::<std::collections::HashSet<_>>().len() >= max_users {
            Joined::Full
        } else {
            Joined::First
        };
        if joined != Joined::Full {
            m.insert(client.to_string(), info);
        } else if m.is_empty() {
            shard.remove(channel);
        }
        Box::pin(std::future::ready(Ok(joined)))
    }
    fn leave_presence<'a>(&'a self, channel: &'a str, client: &'a str) -> BoxFuture<'a, Result<bool, EngineError>> {
        let mut shard = self.presence[shard_of(channel)].lock();
        let mut last = false;
        if let Some(m) = shard.get_mut(channel) {
            if let Some(info) = m.remove(client) {
                last = !m.values().any(|i| i.user == info.user);
            }
            if m.is_empty() {
                shard.remove(channel);
            }
        }
        Box::pin(std::future::ready(Ok(last)))
    }
    fn presence<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<HashMap<String, ClientInfo>, EngineError>> {
        let r = self.presence[shard_of(channel)].lock().get(channel).cloned().unwrap_or_default();
        Box::pin(std::future::ready(Ok(r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn block<T>(f: BoxFuture<'_, T>) -> T {
        // The memory engine's futures are ready at once.
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = f;
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("memory engine future pending"),
        }
    }

    fn publication(n: u8) -> Publication {
        Publication {
            data: Bytes::from(format!("{n}")),
            ..Default::default()
        }
    }

    /// Where the memory engine differs from Redis (which expires the whole stream
    /// `history_ttl` after the last publication): each publication expires on its own. The
    /// common contract is in `engine::conformance`.
    /// History reads of channels never published answer the engine's epoch and create
    /// nothing; the first publication keeps that epoch.
    #[test]
    fn history_of_unknown_channels_creates_nothing() {
        let e = MemoryEngine::default();
        let mut epochs = std::collections::HashSet::new();
        for i in 0..10_000 {
            let h = block(e.history(&format!("never-{i}"), HistoryQuery::ALL)).unwrap();
            assert_eq!((h.position.offset, h.publications.len()), (0, 0));
            epochs.insert(h.position.epoch);
        }
        assert_eq!(epochs.len(), 1);
        assert_eq!(e.streams.iter().map(|s| s.lock().len()).sum::<usize>(), 0, "no stream created");
        let opts = PublishOptions {
            history_size: 10,
            history_ttl: Duration::from_secs(10),
            ..Default::default()
        };
        let pos = block(e.publish("never-1", publication(1), &opts)).unwrap();
        assert!(epochs.contains(&pos.epoch), "the epoch read before is kept");
        let stale = HistoryQuery {
            since: Some(StreamPosition {
                offset: 0,
                epoch: "other".into(),
            }),
            ..Default::default()
        };
        assert_eq!(block(e.history("never-2", stale)), Err(EngineError::UnrecoverablePosition));
    }

    /// An idempotency key's result is kept for its window, then the key publishes again.
    #[test]
    fn idempotent_results_expire() {
        let clock = Arc::new(ManualClock::new());
        let e = MemoryEngine::new(clock.clone());
        let opts = PublishOptions {
            history_size: 10,
            history_ttl: Duration::from_secs(1000),
            idempotency_key: Some("k".into()),
            idempotent_result_ttl: Duration::from_secs(300),
            ..Default::default()
        };
        assert_eq!(block(e.publish("c", publication(1), &opts)).unwrap().offset, 1);
        clock.advance(Duration::from_secs(299));
        assert_eq!(block(e.publish("c", publication(1), &opts)).unwrap().offset, 1);
        clock.advance(Duration::from_secs(2));
        assert_eq!(block(e.publish("c", publication(1), &opts)).unwrap().offset, 2, "window over");
        assert_eq!(e.idempotent[shard_of("c")].lock().results.len(), 1, "the expired one is gone");
    }

    #[test]
    fn history_ttl_expires_publication_by_publication() {
        let clock = Arc::new(ManualClock::new());
        let e = MemoryEngine::new(clock.clone());
        let opts = PublishOptions {
            history_size: 10,
            history_ttl: Duration::from_secs(10),
            ..Default::default()
        };
        block(e.publish("c", publication(1), &opts)).unwrap();
        clock.advance(Duration::from_secs(6));
        block(e.publish("c", publication(2), &opts)).unwrap();
        clock.advance(Duration::from_secs(6));
        let all = HistoryQuery::ALL;
        let h = block(e.history("c", all.clone())).unwrap();
        assert_eq!(h.publications.iter().map(|p| p.offset).collect::<Vec<_>>(), [2]);
        clock.advance(Duration::from_secs(4));
        let h = block(e.history("c", all)).unwrap();
        assert_eq!(h.publications, []);
        assert_eq!(h.position.offset, 2);
    }

    #[test]
    fn presence_join_and_leave_judge_the_user_and_the_limit() {
        let e = MemoryEngine::default();
        let info = |c: &str, u: &str| ClientInfo {
            client: c.into(),
            user: u.into(),
            ..Default::default()
        };
        assert_eq!(block(e.join_presence("c", "a1", info("a1", "a"), 2)).unwrap(), Joined::First);
        assert_eq!(block(e.join_presence("c", "a2", info("a2", "a"), 2)).unwrap(), Joined::Another);
        assert_eq!(block(e.join_presence("c", "a2", info("a2", "a"), 2)).unwrap(), Joined::Again);
        assert_eq!(block(e.join_presence("c", "b1", info("b1", "b"), 2)).unwrap(), Joined::First);
        assert_eq!(block(e.join_presence("c", "c1", info("c1", "c"), 2)).unwrap(), Joined::Full);
        assert_eq!(block(e.presence("c")).unwrap().len(), 3, "the refused one not added");
        assert!(!block(e.leave_presence("c", "a1")).unwrap(), "a2 is still there");
        assert!(block(e.leave_presence("c", "a2")).unwrap());
        assert!(!block(e.leave_presence("c", "a2")).unwrap(), "not there any more");
        assert!(block(e.leave_presence("c", "b1")).unwrap());
        assert!(e.presence[shard_of("c")].lock().is_empty(), "no empty map left behind");
        assert_eq!(block(e.join_presence("d", "x", info("x", "x"), 0)).unwrap(), Joined::First);
    }

    #[test]
    fn presence_add_remove() {
        let e = MemoryEngine::default();
        block(e.add_presence(
            "c",
            "a",
            ClientInfo {
                user: "u1".into(),
                client: "a".into(),
                ..Default::default()
            },
        ))
        .unwrap();
        block(e.add_presence(
            "c",
            "b",
            ClientInfo {
                user: "u1".into(),
                client: "b".into(),
                ..Default::default()
            },
        ))
        .unwrap();
        assert_eq!(block(e.presence("c")).unwrap().len(), 2);
        block(e.remove_presence("c", "a")).unwrap();
        block(e.remove_presence("c", "b")).unwrap();
        assert!(block(e.presence("c")).unwrap().is_empty());
        assert!(e.presence[shard_of("c")].lock().is_empty(), "no empty map left behind");
    }
}
