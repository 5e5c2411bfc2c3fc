//! The echo handler: every message goes back unchanged. Used for conformance runs
//! (Autobahn|Testsuite) and as the transport's example.

use bytes::Bytes;
use wshub_websocket::{Connection, MessageKind};

use crate::driver::HandlerFuture;
use crate::Handler;

#[derive(Debug, Default)]
pub struct Echo;

impl Handler for Echo {
    fn on_message<'a>(&'a mut self, conn: &'a mut Connection, kind: MessageKind, data: Bytes) -> HandlerFuture<'a> {
        conn.send(kind, data);
        Box::pin(std::future::ready(()))
    }
}
