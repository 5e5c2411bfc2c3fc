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
    /// `uni_grpc`: Centrifugo's `CentrifugoUniStream.Consume`, a gRPC response stream of
    /// bare Protobuf pushes, one message each ([`crate::grpc::uni`] serves it).
    UniGrpc,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::HttpStream => "http_stream",
            Transport::Sse => "sse",
            Transport::UniHttpStream => "uni_http_stream",
            Transport::UniSse => "uni_sse",
            Transport::UniGrpc => "uni_grpc",
        }
    }

    /// Unidirectional: the client sends its connect request and nothing else.
    pub fn unidirectional(self) -> bool {
        matches!(self, Transport::UniHttpStream | Transport::UniSse | Transport::UniGrpc)
    }

    /// The bidirectional transport whose framing this one writes (its lines are the
    /// unidirectional forms).
    fn framing(self) -> Transport {
        match self {
            Transport::UniSse | Transport::Sse => Transport::Sse,
            Transport::UniHttpStream | Transport::HttpStream => Transport::HttpStream,
            Transport::UniGrpc => Transport::UniGrpc,
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
        // One gRPC message: the push without its length prefix (gRPC frames it).
        (Transport::UniGrpc, _) => grpc_message(payload).into_iter().collect(),
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

/// A length-delimited Protobuf message (a unidirectional push) as one gRPC message: a slice
/// of it, without the prefix. `None` for an empty one or one that is cut.
fn grpc_message(delimited: &Bytes) -> Option<Bytes> {
    let mut rest = &delimited[..];
    let len = usize::try_from(prost::encoding::decode_varint(&mut rest).ok()?).ok()?;
    let start = delimited.len() - rest.len();
    (len > 0 && rest.len() == len).then(|| delimited.slice(start..))
}

/// Chunks buffered between the session's task and hyper's body (streams through hyper);
/// past them, the task waits (at most `websocket.write_timeout`) for the client to read.
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
            (Transport::UniGrpc, _) => return grpc_message(push.payload()),
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
/// step of the pump, then written out by the stream's loop ([`Out`]).
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
            if self.transport.unidirectional() {
                for p in super::uni::uni_outputs(self.format, &b) {
                    self.send_reply(p);
                }
            } else {
                self.send_reply(b);
            }
        }
        self.ended = true;
    }
}

/// The streaming response body. Through hyper, the session runs in a task of its own on
/// the body's first poll and the body reads its chunks from a channel; on the raw socket
/// path ([`super::raw`]) it runs in the connection's own task instead
/// ([`StreamBody::serve`]): one task and no channel per stream.
pub struct StreamBody(BodyState);

enum BodyState {
    /// Not started yet. In a mutex only for `Sync` (hyper's boxed bodies must be); never
    /// contended: it is reached through `&mut`.
    Ready(std::sync::Mutex<Option<Box<Stream>>>),
    Running(mpsc::Receiver<Bytes>),
}

impl StreamBody {
    /// Runs the connect now, before the response is answered (Centrifugo's
    /// `connect_code_to_http_response`): the refusal when the connect is refused (the
    /// stream is then over and is dropped), `None` when the stream goes on.
    pub async fn connect_first(&mut self) -> Option<wshub_core::session::ConnectRefusal> {
        let BodyState::Ready(m) = &mut self.0 else { return None };
        let stream = m.get_mut().ok()?.as_mut()?;
        let connect = std::mem::take(&mut stream.connect);
        let span = stream.span.clone();
        let refusal = async {
            Box::pin(stream.pump.input(connect, &mut stream.sink)).await;
            if stream.pump.session().state() == State::Connected {
                return None;
            }
            let refusal = stream.pump.session().connect_refusal().cloned();
            Box::pin(stream.pump.close()).await;
            refusal
        }
        .instrument(span)
        .await;
        stream.connected = true;
        refusal
    }

    /// Runs the stream in the caller's task, writing its chunks to `out`, until the session
    /// ends or the client leaves.
    pub(super) async fn serve<O: Out>(self, out: O) {
        if let BodyState::Ready(m) = self.0 {
            if let Some(stream) = m.into_inner().ok().flatten() {
                let span = stream.span.clone();
                stream.run(out).instrument(span).await;
            }
        }
    }
}

impl hyper::body::Body for StreamBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        if let BodyState::Ready(m) = &mut self.0 {
            let (tx, rx) = mpsc::channel(BODY_CHUNKS);
            if let Some(stream) = m.get_mut().ok().and_then(Option::take) {
                let span = stream.span.clone();
                let out = ChannelOut {
                    body: tx,
                    write_timeout: stream.write_timeout,
                };
                tokio::spawn(stream.run(out).instrument(span));
            }
            self.0 = BodyState::Running(rx);
        }
        match &mut self.0 {
            BodyState::Running(rx) => rx.poll_recv(cx).map(|c| c.map(|b| Ok(hyper::body::Frame::data(b)))),
            BodyState::Ready(_) => Poll::Ready(None),
        }
    }
}

/// Where a stream's chunks go: the response body's channel, or the socket itself.
pub(super) trait Out: Send {
    /// Writes `chunks` in order; false when the client is gone or reads nothing in time.
    fn write(&mut self, chunks: Vec<Bytes>) -> impl std::future::Future<Output = bool> + Send;
    /// Completes when the client has gone.
    fn gone(&mut self) -> impl std::future::Future<Output = ()> + Send;
    /// Ends the response after the last chunk.
    fn finish(&mut self) -> impl std::future::Future<Output = ()> + Send;
}

/// The channel that hyper's body reads.
struct ChannelOut {
    body: mpsc::Sender<Bytes>,
    write_timeout: Option<Duration>,
}

impl Out for ChannelOut {
    async fn write(&mut self, chunks: Vec<Bytes>) -> bool {
        for chunk in chunks {
            let sent = match self.write_timeout {
                Some(t) => tokio::time::timeout(t, self.body.send(chunk))
                    .await
                    .unwrap_or(Err(mpsc::error::SendError(Bytes::new()))),
                None => self.body.send(chunk).await,
            };
            if sent.is_err() {
                return false;
            }
        }
        true
    }

    async fn gone(&mut self) {
        self.body.closed().await
    }

    /// Dropping the sender ends the body.
    async fn finish(&mut self) {}
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

/// Opens an emulated connection whose first message is `connect` (the encoded commands of
/// the request body or `cf_connect`). Returns the body to stream, which runs the session
/// until the client goes away or is disconnected. `on_end` runs once the stream is over, or
/// dropped without running (it releases the node's connection count).
pub fn start(
    node: Arc<Node>,
    cluster: Arc<Cluster>,
    settings: StreamSettings,
    connect: Bytes,
    on_end: impl FnOnce() + Send + 'static,
) -> StreamBody {
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
    // Registered before the connect reply names it, so that the first /emulation finds it.
    // A unidirectional client sends nothing more: no command queue.
    let commands = session.as_ref().map(|id| {
        let (tx, rx) = mpsc::channel(COMMANDS_QUEUED);
        cluster.register_emulation(id, tx);
        rx
    });
    let mut pump = Pump::new(node, conn);
    pump.set_request_headers(settings.headers);
    StreamBody(BodyState::Ready(std::sync::Mutex::new(Some(Box::new(Stream {
        pump,
        sink: StreamSink {
            transport,
            format: settings.format,
            chunks: Vec::new(),
            bytes: 0,
            ended: false,
        },
        write_timeout: settings.write_timeout,
        connect,
        connected: false,
        commands,
        span: tracing::info_span!("conn", peer = %settings.peer),
        _registration: Registration {
            cluster,
            session,
            on_end: Some(Box::new(on_end)),
        },
    })))))
}

/// A stream's session, ready to run.
struct Stream {
    pump: Pump<StreamFraming>,
    sink: StreamSink,
    write_timeout: Option<Duration>,
    connect: Bytes,
    /// The connect already ran ([`StreamBody::connect_first`]).
    connected: bool,
    /// The `/emulation` requests for this session (none for a unidirectional stream).
    commands: Option<mpsc::Receiver<Bytes>>,
    span: tracing::Span,
    /// Released when the stream is over, however it ends.
    _registration: Registration,
}

/// A stream's place in the node: its `/emulation` registration and the caller's `on_end`.
struct Registration {
    cluster: Arc<Cluster>,
    session: Option<Box<str>>,
    on_end: Option<Box<dyn FnOnce() + Send>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(id) = &self.session {
            self.cluster.unregister_emulation(id);
        }
        if let Some(f) = self.on_end.take() {
            f();
        }
    }
}

impl Stream {
    /// The stream's loop. Idle, its future is the loop's small state: the work of each
    /// wake-up (the session's calls) is boxed only while it runs, as the WebSocket driver's
    /// handler futures are (measured in BENCHMARKS.md).
    async fn run<O: Out>(self: Box<Self>, mut out: O) {
        let Stream {
            mut pump,
            mut sink,
            connect,
            connected,
            mut commands,
            _registration,
            ..
        } = *self;
        if !connected {
            Box::pin(pump.input(connect, &mut sink)).await;
        }
        if pump.session().state() != State::Connected {
            // Refused: the reply (or its disconnect push) is the whole stream.
            sink.ended = true;
        }
        let mut gone = false;
        loop {
            sink.bytes = 0;
            if !Box::pin(out.write(std::mem::take(&mut sink.chunks))).await {
                gone = true;
                break;
            }
            if sink.ended {
                break;
            }
            let command = async {
                match commands.as_mut() {
                    Some(c) => c.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = std::future::poll_fn(|cx| pump.poll_work(cx, &mut sink)) => {
                    if pump.has_work() {
                        Box::pin(pump.run_work(&mut sink)).await;
                    }
                }
                cmd = command => match cmd {
                    Some(data) => Box::pin(pump.input(data, &mut sink)).await,
                    None => gone = true,
                },
                _ = out.gone() => gone = true,
            }
            if gone {
                break;
            }
        }
        if gone {
            let name = pump.conn().framing().transport.name();
            tracing::debug!(client = %pump.session().client_id(), transport = name, "stream closed by the client");
        }
        // The session's presence and subscriptions are released before the client sees the
        // end of the stream.
        Box::pin(pump.close()).await;
        if !gone {
            Box::pin(out.finish()).await;
        }
    }
}

/// Counts a stream for `/metrics` while it lives.
pub fn count_stream(transport: Transport) -> impl FnOnce() + Send + 'static {
    static OPEN: [std::sync::atomic::AtomicI64; 5] = [const { std::sync::atomic::AtomicI64::new(0) }; 5];
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
        // An error reply becomes centrifuge's disconnect for its code.
        let refused = Bytes::from_static(br#"{"id":1,"error":{"code":101,"message":"unauthorized"}}"#);
        let v: serde_json::Value = serde_json::from_slice(&joined(uni(Transport::UniHttpStream, &refused))).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"disconnect": {"code": 3004, "reason": "internal server error"}})
        );
        // Replies to commands have no unidirectional form.
        assert!(uni(Transport::UniHttpStream, &Bytes::from_static(br#"{"id":2,"subscribe":{}}"#)).is_empty());
    }

    #[test]
    fn uni_grpc_messages_are_bare_pushes_and_skip_pings() {
        use prost::Message as _;
        let connect = wshub_protocol::Reply {
            id: 1,
            connect: Some(wshub_protocol::ConnectResult {
                client: "c".into(),
                ping: 25,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut payload = connect.encode_length_delimited_to_vec();
        wshub_protocol::Reply::default().encode_length_delimited(&mut payload).unwrap();
        let outputs = crate::transport::uni::uni_outputs(Format::Protobuf, &Bytes::from(payload));
        let messages: Vec<Bytes> = outputs
            .iter()
            .flat_map(|o| frame(Transport::UniGrpc, Format::Protobuf, o))
            .collect();
        assert_eq!(messages.len(), 1, "the ping is left out");
        // Decoded with Centrifugo's unistream.proto.
        let desc = crate::grpc::pool()
            .unwrap()
            .get_message_by_name("centrifugal.centrifugo.unistream.Push")
            .unwrap();
        let push = prost_reflect::DynamicMessage::decode(desc, messages[0].clone()).unwrap();
        let json = crate::grpc::transcode::to_json(&push);
        assert_eq!(json["connect"]["client"], "c");
        assert!(json["connect"].get("ping").is_none(), "ping 0: {json}");
        // A cut or empty message is no message.
        assert!(grpc_message(&Bytes::from_static(&[5, 1])).is_none());
        assert!(grpc_message(&Bytes::from_static(&[0])).is_none());
    }
}
