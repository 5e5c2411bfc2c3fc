//! JWT verification for connection and subscription tokens, through `jsonwebtoken`, with
//! Centrifugo v6's rules (`client.token.*`, `client.subscription_token.*`).
//!
//! The key follows the token's `alg`: HS256/384/512 use `hmac_secret_key` (and, until
//! `hmac_previous_secret_key_valid_until`, `hmac_previous_secret_key`), RS256/384/512
//! `rsa_public_key` (PEM), ES256/384/512 `ecdsa_public_key` (PEM), and with
//! `jwks_public_endpoint` the key named by the token's `kid` ([`crate::jwks`]; the endpoint
//! may be a template filled from the issuer's or audience's regex groups, see
//! [`jwks_template`]). ES512 (P-521), which `jsonwebtoken` lacks, is verified here with the
//! `p521` crate.
//!
//! Then the claims: `exp` (expired: error 109, the SDK fetches a new token), `nbf`, `aud`
//! and `iss` (equal to `audience`/`issuer`, or matching `audience_regex`/`issuer_regex`),
//! the user (`sub`, or `user_id_claim`). A connection token may not carry `channel` (that
//! is a subscription token replayed): invalid. Anything invalid closes the connection with
//! 3500 (connection tokens) or refuses the subscription with 103 (subscription tokens).

mod jwks_template;

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use regex::Regex;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::{ConfigError, TokenConfig};
use crate::jwks::JwksCache;
use crate::proxy::{Override, SubOptions};

pub use jwks_template::JwksSource;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("token expired")]
    Expired,
}

impl TokenError {
    /// A short reason for logs: never the token, never a key.
    pub fn reason(&self) -> &str {
        match self {
            TokenError::Invalid(r) => r,
            TokenError::Expired => "expired",
        }
    }
}

fn invalid(m: impl Into<String>) -> TokenError {
    TokenError::Invalid(m.into())
}

/// What a connection token grants.
#[derive(Debug, Clone, Default)]
pub struct ConnectClaims {
    /// The user (`sub`, or the claim `user_id_claim` names); empty is anonymous.
    pub user: String,
    /// When the connection expires (Unix seconds): `expire_at` if present, else `exp`.
    pub expire_at: Option<u64>,
    /// `info` (raw JSON) or `b64info` (decoded).
    pub info: Bytes,
    /// Server-side subscriptions: `channels` and the keys of `subs`.
    pub channels: Vec<String>,
    /// `subs`: per channel, its `info`, `data` and `override` (validated).
    pub subs: BTreeMap<String, SubOptions>,
    /// `meta`: kept with the connection and given to proxies that include connection meta.
    pub meta: Option<Box<RawValue>>,
}

/// What a subscription token grants.
#[derive(Debug, Clone, Default)]
pub struct SubscribeClaims {
    pub user: String,
    pub channel: String,
    /// `client`: when set, only this client id may use the token.
    pub client: String,
    pub expire_at: Option<u64>,
    pub info: Bytes,
    /// `data` or `b64data`: sent to the subscriber in the subscribe result.
    pub data: Bytes,
    pub override_: Option<Override>,
}

#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    sub: String,
    exp: Option<f64>,
    nbf: Option<f64>,
    expire_at: Option<i64>,
    info: Option<Box<RawValue>>,
    #[serde(default)]
    b64info: String,
    data: Option<Box<RawValue>>,
    #[serde(default)]
    b64data: String,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    subs: BTreeMap<String, SubOptions>,
    #[serde(default)]
    channel: String,
    #[serde(default)]
    client: String,
    meta: Option<Box<RawValue>>,
    #[serde(rename = "override")]
    override_: Option<Override>,
    aud: Option<Audience>,
    iss: Option<String>,
}

/// `aud`: one string or a list (RFC 7519).
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn iter(&self) -> impl Iterator<Item = &str> {
        let s: &[String] = match self {
            Audience::One(a) => std::slice::from_ref(a),
            Audience::Many(v) => v,
        };
        s.iter().map(String::as_str)
    }
}

/// Verifies tokens with the configured keys.
pub struct Verifier {
    hmac: Option<DecodingKey>,
    /// `hmac_previous_secret_key`, with the Unix second it stops being accepted.
    hmac_previous: Option<(DecodingKey, i64)>,
    rsa: Option<DecodingKey>,
    ec: Option<DecodingKey>,
    /// `ecdsa_public_key` when it is a P-521 key (ES512).
    ec521: Option<p521::ecdsa::VerifyingKey>,
    /// Keys by `kid` from `jwks_public_endpoint`.
    jwks: Option<JwksSource>,
    audience: String,
    audience_re: Option<Regex>,
    issuer: String,
    issuer_re: Option<Regex>,
    user_id_claim: String,
    /// `client.insecure_skip_token_signature_verify`.
    skip_signature: bool,
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
    /// A verifier of the keys `cfg` sets; errors name their key under `section`
    /// (`client.token` or `client.subscription_token`).
    pub fn new(cfg: &TokenConfig, section: &str) -> Result<Self, ConfigError> {
        let cfg_err = |key: &str, message: String| ConfigError {
            key: format!("{section}.{key}"),
            message,
        };
        let bad = |key: &str, e: jsonwebtoken::errors::Error| cfg_err(key, e.to_string());
        let regex = |key: &str, r: &str| match r {
            "" => Ok(None),
            r => Regex::new(r)
                .map(Some)
                .map_err(|e| cfg_err(key, format!("not a valid regular expression: {e}"))),
        };
        if !cfg.audience.is_empty() && !cfg.audience_regex.is_empty() {
            return Err(cfg_err("audience_regex", "cannot be used together with audience".into()));
        }
        if !cfg.issuer.is_empty() && !cfg.issuer_regex.is_empty() {
            return Err(cfg_err("issuer_regex", "cannot be used together with issuer".into()));
        }
        let audience_re = regex("audience_regex", &cfg.audience_regex)?;
        let issuer_re = regex("issuer_regex", &cfg.issuer_regex)?;
        let hmac_previous = match cfg.hmac_previous_secret_key.as_str() {
            "" => None,
            k => Some((DecodingKey::from_secret(k.as_bytes()), cfg.hmac_previous_secret_key_valid_until)),
        };
        if !cfg.user_id_claim.is_empty() && !cfg.user_id_claim.chars().all(|c| c.is_ascii_alphabetic() || c == '_') {
            return Err(cfg_err("user_id_claim", "may hold only letters and '_'".into()));
        }
        let ec521 = match cfg.ecdsa_public_key.as_str() {
            "" => None,
            pem => p521_from_pem(pem),
        };
        let jwks = match cfg.jwks_public_endpoint.as_str() {
            "" => None,
            u => Some(
                JwksSource::new(u, [&issuer_re, &audience_re], cfg.insecure_skip_jwks_endpoint_safety_check)
                    .map_err(|m| cfg_err("jwks_public_endpoint", m))?,
            ),
        };
        Ok(Verifier {
            hmac: (!cfg.hmac_secret_key.is_empty()).then(|| DecodingKey::from_secret(cfg.hmac_secret_key.as_bytes())),
            hmac_previous,
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
            jwks,
            audience: cfg.audience.clone(),
            audience_re,
            issuer: cfg.issuer.clone(),
            issuer_re,
            user_id_claim: cfg.user_id_claim.clone(),
            skip_signature: false,
        })
    }

    /// `client.insecure_skip_token_signature_verify`: claims are read, signatures not
    /// checked. Development only.
    pub fn skip_signature_check(&mut self) {
        self.skip_signature = true;
    }

    /// The JWKS cache and URL that hold `token`'s key, when `jwks_public_endpoint` is set
    /// (and, for a template, the token's claims fill it).
    pub fn jwks_for(&self, token: &str) -> Option<(Arc<JwksCache>, String)> {
        self.jwks_source(self.jwks.as_ref()?, token).ok()
    }

    /// The cache and URL of `src` for `token`: the claims are read only when the endpoint is
    /// a template they fill.
    fn jwks_source(&self, src: &JwksSource, token: &str) -> Result<(Arc<JwksCache>, String), TokenError> {
        match src.is_template() {
            true => src.resolve(&self.template_vars(&unverified_claims(token)?)),
            false => src.resolve(&[]),
        }
    }

    /// Whether keys come from a JWKS endpoint.
    pub fn has_jwks(&self) -> bool {
        self.jwks.is_some()
    }

    /// Whether any key is configured (or signatures are not checked at all).
    pub fn is_configured(&self) -> bool {
        self.hmac.is_some() || self.rsa.is_some() || self.ec.is_some() || self.ec521.is_some() || self.jwks.is_some() || self.skip_signature
    }

    /// The values of the issuer's and audience's named regex groups, for a JWKS template.
    fn template_vars(&self, c: &RawClaims) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut collect = |re: &Option<Regex>, values: Vec<&str>| {
            let Some(re) = re else { return };
            for v in values {
                if let Some(caps) = re.captures(v) {
                    for name in re.capture_names().flatten() {
                        if let Some(m) = caps.name(name) {
                            out.push((name.to_string(), m.as_str().to_string()));
                        }
                    }
                    return;
                }
            }
        };
        collect(&self.issuer_re, c.iss.iter().map(String::as_str).collect());
        collect(&self.audience_re, c.aud.as_ref().map(|a| a.iter().collect()).unwrap_or_default());
        out
    }

    /// Checks the signature, then returns the claims as JSON text.
    fn check_signature(&self, token: &str, now_unix: u64) -> Result<(), TokenError> {
        if self.skip_signature {
            return Ok(());
        }
        if let Some(kid) = es512_header(token) {
            return self.check_es512(token, kid.as_deref());
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| invalid(e.to_string()))?;
        let jwk;
        let key = match (&self.jwks, &header.kid) {
            (Some(src), Some(kid)) => {
                let (cache, _) = self.jwks_source(src, token)?;
                jwk = cache.get(kid).ok_or_else(|| invalid(format!("unknown key id {kid}")))?;
                match &jwk.key {
                    crate::jwks::KeyMaterial::Jwt(k) if jwk.algorithms.contains(&header.alg) => Some(k),
                    _ => return Err(invalid(format!("algorithm {:?} does not match key {kid}", header.alg))),
                }
            }
            _ => None,
        };
        let hmac_alg = matches!(header.alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512);
        let key = match key {
            Some(k) => Some(k),
            None => match header.alg {
                Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => self.hmac.as_ref(),
                Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => self.rsa.as_ref(),
                Algorithm::ES256 | Algorithm::ES384 => self.ec.as_ref(),
                other => return Err(invalid(format!("algorithm {other:?} not accepted"))),
            },
        };
        let previous = self
            .hmac_previous
            .as_ref()
            .filter(|(_, until)| hmac_alg && (*until == 0 || i64::try_from(now_unix).is_ok_and(|now| now <= *until)))
            .map(|(k, _)| k);
        let Some(key) = key.or(previous) else {
            return Err(invalid(format!("no key configured for {:?}", header.alg)));
        };
        let mut v = Validation::new(header.alg);
        v.required_spec_claims.clear();
        // Claims are checked by the caller against its clock, so that tests control time.
        v.validate_exp = false;
        v.validate_nbf = false;
        v.validate_aud = false;
        v.leeway = 0;
        let verify = |key: &DecodingKey| jsonwebtoken::decode::<serde::de::IgnoredAny>(token, key, &v);
        match verify(key) {
            Ok(_) => Ok(()),
            // The key being rotated out, while it is still accepted.
            Err(_) if previous.is_some_and(|p| !std::ptr::eq(p, key)) => match previous.map(verify) {
                Some(Ok(_)) => Ok(()),
                _ => Err(invalid("signature mismatch")),
            },
            Err(e) => Err(invalid(e.to_string())),
        }
    }

    /// ES512: the signature (P-521, SHA-512, `r || s`) with the `kid`'s JWKS key or the
    /// configured P-521 `ecdsa_public_key`.
    fn check_es512(&self, token: &str, kid: Option<&str>) -> Result<(), TokenError> {
        use p521::ecdsa::signature::Verifier as _;
        let jwk;
        let key = match (&self.jwks, kid) {
            (Some(src), Some(kid)) => {
                let (cache, _) = self.jwks_source(src, token)?;
                jwk = cache.get(kid).ok_or_else(|| invalid(format!("unknown key id {kid}")))?;
                match &jwk.key {
                    crate::jwks::KeyMaterial::P521(k) => k,
                    crate::jwks::KeyMaterial::Jwt(_) => return Err(invalid("algorithm ES512 does not match the key")),
                }
            }
            _ => self.ec521.as_ref().ok_or_else(|| invalid("no key configured for ES512"))?,
        };
        let (signed, sig) = token.rsplit_once('.').ok_or_else(|| invalid("not a JWT"))?;
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| invalid("bad signature encoding"))?;
        let sig = p521::ecdsa::Signature::from_slice(&sig).map_err(|_| invalid("bad signature"))?;
        key.verify(signed.as_bytes(), &sig).map_err(|_| invalid("signature mismatch"))
    }

    /// The claims every token shares (after [`Verifier::check_signature`]): time, audience,
    /// issuer, user.
    /// `check` runs on the claims before the time checks (Centrifugo refuses a connection
    /// token's `channel` claim before it looks at `exp`).
    fn decode(
        &self,
        token: &str,
        now_unix: u64,
        check: impl FnOnce(&RawClaims) -> Result<(), TokenError>,
    ) -> Result<(RawClaims, String), TokenError> {
        let payload = payload(token)?;
        let c: RawClaims = serde_json::from_slice(&payload).map_err(|e| invalid(format!("bad claims: {e}")))?;
        check(&c)?;
        // Centrifugo: `exp` strictly after now, `nbf` strictly before; either one failing is
        // "expired" (109: the SDK asks its backend for a fresh token).
        let now = now_unix as f64;
        if c.exp.is_some_and(|exp| exp <= now) || c.nbf.is_some_and(|nbf| nbf >= now) {
            return Err(TokenError::Expired);
        }
        if !self.audience.is_empty() && !c.aud.as_ref().is_some_and(|a| a.iter().any(|x| x == self.audience)) {
            return Err(invalid("wrong audience"));
        }
        if let Some(re) = &self.audience_re {
            if !c.aud.as_ref().is_some_and(|a| a.iter().any(|x| re.is_match(x))) {
                return Err(invalid("wrong audience"));
            }
        }
        if !self.issuer.is_empty() && c.iss.as_deref() != Some(self.issuer.as_str()) {
            return Err(invalid("wrong issuer"));
        }
        if let Some(re) = &self.issuer_re {
            if !c.iss.as_deref().is_some_and(|i| re.is_match(i)) {
                return Err(invalid("wrong issuer"));
            }
        }
        let user = match self.user_id_claim.as_str() {
            "" | "sub" => c.sub.clone(),
            claim => {
                let v: serde_json::Value = serde_json::from_slice(&payload).map_err(|e| invalid(e.to_string()))?;
                // As Centrifugo (gjson's String()): missing is anonymous, a number its text.
                match v.get(claim) {
                    None | Some(serde_json::Value::Null) => String::new(),
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                }
            }
        };
        Ok((c, user))
    }

    /// Verifies a connection token.
    pub fn verify_connect(&self, token: &str, now_unix: u64) -> Result<ConnectClaims, TokenError> {
        self.check_signature(token, now_unix)?;
        let (c, user) = self.decode(token, now_unix, |c| match c.channel.is_empty() {
            true => Ok(()),
            // Centrifugo: "connection JWT can not contain channel claim" (a subscription
            // token used to connect).
            false => Err(invalid("connection token with a channel claim")),
        })?;
        let info = bytes_of(c.info.as_deref(), &c.b64info, "b64info")?;
        for (ch, o) in &c.subs {
            bytes_of(o.info.as_deref(), &o.b64info, "subs b64info").map_err(|_| invalid(format!("subs {ch}: bad b64info")))?;
            bytes_of(o.data.as_deref(), &o.b64data, "subs b64data").map_err(|_| invalid(format!("subs {ch}: bad b64data")))?;
        }
        // As Centrifugo: `channels` only when `subs` is empty.
        let channels = match c.subs.is_empty() {
            true => c.channels,
            false => c.subs.keys().cloned().collect(),
        };
        Ok(ConnectClaims {
            user,
            expire_at: expiry(c.expire_at, c.exp),
            info,
            channels,
            subs: c.subs,
            meta: c.meta,
        })
    }

    /// Verifies a subscription token.
    pub fn verify_subscribe(&self, token: &str, now_unix: u64) -> Result<SubscribeClaims, TokenError> {
        self.check_signature(token, now_unix)?;
        let (c, user) = self.decode(token, now_unix, |_| Ok(()))?;
        if c.channel.is_empty() {
            return Err(invalid("no channel claim"));
        }
        Ok(SubscribeClaims {
            user,
            channel: c.channel,
            client: c.client,
            expire_at: expiry(c.expire_at, c.exp),
            info: bytes_of(c.info.as_deref(), &c.b64info, "b64info")?,
            data: bytes_of(c.data.as_deref(), &c.b64data, "b64data")?,
            override_: c.override_,
        })
    }
}

/// `expire_at` when present (0 or less: never), else `exp` (Unix seconds, saturated).
fn expiry(expire_at: Option<i64>, exp: Option<f64>) -> Option<u64> {
    match expire_at {
        Some(t) => u64::try_from(t).ok().filter(|&t| t > 0),
        // `as` saturates: a huge `exp` is "far away", never a wrap-around.
        None => exp.map(|e| e as u64),
    }
}

/// The token's payload, decoded (not verified).
fn payload(token: &str) -> Result<Vec<u8>, TokenError> {
    let mut parts = token.split('.');
    let (Some(_), Some(p), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(invalid("not a JWT"));
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(p)
        .map_err(|_| invalid("bad payload encoding"))
}

/// The claims before the signature is checked: only to find which key checks it.
fn unverified_claims(token: &str) -> Result<RawClaims, TokenError> {
    serde_json::from_slice(&payload(token)?).map_err(|e| invalid(format!("bad claims: {e}")))
}

/// Raw JSON or base64 bytes of a claim pair (`info`/`b64info`, `data`/`b64data`).
fn bytes_of(raw: Option<&RawValue>, b64: &str, what: &str) -> Result<Bytes, TokenError> {
    if !b64.is_empty() {
        return base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map(Bytes::from)
            .map_err(|_| invalid(format!("bad {what}")));
    }
    Ok(raw.map_or_else(Bytes::new, |r| Bytes::copy_from_slice(r.get().as_bytes())))
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
