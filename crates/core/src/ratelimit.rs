//! Rate limiters, free of IO and clocks: the caller passes the time.
//!
//! - [`TokenBucket`]: a steady rate with bursts; used per connection for commands
//!   (`client.command_rate_limit`), per node for new connections
//!   (`client.connection_rate_limit`) and per API key (`http_api.rate_limit`).
//! - [`SlidingWindow`]: at most N events in any window of length W (two-bucket
//!   approximation, exact at bucket edges); used per client IP for new connections
//!   (`client.connection_rate_limit_per_ip`), where a burst allowance would let a single
//!   address open a storm of connections at once.
//! - [`KeyedWindows`]: sliding windows per key with bounded memory.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

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
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
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
