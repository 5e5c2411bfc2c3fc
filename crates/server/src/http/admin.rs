//! `/admin…`: the page, its login and logout, and the server API behind an admin session
//! (the same [`super::api::execute`] as `/api`).

use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::api::execute;
use crate::body::READ_TIMEOUT_KEY;
use crate::response::{error_json, json_response, static_file, text, Body};
use crate::state::Shared;

/// Largest admin login body.
const LOGIN_BODY_LIMIT: usize = 4096;

/// `/admin…`: the page, its login and logout, and the API behind an admin session.
pub(super) async fn admin_route(
    req: Request<Incoming>,
    shared: &Shared,
    admin: &crate::admin::Admin,
    path: &str,
    peer: SocketAddr,
) -> Response<Body> {
    use crate::admin::{Login, ADMIN_CSS};
    let get = req.method() == http::Method::GET || req.method() == http::Method::HEAD;
    let post = req.method() == http::Method::POST;
    match path {
        "/admin" | "/admin/" if get => static_file(admin.index_html.clone(), "text/html; charset=utf-8"),
        "/admin/admin.js" if get => static_file(admin.admin_js.clone(), "text/javascript; charset=utf-8"),
        "/admin/admin.css" if get => static_file(Bytes::from_static(ADMIN_CSS.as_bytes()), "text/css; charset=utf-8"),
        "/admin/session" if get => {
            if admin.authorized(req.headers()) {
                json_response(&serde_json::json!({"authenticated": true, "insecure": admin.config.insecure}))
            } else {
                error_json(StatusCode::UNAUTHORIZED, "no admin session: log in")
            }
        }
        "/admin/login" if post => {
            #[derive(serde::Deserialize)]
            struct LoginBody {
                #[serde(default)]
                password: String,
            }
            let body = match crate::body::read(req.into_body(), LOGIN_BODY_LIMIT, shared.config.read_timeout).await {
                Ok(b) => b,
                Err(e) => return e.response(READ_TIMEOUT_KEY),
            };
            let Ok(LoginBody { password }) = serde_json::from_slice(&body) else {
                return error_json(StatusCode::BAD_REQUEST, "expected {\"password\": \"...\"}");
            };
            match admin.login(peer.ip(), &password, std::time::Instant::now()) {
                Login::Ok(cookie) => {
                    tracing::info!(%peer, "admin login");
                    let mut r = json_response(&serde_json::json!({"ok": true}));
                    if let Ok(v) = HeaderValue::from_str(&cookie) {
                        r.headers_mut().insert(header::SET_COOKIE, v);
                    }
                    r
                }
                Login::WrongPassword => {
                    tracing::info!(%peer, "admin login refused: wrong password");
                    error_json(StatusCode::UNAUTHORIZED, "wrong password")
                }
                Login::TooMany => {
                    let mut r = error_json(StatusCode::TOO_MANY_REQUESTS, "too many login attempts: wait a minute");
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(crate::admin::LOGIN_WINDOW.as_secs()));
                    r
                }
            }
        }
        "/admin/logout" if post => {
            let mut r = json_response(&serde_json::json!({"ok": true}));
            if let Ok(v) = HeaderValue::from_str(&admin.cookie("", 0)) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        "/admin/live" if get => {
            if !admin.authorized(req.headers()) {
                return error_json(StatusCode::UNAUTHORIZED, "no admin session: log in");
            }
            let channel = crate::transports::query_param(req.uri(), "channel")
                .and_then(|v| crate::transports::form_decode(&v))
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_default();
            match shared.config.api.as_ref() {
                Some(api) => super::live::live(&api.node, &channel).await,
                None => error_json(StatusCode::NOT_FOUND, "no node on this listener"),
            }
        }
        p if p.starts_with("/admin/api/") => {
            let method = &p["/admin/api/".len()..];
            if !post {
                let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "use POST");
                r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
                return r;
            }
            if !admin.authorized(req.headers()) {
                return error_json(StatusCode::UNAUTHORIZED, "no admin session: log in");
            }
            let json = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/json"));
            if !json {
                return error_json(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "admin API calls must be Content-Type: application/json",
                );
            }
            match shared.config.api.as_ref() {
                Some(api) => execute(req, shared, api, method).await,
                None => error_json(StatusCode::NOT_FOUND, "no server API on this listener"),
            }
        }
        _ if !admin.authorized(req.headers()) => error_json(StatusCode::UNAUTHORIZED, "no admin session: log in"),
        _ => text(StatusCode::NOT_FOUND, "not found"),
    }
}
