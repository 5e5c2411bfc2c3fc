//! Map subscriptions through a session: the phases, client writes, recovery and 112.

use super::tests::{node_with, now_or_never, start, Client};
use super::*;
use crate::config::Namespace;
use crate::subscription::map::ops::MapPublish;
use crate::subscription::map::{MapOptions, Mode};
use crate::subscription::SubscriptionType;
use serde_json::Value;

fn map_ns(name: &str, mode: Mode, f: impl FnOnce(&mut MapOptions)) -> Namespace {
    let mut map = MapOptions {
        mode,
        key_ttl: if mode == Mode::Persistent {
            Duration::ZERO
        } else {
            Duration::from_secs(60)
        },
        allow_publish_for_client: true,
        allow_remove_for_client: true,
        // Small pages, so that paging shows with a few keys.
        min_page_size: 1,
        ..Default::default()
    };
    f(&mut map);
    Namespace {
        name: name.into(),
        options: ChannelOptions {
            allow_subscribe_for_client: true,
            allow_tags_filter: true,
            subscription_type: SubscriptionType::Map,
            map,
            ..Default::default()
        },
    }
}

fn node() -> Arc<Node> {
    node_with(|c| {
        c.channel.namespaces.push(map_ns("eph", Mode::Ephemeral, |_| {}));
        c.channel.namespaces.push(map_ns("pos", Mode::Persistent, |_| {}));
        c.channel.namespaces.push(map_ns("small", Mode::Persistent, |m| m.stream_size = 2));
    })
}

fn put(node: &Arc<Node>, ch: &str, key: &str, data: &str) -> u64 {
    let w = MapPublish {
        key: key.into(),
        data: Bytes::copy_from_slice(data.as_bytes()),
        ..Default::default()
    };
    now_or_never(node.map_publish(ch, w)).unwrap().position.offset
}

fn sub(c: &mut Client, id: u32, body: &str) -> Value {
    let (r, d) = c.send(&format!(r#"{{"id":{id},"subscribe":{body}}}"#));
    assert_eq!(d, None, "{r:?}");
    r[0].clone()
}

fn keys(v: &Value) -> Vec<String> {
    v.as_array()
        .map_or(vec![], |a| a.iter().map(|p| p["key"].as_str().unwrap_or("").to_string()).collect())
}

#[test]
fn ephemeral_map_goes_live_after_its_state_and_gets_writes() {
    let node = node();
    put(&node, "eph:1", "a", "1");
    let mut c = Client::new(&node, start());
    c.connect("42");
    let r = sub(&mut c, 2, r#"{"channel":"eph:1","type":1,"phase":2}"#);
    let s = &r["subscribe"];
    assert_eq!(
        (s["type"].as_i64(), s.get("phase"), keys(&s["state"])),
        (Some(1), None, vec!["a".to_string()]),
        "{r}"
    );
    assert_eq!(s["state"][0]["data"], 1);
    assert_eq!(s["recoverable"], Value::Null, "no stream");
    let (r, _) = c.send(r#"{"id":3,"publish":{"channel":"eph:1","type":1,"key":"b","data":{"x":1}}}"#);
    assert!(r[0]["publish"].is_object(), "{r:?}");
    let (r, _) = c.send(r#"{"id":4,"publish":{"channel":"eph:1","type":1,"key":"a","removed":true}}"#);
    assert!(r[0]["publish"].is_object(), "{r:?}");
    let pushes: Vec<Value> = c
        .pushes()
        .into_iter()
        .filter(|p| p.get("push").is_some())
        .map(|p| p["push"]["pub"].clone())
        .collect();
    assert_eq!(pushes.len(), 2, "{pushes:?}");
    assert_eq!((pushes[0]["key"].as_str(), pushes[0]["data"]["x"].as_i64()), (Some("b"), Some(1)));
    assert_eq!(pushes[0]["info"]["user"], "42", "the writer's info");
    assert_eq!((pushes[1]["key"].as_str(), pushes[1]["removed"].as_bool()), (Some("a"), Some(true)));
    assert_eq!(now_or_never(node.map_stats("eph:1")).unwrap(), 1);
}

#[test]
fn persistent_map_pages_its_state_with_a_frozen_position() {
    let node = node();
    for k in ["a", "b", "c"] {
        put(&node, "pos:1", k, "1");
    }
    let mut c = Client::new(&node, start());
    c.connect("42");
    let r = sub(&mut c, 2, r#"{"channel":"pos:1","type":1,"phase":2,"limit":2}"#);
    let s = &r["subscribe"];
    assert_eq!(
        (s["phase"].as_i64(), s["cursor"].as_str(), s["offset"].as_u64()),
        (Some(2), Some("b"), Some(3)),
        "{r}"
    );
    let epoch = s["epoch"].as_str().unwrap().to_string();
    // Written between pages: after the frozen offset, so it comes through the stream.
    put(&node, "pos:1", "c", "2");
    let r = sub(
        &mut c,
        3,
        &format!(r#"{{"channel":"pos:1","type":1,"phase":2,"limit":2,"cursor":"b","offset":3,"epoch":"{epoch}"}}"#),
    );
    let s = &r["subscribe"];
    assert_eq!(s.get("phase"), None, "live: {r}");
    assert_eq!(keys(&s["state"]), Vec::<String>::new(), "c was written after offset 3");
    assert_eq!(keys(&s["publications"]), vec!["c"]);
    assert_eq!((s["offset"].as_u64(), s["recoverable"].as_bool()), (Some(4), Some(true)));
    put(&node, "pos:1", "d", "1");
    let live: Vec<Value> = c.pushes().into_iter().map(|p| p["push"]["pub"].clone()).collect();
    assert_eq!((live[0]["key"].as_str(), live[0]["offset"].as_u64()), (Some("d"), Some(5)));
}

#[test]
fn a_cursor_without_its_first_page_is_refused() {
    let node = node();
    let mut c = Client::new(&node, start());
    c.connect("42");
    let r = sub(&mut c, 2, r#"{"channel":"pos:1","type":1,"phase":2,"cursor":"b"}"#);
    assert_eq!(r["error"]["code"], 103, "{r}");
    let r = sub(&mut c, 3, r#"{"channel":"pos:1","type":1,"phase":1,"offset":1}"#);
    assert_eq!(r["error"]["code"], 103, "a stream page needs recover: {r}");
    let r = sub(&mut c, 4, r#"{"channel":"pos:1","type":1,"phase":7}"#);
    assert_eq!(r["error"]["code"], 107, "{r}");
}

#[test]
fn a_map_subscriber_recovers_from_the_stream() {
    let node = node();
    put(&node, "pos:1", "a", "1");
    let mut c = Client::new(&node, start());
    c.connect("42");
    let r = sub(&mut c, 2, r#"{"channel":"pos:1","type":1,"phase":2}"#);
    let (epoch, offset) = (
        r["subscribe"]["epoch"].as_str().unwrap().to_string(),
        r["subscribe"]["offset"].as_u64().unwrap(),
    );
    c.send(r#"{"id":3,"unsubscribe":{"channel":"pos:1"}}"#);
    put(&node, "pos:1", "b", "1");
    now_or_never(node.map_remove("pos:1", "a", None, HashMap::new())).unwrap();
    let r = sub(
        &mut c,
        4,
        &format!(r#"{{"channel":"pos:1","type":1,"phase":1,"recover":true,"offset":{offset},"epoch":"{epoch}"}}"#),
    );
    let s = &r["subscribe"];
    assert_eq!(
        (s["recovered"].as_bool(), s["was_recovering"].as_bool(), s.get("phase")),
        (Some(true), Some(true), None),
        "{r}"
    );
    assert_eq!(keys(&s["publications"]), vec!["b", "a"]);
    assert_eq!(s["publications"][1]["removed"], true);
    assert_eq!(s["offset"], 3);
}

#[test]
fn a_stream_that_cannot_cover_the_gap_is_112() {
    let node = node();
    put(&node, "small:1", "a", "1");
    let mut c = Client::new(&node, start());
    c.connect("42");
    let r = sub(&mut c, 2, r#"{"channel":"small:1","type":1,"phase":2}"#);
    let epoch = r["subscribe"]["epoch"].as_str().unwrap().to_string();
    c.send(r#"{"id":3,"unsubscribe":{"channel":"small:1"}}"#);
    for i in 0..5 {
        put(&node, "small:1", &format!("k{i}"), "1");
    }
    let r = sub(
        &mut c,
        4,
        &format!(r#"{{"channel":"small:1","type":1,"phase":1,"recover":true,"offset":1,"epoch":"{epoch}"}}"#),
    );
    assert_eq!(r["error"]["code"], 112, "{r}");
    // Another epoch is 112 as well; a fresh state subscribe then works.
    let r = sub(
        &mut c,
        5,
        r#"{"channel":"small:1","type":1,"phase":1,"recover":true,"offset":6,"epoch":"other"}"#,
    );
    assert_eq!(r["error"]["code"], 112, "{r}");
    let r = sub(&mut c, 6, r#"{"channel":"small:1","type":1,"phase":2}"#);
    assert_eq!(keys(&r["subscribe"]["state"]).len(), 6, "{r}");
}

#[test]
fn a_catch_up_past_its_timeout_closes_with_3008() {
    let node = node();
    for k in ["a", "b"] {
        put(&node, "pos:1", k, "1");
    }
    let mut c = Client::new(&node, start());
    c.connect("42");
    let r = sub(&mut c, 2, r#"{"channel":"pos:1","type":1,"phase":2,"limit":1}"#);
    assert_eq!(r["subscribe"]["cursor"], "a", "{r}");
    c.now = c.now.after(Duration::from_secs(6));
    let (r, d) = c.send(r#"{"id":3,"subscribe":{"channel":"pos:1","type":1,"phase":2,"limit":1,"cursor":"a"}}"#);
    assert_eq!(d, Some(3008), "{r:?}");
}

#[test]
fn map_writes_follow_the_namespace_permissions() {
    let node = node_with(|c| {
        c.channel.namespaces.push(map_ns("ro", Mode::Ephemeral, |m| {
            m.allow_publish_for_client = false;
            m.allow_remove_for_client = false;
        }));
        c.channel.namespaces.push(map_ns("mine", Mode::Ephemeral, |m| {
            m.client_key = crate::subscription::map::ClientKey::UserId;
        }));
    });
    let mut c = Client::new(&node, start());
    c.connect("42");
    let code = |c: &mut Client, cmd: &str| c.send(cmd).0[0]["error"]["code"].as_u64();
    assert_eq!(
        code(&mut c, r#"{"id":2,"publish":{"channel":"ro:1","type":1,"key":"a","data":1}}"#),
        Some(103)
    );
    assert_eq!(
        code(&mut c, r#"{"id":3,"publish":{"channel":"chat:1","type":1,"key":"a","data":1}}"#),
        Some(107)
    );
    assert_eq!(code(&mut c, r#"{"id":4,"publish":{"channel":"mine:1","type":1,"data":1}}"#), None);
    let page = now_or_never(node.map_read_state("mine:1", Default::default())).unwrap();
    assert_eq!(page.entries.len(), 0, "limit 0: the position only");
    let q = crate::subscription::map::broker::StateQuery {
        limit: 10,
        ..Default::default()
    };
    let page = now_or_never(node.map_read_state("mine:1", q)).unwrap();
    assert_eq!(
        keys(&serde_json::to_value(&page.entries).unwrap()),
        vec!["42"],
        "the user id is the key"
    );
}

#[test]
fn map_delta_is_per_key_against_its_previous_data() {
    let node = node_with(|c| {
        let mut ns = map_ns("md", Mode::Persistent, |_| {});
        ns.options.allowed_delta_types = vec!["fossil".into()];
        ns.options.delta_publish = true;
        c.channel.namespaces.push(ns);
    });
    let pad = "x".repeat(300);
    put(&node, "md:1", "a", &format!(r#"{{"n":1,"p":"{pad}"}}"#));
    let mut c = Client::new(&node, start());
    c.connect("42");
    let r = sub(&mut c, 2, r#"{"channel":"md:1","type":1,"phase":2,"delta":"fossil"}"#);
    let s = &r["subscribe"];
    assert_eq!(s["delta"], true, "{r}");
    let state_data = s["state"][0]["data"]
        .as_str()
        .expect("state data as a JSON string: the SDK's delta base");
    put(&node, "md:1", "b", r#"{"n":1}"#);
    put(&node, "md:1", "a", &format!(r#"{{"n":2,"p":"{pad}"}}"#));
    let pubs: Vec<Value> = c.pushes().into_iter().map(|p| p["push"]["pub"].clone()).collect();
    assert_eq!(
        (pubs[0]["key"].as_str(), pubs[0].get("delta")),
        (Some("b"), None),
        "b is new: whole"
    );
    assert_eq!(pubs[0]["data"], r#"{"n":1}"#, "whole, as a JSON string");
    assert_eq!(
        (pubs[1]["key"].as_str(), pubs[1]["delta"].as_bool()),
        (Some("a"), Some(true)),
        "{pubs:?}"
    );
    let patch = pubs[1]["data"].as_str().unwrap();
    let decoded = wshub_protocol::fossil::apply(state_data.as_bytes(), patch.as_bytes(), usize::MAX).unwrap();
    assert_eq!(String::from_utf8(decoded).unwrap(), format!(r#"{{"n":2,"p":"{pad}"}}"#));
    assert!(pubs[1].get("prev_data").is_none(), "the base stays inside the node");
}

#[test]
fn map_presence_follows_the_subscribers() {
    let node = node_with(|c| {
        let mut main = map_ns("room", Mode::Ephemeral, |m| m.remove_client_on_unsubscribe = true);
        main.options.map_clients_presence_channel_prefix = "who:".into();
        main.options.map_users_presence_channel_prefix = "users:".into();
        c.channel.namespaces.push(main);
        let mut who = map_ns("who", Mode::Ephemeral, |_| {});
        who.options.subscription_type = SubscriptionType::MapClients;
        c.channel.namespaces.push(who);
        let mut users = map_ns("users", Mode::Ephemeral, |_| {});
        users.options.subscription_type = SubscriptionType::MapUsers;
        c.channel.namespaces.push(users);
    });
    let mut watcher = Client::new(&node, start());
    watcher.connect("1");
    let r = sub(&mut watcher, 2, r#"{"channel":"who:room:1","type":2,"phase":2}"#);
    assert_eq!(r["subscribe"]["type"], 1, "{r}");
    let mut c = Client::new(&node, start());
    c.connect("42");
    let client = c.session.client_id().to_string();
    sub(&mut c, 2, r#"{"channel":"room:1","type":1,"phase":2}"#);
    c.send(r#"{"id":3,"publish":{"channel":"room:1","type":1,"key":"x","data":1}}"#);
    c.send(&format!(
        r#"{{"id":4,"publish":{{"channel":"room:1","type":1,"key":"{client}","data":1}}}}"#
    ));
    c.send(r#"{"id":5,"unsubscribe":{"channel":"room:1"}}"#);
    let pubs: Vec<Value> = watcher.pushes().into_iter().map(|p| p["push"]["pub"].clone()).collect();
    assert_eq!(pubs.len(), 2, "{pubs:?}");
    assert_eq!(
        (pubs[0]["key"].as_str(), pubs[0]["info"]["user"].as_str()),
        (Some(client.as_str()), Some("42"))
    );
    assert_eq!(
        (pubs[1]["key"].as_str(), pubs[1]["removed"].as_bool()),
        (Some(client.as_str()), Some(true))
    );
    let keys_left = |ch| {
        let q = crate::subscription::map::broker::StateQuery {
            limit: 10,
            ..Default::default()
        };
        let page = now_or_never(node.map_read_state(ch, q)).unwrap();
        page.entries.into_iter().map(|p| p.key).collect::<Vec<_>>()
    };
    assert_eq!(keys_left("users:room:1"), vec!["42"], "a user's entry leaves by TTL only");
    assert_eq!(
        keys_left("room:1"),
        vec!["x"],
        "remove_client_on_unsubscribe took the client's own key"
    );
}

#[test]
fn presence_prefixes_must_name_a_matching_namespace() {
    let mut cfg = crate::config::NodeConfig::default();
    let mut main = map_ns("room", Mode::Ephemeral, |_| {});
    main.options.map_clients_presence_channel_prefix = "who:".into();
    cfg.channel.namespaces.push(main);
    let e = cfg.validate().unwrap_err();
    assert_eq!(e.key, "channel.namespaces[0].map_clients_presence_channel_prefix", "{}", e.message);
    cfg.channel.namespaces.push(map_ns("who", Mode::Ephemeral, |_| {}));
    assert!(
        cfg.validate().unwrap_err().message.contains("map_clients"),
        "a map, not a map_clients"
    );
    cfg.channel.namespaces[1].options.subscription_type = SubscriptionType::MapClients;
    cfg.validate().unwrap();
}
