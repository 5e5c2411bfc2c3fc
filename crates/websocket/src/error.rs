//! Typed errors of the transport. Each maps to one answer on the wire: a close code for
//! [`ProtocolError`], an HTTP status and a one-line reason for [`HandshakeError`].

use crate::CloseCode;

/// The peer broke RFC 6455/7692 or a configured limit; the connection is closed with
/// [`ProtocolError::close_code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    #[error("client frame not masked")]
    UnmaskedClientFrame,
    #[error("server frame masked")]
    MaskedServerFrame,
    #[error("fragmented control frame")]
    FragmentedControl,
    #[error("control frame payload over 125 bytes")]
    ControlTooLong,
    #[error("continuation frame with no message in progress")]
    UnexpectedContinuation,
    #[error("new data frame while a fragmented message is in progress")]
    ExpectedContinuation,
    #[error("64-bit payload length with the most significant bit set")]
    InvalidLength,
    #[error("close frame with a one-byte payload")]
    CloseLength,
    #[error("close code {0} may not be sent")]
    InvalidCloseCode(u16),
    #[error("invalid UTF-8 in a text message")]
    InvalidUtf8,
    #[error("invalid UTF-8 in a close reason")]
    InvalidCloseReason,
    #[error("message of more than {0} bytes")]
    MessageTooBig(usize),
    #[error("compressed data does not inflate")]
    BadCompressedData,
}

impl ProtocolError {
    /// The close code this error is answered with.
    pub fn close_code(&self) -> CloseCode {
        match self {
            ProtocolError::InvalidUtf8 | ProtocolError::InvalidCloseReason => CloseCode::INVALID_PAYLOAD,
            ProtocolError::MessageTooBig(_) => CloseCode::MESSAGE_TOO_BIG,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

/// Why an upgrade request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("method must be GET")]
    Method,
    #[error("HTTP/1.1 or later required")]
    HttpVersion,
    #[error("missing Host header")]
    MissingHost,
    #[error("missing or invalid Upgrade: websocket header")]
    Upgrade,
    #[error("Connection header must contain the upgrade token")]
    Connection,
    #[error("unsupported Sec-WebSocket-Version, expected 13")]
    Version,
    #[error("missing or invalid Sec-WebSocket-Key (must be 16 bytes in base64)")]
    Key,
    #[error("origin not allowed")]
    Origin,
}

impl HandshakeError {
    /// The HTTP status this refusal is answered with (DESIGN.md's bad-input table).
    pub fn status(&self) -> http::StatusCode {
        match self {
            HandshakeError::Version => http::StatusCode::UPGRADE_REQUIRED,
            HandshakeError::Origin => http::StatusCode::FORBIDDEN,
            _ => http::StatusCode::BAD_REQUEST,
        }
    }

    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            HandshakeError::Method => "method",
            HandshakeError::HttpVersion => "http_version",
            HandshakeError::MissingHost => "host",
            HandshakeError::Upgrade => "upgrade",
            HandshakeError::Connection => "connection",
            HandshakeError::Version => "version",
            HandshakeError::Key => "key",
            HandshakeError::Origin => "origin",
        }
    }
}
