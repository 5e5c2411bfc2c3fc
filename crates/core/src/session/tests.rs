//! The session driven with a fake clock and a recording connection: connect, act, drive,
//! assert replies.

use super::*;
use crate::config::{Namespace, NodeConfig, TokenConfig};
use crate::connection::testing::Recorder;
use crate::engine::{Broker as _, PresenceManager as _};
use crate::memory::MemoryEngine;
use crate::token::make_hs256;
use parking_lot::Mutex;
use serde_json::json;
use std::future::Future;

pub(super) const SECRET: &str = "secret";

/// Runs a future that must complete at once (the memory engine never waits).
pub(super) fn now_or_never<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("pending on the memory engine"),
    }
}

/// Broker and presence manager from different backends: each concept goes to its own.
#[test]
fn broker_and_presence_may_come_from_different_engines() {
    let base = node_with(|_| {});
    let broker = Arc::new(MemoryEngine::default());
    let presence = Arc::new(MemoryEngine::default());
    let node = Node::with_parts(base.config.clone(), broker.clone(), presence.clone()).unwrap();
    let mut a = Client::new(&node, start());
    a.connect("42");
    let (r, _) = a.send(r#"{"id":2,"subscribe":{"channel":"chat:1"}}"#);
    assert!(r[0]["subscribe"].is_object(), "{r:?}");
    now_or_never(node.publish("chat:1", Bytes::from_static(b"1"), None, false, HashMap::new())).unwrap();
    let pushes = a.pushes();
    assert_eq!(pushes.last().unwrap()["push"]["pub"]["data"], 1, "through the broker: {pushes:?}");
    assert_eq!(now_or_never(presence.presence("chat:1")).unwrap().len(), 1);
    assert!(now_or_never(broker.presence("chat:1")).unwrap().is_empty());
    let top = now_or_never(broker.history("chat:1", HistoryQuery::default())).unwrap().position;
    assert_eq!(top.offset, 1);
}

pub(super) fn node_with(f: impl FnOnce(&mut NodeConfig)) -> Arc<Node> {
    let mut cfg = NodeConfig {
        token: TokenConfig {
            hmac_secret_key: SECRET.into(),
            ..Default::default()
        },
        ..Default::default()
    };
    cfg.channel.without_namespace.allow_subscribe_for_client = true;
    cfg.channel.namespaces = vec![
        Namespace {
            name: "chat".into(),
            options: ChannelOptions {
                presence: true,
                join_leave: true,
                history_size: 10,
                history_ttl: Duration::from_secs(300),
                force_recovery: true,
                allow_subscribe_for_client: true,
                allow_publish_for_subscriber: true,
                allow_presence_for_subscriber: true,
                allow_history_for_subscriber: true,
                ..Default::default()
            },
        },
        Namespace {
            name: "private".into(),
            options: ChannelOptions {
                allow_user_limited_channels: true,
                ..Default::default()
            },
        },
    ];
    f(&mut cfg);
    Node::new(cfg, Arc::new(MemoryEngine::default())).unwrap()
}

pub(super) struct Client {
    pub(super) session: Session,
    conn: Arc<Recorder>,
    pub(super) now: Now,
}

impl Client {
    pub(super) fn new(node: &Arc<Node>, now: Now) -> Self {
        let conn = Recorder::new(Format::Json);
        Client {
            session: Session::new(node.clone(), conn.clone(), now),
            conn,
            now,
        }
    }

    /// Sends JSON commands; returns the decoded replies and the disconnect, if any.
    pub(super) fn send(&mut self, json: &str) -> (Vec<serde_json::Value>, Option<u16>) {
        let out = now_or_never(self.session.handle_frame(Bytes::from(json.to_string()), self.now));
        decode(out)
    }

    pub(super) fn connect(&mut self, user: &str) -> serde_json::Value {
        let token = make_hs256(SECRET, &json!({"sub": user})).unwrap();
        let (r, d) = self.send(&format!(r#"{{"id":1,"connect":{{"token":"{token}"}}}}"#));
        assert_eq!(d, None, "{r:?}");
        r[0]["connect"].clone()
    }

    pub(super) fn pushes(&self) -> Vec<serde_json::Value> {
        self.conn
            .payloads
            .lock()
            .drain(..)
            .map(|b| serde_json::from_slice(&b).unwrap())
            .collect()
    }

    pub(super) fn tick(&mut self, d: Duration) -> (Vec<serde_json::Value>, Option<u16>) {
        self.now = self.now.after(d);
        decode(now_or_never(self.session.handle_timeout(self.now)))
    }
}

fn decode(out: Output) -> (Vec<serde_json::Value>, Option<u16>) {
    let replies = out
        .frame
        .map(|f| f.split(|b| *b == b'\n').map(|l| serde_json::from_slice(l).unwrap()).collect())
        .unwrap_or_default();
    (replies, out.disconnect.map(|d| d.0))
}

/// A new client of `user` subscribing to `chat:1` with recovery from `offset` of `epoch`:
/// how many publications it recovered (it must have recovered).
fn recovered_from(node: &Arc<Node>, user: &str, epoch: &str, offset: u64) -> usize {
    let mut c = Client::new(node, start());
    c.connect(user);
    let (r, _) = c.send(&format!(
        r#"{{"id":2,"subscribe":{{"channel":"chat:1","recover":true,"offset":{offset},"epoch":"{epoch}"}}}}"#
    ));
    assert_eq!(r[0]["subscribe"]["recovered"], true, "{r:?}");
    r[0]["subscribe"]["publications"].as_array().unwrap().len()
}

pub(super) fn start() -> Now {
    Now {
        mono: Instant::now(),
        unix: 1_700_000_000,
    }
}

#[test]
fn first_command_must_be_connect() {
    let node = node_with(|_| {});
    let mut c = Client::new(&node, start());
    assert_eq!(c.send(r#"{"id":1,"subscribe":{"channel":"news"}}"#).1, Some(3501));
    let mut c = Client::new(&node, start());
    assert_eq!(c.send("not json").1, Some(3501));
}

#[test]
fn connect_with_token_anonymous_and_bad_tokens() {
    let node = node_with(|_| {});
    let mut c = Client::new(&node, start());
    let r = c.connect("42");
    assert_eq!(r["ping"], 25);
    assert_eq!(r["pong"], true);
    assert_eq!(r["client"].as_str().unwrap().len(), 36);
    assert_eq!(node.user_connections("42"), 1);
    // A second connect on the same connection.
    assert_eq!(c.send(r#"{"id":2,"connect":{}}"#).1, Some(3501));

    let mut anon = Client::new(&node, start());
    assert_eq!(anon.send(r#"{"id":1,"connect":{}}"#).1, Some(3500), "anonymous not allowed");
    let open = node_with(|c| c.session.allow_anonymous_connect_without_token = true);
    let mut anon = Client::new(&open, start());
    let (r, d) = anon.send(r#"{"id":1,"connect":{}}"#);
    assert_eq!(d, None);
    assert!(r[0]["connect"]["client"].is_string());

    let mut bad = Client::new(&node, start());
    let forged = make_hs256("wrong", &json!({"sub": "42"})).unwrap();
    assert_eq!(bad.send(&format!(r#"{{"id":1,"connect":{{"token":"{forged}"}}}}"#)).1, Some(3500));
    let mut expired = Client::new(&node, start());
    let old = make_hs256(SECRET, &json!({"sub": "42", "exp": 1_600_000_000u64})).unwrap();
    let (r, d) = expired.send(&format!(r#"{{"id":1,"connect":{{"token":"{old}"}}}}"#));
    assert_eq!(d, None);
    assert_eq!(r[0]["error"]["code"], 109);
}

#[test]
fn subscribe_rules() {
    let node = node_with(|c| c.session.channel_limit = 3);
    let mut c = Client::new(&node, start());
    c.connect("42");
    let code = |c: &mut Client, cmd: &str| c.send(cmd).0[0]["error"]["code"].as_u64();
    assert_eq!(code(&mut c, r#"{"id":2,"subscribe":{"channel":"news"}}"#), None);
    assert_eq!(code(&mut c, r#"{"id":3,"subscribe":{"channel":"news"}}"#), Some(105));
    assert_eq!(code(&mut c, r#"{"id":4,"subscribe":{"channel":"nope:x"}}"#), Some(102));
    assert_eq!(code(&mut c, r#"{"id":5,"subscribe":{"channel":"private:x"}}"#), Some(103));
    assert_eq!(
        code(&mut c, r#"{"id":6,"subscribe":{"channel":"private:x#42"}}"#),
        None,
        "user-limited for 42"
    );
    assert_eq!(code(&mut c, r#"{"id":7,"subscribe":{"channel":"private:y#43"}}"#), Some(103));
    let tok = make_hs256(SECRET, &json!({"sub": "42", "channel": "private:z"})).unwrap();
    assert_eq!(
        code(
            &mut c,
            &format!(r#"{{"id":8,"subscribe":{{"channel":"private:z","token":"{tok}"}}}}"#)
        ),
        None,
        "subscription token"
    );
    assert_eq!(
        code(&mut c, r#"{"id":9,"subscribe":{"channel":"other"}}"#),
        Some(106),
        "channel limit"
    );
    assert_eq!(code(&mut c, r#"{"id":10,"subscribe":{"channel":""}}"#), Some(107));
    c.send(r#"{"id":11,"unsubscribe":{"channel":"news"}}"#);
    // An invalid subscription token refuses that subscription (103) and keeps the
    // connection, as Centrifugo does (centrifuge-python's suite checks it).
    let forged = make_hs256("wrong", &json!({"sub": "42", "channel": "private:w"})).unwrap();
    let (r, d) = c.send(&format!(r#"{{"id":13,"subscribe":{{"channel":"private:w","token":"{forged}"}}}}"#));
    assert_eq!((r[0]["error"]["code"].clone(), d), (json!(103), None), "bad signature");
    let (r, d) = c.send(r#"{"id":15,"presence_stats":{"channel":"private:z"}}"#);
    assert_eq!(
        (r[0]["error"]["code"].clone(), d),
        (json!(108), None),
        "still connected and answering"
    );
    // A valid token made for someone else, or a bad one on sub_refresh, closes with 3500
    // (Centrifugo: "token user mismatch", "invalid subscription refresh token").
    let (_, d) = c.send(&format!(
        r#"{{"id":14,"sub_refresh":{{"channel":"private:z","token":"{forged}"}}}}"#
    ));
    assert_eq!(d, Some(3500), "sub_refresh with a bad token");
    let mut c = Client::new(&node, start());
    c.connect("42");
    let other = make_hs256(SECRET, &json!({"sub": "7", "channel": "private:w"})).unwrap();
    let (_, d) = c.send(&format!(r#"{{"id":12,"subscribe":{{"channel":"private:w","token":"{other}"}}}}"#));
    assert_eq!(d, Some(3500), "token of another user");
}

#[test]
fn tags_filter_needs_the_namespace_and_a_valid_filter() {
    let node = node_with(|c| c.channel.namespaces[0].options.allow_tags_filter = true);
    let mut c = Client::new(&node, start());
    c.connect("42");
    let (r, d) = c.send(r#"{"id":2,"subscribe":{"channel":"news","tf":{"key":"ticker","cmp":"eq","val":"AAPL"}}}"#);
    assert_eq!((r[0]["error"]["code"].clone(), d), (json!(107), None), "not allowed here");
    assert_eq!(node.hub.num_subscribers("news"), 0, "not subscribed");
    let (r, d) = c.send(r#"{"id":3,"subscribe":{"channel":"chat:1","tf":{"key":"ticker","cmp":"like","val":"A"}}}"#);
    assert_eq!((r[0]["error"]["code"].clone(), d), (json!(107), None), "unknown comparison");
    let (r, d) = c.send(r#"{"id":4,"subscribe":{"channel":"chat:1","tf":{"op":"not","nodes":[]}}}"#);
    assert_eq!((r[0]["error"]["code"].clone(), d), (json!(107), None), "not without a child");
    let (r, d) = c.send(r#"{"id":5,"subscribe":{"channel":"chat:1","tf":{"key":"ticker","cmp":"in","vals":["AAPL","MSFT"]}}}"#);
    assert!(r[0]["subscribe"].is_object() && d.is_none(), "{r:?}");
    c.pushes();
    let publish = |data: &'static str, ticker: &str| {
        let tags = HashMap::from([("ticker".to_string(), ticker.to_string())]);
        now_or_never(node.publish("chat:1", Bytes::from_static(data.as_bytes()), None, false, tags)).unwrap();
    };
    publish("1", "AAPL");
    publish("2", "GOOG");
    publish("3", "MSFT");
    let got: Vec<_> = c.pushes().iter().map(|p| p["push"]["pub"]["data"].clone()).collect();
    assert_eq!(got, vec![json!(1), json!(3)]);
    // Recovery from offset 0 after an unsubscribe: only what passes the filter comes back.
    c.send(r#"{"id":6,"unsubscribe":{"channel":"chat:1"}}"#);
    publish("4", "GOOG");
    publish("5", "AAPL");
    let epoch = now_or_never(node.history("chat:1", HistoryQuery::default()))
        .unwrap()
        .position
        .epoch;
    let (r, _) = c.send(&format!(
        r#"{{"id":7,"subscribe":{{"channel":"chat:1","recover":true,"offset":3,"epoch":"{epoch}","tf":{{"key":"ticker","cmp":"eq","val":"AAPL"}}}}}}"#
    ));
    let s = &r[0]["subscribe"];
    assert_eq!(s["recovered"], true, "{r:?}");
    let recovered: Vec<_> = s["publications"].as_array().unwrap().iter().map(|p| p["data"].clone()).collect();
    assert_eq!(recovered, vec![json!(5)], "offset 4 filtered out");
}

fn fossil_apply(prev: &[u8], p: &serde_json::Value) -> Vec<u8> {
    let data = p["data"].as_str().expect("delta subscribers get data as a JSON string").as_bytes();
    if p["delta"] == true {
        wshub_protocol::fossil::apply(prev, data, usize::MAX).unwrap()
    } else {
        data.to_vec()
    }
}

#[test]
fn delta_subscribers_get_deltas_live_and_recovered() {
    let node = node_with(|c| {
        let o = &mut c.channel.namespaces[0].options;
        o.allowed_delta_types = vec!["fossil".into()];
        o.delta_publish = true;
    });
    let doc = |n: u32| format!("{{\"n\":{n},\"text\":\"{}\"}}", "lorem ipsum ".repeat(40));
    let mut c = Client::new(&node, start());
    c.connect("42");
    let mut plain = Client::new(&node, start());
    plain.connect("43");
    plain.send(r#"{"id":2,"subscribe":{"channel":"chat:1"}}"#);
    let (r, _) = c.send(r#"{"id":2,"subscribe":{"channel":"chat:1","delta":"fossil"}}"#);
    assert_eq!(r[0]["subscribe"]["delta"], true, "{r:?}");
    c.pushes();
    plain.pushes();
    for n in 1..=3 {
        now_or_never(node.publish("chat:1", Bytes::from(doc(n)), None, false, HashMap::new())).unwrap();
    }
    let pushes = c.pushes();
    let flags: Vec<_> = pushes.iter().map(|p| p["push"]["pub"]["delta"] == true).collect();
    assert_eq!(flags, vec![false, true, true], "first whole, then deltas");
    let mut prev = Vec::new();
    for (n, p) in (1..=3).zip(&pushes) {
        prev = fossil_apply(&prev, &p["push"]["pub"]);
        assert_eq!(prev, doc(n).into_bytes());
    }
    let plain_pushes = plain.pushes();
    assert!(plain_pushes
        .iter()
        .all(|p| p["push"]["pub"]["delta"].is_null() && p["push"]["pub"]["data"]["n"].is_number()));

    // Recovery: the missed publications come as a chain (first whole), then live deltas.
    c.send(r#"{"id":3,"unsubscribe":{"channel":"chat:1"}}"#);
    for n in 4..=5 {
        now_or_never(node.publish("chat:1", Bytes::from(doc(n)), None, false, HashMap::new())).unwrap();
    }
    let epoch = now_or_never(node.history("chat:1", HistoryQuery::default()))
        .unwrap()
        .position
        .epoch;
    let (r, _) = c.send(&format!(
        r#"{{"id":4,"subscribe":{{"channel":"chat:1","delta":"fossil","recover":true,"offset":3,"epoch":"{epoch}"}}}}"#
    ));
    let s = &r[0]["subscribe"];
    assert_eq!((s["recovered"].clone(), s["delta"].clone()), (json!(true), json!(true)), "{r:?}");
    let recovered = s["publications"].as_array().unwrap();
    assert_eq!(recovered.iter().map(|p| p["delta"] == true).collect::<Vec<_>>(), vec![false, true]);
    let mut prev = Vec::new();
    for (n, p) in (4..=5).zip(recovered) {
        prev = fossil_apply(&prev, p);
        assert_eq!(prev, doc(n).into_bytes());
    }
    now_or_never(node.publish("chat:1", Bytes::from(doc(6)), None, false, HashMap::new())).unwrap();
    let live = c.pushes();
    assert_eq!(live[0]["push"]["pub"]["delta"], true, "delta against the last recovered one");
    assert_eq!(fossil_apply(&prev, &live[0]["push"]["pub"]), doc(6).into_bytes());
    // History through the API never shows the internal mark.
    let h = now_or_never(node.history("chat:1", HistoryQuery::ALL)).unwrap();
    assert!(h.publications.iter().all(|p| !p.delta));
}

/// centrifugal/centrifuge#629 (Centrifugo 6.9.6): a delta subscriber whose recovery found
/// nothing (its offset is the top) has been sent no base, so the next live publication
/// goes out whole, not as a delta against a publication it never received.
#[test]
fn no_delta_after_a_recovery_that_found_nothing() {
    let node = node_with(|c| {
        let o = &mut c.channel.namespaces[0].options;
        o.allowed_delta_types = vec!["fossil".into()];
        o.delta_publish = true;
    });
    let doc = |n: u32| format!("{{\"n\":{n},\"text\":\"{}\"}}", "lorem ipsum ".repeat(40));
    for n in 1..=2 {
        now_or_never(node.publish("chat:1", Bytes::from(doc(n)), None, false, HashMap::new())).unwrap();
    }
    let epoch = now_or_never(node.history("chat:1", HistoryQuery::default()))
        .unwrap()
        .position
        .epoch;
    let mut c = Client::new(&node, start());
    c.connect("42");
    let (r, _) = c.send(&format!(
        r#"{{"id":2,"subscribe":{{"channel":"chat:1","delta":"fossil","recover":true,"offset":2,"epoch":"{epoch}"}}}}"#
    ));
    let s = &r[0]["subscribe"];
    assert_eq!((s["recovered"].clone(), s["delta"].clone()), (json!(true), json!(true)), "{r:?}");
    assert!(
        s["publications"].as_array().is_none_or(|p| p.is_empty()),
        "nothing to recover: {r:?}"
    );
    now_or_never(node.publish("chat:1", Bytes::from(doc(3)), None, false, HashMap::new())).unwrap();
    now_or_never(node.publish("chat:1", Bytes::from(doc(4)), None, false, HashMap::new())).unwrap();
    let live = c.pushes();
    let flags: Vec<_> = live.iter().map(|p| p["push"]["pub"]["delta"] == true).collect();
    assert_eq!(flags, vec![false, true], "the base first, whole; then deltas");
    let mut prev = Vec::new();
    for (n, p) in (3..=4).zip(&live) {
        prev = fossil_apply(&prev, &p["push"]["pub"]);
        assert_eq!(prev, doc(n).into_bytes());
    }
}

#[test]
fn delta_only_where_allowed_and_unknown_types_close() {
    let node = node_with(|_| {});
    let mut c = Client::new(&node, start());
    c.connect("42");
    let (r, _) = c.send(r#"{"id":2,"subscribe":{"channel":"chat:1","delta":"fossil"}}"#);
    assert!(
        r[0]["subscribe"].is_object() && r[0]["subscribe"]["delta"].is_null(),
        "not negotiated: {r:?}"
    );
    assert_eq!(c.send(r#"{"id":3,"subscribe":{"channel":"news","delta":"xdelta"}}"#).1, Some(3501));
}

#[test]
fn token_channels_count_against_the_channel_limit() {
    let node = node_with(|c| c.session.channel_limit = 2);
    let mut c = Client::new(&node, start());
    let token = make_hs256(SECRET, &json!({"sub": "42", "channels": ["a", "b", "c"]})).unwrap();
    let (r, d) = c.send(&format!(r#"{{"id":1,"connect":{{"token":"{token}"}}}}"#));
    assert_eq!((r[0]["error"]["code"].clone(), d), (json!(106), None));
    assert_eq!(node.user_connections("42"), 0, "nothing registered");
    assert_eq!(node.hub.num_subscribers("a"), 0);
    let mut ok = Client::new(&node, start());
    let token = make_hs256(SECRET, &json!({"sub": "42", "channels": ["a", "b"]})).unwrap();
    let (r, d) = ok.send(&format!(r#"{{"id":1,"connect":{{"token":"{token}"}}}}"#));
    assert_eq!(d, None);
    assert_eq!(r[0]["connect"]["subs"].as_object().unwrap().len(), 2);
    // A server-side subscribe over the limit is not made either.
    let (r, d) = decode(now_or_never(
        ok.session.handle_control(Control::Subscribe { channel: "c".into() }, ok.now),
    ));
    assert_eq!((r.len(), d), (0, None));
    assert_eq!(node.hub.num_subscribers("c"), 0);
}

#[test]
fn history_and_recovery_are_capped() {
    let node = node_with(|c| {
        c.session.history_max_publication_limit = 3;
        c.session.recovery_max_publication_limit = 4;
    });
    let mut a = Client::new(&node, start());
    a.connect("42");
    let (r, _) = a.send(r#"{"id":2,"subscribe":{"channel":"chat:1"}}"#);
    let epoch = r[0]["subscribe"]["epoch"].as_str().unwrap().to_string();
    for i in 0..5 {
        now_or_never(node.publish("chat:1", Bytes::from(format!("{i}")), None, false, HashMap::new())).unwrap();
    }
    for limit in [-1, 5, 300] {
        let (r, _) = a.send(&format!(r#"{{"id":3,"history":{{"channel":"chat:1","limit":{limit}}}}}"#));
        assert_eq!(r[0]["history"]["publications"].as_array().unwrap().len(), 3, "limit {limit}");
    }
    let (r, _) = a.send(r#"{"id":4,"history":{"channel":"chat:1","limit":2}}"#);
    assert_eq!(r[0]["history"]["publications"].as_array().unwrap().len(), 2);
    // Missed 5 > 4: not recovered, the current position, nothing sent.
    let mut b = Client::new(&node, start());
    b.connect("43");
    let (r, _) = b.send(&format!(
        r#"{{"id":2,"subscribe":{{"channel":"chat:1","recover":true,"offset":0,"epoch":"{epoch}"}}}}"#
    ));
    let s = &r[0]["subscribe"];
    assert_eq!(
        (s["was_recovering"].clone(), s.get("recovered").cloned()),
        (json!(true), None),
        "{s}"
    );
    assert_eq!((s["offset"].clone(), s.get("publications").cloned()), (json!(5), None));
    // Missed 4: recovered.
    assert_eq!(recovered_from(&node, "44", &epoch, 1), 4);
}

#[test]
fn replies_count_against_the_queue() {
    let node = node_with(|c| c.session.queue_max_size = 4096);
    let mut a = Client::new(&node, start());
    a.connect("42");
    a.send(r#"{"id":2,"subscribe":{"channel":"chat:1"}}"#);
    let data = format!("\"{}\"", "x".repeat(500));
    for _ in 0..5 {
        now_or_never(node.publish("chat:1", Bytes::from(data.clone()), None, false, HashMap::new())).unwrap();
    }
    // One history reply (about 2.5 KB) fits.
    let (r, d) = a.send(r#"{"id":3,"history":{"channel":"chat:1","limit":-1}}"#);
    assert_eq!((r[0]["history"]["publications"].as_array().unwrap().len(), d), (5, None));
    // A frame of many: closed with 3008 once its replies pass the queue, nothing sent.
    let many: Vec<String> = (10..1000)
        .map(|i| format!(r#"{{"id":{i},"history":{{"channel":"chat:1","limit":-1}}}}"#))
        .collect();
    let (r, d) = a.send(&many.join("\n"));
    assert_eq!((r.len(), d), (0, Some(3008)));
}

#[test]
fn recovery_that_would_not_fit_the_queue_is_not_recovered() {
    let node = node_with(|c| c.session.queue_max_size = 4096);
    let mut a = Client::new(&node, start());
    a.connect("42");
    let (r, _) = a.send(r#"{"id":2,"subscribe":{"channel":"chat:1"}}"#);
    let epoch = r[0]["subscribe"]["epoch"].as_str().unwrap().to_string();
    let data = format!("\"{}\"", "x".repeat(500));
    for _ in 0..8 {
        now_or_never(node.publish("chat:1", Bytes::from(data.clone()), None, false, HashMap::new())).unwrap();
    }
    // 8 x 500 bytes missed, more than the queue holds: closing with 3008 would only bring
    // the SDK back for the same reply, so the answer is "not recovered", at the top.
    let mut b = Client::new(&node, start());
    b.connect("43");
    let sub = format!(r#"{{"id":2,"subscribe":{{"channel":"chat:1","recover":true,"offset":0,"epoch":"{epoch}"}}}}"#);
    let (r, d) = b.send(&sub);
    assert_eq!(d, None);
    let s = &r[0]["subscribe"];
    assert_eq!(
        (s.get("recovered").cloned(), s["offset"].clone(), s.get("publications").cloned()),
        (None, json!(8), None),
        "{s}"
    );
    // The same through connect's server-side subscriptions.
    let token = make_hs256(SECRET, &json!({"sub": "44", "channels": ["chat:1"]})).unwrap();
    let mut c = Client::new(&node, start());
    let connect =
        format!(r#"{{"id":1,"connect":{{"token":"{token}","subs":{{"chat:1":{{"recover":true,"offset":0,"epoch":"{epoch}"}}}}}}}}"#);
    let (r, d) = c.send(&connect);
    assert_eq!(d, None, "{r:?}");
    let s = &r[0]["connect"]["subs"]["chat:1"];
    assert_eq!((s.get("recovered").cloned(), s["offset"].clone()), (None, json!(8)), "{s}");
    // A few missed: recovered as usual.
    assert_eq!(recovered_from(&node, "45", &epoch, 6), 2);
}

#[test]
fn publication_over_the_queue_is_refused() {
    let node = node_with(|c| c.session.queue_max_size = 4096);
    let mut a = Client::new(&node, start());
    a.connect("42");
    a.send(r#"{"id":2,"subscribe":{"channel":"chat:1"}}"#);
    let big = format!("\"{}\"", "x".repeat(5000));
    let e = now_or_never(node.publish("chat:1", Bytes::from(big.clone()), None, false, HashMap::new())).unwrap_err();
    assert_eq!(e.code(), 107);
    assert!(e.message().contains("client.queue_max_size (4096 bytes)"), "{}", e.message());
    let (r, d) = a.send(&format!(r#"{{"id":3,"publish":{{"channel":"chat:1","data":{big}}}}}"#));
    assert_eq!((r[0]["error"]["code"].clone(), d), (json!(107), None));
    assert!(a.pushes().is_empty(), "nothing delivered");
    let (r, _) = a.send(r#"{"id":4,"history":{"channel":"chat:1","limit":-1}}"#);
    assert_eq!(r[0]["history"]["publications"], json!([]), "nothing stored");
    // Escapes count: 1,000 control characters in a tag take 6,000 bytes in JSON.
    let tags = HashMap::from([("t".to_string(), "\u{1}".repeat(1000))]);
    let e = now_or_never(node.publish("chat:1", Bytes::from_static(b"{}"), None, false, tags)).unwrap_err();
    assert_eq!(e.code(), 107);
    let tags = HashMap::from([("t".to_string(), "plain".repeat(600))]);
    now_or_never(node.publish("chat:1", Bytes::from_static(b"{}"), None, false, tags)).unwrap();
}

/// A node whose presence rounds do not come within the tests' hour: its next timer is
/// the ping's.
fn node_pinging_only() -> Arc<Node> {
    node_with(|c| c.session.presence_update_interval = Duration::from_secs(3600))
}

#[test]
fn heartbeat() {
    let node = node_pinging_only();
    let mut c = Client::new(&node, start());
    c.connect("1");
    let first = c.session.poll_timeout().unwrap() - c.now.mono;
    assert!(
        first >= Duration::from_millis(12_500) && first <= Duration::from_secs(25),
        "{first:?}"
    );
    let (r, d) = c.tick(first);
    assert_eq!((r, d), (vec![json!({})], None), "ping is an empty reply");
    assert_eq!(c.send("{}").1, None, "pong accepted");
    assert_eq!(c.send("{}").1, Some(3501), "pong with no ping outstanding");

    let mut c = Client::new(&node, start());
    c.connect("1");
    let first = c.session.poll_timeout().unwrap() - c.now.mono;
    c.tick(first);
    assert_eq!(c.tick(Duration::from_secs(8)).1, Some(3012), "no pong");
}

/// Connects `n` sessions on `node`; returns each one's client id and first ping delay.
fn connect_many(node: &Arc<Node>, n: usize) -> Vec<(String, Duration)> {
    (0..n)
        .map(|i| {
            let mut c = Client::new(node, start());
            let r = c.connect(&format!("u{i}"));
            let first = c.session.poll_timeout().unwrap() - c.now.mono;
            (r["client"].as_str().unwrap().to_string(), first)
        })
        .collect()
}

#[test]
fn seeded_nodes_give_the_same_client_ids_and_ping_delays() {
    let a = node_with(|_| {});
    let b = node_with(|_| {});
    a.seed_rng(7);
    b.seed_rng(7);
    let from_a = connect_many(&a, 20);
    assert_eq!(from_a, connect_many(&b, 20), "same seed, same sequence");

    let c = node_with(|_| {});
    c.seed_rng(8);
    assert_ne!(from_a, connect_many(&c, 20), "another seed, another sequence");
    a.seed_rng(7);
    assert_eq!(from_a, connect_many(&a, 20), "reseeding restarts the sequence");

    let ids: std::collections::HashSet<_> = from_a.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), from_a.len(), "distinct ids");
    for (id, _) in &from_a {
        let u = uuid::Uuid::parse_str(id).unwrap();
        assert_eq!(u.get_version(), Some(uuid::Version::Random), "{id}");
        assert_eq!(u.get_variant(), uuid::Variant::RFC4122, "{id}");
        assert_eq!(id, &u.hyphenated().to_string(), "lower-case hyphenated form");
    }
}

#[test]
fn first_ping_is_jittered_within_half_to_full_interval() {
    let node = node_with(|_| {});
    node.seed_rng(1);
    let interval = node.config.session.ping_interval;
    let delays: Vec<Duration> = connect_many(&node, 200).into_iter().map(|(_, d)| d).collect();
    for d in &delays {
        assert!(
            *d >= interval / 2 && *d <= interval,
            "{d:?} outside [{:?}, {interval:?}]",
            interval / 2
        );
    }
    let spread = *delays.iter().max().unwrap() - *delays.iter().min().unwrap();
    assert!(spread > interval / 4, "pings of sessions opened together spread out: {spread:?}");

    // The bounds themselves, over odd intervals too (nanosecond halves).
    for interval in [
        Duration::from_nanos(1),
        Duration::from_nanos(3),
        Duration::from_millis(999),
        Duration::from_secs(25),
    ] {
        for _ in 0..100 {
            let d = node.first_ping_delay(interval);
            assert!(d >= interval / 2 && d <= interval, "{d:?} for {interval:?}");
        }
    }
    assert_eq!(node.first_ping_delay(Duration::ZERO), Duration::ZERO);
}

#[test]
fn timer_table_through_the_session_lifecycle() {
    let node = node_pinging_only();
    node.seed_rng(3);
    let mut c = Client::new(&node, start());
    let stale = node.config.session.stale_delay;
    assert_eq!(c.session.poll_timeout(), Some(c.now.mono + stale), "connecting: the stale deadline");
    c.connect("1");
    let first = c.session.poll_timeout().unwrap() - c.now.mono;
    assert!(
        first <= node.config.session.ping_interval,
        "connected: the first ping, no stale deadline"
    );
    // A ping and the (passed) stale moment in one tick: only the ping is handled.
    assert_eq!(c.tick(first.max(stale)), (vec![json!({})], None));
    let pong = node.config.session.pong_timeout;
    assert_eq!(
        c.session.poll_timeout(),
        Some(c.now.mono + pong),
        "the pong deadline comes before the next ping"
    );
    assert_eq!(c.send("{}").1, None);
    assert_eq!(
        c.session.poll_timeout(),
        Some(c.now.mono + node.config.session.ping_interval),
        "pong cleared: the next ping"
    );
    now_or_never(c.session.close());
    assert_eq!(c.session.poll_timeout(), None, "closed: no timer");
    assert_eq!(c.tick(Duration::from_secs(3600)), (vec![], None));
}

#[test]
fn stale_and_expiry() {
    let node = node_with(|_| {});
    let mut c = Client::new(&node, start());
    assert_eq!(c.tick(Duration::from_secs(15)).1, Some(3502));

    let mut c = Client::new(&node, start());
    let tok = make_hs256(SECRET, &json!({"sub": "1", "exp": 1_700_000_060u64})).unwrap();
    let (r, _) = c.send(&format!(r#"{{"id":1,"connect":{{"token":"{tok}"}}}}"#));
    assert_eq!(
        (r[0]["connect"]["expires"].clone(), r[0]["connect"]["ttl"].clone()),
        (json!(true), json!(60))
    );
    // Refresh with a later token before expiry.
    let later = make_hs256(SECRET, &json!({"sub": "1", "exp": 1_700_000_200u64})).unwrap();
    let (r, d) = c.send(&format!(r#"{{"id":2,"refresh":{{"token":"{later}"}}}}"#));
    assert_eq!(d, None);
    assert_eq!(r[0]["refresh"]["ttl"], 200);
    // Pings keep being answered, then the new expiry plus the grace closes it.
    let mut closed = None;
    for _ in 0..30 {
        let (r, d) = c.tick(Duration::from_secs(10));
        if d.is_some() {
            closed = d;
            break;
        }
        if !r.is_empty() {
            c.send("{}");
        }
    }
    assert_eq!(closed, Some(3005));
    assert!(c.now.unix >= 1_700_000_200 + 25);
}

#[test]
fn publish_presence_join_leave_history() {
    let node = node_with(|_| {});
    let mut a = Client::new(&node, start());
    a.connect("alice");
    a.send(r#"{"id":2,"subscribe":{"channel":"chat:1","join_leave":true}}"#);
    let mut b = Client::new(&node, start());
    b.connect("bob");
    let (r, _) = b.send(r#"{"id":2,"publish":{"channel":"chat:1","data":{"x":1}}}"#);
    assert_eq!(r[0]["error"]["code"], 103, "publish needs a subscription here");
    b.send(r#"{"id":3,"subscribe":{"channel":"chat:1"}}"#);
    let joins = a.pushes();
    assert_eq!(joins.last().unwrap()["push"]["join"]["info"]["user"], "bob");
    let (r, _) = b.send(r#"{"id":4,"publish":{"channel":"chat:1","data":{"x":1}}}"#);
    assert_eq!(r[0], json!({"id": 4, "publish": {}}));
    let got = a.pushes();
    assert_eq!(got[0]["push"]["pub"]["data"], json!({"x": 1}));
    assert_eq!(got[0]["push"]["pub"]["offset"], 1);
    assert_eq!(got[0]["push"]["pub"]["info"]["user"], "bob");
    let (r, _) = a.send(r#"{"id":5,"presence_stats":{"channel":"chat:1"}}"#);
    assert_eq!(r[0]["presence_stats"], json!({"num_clients": 2, "num_users": 2}));
    let (r, _) = a.send(r#"{"id":6,"history":{"channel":"chat:1","limit":-1}}"#);
    assert_eq!(r[0]["history"]["publications"].as_array().unwrap().len(), 1);
    let (r, _) = a.send(r#"{"id":7,"history":{"channel":"news","limit":-1}}"#);
    assert_eq!(r[0]["error"]["code"], 108, "no history in this namespace");
    now_or_never(b.session.close());
    assert_eq!(a.pushes().last().unwrap()["push"]["leave"]["info"]["user"], "bob");
    let (r, _) = a.send(r#"{"id":8,"presence":{"channel":"chat:1"}}"#);
    assert_eq!(r[0]["presence"]["presence"].as_object().unwrap().len(), 1);
    assert_eq!(node.user_connections("bob"), 0);
    let (r, _) = a.send(r#"{"id":9,"rpc":{"method":"x"}}"#);
    assert_eq!(r[0]["error"]["code"], 108, "no RPC handler: not available");
}

#[test]
fn recovery() {
    let node = node_with(|_| {});
    let mut a = Client::new(&node, start());
    a.connect("alice");
    let (r, _) = a.send(r#"{"id":2,"subscribe":{"channel":"chat:r"}}"#);
    let epoch = r[0]["subscribe"]["epoch"].as_str().unwrap().to_string();
    assert_eq!(r[0]["subscribe"]["recoverable"], true);
    for i in 1..=2 {
        now_or_never(node.publish("chat:r", Bytes::from(format!("{i}")), None, false, HashMap::new())).unwrap();
    }
    assert_eq!(a.pushes().len(), 2);
    now_or_never(a.session.close()); // the client goes away at offset 2
    for i in 3..=5 {
        now_or_never(node.publish("chat:r", Bytes::from(format!("{i}")), None, false, HashMap::new())).unwrap();
    }
    let mut back = Client::new(&node, start());
    back.connect("alice");
    let (r, _) = back.send(&format!(
        r#"{{"id":2,"subscribe":{{"channel":"chat:r","recover":true,"offset":2,"epoch":"{epoch}"}}}}"#
    ));
    let s = &r[0]["subscribe"];
    assert_eq!(
        (s["recovered"].clone(), s["was_recovering"].clone(), s["offset"].clone()),
        (json!(true), json!(true), json!(2))
    );
    let offsets: Vec<u64> = s["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, vec![3, 4, 5]);
    now_or_never(node.publish("chat:r", Bytes::from_static(b"6"), None, false, HashMap::new())).unwrap();
    assert_eq!(back.pushes()[0]["push"]["pub"]["offset"], 6, "live after recovery, no duplicate");

    // Wrong epoch: not recovered, the top instead.
    let mut c = Client::new(&node, start());
    c.connect("carol");
    let (r, _) = c.send(r#"{"id":2,"subscribe":{"channel":"chat:r","recover":true,"offset":2,"epoch":"nope"}}"#);
    assert_eq!(
        (r[0]["subscribe"]["recovered"].clone(), r[0]["subscribe"]["offset"].clone()),
        (json!(null), json!(6))
    );
    // And with flag 2: error 112.
    let mut d = Client::new(&node, start());
    d.connect("dave");
    let (r, _) = d.send(r#"{"id":2,"subscribe":{"channel":"chat:r","recover":true,"offset":2,"epoch":"nope","flag":2}}"#);
    assert_eq!(r[0]["error"]["code"], 112);
    assert_eq!(node.hub.num_subscribers("chat:r"), 2, "the refused one left the hub");
}

#[test]
fn recovery_beyond_history_is_not_recovered() {
    let node = node_with(|c| c.channel.namespaces[0].options.history_size = 2);
    for i in 1..=5 {
        now_or_never(node.publish("chat:h", Bytes::from(format!("{i}")), None, false, HashMap::new())).unwrap();
    }
    let epoch = now_or_never(node.history("chat:h", HistoryQuery::default()))
        .unwrap()
        .position
        .epoch;
    let mut c = Client::new(&node, start());
    c.connect("u");
    let (r, _) = c.send(&format!(
        r#"{{"id":2,"subscribe":{{"channel":"chat:h","recover":true,"offset":1,"epoch":"{epoch}"}}}}"#
    ));
    assert_eq!(r[0]["subscribe"]["recovered"], json!(null), "offsets 2 and 3 are gone");
    assert_eq!(r[0]["subscribe"]["offset"], 5);
}

#[test]
fn server_side_subscriptions_and_controls() {
    let node = node_with(|_| {});
    let mut c = Client::new(&node, start());
    let tok = make_hs256(SECRET, &json!({"sub": "9", "channels": ["news", "chat:s"]})).unwrap();
    let (r, _) = c.send(&format!(r#"{{"id":1,"connect":{{"token":"{tok}"}}}}"#));
    let subs = r[0]["connect"]["subs"].as_object().unwrap();
    assert!(subs.contains_key("news") && subs.contains_key("chat:s"));
    assert_eq!(subs["chat:s"]["recoverable"], true);
    node.unsubscribe_user("9", "news", "").unwrap();
    let control = c.conn.controls.lock().pop().unwrap();
    let (r, _) = decode(now_or_never(c.session.handle_control(control, c.now)));
    assert_eq!(
        r[0]["push"],
        json!({"channel": "news", "unsubscribe": {"code": 2000, "reason": "server unsubscribe"}})
    );
    node.disconnect_user("9", "", &[], 3503, "force disconnect");
    let control = c.conn.controls.lock().pop().unwrap();
    assert_eq!(decode(now_or_never(c.session.handle_control(control, c.now))).1, Some(3503));
}

#[test]
fn command_rate_limit_then_close() {
    let node = node_with(|c| c.session.command_rate_limit = 5);
    let mut c = Client::new(&node, start());
    c.connect("flood"); // takes one token
    let mut codes = Vec::new();
    let mut closed = None;
    for i in 2..40 {
        let (r, d) = c.send(&format!(r#"{{"id":{i},"presence_stats":{{"channel":"chat:x"}}}}"#));
        if let Some(d) = d {
            closed = Some((i, d));
            break;
        }
        codes.push(r[0]["error"]["code"].as_u64());
    }
    // Four more commands fit the burst (they are answered, here with 103), then 111.
    assert_eq!(&codes[..4], &[Some(103); 4]);
    assert!(codes[4..].iter().all(|c| *c == Some(111)), "{codes:?}");
    assert_eq!(closed.map(|c| c.1), Some(3013), "the client kept going");
    // A client that slows down is served again.
    let mut c = Client::new(&node, start());
    c.connect("polite");
    for _ in 0..4 {
        c.send(r#"{"id":5,"presence_stats":{"channel":"chat:x"}}"#);
    }
    let (r, _) = c.send(r#"{"id":6,"presence_stats":{"channel":"chat:x"}}"#);
    assert_eq!(r[0]["error"]["code"], 111);
    c.now = c.now.after(Duration::from_secs(1));
    let (r, _) = c.send(r#"{"id":7,"presence_stats":{"channel":"chat:x"}}"#);
    assert_eq!(r[0]["error"]["code"], 103, "tokens again after a second");
}

/// A cluster limiter for tests: token buckets per key at a fixed instant (no refill), or
/// one that always errs.
#[derive(Debug)]
struct FakeClusterLimiter {
    at: Instant,
    buckets: Mutex<HashMap<String, crate::ratelimit::TokenBucket>>,
    down: bool,
}

impl FakeClusterLimiter {
    fn new(down: bool) -> Arc<Self> {
        Arc::new(FakeClusterLimiter {
            at: Instant::now(),
            buckets: Mutex::new(HashMap::new()),
            down,
        })
    }
}

impl crate::ratelimit::ClusterLimiter for FakeClusterLimiter {
    fn try_take<'a>(
        &'a self,
        key: &'a str,
        rate: f64,
        burst: f64,
    ) -> crate::engine::BoxFuture<'a, Result<bool, crate::ratelimit::LimiterError>> {
        let r = if self.down {
            Err(crate::ratelimit::LimiterError::Unavailable("down".into()))
        } else {
            let at = self.at;
            Ok(self
                .buckets
                .lock()
                .entry(key.to_string())
                .or_insert_with(|| crate::ratelimit::TokenBucket::new(rate, burst, at))
                .try_take(at))
        };
        Box::pin(std::future::ready(r))
    }
}

/// Cluster scope: one budget per user across nodes (two nodes share the limiter); another
/// user and anonymous connections keep their own.
#[test]
fn command_rate_limit_per_user_across_nodes() {
    let limiter = FakeClusterLimiter::new(false);
    let cluster_node = || {
        let n = node_with(|c| {
            c.session.command_rate_limit = 5;
            c.session.command_rate_limit_scope = RateLimitScope::Cluster;
            c.session.allow_anonymous_connect_without_token = true;
        });
        n.set_command_limiter(limiter.clone());
        n
    };
    let (a, b) = (cluster_node(), cluster_node());
    let (mut on_a, mut on_b) = (Client::new(&a, start()), Client::new(&b, start()));
    on_a.connect("u");
    on_b.connect("u");
    let mut codes = Vec::new();
    for i in 2..8 {
        for c in [&mut on_a, &mut on_b] {
            let (r, d) = c.send(&format!(r#"{{"id":{i},"presence_stats":{{"channel":"chat:x"}}}}"#));
            assert_eq!(d, None);
            codes.push(r[0]["error"]["code"].as_u64());
        }
    }
    // Five between both connections (the connects were counted per connection, before
    // the user was known), then 111 on whichever node serves the command.
    assert_eq!(&codes[..5], &[Some(103); 5], "{codes:?}");
    assert!(codes[5..].iter().all(|c| *c == Some(111)), "{codes:?}");
    let mut other = Client::new(&b, start());
    other.connect("v");
    let (r, _) = other.send(r#"{"id":2,"presence_stats":{"channel":"chat:x"}}"#);
    assert_eq!(r[0]["error"]["code"], 103, "another user is unaffected");
    let mut anon = Client::new(&a, start());
    let (r, d) = anon.send(r#"{"id":1,"connect":{}}"#);
    assert_eq!(d, None, "{r:?}");
    let (r, _) = anon.send(r#"{"id":2,"presence_stats":{"channel":"chat:x"}}"#);
    assert_eq!(r[0]["error"]["code"], 103, "anonymous: per connection");

    // Node scope with a limiter set: still per connection.
    let local = node_with(|c| c.session.command_rate_limit = 5);
    local.set_command_limiter(limiter.clone());
    let mut c = Client::new(&local, start());
    c.connect("u");
    let (r, _) = c.send(r#"{"id":2,"presence_stats":{"channel":"chat:x"}}"#);
    assert_eq!(r[0]["error"]["code"], 103, "node scope ignores the cluster budget");
}

/// A cluster limiter that cannot answer admits (fail open), never refusing everyone.
#[test]
fn command_rate_limit_fails_open() {
    let n = node_with(|c| {
        c.session.command_rate_limit = 2;
        c.session.command_rate_limit_scope = RateLimitScope::Cluster;
    });
    n.set_command_limiter(FakeClusterLimiter::new(true));
    let mut c = Client::new(&n, start());
    c.connect("u");
    for i in 2..20 {
        let (r, d) = c.send(&format!(r#"{{"id":{i},"presence_stats":{{"channel":"chat:x"}}}}"#));
        assert_eq!((r[0]["error"]["code"].as_u64(), d), (Some(103), None));
    }
}

/// `client.insecure`: no token needed, every channel permission granted, token expiry
/// ignored; without it, the same commands are refused.
#[test]
fn insecure_mode_grants_everything() {
    let node = node_with(|c| {
        c.session.insecure = true;
        c.channel.namespaces.push(Namespace {
            name: "locked".into(),
            options: ChannelOptions {
                presence: true,
                history_size: 5,
                history_ttl: Duration::from_secs(60),
                ..Default::default()
            },
        });
    });
    let mut c = Client::new(&node, start());
    let (r, d) = c.send(r#"{"id":1,"connect":{}}"#);
    assert_eq!(d, None, "{r:?}");
    let (r, _) = c.send(r#"{"id":2,"subscribe":{"channel":"locked:a"}}"#);
    assert!(r[0]["subscribe"].is_object(), "{r:?}");
    let (r, _) = c.send(r#"{"id":3,"publish":{"channel":"locked:b","data":{"x":1}}}"#);
    assert!(r[0]["publish"].is_object(), "{r:?}");
    let (r, _) = c.send(r#"{"id":4,"history":{"channel":"locked:b","limit":-1}}"#);
    assert_eq!(r[0]["history"]["publications"][0]["data"]["x"], 1, "{r:?}");
    let (r, _) = c.send(r#"{"id":5,"presence":{"channel":"locked:a"}}"#);
    assert!(r[0]["presence"].is_object(), "{r:?}");
    // A token's expiry is ignored.
    let token = make_hs256(SECRET, &json!({"sub": "u", "exp": 1_700_000_010})).unwrap();
    let mut t = Client::new(&node, start());
    let (r, _) = t.send(&format!(r#"{{"id":1,"connect":{{"token":"{token}"}}}}"#));
    assert_eq!(r[0]["connect"]["expires"], serde_json::Value::Null, "{r:?}");

    let strict = node_with(|c| {
        c.session.allow_anonymous_connect_without_token = true;
        c.channel.namespaces.push(Namespace {
            name: "locked".into(),
            options: ChannelOptions::default(),
        });
    });
    let mut c = Client::new(&strict, start());
    c.send(r#"{"id":1,"connect":{}}"#);
    let (r, _) = c.send(r#"{"id":2,"subscribe":{"channel":"locked:a"}}"#);
    assert_eq!(r[0]["error"]["code"], 103);
    let (r, _) = c.send(r#"{"id":3,"publish":{"channel":"locked:b","data":{"x":1}}}"#);
    assert_eq!(r[0]["error"]["code"], 103);
}

/// `client.subscribe_to_user_personal_channel`: `#user` (or `ns:#user`) as a server-side
/// subscription; `single_connection` closes the user's other connections.
#[test]
fn personal_channel_and_single_connection() {
    let node = node_with(|c| {
        c.session.personal_channel.enabled = true;
        c.session.personal_channel.personal_channel_namespace = "chat".into();
        c.session.personal_channel.single_connection = true;
    });
    let mut a = Client::new(&node, start());
    let r = a.connect("alice");
    assert_eq!(r["subs"]["chat:#alice"]["recoverable"], true, "{r:?}");
    now_or_never(node.publish("chat:#alice", Bytes::from_static(b"{\"n\":1}"), None, false, HashMap::new())).unwrap();
    assert_eq!(a.pushes()[0]["push"]["channel"], "chat:#alice");
    assert!(a.conn.controls.lock().is_empty());
    let mut b = Client::new(&node, start());
    b.connect("alice");
    let controls = a.conn.controls.lock().clone();
    assert!(
        matches!(&controls[..], [Control::Disconnect { code: 3504, .. }]),
        "the first connection is closed: {controls:?}"
    );
    // Anonymous connections have no personal channel.
    let open = node_with(|c| {
        c.session.personal_channel.enabled = true;
        c.session.allow_anonymous_connect_without_token = true;
    });
    let mut anon = Client::new(&open, start());
    let (r, _) = anon.send(r#"{"id":1,"connect":{}}"#);
    assert_eq!(r[0]["connect"]["subs"], serde_json::Value::Null, "{r:?}");
}

/// Without an RPC proxy `rpc` answers 108; a configured proxy with no transport installed
/// (no HTTP in the core) is error 100, temporary.
#[test]
fn rpc_without_a_proxy_and_without_a_transport() {
    let node = node_with(|_| {});
    let mut c = Client::new(&node, start());
    c.connect("u");
    let (r, _) = c.send(r#"{"id":2,"rpc":{"method":"x","data":{}}}"#);
    assert_eq!(r[0]["error"]["code"], 108);
    let node = node_with(|c| {
        c.proxy.rpc.proxy.endpoint = "http://127.0.0.1:9/rpc".into();
        c.proxy.rpc.without_namespace.proxy_enabled = true;
    });
    let mut c = Client::new(&node, start());
    c.connect("u");
    let (r, _) = c.send(r#"{"id":2,"rpc":{"method":"x","data":{}}}"#);
    assert_eq!(r[0]["error"], json!({"code": 100, "message": "internal error", "temporary": true}));
    let (r, _) = c.send(r#"{"id":3,"rpc":{"method":"ns:x","data":{}}}"#);
    assert_eq!(r[0]["error"]["code"], 104, "unknown RPC namespace");
}

/// `rpc.ping`: its method is answered at once, with or without an RPC proxy; other
/// methods are not.
#[test]
fn rpc_ping_answers_without_a_proxy() {
    let node = node_with(|c| {
        c.proxy.rpc.ping.enabled = true;
        c.proxy.rpc.ping.method = "pong?".into();
    });
    let mut c = Client::new(&node, start());
    c.connect("u");
    let (r, _) = c.send(r#"{"id":2,"rpc":{"method":"pong?","data":{}}}"#);
    assert_eq!(r[0], json!({"id": 2, "rpc": {}}));
    let (r, _) = c.send(r#"{"id":3,"rpc":{"method":"ping","data":{}}}"#);
    assert_eq!(r[0]["error"]["code"], 108);
}

/// `client.connect_include_server_time`: the connect reply's `time` is the server's Unix
/// time in milliseconds; off (the default), there is none.
#[test]
fn connect_include_server_time() {
    let ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let node = node_with(|c| c.session.connect_include_server_time = true);
    let mut c = Client::new(&node, start());
    let before = ms();
    let r = c.connect("u");
    let t = r["time"].as_i64().unwrap();
    assert!(before <= t && t <= ms(), "{t}");
    let node = node_with(|_| {});
    let mut c = Client::new(&node, start());
    assert_eq!(c.connect("u")["time"], serde_json::Value::Null);
}

/// Expiry numbers at the edge of `u64` (a connection token's `exp`, a subscription token's,
/// a refresh token's, the API `refresh`'s `expire_at`): the session neither panics nor
/// closes, the `ttl` it reports saturates at `u32::MAX`, and no timer fires early (before:
/// "overflow when adding duration to instant" in the connection's task).
#[test]
fn extreme_expiry_numbers_saturate() {
    let node = node_with(|_| {});
    let huge = [u64::MAX, u64::MAX - 1, i64::MAX as u64, 1_700_000_000 + u64::from(u32::MAX) + 1];
    for exp in huge {
        let mut c = Client::new(&node, start());
        let tok = make_hs256(SECRET, &json!({"sub": "42", "exp": exp})).unwrap();
        let (r, d) = c.send(&format!(r#"{{"id":1,"connect":{{"token":"{tok}"}}}}"#));
        assert_eq!(d, None, "{exp}: {r:?}");
        assert_eq!(
            (r[0]["connect"]["expires"].clone(), r[0]["connect"]["ttl"].clone()),
            (json!(true), json!(u32::MAX))
        );
        let sub = make_hs256(SECRET, &json!({"sub": "42", "channel": "private:z", "exp": exp})).unwrap();
        let (r, d) = c.send(&format!(r#"{{"id":2,"subscribe":{{"channel":"private:z","token":"{sub}"}}}}"#));
        assert_eq!((d, r[0]["subscribe"]["ttl"].clone()), (None, json!(u32::MAX)), "{exp}: {r:?}");
        let (r, d) = c.send(&format!(r#"{{"id":3,"sub_refresh":{{"channel":"private:z","token":"{sub}"}}}}"#));
        assert_eq!((d, r[0]["sub_refresh"]["ttl"].clone()), (None, json!(u32::MAX)), "{exp}: {r:?}");
        let (r, d) = c.send(&format!(r#"{{"id":4,"refresh":{{"token":"{tok}"}}}}"#));
        assert_eq!((d, r[0]["refresh"]["ttl"].clone()), (None, json!(u32::MAX)), "{exp}: {r:?}");
        let (r, d) = decode(now_or_never(
            c.session.handle_control(Control::Refresh { expire_at: Some(exp) }, c.now),
        ));
        assert_eq!((d, r[0]["push"]["refresh"]["ttl"].clone()), (None, json!(u32::MAX)), "{exp}: {r:?}");
        // An hour of pings answered: nothing expires.
        for _ in 0..360 {
            let (r, d) = c.tick(Duration::from_secs(10));
            assert_eq!(d, None, "{exp}: closed");
            if !r.is_empty() {
                c.send("{}");
            }
        }
        assert!(c.session.poll_timeout().is_some());
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Any `exp` in a connection, subscription or refresh token and any `expire_at` from the
    /// API: the reported `ttl` is the distance saturated at `u32::MAX`, and no timer
    /// computation panics.
    #[test]
    fn any_expiry_number_is_safe(
        exp in proptest::prop_oneof![
            proptest::strategy::Just(u64::MAX),
            1_700_000_001u64..1_700_100_000,
            proptest::prelude::any::<u64>()
        ],
        api in proptest::prelude::any::<u64>(),
    ) {
        let node = node_with(|_| {});
        let mut c = Client::new(&node, start());
        let tok = make_hs256(SECRET, &json!({"sub": "42", "exp": exp})).unwrap();
        let (r, d) = c.send(&format!(r#"{{"id":1,"connect":{{"token":"{tok}"}}}}"#));
        if exp > 1_700_000_000 {
            proptest::prop_assert_eq!(d, None);
            let want = u32::try_from(exp - 1_700_000_000).unwrap_or(u32::MAX);
            proptest::prop_assert_eq!(r[0]["connect"]["ttl"].clone(), json!(want));
            let sub = make_hs256(SECRET, &json!({"sub": "42", "channel": "private:z", "exp": exp})).unwrap();
            let (r, d) = c.send(&format!(r#"{{"id":2,"subscribe":{{"channel":"private:z","token":"{sub}"}}}}"#));
            proptest::prop_assert_eq!((d, r[0]["subscribe"]["ttl"].clone()), (None, json!(want)));
            let (r, d) = c.send(&format!(r#"{{"id":3,"sub_refresh":{{"channel":"private:z","token":"{sub}"}}}}"#));
            proptest::prop_assert_eq!((d, r[0]["sub_refresh"]["ttl"].clone()), (None, json!(want)));
            let (r, d) = c.send(&format!(r#"{{"id":4,"refresh":{{"token":"{tok}"}}}}"#));
            proptest::prop_assert_eq!((d, r[0]["refresh"]["ttl"].clone()), (None, json!(want)));
            let (r, d) = decode(now_or_never(c.session.handle_control(Control::Refresh { expire_at: Some(api) }, c.now)));
            let api_ttl = u32::try_from(api.saturating_sub(1_700_000_000)).unwrap_or(u32::MAX);
            proptest::prop_assert_eq!((d, r[0]["push"]["refresh"]["ttl"].clone()), (None, json!(api_ttl)));
            let _ = c.tick(Duration::from_secs(30));
        }
    }
}

/// The subscribe `type` must be the namespace's `subscription_type` (Centrifugo's
/// `isSubscriptionTypeAllowed`): a map subscribe to a stream namespace and a stream
/// subscribe to a shared-poll one are both 103.
#[test]
fn subscribe_type_must_match_the_namespace() {
    let node = node_with(|c| {
        c.shared_poll.hmac_secret_key = "s".into();
        c.channel.proxy.shared_poll_refresh.endpoint = "http://127.0.0.1:9/poll".into();
        c.channel.namespaces.push(Namespace {
            name: "poll".into(),
            options: ChannelOptions {
                allow_subscribe_for_client: true,
                subscription_type: crate::subscription::SubscriptionType::SharedPoll,
                ..Default::default()
            },
        })
    });
    let mut c = Client::new(&node, start());
    c.connect("42");
    let code = |c: &mut Client, cmd: &str| c.send(cmd).0[0]["error"]["code"].as_u64();
    for (i, cmd) in [
        r#"{"channel":"chat:1","type":1}"#,
        r#"{"channel":"chat:1","type":4}"#,
        r#"{"channel":"chat:1","type":99}"#,
        r#"{"channel":"poll:1"}"#,
        r#"{"channel":"poll:1","type":1}"#,
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(
            code(&mut c, &format!(r#"{{"id":{},"subscribe":{cmd}}}"#, i + 2)),
            Some(103),
            "{cmd}"
        );
    }
    assert_eq!(code(&mut c, r#"{"id":9,"subscribe":{"channel":"chat:1","type":0}}"#), None);
}
