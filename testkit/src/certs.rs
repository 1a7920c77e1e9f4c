//! Certificates for TLS tests and load tools: a CA, and a server certificate for `localhost`
//! signed by it, written as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

/// PEM files in `dir`, named after `tag`.
pub struct TestCerts {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A fresh CA and a `localhost` server certificate signed by it.
pub fn localhost(dir: &Path, tag: &str) -> TestCerts {
    let ca_key = KeyPair::generate().expect("key generation");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("self-signed CA");
    let key = KeyPair::generate().expect("key generation");
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .expect("server params")
        .signed_by(&key, &ca, &ca_key)
        .expect("signed server certificate");
    let certs = TestCerts {
        ca: dir.join(format!("{tag}-ca.pem")),
        cert: dir.join(format!("{tag}-server.pem")),
        key: dir.join(format!("{tag}-server.key")),
    };
    std::fs::write(&certs.ca, ca.pem()).expect("write CA");
    std::fs::write(&certs.cert, cert.pem()).expect("write certificate");
    std::fs::write(&certs.key, key.serialize_pem()).expect("write key");
    certs
}
