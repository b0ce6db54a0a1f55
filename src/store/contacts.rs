//! The contacts worker's records: `contact_links` (what pbxgate put into which phonebook, from
//! which Outlook contact) and `contact_mailbox_skips` (mailboxes left alone for a while).

use sqlx::Row;

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

/// A mailbox the worker skips until `retry_at`, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxSkip {
    pub mailbox: String,
    pub reason: String,
    pub retry_at: UnixTime,
}

const LINK_COLUMNS: &str = "book, mailbox, contact_id, folder_id, tag, pbx_id, updated_at";

fn link(r: &sqlx::any::AnyRow) -> Result<ContactLink, sqlx::Error> {
    Ok(ContactLink {
        book: r.try_get(0)?,
        mailbox: r.try_get(1)?,
        contact_id: r.try_get(2)?,
        folder_id: r.try_get(3)?,
        tag: r.try_get(4)?,
        pbx_id: r.try_get(5)?,
        updated_at: r.try_get(6)?,
    })
}

impl Store {
    /// Every link of one phonebook.
    pub async fn contact_links(&self, book: &str) -> Result<Vec<ContactLink>, StoreError> {
        let sql = format!("SELECT {LINK_COLUMNS} FROM contact_links WHERE book = $1");
        let rows = sqlx::query(&sql).bind(book).fetch_all(&self.pool).await?;
        rows.iter()
            .map(link)
            .collect::<Result<_, _>>()
            .map_err(StoreError::Query)
    }

    /// Every link whose contact came from `mailbox`, whatever the phonebook.
    pub async fn contact_links_of(&self, mailbox: &str) -> Result<Vec<ContactLink>, StoreError> {
        let sql = format!("SELECT {LINK_COLUMNS} FROM contact_links WHERE mailbox = $1");
        let rows = sqlx::query(&sql)
            .bind(mailbox)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(link)
            .collect::<Result<_, _>>()
            .map_err(StoreError::Query)
    }

    pub async fn upsert_contact_link(&self, l: &ContactLink) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO contact_links (book, mailbox, contact_id, folder_id, tag, pbx_id, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (book, mailbox, contact_id) DO UPDATE SET \
             folder_id = $4, tag = $5, pbx_id = $6, updated_at = $7",
        )
        .bind(&l.book)
        .bind(&l.mailbox)
        .bind(&l.contact_id)
        .bind(&l.folder_id)
        .bind(&l.tag)
        .bind(l.pbx_id)
        .bind(l.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn delete_contact_link(
        &self,
        book: &str,
        mailbox: &str,
        contact_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM contact_links WHERE book = $1 AND mailbox = $2 AND contact_id = $3",
        )
        .bind(book)
        .bind(mailbox)
        .bind(contact_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Mailboxes skipped until a time after `now`.
    pub async fn mailbox_skips(&self, now: UnixTime) -> Result<Vec<MailboxSkip>, StoreError> {
        let rows = sqlx::query(
            "SELECT mailbox, reason, retry_at FROM contact_mailbox_skips WHERE retry_at > $1",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(MailboxSkip {
                    mailbox: r.try_get(0)?,
                    reason: r.try_get(1)?,
                    retry_at: r.try_get(2)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::Query)
    }

    /// Records a skip; `None` clears it (the mailbox answered again).
    pub async fn set_mailbox_skip(
        &self,
        mailbox: &str,
        skip: Option<(&str, UnixTime)>,
    ) -> Result<(), StoreError> {
        match skip {
            Some((reason, retry_at)) => sqlx::query(
                "INSERT INTO contact_mailbox_skips (mailbox, reason, retry_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (mailbox) DO UPDATE SET reason = $2, retry_at = $3",
            )
            .bind(mailbox)
            .bind(reason)
            .bind(retry_at)
            .execute(&self.pool)
            .await?,
            None => {
                sqlx::query("DELETE FROM contact_mailbox_skips WHERE mailbox = $1")
                    .bind(mailbox)
                    .execute(&self.pool)
                    .await?
            }
        };
        Ok(())
    }
}
