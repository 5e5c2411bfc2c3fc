//! Redis for tests, one way for every crate: `redis-server` (plain, TLS, Unix socket), a
//! replica, `redis-sentinel` groups, a Redis Cluster made by `redis-cli --cluster create`,
//! and a proxy that freezes pub/sub connections; each on free loopback ports and ended by its
//! PID when dropped. A missing program fails the test naming its Debian package.
#![allow(clippy::panic)]

/// A port the OS says is free now (as Redis's tests always took them: the cluster bus of a
/// node listens 10000 above its port, which [`crate::free_port`]'s range would put among
/// the client sockets).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Child,
    pub port: u16,
}

impl RedisServer {
    /// Starts `redis-server` on `port` (no persistence) and waits until it accepts
    /// connections. Panics with how to install it when it is missing.
    pub async fn start_on(port: u16) -> RedisServer {
        Self::start_with(port, &[]).await
    }

    /// With more `redis-server` arguments (`--replicaof`, `--cluster-enabled`...).
    pub async fn start_with(port: u16, extra: &[&str]) -> RedisServer {
        Self::try_start_with(port, extra)
            .await
            .unwrap_or_else(|why| panic!("redis-server did not listen on {port}: {why}"))
    }

    /// [`RedisServer::start_with`], or why not: a `redis-server` that ends before it listens
    /// (its port, or a Cluster node's bus port 10000 above it, was taken after
    /// [`free_port`] found it free) is an error with the end of its log, so that the caller
    /// can try another port.
    pub async fn try_start_with(port: u16, extra: &[&str]) -> Result<RedisServer, String> {
        let log = std::env::temp_dir().join(format!("wshub-test-redis-{port}.log"));
        let _ = std::fs::remove_file(&log);
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                // A replica writes what it receives from its master to disk whatever
                // `--save` says: into the temporary folder, one file per port.
                "--dir",
                std::env::temp_dir().to_str().unwrap_or("/tmp"),
                "--dbfilename",
                &format!("wshub-test-{port}.rdb"),
                "--logfile",
                log.to_str().unwrap_or(""),
            ])
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server could not start ({e}): install it with `apt-get install redis-server`"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            let ended = child.try_wait().ok().flatten();
            if ended.is_some() || Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(3).collect();
                return Err(format!("{ended:?}; its log ends: {}", tail.join(" | ")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(RedisServer { child, port })
    }

    /// With TLS only (no plain port), on a free port: `cert`/`key` the server's, `ca` the
    /// CA that client certificates must be signed by when `auth_clients` (paths).
    pub async fn start_tls(cert: &std::path::Path, key: &std::path::Path, ca: &std::path::Path, auth_clients: bool) -> RedisServer {
        let port = free_port();
        let mut s = Self::start_with(
            port,
            &[
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--tls-cert-file",
                cert.to_str().unwrap(),
                "--tls-key-file",
                key.to_str().unwrap(),
                "--tls-ca-cert-file",
                ca.to_str().unwrap(),
                "--tls-auth-clients",
                if auth_clients { "yes" } else { "no" },
            ],
        )
        .await;
        s.port = port;
        s
    }

    /// Listening on a Unix socket (and a free port): the socket's path.
    pub async fn start_unix() -> (RedisServer, std::path::PathBuf) {
        let port = free_port();
        let socket = std::env::temp_dir().join(format!("wshub-redis-{}-{port}.sock", std::process::id()));
        let s = Self::start_with(port, &["--unixsocket", socket.to_str().unwrap(), "--unixsocketperm", "700"]).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "redis-server made no socket at {}", socket.display());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (s, socket)
    }

    /// On a port the OS says is free.
    pub async fn start() -> RedisServer {
        Self::start_on(free_port()).await
    }

    /// Sends `SIGKILL` to it (no shutdown, no last replication) and waits for it.
    pub fn kill(&mut self) {
        self.stop();
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Ends the server (our own child, by its handle) and waits for it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(std::env::temp_dir().join(format!("wshub-test-{}.rdb", self.port)));
    }
}

/// One reply of `redis-cli -p port args...` (for tests: `INFO`, `SENTINEL`, `CLUSTER`).
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("redis-cli could not start ({e}): install it with `apt-get install redis-tools`"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `redis-sentinel` watching the master named `name` at `127.0.0.1:master`, with a quorum
/// of 2 and a master considered down after 1 s. Ended by its PID when dropped.
pub struct Sentinel {
    child: Child,
    pub port: u16,
    dir: std::path::PathBuf,
}

impl Sentinel {
    /// Panics with how to install it when `redis-sentinel` is missing.
    pub async fn start(name: &str, master: u16) -> Sentinel {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("wshub-sentinel-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("sentinel.conf");
        // Sentinel rewrites its configuration file: each has its own.
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor {name} 127.0.0.1 {master} 2\n\
                 sentinel down-after-milliseconds {name} 1000\nsentinel failover-timeout {name} 3000\n\
                 sentinel parallel-syncs {name} 1\n",
                dir.display()
            ),
        )
        .unwrap();
        let child = Command::new("redis-sentinel")
            .arg(&conf)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("redis-sentinel could not start ({e}): install Debian's package with `apt-get install redis-sentinel`")
            });
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "redis-sentinel did not listen on {port}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Sentinel { child, port, dir }
    }

    /// The port of the master it names now.
    pub fn master_port(&self, name: &str) -> Option<u16> {
        let out = cli(self.port, &["SENTINEL", "get-master-addr-by-name", name]);
        out.lines().nth(1)?.trim().parse().ok()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Sentinel group: a master, optionally a replica in sync with it, and `sentinels`
/// sentinels that know the replica and each other (so that a failover can happen).
pub struct SentinelGroup {
    pub name: String,
    pub master: RedisServer,
    pub replica: Option<RedisServer>,
    pub sentinels: Vec<Sentinel>,
}

impl SentinelGroup {
    pub async fn start(name: &str, sentinels: usize, replica: bool) -> SentinelGroup {
        let master = RedisServer::start().await;
        let replica = match replica {
            true => {
                let port = master.port.to_string();
                let r = RedisServer::start_with(free_port(), &["--replicaof", "127.0.0.1", &port]).await;
                wait("the replica to sync", || {
                    cli(r.port, &["INFO", "replication"]).contains("master_link_status:up")
                })
                .await;
                Some(r)
            }
            false => None,
        };
        let mut started = Vec::new();
        for _ in 0..sentinels {
            started.push(Sentinel::start(name, master.port).await);
        }
        let (replicas, others) = (usize::from(replica.is_some()).to_string(), (sentinels - 1).to_string());
        wait("the sentinels to know the replica and each other", || {
            started.iter().all(|s| {
                let m = cli(s.port, &["SENTINEL", "master", name]);
                field(&m, "num-slaves").as_deref() == Some(replicas.as_str())
                    && field(&m, "num-other-sentinels").as_deref() == Some(others.as_str())
            })
        })
        .await;
        SentinelGroup {
            name: name.to_string(),
            master,
            replica,
            sentinels: started,
        }
    }

    /// The sentinels as one `sentinel_address` item: `host:port` with a comma between each.
    pub fn address_item(&self) -> String {
        let a: Vec<String> = self.sentinels.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect();
        a.join(",")
    }
}

/// The value after `key` in a flat `redis-cli` reply (`SENTINEL master`).
pub fn field(reply: &str, key: &str) -> Option<String> {
    let mut lines = reply.lines();
    lines.find(|l| l.trim() == key)?;
    lines.next().map(|v| v.trim().to_string())
}

/// Polls `done` until true, at most 30 s (the sentinels gossip every second or two).
async fn wait(what: &str, done: impl FnMut() -> bool) {
    crate::wait_until(what, crate::LIMIT, done).await;
}

/// A Redis Cluster of three masters (no replicas) on free ports, made by
/// `redis-cli --cluster create`; ready (every slot served) when returned.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    dir: std::path::PathBuf,
}

impl RedisCluster {
    pub async fn start() -> RedisCluster {
        let dir = std::env::temp_dir().join(format!("wshub-cluster-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut nodes = Vec::new();
        for _ in 0..3 {
            // A node listens on its port and on its bus port 10000 above: either may be
            // taken by the time it starts (a client socket of another test), so a node that
            // cannot listen is tried again on another port.
            let mut tries = 0;
            let node = loop {
                tries += 1;
                let port = std::iter::repeat_with(free_port).find(|p| *p <= u16::MAX - 10_000).unwrap_or(0);
                let conf = dir.join(format!("nodes-{port}.conf"));
                let args = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    conf.to_str().unwrap(),
                    "--dir",
                    dir.to_str().unwrap(),
                ];
                match RedisServer::try_start_with(port, &args).await {
                    Ok(node) => break node,
                    Err(why) if tries < 5 => eprintln!("cluster node on {port} did not start ({why}); another port"),
                    Err(why) => panic!("no cluster node started in 5 tries; the last on {port}: {why}"),
                }
            };
            nodes.push(node);
        }
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| panic!("redis-cli could not start ({e}): install it with `apt-get install redis-tools`"));
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while !nodes.iter().all(|n| cli(n.port, &["CLUSTER", "INFO"]).contains("cluster_state:ok")) {
            assert!(Instant::now() < deadline, "the cluster never became ok");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        RedisCluster { nodes, dir }
    }

    /// Every master as one `cluster_address` item: `host:port` with a comma between each.
    pub fn seeds(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The seed addresses (`redis://127.0.0.1:port` of each master).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url()).collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP proxy in front of a Redis whose pub/sub connections the test can freeze: a
/// connection that has sent a `SUBSCRIBE` is a pub/sub one, and while frozen nothing Redis
/// sends on it is forwarded (held, as a wedged connection would), while command
/// connections pass. Redis itself cannot do this: `CLIENT PAUSE` stops commands (`PUBLISH`
/// included) and never stops delivery on a connection already subscribed.
pub struct PubSubProxy {
    pub port: u16,
    frozen: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl PubSubProxy {
    /// Listens on a free loopback port and forwards to `127.0.0.1:upstream`.
    pub async fn start(upstream: u16) -> PubSubProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (frozen, watch) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            // Dropped with the accept loop: every connection's task ends with the proxy.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((down, _)) = listener.accept().await else { continue };
                let watch = watch.clone();
                conns.spawn(async move {
                    if let Ok(up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await {
                        proxy_one(down, up, watch).await;
                    }
                });
                while conns.try_join_next().is_some() {}
            }
        });
        PubSubProxy { port, frozen, task }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// From now on, nothing reaches the subscribers' side of any pub/sub connection.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }
}

impl Drop for PubSubProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether `bytes` carry a (S|P)SUBSCRIBE command: its name as a RESP bulk string, not the
/// word anywhere (a PUBLISH whose payload mentions "subscribe", as node announcements with
/// their metrics do, is a command connection's).
fn is_subscribe_command(bytes: &[u8]) -> bool {
    const NAMES: [&[u8]; 3] = [b"$9\r\nsubscribe\r\n", b"$10\r\nssubscribe\r\n", b"$10\r\npsubscribe\r\n"];
    NAMES
        .iter()
        .any(|name| bytes.windows(name.len()).any(|w| w.eq_ignore_ascii_case(name)))
}

async fn proxy_one(down: tokio::net::TcpStream, up: tokio::net::TcpStream, mut frozen: tokio::sync::watch::Receiver<bool>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let is_pubsub = std::sync::Arc::new(AtomicBool::new(false));
    let (mut down_r, mut down_w) = down.into_split();
    let (mut up_r, mut up_w) = up.into_split();
    let seen = is_pubsub.clone();
    let to_redis = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match down_r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if is_subscribe_command(&buf[..n]) {
                seen.store(true, Ordering::SeqCst);
            }
            if up_w.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    let from_redis = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match up_r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if is_pubsub.load(Ordering::SeqCst) && frozen.wait_for(|f| !*f).await.is_err() {
                break;
            }
            if down_w.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    // Either side closing ends both (the node dropped its wedged connection, or Redis left).
    tokio::select! {
        _ = to_redis => {}
        _ = from_redis => {}
    }
}

/// fakeredis (PyPI), a Redis-protocol server written in Python, run with its
/// `TcpFakeServer` by the repository's `.venv` (`scripts/test` installs it from
/// `tests/sdk/requirements.txt`; `WSHUB_TEST_PYTHON` names another interpreter). Another
/// Redis-compatible implementation for the engine conformance suite: Debian 12 has no
/// Valkey or KeyDB. Ended by its PID when dropped.
pub struct FakeRedis {
    child: Child,
    pub port: u16,
}

/// The script fakeredis runs: its TCP server on the port given, Redis 7 semantics.
const FAKEREDIS_SERVER: &str = "import sys\nfrom fakeredis import TcpFakeServer\nTcpFakeServer(('127.0.0.1', int(sys.argv[1])), server_type='redis').serve_forever()\n";

impl FakeRedis {
    /// Starts it on a free port and waits until it answers `PING`.
    pub async fn start() -> FakeRedis {
        let python = std::env::var("WSHUB_TEST_PYTHON")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv/bin/python").to_string());
        let port = free_port();
        let log = std::env::temp_dir().join(format!("wshub-test-fakeredis-{port}.log"));
        let mut child = Command::new(&python)
            .args(["-c", FAKEREDIS_SERVER, &port.to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display())))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{python} could not start ({e}): run scripts/test, or `python3 -m venv .venv && .venv/bin/pip install -r tests/sdk/requirements.txt` (fakeredis)")
            });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 16];
                if s.write_all(b"*1\r\n$4\r\nPING\r\n").await.is_ok()
                    && matches!(s.read(&mut buf).await, Ok(n) if buf[..n].starts_with(b"+PONG"))
                {
                    return FakeRedis { child, port };
                }
            }
            if let Some(status) = child.try_wait().ok().flatten() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                panic!(
                    "fakeredis ended ({status}) before it listened: {}; install it with `.venv/bin/pip install -r tests/sdk/requirements.txt`",
                    text.lines().last().unwrap_or("")
                );
            }
            assert!(Instant::now() < deadline, "fakeredis did not answer PING on {port} within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for FakeRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
