//! The `channels` API call is linear in the node's channels: against 100,000 of them it
//! runs off the async workers, and handshakes and `/health` keep answering meanwhile.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wshub_core::connection::testing::Recorder;
use wshub_core::connection::ConnectionHandle;
use wshub_protocol::Format;
use wshub_websocket::Event;

const SECRET: &str = "channels-test-secret";
const KEY: &str = "channels-test-key";
const CHANNELS: usize = 100_000;
/// Calls of `channels` in flight at once.
const CALLS: usize = 4;
/// Long names, so that each call's walk over the node's channels (a copy of every name)
/// takes long enough for the probes to be seen answering during it.
const NAME_LEN: usize = 240;
const PATTERN: &str = "*a*a*a*a*a*a*a*b";

/// The server runs on a runtime of its own with one worker: a call that held that worker
/// would stop every other request of the server.
fn start_server() -> (SocketAddr, Arc<wshub_core::node::Node>) {
    let config = node_config(
        json!({
            "http_api": {"key": KEY},
            "client": {"token": {"hmac_secret_key": SECRET}},
            "channel": {"without_namespace": {"allow_subscribe_for_client": true}},
        }),
        json!({}),
    );
    let (node, sc) = wshub_server::app::build(&config).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = wshub_server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            wshub_server::serve(listener, wshub_server::Shared::new(sc), std::future::pending()).await;
        });
    });
    (rx.recv_timeout(LIMIT).unwrap(), node)
}

async fn channels_call(addr: SocketAddr) -> (Value, Instant) {
    let body = json!({ "pattern": PATTERN }).to_string();
    let req = format!(
        "POST /api/channels HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, _, body) = raw_http(addr, req.as_bytes()).await;
    assert_eq!(status, 200, "{body}");
    (serde_json::from_str(&body).unwrap(), Instant::now())
}

/// A WebSocket client that connects with a token and gets its `connect` reply.
async fn ws_connect(addr: SocketAddr) -> Instant {
    let mut c = Client::connect(addr, "/connection/websocket", &[], None).await;
    let token = wshub_core::token::make_hs256(SECRET, &json!({"sub": "probe"})).unwrap();
    c.send_connect(&token).await;
    match c.next_event().await {
        Event::Message { data, .. } => assert!(String::from_utf8_lossy(&data).contains("\"client\""), "{data:?}"),
        other => panic!("{other:?}"),
    }
    Instant::now()
}

async fn health(addr: SocketAddr) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(LIMIT, s.read_to_end(&mut answer)).await.unwrap().unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_against_100k_channels_leaves_the_server_answering() {
    let (addr, node) = start_server();
    // A subscriber that is never written to: it only makes the hub hold channels.
    let idle: Arc<dyn ConnectionHandle> = Recorder::new(Format::Json);
    // Names full of `a` and without `b`, the pattern's worst case; every 10,000th ends in
    // `b` and matches.
    let mut expected = Vec::new();
    for i in 0..CHANNELS {
        let name = if i % 10_000 == 0 {
            expected.push(format!("{i}{}b", "a".repeat(NAME_LEN)));
            expected[expected.len() - 1].clone()
        } else {
            format!("{i}{}", "a".repeat(NAME_LEN))
        };
        node.hub.add(&name, idle.clone(), false, false);
    }

    let started = Instant::now();
    let calls: Vec<_> = (0..CALLS).map(|_| tokio::spawn(channels_call(addr))).collect();
    let ws = tokio::spawn(ws_connect(addr));
    // `/health` every 10 ms while the calls run; each must answer promptly.
    let mut answered = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while answered.len() < 2 || !ws.is_finished() {
        assert!(started.elapsed() < LIMIT, "probes not answered in time");
        tick.tick().await;
        let sent = Instant::now();
        tokio::time::timeout(LIMIT, health(addr)).await.unwrap();
        answered.push((sent.elapsed(), Instant::now()));
    }
    let ws_at = ws.await.unwrap();
    let mut first_reply = None::<Instant>;
    for c in calls {
        let (reply, at) = tokio::time::timeout(LIMIT, c).await.unwrap().unwrap();
        let mut got: Vec<&String> = reply["result"]["channels"].as_object().unwrap().keys().collect();
        got.sort();
        let mut want: Vec<&String> = expected.iter().collect();
        want.sort();
        assert_eq!(got, want);
        assert_eq!(reply["result"]["channels"][&expected[0]]["num_clients"], 1);
        first_reply = Some(first_reply.map_or(at, |f| f.min(at)));
    }
    let first_reply = first_reply.unwrap();
    let slowest = answered.iter().map(|(l, _)| *l).max().unwrap();
    println!(
        "{CALLS} channels calls over {CHANNELS} channels: first reply after {:?}; /health slowest {slowest:?}, WebSocket connected after {:?}",
        first_reply - started,
        ws_at - started
    );
    // While the channels calls were computed (no reply yet), the node went on answering.
    let during = answered.iter().filter(|(_, at)| *at < first_reply).count();
    assert!(during >= 2, "only {during} /health answers before the first channels reply");
    assert!(ws_at < first_reply, "the WebSocket connected only after a channels reply");
}
