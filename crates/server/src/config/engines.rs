//! Which backends carry publications, presence and node control: `engine.*` for both
//! halves, overridden by Centrifugo v6's own sections `broker.*` and `presence_manager.*`
//! when they are `enabled`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Config, LoadError, Nats, Redis};

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Engine {
    /// `memory` or `redis`: the broker, presence manager and node control unless
    /// `broker.enabled` / `presence_manager.enabled` say otherwise.
    pub r#type: String,
    pub redis: Redis,
}

impl Default for Engine {
    fn default() -> Self {
        Engine {
            r#type: "memory".into(),
            redis: Redis::default(),
        }
    }
}

/// Centrifugo's `presence_manager` (who is in a channel): used instead of the engine when
/// enabled.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Section {
    pub enabled: bool,
    /// `memory` or `redis`.
    pub r#type: String,
    pub redis: Redis,
}

pub type PresenceManagerSection = Section;

/// Centrifugo's `broker` (publications, history, joins and leaves, and node control): used
/// instead of the engine when enabled.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct BrokerSection {
    pub enabled: bool,
    /// `memory`, `redis` or `nats` (publications only: no history).
    pub r#type: String,
    pub redis: Redis,
    pub nats: Nats,
}

impl Default for BrokerSection {
    fn default() -> Self {
        BrokerSection {
            enabled: false,
            r#type: "memory".into(),
            redis: Redis::default(),
            nats: Nats::default(),
        }
    }
}

impl Default for Section {
    fn default() -> Self {
        Section {
            enabled: false,
            r#type: "memory".into(),
            redis: Redis::default(),
        }
    }
}

/// One backend as chosen by a section: its kind and, for Redis, its settings and the key
/// that names them in messages.
#[derive(Debug, Clone, Copy)]
pub enum Backend<'a> {
    Memory,
    Redis(&'a Redis, &'static str),
    /// `broker.nats` (a broker only).
    Nats(&'a Nats),
}

impl Config {
    /// The broker's backend (`broker.*` when enabled, else `engine.*`), and the key of its type.
    pub fn broker_backend(&self) -> (Backend<'_>, &'static str) {
        match self.broker.enabled {
            true if self.broker.r#type == "nats" => (Backend::Nats(&self.broker.nats), "broker.type"),
            true => (backend(&self.broker.r#type, &self.broker.redis, "broker.redis"), "broker.type"),
            false => (backend(&self.engine.r#type, &self.engine.redis, "engine.redis"), "engine.type"),
        }
    }

    /// The presence manager's backend (`presence_manager.*` when enabled, else `engine.*`).
    pub fn presence_backend(&self) -> (Backend<'_>, &'static str) {
        match self.presence_manager.enabled {
            true => (
                backend(
                    &self.presence_manager.r#type,
                    &self.presence_manager.redis,
                    "presence_manager.redis",
                ),
                "presence_manager.type",
            ),
            false => (backend(&self.engine.r#type, &self.engine.redis, "engine.redis"), "engine.type"),
        }
    }

    /// The Redis settings that serve as the cluster-wide limiter's: the broker's.
    pub fn broker_redis(&self) -> Option<&Redis> {
        match self.broker_backend().0 {
            Backend::Redis(r, _) => Some(r),
            Backend::Memory | Backend::Nats(_) => None,
        }
    }
}

fn backend<'a>(kind: &str, redis: &'a Redis, key: &'static str) -> Backend<'a> {
    match kind {
        "redis" => Backend::Redis(redis, key),
        _ => Backend::Memory,
    }
}

/// The checks of `engine.*`, `broker.*` and `presence_manager.*`.
pub(super) fn validate(c: &Config) -> Result<(), LoadError> {
    let fail = |key: &str, why: &str| Err(LoadError(format!("{key}: {why}")));
    if !["memory", "redis"].contains(&c.engine.r#type.as_str()) {
        return fail("engine.type", "must be \"memory\" or \"redis\"");
    }
    for (on, kind, key) in [
        (c.broker.enabled, c.broker.r#type.as_str(), "broker.type"),
        (
            c.presence_manager.enabled,
            c.presence_manager.r#type.as_str(),
            "presence_manager.type",
        ),
    ] {
        let broker = key == "broker.type";
        match kind {
            _ if !on => {}
            "memory" | "redis" => {}
            "nats" if broker => {}
            "postgres" | "redisnats" if broker => {
                return fail(
                    key,
                    &format!("{kind:?} is not supported by wshub yet: \"memory\", \"redis\" or \"nats\""),
                )
            }
            _ if broker => return fail(key, "must be \"memory\", \"redis\" or \"nats\""),
            _ => return fail(key, "must be \"memory\" or \"redis\""),
        }
    }
    if let (Backend::Nats(n), _) = c.broker_backend() {
        n.validate()?;
    }
    for (b, _) in [c.broker_backend(), c.presence_backend()] {
        if let Backend::Redis(r, key) = b {
            validate_redis(r, key, c.client.presence_interval()).map_err(|e| LoadError(rename(&e.0, key)))?;
        }
    }
    Ok(())
}

/// A message about `engine.redis` as about the section `key`.
fn rename(message: &str, key: &str) -> String {
    match message.strip_prefix("engine.redis") {
        Some(rest) => format!("{key}{rest}"),
        None => message.to_string(),
    }
}

fn validate_redis(r: &Redis, key: &str, presence_interval: Duration) -> Result<(), LoadError> {
    let fail = |k: &str, why: &str| Err(LoadError(format!("{key}.{k}: {why}")));
    if r.prefix.is_empty() {
        return fail("prefix", "must not be empty");
    }
    if r.presence_ttl < presence_interval * 2 {
        return fail(
            "presence_ttl",
            "must be at least twice client.presence_update_interval (sessions refresh presence at that interval)",
        );
    }
    r.connection.validate(key)?;
    if !["none", "lz4", "zstd"].contains(&r.compression.as_str()) {
        return fail("compression", "must be \"none\", \"lz4\" or \"zstd\"");
    }
    if r.canary_interval < Duration::from_millis(100) {
        return fail("canary_interval", "must be at least 100ms");
    }
    // The engine reads the addresses and TLS files as it will at serve: what passes here
    // connects there.
    wshub_redis::RedisEngine::new(r.engine_config()?).map_err(|e| LoadError(e.to_string()))?;
    Ok(())
}
