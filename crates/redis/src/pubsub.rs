//! The pub/sub side of a shard: one task per shard subscribes to the channels that have
//! local subscribers, hands what arrives to the node, watches itself with a canary, and
//! after a lost connection reconnects (with backoff) and subscribes again to all of them.
//! One loop for a single Redis (Sentinel included) and for a Redis Cluster: what differs
//! (plain or sharded pub/sub, one canary or one per master) lives in [`Session`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prost::Message as _;
use tokio::sync::{mpsc, oneshot};
use wshub_core::cluster::ControlHandler;
use wshub_core::engine::{BrokerHandler, EngineError};
use wshub_protocol::{ClientInfo, Publication};

use crate::compression;
use crate::health::Canary;
use crate::session::{Event, Session};
use crate::shard::{internal, lock, Epochs};
use crate::target::Resolver;

pub(crate) enum PubSubCmd {
    Subscribe(String, oneshot::Sender<Result<(), EngineError>>),
    /// Answered once Redis has confirmed it (or nothing was to be done): after that, no
    /// publication of the channel reaches this node.
    Unsubscribe(String, oneshot::Sender<()>),
}

/// The pub/sub channel names of one shard.
pub(crate) struct Names {
    pub prefix: String,
    /// In a cluster, a channel's name carries the hash tag of its keys (one slot).
    pub cluster: bool,
    /// The node control channel, always subscribed.
    pub control: String,
}

impl Names {
    /// The pub/sub channel of `channel`: `{prefix}.client.{channel}`, in a cluster
    /// `{prefix}.client.{tag}.{channel}` (see [`crate::shard::key`]).
    pub fn client(&self, channel: &str) -> String {
        crate::shard::key(&self.prefix, self.cluster, "client", channel)
    }

    /// The channel a pub/sub channel name carries, if it is one of [`Names::client`]'s.
    pub fn channel_of<'a>(&self, name: &'a str) -> Option<&'a str> {
        let rest = name.strip_prefix(self.prefix.as_str())?.strip_prefix(".client.")?;
        match self.cluster {
            true => rest.strip_prefix('{')?.split_once("}.").map(|(_, ch)| ch),
            false => Some(rest),
        }
    }
}

pub(crate) struct Handlers {
    pub broker: Arc<dyn BrokerHandler>,
    pub control: Arc<OnceLock<Arc<dyn ControlHandler>>>,
}

/// Tells the node that the live stream of every subscribed channel may have lost
/// publications: its positioned subscribers are closed with 3010 and recover from history
/// (on this node once pub/sub is back, or on another). Again at every failed reconnect:
/// a subscriber that joined a channel the node already had meanwhile is told too.
fn report_down(canary: &Canary, handler: &dyn BrokerHandler, channels: &HashSet<String>, why: &str) {
    canary.health.set_down(why);
    for ch in channels {
        handler.handle_reset(ch);
    }
}

/// The pub/sub task of one shard. Its canary checks that it delivers: one ping per master
/// (one for a single Redis), each through the connection to that master, outstanding until
/// it comes back; pub/sub is up when none is late.
pub(crate) async fn run(
    target: Arc<Resolver>,
    mut names: Names,
    handlers: Handlers,
    canary: Canary,
    epochs: Epochs,
    mut rx: mpsc::UnboundedReceiver<PubSubCmd>,
) {
    let handler = handlers.broker;
    let mut channels: HashSet<String> = HashSet::new();
    let mut delay = Duration::from_millis(100);
    let mut seq: u64 = 0;
    loop {
        channels.retain(|ch| {
            let keep = handler.has_subscribers(ch);
            if !keep {
                lock(&epochs).remove(ch);
            }
            keep
        });
        let connect = async {
            let t = target.get().await?;
            names.cluster = t.is_cluster();
            Session::connect(t, &names, &canary, &channels).await
        };
        let connected = tokio::time::timeout(canary.call_timeout(), connect)
            .await
            .unwrap_or_else(|_| Err(redis::RedisError::from((redis::ErrorKind::Io, "pub/sub connect timed out"))));
        let (mut session, canaries) = match connected {
            Ok(c) => {
                canary.health.set_connected();
                c
            }
            Err(e) => {
                tracing::warn!(error = %e, shard = %canary.health.shard, "redis pub/sub: cannot connect, retrying");
                pub_sub_error("connect");
                report_down(&canary, handler.as_ref(), &channels, &format!("cannot connect: {e}"));
                // Subscribes asked for meanwhile fail now rather than wait.
                let deadline = tokio::time::Instant::now() + delay;
                loop {
                    tokio::select! {
                        cmd = rx.recv() => match cmd {
                            None => return,
                            Some(PubSubCmd::Subscribe(ch, done)) => {
                                // Failed, but kept for the reconnect: another subscriber may still
                                // be in the hub's channel (each is told of its own failure and
                                // leaves); the reconnect drops it if none is.
                                lock(&epochs).entry(ch.clone()).or_default();
                                channels.insert(ch);
                                let _ = done.send(Err(EngineError::Internal(format!("redis pub/sub: {e}"))));
                            }
                            Some(PubSubCmd::Unsubscribe(ch, done)) => {
                                // Not connected: nothing arrives, and the reconnect will not resubscribe.
                                leave(handler.as_ref(), &mut channels, &epochs, &ch);
                                let _ = done.send(());
                            }
                        },
                        _ = tokio::time::sleep_until(deadline) => break,
                    }
                }
                delay = (delay * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        if canary.health.down_reason().is_some() {
            // Subscribers that joined while pub/sub was down recovered from history without
            // a live stream: told now, they recover again, with it.
            for ch in &channels {
                handler.handle_reset(ch);
            }
        }
        if !channels.is_empty() {
            tracing::info!(channels = channels.len(), "redis pub/sub: reconnected and resubscribed");
        }
        delay = Duration::from_millis(100);
        // The first tick is at once: a new connection proves itself before it counts as up.
        let mut tick = tokio::time::interval(canary.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut outstanding: HashMap<String, (u64, tokio::time::Instant)> = HashMap::new();
        let mut back: HashSet<String> = HashSet::new();
        // In a cluster, after a shard's connection was lost and until a canary came back
        // through every master: redis-rs subscribes again in the background, so a channel held
        // here may not deliver yet, and a new subscriber of it subscribes itself.
        let mut resubscribing = false;
        let why = loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    None => return,
                    // Another local subscriber's subscribe has been confirmed: this one's
                    // publications arrive too.
                    Some(PubSubCmd::Subscribe(ch, done)) if channels.contains(&ch) && !resubscribing => {
                        let _ = done.send(Ok(()));
                    }
                    Some(PubSubCmd::Subscribe(ch, done)) => {
                        match tokio::time::timeout(canary.call_timeout(), session.subscribe(names.client(&ch))).await {
                            Ok(Ok(())) => {
                                lock(&epochs).entry(ch.clone()).or_default();
                                channels.insert(ch);
                                let _ = done.send(Ok(()));
                            }
                            Ok(Err(e)) => {
                                pub_sub_error("subscribe_channel");
                                let _ = done.send(Err(internal(e)));
                            }
                            Err(_) => {
                                pub_sub_error("subscribe_channel");
                                let _ = done.send(Err(EngineError::Internal("redis pub/sub: subscribe timed out".into())));
                                break "subscribe not confirmed in time".to_string();
                            }
                        }
                    }
                    Some(PubSubCmd::Unsubscribe(ch, done)) => {
                        if leave(handler.as_ref(), &mut channels, &epochs, &ch) {
                            match tokio::time::timeout(canary.call_timeout(), session.unsubscribe(names.client(&ch))).await {
                                Ok(Ok(())) => {}
                                Ok(Err(e)) => tracing::debug!(error = %e, "redis pub/sub: unsubscribe failed"),
                                Err(_) => {
                                    // Dropping the connection ends the subscription for sure.
                                    let _ = done.send(());
                                    break "unsubscribe not confirmed in time".to_string();
                                }
                            }
                        }
                        let _ = done.send(());
                    }
                },
                _ = tick.tick() => {
                    let late = outstanding.iter().find(|(_, (_, sent))| sent.elapsed() >= canary.interval);
                    if let Some((chan, (n, _))) = late {
                        let master = canaries.iter().find(|(c, _)| c == chan).map_or("?", |(_, m)| m.as_str());
                        metrics::counter!("wshub_redis_pubsub_canary_missed_total", "shard" => canary.health.shard.clone()).increment(1);
                        pub_sub_error("probe_timeout");
                        break format!("canary ping {n} through {master} not back within {:?}", canary.interval);
                    }
                    for (chan, _) in &canaries {
                        if outstanding.contains_key(chan) {
                            continue;
                        }
                        seq += 1;
                        outstanding.insert(chan.clone(), (seq, tokio::time::Instant::now()));
                        // Not awaited here: a command that hangs must not stall the watch.
                        session.ping(chan.clone(), seq, canary.interval);
                    }
                },
                event = session.next() => match event {
                    Event::Closed => {
                        pub_sub_error("connection");
                        break "connection lost".to_string();
                    }
                    Event::Disconnected => {
                        // The cluster client reconnects and subscribes again by itself; what
                        // was published meanwhile did not arrive.
                        tracing::warn!(shard = %canary.health.shard, "redis cluster pub/sub: a shard's connection was lost");
                        pub_sub_error("connection");
                        resubscribing = true;
                        back.clear();
                        for ch in &channels {
                            handler.handle_reset(ch);
                        }
                    }
                    Event::Other => {}
                    Event::Message(m) => {
                        let Some((name, payload)) = m.parts() else { continue };
                        if name == names.control {
                            if let Some(h) = handlers.control.get() {
                                h.handle_control(payload);
                            }
                        } else if let Some((n, _)) = outstanding.get(name) {
                            let got = std::str::from_utf8(payload).ok().and_then(|s| s.parse::<u64>().ok());
                            if got == Some(*n) {
                                outstanding.remove(name);
                                back.insert(name.to_string());
                                if outstanding.is_empty() && back.len() == canaries.len() {
                                    canary.health.set_up();
                                    resubscribing = false;
                                }
                            }
                        } else if let Some(ch) = names.channel_of(name) {
                            dispatch(handler.as_ref(), &epochs, ch, payload);
                        }
                    }
                },
            }
        };
        tracing::warn!(shard = %canary.health.shard, why, "redis pub/sub: reconnecting");
        report_down(&canary, handler.as_ref(), &channels, &why);
    }
}

/// Centrifugo's `broker_redis_pub_sub_errors{broker_name,error}` (`broker_name` empty, as
/// Centrifugo's default broker has no name): `connect`, `connection` (lost),
/// `subscribe_channel`, `probe_timeout` (the canary did not come back), `handle_message`
/// (undecodable). wshub never drops a message on the way to the hub (a full delivery queue
/// makes this reader deliver itself), so `broker_redis_pub_sub_dropped_messages` stays 0.
pub(crate) fn pub_sub_error(error: &'static str) {
    metrics::counter!("centrifugo_broker_redis_pub_sub_errors", "broker_name" => "", "error" => error).increment(1);
}

/// Forgets `channel` unless a subscriber came back since the unsubscribe was asked; true
/// when Redis should be told.
fn leave(handler: &dyn BrokerHandler, channels: &mut HashSet<String>, epochs: &Epochs, channel: &str) -> bool {
    if handler.has_subscribers(channel) {
        return false;
    }
    lock(epochs).remove(channel);
    channels.remove(channel)
}

/// One pub/sub message: `p{offset}:{epoch}:{publication}` (`c…` when compressed), `j{info}` or `l{info}`.
pub(crate) fn dispatch(handler: &dyn BrokerHandler, epochs: &Epochs, channel: &str, payload: &[u8]) {
    match payload.split_first() {
        Some((kind @ (b'p' | b'c'), rest)) => {
            let mut parts = rest.splitn(3, |&b| b == b':');
            let (Some(offset), Some(epoch), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
                pub_sub_error("handle_message");
                return tracing::warn!(channel, "redis pub/sub: undecodable publication");
            };
            let offset = std::str::from_utf8(offset).ok().and_then(|s| s.parse::<u64>().ok());
            let body = match kind {
                b'c' => match compression::decompress(body) {
                    Ok(b) => std::borrow::Cow::Owned(b),
                    Err(e) => {
                        pub_sub_error("handle_message");
                        return tracing::warn!(channel, error = %e, "redis pub/sub: undecodable compressed publication");
                    }
                },
                _ => std::borrow::Cow::Borrowed(body),
            };
            let (Some(offset), Ok(epoch), Ok(mut p)) = (offset, std::str::from_utf8(epoch), Publication::decode(body.as_ref())) else {
                pub_sub_error("handle_message");
                return tracing::warn!(channel, "redis pub/sub: undecodable publication");
            };
            if !epoch.is_empty() {
                let reset = match lock(epochs).get_mut(channel) {
                    Some(known) if known.as_str() != epoch => {
                        let was_known = !known.is_empty();
                        *known = epoch.to_string();
                        was_known
                    }
                    _ => false,
                };
                if reset {
                    tracing::warn!(channel, epoch, "stream restarted under a new epoch");
                    handler.handle_reset(channel);
                }
            }
            p.offset = offset;
            handler.handle_publication(channel, &p);
        }
        Some((kind @ (b'j' | b'l'), rest)) => match ClientInfo::decode(rest) {
            Ok(info) if *kind == b'j' => handler.handle_join(channel, &info),
            Ok(info) => handler.handle_leave(channel, &info),
            Err(_) => {
                pub_sub_error("handle_message");
                tracing::warn!(channel, "redis pub/sub: undecodable join/leave")
            }
        },
        _ => tracing::warn!(channel, "redis pub/sub: unknown message"),
    }
}
