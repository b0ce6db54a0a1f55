//! `[server]`: where pbxgate listens, the URL users type, TLS, who may reach `/metrics`, and
//! the limits that keep hostile or broken clients from holding connections.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use url::Url;

use super::HumanDuration;
use super::check::{at_least, both_or_neither, http_url, https_unless_loopback};
use super::error::{ConfigError, Origins};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Where to listen: one address (`"0.0.0.0:443"`), or a list of addresses and tables
    /// (`{ addr = "0.0.0.0:80", tls = false, passthrough_only = true }`), each a listener
    /// with its own settings ([`ListenerConfig`]).
    #[serde(default = "default_listen")]
    pub listen: Listeners,
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
    /// Slow-header clients ("slowloris") cannot hold a connection longer. Idle HTTP/1.1
    /// keep-alive connections waiting for their next request are closed after it too; an
    /// HTTP/2 connection (one per browser, its requests multiplexed) after `idle_timeout`.
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
    /// Both caps count each open HTTP/2 request as a connection too: it may hold one to 3CX.
    #[serde(default = "default_max_connections_per_client")]
    pub max_connections_per_client: u32,
    /// `Strict-Transport-Security: max-age` sent on every answer when pbxgate terminates TLS
    /// itself (not on plain HTTP, where the load balancer in front decides). 0 turns it off.
    #[serde(default = "default_hsts_max_age")]
    pub hsts_max_age: HumanDuration,
    /// Pins each serving thread to a CPU of its own, as nginx's `worker_cpu_affinity`,
    /// when there is one serving thread per CPU the process may run on. Not where fewer
    /// threads than CPUs serve (a container's CPU quota below its CPU set): there every
    /// replica would crowd onto the same first CPUs.
    #[serde(default = "default_pin_threads")]
    pub pin_threads: bool,
}

/// One listening address and how it serves. Written as a table in `[server] listen`, or as
/// a bare address string for a listener with the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub addr: SocketAddr,
    /// TLS on this listener (the one `tls_cert`/`tls_key` for all). Unset: TLS when
    /// `tls_cert` is set, as a single `listen` address always did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
    /// Plain listeners only: also accept HTTP/2 with prior knowledge (h2c), for a load
    /// balancer that speaks it. Off by default; browsers never use h2c.
    #[serde(default, skip_serializing_if = "is_false")]
    pub h2c: bool,
    /// Serve only `[pbx] passthrough` paths (phone provisioning); everything else, the
    /// sign-in included, gets 404. For a plain-HTTP listener on the LAN, where phones that
    /// cannot do TLS fetch their files and no session cookie should ever travel.
    #[serde(default, skip_serializing_if = "is_false")]
    pub passthrough_only: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A listener as served: [`ListenerConfig`] with its TLS default settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    pub addr: SocketAddr,
    pub tls: bool,
    pub h2c: bool,
    pub passthrough_only: bool,
}

/// `[server] listen`: one address or a list. A list so that one process serves both ports
/// the 3CX clients use (443 for browsers, 5001 for the apps and phones) and, optionally, a
/// plain LAN port for provisioning; one string still works, as configs and
/// `PBXGATE__SERVER__LISTEN` always wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Listeners(pub Vec<ListenerConfig>);

impl std::ops::Deref for Listeners {
    type Target = [ListenerConfig];
    fn deref(&self) -> &[ListenerConfig] {
        &self.0
    }
}

impl From<SocketAddr> for ListenerConfig {
    fn from(addr: SocketAddr) -> Self {
        Self {
            addr,
            tls: None,
            h2c: false,
            passthrough_only: false,
        }
    }
}

impl<'de> Deserialize<'de> for Listeners {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Listeners;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an address (\"0.0.0.0:443\") or a list of addresses and tables")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Listeners, E> {
                Ok(Listeners(vec![Entry::visit_str::<E>(s)?]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Listeners, A::Error> {
                let mut all = Vec::new();
                while let Some(Entry(l)) = seq.next_element()? {
                    all.push(l);
                }
                Ok(Listeners(all))
            }
        }
        d.deserialize_any(V)
    }
}

/// One list entry: an address string or a table.
struct Entry(ListenerConfig);

impl Entry {
    fn visit_str<E: de::Error>(s: &str) -> Result<ListenerConfig, E> {
        s.parse::<SocketAddr>()
            .map(ListenerConfig::from)
            .map_err(|_| E::custom(format!("{s:?} is not an address with a port")))
    }
}

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an address or a table with `addr`")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Entry, E> {
                Entry::visit_str(s).map(Entry)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Entry, A::Error> {
                ListenerConfig::deserialize(MapAccessDeserializer::new(map)).map(Entry)
            }
        }
        d.deserialize_any(V)
    }
}

impl ServerConfig {
    /// The listeners to serve, each with its TLS setting settled.
    pub fn listeners(&self) -> impl Iterator<Item = Listener> + '_ {
        let cert = self.tls_cert.is_some();
        self.listen.iter().map(move |l| Listener {
            addr: l.addr,
            tls: l.tls.unwrap_or(cert),
            h2c: l.h2c,
            passthrough_only: l.passthrough_only,
        })
    }

    /// Each listener's settings fit together, and no address is used twice.
    fn validate_listeners(&self, o: &Origins) -> Result<(), ConfigError> {
        if self.listen.is_empty() {
            return Err(o.error("server.listen", "needs at least one address"));
        }
        for (i, l) in self.listeners().enumerate() {
            let key = |field: &str| format!("server.listen[{i}].{field}");
            // Port 0 (any free port, in tests) never clashes.
            let earlier = self.listen[..i].iter().position(|e| e.addr == l.addr);
            if let Some(j) = earlier.filter(|_| l.addr.port() != 0) {
                return Err(o.error(
                    &key("addr"),
                    format!("{} is already server.listen[{j}]", l.addr),
                ));
            }
            if l.tls && self.tls_cert.is_none() {
                return Err(o.error(&key("tls"), "needs server.tls_cert and server.tls_key"));
            }
            if l.tls && l.h2c {
                return Err(o.error(
                    &key("h2c"),
                    "is for plain listeners; TLS listeners offer HTTP/2 by ALPN",
                ));
            }
        }
        if self.listeners().all(|l| l.passthrough_only) {
            return Err(o.error(
                "server.listen",
                "every listener is passthrough_only: nobody could sign in",
            ));
        }
        Ok(())
    }

    pub(super) fn validate(&self, o: &Origins) -> Result<(), ConfigError> {
        self.validate_listeners(o)?;
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

pub(super) fn default_listen() -> Listeners {
    Listeners(vec![SocketAddr::from(([127, 0, 0, 1], 8080)).into()])
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
fn default_pin_threads() -> bool {
    true
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
        assert!(c.pin_threads);
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

    fn listeners(c: &Config) -> Vec<(String, bool, bool, bool)> {
        c.server
            .listeners()
            .map(|l| (l.addr.to_string(), l.tls, l.h2c, l.passthrough_only))
            .collect()
    }

    const CERT: &str = "tls_cert = \"c.pem\"\ntls_key = \"k.pem\"";

    #[test]
    fn listen_takes_one_address_or_a_list_of_addresses_and_tables() {
        let one = with("listen = \"0.0.0.0:8443\"").unwrap();
        assert_eq!(
            listeners(&one),
            [("0.0.0.0:8443".into(), false, false, false)]
        );
        let with_cert = with(&format!("listen = \"0.0.0.0:443\"\n{CERT}")).unwrap();
        assert_eq!(
            listeners(&with_cert),
            [("0.0.0.0:443".into(), true, false, false)]
        );
        let many = with(&format!(
            r#"{CERT}
listen = ["0.0.0.0:443", {{ addr = "0.0.0.0:5001" }},
  {{ addr = "0.0.0.0:80", tls = false, passthrough_only = true }},
  {{ addr = "127.0.0.1:8080", tls = false, h2c = true }}]"#
        ))
        .unwrap();
        assert_eq!(
            listeners(&many),
            [
                ("0.0.0.0:443".into(), true, false, false),
                ("0.0.0.0:5001".into(), true, false, false),
                ("0.0.0.0:80".into(), false, false, true),
                ("127.0.0.1:8080".into(), false, true, false),
            ]
        );
        // What `check-config` prints parses back to the same listeners.
        let printed = many.to_masked_toml();
        let again = Config::parse(&printed, "printed.toml", []).unwrap();
        assert_eq!(again.server.listen, many.server.listen);
    }

    #[test]
    fn the_env_overlay_sets_one_address_or_a_list() {
        let text = BASE.to_string();
        let env = |v: &str| [("PBXGATE__SERVER__LISTEN".to_string(), v.to_string())];
        let c = Config::parse(&text, "t.toml", env("0.0.0.0:9443")).unwrap();
        assert_eq!(
            listeners(&c),
            [("0.0.0.0:9443".into(), false, false, false)]
        );
        let c = Config::parse(
            &text,
            "t.toml",
            env(r#"["0.0.0.0:9443", { addr = "0.0.0.0:80", passthrough_only = true }]"#),
        )
        .unwrap();
        assert_eq!(c.server.listen.len(), 2);
    }

    #[test]
    fn listeners_are_validated_by_key() {
        for (line, key) in [
            ("listen = []", "`server.listen`: needs at least one address"),
            (
                "listen = [\"0.0.0.0:443\", { addr = \"0.0.0.0:443\", tls = false }]",
                "`server.listen[1].addr`: 0.0.0.0:443 is already server.listen[0]",
            ),
            (
                "listen = [{ addr = \"0.0.0.0:443\", tls = true }]",
                "`server.listen[0].tls`: needs server.tls_cert",
            ),
            (
                &format!("{CERT}\nlisten = [{{ addr = \"0.0.0.0:443\", h2c = true }}]"),
                "`server.listen[0].h2c`: is for plain listeners",
            ),
            (
                "listen = [{ addr = \"0.0.0.0:80\", passthrough_only = true }]",
                "`server.listen`: every listener is passthrough_only",
            ),
            ("listen = \"localhost\"", "`server.listen`"),
            (
                "listen = [{ addr = \"0.0.0.0:80\", tls_only = true }]",
                "`server.listen[0].tls_only`",
            ),
        ] {
            let e = with(line).expect_err(line);
            assert!(e.contains("test.toml") && e.contains(key), "{line}: {e}");
        }
        // Any free port (tests) is never a duplicate.
        assert!(with("listen = [\"127.0.0.1:0\", \"127.0.0.1:0\"]").is_ok());
    }
}
