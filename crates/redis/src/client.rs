//! A command connection to one Redis shard for a user outside the engine (the
//! `redis_stream` consumer): the engine's address forms, credentials, TLS, Sentinel and
//! Cluster (a single address that answers as a Cluster node is used as one), so that every
//! Redis the engine can reach, a consumer can read.

use std::time::Duration;

use crate::address::Shard;
use crate::target::{Conn, Resolver};
use crate::RedisEngineError;

/// A command connection (redis-rs's `ConnectionLike`): commands are routed by key in a
/// Cluster; a single Redis is reconnected by itself, a Sentinel master asked of the
/// sentinels at each [`connect`].
#[derive(Clone)]
pub struct Connection(Conn);

/// Connects to `shard`, each reply awaited for the shard's `io_timeout` plus `extra` (a
/// blocking command such as `XREADGROUP … BLOCK` holds its reply that long).
/// The error names the shard (never its credentials).
pub async fn connect(shard: &Shard, extra: Duration) -> Result<Connection, String> {
    let mut spec = shard.clone();
    spec.connection.io_timeout += extra;
    let unreachable = |e: redis::RedisError| format!("{}: {e}", spec.name());
    let resolver = Resolver::new(&spec).map_err(|e: RedisEngineError| e.to_string())?;
    let target = resolver.get().await.map_err(unreachable)?;
    Ok(Connection(target.connect().await.map_err(unreachable)?))
}

impl redis::aio::ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        self.0.req_packed_command(cmd)
    }
    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        self.0.req_packed_commands(pipeline, offset, count)
    }
    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}
