//! The drain in-process ([`wshub_server::lifecycle::run`]): with the memory engine, a
//! publication during the drain is refused with 503 (its subscribers are being closed),
//! and every publication acknowledged with 200 reaches the subscriber before its 3001.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use common::*;
use serde_json::{json, Value};
use wshub_server::lifecycle::{run, Drain};
use wshub_websocket::{Event, MessageKind};

const SECRET: &str = "lifecycle-test-secret";
const KEY: &str = "lifecycle-test-key";

/// `POST /api/{method}` on a new connection: status and JSON body, or `None` when the
/// node no longer listens.
async fn try_api(addr: SocketAddr, method: &str, body: &str) -> Option<(u16, Value)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!(
        "POST /api/{method} HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    tokio::time::timeout(LIMIT, s.read_to_end(&mut answer)).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&answer);
    let status = text.get(9..12)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// During the drain a kept-alive HTTP connection is answered with `Connection: close` and
/// closed, so that no later request on it is cut when the node stops listening.
async fn kept_alive_request_is_closed(addr: SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    // Read to the end: the server closes (before this change it kept the connection open
    // and the read ran into the limit).
    tokio::time::timeout(LIMIT, s.read_to_end(&mut answer))
        .await
        .expect("connection closed after the answer")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(
        answer.starts_with("http/1.1 200") && answer.contains("connection: close"),
        "{answer}"
    );
}

/// The next protocol messages (several may share a frame, one a line) as a JSON array,
/// answering pings on the way; or the close code.
async fn next(c: &mut Client) -> Result<Value, u16> {
    loop {
        match c.next_event().await {
            Event::Message { data, .. } if &data[..] == b"{}" => c.send(MessageKind::Text, b"{}").await,
            Event::Message { data, .. } => {
                return Ok(Value::Array(
                    serde_json::Deserializer::from_slice(&data)
                        .into_iter::<Value>()
                        .map(|v| v.unwrap())
                        .collect(),
                ))
            }
            Event::Closed { code, .. } => return Err(code.0),
            Event::Failed(e) => panic!("{e}"),
            _ => {}
        }
    }
}

/// A subscriber of `news` on its own task: hands over each publication's `n`, then its
/// close code.
async fn subscriber(addr: SocketAddr) -> tokio::sync::mpsc::UnboundedReceiver<Result<u64, u16>> {
    let mut c = Client::connect(addr, "/connection/websocket", &[], None).await;
    let token = wshub_core::token::make_hs256(SECRET, &json!({"sub": "sub"})).unwrap();
    c.send_connect(&token).await;
    let r: Vec<Value> = serde_json::from_value(next(&mut c).await.unwrap()).unwrap();
    assert!(r[0]["connect"]["client"].is_string(), "{r:?}");
    c.send(MessageKind::Text, br#"{"id":2,"subscribe":{"channel":"news"}}"#).await;
    let r: Vec<Value> = serde_json::from_value(next(&mut c).await.unwrap()).unwrap();
    assert!(r[0].get("subscribe").is_some(), "{r:?}");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match next(&mut c).await {
                Ok(Value::Array(msgs)) => {
                    for m in msgs {
                        let _ = tx.send(Ok(m["push"]["pub"]["data"]["n"].as_u64().unwrap()));
                    }
                }
                Ok(other) => panic!("{other}"),
                Err(code) => {
                    let _ = tx.send(Err(code));
                    break;
                }
            }
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_engine_refuses_publications_during_the_drain_and_delivers_every_acknowledged_one() {
    let config = node_config(
        json!({
            "http_api": {"key": KEY},
            "client": {"token": {"hmac_secret_key": SECRET}},
            "channel": {"without_namespace": {"allow_subscribe_for_client": true}},
            "shutdown": {"timeout": "3s", "drain_window": "500ms"},
        }),
        json!({}),
    );
    let (node, sc) = wshub_server::app::build(&config).unwrap();
    let listener = wshub_server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shared = wshub_server::Shared::new(sc);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let drain = Drain {
        node,
        timeout: config.shutdown.timeout,
        window: config.shutdown.drain_window,
    };
    let server = tokio::spawn(run(listener, None, shared.clone(), Some(drain), async {
        let _ = stopped.await;
    }));
    let mut sub = subscriber(addr).await;

    let mut acked = BTreeSet::new();
    let mut refused = BTreeSet::new();
    let mut received = BTreeSet::new();
    let mut closed = None;
    let mut stop = Some(stop);
    let deadline = tokio::time::Instant::now() + LIMIT;
    // Publish n = 1, 2, ... one after another; the drain starts after 20 acknowledged. Go on
    // until the subscriber is closed and a few more publications were tried after that.
    let mut after_close = 0;
    for n in 1u64.. {
        assert!(tokio::time::Instant::now() < deadline, "publications went on too long");
        let Some((status, body)) = try_api(addr, "publish", &json!({"channel": "news", "data": {"n": n}}).to_string()).await else {
            // The drain is over (its only connection closed) and the node stopped
            // listening: nothing more can be published here, refused or not. The close
            // may still be on its way to the subscriber's reader.
            while closed.is_none() {
                match tokio::time::timeout(LIMIT, sub.recv()).await.unwrap() {
                    Some(Ok(m)) => {
                        received.insert(m);
                    }
                    Some(Err(code)) => closed = Some(code),
                    None => break,
                }
            }
            assert!(closed.is_some(), "the node stopped listening before closing its subscriber");
            break;
        };
        match status {
            200 => {
                acked.insert(n);
            }
            503 => {
                assert_eq!(body["error"]["code"], 108, "{body}");
                assert_eq!(body["error"]["message"], "node is draining: publish to another node");
                if refused.is_empty() {
                    kept_alive_request_is_closed(addr).await;
                }
                refused.insert(n);
            }
            other => panic!("publish answered {other}: {body}"),
        }
        if acked.len() == 20 {
            if let Some(s) = stop.take() {
                s.send(()).unwrap();
            }
        }
        while let Ok(r) = sub.try_recv() {
            match r {
                Ok(m) => {
                    received.insert(m);
                }
                Err(code) => closed = Some(code),
            }
        }
        if closed.is_some() {
            after_close += 1;
            if after_close == 5 {
                break;
            }
        }
    }
    // Whatever is still on its way to the subscriber.
    while let Some(r) = tokio::time::timeout(LIMIT, sub.recv()).await.unwrap() {
        match r {
            Ok(m) => {
                received.insert(m);
            }
            Err(code) => closed = Some(code),
        }
    }
    assert_eq!(closed, Some(3001), "the subscriber is closed with 3001");
    let lost: Vec<_> = acked.difference(&received).collect();
    assert!(lost.is_empty(), "acknowledged with 200 but never delivered: {lost:?}");
    assert!(
        received.is_subset(&acked),
        "delivered but refused: {:?}",
        received.difference(&acked).collect::<Vec<_>>()
    );
    assert!(!refused.is_empty(), "no publication was refused during the drain");
    println!(
        "{} acknowledged and delivered, {} refused with 503 during the drain",
        acked.len(),
        refused.len()
    );
    let left = tokio::time::timeout(LIMIT, server).await.unwrap().unwrap();
    assert_eq!(left, 0);
    assert!(!shared.is_ready());
}
