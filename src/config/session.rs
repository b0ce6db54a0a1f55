//! `[session]`: the gateway's own session cookie and how long a sign-in lasts.

use serde::{Deserialize, Serialize};

use super::HumanDuration;
use super::error::{ConfigError, Origins};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    pub cookie_name: String,
    /// Absolute lifetime: a session ends this long after sign-in, however active.
    pub lifetime: HumanDuration,
    /// A session unused for this long ends.
    pub idle_timeout: HumanDuration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            cookie_name: "pbxgate".into(),
            lifetime: HumanDuration::secs(12 * 3600),
            idle_timeout: HumanDuration::secs(3600),
        }
    }
}

impl SessionConfig {
    pub(super) fn validate(&self, o: &Origins) -> Result<(), ConfigError> {
        let valid_name = !self.cookie_name.is_empty()
            && self
                .cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !valid_name || self.cookie_name.starts_with("__") {
            return Err(o.error(
                "session.cookie_name",
                "use letters, digits, '-', '_' or '.' (the __Host- prefix is added automatically)",
            ));
        }
        if self.idle_timeout.0.is_zero() || self.lifetime.0.is_zero() {
            return Err(o.error("session.lifetime", "durations must be above zero"));
        }
        if self.idle_timeout > self.lifetime {
            return Err(o.error(
                "session.idle_timeout",
                "must not be longer than session.lifetime",
            ));
        }
        Ok(())
    }
}
