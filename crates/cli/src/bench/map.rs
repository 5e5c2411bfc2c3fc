//! The map scenario (issue 28): on one server started for the run, with the memory map
//! broker or `map_broker.redis`:
//! - memory per key: the server's RSS (and, on Redis, Redis's `used_memory`) before and
//!   after S keys are written into one persistent map through the API's batches;
//! - state loading: a client subscribes to that map from scratch in pages of P until it is
//!   live (what an SDK does), timed;
//! - publish → delivery latency: M subscribers of an ephemeral and of a persistent map,
//!   publications through the API at R per second, each carrying its send time;
//! - write throughput: concurrent API publishers of `map_publish`, ephemeral and persistent.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::client::Client;
use super::http::ApiConn;
use super::process::proc_stats;
use super::proto::{next_values, open_clients, request};
use super::server::Server;

const API_KEY: &str = "bench";
/// Concurrent API connections filling the state map.
const FILLERS: usize = 8;
/// Commands per batch when filling.
const BATCH: usize = 1000;

#[derive(clap::Args)]
pub struct MapRun {
    /// Keys of the map whose memory and state loading are measured (S).
    #[arg(long, default_value_t = 100_000)]
    pub keys: usize,
    /// State page size of the loading client (P).
    #[arg(long, default_value_t = 1000)]
    pub page_size: usize,
    /// How many times the state is loaded (a fresh client each time).
    #[arg(long, default_value_t = 3)]
    pub loads: usize,
    /// Subscribers of each latency map (M).
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Publications per second of the latency part (R).
    #[arg(long, default_value_t = 200)]
    pub rate: u64,
    /// API publishers of the throughput part.
    #[arg(long, default_value_t = 16)]
    pub publishers: usize,
    /// Seconds of each timed part (latency and throughput, per mode).
    #[arg(long, default_value_t = 5)]
    pub duration: u64,
    /// redis://127.0.0.1:PORT: `map_broker.redis` (a Redis of the bench's own: the run
    /// leaves its keys there); default: the memory map broker.
    #[arg(long)]
    pub redis: Option<String>,
    /// The wshub binary to start as the server (default: this one).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Give up after this many seconds in all.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
}

fn namespace(name: &str, mode: &str, page: usize) -> Value {
    let mut map = json!({"mode": mode, "min_page_size": 1, "max_page_size": page.max(1000)});
    if mode != "persistent" {
        map["key_ttl"] = json!("1h");
    }
    json!({"name": name, "subscription_type": "map", "allow_subscribe_for_client": true, "allow_subscribe_for_anonymous": true, "map": map})
}

/// A map subscribe through its phases, as the SDK runs it; the number of state entries.
async fn map_subscribe(c: &mut Client, channel: &str, limit: usize) -> anyhow::Result<usize> {
    let mut entries = 0;
    let mut req = json!({"channel": channel, "type": 1, "phase": 2, "limit": limit});
    for id in 2..u64::MAX {
        let (r, _) = request(c, id, json!({"subscribe": req.clone()})).await?;
        let s = &r["subscribe"];
        entries += s["state"].as_array().map_or(0, Vec::len);
        let (offset, epoch) = (s["offset"].clone(), s["epoch"].clone());
        req = match (s["phase"].as_u64(), s["cursor"].as_str()) {
            (None | Some(0), _) => return Ok(entries),
            (Some(2), Some(cursor)) if !cursor.is_empty() => {
                json!({"channel": channel, "type": 1, "phase": 2, "limit": limit, "cursor": cursor, "offset": offset, "epoch": epoch})
            }
            _ => json!({"channel": channel, "type": 1, "phase": 1, "limit": limit, "offset": offset, "epoch": epoch}),
        };
    }
    bail!("no end to the phases")
}

/// `used_memory` of the Redis at `url` (`None` when it cannot be read).
async fn redis_used_memory(url: &str) -> Option<u64> {
    let hostport = url.strip_prefix("redis://")?.trim_end_matches('/');
    let mut s = TcpStream::connect(hostport).await.ok()?;
    s.write_all(b"INFO memory\r\n").await.ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = String::from_utf8_lossy(&buf);
        if let Some(v) = text.lines().find_map(|l| l.strip_prefix("used_memory:")) {
            if text.contains("used_memory_human") {
                return v.trim().parse().ok();
            }
        }
        let n = tokio::time::timeout_at(deadline.into(), s.read(&mut chunk)).await.ok()?.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Writes `keys` keys into `channel`, `FILLERS` batches at a time; keys per second.
async fn fill(port: u16, channel: &str, keys: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut set = JoinSet::new();
    for f in 0..FILLERS {
        let channel = channel.to_string();
        set.spawn(async move {
            let mut api = ApiConn::open(port, API_KEY).await?;
            let mut start = f * BATCH;
            while start < keys {
                let commands: Vec<Value> = (start..(start + BATCH).min(keys))
                    .map(
                        |i| json!({"map_publish": {"channel": channel, "key": format!("key{i:07}"), "data": {"i": i, "p": "state entry"}}}),
                    )
                    .collect();
                api.call("batch", &json!({"commands": commands}).to_string()).await?;
                start += FILLERS * BATCH;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(keys as f64 / started.elapsed().as_secs_f64())
}

fn ms(v: u64) -> f64 {
    v as f64 / 1000.0
}

/// M subscribers of `channel`, publications at `rate` for `duration`: published, delivered,
/// latency (µs).
async fn latency(server: &Server, channel: &str, run: &MapRun, deadline: Instant) -> anyhow::Result<(u64, u64, Histogram<u64>)> {
    let clients = open_clients(&server.ws_url(), run.subscribers, deadline).await?;
    let base = Instant::now();
    let measuring = Arc::new(AtomicBool::new(false));
    let arrived = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut subs = JoinSet::new();
    let (ready_tx, mut ready) = tokio::sync::mpsc::unbounded_channel();
    for mut c in clients {
        let (channel, measuring, mut stop, ready) = (channel.to_string(), measuring.clone(), stop_rx.clone(), ready_tx.clone());
        let arrived = arrived.clone();
        subs.spawn(async move {
            request(&mut c, 1, json!({"connect": {}})).await?;
            map_subscribe(&mut c, &channel, 100).await?;
            let _ = ready.send(());
            let (mut got, mut hist) = (0u64, Histogram::<u64>::new(3)?);
            loop {
                let values = tokio::select! {
                    v = next_values(&mut c) => v?,
                    _ = stop.changed() => return anyhow::Ok((got, hist)),
                };
                let now = base.elapsed().as_micros() as u64;
                for v in values {
                    let t = v["push"]["pub"]["data"]["t"].as_u64();
                    if let (Some(t), true) = (t, measuring.load(Ordering::Relaxed)) {
                        got += 1;
                        arrived.fetch_add(1, Ordering::Relaxed);
                        let _ = hist.record(now.saturating_sub(t).max(1));
                    }
                }
            }
        });
    }
    drop(ready_tx);
    for i in 0..run.subscribers {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ready.recv()).await {
            Ok(Some(())) => {}
            _ => bail!("{i} of {} subscribers live: {}", run.subscribers, server.log_tail()),
        }
    }
    let mut api = ApiConn::open(server.port, API_KEY).await?;
    measuring.store(true, Ordering::Relaxed);
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / run.rate.max(1)));
    let end = Instant::now() + Duration::from_secs(run.duration);
    let mut published = 0u64;
    while Instant::now() < end {
        tick.tick().await; // the rate is the scenario
        let t = base.elapsed().as_micros() as u64;
        let body = json!({"channel": channel, "key": format!("k{}", published % 100), "data": {"t": t}});
        api.call("map_publish", &body.to_string()).await?;
        published += 1;
    }
    // What is still on its way may arrive: until every subscriber has all, for at most 2 s.
    let want = published * run.subscribers as u64;
    let drain = Instant::now() + Duration::from_secs(2);
    while arrived.load(Ordering::Relaxed) < want && Instant::now() < drain {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_tx.send(true);
    let (mut delivered, mut all) = (0u64, Histogram::<u64>::new(3)?);
    while let Some(r) = subs.join_next().await {
        let (got, hist) = r.context("a subscriber task failed")??;
        delivered += got;
        all.add(&hist)?;
    }
    Ok((published, delivered, all))
}

/// `publishers` API connections writing as fast as answered for `duration`: writes, refused
/// and latency (µs).
async fn throughput(port: u16, prefix: &str, run: &MapRun) -> anyhow::Result<(u64, f64, Histogram<u64>)> {
    let end = Instant::now() + Duration::from_secs(run.duration);
    let started = Instant::now();
    let mut set = JoinSet::new();
    for p in 0..run.publishers {
        let prefix = prefix.to_string();
        set.spawn(async move {
            let mut api = ApiConn::open(port, API_KEY).await?;
            let (mut n, mut hist) = (0u64, Histogram::<u64>::new(3)?);
            while Instant::now() < end {
                let s = n * 997 + p as u64;
                let body = json!({"channel": format!("{prefix}{}", s % 100), "key": format!("k{}", s % 1000), "data": {"s": s, "p": "0123456789012345678901234567890123456789"}});
                let sent = Instant::now();
                api.call("map_publish", &body.to_string()).await?;
                let _ = hist.record(sent.elapsed().as_micros().max(1) as u64);
                n += 1;
            }
            anyhow::Ok((n, hist))
        });
    }
    let (mut writes, mut all) = (0u64, Histogram::<u64>::new(3)?);
    while let Some(r) = set.join_next().await {
        let (n, hist) = r??;
        writes += n;
        all.add(&hist)?;
    }
    Ok((writes, started.elapsed().as_secs_f64(), all))
}

pub(super) async fn map(run: MapRun) -> anyhow::Result<()> {
    if run.keys == 0 || run.page_size == 0 || run.subscribers == 0 || run.publishers == 0 {
        bail!("keys, page-size, subscribers and publishers must be > 0");
    }
    let deadline = Instant::now() + Duration::from_secs(run.timeout);
    let mut config = json!({
        "http_api": {"key": API_KEY},
        "client": {"allow_anonymous_connect_without_token": true},
        "channel": {"namespaces": [namespace("per", "persistent", run.page_size), namespace("eph", "ephemeral", run.page_size)]}
    });
    let broker = match &run.redis {
        Some(url) => {
            let prefix = format!("wshub-bench-{}", std::process::id());
            config["map_broker"] = json!({"type": "redis", "redis": {"address": url, "prefix": prefix}});
            "redis"
        }
        None => "memory",
    };
    let server = Server::start(run.server_bin.as_ref(), "map", &config).await?;
    let pid = server.pid();
    let with_log = |e: anyhow::Error| e.context(format!("server log: {}", server.log_tail()));

    // Memory per key.
    let redis_before = match &run.redis {
        Some(url) => redis_used_memory(url).await,
        None => None,
    };
    let rss_before = proc_stats(pid).map_or(0, |s| s.0);
    let fill_rate = fill(server.port, "per:state", run.keys).await.map_err(with_log)?;
    let rss_after = proc_stats(pid).map_or(0, |s| s.0);
    let redis_after = match &run.redis {
        Some(url) => redis_used_memory(url).await,
        None => None,
    };
    let per_key = (rss_after as f64 - rss_before as f64) / run.keys as f64;
    let redis_per_key = match (redis_before, redis_after) {
        (Some(a), Some(b)) => (b as f64 - a as f64) / run.keys as f64,
        _ => 0.0,
    };

    // State loading.
    let mut loads = Vec::new();
    for _ in 0..run.loads {
        let mut c = open_clients(&server.ws_url(), 1, deadline).await?.pop().context("no client")?;
        request(&mut c, 1, json!({"connect": {}})).await?;
        let started = Instant::now();
        let entries = map_subscribe(&mut c, "per:state", run.page_size).await.map_err(with_log)?;
        let took = started.elapsed().as_secs_f64();
        if entries != run.keys {
            bail!("the state load gave {entries} entries, not {}", run.keys);
        }
        loads.push(took);
    }
    let best = loads.iter().copied().fold(f64::MAX, f64::min);
    println!(
        "map ({broker}): {} keys written at {fill_rate:.0} keys/s; server RSS {:.1} -> {:.1} MiB, {per_key:.0} B per key{}; \
         state loaded in pages of {} in {} s (best {:.0} keys/s)",
        run.keys,
        rss_before as f64 / 1048576.0,
        rss_after as f64 / 1048576.0,
        if run.redis.is_some() {
            format!(", Redis {redis_per_key:.0} B per key")
        } else {
            String::new()
        },
        run.page_size,
        loads.iter().map(|t| format!("{t:.3}")).collect::<Vec<_>>().join(" / "),
        run.keys as f64 / best,
    );
    let mut json_out = json!({
        "scenario": "map", "broker": broker, "keys": run.keys, "fill_keys_per_sec": fill_rate.round(),
        "rss_before": rss_before, "rss_after": rss_after, "bytes_per_key": per_key.round(),
        "redis_bytes_per_key": redis_per_key.round(), "page_size": run.page_size, "load_s": loads,
        "load_keys_per_sec": (run.keys as f64 / best).round()
    });

    for mode in ["eph", "per"] {
        let (published, delivered, hist) = latency(&server, &format!("{mode}:lat"), &run, deadline).await.map_err(with_log)?;
        let (p50, p99, max) = (ms(hist.value_at_quantile(0.5)), ms(hist.value_at_quantile(0.99)), ms(hist.max()));
        println!(
            "map ({broker}) {mode} latency: {published} publications at {}/s to {} subscribers, {delivered} delivered; ms p50 {p50:.2} p99 {p99:.2} max {max:.2}",
            run.rate, run.subscribers
        );
        json_out[format!("{mode}_latency")] =
            json!({"published": published, "delivered": delivered, "p50_ms": p50, "p99_ms": p99, "max_ms": max});
        let (writes, wall, hist) = throughput(server.port, &format!("{mode}:w"), &run).await.map_err(with_log)?;
        let (p50, p99) = (ms(hist.value_at_quantile(0.5)), ms(hist.value_at_quantile(0.99)));
        let rate = writes as f64 / wall;
        println!(
            "map ({broker}) {mode} writes: {} publishers, {writes} in {wall:.1} s: {rate:.0}/s; ms p50 {p50:.2} p99 {p99:.2}",
            run.publishers
        );
        json_out[format!("{mode}_writes")] = json!({"writes": writes, "per_sec": rate.round(), "p50_ms": p50, "p99_ms": p99});
    }
    println!("{json_out}");
    Ok(())
}
