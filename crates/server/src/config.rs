//! The configuration file, environment and flags (DESIGN.md, "Configuration").
//!
//! One file, JSON or TOML by extension, then `WSHUB_` environment variables, then flags,
//! each overriding the one before. Keys follow Centrifugo v6 names. Unknown keys are
//! reported as warnings; a value that cannot work stops the start with a message naming
//! its key.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use wshub_core::config::{
    ChannelConfig, ClientProxies, NamedProxy, NodeConfig, PersonalChannel, ProxySettings, RpcConfig, SessionConfig,
    SubscriptionTokenConfig, TokenConfig,
};
use wshub_core::duration;
use wshub_core::ratelimit::{RateLimitAlgorithm, RateLimitScope};

mod engines;
mod grpc;
mod map_broker;
pub use grpc::{GrpcApi, UniGrpc, TRANSPORT_ERROR_MODE};
pub use map_broker::{MapBrokerRedis, MapBrokerSection};
mod env;
pub mod keys;
pub(crate) mod nats;
mod redis;
pub use engines::{Backend, BrokerSection, Engine, PresenceManagerSection};
pub use nats::{Nats, NatsRawMode};
pub use redis::{Redis, RedisConnection, RedisTls};
pub mod planned;
mod sections;
mod uni;
pub use env::leaves;
use env::set_path;
pub use uni::*;
mod observability;
mod words;
pub use observability::*;
pub use sections::*;
use words::{in_words, namespace_error};

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Config {
    pub http_server: HttpServer,
    pub http_api: HttpApi,
    pub grpc_api: GrpcApi,
    pub client: Client,
    pub websocket: WebSocket,
    pub channel: ChannelConfig,
    pub engine: Engine,
    pub broker: BrokerSection,
    pub presence_manager: PresenceManagerSection,
    /// Where map channels keep their state.
    pub map_broker: MapBrokerSection,
    pub admin: Admin,
    pub http_stream: HttpTransport,
    pub sse: HttpTransport,
    pub uni_http_stream: UniHttpTransport,
    pub uni_sse: UniHttpTransport,
    pub uni_websocket: UniWebSocket,
    pub uni_grpc: UniGrpc,
    pub emulation: EmulationSection,
    pub prometheus: Prometheus,
    pub graphite: Graphite,
    pub opentelemetry: OpenTelemetry,
    /// `debug.*`: the CPU profile and heap summary endpoints.
    pub debug: DebugSection,
    pub health: Health,
    /// `init.*`: `/connection/init`.
    pub init: ConnInit,
    pub shutdown: Shutdown,
    pub log: Log,
    /// Write the process id to this file at start (removed at exit), as Centrifugo.
    pub pid_file: String,
    pub node: NodeSection,
    /// Centrifugo's opt-out of its anonymous usage statistics: wshub sends none, so the key
    /// changes nothing.
    pub usage_stats: UsageStats,
    /// Centrifugo's switch for its unreleased features (only a broker kind wshub does not
    /// have): wshub has none, so the key changes nothing.
    pub enable_unreleased_features: bool,
    /// `rpc.proxy`, `rpc.without_namespace`, `rpc.namespaces`.
    pub rpc: RpcConfig,
    /// Named proxies, reached by `*_proxy_name` in namespaces.
    pub proxies: Vec<NamedProxy>,
    /// Async consumers: API commands read from a PostgreSQL outbox or Redis streams.
    pub consumers: Vec<crate::consumers::ConsumerConfig>,
    /// The Pusher Channels dialect's apps (`/app/{key}`, `/apps/{id}/…`).
    pub pusher: crate::pusher::PusherSection,
    /// Track signature keys and backend concurrency of shared poll channels.
    pub shared_poll: wshub_core::subscription::shared_poll::SharedPollConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Client {
    pub token: TokenConfig,
    /// Keys of their own for subscription tokens (when `enabled`).
    pub subscription_token: SubscriptionTokenConfig,
    pub allowed_origins: Vec<String>,
    pub allow_anonymous_connect_without_token: bool,
    /// Connection tokens without a user are refused (3507).
    pub disallow_anonymous_connection_tokens: bool,
    /// Development only: token signatures are not checked (claims still are).
    pub insecure_skip_token_signature_verify: bool,
    /// A connection without a token is the user this request header names (set by an
    /// authenticating gateway in front, which must strip it from clients' requests).
    pub user_id_http_header: String,
    #[serde(with = "duration")]
    pub ping_interval: Duration,
    #[serde(with = "duration")]
    pub pong_timeout: Duration,
    /// Time for the first command (`connect`); `stale_delay` is wshub's older name. "0":
    /// 15 s, as Centrifugo.
    #[serde(with = "duration", alias = "stale_delay")]
    pub stale_close_delay: Duration,
    #[serde(with = "duration")]
    pub expired_close_delay: Duration,
    /// Time a subscription whose token expired has for `sub_refresh` (2501 after it).
    #[serde(with = "duration")]
    pub expired_sub_close_delay: Duration,
    #[serde(with = "duration")]
    pub handshake_timeout: Duration,
    pub connection_limit: usize,
    pub connection_rate_limit: u32,
    pub connection_rate_limit_algorithm: RateLimitAlgorithm,
    pub user_connection_limit: usize,
    pub channel_limit: usize,
    pub queue_max_size: usize,
    /// Most publications one client `history` call returns (0: no cap).
    pub history_max_publication_limit: usize,
    /// Most publications one subscribe recovers; more missed: `recovered: false` (0: no cap).
    pub recovery_max_publication_limit: usize,
    /// Commands per second per connection (0: unlimited).
    pub command_rate_limit: u32,
    /// `cluster`: the command rate counts per user across every node.
    pub command_rate_limit_scope: RateLimitScope,
    pub command_rate_limit_algorithm: RateLimitAlgorithm,
    /// New connections per second from one IP address (0: unlimited).
    pub connection_rate_limit_per_ip: u32,
    /// Unset: `sliding_window` on this node (a burst allowance would let one address open a
    /// storm of connections at once); the cluster scope is a token bucket.
    pub connection_rate_limit_per_ip_algorithm: Option<RateLimitAlgorithm>,
    /// `cluster`: the per-IP connection rate counts across every node.
    pub connection_rate_limit_per_ip_scope: RateLimitScope,
    /// `client.proxy.connect` and `client.proxy.refresh`.
    pub proxy: ClientProxies,
    /// Development only: connect without a token, every channel permission granted.
    pub insecure: bool,
    pub subscribe_to_user_personal_channel: PersonalChannel,
    /// The connect reply carries the server's time (Unix milliseconds).
    pub connect_include_server_time: bool,
    /// Presence refresh and position check period ("0": 25 s, as Centrifugo's library).
    #[serde(with = "duration")]
    pub presence_update_interval: Duration,
    /// Silence after which a positioned subscription's position is checked ("0": 40 s).
    #[serde(with = "duration")]
    pub channel_position_check_delay: Duration,
    /// Delivery lag over which positioned subscribers lose their state ("0": no limit).
    #[serde(with = "duration")]
    pub channel_position_max_time_lag: Duration,
    /// The disconnect a refused unidirectional connect closes with, by error code.
    pub connect_code_to_unidirectional_disconnect: UniDisconnectTransforms,
}

impl Default for Client {
    fn default() -> Self {
        let s = SessionConfig::default();
        Client {
            token: TokenConfig::default(),
            subscription_token: SubscriptionTokenConfig::default(),
            allowed_origins: Vec::new(),
            allow_anonymous_connect_without_token: s.allow_anonymous_connect_without_token,
            disallow_anonymous_connection_tokens: s.disallow_anonymous_connection_tokens,
            insecure_skip_token_signature_verify: false,
            user_id_http_header: s.user_id_http_header,
            ping_interval: s.ping_interval,
            pong_timeout: s.pong_timeout,
            stale_close_delay: s.stale_delay,
            expired_close_delay: s.expired_close_delay,
            expired_sub_close_delay: s.expired_sub_close_delay,
            handshake_timeout: Duration::from_secs(10),
            connection_limit: 0,
            connection_rate_limit: 0,
            connection_rate_limit_algorithm: RateLimitAlgorithm::TokenBucket,
            user_connection_limit: s.user_connection_limit,
            channel_limit: s.channel_limit,
            queue_max_size: s.queue_max_size,
            history_max_publication_limit: s.history_max_publication_limit,
            recovery_max_publication_limit: s.recovery_max_publication_limit,
            command_rate_limit: 0,
            command_rate_limit_scope: RateLimitScope::Node,
            command_rate_limit_algorithm: RateLimitAlgorithm::TokenBucket,
            connection_rate_limit_per_ip: 0,
            connection_rate_limit_per_ip_algorithm: None,
            connection_rate_limit_per_ip_scope: RateLimitScope::Node,
            proxy: ClientProxies::default(),
            insecure: s.insecure,
            subscribe_to_user_personal_channel: s.personal_channel,
            connect_include_server_time: s.connect_include_server_time,
            presence_update_interval: s.presence_update_interval,
            channel_position_check_delay: s.channel_position_check_delay,
            channel_position_max_time_lag: s.channel_position_max_time_lag,
            connect_code_to_unidirectional_disconnect: UniDisconnectTransforms::default(),
        }
    }
}

impl Client {
    /// `presence_update_interval`, zero read as Centrifugo's library reads it (25 s).
    pub fn presence_interval(&self) -> Duration {
        match self.presence_update_interval.is_zero() {
            true => Duration::from_secs(25),
            false => self.presence_update_interval,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Shutdown {
    /// The process exits before this, drained or not.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Closes are spread over this window; "0": half of `timeout`.
    #[serde(with = "duration")]
    pub drain_window: Duration,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            timeout: Duration::from_secs(30),
            drain_window: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct UsageStats {
    pub disabled: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct NodeSection {
    pub name: String,
    /// How often the node's metrics are aggregated for `info` (and shared with the other
    /// nodes); "0": one minute, as centrifuge.
    #[serde(with = "duration")]
    pub info_metrics_aggregate_interval: Duration,
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            name: String::new(),
            info_metrics_aggregate_interval: Duration::from_secs(60),
        }
    }
}

/// A configuration that cannot start; names the key or the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration: {0}")]
pub struct LoadError(pub String);

/// The loaded configuration and what was noticed on the way.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// Keys present in the file or environment that wshub does not know.
    pub unknown_keys: Vec<String>,
    /// Centrifugo keys wshub does not implement yet, set to a value it ignores: one
    /// message each, naming the key and its issue ([`planned::planned`]).
    pub not_implemented: Vec<String>,
}

/// Reads the file (if any), applies `WSHUB_*` variables from `env` and the `overrides`
/// (`key.path`, value) from flags, and validates.
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    overrides: &[(String, Value)],
) -> Result<Loaded, LoadError> {
    let mut root = match file {
        None => Value::Object(Default::default()),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| LoadError(format!("{}: {e}", p.display())))?;
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
            let bad = |e: &dyn std::fmt::Display| LoadError(format!("{}: {e}", p.display()));
            match ext.as_str() {
                "toml" => {
                    let v: toml::Value = toml::from_str(&text).map_err(|e| bad(&e))?;
                    serde_json::to_value(v).map_err(|e| bad(&e))?
                }
                // Centrifugo reads YAML too: a YAML file is read as YAML, never as JSON.
                "yaml" | "yml" => serde_yaml_ng::from_str::<Value>(&text).map_err(|e| bad(&format!("not valid YAML: {e}")))?,
                "json" | "" => serde_json::from_str(&text).map_err(|e| bad(&format!("not valid JSON: {e}")))?,
                other => {
                    return Err(LoadError(format!(
                        "{}: unknown extension .{other}: name the file .json, .toml, .yaml or .yml",
                        p.display()
                    )))
                }
            }
        }
    };
    if !root.is_object() {
        return Err(LoadError("the configuration file must hold an object".into()));
    }
    planned::drop_nulls(&mut root);
    let defaults = serde_json::to_value(Config::default()).unwrap_or(Value::Null);
    let env_keys = planned::with_centrifugo_keys(&defaults);
    let applied = env::apply(&mut root, &env_keys, &keys::prototypes(), &env.into_iter().collect::<Vec<_>>())?;
    let mut unknown_keys = applied.unknown;
    for (p, v) in overrides {
        set_path(&mut root, p, v.clone());
    }
    unknown_keys.extend(keys::unknown(&root, &defaults));
    if let Some(message) = keys::refused(&root, &unknown_keys).or_else(|| keys::refused_env(&applied.unknown_centrifugo)) {
        return Err(LoadError(message));
    }
    let sorted = planned::sort(&root, unknown_keys)?;
    let config: Config = match serde_path_to_error::deserialize(root.clone()) {
        Ok(c) => c,
        Err(e) => {
            return Err(namespace_error(&root).unwrap_or_else(|| LoadError(format!("{}: {}", e.path(), in_words(&e.inner().to_string())))))
        }
    };
    wshub_core::node::check_config(&to_node_config(&config)).map_err(|e| LoadError(e.to_string()))?;
    validate(&config)?;
    Ok(Loaded {
        config,
        unknown_keys: sorted.unknown,
        not_implemented: sorted.warnings,
    })
}

/// Redis addresses as they may be shown: the password of each `scheme://user:password@host`
/// replaced by `***` (a log line or an error message must not carry a secret).
pub fn masked_addresses(addresses: &str) -> String {
    addresses
        .split(',')
        .map(|a| match (a.find("://"), a.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let userinfo = &a[scheme + 3..at];
                let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
                match userinfo.contains(':') {
                    true => format!("{}{user}:***{}", &a[..scheme + 3], &a[at..]),
                    false => format!("{}***{}", &a[..scheme + 3], &a[at..]),
                }
            }
            _ => a.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The socket address of `http_server.address` and `.port`. The address is an IP address
/// (`0.0.0.0`, `::`, `127.0.0.1`, `[::1]`), `localhost` (127.0.0.1) or empty: every
/// interface, as Centrifugo (`::`, which takes IPv4 too; [`crate::listener::bind`] falls
/// back to `0.0.0.0` on a host without IPv6).
pub fn listen_addr(c: &Config) -> Result<std::net::SocketAddr, LoadError> {
    socket_addr("http_server.address", &c.http_server.address, c.http_server.port)
}

/// The internal listener's address (`http_server.internal_port`, `internal_address`), or
/// `None` when it is the main one: as Centrifugo, an unset port is `port` and an unset
/// address is `address`, and endpoints that end up on the same address share its listener.
pub fn internal_listen_addr(c: &Config) -> Result<Option<std::net::SocketAddr>, LoadError> {
    let h = &c.http_server;
    let port = match h.internal_port.as_str() {
        "" => h.port,
        p => p.parse::<u16>().map_err(|_| {
            LoadError(format!(
                "http_server.internal_port: {p:?} is not a port number (1 to 65535, or empty for none)"
            ))
        })?,
    };
    let (key, address) = match h.internal_address.trim() {
        "" => ("http_server.address", h.address.as_str()),
        a => ("http_server.internal_address", a),
    };
    let internal = socket_addr(key, address, port)?;
    Ok((internal != listen_addr(c)?).then_some(internal))
}

/// The gRPC API's address (`grpc_api.address`, `grpc_api.port`), when it is enabled.
pub fn grpc_api_addr(c: &Config) -> Result<Option<std::net::SocketAddr>, LoadError> {
    let g = &c.grpc_api;
    if !g.enabled {
        return Ok(None);
    }
    if !g.error_mode.is_empty() && g.error_mode != TRANSPORT_ERROR_MODE {
        return Err(LoadError(format!(
            "grpc_api.error_mode: {:?} is not \"{TRANSPORT_ERROR_MODE}\" or empty",
            g.error_mode
        )));
    }
    socket_addr("grpc_api.address", &g.address, g.port).map(Some)
}

/// The unidirectional gRPC transport's address (`uni_grpc.address`, `uni_grpc.port`), when
/// it is enabled.
pub fn uni_grpc_addr(c: &Config) -> Result<Option<std::net::SocketAddr>, LoadError> {
    let g = &c.uni_grpc;
    if !g.enabled {
        return Ok(None);
    }
    socket_addr("uni_grpc.address", &g.address, g.port).map(Some)
}

fn socket_addr(key: &str, address: &str, port: u16) -> Result<std::net::SocketAddr, LoadError> {
    let a = address.trim();
    let ip: std::net::IpAddr = if a.is_empty() {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    } else if a.eq_ignore_ascii_case("localhost") {
        std::net::Ipv4Addr::LOCALHOST.into()
    } else {
        a.strip_prefix('[')
            .and_then(|x| x.strip_suffix(']'))
            .unwrap_or(a)
            .parse()
            .map_err(|_| {
                LoadError(format!(
                    "{key}: {a:?} is not an IP address (0.0.0.0, ::, 127.0.0.1), localhost, or empty for every interface"
                ))
            })?
    };
    Ok(std::net::SocketAddr::new(ip, port))
}

/// The `tracing` filter of `log.level`: Centrifugo's names in any case; `none` logs
/// nothing, `fatal` only errors (wshub has no level above error).
pub fn log_filter(level: &str) -> Option<&'static str> {
    Some(match level.to_ascii_lowercase().as_str() {
        "none" => "off",
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "fatal" => "error",
        _ => return None,
    })
}

pub(crate) fn validate(c: &Config) -> Result<(), LoadError> {
    let fail = |k: &str, m: &str| Err(LoadError(format!("{k}: {m}")));
    listen_addr(c)?;
    internal_listen_addr(c)?;
    for (key, prefix) in c.handler_prefixes() {
        if !prefix.is_empty() && !prefix.starts_with('/') {
            return Err(LoadError(format!(
                "{key}: {prefix:?} must start with / (or be empty for its default)"
            )));
        }
    }
    if c.websocket.message_size_limit < 128 {
        return fail("websocket.message_size_limit", "must be at least 128 bytes");
    }
    if c.websocket.compression_level > 9 {
        return fail("websocket.compression_level", "must be 0..9");
    }
    engines::validate(c)?;
    uni::validate(c)?;
    c.map_broker.validate()?;
    crate::consumers::validate(&c.consumers)?;
    c.pusher.validate()?;
    if c.admin.enabled && !c.admin.insecure {
        if c.admin.password.is_empty() {
            return fail(
                "admin.password",
                "required when admin.enabled (or admin.insecure for local development)",
            );
        }
        if c.admin.secret.is_empty() {
            return fail("admin.secret", "required when admin.enabled: it signs admin sessions");
        }
    }
    if !["text", "json"].contains(&c.log.format.as_str()) {
        return fail("log.format", "must be \"text\" or \"json\"");
    }
    if log_filter(&c.log.level).is_none() {
        return fail("log.level", "must be none, trace, debug, info, warn, error or fatal");
    }
    for (key, t) in [
        ("http_server.tls", &c.http_server.tls),
        ("http_server.internal_tls", &c.http_server.internal_tls),
    ] {
        if t.enabled && (t.cert().is_empty() || t.key().is_empty()) {
            return fail(key, "cert_pem and key_pem are required when enabled");
        }
    }
    let hs = &c.http_server;
    if hs.h2c_external && (hs.internal_port.is_empty() || hs.internal_port == hs.port.to_string()) {
        return fail("http_server.h2c_external", "requires a separate http_server.internal_port");
    }
    if hs.h2c_external && hs.tls.enabled {
        return fail("http_server.h2c_external", "cannot be used together with http_server.tls");
    }
    if !c.shutdown.drain_window.is_zero() && c.shutdown.drain_window >= c.shutdown.timeout {
        return fail("shutdown.drain_window", "must be shorter than shutdown.timeout");
    }
    if c.client.queue_max_size == 0 {
        return fail("client.queue_max_size", "must be positive");
    }
    let algorithms = [
        c.client.command_rate_limit_algorithm,
        c.client.connection_rate_limit_per_ip_algorithm.unwrap_or_default(),
        c.http_api.rate_limit_algorithm,
    ];
    for ((key, scope), algorithm) in c.rate_limit_scopes().into_iter().zip(algorithms) {
        if scope == RateLimitScope::Cluster && algorithm != RateLimitAlgorithm::TokenBucket {
            return fail(
                key,
                "\"cluster\" counts with a token bucket in Redis: set the limit's algorithm to \"token_bucket\"",
            );
        }
        let Some(redis) = c.broker_redis() else {
            if scope == RateLimitScope::Cluster {
                return fail(key, "\"cluster\" needs engine.type = \"redis\" (or a Redis broker)");
            }
            continue;
        };
        if scope == RateLimitScope::Cluster && !single_redis(redis) {
            return fail(
                key,
                "\"cluster\" is not available with Redis Sentinel or Redis Cluster yet (only engine.redis.address)",
            );
        }
    }
    Ok(())
}

/// Whether the Redis engine is one single Redis (not Sentinel, not a Cluster as far as the
/// configuration tells).
fn single_redis(r: &Redis) -> bool {
    use wshub_redis::address::Location;
    let shards = r.engine_config().and_then(|c| c.shards().map_err(|e| LoadError(e.to_string())));
    shards.is_ok_and(|s| s.iter().all(|s| matches!(s.location, Location::Tcp(..) | Location::Unix(_))))
}

impl Config {
    /// Every `handler_prefix`, by key (empty ones included).
    pub fn handler_prefixes(&self) -> [(&'static str, &str); 12] {
        [
            ("websocket.handler_prefix", &self.websocket.handler_prefix),
            ("uni_websocket.handler_prefix", &self.uni_websocket.handler_prefix),
            ("http_stream.handler_prefix", &self.http_stream.handler_prefix),
            ("sse.handler_prefix", &self.sse.handler_prefix),
            ("uni_http_stream.handler_prefix", &self.uni_http_stream.handler_prefix),
            ("uni_sse.handler_prefix", &self.uni_sse.handler_prefix),
            ("emulation.handler_prefix", &self.emulation.handler_prefix),
            ("http_api.handler_prefix", &self.http_api.handler_prefix),
            ("admin.handler_prefix", &self.admin.handler_prefix),
            ("prometheus.handler_prefix", &self.prometheus.handler_prefix),
            ("health.handler_prefix", &self.health.handler_prefix),
            ("init.handler_prefix", &self.init.handler_prefix),
        ]
    }

    /// The scope of each rate limit that has one, by key.
    pub fn rate_limit_scopes(&self) -> [(&'static str, RateLimitScope); 3] {
        [
            ("client.command_rate_limit_scope", self.client.command_rate_limit_scope),
            (
                "client.connection_rate_limit_per_ip_scope",
                self.client.connection_rate_limit_per_ip_scope,
            ),
            ("http_api.rate_limit_scope", self.http_api.rate_limit_scope),
        ]
    }
}

/// The part of the configuration the core uses.
pub fn to_node_config(c: &Config) -> NodeConfig {
    NodeConfig {
        name: if c.node.name.is_empty() { hostname() } else { c.node.name.clone() },
        channel: c.channel.clone(),
        token: c.client.token.clone(),
        subscription_token: c.client.subscription_token.clone(),
        insecure_skip_token_signature_verify: c.client.insecure_skip_token_signature_verify,
        session: SessionConfig {
            allow_anonymous_connect_without_token: c.client.allow_anonymous_connect_without_token,
            disallow_anonymous_connection_tokens: c.client.disallow_anonymous_connection_tokens,
            user_id_http_header: c.client.user_id_http_header.clone(),
            ping_interval: c.client.ping_interval,
            pong_timeout: c.client.pong_timeout,
            // Centrifugo: zero is its library's default, 15 s.
            stale_delay: match c.client.stale_close_delay.is_zero() {
                true => Duration::from_secs(15),
                false => c.client.stale_close_delay,
            },
            expired_close_delay: c.client.expired_close_delay,
            expired_sub_close_delay: match c.client.expired_sub_close_delay.is_zero() {
                true => Duration::from_secs(25),
                false => c.client.expired_sub_close_delay,
            },
            channel_limit: c.client.channel_limit,
            user_connection_limit: c.client.user_connection_limit,
            command_rate_limit: c.client.command_rate_limit,
            command_rate_limit_scope: c.client.command_rate_limit_scope,
            command_rate_limit_algorithm: c.client.command_rate_limit_algorithm,
            queue_max_size: c.client.queue_max_size,
            history_max_publication_limit: c.client.history_max_publication_limit,
            recovery_max_publication_limit: c.client.recovery_max_publication_limit,
            insecure: c.client.insecure,
            personal_channel: c.client.subscribe_to_user_personal_channel.clone(),
            connect_include_server_time: c.client.connect_include_server_time,
            presence_update_interval: c.client.presence_interval(),
            // Centrifugo: zero is its library's default, 40 s.
            channel_position_check_delay: match c.client.channel_position_check_delay.is_zero() {
                true => Duration::from_secs(40),
                false => c.client.channel_position_check_delay,
            },
            channel_position_max_time_lag: c.client.channel_position_max_time_lag,
            unidirectional_code_to_disconnect: c.client.connect_code_to_unidirectional_disconnect.in_force(),
        },
        proxy: ProxySettings {
            client: c.client.proxy.clone(),
            rpc: c.rpc.clone(),
            named: c.proxies.clone(),
        },
        shared_poll: c.shared_poll.clone(),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "wshub".into())
}

#[cfg(test)]
mod tests;
