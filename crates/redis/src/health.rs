//! Whether a shard's pub/sub connection delivers, as its canary sees it: `/ready`, the
//! `wshub_redis_pubsub_up` gauge and the 3010 resets hang on it.

use std::sync::Arc;
use std::time::Duration;

/// The health of one pub/sub connection (one shard's), as its canary sees it. Up until the
/// first miss: the start check asks Redis itself.
pub(crate) struct PubSubHealth {
    /// The Redis it talks to, without credentials: in logs, metrics and `/ready`'s reason.
    pub shard: String,
    down: std::sync::Mutex<Option<String>>,
    /// True once the pub/sub connection has subscribed to the control channel for the
    /// first time: before that, node control messages sent to this node are lost (a
    /// forwarded `/emulation` request, for one), so the engine's check waits for it.
    connected: tokio::sync::watch::Sender<bool>,
}

impl PubSubHealth {
    pub fn new(shard: String) -> Self {
        metrics::gauge!("wshub_redis_pubsub_up", "shard" => shard.clone()).set(1.0);
        PubSubHealth {
            shard,
            down: std::sync::Mutex::new(None),
            connected: tokio::sync::watch::Sender::new(false),
        }
    }

    pub fn set_connected(&self) {
        self.connected.send_if_modified(|c| !std::mem::replace(c, true));
    }

    /// Waits up to `limit` for the first connection; false if it has not come.
    pub async fn wait_connected(&self, limit: Duration) -> bool {
        let mut rx = self.connected.subscribe();
        let connected = tokio::time::timeout(limit, rx.wait_for(|c| *c)).await;
        matches!(connected, Ok(Ok(_)))
    }

    pub fn down_reason(&self) -> Option<String> {
        self.down.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_down(&self, why: &str) {
        let mut d = self.down.lock().unwrap_or_else(|e| e.into_inner());
        if d.is_none() {
            tracing::error!(shard = %self.shard, why, "redis pub/sub down: not ready, positioned subscribers closed (3010)");
            metrics::gauge!("wshub_redis_pubsub_up", "shard" => self.shard.clone()).set(0.0);
        }
        *d = Some(why.to_string());
    }

    pub fn set_up(&self) {
        let mut d = self.down.lock().unwrap_or_else(|e| e.into_inner());
        if d.take().is_some() {
            tracing::info!(shard = %self.shard, "redis pub/sub delivers again: ready");
            metrics::gauge!("wshub_redis_pubsub_up", "shard" => self.shard.clone()).set(1.0);
        }
    }
}

/// `redis://user:secret@host:port/db` → `host:port/db`.
pub(crate) fn shard_name(address: &str) -> String {
    let rest = address.split_once("://").map_or(address, |(_, r)| r);
    let rest = match rest.split_once('/') {
        Some((auth_host, path)) => match auth_host.rsplit_once('@') {
            Some((_, host)) => format!("{host}/{path}"),
            None => rest.to_string(),
        },
        None => rest.rsplit_once('@').map_or(rest, |(_, h)| h).to_string(),
    };
    rest.trim_end_matches('/').to_string()
}

/// The self-ping of a pub/sub connection: published on `channel` through a command
/// connection every `interval`, expected back on the pub/sub connection before the next.
/// A pub/sub connection can wedge with no error (centrifugo#1189: after a failover nothing
/// arrived, publishes went on succeeding, health stayed green); only a round trip shows it.
pub(crate) struct Canary {
    pub channel: String,
    pub interval: Duration,
    pub health: Arc<PubSubHealth>,
}

impl Canary {
    /// Bound of one pub/sub call (connect, subscribe): a wedged connection must not stall
    /// the task that watches it.
    pub fn call_timeout(&self) -> Duration {
        canary_call_timeout(self.interval)
    }
}

pub(crate) fn canary_call_timeout(interval: Duration) -> Duration {
    (interval * 2).clamp(Duration::from_secs(1), Duration::from_secs(10))
}
