//! The gRPC side of the subscribe stream proxy ([`wshub_core::proxy::stream`]): Centrifugo's
//! `SubscribeUnidirectional` (the subscribe request, then a stream of replies) and
//! `SubscribeBidirectional` (a stream each way, the subscribe request first) on the
//! endpoint's pooled connection, with the unary calls' metadata.
//!
//! The first reply must come within the endpoint's `timeout` and carry a
//! `subscribe_response`; after it, a task reads the publications into the session's sink
//! until the backend ends the stream or the handle is dropped (which aborts the task, and
//! dropping the call resets the HTTP/2 stream: the backend sees a cancellation).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor, Value as Pv};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use wshub_core::engine::BoxFuture;
use wshub_core::proxy::stream::{Opened, StreamEnd, StreamHandle, StreamSink};
use wshub_core::proxy::{Endpoint, ProxyFailure};

use super::proxy::{status_failure, GrpcProxy, Slot};
use super::transcode::{from_json, to_json};
use super::RawCodec;

/// Client publications waiting to go up a bidirectional stream.
const UPSTREAM_QUEUE: usize = 64;

impl GrpcProxy {
    /// Opens the stream of a subscribe stream `endpoint` with the JSON `SubscribeRequest`.
    pub fn open_stream<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        headers: &'a [(String, String)],
        body: Vec<u8>,
        bidirectional: bool,
        sink: Arc<dyn StreamSink>,
    ) -> BoxFuture<'a, Result<Opened, ProxyFailure>> {
        Box::pin(async move {
            let slot = self.slot(endpoint)?;
            match tokio::time::timeout(endpoint.config.timeout, open(slot, headers, &body, bidirectional, sink)).await {
                Ok(r) => r,
                Err(_) => Err(ProxyFailure::Timeout),
            }
        })
    }
}

fn garbage(e: impl std::fmt::Display) -> ProxyFailure {
    ProxyFailure::Garbage(e.to_string())
}

async fn open(
    slot: &Slot,
    headers: &[(String, String)],
    body: &[u8],
    bidirectional: bool,
    sink: Arc<dyn StreamSink>,
) -> Result<Opened, ProxyFailure> {
    let bad_request = |e: &dyn std::fmt::Display| ProxyFailure::Unreachable(format!("request: {e}"));
    let json: serde_json::Value = serde_json::from_slice(body).map_err(|e| bad_request(&e))?;
    let request = from_json(&slot.input, &json).map_err(|e| bad_request(&e))?;
    let mut grpc = {
        // Only opening counts against `max_in_flight`: a stream lasts as long as its
        // subscription.
        let _permit = slot.limit.acquire().await.map_err(|_| ProxyFailure::Unreachable("closed".into()))?;
        slot.grpc().await?
    };
    let (upstream, response) = match &slot.bidi {
        Some((path, stream_request)) if bidirectional => {
            let (tx, rx) = mpsc::channel::<Bytes>(UPSTREAM_QUEUE);
            let mut first = DynamicMessage::new(stream_request.clone());
            first.set_field_by_name("subscribe_request", Pv::Message(request));
            tx.send(Bytes::from(first.encode_to_vec()))
                .await
                .map_err(|_| ProxyFailure::Unreachable("closed".into()))?;
            let messages = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
            let r = grpc.streaming(slot.request(headers, messages), path.clone(), RawCodec).await;
            let upstream = Upstream {
                tx,
                message: stream_request.clone(),
            };
            (Some(upstream), r)
        }
        _ => {
            let req = slot.request(headers, Bytes::from(request.encode_to_vec()));
            (None, grpc.server_streaming(req, slot.path.clone(), RawCodec).await)
        }
    };
    let mut replies = response.map_err(|s| status_failure(&s))?.into_inner();
    let first = match replies.message().await {
        Ok(Some(m)) => m,
        Ok(None) => return Err(garbage("the stream ended before its first message")),
        Err(s) => return Err(status_failure(&s)),
    };
    let first = DynamicMessage::decode(slot.output.clone(), first).map_err(garbage)?;
    let Some(Pv::Message(subscribe)) = first
        .get_field_by_name("subscribe_response")
        .filter(|_| first.has_field_by_name("subscribe_response"))
        .map(|v| v.into_owned())
    else {
        return Err(garbage("no subscribe response in the stream's first message"));
    };
    let first = serde_json::to_vec(&to_json(&subscribe)).map_err(garbage)?;
    let output = slot.output.clone();
    let task = tokio::spawn(async move {
        loop {
            match replies.message().await {
                Ok(Some(m)) => match publication(&output, m) {
                    Some((data, tags)) => sink.publication(data, tags),
                    None => tracing::debug!("subscribe stream message without a publication skipped"),
                },
                Ok(None) => return sink.ended(StreamEnd::Finished),
                Err(s) => {
                    tracing::info!(code = ?s.code(), message = s.message(), "subscribe stream failed");
                    return sink.ended(StreamEnd::Failed);
                }
            }
        }
    });
    Ok(Opened {
        first: Bytes::from(first),
        handle: Box::new(GrpcStream {
            reader: task.abort_handle(),
            upstream,
        }),
    })
}

/// The data and tags of a reply's publication, if it has one.
fn publication(output: &MessageDescriptor, reply: Bytes) -> Option<(Bytes, HashMap<String, String>)> {
    let reply = DynamicMessage::decode(output.clone(), reply).ok()?;
    if !reply.has_field_by_name("publication") {
        return None;
    }
    let Pv::Message(p) = reply.get_field_by_name("publication")?.into_owned() else {
        return None;
    };
    let data = match p.get_field_by_name("data").map(|v| v.into_owned()) {
        Some(Pv::Bytes(b)) => b,
        _ => Bytes::new(),
    };
    let mut tags = HashMap::new();
    if let Some(Pv::Map(m)) = p.get_field_by_name("tags").map(|v| v.into_owned()) {
        for (k, v) in m {
            if let (prost_reflect::MapKey::String(k), Pv::String(v)) = (k, v) {
                tags.insert(k, v);
            }
        }
    }
    Some((data, tags))
}

/// The sending half of a bidirectional stream.
struct Upstream {
    tx: mpsc::Sender<Bytes>,
    /// `StreamSubscribeRequest`.
    message: MessageDescriptor,
}

struct GrpcStream {
    reader: AbortHandle,
    upstream: Option<Upstream>,
}

impl Drop for GrpcStream {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl StreamHandle for GrpcStream {
    fn publish(&self, data: Bytes) -> BoxFuture<'_, Result<(), ProxyFailure>> {
        Box::pin(async move {
            let Some(up) = &self.upstream else {
                return Err(ProxyFailure::Unreachable("a unidirectional stream".into()));
            };
            let publication = up
                .message
                .get_field_by_name("publication")
                .and_then(|f| match f.kind() {
                    prost_reflect::Kind::Message(m) => Some(m),
                    _ => None,
                })
                .ok_or_else(|| garbage("no publication in StreamSubscribeRequest"))?;
            let mut p = DynamicMessage::new(publication);
            p.set_field_by_name("data", Pv::Bytes(data));
            let mut m = DynamicMessage::new(up.message.clone());
            m.set_field_by_name("publication", Pv::Message(p));
            up.tx
                .send(Bytes::from(m.encode_to_vec()))
                .await
                .map_err(|_| ProxyFailure::Unreachable("the stream has ended".into()))
        })
    }
}
