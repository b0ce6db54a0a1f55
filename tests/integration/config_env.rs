//! Configuring the real binary (issue 16): the environment overlay typed like the file,
//! secrets from files, `PBXGATE_CONFIG`, and which build runs (`--version`, `/metrics`).

use std::process::{Command, Output};

use pbxgate::metrics::{BUILD_COMMIT, VERSION};

use crate::support::*;

/// `pbxgate ARGS` with `env`, run in `dir` (so the default config path finds nothing).
fn pbxgate(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(binary());
    cmd.args(args).current_dir(dir).env_remove("PBXGATE_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn write_config(dir: &std::path::Path, edit: impl FnOnce(String) -> String) -> String {
    let path = dir.join("pbxgate.toml");
    std::fs::write(&path, edit(config_text("http://127.0.0.1:9", dir, ""))).unwrap();
    path.display().to_string()
}

#[test]
fn env_overlay_sets_numbers_lists_numeric_strings_and_secret_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), |t| {
        t.replace("client_secret = \"xapi-secret-value\"\n", "")
    });
    let secret = dir.path().join("xapi-secret");
    std::fs::write(&secret, "secret-from-a-file\n").unwrap();
    let secret = secret.display().to_string();
    let out = pbxgate(
        dir.path(),
        &["check-config", "--config", &path],
        &[
            ("PBXGATE__SERVER__LOGIN_RATE_LIMIT", "60"),
            ("PBXGATE__SERVER__TRUSTED_PROXIES", "[\"10.0.0.0/8\"]"),
            ("PBXGATE__PBX__SERVICE_EXTENSION", "999"),
            ("PBXGATE__PBX__RANDOMIZE_WEB_PASSWORDS", "true"),
            ("PBXGATE__PBX__CLIENT_SECRET_FILE", &secret),
        ],
    );
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    for line in [
        "login_rate_limit = 60\n".to_string(),
        "trusted_proxies = [\"10.0.0.0/8\"]\n".to_string(),
        "service_extension = \"999\"\n".to_string(),
        "randomize_web_passwords = true\n".to_string(),
        format!("client_secret_file = {secret:?}\n"),
    ] {
        assert!(all.contains(&line), "{line}: {all}");
    }
    assert!(!all.contains("secret-from-a-file"), "{all}");

    // A value of the wrong type names the variable, the key and the type expected.
    let out = pbxgate(
        dir.path(),
        &["check-config", "--config", &path],
        &[
            ("PBXGATE__SERVER__LOGIN_RATE_LIMIT", "lots"),
            ("PBXGATE__PBX__CLIENT_SECRET_FILE", &secret),
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains(
            "environment variable PBXGATE__SERVER__LOGIN_RATE_LIMIT: key \
             `server.login_rate_limit`: invalid type: string \"lots\", expected u32"
        ),
        "{}",
        text(&out)
    );
}

#[test]
fn pbxgate_config_names_the_config_file_and_the_flag_wins() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), |t| t);
    let out = pbxgate(
        dir.path(),
        &["check-config"],
        &[("PBXGATE_CONFIG", path.as_str())],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).starts_with(&format!("# {path}: valid.")));

    let out = pbxgate(
        dir.path(),
        &["check-config", "--config", &path],
        &[("PBXGATE_CONFIG", "/nonexistent/pbxgate.toml")],
    );
    assert!(out.status.success(), "--config wins: {}", text(&out));

    let out = pbxgate(
        dir.path(),
        &["check-config"],
        &[("PBXGATE_CONFIG", "/nonexistent/pbxgate.toml")],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("cannot read config file /nonexistent/pbxgate.toml"),
        "{}",
        text(&out)
    );

    for command in ["serve", "check-config"] {
        let help = text(&pbxgate(dir.path(), &[command, "--help"], &[]));
        assert!(help.contains("[env: PBXGATE_CONFIG="), "{command}: {help}");
    }
}

#[test]
fn version_names_the_build_commit() {
    let dir = tempfile::tempdir().unwrap();
    let out = pbxgate(dir.path(), &["--version"], &[]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("pbxgate {VERSION} (commit {BUILD_COMMIT})\n")
    );
    assert_eq!(VERSION, env!("CARGO_PKG_VERSION"));
    // Built from this checkout (no packaging override): the commit is HEAD's.
    if std::env::var_os("PBXGATE_BUILD_COMMIT").is_none() {
        let head = Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(head.status.success(), "tests run in a git checkout");
        assert_eq!(BUILD_COMMIT, String::from_utf8_lossy(&head.stdout).trim());
    }
}

#[tokio::test]
async fn metrics_name_the_running_build() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), |t| t);
    let gateway = Process::serve(path.as_ref(), &dir.path().join("log"));
    let body = client()
        .get(format!("http://{}/metrics", gateway.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = format!("pbxgate_build_info{{version=\"{VERSION}\",commit=\"{BUILD_COMMIT}\"}} 1\n");
    assert!(body.contains(&line), "{line}: {body}");
    assert!(body.contains("# TYPE pbxgate_build_info gauge\n"), "{body}");
}
