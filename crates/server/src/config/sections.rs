//! The sections of the configuration that say where things are served: listeners, paths
//! (`handler_prefix`), which endpoint is on which port, and the log.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use wshub_core::duration;
use wshub_core::ratelimit::{RateLimitAlgorithm, RateLimitScope};

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct HttpServer {
    /// An IP address, `localhost`, or empty (Centrifugo's default): every interface.
    pub address: String,
    pub port: u16,
    pub tls: Tls,
    /// A second listener for the API, admin, metrics and health, so that they need not be
    /// reachable where clients are (Centrifugo's `internal_port`: a string, or a number).
    /// Empty: everything on `port`.
    #[serde(deserialize_with = "port_string")]
    pub internal_port: String,
    /// The internal listener's address; empty: `address`.
    pub internal_address: String,
    /// TLS of the internal listener; when not enabled, the internal listener has `tls`
    /// (unless `tls_external`).
    pub internal_tls: Tls,
    /// `tls` only on the external listener: the internal one is plain unless `internal_tls`.
    pub tls_external: bool,
    /// HTTP/2 without TLS (prior knowledge) on the external listener, beside HTTP/1.1, for
    /// a TLS-terminating proxy in front; needs a separate internal port and no `tls`, as in
    /// Centrifugo.
    pub h2c_external: bool,
    /// Time to receive a request's whole body once its headers are in, for every endpoint
    /// that reads one (`/api` has `http_api.body_timeout`); over it: 408 and the connection
    /// closes. "0": no limit (a client could then hold a connection by never finishing).
    #[serde(with = "duration")]
    pub read_timeout: Duration,
}

impl Default for HttpServer {
    fn default() -> Self {
        HttpServer {
            address: "0.0.0.0".into(),
            port: 8000,
            tls: Tls::default(),
            internal_port: String::new(),
            internal_address: String::new(),
            internal_tls: Tls::default(),
            tls_external: false,
            h2c_external: false,
            read_timeout: Duration::from_secs(10),
        }
    }
}

/// Centrifugo's `TLSConfig`: every PEM value is a file path, PEM text, or base64 of PEM text
/// (read by [`crate::tls::pem`] in Centrifugo's order: PEM, base64, path).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Tls {
    pub enabled: bool,
    pub cert_pem: String,
    pub key_pem: String,
    /// Set: clients must present a certificate signed by one of these CAs (mutual TLS).
    pub client_ca_pem: String,
    /// Where wshub is the client (Redis, proxies): the CAs that sign the server's certificate.
    pub server_ca_pem: String,
    pub insecure_skip_verify: bool,
    pub server_name: String,
    /// wshub's earlier names for `cert_pem` / `key_pem` (paths only), still read.
    pub cert_pem_file: String,
    pub key_pem_file: String,
}

impl Tls {
    /// `cert_pem`, or the earlier `cert_pem_file`.
    pub fn cert(&self) -> &str {
        if self.cert_pem.is_empty() {
            &self.cert_pem_file
        } else {
            &self.cert_pem
        }
    }

    /// `key_pem`, or the earlier `key_pem_file`.
    pub fn key(&self) -> &str {
        if self.key_pem.is_empty() {
            &self.key_pem_file
        } else {
            &self.key_pem
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct HttpApi {
    /// No `/api` at all (Centrifugo's `http_api.disabled`).
    pub disabled: bool,
    /// Serve the API on `http_server.port` even when an internal port is set.
    pub external: bool,
    /// Methods are `POST {handler_prefix}/<method>`.
    pub handler_prefix: String,
    /// Empty: every API call is refused (unless `insecure`).
    pub key: String,
    /// API calls per second per key (0: unlimited); over it: 429.
    pub rate_limit: u32,
    /// `node`: each node counts for itself; `cluster`: one budget per key across nodes
    /// (through Redis).
    pub rate_limit_scope: RateLimitScope,
    /// `token_bucket` (default), `leaky_bucket` or `sliding_window` (README, "Rate limits").
    pub rate_limit_algorithm: RateLimitAlgorithm,
    /// Accept API calls without a key (development only).
    pub insecure: bool,
    /// Time to receive a request's whole body once its headers are in (over it: 408);
    /// "0": no limit.
    #[serde(with = "duration")]
    pub body_timeout: Duration,
    /// How a call's error is answered (Centrifugo's `http_api.error_mode`).
    pub error_mode: ErrorMode,
}

/// Centrifugo's `error_mode` of its APIs: an error inside a 200 answer (the default), or
/// (`transport`) the transport's own status with the error as the body. A request can ask
/// for `transport` itself with the header `X-Centrifugo-Error-Mode: transport`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ErrorMode {
    #[default]
    #[serde(rename = "")]
    Default,
    Transport,
}

impl Default for HttpApi {
    fn default() -> Self {
        HttpApi {
            disabled: false,
            external: false,
            handler_prefix: "/api".into(),
            key: String::new(),
            rate_limit: 0,
            rate_limit_scope: RateLimitScope::Node,
            rate_limit_algorithm: RateLimitAlgorithm::TokenBucket,
            insecure: false,
            body_timeout: Duration::from_secs(10),
            error_mode: ErrorMode::Default,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct WebSocket {
    /// No WebSocket endpoint (clients use the HTTP transports).
    pub disabled: bool,
    pub handler_prefix: String,
    pub message_size_limit: usize,
    pub compression: bool,
    pub compression_level: u32,
    pub compression_min_size: usize,
    #[serde(with = "duration")]
    pub write_timeout: Duration,
    /// With compression, the largest message after decompression (0: `message_size_limit`);
    /// wshub holds every message to `message_size_limit` after decompression already, so
    /// this can only lower it (Centrifugo's default, 0, allows ten times that).
    pub decompressed_message_size_limit: usize,
    /// Centrifugo's (Go's) buffer tuning: wshub sizes its buffers per message, so these
    /// change nothing.
    pub read_buffer_size: usize,
    pub write_buffer_size: usize,
    pub use_write_buffer_pool: bool,
}

impl WebSocket {
    /// The largest message accepted, after decompression.
    pub fn max_message_size(&self) -> usize {
        after_decompression(self.compression, self.decompressed_message_size_limit, self.message_size_limit)
    }
}

/// The largest message a WebSocket endpoint accepts after decompression: `limit`, or the
/// lower `decompressed` limit with compression on.
pub(super) fn after_decompression(compression: bool, decompressed: usize, limit: usize) -> usize {
    match (compression, decompressed) {
        (true, d) if d > 0 => d.min(limit),
        _ => limit,
    }
}

impl Default for WebSocket {
    fn default() -> Self {
        WebSocket {
            disabled: false,
            handler_prefix: "/connection/websocket".into(),
            message_size_limit: 65536,
            compression: false,
            compression_level: 1,
            compression_min_size: 0,
            write_timeout: Duration::from_secs(1),
            decompressed_message_size_limit: 0,
            read_buffer_size: 0,
            write_buffer_size: 0,
            use_write_buffer_pool: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Admin {
    /// Serve the admin web page at `handler_prefix`.
    pub enabled: bool,
    /// Serve the page on `http_server.port` even when an internal port is set.
    pub external: bool,
    /// Where the page is; empty (Centrifugo's default, its own UI at the root): `/admin`.
    pub handler_prefix: String,
    /// The page's login password.
    pub password: String,
    /// Signs admin sessions (any node with the same secret accepts them).
    pub secret: String,
    /// No login: anyone who reaches `/admin` is an admin. Local development only.
    pub insecure: bool,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            enabled: false,
            external: false,
            handler_prefix: "/admin".into(),
            password: String::new(),
            secret: String::new(),
            insecure: false,
        }
    }
}

/// `http_stream.*` and `sse.*`: the HTTP transports of bidirectional emulation (the
/// unidirectional ones: [`super::UniHttpTransport`]).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct HttpTransport {
    pub enabled: bool,
    /// The endpoint's path; empty: the transport's own (`/connection/http_stream`,
    /// `/connection/sse`). One type serves both sections, so the default cannot be written
    /// here.
    pub handler_prefix: String,
    /// Largest connect request (the `http_stream` body, or `cf_connect` for SSE).
    pub max_request_body_size: usize,
}

impl Default for HttpTransport {
    fn default() -> Self {
        HttpTransport {
            enabled: false,
            handler_prefix: String::new(),
            max_request_body_size: 65536,
        }
    }
}

/// `emulation.*`: the `/emulation` endpoint that carries an emulated session's commands.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct EmulationSection {
    pub handler_prefix: String,
    pub max_request_body_size: usize,
}

impl Default for EmulationSection {
    fn default() -> Self {
        EmulationSection {
            handler_prefix: "/emulation".into(),
            max_request_body_size: 65536,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Prometheus {
    /// On by default in wshub (off in Centrifugo).
    pub enabled: bool,
    pub handler_prefix: String,
    /// Count every HTTP request by route, method and status
    /// (`centrifugo_node_incoming_http_requests_total`), as Centrifugo's option does.
    pub instrument_http_handlers: bool,
    /// Export `centrifugo_client_recovered_publications`, how many publications each
    /// successful recovery brought.
    pub recovered_publications_histogram: bool,
    /// Histograms also kept as Prometheus native histograms, exported in the protobuf
    /// format to a scraper that asks for it (`metrics::native`).
    pub native_histograms: bool,
}

impl Default for Prometheus {
    fn default() -> Self {
        Prometheus {
            enabled: true,
            handler_prefix: "/metrics".into(),
            instrument_http_handlers: false,
            recovered_publications_histogram: false,
            native_histograms: false,
        }
    }
}

/// `health.*`: the liveness endpoint. On by default in wshub (Centrifugo's default is off):
/// a node without a probe endpoint cannot be supervised, and an answer where Centrifugo
/// would have none breaks nobody. A file that sets `enabled: false` (Centrifugo's
/// `defaultconfig` does) turns it off, as in Centrifugo. wshub's `/ready` is always served
/// beside it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Health {
    pub enabled: bool,
    pub handler_prefix: String,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            enabled: true,
            handler_prefix: "/health".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Log {
    /// `none`, `trace`, `debug`, `info`, `warn`, `error` or `fatal` (any case), as
    /// Centrifugo.
    pub level: String,
    pub format: String,
    /// Append the log to this file instead of standard output.
    pub file: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".into(),
            format: "text".into(),
            file: String::new(),
        }
    }
}

/// `init.*`: `GET /connection/init` answers `{}` (Centrifugo: to open an HTTP/2 connection
/// before the WebSocket, or as a public health check for a load balancer).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct ConnInit {
    pub enabled: bool,
    pub handler_prefix: String,
}

impl Default for ConnInit {
    fn default() -> Self {
        ConnInit {
            enabled: false,
            handler_prefix: "/connection/init".into(),
        }
    }
}

/// A port given as a string (Centrifugo's type for `internal_port`) or as a number.
fn port_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Port {
        Text(String),
        Number(u64),
    }
    Ok(match Port::deserialize(d)? {
        Port::Text(s) => s.trim().to_string(),
        Port::Number(n) => n.to_string(),
    })
}
