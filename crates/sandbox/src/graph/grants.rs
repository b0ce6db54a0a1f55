//! Service principals and permission grants in the simulated Graph (notes §2.4-2.7;
//! graph-docs `serviceprincipal-post-serviceprincipals.md`, the servicePrincipal upsert page,
//! `serviceprincipal-post-approleassignedto.md`, `serviceprincipal-list-approleassignments.md`,
//! `oauth2permissiongrant-post.md`, `permissions-grant-via-msgraph.md`):
//! - `GET /servicePrincipals/{id}` and `(appId='…')`; `PATCH (appId='…')` with
//!   `Prefer: create-if-missing` → 201/204 (404 without it); `POST /servicePrincipals` → 201,
//!   409 `Request_MultipleObjectsWithSameKeyValue` when one exists ([field]);
//! - `GET …/{id}/appRoleAssignments`, `GET …/{id}/appRoleAssignedTo`;
//!   `POST …/{id or (appId='…')}/appRoleAssignedTo` → 201; a role already assigned → 400
//!   "Permission being assigned already exists on the object" ([field]); a Microsoft Graph app
//!   role without Privileged Role Administrator or Global Administrator → 403;
//! - `GET /oauth2PermissionGrants?$filter=clientId eq '…' [and consentType eq '…']`,
//!   `POST` → 201 (a second `AllPrincipals` grant → 409 "Permission entry already exists."),
//!   `PATCH /oauth2PermissionGrants/{id}` with `{scope}` → 204.

use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::directory::{
    Call, DELEGATED_GRANTERS, GRAPH_APP_ID, GRAPH_APP_ROLE_GRANTERS, alternate_key, bad,
};
use super::{Failure, GraphSim, new_guid, not_found};

pub(super) fn handle(sim: &GraphSim, call: &Call) -> Result<Response, Failure> {
    match alternate_key(&call.segments[0]) {
        ("oauth2PermissionGrants", None) => permission_grants(sim, call),
        ("servicePrincipals", key) => service_principals(sim, call, key),
        _ => Err(bad("Resource not found for the segment.")),
    }
}

fn entity(context: &str, mut m: Map<String, Value>) -> Value {
    m.insert(
        "@odata.context".into(),
        json!(format!(
            "https://graph.microsoft.com/v1.0/$metadata#{context}"
        )),
    );
    Value::Object(m)
}

fn collection(context: &str, items: Vec<Map<String, Value>>) -> Response {
    axum::Json(json!({
        "@odata.context": format!("https://graph.microsoft.com/v1.0/$metadata#{context}"),
        "value": items,
    }))
    .into_response()
}

fn str_field<'a>(body: &'a Value, name: &str) -> Result<&'a str, Failure> {
    body[name]
        .as_str()
        .ok_or_else(|| bad(format!("Property '{name}' is required.")))
}

fn service_principals(
    sim: &GraphSim,
    call: &Call,
    key: Option<(&str, &str)>,
) -> Result<Response, Failure> {
    let read = ["Application.Read.All", "Application.ReadWrite.All"];
    let seg = |i: usize| {
        call.segments
            .get(i)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    };
    let (sp, relation) = match key {
        Some(("appId", app_id)) => (Some(("appId", app_id)), seg(1)),
        Some(_) => return Err(bad("Invalid key for the entity set 'servicePrincipals'.")),
        None => (seg(1).map(|id| ("id", id)), seg(2)),
    };
    match (&call.method, sp, relation) {
        (&Method::POST, None, None) => {
            call.need_scope(&["Application.ReadWrite.All"])?;
            create_sp(sim, str_field(&call.body, "appId")?, true)
        }
        (&Method::PATCH, Some(("appId", app_id)), None) => {
            call.need_scope(&["Application.ReadWrite.All"])?;
            let exists = sim.dir(|d| d.sp_by_app_id(app_id).is_some());
            match (exists, call.create_if_missing) {
                (true, _) => Ok(StatusCode::NO_CONTENT.into_response()),
                (false, true) => create_sp(sim, app_id, false),
                (false, false) => Err(not_found(app_id)),
            }
        }
        (&Method::GET, Some(l), None) => {
            call.need_scope(&read)?;
            let sp = find_sp(sim, l)?;
            Ok(axum::Json(entity("servicePrincipals/$entity", sp)).into_response())
        }
        (&Method::GET, Some(l), Some(rel @ ("appRoleAssignments" | "appRoleAssignedTo"))) => {
            call.need_scope(&read)?;
            let id = find_sp(sim, l)?["id"].clone();
            let by = if rel == "appRoleAssignments" {
                "principalId"
            } else {
                "resourceId"
            };
            let items = sim.dir(|d| {
                d.assignments
                    .iter()
                    .filter(|a| a[by] == id)
                    .cloned()
                    .collect()
            });
            Ok(collection(rel, items))
        }
        (&Method::POST, Some(l), Some("appRoleAssignedTo")) => assign(sim, call, l),
        _ => Err(bad("Resource not found for the segment.")),
    }
}

fn find_sp(sim: &GraphSim, (k, v): (&str, &str)) -> Result<Map<String, Value>, Failure> {
    sim.dir(|d| d.sps.iter().find(|s| s[k] == json!(v)).cloned())
        .ok_or_else(|| not_found(v))
}

fn create_sp(sim: &GraphSim, app_id: &str, conflict_if_exists: bool) -> Result<Response, Failure> {
    let created = sim.dir(|d| {
        if d.sp_by_app_id(app_id).is_some() {
            return Err(conflict_if_exists.then(|| Failure::new(
                StatusCode::CONFLICT,
                "Request_MultipleObjectsWithSameKeyValue",
                format!("The service principal cannot be created, updated, or restored because the service principal name {app_id} is already in use."),
            )));
        }
        let app = d.apps.iter().find(|a| a["appId"] == json!(app_id)).ok_or_else(|| {
            Some(bad(format!(
                "The appId '{app_id}' of the service principal does not reference a valid application object."
            )))
        })?;
        let sp = json!({
            "id": new_guid(), "appId": app_id, "displayName": app["displayName"],
            "servicePrincipalType": "Application", "accountEnabled": true,
            "appRoles": [], "oauth2PermissionScopes": [],
        });
        let sp = sp.as_object().cloned().unwrap_or_default();
        d.sps.push(sp.clone());
        Ok(sp)
    });
    match created {
        Ok(sp) => {
            sim.publish(app_id);
            Ok((
                StatusCode::CREATED,
                axum::Json(entity("servicePrincipals/$entity", sp)),
            )
                .into_response())
        }
        Err(Some(f)) => Err(f),
        Err(None) => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

fn assign(sim: &GraphSim, call: &Call, l: (&str, &str)) -> Result<Response, Failure> {
    call.need_scope(&["AppRoleAssignment.ReadWrite.All"])?;
    call.need_scope(&["Application.Read.All", "Application.ReadWrite.All"])?;
    let resource = find_sp(sim, l)?;
    let principal_id = str_field(&call.body, "principalId")?;
    let role_id = str_field(&call.body, "appRoleId")?;
    if call.body["resourceId"] != resource["id"] {
        return Err(bad(
            "The resourceId must be the service principal in the request URL.",
        ));
    }
    let principal = find_sp(sim, ("id", principal_id))?;
    let offered = resource["appRoles"]
        .as_array()
        .is_some_and(|r| r.iter().any(|r| r["id"] == json!(role_id)));
    if !offered {
        return Err(bad(format!(
            "Permission being assigned was not found on application '{}'.",
            resource["appId"].as_str().unwrap_or("")
        )));
    }
    if resource["appId"] == json!(GRAPH_APP_ID) {
        call.need_role(GRAPH_APP_ROLE_GRANTERS)?;
    }
    let assignment = sim.dir(|d| {
        let exists = d.assignments.iter().any(|a| {
            a["principalId"] == json!(principal_id)
                && a["appRoleId"] == json!(role_id)
                && a["resourceId"] == resource["id"]
        });
        if exists {
            return Err(bad(
                "Permission being assigned already exists on the object",
            ));
        }
        let a = json!({
            "id": new_guid(), "deletedDateTime": null, "appRoleId": role_id,
            "createdDateTime": "2026-01-01T00:00:00Z",
            "principalDisplayName": principal["displayName"], "principalId": principal_id,
            "principalType": "ServicePrincipal",
            "resourceDisplayName": resource["displayName"], "resourceId": resource["id"],
        });
        let a = a.as_object().cloned().unwrap_or_default();
        d.assignments.push(a.clone());
        Ok(a)
    })?;
    if let Some(app_id) = principal["appId"].as_str() {
        sim.publish(app_id);
    }
    let context = format!(
        "servicePrincipals('{}')/appRoleAssignedTo/$entity",
        resource["id"].as_str().unwrap_or("")
    );
    Ok((
        StatusCode::CREATED,
        axum::Json(entity(&context, assignment)),
    )
        .into_response())
}

fn permission_grants(sim: &GraphSim, call: &Call) -> Result<Response, Failure> {
    let id = call
        .segments
        .get(1)
        .map(String::as_str)
        .filter(|s| !s.is_empty());
    match (&call.method, id) {
        (&Method::GET, None) => {
            call.need_scope(&[
                "DelegatedPermissionGrant.ReadWrite.All",
                "Directory.Read.All",
            ])?;
            let filter = parse_filter(call.query("$filter").unwrap_or(""))?;
            let items = sim.dir(|d| {
                d.grants
                    .iter()
                    .filter(|g| filter.iter().all(|(k, v)| g[k.as_str()] == json!(v)))
                    .cloned()
                    .collect()
            });
            Ok(collection("oauth2PermissionGrants", items))
        }
        (&Method::POST, None) => {
            call.need_scope(&["DelegatedPermissionGrant.ReadWrite.All"])?;
            call.need_role(DELEGATED_GRANTERS)?;
            create_grant(sim, &call.body)
        }
        (&Method::PATCH, Some(id)) => {
            call.need_scope(&["DelegatedPermissionGrant.ReadWrite.All"])?;
            call.need_role(DELEGATED_GRANTERS)?;
            let scope = str_field(&call.body, "scope")?.to_string();
            if call.body.as_object().is_some_and(|b| b.len() != 1) {
                return Err(bad("Only 'scope' can be updated."));
            }
            let resource = sim
                .dir(|d| {
                    d.grants
                        .iter()
                        .find(|g| g["id"] == json!(id))
                        .map(|g| g["resourceId"].clone())
                })
                .ok_or_else(|| not_found(id))?;
            check_scopes(sim, &resource, &scope)?;
            sim.dir(|d| {
                if let Some(g) = d.grants.iter_mut().find(|g| g["id"] == json!(id)) {
                    g.insert("scope".into(), json!(scope));
                }
            });
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(bad("Resource not found for the segment.")),
    }
}

/// `clientId eq '…'`, optionally `and consentType eq '…'` / `and resourceId eq '…'`.
fn parse_filter(raw: &str) -> Result<Vec<(String, String)>, Failure> {
    raw.split(" and ")
        .filter(|c| !c.trim().is_empty())
        .map(|c| {
            let (k, v) = c
                .split_once(" eq ")
                .ok_or_else(|| bad(format!("Invalid filter clause: {c}")))?;
            let k = k.trim();
            if !matches!(k, "clientId" | "consentType" | "resourceId" | "principalId") {
                return Err(bad(format!("Unsupported filter property '{k}'.")));
            }
            Ok((k.to_string(), v.trim().trim_matches('\'').to_string()))
        })
        .collect()
}

fn check_scopes(sim: &GraphSim, resource: &Value, scope: &str) -> Result<(), Failure> {
    let resource = find_sp(sim, ("id", resource.as_str().unwrap_or("")))?;
    let offered = resource["oauth2PermissionScopes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for s in scope.split_whitespace() {
        if !offered.iter().any(|o| o["value"] == json!(s)) {
            return Err(bad(format!("Invalid scope '{s}' for the resource.")));
        }
    }
    Ok(())
}

fn create_grant(sim: &GraphSim, body: &Value) -> Result<Response, Failure> {
    let client = str_field(body, "clientId")?;
    let resource = str_field(body, "resourceId")?;
    let consent = str_field(body, "consentType")?;
    let scope = str_field(body, "scope")?;
    let principal = body["principalId"].as_str();
    match (consent, principal) {
        ("AllPrincipals", None) | ("Principal", Some(_)) => {}
        _ => return Err(bad("Invalid value specified for property 'consentType'.")),
    }
    find_sp(sim, ("id", client))?;
    check_scopes(sim, &json!(resource), scope)?;
    let grant = sim.dir(|d| {
        let exists = d.grants.iter().any(|g| {
            g["clientId"] == json!(client)
                && g["resourceId"] == json!(resource)
                && g["consentType"] == json!(consent)
                && g["principalId"] == json!(principal)
        });
        if exists {
            return Err(Failure::new(
                StatusCode::CONFLICT,
                "Request_MultipleObjectsWithSameKeyValue",
                "Permission entry already exists.",
            ));
        }
        let g = json!({"id": new_guid(), "clientId": client, "consentType": consent,
                       "principalId": principal, "resourceId": resource, "scope": scope});
        let g = g.as_object().cloned().unwrap_or_default();
        d.grants.push(g.clone());
        Ok(g)
    })?;
    Ok((
        StatusCode::CREATED,
        axum::Json(entity("oauth2PermissionGrants/$entity", grant)),
    )
        .into_response())
}
