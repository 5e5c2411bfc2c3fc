//! `wss://` with a certificate the test makes: handshake, connect, subscribe, and a
//! publication through the API over `https://`; a plain-text client on the TLS port is
//! dropped and the TLS client keeps being served. Then the server's TLS stream
//! (`wshub_server::tls_stream`, rustls's unbuffered API) against tokio-rustls clients:
//! messages larger than a record and than the reader's buffer, many small ones, socket
//! writes that do not take everything, client key updates, clean closes both ways, TLS 1.2,
//! a truncated stream, and garbage instead of a ClientHello.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{Cert, TestServer, LIMIT};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use wshub_websocket::{handshake, Config, Connection, Event, MessageKind, Role};

fn client_config(cert_der: &[u8], versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls_pki_types::CertificateDer::from(cert_der.to_vec())).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

async fn tls_connect(addr: std::net::SocketAddr, cert_der: &[u8]) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    TlsConnector::from(client_config(cert_der, rustls::DEFAULT_VERSIONS))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

/// A server stream and a tokio-rustls client stream over a loopback TCP connection.
async fn pair(
    cert: &Cert,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> (wshub_server::tls::TlsStream, tokio_rustls::client::TlsStream<TcpStream>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = cert.acceptor();
    let server = async {
        let (tcp, _) = listener.accept().await.unwrap();
        acceptor.accept(tcp).await.unwrap()
    };
    let client = async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        TlsConnector::from(client_config(&cert.der, versions))
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .unwrap()
    };
    let (server, client) = tokio::time::timeout(LIMIT, async { tokio::join!(server, client) }).await.unwrap();
    // The handshake's buffers are gone with it.
    assert_eq!(server.buffered(), 0);
    (server, client)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// The WebSocket upgrade of `/connection/websocket` over `s`: the client side's connection.
async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, key: [u8; 16]) -> Connection {
    let req = handshake::client_request("localhost", "/connection/websocket", &[], None, key);
    s.write_all(&req.bytes).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    Connection::new(Config {
        role: Role::Client,
        max_message_size: 1 << 20,
        deflate: None,
    })
}

async fn send<S: AsyncWrite + Unpin>(s: &mut S, conn: &mut Connection) {
    s.write_all(&conn.take_transmit()).await.unwrap();
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
    let cert = Cert::new("e2e");
    let (_node, sc) = cert.build(json!({
        "http_server": {"tls": cert.section()},
        "http_api": {"key": "k"},
        "client": {"token": {"hmac_secret_key": "s"}},
        "channel": {"without_namespace": {"allow_subscribe_for_client": true}}
    }));
    let server = TestServer::start(sc).await;
    let der = cert.der.clone();

    // A plain-text client on the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(server.addr).await.unwrap();
    plain.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut b = [0u8; 64];
    let n = tokio::time::timeout(LIMIT, plain.read(&mut b)).await.unwrap().unwrap_or(0);
    assert!(!b[..n].starts_with(b"HTTP/1.1 200"));

    let mut s = tls_connect(server.addr, &der).await;
    let mut conn = upgrade(&mut s, [3; 16]).await;
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
}

#[test]
fn bad_tls_files_name_the_key() {
    let tls = wshub_server::config::Tls {
        enabled: true,
        cert_pem: "/nonexistent/cert.pem".into(),
        key_pem: "/nonexistent/key.pem".into(),
        ..Default::default()
    };
    let e = wshub_server::tls::acceptor("http_server.tls", &tls).err().unwrap();
    assert!(e.0.contains("http_server.tls.cert_pem"), "{e}");
}

/// Data larger than a TLS record and than the reader's buffer, both ways: the server reads
/// through a 1000-byte buffer (the rest of each record is kept for the next read) and
/// echoes; then it writes 32 MiB and the client reads nothing until a write has left
/// encrypted bytes in the stream (the socket took part of them), then checks every byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_large_data_small_reads_and_partial_writes() {
    let cert = Cert::new("large");
    for versions in [&[&rustls::version::TLS13][..], &[&rustls::version::TLS12][..]] {
        let (mut server, mut client) = pair(&cert, versions).await;
        let data = pattern(100 * 1024 + 7, 1);
        const BIG: usize = 32 << 20;
        // Sent once the server has encrypted bytes its socket did not take.
        let (backed_up_tx, backed_up) = tokio::sync::oneshot::channel::<()>();
        let echo = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 1000];
            while got.len() < 100 * 1024 + 7 {
                let n = server.read(&mut buf).await.unwrap();
                assert!(n > 0, "early EOF after {}", got.len());
                got.extend_from_slice(&buf[..n]);
            }
            server.write_all(&got).await.unwrap();
            server.flush().await.unwrap();
            let big = pattern(BIG, 2);
            let (mut off, mut backed_up_tx) = (0, Some(backed_up_tx));
            while off < big.len() {
                off += server.write(&big[off..]).await.unwrap();
                if server.buffered() > 0 {
                    if let Some(tx) = backed_up_tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
            server.flush().await.unwrap();
            assert!(backed_up_tx.is_none(), "the socket took every write whole");
            // Everything read and sent: no buffer is kept.
            assert_eq!(server.buffered(), 0);
            server
        });
        let (mut cr, mut cw) = tokio::io::split(&mut client);
        let write = async {
            cw.write_all(&data).await.unwrap();
            cw.flush().await.unwrap();
        };
        let read = async {
            let mut back = vec![0u8; data.len()];
            cr.read_exact(&mut back).await.unwrap();
            assert!(back == data, "echo differs");
            // The server's writes back up in the socket before the client reads them.
            backed_up.await.unwrap();
            let mut big = vec![0u8; BIG];
            cr.read_exact(&mut big).await.unwrap();
            assert!(big == pattern(BIG, 2), "the large write differs");
        };
        tokio::time::timeout(LIMIT, async { tokio::join!(write, read) }).await.unwrap();
        let server = tokio::time::timeout(LIMIT, echo).await.unwrap().unwrap();
        drop(server);
    }
}

/// Many small writes each way, interleaved with reads; vectored writes of small slices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_many_small_messages() {
    let cert = Cert::new("small");
    let (mut server, mut client) = pair(&cert, rustls::DEFAULT_VERSIONS).await;
    let echo = tokio::spawn(async move {
        let mut buf = [0u8; 64];
        let mut total = 0;
        while total < 2000 * 10 {
            let n = server.read(&mut buf).await.unwrap();
            assert!(n > 0);
            total += n;
            // Header and payload as two slices, as the WebSocket driver writes them.
            let (a, b) = buf[..n].split_at(n / 2);
            let mut slices = [std::io::IoSlice::new(a), std::io::IoSlice::new(b)];
            let mut rest = &mut slices[..];
            while !rest.is_empty() {
                let w = server.write_vectored(rest).await.unwrap();
                std::io::IoSlice::advance_slices(&mut rest, w);
            }
        }
        server.flush().await.unwrap();
        assert_eq!(server.buffered(), 0);
    });
    let mut sent = Vec::new();
    let mut back = Vec::new();
    let mut buf = [0u8; 4096];
    for i in 0..2000u32 {
        let msg = format!("{:010}", i * 7);
        client.write_all(msg.as_bytes()).await.unwrap();
        client.flush().await.unwrap();
        sent.extend_from_slice(msg.as_bytes());
        if i % 100 == 99 {
            while back.len() < sent.len() {
                let n = tokio::time::timeout(LIMIT, client.read(&mut buf)).await.unwrap().unwrap();
                assert!(n > 0);
                back.extend_from_slice(&buf[..n]);
            }
        }
    }
    assert_eq!(back, sent);
    tokio::time::timeout(LIMIT, echo).await.unwrap().unwrap();
}

/// The client refreshes its keys (TLS 1.3 KeyUpdate, update requested) between messages:
/// the server takes the new keys and answers with its own KeyUpdate before its next data,
/// which the client could not decrypt otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_client_key_update() {
    let cert = Cert::new("keyupdate");
    let (mut server, mut client) = pair(&cert, &[&rustls::version::TLS13]).await;
    let echo = tokio::spawn(async move {
        let mut buf = [0u8; 20000];
        loop {
            let n = server.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            server.write_all(&buf[..n]).await.unwrap();
            server.flush().await.unwrap();
        }
        assert_eq!(server.buffered(), 0);
        // The client's close_notify came: ours goes back.
        server.shutdown().await.unwrap();
        assert_eq!(server.buffered(), 0);
    });
    for round in 0..5u8 {
        client.get_mut().1.refresh_traffic_keys().unwrap();
        let msg = pattern(20000, round);
        client.write_all(&msg).await.unwrap();
        client.flush().await.unwrap();
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(LIMIT, client.read_exact(&mut back)).await.unwrap().unwrap();
        assert!(back == msg, "round {round} differs");
    }
    // Clean close from the client: the server reads EOF and closes with close_notify, so
    // the client's read ends without an error (no truncation).
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(LIMIT, client.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert!(rest.is_empty());
    tokio::time::timeout(LIMIT, echo).await.unwrap().unwrap();
}

/// The server closes: its close_notify ends the client's read cleanly. A peer that drops
/// TCP without close_notify is a truncation: the server's read fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_server_close_and_truncation() {
    let cert = Cert::new("close");
    let (mut server, mut client) = pair(&cert, rustls::DEFAULT_VERSIONS).await;
    server.write_all(b"bye").await.unwrap();
    server.shutdown().await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(LIMIT, client.read_to_end(&mut got)).await.unwrap().unwrap();
    assert_eq!(got, b"bye");

    let (mut server, client) = pair(&cert, rustls::DEFAULT_VERSIONS).await;
    let (mut tcp, _) = client.into_inner();
    // A FIN without close_notify (dropping the socket could reset it instead: the
    // session tickets the server sent are unread).
    tcp.shutdown().await.unwrap();
    let mut buf = [0u8; 16];
    let e = tokio::time::timeout(LIMIT, server.read(&mut buf)).await.unwrap().unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
}

/// Bytes that are not a ClientHello: the handshake fails (rustls's alert goes out, then the
/// stream is dropped) and the next connection completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_garbage_instead_of_client_hello() {
    let cert = Cert::new("garbage");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = cert.acceptor();
    for junk in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0x00, 0x08, 1, 2, 3, 4, 5, 6, 7, 8][..],
        &[0x16, 0x03, 0x01, 0xff, 0xff][..],
    ] {
        let mut raw = TcpStream::connect(addr).await.unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        raw.write_all(junk).await.unwrap();
        let accepted = async {
            if junk.len() == 5 {
                // A header announcing a record larger than TLS allows.
                raw.shutdown().await.unwrap();
            }
            acceptor.accept(tcp).await
        };
        assert!(tokio::time::timeout(LIMIT, accepted).await.unwrap().is_err());
        let mut answer = Vec::new();
        tokio::time::timeout(LIMIT, raw.read_to_end(&mut answer)).await.unwrap().ok();
        // Nothing but TLS (an alert record, content type 21) comes back.
        assert!(answer.is_empty() || answer[0] == 21, "{answer:?}");
    }
    let (mut server, mut client) = {
        let server = async {
            let (tcp, _) = listener.accept().await.unwrap();
            acceptor.accept(tcp).await.unwrap()
        };
        let client = async {
            let tcp = TcpStream::connect(addr).await.unwrap();
            TlsConnector::from(client_config(&cert.der, rustls::DEFAULT_VERSIONS))
                .connect("localhost".try_into().unwrap(), tcp)
                .await
                .unwrap()
        };
        tokio::time::timeout(LIMIT, async { tokio::join!(server, client) }).await.unwrap()
    };
    client.write_all(b"ok").await.unwrap();
    client.flush().await.unwrap();
    let mut buf = [0u8; 2];
    tokio::time::timeout(LIMIT, server.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"ok");
}

/// The whole server over the TLS stream: a WebSocket client publishes 40 KiB to a channel
/// it is subscribed to (in and out through several records), then 300 small publications,
/// then closes cleanly; a client that sends binary garbage instead of a ClientHello is
/// dropped meanwhile and does not disturb it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_large_and_many_messages_and_close() {
    let cert = Cert::new("wsbig");
    let (_node, sc) = cert.build(json!({
        "http_server": {"tls": cert.section()},
        "client": {"allow_anonymous_connect_without_token": true},
        "channel": {"without_namespace": {
            "allow_subscribe_for_client": true, "allow_subscribe_for_anonymous": true,
            "allow_publish_for_client": true, "allow_publish_for_anonymous": true
        }}
    }));
    let server = TestServer::start(sc).await;

    let mut s = tls_connect(server.addr, &cert.der).await;
    let mut conn = upgrade(&mut s, [5; 16]).await;
    conn.send(MessageKind::Text, r#"{"id":1,"connect":{}}"#.into());
    send(&mut s, &mut conn).await;
    assert!(next_message(&mut s, &mut conn).await.contains("\"connect\""));
    conn.send(MessageKind::Text, r#"{"id":2,"subscribe":{"channel":"big"}}"#.into());
    send(&mut s, &mut conn).await;
    assert!(next_message(&mut s, &mut conn).await.contains("\"subscribe\""));

    // Garbage on another connection, while this one is open.
    let mut junk = TcpStream::connect(server.addr).await.unwrap();
    junk.write_all(&[0x17, 0x03, 0x03, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef])
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(LIMIT, junk.read_to_end(&mut answer)).await.unwrap().ok();
    assert!(answer.is_empty() || answer[0] == 21, "{answer:?}");

    let big = "x".repeat(40 * 1024);
    conn.send(
        MessageKind::Text,
        format!(r#"{{"id":3,"publish":{{"channel":"big","data":{{"s":"{big}"}}}}}}"#).into(),
    );
    send(&mut s, &mut conn).await;
    let (mut reply, mut push) = (false, false);
    while !(reply && push) {
        for line in next_message(&mut s, &mut conn).await.lines() {
            reply |= line.starts_with(r#"{"id":3"#);
            push |= line.contains("\"push\"") && line.contains(&big);
        }
    }

    for i in 0..300 {
        conn.send(
            MessageKind::Text,
            format!(r#"{{"id":{},"publish":{{"channel":"big","data":{{"n":{i}}}}}}}"#, 10 + i).into(),
        );
    }
    send(&mut s, &mut conn).await;
    let (mut replies, mut pushes) = (0, 0);
    while replies < 300 || pushes < 300 {
        for line in next_message(&mut s, &mut conn).await.lines() {
            if line.contains("\"push\"") {
                assert!(line.contains(&format!(r#"{{"n":{pushes}}}"#)), "out of order: {line}");
                pushes += 1;
            } else if line.contains("\"publish\"") {
                replies += 1;
            }
        }
    }

    conn.close(wshub_websocket::CloseCode::NORMAL, "");
    send(&mut s, &mut conn).await;
    let mut buf = [0u8; 4096];
    let closed = async {
        loop {
            match conn.poll_event() {
                Some(Event::Closed { code, .. }) => return code,
                Some(_) => continue,
                None => {}
            }
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "eof before the close frame");
            conn.handle_read(&buf[..n]);
        }
    };
    assert_eq!(
        tokio::time::timeout(LIMIT, closed).await.unwrap(),
        wshub_websocket::CloseCode::NORMAL
    );
    // Then the server ends TLS with `close_notify`: a clean end of stream for the client
    // (rustls reports a TCP close without it as an UnexpectedEof truncation).
    let end = tokio::time::timeout(LIMIT, s.read(&mut buf)).await.unwrap();
    assert_eq!(end.map_err(|e| e.kind()), Ok(0), "close_notify, then EOF");
    server.wait_connections(0).await;
    server.stop().await;
}

/// `http_server.internal_tls`: the internal port (API, probes) serves TLS with its own
/// certificate while the clients' port stays plain; each listener with its own settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_tls_is_on_the_internal_port_only() {
    let cert = Cert::new("internal");
    let internal_port = wshub_testkit::free_port();
    let (_node, sc) = cert.build(json!({
        "http_server": {
            "internal_port": internal_port.to_string(),
            "internal_address": "127.0.0.1",
            "internal_tls": cert.section(),
        },
        "http_api": {"key": "k"},
    }));
    assert!(sc.tls.is_none(), "the clients' port stays plain");
    let listener = wshub_server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let main = listener.local_addr().unwrap();
    let internal = wshub_server::bind_internal(&sc).await.unwrap();
    let internal_addr = internal.as_ref().unwrap().local_addr().unwrap();
    assert_eq!(internal_addr.port(), internal_port);
    let shared = wshub_server::Shared::new(sc);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(wshub_server::lifecycle::run(listener, internal, shared, None, async {
        let _ = stopped.await;
    }));

    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut s = tls_connect(internal_addr, &cert.der).await;
    s.write_all(get("/health").as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(LIMIT, s.read_to_end(&mut resp)).await.unwrap().ok();
    assert!(resp.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&resp));
    // Plain text on the internal port gets no answer; the main port answers plain text.
    let mut plain = TcpStream::connect(internal_addr).await.unwrap();
    plain.write_all(get("/health").as_bytes()).await.unwrap();
    let mut b = [0u8; 64];
    let n = tokio::time::timeout(LIMIT, plain.read(&mut b)).await.unwrap().unwrap_or(0);
    assert!(!b[..n].starts_with(b"HTTP/1.1"), "{}", String::from_utf8_lossy(&b[..n]));
    let mut plain = TcpStream::connect(main).await.unwrap();
    plain.write_all(get("/health").as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(LIMIT, plain.read_to_end(&mut resp)).await.unwrap().unwrap();
    assert!(
        resp.starts_with(b"HTTP/1.1 404"),
        "health is internal: {}",
        String::from_utf8_lossy(&resp)
    );
    let _ = stop.send(());
    tokio::time::timeout(LIMIT, run).await.unwrap().unwrap();
}
