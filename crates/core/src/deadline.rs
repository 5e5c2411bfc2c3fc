//! Moments computed from numbers someone else chose: a token's `exp` or `expire_at`, an API
//! `refresh`'s `expire_at`, a proxy's `expire_at`.
//!
//! Why: `Instant + Duration` panics on overflow, and a token with `exp` = 2^64−1 (valid,
//! signed, just far away) made exactly that sum in the connection's task, which died
//! without a close frame (issue #26). Every such computation goes through these functions,
//! which saturate: a moment further than [`FARTHEST`] away is treated as [`FARTHEST`] away
//! (a deadline that never comes in a process's life), and a `ttl` past `u32` is `u32::MAX`.

use std::time::{Duration, Instant};

/// The furthest a deadline is set: about a century.
pub const FARTHEST: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `t + d`, never panicking: `d` is capped at [`FARTHEST`], then halved until the sum fits
/// the platform's `Instant` (on Linux a century always fits at once).
pub fn later(t: Instant, d: Duration) -> Instant {
    let mut d = d.min(FARTHEST);
    loop {
        if let Some(at) = t.checked_add(d) {
            return at;
        }
        d /= 2;
    }
}

/// The monotonic moment of Unix time `unix` (seconds), seen at `now_mono` = `now_unix`; a
/// moment in the past is `now_mono`.
pub fn mono_at(now_mono: Instant, now_unix: u64, unix: u64) -> Instant {
    later(now_mono, Duration::from_secs(unix.saturating_sub(now_unix)))
}

/// The protocol's `ttl` (seconds, `u32`) from `now_unix` to `expire_at`: 0 when past,
/// `u32::MAX` when further than that (instead of the low 32 bits of the difference).
pub fn ttl(expire_at: u64, now_unix: u64) -> u32 {
    u32::try_from(expire_at.saturating_sub(now_unix)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn extremes() {
        let now = Instant::now();
        assert_eq!(later(now, Duration::MAX), now + FARTHEST);
        assert_eq!(mono_at(now, 1_700_000_000, u64::MAX), now + FARTHEST);
        assert_eq!(mono_at(now, 1_700_000_000, 0), now, "in the past: now");
        assert_eq!(mono_at(now, 1_700_000_000, 1_700_000_060), now + Duration::from_secs(60));
        assert_eq!(ttl(u64::MAX, 1_700_000_000), u32::MAX);
        assert_eq!(ttl(1_700_000_060, 1_700_000_000), 60);
        assert_eq!(ttl(0, 1_700_000_000), 0);
    }

    fn extreme_u64() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0u64),
            Just(u64::MAX),
            Just(u64::MAX - 1),
            Just(i64::MAX as u64),
            Just(u64::from(u32::MAX)),
            Just(u64::from(u32::MAX) + 1),
            any::<u64>(),
        ]
    }

    proptest! {
        /// No number panics, a later moment is never earlier, and nothing is further than
        /// [`FARTHEST`].
        #[test]
        fn never_panic_and_monotonic(now_unix in extreme_u64(), a in extreme_u64(), b in extreme_u64(), nanos in 0u32..1_000_000_000) {
            let now = Instant::now();
            let (lo, hi) = (a.min(b), a.max(b));
            let (m_lo, m_hi) = (mono_at(now, now_unix, lo), mono_at(now, now_unix, hi));
            prop_assert!(now <= m_lo && m_lo <= m_hi && m_hi <= now + FARTHEST);
            prop_assert!(ttl(lo, now_unix) <= ttl(hi, now_unix));
            let d = Duration::new(a, nanos);
            let at = later(m_hi, d);
            prop_assert!(at >= m_hi && at <= m_hi + FARTHEST);
        }
    }
}
