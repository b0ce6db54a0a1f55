//! `[pbx]`: the 3CX behind the gateway, its API client, how sessions are opened there
//! ([`SessionMode`]), and which paths pass through without a pbxgate session.

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

use super::HumanDuration;
use super::check::{http_url, require};
use super::error::{ConfigError, Origins};
use super::mask::{mask, mask_opt};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionMode {
    Impersonation,
    ManagedPassword,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PbxConfig {
    /// Origin of the 3CX web server, e.g. `https://pbx.example.com:5001`.
    pub url: Url,
    /// XAPI API client (Admin → Integrations → API).
    pub client_id: String,
    #[serde(serialize_with = "mask")]
    pub client_secret: SecretString,
    #[serde(default = "default_session_mode")]
    pub session_mode: SessionMode,
    /// Path prefixes proxied without a pbxgate session; 3CX authenticates them itself.
    #[serde(default = "default_passthrough")]
    pub passthrough: Vec<String>,
    /// Extra CA (PEM) for a 3CX with a self-signed or private-CA certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Time allowed for 3CX to start answering (response headers); bodies stream untimed.
    #[serde(default = "default_response_timeout")]
    pub response_timeout: HumanDuration,
    /// `managed-password` only: 32 random bytes, base64, encrypting the web passwords
    /// pbxgate sets on the extensions it manages.
    #[serde(default, serialize_with = "mask_opt")]
    pub password_key: Option<SecretString>,
}

impl PbxConfig {
    pub(super) fn validate(&self, o: &Origins) -> Result<(), ConfigError> {
        http_url(&self.url, "pbx.url", o)?;
        if self.url.path() != "/" || self.url.query().is_some() {
            return Err(o.error(
                "pbx.url",
                "must be an origin like https://pbx.example.com:5001 (no path)",
            ));
        }
        require(&self.client_id, "pbx.client_id", o)?;
        require(self.client_secret.expose_secret(), "pbx.client_secret", o)?;
        self.validate_passthrough(o)?;
        self.validate_password_key(o)
    }

    fn validate_passthrough(&self, o: &Origins) -> Result<(), ConfigError> {
        match self
            .passthrough
            .iter()
            .enumerate()
            .find(|(_, p)| !p.starts_with('/') || p.contains(".."))
        {
            Some((i, p)) => Err(o.error(
                &format!("pbx.passthrough[{i}]"),
                format!("{p:?} must be an absolute path prefix such as \"/provisioning/\""),
            )),
            None => Ok(()),
        }
    }

    /// `managed-password` encrypts with this key, so it must be exactly 32 bytes.
    fn validate_password_key(&self, o: &Origins) -> Result<(), ConfigError> {
        use base64::Engine;
        if self.session_mode != SessionMode::ManagedPassword {
            return Ok(());
        }
        let decoded = self
            .password_key
            .as_ref()
            .map(|k| base64::engine::general_purpose::STANDARD.decode(k.expose_secret().trim()));
        if !matches!(decoded, Some(Ok(ref b)) if b.len() == 32) {
            return Err(o.error(
                "pbx.password_key",
                "managed-password needs 32 random bytes in base64 (e.g. `openssl rand -base64 32`)",
            ));
        }
        Ok(())
    }
}

/// What 3CX's phones, apps and API clients need without a browser session; each of these is
/// authenticated by 3CX itself (see README, "Passthrough routes").
pub const DEFAULT_PASSTHROUGH: &[&str] = &[
    // Phone provisioning files, firmware and phonebooks; protected by the secret folder name.
    "/provisioning/",
    // Apps' and webclient's command channel (MyPhoneSession header) and click-to-call logins.
    "/MyPhone/",
    // Webclient and app WebSocket; authenticated by sessionId/pass in the query string.
    "/ws/",
    // OAuth token endpoint of 3CX (API clients, apps); 20.0.10 adds /connect/authorize.
    "/connect/",
    // Configuration API for API clients with their own bearer tokens.
    "/xapi/",
    // Call Control API (HTTP and WebSocket) for API clients.
    "/callcontrol/",
    // Desktop and mobile app sign-in with the extension's own credentials.
    "/webclient/api/Login/",
    // Public click-to-call and web-meeting pages for outside visitors.
    "/callus/",
    "/meet/",
];

fn default_session_mode() -> SessionMode {
    SessionMode::Impersonation
}
fn default_passthrough() -> Vec<String> {
    DEFAULT_PASSTHROUGH.iter().map(|s| s.to_string()).collect()
}
fn default_connect_timeout() -> HumanDuration {
    HumanDuration::secs(5)
}
fn default_response_timeout() -> HumanDuration {
    HumanDuration::secs(60)
}
