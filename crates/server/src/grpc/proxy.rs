//! gRPC proxies: placeholder until the transport lands.
