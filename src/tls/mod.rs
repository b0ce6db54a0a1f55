//! rustls on both sides (ring as the one crypto provider, no OpenSSL): the server config that
//! terminates browser TLS, with a certificate reloaded without a restart ([`reload`]), and
//! the client config that reaches 3CX. (The demo's throw-away certificates come from the
//! sandbox crate.)

mod reload;

pub use reload::{CertInfo, POLL_INTERVAL, Reload, Reloadable, Trigger, cert_info, spawn_watcher};

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read PEM file {path}: {message}")]
    Pem { path: String, message: String },
    #[error("{path} holds no certificate")]
    NoCertificate { path: String },
    #[error("{path}: not a valid X.509 certificate: {message}")]
    Certificate { path: String, message: String },
    #[error("the key in {key} does not belong to the certificate in {cert}: {message}")]
    KeyMismatch {
        cert: String,
        key: String,
        message: String,
    },
    #[error("{path}: the certificate expired at {not_after}")]
    Expired { path: String, not_after: String },
    #[error("pbx.tls_server_name: {0} is not a valid host name")]
    ServerName(String),
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The process-wide crypto provider; installed once so every rustls user agrees.
pub fn provider() -> Arc<CryptoProvider> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

fn pem_error(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::Pem {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

/// A fixed server config, HTTP/1.1 only: for the demo's and the tests' simulated 3CX (the
/// gateway's own listeners use [`Reloadable`]).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, e))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Client side: the system's trusted roots, plus `extra_ca` for a self-signed 3CX.
pub fn client_config(extra_ca: Option<&Path>) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::warn!(error = %e, "could not load some system CA certificates");
    }
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = extra_ca {
        for cert in load_certs(path)? {
            roots.add(cert)?;
        }
    }
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// For a client of 3CX with `[pbx] tls_server_name`: resolves that name to the addresses of
/// `[pbx] url`'s host, so that the client connects to 3CX's internal address while SNI,
/// certificate verification and `Host` use the public name. Other names resolve as usual.
#[derive(Debug)]
pub struct PinnedName {
    name: String,
    host: String,
}

impl PinnedName {
    pub fn new(name: &str, url: &url::Url) -> Self {
        let host = match url.host() {
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            Some(host) => host.to_string(),
            None => String::new(),
        };
        Self {
            name: name.to_string(),
            host,
        }
    }
}

impl reqwest::dns::Resolve for PinnedName {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let target = if name.as_str().eq_ignore_ascii_case(&self.name) {
            self.host.clone()
        } else {
            name.as_str().to_string()
        };
        Box::pin(async move {
            // Port 0: the URL's port is used.
            let addrs: Vec<_> = tokio::net::lookup_host((target.as_str(), 0))
                .await?
                .collect();
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// An error reaching 3CX as one log line, with the fix when its certificate is not for the
/// name pbxgate connected by (3CX reached by an internal address).
pub fn upstream_error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let chain = crate::errors::error_chain(e);
    if is_name_mismatch(e) {
        format!("{chain} (3CX's certificate is for another name: set [pbx] tls_server_name to it)")
    } else {
        chain
    }
}

fn is_name_mismatch(e: &(dyn std::error::Error + 'static)) -> bool {
    use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(rustls::Error::InvalidCertificate(
            NotValidForName | NotValidForNameContext { .. },
        )) = err.downcast_ref::<rustls::Error>()
        {
            return true;
        }
        // io::Error's `source` skips the error it wraps.
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            && is_name_mismatch(inner)
        {
            return true;
        }
        cur = err.source();
    }
    false
}
