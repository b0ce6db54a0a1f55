//! [`HumanDuration`]: how the config writes durations (`"90s"`, `"15m"`, `"8h"`).
//!
//! Named apart from `std::time::Duration` so that the two never shadow each other; `get`
//! hands the std one to the code that waits.

use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

/// A duration written as a human string (`"90s"`, `"15m"`, `"8h"`).
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

/// As the config writes it, e.g. "1m"; used by serialization and in error messages. Whole
/// days stay days ("365days"): humantime would write a year as "11months 30days 3h 50m 24s"
/// (its months are 30.44 days).
impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const DAY: u64 = 86_400;
        let secs = self.0.as_secs();
        if secs >= 28 * DAY && secs % DAY == 0 && self.0.subsec_nanos() == 0 {
            return write!(f, "{}days", secs / DAY);
        }
        humantime::format_duration(self.0).fmt(f)
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
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::HumanDuration;

    #[test]
    fn whole_days_are_written_as_days_and_read_back() {
        for (d, text) in [
            (HumanDuration::secs(365 * 86_400), "365days"),
            (HumanDuration::secs(30 * 86_400), "30days"),
            (HumanDuration::secs(90), "1m 30s"),
            (HumanDuration::secs(7 * 86_400), "7days"),
        ] {
            assert_eq!(d.to_string(), text);
            let back: HumanDuration = serde_json::from_value(text.into()).unwrap();
            assert_eq!(back, d);
        }
    }
}
