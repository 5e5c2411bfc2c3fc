//! The `*` matchers: `Wildcard` (origin check, `channels` API) and `ChannelPattern` over it.
//!
//! Input: a flag byte, then the pattern and the subject separated by the first `\0` (both
//! read as lossy UTF-8). Checks:
//! - short inputs agree with the recursive definition of `*` (memoised, so that the
//!   reference itself stays polynomial), with and without ASCII case folding;
//! - `ChannelPattern` is `Wildcard` but for the empty pattern (matches everything) and the
//!   length bound (twice the maximum channel length);
//! - the work stays linear: the subject repeated to 64 KiB is matched in less than a generous
//!   bound proportional to `pattern.len() + subject.len()` (over it, the best of three runs
//!   counts, so that a descheduled process on a busy machine does not fail). A backtracking
//!   matcher takes seconds here on `*a*a*a*a*b`; libFuzzer's `-timeout` is the second guard.
#![no_main]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use wshub_core::channel::ChannelPattern;
use wshub_protocol::wildcard::Wildcard;

const MAX_CHANNEL: usize = 255;
const LONG: usize = 64 * 1024;

/// The recursive definition of `*`, memoised on (pattern left, subject left).
fn reference(p: &[u8], s: &[u8]) -> bool {
    fn go<'a>(p: &'a [u8], s: &'a [u8], memo: &mut HashMap<(usize, usize), bool>) -> bool {
        if let Some(&r) = memo.get(&(p.len(), s.len())) {
            return r;
        }
        let r = match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => go(rest, s, memo) || (!s.is_empty() && go(p, &s[1..], memo)),
            Some((c, rest)) => matches!(s.split_first(), Some((d, srest)) if c == d && go(rest, srest, memo)),
        };
        memo.insert((p.len(), s.len()), r);
        r
    }
    go(p, s, &mut HashMap::new())
}

/// How long `f` takes: the first run, or the best of three when that is over `bound`.
fn time_within(bound: Duration, f: impl Fn() -> bool) -> Duration {
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        std::hint::black_box(f());
        best = best.min(t.elapsed());
        if best < bound {
            break;
        }
    }
    best
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let ignore_case = flags & 1 == 1;
    let (pattern, subject) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let pattern = String::from_utf8_lossy(pattern);
    let subject = String::from_utf8_lossy(subject);
    let w = Wildcard::new(&pattern, ignore_case);
    let got = w.matches(&subject);

    if pattern.len() <= 64 && subject.len() <= 128 {
        let want = if ignore_case {
            reference(pattern.to_ascii_lowercase().as_bytes(), subject.to_ascii_lowercase().as_bytes())
        } else {
            reference(pattern.as_bytes(), subject.as_bytes())
        };
        assert_eq!(got, want, "pattern {pattern:?} subject {subject:?} ignore_case {ignore_case}");
    }

    match ChannelPattern::new(&pattern, MAX_CHANNEL) {
        Ok(cp) => {
            assert!(pattern.len() <= 2 * MAX_CHANNEL);
            let want = pattern.is_empty() || Wildcard::new(&pattern, false).matches(&subject);
            assert_eq!(cp.matches(&subject), want);
        }
        Err(_) => assert!(pattern.len() > 2 * MAX_CHANNEL),
    }

    // Linear time: a long subject built from the fuzzed one (or from the pattern's bytes
    // when the subject is empty, which is what makes prefixes and segments recur).
    let unit: &str = if !subject.is_empty() {
        &subject
    } else if !pattern.is_empty() {
        &pattern
    } else {
        return;
    };
    let long = unit.repeat(LONG / unit.len() + 1);
    let bound = Duration::from_millis(20) + Duration::from_nanos(200) * u32::try_from(pattern.len() + long.len()).unwrap_or(u32::MAX);
    let took = time_within(bound, || w.matches(&long));
    assert!(
        took < bound,
        "{took:?} for a {} byte pattern on {} bytes (bound {bound:?})",
        pattern.len(),
        long.len()
    );
});
