//! ID-token audience rules, JWKS key rotation, and faults of Entra ID and 3CX in the middle of
//! a sign-in (issue 15): each against the sandbox, with the fault injected at the simulator.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::StatusCode;
use pbxgate::config::SessionMode;
use pbxgate::pbx::PbxError;
use pbxgate_sandbox::entra::{ClaimEdit, Endpoint, Forge};
use pbxgate_sandbox::pbx::PbxSim;
use pbxgate_sandbox::{DEMO_SERVICE_EXTENSION, Running};
use serde_json::{Value, json};

use crate::support::*;

const ALICE: &str = "alice.adams@contoso.com";
const CLIENT_ID: &str = "app-client-id";

fn set(claim: &'static str, value: Value) -> Option<ClaimEdit> {
    Some(Arc::new(move |c: &mut Value| c[claim] = value.clone()))
}

/// What a failed sign-in must look like: `status`, a short page with `title` and the
/// request's correlation id, and nothing signed in (no session cookie, no 3CX cookie, and
/// still `live` sessions in the store).
async fn failed_cleanly(
    gw: &TestGateway,
    b: &Browser,
    res: reqwest::Response,
    (status, title): (u16, &str),
    live: usize,
) {
    assert_eq!(res.status(), status, "{title}");
    let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    let page = res.text().await.unwrap();
    assert!(page.contains(title), "{title}: {page}");
    assert!(
        page.contains(&id),
        "correlation id {id} on the page: {page}"
    );
    assert!(!b.has_session(), "no session cookie");
    assert!(
        !b.cookies.contains_key("RefreshTokenCookie"),
        "no 3CX cookie"
    );
    let sessions = gw.app.sessions.live_sessions().await.unwrap();
    assert_eq!(
        sessions.len(),
        live,
        "no new session in the store: {sessions:?}"
    );
}

/// The page for Entra ID unreachable during a sign-in, and for 3CX.
const ENTRA_DOWN: (u16, &str) = (503, "Microsoft sign-in is unavailable");
const PBX_DOWN: (u16, &str) = (502, "The phone system is not reachable");

/// A fresh browser's sign-in as Alice fails with `expected`'s page and makes nothing.
async fn sign_in_fails_cleanly(gw: &TestGateway, expected: (u16, &str)) {
    let mut b = Browser::default();
    let live = live_sessions(gw).await;
    let res = b.sign_in(gw, ALICE).await;
    failed_cleanly(gw, &b, res, expected, live).await;
}

/// `b`'s return to the callback `back` fails with `expected`'s page and makes nothing.
async fn callback_fails_cleanly(
    gw: &TestGateway,
    b: &mut Browser,
    back: &str,
    expected: (u16, &str),
) {
    let live = live_sessions(gw).await;
    let res = b.get(gw, back).await;
    failed_cleanly(gw, b, res, expected, live).await;
}

async fn live_sessions(gw: &TestGateway) -> usize {
    gw.app.sessions.live_sessions().await.unwrap().len()
}

fn jwks_calls(env: &SandboxEnv) -> usize {
    env.sandbox.entra.jwks_calls.load(Ordering::SeqCst)
}

async fn sign_in_status(env: &SandboxEnv) -> u16 {
    Browser::default()
        .sign_in(&env.gw, ALICE)
        .await
        .status()
        .as_u16()
}

// === 1. the audience ===

#[tokio::test]
async fn an_id_token_for_more_audiences_or_another_party_is_refused() {
    let env = sandbox_env(|_| {}).await;
    let cases = [
        ("aud", json!([CLIENT_ID, "another-app"]), "another audience"),
        (
            "aud",
            json!(["another-app", CLIENT_ID]),
            "another audience first",
        ),
        ("azp", json!("another-app"), "another authorized party"),
    ];
    for (claim, value, what) in cases {
        env.sandbox.entra.tamper(Forge::Proper, set(claim, value));
        let mut b = Browser::default();
        let res = b.sign_in(&env.gw, ALICE).await;
        assert_eq!(res.status(), 403, "{what}");
        assert!(!b.has_session(), "{what}");
        let page = res.text().await.unwrap();
        assert!(page.contains("could not be verified"), "{what}: {page}");
    }
    // What OpenID Connect allows: the client alone, as a one-element array, and an `azp`
    // naming the client.
    for (claim, value) in [("aud", json!([CLIENT_ID])), ("azp", json!(CLIENT_ID))] {
        env.sandbox.entra.tamper(Forge::Proper, set(claim, value));
        assert_eq!(sign_in_status(&env).await, 303, "{claim}");
    }
}

// === 2. key rotation ===

#[tokio::test]
async fn a_key_published_after_the_last_fetch_signs_in_at_once() {
    let env = sandbox_env(|_| {}).await;
    assert_eq!(sign_in_status(&env).await, 303);
    assert_eq!(jwks_calls(&env), 1);
    // Half a minute later Entra starts signing with a new key: the first token signed with
    // it makes pbxgate fetch the key set again, and is accepted.
    env.gw.clock.advance(31);
    env.sandbox.entra.rotate_key(1);
    assert_eq!(sign_in_status(&env).await, 303, "new key accepted at once");
    assert_eq!(jwks_calls(&env), 2);
    // Another new kid within 30 s of that fetch is refused without a fetch...
    env.gw.clock.advance(10);
    env.sandbox.entra.rotate_key(3);
    assert_eq!(sign_in_status(&env).await, 403, "no refetch within 30 s");
    assert_eq!(jwks_calls(&env), 2);
    // ...and accepted once 30 s have passed.
    env.gw.clock.advance(20);
    assert_eq!(sign_in_status(&env).await, 303);
    assert_eq!(jwks_calls(&env), 3);
}

#[tokio::test]
async fn concurrent_sign_ins_with_a_new_key_share_one_jwks_fetch() {
    let env = sandbox_env(|_| {}).await;
    assert_eq!(sign_in_status(&env).await, 303);
    env.gw.clock.advance(31);
    env.sandbox.entra.rotate_key(1);
    // A slow JWKS, so that every callback arrives while the first fetch is under way.
    env.sandbox.entra.delay_jwks(Duration::from_millis(300));
    let before = jwks_calls(&env);
    let statuses = concurrent_sign_ins(&env, 8).await;
    assert_eq!(statuses, vec![303; 8]);
    assert_eq!(jwks_calls(&env) - before, 1, "one fetch for all eight");

    // Tokens under a kid Entra never published: one fetch, then refused without more.
    env.gw.clock.advance(31);
    env.sandbox.entra.tamper(Forge::UnknownKid, None);
    let before = jwks_calls(&env);
    let statuses = concurrent_sign_ins(&env, 8).await;
    assert_eq!(statuses, vec![403; 8]);
    assert_eq!(
        jwks_calls(&env) - before,
        1,
        "one fetch for eight unknown kids"
    );
}

/// Walks `n` browsers to the callback, then sends all callbacks at once; their statuses.
async fn concurrent_sign_ins(env: &SandboxEnv, n: usize) -> Vec<u16> {
    let mut walks = Vec::new();
    for _ in 0..n {
        let mut b = Browser::default();
        let back = b.walk_to_callback(&env.gw, ALICE, "/").await;
        walks.push((b, back));
    }
    let gw = &env.gw;
    let calls = walks
        .iter_mut()
        .map(|(b, back)| async move { b.get(gw, back).await.status().as_u16() });
    futures_util::future::join_all(calls).await
}

#[tokio::test]
async fn when_the_jwks_is_down_the_last_good_keys_are_kept() {
    let env = sandbox_env(|_| {}).await;
    assert_eq!(sign_in_status(&env).await, 303);
    env.sandbox
        .entra
        .fail(Endpoint::Jwks, Some(StatusCode::SERVICE_UNAVAILABLE));
    // A day later the key set is due for a refresh, which fails: the old keys still verify.
    env.gw.clock.advance(24 * 3600 + 1);
    let before = jwks_calls(&env);
    assert_eq!(sign_in_status(&env).await, 303, "the last good set is kept");
    assert_eq!(jwks_calls(&env), before + 1, "a refresh was tried");
    // A key set with no key in it does not replace the last good one either.
    env.sandbox.entra.fail(Endpoint::Jwks, Some(StatusCode::OK));
    env.gw.clock.advance(24 * 3600 + 1);
    assert_eq!(sign_in_status(&env).await, 303, "kept after an empty set");
    env.sandbox
        .entra
        .fail(Endpoint::Jwks, Some(StatusCode::SERVICE_UNAVAILABLE));
    // A token under a new key while the JWKS is down: Entra's outage, said as such.
    env.gw.clock.advance(31);
    env.sandbox.entra.rotate_key(1);
    sign_in_fails_cleanly(&env.gw, ENTRA_DOWN).await;
    // Back up: the next sign-in works.
    env.sandbox.entra.fail(Endpoint::Jwks, None);
    env.gw.clock.advance(31);
    assert_eq!(sign_in_status(&env).await, 303);
}

// === 3a. Entra down during a sign-in ===

#[tokio::test]
async fn the_jwks_down_at_the_first_sign_in_is_a_page_not_a_refusal() {
    let env = sandbox_env(|_| {}).await;
    env.sandbox
        .entra
        .fail(Endpoint::Jwks, Some(StatusCode::INTERNAL_SERVER_ERROR));
    sign_in_fails_cleanly(&env.gw, ENTRA_DOWN).await;
    env.sandbox.entra.fail(Endpoint::Jwks, None);
    env.gw.clock.advance(31);
    assert_eq!(sign_in_status(&env).await, 303);
}

#[tokio::test]
async fn the_token_endpoint_down_during_a_sign_in_is_a_page() {
    let env = sandbox_env(|_| {}).await;
    // 5xx from the token endpoint.
    let mut b = Browser::default();
    let back = b.walk_to_callback(&env.gw, ALICE, "/").await;
    env.sandbox
        .entra
        .fail(Endpoint::Token, Some(StatusCode::SERVICE_UNAVAILABLE));
    callback_fails_cleanly(&env.gw, &mut b, &back, ENTRA_DOWN).await;
    env.sandbox.entra.fail(Endpoint::Token, None);
    assert_eq!(sign_in_status(&env).await, 303, "works again");

    // Entra gone (connection refused) between the authorize step and the callback.
    let mut b = Browser::default();
    let back = b.walk_to_callback(&env.gw, ALICE, "/").await;
    drop(env.sandbox.entra_server);
    callback_fails_cleanly(&env.gw, &mut b, &back, ENTRA_DOWN).await;
}

// === 3b. 3CX down during a sign-in ===

#[tokio::test]
async fn three_cx_failing_at_the_session_step_leaves_nothing_half_made() {
    let env = sandbox_env(|_| {}).await;
    // Failing when pbxgate signs in as the service extension...
    env.sandbox.pbx.fail_sessions(Some(503));
    sign_in_fails_cleanly(&env.gw, PBX_DOWN).await;
    let service = env.gw.app.store.service_session(DEMO_SERVICE_EXTENSION);
    assert!(
        service.await.unwrap().is_none(),
        "no service session stored"
    );
    // ...and when it impersonates with the service session it has.
    env.sandbox.pbx.fail_sessions(None);
    let mut bob = Browser::default();
    assert_eq!(
        bob.sign_in(&env.gw, "bob.baker@contoso.com").await.status(),
        303
    );
    env.sandbox.pbx.fail_sessions(Some(500));
    sign_in_fails_cleanly(&env.gw, PBX_DOWN).await;
    // 3CX back: the next attempt works.
    env.sandbox.pbx.fail_sessions(None);
    let mut b = Browser::default();
    assert_eq!(b.sign_in(&env.gw, ALICE).await.status(), 303);
    assert_eq!(b.webclient_extension(&env.gw).await, Ok("101".into()));
}

#[tokio::test]
async fn three_cx_failing_in_managed_password_mode_leaves_nothing_half_made() {
    let env = sandbox_env(|c| {
        c.pbx.session_mode = SessionMode::ManagedPassword;
        c.pbx.password_key = Some(password_key());
    })
    .await;
    env.sandbox.pbx.fail_sessions(Some(503));
    sign_in_fails_cleanly(&env.gw, PBX_DOWN).await;
    assert_eq!(env.sandbox.pbx.live_webclient_sessions("101"), 0);
    env.sandbox.pbx.fail_sessions(None);
    let mut b = Browser::default();
    assert_eq!(b.sign_in(&env.gw, ALICE).await.status(), 303);
    assert!(b.cookies.contains_key("RefreshTokenCookie"));
    assert_eq!(b.webclient_extension(&env.gw).await, Ok("101".into()));
}

#[tokio::test]
async fn three_cx_unreachable_during_a_sign_in_then_back() {
    let mut env = sandbox_env(|_| {}).await;
    let addr = env.sandbox.pbx_server.addr;
    let mut b = Browser::default();
    let back = b.walk_to_callback(&env.gw, ALICE, "/").await;
    drop(env.sandbox.pbx_server);
    callback_fails_cleanly(&env.gw, &mut b, &back, PBX_DOWN).await;
    env.sandbox.pbx_server = restart_pbx(env.sandbox.pbx.clone(), addr).await;
    let mut b = Browser::default();
    assert_eq!(b.sign_in(&env.gw, ALICE).await.status(), 303);
    assert_eq!(b.webclient_extension(&env.gw).await, Ok("101".into()));
}

/// Serves the simulated 3CX again on its old address (3CX back up).
async fn restart_pbx(sim: Arc<PbxSim>, addr: std::net::SocketAddr) -> Running {
    for _ in 0..100 {
        if let Ok(l) = tokio::net::TcpListener::bind(addr).await {
            let router = pbxgate_sandbox::pbx::router(sim.clone());
            return pbxgate_sandbox::spawn(l, router, None).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("cannot listen on {addr} again");
}

fn password_key() -> secrecy::SecretString {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .encode([42u8; 32])
        .into()
}

#[tokio::test]
async fn a_failing_3cx_is_an_outage_not_a_refusal_of_the_credentials() {
    let env = sandbox_env(|_| {}).await;
    let pbx = &env.gw.app.pbx;
    // The service extension's sign-in answered 503: not a wrong service password.
    env.sandbox.pbx.fail_sessions(Some(503));
    let e = pbx.impersonate("101").await.unwrap_err();
    assert!(matches!(e, PbxError::Api { status: 503, .. }), "{e}");
    assert!(!e.to_string().contains("service_password"), "{e}");
    // The impersonation itself answered 500: not a refusal of the extension.
    env.sandbox.pbx.fail_sessions(None);
    pbx.impersonate("102").await.unwrap();
    env.sandbox.pbx.fail_sessions(Some(500));
    let e = pbx.impersonate("101").await.unwrap_err();
    assert!(matches!(e, PbxError::Api { status: 500, .. }), "{e}");
    assert!(e.is_outage());
}
