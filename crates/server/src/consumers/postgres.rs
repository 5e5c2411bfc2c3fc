//! `type = "postgresql"`: Centrifugo's outbox table (`id BIGSERIAL`, `method TEXT`,
//! `payload BYTEA`, `partition INTEGER`, `created_at` optional), written by the backend in the
//! same transaction as its data. Each partition is read by a task of its own, in `id`
//! order, under a transaction-scoped advisory lock (so that nodes running the same consumer
//! take turns on a partition instead of applying its rows twice); applied rows are deleted in
//! that transaction, and only they: a node killed mid-batch leaves the rest for the next
//! reader. `LISTEN` on `partition_notification_channel` (the backend's `NOTIFY` with the
//! partition number) wakes a partition before its next poll.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;
use wshub_core::duration;

use super::{backoff, is_identifier, Dispatcher};
use crate::config::nats::tls;
use crate::config::{LoadError, RedisTls};

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct PostgresConsumer {
    /// `postgres://user:password@host:port/db` or `host=… user=…`.
    pub dsn: String,
    pub outbox_table_name: String,
    pub num_partitions: u32,
    /// Rows read per partition at once.
    pub partition_select_limit: u32,
    #[serde(with = "duration")]
    pub partition_poll_interval: Duration,
    /// `LISTEN` there for the partition numbers the backend `NOTIFY`s (empty: poll only).
    pub partition_notification_channel: String,
    /// Where to `LISTEN` (empty: `dsn`): a direct connection when `dsn` goes through a
    /// pooler that does not keep sessions.
    pub partition_notification_dsn: String,
    /// Skip a partition another node holds instead of waiting for it.
    pub use_try_lock: bool,
    /// TLS to PostgreSQL (both `dsn` and `partition_notification_dsn`).
    pub tls: RedisTls,
}

impl Default for PostgresConsumer {
    fn default() -> Self {
        PostgresConsumer {
            dsn: String::new(),
            outbox_table_name: String::new(),
            num_partitions: 1,
            partition_select_limit: 100,
            partition_poll_interval: Duration::from_millis(300),
            partition_notification_channel: String::new(),
            partition_notification_dsn: String::new(),
            use_try_lock: false,
            tls: RedisTls::default(),
        }
    }
}

impl PostgresConsumer {
    pub(super) fn validate(&self, key: &str) -> Result<(), LoadError> {
        let fail = |k: &str, why: &str| Err(LoadError(format!("{key}.{k}: {why}")));
        if self.dsn.is_empty() {
            return fail("dsn", "required");
        }
        if let Err(e) = self.dsn.parse::<tokio_postgres::Config>() {
            return fail("dsn", &e.to_string());
        }
        if !is_identifier(&self.outbox_table_name) {
            return fail("outbox_table_name", "required: a table name (letters, digits, _, schema.table)");
        }
        if self.num_partitions == 0 {
            return fail("num_partitions", "must be at least 1");
        }
        if self.partition_select_limit == 0 {
            return fail("partition_select_limit", "must be at least 1");
        }
        if self.partition_poll_interval.is_zero() {
            return fail("partition_poll_interval", "must be more than 0");
        }
        self.connector(key)?;
        Ok(())
    }

    /// The TLS connector when `tls.enabled` (the PEM files read; errors name keys under `key`).
    fn connector(&self, key: &str) -> Result<Option<MakeRustlsConnect>, LoadError> {
        let Some(t) = tls(&format!("{key}.tls"), &self.tls)? else {
            return Ok(None);
        };
        let config = t.client_config().map_err(|e| LoadError(format!("{key}.tls: {e}")))?;
        Ok(Some(MakeRustlsConnect::new(config)))
    }
}

pub(super) async fn run(cfg: PostgresConsumer, d: Dispatcher) {
    let cfg = Arc::new(cfg);
    let wake: Vec<Arc<Notify>> = (0..cfg.num_partitions).map(|_| Arc::new(Notify::new())).collect();
    // Checked at load (`validate`): the files were readable then.
    let tls = match cfg.connector("postgresql") {
        Ok(tls) => tls,
        Err(e) => {
            tracing::error!(consumer = d.name(), "postgresql consumer not started: {}", e.0);
            return;
        }
    };
    if !cfg.partition_notification_channel.is_empty() {
        tokio::spawn(listen(cfg.clone(), tls.clone(), wake.clone(), d.clone()));
    }
    for (p, w) in wake.into_iter().enumerate() {
        tokio::spawn(partition(cfg.clone(), tls.clone(), p as i32, w, d.clone()));
    }
}

/// A connection, driven by a task of its own (until the client is dropped or the connection
/// breaks), with the payloads of the notifications it receives.
async fn connect(dsn: &str, tls: Option<&MakeRustlsConnect>) -> Result<(tokio_postgres::Client, mpsc::UnboundedReceiver<String>), String> {
    let e = |e: tokio_postgres::Error| e.to_string();
    Ok(match tls {
        None => {
            let (client, conn) = tokio_postgres::connect(dsn, NoTls).await.map_err(e)?;
            (client, drive(conn))
        }
        Some(tls) => {
            let (client, conn) = tokio_postgres::connect(dsn, tls.clone()).await.map_err(e)?;
            (client, drive(conn))
        }
    })
}

fn drive<S, T>(mut conn: tokio_postgres::Connection<S, T>) -> mpsc::UnboundedReceiver<String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let AsyncMessage::Notification(n) = m {
                // A partition's connection listens to nothing: no one receives.
                let _ = tx.send(n.payload().to_string());
            }
        }
    });
    rx
}

/// One partition, for as long as the process runs: connects (again after an error), applies
/// batches, and waits for the poll interval or a notification when the partition is empty.
async fn partition(cfg: Arc<PostgresConsumer>, tls: Option<MakeRustlsConnect>, p: i32, wake: Arc<Notify>, d: Dispatcher) {
    let mut retries = 0u32;
    loop {
        let mut client = match connect(&cfg.dsn, tls.as_ref()).await {
            Ok((client, _)) => client,
            Err(e) => {
                tracing::error!(consumer = d.name(), partition = p, "postgresql consumer: cannot connect: {e}");
                d.error();
                retries += 1;
                tokio::time::sleep(backoff(retries)).await;
                continue;
            }
        };
        loop {
            match batch(&mut client, &cfg, p, &d).await {
                Ok(n) => {
                    retries = 0;
                    if n < cfg.partition_select_limit as usize {
                        tokio::select! {
                            _ = tokio::time::sleep(cfg.partition_poll_interval) => {}
                            _ = wake.notified() => {}
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(consumer = d.name(), partition = p, "error processing postgresql outbox: {e}");
                    d.error();
                    retries += 1;
                    tokio::time::sleep(backoff(retries)).await;
                    if client.is_closed() {
                        break;
                    }
                }
            }
        }
    }
}

/// One batch of a partition in one transaction: the rows applied in order up to the first
/// transient failure, then deleted. The number of rows applied, or why it stopped.
async fn batch(client: &mut tokio_postgres::Client, cfg: &PostgresConsumer, p: i32, d: &Dispatcher) -> Result<usize, String> {
    let table = &cfg.outbox_table_name;
    let tx = client.transaction().await.map_err(|e| e.to_string())?;
    let lock = format!("centrifugo_partition_lock_{}{p}", d.name());
    if cfg.use_try_lock {
        let row = tx
            .query_one("SELECT pg_try_advisory_xact_lock(hashtext($1))", &[&lock])
            .await
            .map_err(|e| e.to_string())?;
        if !row.try_get::<_, bool>(0).map_err(|e| e.to_string())? {
            return Ok(0);
        }
    } else {
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&lock])
            .await
            .map_err(|e| e.to_string())?;
    }
    let limit = i64::from(cfg.partition_select_limit);
    let rows = tx
        .query(
            &format!("SELECT id, method, payload FROM {table} WHERE partition = $1 ORDER BY id ASC LIMIT $2"),
            &[&p, &limit],
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut done: Vec<i64> = Vec::with_capacity(rows.len());
    let mut stopped = None;
    for row in &rows {
        let (id, method, payload): (i64, String, Vec<u8>) = (
            row.try_get(0).map_err(|e| e.to_string())?,
            row.try_get(1).map_err(|e| e.to_string())?,
            row.try_get(2).map_err(|e| e.to_string())?,
        );
        match d.dispatch(&method, &payload).await {
            Ok(()) => done.push(id),
            Err(t) => {
                stopped = Some(t.0);
                break;
            }
        }
    }
    if !done.is_empty() {
        tx.execute(&format!("DELETE FROM {table} WHERE id = ANY($1)"), &[&done])
            .await
            .map_err(|e| e.to_string())?;
    }
    tx.commit().await.map_err(|e| e.to_string())?;
    // A full batch may have more behind it: count them (an empty one has none).
    let waiting = match rows.len() == cfg.partition_select_limit as usize {
        true => client
            .query_one(&format!("SELECT count(*) FROM {table} WHERE partition = $1"), &[&p])
            .await
            .ok()
            .and_then(|r| r.try_get::<_, i64>(0).ok())
            .unwrap_or(0),
        false => (rows.len() - done.len()) as i64,
    };
    d.lag(&format!("{table}:{p}"), u64::try_from(waiting).unwrap_or(0));
    match stopped {
        Some(why) => Err(why),
        None => Ok(done.len()),
    }
}

/// `LISTEN` for partition numbers; wakes their tasks. Reconnects after a second on errors.
async fn listen(cfg: Arc<PostgresConsumer>, tls: Option<MakeRustlsConnect>, wake: Vec<Arc<Notify>>, d: Dispatcher) {
    let dsn = match cfg.partition_notification_dsn.is_empty() {
        true => cfg.dsn.clone(),
        false => cfg.partition_notification_dsn.clone(),
    };
    let channel = format!("\"{}\"", cfg.partition_notification_channel.replace('"', "\"\""));
    loop {
        match connect(&dsn, tls.as_ref()).await {
            Ok((client, mut rx)) => match client.batch_execute(&format!("LISTEN {channel}")).await {
                Ok(()) => {
                    while let Some(payload) = rx.recv().await {
                        match payload.trim().parse::<usize>().ok().and_then(|p| wake.get(p)) {
                            Some(w) => w.notify_one(),
                            None => tracing::error!(consumer = d.name(), payload, "outbox notification names no partition"),
                        }
                    }
                }
                Err(e) => tracing::error!(consumer = d.name(), "error executing LISTEN: {e}"),
            },
            Err(e) => tracing::error!(consumer = d.name(), "error listening outbox notifications: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
