//! The 3CX client against the simulated 3CX: paging, the cached API token, error shapes,
//! and impersonation through the service extension (its rotating cookie, expiry,
//! revocation, 2FA, two replicas sharing it) or, where allowed, the API client.

use std::sync::Arc;

use pbxgate::clock::ManualClock;
use pbxgate::config::{Config, ImpersonationCredential};
use pbxgate::pbx::{PbxClient, PbxError};
use pbxgate::store::Store;
use pbxgate_sandbox::DEMO_SERVICE_EXTENSION as SERVICE;
use pbxgate_sandbox::pbx::{PbxSim, SimExtension, router};
use secrecy::ExposeSecret;

use crate::support::*;

async fn sim_with(n: i64, clock: &ManualClock) -> (Arc<PbxSim>, pbxgate_sandbox::Running) {
    init();
    let extensions = (0..n)
        .map(|i| SimExtension {
            id: i + 1,
            number: format!("{}", 1000 + i),
            first_name: format!("First{i}"),
            last_name: "Last".into(),
            email: format!("user{i}@contoso.com"),
            access_password: None,
            enabled: true,
            mobile: String::new(),
            outbound_caller_id: String::new(),
            ..Default::default()
        })
        .collect();
    let sim = Arc::new(PbxSim::new(
        "p",
        ("pbxgate", "xapi-secret-value"),
        extensions,
        Arc::new(clock.clone()),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = pbxgate_sandbox::spawn(listener, router(sim.clone()), None).unwrap();
    (sim, running)
}

/// A client of the 3CX at `url` with a store of its own, its config edited by `edit`.
struct Client {
    pbx: PbxClient,
    store: Store,
    _dir: tempfile::TempDir,
}

async fn client_with(url: &str, clock: &ManualClock, edit: impl FnOnce(&mut Config)) -> Client {
    let dir = tempfile::tempdir().unwrap();
    let c = config(url, dir.path(), edit);
    let store = Store::open(&c.store.url).await.unwrap();
    let pbx = PbxClient::new(&c.pbx, store.clone(), Arc::new(clock.clone())).unwrap();
    Client {
        pbx,
        store,
        _dir: dir,
    }
}

impl std::ops::Deref for Client {
    type Target = PbxClient;
    fn deref(&self) -> &PbxClient {
        &self.pbx
    }
}

async fn client_for(url: &str, clock: &ManualClock) -> Client {
    client_with(url, clock, |_| {}).await
}

#[tokio::test]
async fn users_are_read_in_pages_of_100_with_select() {
    let clock = ManualClock::new(START);
    let (_sim, server) = sim_with(250, &clock).await;
    let pbx = client_for(&server.url(), &clock).await;
    let all = pbx.users(None).await.unwrap();
    assert_eq!(all.len(), 250);
    assert_eq!(all[249].number, "1249");
    let found = pbx
        .users_by_email(&["USER7@contoso.com".into(), "nobody@x".into()])
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].number, "1007");
    // $select keeps the credentials the default listing carries out of pbxgate's hands.
    let raw = reqwest::Client::new()
        .get(format!("{}/xapi/v1/Users", server.url()))
        .bearer_auth(
            secrecy::ExposeSecret::expose_secret(&pbx.api_token().await.unwrap()).to_string(),
        )
        .query(&[("$top", "1"), ("$select", "Id,Number")])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!raw.contains("AuthPassword"), "{raw}");
}

#[tokio::test]
async fn the_api_token_is_cached_and_renewed_before_it_expires() {
    let clock = ManualClock::new(START);
    let (_sim, server) = sim_with(1, &clock).await;
    let pbx = client_for(&server.url(), &clock).await;
    let first = secrecy::ExposeSecret::expose_secret(&pbx.api_token().await.unwrap()).to_string();
    let again = secrecy::ExposeSecret::expose_secret(&pbx.api_token().await.unwrap()).to_string();
    assert_eq!(first, again, "cached");
    clock.advance(3600 - 30);
    let renewed = secrecy::ExposeSecret::expose_secret(&pbx.api_token().await.unwrap()).to_string();
    assert_ne!(first, renewed, "renewed within the last minute of its life");

    // Concurrent callers share one refresh: 3CX keeps one live token per API client, so a
    // second refresh would invalidate the first caller's token.
    clock.advance(3600);
    let tokens = futures_util::future::join_all((0..8).map(|_| pbx.api_token())).await;
    let distinct: std::collections::HashSet<String> = tokens
        .into_iter()
        .map(|t| secrecy::ExposeSecret::expose_secret(&t.unwrap()).to_string())
        .collect();
    assert_eq!(distinct.len(), 1);
    assert_eq!(pbx.users(None).await.unwrap().len(), 1, "and it works");
}

#[tokio::test]
async fn a_token_refused_with_401_is_renewed_once() {
    let clock = ManualClock::new(START);
    let (sim, server) = sim_with(1, &clock).await;
    let pbx = client_for(&server.url(), &clock).await;
    pbx.api_token().await.unwrap();
    // Another client with the same credentials: 3CX keeps one live token per API client, so
    // the cached one is now refused.
    client_for(&server.url(), &clock)
        .await
        .api_token()
        .await
        .unwrap();
    let before = sim.requests();
    assert_eq!(pbx.users(None).await.unwrap().len(), 1);
    assert_eq!(
        sim.requests() - before,
        2,
        "the refused call and its repeat"
    );
}

#[tokio::test]
async fn errors_keep_3cx_s_message() {
    let clock = ManualClock::new(START);
    let (_sim, server) = sim_with(1, &clock).await;
    let pbx = client_for(&server.url(), &clock).await;
    let err = pbx.users(Some("DisplayName eq 'x'")).await.unwrap_err();
    match err {
        PbxError::Api {
            status, message, ..
        } => {
            assert_eq!(status, 400);
            assert!(message.contains("unsupported $filter field"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let wrong = client_with(&server.url(), &clock, |c| {
        c.pbx.client_secret = "wrong".to_string().into()
    })
    .await;
    let err = wrong.pbx.users(None).await.unwrap_err();
    assert!(
        matches!(err, PbxError::Credentials(ref m) if m.contains("valid user authentication")),
        "{err}"
    );
    let down = client_for("http://127.0.0.1:9", &clock).await;
    assert!(matches!(
        down.users(None).await,
        Err(PbxError::Unreachable(_))
    ));
}

// === impersonation ===

/// `n` extensions from 1000 plus the service extension (System Owner, with its password).
async fn service_sim(n: i64, clock: &ManualClock) -> (Arc<PbxSim>, pbxgate_sandbox::Running) {
    let (sim, server) = sim_with(n, clock).await;
    sim.add_extension(SimExtension {
        number: SERVICE.into(),
        first_name: "pbxgate".into(),
        last_name: "service".into(),
        access_password: Some(SERVICE_PASSWORD.into()),
        enabled: true,
        admin: true,
        ..Default::default()
    });
    (sim, server)
}

/// Who 3CX says the bearer of `token` is (`/xapi/v1/MyUser`).
async fn who(server: &str, token: &secrecy::SecretString) -> String {
    let me: serde_json::Value = client()
        .get(format!("{server}/xapi/v1/MyUser"))
        .bearer_auth(token.expose_secret())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap_or_default();
    me["Number"].as_str().unwrap_or_default().to_string()
}

/// The simulated 3CX's answer to an impersonation request with `cookie` (None: no cookie).
async fn raw_impersonation(server: &str, cookie: Option<&str>) -> (u16, serde_json::Value) {
    let mut req = client().post(format!("{server}/connect/token")).form(&[
        ("client_id", "Webclient"),
        ("grant_type", "refresh_token"),
        ("impersonate", "1000"),
    ]);
    if let Some(c) = cookie {
        req = req.header("cookie", format!("RefreshTokenCookie={c}"));
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap_or_default())
}

#[tokio::test]
async fn the_service_extension_impersonates_and_its_cookie_rotates_at_every_use() {
    let clock = ManualClock::new(START);
    let (sim, server) = service_sim(3, &clock).await;
    let c = client_with(&server.url(), &clock, |_| {}).await;
    let t = c.pbx.impersonate("1000").await.unwrap();
    assert_eq!(who(&server.url(), &t.token).await, "1000");
    assert_eq!(sim.impersonations(), [(SERVICE.into(), "1000".into())]);
    assert_eq!(sim.sign_ins(SERVICE), 1);
    let first = sim.live_refresh_tokens(SERVICE);
    assert_eq!(
        first.len(),
        1,
        "one live cookie: the login's was rotated away"
    );

    // Cached per extension: no second request to 3CX.
    c.pbx.impersonate("1000").await.unwrap();
    assert_eq!(sim.impersonations().len(), 1);

    // Each use rotates the cookie; pbxgate keeps the newest, and the old one is dead.
    for ext in ["1001", "1002"] {
        let before = sim.live_refresh_tokens(SERVICE);
        let t = c.pbx.impersonate(ext).await.unwrap();
        assert_eq!(who(&server.url(), &t.token).await, ext);
        let after = sim.live_refresh_tokens(SERVICE);
        assert_eq!(after.len(), 1);
        assert_ne!(after, before, "rotated");
        let (status, body) = raw_impersonation(&server.url(), Some(&before[0])).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant"))
        );
    }
    assert_eq!(sim.sign_ins(SERVICE), 1, "never signed in again");

    // Stored sealed, at the version of the third rotation.
    let row = c.store.service_session(SERVICE).await.unwrap().unwrap();
    let live = &sim.live_refresh_tokens(SERVICE)[0];
    assert!(!row.sealed.contains(live.as_str()));
    assert_eq!(row.version, 4, "the login's cookie, then three rotations");

    // The simulated 3CX refuses a refresh grant without any refresh token.
    let (status, body) = raw_impersonation(&server.url(), None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
}

#[tokio::test]
async fn without_rotation_the_cookie_is_reused() {
    let clock = ManualClock::new(START);
    let (sim, server) = service_sim(2, &clock).await;
    sim.set_refresh_rotation(false);
    let c = client_with(&server.url(), &clock, |_| {}).await;
    c.pbx.impersonate("1000").await.unwrap();
    let first = sim.live_refresh_tokens(SERVICE);
    c.pbx.impersonate("1001").await.unwrap();
    assert_eq!(sim.live_refresh_tokens(SERVICE), first);
    let row = c.store.service_session(SERVICE).await.unwrap().unwrap();
    assert_eq!(row.version, 1, "nothing new to store");
}

#[tokio::test]
async fn an_expired_or_revoked_cookie_means_signing_in_again() {
    let clock = ManualClock::new(START);
    let (sim, server) = service_sim(3, &clock).await;
    let c = client_with(&server.url(), &clock, |_| {}).await;
    c.pbx.impersonate("1000").await.unwrap();
    sim.expire_refresh_tokens(SERVICE);
    let t = c.pbx.impersonate("1001").await.unwrap();
    assert_eq!(who(&server.url(), &t.token).await, "1001");
    assert_eq!(sim.sign_ins(SERVICE), 2);
    sim.revoke_refresh_tokens(SERVICE);
    c.pbx.impersonate("1002").await.unwrap();
    assert_eq!(sim.sign_ins(SERVICE), 3);
    // Cached impersonated tokens expire too: a fresh one shortly before the hour is up.
    clock.advance(3600 - 30);
    let again = c.pbx.impersonate("1000").await.unwrap();
    assert!(again.expires_at > clock_now(&clock) + 3000);
}

fn clock_now(clock: &ManualClock) -> i64 {
    pbxgate::clock::Clock::now(clock)
}

#[tokio::test]
async fn a_changed_service_password_forces_a_new_sign_in_not_a_failure() {
    let clock = ManualClock::new(START);
    let (sim, server) = service_sim(2, &clock).await;
    let dir = tempfile::tempdir().unwrap();
    let make = |password: &str| {
        let mut c = config(&server.url(), dir.path(), |_| {});
        c.pbx.service_password = Some(password.to_string().into());
        c
    };
    let c = make(SERVICE_PASSWORD);
    let store = Store::open(&c.store.url).await.unwrap();
    let pbx = PbxClient::new(&c.pbx, store.clone(), Arc::new(clock.clone())).unwrap();
    pbx.impersonate("1000").await.unwrap();
    sim.edit_extension(SERVICE, |e| e.access_password = Some("changed".into()));
    let pbx = PbxClient::new(&make("changed").pbx, store, Arc::new(clock.clone())).unwrap();
    pbx.impersonate("1001").await.unwrap();
    assert_eq!(sim.sign_ins(SERVICE), 2);
}

#[tokio::test]
async fn two_factor_needs_the_totp_secret_which_is_named_when_missing() {
    let clock = ManualClock::new(START);
    let (sim, server) = service_sim(1, &clock).await;
    let secret = "JBSWY3DPEHPK3PXPJBSWY3DP";
    sim.edit_extension(SERVICE, |e| e.totp_secret = Some(secret.into()));
    let without = client_for(&server.url(), &clock).await;
    let err = without.impersonate("1000").await.unwrap_err();
    assert!(matches!(err, PbxError::ServiceNeeds2fa(_)), "{err:?}");
    assert!(err.to_string().contains("pbx.service_totp_secret"), "{err}");
    assert_eq!(sim.sign_ins(SERVICE), 0);

    let wrong = client_with(&server.url(), &clock, |c| {
        c.pbx.service_totp_secret = Some("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ".to_string().into())
    })
    .await;
    let err = wrong.pbx.impersonate("1000").await.unwrap_err();
    assert!(matches!(err, PbxError::Service2faRefused { .. }), "{err:?}");

    let with = client_with(&server.url(), &clock, |c| {
        c.pbx.service_totp_secret = Some(secret.to_lowercase().into())
    })
    .await;
    let t = with.pbx.impersonate("1000").await.unwrap();
    assert_eq!(who(&server.url(), &t.token).await, "1000");
    assert_eq!(sim.sign_ins(SERVICE), 1);
}

#[tokio::test]
async fn refusals_are_clear_self_disabled_wrong_password_not_admin() {
    let clock = ManualClock::new(START);
    let (sim, server) = service_sim(2, &clock).await;
    let c = client_for(&server.url(), &clock).await;
    let err = c.impersonate(SERVICE).await.unwrap_err();
    assert!(matches!(err, PbxError::SelfImpersonation(_)), "{err:?}");
    assert!(
        err.to_string().contains("cannot impersonate itself"),
        "{err}"
    );

    sim.edit_extension("1001", |e| e.enabled = false);
    let err = c.impersonate("1001").await.unwrap_err();
    assert!(
        matches!(err, PbxError::TargetDisabled(ref e) if e == "1001"),
        "{err:?}"
    );
    assert!(c.impersonate("1000").await.is_ok(), "the others still work");

    sim.edit_extension(SERVICE, |e| e.admin = false);
    c.forget_impersonation("1000");
    let err = c.impersonate("1000").await.unwrap_err();
    assert!(err.to_string().contains("System Owner"), "{err}");

    let wrong = client_with(&server.url(), &clock, |c| {
        c.pbx.service_password = Some("wrong".to_string().into())
    })
    .await;
    let err = wrong.pbx.impersonate("1000").await.unwrap_err();
    assert!(
        matches!(err, PbxError::ServiceSignIn { status: 401, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("pbx.service_password"), "{err}");
}

#[tokio::test]
async fn the_api_client_variant_works_only_where_3cx_allows_it() {
    let clock = ManualClock::new(START);
    let (sim, server) = service_sim(1, &clock).await;
    let c = client_with(&server.url(), &clock, |c| {
        c.pbx.impersonation_credential = ImpersonationCredential::ApiClient
    })
    .await;
    let err = c.pbx.impersonate("1000").await.unwrap_err();
    assert!(
        matches!(err, PbxError::SignInRefused { status: 400, .. }),
        "{err:?}"
    );
    sim.allow_api_client_impersonation(true);
    let t = c.pbx.impersonate("1000").await.unwrap();
    assert_eq!(who(&server.url(), &t.token).await, "1000");
    assert_eq!(sim.impersonations(), [("api-client".into(), "1000".into())]);
    assert_eq!(sim.sign_ins(SERVICE), 0, "no service extension involved");
}

/// Two gateways on one PostgreSQL, many browsers asking both for tokens at once, each
/// request made to use the service cookie (cached tokens are forgotten first): the cookie
/// rotates at every use, and the replicas hand it on through the store without a browser
/// ever seeing a refusal.
#[tokio::test]
async fn two_replicas_on_postgresql_share_one_rotating_cookie() {
    init();
    let clock = ManualClock::new(START);
    let sandbox = sandbox(&registration(), &clock).await;
    let server = sandbox.pbx_server.url();
    let db = PgDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&server, dir.path(), |c| c.store.url = db.url.clone());
    let replicas = [
        TestGateway::start_with_clock(cfg.clone(), clock.clone()).await,
        TestGateway::start_with_clock(cfg, clock.clone()).await,
    ];
    let mut browsers = Vec::new();
    for (i, gw) in replicas.iter().enumerate() {
        for ext in ["100", "101", "102", "103"] {
            let id = gw
                .app
                .sessions
                .create(pbxgate::session::NewSession {
                    user_key: format!("{TENANT}:{i}-{ext}"),
                    upn: format!("u{i}-{ext}@contoso.com"),
                    extension: ext.into(),
                    idp_sid: None,
                    login_hint: None,
                })
                .await
                .unwrap();
            browsers.push((gw, ext, id));
        }
    }
    // Each browser asks 6 times in a row; the 8 browsers (4 per replica) at once.
    let requests = browsers.iter().map(|(gw, ext, id)| {
        let server = server.clone();
        async move {
            let mut seen = Vec::new();
            for _ in 0..6 {
                gw.app.pbx.forget_impersonation(ext);
                let res = client()
                    .post(gw.url("/connect/token"))
                    .header("cookie", cookie(id))
                    .form(&[("client_id", "Webclient"), ("grant_type", "refresh_token")])
                    .send()
                    .await
                    .unwrap();
                let status = res.status().as_u16();
                let body: serde_json::Value = res.json().await.unwrap_or_default();
                let token = body["access_token"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let me = who(&server, &token.into()).await;
                seen.push((status, body["error"].clone(), me, ext.to_string()));
            }
            seen
        }
    });
    let results: Vec<_> = futures_util::future::join_all(requests)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(results.len(), 48);
    for (status, error, me, ext) in &results {
        assert_eq!((*status, error, me), (200, &serde_json::Value::Null, ext));
    }
    let impersonations = sandbox.pbx.impersonations();
    assert!(impersonations.len() >= 48, "{}", impersonations.len());
    assert!(impersonations.iter().all(|(by, _)| by == SERVICE));
    let sign_ins = sandbox.pbx.sign_ins(SERVICE);
    let row = replicas[0]
        .app
        .store
        .service_session(SERVICE)
        .await
        .unwrap()
        .unwrap();
    eprintln!(
        "48 tokens: {} impersonation requests, {sign_ins} sign-ins, cookie version {}",
        impersonations.len(),
        row.version
    );
    assert!(
        sign_ins <= 4,
        "replicas mostly hand the cookie on: {sign_ins} sign-ins"
    );
    assert_eq!(
        sandbox.pbx.live_refresh_tokens(SERVICE).len(),
        sign_ins,
        "one chain per sign-in"
    );
}
