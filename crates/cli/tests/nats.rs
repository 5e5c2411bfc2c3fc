//! Two `wshub serve` processes on one Debian `nats-server` (`broker.type = "nats"`): a
//! publication through one node's API reaches a client of the other, `info` lists both nodes,
//! and a `disconnect` sent to one closes the user's connection on the other. A namespace with
//! history on this broker, and a NATS that does not answer, stop the start with a message
//! naming the key.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{api, event_within, serial, Node, LIMIT};
use serde_json::json;
use wshub_client::{Client, ClientConfig, ClientEvent};
use wshub_testkit::nats::NatsServer;

const SECRET: &str = "nats-test";

fn config(url: &str, prefix: &str) -> serde_json::Value {
    json!({
        "http_api": {"key": common::API_KEY},
        "client": {"token": {"hmac_secret_key": SECRET}},
        "broker": {"enabled": true, "type": "nats", "nats": {"url": url, "prefix": prefix}},
        "channel": {"namespaces": [{"name": "room", "allow_subscribe_for_client": true}]}
    })
}

fn client(port: u16, user: &str) -> (Client, wshub_client::Events) {
    let config = ClientConfig {
        token: wshub_testkit::token(SECRET, &json!({"sub": user})),
        ..Default::default()
    };
    let (c, events) = Client::start(&format!("ws://127.0.0.1:{port}/connection/websocket"), config).unwrap();
    c.connect();
    (c, events)
}

#[test]
fn two_nodes_share_publications_and_control_over_nats() {
    serial(async {
        let nats = NatsServer::start().await;
        let dir = common::temp_dir("nats-cluster");
        let cfg = config(&nats.url(), &format!("t{}", common::unique()));
        let a = Node::start(&dir, &cfg, common::free_port()).await;
        let b = Node::start(&dir, &cfg, common::free_port()).await;

        // A client of b; publications through a's API.
        let (reader, mut events) = client(b.port, "reader");
        reader.subscribe("room:lobby", false);
        let subscribed = event_within(&mut events, LIMIT, |e| matches!(e, ClientEvent::Subscribed { .. })).await;
        assert!(subscribed.is_some(), "not subscribed on b: {}", b.log());
        for i in 0..3 {
            let (status, r) = api(a.port, "publish", &json!({"channel": "room:lobby", "data": {"n": i}}))
                .await
                .unwrap();
            assert_eq!(status, 200, "{r}");
            assert!(r.get("error").is_none(), "{r}");
        }
        let mut got = Vec::new();
        while got.len() < 3 {
            let e = event_within(&mut events, LIMIT, |e| matches!(e, ClientEvent::Publication { .. })).await;
            let Some(ClientEvent::Publication { data, offset, .. }) = e else {
                panic!("publication {} of 3 not received on b: {}", got.len(), b.log());
            };
            got.push((serde_json::from_slice::<serde_json::Value>(&data).unwrap(), offset));
        }
        assert_eq!(
            got,
            (0..3).map(|i| (json!({"n": i}), 0)).collect::<Vec<_>>(),
            "in order, no offsets"
        );

        // Node discovery over NATS: either node's info lists both.
        let both = |r: &serde_json::Value| r["result"]["nodes"].as_array().is_some_and(|n| n.len() == 2);
        let mut info = serde_json::Value::Null;
        let deadline = std::time::Instant::now() + LIMIT;
        while !both(&info) {
            assert!(std::time::Instant::now() < deadline, "info never listed two nodes: {info}");
            tokio::time::sleep(Duration::from_millis(100)).await;
            info = api(a.port, "info", &json!({})).await.unwrap().1;
        }

        // A disconnect sent to a closes zed's connection on b.
        let (_zed, mut zed_events) = client(b.port, "zed");
        assert!(event_within(&mut zed_events, LIMIT, |e| matches!(e, ClientEvent::Connected { .. }))
            .await
            .is_some());
        let (status, r) = api(
            a.port,
            "disconnect",
            &json!({"user": "zed", "disconnect": {"code": 3503, "reason": "banned"}}),
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{r}");
        let closed = event_within(&mut zed_events, LIMIT, |e| {
            matches!(e, ClientEvent::Disconnected { .. } | ClientEvent::Connecting { .. })
        })
        .await;
        assert!(
            matches!(closed, Some(ClientEvent::Disconnected { code: 3503, .. })),
            "disconnect through a did not close zed on b with 3503: {closed:?}"
        );
        drop(reader);
    });
}

/// `wshub serve` with `config`: it must exit with an error; its stderr.
fn refused(name: &str, config: serde_json::Value) -> String {
    let dir = common::temp_dir(name);
    let path = dir.join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let out = common::run_to_end(&mut wshub_testkit::serve_command(
        env!("CARGO_BIN_EXE_wshub"),
        &path,
        common::free_port(),
    ));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "started: {stderr}");
    stderr
}

#[test]
fn history_on_nats_and_an_unreachable_nats_stop_the_start() {
    let port = wshub_testkit::redis::free_port();
    let url = format!("nats://u:secret@127.0.0.1:{port}");
    let mut cfg = config(&url, "t");
    cfg["channel"]["namespaces"] = json!([{"name": "chat", "history_size": 10, "history_ttl": "60s"}]);
    let e = refused("nats-history", cfg);
    assert!(e.contains("channel.namespaces[0].history_size"), "{e}");
    assert!(e.contains("keeps none"), "{e}");

    let e = refused("nats-down", config(&url, "t"));
    assert!(e.contains("broker.nats"), "{e}");
    assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
    assert!(!e.contains("secret"), "the password is masked: {e}");
}
