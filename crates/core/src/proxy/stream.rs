//! The subscribe stream proxy (Centrifugo's `SubscribeUnidirectional` and
//! `SubscribeBidirectional`): a subscribe without a token in a namespace with
//! `subscribe_stream_proxy_enabled` opens a gRPC stream to the backend. Its first message is
//! the subscribe answer (judged as the subscribe proxy's); every later one is a publication
//! for that one subscriber, which never passes through the broker (other subscribers of the
//! channel have streams of their own). With `subscribe_stream_proxy_bidirectional` the
//! subscriber's publications go up the same stream.
//!
//! The stream lives as long as the subscription: unsubscribing or disconnecting drops its
//! [`StreamHandle`], which cancels it. The backend ending it unsubscribes the client, as
//! Centrifugo: 2000 (server unsubscribe) when it finished the stream, 2500 (insufficient
//! state: the SDK subscribes again) when it failed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use wshub_protocol::{Publication, Push};

use super::{Answer, Caller, Endpoint, Envelope, ProxyFailure, ProxyTransport, SubscribeResultBody};
use crate::connection::{ConnectionHandle, Control};
use crate::engine::BoxFuture;
use crate::prepared::{Dialect, PreparedData};

/// Where a stream's later messages go (the transport's reader calls it).
pub trait StreamSink: Send + Sync {
    /// A publication from the backend, for this subscriber.
    fn publication(&self, data: Bytes, tags: HashMap<String, String>);
    /// The backend ended the stream (not called when the handle was dropped).
    fn ended(&self, end: StreamEnd);
}

/// How a backend ended a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The stream finished (gRPC OK).
    Finished,
    /// An error status, or the connection to the backend broke.
    Failed,
}

/// An open stream. Dropping it cancels the stream.
pub trait StreamHandle: Send + Sync {
    /// Sends a subscriber's publication up a bidirectional stream.
    fn publish(&self, data: Bytes) -> BoxFuture<'_, Result<(), ProxyFailure>>;
}

/// What [`ProxyTransport::open_stream`] gives back.
pub struct Opened {
    /// The first message's `subscribe_response`, as the JSON a subscribe proxy answers.
    pub first: Bytes,
    pub handle: Box<dyn StreamHandle>,
}

/// A subscription's stream, as the session keeps it.
pub struct ProxyStream {
    /// Unique in the process: an end reported for an earlier stream of the same channel
    /// (the client unsubscribed and subscribed again) is told apart.
    pub id: u64,
    pub bidirectional: bool,
    pub handle: Box<dyn StreamHandle>,
}

impl std::fmt::Debug for ProxyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyStream")
            .field("id", &self.id)
            .field("bidirectional", &self.bidirectional)
            .finish_non_exhaustive()
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Opens the stream of `connection`'s subscription to `channel` (`fields`: the subscribe
/// request's own fields). `Err` is a failure, logged and counted: the client gets error 100.
pub async fn open(
    transport: &dyn ProxyTransport,
    endpoint: &Endpoint,
    caller: &Caller<'_>,
    fields: serde_json::Map<String, serde_json::Value>,
    bidirectional: bool,
    connection: Arc<dyn ConnectionHandle>,
    channel: &str,
) -> Result<(Answer<SubscribeResultBody>, ProxyStream), ProxyFailure> {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let sink = Arc::new(ConnectionSink {
        connection,
        channel: channel.to_string(),
        id,
    });
    let (body, headers) = super::request(endpoint, caller, fields);
    let started = Instant::now();
    let inflight = crate::series::ProxyInflight::start(endpoint.protocol(), endpoint.kind.as_str(), &endpoint.name);
    let r = transport.open_stream(endpoint, &headers, body, bidirectional, sink).await;
    let took = started.elapsed();
    drop(inflight);
    let mut handle = None;
    let envelope = r.and_then(|o| {
        handle = Some(o.handle);
        serde_json::from_slice::<Envelope<SubscribeResultBody>>(&o.first).map_err(|e| ProxyFailure::Garbage(e.to_string()))
    });
    let answer = super::judge(endpoint, caller, envelope, took)?;
    // Present whenever the envelope is (both come from the same `Opened`).
    let handle = handle.ok_or_else(|| ProxyFailure::Garbage("no stream".into()))?;
    Ok((answer, ProxyStream { id, bidirectional, handle }))
}

/// Delivers a stream's publications to its one connection, and reports its end there.
struct ConnectionSink {
    connection: Arc<dyn ConnectionHandle>,
    channel: String,
    id: u64,
}

impl StreamSink for ConnectionSink {
    fn publication(&self, data: Bytes, tags: HashMap<String, String>) {
        let encoding = self.connection.encoding();
        if encoding.dialect != Dialect::Centrifugo {
            return;
        }
        let push = Push {
            channel: self.channel.clone(),
            r#pub: Some(Publication {
                data,
                tags,
                ..Default::default()
            }),
            ..Default::default()
        };
        if let Some(p) = PreparedData::for_one(encoding, push) {
            self.connection.deliver(&p);
        }
    }

    fn ended(&self, end: StreamEnd) {
        self.connection.control(Control::StreamEnded {
            channel: self.channel.clone(),
            stream: self.id,
            failed: end == StreamEnd::Failed,
        });
    }
}
