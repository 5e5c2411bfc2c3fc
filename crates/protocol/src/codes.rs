//! Named codes: never a bare number elsewhere in the code base.

/// Error codes of replies (`error.code`).
pub mod error {
    pub const INTERNAL: u32 = 100;
    pub const UNAUTHORIZED: u32 = 101;
    pub const UNKNOWN_CHANNEL: u32 = 102;
    pub const PERMISSION_DENIED: u32 = 103;
    pub const METHOD_NOT_FOUND: u32 = 104;
    pub const ALREADY_SUBSCRIBED: u32 = 105;
    pub const LIMIT_EXCEEDED: u32 = 106;
    pub const BAD_REQUEST: u32 = 107;
    pub const NOT_AVAILABLE: u32 = 108;
    pub const TOKEN_EXPIRED: u32 = 109;
    pub const EXPIRED: u32 = 110;
    pub const TOO_MANY_REQUESTS: u32 = 111;
    pub const UNRECOVERABLE_POSITION: u32 = 112;
    pub const CONCURRENT_PAGINATION: u32 = 113;

    /// Whether the SDK should retry the command (`temporary: true`).
    pub fn is_temporary(code: u32) -> bool {
        matches!(code, INTERNAL | TOO_MANY_REQUESTS | CONCURRENT_PAGINATION)
    }
}

/// Unsubscribe codes, pushed when the server ends a subscription.
pub mod unsubscribe {
    /// Unsubscribed by the server (the server API's `unsubscribe`, say).
    pub const SERVER: u32 = 2000;
    pub const INSUFFICIENT_STATE: u32 = 2500;
    /// The subscription's token expired and was not refreshed in time.
    pub const EXPIRED: u32 = 2501;
    pub const STATE_INVALIDATED: u32 = 2502;

    /// Whether the SDK subscribes again by itself after this code (PROTOCOL.md: 2500 and
    /// up); below it, the subscription is over.
    pub fn should_resubscribe(code: u32) -> bool {
        code >= INSUFFICIENT_STATE
    }
}

/// Disconnect codes, sent as the WebSocket close code with a plain-text reason.
pub mod disconnect {
    pub const CONNECTION_CLOSED: u16 = 3000;
    pub const SHUTDOWN: u16 = 3001;
    pub const INTERNAL_ERROR: u16 = 3004;
    pub const EXPIRED: u16 = 3005;
    pub const SUBSCRIPTION_EXPIRED: u16 = 3006;
    pub const SLOW: u16 = 3008;
    pub const WRITE_ERROR: u16 = 3009;
    pub const INSUFFICIENT_STATE: u16 = 3010;
    pub const FORCE_RECONNECT: u16 = 3011;
    pub const NO_PONG: u16 = 3012;
    pub const TOO_MANY_REQUESTS: u16 = 3013;
    pub const STATE_INVALIDATED: u16 = 3014;
    pub const INVALID_TOKEN: u16 = 3500;
    pub const BAD_REQUEST: u16 = 3501;
    pub const STALE: u16 = 3502;
    pub const FORCE_DISCONNECT: u16 = 3503;
    pub const CONNECTION_LIMIT: u16 = 3504;
    pub const CHANNEL_LIMIT: u16 = 3505;
    pub const INAPPROPRIATE_PROTOCOL: u16 = 3506;
    pub const PERMISSION_DENIED: u16 = 3507;
    pub const NOT_AVAILABLE: u16 = 3508;
    pub const TOO_MANY_ERRORS: u16 = 3509;

    /// Whether a client should reconnect after this code (PROTOCOL.md: reconnect on
    /// 3000-3499, 4000-4499 and 5000+; stop on 3500-3999 and 4500-4999). RFC 6455 codes
    /// below 3000 are transport trouble, after which reconnecting is right too.
    pub fn should_reconnect(code: u16) -> bool {
        !matches!(code, 3500..=3999 | 4500..=4999)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_ranges() {
        for c in [1001, 1006, 3000, 3001, 3012, 3499, 4000, 4499, 5000] {
            assert!(disconnect::should_reconnect(c), "{c}");
        }
        for c in [3500, 3501, 3999, 4500, 4999] {
            assert!(!disconnect::should_reconnect(c), "{c}");
        }
        assert!(error::is_temporary(error::TOO_MANY_REQUESTS));
        assert!(!unsubscribe::should_resubscribe(unsubscribe::SERVER));
        assert!(unsubscribe::should_resubscribe(unsubscribe::EXPIRED));
        assert!(!error::is_temporary(error::PERMISSION_DENIED));
    }
}
