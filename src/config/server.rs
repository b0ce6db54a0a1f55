//! `[server]`: where pbxgate listens, the URL users type, TLS, and who may reach `/metrics`.

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
        if self.login_rate_limit == 0 {
            return Err(o.error("server.login_rate_limit", "must be at least 1"));
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
