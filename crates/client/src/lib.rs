//! A Rust client for Centrifugo-protocol servers (wshub, Centrifugo).
//!
//! [`core::ClientCore`] is the sans-IO state machine (reconnect with exponential backoff and
//! full jitter, error classification, token refresh, subscriptions with recovery,
//! heartbeat); [`Client`] is the tokio glue around it over WebSocket.
//!
//! ```no_run
//! # async fn run() {
//! use wshub_client::{Client, ClientConfig, ClientEvent};
//! let (client, mut events) = Client::start("ws://127.0.0.1:8000/connection/websocket", ClientConfig { token: "JWT".into(), ..Default::default() }).unwrap();
//! client.subscribe("news", true);
//! client.connect();
//! while let Some(ev) = events.recv().await {
//!     if let ClientEvent::Publication { channel, data, offset } = ev {
//!         println!("{channel} #{offset}: {}", String::from_utf8_lossy(&data));
//!     }
//! }
//! # }
//! ```

pub mod core;
mod glue;

pub use crate::core::{Action, ClientConfig, ClientEvent, State, SubState};
pub use glue::{Client, ClientError, TokenSource};
