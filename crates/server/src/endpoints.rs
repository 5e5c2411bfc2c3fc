//! Which endpoints a listener serves, at which paths (Centrifugo's `handler_prefix` keys),
//! and which listener each endpoint is on (`http_server.internal_port`, `*.external`).
//!
//! Centrifugo v6 (`internal/app/mux.go`, `runHTTPServers`) puts the client transports on
//! `http_server.port` and the API, admin, metrics and health on the internal address
//! (`internal_address`:`internal_port`, each defaulting to the main one), except the API
//! with `http_api.external` and admin with `admin.external`; endpoints whose addresses are
//! the same share one listener. wshub does the same, and adds `/ready` (its readiness probe)
//! beside health and the landing page `GET /` beside the clients.
//!
//! The rest of the server matches requests against fixed, canonical paths
//! ([`crate::app::WS_PATH`], [`SSE_PATH`], `/admin/…`): a configured path is
//! translated to its canonical one here, once per request, so that nothing else needs to
//! know the configuration's paths.

use std::net::SocketAddr;

use crate::config::{Config, LoadError};

/// The admin page's canonical prefix (the page's own files name it).
pub const ADMIN_PATH: &str = "/admin";

/// The HTTP transports' endpoints (Centrifugo's paths).
pub const HTTP_STREAM_PATH: &str = "/connection/http_stream";
pub const SSE_PATH: &str = "/connection/sse";
pub const EMULATION_PATH: &str = "/emulation";
pub const UNI_HTTP_STREAM_PATH: &str = "/connection/uni_http_stream";
pub const UNI_SSE_PATH: &str = "/connection/uni_sse";

/// What one listener serves, and where. `None`: not on this listener.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoints {
    /// Every path upgrades to WebSocket but `/health` and `/ready` (the echo server of
    /// conformance runs).
    pub upgrade_everywhere: bool,
    pub websocket: Option<String>,
    pub uni_websocket: Option<String>,
    pub http_stream: Option<String>,
    pub sse: Option<String>,
    pub uni_http_stream: Option<String>,
    pub uni_sse: Option<String>,
    pub emulation: Option<String>,
    /// `GET /connection/init`: `{}`.
    pub init: Option<String>,
    /// `POST {api}/<method>`.
    pub api: Option<String>,
    /// The admin page and its calls under this prefix.
    pub admin: Option<String>,
    pub metrics: Option<String>,
    pub health: Option<String>,
    /// The profiling endpoints (`debug.enabled`) under this prefix.
    pub debug: Option<String>,
    /// wshub's `/ready`.
    pub ready: bool,
    /// `GET /`: a short page saying where things are.
    pub landing: bool,
    /// The Pusher dialect: `/app/{key}` (WebSocket) and `/apps/{id}/…` (its HTTP API).
    pub pusher: bool,
}

/// What a request asks for, by canonical path.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    WebSocket,
    UniWebSocket,
    /// An HTTP transport or `/emulation`, by its canonical path.
    Transport(&'static str),
    Init,
    /// A server API method.
    Api(&'a str),
    /// The admin page, with the path rewritten under [`ADMIN_PATH`].
    Admin(String),
    Metrics,
    Health,
    Ready,
    Landing,
    /// Pusher's HTTP API under `/apps/`.
    PusherApi,
    /// A profiling endpoint, by its name under `debug.handler_prefix` (`""`: the index).
    Debug(&'a str),
    NotFound,
}

/// A configured prefix as Centrifugo reads it: without its trailing `/`, and `/` when
/// nothing is left.
fn clean(prefix: &str) -> String {
    match prefix.trim_end_matches('/') {
        "" => "/".to_string(),
        p => p.to_string(),
    }
}

/// `prefix` with the transport's own path when it is empty (one config type serves four
/// HTTP transports: [`crate::config::HttpTransport::handler_prefix`]).
fn or_default(prefix: &str, default: &str) -> String {
    match prefix {
        "" => default.to_string(),
        p => clean(p),
    }
}

impl Endpoints {
    /// The echo server's: WebSocket on every path, `/health` and `/ready`.
    pub fn echo() -> Self {
        Endpoints {
            upgrade_everywhere: true,
            health: Some("/health".into()),
            ready: true,
            ..Default::default()
        }
    }

    /// Whether this listener serves any HTTP streaming transport (then it reads the first
    /// bytes of a connection to serve those streams outside hyper: [`crate::transport::raw`]).
    pub fn any_stream(&self) -> bool {
        self.http_stream.is_some() || self.sse.is_some() || self.uni_http_stream.is_some() || self.uni_sse.is_some()
    }

    /// The streaming transports on this listener: (configured path, canonical path).
    pub fn streams(&self) -> impl Iterator<Item = (&str, &'static str)> {
        [
            (&self.http_stream, HTTP_STREAM_PATH),
            (&self.sse, SSE_PATH),
            (&self.uni_http_stream, UNI_HTTP_STREAM_PATH),
            (&self.uni_sse, UNI_SSE_PATH),
        ]
        .into_iter()
        .filter_map(|(p, c)| p.as_deref().map(|p| (p, c)))
    }

    /// The endpoint `path` names on this listener.
    pub fn route<'a>(&self, path: &'a str) -> Route<'a> {
        let is = |p: &Option<String>| p.as_deref() == Some(path);
        if self.upgrade_everywhere {
            return match path {
                "/health" => Route::Health,
                "/ready" => Route::Ready,
                _ => Route::WebSocket,
            };
        }
        if is(&self.websocket) {
            return Route::WebSocket;
        }
        if is(&self.uni_websocket) {
            return Route::UniWebSocket;
        }
        if let Some((_, canonical)) = self.streams().find(|(p, _)| *p == path) {
            return Route::Transport(canonical);
        }
        if is(&self.emulation) {
            return Route::Transport(EMULATION_PATH);
        }
        if is(&self.init) {
            return Route::Init;
        }
        if is(&self.metrics) {
            return Route::Metrics;
        }
        if is(&self.health) {
            return Route::Health;
        }
        if self.ready && path == "/ready" {
            return Route::Ready;
        }
        if let Some(prefix) = &self.api {
            let rest = if prefix == "/" {
                Some(path)
            } else {
                path.strip_prefix(prefix.as_str())
            };
            if let Some(method) = rest.and_then(|r| r.strip_prefix('/')) {
                // At the root, only a method's name is the API's (`/favicon.ico` is not).
                if !method.is_empty() && !method.contains('/') && (prefix != "/" || crate::api::is_method(method)) {
                    return Route::Api(method);
                }
            }
        }
        if let Some(prefix) = &self.admin {
            if let Some(rest) = path.strip_prefix(prefix.as_str()) {
                if rest.is_empty() || rest.starts_with('/') {
                    return Route::Admin(format!("{ADMIN_PATH}{rest}"));
                }
            }
        }
        if let Some(prefix) = &self.debug {
            if let Some(rest) = path.strip_prefix(prefix.as_str()) {
                if rest.is_empty() || rest.starts_with('/') {
                    return Route::Debug(rest.trim_start_matches('/'));
                }
            }
        }
        if self.landing && path == "/" {
            return Route::Landing;
        }
        if self.pusher {
            if path.starts_with(crate::pusher::WS_PREFIX) {
                return Route::WebSocket;
            }
            if path.starts_with(crate::pusher::API_PREFIX) {
                return Route::PusherApi;
            }
        }
        Route::NotFound
    }
}

/// Where each endpoint is: the main listener's endpoints, and the internal listener's
/// address and endpoints when it is a listener of its own.
pub fn plan(c: &Config) -> Result<(Endpoints, Option<(SocketAddr, Endpoints)>), LoadError> {
    // An empty prefix is the root, as Centrifugo; but one config type serves the four HTTP
    // transports, where empty is their own path.
    let on = |enabled: bool, prefix: &str| enabled.then(|| clean(prefix));
    let transport = |enabled: bool, prefix: &str, default: &str| enabled.then(|| or_default(prefix, default));
    let mut external = Endpoints {
        websocket: on(!c.websocket.disabled, &c.websocket.handler_prefix),
        uni_websocket: on(c.uni_websocket.enabled, &c.uni_websocket.handler_prefix),
        http_stream: transport(c.http_stream.enabled, &c.http_stream.handler_prefix, HTTP_STREAM_PATH),
        sse: transport(c.sse.enabled, &c.sse.handler_prefix, SSE_PATH),
        uni_http_stream: transport(c.uni_http_stream.enabled, &c.uni_http_stream.handler_prefix, UNI_HTTP_STREAM_PATH),
        uni_sse: transport(c.uni_sse.enabled, &c.uni_sse.handler_prefix, UNI_SSE_PATH),
        emulation: on(c.http_stream.enabled || c.sse.enabled, &c.emulation.handler_prefix),
        init: on(c.init.enabled, &c.init.handler_prefix),
        landing: true,
        pusher: !c.pusher.apps.is_empty(),
        ..Default::default()
    };
    let api = on(!c.http_api.disabled, &c.http_api.handler_prefix);
    let admin = c.admin.enabled.then(|| admin_prefix(c));
    let mut internal = Endpoints {
        metrics: on(c.prometheus.enabled, &c.prometheus.handler_prefix),
        health: on(c.health.enabled, &c.health.handler_prefix),
        debug: on(c.debug.enabled, &c.debug.handler_prefix),
        ready: true,
        ..Default::default()
    };
    match c.http_api.external {
        true => external.api = api,
        false => internal.api = api,
    }
    match c.admin.external {
        true => external.admin = admin,
        false => internal.admin = admin,
    }
    Ok(match crate::config::internal_listen_addr(c)? {
        Some(addr) => (external, Some((addr, internal))),
        None => (external.merge(internal), None),
    })
}

/// `admin.handler_prefix`: empty (Centrifugo's default, which serves its own UI at the
/// root) or `/` is `/admin`, where the landing page links it and clear of every other path.
pub fn admin_prefix(c: &Config) -> String {
    match c.admin.handler_prefix.trim_end_matches('/') {
        "" => ADMIN_PATH.to_string(),
        p => p.to_string(),
    }
}

/// Where a person reaches the API, for the start banner; `base` is the main listener's
/// `scheme://host:port`.
pub fn api_url(c: &Config, base: &str) -> String {
    if c.http_api.disabled {
        return "off (http_api.disabled)".into();
    }
    let prefix = c.http_api.handler_prefix.trim_end_matches('/');
    url(c, base, c.http_api.external, &format!("{prefix}/<method>"))
}

/// Where a person reaches the admin page, for the start banner.
pub fn admin_url(c: &Config, base: &str) -> String {
    url(c, base, c.admin.external, &admin_prefix(c))
}

/// `path` on the main listener (`base`) or, when it is internal and the internal port is a
/// listener of its own, on that port (same host).
fn url(c: &Config, base: &str, external: bool, path: &str) -> String {
    match (crate::config::internal_listen_addr(c), external, base.rsplit_once(':')) {
        (Ok(Some(addr)), false, Some((host, _))) => format!("{host}:{}{path} (internal port)", addr.port()),
        _ => format!("{base}{path}"),
    }
}

/// The WebSocket endpoint's path, for the start banner.
pub fn websocket_path(c: &Config) -> String {
    match c.websocket.disabled {
        true => " (off: websocket.disabled)".into(),
        false => clean(&c.websocket.handler_prefix),
    }
}

impl Endpoints {
    /// One listener serving both sets (each endpoint is in one set only).
    fn merge(self, other: Endpoints) -> Endpoints {
        Endpoints {
            upgrade_everywhere: self.upgrade_everywhere || other.upgrade_everywhere,
            websocket: self.websocket.or(other.websocket),
            uni_websocket: self.uni_websocket.or(other.uni_websocket),
            http_stream: self.http_stream.or(other.http_stream),
            sse: self.sse.or(other.sse),
            uni_http_stream: self.uni_http_stream.or(other.uni_http_stream),
            uni_sse: self.uni_sse.or(other.uni_sse),
            emulation: self.emulation.or(other.emulation),
            init: self.init.or(other.init),
            api: self.api.or(other.api),
            admin: self.admin.or(other.admin),
            metrics: self.metrics.or(other.metrics),
            health: self.health.or(other.health),
            debug: self.debug.or(other.debug),
            ready: self.ready || other.ready,
            landing: self.landing || other.landing,
            pusher: self.pusher || other.pusher,
        }
    }

    /// The endpoints' names, as Centrifugo logs them ("serving websocket, api, … on …").
    pub fn names(&self) -> String {
        let all = [
            (self.websocket.is_some() || self.upgrade_everywhere, "websocket"),
            (self.http_stream.is_some(), "http_stream"),
            (self.sse.is_some(), "sse"),
            (self.emulation.is_some(), "emulation"),
            (self.api.is_some(), "api"),
            (self.admin.is_some(), "admin"),
            (self.metrics.is_some(), "prometheus"),
            (self.debug.is_some(), "debug"),
            (self.health.is_some(), "health"),
            (self.ready, "ready"),
            (self.uni_websocket.is_some(), "uni_websocket"),
            (self.uni_sse.is_some(), "uni_sse"),
            (self.uni_http_stream.is_some(), "uni_http_stream"),
            (self.init.is_some(), "init"),
        ];
        all.iter().filter(|(on, _)| *on).map(|(_, n)| *n).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn config(j: serde_json::Value) -> Config {
        serde_json::from_value(j).unwrap()
    }

    #[test]
    fn without_an_internal_port_everything_is_on_one_listener_at_centrifugos_paths() {
        let (main, internal) = plan(&Config::default()).unwrap();
        assert!(internal.is_none());
        assert_eq!(main.route("/connection/websocket"), Route::WebSocket);
        assert_eq!(main.route("/api/publish"), Route::Api("publish"));
        assert_eq!(main.route("/health"), Route::Health);
        assert_eq!(main.route("/ready"), Route::Ready);
        assert_eq!(main.route("/metrics"), Route::Metrics);
        assert_eq!(main.route("/"), Route::Landing);
        assert_eq!(main.route("/admin"), Route::NotFound, "admin is off by default");
        assert_eq!(main.route("/connection/sse"), Route::NotFound);
        assert_eq!(main.route("/connection/init"), Route::NotFound, "init is off by default");
        let (main, internal) = plan(&config(serde_json::json!({
            "init": {"enabled": true},
            "http_server": {"internal_port": "9000"},
        })))
        .unwrap();
        assert_eq!(main.route("/connection/init"), Route::Init, "init is with the clients");
        assert_eq!(internal.unwrap().1.route("/connection/init"), Route::NotFound);
    }

    #[test]
    fn the_internal_port_takes_api_admin_metrics_and_health_unless_external() {
        let c = config(serde_json::json!({
            "http_server": {"internal_port": "9000"},
            "admin": {"enabled": true, "password": "p", "secret": "s"},
        }));
        let (main, internal) = plan(&c).unwrap();
        let (addr, internal) = internal.unwrap();
        assert_eq!(addr.port(), 9000);
        assert_eq!(main.route("/api/publish"), Route::NotFound);
        assert_eq!(main.route("/health"), Route::NotFound);
        assert_eq!(main.route("/admin/"), Route::NotFound);
        assert_eq!(main.route("/connection/websocket"), Route::WebSocket);
        assert_eq!(internal.route("/connection/websocket"), Route::NotFound);
        assert_eq!(internal.route("/api/publish"), Route::Api("publish"));
        assert_eq!(internal.route("/admin/api/info"), Route::Admin("/admin/api/info".into()));
        assert_eq!(internal.route("/metrics"), Route::Metrics);
        assert_eq!(internal.route("/health"), Route::Health);
        assert_eq!(internal.route("/debug/pprof/heap"), Route::NotFound, "debug is off by default");
        let c = config(serde_json::json!({
            "http_server": {"internal_port": 9000},
            "debug": {"enabled": true},
            "http_api": {"external": true},
            "admin": {"enabled": true, "external": true, "password": "p", "secret": "s"},
        }));
        let (main, internal) = plan(&c).unwrap();
        let internal = internal.unwrap().1;
        assert_eq!(main.route("/api/publish"), Route::Api("publish"));
        assert_eq!(main.route("/admin"), Route::Admin("/admin".into()));
        assert_eq!(internal.route("/api/publish"), Route::NotFound);
        assert_eq!(internal.route("/health"), Route::Health);
        assert_eq!(internal.route("/debug/pprof/profile"), Route::Debug("profile"));
        assert_eq!(internal.route("/debug/pprof/"), Route::Debug(""));
        assert_eq!(main.route("/debug/pprof/heap"), Route::NotFound, "debug is internal only");
        assert_eq!(api_url(&c, "http://localhost:8000"), "http://localhost:8000/api/<method>");
        let c = config(serde_json::json!({"http_server": {"internal_port": 9000}}));
        assert_eq!(
            api_url(&c, "http://localhost:8000"),
            "http://localhost:9000/api/<method> (internal port)"
        );
    }

    #[test]
    fn prefixes_switches_and_the_same_address_twice() {
        let c = config(serde_json::json!({
            "http_server": {"port": 8000, "internal_port": "8000"},
            "websocket": {"handler_prefix": "/ws/"},
            "sse": {"enabled": true, "handler_prefix": "/events"},
            "http_api": {"handler_prefix": "/v1/api"},
            "admin": {"enabled": true, "handler_prefix": "/ops", "password": "p", "secret": "s"},
            "prometheus": {"handler_prefix": "/prom"},
            "health": {"handler_prefix": "/healthz"},
        }));
        let (main, internal) = plan(&c).unwrap();
        assert!(internal.is_none(), "the internal port equal to the port is the same listener");
        assert_eq!(main.route("/ws"), Route::WebSocket);
        assert_eq!(main.route("/connection/websocket"), Route::NotFound);
        assert_eq!(main.route("/events"), Route::Transport(SSE_PATH));
        assert_eq!(main.route("/emulation"), Route::Transport(EMULATION_PATH));
        assert_eq!(main.route("/v1/api/info"), Route::Api("info"));
        assert_eq!(main.route("/api/info"), Route::NotFound);
        assert_eq!(main.route("/ops/login"), Route::Admin("/admin/login".into()));
        assert_eq!(main.route("/opsx"), Route::NotFound);
        assert_eq!(main.route("/prom"), Route::Metrics);
        assert_eq!(main.route("/healthz"), Route::Health);
        let c = config(serde_json::json!({
            "websocket": {"disabled": true},
            "http_api": {"disabled": true, "handler_prefix": ""},
            "health": {"enabled": false},
        }));
        let (main, _) = plan(&c).unwrap();
        assert_eq!(main.route("/connection/websocket"), Route::NotFound);
        assert_eq!(main.route("/api/publish"), Route::NotFound);
        assert_eq!(main.route("/publish"), Route::NotFound);
        assert_eq!(main.route("/health"), Route::NotFound);
        assert_eq!(main.route("/ready"), Route::Ready, "wshub's readiness probe stays");
        let (main, _) = plan(&config(serde_json::json!({"http_api": {"handler_prefix": ""}}))).unwrap();
        assert_eq!(main.route("/publish"), Route::Api("publish"), "an empty prefix is the root");
        assert_eq!(main.route("/favicon.ico"), Route::NotFound);
    }
}
