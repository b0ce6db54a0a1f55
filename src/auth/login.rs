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
/// `//host` or `/\host` (browsers read both as another origin), no control characters,
/// and nowhere under `/auth/` once a browser has resolved its dot segments (`/./auth/`,
/// `/%2e%2e/auth/`): checked with WHATWG URL parsing, as browsers do it.
pub fn safe_return_to(raw: Option<&str>) -> Option<String> {
    static BASE: std::sync::LazyLock<url::Url> = std::sync::LazyLock::new(|| {
        url::Url::parse("https://origin.invalid/").expect("a valid URL")
    });
    let r = raw.unwrap_or("/");
    let plain = r.starts_with('/')
        && !r.starts_with("//")
        && !r.contains('\\')
        && !r.chars().any(|c| c.is_control())
        && r.len() <= 2048;
    let lands = plain.then(|| BASE.join(r).ok()).flatten()?;
    let stays = lands.origin() == BASE.origin() && !lands.path().starts_with("/auth/");
    stays.then(|| r.to_string())
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
            // Found by `an_accepted_return_to_stays_on_the_origin_and_off_auth`: dot
            // segments, also encoded, that a browser resolves into /auth/.
            "/./auth/logout",
            "/webclient/../auth/logout",
            "/%2e%2E/auth/logout",
            "/.%2e/auth/login?return_to=/",
        ] {
            assert_eq!(safe_return_to(Some(bad)), None, "{bad:?}");
        }
    }

    /// Property tests: where a browser (WHATWG URL parsing, as the `url` crate does) would
    /// go with a `return_to` that `safe_return_to` accepts.
    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn piece() -> impl Strategy<Value = String> {
            prop_oneof![
                3 => prop::sample::select(vec![
                    "/", "//", "\\", "%2f", "%2F", "%5c", "%5C", ".", "..", "%2e", "%2E", "%2e%2e",
                    ".%2e", "auth", "auth/", "logout", "evil.example", "@", ":", "https:", "//evil",
                    "javascript:", "\t", "\n", "\r", " ", "\u{0}", "\u{85}", "?", "#", "%09",
                    "%0a", "\u{3000}", "\u{ff0f}", "\u{2215}", "a", "webclient",
                ]).prop_map(str::to_string),
                1 => "\\PC{0,6}",
            ]
        }

        /// Paths made of segments and separators, dot segments among them.
        fn segmented() -> impl Strategy<Value = String> {
            let segment = prop::sample::select(vec![
                "",
                ".",
                "..",
                "%2e",
                "%2E",
                "%2e%2e",
                ".%2e",
                "%2e.",
                "auth",
                "webclient",
                "evil.example",
                "a",
                "@evil",
                "%40",
            ]);
            let separator = prop::sample::select(vec!["/", "/", "/", "//", "\\", "%2f", "%5c"]);
            prop::collection::vec((segment, separator), 0..6).prop_map(|parts| {
                let mut path = "/".to_string();
                for (seg, sep) in parts {
                    path.push_str(seg);
                    path.push_str(sep);
                }
                path
            })
        }

        fn return_to() -> impl Strategy<Value = String> {
            prop_oneof![
                2 => segmented(),
                1 => prop::collection::vec(piece(), 0..8).prop_map(|p| p.concat()),
                1 => prop::collection::vec(piece(), 0..8).prop_map(|p| format!("/{}", p.concat())),
                1 => any::<String>(),
            ]
        }

        proptest! {
            #[test]
            fn an_accepted_return_to_stays_on_the_origin_and_off_auth(raw in return_to()) {
                if let Some(r) = safe_return_to(Some(&raw)) {
                    let base = url::Url::parse("https://pbx.example.com/webclient/").unwrap();
                    let lands = base.join(&r).unwrap();
                    prop_assert_eq!(lands.origin(), base.origin(), "{:?} leaves to {}", raw, lands);
                    prop_assert!(!lands.path().starts_with("/auth/"), "{:?} lands on {}", raw, lands);
                    // A valid `Location` (axum's `Redirect::to` panics otherwise).
                    prop_assert!(http::HeaderValue::from_str(&r).is_ok());
                }
            }
        }
    }
}
