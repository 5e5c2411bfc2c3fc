//! `type = "nats_jetstream"`: commands as messages of a JetStream stream, read through a
//! durable pull consumer (created or updated at start unless `use_existing_consumer`), each
//! acknowledged once applied; a transient failure is answered with a delayed negative
//! acknowledgement (redelivered after a backoff growing with its delivery count, as
//! Centrifugo's), so that a failing message does not spin. The method is the
//! `method_header` header, the command's JSON the message's body. A message delivered but
//! not acknowledged (its node died) is redelivered after the ack wait (30 s).

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, Consumer, DeliverPolicy};
use async_nats::jetstream::AckKind;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::data_mode::{self, NatsDataMode};
use super::{backoff, Dispatcher};
use crate::config::nats::tls;
use crate::config::{LoadError, RedisTls};

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct NatsJetStreamConsumer {
    pub url: String,
    /// A NATS credentials file (a user JWT and its NKey seed): over `username` and `token`.
    pub credentials_file: String,
    pub username: String,
    pub password: String,
    pub token: String,
    pub stream_name: String,
    /// Read through a consumer made beforehand (by `nats consumer add`, say), as it is.
    pub use_existing_consumer: bool,
    /// The subjects of the stream to read (empty: all).
    pub subjects: Vec<String>,
    pub durable_consumer_name: String,
    /// `new` (messages stored after the consumer was made) or `all`.
    pub deliver_policy: String,
    pub max_ack_pending: i64,
    pub method_header: String,
    pub publication_data_mode: NatsDataMode,
    pub tls: RedisTls,
}

impl Default for NatsJetStreamConsumer {
    fn default() -> Self {
        NatsJetStreamConsumer {
            url: "nats://127.0.0.1:4222".into(),
            credentials_file: String::new(),
            username: String::new(),
            password: String::new(),
            token: String::new(),
            stream_name: String::new(),
            use_existing_consumer: false,
            subjects: Vec::new(),
            durable_consumer_name: String::new(),
            deliver_policy: "new".into(),
            max_ack_pending: 100,
            method_header: "centrifugo-method".into(),
            publication_data_mode: NatsDataMode::default(),
            tls: RedisTls::default(),
        }
    }
}

/// How long a delivered message may stay unacknowledged before it is delivered again.
const ACK_WAIT: Duration = Duration::from_secs(30);

impl NatsJetStreamConsumer {
    pub(super) fn validate(&self, key: &str) -> Result<(), LoadError> {
        let fail = |k: &str, why: &str| Err(LoadError(format!("{key}.{k}: {why}")));
        if let Err(e) = self.url.parse::<async_nats::ServerAddr>() {
            return fail("url", &e.to_string());
        }
        if self.stream_name.is_empty() {
            return fail("stream_name", "required");
        }
        if self.durable_consumer_name.is_empty() {
            return fail("durable_consumer_name", "required");
        }
        if !["new", "all"].contains(&self.deliver_policy.as_str()) {
            return fail("deliver_policy", "must be \"new\" or \"all\"");
        }
        if self.method_header.is_empty() {
            return fail("method_header", "must not be empty");
        }
        if !self.credentials_file.is_empty() {
            if let Err(e) = std::fs::read_to_string(&self.credentials_file) {
                return fail("credentials_file", &e.to_string());
            }
        }
        if let Some(t) = tls(&format!("{key}.tls"), &self.tls)? {
            t.client_config().map_err(|e| LoadError(format!("{key}.tls: {e}")))?;
        }
        let mode = &self.publication_data_mode;
        data_mode::validate(
            mode.enabled,
            &mode.names(),
            &format!("{key}.publication_data_mode"),
            "channels_header",
        )
    }
}

/// Reads for as long as the process runs; connects and makes the consumer again after errors.
pub(super) async fn run(cfg: NatsJetStreamConsumer, d: Dispatcher) {
    let mut retries = 0u32;
    loop {
        if let Err(e) = consume(&cfg, &d, &mut retries).await {
            tracing::error!(consumer = d.name(), stream = cfg.stream_name, "nats jetstream consumer: {e}");
            d.error();
            retries += 1;
            tokio::time::sleep(backoff(retries)).await;
        }
    }
}

async fn consume(cfg: &NatsJetStreamConsumer, d: &Dispatcher, retries: &mut u32) -> Result<(), String> {
    // As Centrifugo: a credentials file first, then a user and password, then a token.
    let mut o = match cfg.credentials_file.is_empty() {
        false => async_nats::ConnectOptions::with_credentials_file(&cfg.credentials_file)
            .await
            .map_err(|e| format!("credentials_file: {e}"))?,
        true if !cfg.username.is_empty() => async_nats::ConnectOptions::with_user_and_password(cfg.username.clone(), cfg.password.clone()),
        true if !cfg.token.is_empty() => async_nats::ConnectOptions::with_token(cfg.token.clone()),
        true => async_nats::ConnectOptions::new(),
    }
    .name("wshub-consumer");
    if let Some(t) = tls("nats_jetstream.tls", &cfg.tls).map_err(|e| e.0)? {
        o = o.require_tls(true).tls_client_config(t.client_config()?);
    }
    let client = o.connect(cfg.url.as_str()).await.map_err(|e| e.to_string())?;
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream(&cfg.stream_name).await.map_err(|e| e.to_string())?;
    let consumer: Consumer<pull::Config> = match cfg.use_existing_consumer {
        true => stream.get_consumer(&cfg.durable_consumer_name).await.map_err(|e| e.to_string())?,
        false => stream
            .create_consumer(pull::Config {
                durable_name: Some(cfg.durable_consumer_name.clone()),
                name: Some(cfg.durable_consumer_name.clone()),
                filter_subjects: cfg.subjects.clone(),
                deliver_policy: match cfg.deliver_policy.as_str() {
                    "all" => DeliverPolicy::All,
                    _ => DeliverPolicy::New,
                },
                ack_wait: ACK_WAIT,
                max_ack_pending: cfg.max_ack_pending,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?,
    };
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    *retries = 0;
    while let Some(m) = messages.next().await {
        let m = m.map_err(|e| e.to_string())?;
        let method = m
            .headers
            .as_ref()
            .and_then(|h| h.get(cfg.method_header.as_str()))
            .map(|v| v.as_str().to_string())
            .unwrap_or_default();
        let mode = &cfg.publication_data_mode;
        let done = match (mode.enabled, m.headers.as_ref()) {
            (true, headers) => {
                let props = headers
                    .into_iter()
                    .flat_map(|h| h.iter())
                    .filter_map(|(k, v)| Some((k.as_ref(), v.first()?.as_str())));
                d.dispatch_data(&mode.names(), props, &m.payload).await
            }
            (false, _) => d.dispatch(&method, &m.payload).await,
        };
        match done {
            Ok(()) => m.ack().await.map_err(|e| format!("ack: {e}"))?,
            Err(t) => {
                tracing::error!(consumer = d.name(), "processing message failed: {}", t.0);
                let delivered = m.info().map(|i| i.delivered).unwrap_or(1);
                let delay = backoff(u32::try_from(delivered.clamp(1, 10)).unwrap_or(10));
                m.ack_with(AckKind::Nak(Some(delay))).await.map_err(|e| format!("nak: {e}"))?;
            }
        }
        // Messages of the consumer not delivered yet, as the server said with this one.
        if let Ok(info) = m.info() {
            d.lag(&cfg.stream_name, info.pending);
        }
    }
    Err("the message stream ended".into())
}
