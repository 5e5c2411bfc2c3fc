//! The streaming endpoints of the HTTP transports served outside hyper.
//!
//! A stream lives for hours; inside hyper it keeps hyper's per-connection read and write
//! buffers (8 KiB each) and two tasks, ten times a WebSocket's idle memory (BENCHMARKS.md).
//! A plain-TCP connection whose first request is one of these endpoints is therefore read
//! here (httparse, as the WebSocket handshake is), answered with the same code as the hyper
//! path (`crate::transports::open_stream`), and its chunked body written straight to the socket
//! by the session's loop in the connection's own task (one task, no channel per stream).
//! Anything else, a request that arrives in pieces too small to tell, a kept-alive
//! connection's later requests and TLS stay with hyper.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::stream::Out;
use crate::admission::{add_cors, check_origin};
use crate::endpoints::Endpoints;
use crate::endpoints::{HTTP_STREAM_PATH, SSE_PATH, UNI_HTTP_STREAM_PATH};
use crate::response::Body;
use crate::state::Shared;
use crate::transports::{open_stream, stream_headers};

/// Largest request head read here.
const MAX_HEAD: usize = 16 * 1024;
/// Bound on one write when `websocket.write_timeout` is off.
const WRITE_LIMIT: Duration = Duration::from_secs(10);

/// The canonical path of the streaming endpoint of `endpoints` that the first bytes of a
/// connection ask for, if they are its request line.
pub fn wants(endpoints: &Endpoints, first: &[u8]) -> Option<&'static str> {
    let method_of = |canonical: &str| match canonical {
        HTTP_STREAM_PATH | UNI_HTTP_STREAM_PATH => &["POST"][..],
        SSE_PATH => &["GET"][..],
        _ => &["GET", "POST"][..],
    };
    endpoints.streams().find_map(|(path, canonical)| {
        method_of(canonical)
            .iter()
            .any(|method| {
                first.len() > method.len() + 1 + path.len() && {
                    let (m, rest) = first.split_at(method.len());
                    m == method.as_bytes()
                        && rest.first() == Some(&b' ')
                        && rest[1..].starts_with(path.as_bytes())
                        && matches!(rest.get(1 + path.len()), Some(b' ' | b'?'))
                }
            })
            .then_some(canonical)
    })
}

/// Serves one connection whose first request [`wants`] said is ours.
/// `canonical` is its endpoint's canonical path (whatever path the configuration gives it).
pub async fn serve(stream: TcpStream, shared: Arc<Shared>, canonical: &'static str, peer: SocketAddr) {
    let wt = shared.config.write_timeout.unwrap_or(WRITE_LIMIT);
    // Everything before the stream is boxed and gone once the stream runs: held inline,
    // its buffers and the request's headers would stay in this task for hours.
    let Some((stream, chunks)) = Box::pin(open(stream, shared, canonical, peer, wt)).await else {
        return;
    };
    chunks.serve(RawOut { stream, write_timeout: wt }).await;
}

/// Reads the request, opens the session and writes the response head; `None` when the
/// request was answered otherwise (and the connection closed).
async fn open(
    mut stream: TcpStream,
    shared: Arc<Shared>,
    canonical: &'static str,
    peer: SocketAddr,
    wt: Duration,
) -> Option<(TcpStream, crate::transport::stream::StreamBody)> {
    let c = &shared.config;
    let read = read_request(&mut stream, c.emulation.max_request_body_size, c.handshake_timeout, c.read_timeout);
    let request = match read.await {
        Ok(r) => r,
        Err(refusal) => return write_response(&mut stream, refusal).await,
    };
    let (parts, body) = request;
    let path = canonical;
    let origin = match check_origin(&parts.headers, &shared, path, peer) {
        Ok(o) => o,
        Err(r) => return write_response(&mut stream, r).await,
    };
    let (chunks, content_type) = match open_stream(&shared, path, &parts, body, peer).await {
        Ok(s) => s,
        Err(mut r) => {
            add_cors(&mut r, origin.as_deref(), &shared);
            return write_response(&mut stream, r).await;
        }
    };
    let mut r = http::Response::new(http_body_util::Empty::<Bytes>::new().boxed());
    add_cors(&mut r, origin.as_deref(), &shared);
    let mut head = String::from("HTTP/1.1 200 OK\r\n");
    for (k, v) in stream_headers(content_type) {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    for (k, v) in r.headers() {
        head.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap_or("")));
    }
    head.push_str("transfer-encoding: chunked\r\nconnection: close\r\n\r\n");
    if !write(&mut stream, head.as_bytes(), wt).await {
        return None;
    }
    Some((stream, chunks))
}

/// The socket as a stream's output: chunked transfer encoding written straight to it.
struct RawOut {
    stream: TcpStream,
    write_timeout: Duration,
}

impl Out for RawOut {
    async fn write(&mut self, chunks: Vec<Bytes>) -> bool {
        if chunks.is_empty() {
            return true;
        }
        // Everything gathered goes out in one write; an idle stream keeps no buffer.
        let mut out = Vec::with_capacity(chunks.iter().map(|c| c.len() + 12).sum());
        for c in chunks.iter().filter(|c| !c.is_empty()) {
            out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            out.extend_from_slice(c);
            out.extend_from_slice(b"\r\n");
        }
        write(&mut self.stream, &out, self.write_timeout).await
    }

    /// The client sends nothing more on a stream: a read that ends is it leaving.
    async fn gone(&mut self) {
        let mut probe = [0u8; 1];
        let _ = self.stream.read(&mut probe).await;
    }

    /// The last chunk; the connection closes after it.
    async fn finish(&mut self) {
        let _ = write(&mut self.stream, b"0\r\n\r\n", self.write_timeout).await;
    }
}

async fn write(stream: &mut TcpStream, data: &[u8], limit: Duration) -> bool {
    matches!(tokio::time::timeout(limit, stream.write_all(data)).await, Ok(Ok(())))
}

fn plain(status: http::StatusCode, message: &str) -> http::Response<Body> {
    let mut r = http::Response::new(http_body_util::Full::new(Bytes::from(format!("{message}\n"))).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Writes a whole (short) answer and closes; `None`, for [`open`].
async fn write_response<T>(stream: &mut TcpStream, r: http::Response<Body>) -> Option<T> {
    let (parts, body) = r.into_parts();
    let body = match tokio::time::timeout(WRITE_LIMIT, body.collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        _ => Bytes::new(),
    };
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        parts.status.as_u16(),
        parts.status.canonical_reason().unwrap_or("")
    );
    for (k, v) in parts.headers.iter().filter(|(k, _)| *k != http::header::CONNECTION) {
        head.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap_or("")));
    }
    head.push_str(&format!("content-length: {}\r\nconnection: close\r\n\r\n", body.len()));
    let mut all = head.into_bytes();
    all.extend_from_slice(&body);
    let _ = write(stream, &all, WRITE_LIMIT).await;
    let _ = stream.shutdown().await;
    None
}

/// Reads a request head (within `head_deadline`, as hyper's `header_read_timeout`) and its
/// `Content-Length` body (at most `max_body` bytes, within `body_deadline` from the end of
/// the head, as [`crate::body::read`] on the hyper path).
async fn read_request(
    stream: &mut TcpStream,
    max_body: usize,
    head_deadline: Duration,
    body_deadline: Option<Duration>,
) -> Result<(http::request::Parts, Bytes), http::Response<Body>> {
    let mut buf = Vec::with_capacity(1024);
    let (head_len, parts, content_length) = match tokio::time::timeout(head_deadline, read_head(stream, &mut buf)).await {
        Ok(r) => r?,
        Err(_) => return Err(plain(http::StatusCode::REQUEST_TIMEOUT, "request not received in time")),
    };
    use crate::body::BodyError;
    let refuse = |e: BodyError| e.response(crate::body::READ_TIMEOUT_KEY);
    if content_length > max_body {
        return Err(refuse(BodyError::TooLarge));
    }
    let mut body = buf.split_off(head_len);
    let rest = async {
        let mut chunk = [0u8; 4096];
        while body.len() < content_length {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return Err(BodyError::Broken),
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
        }
        Ok(())
    };
    let read = match body_deadline {
        Some(t) => tokio::time::timeout(t, rest).await.unwrap_or(Err(BodyError::Timeout)),
        None => rest.await,
    };
    read.map_err(refuse)?;
    body.truncate(content_length);
    Ok((parts, Bytes::from(body)))
}

/// Reads until `buf` holds a whole request head: its length, the request and the body's
/// length (judged by [`crate::framing`]).
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(usize, http::request::Parts, usize), http::Response<Body>> {
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|_| plain(http::StatusCode::BAD_REQUEST, "read error"))?;
        if n == 0 {
            return Err(plain(http::StatusCode::BAD_REQUEST, "connection closed before the request ended"));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(len)) => {
                let length = crate::framing::raw_body_length(req.headers.iter().map(|h| (h.name, h.value))).map_err(|e| {
                    let (status, why) = e.answer();
                    plain(status, why)
                })?;
                // Past `usize` is past any limit.
                let length = usize::try_from(length).unwrap_or(usize::MAX);
                let mut b = http::Request::builder()
                    .method(req.method.unwrap_or("GET"))
                    .uri(req.path.unwrap_or("/"));
                for h in req.headers.iter() {
                    b = b.header(h.name, h.value);
                }
                let parts = b
                    .body(())
                    .map_err(|_| plain(http::StatusCode::BAD_REQUEST, "malformed request"))?
                    .into_parts()
                    .0;
                return Ok((len, parts, length));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Partial) => {
                return Err(plain(http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large"))
            }
            Err(_) => return Err(plain(http::StatusCode::BAD_REQUEST, "malformed request")),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn request_lines_that_are_ours() {
        let mut c = crate::config::Config::default();
        c.http_stream.enabled = true;
        c.sse.enabled = true;
        let (e, _) = crate::endpoints::plan(&c).unwrap();
        assert!(e.any_stream());
        assert_eq!(wants(&e, b"POST /connection/http_stream HTTP/1.1\r\n"), Some(HTTP_STREAM_PATH));
        assert_eq!(wants(&e, b"GET /connection/sse?cf_connect=%7B HTTP/1.1\r\n"), Some(SSE_PATH));
        assert_eq!(
            wants(&e, b"GET /connection/http_stream HTTP/1.1\r\n"),
            None,
            "wrong method: hyper answers 405"
        );
        assert_eq!(wants(&e, b"POST /connection/http_streamx HTTP/1.1\r\n"), None);
        assert_eq!(wants(&e, b"POST /connection/http_str"), None, "too short to tell: hyper");
        assert_eq!(wants(&e, b"POST /connection/uni_http_stream HTTP/1.1\r\n"), None, "not enabled");
        assert_eq!(wants(&e, b"OPTIONS /connection/http_stream HTTP/1.1\r\n"), None);
        c.sse.handler_prefix = "/events".into();
        let (e, _) = crate::endpoints::plan(&c).unwrap();
        assert_eq!(
            wants(&e, b"GET /events?cf_connect=%7B HTTP/1.1\r\n"),
            Some(SSE_PATH),
            "at its configured path"
        );
        assert_eq!(wants(&e, b"GET /connection/sse?cf_connect=%7B HTTP/1.1\r\n"), None);
        let (e, _) = crate::endpoints::plan(&crate::config::Config::default()).unwrap();
        assert!(!e.any_stream());
    }
}
