//! Helpers for the tests that run real processes: wshub nodes (this package's binary)
//! started from a configuration, the HTTP API, and Debian's nginx running
//! `deploy/nginx.conf`; the generic helpers are `wshub_testkit`'s, re-exported.
//! Every process is our child, ended by its PID.
#![allow(dead_code, unused_imports, clippy::unwrap_used)] // each test file uses a part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
pub use wshub_testkit::{free_port, http, http_head, temp_dir, unique, wait_until, LIMIT};

pub mod watch;

/// The API key of the nodes these helpers start.
pub const API_KEY: &str = "k";

/// Runs a command that must end by itself, bounded by [`LIMIT`]; its output.
pub fn run_to_end(cmd: &mut Command) -> std::process::Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + LIMIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("command did not finish within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

/// The repository's root (for `deploy/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `POST /api/{method}` with [`API_KEY`]: the status and the decoded JSON answer.
pub async fn api(port: u16, method: &str, body: &serde_json::Value) -> Result<(u16, serde_json::Value), String> {
    let (status, text) = http(
        port,
        "POST",
        &format!("/api/{method}"),
        &format!("X-API-Key: {API_KEY}\r\n"),
        &body.to_string(),
    )
    .await?;
    let value = serde_json::from_str(&text).map_err(|e| format!("{status}, not JSON ({e}): {text:?}"))?;
    Ok((status, value))
}

/// Waits until `GET /ready` on `port` answers 200.
pub async fn wait_ready(port: u16, log: &Path) {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Ok((200, _)) = http(port, "GET", "/ready", "", "").await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "wshub on {port} not ready: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `wshub serve` process (the binary this package builds) on a loopback port, with its
/// log in a file beside its configuration.
pub struct Node {
    child: Child,
    pub port: u16,
    config: PathBuf,
    log: PathBuf,
}

impl Node {
    /// Writes `config` to `dir` and starts a node with it on `port`; returns once `/ready`
    /// is 200.
    pub async fn start(dir: &Path, config: &serde_json::Value, port: u16) -> Node {
        let path = dir.join(format!("node-{port}.json"));
        std::fs::write(&path, config.to_string()).unwrap();
        let log = dir.join(format!("node-{port}.log"));
        let child = Self::spawn(&path, &log, port);
        wait_ready(port, &log).await;
        Node {
            child,
            port,
            config: path,
            log,
        }
    }

    fn spawn(config: &Path, log: &Path, port: u16) -> Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        wshub_testkit::serve_command(env!("CARGO_BIN_EXE_wshub"), config, port)
            // The log goes to stdout: kept in the file, for the tests that read it.
            .stdout(log.try_clone().map_or_else(|_| Stdio::null(), Stdio::from))
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Starts the node again, same configuration and port (after [`Node::signal`]); returns
    /// once `/ready` is 200.
    pub async fn restart(&mut self) {
        assert!(self.child.try_wait().unwrap().is_some(), "restart of a running node");
        self.child = Self::spawn(&self.config, &self.log, self.port);
        wait_ready(self.port, &self.log).await;
    }

    /// Sends `sig` ("-TERM", "-KILL") to the node, by its PID, and waits for it to exit.
    pub async fn signal(&mut self, sig: &str) -> ExitStatus {
        wshub_testkit::signal(&mut self.child, sig, &format!("wshub on {}", self.port)).await
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/connection/websocket", self.port)
    }

    /// The process's PID (for a signal whose outcome the test waits for itself).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        wshub_testkit::end(&mut self.child);
    }
}

/// `deploy/nginx.conf` with its upstream's `server` lines pointing at `nodes` (loopback
/// ports) and `listen 80;` at `listen`. Panics when the file no longer has what it replaces,
/// so that the test never runs something other than the shipped file.
pub fn render_nginx_conf(template: &str, listen: u16, nodes: &[u16]) -> String {
    let mut out = String::with_capacity(template.len());
    let (mut in_upstream, mut servers, mut listens) = (false, 0, 0);
    for line in template.lines() {
        let t = line.trim_start();
        let indent = &line[..line.len() - t.len()];
        if t.starts_with("upstream wshub {") {
            in_upstream = true;
        } else if in_upstream && t.starts_with('}') {
            in_upstream = false;
        }
        if in_upstream && t.starts_with("server ") {
            let port = nodes
                .get(servers)
                .unwrap_or_else(|| panic!("deploy/nginx.conf has more than {} upstream servers", nodes.len()));
            let rest = t.split_once(' ').and_then(|(_, r)| r.split_once(' ')).map_or(";", |(_, r)| r);
            out.push_str(&format!("{indent}server 127.0.0.1:{port} {rest}\n"));
            servers += 1;
        } else if t == "listen 80;" {
            out.push_str(&format!("{indent}listen 127.0.0.1:{listen};\n"));
            listens += 1;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert_eq!(servers, nodes.len(), "upstream `server` lines in deploy/nginx.conf");
    assert_eq!(listens, 1, "`listen 80;` in deploy/nginx.conf");
    out
}

/// Debian's nginx (`/usr/sbin/nginx`), or the one on `PATH`. Panics saying how to install it.
pub fn nginx_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("nginx"));
    on_path
        .chain([PathBuf::from("/usr/sbin/nginx")])
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("nginx not found (PATH, /usr/sbin): install Debian's nginx with `apt-get install -y nginx` (scripts/test does when it is missing)")
        })
}

/// nginx running `deploy/nginx.conf` (rendered for loopback ports) in a prefix directory
/// of its own, in the foreground: never a system service, ended by its PID.
pub struct Nginx {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl Nginx {
    /// Starts nginx in front of the nodes on `nodes` and waits until it answers.
    pub async fn start(dir: &Path, nodes: &[u16]) -> Nginx {
        Self::start_edited(dir, nodes, |c| c).await
    }

    /// [`Nginx::start`] with `edit` applied to the rendered `deploy/nginx.conf`.
    pub async fn start_edited(dir: &Path, nodes: &[u16], edit: impl FnOnce(String) -> String) -> Nginx {
        let port = free_port();
        let template = std::fs::read_to_string(repo_root().join("deploy/nginx.conf")).unwrap();
        Self::start_conf(dir, port, &edit(render_nginx_conf(&template, port, nodes))).await
    }

    /// nginx with `conf` as its http-context file (`wshub.conf`), listening on `port` (which
    /// `conf` names).
    pub async fn start_conf(dir: &Path, port: u16, conf: &str) -> Nginx {
        let bin = nginx_binary();
        let dir = dir.join("nginx");
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        std::fs::write(dir.join("wshub.conf"), conf).unwrap();
        // The main context, as Debian's /etc/nginx/nginx.conf is: the shipped file is its
        // http-context include. Every path is inside `dir`.
        let d = dir.display();
        let main = format!(
            "worker_processes 1;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n\
             \x20   access_log {d}/logs/access.log;\n\
             \x20   client_body_temp_path {d}/body;\n\
             \x20   proxy_temp_path {d}/proxy;\n\
             \x20   fastcgi_temp_path {d}/fastcgi;\n\
             \x20   uwsgi_temp_path {d}/uwsgi;\n\
             \x20   scgi_temp_path {d}/scgi;\n\
             \x20   include {d}/wshub.conf;\n\
             }}\n"
        );
        std::fs::write(dir.join("nginx.conf"), main).unwrap();
        let error_log = dir.join("logs/error.log");
        let conf = dir.join("nginx.conf");
        let check = Command::new(&bin)
            .args(["-t", "-p", &d.to_string(), "-e", &error_log.display().to_string(), "-c"])
            .arg(&conf)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "nginx -t refused deploy/nginx.conf: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let child = Command::new(&bin)
            .args(["-p", &d.to_string(), "-e", &error_log.display().to_string(), "-c"])
            .arg(&conf)
            .args(["-g", &format!("daemon off; pid {d}/nginx.pid;")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} did not start: {e}", bin.display()));
        let nginx = Nginx { child, port, dir };
        let deadline = Instant::now() + LIMIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "nginx did not listen on {port}: {}", nginx.error_log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        nginx
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/connection/websocket", self.port)
    }

    /// Replaces the http-context file with `conf` and reloads nginx (SIGHUP to its master,
    /// our child); returns once every worker of the old configuration has exited, so that
    /// each request from then on is served by the new one.
    pub async fn reload(&self, conf: &str) {
        let old = self.workers();
        assert!(!old.is_empty(), "nginx has no worker");
        std::fs::write(self.dir.join("wshub.conf"), conf).unwrap();
        let d = self.dir.display().to_string();
        let check = Command::new(nginx_binary())
            .args([
                "-t",
                "-p",
                &d,
                "-e",
                &format!("{d}/logs/error.log"),
                "-c",
                &format!("{d}/nginx.conf"),
            ])
            .output()
            .unwrap();
        assert!(check.status.success(), "nginx -t: {}", String::from_utf8_lossy(&check.stderr));
        assert!(Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success());
        let deadline = Instant::now() + LIMIT;
        loop {
            let now = self.workers();
            if !now.is_empty() && now.iter().all(|w| !old.contains(w)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nginx workers {old:?} still running after the reload: {}",
                self.error_log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The PIDs of the master's worker processes.
    fn workers(&self) -> Vec<u32> {
        let master = self.child.id();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                    // The parent PID is the second field after the command's closing parenthesis.
                    stat.rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                        == Some(master)
                })
            })
            .collect()
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("logs/error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master then stops its workers (a killed master would
        // leave them running).
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The first event of a Rust SDK client matching `f` within `limit`, if any.
pub async fn event_within(
    events: &mut wshub_client::Events,
    limit: Duration,
    mut f: impl FnMut(&wshub_client::ClientEvent) -> bool,
) -> Option<wshub_client::ClientEvent> {
    tokio::time::timeout(limit, async {
        while let Some(e) = events.recv().await {
            if f(&e) {
                return Some(e);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `test` on a runtime of its own, one test of the test file at a time (each file is
/// a binary of its own, with its own lock): for tests that each start several processes.
pub fn serial(test: impl std::future::Future<Output = ()>) {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(test);
}

/// Waits until the set behind `seen` is `want`, within `limit`; otherwise fails with
/// `why(received)` (what a subscriber got, against what was sent).
pub async fn wait_for_set<T: Ord + Clone>(
    seen: &std::sync::Mutex<std::collections::BTreeSet<T>>,
    want: &std::collections::BTreeSet<T>,
    limit: Duration,
    why: impl Fn(&std::collections::BTreeSet<T>) -> String,
) {
    let deadline = Instant::now() + limit;
    loop {
        let got = seen.lock().unwrap().clone();
        if &got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{}", why(&got));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a [`numbered_subscriber`] received: `(channel, n)` of each publication `{"n": …}`.
pub type Numbers = Arc<std::sync::Mutex<std::collections::BTreeSet<(String, u64)>>>;

/// A client of the node on `port` subscribed to `channels` (recovering them across
/// reconnections when `recoverable`), returned once every subscription stands, with the
/// numbers it receives. Its other events are printed (shown when a test fails).
pub async fn numbered_subscriber(
    port: u16,
    config: wshub_client::ClientConfig,
    channels: &[&str],
    recoverable: bool,
) -> (wshub_client::Client, Numbers) {
    use wshub_client::{Client, ClientEvent};
    let (client, mut events) = Client::start(&format!("ws://127.0.0.1:{port}/connection/websocket"), config).unwrap();
    for c in channels {
        client.subscribe(c, recoverable);
    }
    client.connect();
    for _ in channels {
        let subscribed = event_within(&mut events, LIMIT, |e| matches!(e, ClientEvent::Subscribed { .. })).await;
        assert!(subscribed.is_some(), "the subscriber did not subscribe");
    }
    let seen = Numbers::default();
    let s = seen.clone();
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            match e {
                ClientEvent::Publication { channel, data, .. } => {
                    let n = serde_json::from_slice::<serde_json::Value>(&data)
                        .ok()
                        .and_then(|v| v["n"].as_u64());
                    if let Some(n) = n {
                        s.lock().unwrap().insert((channel, n));
                    }
                }
                other => eprintln!("subscriber: {other:?}"),
            }
        }
    });
    (client, seen)
}

/// A JetStream stream `name` over `subjects`, made through `js`.
pub async fn jetstream_stream(js: &async_nats::jetstream::Context, name: &str, subjects: &str) {
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.into(),
        subjects: vec![subjects.into()],
        ..Default::default()
    })
    .await
    .unwrap();
}

/// Waits until `node` has made the durable consumer `wshub` on stream `name` (it reads new
/// messages only from then on).
pub async fn wait_for_durable(js: &async_nats::jetstream::Context, name: &str, node: &Node) {
    let stream = js.get_stream(name).await.unwrap();
    let deadline = Instant::now() + LIMIT;
    while stream.consumer_info("wshub").await.is_err() {
        assert!(Instant::now() < deadline, "no durable consumer: {}", node.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
