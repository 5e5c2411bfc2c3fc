//! Publications and deliveries per second through the Redis engine, on real `redis-server`
//! processes started here: one Redis, then three independent shards. Not criterion: each
//! figure is a run of fixed length against servers that cannot be mocked.
//!
//! Two engines play two nodes: one publishes (`PUBLISHERS` concurrent callers, each
//! publication kept in history: the publish script), the other is subscribed to every
//! channel and counts what it receives.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wshub_core::engine::{Broker, BrokerHandler, PublishOptions};
use wshub_protocol::{ClientInfo, Publication};
use wshub_redis::{Compression, RedisConfig, RedisEngine};
use wshub_testkit::redis::{RedisCluster, RedisServer};

const CHANNELS: usize = 64;
const PUBLISHERS: usize = 32;
const RUN: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Counter(AtomicU64);

impl BrokerHandler for Counter {
    fn handle_publication(&self, _: &str, _: &Publication) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn handle_join(&self, _: &str, _: &ClientInfo) {}
    fn handle_leave(&self, _: &str, _: &ClientInfo) {}
    fn handle_reset(&self, _: &str) {}
    fn has_subscribers(&self, _: &str) -> bool {
        true
    }
}

/// A JSON document of about `size` bytes that looks like application data (chat messages:
/// ids, user names, words, timestamps), generated from a fixed seed: `"x" * n` would
/// compress to nothing and flatter every codec.
fn json_payload(size: usize) -> bytes::Bytes {
    const WORDS: [&str; 24] = [
        "hello", "world", "order", "shipped", "price", "update", "the", "a", "status", "pending", "user", "joined", "message", "channel",
        "delivery", "ok", "tomorrow", "meeting", "room", "payment", "received", "thanks", "see", "you",
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: u64| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    let mut items = Vec::new();
    // `{"items":[…],"note":"…"}`: whole items while they fit, then words up to `size`.
    let mut len = 23;
    loop {
        let words: Vec<&str> = (0..3 + next(8)).map(|_| WORDS[next(WORDS.len() as u64) as usize]).collect();
        let item = format!(
            "{{\"id\":{},\"user\":\"u{}\",\"ts\":{},\"text\":\"{}\"}}",
            next(1_000_000),
            next(5000),
            1_764_000_000 + next(100_000),
            words.join(" ")
        );
        if len + item.len() + 1 > size {
            break;
        }
        len += item.len() + 1;
        items.push(item);
    }
    let mut note = String::new();
    while len + note.len() < size {
        let w = WORDS[next(WORDS.len() as u64) as usize];
        if len + note.len() + w.len() + 1 > size {
            break;
        }
        note.push_str(w);
        note.push(' ');
    }
    bytes::Bytes::from(format!("{{\"items\":[{}],\"note\":\"{note}\"}}", items.join(",")))
}

/// Independent servers (one, or shards), or the seeds of a cluster.
enum Topology<'a> {
    Servers(&'a [RedisServer]),
    Cluster(&'a RedisCluster),
}

async fn run(label: &str, topology: Topology<'_>, payload: usize, compression: Compression) {
    let (address, cluster) = match topology {
        Topology::Servers(servers) => (servers.iter().map(|s| s.url()).collect::<Vec<_>>().join(","), Vec::new()),
        Topology::Cluster(c) => (String::new(), vec![c.seeds()]),
    };
    let cfg = |prefix: &str| RedisConfig {
        address: address.clone(),
        cluster: cluster.clone(),
        prefix: prefix.into(),
        compression,
        compression_min_size: 0,
        ..Default::default()
    };
    let prefix = format!("bench{}", rand_suffix());
    let publisher = Arc::new(RedisEngine::new(cfg(&prefix)).unwrap());
    let subscriber = RedisEngine::new(cfg(&prefix)).unwrap();
    publisher.set_handler(Arc::new(Counter::default()));
    let received = Arc::new(Counter::default());
    subscriber.set_handler(received.clone());
    let channels: Vec<String> = (0..CHANNELS).map(|i| format!("bench:{i}")).collect();
    for c in &channels {
        subscriber.subscribe(c).await.unwrap();
    }
    let data = json_payload(payload);
    let opts = Arc::new(PublishOptions {
        history_size: 100,
        history_ttl: Duration::from_secs(60),
        ..Default::default()
    });
    let published = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + RUN;
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let (publisher, channels, data, opts, published) =
            (publisher.clone(), channels.clone(), data.clone(), opts.clone(), published.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = p;
            while Instant::now() < deadline {
                let publication = Publication {
                    data: data.clone(),
                    ..Default::default()
                };
                publisher.publish(&channels[i % CHANNELS], publication, &opts).await.unwrap();
                published.fetch_add(1, Ordering::Relaxed);
                i += PUBLISHERS;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let published = published.load(Ordering::Relaxed);
    // Deliveries still on their way are waited for (bounded), then counted.
    let settle = Instant::now() + Duration::from_secs(10);
    while received.0.load(Ordering::Relaxed) < published && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let delivered = received.0.load(Ordering::Relaxed);
    let secs = RUN.as_secs_f64();
    println!(
        "| {label} | {compression:?} | {} B | {:.0} | {:.0} | {delivered}/{published} |",
        data.len(),
        published as f64 / secs,
        delivered as f64 / secs
    );
}

/// Redis memory (`used_memory`) taken by 1,000 history entries of one channel.
async fn memory_per_1000(payload: usize, compression: Compression) {
    let server = RedisServer::start().await;
    let engine = RedisEngine::new(RedisConfig {
        address: server.url(),
        prefix: "mem".into(),
        compression,
        compression_min_size: 0,
        ..Default::default()
    })
    .unwrap();
    engine.set_handler(Arc::new(Counter::default()));
    let opts = PublishOptions {
        history_size: 1000,
        history_ttl: Duration::from_secs(600),
        ..Default::default()
    };
    let data = json_payload(payload);
    let first = Publication {
        data: data.clone(),
        ..Default::default()
    };
    // The first publication creates the stream and loads the script: not counted.
    engine.publish("m", first, &opts).await.unwrap();
    let used = || {
        let info = wshub_testkit::redis::cli(server.port, &["INFO", "memory"]);
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap()
    };
    let before = used();
    for _ in 0..1000 {
        let p = Publication {
            data: data.clone(),
            ..Default::default()
        };
        engine.publish("m", p, &opts).await.unwrap();
    }
    let after = used();
    println!(
        "| {compression:?} | {} B | {:.0} KiB | {:.2} |",
        data.len(),
        (after - before) as f64 / 1024.0,
        (after - before) as f64 / (1000.0 * data.len() as f64)
    );
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let only = std::env::args().nth(1).filter(|a| !a.starts_with('-')).unwrap_or_default();
        if only.is_empty() || only == "topology" {
            println!("| topology | compression | payload | publications/s | deliveries/s | delivered/published |");
            println!("|---|---|---|---|---|---|");
            for payload in [100, 10_000] {
                let one = [RedisServer::start().await];
                run("one Redis", Topology::Servers(&one), payload, Compression::None).await;
                drop(one);
                let three = [RedisServer::start().await, RedisServer::start().await, RedisServer::start().await];
                run("three shards", Topology::Servers(&three), payload, Compression::None).await;
                drop(three);
                let cluster = RedisCluster::start().await;
                run("three-master cluster", Topology::Cluster(&cluster), payload, Compression::None).await;
            }
        }
        if only.is_empty() || only == "compression" {
            println!("| compression | payload | Redis memory per 1,000 entries | bytes per payload byte |");
            println!("|---|---|---|---|");
            for payload in [100, 10_000] {
                for c in [Compression::None, Compression::Lz4, Compression::Zstd] {
                    memory_per_1000(payload, c).await;
                }
            }
            println!("| topology | compression | payload | publications/s | deliveries/s | delivered/published |");
            println!("|---|---|---|---|---|---|");
            for payload in [100, 10_000] {
                for c in [Compression::None, Compression::Lz4, Compression::Zstd] {
                    let one = [RedisServer::start().await];
                    run("one Redis", Topology::Servers(&one), payload, c).await;
                }
            }
        }
    });
}
