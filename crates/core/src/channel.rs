//! Channel names: namespaces (`ns:rest`), user-limited channels (`chat#42,43`), length.

use wshub_websocket::wildcard::Wildcard;

use crate::config::{ChannelConfig, ChannelOptions};

/// Why a channel name is refused; each maps to one reply code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// Empty or over `channel.max_length`: 107 bad request.
    #[error("bad channel name")]
    BadName,
    /// A `ns:` prefix with no such namespace: 102 unknown channel.
    #[error("unknown channel")]
    UnknownNamespace,
}

impl ChannelError {
    pub fn code(self) -> u32 {
        match self {
            ChannelError::BadName => wshub_protocol::codes::error::BAD_REQUEST,
            ChannelError::UnknownNamespace => wshub_protocol::codes::error::UNKNOWN_CHANNEL,
        }
    }
}

/// The options that apply to `channel`.
pub fn resolve<'a>(cfg: &'a ChannelConfig, channel: &str) -> Result<&'a ChannelOptions, ChannelError> {
    if channel.is_empty() || channel.len() > cfg.max_length {
        return Err(ChannelError::BadName);
    }
    match channel.split_once(':') {
        None => Ok(&cfg.without_namespace),
        Some((ns, _)) => cfg
            .namespaces
            .iter()
            .find(|n| n.name == ns)
            .map(|n| &n.options)
            .ok_or(ChannelError::UnknownNamespace),
    }
}

/// For a user-limited channel (`name#u1,u2`), whether `user` is one of its users. `None`
/// when the channel is not user-limited.
pub fn user_limited_allows(channel: &str, user: &str) -> Option<bool> {
    let (_, users) = channel.rsplit_once('#')?;
    Some(!user.is_empty() && users.split(',').any(|u| u == user))
}

/// A `channels` API pattern: `*` matches any run of characters; empty matches everything.
/// Compiled once and matched in time linear in the channel name
/// ([`wshub_websocket::wildcard`]), since it runs against every channel of the node.
#[derive(Debug, Clone)]
pub struct ChannelPattern(Option<Wildcard>);

impl ChannelPattern {
    /// Compiles `pattern`, refusing one longer than twice `max_length` (no channel name is
    /// longer than `max_length`; the stars may double it).
    pub fn new(pattern: &str, max_length: usize) -> Result<Self, ChannelError> {
        if pattern.len() > max_length.saturating_mul(2) {
            return Err(ChannelError::BadName);
        }
        Ok(ChannelPattern((!pattern.is_empty()).then(|| Wildcard::new(pattern, false))))
    }

    pub fn matches(&self, channel: &str) -> bool {
        self.0.as_ref().is_none_or(|w| w.matches(channel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Namespace;

    #[test]
    fn namespaces_and_limits() {
        let cfg = ChannelConfig {
            max_length: 10,
            namespaces: vec![Namespace {
                name: "chat".into(),
                options: ChannelOptions {
                    presence: true,
                    ..Default::default()
                },
            }],
            ..Default::default()
        };
        assert!(!resolve(&cfg, "news").unwrap().presence);
        assert!(resolve(&cfg, "chat:room").unwrap().presence);
        assert_eq!(resolve(&cfg, "nope:room"), Err(ChannelError::UnknownNamespace));
        assert_eq!(resolve(&cfg, ""), Err(ChannelError::BadName));
        assert_eq!(resolve(&cfg, "elevenchars"), Err(ChannelError::BadName));
        assert_eq!(ChannelError::UnknownNamespace.code(), 102);
    }

    #[test]
    fn user_limited() {
        assert_eq!(user_limited_allows("dialog#42,43", "43"), Some(true));
        assert_eq!(user_limited_allows("dialog#42", "4"), Some(false));
        assert_eq!(user_limited_allows("dialog#42", ""), Some(false));
        assert_eq!(user_limited_allows("dialog", "42"), None);
    }

    #[test]
    fn patterns() {
        let m = |p: &str, c: &str| ChannelPattern::new(p, 255).unwrap().matches(c);
        assert!(m("", "x"));
        assert!(m("chat:*", "chat:room"));
        assert!(!m("chat:*", "news"));
        assert!(m("*room*", "chat:room1"));
        assert!(ChannelPattern::new(&"*a".repeat(128), 255).is_ok());
        assert_eq!(ChannelPattern::new(&"*a".repeat(256), 255).err(), Some(ChannelError::BadName));
    }

    /// The recursive definition of `*` (exponential; small inputs only).
    fn reference(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len()).any(|i| reference(rest, &s[i..])),
            Some((c, rest)) => matches!(s.split_first(), Some((d, srest)) if c == d && reference(rest, srest)),
        }
    }

    proptest::proptest! {
        #[test]
        fn patterns_agree_with_the_recursive_definition(p in "[ab:#*]{0,8}", c in "[ab:#]{0,10}", max in 0..6usize) {
            match ChannelPattern::new(&p, max) {
                // The empty pattern is "every channel", not "the empty channel".
                Ok(pattern) => proptest::prop_assert_eq!(pattern.matches(&c), p.is_empty() || reference(p.as_bytes(), c.as_bytes())),
                Err(e) => proptest::prop_assert!(p.len() > 2 * max && e == ChannelError::BadName),
            }
        }
    }
}
