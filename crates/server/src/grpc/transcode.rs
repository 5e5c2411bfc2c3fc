//! Protobuf messages to and from the JSON of the HTTP API and HTTP proxies.
//!
//! Field names are the same on both sides (Centrifugo's JSON is its protobuf's field
//! names); what differs is bytes. In the JSON a payload is raw JSON (`data`, `info`) or
//! base64 beside it (`b64data`, `b64info`), in protobuf it is the bytes themselves:
//! - protobuf to JSON: a bytes field `x` whose message also has `b64x` becomes `b64x`
//!   (exact for any bytes); one without (`params`, `meta`) becomes raw JSON when it is JSON;
//! - JSON to protobuf: `b64x` is decoded into the bytes field `x`; raw JSON in a bytes field
//!   becomes its text.
//!
//! Numbers are JSON numbers both ways (not protobuf JSON's strings for 64-bit integers),
//! enums their numbers, and a JSON key the message lacks is skipped: the JSON side has
//! fields of its own (the node of a connection, say).

use std::collections::HashMap;

use base64::Engine as _;
use bytes::Bytes;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, ReflectMessage, Value as Pv};
use serde_json::{Map, Number, Value};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A message as the JSON side writes it.
pub fn to_json(msg: &DynamicMessage) -> Value {
    let desc = msg.descriptor();
    let mut out = Map::new();
    for (field, value) in msg.fields() {
        let name = field.name();
        if let (Kind::Bytes, Pv::Bytes(b)) = (field.kind(), value) {
            let b64 = format!("b64{name}");
            if desc.get_field_by_name(&b64).is_some() {
                out.insert(b64, B64.encode(b).into());
            } else {
                out.insert(name.to_string(), bytes_json(b));
            }
            continue;
        }
        out.insert(name.to_string(), value_json(value));
    }
    Value::Object(out)
}

/// Raw JSON when the bytes are JSON, else their base64.
fn bytes_json(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or_else(|_| B64.encode(b).into())
}

fn value_json(v: &Pv) -> Value {
    match v {
        Pv::Bool(b) => (*b).into(),
        Pv::I32(n) => (*n).into(),
        Pv::I64(n) => (*n).into(),
        Pv::U32(n) => (*n).into(),
        Pv::U64(n) => (*n).into(),
        Pv::F32(n) => Number::from_f64(f64::from(*n)).map_or(Value::Null, Value::Number),
        Pv::F64(n) => Number::from_f64(*n).map_or(Value::Null, Value::Number),
        Pv::String(s) => s.clone().into(),
        Pv::Bytes(b) => bytes_json(b),
        Pv::EnumNumber(n) => (*n).into(),
        Pv::Message(m) => to_json(m),
        Pv::List(l) => Value::Array(l.iter().map(value_json).collect()),
        Pv::Map(m) => Value::Object(m.iter().map(|(k, v)| (key_string(k), value_json(v))).collect()),
    }
}

fn key_string(k: &MapKey) -> String {
    match k {
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(n) => n.to_string(),
        MapKey::I64(n) => n.to_string(),
        MapKey::U32(n) => n.to_string(),
        MapKey::U64(n) => n.to_string(),
        MapKey::String(s) => s.clone(),
    }
}

/// Why JSON did not fit a message: the field's path and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct Mismatch {
    pub path: String,
    pub message: String,
}

fn mismatch(path: &str, message: impl Into<String>) -> Mismatch {
    Mismatch {
        path: path.to_string(),
        message: message.into(),
    }
}

/// The message of type `desc` that `v` (an object, or null for an empty one) describes.
pub fn from_json(desc: &MessageDescriptor, v: &Value) -> Result<DynamicMessage, Mismatch> {
    from_json_at(desc, v, desc.name())
}

fn from_json_at(desc: &MessageDescriptor, v: &Value, path: &str) -> Result<DynamicMessage, Mismatch> {
    let mut msg = DynamicMessage::new(desc.clone());
    let obj = match v {
        Value::Null => return Ok(msg),
        Value::Object(o) => o,
        _ => return Err(mismatch(path, "not an object")),
    };
    for (k, val) in obj {
        if val.is_null() {
            continue;
        }
        let at = format!("{path}.{k}");
        let bytes_of_b64 = k
            .strip_prefix("b64")
            .and_then(|n| desc.get_field_by_name(n))
            .filter(|f| f.kind() == Kind::Bytes && !f.is_list());
        if let Some(f) = bytes_of_b64 {
            let s = val.as_str().ok_or_else(|| mismatch(&at, "not a string"))?;
            if !s.is_empty() {
                let b = B64.decode(s).map_err(|_| mismatch(&at, "bad base64"))?;
                msg.try_set_field(&f, Pv::Bytes(Bytes::from(b)))
                    .map_err(|e| mismatch(&at, e.to_string()))?;
            }
            continue;
        }
        let Some(f) = desc.get_field_by_name(k) else {
            continue;
        };
        let pv = field_value(&f, val, &at)?;
        msg.try_set_field(&f, pv).map_err(|e| mismatch(&at, e.to_string()))?;
    }
    Ok(msg)
}

fn field_value(f: &FieldDescriptor, v: &Value, path: &str) -> Result<Pv, Mismatch> {
    if f.is_map() {
        let Kind::Message(entry) = f.kind() else {
            return Err(mismatch(path, "map without an entry type"));
        };
        let (kf, vf) = (entry.map_entry_key_field(), entry.map_entry_value_field());
        let obj = v.as_object().ok_or_else(|| mismatch(path, "not an object"))?;
        let mut m = HashMap::with_capacity(obj.len());
        for (k, val) in obj {
            let at = format!("{path}.{k}");
            m.insert(map_key(&kf.kind(), k, &at)?, kind_value(&vf.kind(), val, &at)?);
        }
        return Ok(Pv::Map(m));
    }
    if f.is_list() {
        let arr = v.as_array().ok_or_else(|| mismatch(path, "not an array"))?;
        let kind = f.kind();
        return arr
            .iter()
            .enumerate()
            .map(|(i, x)| kind_value(&kind, x, &format!("{path}[{i}]")))
            .collect::<Result<Vec<_>, _>>()
            .map(Pv::List);
    }
    kind_value(&f.kind(), v, path)
}

fn map_key(kind: &Kind, k: &str, path: &str) -> Result<MapKey, Mismatch> {
    let bad = || mismatch(path, "bad map key");
    Ok(match kind {
        Kind::String => MapKey::String(k.to_string()),
        Kind::Bool => MapKey::Bool(k.parse().map_err(|_| bad())?),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => MapKey::I32(k.parse().map_err(|_| bad())?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => MapKey::I64(k.parse().map_err(|_| bad())?),
        Kind::Uint32 | Kind::Fixed32 => MapKey::U32(k.parse().map_err(|_| bad())?),
        Kind::Uint64 | Kind::Fixed64 => MapKey::U64(k.parse().map_err(|_| bad())?),
        _ => return Err(bad()),
    })
}

/// A JSON number, or a string holding one (protobuf JSON's 64-bit integers).
fn number<T: std::str::FromStr + TryFrom<i64> + TryFrom<u64>>(v: &Value, path: &str) -> Result<T, Mismatch> {
    let bad = || mismatch(path, "not a number in range");
    match v {
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (_, Some(u)) => T::try_from(u).map_err(|_| bad()),
            (Some(i), _) => T::try_from(i).map_err(|_| bad()),
            _ => Err(bad()),
        },
        Value::String(s) => s.parse().map_err(|_| bad()),
        Value::Bool(b) => T::try_from(u64::from(*b)).map_err(|_| bad()),
        _ => Err(bad()),
    }
}

fn kind_value(kind: &Kind, v: &Value, path: &str) -> Result<Pv, Mismatch> {
    Ok(match kind {
        Kind::Bool => Pv::Bool(v.as_bool().ok_or_else(|| mismatch(path, "not a boolean"))?),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Pv::I32(number(v, path)?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Pv::I64(number(v, path)?),
        Kind::Uint32 | Kind::Fixed32 => Pv::U32(number(v, path)?),
        Kind::Uint64 | Kind::Fixed64 => Pv::U64(number(v, path)?),
        Kind::Float | Kind::Double => {
            let f = v.as_f64().ok_or_else(|| mismatch(path, "not a number"))?;
            if *kind == Kind::Float {
                Pv::F32(f as f32)
            } else {
                Pv::F64(f)
            }
        }
        Kind::String => match v {
            Value::String(s) => Pv::String(s.clone()),
            other => Pv::String(other.to_string()),
        },
        // Raw JSON: the payload is its text.
        Kind::Bytes => Pv::Bytes(Bytes::from(serde_json::to_vec(v).unwrap_or_default())),
        Kind::Enum(e) => match v {
            Value::String(s) => Pv::EnumNumber(
                e.get_value_by_name(s)
                    .map(|x| x.number())
                    .ok_or_else(|| mismatch(path, "unknown enum value"))?,
            ),
            other => Pv::EnumNumber(number(other, path)?),
        },
        Kind::Message(d) => Pv::Message(from_json_at(d, v, path)?),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn msg(name: &str) -> MessageDescriptor {
        crate::grpc::pool().unwrap().get_message_by_name(name).unwrap()
    }

    #[test]
    fn request_bytes_become_b64_fields_and_numbers_stay_numbers() {
        let d = msg("centrifugal.centrifugo.api.PublishRequest");
        let mut m = DynamicMessage::new(d.clone());
        m.set_field_by_name("channel", Pv::String("chat".into()));
        m.set_field_by_name("data", Pv::Bytes(Bytes::from_static(b"\x00\xffbinary")));
        m.set_field_by_name("skip_history", Pv::Bool(true));
        let j = to_json(&m);
        assert_eq!(
            j,
            json!({"channel": "chat", "b64data": B64.encode(b"\x00\xffbinary"), "skip_history": true})
        );
        let h = msg("centrifugal.centrifugo.api.HistoryRequest");
        let mut m = DynamicMessage::new(h);
        m.set_field_by_name("limit", Pv::I32(5));
        let mut since = DynamicMessage::new(msg("centrifugal.centrifugo.api.StreamPosition"));
        since.set_field_by_name("offset", Pv::U64(7));
        m.set_field_by_name("since", Pv::Message(since));
        assert_eq!(to_json(&m), json!({"limit": 5, "since": {"offset": 7}}));
        // RPC params have no b64 twin: raw JSON when JSON.
        let mut m = DynamicMessage::new(msg("centrifugal.centrifugo.api.RPCRequest"));
        m.set_field_by_name("params", Pv::Bytes(Bytes::from_static(br#"{"a":1}"#)));
        assert_eq!(to_json(&m), json!({"params": {"a": 1}}));
    }

    #[test]
    fn replies_from_json() {
        let d = msg("centrifugal.centrifugo.api.HistoryResponse");
        let v = json!({"result": {"publications": [{"data": {"x": 1}, "offset": 3, "tags": {"k": "v"}}], "epoch": "e", "offset": 3, "extra": 1}});
        let m = from_json(&d, &v).unwrap();
        let back = to_json(&m);
        assert_eq!(back["result"]["epoch"], "e");
        assert_eq!(back["result"]["publications"][0]["data"], json!({"x": 1}));
        assert_eq!(back["result"]["publications"][0]["tags"], json!({"k": "v"}));
        let e = from_json(&d, &json!({"error": {"code": 107, "message": "bad"}})).unwrap();
        assert_eq!(to_json(&e), json!({"error": {"code": 107, "message": "bad"}}));
        assert!(from_json(&d, &json!({"result": {"offset": "x"}})).is_err());
        assert!(from_json(&d, &json!([1])).is_err());
    }

    #[test]
    fn proxy_b64_fields_fill_bytes() {
        let d = msg("centrifugal.centrifugo.proxy.ConnectRequest");
        let m = from_json(&d, &json!({"client": "c", "b64data": B64.encode(b"\x01\x02"), "unknown": 5})).unwrap();
        assert_eq!(m.get_field_by_name("data").unwrap().as_bytes().unwrap().as_ref(), b"\x01\x02");
        let m = from_json(&d, &json!({"data": {"hello": "x"}})).unwrap();
        assert_eq!(
            m.get_field_by_name("data").unwrap().as_bytes().unwrap().as_ref(),
            br#"{"hello":"x"}"#
        );
        assert!(from_json(&d, &json!({"b64data": "%%%"})).is_err());
        // A reply: bytes with a b64 twin come out as b64.
        let r = msg("centrifugal.centrifugo.proxy.ConnectResponse");
        let m = from_json(&r, &json!({"result": {"user": "u", "b64info": B64.encode(b"{}"), "expire_at": 5}})).unwrap();
        assert_eq!(
            to_json(&m),
            json!({"result": {"user": "u", "b64info": B64.encode(b"{}"), "expire_at": 5}})
        );
    }
}
