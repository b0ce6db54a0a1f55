//! The Entra ID relying party: `/auth/login`, `/auth/callback`, `/auth/logout`,
//! `/auth/signed-out`, `/auth/frontchannel-logout`, and the webclient's `/connect/token`
//! refresh answered for signed-in browsers (impersonation mode).
//!
//! Every failure shows a short page with the request id; the reason goes to the log.

pub mod oidc;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::StatusCode;
use http::header::{HeaderValue, SET_COOKIE};
use http::request::Parts;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::clock::Clock;
use crate::config::{Config, SessionMode};
use crate::directory::{Identity, Resolution};
use crate::ids;
use crate::metrics::RouteClass;
use crate::pbx::{self, PbxError};
use crate::server::{App, classed, client_info, correlation};
use crate::session::{NewSession, cookie_pairs};
use crate::store::{DirectoryRow, LoginAttempt};
use crate::web::{self, Page};

pub use oidc::{OidcError, Provider, TokenError};

/// A sign-in must come back within this long.
const ATTEMPT_TTL: i64 = 600;

/// Sign-in state that is not per request.
pub struct Auth {
    pub provider: Arc<Provider>,
    redirect_uri: String,
    signed_out_uri: String,
    login_cookie: String,
    allowed_groups: Vec<String>,
    limiter: RateLimiter,
    passwords: Option<PasswordBox>,
}

impl Auth {
    pub fn new(
        config: &Config,
        clock: Arc<dyn Clock>,
        cookie_name: &str,
    ) -> Result<Self, OidcError> {
        let base = config.server.public_url.as_str().trim_end_matches('/');
        let passwords = config
            .pbx
            .password_key
            .as_ref()
            .map(PasswordBox::new)
            .transpose()
            .map_err(OidcError::Credential)?;
        Ok(Self {
            provider: Arc::new(Provider::new(&config.entra, clock)?),
            redirect_uri: format!("{base}/auth/callback"),
            signed_out_uri: format!("{base}/auth/signed-out"),
            login_cookie: format!("{cookie_name}-login"),
            allowed_groups: config.entra.allowed_groups.clone(),
            limiter: RateLimiter::new(config.server.login_rate_limit),
            passwords,
        })
    }

    fn login_cookie(&self, state: &str, max_age: i64) -> HeaderValue {
        let v = format!(
            "{}={state}; Path=/; Max-Age={max_age}; Secure; HttpOnly; SameSite=Lax",
            self.login_cookie
        );
        HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

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

/// Fixed one-minute windows per client address, kept in a bounded cache.
struct RateLimiter {
    per_minute: u32,
    windows: moka::sync::Cache<(std::net::IpAddr, u64), Arc<std::sync::atomic::AtomicU32>>,
}

impl RateLimiter {
    fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            windows: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(120))
                .build(),
        }
    }

    fn allow(&self, ip: std::net::IpAddr) -> bool {
        let minute = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() / 60)
            .unwrap_or(0);
        let n = self
            .windows
            .get_with((ip, minute), Default::default)
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        n < self.per_minute
    }
}

/// Web passwords of managed extensions, sealed with AES-256-GCM under `[pbx] password_key`.
struct PasswordBox(LessSafeKey);

impl PasswordBox {
    fn new(key: &SecretString) -> Result<Self, String> {
        let raw = STANDARD
            .decode(key.expose_secret().trim())
            .map_err(|e| format!("pbx.password_key: {e}"))?;
        let key =
            UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| "pbx.password_key: not 32 bytes")?;
        Ok(Self(LessSafeKey::new(key)))
    }

    fn seal(&self, plain: &str) -> Result<String, String> {
        let nonce = ids::random::<NONCE_LEN>().map_err(|e| e.to_string())?;
        let mut data = plain.as_bytes().to_vec();
        self.0
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data)
            .map_err(|_| "sealing failed")?;
        let mut out = nonce.to_vec();
        out.extend(data);
        Ok(STANDARD.encode(out))
    }

    fn open(&self, sealed: &str) -> Result<SecretString, String> {
        let raw = STANDARD.decode(sealed).map_err(|e| e.to_string())?;
        if raw.len() < NONCE_LEN {
            return Err("sealed password too short".into());
        }
        let (nonce, data) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "bad nonce")?;
        let mut data = data.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::empty(), &mut data)
            .map_err(|_| "the password key does not open this password (was it changed?)")?;
        String::from_utf8(plain.to_vec())
            .map(SecretString::from)
            .map_err(|e| e.to_string())
    }
}

// === handlers ===

fn failure(parts: &Parts, status: StatusCode, title: &'static str, message: &str) -> Response {
    crate::server::page(
        correlation(parts).as_deref(),
        RouteClass::Auth,
        status,
        title,
        message,
    )
}

fn rate_limited(app: &App, parts: &Parts) -> Option<Response> {
    let ip = client_info(app, parts).ip;
    if app.auth.limiter.allow(ip) {
        return None;
    }
    tracing::warn!(%ip, "sign-in rate limit reached");
    Some(failure(
        parts,
        StatusCode::TOO_MANY_REQUESTS,
        "Too many sign-in attempts",
        "Please wait a minute and try again.",
    ))
}

#[derive(Deserialize)]
pub struct LoginQuery {
    return_to: Option<String>,
    login_hint: Option<String>,
}

/// Starts a sign-in: stores the attempt and sends the browser to Entra.
pub async fn login(State(app): State<Arc<App>>, parts: Parts) -> Response {
    if let Some(res) = rate_limited(&app, &parts) {
        return res;
    }
    let q: LoginQuery = match Query::try_from_uri(&parts.uri) {
        Ok(Query(q)) => q,
        Err(_) => {
            return failure(
                &parts,
                StatusCode::BAD_REQUEST,
                "Bad sign-in link",
                "The sign-in link is malformed.",
            );
        }
    };
    let Some(return_to) = safe_return_to(q.return_to.as_deref()) else {
        tracing::warn!(return_to = ?q.return_to, "refused return_to");
        return failure(
            &parts,
            StatusCode::BAD_REQUEST,
            "Bad sign-in link",
            "The sign-in link points outside this site.",
        );
    };
    let login_hint = q
        .login_hint
        .filter(|h| h.len() <= 256 && !h.chars().any(char::is_control));
    match start_login(&app, return_to, login_hint.as_deref()).await {
        Ok((url, state)) => {
            let mut res = Redirect::to(&url).into_response();
            res.headers_mut()
                .append(SET_COOKIE, app.auth.login_cookie(&state, ATTEMPT_TTL));
            web::security_headers(res.headers_mut());
            classed(RouteClass::Auth, res)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start sign-in");
            failure(
                &parts,
                StatusCode::SERVICE_UNAVAILABLE,
                "Microsoft sign-in is unavailable",
                "pbxgate cannot reach Microsoft Entra ID right now. Please try again in a minute.",
            )
        }
    }
}

async fn start_login(
    app: &App,
    return_to: String,
    login_hint: Option<&str>,
) -> Result<(String, String), LoginStartError> {
    let state = URL_SAFE_NO_PAD.encode(ids::random::<32>()?);
    let nonce = URL_SAFE_NO_PAD.encode(ids::random::<32>()?);
    let verifier = URL_SAFE_NO_PAD.encode(ids::random::<32>()?);
    let challenge = URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ));
    let now = app.clock.now();
    app.store.purge_login_attempts(now - ATTEMPT_TTL).await?;
    app.store
        .insert_login_attempt(&LoginAttempt {
            state: state.clone(),
            nonce: nonce.clone(),
            pkce_verifier: verifier,
            return_to,
            created_at: now,
        })
        .await?;
    let url = app
        .auth
        .provider
        .authorization_url(
            &app.auth.redirect_uri,
            &state,
            &nonce,
            &challenge,
            login_hint,
        )
        .await?;
    Ok((url, state))
}

/// Why a sign-in could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoginStartError {
    #[error(transparent)]
    Random(#[from] crate::ids::RandomError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Oidc(#[from] OidcError),
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Entra's answer: checks the attempt, redeems the code, validates the ID token, finds the
/// extension, opens the 3CX session and the pbxgate session.
pub async fn callback(State(app): State<Arc<App>>, parts: Parts) -> Response {
    if let Some(res) = rate_limited(&app, &parts) {
        return res;
    }
    let Ok(Query(q)) = Query::<CallbackQuery>::try_from_uri(&parts.uri) else {
        return failure(
            &parts,
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "The answer from Microsoft is malformed.",
        );
    };
    if let Some(error) = q.error {
        tracing::warn!(%error, description = ?q.error_description, "Entra returned an error");
        return failure(
            &parts,
            StatusCode::FORBIDDEN,
            "Sign-in did not complete",
            "Microsoft Entra ID did not sign you in. Close this tab and try again.",
        );
    }
    let (Some(code), Some(state)) = (q.code, q.state) else {
        return failure(
            &parts,
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "The answer from Microsoft is incomplete.",
        );
    };
    // The attempt must have started in this browser (its cookie), be unused and recent.
    let cookie_state = cookie_pairs(&parts.headers)
        .find(|(k, _)| *k == app.auth.login_cookie)
        .map(|(_, v)| v);
    let same_browser = cookie_state.is_some_and(|c| ids::secrets_equal(c, &state));
    let attempt = match app.store.take_login_attempt(&state).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "login attempt lookup failed");
            return failure(
                &parts,
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in failed",
                "Please try again in a minute.",
            );
        }
    };
    let attempt = match attempt {
        Some(a) if same_browser && app.clock.now() - a.created_at <= ATTEMPT_TTL => a,
        other => {
            tracing::warn!(
                known = other.is_some(),
                same_browser,
                "sign-in state refused (unknown, reused, expired or from another browser)"
            );
            return failure(
                &parts,
                StatusCode::BAD_REQUEST,
                "This sign-in link has expired",
                "Sign-in links work once, for ten minutes, in the browser that started them. Please start again.",
            );
        }
    };
    match finish_login(&app, &parts, &code, &attempt).await {
        Ok(res) => res,
        Err(res) => res,
    }
}

async fn finish_login(
    app: &App,
    parts: &Parts,
    code: &str,
    attempt: &LoginAttempt,
) -> Result<Response, Response> {
    let provider = &app.auth.provider;
    let fail = |status, title, msg: &str| failure(parts, status, title, msg);
    let id_token = provider
        .exchange_code(code, &attempt.pkce_verifier, &app.auth.redirect_uri)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "code exchange failed");
            fail(
                StatusCode::BAD_GATEWAY,
                "Sign-in failed",
                "Microsoft Entra ID did not confirm the sign-in. Please try again.",
            )
        })?;
    let claims = provider
        .validate(&id_token, &attempt.nonce)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "ID token refused");
            fail(
                StatusCode::FORBIDDEN,
                "Sign-in failed",
                "The sign-in could not be verified. Please try again.",
            )
        })?;
    check_groups(app, &claims)
        .await
        .map_err(|m| fail(StatusCode::FORBIDDEN, "Access denied", &m))?;
    let identity = Identity {
        tenant_id: claims.tid.clone().unwrap_or_default(),
        object_id: claims.oid.clone().unwrap_or_default(),
        upn: claims.username().unwrap_or_default().to_string(),
        display_name: claims.name.clone().unwrap_or_default(),
    };
    let resolved = match app.directory.resolve(&identity).await {
        Ok(Resolution::NotAssigned { upn }) => provision_on_login(app, &identity, upn).await,
        other => other,
    };
    let person = match resolved {
        Ok(Resolution::Found(p)) => p,
        Ok(Resolution::NotAssigned { upn }) => {
            tracing::info!(%upn, oid = %identity.object_id, "no extension for user");
            return Err(fail(
                StatusCode::FORBIDDEN,
                "No extension is assigned to you",
                &format!(
                    "{upn} has no extension on this phone system. Ask your IT department to assign one."
                ),
            ));
        }
        Err(e) => {
            tracing::error!(error = %e, "directory lookup failed");
            return Err(fail(
                StatusCode::BAD_GATEWAY,
                "The phone system is not reachable",
                "pbxgate could not look up your extension. Please try again in a minute.",
            ));
        }
    };
    let pbx_cookies = open_pbx_session(app, &person).await.map_err(|e| {
        tracing::error!(error = %e, extension = %person.extension, "3CX session refused");
        fail(StatusCode::BAD_GATEWAY, "The phone system refused the sign-in", "3CX did not open a session for your extension. Please try again, or ask your IT department.")
    })?;
    let id = app
        .sessions
        .create(NewSession {
            user_key: format!("{}:{}", identity.tenant_id, identity.object_id),
            upn: identity.upn.clone(),
            extension: person.extension.clone(),
            idp_sid: claims.sid.clone(),
            login_hint: claims.login_hint.clone(),
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "session create failed");
            fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in failed",
                "Please try again in a minute.",
            )
        })?;
    tracing::info!(upn = %identity.upn, extension = %person.extension, "signed in");
    let mut res = Redirect::to(&attempt.return_to).into_response();
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&app.sessions.set_cookie(&id)) {
        h.append(SET_COOKIE, v);
    }
    h.append(SET_COOKIE, app.auth.login_cookie("", 0));
    for c in pbx_cookies {
        h.append(SET_COOKIE, c);
    }
    web::security_headers(h);
    Ok(classed(RouteClass::Auth, res))
}

/// A user the directory does not know yet gets an extension at once, through the user
/// sync's own plan and apply (`[sync.users] enabled` and `provision_on_login`).
async fn provision_on_login(
    app: &App,
    who: &Identity,
    upn: String,
) -> Result<Resolution, crate::directory::DirectoryError> {
    let sync = &app.config.sync.users;
    if !(sync.enabled && sync.provision_on_login) {
        return Ok(Resolution::NotAssigned { upn });
    }
    match app.users.provision(&who.object_id).await {
        Ok(Some(row)) if row.removed_at.is_none() => {
            tracing::info!(upn = %row.upn, extension = %row.extension, "provisioned at sign-in");
            Ok(Resolution::Found(row))
        }
        Ok(_) => Ok(Resolution::NotAssigned { upn }),
        Err(e) => {
            tracing::error!(error = %e, %upn, "provisioning at sign-in failed");
            Ok(Resolution::NotAssigned { upn })
        }
    }
}

/// `allowed_groups`: the user must be in one of them. With group overage the token does not
/// list the groups, and Graph is asked instead (`checkMemberGroups`).
async fn check_groups(app: &App, claims: &oidc::IdClaims) -> Result<(), String> {
    let allowed = &app.auth.allowed_groups;
    if allowed.is_empty() {
        return Ok(());
    }
    if claims.groups_overage() {
        let oid = claims.oid.clone().unwrap_or_default();
        return match app.graph.member_groups(&oid, allowed).await {
            Ok(found) if !found.is_empty() => Ok(()),
            Ok(_) => Err(
                "Your account is not in a group that may use the phone system's web client.".into(),
            ),
            Err(e) => {
                tracing::error!(error = %e, %oid, "group overage: Graph could not tell the user's groups");
                Err("Your account is in too many groups to be checked right now. Please try again later, or ask your IT department.".into())
            }
        };
    }
    let member = claims.groups.as_ref().is_some_and(|g| {
        g.iter()
            .any(|x| allowed.iter().any(|a| a.eq_ignore_ascii_case(x)))
    });
    if member {
        Ok(())
    } else {
        Err("Your account is not in a group that may use the phone system's web client.".into())
    }
}

/// Opens the user's 3CX session: checks impersonation works, or signs in with the managed
/// password (setting one first). Returns cookies to hand to the browser.
async fn open_pbx_session(app: &App, person: &DirectoryRow) -> Result<Vec<HeaderValue>, PbxError> {
    match app.config.pbx.session_mode {
        SessionMode::Impersonation => {
            app.pbx.impersonate(&person.extension).await?;
            Ok(Vec::new())
        }
        SessionMode::ManagedPassword => {
            let password = managed_password(app, person).await?;
            let login = app
                .pbx
                .webclient_login(&person.extension, &password)
                .await?;
            Ok(login.set_cookies)
        }
    }
}

/// The extension's managed web password; made, set in 3CX and stored on first use.
async fn managed_password(app: &App, person: &DirectoryRow) -> Result<SecretString, PbxError> {
    let boxed = app.auth.passwords.as_ref().ok_or(PbxError::NoPasswordKey)?;
    if let Some(sealed) = &person.managed_password {
        match boxed.open(sealed) {
            Ok(p) => return Ok(p),
            Err(e) => {
                tracing::warn!(error = %e, extension = %person.extension, "resetting the managed password")
            }
        }
    }
    let raw = ids::random::<24>().map_err(PbxError::Random)?;
    let password = SecretString::from(URL_SAFE_NO_PAD.encode(raw));
    app.pbx
        .set_access_password(person.pbx_user_id, &password)
        .await?;
    let sealed = boxed
        .seal(password.expose_secret())
        .map_err(PbxError::Seal)?;
    let mut row = person.clone();
    row.managed_password = Some(sealed);
    row.updated_at = app.clock.now();
    app.store
        .upsert_directory_user(&row)
        .await
        .map_err(PbxError::Store)?;
    Ok(password)
}

/// Signs out: ends the pbxgate session and the 3CX session, then Entra's.
pub async fn logout(State(app): State<Arc<App>>, parts: Parts) -> Response {
    let mut login_hint = None;
    if let Some(id) = app.sessions.id_from_headers(&parts.headers) {
        if let Ok(Ok(s)) = app.sessions.validate(id).await {
            login_hint = s.login_hint.clone();
            app.pbx.forget_impersonation(&s.extension);
        }
        if let Err(e) = app.sessions.revoke(id).await {
            tracing::error!(error = %e, "session revoke failed");
        }
    }
    let refresh = cookie_pairs(&parts.headers)
        .find(|(k, _)| *k == pbx::REFRESH_COOKIE)
        .map(|(_, v)| v.to_string());
    if let Some(refresh) = refresh
        && let Err(e) = app.pbx.webclient_logout(&refresh).await
    {
        tracing::warn!(error = %e, "3CX logout failed");
    }
    let target = app
        .auth
        .provider
        .end_session_url(&app.auth.signed_out_uri, login_hint.as_deref())
        .await
        .unwrap_or_else(|| "/auth/signed-out".to_string());
    let mut res = Redirect::to(&target).into_response();
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&app.sessions.clear_cookie()) {
        h.append(SET_COOKIE, v);
    }
    h.append(
        SET_COOKIE,
        HeaderValue::from_static("RefreshTokenCookie=; Path=/; Max-Age=0; Secure; HttpOnly"),
    );
    web::security_headers(h);
    tracing::info!("signed out");
    classed(RouteClass::Auth, res)
}

pub async fn signed_out() -> Response {
    classed(
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
    State(app): State<Arc<App>>,
    Query(q): Query<FrontChannelQuery>,
) -> Response {
    if let Some(sid) = q.sid.filter(|s| !s.is_empty() && s.len() <= 256) {
        match app.sessions.revoke_idp_session(&sid).await {
            Ok(n) => tracing::info!(sessions = n, "front-channel sign-out"),
            Err(e) => tracing::error!(error = %e, "front-channel sign-out failed"),
        }
    }
    let mut res = StatusCode::OK.into_response();
    res.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    classed(RouteClass::Auth, res)
}

/// The webclient's token refresh (`client_id=Webclient&grant_type=refresh_token`) from a
/// signed-in browser, answered with an impersonated token. Returns None to pass the request
/// on to 3CX unchanged (apps, API clients, other grants).
pub async fn answer_webclient_token(app: &App, parts: &Parts, body: &[u8]) -> Option<Response> {
    if app.config.pbx.session_mode != SessionMode::Impersonation {
        return None;
    }
    let form: Vec<(String, String)> = form_pairs(body);
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if get("client_id") != Some("Webclient") || get("grant_type") != Some("refresh_token") {
        return None;
    }
    let id = app.sessions.id_from_headers(&parts.headers)?;
    let session = match app.sessions.validate(id).await {
        Ok(Ok(s)) => s,
        _ => return None,
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
            res.headers_mut().insert(
                http::header::CACHE_CONTROL,
                HeaderValue::from_static("no-store"),
            );
            res
        }
        Err(e) => {
            tracing::error!(error = %e, extension = %session.extension, "impersonation failed");
            (
                StatusCode::BAD_GATEWAY,
                axum::Json(serde_json::json!({"error": "server_error", "error_description": "3CX did not issue a token", "request_id": correlation(parts)})),
            )
                .into_response()
        }
    };
    Some(classed(RouteClass::Session, res))
}

fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
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

    #[test]
    fn managed_passwords_round_trip_and_need_the_key() {
        let key = SecretString::from(STANDARD.encode([7u8; 32]));
        let b = PasswordBox::new(&key).unwrap();
        let sealed = b.seal("s3cret").unwrap();
        assert!(!sealed.contains("s3cret"));
        assert_eq!(b.open(&sealed).unwrap().expose_secret(), "s3cret");
        let other = PasswordBox::new(&SecretString::from(STANDARD.encode([8u8; 32]))).unwrap();
        assert!(other.open(&sealed).is_err());
    }

    #[test]
    fn rate_limiter_counts_per_address() {
        let r = RateLimiter::new(2);
        let a: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        let b: std::net::IpAddr = "192.0.2.2".parse().unwrap();
        assert!(r.allow(a) && r.allow(a));
        assert!(!r.allow(a));
        assert!(r.allow(b));
    }
}
