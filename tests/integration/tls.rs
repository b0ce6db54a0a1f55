//! TLS termination with the configured certificate, and TLS to a 3CX with a private CA.

use crate::support::*;

#[tokio::test]
async fn terminates_tls_with_the_configured_certificate() {
    let up = Upstream::start().await;
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = pki
        .leaf(&["localhost", "127.0.0.1"])
        .unwrap()
        .write(dir.path(), "gateway")
        .unwrap();
    let gw = TestGateway::start(&up.url(), |c| {
        c.server.tls_cert = Some(cert);
        c.server.tls_key = Some(key);
    })
    .await;
    let url = gw.url("/provisioning/a/b");
    assert!(url.starts_with("https://"));

    let res = client_trusting(&pki.ca_pem).get(&url).send().await.unwrap();
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
