//! Who is who: an Entra user, keyed on (tenant id, object id), and their 3CX extension.
//!
//! Resolution order: a config override (by UPN) wins; then what the store knows (filled by
//! the user sync, or by an earlier match); then a 3CX extension whose e-mail address equals
//! the UPN, compared case-insensitively and through `upn_suffix_aliases`.
//!
//! Sign-in refuses what the user sync would refuse: a user the sync marked removed, an
//! extension that belongs to another Entra object id (a new hire with a leaver's recycled
//! UPN must not inherit the leaver's extension, voicemail and recordings), and a disabled
//! extension. A manual override is the administrator's own decision and is not second-guessed
//! about links. Guests are refused by the caller, which asks Graph ([`is_guest`]).

mod passwords;
mod revoke;
mod web_passwords;

pub use passwords::{ManagedPasswords, PasswordError};
pub use revoke::{Reason, RevokeError, Revoker, object_id_of, user_key};
pub use web_passwords::WebPasswords;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::clock::Clock;
use crate::config::DirectoryConfig;
use crate::pbx::{PbxClient, PbxError, PbxUser};
use crate::store::{DirectoryRow, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pbx(#[from] PbxError),
    #[error("override for {upn}: extension {extension} does not exist in 3CX")]
    MissingOverrideExtension { upn: String, extension: String },
}

/// A signed-in Entra user, as the token tells.
#[derive(Debug, Clone)]
pub struct Identity {
    pub tenant_id: String,
    pub object_id: String,
    pub upn: String,
    pub display_name: String,
}

/// The outcome of a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Found(DirectoryRow),
    /// No extension is assigned to this UPN.
    NotAssigned {
        upn: String,
    },
    /// There is an extension, but this user may not have it.
    Refused(Refusal),
}

/// Why the directory will not hand a user the extension it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The user sync found the user disabled or deleted in Entra (`removed_at`).
    Removed { extension: String },
    /// The extension is recorded for another Entra object id.
    LinkedToAnother {
        extension: String,
        other_object_id: String,
    },
    /// The extension is disabled in 3CX.
    ExtensionDisabled { extension: String },
}

/// A guest, as Entra tells: Graph's `userType` (what the user sync decides by), or a guest
/// UPN (`…#EXT#@…`, `shared/notes/graph-entra.md` §1.4) when the token carries one.
pub fn is_guest(user_type: Option<&str>, upn: &str) -> bool {
    user_type.is_some_and(|t| t.eq_ignore_ascii_case("Guest"))
        || upn.to_ascii_uppercase().contains("#EXT#")
}

pub struct Directory {
    store: Store,
    pbx: Arc<PbxClient>,
    clock: Arc<dyn Clock>,
    aliases: BTreeMap<String, String>,
    overrides: BTreeMap<String, String>,
}

impl Directory {
    pub fn new(
        config: &DirectoryConfig,
        store: Store,
        pbx: Arc<PbxClient>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let aliases = suffix_aliases(config);
        let overrides = override_map(config, &aliases);
        Self {
            store,
            pbx,
            clock,
            aliases,
            overrides,
        }
    }

    /// The extension of `who`, or why there is none (or why they may not have it).
    /// UPN suffix aliases, lower case (the admin console canonicalises overrides with them).
    pub fn aliases(&self) -> &BTreeMap<String, String> {
        &self.aliases
    }

    pub async fn resolve(&self, who: &Identity) -> Result<Resolution, DirectoryError> {
        let canonical = canonical_upn(&who.upn, &self.aliases);
        // The config file's overrides win over those added in the admin console.
        let overridden = match self.overrides.get(&canonical) {
            Some(extension) => Some(extension.clone()),
            None => self.store.override_of(&canonical).await?,
        };
        if let Some(extension) = &overridden {
            let user = self.pbx.user_by_number(extension).await?.ok_or_else(|| {
                DirectoryError::MissingOverrideExtension {
                    upn: who.upn.clone(),
                    extension: extension.clone(),
                }
            })?;
            if user.enabled == Some(false) {
                return Ok(disabled(&user.number));
            }
            return self.remember(who, &user.number, user.id, "override").await;
        }
        if let Some(row) = self
            .store
            .directory_user(&who.tenant_id, &who.object_id)
            .await?
            .filter(|r| r.source != "override")
        {
            return self.admit(row).await;
        }
        let candidates = email_candidates(&who.upn, &self.aliases);
        let matches = self.pbx.users_by_email(&candidates).await?;
        // Prefer the extension whose address is the canonical form; then the lowest number.
        let rank = |u: &&PbxUser| {
            let email = u.email_address.as_deref().unwrap_or("").to_lowercase();
            (email != canonical, u.number.len(), u.number.clone())
        };
        let best = matches
            .iter()
            .filter(|u| u.enabled != Some(false))
            .min_by_key(rank);
        match best {
            Some(user) => {
                if let Some(refusal) = self.linked_elsewhere(who, user.id, &user.number).await? {
                    return Ok(Resolution::Refused(refusal));
                }
                self.remember(who, &user.number, user.id, "match").await
            }
            None => Ok(match matches.iter().min_by_key(rank) {
                Some(off) => disabled(&off.number),
                None => Resolution::NotAssigned {
                    upn: who.upn.clone(),
                },
            }),
        }
    }

    /// A stored row passes if the sync has not removed the user, nobody else holds the
    /// extension, and it is enabled in 3CX.
    pub async fn admit(&self, row: DirectoryRow) -> Result<Resolution, DirectoryError> {
        if row.removed_at.is_some() {
            return Ok(Resolution::Refused(Refusal::Removed {
                extension: row.extension,
            }));
        }
        let who = Identity {
            tenant_id: row.tenant_id.clone(),
            object_id: row.object_id.clone(),
            upn: row.upn.clone(),
            display_name: String::new(),
        };
        if let Some(refusal) = self
            .linked_elsewhere(&who, row.pbx_user_id, &row.extension)
            .await?
        {
            return Ok(Resolution::Refused(refusal));
        }
        match self.pbx.user_by_number(&row.extension).await? {
            Some(u) if u.enabled == Some(false) => Ok(disabled(&row.extension)),
            _ => Ok(Resolution::Found(row)),
        }
    }

    /// Whether 3CX user `pbx_user_id` is recorded for another Entra user of the tenant
    /// (typically a leaver whose UPN was given to a new hire).
    async fn linked_elsewhere(
        &self,
        who: &Identity,
        pbx_user_id: i64,
        extension: &str,
    ) -> Result<Option<Refusal>, DirectoryError> {
        let rows = self
            .store
            .directory_users_of_extension(&who.tenant_id, pbx_user_id)
            .await?;
        Ok(rows
            .into_iter()
            .find(|r| r.object_id != who.object_id)
            .map(|r| Refusal::LinkedToAnother {
                extension: extension.to_string(),
                other_object_id: r.object_id,
            }))
    }

    async fn remember(
        &self,
        who: &Identity,
        extension: &str,
        pbx_user_id: i64,
        source: &str,
    ) -> Result<Resolution, DirectoryError> {
        let existing = self
            .store
            .directory_user(&who.tenant_id, &who.object_id)
            .await?;
        let row = DirectoryRow {
            tenant_id: who.tenant_id.clone(),
            object_id: who.object_id.clone(),
            upn: who.upn.clone(),
            display_name: who.display_name.clone(),
            extension: extension.to_string(),
            pbx_user_id,
            source: source.to_string(),
            managed_password: None,
            updated_at: self.clock.now(),
            // Still pbxgate's own extension if the sync made this very one.
            created_by_pbxgate: existing
                .as_ref()
                .is_some_and(|e| e.created_by_pbxgate && e.pbx_user_id == pbx_user_id),
            removed_at: None,
        };
        self.store.upsert_directory_user(&row).await?;
        // Read back: the stored row carries a managed password set earlier.
        let stored = self
            .store
            .directory_user(&who.tenant_id, &who.object_id)
            .await?;
        Ok(Resolution::Found(stored.unwrap_or(row)))
    }
}

fn disabled(extension: &str) -> Resolution {
    Resolution::Refused(Refusal::ExtensionDisabled {
        extension: extension.to_string(),
    })
}

/// `upn_suffix_aliases` in lower case, as every comparison wants it.
pub fn suffix_aliases(config: &DirectoryConfig) -> BTreeMap<String, String> {
    config
        .upn_suffix_aliases
        .iter()
        .map(|(k, v)| (k.to_lowercase(), v.to_lowercase()))
        .collect()
}

/// `[[directory.overrides]]` as canonical UPN → extension.
pub fn override_map(
    config: &DirectoryConfig,
    aliases: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    config
        .overrides
        .iter()
        .map(|o| {
            (
                canonical_upn(&o.upn, aliases),
                o.extension.trim().to_string(),
            )
        })
        .collect()
}

/// Lower case, with an aliased suffix replaced by the suffix used in 3CX.
pub fn canonical_upn(upn: &str, aliases: &BTreeMap<String, String>) -> String {
    let upn = upn.trim().to_lowercase();
    match upn.rsplit_once('@') {
        Some((local, domain)) => match aliases.get(domain) {
            Some(published) => format!("{local}@{published}"),
            None => upn,
        },
        None => upn,
    }
}

/// The e-mail addresses in 3CX that identify `upn`: its canonical form, the form as given,
/// and the form under every alias of the canonical suffix.
pub fn email_candidates(upn: &str, aliases: &BTreeMap<String, String>) -> Vec<String> {
    let canonical = canonical_upn(upn, aliases);
    let mut out = vec![canonical.clone(), upn.trim().to_lowercase()];
    if let Some((local, domain)) = canonical.rsplit_once('@') {
        for (alias, published) in aliases {
            if published == domain {
                out.push(format!("{local}@{alias}"));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aliases() -> BTreeMap<String, String> {
        [("contoso.local".to_string(), "contoso.com".to_string())].into()
    }

    #[test]
    fn guests_are_told_by_user_type_or_guest_upn() {
        assert!(is_guest(Some("Guest"), "gina@fabrikam.com"));
        assert!(is_guest(
            None,
            "gina_fabrikam.com#EXT#@contoso.onmicrosoft.com"
        ));
        assert!(!is_guest(Some("Member"), "alice@contoso.com"));
        assert!(!is_guest(None, "alice@contoso.com"));
    }

    #[test]
    fn upns_compare_case_insensitively_through_aliases() {
        let a = aliases();
        assert_eq!(
            canonical_upn("Alice.Adams@Contoso.LOCAL", &a),
            "alice.adams@contoso.com"
        );
        assert_eq!(canonical_upn("Bob@Fabrikam.com", &a), "bob@fabrikam.com");
        assert_eq!(
            email_candidates("Alice@contoso.com", &a),
            vec!["alice@contoso.com", "alice@contoso.local"]
        );
    }
}
