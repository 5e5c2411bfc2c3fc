//! The node's backends, each from its own section: the broker (with node control, which
//! travels where publications do, as in Centrifugo) and the presence manager. The NATS
//! broker is a broker only: presence then comes from the engine or `presence_manager`.

use std::sync::Arc;

use wshub_core::cluster::NodeControl;
use wshub_core::engine::{Broker, PresenceManager};
use wshub_core::memory::MemoryEngine;

use crate::config::{Backend, Config, LoadError};

/// The backends a node runs on.
pub struct Engines {
    pub broker: Arc<dyn Broker>,
    pub presence: Arc<dyn PresenceManager>,
    pub control: Arc<dyn NodeControl>,
    /// Whether other nodes receive this node's publications (a shared broker): a draining
    /// node may then go on accepting publications.
    pub shared_broker: bool,
}

/// One backend object: an engine, broker and presence manager at once.
#[derive(Clone)]
enum Built {
    Memory(Arc<MemoryEngine>),
    Redis(Arc<wshub_redis::RedisEngine>),
    Nats(Arc<wshub_nats::NatsBroker>),
}

impl Built {
    fn new(b: Backend<'_>) -> Result<Self, LoadError> {
        Ok(match b {
            Backend::Redis(r, _) => {
                let e = wshub_redis::RedisEngine::new(r.engine_config()?).map_err(|e| LoadError(e.to_string()))?;
                Built::Redis(Arc::new(e))
            }
            Backend::Memory => Built::Memory(Arc::new(MemoryEngine::default())),
            Backend::Nats(n) => {
                let b = wshub_nats::NatsBroker::new(n.broker_config()?).map_err(|e| LoadError(e.to_string()))?;
                Built::Nats(Arc::new(b))
            }
        })
    }

    fn broker(&self) -> (Arc<dyn Broker>, Arc<dyn NodeControl>) {
        match self {
            Built::Memory(e) => (e.clone(), e.clone()),
            Built::Redis(e) => (e.clone(), e.clone()),
            Built::Nats(b) => (b.clone(), b.clone()),
        }
    }

    /// `None` for a broker without presence (NATS).
    fn presence(&self) -> Option<Arc<dyn PresenceManager>> {
        match self {
            Built::Memory(e) => Some(e.clone()),
            Built::Redis(e) => Some(e.clone()),
            Built::Nats(_) => None,
        }
    }
}

/// Builds the backends; one object serves both halves when both name the same backend
/// (the engine, or two identical Redis sections), so that it keeps one set of connections.
pub fn build(config: &Config) -> Result<Engines, LoadError> {
    let (b, p) = (config.broker_backend().0, config.presence_backend().0);
    let built = Built::new(b)?;
    let same = match (b, p) {
        (Backend::Memory, Backend::Memory) => true,
        // The broker's engine half is not the presence manager's (NATS has none).
        (Backend::Nats(_), _) | (_, Backend::Nats(_)) => false,
        (Backend::Redis(a, _), Backend::Redis(b, _)) => a == b,
        _ => false,
    };
    let presence = match same.then(|| built.presence()).flatten() {
        Some(p) => p,
        None => Built::new(p)?
            .presence()
            .ok_or_else(|| LoadError("presence_manager: the NATS broker has no presence; use memory or redis".into()))?,
    };
    let (broker, control) = built.broker();
    refuse_history_without_a_history_broker(config, broker.as_ref())?;
    Ok(Engines {
        broker,
        presence,
        control,
        shared_broker: matches!(built, Built::Redis(_) | Built::Nats(_)),
    })
}

/// A namespace with history on a broker that keeps none would answer empty histories and
/// never recover: refused at start, naming the namespace.
fn refuse_history_without_a_history_broker(config: &Config, broker: &dyn Broker) -> Result<(), LoadError> {
    if broker.keeps_history() {
        return Ok(());
    }
    let (_, kind_key) = config.broker_backend();
    let with_history = |o: &wshub_core::config::ChannelOptions| o.history_size > 0 && !o.history_ttl.is_zero();
    if with_history(&config.channel.without_namespace) {
        return Err(LoadError(format!(
            "channel.without_namespace.history_size: the broker ({kind_key}) keeps no history; set history_size to 0 or use a broker with history (memory, redis)"
        )));
    }
    for (i, ns) in config.channel.namespaces.iter().enumerate() {
        if with_history(&ns.options) {
            return Err(LoadError(format!(
                "channel.namespaces[{i}].history_size: namespace {:?} keeps history but the broker ({kind_key}) keeps none; set history_size to 0 or use a broker with history (memory, redis)",
                ns.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;
    use wshub_core::engine::*;
    use wshub_protocol::{ClientInfo, Publication};

    fn config(v: serde_json::Value) -> Config {
        let c: Config = serde_json::from_value(v).unwrap();
        crate::config::validate(&c).unwrap();
        c
    }

    /// Each half from its own section: a memory broker beside a Redis presence manager,
    /// a Redis broker (from `broker.redis`) beside the memory engine's presence.
    #[tokio::test]
    async fn broker_and_presence_manager_from_their_own_sections() {
        let redis = wshub_testkit::redis::RedisServer::start().await;
        let c = config(json!({
            "engine": {"type": "memory"},
            "presence_manager": {"enabled": true, "type": "redis", "redis": {"address": format!("127.0.0.1:{}", redis.port), "prefix": "pm"}}
        }));
        let e = build(&c).unwrap();
        assert!(!e.shared_broker);
        let info = ClientInfo {
            client: "c1".into(),
            user: "u1".into(),
            ..Default::default()
        };
        e.presence.add_presence("ch", "c1", info).await.unwrap();
        let keys = wshub_testkit::redis::cli(redis.port, &["KEYS", "pm.presence.*"]);
        assert!(keys.contains("pm.presence.ch"), "presence is in Redis: {keys}");

        let c = config(json!({
            "engine": {"type": "memory"},
            "broker": {"enabled": true, "type": "redis", "redis": {"address": format!("127.0.0.1:{}", redis.port), "prefix": "br"}}
        }));
        let e = build(&c).unwrap();
        assert!(e.shared_broker);
        let opts = PublishOptions {
            history_size: 5,
            history_ttl: std::time::Duration::from_secs(60),
            ..Default::default()
        };
        e.broker.publish("ch", Publication::default(), &opts).await.unwrap();
        let keys = wshub_testkit::redis::cli(redis.port, &["KEYS", "br.stream.*"]);
        assert!(keys.contains("br.stream.ch"), "history is in Redis: {keys}");
        assert_eq!(e.presence.presence("ch").await.unwrap().len(), 0, "presence stays in memory");
    }

    #[test]
    fn sections_are_checked_with_their_own_names() {
        let load = |v: serde_json::Value| crate::config::validate(&serde_json::from_value::<Config>(v).unwrap()).map_err(|e| e.0);
        let e = load(json!({"broker": {"enabled": true, "type": "postgres"}})).unwrap_err();
        assert!(e.starts_with("broker.type: \"postgres\" is not supported"), "{e}");
        let e = load(json!({"presence_manager": {"enabled": true, "type": "nats"}})).unwrap_err();
        assert!(e.starts_with("presence_manager.type: must be"), "{e}");
        let e = load(json!({"broker": {"enabled": true, "type": "nats", "nats": {"prefix": ""}}})).unwrap_err();
        assert!(e.starts_with("broker.nats.prefix"), "{e}");
        let e = load(json!({"broker": {"enabled": true, "type": "nats", "nats": {"url": "nats://[::"}}})).unwrap_err();
        assert!(e.starts_with("broker.nats.url"), "{e}");
        load(json!({"broker": {"enabled": true, "type": "nats"}})).unwrap();
        let e = load(json!({"presence_manager": {"enabled": true, "type": "redis", "redis": {"address": "http://x"}}})).unwrap_err();
        assert!(e.starts_with("presence_manager.redis.address"), "{e}");
        let e = load(json!({"broker": {"enabled": true, "type": "redis", "redis": {"prefix": ""}}})).unwrap_err();
        assert!(e.starts_with("broker.redis.prefix"), "{e}");
        // Not enabled: not used, not checked (Centrifugo's default configuration lists them).
        load(json!({"broker": {"type": "nats"}, "presence_manager": {"type": "bogus"}})).unwrap();
    }

    #[test]
    fn a_namespace_with_history_on_a_broker_without_is_refused() {
        // Not connected: whether it keeps history needs no server.
        let broker = wshub_nats::NatsBroker::new(wshub_nats::NatsConfig::default()).unwrap();
        let c = config(json!({"channel": {"namespaces": [{"name": "live"}, {"name": "chat", "history_size": 10, "history_ttl": "60s"}]}}));
        let e = refuse_history_without_a_history_broker(&c, &broker).unwrap_err();
        assert!(e.0.starts_with("channel.namespaces[1].history_size: namespace \"chat\""), "{}", e.0);
        let c = config(json!({"channel": {"without_namespace": {"history_size": 10, "history_ttl": "60s"}}}));
        assert!(refuse_history_without_a_history_broker(&c, &broker).is_err());
        let c = config(json!({"channel": {"namespaces": [{"name": "live"}]}}));
        refuse_history_without_a_history_broker(&c, &broker).unwrap();
        refuse_history_without_a_history_broker(&c, &MemoryEngine::default()).unwrap();
    }
}
