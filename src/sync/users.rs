//! The users worker: Entra ID users → 3CX extensions, one way (DESIGN §4).
//!
//! Graph `/users/delta` (only the fields used) gives what changed; a full run lists everyone
//! and reconciles. For each wanted user (enabled; members, or guests if configured) the
//! extension is the one pbxgate already knows, else a 3CX extension whose e-mail equals the
//! UPN, else a new one at the first free number. Fields pbxgate owns are kept equal to
//! Entra's; nothing else of an extension is touched. Users disabled or deleted in Entra
//! lose their sessions and, by `on_removed`, their extension is disabled, kept or deleted
//! (deleted only if pbxgate created it). Extensions pbxgate neither created nor matched are
//! never touched, and a `[[directory.overrides]]` entry wins over the sync.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use super::{Action, Mode, Plan, SyncError, Worker, already_gone_is_fine, batch_get};
use crate::clock::Clock;
use crate::config::{Config, OnRemoved};
use crate::directory::{
    Reason, Revoker, WebPasswords, canonical_upn, email_candidates, override_map, suffix_aliases,
};
use crate::graph::{GraphClient, GraphError};
use crate::pbx::{PbxClient, PbxUser, UserFields};
use crate::store::{DirectoryRow, Store};

/// Graph fields read, and nothing more (least data, smaller pages).
pub const SELECT: &str = "id,displayName,givenName,surname,userPrincipalName,mail,businessPhones,mobilePhone,accountEnabled,userType";
const DELTA_STATE: &str = "users.delta_link";
const FULL_STATE: &str = "users.last_full";
/// `sync_items` worker key of the photo etags pbxgate uploaded, by object id.
const PHOTOS: &str = "users.photos";

/// A user as Graph returns it with `SELECT`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GraphUser {
    pub id: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub given_name: Option<String>,
    #[serde(default)]
    pub surname: Option<String>,
    #[serde(default)]
    pub user_principal_name: Option<String>,
    #[serde(default)]
    pub mail: Option<String>,
    #[serde(default)]
    pub business_phones: Vec<String>,
    #[serde(default)]
    pub mobile_phone: Option<String>,
    /// Absent in a delta page when unchanged; treated as enabled.
    #[serde(default)]
    pub account_enabled: Option<bool>,
    #[serde(default)]
    pub user_type: Option<String>,
}

/// One planned change to 3CX or to pbxgate's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserAction {
    /// A new extension for a user.
    Create {
        user: Box<GraphUser>,
        number: String,
        fields: UserFields,
    },
    /// Adopt an existing extension whose e-mail is the user's UPN.
    Match {
        user: Box<GraphUser>,
        pbx: Box<PbxUser>,
    },
    /// Bring the fields pbxgate owns in line with Entra.
    Update {
        user: Box<GraphUser>,
        pbx_id: i64,
        number: String,
        fields: UserFields,
    },
    /// The user is gone or disabled in Entra: disable the extension.
    Disable {
        oid: String,
        upn: String,
        pbx_id: i64,
        number: String,
    },
    /// The user is gone or disabled in Entra: delete the extension pbxgate created.
    Delete {
        oid: String,
        upn: String,
        pbx_id: i64,
        number: String,
    },
    /// The user is gone or disabled in Entra: leave the extension, remember the removal.
    Keep { oid: String, upn: String },
    /// The Entra photo changed (`etag`) or went away (`None`): copy it to the extension.
    Photo {
        oid: String,
        upn: String,
        etag: Option<String>,
    },
}

impl Action for UserAction {
    fn kind(&self) -> &'static str {
        match self {
            Self::Create { .. } => "create",
            Self::Match { .. } => "match",
            Self::Update { .. } => "update",
            Self::Disable { .. } => "disable",
            Self::Delete { .. } => "delete",
            Self::Keep { .. } => "keep",
            Self::Photo { .. } => "photo",
        }
    }

    fn item(&self) -> String {
        match self {
            Self::Create { user, .. } | Self::Match { user, .. } | Self::Update { user, .. } => {
                upn_of(user)
            }
            Self::Disable { upn, .. }
            | Self::Delete { upn, .. }
            | Self::Keep { upn, .. }
            | Self::Photo { upn, .. } => upn.clone(),
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::Create { number, fields, .. } => {
                format!("extension {number}: {}", describe(fields))
            }
            Self::Match { pbx, .. } => format!("extension {} (e-mail matches)", pbx.number),
            Self::Update { number, fields, .. } => {
                format!("extension {number}: {}", describe(fields))
            }
            Self::Disable { number, .. } => format!("extension {number}: disable, end sessions"),
            Self::Delete { number, .. } => format!("extension {number}: delete, end sessions"),
            Self::Keep { .. } => "end sessions, keep the extension".into(),
            Self::Photo { etag: Some(e), .. } => format!("new photo {e}"),
            Self::Photo { etag: None, .. } => "photo removed".into(),
        }
    }
}

fn describe(f: &UserFields) -> String {
    serde_json::to_string(f).unwrap_or_default()
}

fn upn_of(u: &GraphUser) -> String {
    u.user_principal_name
        .clone()
        .unwrap_or_else(|| u.id.clone())
}

/// `+49 (30) 1234-567` → `+49301234567`: the digits-and-plus form 3CX expects.
pub fn normalize_phone(raw: &str) -> String {
    let plus = raw.trim_start().starts_with('+');
    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    if plus { format!("+{digits}") } else { digits }
}

pub struct UsersWorker {
    pub(crate) graph: Arc<GraphClient>,
    pub(crate) pbx: Arc<PbxClient>,
    pub(crate) store: Store,
    pub(crate) revoker: Arc<Revoker>,
    pub(crate) clock: Arc<dyn Clock>,
    tenant_id: String,
    config: crate::config::UsersSyncConfig,
    aliases: BTreeMap<String, String>,
    overrides: BTreeSet<String>,
    /// `[pbx] randomize_web_passwords`, for the extensions this worker creates or adopts.
    web_passwords: WebPasswords,
}

impl UsersWorker {
    pub fn new(
        config: &Config,
        graph: Arc<GraphClient>,
        pbx: Arc<PbxClient>,
        store: Store,
        revoker: Arc<Revoker>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let aliases = suffix_aliases(&config.directory);
        let overrides = override_map(&config.directory, &aliases)
            .into_keys()
            .collect();
        let web_passwords =
            WebPasswords::new(&config.pbx, pbx.clone(), store.clone(), clock.clone());
        Self {
            graph,
            pbx,
            store,
            revoker,
            clock,
            web_passwords,
            tenant_id: config.entra.tenant_id.clone(),
            config: config.sync.users.clone(),
            aliases,
            overrides,
        }
    }

    fn wanted(&self, u: &GraphUser) -> bool {
        let member = u
            .user_type
            .as_deref()
            .is_none_or(|t| t.eq_ignore_ascii_case("Member"));
        u.account_enabled != Some(false) && (member || self.config.include_guests)
    }

    /// The fields pbxgate owns, as Entra says they should be.
    fn desired(&self, u: &GraphUser) -> UserFields {
        let (first, last) = match (&u.given_name, &u.surname) {
            (None, None) => {
                let name = u.display_name.clone().unwrap_or_default();
                match name.rsplit_once(' ') {
                    Some((f, l)) => (f.to_string(), l.to_string()),
                    None => (name, String::new()),
                }
            }
            (f, l) => (f.clone().unwrap_or_default(), l.clone().unwrap_or_default()),
        };
        UserFields {
            first_name: Some(first),
            last_name: Some(last),
            email_address: Some(canonical_upn(&upn_of(u), &self.aliases)),
            mobile: Some(
                u.mobile_phone
                    .as_deref()
                    .map(normalize_phone)
                    .unwrap_or_default(),
            ),
            outbound_caller_id: self.config.outbound_caller_id_from_business_phone.then(|| {
                u.business_phones
                    .first()
                    .map(|p| normalize_phone(p))
                    .unwrap_or_default()
            }),
            enabled: None,
            ..Default::default()
        }
    }

    /// The fields of `want` that differ from what 3CX has (empty: nothing to do).
    fn changes(want: &UserFields, have: &PbxUser) -> UserFields {
        let differs = |w: &Option<String>, h: &Option<String>| {
            w.as_ref()
                .filter(|w| w.as_str() != h.as_deref().unwrap_or(""))
                .cloned()
        };
        UserFields {
            first_name: differs(&want.first_name, &have.first_name),
            last_name: differs(&want.last_name, &have.last_name),
            email_address: want
                .email_address
                .as_ref()
                .filter(|w| !w.eq_ignore_ascii_case(have.email_address.as_deref().unwrap_or("")))
                .cloned(),
            mobile: differs(&want.mobile, &have.mobile),
            outbound_caller_id: differs(&want.outbound_caller_id, &have.outbound_caller_id),
            enabled: None,
            ..Default::default()
        }
    }

    /// Graph's side: changed users and removed ids, and the delta link to keep.
    async fn read_graph(
        &self,
        mode: Mode,
    ) -> Result<(Mode, Vec<GraphUser>, Vec<String>, String), SyncError> {
        let start = format!("/users/delta?$select={SELECT}");
        let link = match mode {
            Mode::Full => None,
            Mode::Delta => self.store.state(DELTA_STATE).await?,
        };
        let (mode, delta) = match link {
            Some(link) => match self.graph.delta::<GraphUser>(&link, None).await {
                Err(GraphError::SyncReset) => {
                    tracing::warn!("users delta token expired; running a full resync");
                    (Mode::Full, self.graph.delta(&start, None).await?)
                }
                other => (Mode::Delta, other?),
            },
            None => (Mode::Full, self.graph.delta(&start, None).await?),
        };
        let removed = delta.removed.into_iter().map(|r| r.id).collect();
        Ok((mode, delta.changed, removed, delta.delta_link))
    }

    fn removal(&self, row: &DirectoryRow, pbx_exists: bool) -> UserAction {
        let (oid, upn, pbx_id, number) = (
            row.object_id.clone(),
            row.upn.clone(),
            row.pbx_user_id,
            row.extension.clone(),
        );
        match self.config.on_removed {
            _ if !pbx_exists => UserAction::Keep { oid, upn },
            OnRemoved::Keep => UserAction::Keep { oid, upn },
            OnRemoved::Delete if row.created_by_pbxgate => UserAction::Delete {
                oid,
                upn,
                pbx_id,
                number,
            },
            OnRemoved::Delete | OnRemoved::Disable => UserAction::Disable {
                oid,
                upn,
                pbx_id,
                number,
            },
        }
    }

    async fn first_number(&self) -> Result<u64, SyncError> {
        let start = match &self.config.extension_start {
            Some(s) => s.clone(),
            None => self.pbx.first_available_number().await?,
        };
        start
            .parse()
            .map_err(|source| SyncError::ExtensionNumber { start, source })
    }

    /// Provisions one user who signed in before the first sync (`provision_on_login`),
    /// through the same plan and apply as a run.
    pub async fn provision(&self, object_id: &str) -> Result<Option<DirectoryRow>, SyncError> {
        let path = format!("/users/{object_id}?$select={SELECT}");
        let user: GraphUser = self.graph.get(&path, None).await?;
        let pbx_users = self.pbx.users(None).await?;
        let rows = self.store.directory_users(&self.tenant_id).await?;
        let actions = self
            .plan_users(&[user], &[], &pbx_users, &rows, Mode::Delta)
            .await?;
        for a in &actions {
            self.apply(a).await?;
        }
        Ok(self
            .store
            .directory_user(&self.tenant_id, object_id)
            .await?)
    }

    async fn plan_users(
        &self,
        changed: &[GraphUser],
        removed: &[String],
        pbx_users: &[PbxUser],
        rows: &[DirectoryRow],
        mode: Mode,
    ) -> Result<Vec<UserAction>, SyncError> {
        let by_id: HashMap<i64, &PbxUser> = pbx_users.iter().map(|u| (u.id, u)).collect();
        let by_email: HashMap<String, &PbxUser> = pbx_users
            .iter()
            .filter_map(|u| Some((u.email_address.as_ref()?.to_lowercase(), u)))
            .collect();
        let rows: HashMap<&str, &DirectoryRow> =
            rows.iter().map(|r| (r.object_id.as_str(), r)).collect();
        let mut taken: BTreeSet<u64> = pbx_users
            .iter()
            .filter_map(|u| u.number.parse().ok())
            .collect();
        let mut next_number: Option<u64> = None;
        let mut actions = Vec::new();
        let mut seen = BTreeSet::new();

        for u in changed {
            seen.insert(u.id.as_str());
            let row = rows
                .get(u.id.as_str())
                .copied()
                .filter(|r| r.source != "override");
            let upn = upn_of(u);
            if self.overrides.contains(&canonical_upn(&upn, &self.aliases)) {
                continue; // a manual assignment wins
            }
            if !self.wanted(u) {
                if let Some(r) = row.filter(|r| r.removed_at.is_none()) {
                    actions.push(self.removal(r, by_id.contains_key(&r.pbx_user_id)));
                }
                continue;
            }
            let want = self.desired(u);
            let existing = row
                .and_then(|r| by_id.get(&r.pbx_user_id).copied())
                .or_else(|| {
                    email_candidates(&upn, &self.aliases)
                        .iter()
                        .find_map(|e| by_email.get(e).copied())
                });
            match existing {
                Some(pbx) => {
                    let returning = row.is_some_and(|r| r.removed_at.is_some());
                    if returning || row.is_none_or(|r| r.pbx_user_id != pbx.id) {
                        actions.push(UserAction::Match {
                            user: Box::new(u.clone()),
                            pbx: Box::new(pbx.clone()),
                        });
                    }
                    let mut fields = Self::changes(&want, pbx);
                    // Back in Entra: undo pbxgate's own disabling, nothing else.
                    if returning && pbx.enabled == Some(false) {
                        fields.enabled = Some(true);
                    }
                    if !fields.is_empty() {
                        actions.push(UserAction::Update {
                            user: Box::new(u.clone()),
                            pbx_id: pbx.id,
                            number: pbx.number.clone(),
                            fields,
                        });
                    }
                }
                None => {
                    let mut n = match next_number {
                        Some(n) => n,
                        None => self.first_number().await?,
                    };
                    while taken.contains(&n) {
                        n += 1;
                    }
                    taken.insert(n);
                    next_number = Some(n + 1);
                    actions.push(UserAction::Create {
                        user: Box::new(u.clone()),
                        number: n.to_string(),
                        fields: want,
                    });
                }
            }
        }
        // Removed in Entra (delta), or absent from a full listing.
        for (oid, row) in &rows {
            let gone =
                removed.iter().any(|r| r == oid) || (mode == Mode::Full && !seen.contains(oid));
            if gone && row.source != "override" && row.removed_at.is_none() {
                actions.push(self.removal(row, by_id.contains_key(&row.pbx_user_id)));
            }
        }
        Ok(actions)
    }

    fn row_for(
        &self,
        user: &GraphUser,
        pbx_id: i64,
        number: &str,
        source: &str,
        created: bool,
    ) -> DirectoryRow {
        DirectoryRow {
            tenant_id: self.tenant_id.clone(),
            object_id: user.id.clone(),
            upn: upn_of(user),
            display_name: user.display_name.clone().unwrap_or_default(),
            extension: number.to_string(),
            pbx_user_id: pbx_id,
            source: source.to_string(),
            managed_password: None,
            updated_at: self.clock.now(),
            created_by_pbxgate: created,
            removed_at: None,
        }
    }

    /// Records that `user` is extension `number`; keeps whether pbxgate created that very
    /// extension, so that only such extensions are ever deleted.
    async fn record(&self, user: &GraphUser, pbx_id: i64, number: &str) -> Result<(), SyncError> {
        let existing = self.store.directory_user(&self.tenant_id, &user.id).await?;
        let (source, created) = existing
            .filter(|r| r.pbx_user_id == pbx_id)
            .map(|r| (r.source, r.created_by_pbxgate))
            .unwrap_or(("match".into(), false));
        let row = self.row_for(user, pbx_id, number, &source, created);
        Ok(self.store.upsert_directory_user(&row).await?)
    }

    /// Photo changes are not in delta: the photo metadata's etag of each user in `users`
    /// (every user on a full run) is compared with the one pbxgate last uploaded, 20
    /// metadata reads a `$batch`.
    async fn plan_photos(&self, users: &[GraphUser]) -> Result<Vec<UserAction>, SyncError> {
        let known = self.store.items(PHOTOS).await?;
        let wanted: Vec<&GraphUser> = users.iter().filter(|u| self.wanted(u)).collect();
        let requests = wanted
            .iter()
            .enumerate()
            .map(|(i, u)| batch_get(i, format!("/users/{}/photo", u.id)))
            .collect();
        let answers = self.graph.batch(requests).await?;
        let mut actions = Vec::new();
        for (u, answer) in wanted.iter().zip(&answers) {
            let etag = match answer.error("photo") {
                // Some tenants answer "no photo" with a 1×1 placeholder (profilephoto-get.md).
                None if answer.body["width"] == 1 && answer.body["height"] == 1 => None,
                None => answer.body["@odata.mediaEtag"].as_str().map(str::to_string),
                // No photo, or no mailbox to hold one.
                Some(GraphError::NotFound(_) | GraphError::MailboxNotEnabled(_)) => None,
                Some(e) => {
                    tracing::warn!(user = %upn_of(u), error = %e, "photo metadata unreadable");
                    continue;
                }
            };
            if etag.as_ref() != known.get(&u.id) {
                actions.push(UserAction::Photo {
                    oid: u.id.clone(),
                    upn: upn_of(u),
                    etag,
                });
            }
        }
        Ok(actions)
    }

    /// Uploads the user's photo as a `data:` URI in `ContactImage` ("" when it went away),
    /// then remembers its etag so that it is uploaded again only when it changes.
    async fn copy_photo(&self, oid: &str, etag: Option<&str>) -> Result<(), SyncError> {
        let Some(row) = self.store.directory_user(&self.tenant_id, oid).await? else {
            return Ok(()); // not (yet) an extension: the next full run tries again
        };
        let image = match etag {
            Some(_) => self
                .graph
                .get_bytes(&format!("/users/{oid}/photo/$value"), Some(oid))
                .await?
                .map(|jpeg| format!("data:image/jpeg;base64,{}", STANDARD.encode(jpeg))),
            None => None,
        };
        let fields = UserFields {
            contact_image: Some(image.unwrap_or_default()),
            ..Default::default()
        };
        self.pbx.update_user(row.pbx_user_id, &fields).await?;
        let now = self.clock.now();
        Ok(self.store.set_item(PHOTOS, oid, etag, now).await?)
    }

    /// The user is gone or disabled in Entra: their sessions and 3CX access end first (a
    /// failure leaves the row unmarked, so the next run tries again), then the row records
    /// the removal.
    async fn mark_removed(&self, oid: &str) -> Result<(), SyncError> {
        let n = self.revoker.revoke_user(oid, Reason::Removed).await?;
        if n > 0 {
            tracing::info!(oid, sessions = n, "ended the sessions of a removed user");
        }
        if let Some(mut row) = self.store.directory_user(&self.tenant_id, oid).await? {
            row.removed_at = Some(self.clock.now());
            row.updated_at = self.clock.now();
            self.store.upsert_directory_user(&row).await?;
        }
        Ok(())
    }
}

impl Worker for UsersWorker {
    type Action = UserAction;
    const NAME: &'static str = "users";

    async fn plan(&self, mode: Mode) -> Result<Plan<UserAction>, SyncError> {
        let (mode, changed, removed, link) = self.read_graph(mode).await?;
        let mut commit = vec![(DELTA_STATE.to_string(), Some(link))];
        if mode == Mode::Full {
            commit.push((FULL_STATE.into(), Some(self.clock.now().to_string())));
        }
        // Nothing changed: no need to read 3CX at all (the cheap, frequent case).
        if mode == Mode::Delta && changed.is_empty() && removed.is_empty() {
            return Ok(Plan {
                mode,
                actions: Vec::new(),
                commit,
            });
        }
        let pbx_users = self.pbx.users(None).await?;
        let rows = self.store.directory_users(&self.tenant_id).await?;
        let mut actions = self
            .plan_users(&changed, &removed, &pbx_users, &rows, mode)
            .await?;
        if self.config.photos {
            actions.extend(self.plan_photos(&changed).await?);
        }
        Ok(Plan {
            mode,
            actions,
            commit,
        })
    }

    async fn apply(&self, action: &UserAction) -> Result<(), SyncError> {
        match action {
            UserAction::Create {
                user,
                number,
                fields,
            } => {
                let created = self.pbx.create_user(number, fields).await?;
                let row = self.row_for(user, created.id, &created.number, "sync", true);
                self.store.upsert_directory_user(&row).await?;
                self.web_passwords
                    .randomize_or_log(created.id, &created.number)
                    .await;
            }
            UserAction::Match { user, pbx } => {
                self.record(user, pbx.id, &pbx.number).await?;
                self.web_passwords
                    .randomize_or_log(pbx.id, &pbx.number)
                    .await;
            }
            UserAction::Update {
                user,
                pbx_id,
                number,
                fields,
            } => {
                self.pbx.update_user(*pbx_id, fields).await?;
                self.record(user, *pbx_id, number).await?;
                self.web_passwords.randomize_or_log(*pbx_id, number).await;
            }
            UserAction::Disable { oid, pbx_id, .. } => {
                let off = UserFields {
                    enabled: Some(false),
                    ..Default::default()
                };
                self.pbx.update_user(*pbx_id, &off).await?;
                self.mark_removed(oid).await?;
            }
            UserAction::Delete { oid, pbx_id, .. } => {
                already_gone_is_fine(self.pbx.delete_user(*pbx_id).await)?;
                self.mark_removed(oid).await?;
            }
            UserAction::Keep { oid, .. } => self.mark_removed(oid).await?,
            UserAction::Photo { oid, etag, .. } => self.copy_photo(oid, etag.as_deref()).await?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_are_normalised() {
        assert_eq!(normalize_phone("+49 (30) 1234-567"), "+49301234567");
        assert_eq!(normalize_phone("030 1234"), "0301234");
    }
}
