//! Device-code sign-in of the administrator (entra-docs `v2-oauth2-device-code.md`, RFC 8628;
//! notes §1): ask `{authority}/{tenant}/oauth2/v2.0/devicecode` for a code, show it, poll the
//! token endpoint every `interval` seconds. Only `authorization_pending` and `slow_down` (+5 s
//! from then on) go on, as MSAL does; everything else ends the sign-in, branching on `error`
//! and never on the AADSTS text, which is only used to point at `setup --print` where a tenant
//! blocks the flow.

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::SetupError;

/// "Microsoft Graph Command Line Tools": a Microsoft-owned public client that may use device
/// code against Graph (notes §1.5); `--client-id` replaces it with a tenant's own.
pub const DEFAULT_PUBLIC_CLIENT: &str = "14d82eec-204b-4c2f-b7e8-296a70dab67e";

/// The delegated scopes setup needs (notes §1.4, §7).
pub const SCOPES: &str = "https://graph.microsoft.com/Application.ReadWrite.All \
     https://graph.microsoft.com/AppRoleAssignment.ReadWrite.All \
     https://graph.microsoft.com/DelegatedPermissionGrant.ReadWrite.All openid profile";

#[derive(Deserialize)]
pub struct DeviceCode {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    #[serde(default = "default_expires_in")]
    pub expires_in: u64,
    #[serde(default = "default_interval")]
    pub interval: u64,
    #[serde(default)]
    pub message: Option<String>,
}

fn default_expires_in() -> u64 {
    1800
}
fn default_interval() -> u64 {
    5
}

#[derive(Deserialize)]
struct TokenBody {
    access_token: String,
    #[serde(default)]
    id_token: Option<String>,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

/// The admin's delegated Graph token and the tenant the ID token names.
pub struct AdminToken {
    pub access_token: SecretString,
    pub tenant_id: Option<String>,
    pub username: Option<String>,
}

/// What one failed poll means.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Poll again after this many seconds (the new interval).
    Wait(u64),
    Stop(SetupError),
}

/// The next step after the token endpoint answered `error` (RFC 8628 §3.5).
pub fn next_step(error: &str, description: &str, interval: u64) -> Step {
    match error {
        "authorization_pending" => Step::Wait(interval),
        "slow_down" => Step::Wait(interval + 5),
        "authorization_declined" | "access_denied" => Step::Stop(SetupError::Declined),
        "expired_token" => Step::Stop(SetupError::Expired),
        _ => Step::Stop(refused(error, description)),
    }
}

/// An error from Entra, with a pointer to `--print` where the tenant refuses the flow.
pub fn refused(error: &str, description: &str) -> SetupError {
    let first = description.lines().next().unwrap_or("").trim();
    let blocked = [
        "AADSTS53003",
        "AADSTS530035",
        "AADSTS65001",
        "AADSTS65002",
        "AADSTS7000218",
    ]
    .iter()
    .any(|c| description.contains(c));
    SetupError::SignIn {
        error: error.to_string(),
        description: first.to_string(),
        hint: if blocked {
            "this tenant does not allow the device code sign-in for this client (Conditional \
             Access, security defaults or consent): use `pbxgate setup --print` and the \
             admin-consent URL, or `--client-id` with a public client of your own"
        } else {
            "check [entra] tenant_id and authority, and --client-id"
        },
    }
}

/// Starts the sign-in: the code and the page to enter it on.
pub async fn start(
    http: &reqwest::Client,
    login: &str,
    client_id: &str,
) -> Result<DeviceCode, SetupError> {
    let res = http
        .post(format!("{login}/oauth2/v2.0/devicecode"))
        .form(&[("client_id", client_id), ("scope", SCOPES)])
        .send()
        .await
        .map_err(|e| SetupError::Unreachable(e.to_string()))?;
    if !res.status().is_success() {
        let e: ErrorBody = res.json().await.unwrap_or_default();
        return Err(refused(&e.error, &e.error_description));
    }
    res.json()
        .await
        .map_err(|e| SetupError::Unreachable(format!("device code answer: {e}")))
}

/// Polls until the admin signed in, declined, or the code expired.
pub async fn poll(
    http: &reqwest::Client,
    login: &str,
    client_id: &str,
    code: &DeviceCode,
) -> Result<AdminToken, SetupError> {
    let mut interval = code.interval.max(1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(code.expires_in);
    loop {
        tokio::time::sleep(Duration::from_secs(interval)).await;
        let res = http
            .post(format!("{login}/oauth2/v2.0/token"))
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("client_id", client_id),
                ("device_code", &code.device_code),
            ])
            .send()
            .await
            .map_err(|e| SetupError::Unreachable(e.to_string()))?;
        if res.status().is_success() {
            let t: TokenBody = res
                .json()
                .await
                .map_err(|e| SetupError::Unreachable(format!("token answer: {e}")))?;
            let claims = t.id_token.as_deref().and_then(id_token_claims);
            let claim = |k: &str| {
                claims
                    .as_ref()
                    .and_then(|c| c[k].as_str().map(String::from))
            };
            return Ok(AdminToken {
                access_token: SecretString::from(t.access_token),
                tenant_id: claim("tid"),
                username: claim("preferred_username"),
            });
        }
        let e: ErrorBody = res.json().await.unwrap_or_default();
        match next_step(&e.error, &e.error_description, interval) {
            Step::Wait(next) => interval = next,
            Step::Stop(err) => return Err(err),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(SetupError::Expired);
        }
    }
}

/// The ID token's claims, read without checking the signature: it came straight from the
/// token endpoint over the connection just made, and only names the tenant and the admin.
fn id_token_claims(token: &str) -> Option<serde_json::Value> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_waits_slow_down_adds_five_seconds_the_rest_stops() {
        assert_eq!(next_step("authorization_pending", "", 5), Step::Wait(5));
        assert_eq!(next_step("slow_down", "", 5), Step::Wait(10));
        assert_eq!(
            next_step("authorization_declined", "", 5),
            Step::Stop(SetupError::Declined)
        );
        assert_eq!(
            next_step("expired_token", "", 5),
            Step::Stop(SetupError::Expired)
        );
        let Step::Stop(e) = next_step("invalid_grant", "AADSTS53003: Blocked by CA.\r\nTrace", 5)
        else {
            panic!("must stop")
        };
        assert!(e.to_string().contains("--print"), "{e}");
        assert!(e.to_string().contains("AADSTS53003: Blocked by CA."), "{e}");
    }
}
