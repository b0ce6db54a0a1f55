//! When the users and contacts workers run: a delta run every `interval`, and a full
//! reconcile at the first run after a daily time (`full_sync_at` in `time_zone`).
//!
//! Both keys are parsed once, when the config is deserialized, so a bad value is reported
//! under its own key at load and the scheduler only reads a ready [`Schedule`]. Nothing here
//! reads the wall clock: [`Daily::last_due`] is given "now" by the caller's `Clock`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("{value:?} is not a time like \"02:00\"")]
    BadTime { value: String },
    #[error("unknown time zone {value:?}: {reason}")]
    UnknownTimeZone { value: String, reason: jiff::Error },
}

/// A time of day, written "HH:MM".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeOfDay {
    hour: i8,
    minute: i8,
}

impl TimeOfDay {
    pub const fn hm(hour: i8, minute: i8) -> Self {
        Self { hour, minute }
    }

    pub fn parse(at: &str) -> Result<Self, ScheduleError> {
        at.split_once(':')
            .and_then(|(h, m)| Some((h.parse::<i8>().ok()?, m.parse::<i8>().ok()?)))
            .filter(|(h, m)| (0..24).contains(h) && (0..60).contains(m) && at.len() == 5)
            .map(|(hour, minute)| Self { hour, minute })
            .ok_or_else(|| ScheduleError::BadTime { value: at.into() })
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.hour, self.minute)
    }
}

/// An IANA time zone ("UTC", "Europe/Berlin"), keeping the name it was given for output.
#[derive(Debug, Clone)]
pub struct Zone {
    name: String,
    tz: jiff::tz::TimeZone,
}

impl Zone {
    pub fn utc() -> Self {
        Self {
            name: "UTC".into(),
            tz: jiff::tz::TimeZone::UTC,
        }
    }

    pub fn parse(name: &str) -> Result<Self, ScheduleError> {
        let tz =
            jiff::tz::TimeZone::get(name).map_err(|reason| ScheduleError::UnknownTimeZone {
                value: name.into(),
                reason,
            })?;
        Ok(Self {
            name: name.into(),
            tz,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Config values are strings parsed by `parse`; its error names what is wrong.
fn deserialize_with<'de, D, T>(
    d: D,
    parse: fn(&str) -> Result<T, ScheduleError>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let s = String::deserialize(d)?;
    parse(&s).map_err(serde::de::Error::custom)
}

impl<'de> Deserialize<'de> for TimeOfDay {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_with(d, Self::parse)
    }
}

impl Serialize for TimeOfDay {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Zone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_with(d, Self::parse)
    }
}

impl Serialize for Zone {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

/// A daily time in a time zone, for the nightly full reconcile.
#[derive(Debug, Clone)]
pub struct Daily {
    at: TimeOfDay,
    tz: jiff::tz::TimeZone,
}

impl Daily {
    pub fn at(at: TimeOfDay, zone: &Zone) -> Self {
        Self {
            at,
            tz: zone.tz.clone(),
        }
    }

    /// `at` as "HH:MM", `tz` an IANA name ("UTC", "Europe/Berlin").
    pub fn new(at: &str, tz: &str) -> Result<Self, ScheduleError> {
        Ok(Self::at(TimeOfDay::parse(at)?, &Zone::parse(tz)?))
    }

    /// The latest occurrence at or before `now` (Unix seconds).
    pub fn last_due(&self, now: i64) -> i64 {
        let occurrence = |date: jiff::civil::Date| {
            self.tz
                .to_timestamp(date.at(self.at.hour, self.at.minute, 0, 0))
                .map(|t| t.as_second())
                .ok()
        };
        let Ok(ts) = jiff::Timestamp::from_second(now) else {
            return now;
        };
        let today = self.tz.to_datetime(ts).date();
        match occurrence(today) {
            Some(t) if t <= now => t,
            _ => today
                .yesterday()
                .ok()
                .and_then(occurrence)
                .unwrap_or(now - 86_400),
        }
    }
}

/// A worker's schedule: a delta run every `interval`, a full one once `daily` is due.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub interval: std::time::Duration,
    pub daily: Daily,
}

impl Schedule {
    pub fn new(interval: std::time::Duration, at: TimeOfDay, zone: &Zone) -> Self {
        Self {
            interval,
            daily: Daily::at(at, zone),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daily_times_respect_the_time_zone() {
        // 2026-07-01 00:30 UTC is 02:30 in Berlin (summer time): today's 02:00 has passed.
        let now = jiff::Timestamp::from_second(1_782_865_800).unwrap();
        assert_eq!(now.to_string(), "2026-07-01T00:30:00Z");
        let berlin = Daily::new("02:00", "Europe/Berlin").unwrap();
        assert_eq!(
            jiff::Timestamp::from_second(berlin.last_due(now.as_second()))
                .unwrap()
                .to_string(),
            "2026-07-01T00:00:00Z"
        );
        // In UTC, 02:00 today is still ahead: yesterday's counts.
        let utc = Daily::new("02:00", "UTC").unwrap();
        assert_eq!(
            jiff::Timestamp::from_second(utc.last_due(now.as_second()))
                .unwrap()
                .to_string(),
            "2026-06-30T02:00:00Z"
        );
        assert!(matches!(
            Daily::new("2am", "UTC"),
            Err(ScheduleError::BadTime { .. })
        ));
        let e = Daily::new("02:00", "Mars/Olympus").unwrap_err();
        assert!(matches!(e, ScheduleError::UnknownTimeZone { .. }));
        assert!(e.to_string().contains("time zone"));
    }

    #[test]
    fn times_render_as_written() {
        assert_eq!(TimeOfDay::parse("07:05").unwrap().to_string(), "07:05");
        assert_eq!(
            Zone::parse("Europe/Berlin").unwrap().name(),
            "Europe/Berlin"
        );
    }
}
