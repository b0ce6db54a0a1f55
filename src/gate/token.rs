//! The webclient's token refresh (`POST /connect/token` with
//! `client_id=Webclient&grant_type=refresh_token`) from a browser with a pbxgate session,
//! in impersonation mode: answered here with a token for the user's extension, so the
//! browser never holds a 3CX refresh token. Anything else is handed back to be proxied
//! (apps, API clients, other grants).

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::header::{CACHE_CONTROL, HeaderValue};
use http::request::Parts;
use http::{Method, StatusCode};
use http_body_util::Either;
use secrecy::ExposeSecret;

use crate::app::App;
use crate::config::SessionMode;
use crate::metrics::RouteClass;
use crate::proxy::{Peer, UpstreamBody};
use crate::web::{self, RequestId};

/// A token request's body is small; a larger one is refused, not read.
const LIMIT: usize = 16 * 1024;

/// Whether pbxgate may answer this request itself (see the module doc).
pub fn is_candidate(app: &App, parts: &Parts) -> bool {
    parts.method == Method::POST
        && parts.uri.path() == "/connect/token"
        && app.sessions.id_from_headers(&parts.headers).is_some()
        && app.config.pbx.session_mode == SessionMode::Impersonation
}

/// Answers a candidate when pbxgate can; anything else is handed back to be proxied, with
/// the (small, bounded) body it had to read.
pub async fn answer(
    app: &App,
    peer: Peer,
    rid: &str,
    mut parts: Parts,
    body: UpstreamBody,
) -> Result<Response, (Parts, UpstreamBody)> {
    parts.extensions.insert(peer);
    parts.extensions.insert(RequestId(rid.to_string()));
    let Ok(bytes) = axum::body::to_bytes(Body::new(body), LIMIT).await else {
        return Ok(web::page(
            Some(rid),
            RouteClass::Rejected,
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request too large",
            "The token request is too large.",
        ));
    };
    match impersonated(app, &parts, &bytes).await {
        Some(res) => Ok(res),
        None => Err((parts, Either::Right(Body::from(bytes)))),
    }
}

/// The token for the session's extension, or None to pass the request on unchanged.
async fn impersonated(app: &App, parts: &Parts, body: &[u8]) -> Option<Response> {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if get("client_id") != Some("Webclient") || get("grant_type") != Some("refresh_token") {
        return None;
    }
    let id = app.sessions.id_from_headers(&parts.headers)?;
    let Ok(Ok(session)) = app.sessions.validate(id).await else {
        return None;
    };
    let res = match app.pbx.impersonate(&session.extension).await {
        Ok(t) => {
            let expires_in = (t.expires_at - app.clock.now()).max(0);
            let mut res = axum::Json(serde_json::json!({
                "token_type": "Bearer",
                "expires_in": expires_in,
                "access_token": t.token.expose_secret(),
                "refresh_token": null,
            }))
            .into_response();
            res.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res
        }
        Err(e) => {
            tracing::error!(error = %e, extension = %session.extension, "impersonation failed");
            (
                StatusCode::BAD_GATEWAY,
                axum::Json(serde_json::json!({
                    "error": "server_error",
                    "error_description": "3CX did not issue a token",
                    "request_id": web::correlation(parts),
                })),
            )
                .into_response()
        }
    };
    Some(web::classed(RouteClass::Session, res))
}
