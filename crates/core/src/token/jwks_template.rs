//! `jwks_public_endpoint`, fixed or templated: `https://{{tenant}}.idp.example.com/jwks`
//! with `tenant` a named group of `issuer_regex` or `audience_regex`, filled from the
//! token's claims. Each filled URL has its own key cache.
//!
//! A token chooses the values, so the template is only safe when the configuration lists
//! them: as Centrifugo, a template is refused at start when either regex uses a character
//! class (`[...]`, `\d`, `\w`, `\s`, `\p` and their capitals) or when a group the URL uses
//! is anything but an explicit list of literal values (`(?P<tenant>acme|globex)`), unless
//! `insecure_skip_jwks_endpoint_safety_check`. A filled URL whose path does not stay as
//! written (`..`, `.`, empty segments) is refused at run time.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use regex::Regex;

use super::{invalid, TokenError};
use crate::jwks::JwksCache;

/// Filled URLs kept at once; past it the oldest goes (a token can only pick among the
/// tenants the regex allows, but a regex may allow many).
const MAX_ENDPOINTS: usize = 1024;

/// Filled URL -> its cache, and the URLs in the order they were first used.
type Filled = (HashMap<String, Arc<JwksCache>>, std::collections::VecDeque<String>);

/// Where a verifier's JWKS keys come from.
pub enum JwksSource {
    Fixed { url: String, cache: Arc<JwksCache> },
    Template { template: String, caches: Mutex<Filled> },
}

/// The `{{name}}` variables of a template, in order.
fn variables(template: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        let j = after.find("}}").ok_or_else(|| format!("unclosed {{{{ in {template:?}"))?;
        let name = after[..j].trim();
        if name.is_empty() {
            return Err(format!("empty {{{{}}}} in {template:?}"));
        }
        out.push(name);
        rest = &after[j + 2..];
    }
    Ok(out)
}

/// Why a regex is not an explicit list of values for the groups `names` (Centrifugo's
/// `validateJWKSEndpointSafety`), if it is not.
fn unsafe_for_template(re: &Regex, names: &[&str]) -> Option<String> {
    let src = re.as_str();
    for class in ["[", "\\d", "\\D", "\\w", "\\W", "\\s", "\\S", "\\p", "\\P"] {
        if src.contains(class) {
            return Some(format!("{src:?} uses a character class ({class})"));
        }
    }
    for name in names {
        let Some(body) = group_body(src, name) else { continue };
        // Only literals and `|` (escaped punctuation is a literal too).
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            let ok = match c {
                '\\' => chars.next().is_some_and(|n| n.is_ascii_punctuation()),
                '.' | '*' | '+' | '?' | '{' | '}' | '(' | ')' | '^' | '$' => false,
                _ => true,
            };
            if !ok {
                return Some(format!(
                    "named group {name:?} of {src:?} is used in the JWKS endpoint: only an explicit list of values (a|b|c) is allowed"
                ));
            }
        }
    }
    None
}

/// The text inside `(?P<name>...)` (or `(?<name>...)`); a nested group's `(` ends it, so
/// that the caller refuses it.
fn group_body<'a>(src: &'a str, name: &str) -> Option<&'a str> {
    let start = [format!("(?P<{name}>"), format!("(?<{name}>")]
        .iter()
        .find_map(|open| src.find(open.as_str()).map(|i| i + open.len()))?;
    let rest = &src[start..];
    let mut escaped = false;
    for (i, c) in rest.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '(' => return Some(&rest[..=i]),
            ')' => return Some(&rest[..i]),
            _ => {}
        }
    }
    Some(rest)
}

/// Whether a filled URL's path is what it says (no `.`/`..` segments, no empty ones).
fn clean_path(url: &str) -> bool {
    let after_scheme = url.split_once("://").map_or(url, |(_, r)| r);
    let path = after_scheme.find('/').map_or("", |i| &after_scheme[i..]);
    let path = path.split(['?', '#']).next().unwrap_or("");
    path.is_empty() || path[1..].split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

impl JwksSource {
    pub fn new(url: &str, regexes: [&Option<Regex>; 2], skip_safety_check: bool) -> Result<Self, String> {
        if !url.starts_with("http://") && !url.starts_with("https://") {
            return Err("must be an http:// or https:// URL".into());
        }
        if !url.contains("{{") {
            return Ok(JwksSource::Fixed {
                url: url.to_string(),
                cache: Default::default(),
            });
        }
        let names = variables(url)?;
        for name in &names {
            let known = regexes
                .iter()
                .filter_map(|r| r.as_ref())
                .any(|re| re.capture_names().flatten().any(|n| n == *name));
            if !known {
                return Err(format!(
                    "variable {{{{{name}}}}} is not a named group (?P<{name}>...) of issuer_regex or audience_regex"
                ));
            }
        }
        for re in regexes.iter().filter_map(|r| r.as_ref()) {
            if let Some(why) = unsafe_for_template(re, &names) {
                if !skip_safety_check {
                    return Err(format!(
                        "{why}; a token could make the node fetch keys it chooses \
                         (insecure_skip_jwks_endpoint_safety_check allows it)"
                    ));
                }
                tracing::warn!("JWKS endpoint template safety check skipped ({why}): this is insecure");
            }
        }
        Ok(JwksSource::Template {
            template: url.to_string(),
            caches: Mutex::default(),
        })
    }

    /// The cache (and URL) for a token whose regex groups gave `vars`.
    /// Whether the URL holds `{{variables}}` (filled from each token's claims).
    pub fn is_template(&self) -> bool {
        matches!(self, JwksSource::Template { .. })
    }

    pub fn resolve(&self, vars: &[(String, String)]) -> Result<(Arc<JwksCache>, String), TokenError> {
        let template = match self {
            JwksSource::Fixed { url, cache } => return Ok((cache.clone(), url.clone())),
            JwksSource::Template { template, .. } => template,
        };
        let mut url = template.clone();
        for name in variables(template).map_err(invalid)? {
            let value = vars
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .ok_or_else(|| invalid(format!("no value for JWKS endpoint variable {name}")))?;
            url = url.replacen(&format!("{{{{{name}}}}}"), value, 1);
        }
        if !clean_path(&url) {
            return Err(invalid("JWKS URL path contains traversal sequences"));
        }
        let JwksSource::Template { caches, .. } = self else {
            return Err(invalid("unreachable"));
        };
        let mut guard = caches.lock();
        let (map, order) = &mut *guard;
        if let Some(c) = map.get(&url) {
            return Ok((c.clone(), url));
        }
        if map.len() >= MAX_ENDPOINTS {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
        let cache: Arc<JwksCache> = Default::default();
        map.insert(url.clone(), cache.clone());
        order.push_back(url.clone());
        Ok((cache, url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn re(r: &str) -> Option<Regex> {
        Some(Regex::new(r).unwrap())
    }

    #[test]
    fn templates_take_only_listed_values() {
        let iss = re(r"^https://(?P<tenant>acme|globex)\.idp\.example\.com$");
        let src = JwksSource::new("https://{{tenant}}.idp.example.com/jwks", [&iss, &None], false).unwrap();
        let vars = vec![("tenant".to_string(), "acme".to_string())];
        let (a, url) = src.resolve(&vars).unwrap();
        assert_eq!(url, "https://acme.idp.example.com/jwks");
        let (b, _) = src.resolve(&vars).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "one cache per filled URL");
        assert!(src.resolve(&[]).is_err(), "no value");
        // A group that takes anything, or a class anywhere: refused unless skipped.
        for r in [
            r"^https://(?P<tenant>.+)\.example\.com$",
            r"^https://(?P<tenant>[a-z]+)$",
            r"^(?P<tenant>a|b)\w$",
        ] {
            let loose = re(r);
            let e = JwksSource::new("https://{{tenant}}.example.com/jwks", [&loose, &None], false)
                .err()
                .unwrap();
            assert!(e.contains("insecure_skip_jwks_endpoint_safety_check"), "{r}: {e}");
            assert!(JwksSource::new("https://{{tenant}}.example.com/jwks", [&loose, &None], true).is_ok());
        }
        // A variable no regex defines.
        assert!(JwksSource::new("https://x/{{org}}/jwks", [&iss, &None], false).is_err());
        assert!(JwksSource::new("ftp://x/jwks", [&None, &None], false).is_err());
    }

    #[test]
    fn filled_paths_must_stay_clean() {
        let aud = re(r"^(?P<realm>a|\.\.|b/c)$");
        let src = JwksSource::new("https://kc.example.com/realms/{{realm}}/certs", [&None, &aud], false).unwrap();
        let fill = |v: &str| src.resolve(&[("realm".to_string(), v.to_string())]);
        assert!(fill("a").is_ok());
        assert!(fill("..").is_err(), "traversal");
        assert!(fill("").is_err(), "empty segment");
        assert!(fill("b/c").is_ok(), "a listed value with a slash stays a clean path");
        assert!(clean_path("https://h"));
        assert!(!clean_path("https://h/a/./b"));
    }
}
