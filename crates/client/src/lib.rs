//! A Rust client for Centrifugo-protocol servers (wshub, Centrifugo).
//!
//! [`core::ClientCore`] is the sans-IO state machine (reconnect with exponential backoff and
//! full jitter, error classification, token refresh, subscriptions with recovery,
//! heartbeat); [`Client`] is the tokio glue around it over WebSocket.
//!
//! A program that subscribes and survives server restarts (with an engine that keeps its
//! history across them, such as Redis, nothing is lost):
//!
//! ```no_run
//! use wshub_client::{Client, ClientConfig, ClientEvent, SubscriptionOptions};
//!
//! #[tokio::main]
//! async fn main() {
//!     let config = ClientConfig { token: std::env::var("TOKEN").unwrap_or_default(), ..Default::default() };
//!     let (client, _connection_events) = Client::start("ws://127.0.0.1:8000/connection/websocket", config).expect("URL");
//!     // Recoverable: after any reconnect (a server restart too), what was missed arrives first.
//!     let opts = SubscriptionOptions { recoverable: true, ..Default::default() };
//!     let mut news = client.new_subscription("chat:lobby", opts);
//!     client.connect();
//!     while let Some(event) = news.next_event().await {
//!         match event {
//!             ClientEvent::Publication { data, offset, .. } => println!("#{offset}: {}", String::from_utf8_lossy(&data)),
//!             ClientEvent::Subscribed { recovered: false, was_recovering: true, .. } => eprintln!("gap: history was lost"),
//!             ClientEvent::Unsubscribed { code, .. } => return eprintln!("unsubscribed: {code}"),
//!             _ => {}
//!         }
//!     }
//! }
//! ```

pub mod core;
mod glue;
mod transport;

pub use crate::core::{Action, ClientConfig, ClientEvent, State, SubState, SubscribeOptions};
pub use glue::{CallError, Client, ClientBuilder, Events, HistoryOptions, SubTokenSource, Subscription, SubscriptionOptions, TokenSource};
pub use transport::ClientError;
pub use wshub_protocol as protocol;
