//! Phonebooks in the simulated 3CX: `/xapi/v1/Contacts` (GET with `$filter` on `Tag`,
//! `$select`, `$top` ≤ 100, `$skip`; POST) and `/xapi/v1/Contacts({Id})` (GET, PATCH, DELETE),
//! with 3CX's OData error shape. The API client's token reaches the company phonebook; a token
//! impersonating an extension reaches that extension's personal phonebook, which is how
//! pbxgate assumes the real PBX behaves (undocumented; README, "Contact sync").

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::{ODataQuery, PbxSim, PbxState, Subject, odata_error, project};

/// The writable fields of a `Pbx.Contact`.
const FIELDS: &[&str] = &[
    "FirstName",
    "LastName",
    "CompanyName",
    "Title",
    "Department",
    "Email",
    "PhoneNumber",
    "Mobile2",
    "Home",
    "Business",
    "Business2",
    "BusinessFax",
    "Other",
    "Pager",
    "Tag",
    "ContactType",
];

pub(super) struct Phonebooks {
    company: Vec<Map<String, Value>>,
    personal: BTreeMap<String, Vec<Map<String, Value>>>,
    next_id: i64,
    writes: usize,
    load: Load,
}

impl Default for Phonebooks {
    fn default() -> Self {
        Self {
            company: Vec::new(),
            personal: BTreeMap::new(),
            next_id: 0,
            writes: 0,
            load: Load {
                limit: Some(DEFAULT_LIMIT),
                busy: StatusCode::TOO_MANY_REQUESTS,
                ..Load::default()
            },
        }
    }
}

/// Phonebook calls served at once by default. Real 3CX publishes no limit (README, "Contact
/// sync"); the simulator has one so that a client sending too much at once is seen.
const DEFAULT_LIMIT: usize = 8;

/// Phonebook calls in progress, the limit beyond which they are refused, and the time each
/// takes (a PBX some way off).
#[derive(Default)]
struct Load {
    now: usize,
    most: usize,
    writes_now: usize,
    most_writes: usize,
    limit: Option<usize>,
    /// 429, or 503: both with `Retry-After: 1`.
    busy: StatusCode,
    refused: usize,
    latency: Duration,
}

impl Phonebooks {
    fn book(&mut self, who: &Subject) -> &mut Vec<Map<String, Value>> {
        match who {
            Subject::ApiClient => &mut self.company,
            Subject::Extension(n) => self.personal.entry(n.clone()).or_default(),
        }
    }
}

fn id_of(c: &Map<String, Value>) -> i64 {
    c.get("Id").and_then(Value::as_i64).unwrap_or(0)
}

fn apply(c: &mut Map<String, Value>, body: &Value) {
    for f in FIELDS {
        if let Some(v) = body.get(*f) {
            c.insert((*f).to_string(), v.clone());
        }
    }
}

impl PbxSim {
    fn books<T>(&self, f: impl FnOnce(&mut Phonebooks) -> T) -> T {
        self.with(|s| f(&mut s.contacts))
    }

    /// The company phonebook as 3CX holds it now.
    pub fn company_contacts(&self) -> Vec<Value> {
        self.books(|b| b.company.iter().cloned().map(Value::Object).collect())
    }

    /// The personal phonebook of extension `number`.
    pub fn personal_contacts(&self, number: &str) -> Vec<Value> {
        self.books(|b| {
            b.personal
                .get(number)
                .map(|c| c.iter().cloned().map(Value::Object).collect())
                .unwrap_or_default()
        })
    }

    /// Adds a company phonebook entry by hand, as an admin would in the 3CX console; its id.
    pub fn add_company_contact(&self, fields: Value) -> i64 {
        self.books(|b| {
            b.next_id += 1;
            let mut c = Map::new();
            c.insert("Id".into(), json!(b.next_id));
            apply(&mut c, &fields);
            b.company.push(c);
            b.next_id
        })
    }

    /// Deletes a company phonebook entry by hand.
    pub fn remove_company_contact(&self, id: i64) {
        self.books(|b| b.company.retain(|c| id_of(c) != id));
    }

    /// Phonebook calls beyond `limit` at once (`None`: any number) are answered `busy` (429
    /// or 503) with `Retry-After: 1`, as a real server might; 3CX's own limit is unknown.
    pub fn limit_contact_calls(&self, limit: Option<usize>, busy: StatusCode) {
        self.books(|b| (b.load.limit, b.load.busy) = (limit, busy));
    }

    /// Each phonebook call takes this long.
    pub fn set_contacts_latency(&self, latency: Duration) {
        self.books(|b| b.load.latency = latency);
    }

    /// Phonebook calls refused as over the limit so far.
    pub fn contact_calls_refused(&self) -> usize {
        self.books(|b| b.load.refused)
    }

    /// The most phonebook calls served at the same time so far.
    pub fn most_contact_calls_at_once(&self) -> usize {
        self.books(|b| b.load.most)
    }

    /// The most phonebook writes (POST, PATCH, DELETE) served at the same time so far.
    pub fn most_contact_writes_at_once(&self) -> usize {
        self.books(|b| b.load.most_writes)
    }

    /// Phonebook writes (POST, PATCH, DELETE on Contacts) served so far.
    pub fn contact_writes(&self) -> usize {
        self.books(|b| b.writes)
    }
}

/// Counts a write; a PBX told to go down after so many writes gets closer to it.
fn wrote(s: &mut PbxState) {
    s.contacts.writes += 1;
    if let Some(n) = s.writes_left.as_mut() {
        *n = n.saturating_sub(1);
    }
}

/// `$filter`: `startswith(Tag,'…')` or `Tag eq '…'`; anything else is a 400.
fn tag_filter(filter: &str) -> Result<(bool, String), String> {
    let literal = |v: &str| {
        v.trim()
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .map(|v| v.replace("''", "'"))
            .ok_or_else(|| format!("expected a string literal in {filter:?}"))
    };
    let f = filter.trim();
    if let Some(rest) = f
        .strip_prefix("startswith(Tag,")
        .and_then(|r| r.strip_suffix(')'))
    {
        return Ok((true, literal(rest)?));
    }
    if let Some(rest) = f.strip_prefix("Tag eq ") {
        return Ok((false, literal(rest)?));
    }
    Err(format!("unsupported $filter {filter:?}"))
}

/// Serves the phonebook paths; every other request goes on to the rest of the simulator.
pub(super) async fn intercept(
    State(sim): State<Arc<PbxSim>>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_string();
    let entity = path
        .strip_prefix("/xapi/v1/Contacts(")
        .and_then(|r| r.strip_suffix(')'))
        .map(|id| id.parse::<i64>().unwrap_or(-1));
    if path != "/xapi/v1/Contacts" && entity.is_none() {
        return next.run(req).await;
    }
    sim.with(|s| s.requests += 1);
    if sim.failing() {
        return odata_error(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
    }
    let Some(who) = sim.bearer(req.headers()) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let write = req.method() != Method::GET;
    let Some(latency) = sim.books(|b| enter(b, write)) else {
        let status = sim.books(|b| b.load.busy);
        let mut res = odata_error(status, "Too many requests");
        res.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
        return res;
    };
    let _leave = Leave(sim.clone(), write);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let method = req.method().clone();
    let query = Query::<ODataQuery>::try_from_uri(req.uri()).map(|q| q.0);
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    match (method, entity) {
        (Method::GET, None) => match query {
            Ok(q) => list(&sim, &who, q),
            Err(e) => odata_error(StatusCode::BAD_REQUEST, &e.to_string()),
        },
        (Method::POST, None) => create(&sim, &who, body.unwrap_or(Value::Null)),
        (Method::GET, Some(id)) => {
            sim.with(
                |s| match s.contacts.book(&who).iter().find(|c| id_of(c) == id) {
                    Some(c) => axum::Json(Value::Object(c.clone())).into_response(),
                    None => not_found(id),
                },
            )
        }
        (Method::PATCH, Some(id)) => sim.with(|s| {
            let Some(c) = s.contacts.book(&who).iter_mut().find(|c| id_of(c) == id) else {
                return not_found(id);
            };
            apply(c, &body.unwrap_or(Value::Null));
            wrote(s);
            StatusCode::NO_CONTENT.into_response()
        }),
        (Method::DELETE, Some(id)) => sim.with(|s| {
            let book = s.contacts.book(&who);
            let before = book.len();
            book.retain(|c| id_of(c) != id);
            if book.len() == before {
                return not_found(id);
            }
            wrote(s);
            StatusCode::NO_CONTENT.into_response()
        }),
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

/// One more call in progress, and how long it takes; `None` when it is one too many.
fn enter(b: &mut Phonebooks, write: bool) -> Option<Duration> {
    let l = &mut b.load;
    if l.limit.is_some_and(|max| l.now >= max) {
        l.refused += 1;
        return None;
    }
    l.now += 1;
    l.most = l.most.max(l.now);
    if write {
        l.writes_now += 1;
        l.most_writes = l.most_writes.max(l.writes_now);
    }
    Some(l.latency)
}

/// Ends a call (a write: true) in progress, however its handler ends.
struct Leave(Arc<PbxSim>, bool);

impl Drop for Leave {
    fn drop(&mut self) {
        let write = self.1;
        self.0.books(|b| {
            b.load.now -= 1;
            b.load.writes_now -= usize::from(write);
        });
    }
}

fn not_found(id: i64) -> Response {
    odata_error(StatusCode::NOT_FOUND, &format!("Contacts({id}) not found"))
}

fn list(sim: &PbxSim, who: &Subject, q: ODataQuery) -> Response {
    if q.top.is_some_and(|t| t > 100) {
        return odata_error(
            StatusCode::BAD_REQUEST,
            "The limit of '100' for Top query has been exceeded.",
        );
    }
    let filter = match q.filter.as_deref().map(tag_filter).transpose() {
        Ok(f) => f,
        Err(msg) => return odata_error(StatusCode::BAD_REQUEST, &msg),
    };
    let all: Vec<Map<String, Value>> = sim.with(|s| s.contacts.book(who).clone());
    let page: Vec<Value> = all
        .into_iter()
        .filter(|c| {
            let tag = c.get("Tag").and_then(Value::as_str).unwrap_or("");
            match &filter {
                Some((true, p)) => tag.starts_with(p.as_str()),
                Some((false, t)) => tag == t,
                None => true,
            }
        })
        .skip(q.skip.unwrap_or(0))
        .take(q.top.unwrap_or(usize::MAX))
        .map(|c| project(Value::Object(c), q.select.as_deref()))
        .collect();
    axum::Json(json!({ "value": page })).into_response()
}

fn create(sim: &PbxSim, who: &Subject, body: Value) -> Response {
    if !body.is_object() {
        return odata_error(StatusCode::BAD_REQUEST, "A contact object is required");
    }
    sim.with(|s| {
        s.contacts.next_id += 1;
        let mut c = Map::new();
        c.insert("Id".into(), json!(s.contacts.next_id));
        apply(&mut c, &body);
        s.contacts.book(who).push(c.clone());
        wrote(s);
        (StatusCode::CREATED, axum::Json(Value::Object(c))).into_response()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tag_filters_are_understood() {
        assert_eq!(
            tag_filter("startswith(Tag,'pbxgate:')"),
            Ok((true, "pbxgate:".into()))
        );
        assert_eq!(tag_filter("Tag eq 'o''x'"), Ok((false, "o'x".into())));
        assert!(tag_filter("FirstName eq 'x'").is_err());
    }
}
