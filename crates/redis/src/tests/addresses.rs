//! Every address form Centrifugo reads, each against real redis-servers (sentinels, a
//! Cluster, TLS) started by the test: a publication goes through pub/sub and history, and
//! presence is kept, on the shard the address names.

use super::*;
use crate::address::{Connection, Tls};
use wshub_testkit::redis::{RedisCluster, SentinelGroup};

/// Publishes on a channel this node subscribed to: the publication arrives through
/// pub/sub, history holds it, presence answers.
async fn round_trip(cfg: RedisConfig) -> RedisEngine {
    let e = RedisEngine::new(cfg).unwrap();
    let r = Arc::new(Recorder::default());
    e.set_handler(r.clone());
    r.set_subscribed(true);
    tokio::time::timeout(LIMIT, e.check_all()).await.unwrap().unwrap();
    e.subscribe("rt").await.unwrap();
    let opts = PublishOptions {
        history_size: 10,
        history_ttl: Duration::from_secs(60),
        ..Default::default()
    };
    let pos = e.publish("rt", publication("hi"), &opts).await.unwrap();
    assert_eq!(r.wait_for(1).await, [format!("rt #{} hi", pos.offset)]);
    let h = e.history("rt", HistoryQuery::ALL).await.unwrap();
    assert_eq!(h.position, pos, "history holds it");
    let info = ClientInfo {
        client: "c1".into(),
        user: "u1".into(),
        ..Default::default()
    };
    e.add_presence("rt", "c1", info).await.unwrap();
    assert_eq!(e.presence_stats("rt").await.unwrap(), (1, 1));
    e
}

fn is_cluster(e: &RedisEngine) -> bool {
    e.shards.iter().all(|s| s.target.is_cluster())
}

fn cfg(address: String) -> RedisConfig {
    RedisConfig {
        address,
        prefix: format!("addr{}", rand::random::<u32>()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_port_and_url_with_acl_user_and_db() {
    let server = RedisServer::start().await;
    let e = round_trip(cfg(format!("127.0.0.1:{}", server.port))).await;
    assert!(!is_cluster(&e));
    // An ACL user with a password, database 3: from the section's keys, then from the URL.
    let acl = ["ACL", "SETUSER", "app", "on", ">s3cret", "~*", "&*", "+@all"];
    assert_eq!(cli(server.port, &acl).trim(), "OK");
    let mut c = cfg(format!("127.0.0.1:{}", server.port));
    c.connection = Connection {
        user: "app".into(),
        password: "s3cret".into(),
        db: 3,
        ..Default::default()
    };
    round_trip(c).await;
    assert!(
        cli(server.port, &["-n", "3", "KEYS", "*"]).contains(".stream."),
        "keys in database 3"
    );
    round_trip(cfg(format!("redis://app:s3cret@127.0.0.1:{}/4?io_timeout=2s", server.port))).await;
    assert!(
        cli(server.port, &["-n", "4", "KEYS", "*"]).contains(".stream."),
        "keys in database 4"
    );
    let mut wrong = cfg(format!("redis://app:nope@127.0.0.1:{}", server.port));
    wrong.canary_interval = Duration::from_millis(100);
    let e = RedisEngine::new(wrong).unwrap();
    assert!(e.check_all().await.is_err(), "a wrong password is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket() {
    let (_server, socket) = RedisServer::start_unix().await;
    round_trip(cfg(format!("unix://{}", socket.display()))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_through_a_url_and_through_shard_items() {
    const NAME: &str = "addrmaster";
    let group = SentinelGroup::start(NAME, 2, false).await;
    let (s1, s2) = (&group.sentinels[0], &group.sentinels[1]);
    let url = format!(
        "redis+sentinel://127.0.0.1:{}?sentinel_master_name={NAME}&addr=127.0.0.1:{}",
        s1.port, s2.port
    );
    let e = round_trip(cfg(url)).await;
    assert_eq!(e.shard_names(), [format!("sentinel {NAME}")]);
    // One `sentinel_address` item with both sentinels: one shard.
    let mut c = cfg("redis://127.0.0.1:1".into());
    c.sentinel = Some(SentinelConfig {
        addresses: vec![group.address_item()],
        master_name: NAME.into(),
        ..Default::default()
    });
    assert_eq!(round_trip(c).await.shard_names().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_detected_through_address_and_named_by_url() {
    let cluster = RedisCluster::start().await;
    let first = cluster.nodes[0].port;
    let e = round_trip(cfg(format!("127.0.0.1:{first}"))).await;
    assert!(is_cluster(&e), "a Cluster node given as address is used as a Cluster");
    let e = round_trip(cfg(format!(
        "redis+cluster://127.0.0.1:{first}?addr=127.0.0.1:{}",
        cluster.nodes[1].port
    )))
    .await;
    assert!(is_cluster(&e));
    // `cluster_address`: each item one shard, seeds comma-separated inside it.
    let mut c = cfg(String::new());
    c.cluster = vec![cluster.seeds()];
    let e = round_trip(c.clone()).await;
    assert_eq!(e.shard_names().len(), 1);
    c.cluster = vec![cluster.seeds(), format!("127.0.0.1:{first}")];
    assert_eq!(RedisEngine::new(c).unwrap().shard_names().len(), 2, "two items, two shards");
}

/// A certificate (and its key) for `127.0.0.1`, self-signed, in PEM.
fn certificate() -> (String, String) {
    let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    (c.cert.pem(), c.signing_key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_ca_a_client_certificate_and_rediss() {
    let dir = std::env::temp_dir().join(format!("wshub-redis-tls-{}-{}", std::process::id(), rand::random::<u32>()));
    std::fs::create_dir_all(&dir).unwrap();
    let (server_cert, server_key) = certificate();
    let (client_cert, client_key) = certificate();
    let path = |name: &str, body: &str| {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    let (sc, sk, cc) = (
        path("server.pem", &server_cert),
        path("server.key", &server_key),
        path("client.pem", &client_cert),
    );
    // Clients must show a certificate the server trusts: the client's own (self-signed).
    let server = RedisServer::start_tls(&sc, &sk, &cc, true).await;
    let tls = Tls {
        cert_pem: client_cert.clone().into_bytes(),
        key_pem: client_key.clone().into_bytes(),
        server_ca_pem: server_cert.clone().into_bytes(),
        insecure_skip_verify: false,
    };
    let mut c = cfg(format!("127.0.0.1:{}", server.port));
    c.connection.tls = Some(tls.clone());
    round_trip(c.clone()).await;
    c.address = format!("rediss://127.0.0.1:{}", server.port);
    round_trip(c.clone()).await;

    // Without the CA, the server's certificate is refused; with insecure_skip_verify, not.
    let mut untrusting = c.clone();
    untrusting.canary_interval = Duration::from_millis(100);
    untrusting.connection.tls = Some(Tls {
        server_ca_pem: Vec::new(),
        ..tls.clone()
    });
    assert!(RedisEngine::new(untrusting.clone()).unwrap().check_all().await.is_err());
    untrusting.connection.tls = Some(Tls {
        server_ca_pem: Vec::new(),
        insecure_skip_verify: true,
        ..tls.clone()
    });
    round_trip(untrusting).await;

    // Without a client certificate, the server refuses.
    let mut anonymous = c.clone();
    anonymous.canary_interval = Duration::from_millis(100);
    anonymous.connection.tls = Some(Tls {
        cert_pem: Vec::new(),
        key_pem: Vec::new(),
        ..tls.clone()
    });
    assert!(RedisEngine::new(anonymous).unwrap().check_all().await.is_err());

    // A plain connection to the TLS port gets nowhere.
    let mut plain = cfg(format!("redis://127.0.0.1:{}", server.port));
    plain.canary_interval = Duration::from_millis(100);
    plain.connection.io_timeout = Duration::from_millis(500);
    assert!(RedisEngine::new(plain).unwrap().check_all().await.is_err());

    // A key that is not PEM stops the start.
    let mut bad = c.clone();
    bad.connection.tls = Some(Tls {
        key_pem: b"nope".to_vec(),
        ..tls
    });
    assert!(matches!(RedisEngine::new(bad), Err(RedisEngineError::Tls(_))));
    let _ = std::fs::remove_dir_all(&dir);
}
