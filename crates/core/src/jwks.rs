//! Token keys from a JWKS endpoint (`client.token.jwks_public_endpoint`): the key set is
//! fetched (by the server's [`JwksFetcher`]), cached by `kid`, fetched again when a token
//! names an unknown `kid` (at most once per [`MIN_REFETCH`]) and when the cache is older than
//! [`CACHE_TTL`]. A failed fetch keeps the cached keys: tokens signed with them go on
//! verifying while the endpoint is down.
//!
//! RSA (RS256/384/512), EC P-256/P-384 (ES256/ES384) and Ed25519 (EdDSA) keys are used; other
//! keys of the set are skipped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};
use parking_lot::RwLock;

use crate::engine::BoxFuture;

/// Fetches of the set caused by unknown `kid`s are at most this frequent.
pub const MIN_REFETCH: Duration = Duration::from_secs(1);
/// A set older than this is fetched again before use (kept if that fails).
pub const CACHE_TTL: Duration = Duration::from_secs(3600);

/// GETs the JWKS document. The server crate implements it over HTTP.
pub trait JwksFetcher: Send + Sync {
    fn fetch(&self) -> BoxFuture<'_, Result<Bytes, String>>;
}

/// One usable key: which algorithms it verifies, and the key.
pub struct JwksKey {
    pub algorithms: &'static [Algorithm],
    pub key: DecodingKey,
}

#[derive(Default)]
struct State {
    keys: HashMap<String, Arc<JwksKey>>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
}

/// The cache of one endpoint's keys.
#[derive(Default)]
pub struct JwksCache {
    state: RwLock<State>,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache").field("keys", &self.state.read().keys.len()).finish()
    }
}

impl JwksCache {
    /// The cached key `kid`.
    pub fn get(&self, kid: &str) -> Option<Arc<JwksKey>> {
        self.state.read().keys.get(kid).cloned()
    }

    /// Makes sure `kid` is known if the endpoint has it: fetches the set when `kid` is
    /// unknown or the cache is stale, unless a fetch was tried less than [`MIN_REFETCH`] ago.
    pub async fn ensure(&self, kid: &str, fetcher: &dyn JwksFetcher, now: Instant) {
        {
            let mut s = self.state.write();
            let fresh = s.fetched_at.is_some_and(|t| now.saturating_duration_since(t) < CACHE_TTL);
            if fresh && s.keys.contains_key(kid) {
                return;
            }
            if s.last_attempt.is_some_and(|t| now.saturating_duration_since(t) < MIN_REFETCH) {
                return;
            }
            s.last_attempt = Some(now);
        }
        match fetcher.fetch().await.and_then(|b| parse(&b)) {
            Ok(keys) => {
                metrics::counter!("wshub_jwks_fetches_total", "outcome" => "ok").increment(1);
                let mut s = self.state.write();
                s.keys = keys;
                s.fetched_at = Some(now);
            }
            Err(e) => {
                metrics::counter!("wshub_jwks_fetches_total", "outcome" => "error").increment(1);
                tracing::warn!(error = %e, "JWKS fetch failed; keeping the cached keys");
            }
        }
    }
}

/// The usable keys of a JWKS document, by `kid`.
pub fn parse(body: &[u8]) -> Result<HashMap<String, Arc<JwksKey>>, String> {
    let set: JwkSet = serde_json::from_slice(body).map_err(|e| format!("not a JWK set: {e}"))?;
    let mut out = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else { continue };
        let algorithms: &'static [Algorithm] = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => &[Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => &[Algorithm::ES256],
                EllipticCurve::P384 => &[Algorithm::ES384],
                _ => continue,
            },
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => &[Algorithm::EdDSA],
            _ => continue,
        };
        match DecodingKey::from_jwk(jwk) {
            Ok(key) => {
                out.insert(kid, Arc::new(JwksKey { algorithms, key }));
            }
            Err(e) => tracing::debug!(%kid, error = %e, "JWK skipped"),
        }
    }
    Ok(out)
}
