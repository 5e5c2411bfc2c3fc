//! The cluster as the server API sees it: node discovery (announcements every few seconds,
//! [`wshub_core::cluster`]), API calls that act on users sent to every node, and the
//! `channels` survey, whose replies are awaited here with a deadline.
//!
//! The engine carries the messages ([`NodeControl`]); with the memory engine the cluster is
//! this one node and every message comes straight back.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::mpsc;
use wshub_core::cluster::{ConnectionSummary, ControlHandler, ControlMessage, NodeControl, Peers, ANNOUNCE_INTERVAL};
use wshub_core::node::{ApiError, Node, NodeInfo, NodeMetrics, NodeProcess};

/// How long a `channels` survey waits for the other nodes' replies.
pub const SURVEY_TIMEOUT: Duration = Duration::from_secs(3);

/// `channels` walks computed at once on the blocking pool; more wait their turn.
static CHANNELS_AT_ONCE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// A node's answer to a survey.
enum SurveyReply {
    Channels(Vec<(String, usize)>),
    Connections(Vec<ConnectionSummary>),
}

/// One survey's replies as they arrive: (node uid, its answer).
type SurveyReplies = mpsc::UnboundedSender<(String, SurveyReply)>;

/// This node's view of the cluster.
pub struct Cluster {
    pub node: Arc<Node>,
    control: Arc<dyn NodeControl>,
    peers: Mutex<Peers>,
    surveys: Mutex<HashMap<u64, SurveyReplies>>,
    next_survey: AtomicU64,
    started: AtomicBool,
    /// Set by [`Cluster::leave`]: announcements stop.
    left: AtomicBool,
    /// This node's emulated sessions (HTTP-streaming, SSE): where their `/emulation`
    /// commands go.
    emulation: Mutex<HashMap<String, mpsc::Sender<bytes::Bytes>>>,
    /// This node's `metrics` and `process` for `info`.
    observed: Mutex<Observed>,
    /// The Graphite exporter, started with the announcements.
    graphite: Mutex<Option<crate::graphite::Settings>>,
}

/// This node's aggregated metrics ([`crate::metrics::info`]) and process figures.
struct Observed {
    interval: Duration,
    aggregator: crate::metrics::info::Aggregator,
    process: crate::metrics::info::ProcessSampler,
    /// When the next aggregation is due; `None`: at the next announcement (the first).
    next: Option<Instant>,
    metrics: Option<NodeMetrics>,
    last_process: Option<NodeProcess>,
}

/// Where an `/emulation` request went.
#[derive(Debug, PartialEq, Eq)]
pub enum Routed {
    /// To a session of this node.
    Local,
    /// Through the engine to the node that holds the session.
    Forwarded,
    /// No such session on this node (and the request names this node, or none).
    Unknown,
    /// The session has too many commands waiting.
    Full,
}

/// The node's way to [`Cluster::disconnect`] (weak: the cluster holds the node).
struct UserActions(Weak<Cluster>);

impl wshub_core::node::UserActions for UserActions {
    fn disconnect_everywhere(&self, user: &str, whitelist: Vec<String>, code: u16, reason: &str) {
        let (Some(c), Ok(rt)) = (self.0.upgrade(), tokio::runtime::Handle::try_current()) else {
            return;
        };
        let (user, reason) = (user.to_string(), reason.to_string());
        rt.spawn(async move {
            if let Err(e) = c.disconnect(&user, "", &whitelist, code, &reason).await {
                tracing::warn!(error = %e, "single_connection: the other nodes were not told");
            }
        });
    }
}

/// The engine's handle on the cluster: weak, so that a stopped server's cluster goes away.
struct Handler(Weak<Cluster>);

impl ControlHandler for Handler {
    fn handle_control(&self, data: &[u8]) {
        if let Some(c) = self.0.upgrade() {
            c.handle_control(data);
        }
    }
}

impl Cluster {
    /// Registers with `control` (the engine) as the handler of control messages.
    pub fn new(node: Arc<Node>, control: Arc<dyn NodeControl>) -> Arc<Self> {
        let c = Arc::new(Cluster {
            node,
            control: control.clone(),
            peers: Mutex::new(Peers::default()),
            surveys: Mutex::new(HashMap::new()),
            next_survey: AtomicU64::new(1),
            started: AtomicBool::new(false),
            emulation: Mutex::new(HashMap::new()),
            left: AtomicBool::new(false),
            observed: Mutex::new(Observed {
                interval: Duration::from_secs(60),
                aggregator: Default::default(),
                process: Default::default(),
                next: None,
                metrics: None,
                last_process: None,
            }),
            graphite: Mutex::new(None),
        });
        control.set_control_handler(Arc::new(Handler(Arc::downgrade(&c))));
        c.node.set_user_actions(Arc::new(UserActions(Arc::downgrade(&c))));
        c
    }

    /// Starts announcing this node (once; needs a tokio runtime). The task ends with the
    /// cluster.
    pub fn start(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::Relaxed) {
            return;
        }
        if let Some(g) = self.graphite.lock().take() {
            crate::graphite::spawn(g, Arc::downgrade(self));
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(ANNOUNCE_INTERVAL);
            loop {
                tick.tick().await;
                let Some(c) = weak.upgrade() else { return };
                if c.left.load(Ordering::Relaxed) {
                    return;
                }
                c.announce().await;
                let dropped = c.peers.lock().expire(Instant::now());
                for gone in dropped {
                    tracing::warn!(node = %gone.name, uid = %gone.uid, "node not heard from: dropped");
                    // Its clients' presence would linger until it expires, and nobody would
                    // hear them leave: the survivors take them out and push the leaves (the
                    // engine hands each entry to one survivor only).
                    match c.node.reap_node(&gone.uid).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(uid = %gone.uid, clients = n, "leaves pushed for a dead node's clients"),
                        Err(e) => tracing::warn!(uid = %gone.uid, error = %e, "dead node's presence not reaped"),
                    }
                }
            }
        });
    }

    /// Pushes the metrics to Graphite once started.
    pub fn set_graphite(&self, settings: crate::graphite::Settings) {
        *self.graphite.lock() = Some(settings);
    }

    /// `node.info_metrics_aggregate_interval` (zero: one minute, as centrifuge).
    pub fn set_info_metrics_interval(&self, interval: Duration) {
        self.observed.lock().interval = if interval.is_zero() { Duration::from_secs(60) } else { interval };
    }

    /// Tells the cluster this node's figures: the metrics only when a new aggregation
    /// interval closed (the others keep the last ones heard), the process figures each time.
    pub async fn announce(&self) {
        let now = Instant::now();
        let due = self.observed.lock().next.is_none_or(|at| now >= at);
        // Rendered outside the lock: the scrape-time gauges read the cluster's nodes.
        let text = due.then(|| crate::metrics::info::current_text(&self.node, self, false));
        let mut info = self.node.info();
        {
            let mut o = self.observed.lock();
            if let Some(text) = text {
                let interval = o.interval;
                let m = o.aggregator.snapshot(&text, interval.as_secs_f64());
                o.metrics = Some(m.clone());
                o.next = Some(now + interval);
                info.metrics = Some(m);
            }
            o.last_process = o.process.sample(now);
            info.process = o.last_process;
        }
        let msg = ControlMessage::Node { info };
        if let Err(e) = self.control.publish_control(msg.encode()).await {
            tracing::debug!(error = %e, "node announcement not sent");
        }
    }

    /// Stops announcing and tells the cluster this node stops, so that it is dropped at once.
    pub async fn leave(&self) {
        self.left.store(true, Ordering::Relaxed);
        let msg = ControlMessage::Shutdown {
            uid: self.node.uid().to_string(),
        };
        let _ = self.control.publish_control(msg.encode()).await;
    }

    async fn send(&self, msg: ControlMessage) -> Result<(), ApiError> {
        self.control.publish_control(msg.encode()).await.map_err(ApiError::from)
    }

    fn handle_control(self: &Arc<Self>, data: &[u8]) {
        let msg = match ControlMessage::decode(data) {
            Ok(m) => m,
            Err(e) => return tracing::warn!(error = %e, "undecodable control message"),
        };
        let node = &self.node;
        match msg {
            ControlMessage::Node { info } => {
                if info.uid != node.uid() {
                    self.peers.lock().handle_announce(info, Instant::now());
                }
            }
            ControlMessage::Shutdown { uid } => self.peers.lock().handle_shutdown(&uid),
            ControlMessage::Disconnect {
                user,
                client,
                whitelist,
                code,
                reason,
            } => node.disconnect_user(&user, &client, &whitelist, code, &reason),
            ControlMessage::Subscribe { user, channel, client } => {
                let _ = node.subscribe_user(&user, &channel, &client);
            }
            ControlMessage::Unsubscribe { user, channel, client } => {
                let _ = node.unsubscribe_user(&user, &channel, &client);
            }
            ControlMessage::Refresh { user, client, expire_at } => node.refresh_user(&user, &client, expire_at),
            ControlMessage::Channels { id, from, pattern } => {
                // Off the handler (the engine's pub/sub task) and off the async workers:
                // linear in this node's channels.
                let c = self.clone();
                tokio::spawn(async move {
                    // At most CHANNELS_AT_ONCE such walks at a time: each copies every
                    // channel name, and the blocking pool would run as many as asked.
                    let Ok(_permit) = CHANNELS_AT_ONCE.acquire().await else { return };
                    let node = c.node.clone();
                    let channels = tokio::task::spawn_blocking(move || node.channels(&pattern).unwrap_or_default())
                        .await
                        .unwrap_or_default();
                    let reply = ControlMessage::ChannelsReply {
                        id,
                        to: from,
                        from: c.node.uid().to_string(),
                        channels,
                    };
                    if let Err(e) = c.send(reply).await {
                        tracing::debug!(error = %e, "channels reply not sent");
                    }
                });
            }
            ControlMessage::ChannelsReply { id, to, from, channels } => {
                if to == node.uid() {
                    if let Some(tx) = self.surveys.lock().get(&id) {
                        let _ = tx.send((from, SurveyReply::Channels(channels)));
                    }
                }
            }
            ControlMessage::Emulation { node: to, session, data } => {
                if to == node.uid() {
                    let r = self.deliver_emulation(&session, bytes::Bytes::from(data));
                    if r != Routed::Local {
                        tracing::debug!(?r, "forwarded emulation request not delivered");
                    }
                }
            }
            ControlMessage::Connections { id, from, user } => {
                let connections = node
                    .user_clients(&user)
                    .into_iter()
                    .map(|c| ConnectionSummary {
                        client: c.client,
                        user: user.clone(),
                        protocol: match c.format {
                            wshub_protocol::Format::Json => "json".into(),
                            wshub_protocol::Format::Protobuf => "protobuf".into(),
                        },
                        transport: c.transport.into(),
                        channels: c.channels,
                    })
                    .collect();
                let reply = ControlMessage::ConnectionsReply {
                    id,
                    to: from,
                    from: node.uid().to_string(),
                    connections,
                };
                let c = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = c.send(reply).await {
                        tracing::debug!(error = %e, "connections reply not sent");
                    }
                });
            }
            ControlMessage::ConnectionsReply { id, to, from, connections } => {
                if to == node.uid() {
                    if let Some(tx) = self.surveys.lock().get(&id) {
                        let _ = tx.send((from, SurveyReply::Connections(connections)));
                    }
                }
            }
        }
    }

    /// Every live node's figures, this one's first.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let mut me = self.node.info();
        {
            let o = self.observed.lock();
            me.metrics = o.metrics.clone();
            me.process = o.last_process;
        }
        let mut v = vec![me.clone()];
        v.extend(self.peers.lock().others(&me.uid));
        v
    }

    /// The channels of every node matching `pattern`, with their subscribers summed over
    /// the nodes. Waits for every live node's reply, at most [`SURVEY_TIMEOUT`].
    pub async fn channels(&self, pattern: &str) -> Result<BTreeMap<String, usize>, ApiError> {
        // A bad pattern is refused here, before anything is sent.
        wshub_core::channel::ChannelPattern::new(pattern, self.node.live().channel.max_length)
            .map_err(|_| ApiError::bad_request("pattern too long"))?;
        let from = self.node.uid().to_string();
        let replies = self
            .survey("channels", |id| ControlMessage::Channels {
                id,
                from,
                pattern: pattern.to_string(),
            })
            .await?;
        let mut merged = BTreeMap::new();
        for r in replies {
            if let SurveyReply::Channels(channels) = r {
                for (ch, n) in channels {
                    *merged.entry(ch).or_insert(0) += n;
                }
            }
        }
        Ok(merged)
    }

    /// A user's connections on every node, with the uid of the node holding each. Waits for
    /// every live node's reply, at most [`SURVEY_TIMEOUT`].
    pub async fn connections(&self, user: &str) -> Result<Vec<(String, ConnectionSummary)>, ApiError> {
        let from = self.node.uid().to_string();
        let mut out = Vec::new();
        let id_user = user.to_string();
        let replies = self
            .survey_from("connections", |id| ControlMessage::Connections { id, from, user: id_user })
            .await?;
        for (node, r) in replies {
            if let SurveyReply::Connections(c) = r {
                out.extend(c.into_iter().map(|c| (node.clone(), c)));
            }
        }
        out.sort_by(|a, b| a.1.client.cmp(&b.1.client));
        Ok(out)
    }

    async fn survey(&self, what: &'static str, msg: impl FnOnce(u64) -> ControlMessage) -> Result<Vec<SurveyReply>, ApiError> {
        Ok(self.survey_from(what, msg).await?.into_iter().map(|(_, r)| r).collect())
    }

    /// Sends `msg` (made with the survey's id) to every node and gathers one reply per live
    /// node, each with the uid of the node that sent it.
    async fn survey_from(
        &self,
        what: &'static str,
        msg: impl FnOnce(u64) -> ControlMessage,
    ) -> Result<Vec<(String, SurveyReply)>, ApiError> {
        let mut expected: HashSet<String> = self.peers.lock().others(self.node.uid()).into_iter().map(|i| i.uid).collect();
        expected.insert(self.node.uid().to_string());
        let started = std::time::Instant::now();
        let id = self.next_survey.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.surveys.lock().insert(id, tx);
        let _forget = Forget(self, id);
        self.send(msg(id)).await?;
        let mut replies = Vec::new();
        let deadline = tokio::time::Instant::now() + SURVEY_TIMEOUT;
        while !expected.is_empty() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((from, reply))) => {
                    if expected.remove(&from) {
                        replies.push((from, reply));
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    if expected.contains(self.node.uid()) {
                        return Err(ApiError::Internal(format!("{what}: this node's own reply did not arrive")));
                    }
                    tracing::warn!(missing = expected.len(), "{what}: nodes did not answer in time");
                    break;
                }
            }
        }
        wshub_core::series::survey(what, started.elapsed());
        Ok(replies)
    }

    pub fn register_emulation(&self, session: &str, commands: mpsc::Sender<bytes::Bytes>) {
        self.emulation.lock().insert(session.to_string(), commands);
    }

    pub fn unregister_emulation(&self, session: &str) {
        self.emulation.lock().remove(session);
    }

    fn deliver_emulation(&self, session: &str, data: bytes::Bytes) -> Routed {
        let Some(tx) = self.emulation.lock().get(session).cloned() else {
            return Routed::Unknown;
        };
        match tx.try_send(data) {
            Ok(()) => Routed::Local,
            Err(mpsc::error::TrySendError::Full(_)) => Routed::Full,
            Err(mpsc::error::TrySendError::Closed(_)) => Routed::Unknown,
        }
    }

    /// Hands an `/emulation` request's commands to its session: here when this node holds
    /// it, otherwise through the engine to `node`.
    pub async fn route_emulation(&self, node: &str, session: &str, data: bytes::Bytes) -> Result<Routed, ApiError> {
        match self.deliver_emulation(session, data.clone()) {
            Routed::Unknown if !node.is_empty() && node != self.node.uid() => {
                self.send(ControlMessage::Emulation {
                    node: node.to_string(),
                    session: session.to_string(),
                    data: data.to_vec(),
                })
                .await?;
                Ok(Routed::Forwarded)
            }
            r => Ok(r),
        }
    }

    /// Sends an API action on users to every node.
    pub async fn disconnect(&self, user: &str, client: &str, whitelist: &[String], code: u16, reason: &str) -> Result<(), ApiError> {
        self.send(ControlMessage::Disconnect {
            user: user.into(),
            client: client.into(),
            whitelist: whitelist.to_vec(),
            code,
            reason: reason.into(),
        })
        .await
    }

    pub async fn subscribe(&self, user: &str, channel: &str, client: &str) -> Result<(), ApiError> {
        self.node.options(channel)?;
        self.send(ControlMessage::Subscribe {
            user: user.into(),
            channel: channel.into(),
            client: client.into(),
        })
        .await
    }

    pub async fn unsubscribe(&self, user: &str, channel: &str, client: &str) -> Result<(), ApiError> {
        self.node.options(channel)?;
        self.send(ControlMessage::Unsubscribe {
            user: user.into(),
            channel: channel.into(),
            client: client.into(),
        })
        .await
    }

    pub async fn refresh(&self, user: &str, client: &str, expire_at: Option<u64>) -> Result<(), ApiError> {
        self.send(ControlMessage::Refresh {
            user: user.into(),
            client: client.into(),
            expire_at,
        })
        .await
    }
}

/// Removes a survey's reply route when its call ends (answered, timed out or cancelled).
struct Forget<'a>(&'a Cluster, u64);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.surveys.lock().remove(&self.1);
    }
}
