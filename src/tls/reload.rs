//! The gateway's own certificate, replaced without a restart: on SIGHUP and when its files
//! change (polled; no inotify, which misses the symlink swaps of Kubernetes secrets and
//! needs a crate). Each handshake reads the current certificate once ([`Reloadable`] is the
//! rustls resolver), so open connections keep the one they started with. A new pair that
//! does not parse, whose key does not match, or that has expired is refused with a warning
//! naming the file, and the current one stays.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_cert::der::Decode;

use super::{TlsError, pem_error, provider};
use crate::clock::{Clock, UnixTime};
use crate::metrics::Metrics;

/// How often the files are checked for a change: reading two small files costs nothing,
/// and a renewal tool that does not send SIGHUP is followed within seconds.
pub const POLL_INTERVAL: Duration = Duration::from_secs(5);

/// A certificate this close to its expiry is warned about at start and on reload.
const EXPIRY_WARNING_SECS: i64 = 14 * 86_400;

/// What the served certificate says about itself, for the log and the expiry metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject's distinguished name (RFC 4514), e.g. `CN=pbx.example.com`.
    pub subject: String,
    /// notAfter, Unix seconds.
    pub not_after: UnixTime,
}

/// What started a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The poll found the files changed.
    FileChange,
    /// SIGHUP: reload even when the files look unchanged.
    Signal,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Self::FileChange => "file change",
            Self::Signal => "SIGHUP",
        }
    }
}

/// What a reload did.
#[derive(Debug)]
pub enum Reload {
    /// The files are those last loaded or refused.
    Unchanged,
    Reloaded(CertInfo),
    /// The current certificate stays.
    Refused(TlsError),
}

/// A certificate and key file pair, served as loaded last and reloadable.
pub struct Reloadable {
    cert_path: PathBuf,
    key_path: PathBuf,
    /// Read once per handshake; replaced whole on reload.
    current: RwLock<Arc<CertifiedKey>>,
    info: Mutex<CertInfo>,
    /// SHA-256 over both files as last read (loaded or refused): a poll acts only on change.
    seen: Mutex<[u8; 32]>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Reloadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloadable")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Reloadable {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

impl Reloadable {
    /// Loads the pair at start. Any error stops the start, except expiry: an expired or
    /// soon-expiring certificate is warned about (a restart after a failed renewal should
    /// not take the site down for the clients that tolerate it).
    pub fn load(cert: &Path, key: &Path, clock: Arc<dyn Clock>) -> Result<Arc<Self>, TlsError> {
        let files = read_pair(cert, key)?;
        let (certified, info) = parse_pair(&files, cert, key)?;
        warn_if_expiring(cert, &info, clock.now());
        Ok(Arc::new(Self {
            cert_path: cert.to_path_buf(),
            key_path: key.to_path_buf(),
            current: RwLock::new(Arc::new(certified)),
            info: Mutex::new(info),
            seen: Mutex::new(files.fingerprint()),
            clock,
        }))
    }

    /// A server config that takes its certificate from `self` at each handshake. No ALPN:
    /// the listener sets the protocols it speaks.
    pub fn server_config(self: &Arc<Self>) -> Result<ServerConfig, TlsError> {
        Ok(ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone()))
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The certificate served now.
    pub fn info(&self) -> CertInfo {
        self.info
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads the files again and serves the new pair if it is good. A poll
    /// ([`Trigger::FileChange`]) does nothing while the files are as last read, so a bad
    /// pair is warned about once, not at every poll.
    pub fn reload(&self, trigger: Trigger) -> Reload {
        let files = match read_pair(&self.cert_path, &self.key_path) {
            Ok(files) => files,
            Err(e) => return Reload::Refused(e),
        };
        let fingerprint = files.fingerprint();
        {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            if trigger == Trigger::FileChange && *seen == fingerprint {
                return Reload::Unchanged;
            }
            *seen = fingerprint;
        }
        let (certified, info) = match parse_pair(&files, &self.cert_path, &self.key_path)
            .and_then(|pair| self.unexpired(pair))
        {
            Ok(pair) => pair,
            Err(e) => return Reload::Refused(e),
        };
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(certified);
        *self.info.lock().unwrap_or_else(PoisonError::into_inner) = info.clone();
        Reload::Reloaded(info)
    }

    fn unexpired(
        &self,
        pair: (CertifiedKey, CertInfo),
    ) -> Result<(CertifiedKey, CertInfo), TlsError> {
        if pair.1.not_after <= self.clock.now() {
            return Err(TlsError::Expired {
                path: self.cert_path.display().to_string(),
                not_after: rfc3339(pair.1.not_after),
            });
        }
        Ok(pair)
    }

    /// Reloads and says so in the log (and the expiry metric).
    fn reload_and_report(&self, trigger: Trigger, metrics: &Metrics) {
        let cert = self.cert_path.display();
        match self.reload(trigger) {
            Reload::Unchanged => {}
            Reload::Reloaded(info) => {
                metrics.tls_certificate_expiry(&cert.to_string(), info.not_after);
                tracing::info!(
                    %cert,
                    subject = %info.subject,
                    not_after = %rfc3339(info.not_after),
                    trigger = trigger.as_str(),
                    "TLS certificate reloaded"
                );
                warn_if_expiring(&self.cert_path, &info, self.clock.now());
            }
            Reload::Refused(e) => tracing::warn!(
                %cert,
                key = %self.key_path.display(),
                error = %e,
                trigger = trigger.as_str(),
                "TLS certificate not reloaded; the current one stays"
            ),
        }
    }
}

/// Exports the certificates' expiry, then reloads them on SIGHUP and when their files
/// change (checked every `interval`), until aborted. SIGHUP is handled even without a
/// certificate (logged), so that `systemctl reload` never stops the gateway.
pub fn spawn_watcher(
    certs: Vec<Arc<Reloadable>>,
    metrics: Arc<Metrics>,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    for c in &certs {
        let path = c.cert_path.display().to_string();
        metrics.tls_certificate_expiry(&path, c.info().not_after);
    }
    // Installed before the gateway says it listens: a SIGHUP from then on reloads.
    let hangup = hangups();
    tokio::spawn(watch(certs, metrics, interval, hangup))
}

async fn watch(
    certs: Vec<Arc<Reloadable>>,
    metrics: Arc<Metrics>,
    interval: Duration,
    mut hangup: Hangups,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let trigger = tokio::select! {
            _ = tick.tick() => Trigger::FileChange,
            () = next_hangup(&mut hangup) => Trigger::Signal,
        };
        if certs.is_empty() && trigger == Trigger::Signal {
            tracing::info!("SIGHUP: no TLS certificate to reload");
        }
        // Off the runtime's threads: file reads (a network file system may stall) and
        // key parsing.
        let (certs, metrics) = (certs.clone(), metrics.clone());
        let _ = tokio::task::spawn_blocking(move || {
            for c in &certs {
                c.reload_and_report(trigger, &metrics);
            }
        })
        .await;
    }
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = ();

#[cfg(unix)]
fn hangups() -> Hangups {
    use tokio::signal::unix::{SignalKind, signal};
    signal(SignalKind::hangup())
        .inspect_err(|e| tracing::warn!(error = %e, "cannot handle SIGHUP"))
        .ok()
}
#[cfg(not(unix))]
fn hangups() -> Hangups {}

#[cfg(unix)]
async fn next_hangup(h: &mut Hangups) {
    let received = match h {
        Some(s) => s.recv().await.is_some(),
        None => false,
    };
    if !received {
        std::future::pending::<()>().await;
    }
}
#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangups) {
    std::future::pending().await
}

/// Both files' bytes, as read at one moment.
struct Pair {
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl Pair {
    fn fingerprint(&self) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(&(self.cert.len() as u64).to_be_bytes());
        ctx.update(&self.cert);
        ctx.update(&self.key);
        let mut out = [0; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }
}

fn read_pair(cert: &Path, key: &Path) -> Result<Pair, TlsError> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| pem_error(p, e));
    Ok(Pair {
        cert: read(cert)?,
        key: read(key)?,
    })
}

/// The chain and key as rustls serves them (the key checked against the certificate),
/// and what the certificate says.
fn parse_pair(
    files: &Pair,
    cert_path: &Path,
    key_path: &Path,
) -> Result<(CertifiedKey, CertInfo), TlsError> {
    let chain = CertificateDer::pem_slice_iter(&files.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(cert_path, e))?;
    let leaf = chain.first().ok_or_else(|| TlsError::NoCertificate {
        path: cert_path.display().to_string(),
    })?;
    let info = cert_info(leaf).map_err(|e| TlsError::Certificate {
        path: cert_path.display().to_string(),
        message: e.to_string(),
    })?;
    let key = PrivateKeyDer::from_pem_slice(&files.key).map_err(|e| pem_error(key_path, e))?;
    let key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| pem_error(key_path, e))?;
    let certified = CertifiedKey::new(chain, key);
    match certified.keys_match() {
        // ring knows the public key of every key it loads; "unknown" is not expected.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok((certified, info))
        }
        Err(e) => Err(TlsError::KeyMismatch {
            cert: cert_path.display().to_string(),
            key: key_path.display().to_string(),
            message: match e {
                rustls::Error::InconsistentKeys(_) => "the public keys differ".into(),
                e => e.to_string(),
            },
        }),
    }
}

/// Subject and notAfter of a DER certificate.
pub fn cert_info(der: &[u8]) -> Result<CertInfo, x509_cert::der::Error> {
    let cert = x509_cert::Certificate::from_der(der)?;
    let tbs = &cert.tbs_certificate;
    Ok(CertInfo {
        subject: tbs.subject.to_string(),
        not_after: tbs.validity.not_after.to_unix_duration().as_secs() as i64,
    })
}

fn warn_if_expiring(cert: &Path, info: &CertInfo, now: UnixTime) {
    let left = info.not_after - now;
    if left <= 0 {
        tracing::warn!(
            cert = %cert.display(),
            not_after = %rfc3339(info.not_after),
            "the TLS certificate has expired; replace it (it is reloaded without a restart)"
        );
    } else if left < EXPIRY_WARNING_SECS {
        tracing::warn!(
            cert = %cert.display(),
            not_after = %rfc3339(info.not_after),
            days = left / 86_400,
            "the TLS certificate expires within 14 days"
        );
    }
}

fn rfc3339(t: UnixTime) -> String {
    jiff::Timestamp::from_second(t)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| t.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use pbxgate_sandbox::pki::{Leaf, TestPki};
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    use super::{Reload, Reloadable, Trigger};
    use crate::clock::ManualClock;

    /// 2027-01-15T08:00:00Z.
    const NOW: i64 = 1_800_000_000;

    struct Files {
        dir: tempfile::TempDir,
        pki: TestPki,
    }

    impl Files {
        fn new() -> Self {
            crate::tls::provider();
            Self {
                dir: tempfile::tempdir().unwrap(),
                pki: TestPki::generate("reload test CA").unwrap(),
            }
        }
        fn leaf(&self, subject: &str, until: (i32, u8, u8)) -> Leaf {
            self.pki.leaf_until(&["localhost"], subject, until).unwrap()
        }
        fn put(&self, leaf: &Leaf) {
            leaf.write(self.dir.path(), "server").unwrap();
        }
        fn load(&self) -> Arc<Reloadable> {
            let (cert, key) = (self.path("pem"), self.path("key"));
            Reloadable::load(&cert, &key, Arc::new(ManualClock::new(NOW))).unwrap()
        }
        fn path(&self, ext: &str) -> std::path::PathBuf {
            self.dir.path().join(format!("server.{ext}"))
        }
    }

    /// The certificate handshakes get now.
    fn served(r: &Reloadable) -> CertificateDer<'static> {
        r.current.read().unwrap().cert[0].clone()
    }

    fn der(leaf: &Leaf) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap()
    }

    #[test]
    fn a_changed_pair_is_served_once_reloaded_and_a_poll_acts_only_on_change() {
        let f = Files::new();
        let a = f.leaf("A", (2030, 1, 1));
        f.put(&a);
        let r = f.load();
        assert_eq!(served(&r), der(&a));
        assert_eq!(r.info().subject, "CN=A");
        assert_eq!(r.info().not_after, 1_893_456_000, "2030-01-01T00:00:00Z");
        assert!(matches!(r.reload(Trigger::FileChange), Reload::Unchanged));

        let b = f.leaf("B", (2031, 1, 1));
        f.put(&b);
        match r.reload(Trigger::FileChange) {
            Reload::Reloaded(info) => assert_eq!(info.subject, "CN=B"),
            other => panic!("{other:?}"),
        }
        assert_eq!(served(&r), der(&b));
        assert!(matches!(r.reload(Trigger::FileChange), Reload::Unchanged));
        assert!(
            matches!(r.reload(Trigger::Signal), Reload::Reloaded(_)),
            "SIGHUP reloads even unchanged files"
        );
    }

    #[test]
    fn a_bad_new_pair_keeps_the_current_certificate() {
        let f = Files::new();
        let a = f.leaf("A", (2030, 1, 1));
        f.put(&a);
        let r = f.load();

        // The key of another certificate.
        let other = f.leaf("other", (2030, 1, 1));
        std::fs::write(f.path("key"), &other.key_pem).unwrap();
        let e = refused(r.reload(Trigger::FileChange));
        assert!(e.contains("does not belong to the certificate"), "{e}");
        assert!(e.contains(&f.path("key").display().to_string()), "{e}");
        assert!(
            matches!(r.reload(Trigger::FileChange), Reload::Unchanged),
            "refused once, not at every poll"
        );

        // A PEM private key block that holds no key.
        std::fs::write(
            f.path("key"),
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = refused(r.reload(Trigger::FileChange));
        assert!(e.starts_with("cannot read PEM file"), "{e}");
        assert!(e.contains(&f.path("key").display().to_string()), "{e}");
        std::fs::write(f.path("key"), &a.key_pem).unwrap();

        // Not PEM at all, and PEM that is not a certificate.
        std::fs::write(f.path("pem"), "garbage").unwrap();
        let e = refused(r.reload(Trigger::FileChange));
        assert!(e.contains(&f.path("pem").display().to_string()), "{e}");
        std::fs::write(
            f.path("pem"),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = refused(r.reload(Trigger::FileChange));
        assert!(e.contains("not a valid X.509 certificate"), "{e}");

        // Expired by the clock (2027-01-15), though well formed and matching.
        f.put(&f.leaf("expired", (2027, 1, 1)));
        let e = refused(r.reload(Trigger::FileChange));
        assert!(
            e.contains("the certificate expired at 2027-01-01T00:00:00Z"),
            "{e}"
        );
        assert_eq!(served(&r), der(&a), "A is served throughout");
        assert_eq!(r.info().subject, "CN=A");
    }

    #[test]
    fn at_start_an_expired_certificate_is_served_with_a_warning_not_refused() {
        let f = Files::new();
        let old = f.leaf("old", (2026, 1, 1));
        f.put(&old);
        assert_eq!(served(&f.load()), der(&old));
    }

    fn refused(r: Reload) -> String {
        match r {
            Reload::Refused(e) => e.to_string(),
            other => panic!("expected a refusal: {other:?}"),
        }
    }
}
