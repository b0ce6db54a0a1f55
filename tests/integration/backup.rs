//! `pbxgate store backup`: the real binary copies the SQLite store of a running gateway; and
//! what `docs/deployment.md` ("Upgrading") promises about migrations.

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

/// An older binary on a store a newer one migrated refuses to start and changes nothing
/// (sqlx refuses applied migrations it does not know), as the upgrade guide says.
#[test]
fn a_store_from_a_newer_version_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path(), "");
    let db = dir.path().join("pbxgate.db");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = Store::open(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        store.close().await;
        let mut conn = SqliteConnectOptions::new()
            .filename(&db)
            .connect()
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations \
             (version, description, installed_on, success, checksum, execution_time) \
             VALUES (999, 'from a newer pbxgate', CURRENT_TIMESTAMP, 1, x'00', 1)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
    });
    let log = dir.path().join("serve.log");
    let mut child = std::process::Command::new(binary())
        .args(["serve", "--config"])
        .arg(&config_path)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // A binary that accepted the store would serve until killed.
    let mut status = None;
    for _ in 0..400 {
        status = child.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(status.is_some_and(|s| !s.success()), "{stderr}");
    assert!(
        stderr.contains("migration 999 was previously applied but is missing"),
        "{stderr}"
    );
    assert!(!stderr.contains("listening"), "{stderr}");
}

/// Replicas starting at once on a fresh PostgreSQL database all start: sqlx's advisory lock
/// lets one apply the migrations while the others wait, then find them applied.
#[tokio::test]
async fn replicas_starting_at_once_on_postgresql_migrate_once() {
    let pg = PgDatabase::create().await;
    let opens = (0..4).map(|_| {
        let url = pg.url.clone();
        tokio::spawn(async move { Store::open(&url).await })
    });
    for open in opens.collect::<Vec<_>>() {
        open.await
            .unwrap()
            .expect("every replica starts")
            .close()
            .await;
    }
    let mut conn = <sqlx::PgConnection as Connection>::connect(&pg.url)
        .await
        .unwrap();
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    conn.close().await.unwrap();
    let shipped = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("sql".as_ref()))
        .count();
    assert_eq!(
        versions.len(),
        shipped,
        "each migration applied once: {versions:?}"
    );
}
