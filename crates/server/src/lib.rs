//! The tokio and hyper glue of wshub: the listener, one task per connection, the HTTP
//! endpoints and the WebSocket connection driver.
//!
//! It holds no protocol logic: the WebSocket rules live in `wshub-websocket` (sans-IO) and
//! what a message means lives in a [`Handler`]. The driver is the short loop of STYLE.md:
//! feed bytes in, drain events, write, wait for readiness or a deadline.

pub mod admin;
pub mod admission;
pub mod api;
pub mod app;
pub mod body;
pub mod cluster;
pub mod config;
pub mod consumers;
pub mod debug;
pub mod delivery;
pub mod drain;
pub mod driver;
pub mod echo;
pub mod emulation;
pub mod endpoints;
pub mod engines;
pub mod framing;
pub mod graphite;
pub mod grpc;
pub mod http;
pub mod lifecycle;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod proxy;
pub mod pusher;
pub mod reload;
pub mod response;
pub mod shared_poll;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod tls_stream;
pub mod transport;
pub mod transports;

pub use driver::{Handler, Outcome};
pub use listener::{bind, bind_internal, serve};
pub use state::{ApiConfig, ServerConfig, Shared};
