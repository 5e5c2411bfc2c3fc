use std::time::Duration;

use super::*;
use crate::subscription::shared_poll::Mode;

fn opts(mode: Mode) -> SharedPollOptions {
    SharedPollOptions {
        mode,
        refresh_interval: Duration::from_millis(200),
        refresh_batch_size: 2,
        max_keys_per_connection: 3,
        ..Default::default()
    }
}

fn items(keys: &[(&str, u64)]) -> Vec<(String, u64, i64)> {
    keys.iter().map(|(k, v)| (k.to_string(), *v, 0)).collect()
}

fn answer(key: &str, data: &str, version: u64) -> Answered {
    Answered {
        key: key.into(),
        data: Bytes::from(data.to_string()),
        version,
        ..Default::default()
    }
}

fn to(d: &Delivery<u64>) -> Vec<u64> {
    let mut v: Vec<u64> = d.to.iter().map(|(h, _)| *h).collect();
    v.sort_unstable();
    v
}

#[test]
fn the_key_limit_counts_distinct_new_keys_net_of_inline_untrack() {
    let t0 = Instant::now();
    let mut s = ChannelState::new(opts(Mode::Versioned), String::new(), t0);
    assert!(s.track(1, &1, false, &items(&[("a", 0), ("b", 0)]), &[]).is_ok());
    assert_eq!(s.track(1, &1, false, &items(&[("c", 0), ("d", 0)]), &[]), Err(LimitExceeded));
    // Re-tracking a held key takes no slot; dropping one frees one.
    assert!(s
        .track(1, &1, false, &items(&[("a", 0), ("c", 0), ("d", 0)]), &["b".into()])
        .is_ok());
    assert_eq!(s.num_tracked_by(1), 3);
    assert!(!s.is_tracked("b"), "nobody else tracked it");
    assert_eq!(s.num_keys(), 3);
}

#[test]
fn new_keys_are_polled_at_once_and_a_second_tracker_is_brought_up_to_date() {
    let t0 = Instant::now();
    let mut s = ChannelState::new(opts(Mode::Versioned), String::new(), t0);
    let t = s.track(1, &1, false, &items(&[("a", 0), ("b", 4)]), &[]).unwrap();
    assert_eq!(t.new_keys, ["a", "b"]);
    let due = s.take_due(t0);
    assert_eq!(
        due,
        [Poll {
            items: vec![("a".into(), 0)],
            notified: true
        }],
        "b's holder waits for the timer"
    );
    assert!(s.take_due(t0).is_empty(), "one notified poll at a time");
    let a = s.apply("", vec![answer("a", "1", 1)], false);
    assert_eq!(a.deliveries.len(), 1);
    assert_eq!(to(&a.deliveries[0]), [1]);
    s.polled(true);
    // Connection 2 holds nothing of `a`: the node asks as if it had nothing, and sends the
    // unchanged answer to 2 only.
    s.track(2, &2, false, &items(&[("a", 0)]), &[]).unwrap();
    let due = s.take_due(t0);
    assert_eq!(
        due,
        [Poll {
            items: vec![("a".into(), 0)],
            notified: true
        }]
    );
    let a = s.apply("", vec![answer("a", "1", 1)], false);
    assert_eq!((a.changed, a.unchanged), (0, 1));
    assert_eq!(to(&a.deliveries[0]), [2]);
}

#[test]
fn versioned_answers_reach_only_trackers_behind() {
    let t0 = Instant::now();
    let mut s = ChannelState::new(opts(Mode::Versioned), String::new(), t0);
    s.track(1, &1, false, &items(&[("a", 5)]), &[]).unwrap();
    s.track(2, &2, false, &items(&[("a", 0)]), &[]).unwrap();
    let a = s.apply("", vec![answer("a", "x", 5)], false);
    assert_eq!(to(&a.deliveries[0]), [2]);
    let a = s.apply("", vec![answer("a", "x", 5), answer("zz", "untracked", 9)], false);
    assert!(a.deliveries.is_empty(), "nothing new, and unknown keys are ignored");
    let a = s.apply("", vec![answer("a", "y", 6)], false);
    assert_eq!(to(&a.deliveries[0]), [1, 2]);
    assert_eq!(a.deliveries[0].version, 6);
}

#[test]
fn versionless_changes_are_hashes_numbered_by_the_node() {
    let t0 = Instant::now();
    let mut s = ChannelState::new(opts(Mode::Versionless), "AbCdEfGh".into(), t0);
    s.track(1, &1, false, &items(&[("a", 0), ("b", 0)]), &[]).unwrap();
    let a = s.apply("", vec![answer("a", "1", 0), answer("b", "1", 0)], false);
    let versions: Vec<u64> = a.deliveries.iter().map(|d| d.version).collect();
    assert_eq!(versions, [1, 2]);
    let a = s.apply("", vec![answer("a", "1", 0), answer("b", "2", 0)], false);
    assert_eq!(a.deliveries.len(), 1);
    assert_eq!((a.deliveries[0].key.as_str(), a.deliveries[0].version), ("b", 3));
    assert_eq!(s.epoch(), "AbCdEfGh", "a versionless answer's epoch is ignored");
}

#[test]
fn a_removed_key_is_pushed_and_forgotten() {
    let t0 = Instant::now();
    let mut s = ChannelState::new(opts(Mode::Versioned), String::new(), t0);
    s.track(1, &1, false, &items(&[("a", 0), ("b", 0)]), &[]).unwrap();
    let a = s.apply(
        "",
        vec![Answered {
            key: "a".into(),
            removed: true,
            ..Default::default()
        }],
        false,
    );
    assert!(a.deliveries[0].removed);
    assert_eq!(a.gone, ["a"]);
    assert_eq!(s.num_tracked_by(1), 1);
}

#[test]
fn a_new_epoch_resets_versions_and_resubscribes_everyone() {
    let t0 = Instant::now();
    let mut s = ChannelState::new(opts(Mode::Versioned), String::new(), t0);
    s.track(1, &1, false, &items(&[("a", 0)]), &[]).unwrap();
    s.apply("e1", vec![answer("a", "x", 7)], false);
    let a = s.apply("e2", vec![answer("a", "y", 1)], false);
    assert_eq!(a.resubscribe, [1]);
    assert_eq!(s.epoch(), "e2");
    assert!(a.deliveries.is_empty(), "what connection 1 holds means nothing now");
    assert_eq!((a.gone, s.num_keys(), s.num_tracked_by(1)), (vec!["a".to_string()], 0, 0));
    s.track(1, &1, false, &items(&[("a", 0)]), &[]).unwrap();
    let a = s.apply("e2", vec![answer("a", "y", 1)], false);
    assert_eq!(a.deliveries[0].version, 1, "version 1 is news after the reset");
}

#[test]
fn delta_goes_to_trackers_holding_the_base() {
    let t0 = Instant::now();
    let mut s = ChannelState::new(opts(Mode::Versioned), String::new(), t0);
    s.track(1, &1, true, &items(&[("a", 0)]), &[]).unwrap();
    s.track(2, &2, false, &items(&[("a", 0)]), &[]).unwrap();
    let base = "{\"text\":\"a long enough value to make a delta worth it\"}";
    let a = s.apply("", vec![answer("a", base, 1)], false);
    let hows: HashMap<u64, Recipient> = a.deliveries[0].to.iter().copied().collect();
    assert_eq!((hows[&1], hows[&2]), (Recipient::Whole, Recipient::Plain));
    let next = Answered {
        prev_data: Bytes::from(base),
        ..answer("a", "{\"text\":\"a long enough value to make a delta worth it!\"}", 2)
    };
    let a = s.apply("", vec![next], false);
    assert!(a.deliveries[0].patch.is_some());
    let hows: HashMap<u64, Recipient> = a.deliveries[0].to.iter().copied().collect();
    assert_eq!((hows[&1], hows[&2]), (Recipient::Delta, Recipient::Plain));
}

#[test]
fn timer_cycles_spread_batches_and_wait_for_the_last() {
    let t0 = Instant::now();
    let mut s = ChannelState::new(opts(Mode::Versioned), String::new(), t0);
    s.track(1, &1, false, &items(&[("a", 1), ("b", 1), ("c", 1)]), &[]).unwrap();
    assert!(s.take_due(t0).is_empty(), "nothing cold, the first cycle is an interval away");
    let t1 = t0 + Duration::from_millis(200);
    assert_eq!(s.next_deadline(t0), Some(t1));
    let due = s.take_due(t1);
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].items, [("a".to_string(), 0), ("b".to_string(), 0)]);
    let t2 = t1 + Duration::from_millis(100);
    assert_eq!(s.next_deadline(t1), Some(t2), "the second batch half an interval later");
    assert_eq!(s.take_due(t2)[0].items, [("c".to_string(), 0)]);
    s.polled(false);
    // The first batch is still out: no new cycle, however late.
    let late = t1 + Duration::from_secs(5);
    assert!(s.take_due(late).is_empty());
    s.polled(false);
    assert_eq!(s.take_due(late).len(), 1);
}

#[test]
fn expired_signatures_drop_keys_after_the_extra_delay() {
    let t0 = Instant::now();
    let mut s = ChannelState::new(opts(Mode::Versioned), String::new(), t0);
    s.track(1, &1, false, &[("a".into(), 0, 1000), ("b".into(), 0, 0)], &[]).unwrap();
    assert!(s.expire(1025).is_empty());
    assert_eq!(s.expire(1026), ["a"]);
    assert_eq!(s.num_tracked_by(1), 1);
    assert_eq!(s.remove_conn(1), ["b"]);
    assert!(!s.is_idle(t0));
    s.note_empty(t0);
    assert!(s.is_idle(t0 + Duration::from_secs(1)));
}

#[test]
fn the_notification_queue_is_bounded() {
    let t0 = Instant::now();
    let mut o = opts(Mode::Versioned);
    o.max_keys_per_connection = NOTIFY_CAPACITY + 10;
    let mut s = ChannelState::new(o, String::new(), t0);
    let many: Vec<(String, u64, i64)> = (0..NOTIFY_CAPACITY + 10).map(|i| (format!("k{i}"), 0, 0)).collect();
    s.track(1, &1, false, &many, &[]).unwrap();
    assert_eq!(s.dropped_notifications, 10);
    assert_eq!(s.take_due(t0)[0].items.len(), NOTIFY_CAPACITY);
}
