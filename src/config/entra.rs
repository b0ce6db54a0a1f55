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

fn default_authority() -> Url {
    Url::parse("https://login.microsoftonline.com").expect("static URL")
}
fn default_graph_url() -> Url {
    Url::parse("https://graph.microsoft.com").expect("static URL")
}
