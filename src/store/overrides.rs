//! Directory overrides added in the admin console (`directory_overrides`): a canonical UPN
//! and the extension it gets. The config file's overrides are read-only and win over these.

use sqlx::any::AnyRow;
use sqlx::{FromRow, Row};

use super::{Store, StoreError};
use crate::clock::UnixTime;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverrideRow {
    /// Lower case, UPN suffix aliases applied.
    pub upn: String,
    pub extension: String,
    pub created_by: String,
    pub created_at: UnixTime,
}

impl FromRow<'_, AnyRow> for OverrideRow {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            upn: r.try_get(0)?,
            extension: r.try_get(1)?,
            created_by: r.try_get(2)?,
            created_at: r.try_get(3)?,
        })
    }
}

impl Store {
    /// Adds or replaces the override of `o.upn`.
    pub async fn upsert_override(&self, o: &OverrideRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO directory_overrides (upn, extension, created_by, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (upn) DO UPDATE SET extension = $2, \
             created_by = $3, created_at = $4",
        )
        .bind(&o.upn)
        .bind(&o.extension)
        .bind(&o.created_by)
        .bind(o.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes the override of `upn`; returns whether there was one.
    pub async fn delete_override(&self, upn: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM directory_overrides WHERE upn = $1")
            .bind(upn)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// The extension overridden for `upn` (canonical), if any.
    pub async fn override_of(&self, upn: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT extension FROM directory_overrides WHERE upn = $1")
            .bind(upn)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    pub async fn overrides(&self) -> Result<Vec<OverrideRow>, StoreError> {
        let rows = sqlx::query_as(
            "SELECT upn, extension, created_by, created_at FROM directory_overrides ORDER BY upn",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }
}
