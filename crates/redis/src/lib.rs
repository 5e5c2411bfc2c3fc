//! The Redis engine: the [`Engine`] traits over Redis, so that several wshub nodes behind a
//! load balancer share channels, history and presence, and history outlives a node restart.
//!
//! Keys (under `prefix`, `wshub` by default), per channel `ch`:
//! - `{prefix}.stream.{ch}`: a Redis stream, one entry per kept publication, its ID
//!   `{offset}-1`, its field `d` the Protobuf-encoded publication (or `c`, the same compressed: see [`compression`]). Trimmed to `history_size`
//!   and expiring `history_ttl` after the last publication (as Centrifugo's Redis engine).
//! - `{prefix}.meta.{ch}`: a hash with the stream's epoch `e` and top offset `s`; it
//!   outlives the stream (`META_TTL`) so that offsets keep growing under one epoch.
//! - `{prefix}.presence.{ch}` and `{prefix}.presence.exp.{ch}`: client id → Protobuf
//!   `ClientInfo`, and client id → expiry (Redis server time), pruned on every read.
//! - `{prefix}.client.{ch}`: the pub/sub channel every node with subscribers listens to.
//!
//! Publishing appends to the stream and publishes in one Lua script, so offsets are
//! assigned atomically across nodes and each node receives a channel's publications in
//! offset order on its one pub/sub connection. Each message carries the stream's epoch: a
//! node that sees it change (Redis lost its data) tells its hub, which closes the channel's
//! positioned subscribers so that they learn they cannot recover.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};
use wshub_core::cluster::{ControlHandler, NodeControl};
use wshub_core::engine::*;
use wshub_protocol::{ClientInfo, Publication};

/// How long a channel's epoch and top offset are kept after its last publication.
const META_TTL_SECS: u64 = 30 * 24 * 3600;

/// `history_meta_ttl` in whole seconds (zero: the default), at least one.
fn meta_ttl_secs(ttl: std::time::Duration) -> u64 {
    match ttl.as_secs() {
        0 => META_TTL_SECS,
        s => s,
    }
}

/// Redis engine settings.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://host:port/db` (or `rediss://`, `redis+unix://`).
    pub address: String,
    pub prefix: String,
    /// A presence entry not refreshed within this time is gone (a dead node's clients).
    pub presence_ttl: Duration,
    /// How often the node publishes a ping to itself through its pub/sub connection; a ping
    /// not back within this time marks the pub/sub as down (see [`RedisEngine::check`]).
    pub canary_interval: Duration,
    /// Redis behind Sentinel: `address` is then unused; the master is asked of the
    /// sentinels at every (re)connection, so that a failover is followed.
    pub sentinel: Option<SentinelConfig>,
    /// Redis Cluster seed nodes (`redis://host:port`): when not empty, `address` and
    /// `sentinel` are unused, every key of a channel carries one hash tag (one slot per
    /// channel) and pub/sub is sharded (`SSUBSCRIBE`/`SPUBLISH`).
    pub cluster: Vec<String>,
    /// Codec for publication bodies of at least `compression_min_size` bytes, in history
    /// and pub/sub (`engine.redis.compression`).
    pub compression: Compression,
    pub compression_min_size: usize,
}

/// Where the sentinels are and which master they watch (Centrifugo's
/// `engine.redis.sentinel_address`, `sentinel_master_name`, `sentinel_password`).
#[derive(Debug, Clone, Default)]
pub struct SentinelConfig {
    /// `host:port` (or `redis://host:port`) of each sentinel.
    pub addresses: Vec<String>,
    pub master_name: String,
    /// The sentinels' password (empty: none).
    pub password: String,
    /// The master's password (empty: none).
    pub master_password: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            address: "redis://127.0.0.1:6379".into(),
            prefix: "wshub".into(),
            presence_ttl: Duration::from_secs(60),
            canary_interval: DEFAULT_CANARY_INTERVAL,
            sentinel: None,
            cluster: Vec::new(),
            compression: Compression::None,
            compression_min_size: DEFAULT_COMPRESSION_MIN_SIZE,
        }
    }
}

/// `engine.redis.compression_min_size` by default: below it, compression saves little
/// (see BENCHMARKS.md).
pub const DEFAULT_COMPRESSION_MIN_SIZE: usize = 1024;

/// `engine.redis.canary_interval` by default.
pub const DEFAULT_CANARY_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum RedisEngineError {
    #[error("engine.redis.address: {0}")]
    Address(String),
    #[error("engine.redis.sentinel_address: {0}")]
    Sentinel(String),
    #[error("engine.redis.cluster_address: {0}")]
    Cluster(String),
}

const PUBLISH: &str = r#"
local stream, meta, chan, once = KEYS[1], KEYS[2], KEYS[3], KEYS[4] or ''
local payload, size, ttl, epoch, meta_ttl, once_ttl, field, pubcmd = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[7], ARGV[8]
if once ~= '' then
  local first = redis.call('hmget', once, 'o', 'e')
  if first[1] then return {tonumber(first[1]), first[2]} end
end
local offset = 0
if size > 0 then
  if redis.call('hsetnx', meta, 'e', epoch) == 0 then
    epoch = redis.call('hget', meta, 'e')
  end
  offset = redis.call('hincrby', meta, 's', 1)
  redis.call('xadd', stream, 'MAXLEN', size, offset .. '-1', field, payload)
  redis.call('expire', stream, ttl)
  redis.call('expire', meta, meta_ttl)
else
  epoch = ''
end
local tag = 'p'
if field == 'c' then tag = 'c' end
redis.call(pubcmd, chan, tag .. offset .. ':' .. epoch .. ':' .. payload)
if once ~= '' then
  redis.call('hset', once, 'o', offset, 'e', epoch)
  redis.call('expire', once, once_ttl)
end
return {offset, epoch}
"#;

const HISTORY: &str = r#"
local stream, meta = KEYS[1], KEYS[2]
local epoch, from, limit, reverse, meta_ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1', ARGV[5]
if redis.call('hsetnx', meta, 'e', epoch) == 0 then
  epoch = redis.call('hget', meta, 'e')
end
-- A read keeps the position alive, as a publication does (history_meta_ttl).
redis.call('expire', meta, meta_ttl)
local top = redis.call('hget', meta, 's') or '0'
local ids, fields, payloads = {}, {}, {}
if limit ~= 0 then
  local entries
  local count = {}
  if limit > 0 then count = {'COUNT', limit} end
  if reverse then
    entries = redis.call('xrevrange', stream, '+', from, unpack(count))
  else
    entries = redis.call('xrange', stream, from, '+', unpack(count))
  end
  for i, e in ipairs(entries) do
    ids[i] = e[1]
    fields[i] = e[2][1]
    payloads[i] = e[2][2]
  end
end
return {epoch, top, ids, fields, payloads}
"#;

/// Presence of a channel lives in four keys: `presence` (client -> info), `presence.exp`
/// (client by expiry time), `presence.user` (client -> user) and `presence.users` (user ->
/// number of its clients), so that `presence_stats` is two `HLEN`s rather than the whole
/// map. Every script removes an entry through `drop_client`, which keeps the counts.
const PRESENCE_LIB: &str = r#"
local function drop_client(h, z, u, c, client)
  if redis.call('hdel', h, client) == 1 then
    local user = redis.call('hget', u, client)
    redis.call('hdel', u, client)
    if user and redis.call('hincrby', c, user, -1) <= 0 then redis.call('hdel', c, user) end
  end
  redis.call('zrem', z, client)
end
local function clean(h, z, u, c)
  local now = tonumber(redis.call('time')[1])
  for _, client in ipairs(redis.call('zrangebyscore', z, '-inf', now)) do drop_client(h, z, u, c, client) end
end
"#;

const PRESENCE_ADD: &str = r#"
local h, z, u, c, owned = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5] or ''
local client, info, ttl, channel, user = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local now = tonumber(redis.call('time')[1])
redis.call('zadd', z, now + ttl, client)
if redis.call('hset', h, client, info) == 1 then
  redis.call('hset', u, client, user)
  redis.call('hincrby', c, user, 1)
end
for _, k in ipairs({h, z, u, c}) do redis.call('expire', k, ttl) end
if owned ~= '' then
  redis.call('sadd', owned, channel .. '\n' .. client)
  redis.call('expire', owned, ttl * 2)
end
"#;

const PRESENCE_REMOVE: &str = r#"
drop_client(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1])
if KEYS[5] then redis.call('srem', KEYS[5], ARGV[2] .. '\n' .. ARGV[1]) end
"#;

const PRESENCE_GET: &str = r#"
clean(KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return redis.call('hgetall', KEYS[1])
"#;

const PRESENCE_STATS: &str = r#"
clean(KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return {redis.call('hlen', KEYS[1]), redis.call('hlen', KEYS[4])}
"#;

/// Takes a dead node's presence entries (the ones its sessions added, listed in its
/// `node_presence` set) out of every channel, and returns them as channel, info pairs so
/// that a survivor can push their leaves. Atomic: of several survivors, one gets them.
const PRESENCE_REAP: &str = r#"
local owned, prefix, tag = KEYS[1], ARGV[1], ARGV[2]
local out = {}
for _, m in ipairs(redis.call('smembers', owned)) do
  local nl = string.find(m, '\n', 1, true)
  if nl then
    local channel, client = string.sub(m, 1, nl - 1), string.sub(m, nl + 1)
    -- The keys of `Shard::key`: in a cluster with the channel's hash tag (the owned set's own).
    local function k(kind)
      if tag == '' then return prefix .. '.' .. kind .. '.' .. channel end
      return prefix .. '.' .. kind .. '.{' .. tag .. '}.' .. channel
    end
    local info = redis.call('hget', k('presence'), client)
    if info then
      drop_client(k('presence'), k('presence.exp'), k('presence.user'), k('presence.users'), client)
      out[#out + 1] = channel
      out[#out + 1] = info
    end
  end
end
redis.call('del', owned)
return out
"#;

/// A presence script with the shared functions in front.
fn presence_script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{PRESENCE_LIB}{body}"))
}

/// How the engine finds its Redis: one address, or the current master of a Sentinel group.
#[derive(Clone)]
enum Target {
    Single(redis::Client),
    Sentinel(Arc<tokio::sync::Mutex<redis::sentinel::SentinelClient>>),
    /// The seed nodes (the pub/sub connection builds a client of its own, with a push
    /// channel) and the command client.
    Cluster(Arc<Vec<String>>, Arc<redis::cluster::ClusterClient>),
}

impl Target {
    fn new(cfg: &RedisConfig) -> Result<Self, RedisEngineError> {
        if !cfg.cluster.is_empty() {
            let client = redis::cluster::ClusterClientBuilder::new(cfg.cluster.iter().map(String::as_str))
                .build()
                .map_err(|e| RedisEngineError::Cluster(e.to_string()))?;
            return Ok(Target::Cluster(Arc::new(cfg.cluster.clone()), Arc::new(client)));
        }
        let Some(s) = &cfg.sentinel else {
            let client = redis::Client::open(cfg.address.as_str()).map_err(|e| RedisEngineError::Address(e.to_string()))?;
            return Ok(Target::Single(client));
        };
        let bad = |why: String| RedisEngineError::Sentinel(why);
        if s.master_name.is_empty() {
            return Err(bad("sentinel_master_name must be set with sentinel_address".into()));
        }
        let mut addrs = Vec::with_capacity(s.addresses.len());
        for a in &s.addresses {
            let hp = a.strip_prefix("redis://").unwrap_or(a).trim_end_matches('/');
            let parsed = hp.rsplit_once(':').and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)));
            let (host, port) = parsed.ok_or_else(|| bad(format!("{a:?} is not host:port")))?;
            addrs.push(redis::ConnectionAddr::Tcp(host, port));
        }
        if addrs.is_empty() {
            return Err(bad("no sentinel address".into()));
        }
        let mut b = redis::sentinel::SentinelClientBuilder::new(addrs, &s.master_name, redis::sentinel::SentinelServerType::Master)
            .map_err(|e| bad(e.to_string()))?;
        if !s.password.is_empty() {
            b = b.set_client_to_sentinel_password(&s.password);
        }
        if !s.master_password.is_empty() {
            b = b.set_client_to_redis_password(&s.master_password);
        }
        let client = b.build().map_err(|e| bad(e.to_string()))?;
        Ok(Target::Sentinel(Arc::new(tokio::sync::Mutex::new(client))))
    }

    /// A client for the Redis to use now (for Sentinel: the master the sentinels name,
    /// which confirmed its role).
    async fn client(&self) -> redis::RedisResult<redis::Client> {
        match self {
            Target::Single(c) => Ok(c.clone()),
            Target::Sentinel(s) => s.lock().await.async_get_client().await,
            Target::Cluster(..) => Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "a cluster has no one client",
            ))),
        }
    }

    /// A command connection.
    async fn connect(&self) -> redis::RedisResult<Conn> {
        if let Target::Cluster(_, c) = self {
            return Ok(Conn::Cluster(c.get_async_connection().await?));
        }
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            // Few retries per attempt: a call fails fast while Redis is away (the next call
            // tries again), and a wrong address fails the start within seconds.
            .set_number_of_retries(2);
        Ok(Conn::Single(
            redis::aio::ConnectionManager::new_with_config(self.client().await?, cfg).await?,
        ))
    }

    fn is_cluster(&self) -> bool {
        matches!(self, Target::Cluster(..))
    }

    fn name(cfg: &RedisConfig) -> String {
        if let Some(first) = cfg.cluster.first() {
            return format!("cluster {}", shard_name(first));
        }
        match &cfg.sentinel {
            Some(s) => format!("sentinel {}", s.master_name),
            None => shard_name(&cfg.address),
        }
    }
}

/// A command connection: to one Redis (reconnecting by itself) or to a cluster (routing
/// by key, following MOVED/ASK and topology changes).
#[derive(Clone)]
enum Conn {
    Single(redis::aio::ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }
    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }
    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

type Epochs = Arc<std::sync::Mutex<HashMap<String, String>>>;

enum PubSubCmd {
    Subscribe(String, oneshot::Sender<Result<(), EngineError>>),
    /// Answered once Redis has confirmed it (or nothing was to be done): after that, no
    /// publication of the channel reaches this node.
    Unsubscribe(String, oneshot::Sender<()>),
}

/// One Redis (or one Sentinel group): the channels that hash to it, their history and
/// presence, and a pub/sub connection with its canary.
struct Shard {
    target: Target,
    cfg: RedisConfig,
    /// The command connection; with Sentinel, dropped when it fails so that the next call
    /// asks the sentinels for the master again.
    conn: std::sync::RwLock<Option<Conn>>,
    conn_init: tokio::sync::Mutex<()>,
    handler: OnceLock<Arc<dyn BrokerHandler>>,
    /// Node control messages (`{prefix}.control`): shared with the pub/sub task.
    control: Arc<OnceLock<Arc<dyn ControlHandler>>>,
    pubsub: OnceLock<mpsc::UnboundedSender<PubSubCmd>>,
    /// Channels subscribed here -> the epoch last seen for them (from pub/sub messages and
    /// history reads; empty while unknown).
    epochs: Epochs,
    publish: redis::Script,
    history: redis::Script,
    presence_add: redis::Script,
    presence_remove: redis::Script,
    presence_get: redis::Script,
    presence_stats: redis::Script,
    presence_reap: redis::Script,
    /// This node's uid: the presence entries its sessions add are listed under it, for the
    /// survivors to take out (with leaves) if it dies.
    node_uid: OnceLock<String>,
    /// Whether the pub/sub connection delivers, as its canary sees it.
    health: Arc<PubSubHealth>,
    /// In a cluster: the slots (hash tags) this node recorded presence in, and when.
    tags_noted: std::sync::Mutex<HashMap<String, std::time::Instant>>,
}

fn internal(e: redis::RedisError) -> EngineError {
    EngineError::Internal(format!("redis: {e}"))
}

fn new_epoch() -> String {
    let n: u32 = rand::random();
    format!("{n:08x}")
}

impl Shard {
    /// Checks the address; connections are made on first use (and remade when lost).
    fn new(cfg: RedisConfig) -> Result<Self, RedisEngineError> {
        Ok(Shard {
            target: Target::new(&cfg)?,
            conn: std::sync::RwLock::new(None),
            conn_init: tokio::sync::Mutex::new(()),
            handler: OnceLock::new(),
            control: Arc::default(),
            pubsub: OnceLock::new(),
            epochs: Epochs::default(),
            publish: redis::Script::new(PUBLISH),
            history: redis::Script::new(HISTORY),
            presence_add: presence_script(PRESENCE_ADD),
            presence_remove: presence_script(PRESENCE_REMOVE),
            presence_get: presence_script(PRESENCE_GET),
            presence_stats: presence_script(PRESENCE_STATS),
            presence_reap: presence_script(PRESENCE_REAP),
            node_uid: OnceLock::new(),
            health: Arc::new(PubSubHealth::new(Target::name(&cfg))),
            tags_noted: std::sync::Mutex::new(HashMap::new()),
            cfg,
        })
    }

    /// The four keys of a channel's presence, in the order the presence scripts take them.
    fn presence_keys(&self, inv: &mut redis::ScriptInvocation<'_>, channel: &str) {
        for kind in ["presence", "presence.exp", "presence.user", "presence.users"] {
            inv.key(self.key(kind, channel));
        }
    }

    fn control_channel(&self) -> String {
        format!("{}.control", self.cfg.prefix)
    }

    fn key(&self, kind: &str, channel: &str) -> String {
        if self.target.is_cluster() {
            // One hash tag per channel: every key of it (and its pub/sub channel) in one
            // slot, so that each script touches one slot. The tag is a hash of the name, as
            // a name may hold braces of its own.
            format!("{}.{kind}.{{{:016x}}}.{channel}", self.cfg.prefix, fnv1a(channel))
        } else {
            format!("{}.{kind}.{channel}", self.cfg.prefix)
        }
    }

    async fn conn(&self) -> Result<Conn, EngineError> {
        if let Some(c) = self.conn.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
            return Ok(c.clone());
        }
        // One connection attempt at a time; the others wait for it.
        let _turn = self.conn_init.lock().await;
        if let Some(c) = self.conn.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
            return Ok(c.clone());
        }
        let c = self.target.connect().await.map_err(internal)?;
        *self.conn.write().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
        Ok(c)
    }

    /// `PUBLISH`, or `SPUBLISH` in a cluster (sharded pub/sub: the message goes to the
    /// channel's shard only, not to every node of the cluster).
    fn publish_command(&self) -> &'static str {
        if self.target.is_cluster() {
            "spublish"
        } else {
            "publish"
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

    /// The engine error for `e`; with Sentinel, an error that says the master is gone or no
    /// longer master (`READONLY`: it came back as a replica) drops the connection, so that
    /// the next call follows the failover.
    fn fail(&self, e: redis::RedisError) -> EngineError {
        let moved =
            e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() || e.code() == Some("READONLY");
        if moved && matches!(self.target, Target::Sentinel(_)) {
            *self.conn.write().unwrap_or_else(|e| e.into_inner()) = None;
        }
        internal(e)
    }

    /// Whether Redis answers (for readiness).
    pub async fn ping(&self) -> Result<(), EngineError> {
        let mut c = self.conn().await?;
        redis::cmd("PING").query_async::<String>(&mut c).await.map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// Whether Redis answers commands and the pub/sub connection delivers (its canary came
    /// back): the node is ready only with both. The error names the shard.
    pub async fn check_all(&self) -> Result<(), EngineError> {
        self.ping()
            .await
            .map_err(|e| EngineError::Internal(format!("redis {}: {e}", self.health.shard)))?;
        // Starts the pub/sub connection if nothing has yet, and waits for its first
        // subscription: a node is not ready before it hears the control channel.
        self.pubsub()?;
        if !self.health.wait_connected(canary_call_timeout(self.canary_interval()) * 2).await {
            return Err(EngineError::Internal(format!(
                "redis {}: pub/sub not connected yet",
                self.health.shard
            )));
        }
        match self.health.down_reason() {
            Some(why) => Err(EngineError::Internal(format!("redis {}: pub/sub {why}", self.health.shard))),
            None => Ok(()),
        }
    }

    fn canary_interval(&self) -> Duration {
        self.cfg.canary_interval.max(Duration::from_millis(50))
    }

    fn pubsub(&self) -> Result<&mpsc::UnboundedSender<PubSubCmd>, EngineError> {
        if let Some(tx) = self.pubsub.get() {
            return Ok(tx);
        }
        let handler = self
            .handler
            .get()
            .cloned()
            .ok_or_else(|| EngineError::Internal("engine used before set_handler".into()))?;
        let (tx, rx) = mpsc::unbounded_channel();
        if self.pubsub.set(tx).is_ok() {
            let names = PubSubNames {
                client_prefix: format!("{}.client.", self.cfg.prefix),
                control: self.control_channel(),
            };
            let handlers = Handlers {
                broker: handler,
                control: self.control.clone(),
            };
            let canary = Canary {
                channel: format!("{}.canary.{}{}", self.cfg.prefix, new_epoch(), new_epoch()),
                interval: self.canary_interval(),
                health: self.health.clone(),
            };
            match &self.target {
                Target::Cluster(seeds, _) => {
                    let names = ClusterNames {
                        prefix: self.cfg.prefix.clone(),
                        control: names.control,
                    };
                    tokio::spawn(cluster_pubsub_task(seeds.clone(), names, handlers, canary, self.epochs.clone(), rx));
                }
                _ => {
                    tokio::spawn(pubsub_task(self.target.clone(), names, handlers, canary, self.epochs.clone(), rx));
                }
            }
        }
        self.pubsub
            .get()
            .ok_or_else(|| EngineError::Internal("pub/sub task not started".into()))
    }

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
        let mut inv = self.publish.prepare_invoke();
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

/// The pub/sub channel names of one engine.
struct PubSubNames {
    /// Prefix of the channels that carry publications (`{prefix}.client.`).
    client_prefix: String,
    /// The node control channel, always subscribed.
    control: String,
}

struct Handlers {
    broker: Arc<dyn BrokerHandler>,
    control: Arc<OnceLock<Arc<dyn ControlHandler>>>,
}

/// The health of one pub/sub connection (one shard's), as its canary sees it. Up until the
/// first miss: the start check asks Redis itself.
struct PubSubHealth {
    /// The Redis it talks to, without credentials: in logs, metrics and `/ready`'s reason.
    shard: String,
    down: std::sync::Mutex<Option<String>>,
    /// True once the pub/sub connection has subscribed to the control channel for the
    /// first time: before that, node control messages sent to this node are lost (a
    /// forwarded `/emulation` request, for one), so the engine's check waits for it.
    connected: tokio::sync::watch::Sender<bool>,
}

impl PubSubHealth {
    fn new(shard: String) -> Self {
        metrics::gauge!("wshub_redis_pubsub_up", "shard" => shard.clone()).set(1.0);
        PubSubHealth {
            shard,
            down: std::sync::Mutex::new(None),
            connected: tokio::sync::watch::Sender::new(false),
        }
    }

    fn set_connected(&self) {
        self.connected.send_if_modified(|c| !std::mem::replace(c, true));
    }

    /// Waits up to `limit` for the first connection; false if it has not come.
    async fn wait_connected(&self, limit: Duration) -> bool {
        let mut rx = self.connected.subscribe();
        let connected = tokio::time::timeout(limit, rx.wait_for(|c| *c)).await;
        matches!(connected, Ok(Ok(_)))
    }

    fn down_reason(&self) -> Option<String> {
        self.down.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_down(&self, why: &str) {
        let mut d = self.down.lock().unwrap_or_else(|e| e.into_inner());
        if d.is_none() {
            tracing::error!(shard = %self.shard, why, "redis pub/sub down: not ready, positioned subscribers closed (3010)");
            metrics::gauge!("wshub_redis_pubsub_up", "shard" => self.shard.clone()).set(0.0);
        }
        *d = Some(why.to_string());
    }

    fn set_up(&self) {
        let mut d = self.down.lock().unwrap_or_else(|e| e.into_inner());
        if d.take().is_some() {
            tracing::info!(shard = %self.shard, "redis pub/sub delivers again: ready");
            metrics::gauge!("wshub_redis_pubsub_up", "shard" => self.shard.clone()).set(1.0);
        }
    }
}

/// `redis://user:secret@host:port/db` → `host:port/db`.
fn shard_name(address: &str) -> String {
    let rest = address.split_once("://").map_or(address, |(_, r)| r);
    let rest = match rest.split_once('/') {
        Some((auth_host, path)) => match auth_host.rsplit_once('@') {
            Some((_, host)) => format!("{host}/{path}"),
            None => rest.to_string(),
        },
        None => rest.rsplit_once('@').map_or(rest, |(_, h)| h).to_string(),
    };
    rest.trim_end_matches('/').to_string()
}

/// The self-ping of a pub/sub connection: published on `channel` through a command
/// connection every `interval`, expected back on the pub/sub connection before the next.
/// A pub/sub connection can wedge with no error (centrifugo#1189: after a failover nothing
/// arrived, publishes went on succeeding, health stayed green); only a round trip shows it.
struct Canary {
    channel: String,
    interval: Duration,
    health: Arc<PubSubHealth>,
}

impl Canary {
    /// Bound of one pub/sub call (connect, subscribe): a wedged connection must not stall
    /// the task that watches it.
    fn call_timeout(&self) -> Duration {
        canary_call_timeout(self.interval)
    }
}

fn canary_call_timeout(interval: Duration) -> Duration {
    (interval * 2).clamp(Duration::from_secs(1), Duration::from_secs(10))
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

/// One pub/sub connection per node: subscribes to the channels that have local
/// subscribers, hands what arrives to the node, and after a lost connection reconnects (with
/// backoff) and subscribes again to all of them. Its canary checks that it delivers.
async fn pubsub_task(
    target: Target,
    names: PubSubNames,
    handlers: Handlers,
    canary: Canary,
    epochs: Epochs,
    mut rx: mpsc::UnboundedReceiver<PubSubCmd>,
) {
    let prefix = names.client_prefix.as_str();
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
        let connected = tokio::time::timeout(canary.call_timeout(), connect_pubsub(&target, &names, &canary, &channels))
            .await
            .unwrap_or_else(|_| Err(redis::RedisError::from((redis::ErrorKind::Io, "pub/sub connect timed out"))));
        let (mut sink, mut stream, pinger) = match connected {
            Ok(c) => {
                canary.health.set_connected();
                c
            }
            Err(e) => {
                tracing::warn!(error = %e, shard = %canary.health.shard, "redis pub/sub: cannot connect, retrying");
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
        let mut outstanding: Option<(u64, tokio::time::Instant)> = None;
        let why = loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    None => return,
                    // Another local subscriber's subscribe has been confirmed: this one's
                    // publications arrive too.
                    Some(PubSubCmd::Subscribe(ch, done)) if channels.contains(&ch) => {
                        let _ = done.send(Ok(()));
                    }
                    Some(PubSubCmd::Subscribe(ch, done)) => {
                        let r = tokio::time::timeout(canary.call_timeout(), sink.subscribe(format!("{prefix}{ch}"))).await;
                        match r {
                            Ok(Ok(())) => {
                                lock(&epochs).entry(ch.clone()).or_default();
                                channels.insert(ch);
                                let _ = done.send(Ok(()));
                            }
                            Ok(Err(e)) => {
                                let _ = done.send(Err(internal(e)));
                            }
                            Err(_) => {
                                let _ = done.send(Err(EngineError::Internal("redis pub/sub: subscribe timed out".into())));
                                break "subscribe not confirmed in time".to_string();
                            }
                        }
                    }
                    Some(PubSubCmd::Unsubscribe(ch, done)) => {
                        if leave(handler.as_ref(), &mut channels, &epochs, &ch) {
                            match tokio::time::timeout(canary.call_timeout(), sink.unsubscribe(format!("{prefix}{ch}"))).await {
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
                _ = tick.tick() => match outstanding {
                    Some((n, sent)) if sent.elapsed() >= canary.interval => {
                        metrics::counter!("wshub_redis_pubsub_canary_missed_total", "shard" => canary.health.shard.clone()).increment(1);
                        break format!("canary ping {n} not back within {:?}", canary.interval);
                    }
                    Some(_) => {}
                    None => {
                        seq += 1;
                        outstanding = Some((seq, tokio::time::Instant::now()));
                        let mut c = pinger.clone();
                        let (chan, n, limit) = (canary.channel.clone(), seq, canary.interval);
                        // Not awaited here: a command that hangs must not stall the watch.
                        tokio::spawn(async move {
                            let mut cmd = redis::cmd("PUBLISH");
                            cmd.arg(chan).arg(n);
                            if let Ok(Err(e)) = tokio::time::timeout(limit, cmd.query_async::<i64>(&mut c)).await {
                                tracing::debug!(error = %e, "redis pub/sub: canary ping not sent");
                            }
                        });
                    }
                },
                msg = stream.next() => match msg {
                    Some(m) if m.get_channel_name() == names.control => {
                        if let Some(h) = handlers.control.get() {
                            h.handle_control(m.get_payload_bytes());
                        }
                    }
                    Some(m) if m.get_channel_name() == canary.channel => {
                        let n = std::str::from_utf8(m.get_payload_bytes()).ok().and_then(|s| s.parse::<u64>().ok());
                        if n.is_some() && n == outstanding.map(|(n, _)| n) {
                            outstanding = None;
                            canary.health.set_up();
                        }
                    }
                    Some(m) => dispatch(prefix, handler.as_ref(), &epochs, m.get_channel_name(), m.get_payload_bytes()),
                    None => break "connection lost".to_string(),
                },
            }
        };
        tracing::warn!(shard = %canary.health.shard, why, "redis pub/sub: reconnecting");
        report_down(&canary, handler.as_ref(), &channels, &why);
    }
}

/// A pub/sub connection subscribed to every channel in `channels`, and a command connection
/// for its canary's pings.
async fn connect_pubsub(
    target: &Target,
    names: &PubSubNames,
    canary: &Canary,
    channels: &HashSet<String>,
) -> redis::RedisResult<(redis::aio::PubSubSink, redis::aio::PubSubStream, redis::aio::MultiplexedConnection)> {
    let client = target.client().await?;
    let (mut sink, stream) = client.get_async_pubsub().await?.split();
    sink.subscribe(&names.control).await?;
    sink.subscribe(&canary.channel).await?;
    for ch in channels {
        sink.subscribe(format!("{}{ch}", names.client_prefix)).await?;
    }
    let pinger = client.get_multiplexed_async_connection().await?;
    Ok((sink, stream, pinger))
}

/// The sharded pub/sub channel names of an engine on a Redis Cluster.
struct ClusterNames {
    prefix: String,
    control: String,
}

impl ClusterNames {
    /// `{prefix}.client.{tag}.{channel}`: the slot of the channel's keys (see `Shard::key`).
    fn client(&self, channel: &str) -> String {
        format!("{}.client.{{{:016x}}}.{channel}", self.prefix, fnv1a(channel))
    }

    fn channel_of<'a>(&self, name: &'a str) -> Option<&'a str> {
        let rest = name.strip_prefix(self.prefix.as_str())?.strip_prefix(".client.{")?;
        rest.split_once("}.").map(|(_, ch)| ch)
    }
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

/// A sharded pub/sub message: (channel, payload) of an `smessage` push.
fn smessage(push: &redis::PushInfo) -> Option<(Vec<u8>, Vec<u8>)> {
    if push.kind != redis::PushKind::SMessage {
        return None;
    }
    let bytes = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => Some(b.clone()),
        _ => None,
    };
    match push.data.as_slice() {
        [channel, payload, ..] => Some((bytes(channel)?, bytes(payload)?)),
        _ => None,
    }
}

/// [`pubsub_task`] on a Redis Cluster: sharded pub/sub (`SSUBSCRIBE`) through one cluster
/// connection (RESP3 pushes), which holds a connection to each shard with subscriptions
/// and subscribes again by itself after a reconnection or a slot move. Each such
/// disconnection resets the channels (publications may have been missed). The canary
/// travels through the shard of its own channel.
async fn cluster_pubsub_task(
    seeds: Arc<Vec<String>>,
    names: ClusterNames,
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
        channels.retain(|ch| handler.has_subscribers(ch));
        let (push_tx, mut pushes) = mpsc::unbounded_channel::<redis::PushInfo>();
        let connect = async {
            let client = redis::cluster::ClusterClientBuilder::new(seeds.iter().map(String::as_str))
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(push_tx)
                .build()?;
            let mut conn = client.get_async_connection().await?;
            let slots: redis::Value = redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut conn).await?;
            let canaries = canary_channels(&canary.channel, &masters_of(&slots));
            conn.ssubscribe(&names.control).await?;
            for (c, _) in &canaries {
                conn.ssubscribe(c).await?;
            }
            for ch in &channels {
                conn.ssubscribe(names.client(ch)).await?;
            }
            Ok::<_, redis::RedisError>((conn, canaries))
        };
        let connected = tokio::time::timeout(canary.call_timeout(), connect)
            .await
            .unwrap_or_else(|_| Err(redis::RedisError::from((redis::ErrorKind::Io, "pub/sub connect timed out"))));
        let (mut conn, canaries) = match connected {
            Ok(c) => {
                canary.health.set_connected();
                c
            }
            Err(e) => {
                tracing::warn!(error = %e, shard = %canary.health.shard, "redis cluster pub/sub: cannot connect, retrying");
                report_down(&canary, handler.as_ref(), &channels, &format!("cannot connect: {e}"));
                let deadline = tokio::time::Instant::now() + delay;
                loop {
                    tokio::select! {
                        cmd = rx.recv() => match cmd {
                            None => return,
                            Some(PubSubCmd::Subscribe(ch, done)) => {
                                lock(&epochs).entry(ch.clone()).or_default();
                                channels.insert(ch);
                                let _ = done.send(Err(EngineError::Internal(format!("redis pub/sub: {e}"))));
                            }
                            Some(PubSubCmd::Unsubscribe(ch, done)) => {
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
            for ch in &channels {
                handler.handle_reset(ch);
            }
        }
        delay = Duration::from_millis(100);
        let mut tick = tokio::time::interval(canary.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // One ping per master (through the connection to that master), each outstanding
        // until it comes back: the cluster is up when none is late.
        let mut outstanding: HashMap<String, (u64, tokio::time::Instant)> = HashMap::new();
        let mut back: HashSet<String> = HashSet::new();
        // After a shard's connection was lost, until a canary came back through every
        // master: redis-rs subscribes again in the background, so a channel held here may
        // not deliver yet, and a new subscriber of it subscribes itself.
        let mut resubscribing = false;
        let why = loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    None => return,
                    Some(PubSubCmd::Subscribe(ch, done)) if channels.contains(&ch) && !resubscribing => {
                        let _ = done.send(Ok(()));
                    }
                    Some(PubSubCmd::Subscribe(ch, done)) => {
                        match tokio::time::timeout(canary.call_timeout(), conn.ssubscribe(names.client(&ch))).await {
                            Ok(Ok(())) => {
                                lock(&epochs).entry(ch.clone()).or_default();
                                channels.insert(ch);
                                let _ = done.send(Ok(()));
                            }
                            Ok(Err(e)) => {
                                let _ = done.send(Err(internal(e)));
                            }
                            Err(_) => {
                                let _ = done.send(Err(EngineError::Internal("redis pub/sub: subscribe timed out".into())));
                                break "subscribe not confirmed in time".to_string();
                            }
                        }
                    }
                    Some(PubSubCmd::Unsubscribe(ch, done)) => {
                        if leave(handler.as_ref(), &mut channels, &epochs, &ch) {
                            match tokio::time::timeout(canary.call_timeout(), conn.sunsubscribe(names.client(&ch))).await {
                                Ok(Ok(())) => {}
                                Ok(Err(e)) => tracing::debug!(error = %e, "redis pub/sub: sunsubscribe failed"),
                                Err(_) => {
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
                        break format!("canary ping {n} through master {master} not back within {:?}", canary.interval);
                    }
                    if outstanding.is_empty() && !canaries.is_empty() && back.len() == canaries.len() {
                        canary.health.set_up();
                        resubscribing = false;
                    }
                    for (chan, _) in &canaries {
                        if outstanding.contains_key(chan) {
                            continue;
                        }
                        seq += 1;
                        outstanding.insert(chan.clone(), (seq, tokio::time::Instant::now()));
                        let mut c = conn.clone();
                        let (chan, n, limit) = (chan.clone(), seq, canary.interval);
                        tokio::spawn(async move {
                            let mut cmd = redis::cmd("SPUBLISH");
                            cmd.arg(chan).arg(n);
                            if let Ok(Err(e)) = tokio::time::timeout(limit, cmd.query_async::<i64>(&mut c)).await {
                                tracing::debug!(error = %e, "redis pub/sub: canary ping not sent");
                            }
                        });
                    }
                },
                push = pushes.recv() => match push {
                    None => break "connection lost".to_string(),
                    Some(p) if p.kind == redis::PushKind::Disconnection => {
                        // The client reconnects and subscribes again by itself; what was
                        // published meanwhile did not arrive.
                        tracing::warn!(shard = %canary.health.shard, "redis cluster pub/sub: a shard's connection was lost");
                        resubscribing = true;
                        back.clear();
                        for ch in &channels {
                            handler.handle_reset(ch);
                        }
                    }
                    Some(p) => {
                        let Some((name, payload)) = smessage(&p) else { continue };
                        let Ok(name) = std::str::from_utf8(&name) else { continue };
                        if name == names.control {
                            if let Some(h) = handlers.control.get() {
                                h.handle_control(&payload);
                            }
                        } else if let Some((n, _)) = outstanding.get(name) {
                            let got = std::str::from_utf8(&payload).ok().and_then(|s| s.parse::<u64>().ok());
                            if got == Some(*n) {
                                outstanding.remove(name);
                                back.insert(name.to_string());
                                if outstanding.is_empty() && back.len() == canaries.len() {
                                    canary.health.set_up();
                                    resubscribing = false;
                                }
                            }
                        } else if let Some(ch) = names.channel_of(name) {
                            dispatch_channel(handler.as_ref(), &epochs, ch, &payload);
                        }
                    }
                },
            }
        };
        tracing::warn!(shard = %canary.health.shard, why, "redis cluster pub/sub: reconnecting");
        report_down(&canary, handler.as_ref(), &channels, &why);
    }
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

fn lock(epochs: &Epochs) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
    // A panic while holding it cannot leave the map inconsistent: take it anyway.
    epochs.lock().unwrap_or_else(|e| e.into_inner())
}

/// One pub/sub message: `p{offset}:{epoch}:{publication}` (`c…` when compressed), `j{info}` or `l{info}`.
fn dispatch(prefix: &str, handler: &dyn BrokerHandler, epochs: &Epochs, name: &str, payload: &[u8]) {
    let Some(channel) = name.strip_prefix(prefix) else { return };
    dispatch_channel(handler, epochs, channel, payload);
}

fn dispatch_channel(handler: &dyn BrokerHandler, epochs: &Epochs, channel: &str, payload: &[u8]) {
    match payload.split_first() {
        Some((kind @ (b'p' | b'c'), rest)) => {
            let mut parts = rest.splitn(3, |&b| b == b':');
            let (Some(offset), Some(epoch), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
                return tracing::warn!(channel, "redis pub/sub: undecodable publication");
            };
            let offset = std::str::from_utf8(offset).ok().and_then(|s| s.parse::<u64>().ok());
            let body = match kind {
                b'c' => match compression::decompress(body) {
                    Ok(b) => std::borrow::Cow::Owned(b),
                    Err(e) => return tracing::warn!(channel, error = %e, "redis pub/sub: undecodable compressed publication"),
                },
                _ => std::borrow::Cow::Borrowed(body),
            };
            let (Some(offset), Ok(epoch), Ok(mut p)) = (offset, std::str::from_utf8(epoch), Publication::decode(body.as_ref())) else {
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
            Err(_) => tracing::warn!(channel, "redis pub/sub: undecodable join/leave"),
        },
        _ => tracing::warn!(channel, "redis pub/sub: unknown message"),
    }
}

fn tagged(tag: u8, info: &ClientInfo) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + info.encoded_len());
    v.push(tag);
    info.encode(&mut v).unwrap_or_default(); // a Vec grows: encoding cannot run out of room
    v
}

/// Control messages travel on `{prefix}.control`, which every node's pub/sub connection
/// subscribes to (its own messages come back to it too).
impl NodeControl for Shard {
    fn set_control_handler(&self, handler: Arc<dyn ControlHandler>) {
        let _ = self.control.set(handler);
    }

    fn publish_control(&self, data: Vec<u8>) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(async move {
            // The pub/sub connection (which hears the control channel) starts with the node's
            // first announcement at the latest, not at its first subscriber.
            self.pubsub()?;
            let mut c = self.conn().await?;
            redis::cmd(self.publish_command())
                .arg(self.control_channel())
                .arg(data)
                .query_async::<i64>(&mut c)
                .await
                .map_err(|e| self.fail(e))?;
            Ok(())
        })
    }
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

impl PresenceManager for Shard {
    fn add_presence<'a>(&'a self, channel: &'a str, client: &'a str, info: ClientInfo) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            let mut c = self.conn().await?;
            let mut inv = self.presence_add.prepare_invoke();
            self.presence_keys(&mut inv, channel);
            if let Some(owned) = self.owned_key(channel) {
                inv.key(owned);
            }
            self.note_presence_tag(&mut c, channel).await?;
            inv.arg(client)
                .arg(info.encode_to_vec())
                .arg(self.cfg.presence_ttl.as_secs().max(1))
                .arg(channel)
                .arg(&info.user)
                .invoke_async::<()>(&mut c)
                .await
                .map_err(|e| self.fail(e))
        })
    }
    fn remove_presence<'a>(&'a self, channel: &'a str, client: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            let mut c = self.conn().await?;
            let mut inv = self.presence_remove.prepare_invoke();
            self.presence_keys(&mut inv, channel);
            if let Some(owned) = self.owned_key(channel) {
                inv.key(owned);
            }
            inv.arg(client)
                .arg(channel)
                .invoke_async::<()>(&mut c)
                .await
                .map_err(|e| self.fail(e))
        })
    }
    fn presence<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<HashMap<String, ClientInfo>, EngineError>> {
        Box::pin(async move {
            let mut c = self.conn().await?;
            let mut inv = self.presence_get.prepare_invoke();
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
            let mut inv = self.presence_stats.prepare_invoke();
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

/// The Redis engine: one shard per address of `engine.redis.address` (or one Sentinel
/// group). Each channel lives on the shard its name hashes to ([`shard_index`]), with its
/// history, presence and pub/sub; node control travels through one shard (the one the
/// control channel's name hashes to); a dead node's presence is reaped on every shard.
pub struct RedisEngine {
    shards: Vec<Shard>,
    /// The shard that carries node control.
    control: usize,
}

impl RedisEngine {
    /// Checks the addresses; connections are made on first use (and remade when lost).
    /// Several addresses (a comma between each) make independent shards.
    pub fn new(cfg: RedisConfig) -> Result<Self, RedisEngineError> {
        let addresses: Vec<String> = if cfg.sentinel.is_some() || !cfg.cluster.is_empty() {
            vec![cfg.address.clone()]
        } else {
            cfg.address
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(String::from)
                .collect()
        };
        if addresses.is_empty() {
            return Err(RedisEngineError::Address("no address".into()));
        }
        let control = shard_index(&format!("{}.control", cfg.prefix), addresses.len());
        let shards = addresses
            .into_iter()
            .map(|address| Shard::new(RedisConfig { address, ..cfg.clone() }))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RedisEngine { shards, control })
    }

    fn shard(&self, channel: &str) -> &Shard {
        // `shard_index` is below `shards.len()`, which is at least 1.
        &self.shards[shard_index(channel, self.shards.len())]
    }

    /// The shard names (`host:port`), in shard order.
    pub fn shard_names(&self) -> Vec<String> {
        self.shards.iter().map(|s| s.health.shard.clone()).collect()
    }

    /// Which shard (an index into [`RedisEngine::shard_names`]) holds `channel`.
    pub fn shard_of(&self, channel: &str) -> usize {
        shard_index(channel, self.shards.len())
    }

    /// Whether every shard answers commands and delivers pub/sub; the error names each
    /// shard that does not.
    pub async fn check_all(&self) -> Result<(), EngineError> {
        let results = futures_util::future::join_all(self.shards.iter().map(|s| s.check_all())).await;
        let failed: Vec<String> = results.into_iter().filter_map(|r| r.err().map(|e| e.to_string())).collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(EngineError::Internal(failed.join("; ")))
        }
    }

    #[cfg(test)]
    fn health(&self) -> &PubSubHealth {
        &self.shards[0].health
    }
}

/// The shard of `key` among `n`: jump consistent hash (Lamping and Veach, 2014) of the
/// FNV-1a hash of the name, so that every node agrees and adding a shard moves only about
/// 1/n of the channels.
pub fn shard_index(key: &str, n: usize) -> usize {
    let mut h = fnv1a(key);
    let (mut b, mut j): (i64, i64) = (-1, 0);
    let n = i64::try_from(n.max(1)).unwrap_or(i64::MAX);
    while j < n {
        b = j;
        h = h.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        let r = ((h >> 33) + 1) as f64;
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / r)) as i64;
    }
    usize::try_from(b).unwrap_or(0)
}

/// FNV-1a, 64 bits: a hash every node computes the same.
fn fnv1a(key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl NodeControl for RedisEngine {
    fn set_control_handler(&self, handler: Arc<dyn ControlHandler>) {
        self.shards[self.control].set_control_handler(handler);
    }
    fn publish_control(&self, data: Vec<u8>) -> BoxFuture<'_, Result<(), EngineError>> {
        self.shards[self.control].publish_control(data)
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

impl PresenceManager for RedisEngine {
    fn add_presence<'a>(&'a self, channel: &'a str, client: &'a str, info: ClientInfo) -> BoxFuture<'a, Result<(), EngineError>> {
        self.shard(channel).add_presence(channel, client, info)
    }
    fn remove_presence<'a>(&'a self, channel: &'a str, client: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        self.shard(channel).remove_presence(channel, client)
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

pub mod compression;
pub use compression::Compression;

pub mod ratelimit;
pub use ratelimit::RedisLimiter;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(test)]
mod tests;
