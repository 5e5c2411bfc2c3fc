//! The nginx files of `deploy/` as a new operator uses them on a stock Debian:
//! - `deploy/nginx.conf` dropped into Debian's own configuration (a copy of `/etc/nginx`,
//!   run by the test in a folder of its own): while Debian's default site is enabled it
//!   takes every request (404 everywhere); after the README's step (remove it) or with
//!   `server_name` set, wshub answers;
//! - `deploy/consul/nginx.conf.ctmpl` is `deploy/nginx.conf` with the upstream made from the
//!   Consul catalogue (no drift between the two);
//! - that template, rendered from a Consul health answer, in front of two nodes: when one
//!   node starts draining (its `/ready` turns 503, which is what Consul's check reads), the
//!   answer recorded after it renders an upstream without it, nginx is reloaded and no
//!   request reaches that node any more, while it is still up closing its clients; back and
//!   ready, it returns to the rotation the same way.
//!
//! Consul and consul-template are not Debian packages: the health answer is built the way
//! Consul's check builds it (each node's `GET /ready`), in the shape of Consul's
//! `/v1/health/service/wshub`, and [`render`] applies the template's only constructs the
//! way consul-template does (refusing any other).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_root().join(rel)).unwrap()
}

/// The control lines of the template's upstream, as shipped.
const RANGE: &str = "{{- range service \"wshub\" }}";
const ELSE: &str = "{{- else }}";
const END: &str = "{{- end }}";

/// Renders the template for the passing instances `(address, port)` of the `wshub`
/// service, as consul-template's `service "wshub"` (healthy instances only) does. The
/// `{{-` control lines trim the line break before them, so each renders as nothing.
fn render(template: &str, passing: &[(String, u16)]) -> String {
    let mut out = String::new();
    let (mut body, mut otherwise, mut state): (Vec<&str>, Vec<&str>, u8) = (Vec::new(), Vec::new(), 0);
    for line in template.lines() {
        match (line.trim(), state) {
            (RANGE, 0) => state = 1,
            (ELSE, 1) => state = 2,
            (END, 1 | 2) => {
                if passing.is_empty() {
                    otherwise.iter().for_each(|l| out.push_str(&format!("{l}\n")));
                }
                for (address, port) in passing {
                    for l in &body {
                        out.push_str(&l.replace("{{ .Address }}", address).replace("{{ .Port }}", &port.to_string()));
                        out.push('\n');
                    }
                }
                state = 3;
            }
            (_, 1) => body.push(line),
            (_, 2) => otherwise.push(line),
            _ => {
                assert!(!line.contains("{{"), "a template construct this renderer does not know: {line}");
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    assert_eq!(state, 3, "the template's range block");
    out
}

/// What Consul's `/v1/health/service/wshub` answers for these nodes, each check made as
/// deploy/consul/wshub.json makes it (`GET /ready` on the node's port: 200 passing, else
/// critical).
async fn health_answer(nodes: &[&Node]) -> Value {
    let mut entries = Vec::new();
    for n in nodes {
        let status = match http(n.port, "GET", "/ready", "", "").await {
            Ok((200, _)) => "passing",
            _ => "critical",
        };
        entries.push(json!({
            "Node": {"Node": format!("host-{}", n.port), "Address": "127.0.0.1"},
            "Service": {"ID": format!("wshub-{}", n.port), "Service": "wshub", "Address": "127.0.0.1", "Port": n.port},
            "Checks": [{"CheckID": "wshub-ready", "Status": status}]
        }));
    }
    Value::Array(entries)
}

/// The instances consul-template's `service "wshub"` lists from a health answer: those
/// whose every check passes.
fn passing(answer: &Value) -> Vec<(String, u16)> {
    answer
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["Checks"].as_array().unwrap().iter().all(|c| c["Status"] == "passing"))
        .map(|e| {
            let s = &e["Service"];
            (s["Address"].as_str().unwrap().to_string(), s["Port"].as_u64().unwrap() as u16)
        })
        .collect()
}

/// The rendered template made to listen on `port` (as `render_nginx_conf` does for the
/// plain file).
fn listening_on(conf: &str, port: u16) -> String {
    assert_eq!(conf.matches("\n    listen 80;\n").count(), 1, "`listen 80;` in the template");
    conf.replace("\n    listen 80;\n", &format!("\n    listen 127.0.0.1:{port};\n"))
}

#[test]
fn consul_template_is_nginx_conf_with_the_catalogue_upstream() {
    let conf = read("deploy/nginx.conf");
    let template = read("deploy/consul/nginx.conf.ctmpl");
    // The template's own comment, then deploy/nginx.conf line for line but the upstream's
    // `server` lines, which the range block replaces.
    let body_start = template.find("\n\n").unwrap() + 2;
    assert!(template[..body_start].lines().all(|l| l.starts_with('#') || l.is_empty()));
    let rendered = render(
        &template[body_start..],
        &[("10.0.0.11".into(), 8000), ("10.0.0.12".into(), 8000), ("10.0.0.13".into(), 8000)],
    );
    assert_eq!(rendered.trim_end(), conf.trim_end(), "the template drifted from deploy/nginx.conf");
    let none = render(&template, &[]);
    assert!(none.contains("server 127.0.0.1:1 down;") && !none.contains("10.0.0."), "{none}");
}

/// A copy of Debian's `/etc/nginx` in `dir/etc` with every path inside `dir` and port 80
/// made `port` on the loopback address, plus the shipped file in `conf.d` as the README
/// says; returns the main file.
fn debian_nginx(dir: &Path, port: u16, wshub_conf: &str) -> std::path::PathBuf {
    let etc = Path::new("/etc/nginx");
    assert!(
        etc.join("nginx.conf").is_file() && etc.join("sites-enabled/default").exists(),
        "Debian's stock nginx configuration is missing: apt-get install -y nginx"
    );
    let copy = dir.join("etc");
    let d = dir.display().to_string();
    for sub in ["", "conf.d", "sites-enabled", "modules-enabled"] {
        std::fs::create_dir_all(copy.join(sub)).unwrap();
        for e in std::fs::read_dir(etc.join(sub)).unwrap() {
            let path = e.unwrap().path();
            // Files only (symbolic links followed: sites-enabled/default is one).
            if let Ok(text) = std::fs::read_to_string(&path) {
                let text = text
                    .replace("/etc/nginx/", &format!("{}/", copy.display()))
                    .replace("pid /run/nginx.pid;", &format!("pid {d}/nginx.pid;"))
                    .replace("/var/log/nginx/", &format!("{d}/"))
                    .replace("listen 80 default_server;", &format!("listen 127.0.0.1:{port} default_server;"))
                    .replace("listen [::]:80 default_server;", "")
                    // Relative to the prefix, which is `dir` here.
                    .replace("load_module modules/", "load_module /usr/lib/nginx/modules/");
                std::fs::write(copy.join(sub).join(path.file_name().unwrap()), text).unwrap();
            }
        }
    }
    std::fs::write(copy.join("conf.d/wshub.conf"), wshub_conf).unwrap();
    copy.join("nginx.conf")
}

/// Runs Debian's nginx on `main` until the returned guard drops (ended by its PID).
struct Running(std::process::Child);

impl Running {
    async fn start(dir: &Path, main: &Path, port: u16) -> Running {
        let d = dir.display().to_string();
        let check = std::process::Command::new(nginx_binary())
            .args(["-t", "-p", &d, "-e", &format!("{d}/error.log"), "-c"])
            .arg(main)
            .output()
            .unwrap();
        assert!(check.status.success(), "nginx -t: {}", String::from_utf8_lossy(&check.stderr));
        let child = std::process::Command::new(nginx_binary())
            .args(["-p", &d, "-e", &format!("{d}/error.log"), "-c"])
            .arg(main)
            .args(["-g", "daemon off;"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let running = Running(child);
        wait_until_async("nginx listening", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        running
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.0.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        wshub_testkit::end(&mut self.0);
    }
}

/// Polls the async `check` every 20 ms until it is true, within [`LIMIT`].
async fn wait_until_async<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + LIMIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn node_config(name: &str) -> Value {
    json!({
        "node": {"name": name},
        "http_api": {"key": API_KEY},
        "client": {"insecure": true},
        "shutdown": {"drain_window": "30s", "timeout": "40s"}
    })
}

/// `GET /health` through nginx on `port` with the `Host` a client would send (the only
/// one: [`http`] sends its own).
async fn health_via(port: u16, host: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let call = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let req = format!("GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        (head[9..12].parse().unwrap(), body.to_string())
    };
    tokio::time::timeout(LIMIT, call).await.expect("nginx answers in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_stock_nginx_needs_the_default_site_removed() {
    let dir = temp_dir("deploy-debian");
    let node = Node::start(&dir, &node_config("a"), free_port()).await;
    let port = free_port();
    // The shipped file's three `server` lines, all this node.
    let conf = render_nginx_conf(&read("deploy/nginx.conf"), port, &[node.port; 3]);
    let host = "wshub.example.com";

    // As placed, with Debian's default site enabled: the default site answers.
    let main = debian_nginx(&dir.join("as-placed"), port, &conf);
    let nginx = Running::start(&dir.join("as-placed"), &main, port).await;
    let (status, body) = health_via(port, host).await;
    assert_eq!(status, 404, "Debian's default site takes the request: {body}");
    drop(nginx);

    // The README's step: remove the default site.
    let main = debian_nginx(&dir.join("removed"), port, &conf);
    std::fs::remove_file(dir.join("removed/etc/sites-enabled/default")).unwrap();
    let nginx = Running::start(&dir.join("removed"), &main, port).await;
    assert_eq!(health_via(port, host).await, (200, "ok\n".into()));
    let (status, v) = api_via(port).await;
    assert_eq!((status, v["result"]["nodes"][0]["name"].clone()), (200, json!("a")), "{v}");
    drop(nginx);

    // Or keep it and name the host.
    let named = conf.replace("server_name _;", &format!("server_name {host};"));
    assert_ne!(named, conf, "`server_name _;` in deploy/nginx.conf");
    let main = debian_nginx(&dir.join("named"), port, &named);
    let nginx = Running::start(&dir.join("named"), &main, port).await;
    assert_eq!(health_via(port, host).await, (200, "ok\n".into()));
    assert_eq!(health_via(port, "other.example.com").await.0, 404, "other hosts: the default site");
    drop(nginx);
    let _ = std::fs::remove_dir_all(dir);
}

/// `POST /api/info` through nginx: with the memory engine each node reports itself only,
/// so the answer names the node that served it.
async fn api_via(port: u16) -> (u16, Value) {
    api(port, "info", &json!({})).await.unwrap()
}

async fn served_by(port: u16, calls: usize) -> Vec<String> {
    let mut names = Vec::new();
    for _ in 0..calls {
        let (status, v) = api_via(port).await;
        assert_eq!(status, 200, "{v}");
        names.push(v["result"]["nodes"][0]["name"].as_str().unwrap().to_string());
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_leaves_the_rotation() {
    let dir = temp_dir("deploy-drain");
    let a = Node::start(&dir, &node_config("a"), free_port()).await;
    let b = Node::start(&dir, &node_config("b"), free_port()).await;
    let template = read("deploy/consul/nginx.conf.ctmpl");
    let port = free_port();

    let before = health_answer(&[&a, &b]).await;
    assert_eq!(passing(&before).len(), 2, "{before}");
    let nginx = Nginx::start_conf(&dir, port, &listening_on(&render(&template, &passing(&before)), port)).await;
    let names = served_by(port, 20).await;
    assert!(names.iter().any(|n| n == "a") && names.iter().any(|n| n == "b"), "{names:?}");

    // Clients on b keep its drain going (closed in batches over 30 s), then SIGTERM.
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut c =
            wshub_testkit::ws::Client::connect(format!("127.0.0.1:{}", b.port).parse().unwrap(), "/connection/websocket", &[], None).await;
        c.send(wshub_websocket::MessageKind::Text, br#"{"id":1,"connect":{}}"#).await;
        match c.next_event().await {
            wshub_websocket::Event::Message { data, .. } => assert!(String::from_utf8_lossy(&data).contains("\"client\"")),
            e => panic!("{e:?}"),
        }
        clients.push(c);
    }
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &b.pid().to_string()])
        .status()
        .unwrap()
        .success());
    wait_until_async("b's /ready at 503", || async {
        matches!(http(b.port, "GET", "/ready", "", "").await, Ok((503, _)))
    })
    .await;
    // The rendered upstream still lists b: it still takes requests (the API works during a
    // drain), which is what must stop.
    let names = served_by(port, 20).await;
    assert!(names.iter().any(|n| n == "b"), "{names:?}");

    // Consul's next answer: b's check is critical. Rendered and reloaded as consul-template
    // does.
    let after = health_answer(&[&a, &b]).await;
    assert_eq!(passing(&after), vec![("127.0.0.1".to_string(), a.port)], "{after}");
    nginx.reload(&listening_on(&render(&template, &passing(&after)), port)).await;
    let names = served_by(port, 40).await;
    assert!(names.iter().all(|n| n == "a"), "b still in the rotation: {names:?}");
    // b was draining all along, not gone.
    assert!(matches!(http(b.port, "GET", "/health", "", "").await, Ok((200, _))), "b still up");
    assert!(b.log().contains("draining"), "{}", b.log());

    // b back and ready (restarted): its check passes again, and the next rendering puts it
    // back in the rotation.
    drop(clients);
    let mut b = b;
    b.signal("-KILL").await;
    b.restart().await;
    let back = health_answer(&[&a, &b]).await;
    assert_eq!(passing(&back).len(), 2, "{back}");
    nginx.reload(&listening_on(&render(&template, &passing(&back)), port)).await;
    let names = served_by(port, 20).await;
    assert!(names.iter().any(|n| n == "b"), "b back in the rotation: {names:?}");
    drop(nginx);
    drop((a, b));
    let _ = std::fs::remove_dir_all(dir);
}
