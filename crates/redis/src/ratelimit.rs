//! The cluster-wide rate limiter: a token bucket per key in Redis, taken atomically by one
//! Lua script, so that every node draws from the same budget.
//!
//! Key: `{prefix}.ratelimit.{key}`, a hash with the tokens left `t` and the time of the last
//! take `ts` (microseconds of Redis's own `TIME`, so that the nodes' clocks do not matter).
//! Tokens are refilled from the time elapsed since the last take, up to `burst`; the key
//! expires twice the fill time (`burst / rate`) after its last use, when it would be full
//! anyway.
//!
//! Each call is bounded by a short timeout; errors are returned, not hidden: the caller
//! applies the fail-open policy (`wshub_core::ratelimit::admit_on_error`).

use std::time::Duration;

use tokio::sync::OnceCell;
use wshub_core::engine::BoxFuture;
use wshub_core::ratelimit::{ClusterLimiter, LimiterError};

/// How long one check may take before the caller fails open.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);

/// Refill from elapsed time, take one token if there is one, keep the key twice the fill
/// time. Numbers are written with `%.17g`, which a double reads back exactly (`tostring`
/// keeps 14 digits: microsecond timestamps would lose their last ones).
const TAKE: &str = include_str!("lua/ratelimit_take.lua");

/// The Redis token bucket. One command connection of its own, made on first use and remade
/// by redis-rs when lost.
pub struct RedisLimiter {
    client: redis::Client,
    prefix: String,
    timeout: Duration,
    conn: OnceCell<redis::aio::ConnectionManager>,
    take: redis::Script,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// Checks the address (one of `engine.redis.address`'s forms); connects on first use.
    pub fn new(address: &str, prefix: &str) -> Result<Self, crate::RedisEngineError> {
        Self::from_config(&crate::RedisConfig {
            address: address.into(),
            prefix: prefix.into(),
            ..Default::default()
        })
    }

    /// On the first shard of the engine's settings (with its credentials and TLS), which
    /// must be a single Redis (Sentinel and Cluster are not supported yet).
    pub fn from_config(cfg: &crate::RedisConfig) -> Result<Self, crate::RedisEngineError> {
        let shards = cfg.shards()?;
        let first = shards
            .first()
            .ok_or_else(|| crate::RedisEngineError::Address("no address".into()))?;
        let client = crate::target::single_client_of(first)?;
        Ok(RedisLimiter {
            client,
            prefix: cfg.prefix.clone(),
            timeout: DEFAULT_TIMEOUT,
            conn: OnceCell::new(),
            take: redis::Script::new(TAKE),
        })
    }

    /// Bounds each check by `timeout` instead of [`DEFAULT_TIMEOUT`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The Redis key of `key`'s bucket.
    pub fn redis_key(&self, key: &str) -> String {
        format!("{}.ratelimit.{key}", self.prefix)
    }

    async fn take_one(&self, key: &str, rate: f64, burst: f64) -> Result<bool, LimiterError> {
        let unavailable = |e: redis::RedisError| LimiterError::Unavailable(e.to_string());
        let conn = self
            .conn
            .get_or_try_init(|| async {
                let cfg = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1);
                redis::aio::ConnectionManager::new_with_config(self.client.clone(), cfg).await
            })
            .await
            .map_err(unavailable)?;
        let mut conn = conn.clone();
        let allowed: i64 = self
            .take
            .key(self.redis_key(key))
            .arg(rate)
            .arg(burst)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(allowed == 1)
    }
}

impl ClusterLimiter for RedisLimiter {
    fn try_take<'a>(&'a self, key: &'a str, rate: f64, burst: f64) -> BoxFuture<'a, Result<bool, LimiterError>> {
        Box::pin(async move {
            if !(rate > 0.0 && rate.is_finite()) {
                // 0 means unlimited everywhere in the configuration; never a bucket that
                // refills never (and whose key would never expire).
                return Ok(true);
            }
            let burst = if burst.is_finite() { burst.max(1.0) } else { rate.max(1.0) };
            tokio::time::timeout(self.timeout, self.take_one(key, rate, burst))
                .await
                .unwrap_or(Err(LimiterError::Timeout))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use wshub_testkit::redis::RedisServer;

    /// Every wait here is bounded by this.
    const LIMIT: Duration = Duration::from_secs(10);

    fn limiter(server: &RedisServer, prefix: &str) -> RedisLimiter {
        // A generous timeout: these tests are about the bucket, not about slowness, and a
        // loaded CI machine must not turn a take into a timeout.
        RedisLimiter::new(&server.url(), prefix)
            .unwrap()
            .with_timeout(Duration::from_secs(5))
    }

    async fn takes(l: &RedisLimiter, key: &str, n: usize, rate: f64, burst: f64) -> usize {
        let mut ok = 0;
        for _ in 0..n {
            if l.try_take(key, rate, burst).await.unwrap() {
                ok += 1;
            }
        }
        ok
    }

    /// A burst is admitted, then refused, then refilled from Redis's clock; two limiters (two
    /// nodes) draw from one budget; another key has its own.
    #[tokio::test]
    async fn burst_refused_refilled_and_shared_between_nodes() {
        let server = RedisServer::start().await;
        let (a, b) = (limiter(&server, "rl1"), limiter(&server, "rl1"));
        // 5 per second, burst 3: a token every 200 ms.
        assert_eq!(takes(&a, "user.u", 2, 5.0, 3.0).await, 2);
        assert_eq!(takes(&b, "user.u", 5, 5.0, 3.0).await, 1, "node B sees what node A took");
        assert!(!a.try_take("user.u", 5.0, 3.0).await.unwrap());
        assert_eq!(takes(&b, "user.other", 3, 5.0, 3.0).await, 3, "keys are separate");
        // Refill: a token comes back within about 200 ms (polled, bounded).
        let deadline = Instant::now() + LIMIT;
        while !a.try_take("user.u", 5.0, 3.0).await.unwrap() {
            assert!(Instant::now() < deadline, "no refill");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Taken as soon as it came: the next one is refused (no double refill).
        assert!(!b.try_take("user.u", 5.0, 3.0).await.unwrap());
        // Another prefix (another deployment) has its own budget.
        assert_eq!(takes(&limiter(&server, "rl2"), "user.u", 3, 5.0, 3.0).await, 3);
    }

    /// The key lives twice the fill time after its last use, then is gone (and the bucket
    /// is full again).
    #[tokio::test]
    async fn keys_expire_after_twice_the_fill_time() {
        let server = RedisServer::start().await;
        let l = limiter(&server, "rl");
        // Burst 4 at 10 per second: filled in 400 ms, kept 800 ms.
        assert!(l.try_take("k", 10.0, 4.0).await.unwrap());
        let client = redis::Client::open(server.url()).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let pttl: i64 = redis::cmd("PTTL").arg(l.redis_key("k")).query_async(&mut c).await.unwrap();
        assert!(pttl > 0 && pttl <= 800, "pttl {pttl}");
        let deadline = Instant::now() + LIMIT;
        loop {
            let exists: i64 = redis::cmd("EXISTS").arg(l.redis_key("k")).query_async(&mut c).await.unwrap();
            if exists == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "key never expired");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Rate 0 is unlimited and touches nothing.
        assert!(l.try_take("z", 0.0, 1.0).await.unwrap());
        let exists: i64 = redis::cmd("EXISTS").arg(l.redis_key("z")).query_async(&mut c).await.unwrap();
        assert_eq!(exists, 0);
    }

    /// Redis gone, or a peer that never answers: an error within the timeout, never a hang;
    /// Redis back: limiting again.
    #[tokio::test]
    async fn unreachable_or_silent_redis_errs_in_time() {
        let mut server = RedisServer::start().await;
        let l = RedisLimiter::new(&server.url(), "rl").unwrap();
        assert!(l.try_take("k", 100.0, 100.0).await.is_ok_and(|ok| ok));
        server.stop();
        for _ in 0..3 {
            let t = Instant::now();
            let r = l.try_take("k", 100.0, 100.0).await;
            assert!(r.is_err(), "{r:?}");
            assert!(t.elapsed() < Duration::from_secs(1), "took {:?}", t.elapsed());
        }
        // Redis back (empty): the limiter reconnects by itself and limits again.
        let _server = RedisServer::start_on(server.port).await;
        let deadline = Instant::now() + LIMIT;
        while l.try_take("k", 1.0, 1.0).await.is_err() {
            assert!(Instant::now() < deadline, "no reconnection");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(l.try_take("k", 1.0, 1.0).await, Ok(false), "limiting again");
        // Accepts the connection (the kernel does) but never answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let l = RedisLimiter::new(&format!("redis://{addr}"), "rl").unwrap();
        let t = Instant::now();
        let r = l.try_take("k", 100.0, 100.0).await;
        assert!(r.is_err(), "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(1), "took {:?}", t.elapsed());
    }
}
