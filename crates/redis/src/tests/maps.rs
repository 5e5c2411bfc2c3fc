//! The map broker contract (`wshub_core::engine::conformance_map`) on every Redis setup:
//! one Redis, a Sentinel group, three independent shards and a three-master Redis Cluster
//! (sharded pub/sub), and fakeredis (a Redis-protocol server of another make), each case with
//! two nodes under a prefix of its own.

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use wshub_core::engine::conformance_map::MapFactory;
use wshub_testkit::redis::{FakeRedis, RedisCluster, SentinelGroup};

/// Keeps the servers of a setup running.
enum Servers {
    Single(RedisServer),
    Sentinel(SentinelGroup),
    Sharded(Vec<RedisServer>),
    Cluster(RedisCluster),
    Fake(FakeRedis),
}

pub(super) struct RedisMapFactory {
    servers: Servers,
    clusters: AtomicUsize,
}

const MASTER: &str = "maps";

impl RedisMapFactory {
    async fn single() -> Self {
        Self::with(Servers::Single(RedisServer::start().await))
    }

    async fn sentinel() -> Self {
        Self::with(Servers::Sentinel(SentinelGroup::start(MASTER, 1, false).await))
    }

    async fn sharded() -> Self {
        let servers = vec![RedisServer::start().await, RedisServer::start().await, RedisServer::start().await];
        Self::with(Servers::Sharded(servers))
    }

    pub(super) async fn cluster() -> Self {
        Self::with(Servers::Cluster(RedisCluster::start().await))
    }

    async fn fakeredis() -> Self {
        Self::with(Servers::Fake(FakeRedis::start().await))
    }

    fn with(servers: Servers) -> Self {
        RedisMapFactory {
            servers,
            clusters: AtomicUsize::new(0),
        }
    }

    pub(super) fn config(&self, prefix: &str) -> RedisConfig {
        let mut cfg = RedisConfig {
            prefix: prefix.into(),
            ..Default::default()
        };
        match &self.servers {
            Servers::Single(s) => cfg.address = s.url(),
            Servers::Sharded(all) => cfg.address = all.iter().map(|s| s.url()).collect::<Vec<_>>().join(","),
            Servers::Sentinel(g) => {
                cfg.address = "redis://127.0.0.1:1".into();
                cfg.sentinel = Some(SentinelConfig {
                    addresses: vec![g.address_item()],
                    master_name: MASTER.into(),
                    ..Default::default()
                });
            }
            Servers::Cluster(c) => cfg.cluster = vec![c.seeds()],
            Servers::Fake(f) => cfg.address = f.url(),
        }
        cfg
    }
}

impl MapFactory for RedisMapFactory {
    type Map = RedisEngine;

    fn is_single_node(&self) -> bool {
        false
    }

    fn maps(&self, nodes: usize) -> BoxFuture<'_, Vec<RedisEngine>> {
        let prefix = format!("maps{}", self.clusters.fetch_add(1, Ordering::Relaxed));
        let maps = (0..nodes).map(|_| RedisEngine::new(self.config(&prefix)).unwrap()).collect();
        Box::pin(std::future::ready(maps))
    }

    fn sleep(&self, d: Duration) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(d))
    }
}

mod single {
    wshub_core::map_conformance!(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn,
        super::RedisMapFactory::single().await
    );
}

mod sentinel {
    wshub_core::map_conformance!(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn,
        super::RedisMapFactory::sentinel().await
    );
}

mod sharded {
    wshub_core::map_conformance!(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn,
        super::RedisMapFactory::sharded().await
    );
}

mod cluster {
    wshub_core::map_conformance!(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn,
        super::RedisMapFactory::cluster().await
    );
}

mod fakeredis {
    wshub_core::map_conformance!(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn,
        super::RedisMapFactory::fakeredis().await
    );
}
