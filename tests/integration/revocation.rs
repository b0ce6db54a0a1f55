//! Revocation that reaches 3CX, and sign-in refusing what the user sync would refuse: the
//! session recheck against Entra on a manual clock (disabled, deleted, "revoke sessions",
//! a Graph outage), managed-password rotation ending the browser's 3CX cookie at 3CX, and
//! the guest / removed / linked-to-another-user / disabled-extension refusals at sign-in.

use std::time::Duration;

use pbxgate::clock::{Clock, ManualClock};
use pbxgate::config::{Config, HumanDuration, SessionMode};
use pbxgate::store::DirectoryRow;
use pbxgate_sandbox::pbx::SimExtension;
use pbxgate_sandbox::{DEMO_TENANT, Sandbox};

use crate::support::*;

const ALICE_OID: &str = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";
const BOB_OID: &str = "6ba7b810-9dad-41d1-80b4-00c04fd430c8";
const GINA_OID: &str = "1b4e28ba-2fa1-41d2-883f-0016d3cca427";
/// `[session] recheck` in these tests: its minimum.
const RECHECK: i64 = 10;

struct Env {
    sandbox: Sandbox,
    gw: TestGateway,
    clock: ManualClock,
    _dir: tempfile::TempDir,
}

async fn env_with(edit: impl FnOnce(&mut Config)) -> Env {
    init();
    let clock = ManualClock::new(pbxgate::clock::SystemClock.now());
    let sandbox = sandbox(&registration(), &clock).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&sandbox.pbx_server.url(), dir.path(), |c| {
        c.entra.authority = sandbox.entra_server.url().parse().unwrap();
        c.entra.tenant_id = DEMO_TENANT.into();
        c.entra.graph_url = sandbox.graph_server.url().parse().unwrap();
        c.server.login_rate_limit = 10_000;
        c.session.recheck = HumanDuration::secs(RECHECK as u64);
    });
    edit(&mut config);
    let gw = TestGateway::start_with_clock(config, clock.clone()).await;
    Env {
        sandbox,
        gw,
        clock,
        _dir: dir,
    }
}

fn managed(c: &mut Config) {
    use base64::Engine;
    c.pbx.session_mode = SessionMode::ManagedPassword;
    c.pbx.password_key = Some(
        base64::engine::general_purpose::STANDARD
            .encode([42u8; 32])
            .into(),
    );
}

/// Whether pbxgate still lets this browser through to 3CX.
async fn has_live_session(b: &mut Browser, gw: &TestGateway) -> bool {
    let res = b.get(gw, "/").await;
    let to_login = res
        .headers()
        .get("location")
        .is_some_and(|l| l.to_str().unwrap().starts_with("/auth/login"));
    !to_login && res.status() == 200
}

/// The value of a counter line in `/metrics` (0 when absent).
fn metric(env: &Env, series: &str) -> u64 {
    env.gw
        .app
        .metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

fn rechecks(env: &Env, outcome: &str) -> u64 {
    metric(
        env,
        &format!("pbxgate_session_rechecks_total{{outcome=\"{outcome}\"}}"),
    )
}

/// Moves the clock over one recheck interval and waits (in real time, a few polls of the
/// worker) until a recheck with `outcome` has been recorded.
async fn next_recheck(env: &Env, outcome: &str) {
    let before = rechecks(env, outcome);
    env.clock.advance(RECHECK);
    for _ in 0..100 {
        if rechecks(env, outcome) > before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "no {outcome} recheck within 10 s:\n{}",
        env.gw.app.metrics.render()
    );
}

#[tokio::test]
async fn recheck_ends_a_disabled_users_session_and_3cx_access_within_the_interval() {
    let env = env_with(|_| {}).await;
    assert!(!env.gw.app.config.sync.users.enabled, "no user sync here");
    let (mut alice, mut bob) = (Browser::default(), Browser::default());
    assert_eq!(
        alice
            .sign_in(&env.gw, "alice.adams@contoso.com")
            .await
            .status(),
        303
    );
    assert_eq!(
        bob.sign_in(&env.gw, "bob.baker@contoso.com").await.status(),
        303
    );
    assert_eq!(alice.webclient_extension(&env.gw).await, Ok("101".into()));

    env.sandbox
        .graph
        .update_user(ALICE_OID, |u| u.account_enabled = false);
    // Until the interval is up by the clock, nothing is rechecked.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rechecks(&env, "ok"), 0);
    assert!(has_live_session(&mut alice, &env.gw).await);

    next_recheck(&env, "ok").await;
    assert!(
        !has_live_session(&mut alice, &env.gw).await,
        "session ended"
    );
    assert!(
        alice.webclient_extension(&env.gw).await.is_err(),
        "no 3CX token any more"
    );
    assert_eq!(bob.webclient_extension(&env.gw).await, Ok("102".into()));
    assert!(
        has_live_session(&mut bob, &env.gw).await,
        "Bob is untouched"
    );
    assert_eq!(
        metric(&env, "pbxgate_sessions_revoked_total{reason=\"disabled\"}"),
        1
    );
    assert_eq!(metric(&env, "pbxgate_session_recheck_users_total"), 2);
}

#[tokio::test]
async fn a_session_started_before_revoke_sessions_ends_one_started_after_survives() {
    let env = env_with(|_| {}).await;
    let (mut before, mut after) = (Browser::default(), Browser::default());
    before.sign_in(&env.gw, "alice.adams@contoso.com").await;
    env.clock.advance(3);
    // "Revoke sessions" in Entra.
    assert!(env.sandbox.graph.revoke_sign_in_sessions(ALICE_OID));
    env.clock.advance(3);
    after.sign_in(&env.gw, "alice.adams@contoso.com").await;
    assert!(has_live_session(&mut before, &env.gw).await);

    next_recheck(&env, "ok").await;
    assert!(
        !has_live_session(&mut before, &env.gw).await,
        "older session ended"
    );
    assert!(
        has_live_session(&mut after, &env.gw).await,
        "newer session kept"
    );
    assert_eq!(after.webclient_extension(&env.gw).await, Ok("101".into()));
    assert_eq!(
        metric(
            &env,
            "pbxgate_sessions_revoked_total{reason=\"sessions_revoked\"}"
        ),
        1
    );
    // And it stays so on the next round.
    next_recheck(&env, "ok").await;
    assert!(has_live_session(&mut after, &env.gw).await);
}

#[tokio::test]
async fn a_graph_outage_during_recheck_keeps_sessions_and_the_next_round_catches_up() {
    let env = env_with(|_| {}).await;
    let mut alice = Browser::default();
    alice.sign_in(&env.gw, "alice.adams@contoso.com").await;
    env.sandbox
        .graph
        .fail_next(1_000, http::StatusCode::INTERNAL_SERVER_ERROR);
    env.sandbox
        .graph
        .update_user(ALICE_OID, |u| u.account_enabled = false);
    next_recheck(&env, "failed").await;
    assert!(
        has_live_session(&mut alice, &env.gw).await,
        "Graph did not answer: nothing changes"
    );
    assert_eq!(alice.webclient_extension(&env.gw).await, Ok("101".into()));

    env.sandbox
        .graph
        .fail_next(0, http::StatusCode::INTERNAL_SERVER_ERROR);
    next_recheck(&env, "ok").await;
    assert!(
        !has_live_session(&mut alice, &env.gw).await,
        "retried next interval"
    );
}

#[tokio::test]
async fn recheck_without_the_user_sync_ends_a_deleted_users_session() {
    let env = env_with(|c| c.sync.users.enabled = false).await;
    let (mut alice, mut bob) = (Browser::default(), Browser::default());
    alice.sign_in(&env.gw, "alice.adams@contoso.com").await;
    bob.sign_in(&env.gw, "bob.baker@contoso.com").await;
    assert!(env.sandbox.graph.delete_user(BOB_OID, false));
    next_recheck(&env, "ok").await;
    assert!(!has_live_session(&mut bob, &env.gw).await, "404: deleted");
    assert!(has_live_session(&mut alice, &env.gw).await);
    assert_eq!(
        metric(&env, "pbxgate_sessions_revoked_total{reason=\"deleted\"}"),
        1
    );
}

/// POST /connect/token straight at the simulated 3CX with a `RefreshTokenCookie`.
async fn refresh_at_3cx(sandbox: &Sandbox, cookie: &str) -> u16 {
    client()
        .post(format!("{}/connect/token", sandbox.pbx_server.url()))
        .header("cookie", format!("RefreshTokenCookie={cookie}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("client_id=Webclient&grant_type=refresh_token")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn managed_password_revocation_makes_the_old_cookie_fail_at_3cx() {
    let env = env_with(managed).await;
    let mut bob = Browser::default();
    assert_eq!(
        bob.sign_in(&env.gw, "bob.baker@contoso.com").await.status(),
        303
    );
    let old_password = env.sandbox.pbx.extension("102").unwrap().access_password;
    let cookie = bob.cookies["RefreshTokenCookie"].clone();
    let pbx = env.sandbox.pbx.clone();
    // The browser's cookie is the extension's one live 3CX session (not used here: 3CX
    // rotates a refresh token on use).
    assert_eq!(pbx.live_webclient_sessions("102"), 1);

    env.sandbox
        .graph
        .update_user(BOB_OID, |u| u.account_enabled = false);
    next_recheck(&env, "ok").await;
    assert!(!has_live_session(&mut bob, &env.gw).await);
    assert_eq!(
        pbx.live_webclient_sessions("102"),
        0,
        "3CX ended the extension's sessions"
    );
    let new_password = pbx.extension("102").unwrap().access_password;
    assert!(
        new_password.is_some() && new_password != old_password,
        "rotated"
    );
    assert_eq!(
        refresh_at_3cx(&env.sandbox, &cookie).await,
        400,
        "3CX refuses the old cookie"
    );

    // Back in Entra: a new sign-in works with the rotated password pbxgate stored.
    env.sandbox
        .graph
        .update_user(BOB_OID, |u| u.account_enabled = true);
    let mut again = Browser::default();
    assert_eq!(
        again
            .sign_in(&env.gw, "bob.baker@contoso.com")
            .await
            .status(),
        303
    );
    assert_eq!(pbx.live_webclient_sessions("102"), 1);
    assert_eq!(pbx.extension("102").unwrap().access_password, new_password);
}

#[tokio::test]
async fn frontchannel_logout_in_managed_password_mode_ends_the_3cx_session() {
    let env = env_with(managed).await;
    let mut bob = Browser::default();
    bob.sign_in(&env.gw, "bob.baker@contoso.com").await;
    assert_eq!(env.sandbox.pbx.live_webclient_sessions("102"), 1);
    // Entra's iframe: no cookies of ours, no 3CX cookie.
    let res = client()
        .get(
            env.gw
                .url(&format!("/auth/frontchannel-logout?sid=sid-{BOB_OID}")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(!has_live_session(&mut bob, &env.gw).await);
    assert_eq!(env.sandbox.pbx.live_webclient_sessions("102"), 0);
    let cookie = bob.cookies["RefreshTokenCookie"].clone();
    assert_eq!(refresh_at_3cx(&env.sandbox, &cookie).await, 400);
    assert_eq!(
        metric(
            &env,
            "pbxgate_sessions_revoked_total{reason=\"frontchannel\"}"
        ),
        1
    );
}

#[tokio::test]
async fn the_user_syncs_on_removed_ends_the_3cx_session_in_managed_password_mode() {
    let env = env_with(|c| {
        managed(c);
        c.sync.users.enabled = true;
    })
    .await;
    let run = || async {
        let (_tx, stop) = tokio::sync::watch::channel(false);
        let w = &env.gw.app.workers;
        w.runner
            .run(w.users.as_ref(), pbxgate::sync::Mode::Full, false, &stop)
            .await
            .unwrap()
    };
    run().await;
    let mut bob = Browser::default();
    assert_eq!(
        bob.sign_in(&env.gw, "bob.baker@contoso.com").await.status(),
        303
    );
    let cookie = bob.cookies["RefreshTokenCookie"].clone();
    assert_eq!(env.sandbox.pbx.live_webclient_sessions("102"), 1);

    env.sandbox
        .graph
        .update_user(BOB_OID, |u| u.account_enabled = false);
    let report = run().await;
    assert_eq!(report.applied.get("disable"), Some(&1), "{report:?}");
    assert!(!has_live_session(&mut bob, &env.gw).await);
    assert_eq!(env.sandbox.pbx.live_webclient_sessions("102"), 0);
    assert_eq!(refresh_at_3cx(&env.sandbox, &cookie).await, 400);
    assert_eq!(
        metric(&env, "pbxgate_sessions_revoked_total{reason=\"removed\"}"),
        1
    );
}

// === sign-in refuses what the sync would refuse ===

/// The refusal page: status, title, and that no session was opened.
async fn refused(mut b: Browser, env: &Env, hint: &str, title: &str) -> String {
    let res = b.sign_in(&env.gw, hint).await;
    assert_eq!(res.status(), 403, "{hint}");
    let page = res.text().await.unwrap();
    assert!(page.contains(title), "{page}");
    assert!(!b.cookies.contains_key(COOKIE), "no session");
    page
}

fn gina_extension() -> SimExtension {
    SimExtension {
        number: "110".into(),
        first_name: "Gina".into(),
        last_name: "Guest".into(),
        email: "gina@fabrikam.com".into(),
        enabled: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_guest_whose_address_matches_an_extension_is_refused() {
    let env = env_with(|_| {}).await;
    env.sandbox.pbx.add_extension(gina_extension());
    let page = refused(
        Browser::default(),
        &env,
        "gina@fabrikam.com",
        "Guest accounts cannot use the web client",
    )
    .await;
    assert!(page.contains("gina@fabrikam.com"));
    let row = env.gw.app.store.directory_user(DEMO_TENANT, GINA_OID).await;
    assert!(
        row.unwrap().is_none(),
        "the extension was not linked to her"
    );

    // With include_guests the same guest gets it: the rule is the config's.
    let env = env_with(|c| c.sync.users.include_guests = true).await;
    env.sandbox.pbx.add_extension(gina_extension());
    let mut gina = Browser::default();
    assert_eq!(
        gina.sign_in(&env.gw, "gina@fabrikam.com").await.status(),
        303
    );
    assert_eq!(gina.webclient_extension(&env.gw).await, Ok("110".into()));
}

#[tokio::test]
async fn a_user_the_sync_marked_removed_is_refused() {
    let env = env_with(|_| {}).await;
    let mut alice = Browser::default();
    alice.sign_in(&env.gw, "alice.adams@contoso.com").await;
    let store = &env.gw.app.store;
    let mut row = store
        .directory_user(DEMO_TENANT, ALICE_OID)
        .await
        .unwrap()
        .unwrap();
    row.removed_at = Some(env.clock.now());
    store.upsert_directory_user(&row).await.unwrap();
    let page = refused(
        Browser::default(),
        &env,
        "alice.adams@contoso.com",
        "Your access has been removed",
    )
    .await;
    assert!(page.contains("alice.adams@contoso.com") || page.contains("Alice.Adams@Contoso.com"));
}

#[tokio::test]
async fn an_extension_linked_to_another_entra_user_is_not_inherited() {
    let env = env_with(|_| {}).await;
    // A leaver held extension 101 (3CX user id 2) under the same UPN; Alice is a new hire.
    let leaver = DirectoryRow {
        tenant_id: DEMO_TENANT.into(),
        object_id: "0d1e2f30-0000-4000-8000-00000000dead".into(),
        upn: "alice.adams@contoso.com".into(),
        display_name: "Alice Adams (left)".into(),
        extension: "101".into(),
        pbx_user_id: 2,
        source: "match".into(),
        managed_password: None,
        updated_at: env.clock.now(),
        created_by_pbxgate: false,
        removed_at: Some(env.clock.now()),
    };
    env.gw
        .app
        .store
        .upsert_directory_user(&leaver)
        .await
        .unwrap();
    let page = refused(
        Browser::default(),
        &env,
        "alice.adams@contoso.com",
        "This extension belongs to another account",
    )
    .await;
    assert!(page.contains("101"), "{page}");
    let row = env
        .gw
        .app
        .store
        .directory_user(DEMO_TENANT, ALICE_OID)
        .await;
    assert!(row.unwrap().is_none(), "not linked to the new hire");
}

#[tokio::test]
async fn a_disabled_extension_is_refused_matched_or_stored() {
    let env = env_with(|_| {}).await;
    // Stored: Bob signed in before, then his extension was disabled in 3CX.
    let mut bob = Browser::default();
    assert_eq!(
        bob.sign_in(&env.gw, "bob.baker@contoso.com").await.status(),
        303
    );
    env.sandbox.pbx.edit_extension("102", |e| e.enabled = false);
    let page = refused(
        Browser::default(),
        &env,
        "bob.baker@contoso.com",
        "Your extension is disabled",
    )
    .await;
    assert!(page.contains("102"));
    // Matched by e-mail, never signed in: Alice's extension disabled first.
    env.sandbox.pbx.edit_extension("101", |e| e.enabled = false);
    refused(
        Browser::default(),
        &env,
        "alice.adams@contoso.com",
        "Your extension is disabled",
    )
    .await;
}
