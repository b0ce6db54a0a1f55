//! The contacts worker's records: `contact_links`, what pbxgate put into which phonebook from
//! which Outlook contact.

use sqlx::any::AnyRow;
use sqlx::{FromRow, Row};

use super::{Store, StoreError};
use crate::clock::UnixTime;

/// One Outlook contact behind one 3CX phonebook entry. Several links may share an entry
/// (`dedupe_by`); the entry goes when its last link goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactLink {
    /// `company`, or the extension number of a personal phonebook.
    pub book: String,
    pub mailbox: String,
    pub contact_id: String,
    pub folder_id: String,
    pub tag: String,
    pub pbx_id: i64,
    pub updated_at: UnixTime,
}

/// The columns of `contact_links`, in the order [`ContactLink::from_row`] reads them.
const LINK_COLUMNS: &str = "book, mailbox, contact_id, folder_id, tag, pbx_id, updated_at";

impl FromRow<'_, AnyRow> for ContactLink {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            book: r.try_get(0)?,
            mailbox: r.try_get(1)?,
            contact_id: r.try_get(2)?,
            folder_id: r.try_get(3)?,
            tag: r.try_get(4)?,
            pbx_id: r.try_get(5)?,
            updated_at: r.try_get(6)?,
        })
    }
}

impl Store {
    /// Every link of one phonebook.
    pub async fn contact_links(&self, book: &str) -> Result<Vec<ContactLink>, StoreError> {
        let sql = format!("SELECT {LINK_COLUMNS} FROM contact_links WHERE book = $1");
        let rows = sqlx::query_as(&sql)
            .bind(book)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }

    /// Every link whose contact came from `mailbox`, whatever the phonebook.
    pub async fn contact_links_of(&self, mailbox: &str) -> Result<Vec<ContactLink>, StoreError> {
        let sql = format!("SELECT {LINK_COLUMNS} FROM contact_links WHERE mailbox = $1");
        let rows = sqlx::query_as(&sql)
            .bind(mailbox)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }

    pub async fn upsert_contact_link(&self, l: &ContactLink) -> Result<(), StoreError> {
        self.upsert_contact_links(std::slice::from_ref(l)).await
    }

    /// Several links in one transaction (a first sync records 100,000 of them).
    pub async fn upsert_contact_links(&self, links: &[ContactLink]) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO contact_links ({LINK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (book, mailbox, contact_id) DO UPDATE SET \
             folder_id = $4, tag = $5, pbx_id = $6, updated_at = $7"
        );
        let mut tx = self.pool.begin().await?;
        for l in links {
            sqlx::query(&sql)
                .bind(&l.book)
                .bind(&l.mailbox)
                .bind(&l.contact_id)
                .bind(&l.folder_id)
                .bind(&l.tag)
                .bind(l.pbx_id)
                .bind(l.updated_at)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Forgets the link of one contact to the entry tagged `tag`; a link the same run has
    /// already moved to another entry (writes go in parallel) stays.
    pub async fn delete_contact_link(
        &self,
        book: &str,
        mailbox: &str,
        contact_id: &str,
        tag: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM contact_links \
             WHERE book = $1 AND mailbox = $2 AND contact_id = $3 AND tag = $4",
        )
        .bind(book)
        .bind(mailbox)
        .bind(contact_id)
        .bind(tag)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
