//! `POST /emulation`: the later commands of an HTTP-streaming or SSE client
//! ([`crate::transport::stream`]), `{session, node, data}`, for the session they name.

use bytes::Bytes;
use wshub_protocol::Format;

/// An `/emulation` request: `{session, node, data}`, JSON (`data` a string of commands) or
/// Protobuf (`EmulationRequest`).
#[derive(Debug, PartialEq)]
pub struct EmulationRequest {
    pub node: String,
    pub session: String,
    pub data: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EmulationRequestPb {
    #[prost(string, tag = "1")]
    node: String,
    #[prost(string, tag = "2")]
    session: String,
    #[prost(bytes = "bytes", tag = "3")]
    data: Bytes,
}

/// Parses an `/emulation` body in `format`.
pub fn parse_emulation(format: Format, body: &Bytes) -> Result<EmulationRequest, String> {
    match format {
        Format::Json => {
            #[derive(serde::Deserialize)]
            struct J {
                #[serde(default)]
                node: String,
                session: String,
                data: serde_json::Value,
            }
            let j: J = serde_json::from_slice(body).map_err(|e| format!("bad emulation request: {e}"))?;
            // centrifuge-js sends the commands as a string; a JSON value is accepted too.
            let data = match j.data {
                serde_json::Value::String(s) => Bytes::from(s),
                v => Bytes::from(v.to_string()),
            };
            Ok(EmulationRequest {
                node: j.node,
                session: j.session,
                data,
            })
        }
        Format::Protobuf => {
            let p = <EmulationRequestPb as prost::Message>::decode(body.clone()).map_err(|e| format!("bad emulation request: {e}"))?;
            Ok(EmulationRequest {
                node: p.node,
                session: p.session,
                data: p.data,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn emulation_requests_in_both_formats() {
        let j = Bytes::from_static(br#"{"session":"s","node":"n","data":"{\"id\":2,\"presence\":{}}"}"#);
        let r = parse_emulation(Format::Json, &j).unwrap();
        assert_eq!((r.session.as_str(), r.node.as_str()), ("s", "n"));
        assert_eq!(&r.data[..], br#"{"id":2,"presence":{}}"#);
        let pb = prost::Message::encode_to_vec(&EmulationRequestPb {
            node: "n".into(),
            session: "s".into(),
            data: Bytes::from_static(&[1, 2]),
        });
        let r = parse_emulation(Format::Protobuf, &Bytes::from(pb)).unwrap();
        assert_eq!((r.session.as_str(), &r.data[..]), ("s", &[1u8, 2][..]));
        assert!(parse_emulation(Format::Json, &Bytes::from_static(b"{")).is_err());
        assert!(parse_emulation(Format::Json, &Bytes::from_static(br#"{"node":"n"}"#)).is_err());
        assert!(parse_emulation(Format::Protobuf, &Bytes::from_static(&[0xff, 0xff])).is_err());
    }
}
