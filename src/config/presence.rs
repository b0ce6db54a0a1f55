//! `[sync.presence]`: which 3CX status profile each calendar free/busy status sets
//! (DESIGN §4, presence), and which profiles pbxgate leaves alone.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::HumanDuration;
use super::check::at_least;
use super::error::{ConfigError, Origins};

/// Calendar free/busy → 3CX status profile (DESIGN §4, presence).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceSyncConfig {
    /// Run the presence worker in `serve`.
    pub enabled: bool,
    /// How often free/busy is read from Graph; status changes inside an interval happen on
    /// time anyway, because each read looks ahead.
    pub interval: HumanDuration,
    /// The 3CX profile (internal name) for `busy` and `workingElsewhere`.
    pub busy_profile: String,
    /// The 3CX profile (internal name) for `oof`.
    pub away_profile: String,
    /// Per free/busy status (`free`, `tentative`, `busy`, `oof`, `workingElsewhere`,
    /// `unknown`): the profile to set, or "" for none. Wins over the two keys above.
    pub map: BTreeMap<String, String>,
    /// Profiles pbxgate never overrides (3CX's "Custom 1"/"Custom 2": Lunch, Business Trip).
    pub protected_profiles: Vec<String>,
}

impl Default for PresenceSyncConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            interval: HumanDuration::secs(60),
            busy_profile: "Out of office".into(),
            away_profile: "Away".into(),
            map: BTreeMap::new(),
            protected_profiles: vec!["Custom 1".into(), "Custom 2".into()],
        }
    }
}

/// The free/busy statuses Graph's `scheduleItem.status` takes.
pub const FREE_BUSY_STATUSES: [&str; 6] = [
    "free",
    "tentative",
    "busy",
    "oof",
    "workingElsewhere",
    "unknown",
];

impl PresenceSyncConfig {
    /// Status (lower case) → profile, defaults overlaid with `map`; unmapped statuses absent.
    pub fn mapping(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::from([
            ("busy".to_string(), self.busy_profile.clone()),
            ("workingelsewhere".to_string(), self.busy_profile.clone()),
            ("oof".to_string(), self.away_profile.clone()),
        ]);
        for (status, profile) in &self.map {
            m.insert(status.to_lowercase(), profile.clone());
        }
        m.retain(|_, p| !p.is_empty());
        m
    }

    pub(super) fn validate(&self, o: &Origins) -> Result<(), ConfigError> {
        at_least(
            self.interval,
            HumanDuration::secs(15),
            "sync.presence.interval",
            o,
        )?;
        if let Some(bad) = self
            .map
            .keys()
            .find(|k| !FREE_BUSY_STATUSES.iter().any(|s| s.eq_ignore_ascii_case(k)))
        {
            return Err(o.error(
                &format!("sync.presence.map.{bad}"),
                format!(
                    "not a free/busy status; one of {}",
                    FREE_BUSY_STATUSES.join(", ")
                ),
            ));
        }
        for (key, v) in [
            ("sync.presence.busy_profile", &self.busy_profile),
            ("sync.presence.away_profile", &self.away_profile),
        ] {
            if v.trim().is_empty() {
                return Err(o.error(key, "must name a 3CX profile, e.g. \"Away\""));
            }
        }
        Ok(())
    }
}
