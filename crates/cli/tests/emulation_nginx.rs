//! HTTP-streaming behind nginx in round-robin (no stickiness) in front of three wshub
//! processes on one redis-server: the session's `/emulation` POSTs land on both nodes, the
//! ones that reach the node without the session are forwarded through Redis, and every
//! command is answered on the stream, in order. Real processes: redis-server, nginx (with
//! `deploy/nginx.conf`, `least_conn` taken out), wshub, curl.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;
use wshub_testkit::redis::RedisServer;

fn metric(text: &str, name: &str, label: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulation_through_round_robin_nginx_reaches_the_session_on_either_node() {
    let redis = RedisServer::start().await;
    let dir = temp_dir("emulation-nginx");
    let config = json!({
        "http_api": {"key": API_KEY},
        "client": {"allow_anonymous_connect_without_token": true},
        "http_stream": {"enabled": true},
        "engine": {"type": "redis", "redis": {"address": redis.url()}},
        "channel": {"without_namespace": {"allow_subscribe_for_client": true, "allow_subscribe_for_anonymous": true}}
    });
    let a = Node::start(&dir, &config, free_port()).await;
    let b = Node::start(&dir, &config, free_port()).await;
    let c3 = Node::start(&dir, &config, free_port()).await;
    let nginx = Nginx::start_edited(&dir, &[a.port, b.port, c3.port], |c| {
        assert!(c.contains("least_conn;"), "deploy/nginx.conf changed: update this test");
        c.replace("least_conn;", "# round-robin for this test")
    })
    .await;
    let base = format!("http://127.0.0.1:{}", nginx.port);

    let mut curl = tokio::process::Command::new("curl")
        .args([
            "-sN",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"id":1,"connect":{}}"#,
        ])
        .arg(format!("{base}/connection/http_stream"))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("curl not found ({e}): apt-get install -y curl"));
    let mut lines = tokio::io::BufReader::new(curl.stdout.take().unwrap()).lines();
    let mut next = async || -> Value {
        let l = tokio::time::timeout(LIMIT, lines.next_line())
            .await
            .expect("a line through nginx")
            .unwrap()
            .expect("the stream");
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))
    };
    let connect = next().await;
    let session = connect["connect"]["session"].as_str().unwrap().to_string();
    let node = connect["connect"]["node"].as_str().unwrap().to_string();

    // Ten commands, one POST each, through nginx: round-robin spreads them over the nodes.
    for id in 2..12 {
        let cmd = if id == 2 {
            json!({"id": id, "subscribe": {"channel": "news"}})
        } else {
            json!({"id": id, "presence_stats": {"channel": "news"}})
        };
        let body = json!({"session": session, "node": node, "data": cmd.to_string()}).to_string();
        let (status, text) = http(nginx.port, "POST", "/emulation", "Content-Type: application/json\r\n", &body)
            .await
            .unwrap();
        assert_eq!(status, 204, "{text}");
        let r = next().await;
        assert_eq!(r["id"], id, "answered on the stream, in order: {r}");
    }
    let (status, _) = api(nginx.port, "publish", &json!({"channel": "news", "data": {"n": 1}}))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(next().await["push"]["pub"]["data"], json!({"n": 1}));

    // Every node took /emulation requests; those without the session forwarded theirs.
    let mut local = 0;
    let mut forwarded = 0;
    for port in [a.port, b.port, c3.port] {
        let (_, m) = http(port, "GET", "/metrics", "", "").await.unwrap();
        local += metric(&m, "wshub_emulation_requests_total", "outcome=\"local\"");
        forwarded += metric(&m, "wshub_emulation_requests_total", "outcome=\"forwarded\"");
    }
    assert_eq!(local + forwarded, 10);
    assert!(
        forwarded >= 5,
        "round-robin should have sent some to the other node: {forwarded} forwarded"
    );
    drop(curl);
    drop(nginx);
}
