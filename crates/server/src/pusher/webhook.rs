//! Pusher webhooks: `channel_occupied`, `channel_vacated`, `member_added`,
//! `member_removed`, `client_event`, `cache_miss`, POSTed to each of an app's `webhooks` URLs as
//! `{"time_ms":…,"events":[…]}` with `X-Pusher-Key` and `X-Pusher-Signature`
//! (hex HMAC-SHA256 of the body with the app secret).
//!
//! Events are batched for [`BATCH_WINDOW`] and a failed POST is retried with backoff.
//! Occupancy and membership are judged for the cluster, not the node, after
//! [`DEBOUNCE`]: when a channel is vacated here, `channel_vacated` goes out only if no node
//! has a subscriber after the delay, and a channel vacated and occupied again within it
//! sends neither (a reconnect storm or a node restart does not flood the backend with
//! pairs). `member_removed` is judged the same way on the engine's presence.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::mpsc;
use wshub_core::engine::Joined;
use wshub_core::node::Node;
use wshub_protocol::ClientInfo;

use super::PusherApp;
use crate::cluster::Cluster;
use crate::proxy::Connector;

/// Events gathered into one POST.
pub const BATCH_WINDOW: Duration = Duration::from_millis(250);
/// The delay before a vacated channel or a removed member is reported, and checked again.
pub const DEBOUNCE: Duration = Duration::from_secs(2);
/// Attempts of one POST, the first included.
const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const POST_TIMEOUT: Duration = Duration::from_secs(5);

/// One event, as the session reports it.
pub enum Hook<'a> {
    Occupied(&'a str),
    Vacated(&'a str),
    MemberAdded(&'a str, &'a str),
    MemberRemoved(&'a str, &'a str),
    /// A subscription to a cache channel found no cached event.
    CacheMiss(&'a str),
    ClientEvent {
        channel: &'a str,
        event: &'a str,
        data: &'a Value,
        socket_id: &'a str,
        user: Option<&'a str>,
    },
}

enum Job {
    Now(Arc<PusherApp>, Value),
    /// An occupation, vacated channel or removed member, to check for the cluster first
    /// (after [`DEBOUNCE`] for the last two).
    Later(Arc<PusherApp>, Value),
}

/// What the sender's task takes when it starts.
type Idle = (mpsc::UnboundedReceiver<Job>, Arc<Node>, Arc<Cluster>);
/// Per app id: the app and the events waiting for its next POST.
type Pending = Arc<Mutex<HashMap<String, (Arc<PusherApp>, Vec<Value>)>>>;

/// The sender of every app's webhooks on this node.
pub struct Webhooks {
    tx: mpsc::UnboundedSender<Job>,
    /// The sender's task's parts until the first event starts it (the server is built
    /// before its runtime runs).
    idle: Mutex<Option<Idle>>,
}

impl Webhooks {
    pub fn new(node: Arc<Node>, cluster: Arc<Cluster>) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        Arc::new(Webhooks {
            tx,
            idle: Mutex::new(Some((rx, node, cluster))),
        })
    }

    fn start(&self) {
        let Some((rx, node, cluster)) = self.idle.lock().take() else {
            return;
        };
        match Connector::new(None) {
            Ok(c) => {
                let client = Client::builder(TokioExecutor::new()).build(c);
                tokio::spawn(run(rx, self.tx.clone(), node, cluster, client));
            }
            Err(e) => tracing::warn!(error = %e, "pusher webhooks: no HTTP client"),
        }
    }

    pub fn send(&self, app: &Arc<PusherApp>, hook: Hook<'_>) {
        if app.webhooks.is_empty() {
            return;
        }
        self.start();
        let (later, event) = match hook {
            Hook::Occupied(c) => (true, serde_json::json!({"name": "channel_occupied", "channel": c})),
            Hook::Vacated(c) => (true, serde_json::json!({"name": "channel_vacated", "channel": c})),
            Hook::MemberAdded(c, u) => (false, serde_json::json!({"name": "member_added", "channel": c, "user_id": u})),
            Hook::MemberRemoved(c, u) => (true, serde_json::json!({"name": "member_removed", "channel": c, "user_id": u})),
            Hook::CacheMiss(c) => (false, serde_json::json!({"name": "cache_miss", "channel": c})),
            Hook::ClientEvent {
                channel,
                event,
                data,
                socket_id,
                user,
            } => {
                let mut e = serde_json::json!({
                    "name": "client_event", "channel": channel, "event": event,
                    "data": data.to_string(), "socket_id": socket_id,
                });
                if let (Some(u), Some(m)) = (user, e.as_object_mut()) {
                    m.insert("user_id".into(), u.into());
                }
                (false, e)
            }
        };
        let job = if later {
            Job::Later(app.clone(), event)
        } else {
            Job::Now(app.clone(), event)
        };
        let _ = self.tx.send(job);
    }
}

type Http = Client<Connector, Full<Bytes>>;

async fn run(mut rx: mpsc::UnboundedReceiver<Job>, tx: mpsc::UnboundedSender<Job>, node: Arc<Node>, cluster: Arc<Cluster>, client: Http) {
    let pending: Pending = Arc::default();
    // Hub channels vacated here whose check is not done: an occupation meanwhile is the
    // same occupation going on, not news.
    let vacating: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    while let Some(job) = rx.recv().await {
        match job {
            Job::Later(app, event) => {
                let (node, cluster, tx, vacating) = (node.clone(), cluster.clone(), tx.clone(), vacating.clone());
                let name = event.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
                let ch = app.hub_channel(event.get("channel").and_then(Value::as_str).unwrap_or_default());
                let vacated = name == "channel_vacated";
                if vacated {
                    // Here, in the order of the jobs: an occupation queued after it sees it.
                    *vacating.lock().entry(ch.clone()).or_insert(0) += 1;
                }
                match name.as_str() {
                    "channel_occupied" => tokio::spawn(async move {
                        let resumed = vacating.lock().contains_key(&ch);
                        // Occupied for the cluster only if every subscriber is here.
                        let here = node.hub.num_subscribers(&ch);
                        let everywhere = cluster.channels(&ch).await.map_or(here, |c| c.get(&ch).copied().unwrap_or(0));
                        if !resumed && everywhere <= here && claim(&node, &ch, Claim::Occupied).await {
                            let _ = tx.send(Job::Now(app, event));
                        }
                    }),
                    _ => tokio::spawn(async move {
                        tokio::time::sleep(DEBOUNCE).await;
                        if vacated {
                            let mut v = vacating.lock();
                            if let Some(n) = v.get_mut(&ch) {
                                *n -= 1;
                                if *n == 0 {
                                    v.remove(&ch);
                                }
                            }
                        }
                        if still_gone(&node, &cluster, &app, &event).await && (!vacated || claim(&node, &ch, Claim::Vacated).await) {
                            let _ = tx.send(Job::Now(app, event));
                        }
                    }),
                };
            }
            Job::Now(app, event) => {
                let first = {
                    let mut p = pending.lock();
                    let e = p.entry(app.id.clone()).or_insert_with(|| (app.clone(), Vec::new()));
                    e.1.push(event);
                    e.1.len() == 1
                };
                if first {
                    let (pending, client, id) = (pending.clone(), client.clone(), app.id.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep(BATCH_WINDOW).await;
                        let Some((app, events)) = pending.lock().remove(&id) else { return };
                        deliver(&client, &app, events).await;
                    });
                }
            }
        }
    }
}

/// The presence entry that says a channel's occupation or vacancy has been reported:
/// nodes whose first (last) subscribers came (left) at about the same time each find the
/// channel newly occupied (empty), and the one whose claim is first reports it ([`claim`]).
const CLAIMANT: &str = "wshub-webhook";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Claim {
    Occupied,
    Vacated,
}

/// The claim's presence "channel": no client channel name holds `\u{1}`.
fn claim_key(ch: &str, kind: Claim) -> String {
    match kind {
        Claim::Occupied => format!("{ch}\u{1}occupied"),
        Claim::Vacated => format!("{ch}\u{1}vacated"),
    }
}

/// Whether this node is the one to report `ch` occupied or vacated: the engine adds the
/// claim in one step, so of several nodes exactly one finds it new. Nodes that find the
/// same change check within [`DEBOUNCE`] of each other (a node whose subscriber came or
/// left later than another's check was seen by that check), so the claim is held twice as
/// long, then taken back; the opposite claim is taken back at once (the next vacancy after
/// an occupation is news again). A node that dies holding it leaves it to the engine's
/// presence expiry. An engine error reports (a duplicate is better than a lost event).
async fn claim(node: &Arc<Node>, ch: &str, kind: Claim) -> bool {
    let info = ClientInfo {
        client: CLAIMANT.into(),
        ..Default::default()
    };
    let key = claim_key(ch, kind);
    match node.presence.join_presence(&key, CLAIMANT, info, 0).await {
        Ok(Joined::Again | Joined::Another) => false,
        Ok(_) => {
            let other = claim_key(ch, if kind == Claim::Occupied { Claim::Vacated } else { Claim::Occupied });
            let _ = node.presence.remove_presence(&other, CLAIMANT).await;
            let node = node.clone();
            tokio::spawn(async move {
                tokio::time::sleep(2 * DEBOUNCE).await;
                let _ = node.presence.remove_presence(&key, CLAIMANT).await;
            });
            true
        }
        Err(_) => true,
    }
}

/// Whether a vacated channel has no subscriber on any node, or a removed member no socket
/// in the channel, after the debounce.
async fn still_gone(node: &Node, cluster: &Cluster, app: &PusherApp, event: &Value) -> bool {
    let channel = event.get("channel").and_then(Value::as_str).unwrap_or_default();
    let ch = app.hub_channel(channel);
    match event.get("user_id").and_then(Value::as_str) {
        Some(user) => match node.presence.presence(&ch).await {
            Ok(p) => !p.values().any(|i| i.user == user),
            Err(_) => true,
        },
        None => match cluster.channels(&ch).await {
            Ok(c) => c.get(&ch).copied().unwrap_or(0) == 0,
            Err(_) => node.hub.num_subscribers(&ch) == 0,
        },
    }
}

async fn deliver(client: &Http, app: &PusherApp, events: Vec<Value>) {
    let time_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let body = Bytes::from(serde_json::json!({ "time_ms": time_ms, "events": events }).to_string());
    let signature = super::hmac_hex(&app.secret, &body);
    for url in &app.webhooks {
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            match post(client, url, &app.key, &signature, body.clone()).await {
                Ok(()) => break,
                Err(e) if attempt == ATTEMPTS => {
                    tracing::warn!(app = %app.id, %url, error = %e, "pusher webhook dropped after {ATTEMPTS} attempts");
                }
                Err(e) => {
                    tracing::debug!(app = %app.id, %url, error = %e, attempt, "pusher webhook failed, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
            }
        }
    }
}

async fn post(client: &Http, url: &str, key: &str, signature: &str, body: Bytes) -> Result<(), String> {
    let req = http::Request::builder()
        .method(http::Method::POST)
        .uri(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("X-Pusher-Key", key)
        .header("X-Pusher-Signature", signature)
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(POST_TIMEOUT, client.request(req)).await {
        Err(_) => Err("timeout".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(r)) if r.status().is_success() => Ok(()),
        Ok(Ok(r)) => Err(format!("HTTP status {}", r.status().as_u16())),
    }
}
