//! Builds a running server from a [`Config`]: the node on its engine, the listener's
//! settings, the client endpoint and the API.

use std::sync::Arc;

use wshub_core::node::Node;
use wshub_core::ratelimit::{ClusterLimiter, RateLimitAlgorithm, RateLimitScope};
use wshub_protocol::Format;
use wshub_websocket::handshake::{HandshakeConfig, OriginPolicy};
use wshub_websocket::DeflateConfig;

use crate::cluster::Cluster;
use crate::config::{to_node_config, Config, LoadError};
use crate::state::{Admission, ApiConfig, ServerConfig};
use crate::transport::websocket::ClientHandler;

/// The subprotocol that selects the Protobuf format.
pub const PROTOBUF_SUBPROTOCOL: &str = "centrifuge-protobuf";
/// The client endpoint.
pub const WS_PATH: &str = "/connection/websocket";
/// The unidirectional WebSocket endpoint (`uni_websocket.enabled`).
pub const UNI_WS_PATH: &str = "/connection/uni_websocket";

/// The node and the listener settings for `config`.
pub fn build(config: &Config) -> Result<(Arc<Node>, ServerConfig), LoadError> {
    if config.prometheus.recovered_publications_histogram {
        wshub_core::series::enable_recovered_publications_histogram();
    }
    if config.prometheus.native_histograms {
        crate::metrics::native::enable();
    }
    let engines = crate::engines::build(config)?;
    let shared_broker = engines.shared_broker;
    let control = engines.control;
    let maps: Arc<dyn wshub_core::subscription::map::broker::MapBroker> = match config.map_broker.redis_config()? {
        Some(cfg) => Arc::new(wshub_redis::RedisEngine::new(cfg).map_err(|e| LoadError(e.to_string()))?),
        None => Arc::new(wshub_core::subscription::map::broker::MemoryMapBroker::default()),
    };
    let node =
        Node::with_map_broker(to_node_config(config), engines.broker, engines.presence, maps).map_err(|e| LoadError(e.to_string()))?;
    let cluster = Cluster::new(node.clone(), control);
    cluster.set_info_metrics_interval(config.node.info_metrics_aggregate_interval);
    if config.graphite.enabled {
        cluster.set_graphite(crate::graphite::Settings::new(&config.graphite, &node.info().name));
    }
    let limiters = cluster_limiters(config)?;
    if let Some(l) = &limiters.command {
        node.set_command_limiter(l.clone());
    }
    if !node.proxies.is_empty() {
        let t = crate::proxy::HttpProxy::new(&node.proxies).map_err(LoadError)?;
        node.set_proxy_transport(Arc::new(t));
    }
    if node.uses_jwks() {
        let f = crate::proxy::HttpJwks::new().map_err(LoadError)?;
        node.set_jwks_fetcher(Arc::new(f));
    }
    // Only the headers some proxy forwards are kept by a session.
    let forwarded = node.kept_request_headers();
    let queue = config.client.queue_max_size;
    let factory_node = node.clone();
    let (endpoints, internal) = crate::endpoints::plan(config)?;
    // The unidirectional endpoint at its configured path (the factory sees the request's).
    let uni_path = endpoints.uni_websocket.clone();
    let uni_close = crate::transport::websocket::UniClose {
        disconnect_push: !config.uni_websocket.disable_disconnect_push,
        close_frame: !config.uni_websocket.disable_closing_handshake,
    };
    let pusher = crate::pusher::Dialect::build(config, &node, &cluster);
    let factory_pusher = pusher.clone();
    let handler: crate::state::HandlerFactory = Arc::new(move |accepted, uri, headers| {
        if let Some(p) = factory_pusher.as_ref().filter(|_| uri.path().starts_with(crate::pusher::WS_PREFIX)) {
            return Box::new(p.handler(&factory_node, uri, accepted.deflate, queue));
        }
        if uni_path.as_deref() == Some(uri.path()) {
            let mut h = ClientHandler::unidirectional(factory_node.clone(), queue, accepted.deflate, uni_close);
            h.set_request_headers(crate::transports::forwarded_headers(&forwarded, headers));
            return Box::new(h);
        }
        let protobuf = accepted.protocol.as_deref() == Some(PROTOBUF_SUBPROTOCOL)
            || uri
                .query()
                .is_some_and(|q| q.split('&').any(|kv| kv == "format=protobuf" || kv == "cf_protocol=protobuf"));
        let format = if protobuf { Format::Protobuf } else { Format::Json };
        let mut h = ClientHandler::new(factory_node.clone(), format, accepted.deflate, queue);
        h.set_request_headers(crate::transports::forwarded_headers(&forwarded, headers));
        Box::new(h)
    });
    let ws = &config.websocket;
    let hs = &config.http_server;
    let main_tls = match &hs.tls {
        t if t.enabled => Some(crate::tls::acceptor("http_server.tls", t)?),
        _ => None,
    };
    let server = ServerConfig {
        endpoints,
        internal: match internal {
            Some((addr, endpoints)) => Some(crate::state::InternalListener {
                addr,
                endpoints,
                tls: match &hs.internal_tls {
                    t if t.enabled => Some(crate::tls::acceptor("http_server.internal_tls", t)?),
                    // Centrifugo's `tls_external`: the internal port stays plain.
                    _ if hs.tls_external => None,
                    _ => main_tls.clone(),
                },
            }),
            None => None,
        },
        handshake: HandshakeConfig {
            protocols: vec![PROTOBUF_SUBPROTOCOL.to_string()],
            deflate: ws.compression.then_some(DeflateConfig {
                level: ws.compression_level,
                min_size: ws.compression_min_size,
            }),
            origins: OriginPolicy::from_list(&config.client.allowed_origins),
        },
        max_message_size: ws.max_message_size(),
        uni_websocket: {
            let u = &config.uni_websocket;
            crate::state::WsEndpoint {
                handshake: HandshakeConfig {
                    protocols: Vec::new(),
                    deflate: u.compression.then_some(DeflateConfig {
                        level: u.compression_level,
                        min_size: u.compression_min_size,
                    }),
                    origins: OriginPolicy::from_list(&config.client.allowed_origins),
                },
                max_message_size: u.max_message_size(),
                write_timeout: Some(u.write_timeout()),
            }
        },
        handshake_timeout: config.client.handshake_timeout,
        read_timeout: (!config.http_server.read_timeout.is_zero()).then_some(config.http_server.read_timeout),
        handler,
        api: Some(ApiConfig {
            node: node.clone(),
            cluster,
            key: config.http_api.key.clone(),
            insecure: config.http_api.insecure,
            rate_limit: config.http_api.rate_limit,
            rate_limit_algorithm: config.http_api.rate_limit_algorithm,
            rate_limit_cluster: limiters.api,
            body_timeout: (!config.http_api.body_timeout.is_zero()).then_some(config.http_api.body_timeout),
            refuse_publish_while_draining: !shared_broker,
            transport_errors: config.http_api.error_mode == crate::config::ErrorMode::Transport,
            consumers: Arc::new(crate::consumers::Consumers::new(config.consumers.clone())),
        }),
        admission: Admission {
            connection_limit: config.client.connection_limit,
            connection_rate_limit: config.client.connection_rate_limit,
            connection_rate_limit_algorithm: config.client.connection_rate_limit_algorithm,
            connection_rate_limit_per_ip: config.client.connection_rate_limit_per_ip,
            connection_rate_limit_per_ip_algorithm: config
                .client
                .connection_rate_limit_per_ip_algorithm
                .unwrap_or(RateLimitAlgorithm::SlidingWindow),
            connection_rate_limit_per_ip_cluster: limiters.per_ip,
        },
        write_timeout: (!ws.write_timeout.is_zero()).then_some(ws.write_timeout),
        metrics: config.prometheus.enabled,
        instrument_http: config.prometheus.enabled && config.prometheus.instrument_http_handlers,
        tls: main_tls,
        h2c: hs.h2c_external,
        grpc_api: crate::grpc::api::GrpcApiConfig::from_config(config)?,
        uni_grpc: crate::grpc::uni::UniGrpcConfig::from_config(config)?,
        emulation: crate::state::EmulationConfig {
            http_stream: config.http_stream.enabled,
            sse: config.sse.enabled,
            uni_http_stream: config.uni_http_stream.enabled,
            uni_sse: config.uni_sse.enabled,
            uni_http_stream_refusals: config.uni_http_stream.connect_code_to_http_response.clone(),
            uni_sse_refusals: config.uni_sse.connect_code_to_http_response.clone(),
            max_request_body_size: config
                .http_stream
                .max_request_body_size
                .max(config.sse.max_request_body_size)
                .max(config.uni_http_stream.max_request_body_size)
                .max(config.uni_sse.max_request_body_size)
                .max(config.emulation.max_request_body_size),
            max_queue: config.client.queue_max_size,
            forwarded_headers: node.kept_request_headers(),
        },
        pusher: pusher.map(|p| p.api),
        admin: config.admin.enabled.then(|| crate::admin::AdminConfig {
            password: config.admin.password.clone(),
            secret: config.admin.secret.clone(),
            insecure: config.admin.insecure,
            // The cookie of a page served over TLS (on whichever port it is).
            secure_cookie: match config.admin.external || hs.internal_port.is_empty() {
                true => hs.tls.enabled,
                false => (hs.tls.enabled && !hs.tls_external) || hs.internal_tls.enabled,
            },
            prefix: crate::endpoints::admin_prefix(config),
        }),
    };
    if config.client.insecure_skip_token_signature_verify {
        tracing::warn!(
            "client.insecure_skip_token_signature_verify: token SIGNATURES ARE NOT CHECKED, anyone can connect and subscribe as anyone; for development only"
        );
    }
    if config.client.insecure {
        tracing::warn!("client.insecure: connections need no token and every channel permission is granted; for development only");
    }
    if config.admin.enabled && config.admin.insecure {
        tracing::warn!("admin.insecure: the admin page at /admin needs no login; for local development only");
    }
    Ok((node, server))
}

/// The limiters of the rate limits whose scope is `cluster` (`None`: counted per node).
struct ClusterLimiters {
    command: Option<Arc<dyn ClusterLimiter>>,
    per_ip: Option<Arc<dyn ClusterLimiter>>,
    api: Option<Arc<dyn ClusterLimiter>>,
}

/// One Redis limiter (one connection) shared by every limit in cluster scope. The loader
/// refuses `cluster` without the Redis engine; a configuration built by hand that asks for it
/// anyway is refused here, naming the key.
fn cluster_limiters(config: &Config) -> Result<ClusterLimiters, LoadError> {
    let scopes = config.rate_limit_scopes();
    let wanted = |key: &str| scopes.iter().any(|(k, s)| *k == key && *s == RateLimitScope::Cluster);
    let mut shared: Option<Arc<dyn ClusterLimiter>> = None;
    if let Some((key, _)) = scopes.iter().find(|(_, s)| *s == RateLimitScope::Cluster) {
        let Some(redis) = config.broker_redis() else {
            return Err(LoadError(format!(
                "{key}: \"cluster\" needs engine.type = \"redis\" (or a Redis broker)"
            )));
        };
        let l = wshub_redis::RedisLimiter::from_config(&redis.engine_config()?).map_err(|e| LoadError(e.to_string()))?;
        shared = Some(Arc::new(l));
    }
    let pick = |key: &str| if wanted(key) { shared.clone() } else { None };
    Ok(ClusterLimiters {
        command: pick("client.command_rate_limit_scope"),
        per_ip: pick("client.connection_rate_limit_per_ip_scope"),
        api: pick("http_api.rate_limit_scope"),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A draining node refuses publications only when nobody else could deliver them.
    #[test]
    fn publications_refused_while_draining_only_on_the_memory_engine() {
        let mut c = Config::default();
        let (_, s) = build(&c).unwrap();
        assert!(s.api.unwrap().refuse_publish_while_draining);
        c.engine.r#type = "redis".into();
        let (_, s) = build(&c).unwrap();
        let api = s.api.unwrap();
        assert!(!api.refuse_publish_while_draining);
        assert_eq!(api.body_timeout, Some(std::time::Duration::from_secs(10)));
        c.http_api.body_timeout = std::time::Duration::ZERO;
        assert_eq!(build(&c).unwrap().1.api.unwrap().body_timeout, None, "\"0\": no limit");
    }
}
