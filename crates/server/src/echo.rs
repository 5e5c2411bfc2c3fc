//! The echo handler: every message goes back unchanged. Used for conformance runs
//! (Autobahn|Testsuite) and as the transport's example.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use wshub_websocket::handshake::HandshakeConfig;
use wshub_websocket::{Connection, MessageKind};

use crate::driver::HandlerFuture;
use crate::endpoints::Endpoints;
use crate::state::ServerConfig;
use crate::Handler;

#[derive(Debug, Default)]
pub struct Echo;

impl Handler for Echo {
    fn on_message<'a>(&'a mut self, conn: &'a mut Connection, kind: MessageKind, data: Bytes) -> HandlerFuture<'a> {
        conn.send(kind, data);
        Box::pin(std::future::ready(()))
    }
}

/// A listener that echoes every WebSocket message on `endpoints`: no node, no API, no HTTP
/// transport. `timeout` bounds both the request headers and a request body.
pub fn config(endpoints: Endpoints, handshake: HandshakeConfig, max_message_size: usize, timeout: Duration) -> ServerConfig {
    ServerConfig {
        endpoints,
        internal: None,
        uni_websocket: crate::state::WsEndpoint {
            handshake: handshake.clone(),
            max_message_size,
            write_timeout: None,
        },
        handshake,
        max_message_size,
        handshake_timeout: timeout,
        read_timeout: Some(timeout),
        handler: Arc::new(|_, _, _| Box::new(Echo)),
        api: None,
        admission: Default::default(),
        write_timeout: None,
        metrics: false,
        instrument_http: false,
        tls: None,
        h2c: false,
        admin: None,
        emulation: Default::default(),
        grpc_api: None,
        uni_grpc: None,
        pusher: None,
    }
}
