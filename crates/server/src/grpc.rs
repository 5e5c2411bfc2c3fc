//! gRPC, as Centrifugo speaks it: the server API (`centrifugal.centrifugo.api.CentrifugoApi`,
//! [`api`]) and the proxies to `grpc://` backends (`centrifugal.centrifugo.proxy.CentrifugoProxy`,
//! [`proxy`]), wire-compatible with Centrifugo's published `.proto` files (`vendor/centrifugo/`).
//!
//! Messages are read and written through descriptors (prost-reflect) and transcoded to and
//! from the JSON of the HTTP API and HTTP proxies ([`transcode`]): the JSON implementation
//! serves both, and a method that lands in the JSON API is on gRPC at once. tonic does the
//! gRPC framing over this crate's own hyper listeners and connector.

pub mod api;
pub mod proxy;
mod stream;
pub mod transcode;
pub mod uni;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prost_reflect::{DescriptorPool, ServiceDescriptor};
use tokio::net::TcpListener;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;
use wshub_core::node::ApiError;
use wshub_protocol::codes::error as ec;

/// The descriptor set that `build.rs` compiles from `vendor/centrifugo/`.
pub const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/centrifugo_descriptors.bin"));

/// Centrifugo's server API service.
pub const API_SERVICE: &str = "centrifugal.centrifugo.api.CentrifugoApi";
/// Centrifugo's proxy service, which a `grpc://` backend implements.
pub const PROXY_SERVICE: &str = "centrifugal.centrifugo.proxy.CentrifugoProxy";

/// The descriptors, decoded once. `None` only if the build produced a broken set, which
/// the unit tests rule out.
pub fn pool() -> Option<&'static DescriptorPool> {
    static POOL: OnceLock<Option<DescriptorPool>> = OnceLock::new();
    POOL.get_or_init(|| match DescriptorPool::decode(DESCRIPTORS) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::error!(error = %e, "the built-in gRPC descriptors do not decode");
            None
        }
    })
    .as_ref()
}

/// A service of [`pool`] by full name.
pub fn service(name: &str) -> Option<ServiceDescriptor> {
    pool()?.get_service_by_name(name)
}

/// The port of a gRPC server (`grpc_api`, `uni_grpc`): its address, its TLS, and its socket
/// bound before the server starts ([`GrpcPort::bind`]), so that a port in use stops the
/// start rather than leaving the node without the server.
#[derive(Clone)]
pub struct GrpcPort {
    pub addr: SocketAddr,
    pub tls: Option<crate::tls::TlsAcceptor>,
    listener: Arc<parking_lot::Mutex<Option<std::net::TcpListener>>>,
}

impl GrpcPort {
    /// The port at `addr`, with TLS from `section.tls` when enabled.
    pub fn new(addr: SocketAddr, section: &str, tls: &crate::config::Tls) -> Result<Self, crate::config::LoadError> {
        Ok(GrpcPort {
            addr,
            tls: match tls {
                t if t.enabled => Some(crate::tls::acceptor(&format!("{section}.tls"), t)?),
                _ => None,
            },
            listener: Arc::default(),
        })
    }

    /// Binds the address now (the binary does, before it announces itself).
    pub fn bind(&self) -> std::io::Result<()> {
        let l = std::net::TcpListener::bind(self.addr)?;
        l.set_nonblocking(true)?;
        *self.listener.lock() = Some(l);
        Ok(())
    }

    /// The socket bound by [`GrpcPort::bind`], or one bound now.
    pub(crate) async fn listener(&self) -> std::io::Result<TcpListener> {
        let bound = self.listener.lock().take();
        match bound {
            Some(l) => TcpListener::from_std(l),
            None => crate::listener::bind(self.addr).await,
        }
    }
}

/// Serves HTTP/2 (TLS when `tls`) on `listener` until `shutdown` completes, each request
/// answered by `handle` with the client's address. Connections already open live on.
pub(crate) async fn serve_h2<F, Fut>(
    listener: TcpListener,
    tls: Option<crate::tls::TlsAcceptor>,
    what: &'static str,
    handle: F,
    shutdown: impl Future<Output = ()>,
) where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<tonic::body::Body>, Infallible>> + Send + 'static,
{
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "{what}: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (handle, tls) = (handle.clone(), tls.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(req, peer));
            let mut builder = http2::Builder::new(TokioExecutor::new());
            builder.timer(TokioTimer::new()).keep_alive_interval(Some(Duration::from_secs(25)));
            let r = match tls {
                None => builder.serve_connection(TokioIo::new(stream), svc).await,
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(tls) => builder.serve_connection(TokioIo::new(tls), svc).await,
                    Err(e) => {
                        tracing::debug!(error = %e, %peer, "{what}: TLS handshake failed");
                        return;
                    }
                },
            };
            if let Err(e) = r {
                tracing::debug!(error = %e, %peer, "{what} connection ended with an error");
            }
        });
    }
}

/// Passes message bytes through unchanged: messages are decoded with their descriptor by
/// the caller, which knows the method.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

/// [`RawCodec`]'s encoder and decoder.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawBytes;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawBytes;
    type Decoder = RawBytes;

    fn encoder(&mut self) -> RawBytes {
        RawBytes
    }

    fn decoder(&mut self) -> RawBytes {
        RawBytes
    }
}

impl Encoder for RawBytes {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawBytes {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// The gRPC status of an API error in the transport error mode, as Centrifugo's
/// `MapErrorToGRPCCode`.
pub fn status_code(e: &ApiError) -> tonic::Code {
    match e.code() {
        ec::INTERNAL => tonic::Code::Internal,
        ec::UNKNOWN_CHANNEL | ec::METHOD_NOT_FOUND => tonic::Code::NotFound,
        ec::BAD_REQUEST | ec::NOT_AVAILABLE => tonic::Code::InvalidArgument,
        ec::UNRECOVERABLE_POSITION => tonic::Code::OutOfRange,
        ec::CONCURRENT_PAGINATION => tonic::Code::AlreadyExists,
        _ => tonic::Code::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_hold_centrifugo_services() {
        let api = service(API_SERVICE).map(|s| s.methods().map(|m| m.name().to_string()).collect::<Vec<_>>());
        let api = api.unwrap_or_default();
        for m in ["Publish", "Broadcast", "Batch", "PresenceStats", "RPC", "Channels"] {
            assert!(api.iter().any(|n| n == m), "{m} in {api:?}");
        }
        let proxy = service(PROXY_SERVICE).map(|s| s.methods().count()).unwrap_or(0);
        assert!(proxy >= 8, "proxy methods: {proxy}");
    }

    #[test]
    fn transport_error_codes() {
        assert_eq!(status_code(&ApiError::bad_request("x")), tonic::Code::InvalidArgument);
        assert_eq!(status_code(&ApiError::not_available()), tonic::Code::InvalidArgument);
        assert_eq!(status_code(&ApiError::UnknownChannel("u".into())), tonic::Code::NotFound);
        assert_eq!(status_code(&ApiError::MethodNotFound), tonic::Code::NotFound);
        assert_eq!(status_code(&ApiError::UnrecoverablePosition), tonic::Code::OutOfRange);
        assert_eq!(status_code(&ApiError::internal()), tonic::Code::Internal);
        assert_eq!(status_code(&ApiError::backend(4000, "x")), tonic::Code::Internal);
    }
}
