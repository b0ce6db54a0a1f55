//! `[server]`: where pbxgate listens, the URL users type, TLS, who may reach `/metrics`, and
//! the limits that keep hostile or broken clients from holding connections.

use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use url::Url;

use super::HumanDuration;
use super::check::{at_least, both_or_neither, http_url, https_unless_loopback};
use super::error::{ConfigError, Origins};

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
    /// A client must send a complete request head within this long: from accept (TLS
    /// handshake included) for the first request, from the previous answer for the next.
    /// Slow-header clients ("slowloris") cannot hold a connection longer. Idle keep-alive
    /// connections waiting for their next request are closed after it too.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: HumanDuration,
    /// Open client connections at most, over all clients; more are closed at accept. Unset:
    /// derived from the open-file limit at start (half of it, less a reserve for the store
    /// and the outgoing connections), so that the process never runs out of descriptors.
    #[serde(default)]
    pub max_connections: Option<u32>,
    /// Open connections at most per client address (IPv6: per /64), counted by the TCP peer:
    /// behind a load balancer that is the balancer, so `trusted_proxies` peers are exempt
    /// (only `max_connections` bounds them) and the balancer must limit its own clients.
    #[serde(default = "default_max_connections_per_client")]
    pub max_connections_per_client: u32,
    /// `Strict-Transport-Security: max-age` sent on every answer when pbxgate terminates TLS
    /// itself (not on plain HTTP, where the load balancer in front decides). 0 turns it off.
    #[serde(default = "default_hsts_max_age")]
    pub hsts_max_age: HumanDuration,
}

impl ServerConfig {
    pub(super) fn validate(&self, o: &Origins) -> Result<(), ConfigError> {
        http_url(&self.public_url, "server.public_url", o)?;
        https_unless_loopback(
            &self.public_url,
            "server.public_url",
            "must be https (http is allowed only for localhost, where browsers still accept Secure cookies)",
            o,
        )?;
        at_least(
            self.idle_timeout,
            HumanDuration::secs(1),
            "server.idle_timeout",
            o,
        )?;
        both_or_neither(
            (self.tls_cert.is_some(), self.tls_key.is_some()),
            ("server.tls_cert", "server.tls_key"),
            o,
        )?;
        at_least(
            self.header_read_timeout,
            HumanDuration::secs(1),
            "server.header_read_timeout",
            o,
        )?;
        for (value, key) in [
            (Some(self.login_rate_limit), "server.login_rate_limit"),
            (self.max_connections, "server.max_connections"),
            (
                Some(self.max_connections_per_client),
                "server.max_connections_per_client",
            ),
        ] {
            if value == Some(0) {
                return Err(o.error(key, "must be at least 1"));
            }
        }
        Ok(())
    }
}

pub(super) fn default_listen() -> SocketAddr {
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
fn default_header_read_timeout() -> HumanDuration {
    HumanDuration::secs(10)
}
fn default_max_connections_per_client() -> u32 {
    256
}
fn default_hsts_max_age() -> HumanDuration {
    HumanDuration::secs(365 * 24 * 3600)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const BASE: &str = r#"
[server]
public_url = "https://pbx.example.com"
[entra]
tenant_id = "11111111-2222-3333-4444-555555555555"
client_id = "app"
client_secret = "s"
[pbx]
url = "https://pbx.internal:5001"
client_id = "pbxgate"
client_secret = "s"
service_extension = "999"
service_password = "s"
"#;

    fn with(line: &str) -> Result<Config, String> {
        let text = BASE.replace("[entra]", &format!("{line}\n[entra]"));
        Config::parse(&text, "test.toml", []).map_err(|e| e.to_string())
    }

    #[test]
    fn connection_limits_have_safe_defaults() {
        let c = with("").unwrap().server;
        assert_eq!(c.header_read_timeout.get().as_secs(), 10);
        assert_eq!(c.max_connections, None);
        assert_eq!(c.max_connections_per_client, 256);
        assert_eq!(c.hsts_max_age.get().as_secs(), 365 * 24 * 3600);
        assert_eq!(
            with("hsts_max_age = \"0s\"")
                .unwrap()
                .server
                .hsts_max_age
                .get()
                .as_secs(),
            0
        );
    }

    #[test]
    fn connection_limits_are_validated_by_key() {
        for (line, key) in [
            (
                "header_read_timeout = \"500ms\"",
                "`server.header_read_timeout`: must be at least 1s",
            ),
            (
                "max_connections = 0",
                "`server.max_connections`: must be at least 1",
            ),
            (
                "max_connections_per_client = 0",
                "`server.max_connections_per_client`: must be at least 1",
            ),
        ] {
            let e = with(line).expect_err(line);
            assert!(e.contains("test.toml") && e.contains(key), "{e}");
        }
    }
}
