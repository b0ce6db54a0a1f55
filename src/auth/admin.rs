//! The admin decision at sign-in: a member of an `admin_groups` group (from the ID token's
//! `groups` claim, or Graph's `checkMemberGroups` when the token signals group overage, as
//! for `allowed_groups`) is an admin for the whole session. Decided once and kept with the
//! session, so the admin console costs no Graph call per page.

use http::request::Parts;

use super::SignIn;
use crate::oidc::IdClaims;

/// Whether the signed-in user is in one of `admin_groups`. When Graph cannot tell (overage
/// and Graph down), the user signs in as a non-admin: the console is not worth failing the
/// sign-in for, and nobody becomes an admin by an outage.
pub async fn is_admin(s: &SignIn, claims: &IdClaims) -> bool {
    let admins = &s.settings.admin_groups;
    if admins.is_empty() {
        return false;
    }
    if !claims.groups_overage() {
        return claims.groups.as_ref().is_some_and(|g| {
            g.iter()
                .any(|x| admins.iter().any(|a| a.eq_ignore_ascii_case(x)))
        });
    }
    let oid = claims.oid.clone().unwrap_or_default();
    match s.graph.member_groups(&oid, admins).await {
        Ok(found) => !found.is_empty(),
        Err(e) => {
            tracing::warn!(error = %e, "group overage: Graph could not tell admin membership; signed in as non-admin");
            false
        }
    }
}

/// The browser's `User-Agent`, shortened to what the sessions page shows.
pub fn user_agent(parts: &Parts) -> Option<String> {
    let ua = parts.headers.get(http::header::USER_AGENT)?.to_str().ok()?;
    Some(ua.chars().take(200).collect())
}
