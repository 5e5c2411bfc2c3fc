#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use wshub_core::cluster::NodeControl;
use wshub_core::engine::conformance::BrokerFactory;
use wshub_core::engine::*;
use wshub_protocol::{ClientInfo, Publication};
use wshub_testkit::nats::NatsServer;

use super::*;

/// Two brokers per cluster on one `nats-server`, each cluster under a prefix of its own.
struct NatsFactory {
    server: NatsServer,
}

impl NatsFactory {
    async fn start() -> Self {
        NatsFactory {
            server: NatsServer::start().await,
        }
    }
}

fn config(url: String) -> NatsConfig {
    NatsConfig {
        url,
        prefix: format!("t{}", wshub_testkit::unique()),
        ..Default::default()
    }
}

impl BrokerFactory for NatsFactory {
    type Broker = NatsBroker;

    fn brokers(&self, nodes: usize) -> BoxFuture<'_, Vec<NatsBroker>> {
        let cfg = config(self.server.url());
        Box::pin(async move { (0..nodes).map(|_| NatsBroker::new(cfg.clone()).unwrap()).collect() })
    }

    fn sleep(&self, d: Duration) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(d))
    }
}

mod conformance {
    wshub_core::broker_conformance!(#[tokio::test] async fn, super::NatsFactory::start().await);
}

/// What a broker delivered, per channel.
#[derive(Default)]
struct Seen {
    pubs: Mutex<Vec<(String, Publication)>>,
    subscribed: Mutex<Vec<String>>,
}

impl BrokerHandler for Seen {
    fn handle_publication(&self, channel: &str, p: &Publication) {
        self.pubs.lock().unwrap().push((channel.to_string(), p.clone()));
    }
    fn handle_join(&self, _: &str, _: &ClientInfo) {}
    fn handle_leave(&self, _: &str, _: &ClientInfo) {}
    fn handle_reset(&self, _: &str) {}
    fn has_subscribers(&self, channel: &str) -> bool {
        self.subscribed.lock().unwrap().iter().any(|c| c == channel)
    }
}

impl Seen {
    async fn wait(&self, n: usize) -> Vec<(String, Publication)> {
        wshub_testkit::wait_until("publications", Duration::from_secs(10), || self.pubs.lock().unwrap().len() >= n).await;
        self.pubs.lock().unwrap().clone()
    }
}

fn data(s: &str) -> Publication {
    Publication {
        data: Bytes::copy_from_slice(s.as_bytes()),
        ..Default::default()
    }
}

/// With `allow_wildcards`, a subscription to `news.*` receives `news.sport` marked with its
/// channel; without, such a subscription is refused. A published channel never has them.
#[tokio::test]
async fn wildcard_subscriptions_need_allow_wildcards() {
    let server = NatsServer::start().await;
    let strict = NatsBroker::new(config(server.url())).unwrap();
    assert!(strict.subscribe("news.*").await.is_err());
    assert!(strict.subscribe("news.>").await.is_err());

    let cfg = NatsConfig {
        allow_wildcards: true,
        ..config(server.url())
    };
    let (a, b) = (NatsBroker::new(cfg.clone()).unwrap(), NatsBroker::new(cfg).unwrap());
    let seen = Arc::new(Seen::default());
    a.set_handler(seen.clone());
    a.subscribe("news.*").await.unwrap();
    let opts = PublishOptions::default();
    assert!(b.publish("news.*", data("x"), &opts).await.is_err());
    b.publish("news.sport", data("goal"), &opts).await.unwrap();
    b.publish("weather.today", data("rain"), &opts).await.unwrap();
    b.publish("news.tech", data("chip"), &opts).await.unwrap();
    let got = seen.wait(2).await;
    let got: Vec<(&str, &str, &[u8])> = got.iter().map(|(c, p)| (c.as_str(), p.channel.as_str(), p.data.as_ref())).collect();
    assert_eq!(got, [("news.*", "news.sport", &b"goal"[..]), ("news.*", "news.tech", &b"chip"[..])]);
}

/// Raw mode: the publication's bare data on `{raw prefix}{channel}` after replacements, so
/// that a system publishing to NATS directly reaches subscribers; no joins or leaves.
#[tokio::test]
async fn raw_mode_carries_bare_data_on_replaced_subjects() {
    let server = NatsServer::start().await;
    let raw = RawMode::new(
        "raw.".into(),
        [(":".to_string(), ".".to_string()), ("::".to_string(), "_".to_string())],
    );
    assert_eq!(raw.subject("a:b::c"), "raw.a.b_c");
    let cfg = NatsConfig {
        raw_mode: Some(raw),
        ..config(server.url())
    };
    let (a, b) = (NatsBroker::new(cfg.clone()).unwrap(), NatsBroker::new(cfg).unwrap());
    let seen = Arc::new(Seen::default());
    a.set_handler(seen.clone());
    seen.subscribed.lock().unwrap().push("orders:eu".into());
    a.subscribe("orders:eu").await.unwrap();

    // Another program publishing plain bytes to the subject.
    let other = async_nats::connect(server.url()).await.unwrap();
    other.publish("raw.orders.eu", "{\"id\":1}".into()).await.unwrap();
    other.flush().await.unwrap();
    // And wshub's own publications: the data alone goes out.
    b.publish("orders:eu", data("{\"id\":2}"), &PublishOptions::default())
        .await
        .unwrap();
    b.publish_join("orders:eu", ClientInfo::default()).await.unwrap();
    let got = seen.wait(2).await;
    assert_eq!(got.len(), 2);
    assert!(got
        .iter()
        .all(|(c, p)| c == "orders:eu" && p.channel.is_empty() && p.info.is_none()));
    let datas: Vec<&[u8]> = got.iter().map(|(_, p)| p.data.as_ref()).collect();
    assert_eq!(datas, [&b"{\"id\":1}"[..], &b"{\"id\":2}"[..]]);
}

/// Subjects are Centrifugo's, and the messages its `Push`: a Centrifugo node's publication
/// (written here as it writes it) reaches a wshub node, tags and info intact.
#[tokio::test]
async fn reads_centrifugo_subjects_and_pushes() {
    use prost::Message as _;
    let server = NatsServer::start().await;
    let cfg = NatsConfig {
        prefix: "centrifugo".into(),
        ..config(server.url())
    };
    let a = NatsBroker::new(cfg).unwrap();
    let seen = Arc::new(Seen::default());
    a.set_handler(seen.clone());
    a.subscribe("chat").await.unwrap();
    let push = wshub_protocol::Push {
        channel: "chat".into(),
        r#pub: Some(Publication {
            data: Bytes::from_static(b"{}"),
            tags: HashMap::from([("k".to_string(), "v".to_string())]),
            info: Some(ClientInfo {
                user: "u".into(),
                client: "c".into(),
                ..Default::default()
            }),
            time: 1,
            ..Default::default()
        }),
        ..Default::default()
    };
    let other = async_nats::connect(server.url()).await.unwrap();
    other.publish("centrifugo.client.chat", push.encode_to_vec().into()).await.unwrap();
    other.flush().await.unwrap();
    let got = seen.wait(1).await;
    assert_eq!(got[0].0, "chat");
    assert_eq!(Some(&got[0].1), push.r#pub.as_ref());
}

/// A NATS that does not answer fails the check, naming the URL (the server's start stops
/// there, not at the first publication).
#[tokio::test]
async fn check_fails_without_a_server() {
    let port = wshub_testkit::redis::free_port();
    let b = NatsBroker::new(config(format!("nats://127.0.0.1:{port}"))).unwrap();
    let e = tokio::time::timeout(Duration::from_secs(20), b.check()).await.unwrap().unwrap_err();
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
    assert!(b.publish_control(b"x".to_vec()).await.is_err());
}

#[test]
fn settings_are_checked_and_passwords_kept_out_of_messages() {
    assert!(matches!(
        NatsBroker::new(NatsConfig {
            url: "http://[".into(),
            ..Default::default()
        }),
        Err(NatsBrokerError::Url(_))
    ));
    assert!(matches!(
        NatsBroker::new(NatsConfig {
            prefix: String::new(),
            ..Default::default()
        }),
        Err(NatsBrokerError::Prefix)
    ));
    let b = NatsBroker::new(NatsConfig {
        url: "nats://u:secret@127.0.0.1:4222, nats://127.0.0.1:4223".into(),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(b.url_for_logs(), "nats://u:***@127.0.0.1:4222, nats://127.0.0.1:4223");
    let bad_tls = NatsConfig {
        tls: Some(Tls {
            cert_pem: b"x".to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(matches!(NatsBroker::new(bad_tls), Err(NatsBrokerError::Tls(_))));
}

/// A certificate (and its key) for `127.0.0.1`, self-signed, in PEM.
fn certificate() -> (String, String) {
    let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    (c.cert.pem(), c.signing_key.serialize_pem())
}

/// `broker.nats.tls` against a `nats-server` that requires TLS and a client certificate:
/// with the server's CA and a client certificate the check passes; without the CA the
/// server's certificate is refused (unless `insecure_skip_verify`); without a client
/// certificate the server refuses.
#[tokio::test]
async fn tls_with_a_ca_and_a_client_certificate() {
    let dir = wshub_testkit::temp_dir("nats-tls");
    let (server_cert, server_key) = certificate();
    let (client_cert, client_key) = certificate();
    let path = |name: &str, body: &str| {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p.to_str().unwrap().to_string()
    };
    let (sc, sk, cc) = (
        path("server.pem", &server_cert),
        path("server.key", &server_key),
        path("client.pem", &client_cert),
    );
    let server = NatsServer::start_with(
        false,
        &["--tls", "--tlscert", &sc, "--tlskey", &sk, "--tlsverify", "--tlscacert", &cc],
    )
    .await;
    let tls = Tls {
        cert_pem: client_cert.into_bytes(),
        key_pem: client_key.into_bytes(),
        server_ca_pem: server_cert.into_bytes(),
        insecure_skip_verify: false,
    };
    let check = |tls: Tls| {
        let cfg = NatsConfig {
            tls: Some(tls),
            dial_timeout: Duration::from_secs(2),
            ..config(server.url())
        };
        async move {
            let b = NatsBroker::new(cfg).unwrap();
            tokio::time::timeout(Duration::from_secs(20), b.check()).await.unwrap()
        }
    };
    check(tls.clone()).await.unwrap();
    let untrusting = Tls {
        server_ca_pem: Vec::new(),
        ..tls.clone()
    };
    assert!(check(untrusting.clone()).await.is_err(), "an unknown CA is refused");
    check(Tls {
        insecure_skip_verify: true,
        ..untrusting
    })
    .await
    .unwrap();
    let anonymous = Tls {
        cert_pem: Vec::new(),
        key_pem: Vec::new(),
        ..tls
    };
    assert!(check(anonymous).await.is_err(), "the server asks for a client certificate");
    let _ = std::fs::remove_dir_all(&dir);
}
