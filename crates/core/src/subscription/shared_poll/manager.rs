//! The node's shared poll channels: tracking on behalf of sessions, the backend calls the
//! server's driver makes when [`SharedPoll::take_due`] says so, and the pushes.
//!
//! The driver (the server crate, which owns the clock and the tasks) sleeps until
//! [`SharedPoll::next_deadline`] or a wake-up, takes the due requests and runs each with
//! [`refresh`], at most `shared_poll.concurrency_limit` at once across channels. A backend
//! failure (timeout, refused, non-2xx, garbage, an `error`) skips that request: the next
//! cycle asks again. It is counted in `wshub_shared_poll_refresh_total{outcome}`.
//!
//! Direct publications (`shared_poll_publish`) travel through the broker on a channel per
//! key ([`super::key_channel`]), to which a node subscribes while one of its connections
//! tracks the key, so that each node hears only of keys its own connections track.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::value::RawValue;
use wshub_protocol::{codes, Publication, Push};

use super::state::{Answered, ChannelState, Delivery, Item, LimitExceeded, Poll, Recipient, Tracked};
use super::{key_channel, SharedPollOptions};
use crate::connection::{ConnectionHandle, Control, Encoding};
use crate::prepared::{Dialect, PreparedData};

type Handle = Arc<dyn ConnectionHandle>;

/// How often tracked keys are checked for expired signatures.
const EXPIRY_CHECK: Duration = Duration::from_secs(1);

/// The shared poll channels of one node.
pub struct SharedPoll {
    channels: Mutex<HashMap<String, ChannelState<Handle>>>,
    /// The versionless epoch a subscriber gets before its channel has state.
    epoch: String,
    /// Key channels this node is subscribed to in the broker.
    key_channels: Mutex<HashSet<String>>,
    wake: OnceLock<Arc<dyn Fn() + Send + Sync>>,
    last_expiry: Mutex<Option<Instant>>,
}

impl Default for SharedPoll {
    fn default() -> Self {
        SharedPoll {
            channels: Mutex::new(HashMap::new()),
            epoch: new_epoch(),
            key_channels: Mutex::new(HashSet::new()),
            wake: OnceLock::new(),
            last_expiry: Mutex::new(None),
        }
    }
}

/// Eight random letters, as Centrifugo's epochs.
pub fn new_epoch() -> String {
    use rand::Rng;
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = rand::thread_rng();
    (0..8).map(|_| char::from(LETTERS[rng.gen_range(0..LETTERS.len())])).collect()
}

/// Requests due, and keys whose broker subscriptions can go.
#[derive(Default)]
pub struct Due {
    pub polls: Vec<(String, Poll)>,
    /// (channel, key) pairs nobody tracks any more.
    pub gone: Vec<(String, String)>,
}

impl SharedPoll {
    /// Called when a request may have become due earlier than the driver's deadline
    /// (once; later calls are ignored).
    pub fn set_waker(&self, wake: Arc<dyn Fn() + Send + Sync>) {
        let _ = self.wake.set(wake);
    }

    /// Whether a driver is attached.
    pub fn has_waker(&self) -> bool {
        self.wake.get().is_some()
    }

    fn wake(&self) {
        if let Some(w) = self.wake.get() {
            w();
        }
    }

    /// The epoch a subscribe answers with: the channel's, or, for a versionless channel
    /// with no state yet, the node's.
    pub fn epoch(&self, channel: &str, opts: &SharedPollOptions) -> String {
        match self.channels.lock().get(channel) {
            Some(s) => s.epoch().to_string(),
            None if opts.mode.is_versioned() => String::new(),
            None => self.epoch.clone(),
        }
    }

    /// Tracks `items` (key, version held, signature expiry) for `conn`; see
    /// [`ChannelState::track`].
    #[allow(clippy::too_many_arguments)]
    pub fn track(
        &self,
        channel: &str,
        opts: &SharedPollOptions,
        conn: &Handle,
        delta: bool,
        items: &[(String, u64, i64)],
        untrack: &[String],
        now: Instant,
    ) -> Result<Tracked, LimitExceeded> {
        let r = {
            let mut channels = self.channels.lock();
            let s = channels.entry(channel.to_string()).or_insert_with(|| {
                let epoch = if opts.mode.is_versioned() { String::new() } else { new_epoch() };
                ChannelState::new(opts.clone(), epoch, now)
            });
            let r = s.track(conn.id(), conn, delta, items, untrack);
            s.note_empty(now);
            r
        };
        self.wake();
        r
    }

    /// `conn` stops tracking `keys`; the keys nobody tracks any more.
    pub fn untrack(&self, channel: &str, conn: u64, keys: &[String], now: Instant) -> Vec<String> {
        let mut channels = self.channels.lock();
        let Some(s) = channels.get_mut(channel) else { return Vec::new() };
        let gone = s.untrack(conn, keys);
        s.note_empty(now);
        gone
    }

    /// `conn` leaves the channel; the keys nobody tracks any more.
    pub fn remove_conn(&self, channel: &str, conn: u64, now: Instant) -> Vec<String> {
        let mut channels = self.channels.lock();
        let Some(s) = channels.get_mut(channel) else { return Vec::new() };
        let gone = s.remove_conn(conn);
        s.note_empty(now);
        gone
    }

    /// Keys tracked on this node, over every channel (metrics, benchmarks).
    pub fn num_keys(&self) -> usize {
        self.channels.lock().values().map(ChannelState::num_keys).sum()
    }

    /// The requests due at `now` (Unix time `unix` for signature expiry), dropping
    /// channels nobody has tracked for their `channel_shutdown_delay`.
    pub fn take_due(&self, now: Instant, unix: i64) -> Due {
        let expire = {
            let mut last = self.last_expiry.lock();
            let due = last.is_none_or(|l| now >= l + EXPIRY_CHECK);
            if due {
                *last = Some(now);
            }
            due
        };
        let mut out = Due::default();
        let mut channels = self.channels.lock();
        channels.retain(|ch, s| {
            if expire {
                out.gone.extend(s.expire(unix).into_iter().map(|k| (ch.clone(), k)));
                s.note_empty(now);
            }
            if s.is_idle(now) {
                return false;
            }
            let dropped = std::mem::take(&mut s.dropped_notifications);
            if dropped > 0 {
                metrics::counter!("wshub_shared_poll_notifications_dropped_total").increment(dropped);
            }
            out.polls.extend(s.take_due(now).into_iter().map(|p| (ch.clone(), p)));
            true
        });
        metrics::gauge!("wshub_shared_poll_keys").set(channels.values().map(ChannelState::num_keys).sum::<usize>() as f64);
        out
    }

    /// When something is due next.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let channels = self.channels.lock();
        let mut d = channels.values().filter_map(|s| s.next_deadline(now)).min();
        if channels.values().any(|s| s.num_keys() > 0) {
            d = Some(d.map_or(now + EXPIRY_CHECK, |d| d.min(now + EXPIRY_CHECK)));
        }
        d
    }

    fn polled(&self, channel: &str, notified: bool) {
        if let Some(s) = self.channels.lock().get_mut(channel) {
            s.polled(notified);
        }
        self.wake();
    }

    /// Applies an answer or a publication under the lock, then pushes outside it.
    fn apply(&self, channel: &str, epoch: &str, answered: Vec<Answered>, fresh: bool) -> Vec<String> {
        let applied = {
            let mut channels = self.channels.lock();
            let Some(s) = channels.get_mut(channel) else { return Vec::new() };
            let applied = s.apply(epoch, answered, fresh);
            s.note_empty(Instant::now());
            applied
        };
        metrics::counter!("wshub_shared_poll_items_total", "result" => "changed").increment(applied.changed as u64);
        metrics::counter!("wshub_shared_poll_items_total", "result" => "unchanged").increment(applied.unchanged as u64);
        for d in &applied.deliveries {
            deliver(channel, d);
        }
        for h in &applied.resubscribe {
            h.control(Control::Resubscribe {
                channel: channel.to_string(),
            });
        }
        applied.gone
    }

    /// Whether this node listens to the broker channel `name` for a tracked key.
    pub fn is_key_channel(&self, name: &str) -> bool {
        self.key_channels.lock().contains(name)
    }

    /// A direct publication heard from the broker on a key channel.
    pub fn handle_published(&self, channel: &str, key: &str, p: &Publication) {
        let a = Answered {
            key: key.to_string(),
            data: p.data.clone(),
            prev_data: p.prev_data.clone(),
            version: p.version,
            removed: false,
        };
        self.apply(channel, &p.epoch, vec![a], true);
    }
}

/// Pushes one key's change to its recipients, each form encoded once per encoding.
fn deliver(channel: &str, d: &Delivery<Handle>) {
    let base = Publication {
        key: d.key.clone(),
        data: d.data.clone(),
        version: d.version,
        removed: d.removed,
        ..Default::default()
    };
    let mut cache: Vec<((Encoding, Recipient), Option<PreparedData>)> = Vec::new();
    for (h, how) in &d.to {
        let enc = h.encoding();
        if enc.dialect != Dialect::Centrifugo {
            continue;
        }
        let slot = match cache.iter().position(|(k, _)| *k == (enc, *how)) {
            Some(i) => i,
            None => {
                let p = match how {
                    Recipient::Plain => Some(base.clone()),
                    Recipient::Whole => crate::delta::whole(&base, enc.format),
                    Recipient::Delta => d
                        .patch
                        .as_ref()
                        .and_then(|patch| crate::delta::as_delta(&base, patch, enc.format))
                        .or_else(|| crate::delta::whole(&base, enc.format)),
                };
                let prepared = p.and_then(|p| {
                    let push = Push {
                        channel: channel.to_string(),
                        r#pub: Some(p),
                        ..Default::default()
                    };
                    let bytes = match enc.unidirectional {
                        true => wshub_protocol::codec::bare_push_bytes(enc.format, &push),
                        false => wshub_protocol::codec::push_bytes(enc.format, push),
                    };
                    bytes.ok().map(PreparedData::new)
                });
                cache.push(((enc, *how), prepared));
                cache.len() - 1
            }
        };
        if let Some((_, Some(p))) = cache.get(slot) {
            h.deliver(p);
        }
    }
}

/// One item of a backend answer.
#[derive(Deserialize, Default)]
#[serde(default)]
struct AnswerItem {
    key: String,
    data: Option<Box<RawValue>>,
    b64data: String,
    prev_data: Option<Box<RawValue>>,
    b64prev_data: String,
    version: u64,
    removed: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AnswerResult {
    items: Vec<AnswerItem>,
    epoch: String,
}

#[derive(Deserialize)]
struct Envelope {
    result: Option<AnswerResult>,
    error: Option<crate::proxy::BackendError>,
}

#[derive(serde::Serialize)]
struct RequestItem<'a> {
    key: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    version: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(serde::Serialize)]
struct Request<'a> {
    channel: &'a str,
    items: Vec<RequestItem<'a>>,
}

/// Why a refresh brought nothing.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error("no shared_poll_refresh proxy {0:?}")]
    NoProxy(String),
    #[error("{0}")]
    Transport(#[from] crate::proxy::ProxyFailure),
    #[error("backend error {0}: {1}")]
    Backend(u32, String),
    #[error("bad data in the answer")]
    BadData,
}

impl RefreshError {
    fn outcome(&self) -> &'static str {
        match self {
            RefreshError::NoProxy(_) => "no_proxy",
            RefreshError::Transport(f) => f.outcome(),
            RefreshError::Backend(..) => "error",
            RefreshError::BadData => "garbage",
        }
    }
}

fn bytes_of(raw: &Option<Box<RawValue>>, b64: &str) -> Result<Bytes, RefreshError> {
    crate::proxy::raw_or_b64(raw, b64)
        .map(|b| b.filter(|b| b.as_ref() != b"null").unwrap_or_default())
        .map_err(|_| RefreshError::BadData)
}

/// Asks the backend about one request of [`SharedPoll::take_due`] and pushes what changed.
pub async fn refresh(node: &crate::node::Node, channel: &str, poll: Poll) {
    let kind = if poll.notified { "notification" } else { "timer" };
    let started = Instant::now();
    let r = ask(node, channel, &poll.items).await;
    let outcome = match r {
        Ok((epoch, answered)) => {
            let gone = node.shared_poll.apply(channel, &epoch, answered, false);
            node.shared_poll_unsubscribe(channel, &gone).await;
            "ok"
        }
        Err(e) => {
            tracing::warn!(channel, error = %e, "shared poll refresh failed: skipped until the next cycle");
            e.outcome()
        }
    };
    metrics::counter!("wshub_shared_poll_refresh_total", "kind" => kind, "outcome" => outcome).increment(1);
    metrics::histogram!("wshub_shared_poll_refresh_duration_seconds", "kind" => kind).record(started.elapsed().as_secs_f64());
    node.shared_poll.polled(channel, poll.notified);
}

async fn ask(node: &crate::node::Node, channel: &str, items: &[Item]) -> Result<(String, Vec<Answered>), RefreshError> {
    let opts = node.options(channel).map(|o| o.shared_poll.clone()).unwrap_or_default();
    let name = opts.proxy();
    let ep = node
        .proxies
        .shared_poll(name)
        .ok_or_else(|| RefreshError::NoProxy(name.to_string()))?;
    let transport = node.proxy_transport().ok_or_else(|| RefreshError::NoProxy(name.to_string()))?;
    let body = Request {
        channel,
        items: items.iter().map(|(key, version)| RequestItem { key, version: *version }).collect(),
    };
    let body = serde_json::to_vec(&body).map_err(|_| RefreshError::BadData)?;
    let started = Instant::now();
    let r = transport.post(ep, &[], body).await;
    let took = started.elapsed();
    let env = r.and_then(|b| serde_json::from_slice::<Envelope>(&b).map_err(|e| crate::proxy::ProxyFailure::Garbage(e.to_string())));
    let (protocol, kind) = (ep.protocol(), ep.kind.as_str());
    let env = match env {
        Ok(e) => e,
        Err(f) => {
            crate::series::proxy_call(protocol, kind, &ep.name, took, f.outcome());
            return Err(f.into());
        }
    };
    if let Some(e) = env.error {
        crate::series::proxy_call(protocol, kind, &ep.name, took, "error");
        return Err(RefreshError::Backend(e.code, e.message));
    }
    crate::series::proxy_call(protocol, kind, &ep.name, took, "ok");
    let result = env.result.unwrap_or_default();
    let mut answered = Vec::with_capacity(result.items.len().min(items.len()));
    for i in result.items {
        answered.push(Answered {
            data: bytes_of(&i.data, &i.b64data)?,
            prev_data: bytes_of(&i.prev_data, &i.b64prev_data)?,
            key: i.key,
            version: i.version,
            removed: i.removed,
        });
    }
    Ok((result.epoch, answered))
}

impl crate::node::Node {
    /// Subscribes this node to the broker channels of `keys` newly tracked in a channel
    /// that takes direct publications.
    pub async fn shared_poll_subscribe(&self, channel: &str, keys: &[String]) -> Result<(), crate::engine::EngineError> {
        for k in keys {
            let name = key_channel(channel, k);
            if !self.shared_poll.key_channels.lock().insert(name.clone()) {
                continue;
            }
            if let Err(e) = self.broker.subscribe(&name).await {
                self.shared_poll.key_channels.lock().remove(&name);
                return Err(e);
            }
        }
        Ok(())
    }

    /// The broker subscriptions of keys nobody tracks any more go.
    pub async fn shared_poll_unsubscribe(&self, channel: &str, keys: &[String]) {
        for k in keys {
            let name = key_channel(channel, k);
            if self.shared_poll.key_channels.lock().remove(&name) {
                let _ = self.broker.unsubscribe(&name).await;
            }
        }
    }

    /// The server API's `shared_poll_publish`: a key's new version, sent to every node
    /// whose connections track it.
    pub async fn shared_poll_publish(
        &self,
        channel: &str,
        key: &str,
        version: u64,
        epoch: &str,
        data: Bytes,
    ) -> Result<(), crate::error::ApiError> {
        use crate::error::ApiError;
        if channel.is_empty() || key.is_empty() || version == 0 {
            return Err(ApiError::BadRequest("channel, key and version are required".into()));
        }
        let opts = self.options(channel)?;
        if opts.subscription_type != crate::subscription::SubscriptionType::SharedPoll {
            return Err(ApiError::BadRequest("not a shared poll channel".into()));
        }
        if !opts.shared_poll.publish_enabled {
            return Err(ApiError::not_available());
        }
        let p = Publication {
            data,
            key: key.to_string(),
            version,
            epoch: epoch.to_string(),
            ..Default::default()
        };
        self.broker
            .publish(&key_channel(channel, key), p, &crate::engine::PublishOptions::default())
            .await
            .map(drop)
            .map_err(ApiError::from)
    }
}

/// The unsubscribe code an epoch change sends (the SDK subscribes again at once).
pub const RESUBSCRIBE_CODE: u32 = codes::unsubscribe::INSUFFICIENT_STATE;
