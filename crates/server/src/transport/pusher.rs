//! The Pusher dialect over WebSocket (`/app/{key}?protocol=7`): the framing of Pusher
//! pushes and the WebSocket [`Handler`] around the pump, which runs a
//! [`PusherSession`] instead of Centrifugo's session on the same outbox.

use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use wshub_core::connection::{Encoding, TransportInfo};
use wshub_core::node::Node;
use wshub_core::prepared::PreparedData;
use wshub_core::pusher::Skip;
use wshub_websocket::{CloseCode, Connection, DeflateParams, MessageKind, SharedFrame, State};

use super::websocket::{Replies, WsSink};
use super::{Conn, Framing, Pump, WEBSOCKET_SLOTS};
use crate::driver::{Handler, HandlerFuture};
use crate::pusher::session::{close_code, code, PusherSession};
use crate::pusher::webhook::Webhooks;
use crate::pusher::PusherApp;

/// A Pusher connection's framing: the Pusher message in one text frame, built once per
/// push for every connection taking the same frame; not the frames its socket must not get
/// ([`Skip`]).
pub struct PusherFraming {
    deflate: Option<DeflateParams>,
    socket_id: OnceLock<Arc<str>>,
    member: Arc<OnceLock<Box<str>>>,
}

impl Framing for PusherFraming {
    fn frame(&self, push: &PreparedData) -> Option<Bytes> {
        match push.skip() {
            Some(Skip::Client(c)) if self.socket_id.get().is_some_and(|s| **s == **c) => return None,
            Some(Skip::User(u)) if self.member.get().is_some_and(|m| **m == **u) => return None,
            _ => {}
        }
        let variant = SharedFrame::for_connection(self.deflate.as_ref(), push.payload().len());
        Some(push.framed(WEBSOCKET_SLOTS + variant.index(), |p| variant.build(MessageKind::Text, p)))
    }

    fn transport(&self) -> TransportInfo<'_> {
        TransportInfo {
            name: "pusher",
            emulation_session: None,
        }
    }
}

/// The pump's sink: the WebSocket one, each line of the session's output a message of its
/// own, with Pusher's close codes.
fn sink(conn: &mut Connection) -> WsSink<'_> {
    WsSink {
        conn,
        replies: Replies::Lines,
        transport: "pusher",
        close_code,
        uni: super::websocket::UniClose::BIDIRECTIONAL,
    }
}

/// The [`Handler`] of a Pusher connection, or of a refused one (an unknown app key, an
/// app over its connections).
pub enum PusherHandler {
    Open {
        pump: Box<Pump<PusherFraming, PusherSession>>,
        established: bool,
    },
    Refused {
        code: u16,
        message: &'static str,
    },
}

/// Pusher connections per app on this node, for `limits.max_connections`.
static CONNECTIONS: parking_lot::Mutex<Option<std::collections::HashMap<String, usize>>> = parking_lot::Mutex::new(None);

fn count(app: &str, delta: isize) -> usize {
    let mut m = CONNECTIONS.lock();
    let n = m.get_or_insert_with(Default::default).entry(app.to_string()).or_insert(0);
    *n = n.saturating_add_signed(delta);
    *n
}

impl PusherHandler {
    pub fn new(
        node: Arc<Node>,
        app: Option<Arc<PusherApp>>,
        deflate: Option<DeflateParams>,
        max_queue: usize,
        hooks: Option<Arc<Webhooks>>,
    ) -> Self {
        let Some(app) = app else {
            return PusherHandler::Refused {
                code: code::APP_UNKNOWN,
                message: "application does not exist",
            };
        };
        let max = app.limits.max_connections;
        if max > 0 && count(&app.id, 1) > max {
            count(&app.id, -1);
            return PusherHandler::Refused {
                code: code::OVER_CAPACITY,
                message: "over connection quota",
            };
        } else if max == 0 {
            count(&app.id, 1);
        }
        let member: Arc<OnceLock<Box<str>>> = Arc::default();
        let framing = PusherFraming {
            deflate,
            socket_id: OnceLock::new(),
            member: member.clone(),
        };
        let strip = u16::try_from(app.channel_prefix.len()).unwrap_or(u16::MAX);
        let conn = Conn::new(node.next_connection_id(), Encoding::pusher(strip), max_queue, framing);
        let session = PusherSession::new(node, app, conn.clone(), member, hooks);
        let _ = conn.framing().socket_id.set(session.socket_id().into());
        PusherHandler::Open {
            pump: Box::new(Pump::with_dialect(conn, session)),
            established: false,
        }
    }
}

impl Handler for PusherHandler {
    fn on_message<'a>(&'a mut self, conn: &'a mut Connection, kind: MessageKind, data: Bytes) -> HandlerFuture<'a> {
        Box::pin(async move {
            let PusherHandler::Open { pump, .. } = self else { return };
            if kind == MessageKind::Binary {
                return conn.close(CloseCode(code::UNSUPPORTED_PROTOCOL), "binary frames are not Pusher messages");
            }
            let mut sink = sink(conn);
            pump.input(data, &mut sink).await;
        })
    }

    fn poll_work(&mut self, cx: &mut Context<'_>, conn: &mut Connection) -> Poll<()> {
        match self {
            PusherHandler::Refused { code, message } => {
                if conn.state() == State::Open {
                    let data = serde_json::json!({ "code": *code, "message": *message });
                    let msg = serde_json::json!({ "event": "pusher:error", "data": data });
                    conn.send(MessageKind::Text, Bytes::from(msg.to_string()));
                    conn.close(CloseCode(*code), message);
                    return Poll::Ready(());
                }
                Poll::Pending
            }
            PusherHandler::Open { pump, established } => {
                if !*established {
                    *established = true;
                    conn.send(MessageKind::Text, pump.session().established());
                    pump.count_accepted();
                    // Progress: the driver writes it out and polls again.
                    return Poll::Ready(());
                }
                let mut sink = sink(conn);
                pump.poll_work(cx, &mut sink)
            }
        }
    }

    fn run_work<'a>(&'a mut self, conn: &'a mut Connection) -> HandlerFuture<'a> {
        Box::pin(async move {
            if let PusherHandler::Open { pump, .. } = self {
                if pump.has_work() {
                    let mut sink = sink(conn);
                    pump.run_work(&mut sink).await;
                }
            }
        })
    }

    fn on_close(&mut self, _code: CloseCode) -> HandlerFuture<'_> {
        Box::pin(async move {
            if let PusherHandler::Open { pump, .. } = self {
                pump.close().await;
                count(pump.session().app_id(), -1);
            }
        })
    }
}
