//! Close codes (RFC 6455 section 7.4) and which of them may appear on the wire.

/// A WebSocket close code. Conversion from any `u16` is total; [`CloseCode::is_sendable`]
/// says whether a peer may put it in a close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    pub const NORMAL: CloseCode = CloseCode(1000);
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// Never sent on the wire: "no status code was present".
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// Never sent on the wire: the connection dropped without a close frame.
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    pub const MANDATORY_EXTENSION: CloseCode = CloseCode(1010);
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);

    /// Whether this code may be carried by a close frame (RFC 6455 7.4.1 and 7.4.2, and the
    /// IANA registry): 1000-1003, 1007-1014 and the application ranges 3000-4999. 1004, 1005,
    /// 1006 and 1015 are reserved and "MUST NOT be set as a status code in a Close control
    /// frame by an endpoint".
    pub fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl From<u16> for CloseCode {
    fn from(v: u16) -> Self {
        CloseCode(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sendable_codes() {
        for ok in [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999] {
            assert!(CloseCode(ok).is_sendable(), "{ok}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
            assert!(!CloseCode(bad).is_sendable(), "{bad}");
        }
    }
}
