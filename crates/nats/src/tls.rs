//! `broker.nats.tls`: the client side of a TLS connection to NATS, from PEM bytes (the
//! server's configuration reads them from a path, PEM text or base64, as Centrifugo).

use std::sync::Arc;

use async_nats::rustls;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The PEMs (empty: not set).
#[derive(Debug, Clone, Default)]
pub struct Tls {
    /// A client certificate and its key, for a server that asks for one.
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// The CA of the server's certificate (empty: the system's roots).
    pub server_ca_pem: Vec<u8>,
    /// Development only: any server certificate is accepted.
    pub insecure_skip_verify: bool,
}

impl Tls {
    /// The rustls client configuration (for the broker, and any other NATS connection of
    /// the server's).
    pub fn client_config(&self) -> Result<ClientConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = if self.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        } else {
            let mut roots = RootCertStore::empty();
            if self.server_ca_pem.is_empty() {
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
            } else {
                for cert in CertificateDer::pem_slice_iter(&self.server_ca_pem) {
                    let cert = cert.map_err(|e| format!("server_ca_pem: {e}"))?;
                    roots.add(cert).map_err(|e| format!("server_ca_pem: {e}"))?;
                }
                if roots.is_empty() {
                    return Err("server_ca_pem: no certificate".into());
                }
            }
            builder.with_root_certificates(roots)
        };
        match (self.cert_pem.is_empty(), self.key_pem.is_empty()) {
            (true, true) => Ok(builder.with_no_client_auth()),
            (false, false) => {
                let certs = CertificateDer::pem_slice_iter(&self.cert_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("cert_pem: {e}"))?;
                let key = PrivateKeyDer::from_pem_slice(&self.key_pem).map_err(|e| format!("key_pem: {e}"))?;
                builder.with_client_auth_cert(certs, key).map_err(|e| e.to_string())
            }
            _ => Err("cert_pem and key_pem go together".into()),
        }
    }
}

/// `insecure_skip_verify`: signatures are still checked, the certificate's chain and name not.
/// (Also the server crate's, for its proxies' `tls.insecure_skip_verify`.)
#[derive(Debug)]
pub struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl AnyCertificate {
    pub fn new(provider: Arc<rustls::crypto::CryptoProvider>) -> Self {
        AnyCertificate(provider)
    }
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
