//! Graceful drain of the real binary: 1,000 connected clients, SIGTERM; while the drain goes
//! on the listener answers `/ready` 503, `/health` 200, a new upgrade 503 and a publication
//! 503 (memory engine); every client gets 3001, the closes are spread over the drain window,
//! and the process exits 0 before `shutdown.timeout`.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wshub_websocket::{Config, Connection, Event, MessageKind, Role};

const CLIENTS: usize = 1000;
const LIMIT: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Opens a WebSocket, connects with a token, and returns (stream, connection).
async fn client(port: u16, token: String, i: usize) -> (TcpStream, Connection) {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("127.0.0.{}:0", 2 + i % 200).parse().unwrap()).unwrap();
    let mut s = sock.connect(format!("127.0.0.1:{port}").parse().unwrap()).await.unwrap();
    let req = wshub_websocket::handshake::client_request(&format!("127.0.0.1:{port}"), "/connection/websocket", &[], None, [i as u8; 16]);
    s.write_all(&req.bytes).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let head = loop {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    assert!(buf.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&buf));
    let mut conn = Connection::new(Config {
        role: Role::Client,
        max_message_size: 1 << 20,
        deflate: None,
    });
    conn.handle_read(&buf[head..]);
    conn.send(MessageKind::Text, format!(r#"{{"id":1,"connect":{{"token":"{token}"}}}}"#).into());
    flush(&mut s, &mut conn).await;
    loop {
        if let Some(Event::Message { data, .. }) = conn.poll_event() {
            assert!(String::from_utf8_lossy(&data).contains("\"connect\""));
            return (s, conn);
        }
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before connect reply");
        conn.handle_read(&chunk[..n]);
    }
}

async fn flush(s: &mut TcpStream, conn: &mut Connection) {
    s.write_all(&conn.take_transmit()).await.unwrap();
}

/// Reads until the server's close; answers pings. Returns the close code and when it came.
async fn wait_close(mut s: TcpStream, mut conn: Connection) -> (u16, Instant) {
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(e) = conn.poll_event() {
            match e {
                Event::Closed { code, .. } => {
                    let at = Instant::now();
                    flush(&mut s, &mut conn).await;
                    return (code.0, at);
                }
                Event::Message { data, .. } if &data[..] == b"{}" => {
                    conn.send(MessageKind::Text, "{}".into());
                }
                _ => {}
            }
        }
        flush(&mut s, &mut conn).await;
        let n = s.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            conn.handle_eof();
        } else {
            conn.handle_read(&chunk[..n]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_closes_everyone_with_3001_spread_over_the_window() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let dir = std::env::temp_dir().join(format!("wshub-drain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("config.json");
    let mut f = std::fs::File::create(&cfg).unwrap();
    write!(
        f,
        r#"{{"http_api": {{"key": "drain-key"}}, "client": {{"token": {{"hmac_secret_key": "drain"}}}}, "shutdown": {{"timeout": "8s", "drain_window": "3s"}}}}"#
    )
    .unwrap();
    let port = free_port();
    let mut child = wshub_testkit::serve_command(env!("CARGO_BIN_EXE_wshub"), &cfg, port)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + LIMIT;
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "server did not listen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let token = wshub_testkit::token("drain", &serde_json::json!({"sub": "u"}));
    let mut clients = Vec::with_capacity(CLIENTS);
    for chunk in (0..CLIENTS).collect::<Vec<_>>().chunks(100) {
        let opened: Vec<_> = futures_join(chunk.iter().map(|&i| client(port, token.clone(), i))).await;
        clients.extend(opened);
    }
    let waiters: Vec<_> = clients.into_iter().map(|(s, c)| tokio::spawn(wait_close(s, c))).collect();

    let sent = Instant::now();
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    // While the drain goes on, the listener keeps answering HTTP: /ready turns 503 (polled:
    // the signal is handled asynchronously), /health stays 200, a new WebSocket upgrade is
    // refused with 503, and a publication (memory engine: nobody would receive it) too.
    let ready_deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let (status, body) = http(port, "GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        if status == 503 {
            assert!(body.contains("draining"), "{body}");
            break;
        }
        assert_eq!(status, 200, "{body}");
        assert!(Instant::now() < ready_deadline, "/ready still 200 after SIGTERM");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, body) = http(port, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status, 200, "/health during the drain: {body}");
    let upgrade = format!(
        "GET /connection/websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let (status, body) = http(port, &upgrade).await;
    assert_eq!(status, 503, "upgrade during the drain: {body}");
    let publish = r#"{"channel":"news","data":{"n":1}}"#;
    let (status, body) = http(
        port,
        &format!(
            "POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: drain-key\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{publish}",
            publish.len()
        ),
    )
    .await;
    assert_eq!(status, 503, "publish during the drain: {body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"]["code"],
        108,
        "{body}"
    );
    let during_drain = sent.elapsed();
    let mut times = Vec::with_capacity(CLIENTS);
    for w in waiters {
        let (code, at) = tokio::time::timeout(LIMIT, w).await.unwrap().unwrap();
        assert_eq!(code, 3001);
        times.push(at.duration_since(sent));
    }
    times.sort();
    let (first, last) = (times[0], times[times.len() - 1]);
    let median = times[times.len() / 2];
    println!(
        "drain of {CLIENTS} clients: first close {first:?}, median {median:?}, last {last:?}, spread {:?}",
        last - first
    );
    assert!(
        last > during_drain,
        "the checks above ran during the drain (done after {during_drain:?}, last close {last:?})"
    );
    assert!(
        last - first >= Duration::from_millis(1500),
        "closes spread over the 3 s window, got {:?}",
        last - first
    );
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(sent.elapsed() < Duration::from_secs(8), "exited before shutdown.timeout");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "{exit:?}");
    let _ = std::fs::remove_dir_all(dir);
}

/// One HTTP request on a connection of its own; the status and body of the answer (read up
/// to its `Content-Length`: a refused upgrade leaves the connection open).
async fn http(port: u16, request: &str) -> (u16, String) {
    let mut s = tokio::time::timeout(LIMIT, TcpStream::connect(("127.0.0.1", port)))
        .await
        .unwrap()
        .expect("the listener answers during the drain");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(LIMIT, s.read(&mut chunk)).await.unwrap().unwrap();
        answer.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&answer).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= len {
                let status = head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
                return (status, body.to_string());
            }
        }
        assert!(n > 0, "closed before a whole answer: {text}");
    }
}

async fn futures_join<F>(fs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
