//! SIGHUP: read the configuration again and apply what can change while running, as
//! Centrifugo v6 does (`internal/app/run.go`, `handleSignals`): the token verifiers
//! (`client.token.*`, `client.subscription_token.*`) and the channel options
//! (`channel.*`, namespaces). Connections stay open. A configuration that does not load is
//! logged and changes nothing; the node keeps running either way (a SIGHUP without a
//! handler would end the process: the packaged systemd unit's `ExecReload` sends it).
//!
//! Other changed keys (ports, engine, limits) are named in the log as needing a restart:
//! Centrifugo applies them silently never, wshub says so.

use std::path::PathBuf;

use parking_lot::Mutex;
use serde_json::Value;
use wshub_core::node::Node;

use crate::config::{load, to_node_config, Config};

/// The keys a reload applies (and every key under them).
pub const RELOADED: &[&str] = &[
    "channel",
    "client.token",
    "client.subscription_token",
    // Part of the verifiers.
    "client.insecure_skip_token_signature_verify",
];

/// Where the running configuration came from, to read it again the same way: the file, the
/// environment of the process (read again at each reload, as Centrifugo) and the flags.
pub struct Reloader {
    file: Option<PathBuf>,
    overrides: Vec<(String, Value)>,
    current: Mutex<Config>,
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Applied; the keys that changed but need a restart.
    Applied { not_applied: Vec<String> },
    /// Nothing changed: why.
    Refused(String),
}

impl Reloader {
    pub fn new(file: Option<PathBuf>, overrides: Vec<(String, Value)>, current: Config) -> Self {
        Reloader {
            file,
            overrides,
            current: Mutex::new(current),
        }
    }

    /// Reads the configuration again and applies the reloadable part to `node`.
    pub fn reload(&self, node: &Node) -> Outcome {
        // The variables the binary reads at start (`wshub` and `CENTRIFUGO_*`).
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("WSHUB_") || k.starts_with("CENTRIFUGO_"))
            .collect();
        let loaded = match load(self.file.as_deref(), env, &self.overrides) {
            Ok(l) => l,
            Err(e) => return Outcome::Refused(e.to_string()),
        };
        if let Err(e) = node.reload(&to_node_config(&loaded.config)) {
            return Outcome::Refused(format!("configuration: {e}"));
        }
        if node.uses_jwks() {
            // A JWKS endpoint new with this reload needs the HTTP client (set once).
            match crate::proxy::HttpJwks::new() {
                Ok(f) => node.set_jwks_fetcher(std::sync::Arc::new(f)),
                Err(e) => tracing::warn!(error = %e, "JWKS client not available"),
            }
        }
        let mut current = self.current.lock();
        let not_applied = changed_keys(&current, &loaded.config)
            .into_iter()
            .filter(|k| !RELOADED.iter().any(|r| k == r || k.starts_with(&format!("{r}."))))
            .collect();
        *current = loaded.config;
        Outcome::Applied { not_applied }
    }

    /// [`Reloader::reload`], logged.
    pub fn reload_and_log(&self, node: &Node) {
        tracing::info!("SIGHUP: reloading configuration (token keys and channel options)");
        match self.reload(node) {
            Outcome::Applied { not_applied } if not_applied.is_empty() => {
                tracing::info!("configuration successfully reloaded")
            }
            Outcome::Applied { not_applied } => tracing::warn!(
                keys = %not_applied.join(", "),
                "configuration reloaded; these changed keys are not reloaded and need a restart"
            ),
            Outcome::Refused(why) => tracing::error!("configuration not reloaded, nothing changed: {why}"),
        }
    }
}

/// The leaf keys whose values differ between `a` and `b`, as `a.b.c` paths.
fn changed_keys(a: &Config, b: &Config) -> Vec<String> {
    fn walk(prefix: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(&p, x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null), out);
                }
            }
            (x, y) if x != y => out.push(prefix.to_string()),
            _ => {}
        }
    }
    let (Ok(a), Ok(b)) = (serde_json::to_value(a), serde_json::to_value(b)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    walk("", &a, &b, &mut out);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reloads_tokens_and_channels_and_names_the_rest() {
        let dir = std::env::temp_dir().join(format!("wshub-reload-{}-{}", std::process::id(), rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("config.json");
        let write = |v: serde_json::Value| std::fs::write(&file, v.to_string()).unwrap();
        write(serde_json::json!({"client": {"token": {"hmac_secret_key": "one"}}}));
        let config = load(Some(&file), Vec::new(), &[]).unwrap().config;
        let (node, _) = crate::app::build(&config).unwrap();
        let r = Reloader::new(Some(file.clone()), Vec::new(), config);
        assert!(node.options("chat:x").is_err(), "no namespace chat yet");
        write(serde_json::json!({
            "client": {"token": {"hmac_secret_key": "two"}},
            "channel": {"namespaces": [{"name": "chat", "presence": true}]},
            "http_server": {"port": 9999},
        }));
        assert_eq!(
            r.reload(&node),
            Outcome::Applied {
                not_applied: vec!["http_server.port".into()]
            }
        );
        assert!(node.options("chat:x").unwrap().presence);
        let claims = serde_json::json!({"sub": "u"});
        let two = wshub_core::token::make_hs256("two", &claims).unwrap();
        let one = wshub_core::token::make_hs256("one", &claims).unwrap();
        assert!(node.live().verifier.verify_connect(&two, 0).is_ok());
        assert!(node.live().verifier.verify_connect(&one, 0).is_err());
        write(serde_json::json!({"channel": {"namespaces": [{"name": "chat", "channel_regex": "("}]}}));
        let Outcome::Refused(why) = r.reload(&node) else {
            panic!("a bad regex reloaded")
        };
        assert!(why.contains("channel_regex"), "{why}");
        assert!(node.options("chat:x").unwrap().presence, "a refused reload changes nothing");
        // A namespace that needs a proxy the node did not start with: refused, never
        // served without its proxy.
        write(serde_json::json!({"channel": {
            "proxy": {"subscribe": {"endpoint": "http://127.0.0.1:1/subscribe"}},
            "namespaces": [{"name": "chat", "presence": true}, {"name": "p", "subscribe_proxy_enabled": true}],
        }}));
        let Outcome::Refused(why) = r.reload(&node) else {
            panic!("reloaded without its proxy")
        };
        assert!(why.contains("restart"), "{why}");
        assert!(node.options("p:x").is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
