//! TLS as Centrifugo configures it, on real listeners: `cert_pem`/`key_pem` as PEM text and
//! base64, `client_ca_pem` (mutual TLS: no certificate, or one from another CA, gets no
//! answer; one the CA signed does), `tls_external` (the internal port stays plain), HTTP/2
//! over TLS through ALPN (the API and an HTTP-streaming connection, while WebSocket clients
//! keep HTTP/1.1), and `h2c_external` (HTTP/2 with prior knowledge on the clients' port,
//! HTTP/1.1 and WebSocket still served there), with the configuration rules around them.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use common::LIMIT;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const KEY: &str = "api-key";

/// A CA, a server certificate for localhost it signed, a client certificate it signed, and a
/// client certificate from a CA the server does not know.
struct Pki {
    ca_pem: String,
    ca_der: Vec<u8>,
    server_pem: String,
    server_key_pem: String,
    client: (String, String),
    stranger: (String, String),
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(names: &[&str], issuer: &CertifiedIssuer<'static, KeyPair>) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    (params.signed_by(&key, issuer).unwrap().pem(), key.serialize_pem())
}

impl Pki {
    fn new() -> Pki {
        let (ca, other) = (ca("wshub test CA"), ca("another CA"));
        let (server_pem, server_key_pem) = leaf(&["localhost", "127.0.0.1"], &ca);
        Pki {
            ca_pem: ca.pem(),
            ca_der: ca.der().to_vec(),
            server_pem,
            server_key_pem,
            client: leaf(&["client"], &ca),
            stranger: leaf(&["stranger"], &other),
        }
    }
}

/// A client configuration trusting the test CA, offering `alpn`, with a client certificate.
fn client_config(pki: &Pki, alpn: &[&[u8]], cert: Option<&(String, String)>) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls_pki_types::CertificateDer::from(pki.ca_der.clone())).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut cfg = match cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![rustls_pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

async fn tls(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(cfg).connect("localhost".try_into().unwrap(), tcp).await
}

/// `GET path` over HTTP/1.1 on `io`; the response's head and body, or what came before the
/// connection ended (nothing, when the server refused the client).
async fn get1<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    if io.write_all(req.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(LIMIT, io.read_to_end(&mut resp)).await.unwrap();
    String::from_utf8_lossy(&resp).into_owned()
}

/// A WebSocket upgrade on `io` is answered 101 (over HTTP/1.1).
async fn assert_upgrades<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S) {
    io.write_all(&common::upgrade_request("localhost", "")).await.unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(LIMIT, io.read_exact(&mut head)).await.unwrap().unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
}

/// An HTTP/2 client on `io`.
async fn h2<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(io: S) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

/// One HTTP/2 request; the status, the HTTP version, and the first line of the body (the
/// whole body, unless `stream`: an HTTP-streaming connection never ends by itself).
async fn request(
    send: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, http::Version, String) {
    let mut req = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let resp = tokio::time::timeout(LIMIT, send.send_request(req)).await.unwrap().unwrap();
    let (status, version) = (resp.status().as_u16(), resp.version());
    let mut body = resp.into_body();
    let mut got = Vec::new();
    while !got.contains(&b'\n') {
        match tokio::time::timeout(LIMIT, body.frame()).await.unwrap() {
            Some(Ok(f)) => got.extend_from_slice(f.data_ref().map(|d| &d[..]).unwrap_or_default()),
            _ => break,
        }
    }
    let line = String::from_utf8_lossy(&got).lines().next().unwrap_or_default().to_string();
    (status, version, line)
}

/// A node with its main and internal listeners, as the binary runs it.
struct Node {
    main: SocketAddr,
    internal: Option<SocketAddr>,
    stop: tokio::sync::oneshot::Sender<()>,
    run: tokio::task::JoinHandle<usize>,
}

impl Node {
    async fn start(cfg: Value) -> Node {
        let path = std::env::temp_dir().join(format!("wshub-tlsc-{}-{}.json", std::process::id(), rand::random::<u64>()));
        std::fs::write(&path, cfg.to_string()).unwrap();
        let loaded = wshub_server::config::load(Some(&path), Vec::<(String, String)>::new(), &[]);
        let _ = std::fs::remove_file(&path);
        let (_node, sc) = wshub_server::app::build(&loaded.unwrap().config).unwrap();
        let listener = wshub_server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let main = listener.local_addr().unwrap();
        let internal = wshub_server::bind_internal(&sc).await.unwrap();
        let internal_addr = internal.as_ref().map(|l| l.local_addr().unwrap());
        let shared = wshub_server::Shared::new(sc);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(wshub_server::lifecycle::run(listener, internal, shared, None, async {
            let _ = stopped.await;
        }));
        Node {
            main,
            internal: internal_addr,
            stop,
            run,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(LIMIT, self.run).await.unwrap().unwrap();
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_and_key_as_pem_text_and_base64() {
    let pki = Pki::new();
    let node = Node::start(json!({
        "http_server": {"tls": {"enabled": true, "cert_pem": pki.server_pem, "key_pem": b64(&pki.server_key_pem)}},
    }))
    .await;
    let s = tls(node.main, client_config(&pki, &[b"http/1.1"], None)).await.unwrap();
    let resp = get1(s, "/health").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ca_pem_requires_a_certificate_the_ca_signed() {
    let pki = Pki::new();
    let dir = std::env::temp_dir().join(format!("wshub-mtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, &pki.ca_pem).unwrap();
    let node = Node::start(json!({
        "http_server": {"tls": {
            "enabled": true, "cert_pem": b64(&pki.server_pem), "key_pem": pki.server_key_pem, "client_ca_pem": ca_path,
        }},
    }))
    .await;
    for (who, cert) in [("no certificate", None), ("another CA's certificate", Some(&pki.stranger))] {
        // TLS 1.3: the client's side of the handshake ends before the server has checked its
        // certificate; the refusal comes as an alert instead of the first answer.
        let resp = match tls(node.main, client_config(&pki, &[b"http/1.1"], cert)).await {
            Ok(s) => get1(s, "/health").await,
            Err(_) => String::new(),
        };
        assert!(!resp.starts_with("HTTP/1.1"), "{who}: {resp}");
    }
    let s = tls(node.main, client_config(&pki, &[b"http/1.1"], Some(&pki.client)))
        .await
        .unwrap();
    let resp = get1(s, "/health").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    node.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_external_leaves_the_internal_port_plain() {
    let pki = Pki::new();
    let internal_port = wshub_testkit::free_port();
    let node = Node::start(json!({
        "http_server": {
            "tls": {"enabled": true, "cert_pem": pki.server_pem, "key_pem": pki.server_key_pem},
            "tls_external": true,
            "internal_port": internal_port.to_string(),
            "internal_address": "127.0.0.1",
        },
    }))
    .await;
    let internal = node.internal.unwrap();
    let resp = get1(TcpStream::connect(internal).await.unwrap(), "/health").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "plain on the internal port: {resp}");
    let s = tls(node.main, client_config(&pki, &[b"http/1.1"], None)).await.unwrap();
    let resp = get1(s, "/").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "TLS on the clients' port: {resp}");
    let resp = get1(TcpStream::connect(node.main).await.unwrap(), "/").await;
    assert!(!resp.starts_with("HTTP/1.1"), "no plain text on the clients' port: {resp}");
    node.stop().await;
    // Without tls_external the internal port has the clients' TLS.
    let node = Node::start(json!({
        "http_server": {
            "tls": {"enabled": true, "cert_pem": pki.server_pem, "key_pem": pki.server_key_pem},
            "internal_port": wshub_testkit::free_port().to_string(),
            "internal_address": "127.0.0.1",
        },
    }))
    .await;
    let s = tls(node.internal.unwrap(), client_config(&pki, &[b"http/1.1"], None))
        .await
        .unwrap();
    assert!(get1(s, "/health").await.starts_with("HTTP/1.1 200"));
    node.stop().await;
}

fn transports() -> Value {
    json!({
        "http_api": {"key": KEY},
        "http_stream": {"enabled": true},
        "client": {"insecure": true},
    })
}

/// `POST /api/info` with the API key over `send`.
async fn api_info(
    send: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    scheme: &str,
    authority: &str,
) -> (u16, http::Version, String) {
    request(
        send,
        "POST",
        &format!("{scheme}://{authority}/api/info"),
        &[("x-api-key", KEY)],
        "{}",
    )
    .await
}

/// An HTTP-streaming session opens over `send`, on HTTP/2, with a client id.
async fn assert_http_stream_connects(send: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>, authority: &str) {
    let (status, version, connect) = http_stream_connect(send, authority).await;
    assert_eq!((status, version), (200, http::Version::HTTP_2));
    assert!(connect["connect"]["client"].is_string(), "{connect}");
}

/// An HTTP-streaming connect over `send`: the connect reply's first line.
async fn http_stream_connect(
    send: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    authority: &str,
) -> (u16, http::Version, Value) {
    let (status, version, line) = request(
        send,
        "POST",
        &format!("https://{authority}/connection/http_stream"),
        &[("content-type", "application/json")],
        r#"{"id":1,"connect":{}}"#,
    )
    .await;
    (status, version, serde_json::from_str(&line).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_over_tls_for_the_api_and_the_http_transports() {
    let pki = Pki::new();
    let mut cfg = transports();
    cfg["http_server"] = json!({"tls": {"enabled": true, "cert_pem": pki.server_pem, "key_pem": pki.server_key_pem}});
    let node = Node::start(cfg).await;
    let s = tls(node.main, client_config(&pki, &[b"h2", b"http/1.1"], None)).await.unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut send = h2(s).await;
    let authority = format!("localhost:{}", node.main.port());
    let (status, version, body) = api_info(&mut send, "https", &authority).await;
    assert_eq!((status, version), (200, http::Version::HTTP_2), "{body}");
    assert!(body.contains("\"nodes\""), "{body}");
    // Streams on the same connection: an HTTP-streaming session, then the API again.
    assert_http_stream_connects(&mut send, &authority).await;
    let (status, _, body) = api_info(&mut send, "https", &authority).await;
    assert_eq!(status, 200, "{body}");
    // A WebSocket client offers http/1.1 only and is upgraded as before.
    let mut s = tls(node.main, client_config(&pki, &[b"http/1.1"], None)).await.unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_upgrades(&mut s).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_external_serves_http2_with_prior_knowledge_beside_http1() {
    let mut cfg = transports();
    cfg["http_server"] =
        json!({"h2c_external": true, "internal_port": wshub_testkit::free_port().to_string(), "internal_address": "127.0.0.1"});
    cfg["http_api"]["external"] = json!(true);
    let node = Node::start(cfg).await;
    let mut send = h2(TcpStream::connect(node.main).await.unwrap()).await;
    let authority = node.main.to_string();
    assert_http_stream_connects(&mut send, &authority).await;
    let (status, version, _) = api_info(&mut send, "http", &authority).await;
    assert_eq!((status, version), (200, http::Version::HTTP_2));
    // HTTP/1.1 and WebSocket on the same port as before.
    assert!(get1(TcpStream::connect(node.main).await.unwrap(), "/")
        .await
        .starts_with("HTTP/1.1 200"));
    let mut s = TcpStream::connect(node.main).await.unwrap();
    assert_upgrades(&mut s).await;
    node.stop().await;
}

#[test]
fn h2c_external_needs_an_internal_port_and_no_tls() {
    let load = |cfg: Value| {
        let path = std::env::temp_dir().join(format!("wshub-h2c-{}-{}.json", std::process::id(), rand::random::<u64>()));
        std::fs::write(&path, cfg.to_string()).unwrap();
        let r = wshub_server::config::load(Some(&path), Vec::<(String, String)>::new(), &[]);
        let _ = std::fs::remove_file(&path);
        r.err().map(|e| e.0).unwrap_or_default()
    };
    let e = load(json!({"http_server": {"h2c_external": true}}));
    assert!(e.contains("http_server.h2c_external") && e.contains("internal_port"), "{e}");
    let e = load(json!({"http_server": {"h2c_external": true, "internal_port": "9001",
        "tls": {"enabled": true, "cert_pem": "c", "key_pem": "k"}}}));
    assert!(e.contains("http_server.h2c_external") && e.contains("tls"), "{e}");
    let e = load(json!({"http_server": {"tls": {"enabled": true}}}));
    assert!(e.contains("http_server.tls") && e.contains("cert_pem"), "{e}");
}
