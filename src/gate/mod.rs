//! The gate in front of 3CX: every request that is not one of pbxgate's own routes comes
//! here. 3CX's own ways in with an extension's credentials are decided first ([`door`]:
//! its password login and `/connect/…`, where the webclient's token refresh from a
//! signed-in browser may be answered here, [`token`]). A passthrough path goes on as it
//! is; anything else needs a live session, or gets a redirect to sign in (a browser
//! navigation) or a 401 (XHR, WebSocket).
//!
//! Layer: a front door. It uses `session`, `proxy`, `pbx` and the [`App`] it is given; the
//! server (`http`) calls it.

mod door;
mod token;

use std::future::Future;

use axum::response::{IntoResponse, Redirect, Response};
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Request, StatusCode};

use crate::app::App;
use crate::metrics::RouteClass;
use crate::proxy::{self, ClientInfo, Forward, Peer, PooledBody, Upstream, UpstreamBody};
use crate::session::{Recent, Rejection};
use crate::web;

/// The body of an answer: 3CX's, passed on as hyper reads it (streamed, not boxed), or one
/// that pbxgate made itself.
pub type ResBody = http_body_util::Either<PooledBody, axum::body::Body>;

/// What a gated request needs to know of its connection and of the observing layer.
#[derive(Clone, Copy)]
pub struct Conn<'a> {
    pub peer: Peer,
    /// The peer's address as a header value, made once per connection.
    pub peer_value: &'a HeaderValue,
    /// The connection's last accepted session.
    pub recent: &'a Recent,
    /// The request id.
    pub id: &'a HeaderValue,
}

/// The route class a handler put on its answer.
pub fn class_of(res: &Response) -> RouteClass {
    res.extensions()
        .get::<RouteClass>()
        .copied()
        .unwrap_or(RouteClass::Ops)
}

/// Everything that is not pbxgate's own: passthrough, or a valid session, then 3CX.
///
/// Not an `async fn`, for the reason given at `proxy::pool::Pool::send`.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
pub fn proxy_request<'a>(
    app: &'a App,
    upstream: &'a Upstream,
    conn: Conn<'a>,
    parts: Parts,
    body: UpstreamBody,
) -> impl Future<Output = (RouteClass, Response<ResBody>)> + 'a {
    async move {
        let rid = conn.id.to_str().unwrap_or("-");
        let made = |res: Response| (class_of(&res), res.map(http_body_util::Either::Right));
        if !proxy::path_is_safe(parts.uri.path()) {
            return made(web::page(
                Some(rid),
                RouteClass::Rejected,
                StatusCode::BAD_REQUEST,
                "Bad request",
                "The address contains path segments pbxgate does not forward.",
            ));
        }
        let client = ClientInfo::resolve_for(
            conn.peer.addr,
            conn.peer_value,
            conn.peer.tls,
            &parts.headers,
            &app.config.server.trusted_proxies,
        );
        let (class, parts, body) = match door::door_of(&parts.method, parts.uri.path()) {
            // Boxed: the rare path's future would otherwise enlarge every request's.
            Some(d) => match Box::pin(door::pass(app, conn, &client, d, parts, body)).await {
                Ok(passed) => passed,
                Err(res) => return made(res),
            },
            None if proxy::passthrough_prefix(parts.uri.path(), &app.config.pbx.passthrough)
                .is_some() =>
            {
                (RouteClass::Passthrough, parts, body)
            }
            None => match check_session(app, &parts, rid, conn.recent).await {
                Ok(()) => (RouteClass::Session, parts, body),
                Err(res) => return made(res),
            },
        };
        let fwd = Forward {
            client: &client,
            request_id: conn.id,
            cookie_name: app.sessions.cookie_name(),
        };
        match upstream
            .forward(Request::from_parts(parts, body), fwd)
            .await
        {
            Ok(res) => (class, res.map(http_body_util::Either::Left)),
            Err(e) => {
                tracing::error!(error = %e, "3CX request failed");
                made(web::page(
                    Some(rid),
                    class,
                    StatusCode::BAD_GATEWAY,
                    "The phone system is not reachable",
                    "pbxgate could not reach the 3CX phone system. Please try again in a minute.",
                ))
            }
        }
    }
}

/// Ok when the request carries a live session; otherwise the answer to send instead.
async fn check_session(app: &App, req: &Parts, rid: &str, recent: &Recent) -> Result<(), Response> {
    let presented = app.sessions.id_from_headers(&req.headers);
    let verdict = match presented {
        Some(id) => app.sessions.check_on(id, recent).await,
        None => Ok(Err(Rejection::Unknown)),
    };
    let rejection = match verdict {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(why)) => why,
        Err(e) => {
            tracing::error!(error = %e, "session lookup failed");
            return Err(web::page(
                Some(rid),
                RouteClass::Unauthenticated,
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in is temporarily unavailable",
                "pbxgate cannot check your session right now. Please try again in a minute.",
            ));
        }
    };
    if presented.is_some() {
        tracing::info!(reason = ?rejection, "session refused");
    }
    let mut res = if proxy::is_navigation(&req.method, &req.headers) {
        sign_in_redirect(req)
    } else {
        unauthenticated(rid)
    };
    web::security_headers(res.headers_mut());
    if presented.is_some()
        && let Ok(v) = HeaderValue::from_str(&app.sessions.clear_cookie())
    {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    Err(web::classed(RouteClass::Unauthenticated, res))
}

/// A browser navigation without a session: to the sign-in, and back here afterwards.
fn sign_in_redirect(req: &Parts) -> Response {
    let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let location = format!(
        "/auth/login?return_to={}",
        percent_encoding::utf8_percent_encode(target, percent_encoding::NON_ALPHANUMERIC)
    );
    Redirect::to(&location).into_response()
}

/// Anything else without a session (the SPA's XHRs, WebSocket upgrades): a redirect to
/// Entra would only surface as a CORS error there.
fn unauthenticated(rid: &str) -> Response {
    let mut res = (
        StatusCode::UNAUTHORIZED,
        axum::Json(serde_json::json!({
            "error": "unauthenticated",
            "login": "/auth/login",
            "request_id": rid,
        })),
    )
        .into_response();
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Cookie realm=\"pbxgate\""),
    );
    res
}
