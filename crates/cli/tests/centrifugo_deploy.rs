//! A Centrifugo deployment's launch, ports and signals on the real binary (issue 27): the
//! Helm chart's internal port with its probes, the systemd unit's SIGHUP reload, `pid_file`,
//! `log.file`, `log.level: "none"` and the empty `http_server.address`.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{api, free_port, http, temp_dir, wait_until, API_KEY, LIMIT};
use serde_json::json;
use wshub_testkit::ws::Client;
use wshub_websocket::{Event, MessageKind};

const UPGRADE: &str =
    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

/// A `wshub serve -c FILE ARGS…` whose output goes to files the test reads; ended by its PID.
struct Proc {
    child: Child,
    out: PathBuf,
}

impl Proc {
    fn start(dir: &Path, config: &Path, args: &[&str]) -> Proc {
        let mut all = vec!["serve", "-c", config.to_str().unwrap()];
        all.extend_from_slice(args);
        Self::spawn(dir, &all, &[])
    }

    /// `wshub ARGS…` with the variables `env` added.
    fn spawn(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let out = dir.join(format!("out-{}", common::unique()));
        let child = Command::new(env!("CARGO_BIN_EXE_wshub"))
            .env_remove("WSHUB_LOG")
            .envs(env.iter().copied())
            .args(args)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(dir.join(format!("err-{}", common::unique()))).unwrap())
            .spawn()
            .unwrap();
        Proc { child, out }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        wshub_testkit::end(&mut self.child);
    }
}

/// Polls `GET path` on `port` until it answers `status`, within [`LIMIT`].
async fn wait_status(port: u16, path: &str, status: u16) {
    let deadline = Instant::now() + LIMIT;
    loop {
        if http(port, "GET", path, "", "").await.is_ok_and(|(s, _)| s == status) {
            return;
        }
        assert!(Instant::now() < deadline, "GET {path} on {port} never answered {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next text message of `c` (pings and other frames skipped).
async fn next_text(c: &mut Client) -> String {
    loop {
        match c.next_event().await {
            Event::Message { data, .. } => return String::from_utf8_lossy(&data).into_owned(),
            Event::Closed { code, reason } => return format!("closed {} {reason}", code.0),
            Event::Failed(e) => panic!("protocol error: {e}"),
            _ => {}
        }
    }
}

/// A client connected with `token` (the connect reply read) at `port`.
async fn connect(port: u16, token: &str) -> (Client, String) {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut c = Client::connect(addr, "/connection/websocket", &[], None).await;
    let cmd = json!({"id": 1, "connect": {"token": token}}).to_string();
    c.send(MessageKind::Text, cmd.as_bytes()).await;
    let reply = next_text(&mut c).await;
    (c, reply)
}

/// The chart starts the container with its ports as flags (`--health.enabled`,
/// `--prometheus.enabled`, `--http_server.port`, `--http_server.internal_port`), its secrets
/// as `CENTRIFUGO_*` variables, and probes `GET /health` on the internal port; the API,
/// admin, metrics and probes are there and only there, clients on the main port.
#[tokio::test]
async fn helm_chart_probes_health_on_the_internal_port_and_the_api_is_only_there() {
    let dir = temp_dir("helm");
    let (port, internal) = (free_port(), free_port());
    let config = dir.join("config.json");
    let c = json!({"admin": {"enabled": true, "handler_prefix": "/ops"}});
    std::fs::write(&config, c.to_string()).unwrap();
    let (port_s, internal_s) = (port.to_string(), internal.to_string());
    let p = Proc::spawn(
        &dir,
        &[
            "-c",
            config.to_str().unwrap(),
            "--health.enabled",
            "--prometheus.enabled",
            "--http_server.address",
            "127.0.0.1",
            "--http_server.port",
            &port_s,
            "--http_server.internal_port",
            &internal_s,
        ],
        &[
            ("CENTRIFUGO_HTTP_API_KEY", API_KEY),
            ("CENTRIFUGO_CLIENT_TOKEN_HMAC_SECRET_KEY", "s"),
            ("CENTRIFUGO_ADMIN_PASSWORD", "p"),
            ("CENTRIFUGO_ADMIN_SECRET", "s"),
        ],
    );
    // The chart's liveness and readiness probes.
    wait_status(internal, "/health", 200).await;
    assert_eq!(http(internal, "GET", "/ready", "", "").await.unwrap().0, 200);
    assert_eq!(http(port, "GET", "/health", "", "").await.unwrap().0, 404, "probes are internal");
    // The API: internal only.
    let (status, info) = api(internal, "info", &json!({})).await.unwrap();
    assert_eq!(status, 200, "{info}");
    assert!(info["result"]["nodes"].is_array(), "{info}");
    let key = format!("X-API-Key: {API_KEY}\r\n");
    assert_eq!(http(port, "POST", "/api/info", &key, "{}").await.unwrap().0, 404);
    assert_eq!(http(internal, "GET", "/metrics", "", "").await.unwrap().0, 200);
    assert_eq!(http(port, "GET", "/metrics", "", "").await.unwrap().0, 404);
    // The admin page: internal, at its prefix, its own paths rewritten under it.
    let (status, page) = http(internal, "GET", "/ops/", "", "").await.unwrap();
    assert!(
        status == 200 && page.contains("/ops/admin.js") && !page.contains("/admin/"),
        "{page}"
    );
    let (status, script) = http(internal, "GET", "/ops/admin.js", "", "").await.unwrap();
    assert!(
        status == 200 && script.contains("/ops/api/") && !script.contains("'/admin/"),
        "{script}"
    );
    assert_eq!(http(port, "GET", "/ops/", "", "").await.unwrap().0, 404);
    // Clients: main port only.
    let (_client, reply) = connect(port, &wshub_testkit::token("s", &json!({"sub": "u"}))).await;
    assert!(reply.contains(r#""connect""#) && reply.contains(r#""client""#), "{reply}");
    let (status, _) = http(internal, "GET", "/connection/websocket", UPGRADE, "").await.unwrap();
    assert_eq!(status, 404, "no clients on the internal port");
    let log = p.stdout();
    assert!(
        log.contains(&format!("on 127.0.0.1:{internal}")) && log.contains("api, admin, prometheus, health"),
        "{log}"
    );
    // The banner says where the API went.
    assert!(log.contains(&format!("127.0.0.1:{internal}/api/<method> (internal port)")), "{log}");
    assert!(log.contains(&format!("127.0.0.1:{internal}/ops (internal port)")), "{log}");
}

/// The packaged unit's `ExecReload` is `kill -HUP`: the node keeps running, a connected
/// client stays connected and receives what is published after, and the new token key and
/// namespaces apply to new connections and subscriptions. Also `pid_file` and `log.file`.
#[tokio::test]
async fn sighup_reloads_token_keys_and_namespaces_with_clients_staying_connected() {
    let dir = temp_dir("sighup");
    let port = free_port();
    let (pid_file, log_file) = (dir.join("wshub.pid"), dir.join("wshub.log"));
    let config = dir.join("config.json");
    let write = |secret: &str, namespaces: serde_json::Value| {
        let c = json!({
            "http_api": {"key": API_KEY},
            "client": {"token": {"hmac_secret_key": secret}},
            "channel": {"without_namespace": {"allow_subscribe_for_client": true}, "namespaces": namespaces},
            "pid_file": pid_file,
            "log": {"file": log_file, "level": "INFO"},
        });
        std::fs::write(&config, c.to_string()).unwrap();
    };
    write("one", json!([]));
    let mut p = Proc::start(&dir, &config, &["--port", &port.to_string(), "--address", "127.0.0.1"]);
    wait_status(port, "/ready", 200).await;
    let pid = p.child.id();
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap().trim(), pid.to_string());
    let log = || std::fs::read_to_string(&log_file).unwrap_or_default();
    assert!(log().contains("serving websocket"), "the log goes to log.file: {}", log());
    assert!(!p.stdout().contains("serving websocket"), "and not to stdout: {}", p.stdout());

    let claims = json!({"sub": "u"});
    let (mut old, reply) = connect(port, &wshub_testkit::token("one", &claims)).await;
    assert!(reply.contains(r#""client""#), "{reply}");
    old.send(MessageKind::Text, br#"{"id":2,"subscribe":{"channel":"news"}}"#).await;
    assert!(next_text(&mut old).await.contains(r#""id":2"#));

    write("two", json!([{"name": "chat", "allow_subscribe_for_client": true}]));
    assert!(Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap().success());
    wait_until("the reload in the log", LIMIT, || {
        log().contains("configuration successfully reloaded")
    })
    .await;
    assert!(p.running(), "SIGHUP ended the process: {}", log());

    // The client connected before is still there and gets a publication made after.
    let (status, r) = api(port, "publish", &json!({"channel": "news", "data": {"n": 1}})).await.unwrap();
    assert_eq!(status, 200, "{r}");
    let publication = next_text(&mut old).await;
    assert!(
        publication.contains(r#""pub""#) && publication.contains(r#"{"n":1}"#),
        "{publication}"
    );
    // New connections: the new key only; the new namespace exists.
    let (mut new, reply) = connect(port, &wshub_testkit::token("two", &claims)).await;
    assert!(reply.contains(r#""client""#), "{reply}");
    new.send(MessageKind::Text, br#"{"id":2,"subscribe":{"channel":"chat:room"}}"#)
        .await;
    let sub = next_text(&mut new).await;
    assert!(sub.contains(r#""id":2"#) && !sub.contains("error"), "{sub}");
    let (_, reply) = connect(port, &wshub_testkit::token("one", &claims)).await;
    assert!(!reply.contains(r#""client""#), "the old key still connects: {reply}");

    // A configuration that does not load changes nothing and the node keeps running.
    std::fs::write(&config, "{not json").unwrap();
    assert!(Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap().success());
    wait_until("the refusal in the log", LIMIT, || log().contains("configuration not reloaded")).await;
    assert!(p.running());
    let (_, reply) = connect(port, &wshub_testkit::token("two", &claims)).await;
    assert!(reply.contains(r#""client""#), "{reply}");

    let status = wshub_testkit::signal(&mut p.child, "-TERM", "wshub").await;
    assert!(status.success(), "{status:?}");
    assert!(!pid_file.exists(), "pid_file removed at exit");
}

/// Centrifugo's defaults: `http_server.address: ""` listens on every interface;
/// `log.level: "none"` logs nothing; and `/connection/init`.
#[tokio::test]
async fn an_empty_address_is_every_interface_and_log_level_none_is_silent() {
    let dir = temp_dir("empty-address");
    let port = free_port();
    let config = dir.join("config.json");
    let c = json!({
        "http_api": {"key": API_KEY},
        "http_server": {"address": "", "port": port},
        "log": {"level": "none"},
        "init": {"enabled": true},
    });
    std::fs::write(&config, c.to_string()).unwrap();
    let p = Proc::start(&dir, &config, &[]);
    wait_status(port, "/health", 200).await;
    let out = p.stdout();
    assert!(
        out.contains(&format!("listening on [::]:{port}")) || out.contains(&format!("listening on 0.0.0.0:{port}")),
        "{out}"
    );
    assert!(!out.contains("serving websocket") && !out.contains("INFO"), "log.level none: {out}");
    // `init.enabled`: Centrifugo's `GET /connection/init`.
    assert_eq!(
        http(port, "GET", "/connection/init", "", "").await.unwrap(),
        (200, "{}".to_string())
    );
    assert_eq!(http(port, "POST", "/connection/init", "", "").await.unwrap().0, 405);
}
