//! The client protocol of wshub (PROTOCOL.md): the Centrifugo client protocol v2.
//!
//! Owns the Command/Reply/Push types ([`messages`]), their JSON and Protobuf codecs
//! ([`codec`]), and the error and disconnect codes ([`codes`]). Knows nothing of sockets,
//! tokio or configuration.

pub mod codec;
pub mod codes;
pub mod entries;
pub mod fossil;
pub mod messages;
pub mod raw;

pub use codec::{decode_commands, encode_reply, Format};
pub use messages::*;
