//! The real `pbxgate` binary: CLI contracts, restarts, memory under large transfers, the demo.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use pbxgate::clock::SystemClock;
use pbxgate::config::Config;
use pbxgate::session::{NewSession, Sessions};
use pbxgate::store::Store;

use crate::support::*;

fn write_config(dir: &std::path::Path, upstream: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.join("pbxgate.toml");
    std::fs::write(&path, config_text(upstream, dir, extra)).unwrap();
    path
}

#[test]
fn check_config_prints_the_effective_config_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "http://127.0.0.1:9", "");
    let out = Command::new(binary())
        .args(["check-config", "--config"])
        .arg(&path)
        .env("PBXGATE__SESSION__IDLE_TIMEOUT", "20m")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("idle_timeout = \"20m\""), "{stdout}");
    assert!(
        stdout.contains("recheck = \"5m\"") && stdout.contains("User.Read.All"),
        "the session recheck and the permission it needs are shown: {stdout}"
    );
    assert!(
        stdout.contains("/provisioning/"),
        "defaults are shown: {stdout}"
    );
    for secret in ["entra-secret-value", "xapi-secret-value"] {
        assert!(!stdout.contains(secret), "{secret} printed");
    }
}

#[test]
fn check_config_names_the_key_and_the_file_on_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "http://127.0.0.1:9",
        "[session]\nidle_timout = \"5m\"\n",
    );
    let out = Command::new(binary())
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}: key `session.idle_timout`", path.display())),
        "{stderr}"
    );

    // A bad value from the environment names the variable.
    let path = write_config(dir.path(), "http://127.0.0.1:9", "");
    let out = Command::new(binary())
        .args(["check-config", "--config"])
        .arg(&path)
        .env("PBXGATE__PBX__CONNECT_TIMEOUT", "quickly")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "environment variable PBXGATE__PBX__CONNECT_TIMEOUT: key `pbx.connect_timeout`"
        ),
        "{stderr}"
    );

    // A missing file says so.
    let out = Command::new(binary())
        .args(["check-config", "--config", "/nonexistent/pbxgate.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot read config file /nonexistent/pbxgate.toml")
    );
}

async fn new_session(config_path: &std::path::Path) -> String {
    let config = Config::load(config_path).unwrap();
    let store = Store::open(&config.store.url).await.unwrap();
    let sessions = Sessions::new(store.clone(), Arc::new(SystemClock), &config);
    let id = sessions
        .create(NewSession {
            user_key: format!("{TENANT}:alice"),
            upn: "alice@contoso.com".into(),
            extension: "101".into(),
            idp_sid: None,
            login_hint: None,
        })
        .await
        .unwrap();
    store.close().await;
    id
}

#[tokio::test]
async fn sessions_survive_a_restart_with_the_sqlite_store() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &up.url(), "");
    let first = Process::serve(&path, &dir.path().join("first.log"));
    let id = new_session(&path).await;
    let get = |addr: std::net::SocketAddr| {
        let id = id.clone();
        async move {
            client()
                .get(format!("http://{addr}/webclient/x"))
                .header("cookie", cookie(&id))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(get(first.addr).await, 200);
    let status = first.terminate();
    assert!(status.success(), "SIGTERM is a clean stop: {status}");

    let second = Process::serve(&path, &dir.path().join("second.log"));
    assert_eq!(get(second.addr).await, 200);
    let log = std::fs::read_to_string(&second.log).unwrap();
    assert!(!log.contains(&id), "session ids are never logged");
}

#[tokio::test]
async fn large_transfers_stream_through_the_binary_with_flat_memory() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &up.url(), "");
    let gw = Process::serve(&path, &dir.path().join("gw.log"));
    let id = new_session(&path).await;
    let baseline = gw.peak_rss_kib();
    const SIZE: u64 = 512 * 1024 * 1024;

    let res = client()
        .get(format!("http://{}/download/{SIZE}", gw.addr))
        .header("cookie", cookie(&id))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut total = 0u64;
    let mut stream = res.bytes_stream();
    while let Some(chunk) = stream.next().await {
        total += chunk.unwrap().len() as u64;
    }
    assert_eq!(total, SIZE);

    let piece = pattern_chunk();
    let count = SIZE / piece.len() as u64;
    let body =
        futures_util::stream::iter((0..count).map(move |_| Ok::<_, std::io::Error>(piece.clone())));
    let res = client()
        .post(format!("http://{}/upload", gw.addr))
        .header("cookie", cookie(&id))
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["bytes"], count * pattern_chunk().len() as u64);
    assert_eq!(body["intact"], true);

    let peak = gw.peak_rss_kib();
    eprintln!("pbxgate peak RSS: {baseline} KiB before, {peak} KiB after 2 × 512 MiB");
    assert!(
        peak < baseline + 32 * 1024,
        "memory grew with the body size: {baseline} KiB → {peak} KiB"
    );
}

#[tokio::test]
async fn demo_command_serves_the_sandbox_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let log = dir.path().join("demo.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(binary())
        .args(["demo", "--listen", &format!("127.0.0.1:{port}"), "--dir"])
        .arg(dir.path())
        .env("NO_COLOR", "1")
        .stderr(out)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ca_path = dir.path().join("tls/ca.pem");
    let mut ready = None;
    for _ in 0..200 {
        if let Ok(ca) = std::fs::read_to_string(&ca_path) {
            let c = client_trusting(&ca);
            if let Ok(res) = c
                .get(format!("https://localhost:{port}/readyz"))
                .send()
                .await
            {
                ready = Some((c, res.status()));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let banner = std::fs::read_to_string(&log).unwrap();
    let (c, status) = ready.unwrap_or_else(|| panic!("demo did not come up:\n{banner}"));
    assert_eq!(status, 200, "{banner}");

    // The banner's provisioning URL works without signing in; the webclient asks for sign-in.
    let url = banner
        .split_whitespace()
        .find(|w| w.contains("/provisioning/"))
        .unwrap_or_else(|| panic!("no provisioning URL in\n{banner}"));
    let res = c.get(url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("account.1.sip_server.1.address")
    );
    let res = c
        .get(format!("https://localhost:{port}/"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_redirection());
    assert!(
        dir.path().join("pbxgate.db").exists(),
        "embedded store in the demo dir"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_the_request_id() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &up.url(), "[log]\nformat = \"json\"\n");
    let gw = Process::serve_json(&path, &dir.path().join("gw.log"));
    let res = client()
        .get(format!(
            "http://{}/provisioning/s3cret/a.cfg?pass=hunter2",
            gw.addr
        ))
        .header("x-request-id", "json-log-test")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut access = None;
    for _ in 0..50 {
        let text = std::fs::read_to_string(&gw.log).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        access = lines.into_iter().find(|l| l["target"] == "pbxgate::access");
        if access.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let access = access.expect("an access log line");
    assert_eq!(access["span"]["request_id"], "json-log-test", "{access}");
    assert_eq!(
        access["path"], "/provisioning/…",
        "secret folder and query not logged"
    );
    let text = std::fs::read_to_string(&gw.log).unwrap();
    assert!(!text.contains("hunter2") && !text.contains("s3cret"));
}
