//! TLS (`http_server.tls.*`) through rustls with the `ring` provider (pure Rust and
//! assembly, no C toolchain beyond what `ring` needs). HTTP/1.1 only: the WebSocket
//! upgrade needs it, so ALPN offers nothing else. Connections are served by
//! [`crate::tls_stream`], which keeps no buffer while a connection is idle.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::LoadError;
pub use crate::tls_stream::{TlsAcceptor, TlsStream};

/// Builds the acceptor from PEM files; errors name the key at fault.
pub fn acceptor(cert_pem_file: &str, key_pem_file: &str) -> Result<TlsAcceptor, LoadError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_pem_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| LoadError(format!("http_server.tls.cert_pem_file: {cert_pem_file}: {e}")))?;
    if certs.is_empty() {
        return Err(LoadError(format!("http_server.tls.cert_pem_file: {cert_pem_file}: no certificate")));
    }
    let key =
        PrivateKeyDer::from_pem_file(key_pem_file).map_err(|e| LoadError(format!("http_server.tls.key_pem_file: {key_pem_file}: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| LoadError(format!("http_server.tls: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| LoadError(format!("http_server.tls.key_pem_file: {e}")))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::new(Arc::new(cfg)))
}
