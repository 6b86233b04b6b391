//! The listener's TLS: `[server] tls_cert` and `tls_key` read into a rustls server config (ring,
//! TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`), at start and again on every reload.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsFiles;
use crate::error::StartupError;

/// What ALPN offers, in the server's order of preference.
pub const ALPN_H2: &[u8] = b"h2";
/// HTTP/1.1's ALPN id.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Reads `files` and builds the listener's server config: a startup (or reload) error naming
/// the key and the file when one is unreadable, holds no certificate or key, or the key does
/// not fit the certificate.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, StartupError> {
    let cert_error = |reason: String| StartupError::TlsFile {
        key: "tls_cert",
        path: files.cert.clone(),
        reason,
    };
    let key_error = |reason: String| StartupError::TlsFile {
        key: "tls_key",
        path: files.key.clone(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(cert_error("holds no PEM certificate".to_owned()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| key_error(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| cert_error(e.to_string()))?
        .with_no_client_auth()
        // A key that does not match the certificate (or that ring cannot use) is refused here.
        .with_single_cert(certs, key)
        .map_err(|e| key_error(e.to_string()))?;
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}
