//! `broker.nats`: Centrifugo's NATS broker keys, and the broker settings they make.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wshub_core::duration;

use super::{LoadError, RedisTls};

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Nats {
    /// One server, or several with a comma between each.
    pub url: String,
    /// Centrifugo's by default, so that a backend publishing to `centrifugo.client.{channel}`
    /// (Centrifugo's framing) reaches wshub's subscribers as it reached Centrifugo's.
    pub prefix: String,
    #[serde(with = "duration")]
    pub dial_timeout: Duration,
    #[serde(with = "duration")]
    pub write_timeout: Duration,
    pub tls: RedisTls,
    pub allow_wildcards: bool,
    pub raw_mode: NatsRawMode,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct NatsRawMode {
    pub enabled: bool,
    /// Substrings of a channel's name replaced in its subject (`":"` to `"."`, say).
    pub channel_replacements: BTreeMap<String, String>,
    pub prefix: String,
}

impl Default for Nats {
    fn default() -> Self {
        Nats {
            url: "nats://localhost:4222".into(),
            prefix: "centrifugo".into(),
            dial_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
            tls: RedisTls::default(),
            allow_wildcards: false,
            raw_mode: NatsRawMode::default(),
        }
    }
}

/// The client TLS of a NATS connection (the PEM files read; errors name keys under
/// `section`); `None` when not enabled.
pub(crate) fn tls(section: &str, t: &RedisTls) -> Result<Option<wshub_nats::Tls>, LoadError> {
    if !t.enabled {
        return Ok(None);
    }
    let read = |name: &str, v: &str| super::redis::pem(&format!("{section}.{name}"), v);
    Ok(Some(wshub_nats::Tls {
        cert_pem: read("cert_pem", &t.cert_pem)?,
        key_pem: read("key_pem", &t.key_pem)?,
        server_ca_pem: read("server_ca_pem", &t.server_ca_pem)?,
        insecure_skip_verify: t.insecure_skip_verify,
    }))
}

impl Nats {
    /// The broker's settings (the PEM files read).
    pub fn broker_config(&self) -> Result<wshub_nats::NatsConfig, LoadError> {
        let tls = tls("broker.nats.tls", &self.tls)?;
        Ok(wshub_nats::NatsConfig {
            url: self.url.clone(),
            prefix: self.prefix.clone(),
            dial_timeout: self.dial_timeout,
            write_timeout: self.write_timeout,
            tls,
            allow_wildcards: self.allow_wildcards,
            raw_mode: self
                .raw_mode
                .enabled
                .then(|| wshub_nats::RawMode::new(self.raw_mode.prefix.clone(), self.raw_mode.channel_replacements.clone())),
        })
    }

    /// Checks the settings as the broker will read them at serve.
    pub(super) fn validate(&self) -> Result<(), LoadError> {
        let fail = |k: &str, why: &str| Err(LoadError(format!("broker.nats.{k}: {why}")));
        if self.prefix.is_empty() {
            return fail("prefix", "must not be empty");
        }
        if self.dial_timeout.is_zero() {
            return fail("dial_timeout", "must be more than 0");
        }
        wshub_nats::NatsBroker::new(self.broker_config()?).map_err(|e| LoadError(e.to_string()))?;
        Ok(())
    }
}
