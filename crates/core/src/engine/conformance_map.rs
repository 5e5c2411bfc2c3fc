//! The behavioural contract of [`MapBroker`], written once and run against every map broker
//! (as centrifuge's `map_broker_shared_test.go`): the memory broker in this crate's tests,
//! the Redis one on a single Redis, Sentinel, shards and a Redis Cluster in wshub-redis's. A
//! broker plugs in through a [`MapFactory`]; [`map_conformance!`](crate::map_conformance)
//! stamps out one test per case. Waits are bounded loops over [`MapFactory::sleep`], as in
//! [`super::conformance`].
//!
//! # Where the brokers legitimately differ
//! - **Nodes.** The memory broker is a cluster of one: what another node sees is skipped.
//! - **Deliveries.** The memory broker hands every write to its node, the Redis one only the
//!   channels the node subscribed to; the suite subscribes before it writes.
//! - **Expiry.** The memory broker reads its clock (moved by `sleep`), Redis its own
//!   (really waited for); both remove a key only when [`MapBroker::expire`] runs.
//! - **Stream TTL.** Memory drops each change `stream_ttl` after it was written, Redis the
//!   whole stream `stream_ttl` after the last write: not in the suite.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use wshub_protocol::{ClientInfo, Publication};

use super::conformance::LIMIT;
use super::{BoxFuture, BrokerHandler, EngineError, StreamPosition};
use crate::memory::ManualClock;
use crate::subscription::map::broker::{MapBroker, MapUpdate, MapWrite, MemoryMapBroker, StateQuery};
use crate::subscription::map::state::KeyMode;
use crate::subscription::map::{Mode, Retention};

/// Makes the map brokers under test.
pub trait MapFactory {
    type Map: MapBroker;
    /// Whether a cluster has one node only (the parts about another node are skipped).
    fn is_single_node(&self) -> bool;
    /// A new cluster: `nodes` brokers sharing one backend, sharing nothing with the
    /// clusters made before. `nodes` is 2 only when the factory is not single-node.
    fn maps(&self, nodes: usize) -> BoxFuture<'_, Vec<Self::Map>>;
    /// Lets `d` pass: a real sleep, or a fake clock the brokers read moved forward.
    fn sleep(&self, d: Duration) -> BoxFuture<'_, ()>;
}

/// The memory map broker under the suite: a cluster of one on a clock `sleep` moves.
#[derive(Default)]
pub struct MemoryMapFactory {
    clock: Arc<ManualClock>,
}

impl MapFactory for MemoryMapFactory {
    type Map = MemoryMapBroker;

    fn is_single_node(&self) -> bool {
        true
    }

    fn maps(&self, nodes: usize) -> BoxFuture<'_, Vec<MemoryMapBroker>> {
        assert_eq!(nodes, 1, "the memory map broker is a cluster of one");
        Box::pin(std::future::ready(vec![MemoryMapBroker::new(self.clock.clone())]))
    }

    fn sleep(&self, d: Duration) -> BoxFuture<'_, ()> {
        self.clock.advance(d);
        Box::pin(std::future::ready(()))
    }
}

/// One test per case, for the map brokers a factory makes; the forms of
/// [`engine_conformance!`](crate::engine_conformance).
#[macro_export]
macro_rules! map_conformance {
    (#[$attr:meta] async fn, $factory:expr) => {
        $crate::map_conformance!(@each [async #[$attr]] $factory);
    };
    (#[$attr:meta] fn, $factory:expr) => {
        $crate::map_conformance!(@each [sync #[$attr]] $factory);
    };
    (@each $mode:tt $factory:expr) => {
        $crate::map_conformance!(@cases $mode $factory;
            map_writes_reach_every_subscribed_node_and_the_state,
            state_pages_in_key_order,
            removals_are_published_with_the_entry_tags_and_streamed,
            stream_reads_and_unrecoverable_positions,
            conditional_writes_are_suppressed_with_a_reason,
            idempotent_writes_are_done_once,
            versioned_writes_never_go_back,
            delta_writes_carry_the_previous_data,
            expired_keys_are_removed_and_told,
            clear_starts_a_new_epoch,
            ephemeral_maps_have_no_stream,
        );
    };
    (@cases [async #[$attr:meta]] $factory:expr; $($case:ident,)*) => {
        $(
            #[$attr]
            async fn $case() {
                let f = $factory;
                $crate::engine::conformance_map::$case(&f).await;
            }
        )*
    };
    (@cases [sync #[$attr:meta]] $factory:expr; $($case:ident,)*) => {
        $(
            #[$attr]
            fn $case() {
                $crate::engine::conformance::block_on(async {
                    let f = $factory;
                    $crate::engine::conformance_map::$case(&f).await;
                });
            }
        )*
    };
}

/// A node's side: what the broker delivered, and which channels it has subscribers of.
#[derive(Default)]
struct Recorder {
    publications: Mutex<Vec<(String, Publication)>>,
    subscribed: Mutex<HashSet<String>>,
}

impl BrokerHandler for Recorder {
    fn handle_publication(&self, channel: &str, p: &Publication) {
        self.publications.lock().unwrap().push((channel.to_string(), p.clone()));
    }
    fn handle_join(&self, _: &str, _: &ClientInfo) {}
    fn handle_leave(&self, _: &str, _: &ClientInfo) {}
    fn handle_reset(&self, _: &str) {}
    fn has_subscribers(&self, channel: &str) -> bool {
        self.subscribed.lock().unwrap().contains(channel)
    }
}

struct Node<M> {
    map: M,
    rec: Arc<Recorder>,
}

impl<M: MapBroker> Node<M> {
    async fn subscribe(&self, channel: &str) {
        self.rec.subscribed.lock().unwrap().insert(channel.to_string());
        self.map.subscribe(channel).await.unwrap();
    }

    fn got(&self, channel: &str) -> Vec<Publication> {
        let all = self.rec.publications.lock().unwrap();
        all.iter().filter(|(c, _)| c == channel).map(|(_, p)| p.clone()).collect()
    }

    async fn set(&self, channel: &str, r: Retention, key: &str, data: &str) -> MapUpdate {
        self.map.write(channel, r, write(key, data)).await.unwrap()
    }
}

fn write(key: &str, data: &str) -> MapWrite {
    MapWrite {
        key: key.into(),
        publication: Publication {
            data: Bytes::copy_from_slice(data.as_bytes()),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn removal(key: &str) -> MapWrite {
    MapWrite {
        key: key.into(),
        removed: true,
        ..Default::default()
    }
}

fn retention(mode: Mode, key_ttl: Duration, stream_size: usize) -> Retention {
    let stream = mode.has_stream();
    Retention {
        mode,
        key_ttl,
        stream_size: if stream { stream_size } else { 0 },
        stream_ttl: if stream { Duration::from_secs(60) } else { Duration::ZERO },
        meta_ttl: match mode {
            Mode::Recoverable => Duration::from_secs(600),
            _ => Duration::ZERO,
        },
    }
}

fn persistent() -> Retention {
    retention(Mode::Persistent, Duration::ZERO, 100)
}

/// (key, data, offset, removed) of each publication: what the cases compare.
fn summary(ps: &[Publication]) -> Vec<(String, String, u64, bool)> {
    ps.iter()
        .map(|p| (p.key.clone(), String::from_utf8_lossy(&p.data).into_owned(), p.offset, p.removed))
        .collect()
}

fn row(key: &str, data: &str, offset: u64, removed: bool) -> (String, String, u64, bool) {
    (key.into(), data.into(), offset, removed)
}

async fn cluster<F: MapFactory>(f: &F) -> Vec<Node<F::Map>> {
    let n = if f.is_single_node() { 1 } else { 2 };
    let maps = f.maps(n).await;
    assert_eq!(maps.len(), n, "the factory made another number of nodes");
    maps.into_iter()
        .map(|map| {
            let rec = Arc::new(Recorder::default());
            map.set_handler(rec.clone());
            Node { map, rec }
        })
        .collect()
}

/// The node that writes: the other one when there are two.
fn writer<M>(nodes: &[Node<M>]) -> &Node<M> {
    &nodes[nodes.len() - 1]
}

async fn wait_until<F: MapFactory>(f: &F, what: &str, mut done: impl FnMut() -> bool) {
    let mut waited = Duration::ZERO;
    while !done() {
        assert!(waited < LIMIT, "map conformance: {what}: not within {LIMIT:?}");
        f.sleep(Duration::from_millis(10)).await;
        waited += Duration::from_millis(10);
    }
}

/// Waits for `n` publications of `channel` at `node`, and returns them.
async fn wait_for<F: MapFactory>(f: &F, node: &Node<F::Map>, channel: &str, n: usize) -> Vec<Publication> {
    wait_until(f, &format!("{n} publications of {channel}"), || node.got(channel).len() >= n).await;
    node.got(channel)
}

/// Writes on one node reach the subscribers of every node in offset order (the first
/// carrying the epoch), and the state holds each key's latest entry with its offset.
pub async fn map_writes_reach_every_subscribed_node_and_the_state<F: MapFactory>(f: &F) {
    let nodes = cluster(f).await;
    let r = persistent();
    for n in &nodes {
        n.subscribe("m:{1}").await;
    }
    let w = writer(&nodes);
    let first = w.set("m:{1}", r, "a", "1").await;
    assert_eq!((first.position.offset, first.suppressed), (1, None));
    w.set("m:{1}", r, "b", "2").await;
    let last = w.set("m:{1}", r, "a", "3").await;
    assert_eq!(
        last.position,
        StreamPosition {
            offset: 3,
            epoch: first.position.epoch.clone()
        }
    );
    for n in &nodes {
        let got = wait_for(f, n, "m:{1}", 3).await;
        assert_eq!(
            summary(&got),
            [row("a", "1", 1, false), row("b", "2", 2, false), row("a", "3", 3, false)]
        );
        assert_eq!(got[0].epoch, first.position.epoch, "the epoch travels on offset 1");
        assert!(got[1].epoch.is_empty());
    }
    let page = nodes[0]
        .map
        .read_state(
            "m:{1}",
            StateQuery {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(summary(&page.entries), [row("a", "3", 3, false), row("b", "2", 2, false)]);
    assert_eq!((page.position, page.cursor.as_str()), (last.position, ""));
    assert_eq!(nodes[0].map.stats("m:{1}").await.unwrap(), 2);
    assert_eq!(nodes[0].map.stats("other").await.unwrap(), 0);
}

/// State pages go in key order, a cursor the last key of a page; a reader holding another
/// epoch is told it cannot continue (112); one key can be read alone.
pub async fn state_pages_in_key_order<F: MapFactory>(f: &F) {
    let nodes = cluster(f).await;
    let (r, w) = (persistent(), writer(&nodes));
    for k in ["c", "a", "d", "b", "a:b"] {
        w.set("pages", r, k, k).await;
    }
    let read = |cursor: &str, limit: usize| StateQuery {
        cursor: cursor.into(),
        limit,
        ..Default::default()
    };
    let m = &nodes[0].map;
    let p1 = m.read_state("pages", read("", 3)).await.unwrap();
    let keys = |p: &crate::subscription::map::state::StatePage| p.entries.iter().map(|e| e.key.clone()).collect::<Vec<_>>();
    assert_eq!(
        (keys(&p1), p1.cursor.as_str(), p1.position.offset),
        (vec!["a".to_string(), "a:b".into(), "b".into()], "b", 5)
    );
    let p2 = m.read_state("pages", read(&p1.cursor, 3)).await.unwrap();
    assert_eq!((keys(&p2), p2.cursor.as_str()), (vec!["c".to_string(), "d".into()], ""));
    let exact = m.read_state("pages", read("", 5)).await.unwrap();
    assert_eq!((exact.entries.len(), exact.cursor.as_str()), (5, ""), "no more: no cursor");
    let one = StateQuery {
        key: Some("d".into()),
        ..Default::default()
    };
    assert_eq!(
        summary(&m.read_state("pages", one).await.unwrap().entries),
        [row("d", "d", 3, false)]
    );
    let wrong = StateQuery {
        limit: 3,
        revision: Some(StreamPosition {
            offset: 5,
            epoch: "another".into(),
        }),
        ..Default::default()
    };
    assert_eq!(m.read_state("pages", wrong).await, Err(EngineError::UnrecoverablePosition));
    // An absent map reads empty, under one epoch from read to read.
    let (a, b) = (
        m.read_state("none", read("", 3)).await.unwrap(),
        m.read_state("none", read("", 3)).await.unwrap(),
    );
    assert!(a.entries.is_empty() && a.cursor.is_empty() && a.position.offset == 0);
    assert_eq!(a.position, b.position);
}

/// A removal is published and streamed with the entry's tags (unless it brings its own); a
/// removal of an absent key changes nothing.
pub async fn removals_are_published_with_the_entry_tags_and_streamed<F: MapFactory>(f: &F) {
    let nodes = cluster(f).await;
    let r = persistent();
    nodes[0].subscribe("rm").await;
    let w = writer(&nodes);
    let mut tagged = write("a", "1");
    tagged.publication.tags = HashMap::from([("t".to_string(), "x".to_string())]);
    w.map.write("rm", r, tagged).await.unwrap();
    w.set("rm", r, "b", "2").await;
    let gone = w.map.write("rm", r, removal("a")).await.unwrap();
    assert_eq!((gone.position.offset, gone.suppressed), (3, None));
    let again = w.map.write("rm", r, removal("a")).await.unwrap();
    assert_eq!((again.position.offset, again.suppressed), (3, Some("key_not_found")));
    let mut own = removal("b");
    own.publication.tags = HashMap::from([("t".to_string(), "own".to_string())]);
    w.map.write("rm", r, own).await.unwrap();
    let got = wait_for(f, &nodes[0], "rm", 4).await;
    assert_eq!(
        summary(&got),
        [
            row("a", "1", 1, false),
            row("b", "2", 2, false),
            row("a", "", 3, true),
            row("b", "", 4, true)
        ]
    );
    assert_eq!(got[2].tags.get("t").map(String::as_str), Some("x"), "the entry's tags");
    assert_eq!(got[3].tags.get("t").map(String::as_str), Some("own"));
    let (stream, top) = nodes[0].map.read_stream("rm", None, -1, false).await.unwrap();
    assert_eq!(summary(&stream), summary(&got));
    assert_eq!(stream[2].tags.get("t").map(String::as_str), Some("x"));
    assert_eq!(top.offset, 4);
    assert_eq!(nodes[0].map.stats("rm").await.unwrap(), 0);
}

/// Stream reads after a position, bounded, newest first; positions in another epoch, past
/// the top or older than what the stream keeps cannot be continued (112).
pub async fn stream_reads_and_unrecoverable_positions<F: MapFactory>(f: &F) {
    let nodes = cluster(f).await;
    let r = retention(Mode::Persistent, Duration::ZERO, 3);
    let w = writer(&nodes);
    for (k, d) in [("a", "1"), ("b", "2"), ("a", "3"), ("c", "4"), ("b", "5")] {
        w.set("s", r, k, d).await;
    }
    let m = &nodes[0].map;
    let (_, top) = m.read_stream("s", None, 0, false).await.unwrap();
    assert_eq!(top.offset, 5);
    let at = |offset| {
        Some(StreamPosition {
            offset,
            epoch: top.epoch.clone(),
        })
    };
    let offsets = |ps: Vec<Publication>| ps.iter().map(|p| p.offset).collect::<Vec<_>>();
    assert_eq!(
        offsets(m.read_stream("s", None, -1, false).await.unwrap().0),
        [3, 4, 5],
        "the newest 3 kept"
    );
    assert_eq!(offsets(m.read_stream("s", at(2), -1, false).await.unwrap().0), [3, 4, 5]);
    assert_eq!(offsets(m.read_stream("s", at(3), 1, false).await.unwrap().0), [4]);
    assert_eq!(offsets(m.read_stream("s", at(2), 2, true).await.unwrap().0), [5, 4]);
    assert_eq!(offsets(m.read_stream("s", at(5), -1, false).await.unwrap().0), Vec::<u64>::new());
    for (since, why) in [(at(1), "2 was dropped"), (at(6), "past the top")] {
        assert_eq!(
            m.read_stream("s", since, -1, false).await.map(drop),
            Err(EngineError::UnrecoverablePosition),
            "{why}"
        );
    }
    let other = Some(StreamPosition {
        offset: 4,
        epoch: "another".into(),
    });
    assert_eq!(
        m.read_stream("s", other, -1, false).await.map(drop),
        Err(EngineError::UnrecoverablePosition)
    );
}

/// `if_new`, `if_exists` and the presence refresh write nothing when their condition fails,
/// and say why; the position stays.
pub async fn conditional_writes_are_suppressed_with_a_reason<F: MapFactory>(f: &F) {
    let nodes = cluster(f).await;
    let (r, w) = (persistent(), writer(&nodes));
    let with = |key_mode, data: &str| MapWrite {
        key_mode,
        ..write("k", data)
    };
    let no = w.map.write("cw", r, with(KeyMode::IfExists, "0")).await.unwrap();
    assert_eq!((no.position.offset, no.suppressed), (0, Some("key_not_found")));
    let yes = w.map.write("cw", r, with(KeyMode::IfNew, "1")).await.unwrap();
    assert_eq!((yes.position.offset, yes.suppressed), (1, None));
    for mode in [KeyMode::IfNew, KeyMode::IfNewOrRefresh] {
        let no = w.map.write("cw", r, with(mode, "2")).await.unwrap();
        assert_eq!((no.position.offset, no.suppressed), (1, Some("key_exists")), "{mode:?}");
    }
    let yes = w.map.write("cw", r, with(KeyMode::IfExists, "3")).await.unwrap();
    assert_eq!((yes.position.offset, yes.suppressed), (2, None));
    let page = nodes[0]
        .map
        .read_state(
            "cw",
            StateQuery {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(summary(&page.entries), [row("k", "3", 2, false)]);
}

/// A write with an idempotency key seen within the window is not done again: it answers
/// the first one's position, suppressed (`idempotency`). A suppressed write is not
/// remembered: tried again, it may be done.
pub async fn idempotent_writes_are_done_once<F: MapFactory>(f: &F) {
    let nodes = cluster(f).await;
    let r = persistent();
    nodes[0].subscribe("idem").await;
    let once = |key: &str, data: &str, id: &str| MapWrite {
        idempotency_key: Some(id.into()),
        key_mode: KeyMode::IfExists,
        ..write(key, data)
    };
    let w = writer(&nodes);
    w.set("idem", r, "k", "0").await;
    let first = w.map.write("idem", r, once("k", "1", "op-1")).await.unwrap();
    assert_eq!((first.position.offset, first.suppressed), (2, None));
    let again = nodes[0].map.write("idem", r, once("k", "2", "op-1")).await.unwrap();
    assert_eq!((again.position, again.suppressed), (first.position.clone(), Some("idempotency")));
    let absent = w.map.write("idem", r, once("new", "3", "op-2")).await.unwrap();
    assert_eq!(absent.suppressed, Some("key_not_found"));
    w.set("idem", r, "new", "x").await;
    let later = w.map.write("idem", r, once("new", "4", "op-2")).await.unwrap();
    assert_eq!((later.position.offset, later.suppressed), (4, None));
    let got = wait_for(f, &nodes[0], "idem", 4).await;
    let want = [
        row("k", "0", 1, false),
        row("k", "1", 2, false),
        row("new", "x", 3, false),
        row("new", "4", 4, false),
    ];
    assert_eq!(summary(&got), want);
}

/// A versioned write is done only when the key holds an older version of the same version
/// epoch (an empty one matches any); another epoch starts the versions again.
pub async fn versioned_writes_never_go_back<F: MapFactory>(f: &F) {
    let nodes = cluster(f).await;
    let (r, w) = (persistent(), writer(&nodes));
    let at = |data: &str, version, epoch: &str| MapWrite {
        version,
        version_epoch: epoch.into(),
        ..write("k", data)
    };
    let outcome = |u: MapUpdate| (u.position.offset, u.suppressed);
    assert_eq!(outcome(w.map.write("v", r, at("v5", 5, "a")).await.unwrap()), (1, None));
    assert_eq!(outcome(w.map.write("v", r, at("v4", 4, "a")).await.unwrap()), (1, Some("version")));
    assert_eq!(
        outcome(nodes[0].map.write("v", r, at("v5b", 5, "")).await.unwrap()),
        (1, Some("version"))
    );
    assert_eq!(outcome(w.map.write("v", r, at("v6", 6, "a")).await.unwrap()), (2, None));
    assert_eq!(
        outcome(w.map.write("v", r, at("b1", 1, "b")).await.unwrap()),
        (3, None),
        "another epoch"
    );
    let page = nodes[0]
        .map
        .read_state(
            "v",
            StateQuery {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(summary(&page.entries), [row("k", "b1", 3, false)]);
}

/// A write with delta reaches subscribers marked so, with the key's previous data as its
/// base (none for a new key); the state and the stream keep plain entries.
pub async fn delta_writes_carry_the_previous_data<F: MapFactory>(f: &F) {
    let nodes = cluster(f).await;
    let r = persistent();
    nodes[0].subscribe("d").await;
    let delta = |data: &str| MapWrite {
        delta: true,
        ..write("k", data)
    };
    let w = writer(&nodes);
    w.map.write("d", r, delta("one")).await.unwrap();
    w.map.write("d", r, delta("two")).await.unwrap();
    w.set("d", r, "k", "three").await;
    let got = wait_for(f, &nodes[0], "d", 3).await;
    let seen: Vec<(bool, &[u8])> = got.iter().map(|p| (p.delta, p.prev_data.as_ref())).collect();
    assert_eq!(seen, [(true, &b""[..]), (true, &b"one"[..]), (false, &b""[..])]);
    let (stream, _) = nodes[0].map.read_stream("d", None, -1, false).await.unwrap();
    assert!(stream.iter().all(|p| !p.delta && p.prev_data.is_empty()));
}

/// Keys past their TTL leave when the broker expires them: every subscribed node is told,
/// the removal is in the stream (recoverable mode), and the keys written since stay.
pub async fn expired_keys_are_removed_and_told<F: MapFactory>(f: &F) {
    let nodes = cluster(f).await;
    let r = retention(Mode::Recoverable, Duration::from_secs(1), 100);
    for n in &nodes {
        n.subscribe("ttl").await;
    }
    let w = writer(&nodes);
    w.set("ttl", r, "a", "1").await;
    w.set("ttl", r, "b", "2").await;
    f.sleep(Duration::from_millis(600)).await;
    // Written again: its TTL starts over.
    w.set("ttl", r, "b", "3").await;
    let mut waited = Duration::ZERO;
    while nodes[0].got("ttl").len() < 4 {
        assert!(waited < LIMIT, "a never expired: {:?}", summary(&nodes[0].got("ttl")));
        for n in &nodes {
            n.map.expire().await;
        }
        f.sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
    for n in &nodes {
        let got = wait_for(f, n, "ttl", 4).await;
        assert_eq!(summary(&got[3..4]), [row("a", "", 4, true)], "once, whichever node expired it");
    }
    let page = nodes[0]
        .map
        .read_state(
            "ttl",
            StateQuery {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(page.entries.iter().all(|e| e.key == "b") && page.entries.len() <= 1);
    let (stream, _) = nodes[0].map.read_stream("ttl", None, -1, false).await.unwrap();
    assert_eq!(summary(&stream[3..4]), [row("a", "", 4, true)]);
    let mut waited = Duration::ZERO;
    while nodes[0].map.stats("ttl").await.unwrap() > 0 {
        assert!(waited < LIMIT, "b never expired");
        nodes[0].map.expire().await;
        f.sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
    let got = wait_for(f, &nodes[0], "ttl", 5).await;
    assert_eq!(summary(&got[4..]), [row("b", "", 5, true)]);
    nodes[0].map.expire().await;
    assert_eq!(nodes[0].got("ttl").len(), 5, "told once");
}

/// `clear` forgets the state and the stream: the map starts again under a new epoch, and a
/// reader positioned in the old one cannot continue.
pub async fn clear_starts_a_new_epoch<F: MapFactory>(f: &F) {
    let nodes = cluster(f).await;
    let (r, w) = (persistent(), writer(&nodes));
    let old = w.set("clr", r, "a", "1").await.position;
    nodes[0].map.clear("clr").await.unwrap();
    assert_eq!(w.map.stats("clr").await.unwrap(), 0);
    let page = w
        .map
        .read_state(
            "clr",
            StateQuery {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(page.entries.is_empty());
    assert_ne!(page.position.epoch, old.epoch);
    assert_eq!(
        w.map.read_stream("clr", Some(old), -1, false).await.map(drop),
        Err(EngineError::UnrecoverablePosition)
    );
    let next = w.set("clr", r, "b", "2").await.position;
    assert_eq!(next.offset, 1);
    assert_eq!(next.epoch, page.position.epoch, "the epoch the reader saw");
}

/// An ephemeral map keeps no stream: writes are at offset 0, under one epoch.
pub async fn ephemeral_maps_have_no_stream<F: MapFactory>(f: &F) {
    let nodes = cluster(f).await;
    let r = retention(Mode::Ephemeral, Duration::from_secs(60), 0);
    nodes[0].subscribe("eph").await;
    let w = writer(&nodes);
    let a = w.set("eph", r, "a", "1").await.position;
    let b = w.set("eph", r, "a", "2").await.position;
    assert_eq!((a.offset, b.offset), (0, 0));
    assert_eq!(a.epoch, b.epoch);
    let got = wait_for(f, &nodes[0], "eph", 2).await;
    assert_eq!(summary(&got), [row("a", "1", 0, false), row("a", "2", 0, false)]);
    let (stream, top) = nodes[0].map.read_stream("eph", None, -1, false).await.unwrap();
    assert!(stream.is_empty());
    assert_eq!(top, b);
    let page = nodes[0]
        .map
        .read_state(
            "eph",
            StateQuery {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(summary(&page.entries), [row("a", "2", 0, false)]);
}

#[cfg(test)]
mod memory {
    crate::map_conformance!(#[test] fn, super::MemoryMapFactory::default());
}
