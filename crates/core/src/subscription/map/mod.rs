//! Map subscriptions (Centrifugo 6.8): a channel holds keyed state (key → its latest
//! publication, with a per-key TTL) beside an optional change stream, served to a
//! subscriber in phases (state pages, stream pages, the switch to live).
//!
//! - this file: the namespace's `map` options, validated at load, and their defaults;
//! - [`state`]: one channel's keyed state and stream, pure (time comes in as arguments);
//! - [`broker`]: the map broker, where channels live and whence writes are delivered
//!   (the in-memory one here; a shared one implements the same trait);
//! - [`ops`]: the server API's map methods on the node.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::SubscriptionType;
use crate::config::ConfigError;

pub mod broker;
pub mod ops;
pub mod state;

/// How a map keeps its entries and changes (`map.mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Not set: required for the map kinds.
    #[default]
    #[serde(rename = "")]
    Unset,
    /// Keys expire (`key_ttl`), no stream: a reconnect loads the whole state again.
    Ephemeral,
    /// Keys expire, and changes (expiries too) are kept in a stream for recovery.
    Recoverable,
    /// Keys never expire; changes are kept in a stream.
    Persistent,
}

impl Mode {
    pub fn has_stream(self) -> bool {
        matches!(self, Mode::Recoverable | Mode::Persistent)
    }
}

/// Whose id becomes the key of a client's map write (`map.client_key`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ClientKey {
    /// The key the client sends.
    #[default]
    #[serde(rename = "")]
    Given,
    #[serde(rename = "client_id")]
    ClientId,
    #[serde(rename = "user_id")]
    UserId,
}

/// Centrifugo's page sizes when the namespace sets none.
pub const DEFAULT_PAGE_SIZE: usize = 100;
pub const DEFAULT_MIN_PAGE_SIZE: usize = 100;
pub const DEFAULT_MAX_PAGE_SIZE: usize = 1000;
/// A stream mode's defaults (Centrifugo's).
pub const DEFAULT_STREAM_SIZE: usize = 100;
pub const DEFAULT_STREAM_TTL: Duration = Duration::from_secs(60);
/// How long a subscriber may take from its first state page to live.
pub const DEFAULT_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(5);

/// A namespace's `map` section. Zero means Centrifugo's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MapOptions {
    pub mode: Mode,
    #[serde(with = "crate::duration")]
    pub key_ttl: Duration,
    pub stream_size: usize,
    #[serde(with = "crate::duration")]
    pub stream_ttl: Duration,
    #[serde(with = "crate::duration")]
    pub meta_ttl: Duration,
    /// The client's own key (its client id) leaves the map when it unsubscribes.
    pub remove_client_on_unsubscribe: bool,
    pub client_key: ClientKey,
    pub allow_publish_for_client: bool,
    pub allow_publish_for_subscriber: bool,
    pub allow_publish_for_anonymous: bool,
    pub allow_remove_for_client: bool,
    pub allow_remove_for_subscriber: bool,
    pub allow_remove_for_anonymous: bool,
    /// A client's map write is asked of a backend (`channel.proxy.map_publish`, or the
    /// named proxy) instead of the permissions above; likewise a removal.
    pub publish_proxy_enabled: bool,
    pub publish_proxy_name: String,
    pub remove_proxy_enabled: bool,
    pub remove_proxy_name: String,
    pub default_page_size: usize,
    pub min_page_size: usize,
    pub max_page_size: usize,
    /// The most stream publications the switch to live sends; more is 112 (default:
    /// `max_page_size`).
    pub live_transition_max_publication_limit: usize,
    #[serde(with = "crate::duration")]
    pub subscribe_catch_up_timeout: Duration,
}

/// What the map broker needs of a channel's options, defaults applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub mode: Mode,
    /// Zero: keys never expire.
    pub key_ttl: Duration,
    pub stream_size: usize,
    pub stream_ttl: Duration,
    /// Zero: the stream's epoch and offset are kept for good.
    pub meta_ttl: Duration,
}

impl MapOptions {
    pub fn retention(&self) -> Retention {
        let stream = self.mode.has_stream();
        let stream_ttl = match (stream, self.stream_ttl.is_zero()) {
            (false, _) => Duration::ZERO,
            (true, true) => DEFAULT_STREAM_TTL,
            (true, false) => self.stream_ttl,
        };
        let meta_ttl = match self.mode {
            Mode::Recoverable if self.meta_ttl.is_zero() => (stream_ttl * 10).max(self.key_ttl),
            Mode::Recoverable | Mode::Persistent => self.meta_ttl,
            Mode::Ephemeral | Mode::Unset => Duration::ZERO,
        };
        Retention {
            mode: self.mode,
            key_ttl: if self.mode == Mode::Persistent {
                Duration::ZERO
            } else {
                self.key_ttl
            },
            stream_size: match (stream, self.stream_size) {
                (false, _) => 0,
                (true, 0) => DEFAULT_STREAM_SIZE,
                (true, n) => n,
            },
            stream_ttl,
            meta_ttl,
        }
    }

    /// A page size asked for (`limit`, 0: the default), clamped to the namespace's bounds.
    pub fn page_size(&self, asked: i32) -> usize {
        let or = |v: usize, d: usize| if v == 0 { d } else { v };
        let (min, max) = (
            or(self.min_page_size, DEFAULT_MIN_PAGE_SIZE),
            or(self.max_page_size, DEFAULT_MAX_PAGE_SIZE),
        );
        let asked = usize::try_from(asked).ok().filter(|&n| n > 0);
        asked.unwrap_or(or(self.default_page_size, DEFAULT_PAGE_SIZE)).max(min).min(max)
    }

    pub fn live_limit(&self) -> usize {
        match (self.live_transition_max_publication_limit, self.max_page_size) {
            (0, 0) => DEFAULT_MAX_PAGE_SIZE,
            (0, max) => max,
            (n, _) => n,
        }
    }

    pub fn catch_up_timeout(&self) -> Duration {
        match self.subscribe_catch_up_timeout.is_zero() {
            true => DEFAULT_CATCH_UP_TIMEOUT,
            false => self.subscribe_catch_up_timeout,
        }
    }
}

/// Centrifugo's rules for `subscription_type` and `map` together (its `validate.go`);
/// `key` names the namespace in the error.
pub fn validate(t: SubscriptionType, m: &MapOptions, key: &str) -> Result<(), ConfigError> {
    let fail = |k: &str, message: String| {
        Err(ConfigError {
            key: format!("{key}.{k}"),
            message,
        })
    };
    if t.is_map() && m.mode == Mode::Unset {
        return fail("map.mode", "required when subscription_type is a map type".into());
    }
    match m.mode {
        Mode::Ephemeral | Mode::Recoverable if m.key_ttl.is_zero() => {
            return fail("map.key_ttl", format!("required when map.mode is {:?}", m.mode).to_lowercase());
        }
        Mode::Persistent if !m.key_ttl.is_zero() => {
            return fail("map.key_ttl", "must not be set when map.mode is \"persistent\"".into());
        }
        Mode::Persistent if matches!(t, SubscriptionType::MapClients | SubscriptionType::MapUsers) => {
            return fail(
                "map.mode",
                "\"persistent\" is not allowed for map presence (entries need a TTL)".into(),
            );
        }
        Mode::Ephemeral if m.stream_size > 0 || !m.stream_ttl.is_zero() || !m.meta_ttl.is_zero() => {
            return fail(
                "map.mode",
                "\"ephemeral\" keeps no stream: stream_size, stream_ttl and meta_ttl must be 0".into(),
            );
        }
        _ => {}
    }
    if m.mode.has_stream() && !m.meta_ttl.is_zero() {
        let r = m.retention();
        if m.meta_ttl < r.stream_ttl {
            return fail("map.meta_ttl", "must be at least map.stream_ttl".into());
        }
    }
    if m.client_key != ClientKey::Given && (m.publish_proxy_enabled || m.remove_proxy_enabled) {
        return fail(
            "map.client_key",
            "cannot be used with map.publish_proxy_enabled or map.remove_proxy_enabled (the backend chooses the key)".into(),
        );
    }
    if m.remove_client_on_unsubscribe && !t.is_map() {
        return fail("map.remove_client_on_unsubscribe", "needs a map subscription_type".into());
    }
    let (min, max, def) = (m.min_page_size, m.max_page_size, m.default_page_size);
    if min > 0 && max > 0 && min > max {
        return fail("map.min_page_size", "must not exceed map.max_page_size".into());
    }
    if def > 0 && ((max > 0 && def > max) || (min > 0 && def < min)) {
        return fail(
            "map.default_page_size",
            "must be within map.min_page_size and map.max_page_size".into(),
        );
    }
    Ok(())
}

/// Each map presence prefix names a namespace of the matching kind that is not
/// `persistent` (its entries must expire), as Centrifugo checks.
pub fn validate_presence_prefixes(cfg: &crate::config::ChannelConfig) -> Result<(), ConfigError> {
    let all = cfg
        .namespaces
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("channel.namespaces[{i}]"), &n.options))
        .chain(std::iter::once(("channel.without_namespace".to_string(), &cfg.without_namespace)));
    for (key, o) in all {
        for (prefix, want, name) in [
            (
                &o.map_clients_presence_channel_prefix,
                SubscriptionType::MapClients,
                "map_clients_presence_channel_prefix",
            ),
            (
                &o.map_users_presence_channel_prefix,
                SubscriptionType::MapUsers,
                "map_users_presence_channel_prefix",
            ),
        ] {
            if prefix.is_empty() {
                continue;
            }
            let probe = format!("{prefix}x");
            let target = match probe.split_once(cfg.namespace_boundary.as_str()) {
                Some((ns, _)) if !cfg.namespace_boundary.is_empty() => cfg.namespaces.iter().find(|n| n.name == ns).map(|n| &n.options),
                _ => Some(&cfg.without_namespace),
            };
            let fail = |message: String| {
                Err(ConfigError {
                    key: format!("{key}.{name}"),
                    message,
                })
            };
            match target {
                None => return fail(format!("{prefix:?} names no namespace")),
                Some(t) if t.subscription_type != want => {
                    return fail(format!(
                        "{prefix:?} names a namespace whose subscription_type is not {:?}",
                        want.name()
                    ))
                }
                Some(t) if t.map.mode == Mode::Persistent => return fail(format!("{prefix:?} names a persistent map")),
                Some(_) => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(json: &str) -> MapOptions {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn page_sizes_are_clamped() {
        let m = MapOptions::default();
        assert_eq!(m.page_size(0), 100);
        assert_eq!(m.page_size(5), 100);
        assert_eq!(m.page_size(500), 500);
        assert_eq!(m.page_size(5000), 1000);
        let m = opts(r#"{"min_page_size": 1, "max_page_size": 10, "default_page_size": 2}"#);
        assert_eq!((m.page_size(0), m.page_size(-3), m.page_size(3), m.page_size(11)), (2, 2, 3, 10));
        assert_eq!(m.live_limit(), 10);
    }

    #[test]
    fn retention_defaults_follow_the_mode() {
        let r = opts(r#"{"mode": "recoverable", "key_ttl": "1h"}"#).retention();
        assert_eq!((r.stream_size, r.stream_ttl), (100, Duration::from_secs(60)));
        assert_eq!(r.meta_ttl, Duration::from_secs(3600), "at least key_ttl");
        let r = opts(r#"{"mode": "persistent"}"#).retention();
        assert_eq!((r.stream_size, r.meta_ttl, r.key_ttl), (100, Duration::ZERO, Duration::ZERO));
        let r = opts(r#"{"mode": "ephemeral", "key_ttl": "3s"}"#).retention();
        assert_eq!((r.stream_size, r.key_ttl), (0, Duration::from_secs(3)));
    }

    #[test]
    fn centrifugo_rules_are_checked() {
        let map = SubscriptionType::Map;
        let bad = [
            (map, r#"{}"#, "ns.map.mode"),
            (map, r#"{"mode": "ephemeral"}"#, "ns.map.key_ttl"),
            (map, r#"{"mode": "persistent", "key_ttl": "1s"}"#, "ns.map.key_ttl"),
            (SubscriptionType::MapClients, r#"{"mode": "persistent"}"#, "ns.map.mode"),
            (map, r#"{"mode": "ephemeral", "key_ttl": "1s", "stream_size": 3}"#, "ns.map.mode"),
            (
                map,
                r#"{"mode": "persistent", "stream_ttl": "1m", "meta_ttl": "1s"}"#,
                "ns.map.meta_ttl",
            ),
            (
                SubscriptionType::Stream,
                r#"{"remove_client_on_unsubscribe": true}"#,
                "ns.map.remove_client_on_unsubscribe",
            ),
            (
                map,
                r#"{"mode": "persistent", "min_page_size": 10, "max_page_size": 5}"#,
                "ns.map.min_page_size",
            ),
            (
                map,
                r#"{"mode": "persistent", "client_key": "client_id", "publish_proxy_enabled": true}"#,
                "ns.map.client_key",
            ),
        ];
        for (t, json, key) in bad {
            let e = validate(t, &opts(json), "ns").unwrap_err();
            assert_eq!(e.key, key, "{json}: {}", e.message);
        }
        assert!(validate(map, &opts(r#"{"mode": "persistent", "stream_size": 2}"#), "ns").is_ok());
        assert!(validate(SubscriptionType::Stream, &MapOptions::default(), "ns").is_ok());
        assert!(serde_json::from_str::<MapOptions>(r#"{"mode": "forever"}"#).is_err());
        assert!(serde_json::from_str::<MapOptions>(r#"{"client_key": "ip"}"#).is_err());
    }
}
