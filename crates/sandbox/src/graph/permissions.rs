//! Which application permission each simulated endpoint needs: the least-privileged one from
//! `shared/notes/graph-entra.md` §2.8 and `entra-setup.md` §3.1, or any higher one Microsoft's
//! permission pages list for it.

const USERS: &[&str] = &[
    "User.Read.All",
    "User.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
const CONTACTS: &[&str] = &["Contacts.Read", "Contacts.ReadWrite"];
const CALENDARS: &[&str] = &[
    "Calendars.ReadBasic.All",
    "Calendars.Read",
    "Calendars.ReadWrite",
];
/// checkMemberGroups: GroupMember.Read.All or a directory-wide read (notes §2.8 say "not
/// verified in this pass"; the sim takes these).
const GROUPS: &[&str] = &[
    "GroupMember.Read.All",
    "Group.Read.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];

/// The roles of which a token needs one for `path` (`/v1.0/…`); empty for paths the sim
/// does not serve (their own error answers them).
pub(super) fn needed(path: &str) -> &'static [&'static str] {
    let Some(rest) = path.strip_prefix("/v1.0/users") else {
        return &[];
    };
    let mut segments = rest.trim_start_matches('/').split('/');
    let _user = segments.next();
    match segments.next() {
        None | Some("photo" | "photos") => USERS,
        Some("contacts" | "contactFolders") => CONTACTS,
        Some("calendar" | "calendarView" | "events") => CALENDARS,
        Some("checkMemberGroups" | "getMemberObjects" | "getMemberGroups") => GROUPS,
        Some(_) => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::needed;

    #[test]
    fn each_endpoint_names_its_permission() {
        assert!(needed("/v1.0/users").contains(&"User.Read.All"));
        assert!(needed("/v1.0/users/delta").contains(&"User.Read.All"));
        assert!(needed("/v1.0/users/abc/photo/$value").contains(&"User.Read.All"));
        assert_eq!(
            needed("/v1.0/users/abc/contactFolders/x/contacts/delta"),
            super::CONTACTS
        );
        assert!(
            needed("/v1.0/users/abc/calendar/getSchedule").contains(&"Calendars.ReadBasic.All")
        );
        assert!(needed("/v1.0/users/abc/checkMemberGroups").contains(&"GroupMember.Read.All"));
        assert!(!needed("/v1.0/users/abc/contacts").contains(&"User.Read.All"));
        assert!(needed("/v1.0/me").is_empty());
    }
}
