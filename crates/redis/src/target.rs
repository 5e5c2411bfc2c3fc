//! Where a shard's Redis is and how to connect to it: one address, the current master of
//! a Sentinel group, or a Redis Cluster.

use std::sync::Arc;
use std::time::Duration;

use crate::health::shard_name;
use crate::{RedisConfig, RedisEngineError};

/// How the engine finds its Redis: one address, or the current master of a Sentinel group.
#[derive(Clone)]
pub(crate) enum Target {
    Single(redis::Client),
    Sentinel(Arc<tokio::sync::Mutex<redis::sentinel::SentinelClient>>),
    /// The seed nodes (the pub/sub connection builds a client of its own, with a push
    /// channel) and the command client.
    Cluster(Arc<Vec<String>>, Arc<redis::cluster::ClusterClient>),
}

impl Target {
    pub fn new(cfg: &RedisConfig) -> Result<Self, RedisEngineError> {
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
    pub async fn client(&self) -> redis::RedisResult<redis::Client> {
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
    pub async fn connect(&self) -> redis::RedisResult<Conn> {
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

    /// A cluster connection for sharded pub/sub: RESP3, its pushes (messages, lost
    /// connections) sent to `pushes`.
    pub async fn cluster_pubsub(
        &self,
        pushes: tokio::sync::mpsc::UnboundedSender<redis::PushInfo>,
    ) -> redis::RedisResult<redis::cluster_async::ClusterConnection> {
        let Target::Cluster(seeds, _) = self else {
            return Err(redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "not a cluster")));
        };
        let client = redis::cluster::ClusterClientBuilder::new(seeds.iter().map(String::as_str))
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(pushes)
            .build()?;
        client.get_async_connection().await
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Target::Cluster(..))
    }

    pub fn name(cfg: &RedisConfig) -> String {
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
pub(crate) enum Conn {
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
