//! The tokio glue: one task per client that feeds [`ClientCore`] with the socket, the
//! clock and the user's calls, and carries out its actions.

use std::future::Future;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use wshub_protocol::{Command, Format};
use wshub_websocket::{handshake, Config, Connection, Event, MessageKind, Role};

use crate::core::{Action, ClientConfig, ClientCore, ClientEvent};

/// Fetches a new connection token (after the server said the old one expired).
pub type TokenSource = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad URL: {0}")]
    Url(String),
}

enum UserCall {
    Connect,
    Disconnect,
    Subscribe(String, bool, String),
    Unsubscribe(String),
    Call(Box<Command>),
    Stop,
}

/// A handle on a running client; dropping it stops the client.
pub struct Client {
    tx: mpsc::UnboundedSender<UserCall>,
}

struct Target {
    addr: SocketAddr,
    host: String,
    path: String,
}

fn parse(url: &str) -> Result<Target, ClientError> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| ClientError::Url("only ws:// is supported by this build".into()))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(hostport)
        .map_err(|e| ClientError::Url(e.to_string()))?
        .next()
        .ok_or_else(|| ClientError::Url("no address".into()))?;
    Ok(Target {
        addr,
        host: hostport.to_string(),
        path: path.to_string(),
    })
}

struct Transport {
    stream: TcpStream,
    conn: Connection,
}

async fn open(t: &Target, format: Format) -> std::io::Result<Transport> {
    let mut stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(t.addr)).await??;
    let _ = stream.set_nodelay(true);
    let protocols: &[&str] = if format == Format::Protobuf {
        &["centrifuge-protobuf"]
    } else {
        &[]
    };
    let req = handshake::client_request(&t.host, &t.path, protocols, None, rand::random());
    stream.write_all(&req.bytes).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await??;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some((head, accepted)) = handshake::read_response(&buf, &req, None).map_err(std::io::Error::other)? {
            let mut conn = Connection::new(Config {
                role: Role::Client,
                max_message_size: 64 << 20,
                deflate: accepted.deflate,
            });
            conn.handle_read(&buf[head..]);
            return Ok(Transport { stream, conn });
        }
    }
}

async fn write_all(t: &mut Transport) -> std::io::Result<()> {
    while t.conn.has_pending_transmit() {
        let chunk: Vec<u8> = {
            let mut sl = [IoSlice::new(&[]); 16];
            let n = t.conn.transmit_slices(&mut sl);
            sl[..n].iter().flat_map(|x| x.iter().copied()).collect()
        };
        t.stream.write_all(&chunk).await?;
        t.conn.advance_transmit(chunk.len());
    }
    Ok(())
}

impl Client {
    /// Starts the client's task (not yet connecting: call [`Client::connect`]).
    pub fn start(url: &str, cfg: ClientConfig) -> Result<(Client, mpsc::UnboundedReceiver<ClientEvent>), ClientError> {
        Self::start_with_token_source(url, cfg, None)
    }

    pub fn start_with_token_source(
        url: &str,
        cfg: ClientConfig,
        tokens: Option<TokenSource>,
    ) -> Result<(Client, mpsc::UnboundedReceiver<ClientEvent>), ClientError> {
        let target = parse(url)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (etx, erx) = mpsc::unbounded_channel();
        tokio::spawn(run(target, cfg, tokens, rx, etx));
        Ok((Client { tx }, erx))
    }

    pub fn connect(&self) {
        let _ = self.tx.send(UserCall::Connect);
    }
    pub fn disconnect(&self) {
        let _ = self.tx.send(UserCall::Disconnect);
    }
    pub fn subscribe(&self, channel: &str, recoverable: bool) {
        let _ = self.tx.send(UserCall::Subscribe(channel.into(), recoverable, String::new()));
    }
    /// Subscribes with a subscription token (private channels).
    pub fn subscribe_with_token(&self, channel: &str, recoverable: bool, token: &str) {
        let _ = self.tx.send(UserCall::Subscribe(channel.into(), recoverable, token.into()));
    }
    pub fn unsubscribe(&self, channel: &str) {
        let _ = self.tx.send(UserCall::Unsubscribe(channel.into()));
    }
    /// Sends a command (publish, presence, presence_stats, history, rpc); its answer comes
    /// as [`ClientEvent::Reply`].
    pub fn call(&self, cmd: Command) {
        let _ = self.tx.send(UserCall::Call(Box::new(cmd)));
    }
    /// Publishes JSON (or bytes, in Protobuf) into a channel.
    pub fn publish(&self, channel: &str, data: Bytes) {
        self.call(Command {
            publish: Some(wshub_protocol::PublishRequest {
                channel: channel.into(),
                data,
            }),
            ..Default::default()
        });
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.tx.send(UserCall::Stop);
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

async fn run(
    target: Target,
    cfg: ClientConfig,
    tokens: Option<TokenSource>,
    mut calls: mpsc::UnboundedReceiver<UserCall>,
    events: mpsc::UnboundedSender<ClientEvent>,
) {
    let format = cfg.format;
    let mut core = ClientCore::new(cfg, rand::random());
    let mut transport: Option<Transport> = None;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while let Some(a) = core.poll_action() {
            match a {
                Action::OpenTransport => match open(&target, format).await {
                    Ok(t) => {
                        transport = Some(t);
                        core.handle_open(Instant::now());
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "connect failed");
                        core.handle_close(
                            wshub_protocol::codes::disconnect::CONNECTION_CLOSED,
                            "transport failed",
                            Instant::now(),
                        );
                    }
                },
                Action::Send(b) => {
                    if let Some(t) = transport.as_mut() {
                        let kind = if format == Format::Json {
                            MessageKind::Text
                        } else {
                            MessageKind::Binary
                        };
                        t.conn.send(kind, b);
                    }
                }
                Action::CloseTransport => transport = None,
                Action::RefreshToken => match &tokens {
                    Some(src) => match src().await {
                        Ok(t) => core.handle_token(t, Instant::now()),
                        Err(e) => {
                            let _ = events.send(ClientEvent::Error {
                                message: format!("token: {e}"),
                            });
                            core.disconnect();
                        }
                    },
                    None => {
                        let _ = events.send(ClientEvent::Error {
                            message: "token expired and no token source".into(),
                        });
                        core.disconnect();
                    }
                },
            }
        }
        while let Some(e) = core.poll_event() {
            if events.send(e).is_err() {
                return;
            }
        }
        if let Some(t) = transport.as_mut() {
            if write_all(t).await.is_err() {
                transport = None;
                core.handle_close(wshub_protocol::codes::disconnect::CONNECTION_CLOSED, "write failed", Instant::now());
                continue;
            }
        }
        let deadline = core.poll_timeout();
        tokio::select! {
            call = calls.recv() => match call {
                None | Some(UserCall::Stop) => return,
                Some(UserCall::Connect) => core.connect(),
                Some(UserCall::Disconnect) => core.disconnect(),
                Some(UserCall::Subscribe(c, r, t)) => core.subscribe(&c, r, &t),
                Some(UserCall::Unsubscribe(c)) => core.unsubscribe(&c),
                Some(UserCall::Call(cmd)) => {
                    if core.call(*cmd).is_none() {
                        let _ = events.send(ClientEvent::Error { message: "not connected".into() });
                    }
                }
            },
            r = async { match transport.as_mut() { Some(t) => t.stream.read(&mut buf).await, None => std::future::pending().await } } => {
                let now = Instant::now();
                match r {
                    Ok(n) if n > 0 => {
                        if let Some(t) = transport.as_mut() {
                            t.conn.handle_read(&buf[..n]);
                        }
                    }
                    _ => {
                        if let Some(t) = transport.as_mut() {
                            t.conn.handle_eof();
                        }
                    }
                }
                let mut closed = None;
                if let Some(t) = transport.as_mut() {
                    while let Some(e) = t.conn.poll_event() {
                        match e {
                            Event::Message { data, .. } => core.handle_frame(data, now),
                            Event::Closed { code, reason } => closed = Some((code.0, reason)),
                            Event::Failed(err) => closed = Some((wshub_protocol::codes::disconnect::CONNECTION_CLOSED, err.to_string())),
                            _ => {}
                        }
                    }
                }
                if let Some((code, reason)) = closed {
                    if let Some(t) = transport.as_mut() {
                        let _ = write_all(t).await; // our answering close frame
                    }
                    transport = None;
                    let code = if code == 1006 || code == 1005 { wshub_protocol::codes::disconnect::CONNECTION_CLOSED } else { code };
                    core.handle_close(code, &reason, now);
                }
            }
            _ = sleep_until_opt(deadline) => core.handle_timeout(Instant::now()),
        }
    }
}
