//! Centrifugo's unidirectional protocol over any transport: the client sends one connect
//! request (a bare `ConnectRequest`) and reads bare pushes, never replies. The session speaks
//! the bidirectional protocol; these turn its input and output into that form.

use bytes::Bytes;
use wshub_protocol::codes::disconnect as dc;

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

/// Every line of a session's output in its unidirectional form.
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
/// a client that sends no commands.
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
    let code = match e.get("code").and_then(serde_json::Value::as_u64) {
        Some(101 | 109) => dc::INVALID_TOKEN,
        _ => dc::BAD_REQUEST,
    };
    let reason = e.get("message").and_then(serde_json::Value::as_str).unwrap_or("connect refused");
    Some(Bytes::from(
        serde_json::json!({"disconnect": {"code": code, "reason": reason}}).to_string(),
    ))
}
