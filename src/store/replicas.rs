//! Replica heartbeats (`replicas`): each running gateway rewrites its row every minute, so
//! the admin console can list the replicas that share this store.

use sqlx::any::AnyRow;
use sqlx::{FromRow, Row};

use super::{Store, StoreError};
use crate::clock::UnixTime;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRow {
    /// Host name, process id and a random suffix.
    pub id: String,
    pub version: String,
    pub started_at: UnixTime,
    pub seen_at: UnixTime,
}

impl FromRow<'_, AnyRow> for ReplicaRow {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: r.try_get(0)?,
            version: r.try_get(1)?,
            started_at: r.try_get(2)?,
            seen_at: r.try_get(3)?,
        })
    }
}

impl Store {
    /// Records that replica `r` is alive now; forgets replicas silent for a day.
    pub async fn heartbeat(&self, r: &ReplicaRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO replicas (id, version, started_at, seen_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET version = $2, seen_at = $4",
        )
        .bind(&r.id)
        .bind(&r.version)
        .bind(r.started_at)
        .bind(r.seen_at)
        .execute(&self.pool)
        .await?;
        sqlx::query("DELETE FROM replicas WHERE seen_at < $1")
            .bind(r.seen_at - 86_400)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The replicas seen since `since`, most recently started first.
    pub async fn replicas(&self, since: UnixTime) -> Result<Vec<ReplicaRow>, StoreError> {
        let rows = sqlx::query_as(
            "SELECT id, version, started_at, seen_at FROM replicas WHERE seen_at >= $1 \
             ORDER BY started_at DESC, id",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }
}
