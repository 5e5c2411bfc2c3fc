//! The two wire formats (PROTOCOL.md, "Framing").
//!
//! - JSON: one text frame holds one or more objects separated by a single `\n`.
//! - Protobuf: each message is prefixed by its length as an unsigned varint; several may
//!   share one binary frame. Decoding from a `Bytes` frame keeps `bytes` fields as slices
//!   of the frame (prost's `Bytes` support), without copying them.
//!
//! An empty reply is the server's ping (`{}` or the single byte `0x00`); an empty command is
//! the client's pong.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message as _;

use crate::messages::{Command, Push, Reply};

/// The format a connection speaks, fixed at the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Json,
    Protobuf,
}

/// A frame that does not decode: the connection is closed with 3501 (bad request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("invalid JSON command: {0}")]
    Json(String),
    #[error("invalid Protobuf command: {0}")]
    Protobuf(String),
    #[error("empty frame")]
    Empty,
}

/// A message that cannot be encoded in the connection's format (for example non-JSON data
/// for a JSON client).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode: {0}")]
pub struct EncodeError(pub String);

/// Decodes every command of one frame.
pub fn decode_commands(format: Format, frame: Bytes) -> Result<Vec<Command>, DecodeError> {
    match format {
        Format::Json => decode_json(&frame),
        Format::Protobuf => decode_protobuf(frame),
    }
}

fn decode_json(frame: &[u8]) -> Result<Vec<Command>, DecodeError> {
    let mut out = Vec::new();
    for line in frame.split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        out.push(serde_json::from_slice::<Command>(line).map_err(|e| DecodeError::Json(e.to_string()))?);
    }
    if out.is_empty() {
        return Err(DecodeError::Empty);
    }
    Ok(out)
}

fn decode_protobuf(mut frame: Bytes) -> Result<Vec<Command>, DecodeError> {
    let mut out = Vec::new();
    if frame.is_empty() {
        return Err(DecodeError::Empty);
    }
    while frame.has_remaining() {
        let len = prost::encoding::decode_varint(&mut frame).map_err(|e| DecodeError::Protobuf(e.to_string()))?;
        let len = usize::try_from(len).map_err(|_| DecodeError::Protobuf("length overflow".into()))?;
        if len > frame.remaining() {
            return Err(DecodeError::Protobuf(format!(
                "message of {len} bytes in {} remaining",
                frame.remaining()
            )));
        }
        let msg = frame.split_to(len);
        out.push(Command::decode(msg).map_err(|e| DecodeError::Protobuf(e.to_string()))?);
    }
    Ok(out)
}

/// Appends one reply to a frame being built (a `\n` separates JSON objects).
pub fn encode_reply(format: Format, reply: &Reply, out: &mut BytesMut) -> Result<(), EncodeError> {
    match format {
        Format::Json => {
            if !out.is_empty() {
                out.put_u8(b'\n');
            }
            let start = out.len();
            let mut w = out.writer();
            if let Err(e) = serde_json::to_writer(&mut w, reply) {
                let out = w.into_inner();
                out.truncate(start.saturating_sub(usize::from(start > 0)));
                return Err(EncodeError(e.to_string()));
            }
            Ok(())
        }
        Format::Protobuf => {
            reply.encode_length_delimited(out).map_err(|e| EncodeError(e.to_string()))?;
            Ok(())
        }
    }
}

/// One reply as a whole frame payload.
pub fn reply_bytes(format: Format, reply: &Reply) -> Result<Bytes, EncodeError> {
    let mut b = BytesMut::new();
    encode_reply(format, reply, &mut b)?;
    Ok(b.freeze())
}

/// A push wrapped in its reply envelope, as a frame payload: how publications, joins and
/// leaves are encoded once per format for every subscriber.
pub fn push_bytes(format: Format, push: Push) -> Result<Bytes, EncodeError> {
    reply_bytes(
        format,
        &Reply {
            push: Some(push),
            ..Default::default()
        },
    )
}

/// A push without its reply envelope, as a frame payload: the unidirectional transports'
/// form (JSON: the push object; Protobuf: the length-delimited `Push`).
pub fn bare_push_bytes(format: Format, push: &Push) -> Result<Bytes, EncodeError> {
    match format {
        Format::Json => serde_json::to_vec(push).map(Bytes::from).map_err(|e| EncodeError(e.to_string())),
        Format::Protobuf => Ok(Bytes::from(push.encode_length_delimited_to_vec())),
    }
}

/// Encodes commands, as a client does.
pub fn encode_commands(format: Format, cmds: &[Command]) -> Bytes {
    let mut out = BytesMut::new();
    for c in cmds {
        match format {
            Format::Json => {
                if !out.is_empty() {
                    out.put_u8(b'\n');
                }
                // Commands built by our own client carry only JSON data: cannot fail.
                let _ = serde_json::to_writer((&mut out).writer(), c);
            }
            Format::Protobuf => {
                let _ = c.encode_length_delimited(&mut out);
            }
        }
    }
    out.freeze()
}

/// Decodes replies, as a client does.
pub fn decode_replies(format: Format, frame: Bytes) -> Result<Vec<Reply>, DecodeError> {
    match format {
        Format::Json => {
            let mut out = Vec::new();
            for line in frame.split(|b| *b == b'\n') {
                if line.is_empty() {
                    continue;
                }
                out.push(serde_json::from_slice::<Reply>(line).map_err(|e| DecodeError::Json(e.to_string()))?);
            }
            Ok(out)
        }
        Format::Protobuf => {
            let mut frame = frame;
            let mut out = Vec::new();
            while frame.has_remaining() {
                let len = prost::encoding::decode_varint(&mut frame).map_err(|e| DecodeError::Protobuf(e.to_string()))? as usize;
                if len > frame.remaining() {
                    return Err(DecodeError::Protobuf("truncated".into()));
                }
                out.push(Reply::decode(frame.split_to(len)).map_err(|e| DecodeError::Protobuf(e.to_string()))?);
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests;
