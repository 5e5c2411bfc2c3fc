//! What every connection task and every route shares: the listener's settings and the
//! node-wide state built from them (readiness, the connection count, the rate limiters).
//!
//! Kept apart from the routes and handlers that read it, so that each of them (and the
//! drain, the metrics, the transports) depends on this one file rather than on each other.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use wshub_core::logging::LogLimiter;
use wshub_core::node::Node;
use wshub_core::ratelimit::{ClusterLimiter, KeyedLimiters, Limiter, RateLimitAlgorithm};
use wshub_websocket::handshake::{Accepted, HandshakeConfig};

use crate::driver::Handler;

/// Makes the handler of a new WebSocket connection from what was agreed, the URI and the
/// request headers (some are forwarded to the backend proxies).
pub type HandlerFactory = Arc<dyn Fn(&Accepted, &http::Uri, &http::HeaderMap) -> Box<dyn Handler> + Send + Sync>;

/// The server API's settings.
#[derive(Clone)]
pub struct ApiConfig {
    pub node: Arc<Node>,
    /// The nodes of the cluster (this one alone on the memory engine): `info`, `channels`
    /// and the calls acting on users reach every node through it.
    pub cluster: Arc<crate::cluster::Cluster>,
    pub key: String,
    pub insecure: bool,
    /// Calls per second per key (0: unlimited); over it: 429.
    pub rate_limit: u32,
    /// `http_api.rate_limit_algorithm` (counted on this node).
    pub rate_limit_algorithm: RateLimitAlgorithm,
    /// `http_api.rate_limit_scope = "cluster"`: the limiter every node shares (token bucket,
    /// burst of one second's worth, failing open); `None`: counted on this node.
    pub rate_limit_cluster: Option<Arc<dyn ClusterLimiter>>,
    /// `http_api.body_timeout`: time to receive a whole request body, from the end of the
    /// headers (over it: 408); `None`: no limit.
    pub body_timeout: Option<Duration>,
    /// Refuse publications with 503 once a drain has started. For an engine that delivers
    /// only on this node (memory): its subscribers are being closed, so a publication
    /// acknowledged now could reach nobody. With Redis other nodes deliver it.
    pub refuse_publish_while_draining: bool,
    /// `http_api.error_mode = "transport"`: errors as HTTP statuses.
    pub transport_errors: bool,
    /// `consumers[]`, started with the node's tasks.
    pub consumers: Arc<crate::consumers::Consumers>,
}

impl ApiConfig {
    /// Starts node discovery and delivery, which run while the server does (once per node:
    /// later calls do nothing).
    pub(crate) fn start_tasks(&self) {
        self.cluster.start();
        self.consumers.start(&self.cluster);
        crate::delivery::start(&self.node);
        crate::shared_poll::start(&self.node);
    }
}

/// Who may open a WebSocket connection (`client.connection_*`). Zero means unlimited.
#[derive(Clone, Debug, Default)]
pub struct Admission {
    /// Open WebSocket connections on this node (over it: 503).
    pub connection_limit: usize,
    /// New connections per second on this node (over it: 503).
    pub connection_rate_limit: u32,
    pub connection_rate_limit_algorithm: RateLimitAlgorithm,
    /// New connections per second from one IP address (over it: 429).
    pub connection_rate_limit_per_ip: u32,
    /// Counted on this node (the cluster scope is a token bucket).
    pub connection_rate_limit_per_ip_algorithm: RateLimitAlgorithm,
    /// `client.connection_rate_limit_per_ip_scope = "cluster"`: the limiter every node shares
    /// (token bucket, burst of one second's worth, failing open); `None`: this node's
    /// limiters.
    pub connection_rate_limit_per_ip_cluster: Option<Arc<dyn ClusterLimiter>>,
}

/// Listener settings.
#[derive(Clone)]
pub struct ServerConfig {
    /// What the main listener (`http_server.port`) serves, and where.
    pub endpoints: crate::endpoints::Endpoints,
    /// The internal listener (`http_server.internal_port`), when it is one of its own.
    pub internal: Option<InternalListener>,
    pub handshake: HandshakeConfig,
    /// `websocket.message_size_limit`.
    pub max_message_size: usize,
    /// The unidirectional WebSocket endpoint's own settings (`uni_websocket.*`).
    pub uni_websocket: WsEndpoint,
    /// Time allowed to send the request headers.
    pub handshake_timeout: Duration,
    /// `http_server.read_timeout`: time to receive a request body once the headers are in
    /// (`None`: no limit); see [`crate::body`].
    pub read_timeout: Option<Duration>,
    pub handler: HandlerFactory,
    /// `POST /api/<method>`, when a node runs.
    pub api: Option<ApiConfig>,
    pub admission: Admission,
    /// `websocket.write_timeout`: a write that makes no progress for this long closes the
    /// connection (3009).
    pub write_timeout: Option<Duration>,
    /// Serve `GET /metrics`.
    pub metrics: bool,
    /// Count requests by route, method and status (`prometheus.instrument_http_handlers`).
    pub instrument_http: bool,
    /// Serve TLS (`wss://`, `https://`).
    pub tls: Option<crate::tls::TlsAcceptor>,
    /// HTTP/2 without TLS beside HTTP/1.1 on the main listener (`http_server.h2c_external`).
    pub h2c: bool,
    /// Serve the admin web page (`admin.enabled`).
    pub admin: Option<crate::admin::AdminConfig>,
    /// The HTTP transports (`http_stream.enabled`, `sse.enabled`) and `/emulation`.
    pub emulation: EmulationConfig,
    /// The gRPC server API (`grpc_api.enabled`), on a port of its own.
    pub grpc_api: Option<crate::grpc::api::GrpcApiConfig>,
    /// The unidirectional gRPC transport (`uni_grpc.enabled`), on a port of its own.
    pub uni_grpc: Option<crate::grpc::uni::UniGrpcConfig>,
    /// Pusher's HTTP API (`/apps/…`), when `pusher.apps` has an app.
    pub pusher: Option<Arc<crate::pusher::api::PusherApi>>,
}

/// A WebSocket endpoint's handshake and limits, where they differ from `/connection/websocket`'s.
#[derive(Clone)]
pub struct WsEndpoint {
    pub handshake: HandshakeConfig,
    pub max_message_size: usize,
    pub write_timeout: Option<Duration>,
}

/// The internal listener: its address, what it serves, and its TLS (`internal_tls`, or the
/// main listener's).
#[derive(Clone)]
pub struct InternalListener {
    pub addr: SocketAddr,
    pub endpoints: crate::endpoints::Endpoints,
    pub tls: Option<crate::tls::TlsAcceptor>,
}

/// The HTTP transports' settings.
#[derive(Clone, Debug, Default)]
pub struct EmulationConfig {
    pub http_stream: bool,
    pub sse: bool,
    pub uni_http_stream: bool,
    pub uni_sse: bool,
    /// `uni_http_stream.connect_code_to_http_response` and `uni_sse.`'s.
    pub uni_http_stream_refusals: crate::config::ConnectCodeToHttpResponse,
    pub uni_sse_refusals: crate::config::ConnectCodeToHttpResponse,
    /// Largest connect request (`http_stream` body, `cf_connect`) and `/emulation` body.
    pub max_request_body_size: usize,
    /// `client.queue_max_size`.
    pub max_queue: usize,
    /// The request headers some proxy forwards (computed once, not per stream).
    pub forwarded_headers: Vec<String>,
}

/// The node's open connections (WebSocket and the HTTP transports), counted so that the
/// drain can wait for the last one to end instead of polling the count.
#[derive(Default)]
pub(crate) struct Connections {
    open: AtomicUsize,
    none_left: Notify,
}

impl Connections {
    pub(crate) fn opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn closed(&self) {
        if self.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.none_left.notify_waiters();
        }
    }

    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Returns once no connection is open.
    pub(crate) async fn none_left(&self) {
        loop {
            // Registered before the count is read, so that a close in between still wakes it.
            let notified = self.none_left.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// State shared by every connection task.
pub struct Shared {
    pub config: ServerConfig,
    ready: AtomicBool,
    /// The engine answers (always, for the memory engine); watched by `crate::lifecycle`.
    engine_ok: AtomicBool,
    pub(crate) connections: Connections,
    /// Held (shared) by an API publication from its drain check to its end, so that a drain
    /// starts closing clients only after the publications it let through are delivered.
    pub(crate) publish_gate: tokio::sync::RwLock<()>,
    pub(crate) node_rate: Option<Mutex<Limiter>>,
    pub(crate) ip_rate: Option<Mutex<KeyedLimiters<IpAddr>>>,
    /// Per API key (only keys that passed the check reach it).
    pub(crate) api_rate: Option<Mutex<KeyedLimiters<String>>>,
    pub(crate) admin: Option<crate::admin::Admin>,
    /// Refused origins are logged at most once a second.
    pub(crate) origin_log: LogLimiter,
}

impl Shared {
    pub fn new(config: ServerConfig) -> Arc<Self> {
        let now = std::time::Instant::now();
        let a = &config.admission;
        let node_rate = (a.connection_rate_limit > 0)
            .then(|| Mutex::new(Limiter::new(a.connection_rate_limit_algorithm, a.connection_rate_limit, now)));
        let ip_rate = (a.connection_rate_limit_per_ip > 0 && a.connection_rate_limit_per_ip_cluster.is_none()).then(|| {
            Mutex::new(KeyedLimiters::new(
                a.connection_rate_limit_per_ip_algorithm,
                a.connection_rate_limit_per_ip,
            ))
        });
        let api_rate = config
            .api
            .as_ref()
            .filter(|api| api.rate_limit > 0 && api.rate_limit_cluster.is_none())
            .map(|api| Mutex::new(KeyedLimiters::new(api.rate_limit_algorithm, api.rate_limit)));
        if config.metrics {
            crate::metrics::handle();
        }
        if let (Some(api), Ok(_)) = (&config.api, tokio::runtime::Handle::try_current()) {
            api.start_tasks();
        }
        Arc::new(Shared {
            ready: AtomicBool::new(true),
            engine_ok: AtomicBool::new(true),
            connections: Connections::default(),
            publish_gate: tokio::sync::RwLock::new(()),
            node_rate,
            ip_rate,
            api_rate,
            admin: config.admin.clone().map(crate::admin::Admin::new),
            origin_log: LogLimiter::default(),
            config,
        })
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// WebSocket connections now open.
    pub fn connections(&self) -> usize {
        self.connections.open()
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed)
    }

    /// Starts a drain: `/ready` turns 503, new WebSocket upgrades are refused with 503 and,
    /// when the API is told to, publications too. Returns once the API publications that
    /// passed their check before are done (delivered to this node's subscribers: accepted,
    /// then taken out of the delivery queues).
    pub async fn start_drain(&self) {
        self.set_ready(false);
        drop(self.publish_gate.write().await);
        if let Some(api) = &self.config.api {
            // Accepted publications may still wait in the delivery queues.
            api.node.deliveries.flush();
        }
    }

    /// Whether the engine answers; `/ready` is 503 while it does not, so that a load balancer
    /// sends new clients to nodes that can serve them.
    pub fn set_engine_ok(&self, ok: bool) {
        self.engine_ok.store(ok, Ordering::Relaxed)
    }

    pub fn is_engine_ok(&self) -> bool {
        self.engine_ok.load(Ordering::Relaxed)
    }
}
