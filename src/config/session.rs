//! `[session]`: the gateway's own session cookie and how long a sign-in lasts.

use serde::{Deserialize, Serialize};

use super::HumanDuration;
use super::check::at_least;
use super::error::{ConfigError, Origins};

/// The shortest `recheck` allowed: each round reads every signed-in user from Graph.
pub const MIN_RECHECK: HumanDuration = HumanDuration::secs(10);

/// What the session recheck needs in Entra, for `check-config` and the README.
pub const RECHECK_PERMISSION: &str = "session.recheck and the sign-in guest check read users \
     from Microsoft Graph: the app registration needs the application permission \
     User.Read.All (admin consent), with or without the user sync";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    pub cookie_name: String,
    /// Absolute lifetime: a session ends this long after sign-in, however active.
    pub lifetime: HumanDuration,
    /// A session unused for this long ends.
    pub idle_timeout: HumanDuration,
    /// How often the users with live sessions are read from Entra (Graph): a disabled or
    /// deleted user, or a session older than the user's "revoke sessions", ends within this.
    pub recheck: HumanDuration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            cookie_name: "pbxgate".into(),
            lifetime: HumanDuration::secs(12 * 3600),
            idle_timeout: HumanDuration::secs(3600),
            recheck: HumanDuration::secs(300),
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
        at_least(self.recheck, MIN_RECHECK, "session.recheck", o)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recheck_defaults_to_five_minutes_and_has_a_floor_named_by_key() {
        let o = Origins::new("test.toml");
        let mut c = SessionConfig::default();
        assert_eq!(c.recheck, HumanDuration::secs(300));
        c.recheck = HumanDuration::secs(10);
        assert!(c.validate(&o).is_ok());
        c.recheck = HumanDuration::secs(9);
        let e = c.validate(&o).unwrap_err().to_string();
        assert_eq!(e, "test.toml: key `session.recheck`: must be at least 10s");
    }
}
