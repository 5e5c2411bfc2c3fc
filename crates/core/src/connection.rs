//! The port between the node and a live connection, whatever carries it.
//!
//! The hub, the node's registry and the session reach a connection only through a
//! [`ConnectionHandle`]: they hand it pushes already encoded for its [`Encoding`]
//! ([`crate::prepared::PreparedData`]) and control requests, and ask what transport it is for
//! the proxies and the metrics. How the bytes are framed (a WebSocket frame, an SSE event, a
//! line) and when they are written is the server's business; a transport that frames a push
//! the same way for every connection keeps that frame in the push's cache
//! ([`crate::prepared::PreparedData::framed`]), so that it is built once however many
//! subscribers receive it.

use crate::prepared::PreparedData;

pub use crate::prepared::Encoding;

/// Control requests for a live connection, from the server API.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    Subscribe {
        channel: String,
    },
    Unsubscribe {
        channel: String,
    },
    Disconnect {
        code: u16,
        reason: String,
    },
    Refresh {
        expire_at: Option<u64>,
    },
    /// The subscription's state is gone (a shared poll backend's new epoch): unsubscribe
    /// with 2500, and the SDK subscribes again from scratch.
    Resubscribe {
        channel: String,
    },
    /// The backend ended the subscribe stream `stream` of `channel` ([`crate::proxy::stream`]):
    /// unsubscribe with 2000, or with 2500 when it `failed`. Ignored when the subscription
    /// has another stream by now.
    StreamEnded {
        channel: String,
        stream: u64,
        failed: bool,
    },
}

/// What the node may know of a connection's transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportInfo<'a> {
    /// The transport's name as Centrifugo's proxy requests and metrics carry it.
    pub name: &'static str,
    /// The session id of a connection over an HTTP transport (HTTP-streaming, SSE), which
    /// the client names in its `/emulation` requests: sent in the connect result with the
    /// node's uid. Secret to the client, unlike its client id (presence shows those).
    pub emulation_session: Option<&'a str>,
}

/// The server's side of one connection: its outbound queue and control inbox.
pub trait ConnectionHandle: Send + Sync {
    /// Unique per node.
    fn id(&self) -> u64;

    /// The form of every push this connection is given.
    fn encoding(&self) -> Encoding;

    /// Queues a push, encoded once for [`ConnectionHandle::encoding`] and shared by every
    /// subscriber with that encoding. A full queue is the connection's problem (it closes
    /// with 3008); the hub goes on with the next subscriber.
    fn deliver(&self, push: &PreparedData);

    /// Passes a control request to the connection's task.
    fn control(&self, control: Control);

    fn transport(&self) -> TransportInfo<'_>;
}

/// A connection that records what it is given, for the tests of this crate and of the
/// crates above (feature `testing`).
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use bytes::Bytes;
    use parking_lot::Mutex;
    use wshub_protocol::Format;

    use super::{ConnectionHandle, Control, Encoding, TransportInfo};
    use crate::prepared::PreparedData;

    pub struct Recorder {
        id: u64,
        encoding: Encoding,
        /// The payloads delivered, in order (shared with the push, not copies).
        pub payloads: Mutex<Vec<Bytes>>,
        pub controls: Mutex<Vec<Control>>,
    }

    static NEXT: AtomicU64 = AtomicU64::new(1);

    impl Recorder {
        /// A bidirectional connection with an id unique in the process.
        pub fn new(format: Format) -> Arc<Self> {
            Self::with_encoding(Encoding::new(format, false))
        }

        pub fn with_encoding(encoding: Encoding) -> Arc<Self> {
            Arc::new(Recorder {
                id: NEXT.fetch_add(1, Ordering::Relaxed),
                encoding,
                payloads: Mutex::new(Vec::new()),
                controls: Mutex::new(Vec::new()),
            })
        }

        /// The payloads delivered so far, as text.
        pub fn texts(&self) -> Vec<String> {
            self.payloads
                .lock()
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect()
        }
    }

    impl ConnectionHandle for Recorder {
        fn id(&self) -> u64 {
            self.id
        }
        fn encoding(&self) -> Encoding {
            self.encoding
        }
        fn deliver(&self, push: &PreparedData) {
            self.payloads.lock().push(push.payload().clone());
        }
        fn control(&self, control: Control) {
            self.controls.lock().push(control);
        }
        fn transport(&self) -> TransportInfo<'_> {
            TransportInfo {
                name: "websocket",
                emulation_session: None,
            }
        }
    }
}
