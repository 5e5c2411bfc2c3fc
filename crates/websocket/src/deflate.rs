//! permessage-deflate (RFC 7692): offer negotiation, compression and inflation.
//!
//! As a server wshub always answers with `server_no_context_takeover` and
//! `client_no_context_takeover`, which RFC 7692 7.1.1.1 and 7.1.1.2 allow a server to add
//! to any offer it accepts. Two consequences that the design relies on:
//! - every outgoing message is compressed on its own, so one compressed frame can be shared
//!   by every connection (see [`crate::PreparedMessage`]);
//! - no connection keeps a deflate or inflate context (tens of KiB each) between messages.
//!
//! The deflate engine is `flate2` on `zlib-rs` (pure Rust): miniz_oxide, flate2's default,
//! cannot lower the window, which `server_max_window_bits` requires.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The bytes that end every sync-flushed deflate block; stripped on send, re-added on receive.
pub const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The server's compression policy, from `websocket.compression*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateConfig {
    /// zlib level, 0 (store) to 9.
    pub level: u32,
    /// Messages shorter than this are sent uncompressed (RSV1 clear).
    pub min_size: usize,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig { level: 1, min_size: 64 }
    }
}

/// What one connection agreed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// Window the server compresses with (8..=15).
    pub server_max_window_bits: u8,
    /// Window the client compresses with (8..=15).
    pub client_max_window_bits: u8,
    pub server_no_context_takeover: bool,
    pub client_no_context_takeover: bool,
    /// Level and minimum size used when this side compresses.
    pub config: DeflateConfig,
}

impl DeflateParams {
    /// The parameters a client offers: no context takeover either way, default windows.
    pub fn client_offer(config: DeflateConfig) -> (Self, &'static str) {
        (
            DeflateParams {
                server_max_window_bits: 15,
                client_max_window_bits: 15,
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                config,
            },
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        )
    }
}

/// One parsed parameter list of a `permessage-deflate` offer.
#[derive(Debug, Default)]
struct Offer {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: offered without a value.
    client_max_window_bits: Option<Option<u8>>,
}

fn parse_bits(v: Option<&str>) -> Result<u8, ()> {
    let v = v.ok_or(())?.trim().trim_matches('"');
    // RFC 7692 7.1.2.1: 1*DIGIT, no leading zero, value 8..15.
    if v.is_empty() || v.starts_with('0') || v.len() > 2 {
        return Err(());
    }
    match v.parse::<u8>() {
        Ok(b @ 8..=15) => Ok(b),
        _ => Err(()),
    }
}

fn parse_offer<'a>(params: impl Iterator<Item = &'a str>) -> Result<Offer, ()> {
    let mut o = Offer::default();
    for p in params {
        let p = p.trim();
        if p.is_empty() {
            continue;
        }
        let (name, value) = match p.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v)),
            None => (p, None),
        };
        // RFC 7692 7.1: an offer with an unknown parameter, a duplicate or a bad value is
        // declined (the server may then accept another offer).
        match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() && !o.server_no_context_takeover => o.server_no_context_takeover = true,
            "client_no_context_takeover" if value.is_none() && !o.client_no_context_takeover => o.client_no_context_takeover = true,
            "server_max_window_bits" if o.server_max_window_bits.is_none() => o.server_max_window_bits = Some(parse_bits(value)?),
            "client_max_window_bits" if o.client_max_window_bits.is_none() => {
                o.client_max_window_bits = Some(match value {
                    None => None,
                    v => Some(parse_bits(v)?),
                })
            }
            _ => return Err(()),
        }
    }
    Ok(o)
}

/// Server side: picks the first acceptable `permessage-deflate` offer among the values of
/// `Sec-WebSocket-Extensions`, returning the agreed parameters and the response header value.
pub fn negotiate<'a>(header_values: impl IntoIterator<Item = &'a str>, config: DeflateConfig) -> Option<(DeflateParams, String)> {
    for value in header_values {
        for ext in value.split(',') {
            let mut parts = ext.split(';');
            let name = parts.next().unwrap_or("").trim();
            if !name.eq_ignore_ascii_case("permessage-deflate") {
                continue;
            }
            let Ok(offer) = parse_offer(parts) else {
                continue;
            };
            let server_bits = offer.server_max_window_bits.unwrap_or(15);
            let mut response = String::from("permessage-deflate; server_no_context_takeover; client_no_context_takeover");
            if let Some(b) = offer.server_max_window_bits {
                response.push_str(&format!("; server_max_window_bits={b}"));
            }
            let client_bits = match offer.client_max_window_bits {
                Some(Some(b)) => {
                    response.push_str(&format!("; client_max_window_bits={b}"));
                    b
                }
                _ => 15,
            };
            return Some((
                DeflateParams {
                    server_max_window_bits: server_bits,
                    client_max_window_bits: client_bits,
                    server_no_context_takeover: true,
                    client_no_context_takeover: true,
                    config,
                },
                response,
            ));
        }
    }
    None
}

/// Client side: reads the server's answer to [`DeflateParams::client_offer`].
pub fn parse_response(value: &str, config: DeflateConfig) -> Option<DeflateParams> {
    let mut parts = value.split(';');
    if !parts.next()?.trim().eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let o = parse_offer(parts).ok()?;
    Some(DeflateParams {
        server_max_window_bits: o.server_max_window_bits.unwrap_or(15),
        client_max_window_bits: o.client_max_window_bits.flatten().unwrap_or(15),
        server_no_context_takeover: o.server_no_context_takeover,
        client_no_context_takeover: true,
        config,
    })
}

thread_local! {
    // A deflate state costs ~256 KiB to set up; keep one per (window, level) per thread and
    // reset it between messages instead of allocating one per message or per connection.
    static COMPRESSORS: RefCell<Vec<(u8, u32, Compress)>> = const { RefCell::new(Vec::new()) };
}

/// Compresses one whole message with a fresh context and a window of `window_bits`,
/// without the trailing `00 00 ff ff`.
pub fn compress(payload: &[u8], window_bits: u8, level: u32) -> Vec<u8> {
    // zlib (and zlib-rs) refuse a raw 256-byte window. With window 8 the output is stored
    // blocks only (level 0), which contain no back-references and so fit any window.
    let (bits, level) = if window_bits <= 8 {
        (9, 0)
    } else {
        (window_bits.min(15), level.min(9))
    };
    COMPRESSORS.with(|cell| {
        let mut cache = cell.borrow_mut();
        let idx = match cache.iter().position(|(b, l, _)| *b == bits && *l == level) {
            Some(i) => i,
            None => {
                cache.push((bits, level, Compress::new_with_window_bits(Compression::new(level), false, bits)));
                cache.len() - 1
            }
        };
        let c = &mut cache[idx].2;
        c.reset();
        compress_with(c, payload)
    })
}

fn compress_with(c: &mut Compress, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() / 2 + 64);
    let mut pos = 0;
    loop {
        let before_in = c.total_in();
        let rest = payload.get(pos..).unwrap_or(&[]);
        // Compressing into a Vec with spare room cannot fail; a failure would only truncate.
        let status = c.compress_vec(rest, &mut out, FlushCompress::Sync);
        pos += (c.total_in() - before_in) as usize;
        if status.is_err() || (pos >= payload.len() && out.len() < out.capacity()) {
            break;
        }
        let extra = out.capacity().max(64);
        out.reserve(extra);
    }
    if out.ends_with(&TRAILER) {
        out.truncate(out.len() - TRAILER.len());
    }
    out
}

/// Why a compressed message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates to more than the limit.
    TooBig,
    /// It is not valid deflate data.
    Corrupt,
}

/// An inflate context for one direction of one connection. Kept across messages only when
/// the peer uses context takeover; otherwise a fresh one serves each message.
pub struct Inflater {
    inner: Decompress,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Inflater")
    }
}

impl Default for Inflater {
    fn default() -> Self {
        Self::new()
    }
}

impl Inflater {
    /// Inflating with the largest window accepts data made with any smaller one, so the
    /// negotiated `*_max_window_bits` need not be known here.
    pub fn new() -> Self {
        Inflater {
            inner: Decompress::new_with_window_bits(false, 15),
        }
    }

    /// Inflates one message (the trailer is added here), refusing output over `max` bytes.
    pub fn inflate(&mut self, input: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
        let mut out = Vec::with_capacity((input.len() * 3).max(64).min(max.saturating_add(1)));
        self.feed(input, &mut out, max)?;
        self.feed(&TRAILER, &mut out, max)?;
        Ok(out)
    }

    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>, max: usize) -> Result<(), InflateError> {
        let d = &mut self.inner;
        let mut pos = 0;
        loop {
            if out.len() == out.capacity() {
                let room = max.saturating_add(1).saturating_sub(out.len());
                out.reserve(out.capacity().max(64).min(room).max(1));
            }
            let (before_in, before_out) = (d.total_in(), out.len());
            let rest = input.get(pos..).unwrap_or(&[]);
            let status = d
                .decompress_vec(rest, out, FlushDecompress::Sync)
                .map_err(|_| InflateError::Corrupt)?;
            pos += (d.total_in() - before_in) as usize;
            if out.len() > max {
                return Err(InflateError::TooBig);
            }
            if status == Status::StreamEnd || (pos >= input.len() && out.len() < out.capacity()) {
                return Ok(());
            }
            if d.total_in() == before_in && out.len() == before_out && out.len() < out.capacity() {
                return Err(InflateError::Corrupt);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn negotiates_the_first_acceptable_offer() {
        let cfg = DeflateConfig::default();
        let (p, resp) = negotiate(["permessage-deflate; client_max_window_bits"], cfg).unwrap();
        assert_eq!((p.server_max_window_bits, p.client_max_window_bits), (15, 15));
        assert_eq!(resp, "permessage-deflate; server_no_context_takeover; client_no_context_takeover");

        let (p, resp) = negotiate(
            ["permessage-deflate; server_max_window_bits=0, permessage-deflate; server_max_window_bits=10; client_max_window_bits=9"],
            cfg,
        )
        .unwrap();
        assert_eq!((p.server_max_window_bits, p.client_max_window_bits), (10, 9));
        assert!(resp.ends_with("server_max_window_bits=10; client_max_window_bits=9"), "{resp}");

        assert!(negotiate(["x-webkit-deflate-frame"], cfg).is_none());
        assert!(negotiate(["permessage-deflate; foo"], cfg).is_none());
        assert!(negotiate(["permessage-deflate; server_max_window_bits"], cfg).is_none());
        assert!(negotiate(["permessage-deflate; server_max_window_bits=16"], cfg).is_none());
        assert!(negotiate(["permessage-deflate; server_no_context_takeover; server_no_context_takeover"], cfg).is_none());
        assert!(negotiate(["permessage-deflate; client_max_window_bits=\"10\""], cfg).is_some());
    }

    #[test]
    fn rfc_7692_hello() {
        // RFC 7692 7.2.3.1: "Hello" compressed is f2 48 cd c9 c9 07 00.
        let out = Inflater::new().inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 100).unwrap();
        assert_eq!(out, b"Hello");
        // 7.2.3.3: a message in one stored block.
        let out = Inflater::new()
            .inflate(&[0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00], 100)
            .unwrap();
        assert_eq!(out, b"Hello");
    }

    #[test]
    fn limit_and_garbage() {
        let big = vec![b'a'; 100_000];
        let c = compress(&big, 15, 6);
        assert!(c.len() < 1000);
        assert_eq!(Inflater::new().inflate(&c, 99_999), Err(InflateError::TooBig));
        assert_eq!(Inflater::new().inflate(&c, 100_000).unwrap().len(), 100_000);
        assert_eq!(Inflater::new().inflate(&[0xff, 0xff, 0xff, 0xff], 100), Err(InflateError::Corrupt));
    }

    proptest! {
        #[test]
        fn compress_then_inflate(data in proptest::collection::vec(any::<u8>(), 0..5000), bits in 8u8..=15, level in 0u32..=9) {
            let c = compress(&data, bits, level);
            let back = Inflater::new().inflate(&c, data.len()).unwrap();
            prop_assert_eq!(back, data);
        }

        #[test]
        fn inflate_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Inflater::new().inflate(&data, 10_000);
        }
    }
}
