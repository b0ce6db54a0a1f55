//! The presence worker: calendar free/busy → 3CX status profile, and back (DESIGN §4).
//!
//! Each read asks Graph `getSchedule` for every synced user (20 mailboxes a call, 20 calls a
//! `$batch`) over a window reaching past the next read, and keeps the answer; in between,
//! the scheduler wakes the worker at each meeting boundary, so a meeting at 10:00 switches
//! the status at 10:00 rather than up to an interval late. 3CX is read only for users whose
//! profile must change, and written only when it really changes.
//!
//! When pbxgate sets a profile it stores the one the user had (`sync_items`), before it
//! writes: a restart or another replica restores it when the meeting ends, unless the user
//! picked another profile meanwhile. A user on a protected profile (Lunch, Business Trip),
//! or already on the meeting's profile, is left alone for that meeting.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Action, Mode, Plan, SyncError, Worker};
use crate::clock::{Clock, UnixTime, format_utc};
use crate::config::{Config, PresenceSyncConfig};
use crate::graph::{BatchRequest, GraphClient, GraphError};
use crate::pbx::PbxClient;
use crate::store::{DirectoryRow, Store};

/// The `sync_items` worker key.
const ITEMS: &str = "presence";
/// Mailboxes per `getSchedule` call (calendar-getschedule.md).
pub const SCHEDULES_PER_CALL: usize = 20;
/// `$batch` envelopes sent at once.
const BATCHES_IN_FLIGHT: usize = 4;
/// A mailbox Graph refuses is asked again after this long, not every tick.
const SKIP_SECS: i64 = 24 * 3600;
/// The window read reaches at least this far ahead.
const MIN_WINDOW_SECS: i64 = 15 * 60;
/// 3CX's profile when nothing else is known.
const AVAILABLE: &str = "Available";

/// Free/busy statuses from the busiest down: when meetings overlap, the first mapped one wins.
const PRIORITY: [&str; 6] = [
    "oof",
    "busy",
    "workingelsewhere",
    "tentative",
    "unknown",
    "free",
];

/// What pbxgate remembers about a user while a mapped status is on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Held {
    /// pbxgate set `set`; `previous` comes back when no mapped status is on any more.
    Set {
        set: String,
        previous: String,
        since: UnixTime,
    },
    /// A mapped status is on but pbxgate left the profile alone; nothing to restore.
    Left { reason: String, since: UnixTime },
}

/// A mailbox Graph would not answer for, and until when it is not asked again.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Skipped {
    reason: String,
    until: UnixTime,
}

/// One busy period of a user's calendar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub start: UnixTime,
    pub end: UnixTime,
    /// Lower case.
    pub status: String,
}

/// The last `getSchedule` read.
#[derive(Debug, Default)]
struct Read {
    at: UnixTime,
    /// Up to when the slots are complete.
    until: UnixTime,
    /// Object id → slots.
    slots: HashMap<String, Vec<Slot>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceAction {
    /// A mapped status began: store the current profile, then set `profile`.
    Set {
        oid: String,
        upn: String,
        pbx_id: i64,
        profile: String,
        previous: String,
    },
    /// Another mapped status took over (busy → oof) while pbxgate holds the profile.
    Switch {
        oid: String,
        upn: String,
        pbx_id: i64,
        profile: String,
        previous: String,
    },
    /// No mapped status any more: put back what the user had.
    Restore {
        oid: String,
        upn: String,
        pbx_id: i64,
        profile: String,
    },
    /// A mapped status began but the profile stays (protected, or already that one).
    Leave {
        oid: String,
        upn: String,
        reason: String,
    },
    /// Stop holding the user's profile without writing (they changed it, or nothing was set).
    Forget {
        oid: String,
        upn: String,
        reason: String,
    },
    /// Graph refused the mailbox: recorded, asked again after a day.
    Skip {
        oid: String,
        upn: String,
        reason: String,
    },
    /// Graph could not answer for the user this time: an error on the run, nothing changed.
    Unread { upn: String, reason: String },
}

impl Action for PresenceAction {
    fn kind(&self) -> &'static str {
        match self {
            Self::Set { .. } => "set",
            Self::Switch { .. } => "switch",
            Self::Restore { .. } => "restore",
            Self::Leave { .. } => "leave",
            Self::Forget { .. } => "forget",
            Self::Skip { .. } => "skip",
            Self::Unread { .. } => "unread",
        }
    }

    fn item(&self) -> String {
        match self {
            Self::Set { upn, .. }
            | Self::Switch { upn, .. }
            | Self::Restore { upn, .. }
            | Self::Leave { upn, .. }
            | Self::Forget { upn, .. }
            | Self::Skip { upn, .. }
            | Self::Unread { upn, .. } => upn.clone(),
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::Set {
                profile, previous, ..
            }
            | Self::Switch {
                profile, previous, ..
            } => format!("{profile:?} (then back to {previous:?})"),
            Self::Restore { profile, .. } => format!("back to {profile:?}"),
            Self::Leave { reason, .. }
            | Self::Forget { reason, .. }
            | Self::Skip { reason, .. }
            | Self::Unread { reason, .. } => reason.clone(),
        }
    }
}

/// The profile a user's calendar asks for at `t`, by `mapping` (lower-case status → profile).
pub fn wanted_at(
    slots: &[Slot],
    t: UnixTime,
    mapping: &BTreeMap<String, String>,
) -> Option<String> {
    PRIORITY
        .iter()
        .filter(|status| {
            slots
                .iter()
                .any(|s| s.start <= t && t < s.end && s.status == **status)
        })
        .find_map(|status| mapping.get(*status).cloned())
}

/// The first meeting boundary after `t` (where the wanted profile may change).
pub fn next_boundary(slots: &[Slot], t: UnixTime) -> Option<UnixTime> {
    slots
        .iter()
        .flat_map(|s| [s.start, s.end])
        .filter(|b| *b > t)
        .min()
}

pub struct PresenceWorker {
    graph: Arc<GraphClient>,
    pbx: Arc<PbxClient>,
    store: Store,
    clock: Arc<dyn Clock>,
    tenant_id: String,
    config: PresenceSyncConfig,
    mapping: BTreeMap<String, String>,
    last: Mutex<Option<Read>>,
}

impl PresenceWorker {
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
            mapping: config.sync.presence.mapping(),
            config: config.sync.presence.clone(),
            last: Mutex::new(None),
        }
    }

    fn interval(&self) -> i64 {
        self.config.interval.get().as_secs() as i64
    }

    /// When the scheduler should run the worker next: the next read, or an earlier meeting
    /// boundary within what was read.
    pub fn next_due(&self, now: UnixTime) -> UnixTime {
        let guard = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let Some(read) = guard.as_ref() else {
            return now + self.interval();
        };
        let next_read = read.at + self.interval();
        read.slots
            .values()
            .filter_map(|s| next_boundary(s, now))
            .filter(|b| *b < read.until)
            .fold(next_read, i64::min)
    }

    /// The cached read, if it is still fresh for `now`.
    fn cached(&self, now: UnixTime) -> Option<HashMap<String, Vec<Slot>>> {
        let guard = self.last.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .as_ref()
            .filter(|r| now < r.at + self.interval() && now < r.until)
            .map(|r| r.slots.clone())
    }

    /// The body of one `getSchedule` call. Times in UTC; the answer's times are UTC too, as
    /// no `Prefer: outlook.timezone` is sent.
    fn schedule_body(&self, addresses: &[&str], now: UnixTime) -> Value {
        let window = (2 * self.interval()).max(MIN_WINDOW_SECS);
        json!({
            "schedules": addresses,
            "startTime": {"dateTime": format_utc(now - 60), "timeZone": "UTC"},
            "endTime": {"dateTime": format_utc(now + window), "timeZone": "UTC"},
            "availabilityViewInterval": 15,
        })
    }

    /// Reads free/busy for `users` (object id, address) through `$batch`ed `getSchedule`
    /// calls. Each call is made as its first user's mailbox, which spreads the calls over
    /// mailboxes (Outlook allows 4 concurrent requests per mailbox); when that mailbox is
    /// refused, it is skipped and the call repeated as the next one.
    async fn read_schedules(
        &self,
        users: &[(&str, &str)],
        now: UnixTime,
        actions: &mut Vec<PresenceAction>,
    ) -> Result<HashMap<String, Vec<Slot>>, SyncError> {
        let by_address: HashMap<String, &str> = users
            .iter()
            .map(|(oid, addr)| (addr.to_lowercase(), *oid))
            .collect();
        let mut pending: Vec<Vec<&str>> = users
            .chunks(SCHEDULES_PER_CALL)
            .map(|c| c.iter().map(|(_, a)| *a).collect())
            .collect();
        let mut slots = HashMap::new();
        let mut failures = 0;
        let calls = pending.len();
        while !pending.is_empty() {
            let requests = pending
                .iter()
                .enumerate()
                .map(|(i, chunk)| BatchRequest {
                    id: i.to_string(),
                    method: "POST".into(),
                    url: format!("/users/{}/calendar/getSchedule", chunk[0]),
                    body: Some(self.schedule_body(chunk, now)),
                    headers: Some(HashMap::from([(
                        "Content-Type".to_string(),
                        "application/json".to_string(),
                    )])),
                })
                .collect();
            let answers = self.batches(requests).await?;
            let mut again = Vec::new();
            for (chunk, answer) in pending.iter().zip(&answers) {
                match answer.error(&format!("getSchedule as {}", chunk[0])) {
                    None => parse_schedules(&answer.body, &by_address, &mut slots, actions),
                    Some(e @ (GraphError::MailboxNotEnabled(_) | GraphError::AccessDenied(_))) => {
                        let oid = by_address.get(&chunk[0].to_lowercase()).copied();
                        actions.push(PresenceAction::Skip {
                            oid: oid.unwrap_or_default().to_string(),
                            upn: chunk[0].to_string(),
                            reason: e.to_string(),
                        });
                        if chunk.len() > 1 {
                            again.push(chunk[1..].to_vec());
                        }
                    }
                    Some(e) => {
                        failures += 1;
                        for a in chunk {
                            actions.push(PresenceAction::Unread {
                                upn: a.to_string(),
                                reason: e.to_string(),
                            });
                        }
                        if failures == calls {
                            return Err(e.into()); // Graph is down, not one mailbox
                        }
                    }
                }
            }
            pending = again;
        }
        Ok(slots)
    }

    /// `$batch` envelopes of 20, a few in flight at once: a tick for 10,000 users is 25
    /// envelopes, and one at a time would leave most of the interval waiting on Graph.
    async fn batches(
        &self,
        requests: Vec<BatchRequest>,
    ) -> Result<Vec<crate::graph::BatchResponse>, GraphError> {
        use futures_util::{StreamExt, TryStreamExt};
        let groups: Vec<Vec<BatchRequest>> = requests
            .chunks(SCHEDULES_PER_CALL)
            .map(<[BatchRequest]>::to_vec)
            .collect();
        let answers: Vec<Vec<_>> = futures_util::stream::iter(groups)
            .map(|g| self.graph.batch(g))
            .buffered(BATCHES_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(answers.into_iter().flatten().collect())
    }

    /// The slots of every user, from the last read if it is fresh (a boundary wake-up) or a
    /// new read; `Full` always reads.
    async fn slots(
        &self,
        mode: Mode,
        rows: &[&DirectoryRow],
        now: UnixTime,
        actions: &mut Vec<PresenceAction>,
    ) -> Result<HashMap<String, Vec<Slot>>, SyncError> {
        if mode == Mode::Delta
            && let Some(slots) = self.cached(now)
        {
            return Ok(slots);
        }
        let users: Vec<(&str, &str)> = rows
            .iter()
            .map(|r| (r.object_id.as_str(), r.upn.as_str()))
            .collect();
        let slots = self.read_schedules(&users, now, actions).await?;
        let window = (2 * self.interval()).max(MIN_WINDOW_SECS);
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(Read {
            at: now,
            until: now + window,
            slots: slots.clone(),
        });
        Ok(slots)
    }

    fn protected(&self, profile: &str) -> bool {
        self.config
            .protected_profiles
            .iter()
            .any(|p| p.eq_ignore_ascii_case(profile))
    }

    /// The action for a user whose profile may change, given what 3CX shows now.
    fn decide(
        &self,
        row: &DirectoryRow,
        wanted: Option<&str>,
        held: Option<&Held>,
        current: &str,
    ) -> PresenceAction {
        let (oid, upn, pbx_id) = (row.object_id.clone(), row.upn.clone(), row.pbx_user_id);
        match (wanted, held) {
            (Some(_), None) if self.protected(current) => PresenceAction::Leave {
                oid,
                upn,
                reason: format!("{current:?} is protected"),
            },
            (Some(p), None) if current.eq_ignore_ascii_case(p) => PresenceAction::Leave {
                oid,
                upn,
                reason: format!("already {current:?}"),
            },
            (Some(p), None) => PresenceAction::Set {
                oid,
                upn,
                pbx_id,
                profile: p.to_string(),
                previous: current.to_string(),
            },
            (_, Some(Held::Set { set, .. })) if !current.eq_ignore_ascii_case(set) => {
                PresenceAction::Forget {
                    oid,
                    upn,
                    reason: format!("changed by the user to {current:?}"),
                }
            }
            (Some(p), Some(Held::Set { previous, .. })) => PresenceAction::Switch {
                oid,
                upn,
                pbx_id,
                profile: p.to_string(),
                previous: previous.clone(),
            },
            (None, Some(Held::Set { previous, .. })) => PresenceAction::Restore {
                oid,
                upn,
                pbx_id,
                profile: if previous.is_empty() {
                    AVAILABLE.into()
                } else {
                    previous.clone()
                },
            },
            (_, _) => PresenceAction::Forget {
                oid,
                upn,
                reason: "nothing to do".into(),
            },
        }
    }

    async fn remember(&self, oid: &str, held: Option<&Held>) -> Result<(), SyncError> {
        let value = held.map(|h| serde_json::to_string(h).unwrap_or_default());
        let now = self.clock.now();
        Ok(self
            .store
            .set_item(ITEMS, oid, value.as_deref(), now)
            .await?)
    }
}

impl Worker for PresenceWorker {
    type Action = PresenceAction;
    const NAME: &'static str = "presence";

    async fn plan(&self, mode: Mode) -> Result<Plan<PresenceAction>, SyncError> {
        let now = self.clock.now();
        let items = self.store.items(ITEMS).await?;
        let held: HashMap<&str, Held> = items
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), serde_json::from_str(v).ok()?)))
            .collect();
        let skipped: HashMap<&str, Skipped> = items
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("skip:")?, serde_json::from_str(v).ok()?)))
            .filter(|(_, s): &(&str, Skipped)| s.until > now)
            .collect();
        let all = self.store.directory_users(&self.tenant_id).await?;
        let rows: Vec<&DirectoryRow> = all
            .iter()
            .filter(|r| r.removed_at.is_none() && !skipped.contains_key(r.object_id.as_str()))
            .collect();
        let mut actions = Vec::new();
        let slots = self.slots(mode, &rows, now, &mut actions).await?;
        let unread: Vec<String> = actions.iter().map(Action::item).collect();

        // Who may need a change: only those are looked up in 3CX.
        let mut candidates = Vec::new();
        for row in &rows {
            if unread.iter().any(|u| u.eq_ignore_ascii_case(&row.upn)) {
                continue;
            }
            let wanted = slots
                .get(&row.object_id)
                .and_then(|s| wanted_at(s, now, &self.mapping));
            let h = held.get(row.object_id.as_str());
            match (&wanted, h) {
                (None, None) | (Some(_), Some(Held::Left { .. })) => {}
                (Some(p), Some(Held::Set { set, .. })) if p.eq_ignore_ascii_case(set) => {}
                (None, Some(Held::Left { .. })) => actions.push(PresenceAction::Forget {
                    oid: row.object_id.clone(),
                    upn: row.upn.clone(),
                    reason: "the meeting is over; nothing was changed".into(),
                }),
                _ => candidates.push((*row, wanted, h)),
            }
        }
        if !candidates.is_empty() {
            let ids: Vec<i64> = candidates.iter().map(|(r, ..)| r.pbx_user_id).collect();
            // 20 ids a filtered call, or 100 users a page of everyone: whichever is fewer.
            let filtered = ids.len().div_ceil(20) <= rows.len().div_ceil(100);
            let current = self.pbx.profiles(filtered.then_some(&ids[..])).await?;
            for (row, wanted, h) in candidates {
                match current.get(&row.pbx_user_id) {
                    Some(c) => actions.push(self.decide(row, wanted.as_deref(), h, c)),
                    None => actions.push(PresenceAction::Unread {
                        upn: row.upn.clone(),
                        reason: format!("extension {} is not in 3CX", row.extension),
                    }),
                }
            }
        }
        Ok(Plan {
            mode,
            actions,
            commit: Vec::new(),
        })
    }

    async fn apply(&self, action: &PresenceAction) -> Result<(), SyncError> {
        let now = self.clock.now();
        match action {
            // Stored before the write: a crash in between leaves a record whose `set` 3CX
            // never showed, which the end of the meeting forgets without writing.
            PresenceAction::Set {
                oid,
                pbx_id,
                profile,
                previous,
                ..
            } => {
                let held = Held::Set {
                    set: profile.clone(),
                    previous: previous.clone(),
                    since: now,
                };
                self.remember(oid, Some(&held)).await?;
                if let Err(e) = self.pbx.set_profile(*pbx_id, profile).await {
                    self.remember(oid, None).await?;
                    return Err(e.into());
                }
            }
            PresenceAction::Switch {
                oid,
                pbx_id,
                profile,
                previous,
                ..
            } => {
                self.pbx.set_profile(*pbx_id, profile).await?;
                let held = Held::Set {
                    set: profile.clone(),
                    previous: previous.clone(),
                    since: now,
                };
                self.remember(oid, Some(&held)).await?;
            }
            PresenceAction::Restore {
                oid,
                pbx_id,
                profile,
                ..
            } => {
                self.pbx.set_profile(*pbx_id, profile).await?;
                self.remember(oid, None).await?;
            }
            PresenceAction::Leave { oid, reason, .. } => {
                let held = Held::Left {
                    reason: reason.clone(),
                    since: now,
                };
                self.remember(oid, Some(&held)).await?;
            }
            PresenceAction::Forget { oid, .. } => self.remember(oid, None).await?,
            PresenceAction::Skip { oid, reason, .. } => {
                let skip = Skipped {
                    reason: reason.clone(),
                    until: now + SKIP_SECS,
                };
                let value = serde_json::to_string(&skip).unwrap_or_default();
                self.store
                    .set_item(ITEMS, &format!("skip:{oid}"), Some(&value), now)
                    .await?;
                tracing::info!(user = %action.item(), %reason, "free/busy skipped for a day");
            }
            PresenceAction::Unread { reason, .. } => {
                return Err(SyncError::Unread {
                    reason: reason.clone(),
                });
            }
        }
        Ok(())
    }
}

/// The `scheduleInformation` items of one `getSchedule` answer, into `slots` by object id;
/// an item with an `error` (an address Exchange cannot resolve) becomes a skip.
fn parse_schedules(
    body: &Value,
    by_address: &HashMap<String, &str>,
    slots: &mut HashMap<String, Vec<Slot>>,
    actions: &mut Vec<PresenceAction>,
) {
    let infos = body.get("value").and_then(Value::as_array);
    for info in infos.into_iter().flatten() {
        let address = info.get("scheduleId").and_then(Value::as_str).unwrap_or("");
        let Some(oid) = by_address.get(&address.to_lowercase()) else {
            continue;
        };
        if let Some(err) = info.get("error").filter(|e| !e.is_null()) {
            let code = err
                .get("responseCode")
                .and_then(Value::as_str)
                .unwrap_or("");
            let msg = err.get("message").and_then(Value::as_str).unwrap_or("");
            actions.push(PresenceAction::Skip {
                oid: oid.to_string(),
                upn: address.to_string(),
                reason: format!("{code}: {msg}"),
            });
            continue;
        }
        let items = info.get("scheduleItems").and_then(Value::as_array);
        let parsed = items.into_iter().flatten().filter_map(|i| {
            Some(Slot {
                start: parse_time(i.get("start")?)?,
                end: parse_time(i.get("end")?)?,
                // Graph's concept page capitalises ("Busy"), its reference does not.
                status: i.get("status")?.as_str()?.to_ascii_lowercase(),
            })
        });
        slots.entry(oid.to_string()).or_default().extend(parsed);
    }
}

/// A `dateTimeTimeZone` in UTC (what Graph answers without `Prefer: outlook.timezone`).
fn parse_time(v: &Value) -> Option<UnixTime> {
    let tz = v.get("timeZone").and_then(Value::as_str).unwrap_or("UTC");
    if !tz.eq_ignore_ascii_case("UTC") {
        tracing::warn!(tz, "getSchedule answered in a time zone other than UTC");
        return None;
    }
    crate::clock::parse_utc(v.get("dateTime")?.as_str()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(start: i64, end: i64, status: &str) -> Slot {
        Slot {
            start,
            end,
            status: status.into(),
        }
    }

    fn mapping() -> BTreeMap<String, String> {
        PresenceSyncConfig::default().mapping()
    }

    #[test]
    fn the_busiest_mapped_status_wins_and_boundaries_are_half_open() {
        let m = mapping();
        let slots = [
            slot(100, 200, "busy"),
            slot(150, 300, "oof"),
            slot(300, 400, "tentative"),
        ];
        assert_eq!(wanted_at(&slots, 99, &m), None);
        assert_eq!(wanted_at(&slots, 100, &m).as_deref(), Some("Out of office"));
        assert_eq!(wanted_at(&slots, 150, &m).as_deref(), Some("Away"));
        assert_eq!(wanted_at(&slots, 299, &m).as_deref(), Some("Away"));
        // Tentative maps to nothing, and an end is exclusive.
        assert_eq!(wanted_at(&slots, 300, &m), None);
        assert_eq!(next_boundary(&slots, 100), Some(150));
        assert_eq!(next_boundary(&slots, 400), None);
    }

    #[test]
    fn back_to_back_meetings_leave_no_gap() {
        let m = mapping();
        let slots = [slot(0, 1800, "busy"), slot(1800, 3600, "workingelsewhere")];
        for t in [0, 1799, 1800, 3599] {
            assert_eq!(wanted_at(&slots, t, &m).as_deref(), Some("Out of office"));
        }
    }

    #[test]
    fn the_map_overrides_and_can_switch_a_status_off() {
        let mut cfg = PresenceSyncConfig::default();
        cfg.map.insert("workingElsewhere".into(), String::new());
        cfg.map.insert("Tentative".into(), "Custom 1".into());
        let m = cfg.mapping();
        assert_eq!(wanted_at(&[slot(0, 10, "workingelsewhere")], 5, &m), None);
        assert_eq!(
            wanted_at(&[slot(0, 10, "tentative")], 5, &m).as_deref(),
            Some("Custom 1")
        );
    }

    #[test]
    fn schedules_parse_case_insensitively_and_errors_become_skips() {
        let body = json!({"value": [
            {"scheduleId": "Alice@Contoso.com", "scheduleItems": [
                {"status": "Busy", "start": {"dateTime": "2026-11-29T10:00:00.0000000", "timeZone": "UTC"},
                 "end": {"dateTime": "2026-11-29T10:30:00.0000000", "timeZone": "UTC"}}]},
            {"scheduleId": "nobody@contoso.com", "error": {"message": "no", "responseCode": "ErrorMailRecipientNotFound"}}
        ]});
        let by = HashMap::from([
            ("alice@contoso.com".to_string(), "a"),
            ("nobody@contoso.com".to_string(), "n"),
        ]);
        let (mut slots, mut actions) = (HashMap::new(), Vec::new());
        parse_schedules(&body, &by, &mut slots, &mut actions);
        let start = jiff::Timestamp::from_second(slots["a"][0].start).unwrap();
        assert_eq!(start.to_string(), "2026-11-29T10:00:00Z");
        assert_eq!(slots["a"][0].status, "busy");
        assert_eq!(slots["a"][0].end - slots["a"][0].start, 1800);
        assert!(matches!(&actions[0], PresenceAction::Skip { oid, .. } if oid == "n"));
    }
}
