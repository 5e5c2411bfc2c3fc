//! The HTTP side of the backend proxies ([`wshub_core::proxy`]): one keep-alive client
//! (hyper-util's pooled client) for every endpoint, a bound on requests in flight per
//! endpoint (`max_in_flight`, waiting within the timeout), the endpoint's `timeout` over the
//! whole exchange (waiting for a slot, connecting, the reply body), and a cap on the reply
//! size.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;
use wshub_core::engine::BoxFuture;
use wshub_core::proxy::{Endpoint, Endpoints, ProxyFailure, ProxyTransport};

/// Largest reply body read from a backend.
const MAX_REPLY: usize = 4 << 20;

/// Idle keep-alive connections kept per backend host.
const MAX_IDLE_PER_HOST: usize = 256;

struct Slot {
    uri: http::Uri,
    limit: Arc<Semaphore>,
    static_headers: Vec<(HeaderName, HeaderValue)>,
}

/// The proxies' HTTP client.
pub struct HttpProxy {
    client: Client<HttpConnector, Full<Bytes>>,
    slots: Vec<Option<Slot>>,
}

impl HttpProxy {
    /// A client for `endpoints`. An endpoint whose URL or static headers cannot be used is
    /// refused here, naming it.
    pub fn new(endpoints: &Endpoints) -> Result<Self, String> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
            .build(connector);
        let mut slots = Vec::new();
        for ep in endpoints.all() {
            let c = &ep.config;
            if c.endpoint.starts_with("https://") {
                return Err(format!(
                    "{} proxy {}: https:// endpoints are not supported yet (use http:// on a private network)",
                    ep.kind.as_str(),
                    c.endpoint
                ));
            }
            let uri: http::Uri = c
                .endpoint
                .parse()
                .map_err(|e| format!("{} proxy endpoint {}: {e}", ep.kind.as_str(), c.endpoint))?;
            let mut static_headers = Vec::new();
            for (k, v) in &c.http.static_headers {
                let name = HeaderName::try_from(k.as_str()).map_err(|e| format!("static header {k}: {e}"))?;
                let value = HeaderValue::try_from(v.as_str()).map_err(|e| format!("static header {k}: {e}"))?;
                static_headers.push((name, value));
            }
            slots.push(Some(Slot {
                uri,
                limit: Arc::new(Semaphore::new(c.max_in_flight)),
                static_headers,
            }));
        }
        Ok(HttpProxy { client, slots })
    }

    async fn exchange(&self, slot: &Slot, headers: &[(String, String)], body: Vec<u8>) -> Result<Bytes, ProxyFailure> {
        let _permit = slot.limit.acquire().await.map_err(|_| ProxyFailure::Unreachable("closed".into()))?;
        let mut req = Request::builder().method(Method::POST).uri(slot.uri.clone());
        if let Some(h) = req.headers_mut() {
            // Forwarded client headers win over static ones of the same name.
            for (k, v) in &slot.static_headers {
                if !headers.iter().any(|(f, _)| k.as_str().eq_ignore_ascii_case(f)) {
                    h.insert(k.clone(), v.clone());
                }
            }
            for (k, v) in headers {
                if let (Ok(k), Ok(v)) = (HeaderName::try_from(k.as_str()), HeaderValue::try_from(v.as_str())) {
                    h.append(k, v);
                }
            }
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ProxyFailure::Unreachable(e.to_string()))?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| ProxyFailure::Unreachable(error_chain(&e)))?;
        let status = resp.status();
        if status != http::StatusCode::OK {
            return Err(ProxyFailure::Status(status.as_u16()));
        }
        let body = Limited::new(resp.into_body(), MAX_REPLY)
            .collect()
            .await
            .map_err(|e| ProxyFailure::Garbage(format!("reply body: {e}")))?;
        Ok(body.to_bytes())
    }
}

/// An error with its sources ("client error (Connect): tcp connect error: Connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl ProxyTransport for HttpProxy {
    fn post<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        headers: &'a [(String, String)],
        body: Vec<u8>,
    ) -> BoxFuture<'a, Result<Bytes, ProxyFailure>> {
        Box::pin(async move {
            let Some(Some(slot)) = self.slots.get(endpoint.id) else {
                return Err(ProxyFailure::Unreachable("unknown endpoint".into()));
            };
            match tokio::time::timeout(endpoint.config.timeout, self.exchange(slot, headers, body)).await {
                Ok(r) => r,
                Err(_) => Err(ProxyFailure::Timeout),
            }
        })
    }
}

/// The JWKS endpoint's HTTP client (`client.token.jwks_public_endpoint`).
pub struct HttpJwks {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: http::Uri,
}

/// Time allowed for one fetch of the JWKS document.
const JWKS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl HttpJwks {
    pub fn new(endpoint: &str) -> Result<Self, String> {
        if endpoint.starts_with("https://") {
            return Err(format!(
                "client.token.jwks_public_endpoint {endpoint}: https:// is not supported yet (serve the key set over http:// on a private network)"
            ));
        }
        let uri = endpoint
            .parse()
            .map_err(|e| format!("client.token.jwks_public_endpoint {endpoint}: {e}"))?;
        Ok(HttpJwks {
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            uri,
        })
    }

    async fn get(&self) -> Result<Bytes, String> {
        let req = Request::builder()
            .method(Method::GET)
            .uri(self.uri.clone())
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let resp = self.client.request(req).await.map_err(|e| error_chain(&e))?;
        if resp.status() != http::StatusCode::OK {
            return Err(format!("HTTP status {}", resp.status().as_u16()));
        }
        let body = Limited::new(resp.into_body(), MAX_REPLY)
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(body.to_bytes())
    }
}

impl wshub_core::jwks::JwksFetcher for HttpJwks {
    fn fetch(&self) -> BoxFuture<'_, Result<Bytes, String>> {
        Box::pin(async move {
            match tokio::time::timeout(JWKS_TIMEOUT, self.get()).await {
                Ok(r) => r.map_err(|e| format!("{}: {e}", self.uri)),
                Err(_) => Err(format!("{}: timeout", self.uri)),
            }
        })
    }
}
