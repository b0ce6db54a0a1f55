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

/// As the config writes it, e.g. "1m"; used by serialization and in error messages.
impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
