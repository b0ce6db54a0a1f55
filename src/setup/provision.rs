//! The Graph steps of `setup` (notes §0 and §7), each reading first and writing only what is
//! missing, so that a second run writes nothing: the application (upsert by `uniqueName`,
//! certificate by `keyCredentials`), its service principal, the delegated sign-in grant for all
//! users, and the Microsoft Graph app roles of the enabled features.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::SetupError;
use super::certificate::AppCertificate;
use super::graph_admin::AdminGraph;
use super::manifest;
use super::permissions::{GRAPH_APP_ID, SIGN_IN_SCOPES};
use crate::config::Config;

const APP_SELECT: &str = "id,appId,uniqueName,displayName,web,requiredResourceAccess,\
                          groupMembershipClaims,optionalClaims,keyCredentials";

/// Creates or updates the app registration; returns its `appId`. `log` gets one line per change.
pub async fn application(
    g: &mut AdminGraph,
    c: &Config,
    cert: &AppCertificate,
    log: &mut Vec<String>,
) -> Result<String, SetupError> {
    let name = manifest::unique_name(c);
    let path = format!("/applications(uniqueName='{name}')");
    let what = "reading the app registration";
    let Some(app) = g.get(&path, &[("$select", APP_SELECT)], what).await? else {
        let mut body = manifest::manifest(c);
        body["keyCredentials"] = json!([cert.key_credential()?]);
        let created = g
            .write(
                Method::PATCH,
                &path,
                &body,
                true,
                "creating the app registration",
            )
            .await?;
        let app_id = created["appId"].as_str().unwrap_or_default().to_string();
        log.push(format!(
            "created the app registration {name} (client id {app_id}) with certificate {}",
            cert.thumbprint()
        ));
        return Ok(app_id);
    };
    let app_id = app["appId"].as_str().unwrap_or_default().to_string();
    let mut patch = manifest::changes(c, &app);
    let keys = app["keyCredentials"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !keys.iter().any(|k| k["key"] == json!(cert.base64())) {
        // A PATCH replaces the collection: send the certificates already there as well.
        let mut all = keys;
        all.push(cert.key_credential()?);
        patch.insert("keyCredentials".into(), json!(all));
    }
    if patch.is_empty() {
        return Ok(app_id);
    }
    let id = app["id"].as_str().unwrap_or_default();
    let changed: Vec<&str> = patch.keys().map(String::as_str).collect();
    let line = format!(
        "updated the app registration {name}: {}",
        changed.join(", ")
    );
    g.write(
        Method::PATCH,
        &format!("/applications/{id}"),
        &Value::Object(patch),
        false,
        "updating the app registration",
    )
    .await?;
    log.push(line);
    Ok(app_id)
}

/// The service principal of `app_id` (the app in this tenant); created when missing.
pub async fn service_principal(
    g: &mut AdminGraph,
    app_id: &str,
    log: &mut Vec<String>,
) -> Result<Value, SetupError> {
    let path = format!("/servicePrincipals(appId='{app_id}')");
    if let Some(sp) = g.get(&path, &[], "reading the service principal").await? {
        return Ok(sp);
    }
    let sp = g
        .write(
            Method::PATCH,
            &path,
            &json!({}),
            true,
            "creating the service principal",
        )
        .await?;
    log.push("created the service principal (the app in this tenant)".into());
    Ok(sp)
}

/// Microsoft Graph's service principal, with its app roles.
pub async fn graph(g: &mut AdminGraph) -> Result<Value, SetupError> {
    let path = format!("/servicePrincipals(appId='{GRAPH_APP_ID}')");
    g.get(
        &path,
        &[("$select", "id,appId,appRoles,oauth2PermissionScopes")],
        "reading Microsoft Graph's service principal",
    )
    .await?
    .ok_or_else(|| SetupError::Graph {
        what: "reading Microsoft Graph's service principal".into(),
        status: 404,
        code: "Request_ResourceNotFound".into(),
        message: "this tenant has no Microsoft Graph service principal".into(),
    })
}

/// `openid profile email` for every user, as one `AllPrincipals` grant (created or widened).
pub async fn sign_in_grant(
    g: &mut AdminGraph,
    sp_id: &str,
    graph_id: &str,
    log: &mut Vec<String>,
) -> Result<(), SetupError> {
    let filter = format!("clientId eq '{sp_id}' and consentType eq 'AllPrincipals'");
    let what = "reading the delegated permission grant";
    let list = g
        .get("/oauth2PermissionGrants", &[("$filter", &filter)], what)
        .await?
        .unwrap_or(Value::Null);
    let existing = list["value"].as_array().and_then(|l| {
        l.iter()
            .find(|x| x["resourceId"] == json!(graph_id))
            .cloned()
    });
    let want: Vec<&str> = SIGN_IN_SCOPES.iter().map(|(v, _)| *v).collect();
    let Some(grant) = existing else {
        let body = json!({"clientId": sp_id, "consentType": "AllPrincipals",
                          "resourceId": graph_id, "scope": want.join(" ")});
        with_replication_retry(
            g,
            Method::POST,
            "/oauth2PermissionGrants",
            &body,
            "granting sign-in for all users",
        )
        .await?;
        log.push("granted openid profile email for all users".into());
        return Ok(());
    };
    let mut scopes: Vec<String> = grant["scope"]
        .as_str()
        .unwrap_or("")
        .split_whitespace()
        .map(String::from)
        .collect();
    let missing: Vec<&str> = want
        .into_iter()
        .filter(|w| !scopes.iter().any(|s| s == w))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    scopes.extend(missing.iter().map(|s| s.to_string()));
    let id = grant["id"].as_str().unwrap_or_default();
    g.write(
        Method::PATCH,
        &format!("/oauth2PermissionGrants/{id}"),
        &json!({"scope": scopes.join(" ")}),
        false,
        "widening the sign-in grant",
    )
    .await?;
    log.push(format!("added {} to the sign-in grant", missing.join(" ")));
    Ok(())
}

/// Assigns the missing Microsoft Graph app roles in `roles` (value, id) to the service
/// principal. A 403 means the admin lacks Privileged Role Administrator / Global Administrator.
pub async fn app_roles(
    g: &mut AdminGraph,
    sp_id: &str,
    graph_sp: &Value,
    roles: &[(&str, &str)],
    log: &mut Vec<String>,
) -> Result<(), SetupError> {
    let graph_id = graph_sp["id"].as_str().unwrap_or_default();
    let path = format!("/servicePrincipals/{sp_id}/appRoleAssignments");
    let assigned = g
        .get(&path, &[], "reading the app role assignments")
        .await?
        .unwrap_or(Value::Null);
    let has = |id: &str| {
        assigned["value"].as_array().is_some_and(|l| {
            l.iter()
                .any(|a| a["appRoleId"] == json!(id) && a["resourceId"] == json!(graph_id))
        })
    };
    for (value, id) in roles.iter().filter(|(_, id)| !has(id)) {
        let offered = graph_sp["appRoles"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["id"] == json!(id)));
        if !offered {
            return Err(SetupError::Graph {
                what: format!("granting {value}"),
                status: 0,
                code: "UnknownAppRole".into(),
                message: format!("Microsoft Graph in this tenant offers no app role {id}"),
            });
        }
        let body = json!({"principalId": sp_id, "resourceId": graph_id, "appRoleId": id});
        let path = format!("/servicePrincipals/{graph_id}/appRoleAssignedTo");
        match with_replication_retry(g, Method::POST, &path, &body, &format!("granting {value}"))
            .await
        {
            Ok(()) => log.push(format!("granted the application permission {value}")),
            Err(SetupError::Graph { status: 403, .. }) => {
                return Err(SetupError::NeedsPrivilegedRole);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A POST that an object created moments ago may not see yet ("does not exist", 404): retried
/// for about a minute (notes §2.8). "Already exists" counts as done.
async fn with_replication_retry(
    g: &mut AdminGraph,
    method: Method,
    path: &str,
    body: &Value,
    what: &str,
) -> Result<(), SetupError> {
    for attempt in 0.. {
        match g.call(method.clone(), path, &[], Some(body), false).await? {
            Ok(_) => return Ok(()),
            Err(f) if f.message.contains("already exists") => return Ok(()),
            Err(f) if attempt < 12 && (f.status == 404 || f.message.contains("does not exist")) => {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Err(f) => return Err(f.into_error(what)),
        }
    }
    unreachable!("the loop returns")
}
