//! The Pusher Channels protocol 7 as a second dialect of the same node: its apps
//! (`pusher.apps`), the signatures Pusher's clients and server SDKs make, the WebSocket
//! session ([`session`], run by the transport-neutral pump in
//! [`crate::transport::pusher`]) and the HTTP API ([`api`]).
//!
//! Pusher connections live in the node's hub, engines and registry beside Centrifugo ones;
//! how a Pusher event and a Centrifugo publication map onto each other is
//! [`wshub_core::pusher`]'s.

pub mod api;
pub mod session;
pub mod webhook;

use std::collections::HashMap;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::config::LoadError;

/// `/app/{key}`: a Pusher WebSocket connection.
pub const WS_PREFIX: &str = "/app/";
/// `/apps/{id}/…`: Pusher's HTTP API.
pub const API_PREFIX: &str = "/apps/";

/// `pusher.*`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct PusherSection {
    /// Each app is a tenant: its key opens `/app/{key}`, its id names it in `/apps/{id}/…`,
    /// its secret signs both.
    pub apps: Vec<PusherApp>,
}

/// One Pusher app.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct PusherApp {
    pub id: String,
    pub key: String,
    pub secret: String,
    /// Lets clients send `client-*` events on private and presence channels.
    pub enable_client_messages: bool,
    /// Put before every channel name of the app in the hub, so that apps never share a
    /// channel: empty, or holding a character no Pusher channel name has (`app2:` is the
    /// Centrifugo namespace `app2`). The app with the empty prefix shares its channels (and
    /// its user ids) with Centrifugo clients.
    pub channel_prefix: String,
    pub limits: PusherLimits,
    /// Where the app's webhooks go ([`webhook`]).
    pub webhooks: Vec<String>,
}

/// An app's limits; 0 is no limit.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct PusherLimits {
    /// Connections of the app on this node (4100 over it).
    pub max_connections: usize,
    /// Distinct users in a presence channel.
    pub max_presence_members: usize,
    /// Bytes of one member's `user_info`.
    pub max_presence_member_size: usize,
    /// Bytes of an event's data (API and client events).
    pub max_event_size: usize,
    /// Channels one API event names.
    pub max_channels_per_event: usize,
    /// Events of one `batch_events` call.
    pub max_batch_size: usize,
    /// Client events a connection may send per second.
    pub client_events_per_second: u32,
}

impl Default for PusherLimits {
    /// Pusher's documented limits.
    fn default() -> Self {
        PusherLimits {
            max_connections: 0,
            max_presence_members: 100,
            max_presence_member_size: 1024,
            max_event_size: 10 * 1024,
            max_channels_per_event: 100,
            max_batch_size: 10,
            client_events_per_second: 10,
        }
    }
}

/// The channel of the events sent to a signed-in user (`sendToUser`), which pusher-js
/// subscribes to after `pusher:signin`.
pub const USER_CHANNEL_PREFIX: &str = "#server-to-user-";

/// How long a cache channel keeps its last event (Pusher's 30 minutes).
pub const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// Whether `name` is a cache channel (`cache-`, `private-cache-`, `private-encrypted-cache-`,
/// `presence-cache-`): its last event is kept and sent to each new subscriber.
pub fn is_cache_channel(name: &str) -> bool {
    ["cache-", "private-cache-", "private-encrypted-cache-", "presence-cache-"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// How events are published to `name`: a cache channel keeps its last one for
/// [`CACHE_TTL`] in the engine's history (shared by every node), others none.
pub fn publish_options(name: &str) -> wshub_core::engine::PublishOptions {
    match is_cache_channel(name) {
        true => wshub_core::engine::PublishOptions {
            history_size: 1,
            history_ttl: CACHE_TTL,
            ..Default::default()
        },
        false => wshub_core::engine::PublishOptions::default(),
    }
}

/// Channel names Pusher accepts (`^[A-Za-z0-9_\-=@,.;]+$`, at most 200), and the user
/// channels.
pub fn valid_channel(name: &str) -> bool {
    let name = match name.strip_prefix(USER_CHANNEL_PREFIX) {
        Some(user) if name.len() <= 200 => user,
        _ => name,
    };
    !name.is_empty() && name.len() <= 200 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-=@,.;".contains(&b))
}

impl PusherSection {
    /// Every app complete, ids, keys and prefixes distinct, no prefix the start of
    /// another's (a channel belongs to one app).
    pub fn validate(&self) -> Result<(), LoadError> {
        let fail = |i: usize, m: String| Err(LoadError(format!("pusher.apps[{i}]: {m}")));
        for (i, a) in self.apps.iter().enumerate() {
            for (k, v) in [("id", &a.id), ("key", &a.key), ("secret", &a.secret)] {
                if v.is_empty() {
                    return fail(i, format!("{k} is empty"));
                }
            }
            if a.key.contains('/') || a.id.contains('/') {
                return fail(i, "id and key cannot hold '/'".into());
            }
            if a.channel_prefix.len() > usize::from(u16::MAX) {
                return fail(i, "channel_prefix is too long".into());
            }
            // A channel of the app with the empty prefix cannot start with such a prefix.
            if !a.channel_prefix.is_empty() && valid_channel(&a.channel_prefix) {
                return fail(
                    i,
                    format!(
                        "channel_prefix {:?} must hold a character Pusher channel names cannot (':', say)",
                        a.channel_prefix
                    ),
                );
            }
            for (j, b) in self.apps.iter().enumerate().take(i) {
                if a.id == b.id || a.key == b.key {
                    return fail(i, format!("same id or key as pusher.apps[{j}]"));
                }
                let (pa, pb) = (&a.channel_prefix, &b.channel_prefix);
                if !pa.is_empty() && !pb.is_empty() && (pa.starts_with(pb.as_str()) || pb.starts_with(pa.as_str())) || pa == pb {
                    return fail(
                        i,
                        format!(
                            "channel_prefix {:?} overlaps pusher.apps[{j}]'s {:?}: apps would share channels",
                            a.channel_prefix, b.channel_prefix
                        ),
                    );
                }
            }
            for w in &a.webhooks {
                if !(w.starts_with("http://") || w.starts_with("https://")) {
                    return fail(i, format!("webhook {w:?} is not an http(s) URL"));
                }
            }
        }
        Ok(())
    }
}

/// The apps, by key (connections) and by id (the HTTP API).
pub struct Apps {
    by_key: HashMap<String, Arc<PusherApp>>,
    by_id: HashMap<String, Arc<PusherApp>>,
}

impl Apps {
    pub fn new(section: &PusherSection) -> Self {
        let apps: Vec<Arc<PusherApp>> = section.apps.iter().cloned().map(Arc::new).collect();
        Apps {
            by_key: apps.iter().map(|a| (a.key.clone(), a.clone())).collect(),
            by_id: apps.iter().map(|a| (a.id.clone(), a.clone())).collect(),
        }
    }

    pub fn by_key(&self, key: &str) -> Option<&Arc<PusherApp>> {
        self.by_key.get(key)
    }

    pub fn by_id(&self, id: &str) -> Option<&Arc<PusherApp>> {
        self.by_id.get(id)
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// The dialect as the server runs it: the apps, the webhook sender and the HTTP API.
#[derive(Clone)]
pub struct Dialect {
    pub apps: Arc<Apps>,
    pub hooks: Option<Arc<webhook::Webhooks>>,
    pub api: Arc<api::PusherApi>,
}

impl Dialect {
    /// `None` without apps.
    pub fn build(
        config: &crate::config::Config,
        node: &Arc<wshub_core::node::Node>,
        cluster: &Arc<crate::cluster::Cluster>,
    ) -> Option<Self> {
        let apps = Arc::new(Apps::new(&config.pusher));
        if apps.is_empty() {
            return None;
        }
        let hooks = config
            .pusher
            .apps
            .iter()
            .any(|a| !a.webhooks.is_empty())
            .then(|| webhook::Webhooks::new(node.clone(), cluster.clone()));
        Some(Dialect {
            api: Arc::new(api::PusherApi {
                apps: apps.clone(),
                node: node.clone(),
                cluster: cluster.clone(),
            }),
            apps,
            hooks,
        })
    }

    /// The handler of an upgrade to `/app/{key}?protocol=7`.
    pub fn handler(
        &self,
        node: &Arc<wshub_core::node::Node>,
        uri: &http::Uri,
        deflate: Option<wshub_websocket::DeflateParams>,
        max_queue: usize,
    ) -> crate::transport::pusher::PusherHandler {
        use crate::transport::pusher::PusherHandler;
        let key = uri.path().strip_prefix(WS_PREFIX).unwrap_or_default();
        let protocol = uri
            .query()
            .unwrap_or_default()
            .split('&')
            .find_map(|kv| kv.strip_prefix("protocol="))
            .and_then(|v| v.parse::<u32>().ok());
        if !matches!(protocol, Some(5..=7)) {
            return PusherHandler::Refused {
                code: session::code::UNSUPPORTED_PROTOCOL,
                message: "unsupported protocol version",
            };
        }
        PusherHandler::new(node.clone(), self.apps.by_key(key).cloned(), deflate, max_queue, self.hooks.clone())
    }
}

impl PusherApp {
    /// The hub channel of the app's channel `name`.
    pub fn hub_channel(&self, name: &str) -> String {
        format!("{}{name}", self.channel_prefix)
    }

    /// The app's channel name of hub channel `ch`, when it is one of the app's.
    pub fn pusher_channel<'a>(&self, ch: &'a str) -> Option<&'a str> {
        ch.strip_prefix(self.channel_prefix.as_str())
    }

    /// `key:hex(HMAC-SHA256(secret, message))`, the form of channel and user auths.
    pub fn auth(&self, message: &str) -> String {
        format!("{}:{}", self.key, hmac_hex(&self.secret, message.as_bytes()))
    }

    /// Whether `auth` is [`PusherApp::auth`] of `message` (compared in constant time).
    pub fn verify(&self, message: &str, auth: &str) -> bool {
        use subtle::ConstantTimeEq;
        let expected = self.auth(message);
        expected.len() == auth.len() && bool::from(expected.as_bytes().ct_eq(auth.as_bytes()))
    }
}

/// `hex(HMAC-SHA256(secret, message))`.
pub fn hmac_hex(secret: &str, message: &[u8]) -> String {
    match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mut m) => {
            m.update(message);
            hex(&m.finalize().into_bytes())
        }
        // HMAC takes a key of any length.
        Err(_) => String::new(),
    }
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn app(id: &str, key: &str, prefix: &str) -> PusherApp {
        PusherApp {
            id: id.into(),
            key: key.into(),
            secret: "s".into(),
            channel_prefix: prefix.into(),
            ..Default::default()
        }
    }

    #[test]
    fn apps_must_be_complete_distinct_and_not_share_channels() {
        let ok = PusherSection {
            apps: vec![app("1", "k1", ""), app("2", "k2", "two:")],
        };
        assert!(ok.validate().is_ok());
        let overlap = PusherSection {
            apps: vec![app("1", "k1", "a:"), app("2", "k2", "a:b:")],
        };
        assert!(overlap.validate().is_err());
        let collides = PusherSection {
            apps: vec![app("1", "k1", ""), app("2", "k2", "two.")],
        };
        assert!(
            collides.validate().unwrap_err().0.contains("must hold"),
            "\"two.news\" is a channel name of app 1"
        );
        let same_key = PusherSection {
            apps: vec![app("1", "k", "a:"), app("2", "k", "b:")],
        };
        assert!(same_key.validate().is_err());
        let empty = PusherSection {
            apps: vec![app("1", "", "")],
        };
        assert!(empty.validate().unwrap_err().0.contains("key is empty"));
    }

    #[test]
    fn auth_is_pushers_key_and_hmac() {
        // Pusher's documented example (library_auth_reference/auth-signatures).
        let a = PusherApp {
            key: "278d425bdf160c739803".into(),
            secret: "7ad3773142a6692b25b8".into(),
            ..Default::default()
        };
        let auth = a.auth("1234.1234:private-foobar");
        assert_eq!(
            auth,
            "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
        assert!(a.verify("1234.1234:private-foobar", &auth));
        assert!(!a.verify("1234.1235:private-foobar", &auth));
        assert!(valid_channel("presence-a_b=c@d,e.f;g"));
        assert!(!valid_channel("a b") && !valid_channel("") && !valid_channel(&"x".repeat(201)));
    }
}
