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
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use wshub_protocol::codes::disconnect::WRITE_ERROR;
use wshub_websocket::{CloseCode, Config, Connection, Event, MessageKind, State};

/// How long we wait for the peer's close frame after sending ours.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Read buffer on the stack of a non-async function, so that no connection keeps one.
const READ_CHUNK: usize = 16 * 1024;
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

/// What one wake of the connection found.
enum Wake {
    /// Something to process: events, handler work, or a read.
    Progress,
    /// The close timeout passed, or the socket failed.
    Stop,
    /// Nothing could be written for `websocket.write_timeout`.
    WriteTimeout,
}

/// Reads what the stream has now into the connection, through a buffer on this function's
/// stack (no connection keeps one). `Ready` when something was read or the stream ended.
///
/// The buffer is left uninitialised (`ReadBuf::uninit`, safe code): it is polled at every
/// wake-up of the connection, writes included, and zeroing 16 KiB each time was 45 % of the
/// server's instructions in a handshake run (callgrind; see BENCHMARKS.md).
fn poll_read_into<S: AsyncRead + Unpin>(stream: &mut S, cx: &mut Context<'_>, conn: &mut Connection) -> Poll<()> {
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); READ_CHUNK];
    let mut rb = ReadBuf::uninit(&mut buf);
    match Pin::new(stream).poll_read(cx, &mut rb) {
        Poll::Ready(Ok(())) if rb.filled().is_empty() => {
            conn.handle_eof();
            Poll::Ready(())
        }
        Poll::Ready(Ok(())) => {
            conn.handle_read(rb.filled());
            Poll::Ready(())
        }
        Poll::Ready(Err(_)) => {
            conn.handle_eof();
            Poll::Ready(())
        }
        Poll::Pending => Poll::Pending,
    }
}

/// Writes as much of the queue as the stream takes now (several frames per vectored
/// write). Returns the bytes written, or an error when the stream failed.
fn poll_write_from<S: AsyncWrite + Unpin>(stream: &mut S, cx: &mut Context<'_>, conn: &mut Connection) -> io::Result<usize> {
    let mut written = 0;
    while conn.has_pending_transmit() {
        let r = {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let n = conn.transmit_slices(&mut slices);
            Pin::new(&mut *stream).poll_write_vectored(cx, &slices[..n])
        };
        match r {
            Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(w)) => {
                conn.advance_transmit(w);
                written += w;
            }
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => return Ok(written),
        }
    }
    // TLS keeps records in its own buffer until flushed; plain TCP flushes at once.
    match Pin::new(&mut *stream).poll_flush(cx) {
        Poll::Ready(Err(e)) => Err(e),
        _ => Ok(written),
    }
}

/// How long a finished connection's shutdown (TLS `close_notify`, FIN) may take.
const SHUTDOWN_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Session timers fire on a shared grid of this step: a deadline is moved later to the
/// next multiple of it (never earlier).
pub const TIMER_STEP: std::time::Duration = std::time::Duration::from_millis(250);

/// `at` rounded up to the [`TIMER_STEP`] grid, which starts when the process first asks.
///
/// Why: every connection pings every `client.ping_interval` from a random start, so at
/// 19,000 idle connections a deadline fell due every 1.3 ms on average, and each one woke
/// a worker thread from its sleep for one ping (measured: 22,000 context switches and
/// 12,000 futex calls a second, a third of the server's idle CPU in the scheduler). On the
/// grid the runtime's timer wheel fires the pings of a step together, and a worker wakes
/// four times a second for all of them. A session sees its deadlines at most one step
/// late; none of them (ping, pong, stale, expiry) needs more precision.
pub fn coarse(at: std::time::Instant) -> std::time::Instant {
    static GRID: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let base = *GRID.get_or_init(std::time::Instant::now);
    let Some(since) = at.checked_duration_since(base) else { return at };
    let step = TIMER_STEP.as_nanos();
    let steps = since.as_nanos().div_ceil(step);
    let Ok(nanos) = u64::try_from(steps * step) else { return at };
    base + std::time::Duration::from_nanos(nanos)
}

/// Drives one upgraded connection until it ends. `leftover` holds bytes that arrived with
/// the handshake. Works on any byte stream: plain TCP or TLS.
///
/// Not an `async fn` itself: the arguments of one stay in its future for its whole life, and
/// `leftover` and `config` are only needed here, before the first await (72 bytes of every
/// connection's task otherwise).
pub fn drive<S, H>(stream: S, leftover: Bytes, config: Config, handler: H, write_timeout: Option<Duration>) -> impl Future<Output = Outcome>
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
{
    let mut conn = Connection::new(config);
    if !leftover.is_empty() {
        conn.handle_read(&leftover);
    }
    // `leftover` may be a view into hyper's read buffer: keeping it would pin that buffer
    // (8 KiB) for the life of the connection.
    drop(leftover);
    let (mut stream, mut handler) = (stream, handler);
    // An `async move` block uses what it captures in place; an `async fn` taking these as
    // arguments would keep a second copy of each (the connection state included).
    async move {
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
            if conn.state() == State::CloseSent && close_timer.is_none() {
                close_timer = Some(Box::pin(tokio::time::sleep_until(Instant::now() + CLOSE_TIMEOUT)));
            }
            let wake = std::future::poll_fn(|cx| {
                match poll_write_from(&mut stream, cx, &mut conn) {
                    Err(_) => return Poll::Ready(Wake::Stop),
                    Ok(written) => {
                        if written > 0 {
                            metrics::counter!("wshub_bytes_out_total").increment(written as u64);
                        }
                        match (write_timeout, conn.has_pending_transmit()) {
                            (Some(t), true) if written > 0 || write_timer.is_none() => write_timer = Some(Box::pin(tokio::time::sleep(t))),
                            (_, false) => write_timer = None,
                            _ => {}
                        }
                    }
                }
                if conn.is_done() {
                    return Poll::Ready(Wake::Stop);
                }
                if handler.poll_work(cx, &mut conn).is_ready() {
                    return Poll::Ready(Wake::Progress);
                }
                if conn.is_reading() && poll_read_into(&mut stream, cx, &mut conn).is_ready() {
                    return Poll::Ready(Wake::Progress);
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
        // RFC 6455 7.1.1: the server closes the TCP connection first once the handshake is
        // done. A shutdown first, bounded and only towards a peer that still reads: over TLS
        // it sends `close_notify`, so that the client can tell the end from a truncation.
        let reads = !matches!(outcome, Outcome::Dropped | Outcome::Closed(CloseCode(WRITE_ERROR)));
        if reads {
            let shutdown = std::future::poll_fn(|cx| Pin::new(&mut stream).poll_shutdown(cx));
            let _ = Box::pin(tokio::time::timeout(SHUTDOWN_LIMIT, shutdown)).await;
        }
        drop(stream);
        outcome
    }
}

#[cfg(test)]
mod size_tests {
    /// The driver's future is most of what an idle connection costs (BENCHMARKS.md); a
    /// buffer or a large stream kept across an await would show here first.
    #[test]
    fn idle_connection_future_stays_small() {
        let (a, _b) = tokio::io::duplex(64);
        let f = super::drive(
            a,
            bytes::Bytes::new(),
            wshub_websocket::Config::server(1024, None),
            crate::echo::Echo,
            None,
        );
        let size = std::mem::size_of_val(&f);
        // 416 bytes here; in production (TCP, boxed handler, span) the task's future is 496,
        // in a 640-byte tokio cell (cells grow by 128: past about 528 it would be 768).
        assert!(size <= 448, "drive future grew to {size} bytes");
    }

    #[test]
    fn coarse_deadlines_are_never_early_and_at_most_one_step_late() {
        // The grid starts at the first call: deadlines before it are left as they are.
        let _ = super::coarse(std::time::Instant::now());
        let now = std::time::Instant::now();
        let first = super::coarse(now);
        for ms in [0u64, 1, 249, 250, 251, 999, 25_000, 25_001] {
            let at = now + std::time::Duration::from_millis(ms);
            let c = super::coarse(at);
            assert!(c >= at, "{ms} ms: early");
            assert!(c - at <= super::TIMER_STEP, "{ms} ms: more than a step late");
            // On the grid: a whole number of steps after the grid's first point.
            assert_eq!((c - first).as_nanos() % super::TIMER_STEP.as_nanos(), 0, "{ms} ms: off the grid");
        }
    }
}
