//! Consumers reading every form of source Centrifugo's do: a Redis stream on a Redis
//! Cluster and behind Sentinel (the engine's connection keys), a JetStream stream over TLS,
//! and the publication data mode of both (the message body is the data, its fields or
//! headers name the channels and options). Real `redis-server` clusters and sentinels and
//! a real `nats-server`; every publication counted at a real subscriber.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::{serial, wait_until, Node, Numbers, LIMIT};
use serde_json::{json, Value};
use wshub_client::{Client, ClientConfig};
use wshub_testkit::redis::{RedisCluster, SentinelGroup};

const SECRET: &str = "consumer-sources-test";

fn config(consumer: Value) -> Value {
    json!({
        "http_api": {"key": common::API_KEY},
        "client": {"token": {"hmac_secret_key": SECRET}},
        "channel": {"namespaces": [{"name": "room", "allow_subscribe_for_client": true,
            "history_size": 100, "history_ttl": "300s"}]},
        "prometheus": {"enabled": true},
        "consumers": [consumer]
    })
}

/// A client subscribed to `channels` on `port`: the `(channel, n)` pairs it received.
async fn subscriber(port: u16, channels: &[&str]) -> (Client, Numbers) {
    let config = ClientConfig {
        token: wshub_testkit::token(SECRET, &json!({"sub": "reader"})),
        ..Default::default()
    };
    common::numbered_subscriber(port, config, channels, false).await
}

/// Waits until `seen` is exactly `want`.
async fn expect(node: &Node, seen: &Numbers, want: &[(&str, u64)]) {
    let want: BTreeSet<(String, u64)> = want.iter().map(|(c, n)| (c.to_string(), *n)).collect();
    common::wait_for_set(seen, &want, LIMIT, |got| {
        format!("received {got:?}, want {want:?}; log: {}", node.log())
    })
    .await;
}

/// `redis-cli -c` (following the cluster's redirections) against `port`.
fn cluster_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-c", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("redis-cli could not start ({e}): install it with `apt-get install redis-tools`"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The group exists once the consumer has run (entries added before are not read: it
/// starts at `$`, as Centrifugo's).
async fn wait_for_group(cli: impl Fn(&[&str]) -> String, stream: &str) {
    wait_until("the consumer group", LIMIT, || cli(&["XINFO", "GROUPS", stream]).contains("wshub")).await;
}

fn metric_line(body: &str, name: &str) -> String {
    body.lines().filter(|l| l.starts_with(name)).collect::<Vec<_>>().join("\n")
}

#[test]
fn redis_stream_on_a_cluster_in_publication_data_mode() {
    serial(async {
        let cluster = RedisCluster::start().await;
        let seed = cluster.nodes[0].port;
        let stream = format!("s{}", common::unique());
        let dir = common::temp_dir("consumer-cluster");
        let cfg = config(json!({"name": "data", "enabled": true, "type": "redis_stream", "redis_stream": {
            "cluster_address": [cluster.seeds()], "streams": [stream], "consumer_group": "wshub",
            "publication_data_mode": {"enabled": true}}}));
        let node = Node::start(&dir, &cfg, common::free_port()).await;
        wait_for_group(|a| cluster_cli(seed, a), &stream).await;
        let (_client, seen) = subscriber(node.port, &["room:a", "room:b"]).await;
        let add = |fields: &[&str]| {
            let mut args = vec!["XADD", stream.as_str(), "*"];
            args.extend_from_slice(fields);
            let id = cluster_cli(seed, &args);
            assert!(id.contains('-'), "XADD: {id}");
        };
        add(&[
            "payload",
            r#"{"n": 1}"#,
            "centrifugo-channels",
            "room:a",
            "centrifugo-tag-kind",
            "first",
        ]);
        // Several channels: a broadcast.
        add(&["payload", r#"{"n": 2}"#, "centrifugo-channels", "room:a,room:b"]);
        // Permanent failures, skipped: a delta flag that is no boolean, no channel at all.
        add(&[
            "payload",
            r#"{"n": 90}"#,
            "centrifugo-channels",
            "room:a",
            "centrifugo-delta",
            "maybe",
        ]);
        add(&["payload", r#"{"n": 91}"#]);
        add(&[
            "payload",
            r#"{"n": 3}"#,
            "centrifugo-channels",
            "room:b",
            "centrifugo-idempotency-key",
            "k3",
        ]);
        // The same idempotency key again: published once.
        add(&[
            "payload",
            r#"{"n": 4}"#,
            "centrifugo-channels",
            "room:b",
            "centrifugo-idempotency-key",
            "k3",
        ]);
        add(&["payload", r#"{"n": 5}"#, "centrifugo-channels", "room:b"]);
        expect(
            &node,
            &seen,
            &[("room:a", 1), ("room:a", 2), ("room:b", 2), ("room:b", 3), ("room:b", 5)],
        )
        .await;
        // The tags came along.
        let (_, history) = common::api(node.port, "history", &json!({"channel": "room:a", "limit": 10}))
            .await
            .unwrap();
        let first = &history["result"]["publications"][0];
        assert_eq!(first["data"]["n"], 1, "{history}");
        assert_eq!(first["tags"]["kind"], "first", "{history}");
        // Acknowledged: nothing pending in the group.
        wait_until("every entry acknowledged", LIMIT, || {
            cluster_cli(seed, &["XPENDING", &stream, "wshub"]).lines().next().map(str::trim) == Some("0")
        })
        .await;
        let (_, metrics) = common::http(node.port, "GET", "/metrics", "", "").await.unwrap();
        let errors = metric_line(&metrics, "centrifugo_consumers_errors_total");
        assert!(errors.contains("consumer_name=\"data\"} 1"), "the bad delta counted once: {errors}");
    });
}

#[test]
fn redis_stream_through_sentinel() {
    serial(async {
        let group = SentinelGroup::start("consumed", 1, false).await;
        let stream = format!("s{}", common::unique());
        let dir = common::temp_dir("consumer-sentinel");
        let cfg = config(
            json!({"name": "commands", "enabled": true, "type": "redis_stream", "redis_stream": {
            "sentinel_address": [group.address_item()], "sentinel_master_name": "consumed",
            "streams": [stream], "consumer_group": "wshub"}}),
        );
        let node = Node::start(&dir, &cfg, common::free_port()).await;
        let master = group.master.port;
        wait_for_group(|a| wshub_testkit::redis::cli(master, a), &stream).await;
        let (_client, seen) = subscriber(node.port, &["room:s"]).await;
        for n in 1..=3 {
            let payload = json!({"channel": "room:s", "data": {"n": n}}).to_string();
            wshub_testkit::redis::cli(master, &["XADD", &stream, "*", "method", "publish", "payload", &payload]);
        }
        expect(&node, &seen, &[("room:s", 1), ("room:s", 2), ("room:s", 3)]).await;
    });
}

#[test]
fn nats_jetstream_over_tls_in_publication_data_mode() {
    serial(async {
        let dir = common::temp_dir("consumer-nats-tls");
        let server = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        let write = |name: &str, body: String| {
            let p = dir.join(name);
            std::fs::write(&p, body).unwrap();
            p.to_str().unwrap().to_string()
        };
        let cert = write("server.pem", server.cert.pem());
        let key = write("server.key", server.signing_key.serialize_pem());
        let nats = wshub_testkit::nats::NatsServer::start_with(true, &["--tls", "--tlscert", &cert, "--tlskey", &key]).await;
        let url = format!("tls://127.0.0.1:{}", nats.port);
        let js = async_nats::jetstream::new(
            async_nats::ConnectOptions::new()
                .require_tls(true)
                .add_root_certificates(cert.clone().into())
                .connect(&url)
                .await
                .unwrap(),
        );
        common::jetstream_stream(&js, "DATA", "data.>").await;
        let cfg = config(json!({"name": "js", "enabled": true, "type": "nats_jetstream", "nats_jetstream": {
            "url": url, "stream_name": "DATA", "durable_consumer_name": "wshub", "subjects": ["data.>"],
            "tls": {"enabled": true, "server_ca_pem": cert},
            "publication_data_mode": {"enabled": true}}}));
        let node = Node::start(&dir, &cfg, common::free_port()).await;
        common::wait_for_durable(&js, "DATA", &node).await;
        let (_client, seen) = subscriber(node.port, &["room:x", "room:y"]).await;
        let send = |channels: &str, n: u64| {
            let mut h = async_nats::HeaderMap::new();
            h.insert("centrifugo-channels", channels);
            js.publish_with_headers("data.a", h, json!({"n": n}).to_string().into())
        };
        send("room:x", 1).await.unwrap().await.unwrap();
        send("room:x,room:y", 2).await.unwrap().await.unwrap();
        send("", 99).await.unwrap().await.unwrap();
        send("room:y", 3).await.unwrap().await.unwrap();
        expect(&node, &seen, &[("room:x", 1), ("room:x", 2), ("room:y", 2), ("room:y", 3)]).await;
    });
}

/// A consumer whose TLS files cannot be read, or whose data mode names no channel
/// property, does not start: the error names the key.
#[test]
fn bad_consumer_settings_stop_the_start_naming_the_key() {
    let dir = common::temp_dir("consumer-bad");
    let cases = [
        (
            json!({"name": "js", "enabled": true, "type": "nats_jetstream", "nats_jetstream": {
                "stream_name": "S", "durable_consumer_name": "d",
                "tls": {"enabled": true, "server_ca_pem": "/nonexistent/ca.pem"}}}),
            "consumers[0].nats_jetstream.tls.server_ca_pem",
        ),
        (
            json!({"name": "js", "enabled": true, "type": "nats_jetstream", "nats_jetstream": {
                "stream_name": "S", "durable_consumer_name": "d", "credentials_file": "/nonexistent/user.creds"}}),
            "consumers[0].nats_jetstream.credentials_file",
        ),
        (
            json!({"name": "rs", "enabled": true, "type": "redis_stream", "redis_stream": {
                "streams": ["s"], "consumer_group": "g",
                "publication_data_mode": {"enabled": true, "channels_value": ""}}}),
            "consumers[0].redis_stream.publication_data_mode.channels_value",
        ),
        (
            json!({"name": "rs", "enabled": true, "type": "redis_stream", "redis_stream": {
                "address": ["127.0.0.1:1", "127.0.0.1:2"], "streams": ["s"], "consumer_group": "g"}}),
            "consumers[0].redis_stream.address",
        ),
    ];
    for (consumer, key) in cases {
        let path = dir.join("config.json");
        std::fs::write(&path, config(consumer).to_string()).unwrap();
        let out = common::run_to_end(Command::new(env!("CARGO_BIN_EXE_wshub")).args(["checkconfig", "-c", path.to_str().unwrap()]));
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "{key}: accepted: {text}");
        assert!(text.contains(key), "the error names {key}: {text}");
    }
}

/// A NATS JWT (`ed25519-nkey`) of `claims`, issued and signed by `issuer`.
fn nats_jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: Value) -> String {
    use base64::Engine as _;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let header = b64(&json!({"typ": "JWT", "alg": "ed25519-nkey"}));
    let claims = b64(&json!({
        "jti": format!("J{}", common::unique()), "iat": 1_700_000_000, "iss": issuer.public_key(),
        "name": name, "sub": subject, "nats": nats,
    }));
    let signed = format!("{header}.{claims}");
    let signature = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signature))
}

/// `credentials_file` against a `nats-server` in operator mode (accounts from JWTs, no
/// other way in): the consumer authenticates with the user JWT and NKey seed of the file.
#[test]
fn nats_jetstream_with_a_credentials_file() {
    serial(async {
        let dir = common::temp_dir("consumer-nats-creds");
        let operator = nkeys::KeyPair::new_operator();
        let account = nkeys::KeyPair::new_account();
        let user = nkeys::KeyPair::new_user();
        // JetStream needs a system account.
        let system = nkeys::KeyPair::new_account();
        let system_jwt = nats_jwt(&operator, &system.public_key(), "SYS", json!({"type": "account", "version": 2}));
        let operator_jwt = nats_jwt(&operator, &operator.public_key(), "op", json!({"type": "operator", "version": 2}));
        let unlimited = json!({"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": true,
            "conn": -1, "leaf": -1, "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1});
        let account_jwt = nats_jwt(
            &operator,
            &account.public_key(),
            "app",
            json!({"type": "account", "version": 2, "limits": unlimited, "default_permissions": {"pub": {}, "sub": {}}}),
        );
        let user_jwt = nats_jwt(
            &account,
            &user.public_key(),
            "wshub",
            json!({"type": "user", "version": 2, "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1}),
        );
        let conf = dir.join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "operator: \"{operator_jwt}\"\nsystem_account: {}\nresolver: MEMORY\n\
                 resolver_preload: {{\n  {}: \"{account_jwt}\"\n  {}: \"{system_jwt}\"\n}}\n",
                system.public_key(),
                account.public_key(),
                system.public_key()
            ),
        )
        .unwrap();
        let creds = dir.join("user.creds");
        std::fs::write(
            &creds,
            format!(
                "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
                 -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
                user.seed().unwrap()
            ),
        )
        .unwrap();
        let nats = wshub_testkit::nats::NatsServer::start_with(true, &["-c", conf.to_str().unwrap()]).await;
        // Without the credentials the server lets nobody in.
        assert!(async_nats::connect(nats.url()).await.is_err(), "an anonymous client was let in");
        let js = async_nats::jetstream::new(
            async_nats::ConnectOptions::with_credentials_file(&creds)
                .await
                .unwrap()
                .connect(nats.url())
                .await
                .unwrap(),
        );
        common::jetstream_stream(&js, "CMDS", "cmds.>").await;
        let cfg = config(json!({"name": "js", "enabled": true, "type": "nats_jetstream", "nats_jetstream": {
            "url": nats.url(), "credentials_file": creds, "stream_name": "CMDS",
            "durable_consumer_name": "wshub", "subjects": ["cmds.>"]}}));
        let node = Node::start(&dir, &cfg, common::free_port()).await;
        common::wait_for_durable(&js, "CMDS", &node).await;
        let (_client, seen) = subscriber(node.port, &["room:c"]).await;
        for n in 1..=3 {
            let mut h = async_nats::HeaderMap::new();
            h.insert("centrifugo-method", "publish");
            let body = json!({"channel": "room:c", "data": {"n": n}}).to_string();
            js.publish_with_headers("cmds.a", h, body.into()).await.unwrap().await.unwrap();
        }
        expect(&node, &seen, &[("room:c", 1), ("room:c", 2), ("room:c", 3)]).await;
    });
}

/// `postgresql.tls` against a PostgreSQL that refuses TCP connections without TLS
/// (`hostnossl … reject`): with the server's CA the consumer reads the outbox.
#[test]
fn postgresql_outbox_over_tls() {
    serial(async {
        let dir = common::temp_dir("consumer-pg-tls");
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let pg = wshub_testkit::postgres::Postgres::start_tls(&cert.cert.pem(), &cert.signing_key.serialize_pem()).await;
        pg.psql(
            "CREATE TABLE outbox (id BIGSERIAL PRIMARY KEY, method TEXT NOT NULL, payload BYTEA NOT NULL, \
             partition INTEGER NOT NULL, created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL)",
        );
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        let outbox = |tls: Value| {
            json!({"name": "outbox", "enabled": true, "type": "postgresql", "postgresql": {
                "dsn": pg.dsn(), "outbox_table_name": "outbox", "num_partitions": 1,
                "partition_poll_interval": "50ms", "tls": tls}})
        };
        let node = Node::start(
            &dir,
            &config(outbox(json!({"enabled": true, "server_ca_pem": ca}))),
            common::free_port(),
        )
        .await;
        let (_client, seen) = subscriber(node.port, &["room:pg"]).await;
        pg.psql(
            "INSERT INTO outbox (method, payload, partition) SELECT 'publish', \
             convert_to(json_build_object('channel', 'room:pg', 'data', json_build_object('n', n))::text, 'UTF8'), 0 \
             FROM generate_series(1, 3) AS n ORDER BY n",
        );
        expect(&node, &seen, &[("room:pg", 1), ("room:pg", 2), ("room:pg", 3)]).await;
        wait_until("the outbox emptied", LIMIT, || pg.psql("SELECT count(*) FROM outbox") == "0").await;
        drop(node);

        // Without TLS the server refuses the consumer: the rows stay, the errors are counted.
        let plain = Node::start(&dir, &config(outbox(json!({"enabled": false}))), common::free_port()).await;
        pg.psql("INSERT INTO outbox (method, payload, partition) VALUES ('publish', '{\"channel\": \"room:pg\", \"data\": {}}', 0)");
        wait_until("a refused connection counted", LIMIT, || plain.log().contains("cannot connect")).await;
        assert_eq!(pg.psql("SELECT count(*) FROM outbox"), "1", "{}", plain.log());
    });
}
