//! Fossil delta encoding (the format of Fossil SCM's `delta.c`, which Centrifugo and its
//! SDKs use for delta compression of publications), written here from the format's
//! description.
//!
//! A delta is text: the target's length as a base-64 integer and `\n`, then commands,
//! `N@O,` (copy N bytes of the source from offset O), `N:bytes` (insert N literal bytes)
//! and finally `C;` (the target's checksum). Deltas of text are text, except that a copy
//! may cut a multi-byte UTF-8 character (the JSON format checks for that).
//!
//! [`create`] finds copies through a rolling hash of 16-byte source blocks, as the
//! original does; [`apply`] reads through a bounds-checked cursor and answers a
//! [`DeltaError`] for any malformed or lying delta, never a panic.

const NHASH: usize = 16;
/// Candidate source blocks tried per target position (the original's bound on work).
const MAX_CANDIDATES: usize = 250;

const DIGITS: &[u8; 64] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~";

fn digit_value(c: u8) -> Option<u32> {
    let v = match c {
        b'0'..=b'9' => c - b'0',
        b'A'..=b'Z' => c - b'A' + 10,
        b'_' => 36,
        b'a'..=b'z' => c - b'a' + 37,
        b'~' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

fn put_int(mut v: usize, out: &mut Vec<u8>) {
    let mut buf = [0u8; 12];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = DIGITS[v & 63];
        v >>= 6;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

fn digit_count(v: usize) -> usize {
    let mut n = 1;
    let mut x = v >> 6;
    while x > 0 {
        n += 1;
        x >>= 6;
    }
    n
}

/// The delta's checksum of the target: the wrapping sum of its big-endian 32-bit words,
/// the last one padded with zeros.
pub fn checksum(data: &[u8]) -> u32 {
    let mut sum = 0u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        sum = sum.wrapping_add(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 4];
        w[..rest.len()].copy_from_slice(rest);
        sum = sum.wrapping_add(u32::from_be_bytes(w));
    }
    sum
}

/// Adler-like rolling hash over a window of [`NHASH`] bytes.
struct Rolling {
    a: u16,
    b: u16,
    window: [u8; NHASH],
    pos: usize,
}

impl Rolling {
    fn new(z: &[u8]) -> Self {
        let mut window = [0u8; NHASH];
        window.copy_from_slice(&z[..NHASH]);
        let mut a = u16::from(z[0]);
        let mut b = a;
        for &c in &z[1..NHASH] {
            a = a.wrapping_add(u16::from(c));
            b = b.wrapping_add(a);
        }
        Rolling { a, b, window, pos: 0 }
    }

    fn push(&mut self, c: u8) {
        let old = self.window[self.pos];
        self.window[self.pos] = c;
        self.pos = (self.pos + 1) % NHASH;
        self.a = self.a.wrapping_sub(u16::from(old)).wrapping_add(u16::from(c));
        self.b = self
            .b
            .wrapping_sub((NHASH as u16).wrapping_mul(u16::from(old)))
            .wrapping_add(self.a);
    }

    fn value(&self) -> u32 {
        u32::from(self.a) | (u32::from(self.b) << 16)
    }
}

/// The delta that turns `source` into `target`.
pub fn create(source: &[u8], target: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    put_int(target.len(), &mut out);
    out.push(b'\n');
    if source.len() <= NHASH {
        if !target.is_empty() {
            put_int(target.len(), &mut out);
            out.push(b':');
            out.extend_from_slice(target);
        }
        put_int(checksum(target) as usize, &mut out);
        out.push(b';');
        return out;
    }
    // Index the source's blocks: `landmark[h]` is the last block with hash h, `collide[i]`
    // the block before i with the same hash.
    let n_hash = source.len() / NHASH;
    let mut collide = vec![usize::MAX; n_hash];
    let mut landmark = vec![usize::MAX; n_hash];
    let mut i = 0;
    while i + NHASH <= source.len() && i / NHASH < n_hash {
        let hv = Rolling::new(&source[i..]).value() as usize % n_hash;
        collide[i / NHASH] = landmark[hv];
        landmark[hv] = i / NHASH;
        i += NHASH;
    }

    let mut base = 0;
    while base + NHASH < target.len() {
        let mut hash = Rolling::new(&target[base..]);
        let mut i = 0;
        loop {
            let mut best: Option<(usize, usize, usize)> = None; // (count, offset, literal)
            let mut block = landmark[hash.value() as usize % n_hash];
            let mut tries = 0;
            while block != usize::MAX && tries < MAX_CANDIDATES {
                tries += 1;
                let src_at = block * NHASH;
                let tgt_at = base + i;
                // Forward match from the block's start.
                let fwd = source[src_at..].iter().zip(&target[tgt_at..]).take_while(|(a, b)| a == b).count();
                // Backward match, not past `base` nor the source's start.
                let back = source[..src_at]
                    .iter()
                    .rev()
                    .zip(target[base..tgt_at].iter().rev())
                    .take_while(|(a, b)| a == b)
                    .count();
                let offset = src_at - back;
                let count = fwd + back;
                let literal = i - back;
                let cost = digit_count(literal) + digit_count(count) + digit_count(offset) + 3;
                if count >= cost && best.is_none_or(|(c, _, _)| count > c) {
                    best = Some((count, offset, literal));
                }
                block = collide[block];
            }
            if let Some((count, offset, literal)) = best {
                if literal > 0 {
                    put_int(literal, &mut out);
                    out.push(b':');
                    out.extend_from_slice(&target[base..base + literal]);
                    base += literal;
                }
                base += count;
                put_int(count, &mut out);
                out.push(b'@');
                put_int(offset, &mut out);
                out.push(b',');
                break;
            }
            if base + i + NHASH >= target.len() {
                // No match up to the end: the rest goes in literally.
                put_int(target.len() - base, &mut out);
                out.push(b':');
                out.extend_from_slice(&target[base..]);
                base = target.len();
                break;
            }
            hash.push(target[base + i + NHASH]);
            i += 1;
        }
    }
    if base < target.len() {
        put_int(target.len() - base, &mut out);
        out.push(b':');
        out.extend_from_slice(&target[base..]);
    }
    put_int(checksum(target) as usize, &mut out);
    out.push(b';');
    out
}

/// A delta that cannot be applied to the source given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    #[error("delta: size not terminated by a newline")]
    BadHeader,
    #[error("delta: copy outside the source")]
    CopyOutOfRange,
    #[error("delta: insert past the end of the delta")]
    InsertOutOfRange,
    #[error("delta: output larger than its declared size")]
    TooLarge,
    #[error("delta: output size differs from the declared one")]
    SizeMismatch,
    #[error("delta: bad checksum")]
    BadChecksum,
    #[error("delta: unknown operator")]
    BadOperator,
    #[error("delta: not terminated")]
    Unterminated,
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn int(&mut self) -> usize {
        let mut v: usize = 0;
        while let Some(d) = self.data.get(self.pos).and_then(|c| digit_value(*c)) {
            v = v.saturating_mul(64).saturating_add(d as usize);
            self.pos += 1;
        }
        v
    }

    fn byte(&mut self) -> Option<u8> {
        let b = self.data.get(self.pos).copied();
        self.pos += usize::from(b.is_some());
        b
    }

    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
}

/// Applies `delta` to `source`. The output is never larger than the size the delta
/// declares, and that size is checked against `max_size` before anything is allocated.
pub fn apply(source: &[u8], delta: &[u8], max_size: usize) -> Result<Vec<u8>, DeltaError> {
    let mut r = Cursor { data: delta, pos: 0 };
    let limit = r.int();
    if r.byte() != Some(b'\n') {
        return Err(DeltaError::BadHeader);
    }
    if limit > max_size {
        return Err(DeltaError::TooLarge);
    }
    let mut out = Vec::with_capacity(limit);
    while r.pos < delta.len() {
        let count = r.int();
        match r.byte() {
            Some(b'@') => {
                let offset = r.int();
                if r.byte() != Some(b',') {
                    return Err(DeltaError::BadOperator);
                }
                if out.len().saturating_add(count) > limit {
                    return Err(DeltaError::TooLarge);
                }
                let end = offset.checked_add(count).ok_or(DeltaError::CopyOutOfRange)?;
                let s = source.get(offset..end).ok_or(DeltaError::CopyOutOfRange)?;
                out.extend_from_slice(s);
            }
            Some(b':') => {
                if out.len().saturating_add(count) > limit {
                    return Err(DeltaError::TooLarge);
                }
                let s = r.take(count).ok_or(DeltaError::InsertOutOfRange)?;
                out.extend_from_slice(s);
            }
            Some(b';') => {
                if count as u64 != u64::from(checksum(&out)) {
                    return Err(DeltaError::BadChecksum);
                }
                if out.len() != limit {
                    return Err(DeltaError::SizeMismatch);
                }
                return Ok(out);
            }
            _ => return Err(DeltaError::BadOperator),
        }
    }
    Err(DeltaError::Unterminated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_small_delta() {
        // A source too short to index: the whole target is inserted.
        let d = create(b"abc", b"abcdef");
        assert_eq!(apply(b"abc", &d, 100).unwrap(), b"abcdef");
        assert!(d.starts_with(b"6\n6:abcdef"));
    }

    #[test]
    fn one_percent_change_is_small() {
        let doc: Vec<u8> = (0..10_000)
            .map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789"[(i * 7 + i / 13) % 36])
            .collect();
        let mut changed = doc.clone();
        for i in (0..changed.len()).step_by(100) {
            changed[i] = b'#';
        }
        let d = create(&doc, &changed);
        assert_eq!(apply(&doc, &d, usize::MAX).unwrap(), changed);
        assert!(d.len() < changed.len() / 4, "delta of {} bytes", d.len());
    }

    #[test]
    fn malformed_deltas_are_errors() {
        let src = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let good = create(src, b"0123456789abcdefghijklmnopqrstuvwxyZ!");
        assert!(apply(src, &good, 1000).is_ok());
        for cut in 0..good.len() {
            assert!(apply(src, &good[..cut], 1000).is_err(), "prefix {cut}");
        }
        assert_eq!(apply(src, b"5\n5@100,0;", 1000), Err(DeltaError::CopyOutOfRange));
        assert_eq!(apply(src, b"5\n9:ab", 1000), Err(DeltaError::TooLarge));
        assert_eq!(apply(src, b"~~~~~~~~~~~~~~~~~~\n", 1000), Err(DeltaError::TooLarge));
        assert_eq!(apply(src, b"1\n1:a0;", 1000), Err(DeltaError::BadChecksum));
        assert_eq!(apply(src, b"1\n1?a", 1000), Err(DeltaError::BadOperator));
        assert_eq!(apply(src, b"1", 1000), Err(DeltaError::BadHeader));
    }

    #[test]
    fn checksum_matches_the_word_sum() {
        assert_eq!(checksum(b""), 0);
        assert_eq!(checksum(b"a"), 0x6100_0000);
        assert_eq!(checksum(b"abcde"), 0x6162_6364u32.wrapping_add(0x6500_0000));
    }

    proptest! {
        #[test]
        fn apply_inverts_create(src in proptest::collection::vec(any::<u8>(), 0..600), tgt in proptest::collection::vec(any::<u8>(), 0..600)) {
            let d = create(&src, &tgt);
            prop_assert_eq!(apply(&src, &d, tgt.len()).unwrap(), tgt);
        }

        #[test]
        fn apply_inverts_create_on_edits(src in proptest::collection::vec(0u8..4, 0..2000), edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..20)) {
            let mut tgt = src.clone();
            for (at, b) in edits {
                if tgt.is_empty() { tgt.push(b); continue; }
                let at = at % tgt.len();
                match b % 3 { 0 => tgt[at] = b, 1 => { tgt.remove(at); }, _ => tgt.insert(at, b) }
            }
            let d = create(&src, &tgt);
            prop_assert_eq!(apply(&src, &d, usize::MAX).unwrap(), tgt);
        }

        #[test]
        fn apply_never_panics(src in proptest::collection::vec(any::<u8>(), 0..64), delta in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = apply(&src, &delta, 4096);
        }
    }
}
