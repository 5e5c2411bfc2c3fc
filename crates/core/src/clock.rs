//! Time and stream epochs for the in-memory engines (streams, maps): a clock that tests
//! move by hand, and the random epoch a new stream starts under. Apart from the engines so
//! that each engine depends on it, not on the other.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The clock of expiry; tests drive it by hand.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
}

/// The system's monotonic clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock moved by hand, for tests of expiry.
#[derive(Debug)]
pub struct ManualClock(Mutex<Instant>);

impl ManualClock {
    pub fn new() -> Self {
        ManualClock(Mutex::new(Instant::now()))
    }
    pub fn advance(&self, d: Duration) {
        *self.0.lock() += d;
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.0.lock()
    }
}

/// The epoch of a new stream: random, so that a stream recreated after a loss is told apart.
pub(crate) fn new_epoch() -> String {
    let n: u32 = rand::random();
    format!("{n:08x}")
}
