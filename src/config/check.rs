//! Checks that several sections share, each returning the error for the key it is given.

use url::Url;

use super::HumanDuration;
use super::error::{ConfigError, Origins};

/// A required string must not be empty or blank.
pub(super) fn require(value: &str, key: &str, o: &Origins) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        Err(o.error(key, "missing or empty"))
    } else {
        Ok(())
    }
}

/// A duration below `min` is refused; the message names `min` as the config writes it.
pub(super) fn at_least(
    value: HumanDuration,
    min: HumanDuration,
    key: &str,
    o: &Origins,
) -> Result<(), ConfigError> {
    if value < min {
        Err(o.error(key, format!("must be at least {min}")))
    } else {
        Ok(())
    }
}

/// An http(s) URL with a host.
pub(super) fn http_url(u: &Url, key: &str, o: &Origins) -> Result<(), ConfigError> {
    match u.scheme() {
        "http" | "https" if u.host().is_some() => Ok(()),
        _ => Err(o.error(key, format!("{u} is not an http(s) URL"))),
    }
}

/// Plain http is allowed only towards this machine (local tests, a provider on localhost).
pub(super) fn https_unless_loopback(
    u: &Url,
    key: &str,
    message: &str,
    o: &Origins,
) -> Result<(), ConfigError> {
    if u.scheme() == "http" && !is_loopback_host(u) {
        Err(o.error(key, message))
    } else {
        Ok(())
    }
}

fn is_loopback_host(u: &Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Both keys of a pair or neither: `present` says which are set.
pub(super) fn both_or_neither(
    present: (bool, bool),
    keys: (&str, &str),
    o: &Origins,
) -> Result<(), ConfigError> {
    match present {
        (true, false) => Err(o.error(keys.1, format!("is required with {}", short(keys.0)))),
        (false, true) => Err(o.error(keys.0, format!("is required with {}", short(keys.1)))),
        _ => Ok(()),
    }
}

/// The key without its section, as messages name the other key of a pair.
fn short(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key)
}
