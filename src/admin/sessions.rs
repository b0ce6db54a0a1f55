//! `/admin/sessions`: the live sessions per user (start, last use, client address,
//! browser), and ending one or all of a user's through the [`crate::directory::Revoker`],
//! which ends the 3CX access behind them as every revocation does.

use std::sync::Arc;

use axum::extract::{Form, State};
use axum::response::Response;
use http::request::Parts;
use maud::html;
use serde::Deserialize;

use super::access::{admin, admin_post};
use super::layout::{Frame, Section, button_form, when};
use super::{Console, done, notice};
use crate::directory::{Reason, object_id_of};

/// How many sessions the page lists.
const SHOWN: i64 = 500;

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RevokeForm {
    csrf: String,
    /// One session, by its stored hash.
    session: String,
    /// Every session of this user key.
    user: String,
}

/// `GET /admin/sessions`.
pub async fn page(State(c): State<Arc<Console>>, parts: Parts) -> Response {
    let who = match admin(&c, &parts).await {
        Ok(a) => a,
        Err(res) => return res,
    };
    let (lang, t) = (who.lang, who.lang.t());
    let listed = c.app.sessions.listed(SHOWN).await;
    let content = html! {
        @match &listed {
            Err(_) => p { (t.store_error) },
            Ok(rows) if rows.is_empty() => p.muted { (t.no_sessions) },
            Ok(rows) => div.table { table.sessions {
                thead { tr {
                    th { (t.user) } th { (t.extension) } th { (t.session_started) } th { (t.last_use) }
                    th { (t.client) } th { (t.user_agent) } th {}
                } }
                tbody { @for (i, s) in rows.iter().enumerate() {
                    @let first = i == 0 || rows[i - 1].user_key != s.user_key;
                    tr {
                        td.wrap {
                            (s.upn) @if s.meta.is_admin { " " span.muted { "(" (t.admin) ")" } }
                            @if first { br; (button_form("/admin/sessions/revoke", &who.csrf, &[("user", &s.user_key)], t.revoke_all)) }
                        }
                        td { (s.extension) }
                        td { (when(s.created_at)) }
                        td { (when(s.last_seen_at)) }
                        td { (s.meta.client_addr.as_deref().unwrap_or("")) }
                        td.wrap.muted { (s.meta.user_agent.as_deref().unwrap_or("")) }
                        td { (button_form("/admin/sessions/revoke", &who.csrf, &[("session", &s.id_hash)], t.revoke)) }
                    }
                } }
            } },
        }
    };
    Frame {
        lang,
        section: Section::Sessions,
        admin_upn: &who.upn,
        notice: notice(lang, &parts),
    }
    .page(content)
}

/// `POST /admin/sessions/revoke`: `session=<hash>` ends one, `user=<key>` every one of
/// that user's.
pub async fn revoke(
    State(c): State<Arc<Console>>,
    parts: Parts,
    Form(form): Form<RevokeForm>,
) -> Response {
    let who = match admin_post(&c, &parts, &form.csrf).await {
        Ok(a) => a,
        Err(res) => return res,
    };
    let revoker = &c.app.revoker;
    let tenant = &c.app.config.entra.tenant_id;
    if !form.session.is_empty() {
        let target = format!("session {}…", form.session.get(..12).unwrap_or(""));
        let (detail, key) = match revoker.revoke_session(&form.session, Reason::Admin).await {
            Ok(true) => ("ended".to_string(), "revoked"),
            Ok(false) => ("not live".to_string(), "revoked"),
            Err(e) => (format!("failed: {e}"), "revoke_failed"),
        };
        c.audit(&who, "session.revoke", &target, &detail).await;
        return done(Section::Sessions, key);
    }
    let Some(oid) = object_id_of(&form.user, tenant) else {
        c.audit(
            &who,
            "session.revoke_user",
            &form.user,
            "refused: unknown user",
        )
        .await;
        return done(Section::Sessions, "revoke_failed");
    };
    let (detail, key) = match revoker.revoke_user(oid, Reason::Admin).await {
        Ok(n) => (format!("{n} sessions ended"), "revoked_all"),
        Err(e) => (format!("failed: {e}"), "revoke_failed"),
    };
    c.audit(&who, "session.revoke_user", &form.user, &detail)
        .await;
    done(Section::Sessions, key)
}
