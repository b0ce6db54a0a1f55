//! The audit log: every console action is written before its outcome is shown (who, what,
//! on what, with which result, when, from where), and listed on `/admin/audit`.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use http::request::Parts;
use maud::html;

use super::Console;
use super::access::{Admin, admin};
use super::layout::{Frame, Section, when};
use crate::store::AuditRow;

/// How many entries the page lists.
const SHOWN: i64 = 200;

impl Console {
    /// Records one action. A failed write is logged with the whole entry, so the action
    /// is never lost from the record (the log is the second copy).
    pub async fn audit(&self, who: &Admin, action: &str, target: &str, detail: &str) {
        let row = AuditRow {
            id: crate::ids::request_id(),
            at: self.app.clock.now(),
            actor: who.upn.clone(),
            action: action.to_string(),
            target: target.to_string(),
            detail: detail.to_string(),
            client_addr: Some(who.client.clone()),
        };
        tracing::info!(actor = %row.actor, action, target, detail, client = %who.client, "admin action");
        if let Err(e) = self.app.store.insert_audit(&row).await {
            tracing::error!(error = %e, actor = %row.actor, action, target, detail, "admin action not written to the audit log");
        }
    }
}

/// `GET /admin/audit`.
pub async fn page(State(c): State<Arc<Console>>, parts: Parts) -> Response {
    let who = match admin(&c, &parts).await {
        Ok(a) => a,
        Err(res) => return res,
    };
    let t = who.lang.t();
    let rows = c.app.store.audit(SHOWN).await;
    let content = html! {
        @match &rows {
            Err(_) => p { (t.store_error) },
            Ok(rows) if rows.is_empty() => p.muted { (t.no_audit) },
            Ok(rows) => div.table { table {
                thead { tr { th { (t.when) } th { (t.who) } th { (t.what) } th { (t.target) } th { (t.outcome) } th { (t.client) } } }
                tbody { @for r in rows { tr {
                    td { (when(r.at)) } td.wrap { (r.actor) } td { code { (r.action) } }
                    td.wrap { (r.target) } td.wrap { (r.detail) }
                    td { (r.client_addr.as_deref().unwrap_or("")) }
                } } }
            } },
        }
    };
    Frame {
        lang: who.lang,
        section: Section::Audit,
        admin_upn: &who.upn,
        notice: None,
    }
    .page(content)
}
