//! How the simulated 3CX signs extensions in and issues tokens, as `shared/notes/3cx.md` §2
//! describes the real one, strict where it is strict:
//! - `/webclient/api/Login/GetAccessToken`: 401 for a wrong password; for an extension with
//!   2FA, `Status: "Required2FA"` and no token unless `SecurityCode` holds the current
//!   RFC 6238 code (checked here with the simulator's own HMAC, not the product's);
//!   success sets the `RefreshTokenCookie`.
//! - `/connect/token` `grant_type=refresh_token`: the refresh token comes from the cookie or
//!   the body `refresh_token`; none at all is a 400 `invalid_request`, an unknown, expired,
//!   revoked or rotated-out one a 400 `invalid_grant`. Every use rotates it (the answer sets
//!   a new cookie and the old one stops working) unless a test turns rotation off.
//! - `impersonate=<ext>`: only with an admin (System Owner) extension's refresh token; the
//!   access token is for the target and no refresh token comes with it. Impersonating
//!   oneself is a 403 (as observed). A disabled, unknown target or a non-admin caller is a
//!   403 too: the real answer is not known, the simulator picks the refusal.
//! - The API client's bearer token authorises impersonation only when a test or the demo
//!   allows that variant ([`PbxSim::allow_api_client_impersonation`]): nothing public shows a
//!   real 3CX accepting it, so by default it is refused like any request without a refresh
//!   token.

use std::sync::Arc;

use axum::extract::{Form, State};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use http::header::SET_COOKIE;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use pbxgate_wire::clock::UnixTime;
use pbxgate_wire::ids;
use pbxgate_wire::pbx::REFRESH_COOKIE;

use super::{PbxSim, PbxState, Subject, oauth_error};

/// Refresh tokens live 60 days (REDiTECH's documentation of 20.0.8).
const REFRESH_LIFETIME: i64 = 60 * 24 * 3600;

/// A live refresh token.
#[derive(Debug, Clone)]
pub(super) struct Refresh {
    pub extension: String,
    pub expires_at: UnixTime,
}

#[derive(Deserialize)]
pub(super) struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    impersonate: Option<String>,
    refresh_token: Option<String>,
}

pub(super) fn refresh_cookie(headers: &HeaderMap) -> Option<String> {
    pbxgate_wire::cookie::cookie_pairs(headers)
        .find(|(k, _)| *k == REFRESH_COOKIE)
        .map(|(_, v)| v.to_string())
}

fn token_json(token: &str, expires_in: i64) -> Value {
    json!({"token_type": "Bearer", "expires_in": expires_in, "access_token": token, "refresh_token": null})
}

fn set_refresh_cookie(res: &mut Response, value: &str, max_age: i64) {
    let c = format!(
        "{REFRESH_COOKIE}={value}; Path=/; Max-Age={max_age}; Secure; HttpOnly; SameSite=Strict"
    );
    if let Ok(v) = http::HeaderValue::from_str(&c) {
        res.headers_mut().append(SET_COOKIE, v);
    }
}

impl PbxSim {
    fn new_refresh(&self, s: &mut PbxState, extension: &str) -> String {
        let token = format!("rt-{}", ids::hex(&ids::random::<16>().unwrap_or([6; 16])));
        let expires_at = self.clock.now() + REFRESH_LIFETIME;
        s.refresh.insert(
            token.clone(),
            Refresh {
                extension: extension.to_string(),
                expires_at,
            },
        );
        token
    }

    /// The extension a live refresh token belongs to.
    fn refresh_owner(&self, s: &PbxState, token: &str) -> Option<String> {
        let now = self.clock.now();
        s.refresh
            .get(token)
            .filter(|r| r.expires_at > now)
            .map(|r| r.extension.clone())
    }

    /// After a use of `old`: a new refresh token in its place (rotation), or `None` when
    /// rotation is off and `old` stays valid.
    fn rotate(&self, s: &mut PbxState, old: &str, extension: &str) -> Option<String> {
        if s.keep_refresh_tokens {
            return None;
        }
        s.refresh.remove(old);
        Some(self.new_refresh(s, extension))
    }
}

pub(super) async fn connect_token(
    State(sim): State<Arc<PbxSim>>,
    headers: HeaderMap,
    Form(f): Form<TokenForm>,
) -> Response {
    match (f.grant_type.as_deref(), f.client_id.as_deref()) {
        (Some("client_credentials"), Some(id)) => client_credentials(&sim, id, f.client_secret),
        (Some("refresh_token"), Some("Webclient")) => {
            if let Some(status) = sim.sessions_failing() {
                return status.into_response();
            }
            let presented = refresh_cookie(&headers).or(f.refresh_token);
            match (presented, f.impersonate) {
                (Some(rt), Some(ext)) => impersonate(&sim, &rt, &ext),
                (Some(rt), None) => refresh(&sim, &rt),
                (None, Some(ext)) if sim.api_client_impersonation_allowed(&headers) => {
                    impersonate_as_api_client(&sim, &ext)
                }
                (None, _) => oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "The mandatory 'refresh_token' parameter is missing.",
                ),
            }
        }
        _ => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "The grant type is not supported.",
        ),
    }
}

fn client_credentials(sim: &PbxSim, id: &str, secret: Option<String>) -> Response {
    let ok = id == sim.api_client_id
        && secret
            .as_deref()
            .is_some_and(|s| ids::secrets_equal(s, &sim.api_client_secret));
    if !ok {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "The request requires valid user authentication.",
        );
    }
    let (token, exp) = sim.with(|s| {
        s.api_token_grants += 1;
        sim.issue(s, Subject::ApiClient)
    });
    axum::Json(token_json(&token, exp)).into_response()
}

fn invalid_grant() -> Response {
    oauth_error(
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        "The refresh token is invalid or expired.",
    )
}

/// The webclient's refresh: a new access token for the refresh token's extension.
fn refresh(sim: &PbxSim, presented: &str) -> Response {
    let issued = sim.with(|s| {
        let ext = sim.refresh_owner(s, presented)?;
        let rotated = sim.rotate(s, presented, &ext);
        let (token, exp) = sim.issue(s, Subject::Extension(ext));
        Some((rotated, token, exp))
    });
    match issued {
        Some((rotated, token, exp)) => {
            let mut res = axum::Json(token_json(&token, exp)).into_response();
            if let Some(new) = rotated {
                set_refresh_cookie(&mut res, &new, REFRESH_LIFETIME);
            }
            res
        }
        None => invalid_grant(),
    }
}

/// Impersonation with an admin extension's refresh token.
fn impersonate(sim: &PbxSim, presented: &str, target: &str) -> Response {
    let outcome = sim.with(|s| {
        let Some(caller) = sim.refresh_owner(s, presented) else {
            return Err(invalid_grant());
        };
        let admin = s
            .extensions
            .iter()
            .any(|e| e.number == caller && e.enabled && e.admin);
        if !admin || caller == target || !target_enabled(s, target) {
            // As observed for oneself; assumed for the rest (see the module doc).
            return Err(StatusCode::FORBIDDEN.into_response());
        }
        s.impersonations.push((caller.clone(), target.to_string()));
        let rotated = sim.rotate(s, presented, &caller);
        let (token, exp) = sim.issue(s, Subject::Extension(target.to_string()));
        Ok((rotated, token, exp))
    });
    match outcome {
        Ok((rotated, token, exp)) => {
            let mut res = axum::Json(token_json(&token, exp)).into_response();
            if let Some(new) = rotated {
                set_refresh_cookie(&mut res, &new, REFRESH_LIFETIME);
            }
            res
        }
        Err(res) => res,
    }
}

fn target_enabled(s: &PbxState, target: &str) -> bool {
    s.extensions.iter().any(|e| e.number == target && e.enabled)
}

/// The unverified variant: the API client's bearer token, when allowed.
fn impersonate_as_api_client(sim: &PbxSim, target: &str) -> Response {
    let issued = sim.with(|s| {
        target_enabled(s, target).then(|| {
            s.impersonations
                .push(("api-client".into(), target.to_string()));
            sim.issue(s, Subject::Extension(target.to_string()))
        })
    });
    match issued {
        Some((token, exp)) => axum::Json(token_json(&token, exp)).into_response(),
        None => StatusCode::FORBIDDEN.into_response(),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct LoginBody {
    username: String,
    password: String,
    #[serde(default)]
    security_code: Option<String>,
}

pub(super) async fn login(
    State(sim): State<Arc<PbxSim>>,
    axum::Json(b): axum::Json<LoginBody>,
) -> Response {
    if let Some(status) = sim.sessions_failing() {
        return status.into_response();
    }
    let ext = sim.with(|s| {
        s.extensions
            .iter()
            .find(|e| {
                (e.number == b.username || e.email.eq_ignore_ascii_case(&b.username))
                    && e.enabled
                    && e.access_password
                        .as_deref()
                        .is_some_and(|p| ids::secrets_equal(p, &b.password))
            })
            .cloned()
    });
    let Some(ext) = ext else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    if let Some(secret) = &ext.totp_secret {
        let code = b.security_code.as_deref().unwrap_or("");
        if !totp_matches(secret, code, sim.clock.now()) {
            return axum::Json(
                json!({"Status": "Required2FA", "Token": null, "TwoFactorAuth": null}),
            )
            .into_response();
        }
    }
    let (refresh, token, exp) = sim.with(|s| {
        *s.sign_ins.entry(ext.number.clone()).or_default() += 1;
        let refresh = sim.new_refresh(s, &ext.number);
        let (token, exp) = sim.issue(s, Subject::Extension(ext.number.clone()));
        (refresh, token, exp)
    });
    let mut res = axum::Json(json!({
        "Status": "AuthSuccess",
        "Token": {"token_type": "Bearer", "expires_in": exp, "access_token": token, "refresh_token": refresh},
        "TwoFactorAuth": null,
    }))
    .into_response();
    set_refresh_cookie(&mut res, &refresh, REFRESH_LIFETIME);
    res
}

pub(super) async fn logout(State(sim): State<Arc<PbxSim>>, headers: HeaderMap) -> Response {
    if let Some(rt) = refresh_cookie(&headers) {
        sim.with(|s| s.refresh.remove(&rt));
    }
    let mut res = StatusCode::NO_CONTENT.into_response();
    set_refresh_cookie(&mut res, "", 0);
    res
}

/// RFC 6238 with authenticator-app parameters (SHA-1, 30 s, 6 digits), one step of clock
/// drift either way, as authenticators are commonly verified.
fn totp_matches(secret_base32: &str, code: &str, now: UnixTime) -> bool {
    let clean: String = secret_base32
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '=')
        .collect::<String>()
        .to_ascii_uppercase();
    let Ok(key) = data_encoding::BASE32_NOPAD.decode(clean.as_bytes()) else {
        return false;
    };
    if code.len() != 6 {
        return false;
    }
    let step = now.max(0) / 30;
    [step - 1, step, step + 1]
        .into_iter()
        .any(|t| ids::secrets_equal(&hotp(&key, t.max(0) as u64), code))
}

/// RFC 4226 HOTP, six digits.
fn hotp(key: &[u8], counter: u64) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(&counter.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let o = (h[19] & 0x0f) as usize;
    let n = (u32::from(h[o]) & 0x7f) << 24
        | u32::from(h[o + 1]) << 16
        | u32::from(h[o + 2]) << 8
        | u32::from(h[o + 3]);
    format!("{:06}", n % 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hotp_matches_rfc_4226() {
        let key = b"12345678901234567890";
        let expected = ["755224", "287082", "359152", "969429", "338314"];
        for (i, e) in expected.iter().enumerate() {
            assert_eq!(hotp(key, i as u64), *e);
        }
        // "12345678901234567890" in base32, checked at T = 59 (RFC 6238 appendix B).
        let secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
        assert!(totp_matches(secret, "287082", 59));
        assert!(!totp_matches(secret, "287083", 59));
        assert!(!totp_matches(secret, "287082", 59 + 90));
    }
}
