//! `/admin/directory`: search the directory by name, UPN or extension; each user's
//! extension, how it was matched and the last sign-in; add and remove overrides.

use std::sync::Arc;

use axum::extract::{Form, Query, State};
use axum::response::Response;
use http::request::Parts;
use maud::{Markup, html};
use serde::Deserialize;

use super::access::{admin, admin_post};
use super::i18n::Lang;
use super::layout::{Frame, Section, button_form, csrf_field, when};
use super::{Console, done, notice};
use crate::directory::{canonical_upn, suffix_aliases};
use crate::store::{DirectoryEntry, OverrideRow};

/// How many users a search lists.
const SHOWN: i64 = 200;

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Search {
    q: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct OverrideForm {
    csrf: String,
    upn: String,
    extension: String,
}

/// `GET /admin/directory?q=…`.
pub async fn page(
    State(c): State<Arc<Console>>,
    Query(search): Query<Search>,
    parts: Parts,
) -> Response {
    let who = match admin(&c, &parts).await {
        Ok(a) => a,
        Err(res) => return res,
    };
    let (lang, t) = (who.lang, who.lang.t());
    let tenant = &c.app.config.entra.tenant_id;
    let found = c.app.store.search_directory(tenant, &search.q, SHOWN).await;
    let overrides = c.app.store.overrides().await;
    let content = html! {
        form.row method="get" action="/admin/directory" role="search" {
            input type="search" name="q" value=(search.q) placeholder=(t.search_hint) aria-label=(t.search_hint);
            button type="submit" { (t.search) }
        }
        @match &found {
            Err(_) => p { (t.store_error) },
            Ok(rows) if rows.is_empty() => p.muted { (t.no_users) },
            Ok(rows) => (users(lang, rows)),
        }
        section.card #overrides {
            h2 { (t.overrides) }
            p.muted { (t.overrides_help) }
            (override_list(&c, lang, &who.csrf, overrides.as_deref().ok()))
            form.row method="post" action="/admin/directory/overrides" {
                (csrf_field(&who.csrf))
                input type="text" name="upn" placeholder="user@contoso.com" aria-label="UPN" required;
                input type="text" name="extension" placeholder=(t.extension) aria-label=(t.extension) inputmode="numeric" required;
                button type="submit" { (t.add) }
            }
        }
    };
    Frame {
        lang,
        section: Section::Directory,
        admin_upn: &who.upn,
        notice: notice(lang, &parts),
    }
    .page(content)
}

fn users(lang: Lang, rows: &[DirectoryEntry]) -> Markup {
    let t = lang.t();
    html! { div.table { table.users {
        thead { tr {
            th { (t.user) } th { "UPN" } th { (t.extension) } th { (t.matched_by) } th { (t.last_sign_in) }
        } }
        tbody { @for e in rows { tr {
            td.wrap { (e.row.display_name) }
            td.wrap { (e.row.upn) }
            td { (e.row.extension) }
            td { (matched_by(lang, e)) @if e.row.removed_at.is_some() { br; span.fail { (t.removed) } } }
            td { (e.last_sign_in_at.map_or(t.never.to_string(), when)) }
        } } }
    } } }
}

/// How the user got their extension, in words.
fn matched_by(lang: Lang, e: &DirectoryEntry) -> &'static str {
    let t = lang.t();
    if e.provisioned_at_sign_in && e.row.source == "sync" {
        return t.source_sign_in;
    }
    match e.row.source.as_str() {
        "override" => t.source_override,
        "match" => t.source_match,
        _ => t.source_sync,
    }
}

fn override_list(c: &Console, lang: Lang, csrf: &str, stored: Option<&[OverrideRow]>) -> Markup {
    let t = lang.t();
    let configured = &c.app.config.directory.overrides;
    let Some(stored) = stored else {
        return html! { p { (t.store_error) } };
    };
    if configured.is_empty() && stored.is_empty() {
        return html! { p.muted { (t.no_overrides) } };
    }
    html! { div.table { table.overrides {
        thead { tr { th { "UPN" } th { (t.extension) } th { (t.added_by) } th {} } }
        tbody {
            @for o in configured { tr {
                td.wrap { (o.upn) } td { (o.extension) } td.muted { (t.from_config) } td {}
            } }
            @for o in stored { tr {
                td.wrap { (o.upn) } td { (o.extension) }
                td { (o.created_by) br; span.muted { (when(o.created_at)) } }
                td { (button_form("/admin/directory/overrides/remove", csrf, &[("upn", &o.upn)], t.remove)) }
            } }
        }
    } } }
}

/// `POST /admin/directory/overrides`: adds (or changes) an override, after checking that
/// 3CX has the extension (a sign-in would fail on one it has not).
pub async fn add_override(
    State(c): State<Arc<Console>>,
    parts: Parts,
    Form(form): Form<OverrideForm>,
) -> Response {
    let who = match admin_post(&c, &parts, &form.csrf).await {
        Ok(a) => a,
        Err(res) => return res,
    };
    let aliases = suffix_aliases(&c.app.config.directory);
    let upn = canonical_upn(&form.upn, &aliases);
    let extension = form.extension.trim().to_string();
    let valid = upn.contains('@')
        && !upn.starts_with('@')
        && !extension.is_empty()
        && extension.len() <= 16
        && extension.bytes().all(|b| b.is_ascii_digit());
    if !valid {
        c.audit(&who, "override.add", &upn, "refused: invalid")
            .await;
        return done(Section::Directory, "override_invalid");
    }
    match c.app.pbx.user_by_number(&extension).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            let detail = format!("refused: extension {extension} not in 3CX");
            c.audit(&who, "override.add", &upn, &detail).await;
            return done(Section::Directory, "override_no_extension");
        }
        Err(e) => {
            c.audit(&who, "override.add", &upn, &format!("failed: {e}"))
                .await;
            return done(Section::Directory, "override_no_extension");
        }
    }
    let row = OverrideRow {
        upn: upn.clone(),
        extension: extension.clone(),
        created_by: who.upn.clone(),
        created_at: c.app.clock.now(),
    };
    let (detail, key) = match c.app.store.upsert_override(&row).await {
        Ok(()) => (format!("extension {extension}"), "override_added"),
        Err(e) => (format!("failed: {e}"), "store_error"),
    };
    c.audit(&who, "override.add", &upn, &detail).await;
    done(Section::Directory, key)
}

/// `POST /admin/directory/overrides/remove`.
pub async fn remove_override(
    State(c): State<Arc<Console>>,
    parts: Parts,
    Form(form): Form<OverrideForm>,
) -> Response {
    let who = match admin_post(&c, &parts, &form.csrf).await {
        Ok(a) => a,
        Err(res) => return res,
    };
    let (detail, key) = match c.app.store.delete_override(&form.upn).await {
        Ok(true) => ("removed".to_string(), "override_removed"),
        Ok(false) => ("there was none".to_string(), "override_removed"),
        Err(e) => (format!("failed: {e}"), "store_error"),
    };
    c.audit(&who, "override.remove", &form.upn, &detail).await;
    done(Section::Directory, key)
}
