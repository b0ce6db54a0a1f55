//! The 3CX client: the Configuration API (XAPI) with an API-client token shared by the
//! replicas (`api_token`), and the webclient session calls that sign a user in.
//!
//! Documented by 3CX: `/connect/token` with client credentials and `/xapi/v1/…`
//! (`shared/reference/3cx-xapi-openapi.yaml`). **Not documented by 3CX** and taken from public
//! third-party research (`shared/notes/3cx.md` §2), isolated in submodules marked so:
//! impersonation through `/connect/token` (`impersonation`, and the service extension's
//! session that authorises it, `service`), `/webclient/api/Login/GetAccessToken` with its
//! `RefreshTokenCookie`, and `/webclient/api/Logout` (`webclient`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::clock::{Clock, UnixTime};
use crate::config::PbxConfig;
use crate::seal::SealError;
use crate::store::{Store, StoreError};
use crate::tls::{self, TlsError};

mod api_token;
mod busy;
mod contacts;
mod impersonation;
mod probe;
mod service;
mod totp;
mod webclient;
pub use contacts::{Book, ContactFields, OWNED_TAG_PREFIX, PbxContact};
pub use probe::{Reach, SystemStatus};
pub use webclient::WebclientLogin;

/// The name of the webclient's refresh-token cookie (undocumented; §2.1 of the research).
pub use pbxgate_wire::pbx::REFRESH_COOKIE;
/// 3CX allows `$top` up to 100.
/// Ids per `$filter` when reading profiles (an OData `or` chain stays short).
const PROFILE_FILTER: usize = 20;
const PAGE: usize = 100;
/// Fields read from `/Users`: always an explicit `$select`, as the default listing includes
/// SIP and voicemail credentials.
const USER_FIELDS: &str =
    "Id,Number,FirstName,LastName,DisplayName,EmailAddress,Mobile,OutboundCallerID,Enabled";

#[derive(Debug, thiserror::Error)]
pub enum PbxError {
    #[error("3CX is unreachable: {0}")]
    Unreachable(String),
    #[error("3CX refused the API client credentials ({0})")]
    Credentials(String),
    #[error("3CX answered {status}: {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("3CX answered something unexpected ({what}): {source}")]
    Decode {
        what: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("cannot encode the new 3CX user: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("cannot set up the HTTP client for 3CX: {0}")]
    Client(#[source] reqwest::Error),
    #[error("3CX refused the sign-in for extension {extension} ({status})")]
    SignInRefused { extension: String, status: u16 },
    #[error("extension number {0} is already taken in 3CX")]
    DuplicateNumber(String),
    #[error("e-mail address {0} is already used by another 3CX user")]
    DuplicateEmail(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(
        "3CX refused the sign-in of the service extension {extension} ({status}): \
         check pbx.service_extension and pbx.service_password"
    )]
    ServiceSignIn { extension: String, status: u16 },
    #[error(
        "3CX requires two-factor authentication for the service extension {0}: set \
         pbx.service_totp_secret to the authenticator-app secret of that extension"
    )]
    ServiceNeeds2fa(String),
    #[error(
        "3CX did not accept the 2FA code of the service extension {extension} ({status}): \
         check pbx.service_totp_secret and this machine's clock"
    )]
    Service2faRefused { extension: String, status: String },
    #[error("3CX signed the service extension {0} in but set no RefreshTokenCookie")]
    ServiceNoCookie(String),
    #[error("3CX refuses the new session of the service extension {0} at once")]
    ServiceCookieRefused(String),
    #[error(
        "the service extension cannot impersonate itself ({0}): pbx.service_extension must \
         be an extension made for pbxgate that no person signs in to"
    )]
    SelfImpersonation(String),
    #[error("extension {0} is disabled in 3CX: nobody can be signed in to it")]
    TargetDisabled(String),
    #[error("3CX refused to impersonate extension {extension} ({status}): {hint}")]
    ImpersonationRefused {
        extension: String,
        status: u16,
        hint: &'static str,
    },
    #[error("the 3CX service session: {0}")]
    Seal(#[from] SealError),
    #[error("the 3CX service session cannot be read or stored: {0}")]
    Store(#[from] StoreError),
    #[error("another replica's fetch of the 3CX API token did not finish within {0} s")]
    TokenLeaseBusy(i64),
}

impl PbxError {
    /// Failures of 3CX itself or of the way there, as opposed to one bad item.
    pub fn is_outage(&self) -> bool {
        matches!(
            self,
            Self::Unreachable(_)
                | Self::Credentials(_)
                | Self::ServiceSignIn { .. }
                | Self::ServiceNeeds2fa(_)
                | Self::Service2faRefused { .. }
                | Self::Store(_)
                | Self::TokenLeaseBusy(_)
        ) || matches!(self, Self::Api { status, .. } if *status >= 500)
    }
}

/// The fields of a 3CX user that the user sync owns (and nothing else).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct UserFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mobile: Option<String>,
    #[serde(rename = "OutboundCallerID", skip_serializing_if = "Option::is_none")]
    pub outbound_caller_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The photo (format undocumented by 3CX; pbxgate sends a `data:` URI, "" removes it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact_image: Option<String>,
    /// The status profile, by internal name ("Available", "Away", "Out of office", …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_profile_name: Option<String>,
}

impl UserFields {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// A 3CX user as pbxgate reads it (nulls are omitted by 3CX, hence the options).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct PbxUser {
    pub id: i64,
    pub number: String,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub email_address: Option<String>,
    #[serde(default)]
    pub mobile: Option<String>,
    #[serde(default, rename = "OutboundCallerID")]
    pub outbound_caller_id: Option<String>,
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// An access token from 3CX with its absolute expiry.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub token: SecretString,
    pub expires_at: UnixTime,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<i64>,
}

#[derive(Deserialize)]
struct ODataError {
    error: ODataErrorBody,
}

#[derive(Deserialize)]
struct ODataErrorBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    details: Vec<ODataErrorDetail>,
}

#[derive(Deserialize)]
struct ODataErrorDetail {
    #[serde(default)]
    target: Option<String>,
}

#[derive(Deserialize)]
struct OAuthError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

#[derive(Deserialize)]
struct Collection<T> {
    value: Vec<T>,
}

/// Whose token an XAPI call carries.
#[derive(Debug, Clone, Copy)]
enum Caller<'a> {
    /// The API client, with its admin rights.
    ApiClient,
    /// The extension with this number, through an impersonated token.
    Extension(&'a str),
}

pub struct PbxClient {
    http: reqwest::Client,
    base: Url,
    client_id: String,
    client_secret: SecretString,
    clock: Arc<dyn Clock>,
    /// The API client's token, shared with the other replicas through the store: 3CX keeps
    /// one live token per API client, so two fetches would invalidate each other.
    api: api_token::ApiTokens,
    /// Impersonated tokens by extension.
    impersonated: moka::sync::Cache<String, AccessToken>,
    /// The service extension's session, when it authorises impersonation.
    service: Option<service::ServiceSession>,
}

/// Seconds from `expires_in`: minutes before 3CX 20.0.9 (`60`), seconds since (`3600`).
fn lifetime_secs(expires_in: Option<i64>) -> i64 {
    match expires_in {
        Some(n) if n > 0 && n <= 120 => n * 60,
        Some(n) if n > 0 => n,
        _ => 3600,
    }
}

impl PbxClient {
    /// `store` keeps the API token and the service extension's session, shared by the
    /// replicas.
    pub fn new(config: &PbxConfig, store: Store, clock: Arc<dyn Clock>) -> Result<Self, PbxError> {
        let tls = tls::client_config(config.ca_file.as_deref())?;
        let mut http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(config.connect_timeout.get())
            .timeout(config.response_timeout.get())
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("pbxgate/", env!("CARGO_PKG_VERSION")));
        // Requests name 3CX by its certificate's name; the resolver maps it to `url`'s host.
        let mut base = config.url.clone();
        if let Some(name) = &config.tls_server_name {
            http = http.dns_resolver(tls::PinnedName::new(name, &config.url));
            base.set_host(Some(name))
                .map_err(|_| TlsError::ServerName(name.clone()))?;
        }
        let http = http.build().map_err(PbxError::Client)?;
        Ok(Self {
            http,
            base,
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            clock,
            api: api_token::ApiTokens::new(config, store.clone())?,
            impersonated: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            service: config
                .service_account()
                .map(|a| service::ServiceSession::new(a, store)),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base.as_str().trim_end_matches('/'), path)
    }

    /// A valid token is one that lives at least another minute.
    fn fresh(&self, t: &AccessToken) -> bool {
        t.expires_at - self.clock.now() > 60
    }

    async fn read_token(&self, res: reqwest::Response) -> Result<AccessToken, PbxError> {
        let body: TokenResponse = decode(res, "token response").await?;
        Ok(self.access_token(body))
    }

    /// The token of a token answer, with its expiry from now.
    fn access_token(&self, t: TokenResponse) -> AccessToken {
        AccessToken {
            token: SecretString::from(t.access_token),
            expires_at: self.clock.now() + lifetime_secs(t.expires_in),
        }
    }

    /// `GET /xapi/v1/Users` with an OData `$filter`, every page.
    pub async fn users(&self, filter: Option<&str>) -> Result<Vec<PbxUser>, PbxError> {
        self.pages(Caller::ApiClient, "/xapi/v1/Users", USER_FIELDS, filter)
            .await
    }

    /// The users whose e-mail address is one of `emails` (compared in lower case).
    pub async fn users_by_email(&self, emails: &[String]) -> Result<Vec<PbxUser>, PbxError> {
        let filter = emails
            .iter()
            .map(|e| {
                format!(
                    "tolower(EmailAddress) eq {}",
                    odata_string(&e.to_lowercase())
                )
            })
            .collect::<Vec<_>>()
            .join(" or ");
        self.users(Some(&filter)).await
    }

    pub async fn user_by_number(&self, number: &str) -> Result<Option<PbxUser>, PbxError> {
        let filter = format!("Number eq {}", odata_string(number));
        Ok(self.users(Some(&filter)).await?.into_iter().next())
    }

    /// The bearer token of `caller`.
    async fn token_of(&self, caller: Caller<'_>) -> Result<SecretString, PbxError> {
        match caller {
            Caller::ApiClient => self.api_token().await,
            Caller::Extension(ext) => Ok(self.impersonate(ext).await?.token),
        }
    }

    /// Forgets `failed`, the cached token of `caller` 3CX refused, so that the next call
    /// gets another one.
    async fn forget_token_of(&self, caller: Caller<'_>, failed: &SecretString) {
        match caller {
            Caller::ApiClient => self.drop_api_token(failed).await,
            Caller::Extension(ext) => self.forget_impersonation(ext),
        }
    }

    /// One XAPI call as `caller`. A cached token can die early (3CX restarted, the key was
    /// rotated, another replica's token replaced it): on 401 the token is dropped, and the
    /// call repeated once with another one.
    async fn send_xapi(
        &self,
        caller: Caller<'_>,
        method: reqwest::Method,
        path: &str,
        build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, PbxError> {
        check(self.send_busy(caller, method, path, build).await?).await
    }

    /// One try of [`PbxClient::send_xapi`], without the check of the answer's status.
    async fn send_xapi_raw(
        &self,
        caller: Caller<'_>,
        method: reqwest::Method,
        path: &str,
        build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, PbxError> {
        let send = async || {
            let token = self.token_of(caller).await?;
            let req = self
                .http
                .request(method.clone(), self.url(path))
                .bearer_auth(token.expose_secret());
            let res = build(req).send().await.map_err(unreachable)?;
            Ok::<_, PbxError>((token, res))
        };
        let (token, mut res) = send().await?;
        if res.status() == reqwest::StatusCode::UNAUTHORIZED {
            self.forget_token_of(caller, &token).await;
            res = send().await?.1;
        }
        Ok(res)
    }

    /// One XAPI call as the API client (see [`PbxClient::send_xapi`]).
    async fn xapi(
        &self,
        method: reqwest::Method,
        path: &str,
        build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, PbxError> {
        self.send_xapi(Caller::ApiClient, method, path, build).await
    }

    /// `GET path` as `caller`, decoded from JSON.
    async fn get_json<T: DeserializeOwned>(
        &self,
        caller: Caller<'_>,
        path: &'static str,
        query: &[(&str, &str)],
    ) -> Result<T, PbxError> {
        let res = self
            .send_xapi(caller, reqwest::Method::GET, path, |r| r.query(query))
            .await?;
        decode(res, path).await
    }

    /// Every entry of an XAPI collection with the fields `select`, `PAGE` at a time until a
    /// short page.
    async fn pages<T: DeserializeOwned>(
        &self,
        caller: Caller<'_>,
        path: &'static str,
        select: &str,
        filter: Option<&str>,
    ) -> Result<Vec<T>, PbxError> {
        let mut all = Vec::new();
        loop {
            let (top, skip) = (PAGE.to_string(), all.len().to_string());
            let mut query = vec![("$select", select), ("$top", &top), ("$skip", &skip)];
            if let Some(f) = filter {
                query.push(("$filter", f));
            }
            let page: Collection<T> = self.get_json(caller, path, &query).await?;
            let n = page.value.len();
            all.extend(page.value);
            if n < PAGE {
                return Ok(all);
            }
        }
    }

    /// The current status profile by user id, read in bulk: of `ids` by `$filter` (20 ids a
    /// call), or of everyone (`None`, 100 a page) when that is fewer calls.
    pub async fn profiles(&self, ids: Option<&[i64]>) -> Result<HashMap<i64, String>, PbxError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Row {
            id: i64,
            #[serde(default)]
            current_profile_name: Option<String>,
        }
        let filters: Vec<Option<String>> = match ids {
            None => vec![None],
            Some(ids) => ids
                .chunks(PROFILE_FILTER)
                .map(|c| {
                    let f = c.iter().map(|id| format!("Id eq {id}"));
                    Some(f.collect::<Vec<_>>().join(" or "))
                })
                .collect(),
        };
        let mut out = HashMap::new();
        for filter in filters {
            let rows: Vec<Row> = self
                .pages(
                    Caller::ApiClient,
                    "/xapi/v1/Users",
                    "Id,CurrentProfileName",
                    filter.as_deref(),
                )
                .await?;
            out.extend(
                rows.into_iter()
                    .map(|r| (r.id, r.current_profile_name.unwrap_or_default())),
            );
        }
        Ok(out)
    }

    /// `PATCH /Users({id})` with `CurrentProfileName` (SSIG-IT/3cx-mcp-server, checked on
    /// 20.0.8: the internal profile name is what 3CX accepts).
    pub async fn set_profile(&self, id: i64, profile: &str) -> Result<(), PbxError> {
        let fields = UserFields {
            current_profile_name: Some(profile.to_string()),
            ..Default::default()
        };
        self.update_user(id, &fields).await
    }

    /// `POST /Users`: a new extension with `number` and `fields`.
    pub async fn create_user(
        &self,
        number: &str,
        fields: &UserFields,
    ) -> Result<PbxUser, PbxError> {
        let mut body = serde_json::to_value(fields).map_err(PbxError::Encode)?;
        body["Number"] = serde_json::json!(number);
        let res = self
            .xapi(reqwest::Method::POST, "/xapi/v1/Users", |r| r.json(&body))
            .await
            .map_err(|e| duplicate(e, number, fields))?;
        decode(res, "created user").await
    }

    /// `PATCH /Users({id})` with only the given fields.
    pub async fn update_user(&self, id: i64, fields: &UserFields) -> Result<(), PbxError> {
        let path = format!("/xapi/v1/Users({id})");
        self.xapi(reqwest::Method::PATCH, &path, |r| r.json(fields))
            .await
            .map_err(|e| duplicate(e, "", fields))
            .map(|_| ())
    }

    /// `DELETE /Users({id})`.
    pub async fn delete_user(&self, id: i64) -> Result<(), PbxError> {
        let path = format!("/xapi/v1/Users({id})");
        self.xapi(reqwest::Method::DELETE, &path, |r| r)
            .await
            .map(|_| ())
    }

    /// `GET /Users/Pbx.GetFirstAvailableExtensionNumber()`.
    pub async fn first_available_number(&self) -> Result<String, PbxError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct First {
            number: String,
        }
        let path = "/xapi/v1/Users/Pbx.GetFirstAvailableExtensionNumber()";
        let f: First = self.get_json(Caller::ApiClient, path, &[]).await?;
        Ok(f.number)
    }

    /// Sets an extension's webclient password (`AccessPassword`), for managed-password mode.
    pub async fn set_access_password(
        &self,
        user_id: i64,
        password: &SecretString,
    ) -> Result<(), PbxError> {
        let path = format!("/xapi/v1/Users({user_id})");
        let body = serde_json::json!({ "AccessPassword": password.expose_secret() });
        self.xapi(reqwest::Method::PATCH, &path, |r| r.json(&body))
            .await
            .map(|_| ())
    }
}

/// Reads a JSON answer; `what` names it in the error.
async fn decode<T: DeserializeOwned>(
    res: reqwest::Response,
    what: &'static str,
) -> Result<T, PbxError> {
    res.json()
        .await
        .map_err(|source| PbxError::Decode { what, source })
}

fn unreachable(e: reqwest::Error) -> PbxError {
    PbxError::Unreachable(tls::upstream_error_chain(&e))
}

/// 3CX names the field of a conflict in the error's `details[].target` (assumed from the
/// OData error shape in the XAPI description; not verified against a live PBX).
fn duplicate(e: PbxError, number: &str, fields: &UserFields) -> PbxError {
    match &e {
        PbxError::Api {
            status: 400 | 409,
            code,
            message,
        } => {
            let text = format!("{code} {message}").to_lowercase();
            if text.contains("number") {
                PbxError::DuplicateNumber(number.to_string())
            } else if text.contains("email") {
                PbxError::DuplicateEmail(fields.email_address.clone().unwrap_or_default())
            } else {
                e
            }
        }
        _ => e,
    }
}

/// Maps 3CX's error answers: the OData error shape, or a bare status.
async fn check(res: reqwest::Response) -> Result<reqwest::Response, PbxError> {
    let status = res.status();
    if status.is_success() {
        return Ok(res);
    }
    let text = res.text().await.unwrap_or_default();
    let (code, message) = match serde_json::from_str::<ODataError>(&text) {
        Ok(e) => {
            let targets: Vec<String> = e
                .error
                .details
                .iter()
                .filter_map(|d| d.target.clone())
                .collect();
            let code = if targets.is_empty() {
                e.error.code
            } else {
                format!("{} {}", e.error.code, targets.join(","))
            };
            (code, e.error.message)
        }
        Err(_) => (String::new(), text.chars().take(200).collect()),
    };
    Err(PbxError::Api {
        status: status.as_u16(),
        code,
        message,
    })
}

/// An OData string literal: single quotes, with `'` doubled.
pub fn odata_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odata_strings_are_quoted() {
        assert_eq!(odata_string("o'brien@x.com"), "'o''brien@x.com'");
    }

    #[test]
    fn expires_in_is_minutes_before_20_0_9_and_seconds_after() {
        assert_eq!(lifetime_secs(Some(60)), 3600);
        assert_eq!(lifetime_secs(Some(3600)), 3600);
        assert_eq!(lifetime_secs(None), 3600);
    }
}
