//! The tokio glue: one task per client that feeds [`ClientCore`] with the socket, the
//! clock and the user's calls, and carries out its actions. Everything that decides
//! (reconnects, tokens, recovery) is in the core; this file only moves bytes and answers.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot};
use wshub_protocol::codes::disconnect::CONNECTION_CLOSED;
use wshub_protocol::*;
use wshub_websocket::{Event, MessageKind};

use crate::core::{Action, ClientConfig, ClientCore, ClientEvent, State, SubscribeOptions};
use crate::transport::{open, parse, tls_config, write_all, ClientError, Target, Transport};

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Fetches a new connection token (the server said the old one expired, or it is about to).
pub type TokenSource = Arc<dyn Fn() -> BoxFuture<Result<String, String>> + Send + Sync>;

/// Fetches a subscription token for the channel it is given (private channels).
pub type SubTokenSource = Arc<dyn Fn(String) -> BoxFuture<Result<String, String>> + Send + Sync>;

/// The client's event stream: connection events, and the events of subscriptions made
/// with [`Client::subscribe`] (those made with [`Client::new_subscription`] have their own).
pub type Events = mpsc::UnboundedReceiver<ClientEvent>;

/// Why a call (publish, presence, history, rpc, send) did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The client is disconnected (never connected, stopped by a terminal code, or by
    /// [`Client::disconnect`]). While it is reconnecting, calls wait instead.
    #[error("not connected")]
    NotConnected,
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The connection closed after the command was sent: it may or may not have run.
    #[error("the connection closed before the reply")]
    ConnectionClosed,
    #[error("the client stopped")]
    Stopped,
    /// The server's error reply.
    #[error("error {code}: {message}")]
    Server { code: u32, message: String, temporary: bool },
    /// A reply without the result the command asks for.
    #[error("the reply has no {0} result")]
    Unexpected(&'static str),
}

/// Options for [`Client::new_subscription`].
#[derive(Clone, Default)]
pub struct SubscriptionOptions {
    /// Recover missed publications after a reconnect (the channel must keep history).
    pub recoverable: bool,
    /// A fixed subscription token.
    pub token: String,
    /// Or a callback that makes one, called before subscribing, before the token expires
    /// and when the server says it expired.
    pub token_source: Option<SubTokenSource>,
    /// Fossil delta compression: the server sends deltas, the client hands whole data to
    /// the application. Ignored with `tags_filter`.
    pub delta: bool,
    /// Only publications whose tags pass this filter (the namespace's `allow_tags_filter`).
    pub tags_filter: Option<wshub_protocol::FilterNode>,
}

/// Which publications [`Client::history`] returns.
#[derive(Debug, Clone, Default)]
pub struct HistoryOptions {
    /// -1: all kept; 0: none (only the stream position); n: at most n.
    pub limit: i32,
    /// Publications after this position.
    pub since: Option<StreamPosition>,
    /// Newest first.
    pub reverse: bool,
}

type ReplyTx = oneshot::Sender<Result<Reply, CallError>>;

enum UserCall {
    Connect,
    Disconnect,
    Subscribe {
        channel: String,
        opts: SubscribeOptions,
        token_source: Option<SubTokenSource>,
        events: Option<mpsc::UnboundedSender<ClientEvent>>,
    },
    Unsubscribe(String),
    Call(Box<Command>, ReplyTx),
    Send(Bytes, oneshot::Sender<Result<(), CallError>>),
}

/// What woke the task up.
enum Woke {
    Call(UserCall),
    Internal(Internal),
    /// Bytes read (0: end of stream or error).
    Read(usize),
    Timer,
}

/// What a spawned token callback answers.
enum Internal {
    Token(Result<String, String>),
    SubToken(String, Result<String, String>),
}

/// Shared by the client handle and its subscriptions; the task stops when the last drops.
struct Inner {
    tx: mpsc::UnboundedSender<UserCall>,
    call_timeout: Duration,
}

/// A handle on a running client. The client (and its connection) stops when the handle
/// and every [`Subscription`] made from it are dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// A subscription with its own event stream ([`Subscription::next_event`]). Dropping it
/// unsubscribes.
pub struct Subscription {
    inner: Arc<Inner>,
    channel: String,
    events: Events,
}

/// Builds a [`Client`]: URL, settings, token callback, extra TLS roots.
pub struct ClientBuilder {
    url: String,
    cfg: ClientConfig,
    tokens: Option<TokenSource>,
    roots: Vec<rustls_pki_types::CertificateDer<'static>>,
    call_timeout: Duration,
}

impl ClientBuilder {
    pub fn config(mut self, cfg: ClientConfig) -> Self {
        self.cfg = cfg;
        self
    }

    /// Where new connection tokens come from when the current one expires.
    pub fn token_source(mut self, tokens: TokenSource) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// Trusts this CA (PEM, one or more certificates) for `wss://`, besides the Mozilla
    /// roots built in.
    pub fn root_certificates_pem(mut self, pem: &[u8]) -> Result<Self, ClientError> {
        use rustls_pki_types::pem::PemObject;
        let mut found = false;
        for c in rustls_pki_types::CertificateDer::pem_slice_iter(pem) {
            self.roots.push(c.map_err(|e| ClientError::Tls(format!("bad PEM: {e}")))?);
            found = true;
        }
        if !found {
            return Err(ClientError::Tls("no certificate in the PEM".into()));
        }
        Ok(self)
    }

    /// How long a call waits for its reply (including for a reconnect). Default 10 s.
    pub fn call_timeout(mut self, d: Duration) -> Self {
        self.call_timeout = d;
        self
    }

    /// Starts the client's task (not yet connecting: call [`Client::connect`]).
    pub fn start(self) -> Result<(Client, Events), ClientError> {
        let target = parse(&self.url)?;
        let tls = if target.tls { Some(tls_config(&self.roots)?) } else { None };
        let (tx, rx) = mpsc::unbounded_channel();
        let (etx, erx) = mpsc::unbounded_channel();
        let task = Task {
            core: ClientCore::new(self.cfg, rand::random()),
            target,
            tls,
            tokens: self.tokens,
            sub_tokens: HashMap::new(),
            sub_events: HashMap::new(),
            events: etx,
            pending: HashMap::new(),
            waiting: Vec::new(),
            transport: None,
        };
        tokio::spawn(task.run(rx));
        let inner = Arc::new(Inner {
            tx,
            call_timeout: self.call_timeout,
        });
        Ok((Client { inner }, erx))
    }
}

impl Client {
    pub fn builder(url: &str) -> ClientBuilder {
        ClientBuilder {
            url: url.into(),
            cfg: ClientConfig::default(),
            tokens: None,
            roots: Vec::new(),
            call_timeout: Duration::from_secs(10),
        }
    }

    /// Starts the client's task (not yet connecting: call [`Client::connect`]).
    pub fn start(url: &str, cfg: ClientConfig) -> Result<(Client, Events), ClientError> {
        Self::builder(url).config(cfg).start()
    }

    pub fn start_with_token_source(url: &str, cfg: ClientConfig, tokens: Option<TokenSource>) -> Result<(Client, Events), ClientError> {
        let b = Self::builder(url).config(cfg);
        match tokens {
            Some(t) => b.token_source(t),
            None => b,
        }
        .start()
    }

    /// Connects, and keeps reconnecting until [`Client::disconnect`] or a terminal code.
    pub fn connect(&self) {
        self.inner.post(UserCall::Connect);
    }
    pub fn disconnect(&self) {
        self.inner.post(UserCall::Disconnect);
    }

    /// Subscribes; its events come on the client's stream.
    pub fn subscribe(&self, channel: &str, recoverable: bool) {
        self.subscribe_with_token(channel, recoverable, "")
    }

    /// Subscribes with a fixed subscription token (private channels); events on the
    /// client's stream.
    pub fn subscribe_with_token(&self, channel: &str, recoverable: bool, token: &str) {
        self.inner.post(UserCall::Subscribe {
            channel: channel.into(),
            opts: SubscribeOptions {
                recoverable,
                token: token.into(),
                ..Default::default()
            },
            token_source: None,
            events: None,
        });
    }

    /// Subscribes, with the subscription's events on a stream of its own.
    pub fn new_subscription(&self, channel: &str, opts: SubscriptionOptions) -> Subscription {
        let (etx, erx) = mpsc::unbounded_channel();
        self.inner.post(UserCall::Subscribe {
            channel: channel.into(),
            opts: SubscribeOptions {
                recoverable: opts.recoverable,
                token: opts.token,
                token_callback: opts.token_source.is_some(),
                delta: opts.delta,
                tags_filter: opts.tags_filter,
            },
            token_source: opts.token_source,
            events: Some(etx),
        });
        Subscription {
            inner: self.inner.clone(),
            channel: channel.into(),
            events: erx,
        }
    }

    pub fn unsubscribe(&self, channel: &str) {
        self.inner.post(UserCall::Unsubscribe(channel.into()));
    }

    /// Sends any command and returns the server's reply (an error reply is an `Err`).
    /// While the client is reconnecting the command waits for the connection, within the
    /// call timeout.
    pub async fn call(&self, cmd: Command) -> Result<Reply, CallError> {
        self.inner.call(cmd).await
    }

    pub async fn publish(&self, channel: &str, data: impl Into<Bytes>) -> Result<PublishResult, CallError> {
        self.inner.publish(channel, data.into()).await
    }

    pub async fn presence(&self, channel: &str) -> Result<PresenceResult, CallError> {
        self.inner.presence(channel).await
    }

    pub async fn presence_stats(&self, channel: &str) -> Result<PresenceStatsResult, CallError> {
        self.inner.presence_stats(channel).await
    }

    pub async fn history(&self, channel: &str, opts: HistoryOptions) -> Result<HistoryResult, CallError> {
        self.inner.history(channel, opts).await
    }

    pub async fn rpc(&self, method: &str, data: impl Into<Bytes>) -> Result<RpcResult, CallError> {
        let reply = self
            .call(Command {
                rpc: Some(RpcRequest {
                    method: method.into(),
                    data: data.into(),
                }),
                ..Default::default()
            })
            .await?;
        reply.rpc.ok_or(CallError::Unexpected("rpc"))
    }

    /// An asynchronous message to the server (no reply); `Ok` once it is written to the
    /// connection's queue.
    pub async fn send(&self, data: impl Into<Bytes>) -> Result<(), CallError> {
        let (tx, rx) = oneshot::channel();
        self.inner.post(UserCall::Send(data.into(), tx));
        match tokio::time::timeout(self.inner.call_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(CallError::Stopped),
            Err(_) => Err(CallError::Timeout(self.inner.call_timeout)),
        }
    }
}

impl Inner {
    fn post(&self, c: UserCall) {
        // The task only ends when every handle is gone, so this cannot fail while `self` lives.
        let _ = self.tx.send(c);
    }

    async fn call(&self, cmd: Command) -> Result<Reply, CallError> {
        let (tx, rx) = oneshot::channel();
        self.post(UserCall::Call(Box::new(cmd), tx));
        let reply = match tokio::time::timeout(self.call_timeout, rx).await {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) => return Err(CallError::Stopped),
            Err(_) => return Err(CallError::Timeout(self.call_timeout)),
        };
        match reply.error {
            Some(e) => Err(CallError::Server {
                code: e.code,
                message: e.message,
                temporary: e.temporary,
            }),
            None => Ok(reply),
        }
    }

    async fn publish(&self, channel: &str, data: Bytes) -> Result<PublishResult, CallError> {
        let cmd = Command {
            publish: Some(PublishRequest {
                channel: channel.into(),
                data,
                ..Default::default()
            }),
            ..Default::default()
        };
        self.call(cmd).await?.publish.ok_or(CallError::Unexpected("publish"))
    }

    async fn presence(&self, channel: &str) -> Result<PresenceResult, CallError> {
        let cmd = Command {
            presence: Some(PresenceRequest { channel: channel.into() }),
            ..Default::default()
        };
        self.call(cmd).await?.presence.ok_or(CallError::Unexpected("presence"))
    }

    async fn presence_stats(&self, channel: &str) -> Result<PresenceStatsResult, CallError> {
        let cmd = Command {
            presence_stats: Some(PresenceStatsRequest { channel: channel.into() }),
            ..Default::default()
        };
        self.call(cmd).await?.presence_stats.ok_or(CallError::Unexpected("presence_stats"))
    }

    async fn history(&self, channel: &str, opts: HistoryOptions) -> Result<HistoryResult, CallError> {
        let cmd = Command {
            history: Some(HistoryRequest {
                channel: channel.into(),
                limit: opts.limit,
                since: opts.since,
                reverse: opts.reverse,
            }),
            ..Default::default()
        };
        self.call(cmd).await?.history.ok_or(CallError::Unexpected("history"))
    }
}

impl Subscription {
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The next event of this subscription: `Subscribing`, `Subscribed` (with `recovered`),
    /// `Publication`, `Join`, `Leave`, `Unsubscribed`. `None` after it ended
    /// (unsubscribed by the server, or the client stopped).
    pub async fn next_event(&mut self) -> Option<ClientEvent> {
        self.events.recv().await
    }

    /// Publishes into this subscription's channel.
    pub async fn publish(&self, data: impl Into<Bytes>) -> Result<PublishResult, CallError> {
        self.inner.publish(&self.channel, data.into()).await
    }

    pub async fn presence(&self) -> Result<PresenceResult, CallError> {
        self.inner.presence(&self.channel).await
    }

    pub async fn presence_stats(&self) -> Result<PresenceStatsResult, CallError> {
        self.inner.presence_stats(&self.channel).await
    }

    pub async fn history(&self, opts: HistoryOptions) -> Result<HistoryResult, CallError> {
        self.inner.history(&self.channel, opts).await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.inner.post(UserCall::Unsubscribe(self.channel.clone()));
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

struct Task {
    core: ClientCore,
    target: Target,
    tls: Option<Arc<rustls::ClientConfig>>,
    tokens: Option<TokenSource>,
    sub_tokens: HashMap<String, SubTokenSource>,
    /// Subscriptions with a stream of their own.
    sub_events: HashMap<String, mpsc::UnboundedSender<ClientEvent>>,
    events: mpsc::UnboundedSender<ClientEvent>,
    /// Calls sent, by command id.
    pending: HashMap<u32, ReplyTx>,
    /// Calls made while reconnecting, sent once connected.
    waiting: Vec<(Box<Command>, ReplyTx)>,
    transport: Option<Transport>,
}

/// The channel an event belongs to, if any.
fn event_channel(e: &ClientEvent) -> Option<&str> {
    match e {
        ClientEvent::Subscribing { channel }
        | ClientEvent::Subscribed { channel, .. }
        | ClientEvent::Unsubscribed { channel, .. }
        | ClientEvent::Publication { channel, .. }
        | ClientEvent::Join { channel, .. }
        | ClientEvent::Leave { channel, .. } => Some(channel),
        _ => None,
    }
}

impl Task {
    async fn run(mut self, mut calls: mpsc::UnboundedReceiver<UserCall>) {
        let (itx, mut irx) = mpsc::unbounded_channel::<Internal>();
        let format = self.core.format();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            self.do_actions(&itx, format).await;
            self.route_events();
            self.settle_calls();
            if let Some(t) = self.transport.as_mut() {
                if write_all(t).await.is_err() {
                    self.transport = None;
                    self.core.handle_close(CONNECTION_CLOSED, "write failed", Instant::now());
                    continue;
                }
            }
            let deadline = self.core.poll_timeout();
            let transport = &mut self.transport;
            let woke = tokio::select! {
                call = calls.recv() => match call {
                    None => return, // every handle dropped
                    Some(c) => Woke::Call(c),
                },
                Some(i) = irx.recv() => Woke::Internal(i),
                r = async { match transport.as_mut() { Some(t) => t.stream.read(&mut buf).await, None => std::future::pending().await } } => {
                    Woke::Read(r.unwrap_or(0))
                }
                _ = sleep_until_opt(deadline) => Woke::Timer,
            };
            match woke {
                Woke::Call(c) => self.user_call(c),
                Woke::Internal(Internal::Token(Ok(t))) => self.core.handle_token(t, Instant::now()),
                Woke::Internal(Internal::Token(Err(e))) => {
                    let _ = self.events.send(ClientEvent::Error {
                        message: format!("token: {e}"),
                    });
                    self.core.disconnect();
                }
                Woke::Internal(Internal::SubToken(channel, r)) => self.core.handle_sub_token(&channel, r),
                Woke::Read(n) => self.handle_read(&buf[..n]).await,
                Woke::Timer => self.core.handle_timeout(Instant::now()),
            }
        }
    }

    async fn do_actions(&mut self, itx: &mpsc::UnboundedSender<Internal>, format: Format) {
        while let Some(a) = self.core.poll_action() {
            match a {
                Action::OpenTransport => match open(&self.target, self.tls.as_ref(), format).await {
                    Ok(t) => {
                        self.transport = Some(t);
                        self.core.handle_open(Instant::now());
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "connect failed");
                        self.core.handle_close(CONNECTION_CLOSED, "transport failed", Instant::now());
                    }
                },
                Action::Send(b) => {
                    if let Some(t) = self.transport.as_mut() {
                        let kind = if format == Format::Json {
                            MessageKind::Text
                        } else {
                            MessageKind::Binary
                        };
                        t.conn.send(kind, b);
                    }
                }
                Action::CloseTransport => self.transport = None,
                // Token callbacks run as tasks of their own so that a slow one does not stop
                // this loop from answering pings.
                Action::RefreshToken => match &self.tokens {
                    Some(src) => {
                        let fut = src();
                        let itx = itx.clone();
                        tokio::spawn(async move {
                            let _ = itx.send(Internal::Token(fut.await));
                        });
                    }
                    None => {
                        let _ = self.events.send(ClientEvent::Error {
                            message: "token expired and no token source".into(),
                        });
                        self.core.disconnect();
                    }
                },
                Action::SubscriptionToken(channel) => {
                    let r = match self.sub_tokens.get(&channel) {
                        Some(src) => {
                            let fut = src(channel.clone());
                            let itx = itx.clone();
                            tokio::spawn(async move {
                                let _ = itx.send(Internal::SubToken(channel, fut.await));
                            });
                            continue;
                        }
                        None => Err("no token source".to_string()),
                    };
                    self.core.handle_sub_token(&channel, r);
                }
            }
        }
    }

    fn route_events(&mut self) {
        while let Some(e) = self.core.poll_event() {
            if let ClientEvent::Reply { id, reply } = e {
                match self.pending.remove(&id) {
                    Some(tx) => {
                        let _ = tx.send(Ok(*reply));
                    }
                    None => {
                        let _ = self.events.send(ClientEvent::Reply { id, reply });
                    }
                }
                continue;
            }
            let Some(tx) = event_channel(&e).and_then(|ch| self.sub_events.get(ch)) else {
                let _ = self.events.send(e);
                continue;
            };
            let ended = match &e {
                ClientEvent::Unsubscribed { channel, .. } => Some(channel.clone()),
                _ => None,
            };
            let _ = tx.send(e);
            if let Some(channel) = ended {
                self.forget(&channel); // the stream ends after its Unsubscribed event
            }
        }
    }

    /// Drops a subscription's own stream and token source.
    fn forget(&mut self, channel: &str) {
        self.sub_events.remove(channel);
        self.sub_tokens.remove(channel);
    }

    /// Fails the calls that can no longer be answered and sends the ones that waited for a
    /// connection.
    fn settle_calls(&mut self) {
        match self.core.state() {
            State::Connected => {
                for (cmd, tx) in std::mem::take(&mut self.waiting) {
                    self.send_call(cmd, tx);
                }
            }
            State::Connecting => {
                for (_, tx) in self.pending.drain() {
                    let _ = tx.send(Err(CallError::ConnectionClosed));
                }
                self.waiting.retain(|(_, tx)| !tx.is_closed());
            }
            State::Disconnected => {
                for (_, tx) in self.pending.drain() {
                    let _ = tx.send(Err(CallError::ConnectionClosed));
                }
                for (_, tx) in self.waiting.drain(..) {
                    let _ = tx.send(Err(CallError::NotConnected));
                }
            }
        }
    }

    fn send_call(&mut self, cmd: Box<Command>, tx: ReplyTx) {
        if tx.is_closed() {
            return; // the caller gave up (timeout)
        }
        match self.core.call(*cmd) {
            Some(id) => {
                // Calls whose callers timed out never get their entry removed by a reply
                // if the server never answers; sweep them now and then.
                if self.pending.len() >= 1024 {
                    self.pending.retain(|_, t| !t.is_closed());
                }
                self.pending.insert(id, tx);
            }
            None => {
                let _ = tx.send(Err(CallError::NotConnected));
            }
        }
    }

    fn user_call(&mut self, c: UserCall) {
        match c {
            UserCall::Connect => self.core.connect(),
            UserCall::Disconnect => self.core.disconnect(),
            UserCall::Subscribe {
                channel,
                opts,
                token_source,
                events,
            } => {
                if let Some(src) = token_source {
                    self.sub_tokens.insert(channel.clone(), src);
                }
                if let Some(tx) = events {
                    self.sub_events.insert(channel.clone(), tx);
                }
                self.core.subscribe_with(&channel, opts);
            }
            UserCall::Unsubscribe(channel) => {
                self.core.unsubscribe(&channel);
                self.route_events();
                self.forget(&channel);
            }
            UserCall::Call(cmd, tx) => match self.core.state() {
                State::Connected => self.send_call(cmd, tx),
                State::Connecting => self.waiting.push((cmd, tx)),
                State::Disconnected => {
                    let _ = tx.send(Err(CallError::NotConnected));
                }
            },
            UserCall::Send(data, tx) => {
                let r = if self.core.send_message(data) {
                    Ok(())
                } else {
                    Err(CallError::NotConnected)
                };
                let _ = tx.send(r);
            }
        }
    }

    async fn handle_read(&mut self, data: &[u8]) {
        let now = Instant::now();
        let Some(t) = self.transport.as_mut() else { return };
        if data.is_empty() {
            t.conn.handle_eof();
        } else {
            t.conn.handle_read(data);
        }
        let mut closed = None;
        while let Some(e) = t.conn.poll_event() {
            match e {
                Event::Message { data, .. } => self.core.handle_frame(data, now),
                Event::Closed { code, reason } => closed = Some((code.0, reason)),
                Event::Failed(err) => closed = Some((CONNECTION_CLOSED, err.to_string())),
                _ => {}
            }
        }
        if let Some((code, reason)) = closed {
            let _ = write_all(t).await; // our answering close frame
            self.transport = None;
            let code = if code == 1006 || code == 1005 { CONNECTION_CLOSED } else { code };
            self.core.handle_close(code, &reason, now);
        }
    }
}
