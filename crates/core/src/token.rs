//! JWT verification for connection and subscription tokens, through `jsonwebtoken`.
//!
//! The key follows the token's `alg`: HS256/384/512 use `client.token.hmac_secret_key`,
//! RS256/384/512 `rsa_public_key` (PEM), ES256/384/512 `ecdsa_public_key` (PEM), and with
//! `jwks_public_endpoint` the key named by the token's `kid` ([`crate::jwks`]). ES512 (P-521),
//! which `jsonwebtoken` lacks, is verified here with the `p521` crate. `aud` and
//! `iss` are checked when configured. An expired token is told apart from an invalid one:
//! the first is error 109 (the SDK fetches a new token), the second close 3500.

use std::collections::HashMap;

use base64::Engine as _;
use bytes::Bytes;
use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::{ConfigError, TokenConfig};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("token expired")]
    Expired,
}

/// What a connection token grants.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConnectClaims {
    /// `sub`: the user; empty is anonymous.
    pub user: String,
    /// When the connection expires (Unix seconds): `expire_at` if present, else `exp`.
    pub expire_at: Option<u64>,
    /// `info` (raw JSON) or `b64info` (decoded).
    pub info: Bytes,
    /// Server-side subscriptions: `channels` and the keys of `subs`.
    pub channels: Vec<String>,
}

/// What a subscription token grants.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubscribeClaims {
    pub user: String,
    pub channel: String,
    pub expire_at: Option<u64>,
    pub info: Bytes,
}

#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    sub: String,
    exp: Option<u64>,
    expire_at: Option<u64>,
    info: Option<Box<RawValue>>,
    b64info: Option<String>,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    subs: HashMap<String, serde_json::Value>,
    #[serde(default)]
    channel: String,
}

/// Verifies tokens with the configured keys.
pub struct Verifier {
    hmac: Option<DecodingKey>,
    rsa: Option<DecodingKey>,
    ec: Option<DecodingKey>,
    /// `ecdsa_public_key` when it is a P-521 key (ES512).
    ec521: Option<p521::ecdsa::VerifyingKey>,
    /// Keys by `kid` from `jwks_public_endpoint`.
    jwks: Option<std::sync::Arc<crate::jwks::JwksCache>>,
    audience: String,
    issuer: String,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("hmac", &self.hmac.is_some())
            .field("rsa", &self.rsa.is_some())
            .field("ec", &self.ec.is_some())
            .field("jwks", &self.jwks.is_some())
            .finish()
    }
}

impl Verifier {
    pub fn new(cfg: &TokenConfig) -> Result<Self, ConfigError> {
        let bad = |key: &str, e: jsonwebtoken::errors::Error| ConfigError {
            key: format!("client.token.{key}"),
            message: e.to_string(),
        };
        let ec521 = match cfg.ecdsa_public_key.as_str() {
            "" => None,
            pem => p521_from_pem(pem),
        };
        Ok(Verifier {
            hmac: (!cfg.hmac_secret_key.is_empty()).then(|| DecodingKey::from_secret(cfg.hmac_secret_key.as_bytes())),
            rsa: match cfg.rsa_public_key.as_str() {
                "" => None,
                pem => Some(DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| bad("rsa_public_key", e))?),
            },
            // A P-521 key is ES512's (verified here); P-256 and P-384 go to jsonwebtoken.
            ec: match cfg.ecdsa_public_key.as_str() {
                "" => None,
                _ if ec521.is_some() => None,
                pem => Some(DecodingKey::from_ec_pem(pem.as_bytes()).map_err(|e| bad("ecdsa_public_key", e))?),
            },
            ec521,
            jwks: match cfg.jwks_public_endpoint.as_str() {
                "" => None,
                u if u.starts_with("http://") || u.starts_with("https://") => Some(Default::default()),
                _ => {
                    return Err(ConfigError {
                        key: "client.token.jwks_public_endpoint".into(),
                        message: "must be an http:// or https:// URL".into(),
                    })
                }
            },
            audience: cfg.audience.clone(),
            issuer: cfg.issuer.clone(),
        })
    }

    /// The JWKS key cache, when `jwks_public_endpoint` is set.
    pub fn jwks(&self) -> Option<&std::sync::Arc<crate::jwks::JwksCache>> {
        self.jwks.as_ref()
    }

    /// Whether any key is configured.
    pub fn is_configured(&self) -> bool {
        self.hmac.is_some() || self.rsa.is_some() || self.ec.is_some() || self.jwks.is_some()
    }

    fn decode(&self, token: &str, now_unix: u64) -> Result<RawClaims, TokenError> {
        if let Some(kid) = es512_header(token) {
            return self.decode_es512(token, kid.as_deref(), now_unix);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
        let jwk;
        let key = match (&self.jwks, &header.kid) {
            (Some(cache), Some(kid)) => {
                jwk = cache.get(kid).ok_or_else(|| TokenError::Invalid(format!("unknown key id {kid}")))?;
                match &jwk.key {
                    crate::jwks::KeyMaterial::Jwt(k) if jwk.algorithms.contains(&header.alg) => Some(k),
                    _ => return Err(TokenError::Invalid(format!("algorithm {:?} does not match key {kid}", header.alg))),
                }
            }
            _ => None,
        };
        let key = match key {
            Some(k) => Some(k),
            None => match header.alg {
                Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => self.hmac.as_ref(),
                Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => self.rsa.as_ref(),
                Algorithm::ES256 | Algorithm::ES384 => self.ec.as_ref(),
                other => return Err(TokenError::Invalid(format!("algorithm {other:?} not accepted"))),
            },
        }
        .ok_or_else(|| TokenError::Invalid(format!("no key configured for {:?}", header.alg)))?;
        let mut v = Validation::new(header.alg);
        v.required_spec_claims.clear();
        // exp is checked below against the caller's clock, so that tests control time.
        v.validate_exp = false;
        v.leeway = 0;
        if self.audience.is_empty() {
            v.validate_aud = false;
        } else {
            v.set_audience(&[&self.audience]);
            v.required_spec_claims.insert("aud".into());
        }
        if !self.issuer.is_empty() {
            v.set_issuer(&[&self.issuer]);
            v.required_spec_claims.insert("iss".into());
        }
        let data = jsonwebtoken::decode::<RawClaims>(token, key, &v).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            _ => TokenError::Invalid(e.to_string()),
        })?;
        let c = data.claims;
        if let Some(exp) = c.exp {
            if exp <= now_unix {
                return Err(TokenError::Expired);
            }
        }
        Ok(c)
    }

    /// ES512: the signature (P-521, SHA-512, `r || s`) with the `kid`'s JWKS key or the
    /// configured P-521 `ecdsa_public_key`, then the claims as [`Verifier::decode`] checks them.
    fn decode_es512(&self, token: &str, kid: Option<&str>, now_unix: u64) -> Result<RawClaims, TokenError> {
        use p521::ecdsa::signature::Verifier as _;
        let bad = |m: &str| TokenError::Invalid(m.to_string());
        let jwk;
        let key = match (&self.jwks, kid) {
            (Some(cache), Some(kid)) => {
                jwk = cache.get(kid).ok_or_else(|| bad(&format!("unknown key id {kid}")))?;
                match &jwk.key {
                    crate::jwks::KeyMaterial::P521(k) => k,
                    crate::jwks::KeyMaterial::Jwt(_) => return Err(bad("algorithm ES512 does not match the key")),
                }
            }
            _ => self.ec521.as_ref().ok_or_else(|| bad("no key configured for ES512"))?,
        };
        let (signed, sig) = token.rsplit_once('.').ok_or_else(|| bad("not a JWT"))?;
        let (_, payload) = signed.split_once('.').ok_or_else(|| bad("not a JWT"))?;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let sig = b64.decode(sig).map_err(|_| bad("bad signature encoding"))?;
        let sig = p521::ecdsa::Signature::from_slice(&sig).map_err(|_| bad("bad signature"))?;
        key.verify(signed.as_bytes(), &sig).map_err(|_| bad("signature mismatch"))?;
        let payload = b64.decode(payload).map_err(|_| bad("bad payload encoding"))?;
        let v: serde_json::Value = serde_json::from_slice(&payload).map_err(|e| bad(&e.to_string()))?;
        if !self.audience.is_empty() {
            let ok = match &v["aud"] {
                serde_json::Value::String(a) => *a == self.audience,
                serde_json::Value::Array(a) => a.iter().any(|x| x.as_str() == Some(self.audience.as_str())),
                _ => false,
            };
            if !ok {
                return Err(bad("InvalidAudience"));
            }
        }
        if !self.issuer.is_empty() && v["iss"].as_str() != Some(self.issuer.as_str()) {
            return Err(bad("InvalidIssuer"));
        }
        let c: RawClaims = serde_json::from_slice(&payload).map_err(|e| bad(&e.to_string()))?;
        if c.exp.is_some_and(|exp| exp <= now_unix) {
            return Err(TokenError::Expired);
        }
        Ok(c)
    }

    /// Verifies a connection token.
    pub fn verify_connect(&self, token: &str, now_unix: u64) -> Result<ConnectClaims, TokenError> {
        let c = self.decode(token, now_unix)?;
        let info = info_bytes(c.info, c.b64info)?;
        let mut channels = c.channels;
        let mut sub_keys: Vec<String> = c.subs.into_keys().collect();
        sub_keys.sort();
        for k in sub_keys {
            if !channels.contains(&k) {
                channels.push(k);
            }
        }
        let expire_at = match c.expire_at {
            Some(0) => None,
            Some(t) => Some(t),
            None => c.exp,
        };
        Ok(ConnectClaims {
            user: c.sub,
            expire_at,
            info,
            channels,
        })
    }

    /// Verifies a subscription token.
    pub fn verify_subscribe(&self, token: &str, now_unix: u64) -> Result<SubscribeClaims, TokenError> {
        let c = self.decode(token, now_unix)?;
        if c.channel.is_empty() {
            return Err(TokenError::Invalid("no channel claim".into()));
        }
        let info = info_bytes(c.info, c.b64info)?;
        let expire_at = match c.expire_at {
            Some(0) => None,
            Some(t) => Some(t),
            None => c.exp,
        };
        Ok(SubscribeClaims {
            user: c.sub,
            channel: c.channel,
            expire_at,
            info,
        })
    }
}

fn info_bytes(info: Option<Box<RawValue>>, b64: Option<String>) -> Result<Bytes, TokenError> {
    if let Some(raw) = info {
        return Ok(Bytes::copy_from_slice(raw.get().as_bytes()));
    }
    if let Some(b) = b64 {
        let v = base64::engine::general_purpose::STANDARD
            .decode(b)
            .map_err(|_| TokenError::Invalid("bad b64info".into()))?;
        return Ok(Bytes::from(v));
    }
    Ok(Bytes::new())
}

/// The `kid` (if any) of a token whose header says `"alg": "ES512"`; `None` for other tokens.
fn es512_header(token: &str) -> Option<Option<String>> {
    #[derive(Deserialize)]
    struct Header {
        alg: String,
        kid: Option<String>,
    }
    let head = token.split('.').next()?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(head).ok()?;
    let h: Header = serde_json::from_slice(&raw).ok()?;
    (h.alg == "ES512").then_some(h.kid)
}

/// A P-521 public key from PEM (SubjectPublicKeyInfo); `None` for other keys.
fn p521_from_pem(pem: &str) -> Option<p521::ecdsa::VerifyingKey> {
    use p521::elliptic_curve::sec1::ToEncodedPoint as _;
    use p521::pkcs8::DecodePublicKey as _;
    let pk = p521::PublicKey::from_public_key_pem(pem).ok()?;
    p521::ecdsa::VerifyingKey::from_sec1_bytes(pk.to_encoded_point(false).as_bytes()).ok()
}

/// Makes an HS256 token: `wshub gentoken` and the tests use it.
pub fn make_hs256(secret: &str, claims: &serde_json::Value) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
}

#[cfg(test)]
mod tests;
