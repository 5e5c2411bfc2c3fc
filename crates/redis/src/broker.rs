//! The broker half: publications with their history stream, joins and leaves, and the
//! pub/sub subscriptions of the channels with local subscribers.
//!
//! Publishing appends to the stream and publishes in one Lua script, so offsets are
//! assigned atomically across nodes and each node receives a channel's publications in
//! offset order on its one pub/sub connection.

use std::sync::Arc;

use prost::Message as _;
use tokio::sync::oneshot;
use wshub_core::engine::*;
use wshub_protocol::{ClientInfo, Publication};

use crate::compression;
use crate::pubsub::PubSubCmd;
use crate::shard::{lock, new_epoch, Shard};
use crate::RedisEngine;

/// How long a channel's epoch and top offset are kept after its last publication.
const META_TTL_SECS: u64 = 30 * 24 * 3600;

/// `history_meta_ttl` in whole seconds (zero: the default), at least one.
fn meta_ttl_secs(ttl: std::time::Duration) -> u64 {
    match ttl.as_secs() {
        0 => META_TTL_SECS,
        s => s,
    }
}

impl Shard {
    async fn publish_raw(&self, channel: &str, message: Vec<u8>) -> Result<(), EngineError> {
        let mut c = self.conn().await?;
        redis::cmd(self.publish_command())
            .arg(self.key("client", channel))
            .arg(message)
            .query_async::<i64>(&mut c)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn do_publish(&self, channel: &str, publication: Publication, opts: &PublishOptions) -> Result<StreamPosition, EngineError> {
        let mut c = self.conn().await?;
        let keep = opts.history_size > 0 && !opts.history_ttl.is_zero();
        let body = Publication { offset: 0, ..publication }.encode_to_vec();
        // `d`: the Protobuf publication; `c`: the same compressed (codec byte first).
        let (field, payload) = match compression::compress(self.cfg.compression, self.cfg.compression_min_size, &body) {
            Some(c) => ("c", c),
            None => ("d", body),
        };
        let mut inv = self.scripts.publish.prepare_invoke();
        inv.key(self.key("stream", channel))
            .key(self.key("meta", channel))
            .key(self.key("client", channel));
        // Only when asked for: an empty key would name slot 0 in a cluster.
        if let Some(k) = &opts.idempotency_key {
            // One key per (channel, idempotency key): the length keeps `a.b`+`c` apart from `a`+`b.c`.
            let key = match self.target.is_cluster() {
                true => format!("{}.{}.{channel}.{k}", self.key("idempotency", channel), channel.len()),
                false => format!("{}.idempotency.{}.{channel}.{k}", self.cfg.prefix, channel.len()),
            };
            inv.key(key);
        }
        let (offset, epoch): (u64, String) = inv
            .arg(payload)
            .arg(if keep { opts.history_size } else { 0 })
            .arg(opts.history_ttl.as_secs().max(1))
            .arg(new_epoch())
            .arg(meta_ttl_secs(opts.meta_ttl).max(opts.history_ttl.as_secs()))
            .arg(opts.idempotent_result_ttl.as_secs().max(1))
            .arg(field)
            .arg(self.publish_command())
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(StreamPosition { offset, epoch })
    }

    async fn do_history(&self, channel: &str, q: HistoryQuery) -> Result<HistoryResult, EngineError> {
        let mut c = self.conn().await?;
        // Entry IDs are `{offset}-1`: `{n}-0` is the lowest ID of offset n.
        let from = match &q.since {
            Some(s) => format!("{}-0", s.offset + 1),
            None => "-".to_string(),
        };
        let (epoch, top, ids, fields, payloads): (String, u64, Vec<String>, Vec<String>, Vec<Vec<u8>>) = self
            .scripts
            .history
            .key(self.key("stream", channel))
            .key(self.key("meta", channel))
            .arg(new_epoch())
            .arg(from)
            .arg(q.limit)
            .arg(if q.reverse { "1" } else { "0" })
            .arg(meta_ttl_secs(q.meta_ttl))
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.fail(e))?;
        if let Some(known) = lock(&self.epochs).get_mut(channel) {
            known.clone_from(&epoch);
        }
        if let Some(s) = &q.since {
            if !s.epoch.is_empty() && s.epoch != epoch {
                return Err(EngineError::UnrecoverablePosition);
            }
        }
        let mut publications = Vec::with_capacity(ids.len());
        for ((id, field), payload) in ids.iter().zip(&fields).zip(payloads) {
            let offset = id.split('-').next().and_then(|o| o.parse().ok());
            let body = match field.as_str() {
                "c" => compression::decompress(&payload).ok(),
                _ => Some(payload),
            };
            let decoded = body.as_deref().map(Publication::decode);
            let (Some(offset), Some(Ok(mut p))) = (offset, decoded) else {
                return Err(EngineError::Internal(format!("redis: undecodable history entry {id} in {channel}")));
            };
            p.offset = offset;
            publications.push(p);
        }
        Ok(HistoryResult {
            publications,
            position: StreamPosition { offset: top, epoch },
        })
    }
}

fn tagged(tag: u8, info: &ClientInfo) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + info.encoded_len());
    v.push(tag);
    info.encode(&mut v).unwrap_or_default(); // a Vec grows: encoding cannot run out of room
    v
}

impl Broker for Shard {
    fn set_handler(&self, handler: Arc<dyn BrokerHandler>) {
        let _ = self.handler.set(handler);
    }
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        publication: Publication,
        opts: &'a PublishOptions,
    ) -> BoxFuture<'a, Result<StreamPosition, EngineError>> {
        Box::pin(self.do_publish(channel, publication, opts))
    }
    fn publish_join<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(self.publish_raw(channel, tagged(b'j', &info)))
    }
    fn publish_leave<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(self.publish_raw(channel, tagged(b'l', &info)))
    }
    fn history<'a>(&'a self, channel: &'a str, query: HistoryQuery) -> BoxFuture<'a, Result<HistoryResult, EngineError>> {
        Box::pin(self.do_history(channel, query))
    }
    fn remove_history<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            // The meta hash stays: offsets and epoch go on, as in the memory engine.
            let mut c = self.conn().await?;
            redis::cmd("DEL")
                .arg(self.key("stream", channel))
                .query_async::<i64>(&mut c)
                .await
                .map_err(|e| self.fail(e))?;
            Ok(())
        })
    }
    fn check(&self) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(self.check_all())
    }
    fn subscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        // Sent now, not when first polled: the order of subscribes and unsubscribes is the
        // order of the hub changes that caused them.
        let (done, rx) = oneshot::channel();
        let sent = self.pubsub().and_then(|tx| {
            tx.send(PubSubCmd::Subscribe(channel.to_string(), done))
                .map_err(|_| EngineError::Internal("pub/sub task gone".into()))
        });
        Box::pin(async move {
            sent?;
            rx.await.map_err(|_| EngineError::Internal("pub/sub task gone".into()))?
        })
    }
    fn unsubscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            let (done, confirmed) = oneshot::channel();
            self.pubsub()?
                .send(PubSubCmd::Unsubscribe(channel.to_string(), done))
                .map_err(|_| EngineError::Internal("pub/sub task gone".into()))?;
            confirmed.await.map_err(|_| EngineError::Internal("pub/sub task gone".into()))
        })
    }
}

impl Broker for RedisEngine {
    fn set_handler(&self, handler: Arc<dyn BrokerHandler>) {
        for s in &self.shards {
            s.set_handler(handler.clone());
        }
    }
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        publication: Publication,
        opts: &'a PublishOptions,
    ) -> BoxFuture<'a, Result<StreamPosition, EngineError>> {
        self.shard(channel).publish(channel, publication, opts)
    }
    fn publish_join<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BoxFuture<'a, Result<(), EngineError>> {
        self.shard(channel).publish_join(channel, info)
    }
    fn publish_leave<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BoxFuture<'a, Result<(), EngineError>> {
        self.shard(channel).publish_leave(channel, info)
    }
    fn history<'a>(&'a self, channel: &'a str, query: HistoryQuery) -> BoxFuture<'a, Result<HistoryResult, EngineError>> {
        self.shard(channel).history(channel, query)
    }
    fn remove_history<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        self.shard(channel).remove_history(channel)
    }
    fn check(&self) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(self.check_all())
    }
    fn subscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        self.shard(channel).subscribe(channel)
    }
    fn unsubscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        self.shard(channel).unsubscribe(channel)
    }
}
