//! `pbxgate setup` (the real binary) against a simulated tenant where no app is registered:
//! the administrator's device-code sign-in is approved through the Entra simulator's test
//! hook, and everything the gateway then needs comes from what setup created and wrote.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use pbxgate::clock::{Clock, ManualClock, SystemClock};
use pbxgate::config::Config;
use pbxgate::sync::{Mode, RunStatus};
use pbxgate_sandbox::entra::devicecode::{CLOUD_APPLICATION_ADMINISTRATOR, GLOBAL_ADMINISTRATOR};
use pbxgate_sandbox::{DEMO_TENANT, Registration, Sandbox};

use crate::support::*;

const ADMIN: &str = "alice.adams@contoso.com";

struct Tenant {
    sandbox: Sandbox,
    clock: ManualClock,
    dir: tempfile::TempDir,
    config: PathBuf,
}

/// A tenant whose only app is one pbxgate never uses, and a config with no app in it.
async fn fresh_tenant(extra: &str) -> Tenant {
    init();
    let clock = ManualClock::new(SystemClock.now());
    let unrelated = Registration {
        client_id: "some-other-app".into(),
        client_secret: Some("other-secret".into()),
        certificate: None,
        public_url: "https://elsewhere.example.com".into(),
    };
    let sandbox = sandbox(&unrelated, &clock).await;
    sandbox.entra.set_device_code_interval(1);
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(&sandbox.pbx_server.url(), dir.path(), extra)
        .replace(TENANT, DEMO_TENANT)
        .replace("client_id = \"app-client-id\"\n", "")
        .replace("client_secret = \"entra-secret-value\"\n", "")
        .replace(
            "http://127.0.0.1:9\"\ngraph_url",
            &format!("{}\"\ngraph_url", sandbox.entra_server.url()),
        )
        .replace(
            "graph_url = \"http://127.0.0.1:9\"",
            &format!("graph_url = \"{}\"", sandbox.graph_server.url()),
        );
    assert!(!text.contains("127.0.0.1:9\""), "{text}");
    let config = dir.path().join("pbxgate.toml");
    std::fs::write(&config, format!("# kept by setup\n{text}")).unwrap();
    Tenant {
        sandbox,
        clock,
        dir,
        config,
    }
}

/// What the administrator does on the device-code page.
#[derive(Clone, Copy)]
enum Admin {
    SignsIn(&'static str),
    Declines,
    LetsItExpire,
}

impl Tenant {
    /// Runs `pbxgate setup`, acting as the administrator once the code is shown.
    async fn setup(&self, admin: Admin) -> Output {
        let child = Command::new(binary())
            .args(["setup", "--config"])
            .arg(&self.config)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let waiting = tokio::task::spawn_blocking(move || child.wait_with_output());
        let code = loop {
            if let Some(c) = self.sandbox.entra.pending_user_codes().pop() {
                break c;
            }
            if waiting.is_finished() {
                let out = waiting.await.unwrap().unwrap();
                panic!(
                    "setup ended before showing a code: {}\n{}",
                    stdout(&out),
                    stderr(&out)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        match admin {
            Admin::SignsIn(role) => {
                assert!(
                    self.sandbox
                        .entra
                        .approve_device_code(&code, ADMIN, &[role])
                );
            }
            Admin::Declines => assert!(self.sandbox.entra.decline_device_code(&code)),
            Admin::LetsItExpire => self.clock.advance(901),
        }
        tokio::time::timeout(Duration::from_secs(60), waiting)
            .await
            .expect("setup finishes")
            .unwrap()
            .unwrap()
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.config).unwrap()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn a_fresh_tenant_ends_with_sign_in_and_sync_and_a_second_run_changes_nothing() {
    let t = fresh_tenant("[sync.users]\nenabled = true\nextension_start = \"200\"\n").await;
    let out = t.setup(Admin::SignsIn(GLOBAL_ADMINISTRATOR)).await;
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("created the app registration"),
        "{}",
        stdout(&out)
    );
    assert!(t.text().starts_with("# kept by setup\n"), "comments stay");
    let config = Config::load(&t.config).unwrap();
    let app_id = config.entra.client_id.clone();
    assert_eq!(config.entra.tenant_id, DEMO_TENANT);
    assert!(config.entra.client_secret.is_none(), "no client secret");
    let key = config.entra.client_private_key.clone().unwrap();
    assert_eq!(mode(&key), 0o600);
    let graph = &t.sandbox.graph;
    assert_eq!(graph.granted_roles(&app_id), vec!["User.Read.All"]);
    assert_eq!(
        graph.delegated_scope(&app_id).as_deref(),
        Some("openid profile email")
    );

    // What setup wrote is all the gateway needs: a user signs in, the users sync runs.
    let gw = TestGateway::start_with_clock(config, t.clock.clone()).await;
    let mut b = Browser::default();
    assert_eq!(b.sign_in(&gw, ADMIN).await.status(), 303);
    assert!(b.has_session());
    let (_tx, stop) = tokio::sync::watch::channel(false);
    let w = &gw.app.workers;
    let report = w
        .runner
        .run(w.users.as_ref(), Mode::Full, false, &stop)
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");

    // A second identical run writes nothing to Graph or to the file.
    let (writes, text) = (graph.directory_writes(), t.text());
    let out = t.setup(Admin::SignsIn(GLOBAL_ADMINISTRATOR)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Nothing changed"), "{}", stdout(&out));
    assert_eq!(graph.directory_writes(), writes);
    assert_eq!(t.text(), text);

    // Enabling a feature adds just its permission.
    std::fs::write(
        &t.config,
        format!("{text}\n[sync.contacts]\nenabled = true\n"),
    )
    .unwrap();
    let out = t.setup(Admin::SignsIn(GLOBAL_ADMINISTRATOR)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(
        said.contains("granted the application permission Contacts.Read"),
        "{said}"
    );
    assert!(!said.contains("User.Read.All"), "{said}");
    assert_eq!(graph.directory_writes(), writes + 2, "{said}");
    assert_eq!(
        graph.granted_roles(&app_id),
        vec!["User.Read.All", "Contacts.Read"]
    );
    gw.stop().await;
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn an_admin_without_the_privileged_role_is_told_which_role_and_the_consent_url() {
    let t = fresh_tenant("").await;
    let out = t
        .setup(Admin::SignsIn(CLOUD_APPLICATION_ADMINISTRATOR))
        .await;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("Privileged Role Administrator or Global Administrator"),
        "{err}"
    );
    let config = Config::load(&t.config).unwrap();
    let said = stdout(&out);
    assert!(
        said.contains(&format!(
            "/{DEMO_TENANT}/adminconsent?client_id={}",
            config.entra.client_id
        )),
        "{said}"
    );
    assert!(
        t.sandbox
            .graph
            .granted_roles(&config.entra.client_id)
            .is_empty()
    );
    // What a Cloud Application Administrator may do is done.
    assert!(
        t.sandbox
            .graph
            .delegated_scope(&config.entra.client_id)
            .is_some()
    );
}

#[tokio::test]
async fn a_declined_or_expired_code_ends_setup_and_changes_nothing() {
    let t = fresh_tenant("").await;
    let before = t.text();
    let out = t.setup(Admin::Declines).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("the sign-in was declined"),
        "{}",
        stderr(&out)
    );
    let out = t.setup(Admin::LetsItExpire).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("the code expired"),
        "{}",
        stderr(&out)
    );
    assert_eq!(t.text(), before);
    assert_eq!(t.sandbox.graph.directory_writes(), 0);
    assert!(!t.dir.path().join("entra-app.key").exists());
}

#[tokio::test]
async fn print_shows_the_permissions_by_guid_and_the_admin_consent_url() {
    let t = fresh_tenant("[sync.presence]\nenabled = true\n").await;
    let text = t.text().replace(
        "[entra]\n",
        "[entra]\nclient_id = \"6b1b7bd2-0000-4000-8000-00000000c1e7\"\nallowed_groups = [\"phones\"]\n",
    );
    std::fs::write(&t.config, text).unwrap();
    let out = Command::new(binary())
        .args(["setup", "--print", "--config"])
        .arg(&t.config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out);
    for guid in [
        "df021288-bdef-4463-88db-98f22de89214", // User.Read.All
        "8ba4a692-bc31-4128-9094-475872af8a53", // Calendars.ReadBasic.All
        "98830695-27a2-44f7-8c18-0c3ebc9698f6", // GroupMember.Read.All
        "37f7f235-527c-4136-accd-4a02d197296e", // openid
    ] {
        assert!(said.contains(guid), "{guid}: {said}");
    }
    assert!(
        !said.contains("089fe4d0-434a-44c5-8827-41ba8a0b17f5"),
        "contacts are off"
    );
    assert!(
        said.contains("https://pbx.example.com/auth/frontchannel-logout"),
        "{said}"
    );
    assert!(said.contains("\"groups\""), "{said}");
    let url = format!(
        "{}/{DEMO_TENANT}/adminconsent?client_id=6b1b7bd2-0000-4000-8000-00000000c1e7&redirect_uri=https%3A%2F%2Fpbx.example.com%2Fauth%2Fcallback",
        t.sandbox.entra_server.url()
    );
    assert!(said.contains(&url), "{said}");
    assert_eq!(t.sandbox.graph.directory_writes(), 0);
}

/// The simulated Graph is as strict as the descriptions it follows (so that setup cannot pass
/// by sending what real Graph refuses).
#[tokio::test]
async fn the_simulated_graph_refuses_what_graph_refuses() {
    let t = fresh_tenant("").await;
    let entra = t.sandbox.entra_server.url();
    let http = client();
    let form = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&")
    };
    let start: serde_json::Value = http
        .post(format!("{entra}/{DEMO_TENANT}/oauth2/v2.0/devicecode"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("client_id", pbxgate::setup::DEFAULT_PUBLIC_CLIENT),
            (
                "scope",
                "https://graph.microsoft.com/Application.ReadWrite.All openid",
            ),
        ]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let user_code = start["user_code"].as_str().unwrap();
    assert!(t.sandbox.entra.approve_device_code(user_code, ADMIN, &[]));
    let token: serde_json::Value = http
        .post(format!("{entra}/{DEMO_TENANT}/oauth2/v2.0/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("client_id", pbxgate::setup::DEFAULT_PUBLIC_CLIENT),
            ("device_code", start["device_code"].as_str().unwrap()),
        ]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bearer = token["access_token"].as_str().unwrap().to_string();
    let graph = format!("{}/v1.0", t.sandbox.graph_server.url());
    let send = |method: reqwest::Method, path: &str, body: serde_json::Value| {
        let req = http
            .request(method, format!("{graph}{path}"))
            .bearer_auth(&bearer)
            .header("Prefer", "create-if-missing")
            .json(&body);
        async move {
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            let body: serde_json::Value = res.json().await.unwrap_or_default();
            (
                status,
                body["error"]["code"].as_str().unwrap_or("").to_string(),
            )
        }
    };
    let web =
        |uris: &[&str]| serde_json::json!({"displayName": "x", "web": {"redirectUris": uris}});
    let cb = "https://pbx.example.com/auth/callback";
    let patch = reqwest::Method::PATCH;
    assert_eq!(
        send(
            patch.clone(),
            "/applications(uniqueName='a')",
            web(&[cb, cb])
        )
        .await,
        (400, "Request_BadRequest".into()),
        "a redirect URI twice"
    );
    assert_eq!(
        send(
            patch.clone(),
            "/applications(uniqueName='a')",
            web(&["http://pbx.example.com/cb"])
        )
        .await
        .0,
        400,
        "http redirect URI"
    );
    assert_eq!(
        send(
            patch.clone(),
            "/applications(uniqueName='a')",
            serde_json::json!({"displayName": "x", "color": 1})
        )
        .await
        .0,
        400,
        "unknown property"
    );
    assert_eq!(
        send(patch.clone(), "/applications(uniqueName='a')", web(&[cb]))
            .await
            .0,
        201
    );
    assert_eq!(
        send(
            patch.clone(),
            "/applications/00000000-0000-4000-8000-000000000000",
            web(&[cb])
        )
        .await,
        (404, "Request_ResourceNotFound".into())
    );
    // The token lacks AppRoleAssignment.ReadWrite.All (and the user every admin role).
    assert_eq!(
        send(
            reqwest::Method::POST,
            "/oauth2PermissionGrants",
            serde_json::json!({})
        )
        .await,
        (403, "Authorization_RequestDenied".into())
    );
    let res = http
        .get(format!("{graph}/applications(uniqueName='a')"))
        .bearer_auth("app-not-delegated")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403, "app-only tokens do not manage apps here");
}
