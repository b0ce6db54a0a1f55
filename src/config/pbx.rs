//! `[pbx]`: the 3CX behind the gateway, its API client, how sessions are opened there
//! ([`SessionMode`]), which paths pass through without a pbxgate session, and from where
//! 3CX's own password sign-in may still be used (`password_login_from`).

use std::path::PathBuf;

use ipnet::IpNet;

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
    /// Networks from which 3CX's own sign-in (its password login, any `/connect/` request)
    /// still passes without Entra ID: the break-glass path for when Entra is down. Default:
    /// none. See [`DOOR_PREFIXES`].
    #[serde(default)]
    pub password_login_from: Vec<IpNet>,
    /// `impersonation` only: pbxgate sets the web password of every extension it manages to
    /// a random value it never stores (once per extension), so that only Entra ID opens it.
    #[serde(default)]
    pub randomize_web_passwords: bool,
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
        self.validate_randomize(o)?;
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
            None => self.validate_passthrough_doors(o),
        }
    }

    /// No passthrough prefix may reach 3CX's password sign-in: the gate decides those paths
    /// itself, and an old config that still lists them must not keep the side door open.
    fn validate_passthrough_doors(&self, o: &Origins) -> Result<(), ConfigError> {
        let overlaps = |p: &str| {
            let p = p.to_ascii_lowercase();
            DOOR_PREFIXES
                .iter()
                .any(|d| d.starts_with(&p) || p.starts_with(d))
        };
        match self
            .passthrough
            .iter()
            .enumerate()
            .find(|(_, p)| overlaps(p))
        {
            Some((i, p)) => Err(o.error(
                &format!("pbx.passthrough[{i}]"),
                format!(
                    "{p:?} would let 3CX's password sign-in through without Entra ID; pbxgate \
                     decides /webclient/api/Login/ and /connect/ itself (remove the entry; \
                     for break-glass access list networks in pbx.password_login_from)"
                ),
            )),
            None => Ok(()),
        }
    }

    /// Random web passwords replace what `managed-password` sets and signs in with.
    fn validate_randomize(&self, o: &Origins) -> Result<(), ConfigError> {
        if self.randomize_web_passwords && self.session_mode != SessionMode::Impersonation {
            return Err(o.error(
                "pbx.randomize_web_passwords",
                "only applies to session_mode = \"impersonation\" (managed-password sets \
                 its own web passwords)",
            ));
        }
        Ok(())
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
/// authenticated by 3CX itself (see README, "Passthrough routes"). Not 3CX's password
/// sign-in: see [`DOOR_PREFIXES`].
pub const DEFAULT_PASSTHROUGH: &[&str] = &[
    // Phone provisioning files, firmware and phonebooks; protected by the secret folder name.
    "/provisioning/",
    // Apps' and webclient's command channel (MyPhoneSession header) and click-to-call logins.
    "/MyPhone/",
    // Webclient and app WebSocket; authenticated by sessionId/pass in the query string.
    "/ws/",
    // Configuration API for API clients with their own bearer tokens.
    "/xapi/",
    // Call Control API (HTTP and WebSocket) for API clients.
    "/callcontrol/",
    // Public click-to-call and web-meeting pages for outside visitors.
    "/callus/",
    "/meet/",
];

/// The ways into 3CX with an extension's own credentials, lower case: the password login
/// (`/webclient/api/Login/…`) and 3CX's OAuth endpoints (`/connect/token`, 20.0.10's
/// `/connect/authorize`). The gate decides these itself (client-credentials tokens pass,
/// the rest needs a pbxgate session or `password_login_from`); no passthrough entry may
/// cover them.
pub const DOOR_PREFIXES: &[&str] = &["/webclient/api/login/", "/connect/"];

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

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const MINIMAL: &str = r#"
[server]
public_url = "https://pbx.example.com"
[entra]
tenant_id = "11111111-2222-3333-4444-555555555555"
client_id = "app"
client_secret = "entra-s3cret"
[pbx]
url = "https://pbx.internal:5001"
client_id = "pbxgate"
client_secret = "xapi-s3cret"
"#;

    fn parse(extra: &str, env: &[(&str, &str)]) -> Result<Config, String> {
        let text = MINIMAL.replace("[pbx]\n", &format!("[pbx]\n{extra}\n"));
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::parse(&text, "test.toml", env).map_err(|e| e.to_string())
    }

    #[test]
    fn the_password_door_is_closed_by_default() {
        let c = parse("", &[]).unwrap();
        assert!(c.pbx.password_login_from.is_empty());
        assert!(!c.pbx.randomize_web_passwords);
        for p in &c.pbx.passthrough {
            let p = p.to_ascii_lowercase();
            assert!(
                !p.starts_with("/connect") && !p.starts_with("/webclient"),
                "{p}"
            );
        }
    }

    #[test]
    fn passthrough_may_not_cover_the_password_door() {
        for (entry, i) in [
            ("\"/webclient/api/Login/\"", 1),
            ("\"/connect/\"", 1),
            ("\"/Connect/token\"", 1),
            ("\"/webclient/\"", 1),
            ("\"/\"", 1),
        ] {
            let e = parse(&format!("passthrough = [\"/ws/\", {entry}]"), &[]).unwrap_err();
            assert!(
                e.contains(&format!("`pbx.passthrough[{i}]`")),
                "{entry}: {e}"
            );
            assert!(e.contains("pbx.password_login_from"), "{entry}: {e}");
        }
        assert!(parse("passthrough = [\"/callcontrol/\", \"/webclient/x/\"]", &[]).is_ok());
    }

    #[test]
    fn password_login_from_takes_networks_from_file_and_environment() {
        let c = parse("password_login_from = [\"10.0.0.0/8\", \"::1/128\"]", &[]).unwrap();
        assert_eq!(c.pbx.password_login_from.len(), 2);
        let c = parse(
            "",
            &[("PBXGATE__PBX__PASSWORD_LOGIN_FROM", "[\"192.168.0.0/16\"]")],
        )
        .unwrap();
        assert_eq!(c.pbx.password_login_from[0].to_string(), "192.168.0.0/16");
        let e = parse("password_login_from = [\"office\"]", &[]).unwrap_err();
        assert!(e.contains("`pbx.password_login_from"), "{e}");
    }

    #[test]
    fn randomize_web_passwords_needs_impersonation() {
        assert!(parse("randomize_web_passwords = true", &[]).is_ok());
        let key = "password_key = \"KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=\"";
        let e = parse(
            &format!("randomize_web_passwords = true\nsession_mode = \"managed-password\"\n{key}"),
            &[],
        )
        .unwrap_err();
        assert!(e.contains("`pbx.randomize_web_passwords`"), "{e}");
    }
}
