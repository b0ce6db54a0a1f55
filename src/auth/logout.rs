//! Signing out: `/auth/logout` (pbxgate's session, 3CX's, then Entra's),
//! `/auth/signed-out`, and Entra's single sign-out `/auth/frontchannel-logout`.
//!
//! Sign-out ends more than pbxgate's session (3CX's, and Microsoft 365's through
//! `logout_hint`), so it is a same-origin `POST`: a `GET` (an `<img>` on any page) only shows
//! a page with the button.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::StatusCode;
use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, HeaderValue, ORIGIN, REFERRER_POLICY, SET_COOKIE,
};
use http::request::Parts;
use serde::Deserialize;

use super::SignIn;
use crate::metrics::RouteClass;
use crate::pbx;
use crate::session::cookie_pairs;
use crate::web::{self, Page};

/// `GET /auth/logout`: a page whose button posts the sign-out. Its CSP lets that form post
/// here and follow the redirect to Entra's end-session endpoint, nowhere else.
pub async fn confirm(State(s): State<Arc<SignIn>>, parts: Parts) -> Response {
    let mut res = Page::new(
        StatusCode::OK,
        "Sign out",
        "Sign out of the phone system's web client and of Microsoft 365 on this browser?",
    )
    .with_form("/auth/logout", "Sign out")
    .with_correlation_id(web::correlation(&parts).as_deref())
    .into_response();
    let entra = s
        .provider
        .end_session_url(&s.settings.signed_out_uri, None)
        .await
        .and_then(|u| url::Url::parse(&u).ok())
        .map(|u| u.origin().ascii_serialization())
        .filter(|o| o != "null");
    let h = res.headers_mut();
    if let Ok(csp) = HeaderValue::from_str(&web::csp_with_form_action(entra.as_deref())) {
        h.insert(CONTENT_SECURITY_POLICY, csp);
    }
    // With `no-referrer`, the button's POST would carry `Origin: null`.
    h.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    web::classed(RouteClass::Auth, res)
}

/// Whether a `POST` comes from pbxgate's own origin: its `Origin` is `public_url`'s, or
/// names `public_url`'s host on the port the request was sent to (the webclient may be open
/// on another listener, 5001 as well as 443; a page elsewhere cannot send that `Origin`).
/// Without an `Origin` the browser must say `Sec-Fetch-Site: same-origin` (a header no page
/// can set). `Origin: null` counts as none: browsers send it for a form on a page whose
/// referrer policy is `no-referrer`. Anything else (another site, a client that says
/// neither) is refused.
pub fn same_origin(parts: &Parts, public: &url::Origin) -> bool {
    match parts
        .headers
        .get(ORIGIN)
        .filter(|o| o.as_bytes() != b"null")
    {
        Some(origin) => origin
            .to_str()
            .ok()
            .and_then(|o| url::Url::parse(o).ok())
            .is_some_and(|o| o.origin() == *public || is_this_listener(parts, &o, public)),
        None => parts
            .headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes() == b"same-origin"),
    }
}

/// `origin` is `public_url`'s host, on the authority this request was sent to (HTTP/2's
/// `:authority`, else `Host`).
fn is_this_listener(parts: &Parts, origin: &url::Url, public: &url::Origin) -> bool {
    let url::Origin::Tuple(_, public_host, _) = public else {
        return false;
    };
    let target = parts.uri.authority().map(|a| a.as_str()).or_else(|| {
        parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
    });
    origin.host().is_some_and(|h| h.to_owned() == *public_host)
        && target.is_some_and(|t| t.eq_ignore_ascii_case(origin.authority()))
}

/// `POST /auth/logout`: ends the pbxgate session and the 3CX access behind it (the
/// browser's 3CX session in managed-password mode, pbxgate's cached impersonated token
/// otherwise), then sends the browser to Entra's end-session endpoint.
pub async fn logout(State(s): State<Arc<SignIn>>, parts: Parts) -> Response {
    if !same_origin(&parts, &s.settings.public_origin) {
        tracing::warn!("cross-site sign-out refused");
        return web::page(
            web::correlation(&parts).as_deref(),
            RouteClass::Auth,
            StatusCode::FORBIDDEN,
            "Sign-out refused",
            "The sign-out request did not come from this site. Use the Sign out button of the web client.",
        );
    }
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
    // 303: the browser follows a POST's redirect with a GET.
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
struct FrontChannelQuery {
    sid: Option<String>,
    iss: Option<String>,
}

/// Entra's single sign-out: a GET with the Entra session id, usually without `iss` (unlike
/// the spec); when `iss` is there it must be the configured tenant's issuer. Rate-limited
/// per client: it needs no cookie, and a `sid` that matches nothing costs one read.
pub async fn frontchannel_logout(State(s): State<Arc<SignIn>>, parts: Parts) -> Response {
    let ip = s.client_ip(&parts);
    let status = if !s.frontchannel_limiter.allow(ip) {
        tracing::warn!(%ip, "front-channel sign-out rate limit reached");
        StatusCode::TOO_MANY_REQUESTS
    } else {
        match Query::<FrontChannelQuery>::try_from_uri(&parts.uri) {
            Ok(Query(q)) => front_channel(&s, q).await,
            Err(_) => StatusCode::BAD_REQUEST,
        }
    };
    let mut res = status.into_response();
    res.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    web::classed(RouteClass::Auth, res)
}

async fn front_channel(s: &SignIn, q: FrontChannelQuery) -> StatusCode {
    if let Some(iss) = &q.iss
        && iss != s.provider.issuer()
    {
        tracing::warn!(iss = %iss, "front-channel sign-out for another issuer refused");
        return StatusCode::BAD_REQUEST;
    }
    if let Some(sid) = q.sid.filter(|s| !s.is_empty() && s.len() <= 256) {
        match s.revoker.front_channel(&sid).await {
            Ok(n) => tracing::info!(sessions = n, "front-channel sign-out"),
            Err(e) => tracing::error!(error = %e, "front-channel sign-out failed"),
        }
    }
    StatusCode::OK
}
