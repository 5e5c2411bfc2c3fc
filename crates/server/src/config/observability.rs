//! The sections of Centrifugo's exporters beside Prometheus: Graphite, OpenTelemetry and
//! the debug (profiling) endpoints.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use wshub_core::duration;

/// `graphite.*`: the node's metrics pushed to a Graphite (carbon) server every `interval`
/// in its plaintext protocol, as Centrifugo does.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Graphite {
    pub enabled: bool,
    pub host: String,
    pub port: u16,
    /// Each path starts with `<prefix>.<node name>.`.
    pub prefix: String,
    /// "0": Centrifugo's ten seconds.
    #[serde(with = "duration")]
    pub interval: Duration,
    /// Labels as Graphite tags (`;name=value`) instead of path components.
    pub tags: bool,
}

impl Default for Graphite {
    fn default() -> Self {
        Graphite {
            enabled: false,
            host: "localhost".into(),
            port: 2003,
            prefix: "centrifugo".into(),
            interval: Duration::from_secs(10),
            tags: false,
        }
    }
}

/// `opentelemetry.*`: spans exported over OTLP; where and how from the standard `OTEL_*`
/// variables ([`crate::telemetry`]).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct OpenTelemetry {
    pub enabled: bool,
    /// Spans for the server API's calls.
    pub api: bool,
    /// Spans for the commands of async consumers (once wshub has consumers, #31).
    pub consuming: bool,
}

/// `debug.*`: profiling endpoints on the internal port, in place of Go's pprof handlers
/// ([`crate::debug`]).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct DebugSection {
    pub enabled: bool,
    pub handler_prefix: String,
}

impl Default for DebugSection {
    fn default() -> Self {
        DebugSection {
            enabled: false,
            handler_prefix: "/debug/pprof".into(),
        }
    }
}
