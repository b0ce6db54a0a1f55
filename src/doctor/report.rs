//! What a live check found: one line per check, ✔ / ! / ✘ with what to fix. The same report
//! is printed by `pbxgate doctor`, shown on `/admin` and summarised in `/readyz`.

use serde::Serialize;

use crate::clock::UnixTime;

/// The outside party a check is about (the checklist's sections).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Area {
    Entra,
    Graph,
    Pbx,
    Store,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Works.
    Pass,
    /// Works now, but needs attention (e.g. a secret expiring within 30 days).
    Warn,
    /// An enabled feature cannot work.
    Fail,
    /// Not checked: its feature is off, or an earlier check it depends on failed.
    Skip,
}

/// One line of the checklist.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub area: Area,
    /// Stable id (`entra.discovery`, `graph.roles`, …): the admin console translates titles by it.
    pub id: &'static str,
    /// Short English title.
    pub title: String,
    pub status: Status,
    /// What was found (never a secret or a token).
    pub detail: String,
    /// What the admin should do, when the status is not `Pass`.
    pub fix: Option<String>,
}

/// Every check of one run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub checked_at: UnixTime,
    pub checks: Vec<Check>,
}

impl Report {
    /// True when every enabled feature can work (warnings allowed): `doctor`'s exit code 0.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail)
    }
}

impl Check {
    fn new(area: Area, id: &'static str, title: &str, status: Status, detail: String) -> Self {
        Self {
            area,
            id,
            title: title.to_string(),
            status,
            detail,
            fix: None,
        }
    }

    pub fn pass(area: Area, id: &'static str, title: &str, detail: impl Into<String>) -> Self {
        Self::new(area, id, title, Status::Pass, detail.into())
    }

    pub fn warn(area: Area, id: &'static str, title: &str, detail: impl Into<String>) -> Self {
        Self::new(area, id, title, Status::Warn, detail.into())
    }

    pub fn fail(area: Area, id: &'static str, title: &str, detail: impl Into<String>) -> Self {
        Self::new(area, id, title, Status::Fail, detail.into())
    }

    pub fn skip(area: Area, id: &'static str, title: &str, detail: impl Into<String>) -> Self {
        Self::new(area, id, title, Status::Skip, detail.into())
    }

    /// Adds what the admin should do.
    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

impl Report {
    /// The ids of the checks that failed (`/readyz`, the metric's alerts).
    pub fn failing(&self) -> Vec<&'static str> {
        self.checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| c.id)
            .collect()
    }

    /// The check with `id`, if it ran.
    pub fn get(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }
}
