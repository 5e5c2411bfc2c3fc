//! Where the bench's clients connect: the URL checked to be loopback, the transport it
//! names, the source addresses that spread the connections, and the client side of `wss://`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::{bail, Context as _};

use super::http::Pongs;

/// How the bench's clients reach the server, from the URL: `ws://` (WebSocket),
/// `http://…/connection/http_stream` (HTTP-streaming) or `http://…/connection/sse` (SSE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Transport {
    WebSocket,
    HttpStream,
    Sse,
}

/// Where to connect, checked to be loopback.
pub(super) struct Endpoint {
    pub(super) addr: SocketAddr,
    /// Set for `wss://`.
    pub(super) tls: Option<tokio_rustls::TlsConnector>,
    pub(super) host: String,
    pub(super) path: String,
    pub(super) transport: Transport,
    /// The HTTP transports' pongs (shared by every client of the run).
    pub(super) pongs: Arc<Pongs>,
}

pub(super) fn parse_url(url: &str) -> anyhow::Result<Endpoint> {
    let (rest, http, tls) = if let Some(r) = url.strip_prefix("ws://") {
        (r, false, false)
    } else if let Some(r) = url.strip_prefix("wss://") {
        (r, false, true)
    } else if let Some(r) = url.strip_prefix("http://") {
        (r, true, false)
    } else {
        bail!("only ws://, wss:// (WebSocket) and http:// (http_stream, sse) URLs are supported")
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr: SocketAddr = hostport
        .replace("localhost", "127.0.0.1")
        .parse()
        .with_context(|| format!("{hostport}: expected IP:PORT"))?;
    if !addr.ip().is_loopback() {
        bail!("bench targets loopback only (127.0.0.0/8 or ::1), not {}", addr.ip());
    }
    let transport = match (http, path.ends_with("/sse")) {
        (false, _) => Transport::WebSocket,
        (true, true) => Transport::Sse,
        (true, false) => Transport::HttpStream,
    };
    Ok(Endpoint {
        addr,
        tls: if tls { Some(insecure_tls::connector()?) } else { None },
        host: hostport.to_string(),
        path: path.to_string(),
        transport,
        pongs: Arc::default(),
    })
}

/// Source address number `i`, cycling through 127.0.0.2-127.0.0.250 so that the ephemeral
/// port range of one address is never the limit.
pub(super) fn source_addr(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % 249) as u8)), 0)
}

/// The client side of `wss://` against a loopback server: any certificate is accepted (the
/// bench measures the server's cost of TLS, not the trust in a self-signed test certificate).
mod insecure_tls {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};
    use std::sync::Arc;

    #[derive(Debug)]
    struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

    impl ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    pub fn connector() -> anyhow::Result<tokio_rustls::TlsConnector> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth();
        Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
    }
}
