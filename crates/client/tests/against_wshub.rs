//! The client against a real wshub process: reconnect after SIGTERM (drain) and SIGKILL,
//! recovery of publications missed while away, token expiry and refresh, terminal codes,
//! and 200 clients whose reconnects after a restart are spread by the jitter.
#![allow(clippy::unwrap_used)]

use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;
use wshub_client::{CallError, Client, ClientConfig, ClientEvent, HistoryOptions, SubTokenSource, SubscriptionOptions};
use wshub_testkit::{free_port, unique, LIMIT};

const SECRET: &str = "client-test";

fn bin() -> String {
    std::env::var("TEST_WSHUB_BIN").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/release/wshub").to_string())
}

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn config(extra: serde_json::Value) -> std::path::PathBuf {
        let mut c = json!({
            "http_api": {"key": "k"},
            "client": {"token": {"hmac_secret_key": SECRET}, "expired_close_delay": "1s"},
            "shutdown": {"timeout": "4s", "drain_window": "1s"},
            "channel": {"namespaces": [
                {"name": "chat", "history_size": 100, "history_ttl": "300s", "force_recovery": true, "allow_subscribe_for_client": true,
                 "presence": true, "join_leave": true, "force_push_join_leave": true, "allow_publish_for_subscriber": true, "allow_presence_for_subscriber": true, "allow_history_for_subscriber": true},
                {"name": "priv", "history_size": 10, "history_ttl": "300s", "allow_publish_for_subscriber": true}
            ]}
        });
        if let (Some(a), serde_json::Value::Object(b)) = (c.as_object_mut(), extra) {
            for (k, v) in b {
                a.insert(k, v);
            }
        }
        let p = std::env::temp_dir().join(format!("wshub-client-test-{}-{}.json", std::process::id(), unique()));
        std::fs::write(&p, c.to_string()).unwrap();
        p
    }

    async fn start(cfg: std::path::PathBuf, port: u16) -> Server {
        let b = bin();
        assert!(
            std::path::Path::new(&b).exists(),
            "wshub binary missing at {b}: run `cargo build --release -p wshub` first"
        );
        // The log (stdout and stderr) beside the config, for a failure's diagnosis.
        let log = std::fs::File::create(cfg.with_extension("log")).unwrap();
        let child = wshub_testkit::serve_command(b, &cfg, port)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + LIMIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "wshub did not listen on {port}: {}",
                std::fs::read_to_string(cfg.with_extension("log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Server { child, port }
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/connection/websocket", self.port)
    }

    fn wss_url(&self) -> String {
        format!("wss://localhost:{}/connection/websocket", self.port)
    }

    /// Sends a signal to the process we started, by its PID, and waits for it to exit.
    async fn signal(&mut self, sig: &str) {
        wshub_testkit::signal(&mut self.child, sig, "wshub").await;
    }

    async fn api(&self, method: &str, body: serde_json::Value) -> serde_json::Value {
        let (_, text) = wshub_testkit::http(self.port, "POST", &format!("/api/{method}"), "X-API-Key: k\r\n", &body.to_string())
            .await
            .unwrap_or_else(|e| panic!("api {method}: {e}"));
        serde_json::from_str(&text).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        wshub_testkit::end(&mut self.child);
    }
}

fn token(user: &str, exp_in: Option<u64>) -> String {
    let mut c = json!({"sub": user});
    if let Some(s) = exp_in {
        c["exp"] = json!(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + s
        );
    }
    wshub_testkit::token(SECRET, &c)
}

/// A connection-token source for `user` (tokens valid for an hour) that counts its calls.
fn counting_source(calls: &Arc<AtomicUsize>, user: &'static str) -> wshub_client::TokenSource {
    let calls = calls.clone();
    Arc::new(move || {
        calls.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move { Ok(token(user, Some(3600))) })
    })
}

async fn until(events: &mut UnboundedReceiver<ClientEvent>, f: impl FnMut(&ClientEvent) -> bool) -> ClientEvent {
    first_matching("client", events, f).await
}

/// The next `Subscribed` of `chat:room` on `events` says it recovered.
async fn assert_recovered(events: &mut UnboundedReceiver<ClientEvent>, context: &str) {
    let sub = until(events, |e| matches!(e, ClientEvent::Subscribed { .. })).await;
    let want = ClientEvent::Subscribed {
        channel: "chat:room".into(),
        recovered: true,
        was_recovering: true,
    };
    assert_eq!(sub, want, "{context}");
}

/// Where events come from: a client's, or one subscription's.
trait EventSource {
    fn next_one(&mut self) -> impl std::future::Future<Output = Option<ClientEvent>>;
}

impl EventSource for UnboundedReceiver<ClientEvent> {
    fn next_one(&mut self) -> impl std::future::Future<Output = Option<ClientEvent>> {
        self.recv()
    }
}

impl EventSource for wshub_client::Subscription {
    fn next_one(&mut self) -> impl std::future::Future<Output = Option<ClientEvent>> {
        self.next_event()
    }
}

/// The first event of `source` that `f` accepts, within [`LIMIT`] for each; `what` names the
/// source in a failure.
async fn first_matching(what: &str, source: &mut impl EventSource, mut f: impl FnMut(&ClientEvent) -> bool) -> ClientEvent {
    loop {
        let e = tokio::time::timeout(LIMIT, source.next_one())
            .await
            .unwrap_or_else(|_| panic!("{what} event in time"))
            .unwrap_or_else(|| panic!("{what} alive"));
        if f(&e) {
            return e;
        }
    }
}

fn quick(token: String) -> ClientConfig {
    ClientConfig {
        token,
        min_reconnect_delay: Duration::from_millis(100),
        max_reconnect_delay: Duration::from_secs(1),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_missed_publications_and_survives_restarts() {
    let port = free_port();
    let cfg = Server::config(json!({}));
    let mut server = Server::start(cfg.clone(), port).await;
    let (client, mut ev) = Client::start(&server.url(), quick(token("alice", None))).unwrap();
    client.subscribe("chat:room", true);
    client.connect();
    until(&mut ev, |e| matches!(e, ClientEvent::Subscribed { .. })).await;
    server.api("publish", json!({"channel": "chat:room", "data": {"n": 1}})).await;
    until(&mut ev, |e| matches!(e, ClientEvent::Publication { .. })).await;

    // Away (forced reconnect with a long enough delay), while 3 publications are made.
    client.disconnect();
    until(&mut ev, |e| matches!(e, ClientEvent::Disconnected { .. })).await;
    for n in 2..=4 {
        server.api("publish", json!({"channel": "chat:room", "data": {"n": n}})).await;
    }
    client.connect();
    assert_recovered(&mut ev, "").await;
    let mut got = Vec::new();
    while got.len() < 3 {
        if let ClientEvent::Publication { offset, .. } = until(&mut ev, |e| matches!(e, ClientEvent::Publication { .. })).await {
            got.push(offset);
        }
    }
    assert_eq!(got, vec![2, 3, 4], "every missed publication, in order, once");

    // SIGTERM: drained with 3001, the client reconnects to the restarted server. The
    // in-memory engine lost its history, which the client is told (recovered: false).
    server.signal("-TERM").await;
    let c = until(&mut ev, |e| matches!(e, ClientEvent::Connecting { .. })).await;
    assert!(matches!(c, ClientEvent::Connecting { code: 3001, .. }), "{c:?}");
    server = Server::start(cfg.clone(), port).await;
    until(&mut ev, |e| matches!(e, ClientEvent::Connected { .. })).await;
    let sub = until(&mut ev, |e| matches!(e, ClientEvent::Subscribed { .. })).await;
    assert_eq!(
        sub,
        ClientEvent::Subscribed {
            channel: "chat:room".into(),
            recovered: false,
            was_recovering: true
        }
    );
    server.api("publish", json!({"channel": "chat:room", "data": {"n": 5}})).await;
    until(&mut ev, |e| matches!(e, ClientEvent::Publication { .. })).await;

    // SIGKILL: no close frame at all; the client notices the drop and comes back.
    server.signal("-KILL").await;
    until(&mut ev, |e| matches!(e, ClientEvent::Connecting { .. })).await;
    let server = Server::start(cfg, port).await;
    until(&mut ev, |e| matches!(e, ClientEvent::Subscribed { .. })).await;
    server.api("publish", json!({"channel": "chat:room", "data": {"n": 6}})).await;
    let p = until(&mut ev, |e| matches!(e, ClientEvent::Publication { .. })).await;
    assert!(
        matches!(p, ClientEvent::Publication { ref data, .. } if data == &Bytes::from_static(br#"{"n":6}"#)),
        "{p:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiry_and_refresh() {
    let server = Server::start(Server::config(json!({})), free_port()).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let source = counting_source(&calls, "bob");
    // An already expired token: 109, the source is asked, the client connects.
    let (client, mut ev) = Client::start_with_token_source(&server.url(), quick(token("bob", Some(0))), Some(source)).unwrap();
    client.subscribe("chat:t", true);
    client.connect();
    until(&mut ev, |e| matches!(e, ClientEvent::Subscribed { .. })).await;
    assert_eq!(calls.load(Ordering::Relaxed), 1);

    // A token that runs out in 2 s: refreshed before, so the connection outlives it.
    let source = counting_source(&calls, "carol");
    let (client2, mut ev2) = Client::start_with_token_source(&server.url(), quick(token("carol", Some(2))), Some(source)).unwrap();
    client2.subscribe("chat:t", true);
    client2.connect();
    until(&mut ev2, |e| matches!(e, ClientEvent::Subscribed { .. })).await;
    let past_expiry = Instant::now() + Duration::from_secs(4); // 2 s of token + 1 s of grace, and a margin
    while Instant::now() < past_expiry {
        tokio::time::sleep(Duration::from_millis(50)).await; // letting time pass is the scenario
    }
    assert_eq!(calls.load(Ordering::Relaxed), 2, "refreshed once");
    server.api("publish", json!({"channel": "chat:t", "data": {"still": "here"}})).await;
    let e = until(&mut ev2, |e| {
        matches!(e, ClientEvent::Publication { .. } | ClientEvent::Connecting { .. })
    })
    .await;
    assert!(matches!(e, ClientEvent::Publication { .. }), "no reconnect: {e:?}");
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_codes_stop_reconnecting() {
    let server = Server::start(Server::config(json!({})), free_port()).await;
    let (client, mut ev) = Client::start(&server.url(), quick(token("dave", None))).unwrap();
    client.connect();
    until(&mut ev, |e| matches!(e, ClientEvent::Connected { .. })).await;
    server
        .api(
            "disconnect",
            json!({"user": "dave", "disconnect": {"code": 3503, "reason": "banned"}}),
        )
        .await;
    let d = until(&mut ev, |e| {
        matches!(e, ClientEvent::Disconnected { .. } | ClientEvent::Connecting { .. })
    })
    .await;
    assert_eq!(
        d,
        ClientEvent::Disconnected {
            code: 3503,
            reason: "banned".into()
        }
    );
    // Ten times the maximum reconnect delay later, still no attempt.
    let r = tokio::time::timeout(Duration::from_secs(2), ev.recv()).await;
    assert!(r.is_err(), "no event after a terminal code: {r:?}");
    // An invalid token is terminal too.
    let (client2, mut ev2) = Client::start(&server.url(), quick(wshub_testkit::token("wrong", &json!({"sub": "x"})))).unwrap();
    client2.connect();
    let d = until(&mut ev2, |e| matches!(e, ClientEvent::Disconnected { .. })).await;
    assert!(matches!(d, ClientEvent::Disconnected { code: 3500, .. }), "{d:?}");
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_a_restart_are_spread_by_jitter() {
    const N: usize = 200;
    let port = free_port();
    let cfg = Server::config(json!({}));
    let mut server = Server::start(cfg.clone(), port).await;
    let mut clients = Vec::new();
    for i in 0..N {
        let conf = ClientConfig {
            token: token(&format!("u{i}"), None),
            min_reconnect_delay: Duration::from_millis(500),
            max_reconnect_delay: Duration::from_secs(20),
            ..Default::default()
        };
        let (c, mut ev) = Client::start(&server.url(), conf).unwrap();
        c.connect();
        until(&mut ev, |e| matches!(e, ClientEvent::Connected { .. })).await;
        clients.push((c, ev));
    }
    // Each client's next Connected event, timestamped as it arrives.
    let mut handles = Vec::new();
    let mut keep = Vec::new();
    for (c, mut ev) in clients {
        keep.push(c);
        handles.push(tokio::spawn(async move {
            until(&mut ev, |e| matches!(e, ClientEvent::Connected { .. })).await;
            Instant::now()
        }));
    }
    server.signal("-KILL").await;
    let start = Instant::now();
    let _server = Server::start(cfg, port).await;
    let mut times = Vec::with_capacity(N);
    for h in handles {
        times.push(h.await.unwrap().duration_since(start));
    }
    times.sort();
    let spread = times[N - 1] - times[0];
    let distinct_10ms: std::collections::HashSet<u128> = times.iter().map(|t| t.as_millis() / 10).collect();
    println!(
        "{N} reconnects after a restart: first {:?}, median {:?}, last {:?}, spread {spread:?}, {} distinct 10 ms slots",
        times[0],
        times[N / 2],
        times[N - 1],
        distinct_10ms.len()
    );
    assert!(spread >= Duration::from_millis(300), "spread {spread:?}");
    assert!(distinct_10ms.len() >= 20, "not synchronised: {} slots", distinct_10ms.len());
    drop(keep);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_format() {
    let server = Server::start(Server::config(json!({})), free_port()).await;
    let conf = ClientConfig {
        format: wshub_protocol::Format::Protobuf,
        ..quick(token("pb", None))
    };
    let (client, mut ev) = Client::start(&server.url(), conf).unwrap();
    client.subscribe("chat:pb", true);
    client.connect();
    until(&mut ev, |e| matches!(e, ClientEvent::Subscribed { .. })).await;
    server
        .api("publish", json!({"channel": "chat:pb", "data": {"via": "protobuf"}}))
        .await;
    let p = until(&mut ev, |e| matches!(e, ClientEvent::Publication { .. })).await;
    assert!(
        matches!(p, ClientEvent::Publication { ref data, offset: 1, .. } if data == &Bytes::from_static(br#"{"via":"protobuf"}"#)),
        "{p:?}"
    );
}

fn sub_token(user: &str, channel: &str, exp_in: u64) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + exp_in;
    wshub_testkit::token(SECRET, &json!({"sub": user, "channel": channel, "exp": exp}))
}

async fn next(sub: &mut wshub_client::Subscription, f: impl FnMut(&ClientEvent) -> bool) -> ClientEvent {
    first_matching("subscription", sub, f).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_return_their_replies() {
    let server = Server::start(Server::config(json!({})), free_port()).await;
    let (client, mut ev) = Client::start(&server.url(), quick(token("erin", None))).unwrap();
    // Not connected (and not connecting): an immediate, typed error.
    assert_eq!(client.publish("chat:r", &b"{}"[..]).await, Err(CallError::NotConnected));

    let mut sub = client.new_subscription(
        "chat:r",
        SubscriptionOptions {
            recoverable: true,
            ..Default::default()
        },
    );
    // A call made while connecting waits for the connection.
    client.connect();
    client.publish("chat:r", &br#"{"n":1}"#[..]).await.unwrap();
    let s = next(&mut sub, |e| matches!(e, ClientEvent::Subscribed { .. })).await;
    assert!(
        matches!(s, ClientEvent::Subscribed { ref channel, .. } if channel == "chat:r"),
        "{s:?}"
    );
    until(&mut ev, |e| matches!(e, ClientEvent::Connected { .. })).await;

    // The waiting publish was sent after the subscribe (both on connect), so it arrives.
    let p = next(&mut sub, |e| matches!(e, ClientEvent::Publication { .. })).await;
    assert!(matches!(p, ClientEvent::Publication { offset: 1, .. }), "{p:?}");
    sub.publish(&br#"{"n":2}"#[..]).await.unwrap();
    let p = next(&mut sub, |e| matches!(e, ClientEvent::Publication { .. })).await;
    assert!(matches!(p, ClientEvent::Publication { offset: 2, .. }), "{p:?}");

    let h = sub
        .history(HistoryOptions {
            limit: -1,
            ..Default::default()
        })
        .await
        .unwrap();
    let datas: Vec<&[u8]> = h.publications.iter().map(|p| &p.data[..]).collect();
    assert_eq!(datas, vec![&br#"{"n":1}"#[..], &br#"{"n":2}"#[..]]);
    assert_eq!(h.offset, 2);
    assert!(!h.epoch.is_empty());

    let presence = sub.presence().await.unwrap();
    assert_eq!(presence.presence.len(), 1, "{presence:?}");
    assert_eq!(presence.presence.values().next().unwrap().user, "erin");
    let stats = client.presence_stats("chat:r").await.unwrap();
    assert_eq!((stats.num_clients, stats.num_users), (1, 1));

    // Error replies come back as typed errors, and the connection stays.
    let e = client.publish("chat:elsewhere", &b"{}"[..]).await.unwrap_err();
    assert!(matches!(e, CallError::Server { code: 103, .. }), "{e:?}");
    let e = client.rpc("nothing", &b"{}"[..]).await.unwrap_err();
    assert!(matches!(e, CallError::Server { code: 108, .. }), "no RPC handler: {e:?}");
    let e = client.history("nope:x", HistoryOptions::default()).await.unwrap_err();
    assert!(matches!(e, CallError::Server { code: 102, .. }), "{e:?}");
    client.send(&b"{}"[..]).await.unwrap();
    sub.publish(&br#"{"n":3}"#[..]).await.unwrap();
    let p = next(&mut sub, |e| matches!(e, ClientEvent::Publication { .. })).await;
    assert!(matches!(p, ClientEvent::Publication { offset: 3, .. }), "{p:?}");
    // The subscription's events went to its own stream, not the client's.
    client.disconnect();
    while let Some(e) = ev.recv().await {
        assert!(
            !matches!(e, ClientEvent::Publication { .. } | ClientEvent::Subscribed { .. }),
            "{e:?}"
        );
        if matches!(e, ClientEvent::Disconnected { .. }) {
            break;
        }
    }
    assert_eq!(client.presence("chat:r").await, Err(CallError::NotConnected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_tokens_from_a_callback_are_refreshed() {
    let server = Server::start(Server::config(json!({})), free_port()).await;
    let (client, mut ev) = Client::start(&server.url(), quick(token("fay", None))).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    // Tokens that live 2 s: the client must fetch new ones before they run out.
    let source: SubTokenSource = Arc::new(move |channel: String| {
        c2.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move { Ok(sub_token("fay", &channel, 2)) })
    });
    let mut sub = client.new_subscription(
        "priv:a",
        SubscriptionOptions {
            token_source: Some(source),
            ..Default::default()
        },
    );
    client.connect();
    next(&mut sub, |e| matches!(e, ClientEvent::Subscribed { .. })).await;
    assert_eq!(calls.load(Ordering::Relaxed), 1);
    // Polled with a deadline: two refreshes (each before the previous token's end).
    let deadline = Instant::now() + LIMIT;
    while calls.load(Ordering::Relaxed) < 3 {
        assert!(Instant::now() < deadline, "no refresh");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Past the first token's expiry, the subscription is still there and live: refreshed
    // in place (sub_refresh), not dropped by the server and made again.
    sub.publish(&br#"{"after":"refresh"}"#[..]).await.unwrap();
    let e = next(&mut sub, |e| {
        matches!(
            e,
            ClientEvent::Publication { .. }
                | ClientEvent::Unsubscribed { .. }
                | ClientEvent::Subscribing { .. }
                | ClientEvent::Subscribed { .. }
        )
    })
    .await;
    assert!(matches!(e, ClientEvent::Publication { .. }), "{e:?}");

    // A callback that fails ends its subscription (and only it).
    let failing: SubTokenSource = Arc::new(|_| Box::pin(async { Err("denied".to_string()) }));
    let mut bad = client.new_subscription(
        "priv:b",
        SubscriptionOptions {
            token_source: Some(failing),
            ..Default::default()
        },
    );
    let e = next(&mut bad, |e| matches!(e, ClientEvent::Unsubscribed { .. })).await;
    assert!(
        matches!(e, ClientEvent::Unsubscribed { ref channel, .. } if channel == "priv:b"),
        "{e:?}"
    );
    assert!(
        tokio::time::timeout(LIMIT, bad.next_event()).await.unwrap().is_none(),
        "stream ends"
    );
    let err = until(&mut ev, |e| matches!(e, ClientEvent::Error { .. })).await;
    assert!(
        matches!(err, ClientEvent::Error { ref message } if message.contains("denied")),
        "{err:?}"
    );
    sub.publish(&br#"{"still":"here"}"#[..]).await.unwrap();
    next(&mut sub, |e| matches!(e, ClientEvent::Publication { .. })).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_with_an_added_root_certificate() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("wshub-client-tls-{}-{}", std::process::id(), unique()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let cfg = Server::config(json!({
        "http_server": {"tls": {"enabled": true, "cert_pem_file": cert_path, "key_pem_file": key_path}}
    }));
    let server = Server::start(cfg, free_port()).await;

    // Without the CA the certificate is refused, and the client keeps retrying.
    let (untrusting, mut ev0) = Client::start(&server.wss_url(), quick(token("gus", None))).unwrap();
    untrusting.connect();
    until(&mut ev0, |e| matches!(e, ClientEvent::Connecting { .. })).await;
    let r = tokio::time::timeout(
        Duration::from_millis(1500),
        until(&mut ev0, |e| matches!(e, ClientEvent::Connected { .. })),
    )
    .await;
    assert!(r.is_err(), "connected without trusting the certificate");
    drop(untrusting);

    let (client, mut ev) = Client::builder(&server.wss_url())
        .config(quick(token("gus", None)))
        .root_certificates_pem(cert.cert.pem().as_bytes())
        .unwrap()
        .start()
        .unwrap();
    client.subscribe("chat:tls", true);
    client.connect();
    until(&mut ev, |e| matches!(e, ClientEvent::Subscribed { .. })).await;
    client.publish("chat:tls", &br#"{"over":"tls"}"#[..]).await.unwrap();
    let p = until(&mut ev, |e| matches!(e, ClientEvent::Publication { .. })).await;
    assert!(
        matches!(p, ClientEvent::Publication { ref data, .. } if data == &Bytes::from_static(br#"{"over":"tls"}"#)),
        "{p:?}"
    );
    assert!(Client::builder(&server.wss_url()).root_certificates_pem(b"not a pem").is_err());
    assert!(Client::start("http://x/", ClientConfig::default()).is_err());
    assert!(Client::start("ws://:80/", ClientConfig::default()).is_err());
    assert!(Client::start("ws://h:99999/", ClientConfig::default()).is_err());
}

async fn publications(ev: &mut UnboundedReceiver<ClientEvent>, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < n {
        if let ClientEvent::Publication { data, .. } = until(ev, |e| matches!(e, ClientEvent::Publication { .. })).await {
            got.push(String::from_utf8_lossy(&data).into_owned());
        }
    }
    got
}

/// With the Redis engine, history outlives a node: the client's node is drained (SIGTERM)
/// and later killed (SIGKILL) while another node keeps publishing, and after each restart
/// the client recovers every publication made meanwhile, in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_across_restarts_with_the_redis_engine() {
    let redis = wshub_testkit::redis::RedisServer::start().await;
    let engine = json!({"type": "redis", "redis": {"address": redis.url(), "prefix": format!("t{}", unique())}});
    let cfg = Server::config(json!({ "engine": engine }));
    let (port_a, port_b) = (free_port(), free_port());
    let mut a = Server::start(cfg.clone(), port_a).await;
    let b = Server::start(cfg.clone(), port_b).await;
    let (client, mut ev) = Client::start(&a.url(), quick(token("hal", None))).unwrap();
    client.subscribe("chat:room", true);
    client.connect();
    until(&mut ev, |e| matches!(e, ClientEvent::Subscribed { .. })).await;
    // Published on node B, delivered by node A.
    b.api("publish", json!({"channel": "chat:room", "data": {"n": 1}})).await;
    assert_eq!(publications(&mut ev, 1).await, vec![r#"{"n":1}"#]);

    let mut n = 1;
    for signal in ["-TERM", "-KILL"] {
        a.signal(signal).await;
        until(&mut ev, |e| matches!(e, ClientEvent::Connecting { .. })).await;
        let mut expected = Vec::new();
        for _ in 0..3 {
            n += 1;
            let r = b.api("publish", json!({"channel": "chat:room", "data": {"n": n}})).await;
            assert_eq!(r["result"]["offset"], json!(n), "{r}");
            expected.push(format!(r#"{{"n":{n}}}"#));
        }
        a = Server::start(cfg.clone(), port_a).await;
        assert_recovered(&mut ev, &format!("after {signal}")).await;
        assert_eq!(
            publications(&mut ev, 3).await,
            expected,
            "after {signal}: every missed publication, in order, once"
        );
    }
    n += 1;
    b.api("publish", json!({"channel": "chat:room", "data": {"n": n}})).await;
    assert_eq!(publications(&mut ev, 1).await, vec![format!(r#"{{"n":{n}}}"#)]);
    drop(a);
}

/// Two nodes on one Redis: joins, leaves, presence and history are the channel's, not the
/// node's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_presence_joins_and_history() {
    let redis = wshub_testkit::redis::RedisServer::start().await;
    // Presence entries live 4 s unless refreshed; sessions refresh them every
    // `presence_update_interval` (1 s). The margin (three missed refreshes) is for a loaded
    // machine: this test runs beside a dozen others and their servers on two cores.
    let engine = json!({"type": "redis", "redis": {"address": redis.url(), "prefix": format!("t{}", unique()), "presence_ttl": "4s"}});
    let client =
        json!({"token": {"hmac_secret_key": SECRET}, "ping_interval": "1s", "pong_timeout": "500ms", "presence_update_interval": "1s"});
    let cfg = Server::config(json!({ "engine": engine, "client": client }));
    let a = Server::start(cfg.clone(), free_port()).await;
    let b = Server::start(cfg, free_port()).await;
    let (x, mut xev) = Client::start(&a.url(), quick(token("xavier", None))).unwrap();
    x.subscribe("chat:p", false);
    x.connect();
    until(&mut xev, |e| matches!(e, ClientEvent::Subscribed { .. })).await;
    let (y, mut yev) = Client::start(&b.url(), quick(token("yann", None))).unwrap();
    y.subscribe("chat:p", false);
    y.connect();
    until(&mut yev, |e| matches!(e, ClientEvent::Subscribed { .. })).await;

    // (X also sees its own join; Y's comes from node B through Redis.)
    until(&mut xev, |e| matches!(e, ClientEvent::Join { info, .. } if info.user == "yann")).await;
    let p = x.presence("chat:p").await.unwrap();
    let mut users: Vec<&str> = p.presence.values().map(|i| i.user.as_str()).collect();
    users.sort();
    assert_eq!(users, vec!["xavier", "yann"]);
    let stats = b.api("presence_stats", json!({"channel": "chat:p"})).await;
    assert_eq!(stats["result"]["num_clients"], json!(2), "{stats}");
    // Past twice the presence ttl, both are still there: refreshed, not expired.
    let until_t = Instant::now() + Duration::from_secs(9);
    while Instant::now() < until_t {
        let stats = a.api("presence_stats", json!({"channel": "chat:p"})).await;
        assert_eq!(stats["result"]["num_clients"], json!(2), "{stats}");
        tokio::time::sleep(Duration::from_millis(250)).await; // letting time pass is the scenario
    }

    // A client publication on node B reaches node A's subscriber; history is shared.
    y.publish("chat:p", &br#"{"from":"b"}"#[..]).await.unwrap();
    let got = publications(&mut xev, 1).await;
    assert_eq!(got, vec![r#"{"from":"b"}"#]);
    let h = a.api("history", json!({"channel": "chat:p", "limit": -1})).await;
    assert_eq!(h["result"]["publications"][0]["data"], json!({"from": "b"}), "{h}");

    y.disconnect();
    let l = until(&mut xev, |e| matches!(e, ClientEvent::Leave { .. })).await;
    assert!(matches!(l, ClientEvent::Leave { ref info, .. } if info.user == "yann"), "{l:?}");
    let p = x.presence("chat:p").await.unwrap();
    assert_eq!(p.presence.len(), 1, "{p:?}");
}

/// Redis restarts empty (its data lost): the stream begins again under a new epoch. The
/// node notices the discontinuity at the next publication and closes the client with 3010;
/// the client reconnects, learns it could not recover, and receives what comes next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_losing_its_data_is_not_silent() {
    let mut redis = wshub_testkit::redis::RedisServer::start().await;
    let redis_port = redis.port;
    let engine = json!({"type": "redis", "redis": {"address": redis.url(), "prefix": format!("t{}", unique())}});
    let server = Server::start(Server::config(json!({ "engine": engine })), free_port()).await;
    let (client, mut ev) = Client::start(&server.url(), quick(token("ivy", None))).unwrap();
    client.subscribe("chat:room", true);
    client.connect();
    until(&mut ev, |e| matches!(e, ClientEvent::Subscribed { .. })).await;
    for n in 1..=3 {
        server.api("publish", json!({"channel": "chat:room", "data": {"n": n}})).await;
    }
    assert_eq!(publications(&mut ev, 3).await.len(), 3);

    redis.stop();
    let _redis = wshub_testkit::redis::RedisServer::start_on(redis_port).await;
    // Publish until the node has its connections back and the client has been told.
    let deadline = Instant::now() + LIMIT;
    let mut n = 100;
    let told = loop {
        assert!(Instant::now() < deadline, "the client was never told");
        n += 1;
        server.api("publish", json!({"channel": "chat:room", "data": {"n": n}})).await;
        match tokio::time::timeout(Duration::from_millis(200), ev.recv()).await {
            Ok(Some(e @ ClientEvent::Connecting { .. })) => break e,
            Ok(Some(ClientEvent::Publication { data, .. })) => panic!("delivered across the reset: {data:?}"),
            _ => {}
        }
    };
    assert!(matches!(told, ClientEvent::Connecting { code: 3010, .. }), "{told:?}");
    let sub = until(&mut ev, |e| matches!(e, ClientEvent::Subscribed { .. })).await;
    assert!(matches!(sub, ClientEvent::Subscribed { recovered: false, .. }), "{sub:?}");
    server
        .api("publish", json!({"channel": "chat:room", "data": {"after": "reset"}}))
        .await;
    // The loop's last publications may come after the new subscription's position (the
    // client resubscribed while they were being published): they arrive first, live, in
    // the new stream's order.
    let mut last = 0;
    loop {
        let p = until(&mut ev, |e| matches!(e, ClientEvent::Publication { .. })).await;
        let ClientEvent::Publication { data, offset, .. } = p else {
            unreachable!()
        };
        assert!(offset > last, "offsets of the new stream in order: {offset} after {last}");
        last = offset;
        if data == Bytes::from_static(br#"{"after":"reset"}"#) {
            break;
        }
        let v: serde_json::Value = serde_json::from_slice(&data).unwrap();
        assert!(
            v["n"].as_u64().is_some_and(|x| x > 100),
            "only the loop's publications before it: {v}"
        );
    }
}

/// A recoverable delta subscription of `client` to `channel`; connects, returns once
/// subscribed.
async fn delta_subscription(client: &Client, channel: &str) -> wshub_client::Subscription {
    let mut sub = client.new_subscription(
        channel,
        SubscriptionOptions {
            recoverable: true,
            delta: true,
            ..Default::default()
        },
    );
    client.connect();
    next(&mut sub, |e| matches!(e, ClientEvent::Subscribed { .. })).await;
    sub
}

/// Delta compression, JSON and Protobuf: the server sends deltas (the session tests check
/// the wire), the client decodes them and hands whole documents to the application, live
/// and after a recovery; a tags filter lets through only what it matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_subscriptions_decode_and_tags_filters_select() {
    let server = Server::start(
        Server::config(json!({"channel": {"namespaces": [
            {"name": "delta", "history_size": 100, "history_ttl": "300s", "force_recovery": true, "allow_subscribe_for_client": true,
             "allowed_delta_types": ["fossil"], "delta_publish": true},
            {"name": "tags", "allow_subscribe_for_client": true, "allow_tags_filter": true}
        ]}})),
        free_port(),
    )
    .await;
    let doc = |v: u32| {
        let rows: Vec<_> = (0..100)
            .map(|i| json!({"id": i, "value": if i % 10 == v % 10 { v } else { i * 7 }, "note": "lorem ipsum dolor"}))
            .collect();
        json!({"version": v, "rows": rows})
    };
    for format in [wshub_protocol::Format::Json, wshub_protocol::Format::Protobuf] {
        let conf = ClientConfig {
            format,
            ..quick(token("delta", None))
        };
        let (client, mut ev) = Client::start(&server.url(), conf).unwrap();
        let channel = format!("delta:{format:?}");
        let mut sub = delta_subscription(&client, &channel).await;
        let mut got = Vec::new();
        let mut deltas = Vec::new();
        for v in 1..=3 {
            server.api("publish", json!({"channel": channel, "data": doc(v)})).await;
            if let ClientEvent::Publication { data, delta, .. } = next(&mut sub, |e| matches!(e, ClientEvent::Publication { .. })).await {
                got.push(serde_json::from_slice::<serde_json::Value>(&data).unwrap());
                deltas.push(delta);
            }
        }
        client.disconnect();
        until(&mut ev, |e| matches!(e, ClientEvent::Disconnected { .. })).await;
        for v in 4..=5 {
            server.api("publish", json!({"channel": channel, "data": doc(v)})).await;
        }
        client.connect();
        for v in 4..=6 {
            if v == 6 {
                server.api("publish", json!({"channel": channel, "data": doc(v)})).await;
            }
            if let ClientEvent::Publication { data, delta, .. } = next(&mut sub, |e| matches!(e, ClientEvent::Publication { .. })).await {
                got.push(serde_json::from_slice::<serde_json::Value>(&data).unwrap());
                deltas.push(delta);
            }
        }
        assert_eq!(got, (1..=6).map(doc).collect::<Vec<_>>(), "{format:?}");
        // Whole first, deltas; after the recovery the chain starts again whole.
        assert_eq!(deltas, vec![false, true, true, false, true, true], "{format:?}");

        let filter = wshub_protocol::FilterNode {
            key: "kind".into(),
            cmp: "in".into(),
            vals: vec!["a".into(), "c".into()],
            ..Default::default()
        };
        let tags_channel = format!("tags:{format:?}");
        let mut tsub = client.new_subscription(
            &tags_channel,
            SubscriptionOptions {
                tags_filter: Some(filter),
                ..Default::default()
            },
        );
        next(&mut tsub, |e| matches!(e, ClientEvent::Subscribed { .. })).await;
        for kind in ["a", "b", "c"] {
            server
                .api(
                    "publish",
                    json!({"channel": tags_channel, "data": {"kind": kind}, "tags": {"kind": kind}}),
                )
                .await;
        }
        let mut kinds = Vec::new();
        for _ in 0..2 {
            if let ClientEvent::Publication { data, .. } = next(&mut tsub, |e| matches!(e, ClientEvent::Publication { .. })).await {
                kinds.push(serde_json::from_slice::<serde_json::Value>(&data).unwrap()["kind"].clone());
            }
        }
        assert_eq!(kinds, vec![json!("a"), json!("c")]);
        client.disconnect();
    }
}

/// Delta across nodes: published on node A with `delta: true`, the publication reaches node
/// B through Redis still marked, and B's delta subscriber gets deltas (computed on B).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_across_nodes_through_redis() {
    let redis = wshub_testkit::redis::RedisServer::start().await;
    let engine = json!({"type": "redis", "redis": {"address": redis.url(), "prefix": format!("t{}", unique())}});
    let channel = json!({"namespaces": [{"name": "doc", "history_size": 10, "history_ttl": "300s", "force_recovery": true,
        "allow_subscribe_for_client": true, "allowed_delta_types": ["fossil"]}]});
    let cfg = Server::config(json!({ "engine": engine, "channel": channel }));
    let a = Server::start(cfg.clone(), free_port()).await;
    let b = Server::start(cfg, free_port()).await;
    let (client, _ev) = Client::start(&b.url(), quick(token("dora", None))).unwrap();
    let mut sub = delta_subscription(&client, "doc:1").await;
    let doc = |v: u32| json!({"v": v, "body": "lorem ipsum dolor sit amet ".repeat(30)});
    let mut got = Vec::new();
    for v in 1..=3 {
        a.api("publish", json!({"channel": "doc:1", "data": doc(v), "delta": true})).await;
        if let ClientEvent::Publication { data, delta, .. } = next(&mut sub, |e| matches!(e, ClientEvent::Publication { .. })).await {
            got.push((serde_json::from_slice::<serde_json::Value>(&data).unwrap(), delta));
        }
    }
    assert_eq!(got, vec![(doc(1), false), (doc(2), true), (doc(3), true)]);
    let h = a.api("history", json!({"channel": "doc:1", "limit": -1})).await;
    assert!(
        h["result"]["publications"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p.get("delta").is_none()),
        "{h}"
    );
}
