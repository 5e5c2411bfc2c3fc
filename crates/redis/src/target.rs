//! Where a shard's Redis is and how to connect to it: one address, the current master of
//! a Sentinel group, or a Redis Cluster, with the shard's credentials, timeouts and TLS.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::address::{self, Location, Tls};
use crate::RedisEngineError;

/// A shard's Redis as configured, and as found on first connection: a single address
/// that answers as a Cluster node is used as a Cluster (Centrifugo asks the server too).
pub(crate) struct Resolver {
    planned: Target,
    resolved: tokio::sync::OnceCell<Target>,
}

impl Resolver {
    /// Checks the addresses and the TLS files (so that a bad one stops the start).
    pub fn new(spec: &address::Shard) -> Result<Self, RedisEngineError> {
        Ok(Resolver {
            planned: Target::new(spec)?,
            resolved: tokio::sync::OnceCell::new(),
        })
    }

    /// The target, found at the first call that reaches Redis (tried again at the next
    /// call while Redis does not answer).
    pub async fn get(&self) -> redis::RedisResult<&Target> {
        self.resolved.get_or_try_init(|| self.planned.resolve()).await
    }

    /// Whether the shard is a Cluster; known once [`Resolver::get`] has answered, which
    /// every call that names keys does first.
    pub fn is_cluster(&self) -> bool {
        self.resolved.get().is_some_and(Target::is_cluster)
    }

    pub fn is_sentinel(&self) -> bool {
        matches!(self.planned, Target::Sentinel(..))
    }
}

/// How the engine finds its Redis.
#[derive(Clone)]
pub(crate) enum Target {
    /// One Redis; `detect`: ask it whether it is a Cluster node.
    Single {
        /// Boxed: a client holds its whole connection description.
        client: Box<redis::Client>,
        detect: bool,
        spec: Arc<address::Shard>,
    },
    Sentinel(Arc<tokio::sync::Mutex<redis::sentinel::SentinelClient>>, Arc<address::Shard>),
    /// The seed nodes (the pub/sub connection builds a client of its own, with a push
    /// channel) and the command client.
    Cluster(Arc<Vec<(String, u16)>>, Arc<redis::cluster::ClusterClient>, Arc<address::Shard>),
}

fn tls_error(e: redis::RedisError) -> RedisEngineError {
    RedisEngineError::Tls(e.to_string())
}

/// The client certificate and CA of `tls`, as redis-rs takes them (none: the system's roots).
fn certificates(tls: &Tls) -> Option<redis::TlsCertificates> {
    let client_tls = (!tls.cert_pem.is_empty()).then(|| redis::ClientTlsConfig {
        client_cert: tls.cert_pem.clone(),
        client_key: tls.key_pem.clone(),
    });
    let root_cert = (!tls.server_ca_pem.is_empty()).then(|| tls.server_ca_pem.clone());
    (client_tls.is_some() || root_cert.is_some()).then_some(redis::TlsCertificates { client_tls, root_cert })
}

fn tls_mode(tls: &Tls) -> redis::TlsMode {
    match tls.insecure_skip_verify {
        true => redis::TlsMode::Insecure,
        false => redis::TlsMode::Secure,
    }
}

fn settings(c: &address::Connection) -> redis::RedisConnectionInfo {
    let mut r = redis::RedisConnectionInfo::default().set_db(c.db);
    if !c.user.is_empty() {
        r = r.set_username(&c.user);
    }
    if !c.password.is_empty() {
        r = r.set_password(&c.password);
    }
    r.set_protocol(redis::ProtocolVersion::RESP2)
}

/// A client for one Redis at `addr` with the shard's credentials and TLS.
fn single_client(addr: redis::ConnectionAddr, c: &address::Connection) -> Result<redis::Client, redis::RedisError> {
    use redis::IntoConnectionInfo as _;
    let addr = match (addr, &c.tls) {
        (redis::ConnectionAddr::Tcp(host, port), Some(tls)) => redis::ConnectionAddr::TcpTls {
            host,
            port,
            insecure: tls.insecure_skip_verify,
            tls_params: None,
        },
        (a, _) => a,
    };
    let info = addr.into_connection_info()?.set_redis_settings(settings(c));
    match c.tls.as_ref().and_then(certificates) {
        Some(certs) => redis::Client::build_with_tls(info, certs),
        None => redis::Client::open(info),
    }
}

/// A client for the single Redis of `spec` (not a Sentinel group or a Cluster).
pub(crate) fn single_client_of(spec: &address::Shard) -> Result<redis::Client, RedisEngineError> {
    let addr = match &spec.location {
        Location::Tcp(h, p) => redis::ConnectionAddr::Tcp(h.clone(), *p),
        Location::Unix(path) => redis::ConnectionAddr::Unix(path.into()),
        _ => {
            return Err(RedisEngineError::Address(
                "a single Redis is needed here (not Sentinel or Cluster)".into(),
            ))
        }
    };
    single_client(addr, &spec.connection).map_err(tls_error)
}

impl Target {
    fn new(spec: &address::Shard) -> Result<Self, RedisEngineError> {
        let c = &spec.connection;
        let shared = Arc::new(spec.clone());
        match &spec.location {
            Location::Tcp(..) | Location::Unix(_) => Ok(Target::Single {
                client: Box::new(single_client_of(spec)?),
                detect: matches!(spec.location, Location::Tcp(..)),
                spec: shared,
            }),
            Location::Cluster(seeds) => {
                let client = cluster_builder(seeds, c)
                    .build()
                    .map_err(|e| RedisEngineError::Cluster(e.to_string()))?;
                Ok(Target::Cluster(Arc::new(seeds.clone()), Arc::new(client), shared))
            }
            Location::Sentinel {
                sentinels,
                master_name,
                user,
                password,
            } => {
                let bad = |e: redis::RedisError| RedisEngineError::Sentinel(e.to_string());
                let addrs = sentinels.iter().map(|(h, p)| match &c.sentinel_tls {
                    Some(tls) => redis::ConnectionAddr::TcpTls {
                        host: h.clone(),
                        port: *p,
                        insecure: tls.insecure_skip_verify,
                        tls_params: None,
                    },
                    None => redis::ConnectionAddr::Tcp(h.clone(), *p),
                });
                let mut b = redis::sentinel::SentinelClientBuilder::new(addrs, master_name, redis::sentinel::SentinelServerType::Master)
                    .map_err(bad)?
                    .set_client_to_redis_db(c.db)
                    .set_client_to_redis_protocol(redis::ProtocolVersion::RESP2);
                if !user.is_empty() {
                    b = b.set_client_to_sentinel_username(user);
                }
                if !password.is_empty() {
                    b = b.set_client_to_sentinel_password(password);
                }
                if !c.user.is_empty() {
                    b = b.set_client_to_redis_username(&c.user);
                }
                if !c.password.is_empty() {
                    b = b.set_client_to_redis_password(&c.password);
                }
                if let Some(tls) = &c.tls {
                    b = b.set_client_to_redis_tls_mode(tls_mode(tls));
                    if let Some(certs) = certificates(tls) {
                        b = b.set_client_to_redis_certificates(certs);
                    }
                }
                if let Some(tls) = &c.sentinel_tls {
                    b = b.set_client_to_sentinel_tls_mode(tls_mode(tls));
                    if let Some(certs) = certificates(tls) {
                        b = b.set_client_to_sentinel_certificates(certs);
                    }
                }
                let client = b.build().map_err(bad)?;
                Ok(Target::Sentinel(Arc::new(tokio::sync::Mutex::new(client)), shared))
            }
        }
    }

    /// This target, or the Cluster a single address turns out to be a node of.
    async fn resolve(&self) -> redis::RedisResult<Target> {
        let Target::Single {
            client,
            detect: true,
            spec,
        } = self
        else {
            return Ok(self.clone());
        };
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(spec.connection.connect_timeout))
            .set_response_timeout(Some(spec.connection.io_timeout));
        let mut c = client.get_multiplexed_async_connection_with_config(&config).await?;
        let info: String = match redis::cmd("INFO").arg("cluster").query_async(&mut c).await {
            Ok(info) => info,
            // An error reply: a Redis-protocol server without INFO (fakeredis) has no cluster
            // mode either.
            Err(e) if e.code().is_some() => String::new(),
            Err(e) => return Err(e),
        };
        let Location::Tcp(h, p) = &spec.location else {
            return Ok(self.clone());
        };
        if !info.lines().any(|l| l.trim() == "cluster_enabled:1") {
            return Ok(self.clone());
        }
        let seeds = vec![(h.clone(), *p)];
        tracing::info!(shard = %spec.name(), "redis: the address is a Redis Cluster node: used as a Cluster");
        let cluster = cluster_builder(&seeds, &spec.connection).build()?;
        Ok(Target::Cluster(Arc::new(seeds), Arc::new(cluster), spec.clone()))
    }

    /// A client for the Redis to use now (for Sentinel: the master the sentinels name,
    /// which confirmed its role).
    pub async fn client(&self) -> redis::RedisResult<redis::Client> {
        match self {
            Target::Single { client, .. } => Ok(client.as_ref().clone()),
            Target::Sentinel(s, _) => s.lock().await.async_get_client().await,
            Target::Cluster(..) => Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "a cluster has no one client",
            ))),
        }
    }

    fn spec(&self) -> &address::Shard {
        match self {
            Target::Single { spec, .. } | Target::Sentinel(_, spec) | Target::Cluster(.., spec) => spec,
        }
    }

    /// The connection's timeouts, for the connections made by hand (pub/sub's pinger).
    pub fn connection_config(&self) -> redis::AsyncConnectionConfig {
        let c = &self.spec().connection;
        redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(c.connect_timeout))
            .set_response_timeout(Some(c.io_timeout))
    }

    /// A command connection.
    pub async fn connect(&self) -> redis::RedisResult<Conn> {
        let c = &self.spec().connection;
        let name = (!c.client_name.is_empty()).then(|| {
            Arc::new(ClientName {
                name: c.client_name.clone(),
                unnamed: AtomicBool::new(true),
            })
        });
        Ok(Conn {
            kind: self.connect_kind().await?,
            name,
        })
    }

    async fn connect_kind(&self) -> redis::RedisResult<ConnKind> {
        if let Target::Cluster(_, c, _) = self {
            return Ok(ConnKind::Cluster(c.get_async_connection().await?));
        }
        let c = &self.spec().connection;
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(c.connect_timeout))
            .set_response_timeout(Some(c.io_timeout))
            // Few retries per attempt: a call fails fast while Redis is away (the next call
            // tries again), and a wrong address fails the start within seconds.
            .set_number_of_retries(2);
        Ok(ConnKind::Single(
            redis::aio::ConnectionManager::new_with_config(self.client().await?, cfg).await?,
        ))
    }

    /// Names a connection wshub opened itself (`client_name`), if a name is configured.
    pub async fn name_connection(&self, c: &mut impl redis::aio::ConnectionLike) -> redis::RedisResult<()> {
        match self.spec().connection.client_name.as_str() {
            "" => Ok(()),
            name => set_name(c, name).await,
        }
    }

    /// A cluster connection for sharded pub/sub: RESP3, its pushes (messages, lost
    /// connections) sent to `pushes`.
    pub async fn cluster_pubsub(
        &self,
        pushes: tokio::sync::mpsc::UnboundedSender<redis::PushInfo>,
    ) -> redis::RedisResult<redis::cluster_async::ClusterConnection> {
        let Target::Cluster(seeds, _, spec) = self else {
            return Err(redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "not a cluster")));
        };
        let client = cluster_builder(seeds, &spec.connection)
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(pushes)
            .build()?;
        client.get_async_connection().await
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Target::Cluster(..))
    }
}

/// A Cluster client's builder with the shard's credentials, timeouts and TLS (a Cluster
/// has no databases).
fn cluster_builder(seeds: &[(String, u16)], c: &address::Connection) -> redis::cluster::ClusterClientBuilder {
    let nodes = seeds.iter().map(|(h, p)| redis::ConnectionAddr::Tcp(h.clone(), *p));
    let mut b = redis::cluster::ClusterClientBuilder::new(nodes)
        .connection_timeout(c.connect_timeout)
        .response_timeout(c.io_timeout);
    if !c.user.is_empty() {
        b = b.username(&c.user);
    }
    if !c.password.is_empty() {
        b = b.password(&c.password);
    }
    if let Some(tls) = &c.tls {
        b = b.tls(tls_mode(tls));
        if let Some(certs) = certificates(tls) {
            b = b.certs(certs);
        }
    }
    b
}

/// `CLIENT SETNAME` (on a Cluster: every node's connection).
async fn set_name(c: &mut impl redis::aio::ConnectionLike, name: &str) -> redis::RedisResult<()> {
    redis::cmd("CLIENT").arg("SETNAME").arg(name).query_async(c).await
}

/// A command connection: to one Redis (reconnecting by itself) or to a cluster (routing
/// by key, following MOVED/ASK and topology changes), named with `client_name`.
#[derive(Clone)]
pub struct Conn {
    kind: ConnKind,
    name: Option<Arc<ClientName>>,
}

/// A connection's `client_name`. redis-rs reconnects by itself and has no hook for a
/// command on a new connection: the name is set before the first command, and again before
/// the command that follows an error that may have cost the connection (with RESP2, which
/// the command connections speak, redis-rs reconnects only after such an error).
struct ClientName {
    name: String,
    unnamed: AtomicBool,
}

impl ClientName {
    async fn ensure(&self, c: &mut ConnKind) {
        if self.unnamed.load(Ordering::Relaxed) && set_name(c, &self.name).await.is_ok() {
            self.unnamed.store(false, Ordering::Relaxed);
        }
    }

    fn after<T>(&self, r: &redis::RedisResult<T>) {
        if let Err(e) = r {
            if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() || e.is_unrecoverable_error() {
                self.unnamed.store(true, Ordering::Relaxed);
            }
        }
    }
}

#[derive(Clone)]
enum ConnKind {
    Single(redis::aio::ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Conn {
    /// Runs `f` on the connection, named first when it needs to be.
    fn named<'a, T: Send + 'a>(
        &'a mut self,
        f: impl FnOnce(&'a mut ConnKind) -> redis::RedisFuture<'a, T> + Send + 'a,
    ) -> redis::RedisFuture<'a, T> {
        let Some(name) = self.name.clone() else {
            return f(&mut self.kind);
        };
        let kind = &mut self.kind;
        Box::pin(async move {
            name.ensure(kind).await;
            let r = f(kind).await;
            name.after(&r);
            r
        })
    }
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        self.named(move |c| c.req_packed_command(cmd))
    }
    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        self.named(move |c| c.req_packed_commands(pipeline, offset, count))
    }
    fn get_db(&self) -> i64 {
        self.kind.get_db()
    }
}

impl redis::aio::ConnectionLike for ConnKind {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            ConnKind::Single(c) => c.req_packed_command(cmd),
            ConnKind::Cluster(c) => c.req_packed_command(cmd),
        }
    }
    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            ConnKind::Single(c) => c.req_packed_commands(pipeline, offset, count),
            ConnKind::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }
    fn get_db(&self) -> i64 {
        match self {
            ConnKind::Single(c) => c.get_db(),
            ConnKind::Cluster(c) => c.get_db(),
        }
    }
}
