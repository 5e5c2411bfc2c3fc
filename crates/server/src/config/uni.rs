//! The unidirectional transports' keys: how a refused connect reaches the client
//! (`client.connect_code_to_unidirectional_disconnect`, and the HTTP answer of `uni_sse`
//! and `uni_http_stream`), as Centrifugo v6 reads them.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use wshub_core::config::CodeToDisconnect;
use wshub_core::duration;

use super::{Config, LoadError};

/// `client.connect_code_to_unidirectional_disconnect`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct UniDisconnectTransforms {
    pub enabled: bool,
    pub transforms: Vec<CodeToDisconnect>,
}

impl UniDisconnectTransforms {
    /// The transforms in force (none unless `enabled`, as Centrifugo).
    pub fn in_force(&self) -> Vec<CodeToDisconnect> {
        match self.enabled {
            true => self.transforms.clone(),
            false => Vec::new(),
        }
    }
}

/// `uni_websocket.*`: the unidirectional WebSocket endpoint, with WebSocket settings of
/// its own (Centrifugo's keys; the `websocket.*` ones do not apply to it).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct UniWebSocket {
    pub enabled: bool,
    pub handler_prefix: String,
    pub compression: bool,
    pub compression_min_size: usize,
    pub compression_level: u32,
    /// Centrifugo's (Go's) buffer tuning: wshub sizes its buffers per message, so these
    /// change nothing.
    pub read_buffer_size: usize,
    pub use_write_buffer_pool: bool,
    pub write_buffer_size: usize,
    #[serde(with = "duration")]
    pub write_timeout: Duration,
    pub message_size_limit: usize,
    /// With compression, the largest message after decompression (0: `message_size_limit`,
    /// which wshub applies after decompression already).
    pub decompressed_message_size_limit: usize,
    /// Close without a close frame (Centrifugo before 6.5.1).
    pub disable_closing_handshake: bool,
    /// No `disconnect` push before the close frame (which says the same).
    pub disable_disconnect_push: bool,
    /// Lets the server put several pushes in one message, newline-delimited. wshub sends
    /// one push per message and writes the queued messages of a connection with one
    /// vectored write, which saves the system calls the option is for: a client that reads
    /// joined messages reads these as well.
    pub join_push_messages: bool,
}

impl Default for UniWebSocket {
    fn default() -> Self {
        UniWebSocket {
            enabled: false,
            handler_prefix: "/connection/uni_websocket".into(),
            compression: false,
            compression_min_size: 0,
            compression_level: 1,
            read_buffer_size: 0,
            use_write_buffer_pool: false,
            write_buffer_size: 0,
            write_timeout: Duration::from_secs(1),
            message_size_limit: 65536,
            decompressed_message_size_limit: 0,
            disable_closing_handshake: false,
            disable_disconnect_push: false,
            join_push_messages: false,
        }
    }
}

impl UniWebSocket {
    /// The largest message accepted, after decompression (0: Centrifugo's default).
    pub fn max_message_size(&self) -> usize {
        let limit = match self.message_size_limit {
            0 => UniWebSocket::default().message_size_limit,
            n => n,
        };
        super::sections::after_decompression(self.compression, self.decompressed_message_size_limit, limit)
    }

    /// `write_timeout` (0: Centrifugo's default, 1 s).
    pub fn write_timeout(&self) -> Duration {
        match self.write_timeout.is_zero() {
            true => UniWebSocket::default().write_timeout,
            false => self.write_timeout,
        }
    }
}

/// `uni_sse.*` and `uni_http_stream.*`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct UniHttpTransport {
    pub enabled: bool,
    /// The endpoint's path; empty: the transport's own (`/connection/uni_http_stream`,
    /// `/connection/uni_sse`).
    pub handler_prefix: String,
    /// Largest connect request (the body, or `cf_connect`).
    pub max_request_body_size: usize,
    pub connect_code_to_http_response: ConnectCodeToHttpResponse,
}

impl Default for UniHttpTransport {
    fn default() -> Self {
        UniHttpTransport {
            enabled: false,
            handler_prefix: String::new(),
            max_request_body_size: 65536,
            connect_code_to_http_response: ConnectCodeToHttpResponse::default(),
        }
    }
}

/// `connect_code_to_http_response`: when `enabled`, a refused connect is answered with an
/// HTTP status and body instead of a stream that carries a disconnect push.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct ConnectCodeToHttpResponse {
    pub enabled: bool,
    pub transforms: Vec<CodeToHttpResponse>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct CodeToHttpResponse {
    /// The refusal's code: an error code (109…) or a disconnect code (3500…), as the
    /// connect logic gave it.
    pub code: u32,
    pub to: HttpResponse,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct HttpResponse {
    pub status_code: u16,
    /// Empty: the refusal's own message.
    pub body: String,
}

impl ConnectCodeToHttpResponse {
    /// The answer to a connect refused with `code` and `message` (Centrifugo's
    /// `ConnectErrorToToHTTPResponse`): the matching transform, its body defaulting to the
    /// message; else 500 with its status text. `None` unless enabled.
    pub fn response(&self, code: u32, message: &str) -> Option<(u16, String)> {
        if !self.enabled {
            return None;
        }
        let found = self.transforms.iter().find(|t| code > 0 && t.code == code);
        Some(match found {
            Some(t) if t.to.body.is_empty() => (t.to.status_code, message.to_string()),
            Some(t) => (t.to.status_code, t.to.body.clone()),
            None => (500, "Internal Server Error".to_string()),
        })
    }
}

/// The checks Centrifugo makes of these keys, with its messages' sense.
pub(super) fn validate(c: &Config) -> Result<(), LoadError> {
    if (1..128).contains(&c.uni_websocket.message_size_limit) {
        return Err(LoadError(
            "uni_websocket.message_size_limit: must be at least 128 bytes (0: 65536)".into(),
        ));
    }
    if c.uni_websocket.compression_level > 9 {
        return Err(LoadError("uni_websocket.compression_level: must be 0..9".into()));
    }
    let key = "client.connect_code_to_unidirectional_disconnect.transforms";
    for (i, t) in c.client.connect_code_to_unidirectional_disconnect.transforms.iter().enumerate() {
        if t.code == 0 {
            return Err(LoadError(format!("{key}[{i}].code: must be set")));
        }
        if t.to.code == 0 || u16::try_from(t.to.code).is_err() {
            return Err(LoadError(format!("{key}[{i}].to.code: must be a disconnect code (1..65535)")));
        }
        if !t.to.reason.is_ascii() {
            return Err(LoadError(format!("{key}[{i}].to.reason: must be ASCII")));
        }
    }
    for (section, t) in [("uni_sse", &c.uni_sse), ("uni_http_stream", &c.uni_http_stream)] {
        for (i, t) in t.connect_code_to_http_response.transforms.iter().enumerate() {
            let key = format!("{section}.connect_code_to_http_response.transforms[{i}]");
            if t.code == 0 {
                return Err(LoadError(format!("{key}.code: must be set")));
            }
            if !(100..=999).contains(&t.to.status_code) {
                return Err(LoadError(format!("{key}.to.status_code: must be an HTTP status")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_response_of_a_refusal() {
        let mut t = ConnectCodeToHttpResponse {
            enabled: false,
            transforms: vec![
                CodeToHttpResponse {
                    code: 3500,
                    to: HttpResponse {
                        status_code: 401,
                        body: String::new(),
                    },
                },
                CodeToHttpResponse {
                    code: 109,
                    to: HttpResponse {
                        status_code: 403,
                        body: "renew".into(),
                    },
                },
            ],
        };
        assert_eq!(t.response(3500, "invalid token"), None, "off");
        t.enabled = true;
        assert_eq!(t.response(3500, "invalid token"), Some((401, "invalid token".into())));
        assert_eq!(t.response(109, "token expired"), Some((403, "renew".into())));
        assert_eq!(t.response(3501, "bad request"), Some((500, "Internal Server Error".into())));
    }
}
