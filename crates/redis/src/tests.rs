//! Against a real `redis-server` started on a free port by each test.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::health::shard_name;
use crate::pubsub::dispatch;
use crate::shard::Epochs;
use recorder::Recorder;
use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;
use wshub_core::cluster::{ControlHandler, NodeControl};
use wshub_core::engine::*;
use wshub_protocol::{ClientInfo, Publication};
use wshub_testkit::redis::{cli, RedisCluster, RedisServer};

const LIMIT: Duration = Duration::from_secs(20);

/// A recorder set as `e`'s handler, with subscribers of every channel.
fn listen(e: &RedisEngine) -> Arc<Recorder> {
    let r = Arc::new(Recorder::default());
    e.set_handler(r.clone());
    r.set_subscribed(true);
    r
}

/// A presence entry: client `c` of user `u`.
fn info(c: &str, u: &str) -> ClientInfo {
    ClientInfo {
        client: c.into(),
        user: u.into(),
        ..Default::default()
    }
}

/// An engine on a Redis Cluster, under `prefix`.
fn cluster_engine(cluster: &RedisCluster, prefix: &str) -> RedisEngine {
    RedisEngine::new(RedisConfig {
        cluster: vec![cluster.seeds()],
        prefix: prefix.into(),
        presence_ttl: Duration::from_secs(60),
        ..Default::default()
    })
    .unwrap()
}

/// An engine on `server` whose presence entries live a minute: long enough that none
/// expires during a test on a loaded machine (the expiry test asks for less).
fn engine(server: &RedisServer, prefix: &str) -> Arc<RedisEngine> {
    engine_with_presence_ttl(server, prefix, Duration::from_secs(60))
}

fn engine_with_presence_ttl(server: &RedisServer, prefix: &str, presence_ttl: Duration) -> Arc<RedisEngine> {
    Arc::new(
        RedisEngine::new(RedisConfig {
            address: server.url(),
            prefix: prefix.into(),
            presence_ttl,
            ..Default::default()
        })
        .unwrap(),
    )
}

mod recorder {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    /// A node's side: what the broker delivered.
    #[derive(Default)]
    pub struct Recorder {
        pub got: Mutex<Vec<String>>,
        pub subscribed: AtomicBool,
        pub notify: tokio::sync::Notify,
    }

    impl Recorder {
        fn push(&self, s: String) {
            self.got.lock().unwrap().push(s);
            self.notify.notify_waiters();
        }

        pub async fn wait_for(&self, n: usize) -> Vec<String> {
            let deadline = tokio::time::Instant::now() + LIMIT;
            loop {
                let notified = self.notify.notified();
                {
                    let g = self.got.lock().unwrap();
                    if g.len() >= n {
                        return g.clone();
                    }
                }
                assert!(
                    tokio::time::timeout_at(deadline, notified).await.is_ok(),
                    "only {:?}",
                    self.got.lock().unwrap()
                );
            }
        }

        /// Waits until what was delivered contains every item of `want`.
        pub async fn wait_for_all(&self, want: &[String]) -> Vec<String> {
            let deadline = tokio::time::Instant::now() + LIMIT;
            loop {
                let notified = self.notify.notified();
                {
                    let g = self.got.lock().unwrap();
                    if want.iter().all(|w| g.contains(w)) {
                        return g.clone();
                    }
                }
                assert!(
                    tokio::time::timeout_at(deadline, notified).await.is_ok(),
                    "wanted {want:?}, only {:?}",
                    self.got.lock().unwrap()
                );
            }
        }

        pub fn set_subscribed(&self, v: bool) {
            self.subscribed.store(v, Ordering::SeqCst);
        }
    }

    impl BrokerHandler for Recorder {
        fn handle_publication(&self, channel: &str, p: &Publication) {
            self.push(format!("{channel} #{} {}", p.offset, String::from_utf8_lossy(&p.data)));
        }
        fn handle_join(&self, channel: &str, info: &ClientInfo) {
            self.push(format!("{channel} join {}", info.client));
        }
        fn handle_leave(&self, channel: &str, info: &ClientInfo) {
            self.push(format!("{channel} leave {}", info.client));
        }
        fn handle_reset(&self, channel: &str) {
            self.push(format!("{channel} reset"));
        }
        fn has_subscribers(&self, _channel: &str) -> bool {
            self.subscribed.load(Ordering::SeqCst)
        }
    }
}

fn publication(data: &str) -> Publication {
    Publication {
        data: bytes::Bytes::copy_from_slice(data.as_bytes()),
        ..Default::default()
    }
}

async fn node(server: &RedisServer, prefix: &str) -> (Arc<RedisEngine>, Arc<Recorder>) {
    let e = engine(server, prefix);
    let r = Arc::new(Recorder::default());
    e.set_handler(r.clone());
    (e, r)
}

/// Redis only (the memory engine keeps presence until removed): entries not added again
/// within `presence_ttl` are gone. Sharing between nodes is in the conformance suite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_expires_unless_added_again() {
    let server = RedisServer::start().await;
    let ttl = Duration::from_secs(3);
    let (a, b) = (
        engine_with_presence_ttl(&server, "t3", ttl),
        engine_with_presence_ttl(&server, "t3", ttl),
    );
    a.add_presence("p", "c1", info("c1", "u")).await.unwrap();
    b.add_presence("p", "c2", info("c2", "u")).await.unwrap();
    b.add_presence("p", "c3", info("c3", "v")).await.unwrap();
    a.add_presence("p", "c1", info("c1", "u")).await.unwrap(); // a refresh: counted once
    assert_eq!(a.presence("p").await.unwrap().len(), 3);
    // Stats are counts kept beside the map (two HLENs), not the map itself.
    assert_eq!(b.presence_stats("p").await.unwrap(), (3, 2));
    b.remove_presence("p", "c2").await.unwrap();
    b.remove_presence("p", "c2").await.unwrap(); // twice: no double count
    assert_eq!(a.presence_stats("p").await.unwrap(), (2, 2));
    b.remove_presence("p", "c3").await.unwrap();
    assert_eq!(a.presence_stats("p").await.unwrap(), (1, 1));
    // Not refreshed within presence_ttl (3 s here): gone, from the map and the counts.
    let deadline = Instant::now() + LIMIT;
    while a.presence_stats("p").await.unwrap() != (0, 0) {
        assert!(Instant::now() < deadline, "presence never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(a.presence("p").await.unwrap().is_empty());
}

/// `history_meta_ttl`: the stream's position lives that long after the last publication or
/// history read (a read prolongs it), then a new epoch begins; history publications keep
/// their own `history_ttl`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_position_expires_after_history_meta_ttl() {
    let server = RedisServer::start().await;
    let (e, _) = node(&server, "tmeta").await;
    let opts = PublishOptions {
        history_size: 10,
        history_ttl: Duration::from_secs(1),
        meta_ttl: Duration::from_secs(2),
        ..Default::default()
    };
    let first = e.publish("m", publication("one"), &opts).await.unwrap();
    let read = HistoryQuery {
        meta_ttl: Duration::from_secs(2),
        ..Default::default()
    };
    assert_eq!(e.history("m", read.clone()).await.unwrap().position, first);
    let deadline = Instant::now() + LIMIT;
    loop {
        // Polled without a read (a read would keep it alive): the meta key's TTL in Redis.
        let mut c = redis::Client::open(server.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let ttl: i64 = redis::cmd("PTTL").arg("tmeta.meta.m").query_async(&mut c).await.unwrap();
        if ttl == -2 {
            break;
        }
        assert!(ttl <= 2000, "meta TTL from history_meta_ttl: {ttl}");
        assert!(Instant::now() < deadline, "meta never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = e.publish("m", publication("two"), &opts).await.unwrap();
    assert_eq!(after.offset, 1);
    assert_ne!(after.epoch, first.epoch, "a new epoch once the position is forgotten");
}

/// A dead node's presence entries are taken out once, by whichever survivor asks first,
/// with the counts kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_presence_is_reaped_once() {
    let server = RedisServer::start().await;
    let (a, _) = node(&server, "t9").await;
    let (dead, _) = node(&server, "t9").await;
    reaps_once(&a, &dead, &["p", "q"]).await;
}

/// `dead`'s clients in `channels` (one also left normally) are reaped by `a` once; `a`'s own
/// stays.
async fn reaps_once(a: &RedisEngine, dead: &RedisEngine, channels: &[&str]) {
    dead.set_node_uid("dead-node");
    a.set_node_uid("live-node");
    for ch in channels {
        dead.add_presence(ch, "g1", info("g1", "ghost")).await.unwrap();
    }
    dead.add_presence("p", "g2", info("g2", "ghost")).await.unwrap();
    dead.remove_presence("p", "g2").await.unwrap(); // left normally: not reaped
    a.add_presence("p", "l1", info("l1", "alive")).await.unwrap();
    let mut reaped = a.reap_node("dead-node").await.unwrap();
    reaped.sort_by(|x, y| x.0.cmp(&y.0));
    let got: Vec<(&str, &str)> = reaped.iter().map(|(c, i)| (c.as_str(), i.client.as_str())).collect();
    assert_eq!(got, channels.iter().map(|c| (*c, "g1")).collect::<Vec<_>>());
    assert!(a.reap_node("dead-node").await.unwrap().is_empty(), "once");
    assert_eq!(a.presence_stats("q").await.unwrap(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_redis_restart() {
    let mut server = RedisServer::start().await;
    let port = server.port;
    let (a, _) = node(&server, "t4").await;
    let (b, rb) = node(&server, "t4").await;
    rb.set_subscribed(true);
    b.subscribe("r").await.unwrap();
    a.publish("r", publication("before"), &PublishOptions::default()).await.unwrap();
    rb.wait_for(1).await;
    server.stop();
    // Calls fail with an engine error (not a hang, not a panic) while Redis is away.
    let r = tokio::time::timeout(LIMIT, a.publish("r", publication("lost"), &PublishOptions::default())).await;
    assert!(matches!(r, Ok(Err(EngineError::Internal(_)))), "{r:?}");
    let _server = RedisServer::start_on(port).await;
    // Both connections come back; the pub/sub one subscribes again by itself.
    let deadline = Instant::now() + LIMIT;
    loop {
        let _ = a.publish("r", publication("after"), &PublishOptions::default()).await;
        let got = rb.got.lock().unwrap().clone();
        if got.iter().any(|g| g.ends_with("after")) {
            break;
        }
        assert!(Instant::now() < deadline, "no delivery after the restart: {got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The engine's check (what the binary waits on before it listens, and `/ready` follows)
/// fails while the pub/sub connection has not subscribed yet, naming why, and passes once
/// it has: from then on a control message sent by another node is heard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_waits_for_the_first_pubsub_subscription() {
    use wshub_testkit::redis::PubSubProxy;
    let server = RedisServer::start().await;
    let proxy = PubSubProxy::start(server.port).await;
    proxy.freeze();
    let e = Arc::new(
        RedisEngine::new(RedisConfig {
            address: proxy.url(),
            prefix: "t-first".into(),
            canary_interval: Duration::from_millis(300),
            ..Default::default()
        })
        .unwrap(),
    );
    e.set_handler(Arc::new(Recorder::default()));
    let heard = Arc::new(ControlRecorder::default());
    e.set_control_handler(heard.clone());
    let err = e.check().await.expect_err("pub/sub cannot subscribe: not ready").to_string();
    assert!(err.contains("pub/sub not connected yet"), "{err}");
    proxy.thaw();
    let deadline = Instant::now() + LIMIT;
    while let Err(err) = e.check().await {
        assert!(Instant::now() < deadline, "still not ready after the thaw: {err}");
    }
    let (other, _) = node(&server, "t-first").await;
    other.publish_control(b"first".to_vec()).await.unwrap();
    heard.wait_for(b"first").await;
}

#[derive(Default)]
struct ControlRecorder {
    got: std::sync::Mutex<Vec<Vec<u8>>>,
    notify: tokio::sync::Notify,
}

impl ControlHandler for ControlRecorder {
    fn handle_control(&self, data: &[u8]) {
        self.got.lock().unwrap().push(data.to_vec());
        self.notify.notify_waiters();
    }
}

impl ControlRecorder {
    async fn wait_for(&self, want: &[u8]) {
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            let notified = self.notify.notified();
            if self.got.lock().unwrap().iter().any(|m| m == want) {
                return;
            }
            assert!(
                tokio::time::timeout_at(deadline, notified).await.is_ok(),
                "control message not heard"
            );
        }
    }
}

/// The canary: pub/sub frozen (through [`PubSubProxy`]) while commands work. Within two
/// canary periods the engine's check fails naming the shard and the node is told that its
/// channels' live streams broke (`reset`: positioned subscribers closed with 3010);
/// publishes are still answered; once pub/sub delivers again, the check passes and
/// deliveries resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_notices_a_frozen_pubsub_and_recovers() {
    use wshub_testkit::redis::PubSubProxy;
    let server = RedisServer::start().await;
    let proxy = PubSubProxy::start(server.port).await;
    let interval = Duration::from_millis(300);
    let e = Arc::new(
        RedisEngine::new(RedisConfig {
            address: proxy.url(),
            prefix: "t10".into(),
            canary_interval: interval,
            ..Default::default()
        })
        .unwrap(),
    );
    let r = listen(&e);
    e.subscribe("c").await.unwrap();
    let opts = PublishOptions {
        history_size: 10,
        history_ttl: Duration::from_secs(60),
        ..Default::default()
    };
    e.publish("c", publication("one"), &opts).await.unwrap();
    r.wait_for(1).await;
    // Up: several canary round trips pass.
    let started = Instant::now();
    let deadline = started + LIMIT;
    while e.health().down_reason().is_some() || started.elapsed() < interval * 3 {
        assert!(Instant::now() < deadline, "canary never came back: {:?}", e.health().down_reason());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    e.check().await.unwrap();

    proxy.freeze();
    let frozen_at = Instant::now();
    let err = loop {
        if let Err(err) = e.check().await {
            break err;
        }
        assert!(Instant::now() < frozen_at + LIMIT, "check still passes with pub/sub frozen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let noticed = frozen_at.elapsed();
    assert!(noticed <= interval * 2 + Duration::from_millis(500), "noticed after {noticed:?}");
    let err = err.to_string();
    assert!(
        err.contains(&format!("127.0.0.1:{}", proxy.port)) && err.contains("canary"),
        "{err}"
    );
    assert_eq!(r.wait_for(2).await[1], "c reset");
    // Commands still work: the publication is kept (and recovered from history by the
    // subscribers that were told).
    let pos = e.publish("c", publication("two"), &opts).await.unwrap();
    assert_eq!(pos.offset, 2);

    proxy.thaw();
    let deadline = Instant::now() + LIMIT;
    while let Err(err) = e.check().await {
        assert!(Instant::now() < deadline, "still down after the thaw: {err}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    e.publish("c", publication("three"), &opts).await.unwrap();
    let got = r.wait_for_all(&["c #3 three".to_string()]).await;
    assert!(
        !got.iter().any(|g| g.ends_with("two")),
        "delivered through a frozen connection: {got:?}"
    );
}

#[test]
fn channels_spread_over_shards_and_few_move_when_one_is_added() {
    let names: Vec<String> = (0..3000).map(|i| format!("chat:{i}")).collect();
    let mut per_shard = [0usize; 3];
    for n in &names {
        per_shard[shard_index(n, 3)] += 1;
    }
    assert!(per_shard.iter().all(|&c| c > 800), "{per_shard:?}");
    // A fourth shard takes about a quarter; no channel moves between the first three.
    let moved: Vec<&String> = names.iter().filter(|n| shard_index(n, 3) != shard_index(n, 4)).collect();
    assert!(moved.iter().all(|n| shard_index(n, 4) == 3));
    assert!((600..900).contains(&moved.len()), "{}", moved.len());
    assert_eq!(shard_index("x", 1), 0);
}

/// Three independent Redis servers as shards: channels on every one; one server stopped
/// fails only its channels (publishes, and the subscribers told with a reset), and the
/// check names it alone; the others go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_shard_affects_only_its_channels() {
    let mut servers = [RedisServer::start().await, RedisServer::start().await, RedisServer::start().await];
    let address = servers.iter().map(|s| s.url()).collect::<Vec<_>>().join(",");
    let e = RedisEngine::new(RedisConfig {
        address,
        prefix: "t11".into(),
        canary_interval: Duration::from_millis(300),
        ..Default::default()
    })
    .unwrap();
    let r = listen(&e);
    // One channel per shard.
    let channels: Vec<String> = (0..3)
        .map(|shard| (0..).map(|i| format!("c{i}")).find(|c| e.shard_of(c) == shard).unwrap())
        .collect();
    let opts = PublishOptions {
        history_size: 10,
        history_ttl: Duration::from_secs(60),
        ..Default::default()
    };
    for c in &channels {
        e.subscribe(c).await.unwrap();
        e.publish(c, publication("one"), &opts).await.unwrap();
    }
    r.wait_for(3).await;
    // Each shard's Redis holds only its own channel's keys.
    for (i, server) in servers.iter().enumerate() {
        let mut c = redis::Client::open(server.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let keys: Vec<String> = redis::cmd("KEYS").arg("t11.stream.*").query_async(&mut c).await.unwrap();
        assert_eq!(keys, [format!("t11.stream.{}", channels[i])]);
    }
    let down = e.shard_names()[1].clone();
    servers[1].stop();
    let deadline = Instant::now() + LIMIT;
    let err = loop {
        if let Err(err) = e.check().await {
            break err.to_string();
        }
        assert!(Instant::now() < deadline, "check passes with a shard stopped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(err.contains(&down), "{err}");
    for (i, name) in e.shard_names().iter().enumerate() {
        assert_eq!(err.contains(name.as_str()), i == 1, "{err}");
    }
    // Its channel's subscribers are told; the others' are not.
    let deadline = Instant::now() + LIMIT;
    while !r.got.lock().unwrap().contains(&format!("{} reset", channels[1])) {
        assert!(Instant::now() < deadline, "{:?}", r.got.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(e.publish(&channels[1], publication("two"), &opts).await.is_err());
    for i in [0, 2] {
        assert_eq!(e.publish(&channels[i], publication("two"), &opts).await.unwrap().offset, 2);
    }
    let got = r
        .wait_for_all(&[format!("{} #2 two", channels[0]), format!("{} #2 two", channels[2])])
        .await;
    for i in [0, 2] {
        assert!(!got.contains(&format!("{} reset", channels[i])), "{got:?}");
    }
}

#[test]
fn shard_names_leave_out_credentials() {
    assert_eq!(shard_name("redis://127.0.0.1:6379"), "127.0.0.1:6379");
    assert_eq!(shard_name("redis://:secret@10.0.0.1:6380/2"), "10.0.0.1:6380/2");
    assert_eq!(shard_name("rediss://user:p@ss@h:1/"), "h:1");
    assert_eq!(shard_name("redis+unix:///run/redis.sock"), "/run/redis.sock");
}

#[test]
fn bad_address_is_refused() {
    let r = RedisEngine::new(RedisConfig {
        address: "http://nope".into(),
        ..Default::default()
    });
    assert!(matches!(r, Err(RedisEngineError::Address(_))));
}

#[test]
fn pubsub_names_carry_their_channel() {
    for cluster in [false, true] {
        let names = crate::pubsub::Names {
            prefix: "x".into(),
            cluster,
            control: "x.control".into(),
        };
        for ch in ["c", "a.b", "{weird}.name", ""] {
            assert_eq!(names.channel_of(&names.client(ch)), Some(ch), "{cluster} {ch}");
        }
        assert_eq!(names.channel_of("other"), None);
        assert_eq!(names.channel_of("x.control"), None);
    }
}

#[test]
fn dispatch_ignores_garbage_and_reports_a_new_epoch() {
    let r = Recorder::default();
    let epochs = Epochs::default();
    let d = |payload: &[u8]| dispatch(&r, &epochs, "c", payload);
    d(b"");
    d(b"p12");
    d(b"p12:e");
    d(b"pzz:e:\x01");
    d(b"j\xff\xff");
    assert!(r.got.lock().unwrap().is_empty());
    d(b"p7:e1:");
    assert_eq!(r.got.lock().unwrap().as_slice(), ["c #7 "]);
    // A subscribed channel whose epoch changes is reported once, before the publication.
    epochs.lock().unwrap().insert("c".into(), String::new());
    d(b"p8:e1:");
    d(b"p9:e1:");
    d(b"p1:e2:");
    assert_eq!(r.got.lock().unwrap().as_slice(), ["c #7 ", "c #8 ", "c #9 ", "c reset", "c #1 "]);
}

mod conformance;

/// Nodes with different `compression` settings read each other's publications, from
/// pub/sub and from history; only bodies over the threshold are compressed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_different_compression_read_each_other() {
    let server = RedisServer::start().await;
    let node = |compression| {
        let e = Arc::new(
            RedisEngine::new(RedisConfig {
                address: server.url(),
                prefix: "t12".into(),
                compression,
                compression_min_size: 200,
                ..Default::default()
            })
            .unwrap(),
        );
        let r = listen(&e);
        (e, r)
    };
    let (lz4, _) = node(Compression::Lz4);
    let (zstd, _) = node(Compression::Zstd);
    let (plain, seen) = node(Compression::None);
    plain.subscribe("c").await.unwrap();
    let opts = PublishOptions {
        history_size: 10,
        history_ttl: Duration::from_secs(60),
        ..Default::default()
    };
    let long = format!("{{\"text\":\"{}\"}}", "hello world ".repeat(100));
    lz4.publish("c", publication(&long), &opts).await.unwrap();
    zstd.publish("c", publication(&long), &opts).await.unwrap();
    zstd.publish("c", publication("short"), &opts).await.unwrap();
    let got = seen.wait_for(3).await;
    assert_eq!(got, [format!("c #1 {long}"), format!("c #2 {long}"), "c #3 short".to_string()]);
    let h = lz4.history("c", HistoryQuery::ALL).await.unwrap();
    let data: Vec<String> = h
        .publications
        .iter()
        .map(|p| String::from_utf8_lossy(&p.data).into_owned())
        .collect();
    assert_eq!(data, [long.clone(), long.clone(), "short".to_string()]);
    // Stored compressed (field `c`) over the threshold, as it is (`d`) under it.
    let mut c = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let entries: Vec<(String, HashMap<String, Vec<u8>>)> = redis::cmd("XRANGE")
        .arg("t12.stream.c")
        .arg("-")
        .arg("+")
        .query_async(&mut c)
        .await
        .unwrap();
    let fields: Vec<Vec<&String>> = entries.iter().map(|(_, f)| f.keys().collect()).collect();
    assert_eq!(fields, [vec!["c"], vec!["c"], vec!["d"]]);
    assert!(entries[0].1["c"].len() < long.len() / 4);
}

/// On a Redis Cluster every key of a channel is in one slot, channels spread over the
/// masters, and publications travel by sharded pub/sub (the channel shows in `PUBSUB
/// SHARDCHANNELS` of its master, never in `PUBSUB CHANNELS`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_keys_share_a_slot_and_pubsub_is_sharded() {
    use wshub_testkit::redis::cli;
    let cluster = RedisCluster::start().await;
    let e = cluster_engine(&cluster, "t13");
    let r = listen(&e);
    e.set_node_uid("n1");
    let opts = PublishOptions {
        history_size: 10,
        history_ttl: Duration::from_secs(60),
        idempotency_key: Some("k".into()),
        idempotent_result_ttl: Duration::from_secs(60),
        ..Default::default()
    };
    let channels = ["a", "b{x}", "c}", "room:42", "d", "e"];
    for ch in channels {
        e.subscribe(ch).await.unwrap();
        e.publish(ch, publication("one"), &opts).await.unwrap();
        e.add_presence(ch, "c1", info("c1", "u")).await.unwrap();
    }
    let want: Vec<String> = channels.iter().map(|c| format!("{c} #1 one")).collect();
    r.wait_for_all(&want).await;
    let mut masters_used = HashSet::new();
    for ch in channels {
        let shard = e.shards[0].key("stream", ch);
        let mut slots = HashSet::new();
        for kind in [
            "stream",
            "meta",
            "presence",
            "presence.exp",
            "presence.user",
            "presence.users",
            "client",
        ] {
            let key = e.shards[0].key(kind, ch);
            slots.insert(cli(cluster.nodes[0].port, &["CLUSTER", "KEYSLOT", &key]).trim().to_string());
        }
        assert_eq!(slots.len(), 1, "{ch}: {slots:?}");
        // The master holding it has the stream, and lists the channel as a shard channel.
        let owner = cluster
            .nodes
            .iter()
            .find(|n| cli(n.port, &["EXISTS", &shard]).trim() == "1")
            .unwrap_or_else(|| panic!("no master holds {shard}"));
        masters_used.insert(owner.port);
        let client = e.shards[0].key("client", ch);
        assert!(
            cli(owner.port, &["PUBSUB", "SHARDCHANNELS"]).lines().any(|l| l == client),
            "{client}"
        );
        for n in &cluster.nodes {
            assert!(
                !cli(n.port, &["PUBSUB", "CHANNELS"]).contains(".client."),
                "a plain pub/sub channel"
            );
        }
    }
    assert!(masters_used.len() >= 2, "channels on one master only: {masters_used:?}");
}

/// On a Redis Cluster the canary pings through every master: one master that stops
/// answering (`CLIENT PAUSE ... ALL`) fails the check naming it; once it answers again, the
/// check passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_canary_names_a_master_that_stops() {
    use wshub_testkit::redis::cli;
    let cluster = RedisCluster::start().await;
    let e = RedisEngine::new(RedisConfig {
        cluster: vec![cluster.seeds()],
        prefix: "t14".into(),
        canary_interval: Duration::from_millis(300),
        ..Default::default()
    })
    .unwrap();
    listen(&e);
    e.subscribe("c").await.unwrap();
    let deadline = Instant::now() + LIMIT;
    // Up: every master's ping came back at least once.
    while e.health().down_reason().is_some() || e.check().await.is_err() {
        assert!(Instant::now() < deadline, "never up: {:?}", e.health().down_reason());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let paused = &cluster.nodes[1];
    assert_eq!(cli(paused.port, &["CLIENT", "PAUSE", "4000", "ALL"]).trim(), "OK");
    let err = loop {
        if let Some(why) = e.health().down_reason() {
            break why;
        }
        assert!(Instant::now() < deadline, "the pause went unnoticed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(err.contains(&format!("127.0.0.1:{}", paused.port)), "{err}");
    let deadline = Instant::now() + LIMIT;
    while let Err(err) = e.check().await {
        assert!(Instant::now() < deadline, "still down after the pause: {err}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// On a Redis Cluster too, a dead node's presence entries (in several slots) are taken out
/// once, by whichever survivor asks first, with the counts kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_dead_nodes_presence_is_reaped_once() {
    let cluster = RedisCluster::start().await;
    let (a, dead) = (cluster_engine(&cluster, "t15"), cluster_engine(&cluster, "t15"));
    reaps_once(&a, &dead, &["p", "q", "r", "s", "t"]).await;
    assert_eq!(a.presence_stats("p").await.unwrap(), (1, 1));
}

mod addresses;
mod maps;

/// Two nodes on one Redis, many sockets at once: the presence member limit is never
/// passed, exactly one of a user's sockets is its first and exactly one its last (the Pusher
/// dialect's `member_added`/`member_removed` and `presence-` limit rest on these).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_joins_and_leaves_are_judged_in_one_step_across_nodes() {
    let server = RedisServer::start().await;
    let (a, _) = node(&server, "pj").await;
    let (b, _) = node(&server, "pj").await;
    let info = |c: &str, u: &str| ClientInfo {
        client: c.into(),
        user: u.into(),
        ..Default::default()
    };
    // Twelve users at once for a channel of at most three.
    let joins = (0..12).map(|i| {
        let e = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (c, u) = (format!("c{i}"), format!("u{i}"));
        async move { e.join_presence("limited", &c, info(&c, &u), 3).await.unwrap() }
    });
    let joined = futures_util::future::join_all(joins).await;
    assert_eq!(joined.iter().filter(|j| **j == Joined::First).count(), 3, "{joined:?}");
    assert_eq!(joined.iter().filter(|j| **j == Joined::Full).count(), 9, "{joined:?}");
    assert_eq!(a.presence_stats("limited").await.unwrap(), (3, 3));
    let inside = a.presence("limited").await.unwrap();
    let member = inside.values().next().unwrap().user.clone();
    assert_eq!(
        b.join_presence("limited", "another", info("another", &member), 3).await.unwrap(),
        Joined::Another,
        "a present user's next socket is no new member"
    );
    assert_eq!(
        b.join_presence("limited", "another", info("another", &member), 3).await.unwrap(),
        Joined::Again
    );

    // Eight sockets of one user at once: one first; leaving at once: one last.
    let joins = (0..8).map(|i| {
        let e = if i % 2 == 0 { a.clone() } else { b.clone() };
        let c = format!("s{i}");
        async move { e.join_presence("room", &c, info(&c, "alice"), 0).await.unwrap() }
    });
    let joined = futures_util::future::join_all(joins).await;
    assert_eq!(joined.iter().filter(|j| **j == Joined::First).count(), 1, "{joined:?}");
    assert_eq!(joined.iter().filter(|j| **j == Joined::Another).count(), 7, "{joined:?}");
    let leaves = (0..8).map(|i| {
        let e = if i % 2 == 0 { b.clone() } else { a.clone() };
        let c = format!("s{i}");
        async move { e.leave_presence("room", &c).await.unwrap() }
    });
    let left = futures_util::future::join_all(leaves).await;
    assert_eq!(left.iter().filter(|l| **l).count(), 1, "{left:?}");
    assert!(
        !a.leave_presence("room", "s0").await.unwrap(),
        "gone already: not a last socket again"
    );
    assert_eq!(a.presence_stats("room").await.unwrap(), (0, 0));
}
