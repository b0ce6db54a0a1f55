//! The gateway's certificate replaced without a restart: on SIGHUP to the real binary and
//! when the files change, new handshakes get the new certificate while open connections
//! keep working; a bad new pair keeps the old one (and says why in the log); the expiry
//! metric follows the served certificate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use pbxgate::clock::ManualClock;
use pbxgate::http::Gateway;
use pbxgate_sandbox::pki::{Leaf, TestPki};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::support::*;

/// A certificate for the gateway's test address with `subject` as its CN, valid until
/// `until` (the tests' clocks are in 2026-2027).
fn leaf(pki: &TestPki, subject: &str, until: (i32, u8, u8)) -> Leaf {
    pki.leaf_until(&["localhost", "127.0.0.1"], subject, until)
        .unwrap()
}

fn der(leaf: &Leaf) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap()
}

/// One client connection to the gateway, kept open, and the certificate it was served.
struct Conn {
    sender: SendRequest<Empty<Bytes>>,
    cert: CertificateDer<'static>,
}

impl Conn {
    async fn open(addr: SocketAddr, ca_pem: &str) -> Self {
        init();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
            .unwrap();
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .expect("handshake");
        let cert = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        Self { sender, cert }
    }

    /// `GET path` on this connection: status and body.
    async fn get(&mut self, path: &str) -> (u16, String) {
        self.sender.ready().await.expect("the connection is open");
        let req = http::Request::get(path)
            .header("host", "localhost")
            .body(Empty::new())
            .unwrap();
        let res = self.sender.send_request(req).await.unwrap();
        let status = res.status().as_u16();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

/// The log lines of `log` that contain every one of `parts`, once there are `n` of them.
async fn wait_log(log: &Path, parts: &[&str], n: usize) -> Vec<String> {
    for _ in 0..200 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<String> = text
            .lines()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .map(str::to_string)
            .collect();
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "no {n} log lines with {parts:?}; the log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn sighup(p: &Process) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// A config file for the binary serving TLS with `dir/gateway.{pem,key}`.
fn tls_config(dir: &Path, upstream: &str) -> (PathBuf, PathBuf, PathBuf) {
    let (cert, key) = (dir.join("gateway.pem"), dir.join("gateway.key"));
    let text = config_text(upstream, dir, "").replace(
        "[server]\n",
        &format!("[server]\ntls_cert = {cert:?}\ntls_key = {key:?}\n"),
    );
    let path = dir.join("pbxgate.toml");
    std::fs::write(&path, text).unwrap();
    (path, cert, key)
}

#[tokio::test]
async fn sighup_serves_the_new_certificate_to_new_connections_and_keeps_open_ones() {
    let up = Upstream::start().await;
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let (config, cert_path, key_path) = tls_config(dir.path(), &up.url());
    let a = leaf(&pki, "A", (2036, 1, 1));
    a.write(dir.path(), "gateway").unwrap();
    let gw = Process::serve(&config, &dir.path().join("pbxgate.log"));

    let mut open = Conn::open(gw.addr, &pki.ca_pem).await;
    assert_eq!(open.cert, der(&a));
    assert_eq!(open.get("/healthz").await.0, 200);

    let b = leaf(&pki, "B", (2037, 1, 1));
    b.write(dir.path(), "gateway").unwrap();
    sighup(&gw);
    let reloaded = wait_log(&gw.log, &["TLS certificate reloaded", "SIGHUP"], 1).await;
    assert!(
        reloaded[0].contains("CN=B") && reloaded[0].contains("2037-01-01T00:00:00Z"),
        "the new subject and expiry are logged: {}",
        reloaded[0]
    );
    let mut new = Conn::open(gw.addr, &pki.ca_pem).await;
    assert_eq!(new.cert, der(&b), "a new handshake gets B");
    assert_eq!(new.get("/healthz").await.0, 200);
    assert_eq!(
        open.get("/healthz").await.0,
        200,
        "the connection opened on A keeps working"
    );

    // A key that is not B's: refused, named, and B stays.
    let other = leaf(&pki, "other", (2037, 1, 1));
    std::fs::write(&key_path, &other.key_pem).unwrap();
    sighup(&gw);
    let refused = wait_log(&gw.log, &["WARN", "not reloaded", "SIGHUP"], 1).await;
    assert!(
        refused[0].contains(&format!("the key in {}", key_path.display()))
            && refused[0].contains("does not belong to the certificate"),
        "{}",
        refused[0]
    );
    assert_eq!(Conn::open(gw.addr, &pki.ca_pem).await.cert, der(&b));

    // An expired certificate (with its own key): refused too.
    leaf(&pki, "expired", (2020, 1, 1))
        .write(dir.path(), "gateway")
        .unwrap();
    sighup(&gw);
    let refused = wait_log(&gw.log, &["WARN", "not reloaded", "SIGHUP"], 2).await;
    assert!(
        refused[1].contains(&format!(
            "{}: the certificate expired at 2020-01-01T00:00:00Z",
            cert_path.display()
        )),
        "{}",
        refused[1]
    );
    let mut last = Conn::open(gw.addr, &pki.ca_pem).await;
    assert_eq!(last.cert, der(&b));
    assert_eq!(last.get("/healthz").await.0, 200);
    assert!(gw.terminate().success());
}

/// An in-process gateway on `clock` (2027-01-15) polling its certificate files every 100 ms.
async fn polling_gateway(upstream: &str, dir: &Path) -> SocketAddr {
    init();
    let (cert, key) = (dir.join("gateway.pem"), dir.join("gateway.key"));
    let config = config(upstream, dir, |c| {
        c.server.tls_cert = Some(cert);
        c.server.tls_key = Some(key);
    });
    let gateway = Gateway::bind(config, Arc::new(ManualClock::new(START)))
        .await
        .expect("gateway starts")
        .with_tls_poll_interval(Duration::from_millis(100));
    let addr = gateway.local_addr();
    tokio::spawn(gateway.run(std::future::pending()));
    addr
}

/// The expiry gauge's value for the certificate file `path`.
async fn expiry_metric(conn: &mut Conn, path: &Path) -> Option<i64> {
    let (status, text) = conn.get("/metrics").await;
    assert_eq!(status, 200);
    let series = format!(
        "pbxgate_tls_certificate_expiry_timestamp_seconds{{path=\"{}\"}} ",
        path.display()
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn changed_files_are_picked_up_without_sighup_and_the_expiry_metric_follows() {
    let up = Upstream::start().await;
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let a = leaf(&pki, "A", (2030, 1, 1));
    let (cert, _) = a.write(dir.path(), "gateway").unwrap();
    let addr = polling_gateway(&up.url(), dir.path()).await;

    let mut open = Conn::open(addr, &pki.ca_pem).await;
    assert_eq!(open.cert, der(&a));
    assert_eq!(
        expiry_metric(&mut open, &cert).await,
        Some(1_893_456_000),
        "A's notAfter, 2030-01-01T00:00:00Z"
    );

    let b = leaf(&pki, "B", (2031, 1, 1));
    b.write(dir.path(), "gateway").unwrap();
    let mut seen_b = None;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let conn = Conn::open(addr, &pki.ca_pem).await;
        if conn.cert == der(&b) {
            seen_b = Some(conn);
            break;
        }
    }
    let mut new = seen_b.expect("B served within 2 s (polled every 100 ms)");
    assert_eq!(
        expiry_metric(&mut new, &cert).await,
        Some(1_924_992_000),
        "B's notAfter, 2031-01-01T00:00:00Z"
    );
    assert_eq!(
        open.get("/healthz").await.0,
        200,
        "A's connection still works"
    );

    // A certificate expired by the gateway's clock (2027-01-15) is not taken up.
    leaf(&pki, "expired", (2027, 1, 1))
        .write(dir.path(), "gateway")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut after = Conn::open(addr, &pki.ca_pem).await;
    assert_eq!(after.cert, der(&b));
    assert_eq!(expiry_metric(&mut after, &cert).await, Some(1_924_992_000));
}

#[tokio::test]
async fn a_certificate_near_its_expiry_is_warned_about_at_start() {
    let up = Upstream::start().await;
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let (config, cert_path, _) = tls_config(dir.path(), &up.url());
    // Midnight UTC 8 days ahead: 7 whole days left.
    let in_a_week = jiff::tz::TimeZone::UTC
        .to_datetime(jiff::Timestamp::now() + jiff::SignedDuration::from_hours(8 * 24))
        .date();
    let until = (
        in_a_week.year() as i32,
        in_a_week.month() as u8,
        in_a_week.day() as u8,
    );
    let soon = leaf(&pki, "soon", until);
    soon.write(dir.path(), "gateway").unwrap();
    let gw = Process::serve(&config, &dir.path().join("pbxgate.log"));
    let warned = wait_log(&gw.log, &["WARN", "expires within 14 days"], 1).await;
    assert!(
        warned[0].contains(&cert_path.display().to_string()) && warned[0].contains("days=7"),
        "{}",
        warned[0]
    );
    assert_eq!(Conn::open(gw.addr, &pki.ca_pem).await.cert, der(&soon));
}
