//! The contacts worker: Outlook contacts → 3CX phonebooks, one way (DESIGN §4).
//!
//! The contacts of each `shared_mailboxes` entry go to the company phonebook; with `personal`
//! on, each synced user's own contacts go to that user's personal phonebook. Graph delta runs
//! per contact folder (the default folder, and with `folders = "all"` every subfolder); the
//! first page of every folder's delta goes through `$batch`, 20 folders a call, so a run with
//! no changes costs about one call per 20 folders and nothing at 3CX.
//!
//! Ownership: every entry pbxgate creates carries a `Tag` `pbxgate:<hash>`, and the store links
//! each such entry to the Outlook contact(s) behind it. Only tagged entries are ever read,
//! changed or deleted; an entry a person made in 3CX is never touched. The plan compares what
//! Outlook says with the tagged entries 3CX has *now*, so a rerun after any failure converges
//! without duplicates (an entry created just before a crash is found again by its tag).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use futures_util::StreamExt;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::users::normalize_phone;
use super::{Action, Mode, Plan, SyncError, Worker};
use crate::clock::Clock;
use crate::config::{Config, ContactFolders, ContactsSyncConfig, DedupeBy};
use crate::graph::{BATCH_MAX, BatchRequest, BatchResponse, GraphClient, GraphError};
use crate::pbx::{Book, ContactFields, OWNED_TAG_PREFIX, PbxClient, PbxContact};
use crate::store::{ContactLink, Store};

/// Graph contact fields read, and nothing more.
pub const SELECT: &str = "givenName,surname,displayName,companyName,department,jobTitle,businessPhones,homePhones,mobilePhone,emailAddresses,parentFolderId";
const FOLDERS_STATE: &str = "contacts.folders:";
const DELTA_STATE: &str = "contacts.delta:";
pub const FULL_STATE: &str = "contacts.last_full";
/// `sync_items` of this worker: `skip:<mailbox>` → [`Skipped`].
const ITEMS: &str = "contacts";
const SKIP_ITEM: &str = "skip:";
/// Mailboxes read (and phonebooks listed) at the same time.
const PARALLEL: usize = 8;
/// A path segment: everything but unreserved characters and `@` is escaped.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'@');

/// An Outlook contact as Graph returns it with `SELECT` (collections may come as null).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct GraphContact {
    pub id: String,
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub surname: Option<String>,
    pub company_name: Option<String>,
    pub department: Option<String>,
    pub job_title: Option<String>,
    pub business_phones: Option<Vec<String>>,
    pub home_phones: Option<Vec<String>>,
    pub mobile_phone: Option<String>,
    pub email_addresses: Option<Vec<EmailAddress>>,
    pub parent_folder_id: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct EmailAddress {
    pub name: Option<String>,
    pub address: Option<String>,
}

fn text(v: &Option<String>) -> String {
    v.as_deref().unwrap_or("").trim().to_string()
}

fn phone(list: &Option<Vec<String>>, i: usize) -> String {
    list.as_ref()
        .and_then(|l| l.iter().filter(|p| !p.trim().is_empty()).nth(i))
        .map(|p| normalize_phone(p))
        .unwrap_or_default()
}

/// The documented mapping (README, "Contact sync"). `None` for a contact without any phone
/// number: a phonebook entry is for calling, so such contacts are left out.
pub fn to_fields(c: &GraphContact) -> Option<ContactFields> {
    let (mut first, last) = (text(&c.given_name), text(&c.surname));
    if first.is_empty() && last.is_empty() {
        first = text(&c.display_name);
    }
    let f = ContactFields {
        first_name: first,
        last_name: last,
        company_name: text(&c.company_name),
        department: text(&c.department),
        title: text(&c.job_title),
        email: c
            .email_addresses
            .iter()
            .flatten()
            .find_map(|e| {
                e.address
                    .as_deref()
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
            })
            .unwrap_or("")
            .to_string(),
        phone_number: c
            .mobile_phone
            .as_deref()
            .map(normalize_phone)
            .unwrap_or_default(),
        business: phone(&c.business_phones, 0),
        business2: phone(&c.business_phones, 1),
        home: phone(&c.home_phones, 0),
        tag: String::new(),
    };
    let numbers = [&f.phone_number, &f.business, &f.business2, &f.home];
    numbers.iter().any(|n| !n.is_empty()).then_some(f)
}

/// The entry's tag: from the mailbox and contact id, or with `dedupe_by` from the first
/// e-mail address or phone number, so that the same person in two mailboxes is one entry.
pub fn tag_for(mailbox: &str, contact_id: &str, f: &ContactFields, dedupe: DedupeBy) -> String {
    let first_phone = [&f.business, &f.phone_number, &f.home]
        .into_iter()
        .find(|p| !p.is_empty());
    let key = match dedupe {
        DedupeBy::Email if !f.email.is_empty() => format!("email:{}", f.email.to_lowercase()),
        DedupeBy::Phone if first_phone.is_some() => {
            format!("phone:{}", first_phone.map(String::as_str).unwrap_or(""))
        }
        _ => format!("contact:{}/{contact_id}", mailbox.to_lowercase()),
    };
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    format!(
        "{OWNED_TAG_PREFIX}{}",
        crate::ids::hex(&digest.as_ref()[..8])
    )
}

/// Where one Outlook contact sits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LinkKey {
    pub mailbox: String,
    pub contact_id: String,
    pub folder_id: String,
}

/// One planned change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactAction {
    /// A new entry, tagged as pbxgate's.
    Create {
        book: Book,
        fields: ContactFields,
        links: Vec<LinkKey>,
    },
    /// Bring a pbxgate entry in line with Outlook.
    Update {
        book: Book,
        pbx_id: i64,
        fields: ContactFields,
        links: Vec<LinkKey>,
    },
    /// The entry is right already; only pbxgate's records change (e.g. a contact moved).
    Link {
        book: Book,
        pbx_id: i64,
        tag: String,
        links: Vec<LinkKey>,
    },
    /// The contacts behind an entry are gone: delete it (if 3CX still has it) and the links.
    Delete {
        book: Book,
        tag: String,
        pbx_id: Option<i64>,
        unlink: Vec<(String, String)>,
    },
    /// Forget contacts whose entry other contacts still hold.
    Unlink {
        book: Book,
        tag: String,
        unlink: Vec<(String, String)>,
    },
    /// Nothing is done for `item`; reported on the run. With `retry_at`, the mailbox is left
    /// alone until then.
    Skip {
        item: String,
        mailbox: Option<String>,
        reason: String,
        retry_at: Option<i64>,
    },
}

impl Action for ContactAction {
    fn kind(&self) -> &'static str {
        match self {
            Self::Create { .. } => "create",
            Self::Update { .. } => "update",
            Self::Link { .. } => "link",
            Self::Delete { .. } => "delete",
            Self::Unlink { .. } => "unlink",
            Self::Skip { .. } => "skip",
        }
    }

    fn item(&self) -> String {
        match self {
            Self::Create { book, fields, .. } | Self::Update { book, fields, .. } => {
                format!("{book}: {}", name_of(fields))
            }
            Self::Link { book, tag, .. }
            | Self::Delete { book, tag, .. }
            | Self::Unlink { book, tag, .. } => format!("{book}: {tag}"),
            Self::Skip { item, .. } => item.clone(),
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::Create { fields, links, .. } => format!("{} ({})", describe(fields), from(links)),
            Self::Update { pbx_id, fields, .. } => format!("entry {pbx_id}: {}", describe(fields)),
            Self::Link { pbx_id, links, .. } => format!("entry {pbx_id} ← {}", from(links)),
            Self::Delete { pbx_id, unlink, .. } => match pbx_id {
                Some(id) => format!("entry {id}: {} contact(s) gone", unlink.len()),
                None => "already gone from 3CX".into(),
            },
            Self::Unlink { unlink, .. } => format!("{} contact(s) gone; entry kept", unlink.len()),
            Self::Skip { reason, .. } => reason.clone(),
        }
    }
}

fn name_of(f: &ContactFields) -> String {
    format!("{} {}", f.first_name, f.last_name)
        .trim()
        .to_string()
}

fn describe(f: &ContactFields) -> String {
    serde_json::to_string(f).unwrap_or_default()
}

fn from(links: &[LinkKey]) -> String {
    let mailboxes: BTreeSet<&str> = links.iter().map(|l| l.mailbox.as_str()).collect();
    format!(
        "from {}",
        mailboxes.into_iter().collect::<Vec<_>>().join(", ")
    )
}

/// A mailbox and the phonebook its contacts go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// As Graph is called: the object id of a user, or the configured UPN/id.
    pub mailbox: String,
    /// For people: the UPN.
    pub label: String,
    pub book: Book,
}

/// One folder's delta round.
#[derive(Debug, Default)]
struct FolderRead {
    folder: String,
    changed: Vec<GraphContact>,
    removed: Vec<String>,
    /// Read from scratch: a linked contact not in `changed` is gone.
    fresh: bool,
    /// The folder no longer exists.
    gone: bool,
    link: Option<String>,
}

/// What Graph said about one mailbox in this run.
#[derive(Debug, Default)]
pub struct SourceRead {
    folders: Vec<FolderRead>,
    /// The folder list was read now (and is kept for the next runs).
    discovered: Option<Vec<String>>,
}

impl SourceRead {
    fn has_news(&self) -> bool {
        self.discovered.is_some()
            || self
                .folders
                .iter()
                .any(|f| f.fresh || f.gone || !f.changed.is_empty() || !f.removed.is_empty())
    }

    /// Whether every folder was read from scratch (so absence means removal everywhere).
    fn complete(&self) -> bool {
        self.discovered.is_some() && self.folders.iter().all(|f| f.fresh || f.gone)
    }
}

/// The state of one phonebook: pbxgate's entries in 3CX and the links in the store.
pub struct BookState {
    pub entries: Vec<PbxContact>,
    pub links: Vec<ContactLink>,
}

/// The pure part of planning one phonebook. `reads` are the sources of `book` read in this run;
/// `complete` says that every source of the book was read from scratch, so pbxgate entries
/// nobody wants any more are deleted. Returns the actions and the mailboxes whose contacts did
/// not all fit under `limit` (their delta must not advance).
pub fn plan_book(
    book: &Book,
    reads: &[(&Source, &SourceRead)],
    state: &BookState,
    dedupe: DedupeBy,
    limit: usize,
    complete: bool,
) -> (Vec<ContactAction>, BTreeSet<String>) {
    let dedupe = if *book == Book::Company {
        dedupe
    } else {
        DedupeBy::None
    };
    // What Outlook wants: tag → fields (the first source wins) and the contacts behind it.
    let mut desired: BTreeMap<String, (ContactFields, Vec<LinkKey>)> = BTreeMap::new();
    let mut gone: BTreeSet<(String, String)> = BTreeSet::new();
    let links_by_key: HashMap<(String, String), &ContactLink> = state
        .links
        .iter()
        .map(|l| ((l.mailbox.clone(), l.contact_id.clone()), l))
        .collect();
    for (src, read) in reads {
        for f in &read.folders {
            for c in &f.changed {
                let Some(mut fields) = to_fields(c) else {
                    gone.insert((src.mailbox.clone(), c.id.clone()));
                    continue;
                };
                fields.tag = tag_for(&src.mailbox, &c.id, &fields, dedupe);
                let link = LinkKey {
                    mailbox: src.mailbox.clone(),
                    contact_id: c.id.clone(),
                    folder_id: f.folder.clone(),
                };
                desired
                    .entry(fields.tag.clone())
                    .or_insert_with(|| (fields, Vec::new()))
                    .1
                    .push(link);
            }
            gone.extend(f.removed.iter().map(|id| (src.mailbox.clone(), id.clone())));
        }
        // Linked contacts a from-scratch read did not return are gone as well.
        let fresh: BTreeSet<&str> = read
            .folders
            .iter()
            .filter(|f| f.fresh || f.gone)
            .map(|f| f.folder.as_str())
            .collect();
        let listed: BTreeSet<&str> = read.folders.iter().map(|f| f.folder.as_str()).collect();
        for l in state.links.iter().filter(|l| l.mailbox == src.mailbox) {
            let folder = l.folder_id.as_str();
            if fresh.contains(folder) || (read.complete() && !listed.contains(folder)) {
                gone.insert((l.mailbox.clone(), l.contact_id.clone()));
            }
        }
    }
    // Every source read from scratch: links of mailboxes no longer configured are gone too.
    if complete {
        let known: BTreeSet<&str> = reads.iter().map(|(s, _)| s.mailbox.as_str()).collect();
        gone.extend(
            state
                .links
                .iter()
                .filter(|l| !known.contains(l.mailbox.as_str()))
                .map(|l| (l.mailbox.clone(), l.contact_id.clone())),
        );
    }
    // A contact that left one folder and arrived in another has moved, not gone.
    let wanted: BTreeSet<(String, String)> = desired
        .values()
        .flat_map(|(_, ls)| ls.iter().map(|l| (l.mailbox.clone(), l.contact_id.clone())))
        .collect();
    let gone: BTreeSet<(String, String)> = gone.difference(&wanted).cloned().collect();

    let mut actions = Vec::new();
    let mut by_tag: HashMap<&str, &PbxContact> = HashMap::new();
    for e in &state.entries {
        if by_tag.contains_key(e.fields.tag.as_str()) {
            // Two entries with one tag (a create whose answer was lost): keep one.
            actions.push(ContactAction::Delete {
                book: book.clone(),
                tag: e.fields.tag.clone(),
                pbx_id: Some(e.id),
                unlink: Vec::new(),
            });
        } else {
            by_tag.insert(e.fields.tag.as_str(), e);
        }
    }
    let mut owned = by_tag.len();
    let mut overflow: BTreeSet<String> = BTreeSet::new();
    let mut dropped = 0usize;
    for (tag, (fields, links)) in &desired {
        let recorded = |e: &PbxContact| {
            links.iter().all(|k| {
                links_by_key
                    .get(&(k.mailbox.clone(), k.contact_id.clone()))
                    .is_some_and(|l| {
                        l.tag == *tag && l.pbx_id == e.id && l.folder_id == k.folder_id
                    })
            })
        };
        match by_tag.get(tag.as_str()) {
            Some(e) if e.fields == *fields && recorded(e) => {}
            Some(e) if e.fields == *fields => actions.push(ContactAction::Link {
                book: book.clone(),
                pbx_id: e.id,
                tag: tag.clone(),
                links: links.clone(),
            }),
            Some(e) => actions.push(ContactAction::Update {
                book: book.clone(),
                pbx_id: e.id,
                fields: fields.clone(),
                links: links.clone(),
            }),
            None if owned >= limit => {
                dropped += 1;
                overflow.extend(links.iter().map(|l| l.mailbox.clone()));
            }
            None => {
                owned += 1;
                actions.push(ContactAction::Create {
                    book: book.clone(),
                    fields: fields.clone(),
                    links: links.clone(),
                });
            }
        }
    }
    // Contacts whose entry changed tag (e.g. a new e-mail with dedupe) leave their old tag.
    let retagged: Vec<(String, String)> = desired
        .iter()
        .flat_map(|(tag, (_, ls))| ls.iter().map(move |k| (tag, k)))
        .filter_map(|(tag, k)| {
            let key = (k.mailbox.clone(), k.contact_id.clone());
            links_by_key
                .get(&key)
                .filter(|l| l.tag != *tag)
                .map(|_| key)
        })
        .collect();
    let leaving: BTreeSet<(String, String)> = gone
        .iter()
        .filter(|k| links_by_key.contains_key(*k))
        .cloned()
        .chain(retagged)
        .collect();
    // Old tag → the contacts leaving it; an entry is deleted when nobody holds it any more.
    let mut by_old_tag: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for k in &leaving {
        if let Some(l) = links_by_key.get(k) {
            by_old_tag.entry(l.tag.clone()).or_default().push(k.clone());
        }
    }
    let held: BTreeSet<&str> = state
        .links
        .iter()
        .filter(|l| !leaving.contains(&(l.mailbox.clone(), l.contact_id.clone())))
        .map(|l| l.tag.as_str())
        .collect();
    let holds = |tag: &str| desired.contains_key(tag) || held.contains(tag);
    for (tag, unlink) in by_old_tag {
        if holds(&tag) {
            actions.push(ContactAction::Unlink {
                book: book.clone(),
                tag,
                unlink,
            });
        } else {
            let pbx_id = by_tag.get(tag.as_str()).map(|e| e.id);
            actions.push(ContactAction::Delete {
                book: book.clone(),
                tag,
                pbx_id,
                unlink,
            });
        }
    }
    // A full read of every source: pbxgate's entries nobody holds are leftovers; remove them.
    if complete {
        let planned: BTreeSet<String> = actions
            .iter()
            .filter_map(|a| match a {
                ContactAction::Delete { tag, .. } => Some(tag.clone()),
                _ => None,
            })
            .collect();
        for (tag, e) in &by_tag {
            if !holds(tag) && !planned.contains(*tag) {
                actions.push(ContactAction::Delete {
                    book: book.clone(),
                    tag: tag.to_string(),
                    pbx_id: Some(e.id),
                    unlink: Vec::new(),
                });
            }
        }
    }
    if dropped > 0 {
        actions.push(ContactAction::Skip {
            item: book.to_string(),
            mailbox: None,
            reason: format!(
                "{dropped} contact(s) not created: the limit of {limit} pbxgate entries is reached"
            ),
            retry_at: None,
        });
    }
    (actions, overflow)
}

/// A mailbox that cannot be read: skipped for a while (no mailbox, access policy) or for
/// this run (anything else that is not an outage).
fn skip_reason(e: &GraphError) -> Option<(String, bool)> {
    match e {
        GraphError::MailboxNotEnabled(_) => Some((
            "no Exchange Online mailbox (MailboxNotEnabledForRESTAPI)".into(),
            true,
        )),
        GraphError::AccessDenied(m) => Some((
            format!("access denied, an application access policy? ({m})"),
            true,
        )),
        GraphError::NotFound(_) => Some(("no such mailbox".into(), true)),
        GraphError::Api { .. } | GraphError::Decode(_) => Some((e.to_string(), false)),
        _ => None,
    }
}

pub struct ContactsWorker {
    graph: Arc<GraphClient>,
    pbx: Arc<PbxClient>,
    store: Store,
    clock: Arc<dyn Clock>,
    tenant_id: String,
    config: ContactsSyncConfig,
}

/// A mailbox left alone until `retry_at` (Unix seconds), and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Skipped {
    reason: String,
    retry_at: i64,
}

/// A mailbox ready for its delta round.
struct Prepared {
    folders: Vec<String>,
    discovered: bool,
    /// (folder, delta start, from scratch)
    starts: Vec<(String, String, bool)>,
}

impl ContactsWorker {
    pub fn new(
        config: &Config,
        graph: Arc<GraphClient>,
        pbx: Arc<PbxClient>,
        store: Store,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            graph,
            pbx,
            store,
            clock,
            tenant_id: config.entra.tenant_id.clone(),
            config: config.sync.contacts.clone(),
        }
    }

    /// The shared mailboxes, then (with `personal`) every synced user with an extension.
    async fn sources(&self) -> Result<Vec<Source>, SyncError> {
        let mut sources: Vec<Source> = self
            .config
            .shared_mailboxes
            .iter()
            .map(|m| Source {
                mailbox: m.trim().to_string(),
                label: m.trim().to_string(),
                book: Book::Company,
            })
            .collect();
        if self.config.personal {
            let rows = self.store.directory_users(&self.tenant_id).await?;
            sources.extend(
                rows.into_iter()
                    .filter(|r| r.removed_at.is_none() && !r.extension.is_empty())
                    .map(|r| Source {
                        mailbox: r.object_id,
                        label: r.upn,
                        book: Book::Personal(r.extension),
                    }),
            );
        }
        Ok(sources)
    }

    fn user_path(mailbox: &str) -> String {
        format!("/users/{}", utf8_percent_encode(mailbox, SEGMENT))
    }

    fn fresh_delta(mailbox: &str, folder: &str) -> String {
        format!(
            "{}/contactFolders/{}/contacts/delta?$select={SELECT}",
            Self::user_path(mailbox),
            utf8_percent_encode(folder, SEGMENT)
        )
    }

    /// The default Contacts folder and, with `folders = "all"`, every folder below it.
    async fn discover(&self, mailbox: &str) -> Result<Vec<String>, GraphError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Folder {
            id: String,
            #[serde(default)]
            parent_folder_id: Option<String>,
        }
        let user = Self::user_path(mailbox);
        let mb = Some(mailbox);
        let children: Vec<Folder> = self
            .graph
            .list(
                &format!("{user}/contactFolders?$select=id,displayName,parentFolderId"),
                mb,
            )
            .await?;
        // Graph lists the default folder's children, not the default folder itself; its id
        // is their parent, or else the parent of any contact in it.
        let default = match children.iter().find_map(|f| f.parent_folder_id.clone()) {
            Some(id) => id,
            None => {
                let page: Value = self
                    .graph
                    .get(
                        &format!("{user}/contacts?$top=1&$select=parentFolderId"),
                        mb,
                    )
                    .await?;
                match page["value"][0]["parentFolderId"].as_str() {
                    Some(id) => id.to_string(),
                    None => return Ok(Vec::new()),
                }
            }
        };
        let mut folders = vec![default];
        if self.config.folders == ContactFolders::All {
            let mut queue: Vec<String> = children.into_iter().map(|f| f.id).collect();
            while let Some(id) = queue.pop() {
                let path = format!(
                    "{user}/contactFolders/{}/childFolders?$select=id,displayName,parentFolderId",
                    utf8_percent_encode(&id, SEGMENT)
                );
                let sub: Vec<Folder> = self.graph.list(&path, mb).await?;
                queue.extend(sub.into_iter().map(|f| f.id));
                folders.push(id);
            }
        }
        Ok(folders)
    }

    /// The folders to read: those kept from the last run, or found now.
    async fn folders(&self, src: &Source, mode: Mode) -> Result<(Vec<String>, bool), GraphError> {
        if mode == Mode::Delta {
            let kept = self
                .store
                .state(&format!("{FOLDERS_STATE}{}", src.mailbox))
                .await
                .ok()
                .flatten()
                .and_then(|v| serde_json::from_str::<Vec<String>>(&v).ok())
                .filter(|f| !f.is_empty());
            if let Some(f) = kept {
                return Ok((f, false));
            }
        }
        Ok((self.discover(&src.mailbox).await?, true))
    }

    /// Each folder's delta start: the kept delta link (delta runs), else from scratch.
    async fn starts(
        &self,
        src: &Source,
        folders: &[String],
        mode: Mode,
    ) -> Vec<(String, String, bool)> {
        let mut out = Vec::new();
        for f in folders {
            let kept = match mode {
                Mode::Full => None,
                Mode::Delta => self
                    .store
                    .state(&format!("{DELTA_STATE}{}:{f}", src.mailbox))
                    .await
                    .ok()
                    .flatten(),
            };
            match kept {
                Some(link) => out.push((f.clone(), link, false)),
                None => out.push((f.clone(), Self::fresh_delta(&src.mailbox, f), true)),
            }
        }
        out
    }

    /// Reads the mailboxes: their folders, then every folder's delta, the first pages of all
    /// folders of all mailboxes in `$batch` calls of 20. A mailbox that cannot be read is a
    /// `Skip`; an outage ends the run.
    async fn read_sources<'a>(
        &self,
        sources: &[&'a Source],
        mode: Mode,
    ) -> Result<Vec<(&'a Source, Result<SourceRead, ContactAction>)>, SyncError> {
        let mut preparing = Vec::new();
        for s in sources {
            let s: &'a Source = s;
            preparing.push(async move { (s, self.prepare(s, mode).await) });
        }
        let prepared: Vec<_> = futures_util::stream::iter(preparing)
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        let mut out = Vec::new();
        let mut ready = Vec::new();
        for (s, p) in prepared {
            match p {
                Ok(p) => ready.push((s, p)),
                Err(e) => out.push((s, Err(self.skip(s, e)?))),
            }
        }
        let root = self.graph.url("");
        let requests: Vec<BatchRequest> = ready
            .iter()
            .flat_map(|(_, p)| p.starts.iter())
            .enumerate()
            .map(|(i, (_, start, _))| BatchRequest {
                id: i.to_string(),
                method: "GET".into(),
                url: start.strip_prefix(&root).unwrap_or(start).to_string(),
                body: None,
                headers: None,
            })
            .collect();
        let mut batches = Vec::new();
        for chunk in requests.chunks(BATCH_MAX) {
            batches.push(self.graph.batch(chunk.to_vec()));
        }
        let answered: Vec<_> = futures_util::stream::iter(batches)
            .buffered(PARALLEL)
            .collect()
            .await;
        let mut answers = Vec::new();
        for a in answered {
            answers.extend(a?);
        }
        let mut answers = answers.into_iter();
        let mut finishing = Vec::new();
        for (s, p) in ready {
            let mine: Vec<BatchResponse> = answers.by_ref().take(p.starts.len()).collect();
            finishing.push(async move { (s, self.finish_source(s, p, mine).await) });
        }
        let finished: Vec<_> = futures_util::stream::iter(finishing)
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        for (s, r) in finished {
            match r {
                Ok(read) => out.push((s, Ok(read))),
                Err(e) => out.push((s, Err(self.skip(s, e)?))),
            }
        }
        Ok(out)
    }

    /// A mailbox's folders and where each folder's delta starts.
    async fn prepare(&self, src: &Source, mode: Mode) -> Result<Prepared, GraphError> {
        let (folders, discovered) = self.folders(src, mode).await?;
        let starts = self.starts(src, &folders, mode).await;
        Ok(Prepared {
            folders,
            discovered,
            starts,
        })
    }

    async fn finish_source(
        &self,
        src: &Source,
        p: Prepared,
        answers: Vec<BatchResponse>,
    ) -> Result<SourceRead, GraphError> {
        let mut read = SourceRead {
            folders: Vec::new(),
            discovered: p.discovered.then_some(p.folders),
        };
        for ((folder, _, fresh), answer) in p.starts.into_iter().zip(answers) {
            read.folders
                .push(self.finish_folder(src, &folder, fresh, answer).await?);
        }
        Ok(read)
    }

    /// Completes one folder's delta round from its first page (a `$batch` answer).
    async fn finish_folder(
        &self,
        src: &Source,
        folder: &str,
        fresh: bool,
        answer: BatchResponse,
    ) -> Result<FolderRead, GraphError> {
        let mb = Some(src.mailbox.as_str());
        let mut out = FolderRead {
            folder: folder.to_string(),
            fresh,
            ..Default::default()
        };
        let mut page = answer.body.clone();
        if let Some(e) = answer.error(&src.label) {
            match e {
                // The delta token expired: this folder starts over, without duplicates
                // (entries are matched by tag).
                GraphError::SyncReset => {
                    tracing::warn!(mailbox = %src.label, folder, "contacts delta token expired; reading the folder again");
                    let d = self
                        .graph
                        .delta::<GraphContact>(&Self::fresh_delta(&src.mailbox, folder), mb)
                        .await?;
                    out.fresh = true;
                    out.changed = d.changed;
                    out.link = Some(d.delta_link);
                    return Ok(out);
                }
                // The folder was deleted (not the mailbox: that is `ErrorInvalidUser`).
                GraphError::NotFound(_)
                    if !fresh && answer.body["error"]["code"] == "ErrorItemNotFound" =>
                {
                    out.gone = true;
                    return Ok(out);
                }
                other => return Err(other),
            }
        }
        for item in page["value"]
            .as_array_mut()
            .map(std::mem::take)
            .unwrap_or_default()
        {
            match item.get("@removed") {
                Some(_) => out
                    .removed
                    .push(item["id"].as_str().unwrap_or_default().to_string()),
                None => out.changed.push(
                    serde_json::from_value(item)
                        .map_err(|e| GraphError::Decode(format!("contact: {e}")))?,
                ),
            }
        }
        match (
            page["@odata.nextLink"].as_str(),
            page["@odata.deltaLink"].as_str(),
        ) {
            (Some(next), _) => {
                let rest = self.graph.delta::<GraphContact>(next, mb).await?;
                out.changed.extend(rest.changed);
                out.removed.extend(rest.removed.into_iter().map(|r| r.id));
                out.link = Some(rest.delta_link);
            }
            (None, Some(link)) => out.link = Some(link.to_string()),
            (None, None) => {
                return Err(GraphError::Decode(
                    "a delta page without next or delta link".into(),
                ));
            }
        }
        Ok(out)
    }

    /// The skip that reports an unreadable mailbox, or the outage that ends the run.
    fn skip(&self, src: &Source, e: GraphError) -> Result<ContactAction, SyncError> {
        let (reason, lasting) = skip_reason(&e).ok_or(SyncError::Graph(e))?;
        let retry = self.config.mailbox_retry.get().as_secs() as i64;
        Ok(ContactAction::Skip {
            item: src.label.clone(),
            mailbox: Some(src.mailbox.clone()),
            reason,
            retry_at: lasting.then(|| self.clock.now() + retry),
        })
    }

    /// The `sync_state` entries a clean run keeps for `src`.
    fn commit_for(src: &Source, read: &SourceRead) -> Vec<(String, Option<String>)> {
        let mut out = Vec::new();
        if let Some(folders) = &read.discovered {
            let kept: Vec<&String> = folders
                .iter()
                .filter(|f| read.folders.iter().any(|r| &r.folder == *f && !r.gone))
                .collect();
            out.push((
                format!("{FOLDERS_STATE}{}", src.mailbox),
                serde_json::to_string(&kept).ok(),
            ));
        }
        for f in &read.folders {
            let name = format!("{DELTA_STATE}{}:{}", src.mailbox, f.folder);
            out.push((name, f.link.clone()));
            if f.gone {
                // Find the folder list again next run.
                out.push((format!("{FOLDERS_STATE}{}", src.mailbox), None));
            }
        }
        out
    }

    async fn book_state(&self, book: &Book) -> Result<BookState, SyncError> {
        let entries = self.pbx.contacts(book, OWNED_TAG_PREFIX).await?;
        let links = self.store.contact_links(&book.key()).await?;
        Ok(BookState { entries, links })
    }

    fn limit(&self, book: &Book) -> usize {
        match book {
            Book::Company => self.config.max_company_contacts,
            Book::Personal(_) => self.config.max_personal_contacts,
        }
    }

    /// Plans the phonebooks that have news (every one in a full run).
    async fn plan_books(
        &self,
        sources: &[Source],
        reads: &HashMap<String, SourceRead>,
        unread: &BTreeSet<String>,
        mode: Mode,
    ) -> Result<(Vec<ContactAction>, BTreeSet<String>), SyncError> {
        let mut books: BTreeMap<Book, Vec<&Source>> = BTreeMap::new();
        for s in sources {
            books.entry(s.book.clone()).or_default().push(s);
        }
        let touched: Vec<(Book, Vec<&Source>)> = books
            .into_iter()
            .filter(|(_, srcs)| srcs.iter().any(|s| reads.contains_key(&s.mailbox)))
            .filter(|(_, srcs)| {
                mode == Mode::Full
                    || srcs
                        .iter()
                        .any(|s| reads.get(&s.mailbox).is_some_and(SourceRead::has_news))
            })
            .collect();
        let mut reading = Vec::new();
        for (b, _) in &touched {
            reading.push(async move { (b.clone(), self.book_state(b).await) });
        }
        let states = futures_util::stream::iter(reading)
            .buffer_unordered(PARALLEL)
            .collect::<Vec<_>>()
            .await;
        let mut states: HashMap<Book, Result<BookState, SyncError>> = states.into_iter().collect();
        let mut actions = Vec::new();
        let mut overflow = BTreeSet::new();
        for (book, srcs) in &touched {
            let state = match states.remove(book) {
                Some(Ok(s)) => s,
                Some(Err(e)) if e.is_outage() => return Err(e),
                Some(Err(e)) => {
                    actions.push(ContactAction::Skip {
                        item: book.to_string(),
                        mailbox: None,
                        reason: e.to_string(),
                        retry_at: None,
                    });
                    overflow.extend(srcs.iter().map(|s| s.mailbox.clone()));
                    continue;
                }
                None => continue,
            };
            let book_reads: Vec<(&Source, &SourceRead)> = srcs
                .iter()
                .filter_map(|s| reads.get(&s.mailbox).map(|r| (*s, r)))
                .collect();
            let complete = srcs.iter().all(|s| !unread.contains(&s.mailbox))
                && book_reads.iter().all(|(_, r)| r.complete());
            let (a, o) = plan_book(
                book,
                &book_reads,
                &state,
                self.config.dedupe_by,
                self.limit(book),
                complete,
            );
            actions.extend(a);
            overflow.extend(o);
        }
        Ok((actions, overflow))
    }

    fn link_row(&self, book: &Book, k: &LinkKey, tag: &str, pbx_id: i64) -> ContactLink {
        ContactLink {
            book: book.key(),
            mailbox: k.mailbox.clone(),
            contact_id: k.contact_id.clone(),
            folder_id: k.folder_id.clone(),
            tag: tag.to_string(),
            pbx_id,
            updated_at: self.clock.now(),
        }
    }

    async fn record(
        &self,
        book: &Book,
        links: &[LinkKey],
        tag: &str,
        pbx_id: i64,
    ) -> Result<(), SyncError> {
        for k in links {
            self.store
                .upsert_contact_link(&self.link_row(book, k, tag, pbx_id))
                .await?;
        }
        Ok(())
    }

    async fn forget(&self, book: &Book, unlink: &[(String, String)]) -> Result<(), SyncError> {
        for (mailbox, contact) in unlink {
            self.store
                .delete_contact_link(&book.key(), mailbox, contact)
                .await?;
        }
        Ok(())
    }
}

impl Worker for ContactsWorker {
    type Action = ContactAction;
    const NAME: &'static str = "contacts";

    async fn plan(&self, mode: Mode) -> Result<Plan<ContactAction>, SyncError> {
        let now = self.clock.now();
        let sources = self.sources().await?;
        let skips: HashMap<String, Skipped> = match mode {
            Mode::Full => HashMap::new(),
            Mode::Delta => self
                .store
                .items(ITEMS)
                .await?
                .into_iter()
                .filter_map(|(k, v)| {
                    let skip: Skipped = serde_json::from_str(&v).ok()?;
                    let mailbox = k.strip_prefix(SKIP_ITEM)?.to_string();
                    (skip.retry_at > now).then_some((mailbox, skip))
                })
                .collect(),
        };
        let mut actions = Vec::new();
        let mut unread = BTreeSet::new();
        let mut to_read = Vec::new();
        for s in &sources {
            match skips.get(&s.mailbox) {
                Some(Skipped { reason, retry_at }) => {
                    unread.insert(s.mailbox.clone());
                    actions.push(ContactAction::Skip {
                        item: s.label.clone(),
                        mailbox: Some(s.mailbox.clone()),
                        reason: format!("{reason}; skipped until {}", when(*retry_at)),
                        retry_at: None,
                    });
                }
                None => to_read.push(s),
            }
        }
        let mut reads: HashMap<String, SourceRead> = HashMap::new();
        for (src, r) in self.read_sources(&to_read, mode).await? {
            match r {
                Ok(read) => {
                    reads.insert(src.mailbox.clone(), read);
                }
                Err(a) => {
                    tracing::info!(mailbox = %src.label, reason = %a.detail(), "contacts of a mailbox skipped");
                    unread.insert(src.mailbox.clone());
                    actions.push(a);
                }
            }
        }
        let (book_actions, overflow) = self.plan_books(&sources, &reads, &unread, mode).await?;
        actions.extend(book_actions);
        let mut commit: Vec<(String, Option<String>)> = sources
            .iter()
            .filter(|s| !overflow.contains(&s.mailbox))
            .filter_map(|s| reads.get(&s.mailbox).map(|r| Self::commit_for(s, r)))
            .flatten()
            .collect();
        if mode == Mode::Full {
            commit.push((FULL_STATE.into(), Some(now.to_string())));
        }
        Ok(Plan {
            mode,
            actions,
            commit,
        })
    }

    async fn apply(&self, action: &ContactAction) -> Result<(), SyncError> {
        match action {
            ContactAction::Create {
                book,
                fields,
                links,
            } => {
                let created = self.pbx.create_contact(book, fields).await?;
                self.record(book, links, &fields.tag, created.id).await?;
            }
            ContactAction::Update {
                book,
                pbx_id,
                fields,
                links,
            } => {
                self.pbx.update_contact(book, *pbx_id, fields).await?;
                self.record(book, links, &fields.tag, *pbx_id).await?;
            }
            ContactAction::Link {
                book,
                pbx_id,
                tag,
                links,
            } => self.record(book, links, tag, *pbx_id).await?,
            ContactAction::Delete {
                book,
                pbx_id,
                unlink,
                ..
            } => {
                if let Some(id) = pbx_id {
                    match self.pbx.delete_contact(book, *id).await {
                        Ok(()) | Err(crate::pbx::PbxError::Api { status: 404, .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                self.forget(book, unlink).await?;
            }
            ContactAction::Unlink { book, unlink, .. } => self.forget(book, unlink).await?,
            ContactAction::Skip {
                mailbox: Some(mailbox),
                reason,
                retry_at: Some(at),
                ..
            } => {
                let skip = Skipped {
                    reason: reason.clone(),
                    retry_at: *at,
                };
                let value = serde_json::to_string(&skip).unwrap_or_default();
                let item = format!("{SKIP_ITEM}{mailbox}");
                self.store
                    .set_item(ITEMS, &item, Some(&value), self.clock.now())
                    .await?
            }
            ContactAction::Skip { .. } => {}
        }
        Ok(())
    }
}

fn when(t: i64) -> String {
    jiff::Timestamp::from_second(t)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(id: &str, given: &str, mobile: Option<&str>) -> GraphContact {
        GraphContact {
            id: id.into(),
            given_name: Some(given.into()),
            surname: Some("Smith".into()),
            mobile_phone: mobile.map(Into::into),
            email_addresses: Some(vec![EmailAddress {
                name: None,
                address: Some(format!("{given}@example.com")),
            }]),
            ..Default::default()
        }
    }

    fn source(m: &str) -> Source {
        Source {
            mailbox: m.into(),
            label: m.into(),
            book: Book::Company,
        }
    }

    fn read(
        folder: &str,
        changed: Vec<GraphContact>,
        removed: Vec<&str>,
        fresh: bool,
    ) -> SourceRead {
        SourceRead {
            folders: vec![FolderRead {
                folder: folder.into(),
                changed,
                removed: removed.into_iter().map(Into::into).collect(),
                fresh,
                gone: false,
                link: Some("l".into()),
            }],
            discovered: fresh.then(|| vec![folder.to_string()]),
        }
    }

    fn entry(id: i64, c: &GraphContact, mailbox: &str) -> PbxContact {
        let mut fields = to_fields(c).unwrap();
        fields.tag = tag_for(mailbox, &c.id, &fields, DedupeBy::None);
        PbxContact { id, fields }
    }

    fn link(e: &PbxContact, mailbox: &str, contact: &str, folder: &str) -> ContactLink {
        ContactLink {
            book: "company".into(),
            mailbox: mailbox.into(),
            contact_id: contact.into(),
            folder_id: folder.into(),
            tag: e.fields.tag.clone(),
            pbx_id: e.id,
            updated_at: 0,
        }
    }

    #[test]
    fn the_mapping_is_the_documented_one() {
        let c = GraphContact {
            id: "c1".into(),
            given_name: Some("Ann".into()),
            surname: Some("Lee".into()),
            company_name: Some("Fabrikam".into()),
            department: Some("Sales".into()),
            job_title: Some("Buyer".into()),
            business_phones: Some(vec![
                "+49 30 1".into(),
                "+49 30 2".into(),
                "+49 30 3".into(),
            ]),
            home_phones: Some(vec!["030 9".into()]),
            mobile_phone: Some("+49 (170) 5".into()),
            email_addresses: Some(vec![
                EmailAddress {
                    name: None,
                    address: Some("ann@fabrikam.com".into()),
                },
                EmailAddress {
                    name: None,
                    address: Some("ann@home.example".into()),
                },
            ]),
            ..Default::default()
        };
        let f = to_fields(&c).unwrap();
        assert_eq!(
            (
                f.first_name.as_str(),
                f.last_name.as_str(),
                f.company_name.as_str()
            ),
            ("Ann", "Lee", "Fabrikam")
        );
        assert_eq!(
            (f.department.as_str(), f.title.as_str()),
            ("Sales", "Buyer")
        );
        assert_eq!(
            (f.business.as_str(), f.business2.as_str()),
            ("+49301", "+49302")
        );
        assert_eq!(
            (f.phone_number.as_str(), f.home.as_str()),
            ("+491705", "0309")
        );
        assert_eq!(f.email, "ann@fabrikam.com");
        // No phone number: not a phonebook entry. Only a display name: it is the first name.
        assert!(to_fields(&contact("c2", "Bo", None)).is_none());
        let company = GraphContact {
            id: "c3".into(),
            display_name: Some("Contoso Hotline".into()),
            business_phones: Some(vec!["0800 1".into()]),
            ..Default::default()
        };
        assert_eq!(to_fields(&company).unwrap().first_name, "Contoso Hotline");
    }

    #[test]
    fn tags_are_stable_and_dedupe_merges_the_same_person() {
        let f = to_fields(&contact("c1", "Ann", Some("+49 1"))).unwrap();
        let a = tag_for("shared@x", "c1", &f, DedupeBy::None);
        assert!(a.starts_with(OWNED_TAG_PREFIX) && a.len() == OWNED_TAG_PREFIX.len() + 16);
        assert_eq!(a, tag_for("SHARED@x", "c1", &f, DedupeBy::None));
        assert_ne!(a, tag_for("other@x", "c1", &f, DedupeBy::None));
        assert_eq!(
            tag_for("shared@x", "c1", &f, DedupeBy::Email),
            tag_for("other@x", "c9", &f, DedupeBy::Email)
        );
        assert_eq!(
            tag_for("shared@x", "c1", &f, DedupeBy::Phone),
            tag_for("other@x", "c9", &f, DedupeBy::Phone)
        );
    }

    #[test]
    fn a_first_read_creates_and_an_unchanged_book_plans_nothing() {
        let src = source("shared@x");
        let ann = contact("c1", "Ann", Some("+49 1"));
        let bo = contact("c2", "Bo", None);
        let r = read("f", vec![ann.clone(), bo], vec![], true);
        let empty = BookState {
            entries: vec![],
            links: vec![],
        };
        let (a, _) = plan_book(
            &Book::Company,
            &[(&src, &r)],
            &empty,
            DedupeBy::None,
            10,
            true,
        );
        assert_eq!(a.len(), 1);
        assert!(
            matches!(&a[0], ContactAction::Create { fields, .. } if fields.first_name == "Ann")
        );
        let e = entry(7, &ann, "shared@x");
        let state = BookState {
            links: vec![link(&e, "shared@x", "c1", "f")],
            entries: vec![e],
        };
        let (a, _) = plan_book(
            &Book::Company,
            &[(&src, &r)],
            &state,
            DedupeBy::None,
            10,
            true,
        );
        assert!(a.is_empty(), "{a:?}");
    }

    #[test]
    fn changes_moves_and_removals_touch_only_linked_entries() {
        let src = source("shared@x");
        let ann = contact("c1", "Ann", Some("+49 1"));
        let cy = contact("c3", "Cy", Some("+49 3"));
        let (e1, e3) = (entry(1, &ann, "shared@x"), entry(3, &cy, "shared@x"));
        let state = BookState {
            links: vec![
                link(&e1, "shared@x", "c1", "f"),
                link(&e3, "shared@x", "c3", "f"),
            ],
            entries: vec![e1, e3],
        };
        // Ann changed her number and moved to folder g; Cy was deleted.
        let mut ann2 = ann.clone();
        ann2.mobile_phone = Some("+49 2".into());
        let r = SourceRead {
            folders: vec![
                FolderRead {
                    folder: "f".into(),
                    removed: vec!["c1".into(), "c3".into()],
                    ..Default::default()
                },
                FolderRead {
                    folder: "g".into(),
                    changed: vec![ann2],
                    ..Default::default()
                },
            ],
            discovered: None,
        };
        let (a, _) = plan_book(
            &Book::Company,
            &[(&src, &r)],
            &state,
            DedupeBy::None,
            10,
            false,
        );
        assert_eq!(a.len(), 2, "{a:?}");
        assert!(
            matches!(&a[0], ContactAction::Update { pbx_id: 1, fields, links, .. }
            if fields.phone_number == "+492" && links[0].folder_id == "g")
        );
        assert!(matches!(
            &a[1],
            ContactAction::Delete {
                pbx_id: Some(3),
                ..
            }
        ));
    }

    #[test]
    fn a_full_read_removes_leftovers_and_duplicates_and_respects_the_limit() {
        let src = source("shared@x");
        let ann = contact("c1", "Ann", Some("+49 1"));
        let e1 = entry(1, &ann, "shared@x");
        let mut dup = e1.clone();
        dup.id = 2;
        let stray = PbxContact {
            id: 5,
            fields: ContactFields {
                tag: "pbxgate:0000000000000000".into(),
                ..Default::default()
            },
        };
        let old = entry(6, &contact("z9", "Zed", Some("+49 9")), "gone@x");
        let state = BookState {
            links: vec![
                link(&e1, "shared@x", "c1", "f"),
                link(&old, "gone@x", "z9", "f"),
            ],
            entries: vec![e1, dup, stray, old],
        };
        let bo = contact("c2", "Bo", Some("+49 2"));
        let r = read("f", vec![ann, bo], vec![], true);
        let (a, overflow) = plan_book(
            &Book::Company,
            &[(&src, &r)],
            &state,
            DedupeBy::None,
            1,
            true,
        );
        let kinds: Vec<&str> = a.iter().map(Action::kind).collect();
        assert_eq!(kinds, ["delete", "delete", "delete", "skip"], "{a:?}");
        assert!(a.iter().any(|x| matches!(x, ContactAction::Delete { pbx_id: Some(6), unlink, .. } if unlink.len() == 1)));
        assert!(overflow.contains("shared@x"));
    }

    #[test]
    fn deduped_entries_stay_while_any_mailbox_has_the_person() {
        let (s1, s2) = (source("a@x"), source("b@x"));
        let ann = contact("c1", "Ann", Some("+49 1"));
        let r1 = read("f1", vec![ann.clone()], vec![], true);
        let r2 = read(
            "f2",
            vec![contact("d1", "Ann", Some("+49 1"))],
            vec![],
            true,
        );
        let empty = BookState {
            entries: vec![],
            links: vec![],
        };
        let (a, _) = plan_book(
            &Book::Company,
            &[(&s1, &r1), (&s2, &r2)],
            &empty,
            DedupeBy::Email,
            10,
            true,
        );
        assert_eq!(a.len(), 1);
        let ContactAction::Create {
            mut fields, links, ..
        } = a[0].clone()
        else {
            panic!()
        };
        assert_eq!(links.len(), 2);
        fields.tag = tag_for("a@x", "c1", &fields, DedupeBy::Email);
        let e = PbxContact { id: 4, fields };
        let mut l2 = link(&e, "b@x", "d1", "f2");
        l2.book = "company".into();
        let state = BookState {
            links: vec![link(&e, "a@x", "c1", "f1"), l2],
            entries: vec![e],
        };
        let gone = read("f1", vec![], vec!["c1"], false);
        let (a, _) = plan_book(
            &Book::Company,
            &[(&s1, &gone)],
            &state,
            DedupeBy::Email,
            10,
            false,
        );
        assert!(
            matches!(a.as_slice(), [ContactAction::Unlink { .. }]),
            "{a:?}"
        );
    }
}
