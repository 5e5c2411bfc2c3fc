//! The error of a server API call or of a client command: one variant per Centrifugo reply
//! code, so that a transport (JSON over HTTP, gRPC, the client protocol) maps a kind, not a
//! number, and a code can only come from [`wshub_protocol::codes::error`] or a backend.

use std::borrow::Cow;

use wshub_protocol::codes::error as code;

/// An error of the server API (or of a client command), as Centrifugo names them.
///
/// The variants whose message varies carry it; the others have Centrifugo's fixed text.
/// [`ApiError::Backend`] is a proxy backend's own code and message, passed on verbatim.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Internal(String),
    #[error("unauthorized")]
    Unauthorized,
    #[error("{0}")]
    UnknownChannel(String),
    #[error("permission denied")]
    PermissionDenied,
    #[error("method not found")]
    MethodNotFound,
    #[error("already subscribed")]
    AlreadySubscribed,
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotAvailable(String),
    #[error("token expired")]
    TokenExpired,
    #[error("expired")]
    Expired,
    #[error("too many requests")]
    TooManyRequests,
    #[error("unrecoverable position")]
    UnrecoverablePosition,
    #[error("concurrent pagination")]
    ConcurrentPagination,
    /// A code outside the list above (a backend's own, 400 and up by Centrifugo's advice).
    #[error("{message}")]
    Backend { code: u32, message: String },
}

impl ApiError {
    /// The error of a code known only at run time (a backend's answer, say): a known code
    /// becomes its variant, keeping the message where the variant has one.
    pub fn new(c: u32, message: &str) -> Self {
        let m = || message.to_string();
        match c {
            code::INTERNAL => ApiError::Internal(m()),
            code::UNAUTHORIZED => ApiError::Unauthorized,
            code::UNKNOWN_CHANNEL => ApiError::UnknownChannel(m()),
            code::PERMISSION_DENIED => ApiError::PermissionDenied,
            code::METHOD_NOT_FOUND => ApiError::MethodNotFound,
            code::ALREADY_SUBSCRIBED => ApiError::AlreadySubscribed,
            code::LIMIT_EXCEEDED => ApiError::LimitExceeded(m()),
            code::BAD_REQUEST => ApiError::BadRequest(m()),
            code::NOT_AVAILABLE => ApiError::NotAvailable(m()),
            code::TOKEN_EXPIRED => ApiError::TokenExpired,
            code::EXPIRED => ApiError::Expired,
            code::TOO_MANY_REQUESTS => ApiError::TooManyRequests,
            code::UNRECOVERABLE_POSITION => ApiError::UnrecoverablePosition,
            code::CONCURRENT_PAGINATION => ApiError::ConcurrentPagination,
            c => ApiError::Backend { code: c, message: m() },
        }
    }

    /// A backend's error, its message kept whatever its code (Centrifugo passes both on).
    pub fn backend(c: u32, message: &str) -> Self {
        match ApiError::new(c, message) {
            e if e.message() == message => e,
            _ => ApiError::Backend {
                code: c,
                message: message.to_string(),
            },
        }
    }

    pub fn bad_request(message: &str) -> Self {
        ApiError::BadRequest(message.to_string())
    }

    /// Centrifugo's "not available" (108): a feature off for this channel or node.
    pub fn not_available() -> Self {
        ApiError::NotAvailable("not available".into())
    }

    /// Centrifugo's "internal error" (100), its cause logged rather than shown.
    pub fn internal() -> Self {
        ApiError::Internal("internal error".into())
    }

    /// The reply code.
    pub fn code(&self) -> u32 {
        match self {
            ApiError::Internal(_) => code::INTERNAL,
            ApiError::Unauthorized => code::UNAUTHORIZED,
            ApiError::UnknownChannel(_) => code::UNKNOWN_CHANNEL,
            ApiError::PermissionDenied => code::PERMISSION_DENIED,
            ApiError::MethodNotFound => code::METHOD_NOT_FOUND,
            ApiError::AlreadySubscribed => code::ALREADY_SUBSCRIBED,
            ApiError::LimitExceeded(_) => code::LIMIT_EXCEEDED,
            ApiError::BadRequest(_) => code::BAD_REQUEST,
            ApiError::NotAvailable(_) => code::NOT_AVAILABLE,
            ApiError::TokenExpired => code::TOKEN_EXPIRED,
            ApiError::Expired => code::EXPIRED,
            ApiError::TooManyRequests => code::TOO_MANY_REQUESTS,
            ApiError::UnrecoverablePosition => code::UNRECOVERABLE_POSITION,
            ApiError::ConcurrentPagination => code::CONCURRENT_PAGINATION,
            ApiError::Backend { code, .. } => *code,
        }
    }

    /// The reply message.
    pub fn message(&self) -> Cow<'_, str> {
        match self {
            ApiError::Internal(m)
            | ApiError::UnknownChannel(m)
            | ApiError::LimitExceeded(m)
            | ApiError::BadRequest(m)
            | ApiError::NotAvailable(m)
            | ApiError::Backend { message: m, .. } => Cow::Borrowed(m),
            other => Cow::Owned(other.to_string()),
        }
    }

    /// Whether an SDK should retry the command (`temporary: true` in its reply).
    pub fn is_temporary(&self) -> bool {
        code::is_temporary(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_new() {
        for c in [
            code::INTERNAL,
            code::UNAUTHORIZED,
            code::UNKNOWN_CHANNEL,
            code::PERMISSION_DENIED,
            code::METHOD_NOT_FOUND,
            code::ALREADY_SUBSCRIBED,
            code::LIMIT_EXCEEDED,
            code::BAD_REQUEST,
            code::NOT_AVAILABLE,
            code::TOKEN_EXPIRED,
            code::EXPIRED,
            code::TOO_MANY_REQUESTS,
            code::UNRECOVERABLE_POSITION,
            code::CONCURRENT_PAGINATION,
            4000,
        ] {
            assert_eq!(ApiError::new(c, "m").code(), c);
        }
        assert!(matches!(ApiError::new(103, "x"), ApiError::PermissionDenied));
        assert_eq!(ApiError::new(107, "bad request: x").message(), "bad request: x");
        assert_eq!(ApiError::new(4000, "custom").message(), "custom");
    }

    #[test]
    fn backend_messages_are_kept() {
        let e = ApiError::backend(103, "not your channel");
        assert_eq!((e.code(), e.message().as_ref()), (103, "not your channel"));
        assert!(matches!(ApiError::backend(103, "permission denied"), ApiError::PermissionDenied));
        assert!(ApiError::backend(100, "x").is_temporary());
    }
}
