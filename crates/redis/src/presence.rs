//! The presence half: who is in a channel, with expiry, and the reaping of a dead node's
//! entries by a survivor.

use std::collections::HashMap;
use std::time::Duration;

use prost::Message as _;
use wshub_core::engine::*;
use wshub_protocol::ClientInfo;

use crate::shard::Shard;
use crate::target::Conn;
use crate::{fnv1a, RedisEngine};

impl Shard {
    /// The four keys of a channel's presence, in the order the presence scripts take them.
    fn presence_keys(&self, inv: &mut redis::ScriptInvocation<'_>, channel: &str) {
        for kind in ["presence", "presence.exp", "presence.user", "presence.users"] {
            inv.key(self.key(kind, channel));
        }
    }

    /// The set listing this node's presence entries of `channel`, for survivors to reap
    /// (in a cluster, one set per slot: a script touches one slot).
    fn owned_key(&self, channel: &str) -> Option<String> {
        let uid = self.node_uid.get()?;
        Some(match self.target.is_cluster() {
            // Per channel slot (a script touches one slot); the slots used are listed in
            // `node_tags` for the reaper.
            true => format!("{}.node_presence.{{{:016x}}}.{uid}", self.cfg.prefix, fnv1a(channel)),
            false => self.key("node_presence", uid),
        })
    }

    /// In a cluster: records that this node has presence entries in `channel`'s slot
    /// (once per half `presence_ttl` per slot, not at every refresh).
    async fn note_presence_tag(&self, c: &mut Conn, channel: &str) -> Result<(), EngineError> {
        let (Some(uid), true) = (self.node_uid.get(), self.target.is_cluster()) else {
            return Ok(());
        };
        let tag = format!("{:016x}", fnv1a(channel));
        let ttl = self.cfg.presence_ttl.max(Duration::from_secs(1));
        {
            let mut noted = self.tags_noted.lock().unwrap_or_else(|e| e.into_inner());
            let now = std::time::Instant::now();
            if noted.get(&tag).is_some_and(|t| now.duration_since(*t) < ttl / 2) {
                return Ok(());
            }
            noted.insert(tag.clone(), now);
        }
        let key = format!("{}.node_tags.{uid}", self.cfg.prefix);
        redis::pipe()
            .cmd("SADD")
            .arg(&key)
            .arg(&tag)
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(ttl.as_secs() * 2)
            .ignore()
            .query_async::<()>(c)
            .await
            .map_err(|e| self.fail(e))
    }
}

impl PresenceManager for Shard {
    /// A join whose answer nobody needs (a refresh at every ping, say): one script for both.
    fn add_presence<'a>(&'a self, channel: &'a str, client: &'a str, info: ClientInfo) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move { self.join_presence(channel, client, info, 0).await.map(|_| ()) })
    }
    fn join_presence<'a>(
        &'a self,
        channel: &'a str,
        client: &'a str,
        info: ClientInfo,
        max_users: usize,
    ) -> BoxFuture<'a, Result<Joined, EngineError>> {
        Box::pin(async move {
            let mut c = self.conn().await?;
            let mut inv = self.scripts.presence_join.prepare_invoke();
            self.presence_keys(&mut inv, channel);
            if let Some(owned) = self.owned_key(channel) {
                inv.key(owned);
            }
            self.note_presence_tag(&mut c, channel).await?;
            let n: i64 = inv
                .arg(client)
                .arg(info.encode_to_vec())
                .arg(self.cfg.presence_ttl.as_secs().max(1))
                .arg(channel)
                .arg(&info.user)
                .arg(max_users)
                .invoke_async(&mut c)
                .await
                .map_err(|e| self.fail(e))?;
            Ok(match n {
                -1 => Joined::Full,
                0 => Joined::Again,
                1 => Joined::First,
                _ => Joined::Another,
            })
        })
    }
    fn leave_presence<'a>(&'a self, channel: &'a str, client: &'a str) -> BoxFuture<'a, Result<bool, EngineError>> {
        Box::pin(async move {
            let mut c = self.conn().await?;
            let mut inv = self.scripts.presence_leave.prepare_invoke();
            self.presence_keys(&mut inv, channel);
            if let Some(owned) = self.owned_key(channel) {
                inv.key(owned);
            }
            let left: i64 = inv.arg(client).arg(channel).invoke_async(&mut c).await.map_err(|e| self.fail(e))?;
            Ok(left == 0)
        })
    }
    fn remove_presence<'a>(&'a self, channel: &'a str, client: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move { self.leave_presence(channel, client).await.map(|_| ()) })
    }
    fn presence<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<HashMap<String, ClientInfo>, EngineError>> {
        Box::pin(async move {
            let mut c = self.conn().await?;
            let mut inv = self.scripts.presence_get.prepare_invoke();
            self.presence_keys(&mut inv, channel);
            let raw: HashMap<String, Vec<u8>> = inv.invoke_async(&mut c).await.map_err(|e| self.fail(e))?;
            let mut out = HashMap::with_capacity(raw.len());
            for (client, info) in raw {
                match ClientInfo::decode(info.as_slice()) {
                    Ok(i) => {
                        out.insert(client, i);
                    }
                    Err(_) => tracing::warn!(channel, client, "redis: undecodable presence entry"),
                }
            }
            Ok(out)
        })
    }
    fn presence_stats<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(u32, u32), EngineError>> {
        Box::pin(async move {
            let mut c = self.conn().await?;
            let mut inv = self.scripts.presence_stats.prepare_invoke();
            self.presence_keys(&mut inv, channel);
            let (clients, users): (u32, u32) = inv.invoke_async(&mut c).await.map_err(|e| self.fail(e))?;
            Ok((clients, users))
        })
    }
    fn set_node_uid(&self, uid: &str) {
        let _ = self.node_uid.set(uid.to_string());
    }
    fn reap_node<'a>(&'a self, uid: &'a str) -> BoxFuture<'a, Result<Vec<(String, ClientInfo)>, EngineError>> {
        Box::pin(async move {
            let mut c = self.conn().await?;
            // (owned set, tag): one for a single Redis; one per slot the node used in a cluster.
            let sets: Vec<(String, String)> = if self.target.is_cluster() {
                let index = format!("{}.node_tags.{uid}", self.cfg.prefix);
                let tags: Vec<String> = redis::cmd("SMEMBERS")
                    .arg(&index)
                    .query_async(&mut c)
                    .await
                    .map_err(|e| self.fail(e))?;
                tags.into_iter()
                    .map(|t| (format!("{}.node_presence.{{{t}}}.{uid}", self.cfg.prefix), t))
                    .collect()
            } else {
                vec![(self.key("node_presence", uid), String::new())]
            };
            let mut flat: Vec<Vec<u8>> = Vec::new();
            for (owned, tag) in &sets {
                let part: Vec<Vec<u8>> = self
                    .scripts
                    .presence_reap
                    .key(owned)
                    .arg(&self.cfg.prefix)
                    .arg(tag)
                    .invoke_async(&mut c)
                    .await
                    .map_err(|e| self.fail(e))?;
                flat.extend(part);
            }
            if self.target.is_cluster() {
                let index = format!("{}.node_tags.{uid}", self.cfg.prefix);
                redis::cmd("DEL")
                    .arg(index)
                    .query_async::<i64>(&mut c)
                    .await
                    .map_err(|e| self.fail(e))?;
            }
            let mut out = Vec::with_capacity(flat.len() / 2);
            for pair in flat.chunks_exact(2) {
                let (Ok(channel), Ok(info)) = (std::str::from_utf8(&pair[0]), ClientInfo::decode(&pair[1][..])) else {
                    tracing::warn!("redis: undecodable presence entry of a dead node");
                    continue;
                };
                out.push((channel.to_string(), info));
            }
            Ok(out)
        })
    }
}

impl PresenceManager for RedisEngine {
    fn add_presence<'a>(&'a self, channel: &'a str, client: &'a str, info: ClientInfo) -> BoxFuture<'a, Result<(), EngineError>> {
        self.shard(channel).add_presence(channel, client, info)
    }
    fn remove_presence<'a>(&'a self, channel: &'a str, client: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        self.shard(channel).remove_presence(channel, client)
    }
    fn join_presence<'a>(
        &'a self,
        channel: &'a str,
        client: &'a str,
        info: ClientInfo,
        max_users: usize,
    ) -> BoxFuture<'a, Result<Joined, EngineError>> {
        self.shard(channel).join_presence(channel, client, info, max_users)
    }
    fn leave_presence<'a>(&'a self, channel: &'a str, client: &'a str) -> BoxFuture<'a, Result<bool, EngineError>> {
        self.shard(channel).leave_presence(channel, client)
    }
    fn presence<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<HashMap<String, ClientInfo>, EngineError>> {
        self.shard(channel).presence(channel)
    }
    fn presence_stats<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(u32, u32), EngineError>> {
        self.shard(channel).presence_stats(channel)
    }
    fn set_node_uid(&self, uid: &str) {
        for s in &self.shards {
            s.set_node_uid(uid);
        }
    }
    /// Every shard holds the entries of the dead node's channels that hash to it: each is
    /// reaped; a shard that does not answer keeps its entries until they expire.
    fn reap_node<'a>(&'a self, uid: &'a str) -> BoxFuture<'a, Result<Vec<(String, ClientInfo)>, EngineError>> {
        Box::pin(async move {
            let results = futures_util::future::join_all(self.shards.iter().map(|s| s.reap_node(uid))).await;
            let mut out = Vec::new();
            let mut last_err = None;
            for r in results {
                match r {
                    Ok(v) => out.extend(v),
                    Err(e) => {
                        tracing::warn!(error = %e, "redis: a shard could not reap a dead node's presence");
                        last_err = Some(e);
                    }
                }
            }
            match last_err {
                Some(e) if out.is_empty() => Err(e),
                _ => Ok(out),
            }
        })
    }
}
