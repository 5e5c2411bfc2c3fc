//! The stream kind (Centrifugo's default subscription): a positioned subscriber reads the
//! channel's stream top, or recovers what it missed after a position it holds, while the
//! hub buffers live publications ([`crate::hub::Hub::finish_recovery`] joins them).

use std::time::Duration;

use wshub_protocol::{Format, Publication};

use super::recovery;
use crate::engine::{Broker, EngineError, HistoryQuery, StreamPosition};

/// What reading the stream at subscribe time found.
#[derive(Debug, Default, PartialEq)]
pub struct Catchup {
    /// A position was given (the subscribe asked to recover).
    pub was_recovering: bool,
    /// Every publication after that position is in `publications`.
    pub recovered: bool,
    /// The reply's position: the client's own when recovered, the stream top otherwise.
    pub offset: u64,
    pub epoch: String,
    /// What the client missed, when recovered; empty otherwise.
    pub publications: Vec<Publication>,
    /// The stream top: the hub turns the subscriber live from here.
    pub top: u64,
}

/// The limits of one recovery.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `client.recovery_max_publication_limit` (0: none). More missed than this is not
    /// recovered.
    pub max_publications: usize,
    /// Bytes the reply may still take (the client's queue); `None`: no limit.
    pub reply_budget: Option<usize>,
    /// The read keeps the stream's position alive this long.
    pub meta_ttl: Duration,
}

/// An upper bound of the encoded size of publications in a reply.
pub fn publications_bound(pubs: &[Publication]) -> usize {
    pubs.iter().map(|p| crate::node::publication_size_bound("", p)).sum()
}

/// Reads the stream of `channel` for a positioned subscriber; with `since`, what came after
/// it. A `since` whose epoch the stream no longer has is not an error: the subscriber is
/// told the top, unrecovered.
pub async fn catch_up(broker: &dyn Broker, channel: &str, since: Option<StreamPosition>, limits: Limits) -> Result<Catchup, EngineError> {
    let cap = limits.max_publications;
    // One more than the cap: more than the cap missed means not recovered.
    let limit = match (&since, cap) {
        (None, _) => 0,
        (Some(_), 0) => -1,
        (Some(_), cap) => i64::try_from(cap).unwrap_or(i64::MAX).saturating_add(1),
    };
    let query = HistoryQuery {
        since: since.clone(),
        limit,
        reverse: false,
        meta_ttl: limits.meta_ttl,
    };
    let Some(since) = since else {
        let h = broker.history(channel, query).await?;
        return Ok(Catchup {
            offset: h.position.offset,
            top: h.position.offset,
            epoch: h.position.epoch,
            ..Default::default()
        });
    };
    match broker.history(channel, query).await {
        Ok(h) => {
            let top = h.position.offset;
            let recovered = recovery::contiguous(since.offset, &h.publications, top)
                && (cap == 0 || h.publications.len() <= cap)
                && limits.reply_budget.is_none_or(|b| publications_bound(&h.publications) <= b);
            Ok(Catchup {
                was_recovering: true,
                recovered,
                offset: if recovered { since.offset } else { top },
                epoch: h.position.epoch,
                publications: if recovered { h.publications } else { Vec::new() },
                top,
            })
        }
        Err(EngineError::UnrecoverablePosition) => {
            let top = broker.history(channel, HistoryQuery::default()).await?.position;
            Ok(Catchup {
                was_recovering: true,
                offset: top.offset,
                top: top.offset,
                epoch: top.epoch,
                ..Default::default()
            })
        }
        Err(e) => Err(e),
    }
}

/// Reads the stream of `channel` for a subscriber in cache recovery mode
/// (`force_recovery_mode: "cache"`): it wants the channel's latest publication, not what it
/// missed. `since` is the position the client holds (offset 0 when it holds none). Without
/// a tags filter only the newest publication is read; with one, the newest it accepts among
/// the last `max_publications` (0: all), as Centrifugo.
pub async fn catch_up_cache(
    broker: &dyn Broker,
    channel: &str,
    since: StreamPosition,
    filter: Option<&wshub_protocol::FilterNode>,
    limits: Limits,
) -> Result<Catchup, EngineError> {
    let limit = match (filter, limits.max_publications) {
        (None, _) => 1,
        (Some(_), 0) => -1,
        (Some(_), cap) => i64::try_from(cap).unwrap_or(i64::MAX),
    };
    let query = HistoryQuery {
        since: None,
        limit,
        reverse: true,
        meta_ttl: limits.meta_ttl,
    };
    let h = broker.history(channel, query).await?;
    let latest = h.publications.first().map(|p| p.offset);
    let wanted = match filter {
        None => h.publications.into_iter().next(),
        Some(f) => h.publications.into_iter().find(|p| crate::filter::matches(f, &p.tags)),
    };
    // A filter that accepts none of them: as if the stream had no publication.
    let latest = latest.filter(|_| wanted.is_some());
    let (publications, recovered) = cache_recovered(latest, wanted, &h.position, &since);
    let top = h.position.offset;
    Ok(Catchup {
        was_recovering: true,
        recovered,
        offset: if recovered { since.offset } else { top },
        epoch: h.position.epoch,
        publications,
        top,
    })
}

/// Centrifugo's verdict on a cache recovery: `latest` is the offset of the stream's newest
/// publication (`None`: it has none, or none the subscriber's filter accepts), `wanted` the
/// publication to give (the newest the filter accepts). Recovered when the newest
/// publication is the stream's top (the cache holds the latest state); it is sent unless
/// the client already holds exactly that position. With no publication, recovered only when
/// the client holds the top already.
pub fn cache_recovered(
    latest: Option<u64>,
    wanted: Option<Publication>,
    top: &StreamPosition,
    since: &StreamPosition,
) -> (Vec<Publication>, bool) {
    let has_same = since.offset > 0 && since.offset == top.offset && since.epoch == top.epoch;
    let Some(latest) = latest else {
        return (Vec::new(), has_same);
    };
    let recovered = latest == top.offset;
    match wanted {
        Some(p) if recovered && !has_same => (vec![p], true),
        _ => (Vec::new(), recovered),
    }
}

/// Shapes recovered publications for one subscriber: those its tags filter rejects are
/// left out (the stream position still covers them), and with delta each goes out as a
/// delta of the one before. Returns them with the delta base the subscriber's SDK then
/// holds (the last one's offset and data), when delta is on.
pub fn for_subscriber(
    mut publications: Vec<Publication>,
    filter: Option<&wshub_protocol::FilterNode>,
    delta: bool,
    format: Format,
) -> (Vec<Publication>, Option<(u64, bytes::Bytes)>) {
    crate::delta::clear_marks(&mut publications);
    if let Some(f) = filter {
        publications.retain(|p| crate::filter::matches(f, &p.tags));
    }
    let base = publications.last().map(|p| (p.offset, p.data.clone())).filter(|_| delta);
    if delta {
        publications = crate::delta::recovered(publications, format);
    }
    (publications, base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64, epoch: &str) -> StreamPosition {
        StreamPosition {
            offset,
            epoch: epoch.into(),
        }
    }

    fn publication(offset: u64) -> Publication {
        Publication {
            offset,
            ..Default::default()
        }
    }

    #[test]
    fn cache_gives_the_latest_publication_to_a_client_without_it() {
        let (pubs, recovered) = cache_recovered(Some(7), Some(publication(7)), &at(7, "e"), &at(0, ""));
        assert!(recovered);
        assert_eq!(pubs, vec![publication(7)]);
        // An older position, or another epoch: the same answer.
        let (pubs, recovered) = cache_recovered(Some(7), Some(publication(7)), &at(7, "e"), &at(3, "old"));
        assert!(recovered);
        assert_eq!(pubs.len(), 1);
    }

    #[test]
    fn cache_gives_nothing_to_a_client_holding_the_top() {
        let (pubs, recovered) = cache_recovered(Some(7), Some(publication(7)), &at(7, "e"), &at(7, "e"));
        assert!(recovered);
        assert!(pubs.is_empty());
        // The same offset in another epoch is not the same state.
        let (pubs, _) = cache_recovered(Some(7), Some(publication(7)), &at(7, "e"), &at(7, "x"));
        assert_eq!(pubs.len(), 1);
    }

    #[test]
    fn an_empty_cache_is_recovered_only_for_a_client_at_the_top() {
        assert_eq!(cache_recovered(None, None, &at(4, "e"), &at(0, "")), (vec![], false));
        assert_eq!(cache_recovered(None, None, &at(4, "e"), &at(4, "e")), (vec![], true));
        // Offset 0 is no position, even at an empty stream's top.
        assert_eq!(cache_recovered(None, None, &at(0, "e"), &at(0, "e")), (vec![], false));
    }

    #[test]
    fn a_newest_publication_below_the_top_is_not_the_cached_state() {
        // History trimmed by its TTL while the top stayed: the state is gone.
        assert_eq!(
            cache_recovered(Some(5), Some(publication(5)), &at(7, "e"), &at(0, "")),
            (vec![], false)
        );
    }

    #[test]
    fn with_a_filter_the_newest_accepted_one_goes_out() {
        // The newest publication (7) is the top, the filter accepts only 5: 5 is sent.
        let (pubs, recovered) = cache_recovered(Some(7), Some(publication(5)), &at(7, "e"), &at(0, ""));
        assert!(recovered);
        assert_eq!(pubs, vec![publication(5)]);
    }
}
