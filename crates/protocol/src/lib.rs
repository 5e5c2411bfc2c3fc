//! The client protocol of wshub (PROTOCOL.md): the Centrifugo client protocol v2.
//!
//! Owns the Command/Reply/Push types ([`messages`]), their JSON and Protobuf codecs
//! ([`codec`]), the error and disconnect codes ([`codes`]), and the `*` patterns of channel and
//! origin lists ([`wildcard`]: the node and the WebSocket handshake both match them). Knows nothing of sockets,
//! tokio or configuration.

pub mod codec;
pub mod codes;
pub mod entries;
pub mod fossil;
pub mod messages;
pub mod raw;
pub mod wildcard;

pub use codec::{decode_commands, encode_reply, Format};
pub use messages::*;
