//! `engine.redis`: Centrifugo's Redis keys, and the engine settings they make.
//!
//! Addresses are read by the engine (`wshub_redis::address`): `host:port`, `redis://`,
//! `rediss://`, `unix://`, `redis+sentinel://`, `redis+cluster://`. Each item of `address`,
//! `cluster_address` and `sentinel_address` is one shard; inside a `cluster_address` or
//! `sentinel_address` item, seeds are comma-separated, as in Centrifugo.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use wshub_core::duration;

use super::LoadError;

/// Centrifugo's Redis connection keys (its `configtypes.Redis`): where Redis is and how to
/// reach it. The engine's sections add their storage keys around it; the `redis_stream`
/// consumer takes it as it is.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct RedisConnection {
    /// One address, or several (a JSON list, or commas between them): independent shards,
    /// each channel on the one its name hashes to.
    #[serde(deserialize_with = "joined_list")]
    pub address: String,
    /// Centrifugo's Sentinel keys: each item of `sentinel_address` is a shard, its
    /// sentinels (`host:port`) comma-separated; the engine asks them for the master
    /// `sentinel_master_name` (instead of `address`) at every (re)connection.
    #[serde(deserialize_with = "item_list")]
    pub sentinel_address: Vec<String>,
    pub sentinel_master_name: String,
    pub sentinel_user: String,
    pub sentinel_password: String,
    pub sentinel_tls: RedisTls,
    /// Redis's password (ACL or `requirepass`), for every address that has none of its
    /// own, and the master's under Sentinel.
    pub password: String,
    /// The ACL user, likewise.
    pub user: String,
    /// The database number, for every address that names none.
    pub db: i64,
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// Bound of each command to Redis.
    #[serde(with = "duration")]
    pub io_timeout: Duration,
    pub force_resp2: bool,
    pub tls: RedisTls,
    /// Centrifugo's Redis Cluster key: each item a Cluster (a shard), its seed nodes
    /// (`host:port`) comma-separated; when set, `address` and the Sentinel keys are unused.
    #[serde(deserialize_with = "item_list")]
    pub cluster_address: Vec<String>,
    /// The name wshub's connections give themselves (`CLIENT SETNAME`; empty: none).
    pub client_name: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Redis {
    #[serde(flatten)]
    pub connection: RedisConnection,
    pub prefix: String,
    /// How long a presence entry lives unless its session refreshes it (every ping).
    #[serde(with = "duration")]
    pub presence_ttl: Duration,
    /// How often each pub/sub connection pings itself; a ping not back within it turns
    /// `/ready` to 503 and closes positioned subscribers with 3010 (wshub's own key).
    #[serde(with = "duration")]
    pub canary_interval: Duration,
    /// `"none"`, `"lz4"` or `"zstd"`: publication bodies of at least
    /// `compression_min_size` bytes are compressed in history and pub/sub.
    pub compression: String,
    pub compression_min_size: usize,
}

/// Centrifugo's TLS section for a client (`engine.redis.tls`, `sentinel_tls`): each PEM a
/// file path, PEM text or base64 of PEM text.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct RedisTls {
    pub enabled: bool,
    /// A client certificate and its key, for a Redis that asks for one.
    pub cert_pem: String,
    pub key_pem: String,
    /// The CA of the server's certificate (empty: the system's roots).
    pub server_ca_pem: String,
    /// Listed by Centrifugo's default configuration; a client has no use for it.
    pub client_ca_pem: String,
    pub insecure_skip_verify: bool,
}

impl Default for RedisConnection {
    fn default() -> Self {
        RedisConnection {
            address: "redis://127.0.0.1:6379".into(),
            sentinel_address: Vec::new(),
            sentinel_master_name: String::new(),
            sentinel_user: String::new(),
            sentinel_password: String::new(),
            sentinel_tls: RedisTls::default(),
            password: String::new(),
            user: String::new(),
            db: 0,
            connect_timeout: Duration::from_secs(1),
            io_timeout: Duration::from_secs(4),
            force_resp2: false,
            tls: RedisTls::default(),
            cluster_address: Vec::new(),
            client_name: String::new(),
        }
    }
}

impl Default for Redis {
    fn default() -> Self {
        Redis {
            connection: RedisConnection::default(),
            prefix: "wshub".into(),
            presence_ttl: Duration::from_secs(60),
            canary_interval: Duration::from_secs(2),
            compression: "none".into(),
            compression_min_size: 1024,
        }
    }
}

/// A list (JSON array or one string) kept as one string with commas between items.
pub(super) fn joined_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(string_list(d)?.join(","))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// A list as a JSON array, or as one string with commas between items (an environment
/// variable).
pub(super) fn string_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect(),
        OneOrMany::Many(v) => v,
    })
}

/// A list as a JSON array, or one string as one item (as Centrifugo reads a string given
/// for a list): its commas separate seeds of one shard, not shards.
fn item_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) if s.trim().is_empty() => Vec::new(),
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// A PEM as Centrifugo reads it ([`crate::tls::pem`]); empty when not set.
pub(super) fn pem(key: &str, value: &str) -> Result<Vec<u8>, LoadError> {
    if value.trim().is_empty() {
        return Ok(Vec::new());
    }
    crate::tls::pem(value).map_err(|e| LoadError(format!("{key}: {e}")))
}

fn tls(section: &str, t: &RedisTls) -> Result<Option<wshub_redis::address::Tls>, LoadError> {
    if !t.enabled {
        return Ok(None);
    }
    let read = |name: &str, v: &str| pem(&format!("{section}.{name}"), v);
    let out = wshub_redis::address::Tls {
        cert_pem: read("cert_pem", &t.cert_pem)?,
        key_pem: read("key_pem", &t.key_pem)?,
        server_ca_pem: read("server_ca_pem", &t.server_ca_pem)?,
        insecure_skip_verify: t.insecure_skip_verify,
    };
    if out.cert_pem.is_empty() != out.key_pem.is_empty() {
        return Err(LoadError(format!("{section}: cert_pem and key_pem go together")));
    }
    Ok(Some(out))
}

impl RedisConnection {
    /// The checks the keys need together (the addresses themselves are read by
    /// [`RedisConnection::redis_config`]'s user).
    pub fn validate(&self, key: &str) -> Result<(), LoadError> {
        let fail = |k: &str, why: String| Err(LoadError(format!("{key}.{k}: {why}")));
        if !self.cluster_address.is_empty() && !self.sentinel_address.is_empty() {
            return fail("cluster_address", format!("cannot be used with {key}.sentinel_address"));
        }
        if !self.sentinel_address.is_empty() && self.sentinel_master_name.is_empty() {
            return fail("sentinel_master_name", format!("must be set with {key}.sentinel_address"));
        }
        if self.client_name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            // Redis refuses such a name (CLIENT SETNAME): every connection would fail.
            return fail("client_name", "cannot contain spaces or control characters".into());
        }
        Ok(())
    }

    /// The engine's settings for this connection (the PEM files read; errors name keys
    /// under `section`), with the engine's defaults for the rest.
    pub fn redis_config(&self, section: &str) -> Result<wshub_redis::RedisConfig, LoadError> {
        Ok(wshub_redis::RedisConfig {
            address: self.address.clone(),
            sentinel: (!self.sentinel_address.is_empty()).then(|| wshub_redis::SentinelConfig {
                addresses: self.sentinel_address.clone(),
                master_name: self.sentinel_master_name.clone(),
                user: self.sentinel_user.clone(),
                password: self.sentinel_password.clone(),
            }),
            cluster: self.cluster_address.clone(),
            connection: wshub_redis::address::Connection {
                user: self.user.clone(),
                password: self.password.clone(),
                db: self.db,
                connect_timeout: self.connect_timeout,
                io_timeout: self.io_timeout,
                force_resp2: self.force_resp2,
                tls: tls(&format!("{section}.tls"), &self.tls)?,
                sentinel_tls: tls(&format!("{section}.sentinel_tls"), &self.sentinel_tls)?,
                client_name: self.client_name.clone(),
            },
            ..Default::default()
        })
    }
}

impl Redis {
    /// The engine's settings (the PEM files read); `compression` as checked by the loader.
    pub fn engine_config(&self) -> Result<wshub_redis::RedisConfig, LoadError> {
        Ok(wshub_redis::RedisConfig {
            prefix: self.prefix.clone(),
            presence_ttl: self.presence_ttl,
            canary_interval: self.canary_interval,
            compression: self
                .compression
                .parse()
                .map_err(|e| LoadError(format!("engine.redis.compression: {e}")))?,
            compression_min_size: self.compression_min_size,
            ..self.connection.redis_config("engine.redis")?
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_empty_pem_is_not_set_and_errors_name_the_key() {
        assert!(pem("k", " ").unwrap().is_empty());
        let e = pem("engine.redis.tls.cert_pem", "/nonexistent/x.pem").unwrap_err();
        assert!(e.0.starts_with("engine.redis.tls.cert_pem:"), "{}", e.0);
    }
}
