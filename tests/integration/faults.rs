//! Faults injected while the gateway serves: each must end in a clear answer, never a hang, a
//! 500 or a sign-in loop, and the gateway must recover without a restart.

use std::future::Future;
use std::time::Duration;

use pbxgate::clock::{Clock, ManualClock};
use pbxgate::store::SessionRow;
use pbxgate_sandbox::{DEMO_TENANT, Sandbox};

use crate::support::*;

/// The longest any request may take while the store is down: the PostgreSQL pool's wait for a
/// connection (5 s), plus slack for a loaded test host.
const OUTAGE_BOUND: Duration = Duration::from_secs(8);

/// How long the gateway may take to notice that the store is back.
const RECOVERY: Duration = Duration::from_secs(10);

struct Env {
    _sandbox: Sandbox,
    gw: TestGateway,
    clock: ManualClock,
    _dir: tempfile::TempDir,
}

/// The sandbox and a gateway whose PostgreSQL store is reached through `link`.
async fn env(db: &PgDatabase, link: &StoreLink) -> Env {
    init();
    let clock = ManualClock::new(pbxgate::clock::SystemClock.now());
    let sandbox = sandbox(&registration(), &clock).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&sandbox.pbx_server.url(), dir.path(), |c| {
        c.entra.authority = sandbox.entra_server.url().parse().unwrap();
        c.entra.tenant_id = DEMO_TENANT.into();
        c.entra.graph_url = sandbox.graph_server.url().parse().unwrap();
        c.server.login_rate_limit = 10_000;
        c.store.url = link.url_for(&db.url);
    });
    let gw = TestGateway::start_with_clock(config, clock.clone()).await;
    Env {
        _sandbox: sandbox,
        gw,
        clock,
        _dir: dir,
    }
}

/// `f`, which must answer within [`OUTAGE_BOUND`].
async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(OUTAGE_BOUND, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {OUTAGE_BOUND:?} (hangs)"))
}

/// A session another replica made: in the store, never in this replica's cache.
async fn session_elsewhere(env: &Env, user: &str) -> String {
    let id = format!("{:_<43}", user.replace('.', "-"));
    let digest = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
    let now = env.clock.now();
    let row = SessionRow {
        id_hash: digest.as_ref().iter().map(|b| format!("{b:02x}")).collect(),
        user_key: format!("{DEMO_TENANT}:{user}"),
        upn: format!("{user}@contoso.com"),
        extension: "102".into(),
        idp_sid: None,
        created_at: now,
        last_seen_at: now,
        expires_at: now + 3600,
        revoked_at: None,
        login_hint: None,
    };
    env.gw.app.store.insert_session(&row).await.unwrap();
    id
}

/// A webclient page requested with session `id`.
async fn page_as(gw: &TestGateway, id: &str) -> reqwest::Response {
    client()
        .get(gw.url("/webclient"))
        .header("cookie", cookie(id))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap()
}

async fn readyz(gw: &TestGateway) -> (u16, serde_json::Value) {
    let res = client().get(gw.url("/readyz")).send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

/// Asserts that `res` is the short "try again" page with its correlation id: no redirect (to
/// a sign-in that could not work either), no 500.
async fn assert_unavailable_page(res: reqwest::Response, what: &str) -> String {
    assert_eq!(res.status(), 503, "{what}");
    assert!(
        res.headers().get("location").is_none(),
        "{what}: no redirect"
    );
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"),
        "{what}"
    );
    let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    let page = res.text().await.unwrap();
    assert!(
        page.contains(&id),
        "{what}: correlation id on the page: {page}"
    );
    page
}

#[tokio::test]
async fn store_outage_keeps_cached_sessions_answers_503_and_recovers_without_restart() {
    let db = PgDatabase::create().await;
    let link = StoreLink::start().await;
    let env = env(&db, &link).await;
    let gw = &env.gw;
    let mut alice = Browser::default();
    assert_eq!(
        alice.sign_in(gw, "alice.adams@contoso.com").await.status(),
        303
    );
    assert_eq!(alice.get(gw, "/webclient").await.status(), 200);
    let bob = session_elsewhere(&env, "bob.baker").await;
    // Dave's sign-in is under way when the store goes.
    let mut dave = Browser::default();
    let dave_back = dave
        .walk_to_callback(gw, "bob.baker@contoso.com", "/webclient/")
        .await;
    assert_eq!(readyz(gw).await.0, 200);

    link.down().await;

    // Alice's session is in this replica's cache: she keeps working, also when her activity
    // is due to be written (the write fails; it is not what lets her in).
    let res = bounded("cached session", alice.get(gw, "/webclient")).await;
    assert_eq!(res.status(), 200, "cached session during the outage");
    env.clock.advance(61);
    let touched = std::time::Instant::now();
    let res = bounded("cached session, touch due", alice.get(gw, "/webclient")).await;
    assert!(
        touched.elapsed() < Duration::from_secs(2),
        "a cached session waited {:?} for the store",
        touched.elapsed()
    );
    assert_eq!(
        res.status(),
        200,
        "a failed activity write must not refuse a cached session: {:?}",
        res.text().await
    );
    let token = bounded("cached token refresh", alice.webclient_extension(gw)).await;
    assert_eq!(token, Ok("101".into()), "cached session's token refresh");

    // Bob's session must be looked up: a page saying so, not a sign-in that cannot work.
    let res = bounded("uncached session", page_as(gw, &bob)).await;
    assert!(
        res.headers().get("set-cookie").is_none(),
        "bob's cookie kept"
    );
    assert_unavailable_page(res, "uncached session").await;

    // The webclient's token refresh: Bob's cannot be decided, which is not the "you have no
    // session" that would sign the webclient out.
    let mut bob_browser = Browser::default();
    bob_browser.cookies.insert(COOKIE.into(), bob.clone());
    let token = bounded(
        "uncached token refresh",
        bob_browser.webclient_extension(gw),
    )
    .await;
    assert_eq!(token, Err(503), "bob's token refresh during the outage");
    assert!(bob_browser.has_session(), "bob's cookie kept");

    let (status, body) = bounded("/readyz", readyz(gw)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["store"]["ok"], false, "{body}");
    assert_eq!(body["checks"]["pbx"]["ok"], true, "{body}");

    // A new sign-in cannot be recorded: a clear page that does not blame Microsoft.
    let mut carol = Browser::default();
    let res = bounded(
        "sign-in start",
        carol.get(gw, "/auth/login?return_to=%2Fwebclient%2F"),
    )
    .await;
    let page = assert_unavailable_page(res, "sign-in start").await;
    assert!(
        !page.contains("Microsoft"),
        "the store is down, not Entra: {page}"
    );
    assert!(!carol.has_session());
    let res = bounded("sign-in callback", dave.get(gw, &dave_back)).await;
    assert_unavailable_page(res, "sign-in callback").await;
    assert!(!dave.has_session());

    // Past the cache lifetime Alice's session needs the store too: the same page, her
    // cookie kept.
    assert!(touched.elapsed() > pbxgate::session::CACHE_TTL);
    let res = bounded("cache lifetime over", alice.get(gw, "/webclient")).await;
    assert!(
        res.headers().get("set-cookie").is_none(),
        "alice's cookie kept"
    );
    assert_unavailable_page(res, "cache lifetime over").await;

    link.up().await;

    // Back without a restart: readiness first, then every kind of request.
    let started = std::time::Instant::now();
    while readyz(gw).await.0 != 200 {
        assert!(
            started.elapsed() < RECOVERY,
            "/readyz still failing {RECOVERY:?} after the store came back: {}",
            readyz(gw).await.1
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let res = page_as(gw, &bob).await;
    assert_eq!(res.status(), 200, "bob's session after the outage");
    assert_eq!(bob_browser.webclient_extension(gw).await, Ok("102".into()));
    assert_eq!(alice.get(gw, "/webclient").await.status(), 200);
    let res = carol.sign_in(gw, "bob.baker@contoso.com").await;
    assert_eq!(res.status(), 303, "a new sign-in after the outage");
    assert_eq!(location(&res), "/webclient/");
    assert_eq!(carol.get(gw, "/webclient").await.status(), 200);
}

#[tokio::test]
async fn revocations_during_a_store_outage_end_cached_sessions_at_once() {
    let db = PgDatabase::create().await;
    let link = StoreLink::start().await;
    let env = env(&db, &link).await;
    let gw = &env.gw;
    let mut alice = Browser::default();
    alice.sign_in(gw, "alice.adams@contoso.com").await;
    assert_eq!(alice.get(gw, "/webclient").await.status(), 200);
    let signed_out = alice.cookies[COOKIE].clone();
    let disabled = gw.session_for("erin").await;
    let revoked_in_entra = gw.session_for("frank").await;
    assert!(gw.app.pbx.holds_impersonation("101"), "alice's 3CX access");

    link.down().await;
    // The store cannot record them; this replica must not honour the sessions from its
    // cache for the rest of the cache lifetime all the same. Concurrently: each waits for
    // the store, and the cache lifetime is short.
    let (erin, frank) = (format!("{TENANT}:erin"), format!("{TENANT}:frank"));
    let (a, b, c) = bounded("revocations", async {
        tokio::join!(
            gw.app.revoker.sign_out(&signed_out, None),
            gw.app.sessions.revoke_user(&erin),
            gw.app
                .sessions
                .revoke_user_before(&frank, env.clock.now() + 1),
        )
    })
    .await;
    assert!(
        a.is_err() && b.is_err() && c.is_err(),
        "the store writes failed"
    );
    assert!(
        !gw.app.pbx.holds_impersonation("101"),
        "a sign-out the store could not record still ends the 3CX access"
    );
    let replay = |id: String, what: &'static str| async move {
        let res = bounded(what, page_as(gw, &id)).await;
        assert_ne!(res.status(), 200, "{what}: passed from the cache");
        assert_unavailable_page(res, what).await;
    };
    tokio::join!(
        replay(signed_out, "signed out"),
        replay(disabled, "user's sessions revoked"),
        replay(revoked_in_entra, "user's earlier sessions revoked"),
    );
}
