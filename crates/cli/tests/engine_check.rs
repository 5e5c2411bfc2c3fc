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
