//! Reading request bodies: the one implementation behind every endpoint that reads one
//! (`/api`, `/admin/login`, the admin API, `/emulation`, the HTTP transports' connect).
//!
//! Why a deadline on every body: hyper's `header_read_timeout` ends at the blank line after
//! the headers; a client that then announces a body and sends one byte every few seconds
//! (or none) held its connection, its descriptor and its task forever, without any
//! authentication (issue #26). Centrifugo's Go server bounds the whole request with its
//! read timeout; here the body gets `http_server.read_timeout` from the end of the headers
//! (`http_api.body_timeout` for `/api`, which had it first). The size limit is checked
//! before reading (an announced `Content-Length` over it is refused at once) and while
//! reading (a chunked body is cut at the first byte over it), so nothing larger than the
//! limit is ever buffered.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Limited};

use crate::response::Body;

/// The setting named in a 408's body (besides `/api`'s own).
pub(crate) const READ_TIMEOUT_KEY: &str = "http_server.read_timeout";

/// Why a body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Larger than the endpoint's limit (413).
    TooLarge,
    /// Not received within the deadline (408).
    Timeout,
    /// The connection failed or the framing was broken (400).
    Broken,
}

impl BodyError {
    /// The answer to a body that was not read. It always carries `Connection: close`: the
    /// rest of the body is still on the connection, which cannot serve another request.
    /// `timeout_key` names the deadline's setting in a 408's message.
    pub fn response(self, timeout_key: &str) -> Response<Body> {
        let (status, message) = match self {
            BodyError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "request body too large".to_string()),
            BodyError::Timeout => (
                StatusCode::REQUEST_TIMEOUT,
                format!("request body not received within {timeout_key}"),
            ),
            BodyError::Broken => (StatusCode::BAD_REQUEST, "request body not received whole".to_string()),
        };
        let mut r = Response::new(http_body_util::Full::new(Bytes::from(format!("{message}\n"))).boxed());
        *r.status_mut() = status;
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        r
    }
}

/// Reads a whole body of at most `max` bytes within `deadline` (`None`: no deadline).
pub async fn read<B>(body: B, max: usize, deadline: Option<Duration>) -> Result<Bytes, BodyError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // An announced length over the limit: refused before a byte is read.
    if usize::try_from(body.size_hint().lower()).map_or(true, |n| n > max) {
        return Err(BodyError::TooLarge);
    }
    let collect = async {
        Limited::new(body, max).collect().await.map(|c| c.to_bytes()).map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                BodyError::TooLarge
            } else {
                BodyError::Broken
            }
        })
    };
    match deadline {
        Some(t) => tokio::time::timeout(t, collect).await.unwrap_or(Err(BodyError::Timeout)),
        None => collect.await,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A body that sends `first`, then never ends (a client that stopped sending).
    fn stalled(first: &'static [u8]) -> impl hyper::body::Body<Data = Bytes, Error = std::convert::Infallible> {
        use futures_util::StreamExt as _;
        let frames =
            futures_util::stream::iter([Ok(hyper::body::Frame::data(Bytes::from_static(first)))]).chain(futures_util::stream::pending());
        http_body_util::StreamBody::new(frames)
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_size_and_whole_bodies() {
        let t = Some(Duration::from_secs(10));
        let full = |b: &'static [u8]| http_body_util::Full::new(Bytes::from_static(b));
        assert_eq!(read(full(b"hello"), 5, t).await.unwrap(), Bytes::from_static(b"hello"));
        assert_eq!(read(full(b"hello!"), 5, t).await, Err(BodyError::TooLarge), "announced length");
        assert_eq!(read(stalled(b"abc"), 2, t).await, Err(BodyError::TooLarge), "while reading");
        let started = tokio::time::Instant::now();
        assert_eq!(read(stalled(b"a"), 100, t).await, Err(BodyError::Timeout));
        assert_eq!(started.elapsed(), Duration::from_secs(10), "at the deadline, not before");
        for (e, status) in [(BodyError::TooLarge, 413), (BodyError::Timeout, 408), (BodyError::Broken, 400)] {
            let r = e.response("x");
            assert_eq!(r.status().as_u16(), status);
            assert_eq!(r.headers()[header::CONNECTION], "close");
        }
    }
}
