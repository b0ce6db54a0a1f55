//! A throw-away certificate authority and server certificates signed by it, in PEM: for
//! the demo's TLS (gateway and simulated 3CX) and the tests. Never for production, which
//! is why it lives here and not in the product.

use std::path::{Path, PathBuf};

/// Why a certificate could not be made.
pub type Error = rcgen::Error;

/// A private CA; its certificate is `ca_pem`.
pub struct TestPki {
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub ca_pem: String,
}

/// A certificate and its private key, in PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestPki {
    pub fn generate(name: &str) -> Result<Self, Error> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key)?;
        Ok(Self {
            ca_pem: cert.pem(),
            ca: rcgen::Issuer::new(params, key),
        })
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn leaf(&self, names: &[&str]) -> Result<Leaf, Error> {
        self.leaf_with(names, |_| {})
    }

    /// A server certificate for `names` with `subject` as its common name, valid until
    /// midnight UTC of `until` (year, month, day): to tell rotated certificates apart and
    /// to make expired or soon-expiring ones.
    pub fn leaf_until(
        &self,
        names: &[&str],
        subject: &str,
        until: (i32, u8, u8),
    ) -> Result<Leaf, Error> {
        self.leaf_with(names, |p| {
            p.distinguished_name
                .push(rcgen::DnType::CommonName, subject);
            p.not_before = rcgen::date_time_ymd(2000, 1, 1);
            p.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
        })
    }

    /// A server certificate for `names`, its parameters adjusted by `edit` before signing.
    pub fn leaf_with(
        &self,
        names: &[&str],
        edit: impl FnOnce(&mut rcgen::CertificateParams),
    ) -> Result<Leaf, Error> {
        let key = rcgen::KeyPair::generate()?;
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names)?;
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        edit(&mut params);
        let cert = params.signed_by(&key, &self.ca)?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

impl Leaf {
    /// Writes `{stem}.pem` and `{stem}.key` (the key readable by the owner only).
    pub fn write(&self, dir: &Path, stem: &str) -> std::io::Result<(PathBuf, PathBuf)> {
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &self.cert_pem)?;
        write_private(&key, &self.key_pem)?;
        Ok((cert, key))
    }
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    opts.open(path)?.write_all(contents.as_bytes())
}

/// Installs ring as rustls' process-wide crypto provider, for the simulators' own tests
/// (the product installs the same one at start).
#[cfg(test)]
pub(crate) fn crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
