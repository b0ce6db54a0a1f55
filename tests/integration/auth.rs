//! Sign-in end to end against the sandbox's Entra ID and 3CX: both session modes, logout,
//! front-channel logout, and one negative test per rejection rule.

use std::collections::HashMap;
use std::sync::Arc;

use pbxgate::clock::{Clock, ManualClock};
use pbxgate::config::{Config, ImpersonationCredential, SessionMode};
use pbxgate_sandbox::entra::{ClaimEdit, Forge, signing_key};
use pbxgate_sandbox::{DEMO_SERVICE_EXTENSION, DEMO_TENANT, Registration, Sandbox};
use serde_json::{Value, json};

use crate::support::*;

const ALICE_OID: &str = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";

/// The sandbox, a gateway in front of it, and a shared clock.
pub struct Env {
    pub sandbox: Sandbox,
    pub gw: TestGateway,
    _dir: tempfile::TempDir,
}

pub async fn env_with(edit: impl FnOnce(&mut Config), registration: Option<Registration>) -> Env {
    init();
    let clock = ManualClock::new(pbxgate::clock::SystemClock.now());
    let registration = registration.unwrap_or_else(crate::support::registration);
    let sandbox = sandbox(&registration, &clock).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&sandbox.pbx_server.url(), dir.path(), |c| {
        c.entra.authority = sandbox.entra_server.url().parse().unwrap();
        c.entra.tenant_id = DEMO_TENANT.into();
        c.entra.graph_url = sandbox.graph_server.url().parse().unwrap();
        // Tests sign in many times a minute from one address.
        c.server.login_rate_limit = 10_000;
    });
    edit(&mut config);
    let gw = TestGateway::start_with_clock(config, clock).await;
    Env {
        sandbox,
        gw,
        _dir: dir,
    }
}

pub async fn env() -> Env {
    env_with(|_| {}, None).await
}

#[tokio::test]
async fn impersonation_sign_in_gives_the_webclient_the_users_extension() {
    let env = env().await;
    let mut alice = Browser::default();
    // Entra has "Alice.Adams@Contoso.com", 3CX "alice.adams@contoso.com".
    let res = alice.sign_in(&env.gw, "alice.adams@contoso.com").await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/webclient/");
    assert!(alice.has_session());
    assert!(
        !alice.cookies.contains_key(&format!("{COOKIE}-login")),
        "attempt cookie cleared"
    );
    assert_eq!(alice.webclient_extension(&env.gw).await, Ok("101".into()));
    let row = env
        .gw
        .app
        .store
        .directory_user(DEMO_TENANT, ALICE_OID)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.extension.as_str(), row.source.as_str()),
        ("101", "match")
    );

    let mut bob = Browser::default();
    bob.sign_in(&env.gw, "bob.baker@contoso.com").await;
    assert_eq!(bob.webclient_extension(&env.gw).await, Ok("102".into()));
    // Through the service extension, signed in once; its cookie never left pbxgate.
    let by: Vec<_> = env.sandbox.pbx.impersonations();
    assert!(!by.is_empty() && by.iter().all(|(who, _)| who == DEMO_SERVICE_EXTENSION));
    assert_eq!(env.sandbox.pbx.sign_ins(DEMO_SERVICE_EXTENSION), 1);
    assert!(!alice.cookies.contains_key("RefreshTokenCookie"));
    // The webclient's token refresh keeps working when 3CX has dropped the service
    // extension's session: pbxgate signs in again.
    env.sandbox
        .pbx
        .revoke_refresh_tokens(DEMO_SERVICE_EXTENSION);
    env.gw.app.pbx.forget_impersonation("102");
    assert_eq!(bob.webclient_extension(&env.gw).await, Ok("102".into()));
    assert_eq!(env.sandbox.pbx.sign_ins(DEMO_SERVICE_EXTENSION), 2);

    // Logout: our session ends, the webclient gets no token any more, Entra is told.
    let res = crate::signout::sign_out(&mut alice, &env.gw).await;
    assert_eq!(res.status(), 303);
    let end = url::Url::parse(&location(&res)).unwrap();
    assert!(end.path().ends_with("/oauth2/v2.0/logout"));
    let q: HashMap<_, _> = end.query_pairs().into_owned().collect();
    assert_eq!(
        q["post_logout_redirect_uri"],
        format!("{PUBLIC}/auth/signed-out")
    );
    assert_eq!(q["logout_hint"], format!("hint-{ALICE_OID}"));
    assert!(!alice.has_session());
    let res = client().get(end.as_str()).send().await.unwrap();
    assert_eq!(location(&res), format!("{PUBLIC}/auth/signed-out"));
    let page = alice.get(&env.gw, "/auth/signed-out").await;
    assert!(page.text().await.unwrap().contains("You are signed out"));
    assert!(alice.webclient_extension(&env.gw).await.is_err());
    let res = alice.get(&env.gw, "/webclient/").await;
    assert!(location(&res).starts_with("/auth/login"));
    assert_eq!(
        bob.webclient_extension(&env.gw).await,
        Ok("102".into()),
        "Bob unaffected"
    );
}

#[tokio::test]
async fn api_client_impersonation_signs_in_only_where_3cx_allows_it() {
    let env = env_with(
        |c| c.pbx.impersonation_credential = ImpersonationCredential::ApiClient,
        None,
    )
    .await;
    let mut alice = Browser::default();
    // The simulated 3CX, like the public evidence, does not take the API client's token.
    let res = alice.sign_in(&env.gw, "alice.adams@contoso.com").await;
    assert_eq!(res.status(), 502);
    assert!(!alice.has_session());
    env.sandbox.pbx.allow_api_client_impersonation(true);
    let res = alice.sign_in(&env.gw, "alice.adams@contoso.com").await;
    assert_eq!(res.status(), 303);
    assert_eq!(alice.webclient_extension(&env.gw).await, Ok("101".into()));
    assert_eq!(
        env.sandbox.pbx.impersonations(),
        [("api-client".to_string(), "101".to_string())]
    );
    assert_eq!(env.sandbox.pbx.sign_ins(DEMO_SERVICE_EXTENSION), 0);
}

fn password_key() -> secrecy::SecretString {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .encode([42u8; 32])
        .into()
}

#[tokio::test]
async fn managed_password_sign_in_hands_on_3cx_refresh_cookie_and_logout_ends_it() {
    let env = env_with(
        |c| {
            c.pbx.session_mode = SessionMode::ManagedPassword;
            c.pbx.password_key = Some(password_key());
        },
        None,
    )
    .await;
    let mut bob = Browser::default();
    let res = bob.sign_in(&env.gw, "bob.baker@contoso.com").await;
    assert_eq!(res.status(), 303);
    assert!(
        bob.cookies.contains_key("RefreshTokenCookie"),
        "{:?}",
        bob.cookies
    );
    let password = env.sandbox.pbx.extension("102").unwrap().access_password;
    assert!(password.is_some(), "pbxgate set a managed web password");
    // The browser's own /connect/token call now goes to 3CX with 3CX's cookie.
    assert_eq!(bob.webclient_extension(&env.gw).await, Ok("102".into()));
    assert_eq!(env.sandbox.pbx.live_webclient_sessions("102"), 1);
    let row = env
        .gw
        .app
        .store
        .directory_user(DEMO_TENANT, "6ba7b810-9dad-41d1-80b4-00c04fd430c8")
        .await
        .unwrap()
        .unwrap();
    let sealed = row.managed_password.clone().unwrap();
    assert!(
        !sealed.contains(password.as_deref().unwrap()),
        "stored encrypted"
    );

    // A second sign-in reuses the stored password (3CX's is unchanged).
    let mut again = Browser::default();
    again.sign_in(&env.gw, "bob.baker@contoso.com").await;
    assert_eq!(
        env.sandbox.pbx.extension("102").unwrap().access_password,
        password
    );
    assert_eq!(env.sandbox.pbx.live_webclient_sessions("102"), 2);

    let res = crate::signout::sign_out(&mut bob, &env.gw).await;
    assert_eq!(res.status(), 303);
    assert!(!bob.cookies.contains_key("RefreshTokenCookie"));
    assert_eq!(
        env.sandbox.pbx.live_webclient_sessions("102"),
        1,
        "3CX session ended"
    );
    assert_eq!(again.webclient_extension(&env.gw).await, Ok("102".into()));
}

#[tokio::test]
async fn frontchannel_logout_ends_the_sessions_of_that_entra_session() {
    let env = env().await;
    let (mut a1, mut a2, mut bob) = (Browser::default(), Browser::default(), Browser::default());
    a1.sign_in(&env.gw, "alice.adams@contoso.com").await;
    a2.sign_in(&env.gw, "alice.adams@contoso.com").await;
    bob.sign_in(&env.gw, "bob.baker@contoso.com").await;
    let res = client()
        .get(
            env.gw
                .url(&format!("/auth/frontchannel-logout?sid=sid-{ALICE_OID}")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    for b in [&mut a1, &mut a2] {
        let res = b.get(&env.gw, "/webclient/").await;
        assert!(location(&res).starts_with("/auth/login"));
    }
    let res = bob.get(&env.gw, "/").await;
    assert_eq!(res.status(), 200, "Bob's session is untouched");
}

#[tokio::test]
async fn a_user_without_extension_gets_a_page_naming_the_upn() {
    let env = env().await;
    let mut carol = Browser::default();
    let res = carol.sign_in(&env.gw, "carol.clark@contoso.com").await;
    assert_eq!(res.status(), 403);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    let page = res.text().await.unwrap();
    assert!(page.contains("No extension is assigned to you"), "{page}");
    assert!(page.contains("carol.clark@contoso.com") && page.contains(&id));
    assert!(!carol.has_session());
}

#[tokio::test]
async fn directory_overrides_and_suffix_aliases() {
    let env = env_with(
        |c| {
            c.directory.overrides = vec![pbxgate::config::DirectoryOverride {
                upn: "CAROL.clark@contoso.com".into(),
                extension: "103".into(),
            }];
        },
        None,
    )
    .await;
    let mut carol = Browser::default();
    carol.sign_in(&env.gw, "carol.clark@contoso.com").await;
    assert_eq!(carol.webclient_extension(&env.gw).await, Ok("103".into()));
}

/// Signs in with a tampered ID token and expects a refusal without a session.
async fn refused(env: &Env, forge: Forge, edit: Option<ClaimEdit>, what: &str) {
    env.sandbox.entra.tamper(forge, edit);
    let mut b = Browser::default();
    let res = b.sign_in(&env.gw, "alice.adams@contoso.com").await;
    assert_eq!(res.status(), 403, "{what}");
    assert!(!b.has_session(), "{what}: no session");
    let page = res.text().await.unwrap();
    assert!(
        page.contains("could not be verified"),
        "{what}: refused as a bad token: {page}"
    );
    env.sandbox.entra.tamper(Forge::Proper, None);
}

fn set(claim: &'static str, value: Value) -> Option<ClaimEdit> {
    Some(Arc::new(move |c: &mut Value| c[claim] = value.clone()))
}

fn remove(claim: &'static str) -> Option<ClaimEdit> {
    Some(Arc::new(move |c: &mut Value| {
        c.as_object_mut().unwrap().remove(claim);
    }))
}

#[tokio::test]
async fn every_id_token_rule_rejects_on_its_own() {
    let env = env().await;
    let now = env.gw.clock.now();
    let entra = env.sandbox.entra_server.url();
    refused(&env, Forge::Unsigned, None, "alg none").await;
    refused(
        &env,
        Forge::Hs256WithPublicKey,
        None,
        "HS256 keyed with the public key",
    )
    .await;
    refused(&env, Forge::WrongKey, None, "bad signature").await;
    refused(&env, Forge::UnknownKid, None, "unknown kid").await;
    let template = format!("{entra}/{{tenantid}}/v2.0");
    refused(
        &env,
        Forge::Proper,
        set("iss", json!(template)),
        "template issuer",
    )
    .await;
    let other = format!("{entra}/11111111-0000-0000-0000-000000000000/v2.0");
    refused(
        &env,
        Forge::Proper,
        set("iss", json!(other)),
        "other issuer",
    )
    .await;
    refused(
        &env,
        Forge::Proper,
        set("aud", json!("someone-else")),
        "wrong audience",
    )
    .await;
    refused(&env, Forge::Proper, set("exp", json!(now - 301)), "expired").await;
    refused(
        &env,
        Forge::Proper,
        set("nbf", json!(now + 3600)),
        "not yet valid",
    )
    .await;
    refused(
        &env,
        Forge::Proper,
        set("iat", json!(now + 3600)),
        "issued in the future",
    )
    .await;
    refused(&env, Forge::Proper, remove("nonce"), "missing nonce").await;
    refused(
        &env,
        Forge::Proper,
        set("nonce", json!("not-the-nonce")),
        "wrong nonce",
    )
    .await;
    refused(
        &env,
        Forge::Proper,
        set("tid", json!("11111111-0000-0000-0000-000000000000")),
        "wrong tid",
    )
    .await;
    refused(&env, Forge::Proper, remove("oid"), "missing oid").await;

    // Within the skew a token is still fine, and the untampered flow works afterwards.
    env.sandbox
        .entra
        .tamper(Forge::Proper, set("exp", json!(now - 200)));
    let mut ok = Browser::default();
    assert_eq!(
        ok.sign_in(&env.gw, "alice.adams@contoso.com")
            .await
            .status(),
        303
    );
}

#[tokio::test]
async fn state_must_match_this_browser_and_works_once() {
    let env = env().await;
    let mut b = Browser::default();
    let back = b
        .walk_to_callback(&env.gw, "alice.adams@contoso.com", "/")
        .await;

    // Another browser (no attempt cookie) cannot use the callback: login CSRF.
    let mut other = Browser::default();
    let res = other.get(&env.gw, &back).await;
    assert_eq!(res.status(), 400);
    // That try consumed the attempt: the rightful browser must start again, too.
    let res = b.get(&env.gw, &back).await;
    assert_eq!(res.status(), 400);
    assert!(!b.has_session());

    // A state that was never issued, and a reused one.
    let back = b
        .walk_to_callback(&env.gw, "alice.adams@contoso.com", "/")
        .await;
    let forged = back.replace("state=", "state=x");
    assert_eq!(b.get(&env.gw, &forged).await.status(), 400);
    let back = b
        .walk_to_callback(&env.gw, "alice.adams@contoso.com", "/")
        .await;
    assert_eq!(b.get(&env.gw, &back).await.status(), 303);
    let mut replay = b.clone();
    replay
        .cookies
        .insert(format!("{COOKIE}-login"), state_of(&back));
    assert_eq!(
        replay.get(&env.gw, &back).await.status(),
        400,
        "state reuse"
    );

    // An attempt older than ten minutes.
    let back = b
        .walk_to_callback(&env.gw, "alice.adams@contoso.com", "/")
        .await;
    env.gw.clock.advance(601);
    assert_eq!(b.get(&env.gw, &back).await.status(), 400);
}

fn state_of(callback: &str) -> String {
    let u = url::Url::parse(callback).unwrap();
    u.query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned()
}

#[tokio::test]
async fn a_code_cannot_be_redeemed_twice_and_token_errors_show_a_page() {
    let env = env().await;
    let mut b = Browser::default();
    let first = b
        .walk_to_callback(&env.gw, "alice.adams@contoso.com", "/")
        .await;
    assert_eq!(b.get(&env.gw, &first).await.status(), 303);
    // A fresh attempt, but Entra's answer carries the old (redeemed) code.
    let second = b
        .walk_to_callback(&env.gw, "alice.adams@contoso.com", "/")
        .await;
    let code = |u: &str| {
        url::Url::parse(u)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "code")
            .unwrap()
            .1
            .into_owned()
    };
    let replayed = second.replace(&code(&second), &code(&first));
    let res = b.get(&env.gw, &replayed).await;
    assert_eq!(res.status(), 502);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("did not confirm the sign-in")
    );

    // Entra's own error redirect (user cancelled) is a page, not a crash.
    let res = b
        .get(
            &env.gw,
            "/auth/callback?error=access_denied&error_description=AADSTS65004",
        )
        .await;
    assert_eq!(res.status(), 403);

    // Back from the admin-consent URL (`setup --print`, `/admin`): a page saying so, not an
    // "incomplete sign-in" error, and no session.
    let res = b
        .get(&env.gw, "/auth/callback?admin_consent=True&tenant=x")
        .await;
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("Permissions granted"));
    let res = b.get(&env.gw, "/auth/callback?admin_consent=False").await;
    assert_ne!(res.status(), 200);
}

#[tokio::test]
async fn a_wrong_client_secret_is_a_token_endpoint_error() {
    let env = env_with(
        |c| c.entra.client_secret = Some("wrong".to_string().into()),
        None,
    )
    .await;
    let mut b = Browser::default();
    assert_eq!(
        b.sign_in(&env.gw, "alice.adams@contoso.com").await.status(),
        502
    );
    assert!(!b.has_session());
}

#[tokio::test]
async fn return_to_must_stay_on_this_site() {
    let env = env().await;
    for bad in [
        "//evil.example/",
        "/\\evil.example",
        "https://evil.example/",
        "/x%0d%0aSet-Cookie:%20a=b",
    ] {
        let res = client()
            .get(
                env.gw
                    .url(&format!("/auth/login?return_to={}", urlencode_once(bad))),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{bad}");
        assert!(res.headers().get("location").is_none());
    }
}

fn urlencode_once(s: &str) -> String {
    if s.contains('%') {
        s.to_string()
    } else {
        urlencode(s)
    }
}

#[tokio::test]
async fn certificate_credentials_sign_in() {
    let key = signing_key(7);
    let kp =
        rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&key.private_pem, &rcgen::PKCS_RSA_SHA256)
            .unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "pbxgate");
    let cert = params.self_signed(&kp).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("entra.pem"), dir.path().join("entra.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, &key.private_pem).unwrap();
    let registration = Registration {
        client_id: "app-client-id".into(),
        client_secret: None,
        certificate: Some((cert.der().to_vec(), key.n.clone(), key.e.clone())),
        public_url: PUBLIC.into(),
    };
    let env = env_with(
        |c| {
            c.entra.client_secret = None;
            c.entra.client_certificate = Some(cert_path.clone());
            c.entra.client_private_key = Some(key_path.clone());
        },
        Some(registration),
    )
    .await;
    let mut b = Browser::default();
    assert_eq!(
        b.sign_in(&env.gw, "alice.adams@contoso.com").await.status(),
        303
    );
    assert!(b.has_session());
}

#[tokio::test]
async fn group_restrictions_and_overage() {
    let env = env_with(
        |c| c.entra.allowed_groups = vec!["phone-users".into()],
        None,
    )
    .await;
    let mut b = Browser::default();
    env.sandbox
        .entra
        .tamper(Forge::Proper, set("groups", json!(["other"])));
    assert_eq!(
        b.sign_in(&env.gw, "alice.adams@contoso.com").await.status(),
        403
    );
    env.sandbox
        .entra
        .tamper(Forge::Proper, set("groups", json!(["PHONE-USERS"])));
    assert_eq!(
        b.sign_in(&env.gw, "alice.adams@contoso.com").await.status(),
        303
    );
    // Overage: the token names no groups; Graph's checkMemberGroups decides.
    env.sandbox.entra.tamper(
        Forge::Proper,
        set("_claim_names", json!({"groups": "src1"})),
    );
    let mut c = Browser::default();
    let res = c.sign_in(&env.gw, "alice.adams@contoso.com").await;
    assert_eq!(res.status(), 403, "Graph says Alice is in no allowed group");
    assert!(res.text().await.unwrap().contains("not in a group"));
    env.sandbox
        .graph
        .update_user(ALICE_OID, |u| u.member_of = vec!["phone-users".into()]);
    let mut d = Browser::default();
    assert_eq!(
        d.sign_in(&env.gw, "alice.adams@contoso.com").await.status(),
        303
    );
    // Graph unreachable: refused with a page that says to try later.
    drop(env.sandbox.graph_server);
    let mut e = Browser::default();
    let res = e.sign_in(&env.gw, "alice.adams@contoso.com").await;
    assert_eq!(res.status(), 403);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("too many groups to be checked")
    );
}

#[tokio::test]
async fn sign_in_is_rate_limited_per_address() {
    let env = env_with(|c| c.server.login_rate_limit = 3, None).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let res = client()
            .get(env.gw.url("/auth/login"))
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
    }
    assert_eq!(statuses, vec![303, 303, 303, 429, 429]);
}

#[tokio::test]
async fn metadata_and_keys_are_refetched_after_a_day_without_deadlock() {
    let env = env().await;
    let mut b = Browser::default();
    assert_eq!(
        b.sign_in(&env.gw, "alice.adams@contoso.com").await.status(),
        303
    );
    env.sandbox.entra.rotate_key(2);
    env.gw.clock.advance(24 * 3600 + 1);
    let mut later = Browser::default();
    let back = later
        .walk_to_callback(&env.gw, "alice.adams@contoso.com", "/")
        .await;
    // The attempt is fresh (made after the clock moved); the JWKS is a day old.
    let res = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        later.get(&env.gw, &back),
    )
    .await
    .expect("no deadlock between metadata and JWKS refresh");
    assert_eq!(res.status(), 303);
}
