//! Gateway sessions (`sessions`): one row per signed-in browser, shared by every replica.

use sqlx::any::AnyRow;
use sqlx::{FromRow, Row};

use super::{Store, StoreError};
use crate::clock::UnixTime;

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

/// A live session as the recheck sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSession {
    pub user_key: String,
    pub extension: String,
    pub created_at: UnixTime,
}

/// What a session keeps beside its [`SessionRow`]: the admin decision made at sign-in and
/// where the browser signed in from (shown on the admin console's sessions page).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionMeta {
    pub is_admin: bool,
    pub client_addr: Option<String>,
    pub user_agent: Option<String>,
}

/// A live session as the admin console lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSessionRow {
    pub id_hash: String,
    pub user_key: String,
    pub upn: String,
    pub extension: String,
    pub created_at: UnixTime,
    pub last_seen_at: UnixTime,
    pub meta: SessionMeta,
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

impl Store {
    pub async fn insert_session(&self, s: &SessionRow) -> Result<(), StoreError> {
        self.insert_session_with(s, &SessionMeta::default()).await
    }

    /// [`Self::insert_session`] with what the sign-in knew about the browser and the user.
    pub async fn insert_session_with(
        &self,
        s: &SessionRow,
        meta: &SessionMeta,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO sessions ({SESSION_COLUMNS}, is_admin, client_addr, user_agent) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
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
            .bind(meta.is_admin as i64)
            .bind(&meta.client_addr)
            .bind(&meta.user_agent)
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

    /// The [`SessionMeta`] of a session.
    pub async fn session_meta(&self, id_hash: &str) -> Result<Option<SessionMeta>, StoreError> {
        let row = sqlx::query(
            "SELECT is_admin, client_addr, user_agent FROM sessions WHERE id_hash = $1",
        )
        .bind(id_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| meta_of(&r, 0))
            .transpose()
            .map_err(StoreError::from)
    }

    /// The live sessions (not revoked or expired, used since `seen_since`), by UPN, newest
    /// first, at most `limit`.
    pub async fn admin_sessions(
        &self,
        now: UnixTime,
        seen_since: UnixTime,
        limit: i64,
    ) -> Result<Vec<AdminSessionRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id_hash, user_key, upn, extension, created_at, last_seen_at, is_admin, \
             client_addr, user_agent FROM sessions \
             WHERE revoked_at IS NULL AND expires_at > $1 AND last_seen_at > $2 \
             ORDER BY upn, created_at DESC LIMIT $3",
        )
        .bind(now)
        .bind(seen_since)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AdminSessionRow {
                    id_hash: r.try_get(0)?,
                    user_key: r.try_get(1)?,
                    upn: r.try_get(2)?,
                    extension: r.try_get(3)?,
                    created_at: r.try_get(4)?,
                    last_seen_at: r.try_get(5)?,
                    meta: meta_of(r, 6)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
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
        Ok(self.revoke_where("id_hash", id_hash, now).await? > 0)
    }

    /// Revokes every live session of a user; returns how many.
    pub async fn revoke_user_sessions(
        &self,
        user_key: &str,
        now: UnixTime,
    ) -> Result<u64, StoreError> {
        self.revoke_where("user_key", user_key, now).await
    }

    /// Revokes the live sessions of a user that started before `before` (Entra's
    /// `signInSessionsValidFromDateTime`); returns how many.
    pub async fn revoke_user_sessions_before(
        &self,
        user_key: &str,
        before: UnixTime,
        now: UnixTime,
    ) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE sessions SET revoked_at = $1 \
             WHERE user_key = $2 AND created_at < $3 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(user_key)
        .bind(before)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// The live sessions (not revoked, not expired, used since `seen_since`): who, which
    /// extension, since when. For the session recheck.
    pub async fn live_sessions(
        &self,
        now: UnixTime,
        seen_since: UnixTime,
    ) -> Result<Vec<LiveSession>, StoreError> {
        let rows = sqlx::query(
            "SELECT user_key, extension, created_at FROM sessions \
             WHERE revoked_at IS NULL AND expires_at > $1 AND last_seen_at > $2",
        )
        .bind(now)
        .bind(seen_since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LiveSession {
                    user_key: r.try_get(0)?,
                    extension: r.try_get(1)?,
                    created_at: r.try_get(2)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// The extensions of a user's sessions (live or not), to end the 3CX access behind them.
    pub async fn session_extensions(&self, user_key: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT DISTINCT extension FROM sessions WHERE user_key = $1")
            .bind(user_key)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Who has live sessions started in Entra session `sid`: (user key, extension) pairs.
    pub async fn idp_session_users(&self, sid: &str) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT user_key, extension FROM sessions \
             WHERE idp_sid = $1 AND revoked_at IS NULL",
        )
        .bind(sid)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Revokes every live session started in Entra session `sid` (front-channel logout).
    pub async fn revoke_idp_sessions(&self, sid: &str, now: UnixTime) -> Result<u64, StoreError> {
        self.revoke_where("idp_sid", sid, now).await
    }

    /// Revokes the live sessions whose `column` is `value`; returns how many. A revoked
    /// session keeps its first `revoked_at`.
    async fn revoke_where(
        &self,
        column: &'static str,
        value: &str,
        now: UnixTime,
    ) -> Result<u64, StoreError> {
        let sql = format!(
            "UPDATE sessions SET revoked_at = $1 WHERE {column} = $2 AND revoked_at IS NULL"
        );
        let r = sqlx::query(&sql)
            .bind(now)
            .bind(value)
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

/// The three [`SessionMeta`] columns from `at` on.
fn meta_of(r: &AnyRow, at: usize) -> Result<SessionMeta, sqlx::Error> {
    Ok(SessionMeta {
        is_admin: r.try_get::<i64, _>(at)? != 0,
        client_addr: r.try_get(at + 1)?,
        user_agent: r.try_get(at + 2)?,
    })
}
