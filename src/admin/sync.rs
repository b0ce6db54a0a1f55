//! `/admin/sync`: each worker's state (enabled, schedule, next run, last runs from the run
//! records) with "dry run" (the plan as a table; changes nothing) and "run now" (through
//! the runner, so under the worker's lease like every scheduled run).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Form, Path, State};
use axum::response::Response;
use http::request::Parts;
use maud::{Markup, html};

use super::access::{Admin, admin, admin_post};
use super::i18n::Lang;
use super::layout::{Frame, Section, button_form, took, when};
use super::{Console, CsrfForm, done, notice};
use crate::app::App;
use crate::store::RunRow;
use crate::sync::{ItemError, Mode, RunReport, SyncError};

/// How many runs per worker the page lists.
const RUNS_SHOWN: i64 = 5;
/// The scheduler's first run waits this long after start (`sync::schedule`).
const FIRST_RUN_DELAY: i64 = 30;
/// How long "run now" waits for the run before it answers "started" (it goes on).
const RUN_WAIT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Users,
    Contacts,
    Presence,
}

impl Which {
    const ALL: [Which; 3] = [Which::Users, Which::Contacts, Which::Presence];

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.name() == name)
    }

    fn name(self) -> &'static str {
        match self {
            Which::Users => "users",
            Which::Contacts => "contacts",
            Which::Presence => "presence",
        }
    }

    fn enabled(self, app: &App) -> bool {
        let s = &app.config.sync;
        match self {
            Which::Users => s.users.enabled,
            Which::Contacts => s.contacts.enabled,
            Which::Presence => s.presence.enabled,
        }
    }

    fn schedule(self, app: &App, lang: Lang) -> String {
        let (s, t) = (&app.config.sync, lang.t());
        let daily = |every: &dyn std::fmt::Display, at: &dyn std::fmt::Display, tz: &str| {
            format!("{} {every}, {} {at} ({tz})", t.every, t.full_daily_at)
        };
        match self {
            Which::Users => daily(
                &s.users.interval,
                &s.users.full_sync_at,
                s.users.time_zone.name(),
            ),
            Which::Contacts => daily(
                &s.contacts.interval,
                &s.contacts.full_sync_at,
                s.contacts.time_zone.name(),
            ),
            Which::Presence => format!("{} {}", t.every, s.presence.interval),
        }
    }

    /// When the schedule runs the worker next, from its last scheduled (not dry) run, or
    /// the first run's delay after start.
    fn next_run(self, app: &App, started: i64, runs: &[RunRow]) -> Option<i64> {
        if !self.enabled(app) {
            return None;
        }
        let now = app.clock.now();
        let s = &app.config.sync;
        let interval = match self {
            Which::Users => s.users.interval.get(),
            Which::Contacts => s.contacts.interval.get(),
            Which::Presence => return Some(app.workers.presence.next_due(now)),
        };
        let next = match runs.iter().find(|r| !r.dry_run) {
            Some(last) => last.started_at + interval.as_secs() as i64,
            None => started + FIRST_RUN_DELAY,
        };
        Some(next.max(now))
    }
}

/// One run of `which`, as the scheduler would start it (a delta run).
async fn run(app: &App, which: Which, dry_run: bool) -> Result<RunReport, SyncError> {
    // Nobody stops an admin's run early; the sender's end is dropped at once.
    let stop = tokio::sync::watch::channel(false).1;
    let (w, runner) = (&app.workers, &app.workers.runner);
    match which {
        Which::Users => runner.run(&*w.users, Mode::Delta, dry_run, &stop).await,
        Which::Contacts => runner.run(&*w.contacts, Mode::Delta, dry_run, &stop).await,
        Which::Presence => runner.run(&*w.presence, Mode::Delta, dry_run, &stop).await,
    }
}

/// `GET /admin/sync`.
pub async fn page(State(c): State<Arc<Console>>, parts: Parts) -> Response {
    let who = match admin(&c, &parts).await {
        Ok(a) => a,
        Err(res) => return res,
    };
    let content = workers(&c, &who).await;
    Frame {
        lang: who.lang,
        section: Section::Sync,
        admin_upn: &who.upn,
        notice: notice(who.lang, &parts),
    }
    .page(content)
}

async fn workers(c: &Console, who: &Admin) -> Markup {
    let mut out = Vec::new();
    for which in Which::ALL {
        let runs = c.app.store.runs(which.name(), RUNS_SHOWN).await;
        out.push(worker(c, who, which, runs.as_deref().ok()));
    }
    html! { @for m in out { (m) } }
}

fn worker(c: &Console, who: &Admin, which: Which, runs: Option<&[RunRow]>) -> Markup {
    let (lang, t) = (who.lang, who.lang.t());
    let enabled = which.enabled(&c.app);
    let base = format!("/admin/sync/{}", which.name());
    html! {
        section.card id=(which.name()) {
            h2 { (which.name()) " — " (if enabled { t.enabled } else { t.disabled }) }
            dl.facts {
                dt { (t.schedule) } dd { (which.schedule(&c.app, lang)) }
                dt { (t.next_run) } dd {
                    (runs.and_then(|r| which.next_run(&c.app, c.started_at, r)).map_or("—".into(), when))
                }
            }
            div.actions {
                (button_form(&format!("{base}/dry-run"), &who.csrf, &[], t.dry_run))
                @if enabled { (button_form(&format!("{base}/run"), &who.csrf, &[], t.run_now)) }
            }
            h2 { (t.last_runs) }
            @match runs {
                None => p { (t.store_error) },
                Some([]) => p.muted { (t.no_runs) },
                Some(runs) => (run_table(lang, runs)),
            }
        }
    }
}

fn run_table(lang: Lang, runs: &[RunRow]) -> Markup {
    let t = lang.t();
    html! { div.table { table {
        thead { tr {
            th { (t.started) } th { (t.took) } th { (t.mode) } th { (t.status) }
            th { (t.planned) } th { (t.applied) } th { (t.errors) }
        } }
        tbody { @for r in runs { tr {
            td { (when(r.started_at)) }
            td { (r.ended_at.map_or("…".into(), |e| took(e - r.started_at))) }
            td { (r.mode) @if r.dry_run { " (" (t.dry_run) ")" } }
            td { (r.status) @if let Some(m) = &r.message { br; span.muted { (m) } } }
            td { (counts(&r.planned)) }
            td { (counts(&r.applied)) }
            td.wrap { @for e in item_errors(&r.errors) {
                (e.action) " " (e.item) ": " (e.error) br;
            } }
        } } }
    } } }
}

/// A run record's `{"create": 2, …}` as `create 2, …`.
fn counts(json: &str) -> String {
    let map: BTreeMap<String, u64> = serde_json::from_str(json).unwrap_or_default();
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn item_errors(json: &str) -> Vec<ItemError> {
    #[derive(serde::Deserialize)]
    struct Stored {
        item: String,
        action: String,
        error: String,
    }
    let stored: Vec<Stored> = serde_json::from_str(json).unwrap_or_default();
    stored
        .into_iter()
        .map(|s| ItemError {
            item: s.item,
            action: s.action,
            error: s.error,
        })
        .collect()
}

/// The checks of a worker's POST: an admin's same-origin POST with the CSRF token, for a
/// worker that exists (and passes `allowed`); otherwise the answer to send instead.
async fn posted(
    c: &Console,
    name: &str,
    parts: Parts,
    csrf: &str,
    allowed: impl Fn(Which) -> bool,
) -> Result<(Admin, Which), Response> {
    let who = admin_post(c, &parts, csrf).await?;
    match Which::parse(name).filter(|w| allowed(*w)) {
        Some(which) => Ok((who, which)),
        None => Err(super::not_found(parts).await),
    }
}

/// `POST /admin/sync/{worker}/dry-run`: the plan as a table; nothing changes.
pub async fn dry_run(
    State(c): State<Arc<Console>>,
    Path(name): Path<String>,
    parts: Parts,
    Form(form): Form<CsrfForm>,
) -> Response {
    let (who, which) = match posted(&c, &name, parts, &form.csrf, |_| true).await {
        Ok(p) => p,
        Err(res) => return res,
    };
    let t = who.lang.t();
    let result = run(&c.app, which, true).await;
    let (detail, shown) = match &result {
        Ok(r) => (format!("{} planned", r.rows.len()), plan_table(who.lang, r)),
        Err(SyncError::Busy(_)) => ("busy".into(), html! { p { (t.busy) } }),
        Err(e) => (
            format!("failed: {e}"),
            html! { p.fail { (t.run_failed) ": " (e.to_string()) } },
        ),
    };
    c.audit(&who, "sync.dry_run", which.name(), &detail).await;
    let content = html! {
        section.card #plan {
            h2 { (which.name()) " — " (t.dry_run_title) }
            (shown)
        }
        (workers(&c, &who).await)
    };
    Frame {
        lang: who.lang,
        section: Section::Sync,
        admin_upn: &who.upn,
        notice: None,
    }
    .page(content)
}

fn plan_table(lang: Lang, report: &RunReport) -> Markup {
    let t = lang.t();
    if report.rows.is_empty() {
        return html! { p { (t.nothing_to_do) } };
    }
    html! { div.table { table.plan {
        thead { tr { th { (t.action) } th { (t.item) } th { (t.detail) } } }
        tbody { @for (kind, item, detail) in &report.rows { tr {
            td { (kind) } td.wrap { (item) } td.wrap { (detail) }
        } } }
    } } }
}

/// `POST /admin/sync/{worker}/run`: a run now, under the lease. Answers when the run is
/// done, or after [`RUN_WAIT`] with "started" while it goes on.
pub async fn run_now(
    State(c): State<Arc<Console>>,
    Path(name): Path<String>,
    parts: Parts,
    Form(form): Form<CsrfForm>,
) -> Response {
    let (who, which) = match posted(&c, &name, parts, &form.csrf, |w| w.enabled(&c.app)).await {
        Ok(p) => p,
        Err(res) => return res,
    };
    let app = c.app.clone();
    let task = tokio::spawn(async move { run(&app, which, false).await });
    let (detail, key) = match tokio::time::timeout(RUN_WAIT, task).await {
        Ok(Ok(Ok(r))) => (
            format!(
                "{}: applied {}, {} errors",
                r.status,
                counts(&serde_json::to_string(&r.applied).unwrap_or_default()),
                r.errors.len()
            ),
            "run_done",
        ),
        Ok(Ok(Err(SyncError::Busy(_)))) => ("busy".to_string(), "busy"),
        Ok(Ok(Err(e))) => (format!("failed: {e}"), "run_failed"),
        Ok(Err(e)) => (format!("failed: {e}"), "run_failed"),
        Err(_) => ("started; still running".to_string(), "run_started"),
    };
    c.audit(&who, "sync.run", which.name(), &detail).await;
    done(Section::Sync, key)
}
