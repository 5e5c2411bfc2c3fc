//! `http_api.error_mode`: Centrifugo's two ways of answering an API error: inside a 200
//! (default), or (`transport`, also asked per request with `X-Centrifugo-Error-Mode`) as the
//! HTTP status of its code with the error object alone as the body.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};

const KEY: &str = "error-mode-key";

async fn call(server: &TestServer, method: &str, extra_headers: &str, body: Value) -> (u16, Value) {
    let headers = format!("X-API-Key: {KEY}\r\nContent-Type: application/json\r\n{extra_headers}");
    let (status, body) = wshub_testkit::http(server.addr.port(), "POST", &format!("/api/{method}"), &headers, &body.to_string())
        .await
        .unwrap();
    (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")))
}

fn config(mode: &str) -> wshub_server::config::Config {
    node_config(
        json!({
            "http_api": {"key": KEY, "error_mode": mode},
            "channel": {"namespaces": [{"name": "plain"}, {"name": "kept", "history_size": 10, "history_ttl": "60s"}]},
        }),
        json!({}),
    )
}

#[tokio::test]
async fn the_transport_mode_answers_errors_with_http_statuses() {
    let server = TestServer::node(&config("transport")).await;
    let cases = [
        // Unknown namespace: 102 → 404.
        ("publish", json!({"channel": "nope:x", "data": {}}), 404, 102),
        // No such method: 104 → 404.
        ("no_such_method", json!({}), 404, 104),
        // Bad request: 107 → 400.
        ("publish", json!({"channel": "plain:x"}), 400, 107),
        // History on a namespace without it: 108 → 400.
        ("history", json!({"channel": "plain:x"}), 400, 108),
        // A position of another stream: 112 → 416.
        (
            "history",
            json!({"channel": "kept:x", "limit": 10, "since": {"offset": 3, "epoch": "other"}}),
            416,
            112,
        ),
    ];
    for (method, body, status, code) in cases {
        let (got, answer) = call(&server, method, "", body.clone()).await;
        assert_eq!((got, answer["code"].as_u64()), (status, Some(code)), "{method} {body}: {answer}");
        assert!(answer["message"].is_string() && answer.get("error").is_none(), "{answer}");
    }
    // Success is unchanged.
    let (got, answer) = call(&server, "publish", "", json!({"channel": "kept:x", "data": {"a": 1}})).await;
    assert_eq!(got, 200, "{answer}");
    assert_eq!(answer["result"]["offset"], 1, "{answer}");
    // A batch keeps each reply's error inside it.
    let batch = json!({"commands": [{"publish": {"channel": "nope:x", "data": {}}}]});
    let (got, answer) = call(&server, "batch", "", batch).await;
    assert_eq!(got, 200, "{answer}");
    assert_eq!(answer["replies"][0]["error"]["code"], 102, "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn by_default_errors_are_inside_a_200_unless_the_request_asks() {
    let server = TestServer::node(&config("")).await;
    let (got, answer) = call(&server, "publish", "", json!({"channel": "nope:x", "data": {}})).await;
    assert_eq!(got, 200, "{answer}");
    assert_eq!(answer["error"]["code"], 102, "{answer}");
    let asked = "X-Centrifugo-Error-Mode: transport\r\n";
    let (got, answer) = call(&server, "publish", asked, json!({"channel": "nope:x", "data": {}})).await;
    assert_eq!((got, answer["code"].as_u64()), (404, Some(102)), "{answer}");
    server.stop().await;
}

#[test]
fn an_unknown_error_mode_stops_the_start() {
    let path = std::env::temp_dir().join(format!("wshub-error-mode-{}.json", std::process::id()));
    std::fs::write(&path, json!({"http_api": {"error_mode": "loud"}}).to_string()).unwrap();
    let err = wshub_server::config::load(Some(&path), Vec::<(String, String)>::new(), &[])
        .err()
        .unwrap();
    let _ = std::fs::remove_file(path);
    assert!(err.to_string().contains("error_mode"), "{err}");
}
