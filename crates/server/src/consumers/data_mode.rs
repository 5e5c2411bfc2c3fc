//! Publication data mode (Centrifugo's `publication_data_mode` of the `redis_stream` and
//! `nats_jetstream` consumers): a message's body is the data itself, published to the
//! channels its properties name (stream fields, or message headers), with the publication's
//! options in other properties. One channel is a `publish`, several a `broadcast`, both
//! applied as API commands.
//!
//! Where Centrifugo returns an error for a property that does not parse (a `delta` that is
//! not a boolean, a `version` that is not a number), so that the message is retried
//! forever, wshub skips it as a permanent failure: it would never parse.

use std::collections::HashMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::LoadError;

/// The property names, as a consumer's section spells them.
pub(crate) struct Names<'a> {
    pub channels: &'a str,
    pub idempotency_key: &'a str,
    pub delta: &'a str,
    pub version: &'a str,
    pub version_epoch: &'a str,
    pub tags_prefix: &'a str,
}

/// What a message asks for.
#[derive(Debug, PartialEq)]
pub(crate) enum Command {
    /// The API method and its JSON request.
    Apply(&'static str, Vec<u8>),
    /// A message that names no channel: skipped (Centrifugo logs it at info level).
    NoChannels,
}

/// The command of a message with body `data` and properties `props` (a name may appear
/// once; the first is taken).
pub(crate) fn command<'p>(names: &Names, props: impl Iterator<Item = (&'p str, &'p str)> + Clone, data: &[u8]) -> Result<Command, String> {
    let get = |name: &str| match name.is_empty() {
        true => None,
        false => props.clone().find(|(k, _)| *k == name).map(|(_, v)| v),
    };
    let channels: Vec<&str> = get(names.channels)
        .unwrap_or_default()
        .split(',')
        .filter(|c| !c.is_empty())
        .collect();
    if channels.is_empty() {
        return Ok(Command::NoChannels);
    }
    let delta = match get(names.delta) {
        None => false,
        Some(v) => parse_bool(v).ok_or_else(|| format!("error parsing delta property {:?}: {v:?}", names.delta))?,
    };
    let version = match get(names.version) {
        None => 0,
        Some(v) => v
            .parse::<u64>()
            .map_err(|e| format!("error parsing version property {:?}: {e}", names.version))?,
    };
    let tags: HashMap<&str, &str> = match names.tags_prefix.is_empty() {
        true => HashMap::new(),
        false => props
            .clone()
            .filter_map(|(k, v)| Some((k.strip_prefix(names.tags_prefix)?, v)))
            .collect(),
    };
    let mut body = json!({
        "b64data": base64::engine::general_purpose::STANDARD.encode(data),
        "idempotency_key": get(names.idempotency_key).unwrap_or_default(),
        "delta": delta,
        "tags": tags,
        "version": version,
        "version_epoch": get(names.version_epoch).unwrap_or_default(),
    });
    let method = match channels.as_slice() {
        [one] => {
            body["channel"] = json!(one);
            "publish"
        }
        many => {
            body["channels"] = json!(many);
            "broadcast"
        }
    };
    Ok(Command::Apply(method, body.to_string().into_bytes()))
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// `redis_stream.publication_data_mode`: the properties are stream entry fields.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct RedisDataMode {
    pub enabled: bool,
    pub channels_value: String,
    pub idempotency_key_value: String,
    pub delta_value: String,
    pub version_value: String,
    pub version_epoch_value: String,
    pub tags_value_prefix: String,
}

impl Default for RedisDataMode {
    fn default() -> Self {
        RedisDataMode {
            enabled: false,
            channels_value: "centrifugo-channels".into(),
            idempotency_key_value: "centrifugo-idempotency-key".into(),
            delta_value: "centrifugo-delta".into(),
            version_value: "centrifugo-version".into(),
            version_epoch_value: "centrifugo-version-epoch".into(),
            tags_value_prefix: "centrifugo-tag-".into(),
        }
    }
}

impl RedisDataMode {
    pub(crate) fn names(&self) -> Names<'_> {
        Names {
            channels: &self.channels_value,
            idempotency_key: &self.idempotency_key_value,
            delta: &self.delta_value,
            version: &self.version_value,
            version_epoch: &self.version_epoch_value,
            tags_prefix: &self.tags_value_prefix,
        }
    }
}

/// `nats_jetstream.publication_data_mode`: the properties are message headers.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct NatsDataMode {
    pub enabled: bool,
    pub channels_header: String,
    pub idempotency_key_header: String,
    pub delta_header: String,
    pub version_header: String,
    pub version_epoch_header: String,
    pub tags_header_prefix: String,
}

impl Default for NatsDataMode {
    fn default() -> Self {
        NatsDataMode {
            enabled: false,
            channels_header: "centrifugo-channels".into(),
            idempotency_key_header: "centrifugo-idempotency-key".into(),
            delta_header: "centrifugo-delta".into(),
            version_header: "centrifugo-version".into(),
            version_epoch_header: "centrifugo-version-epoch".into(),
            tags_header_prefix: "centrifugo-tag-".into(),
        }
    }
}

impl NatsDataMode {
    pub(crate) fn names(&self) -> Names<'_> {
        Names {
            channels: &self.channels_header,
            idempotency_key: &self.idempotency_key_header,
            delta: &self.delta_header,
            version: &self.version_header,
            version_epoch: &self.version_epoch_header,
            tags_prefix: &self.tags_header_prefix,
        }
    }
}

/// Centrifugo's check: the mode needs the property that names the channels.
pub(crate) fn validate(enabled: bool, names: &Names, key: &str, channels_key: &str) -> Result<(), LoadError> {
    match enabled && names.channels.is_empty() {
        true => Err(LoadError(format!(
            "{key}.{channels_key}: required when publication data mode is enabled"
        ))),
        false => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn run(props: &[(&str, &str)], data: &[u8]) -> Result<Command, String> {
        let m = RedisDataMode::default();
        command(&m.names(), props.iter().map(|(k, v)| (*k, *v)), data)
    }

    fn body(c: Command) -> (&'static str, serde_json::Value) {
        match c {
            Command::Apply(m, b) => (m, serde_json::from_slice(&b).unwrap()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_channel_is_a_publish_with_every_option() {
        let props = [
            ("centrifugo-channels", "news"),
            ("centrifugo-idempotency-key", "k1"),
            ("centrifugo-delta", "true"),
            ("centrifugo-version", "7"),
            ("centrifugo-version-epoch", "e"),
            ("centrifugo-tag-kind", "sport"),
            ("other", "x"),
        ];
        let (method, b) = body(run(&props, b"\x00{bin").unwrap());
        assert_eq!(method, "publish");
        assert_eq!(b["channel"], "news");
        assert_eq!(b["b64data"], base64::engine::general_purpose::STANDARD.encode(b"\x00{bin"));
        assert_eq!(b["idempotency_key"], "k1");
        assert_eq!(b["delta"], true);
        assert_eq!(b["version"], 7);
        assert_eq!(b["version_epoch"], "e");
        assert_eq!(b["tags"], json!({"kind": "sport"}));
    }

    #[test]
    fn several_channels_are_a_broadcast_and_none_is_skipped() {
        let (method, b) = body(run(&[("centrifugo-channels", "a,b,,c")], b"{}").unwrap());
        assert_eq!(method, "broadcast");
        assert_eq!(b["channels"], json!(["a", "b", "c"]));
        assert_eq!(run(&[("centrifugo-channels", "")], b"{}").unwrap(), Command::NoChannels);
        assert_eq!(run(&[], b"{}").unwrap(), Command::NoChannels);
    }

    #[test]
    fn a_property_that_does_not_parse_names_itself() {
        let e = run(&[("centrifugo-channels", "a"), ("centrifugo-delta", "yes")], b"{}").unwrap_err();
        assert!(e.contains("centrifugo-delta"), "{e}");
        let e = run(&[("centrifugo-channels", "a"), ("centrifugo-version", "-1")], b"{}").unwrap_err();
        assert!(e.contains("centrifugo-version"), "{e}");
    }

    #[test]
    fn the_mode_needs_its_channels_property() {
        let mut m = RedisDataMode::default();
        assert!(validate(true, &m.names(), "k", "channels_value").is_ok());
        m.channels_value.clear();
        let e = validate(true, &m.names(), "k", "channels_value").unwrap_err();
        assert_eq!(e.0, "k.channels_value: required when publication data mode is enabled");
        assert!(validate(false, &m.names(), "k", "channels_value").is_ok());
    }
}
