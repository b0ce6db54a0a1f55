//! Sync run records (`sync_runs`): what each worker run planned, applied and failed.

use sqlx::any::AnyRow;
use sqlx::{FromRow, Row};

use super::{Store, StoreError};
use crate::clock::UnixTime;

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
