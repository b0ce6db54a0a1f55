//! The 3CX service extension's session (`pbx_service_session`): its sealed refresh cookie
//! and a version, so that replicas sharing one rotating cookie swap it, never overwrite it.

use sqlx::any::AnyRow;
use sqlx::{FromRow, Row};

use super::{Store, StoreError};
use crate::clock::UnixTime;

/// The stored cookie (sealed by the caller) and the version it was stored as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSessionRow {
    pub sealed: String,
    pub version: i64,
}

impl FromRow<'_, AnyRow> for ServiceSessionRow {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            sealed: r.try_get(0)?,
            version: r.try_get(1)?,
        })
    }
}

impl Store {
    pub async fn service_session(&self, id: &str) -> Result<Option<ServiceSessionRow>, StoreError> {
        let row = sqlx::query_as("SELECT sealed, version FROM pbx_service_session WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row)
    }

    /// Stores `sealed` as the next version if the row is still at `expected` (`None`: there
    /// is no row yet). Returns the new version, or `None` when another writer came first.
    pub async fn swap_service_session(
        &self,
        id: &str,
        expected: Option<i64>,
        sealed: &str,
        now: UnixTime,
    ) -> Result<Option<i64>, StoreError> {
        let (next, done) = match expected {
            None => {
                let r = sqlx::query(
                    "INSERT INTO pbx_service_session (id, sealed, version, updated_at) \
                     VALUES ($1, $2, 1, $3) ON CONFLICT (id) DO NOTHING",
                )
                .bind(id)
                .bind(sealed)
                .bind(now)
                .execute(&self.pool)
                .await?;
                (1, r.rows_affected())
            }
            Some(v) => {
                let r = sqlx::query(
                    "UPDATE pbx_service_session SET sealed = $1, version = $2, updated_at = $3 \
                     WHERE id = $4 AND version = $5",
                )
                .bind(sealed)
                .bind(v + 1)
                .bind(now)
                .bind(id)
                .bind(v)
                .execute(&self.pool)
                .await?;
                (v + 1, r.rows_affected())
            }
        };
        Ok((done == 1).then_some(next))
    }
}
