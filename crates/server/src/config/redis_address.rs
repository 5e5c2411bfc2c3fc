//! Redis addresses as Centrifugo reads them: `host:port` as well as URLs, with
//! `engine.redis.user`, `password` and `db` applied to each address that does not say them
//! itself.

use super::Redis;

/// Characters a URL's user or password may hold as they are (RFC 3986 unreserved).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One address as a URL: a scheme when it has none, the credentials and database of the
/// section when it has none of its own.
fn normalize_one(address: &str, user: &str, password: &str, db: u32) -> String {
    let a = address.trim();
    let url = if a.contains("://") { a.to_string() } else { format!("redis://{a}") };
    let Some((scheme, rest)) = url.split_once("://") else { return url };
    if !matches!(scheme, "redis" | "rediss") {
        return url;
    }
    let (authority, path) = rest.split_once('/').map_or((rest, None), |(a, p)| (a, Some(p)));
    let authority = match (authority.contains('@'), user.is_empty() && password.is_empty()) {
        (false, false) => match password.is_empty() {
            true => format!("{}@{authority}", encode(user)),
            false => format!("{}:{}@{authority}", encode(user), encode(password)),
        },
        _ => authority.to_string(),
    };
    let path = match path {
        Some(p) if !p.is_empty() => format!("/{p}"),
        _ if db > 0 => format!("/{db}"),
        _ => String::new(),
    };
    format!("{scheme}://{authority}{path}")
}

/// Rewrites `r.address` (commas between shards) into URLs.
pub(super) fn normalize(r: &mut Redis) {
    r.address = r
        .address
        .split(',')
        .filter(|a| !a.trim().is_empty())
        .map(|a| normalize_one(a, &r.user, &r.password, r.db))
        .collect::<Vec<_>>()
        .join(",");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centrifugo_address_forms() {
        assert_eq!(normalize_one("localhost:6379", "", "", 0), "redis://localhost:6379");
        assert_eq!(
            normalize_one("127.0.0.1:6379", "", "p@ss:w", 2),
            "redis://:p%40ss%3Aw@127.0.0.1:6379/2"
        );
        assert_eq!(normalize_one("redis://h:1", "app", "pw", 0), "redis://app:pw@h:1");
        assert_eq!(
            normalize_one("redis://u:own@h:1/5", "app", "pw", 2),
            "redis://u:own@h:1/5",
            "the URL's own win"
        );
        assert_eq!(normalize_one("rediss://h:1", "app", "", 0), "rediss://app@h:1");
        assert_eq!(normalize_one("unix:///run/redis.sock", "a", "b", 1), "unix:///run/redis.sock");
        let mut r = Redis {
            address: "a:1, redis://b:2".into(),
            db: 1,
            ..Default::default()
        };
        normalize(&mut r);
        assert_eq!(r.address, "redis://a:1/1,redis://b:2/1");
    }
}
