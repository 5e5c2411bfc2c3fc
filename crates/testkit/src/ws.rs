//! A minimal WebSocket client over a real socket, built on the transport's client role
//! (`wshub_websocket`), and raw HTTP for what a correct client never sends.
#![allow(clippy::unwrap_used)]

use std::io::IoSlice;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wshub_websocket::handshake;
use wshub_websocket::{Config, Connection, DeflateConfig, Event, MessageKind, Role};

/// Every read of this module is bounded by this.
pub const LIMIT: Duration = Duration::from_secs(10);

/// Sends raw bytes and reads the HTTP answer head and whatever body follows until close or
/// the end of the head plus a short body.
pub async fn raw_http(addr: SocketAddr, request: &[u8]) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(LIMIT, s.read(&mut chunk))
            .await
            .expect("answer in time")
            .unwrap();
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(head)) = resp.parse(&buf) {
            let len: usize = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                .unwrap_or(0);
            if buf.len() >= head + len {
                let hs = resp
                    .headers
                    .iter()
                    .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
                    .collect();
                let body = String::from_utf8_lossy(&buf[head..head + len]).into_owned();
                return (resp.code.unwrap(), hs, body);
            }
        }
    }
    panic!("connection closed before a whole answer: {:?}", String::from_utf8_lossy(&buf));
}

pub fn upgrade_request(host: &str, extra: &str) -> Vec<u8> {
    format!(
        "GET /connection/websocket HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .into_bytes()
}

/// A WebSocket client over a real socket.
pub struct Client {
    pub stream: TcpStream,
    pub conn: Connection,
    pub protocol: Option<String>,
}

impl Client {
    pub async fn connect(addr: SocketAddr, path: &str, protocols: &[&str], deflate: Option<DeflateConfig>) -> Client {
        let stream = TcpStream::connect(addr).await.unwrap();
        Self::handshake(stream, addr, path, protocols, deflate).await
    }

    /// A client whose socket takes at most `rcvbuf` bytes in the kernel: one that stops
    /// reading stalls the server quickly.
    pub async fn connect_small_buffer(addr: SocketAddr, path: &str, rcvbuf: u32) -> Client {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(rcvbuf).unwrap();
        let stream = sock.connect(addr).await.unwrap();
        Self::handshake(stream, addr, path, &[], None).await
    }

    async fn handshake(mut stream: TcpStream, addr: SocketAddr, path: &str, protocols: &[&str], deflate: Option<DeflateConfig>) -> Client {
        let req = handshake::client_request(&addr.to_string(), path, protocols, deflate, rand_key());
        stream.write_all(&req.bytes).await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            let n = tokio::time::timeout(LIMIT, stream.read(&mut chunk)).await.unwrap().unwrap();
            assert!(n > 0, "closed during handshake");
            buf.extend_from_slice(&chunk[..n]);
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head) = resp.parse(&buf).unwrap() {
                let mut map = http::HeaderMap::new();
                for h in resp.headers.iter() {
                    map.append(
                        http::HeaderName::from_bytes(h.name.as_bytes()).unwrap(),
                        http::HeaderValue::from_bytes(h.value).unwrap(),
                    );
                }
                let acc = handshake::verify_response(resp.code.unwrap(), &map, &req, deflate).unwrap();
                let mut conn = Connection::new(Config {
                    role: Role::Client,
                    max_message_size: 64 << 20,
                    deflate: acc.deflate,
                });
                conn.handle_read(&buf[head..]);
                return Client {
                    stream,
                    conn,
                    protocol: acc.protocol,
                };
            }
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    pub async fn send(&mut self, kind: MessageKind, data: &[u8]) {
        self.conn.send(kind, Bytes::copy_from_slice(data));
        self.flush().await;
    }

    /// Sends the client protocol's `connect` command (id 1) with `token`, in JSON.
    pub async fn send_connect(&mut self, token: &str) {
        let cmd = format!(r#"{{"id":1,"connect":{{"token":"{token}"}}}}"#);
        self.send(MessageKind::Text, cmd.as_bytes()).await;
    }

    pub async fn flush(&mut self) {
        while self.conn.has_pending_transmit() {
            let mut slices = [IoSlice::new(&[]); 16];
            let n = self.conn.transmit_slices(&mut slices);
            let w = self.stream.write_vectored(&slices[..n]).await.unwrap();
            self.conn.advance_transmit(w);
        }
    }

    /// The next event, reading as needed, within [`LIMIT`].
    pub async fn next_event(&mut self) -> Event {
        self.next_event_within(LIMIT).await
    }

    /// The next event, with no read waiting longer than `limit`.
    pub async fn next_event_within(&mut self, limit: Duration) -> Event {
        loop {
            if let Some(e) = self.conn.poll_event() {
                self.flush().await;
                return e;
            }
            let mut chunk = [0u8; 16384];
            let n = tokio::time::timeout(limit, self.stream.read(&mut chunk))
                .await
                .expect("event in time")
                .unwrap_or(0);
            if n == 0 {
                self.conn.handle_eof();
            } else {
                self.conn.handle_read(&chunk[..n]);
            }
        }
    }

    /// Waits for the server's close and returns its code.
    pub async fn expect_close(&mut self) -> u16 {
        loop {
            match self.next_event().await {
                Event::Closed { code, .. } => return code.0,
                Event::Failed(e) => panic!("client saw a protocol error: {e}"),
                _ => {}
            }
        }
    }

    /// Sends a text message and expects it back.
    pub async fn echo_round_trip(&mut self, text: &str) {
        self.send(MessageKind::Text, text.as_bytes()).await;
        match self.next_event().await {
            Event::Message {
                kind: MessageKind::Text,
                data,
            } => assert_eq!(data, text.as_bytes()),
            other => panic!("expected the echo, got {other:?}"),
        }
    }
}

fn rand_key() -> [u8; 16] {
    let mut k = [0u8; 16];
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    k.copy_from_slice(&t.to_le_bytes());
    k
}

/// A masked client frame with any first byte (reserved bits, unknown opcodes), for sending
/// what a correct client never would.
pub fn masked_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    use wshub_websocket::frame::{encode_header, OpCode, MAX_HEADER_LEN};
    let key = [9u8, 8, 7, 6];
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = encode_header(&mut head, true, false, OpCode::Binary, Some(key), payload.len() as u64);
    head[0] = first_byte;
    let mut v = head[..n].to_vec();
    v.extend_from_slice(payload);
    wshub_websocket::mask::apply_mask(&mut v[n..], key, 0);
    v
}
