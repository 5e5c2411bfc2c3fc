//! A Centrifugo deployment swaps the binary (issue #27, launch, environment and helper
//! commands): `wshub` alone with `config.json` in the working directory, `-c` and
//! Centrifugo's flags, a container configured by `CENTRIFUGO_*` variables only, and the
//! token commands. Each test runs the real binary.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command};

use common::{free_port, http, run_to_end, temp_dir, wait_until, LIMIT};
use serde_json::json;

fn wshub(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wshub"));
    c.current_dir(dir).env_remove("WSHUB_LOG");
    // Only the variables a test sets: none of the machine's CENTRIFUGO_/WSHUB_ ones.
    for (k, _) in std::env::vars() {
        if k.starts_with("CENTRIFUGO_") || k.starts_with("WSHUB_") {
            c.env_remove(k);
        }
    }
    c
}

/// A running node, ended by its PID when dropped; its output goes to a file.
struct Node {
    child: Child,
    log: std::path::PathBuf,
}

impl Node {
    fn spawn(cmd: &mut Command, dir: &Path) -> Node {
        let log = dir.join(format!("log-{}", common::unique()));
        let f = std::fs::File::create(&log).unwrap();
        let child = cmd.stdout(f.try_clone().unwrap()).stderr(f).spawn().unwrap();
        Node { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_ready(&self, port: u16) {
        wait_until("the node to answer /health", LIMIT, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .await;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        wshub_testkit::end(&mut self.child);
    }
}

async fn api_info(port: u16, key: &str) -> u16 {
    http(port, "POST", "/api/info", &format!("X-API-Key: {key}\r\n"), "{}")
        .await
        .unwrap()
        .0
}

/// `wshub` alone, in a folder with `config.json`: the server, configured by that file.
#[tokio::test]
async fn wshub_alone_runs_the_server_from_config_json() {
    let dir = temp_dir("launch-default");
    let port = free_port();
    let cfg = json!({"http_server": {"port": port, "address": "127.0.0.1"}, "http_api": {"key": "file-key"}});
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let node = Node::spawn(&mut wshub(&dir), &dir);
    node.wait_ready(port).await;
    assert_eq!(api_info(port, "file-key").await, 200, "{}", node.log());
}

/// `wshub -c FILE` with Centrifugo's flags: `-p`, `-a`, `--http_api.insecure`.
#[tokio::test]
async fn dash_c_and_centrifugo_flags() {
    let dir = temp_dir("launch-flags");
    let port = free_port();
    let file = dir.join("centrifugo.json");
    std::fs::write(&file, json!({"http_api": {"key": "k"}}).to_string()).unwrap();
    let node = Node::spawn(
        wshub(&dir).args([
            "-c",
            file.to_str().unwrap(),
            "-p",
            &port.to_string(),
            "-a",
            "127.0.0.1",
            "--http_api.insecure",
        ]),
        &dir,
    );
    node.wait_ready(port).await;
    assert_eq!(
        api_info(port, "wrong").await,
        200,
        "--http_api.insecure took effect: {}",
        node.log()
    );
    // A switch is `--x` or `--x=false`, as Go's pflag reads it.
    let out = run_to_end(wshub(&dir).args(["--admin.enabled", "-p", "1", "-c", file.to_str().unwrap()]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("admin.password"),
        "--admin.enabled reached the configuration: {stderr}"
    );
}

/// As the Helm chart runs the container: no file, every setting from `CENTRIFUGO_*`.
#[tokio::test]
async fn configured_by_centrifugo_variables_only() {
    let dir = temp_dir("launch-env");
    let port = free_port();
    let node = Node::spawn(
        wshub(&dir)
            .env("CENTRIFUGO_HTTP_SERVER_PORT", port.to_string())
            .env("CENTRIFUGO_HTTP_SERVER_ADDRESS", "127.0.0.1")
            .env("CENTRIFUGO_HTTP_API_KEY", "env-key")
            .env("CENTRIFUGO_CLIENT_TOKEN_HMAC_SECRET_KEY", "env-secret")
            .env("CENTRIFUGO_CLIENT_ALLOWED_ORIGINS", "https://a.example https://b.example")
            .env("CENTRIFUGO_SERVICE_HOST", "10.0.0.1")
            .env("CENTRIFUGO_NO_SUCH_KEY", "1"),
        &dir,
    );
    node.wait_ready(port).await;
    assert_eq!(api_info(port, "env-key").await, 200, "{}", node.log());
    let log = node.log();
    assert!(log.contains("CENTRIFUGO_NO_SUCH_KEY"), "an unknown variable is reported: {log}");
    assert!(!log.contains("CENTRIFUGO_SERVICE_HOST"), "Kubernetes' variables are not: {log}");
    assert!(!log.contains("env-secret"), "no secret in the log");
    // The secret from the environment signs and checks tokens.
    let t = run_to_end(
        wshub(&dir)
            .env("CENTRIFUGO_CLIENT_TOKEN_HMAC_SECRET_KEY", "env-secret")
            .args(["gentoken", "-u", "7", "-q"]),
    );
    let token = String::from_utf8(t.stdout).unwrap();
    let out = run_to_end(
        wshub(&dir)
            .env("CENTRIFUGO_CLIENT_TOKEN_HMAC_SECRET_KEY", "env-secret")
            .args(["checktoken", &token]),
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("valid token for user 7"),
        "{out:?}"
    );
    // A refused security key from the environment stops the start, naming the variable.
    let out = run_to_end(
        wshub(&dir)
            .env("CENTRIFUGO_HTTP_SERVER_TLS_AUTOCERT_ENABLED", "true")
            .args(["-p", "1"]),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CENTRIFUGO_HTTP_SERVER_TLS_AUTOCERT_ENABLED"));
}

/// The token commands, with Centrifugo's flags and output.
#[test]
fn token_commands() {
    let dir = temp_dir("launch-tokens");
    std::fs::write(
        dir.join("config.json"),
        json!({"client": {"token": {"hmac_secret_key": "conn"}, "subscription_token": {"enabled": true, "hmac_secret_key": "subs"}}})
            .to_string(),
    )
    .unwrap();
    let out = run_to_end(wshub(&dir).args(["gentoken", "-u", "alice"]));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("HMAC SHA-256 JWT for user \"alice\" with expiration TTL 168h0m0s:")
    );
    let token = lines.next().unwrap().to_string();
    let out = run_to_end(wshub(&dir).args(["checktoken", &token]));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("valid token for user alice\npayload: {"), "{text}");
    let out = run_to_end(wshub(&dir).args(["gensubtoken", "-u", "alice", "-s", "$room", "-t", "-1", "-q"]));
    let sub = String::from_utf8(out.stdout).unwrap();
    let out = run_to_end(wshub(&dir).args(["checksubtoken", &sub]));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().lines().next(),
        Some("valid subscription token for user \"alice\" and channel \"$room\"")
    );
    // A subscription token is not a connection token (its `channel` claim; its key).
    let out = run_to_end(wshub(&dir).args(["checktoken", &sub]));
    assert_eq!(out.status.code(), Some(1));
    let out = run_to_end(wshub(&dir).args(["version"]));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("wshub v"));
}

/// The Dockerfile's final stage runs as Centrifugo's image does (an unprivileged user,
/// working directory `/centrifugo`, port 8000, the command alone), and that command, run
/// in a folder holding a mounted `config.json` with secrets from `CENTRIFUGO_*` variables,
/// serves. (No Docker engine runs here: the image itself is not built.)
#[tokio::test]
async fn the_container_command_serves_as_centrifugos_does() {
    let text = std::fs::read_to_string(common::repo_root().join("Dockerfile")).unwrap();
    let last = text.rsplit("\nFROM ").next().unwrap();
    let line = |key: &str| last.lines().find(|l| l.starts_with(key)).map(|l| l[key.len()..].trim().to_string());
    assert_eq!(line("WORKDIR "), Some("/centrifugo".into()));
    assert_eq!(line("EXPOSE "), Some("8000".into()));
    let user = line("USER ").unwrap();
    assert!(user != "root" && user != "0", "runs unprivileged: {user}");
    let cmd: Vec<String> = serde_json::from_str(&line("CMD ").unwrap()).unwrap();
    assert_eq!(cmd, ["wshub"]);
    let dir = temp_dir("container");
    let port = free_port();
    std::fs::write(
        dir.join("config.json"),
        json!({"http_server": {"address": "127.0.0.1"}}).to_string(),
    )
    .unwrap();
    let mut c = wshub(&dir);
    c.args(&cmd[1..])
        .env("CENTRIFUGO_HTTP_SERVER_PORT", port.to_string())
        .env("CENTRIFUGO_HTTP_API_KEY", "container-key");
    let node = Node::spawn(&mut c, &dir);
    node.wait_ready(port).await;
    assert_eq!(api_info(port, "container-key").await, 200, "{}", node.log());
}

/// Centrifugo's first documented Redis address form, `host:port`, with `db` and a password
/// from their own keys: the node serves, and its keys are in that database.
#[tokio::test]
async fn redis_address_as_host_port_with_db_and_password() {
    let redis = wshub_testkit::redis::RedisServer::start().await;
    let url = redis.url();
    let host_port = url.trim_start_matches("redis://").to_string();
    let mut admin = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("p@ss")
        .query_async(&mut admin)
        .await
        .unwrap();
    let dir = temp_dir("launch-redis");
    let port = free_port();
    let cfg = json!({
        "http_server": {"port": port, "address": "127.0.0.1"},
        "http_api": {"key": "k"},
        "channel": {"without_namespace": {"history_size": 10, "history_ttl": "60s"}}
    });
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let node = Node::spawn(
        wshub(&dir)
            .env("CENTRIFUGO_ENGINE_TYPE", "redis")
            .env("CENTRIFUGO_ENGINE_REDIS_ADDRESS", &host_port)
            .env("CENTRIFUGO_ENGINE_REDIS_PASSWORD", "p@ss")
            .env("CENTRIFUGO_ENGINE_REDIS_DB", "3")
            .env("CENTRIFUGO_ENGINE_REDIS_PREFIX", "launchtest"),
        &dir,
    );
    node.wait_ready(port).await;
    let (status, _) = http(
        port,
        "POST",
        "/api/publish",
        "X-API-Key: k\r\n",
        r#"{"channel":"news","data":{"a":1}}"#,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{}", node.log());
    let authed = format!("redis://:p%40ss@{host_port}/3");
    let mut c = redis::Client::open(authed.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("launchtest*").query_async(&mut c).await.unwrap();
    assert!(!keys.is_empty(), "the stream is in database 3");
    assert!(!node.log().contains("p@ss"), "no password in the log");
}

/// Centrifugo's full default configuration (`centrifugo defaultconfig`'s file) passes
/// `checkconfig` with no warning and starts the server; a key of a feature wshub lacks,
/// switched on, stops the start naming the key and its issue (#27 item 9).
#[tokio::test]
async fn centrifugo_default_configuration_starts() {
    let dir = temp_dir("launch-defaultconfig");
    let fixture = common::repo_root().join("crates/server/tests/fixtures/centrifugo-defaultconfig.json");
    let out = run_to_end(wshub(&dir).args(["checkconfig", "-c", fixture.to_str().unwrap()]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    let port = free_port();
    let f = fixture.to_str().unwrap();
    let node = Node::spawn(
        wshub(&dir).args(["-c", f, "-p", &port.to_string(), "-a", "127.0.0.1", "--http_api.insecure"]),
        &dir,
    );
    node.wait_ready(port).await;
    assert_eq!(api_info(port, "").await, 200, "{}", node.log());
    assert!(!node.log().contains("WARN"), "{}", node.log());
    // Switched on, a missing feature stops the start; a tuning knob is a warning.
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&fixture).unwrap()).unwrap();
    cfg["controller"]["enabled"] = json!(true);
    let file = dir.join("controller.json");
    std::fs::write(&file, cfg.to_string()).unwrap();
    let out = run_to_end(wshub(&dir).args(["-c", file.to_str().unwrap(), "-p", &free_port().to_string()]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("controller.enabled") && stderr.contains("#31"), "{stderr}");
    cfg["controller"]["enabled"] = json!(false);
    cfg["client"]["concurrency"] = json!(8);
    std::fs::write(&file, cfg.to_string()).unwrap();
    let out = run_to_end(wshub(&dir).args(["checkconfig", "-c", file.to_str().unwrap()]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("warning: client.concurrency") && stderr.contains("#27"), "{stderr}");
}
