//! Clients watching one channel through failures (a killed node, a Redis failover): what
//! each received, how it was subscribed again, and the count, against what the backend had
//! acknowledged, of what the clients lost.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use wshub_client::{Client, ClientConfig, ClientEvent};

use super::{wait_until, LIMIT};

/// What one client saw.
#[derive(Default)]
pub struct Seen {
    /// `n` of each publication received, in order of arrival, with its offset.
    pub publications: Vec<(u64, u64)>,
    /// Each `Subscribed`: (recovered, was_recovering).
    pub subscribed: Vec<(bool, bool)>,
    /// The codes of the server's disconnects (from `Connecting` after a connection).
    pub disconnects: Vec<u16>,
    /// When each `Connected` came (the first one included).
    pub connected: Vec<Instant>,
}

/// A client and what it saw; dropping it disconnects it.
pub struct Watched {
    pub client: Client,
    pub seen: Arc<Mutex<Seen>>,
    task: JoinHandle<()>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.client.disconnect();
        self.task.abort();
    }
}

/// A client config with `token` that reconnects quickly (100 ms, backing off to `max_delay`).
pub fn quick_reconnects(token: String, max_delay: Duration) -> ClientConfig {
    ClientConfig {
        token,
        min_reconnect_delay: Duration::from_millis(100),
        max_reconnect_delay: max_delay,
        ..Default::default()
    }
}

/// A client on `url`, subscribed (recoverable) to `channel`, whose publications carry a
/// number `n`; returns once subscribed.
pub async fn watch(url: &str, config: ClientConfig, channel: &str) -> Watched {
    let (client, mut events) = Client::start(url, config).unwrap();
    client.subscribe(channel, true);
    client.connect();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    let task = tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            let mut s = s.lock().unwrap();
            match e {
                ClientEvent::Publication { data, offset, .. } => {
                    let v: serde_json::Value = serde_json::from_slice(&data).unwrap();
                    s.publications.push((v["n"].as_u64().unwrap(), offset));
                }
                ClientEvent::Subscribed {
                    recovered, was_recovering, ..
                } => s.subscribed.push((recovered, was_recovering)),
                ClientEvent::Connected { .. } => s.connected.push(Instant::now()),
                ClientEvent::Connecting { code, .. } | ClientEvent::Disconnected { code, .. } if code >= 3000 => s.disconnects.push(code),
                _ => {}
            }
        }
    });
    wait_until("a client's first subscription", LIMIT, || {
        !seen.lock().unwrap().subscribed.is_empty()
    })
    .await;
    Watched { client, seen, task }
}

/// What the clients received, against what was acknowledged.
#[derive(Debug, Default, PartialEq)]
pub struct Count {
    /// Acknowledged publications a client never got (summed over clients).
    pub lost: usize,
    /// Publications a client got more than once.
    pub duplicated: usize,
    /// Clients that got a publication before one numbered lower.
    pub out_of_order: usize,
    /// Clients whose offsets skip a number (a publication of the stream, acknowledged or
    /// not, never arrived).
    pub offset_gaps: usize,
}

/// Waits until every client has received the last acknowledged publication (or a deadline
/// passed), then counts, for each, the acknowledged publications it never got, those it
/// got more than once, order, and gaps in its offsets.
pub async fn count_each(clients: &[&Watched], acked: &[u64]) -> Vec<Count> {
    let last = *acked.last().unwrap();
    // Polled with a deadline; past it, the count says what is missing.
    let deadline = Instant::now() + LIMIT;
    while Instant::now() < deadline
        && !clients
            .iter()
            .all(|c| c.seen.lock().unwrap().publications.iter().any(|&(n, _)| n >= last))
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut counts = Vec::with_capacity(clients.len());
    for (i, c) in clients.iter().enumerate() {
        let seen = c.seen.lock().unwrap();
        let ns: Vec<u64> = seen.publications.iter().map(|&(n, _)| n).collect();
        let unique: std::collections::BTreeSet<u64> = ns.iter().copied().collect();
        let missing: Vec<u64> = acked.iter().copied().filter(|n| !unique.contains(n)).collect();
        if !missing.is_empty() {
            println!("client {i}: {} lost, first {:?}", missing.len(), &missing[..missing.len().min(10)]);
        }
        let offsets: Vec<u64> = seen.publications.iter().map(|&(_, o)| o).collect();
        counts.push(Count {
            lost: missing.len(),
            duplicated: ns.len() - unique.len(),
            out_of_order: usize::from(!ns.windows(2).all(|w| w[0] < w[1])),
            offset_gaps: usize::from(!offsets.windows(2).all(|w| w[1] == w[0] + 1)),
        });
    }
    counts
}

/// [`count_each`] summed over the clients.
pub async fn count(clients: &[Watched], acked: &[u64]) -> Count {
    count_each(&clients.iter().collect::<Vec<_>>(), acked)
        .await
        .into_iter()
        .fold(Count::default(), |sum, c| Count {
            lost: sum.lost + c.lost,
            duplicated: sum.duplicated + c.duplicated,
            out_of_order: sum.out_of_order + c.out_of_order,
            offset_gaps: sum.offset_gaps + c.offset_gaps,
        })
}

/// Per client, the acknowledged publications it lacks; and the duplicates over all of them.
pub async fn lost(clients: &[&Watched], acked: &[u64]) -> (Vec<usize>, usize) {
    let counts = count_each(clients, acked).await;
    (counts.iter().map(|c| c.lost).collect(), counts.iter().map(|c| c.duplicated).sum())
}
