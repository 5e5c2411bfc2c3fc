//! The session's side of a connection, for every transport: input in, queued pushes and
//! controls moved out, the session's timer, and what its output means for the transport.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::time::Sleep;
use wshub_core::connection::{ConnectionHandle, Control};
use wshub_core::node::Node;
use wshub_core::session::{Output, Session, State};

use wshub_core::Now;
use wshub_protocol::codes::disconnect as dc;

use super::outbox::{Conn, Framing};

/// Bytes moved from the queue into the transport's write buffer at a time: the rest stays
/// in the queue, where `client.queue_max_size` applies.
const WRITE_WATERMARK: usize = 64 * 1024;

/// Where a connection's output goes: the transport's write buffer. Writes never wait; the
/// transport writes the buffer out at its pace and says how much is still in it.
pub trait Sink: Send {
    /// Bytes accepted and not yet written.
    fn pending_bytes(&self) -> usize;
    /// The connection still takes output (not closing).
    fn is_open(&self) -> bool;
    /// A push as the connection's [`Framing`] made it.
    fn send_push(&mut self, frame: Bytes);
    /// One output of the session (replies, and pushes among them) in the connection's
    /// format, in the form the transport reads (bidirectional, or one unidirectional line).
    fn send_reply(&mut self, payload: Bytes);
    /// Ends the connection with `code` after what was sent, or instead of it with
    /// `discard` (a slow reader: what waits is dropped).
    fn close(&mut self, code: u16, reason: &str, discard: bool);
}

/// The protocol a connection speaks, as the pump drives it: Centrifugo's [`Session`], or
/// another dialect ([`crate::pusher::session`]) on the same outbox, timer and output.
pub trait Dialect: Send + 'static {
    fn state(&self) -> State;
    fn client_id(&self) -> &str;
    fn user(&self) -> &str;
    fn handle_frame(&mut self, data: Bytes, now: Now) -> impl Future<Output = Output> + Send;
    fn handle_control(&mut self, control: Control, now: Now) -> impl Future<Output = Output> + Send;
    fn handle_timeout(&mut self, now: Now) -> impl Future<Output = Output> + Send;
    fn poll_timeout(&self) -> Option<std::time::Instant>;
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}

impl Dialect for Session {
    fn state(&self) -> State {
        Session::state(self)
    }
    fn client_id(&self) -> &str {
        Session::client_id(self)
    }
    fn user(&self) -> &str {
        Session::user(self)
    }
    fn handle_frame(&mut self, data: Bytes, now: Now) -> impl Future<Output = Output> + Send {
        Session::handle_frame(self, data, now)
    }
    fn handle_control(&mut self, control: Control, now: Now) -> impl Future<Output = Output> + Send {
        Session::handle_control(self, control, now)
    }
    fn handle_timeout(&mut self, now: Now) -> impl Future<Output = Output> + Send {
        Session::handle_timeout(self, now)
    }
    fn poll_timeout(&self) -> Option<std::time::Instant> {
        Session::poll_timeout(self)
    }
    fn close(&mut self) -> impl Future<Output = ()> + Send {
        Session::close(self)
    }
}

/// One connection's session and its pump. See the module docs.
pub struct Pump<F, D = Session> {
    session: D,
    conn: Arc<Conn<F>>,
    timer: Option<Pin<Box<Sleep>>>,
    timer_at: Option<std::time::Instant>,
    /// Work found by `poll_work` for `run_work`.
    timer_due: bool,
    controls: Vec<Control>,
    /// Counts this connection in Centrifugo's `client_connections_inflight` once connected.
    inflight: Option<crate::metrics::centrifugo::Inflight>,
}

impl<F: Framing> Pump<F> {
    pub fn new(node: Arc<Node>, conn: Arc<Conn<F>>) -> Self {
        let session = Session::new(node, conn.clone(), Now::system());
        Self::with_dialect(conn, session)
    }

    /// The request headers that the backend proxies forward.
    pub fn set_request_headers(&mut self, headers: Vec<(String, String)>) {
        self.session.set_request_headers(headers);
    }
}

impl<F: Framing, D: Dialect> Pump<F, D> {
    /// A pump driving `session`, which speaks for `conn`.
    pub fn with_dialect(conn: Arc<Conn<F>>, session: D) -> Self {
        Pump {
            session,
            conn,
            timer: None,
            timer_at: None,
            timer_due: false,
            controls: Vec::new(),
            inflight: None,
        }
    }

    /// Counts the connection as accepted (Centrifugo's `client_connections_accepted` and
    /// `_inflight`) for a dialect that is connected without a connect command: Pusher's,
    /// once `pusher:connection_established` is sent.
    pub fn count_accepted(&mut self) {
        if self.inflight.is_none() {
            self.inflight = crate::metrics::centrifugo::connection_accepted(self.transport());
        }
    }

    pub fn conn(&self) -> &Arc<Conn<F>> {
        &self.conn
    }

    pub fn session(&self) -> &D {
        &self.session
    }

    pub fn session_mut(&mut self) -> &mut D {
        &mut self.session
    }

    fn transport(&self) -> &'static str {
        self.conn.transport().name
    }

    /// Commands from the client (already in the bidirectional form the session reads).
    pub async fn input(&mut self, data: Bytes, sink: &mut dyn Sink) {
        let was_connecting = self.session.state() == State::Connecting;
        crate::metrics::centrifugo::transport_received(self.transport(), data.len());
        let out = self.session.handle_frame(data, Now::system()).await;
        if was_connecting && self.session.state() == State::Connected {
            self.inflight = crate::metrics::centrifugo::connection_accepted(self.transport());
            // The connection's span now carries who it is.
            let span = tracing::Span::current();
            span.record("client", self.session.client_id());
            span.record("user", self.session.user());
            tracing::debug!("connected");
        }
        self.apply(sink, out);
    }

    /// Moves queued pushes into `sink`, takes queued controls and polls the session's
    /// timer; registers `cx` to be woken for more. `Ready` when it did something: the
    /// caller writes, calls [`Pump::run_work`], and polls again.
    pub fn poll_work(&mut self, cx: &mut Context<'_>, sink: &mut dyn Sink) -> Poll<()> {
        if !sink.is_open() {
            // Closing: nothing more goes out, and the session's timers no longer matter.
            // (Reporting them as work here would spin the caller.)
            self.timer = None;
            return Poll::Pending;
        }
        self.conn.register(cx.waker());
        let d = {
            let room = std::cell::Cell::new(sink.pending_bytes());
            let mut write = |f: Bytes| {
                room.set(room.get() + f.len());
                sink.send_push(f);
            };
            self.conn.drain(|| room.get() < WRITE_WATERMARK, &mut write, &mut self.controls)
        };
        if d.overflow {
            tracing::debug!(client = %self.session.client_id(), "queue over client.queue_max_size");
            crate::metrics::centrifugo::server_disconnect(dc::SLOW);
            sink.close(dc::SLOW, "slow", true);
            return Poll::Ready(());
        }
        let mut progressed = d.frames > 0 || d.controls;
        if d.frames > 0 {
            // Once per batch of queued pushes, outside the lock.
            crate::metrics::centrifugo::transport_sent(self.transport(), d.frames, d.bytes);
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

    /// [`Pump::poll_work`] found controls or a timer to run.
    pub fn has_work(&self) -> bool {
        !self.controls.is_empty() || self.timer_due
    }

    /// Runs the controls and the timer that [`Pump::poll_work`] found.
    pub async fn run_work(&mut self, sink: &mut dyn Sink) {
        for c in std::mem::take(&mut self.controls) {
            let out = self.session.handle_control(c, Now::system()).await;
            self.apply(sink, out);
        }
        if std::mem::take(&mut self.timer_due) {
            let out = self.session.handle_timeout(Now::system()).await;
            self.apply(sink, out);
        }
    }

    /// Writes the session's output, and ends the connection if it says so.
    fn apply(&mut self, sink: &mut dyn Sink, out: Output) {
        if !sink.is_open() {
            return;
        }
        if let Some(frame) = out.frame {
            // Replies count against `client.queue_max_size` like pushes: a client that sends
            // commands and never reads their answers is a slow reader too.
            let queued = sink.pending_bytes() + self.conn.queued();
            if queued + frame.len() > self.conn.max_queue() {
                tracing::debug!(queued, reply = frame.len(), "replies over client.queue_max_size");
                crate::metrics::centrifugo::server_disconnect(dc::SLOW);
                sink.close(dc::SLOW, "slow", true);
                return;
            }
            if self.conn.encoding().unidirectional {
                for line in super::uni::uni_outputs(self.conn.encoding().format, &frame) {
                    crate::metrics::centrifugo::transport_sent(self.transport(), 1, line.len());
                    sink.send_reply(line);
                }
            } else {
                crate::metrics::centrifugo::transport_sent(self.transport(), 1, frame.len());
                sink.send_reply(frame);
            }
        }
        if let Some((code, reason)) = out.disconnect {
            tracing::debug!(code, %reason, client = %self.session.client_id(), "disconnect");
            crate::metrics::centrifugo::server_disconnect(code);
            sink.close(code, &reason, false);
        }
    }

    /// Releases what the session holds (subscriptions, presence, its registry entry) and
    /// what waits in the queue. Called once, when the connection has ended.
    pub async fn close(&mut self) {
        self.session.close().await;
        // No longer in the hub: nothing is delivered any more.
        self.conn.release();
        self.timer = None;
    }
}
