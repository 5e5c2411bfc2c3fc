//! Redis engine failure modes with real processes: `wshub serve` nodes, `redis-server`
//! (and, for Sentinel, `redis-sentinel`) on free loopback ports, and Rust SDK clients.
//!
//! - The pub/sub canary: a node's pub/sub connection frozen (through
//!   [`PubSubProxy`], which holds what Redis sends on pub/sub connections while command
//!   connections pass) while a backend publishes through it: its `/ready` turns 503 within
//!   the canary period, its positioned subscribers are closed with 3010, the metric and
//!   the log name the shard, its publishes are still answered, and once pub/sub is back it
//!   is ready again and its subscribers have every acknowledged publication or were told
//!   (`recovered: false`).
//!
//! - Sentinel: a master, a replica and three `redis-sentinel`; two nodes find the master
//!   through the sentinels; the master is killed with SIGKILL while a backend publishes;
//!   the nodes follow the promoted replica (commands and pub/sub); every subscriber ends
//!   with every acknowledged publication, or was told (`recovered: false`): counted.
//!
//! - Sharding: three independent `redis-server` as shards under two nodes; channels on
//!   every shard; node control (`info`) and presence work; one server stopped: `/ready`
//!   503 naming it in the log, its channel's publishes fail, the others' go on and are
//!   delivered.
//!
//! - Redis Cluster: three masters made by `redis-cli --cluster create`, two nodes given
//!   `cluster_address`: node control, publish, subscribe, history, presence and recovery
//!   across the nodes, over sharded pub/sub.
//!
//! Every publication is numbered; each client's count of acknowledged publications it
//! lacks must be zero. The tests take turns (one at a time).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::watch::{lost, quick_reconnects, Watched};
use common::{api, http, serial, wait_until, Node, LIMIT};
use serde_json::json;
use wshub_client::{Client, ClientEvent};
use wshub_testkit::publisher::Publisher;
use wshub_testkit::redis::{cli, PubSubProxy, RedisCluster, RedisServer, SentinelGroup};
use wshub_testkit::TempDir;

const SECRET: &str = "redis-ha-test";
const CHANNEL: &str = "chat:ha";
/// Publications per second.
const RATE: u64 = 100;

/// A node configuration on the Redis engine with `redis` as its `engine.redis` section.
fn config(redis: serde_json::Value) -> serde_json::Value {
    json!({
        "http_api": {"key": common::API_KEY},
        "client": {"token": {"hmac_secret_key": SECRET}},
        "engine": {"type": "redis", "redis": redis},
        "shutdown": {"timeout": "3s", "drain_window": "1s"},
        "channel": {"namespaces": [{
            "name": "chat", "history_size": 100000, "history_ttl": "300s", "force_recovery": true,
            "allow_subscribe_for_client": true
        }]}
    })
}

/// A client on `url`, subscribed (recoverable) to [`CHANNEL`]; returns once subscribed.
async fn watch(url: &str, user: &str) -> Watched {
    let token = wshub_core::token::make_hs256(SECRET, &json!({"sub": user})).unwrap();
    common::watch::watch(url, quick_reconnects(token, Duration::from_millis(500)), CHANNEL).await
}

/// Waits until node control has each of the two nodes see both.
async fn until_they_see_each_other(a: &Node, b: &Node) {
    for n in [a, b] {
        let deadline = Instant::now() + LIMIT;
        loop {
            let (_, info) = api(n.port, "info", &json!({})).await.unwrap();
            if info["result"]["nodes"].as_array().map(Vec::len) == Some(2) {
                break;
            }
            assert!(Instant::now() < deadline, "nodes never see each other: {info}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn ready_status(port: u16) -> u16 {
    http(port, "GET", "/ready", "", "").await.map_or(0, |(s, _)| s)
}

/// Polls `/ready` on `port` until it answers `want`; returns how long that took.
async fn until_ready_is(port: u16, want: u16, log: impl Fn() -> String) -> Duration {
    let started = Instant::now();
    while ready_status(port).await != want {
        assert!(started.elapsed() < LIMIT, "/ready on {port} never {want}: {}", log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

#[test]
fn canary_catches_a_frozen_pubsub() {
    serial(async {
        let dir = TempDir::new("redis-canary");
        let redis = RedisServer::start().await;
        let proxy = PubSubProxy::start(redis.port).await;
        let prefix = format!("t{}", common::unique());
        // Node a reaches Redis through the proxy; node b directly.
        let a = Node::start(
            &dir,
            &config(json!({"address": proxy.url(), "prefix": prefix, "canary_interval": "500ms"})),
            common::free_port(),
        )
        .await;
        let b = Node::start(
            &dir,
            &config(json!({"address": redis.url(), "prefix": prefix, "canary_interval": "500ms"})),
            common::free_port(),
        )
        .await;
        let on_a = watch(&a.url(), "ua").await;
        let on_b = watch(&b.url(), "ub").await;
        let publisher = Publisher::start(vec![a.port, b.port], common::API_KEY, CHANNEL, RATE);
        publisher.run_for(RATE / 2).await;

        proxy.freeze();
        let took = until_ready_is(a.port, 503, || a.log()).await;
        println!("node a not ready {took:?} after the freeze");
        // Two canary periods, plus the readiness check's own period (2 s).
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert_eq!(ready_status(b.port).await, 200, "only the frozen node is affected");
        // Told: its positioned subscriber is closed with 3010.
        wait_until("the subscriber on a to be closed with 3010", LIMIT, || {
            on_a.seen.lock().unwrap().disconnects.contains(&3010)
        })
        .await;
        // Publishes through a are still answered while its pub/sub is frozen.
        let before = publisher.acked();
        publisher.run_for(RATE).await;
        assert!(publisher.acked() >= before + RATE);
        let shard = format!("127.0.0.1:{}", proxy.port);
        let (_, metrics) = http(a.port, "GET", "/metrics", "", "").await.unwrap();
        let gauge = format!("wshub_redis_pubsub_up{{shard=\"{shard}\"}} 0");
        assert!(metrics.contains(&gauge), "no {gauge} in:\n{metrics}");
        assert!(metrics.contains("wshub_redis_pubsub_canary_missed_total"), "{metrics}");
        let log = a.log();
        assert!(log.contains("redis pub/sub down") && log.contains(&shard), "{log}");

        proxy.thaw();
        let took = until_ready_is(a.port, 200, || a.log()).await;
        println!("node a ready again {took:?} after the thaw");
        publisher.run_for(RATE / 2).await;
        let (acked, failed) = publisher.stop().await;
        assert!(failed.is_empty(), "publishes failed: {failed:?}");
        let (lost, duplicated) = lost(&[&on_a, &on_b], &acked).await;
        {
            let a_seen = on_a.seen.lock().unwrap();
            println!(
                "{} acknowledged; lost per client {lost:?}; duplicated {duplicated}; a's subscriptions {:?}, disconnects {:?}",
                acked.len(),
                a_seen.subscribed,
                a_seen.disconnects
            );
        }
        // a's subscriber came back through recovery: with every publication (`recovered:
        // true`), or told that some are missing (`recovered: false`: more were published
        // meanwhile than `client.recovery_max_publication_limit`, 300, lets it recover, which
        // happens when the readiness check and the SDK's backoff take their longest).
        // Never lacking one silently. b's never left.
        let told = on_a.seen.lock().unwrap().subscribed.iter().skip(1).any(|&(r, w)| w && !r);
        assert!(lost[0] == 0 || told, "a's subscriber lacks {} without being told", lost[0]);
        assert!(
            on_a.seen.lock().unwrap().subscribed.iter().skip(1).any(|&(_, w)| w),
            "a's subscriber recovered"
        );
        assert_eq!(lost[1], 0);
        assert_eq!(duplicated, 0);
        assert!(on_b.seen.lock().unwrap().disconnects.is_empty());
    });
}

#[test]
fn sentinel_failover_loses_nothing_silently() {
    serial(async {
        const NAME: &str = "wshubmaster";
        let dir = TempDir::new("redis-sentinel");
        // A failover needs the sentinels to know the replica and each other (quorum 2).
        let mut group = SentinelGroup::start(NAME, 3, true).await;
        let replica_port = group.replica.as_ref().map(|r| r.port);
        let cfg = config(json!({
            // One shard: its sentinels in one item, comma-separated (Centrifugo's form).
            "sentinel_address": [group.address_item()],
            "sentinel_master_name": NAME,
            "prefix": format!("t{}", common::unique()),
            "canary_interval": "500ms"
        }));
        let a = Node::start(&dir, &cfg, common::free_port()).await;
        let b = Node::start(&dir, &cfg, common::free_port()).await;
        let mut clients = Vec::new();
        for (i, node) in [&a, &b, &a, &b].iter().enumerate() {
            clients.push(watch(&node.url(), &format!("u{i}")).await);
        }
        let publisher = Publisher::start(vec![a.port, b.port], common::API_KEY, CHANNEL, RATE);
        publisher.run_for(RATE).await;

        let acked_before = publisher.acked();
        group.master.kill();
        let killed = Instant::now();
        wait_until("a sentinel to promote the replica", LIMIT, || {
            group.sentinels.iter().any(|s| s.master_port(NAME) == replica_port)
        })
        .await;
        println!("replica promoted {:?} after the kill", killed.elapsed());
        // Both nodes publish through the new master again.
        publisher.run_for(RATE).await;
        println!("publishing again {:?} after the kill", killed.elapsed());
        for n in [&a, &b] {
            until_ready_is(n.port, 200, || n.log()).await;
        }
        publisher.run_for(RATE / 2).await;
        let (acked, failed) = publisher.stop().await;
        let (_, h) = api(a.port, "history", &json!({"channel": CHANNEL, "limit": 0})).await.unwrap();
        println!("history top {h}");
        println!(
            "{} acknowledged ({} before the kill), {} calls failed during the failover",
            acked.len(),
            acked_before,
            failed.len()
        );
        let (lost, duplicated) = lost(&clients.iter().collect::<Vec<_>>(), &acked).await;
        let mut silent = 0;
        for (i, (c, lacks)) in clients.iter().zip(&lost).enumerate() {
            let seen = c.seen.lock().unwrap();
            // Told: a resubscription answered `recovered: false` (the SDK's signal that
            // publications may be missing).
            let told = seen.subscribed.iter().skip(1).any(|&(r, w)| w && !r);
            println!(
                "client {i}: lacks {lacks}, disconnects {:?}, subscriptions {:?}, last (n, offset) {:?}",
                seen.disconnects,
                seen.subscribed,
                seen.publications.iter().rev().take(3).collect::<Vec<_>>()
            );
            if *lacks > 0 && !told {
                silent += 1;
            }
        }
        assert_eq!(silent, 0, "clients lacking acknowledged publications without being told: {lost:?}");
        assert_eq!(duplicated, 0);
        assert!(
            a.log().contains("redis pub/sub down") && b.log().contains("redis pub/sub down"),
            "the nodes noticed the failover"
        );
    });
}

#[test]
fn sharding_one_stopped_shard_affects_only_its_channels() {
    serial(async {
        let dir = TempDir::new("redis-shards");
        let mut servers = [RedisServer::start().await, RedisServer::start().await, RedisServer::start().await];
        let addresses: Vec<String> = servers.iter().map(|s| s.url()).collect();
        let mut cfg = config(json!({"address": addresses, "prefix": format!("t{}", common::unique()), "canary_interval": "500ms"}));
        cfg["channel"]["namespaces"][0]["presence"] = json!(true);
        let a = Node::start(&dir, &cfg, common::free_port()).await;
        let b = Node::start(&dir, &cfg, common::free_port()).await;
        // A channel on each shard, as every node computes it.
        let channels: Vec<String> = (0..3)
            .map(|shard| {
                (0..)
                    .map(|i| format!("chat:s{i}"))
                    .find(|c| wshub_redis::shard_index(c, 3) == shard)
                    .unwrap()
            })
            .collect();
        // Node control through the control shard: each node sees both.
        until_they_see_each_other(&a, &b).await;
        // A subscriber of each channel on node a; publications through node b.
        let mut subs = Vec::new();
        for (i, ch) in channels.iter().enumerate() {
            let token = wshub_core::token::make_hs256(SECRET, &json!({"sub": format!("s{i}")})).unwrap();
            let config = quick_reconnects(token, Duration::from_millis(500));
            let (client, mut events) = Client::start(&a.url(), config).unwrap();
            client.subscribe(ch, true);
            client.connect();
            let got = Arc::new(Mutex::new(Vec::<String>::new()));
            let g = got.clone();
            let task = tokio::spawn(async move {
                while let Some(e) = events.recv().await {
                    match e {
                        ClientEvent::Publication { data, .. } => g.lock().unwrap().push(String::from_utf8_lossy(&data).into_owned()),
                        ClientEvent::Subscribed { .. } => g.lock().unwrap().push("subscribed".into()),
                        _ => {}
                    }
                }
            });
            wait_until("a subscription", LIMIT, || got.lock().unwrap().contains(&"subscribed".to_string())).await;
            subs.push((client, got, task));
        }
        for (i, ch) in channels.iter().enumerate() {
            let (status, r) = api(b.port, "publish", &json!({"channel": ch, "data": {"n": 1}})).await.unwrap();
            assert_eq!((status, r["result"]["offset"].as_u64()), (200, Some(1)), "{r}");
            // Presence of each channel, read through the other node, from its shard.
            let (_, p) = api(b.port, "presence_stats", &json!({"channel": ch})).await.unwrap();
            assert_eq!(p["result"]["num_clients"], 1, "{p}");
            let got = &subs[i].1;
            wait_until("a delivery on every shard", LIMIT, || {
                got.lock().unwrap().contains(&r#"{"n":1}"#.to_string())
            })
            .await;
        }

        servers[1].stop();
        let stopped = format!("127.0.0.1:{}", servers[1].port);
        for n in [&a, &b] {
            until_ready_is(n.port, 503, || n.log()).await;
            let log = n.log();
            let line = log.lines().find(|l| l.contains("not ready")).unwrap_or_default();
            assert!(line.contains(&stopped), "the log names the stopped shard: {line}");
            for other in [0, 2] {
                assert!(!line.contains(&format!("127.0.0.1:{}", servers[other].port)), "{line}");
            }
        }
        let (_, r) = api(b.port, "publish", &json!({"channel": channels[1], "data": {"n": 2}}))
            .await
            .unwrap();
        assert!(r["error"]["code"].is_u64(), "a publish to the stopped shard fails: {r}");
        for i in [0, 2] {
            let (status, r) = api(b.port, "publish", &json!({"channel": channels[i], "data": {"n": 2}}))
                .await
                .unwrap();
            assert_eq!((status, r["result"]["offset"].as_u64()), (200, Some(2)), "{r}");
            let got = &subs[i].1;
            wait_until("deliveries on the other shards", LIMIT, || {
                got.lock().unwrap().contains(&r#"{"n":2}"#.to_string())
            })
            .await;
        }
        for (client, _, task) in subs {
            client.disconnect();
            task.abort();
        }
    });
}

#[test]
fn redis_cluster_under_two_nodes() {
    serial(async {
        let dir = TempDir::new("redis-cluster");
        let cluster = RedisCluster::start().await;
        // Centrifugo's form: one item per Cluster, its seeds `host:port` comma-separated.
        let mut cfg = config(json!({"cluster_address": [cluster.seeds()], "prefix": format!("t{}", common::unique())}));
        cfg["channel"]["namespaces"][0]["presence"] = json!(true);
        let a = Node::start(&dir, &cfg, common::free_port()).await;
        let b = Node::start(&dir, &cfg, common::free_port()).await;
        until_they_see_each_other(&a, &b).await;
        let on_a = watch(&a.url(), "ua").await;
        let on_b = watch(&b.url(), "ub").await;
        let (_, p) = api(b.port, "presence_stats", &json!({"channel": CHANNEL})).await.unwrap();
        assert_eq!(
            (p["result"]["num_clients"].as_u64(), p["result"]["num_users"].as_u64()),
            (Some(2), Some(2)),
            "{p}"
        );
        let publisher = Publisher::start(vec![a.port, b.port], common::API_KEY, CHANNEL, RATE);
        publisher.run_for(RATE / 2).await;
        // a's client goes away while publications go on, and recovers them on coming back.
        on_a.client.disconnect();
        publisher.run_for(RATE / 2).await;
        on_a.client.connect();
        wait_until("a's client to subscribe again", LIMIT, || {
            on_a.seen.lock().unwrap().subscribed.len() >= 2
        })
        .await;
        publisher.run_for(RATE / 2).await;
        let (acked, failed) = publisher.stop().await;
        assert!(failed.is_empty(), "{failed:?}");
        let (lost, duplicated) = lost(&[&on_a, &on_b], &acked).await;
        println!(
            "{} acknowledged; lost per client {lost:?}; a's subscriptions {:?}",
            acked.len(),
            on_a.seen.lock().unwrap().subscribed
        );
        assert_eq!(lost, [0, 0]);
        assert_eq!(duplicated, 0);
        assert_eq!(on_a.seen.lock().unwrap().subscribed[1], (true, true), "recovered");
        let (_, h) = api(a.port, "history", &json!({"channel": CHANNEL, "limit": 0})).await.unwrap();
        assert_eq!(h["result"]["offset"].as_u64(), Some(acked.len() as u64), "{h}");
        // Sharded pub/sub: the channel is a shard channel of one master, and no master has
        // plain pub/sub channels of wshub.
        let shard_channels: Vec<String> = cluster.nodes.iter().map(|n| cli(n.port, &["PUBSUB", "SHARDCHANNELS"])).collect();
        assert!(shard_channels.iter().any(|c| c.contains(CHANNEL)), "{shard_channels:?}");
        for n in &cluster.nodes {
            assert!(!cli(n.port, &["PUBSUB", "CHANNELS"]).contains(".client."));
        }
    });
}
