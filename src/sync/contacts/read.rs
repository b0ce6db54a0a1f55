//! Reading the mailboxes: every folder's delta, the first pages of all folders of all
//! mailboxes through `$batch` (20 a call), the rest page by page. A mailbox Graph refuses
//! becomes a `Skip`; an outage ends the run.

use futures_util::StreamExt;

use super::wire::GraphContact;
use super::{ContactAction, ContactsWorker, PARALLEL, Source};
use crate::graph::{BATCH_MAX, BatchRequest, BatchResponse, GraphError};
use crate::sync::{Mode, SyncError};

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
        let prepared: Vec<_> = futures_util::stream::iter(preparing)
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        let mut out = Vec::new();
        let mut ready = Vec::new();
        for (s, p) in prepared {
            match p {
                Ok(p) => ready.push((s, p)),
                Err(e) => out.push((s, Err(self.skip(s, e)?))),
            }
        }
        let root = self.graph.url("");
        let requests: Vec<BatchRequest> = ready
            .iter()
            .flat_map(|(_, p)| p.starts.iter())
            .enumerate()
            .map(|(i, (_, start, _))| BatchRequest {
                id: i.to_string(),
                method: "GET".into(),
                url: start.strip_prefix(&root).unwrap_or(start).to_string(),
                body: None,
                headers: None,
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
        let mut answers = answers.into_iter();
        let mut finishing = Vec::new();
        for (s, p) in ready {
            let mine: Vec<BatchResponse> = answers.by_ref().take(p.starts.len()).collect();
            finishing.push(async move { (s, self.finish_source(s, p, mine).await) });
        }
        let finished: Vec<_> = futures_util::stream::iter(finishing)
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        for (s, r) in finished {
            match r {
                Ok(read) => out.push((s, Ok(read))),
                Err(e) => out.push((s, Err(self.skip(s, e)?))),
            }
        }
        Ok(out)
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
        let mb = Some(src.mailbox.as_str());
        let mut out = FolderRead {
            folder: folder.to_string(),
            fresh,
            ..Default::default()
        };
        let mut page = answer.body.clone();
        if let Some(e) = answer.error(&src.label) {
            match e {
                // The delta token expired: this folder starts over, without duplicates
                // (entries are matched by tag).
                GraphError::SyncReset => {
                    tracing::warn!(mailbox = %src.label, folder, "contacts delta token expired; reading the folder again");
                    let d = self
                        .graph
                        .delta::<GraphContact>(&Self::fresh_delta(&src.mailbox, folder), mb)
                        .await?;
                    out.fresh = true;
                    out.changed = d.changed;
                    out.link = Some(d.delta_link);
                    return Ok(out);
                }
                // The folder was deleted (not the mailbox: that is `ErrorInvalidUser`).
                GraphError::NotFound(_)
                    if !fresh && answer.body["error"]["code"] == "ErrorItemNotFound" =>
                {
                    out.gone = true;
                    return Ok(out);
                }
                other => return Err(other),
            }
        }
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
        match (
            page["@odata.nextLink"].as_str(),
            page["@odata.deltaLink"].as_str(),
        ) {
            (Some(next), _) => {
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
        Ok(out)
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
