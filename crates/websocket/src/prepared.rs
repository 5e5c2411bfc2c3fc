//! A message framed once and shared by many connections.

use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};

use crate::deflate::{self, DeflateParams};
use crate::frame::{encode_header, OpCode, MAX_HEADER_LEN};
use crate::MessageKind;

/// A server message ready to go to any number of connections. The uncompressed frame is
/// built once; the compressed one is built at most once per window size, on first use, and
/// shared by every connection that negotiated permessage-deflate (they all agreed to
/// `server_no_context_takeover`, so one compressed frame is valid for each of them).
#[derive(Debug)]
pub struct PreparedMessage {
    kind: MessageKind,
    payload: Bytes,
    plain: Bytes,
    deflated: [OnceLock<Bytes>; 8],
}

fn frame(kind: MessageKind, rsv1: bool, payload: &[u8]) -> Bytes {
    let op = match kind {
        MessageKind::Text => OpCode::Text,
        MessageKind::Binary => OpCode::Binary,
    };
    let mut hdr = [0u8; MAX_HEADER_LEN];
    let n = encode_header(&mut hdr, true, rsv1, op, None, payload.len() as u64);
    let mut b = BytesMut::with_capacity(n + payload.len());
    b.extend_from_slice(&hdr[..n]);
    b.extend_from_slice(payload);
    b.freeze()
}

impl PreparedMessage {
    /// The payload is kept as a slice of the plain frame, not beside it: one copy of the
    /// bytes serves the WebSocket connections (the frame) and the other transports (the
    /// payload, framed their own way).
    pub fn new(kind: MessageKind, payload: Bytes) -> Self {
        let plain = frame(kind, false, &payload);
        let header = plain.len() - payload.len();
        PreparedMessage {
            kind,
            payload: plain.slice(header..),
            plain,
            deflated: Default::default(),
        }
    }

    pub fn kind(&self) -> MessageKind {
        self.kind
    }

    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The frame for a connection with these deflate parameters (server role).
    pub fn frame_for(&self, deflate: Option<&DeflateParams>) -> Bytes {
        let Some(d) = deflate else {
            return self.plain.clone();
        };
        if self.payload.len() < d.config.min_size {
            return self.plain.clone();
        }
        let bits = d.server_max_window_bits.clamp(8, 15);
        let slot = &self.deflated[usize::from(bits - 8)];
        slot.get_or_init(|| frame(self.kind, true, &deflate::compress(&self.payload, bits, d.config.level)))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_is_the_frames_tail_not_a_copy() {
        for len in [0usize, 125, 126, 65535, 65536, 70000] {
            let p = PreparedMessage::new(MessageKind::Text, Bytes::from(vec![b'a'; len]));
            assert_eq!(p.payload().len(), len);
            assert!(p.payload().iter().all(|b| *b == b'a'));
            let plain = p.frame_for(None);
            assert_eq!(
                plain.len() - len,
                2 + if len > 65535 {
                    8
                } else if len > 125 {
                    2
                } else {
                    0
                }
            );
            // One allocation: the payload points into the frame.
            assert_eq!(plain.as_ptr().wrapping_add(plain.len() - len), p.payload().as_ptr());
        }
    }
}
