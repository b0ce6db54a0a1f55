//! A simulated Microsoft Graph v1.0, users part, as `shared/notes/graph-entra.md` §2 describes
//! it and the payloads in `shared/reference/graph/` show it: `GET /users` (`$select`, `$filter`,
//! `$top`, `$skiptoken` paging), `GET /users/delta` (skip and delta tokens, `@removed`,
//! `$deltatoken=latest`, 410 `syncStateNotFound`), `GET /users/{id|upn}`, the profile photo
//! (`/photo`, `/photo/$value`) under Outlook's limit of 4 concurrent requests per mailbox, and
//! JSON batching (`POST /$batch`). Tests inject throttling, failures, latency and token expiry,
//! and read request counters.
//!
//! Wire formats, all Graph's:
//! - Every request needs `Authorization: Bearer <JWT>`, an app-only token the trusted Entra
//!   simulator issued ([`GraphSim::trust`]; none trusted: every token is refused); otherwise
//!   401 `InvalidAuthenticationToken`. Each endpoint needs an application permission in the
//!   token's `roles` (the least-privileged one of notes §2.8 or a higher one); without it 403
//!   `Authorization_RequestDenied` "Insufficient privileges to complete the operation."
//!   (entra-setup notes §2.8). UNCONFIRMED: the Outlook resources (contacts, calendar) may
//!   answer a missing permission with `ErrorAccessDenied` instead; the sim answers alike.
//! - Errors: `{"error":{"code","message","innerError":{"date","request-id","client-request-id"}}}`.
//! - Collections: `{"@odata.context","value":[…],"@odata.nextLink"?}`; a delta round's last page
//!   carries `@odata.deltaLink` instead. Links are absolute, on [`GraphSim::set_base`] or else
//!   `http://{Host}`. Tokens are opaque; the query of the first request lives in them.
//! - Delta items: the selected properties plus `id`; removed users only
//!   `{"id","@removed":{"reason":"changed"|"deleted"}}` (soft / permanent deletion).
//! - `$batch`: `{"requests":[{"id","method","url","headers"?,"body"?}]}` (1 to 20 members) →
//!   200 `{"responses":[{"id","status","headers","body"?}]}`; binary bodies are base64.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::header::{
    AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE,
};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tower::ServiceExt;

use pbxgate_wire::clock::{Clock, UnixTime};
use pbxgate_wire::graph::{ErrorBody, InnerError};
use pbxgate_wire::ids;

mod applications;
mod contacts;
mod directory;
mod grants;
mod permissions;
pub use contacts::{MailboxAccess, SimContact};
pub use directory::{GRAPH_APP_ID, GRAPH_APP_ROLES, GRAPH_SCOPES};

use crate::entra::EntraSim;

/// Members one JSON batch may hold (concepts/json-batching.md).
pub const MAX_BATCH: usize = 20;
/// Outlook's limit of concurrent requests per app and mailbox (includes/throttling-outlook.md).
/// Graph also hands a batch's members to Outlook at most this many at a time.
pub const MAILBOX_CONCURRENCY: usize = 4;
/// Delta tokens for directory objects last 7 days (delta-query-overview.md, "Token duration").
const DELTA_TOKEN_LIFETIME: i64 = 7 * 24 * 3600;
const BATCH_PATH: &str = "/v1.0/$batch";
/// User-relative segments the Outlook service answers; they count against the mailbox limit.
const MAILBOX_SEGMENTS: &[&str] = &[
    "photo",
    "photos",
    "contacts",
    "contactFolders",
    "calendar",
    "calendarView",
    "events",
    "mailboxSettings",
];

/// A user of the simulated directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirectoryUser {
    /// The object id, a GUID; equals the `oid` of the user's tokens.
    pub id: String,
    pub user_principal_name: String,
    pub display_name: String,
    /// Empty is sent as `null`, as Graph does for rooms and shared mailboxes.
    pub given_name: String,
    /// Empty is sent as `null`.
    pub surname: String,
    pub mail: Option<String>,
    /// A collection in the schema, but Entra holds at most one number here.
    pub business_phones: Vec<String>,
    pub mobile_phone: Option<String>,
    pub account_enabled: bool,
    /// `Member` or `Guest`.
    pub user_type: String,
    pub job_title: Option<String>,
    pub department: Option<String>,
    /// `Some(true)` synced from on-premises, `Some(false)` was once, `None` never (cloud only).
    pub on_premises_sync_enabled: Option<bool>,
    /// JPEG bytes. The photo lives in the mailbox, so changing it is not a delta change.
    pub photo: Option<Vec<u8>>,
    /// Object ids of the groups the user is a (transitive) member of.
    pub member_of: Vec<String>,
    /// Whether Outlook resources (photo, contacts, calendar) are reachable for the app.
    pub mailbox: Mailbox,
    /// `signInSessionsValidFromDateTime` (Unix seconds): sessions and refresh tokens issued
    /// before it are invalid. 0 means "when the user was added"; "Revoke sessions" in Entra
    /// ([`GraphSim::revoke_sign_in_sessions`]) moves it to now.
    pub sign_in_sessions_valid_from: UnixTime,
}

/// What Outlook says about a user's mailbox.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mailbox {
    #[default]
    Exchange,
    /// No Exchange Online mailbox: 404 `MailboxNotEnabledForRESTAPI`.
    Missing,
    /// Outside the app's application access policy: 403 `ErrorAccessDenied`.
    Blocked,
}

/// A calendar event as free/busy sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimEvent {
    pub id: u64,
    pub start: UnixTime,
    pub end: UnixTime,
    /// `showAs`, spelled as the test wants it back (Graph's concept page capitalises).
    pub show_as: String,
}

impl DirectoryUser {
    /// An enabled cloud member with a fresh id, `mail` equal to the UPN, named "given surname".
    pub fn member(upn: &str, given_name: &str, surname: &str) -> Self {
        Self {
            id: new_guid(),
            user_principal_name: upn.into(),
            display_name: format!("{given_name} {surname}").trim().to_string(),
            given_name: given_name.into(),
            surname: surname.into(),
            mail: Some(upn.into()),
            account_enabled: true,
            user_type: "Member".into(),
            ..Default::default()
        }
    }
}

/// The user properties served, and whether Graph returns each without `$select`
/// (resources/user.md: `accountEnabled`, `userType`, … only when selected).
const PROPERTIES: &[(&str, bool)] = &[
    ("id", true),
    ("businessPhones", true),
    ("displayName", true),
    ("givenName", true),
    ("jobTitle", true),
    ("mail", true),
    ("mobilePhone", true),
    ("officeLocation", true),
    ("preferredLanguage", true),
    ("surname", true),
    ("userPrincipalName", true),
    ("accountEnabled", false),
    ("department", false),
    ("onPremisesSyncEnabled", false),
    ("userType", false),
    ("signInSessionsValidFromDateTime", false),
];

fn property(name: &str) -> Option<&'static str> {
    PROPERTIES
        .iter()
        .map(|(p, _)| *p)
        .find(|p| p.eq_ignore_ascii_case(name))
}

fn all_properties() -> impl Iterator<Item = &'static str> {
    PROPERTIES.iter().map(|(p, _)| *p)
}

/// Every property of `u` in Graph's spelling; `officeLocation` and `preferredLanguage` are
/// not modelled and always `null`.
fn properties(u: &DirectoryUser) -> Map<String, Value> {
    let name = |s: &str| if s.is_empty() { Value::Null } else { json!(s) };
    let v = json!({
        "id": u.id, "businessPhones": u.business_phones, "displayName": u.display_name,
        "givenName": name(&u.given_name), "jobTitle": u.job_title, "mail": u.mail,
        "mobilePhone": u.mobile_phone, "officeLocation": null, "preferredLanguage": null,
        "surname": name(&u.surname), "userPrincipalName": u.user_principal_name,
        "accountEnabled": u.account_enabled, "department": u.department,
        "onPremisesSyncEnabled": u.on_premises_sync_enabled, "userType": u.user_type,
        "signInSessionsValidFromDateTime": date_time_offset(u.sign_in_sessions_valid_from),
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// A `DateTimeOffset` as Graph writes it, e.g. `2019-02-22T23:40:13Z`.
fn date_time_offset(t: UnixTime) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The selected properties of `u` (the default set without `$select`), always with `id`.
fn project(u: &DirectoryUser, select: Option<&[&str]>) -> Value {
    let keep = |k: &str| {
        k == "id"
            || match select {
                Some(s) => s.contains(&k),
                None => PROPERTIES.iter().any(|(p, default)| *default && *p == k),
            }
    };
    Value::Object(properties(u).into_iter().filter(|(k, _)| keep(k)).collect())
}

/// A user with what delta needs to know about its history.
struct Entry {
    user: DirectoryUser,
    /// Per property, the change number of its last change. `id` also moves on addition,
    /// removal and restore, so those surface whatever was selected.
    changed: HashMap<&'static str, u64>,
    /// The `@removed` reason once deleted: `changed` (soft, restorable) or `deleted`.
    removed: Option<&'static str>,
}

impl Entry {
    fn live(&self) -> bool {
        self.removed.is_none()
    }

    /// Whether a holder of a token from change `since` learns about this user. With `$select`,
    /// a change to an unselected property does not count (delta-query-overview.md); without,
    /// every property is tracked.
    fn changed_since(&self, since: u64, select: Option<&[&str]>) -> bool {
        self.changed
            .iter()
            .any(|(k, &at)| at > since && (*k == "id" || select.is_none_or(|s| s.contains(k))))
    }

    /// This user's item in a delta round: from scratch (`since` is `None`) only live users.
    fn delta_item(&self, since: Option<u64>, select: Option<&[&str]>) -> Option<Value> {
        match (since, self.removed) {
            (None, Some(_)) => None,
            (Some(s), _) if !self.changed_since(s, select) => None,
            (_, Some(reason)) => Some(json!({"id": self.user.id, "@removed": {"reason": reason}})),
            (_, None) => Some(project(&self.user, select)),
        }
    }
}

/// A listing being paged through: its items, fixed when it began, and where the next page starts.
struct Pages {
    items: Arc<Vec<Value>>,
    offset: usize,
    size: usize,
    /// `users` or `users/delta`: where the nextLink points.
    path: &'static str,
    context: String,
    /// For a delta round, the token its last page hands out in the deltaLink.
    delta: Option<DeltaToken>,
}

#[derive(Clone)]
struct DeltaToken {
    /// Changes after this change number are news to the holder.
    since: u64,
    /// The `$select` of the round that made the token; later rounds keep it.
    select: Option<Vec<&'static str>>,
    issued: UnixTime,
    /// Tokens from before the last `expire_delta_tokens` are gone.
    epoch: u64,
}

#[derive(Default)]
struct GraphState {
    /// In insertion order, which is the listing order. Deleted users stay as tombstones for delta.
    users: Vec<Entry>,
    /// Lower-case id → index in `users`.
    index: HashMap<String, usize>,
    /// The change counter.
    seq: u64,
    epoch: u64,
    page_size: usize,
    /// Listings in progress by `$skiptoken`; a token is used once.
    pages: HashMap<String, Pages>,
    /// Delta tokens from deltaLinks; reusable until they expire.
    delta_tokens: HashMap<String, DeltaToken>,
    /// (requests left, Retry-After value)
    throttle: (usize, String),
    /// (requests left, status)
    fail: (usize, StatusCode),
    latency: Duration,
    /// Lower-case user id → requests in flight to that mailbox.
    mailboxes: HashMap<String, usize>,
    requests: usize,
    batches: usize,
    by_path: HashMap<String, usize>,
    /// Lower-case user id → calendar events.
    events: HashMap<String, Vec<SimEvent>>,
    event_seq: u64,
}

impl GraphState {
    /// A live user by id or UPN, both case-insensitive.
    fn find(&self, key: &str) -> Option<&Entry> {
        self.index
            .get(&key.to_lowercase())
            .map(|&i| &self.users[i])
            .or_else(|| {
                self.users
                    .iter()
                    .find(|e| e.live() && e.user.user_principal_name.eq_ignore_ascii_case(key))
            })
            .filter(|e| e.live())
    }
}

/// What the simulated Graph knows, and the knobs tests turn.
pub struct GraphSim {
    /// Whose tokens are accepted.
    issuer: RwLock<Option<Arc<EntraSim>>>,
    contacts: Mutex<contacts::ContactsState>,
    base: RwLock<String>,
    clock: Arc<dyn Clock>,
    state: Mutex<GraphState>,
    /// Applications, service principals and grants (`graph/directory.rs`).
    directory: directory::Directory,
}

impl GraphSim {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            issuer: RwLock::new(None),
            contacts: Mutex::default(),
            base: RwLock::new(String::new()),
            clock,
            state: Mutex::new(GraphState {
                page_size: 100,
                ..Default::default()
            }),
            directory: directory::Directory::default(),
        }
    }

    /// Accepts the app-only tokens `entra` issues (and no others).
    pub fn trust(&self, entra: Arc<EntraSim>) {
        if let Ok(mut i) = self.issuer.write() {
            *i = Some(entra);
        }
    }

    /// The token's roles, or Graph's 401.
    fn authenticate(&self, headers: &HeaderMap) -> Result<Vec<String>, Failure> {
        let token = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("")
            .trim();
        let verified = if token.is_empty() {
            Err("Access token is empty.".to_string())
        } else {
            match self.issuer.read().ok().and_then(|i| i.clone()) {
                Some(entra) => entra.verify_app_token(token),
                None => Err("Access token validation failure. Invalid audience.".to_string()),
            }
        };
        verified.map(|t| t.roles).map_err(|message| {
            Failure::new(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", message)
                .header(WWW_AUTHENTICATE, r#"Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000""#)
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut GraphState) -> T) -> T {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// The origin links point at, e.g. `https://127.0.0.1:40123`; without it, `http://{Host}`.
    pub fn set_base(&self, base: &str) {
        if let Ok(mut b) = self.base.write() {
            *b = base.trim_end_matches('/').to_string();
        }
    }

    fn base(&self, headers: &HeaderMap) -> String {
        let set = self.base.read().map(|b| b.clone()).unwrap_or_default();
        if !set.is_empty() {
            return set;
        }
        let host = headers.get(HOST).and_then(|h| h.to_str().ok());
        format!("http://{}", host.unwrap_or("localhost"))
    }

    /// Adds `user`, or replaces the user with its id; a delta change either way.
    pub fn add_user(&self, mut user: DirectoryUser) {
        if user.sign_in_sessions_valid_from == 0 {
            user.sign_in_sessions_valid_from = self.clock.now();
        }
        self.with(|s| {
            s.seq += 1;
            let key = user.id.to_lowercase();
            let entry = Entry {
                changed: all_properties().map(|p| (p, s.seq)).collect(),
                removed: None,
                user,
            };
            match s.index.get(&key) {
                Some(&i) => s.users[i] = entry,
                None => {
                    s.index.insert(key, s.users.len());
                    s.users.push(entry);
                }
            }
        })
    }

    /// Applies `edit` to the entry `id`; `None` means it does not apply. The properties it
    /// returns are recorded as changed now. False when there is no such user or it did not apply.
    fn change(&self, id: &str, edit: impl FnOnce(&mut Entry) -> Option<Vec<&'static str>>) -> bool {
        self.with(|s| {
            let Some(&i) = s.index.get(&id.to_lowercase()) else {
                return false;
            };
            let Some(changed) = edit(&mut s.users[i]) else {
                return false;
            };
            if !changed.is_empty() {
                s.seq += 1;
                let seq = s.seq;
                s.users[i]
                    .changed
                    .extend(changed.into_iter().map(|p| (p, seq)));
            }
            true
        })
    }

    /// Edits a live user (the id stays); properties whose value changed become delta changes.
    pub fn update_user(&self, id: &str, f: impl FnOnce(&mut DirectoryUser)) -> bool {
        self.change(id, |e| {
            if !e.live() {
                return None;
            }
            let before = properties(&e.user);
            let id = e.user.id.clone();
            f(&mut e.user);
            e.user.id = id;
            let after = properties(&e.user);
            Some(
                all_properties()
                    .filter(|p| before.get(*p) != after.get(*p))
                    .collect(),
            )
        })
    }

    /// "Revoke sessions" in Entra (`POST /users/{id}/revokeSignInSessions`): the user's
    /// `signInSessionsValidFromDateTime` becomes now (user-revokesigninsessions.md).
    pub fn revoke_sign_in_sessions(&self, id: &str) -> bool {
        let now = self.clock.now();
        self.update_user(id, |u| u.sign_in_sessions_valid_from = now)
    }

    /// Deletes a user: soft (delta says `"reason":"changed"`, restorable) or permanently
    /// (`"deleted"`); a soft-deleted user can still be deleted permanently.
    pub fn delete_user(&self, id: &str, permanently: bool) -> bool {
        let reason = if permanently { "deleted" } else { "changed" };
        self.change(id, |e| {
            (e.removed != Some("deleted") && e.removed != Some(reason)).then(|| {
                e.removed = Some(reason);
                vec!["id"]
            })
        })
    }

    /// Restores a soft-deleted user; delta shows it again, without annotation.
    pub fn restore_user(&self, id: &str) -> bool {
        self.change(id, |e| {
            (e.removed == Some("changed")).then(|| {
                e.removed = None;
                all_properties().collect()
            })
        })
    }

    /// Sets or clears a live user's photo. Not a delta change: the photo is a navigation
    /// property (delta-query-overview.md, "Limitations").
    pub fn set_photo(&self, id: &str, photo: Option<Vec<u8>>) -> bool {
        self.change(id, |e| {
            e.live().then(|| {
                e.user.photo = photo;
                Vec::new()
            })
        })
    }

    /// A live user by id or UPN.
    pub fn user(&self, key: &str) -> Option<DirectoryUser> {
        self.with(|s| s.find(key).map(|e| e.user.clone()))
    }

    /// Adds a calendar event to a live user's mailbox; returns its id (for `remove_event`).
    pub fn add_event(&self, user: &str, start: UnixTime, end: UnixTime, show_as: &str) -> u64 {
        self.with(|s| {
            s.event_seq += 1;
            let id = s.event_seq;
            let key = s
                .find(user)
                .map_or(user.to_lowercase(), |e| e.user.id.to_lowercase());
            s.events.entry(key).or_default().push(SimEvent {
                id,
                start,
                end,
                show_as: show_as.to_string(),
            });
            id
        })
    }

    /// Removes an event (a meeting cancelled).
    pub fn remove_event(&self, id: u64) {
        self.with(|s| s.events.values_mut().for_each(|v| v.retain(|e| e.id != id)));
    }

    /// The next `n` requests (batch members included, the batch envelope not) answer 429
    /// `TooManyRequests` with `Retry-After: retry_after` (Graph sends decimals such as `2.128`).
    pub fn throttle_next(&self, n: usize, retry_after: &str) {
        self.with(|s| s.throttle = (n, retry_after.to_string()));
    }

    /// The next `n` requests (after any throttled ones) answer `status` with a Graph error.
    pub fn fail_next(&self, n: usize, status: StatusCode) {
        self.with(|s| s.fail = (n, status));
    }

    /// How long every request takes; a mailbox request holds its slot meanwhile.
    pub fn set_latency(&self, latency: Duration) {
        self.with(|s| s.latency = latency);
    }

    /// Invalidates every delta token and unfinished delta round: their next use answers 410.
    pub fn expire_delta_tokens(&self) {
        self.with(|s| s.epoch += 1);
    }

    /// Items per page of `/users` (without `$top`) and of delta rounds; 100 by default.
    pub fn set_page_size(&self, size: usize) {
        self.with(|s| s.page_size = size.max(1));
    }

    /// Requests served: every HTTP request, plus every member of a batch.
    pub fn requests(&self) -> usize {
        self.with(|s| s.requests)
    }

    /// `POST /$batch` calls served.
    pub fn batch_calls(&self) -> usize {
        self.with(|s| s.batches)
    }

    /// Requests (batch members included) whose path starts with `prefix`, e.g. `/v1.0/users/delta`.
    pub fn requests_to(&self, prefix: &str) -> usize {
        self.with(|s| {
            s.by_path
                .iter()
                .filter(|(p, _)| p.starts_with(prefix))
                .map(|(_, n)| n)
                .sum()
        })
    }

    pub fn reset_counters(&self) {
        self.with(|s| {
            s.requests = 0;
            s.batches = 0;
            s.by_path.clear();
        })
    }

    fn is_current(&self, d: &DeltaToken) -> bool {
        d.epoch == self.with(|s| s.epoch) && self.clock.now() < d.issued + DELTA_TOKEN_LIFETIME
    }

    fn take_pages(&self, token: &str) -> Option<Pages> {
        self.with(|s| s.pages.remove(token))
    }

    /// The page of `p` at its offset, with a nextLink to the rest; a delta round's last page
    /// gets the deltaLink instead.
    fn page(&self, base: &str, mut p: Pages) -> Response {
        let end = (p.offset + p.size).min(p.items.len());
        let mut body = json!({"@odata.context": p.context, "value": &p.items[p.offset..end]});
        let token = new_token();
        let now = self.clock.now();
        if end < p.items.len() {
            body["@odata.nextLink"] = json!(format!("{base}/v1.0/{}?$skiptoken={token}", p.path));
            p.offset = end;
            self.with(|s| s.pages.insert(token, p));
        } else if let Some(d) = p.delta {
            body["@odata.deltaLink"] =
                json!(format!("{base}/v1.0/users/delta?$deltatoken={token}"));
            self.with(|s| {
                s.delta_tokens
                    .retain(|_, d| now < d.issued + DELTA_TOKEN_LIFETIME);
                s.delta_tokens.insert(token, d);
            });
        }
        axum::Json(body).into_response()
    }

    /// Graph's error body; the date comes from the simulator's clock.
    fn error(&self, e: Failure) -> Response {
        let t = std::time::UNIX_EPOCH + Duration::from_secs(self.clock.now().max(0) as u64);
        let date = humantime::format_rfc3339_seconds(t).to_string();
        let id = new_guid();
        let mut body = ErrorBody::new(e.code, e.message);
        body.error.inner_error = Some(InnerError {
            date: date.trim_end_matches('Z').to_string(),
            request_id: id.clone(),
            client_request_id: id,
        });
        let mut res = (e.status, axum::Json(body)).into_response();
        if let Some((name, value)) = e.header
            && let Ok(v) = HeaderValue::from_str(&value)
        {
            res.headers_mut().insert(name, v);
        }
        res
    }

    fn respond(&self, result: Result<Response, Failure>) -> Response {
        result.unwrap_or_else(|e| self.error(e))
    }

    /// Counts the request, checks the bearer token, then (except for the batch envelope, which
    /// Graph answers 200 whatever its members do) injected faults and the mailbox limit.
    fn admit(
        self: &Arc<Self>,
        headers: &HeaderMap,
        path: &str,
    ) -> Result<Option<MailboxSlot>, Failure> {
        let envelope = path == BATCH_PATH;
        self.with(|s| {
            s.requests += 1;
            s.batches += usize::from(envelope);
            *s.by_path.entry(path.to_string()).or_default() += 1;
        });
        let roles = self.authenticate(headers)?;
        if envelope {
            return Ok(None);
        }
        let needed = permissions::needed(path);
        if !needed.is_empty() && !roles.iter().any(|r| needed.contains(&r.as_str())) {
            return Err(Failure::new(
                StatusCode::FORBIDDEN,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
            ));
        }
        let fault = self.with(|s| {
            if s.throttle.0 > 0 {
                s.throttle.0 -= 1;
                Some((StatusCode::TOO_MANY_REQUESTS, Some(s.throttle.1.clone())))
            } else if s.fail.0 > 0 {
                s.fail.0 -= 1;
                Some((s.fail.1, None))
            } else {
                None
            }
        });
        match fault {
            Some((status, Some(after))) => {
                Err(
                    Failure::new(status, "TooManyRequests", "Please retry again later.")
                        .header(RETRY_AFTER, after),
                )
            }
            Some((status, None)) => {
                let code = match status.as_u16() {
                    500 => "generalException",
                    503 => "serviceNotAvailable",
                    _ => "UnknownError",
                };
                Err(Failure::new(
                    status,
                    code,
                    "Some error was generated by the simulator.",
                ))
            }
            None => self.mailbox_slot(path),
        }
    }

    /// A slot among the mailbox's 4 for requests to `/users/{id|upn}/{outlook resource}`;
    /// the fifth concurrent request is throttled.
    fn mailbox_slot(self: &Arc<Self>, path: &str) -> Result<Option<MailboxSlot>, Failure> {
        let Some((user, tail)) = path
            .strip_prefix("/v1.0/users/")
            .and_then(|r| r.split_once('/'))
        else {
            return Ok(None);
        };
        if !MAILBOX_SEGMENTS.contains(&tail.split('/').next().unwrap_or("")) {
            return Ok(None);
        }
        let user = percent_encoding::percent_decode_str(user).decode_utf8_lossy();
        match self.with(|s| s.find(&user).map(|e| e.user.mailbox)) {
            Some(Mailbox::Missing) => return Err(no_mailbox()),
            Some(Mailbox::Blocked) => return Err(access_policy()),
            _ => {}
        }
        let admitted = self.with(|s| {
            let mailbox = s
                .find(&user)
                .map_or_else(|| user.to_lowercase(), |e| e.user.id.to_lowercase());
            let n = s.mailboxes.entry(mailbox.clone()).or_default();
            (*n < MAILBOX_CONCURRENCY).then(|| {
                *n += 1;
                mailbox
            })
        });
        match admitted {
            Some(mailbox) => Ok(Some(MailboxSlot {
                sim: self.clone(),
                mailbox,
            })),
            // Code and message as public issue reports quote them (notes §2.6 has the limit).
            None => Err(Failure::new(
                StatusCode::TOO_MANY_REQUESTS,
                "ApplicationThrottled",
                "Application is over its MailboxConcurrency limit.",
            )
            .header(RETRY_AFTER, "1")),
        }
    }
}

/// A request in flight to a mailbox; frees its slot when dropped.
struct MailboxSlot {
    sim: Arc<GraphSim>,
    mailbox: String,
}

impl Drop for MailboxSlot {
    fn drop(&mut self) {
        self.sim.with(|s| {
            if let Some(n) = s.mailboxes.get_mut(&self.mailbox) {
                *n = n.saturating_sub(1);
            }
        });
    }
}

/// A Graph error before it becomes a response (which needs the simulator's clock).
struct Failure {
    status: StatusCode,
    code: &'static str,
    message: String,
    header: Option<(HeaderName, String)>,
}

impl Failure {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            header: None,
        }
    }

    fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.header = Some((name, value.into()));
        self
    }
}

fn not_found(key: &str) -> Failure {
    Failure::new(
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        format!(
            "Resource '{key}' does not exist or one of its queried reference-property objects are not present."
        ),
    )
}

/// A user without an Exchange Online mailbox (notes §2.7).
fn no_mailbox() -> Failure {
    Failure::new(
        StatusCode::NOT_FOUND,
        "MailboxNotEnabledForRESTAPI",
        "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
    )
}

/// A mailbox outside the app's application access policy (notes §2.2).
fn access_policy() -> Failure {
    Failure::new(
        StatusCode::FORBIDDEN,
        "ErrorAccessDenied",
        "Access to OData is disabled.",
    )
}

/// 410 with where to start over (delta-query-overview.md, "Synchronization reset").
fn sync_reset(base: &str, select: Option<&[&str]>) -> Failure {
    let fresh = match select {
        Some(s) => format!("{base}/v1.0/users/delta?$select={}", s.join(",")),
        None => format!("{base}/v1.0/users/delta"),
    };
    Failure::new(
        StatusCode::GONE,
        "syncStateNotFound",
        "The sync state generation is not found. The delta token is expired and data must be synchronized again.",
    )
    .header(LOCATION, fresh)
}

/// A random version-4 GUID, as Graph uses for object and request ids.
pub fn new_guid() -> String {
    let mut b = ids::random::<16>().unwrap_or([7; 16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = ids::hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn new_token() -> String {
    ids::random::<18>()
        .map(|b| ids::hex(&b))
        .unwrap_or_else(|_| ids::request_id())
}

pub fn router(sim: Arc<GraphSim>) -> Router {
    let gate = middleware::from_fn_with_state(sim.clone(), gate);
    let directory = middleware::from_fn_with_state(sim.clone(), directory::intercept);
    let members = Router::new()
        .merge(contacts::routes())
        .route("/v1.0/users", get(list_users))
        .route("/v1.0/users/delta", get(users_delta))
        .route("/v1.0/users/{user}", get(get_user))
        .route("/v1.0/users/{user}/photo", get(photo_metadata))
        .route("/v1.0/users/{user}/photo/$value", get(photo_value))
        .route(
            "/v1.0/users/{user}/checkMemberGroups",
            post(check_member_groups),
        )
        .route(
            "/v1.0/users/{user}/calendar/getSchedule",
            post(get_schedule),
        )
        .fallback(unknown_segment)
        .with_state(sim.clone())
        .layer(gate.clone());
    // The batch envelope runs its members through `members`: same gate, no nested batches.
    let envelope = Router::new()
        .route(BATCH_PATH, post(batch))
        .with_state(BatchState {
            sim,
            members: members.clone(),
        })
        .layer(gate);
    members.merge(envelope).layer(directory)
}

/// Every request and batch member: counted and admitted (see [`GraphSim::admit`]), then delayed
/// by the latency knob, holding its mailbox slot meanwhile.
async fn gate(State(sim): State<Arc<GraphSim>>, req: Request, next: Next) -> Response {
    let admitted = sim.admit(req.headers(), req.uri().path());
    let latency = sim.with(|s| s.latency);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match admitted {
        Ok(_slot) => next.run(req).await,
        Err(e) => sim.error(e),
    }
}

type Options = Query<HashMap<String, String>>;

/// Query options by lower-case name: Graph takes `$deltaToken` as well as `$deltatoken`.
fn options(Query(q): Options) -> HashMap<String, String> {
    q.into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect()
}

/// `$select`: Graph's spelling of each named property, matched case-insensitively.
fn parse_select(raw: Option<&String>) -> Result<Option<Vec<&'static str>>, Failure> {
    let Some(raw) = raw else { return Ok(None) };
    raw.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            property(p).ok_or_else(|| {
                Failure::bad_request(
                    "Request_BadRequest",
                    format!(
                        "Could not find a property named '{p}' on type 'microsoft.graph.user'."
                    ),
                )
            })
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

fn context(base: &str, select: Option<&[&str]>, entity: bool) -> String {
    let select = select.map_or(String::new(), |s| format!("({})", s.join(",")));
    let entity = if entity { "/$entity" } else { "" };
    format!("{base}/v1.0/$metadata#users{select}{entity}")
}

/// `$filter`: `eq` comparisons joined by `and` / `or` (`and` binds tighter, no parentheses),
/// e.g. `userType eq 'Member' and accountEnabled eq true`. Strings compare case-insensitively.
struct Filter(Vec<Vec<(&'static str, Value)>>);

impl Filter {
    fn parse(raw: &str) -> Result<Self, Failure> {
        raw.split(" or ")
            .map(|any| any.split(" and ").map(Self::clause).collect())
            .collect::<Result<_, _>>()
            .map(Self)
    }

    fn clause(c: &str) -> Result<(&'static str, Value), Failure> {
        let unsupported = || {
            Failure::bad_request(
                "Request_UnsupportedQuery",
                format!(
                    "Unsupported or invalid query filter clause specified: '{}'.",
                    c.trim()
                ),
            )
        };
        let (name, literal) = c.trim().split_once(" eq ").ok_or_else(unsupported)?;
        let name = property(name.trim())
            .filter(|p| *p != "businessPhones")
            .ok_or_else(unsupported)?;
        let value = match literal.trim() {
            "true" => json!(true),
            "false" => json!(false),
            "null" => Value::Null,
            l => json!(
                l.strip_prefix('\'')
                    .and_then(|l| l.strip_suffix('\''))
                    .ok_or_else(unsupported)?
                    .replace("''", "'")
            ),
        };
        Ok((name, value))
    }

    fn matches(&self, props: &Map<String, Value>) -> bool {
        self.0.iter().any(|all| {
            all.iter().all(|(p, want)| match (props.get(*p), want) {
                (Some(Value::String(a)), Value::String(b)) => a.eq_ignore_ascii_case(b),
                (have, want) => have.unwrap_or(&Value::Null) == want,
            })
        })
    }
}

async fn list_users(State(sim): State<Arc<GraphSim>>, headers: HeaderMap, q: Options) -> Response {
    sim.respond(list(&sim, &sim.base(&headers), &options(q)))
}

fn list(sim: &GraphSim, base: &str, q: &HashMap<String, String>) -> Result<Response, Failure> {
    if let Some(token) = q.get("$skiptoken") {
        return match sim.take_pages(token) {
            Some(p) if p.delta.is_none() => Ok(sim.page(base, p)),
            _ => Err(Failure::bad_request(
                "Request_BadRequest",
                "The specified page token value has expired and can no longer be included in your request.",
            )),
        };
    }
    let select = parse_select(q.get("$select"))?;
    let filter = q.get("$filter").map(|f| Filter::parse(f)).transpose()?;
    let top = q
        .get("$top")
        .map(|t| {
            t.parse()
                .ok()
                .filter(|n| (1..=999).contains(n))
                .ok_or_else(|| {
                    Failure::bad_request(
                        "Request_BadRequest",
                        format!("Invalid page size specified: '{t}'. Must be between 1 and 999 inclusive."),
                    )
                })
        })
        .transpose()?;
    let pages = sim.with(|s| Pages {
        items: Arc::new(
            s.users
                .iter()
                .filter(|e| e.live())
                .filter(|e| {
                    filter
                        .as_ref()
                        .is_none_or(|f| f.matches(&properties(&e.user)))
                })
                .map(|e| project(&e.user, select.as_deref()))
                .collect(),
        ),
        offset: 0,
        size: top.unwrap_or(s.page_size),
        path: "users",
        context: context(base, select.as_deref(), false),
        delta: None,
    });
    Ok(sim.page(base, pages))
}

async fn users_delta(State(sim): State<Arc<GraphSim>>, headers: HeaderMap, q: Options) -> Response {
    sim.respond(delta(&sim, &sim.base(&headers), &options(q)))
}

/// Only `$select`, `$skiptoken` and `$deltatoken` count; other options are ignored.
fn delta(sim: &GraphSim, base: &str, q: &HashMap<String, String>) -> Result<Response, Failure> {
    if let Some(token) = q.get("$skiptoken") {
        return match sim.take_pages(token) {
            Some(p) if p.delta.as_ref().is_some_and(|d| sim.is_current(d)) => Ok(sim.page(base, p)),
            other => Err(sync_reset(
                base,
                other
                    .and_then(|p| p.delta)
                    .and_then(|d| d.select)
                    .as_deref(),
            )),
        };
    }
    let (since, select) = match q.get("$deltatoken").map(String::as_str) {
        None => (None, parse_select(q.get("$select"))?),
        // "Sync from now": nothing so far is news, only the deltaLink comes back.
        Some("latest") => (Some(u64::MAX), parse_select(q.get("$select"))?),
        Some(token) => match sim.with(|s| s.delta_tokens.get(token).cloned()) {
            Some(d) if sim.is_current(&d) => (Some(d.since), d.select),
            other => return Err(sync_reset(base, other.and_then(|d| d.select).as_deref())),
        },
    };
    let issued = sim.clock.now();
    let pages = sim.with(|s| Pages {
        items: Arc::new(
            s.users
                .iter()
                .filter_map(|e| e.delta_item(since, select.as_deref()))
                .collect(),
        ),
        offset: 0,
        size: s.page_size,
        path: "users/delta",
        context: context(base, select.as_deref(), false),
        delta: Some(DeltaToken {
            since: s.seq,
            select: select.clone(),
            issued,
            epoch: s.epoch,
        }),
    });
    Ok(sim.page(base, pages))
}

async fn get_user(
    State(sim): State<Arc<GraphSim>>,
    Path(user): Path<String>,
    headers: HeaderMap,
    q: Options,
) -> Response {
    let q = options(q);
    let result = parse_select(q.get("$select")).and_then(|select| {
        let mut v = sim
            .with(|s| s.find(&user).map(|e| project(&e.user, select.as_deref())))
            .ok_or_else(|| not_found(&user))?;
        v["@odata.context"] = json!(context(&sim.base(&headers), select.as_deref(), true));
        Ok(axum::Json(v).into_response())
    });
    sim.respond(result)
}

/// `POST /users/{id}/checkMemberGroups` (directoryobject-checkmembergroups): which of up to
/// 20 `groupIds` the user is a member of.
async fn check_member_groups(
    State(sim): State<Arc<GraphSim>>,
    Path(user): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let asked: Vec<String> = body["groupIds"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let result = if asked.is_empty() || asked.len() > 20 {
        Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
            "groupIds must hold between 1 and 20 group ids.",
        ))
    } else {
        sim.with(|s| s.find(&user).map(|e| e.user.member_of.clone()))
            .ok_or_else(|| not_found(&user))
            .map(|member_of| {
                let value: Vec<&String> = asked
                    .iter()
                    .filter(|g| member_of.iter().any(|m| m.eq_ignore_ascii_case(g)))
                    .collect();
                axum::Json(json!({ "value": value })).into_response()
            })
    };
    sim.respond(result)
}

/// A live user's photo, or 404 `ImageNotFound` (profilephoto-get.md) when it has none.
fn photo_of(sim: &GraphSim, user: &str) -> Result<(String, Vec<u8>), Failure> {
    let (id, photo) = sim
        .with(|s| {
            s.find(user)
                .map(|e| (e.user.id.clone(), e.user.photo.clone()))
        })
        .ok_or_else(|| not_found(user))?;
    let photo = photo.ok_or_else(|| {
        Failure::new(
            StatusCode::NOT_FOUND,
            "ImageNotFound",
            "Exception of type 'Microsoft.Fast.Profile.Core.Exception.ImageNotFoundException' was thrown.",
        )
    })?;
    Ok((id, photo))
}

async fn photo_value(State(sim): State<Arc<GraphSim>>, Path(user): Path<String>) -> Response {
    sim.respond(
        photo_of(&sim, &user)
            .map(|(_, bytes)| ([(CONTENT_TYPE, "image/jpeg")], bytes).into_response()),
    )
}

/// Photo metadata. The size is always reported as 240×240; the etag follows the bytes, so a
/// client can notice a new photo without downloading it (photo changes are not in delta).
async fn photo_metadata(
    State(sim): State<Arc<GraphSim>>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> Response {
    let base = sim.base(&headers);
    sim.respond(photo_of(&sim, &user).map(|(id, bytes)| {
        let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
        axum::Json(json!({
            "@odata.context": format!("{base}/v1.0/$metadata#users('{id}')/photo/$entity"),
            "@odata.mediaContentType": "image/jpeg",
            "@odata.mediaEtag": format!("\"{}\"", ids::hex(&digest.as_ref()[..4]).to_uppercase()),
            "id": "240x240", "width": 240, "height": 240,
        }))
        .into_response()
    }))
}

async fn unknown_segment(State(sim): State<Arc<GraphSim>>, uri: http::Uri) -> Response {
    let segment = uri.path().rsplit('/').find(|s| !s.is_empty()).unwrap_or("");
    sim.error(Failure::bad_request(
        "BadRequest",
        format!("Resource not found for the segment '{segment}'."),
    ))
}

#[derive(Clone)]
struct BatchState {
    sim: Arc<GraphSim>,
    /// The router without the batch route, with the gate.
    members: Router,
}

#[derive(Deserialize)]
struct BatchBody {
    requests: Vec<BatchMember>,
}

#[derive(Deserialize)]
struct BatchMember {
    id: String,
    method: String,
    url: String,
    #[serde(default)]
    headers: HashMap<String, String>,
    body: Option<Value>,
}

/// JSON batching. Members run as requests of their own through the same gate (so they are
/// counted, throttled and failed one by one), at most 4 at a time as Graph hands them to
/// Outlook; `dependsOn` is not supported (members run regardless of it).
async fn batch(State(b): State<BatchState>, headers: HeaderMap, body: Bytes) -> Response {
    let parsed = serde_json::from_slice::<BatchBody>(&body)
        .map_err(|e| {
            Failure::bad_request("BadRequest", format!("Invalid batch payload format: {e}"))
        })
        .and_then(|p| {
            let ids: HashSet<&str> = p.requests.iter().map(|m| m.id.as_str()).collect();
            match p.requests.len() {
                0 => Err(Failure::bad_request(
                    "BadRequest",
                    "The batch request must contain at least one request.",
                )),
                n if n > MAX_BATCH => Err(Failure::bad_request(
                    "BadRequest",
                    format!("The batch request contains {n} requests; the maximum is {MAX_BATCH}."),
                )),
                n if ids.len() != n => Err(Failure::bad_request(
                    "BadRequest",
                    "Request ids in a batch must be unique.",
                )),
                _ => Ok(p.requests),
            }
        });
    let requests = match parsed {
        Ok(r) => r,
        Err(e) => return b.sim.error(e),
    };
    let mut responses = Vec::with_capacity(requests.len());
    for chunk in requests.chunks(MAILBOX_CONCURRENCY) {
        let runs = chunk.iter().map(|m| run_member(&b, &headers, m));
        responses.extend(futures_util::future::join_all(runs).await);
    }
    axum::Json(json!({ "responses": responses })).into_response()
}

async fn run_member(b: &BatchState, envelope: &HeaderMap, m: &BatchMember) -> Value {
    let res = match member_request(envelope, m) {
        Some(req) => b
            .members
            .clone()
            .oneshot(req)
            .await
            .unwrap_or_else(|never| match never {}),
        None => b.sim.error(Failure::bad_request(
            "BadRequest",
            format!("Invalid request URL or method for request '{}'.", m.id),
        )),
    };
    let status = res.status().as_u16();
    let is_json = res
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    let headers: Map<String, Value> = res
        .headers()
        .iter()
        .filter(|(k, _)| *k != CONTENT_LENGTH)
        .map(|(k, v)| {
            (
                title_case(k.as_str()),
                json!(v.to_str().unwrap_or_default()),
            )
        })
        .collect();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let mut out = json!({"id": m.id, "status": status, "headers": headers});
    if !bytes.is_empty() {
        out["body"] = if is_json {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        } else {
            json!(STANDARD.encode(&bytes))
        };
    }
    out
}

/// A member as a request of its own: its URL is relative to `/v1.0`; it carries the envelope's
/// `Authorization` and `Host`. `None` for absolute URLs and unusable methods or headers.
fn member_request(envelope: &HeaderMap, m: &BatchMember) -> Option<Request> {
    if m.url.contains("://") {
        return None;
    }
    let body = m
        .body
        .as_ref()
        .map_or_else(Body::empty, |b| Body::from(b.to_string()));
    let mut req = Request::new(body);
    *req.method_mut() = http::Method::from_bytes(m.method.to_ascii_uppercase().as_bytes()).ok()?;
    *req.uri_mut() = format!("/v1.0/{}", m.url.trim_start_matches('/'))
        .parse()
        .ok()?;
    let h = req.headers_mut();
    for (k, v) in &m.headers {
        h.insert(
            HeaderName::from_bytes(k.as_bytes()).ok()?,
            HeaderValue::from_str(v).ok()?,
        );
    }
    for name in [AUTHORIZATION, HOST] {
        if let Some(v) = envelope.get(&name) {
            h.insert(name, v.clone());
        }
    }
    if m.body.is_some() {
        h.entry(CONTENT_TYPE)
            .or_insert(HeaderValue::from_static("application/json"));
    }
    Some(req)
}

/// `retry-after` → `Retry-After`: Graph spells member header names that way.
fn title_case(name: &str) -> String {
    name.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// For unit tests: makes `sim` trust a new Entra sim whose app holds every role, and returns
/// a bearer header with that app's token (valid for a year of the sim's clock).
#[cfg(test)]
pub(crate) fn test_token(sim: &GraphSim, clock: &pbxgate_wire::clock::ManualClock) -> HeaderValue {
    let app = crate::entra::SimApp {
        client_id: "graph-test".into(),
        secret: Some("s".into()),
        certificate: None,
        redirect_uris: Vec::new(),
        post_logout_redirect_uris: Vec::new(),
        roles: crate::PBXGATE_ROLES.iter().map(|r| r.to_string()).collect(),
    };
    let entra = Arc::new(EntraSim::new(
        "t",
        vec![app],
        Vec::new(),
        Arc::new(clock.clone()),
    ));
    sim.trust(entra.clone());
    let token = entra
        .app_token("graph-test", 365 * 86_400)
        .unwrap_or_default();
    HeaderValue::from_str(&format!("Bearer {token}")).expect("a JWT is a header value")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Running, spawn};
    use pbxgate_wire::clock::ManualClock;
    use tokio::net::TcpListener;

    const START: UnixTime = 1_767_225_600;
    const PHOTO: &[u8] = b"\xff\xd8\xff\xe0\x00\x10JFIF-simulated";

    struct Fixture {
        sim: Arc<GraphSim>,
        clock: ManualClock,
        server: Running,
        http: reqwest::Client,
    }

    impl Fixture {
        /// `n` members `user000@contoso.com`, … and a client with an app token.
        async fn start(n: usize) -> Self {
            crate::pki::crypto();
            let clock = ManualClock::new(START);
            let sim = Arc::new(GraphSim::new(Arc::new(clock.clone())));
            for i in 0..n {
                sim.add_user(DirectoryUser::member(
                    &format!("user{i:03}@contoso.com"),
                    &format!("First{i:03}"),
                    "Last",
                ));
            }
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let server = spawn(listener, router(sim.clone()), None).unwrap();
            let mut h = reqwest::header::HeaderMap::new();
            h.insert(AUTHORIZATION, test_token(&sim, &clock));
            let http = reqwest::Client::builder()
                .default_headers(h)
                .build()
                .unwrap();
            Self {
                sim,
                clock,
                server,
                http,
            }
        }

        fn url(&self, path: &str) -> String {
            format!("{}/v1.0{path}", self.server.url())
        }

        fn id(&self, upn: &str) -> String {
            self.sim.user(upn).unwrap().id
        }

        async fn get(&self, url: &str) -> (u16, HeaderMap, Value) {
            let r = self.http.get(url).send().await.unwrap();
            let (status, headers) = (r.status().as_u16(), r.headers().clone());
            (status, headers, r.json().await.unwrap_or(Value::Null))
        }

        /// Follows nextLinks to the end: the items, the pages seen, and the deltaLink if any.
        async fn drain(&self, url: &str) -> (Vec<Value>, usize, Option<String>) {
            let (mut items, mut pages, mut next) = (Vec::new(), 0, url.to_string());
            loop {
                let (status, _, body) = self.get(&next).await;
                assert_eq!(status, 200, "{body}");
                pages += 1;
                items.extend(body["value"].as_array().unwrap().iter().cloned());
                match body["@odata.nextLink"].as_str() {
                    Some(n) => next = n.to_string(),
                    None => {
                        return (
                            items,
                            pages,
                            body["@odata.deltaLink"].as_str().map(String::from),
                        );
                    }
                }
            }
        }

        async fn batch(&self, requests: Value) -> (u16, Value) {
            let r = self
                .http
                .post(self.url("/$batch"))
                .json(&json!({ "requests": requests }))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json().await.unwrap())
        }
    }

    #[tokio::test]
    async fn users_are_listed_in_pages_with_absolute_next_links() {
        let f = Fixture::start(250).await;
        let (status, _, first) = f.get(&f.url("/users?$select=id,userPrincipalName")).await;
        assert_eq!(status, 200);
        assert_eq!(first["value"].as_array().unwrap().len(), 100);
        let next = first["@odata.nextLink"].as_str().unwrap();
        assert!(next.starts_with(&f.url("/users?$skiptoken=")), "{next}");
        assert_eq!(
            first["value"][0]["userPrincipalName"],
            "user000@contoso.com"
        );
        assert_eq!(
            first["value"][0].as_object().unwrap().len(),
            2,
            "only the selection"
        );
        let (all, pages, delta) = f.drain(&f.url("/users?$select=id,userPrincipalName")).await;
        assert_eq!((all.len(), pages, delta), (250, 3, None));
        assert_eq!(all[249]["userPrincipalName"], "user249@contoso.com");
        let upns: HashSet<&str> = all
            .iter()
            .map(|u| u["userPrincipalName"].as_str().unwrap())
            .collect();
        assert_eq!(upns.len(), 250);
        // Without $select: the default set, which leaves out accountEnabled.
        let (_, _, one) = f.get(&f.url("/users?$top=1")).await;
        assert_eq!(one["value"].as_array().unwrap().len(), 1);
        assert_eq!(one["value"][0]["displayName"], "First000 Last");
        assert!(one["value"][0].get("accountEnabled").is_none());
        assert!(one["@odata.nextLink"].is_string());
        assert_eq!(f.sim.requests_to("/v1.0/users"), 5);
    }

    #[tokio::test]
    async fn filters_select_members_and_enabled_accounts() {
        let f = Fixture::start(10).await;
        f.sim
            .update_user(&f.id("user001@contoso.com"), |u| u.account_enabled = false);
        f.sim.update_user(&f.id("user002@contoso.com"), |u| {
            u.user_type = "Guest".into()
        });
        let url = f.url("/users?$filter=userType eq 'Member' and accountEnabled eq true&$top=3");
        let (all, pages, _) = f.drain(&url).await;
        assert_eq!((all.len(), pages), (8, 3));
        assert!(
            all.iter()
                .all(|u| u["userPrincipalName"] != "user001@contoso.com")
        );
        let (status, _, body) = f
            .get(&f.url("/users?$filter=startswith(displayName,'A')"))
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("Request_UnsupportedQuery"))
        );
        let (status, _, body) = f.get(&f.url("/users?$select=nonsense")).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("Request_BadRequest"))
        );
    }

    #[tokio::test]
    async fn users_are_found_by_id_or_upn() {
        let f = Fixture::start(2).await;
        let id = f.id("user001@contoso.com");
        let (status, _, body) = f
            .get(&f.url("/users/USER001@Contoso.com?$select=id,accountEnabled"))
            .await;
        assert_eq!(status, 200);
        assert_eq!(
            (body["id"].as_str(), &body["accountEnabled"]),
            (Some(id.as_str()), &json!(true))
        );
        assert!(
            body["@odata.context"]
                .as_str()
                .unwrap()
                .ends_with("#users(id,accountEnabled)/$entity")
        );
        let (status, _, body) = f.get(&f.url(&format!("/users/{id}"))).await;
        assert_eq!(
            (status, &body["userPrincipalName"]),
            (200, &json!("user001@contoso.com"))
        );
        let (status, _, body) = f.get(&f.url("/users/nobody@contoso.com")).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("Request_ResourceNotFound"))
        );
    }

    #[tokio::test]
    async fn revoking_sign_in_sessions_moves_the_valid_from_time_shown_only_on_select() {
        let f = Fixture::start(1).await;
        let id = f.id("user000@contoso.com");
        let select = "$select=id,accountEnabled,signInSessionsValidFromDateTime";
        let url = f.url(&format!("/users/{id}?{select}"));
        let (_, _, body) = f.get(&url).await;
        assert_eq!(
            body["signInSessionsValidFromDateTime"],
            json!("2026-01-01T00:00:00Z"),
            "valid from the user's creation"
        );
        let (_, _, plain) = f.get(&f.url(&format!("/users/{id}"))).await;
        assert!(plain.get("signInSessionsValidFromDateTime").is_none());
        f.clock.advance(90);
        assert!(f.sim.revoke_sign_in_sessions(&id));
        f.sim.update_user(&id, |u| u.account_enabled = false);
        let (_, _, body) = f.get(&url).await;
        assert_eq!(
            (
                &body["signInSessionsValidFromDateTime"],
                &body["accountEnabled"]
            ),
            (&json!("2026-01-01T00:01:30Z"), &json!(false))
        );
        assert!(!f.sim.revoke_sign_in_sessions("no-such-user"));
    }

    #[tokio::test]
    async fn delta_rounds_report_each_change_once_with_the_latest_state() {
        let f = Fixture::start(5).await;
        f.sim.set_page_size(2);
        let start =
            f.url("/users/delta?$select=displayName,userPrincipalName,accountEnabled&$top=1");
        let (items, pages, link) = f.drain(&start).await;
        assert_eq!((items.len(), pages), (5, 3), "$top is ignored; page size 2");
        assert_eq!(
            items[0].as_object().unwrap().len(),
            4,
            "selection plus id: {}",
            items[0]
        );
        let link = link.unwrap();
        assert!(
            link.starts_with(&f.url("/users/delta?$deltatoken=")),
            "{link}"
        );

        let (renamed, gone) = (f.id("user001@contoso.com"), f.id("user002@contoso.com"));
        let added = DirectoryUser::member("new@contoso.com", "New", "Person");
        f.sim.add_user(added.clone());
        f.sim
            .update_user(&renamed, |u| u.display_name = "Renamed".into());
        f.sim
            .update_user(&renamed, |u| u.display_name = "Renamed Twice".into());
        f.sim.delete_user(&gone, false);
        // Neither surfaces: department is not selected, and photos are not in delta.
        f.sim.update_user(&f.id("user003@contoso.com"), |u| {
            u.department = Some("Sales".into())
        });
        f.sim
            .set_photo(&f.id("user004@contoso.com"), Some(PHOTO.to_vec()));

        let (items, pages, link) = f.drain(&link).await;
        assert_eq!((items.len(), pages), (3, 2), "{items:?}");
        let by_id = |id: &str| items.iter().find(|i| i["id"] == id).cloned().unwrap();
        assert_eq!(by_id(&renamed)["displayName"], "Renamed Twice");
        assert_eq!(
            by_id(&gone),
            json!({"id": gone, "@removed": {"reason": "changed"}})
        );
        assert_eq!(by_id(&added.id)["userPrincipalName"], "new@contoso.com");
        assert_eq!(by_id(&added.id)["accountEnabled"], true);

        let (items, pages, link) = f.drain(&link.unwrap()).await;
        assert_eq!((items.len(), pages), (0, 1));

        f.sim.delete_user(&gone, true);
        f.sim.update_user(&renamed, |u| u.account_enabled = false);
        let (items, _, _) = f.drain(&link.unwrap()).await;
        assert_eq!(items.len(), 2);
        assert_eq!(by_id_in(&items, &gone)["@removed"]["reason"], "deleted");
        assert_eq!(by_id_in(&items, &renamed)["accountEnabled"], false);
    }

    fn by_id_in<'a>(items: &'a [Value], id: &str) -> &'a Value {
        items.iter().find(|i| i["id"] == id).unwrap()
    }

    #[tokio::test]
    async fn latest_delta_token_starts_from_now() {
        let f = Fixture::start(3).await;
        let (status, _, body) = f
            .get(&f.url("/users/delta?$deltatoken=latest&$select=displayName"))
            .await;
        assert_eq!(status, 200);
        assert_eq!(body["value"], json!([]));
        let link = body["@odata.deltaLink"].as_str().unwrap().to_string();
        f.sim.update_user(&f.id("user000@contoso.com"), |u| {
            u.display_name = "Changed".into()
        });
        let (items, _, _) = f.drain(&link).await;
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["displayName"], "Changed");
        assert_eq!(items[0].as_object().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn expired_delta_tokens_answer_410_with_a_fresh_start() {
        let f = Fixture::start(3).await;
        f.sim.set_page_size(2);
        let (_, _, first) = f.get(&f.url("/users/delta?$select=displayName")).await;
        let skip = first["@odata.nextLink"].as_str().unwrap().to_string();
        let (_, _, link) = f.drain(&f.url("/users/delta?$select=displayName")).await;
        let link = link.unwrap();
        f.sim.expire_delta_tokens();
        for url in [&link, &skip] {
            let (status, headers, body) = f.get(url).await;
            assert_eq!(status, 410);
            assert_eq!(body["error"]["code"], "syncStateNotFound");
            assert_eq!(
                headers[LOCATION],
                f.url("/users/delta?$select=displayName").as_str()
            );
        }
        let (status, headers, _) = f.get(&f.url("/users/delta?$deltatoken=bogus")).await;
        assert_eq!(status, 410);
        assert_eq!(headers[LOCATION], f.url("/users/delta").as_str());
        // A fresh round works, and its token lasts 7 days by the clock.
        let (items, _, link) = f.drain(&f.url("/users/delta?$select=displayName")).await;
        assert_eq!(items.len(), 3);
        f.clock.advance(DELTA_TOKEN_LIFETIME - 1);
        assert_eq!(f.get(link.as_ref().unwrap()).await.0, 200);
        f.clock.advance(1);
        assert_eq!(f.get(&link.unwrap()).await.0, 410);
    }

    #[tokio::test]
    async fn throttling_and_failures_are_injected_then_cleared() {
        let f = Fixture::start(1).await;
        f.sim.throttle_next(1, "0.2");
        f.sim.fail_next(1, StatusCode::SERVICE_UNAVAILABLE);
        let (status, headers, body) = f.get(&f.url("/users")).await;
        assert_eq!(status, 429);
        assert_eq!(headers[RETRY_AFTER], "0.2");
        assert_eq!(body["error"]["code"], "TooManyRequests");
        assert!(body["error"]["innerError"]["request-id"].is_string());
        let (status, _, body) = f.get(&f.url("/users")).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (503, Some("serviceNotAvailable"))
        );
        let (status, _, body) = f.get(&f.url("/users")).await;
        assert_eq!(
            (status, body["value"].as_array().map(Vec::len)),
            (200, Some(1))
        );
        assert_eq!((f.sim.requests(), f.sim.requests_to("/v1.0/users")), (3, 3));
    }

    #[tokio::test]
    async fn batches_run_members_one_by_one() {
        let f = Fixture::start(2).await;
        let (with, without) = (f.id("user000@contoso.com"), f.id("user001@contoso.com"));
        f.sim.set_photo(&with, Some(PHOTO.to_vec()));
        f.sim.throttle_next(1, "3");
        let (status, body) = f
            .batch(json!([
                {"id": "1", "method": "GET", "url": format!("/users/{with}?$select=displayName")},
                {"id": "2", "method": "GET", "url": format!("/users/{with}/photo/$value")},
                {"id": "3", "method": "GET", "url": format!("users/{without}/photo/$value")},
            ]))
            .await;
        assert_eq!(status, 200, "{body}");
        let r = body["responses"].as_array().unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!((&r[0]["id"], &r[0]["status"]), (&json!("1"), &json!(429)));
        assert_eq!(r[0]["headers"]["Retry-After"], "3");
        assert_eq!(r[0]["body"]["error"]["code"], "TooManyRequests");
        assert_eq!((&r[1]["id"], &r[1]["status"]), (&json!("2"), &json!(200)));
        assert_eq!(r[1]["headers"]["Content-Type"], "image/jpeg");
        assert_eq!(
            STANDARD.decode(r[1]["body"].as_str().unwrap()).unwrap(),
            PHOTO
        );
        assert_eq!((&r[2]["id"], &r[2]["status"]), (&json!("3"), &json!(404)));
        assert_eq!(r[2]["body"]["error"]["code"], "ImageNotFound");
        assert_eq!((f.sim.batch_calls(), f.sim.requests()), (1, 4));
        assert_eq!(f.sim.requests_to(&format!("/v1.0/users/{with}/photo")), 1);
        // The retry of the throttled member alone.
        let (_, body) = f
            .batch(json!([{"id": "1", "method": "GET", "url": format!("/users/{with}?$select=displayName")}]))
            .await;
        assert_eq!(body["responses"][0]["status"], 200);
        assert_eq!(body["responses"][0]["body"]["displayName"], "First000 Last");
    }

    #[tokio::test]
    async fn batches_over_20_members_are_rejected() {
        let f = Fixture::start(1).await;
        let members: Vec<Value> = (0..21)
            .map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/users"}))
            .collect();
        let (status, body) = f.batch(json!(members)).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("BadRequest"))
        );
        assert_eq!(f.sim.requests_to("/v1.0/users"), 0, "no member ran");
        let (status, body) = f.batch(json!(members[..20])).await;
        assert_eq!(status, 200);
        assert_eq!(body["responses"].as_array().unwrap().len(), 20);
    }

    #[tokio::test]
    async fn a_fifth_concurrent_request_to_a_mailbox_is_throttled() {
        let f = Arc::new(Fixture::start(2).await);
        let (id, other) = (f.id("user000@contoso.com"), f.id("user001@contoso.com"));
        f.sim.set_photo(&id, Some(PHOTO.to_vec()));
        f.sim.set_photo(&other, Some(PHOTO.to_vec()));
        f.sim.set_latency(Duration::from_millis(400));
        let calls = (0..5).map(|_| {
            let (f, url) = (f.clone(), f.url(&format!("/users/{id}/photo/$value")));
            tokio::spawn(async move {
                let r = f.http.get(url).send().await.unwrap();
                let retry = r.headers().get(RETRY_AFTER).cloned();
                (r.status().as_u16(), retry, r.bytes().await.unwrap())
            })
        });
        let other_url = f.url(&format!("/users/{other}/photo"));
        let other_call = f.get(&other_url);
        let (results, (other_status, _, meta)) =
            tokio::join!(futures_util::future::join_all(calls), other_call);
        let results: Vec<_> = results.into_iter().map(Result::unwrap).collect();
        assert_eq!(results.iter().filter(|r| r.0 == 200).count(), 4);
        let throttled: Vec<_> = results.iter().filter(|r| r.0 == 429).collect();
        assert_eq!(throttled.len(), 1);
        assert_eq!(throttled[0].1.as_ref().unwrap(), "1");
        let body: Value = serde_json::from_slice(&throttled[0].2).unwrap();
        assert_eq!(body["error"]["code"], "ApplicationThrottled");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("MailboxConcurrency")
        );
        assert_eq!(
            (other_status, &meta["@odata.mediaContentType"]),
            (200, &json!("image/jpeg"))
        );
        // The slots are free again.
        f.sim.set_latency(Duration::ZERO);
        assert_eq!(
            f.get(&f.url(&format!("/users/{id}/photo/$value"))).await.0,
            200
        );
    }

    #[tokio::test]
    async fn requests_without_an_app_token_are_refused() {
        let f = Fixture::start(1).await;
        let r = reqwest::Client::new()
            .get(f.url("/users"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        assert!(r.headers().contains_key(WWW_AUTHENTICATE));
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
        assert_eq!(body["error"]["message"], "Access token is empty.");
        let r = reqwest::Client::new()
            .post(f.url("/$batch"))
            .bearer_auth("at-user-token")
            .json(&json!({"requests": [{"id": "1", "method": "GET", "url": "/users"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        assert_eq!(
            f.sim.requests_to("/v1.0/users"),
            1,
            "the batch's member never ran"
        );
    }

    #[tokio::test]
    async fn tokens_need_the_endpoints_role_and_the_trusted_issuers_signature() {
        let f = Fixture::start(1).await;
        let app = crate::entra::SimApp {
            client_id: "contacts-only".into(),
            secret: None,
            certificate: None,
            redirect_uris: Vec::new(),
            post_logout_redirect_uris: Vec::new(),
            roles: vec!["Contacts.Read".into()],
        };
        let clock = Arc::new(f.clock.clone());
        let other = EntraSim::new("other-tenant", vec![app], Vec::new(), clock);
        let token = other.app_token("contacts-only", 600).unwrap();
        // Not the trusted issuer's token (it is signed with the same pooled key, but another
        // tenant's issuer): refused.
        let r = reqwest::Client::new()
            .get(f.url("/users"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        let other = Arc::new(other);
        f.sim.trust(other.clone());
        let get = |path: &'static str| {
            let token = token.clone();
            let url = f.url(path);
            async move {
                let r = reqwest::Client::new()
                    .get(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            }
        };
        let (status, body) = get("/users?$top=1").await;
        assert_eq!(status, 403);
        assert_eq!(body["error"]["code"], "Authorization_RequestDenied");
        assert_eq!(
            body["error"]["message"],
            "Insufficient privileges to complete the operation."
        );
        let (status, _) = get("/users/user000@contoso.com/contactFolders").await;
        assert_ne!(status, 403, "Contacts.Read reads contact folders");
        f.clock.advance(601);
        let (status, body) = get("/users/user000@contoso.com/contactFolders").await;
        assert_eq!(status, 401, "{body}");
    }
}

/// `getSchedule`'s body; the concept page sends PascalCase keys, the reference camelCase.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScheduleQuery {
    #[serde(alias = "Schedules")]
    schedules: Vec<String>,
    #[serde(alias = "StartTime")]
    start_time: DateTimeZone,
    #[serde(alias = "EndTime")]
    end_time: DateTimeZone,
    #[serde(default, alias = "AvailabilityViewInterval")]
    availability_view_interval: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DateTimeZone {
    date_time: String,
    #[serde(default)]
    time_zone: Option<String>,
}

/// `2026-11-29T10:00:00` (optionally with fractional seconds) in UTC → Unix seconds.
fn parse_utc(d: &DateTimeZone) -> Option<UnixTime> {
    let tz = d.time_zone.as_deref().unwrap_or("UTC");
    if !tz.eq_ignore_ascii_case("UTC") {
        return None; // the simulator speaks UTC only, as pbxgate does
    }
    pbxgate_wire::clock::parse_utc(&d.date_time)
}

/// Free/busy digit of a status (`availabilityView`): the busiest event of the slot wins.
fn busyness(status: &str) -> u8 {
    match status.to_ascii_lowercase().as_str() {
        "tentative" => 1,
        "busy" => 2,
        "oof" => 3,
        "workingelsewhere" => 4,
        _ => 0,
    }
}

/// `POST /users/{id|upn}/calendar/getSchedule` (calendar-getschedule.md): up to 20 schedules,
/// a window under 62 days, times in UTC. Each schedule is answered on its own: its items
/// overlapping the window, an `availabilityView`, or an `error` for an address Exchange
/// cannot resolve.
async fn get_schedule(
    State(sim): State<Arc<GraphSim>>,
    Path(_caller): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let base = sim.base(&headers);
    let q: ScheduleQuery = match serde_json::from_slice(&body) {
        Ok(q) => q,
        Err(e) => {
            return sim.error(Failure::bad_request(
                "ErrorInvalidRequest",
                format!("The request body is invalid: {e}"),
            ));
        }
    };
    let interval = q
        .availability_view_interval
        .as_ref()
        .and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()))
        .unwrap_or(30);
    let window = parse_utc(&q.start_time).zip(parse_utc(&q.end_time));
    let problem = match window {
        _ if q.schedules.is_empty() || q.schedules.len() > 20 => {
            Some("Schedules must hold between 1 and 20 addresses.")
        }
        _ if !(5..=1440).contains(&interval) => {
            Some("AvailabilityViewInterval must be between 5 and 1440 minutes.")
        }
        None => Some("StartTime and EndTime must be UTC date-times."),
        Some((start, end)) if end <= start || end - start >= 62 * 86_400 => {
            Some("The time window must be positive and shorter than 62 days.")
        }
        Some(_) => None,
    };
    if let Some(message) = problem {
        return sim.error(Failure::bad_request("ErrorInvalidRequest", message));
    }
    let (start, end) = window.unwrap_or_default();
    let value: Vec<Value> = sim.with(|s| {
        q.schedules
            .iter()
            .map(|address| schedule_of(s, address, start, end, interval * 60))
            .collect()
    });
    axum::Json(json!({
        "@odata.context": format!("{base}/v1.0/$metadata#Collection(microsoft.graph.scheduleInformation)"),
        "value": value,
    }))
    .into_response()
}

fn schedule_of(s: &GraphState, address: &str, start: UnixTime, end: UnixTime, slot: i64) -> Value {
    let user = s
        .find(address)
        .filter(|e| e.user.mailbox == Mailbox::Exchange);
    let Some(user) = user else {
        return json!({"scheduleId": address, "error": {
            "message": format!("Failed to resolve the e-mail address {address} to a mailbox."),
            "responseCode": "ErrorMailRecipientNotFound"}});
    };
    let mut events: Vec<&SimEvent> = s
        .events
        .get(&user.user.id.to_lowercase())
        .map(|v| {
            v.iter()
                .filter(|e| e.start < end && e.end > start)
                .collect()
        })
        .unwrap_or_default();
    events.sort_by_key(|e| e.start);
    let view: String = (0..)
        .map(|i| start + i * slot)
        .take_while(|t| *t < end)
        .map(|t| {
            let busiest = events
                .iter()
                .filter(|e| e.start < t + slot && e.end > t)
                .map(|e| busyness(&e.show_as))
                .max()
                .unwrap_or(0);
            char::from(b'0' + busiest)
        })
        .collect();
    let items: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({"isPrivate": false, "status": e.show_as,
            "start": {"dateTime": pbxgate_wire::clock::format_utc(e.start), "timeZone": "UTC"},
            "end": {"dateTime": pbxgate_wire::clock::format_utc(e.end), "timeZone": "UTC"}})
        })
        .collect();
    json!({"scheduleId": address, "availabilityView": view, "scheduleItems": items,
        "workingHours": {"daysOfWeek": ["monday","tuesday","wednesday","thursday","friday"],
            "startTime": "08:00:00.0000000", "endTime": "17:00:00.0000000",
            "timeZone": {"name": "UTC"}}})
}
