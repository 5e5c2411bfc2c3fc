//! WebSocket (`/connection/websocket`) and its unidirectional form (`uni_websocket`): the
//! [`Handler`] that the WebSocket driver runs, around the transport-neutral [`Pump`].

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use wshub_core::connection::{Encoding, TransportInfo};
use wshub_core::node::Node;
use wshub_core::prepared::PreparedData;
use wshub_core::session::State as SessionState;
use wshub_protocol::codes::disconnect as dc;
use wshub_protocol::Format;
use wshub_websocket::{CloseCode, Connection, DeflateParams, MessageKind, SharedFrame, State};

use super::{Conn, Framing, Pump, Sink, WEBSOCKET_SLOTS};
use crate::driver::{Handler, HandlerFuture};

/// A WebSocket connection's framing: the push in one frame, built (and deflated) once per
/// push for every connection that takes the same frame.
pub struct WsFraming {
    deflate: Option<DeflateParams>,
    kind: MessageKind,
    uni: bool,
}

impl Framing for WsFraming {
    fn frame(&self, push: &PreparedData) -> Option<Bytes> {
        let variant = SharedFrame::for_connection(self.deflate.as_ref(), push.payload().len());
        Some(push.framed(WEBSOCKET_SLOTS + variant.index(), |p| variant.build(self.kind, p)))
    }

    fn transport(&self) -> TransportInfo<'_> {
        TransportInfo {
            name: if self.uni { "uni_websocket" } else { "websocket" },
            emulation_session: None,
        }
    }
}

/// How a sink sends the session's replies.
pub(super) enum Replies {
    /// The whole output as one message of this kind (Centrifugo's framing: lines in one).
    Whole(MessageKind),
    /// Each line of the output as a text message of its own (Pusher's).
    Lines,
}

/// A WebSocket connection as the pump's [`Sink`], for every dialect spoken over it.
pub(super) struct WsSink<'a> {
    pub(super) conn: &'a mut Connection,
    pub(super) replies: Replies,
    /// The transport name of the close metrics.
    pub(super) transport: &'static str,
    /// The close code the dialect sends for the session's (Pusher has codes of its own).
    pub(super) close_code: fn(u16) -> u16,
    pub(super) uni: UniClose,
}

/// How a unidirectional WebSocket ends (`uni_websocket.disable_disconnect_push`,
/// `disable_closing_handshake`); a bidirectional one: a close frame alone.
#[derive(Debug, Clone, Copy)]
pub struct UniClose {
    /// A `disconnect` push (JSON) goes before the close.
    pub disconnect_push: bool,
    /// The close frame is sent (otherwise the connection just ends).
    pub close_frame: bool,
}

impl UniClose {
    /// A bidirectional connection's: the close frame says it all.
    pub const BIDIRECTIONAL: UniClose = UniClose {
        disconnect_push: false,
        close_frame: true,
    };
}

impl Sink for WsSink<'_> {
    fn pending_bytes(&self) -> usize {
        self.conn.pending_bytes()
    }

    fn is_open(&self) -> bool {
        self.conn.state() == State::Open
    }

    fn send_push(&mut self, frame: Bytes) {
        self.conn.send_raw_frames(frame);
    }

    fn send_reply(&mut self, payload: Bytes) {
        match self.replies {
            Replies::Whole(kind) => {
                self.conn.send(kind, payload);
            }
            Replies::Lines => {
                let mut start = 0;
                for (i, b) in payload.iter().enumerate() {
                    if *b == b'\n' {
                        self.conn.send(MessageKind::Text, payload.slice(start..i));
                        start = i + 1;
                    }
                }
                self.conn.send(MessageKind::Text, payload.slice(start..));
            }
        }
    }

    fn close(&mut self, code: u16, reason: &str, discard: bool) {
        let code = (self.close_code)(code);
        if !discard && self.uni.disconnect_push && code != dc::CONNECTION_CLOSED {
            let push = serde_json::json!({"disconnect": {"code": code, "reason": reason}});
            self.conn.send(MessageKind::Text, Bytes::from(push.to_string()));
        }
        if !self.uni.close_frame {
            self.conn.end_without_close_frame();
            return;
        }
        crate::metrics::centrifugo::close_frame_sent(self.transport, code);
        if discard {
            self.conn.close_discarding(CloseCode(code), reason);
        } else {
            self.conn.close(CloseCode(code), reason);
        }
    }
}

/// The [`Handler`] of a client connection.
pub struct ClientHandler {
    pump: Pump<WsFraming>,
    close: UniClose,
}

impl ClientHandler {
    pub fn new(node: Arc<Node>, format: Format, deflate: Option<DeflateParams>, max_queue: usize) -> Self {
        Self::with_mode(node, format, deflate, max_queue, false)
    }

    /// A `uni_websocket` connection: its first message is a bare connect request, and it
    /// receives bare pushes (JSON). By Centrifugo's defaults a `disconnect` push goes
    /// before the close frame, as on the other unidirectional transports.
    pub fn unidirectional(node: Arc<Node>, max_queue: usize, deflate: Option<DeflateParams>, close: UniClose) -> Self {
        let mut h = Self::with_mode(node, Format::Json, deflate, max_queue, true);
        h.close = close;
        h
    }

    fn with_mode(node: Arc<Node>, format: Format, deflate: Option<DeflateParams>, max_queue: usize, uni: bool) -> Self {
        let kind = match format {
            Format::Json => MessageKind::Text,
            Format::Protobuf => MessageKind::Binary,
        };
        let framing = WsFraming { deflate, kind, uni };
        let conn = Conn::new(node.next_connection_id(), Encoding::new(format, uni), max_queue, framing);
        ClientHandler {
            pump: Pump::new(node, conn),
            close: UniClose::BIDIRECTIONAL,
        }
    }

    /// The upgrade request headers that the backend proxies forward.
    pub fn set_request_headers(&mut self, headers: Vec<(String, String)>) {
        self.pump.set_request_headers(headers);
    }

    fn sink<'a>(&self, conn: &'a mut Connection) -> WsSink<'a> {
        let framing = self.pump.conn().framing();
        WsSink {
            conn,
            replies: Replies::Whole(framing.kind),
            transport: framing.transport().name,
            close_code: |code| code,
            uni: self.close,
        }
    }
}

impl Handler for ClientHandler {
    fn on_message<'a>(&'a mut self, conn: &'a mut Connection, kind: MessageKind, data: Bytes) -> HandlerFuture<'a> {
        Box::pin(async move {
            let framing = self.pump.conn().framing();
            if framing.kind == MessageKind::Text && kind == MessageKind::Binary {
                // PROTOCOL.md: "A binary frame on a JSON connection closes it with 3506."
                return conn.close(CloseCode(dc::INAPPROPRIATE_PROTOCOL), "inappropriate protocol");
            }
            let data = match (framing.uni, self.pump.session().state() == SessionState::Connecting) {
                (false, _) => data,
                (true, true) => match super::uni::uni_connect(&data) {
                    Ok(connect) => connect,
                    Err(why) => return conn.close(CloseCode(dc::BAD_REQUEST), why),
                },
                // After its connect request, what a unidirectional client sends is read and
                // dropped, as Centrifugo does (its SDKs send nothing, but a client that
                // does keeps its connection).
                (true, false) => return,
            };
            let mut sink = self.sink(conn);
            self.pump.input(data, &mut sink).await;
        })
    }

    fn poll_work(&mut self, cx: &mut Context<'_>, conn: &mut Connection) -> Poll<()> {
        let mut sink = self.sink(conn);
        self.pump.poll_work(cx, &mut sink)
    }

    fn run_work<'a>(&'a mut self, conn: &'a mut Connection) -> HandlerFuture<'a> {
        if !self.pump.has_work() {
            return Box::pin(std::future::ready(()));
        }
        Box::pin(async move {
            let mut sink = self.sink(conn);
            self.pump.run_work(&mut sink).await;
        })
    }

    fn on_close(&mut self, code: CloseCode) -> HandlerFuture<'_> {
        Box::pin(async move {
            let s = self.pump.session();
            tracing::debug!(code = code.0, client = %s.client_id(), user = %s.user(), "connection closed");
            self.pump.close().await;
        })
    }
}
