//! The WebSocket upgrade: the handshake judged by `wshub_websocket::handshake`, admission,
//! then the upgraded stream taken back from hyper and handed to [`crate::driver::drive`] in
//! a task of its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::Instrument;
use wshub_websocket::handshake;
use wshub_websocket::{Config, HandshakeError};

use crate::admission::{admit, refuse_origin};
use crate::driver::{drive, Handler, Outcome};
use crate::response::{full, refusal, text, Body};
use crate::state::Shared;
use crate::tls::TlsStream;

/// Answers an upgrade request (101, or the refusal) and, on success, spawns the connection.
/// `uni`: the unidirectional endpoint, with its own settings (`uni_websocket.*`).
pub(super) async fn upgrade(mut req: Request<Incoming>, shared: &Arc<Shared>, peer: SocketAddr, uni: bool) -> Response<Body> {
    let (hs, max_message_size, wt) = match uni {
        true => {
            let u = &shared.config.uni_websocket;
            (&u.handshake, u.max_message_size, u.write_timeout)
        }
        false => (
            &shared.config.handshake,
            shared.config.max_message_size,
            shared.config.write_timeout,
        ),
    };
    let accepted = match handshake::accept(&req, hs) {
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
    if let Err((status, reason)) = admit(shared, peer.ip()).await {
        tracing::debug!(%reason, %peer, "connection refused");
        return text(status, reason);
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let ws_config = Config::server(max_message_size, accepted.deflate);
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
    shared.connections.opened();
    driver.map(move |outcome| {
        shared.connections.closed();
        metrics::counter!("wshub_disconnects_total", "code" => outcome.code().0.to_string()).increment(1);
        tracing::debug!(?outcome, "connection ended");
    })
}
