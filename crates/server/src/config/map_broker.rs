//! `map_broker.*`: where map channels keep their state (Centrifugo's section): `memory`
//! (this node only) or `redis` (shared by every node, on one Redis, Sentinel, shards or a
//! Redis Cluster, with the address keys of `engine.redis`).

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use wshub_core::duration;

use super::{LoadError, Redis};

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct MapBrokerSection {
    /// `memory` or `redis`.
    pub r#type: String,
    pub redis: MapBrokerRedis,
}

impl Default for MapBrokerSection {
    fn default() -> Self {
        MapBrokerSection {
            r#type: "memory".into(),
            redis: MapBrokerRedis::default(),
        }
    }
}

/// `map_broker.redis`: the address keys of `engine.redis`, and the map broker's own.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct MapBrokerRedis {
    #[serde(flatten)]
    pub redis: Redis,
    /// How often expired keys are swept (`"-1"`: never, as Centrifugo).
    #[serde(deserialize_with = "interval_or_off", serialize_with = "write_interval")]
    pub cleanup_interval: Option<Duration>,
    /// Most keys one channel's sweep removes at once.
    pub cleanup_batch_size: usize,
    #[serde(with = "duration")]
    pub idempotent_result_ttl: Duration,
    /// Writes change the state only and publish nothing.
    pub skip_pub_sub: bool,
}

impl Default for MapBrokerRedis {
    fn default() -> Self {
        let d = wshub_redis::MapConfig::default();
        MapBrokerRedis {
            redis: Redis::default(),
            cleanup_interval: d.cleanup_interval,
            cleanup_batch_size: d.cleanup_batch_size,
            idempotent_result_ttl: d.idempotent_result_ttl,
            skip_pub_sub: d.skip_pub_sub,
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IntervalValue {
    Number(i64),
    Text(String),
}

/// A duration, or a negative one (`"-1"`, `-1`) for "never".
fn interval_or_off<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    use serde::de::Error;
    match IntervalValue::deserialize(d)? {
        IntervalValue::Number(n) if n < 0 => Ok(None),
        IntervalValue::Text(s) if s.trim().starts_with('-') => Ok(None),
        IntervalValue::Number(n) => duration::parse(&format!("{n}ns")).map(Some).map_err(D::Error::custom),
        IntervalValue::Text(s) => duration::parse(&s).map(Some).map_err(D::Error::custom),
    }
}

fn write_interval<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(d) => duration::serialize(d, s),
        None => s.serialize_str("-1"),
    }
}

impl MapBrokerSection {
    /// The Redis engine settings of `map_broker.redis`, when the type is `redis`.
    pub fn redis_config(&self) -> Result<Option<wshub_redis::RedisConfig>, LoadError> {
        if self.r#type != "redis" {
            return Ok(None);
        }
        let r = &self.redis;
        let mut cfg = r
            .redis
            .engine_config()
            .map_err(|e| LoadError(e.0.replacen("engine.redis", "map_broker.redis", 1)))?;
        cfg.map = wshub_redis::MapConfig {
            cleanup_batch_size: r.cleanup_batch_size,
            cleanup_interval: r.cleanup_interval.filter(|d| !d.is_zero()),
            idempotent_result_ttl: r.idempotent_result_ttl,
            skip_pub_sub: r.skip_pub_sub,
        };
        Ok(Some(cfg))
    }

    pub(super) fn validate(&self) -> Result<(), LoadError> {
        let fail = |k: &str, why: &str| Err(LoadError(format!("map_broker.{k}: {why}")));
        match self.r#type.as_str() {
            "memory" => return Ok(()),
            "redis" => {}
            "postgres" => return fail("type", "\"postgres\" is not supported by wshub yet: \"memory\" or \"redis\""),
            _ => return fail("type", "must be \"memory\" or \"redis\""),
        }
        if self.redis.redis.prefix.is_empty() {
            return fail("redis.prefix", "must not be empty");
        }
        if self.redis.cleanup_batch_size == 0 {
            return fail("redis.cleanup_batch_size", "must be at least 1");
        }
        let cfg = self.redis_config()?.unwrap_or_default();
        wshub_redis::RedisEngine::new(cfg).map_err(|e| LoadError(e.to_string().replacen("engine.redis", "map_broker.redis", 1)))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn section(v: serde_json::Value) -> MapBrokerSection {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn centrifugo_keys_are_read_and_checked() {
        let s = section(
            json!({"type": "redis", "redis": {"address": "127.0.0.1:6390", "prefix": "m", "cleanup_interval": "-1", "cleanup_batch_size": 7}}),
        );
        s.validate().unwrap();
        let cfg = s.redis_config().unwrap().unwrap();
        assert_eq!(
            (cfg.prefix.as_str(), cfg.map.cleanup_interval, cfg.map.cleanup_batch_size),
            ("m", None, 7)
        );
        let s = section(json!({"type": "redis", "redis": {"cleanup_interval": "250ms"}}));
        assert_eq!(
            s.redis_config().unwrap().unwrap().map.cleanup_interval,
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            section(json!({})).redis_config().unwrap().map(|c| c.prefix),
            None,
            "memory by default"
        );
        for (v, key) in [
            (json!({"type": "postgres"}), "map_broker.type"),
            (json!({"type": "etcd"}), "map_broker.type"),
            (json!({"type": "redis", "redis": {"prefix": ""}}), "map_broker.redis.prefix"),
            (
                json!({"type": "redis", "redis": {"cleanup_batch_size": 0}}),
                "map_broker.redis.cleanup_batch_size",
            ),
            (json!({"type": "redis", "redis": {"address": "http://x"}}), "map_broker.redis"),
        ] {
            let e = section(v.clone()).validate().unwrap_err().0;
            assert!(e.starts_with(key), "{v}: {e}");
        }
    }
}
