//! Plan-then-apply, one part of the plan at a time: the next part is planned while the
//! current one is applied (a few actions at once when the worker allows it), and each part's
//! `commit` is kept as soon as it is applied, as long as nothing failed in the run so far.

use std::pin::pin;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::watch;

use super::{Action, ItemError, Plan, RunReport, RunStatus, Runner, SyncError, Worker};

/// Rows of the table a real run keeps.
const ROWS_KEPT: usize = 1_000;
/// The lease is renewed at most this often while items are applied.
const RENEW_SECS: i64 = 10;

impl Runner {
    pub(super) async fn plan_and_apply<W: Worker>(
        &self,
        worker: &W,
        mode: super::Mode,
        dry_run: bool,
        stop: &watch::Receiver<bool>,
        report: &mut RunReport,
        lease: &str,
    ) -> Result<(), SyncError> {
        let mut parts = pin!(worker.plan_parts(mode));
        let mut next = parts.next().await;
        while let Some(part) = next {
            let plan = part?;
            count(&plan, dry_run, report);
            if dry_run {
                next = parts.next().await;
                continue;
            }
            let (done, following) = tokio::join!(
                self.apply_part(worker, &plan, stop, report, lease),
                parts.next()
            );
            // Records kept back are written even when an outage ends the run.
            let recorded = worker.part_applied().await;
            let done = done?;
            recorded?;
            if !done {
                report.status = RunStatus::Interrupted;
                return Ok(());
            }
            // The next delta starts from here only when every change was applied; otherwise
            // the same changes come again next run (the plan is idempotent).
            if report.errors.is_empty() {
                let now = self.clock.now();
                for (name, value) in &plan.commit {
                    self.store.set_state(name, value.as_deref(), now).await?;
                }
            }
            next = following;
        }
        report.status = RunStatus::Succeeded;
        Ok(())
    }

    /// Applies `plan`'s actions, `worker.concurrency()` at a time; false when `stop` turned
    /// true before all of them were started (those started are let finish).
    async fn apply_part<W: Worker>(
        &self,
        worker: &W,
        plan: &Plan<W::Action>,
        stop: &watch::Receiver<bool>,
        report: &mut RunReport,
        lease: &str,
    ) -> Result<bool, SyncError> {
        let limit = worker.concurrency().max(1);
        let mut todo = plan.actions.iter();
        let mut running = FuturesUnordered::new();
        let (mut finished, mut renewed) = (0, self.clock.now());
        loop {
            while running.len() < limit && !*stop.borrow() {
                let Some(a) = todo.next() else { break };
                running.push(apply_one(worker, a));
            }
            let Some((action, result)) = running.next().await else {
                break;
            };
            finished += 1;
            match result {
                Ok(()) => *report.applied.entry(action.kind()).or_default() += 1,
                Err(e) if e.is_outage() => return Err(e),
                Err(e) => {
                    tracing::warn!(item = %action.item(), action = action.kind(), error = %e, "sync item failed");
                    report.errors.push(ItemError {
                        item: action.item(),
                        action: action.kind().into(),
                        error: e.to_string(),
                    })
                }
            }
            let now = self.clock.now();
            if now - renewed >= RENEW_SECS {
                renewed = now;
                self.store
                    .acquire_lease(lease, &self.holder, now, now + super::LEASE_SECS)
                    .await?;
            }
        }
        Ok(finished == plan.actions.len())
    }
}

async fn apply_one<'a, W: Worker>(
    worker: &'a W,
    action: &'a W::Action,
) -> (&'a W::Action, Result<(), SyncError>) {
    (action, worker.apply(action).await)
}

/// The part's actions in the run's counts and, for a dry run, its table (a real run keeps
/// only the first `ROWS_KEPT` rows: a first contact sync plans 100,000 actions).
fn count<A: Action>(plan: &Plan<A>, dry_run: bool, report: &mut RunReport) {
    report.mode = plan.mode;
    for a in &plan.actions {
        *report.planned.entry(a.kind()).or_default() += 1;
        if dry_run || report.rows.len() < ROWS_KEPT {
            report
                .rows
                .push((a.kind().to_string(), a.item(), a.detail()));
        }
    }
}
