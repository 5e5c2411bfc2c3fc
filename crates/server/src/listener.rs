//! The accept loop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::endpoints::Endpoints;
use crate::http::handle;
use crate::state::Shared;

/// Binds the listening socket. `[::]` (an empty `http_server.address`: every interface) on a
/// host without IPv6 is `0.0.0.0`, as Go's `:port` that Centrifugo binds.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    match TcpListener::bind(addr).await {
        Err(e) if addr.ip() == std::net::Ipv6Addr::UNSPECIFIED && e.kind() != std::io::ErrorKind::AddrInUse => {
            tracing::debug!(error = %e, "no IPv6: listening on 0.0.0.0");
            TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, addr.port())).await
        }
        r => r,
    }
}

/// Binds the internal listener (`http_server.internal_port`) of `config`, if it has one.
pub async fn bind_internal(config: &crate::ServerConfig) -> std::io::Result<Option<TcpListener>> {
    match &config.internal {
        Some(i) => bind(i.addr).await.map(Some),
        None => Ok(None),
    }
}

/// Accepts connections for the main listener (`shared.config.endpoints`) until `shutdown`
/// completes.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    let endpoints = Arc::new(shared.config.endpoints.clone());
    let tls = shared.config.tls.clone();
    let h2c = shared.config.h2c;
    serve_endpoints(listener, shared, endpoints, tls, h2c, shutdown).await
}

/// Accepts connections for `endpoints` (over `tls` when given; HTTP/2 without TLS too when
/// `h2c`) until `shutdown` completes.
/// Running out of file descriptors does not stop or spin the loop: it backs off and keeps
/// serving the connections it has.
pub async fn serve_endpoints(
    listener: TcpListener,
    shared: Arc<Shared>,
    endpoints: Arc<Endpoints>,
    tls: Option<crate::tls::TlsAcceptor>,
    h2c: bool,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut shutdown => {
                // Nothing new is accepted; a drain, if any, is over (`crate::lifecycle`).
                shared.set_ready(false);
                break;
            }
        };
        let (stream, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(5);
                a
            }
            Err(e) => {
                // EMFILE/ENFILE/ENOBUFS and friends: wait for connections to end.
                tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let tls = tls.clone();
        let shared = shared.clone();
        let endpoints = endpoints.clone();
        tokio::spawn(async move {
            let timeout = shared.config.handshake_timeout;
            let h2c = h2c && tls.is_none();
            if tls.is_none() && (endpoints.any_stream() || h2c) {
                // A stream of the HTTP transports is served outside hyper (crate::transport::raw);
                // with `h2c_external`, HTTP/2's preface says HTTP/2 (prior knowledge).
                let mut first = [0u8; 48];
                match tokio::time::timeout(timeout, stream.peek(&mut first)).await {
                    Ok(Ok(n)) => {
                        if h2c && first[..n].starts_with(H2_PREFACE) {
                            let svc = service_fn(move |req| handle(req, shared.clone(), endpoints.clone(), peer));
                            return finish(Box::pin(h2_builder(timeout).serve_connection(TokioIo::new(stream), svc)).await);
                        }
                        if let Some(canonical) = crate::transport::raw::wants(&endpoints, &first[..n]) {
                            return crate::transport::raw::serve(stream, shared, canonical, peer).await;
                        }
                    }
                    // Nothing sent in time (hyper would end it the same way), or gone.
                    _ => return,
                }
            }
            let svc = service_fn(move |req| handle(req, shared.clone(), endpoints.clone(), peer));
            let builder = {
                let mut b = http1::Builder::new();
                b.timer(TokioTimer::new()).header_read_timeout(timeout);
                b
            };
            let r = match tls {
                None => builder.serve_connection(TokioIo::new(stream), svc).with_upgrades().await,
                Some(acceptor) => match Box::pin(tokio::time::timeout(timeout, acceptor.accept(stream))).await {
                    // HTTP/2 when the client chose it through ALPN (a WebSocket client never does).
                    Ok(Ok(tls_stream)) if tls_stream.alpn_protocol() == Some(crate::tls::ALPN_H2) => {
                        Box::pin(h2_builder(timeout).serve_connection(TokioIo::new(tls_stream), svc)).await
                    }
                    // Boxed so that plain connections' tasks stay small.
                    Ok(Ok(tls_stream)) => Box::pin(builder.serve_connection(TokioIo::new(tls_stream), svc).with_upgrades()).await,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, %peer, "TLS handshake failed");
                        metrics::counter!("wshub_handshake_refusals_total", "reason" => "tls").increment(1);
                        return;
                    }
                    Err(_) => {
                        metrics::counter!("wshub_handshake_refusals_total", "reason" => "tls_timeout").increment(1);
                        return;
                    }
                },
            };
            finish(r)
        });
    }
}

/// What a client speaking HTTP/2 without TLS sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// HTTP/2 server settings: a client that opens the connection and sends nothing is dropped
/// as an HTTP/1.1 one is (keep-alive pings answered within `timeout`).
fn h2_builder(timeout: Duration) -> http2::Builder<TokioExecutor> {
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(25)))
        .keep_alive_timeout(timeout)
        .max_concurrent_streams(MAX_H2_STREAMS);
    b
}

/// Streams at once on one HTTP/2 connection (each an HTTP request: API call, SSE or
/// HTTP-streaming connection), so that one TCP connection cannot open without bound.
const MAX_H2_STREAMS: u32 = 128;

fn finish(r: Result<(), hyper::Error>) {
    if let Err(e) = r {
        tracing::debug!(error = %e, "http connection ended with an error");
    }
}
