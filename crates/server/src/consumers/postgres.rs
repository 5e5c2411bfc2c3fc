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
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, NoTls};
use wshub_core::duration;

use super::{backoff, is_identifier, Dispatcher};
use crate::config::LoadError;

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
        Ok(())
    }
}

pub(super) async fn run(cfg: PostgresConsumer, d: Dispatcher) {
    let cfg = Arc::new(cfg);
    let wake: Vec<Arc<Notify>> = (0..cfg.num_partitions).map(|_| Arc::new(Notify::new())).collect();
    if !cfg.partition_notification_channel.is_empty() {
        tokio::spawn(listen(cfg.clone(), wake.clone(), d.clone()));
    }
    for (p, w) in wake.into_iter().enumerate() {
        tokio::spawn(partition(cfg.clone(), p as i32, w, d.clone()));
    }
}

async fn connect(
    dsn: &str,
) -> Result<
    (
        tokio_postgres::Client,
        tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
    ),
    String,
> {
    tokio_postgres::connect(dsn, NoTls).await.map_err(|e| e.to_string())
}

/// One partition, for as long as the process runs: connects (again after an error), applies
/// batches, and waits for the poll interval or a notification when the partition is empty.
async fn partition(cfg: Arc<PostgresConsumer>, p: i32, wake: Arc<Notify>, d: Dispatcher) {
    let mut retries = 0u32;
    loop {
        let mut client = match connect(&cfg.dsn).await {
            Ok((client, conn)) => {
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                client
            }
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
async fn listen(cfg: Arc<PostgresConsumer>, wake: Vec<Arc<Notify>>, d: Dispatcher) {
    let dsn = match cfg.partition_notification_dsn.is_empty() {
        true => cfg.dsn.clone(),
        false => cfg.partition_notification_dsn.clone(),
    };
    let channel = format!("\"{}\"", cfg.partition_notification_channel.replace('"', "\"\""));
    loop {
        match connect(&dsn).await {
            Ok((client, mut conn)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
                let driver = tokio::spawn(async move {
                    let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
                    while let Some(Ok(m)) = messages.next().await {
                        if let AsyncMessage::Notification(n) = m {
                            if tx.send(n.payload().to_string()).is_err() {
                                return;
                            }
                        }
                    }
                });
                match client.batch_execute(&format!("LISTEN {channel}")).await {
                    Ok(()) => {
                        while let Some(payload) = rx.recv().await {
                            match payload.trim().parse::<usize>().ok().and_then(|p| wake.get(p)) {
                                Some(w) => w.notify_one(),
                                None => tracing::error!(consumer = d.name(), payload, "outbox notification names no partition"),
                            }
                        }
                    }
                    Err(e) => tracing::error!(consumer = d.name(), "error executing LISTEN: {e}"),
                }
                driver.abort();
            }
            Err(e) => tracing::error!(consumer = d.name(), "error listening outbox notifications: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
