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
