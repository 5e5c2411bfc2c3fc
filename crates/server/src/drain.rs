//! Graceful drain (DESIGN.md, "Shutdown and drain"): on the first signal `/ready` turns 503
//! and new WebSocket upgrades are refused (the listener goes on answering HTTP until the
//! drain is over: [`crate::lifecycle`]), then connected clients are
//! closed with 3001 in randomised batches spread over a drain window, so that a rolling
//! restart does not turn into a reconnect storm on the other nodes. Each session releases
//! its subscriptions and presence as it closes (leaves are pushed).

use std::time::Duration;

use rand::seq::SliceRandom;
use tokio::time::Instant;
use wshub_core::connection::Control;
use wshub_core::node::Node;
use wshub_protocol::codes::disconnect::SHUTDOWN;

use crate::state::Shared;

/// Batches a drain is split into (fewer when there are fewer clients).
const BATCHES: usize = 20;

/// Closes every client in randomised batches over `window`, then waits (until `deadline`)
/// for the connections to end. Returns the connections still open at the end.
pub async fn drain(shared: &Shared, node: &Node, window: Duration, deadline: Instant) -> usize {
    shared.set_ready(false);
    let mut clients = node.all_connections();
    clients.shuffle(&mut rand::thread_rng());
    let n = clients.len();
    let batches = BATCHES.min(n.max(1));
    let per_batch = n.div_ceil(batches).max(1);
    let start = Instant::now();
    tracing::info!(clients = n, batches, window_ms = window.as_millis() as u64, "draining");
    for (i, batch) in clients.chunks(per_batch).enumerate() {
        // Batch i goes out at a random moment of its slice of the window.
        let slice = window / batches as u32;
        let jitter = slice.mul_f64(rand::random::<f64>());
        let at = (start + slice * i as u32 + jitter).min(deadline);
        tokio::time::sleep_until(at).await;
        for c in batch {
            c.control(Control::Disconnect {
                code: SHUTDOWN,
                reason: "shutdown".into(),
            });
        }
    }
    // Connections end on their own tasks; the last one to end wakes this.
    let _ = tokio::time::timeout_at(deadline, shared.connections.none_left()).await;
    let left = shared.connections();
    tracing::info!(left, elapsed_ms = start.elapsed().as_millis() as u64, "drain done");
    left
}
