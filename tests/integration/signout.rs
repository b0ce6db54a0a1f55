//! Issue 15, sign-out and logs: sign-out only from pbxgate's own origin, a front-channel
//! sign-out that checks its issuer and costs little, log lines a client cannot forge, and
//! secret files only their owner can read.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

/// What a browser sends when a page of pbxgate's origin (its sign-out page, the webclient)
/// posts the sign-out form.
pub async fn sign_out(b: &mut Browser, gw: &TestGateway) -> reqwest::Response {
    let res = client()
        .post(gw.url("/auth/logout"))
        .header("cookie", b.cookie_header())
        .header("origin", PUBLIC)
        .header("sec-fetch-site", "same-origin")
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    b.keep(&res);
    res
}

/// 200 while session `id` is good (the upstream answers), a redirect to sign-in once not.
async fn session_status(gw: &TestGateway, id: &str) -> u16 {
    client()
        .get(gw.url("/"))
        .header("cookie", cookie(id))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn gateway(edit: impl FnOnce(&mut pbxgate::config::Config)) -> (Upstream, TestGateway) {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&up.url(), edit).await;
    (up, gw)
}

// === /auth/logout ===

#[tokio::test]
async fn a_cross_site_sign_out_post_is_refused_and_the_session_lives_on() {
    let (_up, gw) = gateway(|_| {}).await;
    let id = gw.session_for("alice").await;
    let cases: &[&[(&str, &str)]] = &[
        &[("origin", "https://evil.example")],
        &[("origin", "https://pbx.example.com.evil.example")],
        &[("origin", "http://pbx.example.com")],
        &[("origin", "null")],
        &[("origin", "null"), ("sec-fetch-site", "cross-site")],
        &[
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "same-origin"),
        ],
        &[("sec-fetch-site", "cross-site")],
        &[("sec-fetch-site", "same-site")],
        // A client that says neither where it comes from.
        &[],
    ];
    for headers in cases {
        let mut req = client()
            .post(gw.url("/auth/logout"))
            .header("cookie", cookie(&id));
        for (k, v) in *headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 403, "{headers:?}");
        assert!(res.headers().get("set-cookie").is_none(), "{headers:?}");
        assert!(res.text().await.unwrap().contains("Sign-out refused"));
    }
    assert_eq!(session_status(&gw, &id).await, 200, "the session lives on");
}

#[tokio::test]
async fn a_get_of_the_sign_out_url_shows_a_button_and_signs_nobody_out() {
    let (_up, gw) = gateway(|_| {}).await;
    let id = gw.session_for("alice").await;
    let res = client()
        .get(gw.url("/auth/logout"))
        .header("cookie", cookie(&id))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("set-cookie").is_none());
    let csp = res.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("form-action 'self'"), "{csp}");
    // So that the button's POST carries a real Origin.
    assert_eq!(res.headers()["referrer-policy"], "same-origin");
    let page = res.text().await.unwrap();
    assert!(
        page.contains(r#"<form method="post" action="/auth/logout"><button type="submit">Sign out</button></form>"#),
        "{page}"
    );
    assert_eq!(session_status(&gw, &id).await, 200, "still signed in");
}

#[tokio::test]
async fn a_same_origin_sign_out_post_ends_the_session() {
    let (_up, gw) = gateway(|_| {}).await;
    // Browsers send Origin with every POST (`null` from a page with `no-referrer`);
    // without a real one, Sec-Fetch-Site tells.
    let cases: &[&[(&str, &str)]] = &[
        &[("origin", PUBLIC)],
        &[("sec-fetch-site", "same-origin")],
        &[("origin", "null"), ("sec-fetch-site", "same-origin")],
    ];
    for headers in cases {
        let id = gw.session_for("alice").await;
        let mut req = client()
            .post(gw.url("/auth/logout"))
            .header("cookie", cookie(&id));
        for (k, v) in *headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 303, "{headers:?}");
        let cleared = res.headers().get_all("set-cookie").iter().any(|c| {
            let c = c.to_str().unwrap();
            c.starts_with(&format!("{COOKIE}=")) && c.contains("Max-Age=0")
        });
        assert!(cleared, "{headers:?}");
        assert_ne!(session_status(&gw, &id).await, 200, "{headers:?}");
    }
}

// === /auth/frontchannel-logout ===

async fn frontchannel(gw: &TestGateway, query: &str) -> u16 {
    client()
        .get(gw.url(&format!("/auth/frontchannel-logout?{query}")))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_frontchannel_logout_naming_another_issuer_is_refused() {
    let (_up, gw) = gateway(|_| {}).await;
    let id = gw.session_for("alice").await;
    let other = "https://login.microsoftonline.com/99999999-2222-3333-4444-555555555555/v2.0";
    let q = format!("sid=sid-alice&iss={}", urlencode(other));
    assert_eq!(frontchannel(&gw, &q).await, 400);
    assert_eq!(session_status(&gw, &id).await, 200, "nothing ended");
    // The configured tenant's issuer (config_text's authority) is taken.
    let ours = format!("http://127.0.0.1:9/{TENANT}/v2.0");
    let q = format!("sid=sid-alice&iss={}", urlencode(&ours));
    assert_eq!(frontchannel(&gw, &q).await, 200);
    assert_ne!(session_status(&gw, &id).await, 200, "ended");
}

#[tokio::test]
async fn a_flood_of_frontchannel_logouts_gets_429() {
    let (_up, gw) = gateway(|c| c.server.login_rate_limit = 5).await;
    for i in 0..5 {
        assert_eq!(frontchannel(&gw, &format!("sid=guess-{i}")).await, 200);
    }
    assert_eq!(frontchannel(&gw, "sid=guess-5").await, 429);
    // A budget of its own: the flood does not lock the address out of signing in.
    let res = client().get(gw.url("/auth/login")).send().await.unwrap();
    assert_ne!(res.status(), 429);
}

#[tokio::test]
async fn a_frontchannel_logout_that_matches_nothing_invalidates_nothing() {
    let (_up, gw) = gateway(|_| {}).await;
    let id = gw.session_for("alice").await;
    let before = gw.app.sessions.revocations();
    assert_eq!(frontchannel(&gw, "sid=nobody-has-this-sid").await, 200);
    assert_eq!(
        gw.app.sessions.revocations(),
        before,
        "no store write, no session-cache invalidation"
    );
    assert_eq!(session_status(&gw, &id).await, 200);
    // A matching sid still ends its sessions.
    assert_eq!(frontchannel(&gw, "sid=sid-alice").await, 200);
    assert_eq!(gw.app.sessions.revocations(), before + 1);
    assert_ne!(session_status(&gw, &id).await, 200);
}

// === log forging ===

/// A callback error that tries to start log lines of its own: LF, CR, U+2028, NEL (C1)
/// and an ANSI escape.
const FORGED_ERROR: &str = "x%0A2026-12-03T06:00:00.000000Z%20%20INFO%20pbxgate::auth:%20signed%20in%20upn=admin@contoso.com\
                            %0DFORGED-CR%E2%80%A8FORGED-LS%C2%85FORGED-NEL%1B%5B2J";

fn write_config(dir: &Path, upstream: &str, extra: &str) -> PathBuf {
    let path = dir.join("pbxgate.toml");
    std::fs::write(&path, config_text(upstream, dir, extra)).unwrap();
    path
}

/// Sends the forged callback and returns the log once it holds the refusal.
async fn forge(addr: std::net::SocketAddr, log: &Path) -> String {
    let res = client()
        .get(format!("http://{addr}/auth/callback?error={FORGED_ERROR}"))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_client_error(), "{}", res.status());
    for _ in 0..100 {
        let text = std::fs::read_to_string(log).unwrap();
        if text.contains("sign-in refused") {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "no refusal logged:\n{}",
        std::fs::read_to_string(log).unwrap()
    );
}

fn assert_no_raw_line_breakers(log: &str) {
    for c in ['\r', '\u{2028}', '\u{2029}', '\u{85}', '\u{1b}'] {
        assert!(!log.contains(c), "raw {c:?} in the log:\n{log}");
    }
}

#[tokio::test]
async fn a_forged_callback_error_stays_on_its_text_log_line() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Process::serve(
        &write_config(dir.path(), &up.url(), ""),
        &dir.path().join("gw.log"),
    );
    let log = forge(gw.addr, &gw.log).await;
    for line in log.lines() {
        assert!(
            !line.starts_with("2026-12-03T06:00:00.000000Z") && !line.starts_with("FORGED"),
            "forged line in the log:\n{log}"
        );
    }
    assert_no_raw_line_breakers(&log);
    let refused = log.lines().find(|l| l.contains("sign-in refused")).unwrap();
    assert!(
        refused.contains(r"x\n2026-12-03T06:00:00.000000Z  INFO pbxgate::auth: signed in")
            && refused.contains(r"\rFORGED-CR\u2028FORGED-LS\u0085FORGED-NEL\u001b[2J"),
        "escaped, not dropped: {refused}"
    );
}

#[tokio::test]
async fn a_forged_callback_error_stays_inside_its_json_log_object() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Process::serve_json(
        &write_config(dir.path(), &up.url(), "[log]\nformat = \"json\"\n"),
        &dir.path().join("gw.log"),
    );
    let log = forge(gw.addr, &gw.log).await;
    assert_no_raw_line_breakers(&log);
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let refused = events
        .iter()
        .find(|e| e["message"] == "sign-in refused")
        .unwrap();
    let error = refused["error"].as_str().unwrap();
    assert!(
        error.contains("x\n2026-12-03T06:00:00") && error.contains("\u{2028}FORGED-LS"),
        "the value survives, escaped in the line only: {error:?}"
    );
}

// === file modes ===

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[cfg(unix)]
#[tokio::test]
async fn the_demo_keeps_its_config_and_store_to_its_owner_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // An earlier demo's config, readable by all: rewriting it must close it.
    let config = dir.path().join("pbxgate.toml");
    std::fs::write(&config, "# old\n").unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let log = dir.path().join("demo.log");
    // umask 000: every mode below is pbxgate's own choice.
    let mut child = Command::new("sh")
        .args(["-c", "umask 000 && exec \"$@\"", "sh", binary(), "demo"])
        .args(["--listen", &format!("127.0.0.1:{port}"), "--dir"])
        .arg(dir.path())
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let ca_path = dir.path().join("tls/ca.pem");
    let mut ready = false;
    for _ in 0..300 {
        if let Ok(ca) = std::fs::read_to_string(&ca_path)
            && let Ok(res) = client_trusting(&ca)
                .get(format!("https://localhost:{port}/readyz"))
                .send()
                .await
        {
            ready = res.status() == 200;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let files = [
        "pbxgate.toml",
        "pbxgate.db",
        "pbxgate.db-wal",
        "pbxgate.db-shm",
    ];
    let modes: Vec<_> = files.iter().map(|f| mode(&dir.path().join(f))).collect();
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready, "{}", std::fs::read_to_string(&log).unwrap());
    for (f, m) in files.iter().zip(modes) {
        assert_eq!(m, 0o600, "{f} has mode {m:o}");
    }
}

#[cfg(unix)]
#[tokio::test]
async fn secret_files_others_can_read_are_named_in_a_warning_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("entra-secret");
    std::fs::write(&secret, "entra-secret-value\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    // A store an older version (or a copy) left open to others.
    let store = dir.path().join("pbxgate.db");
    std::fs::write(&store, "").unwrap();
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o640)).unwrap();
    let text = config_text(&up.url(), dir.path(), "").replace(
        "client_secret = \"entra-secret-value\"",
        &format!("client_secret_file = {:?}", secret.display().to_string()),
    );
    let config = dir.path().join("pbxgate.toml");
    std::fs::write(&config, text).unwrap();
    let gw = Process::serve(&config, &dir.path().join("gw.log"));
    let log = std::fs::read_to_string(&gw.log).unwrap();
    let warnings = |path: &Path, mode: &str| {
        log.lines()
            .filter(|l| {
                l.contains("WARN")
                    && l.contains("readable by group or others")
                    && l.contains(&path.display().to_string())
                    && l.contains(&format!("mode={mode}"))
            })
            .count()
    };
    assert_eq!(warnings(&secret, "0644"), 1, "{log}");
    assert_eq!(warnings(&store, "0640"), 1, "{log}");
    assert!(!log.contains("entra-secret-value"), "{log}");
}
