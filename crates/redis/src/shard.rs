//! One shard: one Redis, one Sentinel group or one Redis Cluster, with its command
//! connection, its keys, and its pub/sub task (started on first use).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;
use wshub_core::cluster::ControlHandler;
use wshub_core::engine::{BrokerHandler, EngineError};

use crate::health::{canary_call_timeout, Canary, PubSubHealth};
use crate::pubsub::{Handlers, Names, PubSubCmd};
use crate::scripts::Scripts;
use crate::target::{Conn, Resolver};
use crate::{fnv1a, RedisConfig, RedisEngineError};

/// Channels subscribed on a shard -> the epoch last seen for them (from pub/sub messages and
/// history reads; empty while unknown).
pub(crate) type Epochs = Arc<std::sync::Mutex<HashMap<String, String>>>;

pub(crate) fn lock(epochs: &Epochs) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
    // A panic while holding it cannot leave the map inconsistent: take it anyway.
    epochs.lock().unwrap_or_else(|e| e.into_inner())
}

/// The key of `kind` for `channel` under `prefix`. In a cluster, one hash tag per channel:
/// every key of it (and its pub/sub channel) in one slot, so that each script touches one
/// slot. The tag is a hash of the name, as a name may hold braces of its own.
pub(crate) fn key(prefix: &str, cluster: bool, kind: &str, channel: &str) -> String {
    match cluster {
        true => format!("{prefix}.{kind}.{{{:016x}}}.{channel}", fnv1a(channel)),
        false => format!("{prefix}.{kind}.{channel}"),
    }
}

/// One Redis (or one Sentinel group): the channels that hash to it, their history and
/// presence, and a pub/sub connection with its canary.
pub(crate) struct Shard {
    pub target: Arc<Resolver>,
    pub cfg: RedisConfig,
    /// The command connection; with Sentinel, dropped when it fails so that the next call
    /// asks the sentinels for the master again.
    conn: std::sync::RwLock<Option<Conn>>,
    conn_init: tokio::sync::Mutex<()>,
    pub handler: OnceLock<Arc<dyn BrokerHandler>>,
    /// Node control messages (`{prefix}.control`): shared with the pub/sub task.
    pub control: Arc<OnceLock<Arc<dyn ControlHandler>>>,
    pubsub: OnceLock<mpsc::UnboundedSender<PubSubCmd>>,
    /// Channels subscribed here -> the epoch last seen for them (from pub/sub messages and
    /// history reads; empty while unknown).
    pub epochs: Epochs,
    pub scripts: Scripts,
    /// This node's uid: the presence entries its sessions add are listed under it, for the
    /// survivors to take out (with leaves) if it dies.
    pub node_uid: OnceLock<String>,
    /// Whether the pub/sub connection delivers, as its canary sees it.
    pub health: Arc<PubSubHealth>,
    /// In a cluster: the slots (hash tags) this node recorded presence in, and when.
    pub tags_noted: std::sync::Mutex<HashMap<String, std::time::Instant>>,
}

pub(crate) fn internal(e: redis::RedisError) -> EngineError {
    EngineError::Internal(format!("redis: {e}"))
}

pub(crate) fn new_epoch() -> String {
    let n: u32 = rand::random();
    format!("{n:08x}")
}

impl Shard {
    /// Checks the address; connections are made on first use (and remade when lost).
    pub fn new(spec: crate::address::Shard, cfg: RedisConfig) -> Result<Self, RedisEngineError> {
        Ok(Shard {
            target: Arc::new(Resolver::new(&spec)?),
            conn: std::sync::RwLock::new(None),
            conn_init: tokio::sync::Mutex::new(()),
            handler: OnceLock::new(),
            control: Arc::default(),
            pubsub: OnceLock::new(),
            epochs: Epochs::default(),
            scripts: Scripts::new(),
            node_uid: OnceLock::new(),
            health: Arc::new(PubSubHealth::new(spec.name())),
            tags_noted: std::sync::Mutex::new(HashMap::new()),
            cfg,
        })
    }

    pub fn control_channel(&self) -> String {
        format!("{}.control", self.cfg.prefix)
    }

    pub fn key(&self, kind: &str, channel: &str) -> String {
        key(&self.cfg.prefix, self.target.is_cluster(), kind, channel)
    }

    pub async fn conn(&self) -> Result<Conn, EngineError> {
        if let Some(c) = self.conn.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
            return Ok(c.clone());
        }
        // One connection attempt at a time; the others wait for it.
        let _turn = self.conn_init.lock().await;
        if let Some(c) = self.conn.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
            return Ok(c.clone());
        }
        let c = self.target.get().await.map_err(internal)?.connect().await.map_err(internal)?;
        *self.conn.write().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
        Ok(c)
    }

    /// `PUBLISH`, or `SPUBLISH` in a cluster (sharded pub/sub: the message goes to the
    /// channel's shard only, not to every node of the cluster).
    pub fn publish_command(&self) -> &'static str {
        if self.target.is_cluster() {
            "spublish"
        } else {
            "publish"
        }
    }

    /// The engine error for `e`; with Sentinel, an error that says the master is gone or no
    /// longer master (`READONLY`: it came back as a replica) drops the connection, so that
    /// the next call follows the failover.
    pub fn fail(&self, e: redis::RedisError) -> EngineError {
        let moved =
            e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() || e.code() == Some("READONLY");
        if moved && self.target.is_sentinel() {
            *self.conn.write().unwrap_or_else(|e| e.into_inner()) = None;
        }
        internal(e)
    }

    /// Whether Redis answers (for readiness).
    pub async fn ping(&self) -> Result<(), EngineError> {
        let mut c = self.conn().await?;
        redis::cmd("PING").query_async::<String>(&mut c).await.map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// Whether Redis answers commands and the pub/sub connection delivers (its canary came
    /// back): the node is ready only with both. The error names the shard.
    pub async fn check_all(&self) -> Result<(), EngineError> {
        self.ping()
            .await
            .map_err(|e| EngineError::Internal(format!("redis {}: {e}", self.health.shard)))?;
        // Starts the pub/sub connection if nothing has yet, and waits for its first
        // subscription: a node is not ready before it hears the control channel.
        self.pubsub()?;
        if !self.health.wait_connected(canary_call_timeout(self.canary_interval()) * 2).await {
            return Err(EngineError::Internal(format!(
                "redis {}: pub/sub not connected yet",
                self.health.shard
            )));
        }
        match self.health.down_reason() {
            Some(why) => Err(EngineError::Internal(format!("redis {}: pub/sub {why}", self.health.shard))),
            None => Ok(()),
        }
    }

    fn canary_interval(&self) -> Duration {
        self.cfg.canary_interval.max(Duration::from_millis(50))
    }

    pub fn pubsub(&self) -> Result<&mpsc::UnboundedSender<PubSubCmd>, EngineError> {
        if let Some(tx) = self.pubsub.get() {
            return Ok(tx);
        }
        let handler = self
            .handler
            .get()
            .cloned()
            .ok_or_else(|| EngineError::Internal("engine used before set_handler".into()))?;
        let (tx, rx) = mpsc::unbounded_channel();
        if self.pubsub.set(tx).is_ok() {
            let names = Names {
                prefix: self.cfg.prefix.clone(),
                // Known once the task has found the target.
                cluster: false,
                control: self.control_channel(),
            };
            let handlers = Handlers {
                broker: handler,
                control: self.control.clone(),
            };
            let canary = Canary {
                channel: format!("{}.canary.{}{}", self.cfg.prefix, new_epoch(), new_epoch()),
                interval: self.canary_interval(),
                health: self.health.clone(),
            };
            tokio::spawn(crate::pubsub::run(
                self.target.clone(),
                names,
                handlers,
                canary,
                self.epochs.clone(),
                rx,
            ));
        }
        self.pubsub
            .get()
            .ok_or_else(|| EngineError::Internal("pub/sub task not started".into()))
    }
}
