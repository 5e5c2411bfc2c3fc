//! `wss://` with a certificate the test makes: handshake, connect, subscribe, and a
//! publication through the API over `https://`; a plain-text client on the TLS port is
//! dropped and the TLS client keeps being served.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{TestServer, LIMIT};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use wshub_websocket::{handshake, Config, Connection, Event, MessageKind, Role};

async fn tls_connect(addr: std::net::SocketAddr, cert_der: &[u8]) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls_pki_types::CertificateDer::from(cert_der.to_vec())).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    TlsConnector::from(Arc::new(cfg))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

async fn send<S: AsyncWrite + Unpin>(s: &mut S, conn: &mut Connection) {
    while conn.has_pending_transmit() {
        let chunk: Vec<u8> = {
            let mut sl = [std::io::IoSlice::new(&[]); 8];
            let n = conn.transmit_slices(&mut sl);
            sl[..n].iter().flat_map(|x| x.iter().copied()).collect()
        };
        s.write_all(&chunk).await.unwrap();
        conn.advance_transmit(chunk.len());
    }
    s.flush().await.unwrap();
}

async fn next_message<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, conn: &mut Connection) -> String {
    let mut buf = [0u8; 8192];
    loop {
        if let Some(e) = conn.poll_event() {
            match e {
                Event::Message { data, .. } => return String::from_utf8(data.to_vec()).unwrap(),
                Event::Closed { code, .. } => panic!("closed {}", code.0),
                _ => continue,
            }
        }
        let n = tokio::time::timeout(LIMIT, s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "eof");
        conn.handle_read(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_end_to_end() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("wshub-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let cfg_path = dir.join("config.json");
    let cfg = json!({
        "http_server": {"tls": {"enabled": true, "cert_pem_file": cert_path, "key_pem_file": key_path}},
        "http_api": {"key": "k"},
        "client": {"token": {"hmac_secret_key": "s"}},
        "channel": {"without_namespace": {"allow_subscribe_for_client": true}}
    });
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let loaded = wshub_server::config::load(Some(&cfg_path), Vec::<(String, String)>::new(), &[]).unwrap();
    let (_node, sc) = wshub_server::app::build(&loaded.config).unwrap();
    let server = TestServer::start(sc).await;
    let der = cert.cert.der().to_vec();

    // A plain-text client on the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(server.addr).await.unwrap();
    plain.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut b = [0u8; 64];
    let n = tokio::time::timeout(LIMIT, plain.read(&mut b)).await.unwrap().unwrap_or(0);
    assert!(!b[..n].starts_with(b"HTTP/1.1 200"));

    let mut s = tls_connect(server.addr, &der).await;
    let req = handshake::client_request("localhost", "/connection/websocket", &[], None, [3; 16]);
    s.write_all(&req.bytes).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    let mut conn = Connection::new(Config {
        role: Role::Client,
        max_message_size: 1 << 20,
        deflate: None,
    });
    let token = wshub_core::token::make_hs256("s", &json!({"sub": "tls"})).unwrap();
    conn.send(MessageKind::Text, format!(r#"{{"id":1,"connect":{{"token":"{token}"}}}}"#).into());
    send(&mut s, &mut conn).await;
    assert!(next_message(&mut s, &mut conn).await.contains("\"connect\""));
    conn.send(MessageKind::Text, r#"{"id":2,"subscribe":{"channel":"secure"}}"#.into());
    send(&mut s, &mut conn).await;
    assert!(next_message(&mut s, &mut conn).await.contains("\"subscribe\""));

    // Publish over https.
    let mut api = tls_connect(server.addr, &der).await;
    let body = r#"{"channel":"secure","data":{"over":"tls"}}"#;
    api.write_all(
        format!(
            "POST /api/publish HTTP/1.1\r\nHost: localhost\r\nX-API-Key: k\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(LIMIT, api.read_to_end(&mut resp)).await.unwrap().ok();
    assert!(resp.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&resp));
    let push = next_message(&mut s, &mut conn).await;
    assert!(push.contains(r#""data":{"over":"tls"}"#), "{push}");
    server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_tls_files_name_the_key() {
    let e = wshub_server::tls::acceptor("/nonexistent/cert.pem", "/nonexistent/key.pem")
        .err()
        .unwrap();
    assert!(e.0.contains("http_server.tls.cert_pem_file"), "{e}");
}
