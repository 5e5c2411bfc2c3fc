//! Two nodes on one `redis-server` behave as one server for the API: `info` lists both,
//! `channels` finds a channel whose only subscriber is on the other node, and `disconnect`
//! / `unsubscribe` sent to one node act on the other's clients. A node that stops leaves
//! the other's `info` at once. No subscriber is answered before Redis confirms its channel.
//! `single_connection` holds across nodes.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use wshub_core::token::make_hs256;
use wshub_testkit::redis::RedisServer;
use wshub_websocket::{Event, MessageKind};

const SECRET: &str = "cluster-secret";
const KEY: &str = "cluster-key";

fn config(redis: &RedisServer) -> wshub_server::config::Config {
    config_with(redis, json!({}))
}

fn config_with(redis: &RedisServer, extra: Value) -> wshub_server::config::Config {
    node_config(
        json!({
            "http_api": {"key": KEY},
            "client": {"token": {"hmac_secret_key": SECRET}},
            "engine": {"type": "redis", "redis": {"address": redis.url()}},
            "channel": {
                "without_namespace": {"allow_subscribe_for_client": true},
                "namespaces": [{"name": "room", "presence": true, "join_leave": true, "force_push_join_leave": true,
                                "allow_subscribe_for_client": true, "allow_presence_for_client": true}]
            }
        }),
        extra,
    )
}

async fn node(redis: &RedisServer) -> TestServer {
    TestServer::node(&config(redis)).await
}

/// A node on a runtime of its own, so that it can die as a process would: its runtime
/// dropped, no session closing, no leave, its presence left in Redis.
struct Doomed {
    addr: std::net::SocketAddr,
    kill: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Doomed {
    fn start(redis: &RedisServer) -> Self {
        let cfg = config(redis);
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (kill, killed) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.spawn(async move {
                let (_node, sc) = wshub_server::app::build(&cfg).unwrap();
                let listener = wshub_server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                wshub_server::serve(listener, wshub_server::Shared::new(sc), std::future::pending()).await;
            });
            let _ = killed.recv();
            // Every task of the node stops where it is.
            rt.shutdown_background();
        });
        let addr = addr_rx.recv_timeout(LIMIT).unwrap();
        Doomed { addr, kill, thread }
    }

    fn kill(self) {
        self.kill.send(()).unwrap();
        self.thread.join().unwrap();
    }
}

async fn api(server: &TestServer, method: &str, body: Value) -> Value {
    api_at(server.addr, method, body).await
}

async fn api_at(addr: std::net::SocketAddr, method: &str, body: Value) -> Value {
    let body = body.to_string();
    let req = format!(
        "POST /api/{method} HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, _, body) = raw_http(addr, req.as_bytes()).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Polls `method` on `server` until `check` holds, within [`LIMIT`] plus the announcement
/// periods discovery needs.
async fn until(server: &TestServer, method: &str, body: Value, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + LIMIT + Duration::from_secs(10);
    loop {
        let v = api(server, method, body.clone()).await;
        if check(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{method}: never as expected, last {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A JSON client connected as `user` and subscribed to `channel`.
async fn subscriber(server: &TestServer, user: &str, channel: &str) -> Client {
    subscriber_at(server.addr, user, channel).await
}

/// A JSON client connected as `user`, its connect reply read.
async fn connected_at(addr: std::net::SocketAddr, user: &str) -> Client {
    let mut c = Client::connect(addr, "/connection/websocket", &[], None).await;
    let token = make_hs256(SECRET, &json!({"sub": user})).unwrap();
    c.send_connect(&token).await;
    let reply = next(&mut c).await.unwrap();
    assert!(reply["connect"].is_object(), "{reply}");
    c
}

async fn subscriber_at(addr: std::net::SocketAddr, user: &str, channel: &str) -> Client {
    let mut c = connected_at(addr, user).await;
    let reply = subscribe(&mut c, 2, channel).await;
    assert!(reply.get("error").is_none(), "{reply}");
    c
}

/// The next JSON message (answering pings), or the close code.
async fn next(c: &mut Client) -> Result<Value, u16> {
    loop {
        match c.next_event().await {
            Event::Message { data, .. } if &data[..] == b"{}" => c.send(MessageKind::Text, b"{}").await,
            Event::Message { data, .. } => return Ok(serde_json::from_slice(&data).unwrap()),
            Event::Closed { code, .. } => return Err(code.0),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_answer_as_one() {
    let redis = RedisServer::start().await;
    let a = node(&redis).await;
    let b = node(&redis).await;

    // Discovery: each node lists both, with its own figures.
    let info = until(&a, "info", json!({}), |v| v["result"]["nodes"].as_array().unwrap().len() == 2).await;
    let uids: Vec<&str> = info["result"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["uid"].as_str().unwrap())
        .collect();
    assert_ne!(uids[0], uids[1]);
    until(&b, "info", json!({}), |v| v["result"]["nodes"].as_array().unwrap().len() == 2).await;
    // Centrifugo's `centrifugo_node_num_nodes` counts the nodes the cluster knows (set when
    // /metrics is read, from the node read).
    let (status, _, metrics) = raw_http(a.addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status, 200);
    assert!(metrics.lines().any(|l| l == "centrifugo_node_num_nodes 2"), "{metrics}");

    // A channel whose only subscriber is on B, seen from A (and its client on B counted).
    let mut on_b = subscriber(&b, "alice", "only-on-b").await;
    let mut other = subscriber(&b, "bob", "news").await;
    let v = until(&a, "info", json!({}), |v| {
        v["result"]["nodes"].as_array().unwrap().iter().any(|n| n["num_clients"] == 2)
    })
    .await;
    assert_eq!(v["result"]["nodes"][0]["num_clients"], 0, "A's own figures first: {v}");
    let v = api(&a, "channels", json!({})).await;
    assert_eq!(v["result"]["channels"]["only-on-b"]["num_clients"], 1, "{v}");
    let v = api(&a, "channels", json!({"pattern": "only-*"})).await;
    assert_eq!(v["result"]["channels"].as_object().unwrap().len(), 1, "{v}");
    // Subscribers of one channel on both nodes are summed.
    let _on_a = subscriber(&a, "carol", "news").await;
    let v = api(&b, "channels", json!({"pattern": "news"})).await;
    assert_eq!(v["result"]["channels"]["news"]["num_clients"], 2, "{v}");

    // A user's connections on every node: alice's one client is on B, carol's on A.
    let v = api(&a, "connections", json!({"user": "alice"})).await;
    let conns = v["result"]["connections"].as_object().unwrap();
    assert_eq!(conns.len(), 1, "{v}");
    let (_, c) = conns.iter().next().unwrap();
    assert_eq!(
        (c["user"].as_str(), c["protocol"].as_str(), c["node"].as_str()),
        (Some("alice"), Some("json"), Some(uids[1])),
        "{v}"
    );
    let v = api(&b, "connections", json!({"user": "carol"})).await;
    assert_eq!(
        v["result"]["connections"].as_object().unwrap().values().next().unwrap()["node"],
        uids[0],
        "{v}"
    );
    let v = api(&a, "connections", json!({"user": "nobody"})).await;
    assert_eq!(v["result"]["connections"], json!({}), "{v}");
    assert_eq!(api(&a, "connections", json!({})).await["error"]["code"], 107, "user required");

    // unsubscribe and disconnect sent to A act on B's clients.
    api(&a, "unsubscribe", json!({"user": "bob", "channel": "news"})).await;
    let push = next(&mut other).await.unwrap();
    assert_eq!(push["push"]["unsubscribe"]["code"], 2000, "{push}");
    api(
        &a,
        "disconnect",
        json!({"user": "alice", "disconnect": {"code": 4001, "reason": "banned"}}),
    )
    .await;
    assert_eq!(next(&mut on_b).await, Err(4001));
    // Bob, not named, is still connected: a publication from A reaches him through Redis.
    api(&a, "subscribe", json!({"user": "bob", "channel": "news"})).await;
    let push = next(&mut other).await.unwrap();
    assert_eq!(push["push"]["channel"], "news", "server-side subscribe from A: {push}");
    let v = api(&a, "publish", json!({"channel": "news", "data": {"n": 1}})).await;
    assert!(v.get("result").is_some(), "{v}");
    let push = next(&mut other).await.unwrap();
    assert_eq!(push["push"]["pub"]["data"]["n"], 1, "{push}");
    // A backend's retry with the same idempotency key, to another node: answered, not
    // published again.
    let body = json!({"channel": "news", "data": {"n": 2}, "idempotency_key": "order-7"});
    let first = api(&a, "publish", body.clone()).await;
    let retry = api(&b, "publish", body).await;
    assert_eq!(first, retry, "the first result");
    api(&a, "publish", json!({"channel": "news", "data": {"n": 3}})).await;
    let push = next(&mut other).await.unwrap();
    assert_eq!(push["push"]["pub"]["data"]["n"], 2, "{push}");
    let push = next(&mut other).await.unwrap();
    assert_eq!(push["push"]["pub"]["data"]["n"], 3, "once, then the next: {push}");

    // A node that stops is dropped at once by the other (it says so as it leaves).
    drop(other);
    let cluster = b.shared.config.api.as_ref().unwrap().cluster.clone();
    cluster.leave().await;
    until(&a, "info", json!({}), |v| v["result"]["nodes"].as_array().unwrap().len() == 1).await;
    b.stop().await;
    a.stop().await;
}

/// A node that dies (no drain, no leave) is dropped by the others after three silent
/// announcement periods, and they push `leave` for its clients and take them out of
/// presence: nobody stays online forever after a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_clients_leave() {
    let redis = RedisServer::start().await;
    let a = node(&redis).await;
    let b = Doomed::start(&redis);
    until(&a, "info", json!({}), |v| v["result"]["nodes"].as_array().unwrap().len() == 2).await;
    let mut watcher = subscriber(&a, "watcher", "room:1").await;
    let _ghost = subscriber_at(b.addr, "ghost", "room:1").await;
    // Its own join first, then the ghost's.
    loop {
        let join = next(&mut watcher).await.unwrap();
        if join["push"]["join"]["info"]["user"] == "ghost" {
            break;
        }
        assert_eq!(join["push"]["join"]["info"]["user"], "watcher", "{join}");
    }
    let p = api(&a, "presence", json!({"channel": "room:1"})).await;
    assert_eq!(p["result"]["presence"].as_object().unwrap().len(), 2, "{p}");

    let killed_at = Instant::now();
    b.kill();
    // Within three announcement periods and a tick (about 12 s), not the presence TTL (60 s).
    let leave = match watcher.next_event_within(Duration::from_secs(30)).await {
        Event::Message { data, .. } => serde_json::from_slice::<Value>(&data).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(leave["push"]["leave"]["info"]["user"], "ghost", "{leave}");
    println!("leave of the dead node's client after {:?}", killed_at.elapsed());
    let p = api(&a, "presence", json!({"channel": "room:1"})).await;
    let users: Vec<&str> = p["result"]["presence"]
        .as_object()
        .unwrap()
        .values()
        .map(|i| i["user"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["watcher"], "{p}");
    let info = api(&a, "info", json!({})).await;
    assert_eq!(info["result"]["nodes"].as_array().unwrap().len(), 1, "{info}");
    a.stop().await;
}

async fn subscribe(c: &mut Client, id: u32, channel: &str) -> Value {
    c.send(
        MessageKind::Text,
        format!(r#"{{"id":{id},"subscribe":{{"channel":"{channel}"}}}}"#).as_bytes(),
    )
    .await;
    let reply = next(c).await.unwrap();
    assert_eq!(reply["id"], id, "{reply}");
    reply
}

/// Two clients of one node subscribe to a channel while its Redis subscription cannot be
/// confirmed (the pub/sub connection frozen): neither is told it is subscribed. Before, only
/// the channel's first subscriber on the node waited for Redis; the second was answered at
/// once, and if the first's subscription failed, its publications never came. Once pub/sub
/// delivers again, both subscribe and receive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_subscriber_is_answered_before_redis_confirms_the_channel() {
    use wshub_testkit::redis::PubSubProxy;
    let redis = RedisServer::start().await;
    let proxy = PubSubProxy::start(redis.port).await;
    let mut c = config(&redis);
    c.engine.redis.connection.address = proxy.url();
    c.engine.redis.canary_interval = Duration::from_millis(300);
    let server = TestServer::node(&c).await;
    let mut a = connected_at(server.addr, "a").await;
    let mut b = connected_at(server.addr, "b").await;
    proxy.freeze();
    let (ra, rb) = tokio::join!(subscribe(&mut a, 2, "news"), subscribe(&mut b, 2, "news"));
    for r in [&ra, &rb] {
        assert_eq!(r["error"]["code"], 100, "the subscription is not confirmed: {r}");
    }
    proxy.thaw();
    let deadline = Instant::now() + LIMIT;
    let mut id = 3;
    while subscribe(&mut a, id, "news").await.get("error").is_some() {
        assert!(Instant::now() < deadline, "pub/sub never came back");
        id += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(subscribe(&mut b, 3, "news").await.get("error").is_none());
    api(&server, "publish", json!({"channel": "news", "data": {"n": 1}})).await;
    for c in [&mut a, &mut b] {
        let push = next(c).await.unwrap();
        assert_eq!(push["push"]["pub"]["data"], json!({"n": 1}), "{push}");
    }
    server.stop().await;
}

/// `single_connection`: a user's connection on one node is closed (3504) when the user
/// connects on another; the new connection and other users' stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_connection_holds_across_nodes() {
    let redis = RedisServer::start().await;
    let c = config_with(
        &redis,
        json!({"client": {"subscribe_to_user_personal_channel": {"enabled": true, "single_connection": true}}}),
    );
    let a = TestServer::node(&c).await;
    let b = TestServer::node(&c).await;
    let mut first = connected_at(a.addr, "alice").await;
    let mut bob = connected_at(a.addr, "bob").await;
    let mut second = connected_at(b.addr, "alice").await;
    assert_eq!(next(&mut first).await.map(|v| v.to_string()), Err(3504));
    for (user, c) in [("alice", &mut second), ("bob", &mut bob)] {
        api(&b, "publish", json!({"channel": format!("#{user}"), "data": {"to": user}})).await;
        let push = next(c).await.unwrap();
        assert_eq!(push["push"]["pub"]["data"], json!({"to": user}), "{push}");
    }
    b.stop().await;
    a.stop().await;
}

/// `info` shows every node's `metrics` (aggregated over `node.info_metrics_aggregate_interval`)
/// and `process`, the other node's carried by its announcements through Redis; the metrics
/// are renewed each interval, as Centrifugo's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_carries_each_nodes_metrics_and_process() {
    let redis = RedisServer::start().await;
    let fast = json!({"node": {"info_metrics_aggregate_interval": "1s"}});
    let a = TestServer::node(&config_with(&redis, fast.clone())).await;
    let b = TestServer::node(&config_with(&redis, fast)).await;
    let info = until(&a, "info", json!({}), |v| {
        let nodes = v["result"]["nodes"].as_array().unwrap();
        nodes.len() == 2 && nodes.iter().all(|n| n["metrics"].is_object() && n["process"].is_object())
    })
    .await;
    for n in info["result"]["nodes"].as_array().unwrap() {
        assert_eq!(n["metrics"]["interval"], 1.0, "{n}");
        let items = n["metrics"]["items"].as_object().unwrap();
        assert!(items["centrifugo.node.num_clients"].is_f64(), "{n}");
        assert!(items.keys().all(|k| k.starts_with("centrifugo.")), "only Centrifugo's series: {n}");
        assert!(n["process"]["rss"].as_i64().unwrap() > 1 << 20, "{n}");
        assert!(n["process"]["cpu"].as_f64().unwrap() >= 0.0, "{n}");
    }
    // B's client shows in B's next aggregation, read from A.
    let _c = subscriber(&b, "alice", "news").await;
    let b_uid = info["result"]["nodes"][1]["uid"].clone();
    until(&a, "info", json!({}), |v| {
        v["result"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["uid"] == b_uid && n["metrics"]["items"]["centrifugo.node.num_clients"] == 1.0)
    })
    .await;
    a.stop().await;
    b.stop().await;
}
