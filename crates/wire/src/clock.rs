//! Time as an input: expiry and idle decisions take "now" from a [`Clock`], so tests control it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch; the unit of every timestamp in the store.
pub type UnixTime = i64;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> UnixTime;

    /// Nanoseconds since the epoch, for waking up on a second boundary; a clock that moves
    /// in whole seconds need not say more.
    fn now_nanos(&self) -> i128 {
        i128::from(self.now()) * 1_000_000_000
    }
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

#[expect(
    clippy::disallowed_methods,
    reason = "the one place that reads the wall clock"
)]
impl Clock for SystemClock {
    fn now(&self) -> UnixTime {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }

    fn now_nanos(&self) -> i128 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to; for tests and the sandbox.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(start: UnixTime) -> Self {
        Self(Arc::new(AtomicI64::new(start)))
    }
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixTime {
        self.0.load(Ordering::SeqCst)
    }
}

/// A Graph `dateTimeTimeZone.dateTime` in UTC (`2026-11-29T10:00:00`, fractional seconds
/// allowed) → Unix seconds.
pub fn parse_utc(date_time: &str) -> Option<UnixTime> {
    let civil: jiff::civil::DateTime = date_time.trim_end_matches('Z').parse().ok()?;
    jiff::tz::TimeZone::UTC
        .to_timestamp(civil)
        .ok()
        .map(|t| t.as_second())
}

/// Unix seconds → a Graph `dateTime` in UTC, with Graph's seven fractional digits.
pub fn format_utc(t: UnixTime) -> String {
    jiff::Timestamp::from_second(t)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S.0000000").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn graph_date_times_round_trip() {
        let t = super::parse_utc("2026-11-29T10:00:00.0000000").unwrap();
        assert_eq!(t, 1_795_946_400);
        assert_eq!(super::format_utc(t), "2026-11-29T10:00:00.0000000");
        assert_eq!(super::parse_utc("2026-11-29T10:00:00"), Some(t));
        assert_eq!(super::parse_utc("soon"), None);
    }
}
