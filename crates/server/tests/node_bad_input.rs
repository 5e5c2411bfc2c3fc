//! DESIGN.md's bad-input table for the node, over real sockets: each offender gets its
//! specific answer, and a well-behaved subscriber on the same server keeps receiving.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use wshub_core::token::make_hs256;
use wshub_server::config::Config;
use wshub_websocket::{Event, MessageKind};

fn config(extra: Value) -> Config {
    keyed_config(
        json!({
            "websocket": {"message_size_limit": 4096},
            "channel": {
                "without_namespace": {"allow_subscribe_for_client": true},
                "namespaces": [{"name": "private"}]
            }
        }),
        extra,
    )
}

async fn node_server(extra: Value) -> TestServer {
    TestServer::node(&config(extra)).await
}

fn token(claims: Value) -> String {
    make_hs256(SECRET, &claims).unwrap()
}

/// A JSON protocol client that answers the server's pings.
struct NodeClient(Client);

impl NodeClient {
    async fn open(server: &TestServer) -> Self {
        NodeClient(Client::connect(server.addr, "/connection/websocket", &[], None).await)
    }

    async fn send(&mut self, text: &str) {
        self.0.send(MessageKind::Text, text.as_bytes()).await;
    }

    /// The next protocol message (reply or push), answering pings on the way.
    async fn next(&mut self) -> Result<Value, u16> {
        loop {
            match self.0.next_event().await {
                Event::Message { data, .. } => {
                    if &data[..] == b"{}" {
                        self.send("{}").await;
                        continue;
                    }
                    return Ok(serde_json::from_slice(&data).unwrap());
                }
                Event::Closed { code, .. } => return Err(code.0),
                Event::Failed(e) => panic!("{e}"),
                _ => {}
            }
        }
    }

    async fn connected(server: &TestServer, user: &str) -> Self {
        let mut c = Self::open(server).await;
        c.send(&format!(r#"{{"id":1,"connect":{{"token":"{}"}}}}"#, token(json!({"sub": user}))))
            .await;
        let r = c.next().await.unwrap();
        assert!(r["connect"]["client"].is_string(), "{r}");
        c
    }

    async fn subscribed(server: &TestServer, user: &str, channel: &str) -> Self {
        let mut c = Self::connected(server, user).await;
        c.send(&format!(r#"{{"id":2,"subscribe":{{"channel":"{channel}"}}}}"#)).await;
        let r = c.next().await.unwrap();
        assert!(r.get("subscribe").is_some(), "{r}");
        c
    }
}

async fn api(server: &TestServer, method: &str, key: Option<&str>, body: &str) -> (u16, String) {
    let auth = key.map(|k| format!("X-API-Key: {k}\r\n")).unwrap_or_default();
    let req = format!("POST /api/{method} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    let (status, _, body) = raw_http(server.addr, req.as_bytes()).await;
    (status, body)
}

/// A well-behaved subscriber running on its own task: it answers pings and hands over
/// what it receives.
struct Good(tokio::sync::mpsc::UnboundedReceiver<Result<Value, u16>>);

impl Good {
    async fn start(server: &TestServer) -> Self {
        let mut c = NodeClient::subscribed(server, "good", "news").await;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let r = c.next().await;
                let end = r.is_err();
                if tx.send(r).is_err() || end {
                    break;
                }
            }
        });
        Good(rx)
    }
}

/// Publishes through the API and checks that `good` receives it.
async fn still_served(server: &TestServer, good: &mut Good, n: u64) {
    let (status, body) = api(server, "publish", Some(KEY), &format!(r#"{{"channel":"news","data":{{"n":{n}}}}}"#)).await;
    assert_eq!(status, 200, "{body}");
    let push = tokio::time::timeout(LIMIT, good.0.recv())
        .await
        .expect("publication in time")
        .expect("good client task alive")
        .unwrap();
    assert_eq!(push["push"]["pub"]["data"]["n"], n, "{push}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_bad_inputs() {
    let server = node_server(json!({})).await;
    let mut good = Good::start(&server).await;
    let mut n = 0;

    // Command that does not decode: 3501.
    let mut c = NodeClient::open(&server).await;
    c.send("this is not json").await;
    assert_eq!(c.next().await, Err(3501));
    n += 1;
    still_served(&server, &mut good, n).await;

    // First command not connect: 3501.
    let mut c = NodeClient::open(&server).await;
    c.send(r#"{"id":1,"subscribe":{"channel":"news"}}"#).await;
    assert_eq!(c.next().await, Err(3501));

    // Invalid token: 3500. Expired token: error 109, connection kept.
    let mut c = NodeClient::open(&server).await;
    let forged = make_hs256("not-the-secret", &json!({"sub": "x"})).unwrap();
    c.send(&format!(r#"{{"id":1,"connect":{{"token":"{forged}"}}}}"#)).await;
    assert_eq!(c.next().await, Err(3500));
    let mut c = NodeClient::open(&server).await;
    c.send(&format!(
        r#"{{"id":1,"connect":{{"token":"{}"}}}}"#,
        token(json!({"sub": "x", "exp": 1000}))
    ))
    .await;
    assert_eq!(c.next().await.unwrap()["error"]["code"], 109);
    drop(c);
    n += 1;
    still_served(&server, &mut good, n).await;

    // Unknown namespace 102, no permission 103, bad channel 107.
    let mut c = NodeClient::connected(&server, "u").await;
    c.send(r#"{"id":2,"subscribe":{"channel":"nope:x"}}"#).await;
    assert_eq!(c.next().await.unwrap()["error"]["code"], 102);
    c.send(r#"{"id":3,"subscribe":{"channel":"private:x"}}"#).await;
    assert_eq!(c.next().await.unwrap()["error"]["code"], 103);
    c.send(r#"{"id":4,"subscribe":{"channel":""}}"#).await;
    assert_eq!(c.next().await.unwrap()["error"]["code"], 107);
    // A pong with no ping outstanding: 3501.
    c.send("{}").await;
    assert_eq!(c.next().await, Err(3501));

    // A binary frame on a JSON connection: 3506.
    let mut c = NodeClient::connected(&server, "u").await;
    c.0.send(MessageKind::Binary, b"\x00").await;
    assert_eq!(c.next().await, Err(3506));

    // Transport rows: over the size limit 1009, invalid UTF-8 1007.
    let mut c = NodeClient::connected(&server, "u").await;
    c.send(&"x".repeat(5000)).await;
    assert_eq!(c.next().await, Err(1009));
    let mut c = NodeClient::connected(&server, "u").await;
    c.0.send_raw(&masked_frame(0x81, &[b'{', 0xff, b'}'])).await;
    assert_eq!(c.next().await, Err(1007));
    n += 1;
    still_served(&server, &mut good, n).await;

    server.wait_connections(1).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_bad_inputs() {
    let server = node_server(json!({})).await;
    let mut good = Good::start(&server).await;
    let unauthorized = json!({"error": {"code": 401, "message": wshub_server::http::UNAUTHORIZED_API}}).to_string();
    assert_eq!(api(&server, "info", None, "{}").await, (401, unauthorized.clone()), "missing key");
    assert_eq!(api(&server, "info", Some("wrong"), "{}").await, (401, unauthorized), "wrong key");
    let (status, body) = api(&server, "publish", Some(KEY), "{not json").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = api(&server, "publish", Some(KEY), r#"{"channel": 5, "data": {}}"#).await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"]["code"], 107);
    let (_, body) = api(&server, "publish", Some(KEY), r#"{"channel": "news"}"#).await;
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"]["code"], 107, "no data");
    let (_, body) = api(&server, "publish", Some(KEY), r#"{"channel": "nope:x", "data": {}}"#).await;
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"]["code"], 102);
    let (_, body) = api(&server, "history", Some(KEY), r#"{"channel": "news"}"#).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["code"],
        108,
        "no history for this channel"
    );
    let (_, body) = api(&server, "disconnect", Some(KEY), r#"{"user": "good", "session": "s1"}"#).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["code"],
        107,
        "no sessions: refused, not widened"
    );
    let (_, body) = api(&server, "frobnicate", Some(KEY), "{}").await;
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"]["code"], 104);
    still_served(&server, &mut good, 1).await;
    // The other key header form.
    let req =
        format!("POST /api/info HTTP/1.1\r\nHost: x\r\nAuthorization: apikey {KEY}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}");
    let (status, _, body) = raw_http(server.addr, req.as_bytes()).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["result"]["nodes"][0]["num_clients"],
        1
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_and_missing_pong() {
    let server = node_server(json!({"client": {"stale_delay": "300ms", "ping_interval": "1s", "pong_timeout": "500ms"}})).await;
    let mut good = Good::start(&server).await;
    // Never sends connect: 3502.
    let mut stale = NodeClient::open(&server).await;
    assert_eq!(stale.next().await, Err(3502));
    // Connects but never answers pings: 3012.
    let mut c = NodeClient::connected(&server, "mute").await;
    let closed = loop {
        match c.0.next_event().await {
            Event::Closed { code, .. } => break code.0,
            Event::Message { data, .. } => assert_eq!(&data[..], b"{}", "only pings arrive"),
            _ => {}
        }
    };
    assert_eq!(closed, 3012);
    // The good client, answering pings, is still there.
    still_served(&server, &mut good, 1).await;
    server.wait_connections(1).await;
    server.stop().await;
}

/// Issue #11, the answers the official SDKs' own suites expect: `rpc` without a handler is
/// 108, an empty presence keeps its inner map, an invalid subscription token refuses that
/// subscription (103) and keeps the connection, a tags filter the namespace does not allow
/// is refused (107).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_the_sdks_expect() {
    let server = node_server(json!({"channel": {"namespaces": [
        {"name": "private"},
        {"name": "room", "presence": true, "allow_subscribe_for_client": true, "allow_presence_for_client": true}
    ]}}))
    .await;
    let mut good = Good::start(&server).await;
    let mut c = NodeClient::connected(&server, "u").await;
    c.send(r#"{"id":2,"rpc":{"method":"getCurrentYear"}}"#).await;
    assert_eq!(
        c.next().await.unwrap(),
        json!({"id":2,"error":{"code":108,"message":"not available"}})
    );
    let (status, body) = api(&server, "rpc", Some(KEY), r#"{"method":"getCurrentYear","params":{}}"#).await;
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).unwrap()["error"]["code"].clone()),
        (200, json!(108))
    );
    c.send(r#"{"id":3,"presence":{"channel":"room:empty"}}"#).await;
    assert_eq!(c.next().await.unwrap(), json!({"id":3,"presence":{"presence":{}}}));
    let forged = make_hs256("not-the-secret", &json!({"sub": "u", "channel": "private:x"})).unwrap();
    c.send(&format!(r#"{{"id":4,"subscribe":{{"channel":"private:x","token":"{forged}"}}}}"#))
        .await;
    assert_eq!(c.next().await.unwrap()["error"]["code"], 103);
    c.send(r#"{"id":5,"subscribe":{"channel":"news","tf":{"op":"","key":"ticker","cmp":"eq","val":"AAPL"}}}"#)
        .await;
    // A tags filter where the namespace does not allow one (`allow_tags_filter`): 107, as
    // Centrifugo answers.
    assert_eq!(c.next().await.unwrap()["error"]["code"], 107);
    // Still connected, and not subscribed to news: a publication there does not reach it.
    c.send(r#"{"id":6,"subscribe":{"channel":"room:1"}}"#).await;
    assert!(c.next().await.unwrap()["subscribe"].is_object());
    still_served(&server, &mut good, 1).await;
    let (_, body) = api(&server, "publish", Some(KEY), r#"{"channel":"room:1","data":{"to":"room"}}"#).await;
    assert!(body.contains("result"), "{body}");
    assert_eq!(
        c.next().await.unwrap()["push"]["pub"]["data"]["to"],
        "room",
        "news was filtered out, never delivered"
    );
    server.stop().await;
}

/// Issue #11, limits that a token or a frame of commands used to bypass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_for_tokens_replies_and_publications() {
    let server = node_server(json!({
        "client": {"queue_max_size": 262144},
        "websocket": {"message_size_limit": 65536},
        "channel": {"namespaces": [
            {"name": "private"},
            {"name": "hist", "history_size": 1000, "history_ttl": "300s", "allow_subscribe_for_client": true,
             "allow_history_for_client": true}
        ]}
    }))
    .await;
    let mut good = Good::start(&server).await;

    // A token listing more channels than client.channel_limit (128): error 106, nothing subscribed.
    let channels: Vec<String> = (0..129).map(|i| format!("c{i}")).collect();
    let mut c = NodeClient::open(&server).await;
    c.send(&format!(
        r#"{{"id":1,"connect":{{"token":"{}"}}}}"#,
        token(json!({"sub": "t", "channels": channels}))
    ))
    .await;
    assert_eq!(c.next().await.unwrap()["error"]["code"], 106);
    let (_, body) = api(&server, "channels", Some(KEY), "{}").await;
    assert!(!body.contains("c128"), "{body}");
    drop(c);

    // About 400 KB of history, then one frame of 1,000 history calls asking for everything:
    // closed with 3008 once the replies pass client.queue_max_size (it used to allocate
    // 1,000 copies of the history).
    let data = format!(r#""{}""#, "h".repeat(4000));
    for _ in 0..100 {
        let (status, body) = api(&server, "publish", Some(KEY), &format!(r#"{{"channel":"hist:big","data":{data}}}"#)).await;
        assert_eq!(status, 200, "{body}");
    }
    let mut c = NodeClient::connected(&server, "reader").await;
    c.send(r#"{"id":2,"history":{"channel":"hist:big","limit":10}}"#).await;
    assert_eq!(c.next().await.unwrap()["history"]["publications"].as_array().unwrap().len(), 10);
    let frame: Vec<String> = (10..1010)
        .map(|i| format!(r#"{{"id":{i},"history":{{"channel":"hist:big","limit":-1}}}}"#))
        .collect();
    c.send(&frame.join("\n")).await;
    assert_eq!(c.next().await, Err(3008));
    still_served(&server, &mut good, 1).await;

    // A publication no subscriber could receive: refused with 107 naming the limit, at the
    // API and at client publish; the subscribers of the channel stay connected.
    let big = format!(r#""{}""#, "x".repeat(300_000));
    let (status, body) = api(&server, "publish", Some(KEY), &format!(r#"{{"channel":"news","data":{big}}}"#)).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], 107, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("client.queue_max_size (262144 bytes)"),
        "{v}"
    );
    still_served(&server, &mut good, 2).await;
    server.wait_connections(1).await;
    server.stop().await;
}

/// Issue #11: pattern matching that used to be exponential (channels API) or quadratic
/// (the origin check, before authentication) answers at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversarial_patterns_answer_at_once() {
    let server = node_server(json!({"client": {"allowed_origins": ["https://*.*.example.org"]}})).await;
    let mut good = Good::start(&server).await;
    // Eight channels of 200 characters, with a subscriber each.
    let mut subs = Vec::new();
    for i in 0..8 {
        let ch = format!("{i}{}", "a".repeat(199));
        subs.push(NodeClient::subscribed(&server, "s", &ch).await);
    }
    // The recursive matcher ran for minutes on this; now every wait below is bounded by LIMIT.
    let (status, body) = api(&server, "channels", Some(KEY), r#"{"pattern":"*a*a*a*a*a*a*a*b"}"#).await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["result"]["channels"], json!({}));
    let (_, body) = api(&server, "channels", Some(KEY), r#"{"pattern":"3*a*a*a"}"#).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["result"]["channels"].as_object().unwrap().len(), 1, "{v}");
    let (_, body) = api(&server, "channels", Some(KEY), &format!(r#"{{"pattern":"{}"}}"#, "*a".repeat(300))).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["code"],
        107,
        "pattern too long"
    );
    still_served(&server, &mut good, 1).await;

    // A 200,000-character Origin (quadratic before: about a minute of CPU): 403 unmatched.
    let origin = format!("https://{}.org", "a.".repeat(100_000));
    let (status, _, _) = raw_http(server.addr, &upgrade_request("x", &format!("Origin: {origin}\r\n"))).await;
    assert_eq!(status, 403);
    let (status, _, _) = raw_http(server.addr, &upgrade_request("x", "Origin: https://app.eu.example.org\r\n")).await;
    assert_eq!(status, 101);
    still_served(&server, &mut good, 2).await;
    drop(subs);
    server.stop().await;
}

/// An API body sent one byte at a time is cut off after `http_api.body_timeout` with 408.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_body_too_slow() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = node_server(json!({"http_api": {"body_timeout": "500ms"}})).await;
    let mut good = Good::start(&server).await;
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!("POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Length: 1048576\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let (mut rd, mut wr) = s.into_split();
    // One byte every 0.5 s: a body that would take six days.
    let drip = tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
        loop {
            tick.tick().await;
            if wr.write_all(b" ").await.is_err() {
                break;
            }
        }
    });
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(LIMIT, rd.read(&mut chunk))
            .await
            .expect("an answer before the body is complete")
            .unwrap();
        assert!(n > 0, "closed without an answer");
        answer.extend_from_slice(&chunk[..n]);
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(400), "not before the timeout");
    drip.abort();
    still_served(&server, &mut good, 1).await;
    server.stop().await;
}

/// Peak resident memory of this process (`VmHWM`), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// A 15 MiB JSON array to `publish` is refused with 107, without building a JSON tree of
/// it (that cost +244 MB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_large_array_body() {
    let server = node_server(json!({})).await;
    let mut good = Good::start(&server).await;
    let mut body = String::with_capacity(15 << 20);
    body.push('[');
    while body.len() < (15 << 20) - 2 {
        body.push_str("0,");
    }
    body.push_str("0]");
    let req = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    drop(body);
    // Reset the peak to the current resident size (Linux: clear_refs "5").
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = peak_rss();
    let (status, _, answer) = raw_http(server.addr, req.as_bytes()).await;
    let grown = peak_rss().saturating_sub(before);
    println!("15 MiB array to publish: peak RSS +{} MB", grown >> 20);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(serde_json::from_str::<Value>(&answer).unwrap()["error"]["code"], 107, "{answer}");
    assert!(grown < 64 << 20, "peak RSS grew by {} MB", grown >> 20);
    still_served(&server, &mut good, 1).await;
    server.stop().await;
}

/// Reads everything the server sends until it closes the connection (within [`LIMIT`]).
async fn read_until_closed(s: &mut (impl tokio::io::AsyncRead + Unpin)) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    tokio::time::timeout(LIMIT, s.read_to_end(&mut out))
        .await
        .expect("the server closes the connection in time")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Sockets of the server on `port` that a process still holds a descriptor for: the
/// accepted connections (local port `port`, not listening) in `/proc/net/tcp` whose inode
/// is not 0 (a closed descriptor leaves an orphan with inode 0 until the peer closes). Per
/// server, so the tests running beside this one do not count.
fn server_sockets(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = f[1].rsplit_once(':').map(|(_, p)| u16::from_str_radix(p, 16).unwrap());
            local_port == Some(port) && f[3] != "0A" && f[9] != "0"
        })
        .count()
}

/// A body announced and never finished, on every endpoint that reads one (the admin login,
/// `/emulation`, an HTTP-streaming connect whose head comes in two pieces and whose body
/// trickles, the API), is answered 408 after `http_server.read_timeout` (or
/// `http_api.body_timeout`) and its connection closed: the server's descriptors come back
/// while the clients still hold theirs, and a subscriber is served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_everywhere_are_cut() {
    use tokio::io::AsyncWriteExt;
    const EACH: usize = 40;
    let server = node_server(json!({
        "http_server": {"read_timeout": "500ms"},
        "http_api": {"body_timeout": "500ms"},
        "http_stream": {"enabled": true},
        "admin": {"enabled": true, "password": "pw", "secret": "admin-secret"}
    }))
    .await;
    let mut good = Good::start(&server).await;
    let port = server.addr.port();
    assert_eq!(server_sockets(port), 1, "the measure sees the bystander's connection");
    let heads = [
        "POST /admin/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{".to_string(),
        "POST /emulation HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{".to_string(),
        format!("POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Length: 100\r\n\r\n{{"),
    ];
    let started = std::time::Instant::now();
    let mut clients = Vec::new();
    for head in &heads {
        for _ in 0..EACH {
            let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
            s.write_all(head.as_bytes()).await.unwrap();
            clients.push(s);
        }
    }
    // HTTP-streaming connects: the head in two writes, then the body one byte at a time
    // (a client that keeps sending, just too slowly, is cut as well).
    let mut readers: Vec<Box<dyn tokio::io::AsyncRead + Unpin + Send>> = clients
        .into_iter()
        .map(|c| Box::new(c) as Box<dyn tokio::io::AsyncRead + Unpin + Send>)
        .collect();
    let mut drips = Vec::new();
    for _ in 0..EACH {
        let s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let (rd, mut wr) = s.into_split();
        wr.write_all(b"POST /conn").await.unwrap();
        wr.flush().await.unwrap();
        wr.write_all(b"ection/http_stream HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
            .await
            .unwrap();
        drips.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
            loop {
                tick.tick().await;
                if wr.write_all(b" ").await.is_err() {
                    break;
                }
            }
        }));
        readers.push(Box::new(rd));
    }
    let total = readers.len();
    for (i, r) in readers.iter_mut().enumerate() {
        let answer = read_until_closed(r).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "client {i}: {answer}");
    }
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(400),
        "not before the deadline"
    );
    // Every connection is closed on the server's side while the test still holds its ends:
    // the server comes to hold the bystander's socket only (a task drops its socket just
    // after the close the client saw: polled, within LIMIT).
    let deadline = std::time::Instant::now() + LIMIT;
    while server_sockets(port) != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} server descriptors left of {total} slow bodies and the bystander",
            server_sockets(port)
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    still_served(&server, &mut good, 1).await;
    for d in drips {
        d.abort();
    }
    drop(readers);
    server.stop().await;
}

/// Request smuggling shapes (RFC 9112 §6): conflicting or malformed `Content-Length`,
/// `Transfer-Encoding` with `Content-Length`, a space before the colon, a folded header.
/// On the raw stream path (`POST /connection/http_stream`, read by hand) and on hyper's
/// (`POST /api/publish`) each is refused with 400 (411 for a chunked body the raw path does
/// not read) and the connection closed, nothing hidden in a body is run as a request of its
/// own, and the subscriber receives only the legitimate publication after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_shapes_refused_on_both_paths() {
    use tokio::io::AsyncWriteExt;
    let server = node_server(json!({"http_stream": {"enabled": true}})).await;
    let mut good = Good::start(&server).await;
    // Were any of these bodies taken for the request's end, what follows is a publication
    // to the subscriber's channel: `still_served` below would then see it first.
    let hidden = r#"{"channel":"news","data":{"smuggled":1}}"#;
    let smuggled = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Length: {}\r\n\r\n{hidden}",
        hidden.len()
    );
    let connect = r#"{"id":1,"connect":{}}"#;
    let publish = r#"{"channel":"elsewhere","data":{}}"#;
    let n = |b: &str| b.len();
    // (shape, framing headers for a body of `len` bytes, status on the raw path, on hyper's)
    type Shape = (&'static str, fn(usize) -> String, u16, u16);
    let shapes: [Shape; 10] = [
        (
            "two that differ",
            |l| format!("Content-Length: {l}\r\nContent-Length: {}\r\n", l + 5),
            400,
            400,
        ),
        ("plus sign", |l| format!("Content-Length: +{l}\r\n"), 400, 400),
        ("comma list", |l| format!("Content-Length: {l}, {l}\r\n"), 400, 400),
        ("negative", |_| "Content-Length: -1\r\n".to_string(), 400, 400),
        ("hexadecimal", |l| format!("Content-Length: 0x{l:x}\r\n"), 400, 400),
        ("space before colon", |l| format!("Content-Length : {l}\r\n"), 400, 400),
        ("folded", |l| format!("Content-Length: {l}\r\n 7\r\n"), 400, 400),
        (
            "TE then CL",
            |l| format!("Transfer-Encoding: chunked\r\nContent-Length: {l}\r\n"),
            400,
            200,
        ),
        (
            "CL then TE",
            |l| format!("Content-Length: {l}\r\nTransfer-Encoding: chunked\r\n"),
            400,
            200,
        ),
        ("TE not chunked", |_| "Transfer-Encoding: gzip\r\n".to_string(), 411, 400),
    ];
    for (name, framing, raw_status, hyper_status) in shapes {
        for (path, body, auth, want) in [
            ("/connection/http_stream", connect, String::new(), raw_status),
            ("/api/publish", publish, format!("X-API-Key: {KEY}\r\n"), hyper_status),
        ] {
            let chunked = framing(0).contains("chunked");
            // A chunked body for the shapes that say so (hyper frames by it), then the
            // smuggled request.
            let sent = if chunked {
                format!("{:x}\r\n{body}\r\n0\r\n\r\n{smuggled}", n(body))
            } else {
                format!("{body}{smuggled}")
            };
            let req = format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n{}\r\n{sent}",
                framing(n(body))
            );
            let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
            s.write_all(req.as_bytes()).await.unwrap();
            let answer = read_until_closed(&mut s).await;
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {want} ")),
                "{name} on {path}: expected {want}, got {answer:?}"
            );
            assert_eq!(
                answer.matches("HTTP/1.1 ").count(),
                1,
                "{name} on {path}: one answer only: {answer:?}"
            );
        }
    }
    still_served(&server, &mut good, 1).await;
    server.stop().await;
}

/// Expiry numbers at the edge of `u64` over real sockets: a connection token and a
/// subscription token with `exp` = 2^64−1, then the API `refresh` with `expire_at` =
/// 2^64−1. Before, each panicked the connection's task ("overflow when adding duration to
/// instant") and the client was dropped without a close frame; now the `ttl`s saturate at
/// `u32::MAX` and the connection keeps receiving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_expiry_numbers_keep_the_connection() {
    let server = node_server(json!({})).await;
    let mut good = Good::start(&server).await;
    let mut c = NodeClient::open(&server).await;
    let tok = token(json!({"sub": "edge", "exp": u64::MAX}));
    c.send(&format!(r#"{{"id":1,"connect":{{"token":"{tok}"}}}}"#)).await;
    let r = c.next().await.expect("connected, not dropped");
    assert_eq!(
        (r["connect"]["expires"].clone(), r["connect"]["ttl"].clone()),
        (json!(true), json!(u32::MAX)),
        "{r}"
    );
    let sub = token(json!({"sub": "edge", "channel": "private:edge", "exp": u64::MAX}));
    c.send(&format!(r#"{{"id":2,"subscribe":{{"channel":"private:edge","token":"{sub}"}}}}"#))
        .await;
    let r = c.next().await.expect("subscribed, not dropped");
    assert_eq!(r["subscribe"]["ttl"], json!(u32::MAX), "{r}");
    let (status, body) = api(
        &server,
        "refresh",
        Some(KEY),
        &format!(r#"{{"user":"edge","expire_at":{}}}"#, u64::MAX),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, r#"{"result":{}}"#));
    let r = c.next().await.expect("the refresh push, not a drop");
    assert_eq!(r["push"]["refresh"]["ttl"], json!(u32::MAX), "{r}");
    let (status, body) = api(
        &server,
        "publish",
        Some(KEY),
        r#"{"channel":"private:edge","data":{"still":"here"}}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let r = c.next().await.expect("the publication");
    assert_eq!(r["push"]["pub"]["data"]["still"], "here", "{r}");
    still_served(&server, &mut good, 1).await;
    server.stop().await;
}
