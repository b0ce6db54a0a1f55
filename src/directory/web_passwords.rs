//! Random web passwords (`[pbx] randomize_web_passwords`, impersonation mode). In
//! impersonation mode nobody needs an extension's own web password (`AccessPassword`), yet
//! it still opens 3CX on the LAN or wherever 3CX is reachable directly. With this option
//! pbxgate sets it, once per extension it manages, to a random value it never stores, so
//! that Entra ID is the only way in. Done at sign-in and when the user sync creates,
//! matches or updates an extension; remembered per 3CX user id in `sync_items`, so that it
//! is not repeated (an extension deleted and made again has a new id and is done again).

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::SecretString;

use super::PasswordError;
use crate::clock::Clock;
use crate::config::PbxConfig;
use crate::ids;
use crate::pbx::PbxClient;
use crate::store::Store;

/// `sync_items` worker key: 3CX user id → the extension number it had when done.
const DONE: &str = "web-passwords";

/// Sets the random web passwords; does nothing unless the option is on.
#[derive(Clone)]
pub struct WebPasswords {
    enabled: bool,
    /// pbxgate's own service extension: its password is how pbxgate impersonates, so it
    /// is never randomized (that would lock pbxgate out of 3CX).
    service_extension: Option<String>,
    pbx: Arc<PbxClient>,
    store: Store,
    clock: Arc<dyn Clock>,
}

impl WebPasswords {
    pub fn new(
        config: &PbxConfig,
        pbx: Arc<PbxClient>,
        store: Store,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            enabled: config.randomize_web_passwords,
            service_extension: config.service_account().map(|a| a.extension),
            pbx,
            store,
            clock,
        }
    }

    /// Gives the extension a random web password unless that was done before; true when it
    /// was done now. The password is set in 3CX first and recorded after, so a failure in
    /// between only means it is done once more.
    pub async fn randomize(
        &self,
        pbx_user_id: i64,
        extension: &str,
    ) -> Result<bool, PasswordError> {
        let key = pbx_user_id.to_string();
        let own = self.service_extension.as_deref() == Some(extension);
        if !self.enabled || own || self.store.item(DONE, &key).await?.is_some() {
            return Ok(false);
        }
        let password = SecretString::from(URL_SAFE_NO_PAD.encode(ids::random::<24>()?));
        self.pbx.set_access_password(pbx_user_id, &password).await?;
        // 3CX ends an extension's sessions when its password changes (shared/notes/3cx.md
        // §2.1): a cached impersonated token may be one of them.
        self.pbx.forget_impersonation(extension);
        let now = self.clock.now();
        self.store
            .set_item(DONE, &key, Some(extension), now)
            .await?;
        tracing::info!(extension, "web password replaced by a random one");
        Ok(true)
    }

    /// [`Self::randomize`] where a failure must not stop what the caller does (a sign-in, a
    /// sync action): logged, and tried again at the next sign-in or sync change.
    pub async fn randomize_or_log(&self, pbx_user_id: i64, extension: &str) {
        if let Err(e) = self.randomize(pbx_user_id, extension).await {
            tracing::warn!(error = %e, extension, "could not randomize the web password");
        }
    }
}
