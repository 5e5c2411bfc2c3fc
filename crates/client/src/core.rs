//! The sans-IO client: user calls, transport events, received frames and timer expiries
//! in; actions (open, send, close the transport) and events out. No clock, socket or task.
//!
//! Client states: `Disconnected -> Connecting -> Connected`; subscription states:
//! `Unsubscribed -> Subscribing -> Subscribed`. Every transition happens in one method
//! below and is tested with a fake clock.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use wshub_protocol::codec::{decode_replies, encode_commands};
use wshub_protocol::codes::{disconnect as dc, error as ec};
use wshub_protocol::*;

mod push;

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub token: String,
    pub format: Format,
    /// Reconnect delays: full jitter between `min` and `min * 2^attempt`, capped at `max`.
    pub min_reconnect_delay: Duration,
    pub max_reconnect_delay: Duration,
    /// How long past the announced ping interval to wait for a ping before reconnecting.
    pub max_server_ping_delay: Duration,
    /// A connection that stayed up this long resets the backoff.
    pub stable_after: Duration,
    pub name: String,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            token: String::new(),
            format: Format::Json,
            min_reconnect_delay: Duration::from_millis(500),
            max_reconnect_delay: Duration::from_secs(20),
            max_server_ping_delay: Duration::from_secs(10),
            stable_after: Duration::from_secs(10),
            name: "wshub-rust".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Disconnected,
    Connecting,
    Connected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubState {
    Unsubscribed,
    Subscribing,
    Subscribed,
}

/// What the glue must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    OpenTransport,
    Send(Bytes),
    CloseTransport,
    /// The token expired: get a new one and call [`ClientCore::handle_token`].
    RefreshToken,
    /// A subscription that gets its tokens from a callback needs one (first subscribe,
    /// expiry, or the server said 109): call [`ClientCore::handle_sub_token`].
    SubscriptionToken(String),
}

/// How to subscribe.
#[derive(Debug, Clone, Default)]
pub struct SubscribeOptions {
    /// Remember the stream position and recover what was missed after a reconnect.
    pub recoverable: bool,
    /// A fixed subscription token (private channels).
    pub token: String,
    /// Ask for tokens with [`Action::SubscriptionToken`] instead: before the first
    /// subscribe, before the token expires, and when the server says it expired.
    pub token_callback: bool,
    /// Ask for Fossil delta compression (`delta: "fossil"`); publications are decoded
    /// here, the application sees whole data. Not with `tags_filter` (as in the SDKs).
    pub delta: bool,
    /// Receive only publications whose tags pass this filter (the namespace must allow it).
    pub tags_filter: Option<FilterNode>,
}

/// What happened, for the application.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    Connecting {
        code: u16,
        reason: String,
    },
    Connected {
        client: String,
    },
    Disconnected {
        code: u16,
        reason: String,
    },
    Subscribing {
        channel: String,
    },
    Subscribed {
        channel: String,
        recovered: bool,
        was_recovering: bool,
    },
    Unsubscribed {
        channel: String,
        code: u32,
    },
    Publication {
        channel: String,
        /// Whole data (a delta subscription's deltas are applied already).
        data: Bytes,
        offset: u64,
        /// It came as a delta (Fossil delta compression saved the rest).
        delta: bool,
    },
    Join {
        channel: String,
        info: ClientInfo,
    },
    Leave {
        channel: String,
        info: ClientInfo,
    },
    /// The answer to a call made with an id (publish, presence, history, rpc...).
    Reply {
        id: u32,
        reply: Box<Reply>,
    },
    Error {
        message: String,
    },
}

#[derive(Debug)]
struct Sub {
    state: SubState,
    recoverable: bool,
    /// Last offset and epoch seen (recoverable subscriptions).
    position: Option<(u64, String)>,
    token: String,
    token_callback: bool,
    /// Fetch a new token at this moment (callback subscriptions whose token expires).
    refresh_at: Option<Instant>,
    awaiting_token: bool,
    delta: bool,
    /// The server agreed to send deltas (`delta: true` in the subscribe result).
    delta_negotiated: bool,
    /// The data of the last publication: the base of the next delta.
    delta_base: Option<Bytes>,
    tags_filter: Option<FilterNode>,
}

/// The client state machine.
pub struct ClientCore {
    cfg: ClientConfig,
    state: State,
    subs: HashMap<String, Sub>,
    actions: VecDeque<Action>,
    events: VecDeque<ClientEvent>,
    next_id: u32,
    connect_id: u32,
    /// subscribe command id -> channel
    pending_subs: HashMap<u32, String>,
    /// sub_refresh command id -> channel
    pending_sub_refresh: HashMap<u32, String>,
    attempts: u32,
    reconnect_at: Option<Instant>,
    ping_deadline: Option<Instant>,
    connected_at: Option<Instant>,
    ping_interval: Option<Duration>,
    /// When to fetch a new token before the connection's expires (its `ttl`).
    refresh_at: Option<Instant>,
    awaiting_token: bool,
    rng: rand::rngs::StdRng,
}

/// Refresh a little before the token runs out (at 90 % of its remaining life).
fn refresh_delay(ttl: u32) -> Duration {
    Duration::from_millis(u64::from(ttl) * 900)
}

/// Whether a close code asks the client to reconnect (PROTOCOL.md's ranges).
pub fn is_reconnect_code(code: u16) -> bool {
    dc::should_reconnect(code)
}

impl ClientCore {
    /// `seed` drives the jitter; tests fix it, the glue takes it from the OS.
    pub fn new(cfg: ClientConfig, seed: u64) -> Self {
        ClientCore {
            cfg,
            state: State::Disconnected,
            subs: HashMap::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            next_id: 1,
            connect_id: 0,
            pending_subs: HashMap::new(),
            pending_sub_refresh: HashMap::new(),
            attempts: 0,
            reconnect_at: None,
            ping_deadline: None,
            connected_at: None,
            ping_interval: None,
            refresh_at: None,
            awaiting_token: false,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        }
    }

    pub fn format(&self) -> Format {
        self.cfg.format
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn sub_state(&self, channel: &str) -> SubState {
        self.subs.get(channel).map_or(SubState::Unsubscribed, |s| s.state)
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// The next moment [`ClientCore::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let subs = self.subs.values().filter_map(|s| s.refresh_at);
        [self.reconnect_at, self.ping_deadline, self.refresh_at]
            .into_iter()
            .flatten()
            .chain(subs)
            .min()
    }

    fn id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    fn send(&mut self, cmds: &[Command]) {
        self.actions.push_back(Action::Send(encode_commands(self.cfg.format, cmds)));
    }

    /// User: connect (and keep reconnecting until `disconnect`).
    pub fn connect(&mut self) {
        if self.state == State::Disconnected {
            self.state = State::Connecting;
            self.events.push_back(ClientEvent::Connecting {
                code: 0,
                reason: "connect called".into(),
            });
            self.actions.push_back(Action::OpenTransport);
        }
    }

    /// User: disconnect; subscriptions are kept (and resubscribed on the next `connect`).
    pub fn disconnect(&mut self) {
        if self.state != State::Disconnected {
            self.enter_disconnected(0, "disconnect called");
            self.actions.push_back(Action::CloseTransport);
        }
    }

    fn enter_disconnected(&mut self, code: u16, reason: &str) {
        self.state = State::Disconnected;
        self.refresh_at = None;
        self.reconnect_at = None;
        self.ping_deadline = None;
        self.transport_gone();
        self.events.push_back(ClientEvent::Disconnected {
            code,
            reason: reason.into(),
        });
    }

    /// The connection is gone: its pending answers will never come, and subscriptions are
    /// made again on the next one.
    fn transport_gone(&mut self) {
        self.pending_subs.clear();
        self.pending_sub_refresh.clear();
        for s in self.subs.values_mut() {
            s.refresh_at = None;
            if s.state == SubState::Subscribed {
                s.state = SubState::Subscribing;
            }
        }
    }

    /// User: subscribe (now if connected, on connect otherwise).
    pub fn subscribe(&mut self, channel: &str, recoverable: bool, token: &str) {
        self.subscribe_with(
            channel,
            SubscribeOptions {
                recoverable,
                token: token.into(),
                ..Default::default()
            },
        )
    }

    /// User: subscribe with options (a token callback, for example).
    pub fn subscribe_with(&mut self, channel: &str, opts: SubscribeOptions) {
        if self.subs.get(channel).is_some_and(|s| s.state != SubState::Unsubscribed) {
            return;
        }
        self.subs.insert(
            channel.into(),
            Sub {
                state: SubState::Subscribing,
                recoverable: opts.recoverable,
                position: None,
                token: opts.token,
                token_callback: opts.token_callback,
                refresh_at: None,
                awaiting_token: false,
                delta: opts.delta && opts.tags_filter.is_none(),
                delta_negotiated: false,
                delta_base: None,
                tags_filter: opts.tags_filter,
            },
        );
        self.events.push_back(ClientEvent::Subscribing { channel: channel.into() });
        if self.state == State::Connected {
            self.send_subscribe(channel);
        }
    }

    fn send_subscribe(&mut self, channel: &str) {
        let Some(s) = self.subs.get_mut(channel) else { return };
        if s.token_callback && s.token.is_empty() {
            if !s.awaiting_token {
                s.awaiting_token = true;
                self.actions.push_back(Action::SubscriptionToken(channel.into()));
            }
            return;
        }
        let id = self.id();
        let Some(s) = self.subs.get(channel) else { return };
        let mut req = SubscribeRequest {
            channel: channel.into(),
            token: s.token.clone(),
            recoverable: s.recoverable,
            delta: if s.delta { "fossil".into() } else { String::new() },
            tf: s.tags_filter.clone(),
            ..Default::default()
        };
        if let (true, Some((offset, epoch))) = (s.recoverable, &s.position) {
            req.recover = true;
            req.offset = *offset;
            req.epoch = epoch.clone();
        }
        self.pending_subs.insert(id, channel.into());
        self.send(&[Command {
            id,
            subscribe: Some(req),
            ..Default::default()
        }]);
    }

    pub fn unsubscribe(&mut self, channel: &str) {
        if let Some(s) = self.subs.remove(channel) {
            if self.state == State::Connected && s.state != SubState::Unsubscribed {
                let id = self.id();
                self.send(&[Command {
                    id,
                    unsubscribe: Some(UnsubscribeRequest { channel: channel.into() }),
                    ..Default::default()
                }]);
            }
            self.events.push_back(ClientEvent::Unsubscribed {
                channel: channel.into(),
                code: 0,
            });
        }
    }

    /// User: any command with an id (publish, presence, presence_stats, history, rpc);
    /// the answer comes as [`ClientEvent::Reply`]. `None` when not connected.
    pub fn call(&mut self, mut cmd: Command) -> Option<u32> {
        if self.state != State::Connected {
            return None;
        }
        let id = self.id();
        cmd.id = id;
        self.send(&[cmd]);
        Some(id)
    }

    /// User: a `send` (no answer).
    pub fn send_message(&mut self, data: Bytes) -> bool {
        if self.state != State::Connected {
            return false;
        }
        self.send(&[Command {
            send: Some(SendRequest { data }),
            ..Default::default()
        }]);
        true
    }

    /// The new token after [`Action::RefreshToken`].
    pub fn handle_token(&mut self, token: String, now: Instant) {
        self.cfg.token = token;
        if self.awaiting_token {
            self.awaiting_token = false;
            if self.state == State::Connecting {
                self.schedule_reconnect(now, 0);
            } else if self.state == State::Connected {
                let id = self.id();
                let t = self.cfg.token.clone();
                self.send(&[Command {
                    id,
                    refresh: Some(RefreshRequest { token: t }),
                    ..Default::default()
                }]);
            }
        }
    }

    /// The answer to [`Action::SubscriptionToken`]: a token, or the callback's error (the
    /// subscription then ends with an `Error` and an `Unsubscribed` event).
    pub fn handle_sub_token(&mut self, channel: &str, token: Result<String, String>) {
        let connected = self.state == State::Connected;
        let Some(s) = self.subs.get_mut(channel) else { return };
        if !s.awaiting_token {
            return;
        }
        s.awaiting_token = false;
        let token = match token.and_then(|t| if t.is_empty() { Err("empty".into()) } else { Ok(t) }) {
            Ok(t) => t,
            Err(e) => {
                self.events.push_back(ClientEvent::Error {
                    message: format!("subscription token for {channel}: {e}"),
                });
                if s.state == SubState::Subscribed {
                    return self.unsubscribe(channel); // a failed refresh: leave the server too
                }
                // No subscribe was sent with this token: nothing to undo on the server.
                self.subs.remove(channel);
                self.events.push_back(ClientEvent::Unsubscribed {
                    channel: channel.into(),
                    code: 0,
                });
                return;
            }
        };
        s.token = token.clone();
        if !connected {
            return; // sent with the subscribe after the next connect
        }
        match s.state {
            SubState::Subscribing => self.send_subscribe(channel),
            SubState::Subscribed => {
                let id = self.id();
                self.pending_sub_refresh.insert(id, channel.into());
                self.send(&[Command {
                    id,
                    sub_refresh: Some(SubRefreshRequest {
                        channel: channel.into(),
                        token,
                        ..Default::default()
                    }),
                    ..Default::default()
                }]);
            }
            SubState::Unsubscribed => {}
        }
    }

    /// Drops a callback subscription's token so that the next subscribe asks for a new one.
    fn forget_sub_token(&mut self, channel: &str) {
        if let Some(s) = self.subs.get_mut(channel) {
            if s.token_callback {
                s.token.clear();
                s.refresh_at = None;
            }
        }
    }

    /// Transport: the WebSocket is open; send `connect` (with the subscriptions to recover).
    pub fn handle_open(&mut self, _now: Instant) {
        if self.state != State::Connecting {
            return;
        }
        let id = self.id();
        self.connect_id = id;
        let req = ConnectRequest {
            token: self.cfg.token.clone(),
            name: self.cfg.name.clone(),
            ..Default::default()
        };
        self.send(&[Command {
            id,
            connect: Some(req),
            ..Default::default()
        }]);
    }

    /// Transport: closed (by either side) with `code`. Reconnects unless the code is
    /// terminal or the user disconnected.
    pub fn handle_close(&mut self, code: u16, reason: &str, now: Instant) {
        if self.state == State::Disconnected {
            return;
        }
        self.ping_deadline = None;
        if !is_reconnect_code(code) {
            self.enter_disconnected(code, reason);
            return;
        }
        let was_connected = self.state == State::Connected;
        let stable = self
            .connected_at
            .is_some_and(|t| now.saturating_duration_since(t) >= self.cfg.stable_after);
        if stable {
            self.attempts = 0;
        }
        self.state = State::Connecting;
        self.transport_gone();
        if was_connected || self.attempts == 0 {
            self.events.push_back(ClientEvent::Connecting {
                code,
                reason: reason.into(),
            });
        }
        let delay = self.backoff();
        self.schedule_reconnect(now, delay.as_millis() as u64);
    }

    /// Full jitter (as the official SDKs): `min + random(0 ..= min(max, min * 2^attempt))`,
    /// capped at `max`.
    pub fn backoff(&mut self) -> Duration {
        let min = self.cfg.min_reconnect_delay.as_millis() as u64;
        let max = self.cfg.max_reconnect_delay.as_millis() as u64;
        let span = min.saturating_mul(1u64 << self.attempts.min(31)).min(max);
        self.attempts = self.attempts.saturating_add(1);
        let extra = self.rng.gen_range(0..=span);
        Duration::from_millis(min.saturating_add(extra).min(max))
    }

    fn schedule_reconnect(&mut self, now: Instant, delay_ms: u64) {
        self.reconnect_at = Some(now + Duration::from_millis(delay_ms));
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.refresh_at.is_some_and(|t| t <= now) {
            self.refresh_at = None;
            if self.state == State::Connected && !self.awaiting_token {
                self.awaiting_token = true;
                self.actions.push_back(Action::RefreshToken);
            }
        }
        for (channel, s) in self.subs.iter_mut() {
            if s.refresh_at.is_some_and(|t| t <= now) {
                s.refresh_at = None;
                if self.state == State::Connected && s.state == SubState::Subscribed && !s.awaiting_token {
                    s.awaiting_token = true;
                    self.actions.push_back(Action::SubscriptionToken(channel.clone()));
                }
            }
        }
        if self.reconnect_at.is_some_and(|t| t <= now) {
            self.reconnect_at = None;
            if self.state == State::Connecting {
                self.actions.push_back(Action::OpenTransport);
            }
        }
        if self.ping_deadline.is_some_and(|t| t <= now) {
            // No ping from the server in time: the link is dead even if TCP says nothing.
            self.ping_deadline = None;
            self.actions.push_back(Action::CloseTransport);
            self.handle_close(dc::NO_PONG, "no ping", now);
        }
    }

    /// Transport: one received frame.
    pub fn handle_frame(&mut self, frame: Bytes, now: Instant) {
        let replies = match decode_replies(self.cfg.format, frame) {
            Ok(r) => r,
            Err(e) => {
                self.events.push_back(ClientEvent::Error {
                    message: format!("undecodable frame: {e}"),
                });
                return;
            }
        };
        for r in replies {
            self.handle_reply(r, now);
        }
    }

    fn handle_reply(&mut self, r: Reply, now: Instant) {
        if r.id == 0 {
            match r.push {
                Some(p) => self.handle_push(p, now),
                None => {
                    // The server's ping: answer and expect the next one.
                    self.send(&[Command::default()]);
                    self.arm_ping(now);
                }
            }
            return;
        }
        if r.id == self.connect_id {
            self.connect_id = 0;
            return self.handle_connect_reply(r, now);
        }
        if let Some(channel) = self.pending_subs.remove(&r.id) {
            return self.handle_subscribe_reply(channel, r, now);
        }
        if let Some(channel) = self.pending_sub_refresh.remove(&r.id) {
            return self.handle_sub_refresh_reply(channel, r, now);
        }
        if let Some(rr) = &r.refresh {
            self.refresh_at = rr.expires.then(|| now + refresh_delay(rr.ttl));
            return;
        }
        self.events.push_back(ClientEvent::Reply {
            id: r.id,
            reply: Box::new(r),
        });
    }

    fn arm_ping(&mut self, now: Instant) {
        if let Some(interval) = self.ping_interval {
            self.ping_deadline = Some(now + interval + self.cfg.max_server_ping_delay);
        }
    }

    fn handle_connect_reply(&mut self, r: Reply, now: Instant) {
        if let Some(e) = r.error {
            if e.code == ec::TOKEN_EXPIRED {
                self.awaiting_token = true;
                self.actions.push_back(Action::RefreshToken);
                self.actions.push_back(Action::CloseTransport);
                return;
            }
            // Temporary errors are retried with backoff; others end the client.
            self.actions.push_back(Action::CloseTransport);
            if e.temporary {
                let d = self.backoff();
                self.schedule_reconnect(now, d.as_millis() as u64);
            } else {
                self.enter_disconnected(dc::BAD_REQUEST, &e.message);
            }
            return;
        }
        let Some(c) = r.connect else { return };
        self.state = State::Connected;
        self.connected_at = Some(now);
        self.ping_interval = (c.ping > 0).then(|| Duration::from_secs(u64::from(c.ping)));
        self.refresh_at = c.expires.then(|| now + refresh_delay(c.ttl));
        self.arm_ping(now);
        self.events.push_back(ClientEvent::Connected { client: c.client });
        let channels: Vec<String> = self
            .subs
            .iter()
            .filter(|(_, s)| s.state == SubState::Subscribing)
            .map(|(c, _)| c.clone())
            .collect();
        for ch in channels {
            self.send_subscribe(&ch);
        }
    }

    fn handle_subscribe_reply(&mut self, channel: String, r: Reply, now: Instant) {
        let Some(s) = self.subs.get_mut(&channel) else { return };
        if let Some(e) = r.error {
            if e.temporary {
                return self.send_subscribe(&channel);
            }
            if e.code == ec::TOKEN_EXPIRED && s.token_callback {
                self.forget_sub_token(&channel);
                return self.send_subscribe(&channel);
            }
            s.state = SubState::Unsubscribed;
            self.subs.remove(&channel);
            self.events.push_back(ClientEvent::Unsubscribed { channel, code: e.code });
            return;
        }
        let Some(res) = r.subscribe else { return };
        s.state = SubState::Subscribed;
        s.delta_negotiated = s.delta && res.delta;
        s.refresh_at = (s.token_callback && res.expires).then(|| now + refresh_delay(res.ttl));
        if res.recoverable {
            s.position = Some((res.offset, res.epoch.clone()));
        }
        self.events.push_back(ClientEvent::Subscribed {
            channel: channel.clone(),
            recovered: res.recovered,
            was_recovering: res.was_recovering,
        });
        for p in res.publications {
            self.publication(&channel, p);
        }
    }

    fn handle_sub_refresh_reply(&mut self, channel: String, r: Reply, now: Instant) {
        let Some(s) = self.subs.get_mut(&channel) else { return };
        match (r.error, r.sub_refresh) {
            (None, Some(res)) => s.refresh_at = res.expires.then(|| now + refresh_delay(res.ttl)),
            (Some(e), _) => {
                self.events.push_back(ClientEvent::Error {
                    message: format!("sub_refresh {channel}: {} {}", e.code, e.message),
                });
                // A refused token: drop it; the server's expiry (a 2500+ unsubscribe) makes
                // us subscribe again with a fresh one.
                self.forget_sub_token(&channel);
            }
            (None, None) => {}
        }
    }
}

#[cfg(test)]
mod tests;
