//! Applying one planned change: the write to 3CX first, then pbxgate's links in the store,
//! so that a crash in between is found again by the entry's tag on the next run.

use super::{ContactAction, ContactsWorker, ITEMS, LinkKey, SKIP_ITEM, Skipped};
use crate::pbx::Book;
use crate::store::ContactLink;
use crate::sync::SyncError;

impl ContactsWorker {
    pub(super) async fn apply_action(&self, action: &ContactAction) -> Result<(), SyncError> {
        match action {
            ContactAction::Create {
                book,
                fields,
                links,
            } => {
                let created = self.pbx.create_contact(book, fields).await?;
                self.record(book, links, &fields.tag, created.id).await?;
            }
            ContactAction::Update {
                book,
                pbx_id,
                fields,
                links,
            } => {
                self.pbx.update_contact(book, *pbx_id, fields).await?;
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
                pbx_id,
                unlink,
                ..
            } => {
                if let Some(id) = pbx_id {
                    match self.pbx.delete_contact(book, *id).await {
                        Ok(()) | Err(crate::pbx::PbxError::Api { status: 404, .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                self.forget(book, unlink).await?;
            }
            ContactAction::Unlink { book, unlink, .. } => self.forget(book, unlink).await?,
            ContactAction::Skip {
                mailbox: Some(mailbox),
                reason,
                retry_at: Some(at),
                ..
            } => {
                let skip = Skipped {
                    reason: reason.clone(),
                    retry_at: *at,
                };
                let value = serde_json::to_string(&skip).unwrap_or_default();
                let item = format!("{SKIP_ITEM}{mailbox}");
                self.store
                    .set_item(ITEMS, &item, Some(&value), self.clock.now())
                    .await?
            }
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
        for k in links {
            self.store
                .upsert_contact_link(&self.link_row(book, k, tag, pbx_id))
                .await?;
        }
        Ok(())
    }

    async fn forget(&self, book: &Book, unlink: &[(String, String)]) -> Result<(), SyncError> {
        for (mailbox, contact) in unlink {
            self.store
                .delete_contact_link(&book.key(), mailbox, contact)
                .await?;
        }
        Ok(())
    }
}
