//! Subscription kinds. A subscribe names its kind (`type` on the wire) and the namespace
//! names the one it serves (`subscription_type`); a mismatch is refused (103).
//!
//! - [`stream`]: Centrifugo's default. One reply: the stream position and, when
//!   recovering, what was missed ([`recovery`] decides whether it covers the gap).
//! - Keyed kinds (maps): a subscribe runs in [`Phase`]s, each its own request and reply.
//!   STATE pages a snapshot of the keyed state at a frozen stream position, STREAM pages
//!   the stream from there when it ran far ahead, LIVE switches to the hub's live
//!   publications; the switch is the stream kind's recovery (the hub buffers, the stream
//!   is read from the client's position, [`recovery::merge_buffered`] joins them), so a
//!   keyed kind adds its state pages and reuses the rest.

pub mod map;
pub mod recovery;
pub mod shared_poll;
pub mod stream;

/// What a subscriber receives (`SubscribeRequest.type`, namespace `subscription_type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SubscriptionType {
    #[default]
    Stream,
    /// Keyed state with a change stream.
    Map,
    /// A map of the clients subscribed to a channel (map presence by client).
    MapClients,
    /// A map of the users subscribed to a channel (map presence by user).
    MapUsers,
    /// Keys polled from a backend.
    SharedPoll,
}

impl SubscriptionType {
    pub const ALL: [SubscriptionType; 5] = [
        SubscriptionType::Stream,
        SubscriptionType::Map,
        SubscriptionType::MapClients,
        SubscriptionType::MapUsers,
        SubscriptionType::SharedPoll,
    ];

    /// The configuration name.
    pub fn name(self) -> &'static str {
        match self {
            SubscriptionType::Stream => "stream",
            SubscriptionType::Map => "map",
            SubscriptionType::MapClients => "map_clients",
            SubscriptionType::MapUsers => "map_users",
            SubscriptionType::SharedPoll => "shared_poll",
        }
    }

    /// From the configuration name; empty is the default.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "" => Some(SubscriptionType::Stream),
            _ => Self::ALL.into_iter().find(|t| t.name() == s),
        }
    }

    /// The wire number (`SubscribeRequest.type`).
    pub fn wire(self) -> i32 {
        match self {
            SubscriptionType::Stream => 0,
            SubscriptionType::Map => 1,
            SubscriptionType::MapClients => 2,
            SubscriptionType::MapUsers => 3,
            SubscriptionType::SharedPoll => 4,
        }
    }

    pub fn from_wire(n: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.wire() == n)
    }

    /// Keyed state served in phases.
    pub fn is_map(self) -> bool {
        matches!(
            self,
            SubscriptionType::Map | SubscriptionType::MapClients | SubscriptionType::MapUsers
        )
    }
}

/// The phase of a keyed subscribe (`SubscribeRequest.phase`, and of each reply).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Phase {
    /// Subscribed: live publications follow.
    #[default]
    Live,
    /// Paging the change stream.
    Stream,
    /// Paging the keyed state.
    State,
}

impl Phase {
    pub fn wire(self) -> i32 {
        match self {
            Phase::Live => 0,
            Phase::Stream => 1,
            Phase::State => 2,
        }
    }

    pub fn from_wire(n: i32) -> Option<Self> {
        [Phase::Live, Phase::Stream, Phase::State].into_iter().find(|p| p.wire() == n)
    }
}

/// Centrifugo's names; the default (a stream) is written as Centrifugo writes it, empty.
impl serde::Serialize for SubscriptionType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SubscriptionType::Stream => s.serialize_str(""),
            t => s.serialize_str(t.name()),
        }
    }
}

impl<'de> serde::Deserialize<'de> for SubscriptionType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SubscriptionType::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown subscription_type {s:?} (\"stream\", \"map\", \"map_clients\", \"map_users\" or \"shared_poll\")"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_round_trip_by_name_and_number() {
        for t in SubscriptionType::ALL {
            assert_eq!(SubscriptionType::parse(t.name()), Some(t));
            assert_eq!(SubscriptionType::from_wire(t.wire()), Some(t));
        }
        assert_eq!(SubscriptionType::parse(""), Some(SubscriptionType::Stream));
        assert_eq!(SubscriptionType::parse("maps"), None);
        assert_eq!(SubscriptionType::from_wire(5), None);
        assert_eq!(Phase::from_wire(2), Some(Phase::State));
        assert_eq!(Phase::from_wire(3), None);
    }

    #[test]
    fn configuration_names_are_checked_at_load() {
        let t: SubscriptionType = serde_json::from_str("\"map_users\"").unwrap();
        assert_eq!(t, SubscriptionType::MapUsers);
        let e = serde_json::from_str::<SubscriptionType>("\"maps\"").unwrap_err();
        assert!(e.to_string().contains("unknown subscription_type \"maps\""), "{e}");
        assert_eq!(serde_json::to_string(&SubscriptionType::Stream).unwrap(), "\"\"");
    }
}
