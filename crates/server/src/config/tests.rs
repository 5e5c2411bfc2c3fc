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
    assert_eq!(l.config.engine.redis.address, "redis://a:1,redis://b:2");
    assert_eq!(l.config.engine.redis.sentinel_address, ["s1:26379", "s2:26379"]);
    assert!(l.unknown_keys.is_empty(), "{:?}", l.unknown_keys);
    let env = vec![("WSHUB_ENGINE_REDIS_ADDRESS".to_string(), "redis://c:3,redis://d:4".to_string())];
    let l = load(None, env, &[]).unwrap();
    assert_eq!(l.config.engine.redis.address, "redis://c:3,redis://d:4");
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
