//! TLS material for tests: a CA, and server and client certificates it signed.

use std::path::Path;

use rcgen::{CertificateParams, CertifiedIssuer, DnType, KeyPair};
use tempfile::TempDir;

/// A CA, a server certificate for localhost and a client certificate, as PEM files.
pub struct Certificates {
    pub dir: TempDir,
}

impl Certificates {
    pub fn generate() -> Self {
        let dir = TempDir::new().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        // Distinct names matter: OpenSSL (grpcio) takes a leaf named like its issuer for a
        // self-signed certificate.
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "formatdata test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        write(dir.path(), "ca.pem", &ca.pem());
        for (name, subject) in [
            ("server", "localhost"),
            ("client", "formatdata-test-client"),
        ] {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(vec![subject.to_owned()]).unwrap();
            params.distinguished_name.push(DnType::CommonName, subject);
            let certificate = params.signed_by(&key, &ca).unwrap();
            write(dir.path(), &format!("{name}.pem"), &certificate.pem());
            write(dir.path(), &format!("{name}.key"), &key.serialize_pem());
        }
        Self { dir }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

fn write(dir: &Path, name: &str, contents: &str) {
    std::fs::write(dir.join(name), contents).unwrap();
}
