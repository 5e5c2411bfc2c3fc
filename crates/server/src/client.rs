//! The glue between one WebSocket connection and its [`Session`]: the bounded outbound
//! queue the hub delivers into, the control inbox of the server API, the session's timer.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;
use bytes::Bytes;
use parking_lot::Mutex;
use std::future::Future;
use std::pin::Pin;
use tokio::time::Sleep;
use wshub_core::hub::{ConnectionHandle, Control};
use wshub_core::node::Node;
use wshub_core::session::{Output, Session};
use wshub_core::Now;
use wshub_protocol::codes::disconnect as dc;
use wshub_protocol::Format;
use wshub_websocket::frame::{encode_header, OpCode, MAX_HEADER_LEN};
use wshub_websocket::{CloseCode, Connection, DeflateParams, MessageKind, PreparedMessage, State};

use crate::driver::{Handler, HandlerFuture};

static QUEUED: AtomicUsize = AtomicUsize::new(0);

/// Bytes queued for clients in this process (the `wshub_queue_bytes` gauge).
pub fn queued_bytes() -> usize {
    QUEUED.load(Ordering::Relaxed)
}

/// Bytes moved from the queue into the connection's write queue at a time: the rest stays
/// in the queue, where `client.queue_max_size` applies.
const WRITE_WATERMARK: usize = 64 * 1024;

#[derive(Default)]
struct Outbox {
    frames: VecDeque<Bytes>,
    bytes: usize,
    overflow: bool,
    controls: VecDeque<Control>,
}

/// The shared half of a connection: what the hub and the API reach.
pub struct ConnShared {
    id: u64,
    format: Format,
    /// `uni_websocket`: bare pushes, no replies (Centrifugo's unidirectional protocol).
    uni: bool,
    deflate: Option<DeflateParams>,
    max_queue: usize,
    outbox: Mutex<Outbox>,
    waker: AtomicWaker,
}

impl ConnShared {
    pub fn new(id: u64, format: Format, deflate: Option<DeflateParams>, max_queue: usize) -> Arc<Self> {
        Self::with_mode(id, format, deflate, max_queue, false)
    }

    fn with_mode(id: u64, format: Format, deflate: Option<DeflateParams>, max_queue: usize, uni: bool) -> Arc<Self> {
        Arc::new(ConnShared {
            id,
            format,
            uni,
            deflate,
            max_queue,
            outbox: Mutex::new(Outbox::default()),
            waker: AtomicWaker::new(),
        })
    }
}

impl ConnectionHandle for ConnShared {
    fn id(&self) -> u64 {
        self.id
    }

    fn format(&self) -> Format {
        self.format
    }

    fn deliver(&self, frame: &PreparedMessage) {
        if self.uni {
            // The bare push framed for this connection: a copy per delivery (unlike the
            // shared frames of bidirectional connections), kept as one queue entry so that
            // no reply is ever written between a header and its payload.
            let Some(push) = crate::emulation::uni_line(frame.payload().clone()) else {
                return;
            };
            let mut hdr = [0u8; MAX_HEADER_LEN];
            let n = encode_header(&mut hdr, true, false, OpCode::Text, None, push.len() as u64);
            let mut b = bytes::BytesMut::with_capacity(n + push.len());
            b.extend_from_slice(&hdr[..n]);
            b.extend_from_slice(&push);
            self.queue(b.freeze());
            return;
        }
        self.queue(frame.frame_for(self.deflate.as_ref()));
    }

    fn control(&self, control: Control) {
        self.outbox.lock().controls.push_back(control);
        self.waker.wake();
    }

    fn unidirectional(&self) -> bool {
        self.uni
    }

    fn transport_name(&self) -> &'static str {
        if self.uni {
            "uni_websocket"
        } else {
            "websocket"
        }
    }
}

impl ConnShared {
    /// Queues a frame, or marks the connection slow.
    fn queue(&self, bytes: Bytes) {
        let len = bytes.len();
        let mut o = self.outbox.lock();
        if o.overflow {
            return;
        }
        if o.bytes + len > self.max_queue {
            // A slow reader: it is closed with 3008 and its queue freed; the others go on.
            o.overflow = true;
            o.frames = VecDeque::new();
            QUEUED.fetch_sub(o.bytes, Ordering::Relaxed);
            o.bytes = 0;
        } else {
            o.bytes += len;
            QUEUED.fetch_add(len, Ordering::Relaxed);
            o.frames.push_back(bytes);
        }
        drop(o);
        self.waker.wake();
    }
}

/// The [`Handler`] of a client connection.
pub struct ClientHandler {
    session: Session,
    shared: Arc<ConnShared>,
    timer: Option<Pin<Box<Sleep>>>,
    timer_at: Option<std::time::Instant>,
    /// Work found by `poll_work` for `run_work`.
    timer_due: bool,
    controls: Vec<Control>,
    /// Counts this connection in Centrifugo's `client_connections_inflight` once connected.
    inflight: Option<crate::metrics::centrifugo::Inflight>,
}

impl ClientHandler {
    pub fn new(node: Arc<Node>, format: Format, deflate: Option<DeflateParams>, max_queue: usize) -> Self {
        Self::with_mode(node, format, deflate, max_queue, false)
    }

    /// A `uni_websocket` connection: its first message is a bare connect request, and it
    /// receives bare pushes (JSON).
    pub fn unidirectional(node: Arc<Node>, max_queue: usize) -> Self {
        Self::with_mode(node, Format::Json, None, max_queue, true)
    }

    fn with_mode(node: Arc<Node>, format: Format, deflate: Option<DeflateParams>, max_queue: usize, uni: bool) -> Self {
        let shared = ConnShared::with_mode(node.next_connection_id(), format, deflate, max_queue, uni);
        let session = Session::new(node, shared.clone(), Now::system());
        ClientHandler {
            session,
            shared,
            timer: None,
            timer_at: None,
            timer_due: false,
            controls: Vec::new(),
            inflight: None,
        }
    }

    /// The upgrade request headers that the backend proxies forward.
    pub fn set_request_headers(&mut self, headers: Vec<(String, String)>) {
        self.session.set_request_headers(headers);
    }

    fn apply(&self, conn: &mut Connection, out: Output) {
        if let Some(frame) = out.frame {
            // Replies count against `client.queue_max_size` like pushes: a client that sends
            // commands and never reads their answers is a slow reader too.
            let queued = conn.pending_bytes() + self.shared.outbox.lock().bytes;
            if queued + frame.len() > self.shared.max_queue {
                tracing::debug!(queued, reply = frame.len(), "replies over client.queue_max_size");
                conn.close_discarding(CloseCode(dc::SLOW), "slow");
                return;
            }
            let kind = match self.shared.format {
                Format::Json => MessageKind::Text,
                Format::Protobuf => MessageKind::Binary,
            };
            if self.shared.uni {
                for line in crate::emulation::uni_lines(&frame) {
                    conn.send(MessageKind::Text, line);
                }
            } else {
                crate::metrics::centrifugo::transport_sent(self.shared.transport_name(), 1, frame.len());
                conn.send(kind, frame);
            }
        }
        if let Some((code, reason)) = out.disconnect {
            tracing::debug!(code, %reason, client = %self.session.client_id(), "disconnect");
            crate::metrics::centrifugo::server_closed(self.shared.transport_name(), code);
            conn.close(CloseCode(code), &reason);
        }
    }
}

impl Handler for ClientHandler {
    fn on_message<'a>(&'a mut self, conn: &'a mut Connection, kind: MessageKind, data: Bytes) -> HandlerFuture<'a> {
        Box::pin(async move {
            if self.shared.format == Format::Json && kind == MessageKind::Binary {
                // PROTOCOL.md: "A binary frame on a JSON connection closes it with 3506."
                conn.close(CloseCode(dc::INAPPROPRIATE_PROTOCOL), "inappropriate protocol");
                return;
            }
            let was_connecting = self.session.state() == wshub_core::session::State::Connecting;
            let data = match (self.shared.uni, was_connecting) {
                (false, _) => data,
                (true, true) => match crate::emulation::uni_connect(&data) {
                    Ok(connect) => connect,
                    Err(why) => return conn.close(CloseCode(dc::BAD_REQUEST), why),
                },
                // A unidirectional client sends its connect request and nothing else.
                (true, false) => return conn.close(CloseCode(dc::BAD_REQUEST), "unidirectional: only a connect request is read"),
            };
            crate::metrics::centrifugo::transport_received(self.shared.transport_name(), data.len());
            let out = self.session.handle_frame(data, Now::system()).await;
            if was_connecting && self.session.state() == wshub_core::session::State::Connected {
                self.inflight = crate::metrics::centrifugo::connection_accepted(self.shared.transport_name());
                // The connection's span now carries who it is.
                let span = tracing::Span::current();
                span.record("client", self.session.client_id());
                span.record("user", self.session.user());
                tracing::debug!("connected");
            }
            self.apply(conn, out);
        })
    }

    fn poll_work(&mut self, cx: &mut Context<'_>, conn: &mut Connection) -> Poll<()> {
        if conn.state() != State::Open {
            // Closing: nothing more goes out, and the session's timers no longer matter.
            // (Reporting them as work here would spin the driver.)
            self.timer = None;
            return Poll::Pending;
        }
        self.shared.waker.register(cx.waker());
        let mut progressed = false;
        let (mut frames, mut bytes) = (0u64, 0usize);
        {
            let mut o = self.shared.outbox.lock();
            if o.overflow {
                o.overflow = false;
                drop(o);
                conn.close_discarding(CloseCode(dc::SLOW), "slow");
                return Poll::Ready(());
            }
            while conn.pending_bytes() < WRITE_WATERMARK {
                let Some(f) = o.frames.pop_front() else { break };
                o.bytes -= f.len();
                QUEUED.fetch_sub(f.len(), Ordering::Relaxed);
                frames += 1;
                bytes += f.len();
                conn.send_raw_frames(f);
                progressed = true;
            }
            if o.frames.is_empty() && o.frames.capacity() > 0 {
                o.frames = VecDeque::new();
            }
            if !o.controls.is_empty() {
                self.controls.extend(o.controls.drain(..));
                o.controls = VecDeque::new();
                progressed = true;
            }
        }
        if frames > 0 {
            // Once per batch of queued pushes, outside the lock.
            crate::metrics::centrifugo::transport_sent(self.shared.transport_name(), frames, bytes);
        }
        let next = self.session.poll_timeout().map(crate::driver::coarse);
        if next != self.timer_at {
            self.timer_at = next;
            // Moved, not reallocated: a ping and its pong move it twice per interval.
            if let Some(t) = next {
                match self.timer.as_mut() {
                    Some(sleep) => sleep.as_mut().reset(t.into()),
                    None => self.timer = Some(Box::pin(tokio::time::sleep_until(t.into()))),
                }
            }
        }
        // Polled only while armed: a fired timer is kept for reuse.
        if let (Some(_), Some(t)) = (self.timer_at, self.timer.as_mut()) {
            if t.as_mut().poll(cx).is_ready() {
                self.timer_at = None;
                self.timer_due = true;
                progressed = true;
            }
        }
        if progressed {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    fn run_work<'a>(&'a mut self, conn: &'a mut Connection) -> HandlerFuture<'a> {
        if self.controls.is_empty() && !self.timer_due {
            return Box::pin(std::future::ready(()));
        }
        Box::pin(async move {
            for c in std::mem::take(&mut self.controls) {
                let out = self.session.handle_control(c, Now::system()).await;
                self.apply(conn, out);
            }
            if std::mem::take(&mut self.timer_due) {
                let out = self.session.handle_timeout(Now::system()).await;
                self.apply(conn, out);
            }
        })
    }

    fn on_close(&mut self, code: CloseCode) -> HandlerFuture<'_> {
        Box::pin(async move {
            tracing::debug!(code = code.0, client = %self.session.client_id(), user = %self.session.user(), "connection closed");
            self.session.close().await;
            // No longer in the hub: nothing is delivered any more; release what waits.
            let mut o = self.shared.outbox.lock();
            QUEUED.fetch_sub(o.bytes, Ordering::Relaxed);
            o.bytes = 0;
            o.frames = VecDeque::new();
            o.controls = VecDeque::new();
        })
    }
}
