//! Sign-in: the Entra ID relying party's routes `/auth/login`, `/auth/callback`,
//! `/auth/logout`, `/auth/signed-out` and `/auth/frontchannel-logout`.
//!
//! Layer: a front door, beside `gate`. It uses the domain modules (`oidc`, `directory`,
//! `session`, `pbx`, `graph`, the user sync's provisioning, `store`) through the narrow
//! [`SignIn`] state, never the app or the server. Every failure is an [`AuthError`], which
//! renders a short page with the request id; the reason goes to the log.

mod admin;
mod callback;
mod error;
mod login;
mod logout;
mod rate_limit;

use std::sync::Arc;

use axum::extract::Request;
use axum::response::Response;
use axum::routing::{MethodRouter, any, get};
use http::StatusCode;
use http::header::HeaderValue;
use ipnet::IpNet;

use crate::clock::Clock;
use crate::config::{Config, SessionMode};
use crate::directory::{Directory, ManagedPasswords, Revoker, WebPasswords};
use crate::graph::GraphClient;
use crate::metrics::RouteClass;
use crate::oidc::Provider;
use crate::pbx::PbxClient;
use crate::session::Sessions;
use crate::store::Store;
use crate::sync::users::UsersWorker;
use crate::web;

pub use error::{AuthError, PbxSessionError, StartError};
pub use login::safe_return_to;
pub use logout::same_origin;
use rate_limit::RateLimiter;

/// A sign-in must come back within this long.
const ATTEMPT_TTL: i64 = 600;

/// What the sign-in handlers use; built once by `app`. The handlers reach the [`Deps`]
/// through it (`s.store`, `s.pbx`, …).
pub struct SignIn {
    deps: Deps,
    settings: Settings,
    limiter: RateLimiter,
    /// `/auth/frontchannel-logout` has a budget of its own (`login_rate_limit` per minute),
    /// so that a flood of it cannot lock a client address out of signing in.
    frontchannel_limiter: RateLimiter,
}

/// The parts of the app the sign-in uses.
pub struct Deps {
    pub provider: Arc<Provider>,
    pub store: Store,
    pub sessions: Arc<Sessions>,
    pub directory: Directory,
    pub pbx: Arc<PbxClient>,
    pub graph: Arc<GraphClient>,
    /// Provisioning at sign-in (`[sync.users] provision_on_login`); kept only when the user
    /// sync is enabled and provisions at sign-in.
    pub users: Option<Arc<UsersWorker>>,
    pub passwords: Arc<ManagedPasswords>,
    /// `[pbx] randomize_web_passwords`: done once per extension at sign-in.
    pub web_passwords: WebPasswords,
    /// Sign-out ends the session and the 3CX access behind it, as every revocation does.
    pub revoker: Arc<Revoker>,
    pub clock: Arc<dyn Clock>,
}

/// The configuration the handlers read, taken once from the config.
struct Settings {
    redirect_uri: String,
    signed_out_uri: String,
    /// `public_url`'s origin: a sign-out `POST` must come from it.
    public_origin: url::Origin,
    login_cookie: String,
    allowed_groups: Vec<String>,
    /// Members of these are admins (the console at `/admin`); decided at sign-in.
    admin_groups: Vec<String>,
    session_mode: SessionMode,
    trusted_proxies: Vec<IpNet>,
    /// `[sync.users] include_guests`: sign-in refuses guests as the sync leaves them out.
    include_guests: bool,
}

impl std::ops::Deref for SignIn {
    type Target = Deps;
    fn deref(&self) -> &Deps {
        &self.deps
    }
}

impl SignIn {
    pub fn new(config: &Config, mut deps: Deps) -> Self {
        let base = config.server.public_url.as_str().trim_end_matches('/');
        let users = &config.sync.users;
        if !(users.enabled && users.provision_on_login) {
            deps.users = None;
        }
        Self {
            settings: Settings {
                redirect_uri: format!("{base}/auth/callback"),
                signed_out_uri: format!("{base}/auth/signed-out"),
                public_origin: config.server.public_url.origin(),
                login_cookie: format!("{}-login", deps.sessions.cookie_name()),
                allowed_groups: config.entra.allowed_groups.clone(),
                admin_groups: config.entra.admin_groups.clone(),
                session_mode: config.pbx.session_mode,
                trusted_proxies: config.server.trusted_proxies.clone(),
                include_guests: users.include_guests,
            },
            limiter: RateLimiter::new(config.server.login_rate_limit, deps.clock.clone()),
            frontchannel_limiter: RateLimiter::new(
                config.server.login_rate_limit,
                deps.clock.clone(),
            ),
            deps,
        }
    }

    /// The short-lived cookie that binds a login attempt to the browser that started it.
    fn login_cookie(&self, state: &str, max_age: i64) -> HeaderValue {
        let v = format!(
            "{}={state}; Path=/; Max-Age={max_age}; Secure; HttpOnly; SameSite=Lax",
            self.settings.login_cookie
        );
        HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The request's client address, as the rate limits count it.
    fn client_ip(&self, parts: &http::request::Parts) -> std::net::IpAddr {
        crate::proxy::ClientInfo::of(parts, &self.settings.trusted_proxies).ip
    }

    /// Counts a sign-in request against its client's rate limit.
    fn rate_limit(&self, parts: &http::request::Parts) -> Result<(), AuthError> {
        let ip = self.client_ip(parts);
        if self.limiter.allow(ip) {
            Ok(())
        } else {
            tracing::warn!(%ip, "sign-in rate limit reached");
            Err(AuthError::RateLimited)
        }
    }
}

/// The `/auth` routes, for the server to mount (it derives which paths are its own from
/// them). Every other path under `/auth/` is pbxgate's too and answers 404: never proxied,
/// so it can never loop back to itself.
pub fn routes() -> Vec<(&'static str, MethodRouter<Arc<SignIn>>)> {
    vec![
        ("/auth/login", get(login::login)),
        ("/auth/callback", get(callback::callback)),
        ("/auth/logout", get(logout::confirm).post(logout::logout)),
        ("/auth/signed-out", get(logout::signed_out)),
        (
            "/auth/frontchannel-logout",
            get(logout::frontchannel_logout),
        ),
        ("/auth", any(not_found)),
        ("/auth/{*rest}", any(not_found)),
    ]
}

async fn not_found(req: Request) -> Response {
    let (req, _) = req.into_parts();
    web::page(
        web::correlation(&req).as_deref(),
        RouteClass::Auth,
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no such sign-in page.",
    )
}
