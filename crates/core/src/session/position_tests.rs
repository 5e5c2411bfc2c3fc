//! Positioning without recovery, the periodic position check, the delivery lag limit and
//! the cache recovery mode, driven with a fake clock as Centrifugo behaves.

use super::tests::{node_with, now_or_never, start, Client, SECRET};
use super::*;
use crate::config::Namespace;
use crate::token::make_hs256;
use serde_json::json;

fn history() -> ChannelOptions {
    ChannelOptions {
        history_size: 10,
        history_ttl: Duration::from_secs(300),
        allow_subscribe_for_client: true,
        ..Default::default()
    }
}

/// `pos:` forces positioning, `ask:` allows it, `cache:` recovers in cache mode with
/// `auto_cache_recover`, `manual:` in cache mode when asked.
fn node() -> Arc<Node> {
    node_with(|c| {
        c.channel.namespaces = vec![
            Namespace {
                name: "pos".into(),
                options: ChannelOptions {
                    force_positioning: true,
                    ..history()
                },
            },
            Namespace {
                name: "ask".into(),
                options: ChannelOptions {
                    allow_positioning: true,
                    ..history()
                },
            },
            Namespace {
                name: "cache".into(),
                options: ChannelOptions {
                    force_recovery: true,
                    force_recovery_mode: "cache".into(),
                    auto_cache_recover: true,
                    ..history()
                },
            },
            Namespace {
                name: "manual".into(),
                options: ChannelOptions {
                    force_recovery: true,
                    force_recovery_mode: "cache".into(),
                    ..history()
                },
            },
        ];
        c.session.presence_update_interval = Duration::from_secs(5);
        c.session.channel_position_check_delay = Duration::from_secs(12);
    })
}

fn publish(node: &Arc<Node>, ch: &str, n: u32) {
    now_or_never(node.publish(ch, Bytes::from(n.to_string()), None, false, HashMap::new())).unwrap();
}

/// Publications from now on wait in the delivery queues instead of reaching the hub: to
/// this node's subscribers they are lost on the way.
fn lose_deliveries(node: &Arc<Node>) {
    assert!(node.deliveries.set_waker(Arc::new(|_| {})));
}

/// A connected client of user 42 after publications 1 to `n` into `ch`.
fn after_publications(node: &Arc<Node>, ch: &str, n: u32) -> Client {
    for i in 1..=n {
        publish(node, ch, i);
    }
    let mut c = Client::new(node, start());
    c.connect("42");
    c
}

/// A client of user 42 subscribed to `ch` (a positioned namespace).
fn positioned_on(node: &Arc<Node>, ch: &str) -> Client {
    let mut c = after_publications(node, ch, 0);
    let (r, _) = c.send(&format!(r#"{{"id":2,"subscribe":{{"channel":"{ch}"}}}}"#));
    assert_eq!(r[0]["subscribe"]["positioned"], true, "{r:?}");
    c
}

/// A client whose connection token subscribes it (server side) to `ch`; the connect reply.
fn server_side(node: &Arc<Node>, ch: &str) -> (Client, serde_json::Value) {
    let mut c = Client::new(node, start());
    let token = make_hs256(SECRET, &json!({"sub": "42", "channels": [ch]})).unwrap();
    let (r, d) = c.send(&format!(r#"{{"id":1,"connect":{{"token":"{token}"}}}}"#));
    assert_eq!(d, None, "{r:?}");
    (c, r[0]["connect"].clone())
}

/// Ticks of `step` until `until` has passed; every reply and the disconnect, if any.
fn run(c: &mut Client, step: Duration, until: Duration) -> (Vec<serde_json::Value>, Option<u16>) {
    let mut replies = Vec::new();
    let mut passed = Duration::ZERO;
    while passed < until {
        passed += step;
        let (r, d) = c.tick(step);
        if d.is_some() {
            return (replies, d);
        }
        // A ping (an empty reply) is answered, as an SDK does.
        if r.iter().any(|r| r == &json!({})) {
            assert_eq!(c.send("{}").1, None, "pong");
        }
        replies.extend(r);
    }
    (replies, None)
}

fn unsubscribes(replies: &[serde_json::Value]) -> Vec<(String, u64)> {
    replies
        .iter()
        .filter(|r| r["push"]["unsubscribe"].is_object())
        .map(|r| {
            let ch = r["push"]["channel"].as_str().unwrap_or_default().to_string();
            (ch, r["push"]["unsubscribe"]["code"].as_u64().unwrap_or_default())
        })
        .collect()
}

#[test]
fn forced_positioning_is_positioned_without_recovery() {
    let node = node();
    publish(&node, "pos:1", 1);
    let mut c = Client::new(&node, start());
    c.connect("42");
    let (r, _) = c.send(r#"{"id":2,"subscribe":{"channel":"pos:1","recover":true,"offset":0,"epoch":"x"}}"#);
    let s = &r[0]["subscribe"];
    assert_eq!(s["positioned"], true, "{r:?}");
    assert_eq!(s["recoverable"], serde_json::Value::Null, "no recovery: {r:?}");
    assert_eq!(s["offset"], 1);
    assert!(s["epoch"].as_str().is_some_and(|e| !e.is_empty()), "{r:?}");
    assert!(
        s["publications"].is_null() && s["was_recovering"].is_null(),
        "a recover flag is ignored: {r:?}"
    );
    // The hub follows its position.
    publish(&node, "pos:1", 2);
    assert_eq!(node.hub.position("pos:1", c.session.handle.id()), Some(2));
}

#[test]
fn allowed_positioning_is_what_the_client_asks() {
    let node = node();
    let mut c = Client::new(&node, start());
    c.connect("42");
    let (r, _) = c.send(r#"{"id":2,"subscribe":{"channel":"ask:1","positioned":true}}"#);
    assert_eq!(r[0]["subscribe"]["positioned"], true, "{r:?}");
    let (r, _) = c.send(r#"{"id":3,"subscribe":{"channel":"ask:2"}}"#);
    assert_eq!(r[0]["subscribe"]["positioned"], serde_json::Value::Null, "not asked: {r:?}");
    // Without history there is no stream to follow.
    let plain = node_with(|c| c.channel.without_namespace.allow_positioning = true);
    let mut c = Client::new(&plain, start());
    c.connect("42");
    let (r, _) = c.send(r#"{"id":2,"subscribe":{"channel":"news","positioned":true}}"#);
    assert_eq!(r[0]["subscribe"]["positioned"], serde_json::Value::Null, "{r:?}");
}

#[test]
fn a_client_with_history_access_may_ask_for_positioning_and_recovery() {
    // Centrifugo grants `positioned` and `recoverable` to who may read history.
    let node = node_with(|c| {
        c.channel.without_namespace = ChannelOptions {
            allow_history_for_subscriber: true,
            ..history()
        }
    });
    let mut c = Client::new(&node, start());
    c.connect("42");
    let (r, _) = c.send(r#"{"id":2,"subscribe":{"channel":"news","positioned":true,"recoverable":true}}"#);
    assert_eq!(r[0]["subscribe"]["positioned"], true, "{r:?}");
    assert_eq!(r[0]["subscribe"]["recoverable"], true, "{r:?}");
}

#[test]
fn a_lost_publication_is_found_by_the_periodic_check_and_unsubscribes() {
    let node = node();
    let mut c = positioned_on(&node, "pos:1");
    lose_deliveries(&node);
    publish(&node, "pos:1", 1);
    // Not before the position has been silent for the check delay (12 s)...
    let (replies, d) = run(&mut c, Duration::from_secs(1), Duration::from_secs(12));
    assert_eq!((unsubscribes(&replies), d), (vec![], None));
    // ...then at the next presence round (every 5 s): unsubscribed with 2500, as
    // Centrifugo does to a client-side subscription (its SDK subscribes again).
    let (replies, d) = run(&mut c, Duration::from_secs(1), Duration::from_secs(6));
    assert_eq!(d, None);
    assert_eq!(unsubscribes(&replies), vec![("pos:1".to_string(), 2500)]);
    assert!(!c.session.subs.contains_key("pos:1"));
    assert_eq!(node.hub.num_subscribers("pos:1"), 0);
}

#[test]
fn a_position_in_step_passes_the_check() {
    let node = node();
    let mut c = positioned_on(&node, "pos:1");
    // A stream never published to keeps its epoch from one check to the next.
    c.send(r#"{"id":3,"subscribe":{"channel":"pos:empty"}}"#);
    publish(&node, "pos:1", 1);
    let (replies, d) = run(&mut c, Duration::from_secs(1), Duration::from_secs(60));
    assert_eq!((unsubscribes(&replies), d), (vec![], None));
    assert!(c.session.subs.contains_key("pos:1"));
    // A check that passed counts as fresh: a loss now is found a check delay later.
    lose_deliveries(&node);
    publish(&node, "pos:1", 2);
    let (replies, _) = run(&mut c, Duration::from_secs(1), Duration::from_secs(20));
    assert_eq!(unsubscribes(&replies), vec![("pos:1".to_string(), 2500)]);
}

#[test]
fn publications_arriving_put_the_check_off() {
    let node = node();
    let mut c = positioned_on(&node, "pos:1");
    // A publication every 3 s keeps the position fresh: no check, nothing found.
    for n in 0..20 {
        publish(&node, "pos:1", n);
        let (replies, d) = run(&mut c, Duration::from_secs(1), Duration::from_secs(3));
        assert_eq!((unsubscribes(&replies), d), (vec![], None));
    }
}

#[test]
fn a_server_side_subscription_that_lost_its_state_closes_with_3010() {
    let node = node();
    let (mut c, r) = server_side(&node, "pos:s");
    assert_eq!(r["subs"]["pos:s"]["positioned"], true, "{r:?}");
    lose_deliveries(&node);
    publish(&node, "pos:s", 1);
    let (_, d) = run(&mut c, Duration::from_secs(1), Duration::from_secs(30));
    assert_eq!(d, Some(3010));
}

#[test]
fn lag_over_the_limit_means_insufficient_state() {
    // The hub tells the session (Resubscribe); the session decides as for a failed check.
    let node = node();
    let mut c = positioned_on(&node, "pos:1");
    let out = now_or_never(c.session.handle_control(Control::Resubscribe { channel: "pos:1".into() }, c.now));
    let text = String::from_utf8(out.frame.unwrap_or_default().to_vec()).unwrap();
    assert!(text.contains(r#""code":2500"#), "{text}");
    let (mut s, _) = server_side(&node, "pos:s");
    let out = now_or_never(s.session.handle_control(Control::Resubscribe { channel: "pos:s".into() }, s.now));
    assert_eq!(out.disconnect.map(|d| d.0), Some(3010));
}

#[test]
fn cache_mode_gives_the_latest_publication_unasked() {
    let node = node();
    let mut c = after_publications(&node, "cache:1", 3);
    let (r, _) = c.send(r#"{"id":2,"subscribe":{"channel":"cache:1"}}"#);
    let s = &r[0]["subscribe"];
    assert_eq!(s["recoverable"], true, "{r:?}");
    assert_eq!(s["was_recovering"], true, "{r:?}");
    assert_eq!(s["recovered"], true, "{r:?}");
    let pubs = s["publications"].as_array().unwrap();
    assert_eq!(pubs.len(), 1, "{r:?}");
    assert_eq!((pubs[0]["data"].clone(), pubs[0]["offset"].clone()), (json!(3), json!(3)));
    // The reply's offset is the client's own (none), as Centrifugo: its SDK moves on
    // with the publication.
    assert_eq!(s["offset"], serde_json::Value::Null, "{r:?}");
    let epoch = s["epoch"].as_str().unwrap().to_string();

    // A client at the top gets nothing, recovered.
    let mut d = Client::new(&node, start());
    d.connect("43");
    let (r, _) = d.send(&format!(
        r#"{{"id":2,"subscribe":{{"channel":"cache:1","recover":true,"offset":3,"epoch":"{epoch}"}}}}"#
    ));
    assert_eq!(r[0]["subscribe"]["recovered"], true, "{r:?}");
    assert!(r[0]["subscribe"]["publications"].is_null(), "{r:?}");
    assert_eq!(r[0]["subscribe"]["offset"], 3, "{r:?}");
}

#[test]
fn cache_mode_without_auto_recovers_when_asked() {
    let node = node();
    let mut c = after_publications(&node, "manual:1", 3);
    let (r, _) = c.send(r#"{"id":2,"subscribe":{"channel":"manual:1"}}"#);
    assert!(r[0]["subscribe"]["was_recovering"].is_null(), "{r:?}");
    assert!(r[0]["subscribe"]["publications"].is_null(), "{r:?}");
    assert_eq!(r[0]["subscribe"]["offset"], 3);
    // From offset 1, only the latest, not 2 and 3; flag 2 (refuse unrecovered) is for the
    // stream mode only.
    let mut d = Client::new(&node, start());
    d.connect("43");
    let (r, _) = d.send(r#"{"id":2,"subscribe":{"channel":"manual:1","recover":true,"offset":1,"epoch":"other","flag":2}}"#);
    let pubs = r[0]["subscribe"]["publications"].as_array().unwrap();
    assert_eq!(pubs.iter().map(|p| p["data"].clone()).collect::<Vec<_>>(), vec![json!(3)], "{r:?}");
    assert_eq!(r[0]["subscribe"]["recovered"], true);
    // Live publications follow on.
    publish(&node, "manual:1", 4);
    let pushes = d.pushes();
    assert_eq!(pushes.last().unwrap()["push"]["pub"]["data"], 4, "{pushes:?}");
}

#[test]
fn an_empty_cache_is_not_recovered() {
    let node = node();
    let mut c = Client::new(&node, start());
    c.connect("42");
    let (r, d) = c.send(r#"{"id":2,"subscribe":{"channel":"manual:1","recover":true,"flag":2}}"#);
    assert_eq!(d, None);
    assert!(r[0]["subscribe"]["recovered"].is_null(), "{r:?}");
    assert_eq!(r[0]["subscribe"]["was_recovering"], true, "{r:?}");
}

#[test]
fn auto_cache_recover_serves_server_side_subscriptions() {
    let node = node();
    publish(&node, "cache:s", 7);
    let (_, r) = server_side(&node, "cache:s");
    let s = &r["subs"]["cache:s"];
    assert_eq!(s["recovered"], true, "{r:?}");
    assert_eq!(s["publications"][0]["data"], 7, "{r:?}");
}

#[test]
fn recovery_mode_and_auto_cache_recover_are_validated() {
    let refusal = |without_namespace: ChannelOptions| {
        let channel = crate::config::ChannelConfig {
            without_namespace,
            ..Default::default()
        };
        let cfg = crate::config::NodeConfig {
            channel,
            ..Default::default()
        };
        Node::new(cfg, Arc::new(crate::memory::MemoryEngine::default()))
            .err()
            .map(|e| e.to_string())
    };
    let e = refusal(ChannelOptions {
        force_recovery_mode: "latest".into(),
        ..history()
    });
    assert!(e.as_deref().is_some_and(|e| e.contains("force_recovery_mode")), "{e:?}");
    let e = refusal(ChannelOptions {
        force_recovery: true,
        auto_cache_recover: true,
        ..history()
    });
    assert!(e.as_deref().is_some_and(|e| e.contains("auto_cache_recover")), "{e:?}");
    let e = refusal(ChannelOptions {
        force_recovery: true,
        force_recovery_mode: "cache".into(),
        auto_cache_recover: true,
        ..history()
    });
    assert_eq!(e, None, "cache mode with force_recovery");
}
