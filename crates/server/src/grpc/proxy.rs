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

pub(super) type HttpClient = Client<Connector, tonic::body::Body>;

/// One `grpc://` endpoint.
pub(super) struct Slot {
    client: HttpClient,
    origin: http::Uri,
    pub(super) path: PathAndQuery,
    pub(super) input: MessageDescriptor,
    pub(super) output: MessageDescriptor,
    /// A subscribe stream endpoint's bidirectional method and its request message
    /// (`path` is the unidirectional one).
    pub(super) bidi: Option<(PathAndQuery, MessageDescriptor)>,
    pub(super) limit: Arc<Semaphore>,
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
        ProxyKind::SubscribeStream => "SubscribeUnidirectional",
    }
}

/// The bidirectional subscribe stream method.
const BIDI: &str = "SubscribeBidirectional";

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
    /// The client of a `grpc://` endpoint.
    pub(super) fn slot(&self, endpoint: &Endpoint) -> Result<&Slot, ProxyFailure> {
        match self.slots.get(endpoint.id) {
            Some(Some(slot)) => Ok(slot),
            _ => Err(ProxyFailure::Unreachable("unknown endpoint".into())),
        }
    }

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
            let bidi = match ep.kind {
                ProxyKind::SubscribeStream => {
                    let m = service
                        .methods()
                        .find(|m| m.name() == BIDI)
                        .ok_or_else(|| format!("{what}: no method {BIDI}"))?;
                    let p = PathAndQuery::try_from(format!("/{PROXY_SERVICE}/{BIDI}")).map_err(|e| format!("{what}: {e}"))?;
                    Some((p, m.input()))
                }
                _ => None,
            };
            slots.push(Some(Slot {
                client,
                origin,
                path,
                input: m.input(),
                output: m.output(),
                bidi,
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
            let slot = self.slot(endpoint)?;
            match tokio::time::timeout(endpoint.config.timeout, exchange(slot, headers, &body)).await {
                Ok(r) => r,
                Err(_) => Err(ProxyFailure::Timeout),
            }
        })
    }
}

impl Slot {
    /// `message` with the endpoint's metadata and the forwarded client headers.
    pub(super) fn request<T>(&self, headers: &[(String, String)], message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        let md = req.metadata_mut();
        for (k, v) in &self.metadata {
            md.insert(k.clone(), v.clone());
        }
        // Forwarded client headers win over static metadata of the same name.
        for (k, v) in headers {
            if let Ok((k, v)) = metadata_pair(k, v, "header") {
                md.insert(k, v);
            }
        }
        req
    }

    /// A client on the endpoint's connection, ready for a call.
    pub(super) async fn grpc(&self) -> Result<tonic::client::Grpc<HttpClient>, ProxyFailure> {
        let mut grpc = tonic::client::Grpc::with_origin(self.client.clone(), self.origin.clone()).max_decoding_message_size(MAX_REPLY);
        if self.compression {
            grpc = grpc
                .send_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Gzip);
        }
        grpc.ready()
            .await
            .map_err(|e| ProxyFailure::Unreachable(crate::proxy::error_chain(&e)))?;
        Ok(grpc)
    }
}

/// A gRPC status as a proxy failure.
pub(super) fn status_failure(s: &tonic::Status) -> ProxyFailure {
    match s.code() {
        tonic::Code::Unavailable => ProxyFailure::Unreachable(s.message().to_string()),
        tonic::Code::DeadlineExceeded => ProxyFailure::Timeout,
        c => ProxyFailure::GrpcStatus(format!("{c:?}: {}", s.message())),
    }
}

async fn exchange(slot: &Slot, headers: &[(String, String)], body: &[u8]) -> Result<Bytes, ProxyFailure> {
    let _permit = slot.limit.acquire().await.map_err(|_| ProxyFailure::Unreachable("closed".into()))?;
    let json: serde_json::Value = serde_json::from_slice(body).map_err(|e| ProxyFailure::Unreachable(format!("request: {e}")))?;
    let request = from_json(&slot.input, &json).map_err(|e| ProxyFailure::Unreachable(format!("request: {e}")))?;
    let req = slot.request(headers, Bytes::from(request.encode_to_vec()));
    let mut grpc = slot.grpc().await?;
    let reply = grpc.unary(req, slot.path.clone(), RawCodec).await.map_err(|s| status_failure(&s))?;
    let reply = DynamicMessage::decode(slot.output.clone(), reply.into_inner()).map_err(|e| ProxyFailure::Garbage(e.to_string()))?;
    serde_json::to_vec(&to_json(&reply))
        .map(Bytes::from)
        .map_err(|e| ProxyFailure::Garbage(e.to_string()))
}
