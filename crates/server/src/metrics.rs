//! `GET /metrics`: Prometheus text format through the `metrics` facade and its Prometheus
//! exporter. Counters and histograms are recorded where things happen (core, driver, HTTP);
//! gauges that are cheaper to read than to maintain are set at scrape time.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub mod centrifugo;
mod process;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Centrifugo's `client_command_duration_seconds_histogram` and
/// `client_ping_pong_duration_seconds` buckets (centrifuge's metrics.go).
const COMMAND_BUCKETS: [f64; 15] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

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

/// Installs the process-wide recorder (once; later calls reuse it).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let buckets = [0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0];
            // Every `wshub_*` histogram has these buckets; Centrifugo's `_histogram` series
            // have Centrifugo's (its Grafana dashboard builds every latency panel on them);
            // the other Centrifugo durations are its (deprecated) summaries, with its
            // quantiles (0.5, 0.99, 0.999), for existing alerts.
            let r = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Prefix("wshub_".into()), &buckets)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("centrifugo_client_command_duration_seconds_histogram".into()),
                        &COMMAND_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("centrifugo_client_ping_pong_duration_seconds".into()),
                        &COMMAND_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("centrifugo_api_command_duration_seconds_histogram".into()),
                        &GO_DEFAULT_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("centrifugo_proxy_duration_seconds_histogram".into()),
                        &GO_DEFAULT_BUCKETS,
                    )
                })
                .and_then(|b| b.set_quantiles(&[0.5, 0.99, 0.999]))
                .and_then(|b| b.install_recorder());
            match r {
                Ok(h) => {
                    describe();
                    centrifugo::describe();
                    precreate();
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

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("wshub_connections", "WebSocket connections open");
    describe_gauge!("wshub_clients", "connected (authenticated) clients");
    describe_gauge!("wshub_users", "distinct users connected");
    describe_gauge!("wshub_subscriptions", "subscriptions on this node");
    describe_gauge!("wshub_channels", "channels with subscribers on this node");
    describe_counter!("wshub_commands_total", "client commands by method");
    describe_counter!("wshub_reply_errors_total", "error replies by code");
    describe_counter!("wshub_disconnects_total", "connections ended, by close code");
    describe_counter!("wshub_messages_in_total", "WebSocket messages received");
    describe_counter!("wshub_bytes_in_total", "WebSocket payload bytes received");
    describe_counter!("wshub_messages_out_total", "frames queued to clients");
    describe_counter!("wshub_bytes_out_total", "bytes written to clients");
    describe_counter!("wshub_api_calls_total", "HTTP API calls by method and status");
    describe_counter!("wshub_handshake_refusals_total", "refused upgrades by reason");
    describe_counter!("wshub_rate_limit_refusals_total", "requests refused by a rate limit, by kind");
    describe_counter!(
        "wshub_rate_limit_fail_open_total",
        "requests admitted because a cluster rate limiter (Redis) did not answer, by kind"
    );
    describe_counter!("wshub_publications_total", "publications delivered to the hub");
    describe_gauge!("wshub_queue_bytes", "bytes queued for clients (sum over connections)");
    describe_counter!(
        "wshub_proxy_calls_total",
        "calls to backend proxies by kind and outcome (ok, error, disconnect, timeout, unreachable, status, garbage)"
    );
    describe_histogram!("wshub_proxy_duration_seconds", "time of one backend proxy call, by kind");
    describe_counter!("wshub_jwks_fetches_total", "fetches of the JWKS key set by outcome");
    describe_histogram!(
        "wshub_fanout_latency_seconds",
        "time to hand one publication to every local subscriber"
    );
}

/// The text of `GET /metrics`.
pub fn render(shared: &crate::http::Shared) -> String {
    metrics::gauge!("wshub_connections").set(shared.connections() as f64);
    if let Some(api) = &shared.config.api {
        let n = &api.node;
        metrics::gauge!("wshub_clients").set(n.num_clients() as f64);
        metrics::gauge!("wshub_users").set(n.num_users() as f64);
        metrics::gauge!("wshub_subscriptions").set(n.hub.num_subscriptions() as f64);
        metrics::gauge!("wshub_channels").set(n.hub.channels().len() as f64);
    }
    metrics::gauge!("wshub_queue_bytes").set(crate::transport::queued_bytes() as f64);
    centrifugo::set_gauges(shared);
    let mut text = handle().map(|h| h.render()).unwrap_or_default();
    text.push_str(&process::render());
    text
}
