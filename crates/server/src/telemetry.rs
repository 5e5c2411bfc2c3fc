//! `opentelemetry.*`: spans exported over OTLP as Centrifugo exports them. The exporter is
//! set by the standard variables (`OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf`, the
//! default, or `grpc`; `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_BSP_*`…), and an incoming W3C `traceparent` is continued.
//!
//! [`server_span`] is the one entry point of the request paths: a server span named as
//! Centrifugo's `otelhttp` middleware names it (the handler's path, `/api/publish`), a no-op
//! when tracing is off.

use std::sync::{Arc, OnceLock};

use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanData, SpanExporter};

use crate::config::OpenTelemetry;

/// The tracer once [`init`] ran with `opentelemetry.enabled`, and whether API calls are
/// traced (`opentelemetry.api`).
struct Tracing {
    tracer: SdkTracer,
    provider: SdkTracerProvider,
    api: bool,
}

static TRACING: OnceLock<Tracing> = OnceLock::new();

/// Starts the exporter (needs a tokio runtime: the exports run on it). Once per process;
/// `Err` names what is wrong (an unknown protocol, an exporter that cannot be built).
pub fn init(cfg: &OpenTelemetry, instance_id: &str) -> Result<(), String> {
    if !cfg.enabled || TRACING.get().is_some() {
        return Ok(());
    }
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| "opentelemetry: no tokio runtime".to_string())?;
    let protocol = std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").unwrap_or_default();
    let builder = opentelemetry_otlp::SpanExporter::builder();
    let exporter = match protocol.as_str() {
        "" | "http/protobuf" => builder.with_http().build(),
        "grpc" => builder.with_tonic().build(),
        other => {
            return Err(format!(
                "opentelemetry: OTEL_EXPORTER_OTLP_PROTOCOL={other:?} is not supported (\"http/protobuf\" or \"grpc\")"
            ))
        }
    }
    .map_err(|e| format!("opentelemetry: {e}"))?;
    let service = std::env::var("OTEL_SERVICE_NAME").ok().filter(|s| !s.is_empty());
    let resource = opentelemetry_sdk::Resource::builder()
        // Centrifugo's name, so that the queries and dashboards of a deployment that
        // switched keep finding its spans; OTEL_SERVICE_NAME overrides it.
        .with_service_name(service.unwrap_or_else(|| "centrifugo".into()))
        .with_attributes([
            KeyValue::new("service.instance.id", instance_id.to_string()),
            KeyValue::new("version", env!("CARGO_PKG_VERSION")),
        ])
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(OnRuntime {
            inner: Arc::new(exporter),
            runtime,
        })
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("wshub");
    let _ = TRACING.set(Tracing {
        tracer,
        provider,
        api: cfg.api,
    });
    Ok(())
}

/// Exports what is left (at the end of the process); bounded by the SDK's own timeout.
pub fn shutdown() {
    if let Some(t) = TRACING.get() {
        if let Err(e) = t.provider.shutdown() {
            tracing::debug!(error = %e, "opentelemetry: shutdown");
        }
    }
}

/// The SDK exports from a thread of its own, where the OTLP clients (hyper, tonic) find no
/// tokio reactor: each export runs on the server's runtime and the thread waits for it.
#[derive(Debug)]
struct OnRuntime<E> {
    inner: Arc<E>,
    runtime: tokio::runtime::Handle,
}

impl<E: SpanExporter + 'static> SpanExporter for OnRuntime<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let inner = self.inner.clone();
        match self.runtime.spawn(async move { inner.export(batch).await }).await {
            Ok(r) => r,
            Err(e) => Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(e.to_string())),
        }
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    /// The provider hands the resource to its exporter before any export, while the
    /// exporter is not shared yet.
    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        if let Some(e) = Arc::get_mut(&mut self.inner) {
            e.set_resource(resource);
        }
    }
}

/// What kind of request a span is for: `opentelemetry.api` switches the API's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An HTTP (or gRPC) server API call.
    Api,
}

/// A server span, ended by [`ServerSpan::end`] (or when dropped); empty when not traced.
pub struct ServerSpan(Option<opentelemetry_sdk::trace::Span>);

/// Starts the span of a request at `path` (its name), continuing the `traceparent` of
/// `headers`. `method`: the HTTP method (`POST`).
pub fn server_span(kind: Kind, path: &str, method: &str, headers: &http::HeaderMap) -> ServerSpan {
    let Some(t) = TRACING.get() else { return ServerSpan(None) };
    match kind {
        Kind::Api if !t.api => return ServerSpan(None),
        Kind::Api => {}
    }
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    let span = t
        .tracer
        .span_builder(path.to_string())
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", method.to_string()),
            KeyValue::new("url.path", path.to_string()),
        ])
        .start_with_context(&t.tracer, &parent);
    ServerSpan(Some(span))
}

impl ServerSpan {
    pub fn attribute(&mut self, key: &'static str, value: String) {
        if let Some(s) = &mut self.0 {
            s.set_attribute(KeyValue::new(key, value));
        }
    }

    /// Ends the span with the answer's status (an error status from 500 on, as `otelhttp`
    /// marks a server span).
    pub fn end(mut self, status: u16) {
        if let Some(s) = &mut self.0 {
            s.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
            if status >= 500 {
                s.set_status(Status::error(format!("HTTP {status}")));
            }
            s.end();
        }
    }
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}
