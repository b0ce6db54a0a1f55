//! The password side door (issue 14 §2) against the simulated 3CX: password sign-in only
//! from `password_login_from`, `/connect/token` by grant, a signed-in browser's refresh in
//! both session modes, and `randomize_web_passwords`. The client address is varied with
//! `X-Forwarded-For` from a trusted proxy (the test client on loopback).

use std::collections::HashMap;

use pbxgate::clock::{Clock, ManualClock, SystemClock};
use pbxgate::config::{Config, SessionMode};
use pbxgate::sync::{Mode, RunStatus};
use pbxgate_sandbox::{DEMO_TENANT, Sandbox};
use serde_json::{Value, json};

use crate::support::*;

/// Where break-glass sign-in is allowed in these tests.
const OFFICE: &str = "10.1.2.3";
/// Anywhere else.
const OUTSIDE: &str = "198.51.100.7";
const OLD_PASSWORD: &str = "old-web-password";

struct Env {
    sandbox: Sandbox,
    gw: TestGateway,
    _dir: tempfile::TempDir,
}

/// The sandbox, extension 101 with its old web password, a gateway that believes the
/// loopback proxy and allows password sign-in from 10.1.0.0/16.
async fn env_with(edit: impl FnOnce(&mut Config)) -> Env {
    init();
    let clock = ManualClock::new(SystemClock.now());
    let sandbox = sandbox(&registration(), &clock).await;
    sandbox
        .pbx
        .edit_extension("101", |e| e.access_password = Some(OLD_PASSWORD.into()));
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&sandbox.pbx_server.url(), dir.path(), |c| {
        c.entra.authority = sandbox.entra_server.url().parse().unwrap();
        c.entra.tenant_id = DEMO_TENANT.into();
        c.entra.graph_url = sandbox.graph_server.url().parse().unwrap();
        c.server.login_rate_limit = 10_000;
        c.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
        c.pbx.password_login_from = vec!["10.1.0.0/16".parse().unwrap()];
    });
    edit(&mut config);
    let gw = TestGateway::start_with_clock(config, clock).await;
    Env {
        sandbox,
        gw,
        _dir: dir,
    }
}

async fn env() -> Env {
    env_with(|_| {}).await
}

/// `GetAccessToken` with extension 101's password, as the 3CX apps sign in, from `from`.
async fn password_login(env: &Env, from: &str, password: &str) -> reqwest::Response {
    client()
        .post(env.gw.url("/webclient/api/Login/GetAccessToken"))
        .header("x-forwarded-for", from)
        .json(&json!({"Username": "101", "Password": password, "SecurityCode": "", "ReCaptchaResponse": null}))
        .send()
        .await
        .unwrap()
}

/// A form POST to `/connect/token` from `from`, with `cookie` (may be empty).
async fn token_request(env: &Env, from: &str, cookie: &str, form: &str) -> reqwest::Response {
    client()
        .post(env.gw.url("/connect/token"))
        .header("x-forwarded-for", from)
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_string())
        .send()
        .await
        .unwrap()
}

/// Who 3CX says a bearer token is, through the gateway (`/xapi/` passes through).
async fn my_user(env: &Env, token: &str) -> Result<String, u16> {
    let res = client()
        .get(env.gw.url("/xapi/v1/MyUser"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    if !res.status().is_success() {
        return Err(res.status().as_u16());
    }
    let me: Value = res.json().await.unwrap();
    Ok(me["Number"].as_str().unwrap().to_string())
}

/// The access token of a successful token answer.
async fn access_token(res: reqwest::Response) -> String {
    assert_eq!(res.status(), 200, "token expected");
    let body: Value = res.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_string()
}

/// The value of a `Set-Cookie` named `name` in `res`.
fn set_cookie(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers().get_all("set-cookie").iter().find_map(|v| {
        let pair = v.to_str().ok()?.split(';').next()?;
        let (k, v) = pair.split_once('=')?;
        (k.trim() == name && !v.is_empty()).then(|| v.to_string())
    })
}

/// Signs `hint` in through the simulated Entra ID; returns the browser's cookies.
async fn sign_in(env: &Env, hint: &str) -> HashMap<String, String> {
    let login = format!("/auth/login?return_to=%2Fwebclient%2F&login_hint={hint}");
    let res = client().get(env.gw.url(&login)).send().await.unwrap();
    assert_eq!(res.status(), 303);
    let mut jar = HashMap::new();
    let attempt = format!("{COOKIE}-login");
    jar.insert(attempt.clone(), set_cookie(&res, &attempt).unwrap());
    let authorize = res.headers()["location"].to_str().unwrap().to_string();
    let res = client().get(&authorize).send().await.unwrap();
    let back = res.headers()["location"].to_str().unwrap().to_string();
    let res = client()
        .get(env.gw.url(back.strip_prefix(PUBLIC).unwrap()))
        .header("cookie", header(&jar))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303, "{:?}", res.text().await);
    jar.clear();
    for name in [COOKIE, "RefreshTokenCookie"] {
        if let Some(v) = set_cookie(&res, name) {
            jar.insert(name.to_string(), v);
        }
    }
    jar
}

fn header(jar: &HashMap<String, String>) -> String {
    jar.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

async fn oauth_error(res: reqwest::Response) -> Value {
    assert_eq!(res.status(), 400);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["request_id"], id.as_str());
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("pbxgate"),
        "{body}"
    );
    body
}

#[tokio::test]
async fn password_sign_in_from_outside_is_refused() {
    let env = env().await;
    // The attack the issue confirmed: GetAccessToken, then the token on the XAPI.
    for from in [OUTSIDE, "127.0.0.1"] {
        let res = password_login(&env, from, OLD_PASSWORD).await;
        assert_eq!(res.status(), 403, "{from}");
        let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "password_sign_in_disabled");
        assert_eq!(body["request_id"], id.as_str());
        assert!(res_has_no_token(&body));
    }
    assert_eq!(
        env.sandbox.pbx.live_webclient_sessions("101"),
        0,
        "3CX never asked"
    );

    // Also in another spelling 3CX would route the same way, and with a pbxgate session
    // (a signed-in user must not open another extension by its password).
    let session = env.gw.session_for("alice").await;
    for path in [
        "/WebClient/api/login/GetAccessToken",
        "/webclient//api/Login/GetAccessToken",
    ] {
        let res = client()
            .post(env.gw.url(path))
            .header("cookie", cookie(&session))
            .json(&json!({"Username": "101", "Password": OLD_PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{path}");
    }
    assert_eq!(env.sandbox.pbx.live_webclient_sessions("101"), 0);

    // A browser navigating there without a session is sent to sign in, as everywhere.
    let res = client()
        .get(env.gw.url("/webclient/api/Login/GetAccessToken"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert!(
        res.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/auth/login?return_to=")
    );
}

fn res_has_no_token(body: &Value) -> bool {
    body.get("Token").is_none() && body.get("access_token").is_none()
}

#[tokio::test]
async fn password_sign_in_from_password_login_from_is_allowed() {
    let env = env().await;
    let res = password_login(&env, OFFICE, OLD_PASSWORD).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["Status"], "AuthSuccess");
    let token = body["Token"]["access_token"].as_str().unwrap();
    assert_eq!(my_user(&env, token).await, Ok("101".into()));
    // 3CX still checks the password itself.
    let res = password_login(&env, OFFICE, "wrong").await;
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn client_credentials_pass_without_a_session() {
    let env = env().await;
    let form = "client_id=pbxgate&client_secret=xapi-secret-value&grant_type=client_credentials";
    let token = access_token(token_request(&env, OUTSIDE, "", form).await).await;
    // The body reached 3CX unchanged (it checked the secret) and the token works.
    let res = client()
        .get(env.gw.url("/xapi/v1/Users?$top=1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // 3CX, not pbxgate, authenticates the API client.
    let wrong = form.replace("xapi-secret-value", "guess");
    assert_eq!(token_request(&env, OUTSIDE, "", &wrong).await.status(), 401);

    // Not a form, or a grant 3CX might read differently: refused here.
    let res = client()
        .post(env.gw.url("/connect/token"))
        .header("x-forwarded-for", OUTSIDE)
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_eq!(oauth_error(res).await["error"], "invalid_request");
    let twice = format!("{form}&grant_type=refresh_token");
    let res = token_request(&env, OUTSIDE, "", &twice).await;
    assert_eq!(oauth_error(res).await["error"], "invalid_request");
}

#[tokio::test]
async fn a_3cx_refresh_cookie_without_a_session_works_only_from_password_login_from() {
    let env = env().await;
    // Somebody's RefreshTokenCookie (here: from a break-glass sign-in).
    let res = password_login(&env, OFFICE, OLD_PASSWORD).await;
    let stolen = set_cookie(&res, "RefreshTokenCookie").expect("3CX sets its cookie");
    let jar = format!("RefreshTokenCookie={stolen}");
    let refresh = "client_id=Webclient&grant_type=refresh_token";

    let res = token_request(&env, OUTSIDE, &jar, refresh).await;
    assert_eq!(oauth_error(res).await["error"], "unauthorized_client");
    let in_body = format!("grant_type=refresh_token&refresh_token={stolen}");
    let res = token_request(&env, OUTSIDE, "", &in_body).await;
    assert_eq!(oauth_error(res).await["error"], "unauthorized_client");
    let password = "grant_type=password&username=101&password=old-web-password";
    let res = token_request(&env, OUTSIDE, "", password).await;
    assert_eq!(oauth_error(res).await["error"], "unsupported_grant_type");
    let res = token_request(&env, OUTSIDE, "", "grant_type=authorization_code&code=x").await;
    assert_eq!(oauth_error(res).await["error"], "unsupported_grant_type");

    // The refused requests never reached 3CX: the (rotating) cookie is still good, and
    // from the office it refreshes.
    let res = token_request(&env, OFFICE, &jar, refresh).await;
    let rotated = set_cookie(&res, "RefreshTokenCookie");
    assert_eq!(
        my_user(&env, &access_token(res).await).await,
        Ok("101".into())
    );
    assert!(rotated.is_some_and(|r| r != stolen), "3CX rotated it");
}

#[tokio::test]
async fn other_connect_paths_need_a_session_or_password_login_from() {
    let env = env().await;
    let res = client()
        .get(env.gw.url("/connect/authorize?client_id=x"))
        .header("accept", "text/html")
        .header("x-forwarded-for", OUTSIDE)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303, "a navigation goes to sign-in");
    let res = client()
        .get(env.gw.url("/connect/userinfo"))
        .header("x-forwarded-for", OUTSIDE)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // From the office, and with a session, 3CX answers (the simulator has no such route).
    let session = env.gw.session_for("alice").await;
    for (from, cookie) in [(OFFICE, String::new()), (OUTSIDE, cookie(&session))] {
        let res = client()
            .get(env.gw.url("/connect/userinfo"))
            .header("x-forwarded-for", from)
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{from}: reached 3CX");
    }
}

#[tokio::test]
async fn a_signed_in_browser_refreshes_in_impersonation_mode() {
    let env = env().await;
    let jar = sign_in(&env, "alice.adams@contoso.com").await;
    assert!(!jar.contains_key("RefreshTokenCookie"));
    let refresh = "client_id=Webclient&grant_type=refresh_token";
    for from in [OUTSIDE, OFFICE] {
        let res = token_request(&env, from, &header(&jar), refresh).await;
        assert_eq!(res.headers()["cache-control"], "no-store");
        let token = access_token(res).await;
        assert_eq!(my_user(&env, &token).await, Ok("101".into()), "{from}");
    }
    // Signed out: the same request is refused.
    let revoked = env.gw.app.sessions.revoke(&jar[COOKIE]).await.unwrap();
    assert!(revoked);
    let res = token_request(&env, OUTSIDE, &header(&jar), refresh).await;
    assert_eq!(oauth_error(res).await["error"], "unauthorized_client");
}

fn password_key() -> secrecy::SecretString {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .encode([42u8; 32])
        .into()
}

#[tokio::test]
async fn a_signed_in_browser_refreshes_with_its_3cx_cookie_in_managed_password_mode() {
    let env = env_with(|c| {
        c.pbx.session_mode = SessionMode::ManagedPassword;
        c.pbx.password_key = Some(password_key());
    })
    .await;
    let mut jar = sign_in(&env, "bob.baker@contoso.com").await;
    assert!(jar.contains_key("RefreshTokenCookie"));
    let refresh = "client_id=Webclient&grant_type=refresh_token";
    let res = token_request(&env, OUTSIDE, &header(&jar), refresh).await;
    let rotated = set_cookie(&res, "RefreshTokenCookie").expect("3CX answered");
    assert_eq!(
        my_user(&env, &access_token(res).await).await,
        Ok("102".into())
    );
    jar.insert("RefreshTokenCookie".into(), rotated);

    // The same 3CX cookie without the pbxgate session: refused, 3CX never asked.
    let alone = format!("RefreshTokenCookie={}", jar["RefreshTokenCookie"]);
    let res = token_request(&env, OUTSIDE, &alone, refresh).await;
    assert_eq!(oauth_error(res).await["error"], "unauthorized_client");
    let res = token_request(&env, OUTSIDE, &header(&jar), refresh).await;
    assert_eq!(
        my_user(&env, &access_token(res).await).await,
        Ok("102".into())
    );
}

#[tokio::test]
async fn random_web_passwords_are_set_once_at_sign_in() {
    let env = env_with(|c| c.pbx.randomize_web_passwords = true).await;
    let pbx = &env.sandbox.pbx;
    sign_in(&env, "alice.adams@contoso.com").await;
    let first = pbx.extension("101").unwrap().access_password.unwrap();
    assert_ne!(first, OLD_PASSWORD);
    // The old password no longer opens 3CX, not even from the office.
    assert_eq!(
        password_login(&env, OFFICE, OLD_PASSWORD).await.status(),
        401
    );
    let row = env
        .gw
        .app
        .store
        .directory_user(DEMO_TENANT, ALICE_OID)
        .await;
    assert!(
        row.unwrap().unwrap().managed_password.is_none(),
        "never stored"
    );

    // Once: a second sign-in (and an admin's later reset) is left alone.
    sign_in(&env, "alice.adams@contoso.com").await;
    assert_eq!(
        pbx.extension("101").unwrap().access_password.unwrap(),
        first
    );
    pbx.edit_extension("101", |e| e.access_password = Some("reset-by-admin".into()));
    let jar = sign_in(&env, "alice.adams@contoso.com").await;
    assert_eq!(
        pbx.extension("101").unwrap().access_password.as_deref(),
        Some("reset-by-admin")
    );
    // And the webclient still works through Entra ID.
    let res = token_request(
        &env,
        OUTSIDE,
        &header(&jar),
        "client_id=Webclient&grant_type=refresh_token",
    )
    .await;
    assert_eq!(
        my_user(&env, &access_token(res).await).await,
        Ok("101".into())
    );
}

const ALICE_OID: &str = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";

#[tokio::test]
async fn web_passwords_stay_unless_randomizing_is_asked_for() {
    let env = env().await;
    sign_in(&env, "alice.adams@contoso.com").await;
    assert_eq!(
        env.sandbox
            .pbx
            .extension("101")
            .unwrap()
            .access_password
            .as_deref(),
        Some(OLD_PASSWORD)
    );
}

#[tokio::test]
async fn the_user_sync_randomizes_what_it_creates_and_matches_once() {
    let env = crate::sync_users::sync_env(|c| {
        c.pbx.randomize_web_passwords = true;
    })
    .await;
    env.sandbox
        .pbx
        .edit_extension("101", |e| e.access_password = Some(OLD_PASSWORD.into()));
    let (_, erin, _) = crate::sync_users::tenant(&env.graph);
    let r = env.run(Mode::Delta, false).await;
    assert_eq!(r.status, RunStatus::Succeeded);
    let pbx = &env.sandbox.pbx;
    let alice = pbx.extension("101").unwrap().access_password.unwrap();
    assert_ne!(alice, OLD_PASSWORD, "matched: randomized");
    let erin_ext = env
        .gw
        .app
        .store
        .directory_user(DEMO_TENANT, &erin)
        .await
        .unwrap()
        .unwrap()
        .extension;
    let erins = pbx.extension(&erin_ext).unwrap().access_password;
    assert!(erins.is_some(), "created: randomized");
    assert!(
        pbx.extension("100").unwrap().access_password.is_none(),
        "not pbxgate's: untouched"
    );
    let login = |pw: &str| json!({"Username": "101", "Password": pw, "SecurityCode": "", "ReCaptchaResponse": null});
    let res = client()
        .post(format!(
            "{}/webclient/api/Login/GetAccessToken",
            env.sandbox.pbx_server.url()
        ))
        .json(&login(OLD_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "the old password fails at 3CX itself");

    // A full run changes Alice's name in Entra: an update, but no new password.
    env.graph
        .update_user(ALICE_OID, |u| u.given_name = "Alicia".into());
    let r = env.run(Mode::Full, false).await;
    assert_eq!(r.status, RunStatus::Succeeded);
    assert_eq!(pbx.extension("101").unwrap().first_name, "Alicia");
    assert_eq!(
        pbx.extension("101").unwrap().access_password.unwrap(),
        alice
    );
    assert_eq!(pbx.extension(&erin_ext).unwrap().access_password, erins);
}
