//! When the workers run inside `serve`: users and contacts on an interval with a nightly
//! full run, presence on an interval plus a wake-up at each meeting boundary it knows of,
//! and the session recheck (always, by the clock).
//! One replica runs a worker at a time (the runner's lease); the others find it busy.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::contacts::ContactsWorker;
use super::presence::PresenceWorker;
use super::recheck::Recheck;
use super::users::UsersWorker;
use super::{Mode, RunStatus, Runner, SyncError, Worker};
use crate::clock::Clock;
use crate::config::{Config, Schedule};
use crate::directory::Revoker;
use crate::graph::GraphClient;
use crate::metrics::Metrics;
use crate::pbx::PbxClient;
use crate::store::Store;

/// The first run waits a little, so that a restart loop does not hammer Graph and 3CX.
const STARTUP_DELAY: Duration = Duration::from_secs(30);
/// A presence run that failed (Graph or 3CX down) is retried after this long.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(15);

/// The three workers and the runner that runs them.
pub struct Workers {
    pub users: Arc<UsersWorker>,
    pub contacts: Arc<ContactsWorker>,
    pub presence: Arc<PresenceWorker>,
    pub recheck: Arc<Recheck>,
    pub runner: Arc<Runner>,
    store: Store,
    clock: Arc<dyn Clock>,
}

impl Workers {
    pub fn new(
        config: &Config,
        graph: Arc<GraphClient>,
        pbx: Arc<PbxClient>,
        store: Store,
        revoker: Arc<Revoker>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (g, p, s, c) = (&graph, &pbx, &store, &clock);
        Self {
            users: Arc::new(UsersWorker::new(
                config,
                g.clone(),
                p.clone(),
                s.clone(),
                revoker.clone(),
                c.clone(),
            )),
            recheck: Arc::new(Recheck::new(
                config,
                g.clone(),
                revoker,
                s.clone(),
                c.clone(),
                metrics.clone(),
            )),
            contacts: Arc::new(ContactsWorker::new(
                config,
                g.clone(),
                p.clone(),
                s.clone(),
                c.clone(),
            )),
            presence: Arc::new(PresenceWorker::new(
                config,
                g.clone(),
                p.clone(),
                s.clone(),
                c.clone(),
            )),
            runner: Arc::new(Runner::new(store.clone(), clock.clone(), metrics)),
            store,
            clock,
        }
    }

    /// Starts the schedules of the enabled workers; each ends when `stop` turns true (a run
    /// in progress finishes its current item and records itself interrupted).
    pub fn spawn(
        self: &Arc<Self>,
        config: &Config,
        stop: watch::Receiver<bool>,
    ) -> Vec<JoinHandle<()>> {
        let sync = &config.sync;
        // Not a sync: it runs whatever `[sync.*]` says.
        let mut tasks = vec![tokio::spawn(self.recheck.clone().run(stop.clone()))];
        if sync.contacts.enabled {
            let (w, s) = (self.contacts.clone(), sync.contacts.schedule());
            tasks.push(tokio::spawn(self.clone().daily(w, s, stop.clone())));
        }
        if sync.users.enabled {
            let (w, s) = (self.users.clone(), sync.users.schedule());
            tasks.push(tokio::spawn(self.clone().daily(w, s, stop.clone())));
        }
        if sync.presence.enabled {
            let every = sync.presence.interval.get();
            tasks.push(tokio::spawn(self.clone().presence(every, stop)));
        }
        tasks
    }

    /// A worker with a nightly full run (users, contacts): a delta run every `every`, a
    /// full one at the first run after the daily time each day (and at the very first run).
    async fn daily<W: Worker>(
        self: Arc<Self>,
        worker: Arc<W>,
        schedule: Schedule,
        mut stop: watch::Receiver<bool>,
    ) {
        let full_state = format!("{}.last_full", W::NAME);
        let every = schedule.interval;
        let first = tokio::time::Instant::now() + STARTUP_DELAY.min(every);
        let mut tick = tokio::time::interval_at(first, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let last_full: i64 = self
                .store
                .state(&full_state)
                .await
                .ok()
                .flatten()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mode = match last_full < schedule.daily.last_due(self.clock.now()) {
                true => Mode::Full,
                false => Mode::Delta,
            };
            match self.runner.run(worker.as_ref(), mode, false, &stop).await {
                Ok(_) => {}
                Err(SyncError::Busy(_)) => tracing::debug!(worker = W::NAME, "runs elsewhere"),
                Err(e) => tracing::error!(worker = W::NAME, error = %e, "sync could not run"),
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    /// The presence worker's schedule: a read every `interval`, and in between a run at each
    /// meeting boundary the last read knows of, so statuses change on time. Run records
    /// older than a week are dropped now and then (a tick a minute adds up).
    async fn presence(self: Arc<Self>, interval: Duration, mut stop: watch::Receiver<bool>) {
        let mut next = tokio::time::Instant::now() + STARTUP_DELAY.min(interval);
        let mut pruned_at = 0;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = stop.changed() => return,
            }
            let now = self.clock.now();
            let ok = match self
                .runner
                .run(self.presence.as_ref(), Mode::Delta, false, &stop)
                .await
            {
                Ok(report) => report.status == RunStatus::Succeeded,
                Err(SyncError::Busy(_)) => {
                    tracing::debug!("presence runs elsewhere");
                    true
                }
                Err(e) => {
                    tracing::error!(error = %e, "presence sync could not run");
                    false
                }
            };
            if *stop.borrow() {
                return;
            }
            if now - pruned_at > 3600 {
                pruned_at = now;
                if let Err(e) = self.store.prune_runs("presence", now - 7 * 86_400).await {
                    tracing::warn!(error = %e, "pruning presence run records failed");
                }
            }
            // After a failure the last read is stale and "due" at once: back off instead.
            let wait = match ok {
                true => until_due(
                    self.presence.next_due(self.clock.now()),
                    self.clock.now_nanos(),
                ),
                false => RETRY_AFTER_FAILURE,
            };
            next = tokio::time::Instant::now() + wait.min(interval);
        }
    }
}

/// From `now_nanos` to just after the start of second `due`: the clock's `now` reads whole
/// seconds, so waking 50 ms into that second is the earliest moment it says `due`.
fn until_due(due: i64, now_nanos: i128) -> Duration {
    let due_nanos = i128::from(due) * 1_000_000_000;
    let wait = u64::try_from((due_nanos - now_nanos).max(0)).unwrap_or(u64::MAX);
    Duration::from_nanos(wait) + Duration::from_millis(50)
}

#[cfg(test)]
mod tests {
    use super::until_due;
    use std::time::Duration;

    #[test]
    fn waits_until_just_after_the_due_second() {
        let now = 1_000 * 1_000_000_000 + 300_000_000; // 1000.3 s
        assert_eq!(until_due(1_002, now), Duration::from_millis(1_750));
        assert_eq!(
            until_due(900, now),
            Duration::from_millis(50),
            "overdue runs at once"
        );
    }
}
