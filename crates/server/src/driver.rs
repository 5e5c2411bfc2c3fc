//! The per-connection WebSocket driver: a thin loop around the sans-IO
//! [`wshub_websocket::Connection`] and a [`Handler`] that gives messages their meaning.
//!
//! Memory: an idle connection is this task's future plus the socket. The wait for
//! readiness is one `poll_fn` (no readiness futures kept in the state), the read buffer
//! lives on the stack of a plain function, and the handler's per-message future is boxed
//! only while a message is being handled. Measured in BENCHMARKS.md.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use wshub_websocket::{CloseCode, Config, Connection, Event, MessageKind, State};

/// How long we wait for the peer's close frame after sending ours.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Read buffer on the stack of a non-async function, so that no connection keeps one.
const READ_CHUNK: usize = 16 * 1024;
/// Close code of a write that timed out (PROTOCOL.md: 3009 write error).
const WRITE_ERROR: u16 = 3009;
/// Slices per vectored write.
const MAX_IOVECS: usize = 64;

/// A boxed future borrowed from the handler.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// What the application does with a connection. Called from the connection's task.
pub trait Handler: Send {
    /// A whole message arrived. Answer through `conn`. The socket is not read while the
    /// returned future runs: commands of one connection are handled in order.
    fn on_message<'a>(&'a mut self, conn: &'a mut Connection, kind: MessageKind, data: Bytes) -> HandlerFuture<'a>;

    /// Work that does not come from the socket (queued pushes, timers): called each time the
    /// task wakes. Register `cx` with whatever should wake the task; return `Ready` after
    /// doing something so that the driver writes and polls again.
    fn poll_work(&mut self, _cx: &mut Context<'_>, _conn: &mut Connection) -> Poll<()> {
        Poll::Pending
    }

    /// Asynchronous work that `poll_work` found (timers, control requests).
    fn run_work<'a>(&'a mut self, _conn: &'a mut Connection) -> HandlerFuture<'a> {
        Box::pin(std::future::ready(()))
    }

    /// The connection ended, with the code seen or sent. Release what it held.
    fn on_close(&mut self, _code: CloseCode) -> HandlerFuture<'_> {
        Box::pin(std::future::ready(()))
    }
}

impl Handler for Box<dyn Handler> {
    fn on_message<'a>(&'a mut self, conn: &'a mut Connection, kind: MessageKind, data: Bytes) -> HandlerFuture<'a> {
        (**self).on_message(conn, kind, data)
    }
    fn poll_work(&mut self, cx: &mut Context<'_>, conn: &mut Connection) -> Poll<()> {
        (**self).poll_work(cx, conn)
    }
    fn run_work<'a>(&'a mut self, conn: &'a mut Connection) -> HandlerFuture<'a> {
        (**self).run_work(conn)
    }
    fn on_close(&mut self, code: CloseCode) -> HandlerFuture<'_> {
        (**self).on_close(code)
    }
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Close handshake completed, or the peer's close answered.
    Closed(CloseCode),
    /// We failed the connection for a protocol error.
    Failed(CloseCode),
    /// The socket dropped or errored without a close handshake.
    Dropped,
}

impl Outcome {
    pub fn code(&self) -> CloseCode {
        match self {
            Outcome::Closed(c) | Outcome::Failed(c) => *c,
            Outcome::Dropped => CloseCode::ABNORMAL,
        }
    }
}

/// Reads what the socket has now (up to a few chunks) into the connection.
/// Returns false on end of stream.
fn read_available(stream: &TcpStream, conn: &mut Connection) -> io::Result<bool> {
    let mut buf = [0u8; READ_CHUNK];
    for _ in 0..4 {
        match stream.try_read(&mut buf) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                conn.handle_read(&buf[..n]);
                if n < buf.len() || !conn.is_reading() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Writes as much of the queue as the socket takes now.
fn write_available(stream: &TcpStream, conn: &mut Connection) -> io::Result<()> {
    while conn.has_pending_transmit() {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let n = conn.transmit_slices(&mut slices);
        match stream.try_write_vectored(&slices[..n]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(w) => conn.advance_transmit(w),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

enum Wake {
    /// Something to process: events, handler work, or a read.
    Progress,
    /// The close timeout passed, or the socket failed.
    Stop,
    /// Nothing could be written for `websocket.write_timeout`.
    WriteTimeout,
}

/// Drives one upgraded connection until it ends. `leftover` holds bytes that arrived with
/// the handshake.
pub async fn drive<H: Handler>(
    stream: TcpStream,
    leftover: Bytes,
    config: Config,
    mut handler: H,
    write_timeout: Option<Duration>,
) -> Outcome {
    let _ = stream.set_nodelay(true);
    let mut conn = Connection::new(config);
    if !leftover.is_empty() {
        conn.handle_read(&leftover);
    }
    // `leftover` may be a view into hyper's read buffer: keeping it would pin that buffer
    // (8 KiB) for the life of the connection.
    drop(leftover);
    let mut close_timer: Option<Pin<Box<Sleep>>> = None;
    // Armed only while output waits on a socket that takes nothing.
    let mut write_timer: Option<Pin<Box<Sleep>>> = None;
    let mut outcome = Outcome::Dropped;
    let mut turns: u32 = 0;
    loop {
        turns = turns.wrapping_add(1);
        if turns.is_multiple_of(64) {
            // A busy connection (a flood of input or of pushes) gives the other tasks of its
            // worker a turn.
            tokio::task::yield_now().await;
        }
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::Message { kind, data } => {
                    metrics::counter!("wshub_messages_in_total").increment(1);
                    metrics::counter!("wshub_bytes_in_total").increment(data.len() as u64);
                    handler.on_message(&mut conn, kind, data).await
                }
                Event::Closed { code, .. } => {
                    outcome = if code == CloseCode::ABNORMAL {
                        Outcome::Dropped
                    } else {
                        Outcome::Closed(code)
                    }
                }
                Event::Failed(e) => outcome = Outcome::Failed(e.close_code()),
                Event::Ping(_) | Event::Pong(_) => {}
            }
        }
        let before = conn.pending_bytes();
        if write_available(&stream, &mut conn).is_err() {
            outcome = Outcome::Dropped;
            break;
        }
        let written = before - conn.pending_bytes().min(before);
        if written > 0 {
            metrics::counter!("wshub_bytes_out_total").increment(written as u64);
        }
        match (write_timeout, conn.has_pending_transmit()) {
            (Some(t), true) if written > 0 || write_timer.is_none() => write_timer = Some(Box::pin(tokio::time::sleep(t))),
            (_, false) => write_timer = None,
            _ => {}
        }
        if conn.is_done() {
            break;
        }
        if conn.state() == State::CloseSent && close_timer.is_none() {
            close_timer = Some(Box::pin(tokio::time::sleep_until(Instant::now() + CLOSE_TIMEOUT)));
        }
        let wake = std::future::poll_fn(|cx| {
            if handler.poll_work(cx, &mut conn).is_ready() {
                return Poll::Ready(Wake::Progress);
            }
            if conn.is_reading() {
                match stream.poll_read_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        match read_available(&stream, &mut conn) {
                            Ok(true) => {}
                            Ok(false) | Err(_) => conn.handle_eof(),
                        }
                        return Poll::Ready(Wake::Progress);
                    }
                    Poll::Ready(Err(_)) => {
                        conn.handle_eof();
                        return Poll::Ready(Wake::Progress);
                    }
                    Poll::Pending => {}
                }
            }
            if conn.has_pending_transmit() {
                match stream.poll_write_ready(cx) {
                    Poll::Ready(Ok(())) => return Poll::Ready(Wake::Progress),
                    Poll::Ready(Err(_)) => return Poll::Ready(Wake::Stop),
                    Poll::Pending => {}
                }
            }
            if let Some(t) = close_timer.as_mut() {
                if t.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Wake::Stop);
                }
            }
            if let Some(t) = write_timer.as_mut() {
                if t.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Wake::WriteTimeout);
                }
            }
            Poll::Pending
        })
        .await;
        match wake {
            Wake::Stop => break,
            Wake::WriteTimeout => {
                // The peer reads nothing: a close frame could not get through either.
                outcome = Outcome::Closed(CloseCode(WRITE_ERROR));
                break;
            }
            Wake::Progress => {}
        }
        if conn.state() == State::Open {
            handler.run_work(&mut conn).await;
        }
    }
    handler.on_close(outcome.code()).await;
    // RFC 6455 7.1.1: the server closes the TCP connection first once the handshake is done.
    drop(stream);
    outcome
}
