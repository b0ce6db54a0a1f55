//! What `pbxgate doctor` asks the store: which migrations are missing, and whether a write
//! would succeed (tried in a transaction that is rolled back, so nothing is left behind).

use super::{Store, StoreError, migrator};

/// How the store's schema compares with this binary's migrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrations {
    /// Versions this binary has that the store lacks.
    pub pending: Vec<i64>,
    /// Versions the store has that this binary does not know (a newer pbxgate ran).
    pub unknown: Vec<i64>,
}

impl Store {
    /// Compares the applied migrations (`_sqlx_migrations`) with this binary's.
    pub async fn migrations(&self) -> Result<Migrations, StoreError> {
        let applied: Vec<i64> = match sqlx::query_scalar::<_, i64>(
            "SELECT version FROM _sqlx_migrations WHERE success = TRUE",
        )
        .fetch_all(&self.pool)
        .await
        {
            Ok(v) => v,
            // A store that was never migrated has no bookkeeping table yet.
            Err(sqlx::Error::Database(e)) if e.message().contains("_sqlx_migrations") => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let known: Vec<i64> = migrator().iter().map(|m| m.version).collect();
        Ok(Migrations {
            pending: known
                .iter()
                .copied()
                .filter(|v| !applied.contains(v))
                .collect(),
            unknown: applied.into_iter().filter(|v| !known.contains(v)).collect(),
        })
    }

    /// Writes a row and rolls the write back: fails as a real write would on a read-only
    /// file, a full disk's refusal to start a transaction, or a read-only PostgreSQL replica.
    pub async fn probe_write(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)")
            .bind(format!("doctor-probe-{}", crate::ids::request_id()))
            .bind("pbxgate doctor")
            .bind(0_i64)
            .execute(&mut *tx)
            .await?;
        tx.rollback().await?;
        Ok(())
    }
}
