//! `type = "redis_stream"`: commands as entries of Redis streams, read through a consumer
//! group (`XREADGROUP`), each acknowledged (`XACK`) only once applied. Entries a dead node
//! read but never acknowledged are claimed (`XAUTOCLAIM`) once idle for
//! `visibility_timeout`, by whichever node looks first (every 5 s), and applied then.
//! Each entry carries the method in its `method_value` field and the command's JSON in its
//! `payload_value` field.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use redis::Value as RV;
use serde::{Deserialize, Serialize};
use wshub_core::duration;

use super::data_mode::{self, RedisDataMode};
use super::{backoff, Dispatcher};
use crate::config::LoadError;
use crate::config::RedisConnection;

/// How often pending entries of dead consumers are looked for (Centrifugo's).
const RECLAIM_INTERVAL: Duration = Duration::from_secs(5);
/// How long one `XREADGROUP` waits for entries.
const BLOCK: Duration = Duration::from_secs(1);
/// Entries read at once.
const COUNT: usize = 10;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct RedisStreamConsumer {
    /// Centrifugo's Redis connection keys (one shard: one address, one Sentinel group or
    /// one Cluster), as the engine reads them.
    #[serde(flatten)]
    pub redis: RedisConnection,
    pub streams: Vec<String>,
    pub consumer_group: String,
    /// An entry read but not acknowledged for this long is taken over by another reader.
    #[serde(with = "duration")]
    pub visibility_timeout: Duration,
    /// Readers per stream on this node.
    pub num_workers: usize,
    pub payload_value: String,
    pub method_value: String,
    pub publication_data_mode: RedisDataMode,
}

impl Default for RedisStreamConsumer {
    fn default() -> Self {
        RedisStreamConsumer {
            redis: RedisConnection::default(),
            streams: Vec::new(),
            consumer_group: String::new(),
            visibility_timeout: Duration::from_secs(30),
            num_workers: 1,
            payload_value: "payload".into(),
            method_value: "method".into(),
            publication_data_mode: RedisDataMode::default(),
        }
    }
}

impl RedisStreamConsumer {
    pub(super) fn validate(&self, key: &str) -> Result<(), LoadError> {
        let fail = |k: &str, why: &str| Err(LoadError(format!("{key}.{k}: {why}")));
        self.redis.validate(key)?;
        self.shard(key)?;
        if self.streams.is_empty() || self.streams.iter().any(String::is_empty) {
            return fail("streams", "at least one stream name");
        }
        if self.consumer_group.is_empty() {
            return fail("consumer_group", "required");
        }
        if self.visibility_timeout < Duration::from_millis(1) {
            return fail("visibility_timeout", "must be more than 0");
        }
        if self.payload_value.is_empty() {
            return fail("payload_value", "must not be empty");
        }
        let mode = &self.publication_data_mode;
        data_mode::validate(
            mode.enabled,
            &mode.names(),
            &format!("{key}.publication_data_mode"),
            "channels_value",
        )
    }

    /// The one shard the consumer reads (Centrifugo refuses more than one).
    fn shard(&self, key: &str) -> Result<wshub_redis::address::Shard, LoadError> {
        let shards = self
            .redis
            .redis_config(key)?
            .shards()
            .map_err(|e| LoadError(format!("{key}: {e}")))?;
        match <[_; 1]>::try_from(shards) {
            Ok([one]) => Ok(one),
            Err(v) => Err(LoadError(format!("{key}.address: one Redis shard, not {}", v.len()))),
        }
    }
}

/// One reader of `stream`, for as long as the process runs.
pub(super) async fn run(cfg: RedisStreamConsumer, stream: String, worker: usize, d: Dispatcher) {
    let me = format!("{}-{worker}", d.node_uid());
    let mut retries = 0u32;
    loop {
        if let Err(e) = read(&cfg, &stream, &me, &d).await {
            tracing::error!(consumer = d.name(), stream, "redis stream consumer: {e}");
            d.error();
            retries += 1;
            tokio::time::sleep(backoff(retries)).await;
        }
    }
}

type Entry = (String, HashMap<String, RV>);

async fn read(cfg: &RedisStreamConsumer, stream: &str, me: &str, d: &Dispatcher) -> Result<(), String> {
    let shard = cfg.shard("redis_stream").map_err(|e| e.0)?;
    // A reply may take the whole BLOCK of an XREADGROUP: the response timeout covers it.
    let mut c = wshub_redis::client::connect(&shard, BLOCK).await?;
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(&cfg.consumer_group)
        .arg("$")
        .arg("MKSTREAM")
        .query_async(&mut c)
        .await;
    if let Err(e) = created {
        if e.code() != Some("BUSYGROUP") {
            return Err(format!("XGROUP CREATE: {e}"));
        }
    }
    let mut last_reclaim: Option<Instant> = None;
    loop {
        if last_reclaim.is_none_or(|t| t.elapsed() >= RECLAIM_INTERVAL) {
            last_reclaim = Some(Instant::now());
            let (_, entries, _): (String, Vec<Entry>, RV) = redis::cmd("XAUTOCLAIM")
                .arg(stream)
                .arg(&cfg.consumer_group)
                .arg(me)
                .arg(cfg.visibility_timeout.as_millis() as u64)
                .arg("0-0")
                .arg("COUNT")
                .arg(100)
                .query_async(&mut c)
                .await
                .map_err(|e| format!("XAUTOCLAIM: {e}"))?;
            apply(cfg, stream, entries, &mut c, d).await?;
        }
        let read: Option<Vec<(String, Vec<Entry>)>> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&cfg.consumer_group)
            .arg(me)
            .arg("COUNT")
            .arg(COUNT)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(stream)
            .arg(">")
            .query_async(&mut c)
            .await
            .map_err(|e| format!("XREADGROUP: {e}"))?;
        for (_, entries) in read.unwrap_or_default() {
            apply(cfg, stream, entries, &mut c, d).await?;
        }
        let pending: (u64, RV, RV, RV) = redis::cmd("XPENDING")
            .arg(stream)
            .arg(&cfg.consumer_group)
            .query_async(&mut c)
            .await
            .map_err(|e| format!("XPENDING: {e}"))?;
        d.lag(stream, pending.0);
    }
}

/// Applies entries in order, each acknowledged once applied; a transient failure is retried
/// (with backoff) until it passes, so that the stream's order holds.
async fn apply(
    cfg: &RedisStreamConsumer,
    stream: &str,
    entries: Vec<Entry>,
    c: &mut wshub_redis::client::Connection,
    d: &Dispatcher,
) -> Result<(), String> {
    for (id, fields) in entries {
        // Text properties; the payload is taken as bytes (it may be binary data).
        let text: Vec<(&str, String)> = fields
            .iter()
            .filter_map(|(k, v)| match v {
                RV::BulkString(b) => Some((k.as_str(), String::from_utf8_lossy(b).into_owned())),
                RV::SimpleString(s) => Some((k.as_str(), s.clone())),
                _ => None,
            })
            .collect();
        let props = text.iter().map(|(k, v)| (*k, v.as_str()));
        let payload = match fields.get(&cfg.payload_value) {
            Some(RV::BulkString(b)) => Some(b.as_slice()),
            Some(RV::SimpleString(s)) => Some(s.as_bytes()),
            _ => None,
        };
        match payload {
            None => {
                tracing::error!(consumer = d.name(), stream, id, "payload value not found in redis stream message");
                d.error();
            }
            Some(payload) => {
                let mode = &cfg.publication_data_mode;
                let method = props.clone().find(|(f, _)| *f == cfg.method_value).map_or("", |(_, v)| v);
                let mut retries = 0;
                loop {
                    let done = match mode.enabled {
                        true => d.dispatch_data(&mode.names(), props.clone(), payload).await,
                        false => d.dispatch(method, payload).await,
                    };
                    let Err(t) = done else { break };
                    tracing::error!(consumer = d.name(), stream, id, "error processing redis stream message: {}", t.0);
                    retries += 1;
                    tokio::time::sleep(backoff(retries)).await;
                }
            }
        }
        let _: i64 = redis::cmd("XACK")
            .arg(stream)
            .arg(&cfg.consumer_group)
            .arg(&id)
            .query_async(c)
            .await
            .map_err(|e| format!("XACK: {e}"))?;
    }
    Ok(())
}
