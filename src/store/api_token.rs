//! The 3CX API client's token (`pbx_api_token`): the sealed token with its expiry and
//! version, and the lease that lets one replica at a time fetch a new one from 3CX.

use sqlx::any::AnyRow;
use sqlx::{FromRow, Row};

use super::{Store, StoreError};
use crate::clock::UnixTime;

/// The stored token (sealed by the caller; `None` before the first fetch is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTokenRow {
    pub sealed: Option<String>,
    pub expires_at: UnixTime,
    pub version: i64,
}

impl FromRow<'_, AnyRow> for ApiTokenRow {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            sealed: r.try_get(0)?,
            expires_at: r.try_get(1)?,
            version: r.try_get(2)?,
        })
    }
}

impl Store {
    pub async fn api_token(&self, id: &str) -> Result<Option<ApiTokenRow>, StoreError> {
        let row =
            sqlx::query_as("SELECT sealed, expires_at, version FROM pbx_api_token WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row)
    }

    /// Takes the fetch lease for `holder` until `until`, if the row is still at version
    /// `seen` (`None`: there is no row yet) and nobody else holds a live lease. False when
    /// another replica holds it or stored a newer token meanwhile (read the row again).
    pub async fn take_api_token_lease(
        &self,
        id: &str,
        seen: Option<i64>,
        holder: &str,
        now: UnixTime,
        until: UnixTime,
    ) -> Result<bool, StoreError> {
        let r = match seen {
            None => {
                sqlx::query(
                    "INSERT INTO pbx_api_token \
                     (id, sealed, expires_at, version, lease_holder, lease_until, updated_at) \
                     VALUES ($1, NULL, 0, 0, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
                )
                .bind(id)
                .bind(holder)
                .bind(until)
                .bind(now)
                .execute(&self.pool)
                .await?
            }
            Some(v) => {
                sqlx::query(
                    "UPDATE pbx_api_token SET lease_holder = $1, lease_until = $2 \
                     WHERE id = $3 AND version = $4 \
                     AND (lease_holder IS NULL OR lease_holder = $1 OR lease_until <= $5)",
                )
                .bind(holder)
                .bind(until)
                .bind(id)
                .bind(v)
                .bind(now)
                .execute(&self.pool)
                .await?
            }
        };
        Ok(r.rows_affected() == 1)
    }

    /// Stores `sealed` as the version after `leased` (the version the lease was taken at) and
    /// releases the lease, if `holder` still holds it. The new version, or `None` when the
    /// lease was lost (it ran out and another replica took it).
    pub async fn store_api_token(
        &self,
        id: &str,
        leased: i64,
        holder: &str,
        sealed: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<Option<i64>, StoreError> {
        let r = sqlx::query(
            "UPDATE pbx_api_token SET sealed = $1, expires_at = $2, version = $3, \
             lease_holder = NULL, lease_until = 0, updated_at = $4 \
             WHERE id = $5 AND version = $6 AND lease_holder = $7",
        )
        .bind(sealed)
        .bind(expires_at)
        .bind(leased + 1)
        .bind(now)
        .bind(id)
        .bind(leased)
        .bind(holder)
        .execute(&self.pool)
        .await?;
        Ok((r.rows_affected() == 1).then_some(leased + 1))
    }

    /// Gives the lease up without a new token (the fetch failed).
    pub async fn release_api_token_lease(&self, id: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE pbx_api_token SET lease_holder = NULL, lease_until = 0 \
             WHERE id = $1 AND lease_holder = $2",
        )
        .bind(id)
        .bind(holder)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
