//! Access tokens acting as a user's extension, for the webclient of a signed-in user (and
//! the personal phonebooks of the contact sync), cached per extension until shortly before
//! they expire.
//!
//! UNDOCUMENTED 3CX behaviour (`shared/notes/3cx.md` §2.2): `POST /connect/token` with
//! `client_id=Webclient`, `grant_type=refresh_token` and `impersonate=<extension>`, answered
//! with `{access_token, expires_in, refresh_token: null}` for the target. What authorises it
//! is `[pbx] impersonation_credential`:
//! - `service-extension` (default; [`super::service`]): the `RefreshTokenCookie` of an admin
//!   extension pbxgate signed in as — the shape seen working on 20.0.9;
//! - `api-client`: the API client's bearer token. UNVERIFIED: nothing public shows 3CX's
//!   token endpoint accepting a bearer token on a refresh grant.

use http::header::{COOKIE, SET_COOKIE};
use secrecy::{ExposeSecret, SecretString};

use super::webclient::refresh_cookie_set;
use super::{AccessToken, OAuthError, PbxClient, PbxError, REFRESH_COOKIE, unreachable};

/// What 3CX answered to an impersonation request.
pub(super) enum Answer {
    Token(AccessToken),
    /// The credential is unknown to 3CX: a cookie rotated away, expired or revoked
    /// (`invalid_grant`, or a bare 401).
    StaleCredential,
    Forbidden,
    Refused(u16),
    /// A 5xx: 3CX failing, not refusing.
    Failing(u16),
}

impl Answer {
    /// The error for a failing 3CX: an outage (`PbxError::is_outage`), which the sign-in
    /// tells the user as such.
    pub(super) fn failing(status: u16) -> PbxError {
        PbxError::Api {
            status,
            code: "/connect/token".into(),
            message: "the impersonation request failed".into(),
        }
    }
}

/// The credential an impersonation request carries.
pub(super) enum Credential<'a> {
    RefreshCookie(&'a SecretString),
    /// UNVERIFIED against a real 3CX (see the module doc).
    ApiClientBearer(&'a SecretString),
}

impl PbxClient {
    /// An access token acting as `extension` (see the module doc).
    pub async fn impersonate(&self, extension: &str) -> Result<AccessToken, PbxError> {
        if let Some(t) = self.cached_impersonation(extension) {
            return Ok(t);
        }
        let t = match &self.service {
            Some(service) => self.impersonate_as_service(service, extension).await?,
            None => self.impersonate_as_api_client(extension).await?,
        };
        self.impersonated.insert(extension.to_string(), t.clone());
        Ok(t)
    }

    /// Forgets the cached impersonated token of `extension` (its user signed out or lost
    /// access), so that pbxgate hands out no more of it.
    pub fn forget_impersonation(&self, extension: &str) {
        self.impersonated.invalidate(extension);
    }

    /// Whether pbxgate holds a live impersonated token for `extension` (what a revocation
    /// must end; the tests check it).
    pub fn holds_impersonation(&self, extension: &str) -> bool {
        self.cached_impersonation(extension).is_some()
    }

    pub(super) fn cached_impersonation(&self, extension: &str) -> Option<AccessToken> {
        self.impersonated.get(extension).filter(|t| self.fresh(t))
    }

    /// `impersonation_credential = "api-client"`: the API client's bearer token.
    async fn impersonate_as_api_client(&self, extension: &str) -> Result<AccessToken, PbxError> {
        let token = self.api_token().await?;
        let (answer, _) = self
            .impersonation_request(Credential::ApiClientBearer(&token), extension)
            .await?;
        match answer {
            Answer::Token(t) => Ok(t),
            Answer::Forbidden => Err(self.forbidden(extension, None).await),
            Answer::StaleCredential => Err(PbxError::ImpersonationRefused {
                extension: extension.to_string(),
                status: 401,
                hint: "3CX did not accept the API client's token for impersonation; this \
                       variant is unverified, use impersonation_credential = \
                       \"service-extension\"",
            }),
            Answer::Refused(status) => Err(PbxError::SignInRefused {
                extension: extension.to_string(),
                status,
            }),
            Answer::Failing(status) => Err(Answer::failing(status)),
        }
    }

    /// One impersonation request; also returns the `RefreshTokenCookie` 3CX set, if any
    /// (any answer may rotate it).
    pub(super) async fn impersonation_request(
        &self,
        credential: Credential<'_>,
        extension: &str,
    ) -> Result<(Answer, Option<SecretString>), PbxError> {
        let req = self.http.post(self.url("/connect/token")).form(&[
            ("client_id", "Webclient"),
            ("grant_type", "refresh_token"),
            ("impersonate", extension),
        ]);
        let req = match credential {
            Credential::RefreshCookie(c) => {
                req.header(COOKIE, format!("{REFRESH_COOKIE}={}", c.expose_secret()))
            }
            Credential::ApiClientBearer(t) => req.bearer_auth(t.expose_secret()),
        };
        let res = req.send().await.map_err(unreachable)?;
        let rotated = refresh_cookie_set(res.headers().get_all(SET_COOKIE).iter());
        let status = res.status().as_u16();
        let answer = match status {
            200 => Answer::Token(self.read_token(res).await?),
            401 => Answer::StaleCredential,
            400 => {
                let body: Option<OAuthError> = res.json().await.ok();
                match body {
                    Some(b) if b.error == "invalid_grant" => Answer::StaleCredential,
                    _ => Answer::Refused(status),
                }
            }
            403 => Answer::Forbidden,
            500.. => Answer::Failing(status),
            _ => Answer::Refused(status),
        };
        Ok((answer, rotated))
    }

    /// Whether extension `number` is enabled (`None`: no such extension), as the API client
    /// reads it. Its own request, not [`PbxClient::user_by_number`]: that one's call path
    /// can impersonate, which would make this future recursive.
    async fn enabled_by_number(&self, number: &str) -> Result<Option<bool>, PbxError> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Row {
            #[serde(default)]
            enabled: Option<bool>,
        }
        let token = self.api_token().await?;
        let filter = format!("Number eq {}", super::odata_string(number));
        let res = self
            .http
            .get(self.url("/xapi/v1/Users"))
            .bearer_auth(token.expose_secret())
            .query(&[("$filter", filter.as_str()), ("$select", "Number,Enabled")])
            .send()
            .await
            .map_err(unreachable)?;
        let rows: super::Collection<Row> = super::decode(super::check(res).await?, "user").await?;
        Ok(rows
            .value
            .into_iter()
            .next()
            .map(|r| r.enabled.unwrap_or(true)))
    }

    /// Why 3CX refused to impersonate `extension` with 403: the service extension itself,
    /// a disabled extension (asked through the XAPI), or a credential without the rights.
    pub(super) async fn forbidden(&self, extension: &str, service: Option<&str>) -> PbxError {
        if service == Some(extension) {
            return PbxError::SelfImpersonation(extension.to_string());
        }
        match self.enabled_by_number(extension).await {
            Ok(Some(false)) => PbxError::TargetDisabled(extension.to_string()),
            Ok(None) => PbxError::ImpersonationRefused {
                extension: extension.to_string(),
                status: 403,
                hint: "3CX has no such extension",
            },
            _ => PbxError::ImpersonationRefused {
                extension: extension.to_string(),
                status: 403,
                hint: "does the credential have the System Owner (admin) role?",
            },
        }
    }
}
