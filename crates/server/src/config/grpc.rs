//! The gRPC sections: `grpc_api.*` (Centrifugo's gRPC server API) and `uni_grpc.*` (its
//! unidirectional gRPC transport).

use serde::{Deserialize, Serialize};

use super::Tls;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct GrpcApi {
    pub enabled: bool,
    /// `transport`: errors as gRPC statuses; empty: the reply's `error` field.
    pub error_mode: String,
    /// An IP address, `localhost`, or empty: every interface.
    pub address: String,
    pub port: u16,
    /// Checked from the `authorization: apikey KEY` metadata; empty: no check (Centrifugo's
    /// behaviour: put the port where only backends reach it).
    pub key: String,
    pub tls: Tls,
    /// Largest request message in bytes; 0: 4 MiB.
    pub max_receive_message_size: usize,
    /// Serves gRPC server reflection (v1 and v1alpha) beside the API.
    pub reflection: bool,
}

impl Default for GrpcApi {
    fn default() -> Self {
        GrpcApi {
            enabled: false,
            error_mode: String::new(),
            address: String::new(),
            port: 10000,
            key: String::new(),
            tls: Tls::default(),
            max_receive_message_size: 0,
            reflection: false,
        }
    }
}

/// Centrifugo's one error mode besides the default.
pub const TRANSPORT_ERROR_MODE: &str = "transport";

/// `uni_grpc.*`: Centrifugo's unidirectional gRPC transport, on a port of its own.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct UniGrpc {
    pub enabled: bool,
    /// An IP address, `localhost`, or empty: every interface.
    pub address: String,
    pub port: u16,
    /// Largest connect request in bytes; 0: 4 MiB.
    pub max_receive_message_size: usize,
    pub tls: Tls,
}

impl Default for UniGrpc {
    fn default() -> Self {
        UniGrpc {
            enabled: false,
            address: String::new(),
            port: 11000,
            max_receive_message_size: 0,
            tls: Tls::default(),
        }
    }
}
