//! The service extension's 3CX session, which authorises impersonation by default
//! (`impersonation_credential = "service-extension"`).
//!
//! UNDOCUMENTED 3CX behaviour (`shared/notes/3cx.md` §2.2, tested by third parties on
//! 20.0.9): signed in as a System Owner extension with `/webclient/api/Login/GetAccessToken`
//! (a TOTP code in `SecurityCode` when 3CX asks for 2FA), the request `/connect/token`
//! `client_id=Webclient&grant_type=refresh_token&impersonate=<ext>` with that extension's
//! `RefreshTokenCookie` returns an access token for `<ext>`; impersonating oneself is a 403.
//!
//! The cookie rotates: any answer may set a new one, and the old one may then stop working.
//! It lives in the store, sealed under a key derived from the service password and
//! extension (a copy of the store opens nothing; a changed password just means a new
//! sign-in), shared by the replicas. Every stored rotation bumps the row's version, and a
//! write succeeds only on the version its cookie was read as (compare-and-swap), so no
//! replica replaces a newer cookie with an older one. A replica whose cookie was rotated away
//! by another reads the winner's from the store and retries; when the store has nothing
//! newer (expired, revoked, 3CX restarted) it signs in again, once per request. Within a
//! replica one request uses the cookie at a time.

use std::time::Duration;

use secrecy::SecretString;

use super::impersonation::{Answer, Credential};
use super::{AccessToken, PbxClient, PbxError};
use crate::config::ServiceAccount;
use crate::seal::SealedBox;
use crate::store::Store;

/// The HKDF salt of the key that seals the cookie: what the key is for.
const PURPOSE: &str = "pbxgate pbx_service_session v1";
/// Cookies found newer in the store tried in one request before giving up.
const NEWER_TRIES: usize = 8;
/// How long a replica whose cookie was just refused waits for the winner's write.
const SETTLE: Duration = Duration::from_millis(50);

pub(super) struct ServiceSession {
    account: ServiceAccount,
    sealer: SealedBox,
    store: Store,
    /// One request with the cookie in flight per replica, as each use may rotate it.
    in_flight: tokio::sync::Mutex<()>,
}

/// A cookie and the stored version it was read or written as (`None`: not the stored one).
struct Held {
    cookie: SecretString,
    version: Option<i64>,
}

/// The stored row: its version, and its cookie when the current password opens it.
struct Stored {
    version: i64,
    cookie: Option<SecretString>,
}

impl ServiceSession {
    pub(super) fn new(account: ServiceAccount, store: Store) -> Self {
        let sealer = SealedBox::derive(PURPOSE, &account.password, &account.extension);
        Self {
            account,
            sealer,
            store,
            in_flight: tokio::sync::Mutex::new(()),
        }
    }

    pub(super) fn extension(&self) -> &str {
        &self.account.extension
    }

    /// The row's key, also bound into the seal.
    fn id(&self) -> &str {
        &self.account.extension
    }

    async fn stored(&self) -> Result<Option<Stored>, PbxError> {
        let Some(row) = self.store.service_session(self.id()).await? else {
            return Ok(None);
        };
        let cookie = match self.sealer.open(&row.sealed, self.id().as_bytes()) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "the stored 3CX service session does not open; signing in again");
                None
            }
        };
        Ok(Some(Stored {
            version: row.version,
            cookie,
        }))
    }

    /// A cookie stored after `used` (another replica rotated it), waiting briefly for a
    /// write in progress; `None` when the store has nothing newer.
    async fn newer_than(&self, used: Option<i64>) -> Result<Option<Held>, PbxError> {
        for wait in [None, Some(SETTLE)] {
            if let Some(d) = wait {
                tokio::time::sleep(d).await;
            }
            if let Some(Stored {
                version,
                cookie: Some(cookie),
            }) = self.stored().await?
            {
                if used.is_none_or(|u| version > u) {
                    return Ok(Some(Held {
                        cookie,
                        version: Some(version),
                    }));
                }
            }
        }
        Ok(None)
    }

    /// Stores `cookie` in place of version `expected`; the held cookie either way (with its
    /// new version when stored).
    async fn swap(
        &self,
        expected: Option<i64>,
        cookie: SecretString,
        now: i64,
    ) -> Result<Held, PbxError> {
        let sealed = self.sealer.seal(
            secrecy::ExposeSecret::expose_secret(&cookie),
            self.id().as_bytes(),
        )?;
        let version = self
            .store
            .swap_service_session(self.id(), expected, &sealed, now)
            .await?;
        if version.is_none() {
            tracing::debug!("another replica stored a newer 3CX service cookie first");
        }
        Ok(Held { cookie, version })
    }
}

impl PbxClient {
    /// An impersonated token for `extension`, authorised by the service session.
    pub(super) async fn impersonate_as_service(
        &self,
        svc: &ServiceSession,
        extension: &str,
    ) -> Result<AccessToken, PbxError> {
        let _one = svc.in_flight.lock().await;
        // Another request may have fetched it while this one waited.
        if let Some(t) = self.cached_impersonation(extension) {
            return Ok(t);
        }
        let stored = svc.stored().await?;
        let (mut held, mut signed_in) = match stored {
            Some(Stored {
                version,
                cookie: Some(cookie),
            }) => (
                Held {
                    cookie,
                    version: Some(version),
                },
                false,
            ),
            other => (
                self.service_sign_in(svc, other.map(|s| s.version)).await?,
                true,
            ),
        };
        let mut newer_tries = 0;
        loop {
            let (answer, rotated) = self
                .impersonation_request(Credential::RefreshCookie(&held.cookie), extension)
                .await?;
            if let Some(cookie) = rotated {
                held = match held.version {
                    Some(v) => svc.swap(Some(v), cookie, self.clock.now()).await?,
                    // Ours was not the stored one: keep it for this request only.
                    None => Held {
                        cookie,
                        version: None,
                    },
                };
            }
            match answer {
                Answer::Token(t) => return Ok(t),
                Answer::Forbidden => {
                    return Err(self.forbidden(extension, Some(svc.extension())).await);
                }
                Answer::Refused(status) => {
                    return Err(PbxError::SignInRefused {
                        extension: extension.to_string(),
                        status,
                    });
                }
                Answer::Failing(status) => return Err(Answer::failing(status)),
                Answer::StaleCredential => {}
            }
            if newer_tries < NEWER_TRIES {
                if let Some(newer) = svc.newer_than(held.version).await? {
                    newer_tries += 1;
                    held = newer;
                    continue;
                }
            }
            if signed_in {
                return Err(PbxError::ServiceCookieRefused(svc.extension().to_string()));
            }
            let version = svc.stored().await?.map(|s| s.version);
            held = self.service_sign_in(svc, version).await?;
            signed_in = true;
        }
    }

    /// Signs the service extension in anew and stores its session (`doctor`: proves the
    /// password and 2FA secret work today, not just that an old session still does). `None`
    /// when impersonation does not go through a service extension.
    pub async fn check_service_sign_in(&self) -> Result<Option<String>, PbxError> {
        let Some(svc) = &self.service else {
            return Ok(None);
        };
        let _one = svc.in_flight.lock().await;
        let version = svc.stored().await?.map(|s| s.version);
        self.service_sign_in(svc, version).await?;
        Ok(Some(svc.extension().to_string()))
    }

    /// Signs the service extension in (with a TOTP code when 3CX asks for one) and stores its
    /// cookie in place of version `expected`.
    async fn service_sign_in(
        &self,
        svc: &ServiceSession,
        expected: Option<i64>,
    ) -> Result<Held, PbxError> {
        let account = &svc.account;
        let ext = account.extension.as_str();
        let mut answer = self.login_request(ext, &account.password, "").await?;
        failing(&answer)?;
        if answer.needs_second_factor() {
            let key = account
                .totp_key
                .as_ref()
                .ok_or_else(|| PbxError::ServiceNeeds2fa(ext.to_string()))?;
            let code = super::totp::code(key, self.clock.now());
            answer = self.login_request(ext, &account.password, &code).await?;
            failing(&answer)?;
            if !answer.succeeded() {
                return Err(PbxError::Service2faRefused {
                    extension: ext.to_string(),
                    status: answer
                        .status
                        .unwrap_or_else(|| answer.http_status.to_string()),
                });
            }
        }
        if !answer.succeeded() {
            return Err(PbxError::ServiceSignIn {
                extension: ext.to_string(),
                status: answer.http_status,
            });
        }
        let cookie = super::webclient::refresh_cookie_set(answer.set_cookies.iter())
            .ok_or_else(|| PbxError::ServiceNoCookie(ext.to_string()))?;
        tracing::info!(extension = %ext, "signed in to 3CX as the service extension");
        svc.swap(expected, cookie, self.clock.now()).await
    }
}

/// A 5xx to the service extension's sign-in is 3CX failing (an outage), not a wrong
/// password or 2FA code: the log must not send the admin to check the credentials.
fn failing(answer: &super::webclient::LoginAnswer) -> Result<(), PbxError> {
    match answer.http_status {
        status @ 500.. => Err(PbxError::Api {
            status,
            code: "/webclient/api/Login/GetAccessToken".into(),
            message: "the service extension's sign-in failed".into(),
        }),
        _ => Ok(()),
    }
}
