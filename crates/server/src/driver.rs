//! The per-connection WebSocket driver: a thin loop around the sans-IO
//! [`wshub_websocket::Connection`].

use std::io::{self, IoSlice};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::time::Instant;
use wshub_websocket::{CloseCode, Connection, Event, MessageKind, State};

/// How long we wait for the peer's close frame after sending ours.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Read buffer on the stack of a non-async function, so that no connection keeps one.
const READ_CHUNK: usize = 16 * 1024;
/// Slices per vectored write.
const MAX_IOVECS: usize = 64;

/// What the application does with messages. Called from the connection's task.
pub trait Handler: Send {
    /// A whole message arrived. Answer through `conn` (`send`, `send_prepared`, `close`).
    fn on_message(&mut self, conn: &mut Connection, kind: MessageKind, data: Bytes);
    /// The connection ended, with the code seen or sent.
    fn on_close(&mut self, _code: CloseCode) {}
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Close handshake completed or the peer's close answered.
    Closed(CloseCode),
    /// We failed the connection for a protocol error.
    Failed(CloseCode),
    /// The socket dropped or errored without a close handshake.
    Dropped,
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

/// Drives one upgraded connection until it ends. `leftover` holds bytes that arrived with
/// the handshake.
pub async fn drive<H: Handler>(
    stream: TcpStream,
    leftover: Bytes,
    mut conn: Connection,
    mut handler: H,
) -> Outcome {
    let _ = stream.set_nodelay(true);
    if !leftover.is_empty() {
        conn.handle_read(&leftover);
    }
    let mut close_deadline: Option<Instant> = None;
    let mut outcome = Outcome::Dropped;
    loop {
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::Message { kind, data } => handler.on_message(&mut conn, kind, data),
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
        if write_available(&stream, &mut conn).is_err() {
            outcome = Outcome::Dropped;
            break;
        }
        if conn.is_done() {
            break;
        }
        if conn.state() == State::CloseSent && close_deadline.is_none() {
            close_deadline = Some(Instant::now() + CLOSE_TIMEOUT);
        }
        let reading = conn.is_reading();
        let writing = conn.has_pending_transmit();
        tokio::select! {
            r = stream.readable(), if reading => {
                match r.and_then(|_| read_available(&stream, &mut conn)) {
                    Ok(true) => {}
                    Ok(false) | Err(_) => conn.handle_eof(),
                }
            }
            r = stream.writable(), if writing => {
                if r.is_err() {
                    outcome = Outcome::Dropped;
                    break;
                }
            }
            _ = sleep_until_opt(close_deadline) => break,
        }
    }
    let code = match &outcome {
        Outcome::Closed(c) | Outcome::Failed(c) => *c,
        Outcome::Dropped => CloseCode::ABNORMAL,
    };
    handler.on_close(code);
    // RFC 6455 7.1.1: the server closes the TCP connection first once the handshake is done.
    drop(stream);
    outcome
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
