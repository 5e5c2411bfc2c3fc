//! The echo handler: every message goes back unchanged. Used for conformance runs
//! (Autobahn|Testsuite) and as the transport's example.

use bytes::Bytes;
use wshub_websocket::{Connection, MessageKind};

use crate::Handler;

#[derive(Debug, Default)]
pub struct Echo;

impl Handler for Echo {
    fn on_message(&mut self, conn: &mut Connection, kind: MessageKind, data: Bytes) {
        conn.send(kind, data);
    }
}
