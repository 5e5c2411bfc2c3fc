//! Frame headers (RFC 6455 section 5.2): parsing from bytes and encoding into a small array.
//!
//! Payloads are not handled here: the [`crate::Connection`] streams them to their destination
//! as they arrive so that a partial frame is never buffered twice.

use crate::ProtocolError;

/// Frame opcodes. Conversion from the wire is total: unknown values are refused by
/// [`parse_header`] with [`ProtocolError::ReservedOpcode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    pub fn from_u8(v: u8) -> Result<Self, ProtocolError> {
        Ok(match v {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            other => return Err(ProtocolError::ReservedOpcode(other)),
        })
    }

    pub fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    pub rsv1: bool,
    pub rsv2: bool,
    pub rsv3: bool,
    pub opcode: OpCode,
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
}

/// The longest header: 2 bytes, 8 of extended length, 4 of mask key.
pub const MAX_HEADER_LEN: usize = 14;

/// Parses a header from the front of `buf`. `Ok(None)`: more bytes are needed.
/// `Ok(Some((header, used)))`: the header took `used` bytes.
///
/// Checks only what the header alone can tell (opcode, control frame rules, length);
/// reserved bits and masking depend on the connection and are checked there.
pub fn parse_header(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
    let (b0, b1) = match buf {
        [b0, b1, ..] => (*b0, *b1),
        _ => return Ok(None),
    };
    let opcode = OpCode::from_u8(b0 & 0x0F)?;
    let fin = b0 & 0x80 != 0;
    let masked = b1 & 0x80 != 0;
    let len7 = b1 & 0x7F;
    let (payload_len, mut used) = match len7 {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                let v = u64::from_be_bytes(a);
                // RFC 6455 5.2: "the most significant bit MUST be 0".
                if v >> 63 != 0 {
                    return Err(ProtocolError::InvalidLength);
                }
                (v, 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if opcode.is_control() {
        // RFC 6455 5.5: "All control frames MUST have a payload length of 125 bytes or less
        // and MUST NOT be fragmented."
        if !fin {
            return Err(ProtocolError::FragmentedControl);
        }
        if payload_len > 125 {
            return Err(ProtocolError::ControlTooLong);
        }
    }
    let mask = if masked {
        match buf.get(used..used + 4) {
            Some(b) => {
                used += 4;
                Some([b[0], b[1], b[2], b[3]])
            }
            None => return Ok(None),
        }
    } else {
        None
    };
    Ok(Some((
        FrameHeader {
            fin,
            rsv1: b0 & 0x40 != 0,
            rsv2: b0 & 0x20 != 0,
            rsv3: b0 & 0x10 != 0,
            opcode,
            mask,
            payload_len,
        },
        used,
    )))
}

/// Encodes a header into `out`, returning its length.
pub fn encode_header(out: &mut [u8; MAX_HEADER_LEN], fin: bool, rsv1: bool, opcode: OpCode, mask: Option<[u8; 4]>, len: u64) -> usize {
    out[0] = (u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode.as_u8();
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut n = if len < 126 {
        out[1] = mask_bit | len as u8;
        2
    } else if len <= u64::from(u16::MAX) {
        out[1] = mask_bit | 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = mask_bit | 127;
        out[2..10].copy_from_slice(&len.to_be_bytes());
        10
    };
    if let Some(k) = mask {
        out[n..n + 4].copy_from_slice(&k);
        n += 4;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_opcode() -> impl Strategy<Value = OpCode> {
        prop_oneof![
            Just(OpCode::Continuation),
            Just(OpCode::Text),
            Just(OpCode::Binary),
            Just(OpCode::Close),
            Just(OpCode::Ping),
            Just(OpCode::Pong)
        ]
    }

    proptest! {
        #[test]
        fn encode_then_parse(fin in any::<bool>(), rsv1 in any::<bool>(), op in any_opcode(), mask in any::<Option<[u8; 4]>>(), len in prop_oneof![0u64..200, 0u64..70_000, 0u64..(1u64 << 63)]) {
            let (fin, len) = if op.is_control() { (true, len % 126) } else { (fin, len) };
            let mut out = [0u8; MAX_HEADER_LEN];
            let n = encode_header(&mut out, fin, rsv1, op, mask, len);
            let (h, used) = parse_header(&out[..n]).unwrap().unwrap();
            prop_assert_eq!(used, n);
            prop_assert_eq!(h, FrameHeader { fin, rsv1, rsv2: false, rsv3: false, opcode: op, mask, payload_len: len });
            // every strict prefix asks for more bytes
            for cut in 0..n {
                prop_assert_eq!(parse_header(&out[..cut]).unwrap(), None);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..20)) {
            let _ = parse_header(&data);
        }
    }

    #[test]
    fn rfc_examples() {
        // RFC 6455 5.7: unmasked "Hello".
        let (h, used) = parse_header(&[0x81, 0x05, 0x48]).unwrap().unwrap();
        assert_eq!((h.fin, h.opcode, h.payload_len, used), (true, OpCode::Text, 5, 2));
        // 256 bytes binary, 16-bit length.
        let (h, used) = parse_header(&[0x82, 0x7E, 0x01, 0x00]).unwrap().unwrap();
        assert_eq!((h.payload_len, used), (256, 4));
        // 64 KiB binary, 64-bit length.
        let (h, used) = parse_header(&[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]).unwrap().unwrap();
        assert_eq!((h.payload_len, used), (65536, 10));
    }

    #[test]
    fn bad_headers() {
        assert_eq!(parse_header(&[0x83, 0x00]), Err(ProtocolError::ReservedOpcode(3)));
        assert_eq!(parse_header(&[0x8B, 0x00]), Err(ProtocolError::ReservedOpcode(0xB)));
        assert_eq!(parse_header(&[0x09, 0x00]), Err(ProtocolError::FragmentedControl));
        assert_eq!(parse_header(&[0x89, 0x7E, 0, 126]), Err(ProtocolError::ControlTooLong));
        assert_eq!(
            parse_header(&[0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Err(ProtocolError::InvalidLength)
        );
    }
}
