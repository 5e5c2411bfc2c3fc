//! Centrifugo's Prometheus series (issue #27, item 6), on a real `wshub` process: the
//! series Centrifugo's Grafana dashboard (grafana.com 13039) and alerts query exist after
//! traffic, with the values the traffic implies, and the counters whose label sets are known
//! in advance are exported at 0 before any traffic.

#![allow(clippy::unwrap_used)] // a test: a failed call is a failed test

mod common;

use std::time::{Duration, Instant};

use common::{api, free_port, http, temp_dir, Node, LIMIT};
use serde_json::json;
use wshub_websocket::{Event, MessageKind};

/// The Centrifugo series of its dashboard and of a usual deployment's alerts. Names, types
/// and labels taken from Centrifugo v6's source: the centrifuge library's `metrics.go`
/// (namespace `centrifugo`) for `node_*`, `client_*`, `transport_*`; Centrifugo's
/// `internal/metrics/metrics.go` for `api_*` and `proxy_*`. Durations are summaries
/// (`{quantile=…}`, `_sum`, `_count`) plus a `_histogram` twin, as in Centrifugo.
const DASHBOARD_SERIES: [&str; 37] = [
    "centrifugo_node_num_clients",
    "centrifugo_node_num_users",
    "centrifugo_node_num_channels",
    "centrifugo_node_num_subscriptions",
    "centrifugo_node_num_nodes",
    "centrifugo_node_build",
    "centrifugo_node_client_connection_limit",
    "centrifugo_node_messages_sent_count",
    "centrifugo_node_messages_received_count",
    "centrifugo_client_command_duration_seconds",
    "centrifugo_client_command_duration_seconds_histogram_bucket",
    "centrifugo_client_num_reply_errors",
    "centrifugo_client_num_server_disconnects",
    "centrifugo_client_connections_accepted",
    "centrifugo_client_connections_inflight",
    "centrifugo_client_subscriptions_accepted",
    "centrifugo_client_subscriptions_inflight",
    "centrifugo_client_recover",
    "centrifugo_client_ping_pong_duration_seconds_bucket",
    "centrifugo_transport_outgoing_close_count",
    "centrifugo_transport_messages_sent",
    "centrifugo_transport_messages_sent_size",
    "centrifugo_transport_messages_received",
    "centrifugo_transport_messages_received_size",
    "centrifugo_api_command_duration_seconds",
    "centrifugo_api_command_duration_seconds_histogram_bucket",
    "centrifugo_proxy_duration_seconds",
    "centrifugo_proxy_duration_seconds_histogram_bucket",
    "centrifugo_proxy_errors",
    "centrifugo_proxy_inflight_requests",
    "centrifugo_client_num_server_unsubscribes",
    "centrifugo_node_action_count",
    "centrifugo_node_survey_duration_seconds",
    "centrifugo_node_survey_duration_seconds_histogram_bucket",
    "centrifugo_node_broadcast_duration_seconds_bucket",
    "centrifugo_node_pub_sub_lag_seconds_bucket",
    "centrifugo_node_tags_filter_dropped_publications",
];

/// A node whose channels' publications go through a publish proxy on a port where nothing
/// listens (each client publish is a proxy error), with history and recovery, a refresh
/// proxy never called, room for one client, and a ping every 2 s at most.
fn config() -> serde_json::Value {
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    json!({
        "http_api": {"key": common::API_KEY},
        "client": {
            "token": {"hmac_secret_key": "s"},
            "connection_limit": 1,
            "ping_interval": "2s",
            "pong_timeout": "1s",
            "proxy": {"refresh": {"enabled": true, "endpoint": format!("{nowhere}/refresh")}}
        },
        "channel": {
            "proxy": {"publish": {"endpoint": format!("{nowhere}/publish")}},
            "without_namespace": {
                "allow_subscribe_for_client": true,
                "publish_proxy_enabled": true,
                "history_size": 10,
                "history_ttl": "60s",
                "force_recovery": true
            }
        }
    })
}

/// The value of the exact series `series` (name and labels as the exporter writes them).
fn value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.rsplit_once(' ').filter(|(s, _)| *s == series).and_then(|(_, v)| v.parse().ok()))
}

/// Whether a sample of the family `name` (any labels) is in `body`.
fn has_family(body: &str, name: &str) -> bool {
    body.lines().filter(|l| !l.starts_with('#')).any(|l| {
        l.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
    })
}

/// The sum over the samples of `name` whose labels contain every one of `labels`.
fn sum(body: &str, name: &str, labels: &[&str]) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(s, _)| {
            s.strip_prefix(name)
                .is_some_and(|rest| (rest.is_empty() || rest.starts_with('{')) && labels.iter().all(|x| rest.contains(x)))
        })
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum()
}

async fn scrape(port: u16) -> String {
    let (status, body) = http(port, "GET", "/metrics", "", "").await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

/// The next text message of `c` that contains `needle`.
async fn message_with(c: &mut wshub_testkit::ws::Client, needle: &str) -> String {
    loop {
        match c.next_event().await {
            Event::Message { data, .. } => {
                let text = String::from_utf8_lossy(&data).to_string();
                if text.contains(needle) {
                    return text;
                }
            }
            other => panic!("waiting for {needle:?}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn right_after_start_the_counters_with_known_labels_are_at_zero() {
    let dir = temp_dir("cmetrics-zero");
    let node = Node::start(&dir, &config(), free_port()).await;
    let body = scrape(node.port).await;
    let version = env!("CARGO_PKG_VERSION");
    for (series, expected) in [
        ("centrifugo_node_messages_sent_count{type=\"publication\"}", 0.0),
        ("centrifugo_node_messages_sent_count{type=\"join\"}", 0.0),
        ("centrifugo_node_messages_sent_count{type=\"leave\"}", 0.0),
        ("centrifugo_node_messages_sent_count{type=\"control\"}", 0.0),
        ("centrifugo_node_messages_received_count{type=\"publication\"}", 0.0),
        ("centrifugo_node_messages_received_count{type=\"join\"}", 0.0),
        ("centrifugo_transport_messages_sent{transport=\"websocket\"}", 0.0),
        ("centrifugo_transport_messages_sent_size{transport=\"websocket\"}", 0.0),
        ("centrifugo_transport_messages_received{transport=\"websocket\"}", 0.0),
        ("centrifugo_transport_messages_received_size{transport=\"websocket\"}", 0.0),
        ("centrifugo_client_command_duration_seconds_count{method=\"connect\"}", 0.0),
        ("centrifugo_client_command_duration_seconds_count{method=\"subscribe\"}", 0.0),
        (
            "centrifugo_client_command_duration_seconds_histogram_count{method=\"publish\"}",
            0.0,
        ),
        ("centrifugo_node_num_clients", 0.0),
        (
            "centrifugo_client_connections_accepted{transport=\"websocket\",accept_protocol=\"\",client_name=\"\",client_version=\"\"}",
            0.0,
        ),
        ("centrifugo_node_num_nodes", 1.0),
        (&format!("centrifugo_node_build{{version=\"{version}\"}}"), 1.0),
        ("wshub_handshake_refusals_total{reason=\"origin\"}", 0.0),
        ("wshub_handshake_refusals_total{reason=\"connection_limit\"}", 0.0),
        ("wshub_rate_limit_refusals_total{kind=\"api\"}", 0.0),
        ("wshub_rate_limit_refusals_total{kind=\"command\"}", 0.0),
        ("wshub_publications_total", 0.0),
        ("centrifugo_node_client_connection_limit", 0.0),
        ("centrifugo_node_action_count{action=\"add_client\",channel_namespace=\"\"}", 0.0),
        (
            "centrifugo_node_action_count{action=\"history_recover\",channel_namespace=\"\"}",
            0.0,
        ),
        ("centrifugo_node_tags_filter_dropped_publications{channel_namespace=\"\"}", 0.0),
        (
            "centrifugo_broker_redis_pub_sub_dropped_messages{broker_name=\"\",channel_type=\"client\"}",
            0.0,
        ),
        ("centrifugo_client_subscriptions_accepted{client_name=\"\"}", 0.0),
        ("centrifugo_client_subscriptions_inflight{client_name=\"\"}", 0.0),
        (
            "centrifugo_client_recover{recovered=\"yes\",has_recovered_publications=\"yes\"}",
            0.0,
        ),
        ("centrifugo_client_recover{recovered=\"no\",has_recovered_publications=\"no\"}", 0.0),
        (
            "centrifugo_client_num_server_unsubscribes{code=\"2000\",channel_namespace=\"\"}",
            0.0,
        ),
        ("centrifugo_proxy_errors{protocol=\"http\",type=\"refresh\",name=\"default\"}", 0.0),
        ("centrifugo_proxy_errors{protocol=\"http\",type=\"publish\",name=\"default\"}", 0.0),
        (
            "centrifugo_proxy_duration_seconds_count{protocol=\"http\",type=\"publish\",name=\"default\"}",
            0.0,
        ),
    ] {
        assert_eq!(value(&body, series), Some(expected), "{series} in:\n{body}");
    }
    // The process series of Prometheus's client libraries, which Centrifugo (Go) exports:
    // read from /proc, so plausible rather than exact.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for (series, low, high) in [
        ("process_resident_memory_bytes", 1e6, 1e10),
        ("process_virtual_memory_bytes", 1e6, 1e13),
        ("process_open_fds", 3.0, 1e6),
        ("process_max_fds", 64.0, 1e10),
        ("process_cpu_seconds_total", 0.0, 600.0),
        ("process_start_time_seconds", now - 600.0, now + 5.0),
    ] {
        let v = value(&body, series).unwrap_or_else(|| panic!("{series} missing:\n{body}"));
        assert!((low..=high).contains(&v), "{series} = {v}, not in [{low}, {high}]");
    }
    assert!(body.contains("# TYPE process_cpu_seconds_total counter"), "{body}");
}

#[tokio::test]
async fn after_traffic_every_dashboard_series_is_exported_with_what_happened() {
    let dir = temp_dir("cmetrics-traffic");
    let node = Node::start(&dir, &config(), free_port()).await;
    let addr = format!("127.0.0.1:{}", node.port).parse().unwrap();
    let mut c = wshub_testkit::ws::Client::connect(addr, "/connection/websocket", &[], None).await;
    let token = wshub_testkit::token("s", &json!({"sub": "u1"}));
    let send = |id: u32, body: serde_json::Value| {
        let mut cmd = body;
        cmd["id"] = id.into();
        cmd.to_string()
    };
    c.send(MessageKind::Text, send(1, json!({"connect": {"token": token}})).as_bytes())
        .await;
    message_with(&mut c, "\"id\":1").await;
    // Recovering from a position of another stream: not recovered.
    let sub = json!({"subscribe": {"channel": "news", "recover": true, "epoch": "other", "offset": 5}});
    c.send(MessageKind::Text, send(2, sub).as_bytes()).await;
    message_with(&mut c, "\"id\":2").await;
    let inflight =
        "centrifugo_client_connections_inflight{transport=\"websocket\",accept_protocol=\"\",client_name=\"\",client_version=\"\"}";
    let body = scrape(node.port).await;
    assert_eq!(value(&body, inflight), Some(1.0), "{body}");
    assert_eq!(value(&body, "centrifugo_node_num_clients"), Some(1.0), "{body}");
    assert_eq!(value(&body, "centrifugo_node_num_subscriptions"), Some(1.0), "{body}");
    assert_eq!(
        value(&body, "centrifugo_client_subscriptions_inflight{client_name=\"\"}"),
        Some(1.0),
        "{body}"
    );
    // A second client is over `client.connection_limit`.
    let upgrade =
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let (status, _) = http(node.port, "GET", "/connection/websocket", upgrade, "").await.unwrap();
    assert_eq!(status, 503);
    // A second subscribe to the same channel: error 105 (already subscribed).
    c.send(MessageKind::Text, send(3, json!({"subscribe": {"channel": "news"}})).as_bytes())
        .await;
    let reply = message_with(&mut c, "\"id\":3").await;
    assert!(reply.contains("\"code\":105"), "{reply}");
    // A client publish: the proxy is unreachable, the client gets error 100.
    c.send(
        MessageKind::Text,
        send(4, json!({"publish": {"channel": "news", "data": {}}})).as_bytes(),
    )
    .await;
    let reply = message_with(&mut c, "\"id\":4").await;
    assert!(reply.contains("\"code\":100"), "{reply}");
    let (status, answer) = api(node.port, "publish", &json!({"channel": "news", "data": {"n": 1}}))
        .await
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    let publication = message_with(&mut c, "\"n\":1").await;
    // The publishing node's time (for the lag) is not sent to clients, as in Centrifugo.
    assert!(!publication.contains("\"time\""), "{publication}");
    // A survey of every node.
    let (status, answer) = api(node.port, "channels", &json!({})).await.unwrap();
    assert_eq!(status, 200, "{answer}");
    // The server's ping (`{}`, within the 2 s interval), answered.
    loop {
        if let Event::Message { data, .. } = c.next_event().await {
            if data.as_ref() == b"{}" {
                break;
            }
        }
    }
    c.send(MessageKind::Text, b"{}").await;
    let (status, answer) = api(node.port, "unsubscribe", &json!({"user": "u1", "channel": "news"}))
        .await
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    message_with(&mut c, "\"code\":2000").await;
    let (status, answer) = api(node.port, "disconnect", &json!({"user": "u1"})).await.unwrap();
    assert_eq!(status, 200, "{answer}");
    let code = c.expect_close().await;

    // The server counts some of these after answering (the disconnect, the delivery): the
    // scrape is retried until they show, within the tests' limit.
    let disconnect = format!("code=\"{code}\"");
    let deadline = Instant::now() + LIMIT;
    let body = loop {
        let body = scrape(node.port).await;
        let complete = sum(&body, "centrifugo_client_num_server_disconnects", &[&disconnect]) >= 1.0
            && value(&body, inflight) == Some(0.0)
            && sum(&body, "centrifugo_node_messages_received_count", &["type=\"publication\""]) >= 1.0;
        if complete || Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for name in DASHBOARD_SERIES {
        assert!(has_family(&body, name), "{name} missing from /metrics:\n{body}");
    }
    let publish_proxy: &[&str] = &["protocol=\"http\"", "type=\"publish\"", "name=\"default\""];
    let checks: [(&str, &[&str], f64); 29] = [
        ("centrifugo_node_client_connection_limit", &[], 1.0),
        ("centrifugo_client_num_server_unsubscribes", &["code=\"2000\""], 1.0),
        ("centrifugo_client_subscriptions_accepted", &[], 1.0),
        (
            "centrifugo_client_ping_pong_duration_seconds_count",
            &["transport=\"websocket\""],
            1.0,
        ),
        (
            "centrifugo_client_recover",
            &["recovered=\"no\"", "has_recovered_publications=\"no\""],
            1.0,
        ),
        ("centrifugo_client_recover", &["recovered=\"yes\""], 0.0),
        (
            "centrifugo_transport_outgoing_close_count",
            &["transport=\"websocket\"", &disconnect],
            1.0,
        ),
        ("wshub_handshake_refusals_total", &["reason=\"connection_limit\""], 1.0),
        ("centrifugo_proxy_errors", publish_proxy, 1.0),
        ("centrifugo_proxy_duration_seconds_count", publish_proxy, 1.0),
        ("centrifugo_client_num_reply_errors", &["method=\"publish\"", "code=\"100\""], 1.0),
        ("centrifugo_client_num_server_disconnects", &[&disconnect], 1.0),
        ("centrifugo_node_messages_sent_count", &["type=\"publication\""], 1.0),
        ("centrifugo_node_messages_received_count", &["type=\"publication\""], 1.0),
        ("centrifugo_client_num_reply_errors", &["method=\"subscribe\"", "code=\"105\""], 1.0),
        (
            "centrifugo_client_connections_accepted",
            &["transport=\"websocket\"", "accept_protocol=\"\""],
            1.0,
        ),
        ("centrifugo_client_command_duration_seconds_count", &["method=\"subscribe\""], 2.0),
        // connect, two subscribes, a publish, the pong.
        ("centrifugo_transport_messages_received", &["transport=\"websocket\""], 5.0),
        (
            "centrifugo_api_command_duration_seconds_count",
            &["protocol=\"http\"", "method=\"publish\""],
            1.0,
        ),
        ("wshub_publications_total", &[], 1.0),
        ("centrifugo_node_action_count", &["action=\"add_client\""], 1.0),
        ("centrifugo_node_action_count", &["action=\"remove_client\""], 1.0),
        ("centrifugo_node_action_count", &["action=\"add_subscription\""], 1.0),
        ("centrifugo_node_action_count", &["action=\"remove_subscription\""], 1.0),
        ("centrifugo_node_action_count", &["action=\"broker_subscribe\""], 1.0),
        ("centrifugo_node_action_count", &["action=\"broker_unsubscribe\""], 1.0),
        ("centrifugo_node_broadcast_duration_seconds_count", &["type=\"publication\""], 1.0),
        ("centrifugo_node_pub_sub_lag_seconds_count", &[], 1.0),
        ("centrifugo_node_survey_duration_seconds_histogram_count", &["op=\"channels\""], 1.0),
    ];
    assert_eq!(value(&body, inflight), Some(0.0), "{body}");
    for (name, labels, expected) in checks {
        assert_eq!(sum(&body, name, labels), expected, "{name} {labels:?} in:\n{body}");
    }
    // A connect reply, two subscribe replies, a publish reply and a publication, at least.
    assert!(
        sum(&body, "centrifugo_transport_messages_sent", &["transport=\"websocket\""]) >= 5.0,
        "{body}"
    );
    assert!(
        sum(&body, "centrifugo_transport_messages_sent_size", &["transport=\"websocket\""]) > 0.0,
        "{body}"
    );
}

/// `prometheus.instrument_http_handlers` and `prometheus.recovered_publications_histogram`:
/// requests counted by route (never by the raw path a client chose), and a recovery of two
/// publications recorded in the histogram; the proxy's in-flight gauge is back at 0.
#[tokio::test]
async fn prometheus_options_count_requests_by_route_and_recovered_publications() {
    let dir = temp_dir("cmetrics-options");
    let mut cfg = config();
    cfg["prometheus"] = json!({"instrument_http_handlers": true, "recovered_publications_histogram": true});
    let node = Node::start(&dir, &cfg, free_port()).await;
    for n in [1, 2] {
        let (status, answer) = api(node.port, "publish", &json!({"channel": "news", "data": {"n": n}}))
            .await
            .unwrap();
        assert_eq!(status, 200, "{answer}");
    }
    let (status, answer) = api(node.port, "history", &json!({"channel": "news", "limit": 0})).await.unwrap();
    assert_eq!(status, 200, "{answer}");
    let epoch = answer["result"]["epoch"].as_str().unwrap().to_string();
    let (status, _) = http(node.port, "GET", "/made/up/path", "", "").await.unwrap();
    assert_eq!(status, 404);
    // Two API errors: a publish without data (107), a method that does not exist (104).
    let (_, answer) = api(node.port, "publish", &json!({"channel": "news"})).await.unwrap();
    assert_eq!(answer["error"]["code"], 107, "{answer}");
    let (_, answer) = api(node.port, "no_such_method", &json!({})).await.unwrap();
    assert_eq!(answer["error"]["code"], 104, "{answer}");

    let addr = format!("127.0.0.1:{}", node.port).parse().unwrap();
    let mut c = wshub_testkit::ws::Client::connect(addr, "/connection/websocket", &[], None).await;
    let token = wshub_testkit::token("s", &json!({"sub": "u1"}));
    let connect = json!({"id": 1, "connect": {"token": token}}).to_string();
    c.send(MessageKind::Text, connect.as_bytes()).await;
    message_with(&mut c, "\"id\":1").await;
    let sub = json!({"id": 2, "subscribe": {"channel": "news", "recover": true, "epoch": epoch, "offset": 0}});
    c.send(MessageKind::Text, sub.to_string().as_bytes()).await;
    let reply = message_with(&mut c, "\"id\":2").await;
    assert!(reply.contains("\"recovered\":true"), "{reply}");

    let body = scrape(node.port).await;
    let recovered = "centrifugo_client_recovered_publications";
    assert_eq!(sum(&body, &format!("{recovered}_count"), &[]), 1.0, "{body}");
    assert_eq!(sum(&body, &format!("{recovered}_sum"), &[]), 2.0, "{body}");
    assert_eq!(sum(&body, &format!("{recovered}_bucket"), &["le=\"1\""]), 0.0, "{body}");
    assert_eq!(sum(&body, &format!("{recovered}_bucket"), &["le=\"2\""]), 1.0, "{body}");
    let requests = "centrifugo_node_incoming_http_requests_total";
    let api_ok: &[&str] = &["path=\"/api/\"", "method=\"POST\"", "status=\"200\""];
    assert_eq!(sum(&body, requests, api_ok), 5.0, "{body}");
    let errors = "centrifugo_api_command_errors_total";
    let publish_107: &[&str] = &["protocol=\"http\"", "method=\"publish\"", "error=\"107\""];
    assert_eq!(sum(&body, errors, publish_107), 1.0, "{body}");
    assert_eq!(sum(&body, errors, &["method=\"unknown\"", "error=\"104\""]), 1.0, "{body}");
    assert!(!body.contains("no_such_method"), "{body}");
    assert_eq!(sum(&body, requests, &["path=\"other\"", "status=\"404\""]), 1.0, "{body}");
    assert!(!body.contains("/made/up/path"), "a client's path became a label:\n{body}");
    assert_eq!(
        sum(
            &body,
            requests,
            &["path=\"/connection/websocket\"", "method=\"GET\"", "status=\"101\""]
        ),
        1.0,
        "{body}"
    );
    let inflight = "centrifugo_proxy_inflight_requests{protocol=\"http\",type=\"publish\",name=\"default\"}";
    assert_eq!(value(&body, inflight), Some(0.0), "{body}");
    // Off by default: neither series without the options.
    let plain = Node::start(&temp_dir("cmetrics-options-off"), &config(), free_port()).await;
    let body = scrape(plain.port).await;
    assert!(
        !has_family(&body, requests) && !has_family(&body, &format!("{recovered}_count")),
        "{body}"
    );
}
