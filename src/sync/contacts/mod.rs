//! The contacts worker: Outlook contacts → 3CX phonebooks, one way (DESIGN §4).
//!
//! The contacts of each `shared_mailboxes` entry go to the company phonebook; with `personal`
//! on, each synced user's own contacts go to that user's personal phonebook. Graph delta runs
//! per contact folder (the default folder, and with `folders = "all"` every subfolder); the
//! first page of every folder's delta goes through `$batch`, 20 folders a call, so a run with
//! no changes costs about one call per 20 folders and nothing at 3CX.
//!
//! Ownership: every entry pbxgate creates carries a `Tag` `pbxgate:<hash>`, and the store links
//! each such entry to the Outlook contact(s) behind it. Only tagged entries are ever read,
//! changed or deleted; an entry a person made in 3CX is never touched. The plan compares what
//! Outlook says with the tagged entries 3CX has *now*, so a rerun after any failure converges
//! without duplicates (an entry created just before a crash is found again by its tag).
//!
//! Size: a run goes in parts of whole phonebooks (`parts`), each read, planned and applied
//! while the next is read, with at most `pbx_concurrency` calls to 3CX at once.

mod action;
mod apply;
mod books;
mod folders;
mod map;
mod parts;
mod plan;
mod read;
mod wire;

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::{Mode, Plan, SyncError, Worker};
use crate::clock::Clock;
use crate::config::{Config, ContactsSyncConfig};
use crate::graph::GraphClient;
use crate::pbx::{Book, PbxClient};
use crate::store::Store;
use parts::Step;

pub use action::{ContactAction, LinkKey};
pub use map::{tag_for, to_fields};
pub use plan::{BookState, plan_book};
pub use read::SourceRead;
pub use wire::{EmailAddress, GraphContact, SELECT};

pub const FULL_STATE: &str = "contacts.last_full";
/// `sync_items` of this worker: `skip:<mailbox>` → [`Skipped`].
const ITEMS: &str = "contacts";
const SKIP_ITEM: &str = "skip:";
/// Mailboxes read (and phonebooks listed) at the same time.
const PARALLEL: usize = 8;

/// A mailbox and the phonebook its contacts go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// As Graph is called: the object id of a user, or the configured UPN/id.
    pub mailbox: String,
    /// For people: the UPN.
    pub label: String,
    pub book: Book,
}

pub struct ContactsWorker {
    graph: Arc<GraphClient>,
    pbx: Arc<PbxClient>,
    /// Links of applied actions not yet written (`record`): written together, by the hundred
    /// and when a part is applied. A crash loses at most these; the next run finds the entries
    /// again by their tags and links them.
    unwritten: std::sync::Mutex<Vec<crate::store::ContactLink>>,
    /// One per call to 3CX in progress, reads and writes alike: `pbx_concurrency` in all.
    pbx_slots: tokio::sync::Semaphore,
    store: Store,
    clock: Arc<dyn Clock>,
    tenant_id: String,
    config: ContactsSyncConfig,
}

/// A mailbox left alone until `retry_at` (Unix seconds), and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Skipped {
    reason: String,
    retry_at: i64,
}

impl Skipped {
    /// How a mailbox still left alone shows on the run.
    fn action(&self, src: &Source) -> ContactAction {
        ContactAction::Skip {
            item: src.label.clone(),
            mailbox: Some(src.mailbox.clone()),
            reason: format!("{}; skipped until {}", self.reason, when(self.retry_at)),
            retry_at: None,
        }
    }
}

impl ContactsWorker {
    pub fn new(
        config: &Config,
        graph: Arc<GraphClient>,
        pbx: Arc<PbxClient>,
        store: Store,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            graph,
            pbx,
            unwritten: std::sync::Mutex::default(),
            pbx_slots: tokio::sync::Semaphore::new(config.sync.contacts.pbx_concurrency),
            store,
            clock,
            tenant_id: config.entra.tenant_id.clone(),
            config: config.sync.contacts.clone(),
        }
    }

    /// Waits for a free slot for a call to 3CX (`pbx_concurrency`); held until dropped.
    async fn pbx_slot(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.pbx_slots.acquire().await.ok()
    }

    /// The shared mailboxes, then (with `personal`) every synced user with an extension.
    async fn sources(&self) -> Result<Vec<Source>, SyncError> {
        let mut sources: Vec<Source> = self
            .config
            .shared_mailboxes
            .iter()
            .map(|m| Source {
                mailbox: m.trim().to_string(),
                label: m.trim().to_string(),
                book: Book::Company,
            })
            .collect();
        if self.config.personal {
            let rows = self.store.directory_users(&self.tenant_id).await?;
            sources.extend(
                rows.into_iter()
                    .filter(|r| r.removed_at.is_none() && !r.extension.is_empty())
                    .map(|r| Source {
                        mailbox: r.object_id,
                        label: r.upn,
                        book: Book::Personal(r.extension),
                    }),
            );
        }
        Ok(sources)
    }

    /// The mailboxes left alone for now (none in a full run), by mailbox.
    async fn skips(&self, mode: Mode, now: i64) -> Result<HashMap<String, Skipped>, SyncError> {
        if mode == Mode::Full {
            return Ok(HashMap::new());
        }
        let items = self.store.items(ITEMS).await?;
        Ok(items
            .into_iter()
            .filter_map(|(k, v)| {
                let skip: Skipped = serde_json::from_str(&v).ok()?;
                let mailbox = k.strip_prefix(SKIP_ITEM)?.to_string();
                (skip.retry_at > now).then_some((mailbox, skip))
            })
            .collect())
    }
}

impl Worker for ContactsWorker {
    type Action = ContactAction;
    const NAME: &'static str = "contacts";

    /// The whole plan at once (the runner goes by [`Worker::plan_parts`]).
    async fn plan(&self, mode: Mode) -> Result<Plan<ContactAction>, SyncError> {
        let mut parts = std::pin::pin!(self.plan_parts(mode));
        let mut whole = Plan {
            mode,
            actions: Vec::new(),
            commit: Vec::new(),
        };
        while let Some(part) = parts.next().await {
            let part = part?;
            whole.actions.extend(part.actions);
            whole.commit.extend(part.commit);
        }
        Ok(whole)
    }

    fn plan_parts(
        &self,
        mode: Mode,
    ) -> impl futures_util::Stream<Item = Result<Plan<ContactAction>, SyncError>> + Send {
        futures_util::stream::unfold(Step::Start, move |step| self.step(mode, step))
    }

    async fn apply(&self, action: &ContactAction) -> Result<(), SyncError> {
        self.apply_action(action).await
    }

    fn concurrency(&self) -> usize {
        self.config.pbx_concurrency
    }

    async fn part_applied(&self) -> Result<(), SyncError> {
        self.write_links(0).await
    }
}

/// Runs `futures` `PARALLEL` at a time; the outputs come in the order they finish.
async fn unordered<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    futures_util::stream::iter(futures)
        .buffer_unordered(PARALLEL)
        .collect()
        .await
}

fn when(t: i64) -> String {
    jiff::Timestamp::from_second(t)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| t.to_string())
}
