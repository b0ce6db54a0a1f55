//! Managed web passwords (`session_mode = "managed-password"`): a random `AccessPassword`
//! that pbxgate sets on an extension and signs in with, so that the user never needs to
//! know it. Kept in the extension's directory row, sealed with AES-256-GCM under
//! `[pbx] password_key`, so a copy of the store alone does not open 3CX.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use secrecy::{ExposeSecret, SecretString};

use crate::clock::Clock;
use crate::ids::{self, RandomError};
use crate::pbx::{PbxClient, PbxError};
use crate::store::{DirectoryRow, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("pbx.password_key is not set")]
    NoKey,
    #[error("pbx.password_key: not base64: {0}")]
    KeyEncoding(#[from] base64::DecodeError),
    #[error("pbx.password_key: not 32 bytes")]
    KeyLength,
    #[error(transparent)]
    Random(#[from] RandomError),
    #[error("sealing the password failed")]
    Seal,
    #[error("the sealed password is malformed")]
    Malformed,
    #[error("the password key does not open this password (was it changed?)")]
    WrongKey,
    #[error("setting the web password in 3CX failed")]
    Pbx(#[from] PbxError),
    #[error("storing the sealed password failed")]
    Store(#[from] StoreError),
}

/// The managed passwords of extensions: made, set in 3CX and stored on first use.
pub struct ManagedPasswords {
    sealer: Option<PasswordBox>,
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
            sealer: key.map(PasswordBox::new).transpose()?,
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
            match sealer.open(sealed) {
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
        sealer: &PasswordBox,
        person: &DirectoryRow,
    ) -> Result<SecretString, PasswordError> {
        let password = SecretString::from(URL_SAFE_NO_PAD.encode(ids::random::<24>()?));
        self.pbx
            .set_access_password(person.pbx_user_id, &password)
            .await?;
        let mut row = person.clone();
        row.managed_password = Some(sealer.seal(password.expose_secret())?);
        row.updated_at = self.clock.now();
        self.store.upsert_directory_user(&row).await?;
        Ok(password)
    }
}

/// AES-256-GCM with a random nonce per password; stored as base64 of nonce ‖ ciphertext.
struct PasswordBox(LessSafeKey);

impl PasswordBox {
    fn new(key: &SecretString) -> Result<Self, PasswordError> {
        let raw = STANDARD.decode(key.expose_secret().trim())?;
        let key = UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| PasswordError::KeyLength)?;
        Ok(Self(LessSafeKey::new(key)))
    }

    fn seal(&self, plain: &str) -> Result<String, PasswordError> {
        let nonce = ids::random::<NONCE_LEN>()?;
        let mut data = plain.as_bytes().to_vec();
        self.0
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data)
            .map_err(|_| PasswordError::Seal)?;
        let mut out = nonce.to_vec();
        out.extend(data);
        Ok(STANDARD.encode(out))
    }

    fn open(&self, sealed: &str) -> Result<SecretString, PasswordError> {
        let raw = STANDARD
            .decode(sealed)
            .map_err(|_| PasswordError::Malformed)?;
        if raw.len() < NONCE_LEN {
            return Err(PasswordError::Malformed);
        }
        let (nonce, data) = raw.split_at(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| PasswordError::Malformed)?;
        let mut data = data.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::empty(), &mut data)
            .map_err(|_| PasswordError::WrongKey)?;
        String::from_utf8(plain.to_vec())
            .map(SecretString::from)
            .map_err(|_| PasswordError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managed_passwords_round_trip_and_need_the_key() {
        let key = SecretString::from(STANDARD.encode([7u8; 32]));
        let b = PasswordBox::new(&key).unwrap();
        let sealed = b.seal("s3cret").unwrap();
        assert!(!sealed.contains("s3cret"));
        assert_eq!(b.open(&sealed).unwrap().expose_secret(), "s3cret");
        let other = PasswordBox::new(&SecretString::from(STANDARD.encode([8u8; 32]))).unwrap();
        assert!(other.open(&sealed).is_err());
    }
}
