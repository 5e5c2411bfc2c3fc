//! Centrifugo v6's Prometheus series, beside wshub's own: names, types and labels as the
//! centrifuge library (`metrics.go`, namespace `centrifugo`) and Centrifugo
//! (`internal/metrics/metrics.go`) define them, so that Centrifugo's Grafana dashboard
//! (grafana.com 13039) and a deployment's alerts keep working after the swap. The events of
//! the core crate are counted by `wshub_core::series`; those of the server here.
//!
//! Not exported (no wshub counterpart): `frame_type` on the transport series, the
//! `client_name`/`client_version` values (taken from clients, they would let any client add
//! series), and Go's `go_*` (`process_*`: `super::process`).

use std::time::Duration;

use super::help::Kind::{self, Counter, Gauge, Histogram};

/// The client command methods Centrifugo pre-creates its duration series for.
const COMMAND_METHODS: [&str; 12] = [
    "connect",
    "subscribe",
    "unsubscribe",
    "publish",
    "presence",
    "presence_stats",
    "history",
    "send",
    "rpc",
    "refresh",
    "sub_refresh",
    "unknown",
];

/// The transports whose message and connection counters exist from the start. Pusher
/// connections are counted as transport `pusher` (a WebSocket, but another protocol: a
/// dashboard can tell the two dialects apart, and the sum is every connection).
const TRANSPORTS: [&str; 8] = [
    "websocket",
    "uni_websocket",
    "http_stream",
    "sse",
    "uni_http_stream",
    "uni_sse",
    "pusher",
    "uni_grpc",
];

/// Centrifugo's series, with its `# HELP` texts.
pub(super) const SERIES: &[(Kind, &str, &str)] = &[
    (Gauge, "centrifugo_node_num_clients", "Number of clients connected."),
    (Gauge, "centrifugo_node_num_users", "Number of unique users connected."),
    (Gauge, "centrifugo_node_num_subscriptions", "Number of subscriptions."),
    (
        Gauge,
        "centrifugo_node_num_channels",
        "Number of channels with one or more subscribers.",
    ),
    (Gauge, "centrifugo_node_num_nodes", "Number of nodes in the cluster."),
    (Gauge, "centrifugo_node_build", "Node build info."),
    (
        Histogram,
        "centrifugo_client_ping_pong_duration_seconds",
        "Ping/Pong duration in seconds.",
    ),
    (
        Counter,
        "centrifugo_client_recover",
        "Count of recover operations with success/fail resolution.",
    ),
    (
        Counter,
        "centrifugo_node_client_connection_limit",
        "Number of refused requests due to node client connection limit.",
    ),
    (
        Counter,
        "centrifugo_node_messages_sent_count",
        "Number of messages sent by node to broker.",
    ),
    (
        Counter,
        "centrifugo_node_messages_received_count",
        "Number of messages received from broker.",
    ),
    (
        Histogram,
        "centrifugo_client_command_duration_seconds",
        "Client command duration summary.",
    ),
    (
        Histogram,
        "centrifugo_client_command_duration_seconds_histogram",
        "Client command duration histogram.",
    ),
    (
        Counter,
        "centrifugo_client_num_reply_errors",
        "Number of errors in replies sent to clients.",
    ),
    (
        Counter,
        "centrifugo_client_num_server_disconnects",
        "Number of server initiated disconnects.",
    ),
    (Counter, "centrifugo_client_connections_accepted", "Count of accepted transports."),
    (
        Counter,
        "centrifugo_client_subscriptions_accepted",
        "Count of accepted client subscriptions.",
    ),
    (
        Gauge,
        "centrifugo_client_subscriptions_inflight",
        "Number of inflight client subscriptions.",
    ),
    (
        Histogram,
        "centrifugo_client_recovered_publications",
        "Number of publications recovered during subscription recovery.",
    ),
    (Gauge, "centrifugo_proxy_inflight_requests", "Number of inflight proxy requests."),
    (Counter, "centrifugo_api_command_errors_total", "Total errors in API commands."),
    (
        Counter,
        "centrifugo_client_num_server_unsubscribes",
        "Number of server initiated unsubscribes.",
    ),
    (
        Counter,
        "centrifugo_node_incoming_http_requests_total",
        "Number of incoming HTTP requests",
    ),
    (
        Counter,
        "centrifugo_transport_outgoing_close_count",
        "Number of close frames sent to clients, by transport and code.",
    ),
    (
        Gauge,
        "centrifugo_client_connections_inflight",
        "Number of inflight client connections.",
    ),
    (
        Counter,
        "centrifugo_transport_messages_sent",
        "Number of messages sent to client connections over specific transport.",
    ),
    (
        Counter,
        "centrifugo_transport_messages_sent_size",
        "Size in bytes of messages sent to client connections over specific transport.",
    ),
    (
        Counter,
        "centrifugo_transport_messages_received",
        "Number of messages received from client connections over specific transport.",
    ),
    (
        Counter,
        "centrifugo_transport_messages_received_size",
        "Size in bytes of messages received from client connections over specific transport.",
    ),
    (Histogram, "centrifugo_api_command_duration_seconds", "Duration of API per command."),
    (
        Histogram,
        "centrifugo_api_command_duration_seconds_histogram",
        "Duration of API per command (histogram).",
    ),
    (Histogram, "centrifugo_proxy_duration_seconds", "Duration of proxy calls."),
    (
        Histogram,
        "centrifugo_proxy_duration_seconds_histogram",
        "Duration of proxy calls (histogram).",
    ),
    (Counter, "centrifugo_proxy_errors", "Number of proxy call errors."),
    (Counter, "centrifugo_node_action_count", "Number of various actions called."),
    (Histogram, "centrifugo_node_survey_duration_seconds", "Survey duration summary."),
    (
        Histogram,
        "centrifugo_node_survey_duration_seconds_histogram",
        "Survey duration histogram.",
    ),
    (
        Histogram,
        "centrifugo_node_broadcast_duration_seconds",
        "Broadcast duration in seconds",
    ),
    (Histogram, "centrifugo_node_pub_sub_lag_seconds", "Pub sub lag in seconds"),
    (
        Counter,
        "centrifugo_node_tags_filter_dropped_publications",
        "Number of publications dropped due to tags filtering.",
    ),
    (
        Counter,
        "centrifugo_broker_redis_pub_sub_errors",
        "Number of times there was an error in Redis PUB/SUB connection.",
    ),
    (
        Counter,
        "centrifugo_broker_redis_pub_sub_dropped_messages",
        "Number of dropped messages on application level in Redis PUB/SUB.",
    ),
];

/// The series whose label sets are known at start, at 0 (or, for durations, with no sample).
pub(super) fn precreate() {
    metrics::gauge!("centrifugo_node_build", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    metrics::gauge!("centrifugo_node_num_nodes").set(1.0);
    metrics::counter!("centrifugo_node_client_connection_limit").increment(0);
    for recovered in ["yes", "no"] {
        for has in ["yes", "no"] {
            metrics::counter!("centrifugo_client_recover", "recovered" => recovered, "has_recovered_publications" => has).increment(0);
        }
    }
    metrics::counter!("centrifugo_client_subscriptions_accepted", "client_name" => "").increment(0);
    metrics::gauge!("centrifugo_client_subscriptions_inflight", "client_name" => "").set(0.0);
    // The server's unsubscribe codes: by the API (2000) and at a subscription's expiry (2501).
    for code in ["2000", "2501"] {
        metrics::counter!("centrifugo_client_num_server_unsubscribes", "code" => code, "channel_namespace" => "").increment(0);
    }
    let _ = wshub_core::series::action_series();
    // As centrifuge does, whatever the broker (wshub never drops there: `wshub_redis`).
    for channel_type in ["control", "client"] {
        metrics::counter!("centrifugo_broker_redis_pub_sub_dropped_messages", "broker_name" => "", "channel_type" => channel_type)
            .increment(0);
    }
    metrics::counter!("centrifugo_node_tags_filter_dropped_publications", "channel_namespace" => "").increment(0);
    for kind in ["publication", "join", "leave"] {
        let _ = metrics::histogram!("centrifugo_node_broadcast_duration_seconds", "type" => kind, "channel_namespace" => "");
    }
    let _ = metrics::histogram!("centrifugo_node_pub_sub_lag_seconds", "channel_namespace" => "");
    for op in ["channels", "connections"] {
        let _ = metrics::histogram!("centrifugo_node_survey_duration_seconds", "op" => op);
        let _ = metrics::histogram!("centrifugo_node_survey_duration_seconds_histogram", "op" => op);
    }
    for kind in wshub_core::series::BROKER_MESSAGE_TYPES {
        metrics::counter!("centrifugo_node_messages_sent_count", "type" => kind).increment(0);
        metrics::counter!("centrifugo_node_messages_received_count", "type" => kind).increment(0);
    }
    for method in COMMAND_METHODS {
        let _ = metrics::histogram!("centrifugo_client_command_duration_seconds", "method" => method);
        let _ = metrics::histogram!("centrifugo_client_command_duration_seconds_histogram", "method" => method);
    }
    for transport in ["websocket", "http_stream", "sse"] {
        // The bidirectional transports: the others are not pinged.
        let _ = metrics::histogram!("centrifugo_client_ping_pong_duration_seconds", "transport" => transport);
    }
    for transport in TRANSPORTS {
        let labels = connection_labels(transport);
        metrics::counter!("centrifugo_client_connections_accepted", &labels).increment(0);
        metrics::gauge!("centrifugo_client_connections_inflight", &labels).set(0.0);
        metrics::counter!("centrifugo_transport_messages_sent", "transport" => transport).increment(0);
        metrics::counter!("centrifugo_transport_messages_sent_size", "transport" => transport).increment(0);
        metrics::counter!("centrifugo_transport_messages_received", "transport" => transport).increment(0);
        metrics::counter!("centrifugo_transport_messages_received_size", "transport" => transport).increment(0);
    }
}

/// The gauges, read at scrape time like wshub's.
pub(super) fn set_gauges(n: &wshub_core::node::Node, cluster: &crate::cluster::Cluster) {
    metrics::gauge!("centrifugo_node_num_clients").set(n.num_clients() as f64);
    metrics::gauge!("centrifugo_node_num_users").set(n.num_users() as f64);
    let subscriptions = n.hub.num_subscriptions() as f64;
    metrics::gauge!("centrifugo_node_num_subscriptions").set(subscriptions);
    metrics::gauge!("centrifugo_client_subscriptions_inflight", "client_name" => "").set(subscriptions);
    metrics::gauge!("centrifugo_node_num_channels").set(n.hub.channels().len() as f64);
    metrics::gauge!("centrifugo_node_num_nodes").set(cluster.nodes().len() as f64);
    // The configured proxies' error counters at 0 (idempotent): the node is built before
    // the recorder is installed, so this is done here rather than at start.
    for e in n.proxies.all() {
        wshub_core::series::proxy_endpoint(e.protocol(), e.kind.as_str(), &e.name);
    }
}

/// Per transport, looked up once for the process: the connections carry no metric handle
/// (measured: two counters and a gauge in every handler were 300 bytes of RSS per idle
/// connection, through the allocation size classes they pushed the handler over).
struct Transport {
    sent: metrics::Counter,
    sent_size: metrics::Counter,
    received: metrics::Counter,
    received_size: metrics::Counter,
    inflight: metrics::Gauge,
    accepted: metrics::Counter,
}

static TRANSPORT_SERIES: std::sync::OnceLock<Vec<Transport>> = std::sync::OnceLock::new();

fn transports() -> &'static [Transport] {
    TRANSPORT_SERIES.get_or_init(|| {
        TRANSPORTS
            .iter()
            .map(|&t| Transport {
                sent: metrics::counter!("centrifugo_transport_messages_sent", "transport" => t),
                sent_size: metrics::counter!("centrifugo_transport_messages_sent_size", "transport" => t),
                received: metrics::counter!("centrifugo_transport_messages_received", "transport" => t),
                received_size: metrics::counter!("centrifugo_transport_messages_received_size", "transport" => t),
                accepted: metrics::counter!("centrifugo_client_connections_accepted", &connection_labels(t)),
                inflight: metrics::gauge!("centrifugo_client_connections_inflight", &connection_labels(t)),
            })
            .collect()
    })
}

fn transport_index(transport: &str) -> Option<u8> {
    TRANSPORTS.iter().position(|t| *t == transport).and_then(|i| u8::try_from(i).ok())
}

/// A client connected (its connect command succeeded): counted in
/// `client_connections_accepted`, and in `client_connections_inflight` for as long as the
/// returned guard lives (the connection's handler holds it, so however the connection ends,
/// dropping the handler releases it). `accept_protocol` (the HTTP version) is filled by
/// Centrifugo PRO only: empty as in Centrifugo OSS. The client's name and version are left
/// empty too: taken from the connect request, they would let any client add series.
pub fn connection_accepted(transport: &'static str) -> Option<Inflight> {
    let i = transport_index(transport)?;
    let t = transports().get(usize::from(i))?;
    t.accepted.increment(1);
    t.inflight.increment(1.0);
    Some(Inflight(i))
}

fn connection_labels(transport: &'static str) -> [(&'static str, &'static str); 4] {
    [
        ("transport", transport),
        ("accept_protocol", ""),
        ("client_name", ""),
        ("client_version", ""),
    ]
}

/// One connected client in `centrifugo_client_connections_inflight`, until dropped (one
/// byte: the transport's index).
pub struct Inflight(u8);

impl Drop for Inflight {
    fn drop(&mut self) {
        if let Some(t) = transports().get(usize::from(self.0)) {
            t.inflight.decrement(1.0);
        }
    }
}

/// A WebSocket upgrade refused (`wshub_handshake_refusals_total{reason}`); the node's
/// connection limit is also Centrifugo's `node_client_connection_limit`.
pub fn handshake_refused(reason: &'static str) {
    metrics::counter!("wshub_handshake_refusals_total", "reason" => reason).increment(1);
    if reason == "connection_limit" {
        metrics::counter!("centrifugo_node_client_connection_limit").increment(1);
    }
}

/// A close frame with `code` sent to a client's WebSocket (`transport_outgoing_close_count`).
pub fn close_frame_sent(transport: &'static str, code: u16) {
    metrics::counter!("centrifugo_transport_outgoing_close_count", "transport" => transport, "code" => code.to_string()).increment(1);
}

/// The server closed a client's connection with `code` (not the client leaving).
pub fn server_disconnect(code: u16) {
    metrics::counter!("centrifugo_client_num_server_disconnects", "code" => code.to_string()).increment(1);
}

/// One message received from a client, `bytes` long.
pub fn transport_received(transport: &'static str, bytes: usize) {
    if let Some(t) = transport_index(transport).and_then(|i| transports().get(usize::from(i))) {
        t.received.increment(1);
        t.received_size.increment(bytes as u64);
    }
}

/// `frames` frames, `bytes` in all, handed to a connection of `transport` at once
/// (`transport_messages_sent`, `_size`): two atomic adds, no registry lookup.
pub fn transport_sent(transport: &str, frames: u64, bytes: usize) {
    if let Some(t) = transport_index(transport).and_then(|i| transports().get(usize::from(i))) {
        t.sent.increment(frames);
        t.sent_size.increment(bytes as u64);
    }
}

/// An API command that answered an error: `api_command_errors_total{protocol,method,error}`
/// (`method` outside the API's methods is `unknown`, so a client cannot mint labels).
pub fn api_error(protocol: &'static str, method: &str, code: u32) {
    let method = if crate::api::is_method(method) { method } else { "unknown" };
    metrics::counter!(
        "centrifugo_api_command_errors_total",
        "protocol" => protocol,
        "method" => method.to_string(),
        "error" => code.to_string()
    )
    .increment(1);
}

/// One HTTP request, with `prometheus.instrument_http_handlers`:
/// `node_incoming_http_requests_total{path,method,status}` (`path`: the route).
pub fn http_request(route: String, method: &str, status: u16) {
    metrics::counter!(
        "centrifugo_node_incoming_http_requests_total",
        "path" => route,
        "method" => method.to_string(),
        "status" => status.to_string()
    )
    .increment(1);
}

/// One HTTP API call: `wshub_api_calls_total{method,status}` and Centrifugo's
/// `api_command_duration_seconds{protocol="http",method}`.
pub fn api_call(method: &str, status: u16, took: Duration) {
    metrics::counter!("wshub_api_calls_total", "method" => method.to_string(), "status" => status.to_string()).increment(1);
    api_command("http", method, took);
}

/// Centrifugo's `api_command_duration_seconds{protocol,method}` (and its histogram twin).
pub fn api_command(protocol: &'static str, method: &str, took: Duration) {
    let s = took.as_secs_f64();
    let labels = [("protocol", protocol.to_string()), ("method", method.to_string())];
    metrics::histogram!("centrifugo_api_command_duration_seconds", &labels).record(s);
    metrics::histogram!("centrifugo_api_command_duration_seconds_histogram", &labels).record(s);
}
