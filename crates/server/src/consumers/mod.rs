//! Async consumers (Centrifugo's `consumers[]`): API commands read from the backend's own
//! infrastructure (a PostgreSQL outbox table, Redis streams, a NATS JetStream stream) and applied through the same
//! code as the HTTP API ([`crate::api::call`]). A command is taken off its source only once
//! applied, so a node killed mid-batch applies the rest on its next start (at least once:
//! idempotency keys make publications safe to repeat).
//!
//! As Centrifugo: an answer with error 100 (internal) is transient, retried with backoff
//! (10 ms doubling to 5 s, jittered); any other error is permanent, logged and skipped.
//! `centrifugo_consumers_messages_processed_total` and `centrifugo_consumers_errors_total`
//! count per `consumer_name`; `wshub_consumers_lag` is the number of commands waiting in the
//! source when it was last looked at (PostgreSQL: rows of a partition after a full batch;
//! Redis: the group's pending entries; JetStream: the consumer's undelivered messages).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wshub_protocol::codes::error as ec;

use crate::cluster::Cluster;
use crate::config::LoadError;

mod data_mode;
mod nats_jetstream;
mod postgres;
mod redis_stream;

pub use nats_jetstream::NatsJetStreamConsumer;
pub use postgres::PostgresConsumer;
pub use redis_stream::RedisStreamConsumer;

/// One item of `consumers[]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct ConsumerConfig {
    pub name: String,
    pub enabled: bool,
    /// `postgresql`, `redis_stream` or `nats_jetstream`.
    pub r#type: String,
    pub postgresql: PostgresConsumer,
    pub redis_stream: RedisStreamConsumer,
    pub nats_jetstream: NatsJetStreamConsumer,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            name: String::new(),
            enabled: false,
            r#type: "postgresql".into(),
            postgresql: PostgresConsumer::default(),
            redis_stream: RedisStreamConsumer::default(),
            nats_jetstream: NatsJetStreamConsumer::default(),
        }
    }
}

/// The methods a consumer applies (Centrifugo's): the ones that change state.
pub const METHODS: &[&str] = &[
    "publish",
    "broadcast",
    "subscribe",
    "unsubscribe",
    "disconnect",
    "history_remove",
    "refresh",
];

const TYPES: &str = "\"postgresql\", \"redis_stream\" or \"nats_jetstream\"";

/// The checks of `consumers[]` (enabled ones only: a disabled one is not used).
pub fn validate(consumers: &[ConsumerConfig]) -> Result<(), LoadError> {
    let mut names = std::collections::HashSet::new();
    for (i, c) in consumers.iter().enumerate() {
        let key = format!("consumers[{i}]");
        if c.name.is_empty() || !c.name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-') {
            return Err(LoadError(format!("{key}.name: letters, digits, _ and - only, not empty")));
        }
        if !names.insert(c.name.as_str()) {
            return Err(LoadError(format!("{key}.name: {:?} is used twice", c.name)));
        }
        if !c.enabled {
            continue;
        }
        match c.r#type.as_str() {
            "postgresql" => c.postgresql.validate(&format!("{key}.postgresql"))?,
            "redis_stream" => c.redis_stream.validate(&format!("{key}.redis_stream"))?,
            "nats_jetstream" => c.nats_jetstream.validate(&format!("{key}.nats_jetstream"))?,
            "kafka" | "google_pub_sub" | "aws_sqs" | "azure_service_bus" => {
                return Err(LoadError(format!(
                    "{key}.type: {:?} consumers are not supported by wshub yet: {TYPES}",
                    c.r#type
                )))
            }
            _ => return Err(LoadError(format!("{key}.type: must be one of {TYPES}"))),
        }
    }
    Ok(())
}

/// A node's consumers, started once.
#[derive(Debug, Default)]
pub struct Consumers {
    list: Vec<ConsumerConfig>,
    started: std::sync::atomic::AtomicBool,
}

impl Consumers {
    pub fn new(list: Vec<ConsumerConfig>) -> Self {
        Consumers {
            list,
            started: Default::default(),
        }
    }

    /// Starts every enabled consumer on the current runtime (the first call only); each runs
    /// for as long as the process.
    pub fn start(&self, cluster: &Arc<Cluster>) {
        if !self.started.swap(true, std::sync::atomic::Ordering::Relaxed) {
            start(cluster, &self.list);
        }
    }
}

fn start(cluster: &Arc<Cluster>, consumers: &[ConsumerConfig]) {
    for c in consumers.iter().filter(|c| c.enabled) {
        let d = Dispatcher {
            cluster: cluster.clone(),
            name: c.name.clone(),
        };
        // Zero, so that the series exist before the first command.
        metrics::counter!("centrifugo_consumers_messages_processed_total", "consumer_name" => c.name.clone()).increment(0);
        metrics::counter!("centrifugo_consumers_errors_total", "consumer_name" => c.name.clone()).increment(0);
        tracing::info!(consumer = c.name, r#type = c.r#type, "running consumer");
        match c.r#type.as_str() {
            "postgresql" => {
                tokio::spawn(postgres::run(c.postgresql.clone(), d));
            }
            "redis_stream" => {
                for stream in &c.redis_stream.streams {
                    for worker in 0..c.redis_stream.num_workers.max(1) {
                        tokio::spawn(redis_stream::run(c.redis_stream.clone(), stream.clone(), worker, d.clone()));
                    }
                }
            }
            "nats_jetstream" => {
                tokio::spawn(nats_jetstream::run(c.nats_jetstream.clone(), d));
            }
            // Refused by `validate`.
            _ => {}
        }
    }
}

/// A command that could not be applied now and must be tried again.
#[derive(Debug)]
pub struct Transient(pub String);

/// Applies commands for one consumer.
#[derive(Clone)]
pub(crate) struct Dispatcher {
    cluster: Arc<Cluster>,
    name: String,
}

impl Dispatcher {
    /// Applies one command: `Ok` when done or permanently refused (logged, skipped), `Err`
    /// when it must be tried again.
    pub(crate) async fn dispatch(&self, method: &str, payload: &[u8]) -> Result<(), Transient> {
        let out = self.apply(method, payload).await;
        match &out {
            Ok(()) => metrics::counter!("centrifugo_consumers_messages_processed_total", "consumer_name" => self.name.clone()).increment(1),
            Err(_) => self.error(),
        }
        out
    }

    /// Applies one message in publication data mode ([`data_mode`]), as [`Dispatcher::dispatch`].
    pub(crate) async fn dispatch_data<'p>(
        &self,
        names: &data_mode::Names<'_>,
        props: impl Iterator<Item = (&'p str, &'p str)> + Clone,
        data: &[u8],
    ) -> Result<(), Transient> {
        match data_mode::command(names, props, data) {
            Ok(data_mode::Command::Apply(method, body)) => self.dispatch(method, &body).await,
            Ok(data_mode::Command::NoChannels) => {
                tracing::info!(consumer = self.name, "no channels found, skipping message");
                Ok(())
            }
            Err(why) => self.skip("publish", &why),
        }
    }

    async fn apply(&self, method: &str, payload: &[u8]) -> Result<(), Transient> {
        if !METHODS.contains(&method) {
            return self.skip(method, &format!("method not accepted from consumers: {method:?}"));
        }
        let request = match crate::api::parse_request(method, payload) {
            Ok(r) => r,
            Err(e) => return self.skip(method, &e.to_string()),
        };
        match crate::api::call(&self.cluster, request).await {
            Ok(v) => {
                // A broadcast answers per channel: one internal error retries the whole
                // command (idempotency keys keep the others from repeating).
                let internal = v["responses"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|r| r["error"]["code"] == ec::INTERNAL));
                match internal {
                    true => Err(Transient(format!("{method}: internal error on a channel"))),
                    false => Ok(()),
                }
            }
            Err(e) if e.code() == ec::INTERNAL => Err(Transient(format!("{method}: {}", e.message()))),
            Err(e) => self.skip(method, &format!("{} {}", e.code(), e.message())),
        }
    }

    fn skip(&self, method: &str, why: &str) -> Result<(), Transient> {
        tracing::error!(
            consumer = self.name,
            method,
            "non retryable error during consuming, skip message: {why}"
        );
        self.error();
        Ok(())
    }

    pub(crate) fn error(&self) {
        metrics::counter!("centrifugo_consumers_errors_total", "consumer_name" => self.name.clone()).increment(1);
    }

    pub(crate) fn lag(&self, source: &str, waiting: u64) {
        metrics::gauge!("wshub_consumers_lag", "consumer_name" => self.name.clone(), "source" => source.to_string()).set(waiting as f64);
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// This node's uid: the consumer name of its readers in a Redis consumer group.
    pub(crate) fn node_uid(&self) -> String {
        self.cluster.node.uid().to_string()
    }
}

/// Centrifugo's backoff: 10 ms (plus up to 10 ms of jitter) doubled at every retry, at most 5 s.
pub(crate) fn backoff(retries: u32) -> Duration {
    let jitter = rand::random::<u64>() % 10;
    let ms = (10 + jitter).saturating_mul(1u64 << retries.min(16));
    Duration::from_millis(ms).min(Duration::from_secs(5))
}

/// Whether `name` is a plain SQL identifier, possibly schema-qualified (it is put in queries).
pub(crate) fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|p| {
            !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !p.starts_with(|c: char| c.is_ascii_digit())
        })
}

#[cfg(test)]
mod tests;
