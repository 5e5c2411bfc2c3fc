//! The fan-out scenario: subscribers (and stalled ones), publications at a fixed rate
//! through the HTTP API (wshub) or a client (raw), and at the subscribers the latency and
//! the lost, duplicated or reordered deliveries.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use parking::Shards;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use wshub_websocket::MessageKind;

use super::client::{open_many, Client};
use super::endpoint::{parse_url, Endpoint};
use super::http::http_answer;
use super::process::proc_stats;
use super::{Dialect, Target};

mod parking {
    use hdrhistogram::Histogram;
    use std::sync::Mutex;

    /// Latency histograms in shards, merged at the end.
    pub struct Shards(pub Vec<Mutex<Histogram<u64>>>);

    impl Shards {
        pub fn new(n: usize) -> Self {
            Shards(
                (0..n)
                    .map(|_| Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|_| unreachable!())))
                    .collect(),
            )
        }
        pub fn record(&self, i: usize, values: &[u64]) {
            if let Ok(mut h) = self.0[i % self.0.len()].lock() {
                for v in values {
                    let _ = h.record((*v).max(1));
                }
            }
        }
        pub fn merged(&self) -> Histogram<u64> {
            let mut all = Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|_| unreachable!());
            for s in &self.0 {
                if let Ok(h) = s.lock() {
                    let _ = all.add(&*h);
                }
            }
            all
        }
    }
}

/// Scans a frame (several `\n`-separated messages) for `"s":N` and `"t":T`.
fn scan(frame: &[u8], mut f: impl FnMut(u64, u64)) {
    fn num_after(line: &[u8], key: &[u8]) -> Option<u64> {
        let i = line.windows(key.len()).position(|w| w == key)? + key.len();
        let digits = line[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        std::str::from_utf8(&line[i..i + digits]).ok()?.parse().ok()
    }
    for line in frame.split(|b| *b == b'\n') {
        if let (Some(s), Some(t)) = (num_after(line, br#""s":"#), num_after(line, br#""t":"#)) {
            f(s, t);
        } else if let (Some(s), Some(t)) = (num_after(line, br#"\"s\":"#), num_after(line, br#"\"t\":"#)) {
            // A Pusher event: its data is a JSON string, quotes escaped.
            f(s, t);
        }
    }
}

#[derive(Default)]
struct Delivery {
    received: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn fanout(
    t: Target,
    subscribers: usize,
    rate: u64,
    duration: u64,
    size: usize,
    api: String,
    api_key: String,
    stalled: usize,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(t.timeout);
    let ep = Arc::new(parse_url(&t.url)?);
    let t = Arc::new(t);
    let before = t.pid.and_then(proc_stats);
    let (clients, failed) = open_many(&ep, &t, subscribers, deadline, None).await?;
    if failed > 0 {
        bail!("{failed} subscribers failed to connect");
    }
    // Subscribed, then never read: their socket buffers fill, then the server's queue.
    let (stalled_clients, failed) = open_many(&ep, &t, stalled, deadline, Some(4096)).await?;
    if failed > 0 {
        bail!("{failed} stalled subscribers failed to connect");
    }
    let baseline = t.pid.and_then(proc_stats);
    let mut rss_peak = baseline.map_or(0, |b| b.0);
    let hist = Arc::new(Shards::new(16));
    let delivery = Arc::new(Delivery::default());
    let mut subs = JoinSet::new();
    // Told to stop at the end, so that each reader records its last partial batch (an
    // aborted task would drop it, and with it every figure of a slow or lossy server).
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    for (i, mut c) in clients.into_iter().enumerate() {
        let (hist, delivery) = (hist.clone(), delivery.clone());
        let mut stop = stop_rx.clone();
        subs.spawn(async move {
            let mut last = 0u64;
            let mut batch = Vec::with_capacity(256);
            loop {
                let msg = tokio::select! {
                    m = c.next_message() => match m {
                        Ok(m) => m,
                        Err(_) => break,
                    },
                    _ = stop.changed() => break,
                };
                let now = now_micros();
                scan(&msg, |s, ts| {
                    batch.push(now.saturating_sub(ts));
                    delivery.received.fetch_add(1, Ordering::Relaxed);
                    if s == last {
                        delivery.duplicated.fetch_add(1, Ordering::Relaxed);
                    } else if s < last {
                        delivery.reordered.fetch_add(1, Ordering::Relaxed);
                    }
                    last = last.max(s);
                });
                if batch.len() >= 200 {
                    hist.record(i, &batch);
                    batch.clear();
                }
            }
            hist.record(i, &batch);
        });
    }
    let total = rate * duration;
    let pad = "x".repeat(size.saturating_sub(40));
    let published = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let (publisher, publisher_realtime) = {
        let published = published.clone();
        let (ep, t) = (ep.clone(), t.clone());
        // On a thread and runtime of its own: in the shared runtime the publisher's reads of
        // the API's answers waited behind the subscribers' thousands of reader tasks, and
        // the API latency measured was this process's scheduling (p99 150 ms at 10,000
        // subscribers with a server that answered in under 1 ms).
        let (tx, rx) = tokio::sync::oneshot::channel();
        let realtime = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let rt_flag = realtime.clone();
        std::thread::Builder::new().name("bench-publisher".into()).spawn(move || {
            rt_flag.store(prefer_current_thread(), Ordering::Relaxed);
            let r = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt.block_on(publish(&ep, &t, &api, &api_key, rate, total, &pad, &published)),
                Err(e) => Err(e.into()),
            };
            let _ = tx.send(r);
        })?;
        (
            tokio::spawn(async move { rx.await.unwrap_or_else(|_| Err(anyhow::anyhow!("the publisher thread died"))) }),
            realtime,
        )
    };
    let mut last_print = Instant::now();
    while !publisher.is_finished() {
        tokio::time::sleep(Duration::from_millis(200)).await; // progress line cadence
        if let Some((rss, _)) = t.pid.and_then(proc_stats) {
            rss_peak = rss_peak.max(rss);
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            eprint!(
                "\rpublished {} / {total}, delivered {}",
                published.load(Ordering::Relaxed),
                delivery.received.load(Ordering::Relaxed)
            );
            last_print = Instant::now();
        }
        if Instant::now() > deadline {
            bail!("timed out while publishing");
        }
    }
    // A server may drop the publisher itself (the peer closes any client whose queue
    // fills): report what was published until then rather than nothing.
    let (publisher_error, api_hist) = match publisher.await? {
        Ok(h) => (None, h),
        Err(e) => {
            eprintln!("\npublisher stopped: {e}");
            (Some(e.to_string()), None)
        }
    };
    let total = published.load(Ordering::Relaxed).min(total);
    let pub_elapsed = started.elapsed();
    let expected = total * subscribers as u64;
    // Let the last deliveries arrive (bounded).
    let grace = Instant::now() + Duration::from_secs(10);
    while delivery.received.load(Ordering::Relaxed) < expected && Instant::now() < grace {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall = started.elapsed();
    let _ = stop_tx.send(true);
    while subs.join_next().await.is_some() {}
    let after = t.pid.and_then(proc_stats);
    if let Some((rss, _)) = after {
        rss_peak = rss_peak.max(rss);
    }
    drop(stalled_clients);
    let h = hist.merged();
    let received = delivery.received.load(Ordering::Relaxed);
    let lost = expected.saturating_sub(received);
    let ms = |v: u64| v as f64 / 1000.0;
    println!(
        "fanout: {subscribers} subscribers (+{stalled} stalled), {total} publications at {rate}/s ({:.1}s), {size} B: delivered {received}/{expected} ({:.0} deliveries/s), lost {lost}, duplicated {}, reordered {}; latency ms p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
        pub_elapsed.as_secs_f64(),
        received as f64 / wall.as_secs_f64(),
        delivery.duplicated.load(Ordering::Relaxed),
        delivery.reordered.load(Ordering::Relaxed),
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max())
    );
    // The backend's view: how long the API took to answer each publish.
    let api = api_hist
        .as_ref()
        .map(|a| (ms(a.value_at_quantile(0.5)), ms(a.value_at_quantile(0.99)), ms(a.max())));
    if let Some((p50, p99, max)) = api {
        println!("api publish latency ms p50 {p50:.2} p99 {p99:.2} max {max:.2}");
    }
    let realtime = publisher_realtime.load(Ordering::Relaxed);
    let api_json = api.map_or(String::new(), |(p50, p99, max)| {
        format!(",\"api_p50_ms\":{p50:.3},\"api_p99_ms\":{p99:.3},\"api_max_ms\":{max:.3},\"publisher_realtime\":{realtime}")
    });
    println!(
        "{{\"scenario\":\"fanout\",\"dialect\":\"{:?}\",\"subscribers\":{subscribers},\"rate\":{rate},\"size\":{size},\"publications\":{total},\"delivered\":{received},\"expected\":{expected},\"lost\":{lost},\"duplicated\":{},\"reordered\":{},\"deliveries_per_sec\":{:.0},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"p999_ms\":{:.3},\"max_ms\":{:.3},\"rss_before\":{},\"rss_after\":{},\"stalled\":{stalled},\"rss_baseline\":{},\"rss_peak\":{rss_peak},\"publisher_error\":{}{api_json}}}",
        t.dialect,
        delivery.duplicated.load(Ordering::Relaxed),
        delivery.reordered.load(Ordering::Relaxed),
        received as f64 / wall.as_secs_f64(),
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max()),
        before.map_or(0, |b| b.0),
        after.map_or(0, |a| a.0),
        baseline.map_or(0, |b| b.0),
        publisher_error.as_deref().map_or("null".to_string(), |e| serde_json::Value::from(e).to_string())
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn publish(
    ep: &Endpoint,
    t: &Target,
    api: &str,
    api_key: &str,
    rate: u64,
    total: u64,
    pad: &str,
    published: &AtomicU64,
) -> anyhow::Result<Option<Histogram<u64>>> {
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    match t.dialect {
        Dialect::Raw => {
            let mut c = Client::open(ep, t, 250, None).await?;
            let (mut rd, mut wr) = tokio::io::split(c.stream);
            // The hub sends our own messages back too: read and drop them.
            let drain = tokio::spawn(async move {
                let mut b = [0u8; 65536];
                while matches!(rd.read(&mut b).await, Ok(n) if n > 0) {}
            });
            for s in 1..=total {
                tick.tick().await;
                c.conn
                    .send(MessageKind::Text, format!(r#"{{"s":{s},"t":{},"p":"{pad}"}}"#, now_micros()).into());
                wr.write_all(&c.conn.take_transmit()).await?;
                published.fetch_add(1, Ordering::Relaxed);
            }
            drain.abort();
        }
        Dialect::Wshub | Dialect::Pusher => {
            let hostport = api
                .strip_prefix("http://")
                .context("--api http://127.0.0.1:PORT required for the wshub and pusher dialects")?;
            let addr: SocketAddr = hostport.trim_end_matches('/').parse().context("--api: expected http://IP:PORT")?;
            if !addr.ip().is_loopback() {
                bail!("bench targets loopback only");
            }
            let stream = TcpStream::connect(addr).await?;
            let _ = stream.set_nodelay(true);
            let (mut rd, mut wr) = stream.into_split();
            // Requests are pipelined on one kept-alive connection (hyper answers in order),
            // so the publication order is the sequence order and the k-th answer belongs to
            // the k-th request: its latency is from the request's write to the answer's
            // last byte, as the backend that sent it sees it.
            let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
            let answers = tokio::spawn(async move {
                let mut hist = Histogram::<u64>::new(3).expect("3 significant figures is valid");
                let mut buf: Vec<u8> = Vec::with_capacity(65536);
                let mut chunk = vec![0u8; 65536];
                let (mut seen, mut errors) = (0u64, 0u64);
                while seen < total {
                    match rd.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    let now = Instant::now();
                    while let Some((len, ok)) = http_answer(&buf) {
                        buf.drain(..len);
                        seen += 1;
                        errors += u64::from(!ok);
                        if let Ok(at) = sent_rx.try_recv() {
                            let _ = hist.record(now.duration_since(at).as_micros() as u64);
                        }
                    }
                }
                (seen, errors, hist)
            });
            for s in 1..=total {
                tick.tick().await;
                let req = match t.dialect {
                    Dialect::Pusher => pusher_event(t, hostport, s, pad)?,
                    _ => {
                        let body = format!(
                            r#"{{"channel":"{}","data":{{"s":{s},"t":{},"p":"{pad}"}}}}"#,
                            t.channel,
                            now_micros()
                        );
                        format!(
                            "POST /api/publish HTTP/1.1\r\nHost: {hostport}\r\nX-API-Key: {api_key}\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        )
                    }
                };
                let _ = sent_tx.send(Instant::now());
                wr.write_all(req.as_bytes()).await?;
                published.fetch_add(1, Ordering::Relaxed);
            }
            let (answered, errors, hist) = tokio::time::timeout(Duration::from_secs(30), answers)
                .await
                .context("API answers")??;
            if answered < total {
                bail!("the API answered {answered} of {total} publications");
            }
            if errors > 0 {
                bail!("the API refused {errors} of {total} publications");
            }
            return Ok(Some(hist));
        }
    }
    Ok(None)
}

/// `POST /apps/ID/events` carrying publication `s`, signed as Pusher's HTTP API requires
/// (`auth_signature`: HMAC-SHA256 under the app secret of the method, path and sorted query,
/// with the body's MD5 in `body_md5`).
fn pusher_event(t: &Target, hostport: &str, s: u64, pad: &str) -> anyhow::Result<String> {
    use hmac::{Hmac, Mac};
    use md5::Digest as _;
    let mut app = t.pusher_app.splitn(3, ':');
    let (Some(id), Some(key), Some(secret)) = (app.next(), app.next(), app.next()) else {
        bail!("--pusher-app: expected ID:KEY:SECRET");
    };
    let data = format!(r#"{{\"s\":{s},\"t\":{},\"p\":\"{pad}\"}}"#, now_micros());
    let body = format!(r#"{{"name":"bench","channel":"{}","data":"{data}"}}"#, t.channel);
    let md5: String = md5::Md5::digest(body.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let path = format!("/apps/{id}/events");
    let query = format!("auth_key={key}&auth_timestamp={stamp}&auth_version=1.0&body_md5={md5}");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).context("the app secret")?;
    mac.update(format!("POST\n{path}\n{query}").as_bytes());
    let signature: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "POST {path}?{query}&auth_signature={signature} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ))
}

/// Runs the calling thread under `SCHED_FIFO` at the lowest real-time priority when the OS
/// allows it (root or `CAP_SYS_NICE`); false if not. For the publisher that times the API's
/// answers: on a machine it shares with the server and with thousands of subscriber readers,
/// an ordinary thread woken by an answer waited for its turn on a core, and that wait (up to
/// a scheduler slice, 3-4 ms) was most of the p99 measured at 10,000 subscribers, the same
/// server giving 4.4 ms p99 with it and 1.7 ms without (BENCHMARKS.md, issue #17).
#[cfg(unix)]
fn prefer_current_thread() -> bool {
    use thread_priority::unix::{set_thread_priority_and_policy, thread_native_id, RealtimeThreadSchedulePolicy, ThreadSchedulePolicy};
    set_thread_priority_and_policy(
        thread_native_id(),
        thread_priority::ThreadPriority::Min,
        ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo),
    )
    .is_ok()
}

#[cfg(not(unix))]
fn prefer_current_thread() -> bool {
    false
}
