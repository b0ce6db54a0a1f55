//! Limits on open client connections, over all clients and per client address, checked at
//! accept; and the open-file limit the overall cap is derived from.
//!
//! Without them one client holding a thousand connections (each cheap for it, a descriptor
//! and buffers for pbxgate) exhausts the process's descriptors, and with them the phones'
//! provisioning and everyone's sign-in.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use ipnet::IpNet;

use crate::clock::Clock;
use crate::config::ServerConfig;
use crate::metrics::Metrics;

/// Descriptors kept for everything but client connections: the store's pool, Entra, Graph,
/// the sync workers, the log.
const RESERVED_DESCRIPTORS: u64 = 128;
/// A refused connection is logged at most once per this many seconds (with a count), so a
/// flood cannot flood the log too.
const LOG_EVERY_SECS: i64 = 10;

/// The open-connection counts and their caps, shared by every serving thread.
///
/// Clients are told apart by the TCP peer address: at accept no byte has been read, so
/// `X-Forwarded-For` is not known (and would be the client's to choose). Behind a load
/// balancer every connection comes from the balancer, which is why `trusted_proxies` peers
/// are exempt from the per-client cap (only the overall cap bounds them); limiting each
/// real client is then the balancer's job.
pub struct Limits {
    max: usize,
    per_client: u32,
    /// Peers not held to `per_client` (`[server] trusted_proxies`: a load balancer carries
    /// many users' connections).
    exempt: Vec<IpNet>,
    open: Mutex<Open>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    last_logged: AtomicI64,
    unlogged: AtomicU64,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_client: HashMap<ClientKey, u32>,
}

/// Whom a connection is counted against: an IPv4 address, or an IPv6 /64 (one subscriber's
/// network; a single host can use any address in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let net = u128::from(v6) & !((1u128 << 64) - 1);
                Self(IpAddr::V6(Ipv6Addr::from(net)))
            }
            v4 => Self(v4),
        }
    }
}

/// Why a connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `[server] max_connections` reached.
    Total,
    /// `[server] max_connections_per_client` reached for this client.
    PerClient,
}

impl Refused {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Total => "max_connections",
            Self::PerClient => "max_connections_per_client",
        }
    }
}

/// One admitted connection; gives its place back when dropped.
pub struct Permit {
    limits: Arc<Limits>,
    /// `None` for an exempt peer.
    client: Option<ClientKey>,
    ip: IpAddr,
}

impl Permit {
    /// One more place for the same client, for an HTTP/2 stream: each open stream may hold
    /// a connection to 3CX, as an HTTP/1.1 connection does, so streams count under the same
    /// caps (which bound the descriptors those take).
    pub fn another(&self) -> Result<Permit, Refused> {
        self.limits.admit_as(self.client, self.ip)
    }
}

impl Limits {
    pub fn new(config: &ServerConfig, metrics: Arc<Metrics>, clock: Arc<dyn Clock>) -> Self {
        let max = config
            .max_connections
            .map_or_else(|| derived_max(open_files_limit()), |m| m as usize);
        Self {
            max,
            per_client: config.max_connections_per_client,
            exempt: config.trusted_proxies.clone(),
            open: Mutex::default(),
            metrics,
            clock,
            last_logged: AtomicI64::new(i64::MIN),
            unlogged: AtomicU64::new(0),
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Admits a connection from `ip`, or says which cap it hit (counted and logged).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refused> {
        let exempt = self.exempt.iter().any(|n| n.contains(&ip.to_canonical()));
        let client = (!exempt).then(|| ClientKey::of(ip));
        self.admit_as(client, ip)
    }

    fn admit_as(
        self: &Arc<Self>,
        client: Option<ClientKey>,
        ip: IpAddr,
    ) -> Result<Permit, Refused> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let refused = if open.total >= self.max {
            Some(Refused::Total)
        } else if let Some(key) = client
            && open
                .by_client
                .get(&key)
                .is_some_and(|n| *n >= self.per_client)
        {
            Some(Refused::PerClient)
        } else {
            None
        };
        if let Some(why) = refused {
            drop(open);
            self.refused(why, ip);
            return Err(why);
        }
        open.total += 1;
        if let Some(key) = client {
            *open.by_client.entry(key).or_default() += 1;
        }
        self.metrics.connections_open(open.total);
        Ok(Permit {
            limits: self.clone(),
            client,
            ip,
        })
    }

    fn release(&self, client: Option<ClientKey>) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(key) = client
            && let Some(n) = open.by_client.get_mut(&key)
        {
            *n -= 1;
            if *n == 0 {
                open.by_client.remove(&key);
            }
        }
        self.metrics.connections_open(open.total);
    }

    fn refused(&self, why: Refused, ip: IpAddr) {
        self.metrics.connection_refused(why.as_str());
        let now = self.clock.now();
        let last = self.last_logged.load(Ordering::Relaxed);
        let due = now.saturating_sub(last) >= LOG_EVERY_SECS
            && self
                .last_logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        if !due {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let also = self.unlogged.swap(0, Ordering::Relaxed);
        let limit = match why {
            Refused::Total => self.max,
            Refused::PerClient => self.per_client as usize,
        };
        tracing::warn!(
            reason = why.as_str(),
            limit,
            client = %ip,
            refused_since_last_line = also,
            "connection refused: too many open connections"
        );
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limits.release(self.client);
    }
}

/// The default overall cap: half the descriptors left after the reserve (each client
/// connection may hold one to 3CX), at least 64.
fn derived_max(open_files: Option<u64>) -> usize {
    let limit = open_files.unwrap_or(1024).min(4 * 1024 * 1024);
    (limit.saturating_sub(RESERVED_DESCRIPTORS) / 2).max(64) as usize
}

/// The process's open-file limit (`RLIMIT_NOFILE`): before and after [`raise_open_files_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilesLimit {
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft open-file limit to the hard limit, as far as the system allows
/// (the soft default, often 1,024, is what slow clients exhausted). Returns the limit
/// before and after.
#[cfg(unix)]
pub fn raise_open_files_limit() -> std::io::Result<(FilesLimit, FilesLimit)> {
    let before = get_rlimit()?;
    if before.rlim_cur >= before.rlim_max {
        let l = files_limit(before);
        return Ok((l, l));
    }
    let raised = libc::rlimit {
        rlim_cur: before.rlim_max,
        rlim_max: before.rlim_max,
    };
    // SAFETY: setrlimit reads a valid, initialised rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((files_limit(before), files_limit(get_rlimit()?)))
}

#[cfg(not(unix))]
pub fn raise_open_files_limit() -> std::io::Result<(FilesLimit, FilesLimit)> {
    Err(std::io::Error::other("no RLIMIT_NOFILE on this platform"))
}

#[cfg(unix)]
fn get_rlimit() -> std::io::Result<libc::rlimit> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a valid rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(l)
}

#[cfg(unix)]
#[allow(
    clippy::unnecessary_cast,
    reason = "rlim_t is u64 on Linux, not on every unix"
)]
fn files_limit(l: libc::rlimit) -> FilesLimit {
    FilesLimit {
        soft: l.rlim_cur as u64,
        hard: l.rlim_max as u64,
    }
}

/// The current soft open-file limit, where the platform has one.
fn open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    return get_rlimit().ok().map(|l| files_limit(l).soft);
    #[cfg(not(unix))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn limits(max: u32, per_client: u32, exempt: &[&str]) -> Arc<Limits> {
        let mut c: ServerConfig =
            toml::from_str("public_url = \"https://pbx.example.com\"").unwrap();
        c.max_connections = Some(max);
        c.max_connections_per_client = per_client;
        c.trusted_proxies = exempt.iter().map(|n| n.parse().unwrap()).collect();
        Arc::new(Limits::new(
            &c,
            Arc::new(Metrics::default()),
            Arc::new(ManualClock::new(0)),
        ))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_clients_are_counted_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            ClientKey::of(ip("2001:db8:1:2:aaaa::1")),
            ClientKey::of(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            ClientKey::of(ip("2001:db8:1:2::1")),
            ClientKey::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            ClientKey::of(ip("::ffff:192.0.2.7")),
            ClientKey::of(ip("192.0.2.7"))
        );
        assert_ne!(
            ClientKey::of(ip("192.0.2.7")),
            ClientKey::of(ip("192.0.2.8"))
        );
    }

    #[test]
    fn caps_per_client_and_overall_and_places_come_back() {
        let l = limits(3, 2, &["10.0.0.0/8"]);
        let a1 = l.admit(ip("2001:db8::1")).unwrap();
        let _a2 = l.admit(ip("2001:db8::2")).unwrap();
        assert_eq!(
            l.admit(ip("2001:db8::3")).err(),
            Some(Refused::PerClient),
            "same /64"
        );
        let _b = l.admit(ip("10.1.1.1")).unwrap();
        assert_eq!(l.admit(ip("192.0.2.1")).err(), Some(Refused::Total));
        drop(a1);
        assert!(l.admit(ip("2001:db8::3")).is_ok());
    }

    #[test]
    fn http2_streams_take_places_of_their_connections_client() {
        let l = limits(3, 2, &["10.0.0.0/8"]);
        let conn = l.admit(ip("192.0.2.1")).unwrap();
        let stream = conn.another().unwrap();
        assert_eq!(conn.another().err(), Some(Refused::PerClient));
        drop(stream);
        let lb = l.admit(ip("10.0.0.1")).unwrap();
        let _lb_stream = lb.another().unwrap();
        assert_eq!(
            lb.another().err(),
            Some(Refused::Total),
            "exempt: overall cap only"
        );
        drop(conn);
        assert!(lb.another().is_ok());
    }

    #[test]
    fn trusted_proxies_are_exempt_from_the_per_client_cap_only() {
        let l = limits(3, 1, &["10.0.0.0/8"]);
        let held: Vec<_> = (0..3).map(|_| l.admit(ip("10.0.0.1")).unwrap()).collect();
        assert_eq!(l.admit(ip("10.0.0.1")).err(), Some(Refused::Total));
        drop(held);
        assert!(l.open.lock().unwrap().by_client.is_empty());
    }

    #[test]
    fn the_default_cap_leaves_descriptors_for_the_rest() {
        assert_eq!(derived_max(Some(1024)), 448);
        assert_eq!(derived_max(Some(100)), 64);
        assert_eq!(derived_max(Some(u64::MAX)), (4 * 1024 * 1024 - 128) / 2);
    }
}
