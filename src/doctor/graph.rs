//! The Microsoft Graph lines: the permissions the app-only token says were granted against
//! what each enabled feature needs, and one small real read per feature (a 403 there is the
//! answer that counts, whatever the token says).

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::roles::{self, Feature};
use super::{Area, Check};
use crate::clock::{UnixTime, format_utc};
use crate::config::Config;

const AREA: Area = Area::Graph;

pub(super) async fn check(
    config: &Config,
    token: Option<&SecretString>,
    http: &reqwest::Client,
    now: UnixTime,
) -> Vec<Check> {
    let features = roles::enabled(config);
    let Some(token) = token else {
        let why = "no app-only token (see entra.credential)";
        return vec![
            Check::skip(AREA, "graph.roles", "Permissions granted", why),
            Check::skip(AREA, "graph.users", "Reads users", why),
        ];
    };
    let mut checks = vec![roles_line(config, &features, token.expose_secret())];
    let probe = Probe {
        http,
        root: format!(
            "{}/v1.0",
            config.entra.graph_url.as_str().trim_end_matches('/')
        ),
        token,
    };
    let user = probe.users(&mut checks).await;
    let on = |f| features.contains(&f);
    let u = user.as_ref();
    checks.push(if on(Feature::Presence) {
        probe.presence(u, now).await
    } else {
        Check::skip(
            AREA,
            "graph.presence",
            "Reads calendars (free/busy)",
            "the presence sync is off",
        )
    });
    checks.push(if on(Feature::Contacts) {
        probe.contacts(config, u).await
    } else {
        Check::skip(
            AREA,
            "graph.contacts",
            "Reads contacts",
            "the contact sync is off",
        )
    });
    checks.push(if on(Feature::GroupsOverage) {
        probe.groups(config, u).await
    } else {
        Check::skip(
            AREA,
            "graph.groups",
            "Reads group memberships",
            "no allowed_groups or admin_groups",
        )
    });
    checks
}

fn grant_fix(config: &Config, roles: &[&str]) -> String {
    format!(
        "in Entra ID → App registrations → {} → API permissions, add the Microsoft Graph \
         application permission {} and grant admin consent (a Privileged Role Administrator \
         or Global Administrator can); then wait a few minutes",
        config.entra.client_id,
        roles.join(", ")
    )
}

/// `graph.roles`: the token's `roles` against the enabled features.
fn roles_line(config: &Config, features: &[Feature], token: &str) -> Check {
    const TITLE: &str = "Permissions granted";
    let Some(granted) = roles::token_roles(token) else {
        return Check::skip(
            AREA,
            "graph.roles",
            TITLE,
            "the token is not a readable JWT; the reads below decide",
        );
    };
    let missing = roles::missing(features, &granted);
    if missing.is_empty() {
        let shown = if granted.is_empty() {
            "none".to_string()
        } else {
            granted.join(", ")
        };
        return Check::pass(AREA, "graph.roles", TITLE, format!("granted: {shown}"));
    }
    let mut needed: Vec<&str> = missing.iter().map(|f| f.role()).collect();
    needed.dedup();
    let detail = missing
        .iter()
        .map(|f| format!("{} needs {}", f.label(), f.role()))
        .collect::<Vec<_>>()
        .join("; ");
    Check::fail(AREA, "graph.roles", TITLE, format!("missing: {detail}"))
        .fix(grant_fix(config, &needed))
}

/// A user to ask about: its object id and address.
struct User {
    id: String,
    address: String,
}

struct Probe<'a> {
    http: &'a reqwest::Client,
    root: String,
    token: &'a SecretString,
}

/// A Graph answer: the status and, on failure, `error.code` and `error.message`.
struct Answer {
    status: u16,
    body: Value,
}

impl Answer {
    fn error(&self) -> String {
        let e = &self.body["error"];
        format!(
            "Graph answered {}: {}: {}",
            self.status,
            e["code"].as_str().unwrap_or(""),
            e["message"].as_str().unwrap_or("")
        )
    }
}

impl Probe<'_> {
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Answer, String> {
        let res = req
            .bearer_auth(self.token.expose_secret())
            .send()
            .await
            .map_err(|e| format!("Graph is unreachable: {}", crate::errors::error_chain(&e)))?;
        let status = res.status().as_u16();
        let body = res.json().await.unwrap_or(Value::Null);
        Ok(Answer { status, body })
    }

    /// One line from a read's answer: 2xx passes, 403 means the permission is missing (or,
    /// with `ErrorAccessDenied`, a mailbox outside an application access policy).
    fn line(
        &self,
        id: &'static str,
        title: &str,
        role: &str,
        answer: Result<Answer, String>,
        ok: &str,
    ) -> Check {
        let a = match answer {
            Ok(a) => a,
            Err(e) => {
                return Check::fail(AREA, id, title, e)
                    .fix("check that this host reaches entra.graph_url");
            }
        };
        if (200..300).contains(&a.status) {
            return Check::pass(AREA, id, title, ok);
        }
        let code = a.body["error"]["code"].as_str().unwrap_or("");
        let fix = match (a.status, code) {
            (403, "ErrorAccessDenied") => "an Exchange application access policy (or RBAC for Applications) excludes this mailbox: include it in the policy's scope".to_string(),
            (403, _) => format!("grant the Microsoft Graph application permission {role} with admin consent"),
            (401, _) => "Graph refused the token: check entra.graph_url and the tenant".to_string(),
            _ => "see the detail; try again later if Graph is failing".to_string(),
        };
        Check::fail(AREA, id, title, a.error()).fix(fix)
    }

    /// `graph.users`: `GET /users?$top=1`; returns that user for the other reads.
    async fn users(&self, checks: &mut Vec<Check>) -> Option<User> {
        let req = self
            .http
            .get(format!("{}/users", self.root))
            .query(&[("$top", "1"), ("$select", "id,userPrincipalName,mail")]);
        let answer = self.send(req).await;
        let user = answer.as_ref().ok().and_then(|a| {
            let u = &a.body["value"][0];
            Some(User {
                id: u["id"].as_str()?.to_string(),
                address: u["mail"]
                    .as_str()
                    .or(u["userPrincipalName"].as_str())?
                    .to_string(),
            })
        });
        checks.push(self.line(
            "graph.users",
            "Reads users (user sync, session recheck)",
            Feature::Users.role(),
            answer,
            "read a user (GET /users?$top=1)",
        ));
        user
    }

    /// `graph.presence`: `getSchedule` for one user over the next hour.
    async fn presence(&self, user: Option<&User>, now: UnixTime) -> Check {
        const TITLE: &str = "Reads calendars (free/busy)";
        let Some(u) = user else {
            return Check::skip(
                AREA,
                "graph.presence",
                TITLE,
                "needs a user to ask about (see graph.users)",
            );
        };
        let req = self
            .http
            .post(format!("{}/users/{}/calendar/getSchedule", self.root, u.id))
            .json(&json!({
                "schedules": [u.address],
                "startTime": {"dateTime": format_utc(now), "timeZone": "UTC"},
                "endTime": {"dateTime": format_utc(now + 3600), "timeZone": "UTC"},
                "availabilityViewInterval": 60,
            }));
        let answer = self.send(req).await;
        self.line(
            "graph.presence",
            TITLE,
            Feature::Presence.role(),
            answer,
            "read one user's free/busy",
        )
    }

    /// `graph.contacts`: the first shared mailbox's contact folders, else one user's.
    async fn contacts(&self, config: &Config, user: Option<&User>) -> Check {
        const TITLE: &str = "Reads contacts";
        let mailbox = match (config.sync.contacts.shared_mailboxes.first(), user) {
            (Some(m), _) => m.clone(),
            (None, Some(u)) => u.id.clone(),
            (None, None) => {
                return Check::skip(
                    AREA,
                    "graph.contacts",
                    TITLE,
                    "needs a mailbox to read (see graph.users)",
                );
            }
        };
        let req = self
            .http
            .get(format!("{}/users/{mailbox}/contactFolders", self.root))
            .query(&[("$top", "1")]);
        let answer = self.send(req).await;
        self.line(
            "graph.contacts",
            TITLE,
            Feature::Contacts.role(),
            answer,
            &format!("read the contact folders of {mailbox}"),
        )
    }

    /// `graph.groups`: `checkMemberGroups` for one user and one configured group.
    async fn groups(&self, config: &Config, user: Option<&User>) -> Check {
        const TITLE: &str = "Reads group memberships";
        let e = &config.entra;
        let (Some(u), Some(group)) = (user, e.allowed_groups.iter().chain(&e.admin_groups).next())
        else {
            return Check::skip(
                AREA,
                "graph.groups",
                TITLE,
                "needs a user to ask about (see graph.users)",
            );
        };
        let req = self
            .http
            .post(format!("{}/users/{}/checkMemberGroups", self.root, u.id))
            .json(&json!({ "groupIds": [group] }));
        let answer = self.send(req).await;
        self.line(
            "graph.groups",
            TITLE,
            Feature::GroupsOverage.role(),
            answer,
            "checked one user's group membership",
        )
    }
}
