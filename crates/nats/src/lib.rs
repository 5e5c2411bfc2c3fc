//! The NATS broker: Centrifugo's `broker.type = "nats"`. Publications, joins and leaves of a
//! channel travel on one NATS subject, node control on another; nothing is kept, so there is
//! no history, recovery or idempotency ([`Broker::keeps_history`] says no, and the server
//! refuses namespaces with history on it). Presence lives elsewhere (the memory engine, or
//! Redis through `presence_manager`).
//!
//! Subjects, as Centrifugo's (so that a backend may publish to NATS directly):
//! - `{prefix}.client.{channel}`: a channel's publications, joins and leaves, each a
//!   Protobuf `Push` of Centrifugo's client protocol; in raw mode `{raw_mode.prefix}{channel}`
//!   (after `raw_mode.channel_replacements`) carrying the publication's data alone.
//! - `{prefix}.control`: node control, which every node subscribes to (itself included).
//!
//! NATS keeps each connection's messages in order, and every channel has one subscription
//! and one reading task per node: a channel's publications, joins and leaves reach a node in
//! the order one publisher sent them.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{oneshot, OnceCell};
use tokio::task::JoinHandle;
use wshub_core::cluster::ControlHandler;
use wshub_core::engine::{BrokerHandler, EngineError};

mod broker;
mod tls;

pub use tls::{AnyCertificate, Tls};

/// `broker.nats.*`, as Centrifugo names them.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// One server, or several with a comma between each (`nats://host:port`, `tls://…`,
    /// credentials in the URL as `nats://user:password@host`).
    pub url: String,
    pub prefix: String,
    /// How long connecting may take (at start, and the check).
    pub dial_timeout: Duration,
    /// How long a publication may wait for the connection to take it (zero: no bound).
    pub write_timeout: Duration,
    pub tls: Option<Tls>,
    /// Subscriptions to channels with NATS wildcards (`news.*`, `news.>`): each receives the
    /// publications of every matching channel, marked with the channel they were published to.
    pub allow_wildcards: bool,
    /// Publications as their bare data on subjects of the operator's naming, for systems that
    /// publish to NATS without Centrifugo's framing. No joins, leaves or tags then.
    pub raw_mode: Option<RawMode>,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: "nats://localhost:4222".into(),
            prefix: "centrifugo".into(),
            dial_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
            tls: None,
            allow_wildcards: false,
            raw_mode: None,
        }
    }
}

/// `broker.nats.raw_mode`: a channel's subject is `prefix` then the channel with each
/// `channel_replacements` key replaced by its value.
#[derive(Debug, Clone, Default)]
pub struct RawMode {
    pub prefix: String,
    /// Longest key first, so that the result does not depend on the map's order.
    pub channel_replacements: Vec<(String, String)>,
}

impl RawMode {
    pub fn new(prefix: String, replacements: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut channel_replacements: Vec<(String, String)> = replacements.into_iter().filter(|(k, _)| !k.is_empty()).collect();
        channel_replacements.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        RawMode {
            prefix,
            channel_replacements,
        }
    }

    /// The subject of `channel`: replacements applied left to right, each position taking the
    /// longest key that matches there (what Go's `strings.Replacer` does with distinct keys).
    fn subject(&self, channel: &str) -> String {
        let mut out = self.prefix.clone();
        let mut rest = channel;
        'outer: while !rest.is_empty() {
            for (from, to) in &self.channel_replacements {
                if let Some(after) = rest.strip_prefix(from.as_str()) {
                    out.push_str(to);
                    rest = after;
                    continue 'outer;
                }
            }
            let mut chars = rest.chars();
            if let Some(c) = chars.next() {
                out.push(c);
            }
            rest = chars.as_str();
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NatsBrokerError {
    #[error("broker.nats.url: {0}")]
    Url(String),
    #[error("broker.nats.prefix: must not be empty")]
    Prefix,
    #[error("broker.nats.tls: {0}")]
    Tls(String),
}

/// The NATS broker. Connects on first use (the server's start check is the first), and
/// reconnects by itself for as long as it lives, subscriptions restored.
pub struct NatsBroker {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: NatsConfig,
    servers: Vec<async_nats::ServerAddr>,
    tls: Option<async_nats::rustls::ClientConfig>,
    client: OnceCell<async_nats::Client>,
    handler: OnceLock<Arc<dyn BrokerHandler>>,
    control: OnceLock<Arc<dyn ControlHandler>>,
    /// The channels this node has a NATS subscription of, each read by a task of its own.
    subs: tokio::sync::Mutex<HashMap<String, Sub>>,
    /// Round trips through the server (see [`Inner::sync`]).
    sync_subject: OnceLock<String>,
    sync_next: AtomicU64,
    sync_waiting: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    /// The control and sync readers, ended with the broker.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// A channel's subscription: its reading task, how to stop it (the task unsubscribes and
/// answers on the sender it is given), and whether it stands yet.
struct Sub {
    stop: oneshot::Sender<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    /// True once the server has the subscription (see [`Inner::sync`]).
    ready: tokio::sync::watch::Receiver<bool>,
}

impl NatsBroker {
    /// Checks the URLs and TLS settings; the connection is made on first use.
    pub fn new(cfg: NatsConfig) -> Result<Self, NatsBrokerError> {
        if cfg.prefix.is_empty() && cfg.raw_mode.is_none() {
            return Err(NatsBrokerError::Prefix);
        }
        let servers = cfg
            .url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| {
                u.parse::<async_nats::ServerAddr>()
                    .map_err(|e| NatsBrokerError::Url(format!("{u}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if servers.is_empty() {
            return Err(NatsBrokerError::Url("no server".into()));
        }
        let tls = match &cfg.tls {
            Some(t) => Some(t.client_config().map_err(NatsBrokerError::Tls)?),
            None => None,
        };
        Ok(NatsBroker {
            inner: Arc::new(Inner {
                cfg,
                servers,
                tls,
                client: OnceCell::new(),
                handler: OnceLock::new(),
                control: OnceLock::new(),
                subs: tokio::sync::Mutex::new(HashMap::new()),
                sync_subject: OnceLock::new(),
                sync_next: AtomicU64::new(0),
                sync_waiting: Mutex::new(HashMap::new()),
                tasks: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The URLs without their passwords, for messages.
    pub fn url_for_logs(&self) -> String {
        strip_password(&self.inner.cfg.url)
    }
}

impl Drop for NatsBroker {
    fn drop(&mut self) {
        // The tasks hold the inner state: ending them lets it (and the connection) go.
        for t in lock(&self.inner.tasks).drain(..) {
            t.abort();
        }
        if let Ok(mut subs) = self.inner.subs.try_lock() {
            for (_, s) in subs.drain() {
                s.task.abort();
            }
        }
    }
}

/// `nats://user:secret@host` as `nats://user:***@host`, each URL of a list.
pub fn strip_password(urls: &str) -> String {
    urls.split(',')
        .map(|u| match (u.find("://"), u.rfind('@')) {
            (Some(s), Some(at)) if at > s => {
                let creds = &u[s + 3..at];
                match creds.split_once(':') {
                    Some((user, _)) => format!("{}{user}:***{}", &u[..s + 3], &u[at..]),
                    None => u.to_string(),
                }
            }
            _ => u.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn internal(what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Internal(format!("nats: {what}: {e}"))
}

#[cfg(test)]
mod tests;
