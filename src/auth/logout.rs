//! Signing out: `/auth/logout` (pbxgate's session, 3CX's, then Entra's),
//! `/auth/signed-out`, and Entra's single sign-out `/auth/frontchannel-logout`.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::StatusCode;
use http::header::{CACHE_CONTROL, HeaderValue, SET_COOKIE};
use http::request::Parts;
use serde::Deserialize;

use super::SignIn;
use crate::metrics::RouteClass;
use crate::pbx;
use crate::session::cookie_pairs;
use crate::web::{self, Page};

/// Ends the pbxgate session and the 3CX access behind it (the browser's 3CX session in
/// managed-password mode, pbxgate's cached impersonated token otherwise), then sends the
/// browser to Entra's end-session endpoint.
pub async fn logout(State(s): State<Arc<SignIn>>, parts: Parts) -> Response {
    let refresh = cookie_pairs(&parts.headers)
        .find(|(k, _)| *k == pbx::REFRESH_COOKIE)
        .map(|(_, v)| v.to_string());
    let mut login_hint = None;
    if let Some(id) = s.sessions.id_from_headers(&parts.headers) {
        match s.revoker.sign_out(id, refresh.as_deref()).await {
            Ok(ended) => login_hint = ended.and_then(|e| e.login_hint),
            Err(e) => tracing::error!(error = %e, "sign-out could not end everything"),
        }
    } else if let Some(refresh) = refresh
        && let Err(e) = s.pbx.webclient_logout(&refresh).await
    {
        // No pbxgate session, but a 3CX one: end it all the same.
        tracing::warn!(error = %e, "3CX logout failed");
    }
    let target = s
        .provider
        .end_session_url(&s.settings.signed_out_uri, login_hint.as_deref())
        .await
        .unwrap_or_else(|| "/auth/signed-out".to_string());
    let mut res = Redirect::to(&target).into_response();
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&s.sessions.clear_cookie()) {
        h.append(SET_COOKIE, v);
    }
    h.append(
        SET_COOKIE,
        HeaderValue::from_static("RefreshTokenCookie=; Path=/; Max-Age=0; Secure; HttpOnly"),
    );
    web::security_headers(h);
    tracing::info!("signed out");
    web::classed(RouteClass::Auth, res)
}

pub async fn signed_out() -> Response {
    web::classed(
        RouteClass::Auth,
        Page::new(
            StatusCode::OK,
            "You are signed out",
            "You have signed out of the phone system's web client.",
        )
        .with_link("/", "Sign in again"),
    )
}

#[derive(Deserialize)]
pub struct FrontChannelQuery {
    sid: Option<String>,
}

/// Entra's single sign-out: a GET with the Entra session id (and no `iss`, unlike the spec).
pub async fn frontchannel_logout(
    State(s): State<Arc<SignIn>>,
    Query(q): Query<FrontChannelQuery>,
) -> Response {
    if let Some(sid) = q.sid.filter(|s| !s.is_empty() && s.len() <= 256) {
        match s.revoker.front_channel(&sid).await {
            Ok(n) => tracing::info!(sessions = n, "front-channel sign-out"),
            Err(e) => tracing::error!(error = %e, "front-channel sign-out failed"),
        }
    }
    let mut res = StatusCode::OK.into_response();
    res.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    web::classed(RouteClass::Auth, res)
}
