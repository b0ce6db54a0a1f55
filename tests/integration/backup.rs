//! `pbxgate store backup`: the real binary copies the SQLite store of a running gateway.

use std::os::unix::fs::PermissionsExt;
use std::process::Output;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use pbxgate::config::Config;
use pbxgate::session::{NewSession, Sessions};
use pbxgate::store::Store;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::support::*;

fn write_config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("pbxgate.toml");
    std::fs::write(&path, config_text("http://127.0.0.1:9", dir, extra)).unwrap();
    path
}

async fn run_backup(config: &std::path::Path, dest: &std::path::Path) -> Output {
    let mut cmd = std::process::Command::new(binary());
    cmd.args(["store", "backup"])
        .arg(dest)
        .arg("--config")
        .arg(config);
    // Off the runtime's thread: the gateway goes on writing meanwhile.
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn new_session(n: usize) -> NewSession {
    NewSession {
        user_key: format!("{TENANT}:user-{n}"),
        upn: format!("user-{n}@contoso.com"),
        extension: "101".into(),
        idp_sid: None,
        login_hint: None,
    }
}

#[tokio::test]
async fn backup_of_a_store_in_use_holds_its_sessions_and_is_intact() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path(), "");
    let gw = TestGateway::start_with(Config::load(&config_path).unwrap()).await;

    // A long reader (a sync run, say) holds a snapshot from before any session, so SQLite
    // cannot checkpoint: every session below is in the -wal file only, where a copy of the
    // database file alone would miss them.
    let db = format!("sqlite://{}", dir.path().join("pbxgate.db").display());
    let mut reader = SqliteConnectOptions::from_str(&db)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut snapshot = reader.begin().await.unwrap();
    let none: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions")
        .fetch_one(&mut *snapshot)
        .await
        .unwrap();
    assert_eq!(none, 0);

    // The gateway keeps creating sessions while the backup runs.
    let created = Arc::new(tokio::sync::Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (app, created, stop) = (gw.app.clone(), created.clone(), stop.clone());
        async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = app.sessions.create(new_session(n)).await.expect("write");
                created.lock().await.push(id);
                n += 1;
            }
        }
    });
    while created.lock().await.len() < 200 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let before: Vec<String> = created.lock().await.clone();

    let dest = dir.path().join("backup.db");
    let out = run_backup(&config_path, &dest).await;
    let during = created.lock().await.len();
    stop.store(true, Ordering::Relaxed);
    writer
        .await
        .expect("the gateway's writes never failed during the backup");
    let after = created.lock().await.len();
    snapshot.rollback().await.unwrap();
    reader.close().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("wrote {}", dest.display())) && stdout.contains("schema version"),
        "it says what it wrote: {stdout}"
    );
    assert!(
        during > before.len(),
        "sessions were created while the backup ran"
    );
    let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the backup holds secrets");

    // The copy is intact and holds every session made before it started.
    let mut conn = SqliteConnectOptions::from_str(&format!("sqlite://{}", dest.display()))
        .unwrap()
        .read_only(true)
        .connect()
        .await
        .unwrap();
    let check: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(check, ["ok"]);
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions")
        .fetch_one(&mut conn)
        .await
        .expect("the copy has the sessions table");
    conn.close().await.unwrap();
    let clock = gw.clock.clone();
    assert!(
        (before.len() as i64..=after as i64).contains(&rows),
        "{rows} sessions in the copy; {} before it, {after} after",
        before.len()
    );
    gw.stop().await;

    // pbxgate can run on the copy: the sessions made before it are valid there.
    let store = Store::open(&format!("sqlite://{}", dest.display()))
        .await
        .unwrap();
    let config = Config::load(&config_path).unwrap();
    let sessions = Sessions::new(store.clone(), Arc::new(clock), &config);
    for id in [&before[0], &before[before.len() - 1]] {
        assert!(sessions.validate(id).await.unwrap().is_ok());
    }
    store.close().await;
}

#[tokio::test]
async fn backup_refuses_an_existing_path() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path(), "");
    Store::open(&format!(
        "sqlite://{}",
        dir.path().join("pbxgate.db").display()
    ))
    .await
    .unwrap()
    .close()
    .await;
    let dest = dir.path().join("keep.db");
    std::fs::write(&dest, b"an older backup").unwrap();
    let out = run_backup(&config_path, &dest).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(std::fs::read(&dest).unwrap(), b"an older backup");
}

#[tokio::test]
async fn backup_of_a_postgresql_store_points_to_pg_dump() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path(), "");
    let text = std::fs::read_to_string(&config_path).unwrap().replace(
        &format!("sqlite://{}", dir.path().join("pbxgate.db").display()),
        "postgres://pbxgate:secret-pw@127.0.0.1:9/pbxgate",
    );
    std::fs::write(&config_path, text).unwrap();
    let dest = dir.path().join("backup.db");
    let out = run_backup(&config_path, &dest).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pg_dump"), "{stderr}");
    assert!(
        !stderr.contains("secret-pw"),
        "the URL's password is not shown"
    );
    assert!(!dest.exists());
}
