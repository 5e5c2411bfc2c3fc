//! A push encoded once per encoding and shared by every subscriber that reads it in that
//! encoding, as centrifugal/centrifuge's prepared data.
//!
//! [`PreparedPush`] holds the push and encodes it on first use for each [`Encoding`]: the
//! reply envelope for bidirectional connections, the bare push for unidirectional ones (in
//! JSON a slice of the enveloped bytes, not a second encoding). Each encoded form is a
//! [`PreparedData`], which also keeps a small cache of transport framings
//! ([`PreparedData::framed`]): the WebSocket frame, deflated or not, is built there once for
//! every WebSocket subscriber, and a transport that writes the payload as it is (a stream
//! line) never asks for one.
//!
//! Delta subscribers ([`crate::hub::SubscriberOptions::delta`]) get frames of their own,
//! made at most once too ([`PreparedPush::delta_data`]).

use std::sync::OnceLock;

use bytes::Bytes;
use wshub_protocol::codec::{bare_push_bytes, push_bytes};
use wshub_protocol::{Format, Push};

/// How a connection reads pushes: its wire format, and whether it is unidirectional (bare
/// pushes, no reply envelope: Centrifugo's `uni_*` transports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Encoding {
    pub format: Format,
    pub unidirectional: bool,
    pub dialect: Dialect,
}

/// Which protocol's frames a connection reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Dialect {
    #[default]
    Centrifugo,
    /// Pusher Channels protocol 7 ([`crate::pusher`]), with `strip` bytes of app prefix cut
    /// from channel names. Every Pusher subscriber of a channel belongs to the one app
    /// whose prefix the channel has, so they share one form.
    Pusher { strip: u16 },
}

impl Encoding {
    pub const fn new(format: Format, unidirectional: bool) -> Self {
        Encoding {
            format,
            unidirectional,
            dialect: Dialect::Centrifugo,
        }
    }

    /// A Pusher connection of an app whose channel prefix is `strip` bytes long.
    pub const fn pusher(strip: u16) -> Self {
        Encoding {
            format: Format::Json,
            unidirectional: false,
            dialect: Dialect::Pusher { strip },
        }
    }

    /// Below [`ENCODINGS`].
    const fn index(self) -> usize {
        if let Dialect::Pusher { .. } = self.dialect {
            return 4;
        }
        let f = match self.format {
            Format::Json => 0,
            Format::Protobuf => 1,
        };
        f * 2 + self.unidirectional as usize
    }
}

const ENCODINGS: usize = 5;

/// Entries of a [`PreparedData`]'s framing cache. Which transport uses which entries is the
/// server's choice (its transports share out this range).
pub const FRAME_SLOTS: usize = 12;

/// A push encoded for one [`Encoding`], with the framings transports built around it.
#[derive(Debug)]
pub struct PreparedData {
    payload: Bytes,
    /// Who must not get it (Pusher forms only: [`crate::pusher::Skip`]).
    skip: Option<crate::pusher::Skip>,
    /// Allocated on the first framing asked for: most pushes of a stream-only audience, and
    /// every push of a test, never need one.
    framed: OnceLock<Box<[OnceLock<Bytes>; FRAME_SLOTS]>>,
}

impl PreparedData {
    pub fn new(payload: Bytes) -> Self {
        PreparedData {
            payload,
            skip: None,
            framed: OnceLock::new(),
        }
    }

    /// `push` for one connection's `encoding`, not shared with other subscribers (a
    /// subscribe stream's publication); `None` when it has no form in it.
    pub fn for_one(encoding: Encoding, push: Push) -> Option<Self> {
        encode(encoding, push)
    }

    /// Who must not receive this push; the connection's framing judges.
    pub fn skip(&self) -> Option<&crate::pusher::Skip> {
        self.skip.as_ref()
    }

    /// The encoded push: a frame payload of the connection's format (for JSON, one object).
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The payload as framed by `make` for cache entry `slot`, made at most once and then
    /// shared: every connection asking for the same slot must want the same bytes. A slot
    /// past [`FRAME_SLOTS`] is framed on each call.
    pub fn framed(&self, slot: usize, make: impl FnOnce(&Bytes) -> Bytes) -> Bytes {
        if slot >= FRAME_SLOTS {
            return make(&self.payload);
        }
        let cache = self.framed.get_or_init(Default::default);
        cache[slot].get_or_init(|| make(&self.payload)).clone()
    }
}

type Slots = [OnceLock<Option<PreparedData>>; ENCODINGS];

/// A push encoded at most once per encoding, on first use.
pub struct PreparedPush {
    /// The stream offset (0 for joins, leaves and publications without history).
    pub offset: u64,
    push: Push,
    plain: Slots,
    /// The frames of delta subscribers, for publications of channels that have some.
    delta: Option<Box<DeltaFrames>>,
}

/// A publication's forms for delta subscribers, each made at most once.
struct DeltaFrames {
    /// The previous publication's data, when the publication was published with delta and
    /// the previous one is `offset - 1`.
    base: Option<Bytes>,
    patch: OnceLock<Option<Bytes>>,
    /// Whole, with the data as a JSON string (Protobuf delta subscribers get the plain form).
    whole: Slots,
    delta: Slots,
}

/// The JSON envelope of a push: its unidirectional form is what it wraps.
const PUSH_ENVELOPE: &[u8] = b"{\"push\":";

/// `push` in `encoding`.
fn encode(encoding: Encoding, push: Push) -> Option<PreparedData> {
    if let Dialect::Pusher { strip } = encoding.dialect {
        let (payload, skip) = crate::pusher::encode(&push, usize::from(strip))?;
        return Some(PreparedData {
            payload,
            skip,
            framed: OnceLock::new(),
        });
    }
    let channel = push.channel.clone();
    let encoded = if encoding.unidirectional {
        bare_push_bytes(encoding.format, &push)
    } else {
        push_bytes(encoding.format, push)
    };
    match encoded {
        Ok(b) => Some(PreparedData::new(b)),
        Err(e) => {
            tracing::warn!(error = %e, %channel, "push cannot be encoded for {encoding:?} clients");
            None
        }
    }
}

/// The form of a push for `encoding` in `slots`, made on first use from `make` (the push to
/// encode, `None` when it has no form). The unidirectional JSON form is a slice of the
/// enveloped one (`{"push":P}` is exactly `P` wrapped).
fn prepared<'a>(slots: &'a Slots, encoding: Encoding, make: &dyn Fn() -> Option<Push>) -> Option<&'a PreparedData> {
    slots[encoding.index()]
        .get_or_init(|| {
            if encoding == Encoding::new(Format::Json, true) {
                let bidi = prepared(slots, Encoding::new(Format::Json, false), make)?;
                let b = bidi.payload();
                if b.starts_with(PUSH_ENVELOPE) && b.ends_with(b"}") {
                    return Some(PreparedData::new(b.slice(PUSH_ENVELOPE.len()..b.len() - 1)));
                }
            }
            encode(encoding, make()?)
        })
        .as_ref()
}

impl PreparedPush {
    pub fn new(offset: u64, push: Push) -> std::sync::Arc<Self> {
        std::sync::Arc::new(PreparedPush {
            offset,
            push,
            plain: Default::default(),
            delta: None,
        })
    }

    pub(crate) fn with_delta(offset: u64, push: Push, base: Option<Bytes>) -> std::sync::Arc<Self> {
        std::sync::Arc::new(PreparedPush {
            offset,
            push,
            plain: Default::default(),
            delta: Some(Box::new(DeltaFrames {
                base,
                patch: OnceLock::new(),
                whole: Default::default(),
                delta: Default::default(),
            })),
        })
    }

    pub fn push(&self) -> &Push {
        &self.push
    }

    /// The push for one encoding; `None` when it cannot be expressed in it (non-JSON data
    /// for a JSON client).
    pub fn data(&self, encoding: Encoding) -> Option<&PreparedData> {
        prepared(&self.plain, encoding, &|| Some(self.push.clone()))
    }

    /// The form for a delta subscriber: the delta against the previous publication when
    /// `has_base` (the subscriber holds it) and one exists, the whole publication otherwise.
    pub fn delta_data(&self, encoding: Encoding, has_base: bool) -> Option<&PreparedData> {
        let Some(d) = &self.delta else { return self.data(encoding) };
        if encoding.dialect != Dialect::Centrifugo {
            return self.data(encoding);
        }
        let publication = self.push.r#pub.as_ref()?;
        let with = |p| Push {
            r#pub: Some(p),
            ..self.push.clone()
        };
        if has_base {
            let patch = d
                .patch
                .get_or_init(|| d.base.as_ref().and_then(|b| crate::delta::patch(b, &publication.data)));
            if let Some(patch) = patch {
                let make = || crate::delta::as_delta(publication, patch, encoding.format).map(with);
                if let Some(data) = prepared(&d.delta, encoding, &make) {
                    return Some(data);
                }
            }
        }
        match encoding.format {
            Format::Protobuf => self.data(encoding),
            Format::Json => prepared(&d.whole, encoding, &|| crate::delta::whole(publication, Format::Json).map(with)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use wshub_protocol::Publication;

    fn push() -> Push {
        Push {
            channel: "news".into(),
            r#pub: Some(Publication {
                data: Bytes::from_static(br#"{"n":1}"#),
                offset: 3,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn encoded_once_per_encoding_and_the_unidirectional_json_form_is_a_slice() {
        let p = PreparedPush::new(3, push());
        let bidi = p.data(Encoding::new(Format::Json, false)).unwrap();
        assert!(bidi.payload().starts_with(b"{\"push\":{\"channel\":\"news\""));
        let uni = p.data(Encoding::new(Format::Json, true)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(uni.payload()).unwrap();
        assert_eq!(v["channel"], "news");
        assert_eq!(v["pub"]["data"]["n"], 1);
        assert_eq!(
            uni.payload().as_ptr(),
            bidi.payload().as_ptr().wrapping_add(PUSH_ENVELOPE.len()),
            "no second encoding"
        );
        // Asked again: the same bytes.
        let again = p.data(Encoding::new(Format::Json, false)).unwrap();
        assert_eq!(again.payload().as_ptr(), bidi.payload().as_ptr());
        let pb = p.data(Encoding::new(Format::Protobuf, true)).unwrap();
        let b = pb.payload();
        assert_eq!(usize::from(b[0]), b.len() - 1, "length-delimited");
        assert!(b.windows(4).any(|w| w == b"news"));
    }

    #[test]
    fn a_framing_is_made_once_per_slot() {
        let d = PreparedData::new(Bytes::from_static(b"abc"));
        let calls = std::cell::Cell::new(0);
        let frame = |b: &Bytes| {
            calls.set(calls.get() + 1);
            Bytes::from([&b"<"[..], b, b">"].concat())
        };
        let a = d.framed(1, frame);
        let b = d.framed(1, frame);
        assert_eq!(&a[..], b"<abc>");
        assert_eq!(a.as_ptr(), b.as_ptr());
        assert_eq!(calls.get(), 1);
        d.framed(2, frame);
        assert_eq!(calls.get(), 2, "another slot, another framing");
        d.framed(FRAME_SLOTS, frame);
        d.framed(FRAME_SLOTS, frame);
        assert_eq!(calls.get(), 4, "past the cache: framed each time");
    }

    #[test]
    fn data_that_json_cannot_carry_has_no_json_form() {
        let mut push = push();
        if let Some(p) = push.r#pub.as_mut() {
            p.data = Bytes::from_static(&[0xff, 0x00]);
        }
        let p = PreparedPush::new(3, push);
        assert!(p.data(Encoding::new(Format::Json, false)).is_none());
        assert!(p.data(Encoding::new(Format::Json, true)).is_none());
        assert!(p.data(Encoding::new(Format::Protobuf, false)).is_some());
    }
}
