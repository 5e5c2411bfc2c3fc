//! `GET /metrics`: Prometheus text format through the `metrics` facade and its Prometheus
//! exporter. Counters and histograms are recorded where things happen (core, driver, HTTP);
//! gauges that are cheaper to read than to maintain are set at scrape time.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use wshub_core::node::Node;

use crate::cluster::Cluster;
use help::{
    describe,
    Kind::{Counter, Gauge, Histogram},
};

pub mod centrifugo;
mod help;
pub mod info;
pub mod native;
mod process;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Centrifugo's `client_command_duration_seconds_histogram` and
/// `client_ping_pong_duration_seconds` buckets (centrifuge's metrics.go).
const COMMAND_BUCKETS: [f64; 15] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// centrifuge's `node_survey_duration_seconds_histogram` buckets.
const SURVEY_BUCKETS: [f64; 12] = [0.001, 0.005, 0.010, 0.025, 0.050, 0.100, 0.250, 0.500, 1.0, 2.5, 5.0, 10.0];

/// centrifuge's `node_broadcast_duration_seconds` buckets (from a microsecond).
const BROADCAST_BUCKETS: [f64; 19] = [
    0.000_001, 0.000_005, 0.000_010, 0.000_050, 0.000_100, 0.000_250, 0.000_500, 0.001, 0.005, 0.010, 0.025, 0.050, 0.100, 0.250, 0.500,
    1.0, 2.5, 5.0, 10.0,
];

/// centrifuge's `node_pub_sub_lag_seconds` buckets.
const LAG_BUCKETS: [f64; 12] = [0.001, 0.005, 0.010, 0.025, 0.050, 0.100, 0.200, 0.500, 1.0, 2.0, 5.0, 10.0];

/// Go's `prometheus.DefBuckets`, which Centrifugo's API and proxy histograms use.
const GO_DEFAULT_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Creates at 0 the counters whose label sets are known before their first event, so that
/// `rate()` and alerts see them from the start (Prometheus's instrumentation guide: "avoid
/// missing metrics").
fn precreate() {
    for reason in [
        "origin",
        "tls",
        "tls_timeout",
        "draining",
        "connection_limit",
        "connection_rate_limit",
        "connection_rate_limit_per_ip",
        "method",
        "http_version",
        "host",
        "upgrade",
        "connection",
        "version",
        "key",
    ] {
        metrics::counter!("wshub_handshake_refusals_total", "reason" => reason).increment(0);
    }
    for kind in ["connection", "connection_per_ip", "api", "command"] {
        metrics::counter!("wshub_rate_limit_refusals_total", "kind" => kind).increment(0);
    }
    for kind in ["connection_per_ip", "api", "command"] {
        metrics::counter!("wshub_rate_limit_fail_open_total", "kind" => kind).increment(0);
    }
    for outcome in ["local", "forwarded", "unknown_session", "full", "error"] {
        metrics::counter!("wshub_emulation_requests_total", "outcome" => outcome).increment(0);
    }
    for outcome in ["ok", "error"] {
        metrics::counter!("wshub_jwks_fetches_total", "outcome" => outcome).increment(0);
    }
    metrics::counter!("wshub_publications_total").increment(0);
    metrics::counter!("wshub_delivery_queue_full_total").increment(0);
    centrifugo::precreate();
}

/// centrifuge's buckets of `client_recovered_publications` (a count, not a duration).
const RECOVERED_BUCKETS: [f64; 15] = [
    0.0, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];

/// Installs the process-wide recorder (once; later calls reuse it).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let buckets = [0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0];
            // Every `wshub_*` histogram has these buckets; Centrifugo's `_histogram` series
            // have Centrifugo's (its Grafana dashboard builds every latency panel on them);
            // the other Centrifugo durations are its (deprecated) summaries, with its
            // quantiles (0.5, 0.99, 0.999), for existing alerts.
            let centrifugo_buckets: [(&str, &[f64]); 7] = [
                ("centrifugo_node_survey_duration_seconds_histogram", &SURVEY_BUCKETS),
                ("centrifugo_node_broadcast_duration_seconds", &BROADCAST_BUCKETS),
                ("centrifugo_node_pub_sub_lag_seconds", &LAG_BUCKETS),
                ("centrifugo_client_command_duration_seconds_histogram", &COMMAND_BUCKETS),
                ("centrifugo_client_ping_pong_duration_seconds", &COMMAND_BUCKETS),
                ("centrifugo_api_command_duration_seconds_histogram", &GO_DEFAULT_BUCKETS),
                ("centrifugo_proxy_duration_seconds_histogram", &GO_DEFAULT_BUCKETS),
            ];
            let r = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Prefix("wshub_".into()), &buckets)
                .and_then(|b| {
                    centrifugo_buckets.into_iter().try_fold(b, |b, (name, buckets)| {
                        b.set_buckets_for_metric(Matcher::Full(name.into()), buckets)
                    })
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full("centrifugo_client_recovered_publications".into()), &RECOVERED_BUCKETS)
                })
                .and_then(|b| b.set_quantiles(&[0.5, 0.99, 0.999]))
                .map_err(|e| e.to_string())
                .and_then(install);
            match r {
                Ok(h) => {
                    describe(SERIES);
                    describe(centrifugo::SERIES);
                    precreate();
                    spawn_upkeep(h.clone());
                    Some(h)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    None
                }
            }
        })
        .as_ref()
}

/// Installs the exporter's recorder as the process's, behind [`native::Tee`] when native
/// histograms are on.
fn install(b: PrometheusBuilder) -> Result<PrometheusHandle, String> {
    if !native::enabled() {
        return b.install_recorder().map_err(|e| e.to_string());
    }
    let recorder = b.build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(native::Tee { inner: recorder }).map_err(|e| e.to_string())?;
    Ok(handle)
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The exporter keeps every histogram sample (about 30 bytes each) in a list until a scrape
/// or an upkeep folds them into the buckets; `install_recorder` starts no upkeep, so a node
/// nobody scraped grew with every command and every publication (three samples each:
/// 61 bytes per idle connection from its connect and subscribe, measured with heaptrack;
/// megabytes a second at tens of thousands of publications). A thread rather than a task:
/// the recorder outlives any one runtime (tests start many).
fn spawn_upkeep(h: PrometheusHandle) {
    let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || loop {
        std::thread::sleep(UPKEEP_INTERVAL); // the upkeep's cadence
        h.run_upkeep();
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "metrics upkeep thread not started: histogram samples wait for a scrape");
    }
}

/// wshub's own series: their kind and `# HELP` text.
const SERIES: &[(help::Kind, &str, &str)] = &[
    (Gauge, "wshub_connections", "WebSocket connections open"),
    (Gauge, "wshub_clients", "connected (authenticated) clients"),
    (Gauge, "wshub_users", "distinct users connected"),
    (Gauge, "wshub_subscriptions", "subscriptions on this node"),
    (Gauge, "wshub_channels", "channels with subscribers on this node"),
    (Counter, "wshub_commands_total", "client commands by method"),
    (Counter, "wshub_reply_errors_total", "error replies by code"),
    (Counter, "wshub_disconnects_total", "connections ended, by close code"),
    (Counter, "wshub_messages_in_total", "WebSocket messages received"),
    (Counter, "wshub_bytes_in_total", "WebSocket payload bytes received"),
    (Counter, "wshub_messages_out_total", "frames queued to clients"),
    (Counter, "wshub_bytes_out_total", "bytes written to clients"),
    (Counter, "wshub_api_calls_total", "HTTP API calls by method and status"),
    (Counter, "wshub_handshake_refusals_total", "refused upgrades by reason"),
    (
        Counter,
        "wshub_rate_limit_refusals_total",
        "requests refused by a rate limit, by kind",
    ),
    (
        Counter,
        "wshub_rate_limit_fail_open_total",
        "requests admitted because a cluster rate limiter (Redis) did not answer, by kind",
    ),
    (Counter, "wshub_publications_total", "publications delivered to the hub"),
    (Gauge, "wshub_queue_bytes", "bytes queued for clients (sum over connections)"),
    (
        Counter,
        "wshub_proxy_calls_total",
        "calls to backend proxies by kind and outcome (ok, error, disconnect, timeout, unreachable, status, garbage)",
    ),
    (Histogram, "wshub_proxy_duration_seconds", "time of one backend proxy call, by kind"),
    (Counter, "wshub_jwks_fetches_total", "fetches of the JWKS key set by outcome"),
    (
        Histogram,
        "wshub_fanout_latency_seconds",
        "time to hand one publication to every local subscriber",
    ),
];

/// The text of `GET /metrics`.
/// `api`: the node and its cluster, when a node runs.
pub fn render(connections: usize, api: Option<(&Node, &Cluster)>) -> String {
    metrics::gauge!("wshub_connections").set(connections as f64);
    if let Some((n, _)) = api {
        metrics::gauge!("wshub_clients").set(n.num_clients() as f64);
        metrics::gauge!("wshub_users").set(n.num_users() as f64);
        metrics::gauge!("wshub_subscriptions").set(n.hub.num_subscriptions() as f64);
        metrics::gauge!("wshub_channels").set(n.hub.channels().len() as f64);
    }
    metrics::gauge!("wshub_queue_bytes").set(crate::transport::queued_bytes() as f64);
    if let Some((node, cluster)) = api {
        centrifugo::set_gauges(node, cluster);
    }
    let mut text = handle().map(|h| h.render()).unwrap_or_default();
    text.push_str(&process::render());
    text
}
