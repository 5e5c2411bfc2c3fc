//! `wshub bench`: a load generator for loopback targets, bounded in count and time.
//!
//! Dialects: `wshub` (the Centrifugo JSON protocol: connect, subscribe, publications from
//! the HTTP API) and `raw` (the server broadcasts every text message it receives to every
//! client, as the seed's gorilla hub does), so that wshub and the peer are driven by the
//! same generator. Each publication carries its sequence number and send time, so latency
//! (HdrHistogram) and lost, duplicated or reordered deliveries are measured at the
//! subscribers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use clap::{Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use parking::Shards;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use wshub_websocket::{handshake, Config, Connection, Event, MessageKind, Role};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Dialect {
    /// Centrifugo JSON protocol (connect + subscribe; publish through the HTTP API).
    Wshub,
    /// Broadcast-every-text-message (the gorilla hub peer).
    Raw,
}

#[derive(clap::Args, Clone)]
pub struct Target {
    /// ws://127.0.0.1:PORT/PATH, or http://127.0.0.1:PORT/connection/http_stream or /connection/sse (loopback only)
    #[arg(long)]
    url: String,
    #[arg(long, value_enum, default_value = "wshub")]
    dialect: Dialect,
    /// Channel to subscribe to (wshub dialect).
    #[arg(long, default_value = "bench")]
    channel: String,
    /// Connection token (wshub dialect); empty: anonymous.
    #[arg(long, default_value = "")]
    token: String,
    /// Server process to read RSS and fd count from (/proc/PID).
    #[arg(long)]
    pid: Option<u32>,
    /// Give up after this many seconds in all.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Open N connections (and connect + subscribe), hold them answering pings, report the
    /// server's memory and its CPU per connection over the hold (hold longer than
    /// `client.ping_interval`, 25 s by default, for the CPU figure to include pings).
    Idle {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 1000)]
        conns: usize,
        /// Seconds to hold after the last connection opened.
        #[arg(long, default_value_t = 2)]
        hold: u64,
    },
    /// N subscribers, publications at R per second for S seconds: latency and delivery.
    Fanout {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        #[arg(long, default_value_t = 100)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Publication size in bytes.
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// http://127.0.0.1:PORT of the API (wshub dialect).
        #[arg(long, default_value = "")]
        api: String,
        #[arg(long, default_value = "")]
        api_key: String,
        /// Extra subscribers that never read (slow consumers): the others' latency and
        /// the server's peak RSS show what they cost.
        #[arg(long, default_value_t = 0)]
        stalled: usize,
    },
    /// Connections per second (upgrade, and connect + subscribe for wshub) for S seconds.
    Handshake {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 5)]
        duration: u64,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// A trivial connect-proxy backend on 127.0.0.1:PORT for `duration` seconds: every POST
    /// is answered `{"result":{"user":"bench"}}` on a kept-alive connection (the figure
    /// measured is the node's proxy overhead, not a backend's).
    ProxyBackend {
        #[arg(long)]
        port: u16,
        #[arg(long, default_value_t = 60)]
        duration: u64,
    },
    /// Connect/disconnect cycles; RSS and fds before and after.
    Churn {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 10_000)]
        cycles: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Cycles run before the baseline is read: a fresh server's first connections grow
        /// its runtime and allocator pools once (measured: +2.4 MB over the first 10,000,
        /// a few percent more until about 50,000, then flat), which is not what churn is
        /// about.
        #[arg(long, default_value_t = 0)]
        warmup: usize,
    },
}

/// How the bench's clients reach the server, from the URL: `ws://` (WebSocket),
/// `http://…/connection/http_stream` (HTTP-streaming) or `http://…/connection/sse` (SSE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    WebSocket,
    HttpStream,
    Sse,
}

/// Where to connect, checked to be loopback.
struct Endpoint {
    addr: SocketAddr,
    /// Set for `wss://`.
    tls: Option<tokio_rustls::TlsConnector>,
    host: String,
    path: String,
    transport: Transport,
    /// The HTTP transports' pongs (shared by every client of the run).
    pongs: Arc<Pongs>,
}

/// The pongs of HTTP-transport clients: the wshub protocol's pong is an empty command
/// (`{}`), which an emulated session receives through `POST /emulation`. One kept-alive
/// connection carries them all, pipelined (10,000 clients pinged every 25 s make 400
/// requests a second); its answers are read and dropped.
#[derive(Default)]
struct Pongs(std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<Vec<u8>>>);

impl Pongs {
    fn send(&self, addr: SocketAddr, request: Vec<u8>) {
        let tx = self.0.get_or_init(|| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(pong_task(addr, rx));
            tx
        });
        let _ = tx.send(request);
    }
}

/// Writes each request on one connection, connecting again (once per request) when it
/// broke; ends with the run (the last sender dropped).
async fn pong_task(addr: SocketAddr, mut rx: tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
    let mut conn: Option<tokio::net::tcp::OwnedWriteHalf> = None;
    while let Some(req) = rx.recv().await {
        for _ in 0..2 {
            if conn.is_none() {
                let Ok(s) = TcpStream::connect(addr).await else { break };
                let _ = s.set_nodelay(true);
                let (mut r, w) = s.into_split();
                tokio::spawn(async move {
                    let mut b = [0u8; 4096];
                    while matches!(r.read(&mut b).await, Ok(n) if n > 0) {}
                });
                conn = Some(w);
            }
            if let Some(w) = conn.as_mut() {
                if w.write_all(&req).await.is_ok() {
                    break;
                }
            }
            conn = None;
        }
    }
}

/// The `POST /emulation` that carries a pong for the session of a connect reply (`None`
/// if the reply names no session).
fn pong_request(host: &str, connect_reply: &[u8]) -> Option<Vec<u8>> {
    let v: serde_json::Value = serde_json::from_slice(connect_reply).ok()?;
    let (session, node) = (v["connect"]["session"].as_str()?, v["connect"]["node"].as_str()?);
    let body = serde_json::json!({"session": session, "node": node, "data": "{}"}).to_string();
    Some(
        format!(
            "POST /emulation HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

fn parse_url(url: &str) -> anyhow::Result<Endpoint> {
    let (rest, http, tls) = if let Some(r) = url.strip_prefix("ws://") {
        (r, false, false)
    } else if let Some(r) = url.strip_prefix("wss://") {
        (r, false, true)
    } else if let Some(r) = url.strip_prefix("http://") {
        (r, true, false)
    } else {
        bail!("only ws://, wss:// (WebSocket) and http:// (http_stream, sse) URLs are supported")
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr: SocketAddr = hostport
        .replace("localhost", "127.0.0.1")
        .parse()
        .with_context(|| format!("{hostport}: expected IP:PORT"))?;
    if !addr.ip().is_loopback() {
        bail!("bench targets loopback only (127.0.0.0/8 or ::1), not {}", addr.ip());
    }
    let transport = match (http, path.ends_with("/sse")) {
        (false, _) => Transport::WebSocket,
        (true, true) => Transport::Sse,
        (true, false) => Transport::HttpStream,
    };
    Ok(Endpoint {
        addr,
        tls: if tls { Some(insecure_tls::connector()?) } else { None },
        host: hostport.to_string(),
        path: path.to_string(),
        transport,
        pongs: Arc::default(),
    })
}

/// The receiving side of an HTTP transport: a chunked response body, split into lines
/// (SSE: the `data:` lines).
#[derive(Default)]
struct HttpRead {
    sse: bool,
    raw: Vec<u8>,
    body: Vec<u8>,
    ended: bool,
}

impl HttpRead {
    /// Moves every whole chunk of `raw` into `body`.
    fn decode(&mut self) {
        loop {
            let Some(eol) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let size_text = String::from_utf8_lossy(&self.raw[..eol]);
            let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16) else {
                self.ended = true;
                return;
            };
            if size == 0 {
                self.ended = true;
                return;
            }
            if self.raw.len() < eol + 2 + size + 2 {
                return;
            }
            self.body.extend_from_slice(&self.raw[eol + 2..eol + 2 + size]);
            self.raw.drain(..eol + 2 + size + 2);
        }
    }

    /// The next whole message line, if any.
    fn line(&mut self) -> Option<bytes::Bytes> {
        loop {
            let i = self.body.iter().position(|b| *b == b'\n')?;
            let line: Vec<u8> = self.body.drain(..=i).take(i).collect();
            let line = if self.sse {
                match line.strip_prefix(b"data: ") {
                    Some(d) => d.to_vec(),
                    None => continue,
                }
            } else {
                line
            };
            if !line.is_empty() {
                return Some(line.into());
            }
        }
    }
}

/// The request that opens an HTTP transport with `commands` (connect, subscribe).
fn http_request(ep: &Endpoint, commands: &str) -> Vec<u8> {
    match ep.transport {
        Transport::Sse => {
            let q: String = commands
                .bytes()
                .map(|b| match b {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
                    _ => format!("%{b:02X}"),
                })
                .collect();
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

/// Source address number `i`, cycling through 127.0.0.2-127.0.0.250 so that the ephemeral
/// port range of one address is never the limit.
fn source_addr(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % 249) as u8)), 0)
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A client's byte stream: plain TCP, or TLS over it (`wss://`).
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The client side of `wss://` against a loopback server: any certificate is accepted (the
/// bench measures the server's cost of TLS, not the trust in a self-signed test certificate).
mod insecure_tls {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};
    use std::sync::Arc;

    #[derive(Debug)]
    struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

    impl ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    pub fn connector() -> anyhow::Result<tokio_rustls::TlsConnector> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth();
        Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
    }
}

/// One client connection.
struct Client {
    stream: Box<dyn Io>,
    conn: Connection,
    /// Set on the HTTP transports.
    http: Option<HttpRead>,
    /// HTTP transports: where this client's pongs go, and the request that carries one.
    pong: Option<(Arc<Pongs>, SocketAddr, Vec<u8>)>,
}

impl Client {
    /// `rcvbuf`: a small receive buffer makes a stalled reader's backlog reach the server's
    /// queue quickly, as a slow mobile link would.
    async fn open(ep: &Endpoint, t: &Target, i: usize, rcvbuf: Option<u32>) -> anyhow::Result<Client> {
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
            let commands = format!(
                r#"{{"id":1,"connect":{{"token":"{}"}}}}{}{{"id":2,"subscribe":{{"channel":"{}"}}}}"#,
                t.token, "\n", t.channel
            );
            stream.write_all(&http_request(ep, &commands)).await?;
            let mut buf = Vec::with_capacity(1024);
            let mut chunk = [0u8; 4096];
            let head_end = loop {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    bail!("server closed before answering");
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                bail!("refused: {}", head.lines().next().unwrap_or(""));
            }
            let http = HttpRead {
                sse: ep.transport == Transport::Sse,
                raw: buf[head_end..].to_vec(),
                ..Default::default()
            };
            let conn = Connection::new(Config {
                role: Role::Client,
                max_message_size: 64 << 20,
                deflate: None,
            });
            let mut c = Client {
                stream,
                conn,
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
        let mut buf = Vec::with_capacity(512);
        let mut chunk = [0u8; 1024];
        let head = loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("server closed during the handshake");
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some((head, _)) = handshake::read_response(&buf, &req, None)? {
                break head;
            }
        };
        let mut conn = Connection::new(Config {
            role: Role::Client,
            max_message_size: 64 << 20,
            deflate: None,
        });
        conn.handle_read(&buf[head..]);
        let mut c = Client {
            stream,
            conn,
            http: None,
            pong: None,
        };
        if t.dialect == Dialect::Wshub {
            let cmd = format!(
                r#"{{"id":1,"connect":{{"token":"{}"}}}}{}{{"id":2,"subscribe":{{"channel":"{}"}}}}"#,
                t.token, "\n", t.channel
            );
            c.send_text(cmd).await?;
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
        while self.conn.has_pending_transmit() {
            let chunk: Vec<u8> = {
                let mut sl = [std::io::IoSlice::new(&[]); 16];
                let n = self.conn.transmit_slices(&mut sl);
                sl[..n].iter().flat_map(|x| x.iter().copied()).collect()
            };
            self.stream.write_all(&chunk).await?;
            self.conn.advance_transmit(chunk.len());
        }
        Ok(())
    }

    async fn send_text(&mut self, s: String) -> anyhow::Result<()> {
        self.conn.send(MessageKind::Text, s.into());
        self.flush().await
    }

    /// The next message; answers the wshub protocol's pings (`{}`) on the way (on the HTTP
    /// transports through `POST /emulation`, see [`Pongs`]).
    async fn next_message(&mut self) -> anyhow::Result<bytes::Bytes> {
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

/// RSS (bytes) and open fds of a process.
pub fn proc_stats(pid: u32) -> Option<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((rss_kb * 1024, fds))
}

/// User + system CPU seconds of a process so far (`/proc/PID/stat`, all its threads).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) and its closing parenthesis.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux (sysconf(_SC_CLK_TCK)); reading it would need libc.
    Some(ticks as f64 / 100.0)
}

/// Opens `n` clients, at most 256 handshakes in flight.
async fn open_many(
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

mod parking {
    use hdrhistogram::Histogram;
    use std::sync::Mutex;

    /// Latency histograms in shards, merged at the end.
    pub struct Shards(pub Vec<Mutex<Histogram<u64>>>);

    impl Shards {
        pub fn new(n: usize) -> Self {
            Shards(
                (0..n)
                    .map(|_| Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|_| unreachable!())))
                    .collect(),
            )
        }
        pub fn record(&self, i: usize, values: &[u64]) {
            if let Ok(mut h) = self.0[i % self.0.len()].lock() {
                for v in values {
                    let _ = h.record((*v).max(1));
                }
            }
        }
        pub fn merged(&self) -> Histogram<u64> {
            let mut all = Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|_| unreachable!());
            for s in &self.0 {
                if let Ok(h) = s.lock() {
                    let _ = all.add(&*h);
                }
            }
            all
        }
    }
}

/// Scans a frame (several `\n`-separated messages) for `"s":N` and `"t":T`.
fn scan(frame: &[u8], mut f: impl FnMut(u64, u64)) {
    fn num_after(line: &[u8], key: &[u8]) -> Option<u64> {
        let i = line.windows(key.len()).position(|w| w == key)? + key.len();
        let digits = line[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        std::str::from_utf8(&line[i..i + digits]).ok()?.parse().ok()
    }
    for line in frame.split(|b| *b == b'\n') {
        if let (Some(s), Some(t)) = (num_after(line, br#""s":"#), num_after(line, br#""t":"#)) {
            f(s, t);
        }
    }
}

#[derive(Default)]
struct Delivery {
    received: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
}

#[allow(clippy::too_many_arguments)]
async fn fanout(
    t: Target,
    subscribers: usize,
    rate: u64,
    duration: u64,
    size: usize,
    api: String,
    api_key: String,
    stalled: usize,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(t.timeout);
    let ep = Arc::new(parse_url(&t.url)?);
    let t = Arc::new(t);
    let before = t.pid.and_then(proc_stats);
    let (clients, failed) = open_many(&ep, &t, subscribers, deadline, None).await?;
    if failed > 0 {
        bail!("{failed} subscribers failed to connect");
    }
    // Subscribed, then never read: their socket buffers fill, then the server's queue.
    let (stalled_clients, failed) = open_many(&ep, &t, stalled, deadline, Some(4096)).await?;
    if failed > 0 {
        bail!("{failed} stalled subscribers failed to connect");
    }
    let baseline = t.pid.and_then(proc_stats);
    let mut rss_peak = baseline.map_or(0, |b| b.0);
    let hist = Arc::new(Shards::new(16));
    let delivery = Arc::new(Delivery::default());
    let mut subs = JoinSet::new();
    // Told to stop at the end, so that each reader records its last partial batch (an
    // aborted task would drop it, and with it every figure of a slow or lossy server).
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    for (i, mut c) in clients.into_iter().enumerate() {
        let (hist, delivery) = (hist.clone(), delivery.clone());
        let mut stop = stop_rx.clone();
        subs.spawn(async move {
            let mut last = 0u64;
            let mut batch = Vec::with_capacity(256);
            loop {
                let msg = tokio::select! {
                    m = c.next_message() => match m {
                        Ok(m) => m,
                        Err(_) => break,
                    },
                    _ = stop.changed() => break,
                };
                let now = now_micros();
                scan(&msg, |s, ts| {
                    batch.push(now.saturating_sub(ts));
                    delivery.received.fetch_add(1, Ordering::Relaxed);
                    if s == last {
                        delivery.duplicated.fetch_add(1, Ordering::Relaxed);
                    } else if s < last {
                        delivery.reordered.fetch_add(1, Ordering::Relaxed);
                    }
                    last = last.max(s);
                });
                if batch.len() >= 200 {
                    hist.record(i, &batch);
                    batch.clear();
                }
            }
            hist.record(i, &batch);
        });
    }
    let total = rate * duration;
    let pad = "x".repeat(size.saturating_sub(40));
    let published = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let (publisher, publisher_realtime) = {
        let published = published.clone();
        let (ep, t) = (ep.clone(), t.clone());
        // On a thread and runtime of its own: in the shared runtime the publisher's reads of
        // the API's answers waited behind the subscribers' thousands of reader tasks, and
        // the API latency measured was this process's scheduling (p99 150 ms at 10,000
        // subscribers with a server that answered in under 1 ms).
        let (tx, rx) = tokio::sync::oneshot::channel();
        let realtime = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let rt_flag = realtime.clone();
        std::thread::Builder::new().name("bench-publisher".into()).spawn(move || {
            rt_flag.store(prefer_current_thread(), Ordering::Relaxed);
            let r = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt.block_on(publish(&ep, &t, &api, &api_key, rate, total, &pad, &published)),
                Err(e) => Err(e.into()),
            };
            let _ = tx.send(r);
        })?;
        (
            tokio::spawn(async move { rx.await.unwrap_or_else(|_| Err(anyhow::anyhow!("the publisher thread died"))) }),
            realtime,
        )
    };
    let mut last_print = Instant::now();
    while !publisher.is_finished() {
        tokio::time::sleep(Duration::from_millis(200)).await; // progress line cadence
        if let Some((rss, _)) = t.pid.and_then(proc_stats) {
            rss_peak = rss_peak.max(rss);
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            eprint!(
                "\rpublished {} / {total}, delivered {}",
                published.load(Ordering::Relaxed),
                delivery.received.load(Ordering::Relaxed)
            );
            last_print = Instant::now();
        }
        if Instant::now() > deadline {
            bail!("timed out while publishing");
        }
    }
    // A server may drop the publisher itself (the peer closes any client whose queue
    // fills): report what was published until then rather than nothing.
    let (publisher_error, api_hist) = match publisher.await? {
        Ok(h) => (None, h),
        Err(e) => {
            eprintln!("\npublisher stopped: {e}");
            (Some(e.to_string()), None)
        }
    };
    let total = published.load(Ordering::Relaxed).min(total);
    let pub_elapsed = started.elapsed();
    let expected = total * subscribers as u64;
    // Let the last deliveries arrive (bounded).
    let grace = Instant::now() + Duration::from_secs(10);
    while delivery.received.load(Ordering::Relaxed) < expected && Instant::now() < grace {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall = started.elapsed();
    let _ = stop_tx.send(true);
    while subs.join_next().await.is_some() {}
    let after = t.pid.and_then(proc_stats);
    if let Some((rss, _)) = after {
        rss_peak = rss_peak.max(rss);
    }
    drop(stalled_clients);
    let h = hist.merged();
    let received = delivery.received.load(Ordering::Relaxed);
    let lost = expected.saturating_sub(received);
    let ms = |v: u64| v as f64 / 1000.0;
    println!(
        "fanout: {subscribers} subscribers (+{stalled} stalled), {total} publications at {rate}/s ({:.1}s), {size} B: delivered {received}/{expected} ({:.0} deliveries/s), lost {lost}, duplicated {}, reordered {}; latency ms p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
        pub_elapsed.as_secs_f64(),
        received as f64 / wall.as_secs_f64(),
        delivery.duplicated.load(Ordering::Relaxed),
        delivery.reordered.load(Ordering::Relaxed),
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max())
    );
    // The backend's view: how long the API took to answer each publish.
    let api = api_hist
        .as_ref()
        .map(|a| (ms(a.value_at_quantile(0.5)), ms(a.value_at_quantile(0.99)), ms(a.max())));
    if let Some((p50, p99, max)) = api {
        println!("api publish latency ms p50 {p50:.2} p99 {p99:.2} max {max:.2}");
    }
    let realtime = publisher_realtime.load(Ordering::Relaxed);
    let api_json = api.map_or(String::new(), |(p50, p99, max)| {
        format!(",\"api_p50_ms\":{p50:.3},\"api_p99_ms\":{p99:.3},\"api_max_ms\":{max:.3},\"publisher_realtime\":{realtime}")
    });
    println!(
        "{{\"scenario\":\"fanout\",\"dialect\":\"{:?}\",\"subscribers\":{subscribers},\"rate\":{rate},\"size\":{size},\"publications\":{total},\"delivered\":{received},\"expected\":{expected},\"lost\":{lost},\"duplicated\":{},\"reordered\":{},\"deliveries_per_sec\":{:.0},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"p999_ms\":{:.3},\"max_ms\":{:.3},\"rss_before\":{},\"rss_after\":{},\"stalled\":{stalled},\"rss_baseline\":{},\"rss_peak\":{rss_peak},\"publisher_error\":{}{api_json}}}",
        t.dialect,
        delivery.duplicated.load(Ordering::Relaxed),
        delivery.reordered.load(Ordering::Relaxed),
        received as f64 / wall.as_secs_f64(),
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max()),
        before.map_or(0, |b| b.0),
        after.map_or(0, |a| a.0),
        baseline.map_or(0, |b| b.0),
        publisher_error.as_deref().map_or("null".to_string(), |e| serde_json::Value::from(e).to_string())
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn publish(
    ep: &Endpoint,
    t: &Target,
    api: &str,
    api_key: &str,
    rate: u64,
    total: u64,
    pad: &str,
    published: &AtomicU64,
) -> anyhow::Result<Option<Histogram<u64>>> {
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    match t.dialect {
        Dialect::Raw => {
            let mut c = Client::open(ep, t, 250, None).await?;
            let (mut rd, mut wr) = tokio::io::split(c.stream);
            // The hub sends our own messages back too: read and drop them.
            let drain = tokio::spawn(async move {
                let mut b = [0u8; 65536];
                while matches!(rd.read(&mut b).await, Ok(n) if n > 0) {}
            });
            for s in 1..=total {
                tick.tick().await;
                c.conn
                    .send(MessageKind::Text, format!(r#"{{"s":{s},"t":{},"p":"{pad}"}}"#, now_micros()).into());
                let chunk: Vec<u8> = {
                    let mut sl = [std::io::IoSlice::new(&[]); 4];
                    let n = c.conn.transmit_slices(&mut sl);
                    sl[..n].iter().flat_map(|x| x.iter().copied()).collect()
                };
                wr.write_all(&chunk).await?;
                c.conn.advance_transmit(chunk.len());
                published.fetch_add(1, Ordering::Relaxed);
            }
            drain.abort();
        }
        Dialect::Wshub => {
            let hostport = api
                .strip_prefix("http://")
                .context("--api http://127.0.0.1:PORT required for the wshub dialect")?;
            let addr: SocketAddr = hostport.trim_end_matches('/').parse().context("--api: expected http://IP:PORT")?;
            if !addr.ip().is_loopback() {
                bail!("bench targets loopback only");
            }
            let stream = TcpStream::connect(addr).await?;
            let _ = stream.set_nodelay(true);
            let (mut rd, mut wr) = stream.into_split();
            // Requests are pipelined on one kept-alive connection (hyper answers in order),
            // so the publication order is the sequence order and the k-th answer belongs to
            // the k-th request: its latency is from the request's write to the answer's
            // last byte, as the backend that sent it sees it.
            let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
            let answers = tokio::spawn(async move {
                let mut hist = Histogram::<u64>::new(3).expect("3 significant figures is valid");
                let mut buf: Vec<u8> = Vec::with_capacity(65536);
                let mut chunk = vec![0u8; 65536];
                let (mut seen, mut errors) = (0u64, 0u64);
                while seen < total {
                    match rd.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    let now = Instant::now();
                    while let Some((len, ok)) = http_answer(&buf) {
                        buf.drain(..len);
                        seen += 1;
                        errors += u64::from(!ok);
                        if let Ok(at) = sent_rx.try_recv() {
                            let _ = hist.record(now.duration_since(at).as_micros() as u64);
                        }
                    }
                }
                (seen, errors, hist)
            });
            for s in 1..=total {
                tick.tick().await;
                let body = format!(
                    r#"{{"channel":"{}","data":{{"s":{s},"t":{},"p":"{pad}"}}}}"#,
                    t.channel,
                    now_micros()
                );
                let req = format!(
                    "POST /api/publish HTTP/1.1\r\nHost: {hostport}\r\nX-API-Key: {api_key}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = sent_tx.send(Instant::now());
                wr.write_all(req.as_bytes()).await?;
                published.fetch_add(1, Ordering::Relaxed);
            }
            let (answered, errors, hist) = tokio::time::timeout(Duration::from_secs(30), answers)
                .await
                .context("API answers")??;
            if answered < total {
                bail!("the API answered {answered} of {total} publications");
            }
            if errors > 0 {
                bail!("the API refused {errors} of {total} publications");
            }
            return Ok(Some(hist));
        }
    }
    Ok(None)
}

/// The length of the first whole HTTP/1.1 response in `buf` (Content-Length framed, as the
/// API answers) and whether it is a 200 without an `"error"`.
fn http_answer(buf: &[u8]) -> Option<(usize, bool)> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let body = buf.get(head_end..head_end + length)?;
    let ok = head.starts_with("http/1.1 200") && !body.windows(8).any(|w| w == br#""error":"#);
    Some((head_end + length, ok))
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    match cmd {
        BenchCommand::Idle { target, conns, hold } => {
            let deadline = Instant::now() + Duration::from_secs(target.timeout);
            let ep = Arc::new(parse_url(&target.url)?);
            let t = Arc::new(target);
            let before = t.pid.and_then(proc_stats);
            let started = Instant::now();
            let (clients, failed) = open_many(&ep, &t, conns, deadline, None).await?;
            let elapsed = started.elapsed();
            let n = clients.len();
            // Every client answers the server's pings, as an idle SDK does, and counts
            // itself out if the server closes it.
            let closed = Arc::new(AtomicU64::new(0));
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let mut readers = JoinSet::new();
            for mut c in clients {
                let (closed, mut stop) = (closed.clone(), stop_rx.clone());
                readers.spawn(async move {
                    loop {
                        tokio::select! {
                            m = c.next_message() => if m.is_err() {
                                closed.fetch_add(1, Ordering::Relaxed);
                                return;
                            },
                            _ = stop.changed() => return,
                        }
                    }
                });
            }
            // The server's CPU over the hold, all of it spent on idle connections (pings,
            // pongs, timers): the figure is per connection per second of wall time.
            let cpu_before = t.pid.and_then(cpu_seconds);
            let held = Instant::now();
            tokio::time::sleep(Duration::from_secs(hold)).await; // the hold is the scenario
            let cpu_after = t.pid.and_then(cpu_seconds);
            let held = held.elapsed().as_secs_f64();
            let after = t.pid.and_then(proc_stats);
            let _ = stop_tx.send(true);
            while readers.join_next().await.is_some() {}
            let closed = closed.load(Ordering::Relaxed);
            let (rss_before, fds_before) = before.unwrap_or((0, 0));
            let (rss_after, fds_after) = after.unwrap_or((0, 0));
            let per_conn = if n == 0 {
                0.0
            } else {
                (rss_after as f64 - rss_before as f64) / n as f64
            };
            let cpu_us = match (cpu_before, cpu_after) {
                (Some(a), Some(b)) if n > 0 => (b - a) * 1e6 / held / n as f64,
                _ => 0.0,
            };
            println!(
                "idle: {n} connections ({:?}), {:.0} conn/s; server RSS {:.1} MiB -> {:.1} MiB, {:.0} bytes/connection; fds {} -> {}; server CPU {cpu_us:.3} µs/s per connection over {held:.0} s; closed by the server {closed}",
                t.dialect,
                n as f64 / elapsed.as_secs_f64(),
                rss_before as f64 / 1048576.0,
                rss_after as f64 / 1048576.0,
                per_conn,
                fds_before,
                fds_after
            );
            println!(
                "{{\"scenario\":\"idle\",\"dialect\":\"{:?}\",\"tls\":{},\"connections\":{n},\"failed\":{failed},\"rss_before\":{rss_before},\"rss_after\":{rss_after},\"bytes_per_connection\":{per_conn:.0},\"fds_before\":{fds_before},\"fds_after\":{fds_after},\"hold_s\":{held:.1},\"cpu_us_per_conn_sec\":{cpu_us:.4},\"closed\":{closed}}}",
                t.dialect,
                ep.tls.is_some(),
            );
            if closed > 0 {
                bail!("the server closed {closed} idle connections during the hold");
            }
            if failed > 0 {
                bail!("{failed} connections failed");
            }
            Ok(())
        }
        BenchCommand::Fanout {
            target,
            subscribers,
            rate,
            duration,
            size,
            api,
            api_key,
            stalled,
        } => fanout(target, subscribers, rate, duration, size, api, api_key, stalled).await,
        BenchCommand::Handshake {
            target,
            duration,
            concurrency,
        } => {
            let ep = Arc::new(parse_url(&target.url)?);
            let t = Arc::new(target);
            let done = Arc::new(AtomicU64::new(0));
            let failed = Arc::new(AtomicU64::new(0));
            let end = Instant::now() + Duration::from_secs(duration);
            let cpu_before = t.pid.and_then(cpu_seconds);
            let mut set = JoinSet::new();
            for w in 0..concurrency {
                let (ep, t, done, failed) = (ep.clone(), t.clone(), done.clone(), failed.clone());
                set.spawn(async move {
                    let mut i = w;
                    while Instant::now() < end {
                        match Client::open(&ep, &t, i, None).await {
                            Ok(c) => {
                                done.fetch_add(1, Ordering::Relaxed);
                                drop(c);
                            }
                            Err(_) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        i += concurrency;
                    }
                });
            }
            while set.join_next().await.is_some() {}
            let n = done.load(Ordering::Relaxed);
            let rate = n as f64 / duration as f64;
            // The server's own CPU per connection: the fair figure when the load generator
            // shares the machine (and its cores) with the server.
            let cpu_us = match (cpu_before, t.pid.and_then(cpu_seconds)) {
                (Some(a), Some(b)) if n > 0 => (b - a) * 1e6 / n as f64,
                _ => 0.0,
            };
            println!(
                "handshake: {n} connections in {duration}s ({:?}, concurrency {concurrency}): {rate:.0} conn/s, failed {}, server CPU {cpu_us:.1} µs per connection",
                t.dialect,
                failed.load(Ordering::Relaxed)
            );
            println!(
                "{{\"scenario\":\"handshake\",\"dialect\":\"{:?}\",\"connections\":{n},\"conn_per_sec\":{rate:.0},\"failed\":{},\"server_cpu_us_per_conn\":{cpu_us:.1}}}",
                t.dialect,
                failed.load(Ordering::Relaxed)
            );
            Ok(())
        }
        BenchCommand::ProxyBackend { port, duration } => {
            let listener = tokio::net::TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)).await?;
            let served = Arc::new(AtomicU64::new(0));
            let accept = async {
                loop {
                    let Ok((stream, _)) = listener.accept().await else { continue };
                    let served = served.clone();
                    tokio::spawn(async move {
                        let _ = proxy_backend_conn(stream, &served).await;
                    });
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(duration), accept).await;
            println!("proxy-backend: {} requests answered", served.load(Ordering::Relaxed));
            Ok(())
        }
        BenchCommand::Churn {
            target,
            cycles,
            concurrency,
            warmup,
        } => {
            let ep = Arc::new(parse_url(&target.url)?);
            let t = Arc::new(target);
            let deadline = Instant::now() + Duration::from_secs(t.timeout);
            if warmup > 0 {
                churn_cycles(&ep, &t, warmup, concurrency, deadline).await;
                settle_fds(&t, None).await;
            }
            let before = t.pid.and_then(proc_stats);
            let failed = churn_cycles(&ep, &t, cycles, concurrency, deadline).await;
            let after = settle_fds(&t, before).await;
            let (rb, fb) = before.unwrap_or((0, 0));
            let (ra, fa) = after.unwrap_or((0, 0));
            let growth = if rb > 0 { (ra as f64 - rb as f64) / rb as f64 * 100.0 } else { 0.0 };
            println!(
                "churn: {cycles} cycles after {warmup} of warm-up ({:?}), failed {failed}; server RSS {rb} -> {ra} ({growth:+.1} %), fds {fb} -> {fa}",
                t.dialect
            );
            println!("{{\"scenario\":\"churn\",\"cycles\":{cycles},\"warmup\":{warmup},\"failed\":{failed},\"rss_before\":{rb},\"rss_after\":{ra},\"rss_growth_pct\":{growth:.2},\"fds_before\":{fb},\"fds_after\":{fa}}}");
            Ok(())
        }
    }
}

/// `n` connect (+ connect/subscribe in the wshub dialect) and disconnect cycles, `concurrency`
/// at a time. Returns how many failed.
async fn churn_cycles(ep: &Arc<Endpoint>, t: &Arc<Target>, n: usize, concurrency: usize, deadline: Instant) -> u64 {
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut set = JoinSet::new();
    for _ in 0..concurrency {
        let (ep, t, next, failed) = (ep.clone(), t.clone(), next.clone(), failed.clone());
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= n || Instant::now() > deadline {
                    break;
                }
                if Client::open(&ep, &t, i, None).await.is_err() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
    failed.load(Ordering::Relaxed)
}

/// The server's RSS and fds once it has noticed the last closes: polled until its fd count
/// is back to `before`'s (or stops falling), for at most 10 s.
async fn settle_fds(t: &Target, before: Option<(u64, usize)>) -> Option<(u64, usize)> {
    let settle = Instant::now() + Duration::from_secs(10);
    let mut after = t.pid.and_then(proc_stats);
    let mut prev = usize::MAX;
    while let Some((_, fa)) = after {
        let done = match before {
            Some((_, fb)) => fa <= fb,
            None => fa >= prev, // stopped falling
        };
        if done || Instant::now() > settle {
            break;
        }
        prev = fa;
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = t.pid.and_then(proc_stats);
    }
    after
}

/// One kept-alive connection of the trivial proxy backend: reads requests (headers, then
/// `Content-Length` bytes of body) and answers each with a fixed connect result.
async fn proxy_backend_conn(mut stream: TcpStream, served: &AtomicU64) -> anyhow::Result<()> {
    const BODY: &str = r#"{"result":{"user":"bench"}}"#;
    let reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        // Every complete request in the buffer is answered.
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() < end + 4 + len {
                break;
            }
            buf.drain(..end + 4 + len);
            stream.write_all(reply.as_bytes()).await?;
            served.fetch_add(1, Ordering::Relaxed);
        }
        if buf.len() > 1 << 20 {
            bail!("request too large");
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Runs the calling thread under `SCHED_FIFO` at the lowest real-time priority when the OS
/// allows it (root or `CAP_SYS_NICE`); false if not. For the publisher that times the API's
/// answers: on a machine it shares with the server and with thousands of subscriber readers,
/// an ordinary thread woken by an answer waited for its turn on a core, and that wait (up to
/// a scheduler slice, 3-4 ms) was most of the p99 measured at 10,000 subscribers, the same
/// server giving 4.4 ms p99 with it and 1.7 ms without (BENCHMARKS.md, issue #17).
#[cfg(unix)]
fn prefer_current_thread() -> bool {
    use thread_priority::unix::{set_thread_priority_and_policy, thread_native_id, RealtimeThreadSchedulePolicy, ThreadSchedulePolicy};
    set_thread_priority_and_policy(
        thread_native_id(),
        thread_priority::ThreadPriority::Min,
        ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo),
    )
    .is_ok()
}

#[cfg(not(unix))]
fn prefer_current_thread() -> bool {
    false
}
