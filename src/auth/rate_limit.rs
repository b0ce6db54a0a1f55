//! The sign-in rate limit (`[server] login_rate_limit`): fixed one-minute windows per client
//! address, kept in a bounded cache, so a flood of sign-in starts cannot fill the store
//! with login attempts or hammer Entra.

use std::net::IpAddr;
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
            .get_with((ip, minute), Default::default)
            .fetch_add(1, Ordering::Relaxed);
        n < self.per_minute
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
}
