use super::*;
use proptest::prelude::*;
use serde_json::json;

const NOW: u64 = 1_700_000_000;

fn hmac() -> Verifier {
    Verifier::new(
        &TokenConfig {
            hmac_secret_key: "secret".into(),
            ..Default::default()
        },
        "client.token",
    )
    .unwrap()
}

#[test]
fn hs256_claims() {
    let t = make_hs256(
        "secret",
        &json!({"sub": "42", "exp": NOW + 60, "info": {"name": "Alice"}, "channels": ["news"], "subs": {"chat:1": {}}}),
    )
    .unwrap();
    let c = hmac().verify_connect(&t, NOW).unwrap();
    assert_eq!(c.user, "42");
    assert_eq!(c.expire_at, Some(NOW + 60));
    assert_eq!(&c.info[..], br#"{"name":"Alice"}"#);
    // As Centrifugo: `channels` is read only when `subs` is empty.
    assert_eq!(c.channels, vec!["chat:1".to_string()]);
    let t = make_hs256("secret", &json!({"sub": "42", "channels": ["news", "b"]})).unwrap();
    assert_eq!(hmac().verify_connect(&t, NOW).unwrap().channels, ["news", "b"]);
    let t = make_hs256("secret", &json!({"sub": "1", "b64info": "eyJhIjoxfQ=="})).unwrap();
    assert_eq!(&hmac().verify_connect(&t, NOW).unwrap().info[..], br#"{"a":1}"#);
}

#[test]
fn expired_invalid_and_wrong_key() {
    let t = make_hs256("secret", &json!({"sub": "42", "exp": NOW})).unwrap();
    assert_eq!(hmac().verify_connect(&t, NOW).err(), Some(TokenError::Expired));
    let t = make_hs256("other", &json!({"sub": "42"})).unwrap();
    assert!(matches!(hmac().verify_connect(&t, NOW), Err(TokenError::Invalid(_))));
    assert!(matches!(hmac().verify_connect("not.a.jwt", NOW), Err(TokenError::Invalid(_))));
    assert!(matches!(hmac().verify_connect("", NOW), Err(TokenError::Invalid(_))));
    // An RS256 header with no RSA key configured.
    let none = Verifier::new(&TokenConfig::default(), "client.token").unwrap();
    assert!(!none.is_configured());
    let t = make_hs256("secret", &json!({"sub": "1"})).unwrap();
    assert!(matches!(none.verify_connect(&t, NOW), Err(TokenError::Invalid(_))));
}

#[test]
fn audience_and_issuer() {
    let v = Verifier::new(
        &TokenConfig {
            hmac_secret_key: "secret".into(),
            audience: "app".into(),
            issuer: "me".into(),
            ..Default::default()
        },
        "client.token",
    )
    .unwrap();
    let good = make_hs256("secret", &json!({"sub": "1", "aud": "app", "iss": "me"})).unwrap();
    assert!(v.verify_connect(&good, NOW).is_ok());
    for bad in [
        json!({"sub": "1", "aud": "other", "iss": "me"}),
        json!({"sub": "1", "iss": "me"}),
        json!({"sub": "1", "aud": "app", "iss": "you"}),
    ] {
        let t = make_hs256("secret", &bad).unwrap();
        assert!(matches!(v.verify_connect(&t, NOW), Err(TokenError::Invalid(_))), "{bad}");
    }
}

#[test]
fn subscription_tokens() {
    let t = make_hs256("secret", &json!({"sub": "42", "channel": "private:x", "exp": NOW + 10})).unwrap();
    let c = hmac().verify_subscribe(&t, NOW).unwrap();
    assert_eq!(
        (c.user.as_str(), c.channel.as_str(), c.expire_at),
        ("42", "private:x", Some(NOW + 10))
    );
    let t = make_hs256("secret", &json!({"sub": "42"})).unwrap();
    assert!(hmac().verify_subscribe(&t, NOW).is_err());
}

#[test]
fn bad_pem_names_the_key() {
    let e = Verifier::new(
        &TokenConfig {
            rsa_public_key: "garbage".into(),
            ..Default::default()
        },
        "client.token",
    )
    .unwrap_err();
    assert_eq!(e.key, "client.token.rsa_public_key");
}

#[test]
fn rs256_and_es256() {
    let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/");
    let read = |f: &str| std::fs::read_to_string(format!("{keys}{f}")).unwrap();
    let v = Verifier::new(
        &TokenConfig {
            rsa_public_key: read("rsa.pub"),
            ecdsa_public_key: read("ec.pub"),
            ..Default::default()
        },
        "client.token",
    )
    .unwrap();
    let claims = json!({"sub": "7", "exp": NOW + 60});
    for (alg, key) in [
        (
            Algorithm::RS256,
            jsonwebtoken::EncodingKey::from_rsa_pem(read("rsa.key").as_bytes()).unwrap(),
        ),
        (
            Algorithm::RS512,
            jsonwebtoken::EncodingKey::from_rsa_pem(read("rsa.key").as_bytes()).unwrap(),
        ),
        (
            Algorithm::ES256,
            jsonwebtoken::EncodingKey::from_ec_pem(read("ec.key").as_bytes()).unwrap(),
        ),
    ] {
        let t = jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims, &key).unwrap();
        assert_eq!(v.verify_connect(&t, NOW).unwrap().user, "7", "{alg:?}");
        // Tampered payload.
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"sub":"8"}"#);
        parts[1] = &forged;
        assert!(
            matches!(v.verify_connect(&parts.join("."), NOW), Err(TokenError::Invalid(_))),
            "{alg:?}"
        );
    }
    // HS256 is refused when no HMAC secret is configured (no algorithm confusion).
    let t = make_hs256(&read("rsa.pub"), &claims).unwrap();
    assert!(matches!(v.verify_connect(&t, NOW), Err(TokenError::Invalid(_))));
}

/// Signs `header.claims` (arbitrary bytes, base64url-encoded) with HS256, so that the parser
/// behind the signature check is reached.
fn signed(header: &[u8], claims: &[u8], secret: &str) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let message = format!("{}.{}", b64.encode(header), b64.encode(claims));
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap();
    format!("{message}.{sig}")
}

/// Mostly a valid HS256 header (else the claims are never read), sometimes arbitrary bytes.
fn header() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => Just(br#"{"alg":"HS256","typ":"JWT"}"#.to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 0..48),
    ]
}

/// JSON values whose object keys are mostly the claims the verifier reads, with values of
/// every JSON type (so right and wrong types both occur).
fn claims_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<u64>().prop_map(|n| Value::from(n % (2 * NOW))),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[a-z:#0-9=+/]{0,12}".prop_map(Value::from),
    ];
    let key = prop_oneof![
        Just("sub"),
        Just("exp"),
        Just("expire_at"),
        Just("info"),
        Just("b64info"),
        Just("channels"),
        Just("subs"),
        Just("channel"),
        Just("aud"),
        Just("x"),
    ]
    .prop_map(String::from);
    let value = leaf.prop_recursive(3, 24, 4, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map("[a-z:]{0,6}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    proptest::collection::btree_map(key, value, 0..6).prop_map(|m| serde_json::Value::Object(m.into_iter().collect()))
}

proptest! {
    #[test]
    fn arbitrary_tokens_never_panic(token in any::<String>(), shaped in "[A-Za-z0-9_=-]{0,24}\\.[A-Za-z0-9_=.-]{0,40}") {
        for t in [&token, &shaped] {
            prop_assert!(hmac().verify_connect(t, NOW).is_err());
            prop_assert!(hmac().verify_subscribe(t, NOW).is_err());
        }
    }

    #[test]
    fn signed_arbitrary_bytes_never_panic(header in header(), claims in proptest::collection::vec(any::<u8>(), 0..48), right_key in any::<bool>()) {
        let t = signed(&header, &claims, if right_key { "secret" } else { "other" });
        let accepted = hmac().verify_connect(&t, NOW).is_ok() | hmac().verify_subscribe(&t, NOW).is_ok();
        prop_assert!(right_key || !accepted, "a token signed with another key was accepted");
    }

    #[test]
    fn signed_arbitrary_claims_never_panic(claims in claims_value()) {
        let t = make_hs256("secret", &claims).unwrap();
        if let Ok(c) = hmac().verify_connect(&t, NOW) {
            prop_assert_eq!(c.user.as_str(), claims.get("sub").and_then(|s| s.as_str()).unwrap_or(""));
            prop_assert!(claims.get("exp").and_then(|e| e.as_u64()).is_none_or(|exp| exp > NOW));
        }
        if let Ok(c) = hmac().verify_subscribe(&t, NOW) {
            prop_assert_eq!(Some(c.channel.as_str()), claims.get("channel").and_then(|s| s.as_str()));
        }
    }
}

/// ES512 (P-521), which jsonwebtoken lacks: verified with the `p521` crate from a PEM
/// `ecdsa_public_key`; a tampered token, a wrong audience and an expired one are told apart.
#[test]
fn es512_with_a_p521_public_key() {
    use base64::Engine as _;
    use p521::ecdsa::signature::RandomizedSigner as _;
    use p521::pkcs8::EncodePublicKey as _;
    let sk = p521::ecdsa::SigningKey::from_slice(&[1u8; 66]).unwrap();
    let vk = p521::ecdsa::VerifyingKey::from(&sk);
    let pk = p521::PublicKey::from_sec1_bytes(&vk.to_encoded_point(false).to_bytes()).unwrap();
    let pem = pk.to_public_key_pem(Default::default()).unwrap();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let sign = |claims: serde_json::Value| {
        let signed = format!(
            "{}.{}",
            b64.encode(br#"{"alg":"ES512","typ":"JWT"}"#),
            b64.encode(claims.to_string())
        );
        let sig: p521::ecdsa::Signature = sk.sign_with_rng(&mut rand::rngs::OsRng, signed.as_bytes());
        format!("{signed}.{}", b64.encode(sig.to_bytes()))
    };
    let v = Verifier::new(
        &TokenConfig {
            ecdsa_public_key: pem,
            audience: "app".into(),
            ..Default::default()
        },
        "client.token",
    )
    .unwrap();
    let ok = sign(json!({"sub": "p521", "aud": "app", "exp": 2000}));
    assert_eq!(v.verify_connect(&ok, 1000).unwrap().user, "p521");
    assert_eq!(v.verify_connect(&ok, 3000).err(), Some(TokenError::Expired));
    let mut tampered = ok.clone();
    tampered.replace_range(tampered.len() - 4.., "AAAA");
    assert!(matches!(v.verify_connect(&tampered, 1000), Err(TokenError::Invalid(_))));
    let other_aud = sign(json!({"sub": "p521", "aud": "other"}));
    assert!(matches!(v.verify_connect(&other_aud, 1000), Err(TokenError::Invalid(_))));
}

/// Centrifugo's order: a `channel` claim makes a connection token invalid even when it has
/// also expired (3500, not 109); `nbf` in the future is "expired" (109).
#[test]
fn channel_claim_before_expiry_and_nbf() {
    let t = make_hs256("secret", &json!({"sub": "1", "channel": "x", "exp": NOW - 1})).unwrap();
    assert!(matches!(hmac().verify_connect(&t, NOW), Err(TokenError::Invalid(_))));
    let t = make_hs256("secret", &json!({"sub": "1", "nbf": NOW + 5})).unwrap();
    assert_eq!(hmac().verify_connect(&t, NOW).err(), Some(TokenError::Expired));
    let t = make_hs256("secret", &json!({"sub": "1", "nbf": NOW - 5, "expire_at": 0, "exp": NOW + 5})).unwrap();
    assert_eq!(hmac().verify_connect(&t, NOW).unwrap().expire_at, None, "expire_at 0: never");
}
