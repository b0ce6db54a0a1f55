//! Where a mailbox's contacts are: its contact folders, found once and kept, and where each
//! folder's delta starts (the kept delta link, or from scratch). What a clean run keeps for
//! the next one is written here too, next to the reading of it.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

use super::read::SourceRead;
use super::wire::{Folder, SELECT};
use super::{ContactsWorker, Source};
use crate::config::ContactFolders;
use crate::graph::GraphError;
use crate::sync::Mode;

const FOLDERS_STATE: &str = "contacts.folders:";
const DELTA_STATE: &str = "contacts.delta:";
/// A path segment: everything but unreserved characters and `@` is escaped.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'@');

impl ContactsWorker {
    fn user_path(mailbox: &str) -> String {
        format!("/users/{}", utf8_percent_encode(mailbox, SEGMENT))
    }

    pub(super) fn fresh_delta(mailbox: &str, folder: &str) -> String {
        format!(
            "{}/contactFolders/{}/contacts/delta?$select={SELECT}",
            Self::user_path(mailbox),
            utf8_percent_encode(folder, SEGMENT)
        )
    }

    /// The default Contacts folder and, with `folders = "all"`, every folder below it.
    async fn discover(&self, mailbox: &str) -> Result<Vec<String>, GraphError> {
        let user = Self::user_path(mailbox);
        let mb = Some(mailbox);
        let children: Vec<Folder> = self
            .graph
            .list(
                &format!("{user}/contactFolders?$select=id,displayName,parentFolderId"),
                mb,
            )
            .await?;
        // Graph lists the default folder's children, not the default folder itself; its id
        // is their parent, or else the parent of any contact in it.
        let default = match children.iter().find_map(|f| f.parent_folder_id.clone()) {
            Some(id) => id,
            None => {
                let page: Value = self
                    .graph
                    .get(
                        &format!("{user}/contacts?$top=1&$select=parentFolderId"),
                        mb,
                    )
                    .await?;
                match page["value"][0]["parentFolderId"].as_str() {
                    Some(id) => id.to_string(),
                    None => return Ok(Vec::new()),
                }
            }
        };
        let mut folders = vec![default];
        if self.config.folders == ContactFolders::All {
            let mut queue: Vec<String> = children.into_iter().map(|f| f.id).collect();
            while let Some(id) = queue.pop() {
                let path = format!(
                    "{user}/contactFolders/{}/childFolders?$select=id,displayName,parentFolderId",
                    utf8_percent_encode(&id, SEGMENT)
                );
                let sub: Vec<Folder> = self.graph.list(&path, mb).await?;
                queue.extend(sub.into_iter().map(|f| f.id));
                folders.push(id);
            }
        }
        Ok(folders)
    }

    /// The folders to read: those kept from the last run, or found now.
    pub(super) async fn folders(
        &self,
        src: &Source,
        mode: Mode,
    ) -> Result<(Vec<String>, bool), GraphError> {
        if mode == Mode::Delta {
            let kept = self
                .store
                .state(&format!("{FOLDERS_STATE}{}", src.mailbox))
                .await
                .ok()
                .flatten()
                .and_then(|v| serde_json::from_str::<Vec<String>>(&v).ok())
                .filter(|f| !f.is_empty());
            if let Some(f) = kept {
                return Ok((f, false));
            }
        }
        Ok((self.discover(&src.mailbox).await?, true))
    }

    /// Each folder's delta start: the kept delta link (delta runs), else from scratch.
    pub(super) async fn starts(
        &self,
        src: &Source,
        folders: &[String],
        mode: Mode,
    ) -> Vec<(String, String, bool)> {
        let mut out = Vec::new();
        for f in folders {
            let kept = match mode {
                Mode::Full => None,
                Mode::Delta => self
                    .store
                    .state(&format!("{DELTA_STATE}{}:{f}", src.mailbox))
                    .await
                    .ok()
                    .flatten(),
            };
            match kept {
                Some(link) => out.push((f.clone(), link, false)),
                None => out.push((f.clone(), Self::fresh_delta(&src.mailbox, f), true)),
            }
        }
        out
    }

    /// The `sync_state` entries a clean run keeps for `src`.
    pub(super) fn commit_for(src: &Source, read: &SourceRead) -> Vec<(String, Option<String>)> {
        let mut out = Vec::new();
        if let Some(folders) = &read.discovered {
            let kept: Vec<&String> = folders
                .iter()
                .filter(|f| read.folders.iter().any(|r| &r.folder == *f && !r.gone))
                .collect();
            out.push((
                format!("{FOLDERS_STATE}{}", src.mailbox),
                serde_json::to_string(&kept).ok(),
            ));
        }
        for f in &read.folders {
            let name = format!("{DELTA_STATE}{}:{}", src.mailbox, f.folder);
            out.push((name, f.link.clone()));
            if f.gone {
                // Find the folder list again next run.
                out.push((format!("{FOLDERS_STATE}{}", src.mailbox), None));
            }
        }
        out
    }
}
