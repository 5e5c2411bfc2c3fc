//! The HTTP side of the listener: routing, the WebSocket upgrade, `/health`, `/ready`.
//!
//! hyper parses the request; `wshub_websocket::handshake` judges it; on success the
//! upgraded TCP stream is taken back from hyper and handed to [`crate::driver::drive`].

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use wshub_websocket::handshake::{self, Accepted, HandshakeConfig};
use wshub_websocket::{Config, HandshakeError};

use crate::driver::{drive, Handler};

/// Makes the handler of a new WebSocket connection.
pub type HandlerFactory = Arc<dyn Fn(&Accepted) -> Box<dyn Handler> + Send + Sync>;

/// Listener settings.
#[derive(Clone)]
pub struct ServerConfig {
    /// Paths that upgrade to WebSocket; `None` upgrades on every path (echo mode).
    pub ws_paths: Option<Vec<String>>,
    pub handshake: HandshakeConfig,
    /// `websocket.message_size_limit`.
    pub max_message_size: usize,
    /// Time allowed to send the request headers.
    pub handshake_timeout: Duration,
    pub handler: HandlerFactory,
}

/// State shared by every connection task.
pub struct Shared {
    pub config: ServerConfig,
    ready: AtomicBool,
    connections: AtomicUsize,
}

impl Shared {
    pub fn new(config: ServerConfig) -> Arc<Self> {
        Arc::new(Shared {
            config,
            ready: AtomicBool::new(true),
            connections: AtomicUsize::new(0),
        })
    }

    /// WebSocket connections now open.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed)
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// The refusal of a bad upgrade request (DESIGN.md's bad-input table).
pub fn refusal(e: &HandshakeError) -> Response<Full<Bytes>> {
    let mut r = text(e.status(), &e.to_string());
    if *e == HandshakeError::Version {
        r.headers_mut()
            .insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    }
    r
}

/// Answers one HTTP request.
pub async fn handle(mut req: Request<Incoming>, shared: Arc<Shared>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let is_ws = match &shared.config.ws_paths {
        None => !matches!(path, "/health" | "/ready"),
        Some(paths) => paths.iter().any(|p| p == path),
    };
    if !is_ws {
        return Ok(match path {
            "/health" => text(StatusCode::OK, "ok"),
            "/ready" if shared.ready.load(Ordering::Relaxed) => text(StatusCode::OK, "ready"),
            "/ready" => text(StatusCode::SERVICE_UNAVAILABLE, "draining"),
            _ => text(StatusCode::NOT_FOUND, "not found"),
        });
    }
    let accepted = match handshake::accept(&req, &shared.config.handshake) {
        Ok(a) => a,
        Err(e) => {
            tracing::debug!(reason = %e, "handshake refused");
            return Ok(refusal(&e));
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let ws_config = Config::server(shared.config.max_message_size, accepted.deflate);
    let handler = (shared.config.handler)(&accepted);
    let task_shared = shared.clone();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let parts = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(p) => p,
            Err(_) => {
                tracing::error!("upgraded stream is not a TCP stream");
                return;
            }
        };
        task_shared.connections.fetch_add(1, Ordering::Relaxed);
        let outcome = drive(parts.io.into_inner(), parts.read_buf, ws_config, handler).await;
        task_shared.connections.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(?outcome, "connection ended");
    });
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *resp.headers_mut() = accepted.response_headers();
    Ok(resp)
}
