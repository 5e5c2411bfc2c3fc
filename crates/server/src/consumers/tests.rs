#![allow(clippy::unwrap_used)]

use super::*;
use serde_json::{json, Value};

fn load(v: Value) -> Result<(), String> {
    let c: crate::config::Config = serde_json::from_value(v).unwrap();
    crate::config::validate(&c).map_err(|e| e.0)
}

#[test]
fn consumers_are_checked_with_their_keys() {
    // Centrifugo's default item (disabled) loads; a disabled Kafka one too.
    load(json!({"consumers": [{"name": "consumer", "enabled": false, "type": "postgresql"}]})).unwrap();
    load(json!({"consumers": [{"name": "k", "type": "kafka"}]})).unwrap();
    let e = load(json!({"consumers": [{"name": "j", "enabled": true, "type": "nats_jetstream"}]})).unwrap_err();
    assert!(e.starts_with("consumers[0].nats_jetstream.stream_name"), "{e}");
    let e = load(json!({"consumers": [{"name": "k", "enabled": true, "type": "kafka"}]})).unwrap_err();
    assert!(e.starts_with("consumers[0].type: \"kafka\" consumers are not supported"), "{e}");
    let e = load(json!({"consumers": [{"name": "p", "enabled": true, "type": "postgresql"}]})).unwrap_err();
    assert!(e.starts_with("consumers[0].postgresql.dsn"), "{e}");
    let pg = |table: &str| {
        json!({"consumers": [{"name": "p", "enabled": true, "type": "postgresql",
        "postgresql": {"dsn": "postgres://u@127.0.0.1:5432/db", "outbox_table_name": table}}]})
    };
    load(pg("outbox")).unwrap();
    load(pg("app.outbox")).unwrap();
    let e = load(pg("outbox; DROP TABLE x")).unwrap_err();
    assert!(e.starts_with("consumers[0].postgresql.outbox_table_name"), "{e}");
    let e = load(json!({"consumers": [{"name": "r", "enabled": true, "type": "redis_stream",
        "redis_stream": {"streams": ["s"]}}]}))
    .unwrap_err();
    assert!(e.starts_with("consumers[0].redis_stream.consumer_group"), "{e}");
    let e = load(json!({"consumers": [{"name": "a", "type": "postgresql"}, {"name": "a", "type": "postgresql"}]})).unwrap_err();
    assert!(e.starts_with("consumers[1].name"), "{e}");
}

#[test]
fn backoff_doubles_up_to_five_seconds() {
    assert!(backoff(0) >= Duration::from_millis(10) && backoff(0) < Duration::from_millis(20));
    assert!(backoff(3) >= Duration::from_millis(80) && backoff(3) < Duration::from_millis(160));
    assert_eq!(backoff(30), Duration::from_secs(5));
}

#[test]
fn table_names_are_plain_identifiers() {
    for ok in ["outbox", "app.outbox", "_t1"] {
        assert!(is_identifier(ok), "{ok}");
    }
    for bad in ["", "1t", "a.", "a b", "a;b", "\"a\""] {
        assert!(!is_identifier(bad), "{bad}");
    }
}
