//! HTTPS (`--tls-cert`, `--tls-key`): rustls with the certificate chain and key read from PEM
//! files. The configuration in force sits behind an `ArcSwap`: every new connection takes the
//! one in force when it arrives, and a SIGHUP reads the files again and swaps the new one in,
//! so a renewed certificate is served without a restart or a dropped connection. Files that
//! fail to load leave the certificate in force (logged and counted).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("--tls-cert {path}: {message}")]
    Cert { path: String, message: String },
    #[error("--tls-key {path}: {message}")]
    Key { path: String, message: String },
    #[error("--tls-cert and --tls-key do not go together: {0}")]
    Mismatch(String),
}

/// The TLS configuration in force, and where it is read from.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<ServerConfig>,
}

fn load(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let cert_error = |message: String| TlsError::Cert {
        path: cert.display().to_string(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("no PEM certificate in the file".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        message: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Mismatch(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

impl Tls {
    /// Reads both files; an error here stops the service from starting.
    pub fn open(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
        let config = load(cert, key)?;
        Ok(Tls {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: ArcSwap::from_pointee(config),
        })
    }

    /// The configuration for a new connection.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// Reads the files again; on an error the configuration in force stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = load(&self.cert, &self.key)?;
        self.current.store(Arc::new(config));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
        (cert, key)
    }

    #[test]
    fn certificates_load_reload_and_bad_files_are_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path(), "a");
        let tls = Tls::open(&cert, &key).unwrap();
        let first = tls.config();
        let (other_cert, other_key) = write_pair(dir.path(), "b");
        std::fs::copy(&other_cert, &cert).unwrap();
        std::fs::copy(&other_key, &key).unwrap();
        tls.reload().unwrap();
        assert!(!Arc::ptr_eq(&first, &tls.config()));
        // A broken file at reload keeps the one in force.
        std::fs::write(&cert, "not a certificate").unwrap();
        let before = tls.config();
        assert!(tls.reload().is_err());
        assert!(Arc::ptr_eq(&before, &tls.config()));
        // At start, every problem is one clear error naming the file.
        let err = Tls::open(&cert, &key).err().unwrap().to_string();
        assert!(
            err.starts_with("--tls-cert") && err.contains("a.crt"),
            "{err}"
        );
        let err = Tls::open(&other_cert, &dir.path().join("none.key"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.starts_with("--tls-key"), "{err}");
        let (_, third_key) = write_pair(dir.path(), "c");
        let err = Tls::open(&other_cert, &third_key)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("do not go together"), "{err}");
    }
}
