//! Sign-in against a real third-party OpenID provider: the npm package `oidc-provider`,
//! configured by `tests/e2e/oidc-provider.mjs` to look like Entra ID (issuer
//! `…/{tenant}/v2.0`, `oid`/`tid`/`preferred_username`), so pbxgate is not only tested
//! against its own simulator.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use pbxgate::clock::{Clock, ManualClock, SystemClock};
use pbxgate::config::ImpersonationCredential;
use pbxgate_sandbox::DEMO_SERVICE_EXTENSION;

use crate::support::*;

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

/// The provider as a child process; killed when dropped.
struct OidcProvider {
    child: Child,
    authority: String,
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_provider() -> OidcProvider {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e");
    assert!(
        dir.join("node_modules/oidc-provider").is_dir(),
        "oidc-provider is not installed: run `npm ci` in tests/e2e (scripts/test.sh does)"
    );
    let mut child = Command::new("node")
        .current_dir(&dir)
        .args(["oidc-provider.mjs", "--port", "0", "--tenant", TENANT])
        .args([
            "--client-id",
            "app-client-id",
            "--client-secret",
            "entra-secret-value",
        ])
        .args(["--redirect-uri", &format!("{PUBLIC}/auth/callback")])
        .args([
            "--post-logout-redirect-uri",
            &format!("{PUBLIC}/auth/signed-out"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node is installed");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ready: serde_json::Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("oidc-provider did not start ({e}): {line:?}"));
    OidcProvider {
        child,
        authority: ready["authority"].as_str().unwrap().to_string(),
    }
}

#[tokio::test]
async fn code_flow_with_pkce_through_oidc_provider() {
    code_flow(ImpersonationCredential::ServiceExtension).await;
}

/// The unverified variant, against a simulated 3CX told to accept it.
#[tokio::test]
async fn code_flow_through_oidc_provider_with_api_client_impersonation() {
    code_flow(ImpersonationCredential::ApiClient).await;
}

/// One sign-in through the provider; 3CX sessions by impersonation with `credential`.
async fn code_flow(credential: ImpersonationCredential) {
    init();
    let provider = start_provider();
    let clock = ManualClock::new(SystemClock.now());
    // The sandbox's Entra ID is not used here; only its 3CX is.
    let registration = registration();
    let sandbox = sandbox(&registration, &clock).await;
    if credential == ImpersonationCredential::ApiClient {
        sandbox.pbx.allow_api_client_impersonation(true);
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sandbox.pbx_server.url(), dir.path(), |c| {
        c.entra.authority = provider.authority.parse().unwrap();
        c.entra.tenant_id = TENANT.into();
        c.pbx.impersonation_credential = credential;
        // No Graph behind this provider: sign-in's guest check (a Graph read) is off.
        c.sync.users.include_guests = true;
    });
    let gw = TestGateway::start_with_clock(cfg, clock).await;

    // The gateway sends the browser to the provider...
    let res = client()
        .get(gw.url("/auth/login?return_to=%2Fwebclient%2F&login_hint=alice.adams%40contoso.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let attempt_cookie = res.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let mut next = res.headers()["location"].to_str().unwrap().to_string();
    assert!(
        next.starts_with(&format!(
            "{}/{TENANT}/v2.0/oauth2/v2.0/authorize?",
            provider.authority
        )),
        "{next}"
    );

    // ...which signs Alice in (login_hint) and consents, over its own redirects and cookies.
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .no_proxy()
        .build()
        .unwrap();
    for _ in 0..10 {
        if next.starts_with(PUBLIC) {
            break;
        }
        let res = browser.get(&next).send().await.unwrap();
        assert!(
            res.status().is_redirection(),
            "{next}: {} {:?}",
            res.status(),
            res.text().await
        );
        let loc = res.headers()["location"].to_str().unwrap();
        next = url::Url::parse(&next)
            .unwrap()
            .join(loc)
            .unwrap()
            .to_string();
    }
    assert!(
        next.starts_with(&format!("{PUBLIC}/auth/callback?")),
        "{next}"
    );

    // Back at the gateway: code exchange, ID token validation, directory, 3CX session.
    let res = client()
        .get(gw.url(next.strip_prefix(PUBLIC).unwrap()))
        .header("cookie", &attempt_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303, "{:?}", res.text().await);
    assert_eq!(res.headers()["location"], "/webclient/");
    let session = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.starts_with(&format!("{COOKIE}=")))
        .expect("session cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let token: serde_json::Value = client()
        .post(gw.url("/connect/token"))
        .header("cookie", &session)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("client_id=Webclient&grant_type=refresh_token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let me: serde_json::Value = client()
        .get(gw.url("/xapi/v1/MyUser"))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        me["Number"], "101",
        "Alice.Adams@Contoso.com is extension 101"
    );
    let row = gw
        .app
        .store
        .directory_user(TENANT, "3f2504e0-4f89-41d3-9a0c-0305e82c3301")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.upn, "Alice.Adams@Contoso.com");
    let by = match credential {
        ImpersonationCredential::ServiceExtension => DEMO_SERVICE_EXTENSION,
        ImpersonationCredential::ApiClient => "api-client",
    };
    let impersonations = sandbox.pbx.impersonations();
    assert!(!impersonations.is_empty());
    assert!(
        impersonations
            .iter()
            .all(|(who, ext)| who == by && ext == "101")
    );
}
