//! Arbitrary bytes as a JSON frame, read by the server (`decode_commands`) and by a client
//! (`decode_replies`): no panic, and what decodes survives a round trip through the matching
//! encoder. The encoder drops raw `\r`/`\n` from embedded `data` (insignificant whitespace,
//! see `wshub_protocol::raw`), so the fixpoint is checked from the first re-encoding; the
//! first step is exact when the frame has no `\r`.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use wshub_protocol::codec::{decode_commands, decode_replies, encode_commands, encode_reply, Format};

const F: Format = Format::Json;

fuzz_target!(|data: &[u8]| {
    let frame = Bytes::copy_from_slice(data);
    if let Ok(cmds) = decode_commands(F, frame.clone()) {
        let again = decode_commands(F, encode_commands(F, &cmds)).expect("re-encoded commands decode");
        if !data.contains(&b'\r') {
            assert_eq!(again, cmds);
        }
        assert_eq!(decode_commands(F, encode_commands(F, &again)).expect("fixpoint decodes"), again);
    }
    if let Ok(replies) = decode_replies(F, frame) {
        let encode = |rs: &[wshub_protocol::messages::Reply]| {
            let mut out = BytesMut::new();
            for r in rs {
                encode_reply(F, r, &mut out).expect("a decoded reply encodes");
            }
            out.freeze()
        };
        let again = decode_replies(F, encode(&replies)).expect("re-encoded replies decode");
        if !data.contains(&b'\r') {
            assert_eq!(again, replies);
        }
        assert_eq!(decode_replies(F, encode(&again)).expect("fixpoint decodes"), again);
    }
});
