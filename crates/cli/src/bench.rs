//! `wshub bench`: a load generator for loopback targets. Bounded in count and time.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Subcommand;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use wshub_websocket::handshake;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Open N WebSocket connections, hold them, and report the server's memory per connection.
    Idle {
        /// ws://127.0.0.1:PORT/PATH (loopback only)
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 1000)]
        conns: usize,
        /// Server process to read RSS and fd count from (/proc/PID).
        #[arg(long)]
        pid: Option<u32>,
        /// Seconds to hold the connections after the last one opened.
        #[arg(long, default_value_t = 2)]
        hold: u64,
        /// Give up after this many seconds in all.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
}

/// A parsed `ws://host:port/path` that must point at loopback.
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
    pub path: String,
}

pub fn parse_url(url: &str) -> anyhow::Result<Target> {
    let rest = url.strip_prefix("ws://").context("only ws:// URLs are supported")?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr: SocketAddr = hostport
        .replace("localhost", "127.0.0.1")
        .parse()
        .with_context(|| format!("{hostport}: expected IP:PORT"))?;
    if !addr.ip().is_loopback() {
        bail!("bench targets loopback only (127.0.0.0/8 or ::1), not {}", addr.ip());
    }
    Ok(Target {
        addr,
        host: hostport.to_string(),
        path: path.to_string(),
    })
}

/// Source address number `i`, cycling through 127.0.0.2-127.0.0.250 so that the ephemeral
/// port range of one address is never the limit.
pub fn source_addr(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % 249) as u8)), 0)
}

/// Opens one WebSocket connection and completes the handshake.
pub async fn open(target: &Target, i: usize) -> anyhow::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    if target.addr.ip().is_loopback() && target.addr.is_ipv4() {
        sock.bind(source_addr(i))?;
    }
    let mut stream = sock.connect(target.addr).await?;
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&(i as u64).to_le_bytes());
    let req = handshake::client_request(&target.host, &target.path, &[], None, key);
    stream.write_all(&req.bytes).await?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("server closed during the handshake");
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(_) = resp.parse(&buf)? {
            let mut map = http::HeaderMap::new();
            for h in resp.headers.iter() {
                if let (Ok(n), Ok(v)) = (
                    http::HeaderName::from_bytes(h.name.as_bytes()),
                    http::HeaderValue::from_bytes(h.value),
                ) {
                    map.append(n, v);
                }
            }
            handshake::verify_response(resp.code.unwrap_or(0), &map, &req, None)?;
            return Ok(stream);
        }
        if buf.len() > 16 * 1024 {
            bail!("handshake answer too long");
        }
    }
}

/// RSS (bytes) and open fds of a process.
pub fn proc_stats(pid: u32) -> Option<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((rss_kb * 1024, fds))
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Idle {
            url,
            conns,
            pid,
            hold,
            timeout,
        } => {
            let deadline = Instant::now() + Duration::from_secs(timeout);
            let _ = rlimit::increase_nofile_limit(u64::MAX);
            let target = std::sync::Arc::new(parse_url(&url)?);
            let before = pid.and_then(proc_stats);
            let started = Instant::now();
            let mut streams = Vec::with_capacity(conns);
            let mut set = JoinSet::new();
            let mut next = 0;
            let mut failed = 0usize;
            while streams.len() + failed < conns {
                while set.len() < 256 && next < conns {
                    let t = target.clone();
                    let i = next;
                    set.spawn(async move { open(&t, i).await });
                    next += 1;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, set.join_next()).await {
                    Ok(Some(Ok(Ok(s)))) => streams.push(s),
                    Ok(Some(Ok(Err(e)))) => {
                        failed += 1;
                        if failed <= 3 {
                            eprintln!("connection failed: {e:#}");
                        }
                    }
                    Ok(Some(Err(e))) => bail!("task failed: {e}"),
                    Ok(None) => break,
                    Err(_) => bail!("timed out after {timeout}s with {} connections open", streams.len()),
                }
                if streams.len() % 1000 == 0 && !streams.is_empty() {
                    eprint!("\ropen: {} / {conns}", streams.len());
                }
            }
            let elapsed = started.elapsed();
            eprintln!(
                "\ropen: {} / {conns}, failed {failed}, in {:.2}s",
                streams.len(),
                elapsed.as_secs_f64()
            );
            tokio::time::sleep(Duration::from_secs(hold)).await; // hold period: the scenario, not synchronisation
            let after = pid.and_then(proc_stats);
            let (rss_before, fds_before) = before.unwrap_or((0, 0));
            let (rss_after, fds_after) = after.unwrap_or((0, 0));
            let per_conn = if streams.is_empty() {
                0.0
            } else {
                (rss_after as f64 - rss_before as f64) / streams.len() as f64
            };
            println!(
                "idle: {} connections, {:.0} conn/s; server RSS {:.1} MiB -> {:.1} MiB, {:.0} bytes/connection; fds {} -> {}",
                streams.len(),
                streams.len() as f64 / elapsed.as_secs_f64(),
                rss_before as f64 / 1048576.0,
                rss_after as f64 / 1048576.0,
                per_conn,
                fds_before,
                fds_after
            );
            println!(
                "{{\"scenario\":\"idle\",\"connections\":{},\"failed\":{failed},\"rss_before\":{rss_before},\"rss_after\":{rss_after},\"bytes_per_connection\":{per_conn:.0},\"fds_before\":{fds_before},\"fds_after\":{fds_after}}}",
                streams.len()
            );
            if failed > 0 {
                bail!("{failed} connections failed");
            }
            Ok(())
        }
    }
}
