//! The map broker over Redis (`map_broker.type: redis`): map channels' keyed state, change
//! stream and expiries, shared by every node, on one Redis, Sentinel, shards or a Redis
//! Cluster.
//!
//! Keys of a map channel `ch` (in a Cluster, all in the channel's slot, as its other keys):
//! `{prefix}.map.state.{ch}` (hash: key -> entry), `map.keys` (sorted set, every key at score
//! 0: state pages in key order, cursors are keys), `map.exp` (sorted set: key -> expiry in
//! Redis's ms), `map.stream` (the change stream), `map.meta` (epoch, top offset) and the
//! channel's pub/sub channel, which nodes with subscribers listen to (see `pubsub`). Each
//! write, and each expiry, is one Lua script: state, stream, meta and the publication change
//! together (`lua/map_*.lua`).
//!
//! Expiry sweeps only the channels due: each shard keeps one sorted set,
//! `{prefix}.map.expiring`, of channel -> a time at or before its next expiry. A write with a
//! TTL lowers its channel's score (`ZADD LT`, after the script: in a Cluster the set is in
//! another slot); a sweep asks for the channels due, expires their keys, moves their score to
//! the next expiry and then reads that again and lowers it if a write came between. So the
//! score is never later than the channel's next expiry, and a sweep reads only what is due.

use std::time::Duration;

use prost::Message as _;
use wshub_core::engine::{BoxFuture, BrokerHandler, EngineError, StreamPosition};
use wshub_core::subscription::map::broker::{MapBroker, MapUpdate, MapWrite, StateQuery};
use wshub_core::subscription::map::state::{KeyMode, StatePage};
use wshub_core::subscription::map::Retention;
use wshub_protocol::Publication;

use crate::shard::{new_epoch, Shard};
use crate::RedisEngine;

/// The map broker's own settings (`map_broker.redis.*`).
#[derive(Debug, Clone)]
pub struct MapConfig {
    /// Most keys one channel's sweep removes at once (more wait for the next sweep).
    pub cleanup_batch_size: usize,
    /// How often expired keys are looked for; `None`: never (`cleanup_interval: -1`).
    pub cleanup_interval: Option<Duration>,
    /// How long an idempotent write's result is kept.
    pub idempotent_result_ttl: Duration,
    /// Writes change the state only, publishing nothing (Centrifugo's `skip_pub_sub`).
    pub skip_pub_sub: bool,
}

impl Default for MapConfig {
    fn default() -> Self {
        MapConfig {
            cleanup_batch_size: 100,
            cleanup_interval: Some(Duration::from_secs(1)),
            idempotent_result_ttl: Duration::from_secs(300),
            skip_pub_sub: false,
        }
    }
}

/// How long the meta of a map only read (never written) is kept: a reader's epoch holds
/// across its pages meanwhile.
const READ_META_TTL: Duration = Duration::from_secs(300);

/// How long an ephemeral map's keys outlive its last write: past every key's TTL, so that
/// the sweep, not Redis, removes keys (and tells subscribers).
const EPHEMERAL_MARGIN: Duration = Duration::from_secs(60);

/// Channels one sweep step asks the registry for.
const SWEEP_CHANNELS: usize = 1000;

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How long a map's keys live after its last write (0: for good).
fn keep_ms(r: &Retention) -> u64 {
    if !r.meta_ttl.is_zero() {
        ms(r.meta_ttl.max(r.key_ttl))
    } else if !r.key_ttl.is_zero() {
        ms(r.key_ttl + EPHEMERAL_MARGIN)
    } else {
        0
    }
}

fn suppressed(reason: &str) -> Option<&'static str> {
    match reason {
        "" => None,
        "key_exists" => Some("key_exists"),
        "version" => Some("version"),
        "idempotency" => Some("idempotency"),
        _ => Some("key_not_found"),
    }
}

fn undecodable(channel: &str) -> EngineError {
    EngineError::Internal(format!("redis: undecodable map entry in {channel}"))
}

impl Shard {
    /// The keys every map script takes, in its order (see `lua/map_lib.lua`).
    fn map_keys(&self, channel: &str) -> [String; 6] {
        ["map.state", "map.keys", "map.exp", "map.stream", "map.meta", "client"].map(|kind| self.key(kind, channel))
    }

    fn registry(&self) -> String {
        format!("{}.map.expiring", self.cfg.prefix)
    }

    fn invocation<'a>(&self, script: &'a redis::Script, channel: &str) -> redis::ScriptInvocation<'a> {
        let mut inv = script.prepare_invoke();
        for k in self.map_keys(channel) {
            inv.key(k);
        }
        inv
    }

    async fn map_write(&self, channel: &str, r: Retention, w: MapWrite) -> Result<MapUpdate, EngineError> {
        let mut c = self.conn().await?;
        let mut body = w.publication;
        body.key.clone_from(&w.key);
        body.removed = w.removed;
        body.offset = 0;
        body.delta = false;
        body.prev_data = Default::default();
        if w.removed {
            body.data = Default::default();
            body.info = None;
        }
        let keep_tags = w.removed && !body.tags.is_empty();
        let mode = match w.key_mode {
            KeyMode::Any => "",
            KeyMode::IfNew => "if_new",
            KeyMode::IfNewOrRefresh => "refresh",
            KeyMode::IfExists => "if_exists",
        };
        let mut inv = self.invocation(&self.scripts.map_write, channel);
        if let Some(k) = &w.idempotency_key {
            // The length keeps `a.b`+`c` apart from `a`+`b.c`.
            inv.key(format!("{}.{}.{k}", self.key("map.idem", channel), channel.len()));
        }
        let stream = r.mode.has_stream();
        let (offset, epoch, reason, expire_at): (u64, String, String, u64) = inv
            .arg(&w.key)
            .arg(body.encode_to_vec())
            .arg(if w.removed { "1" } else { "0" })
            .arg(mode)
            .arg(ms(r.key_ttl))
            .arg(if stream { r.stream_size.max(1) } else { 0 })
            .arg(if stream { ms(r.stream_ttl) } else { 0 })
            .arg(keep_ms(&r))
            .arg(new_epoch())
            .arg(if self.cfg.map.skip_pub_sub { "" } else { self.publish_command() })
            .arg(if w.delta { "1" } else { "0" })
            .arg(ms(self.cfg.map.idempotent_result_ttl).max(1))
            .arg(if keep_tags { "1" } else { "0" })
            .arg(w.version)
            .arg(&w.version_epoch)
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.fail(e))?;
        if expire_at > 0 {
            redis::cmd("ZADD")
                .arg(self.registry())
                .arg("LT")
                .arg(expire_at)
                .arg(channel)
                .query_async::<i64>(&mut c)
                .await
                .map_err(|e| self.fail(e))?;
        }
        Ok(MapUpdate {
            position: StreamPosition { offset, epoch },
            suppressed: suppressed(&reason),
        })
    }

    async fn map_read_state(&self, channel: &str, q: StateQuery) -> Result<StatePage, EngineError> {
        let mut c = self.conn().await?;
        let (epoch, top, cursor, values): (String, u64, String, Vec<Option<Vec<u8>>>) = self
            .invocation(&self.scripts.map_read_state, channel)
            .arg(new_epoch())
            .arg(ms(READ_META_TTL))
            .arg(&q.cursor)
            .arg(q.limit)
            .arg(if q.key.is_some() { "1" } else { "0" })
            .arg(q.key.as_deref().unwrap_or_default())
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.fail(e))?;
        if q.revision.as_ref().is_some_and(|r| r.epoch != epoch) {
            return Err(EngineError::UnrecoverablePosition);
        }
        let entries = values
            .into_iter()
            .flatten()
            .map(|v| Publication::decode(v.as_slice()).map_err(|_| undecodable(channel)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(StatePage {
            entries,
            cursor,
            position: StreamPosition { offset: top, epoch },
        })
    }

    async fn map_read_stream(
        &self,
        channel: &str,
        since: Option<StreamPosition>,
        limit: i64,
        reverse: bool,
    ) -> Result<(Vec<Publication>, StreamPosition), EngineError> {
        let mut c = self.conn().await?;
        // Entry IDs are `{offset}-1`: `{n}-0` is the lowest ID of offset n.
        let from = match &since {
            Some(s) => format!("{}-0", s.offset + 1),
            None => "-".to_string(),
        };
        let (epoch, top, first, ids, payloads): (String, u64, String, Vec<String>, Vec<Vec<u8>>) = self
            .invocation(&self.scripts.map_read_stream, channel)
            .arg(new_epoch())
            .arg(ms(READ_META_TTL))
            .arg(from)
            .arg(limit)
            .arg(if reverse { "1" } else { "0" })
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.fail(e))?;
        let offset_of = |id: &str| id.split('-').next().and_then(|o| o.parse::<u64>().ok());
        if let Some(s) = &since {
            // As the memory broker: another epoch, a position past the top, or one older
            // than what the stream keeps cannot be continued.
            let first_kept = offset_of(&first).unwrap_or(top + 1);
            let gone = s.offset < top && s.offset + 1 < first_kept;
            if (!s.epoch.is_empty() && s.epoch != epoch) || s.offset > top || gone {
                return Err(EngineError::UnrecoverablePosition);
            }
        }
        let mut publications = Vec::with_capacity(ids.len());
        for (id, payload) in ids.iter().zip(payloads) {
            let (Some(offset), Ok(mut p)) = (offset_of(id), Publication::decode(payload.as_slice())) else {
                return Err(undecodable(channel));
            };
            p.offset = offset;
            publications.push(p);
        }
        Ok((publications, StreamPosition { offset: top, epoch }))
    }

    async fn map_stats(&self, channel: &str) -> Result<usize, EngineError> {
        let mut c = self.conn().await?;
        redis::cmd("HLEN")
            .arg(self.key("map.state", channel))
            .query_async(&mut c)
            .await
            .map_err(|e| self.fail(e))
    }

    async fn map_clear(&self, channel: &str) -> Result<(), EngineError> {
        let mut c = self.conn().await?;
        // The meta goes too: the next read or write starts a new epoch (a client positioned
        // in the old one learns it cannot recover).
        let [state, keys, exp, stream, meta, _] = self.map_keys(channel);
        redis::cmd("DEL")
            .arg(&[state, keys, exp, stream, meta])
            .query_async::<i64>(&mut c)
            .await
            .map_err(|e| self.fail(e))?;
        redis::cmd("ZREM")
            .arg(self.registry())
            .arg(channel)
            .query_async::<i64>(&mut c)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// Expires the keys due in every channel the registry says is due.
    async fn map_sweep(&self) -> Result<(), EngineError> {
        let mut c = self.conn().await?;
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut c).await.map_err(|e| self.fail(e))?;
        let now = secs * 1000 + micros / 1000;
        loop {
            let due: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                .arg(self.registry())
                .arg("-inf")
                .arg(now)
                .arg("LIMIT")
                .arg(0)
                .arg(SWEEP_CHANNELS)
                .query_async(&mut c)
                .await
                .map_err(|e| self.fail(e))?;
            for ch in &due {
                self.map_sweep_channel(&mut c, ch).await?;
            }
            if due.len() < SWEEP_CHANNELS {
                return Ok(());
            }
        }
    }

    async fn map_sweep_channel(&self, c: &mut crate::target::Conn, channel: &str) -> Result<(), EngineError> {
        let batch = self.cfg.map.cleanup_batch_size.max(1);
        let (_, next): (usize, u64) = self
            .invocation(&self.scripts.map_expire, channel)
            .arg(batch)
            .arg(if self.cfg.map.skip_pub_sub { "" } else { self.publish_command() })
            .invoke_async(c)
            .await
            .map_err(|e| self.fail(e))?;
        let reg = self.registry();
        let mut cmd = match next {
            0 => redis::cmd("ZREM"),
            n => {
                let mut z = redis::cmd("ZADD");
                z.arg(&reg).arg(n);
                z
            }
        };
        if next == 0 {
            cmd.arg(&reg);
        }
        cmd.arg(channel).query_async::<i64>(c).await.map_err(|e| self.fail(e))?;
        // A write between the script and the line above may have an earlier expiry.
        let first: Vec<(String, u64)> = redis::cmd("ZRANGE")
            .arg(self.key("map.exp", channel))
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .query_async(c)
            .await
            .map_err(|e| self.fail(e))?;
        if let Some((_, at)) = first.first() {
            redis::cmd("ZADD")
                .arg(&reg)
                .arg("LT")
                .arg(*at)
                .arg(channel)
                .query_async::<i64>(c)
                .await
                .map_err(|e| self.fail(e))?;
        }
        Ok(())
    }
}

impl MapBroker for RedisEngine {
    fn set_handler(&self, handler: std::sync::Arc<dyn BrokerHandler>) {
        wshub_core::engine::Broker::set_handler(self, handler);
    }

    fn write<'a>(&'a self, channel: &'a str, retention: Retention, write: MapWrite) -> BoxFuture<'a, Result<MapUpdate, EngineError>> {
        Box::pin(self.shard(channel).map_write(channel, retention, write))
    }

    fn read_state<'a>(&'a self, channel: &'a str, query: StateQuery) -> BoxFuture<'a, Result<StatePage, EngineError>> {
        Box::pin(self.shard(channel).map_read_state(channel, query))
    }

    fn read_stream<'a>(
        &'a self,
        channel: &'a str,
        since: Option<StreamPosition>,
        limit: i64,
        reverse: bool,
    ) -> BoxFuture<'a, Result<(Vec<Publication>, StreamPosition), EngineError>> {
        Box::pin(self.shard(channel).map_read_stream(channel, since, limit, reverse))
    }

    fn stats<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<usize, EngineError>> {
        Box::pin(self.shard(channel).map_stats(channel))
    }

    fn clear<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(self.shard(channel).map_clear(channel))
    }

    fn expire(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            for s in &self.shards {
                if let Err(e) = s.map_sweep().await {
                    tracing::warn!(shard = %s.health.shard, error = %e, "redis map broker: expiry sweep failed");
                }
            }
        })
    }

    fn expire_interval(&self) -> Option<Duration> {
        self.shards.first().and_then(|s| s.cfg.map.cleanup_interval)
    }

    fn subscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        wshub_core::engine::Broker::subscribe(self, channel)
    }

    fn unsubscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        wshub_core::engine::Broker::unsubscribe(self, channel)
    }

    fn check(&self) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(self.check_all())
    }
}
