//! What the sync workers remember between runs: named values (`sync_state`, e.g. delta
//! links) and per-item values (`sync_items`).

use std::collections::HashMap;

use super::{Store, StoreError};
use crate::clock::UnixTime;

impl Store {
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

    /// One item of a worker, if it remembers it.
    pub async fn item(&self, worker: &str, item: &str) -> Result<Option<String>, StoreError> {
        let value =
            sqlx::query_scalar("SELECT value FROM sync_items WHERE worker = $1 AND item = $2")
                .bind(worker)
                .bind(item)
                .fetch_optional(&self.pool)
                .await?;
        Ok(value)
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
}
