//! The publish scenario: N concurrent API publishers, each on its own kept-alive HTTP
//! connection and waiting for each answer before the next request (as a backend's worker
//! does), spread over many channels. What it measures is the engine's publish path: the
//! API's answers per second and their latency, not the fan-out (nobody need be
//! subscribed). History or not is the server's namespace configuration: `--channel` is
//! the channels' prefix (`ns:bench` for a namespace `ns` with history).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::http::http_answer;
use super::process::cpu_seconds;

#[derive(clap::Args)]
pub struct PublishRun {
    /// http://127.0.0.1:PORT of the API.
    #[arg(long)]
    pub api: String,
    #[arg(long, default_value = "")]
    pub api_key: String,
    /// The channels' prefix (`ns:bench` for namespace `ns`).
    #[arg(long, default_value = "bench")]
    pub channel: String,
    #[arg(long, default_value_t = 1000)]
    pub channels: usize,
    #[arg(long, default_value_t = 16)]
    pub publishers: usize,
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Publication size in bytes.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Server process to read CPU time from (/proc/PID).
    #[arg(long)]
    pub pid: Option<u32>,
}

/// What one publisher did: answers, refusals and the latency of each answer (µs).
struct Tally {
    ok: u64,
    refused: u64,
    hist: Histogram<u64>,
}

pub(super) async fn publish(run: PublishRun) -> anyhow::Result<()> {
    let hostport = run
        .api
        .strip_prefix("http://")
        .context("--api http://127.0.0.1:PORT required")?
        .trim_end_matches('/')
        .to_string();
    let addr: SocketAddr = hostport.parse().context("--api: expected http://IP:PORT")?;
    if !addr.ip().is_loopback() {
        bail!("bench targets loopback only");
    }
    let pad = "x".repeat(run.size.saturating_sub(30));
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(run.publishers);
    for _ in 0..run.publishers {
        let mut stream = TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        let (stop, next, pad, hostport, key, prefix) = (
            stop.clone(),
            next.clone(),
            pad.clone(),
            hostport.clone(),
            run.api_key.clone(),
            run.channel.clone(),
        );
        let channels = run.channels.max(1) as u64;
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally {
                ok: 0,
                refused: 0,
                hist: Histogram::new(3)?,
            };
            let mut buf = Vec::with_capacity(4096);
            let mut chunk = vec![0u8; 4096];
            while !stop.load(Ordering::Relaxed) {
                let s = next.fetch_add(1, Ordering::Relaxed);
                let body = format!(r#"{{"channel":"{prefix}{}","data":{{"s":{s},"p":"{pad}"}}}}"#, s % channels);
                let req = format!(
                    "POST /api/publish HTTP/1.1\r\nHost: {hostport}\r\nX-API-Key: {key}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let sent = Instant::now();
                stream.write_all(req.as_bytes()).await?;
                let ok = loop {
                    if let Some((len, ok)) = http_answer(&buf) {
                        buf.drain(..len);
                        break ok;
                    }
                    match stream.read(&mut chunk).await? {
                        0 => bail!("the API closed the connection"),
                        n => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let _ = tally.hist.record(sent.elapsed().as_micros().max(1) as u64);
                match ok {
                    true => tally.ok += 1,
                    false => tally.refused += 1,
                }
            }
            Ok::<_, anyhow::Error>(tally)
        }));
    }
    let cpu_before = run.pid.and_then(cpu_seconds);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(run.duration)).await; // the run's length is the scenario
    stop.store(true, Ordering::Relaxed);
    let mut all = Histogram::<u64>::new(3)?;
    let (mut ok, mut refused) = (0u64, 0u64);
    for t in tasks {
        let t = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .context("a publisher did not finish")???;
        ok += t.ok;
        refused += t.refused;
        all.add(&t.hist)?;
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = match (cpu_before, run.pid.and_then(cpu_seconds)) {
        (Some(a), Some(b)) => (b - a) / wall,
        _ => 0.0,
    };
    let ms = |v: u64| v as f64 / 1000.0;
    let (p50, p99, max) = (ms(all.value_at_quantile(0.5)), ms(all.value_at_quantile(0.99)), ms(all.max()));
    let rate = ok as f64 / wall;
    println!(
        "publish: {} publishers over {} channels ({}*), {} B: {ok} published, {refused} refused in {wall:.1}s: {rate:.0}/s; latency ms p50 {p50:.2} p99 {p99:.2} max {max:.2}; server CPU {cpu:.2} cores",
        run.publishers, run.channels, run.channel, run.size
    );
    println!(
        "{{\"scenario\":\"publish\",\"publishers\":{},\"channels\":{},\"size\":{},\"published\":{ok},\"refused\":{refused},\"per_sec\":{rate:.0},\"p50_ms\":{p50:.3},\"p99_ms\":{p99:.3},\"max_ms\":{max:.3},\"server_cores\":{cpu:.3}}}",
        run.publishers, run.channels, run.size
    );
    if refused > 0 {
        bail!("the API refused {refused} publications");
    }
    Ok(())
}
