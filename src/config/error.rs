//! [`ConfigError`] and [`Origins`]: every error names the key and where its value came from
//! (the file, or the environment variable), because an admin fixing a broken deployment
//! should not have to guess.

use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin}: invalid TOML: {message}")]
    Syntax { origin: String, message: String },
    #[error("{origin}: key `{key}`: {message}")]
    Key {
        origin: String,
        key: String,
        message: String,
    },
}

/// Where each value came from, so that errors point at the right place.
pub(super) struct Origins {
    pub(super) file: String,
    /// Dotted key → where a value not from the file came from (a variable, a secret file).
    set: BTreeMap<String, String>,
}

impl Origins {
    pub(super) fn new(file: &str) -> Self {
        Self {
            file: file.to_string(),
            set: BTreeMap::new(),
        }
    }

    /// Records that `key` (and whatever is below it) came from `origin`.
    pub(super) fn set(&mut self, key: &str, origin: String) {
        self.set.insert(key.to_string(), origin);
    }

    /// Where `key`'s value came from: the most specific key recorded at or above it (a
    /// variable may set a whole list, `key[2]` then came from it), else the file.
    pub(super) fn of(&self, key: &str) -> String {
        let below = |k: &str| {
            key.strip_prefix(k)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        };
        self.set
            .iter()
            .filter(|(k, _)| below(k))
            .max_by_key(|(k, _)| k.len())
            .map(|(_, origin)| origin.clone())
            .unwrap_or_else(|| self.file.clone())
    }

    /// The error for `key`, naming the file or the variable it came from.
    pub(super) fn error(&self, key: &str, message: impl fmt::Display) -> ConfigError {
        ConfigError::Key {
            origin: self.of(key),
            key: key.to_string(),
            message: message.to_string(),
        }
    }
}

/// How an error names a value set by environment variable `var`.
pub(super) fn env_origin(var: &str) -> String {
    format!("environment variable {var}")
}

/// serde names a missing or unknown field in its message, not in the path; put it back.
pub(super) fn full_key(path: &str, message: &str) -> String {
    let named = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .and_then(|rest| rest.split('`').next());
    match (named, path) {
        (Some(f), "." | "") => f.to_string(),
        (Some(f), p) if p != f && !p.ends_with(&format!(".{f}")) => format!("{p}.{f}"),
        (_, p) => p.to_string(),
    }
}
