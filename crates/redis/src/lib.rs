//! The Redis engine: the [`Engine`] traits over Redis, so that several wshub nodes behind a
//! load balancer share channels, history and presence, and history outlives a node restart.
//!
//! Keys (under `prefix`, `wshub` by default), per channel `ch`:
//! - `{prefix}.stream.{ch}`: a Redis stream, one entry per kept publication, its ID
//!   `{offset}-1`, its field `d` the Protobuf-encoded publication (or `c`, the same compressed: see [`compression`]). Trimmed to `history_size`
//!   and expiring `history_ttl` after the last publication (as Centrifugo's Redis engine).
//! - `{prefix}.meta.{ch}`: a hash with the stream's epoch `e` and top offset `s`; it
//!   outlives the stream (`META_TTL`) so that offsets keep growing under one epoch.
//! - `{prefix}.presence.{ch}` and `{prefix}.presence.exp.{ch}`: client id → Protobuf
//!   `ClientInfo`, and client id → expiry (Redis server time), pruned on every read.
//! - `{prefix}.client.{ch}`: the pub/sub channel every node with subscribers listens to.
//!
//! Publishing appends to the stream and publishes in one Lua script, so offsets are
//! assigned atomically across nodes and each node receives a channel's publications in
//! offset order on its one pub/sub connection. Each message carries the stream's epoch: a
//! node that sees it change (Redis lost its data) tells its hub, which closes the channel's
//! positioned subscribers so that they learn they cannot recover.

use std::time::Duration;

use wshub_core::engine::EngineError;

use crate::shard::Shard;

/// Redis engine settings.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// The shards, a comma between each: each an address of [`address::parse`]'s forms.
    pub address: String,
    pub prefix: String,
    /// A presence entry not refreshed within this time is gone (a dead node's clients).
    pub presence_ttl: Duration,
    /// How often the node publishes a ping to itself through its pub/sub connection; a ping
    /// not back within this time marks the pub/sub as down (see [`RedisEngine::check`]).
    pub canary_interval: Duration,
    /// Redis behind Sentinel: `address` is then unused; the master is asked of the
    /// sentinels at every (re)connection, so that a failover is followed.
    pub sentinel: Option<SentinelConfig>,
    /// Redis Clusters, one per shard, each item its seed nodes (`host:port`, a comma
    /// between each), as Centrifugo's `cluster_address`: when not empty, `address` and
    /// `sentinel` are unused. In a cluster every key of a channel carries one hash tag (one
    /// slot per channel) and pub/sub is sharded (`SSUBSCRIBE`/`SPUBLISH`).
    pub cluster: Vec<String>,
    /// How to connect, for every shard (an address URL may say its own).
    pub connection: address::Connection,
    /// Codec for publication bodies of at least `compression_min_size` bytes, in history
    /// and pub/sub (`engine.redis.compression`).
    pub compression: Compression,
    pub compression_min_size: usize,
    /// Used when the engine serves as the map broker.
    pub map: MapConfig,
}

/// Where the sentinels are and which master they watch (Centrifugo's
/// `engine.redis.sentinel_address`, `sentinel_master_name`, `sentinel_user`,
/// `sentinel_password`). The master's credentials are the connection's.
#[derive(Debug, Clone, Default)]
pub struct SentinelConfig {
    /// One item per shard, each the `host:port` of its sentinels with a comma between each.
    pub addresses: Vec<String>,
    pub master_name: String,
    /// The sentinels' ACL user and password (empty: none).
    pub user: String,
    pub password: String,
}

impl RedisConfig {
    /// The shards, as Centrifugo makes them: one per item of `cluster` if any, else one
    /// per item of the sentinel addresses if any, else one per address.
    pub fn shards(&self) -> Result<Vec<address::Shard>, RedisEngineError> {
        let seeds = |item: &str| -> Result<Vec<(String, u16)>, String> {
            let seeds = item
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(address::seed)
                .collect::<Result<Vec<_>, _>>()?;
            if seeds.is_empty() {
                return Err("an empty item".into());
            }
            Ok(seeds)
        };
        let shard = |location| address::Shard {
            location,
            connection: self.connection.clone(),
        };
        let shards = if !self.cluster.is_empty() {
            let mut out = Vec::new();
            for item in &self.cluster {
                out.push(shard(address::Location::Cluster(seeds(item).map_err(RedisEngineError::Cluster)?)));
            }
            out
        } else if let Some(s) = self.sentinel.as_ref().filter(|s| !s.addresses.is_empty()) {
            if s.master_name.is_empty() {
                return Err(RedisEngineError::Sentinel(
                    "sentinel_master_name must be set with sentinel_address".into(),
                ));
            }
            let mut out = Vec::new();
            for item in &s.addresses {
                out.push(shard(address::Location::Sentinel {
                    sentinels: seeds(item).map_err(RedisEngineError::Sentinel)?,
                    master_name: s.master_name.clone(),
                    user: s.user.clone(),
                    password: s.password.clone(),
                }));
            }
            out
        } else {
            let addresses = self.address.split(',').filter(|a| !a.trim().is_empty());
            addresses
                .map(|a| {
                    address::parse(a, &self.connection).map_err(|e| RedisEngineError::Address(format!("{}: {e}", health::shard_name(a))))
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        if shards.is_empty() {
            return Err(RedisEngineError::Address("no address".into()));
        }
        Ok(shards)
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            address: "redis://127.0.0.1:6379".into(),
            prefix: "wshub".into(),
            presence_ttl: Duration::from_secs(60),
            canary_interval: DEFAULT_CANARY_INTERVAL,
            sentinel: None,
            cluster: Vec::new(),
            connection: address::Connection::default(),
            compression: Compression::None,
            compression_min_size: DEFAULT_COMPRESSION_MIN_SIZE,
            map: MapConfig::default(),
        }
    }
}

/// `engine.redis.compression_min_size` by default: below it, compression saves little
/// (see BENCHMARKS.md).
pub const DEFAULT_COMPRESSION_MIN_SIZE: usize = 1024;

/// `engine.redis.canary_interval` by default.
pub const DEFAULT_CANARY_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum RedisEngineError {
    #[error("engine.redis.address: {0}")]
    Address(String),
    #[error("engine.redis.sentinel_address: {0}")]
    Sentinel(String),
    #[error("engine.redis.cluster_address: {0}")]
    Cluster(String),
    #[error("engine.redis.tls: {0}")]
    Tls(String),
}

/// The Redis engine: one shard per address of `engine.redis.address` (or one Sentinel
/// group). Each channel lives on the shard its name hashes to ([`shard_index`]), with its
/// history, presence and pub/sub; node control travels through one shard (the one the
/// control channel's name hashes to); a dead node's presence is reaped on every shard.
pub struct RedisEngine {
    shards: Vec<Shard>,
    /// The shard that carries node control.
    control: usize,
}

impl RedisEngine {
    /// Checks the addresses and TLS files; connections are made on first use (and remade
    /// when lost). Several shards make independent Redis setups, each channel on one.
    pub fn new(cfg: RedisConfig) -> Result<Self, RedisEngineError> {
        let specs = cfg.shards()?;
        let control = shard_index(&format!("{}.control", cfg.prefix), specs.len());
        let shards = specs
            .into_iter()
            .map(|s| Shard::new(s, cfg.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RedisEngine { shards, control })
    }

    fn shard(&self, channel: &str) -> &Shard {
        // `shard_index` is below `shards.len()`, which is at least 1.
        &self.shards[shard_index(channel, self.shards.len())]
    }

    /// The shard names (`host:port`), in shard order.
    pub fn shard_names(&self) -> Vec<String> {
        self.shards.iter().map(|s| s.health.shard.clone()).collect()
    }

    /// Which shard (an index into [`RedisEngine::shard_names`]) holds `channel`.
    pub fn shard_of(&self, channel: &str) -> usize {
        shard_index(channel, self.shards.len())
    }

    /// Whether every shard answers commands and delivers pub/sub; the error names each
    /// shard that does not.
    pub async fn check_all(&self) -> Result<(), EngineError> {
        let results = futures_util::future::join_all(self.shards.iter().map(|s| s.check_all())).await;
        let failed: Vec<String> = results.into_iter().filter_map(|r| r.err().map(|e| e.to_string())).collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(EngineError::Internal(failed.join("; ")))
        }
    }

    #[cfg(test)]
    fn health(&self) -> &health::PubSubHealth {
        &self.shards[0].health
    }
}

/// The shard of `key` among `n`: jump consistent hash (Lamping and Veach, 2014) of the
/// FNV-1a hash of the name, so that every node agrees and adding a shard moves only about
/// 1/n of the channels.
pub fn shard_index(key: &str, n: usize) -> usize {
    let mut h = fnv1a(key);
    let (mut b, mut j): (i64, i64) = (-1, 0);
    let n = i64::try_from(n.max(1)).unwrap_or(i64::MAX);
    while j < n {
        b = j;
        h = h.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        let r = ((h >> 33) + 1) as f64;
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / r)) as i64;
    }
    usize::try_from(b).unwrap_or(0)
}

/// FNV-1a, 64 bits: a hash every node computes the same.
pub(crate) fn fnv1a(key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

pub mod address;
mod broker;
pub mod client;
mod control;
mod health;
mod map;
pub use map::MapConfig;
mod presence;
mod pubsub;
mod scripts;
mod session;
mod shard;
mod target;

pub mod compression;
pub use compression::Compression;

pub mod ratelimit;
pub use ratelimit::RedisLimiter;

#[cfg(test)]
mod tests;
