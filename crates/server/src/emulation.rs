//! Bidirectional emulation (Centrifugo's HTTP-streaming and SSE transports), for clients
//! behind proxies that break WebSocket.
//!
//! The client receives over one long HTTP response: `POST /connection/http_stream` with the
//! connect command in its body (JSON: replies one per line; Protobuf: varint-length-prefixed),
//! or `GET /connection/sse?cf_connect=<connect command>` (JSON as `data:` events). Its later
//! commands arrive as `POST /emulation` requests `{session, node, data}` on any node: the node
//! holding the session takes them from its [`crate::cluster::Cluster`] registry; another
//! node forwards them there through the engine's node control, so no sticky sessions are
//! needed.
//!
//! The session is the same [`Session`] as a WebSocket's, and the hub's pushes are the same
//! encoded payloads (encoded once per format and shared); only the framing differs, and it
//! is written beside the payload, not copied into it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tracing::Instrument as _;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};
use wshub_core::hub::{ConnectionHandle, Control};
use wshub_core::node::Node;
use wshub_core::session::{Output, Session};
use wshub_core::Now;
use wshub_protocol::codes::disconnect as dc;
use wshub_protocol::Format;
use wshub_websocket::PreparedMessage;

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
}

/// The unidirectional form of one line the session wrote (Centrifugo's unidirectional
/// protocol: bare pushes, no replies). A push `{"push":P}` becomes `P` without a copy (its
/// JSON encoding is exactly that wrapper); a ping `{}` stays; the connect reply becomes a
/// `connect` push; a connect error becomes a `disconnect` push. Other replies are not for
/// a client that sends no commands.
pub fn uni_line(line: Bytes) -> Option<Bytes> {
    const PUSH: &[u8] = b"{\"push\":";
    if line.starts_with(PUSH) && line.ends_with(b"}") {
        return Some(line.slice(PUSH.len()..line.len() - 1));
    }
    if &line[..] == b"{}" {
        return Some(line);
    }
    let v: serde_json::Value = serde_json::from_slice(&line).ok()?;
    if let Some(c) = v.get("connect") {
        return Some(Bytes::from(serde_json::json!({ "connect": c }).to_string()));
    }
    let e = v.get("error")?;
    let code = match e.get("code").and_then(serde_json::Value::as_u64) {
        Some(101 | 109) => dc::INVALID_TOKEN,
        _ => dc::BAD_REQUEST,
    };
    let reason = e.get("message").and_then(serde_json::Value::as_str).unwrap_or("connect refused");
    Some(Bytes::from(
        serde_json::json!({"disconnect": {"code": code, "reason": reason}}).to_string(),
    ))
}

/// Chunks buffered between the session's task and the socket; past them, the task waits
/// (at most `websocket.write_timeout`) for the client to read.
const BODY_CHUNKS: usize = 64;
/// `/emulation` requests queued for one session before more are refused (429).
pub const COMMANDS_QUEUED: usize = 64;

/// The framing of one payload for `transport` and `format`, as chunks that share the
/// payload's bytes.
pub fn frame(transport: Transport, format: Format, payload: &Bytes) -> Vec<Bytes> {
    if transport.unidirectional() {
        let bidi = match transport {
            Transport::UniSse => Transport::Sse,
            _ => Transport::HttpStream,
        };
        return uni_lines(payload).into_iter().flat_map(|l| frame(bidi, Format::Json, &l)).collect();
    }
    match (transport, format) {
        (Transport::HttpStream, Format::Json) => vec![payload.clone(), Bytes::from_static(b"\n")],
        // Protobuf payloads are already a sequence of varint-length-prefixed replies.
        (Transport::HttpStream, Format::Protobuf) => vec![payload.clone()],
        (Transport::Sse | Transport::UniSse | Transport::UniHttpStream, _) => {
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

#[derive(Default)]
struct Outbox {
    payloads: VecDeque<Bytes>,
    bytes: usize,
    overflow: bool,
    controls: VecDeque<Control>,
}

/// What the hub and the API reach of an emulated connection.
pub struct StreamConn {
    id: u64,
    format: Format,
    transport: Transport,
    uni: bool,
    session: String,
    max_queue: usize,
    outbox: Mutex<Outbox>,
    notify: Notify,
}

impl ConnectionHandle for StreamConn {
    fn id(&self) -> u64 {
        self.id
    }

    fn format(&self) -> Format {
        self.format
    }

    fn deliver(&self, frame: &PreparedMessage) {
        let payload = frame.payload().clone();
        let mut o = self.outbox.lock();
        if o.overflow {
            return;
        }
        if o.bytes + payload.len() > self.max_queue {
            // A slow reader: closed with 3008, its queue freed.
            o.overflow = true;
            o.payloads = VecDeque::new();
            o.bytes = 0;
        } else {
            o.bytes += payload.len();
            o.payloads.push_back(payload);
        }
        drop(o);
        self.notify.notify_one();
    }

    fn control(&self, control: Control) {
        self.outbox.lock().controls.push_back(control);
        self.notify.notify_one();
    }

    fn emulation_session(&self) -> Option<&str> {
        (!self.uni).then_some(self.session.as_str())
    }

    fn unidirectional(&self) -> bool {
        self.uni
    }

    fn transport_name(&self) -> &'static str {
        self.transport.name()
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
    let conn = Arc::new(StreamConn {
        id: node.next_connection_id(),
        format: settings.format,
        transport: settings.transport,
        uni: settings.transport.unidirectional(),
        session: session_id(),
        max_queue: settings.max_queue,
        outbox: Mutex::new(Outbox::default()),
        notify: Notify::new(),
    });
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMANDS_QUEUED);
    // Registered before the connect reply names it, so that the first /emulation finds it.
    // A unidirectional client sends nothing more: nothing to register (the sender is
    // kept so that the command queue stays open).
    let keep = if conn.uni {
        Some(cmd_tx)
    } else {
        cluster.register_emulation(&conn.session, cmd_tx);
        None
    };
    let mut session = Session::new(node, conn.clone(), Now::system());
    session.set_request_headers(settings.headers.clone());
    let task = Task {
        session,
        conn,
        inflight: None,
        settings,
        body: body_tx,
    };
    let span = tracing::info_span!("conn", peer = %task.settings.peer);
    tokio::spawn(
        async move {
            let session = task.conn.session.clone();
            task.run(connect, cmd_rx).await;
            drop(keep);
            cluster.unregister_emulation(&session);
            on_end();
        }
        .instrument(span),
    );
    StreamBody(body_rx)
}

/// Why the loop ends.
enum End {
    /// The client went away (its response was dropped) or read nothing in time.
    Gone,
    /// The session ended the connection (sent to the client first).
    Disconnected,
}

struct Task {
    session: Session,
    conn: Arc<StreamConn>,
    settings: StreamSettings,
    body: mpsc::Sender<Bytes>,
    /// Centrifugo's `transport_messages_sent` counters of this stream.
    /// Counts this stream in Centrifugo's `client_connections_inflight` once connected.
    inflight: Option<crate::metrics::centrifugo::Inflight>,
}

impl Task {
    /// Idle, this task's future is the loop's small state: the work of each wake-up
    /// (the session's calls, writes) is boxed only while it runs, as the WebSocket driver's
    /// handler futures are (measured in BENCHMARKS.md).
    async fn run(mut self, connect: Bytes, mut commands: mpsc::Receiver<Bytes>) {
        let transport = self.settings.transport.name();
        crate::metrics::centrifugo::transport_received(transport, connect.len());
        let out = Box::pin(self.session.handle_frame(connect, Now::system())).await;
        if self.session.state() == wshub_core::session::State::Connected {
            self.inflight = crate::metrics::centrifugo::connection_accepted(transport);
        }
        let mut end = Box::pin(self.apply(out)).await;
        if end.is_none() && self.session.state() != wshub_core::session::State::Connected {
            end = Some(End::Disconnected);
        }
        while end.is_none() {
            let timer = self.session.poll_timeout().map(crate::driver::coarse);
            let sleep = async {
                match timer {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.conn.notify.notified() => end = Box::pin(self.drain_outbox()).await,
                cmd = commands.recv() => match cmd {
                    Some(data) => {
                        crate::metrics::centrifugo::transport_received(transport, data.len());
                        let out = Box::pin(self.session.handle_frame(data, Now::system())).await;
                        end = Box::pin(self.apply(out)).await;
                    }
                    None => end = Some(End::Gone),
                },
                _ = sleep => {
                    let out = Box::pin(self.session.handle_timeout(Now::system())).await;
                    end = Box::pin(self.apply(out)).await;
                }
                _ = self.body.closed() => end = Some(End::Gone),
            }
        }
        if let Some(End::Gone) = end {
            tracing::debug!(client = %self.session.client_id(), transport = self.settings.transport.name(), "stream closed by the client");
        }
        Box::pin(self.session.close()).await;
        let mut o = self.conn.outbox.lock();
        o.payloads = VecDeque::new();
        o.controls = VecDeque::new();
        o.bytes = 0;
    }

    /// Writes the queued pushes and runs the queued controls.
    async fn drain_outbox(&mut self) -> Option<End> {
        loop {
            let (payloads, controls, overflow) = {
                let mut o = self.conn.outbox.lock();
                o.bytes = 0;
                (
                    std::mem::take(&mut o.payloads),
                    std::mem::take(&mut o.controls),
                    std::mem::take(&mut o.overflow),
                )
            };
            if overflow {
                return self.disconnect(dc::SLOW, "slow").await;
            }
            if payloads.is_empty() && controls.is_empty() {
                return None;
            }
            for p in payloads {
                if let Some(end) = self.write(&p).await {
                    return Some(end);
                }
            }
            for c in controls {
                let out = self.session.handle_control(c, Now::system()).await;
                if let Some(end) = self.apply(out).await {
                    return Some(end);
                }
            }
        }
    }

    async fn apply(&mut self, out: Output) -> Option<End> {
        if let Some(frame) = out.frame {
            if let Some(end) = self.write(&frame).await {
                return Some(end);
            }
        }
        match out.disconnect {
            Some((code, reason)) => self.disconnect(code, &reason).await,
            None => None,
        }
    }

    /// Tells the client why it is closed (a `disconnect` push; a stream has no close code),
    /// then ends.
    async fn disconnect(&mut self, code: u16, reason: &str) -> Option<End> {
        tracing::debug!(code, %reason, client = %self.session.client_id(), "disconnect");
        crate::metrics::centrifugo::server_disconnect(code);
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
        if wshub_protocol::codec::encode_reply(self.settings.format, &push, &mut b).is_ok() {
            let _ = self.write(&b.freeze()).await;
        }
        Some(End::Disconnected)
    }

    async fn write(&mut self, payload: &Bytes) -> Option<End> {
        crate::metrics::centrifugo::transport_sent(self.settings.transport.name(), 1, payload.len());
        for chunk in frame(self.settings.transport, self.settings.format, payload) {
            let sent = match self.settings.write_timeout {
                Some(t) => tokio::time::timeout(t, self.body.send(chunk))
                    .await
                    .unwrap_or(Err(mpsc::error::SendError(Bytes::new()))),
                None => self.body.send(chunk).await,
            };
            if sent.is_err() {
                return Some(End::Gone);
            }
        }
        None
    }
}

/// An `/emulation` request: `{session, node, data}`, JSON (`data` a string of commands) or
/// Protobuf (`EmulationRequest`).
#[derive(Debug, PartialEq)]
pub struct EmulationRequest {
    pub node: String,
    pub session: String,
    pub data: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EmulationRequestPb {
    #[prost(string, tag = "1")]
    node: String,
    #[prost(string, tag = "2")]
    session: String,
    #[prost(bytes = "bytes", tag = "3")]
    data: Bytes,
}

/// Parses an `/emulation` body in `format`.
pub fn parse_emulation(format: Format, body: &Bytes) -> Result<EmulationRequest, String> {
    match format {
        Format::Json => {
            #[derive(serde::Deserialize)]
            struct J {
                #[serde(default)]
                node: String,
                session: String,
                data: serde_json::Value,
            }
            let j: J = serde_json::from_slice(body).map_err(|e| format!("bad emulation request: {e}"))?;
            // centrifuge-js sends the commands as a string; a JSON value is accepted too.
            let data = match j.data {
                serde_json::Value::String(s) => Bytes::from(s),
                v => Bytes::from(v.to_string()),
            };
            Ok(EmulationRequest {
                node: j.node,
                session: j.session,
                data,
            })
        }
        Format::Protobuf => {
            let p = <EmulationRequestPb as prost::Message>::decode(body.clone()).map_err(|e| format!("bad emulation request: {e}"))?;
            Ok(EmulationRequest {
                node: p.node,
                session: p.session,
                data: p.data,
            })
        }
    }
}

/// A unidirectional connect request (a bare `ConnectRequest` object, possibly empty) as the
/// connect command the session reads.
pub fn uni_connect(raw: &[u8]) -> Result<Bytes, &'static str> {
    let raw: &[u8] = if raw.iter().all(u8::is_ascii_whitespace) { b"{}" } else { raw };
    match serde_json::from_slice::<serde_json::Value>(raw) {
        Ok(serde_json::Value::Object(_)) => {
            let mut b = Vec::with_capacity(raw.len() + 16);
            b.extend_from_slice(b"{\"id\":1,\"connect\":");
            b.extend_from_slice(raw);
            b.push(b'}');
            Ok(Bytes::from(b))
        }
        _ => Err("the connect request must be a JSON object"),
    }
}

/// Every line of a session's output in its unidirectional form.
pub fn uni_lines(payload: &Bytes) -> Vec<Bytes> {
    let mut v = Vec::new();
    let mut start = 0;
    for (i, c) in payload.iter().enumerate() {
        if *c == b'\n' {
            v.push(payload.slice(start..i));
            start = i + 1;
        }
    }
    v.push(payload.slice(start..));
    v.into_iter().filter_map(uni_line).collect()
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
        let out = frame(Transport::UniHttpStream, Format::Json, &push);
        assert_eq!(
            joined(out.clone()),
            br#"{"channel":"news","pub":{"data":{"n":1}}}"#.to_vec().into_iter().chain(*b"\n").collect::<Vec<u8>>()
        );
        assert_eq!(out[0].as_ptr(), push.as_ptr().wrapping_add(8), "a slice of the shared payload");
        let connect = Bytes::from_static(b"{\"id\":1,\"connect\":{\"client\":\"c\"}}\n{}");
        assert_eq!(
            joined(frame(Transport::UniSse, Format::Json, &connect)),
            b"data: {\"connect\":{\"client\":\"c\"}}\n\ndata: {}\n\n".to_vec()
        );
        let refused = Bytes::from_static(br#"{"id":1,"error":{"code":101,"message":"unauthorized"}}"#);
        let v: serde_json::Value = serde_json::from_slice(&joined(frame(Transport::UniHttpStream, Format::Json, &refused))).unwrap();
        assert_eq!(v, serde_json::json!({"disconnect": {"code": 3500, "reason": "unauthorized"}}));
        // Replies to commands have no unidirectional form.
        assert!(frame(
            Transport::UniHttpStream,
            Format::Json,
            &Bytes::from_static(br#"{"id":2,"subscribe":{}}"#)
        )
        .is_empty());
    }

    #[test]
    fn emulation_requests_in_both_formats() {
        let j = Bytes::from_static(br#"{"session":"s","node":"n","data":"{\"id\":2,\"presence\":{}}"}"#);
        let r = parse_emulation(Format::Json, &j).unwrap();
        assert_eq!((r.session.as_str(), r.node.as_str()), ("s", "n"));
        assert_eq!(&r.data[..], br#"{"id":2,"presence":{}}"#);
        let pb = prost::Message::encode_to_vec(&EmulationRequestPb {
            node: "n".into(),
            session: "s".into(),
            data: Bytes::from_static(&[1, 2]),
        });
        let r = parse_emulation(Format::Protobuf, &Bytes::from(pb)).unwrap();
        assert_eq!((r.session.as_str(), &r.data[..]), ("s", &[1u8, 2][..]));
        assert!(parse_emulation(Format::Json, &Bytes::from_static(b"{")).is_err());
        assert!(parse_emulation(Format::Json, &Bytes::from_static(br#"{"node":"n"}"#)).is_err());
        assert!(parse_emulation(Format::Protobuf, &Bytes::from_static(&[0xff, 0xff])).is_err());
    }
}
