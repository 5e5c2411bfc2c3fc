//! `GET /admin/live?channel=…`: the admin page's live view of a channel. The page's own
//! connection (this Server-Sent Events stream, behind its admin session) is subscribed to
//! the channel in this node's hub like any client's, so it sees every publication this node
//! delivers, from any node, on the same push path; no token is minted for it and no
//! channel permission applies, as for the server API the admin already holds.
//!
//! Each publication is an SSE `data:` line holding the bare push JSON of Centrifugo's
//! unidirectional transports (`{"channel": …, "pub": {…}}`). The view is lossy by design: a
//! page that falls [`QUEUE`] pushes behind misses some rather than holding memory.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt as _;
use tokio::sync::mpsc;
use wshub_core::connection::{ConnectionHandle, Control, Encoding, TransportInfo};
use wshub_core::node::Node;
use wshub_core::prepared::PreparedData;
use wshub_protocol::Format;

use crate::response::{error_json, Body};

/// Pushes a live view may fall behind by before it misses some.
pub const QUEUE: usize = 256;
/// An SSE comment this often keeps proxies from cutting an idle view.
pub const KEEPALIVE: Duration = Duration::from_secs(25);

/// The live view's side of the hub: its pushes go to the stream's queue.
struct Watcher {
    id: u64,
    tx: mpsc::Sender<Bytes>,
}

impl ConnectionHandle for Watcher {
    fn id(&self) -> u64 {
        self.id
    }
    fn encoding(&self) -> Encoding {
        Encoding::new(Format::Json, true)
    }
    fn deliver(&self, push: &PreparedData) {
        // Full: this push is not shown (see the module's note); closed: the page left.
        let _ = self.tx.try_send(push.payload().clone());
    }
    fn control(&self, _: Control) {}
    fn transport(&self) -> TransportInfo<'_> {
        TransportInfo {
            name: "admin",
            emulation_session: None,
        }
    }
}

/// Takes the watcher out of the hub when the stream ends (the page closed or left).
struct Watch {
    node: Arc<Node>,
    channel: String,
    id: u64,
}

impl Drop for Watch {
    fn drop(&mut self) {
        if self.node.hub.remove(&self.channel, self.id) {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let (node, channel) = (self.node.clone(), std::mem::take(&mut self.channel));
                rt.spawn(async move {
                    let _ = node.broker.unsubscribe(&channel).await;
                });
            }
        }
    }
}

/// Subscribes a new live view to `channel` and answers its stream.
pub(super) async fn live(node: &Arc<Node>, channel: &str) -> Response<Body> {
    if channel.is_empty() {
        return error_json(StatusCode::BAD_REQUEST, "channel required");
    }
    if let Err(e) = node.options(channel) {
        return error_json(StatusCode::BAD_REQUEST, &format!("{channel}: {e}"));
    }
    let (tx, rx) = mpsc::channel(QUEUE);
    let id = node.next_connection_id();
    node.hub.add(channel, Arc::new(Watcher { id, tx }), false, false);
    let watch = Watch {
        node: node.clone(),
        channel: channel.to_string(),
        id,
    };
    if let Err(e) = node.broker.subscribe(channel).await {
        tracing::debug!(error = %e, channel, "admin live view: broker");
        return error_json(StatusCode::SERVICE_UNAVAILABLE, "the engine is unavailable");
    }
    let first = Bytes::from_static(b"event: subscribed\ndata: {}\n\n");
    let frames = futures_util::stream::unfold((Some(first), watch, rx), |(first, watch, mut rx)| async move {
        let b = match first {
            Some(f) => f,
            None => match tokio::time::timeout(KEEPALIVE, rx.recv()).await {
                Err(_) => Bytes::from_static(b": keepalive\n\n"),
                Ok(None) => return None,
                Ok(Some(push)) => {
                    let mut b = Vec::with_capacity(push.len() + 8);
                    b.extend_from_slice(b"data: ");
                    b.extend_from_slice(&push);
                    b.extend_from_slice(b"\n\n");
                    Bytes::from(b)
                }
            },
        };
        Some((Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(b)), (None, watch, rx)))
    });
    let mut r = Response::new(http_body_util::StreamBody::new(frames).boxed());
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
