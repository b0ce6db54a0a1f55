//! The audit log (`audit_log`): every admin console action, who did it and when.

use sqlx::any::AnyRow;
use sqlx::{FromRow, Row};

use super::{Store, StoreError};
use crate::clock::UnixTime;

/// One admin action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub id: String,
    pub at: UnixTime,
    /// The admin's UPN.
    pub actor: String,
    /// A stable action name (`sync.dry_run`, `override.add`, …).
    pub action: String,
    /// What it was done to (a worker, a UPN, a session).
    pub target: String,
    /// The outcome, in a few words.
    pub detail: String,
    pub client_addr: Option<String>,
}

impl FromRow<'_, AnyRow> for AuditRow {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: r.try_get(0)?,
            at: r.try_get(1)?,
            actor: r.try_get(2)?,
            action: r.try_get(3)?,
            target: r.try_get(4)?,
            detail: r.try_get(5)?,
            client_addr: r.try_get(6)?,
        })
    }
}

impl Store {
    pub async fn insert_audit(&self, a: &AuditRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_log (id, at, actor, action, target, detail, client_addr) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&a.id)
        .bind(a.at)
        .bind(&a.actor)
        .bind(&a.action)
        .bind(&a.target)
        .bind(&a.detail)
        .bind(&a.client_addr)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The most recent entries, newest first.
    pub async fn audit(&self, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
        let rows = sqlx::query_as(
            "SELECT id, at, actor, action, target, detail, client_addr FROM audit_log \
             ORDER BY at DESC, id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }
}
