//! One map channel: its entries in key order (cursors are keys), the change stream when
//! the mode keeps one, and expiry. Pure: every call is given the time.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use wshub_protocol::Publication;

use super::Retention;
use crate::engine::{EngineError, StreamPosition};

#[derive(Debug, Clone)]
struct Entry {
    /// As last written: `offset` is the stream offset of that write (0 without a stream).
    publication: Publication,
    expires: Option<Instant>,
    /// The version it was written with, and that version's epoch (server API `version`).
    version: Option<(u64, String)>,
}

/// A channel's keyed state and stream.
#[derive(Debug, Clone)]
pub struct MapChannel {
    epoch: String,
    top: u64,
    entries: BTreeMap<String, Entry>,
    /// Keys by expiry, so that a sweep touches only what expired.
    expiries: BTreeSet<(Instant, String)>,
    /// (dropped after, publication), oldest first.
    stream: VecDeque<(Instant, Publication)>,
    /// The stream position is forgotten after this (a new epoch then).
    meta_expires: Option<Instant>,
    retention: Retention,
}

/// A page of state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatePage {
    pub entries: Vec<Publication>,
    /// The next page's cursor; empty: this was the last.
    pub cursor: String,
    pub position: StreamPosition,
}

/// A conditional write (server API `key_mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KeyMode {
    #[default]
    Any,
    /// Only when the key is absent.
    IfNew,
    /// [`KeyMode::IfNew`]; a present key's TTL starts again (map presence refreshes).
    IfNewOrRefresh,
    /// Only when the key is present.
    IfExists,
}

/// Why a write changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suppressed {
    KeyExists,
    KeyNotFound,
    /// The key holds this version or a newer one (of the same version epoch).
    Version,
}

impl Suppressed {
    pub fn reason(self) -> &'static str {
        match self {
            Suppressed::KeyExists => "key_exists",
            Suppressed::KeyNotFound => "key_not_found",
            Suppressed::Version => "version",
        }
    }
}

impl MapChannel {
    pub fn new(epoch: String, retention: Retention) -> Self {
        MapChannel {
            epoch,
            top: 0,
            entries: BTreeMap::new(),
            expiries: BTreeSet::new(),
            stream: VecDeque::new(),
            meta_expires: None,
            retention,
        }
    }

    pub fn position(&self) -> StreamPosition {
        StreamPosition {
            offset: self.top,
            epoch: self.epoch.clone(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Nothing left to keep: no entry, and no stream position a client may still hold.
    pub fn is_forgettable(&self, now: Instant) -> bool {
        self.entries.is_empty() && (self.top == 0 || self.meta_expires.is_some_and(|m| m <= now))
    }

    fn touch(&mut self, now: Instant) {
        if self.retention.mode.has_stream() && !self.retention.meta_ttl.is_zero() {
            self.meta_expires = Some(now + self.retention.meta_ttl);
        }
    }

    fn append(&mut self, mut p: Publication, now: Instant) -> Publication {
        if !self.retention.mode.has_stream() {
            p.offset = 0;
            return p;
        }
        self.top += 1;
        p.offset = self.top;
        self.stream.push_back((now + self.retention.stream_ttl, p.clone()));
        while self.stream.len() > self.retention.stream_size {
            self.stream.pop_front();
        }
        p
    }

    fn unexpire(&mut self, key: &str) {
        if let Some(at) = self.entries.get(key).and_then(|e| e.expires) {
            self.expiries.remove(&(at, key.to_string()));
        }
    }

    /// Sets `key` (its publication carries data, info, tags). Returns what subscribers get,
    /// with its stream offset, or why nothing was written.
    pub fn publish(
        &mut self,
        key: &str,
        p: Publication,
        mode: KeyMode,
        retention: Retention,
        now: Instant,
    ) -> Result<(Publication, Bytes), Suppressed> {
        self.retention = retention;
        let exists = self.entries.contains_key(key);
        match (mode, exists) {
            (KeyMode::IfNewOrRefresh, true) => {
                self.unexpire(key);
                let expires = (!retention.key_ttl.is_zero()).then(|| now + retention.key_ttl);
                if let (Some(at), Some(e)) = (expires, self.entries.get_mut(key)) {
                    e.expires = Some(at);
                    self.expiries.insert((at, key.to_string()));
                }
                return Err(Suppressed::KeyExists);
            }
            (KeyMode::IfNew, true) => return Err(Suppressed::KeyExists),
            (KeyMode::IfExists, false) => return Err(Suppressed::KeyNotFound),
            _ => {}
        }
        self.touch(now);
        let mut p = p;
        p.key = key.to_string();
        p.removed = false;
        let p = self.append(p, now);
        self.unexpire(key);
        let expires = (!retention.key_ttl.is_zero()).then(|| now + retention.key_ttl);
        if let Some(at) = expires {
            self.expiries.insert((at, key.to_string()));
        }
        let old = self.entries.insert(
            key.to_string(),
            Entry {
                publication: p.clone(),
                expires,
                version: None,
            },
        );
        Ok((p, old.map(|e| e.publication.data).unwrap_or_default()))
    }

    /// Removes `key`; the removal publication subscribers get, if it was there.
    pub fn remove(&mut self, key: &str, tags: Option<std::collections::HashMap<String, String>>, now: Instant) -> Option<Publication> {
        self.unexpire(key);
        let old = self.entries.remove(key)?;
        self.touch(now);
        let p = Publication {
            key: key.to_string(),
            removed: true,
            tags: tags.unwrap_or(old.publication.tags),
            time: old.publication.time,
            ..Default::default()
        };
        Some(self.append(p, now))
    }

    /// Takes out the keys whose TTL ran out by `now`, returning their removals (in the
    /// stream, for a mode that keeps one).
    pub fn expire(&mut self, now: Instant) -> Vec<Publication> {
        let mut out = Vec::new();
        while let Some((at, key)) = self.expiries.first().cloned() {
            if at > now {
                break;
            }
            self.expiries.pop_first();
            if let Some(p) = self.remove(&key, None, now) {
                out.push(p);
            }
        }
        while self.stream.front().is_some_and(|(at, _)| *at <= now) {
            self.stream.pop_front();
        }
        out
    }

    /// When the next key expires.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.expiries.first().map(|(at, _)| *at)
    }

    /// When the expiry sweep has something to do here next: a key expires, or (the map
    /// empty) its stream position may be forgotten.
    pub fn next_due(&self) -> Option<Instant> {
        let forget = self.meta_expires.filter(|_| self.entries.is_empty() && self.top > 0);
        match (self.next_expiry(), forget) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Up to `limit` entries after `cursor` (keys in order). With `revision`, its epoch
    /// must still be the channel's (112 otherwise).
    pub fn read_state(&self, cursor: &str, limit: usize, revision: Option<&StreamPosition>) -> Result<StatePage, EngineError> {
        if revision.is_some_and(|r| r.epoch != self.epoch) {
            return Err(EngineError::UnrecoverablePosition);
        }
        use std::ops::Bound;
        let from = match cursor {
            "" => Bound::Unbounded,
            c => Bound::Excluded(c.to_string()),
        };
        let mut iter = self.entries.range((from, Bound::Unbounded));
        let entries: Vec<Publication> = iter.by_ref().take(limit).map(|(_, e)| e.publication.clone()).collect();
        let more = iter.next().is_some();
        Ok(StatePage {
            cursor: match (more, entries.last()) {
                (true, Some(last)) => last.key.clone(),
                _ => String::new(),
            },
            entries,
            position: self.position(),
        })
    }

    /// Whether writing `key` at `version` (of `epoch`, empty: any) would go back: the key
    /// holds that version or a newer one, as Centrifugo orders versioned writes.
    pub fn version_suppresses(&self, key: &str, version: u64, epoch: &str) -> bool {
        let held = self.entries.get(key).and_then(|e| e.version.as_ref());
        held.is_some_and(|(v, e)| (epoch.is_empty() || epoch == e) && *v >= version)
    }

    /// Records the version `key` was just written with.
    pub fn set_version(&mut self, key: &str, version: u64, epoch: &str) {
        if let Some(e) = self.entries.get_mut(key) {
            e.version = Some((version, epoch.to_string()));
        }
    }

    /// One entry, if present.
    pub fn get(&self, key: &str) -> Option<Publication> {
        self.entries.get(key).map(|e| e.publication.clone())
    }

    /// Stream publications after `since` (all kept ones without), at most `limit` (0: none,
    /// negative: all). A `since` in another epoch, or older than what is kept, is 112.
    pub fn read_stream(&self, since: Option<&StreamPosition>, limit: i64, reverse: bool) -> Result<Vec<Publication>, EngineError> {
        let after = match since {
            Some(s) if s.epoch != self.epoch && !s.epoch.is_empty() => return Err(EngineError::UnrecoverablePosition),
            Some(s) if s.offset > self.top => return Err(EngineError::UnrecoverablePosition),
            Some(s) => s.offset,
            None => 0,
        };
        let first_kept = self.stream.front().map_or(self.top + 1, |(_, p)| p.offset);
        if since.is_some() && after < self.top && after + 1 < first_kept {
            return Err(EngineError::UnrecoverablePosition);
        }
        let take = usize::try_from(limit).unwrap_or(usize::MAX);
        let iter = self.stream.iter().map(|(_, p)| p).filter(|p| p.offset > after);
        Ok(match reverse {
            false => iter.take(take).cloned().collect(),
            true => {
                let all: Vec<&Publication> = iter.collect();
                all.into_iter().rev().take(take).cloned().collect()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::Mode;
    use super::*;
    use std::time::Duration;

    fn retention(mode: Mode, key_ttl: u64, stream_size: usize) -> Retention {
        Retention {
            mode,
            key_ttl: Duration::from_secs(key_ttl),
            stream_size,
            stream_ttl: Duration::from_secs(60),
            meta_ttl: Duration::ZERO,
        }
    }

    fn data(s: &str) -> Publication {
        Publication {
            data: bytes::Bytes::copy_from_slice(s.as_bytes()),
            ..Default::default()
        }
    }

    #[test]
    fn state_pages_in_key_order_with_cursors() {
        let now = Instant::now();
        let r = retention(Mode::Persistent, 0, 100);
        let mut m = MapChannel::new("e".into(), r);
        for k in ["c", "a", "d", "b"] {
            m.publish(k, data("1"), KeyMode::Any, r, now).unwrap();
        }
        let p1 = m.read_state("", 3, None).unwrap();
        let keys: Vec<_> = p1.entries.iter().map(|p| p.key.as_str()).collect();
        assert_eq!((keys, p1.cursor.as_str(), p1.position.offset), (vec!["a", "b", "c"], "c", 4));
        let p2 = m.read_state(&p1.cursor, 3, None).unwrap();
        assert_eq!((p2.entries.len(), p2.cursor.as_str()), (1, ""));
        let wrong = StreamPosition {
            offset: 4,
            epoch: "x".into(),
        };
        assert_eq!(m.read_state("", 3, Some(&wrong)), Err(EngineError::UnrecoverablePosition));
    }

    #[test]
    fn writes_and_removals_go_into_a_bounded_stream() {
        let now = Instant::now();
        let r = retention(Mode::Persistent, 0, 2);
        let mut m = MapChannel::new("e".into(), r);
        assert_eq!(m.publish("a", data("1"), KeyMode::Any, r, now).unwrap().0.offset, 1);
        assert_eq!(m.publish("a", data("2"), KeyMode::Any, r, now).unwrap().0.offset, 2);
        let removed = m.remove("a", None, now).unwrap();
        assert!(removed.removed && removed.offset == 3 && removed.key == "a");
        assert_eq!(m.remove("a", None, now), None, "already gone: nothing to tell");
        let at = |offset| StreamPosition { offset, epoch: "e".into() };
        let since2: Vec<u64> = m.read_stream(Some(&at(1)), -1, false).unwrap().iter().map(|p| p.offset).collect();
        assert_eq!(since2, vec![2, 3]);
        assert_eq!(
            m.read_stream(Some(&at(0)), -1, false),
            Err(EngineError::UnrecoverablePosition),
            "1 was dropped"
        );
        assert_eq!(m.read_stream(Some(&at(3)), -1, false), Ok(vec![]));
        assert_eq!(m.read_stream(Some(&at(4)), -1, false), Err(EngineError::UnrecoverablePosition));
    }

    #[test]
    fn conditional_writes() {
        let now = Instant::now();
        let r = retention(Mode::Persistent, 0, 10);
        let mut m = MapChannel::new("e".into(), r);
        assert_eq!(
            m.publish("a", data("1"), KeyMode::IfExists, r, now).map(drop),
            Err(Suppressed::KeyNotFound)
        );
        m.publish("a", data("1"), KeyMode::IfNew, r, now).unwrap();
        let (_, prev) = m.publish("a", data("3"), KeyMode::Any, r, now).unwrap();
        assert_eq!(prev, "1", "the previous data: the delta base");
        assert_eq!(
            m.publish("a", data("2"), KeyMode::IfNew, r, now).map(drop),
            Err(Suppressed::KeyExists)
        );
        assert_eq!(m.get("a").unwrap().data, "3");
    }

    #[test]
    fn ephemeral_keys_expire_without_a_stream() {
        let now = Instant::now();
        let r = retention(Mode::Ephemeral, 3, 0);
        let mut m = MapChannel::new("e".into(), r);
        assert_eq!(m.publish("a", data("1"), KeyMode::Any, r, now).unwrap().0.offset, 0);
        m.publish("b", data("1"), KeyMode::Any, r, now + Duration::from_secs(2)).unwrap();
        // Written again: its expiry moves.
        m.publish("a", data("2"), KeyMode::Any, r, now + Duration::from_secs(2)).unwrap();
        assert!(m.expire(now + Duration::from_secs(4)).is_empty());
        assert_eq!(m.next_expiry(), Some(now + Duration::from_secs(5)));
        let gone = m.expire(now + Duration::from_secs(5));
        assert_eq!(
            gone.iter().map(|p| (p.key.as_str(), p.removed, p.offset)).collect::<Vec<_>>(),
            vec![("a", true, 0), ("b", true, 0)]
        );
        assert!(m.is_empty() && m.is_forgettable(now));
        // A refresh of a present key moves its expiry and writes nothing.
        m.publish("p", data("1"), KeyMode::IfNewOrRefresh, r, now).unwrap();
        let later = now + Duration::from_secs(2);
        assert_eq!(
            m.publish("p", data("2"), KeyMode::IfNewOrRefresh, r, later).map(drop),
            Err(Suppressed::KeyExists)
        );
        assert!(m.expire(now + Duration::from_secs(4)).is_empty());
        assert_eq!(m.get("p").unwrap().data, "1");
        assert_eq!(m.position().offset, 0);
    }
}
