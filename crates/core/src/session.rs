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
//!
//! By concept: `dispatch` (frames and commands in, the [`Output`] writer and its reply
//! budget, server API controls), `connect` (connect and token refresh), `subscribe`
//! (subscribe, recovery, unsubscribe, subscription refresh), `commands` (publish,
//! presence, history), `timers` (the deadline table and what each deadline does),
//! `proxied` (the backend proxies). This file keeps the state and its accessors.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use wshub_protocol::codes::{disconnect as dc, error as ec};
use wshub_protocol::*;

use crate::channel;
use crate::config::ChannelOptions;
use crate::connection::{ConnectionHandle, Control};
use crate::engine::{HistoryQuery, StreamPosition};
use crate::node::{ApiError, Node};
use crate::proxy::{self, ProxyKind};
use crate::ratelimit::{Limiter, RateLimitScope};
use crate::token::TokenError;
use crate::vecmap::VecMap;
use crate::Now;

use dispatch::Writer;
use timers::Timer;

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

/// Refused tokens, logged at info (expired ones are not: that is routine), at most once a
/// second for the node. The connection's span carries the client's address.
static TOKEN_LOG: crate::logging::LogLimiter = crate::logging::LogLimiter::new();

const PERMISSION_DENIED: Disconnect = Disconnect::new(dc::PERMISSION_DENIED, "permission denied");

impl Session {
    fn log_refused(&self, what: &str, reason: &str, channel: &str) {
        if let Some(suppressed) = TOKEN_LOG.admit(Instant::now()) {
            tracing::info!(refusal = "token", client = %self.client, user = %self.user, channel, reason, suppressed, "{what} token refused");
        }
    }

    /// PROTOCOL.md: an expired connection token is error 109 (the SDK fetches a new one);
    /// an invalid one closes the connection with 3500.
    fn token_fail(&self, e: TokenError, what: &str) -> Fail {
        match e {
            TokenError::Expired => err(ec::TOKEN_EXPIRED, "token expired"),
            TokenError::Invalid(reason) => {
                self.log_refused(what, &reason, "");
                Fail::Disconnect(INVALID_TOKEN)
            }
        }
    }

    /// A subscription token that is invalid (bad signature, audience...) refuses that
    /// subscription with 103 and keeps the connection, as Centrifugo does; an expired one
    /// is 109.
    fn sub_token_fail(&self, e: TokenError, channel: &str) -> Fail {
        match e {
            TokenError::Expired => err(ec::TOKEN_EXPIRED, "token expired"),
            TokenError::Invalid(reason) => {
                self.log_refused("subscription", &reason, channel);
                err(ec::PERMISSION_DENIED, "permission denied")
            }
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
    /// Recovery on: positioned in the stream, with offset and epoch in the result, and
    /// `recoverable` in it.
    recoverable: bool,
    /// Positioning without recovery (`force_positioning`, or asked where
    /// `allow_positioning`): the stream position is followed, nothing is recovered.
    positioned: bool,
    /// Recover from this position.
    since: Option<StreamPosition>,
    /// `force_recovery_mode: "cache"`: a recovery gives the latest publication only.
    cache: bool,
    /// Made by the server (connect, API), not by a client's subscribe: a lost state closes
    /// the connection (3010) rather than unsubscribing (2500), as Centrifugo.
    server_side: bool,
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
    /// A map subscription: its map presence entries are kept while it lasts.
    map: bool,
    /// A shared poll subscription: keys tracked, no hub entry.
    shared_poll: Option<SharedPollSub>,
    /// A positioned stream subscription: what its periodic position check needs. Boxed:
    /// most subscriptions are not positioned.
    tracked: Option<Box<Tracked>>,
    /// Made by the server (see [`SubParams::server_side`]).
    server_side: bool,
    /// The subscribe stream proxy's stream: dropped with the subscription, which cancels it.
    stream: Option<proxy::stream::ProxyStream>,
}

/// A positioned subscription's stream position as the session last saw it. The hub holds
/// the offset it has delivered; the session keeps the epoch and when the offset last moved,
/// so that only a subscription silent for `client.channel_position_check_delay` has its
/// position compared with the stream's top, as Centrifugo.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tracked {
    epoch: String,
    /// The hub's offset for this subscriber at `seen_at`.
    offset: u64,
    /// When `offset` was last seen to move (or checked against the top).
    seen_at: Instant,
}

/// What a shared poll subscription negotiated.
#[derive(Debug, Clone, Copy)]
struct SharedPollSub {
    /// Fossil delta, per key.
    delta: bool,
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
    /// Map subscribes still paging towards live.
    map_pending: VecMap<map::MapPending>,
    /// Stale, ping, pong and token expiry deadlines.
    timers: timers::Timers,
    /// Token expiry (Unix seconds); its close (or refresh) moment is [`Timer::Expiry`].
    expire_at: Option<u64>,
    /// `client.command_rate_limit`, and how many commands in a row it refused.
    /// Boxed: most deployments set no limit, and every idle session carries this field.
    limiter: Option<Box<Limiter>>,
    refused: u32,
    /// Forwarded headers and connection meta for the backend proxies.
    proxy: Option<Box<proxied::ProxyConn>>,
    /// Why a unidirectional connect was refused, as the connect logic said it (before the
    /// disconnect it became): boxed, set only on a refused connection.
    refusal: Option<Box<ConnectRefusal>>,
}

/// A refused unidirectional connect as the connect logic said it: an error's code and
/// message, or a disconnect's code and reason. Centrifugo's `connect_code_to_http_response`
/// matches these, not the disconnect the client would be closed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRefusal {
    pub code: u32,
    pub message: String,
}

/// The monotonic moment of Unix time `unix` (a token's, the API's or a proxy's number:
/// saturated, see [`crate::deadline`]).
fn mono_at(now: Now, unix: u64) -> Instant {
    crate::deadline::mono_at(now.mono, now.unix, unix)
}

impl Session {
    pub fn new(node: Arc<Node>, handle: Arc<dyn ConnectionHandle>, now: Now) -> Self {
        let stale = node.config.session.stale_delay;
        Session {
            format: handle.encoding().format,
            handle,
            state: State::Connecting,
            client: Arc::from(""),
            user: String::new(),
            conn_info: Bytes::new(),
            subs: VecMap::new(),
            map_pending: VecMap::new(),
            timers: {
                let mut t = timers::Timers::default();
                t.set(Timer::Stale, now.mono + stale);
                t
            },
            expire_at: None,
            limiter: match node.config.session.command_rate_limit {
                0 => None,
                r => Some(Box::new(Limiter::new(
                    node.config.session.command_rate_limit_algorithm,
                    r,
                    now.mono,
                ))),
            },
            refused: 0,
            proxy: None,
            refusal: None,
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

    /// Why the connect of a unidirectional connection was refused, if it was.
    pub fn connect_refusal(&self) -> Option<&ConnectRefusal> {
        self.refusal.as_deref()
    }

    /// A unidirectional client reads no replies: a refused connect closes it, with the
    /// disconnect Centrifugo gives the error (`client.connect_code_to_unidirectional_disconnect`,
    /// then its fixed table). The refusal as said is kept for the HTTP transports' own
    /// transforms.
    fn unidirectional_refusal(&mut self, f: Fail) -> Fail {
        let (code, message) = match &f {
            Fail::Error(e) => (e.code(), e.message().into_owned()),
            Fail::Backend(e) => (e.code, e.message.clone()),
            Fail::Disconnect(d) => (u32::from(d.0), d.1.to_string()),
        };
        self.refusal = Some(Box::new(ConnectRefusal { code, message }));
        match f {
            Fail::Disconnect(d) => Fail::Disconnect(d),
            _ => {
                let (code, reason) = self.node.config.session.unidirectional_disconnect(code);
                Fail::Disconnect(Disconnect(code, reason))
            }
        }
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
        self.timers.clear_all();
    }
}

use crate::subscription::stream::publications_bound;

mod commands;
mod connect;
mod dispatch;
mod map;
mod proxied;
mod shared_poll;
mod subscribe;
mod timers;

#[cfg(test)]
mod map_tests;
#[cfg(test)]
mod position_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod token_tests;
