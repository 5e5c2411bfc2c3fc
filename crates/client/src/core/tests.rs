use super::*;
use wshub_protocol::codec::{decode_commands, reply_bytes};

fn core() -> ClientCore {
    ClientCore::new(
        ClientConfig {
            token: "t".into(),
            ..Default::default()
        },
        7,
    )
}

fn actions(c: &mut ClientCore) -> Vec<Action> {
    std::iter::from_fn(|| c.poll_action()).collect()
}

fn events(c: &mut ClientCore) -> Vec<ClientEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn sent(c: &mut ClientCore) -> Vec<Command> {
    actions(c)
        .into_iter()
        .filter_map(|a| match a {
            Action::Send(b) => Some(decode_commands(Format::Json, b).unwrap()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn frame(r: Reply) -> Bytes {
    reply_bytes(Format::Json, &r).unwrap()
}

/// The server's error reply to command `id`.
/// The reply to subscribe command `id`: a recoverable stream at `offset` of epoch `e`.
fn subscribed_reply(id: u32, offset: u64) -> Bytes {
    frame(Reply {
        id,
        subscribe: Some(SubscribeResult {
            recoverable: true,
            epoch: "e".into(),
            offset,
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The server's unsubscribe push for `channel` with `code`.
fn unsub(channel: &str, code: u32) -> Bytes {
    frame(Reply {
        push: Some(Push {
            channel: channel.into(),
            unsubscribe: Some(Unsubscribe {
                code,
                reason: String::new(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn error_frame(id: u32, code: u32, message: &str) -> Bytes {
    frame(Reply {
        id,
        error: Some(Error {
            code,
            message: message.into(),
            temporary: false,
        }),
        ..Default::default()
    })
}

/// A core whose transport opened now, before the connect reply; the time, and the connect
/// command's id.
fn opened() -> (ClientCore, Instant, u32) {
    let t0 = Instant::now();
    let mut c = core();
    c.connect();
    let _ = actions(&mut c);
    c.handle_open(t0);
    let id = sent(&mut c)[0].id;
    (c, t0, id)
}

/// A core that asked for `subscriptions` (channel, recoverable) before connecting, connected
/// now; and the time it connected at.
fn connected_with(subscriptions: &[(&str, bool)]) -> (ClientCore, Instant) {
    let t0 = Instant::now();
    let mut c = core();
    for (channel, recoverable) in subscriptions {
        c.subscribe(channel, *recoverable, "");
    }
    connected(&mut c, t0);
    (c, t0)
}

fn connected(c: &mut ClientCore, now: Instant) {
    c.connect();
    assert_eq!(actions(c), vec![Action::OpenTransport]);
    c.handle_open(now);
    let cmds = sent(c);
    let id = cmds[0].id;
    assert_eq!(cmds[0].connect.as_ref().unwrap().token, "t");
    c.handle_frame(
        frame(Reply {
            id,
            connect: Some(ConnectResult {
                client: "c1".into(),
                ping: 25,
                pong: true,
                ..Default::default()
            }),
            ..Default::default()
        }),
        now,
    );
    assert_eq!(c.state(), State::Connected);
}

#[test]
fn connect_then_subscribe_and_receive() {
    let (mut c, t0) = connected_with(&[("news", true)]);
    let cmds = sent(&mut c);
    let sub = cmds[0].subscribe.as_ref().unwrap();
    assert_eq!((sub.channel.as_str(), sub.recover), ("news", false));
    c.handle_frame(subscribed_reply(cmds[0].id, 4), t0);
    assert_eq!(c.sub_state("news"), SubState::Subscribed);
    let p = Push {
        channel: "news".into(),
        r#pub: Some(Publication {
            data: Bytes::from_static(b"1"),
            offset: 5,
            ..Default::default()
        }),
        ..Default::default()
    };
    c.handle_frame(
        frame(Reply {
            push: Some(p.clone()),
            ..Default::default()
        }),
        t0,
    );
    c.handle_frame(
        frame(Reply {
            push: Some(p),
            ..Default::default()
        }),
        t0,
    );
    let pubs: Vec<_> = events(&mut c)
        .into_iter()
        .filter(|e| matches!(e, ClientEvent::Publication { .. }))
        .collect();
    assert_eq!(pubs.len(), 1, "a duplicate offset is dropped");
}

#[test]
fn reconnect_with_backoff_and_recover() {
    let (mut c, t0) = connected_with(&[("news", true)]);
    let id = sent(&mut c)[0].id;
    c.handle_frame(subscribed_reply(id, 9), t0);
    let _ = events(&mut c);
    c.handle_close(dc::SHUTDOWN, "shutdown", t0);
    assert_eq!(c.state(), State::Connecting);
    assert_eq!(c.sub_state("news"), SubState::Subscribing);
    let at = c.poll_timeout().unwrap();
    let d = at - t0;
    assert!(d >= Duration::from_millis(500) && d <= Duration::from_millis(1000), "{d:?}");
    c.handle_timeout(at - Duration::from_millis(1));
    assert!(actions(&mut c).is_empty(), "not before the delay");
    c.handle_timeout(at);
    assert_eq!(actions(&mut c), vec![Action::OpenTransport]);
    c.handle_open(at);
    let cid = sent(&mut c)[0].id;
    c.handle_frame(
        frame(Reply {
            id: cid,
            connect: Some(ConnectResult {
                client: "c2".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        at,
    );
    let cmds = sent(&mut c);
    let s = cmds[0].subscribe.as_ref().unwrap();
    assert_eq!(
        (s.recover, s.offset, s.epoch.as_str()),
        (true, 9, "e"),
        "resubscribes from its position"
    );
    let recovered = SubscribeResult {
        recoverable: true,
        recovered: true,
        was_recovering: true,
        epoch: "e".into(),
        offset: 9,
        publications: vec![
            Publication {
                offset: 10,
                data: Bytes::from_static(b"10"),
                ..Default::default()
            },
            Publication {
                offset: 11,
                data: Bytes::from_static(b"11"),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    c.handle_frame(
        frame(Reply {
            id: cmds[0].id,
            subscribe: Some(recovered),
            ..Default::default()
        }),
        at,
    );
    let ev = events(&mut c);
    assert!(ev.contains(&ClientEvent::Subscribed {
        channel: "news".into(),
        recovered: true,
        was_recovering: true
    }));
    let offsets: Vec<u64> = ev
        .iter()
        .filter_map(|e| {
            if let ClientEvent::Publication { offset, .. } = e {
                Some(*offset)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(offsets, vec![10, 11]);
}

#[test]
fn backoff_grows_is_capped_and_resets_after_a_stable_connection() {
    let t0 = Instant::now();
    let mut c = ClientCore::new(
        ClientConfig {
            token: "t".into(),
            min_reconnect_delay: Duration::from_millis(100),
            max_reconnect_delay: Duration::from_secs(2),
            ..Default::default()
        },
        1,
    );
    let delays: Vec<Duration> = (0..10).map(|_| c.backoff()).collect();
    for (i, d) in delays.iter().enumerate() {
        let ceiling = Duration::from_millis((100 + (100u64 << i).min(2000)).min(2000));
        assert!(*d >= Duration::from_millis(100) && *d <= ceiling, "attempt {i}: {d:?}");
    }
    assert!(delays[9] <= Duration::from_secs(2));
    connected(&mut c, t0);
    c.handle_close(dc::SHUTDOWN, "", t0 + Duration::from_secs(60));
    let d = c.poll_timeout().unwrap() - (t0 + Duration::from_secs(60));
    assert!(d <= Duration::from_millis(200), "reset after a stable connection: {d:?}");
}

#[test]
fn jitter_spreads_clients() {
    let delays: Vec<Duration> = (0..200)
        .map(|seed| ClientCore::new(ClientConfig::default(), seed).backoff())
        .collect();
    let distinct: std::collections::HashSet<_> = delays.iter().collect();
    assert!(distinct.len() > 150, "{} distinct delays", distinct.len());
}

#[test]
fn terminal_codes_stop() {
    let t0 = Instant::now();
    for code in [3500, 3501, 3503, 4500] {
        let mut c = core();
        connected(&mut c, t0);
        c.handle_close(code, "", t0);
        assert_eq!(c.state(), State::Disconnected, "{code}");
        assert_eq!(c.poll_timeout(), None);
    }
    for code in [1006, 3000, 3001, 3012, 4000] {
        let mut c = core();
        connected(&mut c, t0);
        c.handle_close(code, "", t0);
        assert_eq!(c.state(), State::Connecting, "{code}");
    }
}

#[test]
fn expired_token_is_refreshed() {
    let (mut c, t0, id) = opened();
    c.handle_frame(error_frame(id, 109, "token expired"), t0);
    assert_eq!(actions(&mut c), vec![Action::RefreshToken, Action::CloseTransport]);
    c.handle_close(1000, "", t0);
    c.handle_token("fresh".into(), t0);
    let at = c.poll_timeout().unwrap();
    c.handle_timeout(at);
    assert_eq!(actions(&mut c), vec![Action::OpenTransport]);
    c.handle_open(at);
    assert_eq!(sent(&mut c)[0].connect.as_ref().unwrap().token, "fresh");
}

#[test]
fn pings_are_answered_and_their_absence_reconnects() {
    let (mut c, t0) = connected_with(&[]);
    let _ = actions(&mut c);
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(35)));
    let t1 = t0 + Duration::from_secs(25);
    c.handle_frame(frame(Reply::default()), t1);
    assert_eq!(sent(&mut c), vec![Command::default()], "pong");
    assert_eq!(c.poll_timeout(), Some(t1 + Duration::from_secs(35)));
    c.handle_timeout(t1 + Duration::from_secs(35));
    assert_eq!(actions(&mut c), vec![Action::CloseTransport]);
    assert_eq!(c.state(), State::Connecting);
}

#[test]
fn resubscribe_on_2500_and_drop_on_2000() {
    let (mut c, t0) = connected_with(&[("a", false), ("b", false)]);
    let _ = sent(&mut c);
    c.handle_frame(unsub("a", 2500), t0);
    assert_eq!(sent(&mut c)[0].subscribe.as_ref().unwrap().channel, "a");
    c.handle_frame(unsub("b", 2000), t0);
    assert_eq!(c.sub_state("b"), SubState::Unsubscribed);
}

#[test]
fn refreshes_before_expiry() {
    let (mut c, t0, id) = opened();
    c.handle_frame(
        frame(Reply {
            id,
            connect: Some(ConnectResult {
                client: "c".into(),
                expires: true,
                ttl: 10,
                ..Default::default()
            }),
            ..Default::default()
        }),
        t0,
    );
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(9)));
    c.handle_timeout(t0 + Duration::from_secs(9));
    assert_eq!(actions(&mut c), vec![Action::RefreshToken]);
    c.handle_token("new".into(), t0 + Duration::from_secs(9));
    assert_eq!(sent(&mut c)[0].refresh.as_ref().unwrap().token, "new");
}

/// The core asks for `channel`'s token; given `token`, it subscribes with it.
fn token_asked_and_sent(c: &mut ClientCore, channel: &str, token: &str) {
    assert_eq!(actions(c), vec![Action::SubscriptionToken(channel.into())]);
    c.handle_sub_token(channel, Ok(token.into()));
    assert_eq!(sent(c)[0].subscribe.as_ref().unwrap().token, token);
}

fn callback_sub() -> SubscribeOptions {
    SubscribeOptions {
        recoverable: false,
        token: String::new(),
        token_callback: true,
        ..Default::default()
    }
}

#[test]
fn subscription_token_callback_first_subscribe_refresh_and_expiry() {
    let (mut c, t0) = connected_with(&[]);
    c.subscribe_with("priv", callback_sub());
    // No subscribe yet: a token is asked for first, once.
    assert_eq!(actions(&mut c), vec![Action::SubscriptionToken("priv".into())]);
    c.handle_timeout(t0);
    assert!(actions(&mut c).is_empty());
    c.handle_sub_token("priv", Ok("tok1".into()));
    let cmds = sent(&mut c);
    assert_eq!(cmds[0].subscribe.as_ref().unwrap().token, "tok1");
    c.handle_frame(
        frame(Reply {
            id: cmds[0].id,
            subscribe: Some(SubscribeResult {
                expires: true,
                ttl: 10,
                ..Default::default()
            }),
            ..Default::default()
        }),
        t0,
    );
    assert_eq!(c.sub_state("priv"), SubState::Subscribed);
    // At 90 % of the ttl: a new token, sent as sub_refresh (the subscription stays).
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(9)));
    c.handle_timeout(t0 + Duration::from_millis(8_999));
    assert!(actions(&mut c).is_empty());
    let t1 = t0 + Duration::from_secs(9);
    c.handle_timeout(t1);
    assert_eq!(actions(&mut c), vec![Action::SubscriptionToken("priv".into())]);
    c.handle_sub_token("priv", Ok("tok2".into()));
    let cmds = sent(&mut c);
    let r = cmds[0].sub_refresh.as_ref().unwrap();
    assert_eq!((r.channel.as_str(), r.token.as_str()), ("priv", "tok2"));
    c.handle_frame(
        frame(Reply {
            id: cmds[0].id,
            sub_refresh: Some(SubRefreshResult {
                expires: true,
                ttl: 20,
                ..Default::default()
            }),
            ..Default::default()
        }),
        t1,
    );
    assert_eq!(c.poll_timeout(), Some(t1 + Duration::from_secs(18)));
    assert_eq!(c.sub_state("priv"), SubState::Subscribed);
    assert!(!events(&mut c).iter().any(|e| matches!(e, ClientEvent::Unsubscribed { .. })));

    // The server drops it as expired (2501): a fresh token, then a new subscribe.
    c.handle_frame(unsub("priv", 2501), t1);
    token_asked_and_sent(&mut c, "priv", "tok3");
}

#[test]
fn subscription_token_expired_reply_and_callback_failure() {
    let (mut c, t0) = connected_with(&[]);
    c.subscribe_with("priv", callback_sub());
    actions(&mut c);
    c.handle_sub_token("priv", Ok("old".into()));
    let id = sent(&mut c)[0].id;
    // 109 on subscribe: the token is dropped and a new one asked for.
    c.handle_frame(error_frame(id, 109, "token expired"), t0);
    assert_eq!(actions(&mut c), vec![Action::SubscriptionToken("priv".into())]);
    assert_eq!(c.sub_state("priv"), SubState::Subscribing);
    // The callback fails: the subscription ends, with the reason.
    events(&mut c);
    c.handle_sub_token("priv", Err("denied".into()));
    let evs = events(&mut c);
    assert!(
        evs.iter()
            .any(|e| matches!(e, ClientEvent::Error { message } if message.contains("denied"))),
        "{evs:?}"
    );
    assert!(
        evs.iter()
            .any(|e| matches!(e, ClientEvent::Unsubscribed { channel, .. } if channel == "priv")),
        "{evs:?}"
    );
    assert_eq!(c.sub_state("priv"), SubState::Unsubscribed);
    // Nothing was subscribed, so nothing is sent; a late answer is ignored.
    c.handle_sub_token("priv", Ok("late".into()));
    assert!(actions(&mut c).is_empty());
}

#[test]
fn subscription_token_asked_while_disconnected_is_used_on_connect() {
    let t0 = Instant::now();
    let mut c = core();
    c.subscribe_with("priv", callback_sub());
    assert!(actions(&mut c).is_empty(), "nothing to do before connecting");
    connected(&mut c, t0);
    token_asked_and_sent(&mut c, "priv", "t");
}

#[test]
fn delta_publications_are_decoded_and_a_broken_chain_resubscribes() {
    let t0 = Instant::now();
    let mut c = core();
    c.subscribe_with(
        "doc",
        SubscribeOptions {
            recoverable: true,
            delta: true,
            ..Default::default()
        },
    );
    connected(&mut c, t0);
    let cmds = sent(&mut c);
    let req = cmds[0].subscribe.as_ref().unwrap();
    assert_eq!(req.delta, "fossil");
    let sub_reply = |id| {
        frame(Reply {
            id,
            subscribe: Some(SubscribeResult {
                recoverable: true,
                delta: true,
                epoch: "e".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
    };
    c.handle_frame(sub_reply(cmds[0].id), t0);
    events(&mut c);
    let v1 = format!("{{\"n\":1,\"s\":\"{}\"}}", "x".repeat(200));
    let v2 = format!("{{\"n\":2,\"s\":\"{}\"}}", "x".repeat(200));
    let as_string = |b: &[u8]| Bytes::from(serde_json::to_vec(std::str::from_utf8(b).unwrap()).unwrap());
    let push = |offset, data: Bytes, delta| {
        frame(Reply {
            push: Some(Push {
                channel: "doc".into(),
                r#pub: Some(Publication {
                    offset,
                    data,
                    delta,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
    };
    c.handle_frame(push(1, as_string(v1.as_bytes()), false), t0);
    let d = fossil::create(v1.as_bytes(), v2.as_bytes());
    c.handle_frame(push(2, as_string(&d), true), t0);
    let got: Vec<Bytes> = events(&mut c)
        .into_iter()
        .filter_map(|e| match e {
            ClientEvent::Publication { data, .. } => Some(data),
            _ => None,
        })
        .collect();
    assert_eq!(got, vec![Bytes::from(v1), Bytes::from(v2.clone())]);
    // A delta that does not apply: an error, and a resubscribe recovering from offset 2.
    c.handle_frame(push(3, as_string(b"5\n5@999,0;"), true), t0);
    assert!(events(&mut c).iter().any(|e| matches!(e, ClientEvent::Error { .. })));
    let cmds = sent(&mut c);
    assert!(cmds[0].unsubscribe.is_some());
    let again = cmds[1].subscribe.as_ref().unwrap();
    assert_eq!((again.recover, again.offset), (true, 2));
}
