//! Applying one planned change: the write to 3CX first, then pbxgate's links in the store,
//! so that a crash in between is found again by the entry's tag on the next run.

use super::{ContactAction, ContactsWorker, ITEMS, LinkKey, SKIP_ITEM, Skipped};
use crate::pbx::Book;
use crate::store::ContactLink;
use crate::sync::{SyncError, already_gone_is_fine};

/// Links written in one transaction, at most about.
const LINKS_TOGETHER: usize = 100;

impl ContactsWorker {
    pub(super) async fn apply_action(&self, action: &ContactAction) -> Result<(), SyncError> {
        match action {
            ContactAction::Create {
                book,
                fields,
                links,
            } => {
                let slot = self.pbx_slot().await;
                let created = self.pbx.create_contact(book, fields).await?;
                drop(slot);
                self.record(book, links, &fields.tag, created.id).await?;
            }
            ContactAction::Update {
                book,
                pbx_id,
                fields,
                links,
            } => {
                let slot = self.pbx_slot().await;
                self.pbx.update_contact(book, *pbx_id, fields).await?;
                drop(slot);
                self.record(book, links, &fields.tag, *pbx_id).await?;
            }
            ContactAction::Link {
                book,
                pbx_id,
                tag,
                links,
            } => self.record(book, links, tag, *pbx_id).await?,
            ContactAction::Delete {
                book,
                tag,
                pbx_id,
                unlink,
            } => self.delete(book, tag, *pbx_id, unlink).await?,
            ContactAction::Unlink { book, tag, unlink } => self.forget(book, tag, unlink).await?,
            ContactAction::Skip {
                mailbox: Some(mailbox),
                reason,
                retry_at: Some(at),
                ..
            } => self.remember_skip(mailbox, reason, *at).await?,
            ContactAction::Skip { .. } => {}
        }
        Ok(())
    }

    fn link_row(&self, book: &Book, k: &LinkKey, tag: &str, pbx_id: i64) -> ContactLink {
        ContactLink {
            book: book.key(),
            mailbox: k.mailbox.clone(),
            contact_id: k.contact_id.clone(),
            folder_id: k.folder_id.clone(),
            tag: tag.to_string(),
            pbx_id,
            updated_at: self.clock.now(),
        }
    }

    async fn record(
        &self,
        book: &Book,
        links: &[LinkKey],
        tag: &str,
        pbx_id: i64,
    ) -> Result<(), SyncError> {
        let rows = links.iter().map(|k| self.link_row(book, k, tag, pbx_id));
        self.unwritten_links().extend(rows);
        self.write_links(LINKS_TOGETHER).await
    }

    fn unwritten_links(&self) -> std::sync::MutexGuard<'_, Vec<ContactLink>> {
        self.unwritten.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the links kept back once there are more than `keep` of them.
    pub(super) async fn write_links(&self, keep: usize) -> Result<(), SyncError> {
        let rows = {
            let mut unwritten = self.unwritten_links();
            if unwritten.len() <= keep {
                return Ok(());
            }
            std::mem::take(&mut *unwritten)
        };
        Ok(self.store.upsert_contact_links(&rows).await?)
    }

    async fn forget(
        &self,
        book: &Book,
        tag: &str,
        unlink: &[(String, String)],
    ) -> Result<(), SyncError> {
        for (mailbox, contact) in unlink {
            self.store
                .delete_contact_link(&book.key(), mailbox, contact, tag)
                .await?;
        }
        Ok(())
    }

    /// Deletes the entry if 3CX still has it, then the links of the contacts behind it.
    async fn delete(
        &self,
        book: &Book,
        tag: &str,
        pbx_id: Option<i64>,
        unlink: &[(String, String)],
    ) -> Result<(), SyncError> {
        if let Some(id) = pbx_id {
            let _slot = self.pbx_slot().await;
            already_gone_is_fine(self.pbx.delete_contact(book, id).await)?;
        }
        self.forget(book, tag, unlink).await
    }

    /// Leaves `mailbox` alone until `retry_at`.
    async fn remember_skip(
        &self,
        mailbox: &str,
        reason: &str,
        retry_at: i64,
    ) -> Result<(), SyncError> {
        let skip = Skipped {
            reason: reason.to_string(),
            retry_at,
        };
        let value = serde_json::to_string(&skip).unwrap_or_default();
        let item = format!("{SKIP_ITEM}{mailbox}");
        let now = self.clock.now();
        Ok(self.store.set_item(ITEMS, &item, Some(&value), now).await?)
    }
}
