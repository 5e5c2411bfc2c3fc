//! Centrifugo's security keys through the session (issue 24): private channels, channel
//! names, data formats, anonymous access, token rules, subscription tokens, expiry. Each
//! with the accepted and the refused case and Centrifugo's code.

use super::tests::{node_with, now_or_never, start, Client, SECRET};
use super::*;
use crate::config::{Namespace, SubscriptionTokenConfig, TokenConfig};
use crate::token::make_hs256;
use serde_json::json;

fn connect_with(c: &mut Client, claims: serde_json::Value) -> (Vec<serde_json::Value>, Option<u16>) {
    let token = make_hs256(SECRET, &claims).unwrap();
    c.send(&format!(r#"{{"id":1,"connect":{{"token":"{token}"}}}}"#))
}

fn subscribe(c: &mut Client, id: u32, channel: &str, token: &str) -> (Vec<serde_json::Value>, Option<u16>) {
    c.send(&format!(r#"{{"id":{id},"subscribe":{{"channel":"{channel}","token":"{token}"}}}}"#))
}

fn error_code(r: &[serde_json::Value]) -> Option<u64> {
    r.first().and_then(|r| r["error"]["code"].as_u64())
}

#[test]
fn private_channels_need_a_token_whatever_the_namespace_allows() {
    let node = node_with(|_| {});
    let mut c = Client::new(&node, start());
    c.connect("42");
    let (r, d) = c.send(r#"{"id":2,"subscribe":{"channel":"$secret"}}"#);
    assert_eq!(
        (error_code(&r), d),
        (Some(103), None),
        "allow_subscribe_for_client does not open $ channels"
    );
    assert_eq!(node.hub.num_subscribers("$secret"), 0);
    let tok = make_hs256(SECRET, &json!({"sub": "42", "channel": "$secret"})).unwrap();
    let (r, d) = subscribe(&mut c, 3, "$secret", &tok);
    assert!(r[0]["subscribe"].is_object() && d.is_none(), "{r:?}");
    // `$chat:room` is in namespace chat (presence on), not an unknown namespace `$chat`.
    let tok = make_hs256(SECRET, &json!({"sub": "42", "channel": "$chat:room"})).unwrap();
    let (r, _) = subscribe(&mut c, 4, "$chat:room", &tok);
    assert!(r[0]["subscribe"]["recoverable"].as_bool().unwrap_or(false), "{r:?}");
    // Server-side subscriptions from a connection token are the backend's choice.
    let mut s = Client::new(&node, start());
    let (r, d) = connect_with(&mut s, json!({"sub": "7", "channels": ["$server"]}));
    assert_eq!(d, None);
    assert_eq!(r[0]["connect"]["subs"]["$server"], json!({}), "{r:?}");
    // No prefix configured: `$` is an ordinary character.
    let open = node_with(|c| c.channel.private_prefix = String::new());
    let mut c = Client::new(&open, start());
    c.connect("42");
    assert!(c.send(r#"{"id":2,"subscribe":{"channel":"$secret"}}"#).0[0]["subscribe"].is_object());
}

#[test]
fn channel_names_are_ascii_unless_the_namespace_has_a_regex() {
    let node = node_with(|c| {
        c.channel.namespaces[0].options.channel_regex = "^[a-z0-9]+$".into();
        c.channel.without_namespace.allow_publish_for_client = true;
        c.channel.without_namespace.allow_presence_for_client = true;
        c.channel.without_namespace.presence = true;
    });
    let mut c = Client::new(&node, start());
    c.connect("42");
    for (id, cmd) in [
        (2, r#""subscribe":{"channel":"n\u0435ws"}"#),
        (3, r#""publish":{"channel":"n\u0435ws","data":{}}"#),
        (4, r#""presence":{"channel":"\ud83d\ude00"}"#),
        (5, r#""subscribe":{"channel":"chat:Room"}"#),
    ] {
        let (r, d) = c.send(&format!(r#"{{"id":{id},{cmd}}}"#));
        assert_eq!((error_code(&r), d), (Some(107), None), "{cmd}");
    }
    assert!(c.send(r#"{"id":6,"subscribe":{"channel":"chat:room1"}}"#).0[0]["subscribe"].is_object());
    assert!(c.send(r#"{"id":7,"subscribe":{"channel":"news"}}"#).0[0]["subscribe"].is_object());
}

#[test]
fn publication_data_format() {
    let node = node_with(|c| {
        c.channel.without_namespace.allow_publish_for_client = true;
        c.channel.namespaces.push(Namespace {
            name: "obj".into(),
            options: ChannelOptions {
                allow_publish_for_client: true,
                publication_data_format: "json_object".into(),
                ..Default::default()
            },
        });
        c.channel.namespaces.push(Namespace {
            name: "bin".into(),
            options: ChannelOptions {
                allow_publish_for_client: true,
                publication_data_format: "binary".into(),
                ..Default::default()
            },
        });
    });
    let mut c = Client::new(&node, start());
    c.connect("42");
    let cases = [
        ("news", r#""""#, Some(107)),
        ("news", "1", None),
        ("obj:x", "[1]", Some(107)),
        ("obj:x", r#"{"a":1}"#, None),
        ("bin:x", r#""""#, None),
    ];
    for (i, (ch, data, want)) in cases.into_iter().enumerate() {
        // Empty data is an absent `data` field.
        let cmd = match data {
            r#""""# => format!(r#"{{"id":{},"publish":{{"channel":"{ch}"}}}}"#, i + 2),
            d => format!(r#"{{"id":{},"publish":{{"channel":"{ch}","data":{d}}}}}"#, i + 2),
        };
        let (r, d) = c.send(&cmd);
        assert_eq!((error_code(&r), d), (want, None), "{cmd}");
    }
    // The server API too.
    let e = now_or_never(node.publish("obj:x", Bytes::from_static(b"[1]"), None, false, HashMap::new())).unwrap_err();
    assert_eq!(e.code(), 107);
    assert!(now_or_never(node.publish("obj:x", Bytes::from_static(b"{}"), None, false, HashMap::new())).is_ok());
}

#[test]
fn presence_and_history_for_anonymous_users_need_their_own_flag() {
    let setup = |anon: bool| {
        node_with(move |c| {
            c.session.allow_anonymous_connect_without_token = true;
            let o = &mut c.channel.namespaces[0].options;
            o.allow_presence_for_client = true;
            o.allow_history_for_client = true;
            o.allow_presence_for_anonymous = anon;
            o.allow_history_for_anonymous = anon;
        })
    };
    for anon in [false, true] {
        let node = setup(anon);
        let mut c = Client::new(&node, start());
        assert_eq!(c.send(r#"{"id":1,"connect":{}}"#).1, None);
        let want = if anon { None } else { Some(103) };
        let (r, _) = c.send(r#"{"id":2,"presence":{"channel":"chat:1"}}"#);
        assert_eq!(error_code(&r), want, "presence, anonymous allowed: {anon}");
        let (r, _) = c.send(r#"{"id":3,"history":{"channel":"chat:1"}}"#);
        assert_eq!(error_code(&r), want, "history, anonymous allowed: {anon}");
        // A known user needs no such flag.
        let mut u = Client::new(&node, start());
        u.connect("42");
        assert_eq!(error_code(&u.send(r#"{"id":2,"presence":{"channel":"chat:1"}}"#).0), None);
    }
}

#[test]
fn separators_are_configurable() {
    let node = node_with(|c| {
        c.channel.namespace_boundary = "/".into();
        c.channel.user_boundary = "@".into();
        c.channel.user_separator = ";".into();
        c.channel.namespaces[1].options.allow_user_limited_channels = true;
    });
    let mut c = Client::new(&node, start());
    c.connect("42");
    let (r, _) = c.send(r#"{"id":2,"subscribe":{"channel":"chat/1"}}"#);
    assert_eq!(r[0]["subscribe"]["recoverable"], true, "namespace chat through '/': {r:?}");
    let (r, _) = c.send(r#"{"id":3,"subscribe":{"channel":"private/d@7;42"}}"#);
    assert!(r[0]["subscribe"].is_object(), "user-limited through '@' and ';': {r:?}");
    let (r, _) = c.send(r#"{"id":4,"subscribe":{"channel":"private/d@7;43"}}"#);
    assert_eq!(error_code(&r), Some(103));
}

#[test]
fn connection_token_audience_issuer_and_user_claim() {
    let node = node_with(|c| {
        c.token.audience_regex = "^app-(prod|stage)$".into();
        c.token.issuer_regex = r"^https://auth\.example\.com/".into();
        c.token.user_id_claim = "uid".into();
    });
    let good = json!({"uid": 1234, "aud": ["other", "app-prod"], "iss": "https://auth.example.com/x"});
    let mut c = Client::new(&node, start());
    let (r, d) = connect_with(&mut c, good.clone());
    assert_eq!(d, None, "{r:?}");
    assert_eq!(node.user_connections("1234"), 1, "user from uid (a number, as its text)");
    for (field, value) in [("aud", json!("app-test")), ("iss", json!("https://evil.example.com/"))] {
        let mut claims = good.clone();
        claims[field] = value;
        let mut c = Client::new(&node, start());
        assert_eq!(connect_with(&mut c, claims).1, Some(3500), "foreign {field}");
    }
}

#[test]
fn connection_token_rules() {
    let node = node_with(|c| c.session.disallow_anonymous_connection_tokens = true);
    let mut c = Client::new(&node, start());
    assert_eq!(connect_with(&mut c, json!({"sub": ""})).1, Some(3507), "anonymous token");
    let mut c = Client::new(&node, start());
    let (_, d) = connect_with(&mut c, json!({"sub": "42", "channel": "news"}));
    assert_eq!(d, Some(3500), "a subscription token replayed as a connection token");
    let mut c = Client::new(&node, start());
    let (r, d) = connect_with(&mut c, json!({"sub": "42", "nbf": 1_700_000_100u64}));
    assert_eq!((error_code(&r), d), (Some(109), None), "not valid yet");
    let mut c = Client::new(&node, start());
    let (r, d) = connect_with(&mut c, json!({"sub": "42", "expire_at": 1_600_000_000u64}));
    assert_eq!((error_code(&r), d), (Some(110), None), "expire_at already past");
    // `subs` values: info and data, override of presence.
    let mut c = Client::new(&node, start());
    let (r, d) = connect_with(
        &mut c,
        json!({"sub": "42", "subs": {"chat:1": {"data": {"hello": 1}, "info": {"role": "a"}, "override": {"presence": {"value": false}}}, "news": {"b64data": "eyJ4IjoyfQ=="}}}),
    );
    assert_eq!(d, None, "{r:?}");
    assert_eq!(r[0]["connect"]["subs"]["chat:1"]["data"], json!({"hello": 1}));
    assert_eq!(r[0]["connect"]["subs"]["news"]["data"], json!({"x": 2}));
    let presence = now_or_never(node.presence.presence("chat:1")).unwrap();
    assert!(presence.is_empty(), "presence overridden off: {presence:?}");
}

#[test]
fn hmac_key_rotation() {
    let node = node_with(|c| {
        c.token.hmac_secret_key = "new".into();
        c.token.hmac_previous_secret_key = SECRET.into();
        c.token.hmac_previous_secret_key_valid_until = 1_700_000_100;
    });
    let mut c = Client::new(&node, start());
    assert_eq!(
        connect_with(&mut c, json!({"sub": "42"})).1,
        None,
        "previous key, before valid_until"
    );
    let mut c = Client::new(&node, start().after(Duration::from_secs(101)));
    c.now.unix = 1_700_000_101;
    assert_eq!(
        connect_with(&mut c, json!({"sub": "42"})).1,
        Some(3500),
        "previous key, after valid_until"
    );
    let mut c = Client::new(&node, start());
    let t = make_hs256("new", &json!({"sub": "42"})).unwrap();
    assert_eq!(c.send(&format!(r#"{{"id":1,"connect":{{"token":"{t}"}}}}"#)).1, None, "current key");
}

#[test]
fn insecure_skip_token_signature_verify_reads_claims_only() {
    let node = node_with(|c| c.insecure_skip_token_signature_verify = true);
    let forged = make_hs256("anything", &json!({"sub": "42"})).unwrap();
    let mut c = Client::new(&node, start());
    assert_eq!(c.send(&format!(r#"{{"id":1,"connect":{{"token":"{forged}"}}}}"#)).1, None);
    let old = make_hs256("anything", &json!({"sub": "42", "exp": 1u64})).unwrap();
    let mut c = Client::new(&node, start());
    assert_eq!(
        error_code(&c.send(&format!(r#"{{"id":1,"connect":{{"token":"{old}"}}}}"#)).0),
        Some(109),
        "claims still checked"
    );
}

#[test]
fn user_from_a_trusted_header() {
    let node = node_with(|c| c.session.user_id_http_header = "X-User-Id".into());
    assert!(node.kept_request_headers().contains(&"x-user-id".to_string()));
    let mut c = Client::new(&node, start());
    c.session.set_request_headers(vec![("x-user-id".into(), "alice".into())]);
    assert_eq!(c.send(r#"{"id":1,"connect":{}}"#).1, None);
    assert_eq!(node.user_connections("alice"), 1);
    let mut c = Client::new(&node, start());
    assert_eq!(c.send(r#"{"id":1,"connect":{}}"#).1, Some(3500), "no header, no token");
}

fn sub_token_node() -> Arc<Node> {
    node_with(|c| {
        c.subscription_token = SubscriptionTokenConfig {
            enabled: true,
            token: TokenConfig {
                hmac_secret_key: "subs-only".into(),
                ..Default::default()
            },
        };
    })
}

#[test]
fn subscription_tokens_with_their_own_keys_and_claims() {
    let node = sub_token_node();
    let mut c = Client::new(&node, start());
    let client = c.connect("42")["client"].as_str().unwrap().to_string();
    let with_conn_key = make_hs256(SECRET, &json!({"sub": "42", "channel": "private:a"})).unwrap();
    let (r, d) = subscribe(&mut c, 2, "private:a", &with_conn_key);
    assert_eq!((error_code(&r), d), (Some(103), None), "signed with the connection key");
    let tok = make_hs256(
        "subs-only",
        &json!({"sub": "42", "channel": "chat:1", "client": client, "data": {"d": 1}, "override": {"presence": {"value": false}}}),
    )
    .unwrap();
    let (r, d) = subscribe(&mut c, 3, "chat:1", &tok);
    assert_eq!(d, None, "{r:?}");
    assert_eq!(r[0]["subscribe"]["data"], json!({"d": 1}));
    assert!(now_or_never(node.presence.presence("chat:1")).unwrap().is_empty(), "override");
    let past = make_hs256(
        "subs-only",
        &json!({"sub": "42", "channel": "private:p", "expire_at": 1_600_000_000u64}),
    )
    .unwrap();
    assert_eq!(error_code(&subscribe(&mut c, 4, "private:p", &past).0), Some(110));
    // Bound to another client: closes with 3500.
    let other = make_hs256("subs-only", &json!({"sub": "42", "channel": "private:b", "client": "someone-else"})).unwrap();
    assert_eq!(subscribe(&mut c, 5, "private:b", &other).1, Some(3500));
}

#[test]
fn expired_subscription_tokens() {
    let node = node_with(|c| c.session.expired_sub_close_delay = Duration::from_secs(5));
    let mut c = Client::new(&node, start());
    c.connect("42");
    let tok = make_hs256(SECRET, &json!({"sub": "42", "channel": "private:x", "exp": 1_700_000_010u64})).unwrap();
    let (r, _) = subscribe(&mut c, 2, "private:x", &tok);
    assert_eq!(r[0]["subscribe"]["ttl"], 10, "{r:?}");
    // At the expiry the subscription still has `expired_sub_close_delay` to be refreshed.
    let (r, d) = c.tick(Duration::from_secs(14));
    assert!(d.is_none() && r.iter().all(|r| r["push"]["unsubscribe"].is_null()), "{r:?}");
    let (r, _) = c.tick(Duration::from_secs(1));
    assert_eq!(r.last().unwrap()["push"]["unsubscribe"]["code"], 2501, "{r:?}");
    // sub_refresh with an expired token: 3006 (centrifugal/centrifuge#627).
    let mut c = Client::new(&node, start());
    c.connect("42");
    let tok = make_hs256(SECRET, &json!({"sub": "42", "channel": "private:y", "exp": 1_700_000_010u64})).unwrap();
    subscribe(&mut c, 2, "private:y", &tok);
    c.now.unix += 20;
    let (_, d) = c.send(&format!(r#"{{"id":3,"sub_refresh":{{"channel":"private:y","token":"{tok}"}}}}"#));
    assert_eq!(d, Some(3006));
}

#[test]
fn history_meta_ttl_forgets_positions_in_the_memory_engine() {
    use crate::engine::{Broker as _, PublishOptions};
    use crate::memory::{ManualClock, MemoryEngine};
    let clock = Arc::new(ManualClock::new());
    let e = MemoryEngine::new(clock.clone());
    let opts = PublishOptions {
        history_size: 10,
        history_ttl: Duration::from_secs(60),
        meta_ttl: Duration::from_secs(600),
        ..Default::default()
    };
    let first = now_or_never(e.publish("c", Publication::default(), &opts)).unwrap();
    clock.advance(Duration::from_secs(599));
    let read = HistoryQuery {
        meta_ttl: Duration::from_secs(600),
        ..Default::default()
    };
    assert_eq!(
        now_or_never(e.history("c", read.clone())).unwrap().position,
        first,
        "kept, and the read prolongs it"
    );
    clock.advance(Duration::from_secs(599));
    assert_eq!(now_or_never(e.history("c", read.clone())).unwrap().position, first);
    clock.advance(Duration::from_secs(601));
    let after = now_or_never(e.publish("c", Publication::default(), &opts)).unwrap();
    assert_eq!(after.offset, 1, "a new stream");
    assert_ne!(after.epoch, first.epoch, "under a new epoch");
}

/// A map or shared-poll subscribe (`type` 1-4) is refused with 103, as Centrifugo refuses a
/// type the namespace does not have; nothing is subscribed.
#[test]
fn subscription_types_other_than_stream_are_refused() {
    let node = node_with(|_| {});
    let mut c = Client::new(&node, start());
    c.connect("42");
    for t in 1..=4 {
        let (r, d) = c.send(&format!(r#"{{"id":{},"subscribe":{{"channel":"news","type":{t}}}}}"#, t + 1));
        assert_eq!((error_code(&r), d), (Some(103), None), "type {t}");
    }
    assert_eq!(node.hub.num_subscribers("news"), 0);
    assert!(c.send(r#"{"id":9,"subscribe":{"channel":"news","type":0}}"#).0[0]["subscribe"].is_object());
}

/// `rpc.namespace_boundary`: `ns/method` routes to namespace `ns` with `/`; `:` is then part
/// of a method without namespace.
#[test]
fn rpc_namespace_boundary() {
    let node = node_with(|c| {
        c.proxy.rpc.namespace_boundary = "/".into();
        c.proxy.rpc.proxy.endpoint = "http://127.0.0.1:9/rpc".into();
        c.proxy.rpc.without_namespace.proxy_enabled = true;
    });
    let mut c = Client::new(&node, start());
    c.connect("u");
    let (r, _) = c.send(r#"{"id":2,"rpc":{"method":"ns/x","data":{}}}"#);
    assert_eq!(error_code(&r), Some(104), "unknown RPC namespace through '/'");
    let (r, _) = c.send(r#"{"id":3,"rpc":{"method":"ns:x","data":{}}}"#);
    assert_eq!(
        error_code(&r),
        Some(100),
        "no namespace: the default proxy is asked (and has no transport)"
    );
}

/// Server-side subscriptions from a token follow the same name rule: a non-ASCII channel
/// in `channels` is not subscribed (the others are).
#[test]
fn token_channels_with_non_ascii_names_are_not_subscribed() {
    let node = node_with(|_| {});
    let mut c = Client::new(&node, start());
    let (r, d) = connect_with(&mut c, json!({"sub": "42", "channels": ["n\u{0435}ws", "news"]}));
    assert_eq!(d, None);
    let subs = r[0]["connect"]["subs"].as_object().unwrap();
    assert_eq!(subs.keys().collect::<Vec<_>>(), ["news"], "{r:?}");
    assert_eq!(node.hub.num_subscribers("n\u{0435}ws"), 0);
}
