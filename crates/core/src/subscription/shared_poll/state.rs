//! One shared poll channel on this node: which connection tracks which key at which
//! version, what the node knows of each key, and when the backend is asked next. Pure:
//! time comes in as arguments, and what must be pushed, polled or unsubscribed comes out.
//!
//! A key is polled once for all its trackers. A timer cycle every `refresh_interval` asks
//! for every key, in batches of `refresh_batch_size` spread over the interval; the next
//! cycle waits for the last batch of the one before, so a slow backend slows polling
//! instead of piling up requests. A key new to the node (or tracked by a connection that
//! holds nothing of it) is asked for at once, in a notified poll of just those keys.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use bytes::Bytes;

use super::SharedPollOptions;

/// Keys waiting for a notified poll, at most (more are left to the next timer cycle).
pub const NOTIFY_CAPACITY: usize = 4096;

/// One connection's hold on a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tracker {
    /// The version the connection holds (0: none).
    version: u64,
    /// Unix seconds its signature expires (0: never).
    expire_at: i64,
    /// The connection has the key's whole data: a delta against it can be applied.
    delta_ready: bool,
}

/// What the node knows of a key.
#[derive(Debug, Default)]
struct Entry {
    version: u64,
    /// Versionless mode: the hash of the last data.
    hash: u64,
    /// A tracker holds less than `version`: the next poll asks as if the node had nothing,
    /// and sends the answer to whoever lacks it even when it did not change.
    needs_broadcast: bool,
    /// Published directly since the last timer cycle: that cycle need not ask for it.
    fresh: bool,
    trackers: HashMap<u64, Tracker>,
}

/// A connection tracking keys of the channel.
#[derive(Debug)]
struct Conn<H> {
    handle: H,
    /// Fossil delta negotiated at subscribe.
    delta: bool,
    keys: HashSet<String>,
}

/// A key and the version to ask the backend about (what the node holds).
pub type Item = (String, u64);

/// A backend request to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poll {
    pub items: Vec<Item>,
    /// A notified poll (new keys) rather than a batch of the timer cycle.
    pub notified: bool,
}

/// One key of a backend answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answered {
    pub key: String,
    pub data: Bytes,
    /// The backend's previous data, a delta base when the node keeps none.
    pub prev_data: Bytes,
    pub version: u64,
    pub removed: bool,
}

/// A push for the trackers of one key.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery<H> {
    pub key: String,
    pub version: u64,
    pub data: Bytes,
    pub removed: bool,
    /// The Fossil patch from the previous version's data, when smaller.
    pub patch: Option<Bytes>,
    /// Who gets it, and whether as the delta.
    pub to: Vec<(H, Recipient)>,
}

/// How one connection gets a [`Delivery`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipient {
    /// The data as it is (no delta negotiated).
    Plain,
    /// Delta negotiated: whole (on JSON, as a string, the SDK's delta base).
    Whole,
    /// Delta negotiated and the connection holds the base.
    Delta,
}

/// What an answer or publication changed.
#[derive(Debug)]
pub struct Applied<H> {
    pub deliveries: Vec<Delivery<H>>,
    /// The backend's epoch changed: these connections' versions mean nothing now, they
    /// must subscribe again (2500) and track from scratch.
    pub resubscribe: Vec<H>,
    /// Keys nobody tracks any more (removed by the backend).
    pub gone: Vec<String>,
    pub changed: usize,
    pub unchanged: usize,
}

/// A track refused for its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitExceeded;

/// What a track did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tracked {
    /// Keys new to the node (a shared broker subscription to make, if any).
    pub new_keys: Vec<String>,
    /// Keys nobody tracks any more (inline untrack).
    pub gone: Vec<String>,
}

/// One channel's state. `H` is what reaches a connection (its handle).
#[derive(Debug)]
pub struct ChannelState<H> {
    opts: SharedPollOptions,
    epoch: String,
    entries: HashMap<String, Entry>,
    conns: HashMap<u64, Conn<H>>,
    /// Versionless mode: the last synthetic version given.
    counter: u64,
    next_cycle: Instant,
    /// The current timer cycle's batches not sent yet, with when each is due.
    batches: VecDeque<(Instant, Vec<String>)>,
    in_flight: usize,
    notified: Vec<String>,
    notified_set: HashSet<String>,
    notify_in_flight: bool,
    /// Notified keys dropped (queue full), for the metrics.
    pub dropped_notifications: u64,
    /// Since when nobody tracks anything.
    empty_since: Option<Instant>,
}

impl<H: Clone> ChannelState<H> {
    /// A channel's state, first polled a `refresh_interval` after `now`.
    pub fn new(opts: SharedPollOptions, epoch: String, now: Instant) -> Self {
        ChannelState {
            next_cycle: now + opts.interval(),
            opts,
            epoch,
            entries: HashMap::new(),
            conns: HashMap::new(),
            counter: 0,
            batches: VecDeque::new(),
            in_flight: 0,
            notified: Vec::new(),
            notified_set: HashSet::new(),
            notify_in_flight: false,
            dropped_notifications: 0,
            empty_since: Some(now),
        }
    }

    pub fn options(&self) -> &SharedPollOptions {
        &self.opts
    }

    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    pub fn num_keys(&self) -> usize {
        self.entries.len()
    }

    pub fn is_tracked(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// Keys `conn` tracks.
    pub fn num_tracked_by(&self, conn: u64) -> usize {
        self.conns.get(&conn).map_or(0, |c| c.keys.len())
    }

    fn notify(&mut self, key: &str) {
        if self.notified_set.contains(key) {
            return;
        }
        if self.notified.len() >= NOTIFY_CAPACITY {
            self.dropped_notifications += 1;
            return;
        }
        self.notified_set.insert(key.to_string());
        self.notified.push(key.to_string());
    }

    /// `conn` tracks `items` (key, version it holds, signature expiry), deduplicated by
    /// the caller, then stops tracking `untrack` (keys of a signed batch it dropped
    /// since). Refused when that would take it past `max_keys_per_connection`.
    pub fn track(
        &mut self,
        conn: u64,
        handle: &H,
        delta: bool,
        items: &[(String, u64, i64)],
        untrack: &[String],
    ) -> Result<Tracked, LimitExceeded> {
        let current = self.conns.get(&conn).map(|c| &c.keys);
        let has = |k: &str| current.is_some_and(|c| c.contains(k));
        let dropping: HashSet<&str> = untrack.iter().map(String::as_str).collect();
        let freed = dropping.iter().filter(|k| has(k)).count();
        let added = items.iter().filter(|(k, ..)| !has(k) && !dropping.contains(k.as_str())).count();
        let now_held = current.map_or(0, HashSet::len);
        if now_held.saturating_sub(freed).saturating_add(added) > self.opts.max_keys() {
            return Err(LimitExceeded);
        }
        let versioned = self.opts.mode.is_versioned();
        let c = self.conns.entry(conn).or_insert_with(|| Conn {
            handle: handle.clone(),
            delta,
            keys: HashSet::new(),
        });
        let mut out = Tracked::default();
        let mut to_notify = Vec::new();
        for (key, version, expire_at) in items {
            c.keys.insert(key.clone());
            let is_new = !self.entries.contains_key(key);
            let e = self.entries.entry(key.clone()).or_default();
            // A versionless node numbers versions itself: what a client holds is only
            // comparable within the epoch it got it in, which the SDK resets on change.
            let held = if versioned || *version <= e.version { *version } else { 0 };
            e.trackers.insert(
                conn,
                Tracker {
                    version: held,
                    expire_at: *expire_at,
                    delta_ready: false,
                },
            );
            if is_new {
                out.new_keys.push(key.clone());
                if held == 0 {
                    to_notify.push(key.clone());
                }
            } else if (held == 0 || e.version > held) && !e.needs_broadcast {
                e.needs_broadcast = true;
                to_notify.push(key.clone());
            }
        }
        for k in to_notify {
            self.notify(&k);
        }
        self.empty_since = None;
        out.gone = self.untrack(conn, untrack);
        Ok(out)
    }

    /// `conn` stops tracking `keys` (those it does not track are ignored); the keys nobody
    /// tracks any more.
    pub fn untrack(&mut self, conn: u64, keys: &[String]) -> Vec<String> {
        let mut gone = Vec::new();
        let Some(c) = self.conns.get_mut(&conn) else { return gone };
        for k in keys {
            if !c.keys.remove(k) {
                continue;
            }
            if let Some(e) = self.entries.get_mut(k) {
                e.trackers.remove(&conn);
                if e.trackers.is_empty() {
                    self.entries.remove(k);
                    gone.push(k.clone());
                }
            }
        }
        if c.keys.is_empty() {
            self.conns.remove(&conn);
        }
        gone
    }

    /// `conn` leaves (unsubscribed or closed); the keys nobody tracks any more.
    pub fn remove_conn(&mut self, conn: u64) -> Vec<String> {
        let keys: Vec<String> = self.conns.get(&conn).map(|c| c.keys.iter().cloned().collect()).unwrap_or_default();
        self.untrack(conn, &keys)
    }

    /// Drops, silently, the keys whose signature expired more than
    /// `track_expired_extra_delay` before Unix time `now` (the SDK refreshes signatures
    /// before that); the keys nobody tracks any more.
    pub fn expire(&mut self, now: i64) -> Vec<String> {
        let extra = i64::try_from(self.opts.expired_extra_delay().as_secs()).unwrap_or(i64::MAX);
        let mut expired: Vec<(u64, String)> = Vec::new();
        for (k, e) in &self.entries {
            for (conn, t) in &e.trackers {
                if t.expire_at > 0 && now > t.expire_at.saturating_add(extra) {
                    expired.push((*conn, k.clone()));
                }
            }
        }
        let mut gone = Vec::new();
        for (conn, k) in expired {
            gone.extend(self.untrack(conn, &[k]));
        }
        gone
    }

    /// The channel has been tracked by nobody for `channel_shutdown_delay`: its state can go.
    pub fn is_idle(&self, now: Instant) -> bool {
        self.entries.is_empty() && self.empty_since.is_some_and(|s| now >= s + self.opts.shutdown_delay())
    }

    /// Notes that nobody tracks anything any more, from `now`.
    pub fn note_empty(&mut self, now: Instant) {
        if self.entries.is_empty() && self.empty_since.is_none() {
            self.empty_since = Some(now);
        }
    }

    fn item(&self, key: &str) -> Option<Item> {
        let e = self.entries.get(key)?;
        let version = match (self.opts.mode.is_versioned(), e.needs_broadcast) {
            (true, false) => e.version,
            _ => 0,
        };
        Some((key.to_string(), version))
    }

    /// The backend requests due at `now`. Each must be followed by [`Self::polled`].
    pub fn take_due(&mut self, now: Instant) -> Vec<Poll> {
        let mut out = Vec::new();
        if !self.notified.is_empty() && !self.notify_in_flight {
            let keys = std::mem::take(&mut self.notified);
            self.notified_set.clear();
            let items: Vec<Item> = keys.iter().filter_map(|k| self.item(k)).collect();
            if !items.is_empty() {
                self.notify_in_flight = true;
                out.push(Poll { items, notified: true });
            }
        }
        if self.batches.is_empty() && self.in_flight == 0 && now >= self.next_cycle {
            self.next_cycle = now + self.opts.interval();
            let mut keys: Vec<String> = Vec::with_capacity(self.entries.len());
            for (k, e) in &mut self.entries {
                if std::mem::take(&mut e.fresh) {
                    continue;
                }
                keys.push(k.clone());
            }
            keys.sort_unstable();
            let size = self.opts.batch_size();
            let n = keys.len().div_ceil(size).max(1);
            let step = self.opts.interval() / u32::try_from(n).unwrap_or(u32::MAX);
            let mut at = now;
            for chunk in keys.chunks(size) {
                self.batches.push_back((at, chunk.to_vec()));
                at += step;
            }
        }
        while self.batches.front().is_some_and(|(at, _)| *at <= now) {
            let Some((_, keys)) = self.batches.pop_front() else { break };
            let items: Vec<Item> = keys.iter().filter_map(|k| self.item(k)).collect();
            if !items.is_empty() {
                self.in_flight += 1;
                out.push(Poll { items, notified: false });
            }
        }
        out
    }

    /// A request of [`Self::take_due`] is over (answered or not).
    pub fn polled(&mut self, notified: bool) {
        match notified {
            true => self.notify_in_flight = false,
            false => self.in_flight = self.in_flight.saturating_sub(1),
        }
    }

    /// When [`Self::take_due`] has something next (a notified poll waiting for the one in
    /// flight is due when that one ends, not before).
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let mut d: Option<Instant> = None;
        let mut at = |t: Instant| d = Some(d.map_or(t, |x| x.min(t)));
        if !self.notified.is_empty() && !self.notify_in_flight {
            at(now);
        }
        match self.batches.front() {
            Some((t, _)) => at(*t),
            None if self.in_flight == 0 && !self.entries.is_empty() => at(self.next_cycle),
            None => {}
        }
        if let (Some(s), true) = (self.empty_since, self.entries.is_empty()) {
            at(s + self.opts.shutdown_delay());
        }
        d
    }

    /// The backend's epoch (versioned mode): a new one invalidates every version held, so
    /// every tracker is dropped, to subscribe again and track from scratch. The keys
    /// nobody tracks any more go to `gone`.
    fn flip(&mut self, epoch: &str, gone: &mut Vec<String>) -> Vec<H> {
        if !self.opts.mode.is_versioned() || self.epoch == epoch {
            return Vec::new();
        }
        let first = self.epoch.is_empty() && self.entries.values().all(|e| e.version == 0);
        self.epoch = epoch.to_string();
        if first {
            // Nothing was delivered under the old (empty) epoch: adopt the backend's.
            return Vec::new();
        }
        gone.extend(self.entries.drain().map(|(k, _)| k));
        self.notified.clear();
        self.notified_set.clear();
        self.batches.clear();
        self.conns.drain().map(|(_, c)| c.handle).collect()
    }

    /// Applies a backend answer (or a direct publication, `fresh`): pushes for what
    /// changed, to the trackers that lack it.
    pub fn apply(&mut self, epoch: &str, answered: Vec<Answered>, fresh: bool) -> Applied<H> {
        let mut gone = Vec::new();
        let resubscribe = self.flip(epoch, &mut gone);
        let versioned = self.opts.mode.is_versioned();
        let mut applied = Applied {
            deliveries: Vec::new(),
            resubscribe,
            gone,
            changed: 0,
            unchanged: 0,
        };
        for a in answered {
            if a.removed {
                self.remove_key(&a.key, &mut applied);
                continue;
            }
            let Some(e) = self.entries.get_mut(&a.key) else { continue };
            let prev_version = e.version;
            let (version, data, changed) = if versioned {
                if a.version > e.version {
                    e.version = a.version;
                    (a.version, a.data, true)
                } else if e.needs_broadcast && a.version == e.version && e.version > 0 {
                    (a.version, a.data, false)
                } else {
                    applied.unchanged += 1;
                    continue;
                }
            } else {
                let hash = xxhash_rust::xxh64::xxh64(&a.data, 0);
                if e.version == 0 || hash != e.hash {
                    e.hash = hash;
                    self.counter += 1;
                    e.version = self.counter;
                    (self.counter, a.data, true)
                } else if e.needs_broadcast && e.version > 0 {
                    (e.version, a.data, false)
                } else {
                    applied.unchanged += 1;
                    continue;
                }
            };
            e.needs_broadcast = false;
            e.fresh |= fresh;
            match changed {
                true => applied.changed += 1,
                false => applied.unchanged += 1,
            }
            let patch = match (changed && !a.prev_data.is_empty(), prev_version) {
                (true, p) if p > 0 => crate::delta::patch(&a.prev_data, &data),
                _ => None,
            };
            let mut to = Vec::new();
            for (conn, t) in e.trackers.iter_mut() {
                if t.version >= version {
                    continue;
                }
                let Some(c) = self.conns.get(conn) else { continue };
                let how = match (c.delta, t.delta_ready && t.version == prev_version && patch.is_some()) {
                    (false, _) => Recipient::Plain,
                    (true, false) => Recipient::Whole,
                    (true, true) => Recipient::Delta,
                };
                t.version = version;
                t.delta_ready = c.delta;
                to.push((c.handle.clone(), how));
            }
            if !to.is_empty() {
                applied.deliveries.push(Delivery {
                    key: a.key,
                    version,
                    data,
                    removed: false,
                    patch,
                    to,
                });
            }
        }
        applied
    }

    fn remove_key(&mut self, key: &str, applied: &mut Applied<H>) {
        let Some(e) = self.entries.remove(key) else { return };
        let mut to = Vec::new();
        for conn in e.trackers.keys() {
            if let Some(c) = self.conns.get_mut(conn) {
                c.keys.remove(key);
                to.push((c.handle.clone(), Recipient::Plain));
            }
        }
        self.conns.retain(|_, c| !c.keys.is_empty());
        applied.gone.push(key.to_string());
        applied.deliveries.push(Delivery {
            key: key.to_string(),
            version: 0,
            data: Bytes::new(),
            removed: true,
            patch: None,
            to,
        });
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
