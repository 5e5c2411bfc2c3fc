//! TLS (`http_server.tls`, `http_server.internal_tls`) through rustls with the `ring`
//! provider. ALPN offers `h2` and `http/1.1`, as Go's server (and so Centrifugo) does: the
//! HTTP transports and the API may run over HTTP/2, a WebSocket client offers `http/1.1`
//! only and gets it. Connections are served by [`crate::tls_stream`], which keeps no buffer
//! while a connection is idle.

use std::sync::Arc;

use base64::Engine;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::LoadError;
use crate::config::Tls;
pub use crate::tls_stream::{TlsAcceptor, TlsStream};

/// ALPN protocol id of HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN protocol id of HTTP/1.1.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Reads a PEM value as Centrifugo's `PEMData` does: PEM text as it is, else base64 of PEM
/// text, else the path of a file holding PEM text. The error never repeats the value (it may
/// be a private key).
pub fn pem(value: &str) -> Result<Vec<u8>, String> {
    let looks_pem = |b: &[u8]| std::str::from_utf8(b).is_ok_and(|s| s.contains("-----BEGIN ") && s.contains("-----END "));
    if looks_pem(value.as_bytes()) {
        return Ok(value.as_bytes().to_vec());
    }
    if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(value.trim()) {
        if looks_pem(&decoded) {
            return Ok(decoded);
        }
    }
    match std::fs::read(value.trim()) {
        Ok(content) if looks_pem(&content) => Ok(content),
        Ok(_) => Err(format!("file {value:?} holds no PEM data")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("not PEM text, not base64 of PEM text, and no such file".to_string()),
        Err(e) => Err(format!("file {value:?}: {e}")),
    }
}

/// The certificates of a PEM value (`key` names it in errors).
pub fn certificates(key: &str, value: &str) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    let bytes = pem(value).map_err(|e| LoadError(format!("{key}: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LoadError(format!("{key}: {e}")))?;
    if certs.is_empty() {
        return Err(LoadError(format!("{key}: no certificate")));
    }
    Ok(certs)
}

/// A root store of the certificates of a PEM value.
pub fn roots(key: &str, value: &str) -> Result<RootCertStore, LoadError> {
    let mut store = RootCertStore::empty();
    for cert in certificates(key, value)? {
        store.add(cert).map_err(|e| LoadError(format!("{key}: {e}")))?;
    }
    Ok(store)
}

/// The certificate chain and private key of `section.cert_pem` / `section.key_pem`.
pub fn certificate_and_key(
    section: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), LoadError> {
    let certs = certificates(&format!("{section}.cert_pem"), cert_pem)?;
    let key_name = format!("{section}.key_pem");
    let key_bytes = pem(key_pem).map_err(|e| LoadError(format!("{key_name}: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| LoadError(format!("{key_name}: {e}")))?;
    Ok((certs, key))
}

/// Builds the acceptor of a TLS section (`section` names it in errors, such as
/// `http_server.tls`). With `client_ca_pem`, every client must present a certificate that
/// CA signed (Go's `RequireAndVerifyClientCert`, which Centrifugo sets).
pub fn acceptor(section: &str, tls: &Tls) -> Result<TlsAcceptor, LoadError> {
    let (certs, key) = certificate_and_key(section, tls.cert(), tls.key())?;
    let key_name = format!("{section}.key_pem");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| LoadError(format!("{section}: {e}")))?;
    let builder = if tls.client_ca_pem.is_empty() {
        builder.with_no_client_auth()
    } else {
        let ca_key = format!("{section}.client_ca_pem");
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&ca_key, &tls.client_ca_pem)?), provider)
            .build()
            .map_err(|e| LoadError(format!("{ca_key}: {e}")))?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| LoadError(format!("{key_name}: {e}")))?;
    cfg.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
    Ok(TlsAcceptor::new(Arc::new(cfg)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pem_text() -> String {
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .unwrap()
            .cert
            .pem()
    }

    #[test]
    fn pem_reads_text_base64_and_path_in_centrifugos_order() {
        let text = pem_text();
        assert_eq!(pem(&text).unwrap(), text.as_bytes());
        let b64 = base64::engine::general_purpose::STANDARD.encode(&text);
        assert_eq!(pem(&b64).unwrap(), text.as_bytes());
        let dir = std::env::temp_dir().join(format!("wshub-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.pem");
        std::fs::write(&path, &text).unwrap();
        assert_eq!(pem(path.to_str().unwrap()).unwrap(), text.as_bytes());
        std::fs::write(&path, "not pem").unwrap();
        assert!(pem(path.to_str().unwrap()).unwrap_err().contains("no PEM data"));
        let _ = std::fs::remove_dir_all(&dir);
        let e = pem("c2VjcmV0").unwrap_err();
        assert!(e.contains("no such file") && !e.contains("c2VjcmV0"), "{e}");
    }

    #[test]
    fn errors_name_the_key_and_not_the_value() {
        let tls = Tls {
            enabled: true,
            cert_pem: pem_text(),
            key_pem: "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n".into(),
            ..Tls::default()
        };
        let e = acceptor("http_server.tls", &tls).err().unwrap().0;
        assert!(e.starts_with("http_server.tls.key_pem"), "{e}");
        assert!(!e.contains("c2VjcmV0"), "{e}");
        let tls = Tls {
            client_ca_pem: "/nonexistent/ca.pem".into(),
            ..tls
        };
        let e = acceptor("http_server.internal_tls", &tls).err().unwrap().0;
        assert!(e.starts_with("http_server.internal_tls."), "{e}");
    }
}
