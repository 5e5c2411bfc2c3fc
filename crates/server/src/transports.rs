//! The HTTP transports through hyper: `/connection/http_stream`, `/connection/sse`, the
//! unidirectional ones, `/emulation`.
//!
//! [`crate::http`]'s route table dispatches here; `crate::transport::raw` serves the same
//! streaming endpoints outside hyper with the functions below. Their `Origin` checks and
//! CORS answers are [`crate::admission`]'s.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use wshub_protocol::Format;

use crate::admission::{add_cors, check_origin, preflight};
use crate::body::READ_TIMEOUT_KEY;
use crate::endpoints::{EMULATION_PATH, HTTP_STREAM_PATH, SSE_PATH, UNI_HTTP_STREAM_PATH, UNI_SSE_PATH};
use crate::response::{empty_body, text, Body};
use crate::state::Shared;

/// Decodes an `application/x-www-form-urlencoded` value (`+` is a space).
pub(crate) fn form_decode(v: &str) -> Option<Vec<u8>> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    Some(out)
}

pub(crate) fn query_param(uri: &http::Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

/// The wire format of an HTTP transport request, from its `Content-Type`.
fn body_format(headers: &http::HeaderMap) -> Format {
    let binary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/octet-stream"));
    if binary {
        Format::Protobuf
    } else {
        Format::Json
    }
}

/// `/connection/http_stream`, `/connection/sse`, the unidirectional ones and `/emulation`,
/// through hyper (the streaming endpoints usually come through
/// [`crate::transport::raw`] instead, which keeps no hyper buffers).
pub(crate) async fn emulation_route(req: Request<Incoming>, shared: &Arc<Shared>, path: &str, peer: SocketAddr) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let origin = match check_origin(&parts.headers, shared, path, peer) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let mut r = if parts.method == http::Method::OPTIONS {
        preflight(&parts.headers)
    } else if path == EMULATION_PATH {
        emulation_post(&parts, body, shared).await
    } else {
        let limit = shared.config.emulation.max_request_body_size;
        let body = if parts.method == http::Method::POST {
            crate::body::read(body, limit, shared.config.read_timeout)
                .await
                .map_err(|e| e.response(READ_TIMEOUT_KEY))
        } else {
            Ok(Bytes::new())
        };
        match body {
            Err(r) => r,
            Ok(body) => match open_stream(shared, path, &parts, body, peer).await {
                Ok((stream, content_type)) => {
                    let mut r = Response::new(stream.boxed());
                    for (k, v) in stream_headers(content_type) {
                        r.headers_mut().insert(k, HeaderValue::from_static(v));
                    }
                    r
                }
                Err(r) => r,
            },
        }
    };
    add_cors(&mut r, origin.as_deref(), shared);
    r
}

/// The headers of a streaming answer (besides CORS).
pub(crate) fn stream_headers(content_type: &'static str) -> [(&'static str, &'static str); 3] {
    [
        ("content-type", content_type),
        ("cache-control", "no-cache, no-store"),
        // nginx: pass the stream on as it comes instead of buffering it.
        ("x-accel-buffering", "no"),
    ]
}

/// `POST /emulation`.
async fn emulation_post(parts: &http::request::Parts, body: Incoming, shared: &Shared) -> Response<Body> {
    use crate::cluster::Routed;
    let Some(api) = shared.config.api.as_ref() else {
        return text(StatusCode::NOT_FOUND, "not found");
    };
    if parts.method != http::Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use POST");
    }
    let format = body_format(&parts.headers);
    let body = match crate::body::read(body, shared.config.emulation.max_request_body_size, shared.config.read_timeout).await {
        Ok(b) => b,
        Err(e) => return e.response(READ_TIMEOUT_KEY),
    };
    let r = match crate::emulation::parse_emulation(format, &body) {
        Ok(r) => r,
        Err(why) => return text(StatusCode::BAD_REQUEST, &why),
    };
    let routed = api.cluster.route_emulation(&r.node, &r.session, r.data).await;
    let label = match &routed {
        Ok(Routed::Local) => "local",
        Ok(Routed::Forwarded) => "forwarded",
        Ok(Routed::Unknown) => "unknown_session",
        Ok(Routed::Full) => "full",
        Err(_) => "error",
    };
    metrics::counter!("wshub_emulation_requests_total", "outcome" => label).increment(1);
    match routed {
        Ok(Routed::Local | Routed::Forwarded) => empty_body(StatusCode::NO_CONTENT),
        Ok(Routed::Unknown) => text(StatusCode::NOT_FOUND, "unknown session"),
        Ok(Routed::Full) => text(StatusCode::TOO_MANY_REQUESTS, "too many commands waiting for this session"),
        Err(e) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("cannot reach the session's node: {}", e.message()),
        ),
    }
}

/// The request headers whose names are in `forwarded` (those some configured proxy
/// forwards: `Cookie`…), for a session. One filter for every transport.
pub(crate) fn forwarded_headers(forwarded: &[String], headers: &http::HeaderMap) -> Vec<(String, String)> {
    if forwarded.is_empty() {
        return Vec::new();
    }
    headers
        .iter()
        .filter(|(k, _)| forwarded.iter().any(|f| f == k.as_str()))
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

/// Opens a stream for a streaming endpoint's request (its body already read): the body to
/// send and its content type, or the refusal.
pub(crate) async fn open_stream(
    shared: &Arc<Shared>,
    path: &str,
    parts: &http::request::Parts,
    body: Bytes,
    peer: SocketAddr,
) -> Result<(crate::transport::stream::StreamBody, &'static str), Response<Body>> {
    use crate::transport::stream::{self as emulation, Transport};
    let Some(api) = shared.config.api.as_ref() else {
        return Err(text(StatusCode::NOT_FOUND, "not found"));
    };
    let e = &shared.config.emulation;
    let (get, post) = (parts.method == http::Method::GET, parts.method == http::Method::POST);
    #[allow(clippy::result_large_err)] // as in check_origin
    let cf_connect = || -> Result<Vec<u8>, Response<Body>> {
        let raw = query_param(&parts.uri, "cf_connect").unwrap_or_default();
        if raw.len() > e.max_request_body_size * 3 {
            return Err(text(StatusCode::PAYLOAD_TOO_LARGE, "cf_connect too large"));
        }
        form_decode(&raw).ok_or_else(|| text(StatusCode::BAD_REQUEST, "cf_connect is not URL-encoded"))
    };
    let (transport, format, connect) = match path {
        HTTP_STREAM_PATH if post => (Transport::HttpStream, body_format(&parts.headers), body),
        HTTP_STREAM_PATH => {
            return Err(text(
                StatusCode::METHOD_NOT_ALLOWED,
                "use POST with the connect command as the body",
            ))
        }
        SSE_PATH if get => (Transport::Sse, Format::Json, Bytes::from(cf_connect()?)),
        SSE_PATH => return Err(text(StatusCode::METHOD_NOT_ALLOWED, "use GET with cf_connect")),
        UNI_HTTP_STREAM_PATH | UNI_SSE_PATH => {
            let transport = if path == UNI_SSE_PATH {
                Transport::UniSse
            } else {
                Transport::UniHttpStream
            };
            let raw = if post {
                body.to_vec()
            } else if get && transport == Transport::UniSse {
                cf_connect()?
            } else {
                return Err(text(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "use POST with the connect request as the body",
                ));
            };
            match crate::transport::uni::uni_connect(&raw) {
                Ok(c) => (transport, Format::Json, c),
                Err(why) => return Err(text(StatusCode::BAD_REQUEST, why)),
            }
        }
        _ => return Err(text(StatusCode::NOT_FOUND, "not found")),
    };
    if connect.is_empty() || connect.iter().all(u8::is_ascii_whitespace) {
        return Err(text(StatusCode::BAD_REQUEST, "no connect command"));
    }
    if let Err((status, reason)) = crate::admission::admit(shared, peer.ip()).await {
        return Err(text(status, reason));
    }
    shared.connections.opened();
    let done = emulation::count_stream(transport);
    let s = shared.clone();
    let mut body = emulation::start(
        api.node.clone(),
        api.cluster.clone(),
        emulation::StreamSettings {
            transport,
            format,
            max_queue: e.max_queue,
            write_timeout: shared.config.write_timeout,
            headers: forwarded_headers(&e.forwarded_headers, &parts.headers),
            peer,
        },
        connect,
        move || {
            s.connections.closed();
            done();
        },
    );
    let refusals = match transport {
        Transport::UniSse => Some(&e.uni_sse_refusals),
        Transport::UniHttpStream => Some(&e.uni_http_stream_refusals),
        _ => None,
    };
    if let Some(refusals) = refusals.filter(|r| r.enabled) {
        if let Some(r) = body.connect_first().await {
            let (status, text_body) = refusals.response(r.code, &r.message).unwrap_or_default();
            // The body as configured, byte for byte (no newline added), as Centrifugo writes it.
            let mut resp = Response::new(crate::response::full(text_body));
            *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            return Err(resp);
        }
    }
    let content_type = match (transport, format) {
        (Transport::Sse | Transport::UniSse, _) => "text/event-stream",
        (_, Format::Json) => "application/json",
        (_, Format::Protobuf) => "application/octet-stream",
    };
    Ok((body, content_type))
}
