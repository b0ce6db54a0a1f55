//! Who may use the console: a signed-in user whose session says admin (decided at sign-in
//! from `admin_groups`). Not signed in: a page navigation goes to sign-in and comes back,
//! anything else gets 401. Signed in but no admin: 403. A state-changing `POST` must also
//! come from pbxgate's own origin (the same check as `/auth/logout`) and carry the
//! session's CSRF token.

use axum::response::{IntoResponse, Redirect, Response};
use http::StatusCode;
use http::request::Parts;

use super::Console;
use super::csrf;
use super::i18n::Lang;
use crate::metrics::RouteClass;
use crate::proxy::ClientInfo;
use crate::web;

/// A signed-in admin, as a request found them.
pub struct Admin {
    pub upn: String,
    pub lang: Lang,
    /// The client address the audit log records.
    pub client: String,
    /// The CSRF token of the admin's session, for the page's forms.
    pub csrf: String,
}

/// The admin behind a `GET`, or the answer for anyone else.
pub async fn admin(c: &Console, parts: &Parts) -> Result<Admin, Response> {
    let lang = Lang::of(&parts.headers);
    let sessions = &c.app.sessions;
    let Some(id) = sessions.id_from_headers(&parts.headers) else {
        return Err(sign_in(parts));
    };
    let session = match sessions.validate(id).await {
        Ok(Ok(s)) => s,
        Ok(Err(_)) => return Err(sign_in(parts)),
        Err(e) => {
            tracing::error!(error = %e, "admin console: session lookup failed");
            return Err(refuse(parts, lang, StatusCode::SERVICE_UNAVAILABLE, None));
        }
    };
    match sessions.meta(id).await {
        Ok(Some(m)) if m.is_admin => {}
        Ok(_) => {
            tracing::warn!(upn = %session.upn, path = %parts.uri.path(), "admin console refused: not an admin");
            return Err(refuse(parts, lang, StatusCode::FORBIDDEN, None));
        }
        Err(e) => {
            tracing::error!(error = %e, "admin console: session lookup failed");
            return Err(refuse(parts, lang, StatusCode::SERVICE_UNAVAILABLE, None));
        }
    }
    let client = ClientInfo::of(parts, &c.app.config.server.trusted_proxies).ip;
    Ok(Admin {
        upn: session.upn,
        lang,
        client: client.to_string(),
        csrf: csrf::token(id),
    })
}

/// The admin behind a state-changing `POST` that came from the console itself with the
/// session's CSRF token; anything else is refused (403) before anything changes.
pub async fn admin_post(c: &Console, parts: &Parts, token: &str) -> Result<Admin, Response> {
    let lang = Lang::of(&parts.headers);
    if !crate::auth::same_origin(parts, &c.public_origin) {
        tracing::warn!(path = %parts.uri.path(), "admin console: cross-site POST refused");
        return Err(refuse(parts, lang, StatusCode::FORBIDDEN, Some(())));
    }
    let admin = match admin(c, parts).await {
        Ok(a) => a,
        // A POST is never redirected to sign-in: the form would be lost on the way.
        Err(res) if res.status().is_redirection() => {
            return Err(refuse(parts, lang, StatusCode::UNAUTHORIZED, None));
        }
        Err(res) => return Err(res),
    };
    if !csrf::matches(&admin.csrf, token) {
        tracing::warn!(upn = %admin.upn, path = %parts.uri.path(), "admin console: missing or wrong CSRF token");
        return Err(refuse(parts, lang, StatusCode::FORBIDDEN, Some(())));
    }
    Ok(admin)
}

/// Sends a page navigation to sign-in (back here after); 401 for anything else.
fn sign_in(parts: &Parts) -> Response {
    let html = parts
        .headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if parts.method == http::Method::GET && html {
        let here = parts.uri.path_and_query().map_or("/admin", |p| p.as_str());
        let to: String = url::form_urlencoded::byte_serialize(here.as_bytes()).collect();
        let mut res = Redirect::to(&format!("/auth/login?return_to={to}")).into_response();
        web::security_headers(res.headers_mut());
        return web::classed(RouteClass::Ops, res);
    }
    refuse(
        parts,
        Lang::of(&parts.headers),
        StatusCode::UNAUTHORIZED,
        None,
    )
}

/// A short page in the admin's language with the correlation id. `cross_site` picks the
/// "request refused" text.
fn refuse(parts: &Parts, lang: Lang, status: StatusCode, cross_site: Option<()>) -> Response {
    let t = lang.t();
    let (title, message) = match (status, cross_site) {
        (_, Some(())) => (t.cross_site_title, t.cross_site),
        (StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED, None) => {
            (t.forbidden_title, t.forbidden)
        }
        _ => (t.forbidden_title, t.store_error),
    };
    let id = web::correlation(parts);
    super::layout::short_page(lang, status, title, message, id.as_deref())
}
