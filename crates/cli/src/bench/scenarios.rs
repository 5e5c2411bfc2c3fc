//! The scenarios besides fan-out: idle connections, handshakes per second, connect and
//! disconnect churn, and a trivial proxy backend for the node's proxy overhead.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::client::{open_many, Client};
use super::endpoint::{parse_url, Endpoint};
use super::http::take_request;
use super::process::{cpu_seconds, proc_stats, settle_fds};
use super::Target;

/// Opens `conns` clients, holds them `hold` seconds answering pings, and reports the
/// server's memory and CPU per connection.
pub(super) async fn idle(target: Target, conns: usize, hold: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(target.timeout);
    let ep = Arc::new(parse_url(&target.url)?);
    let t = Arc::new(target);
    let before = t.pid.and_then(proc_stats);
    let started = Instant::now();
    let (clients, failed) = open_many(&ep, &t, conns, deadline, None).await?;
    let elapsed = started.elapsed();
    let n = clients.len();
    // Every client answers the server's pings, as an idle SDK does, and counts
    // itself out if the server closes it.
    let closed = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut readers = JoinSet::new();
    for mut c in clients {
        let (closed, mut stop) = (closed.clone(), stop_rx.clone());
        readers.spawn(async move {
            loop {
                tokio::select! {
                    m = c.next_message() => if m.is_err() {
                        closed.fetch_add(1, Ordering::Relaxed);
                        return;
                    },
                    _ = stop.changed() => return,
                }
            }
        });
    }
    // The server's CPU over the hold, all of it spent on idle connections (pings,
    // pongs, timers): the figure is per connection per second of wall time.
    let cpu_before = t.pid.and_then(cpu_seconds);
    let held = Instant::now();
    tokio::time::sleep(Duration::from_secs(hold)).await; // the hold is the scenario
    let cpu_after = t.pid.and_then(cpu_seconds);
    let held = held.elapsed().as_secs_f64();
    let after = t.pid.and_then(proc_stats);
    let _ = stop_tx.send(true);
    while readers.join_next().await.is_some() {}
    let closed = closed.load(Ordering::Relaxed);
    let (rss_before, fds_before) = before.unwrap_or((0, 0));
    let (rss_after, fds_after) = after.unwrap_or((0, 0));
    let per_conn = if n == 0 {
        0.0
    } else {
        (rss_after as f64 - rss_before as f64) / n as f64
    };
    let cpu_us = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) if n > 0 => (b - a) * 1e6 / held / n as f64,
        _ => 0.0,
    };
    println!(
        "idle: {n} connections ({:?}), {:.0} conn/s; server RSS {:.1} MiB -> {:.1} MiB, {:.0} bytes/connection; fds {} -> {}; server CPU {cpu_us:.3} µs/s per connection over {held:.0} s; closed by the server {closed}",
        t.dialect,
        n as f64 / elapsed.as_secs_f64(),
        rss_before as f64 / 1048576.0,
        rss_after as f64 / 1048576.0,
        per_conn,
        fds_before,
        fds_after
    );
    println!(
        "{{\"scenario\":\"idle\",\"dialect\":\"{:?}\",\"tls\":{},\"connections\":{n},\"failed\":{failed},\"rss_before\":{rss_before},\"rss_after\":{rss_after},\"bytes_per_connection\":{per_conn:.0},\"fds_before\":{fds_before},\"fds_after\":{fds_after},\"hold_s\":{held:.1},\"cpu_us_per_conn_sec\":{cpu_us:.4},\"closed\":{closed}}}",
        t.dialect,
        ep.tls.is_some(),
    );
    if closed > 0 {
        bail!("the server closed {closed} idle connections during the hold");
    }
    if failed > 0 {
        bail!("{failed} connections failed");
    }
    Ok(())
}

/// Connections per second for `duration` seconds, `concurrency` at a time.
pub(super) async fn handshake(target: Target, duration: u64, concurrency: usize) -> anyhow::Result<()> {
    let ep = Arc::new(parse_url(&target.url)?);
    let t = Arc::new(target);
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(duration);
    let cpu_before = t.pid.and_then(cpu_seconds);
    let mut set = JoinSet::new();
    for w in 0..concurrency {
        let (ep, t, done, failed) = (ep.clone(), t.clone(), done.clone(), failed.clone());
        set.spawn(async move {
            let mut i = w;
            while Instant::now() < end {
                match Client::open(&ep, &t, i, None).await {
                    Ok(c) => {
                        done.fetch_add(1, Ordering::Relaxed);
                        drop(c);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += concurrency;
            }
        });
    }
    while set.join_next().await.is_some() {}
    let n = done.load(Ordering::Relaxed);
    let rate = n as f64 / duration as f64;
    // The server's own CPU per connection: the fair figure when the load generator
    // shares the machine (and its cores) with the server.
    let cpu_us = match (cpu_before, t.pid.and_then(cpu_seconds)) {
        (Some(a), Some(b)) if n > 0 => (b - a) * 1e6 / n as f64,
        _ => 0.0,
    };
    println!(
        "handshake: {n} connections in {duration}s ({:?}, concurrency {concurrency}): {rate:.0} conn/s, failed {}, server CPU {cpu_us:.1} µs per connection",
        t.dialect,
        failed.load(Ordering::Relaxed)
    );
    println!(
        "{{\"scenario\":\"handshake\",\"dialect\":\"{:?}\",\"connections\":{n},\"conn_per_sec\":{rate:.0},\"failed\":{},\"server_cpu_us_per_conn\":{cpu_us:.1}}}",
        t.dialect,
        failed.load(Ordering::Relaxed)
    );
    Ok(())
}

/// Serves the trivial connect-proxy backend on `port` for `duration` seconds.
pub(super) async fn proxy_backend(port: u16, duration: u64) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)).await?;
    let served = Arc::new(AtomicU64::new(0));
    let accept = async {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let served = served.clone();
            tokio::spawn(async move {
                let _ = proxy_backend_conn(stream, &served).await;
            });
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(duration), accept).await;
    println!("proxy-backend: {} requests answered", served.load(Ordering::Relaxed));
    Ok(())
}

/// `cycles` connect/disconnect cycles after `warmup` ones: the server's RSS and fds before
/// and after.
pub(super) async fn churn(target: Target, cycles: usize, concurrency: usize, warmup: usize) -> anyhow::Result<()> {
    let ep = Arc::new(parse_url(&target.url)?);
    let t = Arc::new(target);
    let deadline = Instant::now() + Duration::from_secs(t.timeout);
    if warmup > 0 {
        churn_cycles(&ep, &t, warmup, concurrency, deadline).await;
        settle_fds(&t, None).await;
    }
    let before = t.pid.and_then(proc_stats);
    let failed = churn_cycles(&ep, &t, cycles, concurrency, deadline).await;
    let after = settle_fds(&t, before).await;
    let (rb, fb) = before.unwrap_or((0, 0));
    let (ra, fa) = after.unwrap_or((0, 0));
    let growth = if rb > 0 { (ra as f64 - rb as f64) / rb as f64 * 100.0 } else { 0.0 };
    println!(
        "churn: {cycles} cycles after {warmup} of warm-up ({:?}), failed {failed}; server RSS {rb} -> {ra} ({growth:+.1} %), fds {fb} -> {fa}",
        t.dialect
    );
    println!("{{\"scenario\":\"churn\",\"cycles\":{cycles},\"warmup\":{warmup},\"failed\":{failed},\"rss_before\":{rb},\"rss_after\":{ra},\"rss_growth_pct\":{growth:.2},\"fds_before\":{fb},\"fds_after\":{fa}}}");
    Ok(())
}

/// `n` connect (+ connect/subscribe in the wshub dialect) and disconnect cycles, `concurrency`
/// at a time. Returns how many failed.
async fn churn_cycles(ep: &Arc<Endpoint>, t: &Arc<Target>, n: usize, concurrency: usize, deadline: Instant) -> u64 {
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut set = JoinSet::new();
    for _ in 0..concurrency {
        let (ep, t, next, failed) = (ep.clone(), t.clone(), next.clone(), failed.clone());
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= n || Instant::now() > deadline {
                    break;
                }
                if Client::open(&ep, &t, i, None).await.is_err() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
    failed.load(Ordering::Relaxed)
}

/// One kept-alive connection of the trivial proxy backend: reads requests (headers, then
/// `Content-Length` bytes of body) and answers each with a fixed connect result.
async fn proxy_backend_conn(mut stream: TcpStream, served: &AtomicU64) -> anyhow::Result<()> {
    const BODY: &str = r#"{"result":{"user":"bench"}}"#;
    let reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        // Every complete request in the buffer is answered.
        while take_request(&mut buf).is_some() {
            stream.write_all(reply.as_bytes()).await?;
            served.fetch_add(1, Ordering::Relaxed);
        }
        if buf.len() > 1 << 20 {
            bail!("request too large");
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
