//! `/applications` in the simulated Graph (notes §2.1-2.3; graph-docs `application-upsert.md`,
//! `application-update.md`, `resources/application.md`, `resources/keycredential.md`):
//! - `GET /applications/{id}`, `/applications(appId='…')`, `/applications(uniqueName='…')`
//!   → 200 or 404; `keyCredentials[].key` only with `$select=keyCredentials`;
//! - `PATCH` on the same → 204; on a missing `uniqueName` with `Prefer: create-if-missing` →
//!   201 with the object (`displayName` required), without it → 404;
//! - `POST /applications` → 201.
//!
//! Strict where Graph is or where the real behaviour is unknown: unknown properties, a
//! redirect URI that is not https (except localhost), longer than 256 characters, carries
//! `! $ ' ( ) , ;`, or appears twice in the list, a `keyCredential` that is not an RSA
//! `AsymmetricX509Cert` for `Verify`, and a `requiredResourceAccess` id that Microsoft Graph
//! does not offer are all 400. A collection sent in a PATCH replaces the stored one (notes §2.2).

use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::directory::{Call, GRAPH_APP_ID, GRAPH_APP_ROLES, GRAPH_SCOPES, alternate_key, bad};
use super::{Failure, GraphSim, new_guid, not_found};

const PROPERTIES: &[&str] = &[
    "displayName",
    "description",
    "notes",
    "signInAudience",
    "uniqueName",
    "web",
    "groupMembershipClaims",
    "optionalClaims",
    "requiredResourceAccess",
    "keyCredentials",
    "isFallbackPublicClient",
    "tags",
];
const AUDIENCES: &[&str] = &[
    "AzureADMyOrg",
    "AzureADMultipleOrgs",
    "AzureADandPersonalMicrosoftAccount",
    "PersonalMicrosoftAccount",
];
const GROUP_CLAIMS: &[&str] = &[
    "None",
    "SecurityGroup",
    "DirectoryRole",
    "ApplicationGroup",
    "All",
];

pub(super) fn handle(sim: &GraphSim, call: &Call) -> Result<Response, Failure> {
    let (_, key) = alternate_key(&call.segments[0]);
    let id = call.segments.get(1).filter(|s| !s.is_empty());
    if call.segments.len() > 2 {
        return Err(bad("Resource not found for the segment."));
    }
    let locator = match (key, id) {
        (Some((k @ ("uniqueName" | "appId"), v)), None) => Some((k, v)),
        (None, Some(id)) => Some(("id", id.as_str())),
        (None, None) => None,
        _ => return Err(bad("Invalid key for the entity set 'applications'.")),
    };
    match (&call.method, locator) {
        (&Method::GET, Some(l)) => {
            call.need_scope(&["Application.Read.All", "Application.ReadWrite.All"])?;
            get(sim, call, l)
        }
        (&Method::PATCH, Some(l)) => {
            call.need_scope(&["Application.ReadWrite.All"])?;
            patch(sim, call, l)
        }
        (&Method::POST, None) => {
            call.need_scope(&["Application.ReadWrite.All"])?;
            create(sim, call, None)
        }
        _ => Err(Failure::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "Request_BadRequest",
            "The HTTP method is not allowed on this resource.",
        )),
    }
}

fn find<'a>(
    apps: &'a [Map<String, Value>],
    (k, v): (&str, &str),
) -> Option<&'a Map<String, Value>> {
    apps.iter().find(|a| a[k] == json!(v))
}

fn get(sim: &GraphSim, call: &Call, l: (&str, &str)) -> Result<Response, Failure> {
    let app = sim
        .dir(|d| find(&d.apps, l).cloned())
        .ok_or_else(|| not_found(l.1))?;
    let select: Option<Vec<&str>> = call
        .query("$select")
        .map(|s| s.split(',').map(str::trim).collect());
    let with_keys = select
        .as_ref()
        .is_some_and(|s| s.contains(&"keyCredentials"));
    let mut out = Map::new();
    for (k, v) in app {
        if select
            .as_ref()
            .is_some_and(|s| k != "id" && !s.contains(&k.as_str()))
        {
            continue;
        }
        out.insert(k, v);
    }
    if !with_keys && let Some(Value::Array(keys)) = out.get_mut("keyCredentials") {
        for k in keys {
            k["key"] = Value::Null;
        }
    }
    out.insert(
        "@odata.context".into(),
        json!("https://graph.microsoft.com/v1.0/$metadata#applications/$entity"),
    );
    Ok(axum::Json(Value::Object(out)).into_response())
}

fn patch(sim: &GraphSim, call: &Call, l: (&str, &str)) -> Result<Response, Failure> {
    let body = validate(&call.body)?;
    let exists = sim.dir(|d| find(&d.apps, l).is_some());
    if !exists {
        return match l {
            ("uniqueName", name) if call.create_if_missing => create(sim, call, Some(name)),
            _ => Err(not_found(l.1)),
        };
    }
    if body.contains_key("uniqueName") {
        // Whether uniqueName can change is unconfirmed (notes §8): refuse it.
        return Err(bad("Property 'uniqueName' is read-only once set."));
    }
    let app_id = sim
        .dir(|d| {
            let app = d.apps.iter_mut().find(|a| a[l.0] == json!(l.1))?;
            apply(app, body);
            app["appId"].as_str().map(String::from)
        })
        .ok_or_else(|| not_found(l.1))?;
    sim.publish(&app_id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn create(sim: &GraphSim, call: &Call, unique_name: Option<&str>) -> Result<Response, Failure> {
    let mut body = validate(&call.body)?;
    if !body.get("displayName").is_some_and(Value::is_string) {
        return Err(bad("Property 'displayName' is required."));
    }
    if let Some(name) = unique_name {
        body.insert("uniqueName".into(), json!(name));
    }
    let app_id = new_guid();
    let mut app = json!({
        "id": new_guid(), "appId": app_id, "uniqueName": null,
        "signInAudience": "AzureADandPersonalMicrosoftAccount",
        "groupMembershipClaims": null, "optionalClaims": null,
        "keyCredentials": [], "requiredResourceAccess": [],
        "web": {"redirectUris": [], "homePageUrl": null, "logoutUrl": null,
                "implicitGrantSettings": {"enableIdTokenIssuance": false, "enableAccessTokenIssuance": false}},
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    apply(&mut app, body);
    let unique = app["uniqueName"].clone();
    let created = sim.dir(|d| {
        if !unique.is_null() && d.apps.iter().any(|a| a["uniqueName"] == unique) {
            return Err(Failure::new(
                StatusCode::CONFLICT,
                "Request_MultipleObjectsWithSameKeyValue",
                "Another object with the same value for property uniqueName already exists.",
            ));
        }
        d.apps.push(app.clone());
        Ok(())
    });
    created?;
    sim.publish(&app_id);
    let mut out = app;
    out.insert(
        "@odata.context".into(),
        json!("https://graph.microsoft.com/v1.0/$metadata#applications/$entity"),
    );
    Ok((StatusCode::CREATED, axum::Json(Value::Object(out))).into_response())
}

fn validate(body: &Value) -> Result<Map<String, Value>, Failure> {
    let Some(body) = body.as_object() else {
        return Err(bad("The request body must be a JSON object."));
    };
    for (k, v) in body {
        if !PROPERTIES.contains(&k.as_str()) {
            return Err(bad(format!(
                "Property '{k}' does not exist as a declared property or extension property."
            )));
        }
        match k.as_str() {
            "signInAudience" => one_of(v, AUDIENCES, k)?,
            "groupMembershipClaims" if !v.is_null() => one_of(v, GROUP_CLAIMS, k)?,
            "web" => web(v)?,
            "requiredResourceAccess" => resource_access(v)?,
            "keyCredentials" => {
                for key in v.as_array().ok_or_else(|| invalid(k))? {
                    if certificate_of(key).is_none() {
                        return Err(invalid("keyCredentials"));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(body.clone())
}

fn invalid(property: &str) -> Failure {
    bad(format!(
        "Invalid value specified for property '{property}' of resource 'Application'."
    ))
}

fn one_of(v: &Value, allowed: &[&str], k: &str) -> Result<(), Failure> {
    match v.as_str() {
        Some(s) if allowed.contains(&s) => Ok(()),
        _ => Err(invalid(k)),
    }
}

fn web(v: &Value) -> Result<(), Failure> {
    let uris = v["redirectUris"].as_array().cloned().unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    for u in &uris {
        let ok = u
            .as_str()
            .is_some_and(|u| redirect_uri_ok(u) && seen.insert(u.to_string()));
        if !ok {
            return Err(invalid("web.redirectUris"));
        }
    }
    match &v["logoutUrl"] {
        Value::Null => Ok(()),
        Value::String(u) if redirect_uri_ok(u) => Ok(()),
        _ => Err(invalid("web.logoutUrl")),
    }
}

/// entra-docs `reply-url.md`: https except localhost, at most 256 characters, none of `!$'(),;`.
fn redirect_uri_ok(u: &str) -> bool {
    let local = u.starts_with("http://localhost") || u.starts_with("http://127.0.0.1");
    (u.starts_with("https://") || local)
        && u.len() <= 256
        && !u.contains(['!', '$', '\'', '(', ')', ',', ';'])
        && url::Url::parse(u).is_ok()
}

fn resource_access(v: &Value) -> Result<(), Failure> {
    let entries = v
        .as_array()
        .ok_or_else(|| invalid("requiredResourceAccess"))?;
    for e in entries {
        let accesses = e["resourceAccess"]
            .as_array()
            .ok_or_else(|| invalid("requiredResourceAccess"))?;
        if e["resourceAppId"] != json!(GRAPH_APP_ID) {
            continue;
        }
        for a in accesses {
            let id = a["id"].as_str().unwrap_or("");
            let known = match a["type"].as_str() {
                Some("Role") => GRAPH_APP_ROLES.iter().any(|(_, r)| *r == id),
                Some("Scope") => GRAPH_SCOPES.iter().any(|(_, s)| *s == id),
                _ => false,
            };
            if !known {
                return Err(invalid("requiredResourceAccess"));
            }
        }
    }
    Ok(())
}

fn apply(app: &mut Map<String, Value>, body: Map<String, Value>) {
    for (k, mut v) in body {
        if k == "keyCredentials"
            && let Some(keys) = v.as_array_mut()
        {
            keys.iter_mut().for_each(normalise_key);
        }
        app.insert(k, v);
    }
}

/// What Graph fills in: `keyId`, the thumbprint as `customKeyIdentifier`, a display name.
fn normalise_key(k: &mut Value) {
    if k["keyId"].is_null() {
        k["keyId"] = json!(new_guid());
    }
    if k["customKeyIdentifier"].is_null()
        && let Some(der) = k["key"].as_str().and_then(|b| STANDARD.decode(b).ok())
    {
        let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &der);
        k["customKeyIdentifier"] = json!(pbxgate_wire::ids::hex(sha1.as_ref()).to_uppercase());
    }
}

/// An uploaded certificate as the Entra simulator checks assertions with: (DER, n, e).
pub(super) fn certificate_of(key: &Value) -> Option<(Vec<u8>, String, String)> {
    use rsa::pkcs8::DecodePublicKey;
    use rsa::traits::PublicKeyParts;
    use x509_cert::der::{Decode, Encode};
    if key["type"] != json!("AsymmetricX509Cert") || key["usage"] != json!("Verify") {
        return None;
    }
    let der = STANDARD.decode(key["key"].as_str()?).ok()?;
    let cert = x509_cert::Certificate::from_der(&der).ok()?;
    let spki = cert.tbs_certificate.subject_public_key_info.to_der().ok()?;
    let public = rsa::RsaPublicKey::from_public_key_der(&spki).ok()?;
    let n = URL_SAFE_NO_PAD.encode(public.n().to_bytes_be());
    let e = URL_SAFE_NO_PAD.encode(public.e().to_bytes_be());
    Some((der, n, e))
}
