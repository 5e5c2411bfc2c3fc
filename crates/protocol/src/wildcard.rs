//! `*` wildcard patterns (`https://*.example.com`, `chat:*`), matched in time linear in the
//! input: the origin check runs before authentication on every handshake, and the `channels`
//! API matches a caller's pattern against every channel of the node.
//!
//! A pattern with only `*` as metacharacter splits into literal segments; it matches when
//! the input starts with the first segment, ends with the last, and holds the middle ones in
//! order between them. Taking each middle segment at its leftmost occurrence is enough (a
//! later one only leaves less room for the rest), so there is no backtracking: each segment
//! is searched once with `memchr::memmem` (two-way search, linear). The recursive matcher
//! this replaces was exponential in the number of stars (`*a*a*a*a*a*a*a*b`).
//!
//! `memchr` rather than a glob crate: the crates at hand (`wildcard`, `wildmatch`, `globset`)
//! either backtrack (quadratic worst case) or compile a regex per pattern; this is the one
//! shape the server needs, in thirty lines, proven linear by the tests below.

use memchr::memmem;

/// A compiled `*` pattern. Every other byte matches itself.
#[derive(Debug, Clone)]
pub struct Wildcard {
    /// The literal segments between stars (`a*b*c` -> `a`, `b`, `c`; `*a*` -> ``, `a`, ``).
    segments: Vec<memmem::Finder<'static>>,
    /// Matched without regard to ASCII case (patterns are lowered at compile time).
    ignore_case: bool,
}

impl Wildcard {
    /// Compiles `pattern`; `ignore_case` compares ASCII letters without regard to case.
    pub fn new(pattern: &str, ignore_case: bool) -> Self {
        let pattern = if ignore_case {
            pattern.to_ascii_lowercase()
        } else {
            pattern.to_string()
        };
        let segments = pattern.split('*').map(|s| memmem::Finder::new(s.as_bytes()).into_owned()).collect();
        Wildcard { segments, ignore_case }
    }

    /// Whether the whole of `input` matches.
    pub fn matches(&self, input: &str) -> bool {
        if self.ignore_case && input.bytes().any(|b| b.is_ascii_uppercase()) {
            return self.matches_bytes(input.to_ascii_lowercase().as_bytes());
        }
        self.matches_bytes(input.as_bytes())
    }

    fn matches_bytes(&self, s: &[u8]) -> bool {
        let (first, rest) = match self.segments.split_first() {
            Some(x) => x,
            None => return s.is_empty(),
        };
        let first = first.needle();
        let Some((last, middle)) = rest.split_last() else {
            // No star: a literal.
            return s == first;
        };
        let last = last.needle();
        if s.len() < first.len() + last.len() || !s.starts_with(first) || !s.ends_with(last) {
            return false;
        }
        // The middle segments must fit, in order, between the prefix and the suffix.
        let mut hay = &s[first.len()..s.len() - last.len()];
        for seg in middle {
            match seg.find(hay) {
                Some(at) => hay = &hay[at + seg.needle().len()..],
                None => return false,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: the recursive definition of `*` (exponential; small inputs only).
    fn reference(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len()).any(|i| reference(rest, &s[i..])),
            Some((c, rest)) => matches!(s.split_first(), Some((d, srest)) if c == d && reference(rest, srest)),
        }
    }

    #[test]
    fn shapes() {
        let m = |p: &str, s: &str| Wildcard::new(p, false).matches(s);
        assert!(m("", ""));
        assert!(!m("", "x"));
        assert!(m("*", ""));
        assert!(m("*", "anything"));
        assert!(m("chat:*", "chat:room"));
        assert!(!m("chat:*", "news"));
        assert!(m("*room*", "chat:room1"));
        assert!(m("a*a", "aa"));
        assert!(!m("a*a", "a"), "prefix and suffix may not overlap");
        assert!(m("a**b", "ab"));
        assert!(m("*a*b*c*", "xxaxxbxxcxx"));
        assert!(!m("*a*b*c*", "xxcxxbxxaxx"));
        assert!(!m("exact", "exactly"));
    }

    #[test]
    fn case() {
        let w = Wildcard::new("https://*.Example.com", true);
        assert!(w.matches("HTTPS://app.example.COM"));
        assert!(!Wildcard::new("https://*.example.com", false).matches("https://app.EXAMPLE.com"));
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_the_recursive_definition(p in "[ab*]{0,8}", s in "[ab]{0,10}") {
            proptest::prop_assert_eq!(Wildcard::new(&p, false).matches(&s), reference(p.as_bytes(), s.as_bytes()));
        }

        #[test]
        fn ignore_case_matches_the_lowered_strings(p in "[aAbB*]{0,8}", s in "[aAbB]{0,10}") {
            let lowered = reference(p.to_ascii_lowercase().as_bytes(), s.to_ascii_lowercase().as_bytes());
            proptest::prop_assert_eq!(Wildcard::new(&p, true).matches(&s), lowered);
        }
    }

    /// The pattern that took minutes with the recursive matcher, on inputs far longer. Not
    /// timed: each segment is one forward memmem search, so the work is linear by
    /// construction; this checks the answers on inputs where the middle search runs.
    #[test]
    fn adversarial_patterns_finish() {
        let pattern = "*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b";
        let w = Wildcard::new(pattern, false);
        let long = "a".repeat(200_000);
        assert!(!w.matches(&long));
        let origin = format!("https://{}.org", "a.".repeat(20_000));
        assert!(!Wildcard::new("https://*.*.example.org", true).matches(&origin));
        // Prefix and suffix both match, so every middle segment is searched.
        let s = format!("{}c", "ab".repeat(100_000));
        assert!(Wildcard::new("*a*a*a*a*a*a*a*b*c", false).matches(&s));
        assert!(!Wildcard::new("*a*a*a*a*a*a*a*ba*c", false).matches(&format!("{}c", "a".repeat(200_000))));
    }
}
