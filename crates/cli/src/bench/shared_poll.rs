//! The shared poll scenario (issue 29): N clients each track K keys drawn from a pool of U
//! (overlapping), and a backend in this process answers the node's `shared_poll_refresh`
//! requests. What it shows: the backend's load follows the unique keys U, not the clients
//! N (one request per `refresh_batch_size` keys per `refresh_interval`); what tracking
//! costs the server's memory per key per connection; and how long an update takes from
//! the backend's answer to the clients.
//!
//! The backend is versioned: every key is at the same version, bumped once per refresh
//! interval while the run is measured, and an answer holds the keys asked at an older
//! version, each with the time of the answer in its data; a client's latency is its
//! receive time minus that.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use wshub_core::subscription::shared_poll::signature::sign;

use super::client::Client;
use super::http::take_request;
use super::process::{cpu_seconds, proc_stats};
use super::proto::{next_values, open_clients, request};
use super::server::Server;

const SECRET: &str = "bench-shared-poll";
const CHANNEL: &str = "poll:bench";

#[derive(clap::Args)]
pub struct SharedPollRun {
    /// Clients (N).
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Keys each client tracks (K).
    #[arg(long, default_value_t = 10)]
    pub keys_per_client: usize,
    /// The pool the clients' keys are drawn from (U): client i tracks keys
    /// i·K … i·K+K-1 modulo U, so that every key has about N·K/U trackers.
    #[arg(long, default_value_t = 1000)]
    pub unique_keys: usize,
    /// The namespace's `refresh_interval`, ms (the backend bumps every key this often).
    #[arg(long, default_value_t = 1000)]
    pub refresh_ms: u64,
    /// Seconds measured, after every client has its keys' first data.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Bytes of padding in each key's data.
    #[arg(long, default_value_t = 50)]
    pub size: usize,
    /// The wshub binary to start as the server (default: this one).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Give up after this many seconds in all.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

/// The backend: what it was asked, and the version every key is at.
struct Backend {
    requests: AtomicU64,
    keys: AtomicU64,
    version: AtomicU64,
    /// Latencies are measured against it (one process: one clock).
    base: Instant,
    pad: String,
}

impl Backend {
    /// The answer to one refresh request: the keys asked at an older version.
    fn answer(&self, body: &[u8]) -> String {
        let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let asked = req["items"].as_array().map(Vec::as_slice).unwrap_or_default();
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.keys.fetch_add(asked.len() as u64, Ordering::Relaxed);
        let version = self.version.load(Ordering::Relaxed);
        let t = self.base.elapsed().as_micros() as u64;
        let items: Vec<Value> = asked
            .iter()
            .filter(|i| i["version"].as_u64().unwrap_or(0) < version)
            .map(|i| json!({"key": i["key"], "version": version, "data": {"t": t, "p": self.pad}}))
            .collect();
        json!({"result": {"items": items}}).to_string()
    }
}

/// Serves the backend on a free loopback port until the process ends; its port.
async fn serve_backend(backend: Arc<Backend>) -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let backend = backend.clone();
            tokio::spawn(async move {
                let _ = backend_conn(stream, &backend).await;
            });
        }
    });
    Ok(port)
}

async fn backend_conn(mut stream: TcpStream, backend: &Backend) -> anyhow::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 65536];
    loop {
        while let Some(body) = take_request(&mut buf) {
            let out = backend.answer(&body);
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{out}",
                out.len()
            );
            stream.write_all(resp.as_bytes()).await?;
        }
        match stream.read(&mut chunk).await? {
            0 => return Ok(()),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// What a client tells the run.
enum Step {
    Subscribed,
    /// It has the first data of all its keys.
    Tracked,
}

/// What a client measured: updates received in the window and their latency (µs).
struct Tally {
    updates: u64,
    hist: Histogram<u64>,
}

/// The signals the run gives every client.
#[derive(Clone)]
struct Signals {
    track: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
    measuring: Arc<AtomicBool>,
    base: Instant,
}

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// One client: connect, subscribe, wait for the go, track its keys, then count updates.
async fn run_client(mut c: Client, keys: Vec<String>, steps: mpsc::UnboundedSender<Step>, mut s: Signals) -> anyhow::Result<Tally> {
    request(&mut c, 1, json!({"connect": {}})).await?;
    request(&mut c, 2, json!({"subscribe": {"channel": CHANNEL, "type": 4}})).await?;
    let _ = steps.send(Step::Subscribed);
    // Pings are answered while waiting (reading is what answers them).
    while !*s.track.borrow() {
        tokio::select! {
            m = c.next_message() => { m?; }
            _ = s.track.changed() => {}
        }
    }
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let now = now_unix();
    let sig = sign(SECRET, CHANNEL, "", &refs, now, now + 3600);
    let items: Vec<Value> = keys.iter().map(|k| json!({"key": k})).collect();
    let (_, mut pushes) = request(
        &mut c,
        3,
        json!({"sub_refresh": {"channel": CHANNEL, "type": 1, "track": [{"signature": sig, "items": items}]}}),
    )
    .await?;
    let mut have = std::collections::HashSet::new();
    loop {
        for p in pushes.drain(..) {
            if let Some(k) = p["push"]["pub"]["key"].as_str() {
                have.insert(k.to_string());
            }
        }
        if have.len() >= keys.len() {
            break;
        }
        pushes = next_values(&mut c).await?;
    }
    let _ = steps.send(Step::Tracked);
    let mut tally = Tally {
        updates: 0,
        hist: Histogram::new(3)?,
    };
    loop {
        let values = tokio::select! {
            v = next_values(&mut c) => v?,
            _ = s.stop.changed() => return Ok(tally),
        };
        if !s.measuring.load(Ordering::Relaxed) {
            continue;
        }
        let now = s.base.elapsed().as_micros() as u64;
        for v in values {
            let p = &v["push"]["pub"];
            if p["version"].as_u64().unwrap_or(0) >= 2 {
                tally.updates += 1;
                let _ = tally.hist.record(now.saturating_sub(p["data"]["t"].as_u64().unwrap_or(now)).max(1));
            }
        }
    }
}

/// Waits for `n` steps of `kind` from the clients, within the run's deadline.
async fn wait_steps(rx: &mut mpsc::UnboundedReceiver<Step>, n: usize, tracked: bool, deadline: Instant) -> anyhow::Result<()> {
    let mut seen = 0;
    while seen < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(Step::Tracked)) if tracked => seen += 1,
            Ok(Some(Step::Subscribed)) if !tracked => seen += 1,
            Ok(Some(_)) => {}
            Ok(None) => bail!("every client ended ({seen} of {n} there)"),
            Err(_) => bail!("timed out with {seen} of {n} clients there"),
        }
    }
    Ok(())
}

pub(super) async fn shared_poll(run: SharedPollRun) -> anyhow::Result<()> {
    let (n, k, u) = (run.clients, run.keys_per_client, run.unique_keys);
    if n == 0 || k == 0 || k > u {
        bail!("need clients > 0 and 0 < keys-per-client <= unique-keys");
    }
    let deadline = Instant::now() + Duration::from_secs(run.timeout);
    let base = Instant::now();
    let backend = Arc::new(Backend {
        requests: AtomicU64::new(0),
        keys: AtomicU64::new(0),
        version: AtomicU64::new(1),
        base,
        pad: "x".repeat(run.size),
    });
    let backend_port = serve_backend(backend.clone()).await?;
    let config = json!({
        "client": {"allow_anonymous_connect_without_token": true},
        "shared_poll": {"hmac_secret_key": SECRET},
        "proxies": [{"name": "backend", "endpoint": format!("http://127.0.0.1:{backend_port}/refresh"), "timeout": "5s"}],
        "channel": {"namespaces": [{
            "name": "poll",
            "subscription_type": "shared_poll",
            "allow_subscribe_for_anonymous": true,
            "allow_subscribe_for_client": true,
            "shared_poll": {
                "proxy_name": "backend",
                "mode": "versioned",
                "refresh_interval": format!("{}ms", run.refresh_ms),
                "max_keys_per_connection": k.max(5000)
            }
        }]}
    });
    let server = Server::start(run.server_bin.as_ref(), "shared-poll", &config).await?;
    let pid = server.pid();
    let clients = open_clients(&server.ws_url(), n, deadline).await?;
    let (track_tx, track_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    let signals = Signals {
        track: track_rx,
        stop: stop_rx,
        measuring: Arc::new(AtomicBool::new(false)),
        base,
    };
    let (steps_tx, mut steps) = mpsc::unbounded_channel();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, c) in clients.into_iter().enumerate() {
        let keys = (0..k).map(|j| format!("k{}", (i * k + j) % u)).collect();
        tasks.spawn(run_client(c, keys, steps_tx.clone(), signals.clone()));
    }
    drop(steps_tx);
    let failed = |e: anyhow::Error| e.context(format!("server log: {}", server.log_tail()));
    let (mut rss_before, mut tracking) = (0, Instant::now());
    for tracked in [false, true] {
        if tracked {
            rss_before = proc_stats(pid).map_or(0, |s| s.0);
            tracking = Instant::now();
            let _ = track_tx.send(true);
        }
        if let Err(e) = wait_steps(&mut steps, n, tracked, deadline).await {
            // A client's own error says more than the count.
            tasks.abort_all();
            while let Some(r) = tasks.join_next().await {
                if let Ok(Err(client)) = r {
                    return Err(failed(client.context(e)));
                }
            }
            return Err(failed(e));
        }
    }
    let tracked_in = tracking.elapsed().as_secs_f64();
    let rss_after = proc_stats(pid).map_or(0, |s| s.0);
    let (req0, keys0) = (backend.requests.load(Ordering::Relaxed), backend.keys.load(Ordering::Relaxed));

    // The measured window: every key bumped once per refresh interval.
    signals.measuring.store(true, Ordering::Relaxed);
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let window = Duration::from_secs(run.duration);
    let mut bump = tokio::time::interval(Duration::from_millis(run.refresh_ms.max(1)));
    bump.tick().await;
    while started.elapsed() < window {
        bump.tick().await; // the bumps are the scenario
        backend.version.fetch_add(1, Ordering::Relaxed);
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = match (cpu_before, cpu_seconds(pid)) {
        (Some(a), Some(b)) => (b - a) / wall,
        _ => 0.0,
    };
    let requests = backend.requests.load(Ordering::Relaxed) - req0;
    let keys_asked = backend.keys.load(Ordering::Relaxed) - keys0;
    // Updates still on their way when the window ends are left out.
    signals.measuring.store(false, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let mut all = Histogram::<u64>::new(3)?;
    let mut updates = 0u64;
    while let Some(r) = tasks.join_next().await {
        let t = r.context("a client task failed")?.map_err(failed)?;
        updates += t.updates;
        all.add(&t.hist)?;
    }
    let ms = |v: u64| v as f64 / 1000.0;
    let (p50, p99, max) = (ms(all.value_at_quantile(0.5)), ms(all.value_at_quantile(0.99)), ms(all.max()));
    let tracked = (n * k) as f64;
    let per_key = (rss_after as f64 - rss_before as f64) / tracked;
    let (req_s, keys_s, upd_s) = (requests as f64 / wall, keys_asked as f64 / wall, updates as f64 / wall);
    println!(
        "shared-poll: N {n} clients x K {k} keys of U {u}, refresh {} ms, {wall:.1} s: backend {req_s:.2} requests/s, {keys_s:.0} keys/s ({:.2} x U per interval); \
         {req0} requests / {keys0} keys while tracking ({tracked_in:.1} s); RSS {:.1} -> {:.1} MiB, {per_key:.0} B per tracked key per connection; \
         {upd_s:.0} updates/s delivered, latency ms p50 {p50:.2} p99 {p99:.2} max {max:.2}; server CPU {cpu:.2} cores",
        run.refresh_ms,
        keys_s * run.refresh_ms as f64 / 1000.0 / u as f64,
        rss_before as f64 / 1048576.0,
        rss_after as f64 / 1048576.0,
    );
    println!(
        "{{\"scenario\":\"shared_poll\",\"clients\":{n},\"keys_per_client\":{k},\"unique_keys\":{u},\"refresh_ms\":{},\"seconds\":{wall:.2},\"backend_requests\":{requests},\"backend_keys\":{keys_asked},\"backend_requests_per_sec\":{req_s:.3},\"backend_keys_per_sec\":{keys_s:.1},\"tracking_requests\":{req0},\"tracking_keys\":{keys0},\"tracking_s\":{tracked_in:.2},\"rss_before\":{rss_before},\"rss_after\":{rss_after},\"bytes_per_tracked_key\":{per_key:.1},\"updates\":{updates},\"updates_per_sec\":{upd_s:.1},\"p50_ms\":{p50:.3},\"p99_ms\":{p99:.3},\"max_ms\":{max:.3},\"server_cores\":{cpu:.3}}}",
        run.refresh_ms
    );
    Ok(())
}
