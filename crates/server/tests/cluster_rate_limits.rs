//! Rate limits in `cluster` scope: two in-process nodes on one real `redis-server` draw from
//! one budget per user (commands), per IP (new connections) and per API key; with Redis gone
//! they fail open, counted in `/metrics`.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use wshub_core::token::make_hs256;
use wshub_testkit::redis::RedisServer;
use wshub_websocket::{Event, MessageKind};

const SECRET: &str = "cluster-rate-secret";
const KEY: &str = "cluster-rate-key";

/// A node on `redis` with `extra` merged over the base configuration.
async fn node(redis: &RedisServer, prefix: &str, extra: Value) -> TestServer {
    let base = json!({
        "http_api": {"key": KEY},
        "client": {"token": {"hmac_secret_key": SECRET}},
        "engine": {"type": "redis", "redis": {"address": redis.url(), "prefix": prefix}},
    });
    TestServer::node(&node_config(base, extra)).await
}

/// Two nodes sharing a Redis of their own, both with `extra`.
async fn two_nodes(extra: Value) -> (RedisServer, TestServer, TestServer) {
    let redis = RedisServer::start().await;
    let p = prefix();
    let (a, b) = (node(&redis, &p, extra.clone()).await, node(&redis, &p, extra).await);
    (redis, a, b)
}

fn prefix() -> String {
    format!("rl{}", rand::random::<u32>())
}

/// A connected JSON protocol client that answers the server's pings.
struct User(Client);

impl User {
    async fn connect(server: &TestServer, user: &str) -> Self {
        let mut c = User(Client::connect(server.addr, "/connection/websocket", &[], None).await);
        let token = make_hs256(SECRET, &json!({"sub": user})).unwrap();
        c.0.send_connect(&token).await;
        let r = c.next().await;
        assert!(r["connect"]["client"].is_string(), "{r}");
        c
    }

    async fn next(&mut self) -> Value {
        loop {
            match self.0.next_event().await {
                Event::Message { data, .. } if &data[..] == b"{}" => self.0.send(MessageKind::Text, b"{}").await,
                Event::Message { data, .. } => return serde_json::from_slice(&data).unwrap(),
                other => panic!("{other:?}"),
            }
        }
    }

    /// Sends a `ping` command; the error code of its reply (`None`: served).
    async fn command(&mut self, id: u32) -> Option<u64> {
        self.0
            .send(MessageKind::Text, format!(r#"{{"id":{id},"ping":{{}}}}"#).as_bytes())
            .await;
        let r = self.next().await;
        assert_eq!(r["id"], id, "{r}");
        r["error"]["code"].as_u64()
    }
}

async fn api(server: &TestServer, method: &str, body: &str) -> u16 {
    let req = format!(
        "POST /api/{method} HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    raw_http(server.addr, req.as_bytes()).await.0
}

/// One user with a connection on each node exceeds the per-user rate together: error 111 on
/// whichever node serves the commands over it; another user is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_rate_is_per_user_across_nodes() {
    // 4 per second, burst 4: the sixteen commands below take well under the 250 ms of a
    // refill token, and one refill at most is allowed for. (Per connection, each would have
    // 3 left after its connect: 6 served.)
    let (_redis, a, b) = two_nodes(json!({"client": {"command_rate_limit": 4, "command_rate_limit_scope": "cluster"}})).await;
    let (mut on_a, mut on_b) = (User::connect(&a, "u").await, User::connect(&b, "u").await);
    let (mut codes_a, mut codes_b) = (Vec::new(), Vec::new());
    for i in 2..10 {
        codes_a.push(on_a.command(i).await);
        codes_b.push(on_b.command(i).await);
    }
    let served = codes_a.iter().chain(&codes_b).filter(|c| c.is_none()).count();
    assert!((4..=5).contains(&served), "one budget for both: {codes_a:?} {codes_b:?}");
    assert!(codes_a.iter().chain(&codes_b).all(|c| c.is_none() || *c == Some(111)));
    assert!(codes_a.contains(&Some(111)), "node A refuses: {codes_a:?}");
    assert!(codes_b.contains(&Some(111)), "node B refuses: {codes_b:?}");
    let mut other = User::connect(&b, "v").await;
    assert_eq!(other.command(2).await, None, "another user has a budget of their own");
}

/// The API rate per key is one budget: once node A spent it, node B answers 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_rate_is_per_key_across_nodes() {
    // One call per second.
    let (_redis, a, b) = two_nodes(json!({"http_api": {"rate_limit": 1, "rate_limit_scope": "cluster"}})).await;
    assert_eq!(api(&a, "info", "{}").await, 200);
    assert_eq!(api(&b, "info", "{}").await, 429, "node B sees node A's call");
    assert_eq!(api(&a, "info", "{}").await, 429);
}

/// New connections per IP are one budget: once node A admitted it, node B answers 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_rate_per_ip_is_shared_across_nodes() {
    let (_redis, a, b) =
        two_nodes(json!({"client": {"connection_rate_limit_per_ip": 1, "connection_rate_limit_per_ip_scope": "cluster"}})).await;
    let (status, _, _) = raw_http(a.addr, &upgrade_request("x", "")).await;
    assert_eq!(status, 101);
    let (status, _, body) = raw_http(b.addr, &upgrade_request("x", "")).await;
    assert_eq!((status, body.trim()), (429, "connection_rate_limit_per_ip"));
}

/// The value of `wshub_rate_limit_fail_open_total{kind="api"}` in `/metrics` (0: absent).
async fn fail_opens(server: &TestServer) -> u64 {
    let (status, _, body) = raw_http(server.addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status, 200);
    body.lines()
        .find(|l| l.starts_with("wshub_rate_limit_fail_open_total{kind=\"api\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// Redis stopped: API calls over the rate are admitted, not refused, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_gone_fails_open_and_counts() {
    let mut redis = RedisServer::start().await;
    let extra = json!({"http_api": {"rate_limit": 1, "rate_limit_scope": "cluster"}});
    let a = node(&redis, &prefix(), extra).await;
    assert_eq!(api(&a, "info", "{}").await, 200);
    assert_eq!(api(&a, "info", "{}").await, 429, "limited while Redis answers");
    redis.stop();
    let before = fail_opens(&a).await;
    for _ in 0..5 {
        assert_eq!(api(&a, "info", "{}").await, 200, "admitted while Redis is away");
    }
    let after = fail_opens(&a).await;
    assert!(after >= before + 5, "fail-opens counted: {before} -> {after}");
}
