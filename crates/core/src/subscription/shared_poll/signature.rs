//! The track signature: the application's backend signs the keys a user may track in a
//! channel, and the node checks it (Centrifugo's `track_signature.go` formula).
//!
//! `iat:exp:hex(HMAC-SHA256(secret, iat ‖0‖ exp ‖0‖ user ‖0‖ channel ‖0‖ hex(SHA256(keys
//! joined by 0))))`, the keys in the order the batch lists them. NUL separators keep a
//! colon in a user or channel from moving between fields. `exp` 0: no expiry.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// After its `exp`, a signature is still accepted this long (clock skew).
pub const GRACE_SECONDS: i64 = 5;

/// Why a batch is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Malformed, or signed by neither key: 103.
    #[error("invalid track signature")]
    Invalid,
    /// Past its expiry and the grace: 109 (the SDK fetches a new one).
    #[error("track signature expired")]
    Expired,
}

/// The keys that verify signatures.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    pub current: String,
    pub previous: String,
    /// Unix seconds; signatures issued later are not accepted with `previous` (0: no limit).
    pub previous_valid_until: i64,
}

/// `iat` and `exp` of a signature, when it has the form.
fn times(sig: &str) -> Option<(&str, &str, &str)> {
    let (iat, rest) = sig.split_once(':')?;
    let (exp, mac) = rest.split_once(':')?;
    Some((iat, exp, mac))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// The hex MAC of a payload under `secret`.
fn mac(secret: &str, iat: &str, exp: &str, user: &str, channel: &str, keys: &[&str]) -> Option<String> {
    let keys_hash = hex(&Sha256::digest(keys.join("\0").as_bytes()));
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).ok()?;
    for (i, part) in [iat, exp, user, channel, keys_hash.as_str()].iter().enumerate() {
        if i > 0 {
            m.update(&[0]);
        }
        m.update(part.as_bytes());
    }
    Some(hex(&m.finalize().into_bytes()))
}

/// Equal in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Signs a batch (tests, benchmarks and example backends).
pub fn sign(secret: &str, channel: &str, user: &str, keys: &[&str], iat: i64, exp: i64) -> String {
    let (iat, exp) = (iat.to_string(), exp.to_string());
    let m = mac(secret, &iat, &exp, user, channel, keys).unwrap_or_default();
    format!("{iat}:{exp}:{m}")
}

impl Keys {
    /// Checks one batch's signature for `user` at Unix time `now`: its expiry (0: none).
    pub fn verify(&self, sig: &str, channel: &str, user: &str, keys: &[&str], now: i64) -> Result<i64, SignatureError> {
        // The keys are joined with NUL before hashing: a key holding one could pass for two.
        if keys.iter().any(|k| k.contains('\0')) {
            return Err(SignatureError::Invalid);
        }
        let (iat, exp, given) = times(sig).ok_or(SignatureError::Invalid)?;
        let (iat_n, exp_n): (i64, i64) = match (iat.parse(), exp.parse()) {
            (Ok(i), Ok(e)) => (i, e),
            _ => return Err(SignatureError::Invalid),
        };
        let with = |secret: &str| !secret.is_empty() && mac(secret, iat, exp, user, channel, keys).is_some_and(|m| same(&m, given));
        let previous_ok = self.previous_valid_until <= 0 || iat_n <= self.previous_valid_until;
        let signed = with(&self.current) || (previous_ok && with(&self.previous));
        if !signed {
            return Err(SignatureError::Invalid);
        }
        if exp_n > 0 && exp_n.saturating_add(GRACE_SECONDS) < now {
            return Err(SignatureError::Expired);
        }
        Ok(exp_n.max(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_767_225_600;

    fn keys() -> Keys {
        Keys {
            current: "new".into(),
            previous: "old".into(),
            previous_valid_until: NOW - 100,
        }
    }

    #[test]
    fn the_sdk_suites_formula_verifies() {
        // What centrifuge-js's tests compute with node:crypto for these inputs.
        let sig = sign("test-poll-secret", "poll:x", "", &["k1", "k2"], 1_700_000_000, 1_700_003_600);
        assert_eq!(
            sig,
            "1700000000:1700003600:9c4ba334fdc34cde7145f8e0635e82b07f3ea7bad6e9c2b1ca4d440a0d7e5c96"
        );
    }

    #[test]
    fn batches_are_bound_to_user_channel_and_keys() {
        let k = keys();
        let sig = sign("new", "poll:x", "u1", &["a", "b"], NOW, NOW + 60);
        assert_eq!(k.verify(&sig, "poll:x", "u1", &["a", "b"], NOW), Ok(NOW + 60));
        for (ch, user, ks) in [
            ("poll:y", "u1", vec!["a", "b"]),
            ("poll:x", "u2", vec!["a", "b"]),
            ("poll:x", "u1", vec!["b", "a"]),
            ("poll:x", "u1", vec!["a"]),
            ("poll:x", "u1", vec!["a\0b"]),
        ] {
            assert_eq!(
                k.verify(&sig, ch, user, &ks, NOW),
                Err(SignatureError::Invalid),
                "{ch} {user} {ks:?}"
            );
        }
        for bad in ["", "1:2", "x:2:ab", "1:y:ab", &format!("{NOW}:0:zz")] {
            assert_eq!(k.verify(bad, "poll:x", "u1", &["a"], NOW), Err(SignatureError::Invalid));
        }
    }

    #[test]
    fn expiry_has_a_grace_and_zero_never_expires() {
        let k = keys();
        let sig = sign("new", "c", "", &["a"], NOW - 100, NOW - 5);
        assert_eq!(k.verify(&sig, "c", "", &["a"], NOW), Ok(NOW - 5));
        let sig = sign("new", "c", "", &["a"], NOW - 100, NOW - 6);
        assert_eq!(k.verify(&sig, "c", "", &["a"], NOW), Err(SignatureError::Expired));
        let sig = sign("new", "c", "", &["a"], NOW - 100, 0);
        assert_eq!(k.verify(&sig, "c", "", &["a"], NOW + 1_000_000), Ok(0));
    }

    #[test]
    fn the_previous_key_holds_until_its_limit() {
        let k = keys();
        let early = sign("old", "c", "", &["a"], NOW - 200, 0);
        assert!(k.verify(&early, "c", "", &["a"], NOW).is_ok());
        let late = sign("old", "c", "", &["a"], NOW - 50, 0);
        assert_eq!(k.verify(&late, "c", "", &["a"], NOW), Err(SignatureError::Invalid));
        let unlimited = Keys {
            previous_valid_until: 0,
            ..keys()
        };
        assert!(unlimited.verify(&late, "c", "", &["a"], NOW).is_ok());
        let none = Keys::default();
        assert_eq!(none.verify(&early, "c", "", &["a"], NOW), Err(SignatureError::Invalid));
    }
}
