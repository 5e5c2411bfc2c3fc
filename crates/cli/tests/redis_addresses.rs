//! The binary on Redis in the address forms Centrifugo users write, each against servers
//! the test starts: what `checkconfig` accepts, `wshub` serves with (ready, publications
//! kept in that Redis).
//! - `rediss://` with `engine.redis.tls` (a client certificate as a path, its key as PEM
//!   text, the CA as base64), against Debian's redis-server with TLS and client certificates;
//! - `redis+sentinel://` naming two sentinels;
//! - a Redis Cluster node given as `address`, `host:port`: used as a Cluster.
#![allow(clippy::unwrap_used)]

mod common;

use base64::Engine as _;
use common::{api, run_to_end, temp_dir, Node};
use serde_json::json;
use wshub_testkit::redis::{cli, RedisCluster, RedisServer, SentinelGroup};

/// A node configuration on `redis` (an `engine.redis` section) with history kept.
fn config(redis: serde_json::Value) -> serde_json::Value {
    json!({
        "http_api": {"key": common::API_KEY},
        "engine": {"type": "redis", "redis": redis},
        "channel": {"without_namespace": {"history_size": 10, "history_ttl": "60s"}}
    })
}

/// `checkconfig` passes, a node serves, and a publication is kept (it has an offset).
async fn serves(name: &str, cfg: &serde_json::Value) -> Node {
    let dir = temp_dir(name);
    let file = dir.join("checked.json");
    std::fs::write(&file, cfg.to_string()).unwrap();
    let out = run_to_end(std::process::Command::new(env!("CARGO_BIN_EXE_wshub")).args(["checkconfig", "-c", file.to_str().unwrap()]));
    assert!(out.status.success(), "checkconfig: {}", String::from_utf8_lossy(&out.stderr));
    let node = Node::start(&dir, cfg, common::free_port()).await;
    let (status, r) = api(node.port, "publish", &json!({"channel": "news", "data": {"a": 1}}))
        .await
        .unwrap();
    assert_eq!(status, 200, "{r} {}", node.log());
    assert!(r["result"]["offset"].is_u64(), "{r}");
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_client_certificate_and_ca() {
    let dir = temp_dir("redis-tls-certs");
    let server = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let client = rcgen::generate_simple_self_signed(vec!["wshub".to_string()]).unwrap();
    let write = |name: &str, body: String| {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    let server_cert = write("server.pem", server.cert.pem());
    let server_key = write("server.key", server.signing_key.serialize_pem());
    let client_cert = write("client.pem", client.cert.pem());
    let redis = RedisServer::start_tls(&server_cert, &server_key, &client_cert, true).await;
    let cfg = config(json!({
        "address": format!("rediss://127.0.0.1:{}", redis.port),
        "prefix": "tlsnode",
        "tls": {
            "enabled": true,
            "cert_pem": client_cert,
            "key_pem": client.signing_key.serialize_pem(),
            "server_ca_pem": base64::engine::general_purpose::STANDARD.encode(server.cert.pem()),
        }
    }));
    let _node = serves("redis-tls", &cfg).await;

    // Without the client certificate Redis refuses the node: it does not start.
    let mut no_cert = cfg.clone();
    no_cert["engine"]["redis"]["tls"]["cert_pem"] = json!("");
    no_cert["engine"]["redis"]["tls"]["key_pem"] = json!("");
    let file = dir.join("no-cert.json");
    std::fs::write(&file, no_cert.to_string()).unwrap();
    let out = run_to_end(&mut wshub_testkit::serve_command(
        env!("CARGO_BIN_EXE_wshub"),
        &file,
        common::free_port(),
    ));
    assert!(!out.status.success(), "served without a client certificate");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("engine.redis"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sentinel_url() {
    const NAME: &str = "urlmaster";
    let group = SentinelGroup::start(NAME, 2, false).await;
    let (s1, s2) = (group.sentinels[0].port, group.sentinels[1].port);
    let cfg = config(json!({
        "address": format!("redis+sentinel://127.0.0.1:{s1}?sentinel_master_name={NAME}&addr=127.0.0.1:{s2}"),
        "prefix": "sentinelurl"
    }));
    let _node = serves("redis-sentinel-url", &cfg).await;
    let keys = cli(group.master.port, &["KEYS", "sentinelurl.stream.*"]);
    assert!(keys.contains("sentinelurl.stream.news"), "kept on the master: {keys}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_node_given_as_address() {
    let cluster = RedisCluster::start().await;
    let cfg = config(json!({"address": format!("127.0.0.1:{}", cluster.nodes[0].port), "prefix": "detected"}));
    let _node = serves("redis-cluster-detected", &cfg).await;
    // Cluster keys carry the channel's hash tag: `{prefix}.stream.{tag}.news`.
    let keys: String = cluster.nodes.iter().map(|n| cli(n.port, &["KEYS", "detected.stream.*"])).collect();
    assert!(keys.contains("detected.stream.{") && keys.contains("}.news"), "{keys}");
}

/// The name connections to Redis with `client_name` (`CLIENT SETNAME`), that `CLIENT LIST`
/// shows on each server: the command connection and the pub/sub pinger, named again after
/// Redis dropped them; on a Cluster, on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_carry_the_client_name() {
    let named = |port: u16| {
        cli(port, &["CLIENT", "LIST"])
            .lines()
            .filter(|l| l.contains(" name=wshub-a "))
            .count()
    };
    let redis = RedisServer::start().await;
    let cfg = config(json!({"address": format!("127.0.0.1:{}", redis.port), "prefix": "named", "client_name": "wshub-a"}));
    let node = serves("redis-client-name", &cfg).await;
    let listed = cli(redis.port, &["CLIENT", "LIST"]);
    assert!(named(redis.port) >= 2, "the command connection and the pinger: {listed}");
    // Redis drops every connection: the node reconnects, and names the new ones.
    cli(redis.port, &["CLIENT", "KILL", "TYPE", "normal"]);
    cli(redis.port, &["CLIENT", "KILL", "TYPE", "pubsub"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let ok = matches!(
            api(node.port, "publish", &json!({"channel": "news", "data": {"a": 2}})).await,
            Ok((200, _))
        );
        if ok && named(redis.port) >= 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not named again: {}",
            cli(redis.port, &["CLIENT", "LIST"])
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await; // polling Redis's client list
    }
    drop(node);

    let cluster = RedisCluster::start().await;
    let cfg = config(json!({"address": format!("127.0.0.1:{}", cluster.nodes[0].port), "prefix": "namedc", "client_name": "wshub-a"}));
    let _node = serves("redis-client-name-cluster", &cfg).await;
    for n in &cluster.nodes {
        assert!(named(n.port) >= 1, "node {}: {}", n.port, cli(n.port, &["CLIENT", "LIST"]));
    }
    // A name Redis would refuse stops the start.
    let mut bad = config(json!({"address": format!("127.0.0.1:{}", redis.port), "client_name": "two words"}));
    bad["engine"]["redis"]["client_name"] = json!("two words");
    let dir = temp_dir("redis-client-name-bad");
    let file = dir.join("bad.json");
    std::fs::write(&file, bad.to_string()).unwrap();
    let out = run_to_end(std::process::Command::new(env!("CARGO_BIN_EXE_wshub")).args(["checkconfig", "-c", file.to_str().unwrap()]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("engine.redis.client_name"), "{out:?}");
}
