//! What a newcomer meets in the first hour (issue #13): the start banner, CLI errors,
//! `checkconfig`, refused origins, addresses, `GET /`, the API's 401, the admin endpoints.
//! Each test runs the real binary.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use common::{free_port, http, http_head, run_to_end, temp_dir, wait_until, LIMIT};
use serde_json::json;

fn wshub() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wshub"));
    // Whatever the environment says, an error is one line.
    c.env("RUST_BACKTRACE", "1").env_remove("WSHUB_LOG");
    c
}

/// A `wshub serve` whose stdout and stderr go to files that the test reads.
struct Serve {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Serve {
    fn start(dir: &Path, config: &serde_json::Value, args: &[&str]) -> Serve {
        let file = dir.join(format!("config-{}.json", common::unique()));
        std::fs::write(&file, config.to_string()).unwrap();
        let (out, err) = (
            dir.join(format!("out-{}", common::unique())),
            dir.join(format!("err-{}", common::unique())),
        );
        let child = wshub()
            .args(["serve", "-c", file.to_str().unwrap()])
            .args(args)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        Serve { child, out, err }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    async fn wait_output(&self, what: &str, needle: &str) {
        wait_until(what, LIMIT, || self.stdout().contains(needle) || self.stderr().contains(needle)).await;
    }

    async fn interrupt(&mut self) {
        wshub_testkit::signal(&mut self.child, "-INT", "wshub").await;
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        wshub_testkit::end(&mut self.child);
    }
}

fn base() -> serde_json::Value {
    json!({"http_api": {"key": "k"}, "client": {"token": {"hmac_secret_key": "s"}}})
}

const UPGRADE: &str =
    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

/// A WebSocket upgrade from a page of `origin`: the status and the body.
async fn upgrade_from(port: u16, origin: &str) -> (u16, String) {
    let headers = format!("Origin: {origin}\r\n{UPGRADE}");
    http(port, "GET", "/connection/websocket", &headers, "").await.unwrap()
}

#[tokio::test]
async fn a_second_instance_on_a_taken_port_fails_in_one_line_without_announcing_it() {
    let dir = temp_dir("second-instance");
    let port = free_port();
    let first = Serve::start(&dir, &base(), &["--port", &port.to_string(), "--address", "127.0.0.1"]);
    first.wait_output("the first instance's banner", "listening on").await;
    let out = run_to_end(wshub().args(["serve", "--port", &port.to_string(), "--address", "127.0.0.1"]));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stdout.contains("listening"), "announced a port it does not hold: {stdout}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].starts_with("error: cannot listen on 127.0.0.1:"), "{stderr}");
    assert!(lines[0].contains("Address already in use"), "{stderr}");
    assert!(!stderr.to_lowercase().contains("backtrace"), "{stderr}");
}

#[test]
fn cli_errors_are_one_line_even_with_rust_backtrace() {
    let dir = temp_dir("cli-error");
    let missing = dir.join("missing.json");
    let out = run_to_end(wshub().args(["serve", "-c", missing.to_str().unwrap()]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: configuration: ") && stderr.contains("missing.json"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_banner_says_wss_with_tls_lists_origins_and_has_no_colours_when_piped() {
    let dir = temp_dir("banner-tls");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let mut config = base();
    config["http_server"] = json!({"tls": {"enabled": true, "cert_pem_file": cert_path, "key_pem_file": key_path}});
    config["client"]["allowed_origins"] = json!(["https://app.example.com"]);
    config["admin"] = json!({"enabled": true, "password": "pw", "secret": "sec"});
    let port = free_port();
    let s = Serve::start(&dir, &config, &["--port", &port.to_string(), "--address", "127.0.0.1"]);
    s.wait_output("the banner", "may connect from").await;
    let out = s.stdout();
    assert!(out.contains(&format!("wss://127.0.0.1:{port}/connection/websocket")), "{out}");
    assert!(out.contains(&format!("https://127.0.0.1:{port}/api/<method>")), "{out}");
    assert!(out.contains(&format!("https://127.0.0.1:{port}/admin")), "{out}");
    assert!(out.contains("https://app.example.com"), "{out}");
    assert!(!out.contains("ws://127") && !out.contains("http://127"), "{out}");
    let all = out + &s.stderr();
    assert!(!all.contains('\u{1b}'), "ANSI escape codes in piped output: {all:?}");
}

#[tokio::test]
async fn with_json_logs_the_banner_is_one_json_line_on_stderr() {
    let dir = temp_dir("banner-json");
    let mut config = base();
    config["log"] = json!({"format": "json"});
    let port = free_port();
    let s = Serve::start(&dir, &config, &["--port", &port.to_string(), "--address", "127.0.0.1"]);
    s.wait_output("the JSON banner", "wshub listening").await;
    assert!(
        s.stdout().trim().is_empty() || !s.stdout().contains("listening"),
        "banner on stdout: {}",
        s.stdout()
    );
    let line = s.stderr().lines().find(|l| l.contains("wshub listening")).unwrap().to_string();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(v["clients"], json!(format!("ws://127.0.0.1:{port}/connection/websocket")));
    assert_eq!(v["address"], json!(format!("127.0.0.1:{port}")));
    assert_eq!(v["allowed_origins"], json!([]));
}

#[tokio::test]
async fn a_refused_origin_is_answered_and_logged_with_the_key_to_change() {
    let dir = temp_dir("origin");
    let port = free_port();
    let mut config = base();
    config["client"]["allowed_origins"] = json!(["http://app.example.com"]);
    let s = Serve::start(&dir, &config, &["--port", &port.to_string(), "--address", "127.0.0.1"]);
    s.wait_output("the banner", "may connect from: http://app.example.com").await;
    let (status, body) = upgrade_from(port, "http://evil.example").await;
    assert_eq!(status, 403);
    assert!(
        body.contains("http://evil.example") && body.contains("client.allowed_origins"),
        "{body}"
    );
    s.wait_output("the refusal at info", "WebSocket refused (403)").await;
    let log = s.stdout();
    let line = log.lines().find(|l| l.contains("WebSocket refused")).unwrap();
    assert!(
        line.contains("INFO") && line.contains("http://evil.example") && line.contains("client.allowed_origins"),
        "{line}"
    );
    // A page opened from a file says so.
    let (status, body) = upgrade_from(port, "null").await;
    assert_eq!(status, 403);
    assert!(body.contains("file://"), "{body}");
    // The allowed one connects.
    let (status, _) = upgrade_from(port, "http://app.example.com").await;
    assert_eq!(status, 101);
}

#[tokio::test]
async fn same_host_refusals_explain_what_same_host_means() {
    let dir = temp_dir("origin-same-host");
    let port = free_port();
    let s = Serve::start(&dir, &base(), &["--port", &port.to_string(), "--address", "127.0.0.1"]);
    s.wait_output("the banner", "same host and port only").await;
    let (status, body) = upgrade_from(port, "http://127.0.0.1:3000").await;
    assert_eq!(status, 403);
    assert!(
        body.contains("same host and port") && body.contains(&format!("127.0.0.1:{port}")),
        "{body}"
    );
    let (status, _) = upgrade_from(port, &format!("http://127.0.0.1:{port}")).await;
    assert_eq!(status, 101, "same host and port");
}

#[tokio::test]
async fn ctrl_c_says_a_second_one_exits_at_once() {
    let dir = temp_dir("ctrl-c");
    let port = free_port();
    let mut s = Serve::start(&dir, &base(), &["--port", &port.to_string(), "--address", "127.0.0.1"]);
    s.wait_output("the banner", "listening on").await;
    s.interrupt().await;
    assert!(s.stderr().contains("press Ctrl-C again to exit at once"), "{}", s.stderr());
}

#[tokio::test]
async fn localhost_and_ipv6_unspecified_addresses_work() {
    let dir = temp_dir("addresses");
    let port = free_port();
    let s = Serve::start(&dir, &base(), &["--port", &port.to_string(), "--address", "localhost"]);
    s.wait_output("the banner", "listening on").await;
    assert!(s.stdout().contains(&format!("listening on 127.0.0.1:{port}")), "{}", s.stdout());
    assert_eq!(http(port, "GET", "/health", "", "").await.unwrap().0, 200);
    drop(s);
    let port = free_port();
    // `::` listens on every address, IPv4 ones included (Linux's dual-stack default).
    let s = Serve::start(&dir, &base(), &["--port", &port.to_string(), "--address", "::"]);
    s.wait_output("the banner", "listening on").await;
    assert!(s.stdout().contains(&format!("listening on [::]:{port}")), "{}", s.stdout());
    assert!(s.stdout().contains(&format!("ws://localhost:{port}/")), "{}", s.stdout());
    assert_eq!(http(port, "GET", "/health", "", "").await.unwrap().0, 200);
    let out = run_to_end(wshub().args(["serve", "--address", "my-host.invalid", "--port", "1"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("http_server.address") && stderr.contains("localhost"), "{stderr}");
}

fn checkconfig(dir: &Path, name: &str, text: &str, extra: &[&str]) -> (Option<i32>, String) {
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    let out = run_to_end(wshub().args(["checkconfig", "-c", file.to_str().unwrap()]).args(extra));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn checkconfig_fails_on_unknown_keys_in_namespaces_unless_allowed() {
    let dir = temp_dir("checkconfig");
    let text = r#"{"channel": {"without_namespace": {"presense": true}, "namespaces": [{"name": "chat", "presense": true, "history_size": 10, "history_ttl": "60s"}]}}"#;
    let (code, out) = checkconfig(&dir, "typo.json", text, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("channel.without_namespace.presense"), "{out}");
    assert!(out.contains("channel.namespaces[0].presense"), "{out}");
    assert!(out.contains("--allow-unknown"), "{out}");
    let (code, out) = checkconfig(&dir, "typo2.json", text, &["--allow-unknown"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("warning: unknown key channel.namespaces[0].presense"), "{out}");
    let (code, out) = checkconfig(
        &dir,
        "good.json",
        r#"{"channel": {"namespaces": [{"name": "chat", "presence": true}]}}"#,
        &[],
    );
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn checkconfig_reads_yaml_and_names_types_in_words() {
    let dir = temp_dir("checkconfig-yaml");
    let yaml = "http_api:\n  key: k\nchannel:\n  namespaces:\n    - name: chat\n      presence: true\n      history_size: 10\n      history_ttl: 60s\n";
    for name in ["c.yaml", "c.yml"] {
        let (code, out) = checkconfig(&dir, name, yaml, &[]);
        assert_eq!(code, Some(0), "{name}: {out}");
    }
    // Not JSON-compatible: parsed as YAML or refused as YAML, never as JSON.
    let (code, out) = checkconfig(&dir, "bad.yaml", "a: [\n", &[]);
    assert_eq!(code, Some(1));
    assert!(out.contains("not valid YAML"), "{out}");
    let (code, out) = checkconfig(&dir, "c.ini", "{}", &[]);
    assert_eq!(code, Some(1));
    assert!(out.contains(".json, .toml, .yaml or .yml"), "{out}");
    let (code, out) = checkconfig(&dir, "t.json", r#"{"client": {"channel_limit": "ten"}}"#, &[]);
    assert_eq!(code, Some(1));
    assert!(out.contains("client.channel_limit") && out.contains("a whole number"), "{out}");
    assert!(!out.contains("u32") && !out.contains("usize"), "{out}");
    let (code, out) = checkconfig(
        &dir,
        "n.yaml",
        "channel:\n  namespaces:\n    - name: chat\n      history_size: ten\n",
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(
        out.contains("channel.namespaces[0].history_size") && out.contains("a whole number"),
        "{out}"
    );
}

#[tokio::test]
async fn the_root_page_links_health_and_admin_and_the_api_401_says_why() {
    let dir = temp_dir("root-page");
    let port = free_port();
    let s = Serve::start(&dir, &base(), &["--port", &port.to_string(), "--address", "127.0.0.1"]);
    s.wait_output("the banner", "listening on").await;
    let (status, head, body) = http_head(port, "GET", "/", "", "").await.unwrap();
    assert_eq!(status, 200);
    assert!(head.to_lowercase().contains("content-type: text/html"), "{head}");
    assert!(body.contains("/health") && body.contains("admin.enabled"), "{body}");
    let (status, body) = http(port, "POST", "/api/info", "", "{}").await.unwrap();
    assert_eq!(status, 401);
    assert_eq!(body.lines().count(), 1, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("X-API-Key"), "{body}");
    // The admin page is off: nothing under /admin.
    assert_eq!(http(port, "GET", "/admin", "", "").await.unwrap().0, 404);
}

fn cookie_of(head: &str) -> String {
    head.lines()
        .find_map(|l| l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: ")))
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no Set-Cookie in {head}"))
        .to_string()
}

#[tokio::test]
async fn the_admin_endpoints_refuse_everything_without_a_session() {
    let dir = temp_dir("admin-http");
    let port = free_port();
    let mut config = base();
    config["admin"] = json!({"enabled": true, "password": "pw", "secret": "sec"});
    let s = Serve::start(&dir, &config, &["--port", &port.to_string(), "--address", "127.0.0.1"]);
    s.wait_output("the banner", "listening on").await;
    let json_ct = "Content-Type: application/json\r\n";
    // The page itself loads (it shows the login form); everything else needs a session.
    let (status, head, body) = http_head(port, "GET", "/admin", "", "").await.unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains("admin.js") && head.to_lowercase().contains("content-security-policy"),
        "{head}"
    );
    assert_eq!(http(port, "GET", "/admin/session", "", "").await.unwrap().0, 401);
    for method in ["info", "publish", "disconnect", "channels", "connections"] {
        let (status, body) = http(port, "POST", &format!("/admin/api/{method}"), json_ct, "{}").await.unwrap();
        assert_eq!(status, 401, "{method}: {body}");
    }
    let forged = "Cookie: wshub_admin_session=99999999999.0000000000000000000000000000000000000000000000000000000000000000\r\n";
    assert_eq!(
        http(port, "POST", "/admin/api/info", &format!("{forged}{json_ct}"), "{}")
            .await
            .unwrap()
            .0,
        401
    );
    // The API key is not an admin session.
    assert_eq!(
        http(port, "POST", "/admin/api/info", &format!("X-API-Key: k\r\n{json_ct}"), "{}")
            .await
            .unwrap()
            .0,
        401
    );
    let (status, body) = http(port, "POST", "/admin/login", json_ct, r#"{"password": "wrong"}"#)
        .await
        .unwrap();
    assert_eq!((status, body.contains("wrong password")), (401, true), "{body}");
    let (status, head, _) = http_head(port, "POST", "/admin/login", json_ct, r#"{"password": "pw"}"#)
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(head.contains("HttpOnly") && head.contains("SameSite=Strict"), "{head}");
    let cookie = format!("Cookie: {}\r\n", cookie_of(&head));
    let (status, body) = http(port, "POST", "/admin/api/info", &format!("{cookie}{json_ct}"), "{}")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["result"]["nodes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Not JSON: what a cross-site form could send.
    let form = "Content-Type: application/x-www-form-urlencoded\r\n";
    assert_eq!(
        http(port, "POST", "/admin/api/publish", &format!("{cookie}{form}"), "channel=x")
            .await
            .unwrap()
            .0,
        415
    );
    let (status, head, _) = http_head(port, "POST", "/admin/logout", &cookie, "").await.unwrap();
    assert_eq!(status, 200);
    assert!(head.contains("Max-Age=0"), "logout deletes the cookie: {head}");
    // Logins are rate limited per address: after the limit even the right password waits.
    let mut last = 0;
    for _ in 0..12 {
        last = http(port, "POST", "/admin/login", json_ct, r#"{"password": "nope"}"#)
            .await
            .unwrap()
            .0;
    }
    assert_eq!(last, 429);
    let (status, head, _) = http_head(port, "POST", "/admin/login", json_ct, r#"{"password": "pw"}"#)
        .await
        .unwrap();
    assert_eq!(status, 429);
    assert!(head.to_lowercase().contains("retry-after: 60"), "{head}");
}
