//! The HTTP side of the listener: routing, the WebSocket upgrade, the server API,
//! `/health`, `/ready`.
//!
//! hyper parses the request; `wshub_websocket::handshake` judges an upgrade; on success the
//! upgraded TCP stream is taken back from hyper and handed to [`crate::driver::drive`].

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tracing::Instrument;
use wshub_core::node::{ApiError, Node};
use wshub_core::ratelimit::{admit_on_error, ClusterLimiter, KeyedLimiters, Limiter, RateLimitAlgorithm};
use wshub_websocket::handshake::{self, Accepted, HandshakeConfig, OriginPolicy};
use wshub_websocket::{Config, HandshakeError};

use crate::api::{ApiRequest, RequestError};
use crate::driver::{drive, Handler, Outcome};
use crate::endpoints::{Endpoints, Route};
use crate::tls::TlsStream;

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
    /// Serve TLS (`wss://`, `https://`).
    pub tls: Option<crate::tls::TlsAcceptor>,
    /// HTTP/2 without TLS beside HTTP/1.1 on the main listener (`http_server.h2c_external`).
    pub h2c: bool,
    /// Serve the admin web page (`admin.enabled`).
    pub admin: Option<crate::admin::AdminConfig>,
    /// The HTTP transports (`http_stream.enabled`, `sse.enabled`) and `/emulation`.
    pub emulation: EmulationConfig,
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
    /// Largest connect request (`http_stream` body, `cf_connect`) and `/emulation` body.
    pub max_request_body_size: usize,
    /// `client.queue_max_size`.
    pub max_queue: usize,
    /// The request headers some proxy forwards (computed once, not per stream).
    pub forwarded_headers: Vec<String>,
}

/// State shared by every connection task.
pub struct Shared {
    pub config: ServerConfig,
    ready: AtomicBool,
    /// The engine answers (always, for the memory engine); watched by `crate::lifecycle`.
    engine_ok: AtomicBool,
    pub(crate) connections: AtomicUsize,
    /// Held (shared) by an API publication from its drain check to its end, so that a drain
    /// starts closing clients only after the publications it let through are delivered.
    publish_gate: tokio::sync::RwLock<()>,
    node_rate: Option<Mutex<Limiter>>,
    ip_rate: Option<Mutex<KeyedLimiters<IpAddr>>>,
    /// Per API key (only keys that passed the check reach it).
    api_rate: Option<Mutex<KeyedLimiters<String>>>,
    admin: Option<crate::admin::Admin>,
    /// Refused origins are logged at most once a second.
    origin_log: LogLimiter,
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
            // Node discovery and delivery run while the server does.
            api.cluster.start();
            crate::lifecycle::start_delivery(&api.node);
        }
        Arc::new(Shared {
            ready: AtomicBool::new(true),
            engine_ok: AtomicBool::new(true),
            connections: AtomicUsize::new(0),
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

    /// Whether a new WebSocket connection from `ip` may be accepted now.
    pub(crate) async fn admit(&self, ip: IpAddr) -> Result<(), (StatusCode, &'static str)> {
        let a = &self.config.admission;
        let refuse = |status, reason: &'static str| {
            crate::metrics::centrifugo::handshake_refused(reason);
            Err((status, reason))
        };
        if !self.is_ready() {
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "draining");
        }
        if a.connection_limit > 0 && self.connections() >= a.connection_limit {
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "connection_limit");
        }
        let now = std::time::Instant::now();
        if let Some(r) = &self.node_rate {
            if !r.lock().try_acquire(now) {
                metrics::counter!("wshub_rate_limit_refusals_total", "kind" => "connection").increment(1);
                return refuse(StatusCode::SERVICE_UNAVAILABLE, "connection_rate_limit");
            }
        }
        let per_ip = match (&a.connection_rate_limit_per_ip_cluster, &self.ip_rate) {
            (Some(cluster), _) if a.connection_rate_limit_per_ip > 0 => {
                let rate = f64::from(a.connection_rate_limit_per_ip);
                let answer = cluster.try_take(&format!("ip.{ip}"), rate, rate).await;
                Some(admit_on_error("connection_per_ip", answer, now))
            }
            (_, Some(r)) => Some(r.lock().try_acquire(&ip, now)),
            _ => None,
        };
        if let Some(allowed) = per_ip {
            if !allowed {
                metrics::counter!("wshub_rate_limit_refusals_total", "kind" => "connection_per_ip").increment(1);
                return refuse(StatusCode::TOO_MANY_REQUESTS, "connection_rate_limit_per_ip");
            }
        }
        Ok(())
    }

    /// WebSocket connections now open.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
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
}

use wshub_core::logging::LogLimiter;

/// The 403 of a refused `Origin`: its body says why and which key to change, and the same
/// line is logged at info (at most once a second; a browser's page cannot read the body,
/// its developer reads the server's log). One answer for WebSocket and the HTTP transports.
pub(crate) fn refuse_origin(headers: &http::HeaderMap, shared: &Shared, what: &str, peer: SocketAddr) -> Response<Body> {
    let origin = headers
        .get(header::ORIGIN)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let why = origin_refusal_message(origin.as_deref().unwrap_or(""), host, &shared.config.handshake.origins);
    if let Some(suppressed) = shared.origin_log.admit(std::time::Instant::now()) {
        tracing::info!(%peer, suppressed, "{what} refused (403): {why}");
    }
    text(StatusCode::FORBIDDEN, &why)
}

/// Why an `Origin` was refused, and which key to change (the testable part of
/// [`refuse_origin`]).
pub fn origin_refusal_message(origin: &str, host: Option<&str>, policy: &OriginPolicy) -> String {
    if origin.len() > wshub_websocket::handshake::MAX_ORIGIN_LEN {
        return format!(
            "Origin header of {} bytes refused (longer than {} bytes)",
            origin.len(),
            wshub_websocket::handshake::MAX_ORIGIN_LEN
        );
    }
    if origin.eq_ignore_ascii_case("null") {
        return "Origin \"null\" refused: the page was opened from a file (file://) or runs in a sandboxed frame; \
                serve it over http(s) from an origin listed in client.allowed_origins"
            .to_string();
    }
    match policy {
        OriginPolicy::SameHost => format!(
            "Origin {origin:?} refused: client.allowed_origins is empty, so only pages served from the same host and port \
             as this server ({}) may connect; add {origin:?} to client.allowed_origins",
            host.unwrap_or("no Host header")
        ),
        _ => format!("Origin {origin:?} refused: it matches nothing in client.allowed_origins; add it there"),
    }
}

pub(crate) use crate::transports::{add_cors, check_origin, forwarded_headers, open_stream, stream_headers};
pub use crate::transports::{EMULATION_PATH, HTTP_STREAM_PATH, SSE_PATH, UNI_HTTP_STREAM_PATH, UNI_SSE_PATH};

/// Every response body: whole (`Full`) or streamed (the HTTP transports).
pub type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

pub(crate) fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

pub(crate) fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(full(format!("{body}\n")));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

fn json_response(v: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(full(v.to_string()));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// The refusal of a bad upgrade request (DESIGN.md's bad-input table).
pub fn refusal(e: &HandshakeError) -> Response<Body> {
    let mut r = text(e.status(), &e.to_string());
    if *e == HandshakeError::Version {
        r.headers_mut()
            .insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    }
    r
}

/// Largest API request body.
const API_BODY_LIMIT: usize = 16 << 20;

async fn api(req: Request<Incoming>, shared: &Shared, api: &ApiConfig, method: &str) -> Response<Body> {
    let started = std::time::Instant::now();
    let r = api_inner(req, shared, api, method).await;
    let method_label = if crate::api::is_method(method) { method } else { "unknown" };
    crate::metrics::centrifugo::api_call(method_label, r.status().as_u16(), started.elapsed());
    r
}

async fn api_inner(req: Request<Incoming>, shared: &Shared, api: &ApiConfig, method: &str) -> Response<Body> {
    if req.method() != http::Method::POST {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "use POST");
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    if !crate::api::authorized(req.headers(), &api.key, api.insecure) {
        return error_json(StatusCode::UNAUTHORIZED, UNAUTHORIZED_API);
    }
    if api.rate_limit > 0 {
        let key = req
            .headers()
            .get("x-api-key")
            .or_else(|| req.headers().get(header::AUTHORIZATION))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let rate = f64::from(api.rate_limit);
        let now = std::time::Instant::now();
        let allowed = match &api.rate_limit_cluster {
            Some(cluster) => {
                // The key itself never goes to Redis: a digest names its bucket.
                let digest = Sha256::digest(key.as_bytes());
                let name: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
                admit_on_error("api", cluster.try_take(&format!("api.{name}"), rate, rate).await, now)
            }
            None => shared.api_rate.as_ref().is_none_or(|r| r.lock().try_acquire(&key, now)),
        };
        if !allowed {
            metrics::counter!("wshub_rate_limit_refusals_total", "kind" => "api").increment(1);
            return text(StatusCode::TOO_MANY_REQUESTS, "too many requests");
        }
    }
    execute(req, shared, api, method).await
}

/// The one-line body of the API's 401.
pub const UNAUTHORIZED_API: &str = "missing or wrong API key: send the header X-API-Key: <http_api.key>";

/// A JSON error body `{"error": {"code": <status>, "message": ...}}` with that status.
fn error_json(status: StatusCode, message: &str) -> Response<Body> {
    let mut r = json_response(&serde_json::json!({"error": {"code": status.as_u16(), "message": message}}));
    *r.status_mut() = status;
    r
}

/// Reads an authorized API request's body, runs the call and answers it: the one
/// implementation behind `/api/<method>` and the admin page's `/admin/api/<method>`.
async fn execute(req: Request<Incoming>, shared: &Shared, api: &ApiConfig, method: &str) -> Response<Body> {
    let body = match crate::body::read(req.into_body(), API_BODY_LIMIT, api.body_timeout).await {
        Ok(b) => b,
        Err(e) => return e.response("http_api.body_timeout"),
    };
    let request = match crate::api::parse_request(method, &body) {
        Ok(r) => r,
        Err(RequestError::NotJson(e)) => return text(StatusCode::BAD_REQUEST, &format!("body is not JSON: {e}")),
        Err(RequestError::Api(e)) => return json_response(&crate::api::envelope(Err(e))),
    };
    drop(body);
    // Shared from the drain check to the publication's delivery; see `Shared::start_drain`.
    let _gate = if api.refuse_publish_while_draining && request.publishes() {
        let gate = shared.publish_gate.read().await;
        if !shared.is_ready() {
            let mut r = json_response(&crate::api::envelope(Err(ApiError::new(
                wshub_protocol::codes::error::NOT_AVAILABLE,
                DRAINING_PUBLISH,
            ))));
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            return r;
        }
        Some(gate)
    } else {
        None
    };
    match request {
        // Centrifugo answers batch with the replies at the top level, as `cent` expects.
        ApiRequest::Batch(b) => json_response(&crate::api::batch(&api.cluster, b).await),
        r => json_response(&crate::api::envelope(crate::api::call(&api.cluster, r).await)),
    }
}

/// `GET /`: where to go from here (the endpoints on other listeners are not listed).
fn landing(shared: &Shared, endpoints: &Endpoints) -> Response<Body> {
    let link = |p: &Option<String>| p.as_deref().map(|p| format!(r#", <a href="{p}">{p}</a>"#)).unwrap_or_default();
    let admin = match (&endpoints.admin, shared.admin.is_some()) {
        (Some(p), true) => format!(r#"<li><a href="{p}">{p}</a>: the admin page</li>"#),
        (None, true) => "<li>the admin page: on the internal port</li>".to_string(),
        _ => "<li>/admin: the admin page, off (set <code>admin.enabled</code>, <code>admin.password</code> and <code>admin.secret</code>)</li>".to_string(),
    };
    let api = match &endpoints.api {
        Some(p) => format!("<li>server API: <code>POST {p}/&lt;method&gt;</code> with <code>X-API-Key</code></li>"),
        None => "<li>server API: not on this port</li>".to_string(),
    };
    let ready = if endpoints.ready { r#"<a href="/ready">/ready</a>"# } else { "" };
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>wshub</title></head><body><h1>wshub {version}</h1><ul>\
         <li>clients: <code>{ws}</code> (Centrifugo client protocol: the <code>centrifuge</code> SDKs)</li>\
         {api}{admin}<li>probes: {ready}{health}{metrics}</li>\
         <li>documentation: the README of wshub; the protocol: <a href=\"https://centrifugal.dev/docs/transports/client_api\">centrifugal.dev</a></li>\
         </ul></body></html>\n",
        version = env!("CARGO_PKG_VERSION"),
        ws = endpoints.websocket.as_deref().unwrap_or("(WebSocket off)"),
        health = link(&endpoints.health),
        metrics = if shared.config.metrics { link(&endpoints.metrics) } else { String::new() },
    );
    static_file(body.into(), "text/html; charset=utf-8")
}

fn static_file(body: Bytes, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(full(body));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    r
}

/// The setting named in a 408's body (besides `/api`'s own).
pub(crate) const READ_TIMEOUT_KEY: &str = "http_server.read_timeout";

/// Largest admin login body.
const LOGIN_BODY_LIMIT: usize = 4096;

/// `/admin…`: the page, its login and logout, and the API behind an admin session.
async fn admin_route(req: Request<Incoming>, shared: &Shared, admin: &crate::admin::Admin, path: &str, peer: SocketAddr) -> Response<Body> {
    use crate::admin::{Login, ADMIN_CSS};
    let get = req.method() == http::Method::GET || req.method() == http::Method::HEAD;
    let post = req.method() == http::Method::POST;
    match path {
        "/admin" | "/admin/" if get => static_file(admin.index_html.clone(), "text/html; charset=utf-8"),
        "/admin/admin.js" if get => static_file(admin.admin_js.clone(), "text/javascript; charset=utf-8"),
        "/admin/admin.css" if get => static_file(Bytes::from_static(ADMIN_CSS.as_bytes()), "text/css; charset=utf-8"),
        "/admin/session" if get => {
            if admin.authorized(req.headers()) {
                json_response(&serde_json::json!({"authenticated": true, "insecure": admin.config.insecure}))
            } else {
                error_json(StatusCode::UNAUTHORIZED, "no admin session: log in")
            }
        }
        "/admin/login" if post => {
            #[derive(serde::Deserialize)]
            struct LoginBody {
                #[serde(default)]
                password: String,
            }
            let body = match crate::body::read(req.into_body(), LOGIN_BODY_LIMIT, shared.config.read_timeout).await {
                Ok(b) => b,
                Err(e) => return e.response(READ_TIMEOUT_KEY),
            };
            let Ok(LoginBody { password }) = serde_json::from_slice(&body) else {
                return error_json(StatusCode::BAD_REQUEST, "expected {\"password\": \"...\"}");
            };
            match admin.login(peer.ip(), &password, std::time::Instant::now()) {
                Login::Ok(cookie) => {
                    tracing::info!(%peer, "admin login");
                    let mut r = json_response(&serde_json::json!({"ok": true}));
                    if let Ok(v) = HeaderValue::from_str(&cookie) {
                        r.headers_mut().insert(header::SET_COOKIE, v);
                    }
                    r
                }
                Login::WrongPassword => {
                    tracing::info!(%peer, "admin login refused: wrong password");
                    error_json(StatusCode::UNAUTHORIZED, "wrong password")
                }
                Login::TooMany => {
                    let mut r = error_json(StatusCode::TOO_MANY_REQUESTS, "too many login attempts: wait a minute");
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(crate::admin::LOGIN_WINDOW.as_secs()));
                    r
                }
            }
        }
        "/admin/logout" if post => {
            let mut r = json_response(&serde_json::json!({"ok": true}));
            if let Ok(v) = HeaderValue::from_str(&admin.cookie("", 0)) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        p if p.starts_with("/admin/api/") => {
            let method = &p["/admin/api/".len()..];
            if !post {
                let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "use POST");
                r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
                return r;
            }
            if !admin.authorized(req.headers()) {
                return error_json(StatusCode::UNAUTHORIZED, "no admin session: log in");
            }
            let json = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/json"));
            if !json {
                return error_json(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "admin API calls must be Content-Type: application/json",
                );
            }
            match shared.config.api.as_ref() {
                Some(api) => execute(req, shared, api, method).await,
                None => error_json(StatusCode::NOT_FOUND, "no server API on this listener"),
            }
        }
        _ if !admin.authorized(req.headers()) => error_json(StatusCode::UNAUTHORIZED, "no admin session: log in"),
        _ => text(StatusCode::NOT_FOUND, "not found"),
    }
}

/// The message of the 503 that a draining node on the memory engine answers publications.
pub const DRAINING_PUBLISH: &str = "node is draining: publish to another node";

/// Drives an upgraded TLS connection. Everything TLS (kilobytes of rustls state) lives in
/// this boxed future: inline, it would enlarge every plain connection's task too (measured:
/// 1.8 KB -> 7 KB per idle connection). The downcast happens before the box: done inside
/// it, its result and hyper's `Parts` stayed in the future beside the running driver
/// (4,336 bytes boxed instead of about 1.7 KB).
fn drive_tls(
    upgraded: hyper::upgrade::Upgraded,
    ws_config: Config,
    handler: Box<dyn Handler>,
    wt: Option<Duration>,
    span: tracing::Span,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send>> {
    match upgraded.downcast::<TokioIo<TlsStream>>() {
        Ok(p) => Box::pin(drive(p.io.into_inner(), p.read_buf, ws_config, handler, wt).instrument(span)),
        Err(_) => {
            tracing::error!("upgraded stream of an unknown type");
            Box::pin(std::future::ready(Outcome::Dropped))
        }
    }
}

/// One upgraded connection's task: the driver, and the node's connection count around it.
/// `map` rather than an `async` block: an async block would keep a second copy of the
/// driver's future (its captured value beside the one it awaits), 1,336 bytes in all.
fn connection(driver: impl std::future::Future<Output = Outcome>, shared: Arc<Shared>) -> impl std::future::Future<Output = ()> {
    use futures_util::FutureExt as _;
    shared.connections.fetch_add(1, Ordering::Relaxed);
    driver.map(move |outcome| {
        shared.connections.fetch_sub(1, Ordering::Relaxed);
        metrics::counter!("wshub_disconnects_total", "code" => outcome.code().0.to_string()).increment(1);
        tracing::debug!(?outcome, "connection ended");
    })
}

/// Answers one HTTP request. During a drain, every answer but an upgrade carries
/// `Connection: close`: the node stops listening when the drain is over, and a kept-alive
/// connection (a load balancer's to its upstream, say) would be cut with its next request
/// in flight (nginx answers that request 502).
pub async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    endpoints: Arc<Endpoints>,
    peer: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    let mut r = answer(req, &shared, &endpoints, peer).await;
    if !shared.is_ready() && r.status() != StatusCode::SWITCHING_PROTOCOLS {
        r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(r)
}

async fn answer(mut req: Request<Incoming>, shared: &Arc<Shared>, endpoints: &Endpoints, peer: SocketAddr) -> Response<Body> {
    let path = req.uri().path().to_string();
    match endpoints.route(&path) {
        Route::WebSocket | Route::UniWebSocket => {}
        Route::Api(method) => {
            return match shared.config.api.as_ref() {
                Some(a) => api(req, shared, a, method).await,
                None => text(StatusCode::NOT_FOUND, "not found"),
            }
        }
        Route::Transport(canonical) => return crate::transports::emulation_route(req, shared, canonical, peer).await,
        Route::Admin(canonical) => {
            return match shared.admin.as_ref() {
                Some(admin) => admin_route(req, shared, admin, &canonical, peer).await,
                None => text(StatusCode::NOT_FOUND, "not found"),
            }
        }
        Route::Landing if req.method() == http::Method::GET || req.method() == http::Method::HEAD => return landing(shared, endpoints),
        Route::Health => return text(StatusCode::OK, "ok"),
        Route::Init if req.method() == http::Method::GET => {
            let mut r = json_response(&serde_json::json!({}));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
            return r;
        }
        Route::Init => return text(StatusCode::METHOD_NOT_ALLOWED, "use GET"),
        Route::Metrics if shared.config.metrics => {
            let mut r = Response::new(full(crate::metrics::render(shared)));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
            return r;
        }
        Route::Ready if !shared.ready.load(Ordering::Relaxed) => return text(StatusCode::SERVICE_UNAVAILABLE, "draining"),
        Route::Ready if !shared.engine_ok.load(Ordering::Relaxed) => return text(StatusCode::SERVICE_UNAVAILABLE, "engine unavailable"),
        Route::Ready => return text(StatusCode::OK, "ready"),
        _ => return text(StatusCode::NOT_FOUND, "not found"),
    }
    let accepted = match handshake::accept(&req, &shared.config.handshake) {
        Ok(a) => a,
        Err(e) => {
            metrics::counter!("wshub_handshake_refusals_total", "reason" => e.label()).increment(1);
            if e == HandshakeError::Origin {
                return refuse_origin(req.headers(), shared, "WebSocket", peer);
            }
            tracing::debug!(reason = %e, "handshake refused");
            return refusal(&e);
        }
    };
    if let Err((status, reason)) = shared.admit(peer.ip()).await {
        tracing::debug!(%reason, %peer, "connection refused");
        return text(status, reason);
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let ws_config = Config::server(shared.config.max_message_size, accepted.deflate);
    let handler = (shared.config.handler)(&accepted, req.uri(), req.headers());
    let task_shared = shared.clone();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let span = tracing::info_span!("conn", %peer, client = tracing::field::Empty, user = tracing::field::Empty);
        let wt = task_shared.config.write_timeout;
        // The connection lives in a task of its own, spawned with only what it needs: in
        // this one, the upgrade's state would sit beside the driver's for the connection's
        // whole life (measured: a 896-byte future, tokio cell 1,024 B; alone, 768 B).
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(p) => {
                let f = drive(p.io.into_inner(), p.read_buf, ws_config, handler, wt).instrument(span);
                tokio::spawn(connection(f, task_shared));
            }
            Err(upgraded) => {
                tokio::spawn(connection(drive_tls(upgraded, ws_config, handler, wt, span), task_shared));
            }
        }
    });
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *resp.headers_mut() = accepted.response_headers();
    resp
}
