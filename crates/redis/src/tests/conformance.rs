//! The engine contract (`wshub_core::engine::conformance`) over every way of reaching Redis:
//! each case on servers of its own, with two engines (nodes) under one prefix. The setups
//! differ only in where the servers are and how a config names them, so one factory serves
//! them all.

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use wshub_core::engine::conformance::{BrokerFactory, EngineFactory};
use wshub_testkit::redis::{FakeRedis, SentinelGroup};

/// The master name the Sentinel setup serves.
const SENTINEL_NAME: &str = "conformance";

/// Engines on one Redis setup: `config` says how to reach it (the servers live as long as the
/// closure), and each cluster the suite asks for gets a prefix of its own.
struct RedisFactory {
    config: Box<dyn Fn() -> RedisConfig + Send + Sync>,
    clusters: AtomicUsize,
}

impl RedisFactory {
    fn new<B: Send + Sync + 'static>(backend: B, config: impl Fn(&B) -> RedisConfig + Send + Sync + 'static) -> Self {
        RedisFactory {
            config: Box::new(move || config(&backend)),
            clusters: AtomicUsize::new(0),
        }
    }

    /// One `redis-server`; every publication body compressed with `compression` (no size
    /// threshold).
    async fn single(compression: Compression) -> Self {
        Self::new(RedisServer::start().await, move |server| RedisConfig {
            address: server.url(),
            compression,
            compression_min_size: 0,
            ..Default::default()
        })
    }

    /// A master found through a `redis-sentinel`.
    async fn sentinel() -> Self {
        Self::new(SentinelGroup::start(SENTINEL_NAME, 1, false).await, |group| RedisConfig {
            // Unused with Sentinel: a port nothing listens on proves it.
            address: "redis://127.0.0.1:1".into(),
            sentinel: Some(SentinelConfig {
                addresses: vec![group.address_item()],
                master_name: SENTINEL_NAME.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// Three independent servers as shards.
    async fn sharded() -> Self {
        let servers = [RedisServer::start().await, RedisServer::start().await, RedisServer::start().await];
        Self::new(servers, |servers| RedisConfig {
            address: servers.iter().map(|s| s.url()).collect::<Vec<_>>().join(","),
            ..Default::default()
        })
    }

    /// fakeredis (PyPI): a Redis-protocol server of another make.
    async fn fakeredis() -> Self {
        Self::new(FakeRedis::start().await, |server| RedisConfig {
            address: server.url(),
            ..Default::default()
        })
    }

    /// A three-master Redis Cluster (sharded pub/sub).
    async fn cluster() -> Self {
        Self::new(RedisCluster::start().await, |cluster| RedisConfig {
            cluster: vec![cluster.seeds()],
            ..Default::default()
        })
    }
}

impl EngineFactory for RedisFactory {}

impl BrokerFactory for RedisFactory {
    type Broker = RedisEngine;

    fn brokers(&self, nodes: usize) -> BoxFuture<'_, Vec<RedisEngine>> {
        let prefix = format!("conformance{}", self.clusters.fetch_add(1, Ordering::Relaxed));
        let engines = (0..nodes)
            .map(|_| {
                RedisEngine::new(RedisConfig {
                    prefix: prefix.clone(),
                    // Long enough that nothing expires during a case on a loaded machine.
                    presence_ttl: Duration::from_secs(60),
                    ..(self.config)()
                })
                .unwrap()
            })
            .collect();
        Box::pin(std::future::ready(engines))
    }

    fn sleep(&self, d: Duration) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(d))
    }
}

mod single {
    wshub_core::engine_conformance!(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn,
        super::RedisFactory::single(super::Compression::None).await
    );
}

/// Every publication body compressed (zstd; lz4 is read and written in
/// `nodes_with_different_compression_read_each_other`).
mod zstd {
    wshub_core::engine_conformance!(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn,
        super::RedisFactory::single(super::Compression::Zstd).await
    );
}

mod sentinel {
    wshub_core::engine_conformance!(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn,
        super::RedisFactory::sentinel().await
    );
}

mod sharded {
    wshub_core::engine_conformance!(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn,
        super::RedisFactory::sharded().await
    );
}

mod cluster {
    wshub_core::engine_conformance!(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn,
        super::RedisFactory::cluster().await
    );
}

/// The same contract on fakeredis, a Redis-protocol server written in Python (README,
/// "Engines": what was tested).
mod fakeredis {
    wshub_core::engine_conformance!(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn,
        super::RedisFactory::fakeredis().await
    );
}
