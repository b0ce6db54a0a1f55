//! Secrets at rest in the store: AES-256-GCM with a random nonce per value, stored as base64
//! of nonce ‖ ciphertext ‖ tag. One box, used by the managed web passwords (key from
//! `[pbx] password_key`) and by the 3CX service session (key derived from the service
//! extension's password), so that a copy of the store alone opens nothing.
//!
//! Layer: a foundation beside `ids`; it knows no config key, so its callers name theirs in
//! their own errors.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf;
use secrecy::{ExposeSecret, SecretString};

use crate::ids::{self, RandomError};

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the key is not base64: {0}")]
    KeyEncoding(#[from] base64::DecodeError),
    #[error("the key is not 32 bytes")]
    KeyLength,
    #[error(transparent)]
    Random(#[from] RandomError),
    #[error("sealing failed")]
    Seal,
    #[error("the sealed value is malformed")]
    Malformed,
    #[error("the key does not open this value (was it changed?)")]
    WrongKey,
}

/// An AES-256-GCM key with the seal and open operations pbxgate stores secrets with.
pub struct SealedBox(LessSafeKey);

impl SealedBox {
    /// A box from 32 raw key bytes.
    pub fn from_bytes(raw: &[u8]) -> Result<Self, SealError> {
        let key = UnboundKey::new(&AES_256_GCM, raw).map_err(|_| SealError::KeyLength)?;
        Ok(Self(LessSafeKey::new(key)))
    }

    /// A box from base64 of 32 random bytes (a configured key).
    pub fn from_base64(key: &SecretString) -> Result<Self, SealError> {
        Self::from_bytes(&STANDARD.decode(key.expose_secret().trim())?)
    }

    /// A box whose key is derived (HKDF-SHA256) from `secret`, bound to `purpose` by the
    /// salt and to `context` (e.g. an extension number) by the info: the same secret used
    /// for something else, or for another context, gives another key.
    pub fn derive(purpose: &str, secret: &SecretString, context: &str) -> Self {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, purpose.as_bytes());
        let prk = salt.extract(secret.expose_secret().as_bytes());
        let info = [context.as_bytes()];
        let okm = prk
            .expand(&info, &AES_256_GCM)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Self(LessSafeKey::new(UnboundKey::from(okm)))
    }

    /// Seals `plain`; `aad` (not secret, not stored) must be given again to open it, so a
    /// value copied to another row does not open there.
    pub fn seal(&self, plain: &str, aad: &[u8]) -> Result<String, SealError> {
        let nonce = ids::random::<NONCE_LEN>()?;
        let mut data = plain.as_bytes().to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut data,
            )
            .map_err(|_| SealError::Seal)?;
        let mut out = nonce.to_vec();
        out.extend(data);
        Ok(STANDARD.encode(out))
    }

    pub fn open(&self, sealed: &str, aad: &[u8]) -> Result<SecretString, SealError> {
        let raw = STANDARD.decode(sealed).map_err(|_| SealError::Malformed)?;
        if raw.len() < NONCE_LEN {
            return Err(SealError::Malformed);
        }
        let (nonce, data) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Malformed)?;
        let mut data = data.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(aad), &mut data)
            .map_err(|_| SealError::WrongKey)?;
        String::from_utf8(plain.to_vec())
            .map(SecretString::from)
            .map_err(|_| SealError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_need_the_key_and_the_aad() {
        let key = SecretString::from(STANDARD.encode([7u8; 32]));
        let b = SealedBox::from_base64(&key).unwrap();
        let sealed = b.seal("s3cret", b"row-1").unwrap();
        assert!(!sealed.contains("s3cret"));
        assert_eq!(b.open(&sealed, b"row-1").unwrap().expose_secret(), "s3cret");
        assert!(matches!(
            b.open(&sealed, b"row-2"),
            Err(SealError::WrongKey)
        ));
        let other = SealedBox::from_bytes(&[8u8; 32]).unwrap();
        assert!(matches!(
            other.open(&sealed, b"row-1"),
            Err(SealError::WrongKey)
        ));
        assert!(matches!(b.open("!!", b""), Err(SealError::Malformed)));
        assert!(matches!(
            SealedBox::from_bytes(&[1u8; 16]),
            Err(SealError::KeyLength)
        ));
    }

    #[test]
    fn derived_keys_depend_on_secret_purpose_and_context() {
        let pw = SecretString::from("service-password".to_string());
        let sealed = SealedBox::derive("p", &pw, "999")
            .seal("cookie", b"")
            .unwrap();
        let again = SealedBox::derive("p", &pw, "999");
        assert_eq!(again.open(&sealed, b"").unwrap().expose_secret(), "cookie");
        let changed = SecretString::from("new-password".to_string());
        for other in [
            SealedBox::derive("p", &changed, "999"),
            SealedBox::derive("p", &pw, "998"),
            SealedBox::derive("q", &pw, "999"),
        ] {
            assert!(other.open(&sealed, b"").is_err());
        }
    }
}
