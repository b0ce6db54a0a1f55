//! The sync workers' framework (DESIGN §4): one run at a time through a lease in the store,
//! plan-then-apply, a run record (planned and applied counts per action, per-item errors)
//! in the store and in metrics, and graceful interruption.
//!
//! A failure on one item never aborts a run; an outage of Graph, 3CX or the store does, and
//! the run is recorded as failed. Plans are computed from the current state each time, so a
//! rerun after any failure or a crash converges without duplicates.

pub mod contacts;
mod parts;
pub mod presence;
pub mod recheck;
pub mod schedule;
pub mod users;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::directory::RevokeError;
use crate::graph::{BatchRequest, GraphError};
use crate::pbx::PbxError;
use crate::session::SessionError;
use crate::store::{RunRow, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Pbx(#[from] PbxError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("another replica is running the {0} worker")]
    Busy(&'static str),
    /// Ending a removed user's sessions failed.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// Ending a removed user's sessions or 3CX access failed; the removal is retried.
    #[error(transparent)]
    Revoke(#[from] RevokeError),
    /// Neither `extension_start` nor 3CX's first free number is a number.
    #[error("extension number {start:?} is not numeric")]
    ExtensionNumber {
        start: String,
        #[source]
        source: std::num::ParseIntError,
    },
    /// Graph could not say a user's free/busy this time; `reason` is Graph's or 3CX's answer.
    #[error("{reason}")]
    Unread { reason: String },
}

impl SyncError {
    /// An outage ends the run; anything else is one item's problem.
    pub fn is_outage(&self) -> bool {
        match self {
            Self::Pbx(e) => e.is_outage(),
            Self::Graph(e) => matches!(
                e,
                GraphError::Unreachable(_) | GraphError::Throttled(_) | GraphError::Token(_)
            ),
            Self::Store(_) => true,
            // A session store failure stays one user's problem, as it always was.
            Self::Busy(_)
            | Self::Session(_)
            | Self::Revoke(_)
            | Self::ExtensionNumber { .. }
            | Self::Unread { .. } => false,
        }
    }
}

/// Delta: what changed since the last run. Full: everything, reconciled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Delta,
    Full,
}

/// One planned change.
pub trait Action: Send + Sync {
    /// The action's kind, the key of the counts: `create`, `update`, …
    fn kind(&self) -> &'static str;
    /// The item it concerns, e.g. the user's UPN.
    fn item(&self) -> String;
    /// What it changes, for the dry-run table.
    fn detail(&self) -> String;
}

/// What a run will do, and what to remember once it has all been done.
pub struct Plan<A> {
    pub mode: Mode,
    pub actions: Vec<A>,
    /// `sync_state` entries to store after a clean run (e.g. the next delta link).
    pub commit: Vec<(String, Option<String>)>,
}

/// A worker: plans from the current state of both sides, applies `concurrency` actions at a time.
pub trait Worker: Send + Sync {
    type Action: Action;
    const NAME: &'static str;
    fn plan(
        &self,
        mode: Mode,
    ) -> impl Future<Output = Result<Plan<Self::Action>, SyncError>> + Send;
    fn apply(&self, action: &Self::Action) -> impl Future<Output = Result<(), SyncError>> + Send;
    /// The plan in parts, each planned while the one before is applied, so that a big run
    /// holds about two parts at a time. Parts must not depend on each other's writes. The
    /// default is the whole plan as one part.
    fn plan_parts(
        &self,
        mode: Mode,
    ) -> impl futures_util::Stream<Item = Result<Plan<Self::Action>, SyncError>> + Send {
        futures_util::stream::once(self.plan(mode))
    }
    /// How many actions of a part may be applied at the same time (default one).
    fn concurrency(&self) -> usize {
        1
    }
    /// Called when every action of a part has been applied, before its `commit` is kept
    /// (e.g. to write records kept back to write them together).
    fn part_applied(&self) -> impl Future<Output = Result<(), SyncError>> + Send {
        async { Ok(()) }
    }
}

/// A per-item failure, recorded on the run.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ItemError {
    pub item: String,
    pub action: String,
    pub error: String,
}

/// Where a run stands. The lowercase names are what the store's run records, the metrics'
/// `status` label and `pbxgate sync`'s output show, so they must not change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The record of one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub id: String,
    pub worker: &'static str,
    pub mode: Mode,
    pub dry_run: bool,
    pub status: RunStatus,
    pub planned: BTreeMap<&'static str, u64>,
    pub applied: BTreeMap<&'static str, u64>,
    pub errors: Vec<ItemError>,
    pub message: Option<String>,
    /// The planned actions as table rows (kind, item, detail), for `--dry-run`.
    #[serde(skip)]
    pub rows: Vec<(String, String, String)>,
}

/// Runs workers under a lease and records each run.
pub struct Runner {
    store: Store,
    clock: Arc<dyn Clock>,
    holder: String,
    metrics: Arc<crate::metrics::Metrics>,
}

/// A lease outlives a run that hangs by this much; it is renewed as items are applied.
const LEASE_SECS: i64 = 600;

impl Runner {
    pub fn new(store: Store, clock: Arc<dyn Clock>, metrics: Arc<crate::metrics::Metrics>) -> Self {
        let id = crate::ids::random::<6>()
            .map(|b| crate::ids::hex(&b))
            .unwrap_or_default();
        Self {
            store,
            clock,
            holder: format!("{}-{id}", std::process::id()),
            metrics,
        }
    }

    /// One run of `worker`. `stop` turning true lets the current item finish, then records the
    /// run as interrupted.
    pub async fn run<W: Worker>(
        &self,
        worker: &W,
        mode: Mode,
        dry_run: bool,
        stop: &watch::Receiver<bool>,
    ) -> Result<RunReport, SyncError> {
        let lease = format!("worker:{}", W::NAME);
        let now = self.clock.now();
        if !self
            .store
            .acquire_lease(&lease, &self.holder, now, now + LEASE_SECS)
            .await?
        {
            return Err(SyncError::Busy(W::NAME));
        }
        let mut report = RunReport {
            id: crate::ids::request_id(),
            worker: W::NAME,
            mode,
            dry_run,
            status: RunStatus::Running,
            planned: BTreeMap::new(),
            applied: BTreeMap::new(),
            errors: Vec::new(),
            message: None,
            rows: Vec::new(),
        };
        self.store.insert_run(&self.row(&report, None)).await?;
        let result = self
            .plan_and_apply(worker, mode, dry_run, stop, &mut report, &lease)
            .await;
        if let Err(e) = result {
            tracing::error!(worker = W::NAME, error = %e, "sync run failed");
            report.status = RunStatus::Failed;
            report.message = Some(e.to_string());
        }
        self.store
            .update_run(&self.row(&report, Some(self.clock.now())))
            .await?;
        self.store.release_lease(&lease, &self.holder).await?;
        self.metrics
            .sync_run(W::NAME, report.status.as_str(), &report.applied);
        tracing::info!(
            worker = W::NAME,
            status = report.status.as_str(),
            planned = ?report.planned,
            applied = ?report.applied,
            errors = report.errors.len(),
            "sync run finished"
        );
        Ok(report)
    }

    fn row(&self, r: &RunReport, ended_at: Option<i64>) -> RunRow {
        RunRow {
            id: r.id.clone(),
            worker: r.worker.to_string(),
            mode: format!("{:?}", r.mode).to_lowercase(),
            dry_run: r.dry_run,
            status: r.status.as_str().to_string(),
            started_at: self.clock.now(),
            ended_at,
            planned: to_json(&r.planned),
            applied: to_json(&r.applied),
            errors: to_json(&r.errors),
            message: r.message.clone(),
        }
    }
}

/// A delete that finds nothing (404) has done its job: the entry went in an earlier run that
/// crashed before recording it, or someone removed it by hand.
pub(crate) fn already_gone_is_fine(r: Result<(), PbxError>) -> Result<(), PbxError> {
    match r {
        Err(PbxError::Api { status: 404, .. }) => Ok(()),
        other => other,
    }
}

/// A `GET` for a `$batch` call; `i` is its id, so answers can be matched to requests.
pub(crate) fn batch_get(i: usize, url: String) -> BatchRequest {
    BatchRequest {
        id: i.to_string(),
        method: "GET".into(),
        url,
        body: None,
        headers: None,
    }
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

impl RunReport {
    /// The plan as a readable table, for `pbxgate sync … --dry-run`.
    pub fn table(&self) -> String {
        let width = |col: fn(&(String, String, String)) -> &String, min: usize| {
            self.rows.iter().map(|r| col(r).len()).fold(min, usize::max)
        };
        let (w0, w1) = (width(|r| &r.0, 6), width(|r| &r.1, 4));
        let mut out = format!("{:<w0$}  {:<w1$}  DETAIL\n", "ACTION", "ITEM");
        for (kind, item, detail) in &self.rows {
            out.push_str(&format!("{kind:<w0$}  {item:<w1$}  {detail}\n"));
        }
        let counts: Vec<String> = self
            .planned
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        out.push_str(&format!(
            "\n{} planned ({})\n",
            self.planned.values().sum::<u64>(),
            if counts.is_empty() {
                "nothing to do".into()
            } else {
                counts.join(", ")
            }
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_statuses_read_the_same_everywhere() {
        for s in [
            RunStatus::Running,
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::Interrupted,
        ] {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(s.to_string(), s.as_str());
        }
        assert_eq!(RunStatus::Succeeded.as_str(), "succeeded");
    }

    #[test]
    fn item_errors_read_as_before_and_are_no_outage() {
        let start = "1x0".to_string();
        let source = start.parse::<u64>().unwrap_err();
        let e = SyncError::ExtensionNumber { start, source };
        assert_eq!(e.to_string(), "extension number \"1x0\" is not numeric");
        assert!(std::error::Error::source(&e).is_some());
        let e = SyncError::Unread {
            reason: "extension 101 is not in 3CX".into(),
        };
        assert_eq!(e.to_string(), "extension 101 is not in 3CX");
        assert!(!e.is_outage());
    }
}
