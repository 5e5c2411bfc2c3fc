//! The opening handshake (RFC 6455 section 4), both sides, on `http` types.
//!
//! The server side validates a parsed request ([`accept`]) and says which headers the `101`
//! answer carries ([`Accepted::response_headers`]); reading and writing HTTP is the caller's
//! (hyper's) job. Each refusal is a [`HandshakeError`] with its status and one-line reason.

use base64::Engine as _;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use sha1::{Digest, Sha1};

use crate::deflate::{self, DeflateConfig, DeflateParams};
use crate::HandshakeError;
use wshub_protocol::wildcard::Wildcard;

const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 4.2.2, step 5.4).
pub fn accept_key(key: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(key);
    h.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Which `Origin` headers are let in. A request without `Origin` (not a browser) always is.
#[derive(Debug, Clone, Default)]
pub enum OriginPolicy {
    /// Every origin.
    Any,
    /// Only an origin whose host and port equal the `Host` header.
    #[default]
    SameHost,
    /// Origins matching one of these patterns, where `*` stands for any run of characters
    /// (`https://*.example.com`); matched without regard to case.
    Patterns(Vec<Wildcard>),
}

/// The longest `Origin` header considered: a longer one is refused (403) without matching.
/// Real origins are a scheme, a host and a port: a few dozen bytes, 253 for the longest host.
pub const MAX_ORIGIN_LEN: usize = 1024;

impl OriginPolicy {
    /// Builds the policy of `client.allowed_origins`: empty means same host, `*` means any.
    pub fn from_list(list: &[String]) -> Self {
        if list.is_empty() {
            OriginPolicy::SameHost
        } else if list.iter().any(|p| p == "*") {
            OriginPolicy::Any
        } else {
            OriginPolicy::Patterns(list.iter().map(|p| Wildcard::new(p, true)).collect())
        }
    }

    pub fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        if origin.len() > MAX_ORIGIN_LEN {
            return false;
        }
        match self {
            OriginPolicy::Any => true,
            OriginPolicy::SameHost => {
                let authority = origin.split_once("://").map(|(_, a)| a).unwrap_or("");
                matches!(host, Some(h) if !authority.is_empty() && authority.eq_ignore_ascii_case(h))
            }
            OriginPolicy::Patterns(ps) => ps.iter().any(|p| p.matches(origin)),
        }
    }
}

/// What the server accepts upgrades with.
#[derive(Debug, Clone, Default)]
pub struct HandshakeConfig {
    /// Subprotocols the server speaks, in order of preference.
    pub protocols: Vec<String>,
    /// `Some`: permessage-deflate is offered to clients that ask for it.
    pub deflate: Option<DeflateConfig>,
    pub origins: OriginPolicy,
}

/// A valid upgrade request and what was agreed.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub accept: String,
    /// The subprotocol chosen, echoed in `Sec-WebSocket-Protocol`.
    pub protocol: Option<String>,
    pub deflate: Option<DeflateParams>,
    extension_response: Option<String>,
}

impl Accepted {
    /// The headers of the `101 Switching Protocols` answer.
    pub fn response_headers(&self) -> HeaderMap {
        let mut h = HeaderMap::with_capacity(5);
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        if let Ok(v) = HeaderValue::from_str(&self.accept) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        if let Some(v) = self.protocol.as_deref().and_then(|p| HeaderValue::from_str(p).ok()) {
            h.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
        }
        if let Some(v) = self.extension_response.as_deref().and_then(|e| HeaderValue::from_str(e).ok()) {
            h.insert(header::SEC_WEBSOCKET_EXTENSIONS, v);
        }
        h
    }
}

/// Iterates the comma-separated tokens of every instance of a header.
fn tokens<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Validates an upgrade request (RFC 6455 4.2.1) and negotiates subprotocol and extensions.
pub fn accept<B>(req: &http::Request<B>, cfg: &HandshakeConfig) -> Result<Accepted, HandshakeError> {
    // 4.2.1 (1): "An HTTP/1.1 or higher GET request".
    if req.method() != http::Method::GET {
        return Err(HandshakeError::Method);
    }
    if req.version() < http::Version::HTTP_11 {
        return Err(HandshakeError::HttpVersion);
    }
    let h = req.headers();
    // (2): "A |Host| header field".
    let host = h.get(header::HOST).and_then(|v| v.to_str().ok());
    if host.is_none() {
        return Err(HandshakeError::MissingHost);
    }
    // (3): "An |Upgrade| header field containing the value "websocket"" (case-insensitive).
    if !tokens(h, &header::UPGRADE).any(|t| t.eq_ignore_ascii_case("websocket")) {
        return Err(HandshakeError::Upgrade);
    }
    // (4): "A |Connection| header field that includes the token "Upgrade"".
    if !tokens(h, &header::CONNECTION).any(|t| t.eq_ignore_ascii_case("upgrade")) {
        return Err(HandshakeError::Connection);
    }
    // (6): "A |Sec-WebSocket-Version| header field, with a value of 13"; 4.4: otherwise
    // answer with the versions we speak, which the caller does through 426.
    let mut versions = h.get_all(header::SEC_WEBSOCKET_VERSION).iter();
    match (versions.next(), versions.next()) {
        (Some(v), None) if v.as_bytes() == b"13" => {}
        _ => return Err(HandshakeError::Version),
    }
    // (5): "A |Sec-WebSocket-Key| header field with a base64-encoded value that, when
    // decoded, is 16 bytes in length."
    let mut keys = h.get_all(header::SEC_WEBSOCKET_KEY).iter();
    let key = match (keys.next(), keys.next()) {
        (Some(k), None) => k.as_bytes(),
        _ => return Err(HandshakeError::Key),
    };
    let key = trim_ascii(key);
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(raw) if raw.len() == 16 => {}
        _ => return Err(HandshakeError::Key),
    }
    // (7): the |Origin| header, checked against the policy when present.
    if let Some(origin) = h.get(header::ORIGIN) {
        let origin = origin.to_str().map_err(|_| HandshakeError::Origin)?;
        if !cfg.origins.allows(origin, host) {
            return Err(HandshakeError::Origin);
        }
    }
    let protocol = {
        let offered: Vec<&str> = tokens(h, &header::SEC_WEBSOCKET_PROTOCOL).collect();
        cfg.protocols.iter().find(|p| offered.iter().any(|o| o == p)).cloned()
    };
    let (deflate, extension_response) = match cfg.deflate {
        Some(dc) => {
            let values = h.get_all(header::SEC_WEBSOCKET_EXTENSIONS).iter().filter_map(|v| v.to_str().ok());
            match deflate::negotiate(values, dc) {
                Some((p, r)) => (Some(p), Some(r)),
                None => (None, None),
            }
        }
        None => (None, None),
    };
    Ok(Accepted {
        accept: accept_key(key),
        protocol,
        deflate,
        extension_response,
    })
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !c.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &b[start..end]
}

/// A client's opening request, ready to write.
#[derive(Debug, Clone)]
pub struct ClientRequest {
    pub bytes: Vec<u8>,
    /// The `Sec-WebSocket-Accept` the server must answer with.
    pub expected_accept: String,
}

/// Builds a client's opening request for `host` (with port) and `path_and_query`.
pub fn client_request(
    host: &str,
    path_and_query: &str,
    protocols: &[&str],
    deflate: Option<DeflateConfig>,
    key: [u8; 16],
) -> ClientRequest {
    let key = base64::engine::general_purpose::STANDARD.encode(key);
    let mut s = format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    if !protocols.is_empty() {
        s.push_str(&format!("Sec-WebSocket-Protocol: {}\r\n", protocols.join(", ")));
    }
    if let Some(dc) = deflate {
        s.push_str(&format!("Sec-WebSocket-Extensions: {}\r\n", DeflateParams::client_offer(dc).1));
    }
    s.push_str("\r\n");
    ClientRequest {
        bytes: s.into_bytes(),
        expected_accept: accept_key(key.as_bytes()),
    }
}

/// Reads the server's answer from the bytes received so far: `Ok(None)` while the head is
/// incomplete; `Ok(Some((head_len, accepted)))` once it is valid (bytes after `head_len`
/// already belong to the WebSocket stream).
pub fn read_response(
    buf: &[u8],
    req: &ClientRequest,
    deflate: Option<DeflateConfig>,
) -> Result<Option<(usize, ClientAccepted)>, ClientHandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() <= 16 * 1024 => return Ok(None),
        _ => return Err(ClientHandshakeError::Malformed),
    };
    let mut map = HeaderMap::new();
    for h in resp.headers.iter() {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_bytes(h.value)) {
            map.append(n, v);
        }
    }
    verify_response(resp.code.unwrap_or(0), &map, req, deflate).map(|a| Some((head, a)))
}

/// Why a server's answer to the opening request was refused by a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientHandshakeError {
    #[error("malformed or oversized HTTP answer")]
    Malformed,
    #[error("server answered HTTP {0}")]
    Status(u16),
    #[error("bad Sec-WebSocket-Accept")]
    Accept,
    #[error("server chose an extension that was not offered")]
    Extension,
}

/// What a client agreed to, read from the server's `101` answer.
#[derive(Debug, Clone)]
pub struct ClientAccepted {
    pub protocol: Option<String>,
    pub deflate: Option<DeflateParams>,
}

/// Checks the server's answer (status and headers) against the request.
pub fn verify_response(
    status: u16,
    headers: &HeaderMap,
    req: &ClientRequest,
    deflate: Option<DeflateConfig>,
) -> Result<ClientAccepted, ClientHandshakeError> {
    if status != 101 {
        return Err(ClientHandshakeError::Status(status));
    }
    if headers.get(header::SEC_WEBSOCKET_ACCEPT).map(|v| v.as_bytes()) != Some(req.expected_accept.as_bytes()) {
        return Err(ClientHandshakeError::Accept);
    }
    let protocol = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let deflate = match headers.get(header::SEC_WEBSOCKET_EXTENSIONS).and_then(|v| v.to_str().ok()) {
        None => None,
        Some(v) => {
            let dc = deflate.ok_or(ClientHandshakeError::Extension)?;
            Some(deflate::parse_response(v, dc).ok_or(ClientHandshakeError::Extension)?)
        }
    };
    Ok(ClientAccepted { protocol, deflate })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(extra: &[(&str, &str)]) -> http::Request<()> {
        let mut b = http::Request::get("/connection/websocket")
            .header("Host", "example.com:8000")
            .header("Upgrade", "websocket")
            .header("Connection", "keep-alive, Upgrade")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("Sec-WebSocket-Version", "13");
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    fn with(mut r: http::Request<()>, name: &str, value: Option<&str>) -> http::Request<()> {
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
        r.headers_mut().remove(&name);
        if let Some(v) = value {
            r.headers_mut().insert(name, HeaderValue::from_str(v).unwrap());
        }
        r
    }

    #[test]
    fn rfc_example_accept() {
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let a = accept(&req(&[]), &HandshakeConfig::default()).unwrap();
        assert_eq!(a.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(a.protocol.is_none() && a.deflate.is_none());
    }

    #[test]
    fn tokens_any_case() {
        let r = with(with(req(&[]), "upgrade", Some("WebSocket")), "connection", Some("UPGRADE"));
        assert!(accept(&r, &HandshakeConfig::default()).is_ok());
    }

    #[test]
    fn refusals() {
        let cfg = HandshakeConfig::default();
        let mut post = req(&[]);
        *post.method_mut() = http::Method::POST;
        assert_eq!(accept(&post, &cfg).unwrap_err(), HandshakeError::Method);
        let mut old = req(&[]);
        *old.version_mut() = http::Version::HTTP_10;
        assert_eq!(accept(&old, &cfg).unwrap_err(), HandshakeError::HttpVersion);
        assert_eq!(
            accept(&with(req(&[]), "host", None), &cfg).unwrap_err(),
            HandshakeError::MissingHost
        );
        assert_eq!(accept(&with(req(&[]), "upgrade", None), &cfg).unwrap_err(), HandshakeError::Upgrade);
        assert_eq!(
            accept(&with(req(&[]), "upgrade", Some("h2c")), &cfg).unwrap_err(),
            HandshakeError::Upgrade
        );
        assert_eq!(
            accept(&with(req(&[]), "connection", Some("close")), &cfg).unwrap_err(),
            HandshakeError::Connection
        );
        assert_eq!(
            accept(&with(req(&[]), "sec-websocket-version", Some("8")), &cfg).unwrap_err(),
            HandshakeError::Version
        );
        assert_eq!(
            accept(&with(req(&[]), "sec-websocket-version", None), &cfg).unwrap_err(),
            HandshakeError::Version
        );
        assert_eq!(
            accept(&with(req(&[]), "sec-websocket-key", None), &cfg).unwrap_err(),
            HandshakeError::Key
        );
        assert_eq!(
            accept(&with(req(&[]), "sec-websocket-key", Some("c2hvcnQ=")), &cfg).unwrap_err(),
            HandshakeError::Key
        );
        assert_eq!(
            accept(&with(req(&[]), "sec-websocket-key", Some("not base64!!")), &cfg).unwrap_err(),
            HandshakeError::Key
        );
        assert_eq!(HandshakeError::Version.status(), 426);
        assert_eq!(HandshakeError::Origin.status(), 403);
        assert_eq!(HandshakeError::Key.status(), 400);
    }

    #[test]
    fn origins() {
        let same = HandshakeConfig::default();
        assert!(accept(&req(&[("Origin", "http://example.com:8000")]), &same).is_ok());
        assert_eq!(
            accept(&req(&[("Origin", "http://evil.com")]), &same).unwrap_err(),
            HandshakeError::Origin
        );
        assert_eq!(accept(&req(&[("Origin", "null")]), &same).unwrap_err(), HandshakeError::Origin);
        let pats = HandshakeConfig {
            origins: OriginPolicy::from_list(&["https://*.example.com".into()]),
            ..Default::default()
        };
        assert!(accept(&req(&[("Origin", "https://app.Example.com")]), &pats).is_ok());
        assert!(accept(&req(&[("Origin", "https://example.org")]), &pats).is_err());
        let any = HandshakeConfig {
            origins: OriginPolicy::from_list(&["*".into()]),
            ..Default::default()
        };
        assert!(accept(&req(&[("Origin", "https://whatever")]), &any).is_ok());
    }

    #[test]
    fn subprotocol_and_deflate() {
        let cfg = HandshakeConfig {
            protocols: vec!["centrifuge-protobuf".into()],
            deflate: Some(DeflateConfig::default()),
            ..Default::default()
        };
        let r = req(&[
            ("Sec-WebSocket-Protocol", "foo, centrifuge-protobuf"),
            ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"),
        ]);
        let a = accept(&r, &cfg).unwrap();
        assert_eq!(a.protocol.as_deref(), Some("centrifuge-protobuf"));
        let h = a.response_headers();
        assert_eq!(h["sec-websocket-protocol"], "centrifuge-protobuf");
        assert!(h["sec-websocket-extensions"].to_str().unwrap().starts_with("permessage-deflate"));
        let a = accept(&req(&[("Sec-WebSocket-Protocol", "foo")]), &cfg).unwrap();
        assert!(a.protocol.is_none());
        assert!(!a.response_headers().contains_key("sec-websocket-protocol"));
    }

    #[test]
    fn client_round_trip() {
        let cr = client_request("h:1", "/", &["p"], Some(DeflateConfig::default()), [7; 16]);
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut parsed = httparse::Request::new(&mut headers);
        parsed.parse(&cr.bytes).unwrap();
        let mut b = http::Request::get(parsed.path.unwrap());
        for h in parsed.headers.iter() {
            b = b.header(h.name, h.value);
        }
        let cfg = HandshakeConfig {
            protocols: vec!["p".into()],
            deflate: Some(DeflateConfig::default()),
            ..Default::default()
        };
        let a = accept(&b.body(()).unwrap(), &cfg).unwrap();
        let ca = verify_response(101, &a.response_headers(), &cr, Some(DeflateConfig::default())).unwrap();
        assert_eq!(ca.protocol.as_deref(), Some("p"));
        assert!(ca.deflate.unwrap().server_no_context_takeover);
        assert_eq!(
            verify_response(400, &a.response_headers(), &cr, None).unwrap_err(),
            ClientHandshakeError::Status(400)
        );
    }
}
