//! Stream recovery, as pure functions over offsets: whether what history returned covers
//! a client's gap, and how publications buffered while history was read join it.
//!
//! Kept apart from the hub and the session so that both stream subscriptions and the
//! stream catch-up of keyed kinds decide the same way, and so that the decisions can be
//! tested without a broker or a connection.

use wshub_protocol::Publication;

/// A gap between history and the buffered publications: the client must resubscribe
/// (3010 insufficient state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("insufficient state: publication {expected} missing")]
pub struct Gap {
    pub expected: u64,
}

/// Whether `publications` (read from history after offset `since`) hold every offset
/// from `since + 1` up to the stream's `top`, with nothing missing between them.
pub fn contiguous(since: u64, publications: &[Publication], top: u64) -> bool {
    let first_ok = publications
        .first()
        .map_or(top == since, |p| Some(p.offset) == since.checked_add(1));
    let inner_ok = publications.windows(2).all(|w| w[0].offset.checked_add(1) == Some(w[1].offset));
    let last_ok = publications.last().is_none_or(|p| p.offset == top);
    first_ok && inner_ok && last_ok
}

/// Joins publications buffered during a recovery to a client that holds everything up to
/// `delivered`: those at or below it (already in the reply) and those outside the stream
/// (offset 0) are dropped, the rest must follow on without a hole. Returns what to send,
/// in order, and the offset the client then holds.
pub fn merge_buffered<T>(delivered: u64, buffered: Vec<T>, offset: impl Fn(&T) -> u64) -> Result<(Vec<T>, u64), Gap> {
    let mut top = delivered;
    let mut out = Vec::with_capacity(buffered.len());
    for item in buffered {
        let o = offset(&item);
        if o == 0 || o <= top {
            continue;
        }
        if Some(o) != top.checked_add(1) {
            return Err(Gap {
                expected: top.saturating_add(1),
            });
        }
        top = o;
        out.push(item);
    }
    Ok((out, top))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pubs(offsets: &[u64]) -> Vec<Publication> {
        offsets
            .iter()
            .map(|&offset| Publication {
                offset,
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn nothing_missed_is_contiguous_only_at_the_top() {
        assert!(contiguous(5, &[], 5));
        assert!(!contiguous(5, &[], 6));
    }

    #[test]
    fn a_full_run_up_to_the_top_is_contiguous() {
        assert!(contiguous(5, &pubs(&[6, 7, 8]), 8));
    }

    #[test]
    fn a_missing_first_inner_or_last_offset_is_not() {
        assert!(!contiguous(5, &pubs(&[7, 8]), 8), "first missing");
        assert!(!contiguous(5, &pubs(&[6, 8]), 8), "inner missing");
        assert!(!contiguous(5, &pubs(&[6, 7]), 8), "top missing");
        assert!(!contiguous(5, &pubs(&[6, 6, 7]), 7), "a repeat");
    }

    #[test]
    fn the_largest_offset_does_not_overflow() {
        assert!(!contiguous(u64::MAX, &pubs(&[0]), 0));
        assert_eq!(merge_buffered(u64::MAX, vec![1u64], |o| *o), Ok((vec![], u64::MAX)));
    }

    #[test]
    fn merge_drops_what_the_client_has_and_unpositioned_ones() {
        let (out, top) = merge_buffered(5, vec![0u64, 4, 5, 6, 7], |o| *o).unwrap();
        assert_eq!(out, vec![6, 7]);
        assert_eq!(top, 7);
    }

    #[test]
    fn merge_of_nothing_keeps_the_position() {
        assert_eq!(merge_buffered(9, Vec::<u64>::new(), |o| *o), Ok((vec![], 9)));
    }

    #[test]
    fn merge_reports_the_first_hole() {
        assert_eq!(merge_buffered(5, vec![6u64, 8], |o| *o), Err(Gap { expected: 7 }));
        assert_eq!(merge_buffered(5, vec![7u64], |o| *o), Err(Gap { expected: 6 }));
    }
}
