//! The client side of the HTTP transports (HTTP-streaming, SSE): the reading of a stream's
//! chunked body, and the pongs sent through `POST /emulation`.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The pongs of HTTP-transport clients: the wshub protocol's pong is an empty command
/// (`{}`), which an emulated session receives through `POST /emulation`. One kept-alive
/// connection carries them all, pipelined (10,000 clients pinged every 25 s make 400
/// requests a second); its answers are read and dropped.
#[derive(Default)]
pub(super) struct Pongs(std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<Vec<u8>>>);

impl Pongs {
    pub(super) fn send(&self, addr: SocketAddr, request: Vec<u8>) {
        let tx = self.0.get_or_init(|| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(pong_task(addr, rx));
            tx
        });
        let _ = tx.send(request);
    }
}

/// Writes each request on one connection, connecting again (once per request) when it
/// broke; ends with the run (the last sender dropped).
async fn pong_task(addr: SocketAddr, mut rx: tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
    let mut conn: Option<tokio::net::tcp::OwnedWriteHalf> = None;
    while let Some(req) = rx.recv().await {
        for _ in 0..2 {
            if conn.is_none() {
                let Ok(s) = TcpStream::connect(addr).await else { break };
                let _ = s.set_nodelay(true);
                let (mut r, w) = s.into_split();
                tokio::spawn(async move {
                    let mut b = [0u8; 4096];
                    while matches!(r.read(&mut b).await, Ok(n) if n > 0) {}
                });
                conn = Some(w);
            }
            if let Some(w) = conn.as_mut() {
                if w.write_all(&req).await.is_ok() {
                    break;
                }
            }
            conn = None;
        }
    }
}

/// The `POST /emulation` that carries a pong for the session of a connect reply (`None`
/// if the reply names no session).
pub(super) fn pong_request(host: &str, connect_reply: &[u8]) -> Option<Vec<u8>> {
    let v: serde_json::Value = serde_json::from_slice(connect_reply).ok()?;
    let (session, node) = (v["connect"]["session"].as_str()?, v["connect"]["node"].as_str()?);
    let body = serde_json::json!({"session": session, "node": node, "data": "{}"}).to_string();
    Some(
        format!(
            "POST /emulation HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

/// The receiving side of an HTTP transport: a chunked response body, split into lines
/// (SSE: the `data:` lines).
#[derive(Default)]
pub(super) struct HttpRead {
    sse: bool,
    pub(super) raw: Vec<u8>,
    body: Vec<u8>,
    pub(super) ended: bool,
}

impl HttpRead {
    /// `raw`: what came after the response head.
    pub(super) fn new(sse: bool, raw: Vec<u8>) -> HttpRead {
        HttpRead {
            sse,
            raw,
            ..Default::default()
        }
    }

    /// Moves every whole chunk of `raw` into `body`.
    pub(super) fn decode(&mut self) {
        loop {
            let Some(eol) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let size_text = String::from_utf8_lossy(&self.raw[..eol]);
            let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16) else {
                self.ended = true;
                return;
            };
            if size == 0 {
                self.ended = true;
                return;
            }
            if self.raw.len() < eol + 2 + size + 2 {
                return;
            }
            self.body.extend_from_slice(&self.raw[eol + 2..eol + 2 + size]);
            self.raw.drain(..eol + 2 + size + 2);
        }
    }

    /// The next whole message line, if any.
    pub(super) fn line(&mut self) -> Option<bytes::Bytes> {
        loop {
            let i = self.body.iter().position(|b| *b == b'\n')?;
            let line: Vec<u8> = self.body.drain(..=i).take(i).collect();
            let line = if self.sse {
                match line.strip_prefix(b"data: ") {
                    Some(d) => d.to_vec(),
                    None => continue,
                }
            } else {
                line
            };
            if !line.is_empty() {
                return Some(line.into());
            }
        }
    }
}

/// The `Content-Length` of a lower-cased HTTP head (0 without one).
pub(super) fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The length of the first whole HTTP/1.1 response in `buf` (Content-Length framed, as the
/// API answers) and whether it is a 200 without an `"error"`.
pub(super) fn http_answer(buf: &[u8]) -> Option<(usize, bool)> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length = content_length(&head);
    let body = buf.get(head_end..head_end + length)?;
    let ok = head.starts_with("http/1.1 200") && !body.windows(8).any(|w| w == br#""error":"#);
    Some((head_end + length, ok))
}

/// The body of the first whole HTTP/1.1 request in `buf` (Content-Length framed), taken off
/// its front; `None` until all of it has come.
pub(super) fn take_request(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let len = content_length(&String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase());
    let body = buf.get(end..end + len)?.to_vec();
    buf.drain(..end + len);
    Some(body)
}

/// A kept-alive connection to the server API, one call at a time.
pub(super) struct ApiConn {
    stream: TcpStream,
    buf: Vec<u8>,
    host: String,
    key: String,
}

impl ApiConn {
    pub(super) async fn open(port: u16, key: &str) -> anyhow::Result<ApiConn> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let _ = stream.set_nodelay(true);
        Ok(ApiConn {
            stream,
            buf: Vec::with_capacity(4096),
            host: format!("127.0.0.1:{port}"),
            key: key.to_string(),
        })
    }

    /// `POST /api/{method}`: the answer's JSON, or why not (an HTTP error or an `"error"`
    /// in the answer, a batch's replies included).
    pub(super) async fn call(&mut self, method: &str, body: &str) -> anyhow::Result<serde_json::Value> {
        let req = format!(
            "POST /api/{method} HTTP/1.1\r\nHost: {}\r\nX-API-Key: {}\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            self.key,
            body.len()
        );
        self.stream.write_all(req.as_bytes()).await?;
        let mut chunk = [0u8; 16384];
        let (len, ok) = loop {
            if let Some(answer) = http_answer(&self.buf) {
                break answer;
            }
            match self.stream.read(&mut chunk).await? {
                0 => anyhow::bail!("the API closed the connection"),
                n => self.buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head_end = self.buf.windows(4).position(|w| w == b"\r\n\r\n").map_or(0, |i| i + 4);
        let text = String::from_utf8_lossy(&self.buf[head_end..len]).into_owned();
        self.buf.drain(..len);
        if !ok {
            anyhow::bail!("{method} refused: {text}");
        }
        Ok(serde_json::from_str(&text)?)
    }
}
