//! Client TLS for eligd's own connections to its dependencies (Redis, PostgreSQL): rustls
//! with ring, verifying the server's certificate chain against one CA file (or the system's
//! roots) and the host name connected to. There is no setting that skips verification.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{pem::PemObject, CertificateDer};

/// Debian's bundle of the system's trusted roots (package ca-certificates).
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A client configuration trusting the PEM certificates in `roots`. `label` names the
/// setting in errors (`--redis-ca /etc/x.pem`, say).
pub fn client_config(roots: &Path, label: &str) -> Result<rustls::ClientConfig, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(roots)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{label}: {e}"))?;
    let mut store = rustls::RootCertStore::empty();
    for cert in certs {
        store
            .add(cert)
            .map_err(|e| format!("{label}: a certificate is not usable: {e}"))?;
    }
    if store.is_empty() {
        return Err(format!("{label}: no PEM certificate"));
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS: {e}"))?
    .with_root_certificates(store)
    .with_no_client_auth())
}
