//! The device authorization grant of the simulated Entra ID (`shared/notes/entra-setup.md` §1;
//! entra-docs `v2-oauth2-device-code.md`, RFC 8628 §3.5): `POST /{tenant}/oauth2/v2.0/devicecode`
//! for a known public client, then polling the token endpoint with
//! `grant_type=urn:ietf:params:oauth:grant-type:device_code`, answered with
//! `authorization_pending`, `slow_down` (polled faster than `interval`, by wall time),
//! `authorization_declined`, `expired_token` (by the simulator's clock) or
//! `bad_verification_code`, each in Entra's error body with status 400 (assumed; notes §1.3).
//!
//! Nobody types the code into a page here: a test approves it as a user with the directory
//! roles it names ([`EntraSim::approve_device_code`]), or declines it. The access token is
//! opaque (`dlg-…`); the Graph simulator looks up who holds it, with which delegated scopes
//! and roles ([`EntraSim::delegated_grant`]), as real Graph reads `scp` and `wids`.

use std::collections::HashMap;
use std::time::Instant;

use axum::extract::{Form, Path, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use pbxgate_wire::clock::UnixTime;
use pbxgate_wire::ids;

use super::{EntraSim, SimApp, SimUser, TokenForm, check_tenant, entra_error};

pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// "Microsoft Graph Command Line Tools", the public client `pbxgate setup` signs in with by
/// default (notes §1.5); the only public client the simulated tenant knows unless a test adds one.
pub const GRAPH_COMMAND_LINE_TOOLS: &str = "14d82eec-204b-4c2f-b7e8-296a70dab67e";

/// Directory role template ids (entra-docs `permissions-reference.md`), for `wids`.
pub const GLOBAL_ADMINISTRATOR: &str = "62e90394-69f5-4237-9190-012177145e10";
pub const PRIVILEGED_ROLE_ADMINISTRATOR: &str = "e8611ab8-c189-46e8-94e1-60213ab1f814";
pub const APPLICATION_ADMINISTRATOR: &str = "9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3";
pub const CLOUD_APPLICATION_ADMINISTRATOR: &str = "158c047a-c907-4556-b7ef-446551a6b5f7";

/// Who holds a delegated access token, what it may do, and the holder's directory roles.
#[derive(Clone, Debug)]
pub struct DelegatedGrant {
    pub oid: String,
    pub upn: String,
    /// Graph scopes by name (`Application.ReadWrite.All`), without the resource prefix.
    pub scopes: Vec<String>,
    /// Directory role template ids (the `wids` claim).
    pub wids: Vec<String>,
}

enum Decision {
    Pending,
    Approved(SimUser, Vec<String>),
    Declined,
}

struct Pending {
    user_code: String,
    client_id: String,
    scopes: Vec<String>,
    expires_at: UnixTime,
    last_poll: Option<Instant>,
    decision: Decision,
}

/// Device codes in flight and the delegated tokens issued for them.
pub(super) struct DeviceCodes {
    public_clients: Vec<String>,
    interval: u64,
    codes: HashMap<String, Pending>,
    tokens: HashMap<String, DelegatedGrant>,
}

impl Default for DeviceCodes {
    fn default() -> Self {
        Self {
            public_clients: vec![GRAPH_COMMAND_LINE_TOOLS.into()],
            interval: 5,
            codes: HashMap::new(),
            tokens: HashMap::new(),
        }
    }
}

impl EntraSim {
    fn devices<T>(&self, f: impl FnOnce(&mut DeviceCodes) -> T) -> T {
        let mut guard = self.device.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// The `interval` handed out (Entra's is 5 s; tests shorten it).
    pub fn set_device_code_interval(&self, secs: u64) {
        self.devices(|d| d.interval = secs);
    }

    /// Lets `client_id` use the device code flow (a tenant's own bootstrap public client).
    pub fn add_public_client(&self, client_id: &str) {
        self.devices(|d| d.public_clients.push(client_id.into()));
    }

    /// User codes waiting for someone to sign in.
    pub fn pending_user_codes(&self) -> Vec<String> {
        self.devices(|d| {
            d.codes
                .values()
                .filter(|p| matches!(p.decision, Decision::Pending))
                .map(|p| p.user_code.clone())
                .collect()
        })
    }

    /// Signs in `upn` (a user of the tenant) on the page for `user_code`, holding the directory
    /// roles `wids` (template ids). False when the code or the user is unknown.
    pub fn approve_device_code(&self, user_code: &str, upn: &str, wids: &[&str]) -> bool {
        let Some(user) = self.user_by_hint(upn) else {
            return false;
        };
        let wids = wids.iter().map(|w| w.to_string()).collect();
        self.decide(user_code, Decision::Approved(user, wids))
    }

    /// The user pressed "Cancel" on the sign-in page for `user_code`.
    pub fn decline_device_code(&self, user_code: &str) -> bool {
        self.decide(user_code, Decision::Declined)
    }

    fn decide(&self, user_code: &str, decision: Decision) -> bool {
        self.devices(|d| {
            let found = d.codes.values_mut().find(|p| p.user_code == user_code);
            found.map(|p| p.decision = decision).is_some()
        })
    }

    /// Who holds the delegated access token `token`, if the simulator issued it.
    pub fn delegated_grant(&self, token: &str) -> Option<DelegatedGrant> {
        self.devices(|d| d.tokens.get(token).cloned())
    }
}

#[derive(Deserialize)]
pub(super) struct DeviceCodeForm {
    client_id: Option<String>,
    scope: Option<String>,
}

pub(super) async fn start(
    State(sim): State<std::sync::Arc<EntraSim>>,
    Path(tenant): Path<String>,
    Form(f): Form<DeviceCodeForm>,
) -> Response {
    if let Err(r) = check_tenant(&sim, &tenant) {
        return r;
    }
    let client_id = f.client_id.unwrap_or_default();
    if let Err(r) = public_client(&sim, &client_id) {
        return r;
    }
    let Some(scope) = f.scope.filter(|s| !s.trim().is_empty()) else {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.",
        );
    };
    let device_code = URL_SAFE_NO_PAD.encode(ids::random::<48>().unwrap_or([4; 48]));
    let user_code: String = ids::random::<8>()
        .unwrap_or([5; 8])
        .iter()
        .map(|b| char::from(b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789"[usize::from(*b) % 32]))
        .collect();
    let expires_in = 900;
    let interval = sim.devices(|d| {
        d.codes.insert(
            device_code.clone(),
            Pending {
                user_code: user_code.clone(),
                client_id,
                scopes: scope.split_whitespace().map(String::from).collect(),
                expires_at: sim.clock.now() + expires_in,
                last_poll: None,
                decision: Decision::Pending,
            },
        );
        d.interval
    });
    let uri = format!("{}/devicelogin", sim.base());
    axum::Json(json!({
        "user_code": user_code,
        "device_code": device_code,
        "verification_uri": uri,
        "expires_in": expires_in,
        "interval": interval,
        "message": format!("To sign in, use a web browser to open the page {uri} and enter the code {user_code} to authenticate."),
    }))
    .into_response()
}

fn public_client(sim: &EntraSim, client_id: &str) -> Result<(), Response> {
    if sim.devices(|d| d.public_clients.iter().any(|c| c == client_id)) {
        return Ok(());
    }
    if sim.app(Some(client_id)).is_some() {
        // A confidential app without "Allow public client flows" (notes §1.5, [field]).
        return Err(entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        ));
    }
    Err(entra_error(
        StatusCode::BAD_REQUEST,
        "unauthorized_client",
        700016,
        &format!("Application with identifier '{client_id}' was not found in the directory."),
    ))
}

/// `slow_down` is about how fast a client polls in wall time; the simulator's clock (manual in
/// tests) does not move between polls.
#[allow(
    clippy::disallowed_methods,
    reason = "polling rate is measured in wall time"
)]
fn wall_now() -> Instant {
    Instant::now()
}

/// One poll of the token endpoint with a device code.
pub(super) fn redeem(sim: &EntraSim, f: &TokenForm) -> Response {
    let client_id = f.client_id.clone().unwrap_or_default();
    if let Err(r) = public_client(sim, &client_id) {
        return r;
    }
    let code = f.device_code.clone().unwrap_or_default();
    let now = sim.clock.now();
    let err = |error, number, text: &str| entra_error(StatusCode::BAD_REQUEST, error, number, text);
    let outcome = sim.devices(|d| {
        let interval = d.interval;
        let Some(p) = d.codes.get_mut(&code).filter(|p| p.client_id == client_id) else {
            return Err(err(
                "bad_verification_code",
                70018,
                "The provided value for the input parameter 'device_code' is not valid.",
            ));
        };
        if now >= p.expires_at {
            d.codes.remove(&code);
            return Err(err("expired_token", 70019, "Verification code expired."));
        }
        let too_fast = p
            .last_poll
            .is_some_and(|t| t.elapsed().as_secs_f64() + 0.2 < interval as f64);
        p.last_poll = Some(wall_now());
        match &p.decision {
            _ if too_fast => Err(err(
                "slow_down",
                70016,
                "The client is polling too frequently; add 5 seconds to the interval.",
            )),
            Decision::Pending => Err(err(
                "authorization_pending",
                70016,
                "The provided request has not yet been authorized by the user. The user must input their code.",
            )),
            Decision::Declined => {
                d.codes.remove(&code);
                Err(err(
                    "authorization_declined",
                    65004,
                    "The resource owner or authorization server denied the request.",
                ))
            }
            Decision::Approved(..) => {
                let Some(Pending {
                    scopes,
                    decision: Decision::Approved(user, wids),
                    ..
                }) = d.codes.remove(&code)
                else {
                    unreachable!("matched above")
                };
                Ok((scopes, user, wids))
            }
        }
    });
    let (scopes, user, wids) = match outcome {
        Ok(o) => o,
        Err(r) => return r,
    };
    issue(sim, &client_id, scopes, user, wids)
}

fn issue(
    sim: &EntraSim,
    client_id: &str,
    scopes: Vec<String>,
    user: SimUser,
    wids: Vec<String>,
) -> Response {
    let graph: Vec<String> = scopes
        .iter()
        .filter(|s| {
            !matches!(
                s.as_str(),
                "openid" | "profile" | "email" | "offline_access"
            )
        })
        .map(|s| {
            s.trim_start_matches("https://graph.microsoft.com/")
                .to_string()
        })
        .collect();
    let token = format!("dlg-{}", ids::hex(&ids::random::<16>().unwrap_or([6; 16])));
    sim.devices(|d| {
        d.tokens.insert(
            token.clone(),
            DelegatedGrant {
                oid: user.oid.clone(),
                upn: user.upn.clone(),
                scopes: graph.clone(),
                wids,
            },
        )
    });
    let mut body = json!({
        "token_type": "Bearer",
        "scope": graph.join(" "),
        "expires_in": 3599,
        "access_token": token,
    });
    if scopes.iter().any(|s| s == "openid") {
        let app = SimApp {
            client_id: client_id.into(),
            secret: None,
            certificate: None,
            redirect_uris: Vec::new(),
            post_logout_redirect_uris: Vec::new(),
            roles: Vec::new(),
        };
        body["id_token"] = json!(sim.id_token(&app, &user, None));
    }
    axum::Json(body).into_response()
}
