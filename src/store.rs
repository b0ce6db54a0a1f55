//! Persistence behind one type: SQLite (an embedded file, the default) or PostgreSQL (shared by
//! several replicas), through sqlx's `Any` driver so that every query is written once.
//!
//! The SQL in `migrations/` and here keeps to the common subset of both dialects: `$N`
//! placeholders, `TEXT`/`BIGINT` columns, Unix-second timestamps. A migration that ever needs
//! dialect-specific SQL gets a per-backend variant in [`migrator`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow, install_default_drivers};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, FromRow, Row};

use crate::clock::UnixTime;

mod contacts;
pub use contacts::ContactLink;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store URL {0:?}: expected sqlite://PATH or postgres://…")]
    BadUrl(String),
    #[error("cannot create the directory for the SQLite file {path}")]
    CreateDir {
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

/// One row of `sessions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub id_hash: String,
    pub user_key: String,
    pub upn: String,
    pub extension: String,
    pub idp_sid: Option<String>,
    pub created_at: UnixTime,
    pub last_seen_at: UnixTime,
    pub expires_at: UnixTime,
    pub revoked_at: Option<UnixTime>,
    /// Entra's `login_hint` claim, sent back as `logout_hint` on sign-out.
    pub login_hint: Option<String>,
}

/// The columns of `sessions`, in the order [`SessionRow::from_row`] reads them.
const SESSION_COLUMNS: &str = "id_hash, user_key, upn, extension, idp_sid, created_at, \
     last_seen_at, expires_at, revoked_at, login_hint";

impl FromRow<'_, AnyRow> for SessionRow {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id_hash: r.try_get(0)?,
            user_key: r.try_get(1)?,
            upn: r.try_get(2)?,
            extension: r.try_get(3)?,
            idp_sid: r.try_get(4)?,
            created_at: r.try_get(5)?,
            last_seen_at: r.try_get(6)?,
            expires_at: r.try_get(7)?,
            revoked_at: r.try_get(8)?,
            login_hint: r.try_get(9)?,
        })
    }
}

/// A sign-in in progress: what `/auth/callback` must find to accept Entra's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginAttempt {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub return_to: String,
    pub created_at: UnixTime,
}

/// The columns of `login_attempts`, in the order [`LoginAttempt::from_row`] reads them.
const LOGIN_ATTEMPT_COLUMNS: &str = "state, nonce, pkce_verifier, return_to, created_at";

impl FromRow<'_, AnyRow> for LoginAttempt {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            state: r.try_get(0)?,
            nonce: r.try_get(1)?,
            pkce_verifier: r.try_get(2)?,
            return_to: r.try_get(3)?,
            created_at: r.try_get(4)?,
        })
    }
}

/// One row of `directory_users`: an Entra user and their 3CX extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryRow {
    pub tenant_id: String,
    pub object_id: String,
    pub upn: String,
    pub display_name: String,
    pub extension: String,
    pub pbx_user_id: i64,
    pub source: String,
    pub managed_password: Option<String>,
    pub updated_at: UnixTime,
    /// The user sync created this extension (only such extensions are ever deleted).
    pub created_by_pbxgate: bool,
    /// When the user sync found the user disabled or deleted in Entra.
    pub removed_at: Option<UnixTime>,
}

/// The columns of `directory_users`, in the order [`DirectoryRow::from_row`] reads them.
const DIRECTORY_COLUMNS: &str = "tenant_id, object_id, upn, display_name, extension, \
     pbx_user_id, source, managed_password, updated_at, created_by_pbxgate, removed_at";

impl FromRow<'_, AnyRow> for DirectoryRow {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            tenant_id: r.try_get(0)?,
            object_id: r.try_get(1)?,
            upn: r.try_get(2)?,
            display_name: r.try_get(3)?,
            extension: r.try_get(4)?,
            pbx_user_id: r.try_get(5)?,
            source: r.try_get(6)?,
            managed_password: r.try_get(7)?,
            updated_at: r.try_get(8)?,
            created_by_pbxgate: r.try_get::<i64, _>(9)? != 0,
            removed_at: r.try_get(10)?,
        })
    }
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
        ]),
        ..Migrator::DEFAULT
    }
}

impl Store {
    /// Opens (creating an SQLite file and its directory if needed) and migrates the store.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
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
            // Generous: on a loaded host a short wait fails a sync run that would succeed.
            .acquire_timeout(Duration::from_secs(15))
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
        migrator().run(&pool).await?;
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

    pub async fn insert_session(&self, s: &SessionRow) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO sessions ({SESSION_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        );
        sqlx::query(&sql)
            .bind(&s.id_hash)
            .bind(&s.user_key)
            .bind(&s.upn)
            .bind(&s.extension)
            .bind(&s.idp_sid)
            .bind(s.created_at)
            .bind(s.last_seen_at)
            .bind(s.expires_at)
            .bind(s.revoked_at)
            .bind(&s.login_hint)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn session(&self, id_hash: &str) -> Result<Option<SessionRow>, StoreError> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id_hash = $1");
        let row = sqlx::query_as(&sql)
            .bind(id_hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row)
    }

    /// Moves `last_seen_at` forward (never back, whichever replica writes last).
    pub async fn touch_session(&self, id_hash: &str, now: UnixTime) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sessions SET last_seen_at = $1 WHERE id_hash = $2 AND last_seen_at < $1",
        )
        .bind(now)
        .bind(id_hash)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Revokes one session; returns whether a live one was found.
    pub async fn revoke_session(&self, id_hash: &str, now: UnixTime) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE sessions SET revoked_at = $1 WHERE id_hash = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(id_hash)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Revokes every live session of a user; returns how many.
    pub async fn revoke_user_sessions(
        &self,
        user_key: &str,
        now: UnixTime,
    ) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE sessions SET revoked_at = $1 WHERE user_key = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(user_key)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Revokes every live session started in Entra session `sid` (front-channel logout).
    pub async fn revoke_idp_sessions(&self, sid: &str, now: UnixTime) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE sessions SET revoked_at = $1 WHERE idp_sid = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(sid)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Deletes sessions that ended (expired, idle or revoked) before `cutoff`.
    pub async fn purge_sessions(
        &self,
        cutoff: UnixTime,
        idle_secs: i64,
    ) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "DELETE FROM sessions WHERE expires_at < $1 OR revoked_at < $1 \
             OR last_seen_at < $2",
        )
        .bind(cutoff)
        .bind(cutoff - idle_secs)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }
}

/// Makes sure the SQLite file can be created: its directory exists and `mode=rwc` is set.
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
    let query = if query.contains("mode=") {
        query.to_string()
    } else if query.is_empty() {
        "mode=rwc".to_string()
    } else {
        format!("{query}&mode=rwc")
    };
    Ok(format!("sqlite://{path}?{query}"))
}

impl Store {
    pub async fn insert_login_attempt(&self, a: &LoginAttempt) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO login_attempts ({LOGIN_ATTEMPT_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"
        );
        sqlx::query(&sql)
            .bind(&a.state)
            .bind(&a.nonce)
            .bind(&a.pkce_verifier)
            .bind(&a.return_to)
            .bind(a.created_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Removes and returns the attempt for `state`: a state works once, on every replica.
    pub async fn take_login_attempt(
        &self,
        state: &str,
    ) -> Result<Option<LoginAttempt>, StoreError> {
        let sql = format!(
            "DELETE FROM login_attempts WHERE state = $1 RETURNING {LOGIN_ATTEMPT_COLUMNS}"
        );
        let row = sqlx::query_as(&sql)
            .bind(state)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row)
    }

    /// Deletes attempts started before `cutoff` (abandoned sign-ins).
    pub async fn purge_login_attempts(&self, cutoff: UnixTime) -> Result<u64, StoreError> {
        let r = sqlx::query("DELETE FROM login_attempts WHERE created_at < $1")
            .bind(cutoff)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    pub async fn directory_user(
        &self,
        tenant_id: &str,
        object_id: &str,
    ) -> Result<Option<DirectoryRow>, StoreError> {
        let sql = format!(
            "SELECT {DIRECTORY_COLUMNS} FROM directory_users \
             WHERE tenant_id = $1 AND object_id = $2"
        );
        let row = sqlx::query_as(&sql)
            .bind(tenant_id)
            .bind(object_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row)
    }

    /// Every directory row of a tenant.
    pub async fn directory_users(&self, tenant_id: &str) -> Result<Vec<DirectoryRow>, StoreError> {
        let sql = format!("SELECT {DIRECTORY_COLUMNS} FROM directory_users WHERE tenant_id = $1");
        let rows = sqlx::query_as(&sql)
            .bind(tenant_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }

    /// Inserts or replaces a directory row (the managed password is kept unless given).
    pub async fn upsert_directory_user(&self, d: &DirectoryRow) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO directory_users ({DIRECTORY_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (tenant_id, object_id) DO UPDATE SET upn = $3, display_name = $4, \
             extension = $5, pbx_user_id = $6, source = $7, \
             managed_password = COALESCE($8, directory_users.managed_password), updated_at = $9, \
             created_by_pbxgate = $10, removed_at = $11"
        );
        sqlx::query(&sql)
            .bind(&d.tenant_id)
            .bind(&d.object_id)
            .bind(&d.upn)
            .bind(&d.display_name)
            .bind(&d.extension)
            .bind(d.pbx_user_id)
            .bind(&d.source)
            .bind(&d.managed_password)
            .bind(d.updated_at)
            .bind(d.created_by_pbxgate as i64)
            .bind(d.removed_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// A sync run as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRow {
    pub id: String,
    pub worker: String,
    pub mode: String,
    pub dry_run: bool,
    pub status: String,
    pub started_at: UnixTime,
    pub ended_at: Option<UnixTime>,
    pub planned: String,
    pub applied: String,
    pub errors: String,
    pub message: Option<String>,
}

/// The columns of `sync_runs`, in the order [`RunRow::from_row`] reads them.
const RUN_COLUMNS: &str = "id, worker, mode, dry_run, status, started_at, ended_at, \
     planned, applied, errors, message";

impl FromRow<'_, AnyRow> for RunRow {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: r.try_get(0)?,
            worker: r.try_get(1)?,
            mode: r.try_get(2)?,
            dry_run: r.try_get::<i64, _>(3)? != 0,
            status: r.try_get(4)?,
            started_at: r.try_get(5)?,
            ended_at: r.try_get(6)?,
            planned: r.try_get(7)?,
            applied: r.try_get(8)?,
            errors: r.try_get(9)?,
            message: r.try_get(10)?,
        })
    }
}

impl Store {
    /// Takes or renews the lease `name` for `holder` until `expires_at`; false when another
    /// holder's lease is still valid.
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now: UnixTime,
        expires_at: UnixTime,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = $2, expires_at = $3 \
             WHERE leases.expires_at < $4 OR leases.holder = $2",
        )
        .bind(name)
        .bind(holder)
        .bind(expires_at)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn insert_run(&self, r: &RunRow) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO sync_runs ({RUN_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        );
        sqlx::query(&sql)
            .bind(&r.id)
            .bind(&r.worker)
            .bind(&r.mode)
            .bind(r.dry_run as i64)
            .bind(&r.status)
            .bind(r.started_at)
            .bind(r.ended_at)
            .bind(&r.planned)
            .bind(&r.applied)
            .bind(&r.errors)
            .bind(&r.message)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn update_run(&self, r: &RunRow) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sync_runs SET status = $2, ended_at = $3, planned = $4, applied = $5, \
             errors = $6, message = $7 WHERE id = $1",
        )
        .bind(&r.id)
        .bind(&r.status)
        .bind(r.ended_at)
        .bind(&r.planned)
        .bind(&r.applied)
        .bind(&r.errors)
        .bind(&r.message)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The most recent runs of `worker`, newest first.
    pub async fn runs(&self, worker: &str, limit: i64) -> Result<Vec<RunRow>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM sync_runs WHERE worker = $1 \
             ORDER BY started_at DESC, id DESC LIMIT $2"
        );
        let rows = sqlx::query_as(&sql)
            .bind(worker)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }

    pub async fn state(&self, name: &str) -> Result<Option<String>, StoreError> {
        let value = sqlx::query_scalar("SELECT value FROM sync_state WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(value)
    }

    pub async fn set_state(
        &self,
        name: &str,
        value: Option<&str>,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        match value {
            Some(v) => {
                sqlx::query(
                    "INSERT INTO sync_state (name, value, updated_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO UPDATE SET value = $2, updated_at = $3",
                )
                .bind(name)
                .bind(v)
                .bind(now)
                .execute(&self.pool)
                .await?
            }
            None => {
                sqlx::query("DELETE FROM sync_state WHERE name = $1")
                    .bind(name)
                    .execute(&self.pool)
                    .await?
            }
        };
        Ok(())
    }

    /// Every item a worker remembers (`sync_items`), by item key.
    pub async fn items(&self, worker: &str) -> Result<HashMap<String, String>, StoreError> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT item, value FROM sync_items WHERE worker = $1")
                .bind(worker)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().collect())
    }

    /// Remembers (`Some`) or forgets (`None`) one item of a worker.
    pub async fn set_item(
        &self,
        worker: &str,
        item: &str,
        value: Option<&str>,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        match value {
            Some(v) => {
                sqlx::query(
                    "INSERT INTO sync_items (worker, item, value, updated_at) \
                     VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (worker, item) DO UPDATE SET value = $3, updated_at = $4",
                )
                .bind(worker)
                .bind(item)
                .bind(v)
                .bind(now)
                .execute(&self.pool)
                .await?
            }
            None => {
                sqlx::query("DELETE FROM sync_items WHERE worker = $1 AND item = $2")
                    .bind(worker)
                    .bind(item)
                    .execute(&self.pool)
                    .await?
            }
        };
        Ok(())
    }

    /// Drops the run records of `worker` that ended before `before` (a presence tick every
    /// minute would otherwise grow the table without bound).
    pub async fn prune_runs(&self, worker: &str, before: UnixTime) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM sync_runs WHERE worker = $1 AND ended_at IS NOT NULL AND ended_at < $2",
        )
        .bind(worker)
        .bind(before)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
