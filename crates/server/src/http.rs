//! The route table of the listener: each request goes to its handler by
//! [`Endpoints::route`]; the handlers live beside it (`api`, `admin`, `landing`,
//! `websocket`), the HTTP transports in [`crate::transports`].
//!
//! hyper parses the request; a WebSocket upgrade is judged by `wshub_websocket::handshake`
//! and, on success, the upgraded TCP stream is taken back from hyper and handed to
//! [`crate::driver::drive`].

mod admin;
pub(crate) mod api;
mod landing;
mod live;
mod websocket;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::endpoints::{Endpoints, Route};
use crate::response::{full, json_response, text, Body};
use crate::state::Shared;

pub use api::{DRAINING_PUBLISH, UNAUTHORIZED_API};

/// Answers one HTTP request. During a drain, every answer but an upgrade carries
/// `Connection: close`: the node stops listening when the drain is over, and a kept-alive
/// connection (a load balancer's to its upstream, say) would be cut with its next request
/// in flight (nginx answers that request 502).
pub async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    endpoints: Arc<Endpoints>,
    peer: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    let instrumented = shared
        .config
        .instrument_http
        .then(|| (route_label(&endpoints, req.uri().path()), req.method().clone()));
    let mut r = answer(req, &shared, &endpoints, peer).await;
    if let Some((route, method)) = instrumented {
        crate::metrics::centrifugo::http_request(route, method.as_str(), r.status().as_u16());
    }
    if !shared.is_ready() && r.status() != StatusCode::SWITCHING_PROTOCOLS {
        r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(r)
}

/// The route a request took, for `centrifugo_node_incoming_http_requests_total`: a
/// configured path or prefix, never the raw path (admin and API paths are open-ended, and
/// a label per path a client invents would grow without bound), `other` for the rest.
fn route_label(endpoints: &Endpoints, path: &str) -> String {
    match endpoints.route(path) {
        Route::Api(_) => format!("{}/", endpoints.api.as_deref().unwrap_or_default().trim_end_matches('/')),
        Route::Admin(_) => format!("{}/", endpoints.admin.as_deref().unwrap_or_default().trim_end_matches('/')),
        Route::PusherApi => crate::pusher::API_PREFIX.to_string(),
        Route::Debug(_) => format!("{}/", endpoints.debug.as_deref().unwrap_or_default().trim_end_matches('/')),
        Route::WebSocket if path.starts_with(crate::pusher::WS_PREFIX) => crate::pusher::WS_PREFIX.to_string(),
        Route::NotFound => "other".to_string(),
        // The echo server upgrades on any path.
        Route::WebSocket if endpoints.websocket.as_deref() != Some(path) => "other".to_string(),
        // Exact matches of configured paths: as many as there are endpoints.
        _ => path.to_string(),
    }
}

async fn answer(req: Request<Incoming>, shared: &Arc<Shared>, endpoints: &Endpoints, peer: SocketAddr) -> Response<Body> {
    let path = req.uri().path().to_string();
    let get = req.method() == http::Method::GET;
    match endpoints.route(&path) {
        Route::WebSocket => websocket::upgrade(req, shared, peer, false).await,
        Route::UniWebSocket => websocket::upgrade(req, shared, peer, true).await,
        Route::Api(method) => match shared.config.api.as_ref() {
            Some(a) => api::api(req, shared, a, method).await,
            None => text(StatusCode::NOT_FOUND, "not found"),
        },
        Route::Transport(canonical) => crate::transports::emulation_route(req, shared, canonical, peer).await,
        Route::Admin(canonical) => match shared.admin.as_ref() {
            Some(admin) => admin::admin_route(req, shared, admin, &canonical, peer).await,
            None => text(StatusCode::NOT_FOUND, "not found"),
        },
        Route::Landing if get || req.method() == http::Method::HEAD => landing::landing(shared, endpoints),
        Route::Health => text(StatusCode::OK, "ok"),
        Route::PusherApi => match shared.config.pusher.as_ref() {
            Some(p) => crate::pusher::api::handle(req, p).await,
            None => text(StatusCode::NOT_FOUND, "not found"),
        },
        Route::Init if get => {
            let mut r = json_response(&serde_json::json!({}));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
            r
        }
        Route::Init => text(StatusCode::METHOD_NOT_ALLOWED, "use GET"),
        Route::Metrics if shared.config.metrics => {
            let api = shared.config.api.as_ref().map(|a| (&*a.node, &*a.cluster));
            let text = crate::metrics::render(shared.connections(), api);
            let protobuf = crate::metrics::native::enabled()
                && req
                    .headers()
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|a| a.contains(crate::metrics::native::PROTOBUF_MEDIA_TYPE));
            let (body, content_type) = match protobuf {
                true => (
                    crate::metrics::native::text_to_protobuf(&text),
                    crate::metrics::native::PROTOBUF_CONTENT_TYPE,
                ),
                false => (text.into_bytes(), "text/plain; version=0.0.4"),
            };
            let mut r = Response::new(full(body));
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            r
        }
        Route::Debug(name) => crate::debug::handle(req, name).await,
        Route::Ready if !shared.is_ready() => text(StatusCode::SERVICE_UNAVAILABLE, "draining"),
        Route::Ready if !shared.is_engine_ok() => text(StatusCode::SERVICE_UNAVAILABLE, "engine unavailable"),
        Route::Ready => text(StatusCode::OK, "ready"),
        _ => text(StatusCode::NOT_FOUND, "not found"),
    }
}
