//! Which Microsoft Graph application permission each enabled feature needs, and which ones
//! an app-only token says were granted (its `roles` claim, decoded, not verified: Microsoft
//! warns that Graph tokens are not for clients to validate, so this is a diagnostic hint and
//! the real reads in `graph` decide).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::config::Config;

/// A feature that reads Microsoft Graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// The user sync (`[sync.users]`).
    Users,
    /// The session recheck and the sign-in's guest check (always on).
    SessionRecheck,
    /// The presence sync (`[sync.presence]`).
    Presence,
    /// The contact sync (`[sync.contacts]`).
    Contacts,
    /// Group checks when the ID token's group list overflows (`allowed_groups`/`admin_groups`).
    GroupsOverage,
}

impl Feature {
    /// The least-privileged application permission (notes/graph-entra.md §2.8).
    pub fn role(self) -> &'static str {
        match self {
            Self::Users | Self::SessionRecheck => "User.Read.All",
            Self::Presence => "Calendars.ReadBasic.All",
            Self::Contacts => "Contacts.Read",
            Self::GroupsOverage => "GroupMember.Read.All",
        }
    }

    /// Permissions that include [`Feature::role`] (a tenant may have granted a higher one).
    fn accepted(self) -> &'static [&'static str] {
        match self {
            Self::Users | Self::SessionRecheck => &[
                "User.Read.All",
                "User.ReadWrite.All",
                "Directory.Read.All",
                "Directory.ReadWrite.All",
            ],
            Self::Presence => &[
                "Calendars.ReadBasic.All",
                "Calendars.Read",
                "Calendars.ReadWrite",
            ],
            Self::Contacts => &["Contacts.Read", "Contacts.ReadWrite"],
            Self::GroupsOverage => &[
                "GroupMember.Read.All",
                "Group.Read.All",
                "Directory.Read.All",
                "Directory.ReadWrite.All",
            ],
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Users => "user sync",
            Self::SessionRecheck => "session recheck",
            Self::Presence => "presence sync",
            Self::Contacts => "contact sync",
            Self::GroupsOverage => "group checks (allowed_groups/admin_groups)",
        }
    }
}

/// The features `config` turns on, in checklist order.
pub fn enabled(config: &Config) -> Vec<Feature> {
    let mut f = Vec::new();
    if config.sync.users.enabled {
        f.push(Feature::Users);
    }
    f.push(Feature::SessionRecheck);
    if config.sync.presence.enabled {
        f.push(Feature::Presence);
    }
    if config.sync.contacts.enabled {
        f.push(Feature::Contacts);
    }
    if !config.entra.allowed_groups.is_empty() || !config.entra.admin_groups.is_empty() {
        f.push(Feature::GroupsOverage);
    }
    f
}

/// The features whose permission `granted` lacks, each with the role to grant.
pub fn missing(features: &[Feature], granted: &[String]) -> Vec<Feature> {
    features
        .iter()
        .copied()
        .filter(|f| !f.accepted().iter().any(|a| granted.iter().any(|g| g == a)))
        .collect()
}

/// The `roles` of a JWT access token (an empty list when the claim is absent, as Entra leaves
/// it out when nothing is granted); `None` when the token is not a readable JWT.
pub fn token_roles(token: &str) -> Option<Vec<String>> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let roles = match claims.get("roles") {
        None => Vec::new(),
        Some(r) => r
            .as_array()?
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
    };
    Some(roles)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: serde_json::Value) -> String {
        format!(
            "eyJhbGciOiJSUzI1NiJ9.{}.sig",
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    #[test]
    fn each_feature_needs_its_least_privileged_role() {
        let all = [
            Feature::Users,
            Feature::SessionRecheck,
            Feature::Presence,
            Feature::Contacts,
            Feature::GroupsOverage,
        ];
        let granted = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(
            missing(
                &all,
                &granted(&[
                    "User.Read.All",
                    "Calendars.ReadBasic.All",
                    "Contacts.Read",
                    "GroupMember.Read.All"
                ])
            )
            .is_empty()
        );
        assert_eq!(
            missing(&all, &granted(&["User.Read.All", "Contacts.Read"])),
            vec![Feature::Presence, Feature::GroupsOverage]
        );
        // A higher permission covers the lower one.
        assert!(missing(&[Feature::Presence], &granted(&["Calendars.Read"])).is_empty());
        assert!(
            missing(
                &[Feature::Users, Feature::GroupsOverage],
                &granted(&["Directory.Read.All"])
            )
            .is_empty()
        );
        assert_eq!(missing(&[Feature::Users], &[]), vec![Feature::Users]);
    }

    #[test]
    fn roles_are_read_from_the_token_without_verifying_it() {
        let t = jwt(serde_json::json!({"roles": ["User.Read.All", "Contacts.Read"]}));
        assert_eq!(
            token_roles(&t),
            Some(vec![
                "User.Read.All".to_string(),
                "Contacts.Read".to_string()
            ])
        );
        assert_eq!(
            token_roles(&jwt(serde_json::json!({"aud": "x"}))),
            Some(vec![])
        );
        assert_eq!(token_roles("opaque-token"), None);
        assert_eq!(token_roles("a.!!!.c"), None);
    }

    #[test]
    fn features_follow_the_config() {
        let mut c = super::super::tests::config("");
        c.sync.users.enabled = false;
        c.sync.presence.enabled = false;
        c.sync.contacts.enabled = false;
        c.entra.allowed_groups.clear();
        c.entra.admin_groups.clear();
        assert_eq!(enabled(&c), vec![Feature::SessionRecheck]);
        c.sync.presence.enabled = true;
        c.entra.admin_groups = vec!["g".into()];
        assert_eq!(
            enabled(&c),
            vec![
                Feature::SessionRecheck,
                Feature::Presence,
                Feature::GroupsOverage
            ]
        );
    }
}
