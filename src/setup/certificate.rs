//! The app's credential: a self-signed certificate made here, its private key never leaving
//! this machine (no client secret to expire unnoticed). RSA 2048, because Entra signs-in apps
//! only with RSA certificate assertions; valid for one year, the longest a `keyCredential`
//! may be (notes §2.3). An existing pair (the config's, or one a previous run wrote) is reused,
//! so that running `setup` again changes nothing.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use x509_cert::der::Decode;

use super::SetupError;
use crate::clock::UnixTime;
use crate::config::Config;

/// The pair `setup` uses, and the `keyCredential` that uploads its public half.
pub struct AppCertificate {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub der: Vec<u8>,
    /// Whether this run made it.
    pub created: bool,
}

impl AppCertificate {
    /// The config's pair if it names one that exists, else `entra-app.crt`/`.key` next to the
    /// config (reused when present), else a new pair there.
    pub fn obtain(c: &Config, config_path: &Path, now: UnixTime) -> Result<Self, SetupError> {
        let dir = config_path.parent().unwrap_or(Path::new("."));
        let candidates = [
            (
                c.entra.client_certificate.clone(),
                c.entra.client_private_key.clone(),
            ),
            (
                Some(dir.join("entra-app.crt")),
                Some(dir.join("entra-app.key")),
            ),
        ];
        for (cert, key) in candidates {
            if let (Some(cert), Some(key)) = (cert, key)
                && cert.exists()
                && key.exists()
            {
                let der = crate::tls::load_certs(&cert)
                    .map_err(|e| SetupError::Certificate(e.to_string()))?
                    .remove(0)
                    .to_vec();
                return Ok(Self {
                    cert_path: cert,
                    key_path: key,
                    der,
                    created: false,
                });
            }
        }
        let host = c.server.public_url.host_str().unwrap_or("localhost");
        let (cert_pem, key_pem, der) = generate(&format!("pbxgate ({host})"), now)?;
        let (cert_path, key_path) = (dir.join("entra-app.crt"), dir.join("entra-app.key"));
        write_new(&key_path, key_pem.as_bytes(), 0o600)?;
        write_new(&cert_path, cert_pem.as_bytes(), 0o644)?;
        Ok(Self {
            cert_path,
            key_path,
            der,
            created: true,
        })
    }

    /// SHA-1 thumbprint, upper-case hex, as the Entra portal shows it.
    pub fn thumbprint(&self) -> String {
        let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &self.der);
        crate::ids::hex(d.as_ref()).to_uppercase()
    }

    pub fn base64(&self) -> String {
        STANDARD.encode(&self.der)
    }

    /// The `keyCredential` to upload (graph-docs `resources/keycredential.md`).
    pub fn key_credential(&self) -> Result<Value, SetupError> {
        let cert = x509_cert::Certificate::from_der(&self.der)
            .map_err(|e| SetupError::Certificate(e.to_string()))?;
        let v = &cert.tbs_certificate.validity;
        let date = |t: &x509_cert::time::Time| {
            jiff::Timestamp::from_second(t.to_unix_duration().as_secs() as i64)
                .map(|t| t.to_string())
                .unwrap_or_default()
        };
        Ok(json!({
            "type": "AsymmetricX509Cert",
            "usage": "Verify",
            "key": self.base64(),
            "displayName": cert.tbs_certificate.subject.to_string(),
            "startDateTime": date(&v.not_before),
            "endDateTime": date(&v.not_after),
        }))
    }
}

/// A new RSA key and a self-signed certificate for it, valid from today for 364 days (UTC
/// dates, so the `keyCredential` stays inside Graph's one-year limit).
fn generate(subject: &str, now: UnixTime) -> Result<(String, String, Vec<u8>), SetupError> {
    use rsa::pkcs8::EncodePrivateKey;
    let err = |e: &dyn std::fmt::Display| SetupError::Certificate(e.to_string());
    let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).map_err(|e| err(&e))?;
    let key_pem = private
        .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
        .map_err(|e| err(&e))?
        .to_string();
    let pair = rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&key_pem, &rcgen::PKCS_RSA_SHA256)
        .map_err(|e| err(&e))?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| err(&e))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, subject);
    let day = |t: UnixTime| -> Result<_, SetupError> {
        let ts = jiff::Timestamp::from_second(t).map_err(|e| err(&e))?;
        let d = jiff::tz::TimeZone::UTC.to_datetime(ts).date();
        Ok(rcgen::date_time_ymd(
            i32::from(d.year()),
            d.month() as u8,
            d.day() as u8,
        ))
    };
    params.not_before = day(now)?;
    params.not_after = day(now + 364 * 86_400)?;
    let cert = params.self_signed(&pair).map_err(|e| err(&e))?;
    Ok((cert.pem(), key_pem, cert.der().to_vec()))
}

/// Creates `path` with `mode` (unix); an existing file is never overwritten.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SetupError> {
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = open
        .open(path)
        .map_err(|e| SetupError::Certificate(format!("{}: {e}", path.display())))?;
    f.write_all(bytes)
        .map_err(|e| SetupError::Certificate(format!("{}: {e}", path.display())))
}
