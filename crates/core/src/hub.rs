//! The hub: this node's subscribers per channel, sharded by channel so that no lock is
//! global on the publication path.
//!
//! A publication is encoded at most once per encoding ([`PreparedPush`]); every subscriber
//! of that encoding gets the same shared bytes through its [`ConnectionHandle`]. A
//! subscriber that is recovering gets its pushes buffered here
//! until the session has merged history ([`Hub::finish_recovery`]), so that nothing
//! published meanwhile is lost or sent twice.
//!
//! Delta subscribers ([`SubscriberOptions::delta`]) share frames too: the hub keeps the
//! data of the channel's last publication while the channel has one, computes the Fossil
//! delta of the next publication against it once, and encodes it once per encoding. Each
//! such subscriber records which offset its SDK holds as the delta base, and gets the
//! delta frame only when that is the publication just before; the whole publication
//! otherwise. A tags filter ([`SubscriberOptions::filter`]) is evaluated per subscriber on
//! the publication's tags; a rejected publication is simply not delivered (the stream
//! position still advances).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use wshub_protocol::{ClientInfo, FilterNode, Join, Leave, Publication, Push};

use crate::connection::{ConnectionHandle, Control};
use crate::prepared::PreparedPush;

pub(crate) const SHARDS: usize = 64;

struct Entry {
    conn: Arc<dyn ConnectionHandle>,
    join_leave: bool,
    position: Position,
    /// Delta and filter state; boxed, as most subscriptions have neither.
    extra: Option<Box<Extra>>,
}

/// How a subscriber wants its publications, beyond the defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubscriberOptions {
    /// Fossil delta compression was negotiated.
    pub delta: bool,
    /// Only publications whose tags pass this (validated) filter are delivered.
    pub filter: Option<FilterNode>,
    /// A map subscriber: in step with every key, so a keyed publication's delta against
    /// the key's previous data ([`Publication::prev_data`]) always has its base.
    pub keyed: bool,
}

struct Extra {
    delta: bool,
    keyed: bool,
    /// Shared by the channel's subscribers with an identical filter ([`Channel::filters`]),
    /// so that a broadcast evaluates each distinct filter once ([`FilterMemo`]).
    filter: Option<Arc<FilterNode>>,
    /// The offset of the publication whose data the subscriber's SDK holds as its delta
    /// base, if any.
    base: Option<u64>,
}

/// Where a subscriber is in the channel's stream. 16 bytes: one per subscription, in a
/// table sized for all of them (48 bytes a bucket).
enum Position {
    /// No stream position: every publication goes out as it comes.
    Untracked,
    /// Recovering: publications wait here until [`Hub::finish_recovery`] merges them after
    /// history. Boxed to keep the entry small.
    #[allow(clippy::box_collection)] // 8 bytes instead of 24: the entry stays 48
    Recovering(Box<Vec<Arc<PreparedPush>>>),
    /// Positioned: the last offset sent, so that a gap in the live stream (a broker
    /// connection lost for a while) is noticed rather than silently skipped.
    Live(u64),
    /// A gap was reported (the client is being closed with 3010): later publications are
    /// dropped until it leaves.
    Gap,
}

/// What a live publication means for one subscriber.
enum Step {
    Send,
    Skip,
    Gap(u64),
}

impl Position {
    /// Advances over a publication at `offset` (0: not in the stream).
    fn step(&mut self, offset: u64) -> Step {
        match self {
            Position::Untracked => Step::Send,
            Position::Recovering(_) | Position::Gap => Step::Skip,
            Position::Live(_) if offset == 0 => Step::Send,
            Position::Live(last) if last.checked_add(1) == Some(offset) => {
                *last = offset;
                Step::Send
            }
            // Already sent: history can run ahead of the live stream (a publication read
            // in history at subscribe time may arrive here afterwards).
            Position::Live(last) if offset <= *last => Step::Skip,
            Position::Live(last) => {
                let expected = *last + 1;
                *self = Position::Gap; // reported once
                Step::Gap(expected)
            }
        }
    }
}

const _: () = assert!(std::mem::size_of::<Position>() == 16);

/// The verdicts of the distinct filters on one publication: a filter shared by many
/// subscribers is evaluated once (a front entry, as most channels have one filter, then a
/// short list).
#[derive(Default)]
struct FilterMemo {
    last: Option<(*const FilterNode, bool)>,
    others: Vec<(*const FilterNode, bool)>,
    /// Subscribers whose filter kept this publication from them.
    dropped: u64,
}

impl FilterMemo {
    fn passes(&mut self, f: &Arc<FilterNode>, tags: &HashMap<String, String>) -> bool {
        let key = Arc::as_ptr(f);
        match self.last {
            Some((k, v)) if k == key => {
                self.dropped += u64::from(!v);
                return v;
            }
            _ => {}
        }
        let v = match self.others.iter().find(|(k, _)| *k == key) {
            Some((_, v)) => *v,
            None => {
                let v = crate::filter::matches(f, tags);
                if self.others.len() < 64 {
                    self.others.push((key, v));
                }
                v
            }
        };
        self.last = Some((key, v));
        self.dropped += u64::from(!v);
        v
    }
}

impl Entry {
    fn send(&mut self, p: &PreparedPush, memo: &mut FilterMemo) {
        let encoding = self.conn.encoding();
        let data = match self.extra.as_deref_mut() {
            None => p.data(encoding),
            Some(x) => {
                if let (Some(f), Some(publication)) = (&x.filter, &p.push().r#pub) {
                    if !memo.passes(f, &publication.tags) {
                        return;
                    }
                }
                if let (true, Some(publication)) = (x.delta, &p.push().r#pub) {
                    let has_base = match publication.key.is_empty() {
                        true => x.base.and_then(|b| b.checked_add(1)) == Some(p.offset),
                        false => x.keyed,
                    };
                    x.base = Some(p.offset).filter(|&o| o != 0);
                    p.delta_data(encoding, has_base)
                } else {
                    p.data(encoding)
                }
            }
        };
        if let Some(d) = data {
            self.conn.deliver(d);
        }
    }
}

impl Channel {
    /// Forgets what a leaving subscriber's options held in the channel.
    fn release(&mut self, x: &Extra) {
        if x.delta {
            self.delta_subs = self.delta_subs.saturating_sub(1);
            if self.delta_subs == 0 {
                self.prev = None;
            }
        }
        if let Some(f) = &x.filter {
            if let Some(n) = self.filters.get_mut(f) {
                *n -= 1;
                if *n == 0 {
                    self.filters.remove(f);
                }
            }
        }
    }
}

/// One channel's subscribers here.
#[derive(Default)]
struct Channel {
    subs: HashMap<u64, Entry>,
    /// Subscribers with delta: while there are some, `prev` keeps the last publication.
    delta_subs: usize,
    /// The last publication's offset and data, the base of the next one's delta.
    prev: Option<(u64, Bytes)>,
    /// The distinct tags filters of the channel's subscribers, with how many use each.
    filters: HashMap<Arc<FilterNode>, usize>,
}

pub use crate::subscription::recovery::Gap;

/// This node's subscribers.
pub struct Hub {
    shards: Vec<Mutex<HashMap<String, Channel>>>,
    /// Subscriptions in all shards, kept as they change: `info` and node announcements read
    /// it without walking every channel.
    subscriptions: std::sync::atomic::AtomicUsize,
    /// `client.channel_position_max_time_lag` in milliseconds (0: none).
    max_lag_ms: i64,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            subscriptions: std::sync::atomic::AtomicUsize::new(0),
            max_lag_ms: 0,
        }
    }
}

/// Whether a publication made at `published_ms` (Unix milliseconds, 0: unknown) and
/// delivered at `now_ms` came later than `max_ms` allows (0: no limit).
pub fn lag_exceeded(published_ms: i64, now_ms: i64, max_ms: i64) -> bool {
    max_ms > 0 && published_ms > 0 && now_ms.saturating_sub(published_ms) > max_ms
}

pub(crate) fn shard_of(channel: &str) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    channel.hash(&mut h);
    (h.finish() as usize) % SHARDS
}

impl Hub {
    /// A hub whose positioned subscribers lose their state when a publication reaches it
    /// later than `max_lag` after it was published (`client.channel_position_max_time_lag`;
    /// zero: never), as Centrifugo: delivery that far behind means the node's broker
    /// connection is not keeping up.
    pub fn with_max_time_lag(max_lag: std::time::Duration) -> Self {
        Hub {
            max_lag_ms: i64::try_from(max_lag.as_millis()).unwrap_or(i64::MAX),
            ..Hub::default()
        }
    }

    /// Adds a subscriber. Returns true when it is the channel's first on this node (the
    /// node then subscribes to the broker). `recovering`: buffer its publications until
    /// [`Hub::finish_recovery`].
    pub fn add(&self, channel: &str, conn: Arc<dyn ConnectionHandle>, join_leave: bool, recovering: bool) -> bool {
        self.add_with(channel, conn, join_leave, recovering, SubscriberOptions::default())
    }

    /// [`Hub::add`] with delta compression or a tags filter.
    pub fn add_with(
        &self,
        channel: &str,
        conn: Arc<dyn ConnectionHandle>,
        join_leave: bool,
        recovering: bool,
        opts: SubscriberOptions,
    ) -> bool {
        crate::series::action(crate::series::Action::AddSubscription);
        let mut shard = self.shards[shard_of(channel)].lock();
        let first = !shard.contains_key(channel);
        let id = conn.id();
        let ch = shard.entry(channel.to_string()).or_default();
        let filter = opts.filter.map(|f| {
            let shared = match ch.filters.get_key_value(&f) {
                Some((k, _)) => k.clone(),
                None => Arc::new(f),
            };
            *ch.filters.entry(shared.clone()).or_default() += 1;
            shared
        });
        let extra = (opts.delta || filter.is_some()).then(|| {
            Box::new(Extra {
                delta: opts.delta,
                keyed: opts.keyed,
                filter,
                base: None,
            })
        });
        ch.delta_subs += usize::from(opts.delta);
        let replaced = ch.subs.insert(
            id,
            Entry {
                conn,
                join_leave,
                position: if recovering {
                    Position::Recovering(Box::default())
                } else {
                    Position::Untracked
                },
                extra,
            },
        );
        match replaced {
            None => {
                self.subscriptions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Some(old) => {
                if let Some(x) = old.extra {
                    ch.release(&x);
                }
            }
        }
        first
    }

    /// Removes a subscriber. Returns true when the channel has no subscriber left here.
    pub fn remove(&self, channel: &str, conn_id: u64) -> bool {
        let mut shard = self.shards[shard_of(channel)].lock();
        let Some(ch) = shard.get_mut(channel) else { return false };
        let Some(old) = ch.subs.remove(&conn_id) else {
            return false;
        };
        self.subscriptions.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        crate::series::action(crate::series::Action::RemoveSubscription);
        if let Some(x) = old.extra {
            ch.release(&x);
        }
        if ch.subs.is_empty() {
            shard.remove(channel);
            return true;
        }
        false
    }

    /// Ends a subscriber's recovery: the buffered publications after `delivered` (the last
    /// offset the client has, from history) go out in order, and it turns live.
    pub fn finish_recovery(&self, channel: &str, conn_id: u64, delivered: u64) -> Result<(), Gap> {
        self.finish_recovery_with_base(channel, conn_id, delivered, None)
    }

    /// [`Hub::finish_recovery`] for a delta subscriber whose SDK holds publication
    /// `delta_base` (offset and data: the last one the subscribe reply carried), if any.
    /// The channel's delta base is seeded with it when the hub has nothing newer, so that
    /// the next publication goes out as a delta.
    pub fn finish_recovery_with_base(
        &self,
        channel: &str,
        conn_id: u64,
        delivered: u64,
        delta_base: Option<(u64, Bytes)>,
    ) -> Result<(), Gap> {
        let mut shard = self.shards[shard_of(channel)].lock();
        let Some(ch) = shard.get_mut(channel) else { return Ok(()) };
        if let Some((offset, data)) = &delta_base {
            if ch.delta_subs > 0 && ch.prev.as_ref().is_none_or(|(o, _)| o < offset) {
                ch.prev = Some((*offset, data.clone()));
            }
        }
        let Some(entry) = ch.subs.get_mut(&conn_id) else {
            return Ok(());
        };
        if let Some(x) = entry.extra.as_deref_mut() {
            x.base = delta_base.map(|(o, _)| o).filter(|&o| o != 0);
        }
        let buffered = match std::mem::replace(&mut entry.position, Position::Untracked) {
            Position::Recovering(b) => *b,
            _ => Vec::new(),
        };
        let (to_send, top) = crate::subscription::recovery::merge_buffered(delivered, buffered, |p| p.offset)?;
        let mut memo = FilterMemo::default();
        for p in to_send {
            entry.send(&p, &mut memo);
        }
        entry.position = Position::Live(top);
        Ok(())
    }

    /// Delivers a publication to the channel's subscribers here (buffered for those that
    /// are recovering). Delivery happens under the shard lock, which keeps per-channel order
    /// against [`Hub::finish_recovery`].
    pub fn broadcast_publication(&self, channel: &str, publication: &Publication) {
        self.broadcast_owned(channel, publication.clone())
    }

    /// [`Hub::broadcast_publication`] of a publication the caller gives away (no copy).
    pub fn broadcast_owned(&self, channel: &str, publication: Publication) {
        // The clock is read only when a lag limit is set.
        let now_ms = match self.max_lag_ms {
            0 => 0,
            _ => crate::series::unix_millis(),
        };
        self.broadcast_at(channel, publication, now_ms)
    }

    /// [`Hub::broadcast_owned`] at `now_ms` (Unix milliseconds): a publication older than
    /// the lag limit tells the channel's positioned subscribers that their state is lost
    /// (each session unsubscribes with 2500 or closes with 3010, [`Control::Resubscribe`]).
    pub fn broadcast_at(&self, channel: &str, mut publication: Publication, now_ms: i64) {
        let lagging = lag_exceeded(publication.time, now_ms, self.max_lag_ms);
        let mut shard = self.shards[shard_of(channel)].lock();
        let Some(ch) = shard.get_mut(channel) else { return };
        if lagging {
            for entry in ch.subs.values_mut() {
                if let Position::Live(_) = entry.position {
                    tracing::debug!(channel, "client insufficient state (lag)");
                    entry.position = Position::Gap;
                    entry.conn.control(Control::Resubscribe {
                        channel: channel.to_string(),
                    });
                }
            }
        }
        // Inside the node `delta` marks a publication published with delta (crate::delta).
        let use_delta = std::mem::take(&mut publication.delta);
        // Set by the publishing node for the lag metric (crate::series::broadcast); clients
        // are not sent it, as in Centrifugo.
        publication.time = 0;
        let key_base = std::mem::take(&mut publication.prev_data);
        let offset = publication.offset;
        let prepared = if ch.delta_subs > 0 {
            let base = match &ch.prev {
                // A map key's delta is against that key's previous data.
                _ if !publication.key.is_empty() => Some(key_base).filter(|b| use_delta && !b.is_empty()),
                Some((o, data)) if use_delta && o.checked_add(1) == Some(offset) => Some(data.clone()),
                _ => None,
            };
            if publication.key.is_empty() {
                ch.prev = (offset > 0).then(|| (offset, publication.data.clone()));
            }
            let push = Push {
                channel: channel.to_string(),
                r#pub: Some(publication),
                ..Default::default()
            };
            PreparedPush::with_delta(offset, push, base)
        } else {
            let push = Push {
                channel: channel.to_string(),
                r#pub: Some(publication),
                ..Default::default()
            };
            PreparedPush::new(offset, push)
        };
        let mut memo = FilterMemo::default();
        for entry in ch.subs.values_mut() {
            if let Position::Recovering(buf) = &mut entry.position {
                buf.push(prepared.clone());
                continue;
            }
            match entry.position.step(offset) {
                Step::Send => entry.send(&prepared, &mut memo),
                Step::Skip => {}
                Step::Gap(expected) => {
                    // Publications were lost on the way to this node: the client must
                    // reconnect and recover them from history.
                    tracing::debug!(channel, expected, got = offset, "live stream gap");
                    entry.conn.control(Control::Disconnect {
                        code: wshub_protocol::codes::disconnect::INSUFFICIENT_STATE,
                        reason: "insufficient state".into(),
                    });
                }
            }
        }
        if memo.dropped > 0 {
            crate::series::tags_filter_dropped(memo.dropped);
        }
    }

    /// The channel's stream restarted under a new epoch (its history is gone, e.g. Redis
    /// lost its data): offsets start again from 1, so its positioned subscribers cannot go on
    /// and are closed with 3010 (their SDKs resubscribe and learn `recovered: false`).
    pub fn reset(&self, channel: &str) {
        let mut shard = self.shards[shard_of(channel)].lock();
        let Some(ch) = shard.get_mut(channel) else { return };
        ch.prev = None;
        for entry in ch.subs.values_mut() {
            if let Position::Live(_) = entry.position {
                entry.position = Position::Gap;
                entry.conn.control(Control::Disconnect {
                    code: wshub_protocol::codes::disconnect::INSUFFICIENT_STATE,
                    reason: "insufficient state".into(),
                });
            }
        }
    }

    /// Delivers a join or leave push to the subscribers that asked for them.
    pub fn broadcast_join_leave(&self, channel: &str, info: &ClientInfo, join: bool) {
        let mut shard = self.shards[shard_of(channel)].lock();
        let Some(ch) = shard.get_mut(channel) else { return };
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
        for entry in ch
            .subs
            .values()
            .filter(|e| e.join_leave && !matches!(e.position, Position::Recovering(_)))
        {
            if let Some(d) = prepared.data(entry.conn.encoding()) {
                entry.conn.deliver(d);
            }
        }
    }

    /// The offset a positioned subscriber has been sent up to (`None`: not positioned here,
    /// still recovering, or already told of a gap).
    pub fn position(&self, channel: &str, conn_id: u64) -> Option<u64> {
        let shard = self.shards[shard_of(channel)].lock();
        match shard.get(channel)?.subs.get(&conn_id)?.position {
            Position::Live(offset) => Some(offset),
            _ => None,
        }
    }

    /// Channels with at least one subscriber here, and their subscriber counts.
    pub fn channels(&self) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        for shard in &self.shards {
            out.extend(shard.lock().iter().map(|(c, ch)| (c.clone(), ch.subs.len())));
        }
        out
    }

    /// The channels each of `conns` (connection ids) is subscribed to here, sorted. Walks
    /// every channel: for the admin's view of a user's connections, not for a hot path.
    pub fn channels_of(&self, conns: &[u64]) -> HashMap<u64, Vec<String>> {
        let mut out: HashMap<u64, Vec<String>> = HashMap::new();
        for shard in &self.shards {
            for (name, ch) in shard.lock().iter() {
                for id in conns.iter().filter(|id| ch.subs.contains_key(id)) {
                    out.entry(*id).or_default().push(name.clone());
                }
            }
        }
        out.values_mut().for_each(|v| v.sort());
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
        self.shards[shard_of(channel)].lock().get(channel).map_or(0, |ch| ch.subs.len())
    }
}

#[cfg(test)]
mod tests;
