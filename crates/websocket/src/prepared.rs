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
    /// By [`SharedFrame::index`].
    frames: [OnceLock<Bytes>; SHARED_FRAMES],
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

/// How many distinct frames one message can need across connections: uncompressed, and
/// compressed once per server window size (8..=15 bits).
pub const SHARED_FRAMES: usize = 9;

/// Which of a message's shared frames a connection takes: every connection that agrees on
/// it can be sent the same bytes, so a cache of [`SHARED_FRAMES`] entries keyed by
/// [`SharedFrame::index`] frames (and deflates) a message at most once per variant, however
/// many connections receive it. Used by [`PreparedMessage`] and by callers that keep the
/// encoded payload in a cache of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedFrame {
    /// Window bits and level, when the frame is compressed.
    deflate: Option<(u8, u32)>,
}

impl SharedFrame {
    /// The frame a connection with these deflate parameters takes for a `len`-byte payload.
    pub fn for_connection(deflate: Option<&DeflateParams>, len: usize) -> Self {
        let deflate = deflate
            .filter(|d| len >= d.config.min_size)
            .map(|d| (d.server_max_window_bits.clamp(8, 15), d.config.level));
        SharedFrame { deflate }
    }

    /// Below [`SHARED_FRAMES`]; equal for connections that take the same bytes.
    pub fn index(&self) -> usize {
        match self.deflate {
            None => 0,
            Some((bits, _)) => 1 + usize::from(bits - 8),
        }
    }

    /// The frame (server role: unmasked, final).
    pub fn build(&self, kind: MessageKind, payload: &[u8]) -> Bytes {
        match self.deflate {
            None => frame(kind, false, payload),
            Some((bits, level)) => frame(kind, true, &deflate::compress(payload, bits, level)),
        }
    }
}

impl PreparedMessage {
    pub fn new(kind: MessageKind, payload: Bytes) -> Self {
        PreparedMessage {
            kind,
            payload,
            frames: Default::default(),
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
        let variant = SharedFrame::for_connection(deflate, self.payload.len());
        self.frames[variant.index()]
            .get_or_init(|| variant.build(self.kind, &self.payload))
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
            assert!(p.frames[0].get().is_none(), "no WebSocket frame until a WebSocket asks");
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
