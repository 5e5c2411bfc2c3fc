//! Helpers shared by wshub's tests (one copy instead of one per test crate): free ports,
//! fresh directories, bounded waits, one-shot HTTP calls, HS256 tokens, `wshub serve`
//! processes ended by their PID, a minimal WebSocket client ([`ws`]), Redis setups
//! ([`redis`]), `nats-server` ([`nats`]), PostgreSQL clusters ([`postgres`]) and a numbered
//! publisher ([`publisher`]).
//!
//! A dev-dependency only: every helper panics on what a test does not expect.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub mod nats;
pub mod postgres;
pub mod publisher;
pub mod redis;
pub mod ws;

/// The longest any single wait on a process may take.
pub const LIMIT: Duration = Duration::from_secs(30);

/// Nanoseconds since the Unix epoch: a value no two calls in a run share in practice.
pub fn unique() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A fresh directory for one test's files.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wshub-{name}-{}-{}", std::process::id(), unique()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A directory of a test's own ([`temp_dir`]), removed when dropped; kept when the test
/// fails, for the logs in it. Declared before the processes that write there, it outlives them.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        TempDir(temp_dir(name))
    }
}

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A free port below the ephemeral range (32768+), so that no client socket takes it while
/// a node restarts on it.
pub fn free_port() -> u16 {
    // Never the same port twice in one process: two tests running at once could otherwise
    // both be handed a port neither has bound yet, and one would talk to the other's server.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    for _ in 0..1000 {
        let p = 20_000 + (unique() % 10_000) as u16;
        let mut given = GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !given.contains(&p) && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            given.push(p);
            return p;
        }
    }
    panic!("no free port in 20000..30000");
}

/// Polls `check` every 20 ms until it is true; panics naming `what` after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An HS256 connection or subscription token for `claims`, signed with `secret`.
pub fn token(secret: &str, claims: &serde_json::Value) -> String {
    wshub_core::token::make_hs256(secret, claims).unwrap()
}

/// One HTTP/1.1 request on a connection of its own (`Connection: close`): the status and
/// body, or why there is none. Bounded by [`LIMIT`].
pub async fn http(port: u16, method: &str, path: &str, headers: &str, body: &str) -> Result<(u16, String), String> {
    http_head(port, method, path, headers, body)
        .await
        .map(|(status, _, body)| (status, body))
}

/// One HTTP/1.1 request like [`http`], answering the status, the response head (status line
/// and headers) and the body.
pub async fn http_head(port: u16, method: &str, path: &str, headers: &str, body: &str) -> Result<(u16, String, String), String> {
    let call = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("no whole answer: {text:?}"))?;
        let status = head
            .get(9..12)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("no status: {head:?}"))?;
        Ok((status, head.to_string(), body.to_string()))
    };
    tokio::time::timeout(LIMIT, call).await.unwrap_or_else(|_| Err("timed out".into()))
}

/// Takes the first whole HTTP/1.1 request (its body framed by `Content-Length`) off the
/// front of `buf`, answering its head in lower case; `None` while it is not all there. For
/// the fake backends that read pipelined requests on a kept-alive connection.
pub fn take_request(buf: &mut Vec<u8>) -> Option<String> {
    take_request_with_body(buf).map(|(head, _)| head)
}

/// As [`take_request`], with the request's body.
pub fn take_request_with_body(buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    if buf.len() < end + 4 + len {
        return None;
    }
    let body = buf[end + 4..end + 4 + len].to_vec();
    buf.drain(..end + 4 + len);
    Some((head, body))
}

/// `wshub serve -c config --port port --address 127.0.0.1` of the binary at `bin` (a
/// package's `env!("CARGO_BIN_EXE_wshub")`, or a release build), for the caller to give
/// its standard streams and spawn.
pub fn serve_command(bin: impl AsRef<Path>, config: &Path, port: u16) -> Command {
    let mut c = Command::new(bin.as_ref());
    c.args([
        "serve",
        "-c",
        config.to_str().unwrap(),
        "--port",
        &port.to_string(),
        "--address",
        "127.0.0.1",
    ]);
    c
}

/// Sends `sig` ("-TERM", "-KILL") to our child `child`, by its PID, and waits up to
/// [`LIMIT`] for it to exit; panics naming `what` when it does not.
pub async fn signal(child: &mut Child, sig: &str, what: &str) -> ExitStatus {
    assert!(Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "{what} did not exit after {sig}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Kills our child `child` if it still runs and reaps it (for `Drop`).
pub fn end(child: &mut Child) {
    if child.try_wait().ok().flatten().is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}
