//! The behavioural contract of [`Engine`], [`BrokerHandler`] and [`NodeControl`], written once
//! and run against every engine, as centrifuge's `map_broker_shared_test.go`: the memory
//! engine in this crate's tests, the Redis engine against a real `redis-server` in
//! wshub-redis's. An implementation plugs in through an [`EngineFactory`]; the
//! [`engine_conformance!`](crate::engine_conformance) macro stamps out one test per case. A
//! broker without a presence manager of its own runs the broker half alone, through a
//! [`BrokerFactory`] and [`broker_conformance!`](crate::broker_conformance).
//!
//! Compiled for this crate's tests and, for other crates, with the `testing` feature. It needs
//! no runtime: every wait is a bounded loop over [`BrokerFactory::sleep`] (a real sleep, or a
//! fake clock moved forward), failing after [`LIMIT`].
//!
//! Each case asks the factory for a fresh cluster: two nodes sharing one backend, or one node
//! when the factory [is single-node](BrokerFactory::is_single_node). Cases written over "every
//! node" then run on that one; the parts that need a second node say so on stderr and are
//! skipped. That a publication did *not* arrive is shown by a later publication from the same
//! node on another channel arriving: both engines deliver one publisher's publications to a
//! node in the order they were published (memory at once, Redis over one connection each way).
//!
//! # Where the engines legitimately differ
//! - **Nodes.** The memory engine is a cluster of one: delivery to every subscribed node,
//!   presence seen from another node and control messages reaching another node are skipped.
//! - **Deliveries of channels without subscribers.** The memory engine hands every
//!   publication, join and leave to its node, whose hub drops what no one subscribed to
//!   (`subscribe` and `unsubscribe` are no-ops: there are no other nodes to spare the
//!   traffic). The Redis engine delivers only channels the node subscribed to, and stops after
//!   the last unsubscribe. The suite asserts the absence only when
//!   [`BrokerFactory::delivers_only_subscribed`]; deliveries to subscribed channels, in order,
//!   are asserted for both.
//! - **`history_ttl`.** The memory engine drops each publication `history_ttl` after it was
//!   published; the Redis engine drops the whole stream `history_ttl` after the *last*
//!   publication (whole seconds, at least one), as Centrifugo's. The suite asserts the common
//!   part: once `history_ttl` has passed since the last publication the history is empty, and
//!   its position (top offset and epoch) stays, so the next publication continues it.
//! - **Presence expiry.** Redis drops entries not re-added within `presence_ttl` (a dead
//!   node's clients); the memory engine keeps them until removed (its clients cannot outlive
//!   it). Not in the suite: wshub-redis tests it.
//! - **Stream resets** ([`BrokerHandler::handle_reset`]) happen only when a shared backend
//!   loses its data; not in the suite.
//! - **Brokers without history** ([`Broker::keeps_history`] false: NATS) deliver every
//!   publication at offset 0 and keep nothing: the history cases (and idempotency, which
//!   rests on the stream) are skipped, the delivery cases expect offset 0, and only each
//!   publisher's own publications, joins and leaves keep their order.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use wshub_protocol::{ClientInfo, Publication};

use super::*;
use crate::cluster::{ControlHandler, NodeControl};
use crate::memory::{ManualClock, MemoryEngine};

/// The longest any one wait of the suite may take.
pub const LIMIT: Duration = Duration::from_secs(10);
/// How often a wait looks again.
const STEP: Duration = Duration::from_millis(10);

/// Makes the brokers under test: the broker half of the suite (publications, history,
/// joins and leaves, subscriptions, node control), which a broker without a presence manager
/// of its own (NATS, say) runs alone.
pub trait BrokerFactory {
    type Broker: Broker + NodeControl;
    /// Whether a cluster has one node only (the two-node parts of the suite are skipped).
    fn is_single_node(&self) -> bool;
    /// Whether a node receives only the channels it subscribed to (and nothing after its
    /// last unsubscribe), or everything published, for its hub to drop (the memory engine).
    fn delivers_only_subscribed(&self) -> bool;
    /// A new cluster: `nodes` brokers sharing one backend, sharing nothing with the clusters
    /// made before. `nodes` is 2 only when the factory is not single-node.
    fn brokers(&self, nodes: usize) -> BoxFuture<'_, Vec<Self::Broker>>;
    /// Lets `d` pass: a real sleep, or a fake clock the brokers read moved forward.
    fn sleep(&self, d: Duration) -> BoxFuture<'_, ()>;
}

/// A [`BrokerFactory`] whose brokers are whole engines (presence too): the whole suite.
pub trait EngineFactory: BrokerFactory<Broker: Engine> {}

/// The memory engine under the suite: a cluster of one, whose clock `sleep` moves forward,
/// so that no case really waits.
#[derive(Default)]
pub struct MemoryFactory {
    clock: Arc<ManualClock>,
}

impl EngineFactory for MemoryFactory {}

impl BrokerFactory for MemoryFactory {
    type Broker = MemoryEngine;

    fn is_single_node(&self) -> bool {
        true
    }

    fn delivers_only_subscribed(&self) -> bool {
        false
    }

    fn brokers(&self, nodes: usize) -> BoxFuture<'_, Vec<MemoryEngine>> {
        assert_eq!(nodes, 1, "the memory engine is a cluster of one");
        Box::pin(std::future::ready(vec![MemoryEngine::new(self.clock.clone())]))
    }

    fn sleep(&self, d: Duration) -> BoxFuture<'_, ()> {
        self.clock.advance(d);
        Box::pin(std::future::ready(()))
    }
}

/// Runs a future on this thread (for the memory engine's tests, which need no runtime).
pub fn block_on<T>(fut: impl Future<Output = T>) -> T {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// One test per case of the broker half of the suite, for the brokers a [`BrokerFactory`]
/// makes; the same forms as [`engine_conformance!`](crate::engine_conformance).
#[macro_export]
macro_rules! broker_conformance {
    (#[$attr:meta] $($sig:ident)+, $factory:expr) => {
        $crate::engine_conformance!(@entry broker #[$attr] $($sig)+, $factory);
    };
}

/// One test per case of the suite (the broker half and the presence half), for the engines
/// a factory makes.
///
/// `#[attr] async fn, factory`: async tests under `attr` (e.g. `#[tokio::test]`), the factory
/// expression evaluated inside each (it may `.await`). `#[attr] fn, factory`: plain tests
/// run with [`block_on`].
///
/// ```ignore
/// wshub_core::engine_conformance!(#[tokio::test] async fn, RedisFactory::start().await);
/// ```
#[macro_export]
macro_rules! engine_conformance {
    (@entry $suite:ident #[$attr:meta] async fn, $factory:expr) => {
        $crate::engine_conformance!(@$suite [async #[$attr]] $factory);
    };
    (@entry $suite:ident #[$attr:meta] fn, $factory:expr) => {
        $crate::engine_conformance!(@$suite [sync #[$attr]] $factory);
    };
    (#[$attr:meta] $($sig:ident)+, $factory:expr) => {
        $crate::engine_conformance!(@entry engine #[$attr] $($sig)+, $factory);
    };
    (@broker $mode:tt $factory:expr) => {
        $crate::engine_conformance!(@each $mode $factory;
            history_offsets_count_from_one_under_one_epoch,
            publication_without_history_has_no_position_and_is_delivered,
            delivers_each_channel_in_order_only_where_subscribed,
            delivers_to_every_subscribed_node,
            stops_delivering_after_the_last_unsubscribe,
            history_queries,
            history_size_keeps_the_newest,
            history_ttl_empties_the_history_and_keeps_the_position,
            remove_history_keeps_the_position,
            join_and_leave_reach_subscribers_in_stream_order,
            idempotent_publish_is_published_once,
            check_is_ok,
            control_reaches_every_node_including_the_sender,
        );
    };
    (@engine $mode:tt $factory:expr) => {
        $crate::engine_conformance!(@broker $mode $factory);
        $crate::engine_conformance!(@each $mode $factory;
            presence_add_get_remove,
            presence_of_two_clients_and_two_users,
            presence_is_seen_from_the_other_node,
        );
    };
    (@each [async #[$attr:meta]] $factory:expr; $($case:ident,)*) => {
        $(
            #[$attr]
            async fn $case() {
                let f = $factory;
                $crate::engine::conformance::$case(&f).await;
            }
        )*
    };
    (@each [sync #[$attr:meta]] $factory:expr; $($case:ident,)*) => {
        $(
            #[$attr]
            fn $case() {
                $crate::engine::conformance::block_on(async {
                    let f = $factory;
                    $crate::engine::conformance::$case(&f).await;
                });
            }
        )*
    };
}

#[derive(Debug, Clone, PartialEq)]
enum Event {
    Publication(Box<Publication>),
    Join(ClientInfo),
    Leave(ClientInfo),
    Reset,
}

/// A node's side, as the hub would be: what the engine delivered, and which channels the
/// node has subscribers of.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<(String, Event)>>,
    control: Mutex<Vec<Vec<u8>>>,
    subscribed: Mutex<HashSet<String>>,
}

impl Recorder {
    fn push(&self, channel: &str, e: Event) {
        self.events.lock().unwrap().push((channel.to_string(), e));
    }
}

impl BrokerHandler for Recorder {
    fn handle_publication(&self, channel: &str, publication: &Publication) {
        self.push(channel, Event::Publication(Box::new(publication.clone())));
    }
    fn handle_join(&self, channel: &str, info: &ClientInfo) {
        self.push(channel, Event::Join(info.clone()));
    }
    fn handle_leave(&self, channel: &str, info: &ClientInfo) {
        self.push(channel, Event::Leave(info.clone()));
    }
    fn handle_reset(&self, channel: &str) {
        self.push(channel, Event::Reset);
    }
    fn has_subscribers(&self, channel: &str) -> bool {
        self.subscribed.lock().unwrap().contains(channel)
    }
}

impl ControlHandler for Recorder {
    fn handle_control(&self, data: &[u8]) {
        self.control.lock().unwrap().push(data.to_vec());
    }
}

struct Node<E> {
    engine: E,
    rec: Arc<Recorder>,
}

impl<E: Broker + NodeControl> Node<E> {
    /// As the hub does: the node has a subscriber, then tells the engine.
    async fn subscribe(&self, channel: &str) {
        self.rec.subscribed.lock().unwrap().insert(channel.to_string());
        self.engine.subscribe(channel).await.unwrap();
    }

    /// As the hub does: the last subscriber is gone, then the engine is told.
    async fn unsubscribe(&self, channel: &str) {
        self.rec.subscribed.lock().unwrap().remove(channel);
        self.engine.unsubscribe(channel).await.unwrap();
    }

    fn events(&self, channel: &str) -> Vec<Event> {
        let events = self.rec.events.lock().unwrap();
        events.iter().filter(|(c, _)| c == channel).map(|(_, e)| e.clone()).collect()
    }

    fn publications(&self, channel: &str) -> Vec<Publication> {
        self.events(channel)
            .into_iter()
            .filter_map(|e| match e {
                Event::Publication(p) => Some(*p),
                _ => None,
            })
            .collect()
    }

    fn control(&self) -> Vec<Vec<u8>> {
        self.rec.control.lock().unwrap().clone()
    }

    /// [`at`] as this broker delivers it: at offset 0 when it keeps no history.
    fn at(&self, offset: u64, data: &str) -> Publication {
        at(if self.engine.keeps_history() { offset } else { 0 }, data)
    }
}

/// A fresh cluster of every node the factory can make, handlers set.
async fn cluster<F: BrokerFactory>(f: &F) -> Vec<Node<F::Broker>> {
    let n = if f.is_single_node() { 1 } else { 2 };
    let engines = f.brokers(n).await;
    assert_eq!(engines.len(), n, "the factory made another number of nodes");
    engines
        .into_iter()
        .map(|engine| {
            let rec = Arc::new(Recorder::default());
            engine.set_handler(rec.clone());
            engine.set_control_handler(rec.clone());
            Node { engine, rec }
        })
        .collect()
}

/// Says on stderr which part of a case did not run, and why.
fn skipped(case: &str, part: &str, why: &str) {
    eprintln!("engine conformance: {case}: {part} skipped: {why}");
}

const ONE_NODE: &str = "the engine is a cluster of one";
const NO_HISTORY: &str = "the broker keeps no history";

/// Whether the case needs history and the broker keeps none (said on stderr).
fn without_history<E: Broker>(nodes: &[Node<E>], case: &str) -> bool {
    let none = !nodes[0].engine.keeps_history();
    if none {
        skipped(case, "all", NO_HISTORY);
    }
    none
}
const HANDS_OVER_ALL: &str = "the engine hands every channel to its node";

/// Polls `probe` until it answers, at most [`LIMIT`].
async fn eventually<F, T, Fut>(f: &F, what: &str, mut probe: impl FnMut() -> Fut) -> T
where
    F: BrokerFactory,
    Fut: Future<Output = Option<T>>,
{
    let mut waited = Duration::ZERO;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(waited < LIMIT, "waited {LIMIT:?} for {what}");
        f.sleep(STEP).await;
        waited += STEP;
    }
}

async fn wait_until<F: BrokerFactory>(f: &F, what: &str, mut done: impl FnMut() -> bool) {
    eventually(f, what, || std::future::ready(done().then_some(()))).await
}

/// Waits until `node` has `n` publications of `channel`; returns them.
async fn wait_publications<F: BrokerFactory>(f: &F, node: &Node<F::Broker>, channel: &str, n: usize) -> Vec<Publication> {
    let what = format!("{n} publications of {channel}");
    wait_until(f, &what, || node.publications(channel).len() >= n).await;
    node.publications(channel)
}

fn client(client: &str, user: &str) -> ClientInfo {
    ClientInfo {
        user: user.into(),
        client: client.into(),
        conn_info: Bytes::from(format!("{{\"conn\":\"{client}\"}}")),
        chan_info: Bytes::from_static(b"{\"role\":\"reader\"}"),
    }
}

/// A publication with every field an engine must carry set.
fn publication(data: &str) -> Publication {
    Publication {
        data: Bytes::copy_from_slice(data.as_bytes()),
        info: Some(client("publisher", "u0")),
        tags: HashMap::from([("n".to_string(), data.to_string())]),
        time: 1_700_000_000_123,
        ..Default::default()
    }
}

/// `publication(data)` as delivered and kept: at `offset`.
fn at(offset: u64, data: &str) -> Publication {
    Publication {
        offset,
        ..publication(data)
    }
}

fn kept(history_size: usize) -> PublishOptions {
    PublishOptions {
        history_size,
        history_ttl: Duration::from_secs(300),
        ..Default::default()
    }
}

const ALL: HistoryQuery = HistoryQuery {
    since: None,
    limit: -1,
    reverse: false,
    meta_ttl: std::time::Duration::ZERO,
};

/// Publications with history are numbered 1, 2, 3… per channel under one epoch, whichever
/// node publishes; the epoch is the one a history read gave before the first publication.
pub async fn history_offsets_count_from_one_under_one_epoch<F: BrokerFactory>(f: &F) {
    let nodes = cluster(f).await;
    if without_history(&nodes, "history_offsets_count_from_one_under_one_epoch") {
        return;
    }
    let empty = nodes[0].engine.history("ch", ALL).await.unwrap();
    assert_eq!(empty.publications, []);
    assert_eq!(empty.position.offset, 0);
    assert!(
        !empty.position.epoch.is_empty(),
        "a stream has an epoch before its first publication"
    );
    let epoch = empty.position.epoch;
    for i in 1..=6u64 {
        let node = &nodes[i as usize % nodes.len()];
        let pos = node.engine.publish("ch", publication(&i.to_string()), &kept(10)).await.unwrap();
        assert_eq!(
            pos,
            StreamPosition {
                offset: i,
                epoch: epoch.clone()
            }
        );
    }
    for node in &nodes {
        let h = node.engine.history("ch", ALL).await.unwrap();
        assert_eq!(h.publications, (1..=6).map(|i| at(i, &i.to_string())).collect::<Vec<_>>());
        assert_eq!(
            h.position,
            StreamPosition {
                offset: 6,
                epoch: epoch.clone()
            }
        );
    }
    // Streams are per channel.
    let other = nodes[0].engine.publish("other", publication("x"), &kept(10)).await.unwrap();
    assert_eq!(other.offset, 1);
    assert!(!other.epoch.is_empty());
}

/// Without history (size 0 or ttl 0) a publication has position `(0, "")`, is delivered to
/// every subscribed node with offset 0, and is not kept.
pub async fn publication_without_history_has_no_position_and_is_delivered<F: BrokerFactory>(f: &F) {
    let nodes = cluster(f).await;
    for n in &nodes {
        n.subscribe("ch").await;
    }
    let not_kept = [
        PublishOptions::default(),
        PublishOptions {
            history_size: 10,
            history_ttl: Duration::ZERO,
            ..Default::default()
        },
        PublishOptions {
            history_size: 0,
            history_ttl: Duration::from_secs(60),
            ..Default::default()
        },
    ];
    for (i, opts) in not_kept.iter().enumerate() {
        let pos = nodes[0].engine.publish("ch", publication(&i.to_string()), opts).await.unwrap();
        assert_eq!(pos, StreamPosition::default(), "{opts:?}");
    }
    for n in &nodes {
        let got = wait_publications(f, n, "ch", 3).await;
        assert_eq!(got, [at(0, "0"), at(0, "1"), at(0, "2")]);
    }
    if !nodes[0].engine.keeps_history() {
        return;
    }
    let h = nodes[0].engine.history("ch", ALL).await.unwrap();
    assert_eq!(h.publications, []);
    assert_eq!(h.position.offset, 0);
}

/// Each subscribed channel's publications arrive in stream order; a channel the node did not
/// subscribe to arrives not at all (engines that deliver only subscribed channels).
pub async fn delivers_each_channel_in_order_only_where_subscribed<F: BrokerFactory>(f: &F) {
    let nodes = cluster(f).await;
    let (publisher, receiver) = (&nodes[0], &nodes[nodes.len() - 1]);
    receiver.subscribe("a").await;
    receiver.subscribe("b").await;
    for i in 1..=50u64 {
        let s = i.to_string();
        publisher.engine.publish("a", publication(&s), &kept(100)).await.unwrap();
        publisher
            .engine
            .publish("b", publication(&s), &PublishOptions::default())
            .await
            .unwrap();
        publisher.engine.publish("c", publication(&s), &kept(100)).await.unwrap();
    }
    // After every publication of `c`.
    publisher.engine.publish("a", publication("51"), &kept(100)).await.unwrap();
    let a = wait_publications(f, receiver, "a", 51).await;
    assert_eq!(a, (1..=51).map(|i| receiver.at(i, &i.to_string())).collect::<Vec<_>>());
    let b = wait_publications(f, receiver, "b", 50).await;
    assert_eq!(b, (1..=50).map(|i| at(0, &i.to_string())).collect::<Vec<_>>());
    if f.delivers_only_subscribed() {
        assert_eq!(receiver.events("c"), [], "a channel without subscribers");
    } else {
        skipped(
            "delivers_each_channel_in_order_only_where_subscribed",
            "no delivery of c",
            HANDS_OVER_ALL,
        );
    }
}

/// Every node subscribed to a channel receives all of it in stream order, whichever node
/// published; a node not subscribed receives none of it.
pub async fn delivers_to_every_subscribed_node<F: BrokerFactory>(f: &F) {
    if f.is_single_node() {
        return skipped("delivers_to_every_subscribed_node", "all", ONE_NODE);
    }
    let nodes = cluster(f).await;
    for n in &nodes {
        n.subscribe("room").await;
    }
    nodes[0].subscribe("solo").await;
    for i in 1..=100u64 {
        let node = &nodes[i as usize % nodes.len()];
        node.engine.publish("room", publication(&i.to_string()), &kept(1000)).await.unwrap();
    }
    for i in 1..=3u64 {
        nodes[1]
            .engine
            .publish("solo", publication(&i.to_string()), &kept(10))
            .await
            .unwrap();
    }
    nodes[1].engine.publish("room", publication("101"), &kept(1000)).await.unwrap();
    for n in &nodes {
        let mut got = wait_publications(f, n, "room", 101).await;
        if !n.engine.keeps_history() {
            // Without a stream, only each publisher's own publications keep their order.
            let number = |p: &Publication| std::str::from_utf8(&p.data).unwrap().parse::<usize>().unwrap();
            for k in 0..nodes.len() {
                let own: Vec<usize> = got.iter().map(number).filter(|i| i % nodes.len() == k).collect();
                assert!(own.windows(2).all(|w| w[0] < w[1]), "node {k}'s publications out of order: {own:?}");
            }
            got.sort_by_key(number);
        }
        assert_eq!(got, (1..=101).map(|i| n.at(i, &i.to_string())).collect::<Vec<_>>());
    }
    let solo = wait_publications(f, &nodes[0], "solo", 3).await;
    assert_eq!(solo, (1..=3).map(|i| nodes[0].at(i, &i.to_string())).collect::<Vec<_>>());
    assert_eq!(nodes[1].events("solo"), [], "the node without subscribers of solo");
}

/// An unsubscribe while the node has subscribers again changes nothing (the engine asks
/// [`BrokerHandler::has_subscribers`] before it stops); after the last unsubscribe nothing
/// more arrives (engines that deliver only subscribed channels); subscribing again resumes.
pub async fn stops_delivering_after_the_last_unsubscribe<F: BrokerFactory>(f: &F) {
    let nodes = cluster(f).await;
    let (publisher, receiver) = (&nodes[0], &nodes[nodes.len() - 1]);
    receiver.subscribe("room").await;
    receiver.subscribe("marker").await;
    publisher.engine.publish("room", publication("1"), &kept(10)).await.unwrap();
    wait_publications(f, receiver, "room", 1).await;

    // A subscriber came back before the engine acted on the unsubscribe.
    receiver.engine.unsubscribe("room").await.unwrap();
    publisher.engine.publish("room", publication("2"), &kept(10)).await.unwrap();
    let (one, two) = (receiver.at(1, "1"), receiver.at(2, "2"));
    assert_eq!(wait_publications(f, receiver, "room", 2).await, [one.clone(), two.clone()]);

    receiver.unsubscribe("room").await;
    publisher.engine.publish("room", publication("3"), &kept(10)).await.unwrap();
    publisher
        .engine
        .publish("marker", publication("m"), &PublishOptions::default())
        .await
        .unwrap();
    wait_publications(f, receiver, "marker", 1).await;
    if f.delivers_only_subscribed() {
        assert_eq!(receiver.publications("room"), [one, two], "after the last unsubscribe");
    } else {
        skipped(
            "stops_delivering_after_the_last_unsubscribe",
            "no delivery after it",
            HANDS_OVER_ALL,
        );
    }

    receiver.subscribe("room").await;
    publisher.engine.publish("room", publication("4"), &kept(10)).await.unwrap();
    wait_until(f, "room #4 after subscribing again", || {
        receiver.publications("room").last() == Some(&receiver.at(4, "4"))
    })
    .await;
}

/// `since` (offset and epoch), `limit` (-1 all, 0 position only, n at most n) and `reverse`,
/// read from every node; a `since` with another epoch is [`EngineError::UnrecoverablePosition`].
pub async fn history_queries<F: BrokerFactory>(f: &F) {
    let nodes = cluster(f).await;
    if without_history(&nodes, "history_queries") {
        return;
    }
    for i in 1..=5u64 {
        let node = &nodes[i as usize % nodes.len()];
        node.engine.publish("ch", publication(&i.to_string()), &kept(10)).await.unwrap();
    }
    let epoch = nodes[0].engine.history("ch", ALL).await.unwrap().position.epoch;
    let since = |offset| {
        Some(StreamPosition {
            offset,
            epoch: epoch.clone(),
        })
    };
    let cases: [(Option<StreamPosition>, i64, bool, &[u64]); 14] = [
        (None, -1, false, &[1, 2, 3, 4, 5]),
        (None, 0, false, &[]),
        (None, 2, false, &[1, 2]),
        (None, 9, false, &[1, 2, 3, 4, 5]),
        (None, -1, true, &[5, 4, 3, 2, 1]),
        (None, 2, true, &[5, 4]),
        (None, 0, true, &[]),
        (since(0), -1, false, &[1, 2, 3, 4, 5]),
        (since(2), -1, false, &[3, 4, 5]),
        (since(2), 2, false, &[3, 4]),
        (since(2), 0, false, &[]),
        (since(2), -1, true, &[5, 4, 3]),
        (since(2), 1, true, &[5]),
        (since(5), -1, false, &[]),
    ];
    for node in &nodes {
        for (since, limit, reverse, want) in &cases {
            let q = HistoryQuery {
                since: since.clone(),
                limit: *limit,
                reverse: *reverse,
                ..Default::default()
            };
            let h = node.engine.history("ch", q.clone()).await.unwrap();
            let want: Vec<Publication> = want.iter().map(|&o| at(o, &o.to_string())).collect();
            assert_eq!(h.publications, want, "{q:?}");
            assert_eq!(
                h.position,
                StreamPosition {
                    offset: 5,
                    epoch: epoch.clone()
                },
                "{q:?}"
            );
        }
        for limit in [-1, 0, 2] {
            let wrong = HistoryQuery {
                since: Some(StreamPosition {
                    offset: 1,
                    epoch: format!("not-{epoch}"),
                }),
                limit,
                reverse: false,
                ..Default::default()
            };
            assert_eq!(node.engine.history("ch", wrong).await, Err(EngineError::UnrecoverablePosition));
        }
    }
}

/// A stream keeps its newest `history_size` publications; the position is the top.
pub async fn history_size_keeps_the_newest<F: BrokerFactory>(f: &F) {
    let nodes = cluster(f).await;
    if without_history(&nodes, "history_size_keeps_the_newest") {
        return;
    }
    for i in 1..=7u64 {
        let node = &nodes[i as usize % nodes.len()];
        node.engine.publish("ch", publication(&i.to_string()), &kept(3)).await.unwrap();
    }
    for node in &nodes {
        let h = node.engine.history("ch", ALL).await.unwrap();
        assert_eq!(h.publications, [at(5, "5"), at(6, "6"), at(7, "7")]);
        assert_eq!(h.position.offset, 7);
    }
    // The size given with the latest publication applies.
    nodes[0].engine.publish("ch", publication("8"), &kept(1)).await.unwrap();
    for node in &nodes {
        assert_eq!(node.engine.history("ch", ALL).await.unwrap().publications, [at(8, "8")]);
    }
}

/// Once `history_ttl` has passed since the last publication the history is empty; the
/// position stays and the next publication continues it. (Memory expires publication by
/// publication, Redis the whole stream: see the module's notes.)
pub async fn history_ttl_empties_the_history_and_keeps_the_position<F: BrokerFactory>(f: &F) {
    let nodes = cluster(f).await;
    if without_history(&nodes, "history_ttl_empties_the_history_and_keeps_the_position") {
        return;
    }
    let opts = PublishOptions {
        history_size: 10,
        history_ttl: Duration::from_secs(1),
        ..Default::default()
    };
    let first = nodes[0].engine.publish("ch", publication("1"), &opts).await.unwrap();
    nodes[nodes.len() - 1].engine.publish("ch", publication("2"), &opts).await.unwrap();
    let h = nodes[0].engine.history("ch", ALL).await.unwrap();
    assert_eq!(h.publications, [at(1, "1"), at(2, "2")], "before history_ttl");
    let reader = &nodes[0].engine;
    let expired = eventually(f, "the history to expire", || async move {
        let h = reader.history("ch", ALL).await.unwrap();
        h.publications.is_empty().then_some(h)
    })
    .await;
    assert_eq!(
        expired.position,
        StreamPosition {
            offset: 2,
            epoch: first.epoch.clone()
        }
    );
    let next = nodes[nodes.len() - 1].engine.publish("ch", publication("3"), &opts).await.unwrap();
    assert_eq!(
        next,
        StreamPosition {
            offset: 3,
            epoch: first.epoch
        }
    );
    for node in &nodes {
        assert_eq!(node.engine.history("ch", ALL).await.unwrap().publications, [at(3, "3")]);
    }
}

/// `remove_history` empties the stream but keeps its position (offset and epoch), so that
/// positioned clients are not misled; the next publication continues it.
pub async fn remove_history_keeps_the_position<F: BrokerFactory>(f: &F) {
    let nodes = cluster(f).await;
    if without_history(&nodes, "remove_history_keeps_the_position") {
        return;
    }
    let mut epoch = String::new();
    for i in 1..=3 {
        epoch = nodes[0]
            .engine
            .publish("ch", publication(&i.to_string()), &kept(10))
            .await
            .unwrap()
            .epoch;
    }
    nodes[nodes.len() - 1].engine.remove_history("ch").await.unwrap();
    for node in &nodes {
        let h = node.engine.history("ch", ALL).await.unwrap();
        assert_eq!(h.publications, []);
        assert_eq!(
            h.position,
            StreamPosition {
                offset: 3,
                epoch: epoch.clone()
            }
        );
    }
    let next = nodes[0].engine.publish("ch", publication("4"), &kept(10)).await.unwrap();
    assert_eq!(next, StreamPosition { offset: 4, epoch });
    for node in &nodes {
        assert_eq!(node.engine.history("ch", ALL).await.unwrap().publications, [at(4, "4")]);
    }
    nodes[0].engine.remove_history("never-published").await.unwrap();
}

/// Presence: added, replaced by adding again, removed (twice is fine), per channel.
pub async fn presence_add_get_remove<F: EngineFactory>(f: &F) {
    let nodes = cluster(f).await;
    let e = &nodes[0].engine;
    assert_eq!(e.presence("p").await.unwrap(), HashMap::new());
    e.add_presence("p", "c1", client("c1", "u1")).await.unwrap();
    assert_eq!(
        e.presence("p").await.unwrap(),
        HashMap::from([("c1".to_string(), client("c1", "u1"))])
    );
    assert_eq!(e.presence("other").await.unwrap(), HashMap::new());
    let changed = ClientInfo {
        chan_info: Bytes::from_static(b"{\"role\":\"writer\"}"),
        ..client("c1", "u1")
    };
    e.add_presence("p", "c1", changed.clone()).await.unwrap();
    assert_eq!(e.presence("p").await.unwrap(), HashMap::from([("c1".to_string(), changed)]));
    e.remove_presence("p", "c1").await.unwrap();
    assert_eq!(e.presence("p").await.unwrap(), HashMap::new());
    e.remove_presence("p", "c1").await.unwrap();
    e.remove_presence("never-present", "c1").await.unwrap();
    assert_eq!(e.presence("p").await.unwrap(), HashMap::new());
}

/// Presence of two clients of one user and a client of another: each by client id.
pub async fn presence_of_two_clients_and_two_users<F: EngineFactory>(f: &F) {
    let nodes = cluster(f).await;
    let e = &nodes[0].engine;
    for (c, u) in [("c1", "u1"), ("c2", "u1"), ("c3", "u2")] {
        e.add_presence("p", c, client(c, u)).await.unwrap();
    }
    let want = |cs: &[(&str, &str)]| -> HashMap<String, ClientInfo> { cs.iter().map(|&(c, u)| (c.to_string(), client(c, u))).collect() };
    assert_eq!(e.presence("p").await.unwrap(), want(&[("c1", "u1"), ("c2", "u1"), ("c3", "u2")]));
    e.remove_presence("p", "c1").await.unwrap();
    assert_eq!(e.presence("p").await.unwrap(), want(&[("c2", "u1"), ("c3", "u2")]));
    e.remove_presence("p", "c3").await.unwrap();
    assert_eq!(e.presence("p").await.unwrap(), want(&[("c2", "u1")]));
}

/// Presence is the cluster's: added on one node, seen and removed from the other.
pub async fn presence_is_seen_from_the_other_node<F: EngineFactory>(f: &F) {
    if f.is_single_node() {
        return skipped("presence_is_seen_from_the_other_node", "all", ONE_NODE);
    }
    let nodes = cluster(f).await;
    nodes[0].engine.add_presence("p", "c1", client("c1", "u1")).await.unwrap();
    nodes[1].engine.add_presence("p", "c2", client("c2", "u2")).await.unwrap();
    let both = HashMap::from([("c1".to_string(), client("c1", "u1")), ("c2".to_string(), client("c2", "u2"))]);
    for n in &nodes {
        assert_eq!(n.engine.presence("p").await.unwrap(), both);
    }
    nodes[1].engine.remove_presence("p", "c1").await.unwrap();
    for n in &nodes {
        assert_eq!(
            n.engine.presence("p").await.unwrap(),
            HashMap::from([("c2".to_string(), client("c2", "u2"))])
        );
    }
}

/// Joins and leaves reach every subscribed node, with the client's info, in stream order
/// with the channel's publications.
pub async fn join_and_leave_reach_subscribers_in_stream_order<F: BrokerFactory>(f: &F) {
    let nodes = cluster(f).await;
    for n in &nodes {
        n.subscribe("room").await;
    }
    let (first, last) = (&nodes[0], &nodes[nodes.len() - 1]);
    first.engine.publish("room", publication("1"), &kept(10)).await.unwrap();
    first.engine.publish_join("room", client("c1", "u1")).await.unwrap();
    first
        .engine
        .publish("room", publication("2"), &PublishOptions::default())
        .await
        .unwrap();
    first.engine.publish_leave("room", client("c1", "u1")).await.unwrap();
    last.engine.publish_join("room", client("c2", "u2")).await.unwrap();
    let want = [
        Event::Publication(Box::new(first.at(1, "1"))),
        Event::Join(client("c1", "u1")),
        Event::Publication(Box::new(at(0, "2"))),
        Event::Leave(client("c1", "u1")),
        Event::Join(client("c2", "u2")),
    ];
    for n in &nodes {
        wait_until(f, "five events of room", || n.events("room").len() >= want.len()).await;
        let mut got = n.events("room");
        if !n.engine.keeps_history() && nodes.len() > 1 {
            // Without a stream, only the first node's events keep their order: the last
            // node's join may come anywhere among them.
            let theirs = Event::Join(client("c2", "u2"));
            assert_eq!(got.iter().filter(|e| **e == theirs).count(), 1, "{got:?}");
            got.retain(|e| *e != theirs);
            got.push(theirs);
        }
        assert_eq!(got, want);
    }
}

/// A publish with an idempotency key already used in the channel within its window is not
/// published again: the first result comes back, nothing is delivered or stored twice; the
/// same key in another channel, or without a key, publishes.
pub async fn idempotent_publish_is_published_once<F: BrokerFactory>(f: &F) {
    let nodes = cluster(f).await;
    if without_history(&nodes, "idempotent_publish_is_published_once") {
        return;
    }
    for n in &nodes {
        n.subscribe("ch").await;
    }
    let once = |key: &str| PublishOptions {
        idempotency_key: Some(key.to_string()),
        idempotent_result_ttl: Duration::from_secs(300),
        ..kept(10)
    };
    let first = nodes[0].engine.publish("ch", publication("a"), &once("k1")).await.unwrap();
    assert_eq!(first.offset, 1);
    // Again, from every node: the first result, not a second publication.
    for n in &nodes {
        let again = n.engine.publish("ch", publication("a"), &once("k1")).await.unwrap();
        assert_eq!(again, first);
    }
    let other_key = nodes[0].engine.publish("ch", publication("b"), &once("k2")).await.unwrap();
    assert_eq!(other_key.offset, 2);
    let other_channel = nodes[0].engine.publish("other", publication("c"), &once("k1")).await.unwrap();
    assert_eq!(other_channel.offset, 1);
    let no_key = nodes[0].engine.publish("ch", publication("d"), &kept(10)).await.unwrap();
    assert_eq!(no_key.offset, 3);
    for n in &nodes {
        let got = wait_publications(f, n, "ch", 3).await;
        assert_eq!(got, [at(1, "a"), at(2, "b"), at(3, "d")]);
    }
    let h = nodes[0].engine.history("ch", ALL).await.unwrap();
    assert_eq!(h.publications, [at(1, "a"), at(2, "b"), at(3, "d")]);
}

/// An engine whose backend answers says so.
pub async fn check_is_ok<F: BrokerFactory>(f: &F) {
    for n in cluster(f).await {
        assert_eq!(n.engine.check().await, Ok(()));
    }
}

/// A control message reaches every node's handler, the sender's included, once each.
///
/// A node hears the cluster once its engine's check has passed: a node is started (and
/// ready) only then, and a message sent to it before is lost (the Redis engine subscribes
/// to the control channel on first use; its check waits for that subscription).
pub async fn control_reaches_every_node_including_the_sender<F: BrokerFactory>(f: &F) {
    let nodes = cluster(f).await;
    for n in &nodes {
        assert_eq!(n.engine.check().await, Ok(()));
    }
    nodes[0].engine.publish_control(b"to all".to_vec()).await.unwrap();
    let (last, from_last) = (&nodes[nodes.len() - 1], b"from the last node".to_vec());
    last.engine.publish_control(from_last.clone()).await.unwrap();
    if nodes.len() == 1 {
        skipped("control_reaches_every_node_including_the_sender", "another node", ONE_NODE);
    }
    for n in &nodes {
        wait_until(f, "two control messages", || n.control().len() >= 2).await;
        assert_eq!(n.control(), [b"to all".to_vec(), from_last.clone()]);
    }
}

#[cfg(test)]
mod memory {
    crate::engine_conformance!(#[test] fn, super::MemoryFactory::default());

    /// The broker half alone, as a broker without presence runs it.
    mod broker_half {
        crate::broker_conformance!(#[test] fn, super::super::MemoryFactory::default());
    }
}
