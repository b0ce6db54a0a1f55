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

/// What authorises 3CX's impersonation request in `impersonation` mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImpersonationCredential {
    /// The refresh cookie of an admin extension pbxgate signs in as: the request shape
    /// public research saw working (3CX 20.0.9).
    ServiceExtension,
    /// The API client's bearer token. UNVERIFIED against a real 3CX.
    ApiClient,
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
    /// A file holding `client_secret` (read at start, one trailing newline dropped).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
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
    /// The name on 3CX's certificate when `url` reaches 3CX by another (an internal address
    /// or name): the certificate is verified for it, it is sent as SNI and as `Host`, and
    /// connections still go to `url`'s host and port. A DNS name; only with an https `url`.
    #[serde(default)]
    pub tls_server_name: Option<String>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Time allowed for 3CX to start answering (response headers); bodies stream untimed.
    #[serde(default = "default_response_timeout")]
    pub response_timeout: HumanDuration,
    /// `managed-password` only: 32 random bytes, base64, encrypting the web passwords
    /// pbxgate sets on the extensions it manages.
    #[serde(default, serialize_with = "mask_opt")]
    pub password_key: Option<SecretString>,
    /// A file holding `password_key`.
    #[serde(default)]
    pub password_key_file: Option<PathBuf>,

    // --- impersonation: the service extension (see README, "The service extension") ---
    /// `impersonation` only: what authorises the impersonation request.
    #[serde(default = "default_impersonation_credential")]
    pub impersonation_credential: ImpersonationCredential,
    /// The extension (System Owner / admin role) pbxgate signs in as to impersonate users.
    #[serde(default)]
    pub service_extension: Option<String>,
    /// Its web password; or `service_password_file`, or `PBXGATE__PBX__SERVICE_PASSWORD`.
    #[serde(default, serialize_with = "mask_opt")]
    pub service_password: Option<SecretString>,
    #[serde(default)]
    pub service_password_file: Option<PathBuf>,
    /// Its authenticator-app secret (base32), when 3CX requires 2FA for it.
    #[serde(default, serialize_with = "mask_opt")]
    pub service_totp_secret: Option<SecretString>,
    #[serde(default)]
    pub service_totp_secret_file: Option<PathBuf>,
}

/// The service extension pbxgate signs in as, from a validated config.
#[derive(Debug, Clone)]
pub struct ServiceAccount {
    pub extension: String,
    pub password: SecretString,
    /// The decoded TOTP secret (RFC 6238 key bytes).
    pub totp_key: Option<Vec<u8>>,
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
        self.validate_tls_server_name(o)?;
        self.validate_passthrough(o)?;
        self.validate_randomize(o)?;
        self.validate_password_key(o)?;
        self.validate_service_account(o)
    }

    /// A DNS name (an IP address has no use here: connect to it with `url`), and TLS to
    /// verify it with.
    fn validate_tls_server_name(&self, o: &Origins) -> Result<(), ConfigError> {
        const KEY: &str = "pbx.tls_server_name";
        let Some(name) = &self.tls_server_name else {
            return Ok(());
        };
        if self.url.scheme() != "https" {
            return Err(o.error(KEY, "needs an https pbx.url"));
        }
        match rustls_pki_types::ServerName::try_from(name.as_str()) {
            Ok(rustls_pki_types::ServerName::DnsName(_)) if !name.ends_with('.') => Ok(()),
            Ok(rustls_pki_types::ServerName::IpAddress(_)) => Err(o.error(
                KEY,
                format!("{name} is an IP address; give the DNS name on 3CX's certificate"),
            )),
            _ => Err(o.error(KEY, format!("{name:?} is not a DNS name"))),
        }
    }

    /// The host (and port, when not the scheme's default) requests to 3CX carry as `Host`:
    /// `tls_server_name` when set, else `url`'s.
    pub fn host_header(&self) -> String {
        let host = match &self.tls_server_name {
            Some(name) => name.clone(),
            None => self.url.host_str().unwrap_or_default().to_string(),
        };
        match self.url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host,
        }
    }

    /// True when 3CX sessions are opened by impersonation through the service extension.
    pub fn uses_service_extension(&self) -> bool {
        self.session_mode == SessionMode::Impersonation
            && self.impersonation_credential == ImpersonationCredential::ServiceExtension
    }

    /// The service extension that authorises impersonation: required (validated) when
    /// sessions are opened by impersonation; in `managed-password` mode optional, for the
    /// contact sync's personal phonebooks, which fall back to the API client without it.
    pub fn service_account(&self) -> Option<ServiceAccount> {
        if self.impersonation_credential != ImpersonationCredential::ServiceExtension {
            return None;
        }
        let extension = self.service_extension.as_deref()?.trim();
        let password = self.service_password.clone()?;
        if extension.is_empty() || password.expose_secret().is_empty() {
            return None;
        }
        Some(ServiceAccount {
            extension: extension.to_string(),
            password,
            totp_key: self
                .service_totp_secret
                .as_ref()
                .and_then(|s| decode_totp_secret(s.expose_secret()).ok()),
        })
    }

    /// Impersonation through the service extension needs its number and password; a TOTP
    /// secret, when given, must be base32.
    fn validate_service_account(&self, o: &Origins) -> Result<(), ConfigError> {
        if !self.uses_service_extension() {
            return Ok(());
        }
        let why = "required for session_mode = \"impersonation\" with \
                   impersonation_credential = \"service-extension\" (see README, \
                   \"The service extension\")";
        let extension = self.service_extension.as_deref().unwrap_or("").trim();
        if extension.is_empty() {
            return Err(o.error("pbx.service_extension", format!("missing: {why}")));
        }
        if !extension.bytes().all(|b| b.is_ascii_digit()) {
            return Err(o.error(
                "pbx.service_extension",
                format!("{extension:?} is not an extension number"),
            ));
        }
        if self
            .service_password
            .as_ref()
            .is_none_or(|p| p.expose_secret().is_empty())
        {
            return Err(o.error(
                "pbx.service_password",
                format!(
                    "missing: set service_password, service_password_file or \
                     PBXGATE__PBX__SERVICE_PASSWORD; {why}"
                ),
            ));
        }
        if let Some(secret) = &self.service_totp_secret {
            decode_totp_secret(secret.expose_secret())
                .map_err(|m| o.error("pbx.service_totp_secret", m))?;
        }
        Ok(())
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
                "managed-password needs 32 random bytes in base64 (e.g. `openssl rand -base64 \
                 32`), in password_key or password_key_file",
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

/// An authenticator-app secret as 3CX shows it: base32 (RFC 4648), spaces and case ignored,
/// padding optional.
fn decode_totp_secret(secret: &str) -> Result<Vec<u8>, String> {
    let mut clean: String = secret
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '=')
        .collect::<String>()
        .to_ascii_uppercase();
    if clean.is_empty() {
        return Err("is empty".into());
    }
    while clean.len() % 8 != 0 {
        clean.push('=');
    }
    match data_encoding::BASE32.decode(clean.as_bytes()) {
        Ok(key) if key.len() >= 10 => Ok(key),
        Ok(_) => Err("is too short for a TOTP secret (at least 16 base32 characters)".into()),
        Err(_) => Err("is not base32 (the letters A-Z and digits 2-7)".into()),
    }
}

fn default_impersonation_credential() -> ImpersonationCredential {
    ImpersonationCredential::ServiceExtension
}

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
    use secrecy::ExposeSecret;

    use super::ImpersonationCredential;
    use crate::config::{Config, ConfigError};

    const BASE: &str = r#"
[server]
public_url = "https://pbx.example.com"
[entra]
tenant_id = "t"
client_id = "app"
client_secret = "s"
[pbx]
url = "https://pbx.internal:5001"
client_id = "pbxgate"
client_secret = "x"
"#;

    fn parse(extra: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::parse(&format!("{BASE}{extra}"), "t.toml", env)
    }

    fn err(extra: &str) -> String {
        parse(extra, &[]).expect_err("refused").to_string()
    }

    #[test]
    fn the_service_extension_is_required_by_default_and_named() {
        let e = err("");
        assert!(e.contains("key `pbx.service_extension`: missing"), "{e}");
        let e = err("service_extension = \"999\"\n");
        assert!(e.contains("key `pbx.service_password`: missing"), "{e}");
        assert!(e.contains("PBXGATE__PBX__SERVICE_PASSWORD"), "{e}");
        let e = err("service_extension = \"nine\"\nservice_password = \"p\"\n");
        assert!(e.contains("`pbx.service_extension`"), "{e}");
        // Neither is needed by the other credential or the other mode.
        assert!(parse("impersonation_credential = \"api-client\"\n", &[]).is_ok());
        let managed = format!(
            "session_mode = \"managed-password\"\npassword_key = \"{}\"\n",
            "A".repeat(43) + "="
        );
        assert!(parse(&managed, &[]).is_ok());
    }

    #[test]
    fn the_service_password_comes_from_the_file_the_env_or_the_key() {
        let c = parse(
            "service_extension = \"999\"\n",
            &[("PBXGATE__PBX__SERVICE_PASSWORD", "from-env")],
        )
        .unwrap();
        assert_eq!(
            c.pbx.impersonation_credential,
            ImpersonationCredential::ServiceExtension
        );
        let account = c.pbx.service_account().unwrap();
        assert_eq!(account.extension, "999");
        assert_eq!(account.password.expose_secret(), "from-env");
        assert!(account.totp_key.is_none());

        let dir = tempfile::tempdir().unwrap();
        let (pw, totp) = (dir.path().join("pw"), dir.path().join("totp"));
        std::fs::write(&pw, "from-file\n").unwrap();
        std::fs::write(&totp, "jbsw y3dp ehpk 3pxp\n").unwrap();
        let extra = format!(
            "service_extension = \"999\"\nservice_password_file = {:?}\n\
             service_totp_secret_file = {:?}\n",
            pw.display().to_string(),
            totp.display().to_string()
        );
        let account = parse(&extra, &[]).unwrap().pbx.service_account().unwrap();
        assert_eq!(account.password.expose_secret(), "from-file");
        assert_eq!(account.totp_key.unwrap(), b"Hello!\xde\xad\xbe\xef");

        let e = err("service_extension = \"999\"\nservice_password_file = \"/nonexistent\"\n");
        assert!(
            e.contains("`pbx.service_password_file`: cannot read"),
            "{e}"
        );
    }

    #[test]
    fn tls_server_name_is_a_dns_name_for_an_https_url() {
        let extra = "service_extension = \"999\"\nservice_password = \"p\"\n";
        let ok = parse(
            &format!("{extra}tls_server_name = \"pbx.example.com\"\n"),
            &[],
        )
        .unwrap();
        assert_eq!(ok.pbx.tls_server_name.as_deref(), Some("pbx.example.com"));
        assert_eq!(ok.pbx.host_header(), "pbx.example.com:5001");
        for (name, why) in [
            ("10.0.0.5", "is an IP address"),
            ("::1", "is an IP address"),
            ("pbx example", "is not a DNS name"),
            ("", "is not a DNS name"),
            ("pbx.example.com.", "is not a DNS name"),
        ] {
            let e = err(&format!("{extra}tls_server_name = {name:?}\n"));
            assert!(e.contains("key `pbx.tls_server_name`"), "{name}: {e}");
            assert!(e.contains(why), "{name}: {e}");
        }
        let text = format!("{BASE}{extra}tls_server_name = \"pbx.example.com\"\n")
            .replace("https://pbx.internal:5001", "http://127.0.0.1:5000");
        let e = Config::parse(&text, "t.toml", []).unwrap_err().to_string();
        assert!(
            e.contains("key `pbx.tls_server_name`: needs an https pbx.url"),
            "{e}"
        );
    }

    #[test]
    fn a_totp_secret_must_be_base32() {
        let extra = "service_extension = \"999\"\nservice_password = \"p\"\n";
        let e = err(&format!("{extra}service_totp_secret = \"not-base32!\"\n"));
        assert!(
            e.contains("key `pbx.service_totp_secret`: is not base32"),
            "{e}"
        );
        let e = err(&format!("{extra}service_totp_secret = \"MFRGG\"\n"));
        assert!(e.contains("`pbx.service_totp_secret`: is too short"), "{e}");
    }
}

/// The password door's keys (`passthrough`, `password_login_from`, `randomize_web_passwords`).
#[cfg(test)]
mod door_tests {
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
service_extension = "999"
service_password = "p"
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
