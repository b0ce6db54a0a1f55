//! `[entra]`: the Entra ID app registration users sign in through and the sync reads Graph
//! with, and its credential (a secret, a secret file, or a certificate).

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

use super::check::{both_or_neither, http_url, https_unless_loopback, require};
use super::error::{ConfigError, Origins};
use super::mask::mask_opt;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EntraConfig {
    pub tenant_id: String,
    pub client_id: String,
    #[serde(default, serialize_with = "mask_opt")]
    pub client_secret: Option<SecretString>,
    /// A file holding `client_secret` (read at start, one trailing newline dropped).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// When the client secret expires (the date Entra showed when it was made), so that
    /// `doctor` warns 30 days ahead; optional (doctor asks Graph when it may).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_expires: Option<ExpiryDate>,
    #[serde(default)]
    pub client_certificate: Option<PathBuf>,
    #[serde(default)]
    pub client_private_key: Option<PathBuf>,
    #[serde(default = "default_authority")]
    pub authority: Url,
    #[serde(default = "default_graph_url")]
    pub graph_url: Url,
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    #[serde(default)]
    pub admin_groups: Vec<String>,
}

impl EntraConfig {
    pub(super) fn validate(&self, o: &Origins) -> Result<(), ConfigError> {
        require(&self.tenant_id, "entra.tenant_id", o)?;
        require(&self.client_id, "entra.client_id", o)?;
        http_url(&self.authority, "entra.authority", o)?;
        https_unless_loopback(
            &self.authority,
            "entra.authority",
            "must be https (http only for a local test provider)",
            o,
        )?;
        http_url(&self.graph_url, "entra.graph_url", o)?;
        self.validate_credential(o)
    }

    /// A certificate needs its key; without one, a non-empty secret is required.
    fn validate_credential(&self, o: &Origins) -> Result<(), ConfigError> {
        let certificate = self.client_certificate.is_some();
        both_or_neither(
            (certificate, self.client_private_key.is_some()),
            ("entra.client_certificate", "entra.client_private_key"),
            o,
        )?;
        let secret = self
            .client_secret
            .as_ref()
            .is_some_and(|s| !s.expose_secret().is_empty());
        if !certificate && !secret {
            return Err(o.error(
                "entra.client_secret",
                "missing: set client_secret, client_secret_file, or client_certificate and client_private_key",
            ));
        }
        Ok(())
    }
}

/// A calendar date such as `2027-06-30`, written as a TOML date or a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiryDate(pub jiff::civil::Date);

impl ExpiryDate {
    /// The start of the day in UTC, in Unix seconds.
    pub fn unix(self) -> i64 {
        self.0
            .to_zoned_datetime(jiff::tz::TimeZone::UTC)
            .map(|z| z.timestamp().as_second())
            .unwrap_or(i64::MAX)
    }
}

impl<'de> Deserialize<'de> for ExpiryDate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Toml(toml::value::Datetime),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Text(t) => t,
            Raw::Toml(t) => t.to_string(),
        };
        text.trim()
            .parse::<jiff::civil::Date>()
            .map(ExpiryDate)
            .map_err(|e| serde::de::Error::custom(format!("not a date like 2027-06-30: {e}")))
    }
}

impl Serialize for ExpiryDate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

fn default_authority() -> Url {
    Url::parse("https://login.microsoftonline.com").expect("static URL")
}
fn default_graph_url() -> Url {
    Url::parse("https://graph.microsoft.com").expect("static URL")
}
