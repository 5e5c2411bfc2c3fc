//! `type = "redis_stream"`: commands as entries of Redis streams, read through a consumer
//! group (`XREADGROUP`), each acknowledged (`XACK`) only once applied. Entries a dead node
//! read but never acknowledged are claimed (`XAUTOCLAIM`) once idle for
//! `visibility_timeout`, by whichever node looks first (every 5 s), and applied then.
//! Each entry carries the method in its `method_value` field and the command's JSON in its
//! `payload_value` field.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use redis::{IntoConnectionInfo, Value as RV};
use serde::{Deserialize, Serialize};
use wshub_core::duration;

use super::{backoff, Dispatcher};
use crate::config::LoadError;

/// How often pending entries of dead consumers are looked for (Centrifugo's).
const RECLAIM_INTERVAL: Duration = Duration::from_secs(5);
/// How long one `XREADGROUP` waits for entries.
const BLOCK: Duration = Duration::from_secs(1);
/// Entries read at once.
const COUNT: usize = 10;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct RedisStreamConsumer {
    /// One Redis (`redis://…`, `host:port`); Centrifugo's list form, its first item.
    pub address: Vec<String>,
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    #[serde(with = "duration")]
    pub io_timeout: Duration,
    pub db: i64,
    pub user: String,
    pub password: String,
    pub streams: Vec<String>,
    pub consumer_group: String,
    /// An entry read but not acknowledged for this long is taken over by another reader.
    #[serde(with = "duration")]
    pub visibility_timeout: Duration,
    /// Readers per stream on this node.
    pub num_workers: usize,
    pub payload_value: String,
    pub method_value: String,
}

impl Default for RedisStreamConsumer {
    fn default() -> Self {
        RedisStreamConsumer {
            address: vec!["redis://127.0.0.1:6379".into()],
            connect_timeout: Duration::from_secs(1),
            io_timeout: Duration::from_secs(4),
            db: 0,
            user: String::new(),
            password: String::new(),
            streams: Vec::new(),
            consumer_group: String::new(),
            visibility_timeout: Duration::from_secs(30),
            num_workers: 1,
            payload_value: "payload".into(),
            method_value: "method".into(),
        }
    }
}

impl RedisStreamConsumer {
    pub(super) fn validate(&self, key: &str) -> Result<(), LoadError> {
        let fail = |k: &str, why: &str| Err(LoadError(format!("{key}.{k}: {why}")));
        if self.address.len() != 1 {
            return fail("address", "one Redis address");
        }
        if let Err(e) = self.connection_info() {
            return fail("address", &e);
        }
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
        Ok(())
    }

    fn connection_info(&self) -> Result<redis::ConnectionInfo, String> {
        let a = self.address.first().map(String::as_str).unwrap_or_default();
        let url = match a.contains("://") {
            true => a.to_string(),
            false => format!("redis://{a}"),
        };
        let mut info = url.into_connection_info().map_err(|e| e.to_string())?;
        let mut r = info.redis_settings().clone();
        if self.db != 0 {
            r = r.set_db(self.db);
        }
        if !self.user.is_empty() {
            r = r.set_username(&self.user);
        }
        if !self.password.is_empty() {
            r = r.set_password(&self.password);
        }
        info = info.set_redis_settings(r);
        Ok(info)
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
    let client = redis::Client::open(cfg.connection_info()?).map_err(|e| e.to_string())?;
    // A reply may take the whole BLOCK of an XREADGROUP: the response timeout covers it
    // (redis-rs's default, 500 ms, would cut every idle read short).
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(cfg.connect_timeout.max(Duration::from_millis(10))))
        .set_response_timeout(Some(cfg.io_timeout + BLOCK));
    let connect = client.get_multiplexed_async_connection_with_config(&config);
    let mut c = tokio::time::timeout(cfg.connect_timeout.max(Duration::from_millis(10)), connect)
        .await
        .map_err(|_| "connect timeout".to_string())?
        .map_err(|e| e.to_string())?;
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
    c: &mut redis::aio::MultiplexedConnection,
    d: &Dispatcher,
) -> Result<(), String> {
    for (id, fields) in entries {
        let field = |k: &str| match fields.get(k) {
            Some(RV::BulkString(b)) => Some(b.clone()),
            Some(RV::SimpleString(s)) => Some(s.clone().into_bytes()),
            _ => None,
        };
        match field(&cfg.payload_value) {
            None => {
                tracing::error!(consumer = d.name(), stream, id, "payload value not found in redis stream message");
                d.error();
            }
            Some(payload) => {
                let method = field(&cfg.method_value)
                    .map(|m| String::from_utf8_lossy(&m).into_owned())
                    .unwrap_or_default();
                let mut retries = 0;
                while let Err(t) = d.dispatch(&method, &payload).await {
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
