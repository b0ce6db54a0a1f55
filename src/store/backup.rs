//! `pbxgate store backup PATH`: a consistent copy of the SQLite store while pbxgate runs.
//!
//! `VACUUM INTO` reads the database inside one read transaction, so the copy is a snapshot
//! even while the gateway writes (in WAL mode writers are not blocked by it), and it is a
//! plain database file that `pbxgate serve` can open as its store. The source is opened
//! without migrating: a newer binary must not change the schema of a store that an older
//! gateway is running on. PostgreSQL is left to its own tool, `pg_dump`.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "the store is PostgreSQL: pbxgate backs up only its SQLite store; use pg_dump, e.g. \
         `pg_dump --format=custom --file=pbxgate.dump \"$DATABASE_URL\"` (restore with pg_restore)"
    )]
    Postgres,
    #[error("store URL {0:?}: expected sqlite://PATH (an in-memory store has nothing to back up)")]
    BadUrl(String),
    #[error("no SQLite store at {0}: nothing to back up")]
    NoStore(String),
    #[error("{0} already exists: pbxgate writes a backup only to a new file")]
    Exists(PathBuf),
    #[error("backup path {0} is not valid UTF-8")]
    BadPath(PathBuf),
    #[error("cannot create the backup file {path}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the SQLite store {path}")]
    Open { path: String, source: sqlx::Error },
    #[error("copying the store into {path} failed")]
    Copy { path: PathBuf, source: sqlx::Error },
    #[error("cannot write the backup file {path} to disk")]
    Sync {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the backup {path} fails its integrity check: {report}")]
    Corrupt { path: PathBuf, report: String },
}

/// What [`backup`] wrote.
#[derive(Debug)]
pub struct Backup {
    pub path: PathBuf,
    pub source: String,
    pub bytes: u64,
    /// The newest migration applied in the copy (`None` for a store never migrated).
    pub schema_version: Option<i64>,
}

impl std::fmt::Display for Backup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "wrote {} ({} bytes, mode 0600): a consistent copy of the SQLite store {}, \
             schema version {}, integrity check ok.\nTo restore: stop pbxgate, remove {}-wal \
             and {}-shm if they are there, put the copy in place of {}, start pbxgate.",
            self.path.display(),
            self.bytes,
            self.source,
            self.schema_version
                .map_or_else(|| "none".to_string(), |v| v.to_string()),
            self.source,
            self.source,
            self.source,
        )
    }
}

/// Copies the store at `store_url` into the new file `dest` (mode 0600) and checks the copy.
pub async fn backup(store_url: &str, dest: &Path) -> Result<Backup, BackupError> {
    let source = sqlite_path(store_url)?;
    if !Path::new(&source).is_file() {
        return Err(BackupError::NoStore(source));
    }
    let dest_str = dest
        .to_str()
        .ok_or_else(|| BackupError::BadPath(dest.to_path_buf()))?;
    create_private(dest)?;
    let result = copy(store_url, &source, dest, dest_str).await;
    if result.is_err() {
        // Never leave a half-written or empty file that looks like a backup.
        let _ = std::fs::remove_file(dest);
    }
    result
}

async fn copy(
    store_url: &str,
    source: &str,
    dest: &Path,
    dest_str: &str,
) -> Result<Backup, BackupError> {
    let open = |e| BackupError::Open {
        path: source.to_string(),
        source: e,
    };
    let options = SqliteConnectOptions::from_str(store_url)
        .map_err(open)?
        .create_if_missing(false)
        .busy_timeout(Duration::from_secs(5));
    let mut conn = options.connect().await.map_err(open)?;
    // The target is the empty file made above: SQLite fills it and keeps its mode.
    let copied = sqlx::query("VACUUM INTO ?1")
        .bind(dest_str)
        .execute(&mut conn)
        .await;
    let _ = conn.close().await;
    copied.map_err(|source| BackupError::Copy {
        path: dest.to_path_buf(),
        source,
    })?;
    std::fs::File::open(dest)
        .and_then(|f| f.sync_all())
        .map_err(|source| BackupError::Sync {
            path: dest.to_path_buf(),
            source,
        })?;
    let schema_version = check(dest, dest_str).await?;
    let bytes = std::fs::metadata(dest).map(|m| m.len()).unwrap_or(0);
    Ok(Backup {
        path: dest.to_path_buf(),
        source: source.to_string(),
        bytes,
        schema_version,
    })
}

/// Opens the copy read-only: `PRAGMA integrity_check`, then the newest applied migration.
async fn check(dest: &Path, dest_str: &str) -> Result<Option<i64>, BackupError> {
    let fail = |source| BackupError::Copy {
        path: dest.to_path_buf(),
        source,
    };
    let mut conn = SqliteConnectOptions::new()
        .filename(dest_str)
        .read_only(true)
        .connect()
        .await
        .map_err(fail)?;
    let report: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut conn)
        .await
        .map_err(fail)?;
    if report != ["ok"] {
        let _ = conn.close().await;
        return Err(BackupError::Corrupt {
            path: dest.to_path_buf(),
            report: report.join("; "),
        });
    }
    let version: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .unwrap_or(None);
    let _ = conn.close().await;
    Ok(version)
}

/// The file of an `sqlite:` URL; PostgreSQL and in-memory stores are refused.
fn sqlite_path(url: &str) -> Result<String, BackupError> {
    if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        return Err(BackupError::Postgres);
    }
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| BackupError::BadUrl(url.to_string()))?;
    let path = rest.split_once('?').map_or(rest, |(p, _)| p);
    if path.is_empty() || path == ":memory:" || rest.contains("mode=memory") {
        return Err(BackupError::BadUrl(url.to_string()));
    }
    Ok(path.to_string())
}

/// Creates `path` empty with mode 0600 whatever the umask (the copy holds sealed secrets and
/// session data), refusing one that exists.
fn create_private(path: &Path) -> Result<(), BackupError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let file = options.open(path).map_err(|e| created(path, e))?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| created(path, e))
    }
    #[cfg(not(unix))]
    options.open(path).map(drop).map_err(|e| created(path, e))
}

fn created(path: &Path, e: std::io::Error) -> BackupError {
    if e.kind() == std::io::ErrorKind::AlreadyExists {
        BackupError::Exists(path.to_path_buf())
    } else {
        BackupError::Create {
            path: path.to_path_buf(),
            source: e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sqlite_files_are_backed_up() {
        assert_eq!(
            sqlite_path("sqlite://data/pbxgate.db?mode=rwc").unwrap(),
            "data/pbxgate.db"
        );
        assert_eq!(
            sqlite_path("sqlite:/var/lib/x.db").unwrap(),
            "/var/lib/x.db"
        );
        assert!(matches!(
            sqlite_path("postgres://u:p@h/db"),
            Err(BackupError::Postgres)
        ));
        assert!(matches!(
            sqlite_path("sqlite::memory:"),
            Err(BackupError::BadUrl(_))
        ));
    }
}
