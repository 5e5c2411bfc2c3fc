//! JSON form of [`crate::SubscribeResultEntry`] lists: an object keyed by channel.

use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serializer};
use std::collections::BTreeMap;

use crate::{SubscribeResult, SubscribeResultEntry};

pub fn serialize<S: Serializer>(v: &[SubscribeResultEntry], s: S) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(v.len()))?;
    for e in v {
        m.serialize_entry(&e.key, &e.value.clone().unwrap_or_default())?;
    }
    m.end()
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SubscribeResultEntry>, D::Error> {
    let m: BTreeMap<String, SubscribeResult> = Deserialize::deserialize(d)?;
    Ok(m.into_iter()
        .map(|(key, value)| SubscribeResultEntry { key, value: Some(value) })
        .collect())
}
