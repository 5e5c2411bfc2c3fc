//! Delta compression of publications (`delta: "fossil"` in subscribe), as Centrifugo does it.
//!
//! A subscriber that negotiated delta gets its first publication whole, then each one as a
//! Fossil delta ([`wshub_protocol::fossil`]) against the one before, with
//! `Publication.delta = true`; a delta no smaller than the data is sent whole instead.
//! On a JSON connection the data (whole or delta) travels as a JSON *string* holding the
//! bytes, which the SDKs decode with `TextEncoder` / `str.encode`: a delta that cuts a UTF-8
//! character cannot be written so and is sent whole too.
//!
//! Live publications are encoded once per channel in the hub (`crate::hub`); the
//! publications recovered at subscribe are encoded here for that subscriber
//! ([`recovered`]).
//!
//! Inside the node and the engines, `Publication.delta = true` on a publication means
//! "published with delta" (API `delta: true` or the namespace's `delta_publish`): the hub
//! and the history readers ([`clear_marks`]) turn it into the wire meaning.

use bytes::Bytes;
use wshub_protocol::{fossil, Format, Publication};

/// The only delta type there is.
pub const FOSSIL: &str = "fossil";

/// The delta of `data` against `prev`, when smaller than `data`.
pub fn patch(prev: &[u8], data: &[u8]) -> Option<Bytes> {
    let d = fossil::create(prev, data);
    (d.len() < data.len()).then(|| Bytes::from(d))
}

/// Bytes as a JSON string literal (the JSON format's way to carry delta data); `None`
/// when they are not UTF-8.
pub fn json_string(b: &[u8]) -> Option<Bytes> {
    let s = std::str::from_utf8(b).ok()?;
    serde_json::to_vec(s).ok().map(Bytes::from)
}

/// A publication as a delta subscriber gets it whole.
pub fn whole(p: &Publication, format: Format) -> Option<Publication> {
    let data = match format {
        Format::Json => json_string(&p.data)?,
        Format::Protobuf => p.data.clone(),
    };
    Some(Publication {
        data,
        delta: false,
        ..p.clone()
    })
}

/// A publication as a delta against `patch` (see [`patch`]); `None` when the patch cannot
/// be written in the format (JSON and a patch that is not UTF-8).
pub fn as_delta(p: &Publication, patch: &Bytes, format: Format) -> Option<Publication> {
    let data = match format {
        Format::Json => json_string(patch)?,
        Format::Protobuf => patch.clone(),
    };
    Some(Publication {
        data,
        delta: true,
        ..p.clone()
    })
}

/// Publications recovered at subscribe for a delta subscriber: the first whole, each next
/// one as a delta against the one before it. Publications that cannot be expressed in
/// the format are left as they are (the reply's encoding reports them).
pub fn recovered(pubs: Vec<Publication>, format: Format) -> Vec<Publication> {
    let mut out = Vec::with_capacity(pubs.len());
    let mut prev: Option<Bytes> = None;
    for p in pubs {
        let encoded = prev
            .as_ref()
            .and_then(|prev| patch(prev, &p.data))
            .and_then(|d| as_delta(&p, &d, format))
            .or_else(|| whole(&p, format));
        prev = Some(p.data.clone());
        out.push(encoded.unwrap_or(p));
    }
    out
}

/// [`recovered`] for a map subscriber: a chain per key (its SDK keeps a delta base per
/// key), each key's first publication whole.
pub fn recovered_keyed(pubs: Vec<Publication>, format: Format) -> Vec<Publication> {
    let mut prev: std::collections::HashMap<String, Bytes> = std::collections::HashMap::new();
    pubs.into_iter()
        .map(|p| {
            let encoded = prev
                .get(&p.key)
                .and_then(|prev| patch(prev, &p.data))
                .and_then(|d| as_delta(&p, &d, format))
                .or_else(|| whole(&p, format));
            prev.insert(p.key.clone(), p.data.clone());
            encoded.unwrap_or(p)
        })
        .collect()
}

/// Map state entries for a delta subscriber on JSON: their data as JSON strings, as every
/// publication it gets, so that its SDK keeps the exact bytes as each key's delta base.
pub fn state_for_delta(entries: Vec<Publication>, format: Format) -> Vec<Publication> {
    match format {
        Format::Protobuf => entries,
        Format::Json => entries.into_iter().map(|p| whole(&p, format).unwrap_or(p)).collect(),
    }
}

/// Clears what the node keeps inside publications read from history: the "published with
/// delta" mark, and the publishing time (for the lag metric; Centrifugo does not send it).
pub fn clear_marks(pubs: &mut [Publication]) {
    for p in pubs {
        p.delta = false;
        p.time = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publication(offset: u64, data: &str) -> Publication {
        Publication {
            offset,
            data: Bytes::from(data.to_string()),
            ..Default::default()
        }
    }

    fn decode(prev: &[u8], p: &Publication, format: Format) -> Vec<u8> {
        let raw = match format {
            Format::Json => serde_json::from_slice::<String>(&p.data).unwrap().into_bytes(),
            Format::Protobuf => p.data.to_vec(),
        };
        if p.delta {
            fossil::apply(prev, &raw, usize::MAX).unwrap()
        } else {
            raw
        }
    }

    #[test]
    fn recovered_chain_decodes_in_both_formats() {
        let body = "x".repeat(300);
        let pubs: Vec<Publication> = (1..=4)
            .map(|i| publication(i, &format!("{{\"n\":{i},\"s\":\"{body}\",\n\"é\":1}}")))
            .collect();
        for format in [Format::Json, Format::Protobuf] {
            let out = recovered(pubs.clone(), format);
            assert!(!out[0].delta);
            assert!(out[1..].iter().all(|p| p.delta), "{format:?}");
            let mut prev = Vec::new();
            for (o, p) in out.iter().zip(&pubs) {
                prev = decode(&prev, o, format);
                assert_eq!(prev, p.data.to_vec());
                assert_eq!(o.offset, p.offset);
            }
        }
    }

    #[test]
    fn no_delta_when_it_does_not_pay() {
        let out = recovered(vec![publication(1, "\"a\""), publication(2, "\"b\"")], Format::Protobuf);
        assert!(!out[1].delta);
        assert_eq!(out[1].data, Bytes::from_static(b"\"b\""));
    }

    #[test]
    fn json_string_refuses_non_utf8() {
        assert_eq!(
            json_string(b"{\"a\":\"\n\"}").unwrap(),
            Bytes::from_static(b"\"{\\\"a\\\":\\\"\\n\\\"}\"")
        );
        assert!(json_string(&[0xff, 0x00]).is_none());
    }
}
