//! Map subscriptions through real processes:
//! - across two wshub nodes sharing `map_broker.redis`, on one Redis and on a three-master
//!   Redis Cluster (sharded pub/sub): a client on node A loads the state written through
//!   node B's API (in pages), goes live, and receives what B writes next;
//! - the map publish and remove proxies, against a backend the test runs.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::{api, temp_dir, Node};
use serde_json::{json, Value};
use wshub_testkit::redis::{RedisCluster, RedisServer};
use wshub_testkit::ws::Client;
use wshub_websocket::{Event, MessageKind};

const SECRET: &str = "maps-secret";

fn config(redis: Value) -> Value {
    json!({
        "http_api": {"key": common::API_KEY},
        "client": {"token": {"hmac_secret_key": SECRET}},
        "engine": {"type": "redis", "redis": redis.clone()},
        "map_broker": {"type": "redis", "redis": redis},
        "channel": {"namespaces": [{
            "name": "pos",
            "allow_subscribe_for_client": true,
            "subscription_type": "map",
            "map": {"mode": "persistent", "min_page_size": 1}
        }]}
    })
}

/// A client speaking the JSON protocol: commands by id, pushes kept aside.
struct Json {
    ws: Client,
    pushes: Vec<Value>,
}

impl Json {
    async fn connect(port: u16) -> Json {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut ws = Client::connect(addr, "/connection/websocket", &[], None).await;
        ws.send_connect(&wshub_testkit::token(SECRET, &json!({"sub": "alice"}))).await;
        let mut c = Json { ws, pushes: Vec::new() };
        let r = c.reply(1).await;
        assert!(r.get("connect").is_some(), "{r}");
        c
    }

    /// The next messages of one frame (the JSON protocol puts one per line).
    async fn frame(&mut self) -> Vec<Value> {
        loop {
            match self.ws.next_event().await {
                Event::Message {
                    kind: MessageKind::Text,
                    data,
                } => {
                    let text = String::from_utf8(data.to_vec()).unwrap();
                    return text
                        .lines()
                        .filter(|l| !l.trim().is_empty())
                        .map(|l| serde_json::from_str(l).unwrap())
                        .collect();
                }
                Event::Closed { code, .. } => panic!("closed: {code:?}"),
                _ => {}
            }
        }
    }

    async fn reply(&mut self, id: u64) -> Value {
        loop {
            for m in self.frame().await {
                if m["id"].as_u64() == Some(id) {
                    return m;
                }
                self.pushes.push(m);
            }
        }
    }

    async fn command(&mut self, id: u64, body: Value) -> Value {
        let mut cmd = body;
        cmd["id"] = json!(id);
        self.ws.send(MessageKind::Text, cmd.to_string().as_bytes()).await;
        self.reply(id).await
    }

    /// The next push of `channel` (those seen already first).
    async fn push(&mut self, channel: &str) -> Value {
        loop {
            if let Some(i) = self.pushes.iter().position(|p| p["push"]["channel"] == channel) {
                return self.pushes.remove(i)["push"]["pub"].clone();
            }
            let more = self.frame().await;
            self.pushes.extend(more);
        }
    }

    /// A map subscribe through its phases (state pages of `limit`, stream pages), as the
    /// SDK runs it: the state entries and the live reply.
    async fn map_subscribe(&mut self, channel: &str, limit: u64) -> (Vec<Value>, Value) {
        let mut state = Vec::new();
        let mut req = json!({"channel": channel, "type": 1, "phase": 2, "limit": limit});
        for id in 2.. {
            let r = self.command(id, json!({"subscribe": req.clone()})).await;
            let s = r.get("subscribe").unwrap_or_else(|| panic!("subscribe failed: {r}")).clone();
            state.extend(s["state"].as_array().cloned().unwrap_or_default());
            let (offset, epoch) = (s["offset"].clone(), s["epoch"].clone());
            match (s["phase"].as_u64(), s["cursor"].as_str()) {
                (None | Some(0), _) => return (state, s),
                (Some(2), Some(cursor)) if !cursor.is_empty() => {
                    req = json!({"channel": channel, "type": 1, "phase": 2, "limit": limit, "cursor": cursor, "offset": offset, "epoch": epoch});
                }
                _ => req = json!({"channel": channel, "type": 1, "phase": 1, "limit": limit, "offset": offset, "epoch": epoch}),
            }
            assert!(id < 50, "no end to the phases");
        }
        unreachable!()
    }
}

async fn map_publish(port: u16, channel: &str, key: &str, data: Value) -> Value {
    let (status, r) = api(port, "map_publish", &json!({"channel": channel, "key": key, "data": data}))
        .await
        .unwrap();
    assert_eq!(status, 200, "{r}");
    assert!(r.get("error").is_none(), "{r}");
    r["result"].clone()
}

/// Node B writes, node A's subscriber loads the state in pages and then hears B live.
async fn across_two_nodes(name: &str, redis: Value) {
    let dir = temp_dir(name);
    let cfg = config(redis);
    let a = Node::start(&dir, &cfg, common::free_port()).await;
    let b = Node::start(&dir, &cfg, common::free_port()).await;
    let ch = "pos:board";
    for (k, v) in [("k1", 1), ("k2", 2), ("k3", 3)] {
        map_publish(b.port, ch, k, json!({"v": v})).await;
    }
    let mut c = Json::connect(a.port).await;
    let (state, live) = c.map_subscribe(ch, 2).await;
    let keys: Vec<&str> = state.iter().map(|e| e["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["k1", "k2", "k3"], "{state:?}");
    assert_eq!(state[2]["data"], json!({"v": 3}));
    assert_eq!(
        (live["offset"].as_u64(), live["recoverable"].as_bool()),
        (Some(3), Some(true)),
        "{live}"
    );

    let written = map_publish(b.port, ch, "k4", json!({"v": 4})).await;
    let p = c.push(ch).await;
    assert_eq!(
        (p["key"].as_str(), p["offset"].as_u64(), &p["data"]),
        (Some("k4"), Some(4), &json!({"v": 4})),
        "{p}"
    );
    assert_eq!(written["epoch"], live["epoch"], "one stream for both nodes");
    let (status, r) = api(b.port, "map_remove", &json!({"channel": ch, "key": "k1"})).await.unwrap();
    assert_eq!(status, 200, "{r}");
    let p = c.push(ch).await;
    assert_eq!(
        (p["key"].as_str(), p["removed"].as_bool(), p["offset"].as_u64()),
        (Some("k1"), Some(true), Some(5)),
        "{p}"
    );
    // Both nodes read the one state.
    let (_, stats) = api(a.port, "map_stats", &json!({"channel": ch})).await.unwrap();
    assert_eq!(stats["result"]["num_keys"], 3, "{stats}");
    drop((a, b));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maps_across_two_nodes_on_redis() {
    let redis = RedisServer::start().await;
    across_two_nodes("maps-redis", json!({"address": redis.url(), "prefix": "maps"})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maps_across_two_nodes_on_redis_cluster() {
    let cluster = RedisCluster::start().await;
    across_two_nodes("maps-cluster", json!({"cluster_address": [cluster.seeds()], "prefix": "maps"})).await;
}

/// A map proxy backend on a free loopback port: each request body is kept; a write of key
/// `deny` is refused (error 1000), any other key becomes `u-{key}` with a tag.
async fn map_backend() -> (u16, Arc<Mutex<Vec<Value>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = l.accept().await.unwrap();
            let s = s.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some((path, body)) = take_body(&mut buf) {
                        let req: Value = serde_json::from_slice(&body).unwrap();
                        let key = req["key"].as_str().unwrap_or_default().to_string();
                        s.lock().unwrap().push(json!({"path": path, "request": req}));
                        let reply = match key.as_str() {
                            "deny" => json!({"error": {"code": 1000, "message": "not yours"}}),
                            _ if path.ends_with("/map_remove") => json!({"result": {"key": format!("u-{key}")}}),
                            _ => json!({"result": {"key": format!("u-{key}"), "tags": {"by": "backend"}}}),
                        }
                        .to_string();
                        let http = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{reply}", reply.len());
                        if stream.write_all(http.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (port, seen)
}

/// The path and body of the first whole request in `buf`, taken off it.
fn take_body(buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let (head, body) = wshub_testkit::take_request_with_body(buf)?;
    Some((head.split_whitespace().nth(1).unwrap_or_default().to_string(), body))
}

/// With the map proxies on, the backend (not the namespace's permissions, all off) decides a
/// client's map writes and removals, and its result changes what is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_proxies_decide_client_writes() {
    let (backend, seen) = map_backend().await;
    let dir = temp_dir("maps-proxy");
    let cfg = json!({
        "http_api": {"key": common::API_KEY},
        "client": {"token": {"hmac_secret_key": SECRET}},
        "channel": {
            "proxy": {
                "map_publish": {"endpoint": format!("http://127.0.0.1:{backend}/map_publish"), "timeout": "2s"},
                "map_remove": {"endpoint": format!("http://127.0.0.1:{backend}/map_remove"), "timeout": "2s"}
            },
            "namespaces": [{
                "name": "prox",
                "allow_subscribe_for_client": true,
                "subscription_type": "map",
                "map": {"mode": "persistent", "publish_proxy_enabled": true, "remove_proxy_enabled": true}
            }]
        }
    });
    let node = Node::start(&dir, &cfg, common::free_port()).await;
    let mut c = Json::connect(node.port).await;
    let write =
        |key: &str, removed: bool| json!({"publish": {"channel": "prox:1", "type": 1, "key": key, "data": {"x": 1}, "removed": removed}});
    let r = c.command(2, write("a", false)).await;
    assert!(r.get("error").is_none(), "{r}");
    let r = c.command(3, write("deny", false)).await;
    assert_eq!(r["error"]["code"], 1000, "the backend's error: {r}");
    let (_, state) = api(node.port, "map_read_state", &json!({"channel": "prox:1", "limit": 10}))
        .await
        .unwrap();
    let entries = state["result"]["entries"].as_array().cloned().unwrap_or_default();
    assert_eq!(entries.len(), 1, "{state}");
    assert_eq!(
        (&entries[0]["key"], &entries[0]["data"], &entries[0]["tags"]),
        (&json!("u-a"), &json!({"x": 1}), &json!({"by": "backend"}))
    );
    let r = c.command(4, write("a", true)).await;
    assert!(r.get("error").is_none(), "{r}");
    let (_, stats) = api(node.port, "map_stats", &json!({"channel": "prox:1"})).await.unwrap();
    assert_eq!(stats["result"]["num_keys"], 0, "removed as the backend said: {stats}");
    let seen = seen.lock().unwrap().clone();
    let paths: Vec<&str> = seen.iter().map(|s| s["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/map_publish", "/map_publish", "/map_remove"]);
    let first = &seen[0]["request"];
    assert_eq!(
        (&first["channel"], &first["key"], &first["user"], &first["data"]),
        (&json!("prox:1"), &json!("a"), &json!("alice"), &json!({"x": 1}))
    );
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Polls `/ready` on `port` until it answers `want`, within [`common::LIMIT`].
async fn until_ready_is(node: &Node, want: u16) {
    let deadline = std::time::Instant::now() + common::LIMIT;
    loop {
        let status = common::http(node.port, "GET", "/ready", "", "").await.map_or(0, |(s, _)| s);
        if status == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/ready never {want} (last {status}): {}",
            node.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The map broker's Redis is checked by `/ready` as the engine's is: the engine here is
/// the memory one, so only the map broker's Redis going away can turn the node unready,
/// and its coming back turns it ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_follows_the_map_brokers_redis() {
    let mut redis = RedisServer::start().await;
    let port = redis.port;
    let dir = temp_dir("maps-ready");
    let cfg = json!({
        "http_api": {"key": common::API_KEY},
        "map_broker": {"type": "redis", "redis": {"address": redis.url(), "prefix": "ready"}},
        "channel": {"namespaces": [{"name": "pos", "subscription_type": "map", "map": {"mode": "persistent"}}]}
    });
    let node = Node::start(&dir, &cfg, common::free_port()).await;
    map_publish(node.port, "pos:r", "k", json!(1)).await;
    redis.stop();
    until_ready_is(&node, 503).await;
    let (_, r) = api(node.port, "map_publish", &json!({"channel": "pos:r", "key": "k2", "data": 2}))
        .await
        .unwrap();
    assert!(r.get("error").is_some(), "a map write with its Redis down: {r}");
    let _back = RedisServer::start_on(port).await;
    until_ready_is(&node, 200).await;
    map_publish(node.port, "pos:r", "k3", json!(3)).await;
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}
