//! The sign-in rate limit (`[server] login_rate_limit`): fixed one-minute windows per client
//! address (per /64 for IPv6), kept in a bounded cache, so a flood of sign-in starts cannot fill the store
//! with login attempts or hammer Entra.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::clock::Clock;

pub struct RateLimiter {
    per_minute: u32,
    clock: Arc<dyn Clock>,
    windows: moka::sync::Cache<(IpAddr, i64), Arc<AtomicU32>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32, clock: Arc<dyn Clock>) -> Self {
        Self {
            per_minute,
            clock,
            windows: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(120))
                .build(),
        }
    }

    /// Counts a request from `ip`; false once it is over the limit for this minute.
    pub fn allow(&self, ip: IpAddr) -> bool {
        let minute = self.clock.now().div_euclid(60);
        let n = self
            .windows
            .get_with((bucket(ip), minute), Default::default)
            .fetch_add(1, Ordering::Relaxed);
        n < self.per_minute
    }
}

/// The bucket an address counts in: itself for IPv4, its /64 for IPv6. One subscriber
/// (one home, one VM) usually has a whole /64 and could otherwise start a fresh count with
/// every address it picks from it.
fn bucket(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 64))),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn rate_limiter_counts_per_address_and_minute() {
        let clock = ManualClock::new(1_800_000_000);
        let r = RateLimiter::new(2, Arc::new(clock.clone()));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(r.allow(a) && r.allow(a));
        assert!(!r.allow(a));
        assert!(r.allow(b));
        clock.advance(60);
        assert!(r.allow(a), "a new minute starts a new window");
    }

    #[test]
    fn ipv6_clients_count_per_64() {
        let clock = ManualClock::new(1_800_000_000);
        let r = RateLimiter::new(2, Arc::new(clock));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(r.allow(ip("2001:db8:1:2::1")) && r.allow(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")));
        assert!(!r.allow(ip("2001:db8:1:2:abcd::9")), "the same /64");
        assert!(r.allow(ip("2001:db8:1:3::1")), "the next /64");
        // An IPv4-mapped address counts as the IPv4 address.
        assert!(r.allow(ip("192.0.2.7")) && r.allow(ip("::ffff:192.0.2.7")));
        assert!(!r.allow(ip("192.0.2.7")));
    }
}
