//! A backend publishing numbered publications (`{"n": 1}`, `{"n": 2}`…) through the HTTP
//! API, for tests that count what every client received against what was acknowledged.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::task::JoinHandle;

/// The numbers acknowledged, and each failed call's number with why.
pub type Published = (Vec<u64>, Vec<(u64, String)>);

/// Publishes to one channel at `rate` per second through the API of one of `ports` (round
/// robin), one call at a time. A publication is acknowledged when the call answered 200
/// with an offset; any other answer (a proxy's 502 for a call in flight to a node that
/// died, say) leaves it unacknowledged, and the backend goes on with the next number
/// (publishing it again could duplicate it: the first call may have reached the broker).
pub struct Publisher {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    task: JoinHandle<Published>,
}

impl Publisher {
    /// `api_key`: the nodes' `http_api.key`.
    pub fn start(ports: Vec<u16>, api_key: &str, channel: &str, rate: u64) -> Publisher {
        assert!(!ports.is_empty() && rate > 0);
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let (st, ac) = (stop.clone(), acked.clone());
        let (header, channel) = (format!("X-API-Key: {api_key}\r\n"), channel.to_string());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let (mut ok, mut failed) = (Vec::new(), Vec::new());
            let mut n: u64 = 0;
            while !st.load(Ordering::Relaxed) {
                tick.tick().await;
                n += 1;
                let port = ports[(n as usize) % ports.len()];
                let body = json!({"channel": channel, "data": {"n": n}}).to_string();
                match crate::http(port, "POST", "/api/publish", &header, &body).await {
                    Ok((200, text)) => match serde_json::from_str::<serde_json::Value>(&text) {
                        Ok(r) if r["result"]["offset"].is_u64() => {
                            ok.push(n);
                            ac.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => failed.push((n, format!("200 {text}"))),
                    },
                    Ok((status, text)) => failed.push((n, format!("{status} {text}"))),
                    Err(e) => failed.push((n, e)),
                }
            }
            (ok, failed)
        });
        Publisher { stop, acked, task }
    }

    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until `more` further publications are acknowledged.
    pub async fn run_for(&self, more: u64) {
        let target = self.acked() + more;
        crate::wait_until("acknowledged publications", crate::LIMIT, || self.acked() >= target).await;
    }

    /// Stops; the acknowledged numbers and the failed calls.
    pub async fn stop(self) -> Published {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}
