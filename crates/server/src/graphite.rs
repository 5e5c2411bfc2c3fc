//! `graphite.*`: every `interval` the node's metrics (every series of `/metrics`, the
//! `process_*` ones included) go to a Graphite (carbon) server in its plaintext protocol,
//! one TCP connection per push, as Centrifugo's exporter does: paths
//! `<prefix>.<node name>.<namespace>.<subsystem>.<name>[.<value>][.<label>.<value>…]`
//! (labels as `;label=value` tags with `graphite.tags`), counters as their increase over the
//! interval written as integers, other values with six decimals, and the time of the push.

use std::fmt::Write as _;
use std::sync::Weak;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::AsyncWriteExt as _;

use crate::cluster::Cluster;
use crate::config::Graphite;
use crate::metrics::info::{Aggregator, Item};

/// Time to connect and to write one push (Centrifugo's one second to connect).
const TIMEOUT: Duration = Duration::from_secs(1);

/// What the exporter needs once the node is named.
#[derive(Debug, Clone)]
pub struct Settings {
    pub address: String,
    /// `<prefix>.<node name>`, Centrifugo's way: the prefix without a trailing `.`, the name
    /// with `.` and non-ASCII characters made `_`.
    pub prefix: String,
    pub interval: Duration,
    pub tags: bool,
}

impl Settings {
    pub fn new(c: &Graphite, node_name: &str) -> Self {
        let name: String = node_name.chars().map(|c| if c == '.' || !c.is_ascii() { '_' } else { c }).collect();
        Settings {
            address: format!("{}:{}", c.host, c.port),
            prefix: format!("{}.{name}", c.prefix.trim_end_matches('.')),
            interval: if c.interval.is_zero() {
                Duration::from_secs(10)
            } else {
                c.interval
            },
            tags: c.tags,
        }
    }
}

/// Pushes every `interval` while the cluster lives. A push that fails is logged (at most
/// once a second) and the next one goes on.
pub(crate) fn spawn(settings: Settings, cluster: Weak<Cluster>) {
    tokio::spawn(async move {
        let mut aggregator = Aggregator::default();
        let mut tick = tokio::time::interval(settings.interval);
        // The first tick is at once: the first push is one interval after the start.
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(c) = cluster.upgrade() else { return };
            let text = crate::metrics::info::current_text(&c.node, &c, true);
            drop(c);
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let lines = lines(&settings, &aggregator.items(&text, None), now);
            if let Err(e) = push(&settings.address, lines.as_bytes()).await {
                static LOG: wshub_core::logging::LogLimiter = wshub_core::logging::LogLimiter::new();
                if LOG.admit(std::time::Instant::now()).is_some() {
                    tracing::warn!(address = %settings.address, error = %e, "graphite: metrics not sent");
                }
            }
        }
    });
}

async fn push(address: &str, data: &[u8]) -> std::io::Result<()> {
    let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out");
    let mut s = tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(address))
        .await
        .map_err(|_| timed_out())??;
    tokio::time::timeout(TIMEOUT, async {
        s.write_all(data).await?;
        s.shutdown().await
    })
    .await
    .map_err(|_| timed_out())?
}

/// The plaintext lines of one push.
fn lines(s: &Settings, items: &[Item], now: u64) -> String {
    let mut out = String::new();
    for i in items {
        out.push_str(&s.prefix);
        for p in &i.path {
            out.push('.');
            out.push_str(&path_part(p));
        }
        for (k, v) in &i.labels {
            let _ = if s.tags {
                write!(out, ";{}={}", tag_part(k), tag_part(v))
            } else {
                write!(out, ".{}.{}", path_part(k), path_part(v))
            };
        }
        let _ = if i.counter {
            writeln!(out, " {} {now}", i.value as i64)
        } else {
            writeln!(out, " {:.6} {now}", i.value)
        };
    }
    out
}

/// A label value may hold what the plaintext protocol reads as a separator (a space ends
/// the path; a newline the line): those become `_` (Centrifugo writes them as they are,
/// which splits the line).
fn path_part(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_whitespace() || c.is_control() { '_' } else { c })
        .collect()
}

/// In a tag, `;` and `=` separate too.
fn tag_part(s: &str) -> String {
    path_part(s).replace([';', '='], "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_with_labels_as_path_or_as_tags() {
        let mut c = Graphite {
            prefix: "centrifugo.".into(),
            ..Default::default()
        };
        let items = [
            Item {
                path: vec!["centrifugo".into(), "client".into(), "num_reply_errors".into()],
                labels: vec![("code".into(), "101".into()), ("method".into(), "connect".into())],
                value: 3.0,
                counter: true,
            },
            Item {
                path: vec!["centrifugo".into(), "node".into(), "num_clients".into()],
                labels: vec![],
                value: 2.5,
                counter: false,
            },
        ];
        let s = Settings::new(&c, "host.example:8000");
        assert_eq!(s.prefix, "centrifugo.host_example:8000");
        assert_eq!(
            lines(&s, &items, 7),
            "centrifugo.host_example:8000.centrifugo.client.num_reply_errors.code.101.method.connect 3 7\n\
             centrifugo.host_example:8000.centrifugo.node.num_clients 2.500000 7\n"
        );
        c.tags = true;
        let s = Settings::new(&c, "n");
        assert_eq!(
            lines(&s, &items[..1], 7),
            "centrifugo.n.centrifugo.client.num_reply_errors;code=101;method=connect 3 7\n"
        );
    }
}
