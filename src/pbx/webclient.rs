//! The webclient's own sign-in and sign-out with an extension's password.
//!
//! UNDOCUMENTED 3CX behaviour (`shared/notes/3cx.md` §2.1): `POST
//! /webclient/api/Login/GetAccessToken` with `{Username, Password, SecurityCode,
//! ReCaptchaResponse}`; success is `Status = "AuthSuccess"` with a token, and 3CX sets the
//! `RefreshTokenCookie` the webclient then uses at `/connect/token`. A wrong password is a
//! 401; a right one on an extension with 2FA is a 200 with another `Status` (the Rust client
//! of the research checks for `"Required2FA"`) and no token. `POST /webclient/api/Logout`
//! with the cookie ends the session.

use http::HeaderValue;
use http::header::{COOKIE, SET_COOKIE};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{AccessToken, PbxClient, PbxError, REFRESH_COOKIE, TokenResponse, check, unreachable};

/// What a webclient sign-in with a password gives: the access token and the cookies 3CX set
/// (its `RefreshTokenCookie`), to be handed to the browser unchanged.
#[derive(Debug)]
pub struct WebclientLogin {
    pub access: AccessToken,
    pub set_cookies: Vec<HeaderValue>,
}

/// 3CX's answer to a password sign-in, whatever it was.
pub(super) struct LoginAnswer {
    pub http_status: u16,
    /// `Status` of a 200 answer: `AuthSuccess`, or why not (e.g. `Required2FA`).
    pub status: Option<String>,
    pub token: Option<TokenResponse>,
    pub set_cookies: Vec<HeaderValue>,
}

impl LoginAnswer {
    pub fn succeeded(&self) -> bool {
        self.http_status == 200 && self.status.as_deref() == Some("AuthSuccess")
    }

    /// Right password, but 3CX wants a second factor (any 200 that is not a success).
    pub fn needs_second_factor(&self) -> bool {
        self.http_status == 200 && !self.succeeded()
    }
}

/// The value of the `RefreshTokenCookie` that `Set-Cookie` headers set (not one they clear).
pub(super) fn refresh_cookie_set<'a>(
    set_cookies: impl Iterator<Item = &'a HeaderValue>,
) -> Option<SecretString> {
    set_cookies
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next()?.split_once('='))
        .filter(|(name, value)| name.trim() == REFRESH_COOKIE && !value.trim().is_empty())
        .last()
        .map(|(_, value)| SecretString::from(value.trim().to_string()))
}

impl PbxClient {
    /// One `GetAccessToken` request; `code` is the 2FA code, "" for none.
    pub(super) async fn login_request(
        &self,
        extension: &str,
        password: &SecretString,
        code: &str,
    ) -> Result<LoginAnswer, PbxError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Body {
            status: String,
            token: Option<TokenResponse>,
        }
        let res = self
            .http
            .post(self.url("/webclient/api/Login/GetAccessToken"))
            .json(&serde_json::json!({
                "Username": extension,
                "Password": password.expose_secret(),
                "SecurityCode": code,
                "ReCaptchaResponse": null,
            }))
            .send()
            .await
            .map_err(unreachable)?;
        let http_status = res.status().as_u16();
        let set_cookies = res.headers().get_all(SET_COOKIE).iter().cloned().collect();
        let body: Option<Body> = res.json().await.ok();
        let (status, token) = body.map_or((None, None), |b| (Some(b.status), b.token));
        Ok(LoginAnswer {
            http_status,
            status,
            token,
            set_cookies,
        })
    }

    /// Signs in to the webclient with the extension's password (managed-password mode).
    pub async fn webclient_login(
        &self,
        extension: &str,
        password: &SecretString,
    ) -> Result<WebclientLogin, PbxError> {
        let answer = self.login_request(extension, password, "").await?;
        match answer.token {
            Some(t) if answer.succeeded() => Ok(WebclientLogin {
                access: self.access_token(t),
                set_cookies: answer.set_cookies,
            }),
            _ => Err(PbxError::SignInRefused {
                extension: extension.to_string(),
                status: answer.http_status,
            }),
        }
    }

    /// Ends a webclient session in 3CX: `POST /webclient/api/Logout` with the browser's
    /// `RefreshTokenCookie`.
    pub async fn webclient_logout(&self, refresh_cookie: &str) -> Result<(), PbxError> {
        let cookie = format!("{REFRESH_COOKIE}={refresh_cookie}");
        let res = self
            .http
            .post(self.url("/webclient/api/Logout"))
            .header(COOKIE, cookie)
            .send()
            .await
            .map_err(unreachable)?;
        check(res).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_refresh_cookie_set_is_taken_and_a_cleared_one_ignored() {
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        let headers = [
            h("other=1; Path=/"),
            h("RefreshTokenCookie=old; Path=/"),
            h("RefreshTokenCookie=new; Path=/; HttpOnly"),
        ];
        let c = refresh_cookie_set(headers.iter()).unwrap();
        assert_eq!(c.expose_secret(), "new");
        let cleared = [h("RefreshTokenCookie=; Max-Age=0")];
        assert!(refresh_cookie_set(cleared.iter()).is_none());
    }
}
