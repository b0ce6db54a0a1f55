//! A simulated 3CX V20 web server, following `shared/notes/3cx.md` and the XAPI description
//! in `shared/reference/`: the webclient page (which, like the real SPA, gets its access token
//! from `/connect/token` and shows who it is from `/xapi/v1/MyUser`), provisioning files,
//! the webclient WebSocket (an echo), `/connect/token` (API client credentials with one live
//! token per client; the webclient's refresh with `RefreshTokenCookie`; impersonation by an
//! admin extension's refresh token), `/webclient/api/Login/GetAccessToken` (with 2FA),
//! `/webclient/api/Logout` (all in [`tokens`]), and `/xapi/v1/Users`,
//! `Users({Id})`, `MyUser` with OData `$filter`/`$select`/`$top`/`$skip` and 3CX's error shape.

// Handler helpers return the error response itself; boxing it would only add noise here.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use pbxgate_wire::clock::{Clock, UnixTime};
use pbxgate_wire::ids;

mod contacts;
mod tokens;

/// An extension of the simulated PBX.
#[derive(Debug, Clone, Default)]
pub struct SimExtension {
    pub id: i64,
    pub number: String,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub access_password: Option<String>,
    pub enabled: bool,
    pub mobile: String,
    pub outbound_caller_id: String,
    /// `CurrentProfileName`; empty reads as "Available".
    pub profile: String,
    /// `ContactImage`, as written.
    pub contact_image: String,
    /// An admin (System Owner) role: may impersonate other extensions.
    pub admin: bool,
    /// The authenticator-app secret (base32) when the extension has 2FA on.
    pub totp_secret: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Subject {
    ApiClient,
    Extension(String),
}

#[derive(Default)]
struct PbxState {
    /// The company and personal phonebooks.
    contacts: contacts::Phonebooks,
    extensions: Vec<SimExtension>,
    /// access token → (who, expiry)
    tokens: HashMap<String, (Subject, UnixTime)>,
    /// refresh token (the cookie value) → whose, until when
    refresh: HashMap<String, tokens::Refresh>,
    /// Refresh tokens stay valid after use (rotation off).
    keep_refresh_tokens: bool,
    /// The API client's bearer token may impersonate (the unverified variant).
    api_client_impersonation: bool,
    /// Every impersonation served: (by whom, as whom).
    impersonations: Vec<(String, String)>,
    /// Successful password sign-ins per extension.
    sign_ins: HashMap<String, usize>,
    /// XAPI writes (POST, PATCH, DELETE on Users) served.
    writes: usize,
    /// XAPI requests to fail with 503 from now on (a PBX going down).
    failing: usize,
    /// Writes still allowed before every further request fails (a PBX going down mid-run).
    writes_left: Option<usize>,
    /// XAPI requests served.
    requests: usize,
    /// API client tokens issued (`client_credentials` grants).
    api_token_grants: usize,
    /// The status webclient sign-ins and refresh/impersonation grants answer with, when
    /// 3CX's session service is failing (`None`: working).
    sessions_failing: Option<u16>,
    /// Every `CurrentProfileName` write: (extension, profile, when).
    profile_writes: Vec<(String, String, UnixTime)>,
}

/// What the simulated PBX knows.
pub struct PbxSim {
    /// The provisioning folder name; phones know it, nobody else should.
    pub provisioning_secret: String,
    pub fqdn: String,
    pub api_client_id: String,
    pub api_client_secret: String,
    clock: Arc<dyn Clock>,
    state: Mutex<PbxState>,
}

impl PbxSim {
    pub fn new(
        provisioning_secret: &str,
        api_client: (&str, &str),
        extensions: Vec<SimExtension>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            provisioning_secret: provisioning_secret.to_string(),
            fqdn: "pbx.sandbox.test".into(),
            api_client_id: api_client.0.to_string(),
            api_client_secret: api_client.1.to_string(),
            clock,
            state: Mutex::new(PbxState {
                extensions,
                ..Default::default()
            }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut PbxState) -> T) -> T {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    pub fn extension(&self, number: &str) -> Option<SimExtension> {
        self.with(|s| s.extensions.iter().find(|e| e.number == number).cloned())
    }

    /// Every extension, as 3CX holds them now.
    pub fn extensions(&self) -> Vec<SimExtension> {
        self.with(|s| s.extensions.clone())
    }

    /// Adds an extension by hand, as an admin would in the 3CX console.
    pub fn add_extension(&self, mut e: SimExtension) -> SimExtension {
        self.with(|s| {
            e.id = s.extensions.iter().map(|x| x.id).max().unwrap_or(0) + 1;
            s.extensions.push(e.clone());
            e
        })
    }

    /// Deletes an extension by hand.
    pub fn remove_extension(&self, number: &str) {
        self.with(|s| s.extensions.retain(|e| e.number != number));
    }

    /// Edits an extension by hand.
    pub fn edit_extension(&self, number: &str, f: impl FnOnce(&mut SimExtension)) {
        self.with(|s| s.extensions.iter_mut().find(|e| e.number == number).map(f));
    }

    /// XAPI requests served so far (reads and writes).
    pub fn requests(&self) -> usize {
        self.with(|s| s.requests)
    }

    /// API client tokens issued so far (each one ends the one before).
    pub fn api_token_grants(&self) -> usize {
        self.with(|s| s.api_token_grants)
    }

    /// Every status profile write so far: (extension, profile, simulator time).
    pub fn profile_writes(&self) -> Vec<(String, String, UnixTime)> {
        self.with(|s| s.profile_writes.clone())
    }

    /// XAPI user writes served so far.
    pub fn writes(&self) -> usize {
        self.with(|s| s.writes)
    }

    /// Makes the next `n` XAPI requests fail with 503 (0 heals).
    pub fn fail_next(&self, n: usize) {
        self.with(|s| s.failing = n);
    }

    /// Lets `n` more writes through, then fails everything with 503 until `heal`.
    pub fn go_down_after_writes(&self, n: usize) {
        self.with(|s| s.writes_left = Some(n));
    }

    pub fn heal(&self) {
        self.with(|s| {
            s.failing = 0;
            s.writes_left = None;
        });
    }

    /// Makes webclient sign-ins (`GetAccessToken`) and refresh or impersonation grants at
    /// `/connect/token` answer `status` (a 3CX failing mid-sign-in while its XAPI still
    /// answers); `None` heals.
    pub fn fail_sessions(&self, status: Option<u16>) {
        self.with(|s| s.sessions_failing = status);
    }

    /// The failure status of session requests, if they are failing.
    fn sessions_failing(&self) -> Option<StatusCode> {
        self.with(|s| s.sessions_failing)
            .and_then(|c| StatusCode::from_u16(c).ok())
    }

    /// True (and counts down) when the simulated PBX should fail this request.
    fn failing(&self) -> bool {
        self.with(|s| {
            let down = s.writes_left == Some(0);
            let f = s.failing > 0 || down;
            s.failing = s.failing.saturating_sub(1);
            f
        })
    }

    /// How many refresh tokens (webclient sessions) are live for `number`.
    pub fn live_webclient_sessions(&self, number: &str) -> usize {
        self.live_refresh_tokens(number).len()
    }

    /// The live refresh tokens (cookie values) of `number`.
    pub fn live_refresh_tokens(&self, number: &str) -> Vec<String> {
        let now = self.clock.now();
        self.with(|s| {
            s.refresh
                .iter()
                .filter(|(_, r)| r.extension == number && r.expires_at > now)
                .map(|(t, _)| t.clone())
                .collect()
        })
    }

    /// Ends every refresh token of `number` (an admin logging its sessions out).
    pub fn revoke_refresh_tokens(&self, number: &str) {
        self.with(|s| s.refresh.retain(|_, r| r.extension != number));
    }

    /// Lets every refresh token of `number` expire now (as after 60 days unused).
    pub fn expire_refresh_tokens(&self, number: &str) {
        let now = self.clock.now();
        self.with(|s| {
            for r in s.refresh.values_mut().filter(|r| r.extension == number) {
                r.expires_at = now;
            }
        });
    }

    /// Rotation of refresh tokens on use: on (the default) or off.
    pub fn set_refresh_rotation(&self, on: bool) {
        self.with(|s| s.keep_refresh_tokens = !on);
    }

    /// Lets the API client's bearer token impersonate (off by default: unverified).
    pub fn allow_api_client_impersonation(&self, allow: bool) {
        self.with(|s| s.api_client_impersonation = allow);
    }

    fn api_client_impersonation_allowed(&self, headers: &HeaderMap) -> bool {
        self.with(|s| s.api_client_impersonation)
            && self.bearer(headers) == Some(Subject::ApiClient)
    }

    /// Successful password sign-ins of `number` so far.
    pub fn sign_ins(&self, number: &str) -> usize {
        self.with(|s| s.sign_ins.get(number).copied().unwrap_or(0))
    }

    /// Every impersonation served so far: (by whom — an extension or "api-client", as whom).
    pub fn impersonations(&self) -> Vec<(String, String)> {
        self.with(|s| s.impersonations.clone())
    }

    fn issue(&self, s: &mut PbxState, who: Subject) -> (String, i64) {
        let token = format!("3cx-{}", ids::hex(&ids::random::<16>().unwrap_or([5; 16])));
        if who == Subject::ApiClient {
            // One live token per API client: a new one invalidates the old (3CX 20.0.10).
            s.tokens.retain(|_, (w, _)| *w != Subject::ApiClient);
        }
        s.tokens
            .insert(token.clone(), (who, self.clock.now() + 3600));
        (token, 3600)
    }

    fn bearer(&self, headers: &HeaderMap) -> Option<Subject> {
        let token = headers
            .get(AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?;
        let now = self.clock.now();
        self.with(|s| {
            s.tokens
                .get(token)
                .filter(|(_, exp)| *exp > now)
                .map(|(w, _)| w.clone())
        })
    }
}

pub fn router(sim: Arc<PbxSim>) -> Router {
    // The phonebook paths (`/xapi/v1/Contacts…`) are answered by a layer: `Contacts({Id})`
    // would collide with the `{entity}` route.
    let phonebooks = axum::middleware::from_fn_with_state(sim.clone(), contacts::intercept);
    Router::new()
        .route("/", get(webclient))
        .route("/webclient", get(webclient))
        .route("/provisioning/{secret}/{file}", get(provisioning))
        .route("/ws/webclient", get(websocket))
        .route("/connect/token", post(tokens::connect_token))
        .route("/webclient/api/Login/GetAccessToken", post(tokens::login))
        .route("/webclient/api/Logout", post(tokens::logout))
        .route("/xapi/v1/Users", get(list_users).post(create_user))
        .route("/xapi/v1/MyUser", get(my_user))
        .route("/xapi/v1/SystemStatus", get(system_status))
        .route(
            "/xapi/v1/Users/Pbx.GetFirstAvailableExtensionNumber()",
            get(first_available_number),
        )
        .route(
            "/xapi/v1/{entity}",
            axum::routing::patch(patch_user).delete(delete_user),
        )
        .with_state(sim)
        .layer(phonebooks)
}

/// 3CX's error shape: `{"error":{"code","message"}}`.
fn odata_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": "", "message": message}})),
    )
        .into_response()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

const WEBCLIENT_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>3CX Webclient (sandbox)</title>
<style>body{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto}#me{font-size:1.3rem}</style></head>
<body><h1>3CX Webclient</h1>
<p>Simulated phone system <code>__FQDN__</code>, reached through pbxgate.</p>
<p id="me">Connecting…</p>
<p id="status"></p>
<form id="logout" method="post" action="/auth/logout"><button type="submit">Sign out</button></form>
<script>
(async () => {
  const me = document.getElementById('me');
  // Like the real SPA: a bearer token from /connect/token, then who am I from the XAPI.
  const t = await fetch('/connect/token', {method: 'POST', credentials: 'include',
    headers: {'Content-Type': 'application/x-www-form-urlencoded'},
    body: 'client_id=Webclient&grant_type=refresh_token'});
  if (!t.ok) { me.textContent = 'Not signed in to 3CX (' + t.status + ')'; me.dataset.state = 'signed-out'; return; }
  const token = (await t.json()).access_token;
  const u = await fetch('/xapi/v1/MyUser', {headers: {Authorization: 'Bearer ' + token}});
  if (!u.ok) { me.textContent = '3CX refused the token (' + u.status + ')'; me.dataset.state = 'refused'; return; }
  const user = await u.json();
  me.dataset.state = 'signed-in';
  me.dataset.extension = user.Number;
  me.textContent = 'Extension ' + user.Number + ' · ' + user.FirstName + ' ' + user.LastName;
  // The status profile, as the calendar (through pbxgate's presence sync) changes it.
  const status = async () => {
    const r = await fetch('/xapi/v1/MyUser', {headers: {Authorization: 'Bearer ' + token}});
    if (r.ok) document.getElementById('status').textContent = 'Status: ' + (await r.json()).CurrentProfileName;
  };
  status();
  setInterval(status, 10000);
})();
</script></body></html>"#;

async fn webclient(State(sim): State<Arc<PbxSim>>) -> Html<String> {
    Html(WEBCLIENT_PAGE.replace("__FQDN__", &pbxgate_wire::html::escape(&sim.fqdn)))
}

/// A Yealink-style configuration file, as 3CX serves one per phone MAC address.
async fn provisioning(
    State(sim): State<Arc<PbxSim>>,
    Path((secret, file)): Path<(String, String)>,
) -> Response {
    let known = secret == sim.provisioning_secret
        && file.len() == 16
        && file.ends_with(".cfg")
        && file[..12].bytes().all(|b| b.is_ascii_hexdigit());
    if !known {
        return StatusCode::NOT_FOUND.into_response();
    }
    let body = format!(
        "#!version:1.0.0.1\n# generated by the 3CX sandbox for {mac}\n\
         account.1.enable = 1\naccount.1.sip_server.1.address = {fqdn}\n\
         account.1.sip_server.1.port = 5060\n",
        mac = &file[..12],
        fqdn = sim.fqdn
    );
    ([(CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// The webclient channel; the sandbox echoes what it receives.
async fn websocket(ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(echo)
}

/// Sends back every text and binary message until the peer closes.
pub async fn echo(mut socket: WebSocket) {
    while let Some(Ok(msg)) = socket.recv().await {
        let reply = match msg {
            Message::Text(_) | Message::Binary(_) => msg,
            // The close reply goes out with the next read, which then ends the loop.
            _ => continue,
        };
        if socket.send(reply).await.is_err() {
            break;
        }
    }
}

fn user_json(e: &SimExtension) -> Value {
    // 3CX omits nulls; an empty e-mail is simply absent.
    let mut v = json!({
        "Id": e.id, "Number": e.number, "FirstName": e.first_name, "LastName": e.last_name,
        "DisplayName": format!("{} {}", e.first_name, e.last_name), "Enabled": e.enabled,
        "Mobile": e.mobile, "OutboundCallerID": e.outbound_caller_id,
        "CurrentProfileName": if e.profile.is_empty() { "Available" } else { &e.profile },
        "ContactImage": e.contact_image,
        "AuthID": format!("auth{}", e.number), "AuthPassword": "sip-secret", "VMPIN": "1234",
    });
    if !e.email.is_empty() {
        v["EmailAddress"] = json!(e.email);
    }
    v
}

#[derive(Deserialize)]
struct ODataQuery {
    #[serde(rename = "$filter")]
    filter: Option<String>,
    #[serde(rename = "$select")]
    select: Option<String>,
    #[serde(rename = "$top")]
    top: Option<usize>,
    #[serde(rename = "$skip")]
    skip: Option<usize>,
}

/// The `$filter` forms pbxgate sends: `tolower(EmailAddress) eq '…'`, `Number eq '…'` and
/// `Id eq 7`, joined by `or`. Anything else is a 400, as an unsupported filter is on a real PBX.
fn matches_filter(filter: &str, e: &SimExtension) -> Result<bool, String> {
    let mut any = false;
    for clause in filter.split(" or ") {
        let (field, value) = clause
            .split_once(" eq ")
            .ok_or_else(|| format!("unsupported $filter clause {clause:?}"))?;
        if field.trim() == "Id" {
            let id: i64 = value
                .trim()
                .parse()
                .map_err(|_| format!("expected a number in {clause:?}"))?;
            any |= e.id == id;
            continue;
        }
        let value = value
            .trim()
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .ok_or_else(|| format!("expected a string literal in {clause:?}"))?
            .replace("''", "'");
        any |= match field.trim() {
            "tolower(EmailAddress)" => e.email.to_lowercase() == value,
            "Number" => e.number == value,
            other => return Err(format!("unsupported $filter field {other}")),
        };
    }
    Ok(any)
}

async fn list_users(
    State(sim): State<Arc<PbxSim>>,
    headers: HeaderMap,
    Query(q): Query<ODataQuery>,
) -> Response {
    if let Err(r) = xapi_guard(&sim, &headers) {
        return r;
    }
    if q.top.is_some_and(|t| t > 100) {
        return odata_error(
            StatusCode::BAD_REQUEST,
            "The limit of '100' for Top query has been exceeded.",
        );
    }
    let all = sim.with(|s| s.extensions.clone());
    let mut selected = Vec::new();
    for e in &all {
        match q.filter.as_deref().map(|f| matches_filter(f, e)) {
            Some(Err(msg)) => return odata_error(StatusCode::BAD_REQUEST, &msg),
            Some(Ok(false)) => continue,
            _ => selected.push(user_json(e)),
        }
    }
    let page: Vec<Value> = selected
        .into_iter()
        .skip(q.skip.unwrap_or(0))
        .take(q.top.unwrap_or(usize::MAX))
        .map(|u| project(u, q.select.as_deref()))
        .collect();
    axum::Json(json!({ "value": page })).into_response()
}

/// `$select`: only the named properties.
fn project(v: Value, select: Option<&str>) -> Value {
    let Some(fields) = select else { return v };
    let keep: Vec<&str> = fields.split(',').map(str::trim).collect();
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(k, _)| keep.contains(&k.as_str()))
                .collect(),
        ),
        other => other,
    }
}

async fn my_user(State(sim): State<Arc<PbxSim>>, headers: HeaderMap) -> Response {
    match sim.bearer(&headers) {
        Some(Subject::Extension(n)) => match sim.extension(&n) {
            Some(e) => axum::Json(project(
                user_json(&e),
                Some("Id,Number,FirstName,LastName,DisplayName,EmailAddress,CurrentProfileName"),
            ))
            .into_response(),
            None => odata_error(StatusCode::NOT_FOUND, "User not found"),
        },
        _ => StatusCode::UNAUTHORIZED.into_response(),
    }
}

/// `GET /xapi/v1/SystemStatus` (the `Pbx.SystemStatus` singleton of the XAPI description),
/// for the API client. Some of its fields; the values are the simulator's own (the product
/// code's format on a real licence is not known here).
async fn system_status(
    State(sim): State<Arc<PbxSim>>,
    headers: HeaderMap,
    Query(q): Query<ODataQuery>,
) -> Response {
    if let Err(r) = xapi_guard(&sim, &headers) {
        return r;
    }
    let status = json!({
        "Id": 1,
        "FQDN": sim.fqdn,
        "Version": "20.0.10.523",
        "ProductCode": "3CXPSENT-SANDBOX",
        "Activated": true,
        "LicenseActive": true,
        "ExpirationDate": null,
        "MaintenanceExpiresAt": "2027-12-31T00:00:00Z",
        "MaxSimCalls": 16,
        "ExtensionsTotal": sim.with(|s| s.extensions.len()),
    });
    axum::Json(project(status, q.select.as_deref())).into_response()
}

/// The bearer must be the API client, and the simulated PBX up.
fn xapi_guard(sim: &PbxSim, headers: &HeaderMap) -> Result<(), Response> {
    sim.with(|s| s.requests += 1);
    if sim.failing() {
        return Err(odata_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable",
        ));
    }
    if sim.bearer(headers) != Some(Subject::ApiClient) {
        return Err(StatusCode::UNAUTHORIZED.into_response());
    }
    Ok(())
}

/// 3CX's answer to a conflict: the OData error with the field named in `details[].target`
/// (the shape is the XAPI description's; the message text is the simulator's).
fn conflict(field: &str, value: &str) -> Response {
    let body = json!({"error": {"code": "", "message": format!("{field} {value} is already in use"),
        "details": [{"code": "", "message": "DUPLICATED", "target": field}]}});
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

/// Applies the writable fields of `body` to `e`.
fn apply_fields(e: &mut SimExtension, body: &Value) {
    let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
    if let Some(v) = text("FirstName") {
        e.first_name = v;
    }
    if let Some(v) = text("LastName") {
        e.last_name = v;
    }
    if let Some(v) = text("EmailAddress") {
        e.email = v;
    }
    if let Some(v) = text("Mobile") {
        e.mobile = v;
    }
    if let Some(v) = text("OutboundCallerID") {
        e.outbound_caller_id = v;
    }
    if let Some(v) = text("AccessPassword") {
        e.access_password = Some(v);
    }
    if let Some(v) = body.get("Enabled").and_then(Value::as_bool) {
        e.enabled = v;
    }
    if let Some(v) = text("ContactImage") {
        e.contact_image = v;
    }
    if let Some(v) = text("CurrentProfileName") {
        e.profile = v;
    }
}

fn email_taken(s: &PbxState, email: &str, except: i64) -> bool {
    !email.is_empty()
        && s.extensions
            .iter()
            .any(|x| x.id != except && x.email.eq_ignore_ascii_case(email))
}

async fn create_user(
    State(sim): State<Arc<PbxSim>>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if let Err(r) = xapi_guard(&sim, &headers) {
        return r;
    }
    let number = body
        .get("Number")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let email = body
        .get("EmailAddress")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    sim.with(|s| {
        if number.is_empty() || s.extensions.iter().any(|e| e.number == number) {
            return conflict("Number", &number);
        }
        if email_taken(s, &email, -1) {
            return conflict("EmailAddress", &email);
        }
        let mut e = SimExtension {
            id: s.extensions.iter().map(|x| x.id).max().unwrap_or(0) + 1,
            number,
            first_name: String::new(),
            last_name: String::new(),
            email: String::new(),
            access_password: None,
            enabled: true,
            ..Default::default()
        };
        apply_fields(&mut e, &body);
        s.writes += 1;
        if let Some(n) = s.writes_left.as_mut() {
            *n = n.saturating_sub(1);
        }
        s.extensions.push(e.clone());
        (StatusCode::CREATED, axum::Json(user_json(&e))).into_response()
    })
}

fn user_id(entity: &str) -> Option<i64> {
    entity
        .strip_prefix("Users(")
        .and_then(|r| r.strip_suffix(')'))
        .and_then(|r| r.parse::<i64>().ok())
}

async fn patch_user(
    State(sim): State<Arc<PbxSim>>,
    Path(entity): Path<String>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if let Err(r) = xapi_guard(&sim, &headers) {
        return r;
    }
    let Some(id) = user_id(&entity) else {
        return odata_error(StatusCode::NOT_FOUND, "No route for this path");
    };
    if body.get("Number").is_some() {
        return odata_error(StatusCode::BAD_REQUEST, "Number cannot be changed");
    }
    sim.with(|s| {
        let email = body
            .get("EmailAddress")
            .and_then(Value::as_str)
            .unwrap_or("");
        if email_taken(s, email, id) {
            return conflict("EmailAddress", email);
        }
        let Some(e) = s.extensions.iter_mut().find(|e| e.id == id) else {
            return odata_error(StatusCode::NOT_FOUND, &format!("Users({id}) not found"));
        };
        let password_changed = body.get("AccessPassword").is_some();
        apply_fields(e, &body);
        let number = e.number.clone();
        if let Some(p) = body.get("CurrentProfileName").and_then(Value::as_str) {
            let now = sim.clock.now();
            s.profile_writes.push((number.clone(), p.to_string(), now));
        }
        s.writes += 1;
        if let Some(n) = s.writes_left.as_mut() {
            *n = n.saturating_sub(1);
        }
        if password_changed {
            // "The PBX invalidates all tokens … when the extension's password changes"
            // (notes/3cx.md §2.1): its refresh tokens (webclient sessions) and access tokens.
            s.refresh.retain(|_, r| r.extension != number);
            let who = Subject::Extension(number.clone());
            s.tokens.retain(|_, (w, _)| *w != who);
        }
        StatusCode::NO_CONTENT.into_response()
    })
}

async fn delete_user(
    State(sim): State<Arc<PbxSim>>,
    Path(entity): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = xapi_guard(&sim, &headers) {
        return r;
    }
    let Some(id) = user_id(&entity) else {
        return odata_error(StatusCode::NOT_FOUND, "No route for this path");
    };
    sim.with(|s| {
        let before = s.extensions.len();
        s.extensions.retain(|e| e.id != id);
        if s.extensions.len() == before {
            return odata_error(StatusCode::NOT_FOUND, &format!("Users({id}) not found"));
        }
        s.writes += 1;
        if let Some(n) = s.writes_left.as_mut() {
            *n = n.saturating_sub(1);
        }
        StatusCode::NO_CONTENT.into_response()
    })
}

/// The lowest free number from 100 up, as 3CX's own function answers.
async fn first_available_number(State(sim): State<Arc<PbxSim>>, headers: HeaderMap) -> Response {
    if let Err(r) = xapi_guard(&sim, &headers) {
        return r;
    }
    let n = sim.with(|s| {
        (100..)
            .find(|n: &u32| !s.extensions.iter().any(|e| e.number == n.to_string()))
            .unwrap_or(100)
    });
    axum::Json(json!({ "Number": n.to_string() })).into_response()
}
