//! One bench client: a WebSocket or HTTP-transport connection that connects and
//! subscribes in the wshub dialect and answers the server's pings; and many opened at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::task::JoinSet;
use wshub_websocket::{handshake, Config, Connection, Event, MessageKind, Role};

use super::endpoint::{source_addr, Endpoint, Transport};
use super::http::{pong_request, HttpRead, Pongs};
use super::{Dialect, Target};

/// A client's byte stream: plain TCP, or TLS over it (`wss://`).
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One client connection.
pub(super) struct Client {
    pub(super) stream: Box<dyn Io>,
    pub(super) conn: Connection,
    /// Set on the HTTP transports.
    http: Option<HttpRead>,
    /// HTTP transports: where this client's pongs go, and the request that carries one.
    pong: Option<(Arc<Pongs>, SocketAddr, Vec<u8>)>,
}

impl Client {
    /// `rcvbuf`: a small receive buffer makes a stalled reader's backlog reach the server's
    /// queue quickly, as a slow mobile link would.
    pub(super) async fn open(ep: &Endpoint, t: &Target, i: usize, rcvbuf: Option<u32>) -> anyhow::Result<Client> {
        let sock = TcpSocket::new_v4()?;
        if let Some(size) = rcvbuf {
            sock.set_recv_buffer_size(size)?;
        }
        if ep.addr.is_ipv4() {
            sock.bind(source_addr(i))?;
        }
        let tcp = sock.connect(ep.addr).await?;
        let _ = tcp.set_nodelay(true);
        let mut stream: Box<dyn Io> = match &ep.tls {
            Some(tls) => {
                let name = rustls::pki_types::ServerName::IpAddress(ep.addr.ip().into());
                Box::new(tls.connect(name, tcp).await?)
            }
            None => Box::new(tcp),
        };
        if ep.transport != Transport::WebSocket {
            if t.dialect != Dialect::Wshub {
                bail!("the HTTP transports speak the wshub dialect only");
            }
            stream.write_all(&http_request(ep, &connect_commands(t))).await?;
            let (buf, head_end) = read_head(&mut stream, "before answering", |b| {
                Ok(b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4))
            })
            .await?;
            let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                bail!("refused: {}", head.lines().next().unwrap_or(""));
            }
            let http = HttpRead::new(ep.transport == Transport::Sse, buf[head_end..].to_vec());
            let mut c = Client {
                stream,
                conn: connection(),
                http: Some(http),
                pong: None,
            };
            loop {
                let msg = c.next_message().await?;
                if msg.windows(8).any(|w| w == br#""error":"#) || msg.windows(13).any(|w| w == br#""disconnect":"#) {
                    bail!("refused: {}", String::from_utf8_lossy(&msg));
                }
                if c.pong.is_none() {
                    if let Some(req) = pong_request(&ep.host, &msg) {
                        c.pong = Some((ep.pongs.clone(), ep.addr, req));
                    }
                }
                if msg.windows(6).any(|w| w == br#""id":2"#) {
                    return Ok(c);
                }
            }
        }
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let req = handshake::client_request(&ep.host, &ep.path, &[], None, key);
        stream.write_all(&req.bytes).await?;
        let (buf, head) = read_head(&mut stream, "during the handshake", |b| {
            Ok(handshake::read_response(b, &req, None)?.map(|(head, _)| head))
        })
        .await?;
        let mut conn = connection();
        conn.handle_read(&buf[head..]);
        let mut c = Client {
            stream,
            conn,
            http: None,
            pong: None,
        };
        if t.dialect == Dialect::Pusher {
            loop {
                let msg = c.next_message().await?;
                if contains(&msg, b"pusher:connection_established") {
                    break;
                }
                if contains(&msg, b"pusher:error") {
                    bail!("connection refused: {}", String::from_utf8_lossy(&msg));
                }
            }
            let subscribe = format!(r#"{{"event":"pusher:subscribe","data":{{"channel":"{}"}}}}"#, t.channel);
            c.send_text(subscribe).await?;
            loop {
                let msg = c.next_message().await?;
                if contains(&msg, b"pusher_internal:subscription_succeeded") {
                    break;
                }
                if contains(&msg, b"pusher:subscription_error") || contains(&msg, b"pusher:error") {
                    bail!("subscribe refused: {}", String::from_utf8_lossy(&msg));
                }
            }
        }
        if t.dialect == Dialect::Wshub {
            c.send_text(connect_commands(t)).await?;
            loop {
                let msg = c.next_message().await?;
                if msg.windows(6).any(|w| w == br#""id":2"#) {
                    if msg.windows(8).any(|w| w == br#""error":"#) {
                        bail!("subscribe refused: {}", String::from_utf8_lossy(&msg));
                    }
                    break;
                }
                if msg.windows(8).any(|w| w == br#""error":"#) {
                    bail!("connect refused: {}", String::from_utf8_lossy(&msg));
                }
            }
        }
        Ok(c)
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        self.stream.write_all(&self.conn.take_transmit()).await?;
        Ok(())
    }

    pub(super) async fn send_text(&mut self, s: String) -> anyhow::Result<()> {
        self.conn.send(MessageKind::Text, s.into());
        self.flush().await
    }

    /// The next message; answers the wshub protocol's pings (`{}`) on the way (on the HTTP
    /// transports through `POST /emulation`, see [`Pongs`]).
    pub(super) async fn next_message(&mut self) -> anyhow::Result<bytes::Bytes> {
        let mut chunk = [0u8; 16384];
        if let Some(h) = self.http.as_mut() {
            loop {
                h.decode();
                while let Some(line) = h.line() {
                    if &line[..] != b"{}" {
                        return Ok(line);
                    }
                    if let Some((pongs, addr, req)) = &self.pong {
                        pongs.send(*addr, req.clone());
                    }
                }
                if h.ended {
                    bail!("the stream ended");
                }
                let n = self.stream.read(&mut chunk).await?;
                if n == 0 {
                    bail!("the server closed the stream");
                }
                h.raw.extend_from_slice(&chunk[..n]);
            }
        }
        loop {
            while let Some(e) = self.conn.poll_event() {
                match e {
                    Event::Message { data, .. } if &data[..] == b"{}" => self.send_text("{}".into()).await?,
                    Event::Message { data, .. } if contains(&data, br#""pusher:ping""#) => {
                        self.send_text(r#"{"event":"pusher:pong","data":{}}"#.into()).await?
                    }
                    Event::Message { data, .. } => return Ok(data),
                    Event::Closed { code, .. } => bail!("closed with {}", code.0),
                    Event::Failed(e) => bail!("protocol error: {e}"),
                    _ => {}
                }
            }
            self.flush().await?;
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                self.conn.handle_eof();
            } else {
                self.conn.handle_read(&chunk[..n]);
            }
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The request that opens an HTTP transport with `commands` (connect, subscribe).
fn http_request(ep: &Endpoint, commands: &str) -> Vec<u8> {
    match ep.transport {
        Transport::Sse => {
            let q = percent_encoding::utf8_percent_encode(commands, percent_encoding::NON_ALPHANUMERIC);
            format!(
                "GET {}?cf_connect={q} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
                ep.path, ep.host
            )
            .into_bytes()
        }
        _ => format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{commands}",
            ep.path,
            ep.host,
            commands.len()
        )
        .into_bytes(),
    }
}

/// Reads the server's answer until `head_end` finds the end of its head in what came so
/// far: what came, and where the head ends.
async fn read_head(
    stream: &mut Box<dyn Io>,
    during: &str,
    mut head_end: impl FnMut(&[u8]) -> anyhow::Result<Option<usize>>,
) -> anyhow::Result<(Vec<u8>, usize)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("server closed {during}");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&buf)? {
            return Ok((buf, end));
        }
    }
}

/// The wshub dialect's first two commands: connect with the target's token, then
/// subscribe to its channel (replies `id` 1 and 2).
fn connect_commands(t: &Target) -> String {
    format!(
        r#"{{"id":1,"connect":{{"token":"{}"}}}}{}{{"id":2,"subscribe":{{"channel":"{}"}}}}"#,
        t.token, "\n", t.channel
    )
}

/// A client's WebSocket state: no compression, so that the server's cost measured is
/// that of plain frames.
fn connection() -> Connection {
    Connection::new(Config {
        role: Role::Client,
        max_message_size: 64 << 20,
        deflate: None,
    })
}

/// Opens `n` clients, at most 256 handshakes in flight.
pub(super) async fn open_many(
    ep: &Arc<Endpoint>,
    t: &Arc<Target>,
    n: usize,
    deadline: Instant,
    rcvbuf: Option<u32>,
) -> anyhow::Result<(Vec<Client>, usize)> {
    let mut out = Vec::with_capacity(n);
    let mut set = JoinSet::new();
    let (mut next, mut failed) = (0, 0usize);
    while out.len() + failed < n {
        while set.len() < 256 && next < n {
            let (ep, t, i) = (ep.clone(), t.clone(), next);
            set.spawn(async move { Client::open(&ep, &t, i, rcvbuf).await });
            next += 1;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, set.join_next()).await {
            Ok(Some(Ok(Ok(c)))) => out.push(c),
            Ok(Some(Ok(Err(e)))) => {
                failed += 1;
                if failed <= 3 {
                    eprintln!("connection failed: {e:#}");
                }
            }
            Ok(Some(Err(e))) => bail!("task failed: {e}"),
            Ok(None) => break,
            Err(_) => bail!("timed out with {} connections open", out.len()),
        }
        if out.len() % 1000 == 0 && !out.is_empty() {
            eprint!("\ropen: {} / {n}", out.len());
        }
    }
    eprintln!("\ropen: {} / {n}, failed {failed}", out.len());
    Ok((out, failed))
}
