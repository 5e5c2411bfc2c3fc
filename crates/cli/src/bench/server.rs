//! A wshub server started by the bench itself, for the scenarios whose server configuration
//! depends on the run (a backend port the bench opens, a namespace of the kind measured):
//! a child process on a free loopback port with its configuration and log in a temporary
//! directory, ended (by its own handle) when the run is over.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a fresh server may take to answer `/ready` 200.
const READY_WITHIN: Duration = Duration::from_secs(30);

pub(super) struct Server {
    child: Child,
    pub(super) port: u16,
    dir: PathBuf,
}

impl Server {
    /// Starts `bin` (this executable when `None`) with `config`; returns once `/ready` is 200.
    pub(super) async fn start(bin: Option<&PathBuf>, name: &str, config: &serde_json::Value) -> anyhow::Result<Server> {
        let bin = match bin {
            Some(b) => b.clone(),
            None => std::env::current_exe().context("the bench's own executable")?,
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = std::env::temp_dir().join(format!("wshub-bench-{name}-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let cfg = dir.join("config.json");
        std::fs::write(&cfg, config.to_string())?;
        let log = std::fs::File::create(dir.join("server.log"))?;
        let child = Command::new(&bin)
            .args(["serve", "-c"])
            .arg(&cfg)
            .args(["--port", &port.to_string(), "--address", "127.0.0.1"])
            .stdout(log.try_clone().map_or_else(|_| Stdio::null(), Stdio::from))
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut server = Server { child, port, dir };
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if get_status(port, "/ready").await == Some(200) {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                bail!("the server ended ({status}) before it was ready: {}", server.log_tail());
            }
            if Instant::now() > deadline {
                bail!("the server was not ready within {READY_WITHIN:?}: {}", server.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(super) fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/connection/websocket", self.port)
    }

    /// The last lines of its log (for errors).
    pub(super) fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The status of `GET path` on a loopback port (`None`: no answer).
async fn get_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await.ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}
