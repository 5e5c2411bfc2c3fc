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
        admit(&mut self.0.lock(), now)
    }
}

/// When a kind last logged, and the lines held back since.
type Slot = Option<(Instant, u64)>;

fn admit(slot: &mut Slot, now: Instant) -> Option<u64> {
    match slot {
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

/// One [`LogLimiter`] slot per kind of refusal (a handful of static names).
static REFUSALS: Mutex<Vec<(&'static str, Slot)>> = parking_lot::const_mutex(Vec::new());

/// Logs a refused request at info with its kind and reason as fields (`refusal`, `reason`,
/// `peer`, `suppressed`: what a JSON log's reader filters on), at most one line a second
/// per kind, so that a flood of refusals of one kind neither floods the log nor hides the
/// other kinds. The caller's span adds the connection's client and user where there is one.
pub fn refusal(kind: &'static str, reason: &str, peer: Option<std::net::IpAddr>) {
    if let Some(suppressed) = admit_refusal(kind, Instant::now()) {
        tracing::info!(
            refusal = kind,
            reason,
            peer = peer.map(tracing::field::display),
            suppressed,
            "request refused"
        );
    }
}

fn admit_refusal(kind: &'static str, now: Instant) -> Option<u64> {
    let mut all = REFUSALS.lock();
    let i = match all.iter().position(|(k, _)| *k == kind) {
        Some(i) => i,
        None => {
            all.push((kind, None));
            all.len() - 1
        }
    };
    admit(&mut all[i].1, now)
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

    #[test]
    fn each_kind_of_refusal_has_its_own_second() {
        let t = Instant::now();
        assert_eq!(admit_refusal("test_a", t), Some(0));
        assert_eq!(admit_refusal("test_b", t), Some(0), "another kind is not held back");
        assert_eq!(admit_refusal("test_a", t + Duration::from_millis(5)), None);
        assert_eq!(admit_refusal("test_a", t + Duration::from_secs(1)), Some(1));
    }
}
