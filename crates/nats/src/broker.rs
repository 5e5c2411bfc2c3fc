//! The connection, the channel subscriptions and the [`Broker`] and [`NodeControl`] traits.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use prost::Message as _;
use tokio::sync::oneshot;
use wshub_core::cluster::{ControlHandler, NodeControl};
use wshub_core::engine::*;
use wshub_protocol::{ClientInfo, Join, Leave, Publication, Push};

use crate::{internal, lock, strip_password, Inner, NatsBroker, Sub};

/// How long a round trip through the server may take before the broker is called down.
const SYNC_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `channel` has NATS wildcards in it.
fn has_wildcards(channel: &str) -> bool {
    channel.contains('*') || channel.contains('>')
}

impl Inner {
    fn subject(&self, channel: &str) -> String {
        match &self.cfg.raw_mode {
            Some(raw) => raw.subject(channel),
            None => format!("{}.client.{channel}", self.cfg.prefix),
        }
    }

    fn control_subject(&self) -> String {
        format!("{}.control", self.cfg.prefix)
    }

    /// The connection, made on first use with the control subscription (so that a node
    /// whose check passed hears the cluster) and the subject of its round trips.
    async fn client(self: &Arc<Self>) -> Result<&async_nats::Client, EngineError> {
        self.client
            .get_or_try_init(|| async {
                let url = strip_password(&self.cfg.url);
                let mut o = async_nats::ConnectOptions::new()
                    .name("wshub")
                    .connection_timeout(self.cfg.dial_timeout.max(Duration::from_millis(10)))
                    .max_reconnects(None)
                    .event_callback(move |e| {
                        let url = url.clone();
                        async move {
                            // The client logs its connections itself; these say which.
                            match e {
                                async_nats::Event::Connected => tracing::info!(url, "nats broker connected"),
                                e => tracing::warn!(url, "nats broker: {e}"),
                            }
                        }
                    });
                if let Some(t) = &self.tls {
                    o = o.require_tls(true).tls_client_config(t.clone());
                }
                let client = o
                    .connect(self.servers.clone())
                    .await
                    .map_err(|e| internal(&format!("connecting to {}", strip_password(&self.cfg.url)), e))?;
                let control = client
                    .subscribe(self.control_subject())
                    .await
                    .map_err(|e| internal("control subscription", e))?;
                let sync_subject = client.new_inbox();
                let sync = client
                    .subscribe(sync_subject.clone())
                    .await
                    .map_err(|e| internal("sync subscription", e))?;
                let _ = self.sync_subject.set(sync_subject);
                let me = Arc::downgrade(self);
                let control_task = tokio::spawn(read_control(me.clone(), control));
                let sync_task = tokio::spawn(read_sync(me, sync));
                lock(&self.tasks).extend([control_task, sync_task]);
                Ok(client)
            })
            .await
    }

    /// Returns once the server has processed everything this connection sent before: a
    /// message to this node's own inbox is back. NATS handles a connection's operations in
    /// order, so a subscription sent before is in place (publications sent to it from
    /// anywhere after now reach it).
    async fn sync(self: &Arc<Self>) -> Result<(), EngineError> {
        let client = self.client().await?;
        let subject = self.sync_subject.get().ok_or_else(|| internal("sync", "no inbox"))?.clone();
        let n = self.sync_next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.sync_waiting).insert(n, tx);
        let round_trip = async {
            client
                .publish(subject, n.to_string().into())
                .await
                .map_err(|e| internal("sync", e))?;
            rx.await.map_err(|_| internal("sync", "reader gone"))
        };
        let out = match tokio::time::timeout(SYNC_TIMEOUT, round_trip).await {
            Ok(r) => r,
            Err(_) => Err(internal(
                &format!("{} did not answer", strip_password(&self.cfg.url)),
                format!("within {SYNC_TIMEOUT:?}"),
            )),
        };
        lock(&self.sync_waiting).remove(&n);
        out
    }

    async fn publish_bytes(self: &Arc<Self>, subject: String, payload: Vec<u8>) -> Result<(), EngineError> {
        let client = self.client().await?;
        let send = client.publish(subject, payload.into());
        let sent = match self.cfg.write_timeout.is_zero() {
            true => send.await,
            false => tokio::time::timeout(self.cfg.write_timeout, send)
                .await
                .map_err(|_| internal("publish", format!("not taken within write_timeout {:?}", self.cfg.write_timeout)))?,
        };
        sent.map_err(|e| internal("publish", e))
    }

    async fn publish_push(self: &Arc<Self>, channel: &str, push: Push) -> Result<(), EngineError> {
        if has_wildcards(channel) {
            return Err(internal("publish", format!("{channel:?}: no wildcards in a published channel")));
        }
        self.publish_bytes(self.subject(channel), push.encode_to_vec()).await
    }

    async fn subscribe(self: &Arc<Self>, channel: &str) -> Result<(), EngineError> {
        if has_wildcards(channel) && !self.cfg.allow_wildcards {
            return Err(internal(
                "subscribe",
                format!("{channel:?}: wildcards need broker.nats.allow_wildcards"),
            ));
        }
        let client = self.client().await?.clone();
        let mut subs = self.subs.lock().await;
        // Another subscriber's subscription: answered once it stands.
        if let Some(existing) = subs.get(channel) {
            let mut ready = existing.ready.clone();
            drop(subs);
            return match ready.wait_for(|r| *r).await {
                Ok(_) => Ok(()),
                Err(_) => Err(internal("subscribe", format!("{channel:?}: the subscription failed"))),
            };
        }
        let sub = client
            .subscribe(self.subject(channel))
            .await
            .map_err(|e| internal("subscribe", e))?;
        let (stop, stopped) = oneshot::channel();
        let (ready_tx, ready) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(read_channel(Arc::downgrade(self), channel.to_string(), sub, stopped));
        subs.insert(channel.to_string(), Sub { stop, task, ready });
        drop(subs);
        match self.sync().await {
            Ok(()) => {
                let _ = ready_tx.send(true);
                Ok(())
            }
            Err(e) => {
                // Not left half made: the next subscriber tries again.
                if let Some(sub) = self.subs.lock().await.remove(channel) {
                    sub.task.abort();
                }
                Err(e)
            }
        }
    }

    async fn unsubscribe(self: &Arc<Self>, channel: &str) -> Result<(), EngineError> {
        let mut subs = self.subs.lock().await;
        // A subscriber came back meanwhile: the subscription stays.
        if self.handler.get().is_some_and(|h| h.has_subscribers(channel)) {
            return Ok(());
        }
        let Some(sub) = subs.remove(channel) else {
            return Ok(());
        };
        let (done, unsubscribed) = oneshot::channel();
        if sub.stop.send(done).is_ok() {
            let _ = unsubscribed.await;
        }
        sub.task.abort();
        Ok(())
    }
}

/// A channel's subscription: each message to the node's hub, until told to stop.
async fn read_channel(
    inner: std::sync::Weak<Inner>,
    channel: String,
    mut sub: async_nats::Subscriber,
    mut stop: oneshot::Receiver<oneshot::Sender<()>>,
) {
    loop {
        tokio::select! {
            done = &mut stop => {
                let _ = sub.unsubscribe().await;
                if let Ok(done) = done {
                    let _ = done.send(());
                }
                return;
            }
            m = sub.next() => {
                let Some(m) = m else { return };
                let Some(inner) = inner.upgrade() else { return };
                inner.deliver(&channel, &m);
            }
        }
    }
}

impl Inner {
    fn deliver(&self, channel: &str, m: &async_nats::Message) {
        let Some(h) = self.handler.get() else { return };
        if let Some(raw) = &self.cfg.raw_mode {
            // A wildcard subscription is told which channel each publication was for.
            let published = match m.subject.as_str() == self.subject(channel) {
                true => String::new(),
                false => m
                    .subject
                    .as_str()
                    .strip_prefix(raw.prefix.as_str())
                    .unwrap_or(m.subject.as_str())
                    .to_string(),
            };
            let p = Publication {
                data: m.payload.clone(),
                channel: published,
                ..Default::default()
            };
            return h.handle_publication(channel, &p);
        }
        let push = match Push::decode(m.payload.as_ref()) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(subject = m.subject.as_str(), "nats: undecodable message: {e}");
                return;
            }
        };
        if let Some(mut p) = push.r#pub {
            // A wildcard subscription is told which channel each publication was for.
            if push.channel != channel {
                p.channel = push.channel;
            }
            h.handle_publication(channel, &p);
        } else if let Some(Join { info: Some(info) }) = push.join {
            h.handle_join(&push.channel, &info);
        } else if let Some(Leave { info: Some(info) }) = push.leave {
            h.handle_leave(&push.channel, &info);
        }
    }
}

async fn read_control(inner: std::sync::Weak<Inner>, mut sub: async_nats::Subscriber) {
    while let Some(m) = sub.next().await {
        let Some(inner) = inner.upgrade() else { return };
        if let Some(h) = inner.control.get() {
            h.handle_control(&m.payload);
        }
    }
}

async fn read_sync(inner: std::sync::Weak<Inner>, mut sub: async_nats::Subscriber) {
    while let Some(m) = sub.next().await {
        let Some(inner) = inner.upgrade() else { return };
        let n = std::str::from_utf8(&m.payload).ok().and_then(|s| s.parse::<u64>().ok());
        if let Some(tx) = n.and_then(|n| lock(&inner.sync_waiting).remove(&n)) {
            let _ = tx.send(());
        }
    }
}

impl Broker for NatsBroker {
    fn set_handler(&self, handler: Arc<dyn BrokerHandler>) {
        let _ = self.inner.handler.set(handler);
    }

    /// Fans out only: nothing is kept, the position is always `(0, "")`.
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        publication: Publication,
        _opts: &'a PublishOptions,
    ) -> BoxFuture<'a, Result<StreamPosition, EngineError>> {
        Box::pin(async move {
            if self.inner.cfg.raw_mode.is_some() {
                if has_wildcards(channel) {
                    return Err(internal("publish", format!("{channel:?}: no wildcards in a published channel")));
                }
                self.inner
                    .publish_bytes(self.inner.subject(channel), publication.data.to_vec())
                    .await?;
                return Ok(StreamPosition::default());
            }
            let push = Push {
                channel: channel.to_string(),
                r#pub: Some(Publication { offset: 0, ..publication }),
                ..Default::default()
            };
            self.inner.publish_push(channel, push).await?;
            Ok(StreamPosition::default())
        })
    }

    fn publish_join<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            // Raw subjects carry publications' data only.
            if self.inner.cfg.raw_mode.is_some() {
                return Ok(());
            }
            let push = Push {
                channel: channel.to_string(),
                join: Some(Join { info: Some(info) }),
                ..Default::default()
            };
            self.inner.publish_push(channel, push).await
        })
    }

    fn publish_leave<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            if self.inner.cfg.raw_mode.is_some() {
                return Ok(());
            }
            let push = Push {
                channel: channel.to_string(),
                leave: Some(Leave { info: Some(info) }),
                ..Default::default()
            };
            self.inner.publish_push(channel, push).await
        })
    }

    /// Never reached through the node (namespaces with history are refused on this broker);
    /// an error rather than an empty stream, which a client would take for a real one.
    fn history<'a>(&'a self, _channel: &'a str, _query: HistoryQuery) -> BoxFuture<'a, Result<HistoryResult, EngineError>> {
        Box::pin(std::future::ready(Err(EngineError::Internal(
            "the NATS broker keeps no history".into(),
        ))))
    }

    fn remove_history<'a>(&'a self, _channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(std::future::ready(Err(EngineError::Internal(
            "the NATS broker keeps no history".into(),
        ))))
    }

    /// Connected, and a round trip through the server made (the control subscription in place).
    fn check(&self) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(self.inner.sync())
    }

    fn keeps_history(&self) -> bool {
        false
    }

    fn subscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(self.inner.subscribe(channel))
    }

    fn unsubscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(self.inner.unsubscribe(channel))
    }
}

impl NodeControl for NatsBroker {
    fn set_control_handler(&self, handler: Arc<dyn ControlHandler>) {
        let _ = self.inner.control.set(handler);
    }

    fn publish_control(&self, data: Vec<u8>) -> BoxFuture<'_, Result<(), EngineError>> {
        // Through the server before returning (control messages are few): messages sent
        // after this one, from any node, reach every node after it.
        Box::pin(async move {
            self.inner.publish_bytes(self.inner.control_subject(), data).await?;
            self.inner.sync().await
        })
    }
}
