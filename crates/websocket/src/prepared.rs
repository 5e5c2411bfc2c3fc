//! A message framed once and shared by many connections.

use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};

use crate::deflate::{self, DeflateParams};
use crate::frame::{encode_header, OpCode, MAX_HEADER_LEN};
use crate::MessageKind;

/// A message encoded once for its wire format, ready to go to any number of connections
/// of any transport. The HTTP transports frame [`PreparedMessage::payload`] their own way
/// (an SSE event, a line, a length prefix) without copying it. The WebSocket frames are
/// built on first use by a WebSocket connection, at most once each, and shared: the
/// uncompressed one, and a compressed one per window size for the connections that
/// negotiated permessage-deflate (they all agreed to `server_no_context_takeover`, so one
/// compressed frame is valid for each of them). A publication that only HTTP-stream or SSE
/// clients receive is never framed for WebSocket.
#[derive(Debug)]
pub struct PreparedMessage {
    kind: MessageKind,
    payload: Bytes,
    plain: OnceLock<Bytes>,
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
    pub fn new(kind: MessageKind, payload: Bytes) -> Self {
        PreparedMessage {
            kind,
            payload,
            plain: OnceLock::new(),
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
        let plain = || self.plain.get_or_init(|| frame(self.kind, false, &self.payload)).clone();
        let Some(d) = deflate else {
            return plain();
        };
        if self.payload.len() < d.config.min_size {
            return plain();
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
    fn framed_for_websocket_once_on_first_use() {
        for len in [0usize, 125, 126, 65535, 65536, 70000] {
            let payload = Bytes::from(vec![b'a'; len]);
            let p = PreparedMessage::new(MessageKind::Text, payload.clone());
            // The transports that frame the payload themselves share the encoded bytes.
            assert_eq!(p.payload().as_ptr(), payload.as_ptr());
            assert!(p.plain.get().is_none(), "no WebSocket frame until a WebSocket asks");
            let plain = p.frame_for(None);
            let header = 2 + if len > 65535 {
                8
            } else if len > 125 {
                2
            } else {
                0
            };
            assert_eq!(plain.len(), header + len);
            assert_eq!(plain[0], 0x81, "FIN, text");
            assert!(plain[header..].iter().all(|b| *b == b'a'));
            // Built once, shared by every WebSocket connection after.
            assert_eq!(p.frame_for(None).as_ptr(), plain.as_ptr());
        }
    }
}
