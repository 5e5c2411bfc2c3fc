//! The node's settings: plain structs mirroring DESIGN.md's keys (Centrifugo v6 names),
//! with their defaults. Loading them from files, the environment and flags is the server's
//! job; validation here names the key at fault.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Options of a namespace (or of channels without one). Zero and false mean "off".
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct ChannelOptions {
    /// Keep presence information for the channel.
    pub presence: bool,
    /// Send join and leave pushes to subscribers that ask for them.
    pub join_leave: bool,
    /// Send join and leave pushes to every subscriber, asked or not.
    pub force_push_join_leave: bool,
    /// Publications kept in the channel's stream (0: no history).
    pub history_size: usize,
    #[serde(with = "crate::duration")]
    pub history_ttl: Duration,
    /// Every subscription is recoverable (needs history).
    pub force_recovery: bool,
    /// Subscribers may ask for recovery with `recoverable: true`.
    pub allow_recovery: bool,
    /// Every subscription is positioned: the node follows its stream position and tells the
    /// client when publications were lost on the way (insufficient state), without recovery.
    pub force_positioning: bool,
    /// Subscribers may ask for positioning (`positioned: true` in subscribe).
    pub allow_positioning: bool,
    /// How a recovering subscriber catches up: `""`/`"stream"` every missed publication,
    /// `"cache"` only the latest one (the channel is a cache of its last state).
    pub force_recovery_mode: String,
    /// In cache mode, every subscribe recovers the latest publication, asked or not
    /// (server-side subscriptions of unidirectional clients included). Needs
    /// `force_recovery` and `force_recovery_mode: "cache"`.
    pub auto_cache_recover: bool,
    pub allow_subscribe_for_client: bool,
    pub allow_subscribe_for_anonymous: bool,
    pub allow_publish_for_subscriber: bool,
    pub allow_publish_for_client: bool,
    pub allow_publish_for_anonymous: bool,
    pub allow_presence_for_subscriber: bool,
    pub allow_presence_for_client: bool,
    pub allow_history_for_subscriber: bool,
    pub allow_history_for_client: bool,
    /// `chan#42` (and `chan#42,43`) may be joined by users 42 (and 43) without a token.
    pub allow_user_limited_channels: bool,
    /// Ask the subscribe proxy (`channel.proxy.subscribe`, or the one named) instead of
    /// the permissions above, for subscriptions without a token.
    pub subscribe_proxy_enabled: bool,
    pub subscribe_proxy_name: String,
    /// Ask the publish proxy about client publications (it may replace the data).
    pub publish_proxy_enabled: bool,
    pub publish_proxy_name: String,
    /// Subscriptions whose subscribe proxy set `expire_at` are prolonged by the sub refresh
    /// proxy (server side) instead of the client's token.
    pub sub_refresh_proxy_enabled: bool,
    pub sub_refresh_proxy_name: String,
    /// Subscriptions without a token open a gRPC stream to the subscribe stream proxy
    /// (`channel.proxy.subscribe_stream`, or the one named): its first message decides, the
    /// rest are publications for this subscriber alone.
    pub subscribe_stream_proxy_enabled: bool,
    pub subscribe_stream_proxy_name: String,
    /// The stream also carries the subscriber's publications to the backend.
    pub subscribe_stream_proxy_bidirectional: bool,
    /// Delta encodings subscribers may ask for (`delta` in subscribe); only `"fossil"`
    /// exists. Empty: subscribers get whole publications.
    pub allowed_delta_types: Vec<String>,
    /// Every publication into the channel is published as if with `delta: true` (its
    /// delta subscribers get it as a delta against the previous one).
    pub delta_publish: bool,
    /// Subscribers may pass a publication tags filter (`tf`); refused with 107 otherwise.
    pub allow_tags_filter: bool,
    /// Anonymous users (empty user id) may call presence where the permissions above allow
    /// presence to clients or subscribers; without it they get 103.
    pub allow_presence_for_anonymous: bool,
    /// The same for history.
    pub allow_history_for_anonymous: bool,
    /// A regular expression the channel name (after the namespace and its boundary) must
    /// match; without one, names must be ASCII (Centrifugo's rule). 107 otherwise.
    pub channel_regex: String,
    /// What a publication's data must be: `""`/`"json"` (JSON, Centrifugo's default),
    /// `"json_object"` (a JSON object), `"binary"` (anything, empty included). 107 otherwise.
    pub publication_data_format: String,
    /// How long a stream's epoch and top offset are kept after its last publication
    /// ("0": `channel.history_meta_ttl`).
    #[serde(with = "crate::duration")]
    pub history_meta_ttl: Duration,
    /// What a subscriber of the namespace receives; a subscribe of another kind is refused
    /// (103), as Centrifugo.
    pub subscription_type: crate::subscription::SubscriptionType,
    /// Map subscriptions (`subscription_type` map, map_clients, map_users).
    pub map: crate::subscription::map::MapOptions,
    /// Shared poll subscriptions (`subscription_type` shared_poll).
    pub shared_poll: crate::subscription::shared_poll::SharedPollOptions,
    /// A subscriber of channel `c` is an entry (key: its client id) of the map channel
    /// `<prefix>c` while subscribed (a `map_clients` namespace).
    pub map_clients_presence_channel_prefix: String,
    /// The same by user id (a `map_users` namespace); entries leave by TTL only, as a user
    /// may have other connections.
    pub map_users_presence_channel_prefix: String,
}

impl ChannelOptions {
    pub fn has_history(&self) -> bool {
        self.history_size > 0 && !self.history_ttl.is_zero()
    }

    /// `force_recovery_mode: "cache"`: a recovery gives the latest publication only.
    pub fn cache_recovery(&self) -> bool {
        self.force_recovery_mode == "cache"
    }

    /// Whether subscribers may negotiate this delta type.
    pub fn allows_delta(&self, delta: &str) -> bool {
        self.allowed_delta_types.iter().any(|d| d == delta)
    }
}

/// A named namespace: channels `name:rest` follow its options.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]

pub struct Namespace {
    pub name: String,
    #[serde(flatten)]
    pub options: ChannelOptions,
}

/// `channel.*`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct ChannelConfig {
    pub max_length: usize,
    pub without_namespace: ChannelOptions,
    pub namespaces: Vec<Namespace>,
    /// `channel.proxy.subscribe|publish|sub_refresh`: the proxies named `default`.
    pub proxy: ChannelProxies,
    /// Channels starting with it need a subscription token, whatever the permissions say
    /// (Centrifugo's default `$`; empty: no private channels).
    pub private_prefix: String,
    /// Between a namespace and the rest of a channel name (`chat:room`).
    pub namespace_boundary: String,
    /// Before the users of a user-limited channel (`dialog#42,43`).
    pub user_boundary: String,
    /// Between those users.
    pub user_separator: String,
    /// How long a stream's epoch and top offset are kept after its last publication, so
    /// that a client positioned in it still recovers or learns it cannot (default 30 days).
    #[serde(with = "crate::duration")]
    pub history_meta_ttl: Duration,
    /// The default of the namespaces' `publication_data_format`.
    pub publication_data_format: String,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            max_length: 255,
            without_namespace: ChannelOptions::default(),
            namespaces: Vec::new(),
            proxy: Default::default(),
            private_prefix: "$".into(),
            namespace_boundary: ":".into(),
            user_boundary: "#".into(),
            user_separator: ",".into(),
            history_meta_ttl: DEFAULT_HISTORY_META_TTL,
            publication_data_format: String::new(),
        }
    }
}

/// Centrifugo's `channel.history_meta_ttl` default: 30 days.
pub const DEFAULT_HISTORY_META_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// `client.token.*` (and, with `enabled`, `client.subscription_token.*`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct TokenConfig {
    pub hmac_secret_key: String,
    /// The HMAC key being rotated out: tokens signed with it are accepted until
    /// `hmac_previous_secret_key_valid_until` (Unix seconds, that second included; 0: no limit).
    pub hmac_previous_secret_key: String,
    pub hmac_previous_secret_key_valid_until: i64,
    pub rsa_public_key: String,
    pub ecdsa_public_key: String,
    /// A JWKS document's URL: tokens with a `kid` are verified with its keys
    /// ([`crate::jwks`]). It may hold `{{name}}` variables, filled from the named groups of
    /// `issuer_regex` / `audience_regex` matched against the token's claims.
    pub jwks_public_endpoint: String,
    pub audience: String,
    /// The token's `aud` (one of them) must match (instead of equal `audience`).
    pub audience_regex: String,
    pub issuer: String,
    pub issuer_regex: String,
    /// The claim holding the user id (default `sub`).
    pub user_id_claim: String,
    /// Allows `{{variables}}` in the JWKS endpoint's scheme and host (where a token could
    /// send the node to a host of its choosing).
    pub insecure_skip_jwks_endpoint_safety_check: bool,
}

/// `client.subscription_token.*`: subscription tokens checked with keys of their own.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct SubscriptionTokenConfig {
    /// Off: subscription tokens are checked with `client.token`'s keys.
    pub enabled: bool,
    #[serde(flatten)]
    pub token: TokenConfig,
}

/// The client-facing settings the core uses (`client.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct SessionConfig {
    pub allow_anonymous_connect_without_token: bool,
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    /// Time allowed for the first command (`connect`): 3502 after it
    /// (`client.stale_close_delay`).
    pub stale_delay: Duration,
    /// Time a subscription whose token expired has to be refreshed (`sub_refresh`) before
    /// it is unsubscribed with 2501 (`client.expired_sub_close_delay`).
    pub expired_sub_close_delay: Duration,
    /// Refuse connection tokens without a user (`client.disallow_anonymous_connection_tokens`):
    /// close 3507.
    pub disallow_anonymous_connection_tokens: bool,
    /// `client.user_id_http_header`: a connection without a token whose upgrade request
    /// carries this header (set by an authenticating gateway in front) is that user.
    pub user_id_http_header: String,
    /// Time a connection whose token expired has to send `refresh`: 3005 after it.
    pub expired_close_delay: Duration,
    /// Subscriptions per connection (error 106 over it).
    pub channel_limit: usize,
    /// Connections per user on this node (close 3504 over it; 0 = unlimited).
    pub user_connection_limit: usize,
    /// Commands per second per connection (by default a token bucket, burst of one
    /// second's worth); over it: error 111, and close 3013 when the client keeps going. 0 = unlimited.
    pub command_rate_limit: u32,
    /// `client.command_rate_limit_scope`: `Node` counts per connection; `Cluster` counts per
    /// user across every node through the node's cluster limiter (anonymous users, and
    /// commands before `connect`, stay per connection).
    pub command_rate_limit_scope: crate::ratelimit::RateLimitScope,
    /// `client.command_rate_limit_algorithm` (per connection; the cluster scope is always a
    /// token bucket).
    pub command_rate_limit_algorithm: crate::ratelimit::RateLimitAlgorithm,
    /// Bytes queued for one client (`client.queue_max_size`): pushes and replies alike; over
    /// it the connection is closed with 3008. A publication that could never fit is refused.
    pub queue_max_size: usize,
    /// Most publications a client's `history` call returns (`client.history_max_publication_limit`,
    /// Centrifugo's default 300); a larger or negative (all) limit is cut to it. 0: no cap.
    pub history_max_publication_limit: usize,
    /// Most publications a subscribe recovers (`client.recovery_max_publication_limit`); a
    /// client that missed more gets `recovered: false` and the current position. 0: no cap.
    pub recovery_max_publication_limit: usize,
    /// `client.insecure`: connect without a token, every channel permission granted. For
    /// development only: anyone can read and write everything.
    pub insecure: bool,
    /// `client.subscribe_to_user_personal_channel`.
    pub personal_channel: PersonalChannel,
    /// `client.connect_include_server_time`: the connect reply carries the server's time
    /// (Unix milliseconds), for clients that correct their clock by it.
    pub connect_include_server_time: bool,
    /// `client.presence_update_interval`: how often a session adds its presence entries
    /// again (they expire in a shared engine) and checks its positioned subscriptions.
    pub presence_update_interval: Duration,
    /// `client.channel_position_check_delay`: a positioned subscription that received no
    /// publication for this long has its position compared with the stream's top.
    pub channel_position_check_delay: Duration,
    /// `client.channel_position_max_time_lag`: a publication reaching this node later than
    /// this after it was published means insufficient state for positioned subscribers
    /// (zero: no limit).
    pub channel_position_max_time_lag: Duration,
    /// `client.connect_code_to_unidirectional_disconnect.transforms` (when `enabled`): the
    /// disconnect a refused unidirectional connect closes with, by error code, before
    /// Centrifugo's fixed table ([`SessionConfig::unidirectional_disconnect`]).
    pub unidirectional_code_to_disconnect: Vec<CodeToDisconnect>,
}

/// One of `client.connect_code_to_unidirectional_disconnect.transforms`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct CodeToDisconnect {
    /// The connect error's code.
    pub code: u32,
    pub to: TransformDisconnect,
}

/// A disconnect a transform gives (`code`, `reason`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct TransformDisconnect {
    pub code: u32,
    pub reason: String,
}

impl SessionConfig {
    /// The disconnect (code, reason) a unidirectional client gets for a connect refused
    /// with error `code`: the configured transform, else centrifuge's fixed table (expired
    /// -> 3005, too many requests -> 3013, permission denied -> 3507), else 3004.
    pub fn unidirectional_disconnect(&self, code: u32) -> (u16, std::borrow::Cow<'static, str>) {
        if let Some(t) = self.unidirectional_code_to_disconnect.iter().find(|t| t.code == code) {
            // The loader keeps `to.code` within u16.
            let to = u16::try_from(t.to.code).unwrap_or(wshub_protocol::codes::disconnect::INTERNAL_ERROR);
            return (to, t.to.reason.clone().into());
        }
        let (to, reason) = default_unidirectional_disconnect(code);
        (to, reason.into())
    }
}

/// centrifuge's fixed table of the disconnect a unidirectional client gets for a connect
/// error `code` (its `defaultUniErrorCodeToDisconnect`, then `DisconnectServerError`).
pub fn default_unidirectional_disconnect(code: u32) -> (u16, &'static str) {
    use wshub_protocol::codes::{disconnect as dc, error as ec};
    match code {
        ec::EXPIRED | ec::TOKEN_EXPIRED => (dc::EXPIRED, "connection expired"),
        ec::TOO_MANY_REQUESTS => (dc::TOO_MANY_REQUESTS, "too many requests"),
        ec::PERMISSION_DENIED => (dc::PERMISSION_DENIED, "permission denied"),
        _ => (dc::INTERNAL_ERROR, "internal server error"),
    }
}

/// `client.subscribe_to_user_personal_channel`: every connection of an authenticated user
/// is subscribed (server side) to `#<user>` (or `<personal_channel_namespace>:#<user>`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct PersonalChannel {
    pub enabled: bool,
    pub personal_channel_namespace: String,
    /// A new connection of the user closes the user's others (3504) on this node.
    pub single_connection: bool,
}

impl PersonalChannel {
    /// The personal channel of `user`, with the configured boundaries.
    pub fn channel(&self, user: &str, channels: &ChannelConfig) -> String {
        let ub = &channels.user_boundary;
        if self.personal_channel_namespace.is_empty() {
            format!("{ub}{user}")
        } else {
            format!("{}{}{ub}{user}", self.personal_channel_namespace, channels.namespace_boundary)
        }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            allow_anonymous_connect_without_token: false,
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(8),
            stale_delay: Duration::from_secs(10),
            expired_close_delay: Duration::from_secs(25),
            expired_sub_close_delay: Duration::from_secs(25),
            disallow_anonymous_connection_tokens: false,
            user_id_http_header: String::new(),
            channel_limit: 128,
            user_connection_limit: 0,
            command_rate_limit: 0,
            command_rate_limit_scope: crate::ratelimit::RateLimitScope::Node,
            command_rate_limit_algorithm: crate::ratelimit::RateLimitAlgorithm::TokenBucket,
            queue_max_size: 1 << 20,
            history_max_publication_limit: 300,
            recovery_max_publication_limit: 300,
            insecure: false,
            personal_channel: PersonalChannel::default(),
            connect_include_server_time: false,
            presence_update_interval: Duration::from_secs(27),
            channel_position_check_delay: Duration::from_secs(40),
            channel_position_max_time_lag: Duration::ZERO,
            unidirectional_code_to_disconnect: Vec::new(),
        }
    }
}

/// `rpc.ping.*`: an RPC of this method is answered at once with an empty result, without a
/// proxy (clients measure the round trip with it).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct RpcPing {
    pub enabled: bool,
    pub method: String,
}

impl Default for RpcPing {
    fn default() -> Self {
        RpcPing {
            enabled: false,
            method: "ping".into(),
        }
    }
}

/// Everything the node needs.
#[derive(Debug, Clone, Default)]
pub struct NodeConfig {
    pub name: String,
    pub channel: ChannelConfig,
    pub token: TokenConfig,
    /// `client.subscription_token`: when enabled, the keys of subscription tokens.
    pub subscription_token: SubscriptionTokenConfig,
    /// `client.insecure_skip_token_signature_verify`: tokens are read without checking their
    /// signature. Development only: anyone can be anyone.
    pub insecure_skip_token_signature_verify: bool,
    pub session: SessionConfig,
    /// Proxies to the backend (`client.proxy`, `rpc`, `proxies`; `channel.proxy` is in
    /// `channel`).
    pub proxy: ProxySettings,
    /// The top-level `shared_poll` section (track signature keys, backend concurrency).
    pub shared_poll: crate::subscription::shared_poll::SharedPollConfig,
}

/// A configuration value that cannot work; names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl NodeConfig {
    /// Checks what serde cannot: names, combinations, keys. What only building it can check
    /// (proxy endpoints, channel patterns, token keys) is checked where it is built, by
    /// [`crate::node::check_config`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key: &str, message: &str| {
            Err(ConfigError {
                key: key.into(),
                message: message.into(),
            })
        };
        if self.channel.max_length == 0 {
            return err("channel.max_length", "must be positive");
        }
        let mut seen = std::collections::HashSet::new();
        for (i, ns) in self.channel.namespaces.iter().enumerate() {
            let key = format!("channel.namespaces[{i}].name");
            if ns.name.is_empty()
                || !ns
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
            {
                return err(&key, "must be non-empty and use only letters, digits, '_', '-', '.'");
            }
            if !seen.insert(ns.name.clone()) {
                return err(&key, "duplicate namespace name");
            }
            check_options(&ns.options, &format!("channel.namespaces[{i}]"))?;
        }
        check_options(&self.channel.without_namespace, "channel.without_namespace")?;
        crate::subscription::map::validate_presence_prefixes(&self.channel)?;
        if self.channel.history_meta_ttl.is_zero() {
            return err("channel.history_meta_ttl", "must be positive");
        }
        let data_format = ChannelOptions {
            publication_data_format: self.channel.publication_data_format.clone(),
            ..Default::default()
        };
        check_options(&data_format, "channel")?;
        let meta_ttl = |o: &ChannelOptions| {
            if o.history_meta_ttl.is_zero() {
                self.channel.history_meta_ttl
            } else {
                o.history_meta_ttl
            }
        };
        for (key, o) in std::iter::once(("channel.without_namespace".to_string(), &self.channel.without_namespace)).chain(
            self.channel
                .namespaces
                .iter()
                .enumerate()
                .map(|(i, n)| (format!("channel.namespaces[{i}]"), &n.options)),
        ) {
            crate::subscription::shared_poll::validate(o.subscription_type, &o.shared_poll, &self.shared_poll, &key)?;
            if o.history_ttl > meta_ttl(o) {
                return err(
                    &format!("{key}.history_ttl"),
                    "can not be longer than history_meta_ttl (the stream's position would be forgotten before its publications)",
                );
            }
        }
        if self.session.ping_interval.is_zero() {
            return err("client.ping_interval", "must be positive");
        }
        if self.session.presence_update_interval.is_zero() {
            return err("client.presence_update_interval", "must be positive");
        }
        if self.session.pong_timeout >= self.session.ping_interval {
            return err("client.pong_timeout", "must be shorter than client.ping_interval");
        }
        Ok(())
    }
}

/// One backend endpoint's settings (Centrifugo's `Proxy` object).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct ProxyConfig {
    /// `http://host:port/path`; empty: not configured.
    pub endpoint: String,
    #[serde(with = "crate::duration")]
    pub timeout: Duration,
    /// Headers of the client's HTTP upgrade request to forward (`Cookie`, `Authorization`...).
    pub http_headers: Vec<String>,
    /// Headers the client sent in its connect request (`headers`: SDKs' headers emulation,
    /// for browsers that cannot set a WebSocket's headers) to forward. They are the
    /// client's word: a transport header of the same name (`http_headers`) wins.
    pub emulated_headers: Vec<String>,
    /// Send the connection's `meta` (from the connect proxy's result) with each request.
    pub include_connection_meta: bool,
    /// Data goes as `b64data` (base64) instead of raw JSON.
    pub binary_encoding: bool,
    pub http: ProxyHttp,
    /// Metadata keys of a `uni_grpc` connection to forward to the backend (as gRPC
    /// metadata, or HTTP headers to an HTTP backend); `http_headers` are for the others.
    pub grpc_metadata: Vec<String>,
    /// `grpc.*`: a `grpc://` endpoint's connection.
    pub grpc: ProxyGrpc,
    /// wshub: requests in flight to this endpoint at once; more wait (within `timeout`).
    pub max_in_flight: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            endpoint: String::new(),
            timeout: Duration::from_secs(1),
            http_headers: Vec::new(),
            emulated_headers: Vec::new(),
            include_connection_meta: false,
            binary_encoding: false,
            http: ProxyHttp::default(),
            grpc_metadata: Vec::new(),
            grpc: ProxyGrpc::default(),
            max_in_flight: 256,
        }
    }
}

/// `http.*` of a proxy.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct ProxyHttp {
    /// Headers sent with every request (forwarded client headers win).
    pub static_headers: BTreeMap<String, String>,
    pub tls: ProxyTls,
    /// A backend's HTTP status other than 200 answered to the client as an error or a
    /// disconnect (instead of error 100).
    pub status_to_code_transforms: Vec<StatusToCodeTransform>,
}

/// One of `http.status_to_code_transforms`: `to_error` or `to_disconnect` (one of them).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct StatusToCodeTransform {
    pub status_code: u16,
    pub to_error: TransformError,
    pub to_disconnect: TransformDisconnect,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct TransformError {
    pub code: u32,
    pub message: String,
    pub temporary: bool,
}

impl ProxyHttp {
    /// Centrifugo's checks of `status_to_code_transforms`: a status, one target, ASCII text
    /// that fits a WebSocket close reason (123 bytes).
    pub fn check_transforms(&self) -> Result<(), String> {
        const MAX_TEXT: usize = 123;
        for (i, t) in self.status_to_code_transforms.iter().enumerate() {
            let at = format!("status_to_code_transforms[{i}]");
            let fail = |m: &str| Err(format!("{at}: {m}"));
            if t.status_code == 0 {
                return fail("status_code must be set");
            }
            match (t.to_error.code > 0, t.to_disconnect.code > 0) {
                (false, false) => return fail("to_error.code or to_disconnect.code must be set"),
                (true, true) => return fail("to_error and to_disconnect cannot both be set"),
                _ => {}
            }
            for text in [&t.to_error.message, &t.to_disconnect.reason] {
                if !text.is_ascii() || text.len() > MAX_TEXT {
                    return fail("messages and reasons must be ASCII, at most 123 bytes");
                }
            }
        }
        Ok(())
    }
}

/// `grpc.*` of a proxy.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct ProxyGrpc {
    /// TLS to the backend (`server_ca_pem`: the CA that signed its certificate).
    pub tls: ProxyTls,
    /// Per-call metadata `credentials_key: credentials_value` (a backend's shared secret).
    pub credentials_key: String,
    pub credentials_value: String,
    /// gzip the requests (and accept gzipped replies).
    pub compression: bool,
    /// Metadata sent with every call (forwarded client headers win).
    pub static_metadata: BTreeMap<String, String>,
}

/// `http.tls.*` / `grpc.tls.*` of a proxy: for an `https://` (or TLS `grpc://`) endpoint, the
/// CA that signed its certificate (otherwise the usual public roots are trusted), and the
/// client certificate to present.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct ProxyTls {
    pub enabled: bool,
    /// PEM text of the CA certificate(s) to trust instead of the public roots.
    pub server_ca_pem: String,
    /// wshub's certificate and key for backends that ask for one (mutual TLS); PEM text,
    /// base64 of it, or a file path, as Centrifugo reads them.
    pub cert_pem: String,
    pub key_pem: String,
    /// A server's setting in Centrifugo's common TLS object: read and checked, and of no
    /// use to a client (Go's `ClientCAs` is ignored on the client side too).
    pub client_ca_pem: String,
    /// Development only: any certificate of the backend is accepted.
    pub insecure_skip_verify: bool,
    /// The name sent (SNI) and checked in the backend's certificate, instead of the
    /// endpoint's host.
    pub server_name: String,
}

/// `client.proxy.connect` / `client.proxy.refresh`: a proxy with an `enabled` switch.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct SwitchedProxy {
    pub enabled: bool,
    #[serde(flatten)]
    pub proxy: ProxyConfig,
}

/// `client.proxy`
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct ClientProxies {
    pub connect: SwitchedProxy,
    pub refresh: SwitchedProxy,
}

/// `channel.proxy`: the proxies a namespace reaches under the name `default`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct ChannelProxies {
    pub subscribe: ProxyConfig,
    pub publish: ProxyConfig,
    pub sub_refresh: ProxyConfig,
    /// Polled for shared poll channels whose `shared_poll.proxy_name` is empty or `default`.
    pub shared_poll_refresh: ProxyConfig,
    /// A client's map write, and its map removal, in namespaces that enable them.
    pub map_publish: ProxyConfig,
    pub map_remove: ProxyConfig,
    /// The subscribe stream proxy (gRPC endpoints only, as Centrifugo).
    pub subscribe_stream: ProxyConfig,
}

/// One of `proxies: [...]`, reached by name from namespaces (`subscribe_proxy_name`...).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct NamedProxy {
    pub name: String,
    #[serde(flatten)]
    pub proxy: ProxyConfig,
}

/// Options of an RPC namespace (or of methods without one).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct RpcOptions {
    pub proxy_enabled: bool,
    /// Empty or `default`: `rpc.proxy`.
    pub proxy_name: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct RpcNamespace {
    pub name: String,
    #[serde(flatten)]
    pub options: RpcOptions,
}

/// `rpc.*`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct RpcConfig {
    pub proxy: ProxyConfig,
    pub without_namespace: RpcOptions,
    pub namespaces: Vec<RpcNamespace>,
    /// Between an RPC namespace and the method (`ns:method`); empty: no namespaces.
    pub namespace_boundary: String,
    pub ping: RpcPing,
}

impl Default for RpcConfig {
    fn default() -> Self {
        RpcConfig {
            proxy: ProxyConfig::default(),
            without_namespace: RpcOptions::default(),
            namespaces: Vec::new(),
            namespace_boundary: ":".into(),
            ping: Default::default(),
        }
    }
}

/// Every proxy setting of the node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxySettings {
    pub client: ClientProxies,
    pub rpc: RpcConfig,
    pub named: Vec<NamedProxy>,
}

fn check_options(o: &ChannelOptions, key: &str) -> Result<(), ConfigError> {
    if o.force_recovery && !o.has_history() {
        return Err(ConfigError {
            key: format!("{key}.force_recovery"),
            message: "needs history_size and history_ttl".into(),
        });
    }
    if !["", "stream", "cache"].contains(&o.force_recovery_mode.as_str()) {
        return Err(ConfigError {
            key: format!("{key}.force_recovery_mode"),
            message: format!("unknown recovery mode {:?} (\"stream\" or \"cache\")", o.force_recovery_mode),
        });
    }
    if o.auto_cache_recover && !(o.force_recovery && o.cache_recovery()) {
        return Err(ConfigError {
            key: format!("{key}.auto_cache_recover"),
            message: "needs force_recovery and force_recovery_mode \"cache\"".into(),
        });
    }
    if let Some(d) = o.allowed_delta_types.iter().find(|d| d.as_str() != "fossil") {
        return Err(ConfigError {
            key: format!("{key}.allowed_delta_types"),
            message: format!("unknown delta type {d:?} (only \"fossil\")"),
        });
    }
    if !["", "json", "json_object", "binary"].contains(&o.publication_data_format.as_str()) {
        return Err(ConfigError {
            key: format!("{key}.publication_data_format"),
            message: format!(
                "unknown format {:?} (\"json\", \"json_object\" or \"binary\")",
                o.publication_data_format
            ),
        });
    }
    crate::subscription::map::validate(o.subscription_type, &o.map, key)?;
    if o.subscribe_stream_proxy_enabled && (o.subscribe_proxy_enabled || o.publish_proxy_enabled || o.sub_refresh_proxy_enabled) {
        // Centrifugo's rule: the stream's first message is the subscribe answer, and a
        // bidirectional stream takes the publications.
        return Err(ConfigError {
            key: format!("{key}.subscribe_stream_proxy_enabled"),
            message: "can't use subscribe stream proxy together with subscribe, publish or sub refresh proxies".into(),
        });
    }
    if o.subscribe_stream_proxy_enabled && o.subscription_type != crate::subscription::SubscriptionType::Stream {
        return Err(ConfigError {
            key: format!("{key}.subscribe_stream_proxy_enabled"),
            message: "serves stream subscriptions only (subscription_type \"stream\")".into(),
        });
    }
    if o.history_size > 0 && o.history_ttl.is_zero() {
        return Err(ConfigError {
            key: format!("{key}.history_ttl"),
            message: "must be set when history_size is".into(),
        });
    }
    Ok(())
}
