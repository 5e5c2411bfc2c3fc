//! One Pusher connection's protocol state: what the pump runs for `/app/{key}` in place
//! of Centrifugo's session ([`crate::transport::Dialect`]).
//!
//! Subscriptions go into the node's hub with the connection's Pusher encoding, so that
//! publications reach it by the same fan-out as Centrifugo clients. Presence is the
//! engine's, one entry per socket; Pusher counts members per user, so a member is added
//! (a join published) on its user's first socket in the channel and removed on its last.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use wshub_core::connection::{ConnectionHandle, Control};
use wshub_core::engine::{HistoryQuery, Joined};
use wshub_core::node::Node;
use wshub_core::pusher::{frame, pusher_data, EVENT_TAG};
use wshub_core::session::{Output, State};
use wshub_core::Now;
use wshub_protocol::codes::disconnect as dc;
use wshub_protocol::{ClientInfo, Publication};

use super::webhook::{Hook, Webhooks};
use super::{valid_channel, PusherApp};

/// Seconds of silence after which a client pings (announced in `connection_established`);
/// the server pings after as long without a message.
pub const ACTIVITY_TIMEOUT: Duration = Duration::from_secs(120);
/// Time for the pong of a server ping before the connection is closed with
/// [`code::PONG_TIMEOUT`].
pub const PONG_TIMEOUT: Duration = Duration::from_secs(30);
/// Presence entries expire unless added again (Redis's `presence_ttl`).
const PRESENCE_REFRESH: Duration = Duration::from_secs(25);

/// Pusher's close and error codes (pusher.com, "Pusher Protocol", error codes).
pub mod code {
    /// 4000-4099: the client must not reconnect as it is.
    pub const APP_UNKNOWN: u16 = 4001;
    pub const UNSUPPORTED_PROTOCOL: u16 = 4007;
    pub const UNAUTHORIZED: u16 = 4009;
    /// 4100-4199: reconnect after a while.
    pub const OVER_CAPACITY: u16 = 4100;
    /// 4200-4299: reconnect now.
    pub const GENERIC_RECONNECT: u16 = 4200;
    pub const PONG_TIMEOUT: u16 = 4201;
    /// 4300-4399: other errors (sent in `pusher:error`, the connection stays).
    pub const CLIENT_EVENT_REJECTED: u16 = 4301;
}

/// The Pusher code of a close the node asks for in Centrifugo's terms: Centrifugo's
/// reconnecting codes (3000-3499) reconnect now, a slow reader after a while, the rest
/// not at all.
pub fn close_code(code: u16) -> u16 {
    match code {
        4000..=4999 => code,
        dc::SLOW => code::OVER_CAPACITY,
        3000..=3499 => code::GENERIC_RECONNECT,
        _ => code::UNAUTHORIZED,
    }
}

/// A presence subscription: the member this socket is.
struct Member {
    info: ClientInfo,
}

pub struct PusherSession {
    node: Arc<Node>,
    app: Arc<PusherApp>,
    handle: Arc<dyn ConnectionHandle>,
    socket_id: Arc<str>,
    /// The user the registry knows this connection by: the app's channel prefix and the
    /// signed-in user id (empty before `pusher:signin`), so that the app sharing channels
    /// with Centrifugo shares its users too.
    registered: String,
    user: String,
    /// The presence member id the framing skips (a member is not told of itself).
    member: Arc<OnceLock<Box<str>>>,
    channels: HashMap<String, Option<Member>>,
    state: State,
    last_seen: Instant,
    ping_sent: Option<Instant>,
    presence_refresh: Instant,
    client_events: (Instant, u32),
    hooks: Option<Arc<Webhooks>>,
}

#[derive(Deserialize)]
struct Incoming {
    event: String,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    data: Value,
}

#[derive(Deserialize, Default)]
struct SubscribeData {
    #[serde(default)]
    channel: String,
    #[serde(default)]
    auth: String,
    #[serde(default)]
    channel_data: Option<String>,
}

#[derive(Deserialize, Default)]
struct SigninData {
    #[serde(default)]
    user_data: String,
    #[serde(default)]
    auth: String,
}

/// Replies gathered during one call: one Pusher message per line (the sink writes each
/// as a frame of its own).
#[derive(Default)]
struct Replies {
    lines: Vec<u8>,
    close: Option<(u16, String)>,
}

impl Replies {
    fn push(&mut self, event: &str, channel: &str, data: &str) {
        if !self.lines.is_empty() {
            self.lines.push(b'\n');
        }
        self.lines.extend_from_slice(&frame(event, channel, data, None));
    }

    fn error(&mut self, code: Option<u16>, message: &str) {
        let data = serde_json::json!({ "code": code, "message": message });
        self.push_value("pusher:error", "", &data);
    }

    fn push_value(&mut self, event: &str, channel: &str, data: &Value) {
        // `pusher:error` and the like carry an object, not a string.
        if !self.lines.is_empty() {
            self.lines.push(b'\n');
        }
        let mut m = serde_json::Map::new();
        m.insert("event".into(), event.into());
        if !channel.is_empty() {
            m.insert("channel".into(), channel.into());
        }
        m.insert("data".into(), data.clone());
        self.lines.extend_from_slice(Value::Object(m).to_string().as_bytes());
    }

    fn subscription_error(&mut self, channel: &str, kind: &str, error: &str, status: u16) {
        let data = serde_json::json!({ "type": kind, "error": error, "status": status });
        self.push_value("pusher:subscription_error", channel, &data);
    }

    fn output(self) -> Output {
        Output {
            frame: (!self.lines.is_empty()).then(|| Bytes::from(self.lines)),
            disconnect: self.close,
        }
    }
}

impl PusherSession {
    pub fn new(
        node: Arc<Node>,
        app: Arc<PusherApp>,
        handle: Arc<dyn ConnectionHandle>,
        member: Arc<OnceLock<Box<str>>>,
        hooks: Option<Arc<Webhooks>>,
    ) -> Self {
        // Pusher's form `\d+.\d+`, which its server SDKs check: random, then the node's
        // connection id.
        let socket_id: Arc<str> = format!("{}.{}", rand::random::<u32>(), handle.id()).into();
        let now = Instant::now();
        let registered = app.channel_prefix.clone();
        node.register(&registered, socket_id.clone(), handle.clone());
        PusherSession {
            node,
            app,
            handle,
            socket_id,
            registered,
            user: String::new(),
            member,
            channels: HashMap::new(),
            state: State::Connected,
            last_seen: now,
            ping_sent: None,
            presence_refresh: now + PRESENCE_REFRESH,
            client_events: (now, 0),
            hooks,
        }
    }

    pub fn app_id(&self) -> &str {
        &self.app.id
    }

    pub fn socket_id(&self) -> &str {
        &self.socket_id
    }

    /// `pusher:connection_established`, the first message of a connection.
    pub fn established(&self) -> Bytes {
        let data = serde_json::json!({ "socket_id": &*self.socket_id, "activity_timeout": ACTIVITY_TIMEOUT.as_secs() });
        frame("pusher:connection_established", "", &data.to_string(), None)
    }

    async fn frame(&mut self, data: Bytes, now: Now) -> Output {
        self.last_seen = now.mono;
        self.ping_sent = None;
        let mut r = Replies::default();
        let msg: Incoming = match serde_json::from_slice(&data) {
            Ok(m) => m,
            Err(_) => {
                r.error(None, "not a Pusher message");
                return r.output();
            }
        };
        match msg.event.as_str() {
            "pusher:ping" => r.push("pusher:pong", "", "{}"),
            "pusher:pong" => {}
            "pusher:subscribe" => {
                let d: SubscribeData = serde_json::from_value(msg.data).unwrap_or_default();
                self.subscribe(d, &mut r).await;
            }
            "pusher:unsubscribe" => {
                let d: SubscribeData = serde_json::from_value(msg.data).unwrap_or_default();
                self.unsubscribe(&d.channel).await;
            }
            "pusher:signin" => {
                let d: SigninData = serde_json::from_value(msg.data).unwrap_or_default();
                self.signin(d, &mut r);
            }
            e if e.starts_with("client-") => {
                self.client_event(e, msg.channel.as_deref().unwrap_or(""), msg.data, now.mono, &mut r)
                    .await;
            }
            // Pusher ignores what it does not know.
            _ => {}
        }
        r.output()
    }

    async fn subscribe(&mut self, d: SubscribeData, r: &mut Replies) {
        let name = d.channel;
        if !valid_channel(&name) {
            r.subscription_error(&name, "InvalidChannel", "invalid channel name", 400);
            return;
        }
        if self.channels.contains_key(&name) {
            return;
        }
        if let Some(user) = name.strip_prefix(super::USER_CHANNEL_PREFIX) {
            if self.user.is_empty() || user != self.user {
                r.subscription_error(&name, "AuthError", "a user channel is its signed-in user's", 403);
                return;
            }
        }
        let presence = name.starts_with("presence-");
        if presence || name.starts_with("private-") {
            let mut message = format!("{}:{name}", self.socket_id);
            if presence {
                message.push(':');
                message.push_str(d.channel_data.as_deref().unwrap_or(""));
            }
            if !self.app.verify(&message, &d.auth) {
                r.subscription_error(&name, "AuthError", "invalid signature", 401);
                return;
            }
        }
        let member = match presence.then(|| self.member_info(d.channel_data.as_deref().unwrap_or(""))) {
            None => None,
            Some(Ok(info)) => Some(info),
            Some(Err(why)) => {
                r.subscription_error(&name, "LimitReached", why, 400);
                return;
            }
        };
        let ch = self.app.hub_channel(&name);
        let node = self.node.clone();
        // The member is added before the socket subscribes, in one engine step that also
        // judges the limit and whether this is the user's first socket: two sockets (or
        // nodes) at once can neither both pass a full channel's limit nor both miss, or
        // both send, the user's `member_added`.
        let mut first_of_user = false;
        if let Some(info) = &member {
            let max = self.app.limits.max_presence_members;
            match node.presence.join_presence(&ch, &self.socket_id, info.clone(), max).await {
                Ok(Joined::Full) => {
                    r.subscription_error(&name, "LimitReached", "presence channel is full", 400);
                    return;
                }
                Ok(j) => first_of_user = j == Joined::First,
                Err(e) => {
                    tracing::debug!(error = %e, channel = %ch, "pusher presence add");
                    r.subscription_error(&name, "ServerError", "internal error", 500);
                    return;
                }
            }
        }
        let first_here = node.hub.add(&ch, self.handle.clone(), presence, false);
        if let Err(e) = node.broker.subscribe(&ch).await {
            tracing::debug!(error = %e, channel = %ch, "pusher subscribe: broker");
            if node.hub.remove(&ch, self.handle.id()) {
                let _ = node.broker.unsubscribe(&ch).await;
            }
            if member.is_some() {
                let _ = node.presence.remove_presence(&ch, &self.socket_id).await;
            }
            r.subscription_error(&name, "ServerError", "internal error", 500);
            return;
        }
        if first_here {
            self.hook(Hook::Occupied(&name));
        }
        let Some(info) = member else {
            self.channels.insert(name.clone(), None);
            r.push("pusher_internal:subscription_succeeded", &name, "{}");
            self.cached_event(&ch, &name, r).await;
            return;
        };
        let _ = self.member.set(info.user.as_str().into());
        let present = node.presence.presence(&ch).await.unwrap_or_default();
        if first_of_user {
            let _ = node.broker.publish_join(&ch, info.clone()).await;
            self.hook(Hook::MemberAdded(&name, &info.user));
        }
        r.push(
            "pusher_internal:subscription_succeeded",
            &name,
            &presence_data(&present).to_string(),
        );
        self.cached_event(&ch, &name, r).await;
        self.channels.insert(name, Some(Member { info }));
    }

    /// On a cache channel, after the subscription: its last event (kept by the engine for
    /// [`super::CACHE_TTL`]) or `pusher:cache_miss`, as Pusher sends them.
    async fn cached_event(&self, ch: &str, name: &str, r: &mut Replies) {
        if !super::is_cache_channel(name) {
            return;
        }
        let query = HistoryQuery {
            limit: 1,
            reverse: true,
            ..Default::default()
        };
        let last = self
            .node
            .broker
            .history(ch, query)
            .await
            .ok()
            .and_then(|h| h.publications.into_iter().next());
        let event = last.as_ref().and_then(|p| Some((p.tags.get(EVENT_TAG)?.clone(), pusher_data(p)?)));
        match event {
            Some((event, data)) => r.push(&event, name, &data),
            None => {
                r.push("pusher:cache_miss", name, "");
                self.hook(Hook::CacheMiss(name));
            }
        }
    }

    /// The member this socket is from a presence subscribe's `channel_data`.
    fn member_info(&self, channel_data: &str) -> Result<ClientInfo, &'static str> {
        let v: Value = serde_json::from_str(channel_data).map_err(|_| "channel_data is not JSON")?;
        let user = match v.get("user_id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err("channel_data has no user_id"),
        };
        let user_info = match v.get("user_info") {
            None | Some(Value::Null) => Bytes::new(),
            Some(i) => Bytes::from(i.to_string()),
        };
        let max = self.app.limits.max_presence_member_size;
        if max > 0 && user_info.len() > max {
            return Err("user_info is too large");
        }
        Ok(ClientInfo {
            user,
            client: self.socket_id.to_string(),
            chan_info: user_info,
            ..Default::default()
        })
    }

    async fn unsubscribe(&mut self, name: &str) {
        let Some(member) = self.channels.remove(name) else { return };
        let ch = self.app.hub_channel(name);
        let node = self.node.clone();
        let vacated = node.hub.remove(&ch, self.handle.id());
        if vacated {
            let _ = node.broker.unsubscribe(&ch).await;
        }
        if let Some(Member { info }) = member {
            // One engine step: of the user's last two sockets leaving at once (on two
            // nodes, say), one sees the last.
            if node.presence.leave_presence(&ch, &self.socket_id).await.unwrap_or(false) {
                self.hook(Hook::MemberRemoved(name, &info.user));
                let _ = node.broker.publish_leave(&ch, info).await;
            }
        }
        if vacated {
            self.hook(Hook::Vacated(name));
        }
    }

    fn signin(&mut self, d: SigninData, r: &mut Replies) {
        let message = format!("{}::user::{}", self.socket_id, d.user_data);
        let user = serde_json::from_str::<Value>(&d.user_data).ok().and_then(|v| match v.get("id") {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        });
        let Some(user) = user.filter(|_| self.app.verify(&message, &d.auth)) else {
            r.error(Some(code::UNAUTHORIZED), "invalid signin");
            r.close = Some((code::UNAUTHORIZED, "invalid signin".into()));
            return;
        };
        self.node.unregister(&self.registered, &self.socket_id);
        self.registered = format!("{}{user}", self.app.channel_prefix);
        self.node.register(&self.registered, self.socket_id.clone(), self.handle.clone());
        self.user = user;
        let data = serde_json::json!({ "user_data": d.user_data });
        r.push("pusher:signin_success", "", &data.to_string());
    }

    async fn client_event(&mut self, event: &str, name: &str, data: Value, now: Instant, r: &mut Replies) {
        if !self.app.enable_client_messages {
            r.error(Some(code::CLIENT_EVENT_REJECTED), "client events are not enabled for this app");
            return;
        }
        let member = match self.channels.get(name) {
            Some(m) if name.starts_with("private-") || name.starts_with("presence-") => m,
            _ => {
                r.error(
                    Some(code::CLIENT_EVENT_REJECTED),
                    "client events go to a private or presence channel the socket is subscribed to",
                );
                return;
            }
        };
        let limit = self.app.limits.client_events_per_second;
        if now.duration_since(self.client_events.0) >= Duration::from_secs(1) {
            self.client_events = (now, 0);
        }
        self.client_events.1 += 1;
        if limit > 0 && self.client_events.1 > limit {
            r.error(Some(code::CLIENT_EVENT_REJECTED), "client event rate limit reached");
            return;
        }
        let bytes = Bytes::from(data.to_string());
        let max = self.app.limits.max_event_size;
        if max > 0 && bytes.len() > max {
            r.error(Some(code::CLIENT_EVENT_REJECTED), "client event is too large");
            return;
        }
        let user = member.as_ref().map_or(self.user.clone(), |m| m.info.user.clone());
        let publication = Publication {
            data: bytes,
            tags: [(EVENT_TAG.to_string(), event.to_string())].into_iter().collect(),
            info: Some(ClientInfo {
                user: user.clone(),
                client: self.socket_id.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let ch = self.app.hub_channel(name);
        if let Err(e) = self.node.broker.publish(&ch, publication, &super::publish_options(name)).await {
            tracing::debug!(error = %e, channel = %ch, "pusher client event");
            return;
        }
        self.hook(Hook::ClientEvent {
            channel: name,
            event,
            data: &data,
            socket_id: &self.socket_id,
            user: (!user.is_empty()).then_some(user.as_str()),
        });
    }

    fn hook(&self, hook: Hook<'_>) {
        if let Some(h) = &self.hooks {
            h.send(&self.app, hook);
        }
    }

    async fn control(&mut self, control: Control) -> Output {
        let mut r = Replies::default();
        match control {
            Control::Disconnect { code, reason } => {
                let code = close_code(code);
                r.error(Some(code), &reason);
                r.close = Some((code, reason));
            }
            Control::Subscribe { channel } => {
                if let Some(name) = self.app.pusher_channel(&channel).map(str::to_string) {
                    if !self.channels.contains_key(&name) && !name.starts_with("presence-") {
                        let ch = self.app.hub_channel(&name);
                        self.node.hub.add(&ch, self.handle.clone(), false, false);
                        if self.node.broker.subscribe(&ch).await.is_ok() {
                            self.channels.insert(name.clone(), None);
                            r.push("pusher_internal:subscription_succeeded", &name, "{}");
                        }
                    }
                }
            }
            Control::Unsubscribe { channel } => {
                if let Some(name) = self.app.pusher_channel(&channel).map(str::to_string) {
                    self.unsubscribe(&name).await;
                }
            }
            Control::Refresh { .. } | Control::Resubscribe { .. } | Control::StreamEnded { .. } => {}
        }
        r.output()
    }

    async fn timeout(&mut self, now: Now) -> Output {
        let mut r = Replies::default();
        if let Some(sent) = self.ping_sent {
            if now.mono >= sent + PONG_TIMEOUT {
                r.close = Some((code::PONG_TIMEOUT, "pong reply not received".into()));
                return r.output();
            }
        } else if now.mono >= self.last_seen + ACTIVITY_TIMEOUT {
            self.ping_sent = Some(now.mono);
            r.push("pusher:ping", "", "{}");
        }
        if now.mono >= self.presence_refresh {
            self.presence_refresh = now.mono + PRESENCE_REFRESH;
            let members = self.channels.iter().filter_map(|(name, m)| Some((name, m.as_ref()?)));
            for (name, m) in members {
                let ch = self.app.hub_channel(name);
                let _ = self.node.presence.add_presence(&ch, &self.socket_id, m.info.clone()).await;
            }
        }
        r.output()
    }

    fn next_deadline(&self) -> Instant {
        let ping = match self.ping_sent {
            Some(sent) => sent + PONG_TIMEOUT,
            None => self.last_seen + ACTIVITY_TIMEOUT,
        };
        if self.channels.values().any(Option::is_some) {
            ping.min(self.presence_refresh)
        } else {
            ping
        }
    }

    async fn end(&mut self) {
        if self.state == State::Closed {
            return;
        }
        self.state = State::Closed;
        let names: Vec<String> = self.channels.keys().cloned().collect();
        for name in names {
            self.unsubscribe(&name).await;
        }
        self.node.unregister(&self.registered, &self.socket_id);
    }
}

/// `pusher_internal:subscription_succeeded`'s data on a presence channel: the members by
/// user, once each.
fn presence_data(present: &HashMap<String, ClientInfo>) -> Value {
    let mut hash = serde_json::Map::new();
    for i in present.values() {
        let info = serde_json::from_slice::<Value>(&i.chan_info).unwrap_or(Value::Null);
        hash.insert(i.user.clone(), info);
    }
    let ids: Vec<&String> = hash.keys().collect();
    serde_json::json!({ "presence": { "ids": ids, "hash": hash, "count": hash.len() } })
}

impl crate::transport::Dialect for PusherSession {
    fn state(&self) -> State {
        self.state
    }
    fn client_id(&self) -> &str {
        &self.socket_id
    }
    fn user(&self) -> &str {
        &self.user
    }
    async fn handle_frame(&mut self, data: Bytes, now: Now) -> Output {
        self.frame(data, now).await
    }
    async fn handle_control(&mut self, control: Control, _now: Now) -> Output {
        self.control(control).await
    }
    async fn handle_timeout(&mut self, now: Now) -> Output {
        self.timeout(now).await
    }
    fn poll_timeout(&self) -> Option<Instant> {
        (self.state != State::Closed).then(|| self.next_deadline())
    }
    async fn close(&mut self) {
        self.end().await
    }
}
