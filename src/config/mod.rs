//! The typed configuration: a TOML file plus a `PBXGATE__SECTION__KEY` environment overlay.
//!
//! Every error names the key and where its value came from (the file, or the environment
//! variable), because an admin fixing a broken deployment should not have to guess.
//! Secrets live in [`SecretString`] and are masked whenever the config is printed.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};
use url::Url;

/// Prefix of the environment overlay; `__` separates sections and keys.
pub const ENV_PREFIX: &str = "PBXGATE__";

/// Default config path of `serve` and `check-config`.
pub const DEFAULT_PATH: &str = "config/pbxgate.toml";

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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub entra: EntraConfig,
    pub pbx: PbxConfig,
    #[serde(default)]
    pub session: SessionConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub directory: DirectoryConfig,
    #[serde(default)]
    pub sync: SyncConfig,
}

/// The sync workers (DESIGN §4).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    #[serde(default)]
    pub contacts: ContactsSyncConfig,
    #[serde(default)]
    pub users: UsersSyncConfig,
    #[serde(default)]
    pub presence: PresenceSyncConfig,
}

/// Which contact folders of a mailbox the contact sync reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContactFolders {
    /// The default Contacts folder only (what 3CX's own Exchange sync reads).
    Default,
    /// The default folder and all its subfolders, at any depth.
    All,
}

/// How the company phonebook merges the same person found in several shared mailboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DedupeBy {
    /// One entry per contact per mailbox.
    None,
    /// One entry per first e-mail address (contacts without one are not merged).
    Email,
    /// One entry per first phone number.
    Phone,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ContactsSyncConfig {
    /// Run the contacts worker in `serve`.
    #[serde(default)]
    pub enabled: bool,
    /// Incremental (delta) runs this often.
    #[serde(default = "default_contacts_interval")]
    pub interval: HumanDuration,
    /// The daily time (HH:MM, in `time_zone`) of the full reconcile.
    #[serde(default = "default_full_sync_at")]
    pub full_sync_at: String,
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// Mailboxes (UPN or object id) whose contacts make up the company phonebook.
    #[serde(default)]
    pub shared_mailboxes: Vec<String>,
    /// Synced users' own contacts → their personal phonebooks. Off by default: the 3CX call
    /// it relies on is undocumented (README, "Contact sync").
    #[serde(default)]
    pub personal: bool,
    #[serde(default = "default_contact_folders")]
    pub folders: ContactFolders,
    #[serde(default = "default_dedupe_by")]
    pub dedupe_by: DedupeBy,
    /// At most this many pbxgate entries in the company phonebook; beyond it, contacts are
    /// reported and not created.
    #[serde(default = "default_max_company_contacts")]
    pub max_company_contacts: usize,
    /// At most this many pbxgate entries per personal phonebook (keep it at or below 3CX's
    /// `PersonalContactsMaxCount` minus room for the user's own entries).
    #[serde(default = "default_max_personal_contacts")]
    pub max_personal_contacts: usize,
    /// A mailbox found without Exchange (or blocked by an access policy) is left alone this
    /// long before it is tried again (full runs try it at once).
    #[serde(default = "default_mailbox_retry")]
    pub mailbox_retry: HumanDuration,
}

impl Default for ContactsSyncConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            interval: default_contacts_interval(),
            full_sync_at: default_full_sync_at(),
            time_zone: default_time_zone(),
            shared_mailboxes: Vec::new(),
            personal: false,
            folders: default_contact_folders(),
            dedupe_by: default_dedupe_by(),
            max_company_contacts: default_max_company_contacts(),
            max_personal_contacts: default_max_personal_contacts(),
            mailbox_retry: default_mailbox_retry(),
        }
    }
}

fn default_contacts_interval() -> HumanDuration {
    HumanDuration::secs(15 * 60)
}
fn default_contact_folders() -> ContactFolders {
    ContactFolders::All
}
fn default_dedupe_by() -> DedupeBy {
    DedupeBy::None
}
fn default_max_company_contacts() -> usize {
    10_000
}
fn default_max_personal_contacts() -> usize {
    500
}
fn default_mailbox_retry() -> HumanDuration {
    HumanDuration::secs(24 * 3600)
}

/// What the user sync does when a user is disabled or deleted in Entra ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnRemoved {
    /// Disable the extension (default): nothing is lost, the number stays reserved.
    Disable,
    /// Leave the extension as it is.
    Keep,
    /// Delete the extension, if pbxgate created it (a matched extension is disabled instead).
    Delete,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UsersSyncConfig {
    /// Run the users worker in `serve`.
    #[serde(default)]
    pub enabled: bool,
    /// Incremental (delta) runs this often.
    #[serde(default = "default_users_interval")]
    pub interval: HumanDuration,
    /// The daily time (HH:MM, in `time_zone`) of the full reconcile: every user, and
    /// extensions deleted in 3CX.
    #[serde(default = "default_full_sync_at")]
    pub full_sync_at: String,
    /// IANA time zone of `full_sync_at`, e.g. "Europe/Berlin".
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// First extension number to hand out; unset: 3CX's GetFirstAvailableExtensionNumber.
    #[serde(default)]
    pub extension_start: Option<String>,
    #[serde(default)]
    pub include_guests: bool,
    #[serde(default = "default_on_removed")]
    pub on_removed: OnRemoved,
    /// Set the extension's outbound caller ID from the user's first business phone.
    #[serde(default)]
    pub outbound_caller_id_from_business_phone: bool,
    /// Provision a user who signs in before the first sync, through the same code path.
    #[serde(default = "default_true")]
    pub provision_on_login: bool,
    /// Copy Entra profile photos to the extensions (`ContactImage`; format unverified, see
    /// the README). Checked when a user is created and at each full reconcile.
    #[serde(default)]
    pub photos: bool,
}

impl Default for UsersSyncConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            interval: default_users_interval(),
            full_sync_at: default_full_sync_at(),
            time_zone: default_time_zone(),
            extension_start: None,
            include_guests: false,
            on_removed: default_on_removed(),
            outbound_caller_id_from_business_phone: false,
            provision_on_login: true,
            photos: false,
        }
    }
}

/// Calendar free/busy → 3CX status profile (DESIGN §4, presence).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceSyncConfig {
    /// Run the presence worker in `serve`.
    #[serde(default)]
    pub enabled: bool,
    /// How often free/busy is read from Graph; status changes inside an interval happen on
    /// time anyway, because each read looks ahead.
    #[serde(default = "default_presence_interval")]
    pub interval: HumanDuration,
    /// The 3CX profile (internal name) for `busy` and `workingElsewhere`.
    #[serde(default = "default_busy_profile")]
    pub busy_profile: String,
    /// The 3CX profile (internal name) for `oof`.
    #[serde(default = "default_away_profile")]
    pub away_profile: String,
    /// Per free/busy status (`free`, `tentative`, `busy`, `oof`, `workingElsewhere`,
    /// `unknown`): the profile to set, or "" for none. Wins over the two keys above.
    #[serde(default)]
    pub map: BTreeMap<String, String>,
    /// Profiles pbxgate never overrides (3CX's "Custom 1"/"Custom 2": Lunch, Business Trip).
    #[serde(default = "default_protected_profiles")]
    pub protected_profiles: Vec<String>,
}

impl Default for PresenceSyncConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            interval: default_presence_interval(),
            busy_profile: default_busy_profile(),
            away_profile: default_away_profile(),
            map: BTreeMap::new(),
            protected_profiles: default_protected_profiles(),
        }
    }
}

/// The free/busy statuses Graph's `scheduleItem.status` takes.
pub const FREE_BUSY_STATUSES: [&str; 6] = [
    "free",
    "tentative",
    "busy",
    "oof",
    "workingElsewhere",
    "unknown",
];

impl PresenceSyncConfig {
    /// Status (lower case) → profile, defaults overlaid with `map`; unmapped statuses absent.
    pub fn mapping(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::from([
            ("busy".to_string(), self.busy_profile.clone()),
            ("workingelsewhere".to_string(), self.busy_profile.clone()),
            ("oof".to_string(), self.away_profile.clone()),
        ]);
        for (status, profile) in &self.map {
            m.insert(status.to_lowercase(), profile.clone());
        }
        m.retain(|_, p| !p.is_empty());
        m
    }
}

fn default_presence_interval() -> HumanDuration {
    HumanDuration::secs(60)
}
fn default_busy_profile() -> String {
    "Out of office".into()
}
fn default_away_profile() -> String {
    "Away".into()
}
fn default_protected_profiles() -> Vec<String> {
    vec!["Custom 1".into(), "Custom 2".into()]
}

fn default_users_interval() -> HumanDuration {
    HumanDuration::secs(15 * 60)
}
fn default_full_sync_at() -> String {
    "02:00".into()
}
fn default_time_zone() -> String {
    "UTC".into()
}
fn default_on_removed() -> OnRemoved {
    OnRemoved::Disable
}
fn default_true() -> bool {
    true
}

/// Who is who beyond what the user sync finds.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    /// UPN suffixes that name the same users: alias → suffix used in 3CX, e.g. an on-premises
    /// `"contoso.local" = "contoso.com"`. Compared case-insensitively.
    #[serde(default)]
    pub upn_suffix_aliases: BTreeMap<String, String>,
    /// Fixed UPN → extension assignments; they win over everything else.
    #[serde(default)]
    pub overrides: Vec<DirectoryOverride>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryOverride {
    pub upn: String,
    pub extension: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The URL users type; the Entra redirect URI is `{public_url}/auth/callback`.
    pub public_url: Url,
    /// Peers whose `X-Forwarded-*` headers are believed (a load balancer in front).
    #[serde(default)]
    pub trusted_proxies: Vec<IpNet>,
    /// PEM certificate chain; with `tls_key`, pbxgate terminates TLS itself.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Who may read `/metrics`.
    #[serde(default = "default_metrics_allow")]
    pub metrics_allow: Vec<IpNet>,
    /// Sign-in attempts (`/auth/login`, `/auth/callback`) allowed per client address per minute.
    #[serde(default = "default_login_rate_limit")]
    pub login_rate_limit: u32,
    /// A client connection that moves no byte for this long is closed.
    #[serde(default = "default_connection_idle_timeout")]
    pub idle_timeout: HumanDuration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EntraConfig {
    pub tenant_id: String,
    pub client_id: String,
    #[serde(default, serialize_with = "mask_opt")]
    pub client_secret: Option<SecretString>,
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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SessionConfig {
    #[serde(default = "default_cookie_name")]
    pub cookie_name: String,
    /// Absolute lifetime: a session ends this long after sign-in, however active.
    #[serde(default = "default_lifetime")]
    pub lifetime: HumanDuration,
    /// A session unused for this long ends.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: HumanDuration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    #[serde(default = "default_store_url", serialize_with = "mask_url_password")]
    pub url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default = "default_log_format")]
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `pbxgate=debug,info`.
    #[serde(default = "default_log_level")]
    pub level: String,
}

/// A duration written as a human string (`"90s"`, `"15m"`, `"8h"`); named apart from
/// `std::time::Duration` so that the two never shadow each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub std::time::Duration);

impl HumanDuration {
    pub const fn secs(s: u64) -> Self {
        Self(std::time::Duration::from_secs(s))
    }
    pub fn get(self) -> std::time::Duration {
        self.0
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| serde::de::Error::custom(format!("not a duration like \"15m\": {e}")))
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

const MASK: &str = "********";

fn mask<S: Serializer>(_: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(MASK)
}

fn mask_opt<S: Serializer>(v: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_str(MASK),
        None => s.serialize_none(),
    }
}

fn mask_url_password<S: Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
    match Url::parse(v) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some(MASK));
            s.serialize_str(u.as_str())
        }
        _ => s.serialize_str(v),
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_metrics_allow() -> Vec<IpNet> {
    ["127.0.0.0/8", "::1/128"]
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect()
}
fn default_login_rate_limit() -> u32 {
    30
}
fn default_connection_idle_timeout() -> HumanDuration {
    HumanDuration::secs(60)
}
fn default_authority() -> Url {
    Url::parse("https://login.microsoftonline.com").expect("static URL")
}
fn default_graph_url() -> Url {
    Url::parse("https://graph.microsoft.com").expect("static URL")
}
fn default_session_mode() -> SessionMode {
    SessionMode::Impersonation
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

fn default_passthrough() -> Vec<String> {
    DEFAULT_PASSTHROUGH.iter().map(|s| s.to_string()).collect()
}
fn default_connect_timeout() -> HumanDuration {
    HumanDuration::secs(5)
}
fn default_response_timeout() -> HumanDuration {
    HumanDuration::secs(60)
}
fn default_cookie_name() -> String {
    "pbxgate".into()
}
fn default_lifetime() -> HumanDuration {
    HumanDuration::secs(12 * 3600)
}
fn default_idle_timeout() -> HumanDuration {
    HumanDuration::secs(3600)
}
fn default_store_url() -> String {
    "sqlite://data/pbxgate.db".into()
}
fn default_log_format() -> LogFormat {
    LogFormat::Text
}
fn default_log_level() -> String {
    "info".into()
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            cookie_name: default_cookie_name(),
            lifetime: default_lifetime(),
            idle_timeout: default_idle_timeout(),
        }
    }
}
impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: default_store_url(),
        }
    }
}
impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: default_log_format(),
            level: default_log_level(),
        }
    }
}

/// Where each value came from, so that errors point at the right place.
struct Origins {
    file: String,
    /// Dotted key → environment variable that set it.
    env: BTreeMap<String, String>,
}

impl Origins {
    fn of(&self, key: &str) -> String {
        self.env
            .iter()
            .find(|(k, _)| key == k.as_str() || key.starts_with(&format!("{k}.")))
            .map(|(_, var)| format!("environment variable {var}"))
            .unwrap_or_else(|| self.file.clone())
    }
    fn error(&self, key: &str, message: impl fmt::Display) -> ConfigError {
        ConfigError::Key {
            origin: self.of(key),
            key: key.to_string(),
            message: message.to_string(),
        }
    }
}

impl Config {
    /// Reads `path`, applies the environment overlay from the process environment, validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string(), std::env::vars())
    }

    /// Parses config text; `file` names it in errors, `env` is the environment to overlay.
    pub fn parse(
        text: &str,
        file: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            origin: file.to_string(),
            message: e.to_string(),
        })?;
        let mut origins = Origins {
            file: file.to_string(),
            env: BTreeMap::new(),
        };
        overlay_env(&mut table, env, &mut origins)?;
        let mut config: Config = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                let message = e.inner().to_string();
                // toml appends "in `section`" on a second line; the key already says it.
                let message = message.lines().next().unwrap_or_default().to_string();
                let key = full_key(&e.path().to_string(), &message);
                origins.error(&key, message)
            })?;
        config.read_secret_files(&origins)?;
        config.validate(&origins)?;
        Ok(config)
    }

    fn read_secret_files(&mut self, origins: &Origins) -> Result<(), ConfigError> {
        if let Some(path) = &self.entra.client_secret_file {
            let secret = std::fs::read_to_string(path).map_err(|e| {
                origins.error(
                    "entra.client_secret_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            self.entra.client_secret = Some(SecretString::from(secret.trim().to_string()));
        }
        Ok(())
    }

    fn validate(&self, o: &Origins) -> Result<(), ConfigError> {
        let s = &self.server;
        check_http_url(&s.public_url).map_err(|m| o.error("server.public_url", m))?;
        if s.public_url.scheme() == "http" && !is_loopback_host(&s.public_url) {
            return Err(o.error(
                "server.public_url",
                "must be https (http is allowed only for localhost, where browsers still accept Secure cookies)",
            ));
        }
        if s.idle_timeout.0 < std::time::Duration::from_secs(1) {
            return Err(o.error("server.idle_timeout", "must be at least 1s"));
        }
        match (&s.tls_cert, &s.tls_key) {
            (Some(_), None) => return Err(o.error("server.tls_key", "is required with tls_cert")),
            (None, Some(_)) => return Err(o.error("server.tls_cert", "is required with tls_key")),
            _ => {}
        }
        self.validate_entra(o)?;
        check_http_url(&self.pbx.url).map_err(|m| o.error("pbx.url", m))?;
        if self.pbx.url.path() != "/" || self.pbx.url.query().is_some() {
            return Err(o.error(
                "pbx.url",
                "must be an origin like https://pbx.example.com:5001 (no path)",
            ));
        }
        require(&self.pbx.client_id, "pbx.client_id", o)?;
        require(
            self.pbx.client_secret.expose_secret(),
            "pbx.client_secret",
            o,
        )?;
        for (i, p) in self.pbx.passthrough.iter().enumerate() {
            if !p.starts_with('/') || p.contains("..") {
                return Err(o.error(
                    &format!("pbx.passthrough[{i}]"),
                    format!("{p:?} must be an absolute path prefix such as \"/provisioning/\""),
                ));
            }
        }
        if self.pbx.session_mode == SessionMode::ManagedPassword {
            let key = self
                .pbx
                .password_key
                .as_ref()
                .map(|k| k.expose_secret().to_string());
            let decoded = key.as_deref().map(|k| {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.decode(k.trim())
            });
            if !matches!(decoded, Some(Ok(ref b)) if b.len() == 32) {
                return Err(o.error(
                    "pbx.password_key",
                    "managed-password needs 32 random bytes in base64 (e.g. `openssl rand -base64 32`)",
                ));
            }
        }
        for (i, ov) in self.directory.overrides.iter().enumerate() {
            if !ov.upn.contains('@') || ov.extension.trim().is_empty() {
                return Err(o.error(
                    &format!("directory.overrides[{i}]"),
                    "needs upn = \"user@domain\" and extension = \"101\"",
                ));
            }
        }
        self.validate_contacts(o)?;
        if let Some(start) = &self.sync.users.extension_start
            && (start.is_empty() || !start.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(o.error("sync.users.extension_start", "must be digits, e.g. \"200\""));
        }
        if let Err(e) =
            crate::sync::Daily::new(&self.sync.users.full_sync_at, &self.sync.users.time_zone)
        {
            let key = if e.contains("time zone") {
                "sync.users.time_zone"
            } else {
                "sync.users.full_sync_at"
            };
            return Err(o.error(key, e));
        }
        self.validate_presence(o)?;
        if self.sync.users.interval.0 < std::time::Duration::from_secs(60) {
            return Err(o.error("sync.users.interval", "must be at least 1m"));
        }
        if self.server.login_rate_limit == 0 {
            return Err(o.error("server.login_rate_limit", "must be at least 1"));
        }
        self.validate_session(o)?;
        if !(self.store.url.starts_with("sqlite:") || self.store.url.starts_with("postgres")) {
            return Err(o.error("store.url", "must start with sqlite:// or postgres://"));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| o.error("log.level", e))?;
        Ok(())
    }

    fn validate_contacts(&self, o: &Origins) -> Result<(), ConfigError> {
        let c = &self.sync.contacts;
        if let Err(e) = crate::sync::Daily::new(&c.full_sync_at, &c.time_zone) {
            let key = if e.contains("time zone") {
                "sync.contacts.time_zone"
            } else {
                "sync.contacts.full_sync_at"
            };
            return Err(o.error(key, e));
        }
        if c.interval.0 < std::time::Duration::from_secs(60) {
            return Err(o.error("sync.contacts.interval", "must be at least 1m"));
        }
        if c.shared_mailboxes.iter().any(|m| m.trim().is_empty()) {
            return Err(o.error(
                "sync.contacts.shared_mailboxes",
                "entries must be a UPN or an object id",
            ));
        }
        Ok(())
    }

    fn validate_presence(&self, o: &Origins) -> Result<(), ConfigError> {
        let p = &self.sync.presence;
        if p.interval.0 < std::time::Duration::from_secs(15) {
            return Err(o.error("sync.presence.interval", "must be at least 15s"));
        }
        if let Some(bad) = p
            .map
            .keys()
            .find(|k| !FREE_BUSY_STATUSES.iter().any(|s| s.eq_ignore_ascii_case(k)))
        {
            return Err(o.error(
                &format!("sync.presence.map.{bad}"),
                format!(
                    "not a free/busy status; one of {}",
                    FREE_BUSY_STATUSES.join(", ")
                ),
            ));
        }
        for (key, v) in [
            ("sync.presence.busy_profile", &p.busy_profile),
            ("sync.presence.away_profile", &p.away_profile),
        ] {
            if v.trim().is_empty() {
                return Err(o.error(key, "must name a 3CX profile, e.g. \"Away\""));
            }
        }
        Ok(())
    }

    fn validate_entra(&self, o: &Origins) -> Result<(), ConfigError> {
        let e = &self.entra;
        require(&e.tenant_id, "entra.tenant_id", o)?;
        require(&e.client_id, "entra.client_id", o)?;
        check_http_url(&e.authority).map_err(|m| o.error("entra.authority", m))?;
        if e.authority.scheme() == "http" && !is_loopback_host(&e.authority) {
            return Err(o.error(
                "entra.authority",
                "must be https (http only for a local test provider)",
            ));
        }
        check_http_url(&e.graph_url).map_err(|m| o.error("entra.graph_url", m))?;
        let secret = e
            .client_secret
            .as_ref()
            .is_some_and(|s| !s.expose_secret().is_empty());
        match (&e.client_certificate, &e.client_private_key) {
            (Some(_), None) => Err(o.error(
                "entra.client_private_key",
                "is required with client_certificate",
            )),
            (None, Some(_)) => Err(o.error(
                "entra.client_certificate",
                "is required with client_private_key",
            )),
            (None, None) if !secret => Err(o.error(
                "entra.client_secret",
                "missing: set client_secret, client_secret_file, or client_certificate and client_private_key",
            )),
            _ => Ok(()),
        }
    }

    fn validate_session(&self, o: &Origins) -> Result<(), ConfigError> {
        let s = &self.session;
        let valid_name = !s.cookie_name.is_empty()
            && s.cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !valid_name || s.cookie_name.starts_with("__") {
            return Err(o.error(
                "session.cookie_name",
                "use letters, digits, '-', '_' or '.' (the __Host- prefix is added automatically)",
            ));
        }
        if s.idle_timeout.0.is_zero() || s.lifetime.0.is_zero() {
            return Err(o.error("session.lifetime", "durations must be above zero"));
        }
        if s.idle_timeout > s.lifetime {
            return Err(o.error(
                "session.idle_timeout",
                "must not be longer than session.lifetime",
            ));
        }
        Ok(())
    }

    /// True when browsers reach pbxgate over https (directly or through a TLS load balancer).
    pub fn secure_origin(&self) -> bool {
        self.server.tls_cert.is_some() || self.server.public_url.scheme() == "https"
    }

    /// The effective config as TOML with every secret masked.
    pub fn to_masked_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}"))
    }
}

fn require(value: &str, key: &str, o: &Origins) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        Err(o.error(key, "missing or empty"))
    } else {
        Ok(())
    }
}

fn check_http_url(u: &Url) -> Result<(), String> {
    match u.scheme() {
        "http" | "https" if u.host().is_some() => Ok(()),
        _ => Err(format!("{u} is not an http(s) URL")),
    }
}

fn is_loopback_host(u: &Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// serde names a missing or unknown field in its message, not in the path; put it back.
fn full_key(path: &str, message: &str) -> String {
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

/// Applies `PBXGATE__SECTION__KEY=value` variables. Values are strings, except `true`/`false`
/// (booleans) and `[...]` (a TOML array, e.g. `["10.0.0.0/8"]`).
fn overlay_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
    origins: &mut Origins,
) -> Result<(), ConfigError> {
    for (var, raw) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let parts: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
        let key = parts.join(".");
        if parts.iter().any(|p| p.is_empty()) {
            return Err(ConfigError::Key {
                origin: format!("environment variable {var}"),
                key,
                message: "malformed name; use PBXGATE__SECTION__KEY".into(),
            });
        }
        let value = env_value(&raw).map_err(|message| ConfigError::Key {
            origin: format!("environment variable {var}"),
            key: key.clone(),
            message,
        })?;
        insert_path(table, &parts, value).map_err(|message| ConfigError::Key {
            origin: format!("environment variable {var}"),
            key: key.clone(),
            message,
        })?;
        origins.env.insert(key, var);
    }
    Ok(())
}

fn env_value(raw: &str) -> Result<toml::Value, String> {
    match raw.trim() {
        "true" => Ok(toml::Value::Boolean(true)),
        "false" => Ok(toml::Value::Boolean(false)),
        t if t.starts_with('[') => toml::from_str::<toml::Table>(&format!("v = {t}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .ok_or_else(|| format!("{t:?} is not a TOML array")),
        _ => Ok(toml::Value::String(raw.to_string())),
    }
}

fn insert_path(
    table: &mut toml::Table,
    parts: &[String],
    value: toml::Value,
) -> Result<(), String> {
    let (last, sections) = parts.split_last().ok_or("empty key")?;
    let mut cur = table;
    for p in sections {
        let entry = cur
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{p}` is not a section"))?;
    }
    cur.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::parse(
            text,
            "test.toml",
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    fn err(text: &str, env: &[(&str, &str)]) -> String {
        parse(text, env)
            .expect_err("config must be rejected")
            .to_string()
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL, &[]).unwrap();
        assert_eq!(c.server.listen, default_listen());
        assert_eq!(c.session.idle_timeout, HumanDuration::secs(3600));
        assert_eq!(c.store.url, "sqlite://data/pbxgate.db");
        assert_eq!(c.pbx.session_mode, SessionMode::Impersonation);
        assert!(c.pbx.passthrough.iter().any(|p| p == "/provisioning/"));
        assert!(c.secure_origin());
    }

    #[test]
    fn unknown_key_is_named_with_its_section_and_file() {
        let text = MINIMAL.replace("[server]", "[server]\nlisten_port = 1");
        let e = err(&text, &[]);
        assert!(e.starts_with("test.toml: key `server.listen_port`"), "{e}");
    }

    #[test]
    fn bad_duration_is_named() {
        let text = format!("{MINIMAL}\n[session]\nidle_timeout = \"soon\"\n");
        let e = err(&text, &[]);
        assert!(e.contains("key `session.idle_timeout`"), "{e}");
        assert!(e.contains("not a duration"), "{e}");
    }

    #[test]
    fn missing_secrets_are_named() {
        let text = MINIMAL.replace("client_secret = \"entra-s3cret\"\n", "");
        assert!(err(&text, &[]).contains("key `entra.client_secret`: missing"));
        let text = MINIMAL.replace("client_secret = \"xapi-s3cret\"\n", "");
        assert!(err(&text, &[]).contains("key `pbx.client_secret`"));
    }

    #[test]
    fn env_overlay_overrides_and_is_named_in_errors() {
        let c = parse(
            MINIMAL,
            &[
                ("PBXGATE__SERVER__LISTEN", "0.0.0.0:9443"),
                ("PBXGATE__SERVER__TRUSTED_PROXIES", "[\"10.0.0.0/8\"]"),
                ("PBXGATE__SESSION__IDLE_TIMEOUT", "20m"),
                ("OTHER", "x"),
            ],
        )
        .unwrap();
        assert_eq!(c.server.listen.port(), 9443);
        assert_eq!(c.server.trusted_proxies.len(), 1);
        assert_eq!(c.session.idle_timeout, HumanDuration::secs(1200));

        let e = err(MINIMAL, &[("PBXGATE__SESSION__LIFETIME", "forever")]);
        assert!(
            e.starts_with(
                "environment variable PBXGATE__SESSION__LIFETIME: key `session.lifetime`"
            ),
            "{e}"
        );
    }

    #[test]
    fn masked_output_hides_every_secret() {
        let mut text = MINIMAL.to_string();
        text.push_str("[store]\nurl = \"postgres://pbx:db-s3cret@db/pbxgate\"\n");
        let out = parse(&text, &[]).unwrap().to_masked_toml();
        for s in ["entra-s3cret", "xapi-s3cret", "db-s3cret"] {
            assert!(!out.contains(s), "{s} leaked:\n{out}");
        }
        assert!(out.contains(MASK));
        // Debug output (e.g. in a panic) must not leak either.
        let dbg = format!("{:?}", parse(MINIMAL, &[]).unwrap());
        assert!(!dbg.contains("entra-s3cret") && !dbg.contains("xapi-s3cret"));
    }

    #[test]
    fn masked_output_parses_back() {
        let out = parse(MINIMAL, &[]).unwrap().to_masked_toml();
        let again = parse(&out, &[]).unwrap();
        assert_eq!(again.pbx.url.as_str(), "https://pbx.internal:5001/");
    }

    #[test]
    fn rules_between_keys() {
        let text = MINIMAL.replace("https://pbx.example.com", "http://pbx.example.com");
        assert!(err(&text, &[]).contains("`server.public_url`: must be https"));
        let text = MINIMAL.replace("https://pbx.example.com", "http://localhost:8080");
        assert!(parse(&text, &[]).is_ok());
        let text = MINIMAL.replace("[server]", "[server]\ntls_cert = \"c.pem\"");
        assert!(err(&text, &[]).contains("`server.tls_key`"));
        let text = MINIMAL.replace(":5001\"", ":5001/webclient\"");
        assert!(err(&text, &[]).contains("`pbx.url`"));
        let text = format!("{MINIMAL}\n[session]\nidle_timeout = \"13h\"\n");
        assert!(err(&text, &[]).contains("`session.idle_timeout`"));
        let text = MINIMAL.replace("[pbx]", "[pbx]\npassthrough = [\"provisioning\"]");
        assert!(err(&text, &[]).contains("`pbx.passthrough[0]`"));
    }

    #[test]
    fn example_config_is_valid_and_documents_every_key() {
        let example = include_str!("../config/pbxgate.example.toml");
        let c = parse(example, &[]).expect("the example config parses");
        let mut all = c.clone();
        all.server.tls_cert = Some("c.pem".into());
        all.server.tls_key = Some("c.key".into());
        all.entra.client_secret_file = Some("s".into());
        all.entra.client_certificate = Some("c.pem".into());
        all.entra.client_private_key = Some("c.key".into());
        all.pbx.ca_file = Some("ca.pem".into());
        let rendered: toml::Table = toml::from_str(&all.to_masked_toml()).unwrap();
        fn walk(example: &str, section: &str, table: &toml::Table) {
            for (key, value) in table {
                let path = if section.is_empty() {
                    key.clone()
                } else {
                    format!("{section}.{key}")
                };
                if let toml::Value::Table(inner) = value {
                    if inner.values().any(|v| !v.is_table()) {
                        assert!(
                            example.contains(&format!("[{path}]")),
                            "[{path}] undocumented"
                        );
                    }
                    walk(example, &path, inner);
                    continue;
                }
                let documented = example.lines().any(|l| {
                    let l = l.trim_start_matches(['#', ' ']);
                    l.starts_with(&format!("{key} =")) || l == format!("[[{path}]]")
                });
                assert!(documented, "{path} is not in the example config");
            }
        }
        walk(example, "", &rendered);
    }

    #[test]
    fn syntax_errors_name_the_file() {
        let e = err("[server\n", &[]);
        assert!(e.starts_with("test.toml: invalid TOML"), "{e}");
    }

    #[test]
    fn secret_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secret");
        std::fs::write(&f, "from-file\n").unwrap();
        let text = MINIMAL.replace(
            "client_secret = \"entra-s3cret\"",
            &format!("client_secret_file = {:?}", f.display().to_string()),
        );
        let c = parse(&text, &[]).unwrap();
        assert_eq!(c.entra.client_secret.unwrap().expose_secret(), "from-file");
        let text = MINIMAL.replace(
            "client_secret = \"entra-s3cret\"",
            "client_secret_file = \"/nonexistent/secret\"",
        );
        assert!(err(&text, &[]).contains("`entra.client_secret_file`: cannot read"));
    }
}
