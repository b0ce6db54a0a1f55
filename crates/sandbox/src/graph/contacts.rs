//! Outlook contacts in the simulated Graph (graph-entra.md §2.2, resources/contact.md,
//! api/contact-delta.md): `GET /users/{id|upn}/contactFolders` (the default folder's children,
//! each with its `parentFolderId`), `…/contactFolders/{id}/childFolders`, `GET /users/{u}/contacts`
//! (the default folder, `$top`), and per-folder delta `…/contactFolders/{id}/contacts/delta`
//! (`$select`, `Prefer: odata.maxpagesize`, skip/delta tokens, `@removed`, 410
//! `syncStateNotFound` once tokens are expired). A user without a mailbox answers 404
//! `MailboxNotEnabledForRESTAPI`; one blocked by an application access policy 403
//! `ErrorAccessDenied`. Requests pass the simulator's gate, so they are counted, throttled,
//! failed and held to 4 concurrent requests per mailbox like every other Outlook call.
//!
//! Contact ids stay the same when a contact moves between folders (as with Graph's immutable
//! ids); the move shows as `@removed` in the old folder's delta and a change in the new one's.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::header::LOCATION;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::{Failure, GraphSim, Options, new_guid, new_token, options};

/// An Outlook contact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimContact {
    pub given_name: String,
    pub surname: String,
    /// Empty: "given surname".
    pub display_name: String,
    pub company_name: Option<String>,
    pub department: Option<String>,
    pub job_title: Option<String>,
    pub business_phones: Vec<String>,
    pub home_phones: Vec<String>,
    pub mobile_phone: Option<String>,
    pub emails: Vec<String>,
}

impl SimContact {
    /// A person with a mobile number and an e-mail address made from the names.
    pub fn person(given_name: &str, surname: &str, mobile: &str) -> Self {
        Self {
            given_name: given_name.into(),
            surname: surname.into(),
            mobile_phone: Some(mobile.into()),
            emails: vec![format!(
                "{}.{}@example.com",
                given_name.to_lowercase(),
                surname.to_lowercase()
            )],
            ..Default::default()
        }
    }
}

/// How a mailbox answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailboxAccess {
    Open,
    /// No Exchange Online mailbox (no licence, on-premises, guest).
    NoMailbox,
    /// Blocked by an application access policy.
    Denied,
}

struct Item {
    id: String,
    folder: String,
    contact: SimContact,
    changed: u64,
}

struct Tombstone {
    id: String,
    folder: String,
    at: u64,
}

struct Folder {
    id: String,
    name: String,
    /// `None` for the default folder.
    parent: Option<String>,
}

struct Mailbox {
    default_folder: String,
    folders: Vec<Folder>,
    items: Vec<Item>,
    tombstones: Vec<Tombstone>,
    access: MailboxAccess,
}

#[derive(Clone)]
struct Token {
    folder: String,
    since: u64,
    epoch: u64,
}

struct ContactPages {
    items: Vec<Value>,
    offset: usize,
    size: usize,
    token: Token,
}

#[derive(Default)]
pub(super) struct ContactsState {
    mailboxes: Vec<Mailbox>,
    /// Lower-case id and UPN → index in `mailboxes`.
    index: HashMap<String, usize>,
    seq: u64,
    tokens: HashMap<String, Token>,
    pages: HashMap<String, ContactPages>,
}

impl ContactsState {
    fn find(&mut self, key: &str) -> Option<&mut Mailbox> {
        let i = *self.index.get(&key.to_lowercase())?;
        self.mailboxes.get_mut(i)
    }
}

fn folder_id() -> String {
    format!("AQMkAD{}", new_guid().replace('-', ""))
}

fn contact_json(i: &Item, select: Option<&[String]>) -> Value {
    let c = &i.contact;
    let display = if c.display_name.is_empty() {
        format!("{} {}", c.given_name, c.surname).trim().to_string()
    } else {
        c.display_name.clone()
    };
    let empty_null = |s: &str| if s.is_empty() { Value::Null } else { json!(s) };
    let all = json!({
        "id": i.id, "parentFolderId": i.folder, "displayName": display,
        "givenName": empty_null(&c.given_name), "surname": empty_null(&c.surname),
        "companyName": c.company_name, "department": c.department, "jobTitle": c.job_title,
        "businessPhones": c.business_phones, "homePhones": c.home_phones,
        "mobilePhone": c.mobile_phone,
        "emailAddresses": c.emails.iter().map(|e| json!({"name": e, "address": e})).collect::<Vec<_>>(),
    });
    match (select, all) {
        (Some(keep), Value::Object(m)) => Value::Object(
            m.into_iter()
                .filter(|(k, _)| k == "id" || keep.iter().any(|s| s == k))
                .collect(),
        ),
        (_, v) => v,
    }
}

impl GraphSim {
    fn contacts<T>(&self, f: impl FnOnce(&mut ContactsState) -> T) -> T {
        let mut guard = self.contacts.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// A mailbox of its own (e.g. a shared mailbox, which is a user object in Entra).
    pub fn add_mailbox(&self, id: &str, upn: &str) {
        self.contacts(|s| {
            if s.find(id).is_none() {
                let i = s.mailboxes.len();
                s.index.insert(id.to_lowercase(), i);
                s.index.insert(upn.to_lowercase(), i);
                s.mailboxes.push(Mailbox {
                    default_folder: folder_id(),
                    folders: Vec::new(),
                    items: Vec::new(),
                    tombstones: Vec::new(),
                    access: MailboxAccess::Open,
                });
            }
        })
    }

    /// The mailbox `key` (id or UPN); a directory user gets an empty one on first use.
    fn ensure_mailbox(&self, key: &str) -> bool {
        if self.contacts(|s| s.find(key).is_some()) {
            return true;
        }
        match self.user(key) {
            Some(u) => {
                self.add_mailbox(&u.id, &u.user_principal_name);
                true
            }
            None => false,
        }
    }

    fn edit_mailbox<T>(&self, key: &str, f: impl FnOnce(&mut Mailbox, u64) -> T) -> Option<T> {
        if !self.ensure_mailbox(key) {
            return None;
        }
        self.contacts(|s| {
            s.seq += 1;
            let seq = s.seq;
            s.find(key).map(|m| f(m, seq))
        })
    }

    pub fn set_mailbox_access(&self, key: &str, access: MailboxAccess) {
        self.edit_mailbox(key, |m, _| m.access = access);
    }

    /// A new contact folder under `parent` (`None`: under the default folder); its id.
    pub fn add_contact_folder(&self, mailbox: &str, name: &str, parent: Option<&str>) -> String {
        let id = folder_id();
        self.edit_mailbox(mailbox, |m, _| {
            let parent = parent.map_or_else(|| m.default_folder.clone(), str::to_string);
            m.folders.push(Folder {
                id: id.clone(),
                name: name.into(),
                parent: Some(parent),
            });
        });
        id
    }

    /// A new contact in `folder` (`None`: the default folder); its id.
    pub fn add_contact(&self, mailbox: &str, folder: Option<&str>, contact: SimContact) -> String {
        let id = format!("AAMkAD{}", new_guid().replace('-', ""));
        self.edit_mailbox(mailbox, |m, seq| {
            let folder = folder.map_or_else(|| m.default_folder.clone(), str::to_string);
            m.items.push(Item {
                id: id.clone(),
                folder,
                contact,
                changed: seq,
            });
        });
        id
    }

    /// Edits a contact; a delta change of its folder.
    pub fn update_contact(&self, mailbox: &str, id: &str, f: impl FnOnce(&mut SimContact)) {
        self.edit_mailbox(mailbox, |m, seq| {
            if let Some(i) = m.items.iter_mut().find(|i| i.id == id) {
                f(&mut i.contact);
                i.changed = seq;
            }
        });
    }

    /// Moves a contact to `folder` (`None`: the default folder).
    pub fn move_contact(&self, mailbox: &str, id: &str, folder: Option<&str>) {
        self.edit_mailbox(mailbox, |m, seq| {
            let to = folder.map_or_else(|| m.default_folder.clone(), str::to_string);
            if let Some(i) = m.items.iter_mut().find(|i| i.id == id) {
                let from = std::mem::replace(&mut i.folder, to);
                i.changed = seq;
                m.tombstones.push(Tombstone {
                    id: id.into(),
                    folder: from,
                    at: seq,
                });
            }
        });
    }

    pub fn delete_contact(&self, mailbox: &str, id: &str) {
        self.edit_mailbox(mailbox, |m, seq| {
            if let Some(pos) = m.items.iter().position(|i| i.id == id) {
                let i = m.items.remove(pos);
                m.tombstones.push(Tombstone {
                    id: i.id,
                    folder: i.folder,
                    at: seq,
                });
            }
        });
    }

    /// Deletes a folder with its subfolders and contacts; its delta link then answers 404.
    pub fn delete_contact_folder(&self, mailbox: &str, folder: &str) {
        self.edit_mailbox(mailbox, |m, seq| {
            let mut doomed = vec![folder.to_string()];
            let mut i = 0;
            while i < doomed.len() {
                let parent = doomed[i].clone();
                doomed.extend(
                    m.folders
                        .iter()
                        .filter(|f| f.parent.as_deref() == Some(parent.as_str()))
                        .map(|f| f.id.clone()),
                );
                i += 1;
            }
            m.folders.retain(|f| !doomed.contains(&f.id));
            let (gone, kept): (Vec<Item>, Vec<Item>) = std::mem::take(&mut m.items)
                .into_iter()
                .partition(|i| doomed.contains(&i.folder));
            m.items = kept;
            m.tombstones.extend(gone.into_iter().map(|i| Tombstone {
                id: i.id,
                folder: i.folder,
                at: seq,
            }));
        });
    }

    /// The contact ids of a mailbox, in the order they were added.
    pub fn contact_ids(&self, mailbox: &str) -> Vec<String> {
        self.contacts(|s| {
            s.find(mailbox)
                .map(|m| m.items.iter().map(|i| i.id.clone()).collect())
                .unwrap_or_default()
        })
    }

    /// An open mailbox by id or UPN, or the error Graph gives instead.
    fn open_mailbox(&self, key: &str) -> Result<(), Failure> {
        if !self.ensure_mailbox(key) {
            return Err(Failure::new(
                StatusCode::NOT_FOUND,
                "ErrorInvalidUser",
                format!("The requested user '{key}' is invalid."),
            ));
        }
        match self.contacts(|s| s.find(key).map(|m| m.access)) {
            Some(MailboxAccess::NoMailbox) => Err(Failure::new(
                StatusCode::NOT_FOUND,
                "MailboxNotEnabledForRESTAPI",
                "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
            )),
            Some(MailboxAccess::Denied) => Err(Failure::new(
                StatusCode::FORBIDDEN,
                "ErrorAccessDenied",
                "Access to OData is disabled.",
            )),
            _ => Ok(()),
        }
    }
}

fn item_not_found() -> Failure {
    Failure::new(
        StatusCode::NOT_FOUND,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
    )
}

pub(super) fn routes() -> Router<Arc<GraphSim>> {
    Router::new()
        .route("/v1.0/users/{user}/contactFolders", get(list_folders))
        .route(
            "/v1.0/users/{user}/contactFolders/{folder}/childFolders",
            get(child_folders),
        )
        .route("/v1.0/users/{user}/contacts", get(list_contacts))
        .route(
            "/v1.0/users/{user}/contactFolders/{folder}/contacts/delta",
            get(contacts_delta),
        )
}

fn folders_under(sim: &GraphSim, user: &str, parent: Option<&str>) -> Result<Response, Failure> {
    sim.open_mailbox(user)?;
    let folders = sim.contacts(|s| {
        let m = s.find(user)?;
        let parent = parent.map_or_else(|| m.default_folder.clone(), str::to_string);
        let known = parent == m.default_folder || m.folders.iter().any(|f| f.id == parent);
        known.then(|| {
            m.folders
                .iter()
                .filter(|f| f.parent.as_deref() == Some(parent.as_str()))
                .map(|f| json!({"id": f.id, "displayName": f.name, "parentFolderId": parent}))
                .collect::<Vec<_>>()
        })
    });
    let value = folders.ok_or_else(item_not_found)?;
    Ok(axum::Json(json!({ "value": value })).into_response())
}

async fn list_folders(State(sim): State<Arc<GraphSim>>, Path(user): Path<String>) -> Response {
    sim.respond(folders_under(&sim, &user, None))
}

async fn child_folders(
    State(sim): State<Arc<GraphSim>>,
    Path((user, folder)): Path<(String, String)>,
) -> Response {
    sim.respond(folders_under(&sim, &user, Some(&folder)))
}

fn select_of(q: &HashMap<String, String>) -> Option<Vec<String>> {
    q.get("$select")
        .map(|s| s.split(',').map(|p| p.trim().to_string()).collect())
}

/// The default folder's contacts: the first `$top` (default 10) only.
async fn list_contacts(
    State(sim): State<Arc<GraphSim>>,
    Path(user): Path<String>,
    q: Options,
) -> Response {
    let q = options(q);
    let top: usize = q.get("$top").and_then(|t| t.parse().ok()).unwrap_or(10);
    let select = select_of(&q);
    let result = sim.open_mailbox(&user).map(|()| {
        let value: Vec<Value> = sim.contacts(|s| {
            s.find(&user)
                .map(|m| {
                    m.items
                        .iter()
                        .filter(|i| i.folder == m.default_folder)
                        .take(top)
                        .map(|i| contact_json(i, select.as_deref()))
                        .collect()
                })
                .unwrap_or_default()
        });
        axum::Json(json!({ "value": value })).into_response()
    });
    sim.respond(result)
}

/// `Prefer: odata.maxpagesize=N`, else the simulator's page size.
fn page_size(sim: &GraphSim, headers: &HeaderMap) -> usize {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix("odata.maxpagesize=")?.parse().ok())
        .unwrap_or_else(|| sim.with(|s| s.page_size))
        .max(1)
}

async fn contacts_delta(
    State(sim): State<Arc<GraphSim>>,
    Path((user, folder)): Path<(String, String)>,
    headers: HeaderMap,
    q: Options,
) -> Response {
    let base = sim.base(&headers);
    let size = page_size(&sim, &headers);
    sim.respond(delta(&sim, &base, &user, &folder, size, &options(q)))
}

fn delta_path(base: &str, user: &str, folder: &str) -> String {
    format!("{base}/v1.0/users/{user}/contactFolders/{folder}/contacts/delta")
}

fn delta(
    sim: &GraphSim,
    base: &str,
    user: &str,
    folder: &str,
    size: usize,
    q: &HashMap<String, String>,
) -> Result<Response, Failure> {
    sim.open_mailbox(user)?;
    let epoch = sim.with(|s| s.epoch);
    let reset = || {
        Failure::new(
            StatusCode::GONE,
            "syncStateNotFound",
            "The sync state generation is not found. The delta token is expired and data must be synchronized again.",
        )
        .header(LOCATION, delta_path(base, user, folder))
    };
    if let Some(t) = q.get("$skiptoken") {
        let pages = sim.contacts(|s| s.pages.remove(t));
        return match pages {
            Some(p) if p.token.epoch == epoch => Ok(contact_page(sim, base, user, folder, p)),
            _ => Err(reset()),
        };
    }
    let since = match q.get("$deltatoken") {
        None => None,
        Some(t) => match sim.contacts(|s| s.tokens.get(t).cloned()) {
            Some(tok) if tok.epoch == epoch && tok.folder == folder => Some(tok.since),
            _ => return Err(reset()),
        },
    };
    let select = select_of(q);
    let pages = sim.contacts(|s| {
        let seq = s.seq;
        let m = s.find(user)?;
        if folder != m.default_folder && !m.folders.iter().any(|f| f.id == folder) {
            return None;
        }
        let mut items: Vec<Value> = m
            .items
            .iter()
            .filter(|i| i.folder == folder && since.is_none_or(|t| i.changed > t))
            .map(|i| contact_json(i, select.as_deref()))
            .collect();
        if let Some(t) = since {
            let live = |id: &str| m.items.iter().any(|i| i.id == id && i.folder == folder);
            let mut removed: Vec<&str> = m
                .tombstones
                .iter()
                .filter(|d| d.folder == folder && d.at > t && !live(&d.id))
                .map(|d| d.id.as_str())
                .collect();
            removed.dedup();
            items.extend(removed.into_iter().map(|id| {
                json!({"@odata.type": "#microsoft.graph.contact", "id": id, "@removed": {"reason": "deleted"}})
            }));
        }
        Some(ContactPages {
            items,
            offset: 0,
            size,
            token: Token {
                folder: folder.to_string(),
                since: seq,
                epoch,
            },
        })
    });
    let pages = pages.ok_or_else(item_not_found)?;
    Ok(contact_page(sim, base, user, folder, pages))
}

fn contact_page(
    sim: &GraphSim,
    base: &str,
    user: &str,
    folder: &str,
    mut p: ContactPages,
) -> Response {
    let end = (p.offset + p.size).min(p.items.len());
    let context = format!("{base}/v1.0/$metadata#Collection(contact)");
    let mut body = json!({"@odata.context": context, "value": &p.items[p.offset..end]});
    let token = new_token();
    let path = delta_path(base, user, folder);
    if end < p.items.len() {
        body["@odata.nextLink"] = json!(format!("{path}?$skiptoken={token}"));
        p.offset = end;
        sim.contacts(|s| s.pages.insert(token, p));
    } else {
        body["@odata.deltaLink"] = json!(format!("{path}?$deltatoken={token}"));
        sim.contacts(|s| s.tokens.insert(token, p.token));
    }
    axum::Json(body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::router;
    use crate::{Running, spawn};
    use pbxgate_wire::clock::ManualClock;

    async fn start() -> (Arc<GraphSim>, Running, reqwest::Client) {
        crate::pki::crypto();
        let clock = ManualClock::new(1_767_225_600);
        let sim = Arc::new(GraphSim::new(Arc::new(clock.clone())));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = spawn(listener, router(sim.clone()), None).unwrap();
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            crate::graph::test_token(&sim, &clock),
        );
        let http = reqwest::Client::builder()
            .default_headers(h)
            .build()
            .unwrap();
        (sim, server, http)
    }

    async fn get(http: &reqwest::Client, url: &str, prefer: Option<&str>) -> (u16, Value) {
        let mut req = http.get(url);
        if let Some(p) = prefer {
            req = req.header("Prefer", p);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn folder_delta_pages_reports_changes_moves_and_expiry() {
        let (sim, server, http) = start().await;
        sim.add_mailbox("m1", "shared@contoso.com");
        let sub = sim.add_contact_folder("shared@contoso.com", "Sub", None);
        let a = sim.add_contact("m1", None, SimContact::person("Ann", "A", "+1 1"));
        sim.add_contact("m1", None, SimContact::person("Bo", "B", "+1 2"));
        sim.add_contact("m1", None, SimContact::person("Cy", "C", "+1 3"));
        let base = format!("{}/v1.0/users/shared@contoso.com", server.url());
        // The folder list names the default folder as the parent of its children.
        let (status, folders) = get(&http, &format!("{base}/contactFolders"), None).await;
        assert_eq!(status, 200);
        let default = folders["value"][0]["parentFolderId"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(folders["value"][0]["id"], json!(sub));
        let start =
            format!("{base}/contactFolders/{default}/contacts/delta?$select=givenName,mobilePhone");
        let (_, page) = get(&http, &start, Some("odata.maxpagesize=2")).await;
        assert_eq!(page["value"].as_array().unwrap().len(), 2);
        assert!(page["value"][0].get("surname").is_none(), "$select");
        let next = page["@odata.nextLink"].as_str().unwrap().to_string();
        let (_, page) = get(&http, &next, None).await;
        assert_eq!(page["value"].as_array().unwrap().len(), 1);
        let link = page["@odata.deltaLink"].as_str().unwrap().to_string();
        // Ann moves to the subfolder: removed here, new there.
        sim.move_contact("m1", &a, Some(&sub));
        let (_, page) = get(&http, &link, None).await;
        assert_eq!(page["value"][0]["id"], json!(a));
        assert_eq!(page["value"][0]["@removed"]["reason"], "deleted");
        let (_, page) = get(
            &http,
            &format!("{base}/contactFolders/{sub}/contacts/delta"),
            None,
        )
        .await;
        assert_eq!(page["value"][0]["givenName"], "Ann");
        // Expired tokens: 410 syncStateNotFound.
        sim.expire_delta_tokens();
        let (status, body) = get(&http, &link, None).await;
        assert_eq!(status, 410);
        assert_eq!(body["error"]["code"], "syncStateNotFound");
    }

    #[tokio::test]
    async fn mailbox_less_and_blocked_users_answer_as_graph_does() {
        let (sim, server, http) = start().await;
        sim.add_mailbox("m2", "nobox@contoso.com");
        sim.set_mailbox_access("m2", MailboxAccess::NoMailbox);
        sim.add_mailbox("m3", "blocked@contoso.com");
        sim.set_mailbox_access("m3", MailboxAccess::Denied);
        let url = |u: &str| format!("{}/v1.0/users/{u}/contactFolders", server.url());
        let (status, body) = get(&http, &url("nobox@contoso.com"), None).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("MailboxNotEnabledForRESTAPI"))
        );
        let (status, body) = get(&http, &url("m3"), None).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (403, Some("ErrorAccessDenied"))
        );
        let (status, body) = get(&http, &url("nobody@contoso.com"), None).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("ErrorInvalidUser"))
        );
    }
}
