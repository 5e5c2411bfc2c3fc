//! The gRPC side of the backend proxies: a `grpc://host:port` endpoint is called as
//! Centrifugo calls it, `centrifugal.centrifugo.proxy.CentrifugoProxy/<Kind>`, with the
//! request the core built as JSON transcoded to the kind's protobuf message and the reply
//! transcoded back ([`super::transcode`]), so that the core judges it as an HTTP answer.
//!
//! One HTTP/2 connection pool per endpoint (hyper-util's, through the HTTP proxies'
//! connector), kept across calls; `max_in_flight` and `timeout` as for HTTP; forwarded
//! client headers, `grpc.static_metadata` and `grpc.credentials_key`/`_value` as metadata;
//! `grpc.compression` gzips. A status other than OK, a reply that is not the kind's message,
//! a backend down or slow: the same failures as HTTP's (error 100 for the client).

use std::sync::Arc;

use bytes::Bytes;
use http::uri::PathAndQuery;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use tokio::sync::Semaphore;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use wshub_core::engine::BoxFuture;
use wshub_core::proxy::{Endpoint, Endpoints, ProxyFailure, ProxyKind, GRPC_SCHEME};

use super::transcode::{from_json, to_json};
use super::{RawCodec, PROXY_SERVICE};
use crate::proxy::Connector;

/// Largest reply message read from a backend (as the HTTP proxies' reply body).
const MAX_REPLY: usize = 4 << 20;

type HttpClient = Client<Connector, tonic::body::Body>;

/// One `grpc://` endpoint.
struct Slot {
    client: HttpClient,
    origin: http::Uri,
    path: PathAndQuery,
    input: MessageDescriptor,
    output: MessageDescriptor,
    limit: Arc<Semaphore>,
    /// Static metadata, then the credentials (valid ASCII, checked at start).
    metadata: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
    compression: bool,
}

/// The gRPC method of a proxy kind.
fn method(kind: ProxyKind) -> &'static str {
    match kind {
        ProxyKind::Connect => "Connect",
        ProxyKind::Refresh => "Refresh",
        ProxyKind::Subscribe => "Subscribe",
        ProxyKind::Publish => "Publish",
        ProxyKind::SubRefresh => "SubRefresh",
        ProxyKind::Rpc => "RPC",
        ProxyKind::SharedPollRefresh => "SharedPollRefresh",
        ProxyKind::MapPublish => "MapPublish",
        ProxyKind::MapRemove => "MapRemove",
    }
}

/// The proxies' gRPC clients, by endpoint id.
#[derive(Default)]
pub struct GrpcProxy {
    slots: Vec<Option<Slot>>,
}

fn metadata_pair(k: &str, v: &str, what: &str) -> Result<(AsciiMetadataKey, AsciiMetadataValue), String> {
    let key = AsciiMetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes()).map_err(|e| format!("{what} {k}: {e}"))?;
    let value = AsciiMetadataValue::try_from(v).map_err(|e| format!("{what} {k}: {e}"))?;
    Ok((key, value))
}

impl GrpcProxy {
    /// Clients for the `grpc://` endpoints of `endpoints`; one that cannot be used is
    /// refused here, naming it.
    pub fn new(endpoints: &Endpoints) -> Result<Self, String> {
        let service = super::service(PROXY_SERVICE).ok_or("the built-in gRPC descriptors lack the proxy service")?;
        let mut slots = Vec::new();
        for ep in endpoints.all() {
            if !ep.is_grpc() {
                slots.push(None);
                continue;
            }
            let c = &ep.config;
            let what = format!("{} proxy {}", ep.kind.as_str(), c.endpoint);
            let name = method(ep.kind);
            let m = service
                .methods()
                .find(|m| m.name() == name)
                .ok_or_else(|| format!("{what}: no method {name}"))?;
            let host = c.endpoint.trim_start_matches(GRPC_SCHEME).trim_end_matches('/');
            let tls = &c.grpc.tls;
            let scheme = if tls.enabled { "https" } else { "http" };
            let origin: http::Uri = format!("{scheme}://{host}").parse().map_err(|e| format!("{what}: {e}"))?;
            let connector =
                Connector::for_proxy(tls, "grpc.tls", vec![crate::tls::ALPN_H2.to_vec()]).map_err(|e| format!("{what}: {e}"))?;
            let client = Client::builder(TokioExecutor::new()).http2_only(true).build(connector);
            let mut metadata = Vec::new();
            for (k, v) in &c.grpc.static_metadata {
                metadata.push(metadata_pair(k, v, &format!("{what}: grpc.static_metadata"))?);
            }
            if !c.grpc.credentials_key.is_empty() {
                metadata.push(metadata_pair(
                    &c.grpc.credentials_key,
                    &c.grpc.credentials_value,
                    &format!("{what}: grpc.credentials_key"),
                )?);
            }
            let path = PathAndQuery::try_from(format!("/{PROXY_SERVICE}/{name}")).map_err(|e| format!("{what}: {e}"))?;
            slots.push(Some(Slot {
                client,
                origin,
                path,
                input: m.input(),
                output: m.output(),
                limit: Arc::new(Semaphore::new(c.max_in_flight)),
                metadata,
                compression: c.grpc.compression,
            }));
        }
        Ok(GrpcProxy { slots })
    }

    /// Calls `endpoint` with the JSON request `body`; the reply as JSON.
    pub fn post<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        headers: &'a [(String, String)],
        body: Vec<u8>,
    ) -> BoxFuture<'a, Result<Bytes, ProxyFailure>> {
        Box::pin(async move {
            let Some(Some(slot)) = self.slots.get(endpoint.id) else {
                return Err(ProxyFailure::Unreachable("unknown endpoint".into()));
            };
            match tokio::time::timeout(endpoint.config.timeout, exchange(slot, headers, &body)).await {
                Ok(r) => r,
                Err(_) => Err(ProxyFailure::Timeout),
            }
        })
    }
}

async fn exchange(slot: &Slot, headers: &[(String, String)], body: &[u8]) -> Result<Bytes, ProxyFailure> {
    let _permit = slot.limit.acquire().await.map_err(|_| ProxyFailure::Unreachable("closed".into()))?;
    let json: serde_json::Value = serde_json::from_slice(body).map_err(|e| ProxyFailure::Unreachable(format!("request: {e}")))?;
    let request = from_json(&slot.input, &json).map_err(|e| ProxyFailure::Unreachable(format!("request: {e}")))?;
    let mut req = tonic::Request::new(Bytes::from(request.encode_to_vec()));
    let md = req.metadata_mut();
    for (k, v) in &slot.metadata {
        md.insert(k.clone(), v.clone());
    }
    // Forwarded client headers win over static metadata of the same name.
    for (k, v) in headers {
        if let Ok((k, v)) = metadata_pair(k, v, "header") {
            md.insert(k, v);
        }
    }
    let mut grpc = tonic::client::Grpc::with_origin(slot.client.clone(), slot.origin.clone()).max_decoding_message_size(MAX_REPLY);
    if slot.compression {
        grpc = grpc
            .send_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Gzip);
    }
    grpc.ready()
        .await
        .map_err(|e| ProxyFailure::Unreachable(crate::proxy::error_chain(&e)))?;
    let reply = grpc.unary(req, slot.path.clone(), RawCodec).await.map_err(|s| match s.code() {
        tonic::Code::Unavailable => ProxyFailure::Unreachable(s.message().to_string()),
        tonic::Code::DeadlineExceeded => ProxyFailure::Timeout,
        c => ProxyFailure::GrpcStatus(format!("{c:?}: {}", s.message())),
    })?;
    let reply = DynamicMessage::decode(slot.output.clone(), reply.into_inner()).map_err(|e| ProxyFailure::Garbage(e.to_string()))?;
    serde_json::to_vec(&to_json(&reply))
        .map(Bytes::from)
        .map_err(|e| ProxyFailure::Garbage(e.to_string()))
}
