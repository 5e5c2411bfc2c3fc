use super::*;
use std::io::Write;

fn file(ext: &str, text: &str) -> tempfile_path::TempPath {
    tempfile_path::write(ext, text)
}

mod tempfile_path {
    pub struct TempPath(pub std::path::PathBuf);
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    pub fn write(ext: &str, text: &str) -> TempPath {
        let p = std::env::temp_dir().join(format!("wshub-test-{}-{}.{ext}", std::process::id(), rand::random::<u64>()));
        std::fs::write(&p, text).unwrap();
        TempPath(p)
    }
}

#[test]
fn defaults() {
    let l = load(None, vec![], &[]).unwrap();
    assert_eq!(l.config, Config::default());
    assert_eq!(l.config.http_server.port, 8000);
    assert!(l.unknown_keys.is_empty());
}

#[test]
fn file_env_flags_in_order() {
    let f = file(
        "json",
        r#"{"http_server": {"port": 9000}, "http_api": {"key": "fromfile"}, "client": {"ping_interval": "10s", "pong_timeout": "3s"}, "bogus": 1}"#,
    );
    let env = vec![
        ("WSHUB_HTTP_API_KEY".to_string(), "fromenv".to_string()),
        ("WSHUB_CLIENT_CHANNEL_LIMIT".into(), "5".into()),
        ("WSHUB_NOPE".into(), "x".into()),
        ("PATH".into(), "/bin".into()),
    ];
    let l = load(Some(&f.0), env, &[("http_server.port".into(), Value::from(9100))]).unwrap();
    assert_eq!(l.config.http_server.port, 9100, "flag wins");
    assert_eq!(l.config.http_api.key, "fromenv", "env beats file");
    assert_eq!(l.config.client.channel_limit, 5);
    assert_eq!(l.config.client.ping_interval, Duration::from_secs(10));
    assert!(l.unknown_keys.contains(&"bogus".to_string()), "{:?}", l.unknown_keys);
    assert!(l.unknown_keys.contains(&"WSHUB_NOPE".to_string()));
}

#[test]
fn toml_and_namespaces() {
    let f = file("toml", "[http_api]\nkey = \"k\"\n[[channel.namespaces]]\nname = \"chat\"\npresence = true\nhistory_size = 10\nhistory_ttl = \"300s\"\nforce_recovery = true\n");
    let l = load(Some(&f.0), vec![], &[]).unwrap();
    assert_eq!(l.config.channel.namespaces[0].name, "chat");
    assert!(l.config.channel.namespaces[0].options.force_recovery);
    assert_eq!(l.config.channel.namespaces[0].options.history_ttl, Duration::from_secs(300));
}

/// Centrifugo's list keys: a JSON list, or one string with commas (an environment
/// variable).
#[test]
fn redis_address_lists_and_sentinel() {
    let f = file(
        "json",
        r#"{"engine": {"type": "redis", "redis": {"address": ["redis://a:1", "redis://b:2"], "sentinel_address": "s1:26379, s2:26379", "sentinel_master_name": "m"}}}"#,
    );
    let l = load(Some(&f.0), vec![], &[]).unwrap();
    assert_eq!(l.config.engine.redis.connection.address, "redis://a:1,redis://b:2");
    // One string is one shard: its commas separate the sentinels of that shard.
    assert_eq!(l.config.engine.redis.connection.sentinel_address, ["s1:26379, s2:26379"]);
    assert!(l.unknown_keys.is_empty(), "{:?}", l.unknown_keys);
    let env = vec![("WSHUB_ENGINE_REDIS_ADDRESS".to_string(), "redis://c:3,redis://d:4".to_string())];
    let l = load(None, env, &[]).unwrap();
    assert_eq!(l.config.engine.redis.connection.address, "redis://c:3,redis://d:4");
}

#[test]
fn invalid_values_name_the_key() {
    let cases = [
        (r#"{"http_server": {"port": "eighty"}}"#, "http_server.port"),
        (r#"{"client": {"ping_interval": "soon"}}"#, "client.ping_interval"),
        (r#"{"channel": {"namespaces": [{"name": "a b"}]}}"#, "channel.namespaces[0].name"),
        (
            r#"{"channel": {"namespaces": [{"name": "x", "force_recovery": true}]}}"#,
            "force_recovery",
        ),
        (r#"{"engine": {"type": "cassandra"}}"#, "engine.type"),
        (
            r#"{"engine": {"type": "redis", "redis": {"address": "http://x"}}}"#,
            "engine.redis.address",
        ),
        (
            r#"{"engine": {"type": "redis", "redis": {"presence_ttl": "10s"}}}"#,
            "engine.redis.presence_ttl",
        ),
        (
            r#"{"engine": {"type": "redis", "redis": {"address": ["redis://a:1", "http://b"]}}}"#,
            "engine.redis.address",
        ),
        (
            r#"{"engine": {"type": "redis", "redis": {"sentinel_address": ["127.0.0.1:26379"]}}}"#,
            "engine.redis.sentinel_master_name",
        ),
        (
            r#"{"engine": {"type": "redis", "redis": {"canary_interval": "10ms"}}}"#,
            "engine.redis.canary_interval",
        ),
        (
            r#"{"engine": {"type": "redis", "redis": {"compression": "gzip"}}}"#,
            "engine.redis.compression",
        ),
        (
            r#"{"engine": {"type": "redis", "redis": {"cluster_address": ["a:1"], "sentinel_address": ["b:2"], "sentinel_master_name": "m"}}}"#,
            "engine.redis.cluster_address",
        ),
        (
            r#"{"engine": {"type": "redis", "redis": {"cluster_address": "a:1,b:2"}}, "http_api": {"rate_limit_scope": "cluster"}}"#,
            "http_api.rate_limit_scope",
        ),
        (
            r#"{"client": {"token": {"rsa_public_key": "nope"}}}"#,
            "client.token.rsa_public_key",
        ),
        (r#"{"log": {"format": "xml"}}"#, "log.format"),
        (
            r#"{"client": {"command_rate_limit_scope": "cluster"}}"#,
            "client.command_rate_limit_scope",
        ),
        (
            r#"{"client": {"connection_rate_limit_per_ip_scope": "cluster"}}"#,
            "client.connection_rate_limit_per_ip_scope",
        ),
        (r#"{"http_api": {"rate_limit_scope": "cluster"}}"#, "http_api.rate_limit_scope"),
        (r#"{"http_api": {"rate_limit_scope": "global"}}"#, "http_api.rate_limit_scope"),
        (
            r#"{"engine": {"type": "redis"}, "http_api": {"rate_limit_scope": "cluster", "rate_limit_algorithm": "leaky_bucket"}}"#,
            "http_api.rate_limit_scope",
        ),
        (
            r#"{"engine": {"type": "redis"}, "client": {"connection_rate_limit_per_ip_scope": "cluster", "connection_rate_limit_per_ip_algorithm": "sliding_window"}}"#,
            "client.connection_rate_limit_per_ip_scope",
        ),
        (
            r#"{"client": {"command_rate_limit_algorithm": "fixed_window"}}"#,
            "command_rate_limit_algorithm",
        ),
        (r#"{"http_server": {"read_timeout": "200000000h"}}"#, "read_timeout"),
    ];
    for (text, key) in cases {
        let f = file("json", text);
        let e = load(Some(&f.0), vec![], &[]).unwrap_err();
        assert!(e.0.contains(key), "{e} should name {key}");
    }
    let f = file(
        "json",
        r#"{"engine": {"type": "redis"}, "http_api": {"rate_limit_scope": "cluster"}, "client": {"command_rate_limit_scope": "cluster", "connection_rate_limit_per_ip_scope": "node"}}"#,
    );
    let c = load(Some(&f.0), vec![], &[]).unwrap().config;
    assert_eq!(c.http_api.rate_limit_scope, RateLimitScope::Cluster, "valid with Redis");
    assert_eq!(to_node_config(&c).session.command_rate_limit_scope, RateLimitScope::Cluster);
    let f = file("json", "{not json");
    assert!(load(Some(&f.0), vec![], &[]).is_err());
    let _ = std::io::stdout().flush();
}

/// Centrifugo's security keys are known (not warned about), and their old wshub names too.
#[test]
fn centrifugo_security_keys_are_known() {
    let f = file(
        "json",
        r##"{
          "client": {
            "token": {"hmac_secret_key": "k", "hmac_previous_secret_key": "old", "hmac_previous_secret_key_valid_until": 1900000000,
                      "audience_regex": "^a$", "issuer_regex": "^i$", "user_id_claim": "uid", "insecure_skip_jwks_endpoint_safety_check": false},
            "subscription_token": {"enabled": true, "hmac_secret_key": "s", "audience": "x"},
            "disallow_anonymous_connection_tokens": true, "insecure_skip_token_signature_verify": false,
            "user_id_http_header": "X-User", "stale_close_delay": "7s", "expired_sub_close_delay": "3s"
          },
          "channel": {"private_prefix": "$", "namespace_boundary": ":", "user_boundary": "#", "user_separator": ",",
                      "history_meta_ttl": "720h", "publication_data_format": "json",
                      "without_namespace": {"channel_regex": "^[a-z]+$", "allow_presence_for_anonymous": true},
                      "namespaces": [{"name": "ns", "channel_regex": "^.+$", "publication_data_format": "json_object",
                                      "allow_history_for_anonymous": true, "history_meta_ttl": "1h"}]},
          "rpc": {"namespace_boundary": ":"}
        }"##,
    );
    let l = load(Some(&f.0), vec![], &[]).unwrap();
    assert!(l.unknown_keys.is_empty(), "{:?}", l.unknown_keys);
    let n = to_node_config(&l.config);
    assert_eq!(n.session.stale_delay, Duration::from_secs(7));
    assert!(n.subscription_token.enabled);
    assert_eq!(n.session.user_id_http_header, "X-User");
    let f = file("json", r#"{"client": {"stale_delay": "4s"}}"#);
    let l = load(Some(&f.0), vec![], &[]).unwrap();
    assert!(l.unknown_keys.is_empty(), "the old name is read: {:?}", l.unknown_keys);
    assert_eq!(to_node_config(&l.config).session.stale_delay, Duration::from_secs(4));
    assert_eq!(
        to_node_config(&Config::default()).session.stale_delay,
        Duration::from_secs(10),
        "Centrifugo's default"
    );
}

/// `checkconfig` has no blind spot inside proxy objects, named proxies and RPC namespaces.
#[test]
fn unknown_keys_inside_flattened_objects() {
    let f = file(
        "json",
        r#"{"client": {"proxy": {"connect": {"enabled": false, "endpoint": "", "bogus_key": 1}}},
            "proxies": [{"name": "p", "endpoint": "http://127.0.0.1:1/x", "bogus2": 1, "http": {"static_headers": {"X-A": "b"}}}],
            "rpc": {"namespaces": [{"name": "r", "bogus3": true}]},
            "channel": {"namespaces": [{"name": "ns", "bogus4": 1}]}}"#,
    );
    let mut u = load(Some(&f.0), vec![], &[]).unwrap().unknown_keys;
    u.sort();
    assert_eq!(
        u,
        [
            "channel.namespaces[0].bogus4",
            "client.proxy.connect.bogus_key",
            "proxies[0].bogus2",
            "rpc.namespaces[0].bogus3"
        ]
    );
}

/// Every key on the refused list stops the start with an error naming it when set (never a
/// warning), or is known (implemented); and the README lists it.
#[test]
fn refused_keys_stop_the_start_and_are_documented() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    for (key, _) in keys::REFUSED {
        assert!(readme.contains(&format!("`{key}`")), "README must list {key}");
        let path = key.replace(".*", ".some_new_key");
        let mut root = Value::Object(Default::default());
        set_path(&mut root, &path, Value::Bool(true));
        // `consumers` is a list: the key is its first item's.
        if let Some(item) = root.get_mut("consumers").map(Value::take) {
            root["consumers"] = Value::Array(vec![item]);
        }
        let f = file("json", &root.to_string());
        match load(Some(&f.0), vec![], &[]) {
            Err(e) => assert!(
                e.0.replace("[0]", "").starts_with(key.trim_end_matches(".*")),
                "{e} should name {key}"
            ),
            Ok(l) => assert!(!l.unknown_keys.contains(&path), "{path} is only warned about: {:?}", l.unknown_keys),
        }
    }
    // A value at Centrifugo's default (as `centrifugo defaultconfig` writes) is no request.
    let f = file("json", r#"{"http_server": {"internal_port": "", "tls_external": false}}"#);
    assert!(load(Some(&f.0), vec![], &[]).is_ok());
    // An unknown key under client.token is refused, not skipped.
    let f = file("json", r#"{"client": {"token": {"hmac_secret_key": "k", "jwks_cache_ttl": "1h"}}}"#);
    let e = load(Some(&f.0), vec![], &[]).unwrap_err();
    assert!(e.0.starts_with("client.token.jwks_cache_ttl"), "{e}");
}

/// A key on the planned list is one wshub does not know yet: once it is implemented, it
/// leaves the list (and the README's table), or a warning would tell users it is ignored.
#[test]
fn planned_keys_are_not_implemented() {
    let defaults = serde_json::to_value(Config::default()).unwrap();
    let namespace = serde_json::to_value(wshub_core::config::Namespace::default()).unwrap();
    let proxy = serde_json::to_value(wshub_core::config::ProxyConfig::default()).unwrap();
    // Sections wshub implements in part: their other keys are the planned ones.
    let partial = ["uni_websocket.*"];
    let planned = super::planned::planned();
    assert!(planned.len() > 50, "planned.toml did not parse: {} entries", planned.len());
    for p in planned.iter().filter(|p| !partial.contains(&p.key.as_str())) {
        let key = p.key.trim_end_matches(".*");
        let known = match (key.strip_prefix("namespace."), key.strip_prefix("proxy.")) {
            (Some(option), _) => keys::lookup(&namespace, option).is_some(),
            (_, Some(k)) => keys::lookup(&proxy, k).is_some(),
            _ => keys::lookup(&defaults, key).is_some(),
        };
        assert!(!known, "{} is implemented: take it off planned.toml and the README's table", p.key);
    }
}

#[test]
fn token_and_channel_values_are_validated() {
    for (text, key) in [
        (
            r#"{"client": {"token": {"audience": "a", "audience_regex": "^a$"}}}"#,
            "client.token.audience_regex",
        ),
        (r#"{"client": {"token": {"issuer_regex": "("}}}"#, "client.token.issuer_regex"),
        (r#"{"client": {"token": {"user_id_claim": "a.b"}}}"#, "client.token.user_id_claim"),
        (
            r#"{"client": {"subscription_token": {"enabled": true}}}"#,
            "client.subscription_token",
        ),
        (
            r#"{"client": {"token": {"jwks_public_endpoint": "https://{{t}}.x/jwks", "issuer_regex": "^(?P<t>.+)$"}}}"#,
            "client.token.jwks_public_endpoint",
        ),
        (
            r#"{"channel": {"namespaces": [{"name": "n", "channel_regex": "("}]}}"#,
            "channel.namespaces[0].channel_regex",
        ),
        (
            r#"{"channel": {"publication_data_format": "xml"}}"#,
            "channel.publication_data_format",
        ),
        (
            r#"{"channel": {"history_meta_ttl": "1m", "without_namespace": {"history_size": 1, "history_ttl": "2m"}}}"#,
            "channel.without_namespace.history_ttl",
        ),
    ] {
        let f = file("json", text);
        let e = load(Some(&f.0), vec![], &[]).unwrap_err();
        assert!(e.0.contains(key), "{e} should name {key}");
    }
}

#[test]
fn redis_passwords_are_masked() {
    assert_eq!(
        masked_addresses("redis://:s3cret@h:6379,rediss://user:pw@h2:1/0,redis://h3:2"),
        "redis://:***@h:6379,rediss://user:***@h2:1/0,redis://h3:2"
    );
    assert_eq!(masked_addresses("redis://tok@h:1"), "redis://***@h:1");
}

#[test]
fn ports_prefixes_and_log_levels_as_centrifugo_writes_them() {
    // Centrifugo's defaults for the keys of issue 27 load without a warning.
    let f = file(
        "json",
        r#"{"http_server": {"address": "", "internal_address": "", "internal_port": "", "internal_tls": {"enabled": false}},
            "http_api": {"disabled": false, "external": false, "handler_prefix": "/api"},
            "websocket": {"disabled": false, "handler_prefix": "/connection/websocket"},
            "admin": {"external": false, "handler_prefix": ""}, "health": {"enabled": false, "handler_prefix": "/health"},
            "prometheus": {"handler_prefix": "/metrics"}, "init": {"enabled": false, "handler_prefix": "/connection/init"},
            "emulation": {"handler_prefix": "/emulation"}, "sse": {"handler_prefix": "/connection/sse"},
            "log": {"level": "info", "file": ""}, "pid_file": ""}"#,
    );
    let l = load(Some(&f.0), vec![], &[]).unwrap();
    assert!(l.unknown_keys.is_empty(), "{:?}", l.unknown_keys);
    assert_eq!(
        listen_addr(&l.config).unwrap(),
        "[::]:8000".parse().unwrap(),
        "empty: every interface"
    );
    assert_eq!(internal_listen_addr(&l.config).unwrap(), None, "no internal port: one listener");
    // The port from the environment (a number) or a file (a string).
    let env = vec![("WSHUB_HTTP_SERVER_INTERNAL_PORT".to_string(), "9000".to_string())];
    let l = load(None, env, &[]).unwrap();
    assert_eq!(internal_listen_addr(&l.config).unwrap(), Some("0.0.0.0:9000".parse().unwrap()));
    for (text, key) in [
        (r#"{"http_server": {"internal_port": "nine"}}"#, "http_server.internal_port"),
        (
            r#"{"http_server": {"internal_address": "host.invalid", "internal_port": "9000"}}"#,
            "http_server.internal_address",
        ),
        (r#"{"websocket": {"handler_prefix": "ws"}}"#, "websocket.handler_prefix"),
        (r#"{"log": {"level": "loud"}}"#, "log.level"),
        (
            r#"{"http_server": {"internal_tls": {"enabled": true}}}"#,
            "http_server.internal_tls",
        ),
    ] {
        let f = file("json", text);
        let e = load(Some(&f.0), vec![], &[]).unwrap_err();
        assert!(e.0.starts_with(key), "{text}: {e}");
    }
    for level in ["none", "NONE", "fatal", "Trace", "warn", "error"] {
        let f = file("json", &format!(r#"{{"log": {{"level": "{level}"}}}}"#));
        assert!(load(Some(&f.0), vec![], &[]).is_ok(), "{level}");
    }
    assert_eq!(log_filter("none"), Some("off"));
    assert_eq!(log_filter("FATAL"), Some("error"));
}

/// A Centrifugo deployment's environment: secrets and lists through `CENTRIFUGO_*`, a
/// namespace option by name, an unknown variable reported, a refused one stopping the start.
#[test]
fn centrifugo_environment() {
    let f = file("json", r#"{"channel": {"namespaces": [{"name": "chat"}]}}"#);
    let env = vec![
        ("CENTRIFUGO_CLIENT_TOKEN_HMAC_SECRET_KEY".to_string(), "from-env".to_string()),
        (
            "CENTRIFUGO_CLIENT_ALLOWED_ORIGINS".into(),
            "https://a.example https://b.example".into(),
        ),
        ("CENTRIFUGO_HTTP_API_KEY".into(), "api".into()),
        ("CENTRIFUGO_CHANNEL_NAMESPACES_CHAT_PRESENCE".into(), "true".into()),
        ("CENTRIFUGO_HTTP_SERVER_PORT".into(), "9001".into()),
        ("CENTRIFUGO_NOT_A_KEY".into(), "x".into()),
    ];
    let l = load(Some(&f.0), env, &[]).unwrap();
    assert_eq!(l.config.client.token.hmac_secret_key, "from-env");
    assert_eq!(l.config.client.allowed_origins, ["https://a.example", "https://b.example"]);
    assert_eq!(l.config.http_api.key, "api");
    assert!(l.config.channel.namespaces[0].options.presence);
    assert_eq!(l.config.http_server.port, 9001, "read although it looks like a Kubernetes variable");
    assert_eq!(l.unknown_keys, ["CENTRIFUGO_NOT_A_KEY"]);
    let env = vec![("CENTRIFUGO_ENGINE_REDIS_TLS_SERVER_NAME".to_string(), "redis.internal".to_string())];
    let e = load(None, env, &[]).unwrap_err();
    assert!(e.0.starts_with("CENTRIFUGO_ENGINE_REDIS_TLS_SERVER_NAME"), "{e}");
}

/// Every address form and connection key of Centrifugo's `engine.redis` loads, and what
/// checkconfig accepts the engine accepts: a TLS file that cannot be read stops the load.
#[test]
fn redis_address_forms_and_connection_keys() {
    let ok = [
        r#"{"address": "localhost:6379"}"#,
        r#"{"address": ["rediss://h:6380", "unix:///run/redis.sock"], "db": 2, "user": "u", "password": "p", "connect_timeout": "500ms", "io_timeout": "2s", "force_resp2": true}"#,
        r#"{"address": "redis+sentinel://s1:26379?sentinel_master_name=m&addr=s2:26379&sentinel_password=x"}"#,
        r#"{"address": "redis+cluster://c1:7000?addr=c2:7000"}"#,
        r#"{"cluster_address": ["c1:7000,c2:7000", "d1:7000"]}"#,
        r#"{"sentinel_address": "s1:26379,s2:26379", "sentinel_master_name": "m", "sentinel_user": "su", "sentinel_tls": {"enabled": true, "insecure_skip_verify": true}}"#,
        r#"{"tls": {"enabled": true, "insecure_skip_verify": true, "client_ca_pem": ""}}"#,
    ];
    for redis in ok {
        let f = file("json", &format!(r#"{{"engine": {{"type": "redis", "redis": {redis}}}}}"#));
        let l = load(Some(&f.0), vec![], &[]).unwrap_or_else(|e| panic!("{redis}: {}", e.0));
        assert!(l.unknown_keys.is_empty(), "{redis}: {:?}", l.unknown_keys);
    }
    let bad = [
        (
            r#"{"tls": {"enabled": true, "server_ca_pem": "/nonexistent/ca.pem"}}"#,
            "engine.redis.tls.server_ca_pem",
        ),
        (
            r#"{"tls": {"enabled": true, "cert_pem": "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"}}"#,
            "engine.redis.tls",
        ),
        (
            r#"{"tls": {"enabled": true, "server_name": "redis.internal"}}"#,
            "engine.redis.tls.server_name",
        ),
        (r#"{"address": "redis+sentinel://s1:26379"}"#, "engine.redis.address"),
        (r#"{"address": "redis://h:1?bogus=1"}"#, "engine.redis.address"),
        (r#"{"cluster_address": ["c1:7000,nope"]}"#, "engine.redis.cluster_address"),
    ];
    for (redis, key) in bad {
        let f = file("json", &format!(r#"{{"engine": {{"type": "redis", "redis": {redis}}}}}"#));
        let e = load(Some(&f.0), vec![], &[]).unwrap_err();
        assert!(e.0.starts_with(key), "{redis}: {}", e.0);
    }
}
