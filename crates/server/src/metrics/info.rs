//! The `metrics` and `process` objects of each node in the `info` API call. Centrifugo
//! (centrifuge's node with its `eagle` helper) gathers its own Prometheus registry every
//! `node.info_metrics_aggregate_interval` and shares the result with the other nodes in its
//! announcements; wshub does the same from the exporter's text, so that both carry the same
//! series under the same keys: only `centrifugo_*` series, counters as their increase over
//! the interval, gauges as read, summaries as sum and count increases and their quantiles,
//! histograms left out.

use std::collections::HashMap;
use std::time::Instant;

use wshub_core::node::{NodeMetrics, NodeProcess};

/// Centrifugo's metrics namespace: eagle's prefix whitelist.
const NAMESPACE: &str = "centrifugo";

/// Keeps the counters' last values to give their increase over each interval (one per
/// consumer: `info`, Graphite).
#[derive(Default)]
pub struct Aggregator {
    previous: HashMap<String, f64>,
}

/// One value of a gathering, as eagle gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Namespace, subsystem, name (the series' name split at its first two `_`), then the
    /// value's own name for summaries (`sum`, `count`, `quantile.99`).
    pub path: Vec<String>,
    /// Label names and values, sorted by name, empty values left out.
    pub labels: Vec<(String, String)>,
    pub value: f64,
    /// A counter (Graphite writes it as an integer).
    pub counter: bool,
}

impl Item {
    /// eagle's flattened key: the path, then each label's name and value, joined by `sep`.
    pub fn key(&self, sep: &str) -> String {
        let labels = self.labels.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()]);
        self.path.iter().map(String::as_str).chain(labels).collect::<Vec<_>>().join(sep)
    }
}

impl Aggregator {
    /// The snapshot of `text` (Prometheus text format) for `info`: the `centrifugo_*`
    /// series; the first one has the counters' totals, as centrifuge's first export at start.
    pub fn snapshot(&mut self, text: &str, interval_seconds: f64) -> NodeMetrics {
        let items = self
            .items(text, Some(NAMESPACE))
            .into_iter()
            .map(|i| (i.key("."), i.value))
            .collect();
        NodeMetrics {
            interval: interval_seconds,
            items,
        }
    }

    /// Every value of `text` (of the series starting with `only`, when given), counters and
    /// summaries' sums and counts as their increase since the previous call.
    pub fn items(&mut self, text: &str, only: Option<&str>) -> Vec<Item> {
        let mut out = Vec::new();
        let mut kinds: HashMap<&str, &str> = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                if let Some((name, kind)) = rest.split_once(' ') {
                    kinds.insert(name, kind.trim());
                }
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let Some(sample) = Sample::parse(line) else { continue };
            if only.is_some_and(|p| !sample.name.starts_with(p)) {
                continue;
            }
            // A summary's lines: `name{quantile=…}`, `name_sum`, `name_count`.
            let (family, part) = match kinds.get(sample.name) {
                Some(&kind) => (sample.name, kind),
                None => match (sample.name.strip_suffix("_sum"), sample.name.strip_suffix("_count")) {
                    (Some(f), _) if kinds.get(f) == Some(&"summary") => (f, "sum"),
                    (_, Some(f)) if kinds.get(f) == Some(&"summary") => (f, "count"),
                    _ => continue,
                },
            };
            let mut labels: Vec<(String, String)> = sample
                .labels
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            let mut path: Vec<String> = family.splitn(3, '_').map(str::to_string).collect();
            let delta = match part {
                "gauge" => false,
                "counter" => true,
                "sum" | "count" => {
                    path.push(part.to_string());
                    true
                }
                "summary" => {
                    let Some(i) = labels.iter().position(|(k, _)| k == "quantile") else {
                        continue;
                    };
                    let (_, q) = labels.remove(i);
                    if sample.value.is_nan() {
                        continue;
                    }
                    path.push(format!("quantile.{}", quantile_name(&q)));
                    false
                }
                _ => continue,
            };
            labels.sort();
            let mut item = Item {
                path,
                labels,
                value: sample.value,
                counter: part == "counter",
            };
            if delta {
                let before = self.previous.insert(item.key("."), sample.value);
                item.value = sample.value - before.unwrap_or(0.0);
            }
            out.push(item);
        }
        out
    }
}

/// eagle's name of a quantile: thousandths, one trailing zero dropped (0.5: `50`, 0.99:
/// `99`, 0.999: `999`).
fn quantile_name(q: &str) -> String {
    let Ok(q) = q.parse::<f64>() else { return q.to_string() };
    let s = ((q * 1000.0) as i64).to_string();
    match s.strip_suffix('0') {
        Some(t) if s.len() > 2 => t.to_string(),
        _ => s,
    }
}

/// One sample line: `name{label="value",…} value`.
struct Sample<'a> {
    name: &'a str,
    labels: Vec<(&'a str, String)>,
    value: f64,
}

impl<'a> Sample<'a> {
    fn parse(line: &'a str) -> Option<Self> {
        let (head, value) = line.rsplit_once(' ')?;
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().ok()?,
        };
        let Some((name, mut rest)) = head.split_once('{') else {
            return Some(Sample {
                name: head,
                labels: Vec::new(),
                value,
            });
        };
        let mut labels = Vec::new();
        loop {
            rest = rest.trim_start_matches(',');
            if rest.starts_with('}') {
                break;
            }
            let (key, after) = rest.split_once("=\"")?;
            let mut v = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => v.push('\n'),
                        other => v.push(other),
                    },
                    '"' => break i,
                    c => v.push(c),
                }
            };
            labels.push((key, v));
            rest = &after[end + 1..];
        }
        Some(Sample { name, labels, value })
    }
}

/// CPU use between two samples, for [`NodeProcess::cpu`].
#[derive(Default)]
pub struct ProcessSampler {
    last: Option<(Instant, f64)>,
}

impl ProcessSampler {
    /// CPU in percent of one core since the previous call (0 on the first), resident memory;
    /// `None` where `/proc` cannot be read.
    pub fn sample(&mut self, now: Instant) -> Option<NodeProcess> {
        let cpu_seconds = super::process::cpu_seconds()?;
        let rss = super::process::rss_bytes()?;
        let cpu = match self.last {
            Some((at, before)) => {
                let wall = now.saturating_duration_since(at).as_secs_f64();
                if wall > 0.0 {
                    (cpu_seconds - before).max(0.0) / wall * 100.0
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        self.last = Some((now, cpu_seconds));
        Some(NodeProcess {
            cpu,
            rss: i64::try_from(rss).unwrap_or(i64::MAX),
        })
    }
}

/// The text the node's metrics are aggregated from: the exporter's, with the gauges that
/// are set at scrape time set first, and the `process_*` series when `process`.
pub fn current_text(node: &wshub_core::node::Node, cluster: &crate::cluster::Cluster, process: bool) -> String {
    super::centrifugo::set_gauges(node, cluster);
    let mut text = super::handle().map(|h| h.render()).unwrap_or_default();
    if process {
        text.push_str(&super::process::render());
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::BTreeMap;

    const FIRST: &str = "# TYPE centrifugo_node_num_clients gauge\n\
        centrifugo_node_num_clients 3\n\
        # TYPE centrifugo_client_num_reply_errors counter\n\
        centrifugo_client_num_reply_errors{method=\"connect\",code=\"101\"} 5\n\
        # TYPE centrifugo_api_command_duration_seconds summary\n\
        centrifugo_api_command_duration_seconds{protocol=\"http\",method=\"publish\",quantile=\"0.5\"} 0.001\n\
        centrifugo_api_command_duration_seconds{protocol=\"http\",method=\"publish\",quantile=\"0.999\"} NaN\n\
        centrifugo_api_command_duration_seconds_sum{protocol=\"http\",method=\"publish\"} 0.5\n\
        centrifugo_api_command_duration_seconds_count{protocol=\"http\",method=\"publish\"} 10\n\
        # TYPE centrifugo_proxy_duration_seconds_histogram histogram\n\
        centrifugo_proxy_duration_seconds_histogram_bucket{le=\"0.005\"} 1\n\
        # TYPE wshub_publications_total counter\n\
        wshub_publications_total 9\n\
        # TYPE centrifugo_node_build gauge\n\
        centrifugo_node_build{version=\"a\\\"b\",empty=\"\"} 1\n";

    #[test]
    fn keys_and_values_as_centrifuge_shares_them() {
        let mut a = Aggregator::default();
        let m = a.snapshot(FIRST, 60.0);
        assert_eq!(m.interval, 60.0);
        let expected: BTreeMap<String, f64> = [
            ("centrifugo.node.num_clients", 3.0),
            ("centrifugo.client.num_reply_errors.code.101.method.connect", 5.0),
            (
                "centrifugo.api.command_duration_seconds.quantile.50.method.publish.protocol.http",
                0.001,
            ),
            ("centrifugo.api.command_duration_seconds.sum.method.publish.protocol.http", 0.5),
            ("centrifugo.api.command_duration_seconds.count.method.publish.protocol.http", 10.0),
            ("centrifugo.node.build.version.a\"b", 1.0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(m.items, expected);
        // The next interval: counters and summary sums as their increase.
        let next = FIRST.replace("} 5\n", "} 8\n").replace(
            "_count{protocol=\"http\",method=\"publish\"} 10",
            "_count{protocol=\"http\",method=\"publish\"} 14",
        );
        let m = a.snapshot(&next, 60.0);
        assert_eq!(m.items["centrifugo.client.num_reply_errors.code.101.method.connect"], 3.0);
        assert_eq!(
            m.items["centrifugo.api.command_duration_seconds.count.method.publish.protocol.http"],
            4.0
        );
        assert_eq!(
            m.items["centrifugo.api.command_duration_seconds.sum.method.publish.protocol.http"],
            0.0
        );
        assert_eq!(m.items["centrifugo.node.num_clients"], 3.0);
    }

    #[test]
    fn quantile_names() {
        assert_eq!(quantile_name("0.5"), "50");
        assert_eq!(quantile_name("0.99"), "99");
        assert_eq!(quantile_name("0.999"), "999");
    }

    #[test]
    fn process_figures_are_read() {
        let mut s = ProcessSampler::default();
        let t = Instant::now();
        let first = s.sample(t).unwrap();
        assert_eq!(first.cpu, 0.0);
        assert!(first.rss > 1 << 20, "rss {}", first.rss);
        // Burn some CPU so the second sample sees it.
        let mut x = 0u64;
        let until = Instant::now() + std::time::Duration::from_millis(200);
        while Instant::now() < until {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        let second = s.sample(Instant::now()).unwrap();
        assert!(second.cpu > 0.0 && x > 0, "cpu {}", second.cpu);
    }
}
