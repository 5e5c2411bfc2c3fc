//! Server API request bodies (`POST /api/<method>`): `wshub_server::api::parse_request`
//! never panics, whatever the method name and body. The first byte (mod 16) picks one of
//! the API's methods (`wshub_server::api::METHODS`; past them, the method name is taken
//! from the body up to its first space, so that unknown names are tried too); the rest is
//! the body.
//!
//! Needs `parse_request(method: &str, body: &[u8]) -> Result<_, _>` (branch h-server) and
//! the `api` feature: `cargo fuzz run --features api api_body`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let (method, body) = match wshub_server::api::METHODS.get(usize::from(pick % 16)) {
        Some(m) => (*m, rest),
        None => {
            let (name, body) = rest.split_at(rest.iter().position(|&b| b == b' ').unwrap_or(rest.len()));
            let Ok(name) = std::str::from_utf8(name) else { return };
            (name, body.get(1..).unwrap_or_default())
        }
    };
    let _ = wshub_server::api::parse_request(method, body);
});
