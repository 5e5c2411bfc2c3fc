//! The answers every endpoint builds: one body type and the few response shapes (plain
//! text, JSON, a static file) that the routes, the transports and the body reader share.

use std::convert::Infallible;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use wshub_websocket::HandshakeError;

/// Every response body: whole (`Full`) or streamed (the HTTP transports).
pub type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

pub(crate) fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

pub(crate) fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(full(format!("{body}\n")));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

pub(crate) fn json_response(v: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(full(v.to_string()));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// The refusal of a bad upgrade request (DESIGN.md's bad-input table).
pub fn refusal(e: &HandshakeError) -> Response<Body> {
    let mut r = text(e.status(), &e.to_string());
    if *e == HandshakeError::Version {
        r.headers_mut()
            .insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    }
    r
}

/// A JSON error body `{"error": {"code": <status>, "message": ...}}` with that status.
pub(crate) fn error_json(status: StatusCode, message: &str) -> Response<Body> {
    let mut r = json_response(&serde_json::json!({"error": {"code": status.as_u16(), "message": message}}));
    *r.status_mut() = status;
    r
}

/// A file of a page: never cached stale, never sniffed, and allowed to load only its own kind.
pub(crate) fn static_file(body: Bytes, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(full(body));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    r
}

/// An answer without a body.
pub(crate) fn empty_body(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = status;
    r
}
