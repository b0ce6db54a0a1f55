//! Reading the mailboxes: every folder's delta, the first pages of all folders of all
//! mailboxes through `$batch` (20 a call), the rest page by page. A mailbox Graph refuses
//! becomes a `Skip`; an outage ends the run.

use futures_util::StreamExt;
use serde_json::Value;

use super::wire::GraphContact;
use super::{ContactAction, ContactsWorker, PARALLEL, Source, unordered};
use crate::graph::{BATCH_MAX, BatchRequest, BatchResponse, GraphError};
use crate::sync::{Mode, SyncError, batch_get};

/// One folder's delta round.
#[derive(Debug, Default)]
pub(super) struct FolderRead {
    pub(super) folder: String,
    pub(super) changed: Vec<GraphContact>,
    pub(super) removed: Vec<String>,
    /// Read from scratch: a linked contact not in `changed` is gone.
    pub(super) fresh: bool,
    /// The folder no longer exists.
    pub(super) gone: bool,
    pub(super) link: Option<String>,
}

/// What Graph said about one mailbox in this run.
#[derive(Debug, Default)]
pub struct SourceRead {
    pub(super) folders: Vec<FolderRead>,
    /// The folder list was read now (and is kept for the next runs).
    pub(super) discovered: Option<Vec<String>>,
}

impl SourceRead {
    pub(super) fn has_news(&self) -> bool {
        self.discovered.is_some()
            || self
                .folders
                .iter()
                .any(|f| f.fresh || f.gone || !f.changed.is_empty() || !f.removed.is_empty())
    }

    /// Whether every folder was read from scratch (so absence means removal everywhere).
    pub(super) fn complete(&self) -> bool {
        self.discovered.is_some() && self.folders.iter().all(|f| f.fresh || f.gone)
    }
}

/// A mailbox that cannot be read: skipped for a while (no mailbox, access policy) or for
/// this run (anything else that is not an outage).
fn skip_reason(e: &GraphError) -> Option<(String, bool)> {
    match e {
        GraphError::MailboxNotEnabled(_) => Some((
            "no Exchange Online mailbox (MailboxNotEnabledForRESTAPI)".into(),
            true,
        )),
        GraphError::AccessDenied(m) => Some((
            format!("access denied, an application access policy? ({m})"),
            true,
        )),
        GraphError::NotFound(_) => Some(("no such mailbox".into(), true)),
        GraphError::Api { .. } | GraphError::Decode(_) => Some((e.to_string(), false)),
        _ => None,
    }
}

/// A mailbox ready for its delta round.
pub(super) struct Prepared {
    folders: Vec<String>,
    discovered: bool,
    /// (folder, delta start, from scratch)
    starts: Vec<(String, String, bool)>,
}

impl ContactsWorker {
    /// Reads the mailboxes: their folders, then every folder's delta, the first pages of all
    /// folders of all mailboxes in `$batch` calls of 20. A mailbox that cannot be read is a
    /// `Skip`; an outage ends the run.
    pub(super) async fn read_sources<'a>(
        &self,
        sources: &[&'a Source],
        mode: Mode,
    ) -> Result<Vec<(&'a Source, Result<SourceRead, ContactAction>)>, SyncError> {
        let mut preparing = Vec::new();
        for s in sources {
            let s: &'a Source = s;
            preparing.push(async move { (s, self.prepare(s, mode).await) });
        }
        let mut out = Vec::new();
        let mut ready = Vec::new();
        for (s, p) in unordered(preparing).await {
            match self.settle(s, p)? {
                Ok(p) => ready.push((s, p)),
                Err(skip) => out.push((s, Err(skip))),
            }
        }
        let mut answers = self.first_pages(&ready).await?.into_iter();
        let mut finishing = Vec::new();
        for (s, p) in ready {
            let mine: Vec<BatchResponse> = answers.by_ref().take(p.starts.len()).collect();
            finishing.push(async move { (s, self.finish_source(s, p, mine).await) });
        }
        for (s, r) in unordered(finishing).await {
            out.push((s, self.settle(s, r)?));
        }
        Ok(out)
    }

    /// A mailbox's read, or the skip that reports why there is none; an outage ends the run.
    fn settle<T>(
        &self,
        src: &Source,
        r: Result<T, GraphError>,
    ) -> Result<Result<T, ContactAction>, SyncError> {
        match r {
            Ok(v) => Ok(Ok(v)),
            Err(e) => self.skip(src, e).map(Err),
        }
    }

    /// The first page of every folder's delta, in the order of `ready`'s starts: `BATCH_MAX`
    /// requests a `$batch` call, a few calls at once.
    async fn first_pages(
        &self,
        ready: &[(&Source, Prepared)],
    ) -> Result<Vec<BatchResponse>, GraphError> {
        let root = self.graph.url("");
        let requests: Vec<BatchRequest> = ready
            .iter()
            .flat_map(|(_, p)| p.starts.iter())
            .enumerate()
            .map(|(i, (_, start, _))| {
                batch_get(i, start.strip_prefix(&root).unwrap_or(start).to_string())
            })
            .collect();
        let mut batches = Vec::new();
        for chunk in requests.chunks(BATCH_MAX) {
            batches.push(self.graph.batch(chunk.to_vec()));
        }
        let answered: Vec<_> = futures_util::stream::iter(batches)
            .buffered(PARALLEL)
            .collect()
            .await;
        let mut answers = Vec::new();
        for a in answered {
            answers.extend(a?);
        }
        Ok(answers)
    }

    /// A mailbox's folders and where each folder's delta starts.
    async fn prepare(&self, src: &Source, mode: Mode) -> Result<Prepared, GraphError> {
        let (folders, discovered) = self.folders(src, mode).await?;
        let starts = self.starts(src, &folders, mode).await;
        Ok(Prepared {
            folders,
            discovered,
            starts,
        })
    }

    async fn finish_source(
        &self,
        src: &Source,
        p: Prepared,
        answers: Vec<BatchResponse>,
    ) -> Result<SourceRead, GraphError> {
        let mut read = SourceRead {
            folders: Vec::new(),
            discovered: p.discovered.then_some(p.folders),
        };
        for ((folder, _, fresh), answer) in p.starts.into_iter().zip(answers) {
            read.folders
                .push(self.finish_folder(src, &folder, fresh, answer).await?);
        }
        Ok(read)
    }

    /// Completes one folder's delta round from its first page (a `$batch` answer).
    async fn finish_folder(
        &self,
        src: &Source,
        folder: &str,
        fresh: bool,
        answer: BatchResponse,
    ) -> Result<FolderRead, GraphError> {
        let mut out = FolderRead {
            folder: folder.to_string(),
            fresh,
            ..Default::default()
        };
        match answer.error(&src.label) {
            // The delta token expired: this folder starts over, without duplicates (entries
            // are matched by tag).
            Some(GraphError::SyncReset) => return self.restart_folder(src, folder).await,
            // The folder was deleted (not the mailbox: that is `ErrorInvalidUser`).
            Some(GraphError::NotFound(_))
                if !fresh && answer.body["error"]["code"] == "ErrorItemNotFound" =>
            {
                out.gone = true;
                return Ok(out);
            }
            Some(other) => return Err(other),
            None => {}
        }
        let mut page = answer.body;
        take_items(&mut page, &mut out)?;
        self.follow(src, &page, &mut out).await?;
        Ok(out)
    }

    /// Reads a folder whose delta token expired from scratch.
    async fn restart_folder(&self, src: &Source, folder: &str) -> Result<FolderRead, GraphError> {
        tracing::warn!(mailbox = %src.label, folder, "contacts delta token expired; reading the folder again");
        let start = Self::fresh_delta(&src.mailbox, folder);
        let d = self
            .graph
            .delta::<GraphContact>(&start, Some(src.mailbox.as_str()))
            .await?;
        Ok(FolderRead {
            folder: folder.to_string(),
            changed: d.changed,
            fresh: true,
            link: Some(d.delta_link),
            ..Default::default()
        })
    }

    /// After the first page: the next pages, if any, and the delta link to keep.
    async fn follow(
        &self,
        src: &Source,
        page: &Value,
        out: &mut FolderRead,
    ) -> Result<(), GraphError> {
        match (
            page["@odata.nextLink"].as_str(),
            page["@odata.deltaLink"].as_str(),
        ) {
            (Some(next), _) => {
                let mb = Some(src.mailbox.as_str());
                let rest = self.graph.delta::<GraphContact>(next, mb).await?;
                out.changed.extend(rest.changed);
                out.removed.extend(rest.removed.into_iter().map(|r| r.id));
                out.link = Some(rest.delta_link);
            }
            (None, Some(link)) => out.link = Some(link.to_string()),
            (None, None) => {
                return Err(GraphError::Decode(
                    "a delta page without next or delta link".into(),
                ));
            }
        }
        Ok(())
    }

    /// The skip that reports an unreadable mailbox, or the outage that ends the run.
    fn skip(&self, src: &Source, e: GraphError) -> Result<ContactAction, SyncError> {
        let (reason, lasting) = skip_reason(&e).ok_or(SyncError::Graph(e))?;
        let retry = self.config.mailbox_retry.get().as_secs() as i64;
        Ok(ContactAction::Skip {
            item: src.label.clone(),
            mailbox: Some(src.mailbox.clone()),
            reason,
            retry_at: lasting.then(|| self.clock.now() + retry),
        })
    }
}

/// A delta page's items into `out`: removed ids, and changed contacts.
fn take_items(page: &mut Value, out: &mut FolderRead) -> Result<(), GraphError> {
    for item in page["value"]
        .as_array_mut()
        .map(std::mem::take)
        .unwrap_or_default()
    {
        match item.get("@removed") {
            Some(_) => out
                .removed
                .push(item["id"].as_str().unwrap_or_default().to_string()),
            None => out.changed.push(
                serde_json::from_value(item)
                    .map_err(|e| GraphError::Decode(format!("contact: {e}")))?,
            ),
        }
    }
    Ok(())
}
