//! Helpers for tests over real sockets: an in-process server on a free port and node
//! configurations through the real loader; the WebSocket client is `wshub_testkit`'s.
#![allow(dead_code, unused_imports, clippy::unwrap_used)] // each test file uses a part

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use wshub_server::{ServerConfig, Shared};
use wshub_websocket::handshake::{HandshakeConfig, OriginPolicy};
use wshub_websocket::DeflateConfig;

/// The minimal WebSocket client, raw HTTP and hand-built frames, and the bound of every
/// wait in these tests (10 s), from `wshub_testkit::ws`.
pub use wshub_testkit::ws::{masked_frame, raw_http, upgrade_request, Client, LIMIT};

pub struct TestServer {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn echo(max_message_size: usize) -> Self {
        let endpoints = wshub_server::endpoints::Endpoints {
            websocket: Some("/connection/websocket".into()),
            health: Some("/health".into()),
            ready: true,
            ..Default::default()
        };
        let handshake = HandshakeConfig {
            protocols: vec!["centrifuge-protobuf".into()],
            deflate: Some(DeflateConfig::default()),
            origins: OriginPolicy::from_list(&["https://*.example.com".into()]),
        };
        Self::start(wshub_server::echo::config(
            endpoints,
            handshake,
            max_message_size,
            Duration::from_secs(2),
        ))
        .await
    }

    /// A node built from `config` and served as the binary serves it: once its engine's
    /// check has passed (Redis answers and the node hears the control channel; a message
    /// forwarded to it before is lost).
    pub async fn node(config: &wshub_server::config::Config) -> Self {
        let (node, sc) = wshub_server::app::build(config).unwrap();
        node.broker.check().await.unwrap();
        Self::start(sc).await
    }

    pub async fn start(config: ServerConfig) -> Self {
        let listener = wshub_server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Shared::new(config);
        let (tx, rx) = oneshot::channel();
        let s = shared.clone();
        let task = tokio::spawn(async move {
            wshub_server::serve(listener, s, async {
                let _ = rx.await;
            })
            .await
        });
        TestServer {
            addr,
            shared,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(LIMIT, t).await.unwrap().unwrap();
        }
    }

    /// Polls until no WebSocket connection is open, within [`LIMIT`].
    pub async fn wait_connections(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + LIMIT;
        while self.shared.connections() != n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "still {} connections, expected {n}",
                self.shared.connections()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A node configuration: `base` with `extra` merged over it (objects merge, values replace),
/// loaded through the real loader (file, validation).
pub fn node_config(mut base: serde_json::Value, extra: serde_json::Value) -> wshub_server::config::Config {
    merge(&mut base, extra);
    let path = std::env::temp_dir().join(format!("wshub-test-{}-{}.json", std::process::id(), rand::random::<u64>()));
    std::fs::write(&path, base.to_string()).unwrap();
    let l = wshub_server::config::load(Some(&path), Vec::<(String, String)>::new(), &[]).unwrap();
    let _ = std::fs::remove_file(path);
    l.config
}

/// A self-signed certificate for `localhost` (or another host) in PEM files under a fresh
/// directory.
pub struct Cert {
    pub dir: std::path::PathBuf,
    pub cert_path: std::path::PathBuf,
    pub key_path: std::path::PathBuf,
    pub der: Vec<u8>,
    pub pem: String,
}

impl Cert {
    pub fn new(name: &str) -> Cert {
        Cert::for_host("localhost", name)
    }

    pub fn for_host(host: &str, name: &str) -> Cert {
        let cert = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
        let dir = std::env::temp_dir().join(format!("wshub-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_path, cert.cert.pem()).unwrap();
        std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
        Cert {
            dir,
            cert_path,
            key_path,
            der: cert.cert.der().to_vec(),
            pem: cert.cert.pem(),
        }
    }

    /// The TLS section of a configuration naming these files.
    pub fn section(&self) -> serde_json::Value {
        serde_json::json!({"enabled": true, "cert_pem_file": self.cert_path, "key_pem_file": self.key_path})
    }

    /// A server built from `config` through the real loader ([`node_config`]).
    pub fn build(&self, config: serde_json::Value) -> (Arc<wshub_core::node::Node>, ServerConfig) {
        wshub_server::app::build(&node_config(config, serde_json::json!({}))).unwrap()
    }

    pub fn acceptor(&self) -> wshub_server::tls::TlsAcceptor {
        let tls = wshub_server::config::Tls {
            enabled: true,
            cert_pem: self.cert_path.to_str().unwrap().into(),
            key_pem: self.key_path.to_str().unwrap().into(),
            ..Default::default()
        };
        wshub_server::tls::acceptor("test", &tls).unwrap()
    }
}

impl Drop for Cert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `b` merged into `a`, objects key by key.
fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// The API key of the nodes [`keyed_config`] makes.
pub const KEY: &str = "test-api-key";
/// Their HMAC token secret.
pub const SECRET: &str = "test-token-secret";

/// [`node_config`] of `base` and `extra` on a node with the API key [`KEY`] and the token
/// secret [`SECRET`].
pub fn keyed_config(base: serde_json::Value, extra: serde_json::Value) -> wshub_server::config::Config {
    let mut keyed = serde_json::json!({"http_api": {"key": KEY}, "client": {"token": {"hmac_secret_key": SECRET}}});
    merge(&mut keyed, base);
    node_config(keyed, extra)
}
