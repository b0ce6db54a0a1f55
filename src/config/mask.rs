//! Serializers that mask secrets, so that `check-config` and any printed config never show
//! one; the masked output still parses back.

use secrecy::SecretString;
use serde::Serializer;
use url::Url;

/// What a secret renders as.
pub(super) const MASK: &str = "********";

pub(super) fn mask<S: Serializer>(_: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(MASK)
}

pub(super) fn mask_opt<S: Serializer>(v: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_str(MASK),
        None => s.serialize_none(),
    }
}

/// A database URL with its password masked (the rest stays readable).
pub(super) fn mask_url_password<S: Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
    match Url::parse(v) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some(MASK));
            s.serialize_str(u.as_str())
        }
        _ => s.serialize_str(v),
    }
}
