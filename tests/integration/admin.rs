//! The admin console at `/admin` over HTTP, in front of the whole sandbox: who may open it
//! (admins by `admin_groups` at sign-in; others 403; nobody signed in → sign-in), that every
//! `POST` needs the same origin and the session's CSRF token, that each action is audited,
//! and what the actions do (dry run, run now, overrides, revocation reaching 3CX), in English
//! and German.

use pbxgate::config::Config;
use pbxgate_sandbox::{DEMO_ADMIN_GROUP, DEMO_TENANT};

use crate::support::*;

const ALICE: &str = "alice.adams@contoso.com";
/// Alice's UPN as Entra spells it (the audit log names the admin so).
const ALICE_UPN: &str = "Alice.Adams@Contoso.com";
const BOB: &str = "bob.baker@contoso.com";
const CAROL: &str = "carol.clark@contoso.com";

async fn env(edit: impl FnOnce(&mut Config)) -> SandboxEnv {
    sandbox_env(|c| {
        c.entra.admin_groups = vec![DEMO_ADMIN_GROUP.into()];
        edit(c);
    })
    .await
}

/// A browser signed in as `upn`.
async fn signed_in(env: &SandboxEnv, upn: &str) -> Browser {
    let mut b = Browser::default();
    let res = b.sign_in(&env.gw, upn).await;
    assert_eq!(res.status(), 303, "{upn}: {:?}", res.text().await);
    assert!(b.has_session());
    b
}

/// A console page as the browser sees it, in `lang`.
async fn page(env: &SandboxEnv, b: &Browser, path: &str, lang: &str) -> (u16, String) {
    let res = client()
        .get(env.gw.url(path))
        .header("cookie", b.cookie_header())
        .header("accept", "text/html")
        .header("accept-language", lang)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

/// The CSRF token in a console page's forms.
fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    html[at..].split('"').next().unwrap().to_string()
}

/// A form `POST` as the console's own page sends it (unless `origin` says otherwise).
async fn post(
    env: &SandboxEnv,
    b: &Browser,
    path: &str,
    origin: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    client()
        .post(env.gw.url(path))
        .header("cookie", b.cookie_header())
        .header("origin", origin)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn audit_actions(env: &SandboxEnv) -> Vec<(String, String, String)> {
    env.gw
        .app
        .store
        .audit(100)
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.actor, a.action, a.target))
        .collect()
}

#[tokio::test]
async fn admins_get_the_console_others_403_and_strangers_sign_in() {
    let env = env(|_| {}).await;
    let alice = signed_in(&env, ALICE).await;
    let bob = signed_in(&env, BOB).await;

    let (status, html) = page(&env, &alice, "/admin", "en").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("Installation status"), "{html}");
    for section in [
        "/admin/sync",
        "/admin/directory",
        "/admin/sessions",
        "/admin/audit",
    ] {
        assert!(html.contains(&format!("href=\"{section}\"")), "{section}");
        let (status, _) = page(&env, &alice, section, "en").await;
        assert_eq!(status, 200, "{section}");
    }

    for path in ["/admin", "/admin/sync", "/admin/sessions", "/admin/audit"] {
        let (status, html) = page(&env, &bob, path, "en").await;
        assert_eq!(status, 403, "{path}");
        assert!(html.contains("Admins only"), "{html}");
        assert!(html.contains("reference"), "a correlation id: {html}");
    }

    let res = client()
        .get(env.gw.url("/admin/sync"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/auth/login?return_to=%2Fadmin%2Fsync");
    let res = client().get(env.gw.url("/admin")).send().await.unwrap();
    assert_eq!(res.status(), 401, "no page navigation: no redirect");

    // The console's pages allow no script and no inline style.
    let res = client()
        .get(env.gw.url("/admin"))
        .header("cookie", alice.cookie_header())
        .send()
        .await
        .unwrap();
    let csp = res.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("style-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
}

#[tokio::test]
async fn posts_need_the_same_origin_and_the_sessions_csrf_token_and_are_audited() {
    let env = env(|_| {}).await;
    let alice = signed_in(&env, ALICE).await;
    let bob = signed_in(&env, BOB).await;
    let (_, html) = page(&env, &alice, "/admin", "en").await;
    let token = csrf_of(&html);

    let res = post(
        &env,
        &alice,
        "/admin/check",
        "https://evil.example",
        &[("csrf", &token)],
    )
    .await;
    assert_eq!(res.status(), 403, "cross-site");
    let res = post(&env, &alice, "/admin/check", PUBLIC, &[]).await;
    assert_eq!(res.status(), 403, "no CSRF token");
    let res = post(&env, &alice, "/admin/check", PUBLIC, &[("csrf", "x")]).await;
    assert_eq!(res.status(), 403, "wrong CSRF token");
    // Another session's token does not fit this one.
    let mut alice2 = signed_in(&env, ALICE).await;
    let (_, other) = page(&env, &alice2, "/admin", "en").await;
    assert_ne!(csrf_of(&other), token);
    let res = post(
        &env,
        &alice,
        "/admin/check",
        PUBLIC,
        &[("csrf", &csrf_of(&other))],
    )
    .await;
    assert_eq!(res.status(), 403, "another session's token");
    // A non-admin with a same-origin POST and any token: 403 too.
    let res = post(&env, &bob, "/admin/check", PUBLIC, &[("csrf", &token)]).await;
    assert_eq!(res.status(), 403, "not an admin");
    assert!(
        audit_actions(&env).await.is_empty(),
        "nothing refused was done"
    );

    let res = post(&env, &alice, "/admin/check", PUBLIC, &[("csrf", &token)]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/admin?done=checked");
    assert!(env.gw.app.doctor.latest().is_some(), "the check ran");
    assert_eq!(
        audit_actions(&env).await,
        vec![(
            ALICE_UPN.to_string(),
            "doctor.check".into(),
            "installation".into()
        )]
    );
    let (_, html) = page(&env, &alice, "/admin/audit", "en").await;
    assert!(
        html.contains("doctor.check") && html.contains(ALICE_UPN),
        "{html}"
    );
    alice2.cookies.clear();
}

#[tokio::test]
async fn a_dry_run_changes_nothing_and_run_now_runs() {
    let env = env(|c| c.sync.users.enabled = true).await;
    let alice = signed_in(&env, ALICE).await;
    let (_, html) = page(&env, &alice, "/admin/sync", "en").await;
    let token = csrf_of(&html);
    let extensions = env.sandbox.pbx.extensions().len();
    let rows = env.gw.app.store.directory_users(DEMO_TENANT).await.unwrap();

    let res = post(
        &env,
        &alice,
        "/admin/sync/users/dry-run",
        PUBLIC,
        &[("csrf", &token)],
    )
    .await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains("<table class=\"plan\">"), "{html}");
    assert!(html.contains(CAROL), "Carol would get an extension: {html}");
    assert_eq!(
        env.sandbox.pbx.extensions().len(),
        extensions,
        "3CX unchanged"
    );
    assert_eq!(
        env.gw.app.store.directory_users(DEMO_TENANT).await.unwrap(),
        rows,
        "directory unchanged"
    );

    let res = post(
        &env,
        &alice,
        "/admin/sync/users/run",
        PUBLIC,
        &[("csrf", &token)],
    )
    .await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/admin/sync?done=run_done");
    assert!(
        env.sandbox.pbx.extensions().len() > extensions,
        "the run created extensions"
    );
    let (_, html) = page(&env, &alice, "/admin/sync?done=run_done", "en").await;
    assert!(html.contains("The run has finished."), "{html}");
    assert!(
        html.contains("succeeded"),
        "the run record is listed: {html}"
    );

    let actions = audit_actions(&env).await;
    assert!(actions.contains(&(ALICE_UPN.into(), "sync.dry_run".into(), "users".into())));
    assert!(actions.contains(&(ALICE_UPN.into(), "sync.run".into(), "users".into())));
    // A disabled worker cannot be run now.
    let res = post(
        &env,
        &alice,
        "/admin/sync/contacts/run",
        PUBLIC,
        &[("csrf", &token)],
    )
    .await;
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn overrides_are_added_and_removed_and_decide_the_next_sign_in() {
    let env = env(|_| {}).await;
    let alice = signed_in(&env, ALICE).await;
    let (_, html) = page(&env, &alice, "/admin/directory", "en").await;
    let token = csrf_of(&html);
    let add = |upn: &'static str, ext: &'static str| {
        let (env, alice, token) = (&env, &alice, token.clone());
        async move {
            let form = [("csrf", token.as_str()), ("upn", upn), ("extension", ext)];
            location(&post(env, alice, "/admin/directory/overrides", PUBLIC, &form).await)
        }
    };
    assert_eq!(
        add("carol", "103").await,
        "/admin/directory?done=override_invalid"
    );
    assert_eq!(
        add(CAROL, "777").await,
        "/admin/directory?done=override_no_extension"
    );
    assert_eq!(
        add("Carol.Clark@Contoso.com", "103").await,
        "/admin/directory?done=override_added"
    );

    // Carol, who has no extension of her own, now signs in as 103.
    let mut carol = signed_in(&env, CAROL).await;
    assert_eq!(carol.webclient_extension(&env.gw).await, Ok("103".into()));
    let (_, html) = page(&env, &alice, "/admin/directory?q=carol", "en").await;
    assert!(html.contains("override") && html.contains("103"), "{html}");
    assert!(!html.contains(BOB), "the search narrows: {html}");

    let form = [("csrf", token.as_str()), ("upn", CAROL)];
    let res = post(
        &env,
        &alice,
        "/admin/directory/overrides/remove",
        PUBLIC,
        &form,
    )
    .await;
    assert_eq!(location(&res), "/admin/directory?done=override_removed");
    assert!(env.gw.app.store.overrides().await.unwrap().is_empty());
    let mut again = Browser::default();
    let res = again.sign_in(&env.gw, CAROL).await;
    assert_ne!(
        res.status(),
        303,
        "without the override Carol has no extension again"
    );

    let actions = audit_actions(&env).await;
    let adds = actions.iter().filter(|a| a.1 == "override.add").count();
    assert_eq!(adds, 3, "refused attempts are audited too: {actions:?}");
    assert!(actions.contains(&(ALICE_UPN.into(), "override.remove".into(), CAROL.into())));
}

#[tokio::test]
async fn revoking_ends_the_session_and_its_3cx_access() {
    let env = env(|_| {}).await;
    let alice = signed_in(&env, ALICE).await;
    let mut bob = signed_in(&env, BOB).await;
    assert_eq!(bob.webclient_extension(&env.gw).await, Ok("102".into()));
    let (_, html) = page(&env, &alice, "/admin/sessions", "en").await;
    assert!(html.contains(BOB) && html.contains("127.0.0.1"), "{html}");
    let token = csrf_of(&html);
    let listed = env.gw.app.sessions.listed(100).await.unwrap();
    let bobs = listed.iter().find(|s| s.upn == BOB).unwrap();

    let form = [("csrf", token.as_str()), ("session", bobs.id_hash.as_str())];
    let res = post(&env, &alice, "/admin/sessions/revoke", PUBLIC, &form).await;
    assert_eq!(location(&res), "/admin/sessions?done=revoked");
    assert!(
        bob.webclient_extension(&env.gw).await.is_err(),
        "no 3CX token any more"
    );
    let res = bob.get(&env.gw, "/webclient/").await;
    assert!(location(&res).starts_with("/auth/login"), "signed out");

    // All of a user's sessions at once.
    let mut bob1 = signed_in(&env, BOB).await;
    let mut bob2 = signed_in(&env, BOB).await;
    let form = [("csrf", token.as_str()), ("user", bobs.user_key.as_str())];
    let res = post(&env, &alice, "/admin/sessions/revoke", PUBLIC, &form).await;
    assert_eq!(location(&res), "/admin/sessions?done=revoked_all");
    assert!(bob1.webclient_extension(&env.gw).await.is_err());
    assert!(bob2.webclient_extension(&env.gw).await.is_err());
    let (status, _) = page(&env, &alice, "/admin", "en").await;
    assert_eq!(status, 200, "the admin's own session stays");

    let actions = audit_actions(&env).await;
    assert!(
        actions.iter().any(|a| a.1 == "session.revoke"),
        "{actions:?}"
    );
    assert!(
        actions.iter().any(|a| a.1 == "session.revoke_user"),
        "{actions:?}"
    );
}

#[tokio::test]
async fn the_console_speaks_german_or_english_by_accept_language() {
    let env = env(|_| {}).await;
    let alice = signed_in(&env, ALICE).await;
    let bob = signed_in(&env, BOB).await;
    let (_, de) = page(&env, &alice, "/admin", "de-DE,de;q=0.9,en;q=0.8").await;
    assert!(
        de.contains("<html lang=\"de\">") && de.contains("Übersicht"),
        "{de}"
    );
    assert!(de.contains("Jetzt prüfen"));
    let (_, en) = page(&env, &alice, "/admin", "en-GB,en;q=0.9,de;q=0.5").await;
    assert!(
        en.contains("<html lang=\"en\">") && en.contains("Overview"),
        "{en}"
    );
    assert!(!en.contains("Übersicht"));
    let (status, de) = page(&env, &bob, "/admin", "de").await;
    assert_eq!(status, 403);
    assert!(de.contains("Nur für Administratoren"), "{de}");
    assert!(
        de.contains("<html lang=\"de\">") && de.contains("Referenz"),
        "{de}"
    );
}

#[tokio::test]
async fn in_managed_password_mode_revoking_rotates_the_extensions_password_at_3cx() {
    let env = env(|c| {
        use base64::Engine;
        c.pbx.session_mode = pbxgate::config::SessionMode::ManagedPassword;
        c.pbx.password_key = Some(
            base64::engine::general_purpose::STANDARD
                .encode([7u8; 32])
                .into(),
        );
    })
    .await;
    let alice = signed_in(&env, ALICE).await;
    let _bob = signed_in(&env, BOB).await;
    let password = || env.sandbox.pbx.extension("102").unwrap().access_password;
    let before = password();
    assert!(before.is_some(), "Bob's sign-in set a managed password");
    let (_, html) = page(&env, &alice, "/admin/sessions", "en").await;
    let token = csrf_of(&html);
    let listed = env.gw.app.sessions.listed(100).await.unwrap();
    let bobs = listed.iter().find(|s| s.upn == BOB).unwrap();

    let form = [("csrf", token.as_str()), ("session", bobs.id_hash.as_str())];
    let res = post(&env, &alice, "/admin/sessions/revoke", PUBLIC, &form).await;
    assert_eq!(location(&res), "/admin/sessions?done=revoked");
    assert_ne!(
        password(),
        before,
        "3CX's sessions of 102 end with its password"
    );
}

/// The console's store queries on PostgreSQL (the tests above run on SQLite): heartbeats,
/// the directory search with how a user was matched and the last sign-in, overrides,
/// sessions with their client, and the audit log.
#[tokio::test]
async fn the_console_works_on_postgresql() {
    let pg = PgDatabase::create().await;
    let env = env(|c| {
        c.store.url = pg.url.clone();
        c.sync.users.enabled = true;
    })
    .await;
    let alice = signed_in(&env, ALICE).await;
    let _carol = signed_in(&env, CAROL).await; // no extension yet: provisioned at sign-in

    let (status, html) = page(&env, &alice, "/admin", "en").await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains(" ◀"),
        "this replica's heartbeat is listed: {html}"
    );
    let (_, html) = page(&env, &alice, "/admin/directory?q=CLARK", "en").await;
    assert!(
        html.contains(CAROL) && html.contains("provisioned at sign-in"),
        "{html}"
    );
    assert!(
        !html.contains(">never<"),
        "Carol's sign-in is recorded: {html}"
    );
    let (_, html) = page(&env, &alice, "/admin/directory?q=10_", "en").await;
    assert!(
        html.contains("No user matches."),
        "`_` is no wildcard: {html}"
    );

    let token = csrf_of(&html);
    let form = [
        ("csrf", token.as_str()),
        ("upn", "dora.diaz@contoso.com"),
        ("extension", "103"),
    ];
    let res = post(&env, &alice, "/admin/directory/overrides", PUBLIC, &form).await;
    assert_eq!(location(&res), "/admin/directory?done=override_added");
    let (_, html) = page(&env, &alice, "/admin/sessions", "en").await;
    assert!(html.contains(CAROL) && html.contains("127.0.0.1"), "{html}");
    let (_, html) = page(&env, &alice, "/admin/audit", "en").await;
    assert!(
        html.contains("override.add") && html.contains("dora.diaz@contoso.com"),
        "{html}"
    );
    env.gw.stop().await;
}
