//! `[sync]`, `[sync.users]` and `[sync.contacts]`: the sync workers (DESIGN §4) that copy
//! Entra users and Exchange contacts to 3CX, and when they run.

use serde::{Deserialize, Serialize};

use super::check::at_least;
use super::error::{ConfigError, Origins};
use super::schedule::{Schedule, TimeOfDay, Zone};
use super::{HumanDuration, PresenceSyncConfig};

/// The sync workers (DESIGN §4).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    pub contacts: ContactsSyncConfig,
    pub users: UsersSyncConfig,
    pub presence: PresenceSyncConfig,
}

impl SyncConfig {
    pub(super) fn validate(&self, o: &Origins) -> Result<(), ConfigError> {
        self.contacts.validate(o)?;
        self.users.validate(o)?;
        self.presence.validate(o)
    }
}

/// Which contact folders of a mailbox the contact sync reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContactFolders {
    /// The default Contacts folder only (what 3CX's own Exchange sync reads).
    Default,
    /// The default folder and all its subfolders, at any depth.
    All,
}

/// How the company phonebook merges the same person found in several shared mailboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DedupeBy {
    /// One entry per contact per mailbox.
    None,
    /// One entry per first e-mail address (contacts without one are not merged).
    Email,
    /// One entry per first phone number.
    Phone,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContactsSyncConfig {
    /// Run the contacts worker in `serve`.
    pub enabled: bool,
    /// Incremental (delta) runs this often.
    pub interval: HumanDuration,
    /// The daily time (HH:MM, in `time_zone`) of the full reconcile.
    pub full_sync_at: TimeOfDay,
    pub time_zone: Zone,
    /// Mailboxes (UPN or object id) whose contacts make up the company phonebook.
    pub shared_mailboxes: Vec<String>,
    /// Synced users' own contacts → their personal phonebooks. Off by default: the 3CX call
    /// it relies on is undocumented (README, "Contact sync").
    pub personal: bool,
    pub folders: ContactFolders,
    pub dedupe_by: DedupeBy,
    /// At most this many pbxgate entries in the company phonebook; beyond it, contacts are
    /// reported and not created.
    pub max_company_contacts: usize,
    /// At most this many pbxgate entries per personal phonebook (keep it at or below 3CX's
    /// `PersonalContactsMaxCount` minus room for the user's own entries).
    pub max_personal_contacts: usize,
    /// A mailbox found without Exchange (or blocked by an access policy) is left alone this
    /// long before it is tried again (full runs try it at once).
    pub mailbox_retry: HumanDuration,
    /// Phonebook writes sent to 3CX at the same time. 3CX publishes no limit; one it
    /// enforces (429/503 with Retry-After) is honoured, but a small number is kind to the PBX.
    pub pbx_concurrency: usize,
}

/// `pbx_concurrency`: at least one write at a time, and no flood.
const PBX_CONCURRENCY: std::ops::RangeInclusive<usize> = 1..=32;

impl Default for ContactsSyncConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            interval: DEFAULT_INTERVAL,
            full_sync_at: DEFAULT_FULL_SYNC_AT,
            time_zone: Zone::utc(),
            shared_mailboxes: Vec::new(),
            personal: false,
            folders: ContactFolders::All,
            dedupe_by: DedupeBy::None,
            max_company_contacts: 10_000,
            max_personal_contacts: 500,
            mailbox_retry: HumanDuration::secs(24 * 3600),
            pbx_concurrency: 4,
        }
    }
}

impl ContactsSyncConfig {
    /// When the contacts worker runs.
    pub fn schedule(&self) -> Schedule {
        Schedule::new(self.interval.get(), self.full_sync_at, &self.time_zone)
    }

    fn validate(&self, o: &Origins) -> Result<(), ConfigError> {
        at_least(self.interval, MIN_INTERVAL, "sync.contacts.interval", o)?;
        if self.shared_mailboxes.iter().any(|m| m.trim().is_empty()) {
            return Err(o.error(
                "sync.contacts.shared_mailboxes",
                "entries must be a UPN or an object id",
            ));
        }
        if !PBX_CONCURRENCY.contains(&self.pbx_concurrency) {
            return Err(o.error(
                "sync.contacts.pbx_concurrency",
                "must be between 1 and 32 (writes sent to 3CX at the same time)",
            ));
        }
        Ok(())
    }
}

/// What the user sync does when a user is disabled or deleted in Entra ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnRemoved {
    /// Disable the extension (default): nothing is lost, the number stays reserved.
    Disable,
    /// Leave the extension as it is.
    Keep,
    /// Delete the extension, if pbxgate created it (a matched extension is disabled instead).
    Delete,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UsersSyncConfig {
    /// Run the users worker in `serve`.
    pub enabled: bool,
    /// Incremental (delta) runs this often.
    pub interval: HumanDuration,
    /// The daily time (HH:MM, in `time_zone`) of the full reconcile: every user, and
    /// extensions deleted in 3CX.
    pub full_sync_at: TimeOfDay,
    /// IANA time zone of `full_sync_at`, e.g. "Europe/Berlin".
    pub time_zone: Zone,
    /// First extension number to hand out; unset: 3CX's GetFirstAvailableExtensionNumber.
    pub extension_start: Option<String>,
    pub include_guests: bool,
    pub on_removed: OnRemoved,
    /// Set the extension's outbound caller ID from the user's first business phone.
    pub outbound_caller_id_from_business_phone: bool,
    /// Provision a user who signs in before the first sync, through the same code path.
    pub provision_on_login: bool,
    /// Copy Entra profile photos to the extensions (`ContactImage`; format unverified, see
    /// the README). Checked when a user is created and at each full reconcile.
    pub photos: bool,
}

impl Default for UsersSyncConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            interval: DEFAULT_INTERVAL,
            full_sync_at: DEFAULT_FULL_SYNC_AT,
            time_zone: Zone::utc(),
            extension_start: None,
            include_guests: false,
            on_removed: OnRemoved::Disable,
            outbound_caller_id_from_business_phone: false,
            provision_on_login: true,
            photos: false,
        }
    }
}

impl UsersSyncConfig {
    /// When the users worker runs.
    pub fn schedule(&self) -> Schedule {
        Schedule::new(self.interval.get(), self.full_sync_at, &self.time_zone)
    }

    fn validate(&self, o: &Origins) -> Result<(), ConfigError> {
        if let Some(start) = &self.extension_start
            && (start.is_empty() || !start.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(o.error("sync.users.extension_start", "must be digits, e.g. \"200\""));
        }
        at_least(self.interval, MIN_INTERVAL, "sync.users.interval", o)
    }
}

/// Users and contacts are read from Graph at most once a minute.
const MIN_INTERVAL: HumanDuration = HumanDuration::secs(60);
/// Delta runs of users and contacts, by default.
const DEFAULT_INTERVAL: HumanDuration = HumanDuration::secs(15 * 60);
/// The nightly full reconcile of users and contacts, by default (in UTC).
const DEFAULT_FULL_SYNC_AT: TimeOfDay = TimeOfDay::hm(2, 0);
