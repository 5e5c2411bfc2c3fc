//! The sans-IO WebSocket connection: bytes in, events and bytes out.
//!
//! The caller feeds what it read with [`Connection::handle_read`] (in pieces of any size),
//! takes [`Event`]s with [`Connection::poll_event`], queues messages with
//! [`Connection::send`] or [`Connection::send_prepared`], and writes what
//! [`Connection::transmit_slices`] hands it (several frames per vectored write), reporting
//! progress with [`Connection::advance_transmit`]. Timers (close timeout, heartbeats) belong
//! to the layer above.
//!
//! Payload bytes go straight from the caller's read buffer to the message being assembled,
//! unmasked on the way; only a header cut between two reads (at most 13 bytes) is kept
//! aside. When nothing is in flight the connection holds no heap buffer.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

use crate::deflate::{self, DeflateParams, InflateError, Inflater};
use crate::frame::{encode_header, parse_header, FrameHeader, OpCode, MAX_HEADER_LEN};
use crate::mask::apply_mask;
use crate::utf8::Utf8Validator;
use crate::{CloseCode, PreparedMessage, ProtocolError};

/// Which end of the connection this is: servers read masked frames and write unmasked ones,
/// clients the reverse (RFC 6455 5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
}

/// Settings of one connection.
#[derive(Debug, Clone)]
pub struct Config {
    pub role: Role,
    /// Largest message accepted, after decompression; larger ones close with 1009.
    pub max_message_size: usize,
    /// permessage-deflate, when negotiated.
    pub deflate: Option<DeflateParams>,
}

impl Config {
    pub fn server(max_message_size: usize, deflate: Option<DeflateParams>) -> Self {
        Config {
            role: Role::Server,
            max_message_size,
            deflate,
        }
    }
}

/// Text or binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Text,
    Binary,
}

/// What happened on the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A whole message. Text is valid UTF-8.
    Message {
        kind: MessageKind,
        data: Bytes,
    },
    /// A ping arrived; its pong is already queued.
    Ping(Bytes),
    Pong(Bytes),
    /// The peer closed (its close frame, or end of stream as 1006). When the peer started
    /// the close, the answering close frame is already queued.
    Closed {
        code: CloseCode,
        reason: String,
    },
    /// The peer broke the protocol; a close frame with the matching code is queued.
    Failed(ProtocolError),
}

/// Where the close handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Open,
    /// We sent a close frame and wait for the peer's.
    CloseSent,
    /// Nothing more is read; once the queued bytes are written, the socket can be closed.
    Closed,
}

#[derive(Debug)]
struct ReadFrame {
    opcode: OpCode,
    fin: bool,
    mask: Option<[u8; 4]>,
    remaining: u64,
    offset: usize,
}

#[derive(Debug)]
struct PartialMessage {
    kind: MessageKind,
    compressed: bool,
    buf: BytesMut,
    utf8: Utf8Validator,
}

/// One WebSocket connection's protocol state. See the module docs.
#[derive(Debug)]
pub struct Connection {
    role: Role,
    state: State,
    /// False once a close frame arrived or the peer broke the protocol: later bytes are
    /// ignored. Writing goes on until the events before that point have been handled.
    reading: bool,
    max_message_size: usize,
    deflate: Option<DeflateParams>,
    /// A context kept across messages: only when the peer compresses with context takeover.
    inflater: Option<Box<Inflater>>,
    hdr: [u8; MAX_HEADER_LEN],
    hdr_len: u8,
    frame: Option<ReadFrame>,
    message: Option<PartialMessage>,
    control: Vec<u8>,
    events: VecDeque<Event>,
    tx: VecDeque<Bytes>,
    tx_len: usize,
    /// The front of `tx` is partly written (it must go out whole before anything else).
    tx_front_started: bool,
}

impl Connection {
    pub fn new(config: Config) -> Self {
        Connection {
            role: config.role,
            state: State::Open,
            reading: true,
            max_message_size: config.max_message_size,
            deflate: config.deflate,
            inflater: None,
            hdr: [0; MAX_HEADER_LEN],
            hdr_len: 0,
            frame: None,
            message: None,
            control: Vec::new(),
            events: VecDeque::new(),
            tx: VecDeque::new(),
            tx_len: 0,
            tx_front_started: false,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Whether bytes from the peer are still read (false after its close frame, a protocol
    /// error or end of stream).
    pub fn is_reading(&self) -> bool {
        self.reading
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn deflate(&self) -> Option<&DeflateParams> {
        self.deflate.as_ref()
    }

    /// Closed and everything queued is written: the socket can go.
    pub fn is_done(&self) -> bool {
        self.state == State::Closed && self.tx.is_empty()
    }

    /// Feeds bytes read from the peer. Bytes after a close or a protocol error are ignored.
    pub fn handle_read(&mut self, mut data: &[u8]) {
        while !data.is_empty() && self.reading {
            if let Some(f) = &self.frame {
                let n = usize::try_from(f.remaining).unwrap_or(usize::MAX).min(data.len());
                let (chunk, rest) = data.split_at(n);
                data = rest;
                if let Err(e) = self.payload(chunk) {
                    return self.fail(e);
                }
                continue;
            }
            let have = self.hdr_len as usize;
            let take = (MAX_HEADER_LEN - have).min(data.len());
            self.hdr[have..have + take].copy_from_slice(&data[..take]);
            match parse_header(&self.hdr[..have + take]) {
                Err(e) => return self.fail(e),
                Ok(None) => {
                    self.hdr_len = (have + take) as u8;
                    data = &data[take..];
                }
                Ok(Some((h, used))) => {
                    self.hdr_len = 0;
                    data = &data[used - have..];
                    if let Err(e) = self.begin_frame(h) {
                        return self.fail(e);
                    }
                }
            }
        }
    }

    /// The peer's end of stream.
    pub fn handle_eof(&mut self) {
        if self.reading {
            self.reading = false;
            self.state = State::Closed;
            self.tx.clear();
            self.tx_len = 0;
            self.events.push_back(Event::Closed {
                code: CloseCode::ABNORMAL,
                reason: String::new(),
            });
        }
    }

    fn begin_frame(&mut self, h: FrameHeader) -> Result<(), ProtocolError> {
        // RFC 6455 5.2: "MUST be 0 unless an extension is negotiated that defines meanings
        // for non-zero values". RFC 7692 6: RSV1 marks the first frame of a compressed message.
        if h.rsv2 || h.rsv3 || (h.rsv1 && (self.deflate.is_none() || !matches!(h.opcode, OpCode::Text | OpCode::Binary))) {
            return Err(ProtocolError::ReservedBits);
        }
        // RFC 6455 5.1: a server "MUST close the connection upon receiving a frame that is
        // not masked"; a client "MUST close a connection if it detects a masked frame".
        match (self.role, h.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedClientFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedServerFrame),
            _ => {}
        }
        let len = h.payload_len;
        match h.opcode {
            OpCode::Text | OpCode::Binary => {
                if self.message.is_some() {
                    return Err(ProtocolError::ExpectedContinuation);
                }
                if len > self.max_message_size as u64 {
                    return Err(ProtocolError::MessageTooBig(self.max_message_size));
                }
                let kind = if h.opcode == OpCode::Text {
                    MessageKind::Text
                } else {
                    MessageKind::Binary
                };
                self.message = Some(PartialMessage {
                    kind,
                    compressed: h.rsv1,
                    buf: BytesMut::with_capacity(len as usize),
                    utf8: Utf8Validator::default(),
                });
            }
            OpCode::Continuation => {
                let m = self.message.as_mut().ok_or(ProtocolError::UnexpectedContinuation)?;
                if (m.buf.len() as u64).saturating_add(len) > self.max_message_size as u64 {
                    return Err(ProtocolError::MessageTooBig(self.max_message_size));
                }
                m.buf.reserve(len as usize);
            }
            _ => self.control.clear(),
        }
        self.frame = Some(ReadFrame {
            opcode: h.opcode,
            fin: h.fin,
            mask: h.mask,
            remaining: len,
            offset: 0,
        });
        if len == 0 {
            self.end_frame()?;
        }
        Ok(())
    }

    fn payload(&mut self, chunk: &[u8]) -> Result<(), ProtocolError> {
        let Some(f) = self.frame.as_mut() else {
            return Ok(());
        };
        let target = if f.opcode.is_control() {
            &mut self.control
        } else {
            match self.message.as_mut() {
                Some(m) => {
                    let start = m.buf.len();
                    m.buf.extend_from_slice(chunk);
                    if let Some(k) = f.mask {
                        apply_mask(&mut m.buf[start..], k, f.offset);
                    }
                    if m.kind == MessageKind::Text && !m.compressed && m.utf8.feed(&m.buf[start..]).is_err() {
                        return Err(ProtocolError::InvalidUtf8);
                    }
                    f.offset += chunk.len();
                    f.remaining -= chunk.len() as u64;
                    if f.remaining == 0 {
                        self.end_frame()?;
                    }
                    return Ok(());
                }
                None => return Ok(()),
            }
        };
        let start = target.len();
        target.extend_from_slice(chunk);
        if let Some(k) = f.mask {
            apply_mask(&mut target[start..], k, f.offset);
        }
        f.offset += chunk.len();
        f.remaining -= chunk.len() as u64;
        if f.remaining == 0 {
            self.end_frame()?;
        }
        Ok(())
    }

    fn end_frame(&mut self) -> Result<(), ProtocolError> {
        let Some(f) = self.frame.take() else {
            return Ok(());
        };
        match f.opcode {
            OpCode::Ping => {
                // The pong is queued when this event is polled, so that it follows the
                // answers to the messages before the ping.
                let payload = Bytes::from(std::mem::take(&mut self.control));
                self.events.push_back(Event::Ping(payload));
            }
            OpCode::Pong => {
                let payload = Bytes::from(std::mem::take(&mut self.control));
                self.events.push_back(Event::Pong(payload));
            }
            OpCode::Close => {
                let payload = std::mem::take(&mut self.control);
                self.handle_close(&payload)?;
            }
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                if f.fin {
                    if let Some(m) = self.message.take() {
                        self.finish_message(m)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn handle_close(&mut self, payload: &[u8]) -> Result<(), ProtocolError> {
        let (code, reason) = match payload {
            [] => (CloseCode::NO_STATUS, String::new()),
            [_] => return Err(ProtocolError::CloseLength),
            [a, b, rest @ ..] => {
                let code = CloseCode(u16::from_be_bytes([*a, *b]));
                if !code.is_sendable() {
                    return Err(ProtocolError::InvalidCloseCode(code.0));
                }
                let reason = std::str::from_utf8(rest).map_err(|_| ProtocolError::InvalidCloseReason)?;
                (code, reason.to_owned())
            }
        };
        // The answering close frame is queued when this event is polled.
        self.reading = false;
        self.message = None;
        self.events.push_back(Event::Closed { code, reason });
        Ok(())
    }

    fn finish_message(&mut self, mut m: PartialMessage) -> Result<(), ProtocolError> {
        if self.state != State::Open {
            return Ok(()); // RFC 6455 1.4: data after our close frame is discarded
        }
        let data = if m.compressed {
            let takeover = match self.role {
                Role::Server => self.deflate.is_some_and(|d| !d.client_no_context_takeover),
                Role::Client => self.deflate.is_some_and(|d| !d.server_no_context_takeover),
            };
            let out = if takeover {
                let inf = self.inflater.get_or_insert_with(|| Box::new(Inflater::new()));
                inf.inflate(&m.buf, self.max_message_size)
            } else {
                Inflater::new().inflate(&m.buf, self.max_message_size)
            };
            let out = out.map_err(|e| match e {
                InflateError::TooBig => ProtocolError::MessageTooBig(self.max_message_size),
                InflateError::Corrupt => ProtocolError::BadCompressedData,
            })?;
            if m.kind == MessageKind::Text && std::str::from_utf8(&out).is_err() {
                return Err(ProtocolError::InvalidUtf8);
            }
            Bytes::from(out)
        } else {
            if m.kind == MessageKind::Text && m.utf8.finish().is_err() {
                return Err(ProtocolError::InvalidUtf8);
            }
            m.buf.freeze()
        };
        self.events.push_back(Event::Message { kind: m.kind, data });
        Ok(())
    }

    fn fail(&mut self, e: ProtocolError) {
        // The close frame is queued when the event is polled, after the answers to the
        // messages that came before the error.
        self.reading = false;
        self.frame = None;
        self.message = None;
        self.control = Vec::new();
        self.events.push_back(Event::Failed(e));
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        let e = self.events.pop_front();
        match &e {
            None if self.events.capacity() > 0 => self.events = VecDeque::new(),
            // RFC 6455 5.5.2: "Upon receipt of a Ping frame, an endpoint MUST send a Pong
            // frame in response", with the same application data.
            Some(Event::Ping(p)) if self.state == State::Open => {
                let p = p.clone();
                self.queue_control(OpCode::Pong, &p);
            }
            Some(Event::Closed { code, .. }) if *code != CloseCode::ABNORMAL => {
                // RFC 6455 5.5.1: the endpoint "MUST send a Close frame in response",
                // typically echoing the status code it received.
                if self.state == State::Open {
                    if *code == CloseCode::NO_STATUS {
                        self.queue_control(OpCode::Close, &[]);
                    } else {
                        let c = code.0.to_be_bytes();
                        self.queue_control(OpCode::Close, &c);
                    }
                }
                self.state = State::Closed;
            }
            Some(Event::Failed(err)) => {
                if self.state == State::Open {
                    let mut payload = Vec::with_capacity(2 + 64);
                    payload.extend_from_slice(&err.close_code().0.to_be_bytes());
                    payload.extend_from_slice(err.to_string().as_bytes());
                    payload.truncate(125);
                    self.queue_control(OpCode::Close, &payload);
                }
                self.state = State::Closed;
            }
            _ => {}
        }
        e
    }

    // ---- output ----

    fn mask_key(&self) -> Option<[u8; 4]> {
        match self.role {
            Role::Server => None,
            Role::Client => Some(rand::random()),
        }
    }

    fn queue_control(&mut self, op: OpCode, payload: &[u8]) {
        let payload = &payload[..payload.len().min(125)];
        let mask = self.mask_key();
        let mut hdr = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut hdr, true, false, op, mask, payload.len() as u64);
        let mut b = BytesMut::with_capacity(n + payload.len());
        b.extend_from_slice(&hdr[..n]);
        let start = b.len();
        b.extend_from_slice(payload);
        if let Some(k) = mask {
            apply_mask(&mut b[start..], k, 0);
        }
        self.push_tx(b.freeze());
    }

    fn push_tx(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.tx_len += b.len();
            self.tx.push_back(b);
        }
    }

    /// Queues a message; compressed when permessage-deflate was agreed and the message is
    /// long enough. Returns false (and queues nothing) once a close frame has been sent.
    pub fn send(&mut self, kind: MessageKind, payload: Bytes) -> bool {
        if self.state != State::Open {
            return false;
        }
        let op = match kind {
            MessageKind::Text => OpCode::Text,
            MessageKind::Binary => OpCode::Binary,
        };
        let (payload, rsv1) = match &self.deflate {
            Some(d) if payload.len() >= d.config.min_size => {
                let bits = match self.role {
                    Role::Server => d.server_max_window_bits,
                    Role::Client => d.client_max_window_bits,
                };
                (Bytes::from(deflate::compress(&payload, bits, d.config.level)), true)
            }
            _ => (payload, false),
        };
        let mask = self.mask_key();
        let mut hdr = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut hdr, true, rsv1, op, mask, payload.len() as u64);
        if let Some(k) = mask {
            let mut b = BytesMut::with_capacity(n + payload.len());
            b.extend_from_slice(&hdr[..n]);
            b.extend_from_slice(&payload);
            apply_mask(&mut b[n..], k, 0);
            self.push_tx(b.freeze());
        } else if payload.len() <= 512 {
            // Small: one buffer, one iovec. Large: header and payload as two iovecs, no copy.
            let mut b = BytesMut::with_capacity(n + payload.len());
            b.extend_from_slice(&hdr[..n]);
            b.extend_from_slice(&payload);
            self.push_tx(b.freeze());
        } else {
            self.push_tx(Bytes::copy_from_slice(&hdr[..n]));
            self.push_tx(payload);
        }
        true
    }

    /// Queues a message framed once for many connections: only a reference count is taken.
    /// A client connection (which must mask) falls back to [`Connection::send`].
    pub fn send_prepared(&mut self, msg: &PreparedMessage) -> bool {
        if self.state != State::Open {
            return false;
        }
        if self.role == Role::Client {
            return self.send(msg.kind(), msg.payload().clone());
        }
        let frame = msg.frame_for(self.deflate.as_ref());
        self.push_tx(frame);
        true
    }

    /// Queues bytes that are already one or more whole frames valid for this connection.
    pub fn send_raw_frames(&mut self, frames: Bytes) -> bool {
        if self.state != State::Open {
            return false;
        }
        self.push_tx(frames);
        true
    }

    pub fn send_ping(&mut self, payload: &[u8]) {
        if self.state == State::Open {
            self.queue_control(OpCode::Ping, payload);
        }
    }

    /// Starts the close handshake with `code` and a reason (cut to fit a control frame).
    /// Data received afterwards is discarded; the peer's close frame ends the connection.
    pub fn close(&mut self, code: CloseCode, reason: &str) {
        if self.state != State::Open {
            return;
        }
        let mut payload = Vec::with_capacity(2 + reason.len().min(123));
        payload.extend_from_slice(&code.0.to_be_bytes());
        let mut cut = reason.len().min(123);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        payload.extend_from_slice(&reason.as_bytes()[..cut]);
        self.queue_control(OpCode::Close, &payload);
        self.state = State::CloseSent;
    }

    /// Ends the connection without a close frame: what is queued is written, then the
    /// socket can go (Centrifugo's `disable_closing_handshake`, for clients of its versions
    /// before 6.5.1 that expect the TCP connection to just end).
    pub fn end_without_close_frame(&mut self) {
        if self.state == State::Open {
            self.state = State::Closed;
            self.reading = false;
        }
    }

    /// Like [`Connection::close`], but first drops every queued frame that has not started
    /// to leave: for a peer closed for being too slow, its backlog is not worth sending.
    pub fn close_discarding(&mut self, code: CloseCode, reason: &str) {
        let keep = usize::from(self.tx_front_started).min(self.tx.len());
        while self.tx.len() > keep {
            if let Some(b) = self.tx.pop_back() {
                self.tx_len -= b.len();
            }
        }
        self.close(code, reason);
    }

    /// Bytes queued and not yet written.
    pub fn pending_bytes(&self) -> usize {
        self.tx_len
    }

    pub fn has_pending_transmit(&self) -> bool {
        !self.tx.is_empty()
    }

    /// Fills `out` with the queued bytes, in order, and returns how many slices it used.
    pub fn transmit_slices<'a>(&'a self, out: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, b) in out.iter_mut().zip(self.tx.iter()) {
            *slot = IoSlice::new(b);
            n += 1;
        }
        n
    }

    /// Marks `n` bytes of the queue as written.
    pub fn advance_transmit(&mut self, mut n: usize) {
        self.tx_len = self.tx_len.saturating_sub(n);
        while n > 0 {
            let Some(front) = self.tx.front_mut() else {
                break;
            };
            if n >= front.len() {
                n -= front.len();
                self.tx.pop_front();
                self.tx_front_started = false;
            } else {
                front.advance(n);
                self.tx_front_started = true;
                n = 0;
            }
        }
        if self.tx.is_empty() && self.tx.capacity() > 0 {
            // An idle connection keeps no queue storage.
            self.tx = VecDeque::new();
        }
    }

    /// Takes everything queued, copied into one buffer: for a writer that writes a whole
    /// buffer at a time (clients, load generators, tests). The server's driver writes the
    /// slices where they are instead.
    pub fn take_transmit(&mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.tx_len);
        for b in &self.tx {
            out.extend_from_slice(b);
        }
        self.advance_transmit(out.len());
        out
    }
}

#[cfg(test)]
mod tests;
