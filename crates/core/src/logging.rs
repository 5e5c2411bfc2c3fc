//! Log lines a client can cause, limited: one of a kind per second, with the count of those
//! held back, so that a flood of bad requests cannot flood the log.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Lets one log line of a kind through per second, counting the ones held back.
pub struct LogLimiter(Mutex<Option<(Instant, u64)>>);

impl Default for LogLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl LogLimiter {
    pub const fn new() -> Self {
        LogLimiter(parking_lot::const_mutex(None))
    }

    /// `Some(lines suppressed since the last one)` when this line may be logged.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut g = self.0.lock();
        match &mut *g {
            Some((last, suppressed)) if now.saturating_duration_since(*last) < Duration::from_secs(1) => {
                *suppressed += 1;
                None
            }
            slot => {
                let suppressed = slot.map_or(0, |(_, n)| n);
                *slot = Some((now, 0));
                Some(suppressed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_a_second_with_the_count_held_back() {
        let l = LogLimiter::new();
        let t = Instant::now();
        assert_eq!(l.admit(t), Some(0));
        assert_eq!(l.admit(t + Duration::from_millis(10)), None);
        assert_eq!(l.admit(t + Duration::from_millis(900)), None);
        assert_eq!(l.admit(t + Duration::from_secs(1)), Some(2));
    }
}
