//! `nats-server` for tests: on a free loopback port, JetStream on when asked (its store in
//! a fresh folder), ended by its PID when dropped. A missing program fails the test naming
//! its Debian package.
#![allow(clippy::panic)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct NatsServer {
    child: Child,
    pub port: u16,
    /// The JetStream store, when on.
    pub store: Option<PathBuf>,
}

impl NatsServer {
    /// Core NATS only (the broker's needs).
    pub async fn start() -> NatsServer {
        Self::start_with(false, &[]).await
    }

    /// With JetStream on (the consumers').
    pub async fn start_jetstream() -> NatsServer {
        Self::start_with(true, &[]).await
    }

    /// With more `nats-server` arguments (`--tls`…).
    pub async fn start_with(jetstream: bool, extra: &[&str]) -> NatsServer {
        for _ in 0..5 {
            let port = crate::redis::free_port();
            let store = jetstream.then(|| crate::temp_dir("nats-js"));
            let mut cmd = Command::new(binary());
            cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
            if let Some(dir) = &store {
                cmd.args(["-js", "-sd", dir.to_str().unwrap_or("/tmp")]);
            }
            let mut child = cmd
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("nats-server could not start ({e}): install it with `apt-get install nats-server`"));
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                    return NatsServer { child, port, store };
                }
                // Ended before it listened: its port was taken meanwhile; another one.
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                if Instant::now() >= deadline {
                    crate::end(&mut child);
                    panic!("nats-server did not listen on {port} within 20 s");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        panic!("nats-server ended before listening five times (ports taken?)");
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's process id (for a test that stops it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// `nats-server` on `PATH`, or Debian's `/usr/sbin/nats-server`.
fn binary() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/nats-server");
    match sbin.exists() {
        true => sbin,
        false => PathBuf::from("nats-server"),
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        crate::end(&mut self.child);
        if let Some(dir) = &self.store {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
