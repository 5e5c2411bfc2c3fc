//! `GET /`: a page for whoever opens the server in a browser.

use http::Response;

use crate::endpoints::Endpoints;
use crate::response::{static_file, Body};
use crate::state::Shared;

/// `GET /`: where to go from here (the endpoints on other listeners are not listed).
pub(super) fn landing(shared: &Shared, endpoints: &Endpoints) -> Response<Body> {
    let link = |p: &Option<String>| p.as_deref().map(|p| format!(r#", <a href="{p}">{p}</a>"#)).unwrap_or_default();
    let admin = match (&endpoints.admin, shared.admin.is_some()) {
        (Some(p), true) => format!(r#"<li><a href="{p}">{p}</a>: the admin page</li>"#),
        (None, true) => "<li>the admin page: on the internal port</li>".to_string(),
        _ => "<li>/admin: the admin page, off (set <code>admin.enabled</code>, <code>admin.password</code> and <code>admin.secret</code>)</li>".to_string(),
    };
    let api = match &endpoints.api {
        Some(p) => format!("<li>server API: <code>POST {p}/&lt;method&gt;</code> with <code>X-API-Key</code></li>"),
        None => "<li>server API: not on this port</li>".to_string(),
    };
    let ready = if endpoints.ready { r#"<a href="/ready">/ready</a>"# } else { "" };
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>wshub</title></head><body><h1>wshub {version}</h1><ul>\
         <li>clients: <code>{ws}</code> (Centrifugo client protocol: the <code>centrifuge</code> SDKs)</li>\
         {api}{admin}<li>probes: {ready}{health}{metrics}</li>\
         <li>documentation: the README of wshub; the protocol: <a href=\"https://centrifugal.dev/docs/transports/client_api\">centrifugal.dev</a></li>\
         </ul></body></html>\n",
        version = env!("CARGO_PKG_VERSION"),
        ws = endpoints.websocket.as_deref().unwrap_or("(WebSocket off)"),
        health = link(&endpoints.health),
        metrics = if shared.config.metrics { link(&endpoints.metrics) } else { String::new() },
    );
    static_file(body.into(), "text/html; charset=utf-8")
}
