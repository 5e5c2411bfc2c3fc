//! The server side of TLS over a `TcpStream`, with rustls's caller-owned-buffer API
//! ([`UnbufferedServerConnection`]) instead of tokio-rustls.
//!
//! Why: with the buffered `rustls::ServerConnection` every connection keeps a 4 KiB read
//! buffer for its whole life (rustls shrinks its deframer buffer to 4096 bytes, never to
//! zero), so an idle `wss://` connection cost about 4 KB more than it needs to. Here the
//! buffers belong to this type and exist only while data is in flight:
//! - received TLS bytes are read into a buffer on the stack of `poll_read` and decrypted
//!   there; only an incomplete record (or records the reader had no room for) is copied to
//!   the heap, and that copy is freed once processed;
//! - decrypted bytes the reader had no room for are kept until read, then freed;
//! - encrypted bytes the socket did not take are kept until sent, then freed.
//!
//! An idle connection holds the socket, rustls's connection state and three empty `Vec`s.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncodeTlsData, EncryptError, WriteTraffic};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Bytes read from the socket per call: one TLS record of the largest size (16 KiB of
/// plaintext plus the TLS 1.2 expansion allowance and the header) fits.
const READ_CHUNK: usize = 16 * 1024 + 2048 + 5;
/// Received bytes kept unprocessed at most: a handshake message rustls accepts (64 KiB)
/// plus a record. rustls refuses larger input first; this bounds what a peer can make us keep.
const MAX_INCOMING: usize = 64 * 1024 + READ_CHUNK;
/// Plaintext encrypted per write call (four records).
const MAX_WRITE: usize = 64 * 1024;
/// Plaintext gathered from several slices of a vectored write into one record.
const GATHER: usize = 16 * 1024;
/// Vectored writes up to this size are gathered on the stack.
const SMALL_GATHER: usize = 2048;
/// Records rustls may queue at once (handshake flights, alerts): with the input's size,
/// bounds the loop over its states.
const MAX_STEPS: usize = 64;

/// Makes [`TlsStream`]s: the server's TLS configuration.
#[derive(Clone)]
pub struct TlsAcceptor(Arc<ServerConfig>);

impl TlsAcceptor {
    pub fn new(config: Arc<ServerConfig>) -> Self {
        Self(config)
    }

    /// Runs the TLS handshake on `tcp`. Bytes the client sent after its `Finished` are kept
    /// for the first read. Errors (a peer that does not speak TLS, an alert, an early close)
    /// come as `io::Error`s; rustls's alert to the peer is sent first where it can be.
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<TlsStream> {
        let conn = UnbufferedServerConnection::new(self.0.clone()).map_err(tls_error)?;
        let mut s = TlsStream {
            tcp,
            conn,
            incoming: Vec::new(),
            out: Vec::new(),
            out_sent: 0,
            plain: Vec::new(),
            plain_read: 0,
            peer_closed: false,
            close_sent: false,
            failed: false,
        };
        std::future::poll_fn(|cx| s.poll_handshake(cx)).await?;
        Ok(s)
    }
}

/// A TLS connection of the server, after its handshake. Reads return EOF after the peer's
/// `close_notify`; a TCP close without one is an `UnexpectedEof` error (a truncation, as
/// with rustls's own reader). `poll_shutdown` sends our `close_notify`, then a FIN.
pub struct TlsStream {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    /// Received TLS bytes not processed yet. Empty (no allocation) when idle.
    incoming: Vec<u8>,
    /// Encrypted bytes for the socket; `out_sent` of them are sent. Freed once all are.
    out: Vec<u8>,
    out_sent: usize,
    /// Decrypted bytes the reader has not taken yet; `plain_read` of them are taken.
    plain: Vec<u8>,
    plain_read: usize,
    /// The peer's `close_notify` arrived: reads return EOF.
    peer_closed: bool,
    /// Our `close_notify` is queued.
    close_sent: bool,
    /// A TLS error ended the connection: every later call fails.
    failed: bool,
}

/// What `process` was asked to do once rustls has nothing else to say.
enum Mode<'a, 'b> {
    /// Decrypted data goes to this buffer first, the rest to `plain`.
    Read(&'a mut ReadBuf<'b>),
    /// Encrypt this application data.
    Write(&'a [u8]),
    /// Queue a `close_notify`.
    Close,
    /// Complete the handshake.
    Handshake,
}

/// Where `process` stopped.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Application data was decrypted (read mode).
    Data,
    /// rustls needs more bytes from the peer (reading, or a handshake in progress).
    NeedRead,
    /// The handshake is complete (handshake mode).
    Handshaken,
    /// This much of the data was encrypted into `out` (write mode; 0 for a close).
    Written(usize),
    /// The peer's `close_notify` came (read mode).
    PeerClosed,
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

fn failed_error() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "TLS connection failed earlier")
}

/// Appends to `out` what `write` puts into a buffer of `room` bytes, growing the buffer to
/// the size rustls says it needs (`needed`) until it fits.
fn append_with<E>(
    out: &mut Vec<u8>,
    mut room: usize,
    needed: impl Fn(&E) -> Option<usize>,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, E>,
) -> io::Result<()>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let start = out.len();
    loop {
        out.resize(start + room, 0);
        match write(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(err) => match needed(&err) {
                Some(size) if size > room => room = size,
                _ => {
                    out.truncate(start);
                    return Err(io::Error::other(err));
                }
            },
        }
    }
}

/// Appends the record rustls encoded to `out`.
fn encode(e: &mut EncodeTlsData<'_, ServerConnectionData>, out: &mut Vec<u8>) -> io::Result<()> {
    let needed = |err: &EncodeError| match err {
        EncodeError::InsufficientSize(s) => Some(s.required_size),
        _ => None,
    };
    append_with(out, 1024, needed, |buf| e.encode(buf))
}

/// Appends `data` encrypted to `out` (with anything rustls queued before it, such as the
/// answer to the peer's KeyUpdate), or a `close_notify` when `data` is `None`.
fn encrypt(w: &mut WriteTraffic<'_, ServerConnectionData>, data: Option<&[u8]>, out: &mut Vec<u8>) -> io::Result<()> {
    let len = data.map_or(0, <[u8]>::len);
    // Per record: header 5, tag 16, content type 1, and slack for a queued message.
    let room = len + (len / (16 * 1024) + 1) * 64 + 256;
    let needed = |err: &EncryptError| match err {
        EncryptError::InsufficientSize(s) => Some(s.required_size),
        _ => None,
    };
    append_with(out, room, needed, |buf| match data {
        Some(d) => w.encrypt(d, buf),
        None => w.queue_close_notify(buf),
    })
}

/// Runs rustls over the received bytes in `buf` until it needs something from us that
/// `mode` says we cannot give now. Returns how many bytes of `buf` are done with (to be
/// removed from its front), and where it stopped. Records to send go to `out`.
fn process(
    conn: &mut UnbufferedServerConnection,
    buf: &mut [u8],
    out: &mut Vec<u8>,
    plain: &mut Vec<u8>,
    peer_closed: &mut bool,
    mut mode: Mode<'_, '_>,
) -> (usize, io::Result<Step>) {
    let mut done = 0;
    // Each turn consumes input, takes a record rustls queued, or returns: this bound is
    // never reached, it only keeps a bug from spinning.
    for _ in 0..MAX_STEPS + buf.len() {
        let status = conn.process_tls_records(&mut buf[done..]);
        done += status.discard;
        let state = match status.state {
            Ok(s) => s,
            Err(e) => {
                // rustls queued its alert for the peer, if any: it comes out of the next
                // call, before any input is looked at. Only that one call: a second would
                // process the input again and alert twice. The same input, not an empty
                // slice: rustls keeps offsets into it.
                let status = conn.process_tls_records(&mut buf[done..]);
                done += status.discard;
                if let Ok(ConnectionState::EncodeTlsData(mut enc)) = status.state {
                    let _ = encode(&mut enc, out);
                }
                return (done, Err(tls_error(e)));
            }
        };
        match state {
            ConnectionState::ReadTraffic(mut r) => {
                while let Some(rec) = r.next_record() {
                    let rec = match rec {
                        Ok(rec) => rec,
                        Err(e) => return (done, Err(tls_error(e))),
                    };
                    done += rec.discard;
                    let mut data = rec.payload;
                    if let Mode::Read(dst) = &mut mode {
                        let n = data.len().min(dst.remaining());
                        dst.put_slice(&data[..n]);
                        data = &data[n..];
                    }
                    plain.extend_from_slice(data);
                }
                if matches!(mode, Mode::Read(_)) {
                    return (done, Ok(Step::Data));
                }
            }
            ConnectionState::EncodeTlsData(mut enc) => {
                if let Err(e) = encode(&mut enc, out) {
                    return (done, Err(e));
                }
            }
            // The records are in `out`, which is sent before anything written later.
            ConnectionState::TransmitTlsData(t) => t.done(),
            ConnectionState::BlockedHandshake => {
                let step = match mode {
                    Mode::Read(_) | Mode::Handshake => Ok(Step::NeedRead),
                    Mode::Write(_) | Mode::Close => Err(io::Error::new(io::ErrorKind::NotConnected, "TLS handshake not complete")),
                };
                return (done, step);
            }
            ConnectionState::WriteTraffic(mut w) => {
                let step = match mode {
                    Mode::Read(_) => Ok(Step::NeedRead),
                    Mode::Handshake => Ok(Step::Handshaken),
                    Mode::Write(data) => encrypt(&mut w, Some(data), out).map(|()| Step::Written(data.len())),
                    Mode::Close => encrypt(&mut w, None, out).map(|()| Step::Written(0)),
                };
                return (done, step);
            }
            ConnectionState::PeerClosed => {
                *peer_closed = true;
                match mode {
                    Mode::Read(_) => return (done, Ok(Step::PeerClosed)),
                    Mode::Handshake => return (done, Err(io::ErrorKind::UnexpectedEof.into())),
                    // We may still write; rustls says so next.
                    Mode::Write(_) | Mode::Close => {}
                }
            }
            ConnectionState::Closed => {
                *peer_closed = true;
                let step = match mode {
                    Mode::Read(_) => Ok(Step::PeerClosed),
                    Mode::Handshake => Err(io::ErrorKind::UnexpectedEof.into()),
                    // Both sides sent close_notify: nothing more can be written.
                    Mode::Write(_) => Err(io::ErrorKind::BrokenPipe.into()),
                    Mode::Close => Ok(Step::Written(0)),
                };
                return (done, step);
            }
            // No early data is accepted (ServerConfig::max_early_data_size is 0).
            _ => return (done, Err(io::Error::new(io::ErrorKind::InvalidData, "unexpected TLS state"))),
        }
    }
    (done, Err(io::Error::other("TLS state machine did not settle")))
}

impl TlsStream {
    /// Bytes of buffer this stream holds now (received, decrypted and encrypted bytes in
    /// flight): 0 on an idle connection.
    pub fn buffered(&self) -> usize {
        self.incoming.capacity() + self.out.capacity() + self.plain.capacity()
    }

    /// The protocol agreed through ALPN (`h2`, `http/1.1`), if the client offered any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// Sends what `out` holds; `Ready(Ok)` once all of it is sent (and `out` freed).
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_sent < self.out.len() {
            match ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.out[self.out_sent..])) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.out_sent += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        if self.out.capacity() > 0 {
            self.out = Vec::new();
            self.out_sent = 0;
        }
        Poll::Ready(Ok(()))
    }

    /// Reads from the socket onto the end of `incoming`: the bytes read, 0 at EOF.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.incoming.len() >= MAX_INCOMING {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, "TLS input too large")));
        }
        let mut buf = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut rb = ReadBuf::uninit(&mut buf);
        ready!(Pin::new(&mut self.tcp).poll_read(cx, &mut rb))?;
        self.incoming.extend_from_slice(rb.filled());
        Poll::Ready(Ok(rb.filled().len()))
    }

    /// Runs rustls over `incoming` and drops what it is done with.
    fn run(&mut self, mode: Mode<'_, '_>) -> io::Result<Step> {
        let (done, step) = process(
            &mut self.conn,
            &mut self.incoming,
            &mut self.out,
            &mut self.plain,
            &mut self.peer_closed,
            mode,
        );
        if done >= self.incoming.len() {
            self.incoming = Vec::new();
        } else if done > 0 {
            self.incoming.drain(..done);
        }
        if step.is_err() {
            self.failed = true;
        }
        step
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match self.run(Mode::Handshake) {
                // Our last flight must be out before the stream is handed over.
                Ok(Step::Handshaken) => return self.poll_send(cx),
                Ok(_) => {
                    if let Poll::Ready(Err(e)) = self.poll_send(cx) {
                        return Poll::Ready(Err(e));
                    }
                    if ready!(self.poll_fill(cx))? == 0 {
                        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                    }
                }
                Err(e) => {
                    // The alert, if the socket takes it now.
                    let _ = self.poll_send(cx);
                    return Poll::Ready(Err(e));
                }
            }
        }
    }

    /// What a read that decrypted something (or nothing) ends with.
    fn read_step(&mut self, cx: &mut Context<'_>, step: io::Result<Step>, filled: bool) -> Option<Poll<io::Result<()>>> {
        match step {
            Ok(Step::Data) if filled => Some(Poll::Ready(Ok(()))),
            Ok(Step::PeerClosed) => Some(Poll::Ready(Ok(()))),
            // An empty record, or more bytes needed: read on.
            Ok(_) => None,
            Err(e) => {
                self.failed = true;
                let _ = self.poll_send(cx);
                Some(Poll::Ready(Err(e)))
            }
        }
    }

    fn poll_read_inner(&mut self, cx: &mut Context<'_>, dst: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.plain_read < self.plain.len() {
            let n = dst.remaining().min(self.plain.len() - self.plain_read);
            dst.put_slice(&self.plain[self.plain_read..self.plain_read + n]);
            self.plain_read += n;
            if self.plain_read == self.plain.len() {
                self.plain = Vec::new();
                self.plain_read = 0;
            }
            return Poll::Ready(Ok(()));
        }
        if self.failed {
            return Poll::Ready(Err(failed_error()));
        }
        if self.peer_closed || dst.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            // Records rustls queued while reading (an alert, say) go out as the socket takes them.
            if let Poll::Ready(Err(e)) = self.poll_send(cx) {
                return Poll::Ready(Err(e));
            }
            let before = dst.filled().len();
            if !self.incoming.is_empty() {
                // Part of a record is kept: complete it.
                let step = self.run(Mode::Read(&mut *dst));
                let need_read = matches!(step, Ok(Step::NeedRead));
                if let Some(r) = self.read_step(cx, step, dst.filled().len() > before) {
                    return r;
                }
                if !need_read {
                    // An empty record: more may be kept.
                    continue;
                }
                if !self.incoming.is_empty() {
                    if ready!(self.poll_fill(cx))? == 0 {
                        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                    }
                    continue;
                }
            }
            // Nothing kept: read onto this function's stack and decrypt there; only what
            // is left over goes to the heap.
            let mut buf = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut rb = ReadBuf::uninit(&mut buf);
            ready!(Pin::new(&mut self.tcp).poll_read(cx, &mut rb))?;
            let got = rb.filled_mut();
            if got.is_empty() {
                // TCP closed without close_notify: a truncation.
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            let (done, step) = process(
                &mut self.conn,
                got,
                &mut self.out,
                &mut self.plain,
                &mut self.peer_closed,
                Mode::Read(&mut *dst),
            );
            if done < got.len() {
                self.incoming.extend_from_slice(&got[done..]);
            }
            if let Some(r) = self.read_step(cx, step, dst.filled().len() > before) {
                return r;
            }
        }
    }

    fn poll_write_inner(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        if self.failed {
            return Poll::Ready(Err(failed_error()));
        }
        // What was encrypted before goes first: at most one write's worth is kept.
        ready!(self.poll_send(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let data = &data[..data.len().min(MAX_WRITE)];
        match self.run(Mode::Write(data)) {
            Ok(Step::Written(n)) => {
                // An error shows at the next call; `data` is taken.
                let _ = self.poll_send(cx);
                Poll::Ready(Ok(n))
            }
            Ok(step) => Poll::Ready(Err(io::Error::other(format!("TLS write stopped at {step:?}")))),
            Err(e) => {
                let _ = self.poll_send(cx);
                Poll::Ready(Err(e))
            }
        }
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_read_inner(cx, buf)
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_inner(cx, buf)
    }

    /// Small slices (a WebSocket frame's header and payload, say) go into one record.
    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Some(first) = bufs.iter().find(|b| !b.is_empty()) else {
            return this.poll_write_inner(cx, &[]);
        };
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if first.len() >= GATHER || first.len() == total {
            return this.poll_write_inner(cx, first);
        }
        if this.failed {
            return Poll::Ready(Err(failed_error()));
        }
        ready!(this.poll_send(cx))?;
        let gather = |into: &mut [u8]| {
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(into.len() - n);
                into[n..n + take].copy_from_slice(&b[..take]);
                n += take;
                if n == into.len() {
                    break;
                }
            }
            n
        };
        if total <= SMALL_GATHER {
            let mut small = [0u8; SMALL_GATHER];
            let n = gather(&mut small);
            this.poll_write_inner(cx, &small[..n])
        } else {
            let mut big = vec![0u8; total.min(GATHER)];
            let n = gather(&mut big);
            this.poll_write_inner(cx, &big[..n])
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    /// Sends our `close_notify` (once; not after a TLS error), then a FIN.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent && !this.failed {
            this.close_sent = true;
            if let Err(e) = this.run(Mode::Close) {
                tracing::debug!(error = %e, "TLS close_notify not sent");
            }
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod size_tests {
    /// An idle TLS connection is this struct plus what rustls allocates (keys, the
    /// handshake's leftovers); the buffers are empty `Vec`s.
    #[test]
    fn tls_stream_stays_small() {
        let size = std::mem::size_of::<super::TlsStream>();
        let conn = std::mem::size_of::<rustls::server::UnbufferedServerConnection>();
        let tcp = std::mem::size_of::<tokio::net::TcpStream>();
        // Three Vecs, two offsets, three flags beside the socket and rustls's state.
        assert!(
            size <= conn + tcp + 3 * 24 + 2 * 8 + 8,
            "TlsStream grew to {size} bytes (rustls {conn}, tcp {tcp})"
        );
        eprintln!("TlsStream {size} bytes: rustls {conn}, tcp {tcp}");
    }
}
