//! The session: one client connection's state machine.
//!
//! Commands come in decoded from frames ([`Session::handle_frame`]), time comes in as
//! [`Now`] ([`Session::handle_timeout`], [`Session::poll_timeout`]), server API requests
//! come in as [`Control`]s. What goes out is an [`Output`]: reply bytes for the
//! connection's format, and possibly a disconnect code. The session never reads a clock,
//! spawns a task or touches a socket; publications to its channels go from the hub to the
//! connection's queue without passing through it.
//!
//! States: `Connecting` (waiting for `connect`, stale timer) -> `Connected` (ping timer,
//! pong deadline, token expiry, subscriptions) -> `Closed`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rand::Rng;
use wshub_protocol::codec::{decode_commands, encode_reply};
use wshub_protocol::codes::{disconnect as dc, error as ec};
use wshub_protocol::*;

use crate::channel;
use crate::config::ChannelOptions;
use crate::engine::{EngineError, HistoryQuery, StreamPosition};
use crate::hub::{ConnectionHandle, Control};
use crate::node::{ApiError, Node};
use crate::proxy::{self, ProxyKind};
use crate::ratelimit::{admit_on_error, RateLimitScope, TokenBucket};
use crate::token::TokenError;
use crate::vecmap::VecMap;
use crate::Now;

/// What the glue must do after a call.
#[derive(Debug, Default, PartialEq)]
pub struct Output {
    /// One frame payload holding every reply and push produced, in order.
    pub frame: Option<Bytes>,
    /// Close the connection with this code and reason (after sending `frame`).
    pub disconnect: Option<(u16, String)>,
}

/// A reason to end the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Disconnect(u16, std::borrow::Cow<'static, str>);

impl Disconnect {
    const fn new(code: u16, reason: &'static str) -> Self {
        Disconnect(code, std::borrow::Cow::Borrowed(reason))
    }
}

const BAD_REQUEST: Disconnect = Disconnect::new(dc::BAD_REQUEST, "bad request");
/// The client's replies outgrew `client.queue_max_size`, as a slow reader's pushes would.
const SLOW: Disconnect = Disconnect::new(dc::SLOW, "slow");
const INVALID_TOKEN: Disconnect = Disconnect::new(dc::INVALID_TOKEN, "invalid token");

/// Outcome of one command: a result to reply with, an error reply, or a disconnect.
enum Fail {
    Error(ApiError),
    /// A backend's error through a proxy, with its own `temporary`.
    Backend(crate::proxy::BackendError),
    Disconnect(Disconnect),
}

impl From<ApiError> for Fail {
    fn from(e: ApiError) -> Self {
        Fail::Error(e)
    }
}

impl From<channel::ChannelError> for Fail {
    fn from(e: channel::ChannelError) -> Self {
        Fail::Error(e.into())
    }
}

/// PROTOCOL.md: an expired token is error 109 (the SDK fetches a new one); an invalid one
/// closes the connection with 3500.
fn token_fail(e: TokenError) -> Fail {
    match e {
        TokenError::Expired => err(ec::TOKEN_EXPIRED, "token expired"),
        TokenError::Invalid(reason) => {
            tracing::debug!(%reason, "invalid token");
            Fail::Disconnect(INVALID_TOKEN)
        }
    }
}

/// A subscription token that is invalid (bad signature, wrong channel or user) refuses that
/// subscription with 103 and keeps the connection, as Centrifugo does; an expired one is 109.
fn sub_token_fail(e: TokenError) -> Fail {
    match e {
        TokenError::Expired => err(ec::TOKEN_EXPIRED, "token expired"),
        TokenError::Invalid(reason) => {
            tracing::debug!(%reason, "invalid subscription token");
            err(ec::PERMISSION_DENIED, "permission denied")
        }
    }
}

fn err(code: u32, message: &str) -> Fail {
    Fail::Error(ApiError::new(code, message))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Connecting,
    Connected,
    Closed,
}

/// How one subscription is made.
#[derive(Debug, Default)]
struct SubParams {
    /// Positioned in the stream, with offset and epoch in the result.
    recoverable: bool,
    /// Recover from this position.
    since: Option<StreamPosition>,
    /// Receive join and leave pushes.
    join_leave: bool,
    chan_info: Bytes,
    expires: Option<Instant>,
    /// Error 112 rather than an unrecovered success (subscribe `flag & 2`).
    strict_recovery: bool,
    /// Bytes the reply may still take (the client's queue): recovered publications that
    /// would not fit are not sent, the result is `recovered: false` instead. Closing the
    /// client with 3008 would only make its SDK come back for the same reply. `None`: no
    /// recovery asked.
    reply_budget: Option<usize>,
    /// Fossil delta compression negotiated (`delta` in subscribe, allowed by the namespace).
    delta: bool,
    /// Publication tags filter (`tf`), validated.
    filter: Option<FilterNode>,
}

#[derive(Debug)]
struct Sub {
    chan_info: Bytes,
    /// When a subscription token runs out (monotonic), if it does.
    expires: Option<Instant>,
    /// Presence and join/leave as subscribed (a proxy's `override` may differ from the
    /// namespace).
    presence: bool,
    join_leave: bool,
    /// At `expires`, the sub refresh proxy is asked (the client was not told of expiry).
    server_refresh: bool,
}

/// One client's session. See the module docs.
pub struct Session {
    node: Arc<Node>,
    handle: Arc<dyn ConnectionHandle>,
    format: Format,
    state: State,
    /// Shared with the node's registry (one allocation for both).
    client: Arc<str>,
    user: String,
    conn_info: Bytes,
    subs: VecMap<Sub>,
    stale_at: Option<Instant>,
    ping_at: Option<Instant>,
    pong_deadline: Option<Instant>,
    /// Token expiry (Unix seconds) and the moment the connection is closed for it.
    expire_at: Option<u64>,
    expired_close_at: Option<Instant>,
    /// `client.command_rate_limit`, and how many commands in a row it refused.
    /// Boxed: most deployments set no limit, and every idle session carries this field.
    limiter: Option<Box<TokenBucket>>,
    refused: u32,
    /// Forwarded headers and connection meta for the backend proxies.
    proxy: Option<Box<proxied::ProxyConn>>,
}

/// Refused commands in a row after which a client that keeps going is closed with 3013.
const REFUSALS_BEFORE_CLOSE: u32 = 10;

fn mono_at(now: Now, unix: u64) -> Instant {
    now.mono + Duration::from_secs(unix.saturating_sub(now.unix))
}

impl Session {
    pub fn new(node: Arc<Node>, handle: Arc<dyn ConnectionHandle>, now: Now) -> Self {
        let stale = node.config.session.stale_delay;
        Session {
            format: handle.format(),
            handle,
            state: State::Connecting,
            client: Arc::from(""),
            user: String::new(),
            conn_info: Bytes::new(),
            subs: VecMap::new(),
            stale_at: Some(now.mono + stale),
            ping_at: None,
            pong_deadline: None,
            expire_at: None,
            expired_close_at: None,
            limiter: match node.config.session.command_rate_limit {
                0 => None,
                r => Some(Box::new(TokenBucket::new(f64::from(r), f64::from(r), now.mono))),
            },
            refused: 0,
            proxy: None,
            node,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }
    pub fn client_id(&self) -> &str {
        &self.client
    }
    pub fn user(&self) -> &str {
        &self.user
    }
    pub fn channels(&self) -> impl Iterator<Item = &str> {
        self.subs.keys().map(String::as_str)
    }

    fn client_info(&self, chan_info: Bytes) -> ClientInfo {
        ClientInfo {
            user: self.user.clone(),
            client: self.client.to_string(),
            conn_info: self.conn_info.clone(),
            chan_info,
        }
    }

    /// The next moment [`Session::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let subs = self.subs.values().filter_map(|s| s.expires);
        [self.stale_at, self.ping_at, self.pong_deadline, self.expired_close_at]
            .into_iter()
            .flatten()
            .chain(subs)
            .min()
    }

    /// Handles one frame of commands.
    pub async fn handle_frame(&mut self, frame: Bytes, now: Now) -> Output {
        let mut out = Writer::with_limit(self.format, self.node.config.session.queue_max_size);
        if self.state == State::Closed {
            return out.finish();
        }
        let commands = match decode_commands(self.format, frame) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "undecodable command");
                return out.disconnect(BAD_REQUEST);
            }
        };
        for cmd in commands {
            if let Err(d) = self.handle_command(cmd, now, &mut out).await {
                if d == SLOW {
                    return out.discard().disconnect(d);
                }
                return out.disconnect(d);
            }
            if out.over_limit() {
                // One frame of commands whose replies outgrow the queue (a batch of history
                // calls, say): what was produced is dropped and the client closed.
                return out.discard().disconnect(SLOW);
            }
        }
        out.finish()
    }

    async fn handle_command(&mut self, cmd: Command, now: Now, out: &mut Writer) -> Result<(), Disconnect> {
        let id = cmd.id;
        let is_pong = id == 0 && cmd == Command::default();
        metrics::counter!("wshub_commands_total", "method" => command_method(&cmd)).increment(1);
        if !is_pong && !self.take_command_token(now).await {
            self.refused += 1;
            metrics::counter!("wshub_rate_limit_refusals_total", "kind" => "command").increment(1);
            if self.refused > REFUSALS_BEFORE_CLOSE {
                return Err(Disconnect::new(dc::TOO_MANY_REQUESTS, "too many requests"));
            }
            if id > 0 {
                let e = Error {
                    code: ec::TOO_MANY_REQUESTS,
                    message: "too many requests".into(),
                    temporary: true,
                };
                out.reply(&Reply {
                    id,
                    error: Some(e),
                    ..Default::default()
                });
            }
            return Ok(());
        }
        if !is_pong {
            self.refused = 0;
        }
        if self.state == State::Connecting && cmd.connect.is_none() {
            // PROTOCOL.md: "The first command must be connect (otherwise close 3501)".
            return Err(BAD_REQUEST);
        }
        let reply = if let Some(req) = cmd.connect {
            self.connect(req, now, out.remaining()).await.map(|r| Reply {
                connect: Some(r),
                ..Default::default()
            })
        } else if let Some(req) = cmd.subscribe {
            self.subscribe(req, now, out.remaining()).await.map(|r| Reply {
                subscribe: Some(r),
                ..Default::default()
            })
        } else if let Some(req) = cmd.unsubscribe {
            self.unsubscribe(&req.channel).await;
            Ok(Reply {
                unsubscribe: Some(UnsubscribeResult {}),
                ..Default::default()
            })
        } else if let Some(req) = cmd.publish {
            self.publish(req).await.map(|r| Reply {
                publish: Some(r),
                ..Default::default()
            })
        } else if let Some(req) = cmd.presence {
            self.presence(&req.channel).await.map(|r| Reply {
                presence: Some(r),
                ..Default::default()
            })
        } else if let Some(req) = cmd.presence_stats {
            self.presence_stats(&req.channel).await.map(|r| Reply {
                presence_stats: Some(r),
                ..Default::default()
            })
        } else if let Some(req) = cmd.history {
            self.history(req).await.map(|r| Reply {
                history: Some(r),
                ..Default::default()
            })
        } else if let Some(req) = cmd.refresh {
            self.refresh(&req.token, now).await.map(|r| Reply {
                refresh: Some(r),
                ..Default::default()
            })
        } else if let Some(req) = cmd.sub_refresh {
            self.sub_refresh(req, now).await.map(|r| Reply {
                sub_refresh: Some(r),
                ..Default::default()
            })
        } else if let Some(req) = cmd.rpc {
            self.rpc(req).await.map(|r| Reply {
                rpc: Some(r),
                ..Default::default()
            })
        } else if cmd.send.is_some() {
            // Asynchronous message to the server: no handler is configured, and `send`
            // has no reply.
            return Ok(());
        } else if cmd.ping.is_some() {
            Ok(Reply {
                ping: Some(PingResult {}),
                ..Default::default()
            })
        } else if id == 0 {
            // The empty command: the client's pong.
            if self.pong_deadline.take().is_none() {
                // PROTOCOL.md: "A pong with no ping outstanding closes with 3501".
                return Err(BAD_REQUEST);
            }
            return Ok(());
        } else {
            return Err(BAD_REQUEST);
        };
        match reply {
            Ok(mut r) => {
                r.id = id;
                if out.would_overflow(publications_size(&r)) {
                    // Not encoded at all: the reply alone would not fit in the client's queue.
                    return Err(SLOW);
                }
                out.reply(&r);
            }
            Err(Fail::Error(e)) => {
                metrics::counter!("wshub_reply_errors_total", "code" => e.code.to_string()).increment(1);
                let r = Reply {
                    id,
                    error: Some(Error {
                        code: e.code,
                        message: e.message,
                        temporary: ec::is_temporary(e.code),
                    }),
                    ..Default::default()
                };
                out.reply(&r);
            }
            Err(Fail::Backend(e)) => {
                metrics::counter!("wshub_reply_errors_total", "code" => e.code.to_string()).increment(1);
                out.reply(&Reply {
                    id,
                    error: Some(Error {
                        code: e.code,
                        message: e.message,
                        temporary: e.temporary,
                    }),
                    ..Default::default()
                });
            }
            Err(Fail::Disconnect(d)) => return Err(d),
        }
        Ok(())
    }

    /// Whether `client.command_rate_limit` lets one more command through: per user across
    /// the cluster when so configured (failing open when the limiter cannot answer), per
    /// connection otherwise.
    async fn take_command_token(&mut self, now: Now) -> bool {
        let Some(limiter) = self.limiter.as_mut() else { return true };
        let cluster = self.node.config.session.command_rate_limit_scope == RateLimitScope::Cluster;
        match self.node.command_limiter() {
            Some(shared) if cluster && self.state == State::Connected && !self.user.is_empty() => {
                let rate = f64::from(self.node.config.session.command_rate_limit);
                let key = format!("command.{}", self.user);
                admit_on_error("command", shared.try_take(&key, rate, rate).await, now.mono)
            }
            _ => limiter.try_take(now.mono),
        }
    }

    async fn connect(&mut self, req: ConnectRequest, now: Now, mut budget: usize) -> Result<ConnectResult, Fail> {
        if self.state != State::Connecting {
            return Err(Fail::Disconnect(BAD_REQUEST));
        }
        let node = self.node.clone();
        let cfg = &node.config.session;
        self.client = Arc::from(uuid::Uuid::new_v4().to_string());
        let mut proxied: Option<proxied::ProxyConnect> = None;
        let mut claims = if !req.token.is_empty() {
            node.prepare_token(&req.token).await;
            match self.node.verifier.verify_connect(&req.token, now.unix) {
                Ok(c) => c,
                Err(e) => return Err(token_fail(e)),
            }
        } else if let Some(ep) = node.proxies.connect.as_ref() {
            match self.connect_via_proxy(ep, &req).await? {
                Some(p) => proxied.insert(p).claims.clone(),
                None if cfg.allow_anonymous_connect_without_token || cfg.insecure => Default::default(),
                // Centrifugo: a connect proxy that answers no result gives no credentials.
                None => return Err(Fail::Disconnect(BAD_REQUEST)),
            }
        } else if cfg.allow_anonymous_connect_without_token || cfg.insecure {
            Default::default()
        } else {
            return Err(Fail::Disconnect(INVALID_TOKEN));
        };
        if cfg.insecure {
            claims.expire_at = None;
        }
        let personal = (cfg.personal_channel.enabled && !claims.user.is_empty()).then(|| cfg.personal_channel.channel(&claims.user));
        if let Some(p) = &personal {
            if node.options(p).is_err() {
                return Err(err(ec::UNKNOWN_CHANNEL, "unknown personal channel namespace"));
            }
            if !claims.channels.contains(p) {
                claims.channels.push(p.clone());
            }
        }
        if claims.channels.len() > cfg.channel_limit {
            // Server-side subscriptions count against `client.channel_limit` like the
            // client's own: refused before anything is registered.
            return Err(err(ec::LIMIT_EXCEEDED, "limit exceeded: token channels over client.channel_limit"));
        }
        if cfg.user_connection_limit > 0 && !claims.user.is_empty() && self.node.user_connections(&claims.user) >= cfg.user_connection_limit
        {
            return Err(Fail::Disconnect(Disconnect::new(dc::CONNECTION_LIMIT, "connection limit")));
        }
        if personal.is_some() && cfg.personal_channel.single_connection {
            // One connection per user: the user's others on this node are closed.
            node.disconnect_user(&claims.user, "", &[], dc::CONNECTION_LIMIT, "connection limit");
        }
        let ping = cfg.ping_interval;
        self.user = claims.user;
        self.conn_info = claims.info;
        self.state = State::Connected;
        self.stale_at = None;
        let half = ping / 2;
        self.ping_at = Some(now.mono + half + rand::thread_rng().gen_range(Duration::ZERO..=half));
        self.node.register(&self.user, self.client.clone(), self.handle.clone());
        let mut result = ConnectResult {
            client: self.client.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ping: ping.as_secs() as u32,
            pong: !self.handle.unidirectional(),
            ..Default::default()
        };
        if let Some(session) = self.handle.emulation_session() {
            result.session = session.to_string();
            result.node = self.node.uid().to_string();
        }
        if let Some(exp) = claims.expire_at {
            self.set_expiry(Some(exp), now);
            // With a refresh proxy the server refreshes; the client is not told of expiry.
            if node.proxies.refresh.is_none() {
                result.expires = true;
                result.ttl = exp.saturating_sub(now.unix) as u32;
            }
        }
        let mut sub_opts = match proxied {
            Some(p) => {
                result.data = p.data;
                p.subs
            }
            None => Default::default(),
        };
        // Server-side subscriptions from the token, with recovery as the client asks.
        for ch in claims.channels {
            let Ok(mut opts) = self.node.options(&ch).cloned() else {
                tracing::debug!(channel = %ch, "server-side subscription to an unknown namespace skipped");
                continue;
            };
            let extra = sub_opts.remove(&ch);
            if let Some(o) = extra.as_ref().and_then(|e| e.override_.as_ref()) {
                opts = o.apply(&opts);
            }
            let (chan_info, sub_data) = match &extra {
                Some(e) => (
                    proxy::raw_or_b64(&e.info, &e.b64info).ok().flatten().unwrap_or_default(),
                    proxy::raw_or_b64(&e.data, &e.b64data).ok().flatten().unwrap_or_default(),
                ),
                None => Default::default(),
            };
            let since = req.subs.get(&ch).filter(|s| s.recover).map(|s| StreamPosition {
                offset: s.offset,
                epoch: s.epoch.clone(),
            });
            let recoverable = opts.has_history() && (opts.force_recovery || opts.allow_recovery);
            // Server-side subscriptions negotiate delta through the connect's `subs`, as in
            // Centrifugo.
            let delta = req
                .subs
                .get(&ch)
                .is_some_and(|s| !s.delta.is_empty() && opts.allows_delta(&s.delta));
            let params = SubParams {
                recoverable,
                since: since.filter(|_| recoverable),
                reply_budget: Some(budget),
                chan_info,
                // As Centrifugo: server-side subscriptions get join/leave pushes when the
                // namespace forces them.
                join_leave: opts.join_leave && opts.force_push_join_leave,
                delta,
                ..Default::default()
            };
            match self.do_subscribe(&ch, &opts, params).await {
                Ok(mut r) => {
                    r.data = sub_data;
                    budget = budget.saturating_sub(publications_bound(&r.publications));
                    result.subs.push(SubscribeResultEntry { key: ch, value: Some(r) })
                }
                Err(Fail::Disconnect(d)) => return Err(Fail::Disconnect(d)),
                Err(Fail::Error(e)) => tracing::debug!(channel = %ch, error = %e, "server-side subscription failed"),
                Err(Fail::Backend(e)) => tracing::debug!(channel = %ch, code = e.code, "server-side subscription failed"),
            }
        }
        Ok(result)
    }

    fn set_expiry(&mut self, expire_at: Option<u64>, now: Now) {
        self.expire_at = expire_at;
        // With a refresh proxy the timer is the moment to ask it, not the close.
        let delay = match self.node.proxies.refresh {
            Some(_) => Duration::ZERO,
            None => self.node.config.session.expired_close_delay,
        };
        self.expired_close_at = expire_at.map(|e| mono_at(now, e) + delay);
    }

    async fn subscribe(&mut self, req: SubscribeRequest, now: Now, budget: usize) -> Result<SubscribeResult, Fail> {
        let mut opts = self.node.options(&req.channel)?.clone();
        if self.subs.contains_key(&req.channel) {
            return Err(err(ec::ALREADY_SUBSCRIBED, "already subscribed"));
        }
        if let Some(tf) = &req.tf {
            // Centrifugo answers both a filter the namespace does not allow and a malformed
            // one with 107.
            if !opts.allow_tags_filter {
                return Err(err(ec::BAD_REQUEST, "bad request: tags filter not allowed"));
            }
            if let Err(e) = crate::filter::validate(tf) {
                tracing::debug!(channel = %req.channel, error = %e, "invalid tags filter");
                return Err(err(ec::BAD_REQUEST, "bad request: invalid tags filter"));
            }
        }
        if !req.delta.is_empty() && req.delta != crate::delta::FOSSIL {
            // As Centrifugo: an unknown delta type is a bad request that closes (3501).
            return Err(Fail::Disconnect(BAD_REQUEST));
        }
        let mut chan_info = Bytes::new();
        let mut expires = None;
        let mut proxy_data = Bytes::new();
        let mut server_refresh = false;
        let user_limited = opts.allow_user_limited_channels && channel::user_limited_allows(&req.channel, &self.user).is_some();
        let subscribe_proxy = self.node.proxies.for_channel(ProxyKind::Subscribe, &opts).cloned();
        if !req.token.is_empty() {
            self.node.prepare_token(&req.token).await;
            let claims = self.node.verifier.verify_subscribe(&req.token, now.unix).map_err(sub_token_fail)?;
            if claims.channel != req.channel || claims.user != self.user {
                return Err(err(ec::PERMISSION_DENIED, "permission denied"));
            }
            chan_info = claims.info;
            expires = claims.expire_at;
        } else if let (Some(ep), false) = (subscribe_proxy, user_limited) {
            let p = self.subscribe_via_proxy(&ep, &req).await?;
            if let Some(o) = &p.override_ {
                opts = o.apply(&opts);
            }
            chan_info = p.chan_info;
            proxy_data = p.data;
            expires = p.expire_at;
            server_refresh = expires.is_some() && self.node.proxies.for_channel(ProxyKind::SubRefresh, &opts).is_some();
        } else {
            let allowed = match channel::user_limited_allows(&req.channel, &self.user) {
                Some(true) if opts.allow_user_limited_channels => true,
                _ => {
                    (opts.allow_subscribe_for_client && (!self.user.is_empty() || opts.allow_subscribe_for_anonymous))
                        || self.node.config.session.insecure
                }
            };
            if !allowed {
                return Err(err(ec::PERMISSION_DENIED, "permission denied"));
            }
        }
        let recoverable = opts.has_history() && (opts.force_recovery || (opts.allow_recovery && req.recoverable));
        let since = (recoverable && req.recover).then(|| StreamPosition {
            offset: req.offset,
            epoch: req.epoch.clone(),
        });
        let join_leave = opts.join_leave && (req.join_leave || opts.force_push_join_leave);
        let expires_mono = expires.map(|e| mono_at(now, e));
        let params = SubParams {
            recoverable,
            since,
            join_leave,
            chan_info,
            expires: expires_mono,
            strict_recovery: req.flag & 2 != 0,
            reply_budget: Some(budget),
            delta: !req.delta.is_empty() && opts.allows_delta(&req.delta),
            filter: req.tf,
        };
        let mut r = self.do_subscribe(&req.channel, &opts, params).await?;
        r.data = proxy_data;
        if let Some(s) = self.subs.get_mut(&req.channel) {
            s.server_refresh = server_refresh;
        }
        if let (Some(e), false) = (expires, server_refresh) {
            r.expires = true;
            r.ttl = e.saturating_sub(now.unix) as u32;
        }
        Ok(r)
    }

    /// Subscribes with the recovery scheme of PROTOCOL.md: the hub buffers live
    /// publications while history is read, then merges by offset.
    async fn do_subscribe(&mut self, ch: &str, opts: &ChannelOptions, p: SubParams) -> Result<SubscribeResult, Fail> {
        let SubParams {
            recoverable: positioned,
            since,
            join_leave,
            chan_info,
            expires,
            strict_recovery,
            reply_budget,
            delta,
            filter,
        } = p;
        // Every way in (client subscribe, token channels, server API) counts against
        // `client.channel_limit` here.
        if self.subs.len() >= self.node.config.session.channel_limit {
            return Err(err(ec::LIMIT_EXCEEDED, "limit exceeded"));
        }
        let node = self.node.clone();
        let conn_id = self.handle.id();
        let sub_opts = crate::hub::SubscriberOptions {
            delta,
            filter: filter.clone(),
        };
        if node.hub.add_with(ch, self.handle.clone(), join_leave, positioned, sub_opts) {
            if let Err(e) = node.broker.subscribe(ch).await {
                node.hub.remove(ch, conn_id);
                return Err(ApiError::from(e).into());
            }
        }
        let mut result = SubscribeResult {
            delta,
            ..Default::default()
        };
        if positioned {
            result.recoverable = true;
            result.positioned = true;
            // One more than the cap: more than the cap missed means not recovered.
            let cap = node.config.session.recovery_max_publication_limit;
            let query = HistoryQuery {
                since: since.clone(),
                limit: match (&since, cap) {
                    (None, _) => 0,
                    (Some(_), 0) => -1,
                    (Some(_), cap) => i64::try_from(cap).unwrap_or(i64::MAX).saturating_add(1),
                },
                reverse: false,
            };
            let history = node.broker.history(ch, query).await;
            let (publications, top) = match (history, &since) {
                (Ok(h), Some(s)) => {
                    result.was_recovering = true;
                    // Recovered: every offset from s.offset+1 to the top is in history.
                    let first_ok = h
                        .publications
                        .first()
                        .map_or(h.position.offset == s.offset, |p| p.offset == s.offset + 1);
                    let contiguous = h.publications.windows(2).all(|w| w[1].offset == w[0].offset + 1);
                    let last_ok = h.publications.last().is_none_or(|p| p.offset == h.position.offset);
                    let within_cap = cap == 0 || h.publications.len() <= cap;
                    let fits = reply_budget.is_none_or(|b| publications_bound(&h.publications) <= b);
                    let recovered = first_ok && contiguous && last_ok && within_cap && fits;
                    result.recovered = recovered;
                    result.epoch = h.position.epoch.clone();
                    if recovered {
                        result.offset = s.offset;
                        (h.publications, h.position)
                    } else {
                        result.offset = h.position.offset;
                        (Vec::new(), h.position)
                    }
                }
                (Ok(h), None) => {
                    result.epoch = h.position.epoch.clone();
                    result.offset = h.position.offset;
                    (Vec::new(), h.position)
                }
                (Err(EngineError::UnrecoverablePosition), Some(_)) => {
                    result.was_recovering = true;
                    let top = node
                        .broker
                        .history(ch, HistoryQuery::default())
                        .await
                        .map_err(ApiError::from)?
                        .position;
                    result.epoch = top.epoch.clone();
                    result.offset = top.offset;
                    (Vec::new(), top)
                }
                (Err(e), _) => {
                    self.release(ch, opts, false).await;
                    return Err(ApiError::from(e).into());
                }
            };
            if result.was_recovering && !result.recovered && strict_recovery {
                self.release(ch, opts, false).await;
                return Err(err(ec::UNRECOVERABLE_POSITION, "unrecoverable position"));
            }
            let mut publications = publications;
            crate::delta::clear_marks(&mut publications);
            if let Some(f) = &filter {
                // The stream position still covers them: the client just never sees them.
                publications.retain(|p| crate::filter::matches(f, &p.tags));
            }
            let delta_base = publications.last().map(|p| (p.offset, p.data.clone())).filter(|_| delta);
            if delta {
                publications = crate::delta::recovered(publications, self.format);
            }
            result.publications = publications;
            if let Err(gap) = node.hub.finish_recovery_with_base(ch, conn_id, top.offset, delta_base) {
                tracing::debug!(channel = %ch, %gap, "recovery gap");
                self.release(ch, opts, false).await;
                return Err(Fail::Disconnect(Disconnect::new(dc::INSUFFICIENT_STATE, "insufficient state")));
            }
        }
        let info = self.client_info(chan_info.clone());
        if opts.presence {
            if let Err(e) = node.presence.add_presence(ch, &self.client, info.clone()).await {
                tracing::warn!(channel = %ch, error = %e, "presence not added");
            }
        }
        if opts.join_leave {
            let _ = node.broker.publish_join(ch, info).await;
        }
        self.subs.insert(
            ch.to_string(),
            Sub {
                chan_info,
                expires,
                presence: opts.presence,
                join_leave: opts.join_leave,
                server_refresh: false,
            },
        );
        Ok(result)
    }

    /// Leaves a channel's hub entry, presence and, when `leave`, pushes a leave.
    async fn release(&mut self, ch: &str, opts: &ChannelOptions, leave: bool) {
        let node = self.node.clone();
        let sub = self.subs.remove(ch);
        let (presence, join_leave) = sub
            .as_ref()
            .map_or((opts.presence, opts.join_leave), |s| (s.presence, s.join_leave));
        let chan_info = sub.map(|s| s.chan_info).unwrap_or_default();
        if node.hub.remove(ch, self.handle.id()) {
            let _ = node.broker.unsubscribe(ch).await;
        }
        if leave {
            if presence {
                let _ = node.presence.remove_presence(ch, &self.client).await;
            }
            if join_leave {
                let _ = node.broker.publish_leave(ch, self.client_info(chan_info)).await;
            }
        }
    }

    async fn unsubscribe(&mut self, ch: &str) {
        if !self.subs.contains_key(ch) {
            return;
        }
        let opts = self.node.options(ch).cloned().unwrap_or_default();
        self.release(ch, &opts, true).await;
    }

    async fn publish(&mut self, req: PublishRequest) -> Result<PublishResult, Fail> {
        let opts = self.node.options(&req.channel)?;
        let publish_proxy = self.node.proxies.for_channel(ProxyKind::Publish, opts).cloned();
        let (data, skip_history) = if let Some(ep) = publish_proxy {
            self.publish_via_proxy(&ep, &req.channel, &req.data).await?
        } else {
            let allowed = (opts.allow_publish_for_client && (!self.user.is_empty() || opts.allow_publish_for_anonymous))
                || (opts.allow_publish_for_subscriber && self.subs.contains_key(&req.channel))
                || self.node.config.session.insecure;
            if !allowed {
                return Err(err(ec::PERMISSION_DENIED, "permission denied"));
            }
            (req.data, false)
        };
        let chan_info = self.subs.get(&req.channel).map(|s| s.chan_info.clone()).unwrap_or_default();
        let info = self.client_info(chan_info);
        self.node
            .clone()
            .publish(&req.channel, data, Some(info), skip_history, HashMap::new())
            .await?;
        Ok(PublishResult {})
    }

    fn may_read(&self, ch: &str, for_client: bool, for_subscriber: bool) -> Result<(), Fail> {
        if for_client || (for_subscriber && self.subs.contains_key(ch)) || self.node.config.session.insecure {
            Ok(())
        } else {
            Err(err(ec::PERMISSION_DENIED, "permission denied"))
        }
    }

    async fn presence(&mut self, ch: &str) -> Result<PresenceResult, Fail> {
        let opts = self.node.options(ch)?;
        if !opts.presence {
            return Err(err(ec::NOT_AVAILABLE, "not available"));
        }
        self.may_read(ch, opts.allow_presence_for_client, opts.allow_presence_for_subscriber)?;
        Ok(PresenceResult {
            presence: self.node.clone().presence(ch).await?,
        })
    }

    async fn presence_stats(&mut self, ch: &str) -> Result<PresenceStatsResult, Fail> {
        let opts = self.node.options(ch)?;
        if !opts.presence {
            return Err(err(ec::NOT_AVAILABLE, "not available"));
        }
        self.may_read(ch, opts.allow_presence_for_client, opts.allow_presence_for_subscriber)?;
        let (num_clients, num_users) = self.node.clone().presence_stats(ch).await?;
        Ok(PresenceStatsResult { num_clients, num_users })
    }

    async fn history(&mut self, req: HistoryRequest) -> Result<HistoryResult, Fail> {
        let opts = self.node.options(&req.channel)?;
        if !opts.has_history() {
            return Err(err(ec::NOT_AVAILABLE, "not available"));
        }
        self.may_read(&req.channel, opts.allow_history_for_client, opts.allow_history_for_subscriber)?;
        let query = HistoryQuery {
            since: req.since.map(|s| StreamPosition {
                offset: s.offset,
                epoch: s.epoch,
            }),
            limit: capped_limit(i64::from(req.limit), self.node.config.session.history_max_publication_limit),
            reverse: req.reverse,
        };
        let h = self.node.clone().history(&req.channel, query).await?;
        Ok(HistoryResult {
            publications: h.publications,
            epoch: h.position.epoch,
            offset: h.position.offset,
        })
    }

    async fn refresh(&mut self, token: &str, now: Now) -> Result<RefreshResult, Fail> {
        self.node.prepare_token(token).await;
        let claims = match self.node.verifier.verify_connect(token, now.unix) {
            Ok(c) => c,
            Err(e) => return Err(token_fail(e)),
        };
        if claims.user != self.user {
            return Err(Fail::Disconnect(INVALID_TOKEN));
        }
        self.set_expiry(claims.expire_at, now);
        Ok(RefreshResult {
            client: self.client.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            expires: claims.expire_at.is_some(),
            ttl: claims.expire_at.map_or(0, |e| e.saturating_sub(now.unix) as u32),
        })
    }

    async fn sub_refresh(&mut self, req: SubRefreshRequest, now: Now) -> Result<SubRefreshResult, Fail> {
        if !self.subs.contains_key(&req.channel) {
            return Err(err(ec::BAD_REQUEST, "not subscribed"));
        }
        self.node.prepare_token(&req.token).await;
        let claims = self.node.verifier.verify_subscribe(&req.token, now.unix).map_err(sub_token_fail)?;
        if claims.channel != req.channel || claims.user != self.user {
            return Err(err(ec::PERMISSION_DENIED, "permission denied"));
        }
        if let Some(s) = self.subs.get_mut(&req.channel) {
            s.expires = claims.expire_at.map(|e| mono_at(now, e));
        }
        Ok(SubRefreshResult {
            expires: claims.expire_at.is_some(),
            ttl: claims.expire_at.map_or(0, |e| e.saturating_sub(now.unix) as u32),
        })
    }

    /// Timers: stale connection, ping, pong deadline, token expiry, subscription expiry.
    pub async fn handle_timeout(&mut self, now: Now) -> Output {
        let mut out = Writer::new(self.format);
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now.mono);
        if self.state == State::Closed {
            return out.finish();
        }
        if due(self.stale_at) {
            return out.disconnect(Disconnect::new(dc::STALE, "stale"));
        }
        if due(self.pong_deadline) {
            return out.disconnect(Disconnect::new(dc::NO_PONG, "no pong"));
        }
        if due(self.expired_close_at) {
            match self.node.proxies.refresh.clone() {
                Some(ep) => {
                    if let Err(d) = self.refresh_via_proxy(&ep, now).await {
                        return out.disconnect(d);
                    }
                }
                None => return out.disconnect(Disconnect::new(dc::EXPIRED, "connection expired")),
            }
        }
        if due(self.ping_at) {
            // The server's ping is an empty reply; the client answers with an empty command.
            out.reply(&Reply::default());
            if !self.handle.unidirectional() {
                self.pong_deadline = Some(now.mono + self.node.config.session.pong_timeout);
            }
            self.ping_at = Some(now.mono + self.node.config.session.ping_interval);
            self.refresh_presence().await;
        }
        let due_subs: Vec<(String, bool)> = self
            .subs
            .iter()
            .filter(|(_, s)| due(s.expires))
            .map(|(c, s)| (c.clone(), s.server_refresh))
            .collect();
        let mut expired = Vec::new();
        for (ch, server_refresh) in due_subs {
            let ep = match (server_refresh, self.node.options(&ch)) {
                (true, Ok(o)) => self.node.proxies.for_channel(ProxyKind::SubRefresh, o).cloned(),
                _ => None,
            };
            match ep {
                Some(ep) => match self.sub_refresh_via_proxy(&ep, &ch, now).await {
                    Ok(true) => {}
                    Ok(false) => expired.push(ch),
                    Err(d) => return out.disconnect(d),
                },
                None => expired.push(ch),
            }
        }
        for ch in expired {
            self.unsubscribe(&ch).await;
            out.reply(&Reply {
                push: Some(Push {
                    channel: ch,
                    unsubscribe: Some(Unsubscribe {
                        code: 2501,
                        reason: "subscription expired".into(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        out.finish()
    }

    /// Presence entries expire in a shared engine (a node that dies leaves none behind for
    /// long), so each session adds its entries again at every ping.
    async fn refresh_presence(&mut self) {
        let node = self.node.clone();
        for (ch, sub) in &self.subs {
            if sub.presence {
                let info = self.client_info(sub.chan_info.clone());
                if let Err(e) = node.presence.add_presence(ch, &self.client, info).await {
                    tracing::debug!(channel = %ch, error = %e, "presence not refreshed");
                }
            }
        }
    }

    /// A request from the server API.
    pub async fn handle_control(&mut self, control: Control, now: Now) -> Output {
        let mut out = Writer::new(self.format);
        if self.state != State::Connected {
            return out.finish();
        }
        match control {
            Control::Disconnect { code, reason } => {
                out.disconnect = Some((code, reason));
            }
            Control::Subscribe { channel } => {
                if self.subs.contains_key(&channel) {
                    return out.finish();
                }
                let Ok(opts) = self.node.options(&channel).cloned() else {
                    return out.finish();
                };
                let params = SubParams {
                    recoverable: opts.has_history() && (opts.force_recovery || opts.allow_recovery),
                    join_leave: opts.join_leave && opts.force_push_join_leave,
                    ..Default::default()
                };
                match self.do_subscribe(&channel, &opts, params).await {
                    Ok(r) => out.reply(&Reply {
                        push: Some(Push {
                            channel,
                            subscribe: Some(Subscribe {
                                recoverable: r.recoverable,
                                epoch: r.epoch,
                                offset: r.offset,
                                positioned: r.positioned,
                                data: Bytes::new(),
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    Err(Fail::Disconnect(d)) => return out.disconnect(d),
                    Err(Fail::Error(e)) => tracing::debug!(%channel, error = %e, "server subscribe failed"),
                    Err(Fail::Backend(e)) => tracing::debug!(%channel, code = e.code, "server subscribe failed"),
                }
            }
            Control::Unsubscribe { channel } => {
                if self.subs.contains_key(&channel) {
                    self.unsubscribe(&channel).await;
                    out.reply(&Reply {
                        push: Some(Push {
                            channel,
                            unsubscribe: Some(Unsubscribe {
                                code: 2000,
                                reason: "server unsubscribe".into(),
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    });
                }
            }
            Control::Refresh { expire_at } => {
                self.set_expiry(expire_at, now);
                let ttl = expire_at.map_or(0, |e| e.saturating_sub(now.unix) as u32);
                out.reply(&Reply {
                    push: Some(Push {
                        refresh: Some(Refresh {
                            expires: expire_at.is_some(),
                            ttl,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
        }
        out.finish()
    }

    /// Releases everything the session holds: subscriptions, presence (with leave pushes),
    /// its registry entry. Called once when the connection ends.
    pub async fn close(&mut self) {
        if self.state == State::Closed {
            return;
        }
        let channels: Vec<String> = self.subs.keys().cloned().collect();
        for ch in channels {
            self.unsubscribe(&ch).await;
        }
        if self.state == State::Connected {
            self.node.unregister(&self.user, &self.client);
        }
        self.state = State::Closed;
        self.stale_at = None;
        self.ping_at = None;
        self.pong_deadline = None;
        self.expired_close_at = None;
    }
}

/// A client's history limit under `client.history_max_publication_limit` (`max`, 0: no
/// cap): a negative limit (everything) or one over the cap becomes the cap.
fn capped_limit(limit: i64, max: usize) -> i64 {
    let Ok(max) = i64::try_from(max) else { return limit };
    if max == 0 || (0..=max).contains(&limit) {
        limit
    } else {
        max
    }
}

/// An upper bound of the encoded size of publications in a reply.
fn publications_bound(pubs: &[Publication]) -> usize {
    pubs.iter().map(|p| crate::node::publication_size_bound("", p)).sum()
}

/// The encoded size of the publications a reply carries (history, recovery in subscribe
/// and connect), bounded from above before encoding it.
fn publications_size(r: &Reply) -> usize {
    let history = r.history.iter().map(|h| publications_bound(&h.publications));
    let subscribe = r.subscribe.iter().map(|s| publications_bound(&s.publications));
    let connect = r
        .connect
        .iter()
        .flat_map(|c| &c.subs)
        .filter_map(|e| e.value.as_ref())
        .map(|s| publications_bound(&s.publications));
    history.chain(subscribe).chain(connect).sum()
}

fn command_method(c: &Command) -> &'static str {
    if c.connect.is_some() {
        "connect"
    } else if c.subscribe.is_some() {
        "subscribe"
    } else if c.unsubscribe.is_some() {
        "unsubscribe"
    } else if c.publish.is_some() {
        "publish"
    } else if c.presence.is_some() {
        "presence"
    } else if c.presence_stats.is_some() {
        "presence_stats"
    } else if c.history.is_some() {
        "history"
    } else if c.refresh.is_some() {
        "refresh"
    } else if c.sub_refresh.is_some() {
        "sub_refresh"
    } else if c.rpc.is_some() {
        "rpc"
    } else if c.send.is_some() {
        "send"
    } else if c.ping.is_some() {
        "ping"
    } else {
        "pong"
    }
}

/// Accumulates replies into one frame, up to a size limit (the client's queue).
struct Writer {
    format: Format,
    buf: BytesMut,
    disconnect: Option<(u16, String)>,
    limit: usize,
}

impl Writer {
    fn new(format: Format) -> Self {
        Self::with_limit(format, usize::MAX)
    }

    fn with_limit(format: Format, limit: usize) -> Self {
        Writer {
            format,
            buf: BytesMut::new(),
            disconnect: None,
            limit,
        }
    }

    /// Bytes that may still be written before the limit.
    fn remaining(&self) -> usize {
        self.limit.saturating_sub(self.buf.len())
    }

    fn over_limit(&self) -> bool {
        self.buf.len() > self.limit
    }

    /// Whether `more` bytes on top of what is written would pass the limit.
    fn would_overflow(&self, more: usize) -> bool {
        self.buf.len().saturating_add(more) > self.limit
    }

    /// Drops what was written (it will not be sent).
    fn discard(mut self) -> Self {
        self.buf = BytesMut::new();
        self
    }

    fn reply(&mut self, r: &Reply) {
        if let Err(e) = encode_reply(self.format, r, &mut self.buf) {
            // Data that cannot be expressed in this format (binary data to a JSON client).
            tracing::warn!(error = %e, "reply dropped");
            let fallback = Reply {
                id: r.id,
                error: Some(Error {
                    code: ec::INTERNAL,
                    message: "internal error".into(),
                    temporary: true,
                }),
                ..Default::default()
            };
            let _ = encode_reply(self.format, &fallback, &mut self.buf);
        }
    }

    fn disconnect(mut self, d: Disconnect) -> Output {
        self.disconnect = Some((d.0, d.1.to_string()));
        self.finish()
    }

    fn finish(self) -> Output {
        Output {
            frame: (!self.buf.is_empty()).then(|| self.buf.freeze()),
            disconnect: self.disconnect,
        }
    }
}

mod proxied;

#[cfg(test)]
mod tests;
