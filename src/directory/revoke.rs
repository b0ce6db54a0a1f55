//! Revocation: ending a user's pbxgate sessions *and* the 3CX access behind them, the same
//! way for every path that takes access away (sign-out, Entra's front-channel sign-out, the
//! session recheck, the user sync's `on_removed`, an admin's decision).
//!
//! Ending pbxgate's session alone is not enough, because 3CX issued tokens of its own:
//! - `impersonation`: pbxgate caches the impersonated access token per extension; it is
//!   dropped so that no further token is handed out. A token already handed out stays valid
//!   at 3CX until it expires (3CX issues them for up to 60 minutes; it cannot be recalled).
//! - `managed-password`: the browser holds 3CX's own `RefreshTokenCookie`. Where the browser
//!   presents it (sign-out), that 3CX session is logged out. Where it does not (every
//!   server-side path), the extension's managed password is rotated: 3CX invalidates an
//!   extension's tokens when its password changes, which ends *every* 3CX webclient session
//!   of that extension, the user's other browsers included.
//!
//! Layer: domain (beside the directory, whose rows and managed passwords it uses), so that
//! both `auth` and `sync` reach it without importing each other.

use std::sync::Arc;

use crate::config::SessionMode;
use crate::metrics::Metrics;
use crate::pbx::PbxClient;
use crate::session::{Session, SessionError, Sessions};
use crate::store::{Store, StoreError};

use super::{ManagedPasswords, PasswordError};

/// Why access ends: the `reason` label of `pbxgate_sessions_revoked`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The user signed out in this browser.
    Logout,
    /// Entra's front-channel sign-out of an Entra session.
    FrontChannel,
    /// The recheck found the account disabled in Entra.
    Disabled,
    /// The recheck found the user deleted in Entra.
    Deleted,
    /// The recheck found the session older than the user's "revoke sessions" in Entra.
    SessionsRevoked,
    /// The user sync found the user disabled or deleted (`on_removed`).
    Removed,
    /// An administrator's decision.
    Admin,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::FrontChannel => "frontchannel",
            Self::Disabled => "disabled",
            Self::Deleted => "deleted",
            Self::SessionsRevoked => "sessions_revoked",
            Self::Removed => "removed",
            Self::Admin => "admin",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("ending the 3CX access of extension {extension}: {source}")]
    Pbx {
        extension: String,
        #[source]
        source: PasswordError,
    },
}

/// The key sessions are stored under: Entra's (tenant id, object id).
pub fn user_key(tenant_id: &str, object_id: &str) -> String {
    format!("{tenant_id}:{object_id}")
}

/// The object id in a session's user key, if it belongs to `tenant_id`.
pub fn object_id_of<'a>(user_key: &'a str, tenant_id: &str) -> Option<&'a str> {
    user_key
        .strip_prefix(tenant_id)
        .and_then(|rest| rest.strip_prefix(':'))
        .filter(|oid| !oid.is_empty())
}

pub struct Revoker {
    sessions: Arc<Sessions>,
    pbx: Arc<PbxClient>,
    passwords: Arc<ManagedPasswords>,
    store: Store,
    metrics: Arc<Metrics>,
    mode: SessionMode,
    tenant_id: String,
}

impl Revoker {
    pub fn new(
        sessions: Arc<Sessions>,
        pbx: Arc<PbxClient>,
        passwords: Arc<ManagedPasswords>,
        store: Store,
        metrics: Arc<Metrics>,
        mode: SessionMode,
        tenant_id: &str,
    ) -> Self {
        Self {
            sessions,
            pbx,
            passwords,
            store,
            metrics,
            mode,
            tenant_id: tenant_id.to_string(),
        }
    }

    /// The sessions it ends (the recheck reads the live ones from it).
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }

    /// One browser's sign-out: its session, and its 3CX session (`refresh_cookie` is the
    /// browser's `RefreshTokenCookie` in managed-password mode). Returns the session that
    /// ended, if it was live (its `login_hint` goes to Entra's end-session endpoint).
    pub async fn sign_out(
        &self,
        session_id: &str,
        refresh_cookie: Option<&str>,
    ) -> Result<Option<Session>, RevokeError> {
        let session = self.sessions.validate(session_id).await?.ok();
        let ended = match self.sessions.revoke(session_id).await {
            Ok(ended) => ended,
            Err(e) => {
                // The store is down: end what needs no store, then report the failed write.
                self.end_pbx_access_offline(refresh_cookie, session.as_ref())
                    .await;
                return Err(e.into());
            }
        };
        self.count(Reason::Logout, u64::from(ended));
        match (self.mode, refresh_cookie, &session) {
            (SessionMode::ManagedPassword, Some(cookie), _) => {
                // This browser's 3CX session, exactly; the user's other browsers keep theirs.
                if let Err(e) = self.pbx.webclient_logout(cookie).await {
                    tracing::warn!(error = %e, "3CX logout failed");
                }
            }
            (_, _, Some(s)) => {
                self.end_pbx_access(&s.user_key, std::slice::from_ref(&s.extension))
                    .await?
            }
            (_, _, None) => {}
        }
        Ok(session)
    }

    /// What [`Self::sign_out`] can end while the store is unreachable: this browser's 3CX
    /// session (managed-password mode) or the cached impersonated token of the session's
    /// extension, so that a failed store write does not keep the 3CX access alive.
    async fn end_pbx_access_offline(
        &self,
        refresh_cookie: Option<&str>,
        session: Option<&Session>,
    ) {
        match (self.mode, refresh_cookie, session) {
            (SessionMode::ManagedPassword, Some(cookie), _) => {
                if let Err(e) = self.pbx.webclient_logout(cookie).await {
                    tracing::warn!(error = %e, "3CX logout failed");
                }
            }
            (SessionMode::Impersonation, _, Some(s)) => self.pbx.forget_impersonation(&s.extension),
            _ => {}
        }
    }

    /// Entra's front-channel sign-out: every session of Entra session `sid`, and their 3CX
    /// access (the request carries no 3CX cookie: it comes from Entra's page).
    /// A `sid` that matches no live session (anyone can send one) ends here: one read, no
    /// store write, no session-cache invalidation.
    pub async fn front_channel(&self, sid: &str) -> Result<u64, RevokeError> {
        let users = self.store.idp_session_users(sid).await?;
        if users.is_empty() {
            return Ok(0);
        }
        let n = self.sessions.revoke_idp_session(sid).await?;
        self.count(Reason::FrontChannel, n);
        let mut first_error = None;
        for (user_key, extension) in users {
            if let Err(e) = self
                .end_pbx_access(&user_key, std::slice::from_ref(&extension))
                .await
            {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(n), Err)
    }

    /// Every session of a user and their 3CX access (user sync, recheck, admin).
    pub async fn revoke_user(&self, object_id: &str, reason: Reason) -> Result<u64, RevokeError> {
        let key = user_key(&self.tenant_id, object_id);
        let extensions = self.store.session_extensions(&key).await?;
        let n = self.sessions.revoke_user(&key).await?;
        self.count(reason, n);
        self.end_pbx_access(&key, &extensions).await?;
        Ok(n)
    }

    /// One session, named by its stored hash (the admin console), and the 3CX access of its
    /// extension: in managed-password mode that rotates the password, which ends every 3CX
    /// webclient session of the extension (the module doc says why). Returns whether a live
    /// session ended.
    pub async fn revoke_session(&self, id_hash: &str, reason: Reason) -> Result<bool, RevokeError> {
        let Some(row) = self.store.session(id_hash).await? else {
            return Ok(false);
        };
        let ended = self.sessions.revoke_hash(id_hash).await?;
        self.count(reason, u64::from(ended));
        self.end_pbx_access(&row.user_key, std::slice::from_ref(&row.extension))
            .await?;
        Ok(ended)
    }

    /// The sessions of a user that started before `before` (Entra's "revoke sessions"),
    /// and the 3CX access behind them. Later sessions stay.
    pub async fn revoke_user_before(
        &self,
        object_id: &str,
        before: i64,
    ) -> Result<u64, RevokeError> {
        let key = user_key(&self.tenant_id, object_id);
        let n = self.sessions.revoke_user_before(&key, before).await?;
        if n > 0 {
            self.count(Reason::SessionsRevoked, n);
            let extensions = self.store.session_extensions(&key).await?;
            self.end_pbx_access(&key, &extensions).await?;
        }
        Ok(n)
    }

    fn count(&self, reason: Reason, n: u64) {
        if n > 0 {
            self.metrics.sessions_revoked(reason.as_str(), n);
        }
    }

    /// Ends what 3CX issued for the user's extensions (see the module doc). The directory row
    /// names the extension too, so a user without sessions loses 3CX access all the same.
    async fn end_pbx_access(&self, key: &str, extensions: &[String]) -> Result<(), RevokeError> {
        let row = match object_id_of(key, &self.tenant_id) {
            Some(oid) => self.store.directory_user(&self.tenant_id, oid).await?,
            None => None,
        };
        match self.mode {
            SessionMode::Impersonation => {
                for ext in extensions.iter().chain(row.as_ref().map(|r| &r.extension)) {
                    self.pbx.forget_impersonation(ext);
                }
            }
            SessionMode::ManagedPassword => {
                let Some(row) = row.filter(|r| r.managed_password.is_some()) else {
                    return Ok(()); // pbxgate never signed this extension in
                };
                self.passwords
                    .rotate(&row)
                    .await
                    .map_err(|source| RevokeError::Pbx {
                        extension: row.extension.clone(),
                        source,
                    })?;
                tracing::info!(extension = %row.extension, "rotated the managed password: 3CX sessions ended");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_keys_round_trip_within_their_tenant() {
        let key = user_key("t1", "o1");
        assert_eq!(object_id_of(&key, "t1"), Some("o1"));
        assert_eq!(object_id_of(&key, "t2"), None);
        assert_eq!(object_id_of("t1:", "t1"), None);
        assert_eq!(object_id_of("t10:o1", "t1"), None);
    }
}
