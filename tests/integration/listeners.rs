//! Several listeners in one process (issue 16): 443 and 5001 on one certificate, and a plain
//! LAN listener that serves passthrough paths (phone provisioning) and nothing else.

use http::Version;
use pbxgate::config::Listeners;

use crate::support::*;

#[tokio::test]
async fn two_tls_listeners_both_answer_over_h2_and_h1() {
    let up = Upstream::start().await;
    let cert = GatewayCert::new();
    let (gw, addrs) = TestGateway::start_listening(&up.url(), |c| {
        cert.configure(c);
        c.server.listen = Listeners(vec![
            listener(None, false, false),
            listener(Some(true), false, false),
        ]);
    })
    .await;
    assert_eq!(addrs.len(), 2);
    assert_ne!(addrs[0], addrs[1]);
    let id = gw.session_for("alice").await;
    for addr in &addrs {
        for (http2, version) in [(true, Version::HTTP_2), (false, Version::HTTP_11)] {
            let client = tls_client(&cert.pki.ca_pem, http2);
            let res = client
                .get(format!("https://{addr}/webclient/api"))
                .header("cookie", cookie(&id))
                .send()
                .await
                .unwrap();
            assert_eq!(res.version(), version, "{addr}");
            assert!(res.headers().contains_key("strict-transport-security"));
            assert_eq!(echoed(res).await["path"], "/webclient/api", "{addr}");
        }
    }
    // One app behind both: the session made once is valid on each, as the hits show.
    assert_eq!(up.hits(), 4);
}

#[tokio::test]
async fn a_passthrough_only_listener_serves_provisioning_and_nothing_else() {
    let up = Upstream::start().await;
    let cert = GatewayCert::new();
    let (gw, addrs) = TestGateway::start_listening(&up.url(), |c| {
        cert.configure(c);
        c.server.listen = Listeners(vec![
            listener(None, false, false),
            listener(Some(false), false, true),
        ]);
    })
    .await;
    let lan = format!("http://{}", addrs[1]);
    let plain = client();
    let res = plain
        .get(format!("{lan}/provisioning/s3cret/0015650a1b2c.cfg"))
        .send()
        .await
        .unwrap();
    assert!(
        !res.headers().contains_key("strict-transport-security"),
        "no HSTS over plain HTTP"
    );
    assert_eq!(
        echoed(res).await["path"],
        "/provisioning/s3cret/0015650a1b2c.cfg"
    );
    assert_eq!(up.hits(), 1);

    // No sign-in, no 3CX page, no pbxgate route: even with a valid session cookie.
    let id = gw.session_for("alice").await;
    for path in [
        "/",
        "/auth/login",
        "/auth/callback?code=x&state=y",
        "/webclient/",
        "/healthz",
        "/connect/token",
        "/provisioning/../webclient/",
        "/provisioningx/a",
    ] {
        let res = plain
            .get(format!("{lan}{path}"))
            .header("accept", "text/html")
            .header("cookie", cookie(&id))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{path}");
        assert!(res.headers().get("set-cookie").is_none(), "{path}");
    }
    let res = plain
        .post(format!("{lan}/webclient/api/login"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(up.hits(), 1, "nothing else reached 3CX");

    // The TLS listener beside it is the whole gateway.
    let full = tls_client(&cert.pki.ca_pem, true);
    let res = full.get(gw.url("/auth/login")).send().await.unwrap();
    assert_ne!(res.status(), 404);
    let res = full.get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn a_sign_out_from_a_page_on_another_listener_is_same_origin() {
    let up = Upstream::start().await;
    let cert = GatewayCert::new();
    let (gw, addrs) = TestGateway::start_listening(&up.url(), |c| {
        cert.configure(c);
        c.server.listen = Listeners(vec![
            listener(None, false, false),
            listener(Some(true), false, false),
        ]);
    })
    .await;
    let host = url::Url::parse(PUBLIC)
        .unwrap()
        .host_str()
        .unwrap()
        .to_string();
    let second = addrs[1].port();
    let post = async |origin: String| {
        let id = gw.session_for("alice").await;
        tls_client(&cert.pki.ca_pem, false)
            .post(format!("https://{}/auth/logout", addrs[1]))
            // What a browser on https://{public host}:{port}/ sends.
            .header("host", format!("{host}:{second}"))
            .header("cookie", cookie(&id))
            .header("origin", origin)
            .header("content-type", "application/x-www-form-urlencoded")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    // The webclient open on the second port (5001 at a real site) signs out from there.
    assert_ne!(post(format!("https://{host}:{second}")).await, 403);
    // The same host on a port pbxgate does not serve is another origin.
    let other = if second == 1 { 2 } else { second - 1 };
    assert_eq!(post(format!("https://{host}:{other}")).await, 403);
}
