//! TLS termination with the configured certificate, and TLS to a 3CX with a private CA.

use crate::support::*;

#[tokio::test]
async fn terminates_tls_with_the_configured_certificate() {
    let up = Upstream::start().await;
    let cert = GatewayCert::new();
    let gw = TestGateway::start(&up.url(), |c| cert.configure(c)).await;
    let url = gw.url("/provisioning/a/b");
    assert!(url.starts_with("https://"));

    let res = client_trusting(&cert.pki.ca_pem)
        .get(&url)
        .send()
        .await
        .unwrap();
    let echo = echoed(res).await;
    assert_eq!(seen(&echo, "x-forwarded-proto"), vec!["https"]);

    // A client that does not trust the CA is refused at the handshake.
    let other = pbxgate_sandbox::pki::TestPki::generate("someone else").unwrap();
    assert!(
        client_trusting(&other.ca_pem)
            .get(&url)
            .send()
            .await
            .is_err()
    );

    // Over TLS the cookie carries the __Host- prefix and Secure.
    assert_eq!(gw.app.sessions.cookie_name(), COOKIE);
    let set = gw.app.sessions.set_cookie("x");
    assert!(set.contains("Secure") && set.contains("HttpOnly") && set.contains("SameSite=Lax"));
    assert!(set.contains("Path=/") && !set.contains("Domain"));
}

#[tokio::test]
async fn reaches_a_3cx_with_a_private_ca_only_when_given_the_ca_file() {
    let pki = pki();
    let leaf = pki.leaf(&["127.0.0.1"]).unwrap();
    let up = Upstream::start_with_tls(Some(&leaf)).await;
    assert!(up.url().starts_with("https://"));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();

    let trusting = TestGateway::start(&up.url(), |c| c.pbx.ca_file = Some(ca)).await;
    let res = client()
        .get(trusting.url("/provisioning/a/b"))
        .send()
        .await
        .unwrap();
    assert_eq!(echoed(res).await["path"], "/provisioning/a/b");

    let untrusting = TestGateway::start(&up.url(), |_| {}).await;
    let res = client()
        .get(untrusting.url("/provisioning/a/b"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        502,
        "an unknown certificate is never accepted"
    );
}

#[tokio::test]
async fn cookie_has_no_prefix_only_on_plain_http_localhost() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&up.url(), |c| {
        c.server.public_url = "http://localhost:8080".parse().unwrap();
    })
    .await;
    assert_eq!(gw.app.sessions.cookie_name(), "pbxgate");
}

/// The simulated 3CX over TLS with a certificate for its public name only, as a real 3CX
/// reached by its internal address: the sim, its server, and the CA file that trusts it.
async fn pbx_known_as_public_name(
    dir: &std::path::Path,
) -> (pbxgate_sandbox::Running, std::path::PathBuf) {
    let pki = pki();
    let (cert, key) = pki
        .leaf(&["pbx.example.com"])
        .unwrap()
        .write(dir, "pbx")
        .unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let sim = std::sync::Arc::new(pbxgate_sandbox::pbx::PbxSim::new(
        "prov-secret",
        ("pbxgate", "xapi-secret-value"),
        pbxgate_sandbox::demo_extensions(),
        std::sync::Arc::new(pbxgate::clock::ManualClock::new(START)),
    ));
    let tls = tokio_rustls::TlsAcceptor::from(pbxgate::tls::server_config(&cert, &key).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running =
        pbxgate_sandbox::spawn(listener, pbxgate_sandbox::pbx::router(sim), Some(tls)).unwrap();
    (running, ca)
}

const PROVISIONING: &str = "/provisioning/prov-secret/0011223344aa.cfg";

#[tokio::test]
async fn tls_server_name_reaches_3cx_by_address_verified_for_its_public_name() {
    let dir = tempfile::tempdir().unwrap();
    let (pbx, ca) = pbx_known_as_public_name(dir.path()).await;
    let url = pbx.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    let gw = TestGateway::start(&url, |c| {
        c.pbx.ca_file = Some(ca);
        c.pbx.tls_server_name = Some("pbx.example.com".into());
    })
    .await;
    let res = client().get(gw.url(PROVISIONING)).send().await.unwrap();
    assert_eq!(res.status(), 200, "proxied");
    assert!(res.text().await.unwrap().contains("account.1.enable = 1"));
    let users = gw.app.pbx.users(None).await.expect("XAPI reached");
    assert!(!users.is_empty());
}

#[tokio::test]
async fn without_tls_server_name_an_address_fails_hostname_verification_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let (pbx, ca) = pbx_known_as_public_name(dir.path()).await;
    let gw = TestGateway::start(&pbx.url(), |c| c.pbx.ca_file = Some(ca)).await;
    let res = client().get(gw.url(PROVISIONING)).send().await.unwrap();
    assert_eq!(res.status(), 502);
    let e = gw.app.pbx.users(None).await.unwrap_err().to_string();
    assert!(
        e.contains("not valid for name") && e.contains("127.0.0.1"),
        "the mismatch is named: {e}"
    );
    assert!(e.contains("[pbx] tls_server_name"), "the fix is named: {e}");
}

#[tokio::test]
async fn with_tls_server_name_3cx_sees_it_as_host() {
    let pki = pki();
    let leaf = pki.leaf(&["pbx.example.com"]).unwrap();
    let up = Upstream::start_with_tls(Some(&leaf)).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let gw = TestGateway::start(&up.url(), |c| {
        c.pbx.ca_file = Some(ca);
        c.pbx.tls_server_name = Some("pbx.example.com".into());
    })
    .await;
    let res = client()
        .get(gw.url("/provisioning/a/b"))
        .send()
        .await
        .unwrap();
    let echo = echoed(res).await;
    let port = up.url().rsplit(':').next().unwrap().to_string();
    assert_eq!(seen(&echo, "host"), vec![format!("pbx.example.com:{port}")]);
}
