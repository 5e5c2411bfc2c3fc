//! Connection and subscription tokens: `Verifier` (HMAC secret configured) never panics,
//! whatever the token, and a token's claims are only ever read when it is signed with the
//! configured key.
//!
//! Typed input (`arbitrary`): a raw string as the token; or a header and claims of
//! arbitrary bytes, base64url-encoded and signed HS256 with the right or a wrong key (so
//! that the claims parser, behind the signature check, is reached); or arbitrary JSON
//! claims signed with `make_hs256`, as `wshub gentoken` does.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use wshub_core::config::TokenConfig;
use wshub_core::token::{make_hs256, Verifier};

const SECRET: &str = "fuzz-secret";
const NOW: u64 = 1_700_000_000;

#[derive(Debug, Arbitrary)]
enum Input<'a> {
    Raw(&'a str),
    Signed {
        header: &'a [u8],
        claims: &'a [u8],
        right_key: bool,
    },
    /// `claims` parsed as JSON, then signed as is with the right key.
    Json {
        claims: &'a [u8],
    },
}

fn verify(v: &Verifier, token: &str) -> bool {
    let connect = v.verify_connect(token, NOW);
    let subscribe = v.verify_subscribe(token, NOW);
    connect.is_ok() || subscribe.is_ok()
}

fuzz_target!(|input: Input| {
    let v = Verifier::new(&TokenConfig {
        hmac_secret_key: SECRET.into(),
        ..Default::default()
    })
    .expect("HMAC config");
    match input {
        Input::Raw(token) => {
            verify(&v, token);
        }
        Input::Signed { header, claims, right_key } => {
            let message = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
            let key = EncodingKey::from_secret(if right_key { SECRET } else { "another-secret" }.as_bytes());
            let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).expect("HMAC signs anything");
            let accepted = verify(&v, &format!("{message}.{sig}"));
            assert!(right_key || !accepted, "a token signed with another key was accepted");
        }
        Input::Json { claims } => {
            let Ok(value) = serde_json::from_slice::<serde_json::Value>(claims) else {
                return;
            };
            let Ok(token) = make_hs256(SECRET, &value) else { return };
            if let Ok(c) = v.verify_connect(&token, NOW) {
                assert_eq!(c.user, value.get("sub").and_then(|s| s.as_str()).unwrap_or(""));
                assert!(value.get("exp").and_then(|e| e.as_u64()).is_none_or(|exp| exp > NOW));
            }
            if let Ok(c) = v.verify_subscribe(&token, NOW) {
                assert_eq!(Some(c.channel.as_str()), value.get("channel").and_then(|s| s.as_str()));
                assert!(!c.channel.is_empty());
            }
        }
    }
});
