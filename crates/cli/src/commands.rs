//! Centrifugo's helper commands, with its flags and output: `version`, `genconfig`,
//! `checkconfig`, `defaultconfig`, `defaultenv`, `gentoken`, `gensubtoken`, `checktoken`,
//! `checksubtoken`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use wshub_core::token::Verifier;
use wshub_server::config::{leaves, to_node_config, Config, Loaded};

/// Centrifugo's default token lifetime for `gentoken` and `gensubtoken`: one week.
pub const DEFAULT_TOKEN_TTL: i64 = 7 * 24 * 3600;

/// The configuration file a command uses: the one given, else `config.json` in the working
/// directory when there is one (as Centrifugo), else none (defaults).
pub fn config_path(given: Option<PathBuf>) -> Option<PathBuf> {
    given.or_else(|| {
        let p = PathBuf::from("config.json");
        p.exists().then_some(p)
    })
}

pub fn version() {
    println!("wshub v{} (Centrifugo v6 compatible)", env!("CARGO_PKG_VERSION"));
}

fn random_secret() -> String {
    let bytes: [u8; 24] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A value as JSON, YAML or TOML, by the file's extension.
fn render(value: &Value, path: &Path) -> anyhow::Result<String> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("json").to_ascii_lowercase();
    Ok(match ext.as_str() {
        "json" => serde_json::to_string_pretty(value)? + "\n",
        "yaml" | "yml" => serde_yaml_ng::to_string(value)?,
        "toml" => toml::to_string_pretty(value)?,
        other => bail!(
            "{}: unknown extension .{other}: name the file .json, .toml, .yaml or .yml",
            path.display()
        ),
    })
}

/// Prints `text`; a reader that went away (`| head`) ends the output quietly.
fn out(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Writes `text` to `path` (never over an existing file), or prints it for `-`.
fn write_new(path: &Path, text: &str) -> anyhow::Result<()> {
    if path == Path::new("-") {
        return out(text);
    }
    if path.exists() {
        bail!("{} exists: not overwritten", path.display());
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// A minimal configuration with a random API key, HMAC secret and admin password.
pub fn genconfig(output: &Path) -> anyhow::Result<()> {
    let c = json!({
        "http_server": {"port": 8000},
        "http_api": {"key": random_secret()},
        "client": {
            "token": {"hmac_secret_key": random_secret()},
            "allowed_origins": ["http://localhost:3000"]
        },
        "channel": {
            "without_namespace": {"allow_subscribe_for_client": true, "presence": true, "join_leave": true, "history_size": 100, "history_ttl": "300s", "force_recovery": true, "allow_history_for_subscriber": true, "allow_presence_for_subscriber": true},
            "namespaces": []
        }
    });
    write_new(output, &render(&c, output)?)
}

/// Every key at its default (of `base` when given), in the format of `output`'s extension.
pub fn defaultconfig(loaded: &Loaded, output: &Path, dry_run: bool) -> anyhow::Result<()> {
    let value = serde_json::to_value(&loaded.config)?;
    let text = render(&value, output)?;
    if dry_run {
        return out(&text);
    }
    write_new(output, &text)
}

/// Every key as a `CENTRIFUGO_*` variable with its default (Centrifugo's `defaultenv`).
pub fn defaultenv(config: &Config) -> anyhow::Result<()> {
    let mut keys = Vec::new();
    leaves("", &serde_json::to_value(config)?, &mut keys);
    let mut text = String::new();
    for (path, v) in keys {
        let value = match v {
            Value::String(s) => s,
            Value::Array(a) if a.iter().all(Value::is_string) => a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "),
            other => other.to_string(),
        };
        text.push_str(&format!("CENTRIFUGO_{}={value:?}\n", path.replace('.', "_").to_ascii_uppercase()));
    }
    out(&text)
}

fn now_unix() -> anyhow::Result<u64> {
    Ok(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs())
}

/// What `ttl` says of a token's expiry, in Centrifugo's words.
fn ttl_words(ttl: i64) -> String {
    if ttl < 0 {
        return "without expiration".into();
    }
    let (h, m, s) = (ttl / 3600, ttl % 3600 / 60, ttl % 60);
    format!("with expiration TTL {h}h{m}m{s}s")
}

fn user_words(user: &str) -> String {
    match user {
        "" => "anonymous user".into(),
        u => format!("user \"{u}\""),
    }
}

/// An HS256 token with `sub`, `iat` and (for `ttl` > 0) `exp`, plus `extra` claims.
fn make_token(secret: &str, key: &str, user: &str, ttl: i64, extra: Value) -> anyhow::Result<String> {
    if secret.is_empty() {
        bail!("only HMAC-signed tokens can be generated here, and {key} is empty (wshub genconfig makes one); with RSA, ECDSA or JWKS, sign tokens with your own tooling");
    }
    let now = now_unix()?;
    let mut claims = json!({"sub": user, "iat": now});
    if ttl > 0 {
        claims["exp"] = json!(now + ttl.unsigned_abs());
    }
    if let (Value::Object(c), Value::Object(e)) = (&mut claims, extra) {
        c.extend(e);
    }
    Ok(wshub_core::token::make_hs256(secret, &claims)?)
}

pub fn gentoken(config: &Config, user: &str, ttl: i64, quiet: bool) -> anyhow::Result<()> {
    let token = make_token(
        &config.client.token.hmac_secret_key,
        "client.token.hmac_secret_key",
        user,
        ttl,
        json!({}),
    )?;
    if quiet {
        print!("{token}");
    } else {
        println!("HMAC SHA-256 JWT for {} {}:\n{token}", user_words(user), ttl_words(ttl));
    }
    Ok(())
}

pub fn gensubtoken(config: &Config, user: &str, channel: &str, ttl: i64, quiet: bool) -> anyhow::Result<()> {
    if channel.is_empty() {
        bail!("channel is required (-s CHANNEL)");
    }
    let (secret, key) = match config.client.subscription_token.enabled {
        true => (
            &config.client.subscription_token.token.hmac_secret_key,
            "client.subscription_token.hmac_secret_key",
        ),
        false => (&config.client.token.hmac_secret_key, "client.token.hmac_secret_key"),
    };
    let token = make_token(secret, key, user, ttl, json!({"channel": channel}))?;
    if quiet {
        print!("{token}");
    } else {
        println!(
            "HMAC SHA-256 JWT for {} and channel \"{channel}\" {}:\n{token}",
            user_words(user),
            ttl_words(ttl)
        );
    }
    Ok(())
}

/// The claims of a token, for the report (not verified).
fn payload(token: &str) -> String {
    use base64::Engine as _;
    token
        .split('.')
        .nth(1)
        .and_then(|p| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Verifies with the node's own rules (keys, audience, issuer, user claim); JWKS keys are
/// not fetched here.
fn verifier(config: &Config, subscription: bool) -> anyhow::Result<Verifier> {
    let n = to_node_config(config);
    let (cfg, section) = match subscription && n.subscription_token.enabled {
        true => (&n.subscription_token.token, "client.subscription_token"),
        false => (&n.token, "client.token"),
    };
    let mut v = Verifier::new(cfg, section)?;
    if n.insecure_skip_token_signature_verify {
        v.skip_signature_check();
    }
    Ok(v)
}

pub fn checktoken(config: &Config, token: &str) -> anyhow::Result<()> {
    let c = verifier(config, false)?
        .verify_connect(token, now_unix()?)
        .map_err(|e| anyhow::anyhow!("token with claims {} has error: {e}", payload(token)))?;
    let user = match c.user.as_str() {
        "" => "anonymous user".to_string(),
        u => format!("user {u}"),
    };
    println!("valid token for {user}\npayload: {}", payload(token));
    Ok(())
}

pub fn checksubtoken(config: &Config, token: &str) -> anyhow::Result<()> {
    let c = verifier(config, true)?
        .verify_subscribe(token, now_unix()?)
        .map_err(|e| anyhow::anyhow!("token with claims {} has error: {e}", payload(token)))?;
    println!(
        "valid subscription token for {} and channel \"{}\"\npayload: {}",
        user_words(&c.user),
        c.channel,
        payload(token)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_as_centrifugo_prints_them() {
        assert_eq!(ttl_words(DEFAULT_TOKEN_TTL), "with expiration TTL 168h0m0s");
        assert_eq!(ttl_words(-1), "without expiration");
        assert_eq!(user_words(""), "anonymous user");
        assert_eq!(user_words("42"), "user \"42\"");
    }
}
