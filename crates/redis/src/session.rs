//! A connected pub/sub session of one shard: a single Redis's pub/sub connection, or a
//! Redis Cluster connection with sharded pub/sub (`SSUBSCRIBE`, RESP3 pushes), which holds a
//! connection to each master with subscriptions and subscribes again by itself after a
//! reconnection or a slot move. What the pub/sub loop needs of either: subscribe,
//! unsubscribe, the next message, and a canary ping through each master.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::health::Canary;
use crate::pubsub::Names;
use crate::target::Target;

pub(crate) enum Session {
    Single {
        sink: redis::aio::PubSubSink,
        stream: redis::aio::PubSubStream,
        /// A command connection to the same Redis, for the canary's pings.
        pinger: redis::aio::MultiplexedConnection,
    },
    Cluster {
        conn: redis::cluster_async::ClusterConnection,
        pushes: mpsc::UnboundedReceiver<redis::PushInfo>,
    },
}

pub(crate) enum Event {
    Message(Message),
    /// In a cluster: the connection to one master was lost (the client reconnects and
    /// subscribes again by itself).
    Disconnected,
    /// Anything else Redis pushes (subscription confirmations).
    Other,
    /// The session is over: reconnect.
    Closed,
}

/// A message as it arrived, read in place.
pub(crate) enum Message {
    Single(redis::Msg),
    Push(redis::PushInfo),
}

fn bytes(v: &redis::Value) -> Option<&[u8]> {
    match v {
        redis::Value::BulkString(b) => Some(b.as_slice()),
        _ => None,
    }
}

impl Message {
    /// The pub/sub channel name and the payload.
    pub fn parts(&self) -> Option<(&str, &[u8])> {
        match self {
            Message::Single(m) => Some((m.get_channel_name(), m.get_payload_bytes())),
            Message::Push(p) => match p.data.as_slice() {
                [channel, payload, ..] => Some((std::str::from_utf8(bytes(channel)?).ok()?, bytes(payload)?)),
                _ => None,
            },
        }
    }
}

impl Session {
    /// A session subscribed to the control channel, the canaries and every channel of
    /// `channels`, with its canaries: (pub/sub channel, the master it goes through).
    pub async fn connect(
        target: &Target,
        names: &Names,
        canary: &Canary,
        channels: &HashSet<String>,
    ) -> redis::RedisResult<(Session, Vec<(String, String)>)> {
        if target.is_cluster() {
            let (push_tx, pushes) = mpsc::unbounded_channel::<redis::PushInfo>();
            let mut conn = target.cluster_pubsub(push_tx).await?;
            target.name_connection(&mut conn).await?;
            let slots: redis::Value = redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut conn).await?;
            let canaries = canary_channels(&canary.channel, &masters_of(&slots));
            conn.ssubscribe(&names.control).await?;
            for (c, _) in &canaries {
                conn.ssubscribe(c).await?;
            }
            for ch in channels {
                conn.ssubscribe(names.client(ch)).await?;
            }
            return Ok((Session::Cluster { conn, pushes }, canaries));
        }
        let client = target.client().await?;
        let (mut sink, stream) = client.get_async_pubsub().await?.split();
        sink.subscribe(&names.control).await?;
        sink.subscribe(&canary.channel).await?;
        for ch in channels {
            sink.subscribe(names.client(ch)).await?;
        }
        let mut pinger = client
            .get_multiplexed_async_connection_with_config(&target.connection_config())
            .await?;
        target.name_connection(&mut pinger).await?;
        let canaries = vec![(canary.channel.clone(), canary.health.shard.clone())];
        Ok((Session::Single { sink, stream, pinger }, canaries))
    }

    pub async fn subscribe(&mut self, name: String) -> redis::RedisResult<()> {
        match self {
            Session::Single { sink, .. } => sink.subscribe(name).await,
            Session::Cluster { conn, .. } => conn.ssubscribe(name).await,
        }
    }

    pub async fn unsubscribe(&mut self, name: String) -> redis::RedisResult<()> {
        match self {
            Session::Single { sink, .. } => sink.unsubscribe(name).await,
            Session::Cluster { conn, .. } => conn.sunsubscribe(name).await,
        }
    }

    /// The next thing Redis sends (cancel-safe: for `select!`).
    pub async fn next(&mut self) -> Event {
        match self {
            Session::Single { stream, .. } => match stream.next().await {
                Some(m) => Event::Message(Message::Single(m)),
                None => Event::Closed,
            },
            Session::Cluster { pushes, .. } => match pushes.recv().await {
                None => Event::Closed,
                Some(p) if p.kind == redis::PushKind::Disconnection => Event::Disconnected,
                Some(p) if p.kind == redis::PushKind::SMessage => Event::Message(Message::Push(p)),
                Some(_) => Event::Other,
            },
        }
    }

    /// Publishes canary ping `n` on `channel` in a task of its own, bounded by `limit`.
    pub fn ping(&self, channel: String, n: u64, limit: Duration) {
        let (mut cmd, conn) = match self {
            Session::Single { pinger, .. } => (redis::cmd("PUBLISH"), Pinger::Single(pinger.clone())),
            Session::Cluster { conn, .. } => (redis::cmd("SPUBLISH"), Pinger::Cluster(conn.clone())),
        };
        cmd.arg(channel).arg(n);
        tokio::spawn(async move {
            let sent = match conn {
                Pinger::Single(mut c) => tokio::time::timeout(limit, cmd.query_async::<i64>(&mut c)).await,
                Pinger::Cluster(mut c) => tokio::time::timeout(limit, cmd.query_async::<i64>(&mut c)).await,
            };
            if let Ok(Err(e)) = sent {
                tracing::debug!(error = %e, "redis pub/sub: canary ping not sent");
            }
        });
    }
}

enum Pinger {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

/// The cluster slot of `key` (CRC16 of its hash tag or of the whole key, modulo 16384).
fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = match key.find('{') {
        Some(open) => match key[open + 1..].find('}') {
            Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
            _ => bytes,
        },
        None => bytes,
    };
    crc16::State::<crc16::XMODEM>::calculate(hashed) % 16384
}

/// `CLUSTER SLOTS`: each master's `host:port` and slot ranges.
fn masters_of(reply: &redis::Value) -> Vec<(String, Vec<(u16, u16)>)> {
    let mut out: Vec<(String, Vec<(u16, u16)>)> = Vec::new();
    let redis::Value::Array(ranges) = reply else { return out };
    for r in ranges {
        let redis::Value::Array(parts) = r else { continue };
        let (Some(redis::Value::Int(start)), Some(redis::Value::Int(end)), Some(redis::Value::Array(master))) =
            (parts.first(), parts.get(1), parts.get(2))
        else {
            continue;
        };
        let host = match master.first() {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            _ => continue,
        };
        let Some(redis::Value::Int(port)) = master.get(1) else { continue };
        let (Ok(start), Ok(end)) = (u16::try_from(*start), u16::try_from(*end)) else {
            continue;
        };
        let addr = format!("{host}:{port}");
        match out.iter_mut().find(|(a, _)| *a == addr) {
            Some((_, r)) => r.push((start, end)),
            None => out.push((addr, vec![(start, end)])),
        }
    }
    out
}

/// One canary channel per master: `{base}.{tag}` with a tag whose slot the master serves.
fn canary_channels(base: &str, masters: &[(String, Vec<(u16, u16)>)]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (addr, ranges) in masters {
        // 16384 slots, a few thousand tags tried at most: some land in any range.
        let found = (0..100_000u32).map(|i| format!("{base}.{{{i}}}")).find(|name| {
            let slot = key_slot(name);
            ranges.iter().any(|&(a, b)| (a..=b).contains(&slot))
        });
        if let Some(name) = found {
            out.push((name, addr.clone()));
        }
    }
    out
}
