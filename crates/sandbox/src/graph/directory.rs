//! The app-registration part of the simulated Graph, which `pbxgate setup` drives with an
//! administrator's delegated token (`shared/notes/entra-setup.md` §2): `/applications`
//! (`applications.rs`), `/servicePrincipals`, `appRoleAssignedTo` and
//! `/oauth2PermissionGrants` (`grants.rs`). This file holds the tenant's directory objects,
//! checks the caller, and dispatches.
//!
//! The tenant registry is shared with the Entra simulator ([`GraphSim::link_entra`]): every
//! change to an application is registered there (its appId as client id, its redirect URIs,
//! the newest uploaded certificate, and the app roles assigned to its service principal as
//! `roles`), so an app created here can sign users in and get app-only tokens.
//!
//! Callers: a delegated token the Entra simulator issued by device code (`dlg-…`); anything
//! else is 401 `InvalidAuthenticationToken`. Missing delegated scopes, or a directory role the
//! operation needs (Graph app roles: Privileged Role Administrator or Global Administrator;
//! delegated grants: also the two application administrator roles; notes §2.0) are 403
//! `Authorization_RequestDenied` "Insufficient privileges to complete the operation."

use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::{Failure, GraphSim, applications, grants, new_guid};
use crate::entra::devicecode::{
    APPLICATION_ADMINISTRATOR, CLOUD_APPLICATION_ADMINISTRATOR, DelegatedGrant,
    GLOBAL_ADMINISTRATOR, PRIVILEGED_ROLE_ADMINISTRATOR,
};
use crate::entra::{EntraSim, SimApp};

/// Microsoft Graph's app id, the same in every tenant.
pub const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";

/// Microsoft Graph's app roles that the simulated tenant offers (value, id), from Microsoft's
/// permission data (devx `provisioningInfo.json`, notes §3.1).
pub const GRAPH_APP_ROLES: &[(&str, &str)] = &[
    ("User.Read.All", "df021288-bdef-4463-88db-98f22de89214"),
    ("User.ReadBasic.All", "97235f07-e226-4f63-ace3-39588e11d3a1"),
    (
        "Calendars.ReadBasic.All",
        "8ba4a692-bc31-4128-9094-475872af8a53",
    ),
    ("Calendars.Read", "798ee544-9d2d-430c-a058-570e29e34338"),
    ("Contacts.Read", "089fe4d0-434a-44c5-8827-41ba8a0b17f5"),
    (
        "GroupMember.Read.All",
        "98830695-27a2-44f7-8c18-0c3ebc9698f6",
    ),
    (
        "MailboxSettings.Read",
        "40f97065-369a-49f4-947c-6a255697ae91",
    ),
    ("Presence.Read.All", "a70e0c2d-e793-494c-94c4-118fa0a67f42"),
    (
        "User.RevokeSessions.All",
        "77f3a031-c388-4f99-b373-dc68676a979e",
    ),
];

/// Microsoft Graph's delegated scopes the simulated tenant offers (value, id), notes §3.2-3.3.
pub const GRAPH_SCOPES: &[(&str, &str)] = &[
    ("openid", "37f7f235-527c-4136-accd-4a02d197296e"),
    ("profile", "14dad69e-099b-42c9-810b-d002981feec1"),
    ("email", "64a6cdd6-aab1-4aaf-94b8-3cc8405e90d0"),
    ("offline_access", "7427e0e9-2fba-42fe-b0c0-848c9e6a8182"),
    ("User.Read", "e1fe6dd8-ba31-4d61-89e7-88639da4683d"),
    (
        "Application.ReadWrite.All",
        "bdfbf15f-ee85-4955-8675-146e8e5296b5",
    ),
    (
        "Application.Read.All",
        "c79f8feb-a9db-4090-85f9-90d820caa0eb",
    ),
    (
        "AppRoleAssignment.ReadWrite.All",
        "84bccea3-f856-4a8a-967b-dbe0a3d53a64",
    ),
    (
        "DelegatedPermissionGrant.ReadWrite.All",
        "41ce6ca6-6826-4807-84f1-1c82854f7ee5",
    ),
];

/// Applications, service principals and grants of the tenant.
pub(super) struct DirState {
    pub(super) apps: Vec<Map<String, Value>>,
    pub(super) sps: Vec<Map<String, Value>>,
    pub(super) assignments: Vec<Map<String, Value>>,
    pub(super) grants: Vec<Map<String, Value>>,
    /// POST, PATCH and DELETE requests received here.
    writes: usize,
}

pub(super) struct Directory {
    entra: OnceLock<Arc<EntraSim>>,
    state: Mutex<DirState>,
}

impl Default for Directory {
    fn default() -> Self {
        let roles: Vec<Value> = GRAPH_APP_ROLES
            .iter()
            .map(|(value, id)| {
                json!({"allowedMemberTypes": ["Application"], "displayName": value, "id": id,
                       "isEnabled": true, "origin": "Application", "value": value})
            })
            .collect();
        let scopes: Vec<Value> = GRAPH_SCOPES
            .iter()
            .map(|(value, id)| {
                json!({"adminConsentDisplayName": value, "id": id, "isEnabled": true,
                       "type": "User", "value": value})
            })
            .collect();
        let graph = json!({
            "id": new_guid(), "appId": GRAPH_APP_ID, "displayName": "Microsoft Graph",
            "servicePrincipalType": "Application", "appRoles": roles,
            "oauth2PermissionScopes": scopes,
        });
        Self {
            entra: OnceLock::new(),
            state: Mutex::new(DirState {
                apps: Vec::new(),
                sps: vec![graph.as_object().cloned().unwrap_or_default()],
                assignments: Vec::new(),
                grants: Vec::new(),
                writes: 0,
            }),
        }
    }
}

impl GraphSim {
    /// Shares the tenant registry with `entra`: applications created here sign in there.
    pub fn link_entra(&self, entra: Arc<EntraSim>) {
        let _ = self.directory.entra.set(entra);
    }

    /// POST/PATCH/DELETE requests to the app-registration endpoints, for idempotency tests.
    pub fn directory_writes(&self) -> usize {
        self.dir(|d| d.writes)
    }

    /// The application with `uniqueName`, as Graph stores it.
    pub fn application(&self, unique_name: &str) -> Option<Value> {
        self.dir(|d| {
            d.apps
                .iter()
                .find(|a| a["uniqueName"] == json!(unique_name))
                .map(|a| Value::Object(a.clone()))
        })
    }

    /// The app role values assigned to the service principal of `app_id`.
    pub fn granted_roles(&self, app_id: &str) -> Vec<String> {
        self.dir(|d| d.roles_of(app_id))
    }

    /// The `AllPrincipals` delegated grant's scope for `app_id`'s service principal.
    pub fn delegated_scope(&self, app_id: &str) -> Option<String> {
        self.dir(|d| {
            let sp = d.sp_by_app_id(app_id)?["id"].clone();
            d.grants
                .iter()
                .find(|g| g["clientId"] == sp)
                .and_then(|g| g["scope"].as_str().map(String::from))
        })
    }

    pub(super) fn dir<T>(&self, f: impl FnOnce(&mut DirState) -> T) -> T {
        let mut guard = self
            .directory
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Registers `app_id` (again) with the Entra simulator, as it now stands.
    pub(super) fn publish(&self, app_id: &str) {
        let Some(entra) = self.directory.entra.get() else {
            return;
        };
        let Some(app) = self.dir(|d| d.sim_app(app_id)) else {
            return;
        };
        entra.register_app(app);
    }
}

impl DirState {
    pub(super) fn sp_by_app_id(&self, app_id: &str) -> Option<&Map<String, Value>> {
        self.sps.iter().find(|s| s["appId"] == json!(app_id))
    }

    fn roles_of(&self, app_id: &str) -> Vec<String> {
        let Some(sp) = self.sp_by_app_id(app_id).map(|s| s["id"].clone()) else {
            return Vec::new();
        };
        self.assignments
            .iter()
            .filter(|a| a["principalId"] == sp)
            .filter_map(|a| {
                GRAPH_APP_ROLES
                    .iter()
                    .find(|(_, id)| a["appRoleId"] == json!(id))
                    .map(|(v, _)| v.to_string())
            })
            .collect()
    }

    fn sim_app(&self, app_id: &str) -> Option<SimApp> {
        let app = self.apps.iter().find(|a| a["appId"] == json!(app_id))?;
        let uris: Vec<String> = app["web"]["redirectUris"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|u| u.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let certificate = app["keyCredentials"]
            .as_array()
            .and_then(|keys| keys.iter().rev().find_map(applications::certificate_of));
        Some(SimApp {
            client_id: app_id.to_string(),
            secret: None,
            certificate,
            redirect_uris: uris.clone(),
            // Entra checks post_logout_redirect_uri against the redirect URIs.
            post_logout_redirect_uris: uris,
            roles: self.roles_of(app_id),
        })
    }
}

/// A request to the app-registration endpoints, taken apart.
pub(super) struct Call {
    pub(super) method: Method,
    /// Path segments after `/v1.0/`, percent-decoded.
    pub(super) segments: Vec<String>,
    pub(super) query: Vec<(String, String)>,
    pub(super) create_if_missing: bool,
    pub(super) body: Value,
    pub(super) caller: DelegatedGrant,
}

impl Call {
    pub(super) fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the token carries one of `scopes`; otherwise 403.
    pub(super) fn need_scope(&self, scopes: &[&str]) -> Result<(), Failure> {
        if self
            .caller
            .scopes
            .iter()
            .any(|s| scopes.contains(&s.as_str()))
        {
            Ok(())
        } else {
            Err(denied())
        }
    }

    /// Whether the signed-in user holds one of the directory `roles`; otherwise 403.
    pub(super) fn need_role(&self, roles: &[&str]) -> Result<(), Failure> {
        if self.caller.wids.iter().any(|w| roles.contains(&w.as_str())) {
            Ok(())
        } else {
            Err(denied())
        }
    }
}

/// Who may grant Microsoft Graph app roles (grant-admin-consent).
pub(super) const GRAPH_APP_ROLE_GRANTERS: &[&str] =
    &[GLOBAL_ADMINISTRATOR, PRIVILEGED_ROLE_ADMINISTRATOR];
/// Who may grant delegated permissions tenant-wide.
pub(super) const DELEGATED_GRANTERS: &[&str] = &[
    GLOBAL_ADMINISTRATOR,
    PRIVILEGED_ROLE_ADMINISTRATOR,
    APPLICATION_ADMINISTRATOR,
    CLOUD_APPLICATION_ADMINISTRATOR,
];

pub(super) fn denied() -> Failure {
    Failure::new(
        StatusCode::FORBIDDEN,
        "Authorization_RequestDenied",
        "Insufficient privileges to complete the operation.",
    )
}

pub(super) fn bad(message: impl Into<String>) -> Failure {
    Failure::bad_request("Request_BadRequest", message)
}

/// `name(key='value')` → (`name`, Some((`key`, `value`))); a plain segment → (`name`, None).
pub(super) fn alternate_key(segment: &str) -> (&str, Option<(&str, &str)>) {
    let Some((name, rest)) = segment.split_once('(') else {
        return (segment, None);
    };
    let inner = rest.strip_suffix(')').unwrap_or(rest);
    let key = inner
        .split_once('=')
        .map(|(k, v)| (k.trim(), v.trim().trim_matches('\'')));
    (name, key)
}

const COLLECTIONS: &[&str] = &[
    "applications",
    "servicePrincipals",
    "oauth2PermissionGrants",
];

/// Middleware in front of the Graph router: answers the app-registration endpoints itself
/// (they take delegated tokens, which the users part refuses), passes everything else on.
pub(super) async fn intercept(
    State(sim): State<Arc<GraphSim>>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_string();
    let rest = path.strip_prefix("/v1.0/").unwrap_or("");
    let segments: Vec<String> = rest
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    if !COLLECTIONS.contains(&alternate_key(&segments[0]).0) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(Body::new(body), 1 << 20)
        .await
        .unwrap_or_default();
    let result = admit(&sim, &parts, segments, &body).and_then(|call| {
        if call.method != Method::GET {
            sim.dir(|d| d.writes += 1);
        }
        match alternate_key(&call.segments[0]).0 {
            "applications" => applications::handle(&sim, &call),
            _ => grants::handle(&sim, &call),
        }
    });
    sim.respond(result)
}

fn admit(
    sim: &GraphSim,
    parts: &http::request::Parts,
    segments: Vec<String>,
    body: &[u8],
) -> Result<Call, Failure> {
    let token = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .trim();
    let caller = sim
        .directory
        .entra
        .get()
        .and_then(|e| e.delegated_grant(token));
    let Some(caller) = caller else {
        if token.starts_with("app-") {
            return Err(denied());
        }
        return Err(Failure::new(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token validation failure.",
        ));
    };
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body).map_err(|e| {
            Failure::bad_request(
                "BadRequest",
                format!("Unable to read JSON request payload: {e}"),
            )
        })?
    };
    let query = url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let create_if_missing = parts
        .headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|p| p.trim() == "create-if-missing"));
    Ok(Call {
        method: parts.method.clone(),
        segments,
        query,
        create_if_missing,
        body,
        caller,
    })
}
