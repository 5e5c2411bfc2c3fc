//! Shared poll across nodes: two wshub processes on one Redis, a fake backend. Each node
//! polls the backend for the keys its own connections track (no request asks for both
//! nodes' keys), and a `shared_poll_publish` sent to one node reaches the trackers of the
//! key on both.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::{api, free_port, serial, temp_dir, Node, LIMIT};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wshub_core::subscription::shared_poll::signature::sign;
use wshub_testkit::ws::Client;
use wshub_websocket::{Event, MessageKind};

const SECRET: &str = "poll-secret";

/// The backend: key -> (version, data); every request's keys are logged.
#[derive(Default)]
struct Backend {
    items: Mutex<HashMap<String, (u64, Value)>>,
    requests: Mutex<Vec<Vec<String>>>,
}

/// One HTTP/1.1 request's body off the front of `buf`, when it is all there.
fn take_body(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    wshub_testkit::take_request_with_body(buf).map(|(_, body)| body)
}

async fn serve_backend(backend: Arc<Backend>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let backend = backend.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(body) = take_body(&mut buf) {
                        let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let keys: Vec<String> = req["items"]
                            .as_array()
                            .map(|a| a.iter().filter_map(|i| i["key"].as_str().map(String::from)).collect())
                            .unwrap_or_default();
                        let items: Vec<Value> = {
                            let stored = backend.items.lock().unwrap();
                            keys.iter()
                                .filter_map(|k| stored.get(k).map(|(v, d)| json!({"key": k, "version": v, "data": d})))
                                .collect()
                        };
                        backend.requests.lock().unwrap().push(keys);
                        let out = json!({"result": {"items": items}}).to_string();
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{out}",
                            out.len()
                        );
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    port
}

fn config(redis: &str, backend: u16) -> Value {
    json!({
        "http_api": {"key": common::API_KEY},
        "client": {"allow_anonymous_connect_without_token": true},
        "engine": {"type": "redis", "redis": {"address": redis}},
        "shared_poll": {"hmac_secret_key": SECRET},
        "proxies": [{"name": "backend", "endpoint": format!("http://127.0.0.1:{backend}/refresh"), "timeout": "5s"}],
        "channel": {"namespaces": [{
            "name": "poll",
            "subscription_type": "shared_poll",
            "allow_subscribe_for_client": true,
            "allow_subscribe_for_anonymous": true,
            "shared_poll": {"proxy_name": "backend", "mode": "versioned", "refresh_interval": "200ms", "publish_enabled": true}
        }]}
    })
}

/// A JSON client of node `port`, subscribed to `channel` and tracking `keys`.
async fn tracker(port: u16, channel: &str, keys: &[&str]) -> Client {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut c = Client::connect(addr, "/connection/websocket", &[], None).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let sig = sign(SECRET, channel, "", keys, now, now + 3600);
    let items: Vec<Value> = keys.iter().map(|k| json!({"key": k})).collect();
    let frames = [
        json!({"id": 1, "connect": {}}),
        json!({"id": 2, "subscribe": {"channel": channel, "type": 4}}),
        json!({"id": 3, "sub_refresh": {"channel": channel, "type": 1, "track": [{"signature": sig, "items": items}]}}),
    ];
    for f in frames {
        c.send(MessageKind::Text, f.to_string().as_bytes()).await;
        let reply = next_json(&mut c, |v| v["id"] == f["id"]).await;
        assert!(reply.get("error").is_none(), "{f} -> {reply}");
    }
    c
}

/// The next message (of possibly several per frame) matching `want`, within [`LIMIT`].
async fn next_json(c: &mut Client, mut want: impl FnMut(&Value) -> bool) -> Value {
    let found = tokio::time::timeout(LIMIT, async {
        loop {
            match c.next_event().await {
                Event::Message { data, .. } => {
                    for line in String::from_utf8_lossy(&data).lines() {
                        let v: Value = serde_json::from_str(line).unwrap();
                        if want(&v) {
                            return v;
                        }
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    found.expect("message in time")
}

/// The next publication of `key` at `version`.
async fn update(c: &mut Client, key: &str, version: u64) -> Value {
    next_json(c, |v| v["push"]["pub"]["key"] == key && v["push"]["pub"]["version"] == version).await["push"]["pub"].clone()
}

#[test]
fn each_node_polls_for_its_own_and_a_direct_publication_reaches_both() {
    serial(async {
        let redis = wshub_testkit::redis::RedisServer::start().await;
        let backend = Arc::new(Backend::default());
        let backend_port = serve_backend(backend.clone()).await;
        let dir = temp_dir("shared-poll");
        let cfg = config(&redis.url(), backend_port);
        let a = Node::start(&dir, &cfg, free_port()).await;
        let b = Node::start(&dir, &cfg, free_port()).await;
        {
            let mut items = backend.items.lock().unwrap();
            items.insert("onA".into(), (1, json!({"on": "a"})));
            items.insert("onB".into(), (1, json!({"on": "b"})));
            items.insert("both".into(), (1, json!({"n": 1})));
        }
        let ch = "poll:room";
        let mut ca = tracker(a.port, ch, &["onA", "both"]).await;
        let mut cb = tracker(b.port, ch, &["onB", "both"]).await;
        assert_eq!(update(&mut ca, "onA", 1).await["data"], json!({"on": "a"}));
        update(&mut ca, "both", 1).await;
        assert_eq!(update(&mut cb, "onB", 1).await["data"], json!({"on": "b"}));
        update(&mut cb, "both", 1).await;

        // A new version reaches both through their own nodes' polls.
        backend.items.lock().unwrap().insert("onB".into(), (2, json!({"on": "b2"})));
        assert_eq!(update(&mut cb, "onB", 2).await["data"], json!({"on": "b2"}));

        // A direct publication to node A reaches B's tracker too (through Redis).
        let (status, r) = api(
            a.port,
            "shared_poll_publish",
            &json!({"channel": ch, "key": "both", "version": 10, "data": {"n": 10}}),
        )
        .await
        .unwrap();
        assert_eq!((status, &r), (200, &json!({"result": {}})), "{}", a.log());
        assert_eq!(update(&mut ca, "both", 10).await["data"], json!({"n": 10}));
        assert_eq!(update(&mut cb, "both", 10).await["data"], json!({"n": 10}));

        // A channel that is no shared poll channel refuses direct publications (107, as Centrifugo).
        let (_, r) = api(
            a.port,
            "shared_poll_publish",
            &json!({"channel": "other", "key": "k", "version": 1, "data": 1}),
        )
        .await
        .unwrap();
        assert_eq!(r["error"]["code"], 107, "{r}");

        let requests = backend.requests.lock().unwrap().clone();
        assert!(!requests.is_empty());
        for keys in &requests {
            let from_a = keys.iter().any(|k| k == "onA");
            let from_b = keys.iter().any(|k| k == "onB");
            assert!(!(from_a && from_b), "one request asked for both nodes' keys: {keys:?}");
        }
        drop((ca, cb));
    });
}
