//! The proxies' HTTP transport against real backends on loopback: each failure is told apart
//! (refused, timeout, status, garbage), connections are kept alive, requests in flight per
//! endpoint are bounded, forwarded and static headers arrive.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use wshub_core::config::NodeConfig;
use wshub_core::proxy::{call, Answer, Caller, Endpoints, ProxyFailure, RpcResultBody};
use wshub_server::proxy::HttpProxy;

mod common;
use common::Cert;

#[derive(Clone, Copy)]
enum Mode {
    Json,
    /// JSON saying it came over TLS.
    Tls,
    Garbage,
    Status500,
    Silent,
    /// Answers after this many milliseconds.
    Delay(u64),
}

#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    heads: parking_lot::Mutex<Vec<String>>,
}

/// A backend on a free loopback port; every request is answered per `mode`.
async fn backend(mode: Mode) -> (String, Arc<Seen>) {
    backend_over(mode, None).await
}

/// [`backend`], over TLS with `tls`'s certificate when given (`https://`).
async fn backend_over(mode: Mode, tls: Option<wshub_server::tls::TlsAcceptor>) -> (String, Arc<Seen>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}/proxy", l.local_addr().unwrap());
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = l.accept().await.unwrap();
            let (tls, s) = (tls.clone(), s.clone());
            tokio::spawn(async move {
                match tls {
                    None => {
                        s.connections.fetch_add(1, Ordering::SeqCst);
                        serve(tcp, mode, s).await;
                    }
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            s.connections.fetch_add(1, Ordering::SeqCst);
                            serve(stream, mode, s).await;
                        }
                    }
                }
            });
        }
    });
    (url, seen)
}

async fn serve(mut stream: impl AsyncRead + AsyncWrite + Unpin, mode: Mode, seen: Arc<Seen>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(head) = wshub_testkit::take_request(&mut buf) {
            seen.heads.lock().push(head);
            let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            seen.max_in_flight.fetch_max(now, Ordering::SeqCst);
            let (status, body) = match mode {
                Mode::Json => ("200 OK", r#"{"result":{"data":{"ok":true}}}"#),
                Mode::Tls => ("200 OK", r#"{"result":{"data":{"tls":true}}}"#),
                Mode::Garbage => ("200 OK", "<html>oops</html>"),
                Mode::Status500 => ("500 Internal Server Error", ""),
                Mode::Silent => {
                    std::future::pending::<()>().await;
                    unreachable!()
                }
                Mode::Delay(ms) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await; // the backend's slowness is the case
                    ("200 OK", r#"{"result":{}}"#)
                }
            };
            seen.in_flight.fetch_sub(1, Ordering::SeqCst);
            let reply = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            if stream.write_all(reply.as_bytes()).await.is_err() {
                return;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// An RPC proxy at `url` with the given timeout and bound, and its transport.
fn rpc_endpoint(url: &str, timeout: Duration, max_in_flight: usize) -> (Endpoints, HttpProxy) {
    let mut c = NodeConfig::default();
    c.proxy.rpc.proxy.endpoint = url.to_string();
    c.proxy.rpc.proxy.timeout = timeout;
    c.proxy.rpc.proxy.max_in_flight = max_in_flight;
    c.proxy.rpc.proxy.http_headers = vec!["Cookie".into()];
    c.proxy.rpc.proxy.http.static_headers.insert("X-Static".into(), "s".into());
    c.proxy.rpc.without_namespace.proxy_enabled = true;
    let e = Endpoints::build(&c).unwrap();
    let t = HttpProxy::new(&e).unwrap();
    (e, t)
}

async fn rpc(e: &Endpoints, t: &HttpProxy) -> Result<Answer<RpcResultBody>, ProxyFailure> {
    let headers = vec![
        ("cookie".to_string(), "session=1".to_string()),
        ("x-other".to_string(), "no".to_string()),
    ];
    let caller = Caller {
        client: "c",
        user: "u",
        transport: "websocket",
        protocol: "json",
        headers: &headers,
        meta: None,
    };
    let mut f = serde_json::Map::new();
    f.insert("method".into(), "m".into());
    call::<RpcResultBody>(t, e.for_rpc("m").unwrap(), &caller, f).await
}

#[tokio::test]
async fn failures_are_told_apart() {
    let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = format!("http://{}/x", free.local_addr().unwrap());
    drop(free);
    let (e, t) = rpc_endpoint(&closed, Duration::from_secs(1), 8);
    assert!(matches!(rpc(&e, &t).await, Err(ProxyFailure::Unreachable(_))));

    let (url, _) = backend(Mode::Silent).await;
    let (e, t) = rpc_endpoint(&url, Duration::from_millis(200), 8);
    let started = std::time::Instant::now();
    assert_eq!(rpc(&e, &t).await.unwrap_err(), ProxyFailure::Timeout);
    assert!(started.elapsed() < Duration::from_secs(2), "bounded by the endpoint's timeout");

    let (url, _) = backend(Mode::Status500).await;
    let (e, t) = rpc_endpoint(&url, Duration::from_secs(1), 8);
    assert_eq!(rpc(&e, &t).await.unwrap_err(), ProxyFailure::Status(500));

    let (url, _) = backend(Mode::Garbage).await;
    let (e, t) = rpc_endpoint(&url, Duration::from_secs(1), 8);
    assert!(matches!(rpc(&e, &t).await, Err(ProxyFailure::Garbage(_))));
}

#[tokio::test]
async fn keeps_connections_alive_and_forwards_headers() {
    let (url, seen) = backend(Mode::Json).await;
    let (e, t) = rpc_endpoint(&url, Duration::from_secs(1), 8);
    for _ in 0..20 {
        match rpc(&e, &t).await.unwrap() {
            Answer::Result(Some(r)) => assert_eq!(r.data.unwrap().get(), r#"{"ok":true}"#),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1, "one kept-alive connection");
    let head = seen.heads.lock()[0].clone();
    assert!(head.contains("cookie: session=1"), "{head}");
    assert!(head.contains("x-static: s"), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(!head.contains("x-other"), "only http_headers are forwarded: {head}");
}

#[tokio::test]
async fn requests_in_flight_are_bounded_per_endpoint() {
    let (url, seen) = backend(Mode::Delay(50)).await;
    let (e, t) = rpc_endpoint(&url, Duration::from_secs(5), 2);
    let (e, t) = (Arc::new(e), Arc::new(t));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (e, t) = (e.clone(), t.clone());
        tasks.push(tokio::spawn(async move { rpc(&e, &t).await.is_ok() }));
    }
    for task in tasks {
        assert!(task.await.unwrap());
    }
    assert_eq!(seen.max_in_flight.load(Ordering::SeqCst), 2);
}

/// An `https://` endpoint whose certificate is trusted through `http.tls.server_ca_pem`; the
/// same endpoint without that CA fails (unreachable: the certificate is not trusted).
#[tokio::test]
async fn https_endpoints_with_a_configured_ca() {
    let cert = Cert::for_host("127.0.0.1", "proxy");
    let (url, seen) = backend_over(Mode::Tls, Some(cert.acceptor())).await;
    let mut c = NodeConfig::default();
    c.proxy.rpc.proxy.endpoint = url.clone();
    c.proxy.rpc.proxy.http.tls.enabled = true;
    c.proxy.rpc.proxy.http.tls.server_ca_pem = cert.pem.clone();
    c.proxy.rpc.without_namespace.proxy_enabled = true;
    let e = Endpoints::build(&c).unwrap();
    let t = HttpProxy::new(&e).unwrap();
    for _ in 0..3 {
        assert!(matches!(rpc(&e, &t).await, Ok(Answer::Result(Some(_)))));
    }
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1, "one kept-alive TLS connection");
    // Public roots only: the self-signed certificate is refused.
    c.proxy.rpc.proxy.http.tls = Default::default();
    let e = Endpoints::build(&c).unwrap();
    let t = HttpProxy::new(&e).unwrap();
    assert!(matches!(rpc(&e, &t).await, Err(ProxyFailure::Unreachable(_))));
}

/// `http.tls.server_name`: a certificate for another name than the endpoint's host is
/// accepted when that name is asked for, refused otherwise; `insecure_skip_verify` accepts
/// it without its CA.
#[tokio::test]
async fn https_server_name_and_insecure_skip_verify() {
    let cert = Cert::for_host("backend.test", "proxy-named");
    let (url, _) = backend_over(Mode::Tls, Some(cert.acceptor())).await;
    let answer = |tls: wshub_core::config::ProxyTls| {
        let mut c = NodeConfig::default();
        c.proxy.rpc.proxy.endpoint = url.clone();
        c.proxy.rpc.proxy.http.tls = tls;
        c.proxy.rpc.without_namespace.proxy_enabled = true;
        async move {
            let e = Endpoints::build(&c).unwrap();
            let t = HttpProxy::new(&e).unwrap();
            rpc(&e, &t).await
        }
    };
    let ca = wshub_core::config::ProxyTls {
        enabled: true,
        server_ca_pem: cert.pem.clone(),
        ..Default::default()
    };
    let named = wshub_core::config::ProxyTls {
        server_name: "backend.test".into(),
        ..ca.clone()
    };
    assert!(matches!(answer(named).await, Ok(Answer::Result(Some(_)))));
    assert!(
        matches!(answer(ca).await, Err(ProxyFailure::Unreachable(_))),
        "127.0.0.1 is not the certificate's name"
    );
    let insecure = wshub_core::config::ProxyTls {
        enabled: true,
        insecure_skip_verify: true,
        ..Default::default()
    };
    assert!(matches!(answer(insecure).await, Ok(Answer::Result(Some(_)))));
}
