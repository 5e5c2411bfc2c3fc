//! Arbitrary bytes as an HTTP upgrade request: parse with httparse (as a proxy for hyper),
//! then judge with `handshake::accept`. No panic; an accepted request yields valid headers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wshub_websocket::handshake::{accept, HandshakeConfig, OriginPolicy};
use wshub_websocket::DeflateConfig;

fuzz_target!(|data: &[u8]| {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    if !matches!(req.parse(data), Ok(httparse::Status::Complete(_))) {
        return;
    }
    let mut b = http::Request::builder().method(req.method.unwrap_or("GET")).uri(req.path.unwrap_or("/"));
    for h in req.headers.iter() {
        b = b.header(h.name, h.value);
    }
    let Ok(request) = b.body(()) else { return };
    let cfg = HandshakeConfig { protocols: vec!["centrifuge-protobuf".into()], deflate: Some(DeflateConfig::default()), origins: OriginPolicy::SameHost };
    if let Ok(a) = accept(&request, &cfg) {
        let h = a.response_headers();
        assert!(h.contains_key("sec-websocket-accept"));
    }
});
