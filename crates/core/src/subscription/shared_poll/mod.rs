//! Shared poll (Centrifugo 6.8): clients track keys of a channel with a signed batch, the
//! node polls the application's backend for the union of the keys its connections track,
//! once per `refresh_interval`, and pushes to each connection only what changed for the
//! keys it tracks. Ten thousand viewers of one item cost one backend request per interval.
//!
//! - this file: the namespace's `shared_poll` options and the top-level `shared_poll`
//!   section, validated at load, with Centrifugo's defaults;
//! - [`signature`]: the track signature (HMAC over the key set), pure;
//! - [`state`]: one channel's key index and refresh schedule, pure (time comes in);
//! - [`manager`]: the node's channels, the backend calls and the pushes.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::SubscriptionType;
use crate::config::ConfigError;

pub mod manager;
pub mod signature;
pub mod state;

/// How changes are recognised (`shared_poll.mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Not set: versionless.
    #[default]
    #[serde(rename = "")]
    Unset,
    /// The backend sends data only; a change is a change of its hash, numbered by the node.
    Versionless,
    /// The backend numbers each key's data; only a higher version is news.
    Versioned,
}

impl Mode {
    pub fn is_versioned(self) -> bool {
        self == Mode::Versioned
    }
}

/// Centrifugo's defaults when the namespace sets none.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_REFRESH_BATCH_SIZE: usize = 1000;
pub const DEFAULT_MAX_KEYS_PER_CONNECTION: usize = 5000;
pub const DEFAULT_CHANNEL_SHUTDOWN_DELAY: Duration = Duration::from_secs(1);
pub const DEFAULT_TRACK_EXPIRED_EXTRA_DELAY: Duration = Duration::from_secs(25);
pub const DEFAULT_CONCURRENCY_LIMIT: usize = 64;

/// A namespace's `shared_poll` section. Zero means Centrifugo's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SharedPollOptions {
    /// The `proxies` entry polled (empty: `default`, `channel.proxy.shared_poll_refresh`).
    pub proxy_name: String,
    #[serde(with = "crate::duration")]
    pub refresh_interval: Duration,
    /// Keys per backend request.
    pub refresh_batch_size: usize,
    pub max_keys_per_connection: usize,
    pub mode: Mode,
    /// How long a channel nobody tracks keeps its state (a quick comeback finds it).
    #[serde(with = "crate::duration")]
    pub channel_shutdown_delay: Duration,
    /// How long past its signature's expiry a key stays tracked (time for the SDK to
    /// bring a new signature).
    #[serde(with = "crate::duration")]
    pub track_expired_extra_delay: Duration,
    /// `shared_poll_publish` of the server API reaches this namespace's channels.
    pub publish_enabled: bool,
}

impl SharedPollOptions {
    pub fn interval(&self) -> Duration {
        or(self.refresh_interval, DEFAULT_REFRESH_INTERVAL)
    }

    pub fn batch_size(&self) -> usize {
        match self.refresh_batch_size {
            0 => DEFAULT_REFRESH_BATCH_SIZE,
            n => n,
        }
    }

    pub fn max_keys(&self) -> usize {
        match self.max_keys_per_connection {
            0 => DEFAULT_MAX_KEYS_PER_CONNECTION,
            n => n,
        }
    }

    pub fn shutdown_delay(&self) -> Duration {
        or(self.channel_shutdown_delay, DEFAULT_CHANNEL_SHUTDOWN_DELAY)
    }

    pub fn expired_extra_delay(&self) -> Duration {
        or(self.track_expired_extra_delay, DEFAULT_TRACK_EXPIRED_EXTRA_DELAY)
    }

    pub fn proxy(&self) -> &str {
        match self.proxy_name.as_str() {
            "" => "default",
            n => n,
        }
    }
}

fn or(v: Duration, d: Duration) -> Duration {
    if v.is_zero() {
        d
    } else {
        v
    }
}

/// The top-level `shared_poll` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SharedPollConfig {
    /// Signs track batches (the application's backend holds it too). Required when a
    /// namespace uses shared poll.
    pub hmac_secret_key: String,
    /// Accepted beside the current key while keys rotate.
    pub hmac_previous_secret_key: String,
    /// Unix seconds: signatures issued after it are not accepted with the previous key
    /// (0: no limit).
    pub hmac_previous_secret_key_valid_until: i64,
    /// Backend requests in flight at once across the node's channels (0: 64).
    pub concurrency_limit: usize,
}

impl SharedPollConfig {
    pub fn concurrency(&self) -> usize {
        match self.concurrency_limit {
            0 => DEFAULT_CONCURRENCY_LIMIT,
            n => n,
        }
    }
}

/// Centrifugo's rules for a namespace's `shared_poll` (its `validate.go`); `key` names the
/// namespace. The proxy's existence is checked where proxies are resolved.
pub fn validate(t: SubscriptionType, o: &SharedPollOptions, top: &SharedPollConfig, key: &str) -> Result<(), ConfigError> {
    if t != SubscriptionType::SharedPoll {
        return Ok(());
    }
    let fail = |k: &str, message: &str| {
        Err(ConfigError {
            key: k.to_string(),
            message: message.to_string(),
        })
    };
    if top.hmac_secret_key.is_empty() {
        return fail(
            "shared_poll.hmac_secret_key",
            &format!("required: {key} has subscription_type \"shared_poll\""),
        );
    }
    if o.publish_enabled && !o.mode.is_versioned() {
        return fail(
            &format!("{key}.shared_poll.publish_enabled"),
            "incompatible with versionless mode (publications need explicit versions)",
        );
    }
    Ok(())
}

/// The broker channel a direct publication of `key` travels on between nodes: the length
/// of `channel` first, so that no channel and key pair can spell another's.
pub fn key_channel(channel: &str, key: &str) -> String {
    format!("{}:{channel}{key}", channel.len())
}

/// The channel and key of a [`key_channel`] name.
pub fn parse_key_channel(name: &str) -> Option<(&str, &str)> {
    let (len, rest) = name.split_once(':')?;
    let n: usize = len.parse().ok()?;
    if !rest.is_char_boundary(n.min(rest.len())) || n > rest.len() || len.starts_with('+') {
        return None;
    }
    Some(rest.split_at(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_channels_round_trip_and_reject_garbage() {
        let c = key_channel("poll:a", "k:1");
        assert_eq!(c, "6:poll:ak:1");
        assert_eq!(parse_key_channel(&c), Some(("poll:a", "k:1")));
        assert_eq!(parse_key_channel("9:abc"), None);
        assert_eq!(parse_key_channel("x:abc"), None);
        assert_eq!(parse_key_channel("+1:abc"), None);
        assert_eq!(parse_key_channel("2:é"), Some(("é", "")));
        assert_eq!(parse_key_channel("1:é"), None);
    }

    #[test]
    fn centrifugo_rules_are_checked() {
        let sp = SubscriptionType::SharedPoll;
        let top = SharedPollConfig {
            hmac_secret_key: "s".into(),
            ..Default::default()
        };
        let o: SharedPollOptions =
            serde_json::from_str(r#"{"refresh_interval": "200ms", "mode": "versioned", "publish_enabled": true}"#).unwrap();
        assert!(validate(sp, &o, &top, "ns").is_ok());
        assert_eq!(o.interval(), Duration::from_millis(200));
        let e = validate(sp, &o, &SharedPollConfig::default(), "ns").unwrap_err();
        assert_eq!(e.key, "shared_poll.hmac_secret_key");
        let vl = SharedPollOptions {
            publish_enabled: true,
            ..Default::default()
        };
        assert_eq!(validate(sp, &vl, &top, "ns").unwrap_err().key, "ns.shared_poll.publish_enabled");
        assert!(validate(SubscriptionType::Stream, &vl, &SharedPollConfig::default(), "ns").is_ok());
        assert!(serde_json::from_str::<SharedPollOptions>(r#"{"mode": "sometimes"}"#).is_err());
        let d = SharedPollOptions::default();
        assert_eq!((d.batch_size(), d.max_keys(), d.proxy()), (1000, 5000, "default"));
        assert_eq!(SharedPollConfig::default().concurrency(), 64);
    }
}
