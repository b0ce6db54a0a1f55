//! Pure judgements on time: how close a credential is to expiring, and how far this machine's
//! clock is from Entra's.

use super::Status;
use crate::clock::UnixTime;

/// A credential expiring within this many seconds is a warning.
pub const WARN_AHEAD: i64 = 30 * 86_400;
/// Clock skew above this is a warning: tokens and certificate assertions carry times.
pub const SKEW_WARN: i64 = 60;
/// Above this pbxgate refuses valid ID tokens (it tolerates [`crate::oidc::SKEW`]).
pub const SKEW_FAIL: i64 = crate::oidc::SKEW;

/// Expired: fail; within [`WARN_AHEAD`]: warn; else pass. With the days left.
pub fn expiry(expires_at: UnixTime, now: UnixTime) -> (Status, i64) {
    let left = expires_at - now;
    let days = left.div_euclid(86_400);
    let status = if left <= 0 {
        Status::Fail
    } else if left < WARN_AHEAD {
        Status::Warn
    } else {
        Status::Pass
    };
    (status, days)
}

/// `skew` = this machine's time minus Entra's, in seconds.
pub fn skew(skew: i64) -> Status {
    match skew.abs() {
        s if s > SKEW_FAIL => Status::Fail,
        s if s > SKEW_WARN => Status::Warn,
        _ => Status::Pass,
    }
}

/// An HTTP `Date` header (IMF-fixdate, RFC 9110 §5.6.7) in Unix seconds.
pub fn http_date(value: &str) -> Option<UnixTime> {
    jiff::fmt::rfc2822::parse(value)
        .ok()
        .map(|z| z.timestamp().as_second())
}

/// A Unix time as a date, `2027-06-30`.
pub fn day(t: UnixTime) -> String {
    jiff::Timestamp::from_second(t)
        .map(|t| {
            t.to_zoned_datetime(jiff::tz::TimeZone::UTC)
                .date()
                .to_string()
        })
        .unwrap_or_else(|_| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    #[test]
    fn expiry_warns_thirty_days_ahead_and_fails_once_past() {
        let now = 1_800_000_000;
        assert_eq!(expiry(now + 90 * DAY, now), (Status::Pass, 90));
        assert_eq!(expiry(now + 30 * DAY, now), (Status::Pass, 30));
        assert_eq!(expiry(now + 30 * DAY - 1, now).0, Status::Warn);
        assert_eq!(expiry(now + 1, now), (Status::Warn, 0));
        assert_eq!(expiry(now, now).0, Status::Fail);
        assert_eq!(expiry(now - 2 * DAY, now), (Status::Fail, -2));
    }

    #[test]
    fn skew_warns_above_a_minute_and_fails_where_tokens_would() {
        assert_eq!(skew(0), Status::Pass);
        assert_eq!(skew(-60), Status::Pass);
        assert_eq!(skew(61), Status::Warn);
        assert_eq!(skew(-300), Status::Warn);
        assert_eq!(skew(301), Status::Fail);
        assert_eq!(skew(-3600), Status::Fail);
    }

    #[test]
    fn http_dates_and_days() {
        assert_eq!(
            http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(http_date("yesterday"), None);
        assert_eq!(day(784_111_777), "1994-11-06");
    }

    #[test]
    fn the_secret_expiry_is_a_toml_date_or_a_string() {
        for value in ["2027-06-30", "\"2027-06-30\""] {
            let c = super::super::tests::config(&format!("client_secret_expires = {value}\n"));
            let at = c.entra.client_secret_expires.map(|d| d.unix());
            assert_eq!(at.map(day).as_deref(), Some("2027-06-30"), "{value}");
        }
        let e = crate::config::Config::parse(
            &super::super::tests::config_text("client_secret_expires = \"soon\"\n"),
            "t.toml",
            Vec::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("entra.client_secret_expires"), "{e}");
    }
}
