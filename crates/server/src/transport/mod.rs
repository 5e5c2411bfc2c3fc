//! Every client transport on one connection core.
//!
//! A connection is a [`Conn`] (what the hub and the API reach: the bounded outbox of framed
//! pushes, the control inbox, the waker of the connection's task) and a [`Pump`] (its
//! [`wshub_core::session::Session`], timer, and the one place that applies the session's
//! output: replies, disconnects, 3008 on overflow). A transport supplies two small parts:
//! a [`Framing`] (how a push prepared once by the hub is written on this transport, built
//! once per push in its framing cache) and a [`Sink`] (where the pump writes). So a new
//! transport is one file here plus its route:
//!
//! - [`websocket`]: `/connection/websocket` and `uni_websocket`, in the WebSocket driver's
//!   task;
//! - [`stream`]: HTTP-streaming, SSE and their unidirectional forms, in a task of their own
//!   feeding the response body;
//! - [`raw`]: the streaming endpoints served on a plain TCP socket outside hyper.

mod outbox;
mod pump;
pub mod pusher;
pub mod raw;
pub mod stream;
pub mod uni;
pub mod websocket;

pub use outbox::{queued_bytes, Conn, Framing};
pub use pump::{Dialect, Pump, Sink};

use wshub_core::prepared::FRAME_SLOTS;
use wshub_websocket::SHARED_FRAMES;

/// The framing cache entries of each transport kind ([`wshub_core::prepared::PreparedData::framed`]):
/// WebSocket takes one per shared frame variant (plain, deflated per window size).
const WEBSOCKET_SLOTS: usize = 0;
/// A push followed by a newline (HTTP-streaming in JSON, and its unidirectional form).
const LINE_SLOT: usize = WEBSOCKET_SLOTS + SHARED_FRAMES;
/// A push as one SSE event.
const SSE_SLOT: usize = LINE_SLOT + 1;

const _: () = assert!(SSE_SLOT < FRAME_SLOTS, "every transport's framings fit the cache");
