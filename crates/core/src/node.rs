//! The node: configuration, the engine, the hub and the registry of this node's
//! connections, and the operations of the server API.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wshub_protocol::codes::error as code;
use wshub_protocol::{ClientInfo, Format, Publication};

use crate::channel::{self, ChannelError};
use crate::config::{ChannelConfig, ChannelOptions, ConfigError, NodeConfig};
use crate::connection::{ConnectionHandle, Control};
use crate::delivery::Deliveries;
use crate::engine::{
    Broker, BrokerHandler, Engine, EngineError, HistoryQuery, HistoryResult, PresenceManager, PublishOptions, StreamPosition,
};
use crate::hub::Hub;
use crate::ratelimit::ClusterLimiter;
use crate::subscription::shared_poll::manager::SharedPoll;
use crate::token::Verifier;

pub use crate::error::ApiError;

impl From<ChannelError> for ApiError {
    fn from(e: ChannelError) -> Self {
        match e {
            ChannelError::BadName => ApiError::BadRequest(e.to_string()),
            ChannelError::UnknownNamespace => ApiError::UnknownChannel(e.to_string()),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::UnrecoverablePosition => ApiError::UnrecoverablePosition,
            EngineError::Internal(m) => ApiError::Internal(m),
        }
    }
}

/// What `info` tells about a node (and what nodes announce to each other).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeInfo {
    pub uid: String,
    pub name: String,
    pub version: String,
    pub num_clients: usize,
    pub num_users: usize,
    pub num_channels: usize,
    pub num_subs: usize,
    pub uptime: u64,
    /// The node's metrics aggregated over its last interval; sent only when a new interval
    /// closed (a peer keeps the last one it heard, as centrifuge's node registry does), so
    /// that the announcements every few seconds stay small.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<NodeMetrics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<NodeProcess>,
}

/// Centrifugo's `Metrics` of a `NodeResult`: counters as their increase over `interval`
/// seconds, gauges as read, summaries as their sum, count and quantiles; each key the
/// series' name split at `.` with its label names and values after it
/// (`centrifugo.client.num_reply_errors.method.connect.code.101`).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct NodeMetrics {
    pub interval: f64,
    pub items: std::collections::BTreeMap<String, f64>,
}

/// Centrifugo's `Process` of a `NodeResult`: CPU use in percent of one core over the last
/// announcement period, resident memory in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct NodeProcess {
    pub cpu: f64,
    pub rss: i64,
}

/// user -> client id -> handle.
/// user -> client id -> connection. The client id is the session's own `Arc<str>`.
type Registry = HashMap<String, HashMap<Arc<str>, Arc<dyn ConnectionHandle>>>;

/// The broker's events for this node's subscribers, queued off the publisher's path
/// ([`crate::delivery`]).
/// Shared poll keys' direct publications go to [`SharedPoll`] instead.
struct HubBroker(Arc<Deliveries>, Arc<SharedPoll>);

impl BrokerHandler for HubBroker {
    fn handle_publication(&self, channel: &str, publication: &Publication) {
        if self.1.is_key_channel(channel) {
            if let Some((ch, key)) = crate::subscription::shared_poll::parse_key_channel(channel) {
                self.1.handle_published(ch, key, publication);
            }
            return;
        }
        self.0.publication(channel, publication)
    }
    fn handle_join(&self, channel: &str, info: &ClientInfo) {
        self.0.join(channel, info)
    }
    fn handle_leave(&self, channel: &str, info: &ClientInfo) {
        self.0.leave(channel, info)
    }
    fn handle_reset(&self, channel: &str) {
        self.0.reset(channel)
    }
    fn has_subscribers(&self, channel: &str) -> bool {
        self.0.hub().num_subscribers(channel) > 0 || self.1.is_key_channel(channel)
    }
}

/// Bytes `s` takes inside a JSON string literal, escapes included (`"` and `\\` take two,
/// other control characters at most six).
fn json_str_len(s: &str) -> usize {
    s.bytes()
        .map(|b| match b {
            b'"' | b'\\' => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

/// An upper bound of the size of the frame that carries `p` to a subscriber of `channel`
/// (JSON or Protobuf, before compression): the data and info as they are (raw JSON or
/// bytes), strings as escaped, and room for the envelope's keys, numbers and the WebSocket
/// frame header.
pub(crate) fn publication_size_bound(channel: &str, p: &Publication) -> usize {
    const ENVELOPE: usize = 128;
    const INFO_KEYS: usize = 64;
    const TAG_QUOTES: usize = 6;
    let info = p.info.as_ref().map_or(0, |i| {
        json_str_len(&i.user) + json_str_len(&i.client) + i.conn_info.len() + i.chan_info.len() + INFO_KEYS
    });
    let tags: usize = p.tags.iter().map(|(k, v)| json_str_len(k) + json_str_len(v) + TAG_QUOTES).sum();
    ENVELOPE + json_str_len(channel) + p.data.len() + info + tags
}

/// How long the result of a publish with an idempotency key is kept (Centrifugo's window).
pub const IDEMPOTENT_RESULT_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// Whether a node could start with `config`: [`NodeConfig::validate`], then what only
/// building the parts can check (proxy endpoints, channel patterns, token keys). For a
/// configuration loaded before the node exists (`wshub checkconfig`, a reload's file).
/// One connection of a user on this node, for the `connections` API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserClient {
    pub client: String,
    pub format: Format,
    /// The transport's name (`websocket`, `sse`, `pusher`, …).
    pub transport: &'static str,
    /// The channels it is subscribed to here, sorted.
    pub channels: Vec<String>,
}

pub fn check_config(config: &NodeConfig) -> Result<(), ConfigError> {
    build_parts(config).map(drop)
}

/// The parts of a node that its configuration builds, each once, in the order their errors
/// are reported.
fn build_parts(config: &NodeConfig) -> Result<(crate::proxy::Endpoints, Live), ConfigError> {
    config.validate()?;
    let proxies = crate::proxy::Endpoints::build(config)?;
    Ok((proxies, Live::new(config)?))
}

/// The part of the configuration a reload (SIGHUP) replaces while connections stay open,
/// as Centrifugo v6 reloads: the token verifiers and the channel options (namespaces).
pub struct Live {
    /// Connection tokens (`client.token`).
    pub verifier: Verifier,
    /// Subscription tokens, when `client.subscription_token.enabled`; otherwise `verifier`.
    sub_verifier: Option<Verifier>,
    /// `channel.*`.
    pub channel: ChannelConfig,
    /// Channel names: the namespaces' regular expressions, compiled.
    rules: channel::Rules,
}

impl Live {
    fn new(config: &NodeConfig) -> Result<Self, ConfigError> {
        let rules = channel::Rules::new(&config.channel)?;
        let mut verifier = Verifier::new(&config.token, "client.token")?;
        let mut sub_verifier = match config.subscription_token.enabled {
            true => {
                let v = Verifier::new(&config.subscription_token.token, "client.subscription_token")?;
                if !v.is_configured() {
                    return Err(ConfigError {
                        key: "client.subscription_token".into(),
                        message: "enabled, but no key is set (hmac_secret_key, rsa_public_key, ecdsa_public_key or jwks_public_endpoint)"
                            .into(),
                    });
                }
                Some(v)
            }
            false => None,
        };
        if config.insecure_skip_token_signature_verify {
            verifier.skip_signature_check();
            if let Some(v) = &mut sub_verifier {
                v.skip_signature_check();
            }
        }
        Ok(Live {
            verifier,
            sub_verifier,
            rules,
            channel: config.channel.clone(),
        })
    }

    /// The verifier of subscription tokens.
    pub fn subscription_verifier(&self) -> &Verifier {
        self.sub_verifier.as_ref().unwrap_or(&self.verifier)
    }
}

/// A channel's options, from the version of the configuration current when they were asked
/// for (a reload does not change them under a command in progress).
pub struct Options {
    live: Arc<Live>,
    index: usize,
}

impl Options {
    /// `channel.*` of the same version.
    pub fn channel_config(&self) -> &ChannelConfig {
        &self.live.channel
    }
}

impl std::ops::Deref for Options {
    type Target = ChannelOptions;
    fn deref(&self) -> &ChannelOptions {
        channel::options_at(&self.live.channel, self.index)
    }
}

/// One wshub node.
pub struct Node {
    /// The configuration at start. Its `channel`, `token` and `subscription_token` are
    /// reloaded (SIGHUP): read them through [`Node::live`], never here.
    pub config: NodeConfig,
    /// What a reload replaces, swapped whole so that a reader sees one version of it.
    live: RwLock<Arc<Live>>,
    /// Publications between nodes and history.
    pub broker: Arc<dyn Broker>,
    /// Who is in each channel.
    pub presence: Arc<dyn PresenceManager>,
    pub hub: Arc<Hub>,
    /// Map channels' keyed state and change streams.
    pub map_broker: Arc<dyn crate::subscription::map::broker::MapBroker>,
    /// The broker's events on their way to `hub`.
    pub deliveries: Arc<Deliveries>,
    /// Shared poll channels: tracked keys and their backend polling.
    pub shared_poll: Arc<SharedPoll>,
    clients: Mutex<Registry>,
    next_conn_id: AtomicU64,
    uid: String,
    started: Instant,
    /// The per-user command limit across nodes (`client.command_rate_limit_scope = "cluster"`).
    command_limiter: OnceLock<Arc<dyn ClusterLimiter>>,
    /// The backend proxies the configuration names, and the HTTP that reaches them.
    pub proxies: crate::proxy::Endpoints,
    proxy_transport: OnceLock<Arc<dyn crate::proxy::ProxyTransport>>,
    jwks_fetcher: OnceLock<Arc<dyn crate::jwks::JwksFetcher>>,
    /// Client ids and ping jitter: seeded from the OS by default, from a fixed seed
    /// ([`Node::seed_rng`]) when a test needs the same sequence every run.
    rng: Mutex<StdRng>,
    /// The cluster, for actions on a user that must reach every node.
    user_actions: OnceLock<Arc<dyn UserActions>>,
}

/// Actions on a user's connections on every node of the cluster, this one included (the
/// server's cluster implements it over the engine's node control).
pub trait UserActions: Send + Sync {
    /// Closes `user`'s connections everywhere except the clients in `whitelist`; sent, not
    /// waited for.
    fn disconnect_everywhere(&self, user: &str, whitelist: Vec<String>, code: u16, reason: &str);
}

impl Node {
    /// A node on one backend that is broker and presence manager at once.
    pub fn new(config: NodeConfig, engine: Arc<dyn Engine>) -> Result<Arc<Self>, ConfigError> {
        Self::with_parts(config, engine.clone(), engine)
    }

    /// A node whose broker and presence manager may come from different backends.
    pub fn with_parts(config: NodeConfig, broker: Arc<dyn Broker>, presence: Arc<dyn PresenceManager>) -> Result<Arc<Self>, ConfigError> {
        let maps = Arc::new(crate::subscription::map::broker::MemoryMapBroker::default());
        Self::with_map_broker(config, broker, presence, maps)
    }

    /// A node whose map channels live in `map_broker` (`map_broker.type`).
    pub fn with_map_broker(
        config: NodeConfig,
        broker: Arc<dyn Broker>,
        presence: Arc<dyn PresenceManager>,
        map_broker: Arc<dyn crate::subscription::map::broker::MapBroker>,
    ) -> Result<Arc<Self>, ConfigError> {
        let (proxies, live) = build_parts(&config)?;
        let live = RwLock::new(Arc::new(live));
        let hub = Arc::new(Hub::with_max_time_lag(config.session.channel_position_max_time_lag));
        let deliveries = Arc::new(Deliveries::new(hub.clone()));
        let shared_poll = Arc::new(SharedPoll::default());
        broker.set_handler(Arc::new(HubBroker(deliveries.clone(), shared_poll.clone())));
        map_broker.set_handler(Arc::new(HubBroker(deliveries.clone(), shared_poll.clone())));
        let uid = uuid::Uuid::new_v4().to_string();
        presence.set_node_uid(&uid);
        Ok(Arc::new(Node {
            config,
            live,
            broker,
            presence,
            hub,
            map_broker,
            deliveries,
            shared_poll,
            clients: Mutex::new(HashMap::new()),
            next_conn_id: AtomicU64::new(1),
            uid,
            started: Instant::now(),
            command_limiter: OnceLock::new(),
            proxies,
            proxy_transport: OnceLock::new(),
            jwks_fetcher: OnceLock::new(),
            rng: Mutex::new(StdRng::from_entropy()),
            user_actions: OnceLock::new(),
        }))
    }

    /// Where actions on a user that must reach every node go (once; later calls are
    /// ignored). Without it they stay on this node.
    pub fn set_user_actions(&self, actions: Arc<dyn UserActions>) {
        let _ = self.user_actions.set(actions);
    }

    /// Closes `user`'s connections on every other node (and on this one, again) except
    /// `keep`: `single_connection` across the cluster.
    pub fn disconnect_user_everywhere(&self, user: &str, keep: &str, code: u16, reason: &str) {
        if let Some(a) = self.user_actions.get() {
            a.disconnect_everywhere(user, vec![keep.to_string()], code, reason);
        }
    }

    /// Counts `client.command_rate_limit` per user across every node through `limiter`
    /// (once, before sessions start; later calls are ignored).
    pub fn set_command_limiter(&self, limiter: Arc<dyn ClusterLimiter>) {
        let _ = self.command_limiter.set(limiter);
    }

    /// The HTTP client of the proxies (once, before sessions start). Without it, a
    /// configured proxy answers error 100.
    pub fn set_proxy_transport(&self, t: Arc<dyn crate::proxy::ProxyTransport>) {
        let _ = self.proxy_transport.set(t);
    }

    /// Restarts the node's random source from `seed`: the client ids and ping delays that
    /// follow are the same for the same seed (tests; call before sessions start).
    pub fn seed_rng(&self, seed: u64) {
        *self.rng.lock() = StdRng::seed_from_u64(seed);
    }

    /// A new client id: a UUID v4 string from the node's random source.
    pub fn new_client_id(&self) -> String {
        let bytes: [u8; 16] = self.rng.lock().gen();
        uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
    }

    /// When a new session pings first: a random point in `[interval / 2, interval]`, so
    /// that connections opened together do not all ping at once.
    pub fn first_ping_delay(&self, interval: Duration) -> Duration {
        let half = interval / 2;
        half + self.rng.lock().gen_range(Duration::ZERO..=interval - half)
    }

    /// The HTTP client of `client.token.jwks_public_endpoint` (once, before sessions start).
    pub fn set_jwks_fetcher(&self, f: Arc<dyn crate::jwks::JwksFetcher>) {
        let _ = self.jwks_fetcher.set(f);
    }

    /// Before `verifier` checks `token`: with a JWKS endpoint, makes sure the key it names
    /// (`kid`) is cached if the endpoint has it (fetching the set when needed, rate-limited).
    pub async fn prepare_token(&self, verifier: &Verifier, token: &str) {
        let Some(f) = self.jwks_fetcher.get() else { return };
        let Ok(h) = jsonwebtoken::decode_header(token) else { return };
        let Some(kid) = h.kid else { return };
        if let Some((cache, url)) = verifier.jwks_for(token) {
            cache.ensure(&kid, &url, f.as_ref(), Instant::now()).await;
        }
    }

    pub(crate) fn proxy_transport(&self) -> Option<&Arc<dyn crate::proxy::ProxyTransport>> {
        self.proxy_transport.get()
    }

    /// The server API's `rpc` method: the RPC proxy of the method's namespace, called with no
    /// client and no user. A backend `disconnect` is an error here.
    pub async fn api_rpc(&self, method: &str, data: Bytes) -> Result<Bytes, ApiError> {
        use crate::proxy::{call, put_data, raw_or_b64, Answer, Caller, RpcResultBody};
        if !self.proxies.has_rpc() {
            return Err(ApiError::not_available());
        }
        let ep = self.proxies.for_rpc(method).map_err(|c| {
            if c == code::METHOD_NOT_FOUND {
                ApiError::MethodNotFound
            } else {
                ApiError::not_available()
            }
        })?;
        let Some(t) = self.proxy_transport() else {
            return Err(ApiError::internal());
        };
        let caller = Caller {
            client: "",
            user: "",
            transport: "http",
            protocol: "json",
            headers: &[],
            emulated: &[],
            meta: None,
        };
        let mut f = serde_json::Map::new();
        f.insert("method".into(), method.into());
        put_data(&mut f, ep, &data);
        match call::<RpcResultBody>(t.as_ref(), ep, &caller, f).await {
            Ok(Answer::Result(r)) => {
                let r = r.unwrap_or_default();
                raw_or_b64(&r.data, &r.b64data)
                    .map(Option::unwrap_or_default)
                    .map_err(|_| ApiError::internal())
            }
            Ok(Answer::Error(e)) => Err(ApiError::backend(e.code, &e.message)),
            Ok(Answer::Disconnect(d)) => Err(ApiError::Internal(format!("backend disconnect {}: {}", d.code, d.reason))),
            Err(_) => Err(ApiError::internal()),
        }
    }

    pub(crate) fn command_limiter(&self) -> Option<&Arc<dyn ClusterLimiter>> {
        self.command_limiter.get()
    }

    /// A node-unique id for a new connection's handle.
    pub fn next_connection_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn uid(&self) -> &str {
        &self.uid
    }

    pub fn options(&self, channel: &str) -> Result<Options, ChannelError> {
        let live = self.live();
        let index = live.rules.resolve_index(&live.channel, channel)?;
        Ok(Options { live, index })
    }

    /// The current token verifiers and channel options.
    pub fn live(&self) -> Arc<Live> {
        self.live.read().clone()
    }

    /// Replaces the token verifiers and the channel options with those of `config` (its
    /// other parts are ignored): Centrifugo's reload on SIGHUP. Connections stay open;
    /// commands from now on see the new options, subscriptions made before keep what they
    /// were granted (as in Centrifugo). Nothing changes when `config` is refused.
    pub fn reload(&self, config: &NodeConfig) -> Result<(), ConfigError> {
        // The channel proxies (kind and name) the new options use that this node was not
        // built with (proxies are built at start).
        let (wanted, live) = build_parts(config)?;
        let mut missing: Vec<String> = (wanted.by_kind.keys())
            .filter(|k| !self.proxies.by_kind.contains_key(*k))
            .map(|(kind, name)| format!("{kind:?} proxy {name:?}"))
            .collect();
        missing.sort();
        if !missing.is_empty() {
            return Err(ConfigError {
                key: "channel".into(),
                message: format!(
                    "the channel options use proxies this node did not start with ({}): restart to apply",
                    missing.join(", ")
                ),
            });
        }
        *self.live.write() = Arc::new(live);
        Ok(())
    }

    /// Whether a verifier fetches keys from a JWKS endpoint (the server then installs
    /// [`Node::set_jwks_fetcher`]).
    pub fn uses_jwks(&self) -> bool {
        let live = self.live();
        live.verifier.has_jwks() || live.sub_verifier.as_ref().is_some_and(Verifier::has_jwks)
    }

    /// The lower-case names of the client request headers a session keeps: those some proxy
    /// forwards, and `client.user_id_http_header`.
    pub fn kept_request_headers(&self) -> Vec<String> {
        let mut v = self.proxies.forwarded_headers();
        let h = self.config.session.user_id_http_header.to_ascii_lowercase();
        if !h.is_empty() && !v.contains(&h) {
            v.push(h);
        }
        v
    }

    /// How long a stream's position outlives its last publication in `opts`' channels.
    pub fn history_meta_ttl(&self, opts: &ChannelOptions) -> Duration {
        match opts.history_meta_ttl.is_zero() {
            true => self.live().channel.history_meta_ttl,
            false => opts.history_meta_ttl,
        }
    }

    // ---- the registry of connections ----

    pub fn register(&self, user: &str, client: Arc<str>, handle: Arc<dyn ConnectionHandle>) {
        crate::series::action(crate::series::Action::AddClient);
        self.clients.lock().entry(user.to_string()).or_default().insert(client, handle);
    }

    pub fn unregister(&self, user: &str, client: &str) {
        crate::series::action(crate::series::Action::RemoveClient);
        let mut clients = self.clients.lock();
        if let Some(m) = clients.get_mut(user) {
            m.remove(client);
            if m.is_empty() {
                clients.remove(user);
            }
        }
    }

    pub fn user_connections(&self, user: &str) -> usize {
        self.clients.lock().get(user).map_or(0, HashMap::len)
    }

    /// A user's connections on this node, sorted by client id.
    pub fn user_clients(&self, user: &str) -> Vec<UserClient> {
        let handles: Vec<(String, Arc<dyn ConnectionHandle>)> = match self.clients.lock().get(user) {
            None => Vec::new(),
            Some(m) => m.iter().map(|(c, h)| (c.to_string(), h.clone())).collect(),
        };
        let ids: Vec<u64> = handles.iter().map(|(_, h)| h.id()).collect();
        let mut channels = self.hub.channels_of(&ids);
        let mut v: Vec<UserClient> = handles
            .into_iter()
            .map(|(client, h)| UserClient {
                client,
                format: h.encoding().format,
                transport: h.transport().name,
                channels: channels.remove(&h.id()).unwrap_or_default(),
            })
            .collect();
        v.sort_by(|a, b| a.client.cmp(&b.client));
        v
    }

    pub fn num_clients(&self) -> usize {
        self.clients.lock().values().map(HashMap::len).sum()
    }

    pub fn num_users(&self) -> usize {
        self.clients.lock().keys().filter(|u| !u.is_empty()).count()
    }

    fn controls(&self, user: &str, client: &str, control: Control) {
        let targets: Vec<Arc<dyn ConnectionHandle>> = match self.clients.lock().get(user) {
            None => return,
            Some(m) if client.is_empty() => m.values().cloned().collect(),
            Some(m) => m.get(client).cloned().into_iter().collect(),
        };
        for t in targets {
            t.control(control.clone());
        }
    }

    // ---- the server API ----

    /// Publishes into a channel; returns the stream position when it keeps history.
    pub async fn publish(
        &self,
        channel: &str,
        data: Bytes,
        info: Option<ClientInfo>,
        skip_history: bool,
        tags: HashMap<String, String>,
    ) -> Result<StreamPosition, ApiError> {
        self.publish_idempotent(channel, data, info, skip_history, tags, None).await
    }

    /// [`Node::publish`] with an idempotency key (the API's `idempotency_key`): a publish
    /// with a key already used in the channel in the last [`IDEMPOTENT_RESULT_TTL`] answers
    /// the first one's result without publishing again.
    pub async fn publish_idempotent(
        &self,
        channel: &str,
        data: Bytes,
        info: Option<ClientInfo>,
        skip_history: bool,
        tags: HashMap<String, String>,
        idempotency_key: Option<&str>,
    ) -> Result<StreamPosition, ApiError> {
        self.publish_with_delta(channel, data, info, skip_history, tags, idempotency_key, false)
            .await
    }

    /// [`Node::publish_idempotent`] with the API's `delta`: the channel's delta subscribers
    /// get the publication as a delta against the previous one (so does every publication
    /// of a namespace with `delta_publish`).
    #[allow(clippy::too_many_arguments)] // the API's publish parameters, one by one
    pub async fn publish_with_delta(
        &self,
        channel: &str,
        data: Bytes,
        info: Option<ClientInfo>,
        skip_history: bool,
        tags: HashMap<String, String>,
        idempotency_key: Option<&str>,
        delta: bool,
    ) -> Result<StreamPosition, ApiError> {
        let opts = self.options(channel)?;
        channel::check_data(opts.channel_config(), &opts, &data).map_err(ApiError::bad_request)?;
        let publication = Publication {
            data,
            info,
            tags,
            // Marks "published with delta" inside the node (crate::delta), not the wire flag.
            delta: delta || opts.delta_publish,
            // For the receiving nodes' pub/sub lag (crate::series::broadcast).
            time: crate::series::unix_millis(),
            ..Default::default()
        };
        let size = publication_size_bound(channel, &publication);
        let max = self.config.session.queue_max_size;
        if size > max {
            // Every subscriber would be closed with 3008 on it (and again on each recovery
            // from history): refused instead, before it is stored anywhere.
            return Err(ApiError::bad_request(&format!(
                "publication too large: {size} bytes with its envelope, over client.queue_max_size ({max} bytes)"
            )));
        }
        let mut popts = PublishOptions {
            idempotency_key: idempotency_key.filter(|k| !k.is_empty()).map(str::to_string),
            idempotent_result_ttl: IDEMPOTENT_RESULT_TTL,
            ..Default::default()
        };
        if !skip_history {
            popts.history_size = opts.history_size;
            popts.history_ttl = opts.history_ttl;
            popts.meta_ttl = self.history_meta_ttl(&opts);
        }
        crate::series::broker_message_sent("publication");
        Ok(self.broker.publish(channel, publication, &popts).await?)
    }

    pub fn subscribe_user(&self, user: &str, channel: &str, client: &str) -> Result<(), ApiError> {
        self.options(channel)?;
        self.controls(
            user,
            client,
            Control::Subscribe {
                channel: channel.to_string(),
            },
        );
        Ok(())
    }

    pub fn unsubscribe_user(&self, user: &str, channel: &str, client: &str) -> Result<(), ApiError> {
        self.options(channel)?;
        self.controls(
            user,
            client,
            Control::Unsubscribe {
                channel: channel.to_string(),
            },
        );
        Ok(())
    }

    /// Disconnects a user's connections (or one of them), sparing the `whitelist`ed clients.
    pub fn disconnect_user(&self, user: &str, client: &str, whitelist: &[String], code: u16, reason: &str) {
        let targets: Vec<Arc<dyn ConnectionHandle>> = match self.clients.lock().get(user) {
            None => return,
            Some(m) => m
                .iter()
                .filter(|(c, _)| {
                    let c: &str = c;
                    (client.is_empty() || c == client) && !whitelist.iter().any(|w| w == c)
                })
                .map(|(_, h)| h.clone())
                .collect(),
        };
        for t in targets {
            t.control(Control::Disconnect {
                code,
                reason: reason.to_string(),
            });
        }
    }

    /// Every connected client's handle (for a drain).
    pub fn all_connections(&self) -> Vec<Arc<dyn ConnectionHandle>> {
        self.clients.lock().values().flat_map(|m| m.values().cloned()).collect()
    }

    pub fn refresh_user(&self, user: &str, client: &str, expire_at: Option<u64>) {
        self.controls(user, client, Control::Refresh { expire_at });
    }

    pub async fn presence(&self, channel: &str) -> Result<HashMap<String, ClientInfo>, ApiError> {
        if !self.options(channel)?.presence {
            return Err(ApiError::not_available());
        }
        crate::series::action(crate::series::Action::Presence);
        Ok(self.presence.presence(channel).await?)
    }

    /// (clients, unique users)
    pub async fn presence_stats(&self, channel: &str) -> Result<(u32, u32), ApiError> {
        if !self.options(channel)?.presence {
            return Err(ApiError::not_available());
        }
        crate::series::action(crate::series::Action::PresenceStats);
        Ok(self.presence.presence_stats(channel).await?)
    }

    pub async fn history(&self, channel: &str, mut query: HistoryQuery) -> Result<HistoryResult, ApiError> {
        let opts = self.options(channel)?;
        if !opts.has_history() {
            return Err(ApiError::not_available());
        }
        query.meta_ttl = self.history_meta_ttl(&opts);
        crate::series::action(if query.since.is_some() {
            crate::series::Action::HistoryRecover
        } else if query.limit == 0 {
            crate::series::Action::HistoryStreamTop
        } else {
            crate::series::Action::History
        });
        let mut h = self.broker.history(channel, query).await?;
        crate::delta::clear_marks(&mut h.publications);
        Ok(h)
    }

    pub async fn history_remove(&self, channel: &str) -> Result<(), ApiError> {
        if !self.options(channel)?.has_history() {
            return Err(ApiError::not_available());
        }
        crate::series::action(crate::series::Action::HistoryRemove);
        Ok(self.broker.remove_history(channel).await?)
    }

    /// Channels with subscribers on this node matching `pattern` (`*` wildcards), with
    /// their numbers of subscribers. Linear in the number of channels: the caller runs it
    /// off the async workers when the node holds many.
    pub fn channels(&self, pattern: &str) -> Result<Vec<(String, usize)>, ApiError> {
        let pattern =
            channel::ChannelPattern::new(pattern, self.live().channel.max_length).map_err(|_| ApiError::bad_request("pattern too long"))?;
        Ok(self.hub.channels().into_iter().filter(|(c, _)| pattern.matches(c)).collect())
    }

    /// Pushes the leaves of a dead node's clients (found through the engine) to the
    /// channels with join/leave, and takes them out of presence. Returns how many.
    pub async fn reap_node(&self, uid: &str) -> Result<usize, ApiError> {
        let gone = self.presence.reap_node(uid).await?;
        let n = gone.len();
        for (channel, info) in gone {
            if self.options(&channel).is_ok_and(|o| o.join_leave) {
                if let Err(e) = self.broker.publish_leave(&channel, info).await {
                    tracing::warn!(%channel, error = %e, "leave of a dead node's client not pushed");
                }
            }
        }
        Ok(n)
    }

    pub fn info(&self) -> NodeInfo {
        NodeInfo {
            uid: self.uid.clone(),
            name: self.config.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            num_clients: self.num_clients(),
            num_users: self.num_users(),
            num_channels: self.hub.num_channels(),
            num_subs: self.hub.num_subscriptions(),
            uptime: self.started.elapsed().as_secs(),
            metrics: None,
            process: None,
        }
    }
}
