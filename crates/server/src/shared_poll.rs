//! The runtime half of shared poll ([`wshub_core::subscription::shared_poll::manager`]):
//! one task per node sleeps until the next request is due (or a track wakes it), and
//! runs each due backend request in its own task, at most `shared_poll.concurrency_limit`
//! at once across channels. A request waiting for a permit delays only its own channel's
//! next cycle (the core schedules a channel's next cycle after its last batch).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};
use wshub_core::node::Node;

/// When nothing is tracked, the task still looks this often (a track wakes it anyway).
const IDLE: Duration = Duration::from_secs(5);

/// Starts the node's shared poll driver (once per node: later calls do nothing). Must be
/// called inside a runtime.
pub fn start(node: &Arc<Node>) {
    let wake = Arc::new(Notify::new());
    let w = wake.clone();
    if node.shared_poll.has_waker() {
        return;
    }
    node.shared_poll.set_waker(Arc::new(move || w.notify_one()));
    let limit = Arc::new(Semaphore::new(node.config.shared_poll.concurrency()));
    let weak = Arc::downgrade(node);
    tokio::spawn(async move {
        loop {
            let Some(node) = weak.upgrade() else { return };
            let now = Instant::now();
            let unix = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            let due = node.shared_poll.take_due(now, unix);
            for (channel, keys) in group(due.gone) {
                let n = node.clone();
                tokio::spawn(async move { n.shared_poll_unsubscribe(&channel, &keys).await });
            }
            for (channel, poll) in due.polls {
                let (n, limit) = (node.clone(), limit.clone());
                tokio::spawn(async move {
                    let Ok(_permit) = limit.acquire().await else { return };
                    wshub_core::subscription::shared_poll::manager::refresh(&n, &channel, poll).await;
                });
            }
            let sleep = node
                .shared_poll
                .next_deadline(Instant::now())
                .map_or(IDLE, |d| d.saturating_duration_since(Instant::now()));
            drop(node);
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = wake.notified() => {}
            }
        }
    });
}

/// (channel, key) pairs by channel.
fn group(pairs: Vec<(String, String)>) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for (c, k) in pairs {
        match out.iter_mut().find(|(x, _)| *x == c) {
            Some((_, keys)) => keys.push(k),
            None => out.push((c, vec![k])),
        }
    }
    out
}
