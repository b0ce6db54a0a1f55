//! CSRF tokens for the console's forms, bound to the session: an HMAC-SHA256 of a fixed
//! label under the session id (a 256-bit secret that only the browser's HttpOnly cookie
//! and nobody else holds). Nothing to store; a new session gets new tokens; a token never
//! reveals the session id.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;

/// The token of the session whose id is `session_id`.
pub fn token(session_id: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, session_id.as_bytes());
    URL_SAFE_NO_PAD.encode(hmac::sign(&key, b"pbxgate admin console csrf v1").as_ref())
}

/// Whether `presented` is `expected` (the session's [`token`]), compared in constant time.
pub fn matches(expected: &str, presented: &str) -> bool {
    !presented.is_empty() && crate::ids::secrets_equal(expected, presented)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_per_session_and_checked() {
        let a = "a".repeat(43);
        let b = "b".repeat(43);
        assert!(matches(&token(&a), &token(&a)));
        assert!(!matches(&token(&a), &token(&b)));
        assert!(!matches("", ""));
        assert_ne!(token(&a), a);
    }
}
