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
use wshub_redis::testing::RedisServer;
use wshub_redis::{RedisConfig, RedisEngine};

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

async fn run(label: &str, servers: &[RedisServer], payload: usize) {
    let address = servers.iter().map(|s| s.url()).collect::<Vec<_>>().join(",");
    let cfg = |prefix: &str| RedisConfig {
        address: address.clone(),
        prefix: prefix.into(),
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
    let data = bytes::Bytes::from(format!("{{\"d\":\"{}\"}}", "x".repeat(payload.saturating_sub(8))));
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
        "| {label} | {payload} B | {:.0} | {:.0} | {delivered}/{published} |",
        published as f64 / secs,
        delivered as f64 / secs
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
        println!("| topology | payload | publications/s | deliveries/s | delivered/published |");
        println!("|---|---|---|---|---|");
        for payload in [100, 10_000] {
            let one = [RedisServer::start().await];
            run("one Redis", &one, payload).await;
            drop(one);
            let three = [RedisServer::start().await, RedisServer::start().await, RedisServer::start().await];
            run("three shards", &three, payload).await;
        }
    });
}
