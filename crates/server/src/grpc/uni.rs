//! Centrifugo's unidirectional gRPC transport (`uni_grpc.*`): the client calls
//! `centrifugal.centrifugo.unistream.CentrifugoUniStream/Consume` with a `ConnectRequest`
//! and reads a stream of `Push` messages (the connect push first), as with `uni_websocket`.
//!
//! The connection is an ordinary stream session ([`crate::transport::stream`], transport
//! `uni_grpc`, Protobuf): the same outbox, pump and framing cache as every transport; tonic
//! only frames its messages and ends the call with status OK when the session ends (after
//! its `disconnect` push), as Centrifugo's does.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{Request, Response};
use http_body_util::BodyStream;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tonic::Status;
use wshub_core::engine::BoxFuture;
use wshub_protocol::Format;

use super::{GrpcPort, RawCodec};
use crate::state::Shared;
use crate::transport::stream::{self as emulation, Transport};

/// Centrifugo's service and its one method.
pub const CONSUME_PATH: &str = "/centrifugal.centrifugo.unistream.CentrifugoUniStream/Consume";

/// `uni_grpc.*`, resolved.
#[derive(Clone)]
pub struct UniGrpcConfig {
    pub port: GrpcPort,
    /// Largest connect request (0: tonic's 4 MiB).
    pub max_receive_message_size: usize,
}

impl UniGrpcConfig {
    /// `uni_grpc.*` of `config`, resolved (`None` when not enabled).
    pub fn from_config(config: &crate::config::Config) -> Result<Option<Self>, crate::config::LoadError> {
        let Some(addr) = crate::config::uni_grpc_addr(config)? else {
            return Ok(None);
        };
        let u = &config.uni_grpc;
        Ok(Some(UniGrpcConfig {
            port: GrpcPort::new(addr, "uni_grpc", &u.tls)?,
            max_receive_message_size: u.max_receive_message_size,
        }))
    }
}

/// Serves `uni_grpc` on `listener` until `shutdown` completes (open streams live on until
/// the drain disconnects their sessions).
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, cfg: UniGrpcConfig, shutdown: impl Future<Output = ()>) {
    let tls = cfg.port.tls.clone();
    let max = cfg.max_receive_message_size;
    let handler = move |req: Request<Incoming>, peer: SocketAddr| handle(req, peer, shared.clone(), max);
    super::serve_h2(listener, tls, "uni_grpc", handler, shutdown).await;
}

async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    max: usize,
) -> Result<Response<tonic::body::Body>, Infallible> {
    if req.uri().path() != CONSUME_PATH {
        return Ok(Status::unimplemented("no such method").into_http());
    }
    let headers = crate::transports::forwarded_headers(&shared.config.emulation.forwarded_headers, req.headers());
    let mut grpc = tonic::server::Grpc::new(RawCodec)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);
    if max > 0 {
        grpc = grpc.max_decoding_message_size(max);
    }
    Ok(grpc.server_streaming(Consume { shared, peer, headers }, req).await)
}

/// One `Consume` call.
struct Consume {
    shared: Arc<Shared>,
    peer: SocketAddr,
    headers: Vec<(String, String)>,
}

type Pushes = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Bytes, Status>> + Send>>;

impl tonic::server::ServerStreamingService<Bytes> for Consume {
    type Response = Bytes;
    type ResponseStream = Pushes;
    type Future = BoxFuture<'static, Result<tonic::Response<Pushes>, Status>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let (shared, peer, headers) = (self.shared.clone(), self.peer, std::mem::take(&mut self.headers));
        Box::pin(async move {
            let Some(api) = &shared.config.api else {
                return Err(Status::unavailable("no node"));
            };
            let connect = crate::transport::uni::uni_connect_protobuf(request.get_ref())
                .map_err(|e| Status::invalid_argument(format!("connect request: {e}")))?;
            if let Err((_, reason)) = crate::admission::admit(&shared, peer.ip()).await {
                return Err(Status::unavailable(reason));
            }
            shared.connections.opened();
            let done = emulation::count_stream(Transport::UniGrpc);
            let s = shared.clone();
            let body = emulation::start(
                api.node.clone(),
                api.cluster.clone(),
                emulation::StreamSettings {
                    transport: Transport::UniGrpc,
                    format: Format::Protobuf,
                    max_queue: shared.config.emulation.max_queue,
                    write_timeout: shared.config.write_timeout,
                    headers,
                    peer,
                },
                connect,
                move || {
                    s.connections.closed();
                    done();
                },
            );
            // Each chunk of a `uni_grpc` stream is one whole `Push` message.
            let pushes = BodyStream::new(body).filter_map(|f| std::future::ready(f.ok().and_then(|f| f.into_data().ok()).map(Ok)));
            Ok(tonic::Response::new(Box::pin(pushes) as Pushes))
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use prost::Message as _;
    use prost_reflect::{DynamicMessage, MapKey, Value};

    /// A `ConnectRequest` of Centrifugo's unistream.proto is the client protocol's.
    #[test]
    fn unistream_connect_request_is_the_protocols() {
        let pool = crate::grpc::pool().unwrap();
        let desc = pool.get_message_by_name("centrifugal.centrifugo.unistream.ConnectRequest").unwrap();
        let sub_desc = pool
            .get_message_by_name("centrifugal.centrifugo.unistream.SubscribeRequest")
            .unwrap();
        let mut sub = DynamicMessage::new(sub_desc);
        sub.set_field_by_name("recover", Value::Bool(true));
        sub.set_field_by_name("offset", Value::U64(5));
        sub.set_field_by_name("epoch", Value::String("e".into()));
        let mut req = DynamicMessage::new(desc);
        req.set_field_by_name("token", Value::String("t".into()));
        req.set_field_by_name("name", Value::String("n".into()));
        req.set_field_by_name(
            "subs",
            Value::Map([(MapKey::String("ch".into()), Value::Message(sub))].into_iter().collect()),
        );
        let command = crate::transport::uni::uni_connect_protobuf(&req.encode_to_vec()).unwrap();
        let command = wshub_protocol::Command::decode_length_delimited(command).unwrap();
        assert_eq!(command.id, 1);
        let connect = command.connect.unwrap();
        assert_eq!((connect.token.as_str(), connect.name.as_str()), ("t", "n"));
        let json = serde_json::to_value(&connect).unwrap();
        assert_eq!(json["subs"]["ch"]["offset"], 5, "{json}");
        assert_eq!(json["subs"]["ch"]["epoch"], "e");
        assert!(crate::transport::uni::uni_connect_protobuf(b"\xff\xff").is_err());
    }
}
