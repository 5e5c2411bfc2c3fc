//! `bytes` fields in the JSON format: embedded as raw JSON, not base64 (PROTOCOL.md).
//!
//! On the way out, raw newlines are dropped: frames carry several objects separated by
//! `\n`, and a raw newline can only be insignificant whitespace in valid JSON. Bytes that
//! are not JSON (published in Protobuf by a binary client) cannot be embedded and fail the
//! encoding.

use bytes::Bytes;
use serde::de::Deserializer;
use serde::ser::{Error as _, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    let text = std::str::from_utf8(b).map_err(|_| S::Error::custom("data is not UTF-8 JSON"))?;
    let owned = if text.contains('\n') || text.contains('\r') {
        text.replace(['\n', '\r'], "")
    } else {
        text.to_owned()
    };
    let raw = RawValue::from_string(owned).map_err(|_| S::Error::custom("data is not valid JSON"))?;
    raw.serialize(s)
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
    let raw: Box<RawValue> = Deserialize::deserialize(d)?;
    let s = raw.get();
    if s == "null" {
        return Ok(Bytes::new());
    }
    Ok(Bytes::copy_from_slice(s.as_bytes()))
}
