//! The operator's view of a real node (issue 32): refusals in the JSON log, one line a second
//! per kind with the reason; the metrics pushed to Debian's Graphite `carbon-cache`, found in
//! the whisper files it writes; API calls as spans in a real OTLP receiver (HTTP and gRPC).
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{api, free_port, http, temp_dir, wait_until, Node, API_KEY, LIMIT};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wshub_testkit::ws::{upgrade_request, Client};
use wshub_websocket::Event;

const SECRET: &str = "observability-secret";

/// A WebSocket upgrade's status, and its stream (kept open by the caller to hold the slot).
async fn upgrade(port: u16, extra: &str) -> (u16, TcpStream) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&upgrade_request("127.0.0.1", extra)).await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(LIMIT, s.read(&mut b)).await.unwrap().unwrap();
        assert!(n > 0, "closed before the answer: {:?}", String::from_utf8_lossy(&head));
        head.push(b[0]);
    }
    let status = String::from_utf8_lossy(&head)[9..12].parse().unwrap();
    (status, s)
}

/// The JSON lines of the log about refusals, by kind.
fn refusals(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["refusal"].is_string())
        .collect()
}

/// Each kind of refusal (API key, API rate limit, origin, connection limit, token) is logged
/// as JSON with its kind and reason, one line a second per kind with the count held back,
/// while a burst of them goes on.
#[tokio::test]
async fn every_refusal_is_logged_as_json_once_a_second_per_kind() {
    let dir = temp_dir("refusal-log");
    let port = free_port();
    let log_file = dir.join("wshub.log");
    let config = json!({
        "http_api": {"key": API_KEY, "rate_limit": 1},
        "client": {"token": {"hmac_secret_key": SECRET}, "allowed_origins": ["https://app.example"], "connection_limit": 1},
        "log": {"format": "json", "file": log_file, "level": "info"},
    });
    let _node = Node::start(&dir, &config, port).await;
    let log = || std::fs::read_to_string(&log_file).unwrap_or_default();
    const BURST: usize = 20;

    // A token signed with another key: the connection closes with 3500.
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut c = Client::connect(addr, "/connection/websocket", &[], None).await;
    c.send_connect(&wshub_testkit::token("not-the-key", &json!({"sub": "mallory"})))
        .await;
    loop {
        match c.next_event().await {
            Event::Closed { code, .. } => break assert_eq!(code.0, 3500),
            Event::Message { .. } => {}
            e => panic!("{e:?}"),
        }
    }
    drop(c);

    let started = Instant::now();
    for _ in 0..BURST {
        let (status, _) = http(port, "POST", "/api/info", "X-API-Key: wrong\r\n", "{}").await.unwrap();
        assert_eq!(status, 401);
    }
    let mut limited = 0;
    for _ in 0..BURST {
        let (status, _) = http(port, "POST", "/api/info", &format!("X-API-Key: {API_KEY}\r\n"), "{}")
            .await
            .unwrap();
        limited += usize::from(status == 429);
    }
    assert!(limited >= BURST / 2, "{limited} of {BURST} over a limit of 1/s");
    for _ in 0..BURST {
        let (status, _) = upgrade(port, "Origin: https://evil.example\r\n").await;
        assert_eq!(status, 403);
    }
    // The one slot of `client.connection_limit`, taken once the refused client's is free.
    let held = loop {
        let (status, s) = upgrade(port, "").await;
        if status == 101 {
            break s;
        }
        assert!(started.elapsed() < LIMIT, "the slot never freed");
    };
    for _ in 0..BURST {
        assert_eq!(upgrade(port, "").await.0, 503);
    }
    let took = started.elapsed();

    let kinds = ["token", "api_key", "api_rate_limit", "origin", "connection_limit"];
    wait_until("every kind of refusal in the log", LIMIT, || {
        let r = refusals(&log());
        kinds.iter().all(|k| r.iter().any(|v| v["fields"]["refusal"] == *k))
    })
    .await;
    let lines = refusals(&log());
    for kind in kinds {
        let of_kind: Vec<&Value> = lines.iter().filter(|v| v["fields"]["refusal"] == kind).collect();
        let first = of_kind[0];
        assert_eq!(first["level"], "INFO", "{first}");
        assert!(
            first["fields"]["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "a reason: {first}"
        );
        // At most one line per second of the burst (and a burst of one kind of refusal
        // lasted less than `took`).
        let most = took.as_secs() as usize + 1;
        assert!(of_kind.len() <= most.min(BURST - 1), "{kind}: {} lines in {took:?}", of_kind.len());
    }
    let reason = |k: &str| lines.iter().find(|v| v["fields"]["refusal"] == k).unwrap()["fields"]["reason"].clone();
    assert!(reason("connection_limit").as_str().unwrap().contains("client.connection_limit"));
    assert!(reason("api_rate_limit").as_str().unwrap().contains("http_api.rate_limit"));
    drop(held);
}

/// Debian's `carbon-cache` in a temporary folder, listening on free loopback ports.
struct Carbon {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Carbon {
    async fn start(dir: &Path) -> Carbon {
        let bin = ["/usr/bin/carbon-cache", "/usr/local/bin/carbon-cache"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("carbon-cache not found: apt-get install graphite-carbon");
        let port = free_port();
        let conf = format!(
            "[cache]\nSTORAGE_DIR = {d}/storage\nLOCAL_DATA_DIR = {d}/storage/whisper\nWHITELISTS_DIR = {d}/storage/lists\n\
             CONF_DIR = {d}\nLOG_DIR = {d}/log\nPID_DIR = {d}\nENABLE_LOGROTATION = False\nUSER =\n\
             MAX_CACHE_SIZE = inf\nMAX_UPDATES_PER_SECOND = inf\nMAX_CREATES_PER_MINUTE = inf\n\
             LINE_RECEIVER_INTERFACE = 127.0.0.1\nLINE_RECEIVER_PORT = {port}\nENABLE_UDP_LISTENER = False\n\
             PICKLE_RECEIVER_INTERFACE = 127.0.0.1\nPICKLE_RECEIVER_PORT = {pickle}\n\
             CACHE_QUERY_INTERFACE = 127.0.0.1\nCACHE_QUERY_PORT = {query}\n\
             WHISPER_AUTOFLUSH = True\nENABLE_TAGS = True\nTAGDB =\nTAGDB_URL = http://127.0.0.1:{tagdb}\n",
            d = dir.display(),
            pickle = free_port(),
            query = free_port(),
            tagdb = free_port(),
        );
        std::fs::write(dir.join("carbon.conf"), conf).unwrap();
        std::fs::write(dir.join("storage-schemas.conf"), "[all]\npattern = .*\nretentions = 1s:1h\n").unwrap();
        let out = std::fs::File::create(dir.join("carbon.out")).unwrap();
        let child = Command::new(bin)
            .args([&format!("--config={}", dir.join("carbon.conf").display()), "--debug", "start"])
            .stdout(out.try_clone().map_or(Stdio::null(), Stdio::from))
            .stderr(out)
            .spawn()
            .unwrap();
        let c = Carbon {
            child,
            dir: dir.to_path_buf(),
            port,
        };
        let deadline = Instant::now() + LIMIT;
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "carbon-cache not listening: {}", c.output());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        c
    }

    fn output(&self) -> String {
        std::fs::read_to_string(self.dir.join("carbon.out")).unwrap_or_default()
    }

    fn whisper(&self) -> PathBuf {
        self.dir.join("storage/whisper")
    }

    /// The values stored in a whisper file over the last minutes (`whisper-fetch`).
    fn values(&self, file: &Path) -> Vec<f64> {
        if !file.exists() {
            return Vec::new();
        }
        let from = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            - 600;
        let out = common::run_to_end(Command::new("whisper-fetch").args([&format!("--from={from}"), file.to_str().unwrap()]));
        assert!(out.status.success(), "whisper-fetch (python3-whisper): {out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
            .collect()
    }
}

impl Drop for Carbon {
    fn drop(&mut self) {
        wshub_testkit::end(&mut self.child);
    }
}

/// `graphite.*` against a real carbon-cache: the paths Centrifugo writes
/// (`<prefix>.<node name>.centrifugo.node.num_clients`), with the value of the moment, and
/// with `graphite.tags` the labels as tags (carbon stores a tagged series under the SHA-256
/// of its name with the tags sorted).
#[tokio::test]
async fn metrics_reach_graphite_carbon_as_paths_and_as_tags() {
    let dir = temp_dir("graphite");
    let carbon = Carbon::start(&dir).await;
    let node = |name: &str, tags: bool| {
        json!({
            "http_api": {"key": API_KEY},
            "client": {"token": {"hmac_secret_key": SECRET}},
            "node": {"name": name},
            "graphite": {"enabled": true, "host": "127.0.0.1", "port": carbon.port, "prefix": "wshubtest.", "interval": "1s", "tags": tags},
        })
    };
    let (p1, p2) = (free_port(), free_port());
    let _n1 = Node::start(&dir, &node("n1.local", false), p1).await;
    let _n2 = Node::start(&dir, &node("n2", true), p2).await;

    // A client on n1: its gauge reads 1.
    let addr: SocketAddr = ([127, 0, 0, 1], p1).into();
    let mut c = Client::connect(addr, "/connection/websocket", &[], None).await;
    c.send_connect(&wshub_testkit::token(SECRET, &json!({"sub": "alice"}))).await;
    assert!(matches!(c.next_event().await, Event::Message { .. }));
    let (status, _) = api(p1, "publish", &json!({"channel": "news", "data": {}})).await.unwrap();
    assert_eq!(status, 200);

    // `.` in the node's name is `_`, as Centrifugo writes it.
    let gauge = carbon.whisper().join("wshubtest/n1_local/centrifugo/node/num_clients.wsp");
    wait_until("n1's num_clients = 1 in carbon", LIMIT, || carbon.values(&gauge).contains(&1.0)).await;
    // A counter, as its increase per interval, and the process series.
    let sent = carbon
        .whisper()
        .join("wshubtest/n1_local/centrifugo/node/messages_sent_count/type/publication.wsp");
    wait_until("n1's publication count in carbon", LIMIT, || carbon.values(&sent).contains(&1.0)).await;
    let rss = carbon.whisper().join("wshubtest/n1_local/process/resident/memory_bytes.wsp");
    wait_until("n1's resident memory in carbon", LIMIT, || {
        carbon.values(&rss).iter().any(|v| *v > 1e6)
    })
    .await;

    // n2 writes tags: `centrifugo_node_build{version}`.
    let (_, metrics) = http(p2, "GET", "/metrics", "", "").await.unwrap();
    let version = metrics
        .lines()
        .find_map(|l| l.strip_prefix("centrifugo_node_build{version=\"")?.split('"').next())
        .unwrap()
        .to_string();
    let name = format!("wshubtest.n2.centrifugo.node.build;version={version}");
    let hash: String = Sha256::digest(name.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let tagged = carbon.whisper().join(format!("_tagged/{}/{}/{hash}.wsp", &hash[..3], &hash[3..6]));
    wait_until("n2's tagged build series in carbon", LIMIT, || {
        carbon.values(&tagged).contains(&1.0)
    })
    .await;
    assert!(
        !carbon.whisper().join("wshubtest/n2/centrifugo/node/build").exists(),
        "with tags the labels are not path components"
    );
    drop(c);
}

/// What an OTLP receiver got: the request's path and its decoded spans.
type Received = tokio::sync::mpsc::UnboundedReceiver<(String, ExportTraceServiceRequest)>;

/// A real OTLP trace receiver on a free loopback port: OTLP/HTTP (`POST /v1/traces`,
/// protobuf) and OTLP/gRPC (HTTP/2 without TLS, a length-prefixed message, `grpc-status` in
/// the trailers) on the same port, each request decoded with the protocol's own types.
async fn otlp_receiver() -> (u16, Received) {
    use http_body_util::{BodyExt as _, Full};
    use prost::Message as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let grpc = req
                            .headers()
                            .get("content-type")
                            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
                        let body = req.into_body().collect().await?.to_bytes();
                        // gRPC: a compressed flag and a 4-byte length before the message.
                        let message = if grpc { body.slice(5..) } else { body };
                        let decoded = ExportTraceServiceRequest::decode(message).expect("an OTLP ExportTraceServiceRequest");
                        let _ = tx.send((path, decoded));
                        let reply = ExportTraceServiceResponse::default().encode_to_vec();
                        let (content_type, data, trailers) = if grpc {
                            let mut framed = vec![0u8];
                            framed.extend_from_slice(&(reply.len() as u32).to_be_bytes());
                            framed.extend_from_slice(&reply);
                            let mut t = http::HeaderMap::new();
                            t.insert("grpc-status", http::HeaderValue::from_static("0"));
                            ("application/grpc", framed, Some(t))
                        } else {
                            ("application/x-protobuf", reply, None)
                        };
                        let body = Full::new(bytes::Bytes::from(data)).with_trailers(async move { trailers.map(Ok) });
                        Ok::<_, hyper::Error>(hyper::Response::builder().header("content-type", content_type).body(body).unwrap())
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (port, rx)
}

/// A node started with extra environment variables; ended by its PID.
struct EnvNode(Child);

impl EnvNode {
    async fn start(dir: &Path, config: &Value, port: u16, env: &[(&str, String)]) -> EnvNode {
        let path = dir.join(format!("node-{port}.json"));
        std::fs::write(&path, config.to_string()).unwrap();
        let log = dir.join(format!("node-{port}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = wshub_testkit::serve_command(env!("CARGO_BIN_EXE_wshub"), &path, port)
            .env_remove("WSHUB_LOG")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(out.try_clone().map_or(Stdio::null(), Stdio::from))
            .stderr(out)
            .spawn()
            .unwrap();
        let node = EnvNode(child);
        common::wait_ready(port, &log).await;
        node
    }
}

impl Drop for EnvNode {
    fn drop(&mut self) {
        wshub_testkit::end(&mut self.0);
    }
}

fn string_attr(attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue], key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    attrs
        .iter()
        .find(|a| a.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()
        .map(|v| match v {
            V::StringValue(s) => s.clone(),
            V::IntValue(i) => i.to_string(),
            other => format!("{other:?}"),
        })
}

/// `opentelemetry.enabled` and `api`: an API call is a server span named by its path, as
/// Centrifugo's, in the trace of the caller's `traceparent`, exported over OTLP/HTTP and,
/// with `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`, over OTLP/gRPC, to a receiver that decodes it.
#[tokio::test]
async fn api_calls_are_spans_exported_over_otlp_http_and_grpc() {
    let dir = temp_dir("otel");
    let config = json!({
        "http_api": {"key": API_KEY},
        "opentelemetry": {"enabled": true, "api": true},
    });
    for protocol in ["http/protobuf", "grpc"] {
        let (receiver, mut received) = otlp_receiver().await;
        let port = free_port();
        let env = [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_string()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{receiver}")),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_string()),
        ];
        let _node = EnvNode::start(&dir, &config, port, &env).await;
        let (trace, parent) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
        let (status, _) = http(
            port,
            "POST",
            "/api/publish",
            &format!("X-API-Key: {API_KEY}\r\ntraceparent: 00-{trace}-{parent}-01\r\n"),
            r#"{"channel": "news", "data": {}}"#,
        )
        .await
        .unwrap();
        assert_eq!(status, 200);
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let deadline = Instant::now() + LIMIT;
        let (path, span, resource) = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (path, req) = tokio::time::timeout(left, received.recv())
                .await
                .unwrap_or_else(|_| panic!("{protocol}: no span exported"))
                .unwrap();
            let found = req.resource_spans.iter().find_map(|rs| {
                let span = rs.scope_spans.iter().flat_map(|s| &s.spans).find(|s| s.name == "/api/publish")?;
                Some((span.clone(), rs.resource.clone().unwrap_or_default()))
            });
            if let Some((span, resource)) = found {
                break (path, span, resource);
            }
        };
        let expected_path = match protocol {
            "grpc" => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            _ => "/v1/traces",
        };
        assert_eq!(path, expected_path);
        assert_eq!(hex(&span.trace_id), trace, "the caller's trace continued");
        assert_eq!(hex(&span.parent_span_id), parent);
        assert_eq!(span.kind, 2, "a server span");
        assert_eq!(string_attr(&span.attributes, "http.response.status_code").as_deref(), Some("200"));
        assert_eq!(string_attr(&span.attributes, "http.request.method").as_deref(), Some("POST"));
        assert_eq!(
            string_attr(&resource.attributes, "service.name").as_deref(),
            Some("centrifugo"),
            "{resource:?}"
        );
        assert!(string_attr(&resource.attributes, "service.instance.id").is_some_and(|s| !s.is_empty()));
    }
}

/// `debug.enabled`: a CPU profile of a node kept busy by API calls names the node's own
/// functions, and the heap summary reports the process's memory. The sampler counts CPU
/// time (`ITIMER_PROF`): an idle node would give an empty profile, so the calls go on for
/// the whole sampling time.
#[tokio::test]
async fn debug_endpoints_give_a_cpu_profile_of_a_busy_node_and_a_heap_summary() {
    let dir = temp_dir("debug");
    let port = free_port();
    let config = json!({"http_api": {"key": API_KEY}, "debug": {"enabled": true}});
    let node = Node::start(&dir, &config, port).await;
    let (status, index) = http(port, "GET", "/debug/pprof/", "", "").await.unwrap();
    assert_eq!(status, 200, "{index}");
    assert!(index.contains("profile") && index.contains("heap"), "{index}");

    let busy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let load: Vec<_> = (0..4)
        .map(|i| {
            let busy = busy.clone();
            tokio::spawn(async move {
                let mut calls = 0u64;
                while busy.load(std::sync::atomic::Ordering::Relaxed) {
                    let body = json!({"channel": format!("load{i}"), "data": {"n": calls}});
                    let _ = api(port, "publish", &body).await;
                    calls += 1;
                }
                calls
            })
        })
        .collect();
    let (status, folded) = http(port, "GET", "/debug/pprof/profile?seconds=2&hz=199", "", "").await.unwrap();
    busy.store(false, std::sync::atomic::Ordering::Relaxed);
    let mut calls = 0;
    for l in load {
        calls += l.await.unwrap();
    }
    assert_eq!(status, 200, "{folded}");
    assert!(calls > 0, "the node was never called");
    let samples: Vec<(&str, u64)> = folded
        .lines()
        .filter_map(|l| l.rsplit_once(' ').map(|(stack, n)| (stack, n.parse().unwrap())))
        .collect();
    let total: u64 = samples.iter().map(|(_, n)| n).sum();
    assert!(total >= 10, "{total} samples over {calls} API calls in 2 s: {folded}");
    assert!(
        samples.iter().any(|(stack, _)| stack.contains("wshub_server")),
        "no frame of the node's own code: {folded}"
    );

    let (status, heap) = http(port, "GET", "/debug/pprof/heap", "", "").await.unwrap();
    assert_eq!(status, 200, "{heap}");
    let heap: Value = serde_json::from_str(&heap).unwrap();
    let rss = heap["rss_bytes"].as_u64().unwrap();
    assert!(rss > 1_000_000, "{heap}");
    assert!(heap["anonymous_mappings"]["rss_bytes"].as_u64().unwrap() > 0, "{heap}");
    assert!(heap["allocator"].as_str().unwrap().contains("glibc"), "{heap}");
    let (status, _) = http(port, "GET", "/debug/pprof/profile?seconds=0", "", "").await.unwrap();
    assert_eq!(status, 400);
    drop(node);

    let port = free_port();
    let _node = Node::start(&dir, &json!({"http_api": {"key": API_KEY}}), port).await;
    let (status, _) = http(port, "GET", "/debug/pprof/heap", "", "").await.unwrap();
    assert_eq!(status, 404, "off by default");
}
