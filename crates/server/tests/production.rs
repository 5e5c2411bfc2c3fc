//! Limits, slow consumers and faults over real sockets: the offender gets its specific
//! answer and everyone else keeps being served, with nothing left behind.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use wshub_core::node::Node;
use wshub_core::token::make_hs256;
use wshub_server::config::Config;
use wshub_websocket::{Event, MessageKind};

fn config(extra: Value) -> Config {
    keyed_config(
        json!({
            "channel": {"without_namespace": {"allow_subscribe_for_client": true, "presence": true, "join_leave": true}}
        }),
        extra,
    )
}

async fn node_server(extra: Value) -> (TestServer, Arc<Node>) {
    let (node, sc) = wshub_server::app::build(&config(extra)).unwrap();
    (TestServer::start(sc).await, node)
}

fn token(user: &str) -> String {
    make_hs256(SECRET, &json!({"sub": user})).unwrap()
}

/// The statuses of `n` WebSocket upgrades in a row.
async fn upgrade_statuses(server: &TestServer, n: usize) -> Vec<u16> {
    let host = server.addr.to_string();
    let mut statuses = Vec::with_capacity(n);
    for _ in 0..n {
        statuses.push(raw_http(server.addr, &upgrade(&host)).await.0);
    }
    statuses
}

/// Connects and subscribes a JSON client over `c`.
async fn join(c: &mut Client, user: &str, channel: &str) {
    c.send(
        MessageKind::Text,
        format!(
            r#"{{"id":1,"connect":{{"token":"{}"}}}}{}{{"id":2,"subscribe":{{"channel":"{channel}"}}}}"#,
            token(user),
            "\n"
        )
        .as_bytes(),
    )
    .await;
    let mut seen = 0;
    while seen < 2 {
        if let Event::Message { data, .. } = c.next_event().await {
            seen += String::from_utf8_lossy(&data).matches("\"id\":").count();
        }
    }
}

async fn api(server: &TestServer, method: &str, body: &str) -> (u16, String) {
    let req = format!(
        "POST /api/{method} HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, _, body) = raw_http(server.addr, req.as_bytes()).await;
    (status, body)
}

fn upgrade(host: &str) -> Vec<u8> {
    upgrade_request(host, "")
}

/// This process's resident memory in bytes.
fn rss() -> usize {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: usize = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    kb * 1024
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_and_rates() {
    let (server, _) = node_server(json!({"client": {"connection_limit": 2, "connection_rate_limit_per_ip": 100}})).await;
    let host = server.addr.to_string();
    let mut a = Client::connect(server.addr, "/connection/websocket", &[], None).await;
    let _b = Client::connect(server.addr, "/connection/websocket", &[], None).await;
    server.wait_connections(2).await;
    let (status, _, body) = raw_http(server.addr, &upgrade(&host)).await;
    assert_eq!((status, body.trim()), (503, "connection_limit"));
    join(&mut a, "a", "news").await; // the others are still served
    server.stop().await;

    let (server, _) = node_server(json!({"client": {"connection_rate_limit_per_ip": 3}})).await;
    let statuses = upgrade_statuses(&server, 5).await;
    assert_eq!(&statuses[..3], &[101, 101, 101]);
    assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");
    server.stop().await;

    let (server, _) = node_server(json!({"client": {"connection_rate_limit": 2}})).await;
    let statuses = upgrade_statuses(&server, 4).await;
    assert_eq!(statuses, vec![101, 101, 503, 503]);
    server.stop().await;

    let (server, _) = node_server(json!({"http_api": {"rate_limit": 2}})).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(api(&server, "info", "{}").await.0);
    }
    assert_eq!(statuses, vec![200, 200, 429, 429]);
    server.stop().await;
}

/// Every configurable rate limit, with each of the three algorithms, against the same
/// burst of 12 at a limit of 5 per second: the token bucket admits its burst of 5, the
/// leaky bucket 1 (no burst), the sliding window 5 (its window's worth). The commands of
/// one WebSocket frame share one moment, so that count is exact; the HTTP bursts take a
/// few milliseconds, so each bound allows what refilled meanwhile (measured).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_algorithms_against_the_same_burst() {
    const RATE: usize = 5;
    const BURST: usize = 12;
    for (algorithm, at_once) in [("token_bucket", RATE), ("leaky_bucket", 1), ("sliding_window", RATE)] {
        // client.command_rate_limit: connect and 11 commands in one frame.
        let (server, _) = node_server(json!({"client": {"command_rate_limit": RATE, "command_rate_limit_algorithm": algorithm}})).await;
        let mut c = Client::connect(server.addr, "/connection/websocket", &[], None).await;
        let mut frame = format!(r#"{{"id":1,"connect":{{"token":"{}"}}}}"#, token("u"));
        for id in 2..=BURST {
            frame.push_str(&format!("\n{{\"id\":{id},\"presence_stats\":{{\"channel\":\"news\"}}}}"));
        }
        c.send(MessageKind::Text, frame.as_bytes()).await;
        let (mut replies, mut limited) = (0, 0);
        while replies < BURST {
            match c.next_event().await {
                Event::Message { data, .. } => {
                    for line in String::from_utf8_lossy(&data).lines() {
                        let v: Value = serde_json::from_str(line).unwrap();
                        replies += 1;
                        limited += usize::from(v["error"]["code"] == 111);
                    }
                }
                // Ten refusals in a row close the connection (3013): the rest is unanswered.
                Event::Closed { code, .. } => {
                    assert_eq!(code.0, 3013);
                    limited += BURST - replies;
                    break;
                }
                _ => {}
            }
        }
        assert_eq!(BURST - limited, at_once, "command_rate_limit, {algorithm}");
        server.stop().await;

        // The HTTP limits: a burst of sequential requests, counted by status.
        type Attempt = fn(&TestServer) -> std::pin::Pin<Box<dyn std::future::Future<Output = u16> + Send + '_>>;
        let upgrade_status: Attempt = |s| Box::pin(async move { raw_http(s.addr, &upgrade(&s.addr.to_string())).await.0 });
        let api_status: Attempt = |s| Box::pin(async move { api(s, "info", "{}").await.0 });
        for (key, limit, attempt, admitted_status) in [
            ("client", "connection_rate_limit", upgrade_status, 101),
            ("client", "connection_rate_limit_per_ip", upgrade_status, 101),
            ("http_api", "rate_limit", api_status, 200),
        ] {
            let (server, _) = node_server(json!({key: {limit: RATE, format!("{limit}_algorithm"): algorithm}})).await;
            let started = std::time::Instant::now();
            let mut admitted = 0;
            for _ in 0..BURST {
                admitted += usize::from(attempt(&server).await == admitted_status);
            }
            // What the limit may have let through on top while the burst lasted.
            let elapsed = started.elapsed().as_secs_f64();
            let refilled = (elapsed * RATE as f64).ceil() as usize;
            let what = format!("{key}.{limit}, {algorithm}: {admitted} admitted in {elapsed:.3} s");
            assert!(admitted >= at_once && admitted <= at_once + refilled, "{what}");
            if algorithm == "sliding_window" && elapsed < 1.0 {
                assert_eq!(admitted, RATE, "{what}: nothing more within the window");
            }
            server.stop().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_dropped() {
    let (server, _) = node_server(json!({"client": {"handshake_timeout": "300ms"}})).await;
    let mut good = Client::connect(server.addr, "/connection/websocket", &[], None).await;
    join(&mut good, "g", "news").await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /connection/websocket HTTP/1.1\r\nHost: x\r\nUpg")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(LIMIT, tokio::io::AsyncReadExt::read(&mut slow, &mut buf))
        .await
        .expect("dropped in time");
    // Closed (EOF or an error answer), never left hanging.
    match n {
        Ok(0) | Err(_) => {}
        Ok(n) => assert!(
            buf[..n].starts_with(b"HTTP/1.1 408") || buf[..n].starts_with(b"HTTP/1.1 400"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        ),
    }
    let (status, _) = api(&server, "publish", r#"{"channel":"news","data":{"x":1}}"#).await;
    assert_eq!(status, 200);
    assert!(matches!(good.next_event().await, Event::Message { .. }));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_slow_reader_among_a_thousand() {
    const READERS: usize = 1000;
    const PUBLICATIONS: usize = 100;
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let (server, node) = node_server(json!({"client": {"queue_max_size": 65536}, "websocket": {"write_timeout": "0"}})).await;
    // The slow reader follows the readers' channel and a firehose that only it follows.
    let mut stalled = Client::connect_small_buffer(server.addr, "/connection/websocket", 4096).await;
    join(&mut stalled, "stalled", "feed").await;
    stalled
        .send(MessageKind::Text, br#"{"id":3,"subscribe":{"channel":"firehose"}}"#)
        .await;
    assert!(matches!(stalled.next_event().await, Event::Message { .. }));
    let mut readers = Vec::with_capacity(READERS);
    for i in 0..READERS {
        let mut c = Client::connect(server.addr, "/connection/websocket", &[], None).await;
        join(&mut c, &format!("r{i}"), "feed").await;
        readers.push(tokio::spawn(async move {
            let mut last = 0u64;
            while last < PUBLICATIONS as u64 {
                if let Event::Message { data, .. } = c.next_event().await {
                    for line in data.split(|b| *b == b'\n') {
                        let v: Value = serde_json::from_slice(line).unwrap();
                        if let Some(n) = v["push"]["pub"]["data"]["n"].as_u64() {
                            assert_eq!(n, last + 1, "in order, none lost");
                            last = n;
                        }
                    }
                }
            }
            c
        }));
    }
    let publish = |n: usize| {
        let addr = server.addr;
        async move {
            let body = format!(r#"{{"channel":"feed","data":{{"n":{n},"p":"{}"}}}}"#, "x".repeat(500));
            let req = format!(
                "POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            assert_eq!(raw_http(addr, req.as_bytes()).await.0, 200);
        }
    };
    for n in 1..=PUBLICATIONS / 2 {
        publish(n).await;
    }
    // 16 MiB for the one that does not read: far past its queue and the kernel's buffers,
    // in publications that each fit the queue (a larger one is refused with 107).
    let big = format!(r#"{{"channel":"firehose","data":"{}"}}"#, "y".repeat(48 * 1024));
    let mut max_queued = 0;
    let rss_before = rss();
    for _ in 0..342 {
        let req = format!(
            "POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{big}",
            big.len()
        );
        assert_eq!(raw_http(server.addr, req.as_bytes()).await.0, 200);
        max_queued = max_queued.max(wshub_server::transport::queued_bytes());
    }
    // It reads now: what the kernel held, then the close with 3008 (its backlog dropped).
    let code = loop {
        match stalled.next_event().await {
            Event::Closed { code, .. } => break code.0,
            Event::Failed(e) => panic!("{e}"),
            _ => {}
        }
    };
    assert_eq!(code, 3008);
    for n in PUBLICATIONS / 2 + 1..=PUBLICATIONS {
        publish(n).await;
    }
    let mut clients = Vec::new();
    for r in readers {
        clients.push(
            tokio::time::timeout(LIMIT, r)
                .await
                .expect("every reader got every publication")
                .unwrap(),
        );
    }
    println!("slow reader closed with {code}; max bytes queued in the process during the burst: {max_queued}");
    let growth = rss().saturating_sub(rss_before);
    println!("RSS growth during the 16 MiB burst: {growth} bytes");
    assert!(
        growth < 8 << 20,
        "memory stays bounded: the burst is not kept for the slow reader ({growth} bytes)"
    );
    drop(stalled);
    server.wait_connections(READERS).await;
    assert_eq!(node.hub.num_subscribers("feed"), READERS, "the slow one left the hub");
    assert_eq!(node.hub.num_subscribers("firehose"), 0);
    drop(clients);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_clients_leave_nothing_behind() {
    let (server, node) = node_server(json!({"client": {"ping_interval": "1s", "pong_timeout": "500ms"}})).await;
    let mut watcher = Client::connect(server.addr, "/connection/websocket", &[], None).await;
    watcher
        .send(
            MessageKind::Text,
            format!(
                r#"{{"id":1,"connect":{{"token":"{}"}}}}{}{{"id":2,"subscribe":{{"channel":"room","join_leave":true}}}}"#,
                token("w"),
                "\n"
            )
            .as_bytes(),
        )
        .await;
    let fds_before = open_fds();
    let mut peers = Vec::new();
    for i in 0..20 {
        let mut c = Client::connect(server.addr, "/connection/websocket", &[], None).await;
        join(&mut c, &format!("p{i}"), "room").await;
        peers.push(c);
    }
    assert_eq!(node.num_clients(), 21);
    // Half vanish at once (reset), half stop answering (half-open: reaped by the heartbeat).
    let mut silent = Vec::new();
    for (i, c) in peers.into_iter().enumerate() {
        if i % 2 == 0 {
            #[allow(deprecated)]
            c.stream.set_linger(Some(Duration::ZERO)).unwrap(); // close with RST
            drop(c);
        } else {
            silent.push(c);
        }
    }
    // The watcher answers pings and sees 20 leaves.
    let mut leaves = 0;
    while leaves < 20 {
        match watcher.next_event().await {
            Event::Message { data, .. } => {
                if &data[..] == b"{}" {
                    watcher.send(MessageKind::Text, b"{}").await;
                }
                leaves += String::from_utf8_lossy(&data).matches("\"leave\"").count();
            }
            Event::Closed { code, .. } => panic!("watcher closed with {}", code.0),
            _ => {}
        }
    }
    drop(silent);
    server.wait_connections(1).await;
    assert_eq!(node.num_clients(), 1);
    assert_eq!(node.hub.num_subscribers("room"), 1);
    let (_, body) = api(&server, "presence_stats", r#"{"channel":"room"}"#).await;
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["result"]["num_clients"], 1);
    let deadline = tokio::time::Instant::now() + LIMIT;
    while open_fds() > fds_before {
        assert!(tokio::time::Instant::now() < deadline, "fds {} > {fds_before}", open_fds());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_every_family() {
    let (server, _) = node_server(json!({"http_api": {"rate_limit": 1000}})).await;
    let mut c = Client::connect(server.addr, "/connection/websocket", &[], None).await;
    join(&mut c, "m", "news").await;
    api(&server, "publish", r#"{"channel":"news","data":{}}"#).await;
    let _ = raw_http(server.addr, b"GET /connection/websocket HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (status, _, body) = raw_http(server.addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, 200);
    for family in [
        "wshub_connections",
        "wshub_subscriptions",
        "wshub_channels",
        "wshub_commands_total",
        "wshub_messages_in_total",
        "wshub_bytes_in_total",
        "wshub_bytes_out_total",
        "wshub_api_calls_total",
        "wshub_handshake_refusals_total",
        "wshub_queue_bytes",
        "wshub_fanout_latency_seconds",
    ] {
        assert!(body.contains(family), "{family} missing from /metrics:\n{body}");
    }
    server.stop().await;
}
