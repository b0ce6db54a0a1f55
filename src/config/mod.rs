//! The typed configuration: a TOML file plus a `PBXGATE__SECTION__KEY` environment overlay.
//!
//! Every error names the key and where its value came from (the file, or the environment
//! variable), because an admin fixing a broken deployment should not have to guess.
//! Secrets live in [`SecretString`](secrecy::SecretString) and are masked whenever the
//! config is printed.
//!
//! This file loads, overlays and validates; each section lives in its own file with the
//! rules that concern it alone. Config is the bottom layer (beside `clock`): it imports no
//! other module of the crate, so every module may read it.

mod check;
mod directory;
mod duration;
mod entra;
mod env;
mod error;
mod mask;
mod modes;
mod pbx;
mod presence;
mod runtime;
mod schedule;
mod secrets;
mod server;
mod session;
mod sync;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use directory::{DirectoryConfig, DirectoryOverride};
pub use duration::HumanDuration;
pub use entra::{EntraConfig, ExpiryDate};
pub use error::ConfigError;
pub use modes::{LooseFile, loose_mode};
pub use pbx::{
    DEFAULT_PASSTHROUGH, DOOR_PREFIXES, ImpersonationCredential, PbxConfig, ServiceAccount,
    SessionMode,
};
pub use presence::{FREE_BUSY_STATUSES, PresenceSyncConfig};
pub use runtime::{LogConfig, LogFormat, StoreConfig};
pub use schedule::{Daily, Schedule, ScheduleError, TimeOfDay, Zone};
pub use server::{Listener, ListenerConfig, Listeners, ServerConfig};
pub use session::{RECHECK_PERMISSION, SessionConfig};
pub use sync::{
    ContactFolders, ContactsSyncConfig, DedupeBy, OnRemoved, SyncConfig, UsersSyncConfig,
};

use error::{Origins, full_key};

/// Prefix of the environment overlay; `__` separates sections and keys.
pub const ENV_PREFIX: &str = "PBXGATE__";

/// Default config path of `serve` and `check-config`.
pub const DEFAULT_PATH: &str = "config/pbxgate.toml";

/// Environment variable naming the config file when `--config` is not given (containers,
/// service managers).
pub const CONFIG_ENV: &str = "PBXGATE_CONFIG";

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
        let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            origin: file.to_string(),
            message: e.to_string(),
        })?;
        let mut origins = Origins::new(file);
        let mut root = env::overlay_env(table, env, &mut origins)?;
        secrets::read_secret_files(&mut root, &mut origins)?;
        let config: Config = serde_path_to_error::deserialize(root).map_err(|e| {
            let message = e.inner().to_string();
            // toml appends "in `section`" on a second line; the key already says it.
            let message = message.lines().next().unwrap_or_default().to_string();
            let key = full_key(&e.path().to_string(), &message);
            let message = match secrets::file_twin(&key) {
                Some(twin) if message.starts_with("missing field") => {
                    format!("{message} (or `{twin}`)")
                }
                _ => message,
            };
            origins.error(&key, message)
        })?;
        config.validate(&origins)?;
        Ok(config)
    }

    /// Each section checks its own keys; no rule spans two sections today.
    fn validate(&self, o: &Origins) -> Result<(), ConfigError> {
        self.server.validate(o)?;
        self.entra.validate(o)?;
        self.pbx.validate(o)?;
        self.directory.validate(o)?;
        self.sync.validate(o)?;
        self.session.validate(o)?;
        self.store.validate(o)?;
        self.log.validate(o)
    }

    /// True when browsers reach pbxgate over https (directly or through a TLS load balancer).
    pub fn secure_origin(&self) -> bool {
        self.server.tls_cert.is_some() || self.server.public_url.scheme() == "https"
    }

    /// The effective config as TOML with every secret masked.
    /// Secrets read from a `*_file` key are left out: that key says where they are.
    pub fn to_masked_toml(&self) -> String {
        let render = || -> Result<String, toml::ser::Error> {
            let mut table = toml::Table::try_from(self)?;
            secrets::hide_read_secrets(&mut table);
            toml::to_string_pretty(&table)
        };
        render().unwrap_or_else(|e| format!("# cannot render config: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::mask::MASK;
    use super::server::default_listen;
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
service_extension = "999"
service_password = "service-s3cret"
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
        assert_eq!(
            err(&text, &[]),
            "test.toml: key `pbx.client_secret`: missing field `client_secret` \
             (or `pbx.client_secret_file`)"
        );
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
        assert_eq!(c.server.listen[0].addr.port(), 9443);
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

    /// Every kind of key, set from the environment, gets the type the file would give it.
    #[test]
    fn env_values_are_typed_like_the_file() {
        type Get = fn(&Config) -> String;
        let cases: &[(&str, &str, Get, &str)] = &[
            // Integers, optional integers, usize.
            (
                "SERVER__LOGIN_RATE_LIMIT",
                "60",
                |c| c.server.login_rate_limit.to_string(),
                "60",
            ),
            (
                "SERVER__MAX_CONNECTIONS",
                "1000",
                |c| format!("{:?}", c.server.max_connections),
                "Some(1000)",
            ),
            (
                "SYNC__CONTACTS__MAX_COMPANY_CONTACTS",
                "2000",
                |c| c.sync.contacts.max_company_contacts.to_string(),
                "2000",
            ),
            // Booleans.
            (
                "PBX__RANDOMIZE_WEB_PASSWORDS",
                "true",
                |c| c.pbx.randomize_web_passwords.to_string(),
                "true",
            ),
            (
                "SYNC__USERS__PROVISION_ON_LOGIN",
                "false",
                |c| c.sync.users.provision_on_login.to_string(),
                "false",
            ),
            // Durations, times, enums, URLs: strings in the file.
            (
                "PBX__CONNECT_TIMEOUT",
                "15m",
                |c| c.pbx.connect_timeout.to_string(),
                "15m",
            ),
            (
                "SYNC__USERS__FULL_SYNC_AT",
                "07:30",
                |c| format!("{:?}", c.sync.users.full_sync_at),
                "TimeOfDay { hour: 7, minute: 30 }",
            ),
            (
                "LOG__FORMAT",
                "json",
                |c| format!("{:?}", c.log.format),
                "Json",
            ),
            (
                "PBX__URL",
                "https://10.0.0.5:5001",
                |c| c.pbx.url.to_string(),
                "https://10.0.0.5:5001/",
            ),
            // Strings that look like numbers or booleans stay strings.
            (
                "PBX__SERVICE_EXTENSION",
                "0999",
                |c| format!("{:?}", c.pbx.service_extension),
                "Some(\"0999\")",
            ),
            (
                "PBX__SERVICE_PASSWORD",
                "0123",
                |c| {
                    c.pbx
                        .service_password
                        .as_ref()
                        .unwrap()
                        .expose_secret()
                        .to_string()
                },
                "0123",
            ),
            (
                "PBX__CLIENT_ID",
                "12345",
                |c| c.pbx.client_id.clone(),
                "12345",
            ),
            (
                "SYNC__USERS__EXTENSION_START",
                "200",
                |c| format!("{:?}", c.sync.users.extension_start),
                "Some(\"200\")",
            ),
            (
                "SYNC__PRESENCE__AWAY_PROFILE",
                "true",
                |c| c.sync.presence.away_profile.clone(),
                "true",
            ),
            // Lists (TOML arrays), tables (inline tables), lists of tables.
            (
                "SERVER__TRUSTED_PROXIES",
                "[\"10.0.0.0/8\", \"192.168.0.0/16\"]",
                |c| format!("{:?}", c.server.trusted_proxies),
                "[10.0.0.0/8, 192.168.0.0/16]",
            ),
            (
                "ENTRA__ALLOWED_GROUPS",
                "[\"g1\"]",
                |c| format!("{:?}", c.entra.allowed_groups),
                "[\"g1\"]",
            ),
            (
                "SYNC__PRESENCE__MAP",
                "{ busy = \"DND\" }",
                |c| format!("{:?}", c.sync.presence.map),
                "{\"busy\": \"DND\"}",
            ),
            (
                "SYNC__PRESENCE__MAP__OOF",
                "Away",
                |c| format!("{:?}", c.sync.presence.map),
                "{\"oof\": \"Away\"}",
            ),
            (
                "DIRECTORY__OVERRIDES",
                "[{ upn = \"a@example.com\", extension = \"101\" }]",
                |c| {
                    format!(
                        "{:?}",
                        c.directory
                            .overrides
                            .iter()
                            .map(|o| (&o.upn, &o.extension))
                            .collect::<Vec<_>>()
                    )
                },
                "[(\"a@example.com\", \"101\")]",
            ),
        ];
        for &(var, value, get, want) in cases {
            let var = format!("{ENV_PREFIX}{var}");
            let c =
                parse(MINIMAL, &[(&var, value)]).unwrap_or_else(|e| panic!("{var}={value}: {e}"));
            assert_eq!(get(&c), want, "{var}={value}");
        }
    }

    /// A bad value from the environment names the variable, the key and what was expected.
    #[test]
    fn env_type_errors_name_the_variable_and_the_key() {
        for (var, value, message) in [
            (
                "PBXGATE__SERVER__LOGIN_RATE_LIMIT",
                "many",
                "key `server.login_rate_limit`: invalid type: string \"many\", expected u32",
            ),
            (
                "PBXGATE__SERVER__LOGIN_RATE_LIMIT",
                "0",
                "key `server.login_rate_limit`: must be at least 1",
            ),
            (
                "PBXGATE__PBX__RANDOMIZE_WEB_PASSWORDS",
                "yes",
                "key `pbx.randomize_web_passwords`: invalid type: string \"yes\", expected a boolean",
            ),
            (
                "PBXGATE__SERVER__TRUSTED_PROXIES",
                "10.0.0.0/8",
                "key `server.trusted_proxies`: \"10.0.0.0/8\" is not a TOML array like [\"a\", \"b\"]",
            ),
            (
                "PBXGATE__SERVER__TRUSTED_PROXIES",
                "[\"10.0.0.0/8\", \"office\"]",
                "key `server.trusted_proxies[1]`: invalid IP address syntax",
            ),
            (
                "PBXGATE__SERVER__LISTEN_PORT",
                "8443",
                "key `server.listen_port`: unknown field `listen_port`",
            ),
        ] {
            let e = err(MINIMAL, &[(var, value)]);
            let want = format!("environment variable {var}: {message}");
            assert!(e.starts_with(&want), "{var}={value}:\n{e}\n{want}");
        }
    }

    #[test]
    fn bad_schedule_is_named_under_its_key() {
        let e = err(
            &format!("{MINIMAL}\n[sync.users]\nfull_sync_at = \"2am\"\n"),
            &[],
        );
        assert_eq!(
            e,
            "test.toml: key `sync.users.full_sync_at`: \"2am\" is not a time like \"02:00\""
        );
        let e = err(
            MINIMAL,
            &[("PBXGATE__SYNC__CONTACTS__TIME_ZONE", "Mars/Olympus")],
        );
        assert!(
            e.starts_with(
                "environment variable PBXGATE__SYNC__CONTACTS__TIME_ZONE: \
                 key `sync.contacts.time_zone`: unknown time zone \"Mars/Olympus\": "
            ),
            "{e}"
        );
        let text = format!(
            "{MINIMAL}\n[sync.users]\nfull_sync_at = \"07:30\"\ntime_zone = \"Europe/Berlin\"\n"
        );
        let c = parse(&text, &[]).unwrap();
        assert_eq!(
            c.sync.users.schedule().interval,
            std::time::Duration::from_secs(900)
        );
        let out = c.to_masked_toml();
        assert!(out.contains("full_sync_at = \"07:30\"") && out.contains("\"Europe/Berlin\""));
    }

    #[test]
    fn masked_output_hides_every_secret() {
        let mut text = MINIMAL.to_string();
        text.push_str("[store]\nurl = \"postgres://pbx:db-s3cret@db/pbxgate\"\n");
        let out = parse(&text, &[]).unwrap().to_masked_toml();
        for s in ["entra-s3cret", "xapi-s3cret", "db-s3cret", "service-s3cret"] {
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
        let example = include_str!("../../config/pbxgate.example.toml");
        let c = parse(example, &[]).expect("the example config parses");
        let mut all = c.clone();
        all.server.tls_cert = Some("c.pem".into());
        all.server.tls_key = Some("c.key".into());
        all.entra.client_secret_file = Some("s".into());
        all.entra.client_certificate = Some("c.pem".into());
        all.entra.client_private_key = Some("c.key".into());
        all.pbx.ca_file = Some("ca.pem".into());
        all.pbx.client_secret_file = Some("c".into());
        all.pbx.password_key = Some("k".to_string().into());
        all.pbx.password_key_file = Some("k".into());
        all.pbx.service_password_file = Some("p".into());
        all.store.url_file = Some("u".into());
        all.pbx.service_totp_secret = Some("JBSWY3DPEHPK3PXP".to_string().into());
        all.pbx.service_totp_secret_file = Some("t".into());
        // Not to_masked_toml: it leaves out the secrets whose `_file` key is set.
        let rendered = toml::Table::try_from(&all).unwrap();
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

    /// Every secret has a `_file` twin: read (one trailing newline dropped), from a key set
    /// in the file or the environment, refused together with the secret, named when unreadable.
    #[test]
    fn every_secret_can_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, content: &str| {
            let f = dir.path().join(name);
            std::fs::write(&f, content).unwrap();
            f.display().to_string()
        };
        let key = "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=";
        let managed = MINIMAL.replace("[pbx]", "[pbx]\nsession_mode = \"managed-password\"");
        let text = [
            (
                "client_secret = \"entra-s3cret\"",
                format!("client_secret_file = {:?}", file("entra", "e s3cret \n")),
            ),
            (
                "client_secret = \"xapi-s3cret\"",
                format!("client_secret_file = {:?}", file("xapi", "0123\r\n")),
            ),
            (
                "service_password = \"service-s3cret\"",
                format!("service_password_file = {:?}", file("pw", "pw\n\n")),
            ),
        ]
        .iter()
        .fold(managed, |t, (from, to)| t.replace(from, to));
        let env = [
            (
                "PBXGATE__PBX__PASSWORD_KEY_FILE",
                file("key", &format!("{key}\n")),
            ),
            (
                "PBXGATE__PBX__SERVICE_TOTP_SECRET_FILE",
                file("totp", "JBSWY3DPEHPK3PXP"),
            ),
            (
                "PBXGATE__STORE__URL_FILE",
                file("db", "postgres://pbx:db-s3cret@db/pbxgate\n"),
            ),
        ];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let c = parse(&text, &env).unwrap();
        let secret =
            |s: &Option<secrecy::SecretString>| s.as_ref().unwrap().expose_secret().to_string();
        assert_eq!(secret(&c.entra.client_secret), "e s3cret ");
        assert_eq!(c.pbx.client_secret.expose_secret(), "0123");
        assert_eq!(secret(&c.pbx.password_key), key);
        assert_eq!(secret(&c.pbx.service_password), "pw\n");
        assert_eq!(secret(&c.pbx.service_totp_secret), "JBSWY3DPEHPK3PXP");
        assert_eq!(c.store.url, "postgres://pbx:db-s3cret@db/pbxgate");

        // check-config shows the files, not the secrets, and its output parses back.
        let out = c.to_masked_toml();
        assert!(!out.contains("s3cret") && !out.contains(MASK), "{out}");
        for k in [
            "client_secret_file",
            "password_key_file",
            "service_password_file",
            "service_totp_secret_file",
            "url_file",
        ] {
            assert!(out.contains(&format!("{k} = ")), "{k}: {out}");
        }
        parse(&out, &[]).expect("the masked output parses back");

        // A secret in a file holding a bad value is named with the file.
        let bad = file("bad-key", "short\n");
        let e = err(&text, &[("PBXGATE__PBX__PASSWORD_KEY_FILE", &bad)]);
        assert!(
            e.starts_with(&format!("secret file {bad} (pbx.password_key_file): key `pbx.password_key`: managed-password needs")),
            "{e}"
        );
    }

    #[test]
    fn a_secret_and_its_file_together_are_refused_by_name() {
        let e = err(
            MINIMAL,
            &[("PBXGATE__PBX__CLIENT_SECRET_FILE", "/run/secrets/xapi")],
        );
        assert_eq!(
            e,
            "test.toml: key `pbx.client_secret`: is also set by `pbx.client_secret_file` \
             (environment variable PBXGATE__PBX__CLIENT_SECRET_FILE); set the secret or its \
             file, not both"
        );
        let text = MINIMAL.replace("[pbx]", "[pbx]\nservice_password_file = \"/p\"");
        let e = err(&text, &[]);
        assert!(
            e.starts_with("test.toml: key `pbx.service_password`: is also set by `pbx.service_password_file` (test.toml)"),
            "{e}"
        );
        let e = err(
            MINIMAL,
            &[
                ("PBXGATE__PBX__CLIENT_SECRET_FILE", "/nonexistent/xapi"),
                ("PBXGATE__PBX__CLIENT_SECRET", ""),
            ],
        );
        assert!(e.contains("set the secret or its file, not both"), "{e}");
        let text = MINIMAL.replace(
            "client_secret = \"xapi-s3cret\"\n",
            "client_secret_file = \"/nonexistent/xapi\"\n",
        );
        assert!(
            err(&text, &[]).starts_with(
                "test.toml: key `pbx.client_secret_file`: cannot read /nonexistent/xapi: "
            ),
            "{}",
            err(&text, &[])
        );
        let e = err(MINIMAL, &[("PBXGATE__STORE__URL_FILE", "/nonexistent/db")]);
        assert!(
            e.starts_with("environment variable PBXGATE__STORE__URL_FILE: key `store.url_file`: cannot read /nonexistent/db: "),
            "{e}"
        );
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

    #[test]
    fn contacts_pbx_concurrency_is_bounded_and_named() {
        assert_eq!(
            parse(MINIMAL, &[]).unwrap().sync.contacts.pbx_concurrency,
            4
        );
        for bad in ["0", "33"] {
            let text = format!("{MINIMAL}\n[sync.contacts]\npbx_concurrency = {bad}\n");
            let e = err(&text, &[]);
            assert!(e.contains("key `sync.contacts.pbx_concurrency`"), "{e}");
        }
    }
}
