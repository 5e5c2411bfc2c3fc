//! Helpers for tests over real sockets: an in-process server on a free port and a minimal
//! WebSocket client built on the transport's client role.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use wshub_server::echo::Echo;
use wshub_server::{ServerConfig, Shared};
use wshub_websocket::handshake::{self, HandshakeConfig, OriginPolicy};
use wshub_websocket::{Config, Connection, DeflateConfig, Event, MessageKind, Role};

/// Every wait in these tests is bounded by this.
pub const LIMIT: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn echo(max_message_size: usize) -> Self {
        Self::start(ServerConfig {
            ws_paths: Some(vec!["/connection/websocket".into()]),
            handshake: HandshakeConfig {
                protocols: vec!["centrifuge-protobuf".into()],
                deflate: Some(DeflateConfig::default()),
                origins: OriginPolicy::from_list(&["https://*.example.com".into()]),
            },
            max_message_size,
            handshake_timeout: Duration::from_secs(2),
            handler: Arc::new(|_, _, _| Box::new(Echo)),
            api: None,
            admission: Default::default(),
            write_timeout: None,
            metrics: false,
            tls: None,
            admin: None,
            emulation: Default::default(),
        })
        .await
    }

    pub async fn start(config: ServerConfig) -> Self {
        let listener = wshub_server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Shared::new(config);
        let (tx, rx) = oneshot::channel();
        let s = shared.clone();
        let task = tokio::spawn(async move {
            wshub_server::serve(listener, s, async {
                let _ = rx.await;
            })
            .await
        });
        TestServer {
            addr,
            shared,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(LIMIT, t).await.unwrap().unwrap();
        }
    }

    /// Polls until no WebSocket connection is open, within [`LIMIT`].
    pub async fn wait_connections(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + LIMIT;
        while self.shared.connections() != n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "still {} connections, expected {n}",
                self.shared.connections()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

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

/// A masked client frame built by hand, for sending what a correct client never would.
pub fn masked_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    let key = [9u8, 8, 7, 6];
    let mut v = vec![first_byte];
    let len = payload.len();
    if len < 126 {
        v.push(0x80 | len as u8);
    } else if len <= 65535 {
        v.push(0x80 | 126);
        v.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        v.push(0x80 | 127);
        v.extend_from_slice(&(len as u64).to_be_bytes());
    }
    v.extend_from_slice(&key);
    let start = v.len();
    v.extend_from_slice(payload);
    wshub_websocket::mask::apply_mask(&mut v[start..], key, 0);
    v
}

/// A node configuration: `base` with `extra` merged over it (objects merge, values replace),
/// loaded through the real loader (file, validation).
pub fn node_config(mut base: serde_json::Value, extra: serde_json::Value) -> wshub_server::config::Config {
    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }
    merge(&mut base, extra);
    let path = std::env::temp_dir().join(format!("wshub-test-{}-{}.json", std::process::id(), rand::random::<u64>()));
    std::fs::write(&path, base.to_string()).unwrap();
    let l = wshub_server::config::load(Some(&path), Vec::<(String, String)>::new(), &[]).unwrap();
    let _ = std::fs::remove_file(path);
    l.config
}
