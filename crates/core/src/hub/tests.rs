use super::*;
use crate::connection::testing::Recorder;
use bytes::Bytes;
use std::collections::HashMap;
use wshub_protocol::Format;

fn publication(offset: u64) -> Publication {
    Publication {
        data: Bytes::from(format!("{{\"n\":{offset}}}")),
        offset,
        ..Default::default()
    }
}

#[test]
fn one_encoding_shared_by_all_subscribers_of_a_format() {
    let hub = Hub::default();
    let a = Recorder::new(Format::Json);
    let b = Recorder::new(Format::Json);
    let c = Recorder::new(Format::Protobuf);
    assert!(hub.add("news", a.clone(), false, false));
    assert!(!hub.add("news", b.clone(), false, false));
    hub.add("news", c.clone(), false, false);
    hub.broadcast_publication("news", &publication(1));
    let (fa, fb) = (a.payloads.lock()[0].clone(), b.payloads.lock()[0].clone());
    assert_eq!(fa.as_ptr(), fb.as_ptr(), "same allocation for both JSON subscribers");
    assert_eq!(a.texts(), vec![r#"{"push":{"channel":"news","pub":{"data":{"n":1},"offset":1}}}"#]);
    assert_ne!(c.payloads.lock()[0][0], b'{', "Protobuf, not JSON");
    assert!(!hub.remove("news", a.id()));
    assert!(!hub.remove("news", b.id()));
    assert!(hub.remove("news", c.id()), "last subscriber");
    assert!(hub.channels().is_empty());
}

#[test]
fn recovery_buffers_then_merges_by_offset() {
    let hub = Hub::default();
    let r = Recorder::new(Format::Json);
    hub.add("c", r.clone(), false, true);
    // Published while history is read: 5 and 6 (the client got up to 5 from history).
    hub.broadcast_publication("c", &publication(5));
    hub.broadcast_publication("c", &publication(6));
    assert!(r.payloads.lock().is_empty(), "buffered while recovering");
    hub.finish_recovery("c", r.id(), 5).unwrap();
    assert_eq!(r.texts().len(), 1);
    assert!(r.texts()[0].contains(r#""offset":6"#));
    hub.broadcast_publication("c", &publication(7));
    assert_eq!(r.texts().len(), 2, "live after recovery");
}

#[test]
fn recovery_gap_is_reported() {
    let hub = Hub::default();
    let r = Recorder::new(Format::Json);
    hub.add("c", r.clone(), false, true);
    hub.broadcast_publication("c", &publication(9));
    assert_eq!(hub.finish_recovery("c", r.id(), 5), Err(Gap { expected: 6 }));
}

#[test]
fn join_leave_only_to_those_who_asked() {
    let hub = Hub::default();
    let yes = Recorder::new(Format::Json);
    let no = Recorder::new(Format::Json);
    hub.add("c", yes.clone(), true, false);
    hub.add("c", no.clone(), false, false);
    let info = ClientInfo {
        user: "u".into(),
        client: "x".into(),
        ..Default::default()
    };
    hub.broadcast_join_leave("c", &info, true);
    hub.broadcast_join_leave("c", &info, false);
    assert_eq!(
        yes.texts(),
        vec![
            r#"{"push":{"channel":"c","join":{"info":{"user":"u","client":"x"}}}}"#.to_string(),
            r#"{"push":{"channel":"c","leave":{"info":{"user":"u","client":"x"}}}}"#.to_string(),
        ]
    );
    assert!(no.payloads.lock().is_empty());
}

#[test]
fn binary_data_skips_json_subscribers_only() {
    let hub = Hub::default();
    let j = Recorder::new(Format::Json);
    let p = Recorder::new(Format::Protobuf);
    hub.add("c", j.clone(), false, false);
    hub.add("c", p.clone(), false, false);
    hub.broadcast_publication(
        "c",
        &Publication {
            data: Bytes::from_static(&[0xff, 0x00]),
            ..Default::default()
        },
    );
    assert!(j.payloads.lock().is_empty());
    assert_eq!(p.payloads.lock().len(), 1);
}

#[test]
fn live_gap_disconnects_positioned_subscribers_once() {
    let hub = Hub::default();
    let positioned = Recorder::new(Format::Json);
    let plain = Recorder::new(Format::Json);
    hub.add("c", positioned.clone(), false, true);
    hub.finish_recovery("c", positioned.id(), 3).unwrap();
    hub.add("c", plain.clone(), false, false);
    hub.broadcast_publication("c", &publication(4));
    hub.broadcast_publication("c", &publication(4)); // a duplicate: not sent twice
    assert_eq!(positioned.texts().len(), 1);
    assert!(positioned.controls.lock().is_empty());
    // 5 and 6 were lost on the way to this node.
    hub.broadcast_publication("c", &publication(7));
    hub.broadcast_publication("c", &publication(8));
    assert_eq!(positioned.texts().len(), 1, "nothing after the gap");
    assert_eq!(
        positioned.controls.lock().as_slice(),
        [Control::Disconnect {
            code: 3010,
            reason: "insufficient state".into()
        }],
        "told once to reconnect and recover"
    );
    // A subscriber without a position has nothing to recover: it gets what comes.
    assert_eq!(plain.texts().len(), 4);
    assert!(plain.controls.lock().is_empty());
}

#[test]
fn live_stream_reset_disconnects_positioned_subscribers() {
    // Redis lost its data: the stream starts again at 1 under a new epoch. Sending on would
    // be wrong (the client drops offsets it has seen), so would dropping silently.
    let hub = Hub::default();
    let r = Recorder::new(Format::Json);
    let plain = Recorder::new(Format::Json);
    hub.add("c", r.clone(), false, true);
    hub.finish_recovery("c", r.id(), 5).unwrap();
    hub.add("c", plain.clone(), false, false);
    hub.reset("c");
    hub.broadcast_publication("c", &publication(1));
    assert!(r.texts().is_empty());
    assert_eq!(r.controls.lock().len(), 1, "{:?}", r.controls.lock());
    hub.reset("c");
    hub.broadcast_publication("c", &publication(2));
    assert_eq!(r.controls.lock().len(), 1, "told once");
    assert!(plain.controls.lock().is_empty());
    assert_eq!(plain.texts().len(), 2);
}

#[test]
fn history_ahead_of_the_live_stream_is_not_a_gap() {
    // Recovery read offsets up to 8 in history; 7 and 8 arrive live afterwards.
    let hub = Hub::default();
    let r = Recorder::new(Format::Json);
    hub.add("c", r.clone(), false, true);
    hub.finish_recovery("c", r.id(), 8).unwrap();
    hub.broadcast_publication("c", &publication(7));
    hub.broadcast_publication("c", &publication(8));
    hub.broadcast_publication("c", &publication(9));
    assert!(r.controls.lock().is_empty(), "{:?}", r.controls.lock());
    assert_eq!(r.texts().len(), 1, "only 9 is new");
}

#[test]
fn counts_follow_adds_and_removes() {
    let hub = Hub::default();
    let (a, b) = (Recorder::new(Format::Json), Recorder::new(Format::Json));
    hub.add("x", a.clone(), false, false);
    hub.add("x", a.clone(), false, false); // the same connection again: still one
    hub.add("x", b.clone(), false, false);
    hub.add("y", a.clone(), false, false);
    assert_eq!((hub.num_channels(), hub.num_subscriptions()), (2, 3));
    hub.remove("x", a.id());
    hub.remove("x", a.id()); // already gone: no change
    hub.remove("y", a.id());
    assert_eq!((hub.num_channels(), hub.num_subscriptions()), (1, 1));
    hub.remove("x", b.id());
    assert_eq!((hub.num_channels(), hub.num_subscriptions()), (0, 0));
}

fn doc(offset: u64, delta: bool, tag: &str) -> Publication {
    Publication {
        data: Bytes::from(format!("{{\"n\":{offset},\"body\":\"{}\"}}", "abcdefgh".repeat(40))),
        offset,
        delta,
        tags: HashMap::from([("kind".to_string(), tag.to_string())]),
        ..Default::default()
    }
}

fn delta_opts(filter: Option<FilterNode>) -> SubscriberOptions {
    SubscriberOptions {
        delta: true,
        filter,
        keyed: false,
    }
}

#[test]
fn delta_frames_are_computed_once_and_shared() {
    let hub = Hub::default();
    let a = Recorder::new(Format::Json);
    let b = Recorder::new(Format::Json);
    let plain = Recorder::new(Format::Json);
    let pb = Recorder::new(Format::Protobuf);
    hub.add_with("c", a.clone(), false, false, delta_opts(None));
    hub.add_with("c", b.clone(), false, false, delta_opts(None));
    hub.add("c", plain.clone(), false, false);
    hub.add_with("c", pb.clone(), false, false, delta_opts(None));
    hub.broadcast_publication("c", &doc(1, true, "x"));
    hub.broadcast_publication("c", &doc(2, true, "x"));
    hub.broadcast_publication("c", &doc(3, false, "x"));
    let (fa, fb) = (a.payloads.lock().clone(), b.payloads.lock().clone());
    for (x, y) in fa.iter().zip(&fb) {
        assert_eq!(x.as_ptr(), y.as_ptr(), "one frame for every JSON delta subscriber");
    }
    let pa = a.texts();
    assert!(
        pa[0].contains(r#""data":"{\"n\":1"#) && !pa[0].contains("delta"),
        "first whole, as a string: {}",
        pa[0]
    );
    assert!(pa[1].contains(r#""delta":true"#) && pa[1].len() < 200, "then a delta: {}", pa[1]);
    assert!(!pa[2].contains("delta"), "published without delta: whole");
    assert!(plain.texts().iter().all(|p| p.contains(r#""data":{"n":"#) && !p.contains("delta")));
    // Protobuf: whole data shares the plain frame, the delta is smaller.
    let pf = pb.payloads.lock().clone();
    assert!(pf[1].len() < pf[0].len() / 2);
}

#[test]
fn filtered_out_publication_breaks_the_delta_chain_for_that_subscriber_only() {
    let hub = Hub::default();
    let only_x = FilterNode {
        key: "kind".into(),
        cmp: "eq".into(),
        val: "x".into(),
        ..Default::default()
    };
    let f = Recorder::new(Format::Json);
    let all = Recorder::new(Format::Json);
    hub.add_with("c", f.clone(), false, false, delta_opts(Some(only_x)));
    hub.add_with("c", all.clone(), false, false, delta_opts(None));
    hub.broadcast_publication("c", &doc(1, true, "x"));
    hub.broadcast_publication("c", &doc(2, true, "y"));
    hub.broadcast_publication("c", &doc(3, true, "x"));
    let fp = f.texts();
    assert_eq!(fp.len(), 2, "offset 2 filtered out");
    assert!(!fp[1].contains("delta"), "its base is offset 1, not 2: whole");
    let ap = all.texts();
    assert!(ap[1].contains(r#""delta":true"#) && ap[2].contains(r#""delta":true"#));
    hub.remove("c", f.id());
    hub.remove("c", all.id());
    assert!(hub.channels().is_empty());
}

#[test]
fn a_position_steps_over_the_live_stream() {
    let mut p = Position::Live(3);
    assert!(matches!(p.step(4), Step::Send));
    assert!(matches!(p.step(0), Step::Send), "not in the stream: sent, position kept");
    assert!(matches!(p.step(4), Step::Skip), "already sent");
    assert!(matches!(p.step(7), Step::Gap(5)));
    assert!(matches!(p.step(8), Step::Skip), "after a gap, nothing until it leaves");
    assert!(matches!(Position::Untracked.step(9), Step::Send));
    assert!(matches!(Position::Recovering(Box::default()).step(1), Step::Skip));
}

#[test]
fn a_publication_over_the_lag_limit_costs_positioned_subscribers_their_state() {
    let hub = Hub::with_max_time_lag(std::time::Duration::from_secs(2));
    let positioned = Recorder::new(Format::Json);
    let plain = Recorder::new(Format::Json);
    hub.add("c", positioned.clone(), false, true);
    hub.finish_recovery("c", positioned.id(), 0).unwrap();
    hub.add("c", plain.clone(), false, false);
    assert_eq!(hub.position("c", positioned.id()), Some(0));
    assert_eq!(hub.position("c", plain.id()), None, "not positioned");
    let made_at = |offset, time| Publication {
        time,
        ..publication(offset)
    };
    // Two seconds late is within the limit; no time (0) is never late.
    hub.broadcast_at("c", made_at(1, 10_000), 12_000);
    hub.broadcast_at("c", made_at(2, 0), 99_000);
    assert_eq!(positioned.texts().len(), 2);
    assert_eq!(hub.position("c", positioned.id()), Some(2));
    assert!(positioned.controls.lock().is_empty());
    // Later than that: told once, and nothing more is sent to it.
    hub.broadcast_at("c", made_at(3, 10_000), 12_001);
    hub.broadcast_at("c", made_at(4, 10_000), 12_002);
    assert_eq!(
        positioned.controls.lock().as_slice(),
        [Control::Resubscribe { channel: "c".into() }]
    );
    assert_eq!(positioned.texts().len(), 2);
    assert_eq!(hub.position("c", positioned.id()), None);
    assert_eq!(plain.texts().len(), 4, "a subscriber without a position gets what comes");
    assert!(plain.controls.lock().is_empty());
    // Without a limit (the default) lateness is nobody's business.
    assert!(!lag_exceeded(1, i64::MAX, 0));
}
