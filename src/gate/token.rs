//! `POST /connect/token`, 3CX's OAuth token endpoint, decided by its grant:
//!
//! - `client_credentials` (API clients and integrations, which 3CX authenticates by their
//!   secret) passes from anywhere;
//! - the webclient's refresh (`client_id=Webclient&grant_type=refresh_token`) from a
//!   browser with a pbxgate session is answered here in impersonation mode, with a token
//!   for the user's extension (the browser never holds a 3CX refresh token); in
//!   managed-password mode it goes on to 3CX with the browser's own `RefreshTokenCookie`;
//! - any other grant with a session passes, except `password` (3CX's password sign-in);
//! - from `[pbx] password_login_from` (break-glass) every grant passes;
//! - anything else — a refresh with somebody's `RefreshTokenCookie` but no pbxgate
//!   session, a password grant — is refused with an OAuth error (RFC 6749 §5.2).
//!
//! The body is read (at most [`LIMIT`] bytes) only when the grant decides, and is passed on
//! unchanged.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, StatusCode};
use http_body_util::Either;
use secrecy::ExposeSecret;

use super::Conn;
use super::door::Passed;
use crate::app::App;
use crate::config::SessionMode;
use crate::metrics::RouteClass;
use crate::proxy::{ClientInfo, UpstreamBody};
use crate::session::Session;
use crate::web;

/// A token request's body is small; a larger one is refused, not read.
const LIMIT: usize = 16 * 1024;

/// What a token request asks for, as far as the gate needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grant {
    ClientCredentials,
    /// `refresh_token`; `webclient` when `client_id=Webclient` (the SPA's own refresh).
    Refresh {
        webclient: bool,
    },
    Password,
    /// Any other grant (`authorization_code`, …).
    Other,
    /// Not a form, no `grant_type`, or more than one: 3CX might read it differently.
    Malformed,
}

impl Grant {
    fn of(headers: &HeaderMap, body: &[u8]) -> Self {
        let is_form = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !is_form {
            return Self::Malformed;
        }
        let mut grants = Vec::new();
        let mut client_ids = Vec::new();
        for (k, v) in url::form_urlencoded::parse(body) {
            match k.as_ref() {
                "grant_type" => grants.push(v),
                "client_id" => client_ids.push(v),
                _ => {}
            }
        }
        match (grants.as_slice(), client_ids.len()) {
            (_, 2..) => Self::Malformed,
            ([g], _) => match g.as_ref() {
                "client_credentials" => Self::ClientCredentials,
                "refresh_token" => Self::Refresh {
                    webclient: client_ids.first().is_some_and(|c| c == "Webclient"),
                },
                "password" => Self::Password,
                _ => Self::Other,
            },
            _ => Self::Malformed,
        }
    }

    /// For the log: never the client's own text.
    fn name(self) -> &'static str {
        match self {
            Self::ClientCredentials => "client_credentials",
            Self::Refresh { .. } => "refresh_token",
            Self::Password => "password",
            Self::Other => "other",
            Self::Malformed => "malformed",
        }
    }
}

/// What the gate does with a token request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Answer with an impersonated token for the session's extension.
    Impersonate,
    Forward(RouteClass),
    /// Refuse with this OAuth error code.
    Refuse(&'static str),
}

/// The rule of the module doc, as a table.
fn verdict(grant: Grant, session: bool, break_glass: bool, mode: SessionMode) -> Verdict {
    use Verdict::{Forward, Refuse};
    match (grant, session) {
        (Grant::Refresh { webclient: true }, true) if mode == SessionMode::Impersonation => {
            Verdict::Impersonate
        }
        _ if break_glass => Forward(RouteClass::Passthrough),
        (Grant::ClientCredentials, _) => Forward(RouteClass::Passthrough),
        (Grant::Password, _) => Refuse("unsupported_grant_type"),
        (_, true) => Forward(RouteClass::Session),
        (Grant::Refresh { .. }, false) => Refuse("unauthorized_client"),
        (Grant::Malformed, false) => Refuse("invalid_request"),
        (Grant::Other, false) => Refuse("unsupported_grant_type"),
    }
}

/// Decides a `POST /connect/token` (see the module doc).
pub async fn pass(
    app: &App,
    conn: Conn<'_>,
    client: &ClientInfo,
    break_glass: bool,
    parts: Parts,
    body: UpstreamBody,
) -> Result<Passed, Response> {
    let rid = conn.id.to_str().unwrap_or("-");
    let looked_up = session_of(app, &parts).await;
    let undecided = looked_up.is_err();
    let session = looked_up.unwrap_or(None);
    let mode = app.config.pbx.session_mode;
    // From a break-glass network only a signed-in webclient's refresh needs the body.
    if break_glass && (session.is_none() || mode != SessionMode::Impersonation) {
        return Ok((RouteClass::Passthrough, parts, body));
    }
    let Ok(bytes) = axum::body::to_bytes(Body::new(body), LIMIT).await else {
        return Err(web::page(
            Some(rid),
            RouteClass::Rejected,
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request too large",
            "The token request is too large.",
        ));
    };
    let grant = Grant::of(&parts.headers, &bytes);
    match verdict(grant, session.is_some(), break_glass, mode) {
        Verdict::Impersonate => Err(match &session {
            Some(s) => impersonated(app, rid, s).await,
            None => refusal("unauthorized_client", grant, rid),
        }),
        Verdict::Forward(class) => Ok((class, parts, Either::Right(Body::from(bytes)))),
        // A refusal for want of a session that the store could not look up: "no session"
        // would sign the webclient out, and its sign-in could not work either.
        Verdict::Refuse(_) if undecided && grant != Grant::Password => {
            Err(session_unavailable(rid))
        }
        Verdict::Refuse(error) => {
            tracing::info!(
                client = %client.ip,
                grant = grant.name(),
                session = session.is_some(),
                request_id = rid,
                "3CX token request refused: only client_credentials passes without a pbxgate session outside pbx.password_login_from"
            );
            Err(refusal(error, grant, rid))
        }
    }
}

/// The request's live pbxgate session, if any; `Err` when the store could not tell. A grant
/// that needs no session passes either way.
async fn session_of(app: &App, parts: &Parts) -> Result<Option<Session>, ()> {
    let Some(id) = app.sessions.id_from_headers(&parts.headers) else {
        return Ok(None);
    };
    match app.sessions.validate(id).await {
        Ok(Ok(s)) => Ok(Some(s)),
        Ok(Err(_)) => Ok(None),
        Err(e) => {
            tracing::error!(error = %e, "session lookup failed");
            Err(())
        }
    }
}

/// A token request that needs a session the store cannot look up now: try again later.
fn session_unavailable(rid: &str) -> Response {
    let body = serde_json::json!({
        "error": "temporarily_unavailable",
        "error_description": "pbxgate cannot check your session right now; try again in a minute",
        "request_id": rid,
    });
    json(
        StatusCode::SERVICE_UNAVAILABLE,
        body,
        RouteClass::Unauthenticated,
    )
}

/// An OAuth error (RFC 6749 §5.2) that says what pbxgate wants instead.
fn refusal(error: &'static str, grant: Grant, rid: &str) -> Response {
    let description = match grant {
        Grant::Refresh { .. } => {
            "pbxgate: a 3CX token refresh needs a pbxgate session; sign in at /auth/login"
        }
        Grant::Malformed => {
            "pbxgate: a token request must be a form with exactly one grant_type and client_id"
        }
        _ => {
            "pbxgate: only client_credentials tokens are issued here without a pbxgate session; \
             3CX password sign-in is turned off"
        }
    };
    let body = serde_json::json!({
        "error": error,
        "error_description": description,
        "request_id": rid,
    });
    json(StatusCode::BAD_REQUEST, body, RouteClass::Unauthenticated)
}

fn json(status: StatusCode, body: serde_json::Value, class: RouteClass) -> Response {
    let mut res = (status, axum::Json(body)).into_response();
    res.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    web::classed(class, res)
}

/// The token for the session's extension, as 3CX's refresh answer looks.
async fn impersonated(app: &App, rid: &str, session: &Session) -> Response {
    match app.pbx.impersonate(&session.extension).await {
        Ok(t) => {
            let expires_in = (t.expires_at - app.clock.now()).max(0);
            let body = serde_json::json!({
                "token_type": "Bearer",
                "expires_in": expires_in,
                "access_token": t.token.expose_secret(),
                "refresh_token": null,
            });
            json(StatusCode::OK, body, RouteClass::Session)
        }
        Err(e) => {
            tracing::error!(error = %e, extension = %session.extension, "impersonation failed");
            let body = serde_json::json!({
                "error": "server_error",
                "error_description": "3CX did not issue a token",
                "request_id": rid,
            });
            json(StatusCode::BAD_GATEWAY, body, RouteClass::Session)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(body: &str) -> Grant {
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=UTF-8"),
        );
        Grant::of(&h, body.as_bytes())
    }

    #[test]
    fn grants_are_read_from_the_form_only() {
        assert_eq!(
            form("client_id=pbx&client_secret=x&grant_type=client_credentials"),
            Grant::ClientCredentials
        );
        assert_eq!(
            form("client_id=Webclient&grant_type=refresh_token"),
            Grant::Refresh { webclient: true }
        );
        assert_eq!(
            form("grant_type=refresh_token&refresh_token=x"),
            Grant::Refresh { webclient: false }
        );
        assert_eq!(form("grant_type=password&username=101"), Grant::Password);
        assert_eq!(form("grant_type=authorization_code"), Grant::Other);
        assert_eq!(form("client_id=x"), Grant::Malformed);
        assert_eq!(
            form("grant_type=client_credentials&grant_type=refresh_token"),
            Grant::Malformed
        );
        assert_eq!(
            form("client_id=a&client_id=Webclient&grant_type=refresh_token"),
            Grant::Malformed
        );
        let json = Grant::of(&HeaderMap::new(), b"grant_type=client_credentials");
        assert_eq!(json, Grant::Malformed, "no form content type");
    }

    #[test]
    fn the_verdict_table() {
        use SessionMode::{Impersonation as Imp, ManagedPassword as Mp};
        let web = Grant::Refresh { webclient: true };
        let cc = Grant::ClientCredentials;
        let v = verdict;
        assert_eq!(v(web, true, false, Imp), Verdict::Impersonate);
        assert_eq!(v(web, true, true, Imp), Verdict::Impersonate);
        assert_eq!(
            v(web, true, false, Mp),
            Verdict::Forward(RouteClass::Session)
        );
        assert_eq!(
            v(web, false, false, Imp),
            Verdict::Refuse("unauthorized_client")
        );
        assert_eq!(
            v(web, false, false, Mp),
            Verdict::Refuse("unauthorized_client")
        );
        assert_eq!(
            v(web, false, true, Mp),
            Verdict::Forward(RouteClass::Passthrough)
        );
        assert_eq!(
            v(cc, false, false, Imp),
            Verdict::Forward(RouteClass::Passthrough)
        );
        assert_eq!(
            v(Grant::Password, true, false, Imp),
            Verdict::Refuse("unsupported_grant_type")
        );
        assert_eq!(
            v(Grant::Password, false, true, Imp),
            Verdict::Forward(RouteClass::Passthrough)
        );
        assert_eq!(
            v(Grant::Other, false, false, Imp),
            Verdict::Refuse("unsupported_grant_type")
        );
        assert_eq!(
            v(Grant::Other, true, false, Imp),
            Verdict::Forward(RouteClass::Session)
        );
        assert_eq!(
            v(Grant::Malformed, false, false, Imp),
            Verdict::Refuse("invalid_request")
        );
    }
}
