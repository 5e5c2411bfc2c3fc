//! The admin web page (`admin.*`, Centrifugo v6 keys): `/admin`, its login, and the server
//! API reached with an admin session instead of the API key.
//!
//! The page is three files built into the binary (no CDN, no Node at run time). Every call
//! it makes is `POST /admin/api/<method>`, answered by the same code as `POST /api/<method>`
//! ([`crate::http`]'s `api` handler): the page adds no second implementation of anything, and the API key
//! never reaches the browser.
//!
//! A session is a cookie holding its expiry and an HMAC-SHA256 of it under `admin.secret`:
//! any node with the same secret accepts it (no sticky sessions needed), and nothing is
//! stored. The cookie is `HttpOnly` (scripts cannot read it) and `SameSite=Strict`; admin
//! API calls must also be `Content-Type: application/json`, which a cross-site form cannot
//! send, and a cross-site `fetch` could only after a CORS preflight that is never granted.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use wshub_core::ratelimit::KeyedWindows;

/// The session cookie's name.
pub const COOKIE: &str = "wshub_admin_session";
/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Login attempts per IP address per [`LOGIN_WINDOW`]; more: 429.
pub const LOGIN_ATTEMPTS: u32 = 10;
pub const LOGIN_WINDOW: Duration = Duration::from_secs(60);

/// The files of the page.
pub const INDEX_HTML: &str = include_str!("../admin/index.html");
pub const ADMIN_JS: &str = include_str!("../admin/admin.js");
pub const ADMIN_CSS: &str = include_str!("../admin/admin.css");

/// `admin.*` as the listener uses it.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub password: String,
    pub secret: String,
    /// `admin.insecure`: every request is an admin (local development only).
    pub insecure: bool,
    /// Mark the cookie `Secure` (the listener serves TLS).
    pub secure_cookie: bool,
    /// Where the page is served (`admin.handler_prefix`; `/admin` by default).
    pub prefix: String,
}

/// The admin side's state: its settings and the login rate limit.
pub struct Admin {
    pub config: AdminConfig,
    /// The page and its script with their paths under `config.prefix` (they name
    /// `/admin/…`).
    pub index_html: bytes::Bytes,
    pub admin_js: bytes::Bytes,
    logins: Mutex<KeyedWindows<IpAddr>>,
}

/// What a login attempt gets.
#[derive(Debug, PartialEq, Eq)]
pub enum Login {
    /// The `Set-Cookie` value of the new session.
    Ok(String),
    WrongPassword,
    TooMany,
}

type HmacSha256 = Hmac<Sha256>;

impl Admin {
    pub fn new(config: AdminConfig) -> Self {
        let under = |text: &'static str| match config.prefix.as_str() {
            "/admin" => bytes::Bytes::from_static(text.as_bytes()),
            p => bytes::Bytes::from(text.replace("/admin/", &format!("{p}/"))),
        };
        Admin {
            index_html: under(INDEX_HTML),
            admin_js: under(ADMIN_JS),
            config,
            logins: Mutex::new(KeyedWindows::new(LOGIN_ATTEMPTS, LOGIN_WINDOW)),
        }
    }

    fn mac(&self, expires: u64) -> Vec<u8> {
        // Any key length is accepted by HMAC: this cannot fail.
        let Ok(mut m) = HmacSha256::new_from_slice(self.config.secret.as_bytes()) else {
            return Vec::new();
        };
        m.update(b"wshub admin session ");
        m.update(expires.to_string().as_bytes());
        m.finalize().into_bytes().to_vec()
    }

    /// A session token valid until `expires` (Unix seconds): `<expires>.<hex mac>`.
    pub fn token(&self, expires: u64) -> String {
        let mac: String = self.mac(expires).iter().map(|b| format!("{b:02x}")).collect();
        format!("{expires}.{mac}")
    }

    /// Whether `token` is a session signed with this secret and not expired at `now`.
    pub fn valid_token(&self, token: &str, now: u64) -> bool {
        let Some((exp, mac)) = token.split_once('.') else { return false };
        let Ok(expires) = exp.parse::<u64>() else { return false };
        if expires <= now || mac.len() != 64 {
            return false;
        }
        let Some(given) = (0..32)
            .map(|i| u8::from_str_radix(mac.get(2 * i..2 * i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()
        else {
            return false;
        };
        bool::from(self.mac(expires).as_slice().ct_eq(&given))
    }

    /// Whether the request's cookies hold a valid session (always, when insecure).
    pub fn authorized(&self, headers: &http::HeaderMap) -> bool {
        if self.config.insecure {
            return true;
        }
        let now = unix_now();
        headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .any(|(k, v)| k == COOKIE && self.valid_token(v, now))
    }

    /// A login from `ip` with `password`.
    pub fn login(&self, ip: IpAddr, password: &str, now: std::time::Instant) -> Login {
        if !self.logins.lock().try_hit(&ip, now) {
            return Login::TooMany;
        }
        let ok = self.config.insecure
            || (!self.config.password.is_empty()
                && bool::from(
                    <sha2::Sha256 as sha2::Digest>::digest(password.as_bytes())
                        .as_slice()
                        .ct_eq(<sha2::Sha256 as sha2::Digest>::digest(self.config.password.as_bytes()).as_slice()),
                ));
        if !ok {
            return Login::WrongPassword;
        }
        let expires = unix_now() + SESSION_TTL.as_secs();
        Login::Ok(self.cookie(&self.token(expires), SESSION_TTL.as_secs()))
    }

    /// The `Set-Cookie` value that holds `token` for `max_age` seconds (0: deletes it).
    pub fn cookie(&self, token: &str, max_age: u64) -> String {
        let secure = if self.config.secure_cookie { "; Secure" } else { "" };
        format!(
            "{COOKIE}={token}; Path={}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}",
            self.config.prefix
        )
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn admin(insecure: bool) -> Admin {
        Admin::new(AdminConfig {
            password: "pw".into(),
            secret: "s3cret".into(),
            insecure,
            secure_cookie: false,
            prefix: "/admin".into(),
        })
    }

    #[test]
    fn tokens_are_checked_for_signature_and_expiry() {
        let a = admin(false);
        let t = a.token(2_000);
        assert!(a.valid_token(&t, 1_999));
        assert!(!a.valid_token(&t, 2_000), "expired");
        let (_, mac) = t.split_once('.').unwrap();
        assert!(!a.valid_token(&format!("3000.{mac}"), 1_999), "expiry moved");
        let other = Admin::new(AdminConfig {
            secret: "other".into(),
            ..a.config.clone()
        });
        assert!(!other.valid_token(&t, 1_999), "another secret");
        for bad in ["", ".", "2000", "2000.", "x.y", "2000.zz", &format!("2000.{}", "é".repeat(32))] {
            assert!(!a.valid_token(bad, 1_000), "{bad:?}");
        }
    }

    #[test]
    fn login_checks_the_password_and_is_rate_limited() {
        let a = admin(false);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let now = std::time::Instant::now();
        assert_eq!(a.login(ip, "nope", now), Login::WrongPassword);
        let Login::Ok(cookie) = a.login(ip, "pw", now) else {
            panic!("login refused")
        };
        assert!(cookie.starts_with(&format!("{COOKIE}=")) && cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        let token = cookie.split(';').next().unwrap().split_once('=').unwrap().1;
        let mut h = http::HeaderMap::new();
        h.insert(http::header::COOKIE, format!("a=b; {COOKIE}={token}").parse().unwrap());
        assert!(a.authorized(&h));
        assert!(!a.authorized(&http::HeaderMap::new()));
        for _ in 2..LOGIN_ATTEMPTS {
            a.login(ip, "nope", now);
        }
        assert_eq!(a.login(ip, "pw", now), Login::TooMany, "even the right password, over the limit");
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(matches!(a.login(other, "pw", now), Login::Ok(_)), "per address");
        assert!(matches!(a.login(ip, "pw", now + 2 * LOGIN_WINDOW), Login::Ok(_)), "window over");
    }

    #[test]
    fn insecure_admits_everyone() {
        let a = admin(true);
        assert!(a.authorized(&http::HeaderMap::new()));
    }
}
