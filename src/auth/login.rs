//! `/auth/login`: stores a login attempt (state, nonce, PKCE verifier, `return_to`; single
//! use, ten minutes), binds it to the browser with a cookie, and sends the browser to Entra.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::SET_COOKIE;
use http::request::Parts;
use serde::Deserialize;

use super::{ATTEMPT_TTL, AuthError, SignIn, StartError};
use crate::ids;
use crate::metrics::RouteClass;
use crate::store::LoginAttempt;
use crate::web;

/// A `return_to` is accepted only as a same-origin absolute path: no scheme or host, no
/// `//host` or `/\host` (browsers read both as another origin), no control characters.
pub fn safe_return_to(raw: Option<&str>) -> Option<String> {
    let r = raw.unwrap_or("/");
    let ok = r.starts_with('/')
        && !r.starts_with("//")
        && !r.starts_with("/\\")
        && !r.contains('\\')
        && !r.chars().any(|c| c.is_control())
        && r.len() <= 2048
        && !r.starts_with("/auth/");
    ok.then(|| r.to_string())
}

#[derive(Deserialize)]
struct LoginQuery {
    return_to: Option<String>,
    login_hint: Option<String>,
}

pub async fn login(State(s): State<Arc<SignIn>>, parts: Parts) -> Response {
    start(&s, &parts)
        .await
        .unwrap_or_else(|e| e.respond(web::correlation(&parts).as_deref()))
}

async fn start(s: &SignIn, parts: &Parts) -> Result<Response, AuthError> {
    s.rate_limit(parts)?;
    let Query(q) =
        Query::<LoginQuery>::try_from_uri(&parts.uri).map_err(|_| AuthError::MalformedLogin)?;
    let return_to =
        safe_return_to(q.return_to.as_deref()).ok_or(AuthError::ReturnTo(q.return_to))?;
    let login_hint = q
        .login_hint
        .filter(|h| h.len() <= 256 && !h.chars().any(char::is_control));
    let (url, state) = redirect_to_entra(s, return_to, login_hint.as_deref())
        .await
        .map_err(AuthError::Start)?;
    let mut res = Redirect::to(&url).into_response();
    res.headers_mut()
        .append(SET_COOKIE, s.login_cookie(&state, ATTEMPT_TTL));
    web::security_headers(res.headers_mut());
    Ok(web::classed(RouteClass::Auth, res))
}

/// Stores a new attempt; returns Entra's authorization URL for it and its state.
async fn redirect_to_entra(
    s: &SignIn,
    return_to: String,
    login_hint: Option<&str>,
) -> Result<(String, String), StartError> {
    let state = URL_SAFE_NO_PAD.encode(ids::random::<32>()?);
    let nonce = URL_SAFE_NO_PAD.encode(ids::random::<32>()?);
    let verifier = URL_SAFE_NO_PAD.encode(ids::random::<32>()?);
    let challenge = URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ));
    let now = s.clock.now();
    s.store.purge_login_attempts(now - ATTEMPT_TTL).await?;
    s.store
        .insert_login_attempt(&LoginAttempt {
            state: state.clone(),
            nonce: nonce.clone(),
            pkce_verifier: verifier,
            return_to,
            created_at: now,
        })
        .await?;
    let url = s
        .provider
        .authorization_url(
            &s.settings.redirect_uri,
            &state,
            &nonce,
            &challenge,
            login_hint,
        )
        .await?;
    Ok((url, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_to_accepts_only_local_paths() {
        for ok in ["/", "/webclient/#/people", "/a?b=c&d=%2F"] {
            assert_eq!(safe_return_to(Some(ok)).as_deref(), Some(ok), "{ok}");
        }
        assert_eq!(safe_return_to(None).as_deref(), Some("/"));
        for bad in [
            "//evil.example/",
            "/\\evil.example/",
            "https://evil.example/",
            "evil.example",
            "javascript:alert(1)",
            "/a\\b",
            "/a\nb",
            "/a\u{0}b",
            "/auth/logout",
            "",
        ] {
            assert_eq!(safe_return_to(Some(bad)), None, "{bad:?}");
        }
    }
}
