//! Rate limiters, free of IO and clocks: the caller passes the time.
//!
//! Every rate limit (`client.command_rate_limit`, `client.connection_rate_limit`,
//! `client.connection_rate_limit_per_ip`, `http_api.rate_limit`) takes one of three
//! algorithms ([`RateLimitAlgorithm`], key `…_algorithm`), built by [`Limiter::new`] from
//! the limit alone (`rate` events per second):
//!
//! - [`TokenBucket`] (the default): a steady rate with bursts of up to one second's worth;
//!   an idle period banks a burst again. Fits clients that are quiet, then do several
//!   things at once (connect and subscribe to many channels).
//! - [`LeakyBucket`]: no burst at all: at most one event each `1 / rate` seconds (a meter of
//!   capacity one). Fits a backend that must see a smooth flow whatever the clients do (a
//!   connect proxy behind `client.connection_rate_limit`).
//! - [`SlidingWindow`]: at most `rate` events in any one-second window (two-bucket
//!   approximation, exact at bucket edges); after a burst nothing more until the burst has
//!   left the window, so a client cannot spend the burst and then the steady rate on top.
//!   Fits a hard cap per source (`client.connection_rate_limit_per_ip`, its default).
//!
//! - [`KeyedLimiters`]: one limiter per key with bounded memory; [`KeyedWindows`]: sliding
//!   windows of any length per key (the admin login's attempts per minute).
//! - [`ClusterLimiter`]: a token bucket shared by every node (the Redis engine implements
//!   it), for the limits whose scope is `cluster`; [`admit_on_error`] is the fail-open
//!   policy the callers apply to its errors.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::engine::BoxFuture;

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_sec: f64, burst: f64, now: Instant) -> Self {
        let burst = burst.max(1.0);
        TokenBucket {
            rate: rate_per_sec.max(0.0),
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.last = self.last.max(now);
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        // The tolerance: refilling in many small steps rounds, and a token exactly due must
        // not wait for the next event (as in `LeakyBucket::try_add`).
        if self.tokens >= 1.0 - 1e-9 {
            self.tokens = (self.tokens - 1.0).max(0.0);
            true
        } else {
            false
        }
    }
}

/// A leaky bucket used as a meter: the level drains at `rate` per second; an event is
/// admitted when the level after draining, plus one, fits `capacity`, and then adds one.
#[derive(Debug, Clone)]
pub struct LeakyBucket {
    rate: f64,
    capacity: f64,
    level: f64,
    last: Instant,
}

impl LeakyBucket {
    /// An empty bucket. `capacity` is at least one (a smaller one would admit nothing).
    pub fn new(rate_per_sec: f64, capacity: f64, now: Instant) -> Self {
        LeakyBucket {
            rate: rate_per_sec.max(0.0),
            capacity: capacity.max(1.0),
            level: 0.0,
            last: now,
        }
    }

    fn leak(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.level = (self.level - dt * self.rate).max(0.0);
        self.last = self.last.max(now);
    }

    /// Adds one event if it fits.
    pub fn try_add(&mut self, now: Instant) -> bool {
        self.leak(now);
        // The tolerance: leaking in many small steps rounds, and an event exactly due must
        // not wait for the next one.
        if self.level + 1.0 <= self.capacity + 1e-9 {
            self.level += 1.0;
            true
        } else {
            false
        }
    }

    /// The level now (events still in the bucket).
    pub fn level(&mut self, now: Instant) -> f64 {
        self.leak(now);
        self.level
    }
}

/// At most `limit` events in any `window`.
#[derive(Debug, Clone)]
pub struct SlidingWindow {
    window: Duration,
    limit: u32,
    start: Instant,
    current: u32,
    previous: u32,
}

impl SlidingWindow {
    pub fn new(limit: u32, window: Duration, now: Instant) -> Self {
        SlidingWindow {
            window: window.max(Duration::from_millis(1)),
            limit,
            start: now,
            current: 0,
            previous: 0,
        }
    }

    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.start);
        if elapsed >= self.window * 2 {
            self.previous = 0;
            self.current = 0;
            self.start = now;
        } else if elapsed >= self.window {
            self.previous = self.current;
            self.current = 0;
            self.start += self.window;
        }
    }

    /// Counts an event if the window allows it.
    pub fn try_hit(&mut self, now: Instant) -> bool {
        self.roll(now);
        let into = now.saturating_duration_since(self.start).as_secs_f64() / self.window.as_secs_f64();
        // The previous bucket's events, weighted by how much of it the window still covers.
        let estimate = f64::from(self.previous) * (1.0 - into) + f64::from(self.current);
        if estimate < f64::from(self.limit) {
            self.current += 1;
            true
        } else {
            false
        }
    }

    /// Whether the window has forgotten every event (its entry can be dropped).
    pub fn is_idle(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.start) >= self.window * 2
    }
}

/// The algorithm of a rate limit (`…_algorithm` keys); see the module's documentation for
/// when each fits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitAlgorithm {
    #[default]
    TokenBucket,
    LeakyBucket,
    SlidingWindow,
}

/// One limiter of any [`RateLimitAlgorithm`], for `rate` events per second.
#[derive(Debug, Clone)]
pub enum Limiter {
    Token(TokenBucket),
    Leaky(LeakyBucket),
    Window(SlidingWindow),
}

impl Limiter {
    /// A limiter that admits `rate` events per second: a token bucket with a burst of
    /// `rate`, a leaky bucket of capacity one, or a one-second window of `rate` events.
    pub fn new(algorithm: RateLimitAlgorithm, rate: u32, now: Instant) -> Self {
        let r = f64::from(rate);
        match algorithm {
            RateLimitAlgorithm::TokenBucket => Limiter::Token(TokenBucket::new(r, r, now)),
            RateLimitAlgorithm::LeakyBucket => Limiter::Leaky(LeakyBucket::new(r, 1.0, now)),
            RateLimitAlgorithm::SlidingWindow => Limiter::Window(SlidingWindow::new(rate, Duration::from_secs(1), now)),
        }
    }

    /// Admits one event if the limit allows it.
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        match self {
            Limiter::Token(b) => b.try_take(now),
            Limiter::Leaky(b) => b.try_add(now),
            Limiter::Window(w) => w.try_hit(now),
        }
    }

    /// Whether the limiter is back to its initial state (its entry can be dropped): every
    /// algorithm is after two seconds without events.
    pub fn is_idle(&self, now: Instant) -> bool {
        let since = |t: Instant| now.saturating_duration_since(t) >= Duration::from_secs(2);
        match self {
            Limiter::Token(b) => since(b.last),
            Limiter::Leaky(b) => since(b.last),
            Limiter::Window(w) => w.is_idle(now),
        }
    }
}

/// Limiters per key (client IP, API key). Idle entries are swept once the map grows, so
/// memory follows the number of recently active keys.
#[derive(Debug)]
pub struct KeyedLimiters<K> {
    algorithm: RateLimitAlgorithm,
    rate: u32,
    map: HashMap<K, Limiter>,
    sweep_at: usize,
}

impl<K: Hash + Eq + Clone> KeyedLimiters<K> {
    pub fn new(algorithm: RateLimitAlgorithm, rate: u32) -> Self {
        KeyedLimiters {
            algorithm,
            rate,
            map: HashMap::new(),
            sweep_at: 1024,
        }
    }

    pub fn try_acquire(&mut self, key: &K, now: Instant) -> bool {
        if self.map.len() >= self.sweep_at {
            self.map.retain(|_, l| !l.is_idle(now));
            self.sweep_at = (self.map.len() * 2).max(1024);
        }
        let (algorithm, rate) = (self.algorithm, self.rate);
        self.map
            .entry(key.clone())
            .or_insert_with(|| Limiter::new(algorithm, rate, now))
            .try_acquire(now)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Sliding windows per key (client IP). Idle entries are swept once the map grows, so memory
/// follows the number of recently active keys.
#[derive(Debug)]
pub struct KeyedWindows<K> {
    limit: u32,
    window: Duration,
    map: HashMap<K, SlidingWindow>,
    sweep_at: usize,
}

impl<K: Hash + Eq + Clone> KeyedWindows<K> {
    pub fn new(limit: u32, window: Duration) -> Self {
        KeyedWindows {
            limit,
            window,
            map: HashMap::new(),
            sweep_at: 1024,
        }
    }

    pub fn try_hit(&mut self, key: &K, now: Instant) -> bool {
        if self.map.len() >= self.sweep_at {
            self.map.retain(|_, w| !w.is_idle(now));
            self.sweep_at = (self.map.len() * 2).max(1024);
        }
        let (limit, window) = (self.limit, self.window);
        self.map
            .entry(key.clone())
            .or_insert_with(|| SlidingWindow::new(limit, window, now))
            .try_hit(now)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Where a limit is counted: on this node, or across every node through the engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitScope {
    /// Each node counts for itself (the default).
    #[default]
    Node,
    /// One budget for the whole cluster (needs `engine.type = "redis"`).
    Cluster,
}

/// Why a cluster limiter could not answer. Callers fail open on it ([`admit_on_error`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimiterError {
    /// The backend did not answer within the limiter's timeout.
    #[error("rate limiter: no answer in time")]
    Timeout,
    /// The backend refused or is unreachable.
    #[error("rate limiter: {0}")]
    Unavailable(String),
}

/// A token bucket shared by every node: `rate` tokens per second, at most `burst`, one
/// bucket per `key`. Implementations bound each call with a short timeout.
pub trait ClusterLimiter: Send + Sync + std::fmt::Debug {
    /// Takes one token from `key`'s bucket if there is one.
    fn try_take<'a>(&'a self, key: &'a str, rate: f64, burst: f64) -> BoxFuture<'a, Result<bool, LimiterError>>;
}

/// How often a fail-open is logged at most (each log line says how many happened since).
const FAIL_OPEN_LOG_EVERY: Duration = Duration::from_secs(10);

static FAIL_OPEN_SINCE_LOG: AtomicU64 = AtomicU64::new(0);
static FAIL_OPEN_LAST_LOG: parking_lot::Mutex<Option<Instant>> = parking_lot::const_mutex(None);

/// The fail-open policy of cluster limiters: an answer is obeyed; an error admits, is counted
/// in `wshub_rate_limit_fail_open_total{kind}` and logged at most once per
/// [`FAIL_OPEN_LOG_EVERY`], so that a Redis outage neither refuses everyone nor floods the log.
pub fn admit_on_error(kind: &'static str, answer: Result<bool, LimiterError>, now: Instant) -> bool {
    let e = match answer {
        Ok(allowed) => return allowed,
        Err(e) => e,
    };
    metrics::counter!("wshub_rate_limit_fail_open_total", "kind" => kind).increment(1);
    let since = FAIL_OPEN_SINCE_LOG.fetch_add(1, Ordering::Relaxed) + 1;
    let mut last = FAIL_OPEN_LAST_LOG.lock();
    let due = match *last {
        None => true,
        Some(t) => now.saturating_duration_since(t) >= FAIL_OPEN_LOG_EVERY,
    };
    if due {
        *last = Some(now);
        FAIL_OPEN_SINCE_LOG.store(0, Ordering::Relaxed);
        tracing::warn!(error = %e, kind, admitted = since, "cluster rate limiter unavailable: admitting (fail open)");
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_rate_and_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 5.0, t0);
        assert_eq!((0..10).filter(|_| b.try_take(t0)).count(), 5, "the burst");
        assert!(!b.try_take(t0));
        assert!(b.try_take(t0 + Duration::from_millis(100)), "one token per 100 ms");
        assert!(!b.try_take(t0 + Duration::from_millis(150)));
        // A long pause refills only up to the burst.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| b.try_take(later)).count(), 5);
    }

    #[test]
    fn leaky_bucket_smooths_a_burst() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut b = LeakyBucket::new(10.0, 3.0, t0);
        assert_eq!((0..10).filter(|_| b.try_add(t0)).count(), 3, "the capacity");
        assert!(!b.try_add(t0 + ms(50)), "half a drop leaked: 2.5 + 1 > 3");
        assert!(b.try_add(t0 + ms(100)), "one drop leaked per 100 ms");
        assert!(!b.try_add(t0 + ms(100)));
        // A full bucket admits a steady 10 per second, never two at once.
        let admitted: Vec<u64> = (1..=100u64).filter(|i| b.try_add(t0 + ms(100 + i * 10))).collect();
        assert_eq!(admitted, (1..=10u64).map(|i| i * 10).collect::<Vec<_>>());
        // Idle time empties the bucket but banks nothing beyond the capacity.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(b.level(later), 0.0);
        assert_eq!((0..10).filter(|_| b.try_add(later)).count(), 3);
        // Time going backwards (a stale `now`) leaks nothing and admits nothing extra.
        assert!(!b.try_add(t0));
    }

    /// The three algorithms against the same burst: 10 per second allowed, 30 events at
    /// once, then one every 10 ms for two seconds (a client that keeps pushing).
    #[test]
    fn algorithms_against_the_same_burst() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let run = |algorithm| {
            let mut l = Limiter::new(algorithm, 10, t0);
            let burst = (0..30).filter(|_| l.try_acquire(t0)).count();
            let first_second = (1..=100u64).filter(|i| l.try_acquire(t0 + ms(i * 10))).count();
            let second_second = (101..=200u64).filter(|i| l.try_acquire(t0 + ms(i * 10))).count();
            (burst, first_second, second_second)
        };
        // A burst of one second's worth, then the steady rate.
        assert_eq!(run(RateLimitAlgorithm::TokenBucket), (10, 10, 10));
        // No burst: one event, then the steady rate only.
        assert_eq!(run(RateLimitAlgorithm::LeakyBucket), (1, 10, 10));
        // The burst, then nothing while it is in the window (the window slides past it
        // during the second second, letting through what its estimate allows).
        let (burst, first, second) = run(RateLimitAlgorithm::SlidingWindow);
        assert_eq!((burst, first), (10, 0));
        assert!((1..=10).contains(&second), "{second}");
        // Never more than the limit in any one-second window, whatever the algorithm but
        // the token bucket (whose burst comes on top of the rate).
        for algorithm in [RateLimitAlgorithm::LeakyBucket, RateLimitAlgorithm::SlidingWindow] {
            let mut l = Limiter::new(algorithm, 10, t0);
            let admitted: Vec<u64> = (0..=300u64).filter(|i| l.try_acquire(t0 + ms(i * 10))).collect();
            for &start in &admitted {
                let within = admitted.iter().filter(|&&t| t >= start && t < start + 100).count();
                assert!(within <= 10, "{algorithm:?}: {within} in the window from {start}0 ms");
            }
        }
    }

    #[test]
    fn keyed_limiters_are_separate_and_swept() {
        let t0 = Instant::now();
        for algorithm in [
            RateLimitAlgorithm::TokenBucket,
            RateLimitAlgorithm::LeakyBucket,
            RateLimitAlgorithm::SlidingWindow,
        ] {
            let mut k = KeyedLimiters::new(algorithm, 1);
            assert!(k.try_acquire(&1_000_000u32, t0));
            assert!(!k.try_acquire(&1_000_000u32, t0), "{algorithm:?}");
            assert!(k.try_acquire(&1_000_001u32, t0), "another key has its own limiter");
            // 1,024 keys in all: the next call sweeps.
            for i in 0..1022u32 {
                k.try_acquire(&i, t0);
            }
            k.try_acquire(&5000u32, t0 + Duration::from_secs(3));
            assert_eq!(k.len(), 1, "{algorithm:?}: idle keys swept");
        }
        let a: RateLimitAlgorithm = serde_json::from_str("\"leaky_bucket\"").unwrap();
        assert_eq!(a, RateLimitAlgorithm::LeakyBucket);
        assert_eq!(RateLimitAlgorithm::default(), RateLimitAlgorithm::TokenBucket);
    }

    #[test]
    fn fail_open_admits_on_errors_and_obeys_answers() {
        let t0 = Instant::now();
        assert!(admit_on_error("test", Ok(true), t0));
        assert!(!admit_on_error("test", Ok(false), t0));
        assert!(admit_on_error("test", Err(LimiterError::Timeout), t0));
        assert!(admit_on_error("test", Err(LimiterError::Unavailable("down".into())), t0));
    }

    #[test]
    fn scope_names() {
        let s: RateLimitScope = serde_json::from_str("\"cluster\"").unwrap();
        assert_eq!(s, RateLimitScope::Cluster);
        assert_eq!(RateLimitScope::default(), RateLimitScope::Node);
        assert!(serde_json::from_str::<RateLimitScope>("\"global\"").is_err());
    }

    #[test]
    fn window_limits_any_window() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::new(3, Duration::from_secs(1), t0);
        assert!(w.try_hit(t0) && w.try_hit(t0) && w.try_hit(t0));
        assert!(!w.try_hit(t0 + Duration::from_millis(500)));
        assert!(!w.try_hit(t0 + Duration::from_millis(999)));
        // The three events at t0 are out of the window [0.1 s, 1.1 s]: one more fits (the
        // estimate is 3 * 0.9 = 2.7).
        assert!(w.try_hit(t0 + Duration::from_millis(1100)));
        assert!(!w.try_hit(t0 + Duration::from_millis(1100)));
        // Two windows later everything is forgotten.
        assert!(w.try_hit(t0 + Duration::from_millis(2100)));
        assert!(!w.is_idle(t0 + Duration::from_millis(2100)));
    }

    #[test]
    fn keyed_windows_are_separate_and_swept() {
        let t0 = Instant::now();
        let mut k = KeyedWindows::new(1, Duration::from_secs(1));
        assert!(k.try_hit(&"a", t0));
        assert!(!k.try_hit(&"a", t0));
        assert!(k.try_hit(&"b", t0), "another key has its own window");
        for i in 0..2000u32 {
            k.try_hit(&"x", t0);
            let _ = i;
        }
        let mut many = KeyedWindows::new(1, Duration::from_secs(1));
        for i in 0..1024u32 {
            many.try_hit(&i, t0);
        }
        many.try_hit(&5000u32, t0 + Duration::from_secs(3));
        assert_eq!(many.len(), 1, "idle keys swept");
    }
}
