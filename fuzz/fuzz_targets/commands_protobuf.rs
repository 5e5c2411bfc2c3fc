//! Arbitrary bytes as a Protobuf frame (length-prefixed messages), read by the server
//! (`decode_commands`) and by a client (`decode_replies`): no panic, and what decodes
//! comes back unchanged from encoding and decoding again (unknown fields are dropped by the
//! first decode, so the decoded value, not the bytes, is compared).
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use wshub_protocol::codec::{decode_commands, decode_replies, encode_commands, encode_reply, Format};

const F: Format = Format::Protobuf;

fuzz_target!(|data: &[u8]| {
    let frame = Bytes::copy_from_slice(data);
    if let Ok(cmds) = decode_commands(F, frame.clone()) {
        assert_eq!(
            decode_commands(F, encode_commands(F, &cmds)).expect("re-encoded commands decode"),
            cmds
        );
    }
    if let Ok(replies) = decode_replies(F, frame) {
        let mut out = BytesMut::new();
        for r in &replies {
            encode_reply(F, r, &mut out).expect("Protobuf encoding cannot fail");
        }
        assert_eq!(decode_replies(F, out.freeze()).expect("re-encoded replies decode"), replies);
    }
});
