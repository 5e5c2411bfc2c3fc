//! Compression of publication bodies between nodes (`engine.redis.compression`): the bytes
//! kept in history streams and sent through pub/sub. A compressed body is one codec byte
//! and the compressed bytes; it travels under its own stream field (`c`) and pub/sub tag
//! (`c`), so that a node reads what any other node wrote whatever its own setting.
//! Decompression is bounded: the bytes come from Redis, which anyone with access can write.

/// Which codec compresses publication bodies of at least the configured size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Compression {
    #[default]
    None,
    Lz4,
    Zstd,
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "" | "none" => Ok(Compression::None),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd),
            other => Err(format!("{other:?}: must be \"none\", \"lz4\" or \"zstd\"")),
        }
    }
}

const LZ4: u8 = 1;
const ZSTD: u8 = 2;
/// zstd's default level: about lz4's speed class on small inputs, a better ratio.
const ZSTD_LEVEL: i32 = 3;
/// The largest body a compressed one may expand to (a publication is far smaller: the
/// client and API limits bound it).
pub const MAX_DECOMPRESSED: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecompressError {
    #[error("unknown codec {0}")]
    UnknownCodec(u8),
    #[error("empty body")]
    Empty,
    #[error("larger than {MAX_DECOMPRESSED} bytes")]
    TooLarge,
    #[error("corrupt: {0}")]
    Corrupt(String),
}

// One zstd context per thread, reused: making one per call (hundreds of KiB) cost more than
// compressing a small body (measured: 12.8k against 40k publications/s at 73 B).
thread_local! {
    static ZSTD_COMPRESSOR: std::cell::RefCell<std::io::Result<zstd::bulk::Compressor<'static>>> =
        std::cell::RefCell::new(zstd::bulk::Compressor::new(ZSTD_LEVEL));
    static ZSTD_DECOMPRESSOR: std::cell::RefCell<std::io::Result<zstd::bulk::Decompressor<'static>>> =
        std::cell::RefCell::new(zstd::bulk::Decompressor::new());
}

/// `body` compressed with `codec` when it is at least `min_size` bytes long and
/// compression makes it smaller; `None` to keep it as it is.
pub fn compress(codec: Compression, min_size: usize, body: &[u8]) -> Option<Vec<u8>> {
    if body.len() < min_size {
        return None;
    }
    let out = match codec {
        Compression::None => return None,
        Compression::Lz4 => {
            let mut out = vec![LZ4];
            out.extend(lz4_flex::compress_prepend_size(body));
            out
        }
        Compression::Zstd => {
            let mut out = vec![ZSTD];
            out.extend(ZSTD_COMPRESSOR.with(|c| c.borrow_mut().as_mut().ok()?.compress(body).ok())?);
            out
        }
    };
    (out.len() < body.len()).then_some(out)
}

/// The body of a compressed one (codec byte first).
pub fn decompress(blob: &[u8]) -> Result<Vec<u8>, DecompressError> {
    let (&codec, data) = blob.split_first().ok_or(DecompressError::Empty)?;
    match codec {
        LZ4 => {
            let size = data
                .get(..4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_le_bytes)
                .ok_or_else(|| DecompressError::Corrupt("no size".into()))?;
            if usize::try_from(size).map_or(true, |s| s > MAX_DECOMPRESSED) {
                return Err(DecompressError::TooLarge);
            }
            lz4_flex::decompress_size_prepended(data).map_err(|e| DecompressError::Corrupt(e.to_string()))
        }
        ZSTD => ZSTD_DECOMPRESSOR.with(|d| match d.borrow_mut().as_mut() {
            Ok(d) => d
                .decompress(data, MAX_DECOMPRESSED)
                .map_err(|e| DecompressError::Corrupt(e.to_string())),
            Err(e) => Err(DecompressError::Corrupt(e.to_string())),
        }),
        other => Err(DecompressError::UnknownCodec(other)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn json(n: usize) -> Vec<u8> {
        let mut s = String::from("[");
        for i in 0..n {
            s.push_str(&format!("{{\"id\":{i},\"user\":\"user{}\",\"text\":\"hello number {i}\"}},", i % 7));
        }
        s.push_str("{}]");
        s.into_bytes()
    }

    #[test]
    fn round_trips_and_keeps_small_or_incompressible_bodies() {
        let body = json(100);
        for codec in [Compression::Lz4, Compression::Zstd] {
            let c = compress(codec, 0, &body).unwrap();
            assert!(c.len() < body.len() / 2, "{codec:?}: {} of {}", c.len(), body.len());
            assert_eq!(decompress(&c).unwrap(), body);
            assert_eq!(compress(codec, body.len() + 1, &body), None, "under the threshold");
            assert_eq!(compress(codec, 0, b"{}"), None, "not smaller");
        }
        assert_eq!(compress(Compression::None, 0, &body), None);
    }

    #[test]
    fn bad_blobs_are_errors_not_panics_or_bombs() {
        assert_eq!(decompress(b""), Err(DecompressError::Empty));
        assert_eq!(decompress(&[9, 1, 2]), Err(DecompressError::UnknownCodec(9)));
        assert!(matches!(decompress(&[LZ4, 1]), Err(DecompressError::Corrupt(_))));
        assert_eq!(decompress(&[LZ4, 0xff, 0xff, 0xff, 0x7f, 0]), Err(DecompressError::TooLarge));
        assert!(decompress(&[LZ4, 10, 0, 0, 0, 0xff, 0xff]).is_err());
        assert!(decompress(&[ZSTD, 1, 2, 3, 4]).is_err());
        // A zstd frame that claims more than the bound.
        let big = vec![0u8; MAX_DECOMPRESSED + 1];
        let mut blob = vec![ZSTD];
        blob.extend(zstd::bulk::compress(&big, 1).unwrap());
        assert!(decompress(&blob).is_err());
        for codec in [Compression::Lz4, Compression::Zstd] {
            let c = compress(codec, 0, &json(50)).unwrap();
            for cut in [1, c.len() / 2, c.len() - 1] {
                let _ = decompress(&c[..cut]); // no panic
            }
        }
    }

    #[test]
    fn names_parse() {
        assert_eq!("lz4".parse::<Compression>(), Ok(Compression::Lz4));
        assert_eq!("zstd".parse::<Compression>(), Ok(Compression::Zstd));
        assert_eq!("none".parse::<Compression>(), Ok(Compression::None));
        assert!("gzip".parse::<Compression>().is_err());
    }
}
