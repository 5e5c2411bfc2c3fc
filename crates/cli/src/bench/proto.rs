//! The JSON protocol as the map and shared poll scenarios speak it over a bench client:
//! commands by id, the pushes that come between, and many clients opened for it.

use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use serde_json::Value;

use super::client::{open_many, Client};
use super::endpoint::parse_url;
use super::{Dialect, Target};

/// The messages of the next frame (the JSON protocol puts one per line).
pub(super) async fn next_values(c: &mut Client) -> anyhow::Result<Vec<Value>> {
    let data = c.next_message().await?;
    let mut out = Vec::new();
    for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        out.push(serde_json::from_slice(line)?);
    }
    Ok(out)
}

/// Sends `cmd` as command `id` and waits for its reply, refused if it carries an error; the
/// pushes that came before it are returned beside it.
pub(super) async fn request(c: &mut Client, id: u64, mut cmd: Value) -> anyhow::Result<(Value, Vec<Value>)> {
    cmd["id"] = Value::from(id);
    c.send_text(cmd.to_string()).await?;
    let mut pushes = Vec::new();
    loop {
        for v in next_values(c).await? {
            if v["id"].as_u64() == Some(id) {
                if v.get("error").is_some() {
                    bail!("{cmd} refused: {v}");
                }
                return Ok((v, pushes));
            }
            pushes.push(v);
        }
    }
}

/// `n` WebSocket clients of `url` with the handshake done and nothing sent: the scenario
/// connects and subscribes them itself.
pub(super) async fn open_clients(url: &str, n: usize, deadline: Instant) -> anyhow::Result<Vec<Client>> {
    let ep = Arc::new(parse_url(url)?);
    let t = Arc::new(Target {
        url: url.to_string(),
        dialect: Dialect::Raw,
        channel: String::new(),
        token: String::new(),
        pusher_app: String::new(),
        pid: None,
        timeout: 0,
    });
    let (clients, failed) = open_many(&ep, &t, n, deadline, None).await?;
    if failed > 0 {
        bail!("{failed} of {n} connections failed");
    }
    Ok(clients)
}
