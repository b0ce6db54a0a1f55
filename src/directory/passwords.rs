//! Managed web passwords (`session_mode = "managed-password"`): a random `AccessPassword`
//! that pbxgate sets on an extension and signs in with, so that the user never needs to
//! know it. Kept in the extension's directory row, sealed with AES-256-GCM under
//! `[pbx] password_key`, so a copy of the store alone does not open 3CX.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretString};

use crate::clock::Clock;
use crate::ids::{self, RandomError};
use crate::pbx::{PbxClient, PbxError};
use crate::seal::{SealError, SealedBox};
use crate::store::{DirectoryRow, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("pbx.password_key is not set")]
    NoKey,
    #[error("pbx.password_key: {0}")]
    Key(#[source] SealError),
    #[error(transparent)]
    Random(#[from] RandomError),
    #[error("the managed password: {0}")]
    Seal(#[from] SealError),
    #[error("setting the web password in 3CX failed")]
    Pbx(#[from] PbxError),
    #[error("storing the sealed password failed")]
    Store(#[from] StoreError),
}

/// The managed passwords of extensions: made, set in 3CX and stored on first use.
pub struct ManagedPasswords {
    sealer: Option<SealedBox>,
    pbx: Arc<PbxClient>,
    store: Store,
    clock: Arc<dyn Clock>,
}

impl ManagedPasswords {
    /// `key` is `[pbx] password_key` (base64 of 32 bytes); without it, [`Self::get`] fails.
    pub fn new(
        key: Option<&SecretString>,
        pbx: Arc<PbxClient>,
        store: Store,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, PasswordError> {
        Ok(Self {
            sealer: key
                .map(SealedBox::from_base64)
                .transpose()
                .map_err(PasswordError::Key)?,
            pbx,
            store,
            clock,
        })
    }

    /// The extension's web password; a new one (set in 3CX, then stored) when it has none
    /// or the stored one no longer opens.
    pub async fn get(&self, person: &DirectoryRow) -> Result<SecretString, PasswordError> {
        let sealer = self.sealer.as_ref().ok_or(PasswordError::NoKey)?;
        if let Some(sealed) = &person.managed_password {
            match sealer.open(sealed, b"") {
                Ok(p) => return Ok(p),
                Err(e) => {
                    tracing::warn!(error = %e, extension = %person.extension, "resetting the managed password")
                }
            }
        }
        self.set_new(sealer, person).await
    }

    /// Replaces the extension's web password with a new random one, in 3CX and then in the
    /// store. 3CX invalidates the extension's tokens when its password changes
    /// (`shared/notes/3cx.md` §2.1), so every `RefreshTokenCookie` a browser holds for it
    /// stops working: how a revocation reaches 3CX when pbxgate has no cookie to log out.
    /// An extension that is gone from 3CX has nothing left to protect.
    pub async fn rotate(&self, person: &DirectoryRow) -> Result<(), PasswordError> {
        let sealer = self.sealer.as_ref().ok_or(PasswordError::NoKey)?;
        match self.set_new(sealer, person).await {
            Err(PasswordError::Pbx(PbxError::Api { status: 404, .. })) => Ok(()),
            other => other.map(drop),
        }
    }

    async fn set_new(
        &self,
        sealer: &SealedBox,
        person: &DirectoryRow,
    ) -> Result<SecretString, PasswordError> {
        let password = SecretString::from(URL_SAFE_NO_PAD.encode(ids::random::<24>()?));
        self.pbx
            .set_access_password(person.pbx_user_id, &password)
            .await?;
        let mut row = person.clone();
        row.managed_password = Some(sealer.seal(password.expose_secret(), b"")?);
        row.updated_at = self.clock.now();
        self.store.upsert_directory_user(&row).await?;
        Ok(password)
    }
}
