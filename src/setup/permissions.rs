//! Which Microsoft Graph permissions the enabled features need, by GUID (Microsoft's
//! permission data, devx `provisioningInfo.json`; `shared/notes/entra-setup.md` §3).
//! Configured by GUID, never by name: names drift (the notes list a `Calendars.ReadBasic`
//! quirk), ids do not.

use crate::config::Config;

/// Microsoft Graph's app id, the same in every tenant.
pub const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";

pub const USER_READ_ALL: (&str, &str) = ("User.Read.All", "df021288-bdef-4463-88db-98f22de89214");
pub const CALENDARS_READ_BASIC_ALL: (&str, &str) = (
    "Calendars.ReadBasic.All",
    "8ba4a692-bc31-4128-9094-475872af8a53",
);
pub const CONTACTS_READ: (&str, &str) = ("Contacts.Read", "089fe4d0-434a-44c5-8827-41ba8a0b17f5");
pub const GROUP_MEMBER_READ_ALL: (&str, &str) = (
    "GroupMember.Read.All",
    "98830695-27a2-44f7-8c18-0c3ebc9698f6",
);

/// The delegated scopes users sign in with (value, id), consented for all users.
pub const SIGN_IN_SCOPES: [(&str, &str); 3] = [
    ("openid", "37f7f235-527c-4136-accd-4a02d197296e"),
    ("profile", "14dad69e-099b-42c9-810b-d002981feec1"),
    ("email", "64a6cdd6-aab1-4aaf-94b8-3cc8405e90d0"),
];

/// Whether sign-in needs the `groups` claim (and Graph for the overage case).
pub fn uses_groups(c: &Config) -> bool {
    !c.entra.allowed_groups.is_empty() || !c.entra.admin_groups.is_empty()
}

/// The application permissions (app role value, GUID) of the features `c` enables.
/// User.Read.All is always needed: the session recheck (always on) and the sign-in guest
/// check read users (`config::RECHECK_PERMISSION`); the user sync needs it too.
pub fn required_roles(c: &Config) -> Vec<(&'static str, &'static str)> {
    let mut roles = vec![USER_READ_ALL];
    if c.sync.presence.enabled {
        roles.push(CALENDARS_READ_BASIC_ALL);
    }
    if c.sync.contacts.enabled {
        roles.push(CONTACTS_READ);
    }
    if uses_groups(c) {
        roles.push(GROUP_MEMBER_READ_ALL);
    }
    roles
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setup::tests::config;

    #[test]
    fn roles_follow_the_enabled_features() {
        let mut c = config();
        assert_eq!(required_roles(&c), vec![USER_READ_ALL]);
        c.sync.users.enabled = true;
        assert_eq!(required_roles(&c), vec![USER_READ_ALL]);
        c.sync.presence.enabled = true;
        c.sync.contacts.enabled = true;
        c.entra.admin_groups = vec!["g".into()];
        assert_eq!(
            required_roles(&c),
            vec![
                USER_READ_ALL,
                CALENDARS_READ_BASIC_ALL,
                CONTACTS_READ,
                GROUP_MEMBER_READ_ALL
            ]
        );
    }
}
