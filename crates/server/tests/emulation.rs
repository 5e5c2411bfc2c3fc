//! The HTTP transports over real sockets: an HTTP-streaming session whose `/emulation`
//! requests land on another node (two nodes on one redis-server, no stickiness), and bad
//! input on every endpoint (malformed connect, unknown session, oversized bodies, a client
//! that never reads its stream, origins), with the node serving everyone else.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use wshub_testkit::redis::RedisServer;

const KEY: &str = "emulation-key";

fn config(extra: Value) -> wshub_server::config::Config {
    node_config(
        json!({
            "http_api": {"key": KEY},
            "client": {"allow_anonymous_connect_without_token": true, "allowed_origins": ["http://app.example"], "token": {"hmac_secret_key": "s"}},
            "http_stream": {"enabled": true},
            "sse": {"enabled": true},
            "channel": {"without_namespace": {"allow_subscribe_for_client": true, "allow_subscribe_for_anonymous": true}}
        }),
        extra,
    )
}

/// A streamed response, read line by line as it arrives.
struct Stream {
    body: hyper::body::Incoming,
    buf: Vec<u8>,
}

impl Stream {
    async fn open(addr: SocketAddr, path: &str, method: &str, body: &str) -> (u16, Stream) {
        let io = TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let resp = tokio::time::timeout(LIMIT, send.send_request(req)).await.unwrap().unwrap();
        (
            resp.status().as_u16(),
            Stream {
                body: resp.into_body(),
                buf: Vec::new(),
            },
        )
    }

    /// The next line (without its newline); `None` at the end of the stream.
    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Some(String::from_utf8_lossy(&line[..i]).into_owned());
            }
            match tokio::time::timeout(LIMIT, self.body.frame())
                .await
                .expect("a line within the limit")
            {
                Some(Ok(f)) => {
                    if let Some(d) = f.data_ref() {
                        self.buf.extend_from_slice(d);
                    }
                }
                _ => return None,
            }
        }
    }

    async fn json(&mut self) -> Value {
        let l = self.line().await.expect("a reply");
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))
    }
}

/// One request on a fresh connection: status, headers, body.
async fn call(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, http::HeaderMap, String) {
    let io = TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let mut b = http::Request::builder().method(method).uri(path).header("host", addr.to_string());
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = tokio::time::timeout(LIMIT, send.send_request(b.body(Full::new(Bytes::from(body))).unwrap()))
        .await
        .unwrap()
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = tokio::time::timeout(LIMIT, resp.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

async fn emulate(addr: SocketAddr, session: &str, node: &str, commands: &str) -> u16 {
    let body = json!({"session": session, "node": node, "data": commands}).to_string();
    call(
        addr,
        "POST",
        "/emulation",
        &[("content-type", "application/json")],
        body.into_bytes(),
    )
    .await
    .0
}

async fn api(addr: SocketAddr, method: &str, body: Value) -> Value {
    let (status, _, text) = call(
        addr,
        "POST",
        &format!("/api/{method}"),
        &[("x-api-key", KEY)],
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulation_requests_reach_the_session_through_another_node() {
    let redis = RedisServer::start().await;
    let c = config(json!({"engine": {"type": "redis", "redis": {"address": redis.url()}}}));
    let a = TestServer::node(&c).await;
    let b = TestServer::node(&c).await;
    let (status, mut stream) = Stream::open(a.addr, "/connection/http_stream", "POST", r#"{"id":1,"connect":{}}"#).await;
    assert_eq!(status, 200);
    let connect = stream.json().await;
    let session = connect["connect"]["session"].as_str().unwrap().to_string();
    let node_uid = connect["connect"]["node"].as_str().unwrap().to_string();
    assert_eq!(session.len(), 32, "{connect}");
    assert_ne!(
        session,
        connect["connect"]["client"].as_str().unwrap(),
        "the session id is not the public client id"
    );
    // The subscribe goes to B, which does not hold the session: forwarded to A.
    assert_eq!(
        emulate(b.addr, &session, &node_uid, r#"{"id":2,"subscribe":{"channel":"news"}}"#).await,
        204
    );
    assert_eq!(stream.json().await, json!({"id": 2, "subscribe": {}}));
    api(b.addr, "publish", json!({"channel": "news", "data": {"n": 1}})).await;
    assert_eq!(stream.json().await["push"]["pub"]["data"], json!({"n": 1}));
    // Several commands in one request, one per line, answered in order.
    let cmds = "{\"id\":3,\"presence_stats\":{\"channel\":\"news\"}}\n{\"id\":4,\"unsubscribe\":{\"channel\":\"news\"}}";
    assert_eq!(emulate(b.addr, &session, &node_uid, cmds).await, 204);
    assert_eq!(stream.json().await["id"], 3);
    assert_eq!(stream.json().await, json!({"id": 4, "unsubscribe": {}}));
    // Unknown session on the node it names: 404; on another node, forwarded (and dropped there).
    assert_eq!(emulate(a.addr, "0123", &node_uid, r#"{"id":5,"presence":{}}"#).await, 404);
    drop(stream);
    // The stream's end ends the session: A's client count returns to 0.
    let deadline = Instant::now() + LIMIT;
    while a.shared.connections() > 0 {
        assert!(Instant::now() < deadline, "the session outlived its stream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_the_http_transports() {
    let server = TestServer::node(&config(
        json!({"client": {"queue_max_size": 65536}, "websocket": {"write_timeout": "500ms"}}),
    ))
    .await;
    let addr = server.addr;
    // A well-behaved client is served throughout.
    let (_, mut good) = Stream::open(addr, "/connection/http_stream", "POST", r#"{"id":1,"connect":{}}"#).await;
    let hello = good.json().await;
    let (session, node_uid) = (
        hello["connect"]["session"].as_str().unwrap().to_string(),
        hello["connect"]["node"].as_str().unwrap().to_string(),
    );
    assert_eq!(
        emulate(addr, &session, &node_uid, r#"{"id":2,"subscribe":{"channel":"good"}}"#).await,
        204
    );
    good.json().await;
    let mut n = 0;
    let mut still_served = async |good: &mut Stream| {
        n += 1;
        api(addr, "publish", json!({"channel": "good", "data": {"n": n}})).await;
        assert_eq!(good.json().await["push"]["pub"]["data"]["n"], n);
    };

    // A connect that is not JSON: told why (a disconnect push), then the stream ends.
    let (status, mut s) = Stream::open(addr, "/connection/http_stream", "POST", "{nope").await;
    assert_eq!(status, 200);
    assert_eq!(s.json().await["push"]["disconnect"]["code"], 3501);
    assert_eq!(s.line().await, None);
    // No connect at all; a body over the limit; the wrong method.
    assert_eq!(call(addr, "POST", "/connection/http_stream", &[], vec![]).await.0, 400);
    assert_eq!(call(addr, "POST", "/connection/http_stream", &[], vec![b' '; 70_000]).await.0, 413);
    assert_eq!(call(addr, "GET", "/connection/http_stream", &[], vec![]).await.0, 405);
    // SSE: no cf_connect, a broken escape, a connect that is not a connect.
    assert_eq!(call(addr, "GET", "/connection/sse", &[], vec![]).await.0, 400);
    assert_eq!(call(addr, "GET", "/connection/sse?cf_connect=%zz", &[], vec![]).await.0, 400);
    let (status, mut sse) = Stream::open(
        addr,
        "/connection/sse?cf_connect=%7B%22id%22%3A1%2C%22presence%22%3A%7B%7D%7D",
        "GET",
        "",
    )
    .await;
    assert_eq!(status, 200);
    let first = sse.line().await.unwrap();
    assert!(first.starts_with("data: ") && first.contains("disconnect"), "{first}");
    still_served(&mut good).await;

    // /emulation: not JSON, no session, too large, unknown session, the wrong method.
    let json_ct = [("content-type", "application/json")];
    assert_eq!(call(addr, "POST", "/emulation", &json_ct, b"{".to_vec()).await.0, 400);
    assert_eq!(
        call(addr, "POST", "/emulation", &json_ct, br#"{"data":"{}"}"#.to_vec()).await.0,
        400
    );
    assert_eq!(call(addr, "POST", "/emulation", &json_ct, vec![b' '; 70_000]).await.0, 413);
    assert_eq!(emulate(addr, "no-such-session", "", "{}").await, 404);
    assert_eq!(call(addr, "GET", "/emulation", &[], vec![]).await.0, 405);
    // Garbage commands for a real session end that session, not the node.
    let (_, mut victim) = Stream::open(addr, "/connection/http_stream", "POST", r#"{"id":1,"connect":{}}"#).await;
    let v = victim.json().await;
    assert_eq!(
        emulate(addr, v["connect"]["session"].as_str().unwrap(), &node_uid, "{garbage").await,
        204
    );
    assert_eq!(victim.json().await["push"]["disconnect"]["code"], 3501);
    assert_eq!(victim.line().await, None);
    still_served(&mut good).await;

    // Origins: a listed one gets CORS headers with credentials; a preflight is answered;
    // an unlisted one is refused.
    let (status, h, _) = call(
        addr,
        "OPTIONS",
        "/emulation",
        &[("origin", "http://app.example"), ("access-control-request-headers", "content-type")],
        vec![],
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(h["access-control-allow-origin"], "http://app.example");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert!(h["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    let (status, _, body) = call(
        addr,
        "POST",
        "/connection/http_stream",
        &[("origin", "http://evil.example")],
        br#"{"id":1,"connect":{}}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 403);
    assert!(body.contains("client.allowed_origins"), "{body}");
    assert_eq!(
        call(addr, "OPTIONS", "/emulation", &[("origin", "http://evil.example")], vec![])
            .await
            .0,
        403
    );

    // A client that never reads its stream: the node drops it (its queue is bounded by
    // client.queue_max_size, its writes by websocket.write_timeout) and serves the others.
    let baseline = server.shared.connections();
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    let jwt = wshub_core::token::make_hs256("s", &json!({"sub": "silent"})).unwrap();
    let connect = json!({"id": 1, "connect": {"token": jwt}}).to_string();
    let req = format!(
        "POST /connection/http_stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{connect}",
        connect.len()
    );
    raw.write_all(req.as_bytes()).await.unwrap();
    let deadline = Instant::now() + LIMIT;
    while server.shared.connections() <= baseline {
        assert!(Instant::now() < deadline, "the silent client's stream did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Connected (it has not read its connect reply, but the node holds its session).
    let deadline = Instant::now() + LIMIT;
    while api(addr, "connections", json!({"user": "silent"})).await["result"]["connections"]
        .as_object()
        .unwrap()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the silent client did not connect");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let conns = api(addr, "connections", json!({"user": "silent"})).await;
    let (_, conn) = conns["result"]["connections"].as_object().unwrap().iter().next().unwrap();
    assert_eq!(conn["transport"], "http_stream", "{conns}");
    // It cannot subscribe without reading its session id: the server subscribes it.
    let big = "x".repeat(8000);
    let deadline = Instant::now() + LIMIT;
    let mut sent = 0;
    while server.shared.connections() > baseline {
        assert!(
            Instant::now() < deadline,
            "a client that never reads was kept after {sent} publications"
        );
        api(addr, "subscribe", json!({"user": "silent", "channel": "flood"})).await;
        for _ in 0..50 {
            api(addr, "publish", json!({"channel": "flood", "data": {"big": big}})).await;
            sent += 1;
        }
    }
    assert!(sent >= 50, "dropped before any flood: {sent}");
    drop(raw);
    still_served(&mut good).await;
    drop(good);
    server.stop().await;
}

/// Reads lines from a `curl -sN` child as they come, bounded by [`LIMIT`].
struct Curl {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Curl {
    fn start(args: &[&str]) -> Curl {
        let mut child = tokio::process::Command::new("curl")
            .arg("-sN")
            .args(args)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("curl not found ({e}): apt-get install -y curl"));
        let out = child.stdout.take().unwrap();
        Curl {
            child,
            lines: tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(out)),
        }
    }

    async fn line(&mut self) -> Option<String> {
        tokio::time::timeout(LIMIT, self.lines.next_line())
            .await
            .expect("a line within the limit")
            .unwrap()
    }

    /// The next non-empty line, as JSON (after `data: ` for SSE).
    async fn json(&mut self) -> Value {
        loop {
            let l = self.line().await.expect("a line");
            let l = l.strip_prefix("data: ").unwrap_or(&l).trim().to_string();
            if !l.is_empty() {
                return serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unidirectional_http_stream_and_sse_with_curl() {
    let server = TestServer::node(&config(json!({"uni_http_stream": {"enabled": true}, "uni_sse": {"enabled": true}}))).await;
    let addr = server.addr;
    let jwt = wshub_core::token::make_hs256("s", &json!({"sub": "alice", "channels": ["news"]})).unwrap();
    // uni_http_stream: the connect request is the body; pushes come bare, one per line.
    let body = json!({"token": jwt}).to_string();
    let mut stream = Curl::start(&["-X", "POST", "-d", &body, &format!("http://{addr}/connection/uni_http_stream")]);
    let connect = stream.json().await;
    assert!(connect["connect"]["client"].is_string(), "{connect}");
    assert!(
        connect["connect"]["subs"]["news"].is_object(),
        "server-side subscription from the token: {connect}"
    );
    assert!(
        connect["connect"].get("pong").is_none(),
        "a unidirectional client is not asked to pong: {connect}"
    );
    // uni_sse: the connect request in cf_connect.
    let q: String = json!({"token": jwt}).to_string().bytes().map(|b| format!("%{b:02X}")).collect();
    let mut sse = Curl::start(&[&format!("http://{addr}/connection/uni_sse?cf_connect={q}")]);
    assert!(sse.json().await["connect"]["subs"]["news"].is_object());
    api(addr, "publish", json!({"channel": "news", "data": {"n": 1}})).await;
    for c in [&mut stream, &mut sse] {
        let p = c.json().await;
        assert_eq!(p, json!({"channel": "news", "pub": {"data": {"n": 1}}}), "a bare push");
    }
    // A bad token: told with a disconnect push, and the stream ends.
    let mut bad = Curl::start(&[
        "-X",
        "POST",
        "-d",
        r#"{"token": "nope"}"#,
        &format!("http://{addr}/connection/uni_http_stream"),
    ]);
    assert_eq!(bad.json().await["disconnect"]["code"], 3500);
    assert_eq!(bad.line().await, None);
    let _ = bad.child.wait().await;
    // Centrifugo's series count the HTTP transports too (at least: the recorder is the
    // process's, shared with this file's other tests).
    let (status, _, metrics) = call(addr, "GET", "/metrics", &[], vec![]).await;
    assert_eq!(status, 200);
    let at_least = |series: &str, n: f64| {
        let v: f64 = metrics
            .lines()
            .filter_map(|l| l.rsplit_once(' ').filter(|(s, _)| *s == series))
            .filter_map(|(_, v)| v.parse::<f64>().ok())
            .sum();
        assert!(v >= n, "{series} = {v} < {n} in:\n{metrics}");
    };
    for transport in ["uni_http_stream", "uni_sse"] {
        at_least(
            &format!("centrifugo_client_connections_accepted{{transport=\"{transport}\",accept_protocol=\"\",client_name=\"\",client_version=\"\"}}"),
            1.0,
        );
        // The connect reply and the publication.
        at_least(&format!("centrifugo_transport_messages_sent{{transport=\"{transport}\"}}"), 2.0);
        at_least(&format!("centrifugo_transport_messages_received{{transport=\"{transport}\"}}"), 1.0);
    }
    at_least("centrifugo_client_num_server_disconnects{code=\"3500\"}", 1.0);
    // Not a connect request; the wrong method.
    let json_ct = [("content-type", "application/json")];
    assert_eq!(
        call(addr, "POST", "/connection/uni_http_stream", &json_ct, b"[1]".to_vec()).await.0,
        400
    );
    assert_eq!(call(addr, "GET", "/connection/uni_http_stream", &[], vec![]).await.0, 405);
    assert_eq!(call(addr, "GET", "/connection/uni_sse?cf_connect=%7B", &[], vec![]).await.0, 400);
    drop(stream);
    drop(sse);
    server.stop().await;
}

async fn ws_json(c: &mut Client) -> Value {
    loop {
        match c.next_event().await {
            wshub_websocket::Event::Message {
                kind: wshub_websocket::MessageKind::Text,
                data,
            } => {
                return serde_json::from_slice(&data).unwrap_or_else(|e| panic!("not JSON ({e}): {data:?}"));
            }
            wshub_websocket::Event::Ping(_) | wshub_websocket::Event::Pong(_) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unidirectional_websocket_with_a_raw_client() {
    let server = TestServer::node(&config(json!({"uni_websocket": {"enabled": true}}))).await;
    let addr = server.addr;
    let jwt = wshub_core::token::make_hs256("s", &json!({"sub": "alice", "channels": ["news"]})).unwrap();
    let mut c = Client::connect(addr, "/connection/uni_websocket", &[], None).await;
    c.send(wshub_websocket::MessageKind::Text, json!({"token": jwt}).to_string().as_bytes())
        .await;
    let connect = ws_json(&mut c).await;
    assert!(connect["connect"]["subs"]["news"].is_object(), "{connect}");
    api(addr, "publish", json!({"channel": "news", "data": {"n": 1}})).await;
    assert_eq!(ws_json(&mut c).await, json!({"channel": "news", "pub": {"data": {"n": 1}}}));
    api(addr, "publish", json!({"channel": "news", "data": {"n": 2}})).await;
    assert_eq!(ws_json(&mut c).await["pub"]["data"]["n"], 2);
    // Anything after the connect request is read and ignored, as Centrifugo does: not a
    // command (no subscribe to x, no publish), not a reason to close.
    c.send(wshub_websocket::MessageKind::Text, br#"{"id":2,"subscribe":{"channel":"x"}}"#)
        .await;
    c.send(
        wshub_websocket::MessageKind::Text,
        br#"{"id":3,"publish":{"channel":"news","data":{"n":0}}}"#,
    )
    .await;
    c.send(wshub_websocket::MessageKind::Text, b"not even JSON").await;
    api(addr, "publish", json!({"channel": "news", "data": {"n": 3}})).await;
    assert_eq!(
        ws_json(&mut c).await,
        json!({"channel": "news", "pub": {"data": {"n": 3}}}),
        "still open, and the client's publish (n = 0) was not made"
    );
    // A connect request that is not an object; a bad token.
    let mut bad = Client::connect(addr, "/connection/uni_websocket", &[], None).await;
    bad.send(wshub_websocket::MessageKind::Text, b"[]").await;
    assert_eq!(bad.expect_close().await, 3501);
    let mut bad = Client::connect(addr, "/connection/uni_websocket", &[], None).await;
    bad.send(wshub_websocket::MessageKind::Text, br#"{"token":"nope"}"#).await;
    assert_eq!(bad.expect_close().await, 3500, "a WebSocket says it with its close code");
    server.stop().await;
}

/// The drain closes every transport's clients alike: a `disconnect` push with 3001 on the
/// HTTP streams (bidirectional and unidirectional), the close code 3001 on WebSocket; and
/// nothing is left open when the node stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_closes_every_transport_with_3001() {
    let c = config(json!({"uni_http_stream": {"enabled": true}, "uni_sse": {"enabled": true}, "uni_websocket": {"enabled": true}}));
    let (node, sc) = wshub_server::app::build(&c).unwrap();
    let listener = wshub_server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shared = wshub_server::Shared::new(sc);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let drain = wshub_server::lifecycle::Drain {
        node,
        timeout: Duration::from_secs(5),
        window: Duration::from_millis(200),
    };
    let run = tokio::spawn(wshub_server::lifecycle::run(listener, None, shared.clone(), Some(drain), async {
        let _ = stopped.await;
    }));
    let (_, mut hs) = Stream::open(addr, "/connection/http_stream", "POST", r#"{"id":1,"connect":{}}"#).await;
    assert!(hs.json().await["connect"]["session"].is_string());
    let (_, mut sse) = Stream::open(
        addr,
        "/connection/sse?cf_connect=%7B%22id%22%3A1%2C%22connect%22%3A%7B%7D%7D",
        "GET",
        "",
    )
    .await;
    assert!(sse.line().await.unwrap().contains("connect"));
    let (_, mut uni) = Stream::open(addr, "/connection/uni_http_stream", "POST", "{}").await;
    assert!(uni.json().await["connect"].is_object());
    let (_, mut uni_sse) = Stream::open(addr, "/connection/uni_sse", "POST", "{}").await;
    assert!(uni_sse.line().await.unwrap().contains("connect"));
    let mut ws = Client::connect(addr, "/connection/websocket", &[], None).await;
    ws.send(wshub_websocket::MessageKind::Text, br#"{"id":1,"connect":{}}"#).await;
    assert!(ws_json(&mut ws).await["connect"].is_object());
    let mut uni_ws = Client::connect(addr, "/connection/uni_websocket", &[], None).await;
    uni_ws.send(wshub_websocket::MessageKind::Text, b"{}").await;
    assert!(ws_json(&mut uni_ws).await["connect"].is_object());
    assert_eq!(shared.connections(), 6);

    stop.send(()).unwrap();
    assert_eq!(hs.json().await["push"]["disconnect"]["code"], 3001);
    assert_eq!(hs.line().await, None, "then the stream ends");
    let l = loop {
        let l = sse.line().await.unwrap();
        if !l.is_empty() {
            break l;
        }
    };
    assert!(l.starts_with("data: ") && l.contains(r#""disconnect":{"code":3001"#), "{l}");
    assert_eq!(uni.json().await["disconnect"]["code"], 3001);
    let l = loop {
        let l = uni_sse.line().await.unwrap();
        if !l.is_empty() {
            break l;
        }
    };
    assert!(l.contains(r#"{"disconnect":{"code":3001"#), "{l}");
    assert_eq!(ws.expect_close().await, 3001);
    assert_eq!(uni_ws.expect_close().await, 3001);
    let left = tokio::time::timeout(LIMIT, run).await.unwrap().unwrap();
    assert_eq!(left, 0, "nothing left open");
}

/// Centrifugo's connect error transforms: `client.connect_code_to_unidirectional_disconnect`
/// picks the disconnect a refused unidirectional connect closes with, and
/// `connect_code_to_http_response` answers a refused `uni_http_stream` / `uni_sse` connect
/// with an HTTP status and body instead of a stream (500 for a code it does not list).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unidirectional_connect_error_transforms() {
    let to_http = |code: u32, to: Value| json!({"enabled": true, "transforms": [{"code": code, "to": to}]});
    let server = TestServer::node(&config(json!({
        "client": {"connect_code_to_unidirectional_disconnect": {"enabled": true, "transforms": [
            {"code": 109, "to": {"code": 4509, "reason": "renew your token"}}
        ]}},
        "uni_websocket": {"enabled": true},
        "uni_http_stream": {"enabled": true, "connect_code_to_http_response": to_http(3500, json!({"status_code": 401}))},
        "uni_sse": {"enabled": true, "connect_code_to_http_response": to_http(109, json!({"status_code": 403, "body": "renew"}))},
    })))
    .await;
    let addr = server.addr;
    let expired = wshub_core::token::make_hs256("s", &json!({"sub": "alice", "exp": 1000})).unwrap();
    let connect = |token: &str| json!({ "token": token }).to_string().into_bytes();
    let post = |path: &'static str, body: Vec<u8>| call(addr, "POST", path, &[], body);
    // The body defaults to the refusal's own message.
    let (status, _, body) = post("/connection/uni_http_stream", connect("nope")).await;
    assert_eq!((status, body.as_str()), (401, "invalid token"));
    let (status, _, body) = post("/connection/uni_http_stream", connect(&expired)).await;
    assert_eq!((status, body.as_str()), (500, "Internal Server Error"), "109 is not listed here");
    let (status, _, body) = post("/connection/uni_sse", connect(&expired)).await;
    assert_eq!((status, body.as_str()), (403, "renew"));
    let q: String = connect("nope").iter().map(|b| format!("%{b:02X}")).collect();
    let (status, _, _) = call(addr, "GET", &format!("/connection/uni_sse?cf_connect={q}"), &[], vec![]).await;
    assert_eq!(status, 500, "3500 is not listed for uni_sse");
    // An accepted connect still streams.
    let (status, mut ok) = Stream::open(addr, "/connection/uni_http_stream", "POST", "{}").await;
    assert_eq!(status, 200);
    assert!(ok.json().await["connect"]["client"].is_string());
    // The disconnect transform: on uni_websocket a disconnect push, then the close frame.
    let mut ws = Client::connect(addr, "/connection/uni_websocket", &[], None).await;
    ws.send(wshub_websocket::MessageKind::Text, &connect(&expired)).await;
    assert_eq!(
        ws_json(&mut ws).await,
        json!({"disconnect": {"code": 4509, "reason": "renew your token"}})
    );
    assert_eq!(ws.expect_close().await, 4509);
    drop(ok);
    server.stop().await;

    // Without transforms: centrifuge's table (an expired token: 3005, which clients
    // reconnect after), on the stream as a disconnect push that ends it.
    let server = TestServer::node(&config(json!({"uni_http_stream": {"enabled": true}}))).await;
    let (status, _, body) = call(server.addr, "POST", "/connection/uni_http_stream", &[], connect(&expired)).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(v, json!({"disconnect": {"code": 3005, "reason": "connection expired"}}));
    server.stop().await;
}

/// `uni_websocket.*` are the endpoint's own: compression and the message size limit apart
/// from `websocket.*`'s, a `disconnect` push before the close frame unless
/// `disable_disconnect_push`, no close frame with `disable_closing_handshake`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unidirectional_websocket_options() {
    use wshub_websocket::{DeflateConfig, MessageKind};
    let deflate = Some(DeflateConfig { level: 1, min_size: 0 });
    let server = TestServer::node(&config(json!({
        "uni_websocket": {"enabled": true, "compression": true, "message_size_limit": 256}
    })))
    .await;
    let addr = server.addr;
    let ws = Client::connect(addr, "/connection/websocket", &[], deflate).await;
    assert!(ws.conn.deflate().is_none(), "websocket.compression is off");
    let mut uni = Client::connect(addr, "/connection/uni_websocket", &[], deflate).await;
    assert!(uni.conn.deflate().is_some(), "uni_websocket.compression is on");
    uni.send(MessageKind::Text, b"{}").await;
    assert!(ws_json(&mut uni).await["connect"].is_object(), "compressed pushes read back");
    let mut big = Client::connect(addr, "/connection/uni_websocket", &[], None).await;
    let token = "x".repeat(300);
    big.send(MessageKind::Text, json!({ "token": token }).to_string().as_bytes()).await;
    assert_eq!(big.expect_close().await, 1009, "over uni_websocket.message_size_limit");
    let mut bad = Client::connect(addr, "/connection/uni_websocket", &[], None).await;
    bad.send(MessageKind::Text, br#"{"token":"nope"}"#).await;
    assert_eq!(
        ws_json(&mut bad).await,
        json!({"disconnect": {"code": 3500, "reason": "invalid token"}})
    );
    assert_eq!(bad.expect_close().await, 3500);
    drop((ws, uni));
    server.stop().await;

    let server = TestServer::node(&config(json!({
        "uni_websocket": {"enabled": true, "disable_disconnect_push": true, "disable_closing_handshake": true}
    })))
    .await;
    let mut bad = Client::connect(server.addr, "/connection/uni_websocket", &[], None).await;
    bad.send(MessageKind::Text, br#"{"token":"nope"}"#).await;
    match bad.next_event().await {
        wshub_websocket::Event::Closed { code, .. } => assert_eq!(code.0, 1006, "no close frame: the socket just ends"),
        other => panic!("expected the end of the connection, got {other:?}"),
    }
    server.stop().await;
}
