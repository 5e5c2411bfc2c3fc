//! The WebSocket transport of wshub: RFC 6455 handshake validation and framing, RFC 7692
//! permessage-deflate, close codes.
//!
//! This crate is **sans-IO**: it never touches a socket, a clock or a task. The server glue
//! feeds it the bytes it read ([`Connection::handle_read`]), pulls out events
//! ([`Connection::poll_event`]) and writes what it asks to send
//! ([`Connection::transmit_slices`]). That keeps every rule testable byte by byte.
//!
//! It knows nothing of channels, sessions or the Centrifugo protocol: a message is bytes.
//!
//! Memory: an idle [`Connection`] holds no read or write buffer. Bytes are buffered only while
//! a frame or message is incomplete or output is pending, and the buffers are released after.
//! Fan-out goes through [`PreparedMessage`]: a message framed (and compressed) once whose
//! bytes are shared by reference count among every connection that sends it.

mod close;
mod connection;
pub mod deflate;
mod error;
pub mod frame;
pub mod handshake;
pub mod mask;
mod prepared;
pub mod utf8;

pub use close::CloseCode;
pub use connection::{Config, Connection, Event, MessageKind, Role, State};
pub use deflate::{DeflateConfig, DeflateParams};
pub use error::{HandshakeError, ProtocolError};
pub use prepared::{PreparedMessage, SharedFrame, SHARED_FRAMES};
