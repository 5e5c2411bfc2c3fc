//! Channel names: namespaces (`ns:rest`), user-limited channels (`chat#42,43`), private
//! channels (`$secret`), length, and what characters a name may hold.

use regex::Regex;
use wshub_protocol::wildcard::Wildcard;

use crate::config::{ChannelConfig, ChannelOptions, ConfigError};

/// Why a channel name is refused; each maps to one reply code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// Empty, over `channel.max_length`, not ASCII, or not matching the namespace's
    /// `channel_regex`: 107 bad request.
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

/// The channel configuration with its regular expressions compiled (once, at start).
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// `channel_regex` of channels without a namespace, then of each namespace in order.
    regexes: Vec<Option<Regex>>,
}

impl Rules {
    pub fn new(cfg: &ChannelConfig) -> Result<Self, ConfigError> {
        let compile = |o: &ChannelOptions, key: String| match o.channel_regex.as_str() {
            "" => Ok(None),
            r => Regex::new(r).map(Some).map_err(|e| ConfigError {
                key,
                message: format!("not a valid regular expression: {e}"),
            }),
        };
        let mut regexes = vec![compile(&cfg.without_namespace, "channel.without_namespace.channel_regex".into())?];
        for (i, ns) in cfg.namespaces.iter().enumerate() {
            regexes.push(compile(&ns.options, format!("channel.namespaces[{i}].channel_regex"))?);
        }
        Ok(Rules { regexes })
    }

    /// The options that apply to `channel`, once its name is known to be acceptable: not
    /// empty, within `max_length`, in a known namespace, and matching the namespace's
    /// `channel_regex` (the part after the namespace), or ASCII when it has none. Centrifugo
    /// refuses non-ASCII names the same way: `news` and `nеws` (a Cyrillic `е`) look alike.
    pub fn resolve<'a>(&self, cfg: &'a ChannelConfig, channel: &str) -> Result<&'a ChannelOptions, ChannelError> {
        Ok(options_at(cfg, self.resolve_index(cfg, channel)?))
    }

    /// [`Rules::resolve`]'s answer as an index: 0 for channels without a namespace, `i + 1`
    /// for `cfg.namespaces[i]` (see [`options_at`]).
    pub fn resolve_index(&self, cfg: &ChannelConfig, channel: &str) -> Result<usize, ChannelError> {
        if channel.is_empty() || channel.len() > cfg.max_length {
            return Err(ChannelError::BadName);
        }
        // `$chat:secret` is in namespace `chat` (Centrifugo trims the private prefix first).
        let named = channel
            .strip_prefix(cfg.private_prefix.as_str())
            .filter(|_| !cfg.private_prefix.is_empty())
            .unwrap_or(channel);
        let (index, rest) = match named.split_once(cfg.namespace_boundary.as_str()) {
            Some((ns, rest)) if !cfg.namespace_boundary.is_empty() => {
                let i = cfg
                    .namespaces
                    .iter()
                    .position(|n| n.name == ns)
                    .ok_or(ChannelError::UnknownNamespace)?;
                (i + 1, rest)
            }
            _ => (0, channel),
        };
        let ok = match self.regexes.get(index).and_then(Option::as_ref) {
            Some(re) => re.is_match(rest),
            None => channel.is_ascii(),
        };
        if !ok {
            return Err(ChannelError::BadName);
        }
        Ok(index)
    }
}

/// The options at an index of [`Rules::resolve_index`] (those without a namespace for an
/// index past the list, which `resolve_index` never gives).
pub fn options_at(cfg: &ChannelConfig, index: usize) -> &ChannelOptions {
    match index.checked_sub(1).and_then(|i| cfg.namespaces.get(i)) {
        Some(ns) => &ns.options,
        None => &cfg.without_namespace,
    }
}

/// Checks a publication's data against `channel.publication_data_format` (the namespace's
/// when it sets one, else the global one): Centrifugo's `ValidatePublicationData`. The
/// error is the reason for a 107.
pub fn check_data(cfg: &ChannelConfig, opts: &ChannelOptions, data: &[u8]) -> Result<(), &'static str> {
    let format = match opts.publication_data_format.as_str() {
        "" => cfg.publication_data_format.as_str(),
        f => f,
    };
    match format {
        "binary" => Ok(()),
        "json" if serde_json::from_slice::<serde::de::IgnoredAny>(data).is_err() => Err("data is not valid JSON"),
        "json_object" => {
            let trimmed = data.trim_ascii();
            let object = trimmed.first() == Some(&b'{') && trimmed.last() == Some(&b'}');
            if object && serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok() {
                Ok(())
            } else {
                Err("data is not valid JSON object")
            }
        }
        _ if data.is_empty() => Err("data required"),
        _ => Ok(()),
    }
}

/// Whether `channel` is private (`channel.private_prefix`): subscribing needs a token.
pub fn is_private(cfg: &ChannelConfig, channel: &str) -> bool {
    !cfg.private_prefix.is_empty() && channel.starts_with(cfg.private_prefix.as_str())
}

/// For a user-limited channel (`name#u1,u2`, with `channel.user_boundary` and
/// `channel.user_separator`), whether `user` is one of its users. `None` when the channel
/// is not user-limited.
pub fn user_limited_allows(cfg: &ChannelConfig, channel: &str, user: &str) -> Option<bool> {
    let (_, users) = channel.rsplit_once(cfg.user_boundary.as_str())?;
    Some(!user.is_empty() && users.split(cfg.user_separator.as_str()).any(|u| u == user))
}

/// A `channels` API pattern: `*` matches any run of characters; empty matches everything.
/// Compiled once and matched in time linear in the channel name
/// ([`wshub_protocol::wildcard`]), since it runs against every channel of the node.
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

    /// The options of `channel`, compiling the regular expressions for one lookup.
    fn resolve<'a>(cfg: &'a ChannelConfig, channel: &str) -> Result<&'a ChannelOptions, ChannelError> {
        Rules::new(cfg).map_err(|_| ChannelError::BadName)?.resolve(cfg, channel)
    }
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
        let cfg = ChannelConfig::default();
        assert_eq!(user_limited_allows(&cfg, "dialog#42,43", "43"), Some(true));
        assert_eq!(user_limited_allows(&cfg, "dialog#42", "4"), Some(false));
        assert_eq!(user_limited_allows(&cfg, "dialog#42", ""), Some(false));
        assert_eq!(user_limited_allows(&cfg, "dialog", "42"), None);
        let cfg = ChannelConfig {
            user_boundary: "@".into(),
            user_separator: ";".into(),
            ..Default::default()
        };
        assert_eq!(user_limited_allows(&cfg, "dialog@42;43", "43"), Some(true));
        assert_eq!(user_limited_allows(&cfg, "dialog#42,43", "43"), None);
    }

    /// Centrifugo's `validChannelName`: without a `channel_regex` a name is ASCII; with one,
    /// the part after the namespace must match it (and then non-ASCII is the regex's call).
    #[test]
    fn names_are_ascii_unless_a_regex_says_otherwise() {
        let cfg = ChannelConfig {
            namespaces: vec![
                Namespace {
                    name: "strict".into(),
                    options: ChannelOptions {
                        channel_regex: "^[a-z0-9]+$".into(),
                        ..Default::default()
                    },
                },
                Namespace {
                    name: "any".into(),
                    options: ChannelOptions {
                        channel_regex: "^.+$".into(),
                        ..Default::default()
                    },
                },
            ],
            ..Default::default()
        };
        let rules = Rules::new(&cfg).unwrap();
        assert!(rules.resolve(&cfg, "news").is_ok());
        assert_eq!(rules.resolve(&cfg, "n\u{0435}ws").unwrap_err(), ChannelError::BadName, "Cyrillic e");
        assert_eq!(rules.resolve(&cfg, "\u{1F600}").unwrap_err(), ChannelError::BadName);
        assert!(rules.resolve(&cfg, "strict:room1").is_ok());
        assert_eq!(rules.resolve(&cfg, "strict:Room1").unwrap_err(), ChannelError::BadName);
        assert_eq!(rules.resolve(&cfg, "strict:").unwrap_err(), ChannelError::BadName);
        assert!(rules.resolve(&cfg, "any:n\u{0435}ws").is_ok(), "the regex decides");
        let bad = ChannelConfig {
            without_namespace: ChannelOptions {
                channel_regex: "(".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(Rules::new(&bad).unwrap_err().key, "channel.without_namespace.channel_regex");
    }

    #[test]
    fn publication_data_formats() {
        let cfg = ChannelConfig::default();
        let with = |f: &str| ChannelOptions {
            publication_data_format: f.into(),
            ..Default::default()
        };
        let check = |f: &str, d: &[u8]| check_data(&cfg, &with(f), d);
        assert_eq!(check("", b""), Err("data required"));
        assert_eq!(check("", b"not json"), Ok(()), "the default only refuses empty data");
        assert_eq!(check("json", b"{\"a\":1}"), Ok(()));
        assert_eq!(check("json", b"nope"), Err("data is not valid JSON"));
        assert_eq!(check("json", b""), Err("data is not valid JSON"));
        assert_eq!(check("json_object", b" {\"a\":1} "), Ok(()));
        assert_eq!(check("json_object", b"[1]"), Err("data is not valid JSON object"));
        assert_eq!(check("json_object", b"{bad}"), Err("data is not valid JSON object"));
        assert_eq!(check("binary", b""), Ok(()));
        let global = ChannelConfig {
            publication_data_format: "json".into(),
            ..Default::default()
        };
        assert!(check_data(&global, &with(""), b"x").is_err(), "the global format applies");
        assert!(check_data(&global, &with("binary"), b"x").is_ok(), "the namespace's wins");
    }

    #[test]
    fn boundaries_and_private_prefix() {
        let cfg = ChannelConfig {
            namespace_boundary: "/".into(),
            namespaces: vec![Namespace {
                name: "chat".into(),
                options: ChannelOptions {
                    presence: true,
                    ..Default::default()
                },
            }],
            ..Default::default()
        };
        assert!(resolve(&cfg, "chat/room").unwrap().presence);
        assert!(!resolve(&cfg, "chat:room").unwrap().presence, "':' is no boundary here");
        assert!(is_private(&cfg, "$secret"));
        assert!(!is_private(&cfg, "secret$"));
        let none = ChannelConfig {
            private_prefix: String::new(),
            ..Default::default()
        };
        assert!(!is_private(&none, "$secret"));
        let ns = ChannelConfig {
            namespaces: vec![Namespace {
                name: "chat".into(),
                options: ChannelOptions {
                    presence: true,
                    ..Default::default()
                },
            }],
            ..Default::default()
        };
        assert!(
            resolve(&ns, "$chat:secret").unwrap().presence,
            "the prefix is not part of the namespace"
        );
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
