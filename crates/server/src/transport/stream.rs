//! Bidirectional emulation (Centrifugo's HTTP-streaming and SSE transports), for clients
//! behind proxies that break WebSocket, and the unidirectional `uni_http_stream` and
//! `uni_sse`.
//!
//! The client receives over one long HTTP response: `POST /connection/http_stream` with the
//! connect command in its body (JSON: replies one per line; Protobuf: varint-length-prefixed),
//! or `GET /connection/sse?cf_connect=<connect command>` (JSON as `data:` events). Its later
//! commands arrive as `POST /emulation` requests (`crate::emulation`) on any node: the node
//! holding the session takes them from its [`crate::cluster::Cluster`] registry; another
//! node forwards them there through the engine's node control, so no sticky sessions are
//! needed.
//!
//! The session and its pump are the same as a WebSocket's ([`super::Pump`]); only the
//! framing differs: a push is framed once (a line, an SSE event) in its framing cache and
//! shared by every stream of the kind.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tracing::Instrument as _;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use wshub_core::connection::{Encoding, TransportInfo};
use wshub_core::node::Node;
use wshub_core::prepared::PreparedData;
use wshub_core::session::State;
use wshub_protocol::Format;

use super::{Conn, Framing, Pump, Sink, LINE_SLOT, SSE_SLOT};
use crate::cluster::Cluster;

/// The HTTP transport a session streams over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `POST /connection/http_stream`.
    HttpStream,
    /// `GET /connection/sse`.
    Sse,
    /// `POST /connection/uni_http_stream`: unidirectional, JSON lines of pushes.
    UniHttpStream,
    /// `GET` (or `POST`) `/connection/uni_sse`: unidirectional, pushes as `data:` events.
    UniSse,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::HttpStream => "http_stream",
            Transport::Sse => "sse",
            Transport::UniHttpStream => "uni_http_stream",
            Transport::UniSse => "uni_sse",
        }
    }

    /// Unidirectional: the client sends its connect request and nothing else.
    pub fn unidirectional(self) -> bool {
        matches!(self, Transport::UniHttpStream | Transport::UniSse)
    }

    /// The bidirectional transport whose framing this one writes (its lines are the
    /// unidirectional forms).
    fn framing(self) -> Transport {
        match self {
            Transport::UniSse | Transport::Sse => Transport::Sse,
            Transport::UniHttpStream | Transport::HttpStream => Transport::HttpStream,
        }
    }
}

/// The framing of one output of the session for `transport` (bidirectional: see
/// [`Transport::framing`]) and `format`, as chunks that share the payload's bytes.
fn frame(transport: Transport, format: Format, payload: &Bytes) -> Vec<Bytes> {
    match (transport.framing(), format) {
        (Transport::HttpStream, Format::Json) => vec![payload.clone(), Bytes::from_static(b"\n")],
        // Protobuf payloads are already a sequence of varint-length-prefixed replies.
        (Transport::HttpStream, Format::Protobuf) => vec![payload.clone()],
        (_, _) => {
            if !payload.contains(&b'\n') {
                return vec![Bytes::from_static(b"data: "), payload.clone(), Bytes::from_static(b"\n\n")];
            }
            // Several replies, one per line: one event with a `data:` line each, which the
            // browser joins back with newlines.
            let mut b = BytesMut::with_capacity(payload.len() + 16);
            for line in payload.split(|c| *c == b'\n') {
                b.extend_from_slice(b"data: ");
                b.extend_from_slice(line);
                b.extend_from_slice(b"\n");
            }
            b.extend_from_slice(b"\n");
            vec![b.freeze()]
        }
    }
}

/// Chunks buffered between the session's task and the socket; past them, the task waits
/// (at most `websocket.write_timeout`) for the client to read.
const BODY_CHUNKS: usize = 64;
/// `/emulation` requests queued for one session before more are refused (429).
pub const COMMANDS_QUEUED: usize = 64;

/// A stream's framing of pushes.
pub struct StreamFraming {
    transport: Transport,
    format: Format,
    /// The id `/emulation` requests name (none for a unidirectional stream).
    session: Option<Box<str>>,
}

impl Framing for StreamFraming {
    fn frame(&self, push: &PreparedData) -> Option<Bytes> {
        let concat = |parts: &[&[u8]]| Bytes::from(parts.concat());
        Some(match (self.transport.framing(), self.format) {
            (Transport::HttpStream, Format::Protobuf) => push.payload().clone(),
            (Transport::HttpStream, Format::Json) => push.framed(LINE_SLOT, |p| concat(&[p, b"\n"])),
            // A push is one line: one event.
            _ => push.framed(SSE_SLOT, |p| concat(&[b"data: ", p, b"\n\n"])),
        })
    }

    fn transport(&self) -> TransportInfo<'_> {
        TransportInfo {
            name: self.transport.name(),
            emulation_session: self.session.as_deref(),
        }
    }
}

/// The response body's side of a stream, as the pump's [`Sink`]: chunks gathered during a
/// step of the pump, then sent to the body ([`StreamSink::flush`]).
struct StreamSink {
    transport: Transport,
    format: Format,
    chunks: Vec<Bytes>,
    bytes: usize,
    /// The session ended the stream (its last chunks are in `chunks`).
    ended: bool,
}

impl Sink for StreamSink {
    fn pending_bytes(&self) -> usize {
        self.bytes
    }

    fn is_open(&self) -> bool {
        !self.ended
    }

    fn send_push(&mut self, frame: Bytes) {
        self.bytes += frame.len();
        self.chunks.push(frame);
    }

    fn send_reply(&mut self, payload: Bytes) {
        for c in frame(self.transport, self.format, &payload) {
            self.send_push(c);
        }
    }

    /// A stream has no close code: the client is told why in a `disconnect` push.
    fn close(&mut self, code: u16, reason: &str, discard: bool) {
        if discard {
            self.chunks = Vec::new();
            self.bytes = 0;
        }
        let push = wshub_protocol::Reply {
            push: Some(wshub_protocol::Push {
                disconnect: Some(wshub_protocol::Disconnect {
                    code: u32::from(code),
                    reason: reason.to_string(),
                    reconnect: false,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut b = BytesMut::new();
        if wshub_protocol::codec::encode_reply(self.format, &push, &mut b).is_ok() {
            let b = b.freeze();
            let payload = if self.transport.unidirectional() {
                super::uni::uni_line(b)
            } else {
                Some(b)
            };
            if let Some(p) = payload {
                self.send_reply(p);
            }
        }
        self.ended = true;
    }
}

impl StreamSink {
    /// Sends the gathered chunks to the body, each within `write_timeout`; false when the
    /// client is gone or reads nothing in time.
    async fn flush(&mut self, body: &mpsc::Sender<Bytes>, write_timeout: Option<Duration>) -> bool {
        self.bytes = 0;
        for chunk in std::mem::take(&mut self.chunks) {
            let sent = match write_timeout {
                Some(t) => tokio::time::timeout(t, body.send(chunk))
                    .await
                    .unwrap_or(Err(mpsc::error::SendError(Bytes::new()))),
                None => body.send(chunk).await,
            };
            if sent.is_err() {
                return false;
            }
        }
        true
    }
}

/// The streaming response body: chunks from the session's task.
pub struct StreamBody(mpsc::Receiver<Bytes>);

impl StreamBody {
    /// The next chunk; `None` once the session is over.
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.0.recv().await
    }

    /// A chunk already queued, if any.
    pub fn try_recv(&mut self) -> Option<Bytes> {
        self.0.try_recv().ok()
    }
}

impl hyper::body::Body for StreamBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|c| c.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// A new random session id (128 bits, hex).
fn session_id() -> String {
    let b: [u8; 16] = rand::random();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Settings of an emulated connection.
#[derive(Clone)]
pub struct StreamSettings {
    pub transport: Transport,
    pub format: Format,
    /// `client.queue_max_size`.
    pub max_queue: usize,
    /// `websocket.write_timeout`: a client that reads nothing for this long is dropped.
    pub write_timeout: Option<Duration>,
    /// The request headers that a configured proxy forwards (`Cookie`…).
    pub headers: Vec<(String, String)>,
    /// The client's address, for the connection's log span (as WebSocket connections).
    pub peer: std::net::SocketAddr,
}

/// Starts an emulated connection whose first message is `connect` (the encoded commands of
/// the request body or `cf_connect`). Returns the body to stream; the session runs in a
/// task of its own until the client goes away or is disconnected. `on_end` runs once the
/// task is over (it releases the node's connection count).
pub fn start(
    node: Arc<Node>,
    cluster: Arc<Cluster>,
    settings: StreamSettings,
    connect: Bytes,
    on_end: impl FnOnce() + Send + 'static,
) -> StreamBody {
    let (body_tx, body_rx) = mpsc::channel(BODY_CHUNKS);
    let transport = settings.transport;
    let uni = transport.unidirectional();
    let session = (!uni).then(|| session_id().into_boxed_str());
    let framing = StreamFraming {
        transport,
        format: settings.format,
        session: session.clone(),
    };
    let conn = Conn::new(
        node.next_connection_id(),
        Encoding::new(settings.format, uni),
        settings.max_queue,
        framing,
    );
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMANDS_QUEUED);
    // Registered before the connect reply names it, so that the first /emulation finds it.
    // A unidirectional client sends nothing more: nothing to register (the sender is
    // kept so that the command queue stays open).
    let keep = match &session {
        Some(id) => {
            cluster.register_emulation(id, cmd_tx);
            None
        }
        None => Some(cmd_tx),
    };
    let mut pump = Pump::new(node, conn);
    pump.set_request_headers(settings.headers.clone());
    let span = tracing::info_span!("conn", peer = %settings.peer);
    let sink = StreamSink {
        transport,
        format: settings.format,
        chunks: Vec::new(),
        bytes: 0,
        ended: false,
    };
    tokio::spawn(
        async move {
            run(pump, sink, body_tx, settings.write_timeout, connect, cmd_rx).await;
            drop(keep);
            if let Some(id) = session {
                cluster.unregister_emulation(&id);
            }
            on_end();
        }
        .instrument(span),
    );
    StreamBody(body_rx)
}

/// The stream's loop. Idle, its future is the loop's small state: the work of each wake-up
/// (the session's calls) is boxed only while it runs, as the WebSocket driver's handler
/// futures are (measured in BENCHMARKS.md).
async fn run(
    mut pump: Pump<StreamFraming>,
    mut sink: StreamSink,
    body: mpsc::Sender<Bytes>,
    write_timeout: Option<Duration>,
    connect: Bytes,
    mut commands: mpsc::Receiver<Bytes>,
) {
    Box::pin(pump.input(connect, &mut sink)).await;
    if pump.session().state() != State::Connected {
        // Refused: the reply (or its disconnect push) is the whole stream.
        sink.ended = true;
    }
    let mut gone = false;
    loop {
        if !Box::pin(sink.flush(&body, write_timeout)).await {
            gone = true;
            break;
        }
        if sink.ended {
            break;
        }
        tokio::select! {
            _ = std::future::poll_fn(|cx| pump.poll_work(cx, &mut sink)) => {
                if pump.has_work() {
                    Box::pin(pump.run_work(&mut sink)).await;
                }
            }
            cmd = commands.recv() => match cmd {
                Some(data) => Box::pin(pump.input(data, &mut sink)).await,
                None => gone = true,
            },
            _ = body.closed() => gone = true,
        }
        if gone {
            break;
        }
    }
    if gone {
        let name = pump.conn().framing().transport.name();
        tracing::debug!(client = %pump.session().client_id(), transport = name, "stream closed by the client");
    }
    Box::pin(pump.close()).await;
}

/// Counts a stream for `/metrics` while it lives.
pub fn count_stream(transport: Transport) -> impl FnOnce() + Send + 'static {
    static OPEN: [std::sync::atomic::AtomicI64; 4] = [const { std::sync::atomic::AtomicI64::new(0) }; 4];
    let i = transport as usize;
    let n = OPEN[i].fetch_add(1, Ordering::Relaxed) + 1;
    metrics::gauge!("wshub_emulation_streams", "transport" => transport.name()).set(n as f64);
    move || {
        let n = OPEN[i].fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::gauge!("wshub_emulation_streams", "transport" => transport.name()).set(n as f64);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn joined(v: Vec<Bytes>) -> Vec<u8> {
        v.concat()
    }

    /// A session's output as a unidirectional stream writes it (the pump's lines, framed).
    fn uni(transport: Transport, payload: &Bytes) -> Vec<Bytes> {
        crate::transport::uni::uni_lines(payload)
            .iter()
            .flat_map(|l| frame(transport, Format::Json, l))
            .collect()
    }

    #[test]
    fn framing_per_transport() {
        let one = Bytes::from_static(br#"{"id":1}"#);
        assert_eq!(joined(frame(Transport::HttpStream, Format::Json, &one)), b"{\"id\":1}\n");
        assert_eq!(joined(frame(Transport::Sse, Format::Json, &one)), b"data: {\"id\":1}\n\n");
        let two = Bytes::from_static(b"{\"id\":1}\n{\"id\":2}");
        assert_eq!(
            joined(frame(Transport::HttpStream, Format::Json, &two)),
            b"{\"id\":1}\n{\"id\":2}\n"
        );
        assert_eq!(
            joined(frame(Transport::Sse, Format::Json, &two)),
            b"data: {\"id\":1}\ndata: {\"id\":2}\n\n"
        );
        let pb = Bytes::from_static(&[2, 8, 1]);
        assert_eq!(joined(frame(Transport::HttpStream, Format::Protobuf, &pb)), vec![2, 8, 1]);
        // The payload is shared, not copied.
        let chunks = frame(Transport::HttpStream, Format::Json, &one);
        assert_eq!(chunks[0].as_ptr(), one.as_ptr());
    }

    #[test]
    fn unidirectional_framing_unwraps_pushes_without_copying() {
        let push = Bytes::from_static(br#"{"push":{"channel":"news","pub":{"data":{"n":1}}}}"#);
        let out = uni(Transport::UniHttpStream, &push);
        assert_eq!(
            joined(out.clone()),
            br#"{"channel":"news","pub":{"data":{"n":1}}}"#.to_vec().into_iter().chain(*b"\n").collect::<Vec<u8>>()
        );
        assert_eq!(out[0].as_ptr(), push.as_ptr().wrapping_add(8), "a slice of the shared payload");
        let connect = Bytes::from_static(b"{\"id\":1,\"connect\":{\"client\":\"c\"}}\n{}");
        assert_eq!(
            joined(uni(Transport::UniSse, &connect)),
            b"data: {\"connect\":{\"client\":\"c\"}}\n\ndata: {}\n\n".to_vec()
        );
        let refused = Bytes::from_static(br#"{"id":1,"error":{"code":101,"message":"unauthorized"}}"#);
        let v: serde_json::Value = serde_json::from_slice(&joined(uni(Transport::UniHttpStream, &refused))).unwrap();
        assert_eq!(v, serde_json::json!({"disconnect": {"code": 3500, "reason": "unauthorized"}}));
        // Replies to commands have no unidirectional form.
        assert!(uni(Transport::UniHttpStream, &Bytes::from_static(br#"{"id":2,"subscribe":{}}"#)).is_empty());
    }
}
