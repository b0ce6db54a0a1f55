//! `/admin`: the installation status. The doctor's last checklist (and a button to check
//! now), the build, how long this replica runs, the replicas that share the store, and
//! links to the sections.

use std::sync::Arc;

use axum::extract::{Form, State};
use axum::response::Response;
use http::request::Parts;
use maud::{Markup, html};

use super::access::{admin, admin_post};
use super::i18n::{Lang, check_title};
use super::layout::{Frame, Section, took, when};
use super::{Console, CsrfForm, done, notice};
use crate::config::Config;
use crate::doctor::{Area, Check, Report, Status};

/// Replicas that wrote a heartbeat this recently are listed.
const REPLICAS_SEEN: i64 = 300;

/// The admin-consent URL to show when a Graph permission is missing (the same link
/// `pbxgate setup --print` prints).
pub fn consent_url(config: &Config) -> Option<String> {
    Some(crate::setup::consent_url(config))
}

/// `GET /admin`.
pub async fn page(State(c): State<Arc<Console>>, parts: Parts) -> Response {
    let who = match admin(&c, &parts).await {
        Ok(a) => a,
        Err(res) => return res,
    };
    let (lang, t) = (who.lang, who.lang.t());
    let now = c.app.clock.now();
    let replicas = c.app.store.replicas(now - REPLICAS_SEEN).await;
    let report = c.app.doctor.latest();
    let content = html! {
        section.card {
            h2 { (t.installation) }
            (checklist(lang, report.as_deref(), consent_url(&c.app.config)))
            form.row method="post" action="/admin/check" {
                (super::layout::csrf_field(&who.csrf))
                button type="submit" { (t.check_now) }
            }
        }
        section.card {
            dl.facts {
                dt { (t.version) } dd { (super::VERSION) }
                dt { (t.uptime) } dd { (when(c.started_at)) " (" (took(now - c.started_at)) ")" }
            }
        }
        h2 { (t.replicas) }
        @match &replicas {
            Err(_) => p { (t.store_error) },
            Ok(rows) => div.table { table {
                thead { tr { th { (t.replica) } th { (t.version) } th { (t.started) } th { (t.last_seen) } } }
                tbody { @for r in rows { tr {
                    td.wrap { (r.id) @if r.id == c.replica { " ◀" } }
                    td { (r.version) } td { (when(r.started_at)) } td { (when(r.seen_at)) }
                } } }
            } },
        }
        h2 { (t.sync) " · " (t.directory) " · " (t.sessions) " · " (t.audit) }
        ul { @for s in &Section::ALL[1..] { li { a href=(s.path()) { (s.title(lang)) } } } }
    };
    Frame {
        lang,
        section: Section::Overview,
        admin_upn: &who.upn,
        notice: notice(lang, &parts),
    }
    .page(content)
}

fn checklist(lang: Lang, report: Option<&Report>, consent: Option<String>) -> Markup {
    let t = lang.t();
    let Some(report) = report else {
        return html! { p.muted { (t.not_checked) } };
    };
    let graph_failed = report
        .checks
        .iter()
        .any(|c| c.area == Area::Graph && c.status == Status::Fail);
    html! {
        p.muted { (t.checked_at) " " (when(report.checked_at)) }
        div.table { table {
            tbody { @for c in &report.checks { (check_row(lang, c)) } }
        } }
        @if let (true, Some(url)) = (graph_failed, consent) {
            p { a href=(url) rel="noopener noreferrer" { (t.consent) } }
        }
    }
}

fn check_row(lang: Lang, c: &Check) -> Markup {
    let t = lang.t();
    let (class, label) = match c.status {
        Status::Pass => ("pass", format!("✔ {}", t.status_pass)),
        Status::Warn => ("warn", format!("! {}", t.status_warn)),
        Status::Fail => ("fail", format!("✘ {}", t.status_fail)),
        Status::Skip => ("skip", format!("– {}", t.status_skip)),
    };
    html! { tr {
        td class=(class) { (label) }
        td.wrap {
            strong { (check_title(lang, c.id).unwrap_or(&c.title)) }
            @if !c.detail.is_empty() { br; span.muted { (c.detail) } }
            @if let Some(fix) = &c.fix { br; (t.fix) ": " (fix) }
        }
    } }
}

/// `POST /admin/check`: runs the doctor now.
pub async fn check_now(
    State(c): State<Arc<Console>>,
    parts: Parts,
    Form(form): Form<CsrfForm>,
) -> Response {
    let who = match admin_post(&c, &parts, &form.csrf).await {
        Ok(a) => a,
        Err(res) => return res,
    };
    let report = c.app.doctor.refresh().await;
    let failed = report
        .checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .count();
    let detail = format!("{} checks, {failed} failed", report.checks.len());
    c.audit(&who, "doctor.check", "installation", &detail).await;
    done(Section::Overview, "checked")
}
