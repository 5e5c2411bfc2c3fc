//! Who may come in: the node's connection limits and rate limits, the `Origin` check with
//! its refusal, and the CORS answers of the HTTP transports. One place for every transport,
//! so that WebSocket, HTTP-streaming and SSE refuse and allow alike.
//!
//! CORS is written out rather than taken from tower-http's layer: the listener serves hyper
//! without tower, and the allowed origins are the handshake's [`OriginPolicy`] (credentials
//! only for origins listed by name), which the layer does not express.

use std::net::{IpAddr, SocketAddr};

use http::{header, HeaderValue, Response, StatusCode};
use wshub_core::ratelimit::admit_on_error;
use wshub_websocket::handshake::OriginPolicy;

use crate::response::{empty_body, text, Body};
use crate::state::Shared;

/// Whether a new WebSocket connection from `ip` may be accepted now.
pub(crate) async fn admit(shared: &Shared, ip: IpAddr) -> Result<(), (StatusCode, &'static str)> {
    let a = &shared.config.admission;
    let refuse = |status, reason: &'static str| {
        crate::metrics::centrifugo::handshake_refused(reason);
        if let Some(why) = limit_reason(reason) {
            wshub_core::logging::refusal(reason, why, Some(ip));
        }
        Err((status, reason))
    };
    if !shared.is_ready() {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "draining");
    }
    if a.connection_limit > 0 && shared.connections() >= a.connection_limit {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "connection_limit");
    }
    let now = std::time::Instant::now();
    if let Some(r) = &shared.node_rate {
        if !r.lock().try_acquire(now) {
            metrics::counter!("wshub_rate_limit_refusals_total", "kind" => "connection").increment(1);
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "connection_rate_limit");
        }
    }
    let per_ip = match (&a.connection_rate_limit_per_ip_cluster, &shared.ip_rate) {
        (Some(cluster), _) if a.connection_rate_limit_per_ip > 0 => {
            let rate = f64::from(a.connection_rate_limit_per_ip);
            let answer = cluster.try_take(&format!("ip.{ip}"), rate, rate).await;
            Some(admit_on_error("connection_per_ip", answer, now))
        }
        (_, Some(r)) => Some(r.lock().try_acquire(&ip, now)),
        _ => None,
    };
    if let Some(allowed) = per_ip {
        if !allowed {
            metrics::counter!("wshub_rate_limit_refusals_total", "kind" => "connection_per_ip").increment(1);
            return refuse(StatusCode::TOO_MANY_REQUESTS, "connection_rate_limit_per_ip");
        }
    }
    Ok(())
}

/// Why a connection was refused by a limit, naming the key (`None`: not a limit, a drain).
fn limit_reason(reason: &str) -> Option<&'static str> {
    Some(match reason {
        "connection_limit" => "over client.connection_limit open connections",
        "connection_rate_limit" => "over client.connection_rate_limit new connections a second",
        "connection_rate_limit_per_ip" => "over client.connection_rate_limit_per_ip new connections a second from this address",
        _ => return None,
    })
}

/// The 403 of a refused `Origin`: its body says why and which key to change, and the same
/// line is logged at info (at most once a second; a browser's page cannot read the body,
/// its developer reads the server's log). One answer for WebSocket and the HTTP transports.
pub(crate) fn refuse_origin(headers: &http::HeaderMap, shared: &Shared, what: &str, peer: SocketAddr) -> Response<Body> {
    let origin = headers
        .get(header::ORIGIN)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let why = origin_refusal_message(origin.as_deref().unwrap_or(""), host, &shared.config.handshake.origins);
    if let Some(suppressed) = shared.origin_log.admit(std::time::Instant::now()) {
        tracing::info!(refusal = "origin", reason = %why, %peer, suppressed, "{what} refused (403): {why}");
    }
    text(StatusCode::FORBIDDEN, &why)
}

/// Why an `Origin` was refused, and which key to change (the testable part of
/// [`refuse_origin`]).
pub fn origin_refusal_message(origin: &str, host: Option<&str>, policy: &OriginPolicy) -> String {
    if origin.len() > wshub_websocket::handshake::MAX_ORIGIN_LEN {
        return format!(
            "Origin header of {} bytes refused (longer than {} bytes)",
            origin.len(),
            wshub_websocket::handshake::MAX_ORIGIN_LEN
        );
    }
    if origin.eq_ignore_ascii_case("null") {
        return "Origin \"null\" refused: the page was opened from a file (file://) or runs in a sandboxed frame; \
                serve it over http(s) from an origin listed in client.allowed_origins"
            .to_string();
    }
    match policy {
        OriginPolicy::SameHost => format!(
            "Origin {origin:?} refused: client.allowed_origins is empty, so only pages served from the same host and port \
             as this server ({}) may connect; add {origin:?} to client.allowed_origins",
            host.unwrap_or("no Host header")
        ),
        _ => format!("Origin {origin:?} refused: it matches nothing in client.allowed_origins; add it there"),
    }
}

/// The CORS headers of an answer to `origin` (allowed): the origin itself, and credentials
/// only for origins listed by name (or the same host), never for `*`.
fn cors_headers(r: &mut Response<Body>, origin: &str, policy: &OriginPolicy) {
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        if !matches!(policy, OriginPolicy::Any) {
            h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
    }
}

/// Checks a request's `Origin` for the HTTP transports: `Err` is the 403 to answer.
// The refusal is a whole response, built at most once per request: boxing it would only
// add an allocation.
#[allow(clippy::result_large_err)]
pub(crate) fn check_origin(
    headers: &http::HeaderMap,
    shared: &Shared,
    path: &str,
    peer: SocketAddr,
) -> Result<Option<String>, Response<Body>> {
    let policy = &shared.config.handshake.origins;
    let Some(o) = headers
        .get(header::ORIGIN)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    else {
        return Ok(None);
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if policy.allows(&o, host) {
        return Ok(Some(o));
    }
    metrics::counter!("wshub_handshake_refusals_total", "reason" => "origin").increment(1);
    Err(refuse_origin(headers, shared, path, peer))
}

/// Adds the CORS headers of an allowed `origin` (none without one).
pub(crate) fn add_cors(r: &mut Response<Body>, origin: Option<&str>, shared: &Shared) {
    if let Some(o) = origin {
        cors_headers(r, o, &shared.config.handshake.origins);
    }
}

/// A CORS preflight (the origin was checked before).
pub(crate) fn preflight(headers: &http::HeaderMap) -> Response<Body> {
    let mut r = empty_body(StatusCode::NO_CONTENT);
    let h = r.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
    let asked = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        asked.unwrap_or_else(|| HeaderValue::from_static("Content-Type")),
    );
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    r
}
