//! Token keys from a JWKS endpoint (`client.token.jwks_public_endpoint`): the key set is
//! fetched (by the server's [`JwksFetcher`]), cached by `kid`, fetched again when a token
//! names an unknown `kid` (at most once per [`MIN_REFETCH`]) and when the cache is older than
//! [`CACHE_TTL`]. A failed fetch keeps the cached keys: tokens signed with them go on
//! verifying while the endpoint is down.
//!
//! RSA (RS256/384/512), EC P-256/P-384/P-521 (ES256/ES384/ES512) and Ed25519 (EdDSA) keys are
//! used; other keys of the set are skipped.

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

/// GETs a JWKS document. The server crate implements it over HTTP.
pub trait JwksFetcher: Send + Sync {
    fn fetch<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<Bytes, String>>;
}

/// One usable key: which algorithms it verifies, and the key.
pub struct JwksKey {
    /// Empty for a P-521 key (ES512, which `jsonwebtoken` has no name for).
    pub algorithms: &'static [Algorithm],
    pub key: KeyMaterial,
}

/// A key as the verifier uses it.
pub enum KeyMaterial {
    Jwt(DecodingKey),
    /// ES512, verified by [`crate::token`] itself.
    P521(p521::ecdsa::VerifyingKey),
}

#[derive(Default)]
struct State {
    keys: HashMap<String, Arc<JwksKey>>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
    /// A fetch is under way; others wait for it (`waiters`) rather than fetch too.
    in_flight: bool,
    /// Counts finished fetches: a waiter is done when it moves.
    generation: u64,
    waiters: Vec<std::task::Waker>,
}

/// What one `ensure` call does.
enum Plan {
    Done,
    Wait(u64),
    Fetch,
}

/// Ends a fetch, even one whose caller went away: the next caller may fetch, waiters wake.
struct FetchGuard<'a>(&'a JwksCache);

impl Drop for FetchGuard<'_> {
    fn drop(&mut self) {
        let waiters = {
            let mut s = self.0.state.write();
            s.in_flight = false;
            s.generation += 1;
            std::mem::take(&mut s.waiters)
        };
        for w in waiters {
            w.wake();
        }
    }
}

/// Resolves once the fetch under way at `generation` has finished.
struct FetchDone<'a> {
    cache: &'a JwksCache,
    generation: u64,
}

impl std::future::Future for FetchDone<'_> {
    type Output = ();
    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let mut s = self.cache.state.write();
        if s.generation != self.generation {
            return std::task::Poll::Ready(());
        }
        if !s.waiters.iter().any(|w| w.will_wake(cx.waker())) {
            s.waiters.push(cx.waker().clone());
        }
        std::task::Poll::Pending
    }
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
    /// A call that finds a fetch under way waits for it instead.
    pub async fn ensure(&self, kid: &str, url: &str, fetcher: &dyn JwksFetcher, now: Instant) {
        let plan = {
            let mut s = self.state.write();
            let fresh = s.fetched_at.is_some_and(|t| now.saturating_duration_since(t) < CACHE_TTL);
            if fresh && s.keys.contains_key(kid) {
                Plan::Done
            } else if s.in_flight {
                Plan::Wait(s.generation)
            } else if s.last_attempt.is_some_and(|t| now.saturating_duration_since(t) < MIN_REFETCH) {
                Plan::Done
            } else {
                s.last_attempt = Some(now);
                s.in_flight = true;
                Plan::Fetch
            }
        };
        match plan {
            Plan::Done => return,
            Plan::Wait(generation) => {
                return FetchDone { cache: self, generation }.await;
            }
            Plan::Fetch => {}
        }
        let _guard = FetchGuard(self);
        match fetcher.fetch(url).await.and_then(|b| parse(&b)) {
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
                EllipticCurve::P521 => {
                    match p521_from_coordinates(&p.x, &p.y) {
                        Some(k) => {
                            out.insert(
                                kid,
                                Arc::new(JwksKey {
                                    algorithms: &[],
                                    key: KeyMaterial::P521(k),
                                }),
                            );
                        }
                        None => tracing::debug!(%kid, "P-521 JWK skipped: bad coordinates"),
                    }
                    continue;
                }
                _ => continue,
            },
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => &[Algorithm::EdDSA],
            _ => continue,
        };
        match DecodingKey::from_jwk(jwk) {
            Ok(key) => {
                out.insert(
                    kid,
                    Arc::new(JwksKey {
                        algorithms,
                        key: KeyMaterial::Jwt(key),
                    }),
                );
            }
            Err(e) => tracing::debug!(%kid, error = %e, "JWK skipped"),
        }
    }
    Ok(out)
}

/// A P-521 public key from a JWK's base64url `x` and `y` (66 bytes each).
fn p521_from_coordinates(x: &str, y: &str) -> Option<p521::ecdsa::VerifyingKey> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (x, y) = (b64.decode(x).ok()?, b64.decode(y).ok()?);
    if x.len() != 66 || y.len() != 66 {
        return None;
    }
    let mut sec1 = Vec::with_capacity(133);
    sec1.push(4);
    sec1.extend_from_slice(&x);
    sec1.extend_from_slice(&y);
    p521::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::future::Future as _;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll, Waker};

    /// A fetcher that answers only when told to, counting fetches.
    struct Gate {
        fetches: AtomicUsize,
        open: parking_lot::Mutex<bool>,
    }

    const SET: &str = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;

    impl JwksFetcher for Gate {
        fn fetch<'a>(&'a self, _url: &'a str) -> BoxFuture<'a, Result<Bytes, String>> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            Box::pin(std::future::poll_fn(move |_cx| {
                if *self.open.lock() {
                    Poll::Ready(Ok(Bytes::from_static(SET.as_bytes())))
                } else {
                    Poll::Pending
                }
            }))
        }
    }

    /// Callers that find a fetch under way wait for it rather than fetch again, and one
    /// whose fetch is dropped midway does not leave the others waiting forever.
    #[test]
    fn one_fetch_at_a_time_and_waiters_wake() {
        let cache = JwksCache::default();
        let gate = Gate {
            fetches: AtomicUsize::new(0),
            open: parking_lot::Mutex::new(false),
        };
        let now = Instant::now();
        let mut cx = Context::from_waker(Waker::noop());
        let mut first = Box::pin(cache.ensure("k1", "http://x", &gate, now));
        let mut second = Box::pin(cache.ensure("k1", "http://x", &gate, now));
        assert!(first.as_mut().poll(&mut cx).is_pending());
        assert!(second.as_mut().poll(&mut cx).is_pending());
        assert_eq!(gate.fetches.load(Ordering::SeqCst), 1, "the second waits");
        drop(first); // the fetching caller goes away
        assert!(second.as_mut().poll(&mut cx).is_ready(), "the waiter is released");
        *gate.open.lock() = true;
        let later = now + MIN_REFETCH;
        let mut third = Box::pin(cache.ensure("k1", "http://x", &gate, later));
        assert!(third.as_mut().poll(&mut cx).is_ready());
        assert_eq!(gate.fetches.load(Ordering::SeqCst), 2);
        assert!(cache.get("k1").is_some());
        // Known and fresh: no fetch.
        let mut fourth = Box::pin(cache.ensure("k1", "http://x", &gate, later + MIN_REFETCH));
        assert!(fourth.as_mut().poll(&mut cx).is_ready());
        assert_eq!(gate.fetches.load(Ordering::SeqCst), 2);
        assert_eq!(cache.get("k1").unwrap().algorithms, &[Algorithm::EdDSA]);
    }
}
