//! A command connection to one Redis shard for a user outside the engine (the
//! `redis_stream` consumer): the engine's address forms, credentials, TLS, Sentinel and
//! Cluster (a single address that answers as a Cluster node is used as one), so that every
//! Redis the engine can reach, a consumer can read.

use std::time::Duration;

use crate::address::Shard;
use crate::target::Resolver;
use crate::RedisEngineError;

/// A command connection (redis-rs's `ConnectionLike`): commands are routed by key in a
/// Cluster; a single Redis is reconnected by itself, a Sentinel master asked of the
/// sentinels at each [`connect`]. The engine's own connection type.
pub use crate::target::Conn as Connection;

/// Connects to `shard`, each reply awaited for the shard's `io_timeout` plus `extra` (a
/// blocking command such as `XREADGROUP … BLOCK` holds its reply that long).
/// The error names the shard (never its credentials).
pub async fn connect(shard: &Shard, extra: Duration) -> Result<Connection, String> {
    let mut spec = shard.clone();
    spec.connection.io_timeout += extra;
    let unreachable = |e: redis::RedisError| format!("{}: {e}", spec.name());
    let resolver = Resolver::new(&spec).map_err(|e: RedisEngineError| e.to_string())?;
    let target = resolver.get().await.map_err(unreachable)?;
    target.connect().await.map_err(unreachable)
}
