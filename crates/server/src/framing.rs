//! Where a request's body ends (RFC 9112 §6), judged the same way on both HTTP paths.
//!
//! Why: a front proxy and this server must agree on where one request ends and the next
//! begins, or a second request hidden in the first one's body ("request smuggling")
//! reaches the server unseen by the proxy. The raw stream path (`crate::transport::raw`) parsed
//! `Content-Length` by hand: the last of two differing headers won, and `+5` was read as 5,
//! where RFC 9112 requires a 400. hyper refuses those itself; a request with both
//! `Transfer-Encoding` and `Content-Length` it frames by the former, drops the latter and
//! closes the connection after answering (RFC 9112 §6.1 allows that or a refusal). The raw
//! path, which reads no chunked bodies, refuses it with 400: a proxy that framed it by
//! `Content-Length` is exactly the smuggling case.

/// Why a request's framing was refused (each is a 400, or 411 for a chunked body the raw
/// path does not read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    /// A `Content-Length` that is not one decimal number (`+5`, `0x10`, `-1`, empty, a
    /// comma list, too large), or several that differ.
    BadLength,
    /// Both `Transfer-Encoding` and `Content-Length`.
    Both,
    /// `Transfer-Encoding` on the raw path, which reads only `Content-Length` bodies.
    Chunked,
}

impl FramingError {
    /// The status and the one-line reason of the refusal.
    pub fn answer(self) -> (http::StatusCode, &'static str) {
        match self {
            FramingError::BadLength => (http::StatusCode::BAD_REQUEST, "invalid or conflicting Content-Length"),
            FramingError::Both => (http::StatusCode::BAD_REQUEST, "both Transfer-Encoding and Content-Length: send one"),
            FramingError::Chunked => (http::StatusCode::LENGTH_REQUIRED, "send the body with Content-Length"),
        }
    }
}

/// The body length that the `Content-Length` values announce: `None` without any. Every
/// value must be digits only and all must be equal (a repeated header, RFC 9112 §6.3). A
/// comma list is refused, as hyper refuses it: RFC 9110 §8.6 allows either.
pub fn content_length<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Result<Option<u64>, FramingError> {
    let mut length = None;
    for value in values {
        let digits = value.trim_ascii();
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(FramingError::BadLength);
        }
        let n: u64 = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or(FramingError::BadLength)?;
        if length.is_some_and(|l| l != n) {
            return Err(FramingError::BadLength);
        }
        length = Some(n);
    }
    Ok(length)
}

/// The raw path's judgement of a head's headers (name, value): the body's length (0
/// without `Content-Length`).
pub fn raw_body_length<'a>(headers: impl IntoIterator<Item = (&'a str, &'a [u8])> + Clone) -> Result<u64, FramingError> {
    let te = headers
        .clone()
        .into_iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"));
    let cl = headers
        .into_iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v);
    let length = content_length(cl)?;
    match (te, length) {
        (true, Some(_)) => Err(FramingError::Both),
        (true, None) => Err(FramingError::Chunked),
        (false, l) => Ok(l.unwrap_or(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths() {
        let one = |v: &'static str| content_length([v.as_bytes()]);
        assert_eq!(content_length([]), Ok(None));
        assert_eq!(one("5"), Ok(Some(5)));
        assert_eq!(one(" 5 "), Ok(Some(5)));
        assert_eq!(content_length([&b"5"[..], b"5"]), Ok(Some(5)), "repeated, equal");
        for bad in [
            "+5",
            "-1",
            "0x10",
            "",
            "5, 5",
            "5,",
            ",5",
            "5, 6",
            "5 5",
            "1e3",
            "99999999999999999999999",
            "٥",
        ] {
            assert_eq!(one(bad), Err(FramingError::BadLength), "{bad:?}");
        }
        assert_eq!(content_length([&b"5"[..], b"6"]), Err(FramingError::BadLength), "two that differ");
    }

    #[test]
    fn raw_judgement() {
        let h = |v: &[(&'static str, &'static str)]| v.iter().map(|(n, v)| (*n, v.as_bytes())).collect::<Vec<_>>();
        assert_eq!(raw_body_length(h(&[("Host", "x")])), Ok(0));
        assert_eq!(raw_body_length(h(&[("content-length", "7")])), Ok(7));
        assert_eq!(
            raw_body_length(h(&[("Transfer-Encoding", "chunked"), ("Content-Length", "7")])),
            Err(FramingError::Both)
        );
        assert_eq!(raw_body_length(h(&[("Transfer-Encoding", "chunked")])), Err(FramingError::Chunked));
    }
}
