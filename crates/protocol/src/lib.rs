//! The wire vocabulary of wshub's client protocol (PROTOCOL.md): error codes carried in
//! replies and disconnect codes carried in WebSocket close frames.
//!
//! Knows nothing of sockets, tokio or configuration. The Command/Reply/Push types and their
//! JSON and Protobuf codecs join this crate with the Centrifugo-compatible node.

pub mod codes;
