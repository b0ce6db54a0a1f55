//! Persistence behind one type: SQLite (an embedded file, the default) or PostgreSQL (shared by
//! several replicas), through sqlx's `Any` driver so that every query is written once.
//!
//! The SQL in `migrations/` and here keeps to the common subset of both dialects: `$N`
//! placeholders, `TEXT`/`BIGINT` columns, Unix-second timestamps. A migration that ever needs
//! dialect-specific SQL gets a per-backend variant in [`migrator`].
//!
//! Each stored type lives in its own module with its row mapping and queries, all as methods
//! of [`Store`]; this module opens and migrates the store.

use std::borrow::Cow;
use std::path::Path;
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::{Migration, MigrationType, Migrator};

mod api_token;
mod audit;
pub mod backup;
mod contacts;
mod directory;
mod leases;
mod login_attempts;
mod overrides;
mod probe;
mod replicas;
mod runs;
mod service_session;
mod sessions;
mod sync_state;

pub use api_token::ApiTokenRow;
pub use audit::AuditRow;
pub use contacts::ContactLink;
pub use directory::{DirectoryEntry, DirectoryRow};
pub use login_attempts::LoginAttempt;
pub use overrides::OverrideRow;
pub use replicas::ReplicaRow;
pub use runs::RunRow;
pub use service_session::ServiceSessionRow;
pub use sessions::{AdminSessionRow, LiveSession, SessionMeta, SessionRow};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store URL {0:?}: expected sqlite://PATH or postgres://…")]
    BadUrl(String),
    #[error("cannot create the directory for the SQLite file {path}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot create the SQLite file {path}")]
    CreateFile {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot open the store: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("store query failed: {0}")]
    Query(#[from] sqlx::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A handle to the store; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

fn migrator() -> Migrator {
    let m = |version, description: &'static str, sql: &'static str| {
        Migration::new(
            version,
            Cow::Borrowed(description),
            MigrationType::Simple,
            Cow::Borrowed(sql),
            false,
        )
    };
    Migrator {
        migrations: Cow::Owned(vec![
            m(
                1,
                "sessions",
                include_str!("../migrations/0001_sessions.sql"),
            ),
            m(2, "sign in", include_str!("../migrations/0002_sign_in.sql")),
            m(3, "sync", include_str!("../migrations/0003_sync.sql")),
            m(
                4,
                "contacts",
                include_str!("../migrations/0004_contacts.sql"),
            ),
            m(
                5,
                "sync items",
                include_str!("../migrations/0005_sync_items.sql"),
            ),
            m(
                6,
                "pbx service session",
                include_str!("../migrations/0006_pbx_service_session.sql"),
            ),
            m(
                7,
                "pbx api token",
                include_str!("../migrations/0007_pbx_api_token.sql"),
            ),
            m(9, "admin", include_str!("../migrations/0009_admin.sql")),
        ]),
        ..Migrator::DEFAULT
    }
}

impl Store {
    /// Opens (creating an SQLite file and its directory if needed) and migrates the store.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let store = Self::connect(url).await?;
        migrator().run(&store.pool).await?;
        Ok(store)
    }

    /// Opens the store without migrating it (`doctor` reports pending migrations instead).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::BadUrl(url.to_string()));
        };
        let url = match backend {
            Backend::Sqlite => prepare_sqlite(url)?,
            Backend::Postgres => url.to_string(),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 4,
                Backend::Postgres => 16,
            })
            .acquire_timeout(acquire_timeout(backend))
            // A connection an outage broke is found out and replaced before a query gets it,
            // so the pool recovers by itself when the database is back.
            .test_before_acquire(true)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers proceed during a write; NORMAL is durable in WAL mode.
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout = 5000")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(StoreError::Connect)?;
        Ok(Self { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A round trip to the database, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// How long a query waits for a pooled connection, which includes connecting anew: when
/// PostgreSQL is stopped, sqlx retries a refused connection until this runs out, so it bounds
/// how long a request that needs the store (a session not in the cache, a sign-in) waits
/// before its 503. Sixteen connections for queries of milliseconds are never all busy for
/// seconds unless the server is gone. SQLite keeps a generous wait: its writers queue on one
/// file, and on a loaded host a short wait failed a sync run that would have succeeded.
fn acquire_timeout(backend: Backend) -> Duration {
    match backend {
        Backend::Sqlite => Duration::from_secs(15),
        Backend::Postgres => Duration::from_secs(5),
    }
}

/// Makes sure the SQLite file can be created: its directory exists, the file does with mode
/// 0600 (SQLite gives its `-wal` and `-shm` files the database's mode), and `mode=rwc` is set.
fn prepare_sqlite(url: &str) -> Result<String, StoreError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| StoreError::BadUrl(url.to_string()))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path == ":memory:" {
        return Ok(url.to_string());
    }
    if let Some(dir) = Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: path.to_string(),
            source,
        })?;
    }
    if !query.contains("mode=") || query.contains("mode=rwc") {
        create_private(Path::new(path)).map_err(|source| StoreError::CreateFile {
            path: path.to_string(),
            source,
        })?;
    }
    let query = if query.contains("mode=") {
        query.to_string()
    } else if query.is_empty() {
        "mode=rwc".to_string()
    } else {
        format!("{query}&mode=rwc")
    };
    Ok(format!("sqlite://{path}?{query}"))
}

/// Creates the SQLite file readable by its owner only (it holds sessions and sealed
/// secrets), whatever the umask; warns when an existing one is open to others.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        match options.open(path) {
            // The umask may have taken bits away; 0600 exactly is what SQLite copies.
            Ok(file) => file.set_permissions(std::fs::Permissions::from_mode(0o600)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if let Some(mode) = crate::config::loose_mode(path) {
                    tracing::warn!(
                        file = %path.display(),
                        mode = %format_args!("{mode:04o}"),
                        "the SQLite store is readable by group or others; chmod 600 it"
                    );
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
    #[cfg(not(unix))]
    match options.open(path) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}
