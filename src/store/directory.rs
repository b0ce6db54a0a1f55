//! The directory (`directory_users`): which Entra user has which 3CX extension, as the user
//! sync and sign-in record it.

use sqlx::any::AnyRow;
use sqlx::{FromRow, Row};

use super::{Store, StoreError};
use crate::clock::UnixTime;

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

/// A directory row as the admin console lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryEntry {
    pub row: DirectoryRow,
    pub last_sign_in_at: Option<UnixTime>,
    /// The extension was created when the user first signed in (`provision_on_login`).
    pub provisioned_at_sign_in: bool,
}

impl Store {
    /// Rows whose UPN, display name or extension contains `query` (case-insensitive), by
    /// extension, at most `limit`.
    pub async fn search_directory(
        &self,
        tenant_id: &str,
        query: &str,
        limit: i64,
    ) -> Result<Vec<DirectoryEntry>, StoreError> {
        let escaped: String = query
            .trim()
            .to_lowercase()
            .chars()
            .flat_map(|c| match c {
                '%' | '_' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        let sql = format!(
            "SELECT {DIRECTORY_COLUMNS}, last_sign_in_at, provisioned_at_sign_in \
             FROM directory_users WHERE tenant_id = $1 AND (LOWER(upn) LIKE $2 ESCAPE '\\' \
             OR LOWER(display_name) LIKE $2 ESCAPE '\\' OR extension LIKE $2 ESCAPE '\\') \
             ORDER BY extension, upn LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(tenant_id)
            .bind(format!("%{escaped}%"))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(DirectoryEntry {
                    row: DirectoryRow::from_row(r)?,
                    last_sign_in_at: r.try_get(11)?,
                    provisioned_at_sign_in: r.try_get::<i64, _>(12)? != 0,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Records a sign-in of the user (and that it provisioned their extension, if it did).
    pub async fn record_sign_in(
        &self,
        tenant_id: &str,
        object_id: &str,
        now: UnixTime,
        provisioned: bool,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE directory_users SET last_sign_in_at = $3, \
             provisioned_at_sign_in = CASE WHEN $4 = 1 THEN 1 ELSE provisioned_at_sign_in END \
             WHERE tenant_id = $1 AND object_id = $2",
        )
        .bind(tenant_id)
        .bind(object_id)
        .bind(now)
        .bind(provisioned as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
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

    /// Every directory row of a tenant that names 3CX user `pbx_user_id` (whoever holds or
    /// held that extension).
    pub async fn directory_users_of_extension(
        &self,
        tenant_id: &str,
        pbx_user_id: i64,
    ) -> Result<Vec<DirectoryRow>, StoreError> {
        let sql = format!(
            "SELECT {DIRECTORY_COLUMNS} FROM directory_users \
             WHERE tenant_id = $1 AND pbx_user_id = $2"
        );
        let rows = sqlx::query_as(&sql)
            .bind(tenant_id)
            .bind(pbx_user_id)
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
