//! Centrifugo's gRPC server API (`grpc_api.*`) on a port of its own: each method of
//! `CentrifugoApi` is transcoded to the HTTP API's JSON method of the same name (the
//! `Command` message names them) and run by the same code ([`crate::http::api::run`]).
//!
//! The key is checked from the `authorization: apikey KEY` metadata (an empty key checks
//! nothing, as in Centrifugo); a wrong one is `UNAUTHENTICATED`. Errors are the reply's
//! `error` field, or with `error_mode = "transport"` (or the call's
//! `x-centrifugo-error-mode: transport` metadata) a gRPC status.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use prost::Message as _;
use prost_reflect::{DynamicMessage, Kind, MessageDescriptor};
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tonic::Status;
use wshub_core::engine::BoxFuture;
use wshub_core::node::ApiError;

use super::transcode::{from_json, to_json};
use super::{RawCodec, API_SERVICE};
use crate::api::{parse_request, RequestError};
use crate::http::api::{answer, run, Ran};
use crate::state::Shared;

/// `grpc_api.*`, resolved.
#[derive(Clone)]
pub struct GrpcApiConfig {
    pub port: super::GrpcPort,
    /// Empty: every call is accepted.
    pub key: String,
    /// `error_mode = "transport"`: errors as gRPC statuses.
    pub transport_errors: bool,
    /// Largest request message (0: tonic's 4 MiB).
    pub max_receive_message_size: usize,
    /// `grpc_api.reflection`: the reflection services are served too.
    pub reflection: bool,
}

impl GrpcApiConfig {
    /// `grpc_api.*` of `config`, resolved (`None` when not enabled).
    pub fn from_config(config: &crate::config::Config) -> Result<Option<Self>, crate::config::LoadError> {
        let Some(addr) = crate::config::grpc_api_addr(config)? else {
            return Ok(None);
        };
        let g = &config.grpc_api;
        Ok(Some(GrpcApiConfig {
            port: super::GrpcPort::new(addr, "grpc_api", &g.tls)?,
            key: g.key.clone(),
            transport_errors: g.error_mode == crate::config::TRANSPORT_ERROR_MODE,
            max_receive_message_size: g.max_receive_message_size,
            reflection: g.reflection,
        }))
    }
}

/// One method: its messages and the JSON API method it runs.
struct Route {
    input: MessageDescriptor,
    output: MessageDescriptor,
    method: String,
}

/// Every method of the service, by its gRPC name. The JSON name is the `Command` field of
/// the method's request type (`RPC` is `rpc`, `PresenceStats` is `presence_stats`).
fn routes() -> HashMap<String, Arc<Route>> {
    let (Some(service), Some(command)) = (
        super::service(API_SERVICE),
        super::pool().and_then(|p| p.get_message_by_name("centrifugal.centrifugo.api.Command")),
    ) else {
        return HashMap::new();
    };
    service
        .methods()
        .map(|m| {
            let input = m.input();
            let method = command
                .fields()
                .find(|f| matches!(f.kind(), Kind::Message(d) if d == input))
                .map(|f| f.name().to_string())
                .unwrap_or_else(|| m.name().to_lowercase());
            let route = Route {
                input,
                output: m.output(),
                method,
            };
            (m.name().to_string(), Arc::new(route))
        })
        .collect()
}

/// Serves the gRPC API on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, cfg: GrpcApiConfig, shutdown: impl Future<Output = ()>) {
    if cfg.key.is_empty() {
        tracing::warn!("grpc_api.key is empty: every gRPC API call is accepted");
    }
    let routes = Arc::new(Routes {
        methods: routes(),
        reflection: if cfg.reflection { Reflection::new() } else { None },
    });
    let tls = cfg.port.tls.clone();
    let cfg = Arc::new(cfg);
    let handler = move |req: Request<Incoming>, _peer: SocketAddr| handle(req, shared.clone(), routes.clone(), cfg.clone());
    super::serve_h2(listener, tls, "gRPC API", handler, shutdown).await;
}

/// What the server answers: the API's methods and, when enabled, reflection.
struct Routes {
    methods: HashMap<String, Arc<Route>>,
    reflection: Option<Reflection>,
}

/// The standard reflection services, v1 and the v1alpha older clients (grpcurl before
/// 1.9, grpcio-reflection's default) still call, over the built-in descriptor set.
/// As in Centrifugo (whose key check is a unary interceptor, and reflection is a stream),
/// they need no key: they tell what `api.proto` tells, nothing of the node.
struct Reflection {
    v1: ReflectionService,
    v1alpha: ReflectionService,
}

/// One reflection service, type-erased (tonic-reflection's builder returns opaque types).
type ReflectionService = Box<dyn Fn(Request<Incoming>) -> BoxFuture<'static, Response<tonic::body::Body>> + Send + Sync>;

/// `svc` as a [`ReflectionService`].
fn erase<S>(svc: S) -> ReflectionService
where
    S: tower_service::Service<Request<Incoming>, Response = Response<tonic::body::Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    Box::new(move |req| {
        let mut svc = svc.clone();
        Box::pin(async move { svc.call(req).await.unwrap_or_else(|e| match e {}) })
    })
}

impl Reflection {
    /// `None` (logged) only if the built-in descriptors do not decode, which the unit tests
    /// rule out.
    fn new() -> Option<Self> {
        let builder = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(super::DESCRIPTORS)
                .with_service_name(API_SERVICE)
        };
        match (builder().build_v1(), builder().build_v1alpha()) {
            (Ok(v1), Ok(v1alpha)) => Some(Reflection {
                v1: erase(v1),
                v1alpha: erase(v1alpha),
            }),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "gRPC API: reflection cannot be served");
                None
            }
        }
    }

    /// The answer of a reflection call; `None` when `req` is no reflection call.
    async fn call(&self, req: Request<Incoming>) -> Option<Response<tonic::body::Body>> {
        let path = req.uri().path();
        if path.starts_with(REFLECTION_V1) {
            Some((self.v1)(req).await)
        } else if path.starts_with(REFLECTION_V1ALPHA) {
            Some((self.v1alpha)(req).await)
        } else {
            None
        }
    }
}

const REFLECTION_V1: &str = "/grpc.reflection.v1.ServerReflection/";
const REFLECTION_V1ALPHA: &str = "/grpc.reflection.v1alpha.ServerReflection/";

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    routes: Arc<Routes>,
    cfg: Arc<GrpcApiConfig>,
) -> Result<Response<tonic::body::Body>, Infallible> {
    let route = req
        .uri()
        .path()
        .strip_prefix("/")
        .and_then(|p| p.strip_prefix(API_SERVICE))
        .and_then(|p| p.strip_prefix('/'))
        .and_then(|m| routes.methods.get(m))
        .cloned();
    let Some(route) = route else {
        if let Some(reflection) = &routes.reflection {
            if let Some(r) = reflection.call(req).await {
                return Ok(r);
            }
        }
        return Ok(Status::unimplemented("no such method").into_http());
    };
    if !cfg.key.is_empty() && !crate::api::authorized(req.headers(), &cfg.key, false) {
        crate::metrics::centrifugo::api_error("grpc", &route.method, wshub_protocol::codes::error::UNAUTHORIZED);
        return Ok(Status::unauthenticated("unauthenticated").into_http());
    }
    let transport_errors = cfg.transport_errors
        || req
            .headers()
            .get("x-centrifugo-error-mode")
            .is_some_and(|v| v.as_bytes() == b"transport");
    let call = Call {
        shared,
        route,
        transport_errors,
    };
    let mut grpc = tonic::server::Grpc::new(RawCodec)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);
    if cfg.max_receive_message_size > 0 {
        grpc = grpc.max_decoding_message_size(cfg.max_receive_message_size);
    }
    Ok(grpc.unary(call, req).await)
}

/// One call being served.
struct Call {
    shared: Arc<Shared>,
    route: Arc<Route>,
    transport_errors: bool,
}

impl tonic::server::UnaryService<Bytes> for Call {
    type Response = Bytes;
    type Future = BoxFuture<'static, Result<tonic::Response<Bytes>, Status>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let (shared, route, transport_errors) = (self.shared.clone(), self.route.clone(), self.transport_errors);
        Box::pin(async move {
            let started = Instant::now();
            let r = execute(&shared, &route, transport_errors, request.into_inner()).await;
            crate::metrics::centrifugo::api_command("grpc", &route.method, started.elapsed());
            r
        })
    }
}

async fn execute(shared: &Shared, route: &Route, transport_errors: bool, input: Bytes) -> Result<tonic::Response<Bytes>, Status> {
    let Some(api) = &shared.config.api else {
        return Err(Status::unavailable("no node"));
    };
    let msg = DynamicMessage::decode(route.input.clone(), input).map_err(|e| Status::internal(format!("failed to decode request: {e}")))?;
    let json = serde_json::to_vec(&to_json(&msg)).map_err(|e| Status::internal(e.to_string()))?;
    let method = route.method.as_str();
    let body = match parse_request(method, &json) {
        Ok(request) => match run(shared, api, "grpc", method, request).await {
            Ran::Answer(v) | Ran::Draining(v) => v,
        },
        Err(RequestError::Api(e)) => answer("grpc", method, Err(e)),
        Err(e @ RequestError::NotJson(_)) => answer("grpc", method, Err(ApiError::bad_request(&e.to_string()))),
    };
    if transport_errors {
        if let Some(e) = body.get("error") {
            let code = e.get("code").and_then(serde_json::Value::as_u64).unwrap_or(0);
            let message = e.get("message").and_then(serde_json::Value::as_str).unwrap_or("");
            let e = ApiError::backend(u32::try_from(code).unwrap_or(u32::MAX), message);
            return Err(Status::new(super::status_code(&e), e.message()));
        }
    }
    let out = from_json(&route.output, &body).map_err(|e| {
        tracing::error!(method, error = %e, "gRPC API: the reply does not fit its message");
        Status::internal("internal error")
    })?;
    Ok(tonic::Response::new(Bytes::from(out.encode_to_vec())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_runs_a_json_method() {
        let r = routes();
        let name = |m: &str| r.get(m).map(|x| x.method.clone()).unwrap_or_default();
        assert_eq!(name("Publish"), "publish");
        assert_eq!(name("PresenceStats"), "presence_stats");
        assert_eq!(name("HistoryRemove"), "history_remove");
        assert_eq!(name("RPC"), "rpc");
        assert_eq!(name("Batch"), "batch");
        assert_eq!(name("MapPublish"), "map_publish");
        for m in crate::api::METHODS {
            assert!(r.values().any(|x| x.method == *m), "{m} has no gRPC method");
        }
    }

    #[test]
    fn reflection_builds_from_the_built_in_descriptors() {
        assert!(Reflection::new().is_some());
    }
}
