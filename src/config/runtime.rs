//! `[store]` and `[log]`: where pbxgate keeps its state, and how it logs.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::{ConfigError, Origins};
use super::mask::mask_url_password;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    #[serde(serialize_with = "mask_url_password")]
    pub url: String,
    /// A file holding `url`, for a PostgreSQL URL with a password in it.
    pub url_file: Option<PathBuf>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://data/pbxgate.db".into(),
            url_file: None,
        }
    }
}

impl StoreConfig {
    pub(super) fn validate(&self, o: &Origins) -> Result<(), ConfigError> {
        if !(self.url.starts_with("sqlite:") || self.url.starts_with("postgres")) {
            return Err(o.error("store.url", "must start with sqlite:// or postgres://"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `pbxgate=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

impl LogConfig {
    /// The filter is checked here, so that a typo fails `check-config`, not logging.
    pub(super) fn validate(&self, o: &Origins) -> Result<(), ConfigError> {
        tracing_subscriber::EnvFilter::try_new(&self.level)
            .map(|_| ())
            .map_err(|e| o.error("log.level", e))
    }
}
