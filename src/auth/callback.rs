//! `/auth/callback`: Entra's answer. Checks the attempt (same browser, unused, recent),
//! redeems the code, validates the ID token, checks groups, finds (or provisions) the
//! extension, opens the 3CX session and then pbxgate's own, and returns to `return_to`.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::header::{HeaderValue, SET_COOKIE};
use http::request::Parts;
use serde::Deserialize;

use super::{ATTEMPT_TTL, AuthError, PbxSessionError, SignIn};
use crate::config::SessionMode;
use crate::directory::{Identity, Resolution, is_guest, user_key};
use crate::graph::GraphError;
use crate::ids;
use crate::metrics::RouteClass;
use crate::oidc::IdClaims;
use crate::session::{NewSession, cookie_pairs};
use crate::store::{DirectoryRow, LoginAttempt, SessionMeta};
use crate::web;

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    /// Set when Entra returns from the admin-consent URL (`pbxgate setup --print`, `/admin`)
    /// instead of from a sign-in: `admin_consent=True&tenant=…`, no code, no state.
    admin_consent: Option<String>,
}

pub async fn callback(State(s): State<Arc<SignIn>>, parts: Parts) -> Response {
    finish(&s, &parts)
        .await
        .unwrap_or_else(|e| e.respond(web::correlation(&parts).as_deref()))
}

async fn finish(s: &SignIn, parts: &Parts) -> Result<Response, AuthError> {
    s.rate_limit(parts)?;
    let Query(q) = Query::<CallbackQuery>::try_from_uri(&parts.uri)
        .map_err(|_| AuthError::MalformedCallback)?;
    if let Some(error) = q.error {
        return Err(AuthError::Entra {
            error,
            description: q.error_description,
        });
    }
    if q.code.is_none()
        && q.admin_consent
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        return Ok(consent_granted());
    }
    let (Some(code), Some(state)) = (q.code, q.state) else {
        return Err(AuthError::IncompleteCallback);
    };
    let attempt = take_attempt(s, parts, &state).await?;
    let id_token = s
        .provider
        .exchange_code(&code, &attempt.pkce_verifier, &s.settings.redirect_uri)
        .await
        .map_err(|e| AuthError::from_oidc(e, AuthError::CodeExchange))?;
    let claims = s
        .provider
        .validate(&id_token, &attempt.nonce)
        .await
        .map_err(|e| AuthError::from_oidc(e, AuthError::IdToken))?;
    check_groups(s, &claims).await?;
    let is_admin = super::admin::is_admin(s, &claims).await;
    let identity = Identity {
        tenant_id: claims.tid.clone().unwrap_or_default(),
        object_id: claims.oid.clone().unwrap_or_default(),
        upn: claims.username().unwrap_or_default().to_string(),
        display_name: claims.name.clone().unwrap_or_default(),
    };
    check_guest(s, &identity).await?;
    let (person, provisioned) = resolve(s, &identity).await?;
    s.web_passwords
        .randomize_or_log(person.pbx_user_id, &person.extension)
        .await;
    let pbx_cookies = open_pbx_session(s, &person)
        .await
        .map_err(|source| AuthError::from_pbx(&person.extension, source))?;
    let id = s
        .sessions
        .create_with(
            NewSession {
                user_key: user_key(&identity.tenant_id, &identity.object_id),
                upn: identity.upn.clone(),
                extension: person.extension.clone(),
                idp_sid: claims.sid.clone(),
                login_hint: claims.login_hint.clone(),
            },
            SessionMeta {
                is_admin,
                client_addr: Some(s.client_ip(parts).to_string()),
                user_agent: super::admin::user_agent(parts),
            },
        )
        .await?;
    if let Err(e) = s
        .store
        .record_sign_in(
            &person.tenant_id,
            &person.object_id,
            s.clock.now(),
            provisioned,
        )
        .await
    {
        tracing::warn!(error = %e, "last sign-in not recorded");
    }
    tracing::info!(upn = %identity.upn, extension = %person.extension, is_admin, "signed in");
    let mut res = Redirect::to(&attempt.return_to).into_response();
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&s.sessions.set_cookie(&id)) {
        h.append(SET_COOKIE, v);
    }
    h.append(SET_COOKIE, s.login_cookie("", 0));
    for c in pbx_cookies {
        h.append(SET_COOKIE, c);
    }
    web::security_headers(h);
    Ok(web::classed(RouteClass::Auth, res))
}

/// The attempt must have started in this browser (its cookie), be unused and recent.
async fn take_attempt(s: &SignIn, parts: &Parts, state: &str) -> Result<LoginAttempt, AuthError> {
    let cookie_state = cookie_pairs(&parts.headers)
        .find(|(k, _)| *k == s.settings.login_cookie)
        .map(|(_, v)| v);
    let same_browser = cookie_state.is_some_and(|c| ids::secrets_equal(c, state));
    let attempt = s
        .store
        .take_login_attempt(state)
        .await
        .map_err(AuthError::AttemptLookup)?;
    match attempt {
        Some(a) if same_browser && s.clock.now() - a.created_at <= ATTEMPT_TTL => Ok(a),
        other => Err(AuthError::Attempt {
            known: other.is_some(),
            same_browser,
        }),
    }
}

/// The user's extension: from the directory, else provisioned on the spot; refused when
/// the directory says this user may not have it. The flag says it was provisioned just now.
async fn resolve(s: &SignIn, who: &Identity) -> Result<(DirectoryRow, bool), AuthError> {
    let upn = match s.directory.resolve(who).await? {
        Resolution::Found(p) => return Ok((p, false)),
        Resolution::Refused(r) => return Err(AuthError::refused(&who.upn, r)),
        Resolution::NotAssigned { upn } => upn,
    };
    if let Some(row) = provision(s, who, &upn).await {
        // What the sync just linked passes the same checks as what it linked before.
        return match s.directory.admit(row).await? {
            Resolution::Found(p) => Ok((p, true)),
            Resolution::Refused(r) => Err(AuthError::refused(&who.upn, r)),
            Resolution::NotAssigned { .. } => Err(AuthError::NotAssigned {
                upn,
                oid: who.object_id.clone(),
            }),
        };
    }
    Err(AuthError::NotAssigned {
        upn,
        oid: who.object_id.clone(),
    })
}

/// With `[sync.users] include_guests = false` (the default) a guest is refused, as the user
/// sync leaves guests out: otherwise a guest whose address matches an extension's e-mail
/// would get that extension. The ID token carries no `userType`, so Graph is asked, as the
/// sync does; if Graph cannot answer, the sign-in fails rather than let a guest through.
async fn check_guest(s: &SignIn, who: &Identity) -> Result<(), AuthError> {
    if s.settings.include_guests {
        return Ok(());
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct UserType {
        user_type: Option<String>,
    }
    let user_type = if is_guest(None, &who.upn) {
        None
    } else {
        let path = format!("/users/{}?$select=id,userType", who.object_id);
        let found: UserType =
            s.graph
                .get_interactive(&path)
                .await
                .map_err(|source| AuthError::GuestCheck {
                    upn: who.upn.clone(),
                    oid: who.object_id.clone(),
                    source,
                })?;
        found.user_type
    };
    match is_guest(user_type.as_deref(), &who.upn) {
        true => Err(AuthError::Guest {
            upn: who.upn.clone(),
            oid: who.object_id.clone(),
        }),
        false => Ok(()),
    }
}

/// A user the directory does not know yet gets an extension at once, through the user
/// sync's own plan and apply (`[sync.users] enabled` and `provision_on_login`). A failure
/// here is logged and the user sees the "no extension" page.
async fn provision(s: &SignIn, who: &Identity, upn: &str) -> Option<DirectoryRow> {
    let users = s.users.as_ref()?;
    match users.provision(&who.object_id).await {
        Ok(Some(row)) if row.removed_at.is_none() => {
            tracing::info!(upn = %row.upn, extension = %row.extension, "provisioned at sign-in");
            Some(row)
        }
        Ok(_) => None,
        Err(e) => {
            tracing::error!(error = %e, %upn, "provisioning at sign-in failed");
            None
        }
    }
}

/// Why `allowed_groups` let a user in or not.
#[derive(Debug, thiserror::Error)]
pub enum GroupDenial {
    #[error("not in an allowed group")]
    NotMember,
    #[error("group overage: Graph could not tell the user's groups: {0}")]
    Unknown(#[source] GraphError),
}

impl GroupDenial {
    pub fn message(&self) -> &'static str {
        match self {
            Self::NotMember => {
                "Your account is not in a group that may use the phone system's web client."
            }
            Self::Unknown(_) => {
                "Your account is in too many groups to be checked right now. Please try again later, or ask your IT department."
            }
        }
    }
}

/// `allowed_groups`: the user must be in one of them. With group overage the token does not
/// list the groups, and Graph is asked instead (`checkMemberGroups`).
async fn check_groups(s: &SignIn, claims: &IdClaims) -> Result<(), GroupDenial> {
    let allowed = &s.settings.allowed_groups;
    if allowed.is_empty() {
        return Ok(());
    }
    let member = if claims.groups_overage() {
        let oid = claims.oid.clone().unwrap_or_default();
        let found = s
            .graph
            .member_groups(&oid, allowed)
            .await
            .map_err(GroupDenial::Unknown)?;
        !found.is_empty()
    } else {
        claims.groups.as_ref().is_some_and(|g| {
            g.iter()
                .any(|x| allowed.iter().any(|a| a.eq_ignore_ascii_case(x)))
        })
    };
    member.then_some(()).ok_or(GroupDenial::NotMember)
}

/// Opens the user's 3CX session: checks impersonation works, or signs in with the managed
/// password (setting one first). Returns cookies to hand to the browser.
async fn open_pbx_session(
    s: &SignIn,
    person: &DirectoryRow,
) -> Result<Vec<HeaderValue>, PbxSessionError> {
    match s.settings.session_mode {
        SessionMode::Impersonation => {
            s.pbx.impersonate(&person.extension).await?;
            Ok(Vec::new())
        }
        SessionMode::ManagedPassword => {
            let password = s.passwords.get(person).await?;
            let login = s.pbx.webclient_login(&person.extension, &password).await?;
            Ok(login.set_cookies)
        }
    }
}

/// The page after an administrator granted the permissions through the admin-consent URL.
/// It changes nothing (anyone can open it); the next credential check sees the new roles.
fn consent_granted() -> Response {
    web::Page::new(
        http::StatusCode::OK,
        "Permissions granted",
        "Microsoft 365 permissions were granted for your organisation. pbxgate picks them up \
         at its next credential check; run `pbxgate doctor` or use \"Check now\" on the \
         admin console to see them at once.",
    )
    .with_link("/admin", "Admin console")
    .into_response()
}
