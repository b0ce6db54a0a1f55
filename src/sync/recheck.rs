//! The session recheck (`[session] recheck`): every interval, the users with live sessions
//! are read from Entra through Graph (`$batch`, 20 users a call,
//! `GET /users/{id}?$select=id,accountEnabled,signInSessionsValidFromDateTime`), and a user
//! disabled in Entra, deleted from it (404 `Request_ResourceNotFound`), or whose sessions an
//! admin revoked there ("Revoke sessions" moves `signInSessionsValidFromDateTime` to now)
//! loses those sessions and the 3CX access behind them ([`Revoker`]).
//!
//! It runs whether or not the user sync is enabled; it needs the application permission
//! User.Read.All. A Graph outage, or an answer it cannot read, changes nothing: the sessions
//! stay, the failure is logged and counted, and the next interval tries again.
//!
//! One replica does the work: the one holding the `session.recheck` lease, which it keeps
//! while it runs and which another replica takes over once it lapses. Time comes from the
//! [`Clock`]: the loop wakes every second and runs when the clock says the interval is up,
//! so a test with a manual clock decides when a recheck happens.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;

use super::batch_get;
use crate::clock::Clock;
use crate::directory::{Reason, Revoker, object_id_of};
use crate::graph::{GraphClient, GraphError};
use crate::metrics::Metrics;
use crate::session::{SessionError, Sessions};
use crate::store::{Store, StoreError};

/// The properties read: `signInSessionsValidFromDateTime` and `accountEnabled` come only on
/// `$select` (resources/user.md).
pub const SELECT: &str = "id,accountEnabled,signInSessionsValidFromDateTime";
const LEASE: &str = "session.recheck";
/// How often the loop looks at the clock.
const POLL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum RecheckError {
    #[error("reading the live sessions failed: {0}")]
    Sessions(#[from] SessionError),
    #[error("the recheck lease: {0}")]
    Store(#[from] StoreError),
    #[error("Graph could not be asked: {0}")]
    Graph(#[from] GraphError),
}

/// What Graph says about a user, as far as sessions go.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserStatus {
    #[serde(default)]
    account_enabled: Option<bool>,
    #[serde(default)]
    sign_in_sessions_valid_from_date_time: Option<String>,
}

/// What one recheck found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecheckReport {
    /// Users read from Graph.
    pub users: u64,
    /// Sessions ended, by reason (`disabled`, `deleted`, `sessions_revoked`).
    pub revoked: BTreeMap<&'static str, u64>,
    /// Users Graph did not answer for (left as they are).
    pub unread: u64,
}

pub struct Recheck {
    graph: Arc<GraphClient>,
    sessions: Arc<Sessions>,
    revoker: Arc<Revoker>,
    store: Store,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    tenant_id: String,
    interval: i64,
    holder: String,
}

impl Recheck {
    pub fn new(
        config: &crate::config::Config,
        graph: Arc<GraphClient>,
        revoker: Arc<Revoker>,
        store: Store,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let id = crate::ids::random::<6>()
            .map(|b| crate::ids::hex(&b))
            .unwrap_or_default();
        Self {
            graph,
            sessions: revoker.sessions().clone(),
            revoker,
            store,
            clock,
            metrics,
            tenant_id: config.entra.tenant_id.clone(),
            interval: config.session.recheck.get().as_secs().max(1) as i64,
            holder: format!("{}-{id}", std::process::id()),
        }
    }

    /// Runs a recheck every interval (by the clock) until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut due = self.clock.now() + self.interval;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.changed() => break,
            }
            let now = self.clock.now();
            if now < due {
                continue;
            }
            due = now + self.interval;
            match self.hold_lease(now).await {
                Ok(true) => {}
                Ok(false) => continue, // another replica rechecks
                Err(e) => {
                    tracing::warn!(error = %e, "session recheck: lease unavailable");
                    continue;
                }
            }
            match self.once().await {
                Ok(r) if r.users > 0 => {
                    tracing::debug!(users = r.users, revoked = ?r.revoked, unread = r.unread, "session recheck")
                }
                Ok(_) => {}
                Err(e) => {
                    self.metrics.session_recheck(false, 0);
                    tracing::warn!(error = %e, "session recheck failed; sessions unchanged, retried next interval")
                }
            }
        }
        let _ = self.store.release_lease(LEASE, &self.holder).await;
    }

    /// Takes or keeps the lease for a little longer than an interval, so the holder keeps it
    /// from round to round and another replica takes over once it stops.
    async fn hold_lease(&self, now: i64) -> Result<bool, StoreError> {
        let until = now + self.interval + self.interval / 2;
        self.store
            .acquire_lease(LEASE, &self.holder, now, until)
            .await
    }

    /// One recheck of every user with a live session.
    pub async fn once(&self) -> Result<RecheckReport, RecheckError> {
        let live = self.sessions.live_sessions().await?;
        let mut oldest: BTreeMap<String, i64> = BTreeMap::new();
        for s in &live {
            if let Some(oid) = object_id_of(&s.user_key, &self.tenant_id) {
                let e = oldest.entry(oid.to_string()).or_insert(s.created_at);
                *e = (*e).min(s.created_at);
            }
        }
        let mut report = RecheckReport::default();
        if oldest.is_empty() {
            return Ok(report);
        }
        let oids: Vec<&String> = oldest.keys().collect();
        let requests = oids
            .iter()
            .enumerate()
            .map(|(i, oid)| batch_get(i, format!("/users/{oid}?$select={SELECT}")))
            .collect();
        let answers = self.graph.batch(requests).await?;
        report.users = oids.len() as u64;
        for (oid, answer) in oids.iter().zip(&answers) {
            let verdict = match answer.error(oid) {
                None => match serde_json::from_value::<UserStatus>(answer.body.clone()) {
                    Ok(status) => judge(&status, oldest[*oid]),
                    Err(e) => {
                        tracing::warn!(oid = %oid, error = %e, "session recheck: unreadable user");
                        report.unread += 1;
                        continue;
                    }
                },
                Some(GraphError::NotFound(_)) => Verdict::End(Reason::Deleted),
                Some(e) => {
                    tracing::warn!(oid = %oid, error = %e, "session recheck: Graph did not answer for a user; left as is");
                    report.unread += 1;
                    continue;
                }
            };
            let ended = match verdict {
                Verdict::Keep => continue,
                Verdict::End(reason) => self
                    .revoker
                    .revoke_user(oid, reason)
                    .await
                    .map(|n| (reason, n)),
                Verdict::EndBefore(t) => self
                    .revoker
                    .revoke_user_before(oid, t)
                    .await
                    .map(|n| (Reason::SessionsRevoked, n)),
            };
            match ended {
                Ok((reason, n)) => {
                    if n > 0 {
                        tracing::info!(oid = %oid, reason = reason.as_str(), sessions = n, "session recheck ended sessions");
                    }
                    *report.revoked.entry(reason.as_str()).or_default() += n;
                }
                Err(e) => {
                    tracing::error!(oid = %oid, error = %e, "session recheck could not end access")
                }
            }
        }
        self.metrics
            .session_recheck(report.unread < report.users, report.users);
        Ok(report)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Keep,
    End(Reason),
    /// End the sessions started before this time.
    EndBefore(i64),
}

/// What a user's status means for sessions, the oldest of which started at `oldest`.
fn judge(status: &UserStatus, oldest: i64) -> Verdict {
    if status.account_enabled == Some(false) {
        return Verdict::End(Reason::Disabled);
    }
    let valid_from = status
        .sign_in_sessions_valid_from_date_time
        .as_deref()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_second());
    match valid_from {
        Some(t) if oldest < t => Verdict::EndBefore(t),
        _ => Verdict::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(enabled: Option<bool>, from: Option<&str>) -> UserStatus {
        UserStatus {
            account_enabled: enabled,
            sign_in_sessions_valid_from_date_time: from.map(str::to_string),
        }
    }

    #[test]
    fn disabled_users_and_revoked_sessions_end() {
        let t = "2027-01-15T08:00:00Z".parse::<jiff::Timestamp>().unwrap();
        let t = t.as_second();
        assert_eq!(
            judge(&status(Some(false), None), 0),
            Verdict::End(Reason::Disabled)
        );
        let from = Some("2027-01-15T08:00:00Z");
        assert_eq!(
            judge(&status(Some(true), from), t - 1),
            Verdict::EndBefore(t)
        );
        assert_eq!(judge(&status(Some(true), from), t), Verdict::Keep);
        assert_eq!(judge(&status(Some(true), from), t + 1), Verdict::Keep);
        // Fractional seconds, as Graph may send them; no value at all.
        let frac = Some("2027-01-15T08:00:00.1234567Z");
        assert_eq!(judge(&status(None, frac), t - 1), Verdict::EndBefore(t));
        assert_eq!(judge(&status(Some(true), None), 0), Verdict::Keep);
        assert_eq!(
            judge(&status(Some(true), Some("garbage")), 0),
            Verdict::Keep
        );
    }
}
