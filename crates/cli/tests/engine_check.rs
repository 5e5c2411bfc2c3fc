//! A Redis engine whose Redis does not answer fails at start, naming the setting, instead of
//! serving and failing every publication later.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn unreachable_redis_fails_at_start() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = std::env::temp_dir().join(format!("wshub-engine-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("config.json");
    std::fs::write(
        &cfg,
        format!(r#"{{"engine": {{"type": "redis", "redis": {{"address": "redis://127.0.0.1:{port}"}}}}}}"#),
    )
    .unwrap();
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_wshub"))
        .args(["serve", "-c", cfg.to_str().unwrap(), "--port", "0", "--address", "127.0.0.1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started without Redis: {stderr}");
    assert!(stderr.contains("engine.redis"), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening"),
        "announced a server that is not there"
    );
}

fn get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split(' ').nth(1)?.parse().ok()?;
    Some((status, out.split("\r\n\r\n").nth(1).unwrap_or("").trim().to_string()))
}

/// Polls `path` until `want` (status, body), within 30 s.
fn until(port: u16, path: &str, want: (u16, &str)) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = get(port, path);
        if got.as_ref().is_some_and(|(s, b)| *s == want.0 && b == want.1) {
            return;
        }
        assert!(Instant::now() < deadline, "{path}: wanted {want:?}, last {got:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_redis() {
    let mut redis = wshub_testkit::redis::RedisServer::start().await;
    let redis_port = redis.port;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(env!("CARGO_BIN_EXE_wshub"))
        .args(["serve", "--port", &port.to_string(), "--address", "127.0.0.1"])
        .args([
            "--set",
            "engine.type=redis",
            "--set",
            &format!("engine.redis.address=redis://127.0.0.1:{redis_port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = Killed(child);
    let check = tokio::task::spawn_blocking(move || {
        until(port, "/ready", (200, "ready"));
        port
    });
    let port = check.await.unwrap();
    redis.stop();
    tokio::task::spawn_blocking(move || {
        until(port, "/ready", (503, "engine unavailable"));
        assert_eq!(get(port, "/health").map(|r| r.0), Some(200), "alive while not ready");
    })
    .await
    .unwrap();
    let _redis = wshub_testkit::redis::RedisServer::start_on(redis_port).await;
    tokio::task::spawn_blocking(move || until(port, "/ready", (200, "ready")))
        .await
        .unwrap();
}

/// Ends our own child (by its handle) however the test ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
