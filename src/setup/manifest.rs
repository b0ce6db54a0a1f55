//! The app registration pbxgate needs, as Graph's `application` JSON (what `setup --print`
//! shows and what `setup` writes), and how an existing registration is brought to it without
//! dropping what an admin added (a PATCH replaces whole collections; notes §2.2).

use serde_json::{Value, json};

use super::permissions::{GRAPH_APP_ID, SIGN_IN_SCOPES, required_roles, uses_groups};
use crate::config::Config;

/// `pbxgate-<host>`: stable per installation, so a second run updates instead of duplicating.
pub fn unique_name(c: &Config) -> String {
    let host = c.server.public_url.host_str().unwrap_or("localhost");
    format!("pbxgate-{host}")
}

fn base(c: &Config) -> String {
    c.server
        .public_url
        .as_str()
        .trim_end_matches('/')
        .to_string()
}

/// The redirect URIs: the sign-in callback and the signed-out page (post-logout redirect).
pub fn redirect_uris(c: &Config) -> Vec<String> {
    let base = base(c);
    vec![
        format!("{base}/auth/callback"),
        format!("{base}/auth/signed-out"),
    ]
}

pub fn logout_url(c: &Config) -> String {
    format!("{}/auth/frontchannel-logout", base(c))
}

fn graph_access(c: &Config) -> Vec<Value> {
    let scopes = SIGN_IN_SCOPES
        .iter()
        .map(|(_, id)| json!({"id": id, "type": "Scope"}));
    let roles = required_roles(c)
        .into_iter()
        .map(|(_, id)| json!({"id": id, "type": "Role"}));
    scopes.chain(roles).collect()
}

fn groups_claim() -> Value {
    json!({"name": "groups", "source": null, "essential": false, "additionalProperties": []})
}

/// The whole registration for a new app (Graph property names, for `PATCH /applications`).
pub fn manifest(c: &Config) -> Value {
    let host = c.server.public_url.host_str().unwrap_or("localhost");
    let mut m = json!({
        "displayName": format!("pbxgate ({host})"),
        "signInAudience": "AzureADMyOrg",
        "web": {
            "redirectUris": redirect_uris(c),
            "logoutUrl": logout_url(c),
            "implicitGrantSettings": {"enableIdTokenIssuance": false, "enableAccessTokenIssuance": false},
        },
        "requiredResourceAccess": [{"resourceAppId": GRAPH_APP_ID, "resourceAccess": graph_access(c)}],
    });
    if uses_groups(c) {
        m["groupMembershipClaims"] = json!("SecurityGroup");
        m["optionalClaims"] =
            json!({"idToken": [groups_claim()], "accessToken": [], "saml2Token": []});
    }
    m
}

/// The properties of `existing` that must change for `c`, merged with what is there; empty
/// when the registration already fits.
pub fn changes(c: &Config, existing: &Value) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    let mut web = existing["web"].clone();
    if !web.is_object() {
        web = json!({});
    }
    let mut uris: Vec<Value> = web["redirectUris"].as_array().cloned().unwrap_or_default();
    for u in redirect_uris(c) {
        if !uris.contains(&json!(u)) {
            uris.push(json!(u));
        }
    }
    let logout = json!(logout_url(c));
    if json!(uris) != web["redirectUris"] || web["logoutUrl"] != logout {
        web["redirectUris"] = json!(uris);
        web["logoutUrl"] = logout;
        out.insert("web".into(), web);
    }
    let mut access: Vec<Value> = existing["requiredResourceAccess"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let before = access.clone();
    let graph = match access
        .iter()
        .position(|r| r["resourceAppId"] == GRAPH_APP_ID)
    {
        Some(i) => i,
        None => {
            access.push(json!({"resourceAppId": GRAPH_APP_ID, "resourceAccess": []}));
            access.len() - 1
        }
    };
    for want in graph_access(c) {
        let list = &mut access[graph]["resourceAccess"];
        let has = list.as_array().is_some_and(|l| {
            l.iter()
                .any(|a| a["id"] == want["id"] && a["type"] == want["type"])
        });
        if !has && let Some(l) = list.as_array_mut() {
            l.push(want);
        }
    }
    if access != before {
        out.insert("requiredResourceAccess".into(), json!(access));
    }
    if uses_groups(c) {
        group_changes(existing, &mut out);
    }
    out
}

/// The `groups` claim: `groupMembershipClaims` set (kept if an admin chose one) and the
/// optional claim in the ID token.
fn group_changes(existing: &Value, out: &mut serde_json::Map<String, Value>) {
    let claims = existing["groupMembershipClaims"].as_str().unwrap_or("None");
    if claims == "None" {
        out.insert("groupMembershipClaims".into(), json!("SecurityGroup"));
    }
    let mut optional = existing["optionalClaims"].clone();
    if !optional.is_object() {
        optional = json!({"idToken": [], "accessToken": [], "saml2Token": []});
    }
    let has = optional["idToken"]
        .as_array()
        .is_some_and(|l| l.iter().any(|c| c["name"] == "groups"));
    if !has {
        if !optional["idToken"].is_array() {
            optional["idToken"] = json!([]);
        }
        if let Some(l) = optional["idToken"].as_array_mut() {
            l.push(groups_claim());
        }
        out.insert("optionalClaims".into(), optional);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setup::tests::config;

    #[test]
    fn a_fitting_registration_needs_no_change_and_extra_entries_are_kept() {
        let mut c = config();
        c.entra.allowed_groups = vec!["phone".into()];
        let mut app = manifest(&c);
        assert!(changes(&c, &app).is_empty());
        app["web"]["redirectUris"] = json!(["https://other.example/cb"]);
        let out = changes(&c, &app);
        let uris = &out["web"]["redirectUris"];
        assert_eq!(uris[0], "https://other.example/cb");
        assert_eq!(uris[1], "https://pbx.example.com/auth/callback");
        assert_eq!(uris[2], "https://pbx.example.com/auth/signed-out");
    }

    #[test]
    fn enabling_a_feature_adds_just_its_permission() {
        let mut c = config();
        let app = manifest(&c);
        c.sync.contacts.enabled = true;
        let out = changes(&c, &app);
        assert_eq!(out.len(), 1, "{out:?}");
        let access = out["requiredResourceAccess"][0]["resourceAccess"]
            .as_array()
            .unwrap();
        assert_eq!(access.len(), 5);
        assert_eq!(access[4]["id"], "089fe4d0-434a-44c5-8827-41ba8a0b17f5");
    }
}
