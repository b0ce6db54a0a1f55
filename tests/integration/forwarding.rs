//! Forwarding hygiene (issue 15): who the client is behind trusted proxies (the `/metrics`
//! allow list and the sign-in rate limit), and what 3CX is told.

use pbxgate::clock::{Clock, ManualClock};
use pbxgate_sandbox::DEMO_TENANT;

use crate::support::*;

/// A gateway behind a trusted load balancer on 127.0.0.0/8 (the test client's address).
async fn behind_proxy(up: &Upstream, login_rate_limit: u32) -> TestGateway {
    TestGateway::start(&up.url(), |c| {
        c.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
        c.server.login_rate_limit = login_rate_limit;
    })
    .await
}

async fn status(gw: &TestGateway, path: &str, forwarded_for: Option<&str>) -> u16 {
    let mut req = client().get(gw.url(path));
    if let Some(chain) = forwarded_for {
        req = req.header("x-forwarded-for", chain);
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn no_forwarded_for_chain_opens_metrics_to_an_outside_client() {
    let up = Upstream::start().await;
    let gw = behind_proxy(&up, 30).await;
    // The load balancer itself, and a chain of trusted hops only: in the allow list.
    assert_eq!(status(&gw, "/metrics", None).await, 200);
    assert_eq!(status(&gw, "/metrics", Some("127.0.0.5")).await, 200);
    for chain in [
        "203.0.113.9",
        // Issue 15: one unparseable entry made the load balancer the client.
        "x, 203.0.113.9",
        "127.0.0.1, 203.0.113.9",
        // Where the client should be there is no address: the last trusted hop stands in
        // for rate limits, but no allow list admits it.
        "203.0.113.9, x",
        "203.0.113.9, unknown, 127.0.0.7",
        "203.0.113.9, 127.0.0.1:99999",
        "",
    ] {
        assert_eq!(status(&gw, "/metrics", Some(chain)).await, 403, "{chain:?}");
    }
}

#[tokio::test]
async fn the_sign_in_rate_limit_counts_the_client_the_chain_names() {
    let up = Upstream::start().await;
    let gw = behind_proxy(&up, 2).await;
    let login = |chain: &'static str| {
        let gw = &gw;
        async move { status(gw, "/auth/login", Some(chain)).await }
    };
    // Padding left of the client changes nothing: all three count for 203.0.113.9.
    assert_ne!(login("x, 203.0.113.9").await, 429);
    assert_ne!(login("garbage, 203.0.113.9").await, 429);
    assert_eq!(login("203.0.113.9").await, 429);
    // The load balancer's own count was not touched.
    assert_ne!(status(&gw, "/auth/login", None).await, 429);
}

#[tokio::test]
async fn ipv6_clients_share_a_sign_in_rate_limit_per_64() {
    let up = Upstream::start().await;
    let gw = behind_proxy(&up, 2).await;
    let login = |chain: &'static str| {
        let gw = &gw;
        async move { status(gw, "/auth/login", Some(chain)).await }
    };
    // A client has the whole /64 to pick addresses from.
    assert_ne!(login("2001:db8:1:2::1").await, 429);
    assert_ne!(login("[2001:db8:1:2::ffff]:4711").await, 429);
    assert_eq!(login("2001:db8:1:2:abcd::9").await, 429);
    assert_ne!(login("2001:db8:1:3::1").await, 429);
}

#[tokio::test]
async fn three_cx_hears_the_public_host_and_no_overrides_or_pbxgate_cookies() {
    init();
    let up = Upstream::start().await;
    let clock = ManualClock::new(pbxgate::clock::SystemClock.now());
    let sandbox = sandbox(&registration(), &clock).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&up.url(), dir.path(), |c| {
        c.entra.authority = sandbox.entra_server.url().parse().unwrap();
        c.entra.tenant_id = DEMO_TENANT.into();
    });
    let gw = TestGateway::start_with_clock(config, clock).await;
    // A real sign-in start, so the login-attempt cookie has the name pbxgate gives it.
    let mut browser = Browser::default();
    assert_eq!(browser.get(&gw, "/auth/login").await.status(), 303);
    assert_eq!(browser.cookies.len(), 1, "{:?}", browser.cookies);
    let session = gw.session_for("alice").await;
    browser.cookies.insert(COOKIE.into(), session);
    browser.cookies.insert("3cx".into(), "kept".into());

    let overrides = [
        "x-original-url",
        "x-rewrite-url",
        "x-forwarded-prefix",
        "x-forwarded-path",
        "x-override-url",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ];
    let mut req = client()
        .get(gw.url("/provisioning/x/y"))
        .header("host", "evil.example")
        .header("x-forwarded-host", "evil.example")
        .header("cookie", browser.cookie_header());
    for name in overrides {
        req = req.header(name, "/webclient/api/whatever");
    }
    let echo = echoed(req.send().await.unwrap()).await;
    // Every difference at once, so a failure shows them all.
    let mut wrong: Vec<String> = overrides
        .iter()
        .filter(|name| !seen(&echo, name).is_empty())
        .map(|name| format!("{name} reached 3CX"))
        .collect();
    for (name, want) in [
        ("x-forwarded-host", "pbx.example.com"),
        ("cookie", "3cx=kept"),
    ] {
        if seen(&echo, name) != [want] {
            wrong.push(format!("{name}: {:?}", seen(&echo, name)));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
