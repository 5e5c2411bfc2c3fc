//! One function per event that both wshub's own series (`wshub_*`) and Centrifugo v6's
//! (`centrifugo_*`) count, so that the two never drift apart and a call site stays one line.
//!
//! Centrifugo's names, types and labels are those of the centrifuge library's `metrics.go`
//! (namespace `centrifugo`, set by Centrifugo) and of Centrifugo's `internal/metrics`: the
//! official Grafana dashboard (13039) and existing alerts query them. Centrifugo OSS leaves
//! its `channel_namespace` label empty (only PRO fills it); an empty label is the same series
//! as an absent one to Prometheus, so it is left out here.
//!
//! Centrifugo exports its durations twice: a summary (quantiles 0.5, 0.99, 0.999;
//! deprecated, kept for existing alerts) and a `_histogram` with buckets (what the Grafana
//! dashboard's latency panels read). The server's exporter decides which name is which
//! (`wshub_server::metrics`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Centrifugo's `node_messages_*_count{type}` values, pre-created at 0 at start.
pub const BROKER_MESSAGE_TYPES: [&str; 4] = ["publication", "join", "leave", "control"];

/// One client command handled: `wshub_commands_total` is counted on arrival (dispatch);
/// this is the time it took, Centrifugo's `client_command_duration_seconds{method}`.
pub fn command_duration(method: &'static str, took: Duration) {
    let s = took.as_secs_f64();
    metrics::histogram!("centrifugo_client_command_duration_seconds", "method" => method).record(s);
    metrics::histogram!("centrifugo_client_command_duration_seconds_histogram", "method" => method).record(s);
}

/// A subscription accepted (asked by the client or from its token): Centrifugo's
/// `client_subscriptions_accepted` (`client_name` empty: filled by Centrifugo PRO only).
pub fn subscription_accepted() {
    metrics::counter!("centrifugo_client_subscriptions_accepted", "client_name" => "").increment(1);
}

/// Whether `client_recovered_publications` is exported (`prometheus.recovered_publications_histogram`).
static RECOVERED_HISTOGRAM: AtomicBool = AtomicBool::new(false);

/// Turns `centrifugo_client_recovered_publications` on, as Centrifugo's option does.
pub fn enable_recovered_publications_histogram() {
    RECOVERED_HISTOGRAM.store(true, Ordering::Relaxed);
}

/// A subscription that asked to recover from a stream position, and whether it did:
/// Centrifugo's `client_recover{recovered,has_recovered_publications}` ("yes"/"no"), and
/// with the option, `client_recovered_publications` (how many a recovery brought).
pub fn recover(recovered: bool, publications: usize) {
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    metrics::counter!(
        "centrifugo_client_recover",
        "recovered" => yes_no(recovered),
        "has_recovered_publications" => yes_no(publications > 0)
    )
    .increment(1);
    if recovered && RECOVERED_HISTOGRAM.load(Ordering::Relaxed) {
        metrics::histogram!("centrifugo_client_recovered_publications", "channel_namespace" => "").record(publications as f64);
    }
}

/// A subscription the server ended with an unsubscribe push of `code`:
/// `client_num_server_unsubscribes{code,channel_namespace}`.
pub fn server_unsubscribe(code: u32) {
    metrics::counter!(
        "centrifugo_client_num_server_unsubscribes",
        "code" => code.to_string(),
        "channel_namespace" => ""
    )
    .increment(1);
}

/// A client's pong, `took` after the server's ping: Centrifugo's
/// `client_ping_pong_duration_seconds{transport}`.
pub fn ping_pong(transport: &'static str, took: Duration) {
    metrics::histogram!("centrifugo_client_ping_pong_duration_seconds", "transport" => transport).record(took.as_secs_f64());
}

/// An error reply to a client command.
pub fn reply_error(method: &'static str, code: u32) {
    let code = code.to_string();
    metrics::counter!("wshub_reply_errors_total", "code" => code.clone()).increment(1);
    metrics::counter!("centrifugo_client_num_reply_errors", "method" => method, "code" => code).increment(1);
}

/// A publication (or join, leave) handed to the broker by this node: Centrifugo's
/// `node_messages_sent_count{type}`.
pub fn broker_message_sent(kind: &'static str) {
    metrics::counter!("centrifugo_node_messages_sent_count", "type" => kind).increment(1);
}

/// A publication handed from the broker to this node's hub (once per publication, not per
/// subscriber): `wshub_publications_total` and Centrifugo's
/// `node_messages_received_count{type="publication"}`.
pub fn publication_received() {
    metrics::counter!("wshub_publications_total").increment(1);
    metrics::counter!("centrifugo_node_messages_received_count", "type" => "publication").increment(1);
}

/// A join or leave handed from the broker to this node's hub.
pub fn broker_message_received(kind: &'static str) {
    metrics::counter!("centrifugo_node_messages_received_count", "type" => kind).increment(1);
}

/// A proxy request in flight (`proxy_inflight_requests{protocol,type,name}`) until dropped.
pub struct ProxyInflight(metrics::Gauge);

impl ProxyInflight {
    pub fn start(protocol: &'static str, kind: &'static str, name: &str) -> Self {
        let g = metrics::gauge!(
            "centrifugo_proxy_inflight_requests",
            "protocol" => protocol,
            "type" => kind,
            "name" => name.to_string()
        );
        g.increment(1.0);
        ProxyInflight(g)
    }
}

impl Drop for ProxyInflight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// One backend proxy call and its outcome (`ok`, `error`, `disconnect` are answers;
/// the others are failures, Centrifugo's `proxy_errors`).
pub fn proxy_call(protocol: &'static str, kind: &'static str, name: &str, took: Duration, outcome: &'static str) {
    let s = took.as_secs_f64();
    metrics::histogram!("wshub_proxy_duration_seconds", "kind" => kind).record(s);
    metrics::counter!("wshub_proxy_calls_total", "kind" => kind, "outcome" => outcome).increment(1);
    let labels = [
        ("protocol", protocol.to_string()),
        ("type", kind.to_string()),
        ("name", name.to_string()),
    ];
    metrics::histogram!("centrifugo_proxy_duration_seconds", &labels).record(s);
    metrics::histogram!("centrifugo_proxy_duration_seconds_histogram", &labels).record(s);
    if !matches!(outcome, "ok" | "error" | "disconnect") {
        metrics::counter!("centrifugo_proxy_errors", &labels).increment(1);
    }
}

/// Pre-creates the proxy series of one configured endpoint (errors at 0), so that alerts on
/// `rate(centrifugo_proxy_errors[…])` see a series before the first failure.
pub fn proxy_endpoint(protocol: &'static str, kind: &'static str, name: &str) {
    let labels = [
        ("protocol", protocol.to_string()),
        ("type", kind.to_string()),
        ("name", name.to_string()),
    ];
    metrics::counter!("centrifugo_proxy_errors", &labels).increment(0);
    metrics::gauge!("centrifugo_proxy_inflight_requests", &labels).set(0.0);
    // Registered without a sample: the summary shows `_count 0`.
    let _ = metrics::histogram!("centrifugo_proxy_duration_seconds", &labels);
    let _ = metrics::histogram!("centrifugo_proxy_duration_seconds_histogram", &labels);
}

/// Centrifugo's `node_action_count{action}`: what the node was asked to do, by name
/// (centrifuge's names). Each action's counter is looked up once for the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    AddClient,
    RemoveClient,
    AddSubscription,
    RemoveSubscription,
    BrokerSubscribe,
    BrokerUnsubscribe,
    AddPresence,
    RemovePresence,
    Presence,
    PresenceStats,
    History,
    HistoryRecover,
    HistoryStreamTop,
    HistoryRemove,
    Survey,
}

impl Action {
    pub const ALL: [Action; 15] = [
        Action::AddClient,
        Action::RemoveClient,
        Action::AddSubscription,
        Action::RemoveSubscription,
        Action::BrokerSubscribe,
        Action::BrokerUnsubscribe,
        Action::AddPresence,
        Action::RemovePresence,
        Action::Presence,
        Action::PresenceStats,
        Action::History,
        Action::HistoryRecover,
        Action::HistoryStreamTop,
        Action::HistoryRemove,
        Action::Survey,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Action::AddClient => "add_client",
            Action::RemoveClient => "remove_client",
            Action::AddSubscription => "add_subscription",
            Action::RemoveSubscription => "remove_subscription",
            Action::BrokerSubscribe => "broker_subscribe",
            Action::BrokerUnsubscribe => "broker_unsubscribe",
            Action::AddPresence => "add_presence",
            Action::RemovePresence => "remove_presence",
            Action::Presence => "presence",
            Action::PresenceStats => "presence_stats",
            Action::History => "history",
            Action::HistoryRecover => "history_recover",
            Action::HistoryStreamTop => "history_stream_top",
            Action::HistoryRemove => "history_remove",
            Action::Survey => "survey",
        }
    }
}

static ACTIONS: std::sync::OnceLock<Vec<metrics::Counter>> = std::sync::OnceLock::new();

/// One action (`node_action_count{action,channel_namespace}`); every action's series
/// exists from the first call of any (the exporter calls [`action_series`] at start).
pub fn action(a: Action) {
    if let Some(c) = action_series().get(a as usize) {
        c.increment(1);
    }
}

/// The action counters, created (at 0) on first use.
pub fn action_series() -> &'static [metrics::Counter] {
    ACTIONS.get_or_init(|| {
        Action::ALL
            .iter()
            .map(|a| metrics::counter!("centrifugo_node_action_count", "action" => a.name(), "channel_namespace" => ""))
            .collect()
    })
}

/// A request answered by every node (`node_survey_duration_seconds{op}` and its
/// `_histogram`): `op` is the survey's name, as Centrifugo's (`info`, `presence`, ...).
pub fn survey(op: &'static str, took: Duration) {
    action(Action::Survey);
    let s = took.as_secs_f64();
    metrics::histogram!("centrifugo_node_survey_duration_seconds", "op" => op).record(s);
    metrics::histogram!("centrifugo_node_survey_duration_seconds_histogram", "op" => op).record(s);
}

/// A publication handed to every local subscriber in `took`
/// (`node_broadcast_duration_seconds{type,channel_namespace}`), and how long it travelled
/// from the publishing node (`node_pub_sub_lag_seconds`, from the publication's `time`,
/// which the publishing node sets; 0 when unknown). Clocks of two nodes may differ: the lag
/// is taken as absolute, as centrifuge does.
pub fn broadcast(kind: &'static str, took: Duration, published_at_ms: i64) {
    metrics::histogram!("centrifugo_node_broadcast_duration_seconds", "type" => kind, "channel_namespace" => "").record(took.as_secs_f64());
    if published_at_ms > 0 {
        let lag_ms = unix_millis().saturating_sub(published_at_ms).unsigned_abs();
        metrics::histogram!("centrifugo_node_pub_sub_lag_seconds", "channel_namespace" => "").record(lag_ms as f64 / 1000.0);
    }
}

/// Publications a subscriber's tags filter kept from it, `n` in one broadcast
/// (`node_tags_filter_dropped_publications{channel_namespace}`).
pub fn tags_filter_dropped(n: u64) {
    metrics::counter!("centrifugo_node_tags_filter_dropped_publications", "channel_namespace" => "").increment(n);
}

/// The time now in Unix milliseconds, as a publication's `time` carries it.
pub fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
