//! The HTTP side of the backend proxies ([`wshub_core::proxy`]): one keep-alive client
//! (hyper-util's pooled client) for every endpoint, a bound on requests in flight per
//! endpoint (`max_in_flight`, waiting within the timeout), the endpoint's `timeout` over the
//! whole exchange (waiting for a slot, connecting, the reply body), and a cap on the reply
//! size. `https://` endpoints go through rustls (the public roots of `webpki-roots`, or the
//! proxy's `http.tls.server_ca_pem`; its `cert_pem`/`key_pem`, `server_name` and
//! `insecure_skip_verify`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::client::TlsStream;
use wshub_core::engine::BoxFuture;
use wshub_core::proxy::{Endpoint, Endpoints, ProxyFailure, ProxyTransport};

/// Largest reply body read from a backend.
const MAX_REPLY: usize = 4 << 20;

/// Idle keep-alive connections kept per backend host.
const MAX_IDLE_PER_HOST: usize = 256;

/// A connection to a backend: plain TCP or TLS.
pub enum Stream {
    Plain(TokioIo<TcpStream>),
    /// Boxed: the TLS state is a kilobyte.
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl hyper::rt::Read for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: hyper::rt::ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        match self {
            Stream::Plain(s) => s.connected(),
            Stream::Tls(_) => Connected::new(),
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A client certificate chain and its key.
type ClientCert = (
    Vec<rustls_pki_types::CertificateDer<'static>>,
    rustls_pki_types::PrivateKeyDer<'static>,
);

/// Connects over TCP, then TLS for `https://` URIs.
#[derive(Clone)]
pub struct Connector {
    http: HttpConnector,
    tls: tokio_rustls::TlsConnector,
    /// The name to ask for and check instead of the URI's host (`tls.server_name`).
    server_name: Option<Arc<str>>,
}

/// How the backend's certificate is checked.
#[derive(Default)]
struct Verify<'a> {
    /// PEM of the CAs to trust instead of the public roots.
    ca_pem: Option<&'a str>,
    /// Any certificate will do (`insecure_skip_verify`).
    any: bool,
}

impl Connector {
    /// Trusting `ca_pem` (PEM certificates) when given, the public roots otherwise.
    pub fn new(ca_pem: Option<&str>) -> Result<Self, String> {
        Self::with_alpn(Verify { ca_pem, any: false }, Vec::new(), None)
    }

    /// For a proxy's `tls` section (`section` names it in errors: `http.tls`, `grpc.tls`):
    /// when enabled, its CA instead of the public roots (or no check at all with
    /// `insecure_skip_verify`), its client certificate (mutual TLS) and its `server_name`;
    /// offering `alpn` in the handshake (gRPC servers want `h2`).
    pub fn for_proxy(tls: &wshub_core::config::ProxyTls, section: &str, alpn: Vec<Vec<u8>>) -> Result<Self, String> {
        let client = match (tls.enabled, tls.cert_pem.is_empty(), tls.key_pem.is_empty()) {
            (true, false, false) => Some(crate::tls::certificate_and_key(section, &tls.cert_pem, &tls.key_pem).map_err(|e| e.0)?),
            (true, false, true) | (true, true, false) => {
                return Err(format!("{section}: cert_pem and key_pem go together"));
            }
            _ => None,
        };
        if tls.enabled && !tls.client_ca_pem.is_empty() {
            // Centrifugo loads it (a broken one stops its start) and has no use for it here.
            crate::tls::roots(&format!("{section}.client_ca_pem"), &tls.client_ca_pem).map_err(|e| e.0)?;
        }
        let verify = Verify {
            ca_pem: (tls.enabled && !tls.server_ca_pem.is_empty()).then_some(tls.server_ca_pem.as_str()),
            any: tls.enabled && tls.insecure_skip_verify,
        };
        let mut c = Self::with_alpn(verify, alpn, client).map_err(|e| format!("{section}.{e}"))?;
        if tls.enabled && !tls.server_name.is_empty() {
            ServerName::try_from(tls.server_name.clone()).map_err(|e| format!("{section}.server_name: {e}"))?;
            c.server_name = Some(Arc::from(tls.server_name.as_str()));
        }
        Ok(c)
    }

    fn with_alpn(verify: Verify<'_>, alpn: Vec<Vec<u8>>, client: Option<ClientCert>) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let cfg = if verify.any {
            cfg.dangerous()
                .with_custom_certificate_verifier(Arc::new(wshub_nats::AnyCertificate::new(provider)))
        } else {
            let roots = match verify.ca_pem {
                // PEM text, base64 of it, or a file path, as Centrifugo reads it.
                Some(pem) => crate::tls::roots("server_ca_pem", pem).map_err(|e| e.0)?,
                None => rustls::RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                },
            };
            cfg.with_root_certificates(roots)
        };
        let mut cfg = match client {
            Some((certs, key)) => cfg.with_client_auth_cert(certs, key).map_err(|e| format!("key_pem: {e}"))?,
            None => cfg.with_no_client_auth(),
        };
        cfg.alpn_protocols = alpn;
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        Ok(Connector {
            http,
            tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            server_name: None,
        })
    }
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = Stream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let host = match &self.server_name {
            Some(n) => n.to_string(),
            None => uri
                .host()
                .unwrap_or_default()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
        };
        let mut http = self.http.clone();
        let tls = self.tls.clone();
        Box::pin(async move {
            let tcp = http.call(uri).await?;
            if !https {
                return Ok(Stream::Plain(tcp));
            }
            let name = ServerName::try_from(host)?;
            let s = tls.connect(name, tcp.into_inner()).await?;
            Ok(Stream::Tls(Box::new(TokioIo::new(s))))
        })
    }
}

struct Slot {
    client: Client<Connector, Full<Bytes>>,
    uri: http::Uri,
    limit: Arc<Semaphore>,
    static_headers: Vec<(HeaderName, HeaderValue)>,
}

/// The proxies' HTTP client (and, for `grpc://` endpoints, their gRPC one).
pub struct HttpProxy {
    slots: Vec<Option<Slot>>,
    grpc: crate::grpc::proxy::GrpcProxy,
}

impl HttpProxy {
    /// A client for `endpoints`. An endpoint whose URL or static headers cannot be used is
    /// refused here, naming it.
    pub fn new(endpoints: &Endpoints) -> Result<Self, String> {
        let mut slots = Vec::new();
        for ep in endpoints.all() {
            if ep.is_grpc() {
                slots.push(None);
                continue;
            }
            let c = &ep.config;
            let connector = Connector::for_proxy(&c.http.tls, "http.tls", Vec::new())
                .map_err(|e| format!("{} proxy {}: {e}", ep.kind.as_str(), c.endpoint))?;
            let client = Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
                .build(connector);
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
                client,
                uri,
                limit: Arc::new(Semaphore::new(c.max_in_flight)),
                static_headers,
            }));
        }
        Ok(HttpProxy {
            slots,
            grpc: crate::grpc::proxy::GrpcProxy::new(endpoints)?,
        })
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
        let resp = slot
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
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
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
        if endpoint.is_grpc() {
            return self.grpc.post(endpoint, headers, body);
        }
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

    fn open_stream<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        headers: &'a [(String, String)],
        body: Vec<u8>,
        bidirectional: bool,
        sink: Arc<dyn wshub_core::proxy::stream::StreamSink>,
    ) -> BoxFuture<'a, Result<wshub_core::proxy::stream::Opened, ProxyFailure>> {
        // Only gRPC endpoints are accepted for streams (checked at start).
        self.grpc.open_stream(endpoint, headers, body, bidirectional, sink)
    }
}

/// The JWKS endpoints' HTTP client (`client.token.jwks_public_endpoint`, filled in when it
/// is a template).
pub struct HttpJwks {
    client: Client<Connector, Full<Bytes>>,
}

/// Time allowed for one fetch of the JWKS document.
const JWKS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl HttpJwks {
    /// A client trusting the public roots for `https://`.
    pub fn new() -> Result<Self, String> {
        Ok(HttpJwks {
            client: Client::builder(TokioExecutor::new()).build(Connector::new(None)?),
        })
    }

    async fn get(&self, url: &str) -> Result<Bytes, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("{e}"))?;
        let req = Request::builder()
            .method(Method::GET)
            .uri(uri)
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
    fn fetch<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<Bytes, String>> {
        Box::pin(async move {
            match tokio::time::timeout(JWKS_TIMEOUT, self.get(url)).await {
                Ok(r) => r.map_err(|e| format!("{url}: {e}")),
                Err(_) => Err(format!("{url}: timeout")),
            }
        })
    }
}
