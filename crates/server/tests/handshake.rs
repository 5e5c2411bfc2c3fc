//! Every bad handshake of DESIGN.md's table gets its answer over a real socket, and a
//! well-behaved client on the same server keeps being served.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_handshakes_get_their_answers() {
    let server = TestServer::echo(65536).await;
    let host = server.addr.to_string();
    let mut good = Client::connect(server.addr, "/connection/websocket", &[], None).await;
    good.echo_round_trip("before").await;

    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let cases: Vec<(String, u16, &str)> = vec![
        (format!("POST /connection/websocket HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{key}Sec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n"), 400, "method must be GET"),
        (format!("GET /connection/websocket HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n{key}Sec-WebSocket-Version: 13\r\n\r\n"), 400, "Upgrade: websocket"),
        (format!("GET /connection/websocket HTTP/1.1\r\nHost: {host}\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n{key}Sec-WebSocket-Version: 13\r\n\r\n"), 400, "Upgrade: websocket"),
        (format!("GET /connection/websocket HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n{key}Sec-WebSocket-Version: 13\r\n\r\n"), 400, "Connection header"),
        (format!("GET /connection/websocket HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"), 400, "Sec-WebSocket-Key"),
        (format!("GET /connection/websocket HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dG9vIHNob3J0\r\nSec-WebSocket-Version: 13\r\n\r\n"), 400, "Sec-WebSocket-Key"),
        (format!("GET /connection/websocket HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{key}Sec-WebSocket-Version: 8\r\n\r\n"), 426, "Sec-WebSocket-Version"),
        (format!("GET /connection/websocket HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{key}\r\n"), 426, "Sec-WebSocket-Version"),
        (format!("GET /connection/websocket HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{key}Sec-WebSocket-Version: 13\r\nOrigin: https://evil.org\r\n\r\n"), 403, "refused: it matches nothing in client.allowed_origins"),
    ];
    for (req, status, reason) in cases {
        let (code, headers, body) = raw_http(server.addr, req.as_bytes()).await;
        assert_eq!(code, status, "{req}");
        assert!(body.contains(reason), "{body:?} should name {reason:?}");
        assert_eq!(body.lines().count(), 1, "a one-line reason: {body:?}");
        if status == 426 {
            assert!(headers.iter().any(|(k, v)| k == "sec-websocket-version" && v == "13"));
        }
        good.echo_round_trip("still served").await;
    }
    assert_eq!(server.shared.connections(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_handshakes() {
    let server = TestServer::echo(65536).await;
    let host = server.addr.to_string();
    // Token lists in any case, allowed origin, subprotocol echoed, deflate agreed.
    let (code, headers, _) = raw_http(
        server.addr,
        &upgrade_request(&host, "Origin: https://app.example.com\r\nSec-WebSocket-Protocol: foo, centrifuge-protobuf\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n")
            .to_vec(),
    )
    .await;
    assert_eq!(code, 101);
    let get = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("sec-websocket-accept").as_deref(), Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    assert_eq!(get("sec-websocket-protocol").as_deref(), Some("centrifuge-protobuf"));
    assert!(get("sec-websocket-extensions").unwrap().starts_with("permessage-deflate"));
    let mut c = Client::connect(
        server.addr,
        "/connection/websocket",
        &["centrifuge-protobuf"],
        Some(Default::default()),
    )
    .await;
    assert_eq!(c.protocol.as_deref(), Some("centrifuge-protobuf"));
    c.echo_round_trip(&"compressible ".repeat(100)).await;
    let (code, _, body) = raw_http(server.addr, format!("GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).await;
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    server.stop().await;
}
