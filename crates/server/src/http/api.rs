//! `POST /api/<method>`: the key check, the per-key rate limit and the drain's publish gate
//! around [`crate::api`], which parses and runs the call.

use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use sha2::{Digest, Sha256};
use wshub_core::node::ApiError;
use wshub_core::ratelimit::admit_on_error;

use crate::api::{ApiRequest, RequestError};
use crate::response::{error_json, json_response, text, Body};
use crate::state::{ApiConfig, Shared};

/// Largest API request body.
const API_BODY_LIMIT: usize = 16 << 20;

pub(super) async fn api(req: Request<Incoming>, shared: &Shared, api: &ApiConfig, method: &str) -> Response<Body> {
    let started = std::time::Instant::now();
    let span = crate::telemetry::server_span(crate::telemetry::Kind::Api, req.uri().path(), req.method().as_str(), req.headers());
    let r = api_inner(req, shared, api, method).await;
    span.end(r.status().as_u16());
    let method_label = if crate::api::is_method(method) { method } else { "unknown" };
    crate::metrics::centrifugo::api_call(method_label, r.status().as_u16(), started.elapsed());
    r
}

async fn api_inner(req: Request<Incoming>, shared: &Shared, api: &ApiConfig, method: &str) -> Response<Body> {
    if req.method() != http::Method::POST {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "use POST");
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    if !crate::api::authorized(req.headers(), &api.key, api.insecure) {
        wshub_core::logging::refusal("api_key", "missing or wrong X-API-Key", None);
        return error_json(StatusCode::UNAUTHORIZED, UNAUTHORIZED_API);
    }
    if api.rate_limit > 0 {
        let key = req
            .headers()
            .get("x-api-key")
            .or_else(|| req.headers().get(header::AUTHORIZATION))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let rate = f64::from(api.rate_limit);
        let now = std::time::Instant::now();
        let allowed = match &api.rate_limit_cluster {
            Some(cluster) => {
                // The key itself never goes to Redis: a digest names its bucket.
                let digest = Sha256::digest(key.as_bytes());
                let name: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
                admit_on_error("api", cluster.try_take(&format!("api.{name}"), rate, rate).await, now)
            }
            None => shared.api_rate.as_ref().is_none_or(|r| r.lock().try_acquire(&key, now)),
        };
        if !allowed {
            metrics::counter!("wshub_rate_limit_refusals_total", "kind" => "api").increment(1);
            wshub_core::logging::refusal("api_rate_limit", "over http_api.rate_limit calls a second for this key", None);
            return text(StatusCode::TOO_MANY_REQUESTS, "too many requests");
        }
    }
    execute(req, shared, api, method).await
}

/// The one-line body of the API's 401.
pub const UNAUTHORIZED_API: &str = "missing or wrong API key: send the header X-API-Key: <http_api.key>";

/// Reads an authorized API request's body, runs the call and answers it: the one
/// implementation behind `/api/<method>` and the admin page's `/admin/api/<method>`.
pub(super) async fn execute(req: Request<Incoming>, shared: &Shared, api: &ApiConfig, method: &str) -> Response<Body> {
    let transport_errors = api.transport_errors
        || req
            .headers()
            .get("x-centrifugo-error-mode")
            .is_some_and(|v| v.as_bytes() == b"transport");
    let body = match crate::body::read(req.into_body(), API_BODY_LIMIT, api.body_timeout).await {
        Ok(b) => b,
        Err(e) => return e.response("http_api.body_timeout"),
    };
    let request = match crate::api::parse_request(method, &body) {
        Ok(r) => r,
        Err(RequestError::NotJson(e)) => return text(StatusCode::BAD_REQUEST, &format!("body is not JSON: {e}")),
        Err(RequestError::Api(e)) => return respond(answer("http", method, Err(e)), transport_errors),
    };
    drop(body);
    match run(shared, api, "http", method, request).await {
        Ran::Answer(v) => respond(v, transport_errors),
        Ran::Draining(v) => {
            let mut r = json_response(&v);
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            r
        }
    }
}

/// What [`run`] answered.
pub(crate) enum Ran {
    /// The body of the answer: `{"result"}`, `{"error"}`, or a batch's `{"replies"}`.
    Answer(serde_json::Value),
    /// Refused: the node is draining on an engine that delivers only here (HTTP 503).
    Draining(serde_json::Value),
}

/// Runs a parsed call behind the drain's publish gate, errors counted: the one
/// implementation behind `/api/<method>`, the admin page's API and the gRPC API.
pub(crate) async fn run(shared: &Shared, api: &ApiConfig, protocol: &'static str, method: &str, request: ApiRequest) -> Ran {
    // Shared from the drain check to the publication's delivery; see `Shared::start_drain`.
    let _gate = if api.refuse_publish_while_draining && request.publishes() {
        let gate = shared.publish_gate.read().await;
        if !shared.is_ready() {
            return Ran::Draining(answer(protocol, method, Err(ApiError::NotAvailable(DRAINING_PUBLISH.into()))));
        }
        Some(gate)
    } else {
        None
    };
    Ran::Answer(match request {
        // Centrifugo answers batch with the replies at the top level, as `cent` expects.
        ApiRequest::Batch(b) => crate::api::batch(&api.cluster, b, protocol).await,
        r => answer(protocol, method, crate::api::call(&api.cluster, r).await),
    })
}

/// The body of a call's answer; an error is counted in Centrifugo's
/// `api_command_errors_total{protocol,method,error}`.
pub(crate) fn answer(protocol: &'static str, method: &str, r: Result<serde_json::Value, ApiError>) -> serde_json::Value {
    if let Err(e) = &r {
        crate::metrics::centrifugo::api_error(protocol, method, e.code());
    }
    crate::api::envelope(r)
}

/// An answer as the HTTP API writes it. With `transport_errors` (Centrifugo's
/// `error_mode: transport`), an error is the HTTP status of its code with the error object
/// alone as the body; a batch keeps its errors inside its replies.
fn respond(v: serde_json::Value, transport_errors: bool) -> Response<Body> {
    match v.get("error") {
        Some(e) if transport_errors => {
            let code = e.get("code").and_then(serde_json::Value::as_u64).unwrap_or(0);
            let mut r = json_response(e);
            *r.status_mut() = crate::api::http_status(u32::try_from(code).unwrap_or(u32::MAX));
            r
        }
        _ => json_response(&v),
    }
}

/// The message of the 503 that a draining node on the memory engine answers publications.
pub const DRAINING_PUBLISH: &str = "node is draining: publish to another node";
