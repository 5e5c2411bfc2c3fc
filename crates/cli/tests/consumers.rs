//! Async consumers against the real servers they read: a PostgreSQL cluster made by `initdb`
//! (the outbox table as Centrifugo defines it, woken by `NOTIFY` only), a `redis-server`
//! stream and a JetStream stream of `nats-server`. Each test numbers its publications, kills the node with SIGKILL while it is
//! applying them, starts it again, and counts every number at a subscriber (which recovers
//! what it missed meanwhile from history on Redis): nothing is lost. Commands that fail
//! permanently (bad parameters, an unknown method) are skipped without stopping the others.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{serial, wait_until, Node, Numbers, LIMIT};
use serde_json::{json, Value};
use wshub_client::{Client, ClientConfig};
use wshub_testkit::postgres::Postgres;
use wshub_testkit::redis::RedisServer;

const SECRET: &str = "consumers-test";
const CHANNEL: &str = "room:outbox";

fn config(redis: &RedisServer, consumer: Value) -> Value {
    json!({
        "http_api": {"key": common::API_KEY},
        // The subscriber misses up to every command while the node restarts, and the
        // restarted node applies them faster than the subscriber reconnects: the default
        // recovery limit (300) would answer `recovered: false` (the client is told, but the
        // test counts publications).
        "client": {"token": {"hmac_secret_key": SECRET}, "recovery_max_publication_limit": 100_000},
        "engine": {"type": "redis", "redis": {"address": redis.url(), "prefix": format!("t{}", common::unique())}},
        "channel": {"namespaces": [{"name": "room", "allow_subscribe_for_client": true,
            "history_size": 100000, "history_ttl": "300s", "force_recovery": true}]},
        "prometheus": {"enabled": true},
        "consumers": [consumer]
    })
}

/// A subscriber of [`CHANNEL`] on `port` that recovers across reconnections, once
/// subscribed: the numbers it received.
async fn subscriber(port: u16) -> (Client, Numbers) {
    let config = ClientConfig {
        token: wshub_testkit::token(SECRET, &json!({"sub": "reader"})),
        min_reconnect_delay: Duration::from_millis(100),
        max_reconnect_delay: Duration::from_millis(500),
        ..Default::default()
    };
    common::numbered_subscriber(port, config, &[CHANNEL], true).await
}

fn publish(n: u64) -> String {
    json!({"channel": CHANNEL, "data": {"n": n}}).to_string()
}

/// Kills `node` once the subscriber has `some` numbers, checks with `left` that work
/// remained, starts it again and waits for all of `1..=total`.
async fn kill_mid_batch_and_count(
    node: &mut Node,
    seen: &Numbers,
    some: usize,
    total: u64,
    left: impl Fn() -> u64,
    source: impl Fn() -> String,
) {
    wait_until("the first publications", LIMIT, || seen.lock().unwrap().len() >= some).await;
    node.signal("-KILL").await;
    let remaining = left();
    assert!(remaining > 0, "the node was killed after the last command: the test shows nothing");
    node.restart().await;
    let want: BTreeSet<(String, u64)> = (1..=total).map(|n| (CHANNEL.to_string(), n)).collect();
    common::wait_for_set(seen, &want, LIMIT * 2, |got| {
        format!(
            "after the restart ({remaining} commands were left): {} missing, from {:?}; the source: {}; log: {}",
            want.difference(got).count(),
            want.difference(got).take(20).collect::<Vec<_>>(),
            source(),
            node.log()
        )
    })
    .await;
}

async fn metric(port: u16, name: &str) -> String {
    let (_, body) = common::http(port, "GET", "/metrics", "", "").await.unwrap();
    body.lines().filter(|l| l.starts_with(name)).collect::<Vec<_>>().join("\n")
}

#[test]
fn postgresql_outbox_survives_a_kill_mid_batch() {
    serial(async {
        const N: u64 = 1000;
        let pg = Postgres::start().await;
        pg.psql(
            "CREATE TABLE outbox (id BIGSERIAL PRIMARY KEY, method TEXT NOT NULL, payload BYTEA NOT NULL, \
             partition INTEGER NOT NULL, created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL)",
        );
        let redis = RedisServer::start().await;
        let dir = common::temp_dir("consumer-pg");
        // Polled once an hour: only NOTIFY wakes the partitions.
        let cfg = config(
            &redis,
            json!({"name": "outbox", "enabled": true, "type": "postgresql", "postgresql": {
                "dsn": pg.dsn(), "outbox_table_name": "outbox", "num_partitions": 2,
                "partition_select_limit": 1, "partition_poll_interval": "1h",
                "partition_notification_channel": "outbox_events"}}),
        );
        let mut node = Node::start(&dir, &cfg, common::free_port()).await;
        let (_client, seen) = subscriber(node.port).await;

        // One transaction, as a backend writes its outbox: two permanent failures among the
        // numbered publications, spread over both partitions.
        let mut sql = String::from("BEGIN;");
        sql.push_str("INSERT INTO outbox (method, payload, partition) VALUES ('publish', '{\"channel\": 5}'::bytea, 0), ('frobnicate', '{}'::bytea, 1);");
        sql.push_str(&format!(
            "INSERT INTO outbox (method, payload, partition) SELECT 'publish', \
             convert_to(json_build_object('channel', '{CHANNEL}', 'data', json_build_object('n', n))::text, 'UTF8'), n % 2 \
             FROM generate_series(1, {N}) AS n ORDER BY n;"
        ));
        sql.push_str("NOTIFY outbox_events, '0'; NOTIFY outbox_events, '1'; COMMIT;");
        pg.psql(&sql);

        let rows = || pg.psql("SELECT count(*) FROM outbox");
        kill_mid_batch_and_count(&mut node, &seen, 20, N, || rows().parse().unwrap(), || format!("{} rows", rows())).await;
        // Every row applied or skipped is deleted.
        let deadline = std::time::Instant::now() + LIMIT;
        while pg.psql("SELECT count(*) FROM outbox") != "0" {
            assert!(std::time::Instant::now() < deadline, "rows left in the outbox");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let errors = metric(node.port, "centrifugo_consumers_errors_total").await;
        assert!(errors.contains("consumer_name=\"outbox\""), "{errors}");
        let processed = metric(node.port, "centrifugo_consumers_messages_processed_total").await;
        assert!(processed.contains("consumer_name=\"outbox\""), "{processed}");
    });
}

#[test]
fn redis_stream_entries_of_a_killed_node_are_reclaimed() {
    serial(async {
        const N: u64 = 500;
        let redis = RedisServer::start().await;
        let dir = common::temp_dir("consumer-redis");
        let stream = format!("s{}", common::unique());
        let cfg = config(
            &redis,
            json!({"name": "stream", "enabled": true, "type": "redis_stream", "redis_stream": {
                "address": [redis.url()], "streams": [stream], "consumer_group": "wshub",
                "visibility_timeout": "1s"}}),
        );
        let mut node = Node::start(&dir, &cfg, common::free_port()).await;
        // The group exists once the consumer has run: entries added before it are not read
        // (it starts at `$`, as Centrifugo's).
        let deadline = std::time::Instant::now() + LIMIT;
        while !wshub_testkit::redis::cli(redis.port, &["XINFO", "GROUPS", &stream]).contains("wshub") {
            assert!(std::time::Instant::now() < deadline, "no consumer group: {}", node.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (_client, seen) = subscriber(node.port).await;
        // All at once (one pipeline), a permanent failure first.
        let mut c = redis::Client::open(redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let mut pipe = redis::pipe();
        let payloads = std::iter::once("{\"channel\": 5}".to_string()).chain((1..=N).map(publish));
        for payload in payloads {
            pipe.cmd("XADD")
                .arg(&stream)
                .arg("*")
                .arg("method")
                .arg("publish")
                .arg("payload")
                .arg(payload);
        }
        let _: Vec<String> = pipe.query_async(&mut c).await.unwrap();
        // Work remained when the node was killed: numbers not received yet.
        let source = || wshub_testkit::redis::cli(redis.port, &["XPENDING", &stream, "wshub"]);
        kill_mid_batch_and_count(&mut node, &seen, 20, N, || N - seen.lock().unwrap().len() as u64, source).await;
        let deadline = std::time::Instant::now() + LIMIT;
        loop {
            let pending = source();
            if pending.lines().next().map(str::trim) == Some("0") {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "entries never acknowledged: {pending}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

#[test]
fn nats_jetstream_messages_of_a_killed_node_are_redelivered() {
    serial(async {
        const N: u64 = 300;
        let nats = wshub_testkit::nats::NatsServer::start_jetstream().await;
        let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        common::jetstream_stream(&js, "CMDS", "cmds.>").await;
        let redis = RedisServer::start().await;
        let dir = common::temp_dir("consumer-js");
        let cfg = config(
            &redis,
            json!({"name": "js", "enabled": true, "type": "nats_jetstream", "nats_jetstream": {
                "url": nats.url(), "stream_name": "CMDS", "durable_consumer_name": "wshub",
                "subjects": ["cmds.>"], "max_ack_pending": 10}}),
        );
        let mut node = Node::start(&dir, &cfg, common::free_port()).await;
        // The durable consumer exists once the node has made it (`deliver_policy` new).
        common::wait_for_durable(&js, "CMDS", &node).await;
        let (_client, seen) = subscriber(node.port).await;
        let send = |method: &str, body: String| {
            let mut h = async_nats::HeaderMap::new();
            h.insert("centrifugo-method", method);
            js.publish_with_headers("cmds.a", h, body.into())
        };
        send("publish", "{\"channel\": 5}".into()).await.unwrap().await.unwrap();
        for n in 1..=N {
            send("publish", publish(n)).await.unwrap().await.unwrap();
        }
        let left = || N - seen.lock().unwrap().len() as u64;
        kill_mid_batch_and_count(&mut node, &seen, 20, N, left, String::new).await;
        // Every message acknowledged in the end.
        let stream = js.get_stream("CMDS").await.unwrap();
        let deadline = std::time::Instant::now() + LIMIT;
        loop {
            let info = stream.consumer_info("wshub").await.unwrap();
            if info.num_ack_pending == 0 && info.num_pending == 0 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never acknowledged: {info:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}
