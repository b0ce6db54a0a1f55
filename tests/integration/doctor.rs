//! `pbxgate doctor` (the real binary) against the sandbox with each credential broken in
//! turn, `--as` the sign-in probe, and the `credentials` entry of `/readyz`.

use std::path::{Path, PathBuf};
use std::process::Command;

use pbxgate::clock::{Clock, ManualClock, SystemClock};
use pbxgate_sandbox as sandbox;
use sandbox::entra::SimApp;

use crate::support::*;

/// The sandbox, and a config for the binary with the presence and contact syncs on.
struct Env {
    sandbox: sandbox::Sandbox,
    dir: tempfile::TempDir,
}

impl Env {
    async fn start() -> Self {
        init();
        let clock = ManualClock::new(SystemClock.now());
        let sandbox = sandbox(&registration(), &clock).await;
        let dir = tempfile::tempdir().unwrap();
        // A store `serve` has migrated.
        let db = format!("sqlite://{}", dir.path().join("pbxgate.db").display());
        pbxgate::store::Store::open(&db)
            .await
            .unwrap()
            .close()
            .await;
        Self { sandbox, dir }
    }

    /// The config text, with `edit` applied to it.
    fn config(&self, edit: impl FnOnce(String) -> String) -> PathBuf {
        let s = &self.sandbox;
        let text = config_text(&s.pbx_server.url(), self.dir.path(), "")
            .replace(
                "authority = \"http://127.0.0.1:9\"",
                &format!("authority = \"{}\"", s.entra_server.url()),
            )
            .replace(
                "graph_url = \"http://127.0.0.1:9\"",
                &format!("graph_url = \"{}\"", s.graph_server.url()),
            )
            .replace(TENANT, sandbox::DEMO_TENANT)
            + "\n[sync.presence]\nenabled = true\n\
               [sync.contacts]\nenabled = true\nshared_mailboxes = [\"reception@contoso.com\"]\n";
        let path = self.dir.path().join("pbxgate.toml");
        std::fs::write(&path, edit(text)).unwrap();
        path
    }

    /// The app registration with only `roles` granted.
    fn grant_only(&self, roles: &[&str]) {
        let mut app: SimApp = registration().app();
        app.roles = roles.iter().map(|r| r.to_string()).collect();
        self.sandbox.entra.register_app(app);
    }
}

/// Runs `pbxgate doctor` (off the async runtime: the simulators must keep answering).
async fn doctor(config: &Path, args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(binary());
    cmd.arg("doctor").arg("--config").arg(config).args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The printed line of check `id`.
fn line<'a>(out: &'a str, id: &str) -> &'a str {
    let tag = format!("[{id}]");
    out.lines()
        .find(|l| l.contains(&tag))
        .unwrap_or_else(|| panic!("no line {tag} in:\n{out}"))
}

fn assert_mark(out: &str, id: &str, mark: &str) {
    let l = line(out, id);
    assert!(
        l.trim_start().starts_with(mark),
        "{id} should be {mark}: {l}\n{out}"
    );
}

#[tokio::test]
async fn doctor_passes_when_every_credential_works() {
    let env = Env::start().await;
    let (code, out) = doctor(&env.config(|t| t), &[]).await;
    assert_eq!(code, 0, "{out}");
    for id in [
        "entra.discovery",
        "entra.credential",
        "entra.clock",
        "graph.roles",
        "graph.users",
        "graph.presence",
        "graph.contacts",
        "pbx.reachable",
        "pbx.api",
        "pbx.version",
        "pbx.session",
        "store.reachable",
        "store.migrations",
        "store.writable",
    ] {
        assert_mark(&out, id, "✔");
    }
    // The secret's expiry is unknown (Graph does not show the app its registration) …
    assert_mark(&out, "entra.expiry", "–");
    assert!(line(&out, "pbx.version").contains("3CX 20.0.10"), "{out}");
    // … until the config says it: within 30 days is a warning, which still exits 0.
    let soon = pbxgate::clock::format_utc(SystemClock.now() + 10 * 86_400);
    let path = env.config(|t| {
        t.replace(
            "client_secret = \"entra-secret-value\"",
            &format!(
                "client_secret = \"entra-secret-value\"\nclient_secret_expires = {}",
                &soon[..10]
            ),
        )
    });
    let (code, out) = doctor(&path, &[]).await;
    assert_eq!(code, 0, "{out}");
    assert_mark(&out, "entra.expiry", "!");
    assert!(line(&out, "entra.expiry").contains(&soon[..10]), "{out}");
}

#[tokio::test]
async fn a_wrong_entra_secret_fails_the_credential_line() {
    let env = Env::start().await;
    let path = env.config(|t| t.replace("entra-secret-value", "wrong-secret"));
    let (code, out) = doctor(&path, &[]).await;
    assert_eq!(code, 1, "{out}");
    assert_mark(&out, "entra.credential", "✘");
    assert!(
        line(&out, "entra.credential").contains("AADSTS7000215"),
        "{out}"
    );
    assert!(
        !out.contains("wrong-secret"),
        "the secret is never printed: {out}"
    );
    assert_mark(&out, "entra.discovery", "✔");
    assert_mark(&out, "graph.roles", "–");
    assert_mark(&out, "pbx.api", "✔");
}

#[tokio::test]
async fn a_missing_graph_permission_fails_its_features_lines() {
    let env = Env::start().await;
    env.grant_only(&["User.Read.All", "Contacts.Read"]);
    let (code, out) = doctor(&env.config(|t| t), &[]).await;
    assert_eq!(code, 1, "{out}");
    assert_mark(&out, "graph.roles", "✘");
    assert!(
        line(&out, "graph.roles").contains("presence sync needs Calendars.ReadBasic.All"),
        "{out}"
    );
    assert!(
        out.contains("Calendars.ReadBasic.All and grant admin consent"),
        "{out}"
    );
    assert_mark(&out, "graph.presence", "✘");
    assert!(
        line(&out, "graph.presence").contains("Authorization_RequestDenied"),
        "{out}"
    );
    assert_mark(&out, "graph.users", "✔");
    assert_mark(&out, "graph.contacts", "✔");
    // With the presence sync off, the same grant is enough.
    let path = env.config(|t| t.replace("[sync.presence]\nenabled = true", ""));
    let (code, out) = doctor(&path, &[]).await;
    assert_eq!(code, 0, "{out}");
    assert_mark(&out, "graph.presence", "–");
}

#[tokio::test]
async fn a_wrong_3cx_api_key_fails_the_api_line() {
    let env = Env::start().await;
    let path = env.config(|t| t.replace("xapi-secret-value", "wrong-xapi-secret"));
    let (code, out) = doctor(&path, &[]).await;
    assert_eq!(code, 1, "{out}");
    assert_mark(&out, "pbx.reachable", "✔");
    assert_mark(&out, "pbx.api", "✘");
    assert!(
        line(&out, "pbx.api").contains("refused the API client credentials"),
        "{out}"
    );
    assert_mark(&out, "entra.credential", "✔");
}

#[tokio::test]
async fn pbx_down_fails_the_reachable_line() {
    let env = Env::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let url = env.sandbox.pbx_server.url();
    let path = env.config(|t| t.replace(&url, &format!("http://127.0.0.1:{port}")));
    let (code, out) = doctor(&path, &[]).await;
    assert_eq!(code, 1, "{out}");
    assert_mark(&out, "pbx.reachable", "✘");
    assert_mark(&out, "pbx.api", "–");
    assert_mark(&out, "graph.users", "✔");
    assert_mark(&out, "store.writable", "✔");
}

#[tokio::test]
async fn the_store_down_fails_its_line_and_the_rest_is_still_checked() {
    let env = Env::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let path = env.config(|t| {
        let sqlite = t
            .lines()
            .find(|l| l.starts_with("url = \"sqlite:"))
            .unwrap();
        t.replace(
            sqlite,
            &format!("url = \"postgres://pbxgate:pw@127.0.0.1:{port}/pbxgate\""),
        )
    });
    let (code, out) = doctor(&path, &[]).await;
    assert_eq!(code, 1, "{out}");
    assert_mark(&out, "store.reachable", "✘");
    assert_mark(&out, "store.writable", "–");
    assert_mark(&out, "pbx.api", "✔");
    assert_mark(&out, "pbx.session", "✔");
    assert_mark(&out, "entra.credential", "✔");
    // The 3CX client ran on a throw-away store, which is gone.
    let left = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("pbxgate-doctor-")
        });
    assert!(!left, "a scratch store was left behind");
}

#[tokio::test]
async fn an_unusable_config_exits_2() {
    let env = Env::start().await;
    let path = env.config(|t| t.replace("[pbx]", "[pbx]\nbogus_key = 1"));
    let (code, out) = doctor(&path, &[]).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("bogus_key"), "{out}");
}

#[tokio::test]
async fn as_extension_signs_in_as_that_extension_and_changes_nothing() {
    let env = Env::start().await;
    let pbx = &env.sandbox.pbx;
    let (code, out) = doctor(&env.config(|t| t), &["--as", "101"]).await;
    assert_eq!(code, 0, "{out}");
    assert_mark(&out, "pbx.probe", "✔");
    assert!(
        pbx.impersonations().contains(&(
            sandbox::DEMO_SERVICE_EXTENSION.to_string(),
            "101".to_string()
        )),
        "{:?}",
        pbx.impersonations()
    );
    assert_eq!(pbx.writes(), 0, "no user was created or changed");
    pbx.edit_extension("102", |e| e.enabled = false);
    let (code, out) = doctor(&env.config(|t| t), &["--as", "102"]).await;
    assert_eq!(code, 1, "{out}");
    assert_mark(&out, "pbx.probe", "✘");
    assert!(line(&out, "pbx.probe").contains("disabled"), "{out}");
}

#[tokio::test]
async fn readyz_shows_the_last_credential_check_without_failing_readiness() {
    let env = sandbox_env(|_| {}).await;
    let gw = &env.gw;
    let readyz = || async {
        let r = client().get(gw.url("/readyz")).send().await.unwrap();
        (
            r.status().as_u16(),
            r.json::<serde_json::Value>().await.unwrap(),
        )
    };
    let (status, body) = readyz().await;
    assert_eq!(status, 200, "{body}");
    assert!(body["checks"]["credentials"]["ok"].is_null(), "{body}");
    let report = gw.app.doctor.refresh().await;
    assert!(report.ok(), "{}", report.render());
    let (_, body) = readyz().await;
    assert_eq!(body["checks"]["credentials"]["ok"], true, "{body}");
    assert_eq!(
        body["checks"]["credentials"]["failing"],
        serde_json::json!([])
    );
    // The app loses every permission: readiness stays, the entry and the metric say it.
    let mut app = registration().app();
    app.roles.clear();
    env.sandbox.entra.register_app(app);
    let report = gw.app.doctor.refresh().await;
    assert!(!report.ok());
    let (status, body) = readyz().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["credentials"]["ok"], false, "{body}");
    let failing = body["checks"]["credentials"]["failing"].to_string();
    assert!(
        failing.contains("graph.roles") && failing.contains("graph.users"),
        "{failing}"
    );
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("pbxgate_credential_check{id=\"graph.roles\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pbxgate_credential_check{id=\"entra.credential\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_untrusted_3cx_certificate_is_told_apart_from_a_refused_connection() {
    let env = Env::start().await;
    let pki = pki();
    let (cert, key) = pki
        .leaf(&["127.0.0.1"])
        .unwrap()
        .write(env.dir.path(), "pbx")
        .unwrap();
    let ca = env.dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let tls = tokio_rustls::TlsAcceptor::from(pbxgate::tls::server_config(&cert, &key).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pbx = sandbox::spawn(
        listener,
        sandbox::pbx::router(env.sandbox.pbx.clone()),
        Some(tls),
    )
    .unwrap();
    let plain = env.sandbox.pbx_server.url();
    let run = |ca_file: Option<&Path>| {
        let text = std::fs::read_to_string(env.config(|t| t.replace(&plain, &pbx.url()))).unwrap();
        let mut config = pbxgate::config::Config::parse(&text, "doctor.toml", []).unwrap();
        config.pbx.ca_file = ca_file.map(Path::to_path_buf);
        let deps = pbxgate::doctor::Deps {
            config,
            clock: std::sync::Arc::new(SystemClock),
            store: None,
            pbx: None,
            metrics: None,
        };
        async move { pbxgate::doctor::run(&deps, None, false).await }
    };
    let report = run(None).await;
    let out = report.render();
    assert!(!report.ok(), "{out}");
    assert_mark(&out, "pbx.reachable", "✔");
    assert_mark(&out, "pbx.tls", "✘");
    assert!(
        line(&out, "pbx.tls").to_lowercase().contains("certificate"),
        "{out}"
    );
    let report = run(Some(&ca)).await;
    let out = report.render();
    assert_mark(&out, "pbx.tls", "✔");
    assert_mark(&out, "pbx.api", "✔");
}

#[tokio::test]
async fn a_certificate_credential_expiring_within_30_days_is_a_warning() {
    let env = Env::start().await;
    let key = sandbox::entra::signing_key(7);
    let kp =
        rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&key.private_pem, &rcgen::PKCS_RSA_SHA256)
            .unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    let soon = pbxgate::clock::format_utc(SystemClock.now() + 10 * 86_400);
    let ymd: Vec<i32> = soon[..10].split('-').map(|p| p.parse().unwrap()).collect();
    params.not_after = rcgen::date_time_ymd(ymd[0], ymd[1] as u8, ymd[2] as u8);
    let cert = params.self_signed(&kp).unwrap();
    let (cert_path, key_path) = (
        env.dir.path().join("entra.pem"),
        env.dir.path().join("entra.key"),
    );
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, &key.private_pem).unwrap();
    let mut app = registration().app();
    app.secret = None;
    app.certificate = Some((cert.der().to_vec(), key.n.clone(), key.e.clone()));
    env.sandbox.entra.register_app(app);
    let path = env.config(|t| {
        t.replace(
            "client_secret = \"entra-secret-value\"",
            &format!(
                "client_certificate = \"{}\"\nclient_private_key = \"{}\"",
                cert_path.display(),
                key_path.display()
            ),
        )
    });
    let (code, out) = doctor(&path, &[]).await;
    assert_eq!(code, 0, "a warning still exits 0: {out}");
    assert_mark(&out, "entra.credential", "✔");
    assert!(
        line(&out, "entra.credential").contains("certificate"),
        "{out}"
    );
    assert_mark(&out, "entra.expiry", "!");
    assert!(line(&out, "entra.expiry").contains(&soon[..10]), "{out}");
}

#[tokio::test]
async fn a_store_serve_never_migrated_fails_the_schema_line() {
    let env = Env::start().await;
    let fresh = env.dir.path().join("fresh.db");
    let path = env.config(|t| {
        let sqlite = t
            .lines()
            .find(|l| l.starts_with("url = \"sqlite:"))
            .unwrap();
        t.replace(sqlite, &format!("url = \"sqlite://{}\"", fresh.display()))
    });
    let text = std::fs::read_to_string(path).unwrap();
    let deps = pbxgate::doctor::Deps {
        config: pbxgate::config::Config::parse(&text, "doctor.toml", []).unwrap(),
        clock: std::sync::Arc::new(SystemClock),
        store: None,
        pbx: None,
        metrics: None,
    };
    let out = pbxgate::doctor::run(&deps, None, true).await.render();
    assert_mark(&out, "store.reachable", "✔");
    assert_mark(&out, "store.migrations", "✘");
    assert!(
        line(&out, "store.migrations").contains("not applied"),
        "{out}"
    );
    assert_mark(&out, "store.writable", "–");
    // Doctor does not migrate: the store is as it found it.
    let store = pbxgate::store::Store::connect(&format!("sqlite://{}", fresh.display()))
        .await
        .unwrap();
    assert!(!store.migrations().await.unwrap().pending.is_empty());
}
