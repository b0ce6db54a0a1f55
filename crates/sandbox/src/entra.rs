//! A simulated Microsoft Entra ID tenant (v2.0 endpoints), as `shared/notes/graph-entra.md`
//! describes them: discovery, JWKS, authorize (a page listing the demo users, or automatic
//! sign-in with `login_hint`), the token endpoint (authorization code with PKCE S256; client
//! secret, HTTP Basic or certificate assertion; client credentials) with Entra's error shape,
//! and end-session. App-only tokens are JWTs for Graph carrying the app's granted `roles`,
//! which the Graph simulator verifies ([`EntraSim::verify_app_token`]). Tests can rotate the
//! signing key, tamper with ID tokens, make the JWKS or token endpoint fail or the JWKS slow,
//! and count JWKS requests.

// Handler helpers return the error response itself; boxing it would only add noise here.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::{HeaderMap, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde::Deserialize;
use serde_json::{Value, json};

use pbxgate_wire::clock::{Clock, UnixTime};
use pbxgate_wire::html::escape;
use pbxgate_wire::ids;

pub mod devicecode;

/// An RSA signing key with its JWKS entry.
pub struct SigningKey {
    pub kid: String,
    encoding: EncodingKey,
    pub n: String,
    pub e: String,
    /// PKCS#1 PEM of the public key (what an HS256-confusion attacker would use as secret).
    public_pem: String,
    /// PKCS#8 PEM of the private key (to build client certificates in tests).
    pub private_pem: String,
}

/// RSA keys are slow to make; a process makes each one once and hands out clones.
pub fn signing_key(index: usize) -> Arc<SigningKey> {
    static POOL: OnceLock<Mutex<HashMap<usize, Arc<SigningKey>>>> = OnceLock::new();
    let pool = POOL.get_or_init(Default::default);
    if let Some(k) = pool.lock().ok().and_then(|p| p.get(&index).cloned()) {
        return k;
    }
    let key = Arc::new(generate_key());
    if let Ok(mut p) = pool.lock() {
        p.entry(index).or_insert_with(|| key.clone());
    }
    key
}

fn generate_key() -> SigningKey {
    use rsa::pkcs1::EncodeRsaPublicKey;
    let private =
        rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("RSA key generation");
    let der = private.to_pkcs1_der().expect("PKCS#1 encoding");
    let private_pem =
        rsa::pkcs8::EncodePrivateKey::to_pkcs8_pem(&private, rsa::pkcs8::LineEnding::LF)
            .expect("PKCS#8 PEM")
            .to_string();
    let public = private.to_public_key();
    let public_pem = public
        .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
        .expect("PKCS#1 PEM");
    let kid = URL_SAFE_NO_PAD.encode(ids::random::<9>().unwrap_or([7; 9]));
    SigningKey {
        kid,
        encoding: EncodingKey::from_rsa_der(der.as_bytes()),
        n: URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
        e: URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
        public_pem,
        private_pem,
    }
}

/// A registered application.
#[derive(Clone, Debug)]
pub struct SimApp {
    pub client_id: String,
    pub secret: Option<String>,
    /// For certificate credentials: the certificate (DER) and its public key (n, e, base64url).
    pub certificate: Option<(Vec<u8>, String, String)>,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// Application permissions granted (admin-consented) on Microsoft Graph, by value such as
    /// "User.Read.All": the `roles` of the app's client-credentials tokens.
    pub roles: Vec<String>,
}

/// A user of the simulated tenant.
#[derive(Clone, Debug)]
pub struct SimUser {
    pub oid: String,
    pub upn: String,
    pub name: String,
    pub groups: Vec<String>,
}

/// How a tampered ID token is signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forge {
    /// Properly, with the current key.
    Proper,
    /// `alg: none`, no signature.
    Unsigned,
    /// HS256 keyed with the public key's PEM (the algorithm-confusion attack).
    Hs256WithPublicKey,
    /// RS256 with a key the JWKS does not hold, under the current kid.
    WrongKey,
    /// RS256 with a key the JWKS does not hold, under an unknown kid.
    UnknownKid,
}

/// An endpoint tests can make fail, as Entra does in an outage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Jwks,
    Token,
}

/// A change applied to the claims of every following ID token.
pub type ClaimEdit = Arc<dyn Fn(&mut Value) + Send + Sync>;

struct Grant {
    client_id: String,
    redirect_uri: String,
    nonce: Option<String>,
    challenge: String,
    user: SimUser,
    expires_at: UnixTime,
}

pub struct EntraSim {
    pub tenant_id: String,
    base: RwLock<String>,
    apps: RwLock<Vec<SimApp>>,
    pub users: Vec<SimUser>,
    keys: RwLock<Vec<Arc<SigningKey>>>,
    codes: Mutex<HashMap<String, Grant>>,
    forge: RwLock<(Forge, Option<ClaimEdit>)>,
    clock: Arc<dyn Clock>,
    /// Token endpoint calls, for tests.
    pub token_calls: std::sync::atomic::AtomicUsize,
    /// JWKS requests served (or failed), for tests.
    pub jwks_calls: std::sync::atomic::AtomicUsize,
    /// Endpoints answering an error status instead of their document.
    failing: RwLock<HashMap<Endpoint, StatusCode>>,
    /// How long the JWKS takes to answer (a slow Entra, so that requests overlap).
    jwks_delay: RwLock<std::time::Duration>,
    /// `logout_hint`s received at end-session, for tests.
    pub logouts: Mutex<Vec<Option<String>>>,
    /// The device code flow (`entra/devicecode.rs`).
    device: Mutex<devicecode::DeviceCodes>,
}

impl EntraSim {
    pub fn new(
        tenant_id: &str,
        apps: Vec<SimApp>,
        users: Vec<SimUser>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            tenant_id: tenant_id.to_string(),
            base: RwLock::new(String::new()),
            apps: RwLock::new(apps),
            users,
            keys: RwLock::new(vec![signing_key(0)]),
            codes: Mutex::new(HashMap::new()),
            forge: RwLock::new((Forge::Proper, None)),
            clock,
            token_calls: Default::default(),
            jwks_calls: Default::default(),
            failing: RwLock::new(HashMap::new()),
            jwks_delay: RwLock::new(std::time::Duration::ZERO),
            logouts: Mutex::new(Vec::new()),
            device: Mutex::default(),
        }
    }

    /// Where the simulator listens, e.g. `http://127.0.0.1:40123`; set once it is bound.
    pub fn set_base(&self, base: &str) {
        if let Ok(mut b) = self.base.write() {
            *b = base.trim_end_matches('/').to_string();
        }
    }

    fn base(&self) -> String {
        self.base.read().map(|b| b.clone()).unwrap_or_default()
    }

    pub fn issuer(&self) -> String {
        format!("{}/{}/v2.0", self.base(), self.tenant_id)
    }

    fn token_endpoint(&self) -> String {
        format!("{}/{}/oauth2/v2.0/token", self.base(), self.tenant_id)
    }

    /// Starts signing with a new key (index into the process key pool); keeps the previous
    /// one in the JWKS, as Entra does during a rollover.
    pub fn rotate_key(&self, index: usize) {
        if let Ok(mut keys) = self.keys.write() {
            keys.push(signing_key(index));
            let excess = keys.len().saturating_sub(2);
            keys.drain(..excess);
        }
    }

    /// Makes `endpoint` answer `status` (with Entra's error body) from now on; `None` heals.
    /// A 2xx status makes it answer a broken success instead (the JWKS: no key at all).
    pub fn fail(&self, endpoint: Endpoint, status: Option<StatusCode>) {
        if let Ok(mut f) = self.failing.write() {
            match status {
                Some(s) => f.insert(endpoint, s),
                None => f.remove(&endpoint),
            };
        }
    }

    /// The error answer of `endpoint` while it is failing; a 2xx status is a broken
    /// success instead (for the JWKS: a set with no key).
    fn failure(&self, endpoint: Endpoint) -> Option<Response> {
        let status = *self.failing.read().ok()?.get(&endpoint)?;
        if status.is_success() {
            return Some((status, axum::Json(json!({ "keys": [] }))).into_response());
        }
        Some(entra_error(
            status,
            "temporarily_unavailable",
            90033,
            "A transient error has occurred. Please try again.",
        ))
    }

    /// Makes the JWKS answer only after `delay`.
    pub fn delay_jwks(&self, delay: std::time::Duration) {
        if let Ok(mut d) = self.jwks_delay.write() {
            *d = delay;
        }
    }

    /// Makes every following ID token forged as `forge`, with `edit` applied to its claims.
    pub fn tamper(&self, forge: Forge, edit: Option<ClaimEdit>) {
        if let Ok(mut f) = self.forge.write() {
            *f = (forge, edit);
        }
    }

    /// Registers (or replaces) an application.
    pub fn register_app(&self, app: SimApp) {
        if let Ok(mut apps) = self.apps.write() {
            apps.retain(|a| a.client_id != app.client_id);
            apps.push(app);
        }
    }

    fn app(&self, client_id: Option<&str>) -> Option<SimApp> {
        let apps = self.apps.read().ok()?;
        apps.iter()
            .find(|a| Some(a.client_id.as_str()) == client_id)
            .cloned()
    }

    fn current_key(&self) -> Arc<SigningKey> {
        self.keys
            .read()
            .ok()
            .and_then(|k| k.last().cloned())
            .unwrap_or_else(|| signing_key(0))
    }

    fn user_by_hint(&self, hint: &str) -> Option<SimUser> {
        self.users
            .iter()
            .find(|u| u.upn.eq_ignore_ascii_case(hint.trim()))
            .cloned()
    }

    fn id_token(&self, app: &SimApp, user: &SimUser, nonce: Option<&str>) -> String {
        let now = self.clock.now();
        let mut claims = json!({
            "ver": "2.0",
            "iss": self.issuer(),
            "aud": app.client_id,
            "tid": self.tenant_id,
            "oid": user.oid,
            "sub": format!("sub-{}", user.oid),
            "preferred_username": user.upn,
            "name": user.name,
            "email": user.upn,
            "sid": format!("sid-{}", user.oid),
            "login_hint": format!("hint-{}", user.oid),
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
        });
        if let Some(n) = nonce {
            claims["nonce"] = json!(n);
        }
        if !user.groups.is_empty() {
            claims["groups"] = json!(user.groups);
        }
        let (forge, edit) = self
            .forge
            .read()
            .map(|f| (f.0, f.1.clone()))
            .unwrap_or((Forge::Proper, None));
        if let Some(edit) = edit {
            edit(&mut claims);
        }
        let key = self.current_key();
        let rs256 = |kid: &str, k: &EncodingKey| {
            let mut h = Header::new(Algorithm::RS256);
            h.kid = Some(kid.to_string());
            jsonwebtoken::encode(&h, &claims, k).unwrap_or_default()
        };
        match forge {
            Forge::Proper => rs256(&key.kid, &key.encoding),
            Forge::WrongKey => rs256(&key.kid, &signing_key(99).encoding),
            Forge::UnknownKid => rs256("unknown-kid", &signing_key(99).encoding),
            Forge::Hs256WithPublicKey => {
                let mut h = Header::new(Algorithm::HS256);
                h.kid = Some(key.kid.clone());
                let secret = EncodingKey::from_secret(key.public_pem.as_bytes());
                jsonwebtoken::encode(&h, &claims, &secret).unwrap_or_default()
            }
            Forge::Unsigned => {
                let h = json!({"alg": "none", "typ": "JWT", "kid": key.kid});
                format!(
                    "{}.{}.",
                    URL_SAFE_NO_PAD.encode(h.to_string()),
                    URL_SAFE_NO_PAD.encode(claims.to_string())
                )
            }
        }
    }
}

/// Seconds an app-only token lives (Entra: 60–90 minutes; the sim says 3599 as Entra's
/// answer usually does).
const APP_TOKEN_LIFETIME: i64 = 3599;

/// Audiences a Graph token may carry: the resource URI or Graph's app id.
pub const GRAPH_AUDIENCES: [&str; 2] = [
    "https://graph.microsoft.com",
    "00000003-0000-0000-c000-000000000000",
];

/// What a resource learns from a verified app-only token.
#[derive(Clone, Debug)]
pub struct AppToken {
    pub appid: String,
    pub roles: Vec<String>,
}

impl EntraSim {
    /// The issuer of app-only (v1.0) tokens for Graph: `https://sts.windows.net/{tid}/`.
    fn sts_issuer(&self) -> String {
        format!("https://sts.windows.net/{}/", self.tenant_id)
    }

    /// An app-only access token for Microsoft Graph as Entra issues one for the client
    /// credentials grant: a JWT signed with the current key, `aud` Graph, the app's granted
    /// `roles` (left out when none, as Entra does), `appid`, `tid`, `exp`. The sim simulates
    /// one resource only: any `{resource}/.default` scope yields a Graph token.
    fn app_token_of(&self, app: &SimApp, lifetime: i64) -> String {
        let now = self.clock.now();
        let mut claims = json!({
            "aud": GRAPH_AUDIENCES[0],
            "iss": self.sts_issuer(),
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "appid": app.client_id,
            "idtyp": "app",
            "tid": self.tenant_id,
            "oid": format!("sp-{}", app.client_id),
            "sub": format!("sp-{}", app.client_id),
            "ver": "1.0",
        });
        if !app.roles.is_empty() {
            claims["roles"] = json!(app.roles);
        }
        let key = self.current_key();
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&h, &claims, &key.encoding).unwrap_or_default()
    }

    /// A Graph token for a registered app, lasting `lifetime` seconds (for tests that talk
    /// to the Graph simulator directly).
    pub fn app_token(&self, client_id: &str, lifetime: i64) -> Option<String> {
        let app = self.app(Some(client_id))?;
        Some(self.app_token_of(&app, lifetime))
    }

    /// Checks an app-only token as Graph does: signed by one of this tenant's keys, for
    /// Graph, from this tenant's issuer, not expired (by the sim's clock). The error is the
    /// message Graph answers with its 401.
    pub fn verify_app_token(&self, token: &str) -> Result<AppToken, String> {
        let invalid = || "Access token validation failure. Invalid audience.".to_string();
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| "IDX14100: JWT is not well formed, there are no dots (.).".to_string())?;
        let key = header
            .kid
            .and_then(|kid| {
                let keys = self.keys.read().ok()?;
                keys.iter().find(|k| k.kid == kid).cloned()
            })
            .ok_or_else(|| "Signing key not found.".to_string())?;
        let decoding = DecodingKey::from_rsa_components(&key.n, &key.e).map_err(|_| invalid())?;
        let mut v = Validation::new(Algorithm::RS256);
        v.set_audience(&GRAPH_AUDIENCES);
        v.set_issuer(&[self.sts_issuer()]);
        v.validate_exp = false;
        let claims = jsonwebtoken::decode::<Value>(token, &decoding, &v)
            .map_err(|_| invalid())?
            .claims;
        if claims["exp"].as_i64().unwrap_or(0) <= self.clock.now() {
            return Err("Lifetime validation failed, the token is expired.".into());
        }
        Ok(AppToken {
            appid: claims["appid"].as_str().unwrap_or_default().to_string(),
            roles: claims["roles"]
                .as_array()
                .map(|r| {
                    r.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

pub fn router(sim: Arc<EntraSim>) -> Router {
    Router::new()
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(discovery),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(jwks))
        .route("/{tenant}/oauth2/v2.0/authorize", get(authorize))
        .route("/{tenant}/oauth2/v2.0/token", axum::routing::post(token))
        .route(
            "/{tenant}/oauth2/v2.0/devicecode",
            axum::routing::post(devicecode::start),
        )
        .route("/{tenant}/oauth2/v2.0/logout", get(logout))
        .with_state(sim)
}

/// Entra's error body: `error`, `error_description` (AADSTS text), codes and ids.
fn entra_error(status: StatusCode, error: &str, code: u32, text: &str) -> Response {
    let id = ids::request_id();
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {text} Trace ID: {id}"),
        "error_codes": [code],
        "timestamp": "2026-01-01 00:00:00Z",
        "trace_id": id,
        "correlation_id": id,
    });
    (status, axum::Json(body)).into_response()
}

fn check_tenant(sim: &EntraSim, tenant: &str) -> Result<(), Response> {
    if tenant == sim.tenant_id {
        Ok(())
    } else {
        Err(entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_tenant",
            90002,
            &format!("Tenant '{tenant}' not found."),
        ))
    }
}

async fn discovery(State(sim): State<Arc<EntraSim>>, Path(tenant): Path<String>) -> Response {
    if let Err(r) = check_tenant(&sim, &tenant) {
        return r;
    }
    let base = format!("{}/{}", sim.base(), sim.tenant_id);
    axum::Json(json!({
        "issuer": sim.issuer(),
        "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
        "token_endpoint": format!("{base}/oauth2/v2.0/token"),
        "jwks_uri": format!("{base}/discovery/v2.0/keys"),
        "end_session_endpoint": format!("{base}/oauth2/v2.0/logout"),
        "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "name", "oid", "tid", "preferred_username", "email", "sid", "login_hint"],
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
    }))
    .into_response()
}

async fn jwks(State(sim): State<Arc<EntraSim>>, Path(tenant): Path<String>) -> Response {
    sim.jwks_calls
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    if let Err(r) = check_tenant(&sim, &tenant) {
        return r;
    }
    let delay = sim.jwks_delay.read().map(|d| *d).unwrap_or_default();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(r) = sim.failure(Endpoint::Jwks) {
        return r;
    }
    let keys: Vec<Value> = sim
        .keys
        .read()
        .map(|k| {
            k.iter()
                .map(|k| json!({"kty": "RSA", "use": "sig", "kid": k.kid, "n": k.n, "e": k.e, "issuer": sim.issuer()}))
                .collect()
        })
        .unwrap_or_default();
    axum::Json(json!({ "keys": keys })).into_response()
}

#[derive(Deserialize)]
struct AuthorizeQuery {
    client_id: Option<String>,
    response_type: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    login_hint: Option<String>,
}

fn error_page(status: StatusCode, text: &str) -> Response {
    (
        status,
        Html(format!(
            "<!doctype html><title>Sign in to your account</title><h1>Sorry, but we're having trouble signing you in.</h1><p>{}</p>",
            escape(text)
        )),
    )
        .into_response()
}

async fn authorize(
    State(sim): State<Arc<EntraSim>>,
    Path(tenant): Path<String>,
    Query(q): Query<AuthorizeQuery>,
    uri: http::Uri,
) -> Response {
    if let Err(r) = check_tenant(&sim, &tenant) {
        return r;
    }
    let Some(app) = sim.app(q.client_id.as_deref()) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "AADSTS700016: Application not found in the directory.",
        );
    };
    let Some(redirect_uri) = q
        .redirect_uri
        .clone()
        .filter(|r| app.redirect_uris.contains(r))
    else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "AADSTS50011: The redirect URI specified in the request does not match the redirect URIs configured for the application.",
        );
    };
    let back = |params: &[(&str, &str)]| {
        let mut url = url::Url::parse(&redirect_uri).expect("registered redirect URIs are URLs");
        url.query_pairs_mut().extend_pairs(params.iter().copied());
        if let Some(s) = &q.state {
            url.query_pairs_mut().append_pair("state", s);
        }
        Redirect::to(url.as_str()).into_response()
    };
    if q.response_type.as_deref() != Some("code")
        || !q
            .scope
            .as_deref()
            .unwrap_or("")
            .split(' ')
            .any(|s| s == "openid")
    {
        return back(&[
            ("error", "unsupported_response_type"),
            (
                "error_description",
                "AADSTS700054: response_type 'code' and scope 'openid' are required.",
            ),
        ]);
    }
    let (Some(challenge), Some("S256")) =
        (q.code_challenge.clone(), q.code_challenge_method.as_deref())
    else {
        return back(&[
            ("error", "invalid_request"),
            (
                "error_description",
                "AADSTS9002325: Proof Key for Code Exchange is required.",
            ),
        ]);
    };
    let Some(user) = q.login_hint.as_deref().and_then(|h| sim.user_by_hint(h)) else {
        return login_page(&sim, &uri);
    };
    let code = URL_SAFE_NO_PAD.encode(ids::random::<32>().unwrap_or([1; 32]));
    if let Ok(mut codes) = sim.codes.lock() {
        codes.insert(
            code.clone(),
            Grant {
                client_id: app.client_id.clone(),
                redirect_uri: redirect_uri.clone(),
                nonce: q.nonce.clone(),
                challenge,
                user,
                expires_at: sim.clock.now() + 600,
            },
        );
    }
    back(&[("code", &code)])
}

/// The account picker: one link per user, each repeating the request with `login_hint`.
fn login_page(sim: &EntraSim, uri: &http::Uri) -> Response {
    let base = uri.path_and_query().map_or("", |p| p.as_str());
    let items: String = sim
        .users
        .iter()
        .map(|u| {
            let href = format!("{base}&login_hint={}", percent_encoding::utf8_percent_encode(&u.upn, percent_encoding::NON_ALPHANUMERIC));
            format!(
                "<li><a class=\"account\" data-upn=\"{upn}\" href=\"{href}\">{name} <small>{upn}</small></a></li>",
                upn = escape(&u.upn),
                name = escape(&u.name),
                href = escape(&href)
            )
        })
        .collect();
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign in to your account</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto}}li{{margin:.6rem 0}}</style></head>\
         <body><h1>Pick an account</h1><p>Simulated Microsoft Entra ID (pbxgate sandbox), tenant <code>{}</code>.</p>\
         <ul>{items}</ul></body></html>",
        escape(&sim.tenant_id)
    ))
    .into_response()
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_assertion_type: Option<String>,
    client_assertion: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    scope: Option<String>,
    device_code: Option<String>,
}

async fn token(
    State(sim): State<Arc<EntraSim>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Form(f): Form<TokenForm>,
) -> Response {
    sim.token_calls
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    if let Err(r) = check_tenant(&sim, &tenant) {
        return r;
    }
    if let Some(r) = sim.failure(Endpoint::Token) {
        return r;
    }
    if f.grant_type.as_deref() == Some(devicecode::GRANT_TYPE) {
        return devicecode::redeem(&sim, &f);
    }
    let app = match authenticate_client(&sim, &headers, &f) {
        Ok(a) => a,
        Err(r) => return r,
    };
    match f.grant_type.as_deref() {
        Some("authorization_code") => redeem_code(&sim, &app, &f),
        Some("client_credentials") => {
            if !f.scope.as_deref().unwrap_or("").ends_with("/.default") {
                return entra_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    1002012,
                    "The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier.",
                );
            }
            axum::Json(json!({
                "token_type": "Bearer",
                "expires_in": APP_TOKEN_LIFETIME,
                "ext_expires_in": APP_TOKEN_LIFETIME,
                "access_token": sim.app_token_of(&app, APP_TOKEN_LIFETIME),
            }))
            .into_response()
        }
        _ => entra_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        ),
    }
}

fn redeem_code(sim: &EntraSim, app: &SimApp, f: &TokenForm) -> Response {
    let grant = f
        .code
        .as_deref()
        .and_then(|c| sim.codes.lock().ok().and_then(|mut codes| codes.remove(c)));
    let Some(grant) =
        grant.filter(|g| g.client_id == app.client_id && g.expires_at > sim.clock.now())
    else {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            70008,
            "The provided authorization code or refresh token has expired due to inactivity, or was already redeemed.",
        );
    };
    if f.redirect_uri.as_deref() != Some(grant.redirect_uri.as_str()) {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            50148,
            "The redirect_uri does not match the one used in the authorization request.",
        );
    }
    let verified = f.code_verifier.as_deref().is_some_and(|v| {
        URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, v.as_bytes()))
            == grant.challenge
    });
    if !verified {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            501481,
            "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
        );
    }
    axum::Json(json!({
        "token_type": "Bearer",
        "scope": "openid profile email",
        "expires_in": 3599,
        "access_token": format!("at-{}", ids::hex(&ids::random::<16>().unwrap_or([3; 16]))),
        "id_token": sim.id_token(app, &grant.user, grant.nonce.as_deref()),
    }))
    .into_response()
}

/// client_secret_post, client_secret_basic, or a certificate assertion (private_key_jwt).
fn authenticate_client(
    sim: &EntraSim,
    headers: &HeaderMap,
    f: &TokenForm,
) -> Result<SimApp, Response> {
    let bad = |code, text: &str| {
        Err(entra_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            code,
            text,
        ))
    };
    let basic = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.split_once(':')
                .map(|(u, p)| (u.to_string(), p.to_string()))
        });
    let client_id = f
        .client_id
        .clone()
        .or_else(|| basic.as_ref().map(|b| b.0.clone()));
    let Some(app) = sim.app(client_id.as_deref()) else {
        return bad(700016, "Application not found in the directory.");
    };
    let secret = f.client_secret.clone().or_else(|| basic.map(|b| b.1));
    if let (Some(given), Some(expected)) = (&secret, &app.secret) {
        return if ids::secrets_equal(given, expected) {
            Ok(app)
        } else {
            bad(7000215, "Invalid client secret provided.")
        };
    }
    if f.client_assertion_type.as_deref()
        == Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        && let (Some(assertion), Some((der, n, e))) = (&f.client_assertion, &app.certificate)
    {
        return verify_assertion(sim, &app, assertion, der, n, e)
            .map(|()| app.clone())
            .or_else(|t| bad(700027, &t));
    }
    bad(
        7000218,
        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
    )
}

fn verify_assertion(
    sim: &EntraSim,
    app: &SimApp,
    assertion: &str,
    der: &[u8],
    n: &str,
    e: &str,
) -> Result<(), String> {
    let header = jsonwebtoken::decode_header(assertion).map_err(|e| e.to_string())?;
    let sha1 = URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        der,
    ));
    let sha256 = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, der));
    if header.x5t.as_deref() != Some(sha1.as_str())
        && header.x5t_s256.as_deref() != Some(sha256.as_str())
    {
        return Err(
            "Client assertion contains an invalid signature. [Reason - The key was not found.]"
                .into(),
        );
    }
    let key = DecodingKey::from_rsa_components(n, e).map_err(|e| e.to_string())?;
    let mut v = Validation::new(Algorithm::RS256);
    v.set_audience(&[sim.token_endpoint()]);
    v.set_issuer(&[&app.client_id]);
    v.validate_exp = false;
    let claims = jsonwebtoken::decode::<Value>(assertion, &key, &v)
        .map_err(|e| format!("Client assertion failed signature validation: {e}"))?
        .claims;
    let exp = claims["exp"].as_i64().unwrap_or(0);
    if claims["sub"] != json!(app.client_id) || exp < sim.clock.now() {
        return Err("Client assertion is expired or has the wrong subject.".into());
    }
    Ok(())
}

#[derive(Deserialize)]
struct LogoutQuery {
    post_logout_redirect_uri: Option<String>,
    logout_hint: Option<String>,
}

async fn logout(
    State(sim): State<Arc<EntraSim>>,
    Path(tenant): Path<String>,
    Query(q): Query<LogoutQuery>,
) -> Response {
    if let Err(r) = check_tenant(&sim, &tenant) {
        return r;
    }
    if let Ok(mut l) = sim.logouts.lock() {
        l.push(q.logout_hint.clone());
    }
    let registered = q.post_logout_redirect_uri.as_ref().filter(|u| {
        sim.apps
            .read()
            .is_ok_and(|apps| apps.iter().any(|a| a.post_logout_redirect_uris.contains(u)))
    });
    match registered {
        Some(u) => Redirect::to(u).into_response(),
        None => {
            Html("<!doctype html><title>Signed out</title><h1>You signed out of your account</h1>")
                .into_response()
        }
    }
}
