//! The admin console at `/admin` (DESIGN §2, issue 18 §2): installation status, the sync
//! workers, the directory, the sessions and the audit log, for members of `admin_groups`.
//!
//! Server-rendered with maud: HTML written as Rust, checked when pbxgate is compiled and
//! escaped by default, no template files to ship and no front-end build (askama would
//! want template files and a larger build for the same result). No script at all; every
//! state-changing action is a form `POST` with the session's CSRF token and a same-origin
//! check ([`access`]), written to the audit log ([`audit`]), answered with a redirect
//! (`?done=…` names the outcome) so a reload does not repeat it.
//!
//! Layer: a front door, beside `auth` and `http::ops`; it uses the app's domain modules.

mod access;
mod audit;
mod csrf;
mod directory;
mod i18n;
mod layout;
mod overview;
mod sessions;
mod sync;

use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{MethodRouter, any, get, post};
use http::StatusCode;
use http::request::Parts;
use serde::Deserialize;

pub use i18n::Lang;
pub use overview::consent_url;

use crate::app::App;
use crate::clock::UnixTime;
use crate::metrics::RouteClass;
use crate::store::ReplicaRow;
use crate::web;
use layout::Section;

/// The version and commit the console shows.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("PBXGATE_BUILD_COMMIT"),
    ")"
);
/// How often this replica writes its heartbeat row.
const HEARTBEAT: Duration = Duration::from_secs(60);

/// What the console's handlers share.
pub struct Console {
    app: Arc<App>,
    /// `public_url`'s origin: a `POST` must come from it.
    public_origin: url::Origin,
    /// When this replica's console started (its uptime).
    started_at: UnixTime,
    /// This replica's id in the heartbeat table.
    replica: String,
}

/// A form that carries nothing but the CSRF token.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CsrfForm {
    csrf: String,
}

/// The `/admin` routes, with their state, for the server to mount. Starts this replica's
/// heartbeat (it ends when the app does).
pub fn routes(app: &Arc<App>) -> Vec<(&'static str, MethodRouter)> {
    let console = Arc::new(Console {
        app: app.clone(),
        public_origin: app.config.server.public_url.origin(),
        started_at: app.clock.now(),
        replica: replica_id(),
    });
    heartbeat(&console);
    let c = || console.clone();
    vec![
        ("/admin", get(overview::page).with_state(c())),
        ("/admin/admin.css", get(layout::stylesheet)),
        ("/admin/check", post(overview::check_now).with_state(c())),
        ("/admin/sync", get(sync::page).with_state(c())),
        (
            "/admin/sync/{worker}/dry-run",
            post(sync::dry_run).with_state(c()),
        ),
        (
            "/admin/sync/{worker}/run",
            post(sync::run_now).with_state(c()),
        ),
        ("/admin/directory", get(directory::page).with_state(c())),
        (
            "/admin/directory/overrides",
            post(directory::add_override).with_state(c()),
        ),
        (
            "/admin/directory/overrides/remove",
            post(directory::remove_override).with_state(c()),
        ),
        ("/admin/sessions", get(sessions::page).with_state(c())),
        (
            "/admin/sessions/revoke",
            post(sessions::revoke).with_state(c()),
        ),
        ("/admin/audit", get(audit::page).with_state(c())),
        ("/admin/{*rest}", any(not_found_request)),
    ]
}

/// After an action: back to its section, naming the outcome.
fn done(section: Section, outcome: &str) -> Response {
    let mut res = Redirect::to(&format!("{}?done={outcome}", section.path())).into_response();
    layout::console_headers(res.headers_mut());
    web::classed(RouteClass::Ops, res)
}

/// The text of `?done=…`, if it names a known outcome.
fn notice(lang: Lang, parts: &Parts) -> Option<String> {
    let t = lang.t();
    let key = parts
        .uri
        .query()?
        .split('&')
        .find_map(|p| p.strip_prefix("done="))?;
    let text = match key {
        "checked" => t.checked,
        "override_added" => t.override_added,
        "override_removed" => t.override_removed,
        "override_invalid" => t.override_invalid,
        "override_no_extension" => t.override_no_extension,
        "revoked" => t.revoked,
        "revoked_all" => t.revoked_all,
        "revoke_failed" => t.revoke_failed,
        "run_done" => t.run_done,
        "run_started" => t.run_started,
        "run_failed" => t.run_failed,
        "busy" => t.busy,
        "store_error" => t.store_error,
        _ => return None,
    };
    Some(text.to_string())
}

async fn not_found_request(req: Request) -> Response {
    not_found(req.into_parts().0).await
}

async fn not_found(parts: Parts) -> Response {
    web::page(
        web::correlation(&parts).as_deref(),
        RouteClass::Ops,
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no such page.",
    )
}

/// Host name, process id and a random suffix: unique per running replica.
fn replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "pbxgate".into());
    let suffix = crate::ids::random::<3>()
        .map(|b| crate::ids::hex(&b))
        .unwrap_or_default();
    format!("{host}:{}:{suffix}", std::process::id())
}

/// Writes this replica's heartbeat now and every [`HEARTBEAT`], for as long as the app
/// lives (it holds the app weakly) and a runtime runs it.
fn heartbeat(console: &Arc<Console>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak: Weak<Console> = Arc::downgrade(console);
    rt.spawn(async move {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let Some(c) = weak.upgrade() else { return };
            let row = ReplicaRow {
                id: c.replica.clone(),
                version: VERSION.to_string(),
                started_at: c.started_at,
                seen_at: c.app.clock.now(),
            };
            if let Err(e) = c.app.store.heartbeat(&row).await {
                tracing::warn!(error = %e, "replica heartbeat not written");
            }
        }
    });
}
