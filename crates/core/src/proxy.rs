//! Proxies to the application's backend (Centrifugo v6's proxy feature): when a client
//! connects without a token, refreshes, subscribes, publishes or calls an RPC, the node asks
//! the backend over HTTP, with Centrifugo's request and reply JSON, so that existing
//! backends work unchanged.
//!
//! The core builds the requests and judges the replies; the HTTP itself is a
//! [`ProxyTransport`] that the server crate implements (keep-alive pool, concurrency bound
//! per endpoint, timeout). A transport failure (timeout, refused, non-2xx) or an unreadable
//! reply is error 100 for the client (internal, temporary: the SDK retries), logged with the
//! endpoint and counted in `wshub_proxy_calls_total{kind,outcome}`; a backend `error` or
//! `disconnect` reaches the client as given.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::value::RawValue;

pub mod stream;

use crate::config::{ChannelOptions, ConfigError, NodeConfig, ProxyConfig, RpcConfig};
use crate::engine::BoxFuture;

/// What a proxy is asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyKind {
    Connect,
    Refresh,
    Subscribe,
    Publish,
    SubRefresh,
    Rpc,
    /// A shared poll channel's keys.
    SharedPollRefresh,
    MapPublish,
    MapRemove,
    /// A subscription's gRPC stream ([`stream`]).
    SubscribeStream,
}

impl ProxyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyKind::Connect => "connect",
            ProxyKind::Refresh => "refresh",
            ProxyKind::Subscribe => "subscribe",
            ProxyKind::Publish => "publish",
            ProxyKind::SubRefresh => "sub_refresh",
            ProxyKind::Rpc => "rpc",
            ProxyKind::SharedPollRefresh => "shared_poll_refresh",
            ProxyKind::MapPublish => "map_publish",
            ProxyKind::MapRemove => "map_remove",
            ProxyKind::SubscribeStream => "subscribe_stream",
        }
    }
}

/// A configured endpoint for one kind of call. `id` indexes [`Endpoints::all`].
#[derive(Debug)]
pub struct Endpoint {
    pub id: usize,
    pub kind: ProxyKind,
    /// `default` or the name in `proxies`.
    pub name: String,
    pub config: ProxyConfig,
    /// `config.http_headers`, lower case.
    pub forward: Vec<String>,
    /// `config.emulated_headers`, lower case.
    pub forward_emulated: Vec<String>,
    /// `config.grpc_metadata`, lower case: what is forwarded of a `uni_grpc` connection's
    /// metadata (its `http_headers` are not, as in Centrifugo).
    pub forward_metadata: Vec<String>,
}

/// The transport whose request headers are gRPC metadata.
const GRPC_CLIENT_TRANSPORT: &str = "uni_grpc";

/// The scheme of a gRPC endpoint (Centrifugo's `grpc://host:port`).
pub const GRPC_SCHEME: &str = "grpc://";

impl Endpoint {
    /// Whether the backend is reached over gRPC rather than HTTP.
    pub fn is_grpc(&self) -> bool {
        self.config.endpoint.starts_with(GRPC_SCHEME)
    }

    /// The `protocol` label of the proxy metrics, as Centrifugo's.
    pub fn protocol(&self) -> &'static str {
        if self.is_grpc() {
            "grpc"
        } else {
            "http"
        }
    }
}

/// The endpoints the configuration uses, resolved once at start.
#[derive(Debug, Default)]
pub struct Endpoints {
    all: Vec<Arc<Endpoint>>,
    pub connect: Option<Arc<Endpoint>>,
    pub refresh: Option<Arc<Endpoint>>,
    pub(crate) by_kind: HashMap<(ProxyKind, String), Arc<Endpoint>>,
    rpc: RpcConfig,
}

const DEFAULT_NAME: &str = "default";

fn name_or_default(n: &str) -> &str {
    if n.is_empty() {
        DEFAULT_NAME
    } else {
        n
    }
}

impl Endpoints {
    /// Resolves every proxy the configuration refers to; a namespace naming a proxy that
    /// does not exist is an error naming its key.
    pub fn build(cfg: &NodeConfig) -> Result<Self, ConfigError> {
        let p = &cfg.proxy;
        let mut e = Endpoints {
            rpc: p.rpc.clone(),
            ..Default::default()
        };
        let bad = |key: String, message: String| ConfigError { key, message };
        let check = |key: &str, c: &ProxyConfig| -> Result<(), ConfigError> {
            let schemes = ["http://", "https://", GRPC_SCHEME];
            if !schemes.iter().any(|s| c.endpoint.starts_with(s)) {
                return Err(bad(format!("{key}.endpoint"), "must be an http://, https:// or grpc:// URL".into()));
            }
            if c.timeout.is_zero() {
                return Err(bad(format!("{key}.timeout"), "must be positive".into()));
            }
            if c.max_in_flight == 0 {
                return Err(bad(format!("{key}.max_in_flight"), "must be positive".into()));
            }
            c.http.check_transforms().map_err(|m| bad(format!("{key}.http"), m))
        };
        if p.client.connect.enabled {
            check("client.proxy.connect", &p.client.connect.proxy)?;
            e.connect = Some(e.add(ProxyKind::Connect, DEFAULT_NAME, &p.client.connect.proxy));
        }
        if p.client.refresh.enabled {
            check("client.proxy.refresh", &p.client.refresh.proxy)?;
            e.refresh = Some(e.add(ProxyKind::Refresh, DEFAULT_NAME, &p.client.refresh.proxy));
        }
        for (i, n) in p.named.iter().enumerate() {
            if n.name.is_empty() || n.name == DEFAULT_NAME {
                return Err(bad(format!("proxies[{i}].name"), "must be set and not \"default\"".into()));
            }
            check(&format!("proxies[{i}]"), &n.proxy)?;
        }
        let lookup = |default: &ProxyConfig, name: &str| -> Option<ProxyConfig> {
            if name == DEFAULT_NAME {
                (!default.endpoint.is_empty()).then(|| default.clone())
            } else {
                p.named.iter().find(|n| n.name == name).map(|n| n.proxy.clone())
            }
        };
        let mut namespaces: Vec<(String, &ChannelOptions)> = vec![("channel.without_namespace".into(), &cfg.channel.without_namespace)];
        for (i, ns) in cfg.channel.namespaces.iter().enumerate() {
            namespaces.push((format!("channel.namespaces[{i}]"), &ns.options));
        }
        let cp = &cfg.channel.proxy;
        for (key, o) in namespaces {
            // (kind, enabled, name, `channel.proxy.*` default, its key, the name's key)
            let wanted = [
                (
                    ProxyKind::Subscribe,
                    o.subscribe_proxy_enabled,
                    &o.subscribe_proxy_name,
                    &cp.subscribe,
                    "subscribe",
                    "subscribe_proxy_name",
                ),
                (
                    ProxyKind::Publish,
                    o.publish_proxy_enabled,
                    &o.publish_proxy_name,
                    &cp.publish,
                    "publish",
                    "publish_proxy_name",
                ),
                (
                    ProxyKind::SubRefresh,
                    o.sub_refresh_proxy_enabled,
                    &o.sub_refresh_proxy_name,
                    &cp.sub_refresh,
                    "sub_refresh",
                    "sub_refresh_proxy_name",
                ),
                (
                    ProxyKind::MapPublish,
                    o.map.publish_proxy_enabled,
                    &o.map.publish_proxy_name,
                    &cp.map_publish,
                    "map_publish",
                    "map.publish_proxy_name",
                ),
                (
                    ProxyKind::MapRemove,
                    o.map.remove_proxy_enabled,
                    &o.map.remove_proxy_name,
                    &cp.map_remove,
                    "map_remove",
                    "map.remove_proxy_name",
                ),
                (
                    ProxyKind::SubscribeStream,
                    o.subscribe_stream_proxy_enabled,
                    &o.subscribe_stream_proxy_name,
                    &cp.subscribe_stream,
                    "subscribe_stream",
                    "subscribe_stream_proxy_name",
                ),
            ];
            for (kind, enabled, name, default, what, name_key) in wanted {
                if !enabled {
                    continue;
                }
                let name = name_or_default(name);
                if e.by_kind.contains_key(&(kind, name.to_string())) {
                    continue;
                }
                let Some(c) = lookup(default, name) else {
                    return Err(bad(
                        format!("{key}.{name_key}"),
                        format!("no proxy \"{name}\" (channel.proxy.{what} for \"default\", or one of proxies)"),
                    ));
                };
                if name == DEFAULT_NAME {
                    check(&format!("channel.proxy.{what}"), &c)?;
                }
                if kind == ProxyKind::SubscribeStream && !c.endpoint.starts_with(GRPC_SCHEME) {
                    // As Centrifugo: the stream is a gRPC stream, HTTP has none.
                    return Err(bad(
                        format!("{key}.{name_key}"),
                        format!("subscribe stream proxy \"{name}\": only grpc:// endpoints are supported"),
                    ));
                }
                let ep = e.add(kind, name, &c);
                e.by_kind.insert((kind, name.to_string()), ep);
            }
        }
        for (key, o) in shared_poll_namespaces(cfg) {
            let name = o.shared_poll.proxy();
            if e.by_kind.contains_key(&(ProxyKind::SharedPollRefresh, name.to_string())) {
                continue;
            }
            let Some(c) = lookup(&cp.shared_poll_refresh, name) else {
                return Err(bad(
                    format!("{key}.shared_poll.proxy_name"),
                    format!("no proxy \"{name}\" (channel.proxy.shared_poll_refresh for \"default\", or one of proxies)"),
                ));
            };
            if name == DEFAULT_NAME {
                check("channel.proxy.shared_poll_refresh", &c)?;
            }
            let ep = e.add(ProxyKind::SharedPollRefresh, name, &c);
            e.by_kind.insert((ProxyKind::SharedPollRefresh, name.to_string()), ep);
        }
        let mut rpcs = vec![("rpc.without_namespace".to_string(), &p.rpc.without_namespace)];
        for (i, ns) in p.rpc.namespaces.iter().enumerate() {
            rpcs.push((format!("rpc.namespaces[{i}]"), &ns.options));
        }
        for (key, o) in rpcs {
            if !o.proxy_enabled {
                continue;
            }
            let name = name_or_default(&o.proxy_name);
            if e.by_kind.contains_key(&(ProxyKind::Rpc, name.to_string())) {
                continue;
            }
            let Some(c) = lookup(&p.rpc.proxy, name) else {
                return Err(bad(
                    format!("{key}.proxy_name"),
                    format!("no proxy \"{name}\" (rpc.proxy for \"default\", or one of proxies)"),
                ));
            };
            if name == DEFAULT_NAME {
                check("rpc.proxy", &c)?;
            }
            let ep = e.add(ProxyKind::Rpc, name, &c);
            e.by_kind.insert((ProxyKind::Rpc, name.to_string()), ep);
        }
        Ok(e)
    }

    fn add(&mut self, kind: ProxyKind, name: &str, c: &ProxyConfig) -> Arc<Endpoint> {
        let ep = Arc::new(Endpoint {
            id: self.all.len(),
            kind,
            name: name.to_string(),
            config: c.clone(),
            forward: c.http_headers.iter().map(|h| h.to_ascii_lowercase()).collect(),
            forward_emulated: c.emulated_headers.iter().map(|h| h.to_ascii_lowercase()).collect(),
            forward_metadata: c.grpc_metadata.iter().map(|h| h.to_ascii_lowercase()).collect(),
        });
        self.all.push(ep.clone());
        ep
    }

    /// Every endpoint, indexed by [`Endpoint::id`] (the transport keeps its state per id).
    pub fn all(&self) -> &[Arc<Endpoint>] {
        &self.all
    }

    /// Whether any proxy is configured.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// The lower-case names of the client headers (and gRPC metadata) any endpoint forwards.
    pub fn forwarded_headers(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .all
            .iter()
            .flat_map(|e| e.forward.iter().chain(&e.forward_metadata).cloned())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// The channel proxy of `kind` for a namespace's options, when enabled.
    pub fn for_channel(&self, kind: ProxyKind, o: &ChannelOptions) -> Option<&Arc<Endpoint>> {
        let (enabled, name) = match kind {
            ProxyKind::Subscribe => (o.subscribe_proxy_enabled, &o.subscribe_proxy_name),
            ProxyKind::Publish => (o.publish_proxy_enabled, &o.publish_proxy_name),
            ProxyKind::SubRefresh => (o.sub_refresh_proxy_enabled, &o.sub_refresh_proxy_name),
            ProxyKind::MapPublish => (o.map.publish_proxy_enabled, &o.map.publish_proxy_name),
            ProxyKind::MapRemove => (o.map.remove_proxy_enabled, &o.map.remove_proxy_name),
            ProxyKind::SubscribeStream => (o.subscribe_stream_proxy_enabled, &o.subscribe_stream_proxy_name),
            _ => return None,
        };
        if !enabled {
            return None;
        }
        self.by_kind.get(&(kind, name_or_default(name).to_string()))
    }

    /// The shared poll refresh proxy named `name` (`default`: `channel.proxy.shared_poll_refresh`).
    pub fn shared_poll(&self, name: &str) -> Option<&Arc<Endpoint>> {
        self.by_kind.get(&(ProxyKind::SharedPollRefresh, name_or_default(name).to_string()))
    }

    /// Whether any RPC proxy is configured (without one, `rpc` answers 108).
    pub fn has_rpc(&self) -> bool {
        self.by_kind.keys().any(|(k, _)| *k == ProxyKind::Rpc)
    }

    /// Routes an RPC method (`ns:method`, or a method without namespace): the endpoint, or
    /// the error code (104 unknown namespace, 108 proxy not enabled).
    pub fn for_rpc(&self, method: &str) -> Result<&Arc<Endpoint>, u32> {
        use wshub_protocol::codes::error as ec;
        let boundary = self.rpc.namespace_boundary.as_str();
        let opts = match method.split_once(boundary).filter(|_| !boundary.is_empty()) {
            Some((ns, _)) => match self.rpc.namespaces.iter().find(|n| n.name == ns) {
                Some(n) => &n.options,
                None => return Err(ec::METHOD_NOT_FOUND),
            },
            None => &self.rpc.without_namespace,
        };
        if !opts.proxy_enabled {
            return Err(ec::NOT_AVAILABLE);
        }
        self.by_kind
            .get(&(ProxyKind::Rpc, name_or_default(&opts.proxy_name).to_string()))
            .ok_or(ec::NOT_AVAILABLE)
    }
}

/// The namespaces of shared poll channels, with their configuration keys.
fn shared_poll_namespaces(cfg: &NodeConfig) -> impl Iterator<Item = (String, &ChannelOptions)> {
    let ns = cfg
        .channel
        .namespaces
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("channel.namespaces[{i}]"), &n.options));
    std::iter::once(("channel.without_namespace".to_string(), &cfg.channel.without_namespace))
        .chain(ns)
        .filter(|(_, o)| o.subscription_type == crate::subscription::SubscriptionType::SharedPoll)
}

/// Why a call got no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyFailure {
    #[error("timeout")]
    Timeout,
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("unreadable reply: {0}")]
    Garbage(String),
    /// A gRPC backend's status other than OK (its code and message).
    #[error("gRPC status {0}")]
    GrpcStatus(String),
}

impl ProxyFailure {
    /// The `outcome` label of `wshub_proxy_calls_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            ProxyFailure::Timeout => "timeout",
            ProxyFailure::Unreachable(_) => "unreachable",
            ProxyFailure::Status(_) | ProxyFailure::GrpcStatus(_) => "status",
            ProxyFailure::Garbage(_) => "garbage",
        }
    }
}

/// The HTTP side of proxy calls, implemented by the server crate.
pub trait ProxyTransport: Send + Sync {
    /// POSTs `body` (JSON) to the endpoint with `headers` (forwarded client headers, already
    /// filtered by the endpoint's `http_headers`) within its timeout; the body of a 2xx reply.
    fn post<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        headers: &'a [(String, String)],
        body: Vec<u8>,
    ) -> BoxFuture<'a, Result<Bytes, ProxyFailure>>;

    /// Opens a subscription's stream ([`stream`]) with the JSON subscribe request `body`,
    /// within the endpoint's timeout for its first message. Transports without streams
    /// (HTTP has none) refuse.
    fn open_stream<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        headers: &'a [(String, String)],
        body: Vec<u8>,
        bidirectional: bool,
        sink: Arc<dyn stream::StreamSink>,
    ) -> BoxFuture<'a, Result<stream::Opened, ProxyFailure>> {
        let _ = (endpoint, headers, body, bidirectional, sink);
        Box::pin(async { Err(ProxyFailure::Unreachable("no stream support in this transport".into())) })
    }
}

/// A backend's `error`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct BackendError {
    pub code: u32,
    pub message: String,
    pub temporary: bool,
}

/// A backend's `disconnect`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct BackendDisconnect {
    pub code: u32,
    pub reason: String,
}

/// What a backend answered.
#[derive(Debug)]
pub enum Answer<R> {
    /// `result` (absent: `None`).
    Result(Option<R>),
    Error(BackendError),
    Disconnect(BackendDisconnect),
}

#[derive(Deserialize)]
pub(crate) struct Envelope<R> {
    result: Option<R>,
    error: Option<BackendError>,
    disconnect: Option<BackendDisconnect>,
}

/// What identifies the connection in every request.
pub struct Caller<'a> {
    pub client: &'a str,
    pub user: &'a str,
    /// `websocket`, `http_stream`, `sse`, `uni_websocket`…
    pub transport: &'static str,
    pub protocol: &'static str,
    /// Forwarded client headers (lower-case names).
    pub headers: &'a [(String, String)],
    /// The headers of the client's connect request that some proxy forwards (lower-case
    /// names): see [`ProxyConfig::emulated_headers`].
    pub emulated: &'a [(String, String)],
    pub meta: Option<&'a RawValue>,
}

/// The request body (`fields` with the common request fields) and the forwarded headers of
/// a call to `endpoint`.
pub(crate) fn request(
    endpoint: &Endpoint,
    caller: &Caller<'_>,
    mut fields: serde_json::Map<String, serde_json::Value>,
) -> (Vec<u8>, Vec<(String, String)>) {
    fields.insert("client".into(), caller.client.into());
    fields.insert("transport".into(), caller.transport.into());
    fields.insert("protocol".into(), caller.protocol.into());
    fields.insert(
        "encoding".into(),
        if endpoint.config.binary_encoding { "binary" } else { "json" }.into(),
    );
    if endpoint.kind != ProxyKind::Connect {
        fields.insert("user".into(), caller.user.into());
        if endpoint.config.include_connection_meta {
            if let Some(m) = caller.meta {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(m.get()) {
                    fields.insert("meta".into(), v);
                }
            }
        }
    }
    let body = serde_json::to_vec(&fields).unwrap_or_default();
    let forward = match caller.transport {
        GRPC_CLIENT_TRANSPORT => &endpoint.forward_metadata,
        _ => &endpoint.forward,
    };
    let mut headers: Vec<(String, String)> = caller
        .headers
        .iter()
        .filter(|(k, _)| forward.iter().any(|f| f == k))
        .cloned()
        .collect();
    for (k, v) in caller.emulated {
        // A transport header of the same name is preferred (Centrifugo's order).
        if endpoint.forward_emulated.iter().any(|f| f == k) && !headers.iter().any(|(h, _)| h == k) {
            headers.push((k.clone(), v.clone()));
        }
    }
    (body, headers)
}

/// Calls `endpoint` with `fields` added to the common request fields. `Err` is a failure
/// (logged and counted here): the client gets error 100.
pub async fn call<R: DeserializeOwned>(
    transport: &dyn ProxyTransport,
    endpoint: &Endpoint,
    caller: &Caller<'_>,
    fields: serde_json::Map<String, serde_json::Value>,
) -> Result<Answer<R>, ProxyFailure> {
    let kind = endpoint.kind.as_str();
    let (body, headers) = request(endpoint, caller, fields);
    let started = Instant::now();
    let protocol = endpoint.protocol();
    let inflight = crate::series::ProxyInflight::start(protocol, kind, &endpoint.name);
    let r = transport
        .post(endpoint, &headers, body)
        .await
        .and_then(|b| serde_json::from_slice::<Envelope<R>>(&b).map_err(|e| ProxyFailure::Garbage(e.to_string())));
    let took = started.elapsed();
    drop(inflight);
    judge(endpoint, caller, r, took)
}

/// A call's outcome as the client sees it, logged and counted.
pub(crate) fn judge<R>(
    endpoint: &Endpoint,
    caller: &Caller<'_>,
    r: Result<Envelope<R>, ProxyFailure>,
    took: std::time::Duration,
) -> Result<Answer<R>, ProxyFailure> {
    let (protocol, kind) = (endpoint.protocol(), endpoint.kind.as_str());
    let answer = match r {
        Err(f) => match status_answer(&endpoint.config, &f) {
            Some(a) => a,
            None => {
                tracing::warn!(kind, endpoint = %endpoint.config.endpoint, client = caller.client, error = %f, "proxy call failed");
                crate::series::proxy_call(protocol, kind, &endpoint.name, took, f.outcome());
                return Err(f);
            }
        },
        Ok(Envelope { disconnect: Some(d), .. }) => Answer::Disconnect(d),
        Ok(Envelope { error: Some(e), .. }) => Answer::Error(e),
        Ok(Envelope { result, .. }) => Answer::Result(result),
    };
    let outcome = match &answer {
        Answer::Result(_) => "ok",
        Answer::Error(_) => "error",
        Answer::Disconnect(_) => "disconnect",
    };
    crate::series::proxy_call(protocol, kind, &endpoint.name, took, outcome);
    Ok(answer)
}

/// A backend's HTTP status as `http.status_to_code_transforms` turns it into an answer,
/// when one lists it (Centrifugo's `transformHTTPStatusError`; HTTP proxies only).
fn status_answer<R>(c: &ProxyConfig, f: &ProxyFailure) -> Option<Answer<R>> {
    let ProxyFailure::Status(status) = f else { return None };
    let t = c.http.status_to_code_transforms.iter().find(|t| t.status_code == *status)?;
    if t.to_error.code > 0 {
        return Some(Answer::Error(BackendError {
            code: t.to_error.code,
            message: t.to_error.message.clone(),
            temporary: t.to_error.temporary,
        }));
    }
    (t.to_disconnect.code > 0).then(|| {
        Answer::Disconnect(BackendDisconnect {
            code: t.to_disconnect.code,
            reason: t.to_disconnect.reason.clone(),
        })
    })
}

/// Adds `data` (raw JSON, or `b64data` when binary encoding is on or the bytes are not JSON).
pub fn put_data(fields: &mut serde_json::Map<String, serde_json::Value>, endpoint: &Endpoint, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    if !endpoint.config.binary_encoding {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
            fields.insert("data".into(), v);
            return;
        }
    }
    fields.insert("b64data".into(), base64::engine::general_purpose::STANDARD.encode(data).into());
}

/// Raw JSON or base64 bytes of a result field (`info`/`b64info`, `data`/`b64data`); `Err` on
/// bad base64.
pub fn raw_or_b64(raw: &Option<Box<RawValue>>, b64: &str) -> Result<Option<Bytes>, base64::DecodeError> {
    if !b64.is_empty() {
        return base64::engine::general_purpose::STANDARD.decode(b64).map(|v| Some(Bytes::from(v)));
    }
    Ok(raw.as_ref().map(|r| Bytes::copy_from_slice(r.get().as_bytes())))
}

/// `override` of a subscribe result (`{"presence": {"value": false}}`...).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Override {
    pub presence: Option<BoolValue>,
    pub join_leave: Option<BoolValue>,
    pub force_recovery: Option<BoolValue>,
    pub force_push_join_leave: Option<BoolValue>,
    pub force_positioning: Option<BoolValue>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default)]
pub struct BoolValue {
    pub value: bool,
}

impl Override {
    /// The namespace's options with this override applied.
    pub fn apply(&self, o: &ChannelOptions) -> ChannelOptions {
        let mut o = o.clone();
        if let Some(v) = self.presence {
            o.presence = v.value;
        }
        if let Some(v) = self.join_leave {
            o.join_leave = v.value;
        }
        if let Some(v) = self.force_push_join_leave {
            o.force_push_join_leave = v.value;
        }
        if let Some(v) = self.force_recovery {
            o.force_recovery = v.value && o.has_history();
        }
        if let Some(v) = self.force_positioning {
            o.force_positioning = v.value;
        }
        o
    }
}

/// Per-channel options of a connect result's `subs` (and of a connection token's).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SubOptions {
    pub info: Option<Box<RawValue>>,
    pub b64info: String,
    pub data: Option<Box<RawValue>>,
    pub b64data: String,
    #[serde(rename = "override")]
    pub override_: Option<Override>,
    pub expire_at: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ConnectResultBody {
    pub user: String,
    pub expire_at: i64,
    pub info: Option<Box<RawValue>>,
    pub b64info: String,
    pub data: Option<Box<RawValue>>,
    pub b64data: String,
    pub channels: Vec<String>,
    pub subs: BTreeMap<String, SubOptions>,
    pub meta: Option<Box<RawValue>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RefreshResultBody {
    pub expired: bool,
    pub expire_at: i64,
    pub info: Option<Box<RawValue>>,
    pub b64info: String,
    pub meta: Option<Box<RawValue>>,
}

/// A subscribe proxy's result: the same fields as a connect result's options for one
/// channel ([`SubOptions`]).
pub type SubscribeResultBody = SubOptions;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PublishResultBody {
    pub data: Option<Box<RawValue>>,
    pub b64data: String,
    pub skip_history: bool,
}

/// A map publish proxy's `result`: what to write instead of the client's request (each
/// field empty: the client's).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MapPublishResultBody {
    pub key: String,
    pub data: Option<Box<RawValue>>,
    pub b64data: String,
    pub tags: HashMap<String, String>,
    /// `""`, `"if_new"` or `"if_exists"`.
    pub key_mode: String,
    pub idempotency_key: String,
    pub delta: bool,
    pub version: u64,
    pub version_epoch: String,
}

/// A map remove proxy's `result`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MapRemoveResultBody {
    pub key: String,
    pub tags: HashMap<String, String>,
    pub idempotency_key: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SubRefreshResultBody {
    pub expired: bool,
    pub expire_at: i64,
    pub info: Option<Box<RawValue>>,
    pub b64info: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RpcResultBody {
    pub data: Option<Box<RawValue>>,
    pub b64data: String,
}

#[cfg(test)]
mod tests;
