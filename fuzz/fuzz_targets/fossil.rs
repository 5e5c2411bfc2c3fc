//! Fossil deltas (`wshub_protocol::fossil`): arbitrary bytes applied as a delta to a source
//! never panic nor outgrow the size limit, and a delta made from the input's two halves
//! applies back to the second half. Also the tags filter: an arbitrary filter decoded from
//! Protobuf is validated and evaluated without panicking.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use wshub_protocol::fossil;
use wshub_protocol::FilterNode;

fuzz_target!(|data: &[u8]| {
    let (source, rest) = data.split_at(data.len() / 2);
    if let Ok(out) = fossil::apply(source, rest, 1 << 16) {
        assert!(out.len() <= 1 << 16);
    }
    let delta = fossil::create(source, rest);
    assert_eq!(fossil::apply(source, &delta, rest.len()).expect("own delta applies"), rest);
    if let Ok(f) = FilterNode::decode(data) {
        if wshub_core::filter::validate(&f).is_ok() {
            let tags = HashMap::from([("a".to_string(), "1".to_string()), (String::new(), String::new())]);
            let _ = wshub_core::filter::matches(&f, &tags);
        }
    }
});
