//! Centrifugo's unidirectional protocol over any transport: the client sends one connect
//! request (a bare `ConnectRequest`) and reads bare pushes, never replies. The session speaks
//! the bidirectional protocol; these turn its input and output into that form.

use bytes::{Buf, Bytes};
use prost::Message as _;
use wshub_protocol::Format;

/// A unidirectional connect request (a bare `ConnectRequest` object, possibly empty) as the
/// connect command the session reads.
pub fn uni_connect(raw: &[u8]) -> Result<Bytes, &'static str> {
    let raw: &[u8] = if raw.iter().all(u8::is_ascii_whitespace) { b"{}" } else { raw };
    match serde_json::from_slice::<serde_json::Value>(raw) {
        Ok(serde_json::Value::Object(_)) => {
            let mut b = Vec::with_capacity(raw.len() + 16);
            b.extend_from_slice(b"{\"id\":1,\"connect\":");
            b.extend_from_slice(raw);
            b.push(b'}');
            Ok(Bytes::from(b))
        }
        _ => Err("the connect request must be a JSON object"),
    }
}

/// A unidirectional connect request in Protobuf (a bare `ConnectRequest`, as `uni_grpc`'s
/// `Consume` takes it: its fields are numbered as the client protocol's) as the connect
/// command the session reads.
pub fn uni_connect_protobuf(raw: &[u8]) -> Result<Bytes, prost::DecodeError> {
    let command = wshub_protocol::Command {
        id: 1,
        connect: Some(wshub_protocol::ConnectRequest::decode(raw)?),
        ..Default::default()
    };
    Ok(Bytes::from(command.encode_length_delimited_to_vec()))
}

/// Every output of a session in its unidirectional form: JSON lines, or length-delimited
/// Protobuf `Push` messages (the form of [`wshub_protocol::codec::bare_push_bytes`]).
pub fn uni_outputs(format: Format, payload: &Bytes) -> Vec<Bytes> {
    match format {
        Format::Json => uni_lines(payload),
        Format::Protobuf => uni_pushes(payload),
    }
}

/// The Protobuf replies of `payload` in their unidirectional form, as [`uni_line`] does for
/// JSON. The server's pings (empty replies) are left out: `uni_grpc`, the one Protobuf
/// unidirectional transport, relies on HTTP/2 keepalive as Centrifugo's does (its connect
/// push says `ping: 0`).
fn uni_pushes(payload: &Bytes) -> Vec<Bytes> {
    let mut buf = payload.clone();
    let mut out = Vec::new();
    while buf.has_remaining() {
        let Ok(reply) = wshub_protocol::Reply::decode_length_delimited(&mut buf) else {
            tracing::warn!("a session wrote a Protobuf reply that does not decode");
            break;
        };
        let push = if let Some(p) = reply.push {
            p
        } else if let Some(c) = reply.connect {
            wshub_protocol::Push {
                connect: Some(wshub_protocol::Connect {
                    client: c.client,
                    version: c.version,
                    data: c.data,
                    subs: c.subs,
                    expires: c.expires,
                    ttl: c.ttl,
                    ping: 0,
                    pong: false,
                    session: c.session,
                    node: c.node,
                }),
                ..Default::default()
            }
        } else if let Some(e) = reply.error {
            let (code, reason) = wshub_core::config::default_unidirectional_disconnect(e.code);
            wshub_protocol::Push {
                disconnect: Some(wshub_protocol::Disconnect {
                    code: u32::from(code),
                    reason: reason.to_string(),
                    reconnect: false,
                }),
                ..Default::default()
            }
        } else {
            continue;
        };
        out.push(Bytes::from(push.encode_length_delimited_to_vec()));
    }
    out
}

/// Every line of a session's JSON output in its unidirectional form.
pub fn uni_lines(payload: &Bytes) -> Vec<Bytes> {
    let mut v = Vec::new();
    let mut start = 0;
    for (i, c) in payload.iter().enumerate() {
        if *c == b'\n' {
            v.push(payload.slice(start..i));
            start = i + 1;
        }
    }
    v.push(payload.slice(start..));
    v.into_iter().filter_map(uni_line).collect()
}

/// The unidirectional form of one line the session wrote (Centrifugo's unidirectional
/// protocol: bare pushes, no replies). A push `{"push":P}` becomes `P` without a copy (its
/// JSON encoding is exactly that wrapper); a ping `{}` stays; the connect reply becomes a
/// `connect` push; a connect error becomes a `disconnect` push. Other replies are not for
/// a client that sends no commands. (The session closes a refused unidirectional connect
/// itself; an error reply here is one refused before the connect ran.)
pub fn uni_line(line: Bytes) -> Option<Bytes> {
    const PUSH: &[u8] = b"{\"push\":";
    if line.starts_with(PUSH) && line.ends_with(b"}") {
        return Some(line.slice(PUSH.len()..line.len() - 1));
    }
    if &line[..] == b"{}" {
        return Some(line);
    }
    let v: serde_json::Value = serde_json::from_slice(&line).ok()?;
    if let Some(c) = v.get("connect") {
        return Some(Bytes::from(serde_json::json!({ "connect": c }).to_string()));
    }
    let e = v.get("error")?;
    let code = e.get("code").and_then(serde_json::Value::as_u64).unwrap_or(0);
    let (code, reason) = wshub_core::config::default_unidirectional_disconnect(u32::try_from(code).unwrap_or(0));
    Some(Bytes::from(
        serde_json::json!({"disconnect": {"code": code, "reason": reason}}).to_string(),
    ))
}
