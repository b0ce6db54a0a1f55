//! The password door: 3CX's own ways in with an extension's credentials — the password
//! login (`/webclient/api/Login/…`, which the 3CX apps and the webclient's login page use)
//! and 3CX's OAuth endpoints (`/connect/…`). Left open, anyone with an extension number and
//! its old web password gets a 3CX token from outside, without Entra ID.
//!
//! - the password login passes only from `[pbx] password_login_from` (break-glass);
//!   elsewhere a navigation goes to sign-in and anything else gets 403;
//! - `/connect/token` is decided by its grant ([`super::token`]);
//! - other `/connect/` paths (20.0.10's `/connect/authorize`, …) need a pbxgate session,
//!   or `password_login_from`.
//!
//! These paths are recognised as 3CX might read them (any letter case, percent-decoded,
//! repeated slashes merged), so that a spelling 3CX routes the same way cannot slip past.

use std::borrow::Cow;

use axum::response::{IntoResponse, Response};
use http::header::{CACHE_CONTROL, HeaderValue};
use http::request::Parts;
use http::{Method, StatusCode};
use percent_encoding::percent_decode_str;

use super::{Conn, token};
use crate::app::App;
use crate::metrics::RouteClass;
use crate::proxy::{self, ClientInfo, UpstreamBody};

/// Which of 3CX's own doors a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// `/webclient/api/Login` and below: sign-in with an extension's password.
    PasswordLogin,
    /// `POST /connect/token`: 3CX's OAuth token endpoint.
    Token,
    /// Any other `/connect/` path (`/connect/authorize` in 20.0.10, …).
    Connect,
}

/// A request the door lets through: how to count it, and the request to forward (its body
/// unchanged, though perhaps read).
pub type Passed = (RouteClass, Parts, UpstreamBody);

/// The door `path` is, if any. Cheap on the common path: two prefix comparisons unless the
/// path has a `%` or a `//`.
pub fn door_of(method: &Method, path: &str) -> Option<Door> {
    let bytes = path.as_bytes();
    let plain =
        memchr::memchr(b'%', bytes).is_none() && memchr::memmem::find(bytes, b"//").is_none();
    let path: Cow<str> = if plain {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(merge_slashes(&percent_decode_str(path).decode_utf8_lossy()))
    };
    if under(&path, "/webclient/api/login") {
        Some(Door::PasswordLogin)
    } else if under(&path, "/connect") {
        let token = path
            .trim_end_matches('/')
            .eq_ignore_ascii_case("/connect/token");
        Some(if token && method == Method::POST {
            Door::Token
        } else {
            Door::Connect
        })
    } else {
        None
    }
}

/// `path` is `prefix` or below it, in any letter case.
fn under(path: &str, prefix: &str) -> bool {
    let (p, n) = (path.as_bytes(), prefix.len());
    p.len() >= n
        && p[..n].eq_ignore_ascii_case(prefix.as_bytes())
        && matches!(p.get(n), None | Some(b'/'))
}

fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

/// Whether the client may use 3CX's own sign-in: break-glass networks only.
pub fn from_break_glass(app: &App, client: &ClientInfo) -> bool {
    client.is_within(&app.config.pbx.password_login_from)
}

/// Lets a request through one of 3CX's doors, or answers it here.
pub async fn pass(
    app: &App,
    conn: Conn<'_>,
    client: &ClientInfo,
    door: Door,
    parts: Parts,
    body: UpstreamBody,
) -> Result<Passed, Response> {
    let rid = conn.id.to_str().unwrap_or("-");
    let break_glass = from_break_glass(app, client);
    match door {
        Door::Token => token::pass(app, conn, client, break_glass, parts, body).await,
        _ if break_glass => {
            tracing::info!(client = %client.ip, door = ?door, "3CX sign-in passed from password_login_from");
            Ok((RouteClass::Passthrough, parts, body))
        }
        Door::Connect => match super::check_session(app, &parts, rid, conn.recent).await {
            Ok(()) => Ok((RouteClass::Session, parts, body)),
            Err(res) => Err(res),
        },
        Door::PasswordLogin => Err(refuse_password_login(app, conn, client, &parts).await),
    }
}

/// Outside `password_login_from`: a browser navigation without a session goes to sign-in
/// (as everywhere); anything else — also with a session, which must not open another
/// extension by its password — gets a short JSON 403.
async fn refuse_password_login(
    app: &App,
    conn: Conn<'_>,
    client: &ClientInfo,
    parts: &Parts,
) -> Response {
    let rid = conn.id.to_str().unwrap_or("-");
    if proxy::is_navigation(&parts.method, &parts.headers)
        && let Err(res) = super::check_session(app, parts, rid, conn.recent).await
    {
        return res;
    }
    tracing::info!(
        client = %client.ip,
        request_id = rid,
        "3CX password sign-in refused: the client is not in pbx.password_login_from"
    );
    let mut res = (
        StatusCode::FORBIDDEN,
        axum::Json(serde_json::json!({
            "error": "password_sign_in_disabled",
            "error_description": "pbxgate: sign-in with a 3CX password is turned off here; \
                sign in with your Microsoft account instead",
            "login": "/auth/login",
            "request_id": rid,
        })),
    )
        .into_response();
    res.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    crate::web::classed(RouteClass::Unauthenticated, res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doors_are_recognised_in_every_spelling() {
        let post = |p: &str| door_of(&Method::POST, p);
        for p in [
            "/webclient/api/Login/GetAccessToken",
            "/WEBCLIENT/api/login/GetAccessToken",
            "/webclient/api/Login",
            "/webclient//api/Login/GetAccessToken",
            "/webclient/api/%4Cogin/GetAccessToken",
        ] {
            assert_eq!(post(p), Some(Door::PasswordLogin), "{p}");
        }
        for p in [
            "/connect/token",
            "/Connect/Token",
            "/connect/token/",
            "//connect/token",
        ] {
            assert_eq!(post(p), Some(Door::Token), "{p}");
        }
        assert_eq!(door_of(&Method::GET, "/connect/token"), Some(Door::Connect));
        assert_eq!(post("/connect/authorize"), Some(Door::Connect));
        assert_eq!(post("/connect"), Some(Door::Connect));
        for p in [
            "/webclient/api/Loginx",
            "/webclient/api/MyPhone/session",
            "/connectx/token",
            "/xapi/v1/MyUser",
            "/",
        ] {
            assert_eq!(post(p), None, "{p}");
        }
        // What the config refuses in `passthrough` is what the gate decides itself.
        for d in crate::config::DOOR_PREFIXES {
            assert!(post(&format!("{d}x")).is_some(), "{d}");
        }
    }
}
