//! The node of wshub: what a connection may do and what happens when it does.
//!
//! Owns the session state machine ([`session::Session`]: commands and a clock in, replies,
//! pushes and a disconnect out), the hub of local subscribers ([`hub::Hub`]), namespaces and
//! permissions ([`channel`]), JWT verification ([`token`]), the engine traits and the
//! in-memory engine ([`engine`], [`memory`]), and the operations of the server API
//! ([`node::Node`]).
//!
//! Knows nothing of HTTP, sockets, tokio or Redis. Time comes in as arguments
//! ([`Now`]); the only side channels are the [`connection::ConnectionHandle`]s that the server
//! glue implements.

pub mod channel;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod deadline;
pub mod delivery;
pub mod delta;
pub mod duration;
pub mod engine;
pub mod error;
pub mod filter;
pub mod hub;
pub mod jwks;
pub mod logging;
pub mod memory;
pub mod node;
pub mod prepared;
pub mod proxy;
pub mod pusher;
pub mod ratelimit;
pub mod series;
pub mod session;
pub mod subscription;
pub mod token;
pub mod vecmap;

use std::time::Instant;

/// The current time as a session needs it: a monotonic instant for timers, and Unix
/// seconds for token expiry.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub mono: Instant,
    pub unix: u64,
}

impl Now {
    /// Reads the system clocks. Only the glue calls this; tests build `Now` by hand.
    pub fn system() -> Self {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Now {
            mono: Instant::now(),
            unix,
        }
    }

    /// This time plus `d`.
    pub fn after(&self, d: std::time::Duration) -> Now {
        Now {
            mono: self.mono + d,
            unix: self.unix + d.as_secs(),
        }
    }
}
